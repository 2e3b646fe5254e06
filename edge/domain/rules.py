"""The work center's rules: what the plant configured, as the core needs it.

These values come from the config file (``edge.config``) and reach the core as an input of their
own (:class:`edge.domain.inputs.RulesApplied`), so that a journal replay applies the same rules in
the same order as the live run did.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from enum import StrEnum
from itertools import pairwise


class CountKind(StrEnum):
    """What a counter counts: ``total`` counts every part; with scrap, good = total - scrap."""

    GOOD = "good"
    SCRAP = "scrap"
    TOTAL = "total"


class SignalType(StrEnum):
    # a counter value that grows, resets and wraps (PLC, OPC UA, Modbus register)
    ABSOLUTE = "absolute"
    PULSE = "pulse"  # a number of new signals (GPIO edges, counter board deltas)


@dataclass(frozen=True, slots=True)
class CountSource:
    """One counter of one source. Only an authoritative source counts; others are cross-checks."""

    name: str
    kind: CountKind
    signal: SignalType = SignalType.ABSOLUTE
    bits: int = 32  # 16, 32 or 64 (64: never wraps in practice)
    authoritative: bool = True
    max_rate_per_s: float | None = None  # overrides the rate derived from the standard cycle time
    # A cross-check (not authoritative) warns when it and the authoritative source of its kind
    # have counted more than this many signals apart since they last agreed.
    drift_tolerance: int = 10


MINUTES_PER_DAY = 24 * 60
_HHMM = re.compile(r"^(\d{2}):(\d{2})$")


def minute_of_day(hhmm: str, *, allow_24: bool = False) -> int:
    """Minutes after local midnight of a local time of day "HH:MM" (00:00 to 23:59; "24:00", the
    midnight that ends the day, only with ``allow_24``). Anything else raises ValueError."""
    match = _HHMM.match(hhmm)
    hours, minutes = (int(match[1]), int(match[2])) if match else (-1, -1)
    if allow_24 and (hours, minutes) == (24, 0):
        return MINUTES_PER_DAY
    if not (0 <= hours <= 23 and 0 <= minutes <= 59):
        raise ValueError(f'{hhmm!r}: not a local time of day "HH:MM" (00:00 to 23:59)')
    return hours * 60 + minutes


WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
EVERY_DAY = frozenset(range(7))


@dataclass(frozen=True, slots=True)
class Shift:
    """A shift by its local start time on the weekdays it starts on (0 Monday ... 6 Sunday),
    with its breaks (name, local start minute, length in minutes); the posting date is the
    date the shift starts on."""

    name: str
    start_minute: int  # minutes after local midnight
    length_minutes: int
    weekdays: frozenset[int] = EVERY_DAY
    breaks: tuple[tuple[str, int, int], ...] = ()

    @classmethod
    def parse(
        cls,
        name: str,
        start: str,
        end: str,
        weekdays: tuple[str, ...] | list[str] | None = None,
        breaks: tuple[tuple[str, str, str], ...] | list[tuple[str, str, str]] = (),
    ) -> Shift:
        """A shift from its local start and end "HH:MM" (the config's ``[[shifts]]``, central's
        shift calendar). An end not after the start runs past midnight; an end equal to the
        start is a whole day; "24:00" ends at midnight. ``weekdays``: ``mon`` .. ``sun`` (None:
        every day); ``breaks``: (name, start, end). Raises ValueError naming what is wrong (a
        bad time, an unknown weekday, a break outside the shift or overlapping another)."""
        begin = minute_of_day(start)
        finish = minute_of_day(end, allow_24=True)
        length = (finish - begin) % MINUTES_PER_DAY or MINUTES_PER_DAY
        days = EVERY_DAY
        if weekdays is not None:
            unknown = [d for d in weekdays if d.lower() not in WEEKDAYS]
            if unknown:
                raise ValueError(f"weekday {unknown[0]!r} is not one of {', '.join(WEEKDAYS)}")
            days = frozenset(WEEKDAYS.index(d.lower()) for d in weekdays)
            if not days:
                raise ValueError("a shift needs at least one weekday")
        parsed: list[tuple[str, int, int]] = []
        for break_name, break_start, break_end in breaks:
            b_begin = minute_of_day(break_start)
            b_length = (minute_of_day(break_end, allow_24=True) - b_begin) % MINUTES_PER_DAY
            offset = (b_begin - begin) % MINUTES_PER_DAY
            if not b_length or offset + b_length > length:
                raise ValueError(
                    f"break {break_name!r} ({break_start}-{break_end}) is not inside the shift "
                    f"({start}-{end})"
                )
            parsed.append((break_name, b_begin, b_length))
        spans = sorted(((b[1] - begin) % MINUTES_PER_DAY, b[2], b[0]) for b in parsed)
        for (first_at, first_len, first), (second_at, _, second) in pairwise(spans):
            if second_at < first_at + first_len:
                raise ValueError(f"breaks {first!r} and {second!r} overlap")
        return cls(name, begin, length, days, tuple(parsed))


@dataclass(frozen=True, slots=True)
class ConfirmationPolicy:
    """When partial confirmations are made; a final one is always made at completion or split."""

    every_good: Decimal | None = None
    every_minutes: float | None = None
    at_shift_end: bool = False


@dataclass(frozen=True, slots=True)
class StopReason:
    code: str
    text: str
    category: str = "unplanned"  # "planned" or "unplanned" (ISO 22400 ADOT / ADET)

    @property
    def planned(self) -> bool:
        return self.category == "planned"


@dataclass(frozen=True, slots=True)
class ScrapReason:
    code: str
    text: str


@dataclass(frozen=True, slots=True)
class MasterData:
    """Reason catalogues and alarm mapping; sent by central, with defaults from the config."""

    version: int = 0
    stop_reasons: tuple[StopReason, ...] = ()
    scrap_reasons: tuple[ScrapReason, ...] = ()
    alarm_reasons: tuple[tuple[str, str], ...] = ()  # (machine alarm code, stop reason code)
    crew_size: Decimal = Decimal(1)
    # From central, when it plans them; None: the configured shifts and policy stay in force.
    shifts: tuple[Shift, ...] | None = None
    # With central's shifts: its holidays and planned downtime (else the configured ones).
    holidays: tuple[date, ...] = ()
    planned_downtime: tuple[tuple[int, int, str], ...] = ()
    policy: ConfirmationPolicy | None = None

    def stop_reason(self, code: str) -> StopReason | None:
        for reason in self.stop_reasons:
            if reason.code == code:
                return reason
        return None

    def has_scrap_reason(self, code: str) -> bool:
        return any(r.code == code for r in self.scrap_reasons)

    def reason_for_alarm(self, alarm: str) -> str | None:
        for code, reason in self.alarm_reasons:
            if code == alarm:
                return reason
        return None


HELP_CATEGORIES = ("material", "maintenance", "quality", "supervisor")


@dataclass(frozen=True, slots=True)
class BadgeHolder:
    """Who a badge belongs to: their personnel number (what the ERP books labour to; SAP's
    ``Personnel`` takes 8 characters) and the name the panel shows."""

    badge_id: str
    personnel: str
    name: str = ""


class ServiceMeasure(StrEnum):
    """What a maintenance interval counts (edge.domain.machine)."""

    HOURS = "hours"  # hours the machine ran
    STARTS = "starts"  # times it started running
    CYCLES = "cycles"  # machine cycles (strokes, shots): signals of the parts counters
    PARTS = "parts"  # parts made (good, scrap and rework)


@dataclass(frozen=True, slots=True)
class ServiceInterval:
    """A maintenance task due every ``every`` of ``measure`` since it was last done (the
    lubrication every 500 hours, the die every 250,000 strokes)."""

    name: str
    measure: ServiceMeasure
    every: Decimal
    text: str = ""


# The revision of the core's rules this version applies (``WorkCenterRules.revision``). A rule
# that changes what the core decides from the same inputs applies only under rules of its
# revision or later, so a journal written by an older version replays exactly as it was
# written and ``edge verify`` holds across an upgrade.
# 1: a confirmation's period never ends before it starts (edge.domain.confirmations).
# 2: each shift and each day closes once, after its end, whatever the wall clock did
#    (edge.domain.kpis.close_ended).
CURRENT_REVISION = 2


@dataclass(frozen=True, slots=True)
class WorkCenterRules:
    """Everything configurable about how this work center counts, stops and confirms."""

    edge_id: str
    work_center: str
    timezone: str = "UTC"
    sources: tuple[CountSource, ...] = ()
    # Counting (rules.md §3)
    plausibility_factor: float = 3.0  # max rate = factor / standard cycle time
    plausibility_grace_s: float = 10.0  # a reading may run this far ahead of the max rate
    setup_counts_as_good: bool = False  # otherwise counts in setup are setup scrap
    setup_scrap_reason: str = "SETUP"
    machine_scrap_reason: str = "MACHINE"
    # the machine counted the part as good before the operator sorted it out
    operator_scrap_reduces_good: bool = True
    # Lifecycle (rules.md §1, §2)
    family_tool: bool = False
    auto_complete_at_target: bool = False
    # Stops (rules.md §4)
    no_count_factor: float = 3.0
    micro_stop_s: float = 120.0
    # Confirmations (rules.md §6)
    policy: ConfirmationPolicy = field(default_factory=ConfirmationPolicy)
    shifts: tuple[Shift, ...] = (Shift("day", 0, 24 * 60),)
    # The shift calendar's days off (local dates: no shift starts on them) and planned downtime
    # by the clock (UTC epoch ms start, end, reason), for the KPIs (edge.domain.kpis).
    holidays: tuple[date, ...] = ()
    planned_downtime: tuple[tuple[int, int, str], ...] = ()
    variance_threshold: float = 0.25  # relative deviation of the actual from the standard cycle
    variance_reason: str = "CYCLE"
    master_data: MasterData = field(default_factory=MasterData)
    # The operators who may log in here by badge (edge.domain.crew); none: badges are refused.
    badges: tuple[BadgeHolder, ...] = ()
    # Backflushed components are consumed for scrap and rework too, not only for the yield
    # (edge.domain.material).
    backflush_scrap: bool = True
    # rules.md §8: what help can be called for, and when an unanswered call escalates (0: never)
    help_categories: tuple[str, ...] = HELP_CATEGORIES
    help_escalate_after_s: float = 300.0
    # Machine hours (edge.domain.machine): counted from the first rules that say so on (a
    # journal of a version without them replays without them), with the maintenance
    # intervals that fall due on them.
    machine_hours: bool = False
    service: tuple[ServiceInterval, ...] = ()
    # Labour per logged-in operator (edge.domain.crew), from the first rules that say so on.
    labour_per_operator: bool = False
    # Which database generation this is: 0 for the first; one more each time the gateway was
    # told to start on a new, empty database where one existed before (``--new-database``).
    # It keeps the idempotency keys of the new database apart from those already posted.
    key_epoch: int = 0
    # The rules' revision (CURRENT_REVISION when the config made them; 0 in journals of
    # versions before revisions existed).
    revision: int = 0

    @property
    def key_scope(self) -> str:
        """What idempotency keys are made from besides the operation: the edge id, and the
        database generation once there was more than one (the first one's keys stay as
        they always were)."""
        return self.edge_id if self.key_epoch == 0 else f"{self.edge_id}~{self.key_epoch}"

    def source(self, name: str) -> CountSource | None:
        for src in self.sources:
            if src.name == name:
                return src
        return None

    def counts_total(self) -> bool:
        """True when a total counter is authoritative, so scrap counts come out of good."""
        return any(s.kind is CountKind.TOTAL and s.authoritative for s in self.sources)
