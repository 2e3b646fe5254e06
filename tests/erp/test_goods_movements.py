"""A confirmation's goods movements reach the ERP exactly once, per ``[erp] goods_movements``
(``recorded``, ``all``, ``none``): the SAP adapter against the SAP stand-in over real HTTP on
loopback (the stand-in backflushes the components its order says are backflushed, so a
quantity that went twice shows in its consumption), and the stand-in's own checks of the deep
insert."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import time
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pydantic
import pytest

from edge.errors import ConfigError
from edge.relay import d365 as d365_relay
from edge.relay import files as files_relay
from edge.relay import sap as sap_relay
from edge.relay.config import load_relay_config
from edge.relay.erp import (
    GoodsMovement,
    NotFound,
    Outcome,
    Posted,
    Posting,
    Rejected,
    Submitted,
    Unknown,
    external_id,
)
from simulators.erp.d365 import D365StandIn
from simulators.erp.files import FileErpStandIn
from simulators.erp.sap import SapStandIn
from tests.erp.helpers import D365_SECRET, d365_values, write_secret

pytestmark = pytest.mark.timeout(20)

USER, PASSWORD = "RELAY", "relay-secret"
T0 = 1_741_000_000_000  # 2025-03-03T11:06:40Z
ORDER = "1000123"
COIL = GoodsMovement("COIL-2MM", Decimal("10.2"), "KG", batch="C250301", backflush=True)
SCREWS = GoodsMovement("SCREW-M4", Decimal(400), "PC", item="0020")
SCREWS_BACK = GoodsMovement("SCREW-M4", Decimal(8), "PC", direction="return", item="0020")
PAINT = GoodsMovement("PAINT-RED", Decimal("1.5"), "L", batch="P77")
MOVEMENTS = (COIL, SCREWS, SCREWS_BACK, PAINT)


def make_posting(n: int = 1, **changes: Any) -> Posting:
    fields: dict[str, Any] = {
        "kind": "confirmation",
        "idem_key": f"wc-press-07|{ORDER}|0010|0|conf|{n}",
        "edge_id": "wc-press-07",
        "root": "umh/v1/acme/plant1/stamping/line4/PRESS07",
        "seq": 100 + n,
        "work_center": "PRESS07",
        "order_id": ORDER,
        "operation": "0010",
        "split": 0,
        "conf_index": n,
        "event_ms": T0 + n * 60_000,
        "yield_qty": Decimal(100),
        "scrap_qty": Decimal(2),
        "rework_qty": Decimal(0),
        "unit": "PC",
        "material": "FG-4711",
        "posting_date": "2025-03-03",
        "period_start_ms": T0,
        "period_end_ms": T0 + n * 60_000,
        "goods_movements": MOVEMENTS,
        "batch": "B250303",
    }
    fields.update(changes)
    return Posting(**fields)


def reversal_of(p: Posting, keys: dict[str, str]) -> Posting:
    return Posting(
        **{
            **{f: getattr(p, f) for f in Posting.__dataclass_fields__},
            "kind": "reversal",
            "idem_key": p.idem_key + "|rev",
            "reverses_idem_key": p.idem_key,
            "reverses_keys": keys,
        }
    )


@pytest.fixture
async def sap() -> AsyncIterator[SapStandIn]:
    async with SapStandIn(user=USER, password=PASSWORD) as stand_in:
        state = stand_in.state
        state.register_order(ORDER, material="FG-4711", plant="1010")
        # 0.1 kg of coil per piece, backflushed by SAP from the batch its determination finds
        state.register_component(
            ORDER,
            "COIL-2MM",
            qty_per_unit="0.1",
            unit="KG",
            backflush=True,
            batch_managed=True,
            batch="C250301",
        )
        state.register_component(ORDER, "SCREW-M4", qty_per_unit=4, unit="PC")
        state.register_component(
            ORDER, "PAINT-RED", qty_per_unit="0.015", unit="L", batch_managed=True
        )
        yield stand_in


@contextlib.asynccontextmanager
async def adapter(sap: SapStandIn, tmp_path: Path, **settings: Any) -> AsyncIterator[Any]:
    secret = tmp_path / "sap-password"
    secret.write_text(PASSWORD + "\n")
    values: dict[str, Any] = {
        "system": "sap",
        "service_url": sap.url,
        "user": USER,
        "password_file": str(secret),
        "timeout_s": 2.0,
        "plant": "1010",
        **settings,
    }
    a = sap_relay.build(sap_relay.Settings.model_validate(values))
    await a.start()
    try:
        yield a
    finally:
        await a.close()


# What the order consumed in SAP after the confirmation above, whatever the mode: SAP's own
# backflush or the relay's items, never both.
ONCE = {
    ("COIL-2MM", "C250301"): Decimal("10.2"),
    ("SCREW-M4", ""): Decimal(392),
    ("PAINT-RED", "P77"): Decimal("1.5"),
}


@pytest.mark.parametrize(
    ("mode", "sent", "expected"),
    [
        # the relay sends what SAP does not backflush; SAP backflushes the coil
        ("recorded", ["SCREW-M4 261", "SCREW-M4 262", "PAINT-RED 261"], ONCE),
        # the relay sends everything and SAP's backflush is off
        ("all", ["COIL-2MM 261", "SCREW-M4 261", "SCREW-M4 262", "PAINT-RED 261"], ONCE),
        # nothing from the relay: only SAP's backflush
        ("none", [], {("COIL-2MM", "C250301"): Decimal("10.2")}),
    ],
)
async def test_each_mode_posts_each_consumed_quantity_once(
    sap: SapStandIn, tmp_path: Path, mode: str, sent: list[str], expected: dict[Any, Decimal]
) -> None:
    async with adapter(sap, tmp_path, goods_movements=mode) as a:
        outcome = await a.post(make_posting())
    assert isinstance(outcome, Posted), outcome
    (record,) = sap.state.ledger()
    items = record.sent.get("to_ProdnOrdConfMatlDocItm", [])
    assert [f"{i['Material']} {i['GoodsMovementType']}" for i in items] == sent
    assert record.sent.get("APIConfHasNoGoodsMovements", False) is (mode == "all")
    assert sap.state.consumption(ORDER) == expected
    if mode != "none":
        screws = next(i for i in items if i["Material"] == "SCREW-M4")
        assert screws == {
            "OrderID": ORDER,
            "Material": "SCREW-M4",
            "GoodsMovementType": "261",
            "EntryUnit": "PC",
            "QuantityInEntryUnit": "400.000",
            "Plant": "1010",
        }  # a bare reservation item (no reservation number) is not sent
        paint = next(i for i in items if i["Material"] == "PAINT-RED")
        assert paint["Batch"] == "P77"
    assert sap.state.received(ORDER) == {}  # the receipt is SAP's own (not modelled here)


async def test_the_produced_batch_goes_on_the_goods_receipt(
    sap: SapStandIn, tmp_path: Path
) -> None:
    async with adapter(sap, tmp_path, goods_movements="all", goods_receipt=True) as a:
        outcome = await a.post(make_posting())
        assert isinstance(outcome, Posted), outcome
        received = sap.state.received(ORDER)
        assert received == {("FG-4711", "B250303"): Decimal(100)}
        (record,) = sap.state.ledger()
        receipt = record.sent["to_ProdnOrdConfMatlDocItm"][0]
        assert receipt["GoodsMovementType"] == "101"
        assert receipt["GoodsMovementRefDocType"] == "F"
        assert receipt["ManufactureDate"] == sap_relay.odata_date(dt.date(2025, 3, 3))
        # the reversal takes the receipt back with the issues
        back = await a.reverse(reversal_of(make_posting(), dict(outcome.keys)))
        assert isinstance(back, Posted), back
    assert sap.state.received(ORDER) == {}
    assert sap.state.consumption(ORDER) == {}


async def test_a_resend_after_a_lost_answer_posts_the_movements_once(
    sap: SapStandIn, tmp_path: Path
) -> None:
    p = make_posting()
    sap.state.drop_after_commit(1)  # SAP saves it, then the connection drops
    async with adapter(sap, tmp_path, goods_movements="all") as a:
        first = await a.post(p)
        assert isinstance(first, Unknown), first
        found = await a.lookup(p)  # what the relay asks before posting again
        assert isinstance(found, Posted), found
    assert sap.state.count_by_external_id() == {external_id(p.idem_key): 1}
    assert sap.state.consumption(ORDER) == ONCE


@pytest.mark.parametrize("mode", ["recorded", "all"])
async def test_a_reversal_gives_the_movements_back(
    sap: SapStandIn, tmp_path: Path, mode: str
) -> None:
    async with adapter(sap, tmp_path, goods_movements=mode) as a:
        posted = await a.post(make_posting())
        assert isinstance(posted, Posted), posted
        assert sap.state.consumption(ORDER) == ONCE
        back = await a.reverse(reversal_of(make_posting(), dict(posted.keys)))
        assert isinstance(back, Posted), back
        again = await a.post(make_posting(2, yield_qty=Decimal(50), scrap_qty=Decimal(0)))
        assert isinstance(again, Posted), again
    cancellation = sap.state.reversals()[0]
    assert {i["GoodsMovementType"] for i in cancellation.items} == {"261", "262"}
    assert len(cancellation.items) == len(sap.state.ledger()[0].items)
    # only the second confirmation is left: 50 pieces' coil, and the same recorded items
    assert sap.state.consumption(ORDER) == {
        ("COIL-2MM", "C250301"): Decimal("5.0") if mode == "recorded" else Decimal("10.2"),
        ("SCREW-M4", ""): Decimal(392),
        ("PAINT-RED", "P77"): Decimal("1.5"),
    }


async def test_a_movement_sap_refuses_comes_back_as_a_rejection_naming_the_field(
    sap: SapStandIn, tmp_path: Path
) -> None:
    no_batch = GoodsMovement("PAINT-RED", Decimal("1.5"), "L")  # batch-managed, no batch
    async with adapter(sap, tmp_path) as a:
        refused = await a.post(make_posting(goods_movements=(no_batch,)))
        assert isinstance(refused, Rejected), refused
        assert refused.code == "M7/018"
        assert "PAINT-RED" in refused.text
        assert "Batch" in refused.text
        wrong_unit = GoodsMovement("SCREW-M4", Decimal(4), "KG")
        refused = await a.post(make_posting(goods_movements=(wrong_unit,)))
        assert isinstance(refused, Rejected), refused
        assert "EntryUnit KG" in refused.text
        # what SAP's fields cannot hold never leaves the relay
        long_batch = GoodsMovement("PAINT-RED", Decimal(1), "L", batch="B" * 11)
        refused = await a.post(make_posting(goods_movements=(long_batch,)))
        assert isinstance(refused, Rejected), refused
        assert "goods_movements[0].batch" in refused.text
        assert "B" * 11 in refused.text
    assert sap.state.ledger() == []
    assert sap.state.consumption(ORDER) == {}


async def test_a_movement_of_quantity_zero_is_not_sent(sap: SapStandIn, tmp_path: Path) -> None:
    nothing = GoodsMovement("SCREW-M4", Decimal(0), "PC")
    async with adapter(sap, tmp_path) as a:
        outcome = await a.post(make_posting(goods_movements=(nothing, PAINT)))
    assert isinstance(outcome, Posted), outcome
    (record,) = sap.state.ledger()
    assert [i["Material"] for i in record.sent["to_ProdnOrdConfMatlDocItm"]] == ["PAINT-RED"]


# -- the setting ------------------------------------------------------------------------------


def relay_toml(tmp_path: Path, erp: str) -> Path:
    path = tmp_path / "relay.toml"
    path.write_text(
        '[relay]\nenterprise = "acme"\n\n[erp]\nsystem = "sap"\n'
        'service_url = "https://s4.example/sap/opu/odata/sap/API_PROD_ORDER_CONFIRMATION_2_SRV/"\n'
        'user = "EDGE_RELAY"\n' + erp
    )
    return path


def test_the_setting_defaults_to_recorded_and_refuses_a_bad_value(tmp_path: Path) -> None:
    cfg = load_relay_config(relay_toml(tmp_path, ""))
    assert isinstance(cfg.erp, sap_relay.Settings)
    assert cfg.erp.goods_movements == "recorded"
    with pytest.raises(ConfigError) as info:
        load_relay_config(relay_toml(tmp_path, 'goods_movements = "both"\n'))
    text = str(info.value)
    assert "goods_movements = 'both'" in text  # erp.sap.goods_movements, as pydantic nests it
    assert "'recorded', 'all' or 'none'" in text
    with pytest.raises(ConfigError) as info:
        load_relay_config(relay_toml(tmp_path, "goods_receipt = true\n"))
    assert "goods_receipt" in str(info.value)
    assert "'recorded'" in str(info.value)


def test_the_example_configuration_names_the_setting() -> None:
    root = Path(__file__).resolve().parents[2]
    text = (root / "config" / "relay.example.toml").read_text()
    assert 'goods_movements = "recorded"' in text


# -- the stand-in's deep insert ---------------------------------------------------------------


@contextlib.contextmanager
def session(sap: SapStandIn) -> Iterator[httpx.Client]:
    with httpx.Client(auth=(USER, PASSWORD), timeout=5) as client:
        fetched = client.get(sap.url, headers={"x-csrf-token": "Fetch"})
        client.headers["x-csrf-token"] = fetched.headers["x-csrf-token"]
        yield client


def conf_body(items: Any, **extra: Any) -> dict[str, Any]:
    return {
        "OrderID": ORDER,
        "OrderOperation": "0010",
        "ConfirmationUnit": "PC",
        "ConfirmationYieldQuantity": "10",
        "ExternalSystemConfirmation": "7f1b7f4e-2a59-4a0c-9d61-3c2f0b0f2a11",
        "to_ProdnOrdConfMatlDocItm": items,
        **extra,
    }


COIL_ITEM = {
    "Material": "COIL-2MM",
    "GoodsMovementType": "261",
    "EntryUnit": "KG",
    "QuantityInEntryUnit": "1",
    "Batch": "C250301",
}


@pytest.mark.parametrize("shape", ["verbose", "array"])
def test_the_stand_in_backflushes_unless_told_not_to(sap: SapStandIn, shape: str) -> None:
    def nested(items: list[dict[str, Any]]) -> Any:
        return {"results": items} if shape == "verbose" else items

    with session(sap) as client:
        # the coil sent and SAP's backflush still on: consumed twice (what "all" must avoid)
        twice = client.post(sap.url + "ProdnOrdConf2", json=conf_body(nested([COIL_ITEM])))
        assert twice.status_code == 201, twice.text
        uri = twice.json()["d"]["__metadata"]["uri"]
        items = client.get(uri + "/to_ProdnOrdConfMatlDocItm").json()["d"]["results"]
        assert [i["MaterialDocumentItemText"] for i in items] == ["", "backflush"]
        assert [i["QuantityInEntryUnit"] for i in items] == ["1.000", "1.000"]
        assert sap.state.consumption(ORDER) == {("COIL-2MM", "C250301"): Decimal(2)}
        once = client.post(
            sap.url + "ProdnOrdConf2",
            json=conf_body(nested([COIL_ITEM]), APIConfHasNoGoodsMovements=True),
        )
        assert once.status_code == 201, once.text
        expanded = client.get(
            once.json()["d"]["__metadata"]["uri"], params={"$expand": "to_ProdnOrdConfMatlDocItm"}
        ).json()["d"]
        (item,) = expanded["to_ProdnOrdConfMatlDocItm"]["results"]
        assert item["Batch"] == "C250301"
    assert sap.state.consumption(ORDER) == {("COIL-2MM", "C250301"): Decimal(3)}


@pytest.mark.parametrize(
    ("change", "target", "code"),
    [
        ({"Material": ""}, "Material", "M7/002"),
        ({"EntryUnit": None}, "EntryUnit", "M7/002"),
        ({"QuantityInEntryUnit": None}, "QuantityInEntryUnit", "M7/002"),
        ({"QuantityInEntryUnit": "0"}, "QuantityInEntryUnit", "M7/010"),
        ({"QuantityInEntryUnit": "-1"}, "QuantityInEntryUnit", "M7/010"),
        ({"GoodsMovementType": "311"}, "GoodsMovementType", "M7/005"),
        ({"EntryUnit": "G"}, "EntryUnit", "M7/012"),
        ({"Material": "NOT-IN-BOM"}, "Material", "M7/001"),
        ({"Batch": ""}, "Batch", "M7/018"),
    ],
)
def test_the_stand_in_refuses_a_bad_movement_naming_the_property(
    sap: SapStandIn, change: dict[str, Any], target: str, code: str
) -> None:
    item = {k: v for k, v in {**COIL_ITEM, **change}.items() if v is not None}
    with session(sap) as client:
        refused = client.post(
            sap.url + "ProdnOrdConf2",
            json=conf_body([item], APIConfHasNoGoodsMovements=True),
        )
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert error["code"] == code
    detail = error["innererror"]["errordetails"][0]
    assert detail["target"] == target
    assert detail["severity"] == "error"
    assert "item 1" in error["message"]["value"]
    assert sap.state.ledger() == []


# -- Dynamics 365: a picking list ---------------------------------------------------------------

D365_ORDER = "P000123"


def d365_posting(n: int = 1, **changes: Any) -> Posting:
    values: dict[str, Any] = {"order_id": D365_ORDER, "material": "A0001", **changes}
    return make_posting(n, **values)


@pytest.fixture
async def d365() -> AsyncIterator[D365StandIn]:
    async with D365StandIn(client_secret=D365_SECRET, process_delay_s=0.02) as stand_in:
        state = stand_in.state
        state.add_order(D365_ORDER, item="A0001", quantity=1000, operations=(10, 20))
        # the coil is flushed by D365 itself; screws and paint only by a picking list
        state.add_bom_line(D365_ORDER, "COIL-2MM", qty_per_unit="0.1", unit="KG", flushing="Finish")
        state.add_bom_line(D365_ORDER, "SCREW-M4", qty_per_unit=4, unit="PC")
        state.add_bom_line(D365_ORDER, "PAINT-RED", qty_per_unit="0.015", unit="L")
        yield stand_in


@contextlib.asynccontextmanager
async def d365_adapter(d365: D365StandIn, tmp_path: Path, **changes: Any) -> AsyncIterator[Any]:
    values = d365_values(d365, write_secret(tmp_path), poll_interval_s=0.1, **changes)
    a = d365_relay.build(d365_relay.Settings.model_validate(values))
    await a.start()
    try:
        yield a
    finally:
        await a.close()


async def settle(a: Any, posting: Posting, outcome: Outcome) -> Outcome:
    """Poll a Submitted posting until it is something else (at most 5 s)."""
    deadline = time.monotonic() + 5.0
    while isinstance(outcome, Submitted):
        assert time.monotonic() < deadline, "still submitted after 5 s"
        await asyncio.sleep(0.03)
        outcome = await a.poll(posting, outcome.ref)
    return outcome


D365_ONCE = {"COIL-2MM": Decimal("10.2"), "SCREW-M4": Decimal(392), "PAINT-RED": Decimal("1.5")}


@pytest.mark.parametrize(
    ("mode", "lines", "expected"),
    [
        ("recorded", [("SCREW-M4", 400), ("SCREW-M4", -8), ("PAINT-RED", 1.5)], D365_ONCE),
        (
            "all",
            [("COIL-2MM", 10.2), ("SCREW-M4", 400), ("SCREW-M4", -8), ("PAINT-RED", 1.5)],
            D365_ONCE,
        ),
        ("none", None, {"COIL-2MM": Decimal("10.2")}),
    ],
)
async def test_d365_gets_each_consumed_quantity_once(
    d365: D365StandIn,
    tmp_path: Path,
    mode: str,
    lines: list[tuple[str, float]] | None,
    expected: dict[str, Decimal],
) -> None:
    p = d365_posting(final=True)
    async with d365_adapter(d365, tmp_path, goods_movements=mode) as a:
        outcome = await settle(a, p, await a.post(p))
    assert isinstance(outcome, Posted), outcome
    assert ("picking_list" in outcome.keys) is (lines is not None)
    assert d365.state.consumption(D365_ORDER) == expected
    d365.state.assert_exactly_once()
    types = [m.message_type for m in d365.state.messages]
    route_card = json.loads(d365.state.messages[0].content)
    finished = json.loads(d365.state.messages[-1].content)["ReportFinishedLines"][0]
    assert finished["ItemBatchNumber"] == "B250303"  # the produced batch
    if lines is None:
        assert "ProdProductionOrderPickingList" not in types
        return
    assert types == [
        "ProdProductionOrderRouteCard",
        "ProdProductionOrderPickingList",
        "ProdProductionOrderReportFinished",
    ]
    picking = json.loads(d365.state.by_id(outcome.keys["picking_list"])[0].content)
    assert picking["ProductionOrderNumber"] == D365_ORDER
    got = [(x["ItemNumber"], x["ConsumptionBOMQuantity"]) for x in picking["PickingListLines"]]
    assert got == lines
    assert {x["BOMUnitSymbol"] for x in picking["PickingListLines"]} <= {"KG", "PC", "L"}
    assert {x["OperationNumber"] for x in picking["PickingListLines"]} == {10}
    no_bom = "No" if mode == "all" else None
    assert route_card["RouteCardLines"][-1].get("BOMConsumption") == no_bom
    assert finished.get("AutomaticBOMConsumptionRule") == ("Never" if mode == "all" else None)


async def test_d365_resend_after_a_lost_answer_consumes_once(
    d365: D365StandIn, tmp_path: Path
) -> None:
    p = d365_posting()
    async with d365_adapter(d365, tmp_path) as a:
        d365.state.drop_next(2)  # both messages are stored, neither answer arrives
        outcome: Outcome | NotFound = await a.post(p)
        seen: list[str] = []
        for _ in range(6):  # what the relay does: ask after a lost answer, post what is missing
            seen.append(type(outcome).__name__)
            if isinstance(outcome, Unknown):
                outcome = await a.lookup(p)
            elif isinstance(outcome, NotFound):
                outcome = await a.post(p)  # sends only what D365 does not have
            elif isinstance(outcome, Submitted):
                outcome = await settle(a, p, outcome)
            else:
                break
        assert isinstance(outcome, Posted), (outcome, seen)
        assert seen[:4] == ["Unknown", "NotFound", "Unknown", "Submitted"]
        again = await settle(a, p, await a.post(p))  # and once more, as a resend would
        assert isinstance(again, Posted), again
    d365.state.assert_exactly_once()
    assert d365.state.consumption(D365_ORDER) == D365_ONCE
    kinds = [m.message_type for m in d365.state.messages]
    assert kinds.count("ProdProductionOrderPickingList") == 1


@pytest.mark.parametrize("mode", ["recorded", "all"])
async def test_d365_reversal_gives_the_movements_back(
    d365: D365StandIn, tmp_path: Path, mode: str
) -> None:
    p = d365_posting()
    async with d365_adapter(d365, tmp_path, goods_movements=mode) as a:
        posted = await settle(a, p, await a.post(p))
        assert isinstance(posted, Posted), posted
        assert d365.state.consumption(D365_ORDER) == D365_ONCE
        r = reversal_of(p, {})
        back = await settle(a, r, await a.reverse(r))
        assert isinstance(back, Posted), back
        assert back.keys["picking_list"] != posted.keys["picking_list"]
    assert d365.state.consumption(D365_ORDER) == {}
    d365.state.assert_exactly_once()


async def test_d365_refusing_a_picking_list_line_is_a_rejection_naming_the_field(
    d365: D365StandIn, tmp_path: Path
) -> None:
    wrong_unit = GoodsMovement("PAINT-RED", Decimal("1.5"), "KG")
    p = d365_posting(goods_movements=(wrong_unit,))
    async with d365_adapter(d365, tmp_path) as a:
        outcome = await settle(a, p, await a.post(p))
    assert isinstance(outcome, Rejected), outcome
    assert "BOMUnitSymbol" in outcome.text
    assert "KG" in outcome.text
    assert "PAINT-RED" in outcome.text
    assert d365.state.consumption(D365_ORDER) == {"COIL-2MM": Decimal("10.2")}  # route card


# -- the file ERP: B2MML MaterialActual -----------------------------------------------------------


@pytest.fixture
def folders(tmp_path: Path) -> dict[str, Path]:
    out = {name: tmp_path / name for name in ("drop", "ack", "archive")}
    for d in out.values():
        d.mkdir()
    return out


def file_settings(folders: dict[str, Path], **changes: Any) -> files_relay.Settings:
    values: dict[str, Any] = {
        "system": "file",
        "format": "b2mml",
        "drop_dir": folders["drop"],
        "ack_dir": folders["ack"],
        "archive_dir": folders["archive"],
        "poll_interval_s": 0.05,
        **changes,
    }
    return files_relay.Settings.model_validate(values)


async def file_settle(a: Any, p: Posting, outcome: Outcome) -> Outcome:
    async with asyncio.timeout(5.0):
        while isinstance(outcome, Submitted):
            await asyncio.sleep(0.02)
            outcome = await a.poll(p, outcome.ref)
    return outcome


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        (None, {k: v for k, v in ONCE.items() if k[0] != "COIL-2MM"}),  # recorded
        ("all", ONCE),
        ("none", {}),
    ],
)
async def test_the_file_erp_gets_the_movements_as_material_actuals(
    folders: dict[str, Path], mode: str | None, expected: dict[Any, Decimal]
) -> None:
    changes = {} if mode is None else {"goods_movements": mode}
    a = files_relay.build(file_settings(folders, **changes))
    await a.start()
    p = make_posting()
    async with FileErpStandIn(folders["drop"], folders["ack"], folders["archive"]) as erp:
        done = await file_settle(a, p, await a.post(p))
        assert isinstance(done, Posted), done
        assert erp.consumption(ORDER) == expected
        entry = erp.entry(p.idem_key)
        assert entry is not None
        assert entry.fields["batch"] == "B250303"  # the produced batch, on Produced
        # posting it again writes nothing new: the ERP answered it already
        again = await file_settle(a, p, await a.post(p))
        assert isinstance(again, Posted), again
        assert erp.count(p.idem_key) == 1
        # the reversal takes them back
        r = reversal_of(p, {})
        back = await file_settle(a, r, await a.reverse(r))
        assert isinstance(back, Posted), back
        assert erp.consumption(ORDER) == {}
    (name,) = [n for n in os.listdir(folders["archive"]) if "conf" in n]
    xml = (folders["archive"] / name).read_text()
    if mode == "all":
        assert "<MaterialLotID>C250301</MaterialLotID>" in xml
        assert xml.count("<MaterialUse>Consumed</MaterialUse>") == 3
        assert '<MaterialUse OtherValue="Returned">Other</MaterialUse>' in xml


async def test_the_file_erp_refusing_a_movement_names_it(folders: dict[str, Path]) -> None:
    a = files_relay.build(file_settings(folders))
    await a.start()
    p = make_posting(goods_movements=(GoodsMovement("SCREW-M4", Decimal(4), ""),))
    async with FileErpStandIn(folders["drop"], folders["ack"], folders["archive"]) as erp:
        done = await file_settle(a, p, await a.post(p))
        assert isinstance(done, Rejected), done
        assert "UnitOfMeasure" in done.text
        assert erp.postings == []


def test_csv_has_no_place_for_movements(folders: dict[str, Path]) -> None:
    assert file_settings(folders, format="csv").movements_mode == "none"
    assert file_settings(folders, format="csv", goods_movements="none").movements_mode == "none"
    with pytest.raises(pydantic.ValidationError) as info:
        file_settings(folders, format="csv", goods_movements="all")
    assert "goods_movements = 'all' needs format = 'b2mml'" in str(info.value)


def test_components_are_registered_over_http(sap: SapStandIn) -> None:
    with httpx.Client(timeout=5) as client:
        answer = client.post(
            sap.control_url + "/components",
            json={
                "order_id": "1000200",
                "material": "WIRE-1",
                "qty_per_unit": "2",
                "unit": "M",
                "backflush": True,
            },
        )
        assert answer.status_code == 200, answer.text
    with session(sap) as client:
        created = client.post(
            sap.url + "ProdnOrdConf2",
            json={**conf_body([]), "OrderID": "1000200", "ConfirmationYieldQuantity": "5"},
        )
        assert created.status_code == 201, created.text
    assert sap.state.consumption("1000200") == {("WIRE-1", ""): Decimal(10)}
