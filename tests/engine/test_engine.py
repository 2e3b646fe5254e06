"""The one-writer engine against a real SQLite file: durability, group commit, failures."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from decimal import Decimal
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from edge.domain.events import EventType, RejectionCode
from edge.domain.inputs import Action, CounterReading, DispatchList, Pulses, ReportScrap, Transition
from edge.domain.rules import CountKind, CountSource, SignalType
from edge.engine import Engine
from edge.errors import DuplicateCommand, StoreError
from edge.store.replay import verify
from edge.store.store import Store
from tests.engine.helpers import running, spec


async def start(engine: Engine) -> None:
    await engine.submit(DispatchList(1, (spec(std_cycle_s=1.0),), engine.now()))
    outcome = await engine.submit(
        Transition(Action.START_PRODUCTION, "4711/0020", "operator:7", engine.now())
    )
    assert outcome.accepted


async def test_accepted_input_is_durable_when_submit_returns(tmp_path: Path) -> None:
    db = tmp_path / "edge.db"
    async with running(db) as engine:
        await start(engine)
        outcome = await engine.submit(Pulses("pulses", 3, engine.now()))
        assert outcome.accepted
        # Read through a second connection: what was acknowledged is on disk.
        with sqlite3.connect(db) as other:
            good = other.execute("SELECT good FROM operation WHERE key='4711/0020'").fetchone()[0]
            assert good == "3"
            types = [r[0] for r in other.execute("SELECT input_type FROM journal ORDER BY id")]
        assert types == ["RulesApplied", "DispatchList", "Transition", "Pulses"]


async def test_group_commit_puts_concurrent_inputs_in_few_transactions(tmp_path: Path) -> None:
    async with running(tmp_path / "edge.db") as engine:
        await start(engine)
        commits_before = engine.stats.commits
        outcomes = await asyncio.gather(
            *(engine.submit(Pulses("pulses", 1, engine.now())) for _ in range(2000))
        )
        assert all(o.accepted for o in outcomes)
        assert engine.stats.commits - commits_before <= 10
        op = engine.wc.operations[spec().key]
        assert op.counted.good == 2000


async def test_rejection_is_answered_and_stores_nothing(tmp_path: Path) -> None:
    db = tmp_path / "edge.db"
    async with running(db) as engine:
        await start(engine)
        journal_before = engine.store.journal_count()
        outcome = await engine.submit(
            ReportScrap(qty=-2, reason="S03", actor="operator:7", at=engine.now())  # type: ignore[arg-type]
        )
        assert outcome.rejection is not None
        assert outcome.rejection.code is RejectionCode.INVALID_VALUE
        assert "qty = -2" in outcome.rejection.message
        assert engine.store.journal_count() == journal_before


async def test_restart_restores_state_and_counts_the_gap(tmp_path: Path) -> None:
    db = tmp_path / "edge.db"
    async with running(db) as engine:
        await start(engine)
        await engine.submit(CounterReading("good", 1200, engine.now()))
        await engine.submit(CounterReading("good", 1210, engine.now()))
    async with running(db) as engine:
        op = engine.wc.operations[spec().key]
        assert op.counted.good == 10
        assert op.status.value == "running"
        await engine.submit(CounterReading("good", 1215, engine.now()))
        assert engine.wc.operations[spec().key].counted.good == 15
        assert engine.store.boot_seq == 2
        assert verify(engine.store) == []


async def test_changed_rules_are_journaled_at_start(tmp_path: Path) -> None:
    db = tmp_path / "edge.db"
    async with running(db):
        pass
    async with running(db, micro_stop_s=30.0) as engine:
        assert engine.wc.rules.micro_stop_s == 30.0
        rows = engine.store.conn.execute(
            "SELECT COUNT(*) FROM journal WHERE input_type='RulesApplied'"
        ).fetchone()[0]
        assert rows == 2
        assert verify(engine.store) == []


async def test_outbox_rows_follow_events_in_order(tmp_path: Path) -> None:
    async with running(tmp_path / "edge.db") as engine:
        await start(engine)
        await engine.submit(Pulses("pulses", 50, engine.now()))  # every 50 good: a partial
        rows = engine.store.outbox_pending(limit=100)
        kinds = [r.kind for r in rows]
        assert "confirmation_created" in kinds
        seqs = [r.seq for r in rows]
        assert seqs == list(range(1, len(rows) + 1))  # gap-free
        conf = next(r for r in rows if r.kind == "confirmation_created")
        assert conf.topic == "_mes_v1/confirmation"
        assert conf.idem_key is not None
        assert len(conf.idem_key) == 64


async def test_failed_commit_acknowledges_nothing_and_engine_goes_on(tmp_path: Path) -> None:
    db = tmp_path / "edge.db"
    async with running(db) as engine:
        await start(engine)
        await engine.submit(Pulses("pulses", 5, engine.now()))
        # Make the next commit fail inside SQLite: a trigger that aborts journal inserts.
        blocker = sqlite3.connect(db)
        blocker.execute(
            "CREATE TRIGGER fail_journal BEFORE INSERT ON journal "
            "BEGIN SELECT RAISE(ABORT, 'disk full (simulated)'); END"
        )
        blocker.commit()
        with pytest.raises(StoreError, match="disk full"):
            await engine.submit(Pulses("pulses", 7, engine.now()))
        assert engine.healthy is False
        assert engine.wc.operations[spec().key].counted.good == 5  # the failed batch is gone
        blocker.execute("DROP TRIGGER fail_journal")
        blocker.commit()
        blocker.close()
        outcome = await engine.submit(Pulses("pulses", 2, engine.now()))
        assert outcome.accepted
        assert engine.healthy is True
        assert engine.wc.operations[spec().key].counted.good == 7
        assert verify(engine.store) == []


async def test_internal_error_rejects_only_that_input(tmp_path: Path) -> None:
    async with running(tmp_path / "edge.db") as engine:
        await start(engine)

        def broken(_: object) -> None:
            raise RuntimeError("bug")

        original = engine.wc._handlers[ReportScrap]
        engine.wc._handlers[ReportScrap] = broken
        results = await asyncio.gather(
            engine.submit(Pulses("pulses", 4, engine.now())),
            engine.submit(ReportScrap(qty=1, reason="S03", actor="operator:7", at=engine.now())),  # type: ignore[arg-type]
            engine.submit(Pulses("pulses", 6, engine.now())),
        )
        assert results[0].accepted
        assert results[2].accepted
        assert results[1].rejection is not None
        assert results[1].rejection.code is RejectionCode.INTERNAL_ERROR
        assert engine.stats.internal_errors == 1
        # The reloaded core is a new instance; it counted both pulse inputs exactly once.
        engine.wc._handlers[ReportScrap] = original
        assert engine.wc.operations[spec().key].counted.good == 10
        assert verify(engine.store) == []


async def test_events_reach_listeners_after_commit(tmp_path: Path) -> None:
    seen: list[EventType] = []
    async with running(tmp_path / "edge.db") as engine:
        engine.add_listener(lambda events: seen.extend(e.type for e in events))
        await start(engine)
    assert EventType.OPERATION_STATE_CHANGED in seen
    assert os.path.exists(tmp_path / "edge.db")


async def test_a_submission_after_the_engine_stopped_fails_at_once(tmp_path: Path) -> None:
    from edge.domain.inputs import Tick
    from edge.errors import EngineStopped

    async with running(tmp_path / "edge.db") as engine:
        pass
    with pytest.raises(EngineStopped):
        await asyncio.wait_for(engine.submit(Tick(engine.now())), 2)


async def test_a_command_id_acts_once_also_after_a_restart(tmp_path: Path) -> None:
    """A double tap, a resend after a lost answer, a stale page after a restart: one scrap."""
    db = tmp_path / "edge.db"
    scrap = "operator:7"
    async with running(db) as engine:
        await start(engine)
        await engine.submit(Pulses("pulses", 10, engine.now()))
        first = await engine.submit(
            ReportScrap(Decimal(2), "S03", scrap, engine.now()), command_id="c-1"
        )
        assert first.accepted
        with pytest.raises(DuplicateCommand):
            await engine.submit(
                ReportScrap(Decimal(2), "S03", scrap, engine.now()), command_id="c-1"
            )
        # Two taps arriving together: the second is answered as a duplicate, not applied.
        both = await asyncio.gather(
            engine.submit(ReportScrap(Decimal(1), "S03", scrap, engine.now()), command_id="c-2"),
            engine.submit(ReportScrap(Decimal(1), "S03", scrap, engine.now()), command_id="c-2"),
            return_exceptions=True,
        )
        assert sum(isinstance(r, DuplicateCommand) for r in both) == 1
    async with running(db) as engine:
        with pytest.raises(DuplicateCommand):
            await engine.submit(
                ReportScrap(Decimal(2), "S03", scrap, engine.now()), command_id="c-1"
            )
        (op,) = engine.wc.active
        assert op.counted.scrap == {"S03": 3}
        # A rejected command is not journaled: the same id may come again once it is legal.
        rejected = await engine.submit(
            ReportScrap(Decimal(-1), "S03", scrap, engine.now()), command_id="c-3"
        )
        assert rejected.rejection is not None
    with sqlite3.connect(db) as conn:
        ids = [r[0] for r in conn.execute("SELECT command_id FROM journal WHERE command_id != ''")]
    assert ids == ["c-1", "c-2"]
    store = Store(db)
    store.open()
    try:
        assert verify(store) == []
    finally:
        store.close()


async def test_a_drifting_cross_check_is_a_warning_in_the_log(tmp_path: Path) -> None:
    """One authoritative source per count: the other only checks it, and says when it drifts."""
    sources = (
        CountSource("pulses", CountKind.GOOD, SignalType.PULSE),
        CountSource(
            "barrier", CountKind.GOOD, SignalType.PULSE, authoritative=False, drift_tolerance=3
        ),
    )
    with capture_logs() as logs:
        async with running(tmp_path / "edge.db", sources=sources) as engine:
            await start(engine)
            await engine.submit(Pulses("pulses", 1, engine.now()))
            await engine.submit(Pulses("barrier", 1, engine.now()))  # both seen: compare
            await engine.submit(Pulses("pulses", 20, engine.now()))
            await engine.submit(Pulses("barrier", 10, engine.now()))
            (op,) = engine.wc.active
            assert op.counted.good == 21  # the barrier counted nothing
    (warning,) = [e for e in logs if e.get("event") == "counter_drift"]
    assert warning["log_level"] == "warning"
    assert (warning["source"], warning["reference"]) == ("barrier", "pulses")
    assert (warning["checked"], warning["counted"]) == (11, 20)
