"""The one writer: inputs in, the core applies them, one SQLite transaction per batch out.

Sources, the operator side and the downlink put inputs on the engine's queue. One task takes
what arrived within a few milliseconds (group commit), applies each input to the core, and
commits journal, events, outbox rows and projections in one transaction. Only then are the
callers answered: nothing is acknowledged before it is durable.

A failing commit (disk full, I/O error) acknowledges nothing of its batch: the core's state is
reloaded from the store, the callers get a :class:`StoreError`, and the engine goes on.
An unexpected exception inside the core rejects only the input that caused it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from edge.clock import GatewayClock, TimeSource
from edge.domain.clock import Instant
from edge.domain.core import WorkCenter
from edge.domain.events import Event, EventType, Outcome, Rejection, RejectionCode
from edge.domain.inputs import (
    AssignUnassigned,
    ConfirmationResult,
    CounterReading,
    DispatchList,
    Input,
    Pulses,
    ResultStatus,
    RetireFinished,
    RulesApplied,
    SetStopReason,
    Tick,
)
from edge.domain.model import OperationKey
from edge.domain.retire import MAX_PER_INPUT
from edge.domain.rules import WorkCenterRules
from edge.errors import DuplicateCommand, EngineStopped, StoreError
from edge.logging import Logger, get_logger
from edge.ports import CommitHook, CommitListener, EngineStats, Outbound
from edge.store import codec, retention
from edge.store.archive import Archive, ExportFailed
from edge.store.retention import Checkpoint, DiskLow, Pruned, RetentionPolicy, RetentionStats
from edge.store.schema import RETIRING_TABLES
from edge.store.store import JournalEntry, OutboxRow, Store, retired_rows

T = TypeVar("T")


@dataclass(slots=True)
class _Queued:
    """Inputs submitted together (one source's batch) and who waits for their outcomes."""

    inputs: list[Input]
    future: asyncio.Future[list[Outcome]] | None
    command_id: str | None = None


class Engine:
    """Owns the :class:`WorkCenter` and the :class:`Store`; nobody else writes either."""

    def __init__(
        self,
        store: Store,
        wc: WorkCenter,
        *,
        clock: GatewayClock,
        outbound: Outbound,
        batch_window_ms: float = 0.0,
        max_batch: int = 1000,
        logger: Logger | None = None,
        executor: ThreadPoolExecutor | None = None,
        free_space: Callable[[Path], int] | None = None,
        historian_interval_ms: float = 0.0,
    ) -> None:
        self.store = store
        self.wc = wc
        self.clock = clock
        # Which events become which messages (edge.sync.messages): the engine knows no topics.
        self._outbound = outbound
        self.batch_window = batch_window_ms / 1000
        self.max_batch = max_batch
        self.log: Logger = logger or get_logger("edge.engine")
        self.stats = EngineStats()
        self.healthy = True
        self.stopped = False
        # Liveness for the watchdog (edge.systemd): when the batch in hand was taken (monotonic
        # seconds; None while waiting for input) and how many batches were finished.
        self.busy_since: float | None = None
        self.batches_done = 0
        self._queue: asyncio.Queue[_Queued] = asyncio.Queue()
        # One thread for every store call: SQLite sees one writer, the loop never blocks on fsync.
        self._executor = executor or ThreadPoolExecutor(1, thread_name_prefix="edge-store")
        self._listeners: list[CommitListener] = []
        self._commit_hooks: list[Callable[[list[OutboxRow]], None]] = []
        # The counters' historian values: at most one per interval (the last always sent).
        self._series = outbound.counter_series(historian_interval_ms)
        # Ids of operator commands already journaled (see submit); loaded by open(). Only ids
        # still in the journal: retention drops those of the entries it deletes (maintain).
        self._commands: set[str] = set()
        self.retention = RetentionStats()
        self._told_no_vacuum = False
        self._pruned_at_mono = -1  # when maintenance_step last ran the retention
        self._archive: Archive | None = None  # [retention] export_dir
        # Free bytes on the file system of the database (a path in it); statvfs.
        self._free_space = free_space or retention.disk_free_bytes
        self._disk_checked_mono: int | None = None
        self._refusals_told_mono: int | None = None
        self._retired_at_mono = -1  # when retire_finished last ran

    # ------------------------------------------------------------------ opening

    @classmethod
    async def open(
        cls,
        store: Store,
        rules: WorkCenterRules,
        *,
        outbound: Outbound,
        time_source: TimeSource | None = None,
        **kwargs: Any,
    ) -> Engine:
        """Open the store, restore the state, and journal the rules if they changed.

        ``outbound`` says which events become which messages (``edge.sync.messages``)."""
        loop = asyncio.get_running_loop()
        executor = ThreadPoolExecutor(1, thread_name_prefix="edge-store")
        await loop.run_in_executor(executor, store.open)
        # The database's generation, not the config, says which idempotency keys are its own.
        rules = dataclasses.replace(rules, key_epoch=store.key_epoch)
        wc = await loop.run_in_executor(executor, store.load)
        last = await loop.run_in_executor(executor, store.last_instant)
        # The clock goes on from the last journaled instant (edge.clock judges by how much)
        # and its anchor is kept beside the database for the next start.
        previous = store.previous_identity
        clock = GatewayClock(last, anchor=previous.clock if previous else None, source=time_source)
        clock.report()
        await loop.run_in_executor(executor, store.record_clock, clock.anchor)
        engine = cls(
            store,
            wc or WorkCenter(rules),
            clock=clock,
            outbound=outbound,
            executor=executor,
            **kwargs,
        )
        engine._commands = await loop.run_in_executor(executor, store.command_ids)
        if wc is None or wc.rules != rules:
            await engine.apply_now(RulesApplied(rules, engine.clock.now()))
        return engine

    async def close(self) -> None:
        self.stopped = True
        await asyncio.get_running_loop().run_in_executor(self._executor, self.store.close)
        self._executor.shutdown(wait=True)

    # ------------------------------------------------------------------ submitting

    async def submit(self, inp: Input, *, command_id: str | None = None) -> Outcome:
        """Apply ``inp``; returns once its effects are durable (or it was rejected).

        ``command_id`` is an operator command's client-generated id. A command whose id was
        journaled before (a double tap, a resend after a lost answer, a stale page after a
        restart) raises :class:`DuplicateCommand` instead of acting a second time.
        """
        if command_id is None:
            return (await self.submit_many([inp]))[0]
        if self.stopped:
            raise EngineStopped("the engine has stopped; the input was not applied")
        future: asyncio.Future[list[Outcome]] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Queued([inp], future, command_id))
        return (await future)[0]

    async def submit_many(self, inputs: list[Input]) -> list[Outcome]:
        """Apply a source's batch in order; returns once all of it is durable.

        A source that reads many values at once (a subscription's notification, a poll of
        several registers, a burst of pulses) hands them over together: one wake-up instead
        of one per value, and they always land in the same transaction.
        """
        if self.stopped:
            raise EngineStopped("the engine has stopped; the input was not applied")
        future: asyncio.Future[list[Outcome]] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Queued(inputs, future))
        return await future

    def post(self, inp: Input) -> None:
        """Queue ``inp`` without waiting for it (the ticker)."""
        self._queue.put_nowait(_Queued([inp], None))

    async def apply_now(self, inp: Input) -> Outcome:
        """Apply and commit one input outside the run loop (start-up, before ``run``)."""
        future: asyncio.Future[list[Outcome]] = asyncio.get_running_loop().create_future()
        await self._process([_Queued([inp], future)])
        return future.result()[0]

    def now(self) -> Any:
        return self.clock.now()

    def add_listener(self, listener: CommitListener) -> None:
        """Called on the loop with the events of each commit, after it is durable."""
        self._listeners.append(listener)

    def add_commit_hook(self, hook: CommitHook) -> None:
        """Called on the loop after every successful commit with the outbox rows it added."""
        self._commit_hooks.append(hook)

    async def run_store(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the store's thread, in order with the commits."""
        return await self._in_store(fn, *args)

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize()

    # ------------------------------------------------------------------ the faces (edge.ports)

    @property
    def work_center(self) -> WorkCenter:
        """StateView: the work center as of the last commit."""
        return self.wc

    @property
    def running(self) -> bool:
        return not self.stopped

    @property
    def clock_trusted(self) -> bool:
        return bool(self.clock.trusted)

    @property
    def boot_seq(self) -> int:
        return self.store.boot_seq

    async def outbox_pending(self, limit: int, after_seq: int) -> list[OutboxRow]:
        return await self._in_store(self.store.outbox_pending, limit, after_seq)

    async def outbox_from_seq(self, from_seq: int, limit: int) -> list[OutboxRow]:
        return await self._in_store(self.store.outbox_from_env_seq, from_seq, limit)

    async def outbox_mark(
        self,
        done: Sequence[int],
        published: Sequence[int],
        refused: Sequence[tuple[int, str]],
    ) -> None:
        await self._in_store(self.store.mark_outbox, done, published, refused)

    async def outbox_requeue(self, older_than_wall_ms: int | None = None) -> int:
        return await self._in_store(self.store.requeue_published, older_than_wall_ms)

    async def outbox_depth(self) -> int:
        return await self._in_store(self.store.outbox_depth)

    async def outbox_oldest_ms(self) -> int | None:
        return await self._in_store(self.store.outbox_oldest_ms)

    async def outbox_open_counts(self) -> dict[str, int]:
        return await self._in_store(self.store.outbox_open_counts)

    # ------------------------------------------------------------------ the writer

    async def run(self, tick_interval_s: float | None = 1.0) -> None:
        """The writer loop; with a tick interval it also drives time-based rules."""
        ticker = None
        if tick_interval_s:
            ticker = asyncio.create_task(self._tick(tick_interval_s), name="engine-ticker")
            ticker.add_done_callback(self._ticker_done)
        try:
            while True:
                batch = await self._next_batch()
                await self._process(batch)
        finally:
            # From here on a submission is refused at once: nobody would ever answer it.
            self.stopped = True
            if ticker is not None:
                ticker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await ticker
            await self._drain()

    async def _drain(self) -> None:
        """On shutdown: commit what is already queued so no caller is left waiting."""
        batch: list[_Queued] = []
        while not self._queue.empty():
            batch.append(self._queue.get_nowait())
        if batch:
            await asyncio.shield(self._process(batch))
        if self._series.held:
            # The counts the historian's interval still holds go out with a last tick.
            self._series.release()
            last = _Queued([Tick(self.clock.now())], None, None)
            await asyncio.shield(self._process([last]))

    def _ticker_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self.log.error(
                "the engine's ticker failed; time-based rules stop until a restart",
                error=repr(task.exception()),
            )

    async def _tick(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            self.post(Tick(self.clock.now()))

    async def _next_batch(self) -> list[_Queued]:
        first = await self._queue.get()
        batch = [first]
        size = self._take_waiting(batch, len(first.inputs))
        if size < self.max_batch and self.batch_window > 0:
            await asyncio.sleep(self.batch_window)
            self._take_waiting(batch, size)
        return batch

    def _take_waiting(self, batch: list[_Queued], size: int) -> int:
        """Add queued submissions while the batch has room; a submission is never split."""
        queue = self._queue
        while size < self.max_batch and not queue.empty():
            queued = queue.get_nowait()
            batch.append(queued)
            size += len(queued.inputs)
        return size

    async def _in_store(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def _process(self, batch: list[_Queued]) -> None:
        self.busy_since = time.monotonic()
        try:
            await self._process_batch(batch)
        finally:
            self.busy_since = None
            self.batches_done += 1

    @staticmethod
    def _closing_tick(batch: list[_Queued]) -> Tick | None:
        """The tick that closes the batch, if one does."""
        last = batch[-1].inputs[-1] if batch and batch[-1].inputs else None
        return last if isinstance(last, Tick) else None

    def _drop_duplicates(self, batch: list[_Queued]) -> list[_Queued]:
        """Answer commands already carried out (or twice in this batch) without applying them."""
        fresh: list[_Queued] = []
        in_batch: set[str] = set()
        for queued in batch:
            cid = queued.command_id
            if cid is not None and (cid in self._commands or cid in in_batch):
                if queued.future is not None and not queued.future.done():
                    queued.future.set_exception(DuplicateCommand(cid))
                self.log.info("command already carried out; not applied again", command_id=cid)
                continue
            if cid is not None:
                in_batch.add(cid)
            fresh.append(queued)
        return fresh

    async def _process_batch(self, batch: list[_Queued]) -> None:
        batch = self._drop_duplicates(batch)
        if self.retention.disk_low:
            batch = self._refuse_counts(batch)
        outcomes, entries = await self._apply(batch)
        try:
            rows = [
                (table, key, codec.entity_doc(self.wc, table, key))
                for table, key in sorted(self.wc.take_dirty())
            ]
            retired = retired_rows(self.wc)
            if entries:
                at = entries[-1].input.at
                entries[-1].outbox.extend(
                    self._series.changed(self.wc.active, at.wall_ms, at.mono_ms)
                )
            elif (tick := self._closing_tick(batch)) is not None and (
                held := self._series.changed(
                    self.wc.active, tick.at.wall_ms, tick.at.mono_ms, idle=True
                )
            ):
                # Counts held back by the historian's interval (or not sent since the start)
                # and nothing else to commit: the tick carries them (journaled; a replay of it
                # changes nothing).
                entries = [JournalEntry(tick, (), held, [], None, codec.encode_input(tick))]
            if entries:
                added = await self._in_store(self.store.commit, entries, rows, retired)
        except StoreError as exc:
            await self._commit_failed(batch, exc)
            return
        except Exception as exc:
            # A bug past the per-input net: the batch is not acknowledged and the state is
            # reloaded, as for a failed commit; the writer goes on with the next batch.
            self.stats.internal_errors += 1
            self.log.error("internal error preparing the commit", error=repr(exc), exc_info=exc)
            await self._commit_failed(batch, StoreError(f"internal error: {exc!r}"))
            return
        if entries:
            self.stats.commits += 1
            self.stats.journaled += len(entries)
            self._commands.update(e.command_id for e in entries if e.command_id is not None)
            # Healthy again only once something was written (a tick that commits nothing
            # says nothing about the disk).
            self.healthy = True
            for hook in self._commit_hooks:
                hook(added)
        self.stats.last_batch = sum(len(q.inputs) for q in batch)
        self.stats.inputs += self.stats.last_batch
        committed: list[Event] = []
        for queued, results in zip(batch, outcomes, strict=True):
            for inp, outcome in zip(queued.inputs, results, strict=True):
                if outcome.rejection is not None:
                    self.stats.rejected += 1
                    self._log_rejection(inp, outcome.rejection)
                elif outcome.events:
                    committed.extend(outcome.events)
            if queued.future is not None and not queued.future.done():
                queued.future.set_result(results)
        if committed:
            self._log_events(committed)
            for listener in self._listeners:
                try:
                    listener(committed)
                except Exception:
                    self.log.exception("commit listener failed")

    async def _apply(self, batch: list[_Queued]) -> tuple[list[list[Outcome]], list[JournalEntry]]:
        outcomes: list[list[Outcome]] = []
        entries: list[JournalEntry] = []
        for queued in batch:
            results: list[Outcome] = []
            for inp in queued.inputs:
                # The net covers everything one input leads to: the core's decision, and the
                # encoding of the input for the journal and of its events as messages. A value
                # that cannot be encoded rejects that input only; nothing of it is kept.
                try:
                    if isinstance(inp, DispatchList):
                        inp = await self._without_retired(inp)
                    outcome = self.wc.apply(inp)
                    if outcome.rejection is not None and outcome.rejection.code in _NOT_HERE:
                        outcome = await self._left_memory(inp, outcome)
                    entry = None
                    if outcome.rejection is None and outcome.changed:
                        events = outcome.events
                        entry = JournalEntry(
                            inp,
                            events,
                            self._outbound.messages_for(events) if events else [],
                            self._outbound.settled_keys(events) if events else [],
                            queued.command_id,
                            codec.encode_input(inp),
                        )
                except Exception as exc:
                    outcome = await self._internal_error(inp, exc, entries)
                    entry = None
                results.append(outcome)
                if entry is not None:
                    entries.append(entry)
            outcomes.append(results)
        return outcomes, entries

    async def _internal_error(
        self, inp: Input, exc: Exception, applied: list[JournalEntry]
    ) -> Outcome:
        """A bug in the core: drop the half-applied state, redo the batch so far, reject ``inp``."""
        self.stats.internal_errors += 1
        self.log.error(
            "internal error applying input; it is rejected and the state is reloaded",
            input_type=type(inp).__name__,
            error=repr(exc),
            exc_info=exc,
        )
        wc = await self._in_store(self.store.load)
        self.wc = wc or WorkCenter(self.wc.rules)
        for entry in applied:
            self.wc.apply(entry.input)  # deterministic: the same inputs give the same state
        return Outcome(
            rejection=Rejection(
                RejectionCode.INTERNAL_ERROR,
                f"internal error applying {type(inp).__name__}; nothing was changed: {exc!r}",
            ),
            changed=False,
        )

    async def _commit_failed(self, batch: list[_Queued], exc: StoreError) -> None:
        self.stats.commit_failures += 1
        self.healthy = False
        self.log.error(
            "commit failed; the batch is not acknowledged",
            error=str(exc),
            inputs=sum(len(q.inputs) for q in batch),
        )
        try:
            wc = await self._in_store(self.store.load)
            if wc is not None:
                self.wc = wc
        except StoreError as load_exc:
            self.log.error("reloading the state failed", error=str(load_exc))
        self.wc.take_dirty()
        self.wc.take_retired()
        self._series.clear()
        for queued in batch:
            if queued.future is not None and not queued.future.done():
                queued.future.set_exception(exc)
        await asyncio.sleep(0.5)  # a full disk does not free itself in a microsecond

    # ------------------------------------------------------------------ checkpoints, retention

    @property
    def held_counts(self) -> int:
        """Counter values the historian's interval holds back (they go out within two)."""
        return self._series.held

    @property
    def command_id_count(self) -> int:
        """How many command ids are remembered (to refuse a duplicate)."""
        return len(self._commands)

    def checkpoint_age_s(self) -> float | None:
        """Seconds since the newest checkpoint (the gateway's clock), None before the first."""
        last = self.retention.last_checkpoint
        if last is None:
            return None
        return max(0.0, (self.clock.now().mono_ms - last.at_mono_ms) / 1000)

    async def maintain(self, policy: RetentionPolicy, *, poll_s: float | None = None) -> None:
        """Checkpoints and retention, until cancelled (a component of edge.app)."""
        poll = poll_s if poll_s is not None else min(60.0, policy.checkpoint_interval_s)
        if poll_s is None and policy.floor_bytes > 0:
            poll = min(poll, policy.disk_check_s)
        while True:
            try:
                await self.maintenance_step(policy)
            except StoreError as exc:
                # Never a reason to stop the gateway: nothing is lost, the next poll tries again
                # (a full disk: deleting needs a little room in the write-ahead log too).
                self.retention.failures += 1
                self.log.warning("checkpoint or retention failed; tried again", error=str(exc))
            await asyncio.sleep(poll)

    async def maintenance_step(self, policy: RetentionPolicy, *, force: bool = False) -> Pruned:
        """The disk watermark when its check is due, then a checkpoint when one is due (or
        ``force``), then retention after each checkpoint (without ``policy.enabled`` only the
        watermark)."""
        pruned = Pruned()
        if self.stopped:
            return pruned
        if policy.floor_bytes > 0:
            await self.watch_disk(policy, force=force)
        elif self.retention.disk_low:
            self._disk_back(None, policy)  # the watermark was switched off
        # Before the checkpoint, so that it holds what is in memory after. Also without
        # retention: leaving memory deletes nothing.
        since = self.clock.now().mono_ms - self._retired_at_mono
        if self._retired_at_mono < 0 or since >= _RETIRE_EVERY_MS or force:
            await self.retire_finished(policy)
            self._retired_at_mono = self.clock.now().mono_ms
        if not policy.enabled:
            return pruned
        last = self.retention.last_checkpoint
        if last is None and self.retention.runs == 0:
            last = await self._in_store(retention.newest_checkpoint, self.store)
            self.retention.last_checkpoint = last
        due = force or last is None
        if not due and last is not None:
            now = self.clock.now()
            due = now.mono_ms - last.at_mono_ms >= policy.checkpoint_interval_s * 1000
            if not due and policy.checkpoint_journal_rows > 0:
                since = await self._in_store(
                    retention.journal_rows_since, self.store, last.journal_id
                )
                due = since >= policy.checkpoint_journal_rows
        if due:
            await self.checkpoint()
        # Retention after a start and then once per checkpoint interval (not at every poll of
        # an idle gateway, whose checkpoint stays the same).
        since = self.clock.now().mono_ms - self._pruned_at_mono
        if self._pruned_at_mono < 0 or since >= policy.checkpoint_interval_s * 1000 or force:
            pruned = await self.prune(policy)
            self._pruned_at_mono = self.clock.now().mono_ms
        return pruned

    # ------------------------------------------------------------------ leaving memory

    async def retire_finished(self, policy: RetentionPolicy) -> tuple[int, int]:
        """Finished operations (with their confirmations and stops) leave memory once nothing
        needs them there (edge.domain.retire): the core names the candidates, the ones an
        unfinished outbox row is about stay, and a journaled ``RetireFinished`` takes the rest
        through the core like any input. Returns (operations, stops) that left."""
        ops_total = stops_total = 0
        kept_h, max_kept = policy.finished_in_memory_h, policy.finished_in_memory_max
        for _ in range(1000):  # each round takes up to MAX_PER_INPUT; the rest next time
            now = self.clock.now()
            found = self.wc.retire_candidates(now, kept_h, max_kept)
            ops = found.ops
            if ops:
                held = await self._in_store(self.store.ops_in_outbox)
                ops = [key for key in ops if key not in held]
            if not ops and not found.stops and not found.unassigned:
                break
            outcome = await self.submit(RetireFinished(tuple(ops), kept_h, now, max_kept))
            events = [e for e in outcome.events if e.type is EventType.OPERATIONS_RETIRED]
            if not events:
                break
            left_ops, left_stops, left_assigned = (
                _count(events[0].data.get(k)) for k in ("ops", "stops", "unassigned")
            )
            ops_total += left_ops
            stops_total += left_stops
            if max(left_ops, left_stops, left_assigned) < MAX_PER_INPUT:
                break
        self.retention.ops_retired += ops_total
        self.retention.stops_retired += stops_total
        if ops_total:
            # The counts last sent per operation (the counter series) only matter for one
            # that may run again: without this they grew with every operation ever run.
            kept = self.wc.operations
            self._series.forget(lambda key: key in kept)
        if ops_total or stops_total:
            self.log.info(
                "finished operations left memory (their rows stay in the database)",
                operations=ops_total,
                stops=stops_total,
                in_memory=len(self.wc.operations),
                stops_in_memory=len(self.wc.stops),
                kept_h=kept_h,
            )
        return ops_total, stops_total

    async def _without_retired(self, d: DispatchList) -> DispatchList:
        """A dispatch list naming an operation that finished and left memory: that entry is
        left out (and said so in the log), the rest applies. In memory the core would keep the
        finished operation as it is (a conflict event); out of memory it would take it for a
        new one, whose confirmation #1 would reuse the idempotency key the ERP posted. The list
        the core applied is the one journaled, so a replay does the same."""
        if d.version <= self.wc.header.dispatch_version:
            return d  # stale: the core refuses it whole
        unknown = [str(spec.key) for spec in d.operations if spec.key not in self.wc.operations]
        if not unknown:
            return d
        stored = await self._in_store(self.store.stored_operations, unknown)
        if not stored:
            return d
        for i, spec in enumerate(d.operations):
            if str(spec.key) in stored:
                self.log.warning(
                    f"dispatch list version {d.version}: operations[{i}] = {str(spec.key)!r} "
                    "finished and left memory; a finished operation is never dispatched "
                    "again, so this entry is left out and the rest of the list applies",
                    field=f"operations[{i}]",
                    value=str(spec.key),
                    version=d.version,
                )
        kept = tuple(spec for spec in d.operations if str(spec.key) not in stored)
        return dataclasses.replace(d, operations=kept)

    async def _left_memory(self, inp: Input, outcome: Outcome) -> Outcome:
        """The core did not find what ``inp`` names: if it left memory, say so in words (the
        row is in the database), or take a relay's repeated good news for a confirmation that
        left. Nothing is changed either way."""
        rej = outcome.rejection
        assert rej is not None
        try:
            better = await self._in_store(_explain_left_memory, self.store, inp, rej)
        except Exception as exc:  # the plain rejection stands
            self.log.warning("looking up a row that left memory failed", error=repr(exc))
            return outcome
        return better if better is not None else outcome

    # ------------------------------------------------------------------ disk watermark

    @property
    def disk_low(self) -> bool:
        """Machine counts are refused: the database's disk is below [retention] min_free_mb."""
        return self.retention.disk_low

    async def free_bytes(self) -> int:
        """Room for the database: its file system's free space (statvfs, off the store's
        thread: a hung disk must not stop the probe's caller) plus the database's free pages."""
        loop = asyncio.get_running_loop()
        outside = await loop.run_in_executor(None, self._free_space, self.store.path)
        inside = await self._in_store(retention.free_page_bytes, self.store)
        return outside + inside

    async def watch_disk(self, policy: RetentionPolicy, *, force: bool = False) -> bool:
        """Measure the free space (every ``disk_check_s``, or now with ``force``): below the
        floor, first delete what retention allows, then refuse machine counts until it is back
        above the floor plus a margin. Returns whether counts are refused."""
        stats = self.retention
        now = self.clock.now()
        last = self._disk_checked_mono
        if not force and last is not None and now.mono_ms - last < policy.disk_check_s * 1000:
            return stats.disk_low
        self._disk_checked_mono = now.mono_ms
        stats.floor_bytes = policy.floor_bytes
        try:
            free = await self.free_bytes()
            if free < policy.floor_bytes and not stats.disk_low and policy.enabled:
                try:
                    await self.prune(policy)
                except StoreError as exc:  # deleting needs a little room too
                    self.log.warning("retention on a full disk failed", error=str(exc))
                free = await self.free_bytes()
        except (OSError, StoreError) as exc:
            self.log.warning(
                "the free space of the database's disk cannot be read; the watermark waits",
                path=str(self.store.path.parent),
                error=str(exc),
            )
            return stats.disk_low
        stats.free_bytes = free
        if free < policy.floor_bytes and not stats.disk_low:
            stats.disk_low = True
            stats.disk_low_since_ms = now.wall_ms
            self._refusals_told_mono = None
            self.log.error(
                "disk space below the floor: new machine counts are refused until it returns "
                "(sources keep them and hand them over again); operator actions, relay "
                "answers and sending the backlog go on",
                path=str(self.store.path.parent),
                free_mb=_mb(free),
                floor_mb=_mb(policy.floor_bytes),
                resume_mb=_mb(policy.resume_bytes),
            )
        elif stats.disk_low and free >= policy.resume_bytes:
            self._disk_back(free, policy)
        return stats.disk_low

    def _disk_back(self, free: int | None, policy: RetentionPolicy) -> None:
        stats = self.retention
        stats.disk_low = False
        stats.disk_low_since_ms = None
        self.log.warning(
            "disk space back above the floor: machine counts are taken again",
            path=str(self.store.path.parent),
            free_mb=_mb(free) if free is not None else None,
            floor_mb=_mb(policy.floor_bytes),
            refused_so_far=stats.counts_refused,
        )

    def _refuse_counts(self, batch: list[_Queued]) -> list[_Queued]:
        """While the disk is low: every submission with a machine count is refused whole (a
        source's batch stays together), the rest goes on."""
        stats = self.retention
        kept: list[_Queued] = []
        refused = 0
        error: DiskLow | None = None
        for queued in batch:
            if not any(isinstance(i, _MACHINE_COUNTS) for i in queued.inputs):
                kept.append(queued)
                continue
            refused += len(queued.inputs)
            if error is None:
                free = stats.free_bytes or 0
                error = DiskLow(
                    f"machine counts refused: {_mb(free)} MB free for the database in "
                    f"{self.store.path.parent}, below the floor of {_mb(stats.floor_bytes)} MB "
                    "([retention] min_free_mb); kept by their source and handed over again "
                    "once space returns"
                )
            if queued.future is not None and not queued.future.done():
                queued.future.set_exception(error)
        if refused:
            stats.counts_refused += refused
            now = self.clock.now().mono_ms
            told = self._refusals_told_mono
            if told is None or now - told >= 60_000:  # the first, then once a minute
                self._refusals_told_mono = now
                self.log.error(
                    str(error),
                    refused_now=refused,
                    refused_so_far=stats.counts_refused,
                )
        return kept

    async def checkpoint(self) -> Checkpoint | None:
        """Write a checkpoint now, on the store's thread between two commits."""
        snap = await self._in_store(retention.checkpoint_snapshot, self.store)
        if snap is None:  # nothing new since the newest one
            cp = await self._in_store(retention.newest_checkpoint, self.store)
        else:
            # Compressed off the store's thread: the commits go on meanwhile.
            loop = asyncio.get_running_loop()
            blob = await loop.run_in_executor(None, retention.encode_docs, snap[1])
            cp = await self._in_store(
                retention.insert_checkpoint, self.store, snap[0], blob, self.clock.now()
            )
            self.retention.checkpoints_written += 1
            self.log.info(
                "checkpoint written", checkpoint=cp.id, journal_id=cp.journal_id, bytes=len(blob)
            )
        if cp is not None:
            self.retention.last_checkpoint = cp
        return cp

    async def prune(self, policy: RetentionPolicy) -> Pruned:
        """Delete what the retention allows, in transactions of at most ``batch_rows`` rows
        each, letting the commits in between; then give the freed pages back.

        A command id goes from memory with its journal entry, and the journal is kept for at
        least ``command_id_days`` (RetentionPolicy.journal_keep_ms): a duplicate of a command
        younger than that is always refused."""
        pruned = Pruned()
        now = self.clock.now()
        archive = self._archive_for(policy)
        export = archive.exporter(now.wall_ms) if archive is not None else None
        written = archive.rows_written if archive is not None else 0
        try:
            point = await self._prune_rows(policy, now, export, pruned)
            pruned.checkpoints = await self._in_store(
                retention.prune_checkpoints, self.store, point
            )
        except ExportFailed as exc:
            # Nothing more is deleted in this run (what was deleted before it is in the
            # archive); the next run tries again. The daemon goes on.
            pruned.export_failed = str(exc)
            self.log.error(
                "retention: exporting before deletion failed; nothing more is deleted in this "
                "run (tried again at the next one)",
                path=str(exc.path),
                error=exc.reason,
                deleted_before=pruned.journal + pruned.events + pruned.outbox,
            )
        if archive is not None:
            pruned.exported = archive.rows_written - written
        if pruned.journal or pruned.events or pruned.outbox or pruned.retired:
            pruned.vacuumed_pages = await self._give_back(policy)
        self.retention.count(pruned)
        if pruned.journal or pruned.events or pruned.outbox or pruned.checkpoints or pruned.retired:
            self.log.info(
                "retention: old rows deleted",
                journal=pruned.journal,
                events=pruned.events,
                outbox=pruned.outbox,
                finished=pruned.retired,
                checkpoints=pruned.checkpoints,
                pages_returned=pruned.vacuumed_pages,
                command_ids=len(self._commands),
                exported=pruned.exported,
                archive=str(archive.current) if archive and archive.current else None,
            )
        return pruned

    async def _prune_rows(
        self,
        policy: RetentionPolicy,
        now: Instant,
        export: retention.Exporter | None,
        pruned: Pruned,
    ) -> Checkpoint | None:
        """The outbox, the events and the journal, batch by batch; returns the prune point."""
        store, limit = self.store, policy.batch_rows
        # Outbox ages are wall times: not while the wall clock is implausible (edge.clock).
        if self.clock.trusted:
            cutoff = now.wall_ms - policy.outbox_keep_ms
            while n := await self._in_store(
                retention.prune_outbox_batch, store, cutoff, limit, export
            ):
                pruned.add("outbox", n)
                await asyncio.sleep(0)
            # What left memory stays stored finished_days after it left (wall times too).
            cutoff = now.wall_ms - policy.finished_keep_ms
            for table in RETIRING_TABLES:
                while n := await self._in_store(
                    retention.prune_retired_batch, store, table, cutoff, limit, export
                ):
                    pruned.add("retired", n)
                    await asyncio.sleep(0)
        point = await self._in_store(retention.prune_point, store, now, policy.journal_keep_ms)
        if point is not None:
            cursor = 0
            while True:
                cursor, n = await self._in_store(
                    retention.prune_events_batch, store, point.journal_id, cursor, limit, export
                )
                if not cursor:
                    break
                pruned.add("events", n)
                await asyncio.sleep(0)
            while True:
                cursor, n, ids = await self._in_store(
                    retention.prune_journal_batch, store, point.journal_id, cursor, limit, export
                )
                if not cursor:
                    break
                pruned.add("journal", n)
                pruned.command_ids |= ids
                self._commands -= ids
                await asyncio.sleep(0)
        return point

    def _archive_for(self, policy: RetentionPolicy) -> Archive | None:
        """The archive of ``policy.export_dir`` (one per folder and prefix, kept open)."""
        if policy.export_dir is None:
            return None
        a = self._archive
        if (
            a is None
            or a.folder != policy.export_dir
            or a.prefix != policy.export_prefix
            or (a.max_bytes, a.keep_files) != (policy.export_max_bytes, policy.export_keep_files)
        ):
            a = self._archive = Archive(
                policy.export_dir,
                policy.export_prefix,
                max_bytes=policy.export_max_bytes,
                keep_files=policy.export_keep_files,
            )
        return a

    async def _give_back(self, policy: RetentionPolicy) -> int:
        """PRAGMA incremental_vacuum in steps, when the database was made for it."""
        mode = await self._in_store(retention.auto_vacuum, self.store)
        if mode != 2:
            if not self._told_no_vacuum:
                self._told_no_vacuum = True
                self.log.info(
                    "this database was made without auto_vacuum: the space of deleted rows is "
                    "used again for new ones, but the file does not shrink",
                    db=str(self.store.path),
                )
            return 0
        before = free = await self._in_store(retention.free_pages, self.store)
        while free > 0:
            left = await self._in_store(retention.vacuum_step, self.store, policy.vacuum_pages)
            if left >= free:
                break
            free = left
            await asyncio.sleep(0)
        return before - free

    # ------------------------------------------------------------------ logging

    def _log_events(self, events: Sequence[Event]) -> None:
        for ev in events:
            fields: dict[str, object] = {"actor": ev.actor}
            if ev.op:
                key = OperationKey.parse(ev.op)
                fields.update(order_id=key.order, operation=key.operation, split=key.split)
            fields.update({k: v for k, v in ev.data.items() if k in _LOGGED_FIELDS})
            if ev.type in _WARNING_EVENTS:
                self.log.warning(ev.type.value, **fields)
            else:
                self.log.info(ev.type.value, **fields)

    def _log_rejection(self, inp: Input, rej: Rejection) -> None:
        fields: dict[str, object] = {
            "input_type": type(inp).__name__,
            "code": rej.code.value,
            "field": rej.field,
            "value": rej.value,
        }
        op = getattr(inp, "op", "")
        if op:
            fields["op"] = op
        self.log.warning(f"rejected: {rej.message}", **fields)


_MACHINE_COUNTS = (CounterReading, Pulses)
# The core's answers when what an input names is not in memory (perhaps it left it).
_NOT_HERE = frozenset(
    {
        RejectionCode.UNKNOWN_OPERATION,
        RejectionCode.UNKNOWN_STOP,
        RejectionCode.UNKNOWN_CONFIRMATION,
        RejectionCode.UNKNOWN_UNASSIGNED,
    }
)
_RETIRE_EVERY_MS = 600_000  # finished operations are looked at every 10 minutes


def _count(listed: object) -> int:
    return len(listed) if isinstance(listed, list) else 0


def _left_on(at_ms: int) -> str:
    return Instant(at_ms, 0).iso()


def _explain_left_memory(store: Store, inp: Input, rej: Rejection) -> Outcome | None:
    """On the store's thread: a better outcome for ``rej`` when what ``inp`` names left memory
    (see edge.domain.retire), else None.

    A relay's verdict for a confirmation that left memory: the same good news again (posted or
    duplicate after posted) is taken as done, changing nothing, so the relay is not told off
    for a resend; anything else contradicts the verdict the confirmation left with and is
    refused naming it (clear it in the ERP). An operation or a stop named by an operator,
    supervisor or central is refused naming the field, the value and when it left."""
    if isinstance(inp, ConfirmationResult):
        found = store.retired_confirmation(inp.idem_key)
        if found is None:
            return None
        doc, at_ms, reversal = found
        status = doc.get("reversal_status") if reversal else doc.get("status")
        conf_id = f"{doc['key']['order']}/{doc['key']['operation']}" + (
            f"/{doc['key']['split']}" if doc["key"].get("split") else ""
        )
        conf_id += f"#{doc['counter']}"
        if status == "posted" and inp.status in (ResultStatus.POSTED, ResultStatus.DUPLICATE):
            return Outcome(changed=False)
        what = "reversal of confirmation" if reversal else "confirmation"
        return Outcome(
            rejection=Rejection(
                RejectionCode.CONFIRMATION_STATE,
                f"idem_key = {inp.idem_key!r}: the {what} {conf_id} left memory on "
                f"{_left_on(at_ms)} with the ERP's verdict {status}; this verdict "
                f"({inp.status.value}) contradicts it and is not applied: clear it in the ERP",
                field="idem_key",
                value=inp.idem_key,
                state=str(status),
            ),
            changed=False,
        )
    if isinstance(inp, AssignUnassigned):
        found_rec = store.left_memory("unassigned", inp.unassigned_id)
        if found_rec is None:
            return None
        return Outcome(
            rejection=Rejection(
                RejectionCode.UNKNOWN_UNASSIGNED,
                f"unassigned_id = {inp.unassigned_id!r}: it was assigned to "
                f"{found_rec[0].get('assigned_to')} and left memory on "
                f"{_left_on(found_rec[1])} (the unassigned table keeps it)",
                field="unassigned_id",
                value=inp.unassigned_id,
            ),
            changed=False,
        )
    if isinstance(inp, SetStopReason) and inp.stop_id:
        found_stop = store.left_memory("stop", inp.stop_id)
        if found_stop is None:
            return None
        return Outcome(
            rejection=Rejection(
                RejectionCode.UNKNOWN_STOP,
                f"stop_id = {inp.stop_id!r}: the stop ended and left memory on "
                f"{_left_on(found_stop[1])}; its reason can no longer be given or changed "
                "(the stop table keeps it as it was)",
                field="stop_id",
                value=inp.stop_id,
            ),
            changed=False,
        )
    ref = getattr(inp, "op", None)
    if not isinstance(ref, str) or not ref or rej.code is not RejectionCode.UNKNOWN_OPERATION:
        return None
    try:
        key = str(OperationKey.parse(ref))
    except ValueError:
        return None
    found_op = store.left_memory("operation", key)
    if found_op is None:
        return None
    status = str(found_op[0].get("status"))
    return Outcome(
        rejection=Rejection(
            RejectionCode.OPERATION_FINISHED,
            f"op = {ref!r}: operation {key} is {status} and left memory on "
            f"{_left_on(found_op[1])}; nothing more can be done to it or its confirmations "
            "here (a reversal or correction now goes to the ERP directly); its rows stay in "
            "the database (the operation and confirmation tables)",
            field="op",
            value=ref,
            state=status,
        ),
        changed=False,
    )


def _mb(n: int) -> float:
    return round(n / retention.MB, 1)


_LOGGED_FIELDS = frozenset(
    {
        "from",
        "to",
        "stop_id",
        "reason",
        "old_reason",
        "new_reason",
        "conf_index",
        "kind",
        "yield_qty",
        "scrap_qty",
        "status",
        "source",
        "previous",
        "value",
        "duration_s",
        "micro",
        "state",
        "version",
        "conflict",
        "unassigned_id",
        "phase",
        "remainder_op",
        "reference",
        "checked",
        "counted",
        "tolerance",
        "call_id",
        "category",
        "blocked_by",
        "verdict",
        "idem_key",
    }
)
# What maintenance should notice in the log: counts that do not add up, help not coming.
_WARNING_EVENTS = frozenset(
    {
        EventType.COUNTER_DISCONTINUITY,
        EventType.COUNTER_DRIFT,
        EventType.HELP_ESCALATED,
        EventType.FINAL_CONFIRMATION_WITHHELD,
        EventType.VERDICT_CONFLICT,
    }
)
