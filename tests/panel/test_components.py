"""The active operation's components over the local API, against the real daemon: the view
lists them, a batch loaded and consumption recorded show there, and every refusal names the
field and its value and leaves the journal, the events and the outbox as they were."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

from edge.domain.model import ComponentSpec, OperationKey
from tests.panel.conftest import Panel, panel_config, running_panel, spec
from tests.panel.test_api import post
from tests.panel.test_hostile_input import settled

OP = "4711/0020"
KEY = OperationKey("4711", "0020")
OTHER = "4712/0010"
STEEL = ComponentSpec(
    "STEEL-1",
    Decimal("0.25"),
    unit="KG",
    backflush=True,
    batch_managed=True,
    item="0010",
    gtin="04012345000016",
    material_text="Steel sheet",
)
GLUE = ComponentSpec("GLUE-7", Decimal(2), unit="G", batch_managed=True, material_text="Glue")
SCREW = ComponentSpec("SCREW-M4", Decimal(4), material_text="Screw M4")
COMPONENTS = (STEEL, GLUE, SCREW)


async def running(panel: Panel, client: httpx.AsyncClient) -> None:
    await panel.dispatch(
        spec("4711", "0020", 30, 10, components=COMPONENTS),
        spec("4712", "0010", 50, 20, components=(SCREW,)),
    )
    r = await post(client, "/api/commands/start-production", op=OP)
    assert r.status_code == 200, r.text


def component(state: dict[str, Any], material: str) -> dict[str, Any]:
    (active,) = state["active"]
    found: dict[str, Any] = next(c for c in active["components"] if c["material"] == material)
    return found


async def journal(panel: Panel) -> tuple[int, int, int]:
    (row,) = await panel.rows(
        "SELECT (SELECT count(*) FROM journal), (SELECT count(*) FROM event), "
        "(SELECT count(*) FROM outbox)"
    )
    return int(row[0]), int(row[1]), int(row[2])


async def test_the_view_lists_the_components_with_batches_and_consumption(
    tmp_path: Path,
) -> None:
    async with (
        running_panel(panel_config(tmp_path)) as panel,
        httpx.AsyncClient(base_url=panel.url) as client,
    ):
        await running(panel, client)
        state = (await client.get("/api/state")).json()
        assert [c["material"] for c in state["active"][0]["components"]] == [
            "STEEL-1",
            "GLUE-7",
            "SCREW-M4",
        ]
        assert component(state, "STEEL-1") == {
            "material": "STEEL-1",
            "material_text": "Steel sheet",
            "qty_per_unit": 0.25,
            "unit": "KG",
            "backflush": True,
            "batch_managed": True,
            "item": "0010",
            "gtin": "04012345000016",
            "loaded": None,
            "consumed": [],
            "pending": [],
        }
        # the waiting operation carries none in the list: only the active one shows them
        assert "components" not in state["dispatch"][1]

        # a batch loaded: shown with when and by whom; what is made from now on is booked to it
        r = await post(client, "/api/commands/load-batch", op=OP, material="STEEL-1", batch="B-100")
        assert r.status_code == 200, r.text
        assert r.json()["events"] == ["component_batch_loaded"]
        steel = component(r.json()["state"], "STEEL-1")
        assert steel["loaded"]["batch"] == "B-100"
        assert steel["loaded"]["actor"] == "operator:panel"
        assert steel["loaded"]["at"] == panel.engine.wc.operations[KEY].batch_loads[0].at.iso()
        await panel.pulses(8)
        steel = component((await client.get("/api/state")).json(), "STEEL-1")
        assert steel["consumed"] == [{"batch": "B-100", "qty": 2}]  # 8 x 0.25 KG
        assert steel["pending"] == [{"batch": "B-100", "qty": 2}]

        # consumption recorded for a component that is not backflushed, by the operator named
        r = await post(client, "/api/commands/load-batch", op=OP, material="GLUE-7", batch="G-1")
        assert r.status_code == 200, r.text
        r = await post(
            client, "/api/commands/consume", op=OP, material="GLUE-7", qty="12.5", operator="OP-2"
        )
        assert r.status_code == 200, r.text
        assert r.json()["events"] == ["component_consumed"]
        glue = component(r.json()["state"], "GLUE-7")
        assert glue["consumed"] == [{"batch": "G-1", "qty": 12.5}]
        r = await post(client, "/api/commands/consume", op=OP, material="SCREW-M4", qty=30)
        assert r.status_code == 200, r.text
        screw = component(r.json()["state"], "SCREW-M4")
        assert screw["consumed"] == [{"batch": None, "qty": 30}]
        actors = await panel.rows(
            "SELECT actor FROM event WHERE type = 'component_consumed' ORDER BY id"
        )
        assert actors == [("operator:OP-2",), ("operator:panel",)]

        # a confirmation takes what was pending: consumed stays, pending is empty
        r = await post(client, "/api/commands/confirm", op=OP)
        assert r.status_code == 200, r.text
        glue = component(r.json()["state"], "GLUE-7")
        assert (glue["consumed"], glue["pending"]) == ([{"batch": "G-1", "qty": 12.5}], [])
        steel = component(r.json()["state"], "STEEL-1")
        assert (steel["consumed"], steel["pending"]) == ([{"batch": "B-100", "qty": 2}], [])

        # the next batch: the loaded one changes, the earlier consumption stays on its batch
        r = await post(client, "/api/commands/load-batch", op=OP, material="STEEL-1", batch="B-101")
        assert r.status_code == 200, r.text
        await panel.pulses(4)
        steel = component((await client.get("/api/state")).json(), "STEEL-1")
        assert steel["loaded"]["batch"] == "B-101"
        assert steel["consumed"] == [{"batch": "B-100", "qty": 2}, {"batch": "B-101", "qty": 1}]
        assert steel["pending"] == [{"batch": "B-101", "qty": 1}]


async def test_refusals_name_the_field_and_the_value_and_change_nothing(tmp_path: Path) -> None:
    async with (
        running_panel(panel_config(tmp_path)) as panel,
        httpx.AsyncClient(base_url=panel.url) as client,
    ):
        await running(panel, client)
        r = await post(client, "/api/commands/load-batch", op=OP, material="GLUE-7", batch="G-1")
        assert r.status_code == 200, r.text
        await settled(panel)
        before = await journal(panel)
        components = (await client.get("/api/state")).json()["active"][0]["components"]

        # (path, body, status, code, field, value, the message's start)
        cases: list[tuple[str, dict[str, Any], int, str, str, Any, str]] = [
            (
                "load-batch",
                {"op": OP, "material": "NOPE-9", "batch": "X-1"},
                409,
                "unknown_component",
                "material",
                "NOPE-9",
                "material = 'NOPE-9': operation 4711/0020 has no such component",
            ),
            (
                "consume",
                {"op": OP, "material": "NOPE-9", "qty": 1},
                409,
                "unknown_component",
                "material",
                "NOPE-9",
                "material = 'NOPE-9'",
            ),
            (
                "load-batch",
                {"op": OP, "material": "SCREW-M4", "batch": "S-1"},
                409,
                "invalid_value",
                "batch",
                "S-1",
                "batch = 'S-1': component SCREW-M4 of operation 4711/0020 is not batch-managed",
            ),
            (
                "consume",
                {"op": OP, "material": "SCREW-M4", "qty": 1, "batch": "S-1"},
                409,
                "invalid_value",
                "batch",
                "S-1",
                "batch = 'S-1': component SCREW-M4 is not batch-managed",
            ),
            (
                "load-batch",
                {"op": OP, "material": "GLUE-7", "batch": "G-1"},
                409,
                "invalid_value",
                "batch",
                "G-1",
                "batch = 'G-1': already the loaded batch",
            ),
            (
                "load-batch",
                {"op": OP, "material": "GLUE-7", "batch": "G" * 41},
                409,
                "invalid_value",
                "batch",
                "G" * 41,
                "batch = 'GGGG",
            ),
            (
                "consume",
                {"op": OP, "material": "STEEL-1", "qty": 1},
                409,
                "invalid_value",
                "material",
                "STEEL-1",
                "material = 'STEEL-1': backflushed, its consumption follows from the count",
            ),
            (
                "consume",
                {"op": OP, "material": "SCREW-M4", "qty": 0},
                422,
                "invalid_value",
                "qty",
                0,
                "qty = 0",
            ),
            (
                "consume",
                {"op": OP, "material": "SCREW-M4", "qty": -2},
                422,
                "invalid_value",
                "qty",
                -2,
                "qty = -2",
            ),
            (
                "consume",
                {"op": OP, "material": "SCREW-M4", "qty": 1_000_000},
                422,
                "invalid_value",
                "qty",
                1_000_000,
                "qty = 1000000",
            ),
            (
                "consume",
                {"op": OP, "material": "SCREW-M4", "qty": "0.0001"},
                422,
                "invalid_value",
                "qty",
                "0.0001",
                "qty = '0.0001'",
            ),
            (
                "consume",
                {"op": OP, "material": "SCREW-M4", "qty": 1, "unit": "KG"},
                422,
                "invalid_value",
                "unit",
                "KG",
                "unit = 'KG'",
            ),
            (
                "load-batch",
                {"op": OTHER, "material": "SCREW-M4", "batch": "S-1"},
                409,
                "no_active_operation",
                "op",
                OTHER,
                "operation 4712/0010 is dispatched",
            ),
            (
                "consume",
                {"op": OTHER, "material": "SCREW-M4", "qty": 1},
                409,
                "no_active_operation",
                "op",
                OTHER,
                "operation 4712/0010 is dispatched",
            ),
            (
                "load-batch",
                {"op": OP, "material": "GLUE-7"},
                422,
                "invalid_value",
                "batch",
                None,
                "batch",
            ),
        ]
        for path, body, status, code, field, value, message in cases:
            r = await post(client, "/api/commands/" + path, **body)
            assert r.status_code == status, (path, body, r.text)
            error = r.json()
            assert (error["ok"], error["code"], error["field"]) == (False, code, field), error
            assert error["value"] == value, error
            assert error["message"].startswith(message), error
        assert await journal(panel) == before
        assert (await client.get("/api/state")).json()["active"][0]["components"] == components

        # with no operation active at all
        r = await post(client, "/api/commands/interrupt", op=OP)
        assert r.status_code == 200, r.text
        r = await post(client, "/api/commands/complete", op=OP, variance_reason="MATERIAL")
        assert r.status_code == 200, r.text
        after = await journal(panel)
        r = await post(client, "/api/commands/load-batch", op=OP, material="GLUE-7", batch="G-2")
        assert r.status_code == 409, r.text
        assert (r.json()["code"], r.json()["field"], r.json()["value"]) == (
            "no_active_operation",
            "op",
            OP,
        )
        assert r.json()["message"].startswith("operation 4711/0020 is completed")
        r = await post(client, "/api/commands/consume", op=OP, material="SCREW-M4", qty=1)
        assert (r.status_code, r.json()["code"], r.json()["field"]) == (
            409,
            "no_active_operation",
            "op",
        )
        assert await journal(panel) == after
        assert panel.engine.wc.operations[KEY].consumed == {}
