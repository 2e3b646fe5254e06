"""Time elements per operation (rules.md §5, ISO 22400-2).

Setup time is time in ``setup``; production time is time in ``running`` minus stops; down time is
the stops, planned and unplanned and by reason; interrupted and held time are waiting time. They
add up to the wall-clock time from first start to completion. Every duration comes from the
monotonic clock: a wall-clock step never makes one negative or jump.

Time is booked lazily: each status change and each stop start or end first accrues the time since
the last accrual to the bucket of the status it was spent in.
"""

from __future__ import annotations

from edge.domain.clock import Instant
from edge.domain.model import (
    Operation,
    OperationStatus,
    TimeElements,
)
from edge.domain.state import (
    WorkCenterState,
)


def accrue(s: WorkCenterState, op: Operation, now: Instant) -> None:
    """Add the time since the last accrual to the bucket of the operation's current status."""
    since = op.accrued_to
    if since is None or op.first_start is None or op.status.finished:
        return
    elapsed = now.since(since)
    op.accrued_to = now if now.mono_ms >= since.mono_ms else since
    if not elapsed:
        return
    status = op.status
    if status is OperationStatus.SETUP:
        op.counted.setup_ms += elapsed
        _labour(s, op, elapsed)
    elif status is OperationStatus.RUNNING:
        stop = s.open_stop
        if stop is None:
            op.counted.production_ms += elapsed
            _labour(s, op, elapsed)
        else:
            op.counted.down_ms += elapsed
            key = str(op.key)
            stop.down_ms[key] = stop.down_ms.get(key, 0) + elapsed
            s.touch("stop", stop.stop_id)
    elif status in (OperationStatus.INTERRUPTED, OperationStatus.HELD):
        op.counted.waiting_ms += elapsed
    s.touch("operation", op.key)


def _labour(s: WorkCenterState, op: Operation, elapsed: int) -> None:
    """Setup and production time is labour of each operator logged in while it passed."""
    if not s.rules.labour_per_operator:
        return
    for member in s.header.crew:
        op.labour[member.personnel] = op.labour.get(member.personnel, 0) + elapsed


def pending_labour(op: Operation) -> dict[str, int]:
    """Labour per operator not confirmed yet, personnel -> ms (none left out as 0)."""
    out = {}
    for personnel, ms in sorted(op.labour.items()):
        left = ms - op.labour_confirmed.get(personnel, 0)
        if left:
            out[personnel] = left
    return out


def add_labour(into: dict[str, int], labour: dict[str, int], sign: int = 1) -> None:
    for personnel, ms in labour.items():
        total = into.get(personnel, 0) + sign * ms
        if total:
            into[personnel] = total
        else:
            into.pop(personnel, None)


def accrue_active(s: WorkCenterState, now: Instant) -> None:
    for key in s.active_keys:
        accrue(s, s.operations[key], now)


def time_elements(s: WorkCenterState, op: Operation, now: Instant | None = None) -> TimeElements:
    """ISO 22400 time elements of one operation, down time by its stops' latest reasons."""
    counted = op.counted
    if now is not None and op.accrued_to is not None and not op.status.finished:
        counted = counted.copy()
        extra = now.since(op.accrued_to)
        if op.status is OperationStatus.SETUP:
            counted.setup_ms += extra
        elif op.status is OperationStatus.RUNNING:
            if s.open_stop is None:
                counted.production_ms += extra
            else:
                counted.down_ms += extra
        elif op.status in (OperationStatus.INTERRUPTED, OperationStatus.HELD):
            counted.waiting_ms += extra
    by_reason: dict[str, int] = {}
    planned = unplanned = 0
    key = str(op.key)
    for stop in s.stops.values():
        ms = stop.down_ms.get(key)
        if not ms:
            continue
        code = stop.reason or ("MICRO" if stop.micro else "PENDING")
        by_reason[code] = by_reason.get(code, 0) + ms
        reason = s.master_data.stop_reason(stop.reason) if stop.reason else None
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
