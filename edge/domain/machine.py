"""Machine hours and maintenance: what maintenance needs from the work center.

- **Running time** is the time the machine runs: while its state source says ``running``, or,
  with no state source, while an operation is in production without a stop. It is added up
  whenever the machine starts or stops (``MachineHours.mark``) and read live in between, so
  the hours shown and published are current without a write per input.
- **Starts**: how often it went from not running to running.
- **Cycles and parts** are kept per counter (``CounterTrack.machine_cycles``/``machine_parts``)
  from the counted signals, so a counter reset, a wrap or a gateway restart never loses or
  doubles one: the counting chapter already took those out. A cycle is a signal of a good or
  total counter (of a scrap counter too when no total counter counts it already); its parts
  are the signal times the active operation's parts per signal (each operation's, for a family
  tool), or one per signal with none active.
- **Service intervals** (``[[service]]``: a name, a measure, every how much) fall due once
  the measure grew by ``every`` since the task was last done (or since it was first counted):
  one ``maintenance_due`` event, and the andon shows it (``AndonState.maintenance_due``) until
  a supervisor or central says it was done (:class:`ServiceDone`), which counts it again from
  there.
- A **maintenance request** is raised by the operator, from a stop or without one; one per
  stop (a second tap is refused naming the first request).

Everything is counted from the first rules that say to (``machine_hours``): a journal written
before they existed replays without them, so ``edge verify`` holds across the upgrade. The
hours are published at every shift change (``machine_hours``).
"""

from __future__ import annotations

from decimal import Decimal

from edge.domain.calendar import shift_of
from edge.domain.clock import Instant
from edge.domain.events import EventType, RejectionCode
from edge.domain.inputs import MachineState, RequestMaintenance, ServiceDone
from edge.domain.kpis import Condition, condition_of
from edge.domain.model import ZERO, CounterTrack, MachineHours, ServiceState, number
from edge.domain.rules import CountKind, CountSource, ServiceInterval, ServiceMeasure
from edge.domain.state import WorkCenterState, is_supervisor, reject, text_of

HOUR_MS = 3_600_000


def is_running(s: WorkCenterState) -> bool:
    """Whether the machine runs now: its state when a source reports one, else production."""
    state = s.header.machine_state
    if state is not None:
        return state is MachineState.RUNNING
    return condition_of(s)[0] is Condition.RUNNING


def run_ms(m: MachineHours, now: Instant) -> int:
    """Milliseconds the machine ran since counting began, up to ``now``."""
    return m.run_ms + (now.since(m.mark) if m.running else 0)


def cycles(s: WorkCenterState) -> int:
    return sum(t.machine_cycles for t in s.counters.values())


def parts(s: WorkCenterState) -> Decimal:
    return sum((t.machine_parts for t in s.counters.values()), ZERO)


def _raw(s: WorkCenterState, m: MachineHours, measure: ServiceMeasure, now: Instant) -> Decimal:
    """The measure's reading in its exact unit: milliseconds for hours."""
    if measure is ServiceMeasure.HOURS:
        return Decimal(run_ms(m, now))
    if measure is ServiceMeasure.STARTS:
        return Decimal(m.starts)
    if measure is ServiceMeasure.CYCLES:
        return Decimal(cycles(s))
    return parts(s)


def _shown(measure: ServiceMeasure, raw: Decimal) -> Decimal:
    """A reading as people read it: hours to three places, counts as they are."""
    if measure is ServiceMeasure.HOURS:
        return (raw / HOUR_MS).quantize(Decimal("0.001")).normalize()
    return raw


def _every_raw(interval: ServiceInterval) -> Decimal:
    if interval.measure is ServiceMeasure.HOURS:
        return interval.every * HOUR_MS
    return interval.every


def totals(s: WorkCenterState, now: Instant) -> dict[str, object] | None:
    """The machine's counters and each interval's standing at ``now`` (None: not counted)."""
    m = s.header.machine
    if m is None:
        return None
    service = []
    for interval in s.rules.service:
        st = m.service.get(interval.name)
        if st is None:
            continue
        used = _raw(s, m, interval.measure, now) - st.base
        service.append(
            {
                "name": interval.name,
                "measure": interval.measure.value,
                "every": number(interval.every),
                "since_done": number(_shown(interval.measure, used)),
                "remaining": number(_shown(interval.measure, _every_raw(interval) - used)),
                "due": st.due_at is not None,
                "due_since": st.due_at.iso() if st.due_at else None,
                "done_at": st.done_at.iso() if st.done_at else None,
                "text": interval.text,
            }
        )
    return {
        "since": m.since.iso(),
        "running": m.running,
        "hours": number(_shown(ServiceMeasure.HOURS, Decimal(run_ms(m, now)))),
        "starts": m.starts,
        "cycles": cycles(s),
        "parts": number(parts(s)),
        "service": service,
    }


def any_due(s: WorkCenterState) -> bool:
    m = s.header.machine
    return m is not None and any(st.due_at is not None for st in m.service.values())


# ------------------------------------------------------------------ after each input


def after_input(s: WorkCenterState, at: Instant, changed: bool) -> None:
    """After an input that changed the state (or a tick): the running time when the machine
    started or stopped, and the intervals that fell due."""
    if not s.rules.machine_hours:
        return
    m = s.header.machine
    if m is None:
        if not changed:
            return
        m = s.header.machine = MachineHours(since=at, mark=at, running=is_running(s))
        reconcile(s, at)
        s.touch("work_center", "")
        return
    if changed:
        running = is_running(s)
        if running != m.running:
            if m.running:
                m.run_ms += at.since(m.mark)
            else:
                m.starts += 1
            m.mark = at
            m.running = running
            s.touch("work_center", "")
    _check_due(s, m, at)


def _check_due(s: WorkCenterState, m: MachineHours, at: Instant) -> None:
    for interval in s.rules.service:
        st = m.service.get(interval.name)
        if st is None or st.due_at is not None:
            continue
        used = _raw(s, m, interval.measure, at) - st.base
        if used < _every_raw(interval):
            continue
        st.due_at = at
        s.touch("work_center", "")
        s.emit(
            EventType.MAINTENANCE_DUE,
            at,
            None,
            "machine",
            name=interval.name,
            measure=interval.measure.value,
            every=number(interval.every),
            since_done=number(_shown(interval.measure, used)),
            text=interval.text,
            done_at=st.done_at.iso() if st.done_at else None,
        )


def reconcile(s: WorkCenterState, at: Instant) -> None:
    """The configured intervals, after the rules changed: a new one is counted from now, one
    no longer configured is dropped, one kept keeps its count (a new ``every`` applies to it)."""
    m = s.header.machine
    if m is None:
        return
    names = {i.name for i in s.rules.service}
    for gone in [n for n in m.service if n not in names]:
        del m.service[gone]
    for interval in s.rules.service:
        if interval.name not in m.service:
            m.service[interval.name] = ServiceState(interval.name, _raw(s, m, interval.measure, at))
    s.touch("work_center", "")


def on_count(s: WorkCenterState, src: CountSource, signals: int) -> None:
    """Signals counted by ``src`` (resets and wraps already taken out): its cycles and parts."""
    if not s.rules.machine_hours or signals <= 0:
        return
    if src.kind is CountKind.SCRAP and s.rules.counts_total():
        return  # the total counter counted this cycle already
    track = s.counters.get(src.name)
    if track is None:
        track = s.counters[src.name] = CounterTrack(src.name)
    track.machine_cycles += signals
    made = sum((signals * s.operations[k].spec.parts_per_signal for k in s.active_keys), ZERO)
    track.machine_parts += made if s.active_keys else Decimal(signals)
    s.touch("counter", src.name)


def at_shift_change(s: WorkCenterState, now: Instant) -> None:
    """Before the shift change is booked: the machine's hours go out for maintenance."""
    m = s.header.machine
    if m is None or s.header.shift_id is None:
        return
    name, day = shift_of(now, s.calendar)
    if f"{day.isoformat()}/{name}" != s.header.shift_id:
        s.emit(EventType.MACHINE_HOURS, now, None, None, shift=s.header.shift_id, **_body(s, now))


def _body(s: WorkCenterState, now: Instant) -> dict[str, object]:
    found = totals(s, now)
    return dict(found) if found is not None else {}


# ------------------------------------------------------------------ inputs


def on_service_done(s: WorkCenterState, d: ServiceDone) -> None:
    if not (is_supervisor(d.actor) or d.actor == "central"):
        raise reject(
            RejectionCode.SUPERVISOR_ONLY,
            "only a supervisor or central's maintenance system may say a service was done",
            field="actor",
            value=d.actor,
        )
    m = s.header.machine
    interval = next((i for i in s.rules.service if i.name == d.name), None)
    st = m.service.get(d.name) if m is not None else None
    if m is None or interval is None or st is None:
        known = ", ".join(i.name for i in s.rules.service) or "none"
        raise reject(
            RejectionCode.UNKNOWN_SERVICE,
            f"name = {d.name!r}: no maintenance interval of that name (configured: {known})",
            field="name",
            value=d.name,
        )
    note = text_of(d.note, "note") if d.note else None
    raw = _raw(s, m, interval.measure, d.at)
    was_due = st.due_at
    used = raw - st.base
    st.base = raw
    st.done_at = d.at
    st.done_by = d.actor
    st.due_at = None
    s.touch("work_center", "")
    s.emit(
        EventType.MAINTENANCE_DONE,
        d.at,
        None,
        d.actor,
        name=interval.name,
        measure=interval.measure.value,
        every=number(interval.every),
        since_done=number(_shown(interval.measure, used)),
        due_since=was_due.iso() if was_due else None,
        note=note,
    )


def on_request(s: WorkCenterState, r: RequestMaintenance) -> None:
    note = text_of(r.note, "note") if r.note else None
    stop = None
    if r.stop_id is not None:
        stop = s.stops.get(r.stop_id)
        if stop is None:
            raise reject(
                RejectionCode.UNKNOWN_STOP,
                f"stop_id = {r.stop_id!r}: no such stop at this work center",
                field="stop_id",
                value=r.stop_id,
            )
        if stop.maintenance_request is not None:
            raise reject(
                RejectionCode.INVALID_VALUE,
                f"maintenance was already asked for stop {stop.stop_id} "
                f"({stop.maintenance_request})",
                field="stop_id",
                value=r.stop_id,
            )
    elif not note:
        raise reject(
            RejectionCode.INVALID_VALUE,
            "a maintenance request without a stop needs a note saying what is wrong",
            field="note",
            value=r.note,
        )
    h = s.header
    request_id = f"M{h.next_maintenance_no:06d}"
    h.next_maintenance_no += 1
    s.touch("work_center", "")
    data: dict[str, object] = {"request_id": request_id, "note": note, "stop_id": None}
    if stop is not None:
        stop.maintenance_request = request_id
        s.touch("stop", stop.stop_id)
        data.update(
            stop_id=stop.stop_id,
            stop_started=stop.start.iso(),
            stop_reason=stop.reason,
            alarm=stop.alarm,
            stop_open=stop.open,
            operations=list(stop.operations),
        )
    m = h.machine
    if m is not None:
        data["hours"] = number(_shown(ServiceMeasure.HOURS, Decimal(run_ms(m, r.at))))
    op = s.active_keys[0] if s.active_keys else None
    s.emit(EventType.MAINTENANCE_REQUESTED, r.at, op, r.actor, **data)
