"""The day's KPIs (edge.domain.kpis.at_day_change): a day goes out once, when its figures are
complete: at its local midnight, or when a night shift that started on it ends; whichever input
first moves the book past that moment brings it (a tick or a count), and a gateway that was off
for days sends each day it missed, oldest first."""

from __future__ import annotations

from typing import Any

from edge.domain.clock import Instant
from edge.domain.core import WorkCenter
from edge.domain.events import EventType
from edge.domain.inputs import Action, Pulses, Tick
from edge.domain.kpis import KEEP_DAYS, day_close_ms, kpis_payload
from edge.domain.rules import Shift
from edge.store import codec

from .builders import act, at, clock, make_wc, ok, pulse_source, spec

H = 3_600_000
DAY_S = 86_400
EARLY = Shift.parse("early", "06:00", "14:00")
LATE = Shift.parse("late", "14:00", "22:00")
NIGHT = Shift.parse("night", "22:00", "06:00")


def next_day(hhmmss: str, days: int = 1) -> Instant:
    t = clock(hhmmss)
    return Instant(t.wall_ms + days * DAY_S * 1000, t.mono_ms + days * DAY_S * 1000)


def days(out: Any) -> list[dict[str, Any]]:
    return [e.data for e in out.events if e.type is EventType.DAY_CLOSED]


def working(*shifts: Shift) -> WorkCenter:
    wc = make_wc(spec(std_cycle_s=10.0), sources=(pulse_source("press1"),), shifts=shifts)
    ok(wc, Tick(clock("09:30")))  # dispatched at 09:00: the gateway sees the day from then
    act(wc, Action.START_PRODUCTION, 0)  # 10:00
    ok(wc, Pulses("press1", 100, clock("13:00")))
    ok(wc, Pulses("press1", 50, clock("20:00")))
    return wc


def test_with_a_night_shift_the_day_closes_when_the_night_shift_ends() -> None:
    wc = working(EARLY, LATE, NIGHT)
    assert day_close_ms(wc.calendar, clock("10:00").wall().date()) == next_day("06:00").wall_ms
    assert not days(ok(wc, Tick(next_day("00:00:01"))))  # midnight: the night shift still runs
    ok(wc, Pulses("press1", 30, next_day("03:00")))
    (day,) = days(ok(wc, Tick(next_day("06:00:01"))))
    assert not days(wc.apply(Tick(next_day("06:00:02"))))  # once
    assert (day["shift_id"], day["shift"], day["day"]) == ("2024-03-04", "day", "2024-03-04")
    t = day["time_s"]
    assert t["POT"] == 24 * 3600  # three shifts of eight hours
    assert t["unbooked"] == 3 * 3600  # 06:00-09:00: before the gateway saw anything
    assert t["APT"] == 10 * 3600  # running from 10:00 to the last count at 20:00
    # no count for 3 x 10 s at the tick after midnight: a no-count stop from 20:00; the count
    # at 03:00 ends it, and the tick at 06:00 finds the next one, from 03:00
    assert t["ADET"] == 10 * 3600
    assert day["failures"] == 2
    assert t["ADOT"] == 1 * 3600  # 09:00-10:00 dispatched, nothing active
    parts = ("planned_down", "APT", "AUST", "ADET", "ADOT", "unbooked")
    assert sum(t[k] for k in parts) == t["POT"]
    assert day["good"] == 180
    # the same figures as the three shifts it is made of, booked
    shifts = [wc.booked_kpis(f"2024-03-04/{name}") for name in ("early", "late", "night")]
    assert sum(k.apt_ms for k in shifts if k) == 10 * H
    assert sum(k.adet_ms for k in shifts if k) == 10 * H
    assert sum(int(k.good) for k in shifts if k) == 180


def test_without_a_night_shift_the_first_input_after_midnight_brings_the_day() -> None:
    wc = working(EARLY, LATE)
    out = ok(wc, Pulses("press1", 10, next_day("00:00:01")))  # before any tick after midnight
    (day,) = days(out)
    assert day["shift_id"] == "2024-03-04"
    assert day["time_s"]["POT"] == 16 * 3600
    # the unscheduled time after 22:00 counts in the day: its parts and its running time
    assert day["time_s"]["APT"] == (12 + 2) * 3600  # 10:00-22:00 in shifts, 22:00-24:00 outside
    assert day["good"] == 150  # the 10 parts after midnight are the next day's
    assert not days(ok(wc, Tick(next_day("00:00:02"))))


def test_a_gateway_off_for_days_sends_each_day_it_missed_oldest_first() -> None:
    wc = working(EARLY, LATE)
    out = ok(wc, Tick(next_day("12:00", days=3)))  # Thursday noon, nothing seen since Monday
    assert [d["shift_id"] for d in days(out)] == ["2024-03-04", "2024-03-05", "2024-03-06"]
    assert not days(ok(wc, Tick(next_day("12:00:01", days=3))))


def test_a_restored_work_center_closes_the_day_the_same() -> None:
    wc = working(EARLY, LATE)
    again = codec.restore(codec.all_docs(wc))
    assert again is not None
    one = days(ok(wc, Tick(next_day("00:00:05"))))
    two = days(ok(again, Tick(next_day("00:00:05"))))
    assert one == two
    assert len(one) == 1


def test_the_day_payload_is_the_shift_payload_shape() -> None:
    wc = working(EARLY, LATE)
    (day,) = days(ok(wc, Tick(next_day("00:00:01"))))
    k = wc.shift_book.day(clock("10:00").wall().date(), {})
    assert k is not None
    assert set(day) == set(kpis_payload(k))


def test_an_input_dated_before_the_mark_closes_nothing() -> None:
    wc = working(EARLY, LATE)
    assert not days(ok(wc, Tick(at(11 * 3600))))  # 21:00 Monday
    assert not days(ok(wc, Pulses("press1", 60, clock("21:30"))))


def test_booked_shifts_older_than_two_months_leave_the_state() -> None:
    """The shift book keeps KEEP_DAYS (62) days of booked shifts: an older one leaves the
    state at the next shift change, also when the new shift was already booked into before
    the book was marked (a tick books the time up to it first). Before, that order meant no
    shift ever left, and memory grew by three shifts a day for as long as the gateway ran."""
    wc = working(EARLY, LATE, NIGHT)
    t = clock("20:00")
    for n in range(1, 80 * 24 * 6):  # a part every 10 minutes for 80 days, counted first
        ok(wc, Pulses("press1", 1, Instant(t.wall_ms + n * 600_000, t.mono_ms + n * 600_000)))
    book = wc.shift_book.shifts
    assert len(book) <= (KEEP_DAYS + 2) * 3, len(book)
    newest_end = max(t.end_ms for t in book.values())
    assert min(t.end_ms for t in book.values()) >= newest_end - (KEEP_DAYS + 1) * DAY_S * 1000
