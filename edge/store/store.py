"""The SQLite store: journal, events, outbox and projections, written in one transaction per batch.

One engine task owns the only writing connection and calls it from one dedicated thread, so
SQLite never sees two writers. WAL with ``synchronous=FULL``: when :meth:`Store.commit` returns,
the batch survives a power cut; nothing is acknowledged before that.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from edge.domain.clock import Instant
from edge.domain.core import WorkCenter
from edge.domain.events import Event
from edge.domain.inputs import Input
from edge.errors import StoreError
from edge.store import codec
from edge.store.schema import PROJECTION_TABLES, check_version, migrate


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    """One message for the uplink, decided by the engine when the event was committed."""

    msg_id: str
    topic: str  # relative to the work center's root topic
    kind: str  # event type, or "historian"
    payload: str  # JSON body; the publisher wraps it in the envelope
    at_wall_ms: int
    idem_key: str | None = None
    event_index: int | None = None  # which of the input's events it came from
    enveloped: bool = True  # gets the next envelope seq (time series do not)


@dataclass(slots=True)
class JournalEntry:
    input: Input
    events: tuple[Event, ...]
    outbox: list[OutboxMessage] = field(default_factory=list)
    # Idempotency keys whose relay result arrived: their outbox rows are finished.
    settled: list[str] = field(default_factory=list)
    command_id: str | None = None  # an operator command's client-generated id


@dataclass(frozen=True, slots=True)
class OutboxRow:
    seq: int
    msg_id: str
    topic: str
    kind: str
    idem_key: str | None
    boot_seq: int
    at_wall_ms: int
    payload: str
    state: str
    attempts: int
    env_seq: int | None = None


class Store:
    def __init__(self, path: str | Path, *, synchronous: str = "full") -> None:
        self.path = Path(path)
        self.synchronous = synchronous.upper()
        if self.synchronous not in ("FULL", "NORMAL"):
            raise ValueError(f"synchronous = {synchronous!r}: must be full or normal")
        self._conn: sqlite3.Connection | None = None
        self.boot_seq = 0
        self._next_journal = 1
        self._next_event = 1
        self._next_env_seq = 1
        self._next_seq = 1

    # ------------------------------------------------------------------ lifecycle

    def open(self, *, boot: bool = True, migrate_schema: bool = True) -> None:
        """Open (creating if needed) and migrate; with ``boot``, count this start as a new boot.

        Tools that only look (``edge status``, ``verify``, ``backup``) pass
        ``migrate_schema=False``: a different version of the tool must never change the schema
        of a database the daemon is using; a mismatch is an error instead."""
        try:
            if str(self.path) != ":memory:":
                self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                str(self.path), isolation_level=None, check_same_thread=False, timeout=10
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self.synchronous}")
            conn.execute("PRAGMA foreign_keys=ON")
            if migrate_schema:
                migrate(conn)
            else:
                check_version(conn)
            self._conn = conn
            if boot:
                self._count_boot()
        except (sqlite3.Error, OSError, RuntimeError) as exc:
            raise StoreError(f"cannot open the database {self.path}: {exc}") from exc
        self._reset_ids()

    def _count_boot(self) -> None:
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        row = conn.execute("SELECT value FROM meta WHERE key='boot_seq'").fetchone()
        self.boot_seq = (int(row[0]) if row else 0) + 1
        conn.execute(
            "INSERT INTO meta(key, value) VALUES('boot_seq', ?) "
            "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
            (str(self.boot_seq),),
        )
        conn.execute("COMMIT")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError("the store is not open")
        return self._conn

    def _reset_ids(self) -> None:
        # AUTOINCREMENT's high-water mark: a seq is never given out twice, even after deletes.
        self._next_seq = self.conn.execute(
            "SELECT MAX(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'outbox'), 0), "
            "COALESCE((SELECT MAX(seq) FROM outbox), 0)) + 1"
        ).fetchone()[0]
        self._next_env_seq = self.conn.execute(
            "SELECT COALESCE(MAX(env_seq), 0) + 1 FROM outbox"
        ).fetchone()[0]
        self._next_journal = self.conn.execute(
            "SELECT COALESCE(MAX(id), 0) + 1 FROM journal"
        ).fetchone()[0]
        self._next_event = self.conn.execute(
            "SELECT COALESCE(MAX(id), 0) + 1 FROM event"
        ).fetchone()[0]

    # ------------------------------------------------------------------ reading state

    @contextlib.contextmanager
    def read_snapshot(self) -> Iterator[None]:
        """Reads inside see one committed state, even while another process writes (WAL)."""
        conn = self.conn
        if conn.in_transaction:
            yield
            return
        conn.execute("BEGIN")
        try:
            yield
        finally:
            conn.execute("COMMIT")

    def projection_docs(self) -> dict[str, dict[str, str]]:
        docs: dict[str, dict[str, str]] = {}
        for table in PROJECTION_TABLES:
            rows = self.conn.execute(f"SELECT key, doc FROM {table} ORDER BY key").fetchall()
            docs[table] = dict(rows)
        return docs

    def load(self) -> WorkCenter | None:
        """The work center as the projections hold it (None for a new database)."""
        try:
            return codec.restore(self.projection_docs())
        except ValueError as exc:
            raise StoreError(f"the projections in {self.path} cannot be read: {exc}") from exc

    def last_instant(self) -> Instant | None:
        row = self.conn.execute(
            "SELECT at_wall_ms, at_mono_ms FROM journal ORDER BY id DESC LIMIT 1"
        ).fetchone()
        return Instant(row[0], row[1]) if row else None

    def iter_journal(self, after_id: int = 0) -> Iterator[tuple[int, Input]]:
        cursor = self.conn.execute(
            "SELECT id, input_type, body FROM journal WHERE id > ? ORDER BY id", (after_id,)
        )
        for journal_id, name, body in cursor:
            yield journal_id, codec.decode_input(name, body)

    def command_ids(self) -> set[str]:
        """The ids of every operator command journaled so far (a few per hour at a machine)."""
        rows = self.conn.execute("SELECT command_id FROM journal WHERE command_id IS NOT NULL")
        return {row[0] for row in rows}

    def journal_count(self) -> int:
        count: int = self.conn.execute("SELECT COUNT(*) FROM journal").fetchone()[0]
        return count

    # ------------------------------------------------------------------ the one write

    def commit(
        self, entries: Sequence[JournalEntry], rows: Sequence[tuple[str, str, str | None]]
    ) -> list[OutboxRow]:
        """Write a batch in ONE transaction: journal, events, outbox rows and projection rows.

        On any failure the transaction is rolled back and :class:`StoreError` raised: then
        nothing of the batch is stored and the caller must not acknowledge any of it.
        Returns the outbox rows it added, so the uplink can send them without reading them back.
        """
        conn = self.conn
        journal: list[tuple[object, ...]] = []
        events: list[tuple[object, ...]] = []
        outbox: list[tuple[object, ...]] = []
        jid, eid, env = self._next_journal, self._next_event, self._next_env_seq
        seq = self._next_seq
        added: list[OutboxRow] = []
        for entry in entries:
            name, body = codec.encode_input(entry.input)
            at = entry.input.at
            journal.append(
                (jid, self.boot_seq, at.wall_ms, at.mono_ms, name, body, entry.command_id)
            )
            first_event = eid
            for ev in entry.events:
                events.append(
                    (
                        eid,
                        jid,
                        ev.type.value,
                        ev.at.wall_ms,
                        ev.op,
                        ev.actor,
                        codec.encode_event(ev),
                    )
                )
                eid += 1
            for msg in entry.outbox:
                event_id = first_event + msg.event_index if msg.event_index is not None else None
                env_seq = None
                if msg.enveloped:
                    env_seq, env = env, env + 1
                added.append(
                    OutboxRow(
                        seq,
                        msg.msg_id,
                        msg.topic,
                        msg.kind,
                        msg.idem_key,
                        self.boot_seq,
                        msg.at_wall_ms,
                        msg.payload,
                        "pending",
                        0,
                        env_seq,
                    )
                )
                outbox.append(
                    (
                        seq,
                        env_seq,
                        msg.msg_id,
                        msg.topic,
                        msg.kind,
                        msg.idem_key,
                        event_id,
                        self.boot_seq,
                        msg.at_wall_ms,
                        msg.payload,
                    )
                )
                seq += 1
            jid += 1
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(
                    "INSERT INTO journal(id, boot_seq, at_wall_ms, at_mono_ms, input_type, body, "
                    "command_id) VALUES (?,?,?,?,?,?,?)",
                    journal,
                )
                if events:
                    conn.executemany("INSERT INTO event VALUES (?,?,?,?,?,?,?)", events)
                if outbox:
                    conn.executemany(
                        "INSERT INTO outbox(seq, env_seq, msg_id, topic, kind, idem_key, "
                        "event_id, boot_seq, at_wall_ms, payload) VALUES (?,?,?,?,?,?,?,?,?,?)",
                        outbox,
                    )
                settled = [(k,) for entry in entries for k in entry.settled]
                if settled:
                    conn.executemany(
                        "UPDATE outbox SET state = 'done' WHERE idem_key = ? AND state != 'done'",
                        settled,
                    )
                for table, key, doc in rows:
                    if doc is None:
                        conn.execute(f"DELETE FROM {table} WHERE key = ?", (key,))
                    else:
                        conn.execute(
                            f"INSERT INTO {table}(key, doc) VALUES (?, ?) "
                            "ON CONFLICT(key) DO UPDATE SET doc = excluded.doc",
                            (key, doc),
                        )
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            self._reset_ids()
            raise StoreError(f"commit failed, nothing of the batch was stored: {exc}") from exc
        self._next_journal, self._next_event, self._next_env_seq = jid, eid, env
        self._next_seq = seq
        return added

    # ------------------------------------------------------------------ outbox

    # Row states: 'pending' (to send), 'published' (the broker has it; a confirmation or
    # reversal waits for the relay's result), 'done' (finished).

    def outbox_pending(self, limit: int = 100, after_seq: int = 0) -> list[OutboxRow]:
        """Rows to send, in ``seq`` order, after ``after_seq``."""
        rows = self.conn.execute(
            "SELECT seq, msg_id, topic, kind, idem_key, boot_seq, at_wall_ms, payload, state, "
            "attempts, env_seq FROM outbox WHERE state = 'pending' AND seq > ? "
            "ORDER BY seq LIMIT ?",
            (after_seq, limit),
        ).fetchall()
        return [OutboxRow(*row) for row in rows]

    def outbox_from_env_seq(self, from_seq: int, limit: int) -> list[OutboxRow]:
        """Enveloped rows from ``from_seq`` on, whatever their state (a replay for central)."""
        rows = self.conn.execute(
            "SELECT seq, msg_id, topic, kind, idem_key, boot_seq, at_wall_ms, payload, state, "
            "attempts, env_seq FROM outbox WHERE env_seq >= ? ORDER BY env_seq LIMIT ?",
            (from_seq, limit),
        ).fetchall()
        return [OutboxRow(*row) for row in rows]

    def outbox_depth(self) -> int:
        """Messages not finished: not yet acknowledged by the broker, or awaiting the relay."""
        depth: int = self.conn.execute(
            "SELECT COUNT(*) FROM outbox WHERE state != 'done'"
        ).fetchone()[0]
        return depth

    def outbox_open_counts(self) -> dict[str, int]:
        """Unfinished rows per state ('pending', 'published'); uses the partial index only."""
        rows = self.conn.execute(
            "SELECT state, COUNT(*) FROM outbox WHERE state != 'done' GROUP BY state"
        ).fetchall()
        return {str(state): int(n) for state, n in rows}

    def outbox_oldest_ms(self) -> int | None:
        row = self.conn.execute(
            "SELECT MIN(at_wall_ms) FROM outbox WHERE state != 'done'"
        ).fetchone()
        return int(row[0]) if row and row[0] is not None else None

    def mark_outbox(
        self,
        done: Sequence[int] = (),
        published: Sequence[int] = (),
        refused: Sequence[tuple[int, str]] = (),
    ) -> None:
        """Record broker acknowledgements (and refusals) for sent rows, in one transaction."""
        conn = self.conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(
                    "UPDATE outbox SET state = 'done', attempts = attempts + 1 "
                    "WHERE seq BETWEEN ? AND ?",
                    _runs(done),
                )
                # A relay result can arrive before the broker's PUBACK is recorded here:
                # then the row is done already and stays done.
                conn.executemany(
                    "UPDATE outbox SET state = 'published', attempts = attempts + 1 "
                    "WHERE seq BETWEEN ? AND ? AND state = 'pending'",
                    _runs(published),
                )
                conn.executemany(
                    "UPDATE outbox SET attempts = attempts + 1, last_error = ? WHERE seq = ?",
                    [(why, s) for s, why in refused],
                )
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise StoreError(f"recording acknowledgements failed: {exc}") from exc

    def requeue_published(self, older_than_wall_ms: int | None = None) -> int:
        """Send confirmations again that the relay has not answered (the relay de-duplicates)."""
        sql = "UPDATE outbox SET state = 'pending' WHERE state = 'published'"
        args: tuple[int, ...] = ()
        if older_than_wall_ms is not None:
            sql += " AND at_wall_ms < ?"
            args = (older_than_wall_ms,)
        try:
            cursor = self.conn.execute(sql, args)
        except sqlite3.Error as exc:
            raise StoreError(f"requeueing unanswered confirmations failed: {exc}") from exc
        return cursor.rowcount

    # ------------------------------------------------------------------ operations tools
    # For `edge status`, `edge outbox ...` and `edge backup` (edge/ops.py): they open the store
    # with ``open(boot=False)`` beside a running daemon (WAL: readers never block its commits).

    def stored_boot_seq(self) -> int:
        """The boot counter as stored (``boot_seq`` is 0 on a store opened without a boot)."""
        row = self.conn.execute("SELECT value FROM meta WHERE key='boot_seq'").fetchone()
        return int(row[0]) if row else 0

    def outbox_counts(self) -> dict[str, int]:
        """Rows per state: 'pending', 'published', 'done'."""
        rows = self.conn.execute("SELECT state, COUNT(*) FROM outbox GROUP BY state").fetchall()
        return {str(state): int(n) for state, n in rows}

    def outbox_rows(
        self, states: Sequence[str] = ("pending", "published"), limit: int = 100
    ) -> list[tuple[OutboxRow, str | None]]:
        """Rows in the given states, oldest first, each with its last broker refusal (or None)."""
        marks = ",".join("?" * len(states))
        rows = self.conn.execute(
            "SELECT seq, msg_id, topic, kind, idem_key, boot_seq, at_wall_ms, payload, state, "
            f"attempts, env_seq, last_error FROM outbox WHERE state IN ({marks}) "
            "ORDER BY seq LIMIT ?",
            (*states, limit),
        ).fetchall()
        return [(OutboxRow(*row[:11]), row[11]) for row in rows]

    def outbox_last_acked_ms(self) -> int | None:
        """When the newest message the broker acknowledged was made (PUBACK times are not kept)."""
        row = self.conn.execute(
            "SELECT MAX(at_wall_ms) FROM outbox WHERE state != 'pending' AND attempts > 0"
        ).fetchone()
        return int(row[0]) if row and row[0] is not None else None

    def replay_published(self, seqs: Sequence[int] = ()) -> int:
        """Set 'published' rows (all, or those in ``seqs``) back to 'pending': sent again."""
        if not seqs:
            return self.requeue_published()
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                count = sum(
                    self.conn.execute(
                        "UPDATE outbox SET state = 'pending' WHERE state = 'published' AND seq = ?",
                        (seq,),
                    ).rowcount
                    for seq in seqs
                )
                self.conn.execute("COMMIT")
            except BaseException:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise StoreError(f"replaying outbox rows failed: {exc}") from exc
        return count

    def backup_to(self, dest: str | Path) -> None:
        """A consistent copy of the database in ``dest`` (sqlite3's online backup API).

        One step under one read transaction: in WAL mode that is a snapshot of one committed
        state, and the daemon's commits go on meanwhile (a copy in several steps would start
        over after each of them, and might never finish beside a busy engine).
        """
        try:
            target = sqlite3.connect(str(dest))
            try:
                self.conn.backup(target)
                target.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
            finally:
                target.close()
        except sqlite3.Error as exc:
            raise StoreError(f"backup of {self.path} to {dest} failed: {exc}") from exc


def _runs(seqs: Sequence[int]) -> list[tuple[int, int]]:
    """Consecutive numbers as (first, last) ranges: one UPDATE per run, not per row."""
    runs: list[tuple[int, int]] = []
    for seq in sorted(seqs):
        if runs and seq == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], seq)
        else:
            runs.append((seq, seq))
    return runs
