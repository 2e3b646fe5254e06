"""Released orders from SAP: the real order source (edge.relay.orders_sap) against the real
stand-in of API_PRODUCTION_ORDER_2_SRV (simulators.erp.sap_orders), served on 127.0.0.1; no
HTTP is mocked."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
from fastapi import FastAPI
from pydantic import ValidationError

from edge.relay.dispatch import operation_msg
from edge.relay.orders import ErpOperation, SnapshotFailed
from edge.relay.orders_sap import SapOrderSource, Settings, build
from simulators.erp.sap_orders import (
    ABSENT,
    SERVICE_PATH,
    SapOrdersStandIn,
    SapOrdersState,
    mount,
)
from tests.erp.helpers import released

pytestmark = pytest.mark.timeout(10)

USER, PASSWORD = "RELAY", "pw-1"
CLIENT_ID, CLIENT_SECRET = "edge-relay", "s3cret"
ZONE = "Europe/Berlin"  # CET (+1) in March, CEST (+2) in July
WC1, WC2 = "WC-4711", "WC-4712"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def sap() -> AsyncIterator[SapOrdersStandIn]:
    async with SapOrdersStandIn(
        user=USER, password=PASSWORD, client_id=CLIENT_ID, client_secret=CLIENT_SECRET
    ) as stand_in:
        yield stand_in


def settings(url: str, tmp_path: Path, **extra: Any) -> Settings:
    secret = tmp_path / "sap-password"
    secret.write_text(PASSWORD + "\n")
    data: dict[str, Any] = {
        "system": "sap",
        "service_url": url,
        "user": USER,
        "password_file": str(secret),
        "plant": "1010",
        "timezone": ZONE,
        "timeout_s": 2.0,
        **extra,
    }
    return Settings.model_validate(data)


@contextlib.asynccontextmanager
async def started(s: Settings) -> AsyncIterator[SapOrderSource]:
    source = build(s)
    await source.start()
    try:
        yield source
    finally:
        await source.close()


async def read(
    sap: SapOrdersStandIn, tmp_path: Path, wcs: Sequence[str] = (WC1, WC2), **extra: Any
) -> dict[str, list[ErpOperation]] | SnapshotFailed:
    async with started(settings(sap.url, tmp_path, **extra)) as source:
        return await source.snapshot(list(wcs))


async def ok(
    sap: SapOrdersStandIn, tmp_path: Path, wcs: Sequence[str] = (WC1, WC2), **extra: Any
) -> dict[str, list[ErpOperation]]:
    result = await read(sap, tmp_path, wcs, **extra)
    assert not isinstance(result, SnapshotFailed), result.text
    return result


def one(state: SapOrdersState, order: str = "1000123", wc: str = WC1, **op: Any) -> None:
    """An order of 100 PC with one operation 0010 on ``wc`` (``op`` changes the operation)."""
    state.add_order(order, material="FG-100", quantity=100, text="Bracket, zinc plated")
    fields: dict[str, Any] = {
        "text": "Stamping",
        "setup": (30, "MIN"),
        "run": (1.5, "MIN"),
        "start": datetime(2025, 3, 4, 6, 0),
        "end": datetime(2025, 3, 4, 9, 30),
        **op,
    }
    state.add_operation(order, "0010", work_center=wc, **fields)


def three(state: SapOrdersState) -> None:
    """The orders 1000123, 1000124 and 1000125 of :func:`one`."""
    for order in ("1000123", "1000124", "1000125"):
        one(state, order)


def by_key(ops: Sequence[ErpOperation]) -> dict[str, ErpOperation]:
    return {f"{o.order_id}/{o.operation}": o for o in ops}


# ---------------------------------------------------------------------------------------------
# Released operations, field by field


async def test_released_operations_of_two_work_centers_field_by_field(
    sap: SapOrdersStandIn, tmp_path: Path
) -> None:
    st = sap.state
    st.add_order(
        "1000123",
        material="FG-100",
        quantity=100,
        text="Bracket, zinc plated\nsecond line",
        end=datetime(2025, 7, 1, 18, 0),
    )
    st.add_operation(
        "1000123",
        "0010",
        work_center=WC1,
        text="Stamping",
        setup=(30, "MIN"),
        run=(1.5, "MIN"),
        start=datetime(2025, 3, 4, 6, 0),
        end=datetime(2025, 3, 4, 9, 30),  # CET: 08:30 UTC
    )
    st.add_operation(
        "1000123",
        "0020",
        work_center=WC2,
        quantity="98.5",
        unit="KG",
        setup=(0.25, "H"),
        run=(20, "S"),
        start=datetime(2025, 7, 1, 8, 0),
        end=datetime(2025, 7, 1, 12, 15),  # CEST: 10:15 UTC
    )
    st.add_order("1000124", material="FG-200", quantity=250, unit="PC")
    st.add_operation(
        "1000124",
        "0010",
        work_center=WC1,
        text="Stamping",
        standard_values={1: (45, "MIN"), 2: (12, "S"), 3: (7, "MIN")},
        start=datetime(2025, 3, 3, 22, 0),  # earlier than 1000123/0010: first in the list
        end=datetime(2025, 3, 4, 0, 30),  # past midnight: 23:30 UTC the day before
    )

    result = await ok(sap, tmp_path, (WC1, WC2, "WC-EMPTY"))

    assert result[WC1] == [
        released(
            (WC1, "1000124", "0010"),
            ("FG-200", Decimal(250), "PC"),
            "Stamping",
            1,
            (2700.0, 12.0, "2025-03-03T23:30:00Z"),
        ),
        released(
            (WC1, "1000123", "0010"),
            ("FG-100", Decimal(100), "PC"),
            "Stamping",
            2,
            (1800.0, 90.0, "2025-03-04T08:30:00Z"),
        ),
    ]
    (second,) = result[WC2]
    assert second == released(
        (WC2, "1000123", "0020"),
        ("FG-100", Decimal("98.5"), "KG"),
        "Bracket, zinc plated",  # no operation text: the order's first line
        1,
        (900.0, 20.0, "2025-07-01T10:15:00Z"),
    )
    assert result["WC-EMPTY"] == []
    assert all(o.status == "released" and o.confirmation_no is None for o in result[WC1])

    # The queries: one per work center (a page), one header per order, read once.
    asked = st.requests
    assert (
        "A_ProductionOrderOperation_2?$filter=ProductionPlant eq '1010' and WorkCenter eq "
        "'WC-4711' and OperationIsReleased eq 'X' and OperationIsConfirmed eq ''"
        "&$orderby=OrderInternalBillOfOperations,OrderIntBillOfOperationsItem"
        "&$top=500&$skip=0&$format=json"
    ) in asked
    headers = [r for r in asked if r.startswith("A_ProductionOrder_2(")]
    assert sorted(headers) == [
        "A_ProductionOrder_2('1000123')?$expand=to_ProductionOrderStatus,to_ProductionOrderOperation,to_ProductionOrderComponent&$format=json",
        "A_ProductionOrder_2('1000124')?$expand=to_ProductionOrderStatus,to_ProductionOrderOperation,to_ProductionOrderComponent&$format=json",
    ]


async def test_a_second_sequence_and_sub_operations_are_not_dispatched_twice(
    sap: SapOrdersStandIn, tmp_path: Path
) -> None:
    st = sap.state
    one(st)
    # A parallel sequence with an operation 0010 of its own (the stand-in keys operations by
    # number: it is added as 0011 and answered as 0010), and a sub-operation.
    st.add_operation("1000123", "0011", work_center=WC1, sequence="1")
    st.set_fields("1000123", "0011", ManufacturingOrderOperation="0010")
    st.add_operation("1000123", "0012", work_center=WC1, sub_operation="0001")
    with structlog.testing.capture_logs() as logs:
        (op,) = (await ok(sap, tmp_path, (WC1,)))[WC1]
    assert (op.key, op.planned_setup_s) == (("1000123", "0010", 0), 1800.0)  # sequence 0's
    (warning,) = [e for e in logs if e["event"] == "sap_operation_left_out"]
    assert (warning["field"], warning["value"]) == ("ManufacturingOrderSequence", "1")


async def test_paging_over_more_than_one_page(sap: SapOrdersStandIn, tmp_path: Path) -> None:
    st = sap.state
    for n in range(5):
        order = f"100020{n}"
        st.add_order(order, material=f"M-{n}", quantity=10 + n)
        # scheduled in reverse: the last order starts first
        st.add_operation(order, "0010", work_center=WC1, start=datetime(2025, 3, 4, 10 - n, 0))
    result = await ok(sap, tmp_path, (WC1,), page_size=2)
    assert [(o.order_id, o.sequence) for o in result[WC1]] == [
        ("1000204", 1),
        ("1000203", 2),
        ("1000202", 3),
        ("1000201", 4),
        ("1000200", 5),
    ]
    pages = [r for r in st.requests if r.startswith("A_ProductionOrderOperation_2")]
    assert [p.split("&$top=")[1] for p in pages] == [
        "2&$skip=0&$format=json",
        "2&$skip=2&$format=json",
        "2&$skip=4&$format=json",
    ]


async def test_sap_paging_on_its_own_is_followed(sap: SapOrdersStandIn, tmp_path: Path) -> None:
    for n in range(5):
        one(sap.state, f"100040{n}")
    sap.state.max_page = 2  # SAP sends at most 2 per answer, with a __next link
    ops = (await ok(sap, tmp_path, (WC1,), page_size=3, sap_client="100"))[WC1]
    assert sorted(o.order_id for o in ops) == [f"100040{n}" for n in range(5)]
    pages = [r for r in sap.state.requests if r.startswith("A_ProductionOrderOperation_2")]
    assert [p.split("&$top=")[1] for p in pages] == [
        "3&$skip=0&$format=json&sap-client=100",
        "3&$skip=2&$format=json&sap-client=100",
        "3&$skip=4&$format=json&sap-client=100",
    ]


async def test_more_operations_than_allowed_fail_the_snapshot(
    sap: SapOrdersStandIn, tmp_path: Path
) -> None:
    for n in range(3):
        one(sap.state, f"100030{n}")
    result = await read(sap, tmp_path, (WC1,), page_size=1, max_operations=2)
    assert isinstance(result, SnapshotFailed)
    assert "more than 2 rows for the operations of work center 'WC-4711'" in result.text


# ---------------------------------------------------------------------------------------------
# Held, cancelled, confirmed


async def test_held_by_a_lock_or_a_user_status_and_released_again(
    sap: SapOrdersStandIn, tmp_path: Path
) -> None:
    st = sap.state
    three(st)
    st.lock("1000123")
    st.set_user_status("1000124", "HOLD", "Held by quality")
    st.set_user_status("1000125", "INSP", "Inspection")
    ops = by_key((await ok(sap, tmp_path, (WC1,)))[WC1])
    assert (ops["1000123/0010"].status, ops["1000123/0010"].status_text) == (
        "held",
        "SAP: order locked (OrderIsLocked)",
    )
    assert (ops["1000124/0010"].status, ops["1000124/0010"].status_text) == (
        "held",
        "SAP: user status HOLD (Held by quality)",
    )
    assert (ops["1000125/0010"].status, ops["1000125/0010"].status_text) == ("released", "")

    ops = by_key((await ok(sap, tmp_path, (WC1,), held_user_statuses=["INSP"]))[WC1])
    assert ops["1000124/0010"].status == "released"
    assert ops["1000125/0010"].status_text == "SAP: user status INSP (Inspection)"

    st.unlock("1000123")
    st.set_user_status("1000124", "HOLD", active=False)
    st.lock("1000125")
    st.set_user_status("1000125", "HOLD")
    ops = by_key((await ok(sap, tmp_path, (WC1,)))[WC1])
    assert ops["1000123/0010"].status == "released"
    assert ops["1000124/0010"].status == "released"
    assert ops["1000125/0010"].status_text == (
        "SAP: order locked (OrderIsLocked), user status HOLD (HOLD)"
    )


CANCELLATIONS: list[tuple[str, Callable[[SapOrdersState], None], str]] = [
    (
        "deleted",
        lambda st: st.delete_order("1000123"),
        "order deleted (OrderIsDeleted), order marked for deletion (OrderIsMarkedForDeletion)",
    ),
    (
        "marked for deletion",
        lambda st: st.mark_for_deletion("1000123"),
        "order marked for deletion (OrderIsMarkedForDeletion)",
    ),
    (
        "order TECO",
        lambda st: st.technically_complete("1000123"),
        "order technically completed (OrderIsTechnicallyCompleted)",
    ),
    ("order closed", lambda st: st.close_order("1000123"), "order closed (OrderIsClosed)"),
    (
        "operation deleted",
        lambda st: st.delete_operation("1000123", "0010"),
        "operation deleted (OperationIsDeleted)",
    ),
    (
        "operation TECO",
        lambda st: st.technically_complete("1000123", "0010"),
        "operation technically completed (OperationIsTechlyCompleted)",
    ),
    (
        "operation closed",
        lambda st: st.close_order("1000123", "0010"),
        "operation closed (OperationIsClosed)",
    ),
]


@pytest.mark.parametrize(
    ("change", "text"), [(c, t) for _, c, t in CANCELLATIONS], ids=[n for n, _, _ in CANCELLATIONS]
)
async def test_cancelled_by_each_flag(
    sap: SapOrdersStandIn,
    tmp_path: Path,
    change: Callable[[SapOrdersState], None],
    text: str,
) -> None:
    one(sap.state)
    one(sap.state, "1000124")
    sap.state.lock("1000123")  # cancelled wins over held
    change(sap.state)
    ops = by_key((await ok(sap, tmp_path, (WC1,)))[WC1])
    cancelled = ops["1000123/0010"]
    assert (cancelled.status, cancelled.status_text) == ("cancelled", f"SAP: {text}")
    assert ops["1000124/0010"].status == "released"


async def test_a_cancelled_operation_needs_only_its_ids(
    sap: SapOrdersStandIn, tmp_path: Path
) -> None:
    one(sap.state)
    sap.state.set_quantity("1000123", 0, operation="0010")
    sap.state.technically_complete("1000123")
    (op,) = (await ok(sap, tmp_path, (WC1,)))[WC1]
    assert (op.key, op.status) == (("1000123", "0010", 0), "cancelled")


async def test_confirmed_and_unreleased_operations_are_not_reported(
    sap: SapOrdersStandIn, tmp_path: Path
) -> None:
    st = sap.state
    three(st)
    st.add_order("1000126", material="FG-9", quantity=5, released=False)
    st.add_operation("1000126", "0010", work_center=WC1)
    st.confirm("1000123", "0010")  # final: CNF
    st.confirm("1000124", "0010", 40, final=False)  # partial: still to be worked
    ops = (await ok(sap, tmp_path, (WC1,)))[WC1]
    assert [o.order_id for o in ops] == ["1000124", "1000125"]
    st.release("1000126")
    ops = (await ok(sap, tmp_path, (WC1,)))[WC1]
    assert [o.order_id for o in ops] == ["1000124", "1000125", "1000126"]


async def test_changed_quantity_dates_and_work_center_show_in_the_next_snapshot(
    sap: SapOrdersStandIn, tmp_path: Path
) -> None:
    st = sap.state
    one(st)
    st.set_quantity("1000123", 120)  # the operation follows its order
    st.set_dates("1000123", "0010", end=datetime(2025, 3, 5, 14, 0))
    (op,) = (await ok(sap, tmp_path, (WC1,)))[WC1]
    assert (op.quantity, op.latest_end) == (Decimal(120), "2025-03-05T13:00:00Z")
    st.move_operation("1000123", "0010", WC2)
    result = await ok(sap, tmp_path)
    assert result[WC1] == []
    assert [o.key for o in result[WC2]] == [("1000123", "0010", 0)]
    st.remove_order("1000123")
    assert await ok(sap, tmp_path) == {WC1: [], WC2: []}


# ---------------------------------------------------------------------------------------------
# Values the gateway would refuse


async def test_bad_values_are_left_out_with_a_warning_and_the_rest_is_returned(
    sap: SapOrdersStandIn, tmp_path: Path
) -> None:
    st = sap.state
    one(st, "1000123")
    one(st, "1000124")
    st.set_quantity("1000124", 0, operation="0010")
    one(st, "1000 25")  # a space in the order id
    one(st, "1000126")
    st.set_quantity("1000126", "1000000001")
    one(st, "1000127")
    st.set_fields("1000127", Material="")
    one(st, "1000128")
    st.set_fields("1000128", "0010", MfgOrderOperationText="", OrderLongText="")
    st.set_fields("1000128", OrderLongText="x" * 500)  # cut, not refused
    with structlog.testing.capture_logs() as logs:
        ops = by_key((await ok(sap, tmp_path, (WC1,)))[WC1])
    assert sorted(ops) == ["1000123/0010", "1000128/0010"]
    assert not any("1000 25" in r for r in st.requests)  # its header is not even read
    assert ops["1000128/0010"].material_text == "x" * 200
    left_out = {
        (e["order"], e["field"], e["value"])
        for e in logs
        if e["event"] == "sap_operation_left_out" and e["log_level"] == "warning"
    }
    assert left_out == {
        ("1000124", "OpPlannedTotalQuantity", "0.000"),
        ("1000 25", "ManufacturingOrder", "1000 25"),
        ("1000126", "OpPlannedTotalQuantity", "1000000001.000"),
        ("1000127", "Material", ""),
    }
    assert all(e["work_center"] == WC1 and e["operation"] == "0010" for e in logs if "field" in e)


async def test_an_order_gone_between_the_two_reads_is_left_out(
    sap: SapOrdersStandIn, tmp_path: Path
) -> None:
    one(sap.state, "1000123")
    one(sap.state, "1000124")
    sap.state.fail_next(1, 404, path="A_ProductionOrder_2('1000123')")
    with structlog.testing.capture_logs() as logs:
        ops = (await ok(sap, tmp_path, (WC1,)))[WC1]
    assert [o.order_id for o in ops] == ["1000124"]
    (warning,) = [e for e in logs if e["event"] == "sap_operation_left_out"]
    assert (warning["order"], warning["reason"]) == ("1000123", "SAP has no such order (404)")
    headers = [r for r in sap.state.requests if r.startswith("A_ProductionOrder_2(")]
    assert len(headers) == 2


async def test_unknown_standard_value_units_leave_the_time_at_zero(
    sap: SapOrdersStandIn, tmp_path: Path
) -> None:
    st = sap.state
    one(st, "1000123", standard_values={1: (2, "PC")})  # setup in pieces: not a time
    one(st, "1000124")
    # A German logon: hours are "STD"; its ISO code HUR decides where it is sent.
    st.set_fields(
        "1000124",
        "0010",
        WorkCenterStandardWorkQtyUnit1="STD",
        StdWrkQtyUnit1ISOCode="",
        WorkCenterStandardWorkQty1="0.500",
        WorkCenterStandardWorkQtyUnit2="STD",
        StdWrkQtyUnit2ISOCode="HUR",
        WorkCenterStandardWorkQty2="0.010",
    )
    with structlog.testing.capture_logs() as logs:
        ops = by_key((await ok(sap, tmp_path, (WC1,)))[WC1])
    assert ops["1000123/0010"].planned_setup_s == 0.0
    assert ops["1000123/0010"].planned_run_s_per_unit == 90.0
    assert ops["1000124/0010"].planned_setup_s == 0.0  # STD is not in time_units by default
    assert ops["1000124/0010"].planned_run_s_per_unit == pytest.approx(36.0)
    units = [
        (e["order"], e["value"]) for e in logs if e["event"] == "sap_standard_value_unit_unknown"
    ]
    assert units == [("1000123", "PC"), ("1000124", "STD")]
    ops = by_key((await ok(sap, tmp_path, (WC1,), time_units={"STD": 3600, "MIN": 60}))[WC1])
    assert ops["1000124/0010"].planned_setup_s == 1800.0


async def test_run_time_per_base_quantity(sap: SapOrdersStandIn, tmp_path: Path) -> None:
    one(sap.state, run=(150, "MIN"))  # 150 minutes per 100 pieces
    (op,) = (await ok(sap, tmp_path, (WC1,), run_base_quantity=100))[WC1]
    assert op.planned_run_s_per_unit == 90.0
    assert op.planned_setup_s == 1800.0  # setup: once, whatever the quantity
    sap.state.set_fields("1000123", "0010", OperationReferenceQuantity="10.000")
    (op,) = (await ok(sap, tmp_path, (WC1,), run_base_quantity=100))[WC1]
    assert op.planned_run_s_per_unit == 900.0  # the entity's own base quantity wins
    (op,) = (await ok(sap, tmp_path, (WC1,), run_slot=0, setup_slot=3))[WC1]
    assert (op.planned_setup_s, op.planned_run_s_per_unit) == (0.0, 0.0)


async def test_the_2021_shape_without_standard_values(tmp_path: Path) -> None:
    async with SapOrdersStandIn(user=USER, password=PASSWORD, standard_values=False) as sap:
        one(sap.state)
        async with httpx.AsyncClient(auth=(USER, PASSWORD)) as client:
            raw = (await client.get(sap.url + "A_ProductionOrderOperation_2")).json()
            metadata = (await client.get(sap.url + "$metadata")).text
        (row,) = raw["d"]["results"]
        assert "WorkCenterStandardWorkQty1" not in row
        assert "WorkCenterStandardWorkQty1" not in metadata
        (op,) = (await ok(sap, tmp_path, (WC1,)))[WC1]
    assert (op.planned_setup_s, op.planned_run_s_per_unit) == (0.0, 0.0)
    assert (op.quantity, op.latest_end, op.material_text) == (
        Decimal(100),
        "2025-03-04T08:30:00Z",
        "Stamping",
    )


async def test_dates_absent_leave_no_due_date_and_sort_last(
    sap: SapOrdersStandIn, tmp_path: Path
) -> None:
    st = sap.state
    st.add_order("1000130", material="FG-1", quantity=1)
    st.add_operation("1000130", "0010", work_center=WC1)
    one(st, "1000131")
    ops = (await ok(sap, tmp_path, (WC1,)))[WC1]
    assert [(o.order_id, o.sequence, o.latest_end) for o in ops] == [
        ("1000131", 1, "2025-03-04T08:30:00Z"),
        ("1000130", 2, None),
    ]


# ---------------------------------------------------------------------------------------------
# Failures: a snapshot fails whole, naming what happened


async def test_an_outage_fails_the_snapshot(sap: SapOrdersStandIn, tmp_path: Path) -> None:
    one(sap.state)
    sap.state.set_outage(True)
    result = await read(sap, tmp_path)
    assert isinstance(result, SnapshotFailed)
    assert result.text == (
        "SAP answered HTTP 503 reading the operations of work center 'WC-4711': "
        "SAP system is not available [/IWFND/CM_BEC/026]"
    )
    sap.state.set_outage(False)
    assert len((await ok(sap, tmp_path))[WC1]) == 1


async def test_bad_credentials_fail_the_snapshot(sap: SapOrdersStandIn, tmp_path: Path) -> None:
    sap.state.password = "changed"
    result = await read(sap, tmp_path)
    assert isinstance(result, SnapshotFailed)
    assert "HTTP 401" in result.text
    assert "Logon failed" in result.text
    assert "dispatch.source.password_file" in result.text


async def test_a_failing_header_read_fails_the_snapshot(
    sap: SapOrdersStandIn, tmp_path: Path
) -> None:
    one(sap.state)
    sap.state.fail_next(1, 500, text="Runtime error", path="A_ProductionOrder_2(")
    result = await read(sap, tmp_path, (WC1,))
    assert isinstance(result, SnapshotFailed)
    assert result.text == (
        "SAP answered HTTP 500 reading order 1000123: Runtime error [/IWFND/CM_BEC/500]"
    )
    assert len((await ok(sap, tmp_path, (WC1,)))[WC1]) == 1  # the next one is fine


async def test_a_timeout_fails_the_snapshot(sap: SapOrdersStandIn, tmp_path: Path) -> None:
    sap.state.set_latency(2.5)
    started_at = time.monotonic()
    result = await read(sap, tmp_path, timeout_s=1.0)
    assert isinstance(result, SnapshotFailed)
    assert "did not answer in time (1 s)" in result.text
    assert "ReadTimeout" in result.text
    assert time.monotonic() - started_at < 2.5
    sap.state.set_latency(None)


async def test_nobody_listening_fails_the_snapshot(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}{SERVICE_PATH}/"
    async with started(settings(url, tmp_path)) as source:
        result = await source.snapshot([WC1])
    assert isinstance(result, SnapshotFailed)
    assert result.text.startswith("SAP not reachable reading the operations of work center")
    assert "ConnectError" in result.text


async def test_an_answer_that_is_not_odata_fails_the_snapshot(
    sap: SapOrdersStandIn, tmp_path: Path
) -> None:
    url = sap.base + "/"  # the host, not the service: FastAPI's own 404
    result = await read(sap, tmp_path, service_url=url)
    assert isinstance(result, SnapshotFailed)
    assert result.text.startswith("SAP answered HTTP 404 reading the operations")


async def test_a_source_not_started_says_so(sap: SapOrdersStandIn, tmp_path: Path) -> None:
    source = build(settings(sap.url, tmp_path))
    result = await source.snapshot([WC1])
    assert result == SnapshotFailed("the SAP order source is not started")


# ---------------------------------------------------------------------------------------------
# OAuth 2


async def test_oauth_tokens_and_a_token_that_expired(sap: SapOrdersStandIn, tmp_path: Path) -> None:
    one(sap.state)
    secret = tmp_path / "client-secret"
    secret.write_text(CLIENT_SECRET)
    s = settings(
        sap.url,
        tmp_path,
        auth="oauth",
        user=None,
        password_file=None,
        token_url=sap.token_url,
        client_id=CLIENT_ID,
        client_secret_file=str(secret),
    )
    async with started(s) as source:
        first = await source.snapshot([WC1])
        sap.state.expire_tokens()
        second = await source.snapshot([WC1])
    assert not isinstance(first, SnapshotFailed)
    assert first == second
    secret.write_text("wrong")
    async with started(s) as source:
        refused = await source.snapshot([WC1])
    assert isinstance(refused, SnapshotFailed)
    assert "token endpoint refused" in refused.text


# ---------------------------------------------------------------------------------------------
# Settings


def test_settings_name_the_field_they_refuse(tmp_path: Path) -> None:
    url = "http://sap.example:8000/sap/opu/odata/sap/API_PRODUCTION_ORDER_2_SRV"
    good = settings(url, tmp_path)
    assert good.service_url.endswith("_SRV/")
    assert (good.setup_slot, good.run_slot, good.page_size) == (1, 2, 500)
    assert good.held_user_statuses == ["HOLD"]
    assert (good.poll, good.full_read_s, good.overlap_s) == ("changed_since", 3600, 300)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"plant": "10100"}, "plant"),
        ({"plant": "10 0"}, "plant"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"page_size": 0}, "page_size"),
        ({"page_size": 100_000}, "page_size"),
        ({"run_slot": 7}, "run_slot"),
        ({"timeout_s": float("nan")}, "timeout_s"),
        ({"time_units": {"MIN": 0}}, "time_units"),
        ({"time_units": {"MINUTE": 60}}, "time_units"),
        ({"held_user_statuses": ["ONHOLD"]}, "held_user_statuses"),
        ({"run_base_quantity": 0}, "run_base_quantity"),
        ({"poll": "delta"}, "poll"),
        ({"full_read_s": 10}, "full_read_s"),
        ({"full_read_s": 10**9}, "full_read_s"),
        ({"overlap_s": -1}, "overlap_s"),
        ({"service_url": "ftp://sap"}, "service_url"),
        ({"colour": "red"}, "colour"),
        ({"system": "d365"}, "system"),
    ]
    for extra, field in cases:
        with pytest.raises(ValidationError) as caught:
            settings(url, tmp_path, **extra)
        locs = {str(e["loc"][0]) for e in caught.value.errors() if e["loc"]}
        assert field in locs, (extra, caught.value)
    with pytest.raises(ValidationError, match="setup_slot and run_slot are both 2"):
        settings(url, tmp_path, setup_slot=2)
    with pytest.raises(ValidationError, match="unknown time zone 'Mars/Olympus'"):
        settings(url, tmp_path, timezone="Mars/Olympus")
    assert settings(url, tmp_path, time_units={"STD": 3600}).time_units == {"STD": 3600.0}
    with pytest.raises(ValueError, match=r"dispatch\.source\.password_file"):
        build(settings(url, tmp_path, password_file=str(tmp_path / "missing")))
    with pytest.raises(
        ValueError, match=r"dispatch\.source\.token_url and dispatch\.source\.client_id"
    ):
        build(settings(url, tmp_path, auth="oauth"))


# ---------------------------------------------------------------------------------------------
# The stand-in itself


async def test_the_stand_in_speaks_odata_v2(sap: SapOrdersStandIn) -> None:
    one(sap.state)
    sap.state.set_user_status("1000123", "HOLD", "Held by quality")
    async with httpx.AsyncClient(auth=(USER, PASSWORD)) as client:
        got = await client.get(
            sap.url + "A_ProductionOrder_2('0001000123')",
            params={"$expand": "to_ProductionOrderOperation,to_ProductionOrderStatus"},
        )
        assert got.status_code == 200
        assert got.headers["dataserviceversion"] == "2.0"
        order = got.json()["d"]
        assert order["ManufacturingOrder"] == "1000123"
        assert order["__metadata"]["type"] == "API_PRODUCTION_ORDER_2_SRV.A_ProductionOrder_2Type"
        assert order["__metadata"]["etag"] == f"W/\"'{order['LastChangeDateTime']}'\""
        assert len(order["LastChangeDateTime"]) == 14
        assert order["TotalQuantity"] == "100.000"
        assert order["OrderIsReleased"] == "X"
        assert order["OrderIsLocked"] == ""
        (op,) = order["to_ProductionOrderOperation"]["results"]
        assert op["OpErlstSchedldExecStrtDte"] == "/Date(1741046400000)/"  # 2025-03-04
        assert op["OpErlstSchedldExecStrtTme"] == "PT06H00M00S"
        assert op["WorkCenterStandardWorkQty2"] == "1.500"
        assert op["StdWrkQtyUnit2ISOCode"] == "MIN"
        statuses = {
            (s["StatusShortName"], s["IsUserStatus"])
            for s in order["to_ProductionOrderStatus"]["results"]
        }
        assert statuses == {("REL", False), ("HOLD", True)}

        listed = await client.get(
            sap.url + "A_ProductionOrder_2",
            params={
                "$filter": "ProductionPlant eq '1010' and OrderIsLocked eq ''",
                "$inlinecount": "allpages",
                "$top": "0",
            },
        )
        assert listed.json()["d"] == {"results": [], "__count": "1"}
        deferred = (await client.get(sap.url + "A_ProductionOrder_2")).json()["d"]["results"][0]
        assert "__deferred" in deferred["to_ProductionOrderOperation"]
        nav = await client.get(deferred["to_ProductionOrderStatus"]["__deferred"]["uri"])
        assert len(nav.json()["d"]["results"]) == 2
        key = op["__metadata"]["uri"]
        assert (await client.get(key)).json()["d"]["ManufacturingOrderOperation"] == "0010"

        missing = await client.get(sap.url + "A_ProductionOrder_2('999')")
        assert missing.status_code == 404
        error = missing.json()["error"]
        assert error["code"] == "/IWBEP/CM_MGW_RT/021"
        assert error["message"]["lang"] == "en"
        assert error["innererror"]["application"]["service_id"] == "API_PRODUCTION_ORDER_2_SRV"
        bad = await client.get(sap.url + "A_ProductionOrderOperation_2?$filter=Nope eq 'x'")
        assert bad.status_code == 400
        assert "Nope" in bad.json()["error"]["message"]["value"]
        assert (await client.post(sap.url + "A_ProductionOrder_2")).status_code == 405

        metadata = await client.get(sap.url + "$metadata")
        root = ET.fromstring(metadata.text)
        edm = "{http://schemas.microsoft.com/ado/2008/09/edm}"
        types = {t.get("Name") for t in root.iter(f"{edm}EntityType")}
        assert types == {
            "A_ProductionOrder_2Type",
            "A_ProductionOrderOperation_2Type",
            "A_ProductionOrderStatus_2Type",
            "A_ProductionOrderComponent_2Type",
        }
        names = {p.get("Name") for p in root.iter(f"{edm}Property")}
        assert {"OrderIsLocked", "OpPlannedTotalQuantity", "WorkCenterStandardWorkQty6"} <= names

    sap.state.fail_next(2, 502)
    async with httpx.AsyncClient(auth=(USER, PASSWORD)) as client:
        assert (await client.get(sap.url + "A_ProductionOrder_2")).status_code == 502
        assert (await client.get(sap.url + "A_ProductionOrder_2")).status_code == 502
        assert (await client.get(sap.url + "A_ProductionOrder_2")).status_code == 200


async def test_absent_fields_and_mounting_beside_another_service() -> None:
    state = SapOrdersState(user=USER, password=PASSWORD)
    one(state)
    state.set_fields("1000123", "0010", OpPlannedTotalQuantity=ABSENT)
    app = FastAPI()
    mount(app, state, token_endpoint=False)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://sap", auth=(USER, PASSWORD)
    ) as client:
        got = await client.get(f"{SERVICE_PATH}/A_ProductionOrderOperation_2")
        (row,) = got.json()["d"]["results"]
        assert "OpPlannedTotalQuantity" not in row
        assert (await client.post("/oauth/token")).status_code in (404, 405)


def test_the_stand_in_stops_within_a_second() -> None:
    stand_in = SapOrdersStandIn(user=USER, password=PASSWORD, latency_s=5.0)
    stand_in.start()
    port = stand_in.port
    with contextlib.suppress(httpx.HTTPError):
        httpx.get(stand_in.url, timeout=0.2)  # a request left hanging
    began = time.monotonic()
    stand_in.stop()
    assert time.monotonic() - began < 1.5
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))  # the port is free again


def test_the_stand_in_runs_as_a_program() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "simulators.erp.sap_orders",
            "--port",
            str(port),
            "--user",
            USER,
            "--password",
            PASSWORD,
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert f"127.0.0.1:{port}{SERVICE_PATH}/" in line
        got = httpx.get(
            f"http://127.0.0.1:{port}{SERVICE_PATH}/A_ProductionOrder_2",
            auth=(USER, PASSWORD),
            timeout=5,
        )
        orders = {o["ManufacturingOrder"] for o in got.json()["d"]["results"]}
        assert orders == {"1000123", "1000124", "1000125"}
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(5) == 0


# ---------------------------------------------------------------------------------------------
# Changed-since polling: between full reads only what changed is asked for


class Clock:
    """The source's monotonic clock, moved by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@contextlib.asynccontextmanager
async def polling(
    sap: SapOrdersStandIn, tmp_path: Path, clock: Clock | None = None, **extra: Any
) -> AsyncIterator[SapOrderSource]:
    source = build(settings(sap.url, tmp_path, **extra), monotonic=clock or Clock())
    await source.start()
    try:
        yield source
    finally:
        await source.close()


async def snap(
    source: SapOrderSource, wcs: Sequence[str] = (WC1, WC2)
) -> dict[str, list[ErpOperation]]:
    result = await source.snapshot(list(wcs))
    assert not isinstance(result, SnapshotFailed), result.text
    return result


async def test_between_full_reads_only_the_changes_are_asked_for(
    sap: SapOrdersStandIn, tmp_path: Path
) -> None:
    st = sap.state
    three(st)
    one(st, "1000126", wc=WC2)
    async with polling(sap, tmp_path) as source:
        first = await snap(source)
        assert [len(first[WC1]), len(first[WC2])] == [3, 1]
        st.requests.clear()
        assert await snap(source) == first
        asked = list(st.requests)
        assert len(asked) == 2, asked  # no released set per work center, no header again
        ops, orders = asked
        assert ops.startswith("A_ProductionOrderOperation_2?")
        assert orders.startswith("A_ProductionOrder_2?")
        for query in asked:
            assert "ProductionPlant eq '1010' and LastChangeDateTime ge '" in query
            assert "WorkCenter" not in query
        assert (
            "$expand=to_ProductionOrderStatus,to_ProductionOrderOperation,to_ProductionOrderComponent"
            in orders
        )
        assert (source.full_reads, source.change_reads) == (1, 1)


async def test_changed_since_reads_give_what_a_full_read_gives(
    sap: SapOrdersStandIn, tmp_path: Path
) -> None:
    """A seeded day of changes in SAP, each followed by a snapshot of a source that reads
    changes and one that reads everything: they agree at every step."""
    st = sap.state
    rnd = random.Random(20261202)
    orders = [f"10002{n:02d}" for n in range(5)]

    def two_operations(order: str, wc: str) -> None:
        one(st, order, wc=wc)
        st.add_operation(order, "0020", work_center=WC1, text="Deburring", run=(20, "S"))

    for n, order in enumerate(orders):
        two_operations(order, (WC1, WC2)[n % 2])
    added = iter(f"10003{n:02d}" for n in range(100))

    def change() -> str:
        order = rnd.choice(orders)
        op = rnd.choice(("0010", "0020"))
        kind = rnd.choice(
            (
                "quantity",
                "op_quantity",
                "dates",
                "lock",
                "unlock",
                "hold",
                "unhold",
                "teco_order",
                "teco_op",
                "confirm",
                "partial",
                "move",
                "away",
                "new",
                "delete_op",
                "deletion_flag",
            )
        )
        if kind == "quantity":
            st.set_quantity(order, rnd.randint(1, 500))
        elif kind == "op_quantity":
            st.set_quantity(order, rnd.randint(1, 500), op)
        elif kind == "dates":
            st.set_dates(order, op, end=datetime(2025, 3, rnd.randint(5, 28), 14, 0))
        elif kind == "lock":
            st.lock(order)
        elif kind == "unlock":
            st.unlock(order)
        elif kind == "hold":
            st.set_user_status(order, "HOLD", "Quality hold")
        elif kind == "unhold":
            st.set_user_status(order, "HOLD", active=False)
        elif kind == "teco_order":
            st.technically_complete(order)
        elif kind == "teco_op":
            st.technically_complete(order, op)
        elif kind == "confirm":
            st.confirm(order, op)
        elif kind == "partial":
            st.confirm(order, op, 1, final=False)
        elif kind == "move":
            st.move_operation(order, op, rnd.choice((WC1, WC2)))
        elif kind == "away":
            st.move_operation(order, op, "WC-9999")  # a work center this relay does not serve
        elif kind == "new":
            order = next(added)
            two_operations(order, rnd.choice((WC1, WC2)))
            orders.append(order)
        elif kind == "delete_op":
            st.delete_operation(order, op)
        else:
            st.mark_for_deletion(order, rnd.random() < 0.7)
        return f"{kind} {order}/{op}"

    async with polling(sap, tmp_path) as changes, polling(sap, tmp_path, poll="full") as full:
        assert await snap(changes) == await snap(full)
        for step in range(30):
            what = change()
            got, want = await snap(changes), await snap(full)
            assert got == want, f"step {step}: {what}"
        assert (changes.full_reads, changes.change_reads) == (1, 30)
        assert full.full_reads == 31


async def test_an_archived_order_leaves_at_the_next_full_read(
    sap: SapOrdersStandIn, tmp_path: Path
) -> None:
    st = sap.state
    three(st)
    clock = Clock()
    async with polling(sap, tmp_path, clock, full_read_s=600) as source:
        assert len((await snap(source, (WC1,)))[WC1]) == 3
        st.remove_order("1000124")  # gone from SAP: no changed-since read can show it
        clock.now += 599
        assert len((await snap(source, (WC1,)))[WC1]) == 3
        clock.now += 1
        ops = (await snap(source, (WC1,)))[WC1]
        assert [o.order_id for o in ops] == ["1000123", "1000125"]
        assert (source.full_reads, source.change_reads) == (2, 1)
        # other work centers asked about: a full read too
        assert (await snap(source, (WC1, WC2)))[WC2] == []
        assert source.full_reads == 3


async def test_a_change_committed_late_is_seen_inside_the_overlap(
    sap: SapOrdersStandIn, tmp_path: Path
) -> None:
    """SAP takes a change's time before it commits it: a row can appear with a time older
    than the newest one already read. ``overlap_s`` reads that far back."""
    st = sap.state
    three(st)
    async with polling(sap, tmp_path) as wide, polling(sap, tmp_path, overlap_s=0) as narrow:
        await snap(wide, (WC1,))
        await snap(narrow, (WC1,))
        newest = max(st.order_values(o)["LastChangeDateTime"] for o in st.orders())
        late = datetime.strptime(newest, "%Y%m%d%H%M%S") - timedelta(seconds=60)
        stamp = f"{late:%Y%m%d%H%M%S}"
        st.set_fields("1000124", LastChangeDateTime=stamp, TotalQuantity="150.000")
        st.set_fields("1000124", "0010", LastChangeDateTime=stamp, OpPlannedTotalQuantity="150")
        seen = by_key((await snap(wide, (WC1,)))[WC1])
        assert seen["1000124/0010"].quantity == Decimal(150)
        missed = by_key((await snap(narrow, (WC1,)))[WC1])
        assert missed["1000124/0010"].quantity == Decimal(100)


async def test_a_failed_changed_since_read_keeps_what_was_kept_and_asks_again(
    sap: SapOrdersStandIn, tmp_path: Path
) -> None:
    st = sap.state
    three(st)
    async with polling(sap, tmp_path) as source:
        before = await snap(source, (WC1,))
        st.set_quantity("1000123", 120, "0010")
        st.lock("1000125")
        st.fail_next(1, 503, path="A_ProductionOrder_2")  # the operations' read went well
        failed = await source.snapshot([WC1])
        assert isinstance(failed, SnapshotFailed)
        assert "HTTP 503 reading the orders changed since" in failed.text
        after = by_key((await snap(source, (WC1,)))[WC1])
        assert after["1000123/0010"].quantity == Decimal(120)
        assert after["1000125/0010"].status == "held"
        assert before[WC1][1] == after["1000124/0010"]
        assert (source.full_reads, source.change_reads) == (1, 1)


async def test_sap_refusing_the_filter_means_full_reads_said_once(
    sap: SapOrdersStandIn, tmp_path: Path
) -> None:
    st = sap.state
    three(st)
    st.unfilterable.add("LastChangeDateTime")
    async with polling(sap, tmp_path) as source:
        with structlog.testing.capture_logs() as logs:
            for n in range(4):
                st.set_quantity("1000123", 100 + n, "0010")
                ops = by_key((await snap(source, (WC1,)))[WC1])
                assert ops["1000123/0010"].quantity == Decimal(100 + n)
        refused = [e for e in logs if e["event"] == "sap_changed_since_refused"]
        assert len(refused) == 1, logs
        assert (
            "LastChangeDateTime of type A_ProductionOrderOperation_2Type is not filterable"
            in (refused[0]["reason"])
        )
        assert (source.full_reads, source.change_reads) == (4, 0)


async def test_sap_without_change_times_is_read_whole_every_time(
    sap: SapOrdersStandIn, tmp_path: Path
) -> None:
    st = sap.state
    three(st)
    for order in ("1000123", "1000124", "1000125"):
        st.set_fields(order, LastChangeDateTime=ABSENT)
        st.set_fields(order, "0010", LastChangeDateTime=ABSENT)
    async with polling(sap, tmp_path) as source:
        with structlog.testing.capture_logs() as logs:
            for _ in range(3):
                assert len((await snap(source, (WC1,)))[WC1]) == 3
        said = [e for e in logs if e["event"] == "sap_changed_since_impossible"]
        assert len(said) == 1, logs
        assert (source.full_reads, source.change_reads) == (3, 0)


async def test_more_changes_than_allowed_make_a_full_read(
    sap: SapOrdersStandIn, tmp_path: Path
) -> None:
    st = sap.state
    one(st, "1000123")
    for n in range(3):
        one(st, f"100040{n}", wc="WC-9999")  # not served here, but in the plant
    async with polling(sap, tmp_path, max_operations=2) as source:
        await snap(source, (WC1,))
        for n in range(3):
            st.set_quantity(f"100040{n}", 7)
        st.set_quantity("1000123", 9, "0010")
        (op,) = (await snap(source, (WC1,)))[WC1]
        assert op.quantity == Decimal(9)
        assert (source.full_reads, source.change_reads) == (2, 0)


async def test_a_change_sap_records_on_the_header_alone_rejudges_its_operations(
    sap: SapOrdersStandIn, tmp_path: Path
) -> None:
    """Should a release of the order move only the header's LastChangeDateTime (not confirmed
    either way), its operations still come with it: a changed header brings all of them."""
    st = sap.state
    one(st, "1000123")
    st.add_order("1000130", material="FG-200", quantity=10, released=False)
    st.add_operation("1000130", "0010", work_center=WC1, text="Stamping")
    async with polling(sap, tmp_path) as source:
        assert [o.order_id for o in (await snap(source, (WC1,)))[WC1]] == ["1000123"]
        st.release("1000130")
        st.set_fields("1000130", "0010", LastChangeDateTime="20200101000000")
        ops = (await snap(source, (WC1,)))[WC1]
        assert sorted(o.order_id for o in ops) == ["1000123", "1000130"]
        assert source.change_reads == 1


# ---------------------------------------------------------------------------------------------
# Components (to_ProductionOrderComponent)


def components_of(op: ErpOperation) -> list[tuple[Any, ...]]:
    return [
        (c.material, c.qty_per_unit, c.unit, c.backflush, c.batch_managed, c.item)
        for c in op.components
    ]


def two_operations(state: SapOrdersState, order: str = "1000300") -> None:
    """An order of 400 PC: 0010 on WC1, 0020 on WC2."""
    state.add_order(order, material="FG-300", quantity=400)
    state.add_operation(order, "0010", work_center=WC1, start=datetime(2025, 3, 4, 6, 0))
    state.add_operation(order, "0020", work_center=WC2, start=datetime(2025, 3, 4, 9, 0))


async def test_components_go_to_their_operation_per_unit_into_the_dispatch_list(
    sap: SapOrdersStandIn, tmp_path: Path
) -> None:
    st = sap.state
    two_operations(st)
    st.add_component(
        "1000300", "COIL-2MM", required=100, unit="KG", operation="0010", backflush=True
    )
    st.add_component("1000300", "LABEL-7", required=400, operation="0010", batch="L1")
    st.add_component("1000300", "GREASE", required="1.000", unit="G")  # no operation: the first
    st.add_component("1000300", "SCREW-M4", required=1600, operation="0020", backflush=True)
    st.add_component("1000300", "BULK-OIL", required=2, unit="L", operation="0010", bulk=True)
    st.add_component("1000300", "PHANTOM", required=400, operation="0010", phantom=True)
    st.add_component(
        "1000300", "SCRAP-CU", required=4, unit="KG", operation="0010", movement_type="531"
    )  # a by-product's receipt
    gone = st.add_component("1000300", "OLD-PART", required=400, operation="0010")
    st.set_component("1000300", gone.item, deleted=True)
    result = await ok(sap, tmp_path)
    (first,) = result[WC1]
    (second,) = result[WC2]
    reservation = st.order("1000300").reservation
    assert components_of(first) == [
        ("COIL-2MM", Decimal("0.25"), "KG", True, False, f"{reservation}/0001"),
        ("LABEL-7", Decimal(1), "PC", False, True, f"{reservation}/0002"),  # a batch: managed
        ("GREASE", Decimal("0.0025"), "G", False, False, f"{reservation}/0003"),
    ]
    assert components_of(second) == [
        ("SCREW-M4", Decimal(4), "PC", True, False, f"{reservation}/0004"),
    ]
    # What the gateway is sent, and what the confirmation adapter splits again.
    msg = operation_msg(first)
    assert msg.components is not None
    assert [
        (c.material, c.qty_per_unit, c.unit, c.backflush, c.batch_managed, c.item)
        for c in msg.components
    ] == components_of(first)
    assert msg.components[0].item is not None
    assert msg.components[0].item.rpartition("/") == (reservation, "/", "0001")


async def test_a_component_on_the_operation_of_another_sequence_or_a_cancelled_one(
    sap: SapOrdersStandIn, tmp_path: Path
) -> None:
    st = sap.state
    one(st, "1000301")
    st.add_component("1000301", "PART-A", required=100, operation="0010")
    # 0010 of a parallel sequence: another operation than the standard sequence's 0010
    st.add_component("1000301", "PART-B", required=100, operation="0010", sequence="1")
    (op,) = (await ok(sap, tmp_path, (WC1,)))[WC1]
    assert [c.material for c in op.components] == ["PART-A"]
    st.technically_complete("1000301")
    (cancelled,) = (await ok(sap, tmp_path, (WC1,)))[WC1]
    assert cancelled.status == "cancelled"
    assert cancelled.components == ()


async def test_a_component_changed_in_sap_shows_in_the_next_poll(
    sap: SapOrdersStandIn, tmp_path: Path
) -> None:
    st = sap.state
    one(st, "1000302")
    part = st.add_component("1000302", "PART-A", required=100, operation="0010")
    async with polling(sap, tmp_path) as source:
        (op,) = (await snap(source, (WC1,)))[WC1]
        assert components_of(op)[0][:3] == ("PART-A", Decimal(1), "PC")
        st.set_component("1000302", part.item, required=250, unit="KG", backflush=True)
        st.add_component("1000302", "PART-B", required=50, operation="0010", batch="B7")
        (op,) = (await snap(source, (WC1,)))[WC1]
        assert [c[:5] for c in components_of(op)] == [
            ("PART-A", Decimal("2.5"), "KG", True, False),
            ("PART-B", Decimal("0.5"), "PC", False, True),
        ]
        st.set_component("1000302", part.item, deleted=True)
        (op,) = (await snap(source, (WC1,)))[WC1]
        assert [c.material for c in op.components] == ["PART-B"]
        assert (source.full_reads, source.change_reads) == (1, 2)  # seen by changed-since reads


async def test_bad_component_data_is_left_out_naming_it_and_the_rest_stays(
    sap: SapOrdersStandIn, tmp_path: Path
) -> None:
    st = sap.state
    one(st, "1000303")
    st.add_component("1000303", "GOOD-1", required=100, operation="0010")
    neg = st.add_component("1000303", "NEGATIVE", required=1, operation="0010")
    st.set_component("1000303", neg.item, RequiredQuantity="-5.000")
    nan = st.add_component("1000303", "NOT-A-NUMBER", required=1, operation="0010")
    st.set_component("1000303", nan.item, RequiredQuantity="lots")
    no_material = st.add_component("1000303", "X", required=1, operation="0010")
    st.set_component("1000303", no_material.item, Material="")
    st.add_component("1000303", "M" * 41, required=1, operation="0010")
    st.add_component("1000303", "ODD-UNIT", required=1, unit="KILO", operation="0010")
    no_unit = st.add_component("1000303", "NO-UNIT", required=1, operation="0010")
    st.set_component("1000303", no_unit.item, BaseUnit=ABSENT)
    st.add_component("1000303", "TINY", required="0.0001", operation="0010")  # 0 per unit
    st.add_component("1000303", "GOOD-1", required=5, operation="0010")  # the same twice
    st.add_component("1000303", "GOOD-2", required=300, unit="KG", operation="0010")
    with structlog.testing.capture_logs() as logs:
        (op,) = (await ok(sap, tmp_path, (WC1,)))[WC1]
    assert [c[:3] for c in components_of(op)] == [
        ("GOOD-1", Decimal(1), "PC"),
        ("GOOD-2", Decimal(3), "KG"),
    ]
    left_out = [
        (e["order"], e["operation"], e["field"], e["value"])
        for e in logs
        if e["event"] == "sap_component_left_out" and e["log_level"] == "warning"
    ]
    assert left_out == [
        ("1000303", "0010", "RequiredQuantity", "-5.000"),
        ("1000303", "0010", "RequiredQuantity", "lots"),
        ("1000303", "0010", "Material", ""),
        ("1000303", "0010", "Material", "M" * 41),
        ("1000303", "0010", "BaseUnit", "KILO"),
        ("1000303", "0010", "EntryUnit", None),
        ("1000303", "0010", "RequiredQuantity", "0.000"),
        ("1000303", "0010", "Material", "GOOD-1"),
    ]
    assert all(e["reason"] for e in logs if e["event"] == "sap_component_left_out")
    assert not any(e["event"] == "sap_operation_left_out" for e in logs)
