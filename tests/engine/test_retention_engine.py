"""Checkpoints and retention driven through a real engine on a real SQLite file.

Only the clocks are replaced (so that months pass in a test); the store, the core and the writer
are the gateway's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from edge.clock import TimeSource
from edge.domain.inputs import (
    Action,
    ConfirmationResult,
    CounterReading,
    DispatchList,
    MachineState,
    MachineStateChanged,
    Pulses,
    ReportScrap,
    RequestConfirmation,
    ResultStatus,
    SetStopReason,
    Tick,
    Transition,
)
from edge.engine import Engine
from edge.errors import DuplicateCommand
from edge.store import retention
from edge.store.replay import verify, verify_all
from edge.store.retention import RetentionPolicy
from edge.store.store import Store
from edge.sync import messages
from tests.engine.helpers import rules, spec

DAY_MS = retention.DAY_MS
START_MS = 1_780_000_000_000  # 2026-05-28
OP = "4711/0020"


@dataclass
class Clocks:
    """The computer's clocks, moved on by the test."""

    wall_ms: int = START_MS
    uptime_ms: int = 1_000

    def advance(self, ms: int) -> None:
        self.wall_ms += ms
        self.uptime_ms += ms

    def source(self) -> TimeSource:
        return TimeSource(
            wall_ns=lambda: self.wall_ms * 1_000_000,
            mono_ns=lambda: self.uptime_ms * 1_000_000,
            boottime_ns=lambda: self.uptime_ms * 1_000_000,
            boot_id=lambda: "boot-1",
            ntp_synchronized=lambda: True,
            floor_ms=lambda: START_MS - 365 * DAY_MS,
        )


@contextlib.asynccontextmanager
async def running(path: Path, clocks: Clocks, **options: Any) -> AsyncIterator[Engine]:
    """The engine on ``path`` with the test's clocks (``options``: Engine's keyword arguments)."""
    engine = await Engine.open(
        Store(path), rules(), outbound=messages, time_source=clocks.source(), **options
    )
    task = asyncio.create_task(engine.run(tick_interval_s=None))
    try:
        yield engine
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await engine.close()


async def a_shift(engine: Engine, clocks: Clocks, counter: int, *, first: bool = False) -> int:
    """Production with counts, a stop with its reason, scrap and confirmations."""
    now = engine.now
    if first:
        await engine.submit(DispatchList(1, (spec(std_cycle_s=1.0, target=100_000),), now()))
        for action in (Action.START_SETUP, Action.START_PRODUCTION):
            assert (await engine.submit(Transition(action, OP, "operator:7", now()))).accepted
    await engine.submit(MachineStateChanged("good", MachineState.RUNNING, now()))
    for _ in range(6):
        clocks.advance(20_000)
        counter += 20
        await engine.submit(CounterReading("good", counter, now()))
    await engine.submit(MachineStateChanged("good", MachineState.DOWN, now()))
    clocks.advance(120_000)
    await engine.submit(Tick(now()))
    await engine.submit(SetStopReason("M01", "operator:7", now()))
    await engine.submit(MachineStateChanged("good", MachineState.RUNNING, now()))
    await engine.submit(ReportScrap(Decimal(2), "S03", "operator:7", now()))
    await engine.submit(Pulses("pulses", 60, now()))
    await engine.submit(RequestConfirmation("operator:7", now(), OP))
    # The relay answers every confirmation sent so far.
    keys = [
        r.idem_key
        for r in await engine.outbox_pending(1000, 0)
        if r.kind == "confirmation_created" and r.idem_key
    ]
    for key in keys:
        await engine.submit(ConfirmationResult(key, ResultStatus.POSTED, now(), erp_ref="E1"))
    return counter


async def test_checkpoint_plus_the_journal_after_it_replays_to_the_live_state(
    tmp_path: Path,
) -> None:
    db = tmp_path / "edge.db"
    clocks = Clocks()
    policy = RetentionPolicy(journal_days=90, outbox_days=30, command_id_days=7, batch_rows=50)
    async with running(db, clocks) as engine:
        counter = await a_shift(engine, clocks, 1000, first=True)
        await engine.maintenance_step(policy)  # the first one: a checkpoint at once
        assert engine.retention.checkpoints_written == 1
        counter = await a_shift(engine, clocks, counter)
        clocks.advance(100 * DAY_MS)
        counter = await a_shift(engine, clocks, counter)
        cp2 = await engine.checkpoint()
        assert cp2 is not None
        # Not acknowledged by the broker: these rows must outlive every retention.
        open_before = dict(await engine.outbox_open_counts())
        clocks.advance(100 * DAY_MS)
        counter = await a_shift(engine, clocks, counter)
        journal_before = engine.store.journal_count()
        # The broker acknowledged everything older than a day (done); the rest waits.
        await engine.run_store(
            engine.store.conn.execute,
            "UPDATE outbox SET state = 'done' WHERE at_wall_ms < ? AND state = 'pending'",
            (clocks.wall_ms - DAY_MS - 300 * DAY_MS,),
        )
        pruned = await engine.prune(policy)
        assert pruned.journal > 0
        assert pruned.events > 0
        assert pruned.largest_batch <= 50
        assert engine.store.journal_count() < journal_before
        first = engine.store.conn.execute("SELECT MIN(id) FROM journal").fetchone()[0]
        assert first > 1  # the journal before the checkpoint is (mostly) gone
        assert dict(await engine.outbox_open_counts()).keys() >= open_before.keys()
        # More inputs after the prune, a checkpoint, more inputs: everything must still agree.
        counter = await a_shift(engine, clocks, counter)
        await engine.checkpoint()
        counter = await a_shift(engine, clocks, counter)
        checks = await engine.run_store(verify_all, engine.store)
        assert [c.what for c in checks if c.differences] == []
        assert len(checks) == 3, [c.what for c in checks]
        assert any("+ the journal after it" in c.what for c in checks)
        assert await engine.run_store(verify, engine.store) == []
        live = engine.wc.operations[spec().key].counted.good
    # A restart on the pruned database: the state is the same, the numbers go on.
    async with running(db, clocks) as engine:
        assert engine.wc.operations[spec().key].counted.good == live
        await a_shift(engine, clocks, counter)
        assert await engine.run_store(verify, engine.store) == []


async def test_pending_and_published_rows_and_their_events_survive_retention(
    tmp_path: Path,
) -> None:
    clocks = Clocks()
    policy = RetentionPolicy(journal_days=1, outbox_days=1, command_id_days=1, batch_rows=100)
    async with running(tmp_path / "edge.db", clocks) as engine:
        await a_shift(engine, clocks, 1000, first=True)
        conn = engine.store.conn
        unfinished = conn.execute(
            "SELECT seq, event_id FROM outbox WHERE state != 'done' ORDER BY seq"
        ).fetchall()
        # Some published (the broker has them, the relay has not answered).
        await engine.outbox_mark((), [s for s, _ in unfinished[::2]], ())
        await engine.checkpoint()
        clocks.advance(400 * DAY_MS)
        await engine.submit(Tick(engine.now()))
        await engine.checkpoint()
        clocks.advance(2 * DAY_MS)
        pruned = await engine.prune(policy)
        assert pruned.journal > 0
        left = conn.execute("SELECT seq, event_id FROM outbox ORDER BY seq").fetchall()
        assert set(unfinished) <= set(left)  # 400 days old, never finished: all still there
        assert unfinished
        for _, event_id in left:
            if event_id is not None:
                (journal_id,) = conn.execute(
                    "SELECT journal_id FROM event WHERE id = ?", (event_id,)
                ).fetchone()
                assert conn.execute("SELECT 1 FROM journal WHERE id = ?", (journal_id,)).fetchone()
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        checks = await engine.run_store(verify_all, engine.store)
        assert [c.what for c in checks if c.differences] == []


async def test_command_ids_are_forgotten_with_their_entries_but_not_too_early(
    tmp_path: Path,
) -> None:
    db = tmp_path / "edge.db"
    clocks = Clocks()
    # The journal would go after 1 day; the command ids keep it for 7.
    policy = RetentionPolicy(journal_days=1, outbox_days=1, command_id_days=7, batch_rows=100)
    scrap = "operator:7"
    async with running(db, clocks) as engine:
        await a_shift(engine, clocks, 1000, first=True)
        await engine.submit(Pulses("pulses", 40, engine.now()))
        for i in range(20):
            assert (
                await engine.submit(
                    ReportScrap(Decimal(1), "S03", scrap, engine.now()), command_id=f"old-{i}"
                )
            ).accepted
        await engine.submit(Tick(engine.now()))
        await engine.checkpoint()
        clocks.advance(3 * DAY_MS)
        assert (
            await engine.submit(
                ReportScrap(Decimal(1), "S03", scrap, engine.now()), command_id="recent"
            )
        ).accepted
        await engine.checkpoint()
        clocks.advance(DAY_MS)
        # 4 days: past journal_days, not past command_id_days: nothing forgotten yet.
        pruned = await engine.prune(policy)
        assert pruned.journal == 0
        with pytest.raises(DuplicateCommand):
            await engine.submit(
                ReportScrap(Decimal(1), "S03", scrap, engine.now()), command_id="old-3"
            )
        clocks.advance(4 * DAY_MS)
        # 8 days: the first checkpoint is past both; the old commands go with their entries
        # (once the broker has their messages: an unfinished message keeps its entry).
        await engine.run_store(engine.store.conn.execute, "UPDATE outbox SET state = 'done'")
        before = engine.command_id_count
        pruned = await engine.prune(policy)
        assert pruned.journal > 0
        assert {f"old-{i}" for i in range(20)} <= pruned.command_ids
        assert engine.command_id_count == before - len(pruned.command_ids)
        assert engine.command_id_count < before
        assert engine.store.command_ids() == engine._commands
        # The recent one (4 days old, after the checkpoint the journal was cut at) is refused.
        with pytest.raises(DuplicateCommand):
            await engine.submit(
                ReportScrap(Decimal(1), "S03", scrap, engine.now()), command_id="recent"
            )
    async with running(db, clocks) as engine:
        with pytest.raises(DuplicateCommand):
            await engine.submit(
                ReportScrap(Decimal(1), "S03", scrap, engine.now()), command_id="recent"
            )
        assert "old-3" not in engine.store.command_ids()


async def test_a_large_journal_is_pruned_in_small_transactions(tmp_path: Path) -> None:
    db = tmp_path / "edge.db"
    clocks = Clocks()
    async with running(db, clocks):
        pass
    # 50 000 old journal entries with an event each, written straight into the file.
    rows = 50_000
    with sqlite3.connect(db) as conn:
        conn.executemany(
            "INSERT INTO journal(id, boot_seq, at_wall_ms, at_mono_ms, input_type, body, "
            "command_id) VALUES (?, 1, ?, ?, 'Tick', '{}', ?)",
            (
                (i, START_MS + i, 1_000 + i, f"c{i}" if i % 100 == 0 else None)
                for i in range(2, rows + 2)
            ),
        )
        conn.executemany(
            "INSERT INTO event(journal_id, type, at_wall_ms, data) VALUES (?, 'tick', ?, '{}')",
            ((i, START_MS + i) for i in range(2, rows + 2)),
        )
    policy = RetentionPolicy(journal_days=90, command_id_days=7, batch_rows=2000)
    async with running(db, clocks) as engine:
        assert engine.command_id_count == rows // 100
        await engine.checkpoint()
        clocks.advance(91 * DAY_MS)
        await engine.submit(Tick(engine.now()))  # the newest entry stays in any case
        # Every transaction on the store's connection, with the rows it changed.
        conn = engine.store.conn
        sizes: list[int] = []
        began = [conn.total_changes]
        times: list[float] = []
        started = [time.perf_counter()]

        def trace(sql: str) -> None:
            if sql.startswith("BEGIN"):
                began[0] = conn.total_changes
                started[0] = time.perf_counter()
            elif sql.startswith("COMMIT"):
                sizes.append(conn.total_changes - began[0])
                times.append(time.perf_counter() - started[0])

        await engine.run_store(conn.set_trace_callback, trace)

        # Inputs keep coming while it prunes: they are committed in between.
        async def feed() -> int:
            n = 0
            while not done.is_set():
                await engine.submit(Tick(engine.now()))
                n += 1
                await asyncio.sleep(0.001)
            return n

        done = asyncio.Event()
        feeder = asyncio.create_task(feed())
        pruned = await engine.prune(policy)
        done.set()
        fed = await feeder
        await engine.run_store(conn.set_trace_callback, None)
        assert pruned.journal == rows + 1  # and the RulesApplied entry of the first start
        assert pruned.events == rows + 1  # and the rules_applied event
        assert engine.command_id_count == 0
        assert pruned.largest_batch <= 2000
        # Each transaction: at most a batch of rows (plus the one meta row of the numbering).
        assert max(sizes) <= 2000 + 1
        assert len([s for s in sizes if s > 100]) >= 2 * rows // 2000
        assert fed > 0, (fed, len(sizes), sum(times))
        assert max(times) < 2.0
        assert engine.store.journal_count() >= 1


async def test_maintenance_writes_checkpoints_by_time_and_by_journal_rows(
    tmp_path: Path,
) -> None:
    clocks = Clocks()
    policy = RetentionPolicy(checkpoint_interval_s=3600, checkpoint_journal_rows=5)
    async with running(tmp_path / "edge.db", clocks) as engine:
        await engine.maintenance_step(policy)
        assert engine.retention.checkpoints_written == 1
        assert engine.checkpoint_age_s() == 0
        await engine.maintenance_step(policy)
        assert engine.retention.checkpoints_written == 1  # nothing due
        await a_shift(engine, clocks, 1000, first=True)  # well over 5 entries
        await engine.maintenance_step(policy)
        assert engine.retention.checkpoints_written == 2
        clocks.advance(3_600_000)
        age = engine.checkpoint_age_s()
        assert age is not None
        assert age >= 3600
        await engine.submit(Tick(engine.now()))
        await engine.maintenance_step(policy)
        assert engine.retention.checkpoints_written == 3
        # A database made before auto_vacuum: it is said once that the file does not shrink.
        with capture_logs() as logs:
            engine.store.conn.execute("UPDATE outbox SET state = 'done'")
            clocks.advance(40 * DAY_MS)
            await engine.submit(Tick(engine.now()))
            pruned = await engine.prune(policy)
        assert pruned.outbox > 0
        assert pruned.vacuumed_pages >= 0
        assert all("does not shrink" not in e["event"] for e in logs)  # a new one: it shrinks


async def test_an_old_database_is_told_once_that_its_file_does_not_shrink(
    tmp_path: Path,
) -> None:
    db = tmp_path / "edge.db"
    clocks = Clocks()
    async with running(db, clocks) as engine:
        await a_shift(engine, clocks, 1000, first=True)
    with sqlite3.connect(db) as conn:  # as if made before auto_vacuum (a VACUUM applies it)
        conn.execute("PRAGMA auto_vacuum = NONE")
        conn.execute("VACUUM")
    policy = RetentionPolicy(outbox_days=1)
    async with running(db, clocks) as engine:
        with capture_logs() as logs:
            for _ in range(2):
                engine.store.conn.execute("UPDATE outbox SET state = 'done'")
                clocks.advance(2 * DAY_MS)
                await a_shift(engine, clocks, 5000)
                assert (await engine.prune(policy)).outbox > 0
        told = [e for e in logs if "does not shrink" in e["event"]]
        assert len(told) == 1


async def test_a_failing_checkpoint_is_tried_again_and_stops_nothing(tmp_path: Path) -> None:
    db = tmp_path / "edge.db"
    clocks = Clocks()
    async with running(db, clocks) as engine:
        blocker = sqlite3.connect(db)
        blocker.execute(
            "CREATE TRIGGER no_room BEFORE INSERT ON checkpoint "
            "BEGIN SELECT RAISE(ABORT, 'disk full (simulated)'); END"
        )
        blocker.commit()
        task = asyncio.create_task(engine.maintain(RetentionPolicy(), poll_s=0.01))
        try:
            while engine.retention.failures < 2:
                await asyncio.sleep(0.01)
            assert engine.retention.checkpoints_written == 0
            await a_shift(engine, clocks, 1000, first=True)  # the writer goes on meanwhile
            blocker.execute("DROP TRIGGER no_room")
            blocker.commit()
            while engine.retention.checkpoints_written == 0:
                await asyncio.sleep(0.01)
            assert not task.done()
        finally:
            blocker.close()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        assert await engine.run_store(verify, engine.store) == []


async def test_hourly_checkpoints_are_thinned_before_any_journal_is_old_enough(
    tmp_path: Path,
) -> None:
    clocks = Clocks()
    policy = RetentionPolicy(checkpoint_interval_s=3600, checkpoint_journal_rows=0)
    async with running(tmp_path / "edge.db", clocks) as engine:
        await a_shift(engine, clocks, 1000, first=True)
        for _ in range(5 * 24):  # five days, a checkpoint an hour
            clocks.advance(3_600_000)
            await engine.submit(Pulses("pulses", 1, engine.now()))
            await engine.maintenance_step(policy)
        assert engine.retention.checkpoints_written == 5 * 24
        left = await engine.run_store(retention.checkpoints, engine.store)
        assert len(left) <= 24 + 6  # the last day hourly, one a day before it
        assert engine.retention.journal_pruned == 0
        checks = await engine.run_store(verify_all, engine.store)
        assert [c.what for c in checks if c.differences] == []


_GATEWAY = """
[gateway]
edge_id = "wc-1"
work_center = "WC1"

[store]
path = "{db}"

[retention]
{retention}
"""


@pytest.mark.parametrize(("enabled", "checkpoints"), [(True, 1), (False, 0)])
async def test_the_gateway_runs_the_maintenance_when_enabled(
    tmp_path: Path, enabled: bool, checkpoints: int
) -> None:
    from edge.app import run_gateway
    from edge.config import load_config

    db = tmp_path / "edge.db"
    cfg_file = tmp_path / "edge.toml"
    cfg_file.write_text(_GATEWAY.format(db=db, retention=f"enabled = {str(enabled).lower()}"))
    stop = asyncio.Event()

    async def stopper(engine: Engine) -> None:
        deadline = time.monotonic() + 5
        while engine.retention.checkpoints_written < checkpoints and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
        stop.set()

    await asyncio.wait_for(run_gateway(load_config(cfg_file), components=(stopper,), stop=stop), 30)
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM checkpoint").fetchone()[0] == checkpoints
