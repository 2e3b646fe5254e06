"""The work center's state, shared by every chapter of the rules, and the checks they all use.

:class:`WorkCenterState` holds what one work center knows: its header (rules, master data,
machine state, the open stop, the open calls for help), its operations, counters, stops,
confirmations and unassigned production, plus the events the input being applied has emitted so
far and which rows it changed. The chapters (``lifecycle``, ``counting``, ``stops``, ``times``,
``confirmations``, ``dispatch``, ``andon``) are module functions taking this state;
:class:`edge.domain.core.WorkCenter` is the state together with ``apply``, which routes each input
to its chapter.

A check that fails raises :class:`Reject`; ``apply`` turns it into the input's rejection. Every
handler validates the whole input before it changes anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from edge.domain.calendar import ShiftCalendar
from edge.domain.clock import Instant
from edge.domain.events import Event, EventType, Rejection, RejectionCode
from edge.domain.inputs import ACTOR_KINDS, MachineState
from edge.domain.kpis import Condition, ShiftBook, calendar_of
from edge.domain.limits import MAX_DELTA, MAX_QUANTITY, MAX_TEXT, QUANTITY_PLACES, out_of_range
from edge.domain.model import (
    ZERO,
    Confirmation,
    CounterTrack,
    CrewMember,
    HelpCall,
    MachineHours,
    Operation,
    OperationKey,
    Stop,
    UnassignedProduction,
)
from edge.domain.rules import ConfirmationPolicy, MasterData, Shift, WorkCenterRules

# What leaves memory (edge.domain.retire) while its row stays stored.
Retiring = Operation | Stop | Confirmation | UnassignedProduction


class Reject(Exception):
    """Raised by validation helpers; ``apply`` turns it into a :class:`Rejection`."""

    def __init__(self, rejection: Rejection) -> None:
        super().__init__(rejection.message)
        self.rejection = rejection


def reject(code: RejectionCode, message: str, **kw: Any) -> Reject:
    return Reject(Rejection(code, message, **kw))


def quantity_of(value: object, field_name: str) -> Decimal:
    """A positive, finite quantity, or a rejection naming the field and the value."""
    try:
        qty = value if isinstance(value, Decimal) else Decimal(str(value))
    except (InvalidOperation, ValueError):
        qty = None
    if qty is None or isinstance(value, bool) or out_of_range(qty, ZERO, MAX_QUANTITY) or qty <= 0:
        raise reject(
            RejectionCode.INVALID_VALUE,
            f"{field_name} = {value!r}: must be a positive number up to {MAX_QUANTITY} "
            f"with at most {QUANTITY_PLACES} decimal places",
            field=field_name,
            value=value,
        )
    return qty


def delta_of(value: object, field_name: str) -> Decimal:
    """A finite correction of at most a million either way."""
    try:
        qty = value if isinstance(value, Decimal) else Decimal(str(value))
    except (InvalidOperation, ValueError):
        qty = None
    if qty is None or isinstance(value, bool) or out_of_range(qty, -MAX_DELTA, MAX_DELTA):
        raise reject(
            RejectionCode.INVALID_VALUE,
            f"{field_name} = {value!r}: must be a number between -{MAX_DELTA} and {MAX_DELTA}",
            field=field_name,
            value=value,
        )
    return qty


def text_of(value: str | None, field_name: str) -> str:
    """A short non-blank text (a reason in words, a note)."""
    text = (value or "").strip()
    if not text or len(text) > MAX_TEXT:
        raise reject(
            RejectionCode.INVALID_VALUE,
            f"{field_name} = {value!r}: must be 1 to {MAX_TEXT} characters",
            field=field_name,
            value=value,
        )
    return text


def is_supervisor(actor: str) -> bool:
    return actor.startswith("supervisor:")


def require_supervisor(actor: str, what: str) -> None:
    if not is_supervisor(actor):
        raise reject(
            RejectionCode.SUPERVISOR_ONLY,
            f"only a supervisor may {what}",
            field="actor",
            value=actor,
        )


def check_actor(actor: str) -> None:
    kind, _, ident = actor.partition(":")
    if kind not in ACTOR_KINDS or (kind != "central" and not ident) or len(actor) > MAX_TEXT:
        raise reject(
            RejectionCode.INVALID_VALUE,
            f"actor = {actor!r}: must be one of "
            "operator:<id>, button:<id>, machine:<source>, central, supervisor:<id>",
            field="actor",
            value=actor,
        )


@dataclass(slots=True)
class WorkCenterHeader:
    """The work center's own state besides its operations, counters, stops and confirmations."""

    rules: WorkCenterRules
    master_data: MasterData | None = None  # from central; None: the configured defaults
    dispatch_version: int = 0
    machine_state: MachineState | None = None
    machine_alarm: str | None = None
    open_stop: str | None = None
    open_unassigned: str | None = None
    next_stop_no: int = 1
    next_unassigned_no: int = 1
    next_help_no: int = 1
    help_calls: dict[str, HelpCall] = field(default_factory=dict)  # the open ones
    shift_id: str | None = None
    # Under rules of revision 2: the wall time up to which shifts and days were closed
    # (edge.domain.kpis.close_ended); None before the first close.
    closed_to_ms: int | None = None
    extra: dict[str, str] = field(default_factory=dict)
    # Who is logged in (edge.domain.crew), in the order they logged in.
    crew: tuple[CrewMember, ...] = ()
    # The machine's hours and maintenance intervals (edge.domain.machine); None until the
    # rules first said to count them.
    machine: MachineHours | None = None
    next_maintenance_no: int = 1


class WorkCenterState:
    """One work center's orders, counters, stops and confirmations, and the lookups on them."""

    def __init__(self, rules: WorkCenterRules) -> None:
        self.header = WorkCenterHeader(rules)
        self.operations: dict[OperationKey, Operation] = {}
        self.counters: dict[str, CounterTrack] = {}
        self.stops: dict[str, Stop] = {}
        self.confirmations: dict[str, Confirmation] = {}
        self.unassigned: dict[str, UnassignedProduction] = {}
        self.active_keys: list[OperationKey] = []  # the active operations, sorted
        self.idem_index: dict[str, tuple[str, bool]] = {}  # idem key -> (conf id, is reversal)
        self.dirty: set[tuple[str, str]] = set()  # (table, key) rows changed since take_dirty
        # Rows that left memory since take_retired (edge.domain.retire): the entity as it was
        # and when it left; the store keeps the row, marked, instead of deleting it.
        self.retired: dict[tuple[str, str], tuple[Retiring, Instant]] = {}
        self.emitted: list[Event] = []  # the events of the input being applied
        # The shifts' ISO 22400 time elements and parts (edge.domain.kpis), booked per change.
        self._calendar: tuple[MasterData, WorkCenterRules, ShiftCalendar] | None = None
        self.shift_book = ShiftBook(self.calendar)
        # What the work center was doing when the input being applied came (edge.domain.kpis).
        self.condition_before: tuple[Condition, str | None] | None = None

    # ------------------------------------------------------------------ state access

    @property
    def rules(self) -> WorkCenterRules:
        return self.header.rules

    @property
    def master_data(self) -> MasterData:
        return self.header.master_data or self.header.rules.master_data

    @property
    def shifts(self) -> tuple[Shift, ...]:
        """The shift calendar: central's when it sent one, else the configured one."""
        return self.master_data.shifts or self.rules.shifts

    @property
    def calendar(self) -> ShiftCalendar:
        """The shift calendar with its holidays and planned downtime: central's when it sent
        shifts, else the configured one."""
        md, rules = self.master_data, self.rules
        cached = self._calendar
        if cached is not None and cached[0] is md and cached[1] is rules:
            return cached[2]  # asked at every input: the same rules give the same calendar
        if md.shifts:
            found = calendar_of(md.shifts, rules.timezone, md.holidays, md.planned_downtime)
        else:
            found = calendar_of(
                rules.shifts, rules.timezone, rules.holidays, rules.planned_downtime
            )
        self._calendar = (md, rules, found)
        return found

    @property
    def policy(self) -> ConfirmationPolicy:
        """When partial confirmations are made: central's policy, else the configured one."""
        return self.master_data.policy or self.rules.policy

    @property
    def active(self) -> list[Operation]:
        return [self.operations[k] for k in self.active_keys]

    @property
    def open_stop(self) -> Stop | None:
        sid = self.header.open_stop
        return self.stops[sid] if sid else None

    @property
    def help_calls(self) -> dict[str, HelpCall]:
        """The open calls for help, by id."""
        return self.header.help_calls

    def confirmation_by_idem(self, idem_key: str) -> tuple[Confirmation, bool] | None:
        found = self.idem_index.get(idem_key)
        return (self.confirmations[found[0]], found[1]) if found else None

    def take_dirty(self) -> set[tuple[str, str]]:
        """Which rows changed since the last call: (table, key) pairs for the store to write."""
        dirty, self.dirty = self.dirty, set()
        return dirty

    def take_retired(
        self,
    ) -> dict[tuple[str, str], tuple[Retiring, Instant]]:
        """Which rows left memory since the last call, each with its entity and the instant:
        the store writes them one last time, marked, and no longer loads them."""
        retired, self.retired = self.retired, {}
        return retired

    # ------------------------------------------------------------------ changes

    def emit(
        self,
        type_: EventType,
        at: Instant,
        op: Operation | OperationKey | None = None,
        actor: str | None = None,
        /,
        **data: object,
    ) -> None:
        # Positional-only, so that data may carry fields named like them (a confirmation's actor).
        key = op.key if isinstance(op, Operation) else op
        self.emitted.append(Event(type_, at, str(key) if key else None, actor, data))

    def touch(self, table: str, key: object) -> None:
        self.dirty.add((table, str(key)))

    def retire(self, table: str, key: object, entity: Retiring, at: Instant) -> None:
        """``entity`` (already taken out of its dict) leaves memory; its row stays stored."""
        row = (table, str(key))
        self.dirty.discard(row)
        self.retired[row] = (entity, at)

    # ------------------------------------------------------------------ lookups

    def find_op(self, ref: str, field_name: str = "op") -> Operation:
        """The operation named by ``ref``, or the only active one when ``ref`` is empty."""
        if not ref:
            if len(self.active_keys) == 1:
                return self.operations[self.active_keys[0]]
            if not self.active_keys:
                raise reject(RejectionCode.NO_ACTIVE_OPERATION, "no operation is active")
            raise reject(
                RejectionCode.INVALID_VALUE,
                "several operations are active; name one",
                field=field_name,
                value=ref,
            )
        try:
            key = OperationKey.parse(ref)
        except ValueError as exc:
            raise reject(
                RejectionCode.INVALID_VALUE, str(exc), field=field_name, value=ref
            ) from None
        op = self.operations.get(key)
        if op is None:
            raise reject(
                RejectionCode.UNKNOWN_OPERATION,
                f"{field_name} = {ref!r}: no such operation at this work center",
                field=field_name,
                value=ref,
            )
        return op

    def open_op(self, ref: str) -> Operation:
        op = self.find_op(ref)
        if op.status.finished:
            raise reject(
                RejectionCode.OPERATION_FINISHED,
                f"operation {op.key} is {op.status.value}",
                field="op",
                value=ref,
                state=op.status.value,
            )
        return op

    def check_scrap_reason(self, code: str, field_name: str = "reason") -> None:
        if not self.master_data.has_scrap_reason(code):
            raise reject(
                RejectionCode.UNKNOWN_REASON,
                f"{field_name} = {code!r}: not a scrap reason in the master data",
                field=field_name,
                value=code,
            )

    def check_stop_reason(self, code: str) -> None:
        if self.master_data.stop_reason(code) is None:
            raise reject(
                RejectionCode.UNKNOWN_REASON,
                f"reason = {code!r}: not a stop reason in the master data",
                field="reason",
                value=code,
            )
