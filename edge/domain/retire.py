"""Finished operations leave memory (bounded memory over years).

A finished operation (completed or cancelled), its confirmations and its stops stay in memory
while anything may still need them there; then they leave it, and their rows stay in the
database (marked, queryable, no longer loaded at start) until their own retention. What needs
a finished operation in memory, and so keeps it there:

- a confirmation the ERP has not answered (awaiting its verdict, or its reversal's), or one it
  rejected that nobody resent or reversed yet (a supervisor's resend, the withheld final one);
- quantities counted and not confirmed (a reversal, or unassigned production assigned to it,
  put them there: a supervisor confirms them);
- the time after its end (``kept_h``, ``[retention] finished_in_memory_h``, at least a day): a
  supervisor's reversal or reclassification of a stop, a late "posted" again from the relay,
  the panel's lists and the current shift's KPIs (a shift is shorter than a day, so every stop
  of the current shift is in memory); but not beyond ``max_kept`` finished operations
  (``[retention] finished_in_memory_max``): past it the oldest leave before their time, since
  a fast line (a partial confirmation every few seconds) would otherwise hold hundreds of
  megabytes of confirmations for ``kept_h``. Their stops still leave only by their own age;
- a message about it still in the outbox: the engine knows that, not the core, and names only
  the operations without one (:class:`edge.domain.inputs.RetireFinished`);
- a shift change not yet booked (after a restart, before the first tick): nothing leaves
  until the shift and day that ended are closed with their stops (:func:`shift_booked`).

Who decides: the engine's maintenance asks :func:`candidates`, leaves out what the outbox still
holds, and submits :class:`RetireFinished` with those operations; the core takes each one that
is still ready (the state may have moved on since) and, with them, every ended stop older than
``kept_h`` whose operations are all gone (a stop while nothing ran has none). The input is
journaled with its ``operations_retired`` event, so a replay of the journal leaves memory at
the same entry and gives the same projections.

Unassigned production a supervisor assigned to an operation leaves the same way once it ended
``kept_h`` ago; what nobody assigned stays (its parts are not reported yet).

An input that later names what left memory finds nothing here and is refused like an unknown
one; the engine looks the row up in the database to say so in words.
"""

from __future__ import annotations

from typing import NamedTuple

from edge.domain.calendar import shift_of
from edge.domain.clock import Instant
from edge.domain.events import EventType, RejectionCode
from edge.domain.inputs import RetireFinished
from edge.domain.model import (
    Confirmation,
    ConfirmationStatus,
    Operation,
    OperationKey,
    Stop,
)
from edge.domain.model import UnassignedProduction as Unassigned
from edge.domain.state import WorkCenterState, reject

HOUR_MS = 3_600_000
MIN_KEPT_H = 24.0  # longer than any shift: the current shift's stops are always in memory
MAX_KEPT_H = 8760.0  # a year
MIN_MAX_KEPT, MAX_MAX_KEPT = 10, 100_000  # bounds of max_kept (finished operations)
# At most this many operations and stops leave memory per input, so that the first run on a
# database holding years of them makes events of bounded size; the engine asks again.
MAX_PER_INPUT = 1000

_ANSWERED = (ConfirmationStatus.POSTED, ConfirmationStatus.REJECTED)


def answered(conf: Confirmation) -> bool:
    """Nothing more can come of ``conf``: posted (and its reversal, if any, answered), or
    rejected and reversed with the reversal answered. A rejected one not reversed waits for a
    supervisor's resend or reversal."""
    if conf.reversed:
        return conf.status in _ANSWERED and conf.reversal_status in _ANSWERED
    return conf.status is ConfirmationStatus.POSTED


def confirmations_of(s: WorkCenterState, op: Operation) -> list[Confirmation]:
    found = (s.confirmations.get(f"{op.key}#{n}") for n in range(1, op.conf_count + 1))
    return [conf for conf in found if conf is not None]


def ready(
    s: WorkCenterState, op: Operation, now: Instant, kept_ms: int, early: bool = False
) -> bool:
    """May ``op`` leave memory at ``now``? See the module's docstring. ``early``: it is one
    of the finished operations beyond ``max_kept``, so its time in memory is not waited for."""
    if not op.status.finished or op.ended is None:
        return False
    if not early and now.since(op.ended) < kept_ms:
        return False
    if op.final_withheld or op.pending.has_quantity():
        return False
    return all(answered(conf) for conf in confirmations_of(s, op))


def _stop_ready(s: WorkCenterState, stop: Stop, now: Instant, kept_ms: int, gone: set[str]) -> bool:
    if stop.end is None or now.since(stop.end) < kept_ms:
        return False
    return all(
        key in gone or OperationKey.parse(key) not in s.operations for key in stop.operations
    )


def _stops_leaving(s: WorkCenterState, now: Instant, kept_ms: int, gone: set[str]) -> list[Stop]:
    """The ended stops older than ``kept_ms`` whose operations are all gone (or in ``gone``),
    oldest first, at most :data:`MAX_PER_INPUT`."""
    found = (stop for stop in s.stops.values() if _stop_ready(s, stop, now, kept_ms, gone))
    return [stop for stop, _ in zip(found, range(MAX_PER_INPUT), strict=False)]


def shift_booked(s: WorkCenterState, now: Instant) -> bool:
    """Has the work center seen the shift ``now`` is in (a tick in it closed the one before,
    with its KPIs and its day's)? Until then nothing leaves: the closing shift's and day's
    figures judge their stops by the stops in memory. True before the first tick ever."""
    if s.header.shift_id is None:
        return True
    name, day = shift_of(now, s.calendar)
    return s.header.shift_id == f"{day.isoformat()}/{name}"


def _assigned_leaving(s: WorkCenterState, now: Instant, kept_ms: int) -> list[Unassigned]:
    """Unassigned production a supervisor assigned (its parts are the operation's now), ended
    more than ``kept_ms`` ago, oldest first, at most :data:`MAX_PER_INPUT`. What nobody has
    assigned stays: its parts are not reported to the ERP yet."""
    found = (
        u
        for u in s.unassigned.values()
        if u.assigned_to is not None and not u.open and now.since(u.end) >= kept_ms
    )
    return [u for u, _ in zip(found, range(MAX_PER_INPUT), strict=False)]


def kept_ms_of(kept_h: float) -> int:
    if not MIN_KEPT_H <= kept_h <= MAX_KEPT_H:
        raise reject(
            RejectionCode.INVALID_VALUE,
            f"kept_h = {kept_h!r}: must be from {MIN_KEPT_H:g} to {MAX_KEPT_H:g} hours",
            field="kept_h",
            value=kept_h,
        )
    return round(kept_h * HOUR_MS)


def check_max_kept(max_kept: int | None) -> None:
    if max_kept is not None and not MIN_MAX_KEPT <= max_kept <= MAX_MAX_KEPT:
        raise reject(
            RejectionCode.INVALID_VALUE,
            f"max_kept = {max_kept!r}: must be from {MIN_MAX_KEPT} to {MAX_MAX_KEPT} operations",
            field="max_kept",
            value=max_kept,
        )


def over_cap(s: WorkCenterState, max_kept: int | None) -> set[OperationKey]:
    """The oldest finished operations in memory beyond ``max_kept`` (by their end)."""
    if max_kept is None:
        return set()
    finished = [op for op in s.operations.values() if op.status.finished and op.ended]
    excess = len(finished) - max_kept
    if excess <= 0:
        return set()
    finished.sort(key=lambda op: (op.ended.mono_ms if op.ended else 0, op.key))
    return {op.key for op in finished[:excess]}


def _ready_ops(
    s: WorkCenterState, now: Instant, kept_ms: int, max_kept: int | None
) -> list[Operation]:
    early = over_cap(s, max_kept)
    return [op for op in s.operations.values() if ready(s, op, now, kept_ms, op.key in early)]


class Candidates(NamedTuple):
    """What may leave memory at one instant (:func:`candidates`)."""

    ops: list[str]  # operation keys, oldest end first
    stops: list[str]  # that would leave with them, or by their age
    unassigned: list[str]  # assigned unassigned production

    def __bool__(self) -> bool:
        return bool(self.ops or self.stops or self.unassigned)


def candidates(
    s: WorkCenterState, now: Instant, kept_h: float, max_kept: int | None = None
) -> Candidates:
    """The operations ready to leave memory at ``now`` and the stops and assigned unassigned
    production that would leave with them (at most :data:`MAX_PER_INPUT` of each)."""
    kept_ms = kept_ms_of(kept_h)
    check_max_kept(max_kept)
    if not shift_booked(s, now):
        return Candidates([], [], [])
    ops = sorted(
        _ready_ops(s, now, kept_ms, max_kept),
        key=lambda op: (op.ended.mono_ms if op.ended else 0, op.key),
    )[:MAX_PER_INPUT]
    stops = _stops_leaving(s, now, kept_ms, {str(op.key) for op in ops})
    records = _assigned_leaving(s, now, kept_ms)
    return Candidates(
        [str(op.key) for op in ops],
        [stop.stop_id for stop in stops],
        [u.unassigned_id for u in records],
    )


def on_retire(s: WorkCenterState, r: RetireFinished) -> bool:
    """Take the named operations that are still ready, their confirmations, and the stops
    nobody needs any more, out of memory; their rows stay stored (``WorkCenterState.retire``).
    An operation not (or no longer) ready stays, without a rejection: the engine asks again."""
    kept_ms = kept_ms_of(r.kept_h)
    check_max_kept(r.max_kept)
    if len(r.ops) > MAX_PER_INPUT:
        raise reject(
            RejectionCode.INVALID_VALUE,
            f"ops: {len(r.ops)} operations, more than {MAX_PER_INPUT}",
            field="ops",
            value=len(r.ops),
        )
    keys: list[OperationKey] = []
    for i, ref in enumerate(r.ops):
        try:
            keys.append(OperationKey.parse(ref))
        except ValueError as exc:
            raise reject(
                RejectionCode.INVALID_VALUE, str(exc), field=f"ops[{i}]", value=ref
            ) from None
    early = over_cap(s, r.max_kept)
    leaving = [
        op
        for op in (s.operations.get(key) for key in dict.fromkeys(keys))
        if op is not None and ready(s, op, r.at, kept_ms, op.key in early)
    ]
    stops = _stops_leaving(s, r.at, kept_ms, {str(op.key) for op in leaving})
    if not shift_booked(s, r.at) or not (leaving or stops or _assigned_leaving(s, r.at, kept_ms)):
        return False
    conf_ids: set[str] = set()
    for op in leaving:
        for conf in confirmations_of(s, op):
            del s.confirmations[conf.conf_id]
            conf_ids.add(conf.conf_id)
            s.retire("confirmation", conf.conf_id, conf, r.at)
        del s.operations[op.key]
        s.retire("operation", op.key, op, r.at)
    if conf_ids:
        for idem_key, (conf_id, _) in list(s.idem_index.items()):
            if conf_id in conf_ids:
                del s.idem_index[idem_key]
    for stop in stops:
        del s.stops[stop.stop_id]
        s.retire("stop", stop.stop_id, stop, r.at)
    records = _assigned_leaving(s, r.at, kept_ms)
    for record in records:
        del s.unassigned[record.unassigned_id]
        s.retire("unassigned", record.unassigned_id, record, r.at)
    s.emit(
        EventType.OPERATIONS_RETIRED,
        r.at,
        None,
        None,
        ops=[str(op.key) for op in leaving],
        confirmations=len(conf_ids),
        stops=[stop.stop_id for stop in stops],
        unassigned=[record.unassigned_id for record in records],
        kept_h=r.kept_h,
        **({} if r.max_kept is None else {"max_kept": r.max_kept}),
    )
    return True
