"""The shift calendar: when the work center is planned to work (ISO 22400-2 planned operation
time), its breaks and planned downtime, and which shift a moment belongs to.

A calendar is a time zone, shift patterns, holidays and planned downtime windows:

- a :class:`ShiftPattern` starts at a local time on the weekdays it names (the weekday it
  *starts* on: a night shift Monday 22:00 to Tuesday 06:00 is Monday's) and lasts so many
  minutes of local wall-clock time; its :class:`Break` s are local times inside it;
- a holiday is a local date on which no shift starts;
- a :class:`PlannedWindow` is planned downtime by the clock (maintenance, no orders, a
  stocktake), from central or the configuration, in UTC.

A :class:`ShiftInstance` is one pattern on one day: its start and end in UTC epoch
milliseconds and the planned downtime inside it (its breaks and the windows that overlap it,
merged). Shifts start and end by the plant's wall clock, so a shift across a daylight-saving
change is an hour shorter or longer in real time: Europe/Berlin's night shift 22:00-06:00 is
7 h in the night to the last Sunday of March and 9 h in the night to the last Sunday of
October. A local time that does not exist (02:30 on the spring-forward night) is read with the
offset in force before the change, so it is an hour later in real time; an ambiguous one (02:30
twice in October) is the first.

The calendar reads no clock and no file: the time zone's rules come with the name (the standard
library's ``zoneinfo``), moments come in as epoch milliseconds.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from itertools import pairwise
from zoneinfo import ZoneInfo

from edge.domain.clock import Instant
from edge.domain.rules import MINUTES_PER_DAY, Shift

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
ALL_DAYS = frozenset(range(7))
MINUTES_PER_WEEK = 7 * MINUTES_PER_DAY
MAX_WINDOWS = 10_000
MAX_REASON = 200


@lru_cache(maxsize=16)
def zone(name: str) -> ZoneInfo:
    """The time zone of an IANA name; ValueError for one that does not exist."""
    try:
        return ZoneInfo(name)
    except (ValueError, KeyError) as exc:
        raise ValueError(f"timezone = {name!r}: not a time zone name ({exc})") from None


def _ms(moment: datetime) -> int:
    return round(moment.timestamp() * 1000)


def _local(day: date, minute: int, tz: ZoneInfo) -> datetime:
    """``minute`` minutes of wall-clock time after local midnight of ``day`` (past 1440: on the
    following days), as an aware local time."""
    days, rest = divmod(minute, MINUTES_PER_DAY)
    d = day + timedelta(days=days)
    return datetime(d.year, d.month, d.day, rest // 60, rest % 60, tzinfo=tz)


def local_midnight_ms(day: date, tz: ZoneInfo) -> int:
    """Epoch milliseconds of the local midnight that begins ``day``."""
    return _ms(_local(day, 0, tz))


def merge(spans: Iterable[tuple[int, int, str]]) -> tuple[tuple[int, int, str], ...]:
    """Sorted, overlapping or touching spans joined (the first's reason names the union);
    empty spans dropped."""
    out: list[tuple[int, int, str]] = []
    for start, end, reason in sorted(s for s in spans if s[1] > s[0]):
        if out and start <= out[-1][1]:
            last = out[-1]
            out[-1] = (last[0], max(last[1], end), last[2])
        else:
            out.append((start, end, reason))
    return tuple(out)


def overlap(a_start: int, a_end: int, b_start: int, b_end: int) -> int:
    return max(0, min(a_end, b_end) - max(a_start, b_start))


@dataclass(frozen=True, slots=True)
class Break:
    """A planned break inside a shift, by local start time and length."""

    name: str
    start_minute: int
    length_minutes: int


@dataclass(frozen=True, slots=True)
class ShiftPattern:
    """A shift on the weekdays it starts on (0 Monday ... 6 Sunday)."""

    name: str
    start_minute: int
    length_minutes: int
    weekdays: frozenset[int] = ALL_DAYS
    breaks: tuple[Break, ...] = ()

    def __post_init__(self) -> None:
        if not self.name or len(self.name) > 64:
            raise ValueError(f"shift name = {self.name!r}: 1 to 64 characters")
        if not 0 <= self.start_minute < MINUTES_PER_DAY:
            raise ValueError(f"shift {self.name!r}: start minute {self.start_minute} not 0-1439")
        if not 0 < self.length_minutes <= MINUTES_PER_DAY:
            raise ValueError(f"shift {self.name!r}: length {self.length_minutes} min not 1-1440")
        if not self.weekdays or not self.weekdays <= ALL_DAYS:
            raise ValueError(f"shift {self.name!r}: weekdays {sorted(self.weekdays)} not 0-6")
        # Breaks inside the shift and apart from each other: Shift.parse (rules) is where that
        # is judged; here only what a break outside would break, its time.
        for b in self.breaks:
            if self.break_offset(b) + b.length_minutes > self.length_minutes:
                raise ValueError(f"shift {self.name!r}: break {b.name!r} is not inside the shift")

    def break_offset(self, b: Break) -> int:
        """Minutes from the shift's start to the break's (a 02:00 break in a 22:00 shift: 240)."""
        return (b.start_minute - self.start_minute) % MINUTES_PER_DAY

    @classmethod
    def of(cls, shift: Shift) -> ShiftPattern:
        """The pattern of a shift of the rules (whose parse judged its times and breaks)."""
        return cls(
            shift.name,
            shift.start_minute,
            shift.length_minutes,
            shift.weekdays,
            tuple(Break(name, start, minutes) for name, start, minutes in shift.breaks),
        )

    @classmethod
    def parse(
        cls,
        name: str,
        start: str,
        end: str,
        weekdays: Sequence[str] | None = None,
        breaks: Sequence[tuple[str, str, str]] = (),
    ) -> ShiftPattern:
        """From local "HH:MM" times, weekday names and breaks (name, start, end), as
        :meth:`edge.domain.rules.Shift.parse` reads them; ValueError names what is wrong."""
        days = None if weekdays is None else list(weekdays)
        return cls.of(Shift.parse(name, start, end, days, list(breaks)))


@dataclass(frozen=True, slots=True)
class PlannedWindow:
    """Planned downtime by the clock, UTC epoch milliseconds ``[start_ms, end_ms)``."""

    start_ms: int
    end_ms: int
    reason: str = "planned"

    def __post_init__(self) -> None:
        if self.end_ms <= self.start_ms:
            raise ValueError(f"planned window {self.reason!r}: its end is not after its start")
        if not self.reason or len(self.reason) > MAX_REASON:
            raise ValueError(f"planned window reason = {self.reason!r}: 1 to {MAX_REASON} chars")


@dataclass(frozen=True, slots=True)
class ShiftInstance:
    """One shift on one day: UTC epoch milliseconds, with the planned downtime inside it."""

    name: str
    day: date  # the local date it starts on (its posting date)
    start_ms: int
    end_ms: int
    planned: tuple[tuple[int, int, str], ...] = ()  # merged, sorted, inside [start, end)
    shift_id: str = field(init=False, compare=False)  # "<day>/<name>"

    def __post_init__(self) -> None:
        object.__setattr__(self, "shift_id", f"{self.day.isoformat()}/{self.name}")

    @property
    def operating_ms(self) -> int:
        """Planned operation time (POT): the shift's length in real time."""
        return self.end_ms - self.start_ms

    @property
    def planned_down_ms(self) -> int:
        return sum(end - start for start, end, _ in self.planned)

    def planned_in(self, start_ms: int, end_ms: int) -> int:
        """Milliseconds of ``[start_ms, end_ms)`` that are planned downtime of this shift."""
        return sum(overlap(start_ms, end_ms, s, e) for s, e, _ in self.planned)

    def contains(self, ms: int) -> bool:
        return self.start_ms <= ms < self.end_ms


@dataclass(frozen=True, slots=True)
class ShiftCalendar:
    """Shift patterns in a time zone, holidays and planned downtime windows."""

    timezone: str = "UTC"
    shifts: tuple[ShiftPattern, ...] = ()
    holidays: frozenset[date] = frozenset()
    planned: tuple[PlannedWindow, ...] = ()
    _tz: ZoneInfo = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_tz", zone(self.timezone))
        if len(self.planned) > MAX_WINDOWS:
            raise ValueError(f"planned: {len(self.planned)} windows, at most {MAX_WINDOWS}")
        names = [s.name for s in self.shifts]
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"shift name {name!r} is used twice")
        # No two shifts may overlap in the week (by local minutes; a daylight-saving change
        # cannot make them overlap, since both move with the wall clock).
        spans: list[tuple[int, int, str]] = []
        for s in self.shifts:
            for day in s.weekdays:
                start = day * MINUTES_PER_DAY + s.start_minute
                spans.append((start, start + s.length_minutes, s.name))
                if start + s.length_minutes > MINUTES_PER_WEEK:  # Sunday into Monday
                    spans.append(
                        (
                            start - MINUTES_PER_WEEK,
                            start + s.length_minutes - MINUTES_PER_WEEK,
                            s.name,
                        )
                    )
        spans.sort()
        for (_, end, first), (start, _, second) in pairwise(spans):
            if start < end:
                raise ValueError(f"shifts {first!r} and {second!r} overlap")

    def instances(self, start_ms: int, end_ms: int) -> list[ShiftInstance]:
        """Every shift that overlaps ``[start_ms, end_ms)``, in time order."""
        if end_ms <= start_ms or not self.shifts:
            return []
        tz = self._tz
        first = datetime.fromtimestamp(start_ms / 1000, tz=UTC).astimezone(tz).date()
        last = datetime.fromtimestamp(end_ms / 1000, tz=UTC).astimezone(tz).date()
        out: list[ShiftInstance] = []
        day = first - timedelta(days=1)  # a shift of the day before may run into the range
        while day <= last:
            if day not in self.holidays:
                for pattern in self.shifts:
                    if day.weekday() not in pattern.weekdays:
                        continue
                    inst = self._instance(pattern, day)
                    if inst.end_ms > start_ms and inst.start_ms < end_ms:
                        out.append(inst)
            day += timedelta(days=1)
        out.sort(key=lambda i: i.start_ms)
        return out

    def instance_at(self, ms: int) -> ShiftInstance | None:
        """The shift ``ms`` falls in, or None outside every shift."""
        for inst in self.instances(ms, ms + 1):
            if inst.contains(ms):
                return inst
        return None

    def _instance(self, pattern: ShiftPattern, day: date) -> ShiftInstance:
        tz = self._tz
        start = _ms(_local(day, pattern.start_minute, tz))
        end = _ms(_local(day, pattern.start_minute + pattern.length_minutes, tz))
        spans = []
        for b in pattern.breaks:
            offset = pattern.start_minute + pattern.break_offset(b)
            spans.append(
                (
                    _ms(_local(day, offset, tz)),
                    _ms(_local(day, offset + b.length_minutes, tz)),
                    b.name,
                )
            )
        for w in self.planned:
            if w.end_ms > start and w.start_ms < end:
                spans.append((max(w.start_ms, start), min(w.end_ms, end), w.reason))
        clipped = [(max(s, start), min(e, end), r) for s, e, r in spans]
        return ShiftInstance(pattern.name, day, start, max(end, start), merge(clipped))


WEEK_MS = 7 * 86_400_000


def shift_of(at: Instant, calendar: ShiftCalendar) -> tuple[str, date]:
    """The shift ``at`` falls in: (shift name, the local date the shift started on).

    A night shift 22:00-06:00 that ends at 02:00 on the 4th belongs to the 3rd. Where the
    calendar has a gap (a weekend, a holiday, between shifts), the shift that started last
    before ``at`` (within a week) is taken; with none, the calendar day ("day").
    """
    inst = calendar.instance_at(at.wall_ms)
    if inst is None:
        earlier = [
            i
            for i in calendar.instances(at.wall_ms - WEEK_MS, at.wall_ms + 1)
            if i.start_ms <= at.wall_ms
        ]
        inst = max(earlier, key=lambda i: i.start_ms) if earlier else None
    if inst is None:
        return "day", at.wall().astimezone(zone(calendar.timezone)).date()
    return inst.name, inst.day
