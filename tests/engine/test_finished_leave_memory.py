"""Finished operations leave memory, through the real engine on a real SQLite file.

Days of operations pass (only the clocks are the test's): each is dispatched, run, counted,
stopped once, completed and its final confirmation posted by the relay, and the broker takes
every message. What is in memory stays bounded, a restart loads only that, the rows stay in the
database, and the journal replays to the same projections (``edge verify``).
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge.domain.events import RejectionCode
from edge.domain.inputs import (
    Action,
    AssignUnassigned,
    ConfirmationResult,
    CounterReading,
    DispatchList,
    MachineState,
    MachineStateChanged,
    RequestConfirmation,
    ResultStatus,
    ReverseConfirmation,
    SetStopReason,
    Transition,
)
from edge.domain.model import OperationKey
from edge.engine import Engine
from edge.store.replay import verify_all
from edge.store.retention import RetentionPolicy
from edge.store.store import Store
from tests.engine.helpers import spec
from tests.engine.test_retention_engine import DAY_MS, Clocks, running

OPERATOR = "operator:7"
SUPERVISOR = "supervisor:1"
POLICY = RetentionPolicy(finished_in_memory_h=24, checkpoint_interval_s=3600, min_free_mb=0)


async def broker_takes_everything(engine: Engine) -> None:
    rows = await engine.outbox_pending(100_000, 0)
    confirmations = {"confirmation_created", "confirmation_reversed", "confirmation_resent"}
    await engine.outbox_mark(
        [r.seq for r in rows if r.kind not in confirmations],
        [r.seq for r in rows if r.kind in confirmations],
        (),
    )


async def a_day(
    engine: Engine, clocks: Clocks, day: int, per_day: int, counter: int, *, answer: bool = True
) -> tuple[int, list[str]]:
    """``per_day`` operations, one after the other: run, count 10, a stop with its reason,
    complete; the relay posts every final confirmation (unless ``answer`` is false)."""
    now = engine.now
    specs = tuple(
        spec(f"{day:04d}{j:03d}", "0010", target=10, std_cycle_s=1.0) for j in range(per_day)
    )
    assert (await engine.submit(DispatchList(day + 1, specs, now()))).accepted
    refs = [str(s.key) for s in specs]
    for ref in refs:
        assert (
            await engine.submit(Transition(Action.START_PRODUCTION, ref, OPERATOR, now()))
        ).accepted
        clocks.advance(5_000)
        counter += 5
        await engine.submit(CounterReading("good", counter, now()))
        await engine.submit(MachineStateChanged("good", MachineState.DOWN, now()))
        clocks.advance(200_000)
        await engine.submit(MachineStateChanged("good", MachineState.RUNNING, now()))
        await engine.submit(SetStopReason("M01", OPERATOR, now()))
        clocks.advance(5_000)
        counter += 5
        await engine.submit(CounterReading("good", counter, now()))
        assert (await engine.submit(Transition(Action.COMPLETE, ref, OPERATOR, now()))).accepted
    await broker_takes_everything(engine)
    if answer:
        for conf in list(engine.wc.confirmations.values()):
            if conf.status.value == "awaiting_result":
                await engine.submit(ConfirmationResult(conf.idem_key, ResultStatus.POSTED, now()))
    return counter, refs


async def days_of_work(
    db: Path, clocks: Clocks, days: int, per_day: int
) -> tuple[list[int], list[str], int]:
    """The days one after the other, the maintenance every hour of the night; returns the
    operations in memory after each day, every operation's key and the counter's value."""
    in_memory: list[int] = []
    refs: list[str] = []
    async with running(db, clocks) as engine:
        counter = 1000
        await engine.submit(CounterReading("good", counter, engine.now()))
        for day in range(days):
            counter, made = await a_day(engine, clocks, day, per_day, counter)
            refs += made
            for _ in range(4):
                clocks.advance(DAY_MS // 4)
                await engine.maintenance_step(POLICY)
            in_memory.append(len(engine.wc.operations))
    return in_memory, refs, counter


async def test_memory_stays_bounded_over_days_and_a_restart_loads_only_what_must_be_there(
    tmp_path: Path,
) -> None:
    db = tmp_path / "edge.db"
    clocks = Clocks()
    days, per_day = 6, 8
    in_memory, refs, counter = await days_of_work(db, clocks, days, per_day)
    # 24 h in memory, looked at every 6 h: at most the last two days' operations.
    assert max(in_memory) <= 2 * per_day, in_memory
    assert in_memory[-1] <= 2 * per_day
    conn_rows = Store(db)
    conn_rows.open(boot=False)
    try:
        stored = conn_rows.conn.execute(
            "SELECT COUNT(*), COUNT(retired_ms) FROM operation"
        ).fetchone()
        assert stored[0] == len(refs)  # every operation is still in the database
        assert stored[1] >= len(refs) - 2 * per_day  # most of them marked as gone from memory
        confs = conn_rows.conn.execute(
            "SELECT COUNT(*), COUNT(retired_ms) FROM confirmation"
        ).fetchone()
        assert confs[0] == len(refs)
        stops = conn_rows.conn.execute("SELECT COUNT(*), COUNT(retired_ms) FROM stop").fetchone()
        assert stops[0] >= len(refs)
        assert stops[1] > 0
        # Queryable as it was when it left: the first operation, its confirmation, its stop.
        first = refs[0]
        status, good = conn_rows.conn.execute(
            "SELECT status, good FROM operation WHERE key = ?", (first,)
        ).fetchone()
        assert (status, good) == ("completed", "10")
        (conf_status,) = conn_rows.conn.execute(
            "SELECT status FROM confirmation WHERE key = ?", (f"{first}#1",)
        ).fetchone()
        assert conf_status == "posted"
        # The checkpoints hold what is in memory only.
        checks = verify_all(conn_rows)
        assert [c.what for c in checks if c.differences] == []
        assert any("rows that left memory" in c.what for c in checks), [c.what for c in checks]
    finally:
        conn_rows.close()
    # One more day, finished just now; a restart loads what is in memory, not the history.
    async with running(db, clocks) as engine:
        assert len(engine.wc.operations) == in_memory[-1]
        _, today = await a_day(engine, clocks, days, per_day, counter)
    async with running(db, clocks) as engine:
        assert sorted(str(k) for k in engine.wc.operations) == today
        assert len(engine.wc.confirmations) == per_day
        assert OperationKey.parse(refs[0]) not in engine.wc.operations
        assert await engine.run_store(verify_all, engine.store)


async def test_a_fast_line_keeps_at_most_finished_in_memory_max_and_replays_the_same(
    tmp_path: Path,
) -> None:
    """30 operations finished within the hour, ``finished_in_memory_max`` 10: the maintenance
    takes the oldest 20 out of memory long before 24 hours; a restart loads the 10 and the
    journal (the cap is journaled with each input) replays to the same projections."""
    db = tmp_path / "edge.db"
    clocks = Clocks()
    policy = RetentionPolicy(
        finished_in_memory_h=24,
        finished_in_memory_max=10,
        checkpoint_interval_s=3600,
        min_free_mb=0,
    )
    async with running(db, clocks) as engine:
        await engine.submit(CounterReading("good", 1000, engine.now()))
        _, refs = await a_day(engine, clocks, 0, 30, 1000)
        clocks.advance(60_000)
        await engine.maintenance_step(policy, force=True)
        finished = sorted(str(k) for k, op in engine.wc.operations.items() if op.status.finished)
        assert finished == sorted(refs[-10:])
        assert len(engine.wc.confirmations) == 10
    async with running(db, clocks) as engine:
        assert sorted(str(k) for k in engine.wc.operations) == sorted(refs[-10:])
        assert await engine.run_store(verify_all, engine.store)


async def test_edge_verify_passes_on_a_database_whose_operations_left_memory(
    tmp_path: Path,
) -> None:
    db = tmp_path / "edge.db"
    clocks = Clocks()
    await days_of_work(db, clocks, 3, 4)
    result = subprocess.run(
        [sys.executable, "-m", "edge", "verify", "--db", str(db), "-c", os.devnull],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "rows that left memory" in result.stdout


async def test_what_the_erp_has_not_answered_or_the_outbox_holds_stays_in_memory(
    tmp_path: Path,
) -> None:
    clocks = Clocks()
    async with running(tmp_path / "edge.db", clocks) as engine:
        await engine.submit(CounterReading("good", 1000, engine.now()))
        _, unanswered = await a_day(engine, clocks, 0, 3, 1000, answer=False)
        # An operation the relay answered, but whose message the broker never took.
        specs = (spec("9000", "0010", target=10, std_cycle_s=1.0),)
        await engine.submit(DispatchList(50, specs, engine.now()))
        ref = "9000/0010"
        await engine.submit(Transition(Action.START_PRODUCTION, ref, OPERATOR, engine.now()))
        await engine.submit(CounterReading("good", 1040, engine.now()))
        await engine.submit(Transition(Action.COMPLETE, ref, OPERATOR, engine.now()))
        conf = engine.wc.confirmations[f"{ref}#1"]
        await engine.submit(ConfirmationResult(conf.idem_key, ResultStatus.POSTED, engine.now()))
        clocks.advance(400 * DAY_MS)
        await engine.maintenance_step(POLICY, force=True)
        for r in [*unanswered, ref]:
            assert OperationKey.parse(r) in engine.wc.operations, r
        # The broker takes it, the relay answers the others: now they go.
        await broker_takes_everything(engine)
        for c in list(engine.wc.confirmations.values()):
            await engine.submit(ConfirmationResult(c.idem_key, ResultStatus.POSTED, engine.now()))
        await engine.maintenance_step(POLICY, force=True)
        assert not any(OperationKey.parse(r) in engine.wc.operations for r in [*unanswered, ref])
        assert engine.retention.ops_retired == 4


async def test_inputs_naming_what_left_memory_are_refused_in_words_and_change_nothing(
    tmp_path: Path,
) -> None:
    db = tmp_path / "edge.db"
    clocks = Clocks()
    async with running(db, clocks) as engine:
        await engine.submit(CounterReading("good", 1000, engine.now()))
        _, refs = await a_day(engine, clocks, 0, 2, 1000)
        ref = refs[0]
        conf = engine.wc.confirmations[f"{ref}#1"]
        stop_id = next(iter(engine.wc.stops))
        clocks.advance(2 * DAY_MS)
        await engine.maintenance_step(POLICY, force=True)
        assert OperationKey.parse(ref) not in engine.wc.operations
        journal = engine.store.journal_count()
        now = engine.now()
        out = await engine.submit(ReverseConfirmation(ref, 1, SUPERVISOR, now))
        assert out.rejection is not None
        assert out.rejection.code is RejectionCode.OPERATION_FINISHED
        assert out.rejection.field == "op"
        assert out.rejection.value == ref
        assert "left memory" in out.rejection.message
        assert ref in out.rejection.message
        out = await engine.submit(Transition(Action.START_SETUP, ref, OPERATOR, now))
        assert out.rejection is not None
        assert out.rejection.code is RejectionCode.OPERATION_FINISHED
        out = await engine.submit(SetStopReason("M01", SUPERVISOR, now, stop_id))
        assert out.rejection is not None
        assert out.rejection.field == "stop_id"
        assert out.rejection.value == stop_id
        assert "left memory" in out.rejection.message
        # A contradicting late verdict is refused naming the key; the same good news again
        # is taken as done.
        out = await engine.submit(ConfirmationResult(conf.idem_key, ResultStatus.REJECTED, now))
        assert out.rejection is not None
        assert out.rejection.field == "idem_key"
        assert out.rejection.value == conf.idem_key
        assert "posted" in out.rejection.message
        out = await engine.submit(ConfirmationResult(conf.idem_key, ResultStatus.DUPLICATE, now))
        assert out.accepted
        assert not out.changed
        # A dispatch list naming it again applies without it: no new operation with its keys.
        lst = DispatchList(99, (spec(*ref.split("/"), target=10), spec("7777")), now)
        out = await engine.submit(lst)
        assert out.accepted
        assert OperationKey.parse(ref) not in engine.wc.operations
        assert OperationKey.parse("7777/0020") in engine.wc.operations
        assert engine.store.journal_count() == journal + 1  # only the list
        (body,) = engine.store.conn.execute(
            "SELECT body FROM journal ORDER BY id DESC LIMIT 1"
        ).fetchone()
        assert [o["order"] for o in json.loads(body)["operations"]] == ["7777"]
        checks = await engine.run_store(verify_all, engine.store)
        assert [c.what for c in checks if c.differences] == []
    # The daemon went on; a restart does not bring it back.
    async with running(db, clocks) as engine:
        assert OperationKey.parse(ref) not in engine.wc.operations


@pytest.mark.slow
async def test_thousands_of_finished_operations_over_weeks_stay_bounded(tmp_path: Path) -> None:
    db = tmp_path / "edge.db"
    clocks = Clocks()
    days, per_day = 40, 60
    in_memory, refs, _ = await days_of_work(db, clocks, days, per_day)
    assert len(refs) == 2400
    assert max(in_memory) <= 2 * per_day
    started = time.perf_counter()
    async with running(db, clocks) as engine:
        took = time.perf_counter() - started
        assert len(engine.wc.operations) == in_memory[-1]
        assert len(engine.wc.stops) <= 3 * per_day
    assert took < 5.0, took
    store = Store(db)
    store.open(boot=False)
    try:
        assert store.retired_counts()["operation"] >= len(refs) - 2 * per_day
        assert [c.what for c in verify_all(store) if c.differences] == []
    finally:
        store.close()


async def test_rows_that_left_memory_are_deleted_after_finished_days_exported_first(
    tmp_path: Path,
) -> None:
    db = tmp_path / "edge.db"
    clocks = Clocks()
    archive = tmp_path / "archive"
    archive.mkdir()
    policy = RetentionPolicy(
        finished_in_memory_h=24, finished_days=30, min_free_mb=0, export_dir=archive
    )
    async with running(db, clocks) as engine:
        await engine.submit(CounterReading("good", 1000, engine.now()))
        counter, old = await a_day(engine, clocks, 0, 3, 1000)
        clocks.advance(2 * DAY_MS)
        await engine.maintenance_step(policy, force=True)
        clocks.advance(20 * DAY_MS)
        counter, newer = await a_day(engine, clocks, 1, 2, counter)
        clocks.advance(2 * DAY_MS)
        await engine.maintenance_step(policy, force=True)
        assert engine.store.retired_counts()["operation"] == 5
        # 31 days after the first ones left, 9 after the newer ones.
        clocks.advance(9 * DAY_MS)
        pruned = await engine.prune(policy)
        assert pruned.retired == 3 * 3  # operation, confirmation and stop of each
        conn = engine.store.conn
        keys = {r[0] for r in conn.execute("SELECT key FROM operation")}
        assert keys == set(newer)
        assert pruned.exported >= 9
        await engine.checkpoint()
        checks = await engine.run_store(verify_all, engine.store)
        assert [c.what for c in checks if c.differences] == []
    lines = []
    for path in archive.iterdir():
        with gzip.open(path, "rt") as f:
            lines += [json.loads(line) for line in f]
    exported = {(r["table"], r["id"]) for r in lines if r["table"] == "operation"}
    assert exported == {("operation", ref) for ref in old}


async def test_the_engine_forgets_the_counters_it_published_for_operations_that_left(
    tmp_path: Path,
) -> None:
    """The last good and scrap count sent per operation (so that an unchanged one is not
    sent again) went on growing with every operation ever run."""
    clocks = Clocks()
    async with running(tmp_path / "edge.db", clocks) as engine:
        await engine.submit(CounterReading("good", 1000, engine.now()))
        counter = 1000
        for day in range(3):
            counter, _ = await a_day(engine, clocks, day, 4, counter)
            clocks.advance(2 * DAY_MS)
            await engine.maintenance_step(POLICY, force=True)
        assert len(engine.wc.operations) == 0
        assert len(engine._series) <= 2 * len(engine.wc.operations)


async def test_assigned_unassigned_production_leaves_memory_and_stays_stored(
    tmp_path: Path,
) -> None:
    clocks = Clocks()
    async with running(tmp_path / "edge.db", clocks) as engine:
        now = engine.now
        await engine.submit(CounterReading("good", 1000, now()))
        clocks.advance(10_000)
        await engine.submit(CounterReading("good", 1005, now()))  # nothing runs: unassigned
        (rec,) = engine.wc.unassigned
        _, refs = await a_day(engine, clocks, 0, 1, 1005)
        out = await engine.submit(AssignUnassigned(rec, refs[0], SUPERVISOR, now()))
        assert out.accepted
        # The assigned parts are pending on the finished operation: a supervisor confirms them.
        await engine.submit(RequestConfirmation(SUPERVISOR, now(), refs[0]))
        await broker_takes_everything(engine)
        for conf in list(engine.wc.confirmations.values()):
            await engine.submit(ConfirmationResult(conf.idem_key, ResultStatus.POSTED, now()))
        clocks.advance(2 * DAY_MS)
        await engine.maintenance_step(POLICY, force=True)
        assert engine.wc.unassigned == {}
        assert engine.wc.operations == {}
        assert engine.store.retired_counts()["unassigned"] == 1
        out = await engine.submit(AssignUnassigned(rec, refs[0], SUPERVISOR, now()))
        assert out.rejection is not None
        assert out.rejection.field == "unassigned_id"
        assert "left memory" in out.rejection.message
        checks = await engine.run_store(verify_all, engine.store)
        assert [c.what for c in checks if c.differences] == []
