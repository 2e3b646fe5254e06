"""rules.md §4: stops — no-count stops driven by ticks, machine-state stops, reasons."""

from __future__ import annotations

import pytest

from edge.domain.core import WorkCenter
from edge.domain.events import Event, EventType, RejectionCode
from edge.domain.inputs import (
    Action,
    MachineState,
    MachineStateChanged,
    Pulses,
    SetStopReason,
    Tick,
)

from .builders import (
    OPERATOR,
    SUPERVISOR,
    act,
    clock,
    events_of,
    key,
    make_wc,
    ok,
    one,
    pulse_source,
    rejected,
    spec,
)

OP = key("4711/0020")


def press() -> WorkCenter:
    """Standard cycle 10 s, k = 3, micro-stop threshold 120 s (the defaults), running at 10:00."""
    wc = make_wc(spec(std_cycle_s=10.0), sources=(pulse_source("press1"),))
    assert (wc.rules.no_count_factor, wc.rules.micro_stop_s) == (3.0, 120.0)
    act(wc, Action.START_PRODUCTION, -5)
    return wc


def run_until(wc: WorkCenter, start: str, end: str, counts: set[str]) -> list[Event]:
    """Tick every 10 s from ``start`` to ``end``; a count comes in at each time in ``counts``."""
    events: list[Event] = []
    t = clock(start)
    stop_at = clock(end)
    while t.mono_ms <= stop_at.mono_ms:
        hhmmss = t.wall().strftime("%H:%M:%S")
        if hhmmss in counts:
            events.extend(ok(wc, Pulses("press1", 1, t)).events)
        events.extend(ok(wc, Tick(t)).events)
        t = t.after_ms(10_000)
    return events


def of(events: list[Event], type_: EventType) -> list[Event]:
    return [e for e in events if e.type is type_]


def test_the_stop_example_micro_stop_then_a_stop_with_reason_pending() -> None:
    wc = press()
    events = run_until(
        wc, "10:00:00", "10:05:30", {"10:00:00", "10:00:10", "10:01:00", "10:05:10", "10:05:20"}
    )
    started = of(events, EventType.STOP_STARTED)
    ended = of(events, EventType.STOP_ENDED)
    assert [e.at for e in started] == [clock("10:00:10"), clock("10:01:00")]  # backdated
    assert [e.at for e in ended] == [clock("10:01:00"), clock("10:05:10")]
    assert [e.data["duration_s"] for e in ended] == [50, 250]
    assert [e.data["micro"] for e in ended] == [True, False]
    micro, stop = wc.stops.values()
    assert micro.micro
    assert micro.reason is None
    assert not micro.reason_requested
    assert (micro.start, micro.end) == (clock("10:00:10"), clock("10:01:00"))
    assert not stop.micro
    assert (stop.start, stop.end) == (clock("10:01:00"), clock("10:05:10"))
    # Reason pending: asked for once, still open after the stop ended ...
    requested = of(events, EventType.STOP_REASON_REQUESTED)
    assert [e.data["stop_id"] for e in requested] == [stop.stop_id]
    assert stop.reason is None
    assert stop.reason_requested
    # ... until given.
    out = ok(wc, SetStopReason("M01", OPERATOR, clock("10:06:00")))
    given = one(out, EventType.STOP_REASON_SET)
    assert (given.data["stop_id"], given.data["reason"]) == (stop.stop_id, "M01")
    assert given.actor == OPERATOR
    assert stop.reason == "M01"


def test_no_stop_while_counts_come_within_k_cycles() -> None:
    wc = press()
    every_30s = {f"10:0{m}:{s:02d}" for m in range(3) for s in (0, 30)}
    events = run_until(wc, "10:00:00", "10:02:50", every_30s)
    assert of(events, EventType.STOP_STARTED) == []


def test_down_time_of_the_stop_is_booked_to_the_operation() -> None:
    wc = press()
    run_until(wc, "10:00:00", "10:05:10", {"10:00:00", "10:01:00", "10:05:10"})
    te = wc.time_elements(wc.operations[OP], clock("10:05:10"))
    # Micro-stop 10:00:00-10:01:00 (60 s > 3 x 10 s) and the stop 10:01:00-10:05:10.
    assert te.down_by_reason_ms == {"MICRO": 60_000, "PENDING": 250_000}
    assert te.down_ms == 310_000
    assert te.production_ms == 5_000  # started 09:59:55, last count before a stop 10:00:00


def test_machine_state_down_opens_a_stop_and_running_ends_it() -> None:
    wc = press()
    out = ok(wc, MachineStateChanged("press1", MachineState.DOWN, clock("10:00:30")))
    started = one(out, EventType.STOP_STARTED)
    assert started.data["origin"] == "machine_state"
    assert started.actor == "machine:press1"
    out = ok(wc, MachineStateChanged("press1", MachineState.RUNNING, clock("10:04:30")))
    ended = one(out, EventType.STOP_ENDED)
    assert ended.data["duration_s"] == 240
    one(out, EventType.STOP_REASON_REQUESTED)


def test_a_repeated_machine_state_changes_nothing() -> None:
    wc = press()
    ok(wc, MachineStateChanged("press1", MachineState.DOWN, clock("10:00:30")))
    out = ok(wc, MachineStateChanged("press1", MachineState.DOWN, clock("10:00:40")))
    assert out.events == ()
    assert len(wc.stops) == 1


def test_a_mapped_alarm_assigns_the_reason_and_an_operator_can_still_change_it() -> None:
    wc = press()
    out = ok(wc, MachineStateChanged("press1", MachineState.DOWN, clock("10:00:30"), alarm="E42"))
    auto = one(out, EventType.STOP_REASON_SET)
    assert (auto.data["reason"], auto.data["source"]) == ("M01", "alarm")
    out = ok(wc, MachineStateChanged("press1", MachineState.RUNNING, clock("10:04:30")))
    assert [e.type for e in out.events if e.type is EventType.STOP_REASON_REQUESTED] == []
    (stop,) = wc.stops.values()
    assert stop.reason_source == "alarm"
    out = ok(wc, SetStopReason("M02", OPERATOR, clock("10:05:00"), stop.stop_id))
    change = one(out, EventType.STOP_RECLASSIFIED)
    assert (change.data["old_reason"], change.data["new_reason"]) == ("M01", "M02")
    assert change.actor == OPERATOR
    assert stop.reason == "M02"


def test_an_unmapped_alarm_leaves_the_reason_pending() -> None:
    wc = press()
    out = ok(wc, MachineStateChanged("press1", MachineState.DOWN, clock("10:00:30"), alarm="E99"))
    assert [e for e in out.events if e.type is EventType.STOP_REASON_SET] == []


def test_reclassifying_a_past_stop_names_old_and_new_reason_and_the_actor() -> None:
    wc = press()
    ok(wc, MachineStateChanged("press1", MachineState.DOWN, clock("10:00:30")))
    ok(wc, SetStopReason("M01", OPERATOR, clock("10:01:00")))
    ok(wc, MachineStateChanged("press1", MachineState.RUNNING, clock("10:04:30")))
    (stop,) = wc.stops.values()
    # After the fact, an operator's reason is changed by a supervisor.
    rej = rejected(wc, SetStopReason("M02", OPERATOR, clock("10:10:00"), stop.stop_id))
    assert rej.code is RejectionCode.SUPERVISOR_ONLY
    out = ok(wc, SetStopReason("M02", SUPERVISOR, clock("10:10:00"), stop.stop_id))
    change = one(out, EventType.STOP_RECLASSIFIED)
    assert change.data == {
        "stop_id": stop.stop_id,
        "old_reason": "M01",
        "new_reason": "M02",
    }
    assert change.actor == SUPERVISOR


def test_time_elements_use_the_latest_reason_of_a_stop() -> None:
    wc = press()
    ok(wc, MachineStateChanged("press1", MachineState.DOWN, clock("10:00:30")))
    ok(wc, MachineStateChanged("press1", MachineState.RUNNING, clock("10:04:30")))
    ok(wc, SetStopReason("M01", OPERATOR, clock("10:05:00")))
    op = wc.operations[OP]
    assert wc.time_elements(op).down_by_reason_ms == {"M01": 240_000}
    (stop,) = wc.stops.values()
    ok(wc, SetStopReason("BRK", SUPERVISOR, clock("10:06:00"), stop.stop_id))
    te = wc.time_elements(op)
    assert te.down_by_reason_ms == {"BRK": 240_000}
    assert (te.down_planned_ms, te.down_unplanned_ms) == (240_000, 0)


@pytest.mark.parametrize("code", ["XX", "", "m01"])
def test_a_reason_outside_the_reason_set_is_rejected(code: str) -> None:
    wc = press()
    ok(wc, MachineStateChanged("press1", MachineState.DOWN, clock("10:00:30")))
    rej = rejected(wc, SetStopReason(code, OPERATOR, clock("10:01:00")))
    assert rej.code is RejectionCode.UNKNOWN_REASON
    assert (rej.field, rej.value) == ("reason", code)
    assert repr(code) in rej.message


def test_an_unknown_stop_id_is_rejected() -> None:
    wc = press()
    rej = rejected(wc, SetStopReason("M01", OPERATOR, clock("10:01:00"), "S999999"))
    assert (rej.field, rej.value) == ("stop_id", "S999999")
    assert "S999999" in rej.message


def test_a_no_count_stop_ends_when_the_operation_completes() -> None:
    """Nothing runs any more, so "no count while running" cannot go on after completion."""
    wc = make_wc(spec())
    act(wc, Action.START_PRODUCTION, 0)
    ok(wc, Tick(clock("10:01:00")))
    assert wc.open_stop is not None
    done = act(wc, Action.COMPLETE, 90)
    ended = one(done, EventType.STOP_ENDED)
    assert ended.data["stop_id"] == "S000001"
    assert wc.open_stop is None
    te = wc.time_elements(wc.operations[key("4711/0020")])
    assert te.total_ms == 90_000


def test_idle_is_a_stop_only_while_an_operation_runs() -> None:
    wc = make_wc(spec())
    ok(wc, MachineStateChanged("press1", MachineState.IDLE, clock("10:00")))
    assert wc.open_stop is None  # no order running: waiting for work is not down time
    act(wc, Action.START_PRODUCTION, 60)
    ok(wc, MachineStateChanged("press1", MachineState.RUNNING, clock("10:01:10")))
    ok(wc, MachineStateChanged("press1", MachineState.IDLE, clock("10:01:20")))
    assert wc.open_stop is not None
    act(wc, Action.COMPLETE, 90)
    assert wc.open_stop is None  # the idle stop ended with the operation
    ok(wc, MachineStateChanged("press1", MachineState.DOWN, clock("10:02:00")))
    assert wc.open_stop is not None  # down is a stop even without an order: maintenance needs it
    assert wc.open_stop.start == clock("10:02:00")


@pytest.mark.parametrize(
    "action", [Action.COMPLETE, Action.CANCEL, Action.HOLD, Action.SPLIT, Action.INTERRUPT]
)
def test_an_idle_stop_ends_when_nothing_runs_any_more(action: Action) -> None:
    """rules.md §4: idle is a loss only while an operation runs; README: a state stop that
    began from idle ends when nothing runs any more, like a no-count stop."""
    wc = make_wc(spec())
    act(wc, Action.START_PRODUCTION, 0)
    ok(wc, MachineStateChanged("press1", MachineState.RUNNING, clock("10:00:10")))
    ok(wc, MachineStateChanged("press1", MachineState.IDLE, clock("10:01:00")))
    stop = wc.open_stop
    assert stop is not None
    out = act(wc, action, 300, actor=SUPERVISOR)
    ended = one(out, EventType.STOP_ENDED)
    assert ended.data["stop_id"] == stop.stop_id
    assert ended.data["duration_s"] == 240  # 10:01:00 to 10:05:00, not open for ever
    assert wc.open_stop is None
    assert stop.end == clock("10:05:00")
    # The stop ends before the operation's state change is told, in one outcome.
    types = [e.type for e in out.events]
    assert types.index(EventType.STOP_ENDED) < types.index(EventType.OPERATION_STATE_CHANGED)
    # Later idle time with nothing running is no stop; the machine waits for work.
    ok(wc, MachineStateChanged("press1", MachineState.RUNNING, clock("10:06:00")))
    ok(wc, MachineStateChanged("press1", MachineState.IDLE, clock("10:07:00")))
    assert wc.open_stop is None


def test_a_down_stop_stays_open_when_the_operation_completes() -> None:
    wc = make_wc(spec())
    act(wc, Action.START_PRODUCTION, 0)
    ok(wc, MachineStateChanged("press1", MachineState.DOWN, clock("10:01:00"), "E42"))
    stop = wc.open_stop
    assert stop is not None
    out = act(wc, Action.COMPLETE, 300)
    assert events_of(out, EventType.STOP_ENDED) == []
    assert wc.open_stop is stop  # a broken machine is down whether or not an order runs
    ok(wc, MachineStateChanged("press1", MachineState.RUNNING, clock("10:10:00")))
    assert stop.end == clock("10:10:00")


def test_an_idle_stop_stays_while_another_operation_still_runs() -> None:
    wc = make_wc(spec(), spec(operation="0030"), family_tool=True)
    act(wc, Action.START_PRODUCTION, 0)
    act(wc, Action.START_PRODUCTION, 1, op="4711/0030")
    ok(wc, MachineStateChanged("press1", MachineState.IDLE, clock("10:01:00")))
    assert wc.open_stop is not None
    act(wc, Action.COMPLETE, 300)
    assert wc.open_stop is not None  # 4711/0030 still runs: the machine idling is its loss
    out = act(wc, Action.COMPLETE, 360, op="4711/0030")
    assert one(out, EventType.STOP_ENDED).data["duration_s"] == 300
