"""The shift KPIs as the core books them (edge.domain.kpis fed by WorkCenter.apply): a day of
an operation across a shift change, by hand; the book is the same after a restore from the
stored rows; idle ticks book nothing; a stop judged by its latest reason."""

from __future__ import annotations

from decimal import Decimal

from edge.domain.core import WorkCenter
from edge.domain.inputs import (
    Action,
    MachineState,
    MachineStateChanged,
    Pulses,
    SetStopReason,
    Tick,
)
from edge.domain.rules import Shift
from edge.store import codec

from .builders import OPERATOR, act, clock, make_wc, ok, pulse_source, spec

MIN = 60_000
SHIFTS = (Shift.parse("early", "06:00", "14:00"), Shift.parse("late", "14:00", "22:00"))


def day_of_work() -> WorkCenter:
    wc = make_wc(spec(std_cycle_s=10.0), sources=(pulse_source("press1"),), shifts=SHIFTS)
    # dispatched at 09:00 (make_wc); setup 10:00, production 10:10
    act(wc, Action.START_SETUP, 0)
    act(wc, Action.START_PRODUCTION, 600)
    ok(wc, Pulses("press1", 10, clock("10:20")))
    ok(wc, MachineStateChanged("press1", MachineState.DOWN, clock("10:30")))
    ok(wc, MachineStateChanged("press1", MachineState.RUNNING, clock("10:35")))
    ok(wc, Pulses("press1", 20, clock("14:10")))
    act(wc, Action.COMPLETE, 4 * 3600 + 30 * 60)  # 14:30
    return wc


def test_an_operation_across_the_shift_change_by_hand() -> None:
    wc = day_of_work()
    early = wc.booked_kpis("2024-03-04/early")
    assert early is not None
    assert early.pot_ms == 480 * MIN
    assert early.unbooked_ms == 180 * MIN  # 06:00-09:00: before the gateway saw anything
    assert early.adot_ms == 60 * MIN  # 09:00-10:00: dispatched, nothing active
    assert early.aust_ms == 10 * MIN
    assert early.apt_ms == (20 + 205) * MIN
    assert early.adet_ms == 5 * MIN  # the stop, reason pending
    assert dict(early.down_by_reason_ms) == {"PENDING": 5 * MIN}
    assert early.failures == 1
    assert early.good == 10
    assert early.effectiveness == (10 * 10_000) / (225 * MIN)
    late = wc.booked_kpis("2024-03-04/late")
    assert late is not None
    assert (late.apt_ms, late.good, late.adot_ms) == (30 * MIN, 20, 0)
    # up to 15:00: the half hour since completion is idle
    now = wc.shift_kpis(clock("15:00"))
    assert now is not None
    assert now.shift_id == "2024-03-04/late"
    assert (now.apt_ms, now.adot_ms, now.unbooked_ms) == (30 * MIN, 30 * MIN, 420 * MIN)
    # a reason given later judges the stop: M01 is unplanned, "BRK" a planned one
    (stop_id,) = wc.stops
    ok(wc, SetStopReason("BRK", OPERATOR, clock("15:05"), stop_id=stop_id))
    early = wc.booked_kpis("2024-03-04/early")
    assert early is not None
    assert (early.adet_ms, early.adot_ms, early.failures) == (0, 65 * MIN, 0)
    assert dict(early.down_by_reason_ms) == {"BRK": 5 * MIN}


def test_the_book_is_the_same_after_a_restore_and_idle_ticks_book_nothing() -> None:
    wc = day_of_work()
    docs = codec.all_docs(wc)
    assert set(docs["shift"]) == {"2024-03-04/early", "2024-03-04/late"}
    again = codec.restore(docs)
    assert again is not None
    assert again.shift_book.shifts == wc.shift_book.shifts
    assert again.shift_book.marked == wc.shift_book.marked
    for w in (wc, again):
        ok(w, Tick(clock("15:00")))  # the first tick says the shift: a change
    before = codec.all_docs(wc)["shift"]
    out = wc.apply(Tick(clock("15:30")))
    assert not out.changed  # nothing due: not journaled, and the book stays as it is
    assert codec.all_docs(wc)["shift"] == before
    # the same inputs on both book the same
    for w in (wc, again):
        ok(w, Tick(clock("15:45")))
        ok(w, SetStopReason("M01", OPERATOR, clock("16:00"), stop_id=next(iter(w.stops))))
    assert codec.all_docs(again)["shift"] == codec.all_docs(wc)["shift"]
    early = wc.booked_kpis("2024-03-04/early")
    assert early is not None
    assert early.good == Decimal(10)


def test_weekdays_breaks_holidays_and_planned_downtime_from_the_rules() -> None:
    from datetime import date

    from edge.domain.calendar import shift_of

    from .builders import at

    weekdays = ["mon", "tue", "wed", "thu", "fri"]
    early = Shift.parse("early", "06:00", "14:00", weekdays, [("breakfast", "09:00", "09:15")])
    maintenance = (clock("12:00").wall_ms, clock("13:00").wall_ms, "maintenance")
    wc = make_wc(
        spec(std_cycle_s=10.0),
        sources=(pulse_source("press1"),),
        shifts=(early,),
        holidays=(date(2024, 3, 5),),  # Tuesday
        planned_downtime=(maintenance,),
    )
    inst = wc.calendar.instance_at(clock("10:00").wall_ms)
    assert inst is not None
    assert inst.shift_id == "2024-03-04/early"
    assert inst.planned_down_ms == 75 * MIN
    assert wc.calendar.instance_at(clock("10:00").wall_ms + 86_400_000) is None  # the holiday
    # Saturday 10:00: no shift; a confirmation then is posted on Friday's early shift
    saturday = at(5 * 86_400)
    assert shift_of(saturday, wc.calendar) == ("early", date(2024, 3, 8))
    # idle all morning from 09:00 (dispatched): the break and the maintenance are planned
    ok(wc, MachineStateChanged("press1", MachineState.IDLE, clock("14:00")))
    k = wc.booked_kpis("2024-03-04/early")
    assert k is not None
    assert k.planned_down_ms == 75 * MIN
    assert k.adot_ms == (300 - 75) * MIN
    assert k.unbooked_ms == 180 * MIN
    assert k.pbt_ms == 405 * MIN


def test_the_shift_that_ends_goes_out_with_its_kpis() -> None:
    from edge.domain.events import EventType
    from edge.domain.kpis import kpis_payload

    wc = make_wc(spec(std_cycle_s=10.0), sources=(pulse_source("press1"),), shifts=SHIFTS)
    ok(wc, Tick(clock("09:30")))  # the early shift begins for the gateway
    act(wc, Action.START_PRODUCTION, 0)  # 10:00
    ok(wc, Pulses("press1", 100, clock("13:00")))
    out = ok(wc, Tick(clock("14:00:01")))
    (closed,) = [e for e in out.events if e.type is EventType.SHIFT_CLOSED]
    assert closed.data["shift_id"] == "2024-03-04/early"
    assert closed.data["good"] == 100
    # up to the shift's end: the no-count stop the tick found, dated back to the last count
    times = closed.data["time_s"]
    assert times["APT"] == 3 * 3600  # type: ignore[index]
    assert times["ADET"] == 3600  # type: ignore[index]
    early = wc.booked_kpis("2024-03-04/early")
    assert early is not None
    assert kpis_payload(early) == dict(closed.data)  # what the book says afterwards, too
    assert [e.type for e in out.events].index(EventType.SHIFT_CLOSED) < [
        e.type for e in out.events
    ].index(EventType.SHIFT_CHANGED)
