"""The work center: one state, one ``apply`` per input, events or a rejection out.

This is where the plant's rules live (reference in rules.md; each rule is named where it is
applied). The class is synchronous and pure: time comes in with each input, nothing is read from
outside, nothing is written. The engine owns the only instance and persists what ``take_dirty``
names after each commit.

Every handler validates the whole input before it changes anything, so a rejection leaves the
state exactly as it was. An unexpected exception is a bug; the engine then throws this instance
away and reloads the state from the store, so a half-applied input never survives.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from decimal import Decimal, InvalidOperation
from typing import Any

from edge.domain import confirmations as conf_rules
from edge.domain.clock import Instant
from edge.domain.counting import ReadingKind, classify_reading
from edge.domain.events import Event, EventType, Outcome, Rejection, RejectionCode
from edge.domain.inputs import (
    ACTOR_KINDS,
    AcknowledgeHelp,
    AcknowledgeOverDelivery,
    Action,
    AssignUnassigned,
    CallForHelp,
    CloseHelp,
    ConfirmationResult,
    CorrectCount,
    CounterReading,
    DeclareSetupGood,
    DispatchList,
    Input,
    MachineState,
    MachineStateChanged,
    MasterDataReceived,
    Pulses,
    ReportScrap,
    RequestConfirmation,
    ResendConfirmation,
    ResultStatus,
    ReverseConfirmation,
    RulesApplied,
    SetStopReason,
    SourceRestarted,
    Tick,
    Transition,
)
from edge.domain.limits import (
    MAX_CATALOGUE,
    MAX_CREW,
    MAX_CYCLE_S,
    MAX_DELTA,
    MAX_EVERY_MINUTES,
    MAX_INT,
    MAX_PARTS_PER_SIGNAL,
    MAX_QUANTITY,
    MAX_SEQUENCE,
    MAX_SETUP_S,
    MAX_SPLIT,
    MAX_TEXT,
    MAX_TOLERANCE_PCT,
    MIN_EVERY_MINUTES,
    MIN_PARTS_PER_SIGNAL,
    QUANTITY_PLACES,
    out_of_range,
)
from edge.domain.model import (
    ZERO,
    Confirmation,
    ConfirmationStatus,
    CounterTrack,
    HelpCall,
    Operation,
    OperationKey,
    OperationSpec,
    OperationStatus,
    Stop,
    StopOrigin,
    Tally,
    TimeElements,
    UnassignedProduction,
)
from edge.domain.rules import (
    ConfirmationPolicy,
    CountKind,
    CountSource,
    MasterData,
    ScrapReason,
    Shift,
    SignalType,
    WorkCenterRules,
)

S = OperationStatus
A = Action

# rules.md §2: (current status, action) -> next status. None: the target depends on the operation
# (resume and release go back to where it was; split ends completed and hands back a remainder).
TRANSITIONS: dict[tuple[OperationStatus, Action], OperationStatus | None] = {
    (S.DISPATCHED, A.START_SETUP): S.SETUP,
    (S.DISPATCHED, A.START_PRODUCTION): S.RUNNING,
    (S.DISPATCHED, A.HOLD): S.HELD,
    (S.DISPATCHED, A.CANCEL): S.CANCELLED,
    (S.SETUP, A.START_PRODUCTION): S.RUNNING,
    (S.SETUP, A.INTERRUPT): S.INTERRUPTED,
    (S.SETUP, A.COMPLETE): S.COMPLETED,  # supervisor only
    (S.SETUP, A.HOLD): S.HELD,
    (S.SETUP, A.CANCEL): S.CANCELLED,
    (S.RUNNING, A.INTERRUPT): S.INTERRUPTED,
    (S.RUNNING, A.COMPLETE): S.COMPLETED,
    (S.RUNNING, A.HOLD): S.HELD,
    (S.RUNNING, A.CANCEL): S.CANCELLED,
    (S.RUNNING, A.SPLIT): S.COMPLETED,
    (S.INTERRUPTED, A.RESUME): None,
    (S.INTERRUPTED, A.COMPLETE): S.COMPLETED,
    (S.INTERRUPTED, A.HOLD): S.HELD,
    (S.INTERRUPTED, A.CANCEL): S.CANCELLED,
    (S.INTERRUPTED, A.SPLIT): S.COMPLETED,
    (S.HELD, A.RELEASE): None,
    (S.HELD, A.CANCEL): S.CANCELLED,
    (S.HELD, A.SPLIT): S.COMPLETED,
}

class _Reject(Exception):
    """Raised by validation helpers; ``apply`` turns it into a :class:`Rejection`."""

    def __init__(self, rejection: Rejection) -> None:
        super().__init__(rejection.message)
        self.rejection = rejection


def _reject(code: RejectionCode, message: str, **kw: Any) -> _Reject:
    return _Reject(Rejection(code, message, **kw))


def _quantity(value: object, field_name: str) -> Decimal:
    """A positive, finite quantity, or a rejection naming the field and the value."""
    try:
        qty = value if isinstance(value, Decimal) else Decimal(str(value))
    except (InvalidOperation, ValueError):
        qty = None
    if qty is None or isinstance(value, bool) or out_of_range(qty, ZERO, MAX_QUANTITY) or qty <= 0:
        raise _reject(
            RejectionCode.INVALID_VALUE,
            f"{field_name} = {value!r}: must be a positive number up to {MAX_QUANTITY} "
            f"with at most {QUANTITY_PLACES} decimal places",
            field=field_name,
            value=value,
        )
    return qty


def _delta(value: object, field_name: str) -> Decimal:
    """A finite correction of at most a million either way."""
    try:
        qty = value if isinstance(value, Decimal) else Decimal(str(value))
    except (InvalidOperation, ValueError):
        qty = None
    if qty is None or isinstance(value, bool) or out_of_range(qty, -MAX_DELTA, MAX_DELTA):
        raise _reject(
            RejectionCode.INVALID_VALUE,
            f"{field_name} = {value!r}: must be a number between -{MAX_DELTA} and {MAX_DELTA}",
            field=field_name,
            value=value,
        )
    return qty


def _text(value: str | None, field_name: str) -> str:
    """A short non-blank text (a reason in words, a note)."""
    text = (value or "").strip()
    if not text or len(text) > MAX_TEXT:
        raise _reject(
            RejectionCode.INVALID_VALUE,
            f"{field_name} = {value!r}: must be 1 to {MAX_TEXT} characters",
            field=field_name,
            value=value,
        )
    return text


def check_actor(actor: str) -> None:
    kind, _, ident = actor.partition(":")
    if kind not in ACTOR_KINDS or (kind != "central" and not ident) or len(actor) > MAX_TEXT:
        raise _reject(
            RejectionCode.INVALID_VALUE,
            f"actor = {actor!r}: must be one of "
            "operator:<id>, button:<id>, machine:<source>, central, supervisor:<id>",
            field="actor",
            value=actor,
        )


def _is_supervisor(actor: str) -> bool:
    return actor.startswith("supervisor:")


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
    extra: dict[str, str] = field(default_factory=dict)


class WorkCenter:
    """One work center's orders, counting, stops and confirmations."""

    def __init__(self, rules: WorkCenterRules) -> None:
        self.header = WorkCenterHeader(rules)
        self.operations: dict[OperationKey, Operation] = {}
        self.counters: dict[str, CounterTrack] = {}
        self.stops: dict[str, Stop] = {}
        self.confirmations: dict[str, Confirmation] = {}
        self.unassigned: dict[str, UnassignedProduction] = {}
        self._active: list[OperationKey] = []
        self._idem: dict[str, tuple[str, bool]] = {}  # idem key -> (conf id, is reversal)
        self._dirty: set[tuple[str, str]] = set()
        self._events: list[Event] = []
        self._handlers: dict[type, Callable[[Any], bool | None]] = {
            CounterReading: self._on_reading,
            Pulses: self._on_pulses,
            SourceRestarted: self._on_source_restarted,
            MachineStateChanged: self._on_machine_state,
            Tick: self._on_tick,
            Transition: self._on_transition,
            ReportScrap: self._on_report_scrap,
            DeclareSetupGood: self._on_setup_good,
            AcknowledgeOverDelivery: self._on_ack_over,
            RequestConfirmation: self._on_request_confirmation,
            SetStopReason: self._on_stop_reason,
            AssignUnassigned: self._on_assign_unassigned,
            ReverseConfirmation: self._on_reverse,
            ResendConfirmation: self._on_resend,
            ConfirmationResult: self._on_result,
            CorrectCount: self._on_correct_count,
            CallForHelp: self._on_call_for_help,
            AcknowledgeHelp: self._on_acknowledge_help,
            CloseHelp: self._on_close_help,
            DispatchList: self._on_dispatch,
            MasterDataReceived: self._on_master_data,
            RulesApplied: self._on_rules,
        }

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
    def policy(self) -> ConfirmationPolicy:
        """When partial confirmations are made: central's policy, else the configured one."""
        return self.master_data.policy or self.rules.policy

    @property
    def active(self) -> list[Operation]:
        return [self.operations[k] for k in self._active]

    @property
    def open_stop(self) -> Stop | None:
        sid = self.header.open_stop
        return self.stops[sid] if sid else None

    @property
    def help_calls(self) -> dict[str, HelpCall]:
        """The open calls for help, by id."""
        return self.header.help_calls

    def confirmation_by_idem(self, idem_key: str) -> tuple[Confirmation, bool] | None:
        found = self._idem.get(idem_key)
        return (self.confirmations[found[0]], found[1]) if found else None

    def take_dirty(self) -> set[tuple[str, str]]:
        """Which rows changed since the last call: (table, key) pairs for the store to write."""
        dirty, self._dirty = self._dirty, set()
        return dirty

    @classmethod
    def restore(
        cls,
        header: WorkCenterHeader,
        operations: list[Operation],
        counters: list[CounterTrack],
        stops: list[Stop],
        confirmations: list[Confirmation],
        unassigned: list[UnassignedProduction],
    ) -> WorkCenter:
        """Rebuild from stored rows (the projections); derived indexes are recomputed."""
        wc = cls(header.rules)
        wc.header = header
        wc.operations = {op.key: op for op in operations}
        wc.counters = {c.source: c for c in counters}
        wc.stops = {s.stop_id: s for s in stops}
        wc.confirmations = {c.conf_id: c for c in confirmations}
        wc.unassigned = {u.unassigned_id: u for u in unassigned}
        wc._active = sorted(k for k, op in wc.operations.items() if op.status.active)
        for conf in confirmations:
            wc._index_confirmation(conf)
        return wc

    # ------------------------------------------------------------------ apply

    def apply(self, inp: Input) -> Outcome:
        """Apply one input. Never raises for bad input: a rejection names what was wrong."""
        self._events = []
        handler = self._handlers.get(type(inp))
        if handler is None:
            return Outcome(
                rejection=Rejection(
                    RejectionCode.INVALID_VALUE, f"unknown input type {type(inp).__name__}"
                ),
                changed=False,
            )
        try:
            actor = getattr(inp, "actor", None)
            if actor is not None:
                check_actor(actor)
            changed = handler(inp)
        except _Reject as rej:
            self._events = []
            return Outcome(rejection=rej.rejection, changed=False)
        events = tuple(self._events)
        self._events = []
        return Outcome(events, changed=bool(events) or changed is not False)

    def _emit(
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
        self._events.append(Event(type_, at, str(key) if key else None, actor, data))

    def _touch(self, table: str, key: object) -> None:
        self._dirty.add((table, str(key)))

    # ------------------------------------------------------------------ lookups

    def _find_op(self, ref: str, field_name: str = "op") -> Operation:
        """The operation named by ``ref``, or the only active one when ``ref`` is empty."""
        if not ref:
            if len(self._active) == 1:
                return self.operations[self._active[0]]
            if not self._active:
                raise _reject(RejectionCode.NO_ACTIVE_OPERATION, "no operation is active")
            raise _reject(
                RejectionCode.INVALID_VALUE,
                "several operations are active; name one",
                field=field_name,
                value=ref,
            )
        try:
            key = OperationKey.parse(ref)
        except ValueError as exc:
            raise _reject(
                RejectionCode.INVALID_VALUE, str(exc), field=field_name, value=ref
            ) from None
        op = self.operations.get(key)
        if op is None:
            raise _reject(
                RejectionCode.UNKNOWN_OPERATION,
                f"{field_name} = {ref!r}: no such operation at this work center",
                field=field_name,
                value=ref,
            )
        return op

    def _open_op(self, ref: str) -> Operation:
        op = self._find_op(ref)
        if op.status.finished:
            raise _reject(
                RejectionCode.OPERATION_FINISHED,
                f"operation {op.key} is {op.status.value}",
                field="op",
                value=ref,
                state=op.status.value,
            )
        return op

    def _scrap_reason(self, code: str, field_name: str = "reason") -> None:
        if not self.master_data.has_scrap_reason(code):
            raise _reject(
                RejectionCode.UNKNOWN_REASON,
                f"{field_name} = {code!r}: not a scrap reason in the master data",
                field=field_name,
                value=code,
            )

    def _stop_reason(self, code: str) -> None:
        if self.master_data.stop_reason(code) is None:
            raise _reject(
                RejectionCode.UNKNOWN_REASON,
                f"reason = {code!r}: not a stop reason in the master data",
                field="reason",
                value=code,
            )

    # ------------------------------------------------------------------ time elements

    def _accrue(self, op: Operation, now: Instant) -> None:
        """Add the time since the last accrual to the bucket of the operation's current status."""
        since = op.accrued_to
        if since is None or op.first_start is None or op.status.finished:
            return
        elapsed = now.since(since)
        op.accrued_to = now if now.mono_ms >= since.mono_ms else since
        if not elapsed:
            return
        status = op.status
        if status is S.SETUP:
            op.counted.setup_ms += elapsed
        elif status is S.RUNNING:
            stop = self.open_stop
            if stop is None:
                op.counted.production_ms += elapsed
            else:
                op.counted.down_ms += elapsed
                key = str(op.key)
                stop.down_ms[key] = stop.down_ms.get(key, 0) + elapsed
                self._touch("stop", stop.stop_id)
        elif status in (S.INTERRUPTED, S.HELD):
            op.counted.waiting_ms += elapsed
        self._touch("operation", op.key)

    def _accrue_active(self, now: Instant) -> None:
        for key in self._active:
            self._accrue(self.operations[key], now)

    def time_elements(self, op: Operation, now: Instant | None = None) -> TimeElements:
        """ISO 22400 time elements of one operation, down time by its stops' latest reasons."""
        counted = op.counted
        if now is not None and op.accrued_to is not None and not op.status.finished:
            counted = counted.copy()
            extra = now.since(op.accrued_to)
            if op.status is S.SETUP:
                counted.setup_ms += extra
            elif op.status is S.RUNNING:
                if self.open_stop is None:
                    counted.production_ms += extra
                else:
                    counted.down_ms += extra
            elif op.status in (S.INTERRUPTED, S.HELD):
                counted.waiting_ms += extra
        by_reason: dict[str, int] = {}
        planned = unplanned = 0
        key = str(op.key)
        for stop in self.stops.values():
            ms = stop.down_ms.get(key)
            if not ms:
                continue
            code = stop.reason or ("MICRO" if stop.micro else "PENDING")
            by_reason[code] = by_reason.get(code, 0) + ms
            reason = self.master_data.stop_reason(stop.reason) if stop.reason else None
            if reason is not None and reason.planned:
                planned += ms
            else:
                unplanned += ms
        return TimeElements(
            setup_ms=counted.setup_ms,
            production_ms=counted.production_ms,
            down_ms=counted.down_ms,
            down_planned_ms=planned,
            down_unplanned_ms=unplanned,
            down_by_reason_ms=by_reason,
            waiting_ms=counted.waiting_ms,
        )

    # ------------------------------------------------------------------ status changes

    def _set_status(
        self, op: Operation, new: OperationStatus, now: Instant, actor: str, action: str
    ) -> None:
        self._accrue(op, now)
        old = op.status
        op.status = new
        if op.first_start is None and new in (S.SETUP, S.RUNNING):
            op.first_start = now
            op.accrued_to = now
        if new is S.RUNNING:
            op.last_count = now
        if new.finished:
            op.ended = now
        if old.active and not new.active:
            self._active.remove(op.key)
            stop = self.open_stop
            running = any(self.operations[k].status is S.RUNNING for k in self._active)
            if stop is not None and stop.origin is StopOrigin.NO_COUNT and not running:
                # "No count while running" ends when nothing runs any more.
                self._end_stop(stop, now, actor)
        elif new.active and not old.active:
            self._active.append(op.key)
            self._active.sort()
            self._close_unassigned(now)
        self._touch("operation", op.key)
        self._emit(
            EventType.OPERATION_STATE_CHANGED,
            now,
            op,
            actor,
            **{"from": old.value, "to": new.value, "action": action},
        )

    def _on_transition(self, t: Transition) -> None:
        op = self._find_op(t.op)
        status = op.status
        target = TRANSITIONS.get((status, t.action), S.DISPATCHED)
        if (status, t.action) not in TRANSITIONS:
            raise _reject(
                RejectionCode.ILLEGAL_TRANSITION,
                f"operation {op.key} is {status.value}; cannot {t.action.value.replace('_', ' ')}",
                field="action",
                value=t.action.value,
                state=status.value,
                action=t.action.value,
            )
        if target is None:
            target = op.resume_to if t.action is A.RESUME else op.held_from
            target = target or S.DISPATCHED
        if status is S.SETUP and t.action is A.COMPLETE and not _is_supervisor(t.actor):
            raise _reject(
                RejectionCode.SUPERVISOR_ONLY,
                f"operation {op.key} is in setup; only a supervisor may complete it",
                field="actor",
                value=t.actor,
                state=status.value,
                action=t.action.value,
            )
        if target.active and not status.active:
            self._check_may_activate(op)
        variance = self._check_variance_reason(op, t)
        remainder = self._check_split(op, t) if t.action is A.SPLIT else None

        if t.action in (A.INTERRUPT,):
            op.resume_to = status
        if t.action is A.HOLD:
            op.held_from = status
        if t.action in (A.START_SETUP, A.START_PRODUCTION) and status is S.DISPATCHED:
            self._note_sequence(op, t)
        if t.action is A.CANCEL:
            if status is S.RUNNING and t.actor == "central":
                op.resume_to = status
                self._set_status(op, S.INTERRUPTED, t.at, t.actor, A.INTERRUPT.value)
            if op.counted.has_quantity():
                self._confirm(op, t.at, t.actor, final=True)
        elif t.action in (A.COMPLETE, A.SPLIT):
            self._confirm(op, t.at, t.actor, final=True, variance_reason=variance)
        self._set_status(op, target, t.at, t.actor, t.action.value)
        if remainder is not None:
            self._hand_back_remainder(op, remainder, t)

    def _check_may_activate(self, op: Operation) -> None:
        """rules.md §1: one active operation per work center, unless it runs a family tool."""
        if self.rules.family_tool or not self._active:
            return
        other = self.operations[self._active[0]]
        raise _reject(
            RejectionCode.OPERATION_ACTIVE,
            f"operation {other.key} is {other.status.value}; interrupt or complete it first",
            field="op",
            value=str(op.key),
            state=other.status.value,
        )

    def _check_variance_reason(self, op: Operation, t: Transition) -> str | None:
        """rules.md §7: completing below the under-delivery tolerance needs a variance reason."""
        reason = (t.variance_reason or "").strip() or None
        if reason is not None and len(reason) > 40:
            raise _reject(
                RejectionCode.INVALID_VALUE,
                f"variance_reason = {reason!r}: at most 40 characters",
                field="variance_reason",
                value=reason,
            )
        under = op.spec.under_tolerance_pct
        if t.action is A.COMPLETE and under is not None and reason is None:
            floor = op.spec.target_qty * (1 - under / 100)
            if op.counted.good < floor:
                raise _reject(
                    RejectionCode.VARIANCE_REASON_REQUIRED,
                    f"operation {op.key}: {op.counted.good} {op.spec.unit} is below the "
                    f"under-delivery tolerance ({floor}); give a variance reason",
                    field="variance_reason",
                    value=None,
                    state=op.status.value,
                    action=t.action.value,
                )
        return reason

    def _check_split(self, op: Operation, t: Transition) -> Decimal:
        if t.quantity is None:
            remainder = op.spec.target_qty - op.counted.good
            if remainder <= 0:
                raise _reject(
                    RejectionCode.INVALID_VALUE,
                    f"operation {op.key}: nothing remains to split off "
                    f"({op.counted.good} of {op.spec.target_qty} {op.spec.unit} made)",
                    field="quantity",
                    value=None,
                )
            return remainder
        return _quantity(t.quantity, "quantity")

    def _hand_back_remainder(self, op: Operation, remainder: Decimal, t: Transition) -> None:
        """rules.md §2 ²: the remainder becomes a new operation with the next split index."""
        op.split_done = True
        same = (op.key.order, op.key.operation)
        next_split = max(k.split for k in self.operations if (k.order, k.operation) == same) + 1
        spec = replace(op.spec, split=next_split, target_qty=remainder)
        new = Operation(spec)
        self.operations[spec.key] = new
        self._touch("operation", spec.key)
        self._emit(
            EventType.OPERATION_SPLIT,
            t.at,
            op,
            t.actor,
            remainder_op=str(spec.key),
            remainder_qty=conf_rules.number(remainder),
            done_qty=conf_rules.number(op.counted.good),
        )
        self._emit(EventType.OPERATION_DISPATCHED, t.at, new, t.actor, **_spec_data(spec))

    def _note_sequence(self, op: Operation, t: Transition) -> None:
        """rules.md §7: picking out of the central sequence is recorded (schedule stability)."""
        waiting = [o for o in self.operations.values() if o.status is S.DISPATCHED and o is not op]
        earlier = [o for o in waiting if o.spec.sequence < op.spec.sequence]
        if earlier:
            first = min(earlier, key=lambda o: (o.spec.sequence, o.key))
            self._emit(
                EventType.PICKED_OUT_OF_SEQUENCE,
                t.at,
                op,
                t.actor,
                expected=str(first.key),
                sequence=op.spec.sequence,
            )

    # ------------------------------------------------------------------ counting

    def _source(self, name: str, signal: SignalType) -> CountSource:
        src = self.rules.source(name)
        if src is None:
            raise _reject(
                RejectionCode.UNKNOWN_SOURCE,
                f"source = {name!r}: no counter of that name in the config",
                field="source",
                value=name,
            )
        if src.signal is not signal:
            raise _reject(
                RejectionCode.INVALID_VALUE,
                f"source = {name!r} is configured as {src.signal.value}, not {signal.value}",
                field="source",
                value=name,
            )
        return src

    def _max_rate(self, src: CountSource, track: CounterTrack | None = None) -> float | None:
        """Signals per second the machine could make at most (rules.md §3).

        From the configured maximum, else the active operations' standard cycle; with no
        operation active, the rate last derived for this counter, so a jump between orders
        is judged too.
        """
        if src.max_rate_per_s is not None:
            return src.max_rate_per_s
        if not self._active:
            return track.last_rate if track is not None else None
        best: float | None = None
        for key in self._active:
            spec = self.operations[key].spec
            if spec.std_cycle_s > 0:
                rate = self.rules.plausibility_factor / (
                    spec.std_cycle_s * float(spec.parts_per_signal)
                )
                best = rate if best is None or rate > best else best
        return best

    def _on_reading(self, r: CounterReading) -> None:
        src = self._source(r.source, SignalType.ABSOLUTE)
        if (
            isinstance(r.value, bool)
            or not isinstance(r.value, int)
            or not (0 <= r.value < (1 << src.bits))
        ):
            raise _reject(
                RejectionCode.INVALID_VALUE,
                f"value = {r.value!r} from {r.source}: not a {src.bits}-bit counter value",
                field="value",
                value=r.value,
            )
        track = self.counters.get(r.source)
        if track is None:
            track = self.counters[r.source] = CounterTrack(r.source)
        result = classify_reading(
            last_value=track.last_value,
            last_at=track.last_at,
            restarted_at=track.restarted_at,
            value=r.value,
            at=r.at,
            bits=src.bits,
            max_rate_per_s=self._max_rate(src, track),
            grace_s=self.rules.plausibility_grace_s,
        )
        if result.kind is ReadingKind.DUPLICATE and track.last_at is not None:
            # Same value: only the time moves on, and that must not be journaled as a change
            # unless it matters for the plausibility of the next reading.
            track.last_at = r.at
            self._touch("counter", r.source)
            return
        previous = track.last_value
        if self._active and src.max_rate_per_s is None:
            track.last_rate = self._max_rate(src, track)
        track.last_value = r.value
        track.last_at = r.at
        track.restarted_at = None
        self._touch("counter", r.source)
        if result.kind is ReadingKind.DISCONTINUITY:
            self._emit(
                EventType.COUNTER_DISCONTINUITY,
                r.at,
                self._active[0] if self._active else None,
                f"machine:{r.source}",
                source=r.source,
                previous=previous,
                value=r.value,
                max_rate_per_s=self._max_rate(src, track),
            )
        elif result.kind in (ReadingKind.RESET, ReadingKind.WRAP):
            self._emit(
                EventType.COUNTER_RESET
                if result.kind is ReadingKind.RESET
                else EventType.COUNTER_WRAPPED,
                r.at,
                None,
                f"machine:{r.source}",
                source=r.source,
                previous=previous,
                value=r.value,
                counted=result.signals,
            )
        if result.signals:
            self._cross_check(src, track, result.signals, r.at)
        if result.signals and src.authoritative:
            self._count(src, result.signals, r.at)

    def _on_pulses(self, p: Pulses) -> bool:
        src = self._source(p.source, SignalType.PULSE)
        if isinstance(p.n, bool) or not isinstance(p.n, int) or p.n < 0:
            raise _reject(
                RejectionCode.INVALID_VALUE,
                f"n = {p.n!r} from {p.source}: must be a whole number ≥ 0",
                field="n",
                value=p.n,
            )
        if not p.n:
            return False
        if src.kind in self._cross_checked_kinds():
            track = self.counters.get(p.source)
            if track is None:
                track = self.counters[p.source] = CounterTrack(p.source)
            self._touch("counter", p.source)
            self._cross_check(src, track, p.n, p.at)
        if not src.authoritative:
            return True
        self._count(src, p.n, p.at)
        return True

    def _cross_checked_kinds(self) -> set[CountKind]:
        return {s.kind for s in self.rules.sources if not s.authoritative}

    def _cross_check(
        self, src: CountSource, track: CounterTrack, signals: int, at: Instant
    ) -> None:
        """One authoritative source per count; another of the same kind only checks it, and a
        warning goes out when the two drift apart by more than its tolerance.

        Compared when the cross-check reports: two sources are read at different moments, so
        the tolerance must cover what the machine makes between two of their readings.
        """
        if src.kind not in self._cross_checked_kinds():
            return
        track.signals += signals
        if src.authoritative:
            return
        reference = next(
            (s for s in self.rules.sources if s.authoritative and s.kind is src.kind), None
        )
        theirs = self.counters.get(reference.name) if reference is not None else None
        if reference is None or theirs is None:
            return
        if track.check_base is None:
            track.check_base = (track.signals - signals, theirs.signals)
            return
        checked = track.signals - track.check_base[0]
        counted = theirs.signals - track.check_base[1]
        if abs(checked - counted) > src.drift_tolerance:
            track.check_base = (track.signals, theirs.signals)
            self._emit(
                EventType.COUNTER_DRIFT,
                at,
                self._active[0] if self._active else None,
                f"machine:{src.name}",
                source=src.name,
                reference=reference.name,
                checked=checked,
                counted=counted,
                tolerance=src.drift_tolerance,
            )

    def _on_source_restarted(self, r: SourceRestarted) -> None:
        src = self.rules.source(r.source)
        if src is None:
            raise _reject(
                RejectionCode.UNKNOWN_SOURCE,
                f"source = {r.source!r}: no counter of that name in the config",
                field="source",
                value=r.source,
            )
        track = self.counters.get(r.source)
        if track is None:
            track = self.counters[r.source] = CounterTrack(r.source)
        track.restarted_at = r.at
        self._touch("counter", r.source)
        self._emit(EventType.SOURCE_RESTARTED, r.at, None, f"machine:{r.source}", source=r.source)

    def _count(self, src: CountSource, signals: int, at: Instant) -> None:
        if not self._active:
            self._count_unassigned(src.kind, signals, at)
            return
        stop = self.open_stop
        if stop is not None and stop.origin is StopOrigin.NO_COUNT:
            self._end_stop(stop, at, f"machine:{src.name}")
        rules = self.rules
        # A copy: an operation that completes at its target leaves the active list mid-loop, and
        # the other operations of a family tool must still get this signal's parts.
        for key in list(self._active):
            op = self.operations[key]
            qty = signals * op.spec.parts_per_signal
            counted = op.counted
            in_setup_scrap = op.status is S.SETUP and not rules.setup_counts_as_good
            if src.kind is CountKind.SCRAP:
                if in_setup_scrap and rules.counts_total():
                    continue  # the total counter already booked this part as setup scrap
                reason = rules.setup_scrap_reason if in_setup_scrap else rules.machine_scrap_reason
                counted.scrap[reason] = counted.scrap.get(reason, ZERO) + qty
                if rules.counts_total() and not in_setup_scrap:
                    counted.good -= qty
            elif in_setup_scrap:
                reason = rules.setup_scrap_reason
                counted.scrap[reason] = counted.scrap.get(reason, ZERO) + qty
            else:
                counted.good += qty
            op.last_count = at
            self._touch("operation", key)
            self._after_good_count(op, at, src)

    def _after_good_count(self, op: Operation, at: Instant, src: CountSource) -> None:
        spec = op.spec
        good = op.counted.good
        if not op.target_reached and good >= spec.target_qty:
            op.target_reached = True
            self._emit(
                EventType.TARGET_REACHED,
                at,
                op,
                f"machine:{src.name}",
                good=conf_rules.number(good),
                target=conf_rules.number(spec.target_qty),
            )
            if self.rules.auto_complete_at_target and op.status is not S.SETUP:
                self._confirm(op, at, f"machine:{src.name}", final=True)
                self._set_status(op, S.COMPLETED, at, f"machine:{src.name}", "auto_complete")
                return
        over = spec.over_tolerance_pct
        if over is not None and not op.over_tolerance and good > spec.target_qty * (1 + over / 100):
            op.over_tolerance = True
            self._emit(
                EventType.OVER_TOLERANCE,
                at,
                op,
                f"machine:{src.name}",
                good=conf_rules.number(good),
                target=conf_rules.number(spec.target_qty),
                tolerance_pct=conf_rules.number(over),
            )
        every = self.policy.every_good
        if every and good - op.confirmed.good >= every:
            self._confirm(op, at, f"machine:{src.name}", final=False)

    def _count_unassigned(self, kind: CountKind, signals: int, at: Instant) -> None:
        """rules.md §3: with no active operation, counts are kept as unassigned production."""
        h = self.header
        record = self.unassigned.get(h.open_unassigned) if h.open_unassigned else None
        if record is None:
            uid = f"U{h.next_unassigned_no:06d}"
            h.next_unassigned_no += 1
            h.open_unassigned = uid
            record = self.unassigned[uid] = UnassignedProduction(uid, at, at)
            self._touch("work_center", "")
            self._emit(
                EventType.UNASSIGNED_PRODUCTION, at, None, None, unassigned_id=uid, phase="opened"
            )
        qty = Decimal(signals)
        if kind is CountKind.SCRAP:
            reason = self.rules.machine_scrap_reason
            record.tally.scrap[reason] = record.tally.scrap.get(reason, ZERO) + qty
            if self.rules.counts_total():
                record.tally.good -= qty
        else:
            record.tally.good += qty
        record.end = at
        self._touch("unassigned", record.unassigned_id)

    def _close_unassigned(self, at: Instant) -> None:
        uid = self.header.open_unassigned
        if uid is None:
            return
        record = self.unassigned[uid]
        record.open = False
        self.header.open_unassigned = None
        self._touch("unassigned", uid)
        self._touch("work_center", "")
        self._emit(
            EventType.UNASSIGNED_PRODUCTION,
            at,
            None,
            None,
            unassigned_id=uid,
            phase="closed",
            start=record.start.iso(),
            end=record.end.iso(),
            **conf_rules.tally_payload(record.tally),
        )

    def _on_assign_unassigned(self, a: AssignUnassigned) -> None:
        if not _is_supervisor(a.actor):
            raise _reject(
                RejectionCode.SUPERVISOR_ONLY,
                "only a supervisor may assign unassigned production",
                field="actor",
                value=a.actor,
            )
        record = self.unassigned.get(a.unassigned_id)
        if record is None or record.assigned_to is not None:
            raise _reject(
                RejectionCode.UNKNOWN_UNASSIGNED,
                f"unassigned_id = {a.unassigned_id!r}: no unassigned production to assign",
                field="unassigned_id",
                value=a.unassigned_id,
            )
        op = self._find_op(a.op)
        if op.status is S.CANCELLED:
            raise _reject(
                RejectionCode.OPERATION_FINISHED,
                f"operation {op.key} is cancelled",
                field="op",
                value=a.op,
                state=op.status.value,
            )
        if record.open:
            self._close_unassigned(a.at)
        pps = op.spec.parts_per_signal
        converted = Tally(
            good=record.tally.good * pps,
            scrap={code: q * pps for code, q in record.tally.scrap.items()},
        )
        op.counted.add(converted)
        record.assigned_to = str(op.key)
        self._touch("unassigned", record.unassigned_id)
        self._touch("operation", op.key)
        self._emit(
            EventType.UNASSIGNED_ASSIGNED,
            a.at,
            op,
            a.actor,
            unassigned_id=record.unassigned_id,
            **conf_rules.tally_payload(converted),
        )

    # ------------------------------------------------------------------ operator quantities

    def _on_report_scrap(self, r: ReportScrap) -> None:
        qty = _quantity(r.qty, "qty")
        self._scrap_reason(r.reason)
        op = self._open_op(r.op)
        reduces = self.rules.operator_scrap_reduces_good
        if reduces:
            unconfirmed = op.counted.good - op.confirmed.good
            if qty > unconfirmed:
                raise _reject(
                    RejectionCode.EXCEEDS_PENDING,
                    f"qty = {qty}: more than the {unconfirmed} {op.spec.unit} good parts of "
                    f"operation {op.key} not yet confirmed",
                    field="qty",
                    value=r.qty,
                )
            op.counted.good -= qty
        book = op.counted.rework if r.rework else op.counted.scrap
        book[r.reason] = book.get(r.reason, ZERO) + qty
        self._touch("operation", op.key)
        self._emit(
            EventType.SCRAP_REPORTED,
            r.at,
            op,
            r.actor,
            kind="rework" if r.rework else "scrap",
            reason=r.reason,
            qty=conf_rules.number(qty),
            from_good=reduces,
        )

    def _on_setup_good(self, d: DeclareSetupGood) -> None:
        qty = _quantity(d.qty, "qty")
        op = self._open_op(d.op)
        reason = self.rules.setup_scrap_reason
        available = op.counted.scrap.get(reason, ZERO) - op.confirmed.scrap.get(reason, ZERO)
        if qty > available:
            raise _reject(
                RejectionCode.EXCEEDS_PENDING,
                f"qty = {qty}: only {available} {op.spec.unit} of unconfirmed setup scrap",
                field="qty",
                value=d.qty,
            )
        op.counted.scrap[reason] -= qty
        if not op.counted.scrap[reason]:
            del op.counted.scrap[reason]
        op.counted.good += qty
        self._touch("operation", op.key)
        self._emit(
            EventType.SETUP_PARTS_DECLARED_GOOD, d.at, op, d.actor, qty=conf_rules.number(qty)
        )

    def _on_ack_over(self, a: AcknowledgeOverDelivery) -> None:
        op = self._open_op(a.op)
        if not op.over_tolerance or op.over_tolerance_acknowledged:
            raise _reject(
                RejectionCode.INVALID_VALUE,
                f"operation {op.key} has no over-delivery warning to acknowledge",
                field="op",
                value=a.op,
            )
        op.over_tolerance_acknowledged = True
        self._touch("operation", op.key)
        self._emit(EventType.OVER_TOLERANCE_ACKNOWLEDGED, a.at, op, a.actor)

    def _on_correct_count(self, c: CorrectCount) -> None:
        """A supervisor's count edit; what was confirmed is corrected by reversal, not here."""
        self._require_supervisor(c.actor, "correct counts")
        good = _delta(c.good_delta, "good_delta")
        scrap = _delta(c.scrap_delta, "scrap_delta")
        if not good and not scrap:
            raise _reject(
                RejectionCode.INVALID_VALUE,
                "good_delta and scrap_delta are both 0: nothing to correct",
                field="good_delta",
                value=c.good_delta,
            )
        reason = _text(c.reason, "reason")
        code = c.scrap_reason or self.rules.machine_scrap_reason
        if scrap:
            self._scrap_reason(code, "scrap_reason")
        op = self._open_op(c.op)
        if op.counted.good + good < op.confirmed.good:
            raise _reject(
                RejectionCode.EXCEEDS_PENDING,
                f"good_delta = {good}: would take good below the {op.confirmed.good} "
                f"{op.spec.unit} already confirmed; reverse the confirmation first",
                field="good_delta",
                value=c.good_delta,
            )
        booked = op.counted.scrap.get(code, ZERO)
        if booked + scrap < op.confirmed.scrap.get(code, ZERO):
            raise _reject(
                RejectionCode.EXCEEDS_PENDING,
                f"scrap_delta = {scrap}: would take scrap {code} below what is already "
                "confirmed; reverse the confirmation first",
                field="scrap_delta",
                value=c.scrap_delta,
            )
        op.counted.good += good
        if booked + scrap:
            op.counted.scrap[code] = booked + scrap
        else:
            op.counted.scrap.pop(code, None)
        self._touch("operation", op.key)
        self._emit(
            EventType.COUNT_CORRECTED,
            c.at,
            op,
            c.actor,
            good_delta=conf_rules.number(good),
            scrap_delta=conf_rules.number(scrap),
            scrap_reason=code if scrap else None,
            reason=reason,
        )

    # ------------------------------------------------------------------ calls for help (§8)

    def _on_call_for_help(self, c: CallForHelp) -> None:
        if c.category not in self.rules.help_categories:
            raise _reject(
                RejectionCode.UNKNOWN_REASON,
                f"category = {c.category!r}: not one of {', '.join(self.rules.help_categories)}",
                field="category",
                value=c.category,
            )
        note = _text(c.note, "note") if c.note else None
        for call in self.help_calls.values():
            if call.category == c.category and call.acknowledged_by is None:
                raise _reject(
                    RejectionCode.INVALID_VALUE,
                    f"a {c.category} call ({call.call_id}) is already waiting for an answer",
                    field="category",
                    value=c.category,
                )
        h = self.header
        call = HelpCall(f"H{h.next_help_no:06d}", c.category, c.at, c.actor, note)
        h.next_help_no += 1
        h.help_calls[call.call_id] = call
        self._touch("work_center", "")
        active = self.active
        self._emit(
            EventType.HELP_CALLED,
            c.at,
            active[0] if len(active) == 1 else None,
            c.actor,
            call_id=call.call_id,
            category=call.category,
            note=note,
            machine_state=h.machine_state.value if h.machine_state else None,
        )

    def _help_call(self, call_id: str) -> HelpCall:
        call = self.help_calls.get(call_id)
        if call is None:
            raise _reject(
                RejectionCode.UNKNOWN_HELP_CALL,
                f"call_id = {call_id!r}: no open call for help with this id",
                field="call_id",
                value=call_id,
            )
        return call

    def _on_acknowledge_help(self, a: AcknowledgeHelp) -> None:
        call = self._help_call(a.call_id)
        if call.acknowledged_by is not None:
            raise _reject(
                RejectionCode.INVALID_VALUE,
                f"call {call.call_id} was already acknowledged by {call.acknowledged_by}",
                field="call_id",
                value=a.call_id,
            )
        call.acknowledged_at, call.acknowledged_by = a.at, a.actor
        self._touch("work_center", "")
        self._emit(
            EventType.HELP_ACKNOWLEDGED,
            a.at,
            None,
            a.actor,
            call_id=call.call_id,
            category=call.category,
            waited_ms=a.at.since(call.raised_at),
        )

    def _on_close_help(self, c: CloseHelp) -> None:
        call = self._help_call(c.call_id)
        del self.header.help_calls[call.call_id]
        self._touch("work_center", "")
        self._emit(
            EventType.HELP_CLOSED,
            c.at,
            None,
            c.actor,
            call_id=call.call_id,
            category=call.category,
            duration_ms=c.at.since(call.raised_at),
            acknowledged_by=call.acknowledged_by,
        )

    def _escalate_help_calls(self, now: Instant) -> None:
        """A call nobody acknowledged within the configured time escalates, once."""
        after_ms = self.rules.help_escalate_after_s * 1000
        if not after_ms:
            return
        for call in self.help_calls.values():
            waited = now.since(call.raised_at)
            if call.acknowledged_by is None and not call.escalated and waited >= after_ms:
                call.escalated = True
                self._touch("work_center", "")
                self._emit(
                    EventType.HELP_ESCALATED,
                    now,
                    None,
                    "machine:andon",
                    call_id=call.call_id,
                    category=call.category,
                    waited_ms=waited,
                )

    # ------------------------------------------------------------------ confirmations

    def _confirm(
        self,
        op: Operation,
        now: Instant,
        actor: str,
        *,
        final: bool,
        variance_reason: str | None = None,
        posting: tuple[str, str] | None = None,
    ) -> Confirmation | None:
        """Confirm everything pending of ``op`` (rules.md §6). The sum rule holds by construction:
        the confirmation is exactly ``counted - confirmed`` and is added to ``confirmed``.

        While an earlier confirmation of ``op`` stands rejected by the ERP, nothing is confirmed
        (domain.md §10.5 rule 2): partial quantities stay pending and go with the next one, a
        final confirmation is withheld until the rejected one is resent or reversed.
        """
        blocking = self.blocking_confirmation(op)
        if blocking is not None:
            if final and not op.final_withheld:
                op.final_withheld = True
                op.final_withheld_variance = variance_reason
                self._touch("operation", op.key)
                self._emit(
                    EventType.FINAL_CONFIRMATION_WITHHELD,
                    now,
                    op,
                    actor,
                    blocked_by=blocking.conf_id,
                    erp_message=blocking.erp_message,
                )
            return None
        self._accrue(op, now)
        pending = op.pending
        rules = self.rules
        if posting is None:
            name, day = conf_rules.shift_of(now, self.shifts, rules.timezone)
            posting = (day.isoformat(), f"{day.isoformat()}/{name}")
        variance = variance_reason or self._cycle_variance(op.spec, pending)
        crew = op.spec.crew_size if op.spec.crew_size is not None else self.master_data.crew_size
        counter = op.conf_count + 1
        conf = Confirmation(
            key=op.key,
            counter=counter,
            final=final,
            tally=pending,
            period_start=op.last_conf_end or op.first_start or now,
            period_end=now,
            posting_date=posting[0],
            shift=posting[1],
            variance_reason=variance,
            labour_ms=int(pending.production_ms * crew),
            idem_key=conf_rules.confirmation_idem_key(rules.key_scope, op.key, counter),
            actor=actor,
        )
        op.confirmed.add(pending)
        op.conf_count = counter
        op.last_conf_end = now
        self.confirmations[conf.conf_id] = conf
        self._index_confirmation(conf)
        self._touch("confirmation", conf.conf_id)
        self._touch("operation", op.key)
        self._emit(
            EventType.CONFIRMATION_CREATED,
            now,
            op,
            actor,
            **conf_rules.confirmation_payload(conf, op.spec),
            totals_to_date=conf_rules.tally_payload(op.confirmed),
        )
        return conf

    def blocking_confirmation(self, op: Operation) -> Confirmation | None:
        """The confirmation of ``op`` the ERP rejected and nobody resent or reversed yet."""
        for counter in range(1, op.conf_count + 1):
            conf = self.confirmations.get(f"{op.key}#{counter}")
            if (
                conf is not None
                and conf.status is ConfirmationStatus.REJECTED
                and not conf.reversed
            ):
                return conf
        return None

    def _release_withheld(self, op: Operation, now: Instant, actor: str) -> None:
        """The rejection is dealt with: the final confirmation that waited for it is made now."""
        if op.final_withheld and self.blocking_confirmation(op) is None:
            op.final_withheld = False
            variance, op.final_withheld_variance = op.final_withheld_variance, None
            self._touch("operation", op.key)
            self._confirm(op, now, actor, final=True, variance_reason=variance)

    def _cycle_variance(self, spec: OperationSpec, pending: Tally) -> str | None:
        made = pending.good + pending.scrap_total + pending.rework_total
        if spec.std_cycle_s <= 0 or made <= 0 or pending.production_ms <= 0:
            return None
        actual = pending.production_ms / 1000 / float(made)
        if abs(actual / spec.std_cycle_s - 1) > self.rules.variance_threshold:
            return self.rules.variance_reason
        return None

    def _index_confirmation(self, conf: Confirmation) -> None:
        self._idem[conf.idem_key] = (conf.conf_id, False)
        if conf.reversal_idem_key:
            self._idem[conf.reversal_idem_key] = (conf.conf_id, True)

    def _on_request_confirmation(self, r: RequestConfirmation) -> None:
        op = self._find_op(r.op)
        if op.status is S.CANCELLED and not _is_supervisor(r.actor):
            raise _reject(
                RejectionCode.SUPERVISOR_ONLY,
                f"operation {op.key} is cancelled; only a supervisor may confirm it",
                field="actor",
                value=r.actor,
            )
        blocking = self.blocking_confirmation(op)
        if blocking is not None:
            raise _reject(
                RejectionCode.CONFIRMATION_BLOCKED,
                f"confirmation {blocking.conf_id} was rejected by the ERP "
                f"({blocking.erp_message or 'no message'}); a supervisor resends it corrected "
                "or reverses it first",
                field="op",
                value=r.op,
            )
        pending = op.pending
        if not pending.has_quantity() and not (op.status.active and pending.production_ms):
            raise _reject(
                RejectionCode.NOTHING_TO_CONFIRM,
                f"operation {op.key} has nothing pending to confirm",
                field="op",
                value=r.op,
            )
        self._confirm(op, r.at, r.actor, final=op.status.finished)

    def _find_confirmation(self, ref: str, counter: int) -> tuple[Operation, Confirmation]:
        op = self._find_op(ref)
        conf = self.confirmations.get(f"{op.key}#{counter}")
        if conf is None:
            raise _reject(
                RejectionCode.UNKNOWN_CONFIRMATION,
                f"counter = {counter!r}: operation {op.key} has no such confirmation",
                field="counter",
                value=counter,
            )
        return op, conf

    def _require_supervisor(self, actor: str, what: str) -> None:
        if not _is_supervisor(actor):
            raise _reject(
                RejectionCode.SUPERVISOR_ONLY,
                f"only a supervisor may {what}",
                field="actor",
                value=actor,
            )

    def _on_reverse(self, r: ReverseConfirmation) -> None:
        self._require_supervisor(r.actor, "reverse a confirmation")
        op, conf = self._find_confirmation(r.op, r.counter)
        if conf.reversed:
            raise _reject(
                RejectionCode.CONFIRMATION_STATE,
                f"confirmation {conf.conf_id} is already reversed",
                field="counter",
                value=r.counter,
            )
        conf.reversed = True
        conf.reversal_idem_key = conf_rules.reversal_idem_key(
            self.rules.key_scope, op.key, conf.counter
        )
        conf.reversal_status = ConfirmationStatus.AWAITING_RESULT
        op.confirmed.add(conf.tally, -1)
        self._index_confirmation(conf)
        self._touch("confirmation", conf.conf_id)
        self._touch("operation", op.key)
        self._emit(
            EventType.CONFIRMATION_REVERSED,
            r.at,
            op,
            r.actor,
            conf_id=conf.conf_id,
            conf_index=conf.counter,
            idem_key=conf.reversal_idem_key,
            reverses_idem_key=conf.idem_key,
            **conf_rules.tally_payload(conf.tally),
        )
        self._release_withheld(op, r.at, r.actor)

    def _on_resend(self, r: ResendConfirmation) -> None:
        self._require_supervisor(r.actor, "resend a confirmation")
        op, conf = self._find_confirmation(r.op, r.counter)
        if conf.status is not ConfirmationStatus.REJECTED or conf.reversed:
            raise _reject(
                RejectionCode.CONFIRMATION_STATE,
                f"confirmation {conf.conf_id} is {conf.status.value}"
                f"{' and reversed' if conf.reversed else ''}; only a rejected one can be resent",
                field="counter",
                value=r.counter,
            )
        if r.posting_date is not None:
            _check_date(r.posting_date)
        if r.variance_reason is not None and len(r.variance_reason) > 40:
            raise _reject(
                RejectionCode.INVALID_VALUE,
                f"variance_reason = {r.variance_reason!r}: at most 40 characters",
                field="variance_reason",
                value=r.variance_reason,
            )
        conf.retries += 1
        conf.idem_key = conf_rules.confirmation_idem_key(
            self.rules.key_scope, op.key, conf.counter, conf.retries
        )
        conf.status = ConfirmationStatus.AWAITING_RESULT
        conf.erp_message = None
        if r.posting_date is not None:
            conf.posting_date = r.posting_date
        if r.variance_reason is not None:
            conf.variance_reason = r.variance_reason or None
        self._index_confirmation(conf)
        self._touch("confirmation", conf.conf_id)
        self._emit(
            EventType.CONFIRMATION_RESENT,
            r.at,
            op,
            r.actor,
            **conf_rules.confirmation_payload(conf, op.spec),
        )
        self._release_withheld(op, r.at, r.actor)

    def _on_result(self, r: ConfirmationResult) -> bool:
        found = self.confirmation_by_idem(r.idem_key)
        if found is None:
            raise _reject(
                RejectionCode.UNKNOWN_CONFIRMATION,
                f"idem_key = {r.idem_key!r}: no confirmation or reversal with that key",
                field="idem_key",
                value=r.idem_key,
            )
        conf, is_reversal = found
        if not is_reversal and conf.idem_key != r.idem_key:
            raise _reject(
                RejectionCode.CONFIRMATION_STATE,
                f"idem_key = {r.idem_key!r} was superseded by a corrected resend",
                field="idem_key",
                value=r.idem_key,
            )
        current = conf.reversal_status if is_reversal else conf.status
        status = next_verdict(current, r.status)
        if status is None:
            if current is ConfirmationStatus.POSTED and r.status in _POSTED_AGAIN:
                return False  # the same good news again (a relay's resend): nothing to do
            # A verdict only moves forward: once the ERP posted it, a later "rejected" or
            # "retrying" cannot be true of that posting, and applying it would invite a resend
            # that posts the same quantities twice. Kept, counted and shown to the supervisor.
            conf.verdict_conflicts += 1
            conf.last_conflict = f"{r.status.value} after {current.value if current else '-'}" + (
                f": {r.message}" if r.message else ""
            )
            self._touch("confirmation", conf.conf_id)
            self._emit(
                EventType.VERDICT_CONFLICT,
                r.at,
                conf.key,
                "central",
                conf_id=conf.conf_id,
                idem_key=r.idem_key,
                reversal=is_reversal,
                status=current.value if current else None,
                verdict=r.status.value,
                erp_message=r.message,
            )
            return True
        if is_reversal:
            conf.reversal_status = status
        else:
            conf.status = status
            conf.erp_message = r.message
            if r.erp_ref:
                conf.erp_ref = r.erp_ref
        self._touch("confirmation", conf.conf_id)
        self._emit(
            EventType.CONFIRMATION_RESULT,
            r.at,
            conf.key,
            "central",
            conf_id=conf.conf_id,
            idem_key=r.idem_key,
            reversal=is_reversal,
            status=r.status.value,
            message=r.message,
            erp_ref=r.erp_ref,
        )
        # A late "posted" or "duplicate" for a confirmation rejected before also resolves it.
        op = self.operations.get(conf.key)
        if op is not None:
            self._release_withheld(op, r.at, "central")
        return True

    # ------------------------------------------------------------------ stops

    def _start_stop(
        self, start: Instant, origin: StopOrigin, actor: str, alarm: str | None = None
    ) -> Stop:
        self._accrue_active(start)
        h = self.header
        sid = f"S{h.next_stop_no:06d}"
        h.next_stop_no += 1
        stop = Stop(sid, start, origin, operations=[str(k) for k in self._active], alarm=alarm)
        self.stops[sid] = stop
        h.open_stop = sid
        self._touch("stop", sid)
        self._touch("work_center", "")
        self._emit(
            EventType.STOP_STARTED,
            start,
            self._active[0] if self._active else None,
            actor,
            stop_id=sid,
            origin=origin.value,
            operations=list(stop.operations),
            alarm=alarm,
        )
        if alarm:
            self._apply_alarm_reason(stop, alarm, start)
        return stop

    def _apply_alarm_reason(self, stop: Stop, alarm: str, at: Instant) -> None:
        reason = self.master_data.reason_for_alarm(alarm)
        if reason is None or stop.reason is not None:
            return
        stop.reason = reason
        stop.reason_source = "alarm"
        self._touch("stop", stop.stop_id)
        self._emit(
            EventType.STOP_REASON_SET,
            at,
            None,
            "machine",
            stop_id=stop.stop_id,
            reason=reason,
            source="alarm",
        )

    def _end_stop(self, stop: Stop, at: Instant, actor: str) -> None:
        self._accrue_active(at)
        stop.end = at
        duration = stop.duration_ms(at)
        stop.micro = duration < self.rules.micro_stop_s * 1000
        self.header.open_stop = None
        for key in self._active:
            self.operations[key].last_count = at
        self._touch("stop", stop.stop_id)
        self._touch("work_center", "")
        self._emit(
            EventType.STOP_ENDED,
            at,
            None,
            actor,
            stop_id=stop.stop_id,
            duration_s=duration / 1000,
            micro=stop.micro,
            reason=stop.reason,
        )
        self._maybe_request_reason(stop, at)

    def _maybe_request_reason(self, stop: Stop, now: Instant) -> None:
        """rules.md §4: a stop past the micro-stop threshold without a reason asks for one."""
        if stop.reason or stop.reason_requested or stop.micro:
            return
        if stop.duration_ms(now) < self.rules.micro_stop_s * 1000:
            return
        stop.reason_requested = True
        self._touch("stop", stop.stop_id)
        self._emit(EventType.STOP_REASON_REQUESTED, now, None, None, stop_id=stop.stop_id)

    def _on_machine_state(self, m: MachineStateChanged) -> bool:
        h = self.header
        if h.machine_state is m.state and h.machine_alarm == m.alarm:
            return False
        actor = f"machine:{m.source}"
        h.machine_state = m.state
        h.machine_alarm = m.alarm
        self._touch("work_center", "")
        self._emit(EventType.MACHINE_STATE, m.at, None, actor, state=m.state.value, alarm=m.alarm)
        stop = self.open_stop
        # Down is a stop whatever runs (maintenance needs it); idle is a loss only while an
        # operation is running: a machine waiting with no order, or in setup, is not down.
        running = any(self.operations[k].status is S.RUNNING for k in self._active)
        if m.state is MachineState.DOWN or (m.state is MachineState.IDLE and running):
            if stop is None:
                self._start_stop(m.at, StopOrigin.MACHINE_STATE, actor, m.alarm)
            elif m.alarm:
                stop.alarm = stop.alarm or m.alarm
                self._apply_alarm_reason(stop, m.alarm, m.at)
        elif m.state is MachineState.RUNNING and stop is not None:
            self._end_stop(stop, m.at, actor)
        return True

    def _on_stop_reason(self, s: SetStopReason) -> None:
        self._stop_reason(s.reason)
        stop = self._find_stop(s.stop_id)
        if stop.reason == s.reason:
            raise _reject(
                RejectionCode.INVALID_VALUE,
                f"stop {stop.stop_id} already has reason {s.reason}",
                field="reason",
                value=s.reason,
            )
        old = stop.reason
        if old is not None and not stop.open and stop.reason_source != "alarm":
            self._require_supervisor(s.actor, "reclassify a past stop")
        stop.reason = s.reason
        stop.reason_source = s.actor
        self._touch("stop", stop.stop_id)
        if old is None:
            self._emit(
                EventType.STOP_REASON_SET,
                s.at,
                None,
                s.actor,
                stop_id=stop.stop_id,
                reason=s.reason,
                source="operator",
            )
        else:
            self._emit(
                EventType.STOP_RECLASSIFIED,
                s.at,
                None,
                s.actor,
                stop_id=stop.stop_id,
                old_reason=old,
                new_reason=s.reason,
            )

    def _find_stop(self, stop_id: str) -> Stop:
        if stop_id:
            stop = self.stops.get(stop_id)
            if stop is None:
                raise _reject(
                    RejectionCode.UNKNOWN_STOP,
                    f"stop_id = {stop_id!r}: no such stop",
                    field="stop_id",
                    value=stop_id,
                )
            return stop
        # The stop the panel is asking about: the open one, else the latest one still pending.
        if self.open_stop is not None:
            return self.open_stop
        for stop in reversed(self.stops.values()):
            if stop.reason is None and not stop.micro:
                return stop
        raise _reject(
            RejectionCode.UNKNOWN_STOP, "no stop is waiting for a reason", field="stop_id", value=""
        )

    # ------------------------------------------------------------------ time passes

    def _on_tick(self, t: Tick) -> bool:
        now = t.at
        stop = self.open_stop
        if stop is None:
            self._check_no_count(now)
            stop = self.open_stop
        if stop is not None:
            self._maybe_request_reason(stop, now)
        self._check_shift(now)
        self._escalate_help_calls(now)
        minutes = self.policy.every_minutes
        if minutes:
            for op in self.active:
                since = op.last_conf_end or op.first_start
                if since and now.since(since) >= minutes * 60_000 and op.pending.has_quantity():
                    self._confirm(op, now, "machine:policy", final=False)
        return False  # a tick changes state only through the events it emits

    def _check_no_count(self, now: Instant) -> None:
        """rules.md §4: no count for k x standard cycle while running opens a backdated stop."""
        running = [op for op in self.active if op.status is S.RUNNING and op.spec.std_cycle_s > 0]
        if not running:
            return
        limit_ms = min(
            self.rules.no_count_factor
            * op.spec.std_cycle_s
            * float(op.spec.parts_per_signal)
            * 1000
            for op in running
        )
        last = max(
            (
                max(op.last_count.mono_ms, op.accrued_to.mono_ms)
                if op.last_count and op.accrued_to
                else now.mono_ms
            )
            for op in running
        )
        if now.mono_ms - last <= limit_ms:
            return
        start = next(
            (
                op.last_count
                for op in running
                if op.last_count is not None and op.last_count.mono_ms == last
            ),
            None,
        ) or next(
            op.accrued_to for op in running if op.accrued_to and op.accrued_to.mono_ms == last
        )
        assert start is not None
        self._start_stop(start, StopOrigin.NO_COUNT, "machine")

    def _check_shift(self, now: Instant) -> None:
        rules = self.rules
        name, day = conf_rules.shift_of(now, self.shifts, rules.timezone)
        current = f"{day.isoformat()}/{name}"
        previous = self.header.shift_id
        if current == previous:
            return
        if previous is not None and self.policy.at_shift_end:
            posting = (previous.split("/")[0], previous)
            for op in self.active:
                if op.pending.has_quantity():
                    self._confirm(op, now, "machine:shift_end", final=False, posting=posting)
        self.header.shift_id = current
        self._touch("work_center", "")
        self._emit(EventType.SHIFT_CHANGED, now, None, None, shift=current, previous=previous)

    # ------------------------------------------------------------------ central

    def _on_dispatch(self, d: DispatchList) -> None:
        """rules.md §7: the whole list with a version; replace semantics."""
        h = self.header
        if not 1 <= d.version <= MAX_INT:
            raise _reject(
                RejectionCode.INVALID_VALUE,
                f"version = {d.version}: must be between 1 and {MAX_INT}",
                field="version",
                value=d.version,
            )
        if d.version <= h.dispatch_version:
            raise _reject(
                RejectionCode.STALE_DISPATCH,
                f"version = {d.version}: not newer than the dispatch list held "
                f"({h.dispatch_version})",
                field="version",
                value=d.version,
            )
        seen: set[OperationKey] = set()
        for i, spec in enumerate(d.operations):
            _check_spec(spec, i, self.rules.work_center)
            if spec.key in seen:
                raise _reject(
                    RejectionCode.INVALID_VALUE,
                    f"operations[{i}]: operation {spec.key} is listed twice",
                    field=f"operations[{i}]",
                    value=str(spec.key),
                )
            seen.add(spec.key)
        h.dispatch_version = d.version
        self._touch("work_center", "")
        for listed in d.operations:
            spec = replace(listed, work_center=self.rules.work_center)
            op = self.operations.get(spec.key)
            if op is None:
                self.operations[spec.key] = Operation(spec)
                self._touch("operation", spec.key)
                self._emit(
                    EventType.OPERATION_DISPATCHED, d.at, spec.key, d.actor, **_spec_data(spec)
                )
            elif op.status.finished:
                self._emit(
                    EventType.DISPATCH_CONFLICT,
                    d.at,
                    op,
                    d.actor,
                    conflict="already_finished",
                    status=op.status.value,
                )
            elif op.spec != spec:
                spec = self._changeable(op, spec, d)
                if op.spec == spec:
                    continue
                changes = _spec_changes(op.spec, spec)
                op.spec = spec
                self._touch("operation", spec.key)
                self._emit(
                    EventType.OPERATION_CHANGED,
                    d.at,
                    op,
                    d.actor,
                    active=op.status.active,
                    changes=changes,
                )
        for key, op in list(self.operations.items()):
            if key in seen or op.status.finished:
                continue
            if op.status.active:
                self._emit(
                    EventType.DISPATCH_CONFLICT,
                    d.at,
                    op,
                    d.actor,
                    conflict="active_not_in_list",
                    status=op.status.value,
                )
            elif not op.counted.has_quantity() and op.first_start is None:
                del self.operations[key]
                self._dirty.add(("operation", str(key)))
                self._emit(EventType.OPERATION_WITHDRAWN, d.at, op, d.actor)
            else:
                self._emit(
                    EventType.DISPATCH_CONFLICT,
                    d.at,
                    op,
                    d.actor,
                    conflict="started_not_in_list",
                    status=op.status.value,
                )
        self._emit(
            EventType.DISPATCH_APPLIED,
            d.at,
            None,
            d.actor,
            version=d.version,
            operations=[str(s.key) for s in d.operations],
        )

    def _changeable(self, op: Operation, spec: OperationSpec, d: DispatchList) -> OperationSpec:
        """rules.md §7: what a new dispatch list may change of an operation that has started.

        Once an operation has started (set up, run, or counted anything), the parts it counted
        belong to its material, in its unit, converted with its parts per signal: a new value
        for any of them would mislabel or rescale what is already counted, and a new parts per
        signal would make the next readings look like a jump. The list is applied with the old
        values kept for those fields, and a ``dispatch_conflict`` (``change_refused``) says so;
        complete or split the operation and dispatch a new one to change them. Everything else
        (target, tolerances, standards, due date, texts, sequence) applies from then on.
        """
        if op.first_start is None and not op.counted.has_quantity():
            return spec
        refused = {
            name: [_plain(getattr(op.spec, name)), _plain(getattr(spec, name))]
            for name in FIXED_ONCE_STARTED
            if getattr(op.spec, name) != getattr(spec, name)
        }
        if not refused:
            return spec
        self._emit(
            EventType.DISPATCH_CONFLICT,
            d.at,
            op,
            d.actor,
            conflict="change_refused",
            status=op.status.value,
            changes=refused,
        )
        return replace(spec, **{name: getattr(op.spec, name) for name in refused})

    def _on_master_data(self, m: MasterDataReceived) -> bool:
        current = self.header.master_data
        md = m.master_data
        if current is not None and md.version <= current.version:
            if md.version == current.version:
                return False  # the retained message again after a reconnect
            raise _reject(
                RejectionCode.STALE_DISPATCH,
                f"version = {md.version}: older than the master data held ({current.version})",
                field="version",
                value=md.version,
            )
        if not 1 <= md.version <= MAX_INT:
            raise _reject(
                RejectionCode.INVALID_VALUE,
                f"version = {md.version}: must be between 1 and {MAX_INT}",
                field="version",
                value=md.version,
            )
        if not md.stop_reasons:
            # Without stop reasons no stop could ever be given a reason: every stop would ask
            # for ever and no confirmation could explain its down time.
            raise _reject(
                RejectionCode.INVALID_VALUE,
                "stop_reasons = []: the stop-reason catalogue must not be empty",
                field="stop_reasons",
                value="[]",
            )
        for name in ("stop_reasons", "scrap_reasons", "alarm_reasons"):
            size = len(getattr(md, name))
            if size > MAX_CATALOGUE:
                raise _reject(
                    RejectionCode.INVALID_VALUE,
                    f"{name}: {size} entries, more than {MAX_CATALOGUE}",
                    field=name,
                    value=size,
                )
        if out_of_range(md.crew_size, ZERO, MAX_CREW) or md.crew_size <= 0:
            raise _reject(
                RejectionCode.INVALID_VALUE,
                f"crew_size = {md.crew_size}: must be more than 0 and at most {MAX_CREW}",
                field="crew_size",
                value=str(md.crew_size),
            )
        if md.policy is not None:
            _check_policy(md.policy)
        codes = {r.code for r in md.stop_reasons}
        for alarm, reason in md.alarm_reasons:
            if reason not in codes:
                raise _reject(
                    RejectionCode.UNKNOWN_REASON,
                    f"alarm_reasons[{alarm!r}] = {reason!r}: not a stop reason in this master data",
                    field=f"alarm_reasons.{alarm}",
                    value=reason,
                )
        self.header.master_data = _with_own_reasons(md, self.rules)
        self._touch("work_center", "")
        self._emit(EventType.MASTER_DATA_APPLIED, m.at, None, "central", version=md.version)
        return True

    def _on_rules(self, r: RulesApplied) -> None:
        self.header.rules = r.rules
        self._touch("work_center", "")
        self._emit(EventType.RULES_APPLIED, r.at, None, None, edge_id=r.rules.edge_id)


def _with_own_reasons(md: MasterData, rules: WorkCenterRules) -> MasterData:
    """Central's catalogue plus the scrap reasons the gateway books by itself (setup, machine),
    so every reason a confirmation carries is one the catalogue knows."""
    own = [
        ScrapReason(code, text)
        for code, text in (
            (rules.setup_scrap_reason, "Setup scrap"),
            (rules.machine_scrap_reason, "Machine scrap"),
        )
        if not md.has_scrap_reason(code)
    ]
    return replace(md, scrap_reasons=md.scrap_reasons + tuple(own)) if own else md


_POSTED_AGAIN = frozenset({ResultStatus.POSTED, ResultStatus.DUPLICATE})


def next_verdict(
    current: ConfirmationStatus | None, verdict: ResultStatus
) -> ConfirmationStatus | None:
    """rules.md §6: the ERP relay's verdict as a state machine that only moves forward.

    awaiting_result: posted or duplicate -> posted; rejected -> rejected; retrying stays.
    rejected: posted or duplicate -> posted (the relay got it through after all; the ERP has
    the document); a repeated rejected stays rejected; retrying is a contradiction.
    posted is final: anything after it is a contradiction (None), never applied.
    """
    posted = verdict in _POSTED_AGAIN
    if current is ConfirmationStatus.AWAITING_RESULT or current is None:
        if posted:
            return ConfirmationStatus.POSTED
        if verdict is ResultStatus.REJECTED:
            return ConfirmationStatus.REJECTED
        return ConfirmationStatus.AWAITING_RESULT
    if current is ConfirmationStatus.REJECTED:
        if posted:
            return ConfirmationStatus.POSTED
        return ConfirmationStatus.REJECTED if verdict is ResultStatus.REJECTED else None
    return None


def _check_policy(policy: ConfirmationPolicy) -> None:
    every = policy.every_good
    if every is not None and (out_of_range(every, Decimal(1), MAX_QUANTITY)):
        raise _reject(
            RejectionCode.INVALID_VALUE,
            f"confirmation_policy.every_good = {every}: must be from 1 to {MAX_QUANTITY}",
            field="confirmation_policy.every_good",
            value=str(every),
        )
    minutes = policy.every_minutes
    if minutes is not None and not MIN_EVERY_MINUTES <= minutes <= MAX_EVERY_MINUTES:
        raise _reject(
            RejectionCode.INVALID_VALUE,
            f"confirmation_policy.every_minutes = {minutes}: must be from "
            f"{MIN_EVERY_MINUTES:g} to {MAX_EVERY_MINUTES:g}",
            field="confirmation_policy.every_minutes",
            value=minutes,
        )


def _check_date(text: str) -> None:
    parts = text.split("-")
    ok = len(parts) == 3 and all(p.isdigit() for p in parts) and len(parts[0]) == 4
    if ok:
        _, mo, d = (int(p) for p in parts)
        ok = 1 <= mo <= 12 and 1 <= d <= 31
    if not ok:
        raise _reject(
            RejectionCode.INVALID_VALUE,
            f"posting_date = {text!r}: not a date YYYY-MM-DD",
            field="posting_date",
            value=text,
        )


def _check_spec(spec: OperationSpec, i: int, work_center: str) -> None:
    def bad(name: str, value: object, why: str) -> _Reject:
        return _reject(
            RejectionCode.INVALID_VALUE,
            f"operations[{i}].{name} = {value!r}: {why}",
            field=f"operations[{i}].{name}",
            value=value,
        )

    if not spec.order or not spec.operation or "/" in spec.order + spec.operation:
        raise bad(
            "order",
            f"{spec.order}/{spec.operation}",
            "order and operation must be non-empty, without '/'",
        )
    if spec.work_center and spec.work_center != work_center:
        raise bad("work_center", spec.work_center, f"this gateway is work center {work_center!r}")
    if out_of_range(spec.target_qty, ZERO, MAX_QUANTITY) or spec.target_qty <= 0:
        raise bad(
            "target_qty",
            spec.target_qty,
            f"must be a positive number up to {MAX_QUANTITY} "
            f"with at most {QUANTITY_PLACES} decimal places",
        )
    if out_of_range(spec.parts_per_signal, MIN_PARTS_PER_SIGNAL, MAX_PARTS_PER_SIGNAL):
        raise bad(
            "parts_per_signal",
            spec.parts_per_signal,
            f"must be between {MIN_PARTS_PER_SIGNAL} and {MAX_PARTS_PER_SIGNAL} "
            f"with at most {QUANTITY_PLACES} decimal places",
        )
    for name, high in (("std_setup_s", MAX_SETUP_S), ("std_cycle_s", MAX_CYCLE_S)):
        value = getattr(spec, name)
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= high:
            raise bad(name, value, f"must be a number of seconds from 0 to {high:g}")
    for name, limit in (
        ("over_tolerance_pct", MAX_TOLERANCE_PCT),
        ("under_tolerance_pct", MAX_TOLERANCE_PCT),
        ("crew_size", MAX_CREW),
    ):
        value = getattr(spec, name)
        if value is not None and out_of_range(value, ZERO, limit):
            raise bad(name, value, f"must be a number from 0 to {limit}")
    if not -MAX_SEQUENCE <= spec.sequence <= MAX_SEQUENCE:
        raise bad("sequence", spec.sequence, f"must be between -{MAX_SEQUENCE} and {MAX_SEQUENCE}")
    if not 0 <= spec.split <= MAX_SPLIT:
        raise bad("split", spec.split, f"must be between 0 and {MAX_SPLIT}")
    for name in ("material", "unit", "material_text", "confirmation_no", "due"):
        value = getattr(spec, name)
        if value is not None and len(value) > MAX_TEXT:
            raise bad(name, value[:40] + "...", f"must be at most {MAX_TEXT} characters")


def _spec_data(spec: OperationSpec) -> dict[str, object]:
    return {
        "material": spec.material,
        "target_qty": conf_rules.number(spec.target_qty),
        "unit": spec.unit,
        "sequence": spec.sequence,
        "std_setup_s": spec.std_setup_s,
        "std_cycle_s": spec.std_cycle_s,
        "due": spec.due,
    }


# What a dispatch list may no longer change once an operation started (see _changeable).
FIXED_ONCE_STARTED = ("material", "unit", "parts_per_signal")


def _plain(value: object) -> object:
    return conf_rules.number(value) if isinstance(value, Decimal) else value


def _spec_changes(old: OperationSpec, new: OperationSpec) -> dict[str, list[object]]:
    changes: dict[str, list[object]] = {}
    for name in old.__dataclass_fields__:
        a, b = getattr(old, name), getattr(new, name)
        if a != b:
            changes[name] = [_plain(a), _plain(b)]
    return changes
