"""One active operation per work center (rules.md §1) and the operation lifecycle (§2).

:data:`TRANSITIONS` is the table of rules.md §2: (status, action) -> next status; any other pair is
rejected naming the status and the action. :func:`on_transition` checks everything first (one
active operation unless the work center runs a family tool, supervisor-only completion from setup,
the variance reason below the under-delivery tolerance, what a split leaves), then confirms what
a complete, split or cancel needs, then changes the status (:func:`set_status`).

A split ends the operation ``completed`` with ``split`` set and hands the remainder back as a new
operation with the next split index (:func:`hand_back_remainder`).
"""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

from edge.domain import counting
from edge.domain.clock import Instant
from edge.domain.confirmations import confirm
from edge.domain.dispatch import note_sequence, spec_data
from edge.domain.events import EventType, RejectionCode
from edge.domain.inputs import (
    Action,
    MachineState,
    Transition,
)
from edge.domain.limits import MAX_TEXT
from edge.domain.model import (
    Operation,
    OperationStatus,
    StopOrigin,
    number,
)
from edge.domain.state import (
    WorkCenterState,
    is_supervisor,
    quantity_of,
    reject,
)
from edge.domain.stops import end_stop
from edge.domain.times import accrue

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


def set_status(
    s: WorkCenterState,
    op: Operation,
    new: OperationStatus,
    now: Instant,
    actor: str,
    action: str,
    reason: str | None = None,
) -> None:
    accrue(s, op, now)
    old = op.status
    op.status = new
    if op.first_start is None and new in (OperationStatus.SETUP, OperationStatus.RUNNING):
        op.first_start = now
        op.accrued_to = now
    if new is OperationStatus.RUNNING:
        op.last_count = now
    if new.finished:
        op.ended = now
    if old.active and not new.active:
        s.active_keys.remove(op.key)
    elif new.active and not old.active:
        s.active_keys.append(op.key)
        s.active_keys.sort()
        counting.close_unassigned(s, now)
    if old is OperationStatus.RUNNING and new is not OperationStatus.RUNNING:
        end_losses_of_running(s, now, actor)
    # The reason of a hold or cancel stays while the operation is held, or for good once it is
    # cancelled; any other change of status ends it.
    op.status_reason = reason if new in (OperationStatus.HELD, OperationStatus.CANCELLED) else None
    s.touch("operation", op.key)
    data: dict[str, object] = {"from": old.value, "to": new.value, "action": action}
    if reason is not None:
        data["reason"] = reason
    s.emit(EventType.OPERATION_STATE_CHANGED, now, op, actor, **data)


def end_losses_of_running(s: WorkCenterState, now: Instant, actor: str) -> None:
    """rules.md §4: "no count while running" and "idle while running" are losses of a running
    operation; both end when nothing runs any more (completed, cancelled, held, split or
    interrupted). A stop because the machine is down stays: down is a stop whatever runs."""
    stop = s.open_stop
    if stop is None or any(
        s.operations[k].status is OperationStatus.RUNNING for k in s.active_keys
    ):
        return
    if stop.origin is StopOrigin.NO_COUNT or s.header.machine_state is not MachineState.DOWN:
        end_stop(s, stop, now, actor)


def on_transition(s: WorkCenterState, t: Transition) -> None:
    op = s.find_op(t.op)
    status = op.status
    target = TRANSITIONS.get((status, t.action), OperationStatus.DISPATCHED)
    if (status, t.action) not in TRANSITIONS:
        raise reject(
            RejectionCode.ILLEGAL_TRANSITION,
            f"operation {op.key} is {status.value}; cannot {t.action.value.replace('_', ' ')}",
            field="action",
            value=t.action.value,
            state=status.value,
            action=t.action.value,
        )
    if target is None:
        target = op.resume_to if t.action is Action.RESUME else op.held_from
        target = target or OperationStatus.DISPATCHED
    if (
        status is OperationStatus.SETUP
        and t.action is Action.COMPLETE
        and not is_supervisor(t.actor)
    ):
        raise reject(
            RejectionCode.SUPERVISOR_ONLY,
            f"operation {op.key} is in setup; only a supervisor may complete it",
            field="actor",
            value=t.actor,
            state=status.value,
            action=t.action.value,
        )
    if target.active and not status.active:
        check_may_activate(s, op)
    variance = check_variance_reason(s, op, t)
    reason = check_status_reason(t)
    remainder = check_split(s, op, t) if t.action is Action.SPLIT else None

    if t.action in (Action.INTERRUPT,):
        op.resume_to = status
    if t.action is Action.HOLD:
        op.held_from = status
    if (
        t.action in (Action.START_SETUP, Action.START_PRODUCTION)
        and status is OperationStatus.DISPATCHED
    ):
        note_sequence(s, op, t)
    if t.action is Action.CANCEL:
        if status is OperationStatus.RUNNING and t.actor == "central":
            op.resume_to = status
            set_status(s, op, OperationStatus.INTERRUPTED, t.at, t.actor, Action.INTERRUPT.value)
        if op.counted.has_quantity():
            confirm(s, op, t.at, t.actor, final=True)
    elif t.action in (Action.COMPLETE, Action.SPLIT):
        confirm(s, op, t.at, t.actor, final=True, variance_reason=variance)
    set_status(s, op, target, t.at, t.actor, t.action.value, reason)
    if remainder is not None:
        hand_back_remainder(s, op, remainder, t)


def check_may_activate(s: WorkCenterState, op: Operation) -> None:
    """rules.md §1: one active operation per work center, unless it runs a family tool."""
    if s.rules.family_tool or not s.active_keys:
        return
    other = s.operations[s.active_keys[0]]
    raise reject(
        RejectionCode.OPERATION_ACTIVE,
        f"operation {other.key} is {other.status.value}; interrupt or complete it first",
        field="op",
        value=str(op.key),
        state=other.status.value,
    )


def check_status_reason(t: Transition) -> str | None:
    """The reason in words a hold or cancel may carry: printable, at most MAX_TEXT characters
    (a blank one is none). Another action has no use for one and is refused with it, so
    nothing is kept that no one will see."""
    reason = (t.reason or "").strip()
    if not reason:
        return None
    shown = reason if len(reason) <= 40 else reason[:40] + "..."
    if t.action not in (Action.HOLD, Action.CANCEL):
        why = "only a hold or a cancel carries a reason"
    elif len(reason) > MAX_TEXT:
        why = f"at most {MAX_TEXT} characters"
    elif not reason.isprintable():
        why = "only printable characters"
    else:
        return reason
    raise reject(
        RejectionCode.INVALID_VALUE,
        f"reason = {shown!r}: {why}",
        field="reason",
        value=shown,
        action=t.action.value,
    )


def check_variance_reason(s: WorkCenterState, op: Operation, t: Transition) -> str | None:
    """rules.md §7: completing below the under-delivery tolerance needs a variance reason."""
    reason = (t.variance_reason or "").strip() or None
    if reason is not None and len(reason) > 40:
        raise reject(
            RejectionCode.INVALID_VALUE,
            f"variance_reason = {reason!r}: at most 40 characters",
            field="variance_reason",
            value=reason,
        )
    under = op.spec.under_tolerance_pct
    if t.action is Action.COMPLETE and under is not None and reason is None:
        floor = op.spec.target_qty * (1 - under / 100)
        if op.counted.good < floor:
            raise reject(
                RejectionCode.VARIANCE_REASON_REQUIRED,
                f"operation {op.key}: {op.counted.good} {op.spec.unit} is below the "
                f"under-delivery tolerance ({floor}); give a variance reason",
                field="variance_reason",
                value=None,
                state=op.status.value,
                action=t.action.value,
            )
    return reason


def check_split(s: WorkCenterState, op: Operation, t: Transition) -> Decimal:
    if t.quantity is None:
        remainder = op.spec.target_qty - op.counted.good
        if remainder <= 0:
            raise reject(
                RejectionCode.INVALID_VALUE,
                f"operation {op.key}: nothing remains to split off "
                f"({op.counted.good} of {op.spec.target_qty} {op.spec.unit} made)",
                field="quantity",
                value=None,
            )
        return remainder
    return quantity_of(t.quantity, "quantity")


def hand_back_remainder(
    s: WorkCenterState, op: Operation, remainder: Decimal, t: Transition
) -> None:
    """rules.md §2 ²: the remainder becomes a new operation with the next split index."""
    op.split_done = True
    same = (op.key.order, op.key.operation)
    next_split = max(k.split for k in s.operations if (k.order, k.operation) == same) + 1
    spec = replace(op.spec, split=next_split, target_qty=remainder)
    new = Operation(spec)
    s.operations[spec.key] = new
    s.touch("operation", spec.key)
    s.emit(
        EventType.OPERATION_SPLIT,
        t.at,
        op,
        t.actor,
        remainder_op=str(spec.key),
        remainder_qty=number(remainder),
        done_qty=number(op.counted.good),
    )
    s.emit(EventType.OPERATION_DISPATCHED, t.at, new, t.actor, **spec_data(spec))
