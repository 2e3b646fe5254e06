"""How well the orders flowed: the five order KPIs, per operation and per work center.

Per operation (:func:`operation_kpis`):

- **on-time completion**: a completed operation is on time when it ended at or before its due
  date (``latest_end`` from the ERP). A due date without a time means the end of that day in
  the work center's time zone; one without an offset is local time. Lateness is end - due
  (negative: early). Without a due date (or one that cannot be read), or not completed:
  undefined (None), never "late".
- **order cycle time**: from its first dispatch to its completion (to ``now`` while open),
  split into *value-add* (running: production time) and the rest, which is waiting:
  *queue* (dispatched, before the first start), *setup*, *down* (stops while running) and
  *interrupted or held*. The parts come from the time elements (edge.domain.times), which
  add up from the first start, so queue + setup + running + down + waiting = cycle time.
- **schedule stability**: whether its sequence or due date changed after its first dispatch
  (``rescheduled``, kept by edge.domain.dispatch and a merge).
- **WIP age**: for an open operation (dispatched, not finished), now - first dispatch; its
  **WIP value** where the dispatch list gives a standard cost per unit: the good parts made so
  far at that cost.
- **confirmation latency** (machine event to ERP posted) is measured where the posting is
  seen: by the ERP relay (``_mes_v1/relay/kpi``, ``edge relay stats``), not here.

Per work center (:func:`work_center_kpis`), over the operations the gateway holds (finished
ones leave memory after ``[retention] finished_in_memory_h``): the on-time rate of the
completed ones with a due date, the median cycle time and the value-add ratio (running over
cycle time, summed) of the completed ones, schedule stability as the share of the dispatched
operations not rescheduled, and the count, oldest and median age of the open ones.

Only operations whose first dispatch the gateway kept (``dispatched_at``) have a cycle time,
a WIP age and a place in schedule stability. Merged and cancelled operations are not
completions: they count in schedule stability only. A ratio whose denominator is 0 is None.

Pure: the state and ``now`` come in, nothing is read or written here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from statistics import median

from edge.domain.calendar import local_midnight_ms, zone
from edge.domain.clock import Instant
from edge.domain.kpis import ratio, share
from edge.domain.model import ZERO, Operation, OperationStatus, number
from edge.domain.state import WorkCenterState
from edge.domain.times import time_elements


@dataclass(frozen=True, slots=True)
class OperationFlow:
    """The order KPIs of one operation; durations in milliseconds."""

    op: str
    material: str
    status: str
    due_ms: int | None
    ended_ms: int | None
    on_time: bool | None
    lateness_ms: int | None
    cycle_ms: int | None
    queue_ms: int | None
    setup_ms: int
    running_ms: int
    down_ms: int
    down_unplanned_ms: int
    waiting_ms: int
    rescheduled: bool
    wip_age_ms: int | None
    # open, with a standard cost: the good parts made so far at it; None otherwise
    wip_value: Decimal | None = None

    @property
    def value_add_ratio(self) -> float | None:
        return ratio(self.running_ms, self.cycle_ms or 0)


@dataclass(frozen=True, slots=True)
class WorkCenterFlow:
    """The order KPIs of the work center over the operations it holds."""

    completed: int
    with_due: int
    on_time: int
    on_time_rate: float | None
    cycle_ms_median: float | None
    value_add_ratio: float | None
    dispatched: int
    rescheduled: int
    schedule_stability: float | None
    wip: int
    wip_age_ms_max: int | None
    wip_age_ms_median: float | None
    wip_value: Decimal | None = None  # of the open operations with a standard cost
    wip_valued: int = 0  # how many open operations had one


def due_ms(due: str | None, timezone: str) -> int | None:
    """Epoch milliseconds of an ERP due date (ISO 8601); None if absent or unreadable."""
    text = (due or "").strip()
    if not text:
        return None
    try:
        tz = zone(timezone)
    except ValueError:
        return None
    if len(text) == 10:  # a date: due by the end of that day, local time
        try:
            day = date.fromisoformat(text)
        except ValueError:
            return None
        return local_midnight_ms(day + timedelta(days=1), tz)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=tz)
    return round(moment.timestamp() * 1000)


def operation_kpis(s: WorkCenterState, op: Operation, now: Instant) -> OperationFlow:
    """The order KPIs of ``op`` (see the module's docstring) at ``now``."""
    te = time_elements(s, op, now)
    completed = op.status is OperationStatus.COMPLETED
    finished = op.status.finished
    due = due_ms(op.spec.due, s.rules.timezone)
    ended = op.ended.wall_ms if op.ended is not None else None
    on_time = lateness = None
    if completed and due is not None and ended is not None:
        lateness = ended - due
        on_time = lateness <= 0
    cycle = queue = wip_age = None
    waiting = te.waiting_ms
    if op.dispatched_at is not None and (not finished or op.ended is not None):
        until = op.ended if finished and op.ended is not None else now
        cycle = until.since(op.dispatched_at)
        start = op.first_start or until
        queue = start.since(op.dispatched_at)
        # the time elements run from the first start; time they did not book (none, unless
        # the clocks disagree) is waiting, so that the parts add up to the cycle time
        booked = queue + te.setup_ms + te.production_ms + te.down_ms + te.waiting_ms
        waiting += max(0, cycle - booked)
        cycle = max(cycle, booked)
        if not finished:
            wip_age = now.since(op.dispatched_at)
    return OperationFlow(
        op=str(op.key),
        material=op.spec.material,
        status=op.status.value,
        due_ms=due,
        ended_ms=ended,
        on_time=on_time,
        lateness_ms=lateness,
        cycle_ms=cycle,
        queue_ms=queue,
        setup_ms=te.setup_ms,
        running_ms=te.production_ms,
        down_ms=te.down_ms,
        down_unplanned_ms=te.down_unplanned_ms,
        waiting_ms=waiting,
        rescheduled=op.rescheduled,
        wip_age_ms=wip_age,
        wip_value=(
            op.counted.good * op.spec.std_cost
            if not finished and op.spec.std_cost is not None
            else None
        ),
    )


def work_center_kpis(s: WorkCenterState, now: Instant) -> WorkCenterFlow:
    """The order KPIs of the work center over the operations it holds, at ``now``."""
    flows = [operation_kpis(s, op, now) for op in s.operations.values()]
    done = [f for f in flows if f.status == OperationStatus.COMPLETED.value]
    dated = [f for f in done if f.on_time is not None]
    timed_done = [f for f in done if f.cycle_ms is not None]
    kept = [op for op in s.operations.values() if op.dispatched_at is not None]
    rescheduled = sum(1 for op in kept if op.rescheduled)
    ages = [f.wip_age_ms for f in flows if f.wip_age_ms is not None]
    cycle_total = sum(f.cycle_ms or 0 for f in timed_done)
    valued = [f.wip_value for f in flows if f.wip_value is not None]
    return WorkCenterFlow(
        completed=len(done),
        with_due=len(dated),
        on_time=sum(1 for f in dated if f.on_time),
        on_time_rate=ratio(sum(1 for f in dated if f.on_time), len(dated)),
        cycle_ms_median=median(f.cycle_ms or 0 for f in timed_done) if timed_done else None,
        value_add_ratio=ratio(sum(f.running_ms for f in timed_done), cycle_total),
        dispatched=len(kept),
        rescheduled=rescheduled,
        schedule_stability=ratio(len(kept) - rescheduled, len(kept)),
        wip=len(ages),
        wip_age_ms_max=max(ages) if ages else None,
        wip_age_ms_median=median(ages) if ages else None,
        wip_value=sum(valued, ZERO) if valued else None,
        wip_valued=len(valued),
    )


def _s(ms: float | None) -> float | None:
    return None if ms is None else round(ms / 1000, 1)


def operation_payload(f: OperationFlow) -> dict[str, object]:
    """The wire form (seconds, shares to 4 places) of one operation's order KPIs."""
    return {
        "op": f.op,
        "material": f.material,
        "status": f.status,
        "on_time": f.on_time,
        "lateness_s": _s(f.lateness_ms),
        "cycle_s": _s(f.cycle_ms),
        "queue_s": _s(f.queue_ms),
        "setup_s": _s(f.setup_ms),
        "running_s": _s(f.running_ms),
        "down_s": _s(f.down_ms),
        "waiting_s": _s(f.waiting_ms),
        "value_add_ratio": share(f.value_add_ratio),
        "rescheduled": f.rescheduled,
        "wip_age_s": _s(f.wip_age_ms),
        "wip_value": None if f.wip_value is None else number(f.wip_value),
    }


def work_center_payload(w: WorkCenterFlow) -> dict[str, object]:
    """The wire form of the work center's order KPIs."""
    return {
        "completed": w.completed,
        "with_due": w.with_due,
        "on_time": w.on_time,
        "on_time_rate": share(w.on_time_rate),
        "cycle_s_median": _s(w.cycle_ms_median),
        "value_add_ratio": share(w.value_add_ratio),
        "dispatched": w.dispatched,
        "rescheduled": w.rescheduled,
        "schedule_stability": share(w.schedule_stability),
        "wip": w.wip,
        "wip_age_s_max": _s(w.wip_age_ms_max),
        "wip_age_s_median": _s(w.wip_age_ms_median),
        "wip_value": None if w.wip_value is None else number(w.wip_value),
        "wip_valued": w.wip_valued,
    }


def completion_data(s: WorkCenterState, op: Operation, now: Instant) -> dict[str, object]:
    """What goes up when ``op`` completed: its order KPIs and its own ISO 22400-2 figures
    (effectiveness = standard cycle x produced / running time, quality ratio = good /
    produced, setup rate = setup / (setup + running), technical efficiency = running /
    (running + unplanned down time)); a ratio whose denominator is 0 is null."""
    f = operation_kpis(s, op, now)
    t = op.counted
    scrap = sum(t.scrap.values(), ZERO)
    rework = sum(t.rework.values(), ZERO)
    produced = t.good + scrap + rework
    std_ms = op.spec.std_cycle_s * 1000
    payload = operation_payload(f)
    del payload["op"], payload["status"], payload["wip_age_s"], payload["wip_value"]
    return {
        **payload,
        "target_qty": number(op.spec.target_qty),
        "good": number(t.good),
        "scrap": number(scrap),
        "rework": number(rework),
        "due": op.spec.due,
        "std_cycle_s": op.spec.std_cycle_s,
        "std_setup_s": op.spec.std_setup_s,
        "effectiveness": share(ratio(std_ms * float(produced), f.running_ms) if std_ms else None),
        "quality_ratio": share(ratio(float(t.good), float(produced))),
        "setup_rate": share(ratio(f.setup_ms, f.setup_ms + f.running_ms)),
        "technical_efficiency": share(ratio(f.running_ms, f.running_ms + f.down_unplanned_ms)),
    }
