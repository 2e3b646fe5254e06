"""Orders down, the pure part: what a snapshot of the ERP's operations makes the relay send a
work center, given what it sent last."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

from edge.relay.dispatch import CANCEL, DISPATCH, HOLD, RELEASE, Plan, plan
from edge.relay.orders import ErpOperation
from edge.sync.contract import DispatchListBody, OperationRefBody

T0 = 1_800_000_000_000


def op(order: str = "1000123", operation: str = "0010", **changes: object) -> ErpOperation:
    base = ErpOperation(
        work_center="PRESS07",
        order_id=order,
        operation=operation,
        material="FG-4711",
        quantity=Decimal(1200),
        unit="PC",
        sequence=1,
        planned_setup_s=1800.0,
        planned_run_s_per_unit=4.2,
    )
    return replace(base, **changes) if changes else base  # type: ignore[arg-type]


def paths(p: Plan) -> list[str]:
    return [m.path for m in p.messages]


def test_the_first_snapshot_sends_the_whole_list() -> None:
    p = plan(None, [op(), op("1000124", sequence=2)], T0)
    assert paths(p) == [DISPATCH]
    body = p.messages[0].body
    assert isinstance(body, DispatchListBody)
    assert body.version == T0
    assert [o.order_id for o in body.operations] == ["1000123", "1000124"]
    assert body.operations[0].planned_setup_s == 1800.0
    assert p.sent is not None
    assert p.sent.version == T0


def test_an_unchanged_snapshot_sends_nothing_and_a_change_a_newer_version() -> None:
    first = plan(None, [op()], T0)
    assert first.sent is not None
    assert plan(first.sent, [op()], T0 + 60_000).messages == []
    changed = plan(first.sent, [op(quantity=Decimal(1500))], T0 + 60_000)
    assert paths(changed) == [DISPATCH]
    body = changed.messages[0].body
    assert isinstance(body, DispatchListBody)
    assert body.version == T0 + 60_000
    # a clock that went back still gives a higher version
    assert changed.sent is not None
    back = plan(changed.sent, [op(quantity=Decimal(1))], T0 - 999_999)
    body = back.messages[0].body
    assert isinstance(body, DispatchListBody)
    assert body.version == T0 + 60_001


def test_hold_release_and_cancel_follow_the_erp_status() -> None:
    first = plan(None, [op(), op("1000124")], T0)
    held = plan(first.sent, [op(status="held", status_text="quality hold"), op("1000124")], T0 + 1)
    assert paths(held) == [HOLD]  # the list itself is unchanged
    ref = held.messages[0].body
    assert isinstance(ref, OperationRefBody)
    assert (ref.order_id, ref.reason) == ("1000123", "quality hold")
    again = plan(held.sent, [op(status="held"), op("1000124")], T0 + 2)
    assert again.messages == []  # held once, not every round
    released = plan(again.sent, [op(), op("1000124")], T0 + 3)
    assert paths(released) == [RELEASE]
    cancelled = plan(
        released.sent, [op(), op("1000124", status="cancelled", status_text="TECO")], T0 + 4
    )
    assert paths(cancelled) == [CANCEL, DISPATCH]  # cancel first, then the list without it
    body = cancelled.messages[1].body
    assert isinstance(body, DispatchListBody)
    assert [o.order_id for o in body.operations] == ["1000123"]
    assert plan(cancelled.sent, [op(), op("1000124", status="cancelled")], T0 + 5).messages == []


def test_a_new_held_operation_is_listed_first_then_held() -> None:
    p = plan(None, [op(status="held", status_text="locked")], T0)
    assert paths(p) == [DISPATCH, HOLD]


def test_an_operation_never_sent_and_already_cancelled_is_not_mentioned() -> None:
    assert paths(plan(None, [op(), op("1000124", status="cancelled")], T0)) == [DISPATCH]


def test_what_the_gateway_would_refuse_is_left_out_and_named() -> None:
    p = plan(
        None,
        [
            op(),
            op("10 00", operation="0020"),  # a space in the order id
            op("1000125", quantity=Decimal(0)),
            op("1000126", unit="X" * 41),
            op(),  # reported twice
        ],
        T0,
    )
    body = p.messages[0].body
    assert isinstance(body, DispatchListBody)
    assert [o.order_id for o in body.operations] == ["1000123"]
    reasons = dict(p.skipped)
    assert "order_id" in reasons["10 00/0020/0"]
    assert "quantity" in reasons["1000125/0010/0"]
    assert "unit" in reasons["1000126/0010/0"]
    assert "twice" in reasons["1000123/0010/0"]
