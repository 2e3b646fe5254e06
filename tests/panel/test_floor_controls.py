"""The floor's controls through the local API against the real daemon: hold and release by a
supervisor with a reason (and central's reason shown), rework and setup parts good, unassigned
production assigned by a supervisor. Every refusal names the field and stores nothing."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import httpx

from edge.domain.model import OperationKey, OperationStatus
from simulators.broker import Mosquitto
from simulators.central import CentralSimulator
from tests.gateway.conftest import ROOT as MQTT_ROOT
from tests.panel.conftest import (
    PIN,
    SUPERVISOR,
    Panel,
    panel_config,
    running_panel,
    spec,
    wait_until,
)

OP = "4711/0020"
KEY = OperationKey("4711", "0020")
# What the panel's commands leave: journal entries, their events and the messages of those
# (the ticks' own, a shift change or a no-count stop, may come at any time).
STORED = (
    "SELECT (SELECT COUNT(*) FROM journal WHERE input_type != 'Tick'),"
    " (SELECT COUNT(*) FROM event e JOIN journal j ON j.id = e.journal_id"
    "  WHERE j.input_type != 'Tick'),"
    " (SELECT COUNT(*) FROM outbox o JOIN event e ON e.id = o.event_id"
    "  JOIN journal j ON j.id = e.journal_id WHERE j.input_type != 'Tick')"
)


def cid() -> str:
    return str(uuid.uuid4())


async def login(client: httpx.AsyncClient) -> dict[str, str]:
    r = await client.post("/api/supervisor/login", json={"pin": PIN})
    assert r.status_code == 200, r.text
    return {"X-Supervisor-Token": r.json()["token"]}


async def post(
    client: httpx.AsyncClient, path: str, headers: dict[str, str] | None = None, **body: Any
) -> httpx.Response:
    body.setdefault("command_id", cid())
    return await client.post(path, json=body, headers=headers)


def listed(state: dict[str, Any], op: str) -> dict[str, Any]:
    (found,) = [o for o in state["dispatch"] + state["finished"] if o["op"] == op]
    return found


async def stored(panel: Panel) -> list[tuple[Any, ...]]:
    return await panel.rows(STORED)


async def test_a_supervisor_holds_with_a_reason_and_releases(tmp_path: Path) -> None:
    cfg = panel_config(tmp_path)
    async with (
        running_panel(cfg) as panel,
        httpx.AsyncClient(base_url=panel.url) as client,
    ):
        await panel.dispatch(spec("4711", "0020", 30, 10))
        r = await post(client, "/api/commands/start-production", op=OP)
        assert r.status_code == 200, r.text
        # without a session: no hold
        r = await post(client, "/api/supervisor/hold", op=OP, reason="Quality hold")
        assert (r.status_code, r.json()["code"]) == (401, "supervisor_login_required")
        headers = await login(client)
        before = await stored(panel)
        bad: list[tuple[object, str]] = [
            ("", "reason = '': "),
            ("   ", "reason = '   ': "),
            ("x" * 201, "reason = 'xxxx"),
            ("coil\x00batch", "reason = 'coil\\x00batch': not valid here"),
            ("two\nlines", "reason = 'two\\nlines': not valid here"),
            (17, "reason = 17: "),
            (None, "reason = None"),
        ]
        for reason, message in bad:
            r = await post(client, "/api/supervisor/hold", headers, op=OP, reason=reason)
            assert r.status_code == 422, (reason, r.text)
            assert (r.json()["field"], r.json()["message"][: len(message)]) == ("reason", message)
        r = await post(client, "/api/supervisor/hold", headers, op=OP)
        assert (r.status_code, r.json()["field"]) == (422, "reason")
        assert await stored(panel) == before  # nothing of a refused hold was kept
        assert panel.engine.wc.operations[KEY].status is OperationStatus.RUNNING

        r = await post(
            client, "/api/supervisor/hold", headers, op=OP, reason=" Quality hold: coil batch 88 "
        )
        assert r.status_code == 200, r.text
        held = listed(r.json()["state"], OP)
        assert (held["status"], held["status_reason"]) == ("held", "Quality hold: coil batch 88")
        assert r.json()["state"]["active"] == []
        ((actor, data),) = await panel.rows(
            "SELECT actor, data FROM event WHERE type = 'operation_state_changed'"
            " AND json_extract(data, '$.to') = 'held'"
        )
        assert actor == f"supervisor:{SUPERVISOR}"
        assert json.loads(data)["reason"] == "Quality hold: coil batch 88"
        # the operator cannot start it while it is held; the core says so
        r = await post(client, "/api/commands/start-production", op=OP)
        assert (r.status_code, r.json()["code"]) == (409, "illegal_transition")

    # a restart keeps the hold and its reason
    async with (
        running_panel(cfg) as panel,
        httpx.AsyncClient(base_url=panel.url) as client,
    ):
        state = (await client.get("/api/state")).json()
        assert listed(state, OP)["status_reason"] == "Quality hold: coil batch 88"
        headers = await login(client)
        r = await post(client, "/api/supervisor/release", headers, op=OP)
        assert r.status_code == 200, r.text
        (active,) = r.json()["state"]["active"]
        assert (active["status"], active["status_reason"]) == ("running", None)


async def test_a_supervisor_cancel_may_say_why(tmp_path: Path) -> None:
    async with (
        running_panel(panel_config(tmp_path)) as panel,
        httpx.AsyncClient(base_url=panel.url) as client,
    ):
        await panel.dispatch(spec("4711", "0020", 30, 10))
        headers = await login(client)
        r = await post(client, "/api/supervisor/cancel", headers, op=OP, reason="Drawing changed")
        assert r.status_code == 200, r.text
        done = listed(r.json()["state"], OP)
        assert (done["status"], done["status_reason"]) == ("cancelled", "Drawing changed")


async def test_centrals_reason_for_a_hold_is_kept_and_shown(
    tmp_path: Path, broker: Mosquitto
) -> None:
    async with (
        CentralSimulator(broker.host, broker.port, roots=[MQTT_ROOT]) as central,
        running_panel(panel_config(tmp_path, broker=broker)) as panel,
        httpx.AsyncClient(base_url=panel.url) as client,
    ):
        await central.dispatcher.send_dispatch(
            MQTT_ROOT,
            1,
            [{"order_id": "4711", "operation": "0020", "material": "FG-4711", "quantity": 20}],
        )
        await wait_until(lambda: KEY in panel.engine.wc.operations, what="dispatch")
        r = await post(client, "/api/commands/start-production", op=OP)
        assert r.status_code == 200, r.text
        # central's words may hold a line break: it arrives as one line
        await central.dispatcher.send_hold(
            MQTT_ROOT, "4711", "0020", reason="quality hold:\ncoil batch 88"
        )
        op = panel.engine.wc.operations[KEY]
        await wait_until(lambda: op.status is OperationStatus.HELD, what="central's hold")
        state = (await client.get("/api/state")).json()
        assert listed(state, OP)["status_reason"] == "quality hold: coil batch 88"
        await central.dispatcher.send_release(MQTT_ROOT, "4711", "0020")
        await wait_until(lambda: op.status is OperationStatus.RUNNING, what="central's release")
        assert op.status_reason is None


async def test_rework_and_setup_parts_good(tmp_path: Path) -> None:
    async with (
        running_panel(panel_config(tmp_path)) as panel,
        httpx.AsyncClient(base_url=panel.url) as client,
    ):
        await panel.dispatch(spec("4711", "0020", 30, 10))
        r = await post(client, "/api/commands/start-setup", op=OP)
        assert r.status_code == 200, r.text
        await panel.pulses(3)  # first-off parts in setup are setup scrap
        (active,) = (await client.get("/api/active")).json()
        assert (active["good"], active["setup_scrap_pending"]) == (0, 3)
        before = await stored(panel)
        for qty, status, field, message in [
            (4, 409, "qty", "qty = 4: only 3 PC of unconfirmed setup scrap"),
            (0, 422, "qty", "qty = 0: must be greater than 0"),
            ("1.23456", 422, "qty", "qty = '1.23456': at most 3 decimals"),
        ]:
            r = await post(client, "/api/commands/setup-good", op=OP, qty=qty)
            assert r.status_code == status, (qty, r.text)
            assert (r.json()["field"], r.json()["message"][: len(message)]) == (field, message)
        assert await stored(panel) == before
        r = await post(client, "/api/commands/setup-good", op=OP, qty=2)
        assert r.status_code == 200, r.text
        assert r.json()["events"] == ["setup_parts_declared_good"]
        (active,) = r.json()["state"]["active"]
        assert (active["good"], active["setup_scrap_pending"]) == (2, 1)

        r = await post(client, "/api/commands/start-production", op=OP)
        await panel.pulses(5)
        r = await post(client, "/api/commands/scrap", op=OP, qty=2, reason="S03", rework=True)
        assert r.status_code == 200, r.text
        (active,) = r.json()["state"]["active"]
        assert (active["rework"], active["scrap"]) == (2, 1)  # the setup scrap left
        op = panel.engine.wc.operations[KEY]
        assert op.counted.rework == {"S03": 2}


async def test_rework_is_true_or_false_nothing_else(tmp_path: Path) -> None:
    """Before: "yes", "true", 1 and 0 passed as a choice of scrap or rework (a lax bool)."""
    async with (
        running_panel(panel_config(tmp_path)) as panel,
        httpx.AsyncClient(base_url=panel.url) as client,
    ):
        await panel.dispatch(spec("4711", "0020", 30, 10))
        r = await post(client, "/api/commands/start-production", op=OP)
        assert r.status_code == 200, r.text
        await panel.pulses(5)
        before = await stored(panel)
        for rework in ("yes", "true", 1, 0, None):
            r = await post(client, "/api/commands/scrap", op=OP, qty=1, reason="S03", rework=rework)
            assert (r.status_code, r.json()["field"]) == (422, "rework"), (rework, r.text)
        assert await stored(panel) == before
        op = panel.engine.wc.operations[KEY]
        assert (op.counted.scrap, op.counted.rework) == ({}, {})


async def test_a_supervisor_assigns_unassigned_production(tmp_path: Path) -> None:
    from decimal import Decimal

    async with (
        running_panel(panel_config(tmp_path)) as panel,
        httpx.AsyncClient(base_url=panel.url) as client,
    ):
        await panel.dispatch(spec("4711", "0020", 30, 10, parts_per_signal=Decimal(4)))
        await panel.pulses(3)  # nothing runs: unassigned
        state = (await client.get("/api/state")).json()
        (u,) = state["unassigned"]
        assert (u["good_signals"], u["scrap_signals"], u["open"]) == (3, 0, True)
        assert listed(state, OP)["parts_per_signal"] == 4
        uid = u["unassigned_id"]
        r = await post(client, "/api/supervisor/assign-unassigned", unassigned_id=uid, op=OP)
        assert (r.status_code, r.json()["code"]) == (401, "supervisor_login_required")
        headers = await login(client)
        before = await stored(panel)
        for body, status, field in [
            ({"unassigned_id": "U 1; DROP", "op": OP}, 422, "unassigned_id"),
            ({"unassigned_id": "x" * 41, "op": OP}, 422, "unassigned_id"),
            ({"unassigned_id": "U999999", "op": OP}, 409, "unassigned_id"),
            ({"unassigned_id": uid, "op": "9999/0010"}, 409, "op"),
            ({"unassigned_id": uid, "op": "no-slash"}, 422, "op"),
        ]:
            r = await post(client, "/api/supervisor/assign-unassigned", headers, **body)
            assert (r.status_code, r.json()["field"]) == (status, field), (body, r.text)
        assert await stored(panel) == before
        r = await post(
            client, "/api/supervisor/assign-unassigned", headers, unassigned_id=uid, op=OP
        )
        assert r.status_code == 200, r.text
        assert r.json()["events"] == ["unassigned_production", "unassigned_assigned"]
        assert r.json()["state"]["unassigned"] == []
        assert panel.engine.wc.operations[KEY].counted.good == 12  # 3 signals x 4 parts
        ((actor,),) = await panel.rows("SELECT actor FROM event WHERE type = 'unassigned_assigned'")
        assert actor == f"supervisor:{SUPERVISOR}"
        # once assigned, a second time is refused
        r = await post(
            client, "/api/supervisor/assign-unassigned", headers, unassigned_id=uid, op=OP
        )
        assert (r.status_code, r.json()["code"]) == (409, "unknown_unassigned")


async def rejected_then_posted(panel: Panel, client: httpx.AsyncClient) -> None:
    """Confirmation #1 of OP: rejected by the ERP, resent by the supervisor, posted."""
    from edge.domain.inputs import ConfirmationResult, ResultStatus

    await panel.dispatch(spec("4711", "0020", 30, 10))
    r = await post(client, "/api/commands/start-production", op=OP)
    assert r.status_code == 200, r.text
    await panel.pulses(10)  # every 10 good: confirmation #1
    conf = panel.engine.wc.confirmations[f"{OP}#1"]
    first_key = conf.idem_key
    out = await panel.engine.submit(
        ConfirmationResult(
            first_key, ResultStatus.REJECTED, panel.engine.now(), "Order 4711 is not released"
        )
    )
    assert out.accepted, out.rejection
    headers = await login(client)
    r = await post(client, "/api/supervisor/resend", headers, op=OP, counter=1)
    assert r.status_code == 200, r.text
    assert conf.idem_key != first_key
    out = await panel.engine.submit(
        ConfirmationResult(
            conf.idem_key, ResultStatus.POSTED, panel.engine.now(), None, '{"group": "7701"}'
        )
    )
    assert out.accepted, out.rejection


async def test_a_confirmations_history_from_the_stored_events(tmp_path: Path) -> None:
    cfg = panel_config(tmp_path)
    async with (
        running_panel(cfg) as panel,
        httpx.AsyncClient(base_url=panel.url) as client,
    ):
        await rejected_then_posted(panel, client)
        before = await stored(panel)
        for conf_id, status in [
            ("4711/0020#9", 404),
            ("4711/0020", 422),
            ("'; DROP TABLE event; --#1", 422),
            ("4711/0020#1" + "1" * 10, 422),
        ]:
            r = await client.get("/api/confirmation-history", params={"conf_id": conf_id})
            assert r.status_code == status, (conf_id, r.text)
        assert await stored(panel) == before

    async with (  # after a restart: the same, from the database
        running_panel(cfg) as panel,
        httpx.AsyncClient(base_url=panel.url) as client,
    ):
        r = await client.get("/api/confirmation-history", params={"conf_id": f"{OP}#1"})
        assert r.status_code == 200, r.text
        entries = r.json()["entries"]
        steps = [(e["type"], e["status"], e["actor"]) for e in entries]
        assert steps == [
            ("created", None, "machine:press_good"),
            ("result", "rejected", "central"),
            ("resent", None, f"supervisor:{SUPERVISOR}"),
            ("result", "posted", "central"),
        ]
        assert entries[1]["message"] == "Order 4711 is not released"
        assert entries[3]["erp_ref"] == '{"group": "7701"}'
        assert entries[0]["idem_key"] != entries[2]["idem_key"]  # resent under a new key
        assert entries[0]["sent"] in ("pending", "published", "done")  # its outbox message
        times = [e["at_wall_ms"] for e in entries]
        assert times == sorted(times)


async def test_a_change_by_central_to_the_running_order_is_a_notice(tmp_path: Path) -> None:
    cfg = panel_config(tmp_path)
    async with (
        running_panel(cfg) as panel,
        httpx.AsyncClient(base_url=panel.url) as client,
    ):
        await panel.dispatch(
            spec("4711", "0020", 30, 10, std_cycle_s=10.0), spec("4712", "0010", 50, 20)
        )
        r = await post(client, "/api/commands/start-production", op=OP)
        assert r.status_code == 200, r.text
        assert r.json()["state"]["notices"] == []
        await panel.dispatch(
            spec("4711", "0020", 40, 10, std_cycle_s=8.0, due="2030-03-03T14:00:00Z"),
            spec("4712", "0010", 60, 20),  # not active: no notice
            version=2,
        )
        (notice,) = (await client.get("/api/state")).json()["notices"]
        assert notice["op"] == OP
        assert notice["changes"] == {
            "target_qty": [30, 40],
            "std_cycle_s": [10.0, 8.0],
            "due": [None, "2030-03-03T14:00:00Z"],
        }
    async with (  # after a restart, from the stored events
        running_panel(cfg) as panel,
        httpx.AsyncClient(base_url=panel.url) as client,
    ):
        (again,) = (await client.get("/api/state")).json()["notices"]
        assert again == notice
        r = await post(client, "/api/commands/complete", op=OP, variance_reason="V1")
        assert r.status_code == 200, r.text
        assert r.json()["state"]["notices"] == []  # only for what is active
