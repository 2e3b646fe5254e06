"""rules.md §3: counting — the counting table row by row, sources, units and unassigned parts."""

from __future__ import annotations

import copy
from decimal import Decimal

import pytest

from edge.domain.core import WorkCenter
from edge.domain.events import EventType
from edge.domain.inputs import (
    Action,
    AssignUnassigned,
    CounterReading,
    DeclareSetupGood,
    Pulses,
    RequestConfirmation,
    SourceRestarted,
)
from edge.domain.model import OperationStatus
from edge.domain.rules import CountKind, CountSource, SignalType

from .builders import (
    GOOD,
    OPERATOR,
    SUPERVISOR,
    act,
    at,
    events_of,
    key,
    make_wc,
    ok,
    one,
    pulse_source,
    spec,
)

OP = key("4711/0020")
ONE_PER_S = CountSource("press1", CountKind.GOOD, bits=32, max_rate_per_s=1.0)
ONE_PER_S_16 = CountSource("press1", CountKind.GOOD, bits=16, max_rate_per_s=1.0)


def running_with(*sources: CountSource, **rules_kw: object) -> WorkCenter:
    wc = make_wc(spec(), sources=sources, **rules_kw)
    act(wc, Action.START_PRODUCTION, -1)
    return wc


def feed(wc: WorkCenter, readings: list[tuple[int, float]], source: str = "press1") -> list:
    """Apply (value, seconds) readings; return all events."""
    events = []
    for value, seconds in readings:
        events.extend(ok(wc, CounterReading(source, value, at(seconds))).events)
    return events


def good(wc: WorkCenter) -> Decimal:
    return wc.operations[OP].counted.good


# ---------------------------------------------------------------- the counting table


def test_first_reading_ever_is_the_baseline() -> None:
    wc = running_with(ONE_PER_S)
    feed(wc, [(1200, 0)])
    assert good(wc) == 0


def test_normal_readings_count_their_deltas() -> None:
    wc = running_with(ONE_PER_S)
    feed(wc, [(1200, 0), (1205, 10), (1211, 20)])
    assert good(wc) == 11


def test_a_reset_counts_from_zero() -> None:
    wc = running_with(ONE_PER_S)
    events = feed(wc, [(1200, 0), (1205, 10), (3, 20), (8, 30)])
    assert good(wc) == 5 + 3 + 5
    reset = [e for e in events if e.type is EventType.COUNTER_RESET]
    assert len(reset) == 1
    assert (reset[0].data["previous"], reset[0].data["value"]) == (1205, 3)


def test_a_16_bit_wrap() -> None:
    wc = running_with(ONE_PER_S_16)
    events = feed(wc, [(65530, 0), (65534, 10), (4, 20)])
    assert good(wc) == 4 + 6
    assert [e.type for e in events].count(EventType.COUNTER_WRAPPED) == 1


def test_a_32_bit_wrap() -> None:
    wc = running_with(ONE_PER_S)
    feed(wc, [(4294967290, 0), (3, 10)])
    assert good(wc) == 9


def test_a_plausible_gap_counts_what_was_made() -> None:
    wc = running_with(ONE_PER_S)
    events = feed(wc, [(1200, 0), (1260, 120)])  # link down 10:00 to 10:02
    assert good(wc) == 60
    assert not any(e.type is EventType.COUNTER_DISCONTINUITY for e in events)


def test_an_implausible_gap_counts_nothing_and_reports_a_discontinuity() -> None:
    wc = running_with(ONE_PER_S)
    events = feed(wc, [(1200, 0), (9000, 120)])
    assert good(wc) == 0
    (gap,) = [e for e in events if e.type is EventType.COUNTER_DISCONTINUITY]
    assert (gap.data["previous"], gap.data["value"]) == (1200, 9000)
    assert gap.data["source"] == "press1"
    # 9000 is the new baseline: counting goes on from there.
    feed(wc, [(9004, 130)])
    assert good(wc) == 4


def test_server_restart_counts_a_plausible_first_value_from_zero() -> None:
    wc = running_with(ONE_PER_S)
    feed(wc, [(1200, 0)])
    out = ok(wc, SourceRestarted("press1", at(30)))
    one(out, EventType.SOURCE_RESTARTED)
    feed(wc, [(40, 90)])  # 40 <= 60 s since the restart at 1/s
    assert good(wc) == 40


def test_server_restart_with_an_implausible_first_value_is_a_discontinuity() -> None:
    wc = running_with(ONE_PER_S)
    feed(wc, [(1200, 0)])
    ok(wc, SourceRestarted("press1", at(30)))
    events = feed(wc, [(5000, 90)])
    assert good(wc) == 0
    (gap,) = [e for e in events if e.type is EventType.COUNTER_DISCONTINUITY]
    assert gap.data["value"] == 5000


def test_gateway_restart_restores_the_last_reading_and_applies_the_gap_rule() -> None:
    wc = running_with(ONE_PER_S)
    feed(wc, [(1200, 0)])
    # The daemon goes down: the store keeps the rows; 5 minutes later they are loaded again.
    restored = WorkCenter.restore(
        copy.deepcopy(wc.header),
        copy.deepcopy(list(wc.operations.values())),
        copy.deepcopy(list(wc.counters.values())),
        copy.deepcopy(list(wc.stops.values())),
        copy.deepcopy(list(wc.confirmations.values())),
        copy.deepcopy(list(wc.unassigned.values())),
        copy.deepcopy(list(wc.shift_book.shifts.values())),
    )
    assert [op.key for op in restored.active] == [OP]
    feed(restored, [(1350, 300)])
    assert good(restored) == 150


def test_gateway_restart_on_the_same_instance_after_5_minutes() -> None:
    wc = running_with(ONE_PER_S)
    feed(wc, [(1200, 0), (1350, 300)])
    assert good(wc) == 150


def test_a_duplicate_reading_counts_nothing() -> None:
    wc = running_with(ONE_PER_S)
    feed(wc, [(1205, 0)])
    out = ok(wc, CounterReading("press1", 1205, at(1)))
    assert out.events == ()
    assert good(wc) == 0


# ---------------------------------------------------------------- sources and units


def test_parts_per_signal_converts_signals_to_the_operation_unit() -> None:
    wc = make_wc(spec(parts_per_signal=Decimal(4)), sources=(ONE_PER_S,))
    act(wc, Action.START_PRODUCTION, -1)
    feed(wc, [(100, 0), (105, 10)])
    assert good(wc) == 20


def test_parts_per_signal_may_be_fractional() -> None:
    wc = make_wc(spec(parts_per_signal=Decimal("0.25"), unit="KG"), sources=(ONE_PER_S,))
    act(wc, Action.START_PRODUCTION, -1)
    feed(wc, [(100, 0), (103, 10)])
    assert good(wc) == Decimal("0.75")


def test_only_the_authoritative_source_counts() -> None:
    check = CountSource("opcua", CountKind.GOOD, authoritative=False, max_rate_per_s=1.0)
    wc = running_with(ONE_PER_S, check)
    feed(wc, [(100, 0), (110, 20)], source="opcua")
    assert good(wc) == 0
    assert wc.counters["opcua"].last_value == 110  # still tracked, as a cross-check
    feed(wc, [(500, 0), (507, 20)])
    assert good(wc) == 7


def test_pulses_count_and_need_no_reset_logic() -> None:
    wc = running_with(pulse_source("gpio1"))
    ok(wc, Pulses("gpio1", 3, at(10)))
    ok(wc, Pulses("gpio1", 2, at(20)))
    assert good(wc) == 5


def test_pulses_from_a_non_authoritative_source_do_not_count() -> None:
    wc = running_with(pulse_source("gpio1"), pulse_source("gpio2", authoritative=False))
    out = ok(wc, Pulses("gpio2", 3, at(10)))
    assert out.events == ()
    assert good(wc) == 0


def test_a_scrap_counter_books_machine_scrap() -> None:
    wc = running_with(pulse_source("gpio1"), pulse_source("bad", CountKind.SCRAP))
    ok(wc, Pulses("gpio1", 10, at(10)))
    ok(wc, Pulses("bad", 2, at(20)))
    op = wc.operations[OP]
    assert op.counted.good == 10
    assert op.counted.scrap == {"MACHINE": 2}


def test_total_and_scrap_counters_give_good_as_the_difference() -> None:
    wc = running_with(pulse_source("all", CountKind.TOTAL), pulse_source("bad", CountKind.SCRAP))
    ok(wc, Pulses("all", 10, at(10)))
    ok(wc, Pulses("bad", 2, at(20)))
    op = wc.operations[OP]
    assert op.counted.good == 8
    assert op.counted.scrap == {"MACHINE": 2}


# ---------------------------------------------------------------- unassigned production


def test_counts_with_no_active_operation_are_unassigned_production() -> None:
    wc = make_wc(spec(), sources=(ONE_PER_S,))
    events = feed(wc, [(100, 0), (104, 10), (110, 20)])
    opened = [e for e in events if e.type is EventType.UNASSIGNED_PRODUCTION]
    assert [e.data["phase"] for e in opened] == ["opened"]
    (record,) = wc.unassigned.values()
    assert record.tally.good == 10
    assert (record.start, record.end) == (at(10), at(20))
    assert good(wc) == 0
    # Starting an operation closes the record with its time range; it is not assigned by itself.
    out = act(wc, Action.START_PRODUCTION, 30)
    closed = one(out, EventType.UNASSIGNED_PRODUCTION)
    assert closed.data["phase"] == "closed"
    assert closed.data["yield_qty"] == 10
    assert good(wc) == 0


def test_counts_while_held_are_unassigned_and_a_supervisor_assigns_them() -> None:
    wc = running_with(ONE_PER_S)
    feed(wc, [(100, 0), (105, 10)])
    act(wc, Action.HOLD, 20)
    feed(wc, [(112, 30)])
    assert good(wc) == 5
    (record,) = wc.unassigned.values()
    assert record.tally.good == 7
    out = ok(wc, AssignUnassigned(record.unassigned_id, "4711/0020", SUPERVISOR, at(40)))
    assigned = one(out, EventType.UNASSIGNED_ASSIGNED)
    assert assigned.actor == SUPERVISOR
    assert good(wc) == 12
    # ... and it flows into the operation's next confirmation.
    out = ok(wc, RequestConfirmation(OPERATOR, at(50), "4711/0020"))
    assert one(out, EventType.CONFIRMATION_CREATED).data["yield_qty"] == 12


def test_only_a_supervisor_assigns_unassigned_production() -> None:
    from .builders import rejected

    wc = make_wc(spec(), sources=(ONE_PER_S,))
    feed(wc, [(100, 0), (104, 10)])
    (record,) = wc.unassigned.values()
    rej = rejected(wc, AssignUnassigned(record.unassigned_id, "4711/0020", OPERATOR, at(20)))
    assert rej.field == "actor"


def test_assigned_unassigned_production_is_converted_by_parts_per_signal() -> None:
    wc = make_wc(spec(parts_per_signal=Decimal(2)), sources=(ONE_PER_S,))
    feed(wc, [(100, 0), (104, 10)])
    (record,) = wc.unassigned.values()
    ok(wc, AssignUnassigned(record.unassigned_id, "4711/0020", SUPERVISOR, at(20)))
    assert good(wc) == 8


# ---------------------------------------------------------------- setup


def test_counts_during_setup_are_setup_scrap() -> None:
    wc = make_wc(spec(), sources=(ONE_PER_S,))
    act(wc, Action.START_SETUP, -1)
    feed(wc, [(100, 0), (103, 10)])
    op = wc.operations[OP]
    assert op.status is OperationStatus.SETUP
    assert op.counted.good == 0
    assert op.counted.scrap == {"SETUP": 3}
    # The operator says two first-off parts were good after all.
    out = ok(wc, DeclareSetupGood(Decimal(2), OPERATOR, at(20)))
    one(out, EventType.SETUP_PARTS_DECLARED_GOOD)
    assert op.counted.good == 2
    assert op.counted.scrap == {"SETUP": 1}


def test_counts_during_setup_are_good_when_configured() -> None:
    wc = make_wc(spec(), sources=(ONE_PER_S,), setup_counts_as_good=True)
    act(wc, Action.START_SETUP, -1)
    feed(wc, [(100, 0), (103, 10)])
    op = wc.operations[OP]
    assert op.counted.good == 3
    assert op.counted.scrap == {}


@pytest.mark.parametrize("bits", [16, 32])
def test_a_value_at_the_top_of_the_range_is_accepted(bits: int) -> None:
    wc = running_with(CountSource("press1", CountKind.GOOD, bits=bits, max_rate_per_s=1.0))
    feed(wc, [((1 << bits) - 3, 0), ((1 << bits) - 1, 10)])
    assert good(wc) == 2
    assert events_of(ok(wc, CounterReading("press1", 0, at(20))), EventType.COUNTER_WRAPPED)
    assert good(wc) == 3


def test_a_jump_between_orders_is_judged_by_the_last_operation_rate() -> None:
    """With no operation active the last derived rate still guards against one huge delta."""
    wc = make_wc(spec(std_cycle_s=1.0))
    act(wc, Action.START_PRODUCTION, 0)
    ok(wc, CounterReading("press1", 1200, at(1)))
    ok(wc, CounterReading("press1", 1205, at(5)))
    act(wc, Action.COMPLETE, 6)
    out = ok(wc, CounterReading("press1", 9000, at(20)))  # 7795 in 15 s at most 3/s
    assert one(out, EventType.COUNTER_DISCONTINUITY).data["value"] == 9000
    assert not wc.unassigned
    out = ok(wc, CounterReading("press1", 9004, at(22)))
    assert wc.unassigned["U000001"].tally.good == 4


# -- one authoritative source per count; another of the same kind is a cross-check ----------------


def cross_checked(tolerance: int = 15) -> WorkCenter:
    barrier = CountSource(
        "barrier", CountKind.GOOD, signal=SignalType.PULSE, authoritative=False,
        drift_tolerance=tolerance,
    )  # fmt: skip
    wc = make_wc(spec(std_cycle_s=0.1), sources=(GOOD, barrier))
    act(wc, Action.START_PRODUCTION, 0)
    ok(wc, CounterReading("press1", 1000, at(1)))  # the baseline of the machine's counter
    ok(wc, Pulses("barrier", 1, at(2)))  # both seen: the comparison starts with this pulse
    return wc


def test_a_cross_check_counts_nothing_and_stays_quiet_while_it_agrees() -> None:
    wc = cross_checked()
    for i in range(1, 11):
        out1 = ok(wc, CounterReading("press1", 1000 + 10 * i, at(1 + 10 * i)))
        out2 = ok(wc, Pulses("barrier", 10 + (1 if i % 2 else -1), at(2 + 10 * i)))
        assert not events_of(out1, EventType.COUNTER_DRIFT)
        assert not events_of(out2, EventType.COUNTER_DRIFT)
    assert wc.operations[key("4711/0020")].counted.good == 100  # the barrier counted nothing


def test_a_cross_check_drifting_apart_warns_once_per_drift() -> None:
    wc = cross_checked(tolerance=5)
    ok(wc, CounterReading("press1", 1050, at(60)))
    out = ok(wc, Pulses("barrier", 40, at(61)))  # 9 parts short: a dirty light barrier?
    drift = one(out, EventType.COUNTER_DRIFT)
    assert drift.data == {
        "source": "barrier", "reference": "press1", "checked": 41, "counted": 50, "tolerance": 5,
    }  # fmt: skip
    assert drift.op == "4711/0020"
    # The comparison starts again from here: the same gap does not warn twice.
    ok(wc, CounterReading("press1", 1060, at(70)))
    assert not events_of(ok(wc, Pulses("barrier", 10, at(71))), EventType.COUNTER_DRIFT)
    assert wc.operations[key("4711/0020")].counted.good == 60
