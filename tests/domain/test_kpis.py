"""ISO 22400-2 time elements and KPIs per shift and day (edge.domain.kpis): hand-computed
examples (a shift with a break worked through and a stop across the break, a stop across a
shift boundary, a night across midnight and a daylight-saving change, a reclassified stop) and
properties: a shift's elements add up to its length, and the bounded KPIs stay in [0, 1]."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.domain.calendar import ShiftCalendar, ShiftPattern, overlap
from edge.domain.kpis import Condition, Kpis, ShiftBook, StopFacts

MIN = 60_000
H = 60 * MIN
R, S, X, W, IDLE = (
    Condition.RUNNING,
    Condition.SETUP,
    Condition.STOPPED,
    Condition.WAITING,
    Condition.IDLE,
)


def utc(*args: int) -> int:
    return round(datetime(*args, tzinfo=UTC).timestamp() * 1000)


def at(hhmm: str, day: int = 4) -> int:
    hours, minutes = map(int, hhmm.split(":"))
    return utc(2026, 3, day, hours, minutes)


def shifts_utc() -> ShiftCalendar:
    return ShiftCalendar(
        timezone="UTC",
        shifts=(
            ShiftPattern.parse("early", "06:00", "14:00", breaks=[("break", "09:00", "09:30")]),
            ShiftPattern.parse("late", "14:00", "22:00"),
        ),
    )


def book_all(book: ShiftBook, spans: list[tuple[str, str, Condition, str | None]]) -> None:
    for start, end, condition, stop in spans:
        book.book(condition, at(start), at(end), stop)


STOPS = {
    "S1": StopFacts(at("08:00"), "M01"),
    "S2": StopFacts(at("09:10"), "M02"),
    "S3": StopFacts(at("12:00"), "MICRO", micro=True),
}


def early_shift() -> ShiftBook:
    book = ShiftBook(shifts_utc())
    book_all(
        book,
        [
            ("06:00", "06:30", S, None),
            ("06:30", "08:00", R, None),
            ("08:00", "08:20", X, "S1"),
            ("08:20", "09:10", R, None),  # 10 min into the break: worked through
            ("09:10", "09:40", X, "S2"),  # 20 min of it in the break: planned, not a stop
            ("09:40", "12:00", R, None),
            ("12:00", "12:01", X, "S3"),  # a micro-stop
            ("12:01", "13:00", R, None),
            ("13:00", "13:30", W, None),  # held
            ("13:30", "14:30", IDLE, None),  # completed; half an hour into the late shift
        ],
    )
    book.count(
        at("10:00"), good=Decimal(1000), scrap=Decimal(17), rework=Decimal(3), run_s_per_unit=18
    )
    return book


def test_a_shift_by_hand() -> None:
    k = early_shift().kpis("2026-03-04/early", STOPS)
    assert k is not None
    assert k.pot_ms == 480 * MIN
    assert k.planned_down_ms == 20 * MIN  # 30 min break, 10 of them worked
    assert k.pbt_ms == 460 * MIN
    assert k.apt_ms == (90 + 50 + 140 + 59) * MIN == 339 * MIN
    assert k.aust_ms == 30 * MIN
    assert k.adet_ms == (20 + 10 + 1) * MIN
    assert k.adot_ms == (30 + 30) * MIN
    assert k.unbooked_ms == 0
    assert k.pot_ms == k.planned_down_ms + k.apt_ms + k.aust_ms + k.adet_ms + k.adot_ms
    assert dict(k.down_by_reason_ms) == {"M01": 20 * MIN, "M02": 10 * MIN, "MICRO": MIN}
    assert (k.good, k.scrap, k.rework, k.produced) == (1000, 17, 3, 1020)
    assert k.availability == pytest.approx(339 / 460)
    assert k.effectiveness == pytest.approx(306 / 339)  # 1020 x 18 s = 306 min of standard
    assert k.quality_ratio == pytest.approx(1000 / 1020)
    assert k.oee == pytest.approx(306 / 460 * 1000 / 1020)  # 0.652
    assert k.setup_rate == pytest.approx(30 / 369)
    assert k.technical_efficiency == pytest.approx(339 / 370)
    assert k.failures == 2  # S1 and S2; the micro-stop is no failure
    assert k.mtbf_s == pytest.approx(339 * 60 / 2)
    assert k.mttr_s == pytest.approx((20 + 10) * 60 / 2)
    late = early_shift().kpis("2026-03-04/late", STOPS)
    assert late is not None
    assert (late.adot_ms, late.unbooked_ms, late.availability) == (30 * MIN, 450 * MIN, 0.0)


def test_kpis_use_the_latest_reason() -> None:
    planned = {**STOPS, "S1": StopFacts(at("08:00"), "PM", planned=True)}  # reclassified
    k = early_shift().kpis("2026-03-04/early", planned)
    assert k is not None
    assert (k.adet_ms, k.adot_ms) == (11 * MIN, 80 * MIN)
    assert k.failures == 1
    assert k.technical_efficiency == pytest.approx(339 / 350)
    # a stop nobody judged yet is unplanned, reason pending
    k = early_shift().kpis("2026-03-04/early", {})
    assert k is not None
    assert k.down_by_reason_ms["PENDING"] == 31 * MIN


def test_a_stop_across_the_shift_change_and_a_break_inside_a_stop() -> None:
    book = ShiftBook(shifts_utc())
    book_all(book, [("08:50", "09:40", X, "B"), ("13:50", "14:10", X, "C")])
    stops = {"B": StopFacts(at("08:50"), "M01"), "C": StopFacts(at("13:50"), "M02")}
    early = book.kpis("2026-03-04/early", stops)
    late = book.kpis("2026-03-04/late", stops)
    assert early is not None
    assert late is not None
    assert early.adet_ms == 20 * MIN + 10 * MIN  # B: 50 min less the 30 min break; C: 10 min
    assert early.planned_down_ms == 30 * MIN
    assert late.adet_ms == 10 * MIN
    assert (early.failures, late.failures) == (2, 0)  # C started in the early shift
    assert late.mtbf_s is None
    assert late.mttr_s is None


def test_a_night_across_midnight_and_the_spring_change() -> None:
    cal = ShiftCalendar(
        timezone="Europe/Berlin", shifts=(ShiftPattern.parse("night", "22:00", "06:00"),)
    )
    book = ShiftBook(cal)
    start, end = utc(2026, 3, 28, 21), utc(2026, 3, 29, 4)  # 22:00 CET to 06:00 CEST
    book.book(R, start, start + 2 * H)
    book.book(IDLE, start + 2 * H, end)
    k = book.kpis("2026-03-28/night", {})
    assert k is not None
    assert (k.pot_ms, k.apt_ms, k.adot_ms, k.unbooked_ms) == (7 * H, 2 * H, 5 * H, 0)
    assert k.availability == pytest.approx(2 / 7)
    assert k.effectiveness == 0.0
    assert k.quality_ratio is None
    assert k.oee is None


def test_time_and_parts_outside_every_shift_go_to_the_days_unscheduled_bucket() -> None:
    book = ShiftBook(shifts_utc())
    book.book(R, at("22:00"), at("23:30"))  # overtime after the late shift
    book.count(at("23:00"), good=Decimal(40), run_s_per_unit=60)
    book.book(R, at("13:00"), at("14:00"))
    u = book.kpis("2026-03-04/unscheduled", {})
    assert u is not None
    assert (u.pot_ms, u.pbt_ms, u.apt_ms, u.good) == (0, 0, 90 * MIN, 40)
    assert u.availability is None
    assert u.effectiveness == pytest.approx(40 / 90)
    day = book.day(date(2026, 3, 4), {})
    assert day is not None
    assert (day.pot_ms, day.apt_ms, day.good) == (16 * H, 150 * MIN, 40)
    assert day.shift_id == "2026-03-04"
    assert day.name == "day"
    # across midnight: the unscheduled time is split at the local midnight
    book.book(IDLE, at("23:30"), at("05:00", day=5))
    assert book.kpis("2026-03-05/unscheduled", {}).adot_ms == 5 * H  # type: ignore[union-attr]


def test_setup_through_a_break_is_setup_and_the_break_was_worked() -> None:
    book = ShiftBook(shifts_utc())
    book_all(book, [("08:45", "09:15", S, None), ("09:15", "09:45", IDLE, None)])
    k = book.kpis("2026-03-04/early", {})
    assert k is not None
    assert k.aust_ms == 30 * MIN  # 15 of them in the break
    assert k.planned_down_ms == 15 * MIN  # the break's other 15 min, idle
    assert k.adot_ms == 15 * MIN  # idle after the break
    assert k.pbt_ms == 465 * MIN


def test_a_stopped_span_must_name_its_stop() -> None:
    with pytest.raises(ValueError, match="names its stop"):
        ShiftBook(shifts_utc()).book(X, 0, 10)


# ---------------------------------------------------------------------------------------------
# Properties

CALENDARS = [
    shifts_utc(),
    ShiftCalendar(
        timezone="Europe/Berlin",
        shifts=(
            ShiftPattern.parse("early", "06:00", "14:00", breaks=[("b", "09:00", "09:20")]),
            ShiftPattern.parse("night", "22:00", "06:00", breaks=[("m", "02:00", "02:30")]),
        ),
    ),
    ShiftCalendar(
        timezone="America/New_York",
        shifts=(
            ShiftPattern.parse(
                "day", "07:00", "19:00", weekdays=["mon", "tue", "wed", "thu", "fri"]
            ),
        ),
    ),
]
CONDITIONS = [R, S, X, W, IDLE]


@st.composite
def days_of_spans(
    draw: st.DrawFn,
) -> tuple[ShiftCalendar, int, list[tuple[Condition, int, int, str | None]]]:
    cal = draw(st.sampled_from(CALENDARS))
    # around the spring and autumn changes and an ordinary week
    start = draw(
        st.sampled_from([utc(2026, 3, 7, 12), utc(2026, 3, 27, 12), utc(2026, 10, 23, 12)])
    )
    start += draw(st.integers(0, 24 * H))
    cursor, spans = start, []
    for _ in range(draw(st.integers(1, 40))):
        length = draw(st.integers(1, 6 * H))
        condition = draw(st.sampled_from(CONDITIONS))
        stop = f"S{draw(st.integers(0, 5))}" if condition is X else None
        spans.append((condition, cursor, cursor + length, stop))
        cursor += length
    return cal, start, spans


@given(days_of_spans(), st.data())
@settings(max_examples=100, deadline=None)
def test_a_shifts_time_elements_add_up_to_its_length_and_the_ratios_stay_bounded(
    case: tuple[ShiftCalendar, int, list[tuple[Condition, int, int, str | None]]],
    data: st.DataObject,
) -> None:
    cal, start, spans = case
    book = ShiftBook(cal)
    for condition, a, b, stop in spans:
        book.book(condition, a, b, stop)
    end = spans[-1][2]
    stops = {
        f"S{n}": StopFacts(
            data.draw(st.integers(start - H, end)),
            f"R{n}",
            planned=data.draw(st.booleans()),
            micro=data.draw(st.booleans()),
        )
        for n in range(6)
    }
    total = 0
    for shift_id, times in book.shifts.items():
        k = book.kpis(shift_id, stops)
        assert isinstance(k, Kpis)
        parts = k.planned_down_ms + k.apt_ms + k.aust_ms + k.adet_ms + k.adot_ms + k.unbooked_ms
        if k.pot_ms:
            assert parts == k.pot_ms, shift_id
            assert k.apt_ms <= k.pbt_ms <= k.pot_ms
            # the same from the calendar alone: planned downtime nobody worked through, and
            # the shift's time no span covered
            inst = cal.instance_at(times.start_ms)
            assert inst is not None
            assert inst.shift_id == shift_id
            seen = sum(overlap(a, b, inst.start_ms, inst.end_ms) for _, a, b, _ in spans)
            planned_seen = sum(inst.planned_in(a, b) for _, a, b, _ in spans)
            worked = sum(inst.planned_in(a, b) for c, a, b, _ in spans if c in (R, S))
            assert k.planned_down_ms == inst.planned_down_ms - worked, shift_id
            assert k.unbooked_ms == k.pot_ms - seen - (inst.planned_down_ms - planned_seen)
            if start <= times.start_ms and times.end_ms <= end:  # wholly inside: all seen
                assert k.unbooked_ms == 0, shift_id
        for ratio in (k.availability, k.quality_ratio, k.setup_rate, k.technical_efficiency):
            assert ratio is None or 0.0 <= ratio <= 1.0
        assert (
            sum(k.down_by_reason_ms.values())
            == k.adet_ms + k.adot_ms - times.waiting_ms - times.idle_ms
        )
        total += k.apt_ms + k.aust_ms + k.adet_ms + k.adot_ms
    # every booked millisecond is somewhere, or in planned downtime
    planned_unworked = 0
    for condition, a, b, _ in spans:
        if condition not in (R, S):
            planned_unworked += sum(i.planned_in(a, b) for i in cal.instances(a, b))
    assert total + planned_unworked == end - start
