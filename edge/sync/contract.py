"""The MQTT contract with central: every topic, and the payload model of every message.

These pydantic models are the single source of truth: the gateway validates inbound messages
with them, the tests validate every outbound message the broker carries against them, and
``edge contract`` generates the AsyncAPI document and JSON Schemas in ``contract/`` from them.

Topics are relative to the work center's root, ``umh/v1/<enterprise>/<site>/<area>/<line>/
<workcenter>`` by default. Business messages (``_mes_v1``) are wrapped in an :class:`Envelope`;
time series (``_historian``) use the UMH shape ``{timestamp_ms, value}``.

Versioning: the ``_mes_v1`` segment is the major version. Within it, fields are only ever added
(consumers must ignore fields they do not know); a breaking change makes ``_mes_v2``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any, Final, Generic, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import from_json

from edge.domain import drift as D
from edge.domain import limits as L
from edge.domain.kpis import calendar_problem
from edge.domain.rules import Shift

CONTRACT_VERSION = "1.8.0"
MAX_INBOUND_BYTES = 256 * 1024
# Nesting depth of an inbound JSON document: the deepest valid message has 5 levels.
MAX_JSON_DEPTH = 32
MAX_MSG_ID = 64


class BadJson(ValueError):
    """An inbound payload that is not a JSON document the gateway will read (the text says why)."""


def parse_json(payload: bytes, *, max_bytes: int = MAX_INBOUND_BYTES) -> Any:
    """Parse an inbound payload with bounds on its size, its nesting and its numbers.

    The standard library's parser recurses once per level, so a deeply nested document of a few
    hundred kilobytes raises RecursionError (or worse) in the middle of the daemon; it also
    reads ``NaN`` and ``Infinity``. pydantic's parser is iterative in effect (it stops at a
    recursion limit with a ValueError) and refuses those literals; a number too large for a
    float becomes infinity, which the models refuse. Nesting is checked here as well, with a
    bound of our own, in one pass over the bytes that skips strings.
    """
    if len(payload) > max_bytes:
        raise BadJson(f"payload of {len(payload)} bytes is over the limit of {max_bytes}")
    depth = _max_depth(payload)
    if depth > MAX_JSON_DEPTH:
        raise BadJson(f"nested {depth} levels deep; at most {MAX_JSON_DEPTH} are allowed")
    try:
        return from_json(payload, allow_inf_nan=False)
    except ValueError as exc:
        raise BadJson(f"not JSON: {exc}") from None


def _max_depth(payload: bytes) -> int:
    """The deepest nesting of arrays and objects, ignoring brackets inside strings.

    Escapes first: an escaped backslash and an escaped quote are dropped (in that order, so
    ``\\\\"`` still ends its string), then what stands between two quotes is a string and is
    left out. What remains outside strings is counted in one pass."""
    text = payload.replace(b"\\\\", b"").replace(b'\\"', b"")
    outside = b"".join(text.split(b'"')[0::2]).translate(None, _NOT_BRACKETS)
    deepest = depth = 0
    for byte in outside:
        if byte in _OPEN:
            depth += 1
            if depth > deepest:
                deepest = depth
        else:
            depth -= 1
    return deepest


_OPEN = frozenset(b"[{")
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")

# Whole numbers as integers, exact decimals as text ("12.5"): a float would round.
DecimalText = Annotated[str, StringConstraints(pattern=r"^-?[0-9]+(\.[0-9]+)?$")]
Quantity = int | Decimal | DecimalText
Code = Annotated[str, StringConstraints(min_length=1, max_length=40, strip_whitespace=True)]
Ident = Annotated[str, StringConstraints(min_length=1, max_length=40, pattern=r"^[^/+#\s]+$")]


class _Strict(BaseModel):
    """Inbound: unknown fields are an error, so a typo in central's message is caught.

    Every number has bounds (``edge/domain/limits.py``), floats are finite, and so the published
    JSON Schemas tell central what the gateway accepts."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


# Inbound numbers, bounded (see edge/domain/limits.py for why each bound is where it is).
Version = Annotated[int, Field(ge=1, le=L.MAX_INT)]
Seq = Annotated[int, Field(ge=1, le=L.MAX_INT)]
Split = Annotated[int, Field(ge=0, le=L.MAX_SPLIT)]


def _limits(low: Decimal, high: Decimal, *, above: bool = False) -> Any:
    """Bounds for an exact decimal in ``[low, high]`` (``(low, high]`` with ``above``), with at
    most 6 places."""
    digits = len(str(int(high))) + L.QUANTITY_PLACES
    if above:
        return Field(gt=low, le=high, max_digits=digits, decimal_places=L.QUANTITY_PLACES)
    return Field(ge=low, le=high, max_digits=digits, decimal_places=L.QUANTITY_PLACES)


def _schema(low: Decimal, high: Decimal, *, above: bool = False) -> WithJsonSchema:
    """The same bounds in the JSON Schema: a number, or a decimal text of the allowed size."""
    bound = {"exclusiveMinimum" if above else "minimum": float(low), "maximum": float(high)}
    pattern = rf"^[0-9]{{1,{len(str(int(high)))}}}(\.[0-9]{{1,{L.QUANTITY_PLACES}}})?$"
    return WithJsonSchema(
        {"anyOf": [{"type": "number", **bound}, {"type": "string", "pattern": pattern}]}
    )


_ZERO = Decimal(0)
PositiveQty = Annotated[
    Decimal, _limits(_ZERO, L.MAX_QUANTITY, above=True), _schema(_ZERO, L.MAX_QUANTITY, above=True)
]
PartsPerSignal = Annotated[
    Decimal,
    _limits(L.MIN_PARTS_PER_SIGNAL, L.MAX_PARTS_PER_SIGNAL),
    _schema(L.MIN_PARTS_PER_SIGNAL, L.MAX_PARTS_PER_SIGNAL),
]
Percent = Annotated[
    Decimal, _limits(_ZERO, L.MAX_TOLERANCE_PCT), _schema(_ZERO, L.MAX_TOLERANCE_PCT)
]
Crew = Annotated[
    Decimal, _limits(_ZERO, L.MAX_CREW, above=True), _schema(_ZERO, L.MAX_CREW, above=True)
]
EveryGood = Annotated[
    Decimal, _limits(Decimal(1), L.MAX_QUANTITY), _schema(Decimal(1), L.MAX_QUANTITY)
]


def _open_schema(schema: dict[str, Any]) -> None:
    schema.pop("additionalProperties", None)


class _Open(BaseModel):
    """Outbound: we publish exactly these fields (our tests forbid others), while the published
    JSON Schemas allow more, because consumers must ignore fields a later 1.x adds."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, json_schema_extra=_open_schema)


# ---------------------------------------------------------------------------------------- down


Batch = Annotated[str, StringConstraints(min_length=1, max_length=40, pattern=r"^\S(?:.*\S)?$")]


class ComponentMsg(_Strict):
    """A component of an operation (its bill of materials line)."""

    material: Code
    material_text: str = Field("", max_length=L.MAX_TEXT)
    qty_per_unit: PositiveQty = Field(
        description="quantity of the component per unit of the operation, in `unit`"
    )
    unit: Code = "PC"
    backflush: bool = Field(
        False, description="consumed by the count; otherwise as the operator records it"
    )
    batch_managed: bool = Field(False, description="booked by batch: its batch is scanned")
    item: str | None = Field(
        None, max_length=40, description="the ERP's reservation item or BOM position"
    )
    gtin: str | None = Field(
        None, pattern=r"^[0-9]{8,14}$", description="the GTIN on its labels (GS1 AI 01)"
    )


class OperationMsg(_Strict):
    """One operation of the dispatch list, with the ERP's standards."""

    order_id: Ident
    operation: Ident
    split: Split = 0
    material: Code
    material_text: str = Field("", max_length=L.MAX_TEXT)
    quantity: PositiveQty = Field(description="target quantity in `unit`")
    unit: Code = "PC"
    sequence: int = Field(0, ge=-L.MAX_SEQUENCE, le=L.MAX_SEQUENCE)
    planned_setup_s: float = Field(0.0, ge=0, le=L.MAX_SETUP_S)
    planned_run_s_per_unit: float = Field(
        0.0, ge=0, le=L.MAX_CYCLE_S, description="standard cycle time per unit"
    )
    parts_per_signal: PartsPerSignal = Field(
        Decimal(1), description="parts per machine signal; fixed once the operation has started"
    )
    latest_end: str | None = Field(
        None, max_length=40, description="due date-time from the ERP, ISO 8601"
    )
    over_tolerance_pct: Percent | None = None
    under_tolerance_pct: Percent | None = None
    crew_size: Crew | None = None
    confirmation_no: str | None = Field(None, max_length=40)
    standard_cost: PositiveQty | None = Field(
        None, description="standard cost per unit, in the plant's currency: the WIP value"
    )
    components: list[ComponentMsg] = Field(
        default_factory=list,
        max_length=100,
        description="its components; fixed once the operation has started",
    )
    batch: Batch | None = Field(
        None, description="the batch the ERP gave what this operation produces"
    )


class DispatchListBody(_Strict):
    """The whole dispatch list of the work center; replaces the one held if newer."""

    version: Version
    operations: list[OperationMsg] = Field(max_length=2000)


class OperationKeyMsg(_Strict):
    """One operation by its key."""

    order_id: Ident
    operation: Ident
    split: Split = 0


class OperationRefBody(_Strict):
    """Names one operation: cancel, hold or release it."""

    order_id: Ident
    operation: Ident
    split: Split = 0
    reason: str | None = Field(None, max_length=L.MAX_TEXT)


class ServiceDoneBody(_Strict):
    """Central's maintenance system did a service task of the gateway's ``[[service]]``: the
    interval is counted again from now (``maintenance_done`` on ``maintenance``)."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,40}$")]
    note: str | None = Field(None, max_length=L.MAX_TEXT)


class MergeBody(_Strict):
    """Merge dispatched operations of the same material into one: the sources end ``merged``
    and the target takes the sum of all quantities (or ``quantity``) and the earliest due date
    (or ``latest_end``). Only operations nothing has happened to yet take part."""

    order_id: Ident = Field(description="the operation that remains (the target)")
    operation: Ident
    split: Split = 0
    sources: list[OperationKeyMsg] = Field(
        min_length=1, max_length=L.MAX_MERGE, description="the operations merged into it"
    )
    quantity: PositiveQty | None = Field(
        None, description="the target's quantity after the merge; default: the sum"
    )
    latest_end: str | None = Field(
        None, max_length=40, description="the due date after the merge; default: the earliest"
    )
    reason: str | None = Field(None, max_length=L.MAX_TEXT)


class ResyncBody(_Strict):
    """Central lost track: republish the snapshot and health, and optionally replay the
    business messages from ``from_seq`` on (consumers de-duplicate by ``msg_id``)."""

    from_seq: Seq | None = None


class StopReasonMsg(_Strict):
    code: Code
    text: str = Field(max_length=L.MAX_TEXT)
    category: Literal["planned", "unplanned"] = "unplanned"


class ScrapReasonMsg(_Strict):
    code: Code
    text: str = Field(max_length=L.MAX_TEXT)


_HHMM = Annotated[str, StringConstraints(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")]
_HHMM_END = Annotated[str, StringConstraints(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$|^24:00$")]


class BreakMsg(_Strict):
    """A planned break inside its shift, by local start and end ("HH:MM")."""

    name: Code
    start: _HHMM
    end: _HHMM_END


class ShiftMsg(_Strict):
    """A shift by local start and end ("HH:MM"); an end not after the start runs past midnight.
    ``weekdays``: the days it starts on (default every day); ``breaks`` inside it."""

    name: Code
    start: _HHMM
    end: _HHMM_END
    weekdays: list[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]] | None = Field(
        None, min_length=1, max_length=7
    )
    breaks: list[BreakMsg] = Field(default_factory=list, max_length=10)

    def to_domain(self) -> Shift:
        """The core's shift; ValueError names a break outside the shift or overlapping."""
        return Shift.parse(
            self.name,
            self.start,
            self.end,
            None if self.weekdays is None else list(self.weekdays),
            [(b.name, b.start, b.end) for b in self.breaks],
        )

    @model_validator(mode="after")
    def _breaks_inside(self) -> ShiftMsg:
        self.to_domain()  # a ValueError becomes the message's validation error
        return self


_ISO_DATE = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
_ISO_MOMENT = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,6})?)?"
    r"(Z|[+-][0-9]{2}:[0-9]{2})$"
)
IsoDate = Annotated[str, StringConstraints(pattern=_ISO_DATE)]
IsoMoment = Annotated[str, StringConstraints(pattern=_ISO_MOMENT, max_length=40)]


def _moment(text: str, name: str) -> datetime:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{name} = {text!r}: not a date-time") from None


class PlannedWindowMsg(_Strict):
    """Planned downtime by the clock (ISO 8601 date-times with an offset: ``Z`` or ``+01:00``)."""

    start: IsoMoment
    end: IsoMoment
    reason: str = Field("planned", min_length=1, max_length=200)

    @model_validator(mode="after")
    def _end_after_start(self) -> PlannedWindowMsg:
        if _moment(self.end, "end") <= _moment(self.start, "start"):
            raise ValueError("end must be after start")
        return self

    def span_ms(self) -> tuple[int, int]:
        start, end = _moment(self.start, "start"), _moment(self.end, "end")
        return round(start.timestamp() * 1000), round(end.timestamp() * 1000)


class ConfirmationPolicyMsg(_Strict):
    """When the gateway makes partial confirmations (a final one always at completion)."""

    every_good: EveryGood | None = None
    every_minutes: float | None = Field(None, ge=L.MIN_EVERY_MINUTES, le=L.MAX_EVERY_MINUTES)
    at_shift_end: bool = False


class MasterDataBody(_Strict):
    """Reason catalogues, alarm mapping, crew size, and optionally the shift calendar and the
    partial-confirmation policy; replaces the config's defaults."""

    version: Version
    # At least one: without stop reasons no stop could ever be given its reason.
    stop_reasons: list[StopReasonMsg] = Field(min_length=1, max_length=L.MAX_CATALOGUE)
    scrap_reasons: list[ScrapReasonMsg] = Field(default_factory=list, max_length=L.MAX_CATALOGUE)
    alarm_reasons: dict[Code, Code] = Field(default_factory=dict, max_length=L.MAX_CATALOGUE)
    crew_size: Crew = Decimal(1)
    shifts: list[ShiftMsg] | None = Field(None, min_length=1, max_length=24)
    # With shifts: the calendar's days off (local dates) and planned downtime.
    holidays: list[IsoDate] = Field(default_factory=list, max_length=1000)
    planned_downtime: list[PlannedWindowMsg] = Field(default_factory=list, max_length=1000)
    confirmation_policy: ConfirmationPolicyMsg | None = None

    @model_validator(mode="after")
    def _a_calendar(self) -> MasterDataBody:
        for text in self.holidays:
            try:
                date.fromisoformat(text)
            except ValueError:
                raise ValueError(f"holidays: {text!r} is not a date") from None
        if self.shifts:
            why = calendar_problem(tuple(s.to_domain() for s in self.shifts), "UTC")
            if why is not None:
                raise ValueError(f"shifts: {why}")
        return self


class ErpError(_Strict):
    text: str = Field(max_length=1000)
    code: str | None = Field(None, max_length=40)


ErpKey = Annotated[str, StringConstraints(min_length=1, max_length=64)]
ErpValue = Annotated[str, StringConstraints(max_length=L.MAX_TEXT)]


class ConfirmationResultBody(_Strict):
    """The ERP relay's verdict on one confirmation or reversal, by its idempotency key."""

    idem_key: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    status: Literal["posted", "duplicate", "rejected", "retrying"]
    error: ErpError | None = None
    erp: dict[ErpKey, ErpValue] | None = Field(
        None, max_length=20, description="the ERP's keys for the posting"
    )
    ts: str | None = Field(None, max_length=40)
    latency_ms: int | None = Field(
        None,
        ge=0,
        le=L.MAX_INT,
        description="with `posted`: from the machine event (`ts_event_ms`) to the ERP posting",
    )


class InboundEnvelope(_Strict):
    """What central sends: an id (quoted back when the message is rejected) and the body."""

    schema_: str = Field(alias="schema", max_length=64)
    msg_id: Annotated[str, StringConstraints(min_length=1, max_length=MAX_MSG_ID)]
    ts_ms: int | None = Field(None, ge=0, le=L.MAX_INT)
    body: dict[str, Any]


# ------------------------------------------------------------------------------------------ up


class OrderFields(_Open):
    type: str
    event_time: str
    order_id: str | None = None
    operation: str | None = None
    split: int | None = None
    actor: str | None = None


class ComponentOut(_Open):
    material: str
    qty_per_unit: Quantity
    unit: str
    backflush: bool
    batch_managed: bool
    item: str | None


class OrderEventBody(OrderFields):
    """An operation's lifecycle and dispatch events (``type`` says which)."""

    type: Literal[
        "operation_dispatched",
        "operation_changed",
        "operation_withdrawn",
        "operation_state_changed",
        "picked_out_of_sequence",
        "operation_split",
        "operation_merged",
        "target_reached",
        "over_tolerance",
        "over_tolerance_acknowledged",
        "dispatch_conflict",
        "count_corrected",
        "final_confirmation_withheld",
        "confirmation_verdict_conflict",
    ]
    from_: str | None = Field(None, alias="from")
    to: str | None = None
    action: str | None = None
    expected: str | None = None
    sequence: int | None = None
    remainder_op: str | None = None
    # operation_merged: the operations merged into this one (they end merged, merged_into it)
    sources: list[str] | None = None
    remainder_qty: Quantity | None = None
    done_qty: Quantity | None = None
    good: Quantity | None = None
    target: Quantity | None = None
    tolerance_pct: Quantity | None = None
    conflict: str | None = None
    status: str | None = None
    active: bool | None = None
    changes: dict[str, list[Any]] | None = None
    material: str | None = None
    target_qty: Quantity | None = None
    unit: str | None = None
    std_setup_s: float | None = None
    std_cycle_s: float | None = None
    due: str | None = None
    components: list[ComponentOut] | None = None
    batch: str | None = None
    good_delta: Quantity | None = None
    scrap_delta: Quantity | None = None
    scrap_reason: str | None = None
    reason: str | None = None
    blocked_by: str | None = None
    erp_message: str | None = None
    # confirmation_verdict_conflict: the confirmation, its key, whether it is the reversal,
    # the verdict held (status) and the contradicting one that was not applied
    conf_id: str | None = None
    idem_key: str | None = None
    reversal: bool | None = None
    verdict: str | None = None


class DispatchReceivedBody(OrderFields):
    type: Literal["dispatch_applied"]
    version: int
    operations: list[str]


class ScrapBody(OrderFields):
    type: Literal["scrap_reported", "setup_parts_declared_good"]
    qty: Quantity
    kind: Literal["scrap", "rework"] | None = None
    reason: str | None = None
    from_good: bool | None = None


class AndonBody(OrderFields):
    """A call for help (rules.md §8): raised, acknowledged, escalated, closed."""

    type: Literal["help_called", "help_acknowledged", "help_escalated", "help_closed"]
    call_id: str
    category: str
    note: str | None = None
    machine_state: str | None = None
    waited_ms: int | None = None
    duration_ms: int | None = None
    acknowledged_by: str | None = None


class QuantityByReason(_Open):
    code: str
    qty: Quantity


class CounterEventBody(OrderFields):
    """Counter resets, wraps, restarts, discontinuities and unassigned production."""

    type: Literal[
        "counter_discontinuity",
        "counter_reset",
        "counter_wrapped",
        "counter_drift",
        "source_restarted",
        "unassigned_production",
        "unassigned_assigned",
    ]
    source: str | None = None
    previous: int | None = None
    value: int | None = None
    counted: int | None = None
    max_rate_per_s: float | None = None
    unassigned_id: str | None = None
    phase: Literal["opened", "closed"] | None = None
    # counter_drift: the cross-check, its reference (the authoritative source), what each
    # counted since they last agreed, and the tolerance that was exceeded
    reference: str | None = None
    checked: int | None = None
    tolerance: int | None = None
    start: str | None = None
    end: str | None = None
    yield_qty: Quantity | None = None
    scrap_qty: Quantity | None = None
    rework_qty: Quantity | None = None
    scrap_by_reason: list[QuantityByReason] | None = None
    rework_by_reason: list[QuantityByReason] | None = None


class StopBody(OrderFields):
    type: Literal[
        "stop_started",
        "stop_ended",
        "stop_reason_requested",
        "stop_reason_set",
        "stop_reclassified",
    ]
    stop_id: str
    origin: Literal["machine_state", "no_count"] | None = None
    operations: list[str] | None = None
    alarm: str | None = None
    duration_s: float | None = None
    micro: bool | None = None
    reason: str | None = None
    source: str | None = None
    old_reason: str | None = None
    new_reason: str | None = None


class GoodsMovementMsg(_Open):
    """A component consumed (``issue``) or given back (``return``) with a confirmation."""

    material: str = Field(max_length=40)
    batch: str | None = Field(max_length=40, description="null: none (or none was scanned)")
    qty: Quantity = Field(description="in `unit`, never negative: `direction` says which way")
    unit: str = Field(max_length=40)
    direction: Literal["issue", "return"]
    backflush: bool = Field(description="derived from the count, not recorded")
    item: str | None = Field(max_length=40, description="the ERP's reservation item")
    batch_missing: bool = Field(
        description="batch-managed, but produced before any batch of it was scanned"
    )


class MaterialBody(OrderFields):
    """Component batches loaded and consumption recorded at the work center (genealogy)."""

    type: Literal["component_batch_loaded", "component_consumed"]
    material: str = Field(max_length=40)
    batch: str | None = Field(None, max_length=40)
    previous_batch: str | None = Field(None, max_length=40)
    produced: Quantity | None = Field(
        None, description="what the operation had produced when the batch was loaded"
    )
    qty: Quantity | None = None
    unit: str | None = None
    expiry: str | None = Field(None, max_length=10)


class ServiceStanding(_Open):
    """Where one maintenance interval stands (``[[service]]`` of the gateway's config)."""

    name: str = Field(max_length=40)
    measure: Literal["hours", "starts", "cycles", "parts"]
    every: Quantity
    since_done: Quantity = Field(description="of `measure` since it was last done or configured")
    remaining: Quantity = Field(description="until it is due; negative once overdue")
    due: bool
    due_since: str | None
    done_at: str | None
    text: str = Field(max_length=L.MAX_TEXT)


class MaintenanceBody(OrderFields):
    """Machine hours and maintenance: a service interval fell due or was done, the operator
    asked for maintenance (from a stop, or with a note), the machine's counters at each
    shift change."""

    type: Literal["maintenance_due", "maintenance_done", "maintenance_requested", "machine_hours"]
    # maintenance_due, maintenance_done
    name: str | None = Field(None, max_length=40)
    measure: Literal["hours", "starts", "cycles", "parts"] | None = None
    every: Quantity | None = None
    since_done: Quantity | None = None
    due_since: str | None = None
    done_at: str | None = None
    text: str | None = Field(None, max_length=L.MAX_TEXT)
    note: str | None = Field(None, max_length=L.MAX_TEXT)
    # maintenance_requested
    request_id: str | None = None
    stop_id: str | None = None
    stop_started: str | None = None
    stop_reason: str | None = None
    stop_open: bool | None = None
    alarm: str | None = None
    operations: list[str] | None = None
    # machine_hours (hours also with a request)
    shift: str | None = None
    since: str | None = Field(None, description="when the gateway began to count them")
    running: bool | None = None
    hours: Quantity | None = Field(None, description="hours the machine ran, to 0.001 h")
    starts: int | None = None
    cycles: int | None = None
    parts: Quantity | None = None
    service: list[ServiceStanding] | None = None


class CrewBody(OrderFields):
    """An operator logged in or out at the work center by badge (a shift change logs
    everyone out): who, and who is logged in now."""

    type: Literal["operator_logged_in", "operator_logged_out"]
    personnel: str = Field(max_length=20)
    name: str = Field(max_length=100)
    device: str = Field(max_length=100)
    crew: list[str] = Field(description="the personnel numbers logged in after it")
    reason: Literal["badge", "shift_end"] | None = None
    logged_in_ms: int | None = Field(None, description="how long they were logged in")


class Activities(_Open):
    setup_s: float
    machine_s: float
    labour_s: float


class LabourMsg(_Open):
    """The setup and production time of the period an operator was logged in for."""

    personnel: str = Field(max_length=20)
    labour_s: float


class Iso22400Times(_Open):
    AUST_s: float = Field(description="actual unit setup time")
    APT_s: float = Field(description="actual production time")
    ADT_s: float = Field(description="actual unit down time")
    waiting_s: float


class Totals(_Open):
    yield_qty: Quantity
    scrap_qty: Quantity
    rework_qty: Quantity
    scrap_by_reason: list[QuantityByReason]
    rework_by_reason: list[QuantityByReason]


class ConfirmationBody(OrderFields):
    """A partial or final operation confirmation, as the ERP relay posts it."""

    type: Literal["confirmation_created", "confirmation_resent"]
    conf_id: str
    idem_key: str
    confirmation_no: str | None
    conf_index: int
    kind: Literal["partial", "final"]
    final: bool
    unit: str
    material: str
    work_center: str
    yield_qty: Quantity
    scrap_qty: Quantity
    rework_qty: Quantity
    scrap_by_reason: list[QuantityByReason]
    rework_by_reason: list[QuantityByReason]
    variance_reason: str | None
    posting_date: str
    shift: str
    period_start: str
    period_end: str
    activities: Activities
    labour_by_operator: list[LabourMsg] = Field(
        default_factory=list,
        description="per operator logged in by badge (none logged in: empty; `activities` "
        "keeps the standard crew's labour)",
    )
    iso22400: Iso22400Times
    retry: int
    totals_to_date: Totals | None = None
    goods_movements: list[GoodsMovementMsg] = Field(default_factory=list)
    batch: str | None = Field(None, description="the batch the ERP gave the produced quantity")


class ConfirmationCancelBody(OrderFields):
    """Reverses an earlier confirmation (its ``reverses_idem_key``)."""

    type: Literal["confirmation_reversed"]
    conf_id: str
    conf_index: int
    idem_key: str
    reverses_idem_key: str
    yield_qty: Quantity
    scrap_qty: Quantity
    rework_qty: Quantity
    scrap_by_reason: list[QuantityByReason]
    rework_by_reason: list[QuantityByReason]
    goods_movements: list[GoodsMovementMsg] = Field(
        default_factory=list, description="the goods movements the reversal takes back"
    )


class RejectedBody(_Open):
    """An inbound message the gateway refused; nothing was changed."""

    msg_id: str | None = Field(description="the refused message's msg_id, if it had one")
    topic: str
    reason: str
    field: str | None = None
    value: str | None = None
    ts_ms: int


class ActiveOperation(_Open):
    op: str
    status: str
    material: str
    target_qty: Quantity
    good: Quantity
    scrap: Quantity
    unit: str


class SnapshotBody(_Open):
    """Retained: the work center now (≈ a Sparkplug birth certificate)."""

    edge_id: str
    work_center: str
    boot_seq: int
    dispatch_version: int
    machine_state: str | None
    open_stop: str | None
    active: list[ActiveOperation]
    dispatched: list[str]
    ts_ms: int


class HealthBody(_Open):
    """Retained; if the gateway vanishes, the broker publishes its Last Will in its place:
    ``{"online": false, "edge_id": ..., "links": {}}`` (:func:`gateway_last_will`)."""

    online: bool
    edge_id: str
    boot_seq: int | None = None
    sw_version: str | None = None
    uptime_s: float | None = None
    outbox_depth: int | None = None
    oldest_unacked_age_s: float | None = None
    last_puback_ms: int | None = None
    # False while the ERP relay says it is offline: confirmations are then withheld (queued).
    relay_online: bool | None = None
    # False while the gateway's wall clock is before a plausible time (a Pi without a real-time
    # clock before NTP): event times are then not to be trusted; durations still are.
    clock_trusted: bool | None = None
    # True while the database's disk has less free space than [retention] min_free_mb: new
    # machine counts are refused (the sources keep them) until space returns; the backlog and
    # everything else go on.
    disk_low: bool | None = None
    links: dict[str, str] = Field(default_factory=dict)
    ts_ms: int | None = None


def gateway_last_will(edge_id: str) -> bytes:
    """The gateway's Last Will on ``{root}/_mes_v1/health`` (retained, QoS 1): the one definition
    the gateway connects with and the AsyncAPI document shows."""
    return HealthBody(online=False, edge_id=edge_id).model_dump_json(exclude_none=True).encode()


class RelayStateBody(_Open):
    """Retained under the enterprise (``umh/v1/<enterprise>/_mes_v1/relay/state``): is the ERP
    relay there. The gateways withhold confirmations while it says ``"online": false``; the
    relay's Last Will says so when it vanishes."""

    online: bool
    ts_ms: int | None = Field(None, ge=0, le=L.MAX_INT, description="when the relay said it")


def relay_last_will() -> bytes:
    """The ERP relay's Last Will on ``relay/state`` (retained, QoS 1): ``{"online": false}``."""
    return RelayStateBody(online=False).model_dump_json(exclude_none=True).encode()


class RelayKpiBody(_Open):
    """Retained: one work center's confirmation latency (machine event to ERP posting) over the
    last ``window_s``, nearest-rank percentiles in milliseconds, from the ERP relay."""

    metric: Literal["confirmation_latency"]
    erp: str = Field(max_length=40, description="the ERP system the relay posts to")
    window_s: float = Field(ge=0, le=30 * 86_400)
    count: int = Field(ge=1, le=L.MAX_INT, description="postings in the window")
    p50_ms: int = Field(ge=0, le=L.MAX_INT)
    p95_ms: int = Field(ge=0, le=L.MAX_INT)
    max_ms: int = Field(ge=0, le=L.MAX_INT)
    ts_ms: int = Field(ge=0, le=L.MAX_INT)


_Secs = Annotated[float, Field(ge=0, le=1e9)]
_Share = Annotated[float, Field(ge=0, le=1)]
_Rate = Annotated[float, Field(ge=0, le=1e6)]


class ShiftTimesMsg(_Open):
    """ISO 22400-2 time elements of the shift, in seconds: POT = planned_down + APT + AUST +
    ADET + ADOT + unbooked (time the gateway did not see); PBT = POT - planned_down."""

    POT: _Secs
    planned_down: _Secs
    PBT: _Secs
    APT: _Secs
    AUST: _Secs
    ADET: _Secs
    ADOT: _Secs
    unbooked: _Secs


class ReasonTime(_Open):
    code: str = Field(max_length=40, description="a stop reason, MICRO or PENDING")
    s: _Secs


class ShiftKpiFields(_Open):
    """A shift's ISO 22400-2 KPIs (edge.domain.kpis); a ratio is null where it is undefined
    (no planned busy time, no production)."""

    shift_id: str = Field(max_length=80, description="<local date it started>/<shift name>")
    shift: str = Field(max_length=64, description="the shift's name, or 'unscheduled'")
    day: str = Field(max_length=10, description="the local date the shift started on")
    start: str = Field(max_length=40)
    end: str = Field(max_length=40)
    time_s: ShiftTimesMsg
    good: Quantity
    scrap: Quantity
    rework: Quantity
    availability: _Share | None = Field(description="APT / PBT")
    effectiveness: _Rate | None = Field(description="planned run time x produced / APT")
    quality_ratio: _Share | None = Field(description="good / (good + scrap + rework)")
    oee: _Rate | None = Field(description="availability x effectiveness x quality ratio")
    setup_rate: _Share | None = Field(description="AUST / (APT + AUST)")
    technical_efficiency: _Share | None = Field(description="APT / (APT + ADET)")
    failures: int = Field(ge=0, le=L.MAX_INT, description="unplanned stops, not micro-stops")
    mtbf_s: _Secs | None = None
    mttr_s: _Secs | None = None
    down_by_reason_s: list[ReasonTime] = Field(max_length=1000)


class ShiftClosedBody(ShiftKpiFields):
    """A shift ended: its KPIs as they stand at its end (later reason changes do not follow)."""

    type: Literal["shift_closed"]
    event_time: str


class DayClosedBody(ShiftKpiFields):
    """A day's figures are complete (at its local midnight, or when a night shift that started
    on it ends): the shifts that started on it and its unscheduled time together, as they
    stand then. ``shift_id`` is the local date and ``shift`` is ``day``."""

    type: Literal["day_closed"]
    event_time: str


_Signed = Annotated[float, Field(ge=-1e9, le=1e9)]


class OperationKpiBody(OrderFields):
    """An operation completed: its order KPIs (edge.domain.order_kpis) and its own ISO 22400-2
    figures. Durations in seconds; null where undefined (no due date, no dispatch time kept,
    a denominator of 0)."""

    type: Literal["operation_kpis"]
    material: str = Field(max_length=L.MAX_TEXT)
    target_qty: Quantity
    good: Quantity
    scrap: Quantity
    rework: Quantity
    due: str | None = Field(None, max_length=L.MAX_TEXT, description="as the ERP sent it")
    on_time: bool | None = Field(description="ended at or before the due date")
    lateness_s: _Signed | None = Field(description="end - due; negative: early")
    cycle_s: _Secs | None = Field(description="first dispatch to completion")
    queue_s: _Secs | None = Field(description="dispatched, before the first start")
    setup_s: _Secs
    running_s: _Secs = Field(description="production time: the value-add part")
    down_s: _Secs = Field(description="stops while running")
    waiting_s: _Secs = Field(description="interrupted or held")
    value_add_ratio: _Share | None = Field(description="running / cycle time")
    rescheduled: bool = Field(description="its sequence or due date changed after dispatch")
    std_cycle_s: _Secs
    std_setup_s: _Secs
    effectiveness: _Rate | None = Field(description="standard cycle x produced / running")
    quality_ratio: _Share | None = Field(description="good / (good + scrap + rework)")
    setup_rate: _Share | None = Field(description="setup / (setup + running)")
    technical_efficiency: _Share | None = Field(
        description="running / (running + unplanned down time)"
    )


class ShiftNowBody(ShiftKpiFields):
    """Retained: the current shift's KPIs so far, refreshed with the health message."""

    edge_id: str
    ts_ms: int = Field(ge=0, le=L.MAX_INT)


# The routing-drift report (edge.domain.drift: one definition for `edge report drift` and this
# message); every number bounded where drift_payload caps it.
_DriftS = Annotated[float, Field(ge=0, le=D.MAX_PAYLOAD_S)]
_DriftH = Annotated[float, Field(ge=0, le=D.MAX_PAYLOAD_H)]
_ImpactH = Annotated[float, Field(ge=-D.MAX_PAYLOAD_H, le=D.MAX_PAYLOAD_H)]
_Count = Annotated[int, Field(ge=0, le=L.MAX_INT)]
_PARTS_MAX = Decimal(10**15)
PartsTotal = Annotated[Decimal, _limits(_ZERO, _PARTS_MAX), _schema(_ZERO, _PARTS_MAX)]


class DriftFigureMsg(_Open):
    """Actual against the ERP's standard for one time (cycle per unit, or setup) of a material
    and operation, over its completed operations."""

    standard_s: _DriftS = Field(
        description="the standard of the latest completed operation (the routing in force); "
        "0: the ERP gave none"
    )
    samples: _Count = Field(description="operations that gave a value")
    median_s: _DriftS | None
    q1_s: _DriftS | None = Field(description="first quartile (the spread: q1_s to q3_s)")
    q3_s: _DriftS | None
    drift_pct: float | None = Field(
        ge=-100, le=D.MAX_PAYLOAD_PCT, description="median / standard - 1, in percent"
    )
    flagged: bool = Field(description="drift beyond the threshold, with enough operations")
    impact_h: _ImpactH = Field(
        description="hours misplanned: sum over the operations of (actual - standard) x quantity"
    )
    standards_s: list[_DriftS] = Field(
        max_length=1000, description="every standard seen in the period, when they differ"
    )


class DriftRowMsg(_Open):
    rank: int = Field(ge=1, le=L.MAX_INT, description="by the size of impact_h, largest first")
    material: str = Field(max_length=40)
    material_text: str = Field(max_length=L.MAX_TEXT)
    operation: str = Field(max_length=40)
    unit: str = Field(max_length=40)
    operations: int = Field(ge=1, le=L.MAX_INT, description="completed in the period")
    parts: PartsTotal = Field(description="good + scrap + rework, in `unit`")
    run_h: _DriftH
    micro_stop_h: _DriftH
    planned_stop_h: _DriftH
    unplanned_stop_h: _DriftH
    cycle: DriftFigureMsg
    setup: DriftFigureMsg
    impact_h: _ImpactH = Field(description="cycle and setup together")
    flagged: bool


class DriftReportBody(_Open):
    """The ERP's standard setup and cycle times against the work center's completed operations
    of a period, per material and operation, by hours of capacity misplanned."""

    type: Literal["routing_drift"]
    event_time: str = Field(max_length=40, description="when the report was made")
    work_center: str = Field(max_length=80)
    period_start: str = Field(max_length=40)
    period_end: str = Field(max_length=40, description="exclusive")
    threshold_pct: float = Field(gt=0, le=1000)
    min_operations: int = Field(ge=1, le=1_000_000)
    micro_stops: Literal["in_cycle", "excluded"] = Field(
        description="whether micro-stops count as run time in the actual cycle time"
    )
    planned_stops: Literal["excluded"] = Field(
        description="planned stops are never run time (down time)"
    )
    definitions: dict[str, Annotated[str, StringConstraints(max_length=400)]] = Field(
        max_length=20, description="how each figure is counted, in words"
    )
    operations: _Count = Field(description="operations completed in the period")
    materials: _Count = Field(description="material and operation pairs, rows beyond the list too")
    flagged: _Count
    rows: list[DriftRowMsg] = Field(max_length=D.MAX_ROWS)


class HistorianValue(_Open):
    """UMH ``_historian`` shape: one tag per topic."""

    timestamp_ms: int
    value: Quantity | float | str


B = TypeVar("B", bound=BaseModel)


class Envelope(_Open, Generic[B]):
    """Every ``_mes_v1`` message the gateway publishes.

    ``msg_id`` names one logical message: a resend carries the same ``msg_id``, ``seq`` and
    ``idem_key``; only ``ts_sent_ms`` and ``historical`` change. ``seq`` is gap-free per edge.
    """

    schema_: str = Field(alias="schema")
    msg_id: str
    idem_key: str | None
    edge_id: str
    boot_seq: int
    seq: int
    ts_event_ms: int
    ts_sent_ms: int
    historical: bool
    body: B


# The envelope's fields before its body, in the model's order: the one definition the uplink
# writes from (it splices the stored body in as text, so a body is never parsed again).
ENVELOPE_HEAD: Final = tuple(
    field.alias or name for name, field in Envelope.model_fields.items() if name != "body"
)


def envelope_json(body_json: str, **head: object) -> str:
    """The wire form of an enveloped message: ``head`` (exactly :data:`ENVELOPE_HEAD`) around
    ``body_json``, a JSON object already encoded."""
    if head.keys() != _HEAD_KEYS:
        missing, extra = _HEAD_KEYS - head.keys(), head.keys() - _HEAD_KEYS
        raise ValueError(f"envelope fields: missing {sorted(missing)}, unknown {sorted(extra)}")
    text = json.dumps({key: head[key] for key in ENVELOPE_HEAD}, separators=(",", ":"))
    return f'{text[:-1]},"body":{body_json}}}'


_HEAD_KEYS: Final = frozenset(ENVELOPE_HEAD)


# ------------------------------------------------------------------------- MQTT 5 properties

# Every message of the contract, and both Last Wills, carry these two MQTT 5 properties: the
# payload is UTF-8 text (Payload Format Indicator 1) and JSON (Content Type). No user
# properties: the topic names the message type, and an enveloped message carries its schema
# name in the envelope (``schema``), so a ``schema`` user property would only be a second copy
# to keep in step. ``edge.sync.mqtt.MqttLink`` sets them on every publish of the gateway and of
# the relay; the AsyncAPI document's message bindings declare them.
PAYLOAD_FORMAT_INDICATOR: Final = 1
CONTENT_TYPE: Final = "application/json"


# ------------------------------------------------------------------------------------ topics

Role = Literal["send", "receive"]
SEND: Final[frozenset[Role]] = frozenset({"send"})
RECEIVE: Final[frozenset[Role]] = frozenset({"receive"})


@dataclass(frozen=True, slots=True)
class Topic:
    """One topic of the contract, relative to the work center root (``scope="root"``) or to the
    enterprise, ``umh/v1/<enterprise>`` (``scope="enterprise"``).

    ``direction`` is from the gateway's point of view (``up``: it publishes, ``down``: it
    subscribes); ``gateway=False`` for a topic the gateway neither sends nor reads. ``relay``:
    what the ERP relay of this project (``edge relay``) does with it."""

    path: str
    direction: Literal["up", "down"]
    model: type[BaseModel]
    qos: int
    retain: bool
    summary: str
    enveloped: bool = True
    schema: str = ""
    relay: frozenset[Role] = frozenset()
    gateway: bool = True
    scope: Literal["root", "enterprise"] = "root"

    @property
    def address(self) -> str:
        """The AsyncAPI channel address: ``{root}/<path>`` or ``umh/v1/{enterprise}/<path>``."""
        if self.scope == "enterprise":
            return "umh/v1/{enterprise}/" + self.path
        return "{root}/" + self.path


UP: Final = "up"
DOWN: Final = "down"

TOPICS: tuple[Topic, ...] = (
    Topic("_mes_v1/order/dispatch", DOWN, DispatchListBody, 1, False,
          "The whole dispatch list of the work center, versioned (replace semantics).",
          schema="mes.dispatch/1", relay=SEND),
    Topic("_mes_v1/order/cancel", DOWN, OperationRefBody, 1, False,
          "Cancel one operation.", schema="mes.cancel/1", relay=SEND),
    Topic("_mes_v1/order/hold", DOWN, OperationRefBody, 1, False,
          "Hold one operation.", schema="mes.hold/1", relay=SEND),
    Topic("_mes_v1/order/release", DOWN, OperationRefBody, 1, False,
          "Release a held operation.", schema="mes.release/1", relay=SEND),
    Topic("_mes_v1/order/merge", DOWN, MergeBody, 1, False,
          "Merge dispatched operations of the same material into one.",
          schema="mes.merge/1"),
    Topic("_mes_v1/masterdata", DOWN, MasterDataBody, 1, True,
          "Reason catalogues, alarm mapping, crew size, shift calendar, partial-confirmation "
          "policy (retained).",
          schema="mes.masterdata/1"),
    Topic("_mes_v1/maintenance/done", DOWN, ServiceDoneBody, 1, False,
          "A service task was done (central's maintenance system): its interval is counted "
          "again from now.",
          schema="mes.maintenance-done/1"),
    Topic("_mes_v1/confirmation/result", DOWN, ConfirmationResultBody, 1, False,
          "The ERP relay's verdict on a confirmation or reversal.",
          schema="mes.confirmation-result/1", relay=SEND),
    Topic("_mes_v1/cmd/resync", DOWN, ResyncBody, 1, False,
          "Republish snapshot and health; with from_seq, replay the business messages from "
          "that seq on (historical: true).",
          schema="mes.resync/1"),
    Topic("_mes_v1/order/event", UP, OrderEventBody, 1, False,
          "Operation lifecycle and dispatch events.", schema="mes.order-event/1"),
    Topic("_mes_v1/order/received", UP, DispatchReceivedBody, 1, False,
          "A dispatch list was applied.", schema="mes.order-received/1"),
    Topic("_mes_v1/confirmation", UP, ConfirmationBody, 1, False,
          "Partial and final operation confirmations for the ERP.",
          schema="mes.confirmation/1", relay=RECEIVE),
    Topic("_mes_v1/confirmation/cancel", UP, ConfirmationCancelBody, 1, False,
          "Reversal of an earlier confirmation.", schema="mes.confirmation-cancel/1",
          relay=RECEIVE),
    Topic("_mes_v1/stop", UP, StopBody, 1, False,
          "Stops: started, ended, reason requested, set, reclassified.", schema="mes.stop/1"),
    Topic("_mes_v1/scrap", UP, ScrapBody, 1, False,
          "Scrap and rework reported by the operator.", schema="mes.scrap/1"),
    Topic("_mes_v1/andon", UP, AndonBody, 1, False,
          "Calls for help: raised, acknowledged, escalated when unanswered, closed.",
          schema="mes.andon/1"),
    Topic("_mes_v1/material", UP, MaterialBody, 1, False,
          "Component batches loaded for an operation and consumption recorded (genealogy).",
          schema="mes.material/1"),
    Topic("_mes_v1/maintenance", UP, MaintenanceBody, 1, False,
          "Machine hours for maintenance: a service interval fell due or was done, a "
          "maintenance request (from a stop), the machine's hours, starts, cycles and parts "
          "at every shift change.",
          schema="mes.maintenance/1"),
    Topic("_mes_v1/crew", UP, CrewBody, 1, False,
          "Operators logging in and out by badge, and who is logged in.",
          schema="mes.crew/1"),
    Topic("_mes_v1/counter/event", UP, CounterEventBody, 1, False,
          "Counter resets, wraps, discontinuities and unassigned production.",
          schema="mes.counter-event/1"),
    Topic("_mes_v1/kpi/shift", UP, ShiftClosedBody, 1, False,
          "A shift ended: its ISO 22400 time elements and KPIs (availability, effectiveness, "
          "quality ratio, OEE, setup rate, technical efficiency, MTBF, MTTR).",
          schema="mes.shift-kpi/1"),
    Topic("_mes_v1/kpi/day", UP, DayClosedBody, 1, False,
          "A day's figures are complete: the ISO 22400 time elements and KPIs of the shifts "
          "that started on it and of its unscheduled time, together.",
          schema="mes.day-kpi/1"),
    Topic("_mes_v1/kpi/operation", UP, OperationKpiBody, 1, False,
          "An operation completed: on time or late against its due date, its cycle time "
          "from dispatch split into queue, setup, running, down and waiting, whether it was "
          "rescheduled, and its effectiveness, quality ratio, setup rate and technical "
          "efficiency.", schema="mes.operation-kpi/1"),
    Topic("_mes_v1/report/drift", UP, DriftReportBody, 1, False,
          "Routing drift: actual setup and cycle times (median and spread) against the ERP's "
          "standards per material and operation over a period, flagged beyond a threshold, "
          "by hours of capacity misplanned; sent every [report] drift_every_days (the same "
          "body `edge report drift --json` prints).",
          schema="mes.routing-drift/1"),
    Topic("_mes_v1/kpi/current", UP, ShiftNowBody, 1, True,
          "The current shift's ISO 22400 KPIs so far (retained, with each health message).",
          enveloped=False),
    Topic("_mes_v1/rejected", UP, RejectedBody, 1, False,
          "Inbound messages the gateway refused, with the reason.", enveloped=False),
    Topic("_mes_v1/snapshot", UP, SnapshotBody, 1, True,
          "The work center now: active and dispatched operations, state (retained).",
          enveloped=False, relay=RECEIVE),
    Topic("_mes_v1/health", UP, HealthBody, 1, True,
          "Online, outbox depth, links; the Last Will sets online false (retained).",
          enveloped=False),
    Topic("_historian/counter/good", UP, HistorianValue, 1, False,
          "Good count of the active operation.", enveloped=False),
    Topic("_historian/counter/scrap", UP, HistorianValue, 1, False,
          "Scrap count of the active operation.", enveloped=False),
    Topic("_historian/state", UP, HistorianValue, 1, False,
          "Machine state: running, idle, down, setup.", enveloped=False),
    Topic("_historian/alarm", UP, HistorianValue, 1, False,
          "Machine alarm code, empty when none.", enveloped=False),
)  # fmt: skip

# What the ERP relay publishes beyond the work center's command topics; the gateway reads
# relay/state (an enterprise-level topic) and nothing of relay/kpi.
RELAY_TOPICS: tuple[Topic, ...] = (
    Topic("_mes_v1/relay/state", DOWN, RelayStateBody, 1, True,
          "Is the ERP relay there (retained); its Last Will sets online false. The gateways "
          "withhold confirmations while it says online false.",
          enveloped=False, relay=SEND | RECEIVE, scope="enterprise"),
    Topic("_mes_v1/relay/kpi", UP, RelayKpiBody, 1, True,
          "The work center's confirmation latency (machine event to ERP posting), from the "
          "ERP relay (retained).",
          enveloped=False, relay=SEND, gateway=False),
)  # fmt: skip


# Every channel of the published contract (AsyncAPI document and schemas).
CHANNELS: tuple[Topic, ...] = TOPICS + RELAY_TOPICS

# The gateway's work-center topics (what its ACL and downlink are built from).
BY_PATH: dict[str, Topic] = {t.path: t for t in TOPICS}
_CHANNEL_BY_PATH: dict[str, Topic] = {t.path: t for t in CHANNELS}


def topic(path: str) -> Topic:
    """A topic of the contract by its path (the relay's own topics included)."""
    return _CHANNEL_BY_PATH[path]
