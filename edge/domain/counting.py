"""Counting (rules.md §3): counter readings and pulses, unassigned production, cross-checks,
scrap and count corrections.

Turning raw counter readings into parts (:func:`classify_reading`): an absolute counter can go
backwards for two reasons: it wrapped (16 or 32 bits) or it was reset (order change, PLC
restart). It can jump forward after a link gap or a gateway restart. The one question behind
every case is "could the machine have made that many in the time that passed?"; the answer comes
from the maximum plausible rate (:func:`max_rate`). A reading that fails it becomes a new
baseline and a discontinuity for a supervisor: never one huge delta, never silently lost parts.

Only the source configured as authoritative for a kind counts (:func:`count`); another of the
same kind cross-checks it (:func:`cross_check`). Counts with no active operation are kept as
unassigned production (:func:`count_unassigned`) until a supervisor assigns them
(:func:`on_assign_unassigned`); counts in setup are setup scrap unless declared good
(:func:`on_setup_good`). Operators report scrap (:func:`on_report_scrap`), supervisors correct
what is not yet confirmed (:func:`on_correct_count`).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

from edge.domain import lifecycle, machine
from edge.domain.clock import Instant
from edge.domain.confirmations import confirm, tally_payload
from edge.domain.events import EventType, RejectionCode
from edge.domain.inputs import (
    AcknowledgeOverDelivery,
    AssignUnassigned,
    CorrectCount,
    CounterReading,
    DeclareSetupGood,
    Pulses,
    ReportScrap,
    SourceRestarted,
)
from edge.domain.model import (
    ZERO,
    CounterTrack,
    Operation,
    OperationStatus,
    StopOrigin,
    Tally,
    UnassignedProduction,
    number,
)
from edge.domain.rules import (
    CountKind,
    CountSource,
    SignalType,
)
from edge.domain.state import (
    WorkCenterState,
    delta_of,
    is_supervisor,
    quantity_of,
    reject,
    require_supervisor,
    text_of,
)
from edge.domain.stops import end_stop


class ReadingKind(StrEnum):
    BASELINE = "baseline"  # first reading ever: nothing to count yet
    DUPLICATE = "duplicate"
    NORMAL = "normal"
    WRAP = "wrap"
    RESET = "reset"
    RESTART = "restart"  # first reading after the source said it restarted
    DISCONTINUITY = "discontinuity"


@dataclass(frozen=True, slots=True)
class ReadingResult:
    kind: ReadingKind
    signals: int  # signals to count (0 for baseline, duplicate and discontinuity)


def plausible_limit(max_rate_per_s: float | None, elapsed_ms: int, grace_s: float) -> float:
    """The most signals the machine could have made in ``elapsed_ms`` (infinite if rate unknown)."""
    if max_rate_per_s is None:
        return float("inf")
    return max_rate_per_s * (elapsed_ms / 1000 + grace_s)


def classify_reading(
    *,
    last_value: int | None,
    last_at: Instant | None,
    restarted_at: Instant | None,
    value: int,
    at: Instant,
    bits: int,
    max_rate_per_s: float | None,
    grace_s: float,
) -> ReadingResult:
    """Classify one reading of an absolute counter against the last one.

    The caller has checked that ``0 <= value < 2**bits``.
    """
    if restarted_at is not None:
        # The source restarted: its counter started again from 0 at that moment.
        limit = plausible_limit(max_rate_per_s, at.since(restarted_at), grace_s)
        if value <= limit:
            return ReadingResult(ReadingKind.RESTART, value)
        return ReadingResult(ReadingKind.DISCONTINUITY, 0)
    if last_value is None or last_at is None:
        return ReadingResult(ReadingKind.BASELINE, 0)
    if value == last_value:
        return ReadingResult(ReadingKind.DUPLICATE, 0)
    limit = plausible_limit(max_rate_per_s, at.since(last_at), grace_s)
    if value > last_value:
        delta = value - last_value
        if delta <= limit:
            return ReadingResult(ReadingKind.NORMAL, delta)
        return ReadingResult(ReadingKind.DISCONTINUITY, 0)
    modulus = 1 << bits
    across_wrap = modulus - last_value + value
    near_top = last_value >= modulus - modulus // 4
    if bits < 64 and near_top and across_wrap <= limit:
        return ReadingResult(ReadingKind.WRAP, across_wrap)
    if value <= limit:
        return ReadingResult(ReadingKind.RESET, value)
    return ReadingResult(ReadingKind.DISCONTINUITY, 0)


# ------------------------------------------------------------------ the work center's counts


def configured_source(s: WorkCenterState, name: str, signal: SignalType) -> CountSource:
    src = s.rules.source(name)
    if src is None:
        raise reject(
            RejectionCode.UNKNOWN_SOURCE,
            f"source = {name!r}: no counter of that name in the config",
            field="source",
            value=name,
        )
    if src.signal is not signal:
        raise reject(
            RejectionCode.INVALID_VALUE,
            f"source = {name!r} is configured as {src.signal.value}, not {signal.value}",
            field="source",
            value=name,
        )
    return src


def max_rate(
    s: WorkCenterState, src: CountSource, track: CounterTrack | None = None
) -> float | None:
    """Signals per second the machine could make at most (rules.md §3).

    From the configured maximum, else the active operations' standard cycle; with no
    operation active, the rate last derived for this counter, so a jump between orders
    is judged too.
    """
    if src.max_rate_per_s is not None:
        return src.max_rate_per_s
    if not s.active_keys:
        return track.last_rate if track is not None else None
    best: float | None = None
    for key in s.active_keys:
        spec = s.operations[key].spec
        if spec.std_cycle_s > 0:
            rate = s.rules.plausibility_factor / (spec.std_cycle_s * float(spec.parts_per_signal))
            best = rate if best is None or rate > best else best
    return best


def on_reading(s: WorkCenterState, r: CounterReading) -> None:
    src = configured_source(s, r.source, SignalType.ABSOLUTE)
    if (
        isinstance(r.value, bool)
        or not isinstance(r.value, int)
        or not (0 <= r.value < (1 << src.bits))
    ):
        raise reject(
            RejectionCode.INVALID_VALUE,
            f"value = {r.value!r} from {r.source}: not a {src.bits}-bit counter value",
            field="value",
            value=r.value,
        )
    track = s.counters.get(r.source)
    if track is None:
        track = s.counters[r.source] = CounterTrack(r.source)
    result = classify_reading(
        last_value=track.last_value,
        last_at=track.last_at,
        restarted_at=track.restarted_at,
        value=r.value,
        at=r.at,
        bits=src.bits,
        max_rate_per_s=max_rate(s, src, track),
        grace_s=s.rules.plausibility_grace_s,
    )
    if result.kind is ReadingKind.DUPLICATE and track.last_at is not None:
        # Same value: only the time moves on, and that must not be journaled as a change
        # unless it matters for the plausibility of the next reading.
        track.last_at = r.at
        s.touch("counter", r.source)
        return
    previous = track.last_value
    if s.active_keys and src.max_rate_per_s is None:
        track.last_rate = max_rate(s, src, track)
    track.last_value = r.value
    track.last_at = r.at
    track.restarted_at = None
    s.touch("counter", r.source)
    if result.kind is ReadingKind.DISCONTINUITY:
        s.emit(
            EventType.COUNTER_DISCONTINUITY,
            r.at,
            s.active_keys[0] if s.active_keys else None,
            f"machine:{r.source}",
            source=r.source,
            previous=previous,
            value=r.value,
            max_rate_per_s=max_rate(s, src, track),
        )
    elif result.kind in (ReadingKind.RESET, ReadingKind.WRAP):
        s.emit(
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
        cross_check(s, src, track, result.signals, r.at)
    if result.signals and src.authoritative:
        count(s, src, result.signals, r.at)


def on_pulses(s: WorkCenterState, p: Pulses) -> bool:
    src = configured_source(s, p.source, SignalType.PULSE)
    if isinstance(p.n, bool) or not isinstance(p.n, int) or p.n < 0:
        raise reject(
            RejectionCode.INVALID_VALUE,
            f"n = {p.n!r} from {p.source}: must be a whole number ≥ 0",
            field="n",
            value=p.n,
        )
    if not p.n:
        return False
    if src.kind in cross_checked_kinds(s):
        track = s.counters.get(p.source)
        if track is None:
            track = s.counters[p.source] = CounterTrack(p.source)
        s.touch("counter", p.source)
        cross_check(s, src, track, p.n, p.at)
    if not src.authoritative:
        return True
    count(s, src, p.n, p.at)
    return True


def cross_checked_kinds(s: WorkCenterState) -> set[CountKind]:
    return {c.kind for c in s.rules.sources if not c.authoritative}


def cross_check(
    s: WorkCenterState, src: CountSource, track: CounterTrack, signals: int, at: Instant
) -> None:
    """One authoritative source per count; another of the same kind only checks it, and a
    warning goes out when the two drift apart by more than its tolerance.

    Compared when the cross-check reports: two sources are read at different moments, so
    the tolerance must cover what the machine makes between two of their readings.
    """
    if src.kind not in cross_checked_kinds(s):
        return
    track.signals += signals
    if src.authoritative:
        return
    reference = next((c for c in s.rules.sources if c.authoritative and c.kind is src.kind), None)
    theirs = s.counters.get(reference.name) if reference is not None else None
    if reference is None or theirs is None:
        return
    if track.check_base is None:
        track.check_base = (track.signals - signals, theirs.signals)
        return
    checked = track.signals - track.check_base[0]
    counted = theirs.signals - track.check_base[1]
    if abs(checked - counted) > src.drift_tolerance:
        track.check_base = (track.signals, theirs.signals)
        s.emit(
            EventType.COUNTER_DRIFT,
            at,
            s.active_keys[0] if s.active_keys else None,
            f"machine:{src.name}",
            source=src.name,
            reference=reference.name,
            checked=checked,
            counted=counted,
            tolerance=src.drift_tolerance,
        )


def on_source_restarted(s: WorkCenterState, r: SourceRestarted) -> None:
    src = s.rules.source(r.source)
    if src is None:
        raise reject(
            RejectionCode.UNKNOWN_SOURCE,
            f"source = {r.source!r}: no counter of that name in the config",
            field="source",
            value=r.source,
        )
    track = s.counters.get(r.source)
    if track is None:
        track = s.counters[r.source] = CounterTrack(r.source)
    track.restarted_at = r.at
    s.touch("counter", r.source)
    s.emit(EventType.SOURCE_RESTARTED, r.at, None, f"machine:{r.source}", source=r.source)


def count(s: WorkCenterState, src: CountSource, signals: int, at: Instant) -> None:
    machine.on_count(s, src, signals)
    if not s.active_keys:
        count_unassigned(s, src.kind, signals, at)
        return
    stop = s.open_stop
    if stop is not None and stop.origin is StopOrigin.NO_COUNT:
        end_stop(s, stop, at, f"machine:{src.name}")
    rules = s.rules
    # A copy: an operation that completes at its target leaves the active list mid-loop, and
    # the other operations of a family tool must still get this signal's parts.
    for key in list(s.active_keys):
        op = s.operations[key]
        qty = signals * op.spec.parts_per_signal
        counted = op.counted
        in_setup_scrap = op.status is OperationStatus.SETUP and not rules.setup_counts_as_good
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
        s.touch("operation", key)
        after_good_count(s, op, at, src)


def after_good_count(s: WorkCenterState, op: Operation, at: Instant, src: CountSource) -> None:
    spec = op.spec
    good = op.counted.good
    if not op.target_reached and good >= spec.target_qty:
        op.target_reached = True
        s.emit(
            EventType.TARGET_REACHED,
            at,
            op,
            f"machine:{src.name}",
            good=number(good),
            target=number(spec.target_qty),
        )
        if s.rules.auto_complete_at_target and op.status is not OperationStatus.SETUP:
            confirm(s, op, at, f"machine:{src.name}", final=True)
            lifecycle.set_status(
                s, op, OperationStatus.COMPLETED, at, f"machine:{src.name}", "auto_complete"
            )
            return
    over = spec.over_tolerance_pct
    if over is not None and not op.over_tolerance and good > spec.target_qty * (1 + over / 100):
        op.over_tolerance = True
        s.emit(
            EventType.OVER_TOLERANCE,
            at,
            op,
            f"machine:{src.name}",
            good=number(good),
            target=number(spec.target_qty),
            tolerance_pct=number(over),
        )
    every = s.policy.every_good
    if every and good - op.confirmed.good >= every:
        confirm(s, op, at, f"machine:{src.name}", final=False)


def count_unassigned(s: WorkCenterState, kind: CountKind, signals: int, at: Instant) -> None:
    """rules.md §3: with no active operation, counts are kept as unassigned production."""
    h = s.header
    record = s.unassigned.get(h.open_unassigned) if h.open_unassigned else None
    if record is None:
        uid = f"U{h.next_unassigned_no:06d}"
        h.next_unassigned_no += 1
        h.open_unassigned = uid
        record = s.unassigned[uid] = UnassignedProduction(uid, at, at)
        s.touch("work_center", "")
        s.emit(EventType.UNASSIGNED_PRODUCTION, at, None, None, unassigned_id=uid, phase="opened")
    qty = Decimal(signals)
    if kind is CountKind.SCRAP:
        reason = s.rules.machine_scrap_reason
        record.tally.scrap[reason] = record.tally.scrap.get(reason, ZERO) + qty
        if s.rules.counts_total():
            record.tally.good -= qty
    else:
        record.tally.good += qty
    record.end = at
    s.touch("unassigned", record.unassigned_id)


def close_unassigned(s: WorkCenterState, at: Instant) -> None:
    uid = s.header.open_unassigned
    if uid is None:
        return
    record = s.unassigned[uid]
    record.open = False
    s.header.open_unassigned = None
    s.touch("unassigned", uid)
    s.touch("work_center", "")
    s.emit(
        EventType.UNASSIGNED_PRODUCTION,
        at,
        None,
        None,
        unassigned_id=uid,
        phase="closed",
        start=record.start.iso(),
        end=record.end.iso(),
        **tally_payload(record.tally),
    )


def on_assign_unassigned(s: WorkCenterState, a: AssignUnassigned) -> None:
    if not is_supervisor(a.actor):
        raise reject(
            RejectionCode.SUPERVISOR_ONLY,
            "only a supervisor may assign unassigned production",
            field="actor",
            value=a.actor,
        )
    record = s.unassigned.get(a.unassigned_id)
    if record is None or record.assigned_to is not None:
        raise reject(
            RejectionCode.UNKNOWN_UNASSIGNED,
            f"unassigned_id = {a.unassigned_id!r}: no unassigned production to assign",
            field="unassigned_id",
            value=a.unassigned_id,
        )
    op = s.find_op(a.op)
    if op.status in (OperationStatus.CANCELLED, OperationStatus.MERGED):
        raise reject(
            RejectionCode.OPERATION_FINISHED,
            f"operation {op.key} is {op.status.value}",
            field="op",
            value=a.op,
            state=op.status.value,
        )
    if record.open:
        close_unassigned(s, a.at)
    pps = op.spec.parts_per_signal
    converted = Tally(
        good=record.tally.good * pps,
        scrap={code: q * pps for code, q in record.tally.scrap.items()},
    )
    op.counted.add(converted)
    record.assigned_to = str(op.key)
    s.touch("unassigned", record.unassigned_id)
    s.touch("operation", op.key)
    s.emit(
        EventType.UNASSIGNED_ASSIGNED,
        a.at,
        op,
        a.actor,
        unassigned_id=record.unassigned_id,
        **tally_payload(converted),
    )


def on_report_scrap(s: WorkCenterState, r: ReportScrap) -> None:
    qty = quantity_of(r.qty, "qty")
    s.check_scrap_reason(r.reason)
    op = s.open_op(r.op)
    reduces = s.rules.operator_scrap_reduces_good
    if reduces:
        unconfirmed = op.counted.good - op.confirmed.good
        if qty > unconfirmed:
            raise reject(
                RejectionCode.EXCEEDS_PENDING,
                f"qty = {qty}: more than the {unconfirmed} {op.spec.unit} good parts of "
                f"operation {op.key} not yet confirmed",
                field="qty",
                value=r.qty,
            )
        op.counted.good -= qty
    book = op.counted.rework if r.rework else op.counted.scrap
    book[r.reason] = book.get(r.reason, ZERO) + qty
    s.touch("operation", op.key)
    s.emit(
        EventType.SCRAP_REPORTED,
        r.at,
        op,
        r.actor,
        kind="rework" if r.rework else "scrap",
        reason=r.reason,
        qty=number(qty),
        from_good=reduces,
    )


def on_setup_good(s: WorkCenterState, d: DeclareSetupGood) -> None:
    qty = quantity_of(d.qty, "qty")
    op = s.open_op(d.op)
    reason = s.rules.setup_scrap_reason
    available = op.counted.scrap.get(reason, ZERO) - op.confirmed.scrap.get(reason, ZERO)
    if qty > available:
        raise reject(
            RejectionCode.EXCEEDS_PENDING,
            f"qty = {qty}: only {available} {op.spec.unit} of unconfirmed setup scrap",
            field="qty",
            value=d.qty,
        )
    op.counted.scrap[reason] -= qty
    if not op.counted.scrap[reason]:
        del op.counted.scrap[reason]
    op.counted.good += qty
    s.touch("operation", op.key)
    s.emit(EventType.SETUP_PARTS_DECLARED_GOOD, d.at, op, d.actor, qty=number(qty))


def on_acknowledge_over_delivery(s: WorkCenterState, a: AcknowledgeOverDelivery) -> None:
    op = s.open_op(a.op)
    if not op.over_tolerance or op.over_tolerance_acknowledged:
        raise reject(
            RejectionCode.INVALID_VALUE,
            f"operation {op.key} has no over-delivery warning to acknowledge",
            field="op",
            value=a.op,
        )
    op.over_tolerance_acknowledged = True
    s.touch("operation", op.key)
    s.emit(EventType.OVER_TOLERANCE_ACKNOWLEDGED, a.at, op, a.actor)


def on_correct_count(s: WorkCenterState, c: CorrectCount) -> None:
    """A supervisor's count edit; what was confirmed is corrected by reversal, not here."""
    require_supervisor(c.actor, "correct counts")
    good = delta_of(c.good_delta, "good_delta")
    scrap = delta_of(c.scrap_delta, "scrap_delta")
    if not good and not scrap:
        raise reject(
            RejectionCode.INVALID_VALUE,
            "good_delta and scrap_delta are both 0: nothing to correct",
            field="good_delta",
            value=c.good_delta,
        )
    reason = text_of(c.reason, "reason")
    code = c.scrap_reason or s.rules.machine_scrap_reason
    if scrap:
        s.check_scrap_reason(code, "scrap_reason")
    op = s.open_op(c.op)
    if op.counted.good + good < op.confirmed.good:
        raise reject(
            RejectionCode.EXCEEDS_PENDING,
            f"good_delta = {good}: would take good below the {op.confirmed.good} "
            f"{op.spec.unit} already confirmed; reverse the confirmation first",
            field="good_delta",
            value=c.good_delta,
        )
    booked = op.counted.scrap.get(code, ZERO)
    if booked + scrap < op.confirmed.scrap.get(code, ZERO):
        raise reject(
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
    s.touch("operation", op.key)
    s.emit(
        EventType.COUNT_CORRECTED,
        c.at,
        op,
        c.actor,
        good_delta=number(good),
        scrap_delta=number(scrap),
        scrap_reason=code if scrap else None,
        reason=reason,
    )
