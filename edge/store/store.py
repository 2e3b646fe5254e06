"""The SQLite store: journal, events, outbox and projections, written in one transaction per batch.

One engine task owns the only writing connection and calls it from one dedicated thread, so
SQLite never sees two writers. WAL with ``synchronous=FULL``: when :meth:`Store.commit` returns,
the batch survives a power cut; nothing is acknowledged before that.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sqlite3
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from edge.domain.clock import Instant
from edge.domain.core import WorkCenter
from edge.domain.events import Event
from edge.domain.inputs import Input
from edge.domain.model import Operation, Stop, UnassignedProduction
from edge.errors import StoreError, StoreRefused
from edge.store import codec, integrity
from edge.store.identity import (
    ClockAnchor,
    Identity,
    identity_path,
    now_iso,
    read_identity,
    write_identity,
)
from edge.store.schema import PROJECTION_TABLES, RETIRING_TABLES, check_version, migrate

log = structlog.get_logger("edge.store")

# PRAGMA quick_check at start reads every page once: about a second per 100 MB on an SD card.
QUICK_CHECK_TIMEOUT_S = 60.0


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
    # (type name, JSON body) for the journal, when the engine encoded it already
    encoded: tuple[str, str] | None = None


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


class _Corrupt(Exception):
    """The database files are damaged (found at start); the text says how."""


class Store:
    def __init__(
        self,
        path: str | Path,
        *,
        synchronous: str = "full",
        new_database: bool = False,
        check_timeout_s: float = QUICK_CHECK_TIMEOUT_S,
    ) -> None:
        self.path = Path(path)
        self.synchronous = synchronous.upper()
        if self.synchronous not in ("FULL", "NORMAL"):
            raise ValueError(f"synchronous = {synchronous!r}: must be full or normal")
        # Start an empty database where the identity file says one existed (edge run
        # --new-database); a database that is there is never replaced.
        self.new_database = new_database
        self.check_timeout_s = check_timeout_s
        self._conn: sqlite3.Connection | None = None
        self.boot_seq = 0
        self.db_id = ""
        self.key_epoch = 0  # the database generation (WorkCenterRules.key_epoch)
        # The identity file as the previous run left it (None on a first start).
        self.previous_identity: Identity | None = None
        self.clock_anchor: ClockAnchor | None = None
        self._keeps_identity = False
        self._started_new = False  # a new database where the identity file names another
        self._next_journal = 1
        self._next_event = 1
        self._next_env_seq = 1
        self._next_seq = 1

    # ------------------------------------------------------------------ lifecycle

    def open(self, *, boot: bool = True, migrate_schema: bool = True) -> None:
        """Open (creating if needed) and migrate; with ``boot``, count this start as a new boot.

        Tools that only look (``edge status``, ``verify``, ``backup``) pass
        ``migrate_schema=False``: a different version of the tool must never change the schema
        of a database the daemon is using; a mismatch is an error instead.

        With ``boot`` (the daemon) the files are checked first (see :mod:`edge.store.integrity`)
        and the identity file beside the database is read and rewritten: a lost database or a
        damaged one raises :class:`StoreRefused` with what happened and how to recover.
        """
        daemon = boot and str(self.path) != ":memory:"
        for _attempt in range(2):
            try:
                self._open_once(boot=boot, migrate_schema=migrate_schema, daemon=daemon)
                return
            except _Corrupt as damage:
                self._refuse_damaged(str(damage))  # returns only with new_database
        raise StoreError(f"cannot open the database {self.path}")  # pragma: no cover

    def _open_once(self, *, boot: bool, migrate_schema: bool, daemon: bool) -> None:
        if daemon:
            self._preflight()
        conn: sqlite3.Connection | None = None
        try:
            if str(self.path) != ":memory:":
                self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                str(self.path), isolation_level=None, check_same_thread=False, timeout=10
            )
            if migrate_schema:
                # A new database gives the pages retention frees back to the file system
                # (PRAGMA incremental_vacuum). SQLite takes this only before the first table
                # and before journal_mode=WAL writes the header; on an existing database it
                # changes nothing (that would take a VACUUM, see edge.store.retention).
                conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self.synchronous}")
            conn.execute("PRAGMA foreign_keys=ON")
            if daemon:
                self._quick_check(conn)
            if migrate_schema:
                migrate(conn)
            else:
                check_version(conn)
            self._conn = conn
            if boot:
                self._count_boot()
            else:
                self._read_key_epoch()
            self._reset_ids()
            if daemon:
                self._check_against_identity()
                # Rewritten by record_clock, which the engine calls right after opening.
                self._keeps_identity = True
        except (sqlite3.Error, OSError, RuntimeError) as exc:
            self._abandon(conn)
            if daemon and integrity.is_corruption(exc):
                raise _Corrupt(f"SQLite reports: {exc}") from exc
            raise StoreError(
                f"cannot open the database {self.path}: {integrity.explain(exc, self.path)}"
            ) from exc
        except BaseException:
            self._abandon(conn)
            raise

    def _abandon(self, conn: sqlite3.Connection | None) -> None:
        self._conn = None
        self._keeps_identity = False
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.close()

    def _preflight(self) -> None:
        """Before SQLite touches the files: is it a database, is it the one we ran on?"""
        path = self.path
        if path.is_dir():
            raise StoreRefused(
                f"{path} is a directory, not a database file: [store] path must name a file "
                f"(for example {path / 'edge.db'}); nothing was started"
            )
        try:
            self.previous_identity = read_identity(path)
        except ValueError as exc:
            log.warning("the identity file is unreadable; it is written anew", error=str(exc))
            self.previous_identity = None
        try:
            size = path.stat().st_size
        except (FileNotFoundError, NotADirectoryError):
            size = -1
        except OSError as exc:
            raise StoreError(f"cannot open the database {path}: {exc}") from exc
        if size <= 0:
            if self.previous_identity is None and size < 0:
                return  # the first start ever: a new database
            if not self.new_database:
                raise StoreRefused(self._lost_message(size))
            self._started_new = True
            log.warning(
                "starting a new, empty database as asked (--new-database)",
                db=str(path),
                previous_db_id=self.previous_identity.db_id if self.previous_identity else None,
                previous_boot_seq=(
                    self.previous_identity.boot_seq if self.previous_identity else None
                ),
            )
            return
        if self.new_database:
            log.warning(
                "--new-database given, but the database exists: it is used, nothing is replaced",
                db=str(path),
            )
        try:
            wal = integrity.check_wal(path)
            problem = integrity.check_header(path, wal)
        except OSError as exc:
            raise StoreError(
                f"cannot open the database {path}: {integrity.explain(exc, path)}"
            ) from exc
        if problem is not None:
            raise _Corrupt(problem)
        if wal is None:
            return
        if wal.damage is not None:
            raise _Corrupt(
                f"its write-ahead log {integrity.wal_path(path).name} is damaged: {wal.damage}"
            )
        if wal.warning is not None:
            kept = integrity.wal_path(path).with_name(
                f"{path.name}-wal.damaged-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
            )
            shutil.copy2(integrity.wal_path(path), kept)
            log.warning(
                f"the write-ahead log is damaged at its end: {wal.warning}; a copy is kept",
                db=str(path),
                copy=str(kept),
            )
        elif not wal.empty:
            log.info(
                "recovering committed transactions from the write-ahead log",
                db=str(path),
                frames=wal.frames_valid,
                uncommitted_frames=wal.tail_uncommitted,
            )

    def _lost_message(self, size: int) -> str:
        path = self.path
        what = "is missing" if size < 0 else "is empty (0 bytes)"
        prev = self.previous_identity
        if prev is not None:
            before = (
                f"but a gateway ran here before: {identity_path(path)} records database "
                f"{prev.db_id} at boot {prev.boot_seq}, journal entry {prev.journal_id}, "
                f"outbox seq {prev.outbox_seq} (written {prev.written_at})"
            )
        else:
            before = "and an empty file is not what a first start leaves"
        return (
            f"the database {path} {what}, {before}. A new database would start the history, "
            "the boot and message numbers and the idempotency keys over, and the ERP could take "
            "new confirmations for ones already posted; nothing was started. To recover: "
            f"restore the newest copy made by `edge backup` to {path} (owned by the service "
            "user) and start again; if the data is gone for good (or this is a new "
            "installation), start once with `edge run --new-database`."
        )

    def _refuse_damaged(self, problem: str) -> None:
        """Move the damaged files aside; refuse, unless a new database was asked for."""
        path = self.path
        moved = integrity.move_aside(path)
        if self.previous_identity is None:
            # So that the next start does not take the missing file for a first start.
            with contextlib.suppress(OSError):
                write_identity(
                    path,
                    Identity("unknown", 0, 0, 0, now_iso(), extra={"moved_aside": str(moved[0])}),
                )
        log.error(
            "the database is damaged; its files were moved aside",
            db=str(path),
            problem=problem,
            moved_to=[str(m) for m in moved],
        )
        first = moved[0] if moved else path
        if self.new_database:
            log.warning("starting a new, empty database as asked (--new-database)", db=str(path))
            self._started_new = True
            return
        raise StoreRefused(
            f"the database {path} is damaged: {problem}. The gateway does not run on a damaged "
            "database and never replaces one by itself: its files were moved aside to "
            f"{', '.join(str(m) for m in moved)}; nothing was started. To recover: restore "
            f"the newest copy made by `edge backup` to {path} and start again; or rescue what "
            f"can be read with `sqlite3 {first} .recover | sqlite3 {path}` and check it with "
            "`edge verify`; or start an empty database with `edge run --new-database` (the "
            "history, the numbers and the idempotency keys start over: tell central IT)."
        )

    def _quick_check(self, conn: sqlite3.Connection) -> None:
        """``PRAGMA quick_check``, given up (with a warning) after ``check_timeout_s``."""
        started = time.monotonic()
        deadline = started + self.check_timeout_s
        timed_out = False

        def progress() -> int:
            nonlocal timed_out
            if time.monotonic() > deadline:
                timed_out = True
                return 1
            return 0

        conn.set_progress_handler(progress, 10_000)
        try:
            rows = conn.execute("PRAGMA quick_check(20)").fetchall()
        except sqlite3.OperationalError:
            if not timed_out:
                raise
            log.warning(
                "the database check did not finish in time; starting without it",
                db=str(self.path),
                check="quick_check",
                took_ms=round((time.monotonic() - started) * 1000),
            )
            return
        finally:
            conn.set_progress_handler(None, 0)
        took_ms = round((time.monotonic() - started) * 1000, 1)
        result = [str(r[0]) for r in rows]
        if result != ["ok"]:
            raise _Corrupt(f"PRAGMA quick_check reports: {'; '.join(result[:5])}")
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        log.info(
            "database checked",
            db=str(self.path),
            check="quick_check",
            took_ms=took_ms,
            pages=pages,
        )

    def _count_boot(self) -> None:
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        row = conn.execute("SELECT value FROM meta WHERE key='boot_seq'").fetchone()
        stored = int(row[0]) if row else 0
        previous = self.previous_identity.boot_seq if self.previous_identity else 0
        # Boot numbers never repeat on this gateway, not even on a restored or new database.
        self.boot_seq = max(stored, previous) + 1
        conn.execute(
            "INSERT INTO meta(key, value) VALUES('boot_seq', ?) "
            "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
            (str(self.boot_seq),),
        )
        conn.execute(
            "INSERT INTO meta(key, value) VALUES('db_id', ?) ON CONFLICT(key) DO NOTHING",
            (uuid.uuid4().hex,),
        )
        # A new database where one existed before is the next generation of idempotency keys:
        # its confirmation #1 of a re-dispatched operation must not be taken for the old #1.
        epoch = 0
        if self._started_new and self.previous_identity is not None:
            epoch = _int(self.previous_identity.extra.get("key_epoch"), 0) + 1
        conn.execute(
            "INSERT INTO meta(key, value) VALUES('key_epoch', ?) ON CONFLICT(key) DO NOTHING",
            (str(epoch),),
        )
        conn.execute("COMMIT")
        self.db_id = conn.execute("SELECT value FROM meta WHERE key='db_id'").fetchone()[0]
        self._read_key_epoch()

    def _read_key_epoch(self) -> None:
        row = self.conn.execute("SELECT value FROM meta WHERE key='key_epoch'").fetchone()
        self.key_epoch = _int(row[0] if row else None, 0)

    def _check_against_identity(self) -> None:
        """Say so when the database is not the one the identity file names, or is behind it."""
        prev = self.previous_identity
        if prev is None or prev.db_id == "unknown" or self._started_new:
            return
        journal = self._next_journal - 1
        if prev.db_id != self.db_id:
            log.warning(
                "this is not the database the gateway last ran on",
                db=str(self.path),
                db_id=self.db_id,
                previous_db_id=prev.db_id,
                previous_journal_id=prev.journal_id,
            )
        elif journal < prev.journal_id or self._next_seq - 1 < prev.outbox_seq:
            log.warning(
                "the database is behind the one the gateway last ran on (a restored copy?): "
                "what came after the copy is lost, and confirmations after it may be made "
                "again; compare with the ERP",
                db=str(self.path),
                journal_id=journal,
                previous_journal_id=prev.journal_id,
                outbox_seq=self._next_seq - 1,
                previous_outbox_seq=prev.outbox_seq,
            )

    def write_identity(self) -> None:
        """Record this database in its identity file (done at open, close and clock start)."""
        if not self._keeps_identity:
            return
        write_identity(
            self.path,
            Identity(
                self.db_id,
                self.boot_seq,
                self._next_journal - 1,
                self._next_seq - 1,
                now_iso(),
                self.clock_anchor,
                {"key_epoch": str(self.key_epoch)},
            ),
        )

    def record_clock(self, anchor: ClockAnchor) -> None:
        """Keep where this run's monotonic clock stands, for the next start (edge.clock)."""
        self.clock_anchor = anchor
        try:
            self.write_identity()
        except OSError as exc:
            raise StoreError(
                f"cannot write {identity_path(self.path)}: {integrity.explain(exc, self.path)}"
            ) from exc

    def close(self) -> None:
        if self._conn is not None:
            if self._keeps_identity:
                try:
                    self.write_identity()
                except OSError as exc:
                    log.warning("cannot update the identity file", error=str(exc))
                self._keeps_identity = False
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
        # Retention (edge.store.retention) records the highest number it deleted in meta:
        # numbers go on after it even when every row that had one is gone.
        floors = {
            key: _int(value, 0)
            for key, value in self.conn.execute(
                "SELECT key, value FROM meta WHERE key IN "
                "('pruned_env_seq', 'pruned_journal_id', 'pruned_event_id')"
            )
        }
        self._next_env_seq = self.conn.execute(
            "SELECT MAX(COALESCE(MAX(env_seq), 0), ?) + 1 FROM outbox",
            (floors.get("pruned_env_seq", 0),),
        ).fetchone()[0]
        self._next_journal = self.conn.execute(
            "SELECT MAX(COALESCE(MAX(id), 0), ?) + 1 FROM journal",
            (floors.get("pruned_journal_id", 0),),
        ).fetchone()[0]
        self._next_event = self.conn.execute(
            "SELECT MAX(COALESCE(MAX(id), 0), ?) + 1 FROM event",
            (floors.get("pruned_event_id", 0),),
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
        """Every projection row of what is in memory: rows that left it (``retired_ms`` set,
        edge.domain.retire) stay stored but are neither loaded nor checkpointed."""
        docs: dict[str, dict[str, str]] = {}
        for table in PROJECTION_TABLES:
            live = " WHERE retired_ms IS NULL" if table in RETIRING_TABLES else ""
            rows = self.conn.execute(f"SELECT key, doc FROM {table}{live} ORDER BY key").fetchall()
            docs[table] = dict(rows)
        return docs

    def retired_docs(self, table: str, keys: Sequence[str]) -> dict[str, tuple[str, int]]:
        """The retired rows of ``table`` among ``keys``: key -> (doc, retired_ms)."""
        if table not in RETIRING_TABLES:
            raise ValueError(f"{table!r} is not a table whose rows retire")
        found: dict[str, tuple[str, int]] = {}
        for i in range(0, len(keys), 500):
            part = keys[i : i + 500]
            marks = ",".join("?" * len(part))
            for key, doc, at in self.conn.execute(
                f"SELECT key, doc, retired_ms FROM {table} "
                f"WHERE key IN ({marks}) AND retired_ms IS NOT NULL",
                tuple(part),
            ):
                found[key] = (doc, at)
        return found

    def retired_counts(self) -> dict[str, int]:
        """Rows that left memory and stay stored, per table."""
        return {
            table: int(
                self.conn.execute(
                    f"SELECT COUNT(*) FROM {table} WHERE retired_ms IS NOT NULL"
                ).fetchone()[0]
            )
            for table in RETIRING_TABLES
        }

    def left_memory(self, table: str, key: str) -> tuple[dict[str, Any], int] | None:
        """The stored row of an operation, stop or confirmation that left memory (its doc and
        when it left), or None: for naming it in a refusal."""
        if table not in RETIRING_TABLES:
            raise ValueError(f"{table!r} is not a table whose rows retire")
        row = self.conn.execute(
            f"SELECT doc, retired_ms FROM {table} WHERE key = ? AND retired_ms IS NOT NULL",
            (key,),
        ).fetchone()
        return (json.loads(row[0]), int(row[1])) if row else None

    def retired_confirmation(self, idem_key: str) -> tuple[dict[str, Any], int, bool] | None:
        """The retired confirmation a relay verdict's ``idem_key`` names (its current key, or
        its reversal's): (doc, retired_ms, is the reversal), or None."""
        row = self.conn.execute(
            "SELECT doc, retired_ms, 0 FROM confirmation WHERE idem_key = ? "
            "AND retired_ms IS NOT NULL UNION ALL "
            "SELECT doc, retired_ms, 1 FROM confirmation "
            "WHERE json_extract(doc, '$.reversal_idem_key') = ? AND retired_ms IS NOT NULL "
            "LIMIT 1",
            (idem_key, idem_key),
        ).fetchone()
        return (json.loads(row[0]), int(row[1]), bool(row[2])) if row else None

    def stored_operations(self, keys: Sequence[str]) -> set[str]:
        """Which of ``keys`` have a row in the operation table (in memory or not)."""
        found: set[str] = set()
        for i in range(0, len(keys), 500):
            part = keys[i : i + 500]
            marks = ",".join("?" * len(part))
            found.update(
                r[0]
                for r in self.conn.execute(
                    f"SELECT key FROM operation WHERE key IN ({marks})", tuple(part)
                )
            )
        return found

    def ops_in_outbox(self) -> set[str]:
        """The operations an unfinished outbox row is about (one not yet acknowledged by the
        broker, or a confirmation awaiting the relay): they stay in memory."""
        rows = self.conn.execute(
            "SELECT DISTINCT event.op FROM outbox JOIN event ON event.id = outbox.event_id "
            "WHERE outbox.state != 'done' AND event.op IS NOT NULL"
        )
        return {str(r[0]) for r in rows}

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

    def iter_journal(
        self, after_id: int = 0, upto_id: int | None = None
    ) -> Iterator[tuple[int, Input]]:
        """The journal's inputs after ``after_id`` (up to ``upto_id``), in order."""
        cursor = self.conn.execute(
            "SELECT id, input_type, body FROM journal WHERE id > ? AND id <= ? ORDER BY id",
            (after_id, upto_id if upto_id is not None else 2**63 - 1),
        )
        for journal_id, name, body in cursor:
            yield journal_id, codec.decode_input(name, body)

    def command_ids(self) -> set[str]:
        """The ids of the operator commands (and downlink msg_ids) the journal holds: every one
        journaled within the retention (edge.store.retention keeps at least command_id_days)."""
        rows = self.conn.execute("SELECT command_id FROM journal WHERE command_id IS NOT NULL")
        return {row[0] for row in rows}

    def journal_count(self) -> int:
        count: int = self.conn.execute("SELECT COUNT(*) FROM journal").fetchone()[0]
        return count

    # ------------------------------------------------------------------ the one write

    def commit(
        self,
        entries: Sequence[JournalEntry],
        rows: Sequence[tuple[str, str, str | None]],
        retired: Sequence[tuple[str, str, str, int]] = (),
    ) -> list[OutboxRow]:
        """Write a batch in ONE transaction: journal, events, outbox rows and projection rows.

        ``rows`` are (table, key, doc) of what is in memory (doc None: it is gone, delete the
        row); ``retired`` are (table, key, doc, wall ms) of rows that left memory: written
        one last time and marked, never deleted here (see :func:`retired_rows`).

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
            name, body = entry.encoded or codec.encode_input(entry.input)
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
                        if table in RETIRING_TABLES:
                            # Back in memory. Not in the upsert: a SET of retired_ms, even to
                            # the NULL it was, rewrites its partial indexes' pages at every
                            # commit (a page more written per operation row, SD-card wear);
                            # this finds the row by its key and writes only when it was gone.
                            conn.execute(
                                f"UPDATE {table} SET retired_ms = NULL "
                                "WHERE key = ? AND retired_ms IS NOT NULL",
                                (key,),
                            )
                for table, key, doc, at_ms in retired:
                    conn.execute(
                        f"INSERT INTO {table}(key, doc, retired_ms) VALUES (?, ?, ?) "
                        "ON CONFLICT(key) DO UPDATE SET doc = excluded.doc, "
                        "retired_ms = excluded.retired_ms",
                        (key, doc, at_ms),
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
        with self.transaction("recording acknowledgements failed") as conn:
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
        with self.transaction("replaying outbox rows failed") as conn:
            return sum(
                conn.execute(
                    "UPDATE outbox SET state = 'pending' WHERE state = 'published' AND seq = ?",
                    (seq,),
                ).rowcount
                for seq in seqs
            )

    @contextlib.contextmanager
    def transaction(self, failed: str) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT, rolled back on any error; an SQLite error is raised as
        ``StoreError("<failed>: <the error>")``."""
        conn = self.conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise StoreError(f"{failed}: {exc}") from exc

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


def retired_rows(wc: WorkCenter) -> list[tuple[str, str, str, int]]:
    """What left memory in ``wc`` since the last call, as rows for :meth:`Store.commit`:
    (table, key, the entity's doc as it was, the wall ms it left), in key order. Each doc is
    the one ``codec.entity_doc`` writes for the entity (asked of a holder with it alone)."""
    taken = wc.take_retired()
    if not taken:
        return []
    holder = WorkCenter(wc.rules)
    for (_table, key), (entity, _) in taken.items():
        if isinstance(entity, Operation):
            holder.operations[entity.key] = entity
        elif isinstance(entity, Stop):
            holder.stops[key] = entity
        elif isinstance(entity, UnassignedProduction):
            holder.unassigned[key] = entity
        else:
            holder.confirmations[key] = entity
    out: list[tuple[str, str, str, int]] = []
    for (table, key), (_, at) in sorted(taken.items()):
        doc = codec.entity_doc(holder, table, key)
        assert doc is not None
        out.append((table, key, doc, at.wall_ms))
    return out


def _runs(seqs: Sequence[int]) -> list[tuple[int, int]]:
    """Consecutive numbers as (first, last) ranges: one UPDATE per run, not per row."""
    runs: list[tuple[int, int]] = []
    for seq in sorted(seqs):
        if runs and seq == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], seq)
        else:
            runs.append((seq, seq))
    return runs


def _int(text: str | None, default: int) -> int:
    try:
        return int(text) if text is not None else default
    except ValueError:
        return default
