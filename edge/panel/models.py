"""The local API's requests and answers; FastAPI's OpenAPI document is generated from these.

Quantities travel as JSON numbers (an integral quantity as an integer), as the panel shows them;
the core keeps them as exact decimals. Every command carries a ``command_id`` the client makes
once per tap, so a double tap or a resend after a lost answer acts only once.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, StrictBool

from edge.domain.limits import MAX_TEXT
from edge.domain.model import ConfirmationStatus, OperationStatus

OP_PATTERN = r"^[^/\s]{1,64}/[^/\s]{1,64}(/\d{1,4})?$"
CODE_PATTERN = r"^[A-Za-z0-9_.:/-]{1,40}$"
NAME_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
# A reason in words from the panel's keyboard: printable on one line (no control characters).
WORDS_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]+$"


def _number(value: Decimal) -> int | float:
    return int(value) if value == value.to_integral_value() else float(value)


# Out: a JSON number. In: an exact decimal (a JSON number or a numeric string).
Qty = Annotated[Decimal, PlainSerializer(_number, return_type=int | float, when_used="json")]
OpRef = Annotated[
    str,
    Field(
        pattern=OP_PATTERN,
        description="the operation as ORDER/OPERATION or ORDER/OPERATION/SPLIT",
        examples=["4711/0020"],
    ),
]
CommandId = Annotated[
    str,
    Field(
        pattern=r"^[A-Za-z0-9_-]{8,64}$",
        description="made by the client once per tap (a UUID); the same id never acts twice",
        examples=["6f1c2b0e-8d4a-4b6e-9a57-0c3f4e2a9b11"],
    ),
]
# A tap on the number pad: positive, at most 6 whole digits and 3 decimals.
TapQty = Annotated[Decimal, Field(gt=0, lt=1_000_000, decimal_places=3)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, str_strip_whitespace=True)


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)


# ------------------------------------------------------------------------- commands (in)


class Command(_In):
    command_id: CommandId
    operator: Annotated[str, Field(pattern=NAME_PATTERN)] | None = Field(
        None, description="who tapped (operator:<id>); default: the panel's configured operator"
    )


class OpCommand(Command):
    op: OpRef


class CompleteCommand(OpCommand):
    variance_reason: Annotated[str, Field(pattern=CODE_PATTERN)] | None = Field(
        None, description="needed when completing below the under-delivery tolerance"
    )


class SplitCommand(OpCommand):
    quantity: TapQty | None = Field(
        None, description="the remaining quantity handed back; default: target minus good"
    )


class ScrapCommand(OpCommand):
    qty: TapQty
    reason: Annotated[str, Field(pattern=CODE_PATTERN)]
    # Strict: "yes", "0" or 1 must not pass for a choice between scrap and rework.
    rework: StrictBool = False


class SetupGoodCommand(OpCommand):
    qty: TapQty = Field(description="first-off parts booked as setup scrap that were good")


class StopReasonCommand(Command):
    reason: Annotated[str, Field(pattern=CODE_PATTERN)]
    stop_id: Annotated[str, Field(max_length=40)] = Field(
        "", description="empty: the open stop, else the latest stop still waiting for a reason"
    )


class HelpCommand(Command):
    category: Annotated[str, Field(pattern=CODE_PATTERN)]


class HelpCallCommand(Command):
    call_id: Annotated[str, Field(min_length=1, max_length=40)]


class PinLogin(_In):
    pin: Annotated[str, Field(min_length=1, max_length=32)]


class ReclassifyCommand(Command):
    stop_id: Annotated[str, Field(min_length=1, max_length=40)]
    reason: Annotated[str, Field(pattern=CODE_PATTERN)]


Words = Annotated[str, Field(min_length=1, max_length=MAX_TEXT, pattern=WORDS_PATTERN)]


class HoldCommand(OpCommand):
    reason: Words = Field(description="why, in words: shown on the panel while it is held")


class CancelCommand(OpCommand):
    reason: Words | None = Field(None, description="why, in words: shown with the cancelled order")


class AssignCommand(OpCommand):
    unassigned_id: Annotated[str, Field(min_length=1, max_length=40, pattern=CODE_PATTERN)]


class ConfirmationCommand(OpCommand):
    counter: Annotated[int, Field(ge=1, le=1_000_000)]


class ResendCommand(ConfirmationCommand):
    posting_date: Annotated[str, Field(pattern=r"^\d{4}-\d{2}-\d{2}$")] | None = None
    variance_reason: Annotated[str, Field(pattern=CODE_PATTERN)] | None = None


# The core checks a batch and a material (edge.domain.material); here only a bound on the body.
ComponentText = Annotated[str, Field(max_length=MAX_TEXT)]


class LoadBatchCommand(OpCommand):
    material: ComponentText = Field(description="the component's material")
    batch: ComponentText = Field(description="the batch loaded for it now, as on its label")


class ConsumeCommand(OpCommand):
    material: ComponentText = Field(description="a component that is not backflushed")
    qty: TapQty = Field(description="how much of it was used, in the component's unit")
    batch: ComponentText | None = Field(None, description="default: the batch loaded now")


class RequestMaintenanceCommand(Command):
    stop_id: Annotated[str, Field(min_length=1, max_length=40)] | None = Field(
        None, description="the stop maintenance is asked for; none: say what is wrong in note"
    )
    note: Words | None = Field(None, description="what is wrong, in words (needed without a stop)")


class ServiceDoneCommand(Command):
    name: Annotated[str, Field(min_length=1, max_length=40)] = Field(
        description="the maintenance interval ([[service]] name) whose task was done"
    )
    note: Words | None = Field(None, description="what was done, in words")


class CorrectCountCommand(OpCommand):
    good_delta: Annotated[Decimal, Field(gt=-1_000_000, lt=1_000_000, decimal_places=3)] = Decimal(
        0
    )
    scrap_delta: Annotated[Decimal, Field(gt=-1_000_000, lt=1_000_000, decimal_places=3)] = Decimal(
        0
    )
    reason: Annotated[str, Field(min_length=1, max_length=200)]
    scrap_reason: Annotated[str, Field(pattern=CODE_PATTERN)] | None = None


# ------------------------------------------------------------------------- answers (out)


class ErrorBody(_Out):
    """Why nothing was done. ``code`` is the core's rejection code or the API's own."""

    ok: Literal[False] = False
    code: str
    message: str
    field: str | None = None
    value: str | int | float | bool | None = None
    state: str | None = None
    action: str | None = None
    retry_after_s: float | None = None


class Reason(_Out):
    code: str
    text: str
    group: str


class TimeElementsOut(_Out):
    """ISO 22400 time elements of one operation, in seconds, up to now."""

    setup_s: float
    production_s: float
    down_s: float
    down_planned_s: float
    down_unplanned_s: float
    waiting_s: float
    down_by_reason_s: dict[str, float]


class QtyByReason(_Out):
    code: str
    text: str
    qty: Qty


class OperationOut(_Out):
    op: str
    order: str
    operation: str
    split: int
    material: str
    material_text: str
    status: OperationStatus
    sequence: int
    target_qty: Qty
    unit: str
    good: Qty
    scrap: Qty
    rework: Qty
    confirmed_good: Qty
    pending_good: Qty
    pending_scrap: Qty
    remaining: Qty = Field(description="target minus good, never below 0")
    due: str | None
    target_reached: bool
    over_tolerance: bool
    over_tolerance_acknowledged: bool
    final_withheld: bool = Field(
        description="its final confirmation waits until a rejected one is resent or reversed"
    )
    under_tolerance_pct: Qty | None
    first_start: str | None
    ended: str | None
    status_reason: str | None = Field(
        None, description="why it is held, or was cancelled (central's or a supervisor's words)"
    )
    parts_per_signal: Qty = Field(Decimal(1), description="parts per machine signal")


class BatchLoadOut(_Out):
    """The batch of a component loaded now: since when and by whom."""

    batch: str
    at: str
    actor: str
    expiry: str | None


class BatchQty(_Out):
    batch: str | None = Field(description="None: booked without a batch")
    qty: Qty


class ComponentOut(_Out):
    """A component of the active operation (edge.domain.material), in its own unit."""

    material: str
    material_text: str
    qty_per_unit: Qty = Field(description="per unit the operation produces")
    unit: str
    backflush: bool = Field(description="consumed by the count; otherwise as recorded")
    batch_managed: bool
    item: str | None
    gtin: str | None
    loaded: BatchLoadOut | None = Field(description="the batch loaded now")
    consumed: list[BatchQty] = Field(description="consumed so far in this operation, per batch")
    pending: list[BatchQty] = Field(
        description="of it, what no confirmation took yet, per batch (negative: given back)"
    )


class ActiveOperation(OperationOut):
    time_elements: TimeElementsOut
    scrap_by_reason: list[QtyByReason]
    setup_scrap_pending: Qty = Field(
        Decimal(0), description="setup scrap not yet confirmed: what may still be declared good"
    )
    components: list[ComponentOut] = Field(default_factory=list)


class StopOut(_Out):
    stop_id: str
    start: str
    end: str | None
    duration_s: float
    origin: str
    open: bool
    reason: str | None
    reason_text: str | None
    reason_source: str | None
    alarm: str | None
    micro: bool
    reason_pending: bool = Field(description="no reason yet and long enough to need one")
    operations: list[str]
    maintenance_request: str | None = Field(
        None, description="the maintenance request raised from this stop (one per stop)"
    )


class ConfirmationOut(_Out):
    conf_id: str
    op: str
    counter: int
    final: bool
    yield_qty: Qty
    scrap_qty: Qty
    rework_qty: Qty
    unit: str
    status: ConfirmationStatus
    erp_message: str | None
    erp_ref: str | None
    retries: int
    reversed: bool
    reversal_status: ConfirmationStatus | None
    posting_date: str
    period_end: str
    actor: str
    # Late verdicts that contradicted the one held (rejected after posted ...): not applied,
    # shown so a supervisor can look into the relay's mapping.
    verdict_conflicts: int = 0
    last_conflict: str | None = None


class UnassignedOut(_Out):
    """Machine signals counted while no operation ran (or it was held), not yet assigned."""

    unassigned_id: str
    start: str
    end: str
    open: bool = Field(description="still counting: nothing runs now")
    good_signals: Qty
    scrap_signals: Qty


CONF_ID_PATTERN = r"^[^/\s]{1,64}/[^/\s]{1,64}(/\d{1,4})?#\d{1,7}$"


class HistoryEntry(_Out):
    """One step of a confirmation: created, sent, the relay's verdicts, resent, reversed."""

    type: Literal["created", "resent", "result", "reversed", "verdict_conflict"]
    at_wall_ms: int
    actor: str | None
    status: str | None = Field(description="the verdict: posted, duplicate, rejected, retrying")
    reversal: bool = Field(description="about the confirmation's reversal")
    message: str | None = Field(description="the ERP's text")
    erp_ref: str | None
    idem_key: str | None
    sent: str | None = Field(
        description="the message it made in the outbox: pending, published or done (acknowledged)"
    )


class ChangeNotice(_Out):
    """Central changed an operation while it was active (a new dispatch list): what changed."""

    notice_id: str = Field(description="the same change keeps its id: a panel acknowledges it once")
    op: str
    at_wall_ms: int
    changes: dict[str, list[str | int | float | bool | None]] = Field(
        description="field: [before, after]"
    )


class ConfirmationHistoryOut(_Out):
    conf_id: str
    entries: list[HistoryEntry] = Field(description="oldest first, as far as events are kept")


class HelpCallOut(_Out):
    call_id: str
    category: str
    raised_at: str
    raised_by: str
    waiting_s: float
    note: str | None
    acknowledged_by: str | None
    escalated: bool


Lamp = Literal["green", "yellow", "red", "red_blink", "blue", "off"]


class StopLossOut(_Out):
    reason: str = Field(description='the code; "PENDING": no reason given, "MICRO": micro-stops')
    reason_text: str | None
    minutes: float
    stops: int


class ShiftView(_Out):
    """The current shift so far (ISO 22400): what the shift tab shows from 2 m."""

    shift_id: str
    shift: str = Field(description='its name; "unscheduled": time outside every shift')
    start: str
    end: str
    oee: float | None = Field(description="None where undefined (shown as a dash, not 0)")
    availability: float | None
    effectiveness: float | None
    quality_ratio: float | None
    good: Qty
    scrap: Qty = Field(description="scrap and rework")
    target: Qty | None = Field(
        description="planned busy time at the standard cycle of the shift's parts; None: "
        "no standard or no planned time"
    )
    target_due: Qty | None = Field(description="of the target, what is due by now")
    cycle_s: float | None
    top_stops: list[StopLossOut] = Field(description="the 3 reasons that cost the most time")


class ServiceOut(_Out):
    """One maintenance interval ([[service]]) as edge.domain.machine counts it."""

    name: str
    measure: Literal["hours", "starts", "cycles", "parts"]
    every: Qty
    since_done: Qty = Field(description="of the measure since the task was last done")
    remaining: Qty = Field(description="until it falls due; below 0: overdue by that much")
    due: bool
    due_since: str | None
    done_at: str | None = Field(description="when the task was last done; None: never here")
    text: str


class MachineOut(_Out):
    """The machine's hours, starts, cycles and parts, counted since ``since``."""

    since: str
    running: bool
    hours: Qty = Field(description="running hours, to three places")
    starts: int
    cycles: int
    parts: Qty
    service: list[ServiceOut] = Field(description="the intervals, the due ones first")


class ScanOut(_Out):
    """The newest scan of the work center's barcode scanner ([scanner])."""

    seq: int = Field(description="rises with every scan: a new one is shown once")
    at: str
    code: str = Field(description="as scanned (the group separator shown as <GS>)")
    ok: bool = Field(description="taken; false: refused, nothing changed")
    message: str = Field(description="what it did, or why it was refused")


class PanelState(_Out):
    """Everything the panel shows, in one snapshot; also what the event stream sends."""

    work_center: str
    edge_id: str
    boot: int = Field(description="changes when the daemon restarted: a stale page notices")
    revision: int = Field(description="grows with every commit seen in this boot")
    assets: str = Field(description="version of the panel's files; a change reloads the page")
    now: str
    language: str
    operator: str
    machine_state: str | None
    machine_alarm: str | None
    lamp: Lamp
    state_key: str = Field(description="i18n key of the big state label")
    family_tool: bool
    active: list[ActiveOperation]
    dispatch: list[OperationOut] = Field(description="operations not finished, in sequence")
    finished: list[OperationOut] = Field(description="the most recently finished operations")
    stop: StopOut | None = Field(description="the open stop")
    pending_stops: list[StopOut] = Field(description="stops still waiting for a reason")
    stops: list[StopOut] = Field(description="the most recent stops, newest first")
    confirmations: list[ConfirmationOut] = Field(description="newest first")
    stop_reasons: list[Reason]
    scrap_reasons: list[Reason]
    variance_reasons: list[str]
    help_categories: list[str]
    help_calls: list[HelpCallOut]
    notices: list[ChangeNotice] = Field(
        default_factory=list, description="the latest change central made to each active operation"
    )
    unassigned: list[UnassignedOut] = Field(
        default_factory=list, description="production not assigned yet, newest first"
    )
    supervisor_configured: bool
    shift: ShiftView | None = Field(None, description="the current shift so far")
    scan: ScanOut | None = Field(None, description="the newest scan ([scanner] enabled)")
    disk_low: bool = Field(
        False,
        description="machine counts are refused: the database's disk is below "
        "[retention] min_free_mb (sent with the next snapshot or heartbeat)",
    )
    max_text: int = Field(MAX_TEXT, description="the longest reason in words the gateway takes")
    machine: MachineOut | None = Field(
        None, description="machine hours and maintenance intervals; None: not counted"
    )
    maintenance_due: bool = Field(
        False, description="a maintenance interval is due (the andon's maintenance_due)"
    )


class CommandResult(_Out):
    ok: Literal[True] = True
    command_id: str
    duplicate: bool = Field(description="true: this command was already carried out before")
    events: list[str]
    state: PanelState


class LoginOut(_Out):
    ok: Literal[True] = True
    supervisor: str
    token: str
    session_s: float


class Health(_Out):
    ok: bool
    boot: int
    revision: int
    engine_healthy: bool
    # Machine counts are refused: the database's disk is below [retention] min_free_mb.
    disk_low: bool = False
