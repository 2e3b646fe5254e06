"""The five order KPIs (edge.domain.order_kpis), computed by hand: on-time completion against
the due date (a date alone, a local time, an offset), the order cycle time from dispatch split
into queue, setup, running, down and waiting, schedule stability, and the age of the open
operations. Dispatch lists from before (not ``timed``) give no dispatch time and leave the
stored form as it was."""

from __future__ import annotations

import json
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from edge.domain.core import WorkCenter
from edge.domain.events import EventType
from edge.domain.inputs import (
    Action,
    DispatchList,
    MachineState,
    MachineStateChanged,
)
from edge.domain.order_kpis import (
    due_ms,
    operation_kpis,
    operation_payload,
    work_center_kpis,
    work_center_payload,
)
from edge.store.codec import operation_doc
from tests.domain.builders import act, at, count_good, key, make_rules, make_wc, ok, one, spec

A, B, C = "4711/0020", "4712/0020", "4713/0020"
S = 1000  # ms


def timed_wc(**rules: object) -> WorkCenter:
    wc = WorkCenter(make_rules(**rules))
    ok(
        wc,
        DispatchList(
            1,
            (
                spec("4711", "0020", 10, due="2024-03-04T12:00:00Z"),
                spec("4712", "0020", 5, due="2024-03-04"),
                spec("4713", "0020", 5, due=None),
            ),
            at(0),
            timed=True,
        ),
    )
    return wc


def test_one_operation_by_hand_and_the_work_center_around_it() -> None:
    wc = timed_wc()
    act(wc, Action.START_SETUP, 600)  # 10 min in the queue
    act(wc, Action.START_PRODUCTION, 900)  # 5 min setup
    count_good(wc, 10, 1500)
    ok(wc, MachineStateChanged("press1", MachineState.DOWN, at(1600)))
    ok(wc, MachineStateChanged("press1", MachineState.RUNNING, at(1720)))  # 2 min down
    act(wc, Action.INTERRUPT, 1800)
    act(wc, Action.RESUME, 2100)  # 5 min interrupted
    # central moves B's due date (rescheduled) and only C's quantity (not rescheduled)
    ok(
        wc,
        DispatchList(
            2,
            (
                spec("4711", "0020", 10, due="2024-03-04T12:00:00Z"),
                spec("4712", "0020", 5, due="2024-03-06"),
                spec("4713", "0020", 8, due=None),
            ),
            at(2200),
            timed=True,
        ),
    )
    out = act(wc, Action.COMPLETE, 2400)
    done = one(out, EventType.OPERATION_KPIS)
    assert done.op == A
    assert done.data["cycle_s"] == 2400.0
    assert (done.data["queue_s"], done.data["running_s"]) == (600.0, 1080.0)
    assert (done.data["good"], done.data["scrap"], done.data["target_qty"]) == (10, 0, 10)
    assert done.data["on_time"] is True
    assert done.data["quality_ratio"] == 1.0
    assert done.data["effectiveness"] == round(10 * 10 / 1080, 4)  # 10 parts of 10 s in 1080 s
    assert done.data["setup_rate"] == round(300 / 1380, 4)
    assert done.data["technical_efficiency"] == round(1080 / 1200, 4)  # the stop had no reason
    assert "wip_age_s" not in done.data

    f = operation_kpis(wc, wc.operations[key(A)], at(3000))
    assert f.status == "completed"
    assert f.cycle_ms == 2400 * S
    assert (f.queue_ms, f.setup_ms, f.running_ms, f.down_ms, f.waiting_ms) == (
        600 * S,
        300 * S,
        1080 * S,  # 10:15-10:26:40, 10:28:40-10:30, 10:35-10:40
        120 * S,
        300 * S,
    )
    assert f.value_add_ratio == 0.45
    assert f.on_time is True
    assert f.lateness_ms == -80 * 60 * S  # done 10:40, due 12:00
    assert f.wip_age_ms is None
    assert f.rescheduled is False

    b = operation_kpis(wc, wc.operations[key(B)], at(3000))
    assert b.rescheduled is True
    assert b.due_ms == due_ms("2024-03-07T00:00:00Z", "UTC")  # a date: by the end of it
    assert b.on_time is None  # not completed: not late either
    assert b.wip_age_ms == 3000 * S
    assert b.queue_ms == 3000 * S
    assert b.cycle_ms == 3000 * S
    assert wc.operations[key(C)].rescheduled is False

    w = work_center_kpis(wc, at(3000))
    assert (w.completed, w.with_due, w.on_time, w.on_time_rate) == (1, 1, 1, 1.0)
    assert w.cycle_ms_median == 2400 * S
    assert w.value_add_ratio == 0.45
    assert (w.dispatched, w.rescheduled) == (3, 1)
    assert w.schedule_stability == 2 / 3
    assert (w.wip, w.wip_age_ms_max, w.wip_age_ms_median) == (2, 3000 * S, 3000 * S)
    assert work_center_payload(w)["schedule_stability"] == 0.6667
    payload = operation_payload(f)
    assert payload["cycle_s"] == 2400.0
    assert payload["lateness_s"] == -4800.0
    json.dumps(payload)


def test_late_against_a_local_due_time() -> None:
    """A due date without an offset is the work center's local time: 10:30 in Berlin is
    09:30 UTC, so an operation completed at 10:01 UTC is 31 minutes late."""
    wc = WorkCenter(make_rules(timezone="Europe/Berlin"))
    late = spec("4711", "0020", 5, due="2024-03-04T10:30:00")
    ok(wc, DispatchList(1, (late,), at(-60), timed=True))
    act(wc, Action.START_PRODUCTION, 0)
    count_good(wc, 5, 60)
    act(wc, Action.COMPLETE, 61)
    f = operation_kpis(wc, wc.operations[key(A)], at(100))
    assert f.on_time is False
    assert f.lateness_ms == 31 * 60 * S + 1 * S
    assert f.queue_ms == 60 * S
    w = work_center_kpis(wc, at(100))
    assert (w.with_due, w.on_time, w.on_time_rate) == (1, 0, 0.0)


def test_due_dates_that_cannot_be_read_are_no_due_date() -> None:
    for text in ("", "  ", "next week", "2024-13-01", "2024-03-04T25:00:00", None):
        assert due_ms(text, "UTC") is None
    assert due_ms("2024-03-04T12:00:00Z", "Not/AZone") is None
    assert due_ms("2024-03-04T12:00:00+01:00", "UTC") == due_ms("2024-03-04T11:00:00Z", "UTC")


def test_dispatch_lists_from_before_keep_no_dispatch_time_and_store_as_before() -> None:
    wc = make_wc(spec("4711", "0020", 10, due="2024-03-04T12:00:00Z"))  # not timed
    op = wc.operations[key(A)]
    assert op.dispatched_at is None
    doc = json.loads(operation_doc(op))
    assert "dispatched_at" not in doc
    assert "rescheduled" not in doc
    f = operation_kpis(wc, op, at(100))
    assert (f.cycle_ms, f.queue_ms, f.wip_age_ms) == (None, None, None)
    w = work_center_kpis(wc, at(100))
    assert (w.dispatched, w.schedule_stability, w.wip) == (0, None, 0)
    # a timed one stores its time and, once changed, that it was rescheduled
    ok(
        wc,
        DispatchList(2, (spec("4711", "0020", 10, due="2024-03-05T12:00:00Z"),), at(5), timed=True),
    )
    assert op.rescheduled is False  # not first dispatched by a timed list: it stays unknown
    timed = timed_wc()
    ok(
        timed,
        DispatchList(2, (spec("4711", "0020", 10, sequence=5),), at(5), timed=True),
    )
    doc = json.loads(operation_doc(timed.operations[key(A)]))
    assert doc["dispatched_at"] == {"wall_ms": at(0).wall_ms, "mono_ms": at(0).mono_ms}
    assert doc["rescheduled"] is True


@settings(max_examples=60, deadline=None)
@given(
    queue=st.integers(0, 3600),
    setup=st.integers(0, 3600),
    run=st.integers(60, 3600),
    down=st.integers(0, 600),
    wait=st.integers(0, 3600),
)
def test_the_parts_always_add_up_to_the_cycle_time(
    queue: int, setup: int, run: int, down: int, wait: int
) -> None:
    wc = timed_wc()
    t = queue
    act(wc, Action.START_SETUP, t)
    t += setup
    act(wc, Action.START_PRODUCTION, t)
    t += run
    if down:
        ok(wc, MachineStateChanged("press1", MachineState.DOWN, at(t)))
        t += down
        ok(wc, MachineStateChanged("press1", MachineState.RUNNING, at(t)))
    if wait:
        act(wc, Action.INTERRUPT, t)
        t += wait
        act(wc, Action.RESUME, t)
    for now in (t, t + 10):
        f = operation_kpis(wc, wc.operations[key(A)], at(now))
        parts = f.queue_ms, f.setup_ms, f.running_ms, f.down_ms, f.waiting_ms
        assert f.cycle_ms == now * S
        assert sum(p or 0 for p in parts) == f.cycle_ms
        assert 0 <= (f.value_add_ratio or 0) <= 1
        assert f.wip_age_ms == now * S


def test_the_wip_value_of_open_operations_with_a_standard_cost() -> None:
    """Open operations with a standard cost per unit: the good parts made so far at that cost;
    one without a cost has none (and leaves the stored form as it was); a finished one none."""
    wc = WorkCenter(make_rules())
    costed = spec("4711", "0020", 10, std_cost=Decimal("2.5"))
    plain = spec("4712", "0020", 10)
    ok(wc, DispatchList(1, (costed, plain), at(0), timed=True))
    act(wc, Action.START_PRODUCTION, 10)
    count_good(wc, 4, 60)
    f = operation_kpis(wc, wc.operations[key(A)], at(100))
    assert f.wip_value == Decimal(10)
    assert operation_payload(f)["wip_value"] == 10
    assert operation_kpis(wc, wc.operations[key(B)], at(100)).wip_value is None
    w = work_center_kpis(wc, at(100))
    assert (w.wip_value, w.wip_valued, w.wip) == (Decimal(10), 1, 2)
    assert "std_cost" not in json.loads(operation_doc(wc.operations[key(B)]))["spec"]
    assert json.loads(operation_doc(wc.operations[key(A)]))["spec"]["std_cost"] == "2.5"
    # a cost out of bounds is refused naming the field
    out = wc.apply(DispatchList(2, (spec("4711", "0020", 10, std_cost=Decimal(-1)),), at(101)))
    assert out.rejection is not None
    assert out.rejection.field == "operations[0].std_cost"
