"""The shift calendar (edge.domain.calendar): shifts per weekday, breaks, holidays, planned
windows, in the plant's time zone across daylight-saving changes. Hand-computed examples."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from edge.domain.calendar import (
    PlannedWindow,
    ShiftCalendar,
    ShiftPattern,
    merge,
)

BERLIN = "Europe/Berlin"
H = 3_600_000
MIN = 60_000


def utc(*args: int) -> int:
    return round(datetime(*args, tzinfo=UTC).timestamp() * 1000)


def three_shifts(**kw: object) -> ShiftCalendar:
    return ShiftCalendar(
        timezone=BERLIN,
        shifts=(
            ShiftPattern.parse("early", "06:00", "14:00", breaks=[("breakfast", "09:00", "09:15")]),
            ShiftPattern.parse("late", "14:00", "22:00"),
            ShiftPattern.parse("night", "22:00", "06:00", breaks=[("meal", "02:00", "02:30")]),
        ),
        **kw,  # type: ignore[arg-type]
    )


def test_a_night_shift_belongs_to_the_day_it_starts_on() -> None:
    cal = three_shifts()
    # 2026-03-04 01:00 in Berlin (CET, +1) is 00:00 UTC: the night shift of the 3rd
    inst = cal.instance_at(utc(2026, 3, 4, 0, 0))
    assert inst is not None
    assert (inst.shift_id, inst.day) == ("2026-03-03/night", date(2026, 3, 3))
    assert (inst.start_ms, inst.end_ms) == (utc(2026, 3, 3, 21), utc(2026, 3, 4, 5))
    assert inst.operating_ms == 8 * H
    assert inst.planned == ((utc(2026, 3, 4, 1), utc(2026, 3, 4, 1, 30), "meal"),)
    assert inst.planned_down_ms == 30 * MIN
    # the next shift starts where it ends
    early = cal.instance_at(utc(2026, 3, 4, 5, 0))
    assert early is not None
    assert early.shift_id == "2026-03-04/early"


def test_daylight_saving_makes_the_night_shorter_and_longer() -> None:
    cal = three_shifts()
    # 2026-03-29 02:00 CET -> 03:00 CEST: the night from Saturday the 28th lasts 7 h
    spring = cal.instance_at(utc(2026, 3, 28, 23, 0))
    assert spring is not None
    assert spring.shift_id == "2026-03-28/night"
    assert (spring.start_ms, spring.end_ms) == (utc(2026, 3, 28, 21), utc(2026, 3, 29, 4))
    assert spring.operating_ms == 7 * H
    # the 02:00 meal break does not exist that night: read with CET, it is 03:00 CEST
    assert spring.planned == ((utc(2026, 3, 29, 1), utc(2026, 3, 29, 1, 30), "meal"),)
    # 2026-10-25 03:00 CEST -> 02:00 CET: the night from Saturday the 24th lasts 9 h
    autumn = cal.instance_at(utc(2026, 10, 24, 23, 0))
    assert autumn is not None
    assert autumn.shift_id == "2026-10-24/night"
    assert (autumn.start_ms, autumn.end_ms) == (utc(2026, 10, 24, 20), utc(2026, 10, 25, 5))
    assert autumn.operating_ms == 9 * H
    # 02:00 happens twice; the break is the first (CEST): 00:00 UTC
    assert autumn.planned[0][:2] == (utc(2026, 10, 25, 0), utc(2026, 10, 25, 0, 30))
    # the Sunday after is a normal 8 h early shift
    sunday = cal.instance_at(utc(2026, 10, 25, 6, 0))
    assert sunday is not None
    assert sunday.operating_ms == 8 * H


def test_weekdays_and_holidays() -> None:
    cal = ShiftCalendar(
        timezone=BERLIN,
        shifts=(
            ShiftPattern.parse(
                "early", "06:00", "14:00", weekdays=["mon", "tue", "wed", "thu", "fri"]
            ),
            ShiftPattern.parse(
                "night", "22:00", "06:00", weekdays=["sun", "mon", "tue", "wed", "thu"]
            ),
        ),
        holidays=frozenset({date(2026, 12, 25)}),  # a Friday
    )
    week = cal.instances(utc(2026, 12, 21, 0), utc(2026, 12, 28, 0))  # Mon 21st .. Sun 27th
    ids = [i.shift_id for i in week]
    assert ids[0] == "2026-12-20/night"  # Sunday's night runs into Monday
    assert "2026-12-25/early" not in ids  # the holiday
    assert "2026-12-24/night" in ids  # Thursday's night runs into the holiday: it stays
    assert not any(i.day.weekday() == 5 for i in week)  # Saturday: nothing
    assert ids[-1] == "2026-12-27/night"
    assert len(ids) == 4 + 5 + 1  # early Mon-Thu, night Sun-Thu, and Sunday the 27th's night


def test_planned_windows_join_the_breaks_and_are_clipped_to_the_shift() -> None:
    window = PlannedWindow(utc(2026, 3, 4, 7, 30), utc(2026, 3, 4, 14, 0), "maintenance")
    cal = three_shifts(planned=(window,))
    early = cal.instance_at(utc(2026, 3, 4, 6, 0))  # 07:00 local (CET)
    assert early is not None
    assert early.shift_id == "2026-03-04/early"
    # early is 05:00-13:00 UTC; the window from 07:30 covers 07:30-13:00 there, and swallows
    # the 08:00-08:15 breakfast
    assert early.planned == ((utc(2026, 3, 4, 7, 30), utc(2026, 3, 4, 13), "maintenance"),)
    late = cal.instance_at(utc(2026, 3, 4, 13, 30))
    assert late is not None
    assert late.planned == ((utc(2026, 3, 4, 13), utc(2026, 3, 4, 14), "maintenance"),)
    assert early.planned_in(utc(2026, 3, 4, 7), utc(2026, 3, 4, 8)) == 30 * MIN


def test_merge() -> None:
    assert merge([(5, 9, "b"), (1, 3, "a"), (3, 4, "c"), (8, 12, "d"), (20, 20, "e")]) == (
        (1, 4, "a"),
        (5, 12, "b"),
    )


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            lambda: ShiftPattern.parse("a", "06:00", "14:00", breaks=[("x", "15:00", "15:30")]),
            "not inside",
        ),
        (
            lambda: ShiftPattern.parse(
                "a", "06:00", "14:00", breaks=[("x", "09:00", "09:30"), ("y", "09:15", "09:45")]
            ),
            "overlap",
        ),
        (lambda: ShiftPattern.parse("a", "06:00", "14:00", weekdays=["monday"]), "weekday"),
        (lambda: ShiftPattern.parse("a", "6:00", "14:00"), "HH:MM"),
        (
            lambda: ShiftPattern.parse("a", "06:00", "14:00", breaks=[("x", "09:00", "09:00")]),
            "not inside",
        ),
        (lambda: ShiftPattern("", 0, 60), "shift name"),
        (
            lambda: ShiftCalendar(
                shifts=(
                    ShiftPattern.parse("early", "06:00", "14:00"),
                    ShiftPattern.parse("long", "13:00", "20:00"),
                )
            ),
            "'early' and 'long' overlap",
        ),
        (
            lambda: ShiftCalendar(
                shifts=(
                    ShiftPattern.parse("sun-night", "22:00", "06:00", weekdays=["sun"]),
                    ShiftPattern.parse("mon-early", "05:00", "13:00", weekdays=["mon"]),
                )
            ),
            "overlap",
        ),
        (
            lambda: ShiftCalendar(
                shifts=(
                    ShiftPattern.parse("a", "06:00", "14:00"),
                    ShiftPattern.parse("a", "14:00", "22:00"),
                )
            ),
            "used twice",
        ),
        (lambda: ShiftCalendar(timezone="Mars/Olympus"), "not a time zone"),
        (lambda: PlannedWindow(10, 10), "not after its start"),
    ],
)
def test_a_calendar_that_cannot_be_is_refused_with_the_reason(build: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()  # type: ignore[operator]


def test_no_shifts_no_instances() -> None:
    assert ShiftCalendar().instances(0, 10 * H) == []
    assert ShiftCalendar().instance_at(0) is None
