"""Stops (rules.md §4): when a stop starts and ends, micro-stops, reasons and reclassification.

- A stop starts when the machine state says down (whether or not an order runs) or idle (only
  while an operation is running), or when no count arrived for ``no_count_factor`` x the standard
  cycle time while running (:func:`check_no_count`); a no-count stop is backdated to the last
  count.
- A no-count stop ends at the next count (:func:`edge.domain.counting.count`) or when the state
  says running; a state stop ends when the state says running (:func:`on_machine_state`). Both
  end when nothing runs any more (:func:`edge.domain.lifecycle.end_losses_of_running`), unless
  the machine is down.
- A stop shorter than the micro-stop threshold is a micro-stop and never asks for a reason; a
  longer one without a reason asks for it (:func:`maybe_request_reason`). A machine alarm mapped
  in the master data gives the reason (``source: alarm``); changing a reason after the fact is a
  reclassification (:func:`on_stop_reason`).
"""

from __future__ import annotations

from edge.domain.clock import Instant
from edge.domain.events import EventType, RejectionCode
from edge.domain.inputs import (
    MachineState,
    MachineStateChanged,
    SetStopReason,
)
from edge.domain.model import (
    OperationStatus,
    Stop,
    StopOrigin,
)
from edge.domain.state import (
    WorkCenterState,
    reject,
    require_supervisor,
)
from edge.domain.times import accrue_active


def start_stop(
    s: WorkCenterState, start: Instant, origin: StopOrigin, actor: str, alarm: str | None = None
) -> Stop:
    accrue_active(s, start)
    h = s.header
    sid = f"S{h.next_stop_no:06d}"
    h.next_stop_no += 1
    stop = Stop(sid, start, origin, operations=[str(k) for k in s.active_keys], alarm=alarm)
    s.stops[sid] = stop
    h.open_stop = sid
    s.touch("stop", sid)
    s.touch("work_center", "")
    s.emit(
        EventType.STOP_STARTED,
        start,
        s.active_keys[0] if s.active_keys else None,
        actor,
        stop_id=sid,
        origin=origin.value,
        operations=list(stop.operations),
        alarm=alarm,
    )
    if alarm:
        apply_alarm_reason(s, stop, alarm, start)
    return stop


def apply_alarm_reason(s: WorkCenterState, stop: Stop, alarm: str, at: Instant) -> None:
    reason = s.master_data.reason_for_alarm(alarm)
    if reason is None or stop.reason is not None:
        return
    stop.reason = reason
    stop.reason_source = "alarm"
    s.touch("stop", stop.stop_id)
    s.emit(
        EventType.STOP_REASON_SET,
        at,
        None,
        "machine",
        stop_id=stop.stop_id,
        reason=reason,
        source="alarm",
    )


def end_stop(s: WorkCenterState, stop: Stop, at: Instant, actor: str) -> None:
    accrue_active(s, at)
    stop.end = at
    duration = stop.duration_ms(at)
    stop.micro = duration < s.rules.micro_stop_s * 1000
    s.header.open_stop = None
    for key in s.active_keys:
        s.operations[key].last_count = at
    s.touch("stop", stop.stop_id)
    s.touch("work_center", "")
    s.emit(
        EventType.STOP_ENDED,
        at,
        None,
        actor,
        stop_id=stop.stop_id,
        duration_s=duration / 1000,
        micro=stop.micro,
        reason=stop.reason,
    )
    maybe_request_reason(s, stop, at)


def maybe_request_reason(s: WorkCenterState, stop: Stop, now: Instant) -> None:
    """rules.md §4: a stop past the micro-stop threshold without a reason asks for one."""
    if stop.reason or stop.reason_requested or stop.micro:
        return
    if stop.duration_ms(now) < s.rules.micro_stop_s * 1000:
        return
    stop.reason_requested = True
    s.touch("stop", stop.stop_id)
    s.emit(EventType.STOP_REASON_REQUESTED, now, None, None, stop_id=stop.stop_id)


def on_machine_state(s: WorkCenterState, m: MachineStateChanged) -> bool:
    h = s.header
    if h.machine_state is m.state and h.machine_alarm == m.alarm:
        return False
    actor = f"machine:{m.source}"
    h.machine_state = m.state
    h.machine_alarm = m.alarm
    s.touch("work_center", "")
    s.emit(EventType.MACHINE_STATE, m.at, None, actor, state=m.state.value, alarm=m.alarm)
    stop = s.open_stop
    # Down is a stop whatever runs (maintenance needs it); idle is a loss only while an
    # operation is running: a machine waiting with no order, or in setup, is not down.
    running = any(s.operations[k].status is OperationStatus.RUNNING for k in s.active_keys)
    if m.state is MachineState.DOWN or (m.state is MachineState.IDLE and running):
        if stop is None:
            start_stop(s, m.at, StopOrigin.MACHINE_STATE, actor, m.alarm)
        elif m.alarm:
            stop.alarm = stop.alarm or m.alarm
            apply_alarm_reason(s, stop, m.alarm, m.at)
    elif m.state is MachineState.RUNNING and stop is not None:
        end_stop(s, stop, m.at, actor)
    return True


def on_stop_reason(s: WorkCenterState, r: SetStopReason) -> None:
    s.check_stop_reason(r.reason)
    stop = find_stop(s, r.stop_id)
    if stop.reason == r.reason:
        raise reject(
            RejectionCode.INVALID_VALUE,
            f"stop {stop.stop_id} already has reason {r.reason}",
            field="reason",
            value=r.reason,
        )
    old = stop.reason
    if old is not None and not stop.open and stop.reason_source != "alarm":
        require_supervisor(r.actor, "reclassify a past stop")
    stop.reason = r.reason
    stop.reason_source = r.actor
    s.touch("stop", stop.stop_id)
    if old is None:
        s.emit(
            EventType.STOP_REASON_SET,
            r.at,
            None,
            r.actor,
            stop_id=stop.stop_id,
            reason=r.reason,
            source="operator",
        )
    else:
        s.emit(
            EventType.STOP_RECLASSIFIED,
            r.at,
            None,
            r.actor,
            stop_id=stop.stop_id,
            old_reason=old,
            new_reason=r.reason,
        )


def find_stop(s: WorkCenterState, stop_id: str) -> Stop:
    if stop_id:
        stop = s.stops.get(stop_id)
        if stop is None:
            raise reject(
                RejectionCode.UNKNOWN_STOP,
                f"stop_id = {stop_id!r}: no such stop",
                field="stop_id",
                value=stop_id,
            )
        return stop
    # The stop the panel is asking about: the open one, else the latest one still pending.
    if s.open_stop is not None:
        return s.open_stop
    for stop in reversed(s.stops.values()):
        if stop.reason is None and not stop.micro:
            return stop
    raise reject(
        RejectionCode.UNKNOWN_STOP, "no stop is waiting for a reason", field="stop_id", value=""
    )


def check_no_count(s: WorkCenterState, now: Instant) -> None:
    """rules.md §4: no count for k x standard cycle while running opens a backdated stop."""
    running = [
        op for op in s.active if op.status is OperationStatus.RUNNING and op.spec.std_cycle_s > 0
    ]
    if not running:
        return
    limit_ms = min(
        s.rules.no_count_factor * op.spec.std_cycle_s * float(op.spec.parts_per_signal) * 1000
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
    ) or next(op.accrued_to for op in running if op.accrued_to and op.accrued_to.mono_ms == last)
    assert start is not None
    start_stop(s, start, StopOrigin.NO_COUNT, "machine")


def on_time(s: WorkCenterState, now: Instant) -> None:
    """Time passes: no count for too long opens a stop; a long stop asks for its reason."""
    stop = s.open_stop
    if stop is None:
        check_no_count(s, now)
        stop = s.open_stop
    if stop is not None:
        maybe_request_reason(s, stop, now)
