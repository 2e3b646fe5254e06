"""Checkpoints and retention: what lets the database live for years on an SD card.

A checkpoint is the projections as they stood after one journal entry, read in one snapshot
(each commit writes its journal entries and the projections in one transaction, so it is
exactly the state that entry left).
With a checkpoint, the journal and the events before it are no longer needed to rebuild the
state, and can go once they are older than the retention says.

Every function here runs on the store's thread (the engine's writer, ``Engine.run_store``), in
order with the commits; each deleting call is one short transaction of at most ``limit`` rows, so
the writer is never held long. What is deleted and what never is:

- the journal and the events up to the newest checkpoint older than
  ``max(journal_days, command_id_days)``, never the newest journal entry (it carries the last
  instant the clock goes on from, and the journal's numbering);
- an event an outbox row still points at is kept, and with it its journal entry (the foreign
  keys), until the outbox row is gone;
- finished outbox rows (``state = 'done'``) older than ``outbox_days``; a row that is 'pending'
  or 'published' is never deleted, whatever its age or the disk's state;
- checkpoints before the one the journal was cut at; of those older than a day, the newest of
  each day is kept (the newest checkpoint always is);
- rows of operations, confirmations and stops that left memory (``retired_ms`` set, see
  edge.domain.retire) once they left it more than ``finished_days`` ago; a row in memory is
  never deleted here.

With an exporter (``[retention] export_dir``, edge.store.archive) every journal entry, event and
outbox row a batch deletes is handed to it inside the deleting transaction, before the DELETE:
an export that fails rolls the batch back, so nothing is deleted that was not archived.
"""

from __future__ import annotations

import json
import os
import sqlite3
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge.domain.clock import Instant
from edge.errors import StoreError
from edge.store.schema import CHECKPOINT_FORMAT, RETIRING_TABLES
from edge.store.store import Store

DAY_MS = 86_400_000
MB = 1_000_000
RESUME_MARGIN = 0.1  # counts resume at the floor plus 10 %


class DiskLow(StoreError):
    """Machine counts are refused: the database's disk is below ``[retention] min_free_mb``.
    Nothing of the submission was applied; a source keeps it and hands it over again."""


def disk_free_bytes(path: Path) -> int:
    """Free space for an unprivileged writer on the file system of ``path``'s folder."""
    st = os.statvfs(path.parent)
    return st.f_bavail * st.f_frsize


def free_page_bytes(store: Store) -> int:
    """Room inside the database file: its free pages take new rows before it grows."""
    conn = store.conn
    pages: int = conn.execute("PRAGMA freelist_count").fetchone()[0]
    size: int = conn.execute("PRAGMA page_size").fetchone()[0]
    return pages * size


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """``[retention]`` as the engine's maintenance needs it (edge.config builds it)."""

    enabled: bool = True
    checkpoint_interval_s: float = 3600.0
    checkpoint_journal_rows: int = 100_000  # 0: by time only
    journal_days: float = 90.0
    outbox_days: float = 30.0
    command_id_days: float = 7.0
    batch_rows: int = 2000
    vacuum_pages: int = 1024
    # Before deletion, the rows go to a rotating gzip JSON-lines archive (edge.store.archive).
    export_dir: Path | None = None
    export_prefix: str = "edge"  # edge-<edge_id>
    export_max_bytes: int = 64 * 1024 * 1024
    export_keep_files: int = 30
    # Disk watermark: below this much free space for the database, machine counts are refused
    # (after a prune); they are taken again above it plus RESUME_MARGIN. 0: no watermark.
    min_free_mb: float = 256.0
    disk_check_s: float = 10.0
    # Finished operations (with their confirmations and stops) leave memory this long after
    # they ended, once nothing needs them there (edge.domain.retire); their rows stay stored
    # for finished_days after that.
    finished_in_memory_h: float = 72.0
    # ... but at most this many finished operations stay in memory: the oldest leave first.
    finished_in_memory_max: int | None = 50
    finished_days: float = 365.0

    @property
    def finished_keep_ms(self) -> int:
        return round(self.finished_days * DAY_MS)

    @property
    def journal_keep_ms(self) -> int:
        # Command ids live in the journal: the journal is kept at least as long as a duplicate
        # command may still arrive, so that it is still refused.
        return round(max(self.journal_days, self.command_id_days) * DAY_MS)

    @property
    def outbox_keep_ms(self) -> int:
        return round(self.outbox_days * DAY_MS)

    @property
    def floor_bytes(self) -> int:
        return round(self.min_free_mb * MB)

    @property
    def resume_bytes(self) -> int:
        """Counts are taken again from here: a margin above the floor, so that a disk at the
        floor does not flip between refusing and taking at every check."""
        return round(self.floor_bytes * (1 + RESUME_MARGIN))


@dataclass(frozen=True, slots=True)
class Checkpoint:
    id: int
    journal_id: int  # the last journal entry it covers
    at_wall_ms: int
    at_mono_ms: int  # the gateway's monotonic clock (goes on across restarts)


@dataclass(slots=True)
class Pruned:
    """What one retention run deleted."""

    journal: int = 0
    events: int = 0
    outbox: int = 0
    checkpoints: int = 0
    retired: int = 0  # rows of operations, confirmations and stops that had left memory
    largest_batch: int = 0  # rows in the largest single transaction
    command_ids: set[str] = field(default_factory=set)  # of the journal entries that went
    vacuumed_pages: int = 0
    exported: int = 0  # rows written to the archive
    export_failed: str | None = None  # why the run stopped deleting

    def add(self, table: str, rows: int) -> None:
        setattr(self, table, getattr(self, table) + rows)
        self.largest_batch = max(self.largest_batch, rows)


# ---------------------------------------------------------------------- checkpoints


def encode_docs(docs: dict[str, dict[str, str]]) -> bytes:
    # Level 1: a quarter larger than the default level, at less than half its time on a Pi.
    return zlib.compress(json.dumps(docs, separators=(",", ":")).encode(), 1)


def decode_docs(blob: bytes, fmt: int) -> dict[str, dict[str, str]]:
    if fmt != CHECKPOINT_FORMAT:
        raise StoreError(f"checkpoint format {fmt} is not one this gateway reads")
    docs: dict[str, dict[str, str]] = json.loads(zlib.decompress(blob))
    return docs


def checkpoint_snapshot(store: Store) -> tuple[int, dict[str, dict[str, str]]] | None:
    """The newest journal entry and the projections as that entry's commit left them, read
    in one snapshot (each commit writes both in one transaction); None when there is nothing
    new since the newest checkpoint (or no journal at all)."""
    with store.read_snapshot():
        journal_id: int | None = store.conn.execute("SELECT MAX(id) FROM journal").fetchone()[0]
        if journal_id is None:
            return None
        last = newest_checkpoint(store)
        if last is not None and last.journal_id == journal_id:
            return None
        return journal_id, store.projection_docs()


def insert_checkpoint(store: Store, journal_id: int, blob: bytes, at: Instant) -> Checkpoint:
    with store.transaction("writing a checkpoint failed, nothing of it was stored") as conn:
        cursor = conn.execute(
            "INSERT INTO checkpoint(journal_id, at_wall_ms, at_mono_ms, format, docs) "
            "VALUES (?,?,?,?,?)",
            (journal_id, at.wall_ms, at.mono_ms, CHECKPOINT_FORMAT, blob),
        )
        cid = cursor.lastrowid
    assert cid is not None
    return Checkpoint(cid, journal_id, at.wall_ms, at.mono_ms)


def write_checkpoint(store: Store, at: Instant) -> Checkpoint | None:
    """A checkpoint of the projections as they stand now (the newest one if nothing happened
    since; None for an empty journal). The engine does the same in three steps, so that the
    compression does not hold the store's thread (Engine.checkpoint)."""
    snap = checkpoint_snapshot(store)
    if snap is None:
        return newest_checkpoint(store)
    return insert_checkpoint(store, snap[0], encode_docs(snap[1]), at)


def checkpoints(store: Store) -> list[Checkpoint]:
    """Every checkpoint, oldest first (without their docs)."""
    rows = store.conn.execute(
        "SELECT id, journal_id, at_wall_ms, at_mono_ms FROM checkpoint ORDER BY journal_id, id"
    ).fetchall()
    return [Checkpoint(*row) for row in rows]


def newest_checkpoint(store: Store) -> Checkpoint | None:
    row = store.conn.execute(
        "SELECT id, journal_id, at_wall_ms, at_mono_ms FROM checkpoint "
        "ORDER BY journal_id DESC, id DESC LIMIT 1"
    ).fetchone()
    return Checkpoint(*row) if row else None


def checkpoint_docs(store: Store, checkpoint_id: int) -> dict[str, dict[str, str]]:
    row = store.conn.execute(
        "SELECT format, docs FROM checkpoint WHERE id = ?", (checkpoint_id,)
    ).fetchone()
    if row is None:
        raise StoreError(f"no checkpoint {checkpoint_id}")
    try:
        return decode_docs(row[1], row[0])
    except (zlib.error, ValueError) as exc:
        raise StoreError(f"checkpoint {checkpoint_id} cannot be read: {exc}") from exc


def journal_rows_since(store: Store, journal_id: int) -> int:
    """Journal entries after ``journal_id`` (entries are numbered without gaps)."""
    row = store.conn.execute("SELECT MAX(id) FROM journal").fetchone()
    return max(0, (row[0] or 0) - journal_id)


def journal_whole_from(store: Store) -> int:
    """The first entry of the journal's last run without gaps: every entry from there to the
    newest is there (1: the whole journal is). One pass over the journal's ids."""
    row = store.conn.execute(
        "SELECT MAX(id) FROM journal AS j WHERE id > 1 AND NOT EXISTS "
        "(SELECT 1 FROM journal WHERE id = j.id - 1)"
    ).fetchone()
    first = store.conn.execute("SELECT MIN(id) FROM journal").fetchone()[0]
    if row[0] is not None:
        return int(row[0])
    return int(first) if first is not None else 1


# ---------------------------------------------------------------------- retention


def prune_point(store: Store, now: Instant, keep_ms: int) -> Checkpoint | None:
    """The newest checkpoint at least ``keep_ms`` old (by the gateway's monotonic clock, so a
    wall clock that jumps forward never deletes a day early): the journal up to it may go."""
    row = store.conn.execute(
        "SELECT id, journal_id, at_wall_ms, at_mono_ms FROM checkpoint WHERE at_mono_ms <= ? "
        "ORDER BY journal_id DESC, id DESC LIMIT 1",
        (now.mono_ms - keep_ms,),
    ).fetchone()
    return Checkpoint(*row) if row else None


# Called with (table, the column identifying a row, the rows as {column: value}) on the store's
# thread inside the deleting transaction; raises to delete nothing (edge.store.archive).
Exporter = Callable[[str, str, list[dict[str, Any]]], None]


def _dicts(cursor: sqlite3.Cursor) -> list[dict[str, Any]]:
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def _set_floor(conn: sqlite3.Connection, key: str, value: int | None) -> None:
    """The highest number deleted, so that no number is given out again (Store._reset_ids)."""
    if value is None:
        return
    conn.execute(
        "INSERT INTO meta(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE "
        "SET value = MAX(CAST(value AS INTEGER), CAST(excluded.value AS INTEGER))",
        (key, str(value)),
    )


def prune_outbox_batch(
    store: Store, before_wall_ms: int, limit: int, export: Exporter | None = None
) -> int:
    """Delete up to ``limit`` finished outbox rows made before ``before_wall_ms``, each given
    to ``export`` first (in the transaction, before the DELETE: an export that fails deletes
    nothing).

    Only ``state = 'done'``: a pending or published row is never deleted."""
    with store.transaction("pruning the outbox failed, nothing of it was stored") as conn:
        # The partial index outbox_done: only finished rows, oldest first, no table scan.
        cols = "*" if export is not None else "seq, env_seq"
        rows = _dicts(
            conn.execute(
                f"SELECT {cols} FROM outbox WHERE state = 'done' AND at_wall_ms < ? LIMIT ?",
                (before_wall_ms, limit),
            )
        )
        if not rows:
            return 0
        if export is not None:
            export("outbox", "seq", rows)
        _set_floor(conn, "pruned_env_seq", max((r["env_seq"] or 0 for r in rows), default=None))
        seqs = [(r["seq"],) for r in rows]
        conn.executemany("DELETE FROM outbox WHERE seq = ? AND state = 'done'", seqs)
        deleted = len(seqs)
    return deleted


def prune_retired_batch(
    store: Store, table: str, before_wall_ms: int, limit: int, export: Exporter | None = None
) -> int:
    """Delete up to ``limit`` rows of ``table`` (operation, stop, confirmation) that left
    memory before ``before_wall_ms``, each given to ``export`` first (as in
    :func:`prune_outbox_batch`). A row in memory (``retired_ms`` NULL) is never deleted."""
    if table not in RETIRING_TABLES:
        raise ValueError(f"{table!r} is not a table whose rows retire")
    with store.transaction(f"pruning {table} rows failed, nothing of it was stored") as conn:
        rows = _dicts(
            conn.execute(
                f"SELECT key, doc, retired_ms FROM {table} "
                "WHERE retired_ms IS NOT NULL AND retired_ms < ? LIMIT ?",
                (before_wall_ms, limit),
            )
        )
        if not rows:
            return 0
        if export is not None:
            export(table, "key", rows)
        conn.executemany(
            f"DELETE FROM {table} WHERE key = ? AND retired_ms IS NOT NULL",
            [(r["key"],) for r in rows],
        )
    return len(rows)


def prune_events_batch(
    store: Store, upto_journal_id: int, after_id: int, limit: int, export: Exporter | None = None
) -> tuple[int, int]:
    """Delete the events of journal entries up to ``upto_journal_id`` in an id window of
    ``limit`` after ``after_id``, except those an outbox row points at (each given to
    ``export`` first, as in :func:`prune_outbox_batch`).

    Returns (the window's end or 0 when no such events are left, rows deleted)."""
    conn = store.conn
    # The last event of those entries (event_journal), then windows by id: every step is an
    # index lookup, none scans the events that stay.
    row = conn.execute(
        "SELECT id FROM event WHERE journal_id <= ? ORDER BY journal_id DESC, id DESC LIMIT 1",
        (upto_journal_id,),
    ).fetchone()
    first = conn.execute("SELECT MIN(id) FROM event WHERE id > ?", (after_id,)).fetchone()[0]
    if row is None or first is None or first > row[0]:
        return 0, 0
    start = first - 1
    end = min(start + limit, row[0])
    window = "id > ? AND id <= ? AND journal_id <= ?"
    with store.transaction("pruning events failed, nothing of it was stored") as conn:
        highest = conn.execute(
            f"SELECT MAX(id) FROM event WHERE {window}", (start, end, upto_journal_id)
        ).fetchone()[0]
        _set_floor(conn, "pruned_event_id", highest)
        unpinned = "AND NOT EXISTS (SELECT 1 FROM outbox WHERE outbox.event_id = event.id)"
        if export is None:
            deleted = conn.execute(
                f"DELETE FROM event WHERE {window} {unpinned}", (start, end, upto_journal_id)
            ).rowcount
        else:
            rows = _dicts(
                conn.execute(
                    f"SELECT * FROM event WHERE {window} {unpinned} ORDER BY id",
                    (start, end, upto_journal_id),
                )
            )
            if rows:
                export("event", "id", rows)
            conn.executemany("DELETE FROM event WHERE id = ?", [(r["id"],) for r in rows])
            deleted = len(rows)
    return end, deleted


def prune_journal_batch(
    store: Store, upto_journal_id: int, after_id: int, limit: int, export: Exporter | None = None
) -> tuple[int, int, set[str]]:
    """Delete the journal entries in the id window (``after_id``, ``after_id + limit``] up to
    ``upto_journal_id`` that no event belongs to any more, never the newest entry (each given
    to ``export`` first, as in :func:`prune_outbox_batch`).

    Returns (the window's end or 0 when nothing is left, rows deleted, their command ids)."""
    conn = store.conn
    newest = conn.execute("SELECT MAX(id) FROM journal").fetchone()[0] or 0
    upto = min(upto_journal_id, newest - 1)
    row = conn.execute(
        "SELECT MIN(id) FROM journal WHERE id > ? AND id <= ?", (after_id, upto)
    ).fetchone()
    if row[0] is None:
        return 0, 0, set()
    start = row[0] - 1
    end = min(start + limit, upto)
    where = (
        "id > ? AND id <= ? AND NOT EXISTS (SELECT 1 FROM event WHERE event.journal_id = "
        "journal.id)"
    )
    with store.transaction("pruning the journal failed, nothing of it was stored") as conn:
        ids = {
            r[0]
            for r in conn.execute(
                f"SELECT command_id FROM journal WHERE {where} AND command_id IS NOT NULL",
                (start, end),
            )
        }
        _set_floor(conn, "pruned_journal_id", end)
        if export is None:
            deleted = conn.execute(f"DELETE FROM journal WHERE {where}", (start, end)).rowcount
        else:
            rows = _dicts(
                conn.execute(f"SELECT * FROM journal WHERE {where} ORDER BY id", (start, end))
            )
            if rows:
                export("journal", "id", rows)
            conn.executemany("DELETE FROM journal WHERE id = ?", [(r["id"],) for r in rows])
            deleted = len(rows)
    return end, deleted, ids


def prune_checkpoints(store: Store, kept: Checkpoint | None) -> int:
    """Delete the checkpoints before ``kept`` (where the journal was cut, if it was) and, of
    the others older than a day, all but the newest of each day: hourly checkpoints over
    90 days are some 90, not 2000. ``kept`` and the newest one always stay."""
    with store.transaction("pruning checkpoints failed, nothing of it was stored") as conn:
        deleted = 0
        if kept is not None:
            deleted += conn.execute(
                "DELETE FROM checkpoint WHERE journal_id < ? OR (journal_id = ? AND id < ?)",
                (kept.journal_id, kept.journal_id, kept.id),
            ).rowcount
        newest = newest_checkpoint(store)
        if newest is not None:
            deleted += conn.execute(
                "DELETE FROM checkpoint WHERE id != ? AND id != ? AND at_mono_ms < ? "
                "AND id NOT IN (SELECT MAX(id) FROM checkpoint GROUP BY at_mono_ms / ?)",
                (kept.id if kept else -1, newest.id, newest.at_mono_ms - DAY_MS, DAY_MS),
            ).rowcount
    return deleted


def auto_vacuum(store: Store) -> int:
    """0 none, 1 full, 2 incremental (PRAGMA auto_vacuum)."""
    mode: int = store.conn.execute("PRAGMA auto_vacuum").fetchone()[0]
    return mode


def vacuum_step(store: Store, pages: int) -> int:
    """Give up to ``pages`` free pages back to the file system; returns the pages still free."""
    conn = store.conn
    try:
        conn.execute(f"PRAGMA incremental_vacuum({int(pages)})").fetchall()
        free: int = conn.execute("PRAGMA freelist_count").fetchone()[0]
    except sqlite3.Error as exc:
        raise StoreError(f"returning free pages failed: {exc}") from exc
    return free


def free_pages(store: Store) -> int:
    free: int = store.conn.execute("PRAGMA freelist_count").fetchone()[0]
    return free


@dataclass(slots=True)
class RetentionStats:
    """What the maintenance did since the start (totals), and the newest checkpoint."""

    checkpoints_written: int = 0
    journal_pruned: int = 0
    events_pruned: int = 0
    outbox_pruned: int = 0
    checkpoints_pruned: int = 0
    retired_pruned: int = 0  # stored rows of what had left memory, deleted by age
    # Finished operations and stops that left memory since the start (edge.domain.retire).
    ops_retired: int = 0
    stops_retired: int = 0
    pages_returned: int = 0
    runs: int = 0
    failures: int = 0  # maintenance steps that failed (a StoreError; tried again)
    exported: int = 0  # rows written to the archive before their deletion
    export_failures: int = 0  # runs that deleted nothing more because the export failed
    last_checkpoint: Checkpoint | None = None
    # The disk watermark ([retention] min_free_mb): the last measurement and its verdict.
    free_bytes: int | None = None  # the file system's free space plus the database's free pages
    floor_bytes: int = 0  # 0: no watermark
    disk_low: bool = False  # machine counts are refused
    disk_low_since_ms: int | None = None  # wall time it began
    counts_refused: int = 0  # machine-count inputs refused since the start

    def count(self, pruned: Pruned) -> None:
        self.runs += 1
        self.journal_pruned += pruned.journal
        self.events_pruned += pruned.events
        self.outbox_pruned += pruned.outbox
        self.checkpoints_pruned += pruned.checkpoints
        self.retired_pruned += pruned.retired
        self.pages_returned += pruned.vacuumed_pages
        self.exported += pruned.exported
        self.export_failures += pruned.export_failed is not None
