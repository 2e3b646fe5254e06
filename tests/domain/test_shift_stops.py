"""The stop reasons of a shift and its parts target (edge.domain.kpis.top_stops and
parts_target), by hand: a stop across the shift change lost time in both shifts, a break
inside a stop is planned downtime, a stop wholly inside a break lost nothing; the book gives
the same after a restore; the target is the planned busy time at the standard cycle."""

from __future__ import annotations

from decimal import Decimal

from edge.domain.core import WorkCenter
from edge.domain.inputs import Action, MachineState, MachineStateChanged, Pulses, SetStopReason
from edge.domain.kpis import PartsTarget, StopLoss, parts_target, top_stops
from edge.domain.rules import Shift
from edge.store import codec

from .builders import OPERATOR, SUPERVISOR, act, clock, make_wc, ok, pulse_source, spec

MIN = 60_000
SHIFTS = (Shift.parse("early", "06:00", "14:00"), Shift.parse("late", "14:00", "22:00"))


def down(wc: WorkCenter, hhmm: str) -> None:
    ok(wc, MachineStateChanged("press1", MachineState.DOWN, clock(hhmm)))


def up(wc: WorkCenter, hhmm: str) -> None:
    ok(wc, MachineStateChanged("press1", MachineState.RUNNING, clock(hhmm)))


def across_the_shift_change() -> WorkCenter:
    wc = make_wc(spec(std_cycle_s=10.0), sources=(pulse_source("press1"),), shifts=SHIFTS)
    act(wc, Action.START_PRODUCTION, 0)  # 10:00
    ok(wc, Pulses("press1", 10, clock("10:20")))
    down(wc, "13:30")
    (first,) = wc.stops
    ok(wc, SetStopReason("M01", OPERATOR, clock("13:40"), stop_id=first))
    up(wc, "14:20")  # 30 min in the early shift, 20 in the late one
    down(wc, "15:00")
    up(wc, "15:05")  # no reason given
    ok(wc, Pulses("press1", 5, clock("15:10")))
    return wc


def test_a_stop_across_the_shift_change_counts_in_both_shifts() -> None:
    wc = across_the_shift_change()
    early = wc.booked_kpis("2024-03-04/early")
    late = wc.booked_kpis("2024-03-04/late")
    assert early is not None
    assert late is not None
    assert top_stops(early) == [StopLoss("M01", 30 * MIN, 1)]
    assert top_stops(late) == [StopLoss("M01", 20 * MIN, 1), StopLoss("PENDING", 5 * MIN, 1)]
    assert top_stops(late, 1) == [StopLoss("M01", 20 * MIN, 1)]
    # judged by the latest reason: the first stop becomes a tool change in both shifts
    first = next(iter(wc.stops))
    ok(wc, SetStopReason("M02", SUPERVISOR, clock("15:20"), stop_id=first))
    late = wc.booked_kpis("2024-03-04/late")
    early = wc.booked_kpis("2024-03-04/early")
    assert early is not None
    assert late is not None
    assert top_stops(early) == [StopLoss("M02", 30 * MIN, 1)]
    assert top_stops(late) == [StopLoss("M02", 20 * MIN, 1), StopLoss("PENDING", 5 * MIN, 1)]
    # the day: both shifts together, the stop across them still one stop a shift
    day = wc.day_kpis(clock("15:30"))
    assert day is not None
    assert dict(day.down_by_reason_ms) == {"M02": 50 * MIN, "PENDING": 5 * MIN}
    assert dict(day.stops_by_reason) == {"M02": 2, "PENDING": 1}


def test_a_restored_book_gives_the_same_stops() -> None:
    wc = across_the_shift_change()
    again = codec.restore(codec.all_docs(wc))
    assert again is not None
    for shift_id in ("2024-03-04/early", "2024-03-04/late"):
        mine, theirs = wc.booked_kpis(shift_id), again.booked_kpis(shift_id)
        assert mine is not None
        assert theirs is not None
        assert top_stops(theirs) == top_stops(mine)


def with_breaks() -> WorkCenter:
    early = Shift.parse(
        "early",
        "06:00",
        "14:00",
        None,
        [("breakfast", "12:00", "12:15"), ("tea", "13:00", "13:10")],
    )
    wc = make_wc(spec(std_cycle_s=10.0), sources=(pulse_source("press1"),), shifts=(early,))
    act(wc, Action.START_PRODUCTION, 0)  # 10:00
    ok(wc, Pulses("press1", 10, clock("10:20")))
    down(wc, "11:50")
    up(wc, "12:30")  # 40 min, 15 of them the breakfast break
    down(wc, "13:00")
    up(wc, "13:10")  # the whole tea break
    return wc


def test_a_break_inside_a_stop_is_not_lost_time() -> None:
    wc = with_breaks()
    k = wc.shift_kpis(clock("13:30"))
    assert k is not None
    assert top_stops(k) == [StopLoss("PENDING", 25 * MIN, 1)]
    assert k.adet_ms == 25 * MIN
    assert k.planned_down_ms == 25 * MIN


def test_the_target_is_the_planned_busy_time_at_the_standard_cycle() -> None:
    wc = with_breaks()
    k = wc.shift_kpis(clock("13:30"))
    assert k is not None
    assert k.pbt_ms == 455 * MIN
    # 455 min at 10 s a part; up to 13:30: 450 min since 06:00 less the 25 min of breaks
    assert parts_target(wc, k, clock("13:30")) == PartsTarget(10.0, Decimal(2730), Decimal(2550))


def test_before_the_first_part_the_active_operation_sets_the_pace() -> None:
    wc = make_wc(spec(std_cycle_s=12.0), sources=(pulse_source("press1"),), shifts=SHIFTS)
    act(wc, Action.START_PRODUCTION, 0)
    k = wc.shift_kpis(clock("10:06"))
    assert k is not None
    assert k.produced == 0
    # 480 min at 12 s = 2400; 246 min since 06:00 = 1230
    assert parts_target(wc, k, clock("10:06")) == PartsTarget(12.0, Decimal(2400), Decimal(1230))
    # the parts' own standard once there are parts (two operations' mean would show here too)
    ok(wc, Pulses("press1", 3, clock("10:07")))
    k = wc.shift_kpis(clock("10:07"))
    assert k is not None
    found = parts_target(wc, k, clock("10:07"))
    assert found is not None
    assert found.cycle_s == 12.0


def test_no_standard_or_no_planned_time_no_target() -> None:
    wc = make_wc(spec(std_cycle_s=0.0), sources=(pulse_source("press1"),), shifts=SHIFTS)
    act(wc, Action.START_PRODUCTION, 0)
    ok(wc, Pulses("press1", 10, clock("10:20")))
    k = wc.shift_kpis(clock("10:30"))
    assert k is not None
    assert k.good == 10
    assert parts_target(wc, k, clock("10:30")) is None
    # 23:00: outside every shift, the day's unscheduled time has no planned busy time
    timed = make_wc(spec(std_cycle_s=10.0), sources=(pulse_source("press1"),), shifts=SHIFTS)
    act(timed, Action.START_PRODUCTION, 13 * 3600)  # 23:00
    ok(timed, Pulses("press1", 10, clock("23:10")))
    night = timed.shift_kpis(clock("23:20"))
    assert night is not None
    assert night.name == "unscheduled"
    assert night.good == 10
    assert parts_target(timed, night, clock("23:20")) is None
