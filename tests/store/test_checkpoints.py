"""Checkpoints and retention on a real SQLite file: schema change, outbox rule, numbering."""

from __future__ import annotations

import sqlite3
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.cli import main
from edge.domain.clock import Instant
from edge.domain.inputs import RulesApplied
from edge.store import retention
from edge.store.replay import verify
from edge.store.schema import MIGRATIONS
from edge.store.store import JournalEntry, OutboxMessage, Store
from tests.engine.helpers import rules

DAY_MS = retention.DAY_MS
NOW_MS = 1_780_000_000_000  # 2026-05-28


def _old_database(db: Path, version: int = 3) -> None:
    """A database as a gateway before checkpoints left it: schema 3, no auto_vacuum."""
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    for number, script in enumerate(MIGRATIONS[:version], start=1):
        for statement in script.split(";\n"):
            if statement.strip():
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {number}")
    conn.close()


def test_a_database_from_before_checkpoints_opens_and_gets_the_table(tmp_path: Path) -> None:
    db = tmp_path / "edge.db"
    _old_database(db)
    store = Store(db)
    store.open()
    try:
        assert store.conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        tables = {r[0] for r in store.conn.execute("SELECT name FROM sqlite_master")}
        assert {"checkpoint", "event_journal", "outbox_event"} <= tables
        assert retention.auto_vacuum(store) == 0  # left as it was: no VACUUM behind its back
        store.commit([JournalEntry(RulesApplied(rules(), Instant(NOW_MS, 1)), ())], [])
        cp = retention.write_checkpoint(store, Instant(NOW_MS, 2))
        assert cp is not None
        assert cp.journal_id == 1
        assert retention.checkpoints(store) == [cp]
    finally:
        store.close()


def test_a_new_database_is_made_for_incremental_vacuum(tmp_path: Path) -> None:
    store = Store(tmp_path / "edge.db")
    store.open()
    try:
        assert retention.auto_vacuum(store) == 2
    finally:
        store.close()


def _store(path: Path) -> Store:
    store = Store(path)
    store.open()
    store.commit([JournalEntry(RulesApplied(rules(), Instant(NOW_MS - 400 * DAY_MS, 1)), ())], [])
    return store


_STATES = st.sampled_from(["pending", "published", "done"])
_AGES = st.integers(min_value=0, max_value=120)  # days


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    rows=st.lists(st.tuples(_STATES, _AGES), min_size=0, max_size=60),
    keep_days=st.integers(min_value=1, max_value=90),
    limit=st.integers(min_value=1, max_value=7),
)
def test_outbox_pruning_deletes_every_old_done_row_and_nothing_else(
    tmp_path: Path, rows: list[tuple[str, int]], keep_days: int, limit: int
) -> None:
    with tempfile.TemporaryDirectory(dir=tmp_path) as tmp:
        store = _store(Path(tmp) / "edge.db")
        try:
            msgs = [
                OutboxMessage(f"m{i}", "t", "k", "{}", NOW_MS - age * DAY_MS - 1)
                for i, (_, age) in enumerate(rows)
            ]
            entry = JournalEntry(RulesApplied(rules(), Instant(NOW_MS, 2)), (), msgs)
            added = store.commit([entry], [])
            for row, (state, _) in zip(added, rows, strict=True):
                store.conn.execute("UPDATE outbox SET state = ? WHERE seq = ?", (state, row.seq))
            cutoff = NOW_MS - keep_days * DAY_MS
            while retention.prune_outbox_batch(store, cutoff, limit):
                pass
            kept = {r[0] for r in store.conn.execute("SELECT msg_id FROM outbox")}
            for i, (state, age) in enumerate(rows):
                old = NOW_MS - age * DAY_MS - 1 < cutoff
                should_go = state == "done" and old
                assert (f"m{i}" not in kept) == should_go, (state, age, keep_days)
        finally:
            store.close()


def test_numbers_go_on_after_everything_with_them_was_deleted(tmp_path: Path) -> None:
    db = tmp_path / "edge.db"
    store = _store(db)
    msgs = [OutboxMessage(f"m{i}", "t", "k", "{}", NOW_MS - 100 * DAY_MS) for i in range(5)]
    store.commit([JournalEntry(RulesApplied(rules(), Instant(NOW_MS, 2)), (), msgs)], [])
    store.conn.execute("UPDATE outbox SET state = 'done'")
    assert retention.prune_outbox_batch(store, NOW_MS, 100) == 5
    store.close()
    store = Store(db)
    store.open()
    try:
        added = store.commit(
            [
                JournalEntry(
                    RulesApplied(rules(), Instant(NOW_MS, 3)),
                    (),
                    [OutboxMessage("m9", "t", "k", "{}", NOW_MS)],
                )
            ],
            [],
        )
        assert (added[0].seq, added[0].env_seq) == (6, 6)  # not 1 again
    finally:
        store.close()


def _projections_after_replay(store: Store) -> list[tuple[str, str, str]]:
    from edge.store import codec
    from edge.store.replay import replay

    wc = replay(store)[0]
    assert wc is not None
    return [(t, k, doc) for t, rows in codec.all_docs(wc).items() for k, doc in rows.items()]


def test_edge_verify_checks_the_checkpoints_too(tmp_path: Path, capsys: object) -> None:
    db = tmp_path / "edge.db"
    store = _store(db)
    store.commit([], _projections_after_replay(store))
    assert retention.write_checkpoint(store, Instant(NOW_MS, 5)) is not None
    store.close()
    assert main(["verify", "--db", str(db)]) == 0
    # A checkpoint that does not match the journal is found.
    with sqlite3.connect(db) as conn:
        conn.execute(
            "UPDATE checkpoint SET docs = ?",
            (retention.encode_docs({"work_center": {"": "{}"}}),),
        )
    assert main(["verify", "--db", str(db)]) == 1
    store = Store(db)
    store.open(boot=False, migrate_schema=False)
    try:
        assert verify(store) == []  # the projections themselves still equal the journal
    finally:
        store.close()


def test_checkpoints_are_thinned_to_one_a_day_and_cut_where_the_journal_was(
    tmp_path: Path,
) -> None:
    store = _store(tmp_path / "edge.db")
    try:
        made = []
        for i in range(12):  # every 8 hours for 4 days
            at = Instant(NOW_MS + i * 8 * 3_600_000, 1 + i * 8 * 3_600_000)
            store.commit([JournalEntry(RulesApplied(rules(), at), ())], [])
            cp = retention.write_checkpoint(store, at)
            assert cp is not None
            made.append(cp)
        # The journal was cut at the 4th: those before it go; older than a day, one a day.
        deleted = retention.prune_checkpoints(store, made[3])
        left = retention.checkpoints(store)
        assert made[3] in left
        assert made[-1] in left
        assert all(cp.journal_id >= made[3].journal_id for cp in left)
        days = {cp.at_mono_ms // DAY_MS for cp in left if cp not in (made[3], made[-1])}
        old = [cp for cp in left if cp.at_mono_ms < made[-1].at_mono_ms - DAY_MS]
        assert len(old) <= len(days) + 1
        assert deleted == len(made) - len(left)
        assert len(left) < len(made) - 3
    finally:
        store.close()


def test_the_config_section_reaches_the_policy() -> None:
    from edge.app import retention_policy
    from edge.config import load_config

    cfg = load_config(Path(__file__).resolve().parents[2] / "config" / "example.toml")
    policy = retention_policy(cfg)
    # The example shows the defaults (export off; its files would be named after the edge).
    assert policy == retention.RetentionPolicy(export_prefix=f"edge-{cfg.gateway.edge_id}")
    assert policy.journal_keep_ms == 90 * DAY_MS
    assert retention.RetentionPolicy(journal_days=1, command_id_days=7).journal_keep_ms == (
        7 * DAY_MS
    )
