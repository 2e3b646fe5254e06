"""The SQLite store: schema versions, one transaction per batch, readable projections."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import structlog

from edge.domain.clock import Instant
from edge.domain.core import WorkCenter
from edge.domain.inputs import Action, DispatchList, Pulses, RulesApplied, Transition
from edge.engine import Engine
from edge.errors import StoreError
from edge.store.schema import MIGRATIONS
from edge.store.store import JournalEntry, Store
from edge.sync import messages
from tests.engine.helpers import rules, spec


def test_new_database_gets_the_current_schema_and_boot_counts(tmp_path: Path) -> None:
    db = tmp_path / "edge.db"
    for boot in (1, 2, 3):
        store = Store(db)
        store.open()
        assert store.boot_seq == boot
        version = store.conn.execute("PRAGMA user_version").fetchone()[0]
        assert version == len(MIGRATIONS)
        assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        store.close()


def test_a_newer_schema_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    db = tmp_path / "edge.db"
    with sqlite3.connect(db) as conn:
        conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 5}")
    with pytest.raises(StoreError, match="newer than this gateway knows"):
        Store(db).open()


def test_an_unwritable_location_is_a_store_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StoreError, match="cannot open the database"):
        Store(blocker / "sub" / "edge.db").open()


def test_batch_is_one_transaction(tmp_path: Path) -> None:
    """A failure in the middle of a batch leaves nothing of it: journal, events, projections."""
    store = Store(tmp_path / "edge.db")
    store.open()
    wc = WorkCenter(rules())
    at = Instant(1_700_000_000_000, 0)
    entries = []
    for inp in (
        RulesApplied(rules(), at),
        DispatchList(1, (spec(),), at),
        Transition(Action.START_PRODUCTION, "4711/0020", "operator:1", at),
    ):
        outcome = wc.apply(inp)
        entries.append(JournalEntry(inp, outcome.events))
    rows = [("operation", "4711/0020", "{}"), ("nonexistent_table", "x", "{}")]
    with pytest.raises(StoreError, match="nothing of the batch was stored"):
        store.commit(entries, rows)
    assert store.journal_count() == 0
    assert store.conn.execute("SELECT COUNT(*) FROM event").fetchone()[0] == 0
    assert store.conn.execute("SELECT COUNT(*) FROM operation").fetchone()[0] == 0
    # The same batch commits once the bad row is gone, with ids starting where they should.
    store.commit(entries, rows[:1])
    assert [r[0] for r in store.iter_journal()] == [1, 2, 3]
    store.close()


async def test_projections_are_readable_with_plain_sql(tmp_path: Path) -> None:
    db = tmp_path / "edge.db"
    engine = await Engine.open(Store(db), rules(), outbound=messages)
    await engine.apply_now(DispatchList(1, (spec(),), engine.now()))
    await engine.apply_now(
        Transition(Action.START_PRODUCTION, "4711/0020", "operator:1", engine.now())
    )
    await engine.apply_now(Pulses("pulses", 7, engine.now()))
    await engine.close()
    with sqlite3.connect(db) as conn:
        row = conn.execute("SELECT order_no, operation_no, status, good FROM operation").fetchone()
    assert row == ("4711", "0020", "running", "7")


async def test_order_events_are_logged_with_order_and_operation(tmp_path: Path) -> None:
    engine = await Engine.open(Store(tmp_path / "edge.db"), rules(), outbound=messages)
    with structlog.testing.capture_logs() as logs:
        await engine.apply_now(DispatchList(1, (spec(),), engine.now()))
        await engine.apply_now(
            Transition(Action.START_PRODUCTION, "4711/0020", "operator:1", engine.now())
        )
        await engine.apply_now(Transition(Action.RESUME, "4711/0020", "operator:1", engine.now()))
    await engine.close()
    changed = [e for e in logs if e["event"] == "operation_state_changed"]
    assert changed
    assert changed[0]["order_id"] == "4711"
    assert changed[0]["operation"] == "0020"
    rejected = [e for e in logs if e["log_level"] == "warning"]
    assert rejected
    assert rejected[0]["op"] == "4711/0020"
    assert "running; cannot resume" in rejected[0]["event"]


def test_a_looking_tool_never_migrates_a_database(tmp_path: Path) -> None:
    db = tmp_path / "edge.db"
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA user_version = 1")  # an older schema, as an older daemon left it
    with pytest.raises(StoreError, match="older than this tool"):
        Store(db).open(boot=False, migrate_schema=False)
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
