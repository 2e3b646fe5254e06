"""Machine hours and maintenance (edge.domain.machine): running time from the machine state (or
from production without one), starts, cycles and parts kept across counter resets and a
restart from the projections, service intervals that fall due once and are done by a
supervisor, maintenance requests from a stop, and the bad input a panel or central may send."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.domain.andon import Lamp, Signal, signalled
from edge.domain.core import WorkCenter
from edge.domain.events import EventType, RejectionCode
from edge.domain.inputs import (
    Action,
    CounterReading,
    MachineState,
    MachineStateChanged,
    Pulses,
    RequestMaintenance,
    RulesApplied,
    ServiceDone,
    Tick,
)
from edge.domain.machine import run_ms
from edge.domain.rules import CountKind, CountSource, ServiceInterval, ServiceMeasure, Shift
from edge.store import codec

from .builders import (
    CENTRAL,
    OPERATOR,
    SUPERVISOR,
    act,
    at,
    events_of,
    make_rules,
    make_wc,
    ok,
    one,
    pulse_source,
    rejected,
    spec,
)

OIL = ServiceInterval("lubrication", ServiceMeasure.HOURS, Decimal(1), "oil the slide")
DIE = ServiceInterval("die", ServiceMeasure.CYCLES, Decimal(100))
STARTS = ServiceInterval("clutch", ServiceMeasure.STARTS, Decimal(3))


def counted(*specs: object, **kw: object) -> WorkCenter:
    rules: dict[str, object] = {"machine_hours": True}
    rules.update(kw)
    return make_wc(*specs, **rules)  # type: ignore[arg-type]


def state(wc: WorkCenter, s: MachineState, seconds: float) -> None:
    ok(wc, MachineStateChanged("plc", s, at(seconds)))


def service_due(wc: WorkCenter) -> bool:
    return wc.andon.maintenance_due


def hours(wc: WorkCenter, seconds: float) -> object:
    totals = wc.machine_hours(at(seconds))
    assert totals is not None
    return totals["hours"]


def test_running_time_and_starts_follow_the_machine_state_and_read_live() -> None:
    wc = counted(spec())
    state(wc, MachineState.RUNNING, 0)
    assert hours(wc, 900) == "0.25"  # live: no input since it started
    state(wc, MachineState.DOWN, 1800)
    assert hours(wc, 2000) == "0.5"  # stopped: the clock stands
    state(wc, MachineState.RUNNING, 2400)
    state(wc, MachineState.IDLE, 3600)
    totals = wc.machine_hours(at(7200))
    assert totals is not None
    assert totals["hours"] == "0.833"  # 1,800 s + 1,200 s
    assert totals["starts"] == 2
    assert totals["running"] is False


def test_without_a_state_source_the_machine_runs_while_an_operation_produces() -> None:
    wc = counted(spec())
    act(wc, Action.START_SETUP, 0)
    act(wc, Action.START_PRODUCTION, 600)  # setup is not running
    act(wc, Action.INTERRUPT, 600 + 1800)
    totals = wc.machine_hours(at(5000))
    assert totals is not None
    assert (totals["hours"], totals["starts"]) == ("0.5", 1)


def test_cycles_and_parts_survive_a_counter_reset_and_count_each_stroke_once() -> None:
    wc = counted(
        spec(parts_per_signal=Decimal(4), std_cycle_s=1.0),
        sources=(CountSource("press1", CountKind.GOOD),),
    )
    act(wc, Action.START_PRODUCTION, 0)
    ok(wc, CounterReading("press1", 0, at(1)))
    ok(wc, CounterReading("press1", 50, at(201)))
    out = ok(wc, CounterReading("press1", 3, at(301)))  # the PLC reset its counter
    assert events_of(out, EventType.COUNTER_RESET)
    ok(wc, CounterReading("press1", 13, at(351)))
    totals = wc.machine_hours(at(400))
    assert totals is not None
    assert (totals["cycles"], totals["parts"]) == (63, 252)
    assert wc.operations[next(iter(wc.operations))].counted.good == 252


def test_a_scrap_counter_beside_a_total_counter_adds_no_cycle() -> None:
    total = pulse_source("total", CountKind.TOTAL)
    scrap = pulse_source("scrap", CountKind.SCRAP)
    wc = counted(spec(), sources=(total, scrap))
    act(wc, Action.START_PRODUCTION, 0)
    ok(wc, Pulses("total", 10, at(10)))
    ok(wc, Pulses("scrap", 2, at(11)))
    totals = wc.machine_hours(at(20))
    assert totals is not None
    assert (totals["cycles"], totals["parts"]) == (10, 10)


def test_with_no_operation_active_each_signal_is_one_part() -> None:
    wc = counted(spec(parts_per_signal=Decimal(4)), sources=(pulse_source("press1"),))
    ok(wc, Pulses("press1", 7, at(10)))  # unassigned production
    totals = wc.machine_hours(at(20))
    assert totals is not None
    assert (totals["cycles"], totals["parts"]) == (7, 7)


def test_an_hours_interval_falls_due_once_and_a_supervisor_does_it() -> None:
    wc = counted(spec(), service=(OIL,))
    state(wc, MachineState.RUNNING, 0)
    assert events_of(wc.apply(Tick(at(3599))), EventType.MAINTENANCE_DUE) == []
    out = wc.apply(Tick(at(3600)))
    due = one(out, EventType.MAINTENANCE_DUE)
    assert due.data["name"] == "lubrication"
    assert due.data["since_done"] == 1  # hours, to three places
    assert due.data["text"] == "oil the slide"
    assert events_of(wc.apply(Tick(at(3700))), EventType.MAINTENANCE_DUE) == []
    assert service_due(wc)
    lights = signalled(wc.andon, Signal.NONE, Signal.NONE, Signal.YELLOW)
    assert lights.yellow is Lamp.ON  # the machine runs: green, and yellow for the service

    rej = rejected(wc, ServiceDone("lubrication", OPERATOR, at(3800)))
    assert rej.code is RejectionCode.SUPERVISOR_ONLY
    rej = rejected(wc, ServiceDone("lubricaton", SUPERVISOR, at(3800)))
    assert (rej.code, rej.field, rej.value) == (
        RejectionCode.UNKNOWN_SERVICE,
        "name",
        "lubricaton",
    )
    assert "lubrication" in rej.message

    done = one(
        ok(wc, ServiceDone("lubrication", SUPERVISOR, at(3960), "oiled")),
        EventType.MAINTENANCE_DONE,
    )
    assert done.data["since_done"] == "1.1"
    assert done.data["due_since"] is not None
    assert not service_due(wc)
    # Counted again from the service: due one running hour later, not before.
    assert events_of(wc.apply(Tick(at(3960 + 3599))), EventType.MAINTENANCE_DUE) == []
    assert one(wc.apply(Tick(at(3960 + 3600))), EventType.MAINTENANCE_DUE)


def test_central_may_say_a_service_was_done() -> None:
    wc = counted(spec(), service=(OIL,))
    state(wc, MachineState.RUNNING, 0)
    wc.apply(Tick(at(3600)))
    assert one(ok(wc, ServiceDone("lubrication", CENTRAL, at(3601))), EventType.MAINTENANCE_DONE)


def test_a_cycles_interval_falls_due_at_the_count_that_reaches_it() -> None:
    wc = counted(spec(), sources=(pulse_source("press1"),), service=(DIE,))
    act(wc, Action.START_PRODUCTION, 0)
    assert events_of(ok(wc, Pulses("press1", 99, at(10))), EventType.MAINTENANCE_DUE) == []
    due = one(ok(wc, Pulses("press1", 5, at(20))), EventType.MAINTENANCE_DUE)
    assert (due.data["name"], due.data["measure"], due.data["since_done"]) == ("die", "cycles", 104)


def test_a_starts_interval_counts_starts() -> None:
    wc = counted(spec(), service=(STARTS,))
    for n in range(3):
        state(wc, MachineState.RUNNING, n * 100)
        if n < 2:
            state(wc, MachineState.IDLE, n * 100 + 50)
    assert service_due(wc)


def test_a_maintenance_request_from_a_stop_names_it_once() -> None:
    wc = counted(spec())
    act(wc, Action.START_PRODUCTION, 0)
    ok(wc, MachineStateChanged("plc", MachineState.DOWN, at(100), alarm="E42"))
    stop_id = wc.header.open_stop
    assert stop_id is not None
    out = ok(wc, RequestMaintenance(OPERATOR, at(130), stop_id, "hydraulic leak"))
    req = one(out, EventType.MAINTENANCE_REQUESTED)
    assert req.data["request_id"] == "M000001"
    assert (req.data["stop_id"], req.data["alarm"], req.data["stop_reason"]) == (
        stop_id,
        "E42",
        "M01",
    )
    assert req.data["note"] == "hydraulic leak"
    assert req.op == "4711/0020"
    rej = rejected(wc, RequestMaintenance(OPERATOR, at(140), stop_id))
    assert (rej.field, rej.value) == ("stop_id", stop_id)
    assert "M000001" in rej.message
    rej = rejected(wc, RequestMaintenance(OPERATOR, at(140), "S999999"))
    assert (rej.code, rej.field) == (RejectionCode.UNKNOWN_STOP, "stop_id")
    rej = rejected(wc, RequestMaintenance(OPERATOR, at(140)))
    assert rej.field == "note"
    again = one(
        ok(wc, RequestMaintenance(OPERATOR, at(150), None, "noise")),
        EventType.MAINTENANCE_REQUESTED,
    )
    assert (again.data["request_id"], again.data["stop_id"]) == ("M000002", None)


@pytest.mark.parametrize("note", ["", " ", "x" * 201])
def test_a_request_with_a_note_that_is_no_text_is_refused(note: str) -> None:
    wc = counted(spec())
    rej = rejected(wc, RequestMaintenance(OPERATOR, at(1), None, note))
    assert rej.field == "note"


def test_without_machine_hours_in_the_rules_nothing_is_counted() -> None:
    wc = make_wc(spec(), sources=(pulse_source("press1"),), service=(DIE,))
    act(wc, Action.START_PRODUCTION, 0)
    out = ok(wc, Pulses("press1", 500, at(10)))
    assert events_of(out, EventType.MAINTENANCE_DUE) == []
    assert wc.machine_hours(at(20)) is None
    assert "press1" not in wc.counters  # a pulse source keeps no counter row of its own
    rej = rejected(wc, ServiceDone("die", SUPERVISOR, at(30)))
    assert rej.code is RejectionCode.UNKNOWN_SERVICE


def test_counting_begins_with_the_first_rules_that_say_so() -> None:
    """A journal written before machine hours existed replays without them; the rules the
    new version applies at its start begin the count."""
    wc = make_wc(spec(), sources=(pulse_source("press1"),))
    act(wc, Action.START_PRODUCTION, 0)
    ok(wc, Pulses("press1", 40, at(10)))
    ok(
        wc,
        RulesApplied(
            make_rules(sources=(pulse_source("press1"),), machine_hours=True, service=(DIE,)),
            at(20),
        ),
    )
    ok(wc, Pulses("press1", 60, at(30)))
    totals = wc.machine_hours(at(40))
    assert totals is not None
    assert totals["cycles"] == 60
    assert totals["since"] == at(20).iso()
    assert totals["service"][0]["remaining"] == 40  # type: ignore[index]


def test_a_new_interval_counts_from_when_it_was_configured_and_a_dropped_one_goes() -> None:
    source = (pulse_source("press1"),)
    wc = counted(spec(), sources=source, service=(DIE,))
    act(wc, Action.START_PRODUCTION, 0)
    ok(wc, Pulses("press1", 80, at(10)))
    bigger = ServiceInterval("die", ServiceMeasure.CYCLES, Decimal(200))
    tool = ServiceInterval("tool", ServiceMeasure.PARTS, Decimal(50))
    rules = make_rules(sources=source, machine_hours=True, service=(bigger, tool))
    ok(wc, RulesApplied(rules, at(20)))
    out = ok(wc, Pulses("press1", 60, at(30)))
    # The die kept its 80 and now needs 200: not due at 140; the tool counts from 80: due at 50.
    assert [e.data["name"] for e in events_of(out, EventType.MAINTENANCE_DUE)] == ["tool"]
    ok(wc, RulesApplied(make_rules(sources=source, machine_hours=True, service=(tool,)), at(40)))
    assert wc.header.machine is not None
    assert set(wc.header.machine.service) == {"tool"}


def test_the_shift_change_publishes_the_machine_hours() -> None:
    shifts = (
        Shift("early", 6 * 60, 8 * 60),
        Shift("late", 14 * 60, 8 * 60),
        Shift("night", 22 * 60, 8 * 60),
    )
    wc = counted(spec(), shifts=shifts, service=(OIL,))
    wc.apply(Tick(at(0)))
    state(wc, MachineState.RUNNING, 10)
    out = wc.apply(Tick(at(4 * 3600 + 1)))  # 14:00:01, the late shift
    hours_ev = one(out, EventType.MACHINE_HOURS)
    assert hours_ev.data["shift"] == "2024-03-04/early"
    assert hours_ev.data["hours"] == "3.998"
    assert hours_ev.data["starts"] == 1
    assert [s["name"] for s in hours_ev.data["service"]] == ["lubrication"]  # type: ignore[attr-defined]
    types = [e.type for e in out.events]
    assert types.index(EventType.MACHINE_HOURS) < types.index(EventType.SHIFT_CHANGED)


def test_the_counts_are_kept_in_the_projections_across_a_restart() -> None:
    wc = counted(spec(), sources=(pulse_source("press1"),), service=(DIE,))
    act(wc, Action.START_PRODUCTION, 0)
    state(wc, MachineState.RUNNING, 0)
    ok(wc, Pulses("press1", 30, at(10)))
    docs = codec.all_docs(wc)
    restored = codec.restore(docs)
    assert restored is not None
    assert restored.machine_hours(at(100)) == wc.machine_hours(at(100))
    ok(restored, Pulses("press1", 80, at(110)))
    assert service_due(restored)


def test_a_counter_and_a_stop_stored_before_machine_hours_read_as_they_were_written() -> None:
    wc = make_wc(spec(), sources=(pulse_source("press1"),))
    act(wc, Action.START_PRODUCTION, 0)
    ok(wc, MachineStateChanged("plc", MachineState.DOWN, at(100)))
    docs = codec.all_docs(wc)
    for doc in docs["stop"].values():
        assert "maintenance_request" not in doc
    for doc in docs.get("counter", {}).values():
        assert "machine_cycles" not in doc
        assert "machine_parts" not in doc


@settings(max_examples=60, deadline=None)
@given(
    steps=st.lists(
        st.tuples(st.sampled_from(list(MachineState)), st.integers(min_value=1, max_value=10_000)),
        min_size=1,
        max_size=30,
    )
)
def test_running_time_is_the_sum_of_the_running_spans(
    steps: list[tuple[MachineState, int]],
) -> None:
    wc = counted()
    t = 0
    expected_ms = 0
    starts = 0
    previous: MachineState | None = None
    for s, gap in steps:
        if previous is MachineState.RUNNING:
            expected_ms += gap * 1000
        if s is MachineState.RUNNING and previous is not MachineState.RUNNING:
            starts += 1
        t += gap
        wc.apply(MachineStateChanged("plc", s, at(t)))
        previous = s
    assert wc.header.machine is not None
    # The first change creates the count (nothing ran before it was counted).
    first_running = steps[0][0] is MachineState.RUNNING
    totals = wc.machine_hours(at(t))
    assert totals is not None
    assert run_ms(wc.header.machine, at(t)) == expected_ms
    assert totals["starts"] == starts - (1 if first_running else 0)
