"""One active operation per work center (rules.md §1) and the operation lifecycle (§2).

:data:`TRANSITIONS` is the table of rules.md §2: (status, action) -> next status; any other pair is
rejected naming the status and the action. :func:`on_transition` checks everything first (one
active operation unless the work center runs a family tool, supervisor-only completion from setup,
the variance reason below the under-delivery tolerance, what a split leaves), then confirms what
a complete, split or cancel needs, then changes the status (:func:`set_status`).

A split ends the operation ``completed`` with ``split`` set and hands the remainder back as a new
operation with the next split index (:func:`hand_back_remainder`).

Central may merge dispatched operations of the same material into one (:func:`on_merge`):
only operations nothing has happened to yet (dispatched, never started, nothing counted or
confirmed, not held), of the same work center, material and unit. The sources end ``merged``
(finished, never confirmed, ``merged_into`` the target); the target takes the sum of the
quantities (or the one the message gives) and the earliest due date (or the one given). A
merge whose sources are all merged into that target already changes nothing and is not
refused (a message sent again).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

from edge.domain import counting
from edge.domain.clock import Instant
from edge.domain.confirmations import confirm
from edge.domain.dispatch import note_sequence, spec_changes, spec_data
from edge.domain.events import EventType, RejectionCode
from edge.domain.inputs import (
    Action,
    MachineState,
    MergeOperations,
    Transition,
)
from edge.domain.limits import MAX_MERGE, MAX_QUANTITY, MAX_TEXT
from edge.domain.material import carried_to_remainder
from edge.domain.model import (
    ZERO,
    Operation,
    OperationStatus,
    StopOrigin,
    number,
)
from edge.domain.order_kpis import completion_data
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
    # cancelled (or merged); any other change of status ends it.
    kept = (OperationStatus.HELD, OperationStatus.CANCELLED, OperationStatus.MERGED)
    op.status_reason = reason if new in kept else None
    s.touch("operation", op.key)
    data: dict[str, object] = {"from": old.value, "to": new.value, "action": action}
    if reason is not None:
        data["reason"] = reason
    s.emit(EventType.OPERATION_STATE_CHANGED, now, op, actor, **data)
    if new is OperationStatus.COMPLETED:
        s.emit(EventType.OPERATION_KPIS, now, op, None, **completion_data(s, op, now))


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
    new = Operation(spec, batch_loads=carried_to_remainder(op))
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


def on_merge(s: WorkCenterState, m: MergeOperations) -> bool | None:
    """Merge ``m.sources`` into ``m.target`` (see the module's docstring); everything is
    checked before anything changes. False: all were merged into the target before."""
    if not 1 <= len(m.sources) <= MAX_MERGE:
        raise reject(
            RejectionCode.INVALID_VALUE,
            f"sources: {len(m.sources)} operations; a merge names 1 to {MAX_MERGE}",
            field="sources",
            value=len(m.sources),
        )
    target = s.find_op(m.target, "target")
    sources: list[Operation] = []
    for i, ref in enumerate(m.sources):
        name = f"sources[{i}]"
        op = s.find_op(ref, name)
        if op is target:
            raise reject(
                RejectionCode.INVALID_VALUE,
                f"{name} = {ref!r}: operation {op.key} is the target; it cannot be merged "
                "into itself",
                field=name,
                value=ref,
            )
        if op in sources:
            raise reject(
                RejectionCode.INVALID_VALUE,
                f"{name} = {ref!r}: operation {op.key} is named twice",
                field=name,
                value=ref,
            )
        sources.append(op)
    new = [op for op in sources if op.merged_into != str(target.key)]
    if not new:
        return False  # merged before: the same merge again changes nothing
    reason = _merge_reason(m.reason)
    _check_mergeable(target, "target", m.target)
    for i, op in enumerate(sources):
        if op in new:
            _check_mergeable(op, f"sources[{i}]", m.sources[i], target)
    if m.quantity is not None:
        qty = quantity_of(m.quantity, "quantity")
    else:
        qty = target.spec.target_qty + sum((op.spec.target_qty for op in new), ZERO)
        if qty > MAX_QUANTITY:
            raise reject(
                RejectionCode.INVALID_VALUE,
                f"quantity: the merged quantity {qty} {target.spec.unit} is over "
                f"{MAX_QUANTITY}; give the quantity",
                field="quantity",
                value=str(qty),
            )
    if m.due is not None and (len(m.due) > MAX_TEXT or not m.due.isprintable()):
        raise reject(
            RejectionCode.INVALID_VALUE,
            f"due = {m.due[:40]!r}: at most {MAX_TEXT} printable characters",
            field="due",
            value=m.due[:40],
        )
    due = m.due if m.due is not None else earliest_due([target, *new])
    into = str(target.key)
    for op in new:
        op.merged_into = into
        set_status(s, op, OperationStatus.MERGED, m.at, m.actor, "merge", f"merged into {into}")
    spec = replace(target.spec, target_qty=qty, due=due)
    changes = spec_changes(target.spec, spec)
    target.spec = spec
    if target.dispatched_at is not None and "due" in changes:
        target.rescheduled = True
    s.touch("operation", target.key)
    data: dict[str, object] = {
        "sources": [str(op.key) for op in new],
        "target_qty": number(qty),
        "due": due,
        "changes": changes,
    }
    if reason is not None:
        data["reason"] = reason
    s.emit(EventType.OPERATION_MERGED, m.at, target, m.actor, **data)
    return None


def _merge_reason(text: str | None) -> str | None:
    reason = (text or "").strip()
    if not reason:
        return None
    if len(reason) > MAX_TEXT or not reason.isprintable():
        raise reject(
            RejectionCode.INVALID_VALUE,
            f"reason = {reason[:40]!r}: at most {MAX_TEXT} printable characters",
            field="reason",
            value=reason[:40],
        )
    return reason


def _check_mergeable(op: Operation, name: str, ref: str, target: Operation | None = None) -> None:
    """Only an operation nothing has happened to may take part in a merge; a source must be of
    the target's work center, material and unit."""
    why = None
    if op.status.finished:
        why = f"is {op.status.value}" + (f" (into {op.merged_into})" if op.merged_into else "")
    elif op.status.active:
        why = f"is {op.status.value}"
    elif op.status is OperationStatus.HELD:
        why = "is held; release it first"
    elif op.conf_count or not op.confirmed.is_empty():
        why = f"is partly confirmed ({op.conf_count} confirmations)"
    elif op.counted.has_quantity():
        why = f"has counts ({number(op.counted.good)} good)"
    elif op.first_start is not None:
        why = "has started before"
    elif target is not None:
        for field_name in ("work_center", "material", "unit"):
            mine, theirs = getattr(op.spec, field_name), getattr(target.spec, field_name)
            if mine != theirs:
                why = f"{field_name} {mine!r} is not the target's ({theirs!r})"
                break
    if why is None:
        return
    raise reject(
        RejectionCode.OPERATION_ACTIVE if op.status.active else RejectionCode.INVALID_VALUE,
        f"{name} = {ref!r}: operation {op.key} {why}; only dispatched operations that nothing "
        "happened to can be merged",
        field=name,
        value=ref,
        state=op.status.value,
        action="merge",
    )


def earliest_due(ops: list[Operation]) -> str | None:
    """The earliest due date of ``ops`` (ISO 8601 as the ERP sent it; one without an offset
    is taken as UTC; a text that is no date is left out)."""
    best: tuple[datetime, str] | None = None
    for op in ops:
        text = op.spec.due
        if not text:
            continue
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            continue
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        if best is None or moment < best[0]:
            best = (moment, text)
    return best[1] if best else None
