"""The things the core keeps: operations, counters, stops, confirmations, unassigned production.

Quantities are :class:`~decimal.Decimal` in the operation's ERP unit, so sums are exact (a
confirmation that differs from the count by 0.0000001 kg is still wrong). Durations are integer
milliseconds of gateway-monotonic time, so they add up exactly as well.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum

from edge.domain.clock import Instant

ZERO = Decimal(0)


@dataclass(frozen=True, slots=True, order=True)
class OperationKey:
    """An operation as ERP names it: order, operation number, and the split index (0 = unsplit)."""

    order: str
    operation: str
    split: int = 0

    def __str__(self) -> str:
        base = f"{self.order}/{self.operation}"
        return f"{base}/{self.split}" if self.split else base

    @classmethod
    def parse(cls, text: str) -> OperationKey:
        """``"4711/0020"`` or ``"4711/0020/1"``; raises ValueError naming the text."""
        parts = text.split("/")
        if len(parts) not in (2, 3) or not all(parts[:2]):
            raise ValueError(f"operation reference {text!r} is not ORDER/OPERATION[/SPLIT]")
        split = 0
        if len(parts) == 3:
            if not parts[2].isdigit():
                raise ValueError(
                    f"operation reference {text!r}: split {parts[2]!r} is not a number"
                )
            split = int(parts[2])
        return cls(parts[0], parts[1], split)


class OperationStatus(StrEnum):
    DISPATCHED = "dispatched"
    SETUP = "setup"
    RUNNING = "running"
    INTERRUPTED = "interrupted"
    HELD = "held"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    MERGED = "merged"  # central merged it into another operation (edge.domain.dispatch)

    @property
    def active(self) -> bool:
        return self in _ACTIVE

    @property
    def finished(self) -> bool:
        return self in _FINISHED


_FINISHED = frozenset(
    {OperationStatus.COMPLETED, OperationStatus.CANCELLED, OperationStatus.MERGED}
)
_ACTIVE = frozenset({OperationStatus.SETUP, OperationStatus.RUNNING, OperationStatus.INTERRUPTED})


@dataclass(frozen=True, slots=True)
class ComponentSpec:
    """A component of an operation as dispatched from ERP (its bill of materials line).

    ``qty_per_unit``: how much of it one unit of the operation takes, in the component's
    ``unit``. A ``backflush`` component's consumption follows from the count
    (edge.domain.material); any other one is consumed as the operator records it. A
    ``batch_managed`` component is booked by batch: its batch is scanned when loaded. ``item``
    (the ERP's reservation item or BOM position) is passed through; ``gtin`` names it on a GS1
    label."""

    material: str
    qty_per_unit: Decimal
    unit: str = "PC"
    backflush: bool = False
    batch_managed: bool = False
    item: str | None = None
    gtin: str | None = None
    material_text: str = ""


@dataclass(frozen=True, slots=True)
class BatchLoad:
    """A batch of a component loaded at the work center for an operation. ``basis``: the
    operation's produced quantity (edge.domain.material) when it was loaded, so that what it
    produced after is booked to this batch until the next one of the same component."""

    material: str
    batch: str
    basis: Decimal
    at: Instant
    actor: str
    expiry: str | None = None


@dataclass(frozen=True, slots=True)
class OperationSpec:
    """An operation as dispatched from ERP, with its standards."""

    order: str
    operation: str
    material: str
    target_qty: Decimal
    unit: str = "PC"
    work_center: str = ""
    sequence: int = 0
    split: int = 0
    material_text: str = ""
    std_setup_s: float = 0.0
    std_cycle_s: float = 0.0  # per unit of the operation
    parts_per_signal: Decimal = Decimal(1)
    due: str | None = None  # ISO date-time from ERP, passed through
    over_tolerance_pct: Decimal | None = None
    under_tolerance_pct: Decimal | None = None
    crew_size: Decimal | None = None
    confirmation_no: str | None = None  # ERP's confirmation number of the operation, passed through
    # Standard cost per unit (the plant's currency), for the WIP value (edge.domain.order_kpis);
    # None: not given. Stored only when set.
    std_cost: Decimal | None = None
    # Its components (edge.domain.material) and the batch the ERP gave what it produces.
    # Stored only when set.
    components: tuple[ComponentSpec, ...] = ()
    batch: str | None = None

    @property
    def key(self) -> OperationKey:
        return OperationKey(self.order, self.operation, self.split)

    def component(self, material: str) -> ComponentSpec | None:
        for c in self.components:
            if c.material == material:
                return c
        return None


@dataclass(slots=True)
class Tally:
    """Quantities and time elements; an operation's counted and confirmed amounts are tallies.

    Keeping both as the same shape makes the sum rule structural: a confirmation is the
    difference ``counted - confirmed`` at one moment, and a reversal adds it back.
    """

    good: Decimal = ZERO
    scrap: dict[str, Decimal] = field(default_factory=dict)
    rework: dict[str, Decimal] = field(default_factory=dict)
    setup_ms: int = 0
    production_ms: int = 0
    down_ms: int = 0
    waiting_ms: int = 0

    def copy(self) -> Tally:
        return Tally(
            self.good,
            dict(self.scrap),
            dict(self.rework),
            self.setup_ms,
            self.production_ms,
            self.down_ms,
            self.waiting_ms,
        )

    def add(self, other: Tally, sign: int = 1) -> None:
        self.good += sign * other.good
        _merge(self.scrap, other.scrap, sign)
        _merge(self.rework, other.rework, sign)
        self.setup_ms += sign * other.setup_ms
        self.production_ms += sign * other.production_ms
        self.down_ms += sign * other.down_ms
        self.waiting_ms += sign * other.waiting_ms

    def minus(self, other: Tally) -> Tally:
        out = self.copy()
        out.add(other, -1)
        return out

    @property
    def scrap_total(self) -> Decimal:
        return sum(self.scrap.values(), ZERO)

    @property
    def rework_total(self) -> Decimal:
        return sum(self.rework.values(), ZERO)

    def has_quantity(self) -> bool:
        return bool(self.good or self.scrap_total or self.rework_total)

    def is_empty(self) -> bool:
        return not self.has_quantity() and not (
            self.setup_ms or self.production_ms or self.down_ms or self.waiting_ms
        )


def _merge(into: dict[str, Decimal], other: dict[str, Decimal], sign: int) -> None:
    for code, qty in other.items():
        value = into.get(code, ZERO) + sign * qty
        if value:
            into[code] = value
        else:
            into.pop(code, None)


@dataclass(slots=True)
class Operation:
    spec: OperationSpec
    status: OperationStatus = OperationStatus.DISPATCHED
    resume_to: OperationStatus | None = None  # where resume goes after an interrupt
    held_from: OperationStatus | None = None  # where release goes after a hold
    counted: Tally = field(default_factory=Tally)
    confirmed: Tally = field(default_factory=Tally)
    conf_count: int = 0
    first_start: Instant | None = None
    accrued_to: Instant | None = None  # time elements are accrued up to this instant
    ended: Instant | None = None
    last_conf_end: Instant | None = None
    last_count: Instant | None = None  # last count, or start of running, for no-count stops
    split_done: bool = False
    target_reached: bool = False
    over_tolerance: bool = False
    over_tolerance_acknowledged: bool = False
    # The final confirmation waits while an earlier one of this operation is rejected by the
    # ERP (domain.md §10.5 rule 2); it is made when that one is resent or reversed.
    final_withheld: bool = False
    final_withheld_variance: str | None = None
    # The quantities of ``counted`` already booked to the shift KPIs (edge.domain.kpis).
    booked: Tally = field(default_factory=Tally)
    # Why it is held, or why it was cancelled, in words (from central or a supervisor); None
    # otherwise. Last, so that the stored form of an operation without one stays as it was.
    status_reason: str | None = None
    # The operation it was merged into (status merged); None otherwise. Stored only when set.
    merged_into: str | None = None
    # When the dispatch list first brought it: the order KPIs' cycle time starts here
    # (edge.domain.order_kpis). Stored only when set.
    dispatched_at: Instant | None = None
    # Its sequence or due date changed after its first dispatch (schedule stability). Stored
    # only when true.
    rescheduled: bool = False
    # Component batches loaded for it, in order (edge.domain.material); stored only when any.
    batch_loads: list[BatchLoad] = field(default_factory=list)
    # Consumption the operator recorded (components not backflushed), and the consumption of
    # every component confirmed so far: material -> batch ("" for none) -> quantity in the
    # component's unit. Stored only when any.
    consumed: dict[str, dict[str, Decimal]] = field(default_factory=dict)
    consumed_confirmed: dict[str, dict[str, Decimal]] = field(default_factory=dict)
    # Setup and production time each logged-in operator was there for (edge.domain.crew),
    # personnel -> ms, and what confirmations took of it. Stored only when any.
    labour: dict[str, int] = field(default_factory=dict)
    labour_confirmed: dict[str, int] = field(default_factory=dict)

    @property
    def key(self) -> OperationKey:
        return self.spec.key

    @property
    def pending(self) -> Tally:
        return self.counted.minus(self.confirmed)


@dataclass(frozen=True, slots=True)
class TimeElements:
    """ISO 22400 time elements of one operation; they add up to first start .. now or end."""

    setup_ms: int
    production_ms: int
    down_ms: int
    down_planned_ms: int
    down_unplanned_ms: int
    down_by_reason_ms: dict[str, int]
    waiting_ms: int

    @property
    def total_ms(self) -> int:
        return self.setup_ms + self.production_ms + self.down_ms + self.waiting_ms


class StopOrigin(StrEnum):
    MACHINE_STATE = "machine_state"
    NO_COUNT = "no_count"


@dataclass(slots=True)
class Stop:
    stop_id: str
    start: Instant
    origin: StopOrigin
    operations: list[str] = field(default_factory=list)  # keys of the operations it stopped
    end: Instant | None = None
    reason: str | None = None
    reason_source: str | None = None  # "alarm", or the actor who gave or changed it
    alarm: str | None = None
    micro: bool = False
    reason_requested: bool = False
    down_ms: dict[str, int] = field(default_factory=dict)  # per operation key: time it stood still
    maintenance_request: str | None = None  # the request raised from it (edge.domain.machine)

    @property
    def open(self) -> bool:
        return self.end is None

    @property
    def reason_pending(self) -> bool:
        """Asked for a reason (long enough to need one: never a micro-stop) and none given."""
        return self.reason is None and not self.micro and self.reason_requested

    def duration_ms(self, now: Instant) -> int:
        return (self.end or now).since(self.start)


@dataclass(frozen=True, slots=True)
class CrewMember:
    """An operator logged in at the work center (edge.domain.crew), since ``since``."""

    personnel: str
    name: str
    badge_id: str
    since: Instant


@dataclass(slots=True)
class ServiceState:
    """Where one maintenance interval stands: the reading of its measure when it was last done
    (or when it was first counted), and since when it is due."""

    name: str
    base: Decimal
    done_at: Instant | None = None
    done_by: str | None = None
    due_at: Instant | None = None


@dataclass(slots=True)
class MachineHours:
    """The machine's running time and starts (edge.domain.machine), since ``since``; cycles
    and parts are kept by each counter (:class:`CounterTrack`). ``mark``: running time is
    added up to here, whenever the machine stops or starts."""

    since: Instant
    mark: Instant
    running: bool = False
    run_ms: int = 0
    starts: int = 0
    service: dict[str, ServiceState] = field(default_factory=dict)


@dataclass(slots=True)
class HelpCall:
    """An open call for help (rules.md §8). Closed calls live on in the events only."""

    call_id: str
    category: str
    raised_at: Instant
    raised_by: str
    note: str | None = None
    acknowledged_at: Instant | None = None
    acknowledged_by: str | None = None
    escalated: bool = False


class ConfirmationStatus(StrEnum):
    AWAITING_RESULT = "awaiting_result"
    POSTED = "posted"
    REJECTED = "rejected"


@dataclass(slots=True)
class Confirmation:
    """One confirmation of one operation, as it goes to the ERP."""

    key: OperationKey
    counter: int
    final: bool
    tally: Tally
    period_start: Instant
    period_end: Instant
    posting_date: str
    shift: str
    variance_reason: str | None
    labour_ms: int
    idem_key: str
    actor: str
    status: ConfirmationStatus = ConfirmationStatus.AWAITING_RESULT
    retries: int = 0
    erp_message: str | None = None
    erp_ref: str | None = None
    reversed: bool = False
    reversal_idem_key: str | None = None
    reversal_status: ConfirmationStatus | None = None
    # Late verdicts that contradicted a final one (rejected after posted, ...): never applied,
    # counted here and shown to the supervisor.
    verdict_conflicts: int = 0
    last_conflict: str | None = None
    # The components it consumed, material -> batch ("" for none) -> quantity (signed: a
    # negative one gives back what an earlier confirmation took). Stored only when any.
    consumption: dict[str, dict[str, Decimal]] = field(default_factory=dict)
    # Labour per logged-in operator in its period, personnel -> ms (edge.domain.crew). Stored
    # only when any.
    labour_by: dict[str, int] = field(default_factory=dict)

    @property
    def conf_id(self) -> str:
        return f"{self.key}#{self.counter}"


@dataclass(slots=True)
class CounterTrack:
    """The last reading of one absolute counter, kept so restarts and link gaps count right."""

    source: str
    last_value: int | None = None
    last_at: Instant | None = None
    # After a source restart the next reading is counted from 0 at the restart.
    restarted_at: Instant | None = None
    # The plausible rate last derived from an active operation, for readings between orders.
    last_rate: float | None = None
    # Signals counted since the gateway first saw this source; kept only where a cross-check
    # compares two sources of one count kind.
    signals: int = 0
    # A cross-check's own and its reference's ``signals`` when they last agreed.
    check_base: tuple[int, int] | None = None
    # Machine cycles and parts this source counted since machine hours were first counted
    # (edge.domain.machine): resets and wraps of the counter are already taken out.
    machine_cycles: int = 0
    machine_parts: Decimal = ZERO


@dataclass(slots=True)
class UnassignedProduction:
    """Parts counted while no operation was active (or it was held); a supervisor assigns them."""

    unassigned_id: str
    start: Instant
    end: Instant
    tally: Tally = field(default_factory=Tally)
    open: bool = True
    assigned_to: str | None = None


def number(value: Decimal) -> int | str:
    """A quantity for a payload: an int when whole, else the exact decimal as text."""
    return int(value) if value == value.to_integral_value() else str(value)
