"""Everything that can happen to a work center, as typed inputs.

Sources, the operator side and the downlink only ever produce these; the engine journals each one
and applies it to the core. Each input carries the instant it was received and, where a person or
system caused it, the actor: ``operator:<id>``, ``button:<id>``, ``machine:<source>``,
``central`` or ``supervisor:<id>``.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

from edge.domain.clock import Instant
from edge.domain.model import OperationSpec
from edge.domain.rules import MasterData, WorkCenterRules

ACTOR_KINDS = ("operator", "button", "machine", "central", "supervisor")


class Action(StrEnum):
    """Lifecycle actions on an operation (rules.md §2)."""

    START_SETUP = "start_setup"
    START_PRODUCTION = "start_production"
    INTERRUPT = "interrupt"
    RESUME = "resume"
    COMPLETE = "complete"
    HOLD = "hold"
    RELEASE = "release"
    CANCEL = "cancel"
    SPLIT = "split"


class MachineState(StrEnum):
    """Machine state as the source templates translate it (PackML, OPC 40001, ...)."""

    RUNNING = "running"
    IDLE = "idle"
    DOWN = "down"
    SETUP = "setup"

    @property
    def stopped(self) -> bool:
        return self in (MachineState.IDLE, MachineState.DOWN)


class ResultStatus(StrEnum):
    """The ERP relay's verdict on a confirmation or reversal."""

    POSTED = "posted"
    DUPLICATE = "duplicate"  # the ERP already had it: as good as posted
    REJECTED = "rejected"
    RETRYING = "retrying"


@dataclass(frozen=True, slots=True)
class CounterReading:
    """An absolute counter value read from a source."""

    source: str
    value: int
    at: Instant


@dataclass(frozen=True, slots=True)
class Pulses:
    """``n`` new signals from a pulse source (GPIO edges, counter board deltas)."""

    source: str
    n: int
    at: Instant


@dataclass(frozen=True, slots=True)
class SourceRestarted:
    """The source says its counters restarted (e.g. OPC UA ServerStatus.StartTime changed)."""

    source: str
    at: Instant


@dataclass(frozen=True, slots=True)
class MachineStateChanged:
    source: str
    state: MachineState
    at: Instant
    alarm: str | None = None


@dataclass(frozen=True, slots=True)
class Tick:
    """Time passes: drives no-count stops, reason requests and time-based confirmations."""

    at: Instant


@dataclass(frozen=True, slots=True)
class Transition:
    """A lifecycle action on one operation (``op`` as ``ORDER/OPERATION[/SPLIT]``)."""

    action: Action
    op: str
    actor: str
    at: Instant
    quantity: Decimal | None = None  # split: the remaining quantity handed back
    variance_reason: str | None = None  # complete or split below the under-delivery tolerance
    reason: str | None = None  # hold or cancel: why, in words (kept on the operation, shown)


@dataclass(frozen=True, slots=True)
class ReportScrap:
    """The operator reports scrap (or rework) with a reason; ``op`` empty means the active one."""

    qty: Decimal
    reason: str
    actor: str
    at: Instant
    op: str = ""
    rework: bool = False


@dataclass(frozen=True, slots=True)
class DeclareSetupGood:
    """First-off parts made in setup were good after all: move them from setup scrap to good."""

    qty: Decimal
    actor: str
    at: Instant
    op: str = ""


@dataclass(frozen=True, slots=True)
class AcknowledgeOverDelivery:
    actor: str
    at: Instant
    op: str = ""


@dataclass(frozen=True, slots=True)
class RequestConfirmation:
    """A confirmation on demand of what is pending (partial; final on a finished operation)."""

    actor: str
    at: Instant
    op: str = ""


@dataclass(frozen=True, slots=True)
class SetStopReason:
    """Give a pending stop its reason, or reclassify one (``stop_id`` empty: the current stop)."""

    reason: str
    actor: str
    at: Instant
    stop_id: str = ""


@dataclass(frozen=True, slots=True)
class AssignUnassigned:
    unassigned_id: str
    op: str
    actor: str
    at: Instant


@dataclass(frozen=True, slots=True)
class ReverseConfirmation:
    op: str
    counter: int
    actor: str
    at: Instant


@dataclass(frozen=True, slots=True)
class ResendConfirmation:
    """Resend a rejected confirmation after correction (same counter, a new idempotency key)."""

    op: str
    counter: int
    actor: str
    at: Instant
    posting_date: str | None = None
    variance_reason: str | None = None


@dataclass(frozen=True, slots=True)
class ConfirmationResult:
    """The ERP relay's answer for one idempotency key (a confirmation or a reversal)."""

    idem_key: str
    status: ResultStatus
    at: Instant
    message: str | None = None
    erp_ref: str | None = None


@dataclass(frozen=True, slots=True)
class CorrectCount:
    """A supervisor corrects the unconfirmed counts of an operation, saying why."""

    op: str
    good_delta: Decimal
    scrap_delta: Decimal
    reason: str  # why, in the supervisor's words
    actor: str
    at: Instant
    scrap_reason: str = ""  # the scrap reason code a scrap correction books to; "": machine


@dataclass(frozen=True, slots=True)
class CallForHelp:
    """An operator or a button calls for help (rules.md §8); the machine may keep running."""

    category: str
    actor: str
    at: Instant
    note: str | None = None


@dataclass(frozen=True, slots=True)
class AcknowledgeHelp:
    """Somebody has seen the call and is coming."""

    call_id: str
    actor: str
    at: Instant


@dataclass(frozen=True, slots=True)
class CloseHelp:
    """The call is dealt with (or was a mistake)."""

    call_id: str
    actor: str
    at: Instant


@dataclass(frozen=True, slots=True)
class DispatchList:
    """The whole dispatch list for this work center (replace semantics), with its version."""

    version: int
    operations: tuple[OperationSpec, ...]
    at: Instant
    actor: str = "central"
    # The list keeps each new operation's dispatch time and marks the ones whose sequence or
    # due date it changes (the order KPIs, edge.domain.order_kpis). False in the journal's
    # entries from before, so that their replay writes what was stored then.
    timed: bool = False


@dataclass(frozen=True, slots=True)
class MergeOperations:
    """Central merges dispatched operations of the same material into one: ``sources`` end
    ``merged`` and ``target`` takes their quantity (their sum with its own, or ``quantity``)
    and the earliest due date (or ``due``)."""

    target: str
    sources: tuple[str, ...]
    at: Instant
    actor: str = "central"
    quantity: Decimal | None = None
    due: str | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class MasterDataReceived:
    master_data: MasterData
    at: Instant


@dataclass(frozen=True, slots=True)
class BadgeScanned:
    """An operator's badge at a scanner (``device``): logs its holder in, or out when they
    are logged in already (edge.domain.crew)."""

    badge_id: str
    device: str
    at: Instant


@dataclass(frozen=True, slots=True)
class ComponentBatchLoaded:
    """A batch of a component loaded for the active operation (or ``op``), named by its
    ``material`` or the ``gtin`` on its label (edge.domain.material)."""

    batch: str
    actor: str
    at: Instant
    material: str | None = None
    gtin: str | None = None
    op: str | None = None
    expiry: str | None = None  # YYYY-MM-DD, from the label


@dataclass(frozen=True, slots=True)
class ComponentConsumed:
    """The operator records consumption of a component that is not backflushed, from the
    loaded batch unless ``batch`` names another."""

    material: str
    qty: Decimal
    actor: str
    at: Instant
    batch: str | None = None
    op: str | None = None


@dataclass(frozen=True, slots=True)
class ServiceDone:
    """Maintenance did the task of a service interval (a supervisor at the panel, or central's
    maintenance system): it is counted again from now."""

    name: str
    actor: str
    at: Instant
    note: str | None = None


@dataclass(frozen=True, slots=True)
class RequestMaintenance:
    """The operator asks maintenance to come, from a stop (``stop_id``) or without one."""

    actor: str
    at: Instant
    stop_id: str | None = None
    note: str | None = None


@dataclass(frozen=True, slots=True)
class RetireFinished:
    """Finished operations, with their confirmations and stops, leave memory (their rows stay
    in the database). The engine names the operations it found ready (edge.domain.retire):
    finished at least ``kept_h`` hours ago, every confirmation answered by the ERP, nothing
    left in the outbox; the core takes those that still are, and the stops nobody needs.
    ``max_kept``: more finished operations than this in memory, and the oldest of them leave
    before ``kept_h`` (everything else that keeps one still does)."""

    ops: tuple[str, ...]
    kept_h: float
    at: Instant
    max_kept: int | None = None


@dataclass(frozen=True, slots=True)
class RulesApplied:
    """The configured rules in force from now on (journaled at start when they changed)."""

    rules: WorkCenterRules
    at: Instant


@dataclass(frozen=True, slots=True)
class DriftReported:
    """The routing-drift review of a period (edge.domain.drift's ``drift_payload``), made from
    the database on the gateway's schedule (``[report]``, edge.report): the core sends it on
    to central planning as it is. ``body`` is its JSON text."""

    body: str
    at: Instant


Input = (
    CounterReading
    | Pulses
    | SourceRestarted
    | MachineStateChanged
    | Tick
    | Transition
    | ReportScrap
    | DeclareSetupGood
    | AcknowledgeOverDelivery
    | RequestConfirmation
    | SetStopReason
    | AssignUnassigned
    | ReverseConfirmation
    | ResendConfirmation
    | ConfirmationResult
    | CorrectCount
    | CallForHelp
    | AcknowledgeHelp
    | CloseHelp
    | DispatchList
    | MergeOperations
    | MasterDataReceived
    | RetireFinished
    | BadgeScanned
    | ComponentBatchLoaded
    | ComponentConsumed
    | ServiceDone
    | RequestMaintenance
    | RulesApplied
    | DriftReported
)

INPUT_TYPES: dict[str, type[Input]] = {
    cls.__name__: cls
    for cls in (
        CounterReading,
        Pulses,
        SourceRestarted,
        MachineStateChanged,
        Tick,
        Transition,
        ReportScrap,
        DeclareSetupGood,
        AcknowledgeOverDelivery,
        RequestConfirmation,
        SetStopReason,
        AssignUnassigned,
        ReverseConfirmation,
        ResendConfirmation,
        ConfirmationResult,
        CorrectCount,
        CallForHelp,
        AcknowledgeHelp,
        CloseHelp,
        DispatchList,
        MergeOperations,
        MasterDataReceived,
        RetireFinished,
        BadgeScanned,
        ComponentBatchLoaded,
        ComponentConsumed,
        ServiceDone,
        RequestMaintenance,
        RulesApplied,
        DriftReported,
    )
}
