"""The D365 order source against the D365 stand-in's data entities, over real HTTP on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pydantic
import pytest
from structlog.testing import capture_logs

from edge.relay.dispatch import operation_msg
from edge.relay.orders import ErpOperation, SnapshotFailed
from edge.relay.orders_d365 import D365OrderSource, Settings, build
from simulators.erp.d365 import D365StandIn
from tests.erp.helpers import D365_SECRET, d365_token, d365_values, released, write_secret

pytestmark = pytest.mark.timeout(10)

SECRET = D365_SECRET


@pytest.fixture
async def d365() -> AsyncIterator[D365StandIn]:
    async with D365StandIn(client_secret=SECRET) as stand_in:
        yield stand_in


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    return write_secret(tmp_path)


def settings_for(d365: D365StandIn, secret_file: Path, **changes: Any) -> Settings:
    values = {"timezone": "Europe/Berlin", "stopped_field": "IsProductionOrderStopped", **changes}
    return Settings.model_validate(d365_values(d365, secret_file, **values))


@pytest.fixture
async def source(d365: D365StandIn, secret_file: Path) -> AsyncIterator[D365OrderSource]:
    src = build(settings_for(d365, secret_file))
    await src.start()
    yield src
    await src.close()


async def snap(src: D365OrderSource, *wcs: str) -> dict[str, list[ErpOperation]]:
    result = await src.snapshot(list(wcs))
    assert not isinstance(result, SnapshotFailed), result
    return result


def by_key(ops: list[ErpOperation]) -> dict[tuple[str, str], ErpOperation]:
    return {(op.order_id, op.operation): op for op in ops}


def two_orders(d365: D365StandIn) -> None:
    """P000101 (press, then weld) and P000102 (press, earlier); the plant is in Berlin."""
    s = d365.state
    s.add_product("A0001", "PC", "Bracket")
    s.add_product("B0002", "kg", "Granulate mix")
    s.add_order(
        "P000101",
        item="A0001",
        quantity=120,
        status="Released",
        name="Bracket 30x15",
        start=datetime(2025, 12, 1, 6, 0),
        end=datetime(2025, 12, 3, 22, 0),
    )
    s.add_operation(
        "P000101",
        10,
        "PRESS07",
        setup_time=30,  # minutes: the route's times are in minutes
        process_time=Decimal("2.5"),
        process_quantity=10,
        hours_factor=Decimal(1) / Decimal(60),
        start=datetime(2025, 12, 2, 6, 0),
        end=datetime(2025, 12, 2, 14, 30),
        operation_id="PRESS",
    )
    s.add_operation(
        "P000101",
        20,
        "WELD02",
        setup_time=Decimal("0.25"),  # hours
        process_time=Decimal("0.01"),
        start=datetime(2025, 12, 3, 6, 0),
        end=datetime(2025, 12, 3, 10, 0),
    )
    s.add_order(
        "P000102",
        item="B0002",
        quantity=Decimal("7.5"),
        status="StartedUp",
        name="Granulate",
        end=datetime(2025, 12, 1, 18, 0),
    )
    s.add_operation(
        "P000102", 10, "PRESS07", process_time=2, start=datetime(2025, 12, 1, 22, 15)
    )  # no end of its own: the order's


async def test_mapping_for_two_work_centers(d365: D365StandIn, source: D365OrderSource) -> None:
    two_orders(d365)
    result = await snap(source, "PRESS07", "WELD02", "NOSUCH")
    assert set(result) == {"PRESS07", "WELD02", "NOSUCH"}
    assert result["NOSUCH"] == []
    press = result["PRESS07"]
    assert [(op.order_id, op.operation, op.sequence) for op in press] == [
        ("P000102", "0010", 1),  # 2025-12-01 22:15 local
        ("P000101", "0010", 2),  # 2025-12-02 06:00 local
    ]
    first = by_key(press)[("P000101", "0010")]
    assert first == released(
        ("PRESS07", "P000101", "0010"),
        ("A0001", Decimal(120), "PC"),
        "Bracket 30x15",
        2,
        (
            1800.0,  # 30 minutes
            15.0,  # 2.5 minutes for 10 pieces
            "2025-12-02T13:30:00Z",  # 14:30 in Berlin (CET)
        ),
    )
    other = by_key(press)[("P000102", "0010")]
    assert (other.material, other.quantity, other.unit) == ("B0002", Decimal("7.5"), "kg")
    assert other.status == "released"  # StartedUp
    assert other.planned_setup_s == 0.0
    assert other.planned_run_s_per_unit == pytest.approx(7200.0)  # 2 hours per piece
    assert other.latest_end == "2025-12-01T17:00:00Z"  # the order's end
    (weld,) = result["WELD02"]
    assert (weld.work_center, weld.order_id, weld.operation, weld.sequence) == (
        "WELD02",
        "P000101",
        "0020",
        1,
    )
    assert weld.planned_setup_s == pytest.approx(900.0)
    assert weld.planned_run_s_per_unit == pytest.approx(36.0)
    assert weld.latest_end == "2025-12-03T09:00:00Z"
    # the requests: one company, cross-company, enum literals for the status
    log = "\n".join(d365.state.read_log)
    assert "cross-company=true" in log
    assert "ProdStatus%27Released%27" in log or "ProdStatus'Released'" in log


async def test_operation_number_matches_the_confirmation_adapter(
    d365: D365StandIn, source: D365OrderSource
) -> None:
    d365.state.add_product("A0001")
    d365.state.add_order("P000110", item="A0001", quantity=5, status="Released")
    d365.state.add_operation("P000110", 5, "PRESS07")
    d365.state.add_operation("P000110", 1230, "PRESS07")
    result = await snap(source, "PRESS07")
    ops = [op.operation for op in result["PRESS07"]]
    assert sorted(ops) == ["0005", "1230"]
    assert all(int(op) in (5, 1230) for op in ops)  # D365Adapter sends int(operation)


async def test_paging_across_pages_and_chunked_filters(
    d365: D365StandIn, secret_file: Path
) -> None:
    d365.state.add_product("A0001")
    for i in range(7):
        number = f"P0002{i:02d}"
        d365.state.add_order(number, item="A0001", quantity=10 + i, status="Released")
        d365.state.add_operation(
            number, 10, "PRESS07", setup_time=1, start=datetime(2025, 12, 1, 6 + i, 0)
        )
        d365.state.add_operation(number, 20, "WELD02", start=datetime(2025, 12, 2, 6 + i, 0))
    src = build(settings_for(d365, secret_file, page_size=2, filter_chunk=3))
    try:
        result = await snap(src, "PRESS07", "WELD02")
    finally:
        await src.close()
    assert [op.order_id for op in result["PRESS07"]] == [f"P0002{i:02d}" for i in range(7)]
    assert [op.sequence for op in result["PRESS07"]] == list(range(1, 8))
    assert [op.quantity for op in result["WELD02"]] == [Decimal(10 + i) for i in range(7)]
    skips = [u for u in d365.state.read_log if "%24skip=" in u or "$skip=" in u]
    assert skips, "no second page was asked for"
    assert d365.state.read_requests["ProductionOrderHeaders"] >= 4  # 7 rows, 2 a page


async def test_status_mapping(d365: D365StandIn, secret_file: Path) -> None:
    s = d365.state
    s.add_product("A0001")
    for number, status in (
        ("P000301", "Released"),
        ("P000302", "StartedUp"),
        ("P000303", "Released"),  # stopped below
        ("P000304", "Released"),  # ended after the first snapshot
        ("P000305", "Scheduled"),  # never released
        ("P000306", "Released"),  # reported as finished after the first snapshot
        ("P000307", "StartedUp"),  # its operation completed
        ("P000308", "Created"),
    ):
        s.add_order(number, item="A0001", quantity=10, status=status)
        s.add_operation(number, 10, "PRESS07")
    s.stop_order("P000303")
    s.complete_operation("P000307", 10)
    src = build(settings_for(d365, secret_file))
    try:
        first = by_key((await snap(src, "PRESS07"))["PRESS07"])
        assert {k[0]: (v.status, v.status_text) for k, v in first.items()} == {
            "P000301": ("released", ""),
            "P000302": ("released", ""),
            "P000303": ("held", "Stopped"),
            "P000304": ("released", ""),
            "P000306": ("released", ""),
        }
        s.end("P000304")
        s.set_status("P000306", "ReportedFinished")
        s.resume_order("P000303")
        second = by_key((await snap(src, "PRESS07"))["PRESS07"])
        assert {k[0]: (v.status, v.status_text) for k, v in second.items()} == {
            "P000301": ("released", ""),
            "P000302": ("released", ""),
            "P000303": ("released", ""),
            "P000304": ("cancelled", "Ended"),
        }
        third = by_key((await snap(src, "PRESS07"))["PRESS07"])
        assert ("P000304", "0010") not in third  # reported cancelled once, then it leaves
        s.stop_order("P000301")
        s.end("P000301")  # ended wins over stopped
        fourth = by_key((await snap(src, "PRESS07"))["PRESS07"])
        assert fourth[("P000301", "0010")].status == "cancelled"
    finally:
        await src.close()
    # other rules by configuration
    src = build(
        settings_for(
            d365,
            secret_file,
            held_statuses=["Scheduled"],
            cancelled_statuses=["Ended", "ReportedFinished"],
        )
    )
    try:
        ops = by_key((await snap(src, "PRESS07"))["PRESS07"])
        assert ("P000306", "0010") not in ops  # a new source: never reported, not looked at
        s.set_status("P000306", "StartedUp")
        assert ("P000306", "0010") in by_key((await snap(src, "PRESS07"))["PRESS07"])
        s.set_status("P000306", "ReportedFinished")
        ops = by_key((await snap(src, "PRESS07"))["PRESS07"])
        assert ops[("P000305", "0010")].status == "held"
        assert ops[("P000305", "0010")].status_text == "Scheduled"
        assert ops[("P000306", "0010")].status == "cancelled"
        assert ops[("P000306", "0010")].status_text == "ReportedFinished"
        assert ("P000308", "0010") not in ops
    finally:
        await src.close()


async def test_without_a_stop_field_nothing_is_held(d365: D365StandIn, secret_file: Path) -> None:
    d365.state.add_product("A0001")
    d365.state.add_order("P000320", item="A0001", quantity=1, status="Released", stopped=True)
    d365.state.add_operation("P000320", 10, "PRESS07")
    src = build(settings_for(d365, secret_file, stopped_field=None))
    try:
        (op,) = (await snap(src, "PRESS07"))["PRESS07"]
    finally:
        await src.close()
    assert op.status == "released"


async def test_bad_values_are_left_out_with_a_warning(
    d365: D365StandIn, source: D365OrderSource
) -> None:
    s = d365.state
    s.add_product("A0001")
    for number in ("P000401", "P000402", "P000403", "P000404", "P000405", "P000406"):
        s.add_order(number, item="A0001", quantity=10, status="Released", name="ok")
        s.add_operation(number, 10, "PRESS07", setup_time=1, process_time=1)
    s.set_quantity("P000401", -5)  # the operation goes
    s.set_raw("P000402", "ProcessTime", "fast", operation=10)  # only the run time goes
    s.set_raw("P000403", "SetupTime", 100_000, operation=10)  # hours: beyond 30 days
    s.set_raw("P000404", "ItemNumber", "NOPRODUCT")  # no unit: the operation goes
    s.set_raw("P000405", "ProductionOrderName", "x" * 300)  # cut
    s.set_raw("P000406", "ScheduledEndDate", "garbage", operation=10)
    with capture_logs() as logs:
        result = await snap(source, "PRESS07")
    ops = by_key(result["PRESS07"])
    assert ("P000401", "0010") not in ops
    assert ("P000404", "0010") not in ops
    assert ops[("P000402", "0010")].planned_run_s_per_unit == 0.0
    assert ops[("P000402", "0010")].planned_setup_s == 3600.0
    assert ops[("P000403", "0010")].planned_setup_s == 0.0
    assert ops[("P000403", "0010")].planned_run_s_per_unit == 3600.0
    assert ops[("P000405", "0010")].material_text == "x" * 200
    assert ops[("P000406", "0010")].latest_end is None
    warnings = {(e["order"], e["field"]) for e in logs if e["log_level"] == "warning"}
    assert ("P000401", "ScheduledQuantity") in warnings
    assert ("P000402", "ProcessTime") in warnings
    assert ("P000403", "SetupTime") in warnings
    assert ("P000404", "ReleasedProductsV2.InventoryUnitSymbol") in warnings
    assert ("P000405", "ProductionOrderName") in warnings
    left_out = [e for e in logs if e["event"] == "d365_operation_left_out"]
    assert {e["order"] for e in left_out} == {"P000401", "P000404"}
    assert all(e["operation"] == 10 for e in left_out)


async def test_fixed_unit_without_products(d365: D365StandIn, secret_file: Path) -> None:
    d365.state.add_order("P000501", item="ANY", quantity=3, status="Released")
    d365.state.add_operation("P000501", 10, "PRESS07")
    src = build(settings_for(d365, secret_file, product_entity=None, unit="EA"))
    try:
        (op,) = (await snap(src, "PRESS07"))["PRESS07"]
    finally:
        await src.close()
    assert op.unit == "EA"
    assert d365.state.read_requests["ReleasedProductsV2"] == 0


async def test_outage_is_a_failed_snapshot(d365: D365StandIn, source: D365OrderSource) -> None:
    two_orders(d365)
    d365.state.outage = True
    result = await source.snapshot(["PRESS07"])
    assert isinstance(result, SnapshotFailed)
    assert "ProductionOrderHeaders" in result.text
    assert "HTTP 503" in result.text
    d365.state.outage = False
    assert (await snap(source, "PRESS07"))["PRESS07"]


async def test_entity_error_names_the_entity(d365: D365StandIn, source: D365OrderSource) -> None:
    two_orders(d365)
    d365.state.fail_next_read(500, "Timeout expired in SQL.", entity="ProductionOrderRouteJobs")
    result = await source.snapshot(["PRESS07"])
    assert isinstance(result, SnapshotFailed)
    assert result.text == "D365 ProductionOrderRouteJobs: HTTP 500 Timeout expired in SQL."


async def test_bad_secret_is_a_configuration_error(d365: D365StandIn, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.secret"
    wrong.write_text("not-it", encoding="utf-8")
    two_orders(d365)
    src = build(settings_for(d365, wrong))
    try:
        result = await src.snapshot(["PRESS07"])
    finally:
        await src.close()
    assert isinstance(result, SnapshotFailed)
    assert "configuration error" in result.text
    assert "token endpoint refused client" in result.text
    assert "AADSTS7000215" in result.text
    assert "not-it" not in result.text


async def test_timeout_is_a_failed_snapshot(d365: D365StandIn, secret_file: Path) -> None:
    two_orders(d365)
    d365.state.latency_s = 1.5
    src = build(settings_for(d365, secret_file, timeout_s=1.0))
    try:
        result = await src.snapshot(["PRESS07"])
    finally:
        await src.close()
    assert isinstance(result, SnapshotFailed)
    assert "no answer within 1 s" in result.text


async def test_connection_refused(secret_file: Path) -> None:
    async with D365StandIn(client_secret=SECRET) as gone:
        settings = settings_for(gone, secret_file)
    src = build(settings)
    try:
        result = await src.snapshot(["PRESS07"])
    finally:
        await src.close()
    assert isinstance(result, SnapshotFailed)
    assert "token endpoint unreachable" in result.text


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"page_size": 0}, "page_size"),
        ({"page_size": 10_001}, "page_size"),
        ({"filter_chunk": 1000}, "filter_chunk"),
        ({"released_statuses": ["Released", "Running"]}, "released_statuses"),
        ({"released_statuses": []}, "released_statuses"),
        ({"held_statuses": ["Released"]}, "held_statuses"),
        ({"cancelled_statuses": ["Ended", "Ended"]}, "cancelled_statuses"),
        ({"company": "toolong"}, "company"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"timeout_s": float("inf")}, "timeout_s"),
        ({"unit": ""}, "unit"),
        ({"job_entity": "Route Jobs"}, "job_entity"),
        ({"stopped_field": "x;y"}, "stopped_field"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_settings_validation_names_the_field(
    change: dict[str, Any], field: str, tmp_path: Path
) -> None:
    values: dict[str, Any] = {
        "system": "d365",
        "base_url": "https://acme.operations.dynamics.com",
        "tenant_token_url": "https://login.microsoftonline.com/t/oauth2/v2.0/token",
        "client_id": "edge-relay",
        "client_secret_file": tmp_path / "secret",
        "company": "usmf",
    }
    values.update(change)
    with pytest.raises(pydantic.ValidationError) as info:
        Settings.model_validate(values)
    assert field in str(info.value)


def test_settings_defaults(tmp_path: Path) -> None:
    settings = Settings.model_validate(
        {
            "system": "d365",
            "base_url": "https://acme.operations.dynamics.com/",
            "tenant_token_url": "https://login.microsoftonline.com/t/oauth2/v2.0/token",
            "client_id": "edge-relay",
            "client_secret_file": str(tmp_path / "secret"),
            "company": "usmf",
        }
    )
    assert settings.released_statuses == ("Released", "StartedUp")
    assert settings.held_statuses == ()
    assert settings.cancelled_statuses == ("Ended", "Completed")
    assert settings.effective_scope == "https://acme.operations.dynamics.com/.default"
    with pytest.raises(ValueError, match="client_secret_file"):
        build(settings)


async def test_each_work_center_remembers_its_orders(
    d365: D365StandIn, source: D365OrderSource
) -> None:
    two_orders(d365)
    assert (await snap(source, "PRESS07"))["PRESS07"]
    assert (await snap(source, "WELD02"))["WELD02"]  # asked alone, one after the other
    d365.state.end("P000101")
    press = by_key((await snap(source, "PRESS07"))["PRESS07"])
    assert press[("P000101", "0010")].status == "cancelled"
    (weld,) = (await snap(source, "WELD02"))["WELD02"]
    assert (weld.order_id, weld.status, weld.status_text) == ("P000101", "cancelled", "Ended")


async def test_resource_from_the_costing_resource(d365: D365StandIn, secret_file: Path) -> None:
    two_orders(d365)
    src = build(settings_for(d365, secret_file, resource_from="costing_resource"))
    try:
        result = await snap(src, "PRESS07", "WELD02")
    finally:
        await src.close()
    assert [(op.order_id, op.operation, op.sequence) for op in result["PRESS07"]] == [
        ("P000102", "0010", 1),
        ("P000101", "0010", 2),
    ]
    assert [op.operation for op in result["WELD02"]] == ["0020"]
    assert result["PRESS07"][1].planned_setup_s == 1800.0
    assert d365.state.read_requests["ProductionOrderRouteJobs"] == 0


async def test_an_operation_moved_to_another_resource(
    d365: D365StandIn, source: D365OrderSource
) -> None:
    two_orders(d365)
    d365.state.move_operation("P000101", 10, "WELD02")
    d365.state.set_dates("P000101", operation=10, start=datetime(2025, 12, 4, 6, 0))
    d365.state.set_quantity("P000101", 99)
    result = await snap(source, "PRESS07", "WELD02")
    assert [op.order_id for op in result["PRESS07"]] == ["P000102"]
    assert [(op.operation, op.sequence, op.quantity) for op in result["WELD02"]] == [
        ("0020", 1, Decimal(99)),
        ("0010", 2, Decimal(99)),  # starts later now
    ]


async def test_an_unknown_status_is_a_warning(d365: D365StandIn, source: D365OrderSource) -> None:
    two_orders(d365)
    assert (await snap(source, "WELD02"))["WELD02"]
    d365.state.set_status("P000101", "Frozen")
    with capture_logs() as logs:
        result = await snap(source, "WELD02")
    assert result["WELD02"] == []
    assert any(
        e["order"] == "P000101"
        and e["field"] == "ProductionOrderStatus"
        and "Frozen" in e["reason"]
        for e in logs
    )


async def test_orders_scripted_over_the_control_api(
    d365: D365StandIn, source: D365OrderSource
) -> None:
    async with httpx.AsyncClient(base_url=d365.base_url) as http:
        for path, body in (
            ("/_control/products", {"item": "C0003", "unit": "m"}),
            (
                "/_control/orders",
                {"number": "P000601", "item": "C0003", "quantity": 40, "status": "Scheduled"},
            ),
            (
                "/_control/operations",
                {"order": "P000601", "number": 30, "resource": "CUT01", "process_time": "0.1"},
            ),
            ("/_control/orders/P000601", {"status": "Released", "quantity": 50}),
            (
                "/_control/orders/P000601",
                {"operation": 30, "end": "2025-12-05T12:00:00"},
            ),
        ):
            response = await http.post(path, json=body)
            assert response.status_code == 200, response.text
    (op,) = (await snap(source, "CUT01"))["CUT01"]
    assert (op.key, op.quantity, op.unit) == (("P000601", "0030", 0), Decimal(50), "m")
    assert op.planned_run_s_per_unit == 360.0
    assert op.latest_end == "2025-12-05T11:00:00Z"
    async with httpx.AsyncClient(base_url=d365.base_url) as http:
        response = await http.post("/_control/orders/P000601", json={"stopped": True})
        assert response.status_code == 200
    (op,) = (await snap(source, "CUT01"))["CUT01"]
    assert op.status == "held"


async def test_an_unknown_entity_or_property_fails_clearly(
    d365: D365StandIn, secret_file: Path
) -> None:
    two_orders(d365)
    src = build(settings_for(d365, secret_file, operation_entity="ProdRouteOperations"))
    try:
        result = await src.snapshot(["PRESS07"])
    finally:
        await src.close()
    assert isinstance(result, SnapshotFailed)
    assert result.text.startswith("D365 ProdRouteOperations: HTTP 404")
    async with httpx.AsyncClient(base_url=d365.base_url) as http:
        token = await d365_token(http, d365)
        response = await http.get(
            "/data/ProductionOrderHeaders",
            params={"$filter": "Nope eq 'x'", "cross-company": "true"},
            headers={"Authorization": f"Bearer {token}"},
        )
    assert response.status_code == 400
    assert "Could not find a property named 'Nope'" in response.json()["error"]["message"]


async def test_quantities_are_tidied_and_a_stop_flag_needs_a_release(
    d365: D365StandIn, source: D365OrderSource
) -> None:
    s = d365.state
    s.add_product("A0001")
    for number in ("P000701", "P000702", "P000703"):
        s.add_order(number, item="A0001", quantity=10, status="Released")
        s.add_operation(number, 10, "PRESS07")
    s.set_raw("P000701", "ScheduledQuantity", "33.33333333333333")  # beyond 6 places
    s.set_raw("P000702", "ScheduledQuantity", 1e30)  # beyond the contract's bound
    s.set_raw("P000703", "ScheduledQuantity", 0.0000001)  # rounds to nothing
    s.add_order("P000704", item="A0001", quantity=1, status="Scheduled", stopped=True)
    s.add_operation("P000704", 10, "PRESS07")
    with capture_logs() as logs:
        ops = by_key((await snap(source, "PRESS07"))["PRESS07"])
    assert set(ops) == {("P000701", "0010")}  # P000704 is stopped but never released
    assert ops[("P000701", "0010")].quantity == Decimal("33.333333")
    assert {e["order"] for e in logs if e["event"] == "d365_operation_left_out"} == {
        "P000702",
        "P000703",
    }


# -- components (the orders' BOM lines) --------------------------------------------------------


def components_of(op: ErpOperation) -> list[tuple[Any, ...]]:
    return [
        (c.material, c.qty_per_unit, c.unit, c.backflush, c.batch_managed, c.item)
        for c in op.components
    ]


async def test_bom_lines_go_to_their_operation_per_unit_into_the_dispatch_list(
    d365: D365StandIn, source: D365OrderSource
) -> None:
    two_orders(d365)
    s = d365.state
    s.add_bom_line(
        "P000101", "COIL-2MM", qty_per_unit="0.25", unit="kg", operation=10, flushing="Start"
    )
    s.add_bom_line("P000101", "LABEL-7", qty_per_unit=1, unit="PC", operation=10, batch="L1")
    s.add_bom_line("P000101", "GREASE", qty_per_unit=Decimal("0.0025"), unit="g")  # on none
    s.add_bom_line(
        "P000101", "SCREW-M4", qty_per_unit=4, unit="PC", operation=20, flushing="Finish", per=100
    )  # 400 for 100 pieces
    s.add_bom_line("P000101", "WIRE", qty_per_unit=1, unit="m", operation=20, flushing="Manual")
    s.add_bom_line("P000101", "KIT", qty_per_unit=1, unit="PC", operation=10)
    s.set_bom_raw("P000101", "KIT", "LineType", "Phantom")  # exploded: not consumed itself
    result = await snap(source, "PRESS07", "WELD02")
    press = by_key(result["PRESS07"])[("P000101", "0010")]
    (weld,) = result["WELD02"]
    assert components_of(press) == [
        ("COIL-2MM", Decimal("0.25"), "kg", True, False, "1"),
        ("LABEL-7", Decimal(1), "PC", False, True, "2"),  # a batch given: batch-managed
        ("GREASE", Decimal("0.0025"), "g", False, False, "3"),  # the first operation's
    ]
    assert components_of(weld) == [
        ("SCREW-M4", Decimal(4), "PC", True, False, "4"),
        ("WIRE", Decimal(1), "m", False, False, "5"),
    ]
    assert by_key(result["PRESS07"])[("P000102", "0010")].components == ()
    msg = operation_msg(press)  # what the gateway is sent
    assert msg.components is not None
    got = [
        (c.material, c.qty_per_unit, c.unit, c.backflush, c.batch_managed, c.item)
        for c in msg.components
    ]
    assert got == components_of(press)


async def test_a_bom_line_changed_in_d365_shows_in_the_next_poll(
    d365: D365StandIn, source: D365OrderSource
) -> None:
    two_orders(d365)
    s = d365.state
    s.add_bom_line("P000101", "COIL-2MM", qty_per_unit=1, unit="kg", operation=10)
    press = by_key((await snap(source, "PRESS07"))["PRESS07"])[("P000101", "0010")]
    assert components_of(press) == [("COIL-2MM", Decimal(1), "kg", False, False, "1")]
    s.add_bom_line(
        "P000101", "COIL-2MM", qty_per_unit="1.5", unit="kg", operation=10, flushing="Available"
    )
    s.add_bom_line("P000101", "LABEL-7", qty_per_unit=2, unit="PC", operation=10)
    press = by_key((await snap(source, "PRESS07"))["PRESS07"])[("P000101", "0010")]
    assert components_of(press) == [
        ("COIL-2MM", Decimal("1.5"), "kg", True, False, "1"),
        ("LABEL-7", Decimal(2), "PC", False, False, "2"),
    ]
    s.remove_bom_line("P000101", "COIL-2MM")
    s.add_bom_line("P000101", "LABEL-7", qty_per_unit=2, unit="PC", operation=20)  # moved
    press = by_key((await snap(source, "PRESS07"))["PRESS07"])[("P000101", "0010")]
    assert press.components == ()
    s.end("P000101")
    cancelled = by_key((await snap(source, "PRESS07"))["PRESS07"])[("P000101", "0010")]
    assert cancelled.status == "cancelled"
    assert cancelled.components == ()


async def test_bad_bom_lines_are_left_out_naming_them_and_the_rest_stays(
    d365: D365StandIn, source: D365OrderSource
) -> None:
    s = d365.state
    s.add_product("A0001")
    s.add_order("P000501", item="A0001", quantity=10, status="Released")
    s.add_operation("P000501", 10, "PRESS07", process_time=1)
    s.add_bom_line("P000501", "GOOD-1", qty_per_unit=1, unit="PC", operation=10)
    for item in ("NEG", "NAN", "NOITEM", "LONG", "NOUNIT", "SPACEUNIT", "ZERO-PER", "TINY"):
        s.add_bom_line("P000501", item, qty_per_unit=1, unit="PC", operation=10)
    s.set_bom_raw("P000501", "NEG", "BOMLineQuantity", -5)
    s.set_bom_raw("P000501", "NAN", "BOMLineQuantity", "lots")
    s.set_bom_raw("P000501", "NOITEM", "ItemNumber", "")
    s.set_bom_raw("P000501", "LONG", "ItemNumber", "M" * 41)
    s.set_bom_raw("P000501", "NOUNIT", "BOMLineUnitSymbol", None)
    s.set_bom_raw("P000501", "SPACEUNIT", "BOMLineUnitSymbol", "k g")
    s.set_bom_raw("P000501", "ZERO-PER", "BOMLineQuantityDenominator", 0)
    s.set_bom_raw("P000501", "TINY", "BOMLineQuantity", 0.0000001)
    s.add_bom_line("P000501", "DUP", qty_per_unit=1, unit="PC", operation=10)
    s.set_bom_raw("P000501", "DUP", "ItemNumber", "GOOD-1")  # the same item twice
    s.add_bom_line("P000501", "GOOD-2", qty_per_unit=3, unit="kg", operation=10)
    with capture_logs() as logs:
        (op,) = (await snap(source, "PRESS07"))["PRESS07"]
    assert [c[:3] for c in components_of(op)] == [
        ("GOOD-1", Decimal(1), "PC"),
        ("GOOD-2", Decimal(3), "kg"),
    ]
    left_out = [
        (e["order"], e["operation"], e["line"], e["field"], e["value"])
        for e in logs
        if e["event"] == "d365_component_left_out" and e["log_level"] == "warning"
    ]
    assert left_out == [
        ("P000501", 10, "2", "BOMLineQuantity", "-5"),
        ("P000501", 10, "3", "BOMLineQuantity", "'lots'"),
        ("P000501", 10, "4", "ItemNumber", "''"),
        ("P000501", 10, "5", "ItemNumber", repr("M" * 41)),
        ("P000501", 10, "6", "BOMLineUnitSymbol", "None"),
        ("P000501", 10, "7", "BOMLineUnitSymbol", "'k g'"),
        ("P000501", 10, "8", "BOMLineQuantityDenominator", "0"),
        ("P000501", 10, "9", "BOMLineQuantity", "1e-07"),
        ("P000501", 10, "10", "ItemNumber", "'GOOD-1'"),
    ]
    assert all(e["reason"] for e in logs if e["event"] == "d365_component_left_out")
    assert not any(e["event"] == "d365_operation_left_out" for e in logs)


async def test_without_a_bom_entity_no_components_are_read(
    d365: D365StandIn, secret_file: Path
) -> None:
    two_orders(d365)
    d365.state.add_bom_line("P000101", "COIL-2MM", qty_per_unit=1, unit="kg", operation=10)
    src = build(settings_for(d365, secret_file, bom_entity=None))
    await src.start()
    try:
        result = await snap(src, "PRESS07")
    finally:
        await src.close()
    assert all(op.components == () for op in result["PRESS07"])
    assert d365.state.read_requests["ProductionOrderBillOfMaterialLines"] == 0
