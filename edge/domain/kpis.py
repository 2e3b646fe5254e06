"""How well it was made: ISO 22400-2 time elements and KPIs per shift and per day.

The time of the work center is booked span by span, each span in one condition:

- ``running``: an operation runs and no stop is open: actual production time (APT);
- ``setup``: an operation is in setup: actual unit setup time (AUST);
- ``stopped``: a stop is open (named by its id): by the stop's *latest* reason (rules.md §4:
  KPIs use the latest reason), actual unit delay time (ADET) when the reason is unplanned,
  pending or a micro-stop, actual unit down time (ADOT) when the reason is a planned one;
- ``waiting``: the operation is interrupted or held: ADOT;
- ``idle``: no operation is active: ADOT (available, not busy with an order).

A span is split at every shift's start and end and at its planned downtime (breaks and planned
windows of the :class:`~edge.domain.calendar.ShiftCalendar`). Planned downtime is not lost
time: a stop, a wait or an idle machine inside a break is planned downtime, not ADET or ADOT
(rules.md §4: "planned downtime from the shift calendar is planned, not a stop"). Running or
setup inside a break was work: it is APT or AUST, and the break's time worked through is no
longer planned downtime, so planned busy time (PBT) grows by it. Time outside every shift goes
to the local day's ``unscheduled`` bucket: it has no planned operation time, so no
availability, but its parts and its time count in the day's figures.

For a shift, with POT its length in real time:

    POT = planned downtime not worked + APT + AUST + ADET + ADOT + unbooked

where *unbooked* is time the gateway did not see (it was off). Then (ISO 22400-2, 5.x):

- PBT = POT - planned downtime not worked; AUPT = APT + AUST; AUBT = AUPT + ADET
- availability = APT / PBT; effectiveness = PRU x PQ / APT (PRU the planned run time per unit
  of each operation; above 1 when parts came faster than the standard); quality ratio = GQ / PQ
  with PQ = GQ + SQ + RQ; OEE = availability x effectiveness x quality ratio;
- setup rate = AUST / AUPT; technical efficiency = APT / (APT + ADET);
- MTBF = APT / failures and MTTR = the failures' delay time / failures, where a failure is a stop
  with an unplanned (or no) reason, not a micro-stop, that started in the shift.

A ratio whose denominator is 0 is None (not 0: "no production" is not "bad production").
Availability, quality ratio, setup rate and technical efficiency never leave [0, 1].

Pure: moments come in as epoch milliseconds, nothing is read or written here.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from functools import lru_cache
from typing import TYPE_CHECKING

from edge.domain.calendar import (
    Break,
    PlannedWindow,
    ShiftCalendar,
    ShiftInstance,
    ShiftPattern,
    local_midnight_ms,
    shift_of,
    zone,
)
from edge.domain.clock import EARLIEST_PLAUSIBLE, Instant
from edge.domain.events import EventType
from edge.domain.model import Operation, OperationKey, OperationStatus, Tally, number
from edge.domain.rules import MINUTES_PER_DAY, Shift

if TYPE_CHECKING:
    from edge.domain.state import WorkCenterState

UNSCHEDULED = "unscheduled"
ZERO = Decimal(0)


class Condition(StrEnum):
    RUNNING = "running"
    SETUP = "setup"
    STOPPED = "stopped"
    WAITING = "waiting"
    IDLE = "idle"


@dataclass(slots=True)
class ShiftTimes:
    """What was booked in one shift (or a day's unscheduled time): milliseconds and parts."""

    shift_id: str
    name: str
    day: date
    start_ms: int
    end_ms: int
    operating_ms: int  # POT: 0 for unscheduled time
    planned_ms: int  # the calendar's planned downtime inside
    running_ms: int = 0
    setup_ms: int = 0
    waiting_ms: int = 0
    idle_ms: int = 0
    worked_planned_ms: int = 0  # running or setup inside planned downtime
    stop_ms: dict[str, int] = field(default_factory=dict)  # stop id -> ms outside planned time
    good: Decimal = ZERO
    scrap: Decimal = ZERO
    rework: Decimal = ZERO
    standard_ms: float = 0.0  # sum of PRU x PQ
    # The book was written up to here when this row last changed (the newest row's is the
    # book's mark: where the next booking starts).
    marked: Instant | None = None

    @classmethod
    def of(cls, inst: ShiftInstance) -> ShiftTimes:
        return cls(
            inst.shift_id,
            inst.name,
            inst.day,
            inst.start_ms,
            inst.end_ms,
            inst.operating_ms,
            inst.planned_down_ms,
        )


@dataclass(frozen=True, slots=True)
class StopFacts:
    """What the KPIs need of a stop, by its latest reason."""

    started_ms: int
    reason: str  # the code, "MICRO" or "PENDING"
    planned: bool = False
    micro: bool = False


@dataclass(frozen=True, slots=True)
class Kpis:
    """The time elements and KPIs of one shift, one day, or any set of shifts."""

    shift_id: str
    name: str
    day: date
    start_ms: int
    end_ms: int
    pot_ms: int
    planned_down_ms: int  # planned downtime not worked
    pbt_ms: int
    apt_ms: int
    aust_ms: int
    adet_ms: int
    adot_ms: int
    unbooked_ms: int
    down_by_reason_ms: Mapping[str, int]
    good: Decimal
    scrap: Decimal
    rework: Decimal
    standard_ms: float
    failures: int
    failure_ms: int
    # stops that lost time in the shift, by latest reason (a stop across the shift's end
    # counts in both shifts, one inside a break in neither)
    stops_by_reason: Mapping[str, int] = field(default_factory=dict)

    @property
    def produced(self) -> Decimal:
        return self.good + self.scrap + self.rework

    @property
    def aupt_ms(self) -> int:
        return self.apt_ms + self.aust_ms

    @property
    def aubt_ms(self) -> int:
        return self.aupt_ms + self.adet_ms

    @property
    def availability(self) -> float | None:
        return ratio(self.apt_ms, self.pbt_ms)

    @property
    def effectiveness(self) -> float | None:
        return ratio(self.standard_ms, self.apt_ms)

    @property
    def quality_ratio(self) -> float | None:
        return ratio(float(self.good), float(self.produced))

    @property
    def oee(self) -> float | None:
        a, e, q = self.availability, self.effectiveness, self.quality_ratio
        return None if a is None or e is None or q is None else a * e * q

    @property
    def setup_rate(self) -> float | None:
        return ratio(self.aust_ms, self.aupt_ms)

    @property
    def technical_efficiency(self) -> float | None:
        return ratio(self.apt_ms, self.apt_ms + self.adet_ms)

    @property
    def mtbf_s(self) -> float | None:
        return None if not self.failures else self.apt_ms / self.failures / 1000

    @property
    def mttr_s(self) -> float | None:
        return None if not self.failures else self.failure_ms / self.failures / 1000


def ratio(top: float, bottom: float) -> float | None:
    """``top / bottom``; None where the denominator is 0 (undefined, not 0)."""
    return None if bottom <= 0 else top / bottom


class ShiftBook:
    """The booked shifts of one work center, by shift id (``2026-03-29/night``, and
    ``2026-03-29/unscheduled`` for a day's time outside every shift)."""

    def __init__(self, calendar: ShiftCalendar, shifts: Iterable[ShiftTimes] = ()) -> None:
        self.calendar = calendar
        self.shifts: dict[str, ShiftTimes] = {t.shift_id: t for t in shifts}
        self.touched: set[str] = set()  # shift ids changed since the state last said so
        self._current: ShiftInstance | None = None  # the shift of the last lookup
        # (calendar, from ms, day, its close ms): the next day to close after "from"
        self._next_close: tuple[ShiftCalendar, int, date, int] | None = None
        # (calendar, from ms, ms): the next shift end or day close after "from"
        self._next_end: tuple[ShiftCalendar, int, int] | None = None
        last = max(
            (t for t in self.shifts.values() if t.marked is not None),
            key=lambda t: t.marked.mono_ms if t.marked is not None else 0,
            default=None,
        )
        self._mark = last.marked if last is not None else None
        self._mark_shift = last.shift_id if last is not None else None  # the last mark's bucket

    @property
    def marked(self) -> Instant | None:
        """How far the book is written (None before the first booking)."""
        return self._mark

    def mark(self, now: Instant) -> bool:
        """The book is written up to ``now``; True when that moves it into another bucket
        than the last mark's, whether or not something was booked into the new one already
        (the time up to ``now`` and the parts counted are booked before the mark)."""
        inst = self._instance_at(now.wall_ms)
        t = self._times(inst) if inst is not None else self._day_bucket(now.wall_ms)
        fresh = t.shift_id != self._mark_shift
        t.marked = now
        self._mark = now
        self._mark_shift = t.shift_id
        self.touched.add(t.shift_id)
        return fresh

    # ------------------------------------------------------------------ booking

    def book(
        self, condition: Condition, start_ms: int, end_ms: int, stop_id: str | None = None
    ) -> None:
        """``[start_ms, end_ms)`` spent in ``condition`` (``stop_id``: the open stop)."""
        if end_ms <= start_ms:
            return
        if condition is Condition.STOPPED and not stop_id:
            raise ValueError("a stopped span names its stop")
        inst = self._current
        if inst is not None and inst.start_ms <= start_ms and end_ms <= inst.end_ms:
            # the common case: a span inside the shift of the last booking
            self._add(
                self._times(inst),
                condition,
                end_ms - start_ms,
                inst.planned_in(start_ms, end_ms),
                stop_id,
            )
            return
        cursor = start_ms
        for inst in self.calendar.instances(start_ms, end_ms):
            a, b = max(start_ms, inst.start_ms), min(end_ms, inst.end_ms)
            if a > cursor:
                self._unscheduled(condition, cursor, a, stop_id)
            self._add(self._times(inst), condition, b - a, inst.planned_in(a, b), stop_id)
            cursor = max(cursor, b)
        if cursor < end_ms:
            self._unscheduled(condition, cursor, end_ms, stop_id)

    def count(
        self,
        at_ms: int,
        *,
        good: Decimal = ZERO,
        scrap: Decimal = ZERO,
        rework: Decimal = ZERO,
        run_s_per_unit: float = 0.0,
    ) -> None:
        """Parts made at ``at_ms`` (``run_s_per_unit``: the operation's PRU)."""
        inst = self._instance_at(at_ms)
        t = self._times(inst) if inst is not None else self._day_bucket(at_ms)
        self.touched.add(t.shift_id)
        t.good += good
        t.scrap += scrap
        t.rework += rework
        t.standard_ms += float(good + scrap + rework) * run_s_per_unit * 1000

    def _add(
        self,
        t: ShiftTimes,
        condition: Condition,
        ms: int,
        planned: int,
        stop_id: str | None,
    ) -> None:
        self.touched.add(t.shift_id)
        if condition is Condition.RUNNING:
            t.running_ms += ms
            t.worked_planned_ms += planned
        elif condition is Condition.SETUP:
            t.setup_ms += ms
            t.worked_planned_ms += planned
        elif condition is Condition.STOPPED:
            assert stop_id is not None
            if ms - planned:
                t.stop_ms[stop_id] = t.stop_ms.get(stop_id, 0) + ms - planned
        elif condition is Condition.WAITING:
            t.waiting_ms += ms - planned
        else:
            t.idle_ms += ms - planned

    def _unscheduled(
        self, condition: Condition, start_ms: int, end_ms: int, stop_id: str | None
    ) -> None:
        tz = zone(self.calendar.timezone)
        cursor = start_ms
        while cursor < end_ms:
            t = self._day_bucket(cursor)
            local = datetime.fromtimestamp(cursor / 1000, tz=UTC).astimezone(tz).date()
            nxt = local + timedelta(days=1)
            midnight = local_midnight_ms(nxt, tz)
            b = min(end_ms, midnight)
            self._add(t, condition, b - cursor, 0, stop_id)
            cursor = b

    def _instance_at(self, ms: int) -> ShiftInstance | None:
        inst = self._current
        if inst is None or not inst.contains(ms):
            inst = self.calendar.instance_at(ms)
            if inst is not None:
                self._current = inst
        return inst

    def next_day_close(self, calendar: ShiftCalendar, after_ms: int) -> tuple[date, int]:
        """The first day whose figures are complete after ``after_ms``, and when (see
        :func:`day_close_ms`); cached, since every input that changes the state asks."""
        cached = self._next_close
        if cached is not None and cached[0] is calendar and cached[1] <= after_ms < cached[3]:
            return cached[2], cached[3]
        tz = zone(calendar.timezone)
        # a night shift of the day before may still be open after midnight
        day = datetime.fromtimestamp(after_ms / 1000, tz=UTC).astimezone(tz).date()
        day -= timedelta(days=1)
        close = day_close_ms(calendar, day)
        while close <= after_ms:
            day += timedelta(days=1)
            close = day_close_ms(calendar, day)
        self._next_close = (calendar, after_ms, day, close)
        return day, close

    def set_calendar(self, calendar: ShiftCalendar) -> None:
        """New shifts from now on; what is booked stays as it was."""
        self.calendar = calendar
        self._current = None

    def _times(self, inst: ShiftInstance) -> ShiftTimes:
        t = self.shifts.get(inst.shift_id)
        if t is None:
            t = self.shifts[inst.shift_id] = ShiftTimes.of(inst)
        return t

    def next_end(self, calendar: ShiftCalendar, after_ms: int) -> int:
        """When the next shift ends or the next day's figures are complete after
        ``after_ms``; cached like :meth:`next_day_close`."""
        cached = self._next_end
        if cached is not None and cached[0] is calendar and cached[1] <= after_ms < cached[2]:
            return cached[2]
        ends = [i.end_ms for i in calendar.instances(after_ms, after_ms + 2 * DAY_MS)]
        later = [end for end in ends if end > after_ms]
        nxt = min([self.next_day_close(calendar, after_ms)[1], *later])
        self._next_end = (calendar, after_ms, nxt)
        return nxt

    def _day_bucket(self, ms: int) -> ShiftTimes:
        tz = zone(self.calendar.timezone)
        day = datetime.fromtimestamp(ms / 1000, tz=UTC).astimezone(tz).date()
        key = f"{day.isoformat()}/{UNSCHEDULED}"
        t = self.shifts.get(key)
        if t is None:
            nxt = day + timedelta(days=1)
            start, end = local_midnight_ms(day, tz), local_midnight_ms(nxt, tz)
            t = self.shifts[key] = ShiftTimes(key, UNSCHEDULED, day, start, end, 0, 0)
        return t

    # ------------------------------------------------------------------ reading

    def kpis(self, shift_id: str, stops: Mapping[str, StopFacts]) -> Kpis | None:
        t = self.shifts.get(shift_id)
        return None if t is None else shift_kpis(t, stops)

    def day(self, day: date, stops: Mapping[str, StopFacts]) -> Kpis | None:
        """The shifts that start on ``day`` (those not booked at all too: their time is
        unbooked) and its unscheduled time, together; None for a day with neither."""
        tz = zone(self.calendar.timezone)
        nxt = day + timedelta(days=2)
        start, end = local_midnight_ms(day, tz), local_midnight_ms(nxt, tz)
        times = {t.shift_id: t for t in self.shifts.values() if t.day == day}
        for inst in self.calendar.instances(start, end):
            if inst.day == day and inst.shift_id not in times:
                times[inst.shift_id] = ShiftTimes.of(inst)
        parts = [shift_kpis(t, stops) for t in sorted(times.values(), key=lambda t: t.start_ms)]
        return combine(parts, shift_id=day.isoformat(), name="day") if parts else None


def shift_kpis(t: ShiftTimes, stops: Mapping[str, StopFacts]) -> Kpis:
    """The time elements and KPIs of one booked shift, stops judged by ``stops`` (a stop not
    in it counts as unplanned, reason pending)."""
    adet = adot_stops = failures = failure_ms = 0
    by_reason: dict[str, int] = {}
    counts: dict[str, int] = {}
    for stop_id, ms in t.stop_ms.items():
        facts = stops.get(stop_id) or StopFacts(t.start_ms, "PENDING")
        by_reason[facts.reason] = by_reason.get(facts.reason, 0) + ms
        counts[facts.reason] = counts.get(facts.reason, 0) + 1
        if facts.planned:
            adot_stops += ms
            continue
        adet += ms
        if not facts.micro and t.start_ms <= facts.started_ms < t.end_ms:
            failures += 1
            failure_ms += ms
    planned_down = max(0, t.planned_ms - t.worked_planned_ms)
    adot = t.waiting_ms + t.idle_ms + adot_stops
    booked = t.running_ms + t.setup_ms + adet + adot
    return Kpis(
        shift_id=t.shift_id,
        name=t.name,
        day=t.day,
        start_ms=t.start_ms,
        end_ms=t.end_ms,
        pot_ms=t.operating_ms,
        planned_down_ms=planned_down if t.operating_ms else 0,
        pbt_ms=max(0, t.operating_ms - planned_down) if t.operating_ms else 0,
        apt_ms=t.running_ms,
        aust_ms=t.setup_ms,
        adet_ms=adet,
        adot_ms=adot,
        unbooked_ms=max(0, t.operating_ms - planned_down - booked) if t.operating_ms else 0,
        down_by_reason_ms=by_reason,
        good=t.good,
        scrap=t.scrap,
        rework=t.rework,
        standard_ms=t.standard_ms,
        failures=failures,
        failure_ms=failure_ms,
        stops_by_reason=counts,
    )


def combine(parts: Iterable[Kpis], *, shift_id: str, name: str) -> Kpis:
    """Several shifts' figures as one (a day, a week): time elements and parts add up."""
    items = list(parts)
    if not items:
        raise ValueError("nothing to combine")
    by_reason: dict[str, int] = {}
    counts: dict[str, int] = {}
    for k in items:
        for code, ms in k.down_by_reason_ms.items():
            by_reason[code] = by_reason.get(code, 0) + ms
        for code, n in k.stops_by_reason.items():
            counts[code] = counts.get(code, 0) + n
    return Kpis(
        shift_id=shift_id,
        name=name,
        day=min(k.day for k in items),
        start_ms=min(k.start_ms for k in items),
        end_ms=max(k.end_ms for k in items),
        pot_ms=sum(k.pot_ms for k in items),
        planned_down_ms=sum(k.planned_down_ms for k in items),
        pbt_ms=sum(k.pbt_ms for k in items),
        apt_ms=sum(k.apt_ms for k in items),
        aust_ms=sum(k.aust_ms for k in items),
        adet_ms=sum(k.adet_ms for k in items),
        adot_ms=sum(k.adot_ms for k in items),
        unbooked_ms=sum(k.unbooked_ms for k in items),
        down_by_reason_ms=by_reason,
        good=sum((k.good for k in items), ZERO),
        scrap=sum((k.scrap for k in items), ZERO),
        rework=sum((k.rework for k in items), ZERO),
        standard_ms=sum(k.standard_ms for k in items),
        failures=sum(k.failures for k in items),
        failure_ms=sum(k.failure_ms for k in items),
        stops_by_reason=counts,
    )


# ---------------------------------------------------------------------------------------------
# The work center's book: fed by WorkCenter.apply

KEEP_DAYS = 62  # booked shifts older than this leave the state (two months of history)
DAY_MS = 86_400_000


def calendar_problem(
    shifts: tuple[Shift, ...],
    timezone: str,
    holidays: tuple[date, ...] = (),
    planned: tuple[tuple[int, int, str], ...] = (),
) -> str | None:
    """Why these shifts make no calendar (for the config to refuse them), or None."""
    try:
        _calendar(shifts, timezone, holidays, planned)
    except ValueError as exc:
        return str(exc)
    return None


@lru_cache(maxsize=16)
def calendar_of(
    shifts: tuple[Shift, ...],
    timezone: str,
    holidays: tuple[date, ...] = (),
    planned: tuple[tuple[int, int, str], ...] = (),
) -> ShiftCalendar:
    """The calendar of the configured (or central's) shifts with their weekdays and breaks,
    holidays and planned downtime. A shift ends where the next one on the same day starts,
    should it be configured longer (the shift a moment belongs to is the one that started last
    before it, as for a confirmation's posting date), and a break cut off with it is dropped.
    It never fails: what cannot be a calendar (validated before it reaches the core, so a bug)
    becomes one whole-day shift."""
    try:
        return _calendar(shifts, timezone, holidays, planned)
    except ValueError:
        return ShiftCalendar("UTC", (ShiftPattern("day", 0, MINUTES_PER_DAY),))


def _calendar(
    shifts: tuple[Shift, ...],
    timezone: str,
    holidays: tuple[date, ...],
    planned: tuple[tuple[int, int, str], ...],
) -> ShiftCalendar:
    patterns = []
    for s in shifts:
        gap = min(
            (
                (o.start_minute - s.start_minute) % MINUTES_PER_DAY or MINUTES_PER_DAY
                for o in shifts
                if o.weekdays & s.weekdays or o is s
            ),
            default=MINUTES_PER_DAY,
        )
        length = min(s.length_minutes, gap)
        breaks = tuple(
            Break(name, start, minutes)
            for name, start, minutes in s.breaks
            if (start - s.start_minute) % MINUTES_PER_DAY + minutes <= length
        )
        patterns.append((s.name, s.start_minute, length, s.weekdays, breaks))
    windows = tuple(PlannedWindow(a, b, r) for a, b, r in planned if b > a)
    return ShiftCalendar(
        timezone, tuple(ShiftPattern(*p) for p in patterns), frozenset(holidays), windows
    )


def condition_of(s: WorkCenterState) -> tuple[Condition, str | None]:
    """What the work center is doing now, and the open stop when it stands still."""
    statuses = {op.status for op in s.active}
    if OperationStatus.RUNNING in statuses:
        stop = s.open_stop
        return (Condition.STOPPED, stop.stop_id) if stop is not None else (Condition.RUNNING, None)
    if OperationStatus.SETUP in statuses:
        return Condition.SETUP, None
    if statuses:
        return Condition.WAITING, None
    return Condition.IDLE, None


def on_change(s: WorkCenterState, before: tuple[Condition, str | None], now: Instant) -> None:
    """An input changed the state at ``now``: book the time since the last change in the
    condition that held until now (nothing else could change it: only inputs that change the
    state are journaled, so a replay books the same), and the parts counted by it."""
    book = s.shift_book
    calendar = s.calendar
    if calendar is not book.calendar and calendar != book.calendar:
        book.set_calendar(calendar)  # new shifts apply from now; booked shifts stay as they were
    mark = book.marked
    if mark is not None:
        book_since(book, s, before, mark, now)
    active_refs = []
    for active in s.active_keys:
        _count(book, s.operations[active], now)
        active_refs.append(str(active))
    for table, ref in s.dirty:
        if table == "operation" and ref not in active_refs:
            changed = s.operations.get(OperationKey.parse(ref))
            if changed is not None:
                _count(book, changed, now)  # completed or held by this input: its last parts
    if book.mark(now):  # a new shift began: those too old to keep leave
        cutoff = now.wall_ms - KEEP_DAYS * DAY_MS
        for old in [k for k, t in book.shifts.items() if t.end_ms < cutoff]:
            del book.shifts[old]
            book.touched.add(old)
    for shift_id in book.touched:
        s.touch("shift", shift_id)
    book.touched.clear()


def book_since(
    book: ShiftBook,
    s: WorkCenterState,
    before: tuple[Condition, str | None],
    mark: Instant,
    now: Instant,
) -> None:
    """Book the time from ``mark`` to ``now`` in ``before``; a stop that opened in it, dated
    back (a no-count stop starts at the last count), stands from its own start."""
    # Durations come from the monotonic clock, placed by the wall clock: a wall-clock step
    # back books nothing twice, one forward leaves the gap unbooked.
    end = now.wall_ms
    start = max(mark.wall_ms, end - now.since(mark))
    stop = s.open_stop
    standing = stop is not None and condition_of(s) == (Condition.STOPPED, stop.stop_id)
    if stop is not None and standing and before != (Condition.STOPPED, stop.stop_id):
        split = min(max(stop.start.wall_ms, start), end)
        book.book(before[0], start, split, before[1])
        book.book(Condition.STOPPED, split, end, stop.stop_id)
        return
    book.book(before[0], start, end, before[1])


def _count(book: ShiftBook, op: Operation, now: Instant) -> None:
    counted, booked = op.counted, op.booked
    good = counted.good - booked.good
    scrap = counted.scrap_total - booked.scrap_total
    rework = counted.rework_total - booked.rework_total
    if good or scrap or rework:
        book.count(
            now.wall_ms,
            good=good,
            scrap=scrap,
            rework=rework,
            run_s_per_unit=op.spec.std_cycle_s,
        )
        op.booked = Tally(counted.good, dict(counted.scrap), dict(counted.rework))


def stop_facts(s: WorkCenterState) -> dict[str, StopFacts]:
    """Every known stop as the KPIs judge it: by its latest reason."""
    out: dict[str, StopFacts] = {}
    for stop in s.stops.values():
        reason = s.master_data.stop_reason(stop.reason) if stop.reason else None
        code = stop.reason or ("MICRO" if stop.micro else "PENDING")
        out[stop.stop_id] = StopFacts(
            stop.start.wall_ms, code, planned=bool(reason and reason.planned), micro=stop.micro
        )
    return out


def at_shift_change(s: WorkCenterState, now: Instant) -> None:
    """The shift changed (the confirmations' chapter says so right after): the one that
    ended goes out with its KPIs (``shift_closed``). Under rules of revision 2
    :func:`close_ended` closes shifts instead."""
    previous = s.header.shift_id
    if previous is None or s.rules.revision >= 2:
        return
    name, day = shift_of(now, s.calendar)
    if f"{day.isoformat()}/{name}" == previous:
        return
    ended = closing(s, previous, now)
    if ended is not None:
        s.emit(EventType.SHIFT_CLOSED, now, None, None, **kpis_payload(ended))


def day_close_ms(calendar: ShiftCalendar, day: date) -> int:
    """When ``day``'s figures are complete: at the local midnight that ends it, or when the
    last shift that started on it ends (a night shift), whichever is later."""
    tz = zone(calendar.timezone)
    midnight = local_midnight_ms(day + timedelta(days=1), tz)
    after = local_midnight_ms(day + timedelta(days=2), tz)
    ends = [i.end_ms for i in calendar.instances(local_midnight_ms(day, tz), after) if i.day == day]
    return max([midnight, *ends])


def days_closed(book: ShiftBook, calendar: ShiftCalendar, start_ms: int, end_ms: int) -> list[date]:
    """The days whose figures became complete in ``(start_ms, end_ms]``, oldest first; of a
    longer gap only the last ``KEEP_DAYS`` (older ones are no longer kept)."""
    out: list[date] = []
    after = max(start_ms, end_ms - KEEP_DAYS * DAY_MS)
    while after < end_ms:
        day, close = book.next_day_close(calendar, after)
        if close > end_ms:
            break
        out.append(day)
        after = close
    return out


def at_day_change(s: WorkCenterState, now: Instant) -> None:
    """Before the book is written up to ``now``: each day whose figures became complete since
    its mark goes out with its KPIs (``day_closed``; the shifts that started on the day and
    its unscheduled time together), oldest first. The book's mark moves to ``now`` with the
    booking that follows, so a day goes out once; an input that books nothing asks again at the
    next one (a tick comes every second)."""
    book = s.shift_book
    mark = book.marked
    if mark is None:
        return
    end = now.wall_ms
    start = max(mark.wall_ms, end - now.since(mark))  # as book_since places the span
    for day in days_closed(book, s.calendar, start, end):
        k = closing_day(s, day, now)
        if k is not None:
            s.emit(EventType.DAY_CLOSED, now, None, None, **kpis_payload(k))


# Under rules of revision 2 a wall clock this far behind the last close abandons it: what
# closed before was closed under a clock that was ahead, and closes again as the clock passes.
RECLOSE_BEHIND_MS = 2 * DAY_MS
_PLAUSIBLE_MS = int(EARLIEST_PLAUSIBLE.timestamp() * 1000)


def close_ended(s: WorkCenterState, now: Instant) -> None:
    """Rules of revision 2: each booked shift and each day closes once, after its end.

    Before the book is written up to ``now``, every booked shift that ended (``shift_closed``)
    and every day whose figures became complete (``day_closed``, see :func:`day_close_ms`)
    since the last close goes out, in the order they ended (a shift before a day that ends
    with it), of a longer gap the last ``KEEP_DAYS``. So:

    - a forward step of the wall clock, or a gateway that was off, over an end closes what
      ended (before, a span placed by the monotonic clock skipped it);
    - a step back closes nothing: not the shift that was running (it ends later), and not a
      shift or day that the clock passes a second time (they went out already), unless the
      clock went back more than ``RECLOSE_BEHIND_MS`` (two days): then the clock was ahead
      before and what closes as it passes again goes out again, with the figures booked;
    - a wall clock before ``EARLIEST_PLAUSIBLE`` (a board that booted in 1970) closes nothing
      and abandons nothing.
    """
    wall = now.wall_ms
    if wall < _PLAUSIBLE_MS:
        return
    book = s.shift_book
    header = s.header
    since = header.closed_to_ms
    if since is None:
        mark = book.marked
        if mark is None:
            return
        since = mark.wall_ms
    if wall < since - RECLOSE_BEHIND_MS:
        header.closed_to_ms = wall
        s.touch("work_center", "")
        return
    if wall < book.next_end(s.calendar, since):
        return
    start = max(since, wall - KEEP_DAYS * DAY_MS)
    ended: list[tuple[int, int, str]] = [
        (i.end_ms, 0, i.shift_id)
        for i in s.calendar.instances(start, wall)
        if start < i.end_ms <= wall
    ]
    for day in days_closed(book, s.calendar, start, wall):
        ended.append((day_close_ms(s.calendar, day), 1, day.isoformat()))
    for _, kind, key in sorted(ended):
        if kind == 0:
            k = closing(s, key, now)
            if k is not None:
                s.emit(EventType.SHIFT_CLOSED, now, None, None, **kpis_payload(k))
        else:
            k = closing_day(s, date.fromisoformat(key), now)
            if k is not None:
                s.emit(EventType.DAY_CLOSED, now, None, None, **kpis_payload(k))
    header.closed_to_ms = wall
    s.touch("work_center", "")


def closing_day(s: WorkCenterState, day: date, now: Instant) -> Kpis | None:
    """The KPIs of ``day`` with the time since the last change booked as the condition that
    held (what the next booking will add)."""
    book = s.shift_book
    probe = ShiftBook(
        book.calendar, [copy.deepcopy(t) for t in book.shifts.values() if t.day == day]
    )
    mark = book.marked
    if mark is not None:
        book_since(probe, s, s.condition_before or condition_of(s), mark, now)
    return probe.day(day, stop_facts(s))


def closing(s: WorkCenterState, shift_id: str, now: Instant) -> Kpis | None:
    """The KPIs of a booked shift that ended by ``now``, with the time since the last change
    booked as the condition that held (what the next booking will add)."""
    book = s.shift_book
    if shift_id not in book.shifts:
        return None
    probe = ShiftBook(book.calendar, [copy.deepcopy(book.shifts[shift_id])])
    mark = book.marked
    if mark is not None:
        book_since(probe, s, s.condition_before or condition_of(s), mark, now)
    return probe.kpis(shift_id, stop_facts(s))


def current(s: WorkCenterState, now: Instant) -> Kpis | None:
    """The KPIs of the shift ``now`` falls in (or the day's unscheduled time), with the time
    since the last change booked as the condition that holds now."""
    book = s.shift_book
    probe = ShiftBook(book.calendar)
    inst = book.calendar.instance_at(now.wall_ms)
    bucket = inst.shift_id if inst is not None else probe._day_bucket(now.wall_ms).shift_id
    probe.shifts.clear()
    if bucket in book.shifts:
        probe.shifts[bucket] = copy.deepcopy(book.shifts[bucket])
    mark = book.marked
    if mark is not None:
        book_since(probe, s, condition_of(s), mark, now)
    return probe.kpis(bucket, stop_facts(s)) if bucket in probe.shifts else None


@dataclass(frozen=True, slots=True)
class StopLoss:
    """The time one stop reason cost a shift (outside its planned downtime), and in how many
    stops."""

    reason: str  # the code, "MICRO" or "PENDING" (no reason given yet)
    ms: int
    stops: int


def top_stops(k: Kpis, n: int = 3) -> list[StopLoss]:
    """The ``n`` stop reasons that cost ``k`` the most time, longest first (ties by code)."""
    reasons = sorted(k.down_by_reason_ms.items(), key=lambda item: (-item[1], item[0]))
    return [StopLoss(code, ms, k.stops_by_reason.get(code, 0)) for code, ms in reasons[:n]]


@dataclass(frozen=True, slots=True)
class PartsTarget:
    """What a shift should make: its planned busy time at a standard cycle."""

    cycle_s: float  # the standard cycle the target is counted in
    target: Decimal  # over the shift's whole planned busy time
    due: Decimal  # over its planned busy time up to now


def parts_target(s: WorkCenterState, k: Kpis, now: Instant) -> PartsTarget | None:
    """The parts the shift ``k`` should make: its planned busy time (PBT) divided by a
    standard cycle, whole and up to ``now``.

    The cycle is the mean standard cycle of the parts made in the shift so far (sum of PRU x
    PQ over PQ), so a shift that ran several operations is judged by what it ran and, at its
    end, good / target is its OEE (when nothing went unbooked). Before the shift's first part it
    is the standard cycle of the active operation (the running one first). None without a
    standard (no part with one, no active operation with one) or without planned busy time
    (a day's unscheduled time): the shift shows its parts only."""
    produced = float(k.produced)
    if k.standard_ms > 0 and produced > 0:
        cycle_s = k.standard_ms / produced / 1000
    else:
        ops = sorted(s.active, key=lambda op: op.status is not OperationStatus.RUNNING)
        cycle_s = next((op.spec.std_cycle_s for op in ops if op.spec.std_cycle_s > 0), 0.0)
    if cycle_s <= 0 or k.pbt_ms <= 0:
        return None
    # planned busy time so far: the time since the shift began less its planned downtime
    # so far not worked through (the worked-through part is in PBT, as the whole shift's is)
    inst = s.calendar.instance_at(k.start_ms)
    upto = min(max(now.wall_ms, k.start_ms), k.end_ms)
    planned = inst.planned_in(k.start_ms, upto) if inst is not None else 0
    worked = max(0, (inst.planned_down_ms if inst is not None else 0) - k.planned_down_ms)
    busy = min(k.pbt_ms, max(0, upto - k.start_ms - max(0, planned - worked)))
    per_ms = 1 / (cycle_s * 1000)
    return PartsTarget(cycle_s, Decimal(int(k.pbt_ms * per_ms)), Decimal(int(busy * per_ms)))


def _seconds(ms: float) -> float:
    return round(ms / 1000, 3)


def share(value: float | None) -> float | None:
    """A ratio as the wire and the panel give it: 4 places, None where undefined."""
    return None if value is None else round(value, 4)


def kpis_payload(k: Kpis) -> dict[str, object]:
    """The KPIs of a shift or day as everyone shows them (``edge status``, the panel, the
    contract): seconds, parts as numbers or exact text, ratios rounded to 4 places, None where
    undefined, the stop reasons by time lost, longest first."""

    def iso(ms: int) -> str:
        return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat().replace("+00:00", "Z")

    reasons = sorted(k.down_by_reason_ms.items(), key=lambda item: (-item[1], item[0]))
    return {
        "shift_id": k.shift_id,
        "shift": k.name,
        "day": k.day.isoformat(),
        "start": iso(k.start_ms),
        "end": iso(k.end_ms),
        "time_s": {
            "POT": _seconds(k.pot_ms),
            "planned_down": _seconds(k.planned_down_ms),
            "PBT": _seconds(k.pbt_ms),
            "APT": _seconds(k.apt_ms),
            "AUST": _seconds(k.aust_ms),
            "ADET": _seconds(k.adet_ms),
            "ADOT": _seconds(k.adot_ms),
            "unbooked": _seconds(k.unbooked_ms),
        },
        "good": number(k.good),
        "scrap": number(k.scrap),
        "rework": number(k.rework),
        "availability": share(k.availability),
        "effectiveness": share(k.effectiveness),
        "quality_ratio": share(k.quality_ratio),
        "oee": share(k.oee),
        "setup_rate": share(k.setup_rate),
        "technical_efficiency": share(k.technical_efficiency),
        "failures": k.failures,
        "mtbf_s": None if k.mtbf_s is None else round(k.mtbf_s, 1),
        "mttr_s": None if k.mttr_s is None else round(k.mttr_s, 1),
        "down_by_reason_s": [{"code": code, "s": _seconds(ms)} for code, ms in reasons],
    }
