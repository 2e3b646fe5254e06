"""The SQLite schema and its migrations (``PRAGMA user_version`` counts the applied ones).

Projection tables keep each entity as a JSON document (what the core restores from) and expose
the fields people query as generated columns, so ``sqlite3 edge.db "select * from operation"``
is readable at the machine without the gateway.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

MIGRATIONS: tuple[str, ...] = (
    # 1: journal, events, outbox, projections
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);

    -- Every accepted input, in the order the core applied it. Replaying it rebuilds the state.
    CREATE TABLE journal (
        id INTEGER PRIMARY KEY,
        boot_seq INTEGER NOT NULL,
        at_wall_ms INTEGER NOT NULL,
        at_mono_ms INTEGER NOT NULL,
        input_type TEXT NOT NULL,
        body TEXT NOT NULL
    );

    -- What the core decided for each input.
    CREATE TABLE event (
        id INTEGER PRIMARY KEY,
        journal_id INTEGER NOT NULL REFERENCES journal(id),
        type TEXT NOT NULL,
        at_wall_ms INTEGER NOT NULL,
        op TEXT,
        actor TEXT,
        data TEXT NOT NULL
    );
    CREATE INDEX event_op ON event(op) WHERE op IS NOT NULL;

    -- Messages to send. seq is gap-free per edge (AUTOINCREMENT never reuses a number and a
    -- rolled-back transaction takes its numbers back with it).
    CREATE TABLE outbox (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        msg_id TEXT NOT NULL UNIQUE,
        topic TEXT NOT NULL,
        kind TEXT NOT NULL,
        idem_key TEXT,
        event_id INTEGER REFERENCES event(id),
        boot_seq INTEGER NOT NULL,
        at_wall_ms INTEGER NOT NULL,
        payload TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending',
        attempts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT
    );
    CREATE INDEX outbox_pending ON outbox(seq) WHERE state != 'done';

    CREATE TABLE work_center (key TEXT PRIMARY KEY, doc TEXT NOT NULL);

    CREATE TABLE operation (
        key TEXT PRIMARY KEY,
        doc TEXT NOT NULL,
        order_no TEXT GENERATED ALWAYS AS (json_extract(doc, '$.spec.order')) VIRTUAL,
        operation_no TEXT GENERATED ALWAYS AS (json_extract(doc, '$.spec.operation')) VIRTUAL,
        status TEXT GENERATED ALWAYS AS (json_extract(doc, '$.status')) VIRTUAL,
        material TEXT GENERATED ALWAYS AS (json_extract(doc, '$.spec.material')) VIRTUAL,
        target_qty TEXT GENERATED ALWAYS AS (json_extract(doc, '$.spec.target_qty')) VIRTUAL,
        good TEXT GENERATED ALWAYS AS (json_extract(doc, '$.counted.good')) VIRTUAL
    );

    CREATE TABLE counter (
        key TEXT PRIMARY KEY,
        doc TEXT NOT NULL,
        last_value INTEGER GENERATED ALWAYS AS (json_extract(doc, '$.last_value')) VIRTUAL
    );

    CREATE TABLE stop (
        key TEXT PRIMARY KEY,
        doc TEXT NOT NULL,
        start_ms INTEGER GENERATED ALWAYS AS (json_extract(doc, '$.start.wall_ms')) VIRTUAL,
        end_ms INTEGER GENERATED ALWAYS AS (json_extract(doc, '$.end.wall_ms')) VIRTUAL,
        reason TEXT GENERATED ALWAYS AS (json_extract(doc, '$.reason')) VIRTUAL,
        micro INTEGER GENERATED ALWAYS AS (json_extract(doc, '$.micro')) VIRTUAL
    );

    CREATE TABLE confirmation (
        key TEXT PRIMARY KEY,
        doc TEXT NOT NULL,
        status TEXT GENERATED ALWAYS AS (json_extract(doc, '$.status')) VIRTUAL,
        final INTEGER GENERATED ALWAYS AS (json_extract(doc, '$.final')) VIRTUAL,
        reversed INTEGER GENERATED ALWAYS AS (json_extract(doc, '$.reversed')) VIRTUAL,
        idem_key TEXT GENERATED ALWAYS AS (json_extract(doc, '$.idem_key')) VIRTUAL,
        yield_qty TEXT GENERATED ALWAYS AS (json_extract(doc, '$.tally.good')) VIRTUAL
    );

    CREATE TABLE unassigned (key TEXT PRIMARY KEY, doc TEXT NOT NULL);
    """,
    # 2: the envelope's own sequence. Time-series rows share the outbox's order but carry no
    # envelope, so consumers see a gap-free seq over the _mes_v1 messages alone.
    """
    ALTER TABLE outbox ADD COLUMN env_seq INTEGER;
    CREATE UNIQUE INDEX outbox_env_seq ON outbox(env_seq) WHERE env_seq IS NOT NULL;
    """,
    # 3: the client-generated id of an operator command (panel, API), so that a double tap or a
    # resend after a lost answer is recognised, also after a restart.
    """
    ALTER TABLE journal ADD COLUMN command_id TEXT;
    CREATE UNIQUE INDEX journal_command ON journal(command_id) WHERE command_id IS NOT NULL;
    """,
    # 4: checkpoints (edge.store.retention): the projections as they stood after journal entry
    # journal_id, so that the journal before the oldest one kept can be deleted. docs is the
    # JSON {table: {key: doc}} of the projection tables, zlib-compressed; format says how docs
    # is encoded (CHECKPOINT_FORMAT). The indexes make what retention deletes lookups instead
    # of table scans: the foreign-key checks (an event's journal row, an outbox row's event)
    # and the finished outbox rows by age.
    """
    CREATE TABLE checkpoint (
        id INTEGER PRIMARY KEY,
        journal_id INTEGER NOT NULL,
        at_wall_ms INTEGER NOT NULL,
        at_mono_ms INTEGER NOT NULL,
        format INTEGER NOT NULL,
        docs BLOB NOT NULL
    );
    CREATE INDEX checkpoint_journal ON checkpoint(journal_id);
    CREATE INDEX event_journal ON event(journal_id);
    CREATE INDEX outbox_event ON outbox(event_id) WHERE event_id IS NOT NULL;
    CREATE INDEX outbox_done ON outbox(at_wall_ms) WHERE state = 'done';
    """,
    # 5: the shifts' ISO 22400 time elements and parts (edge.domain.kpis), one row per shift
    # (key "2026-03-04/early", or "<day>/unscheduled" for time outside every shift).
    """
    CREATE TABLE shift (
        key TEXT PRIMARY KEY,
        doc TEXT NOT NULL,
        day TEXT GENERATED ALWAYS AS (json_extract(doc, '$.day')) VIRTUAL,
        name TEXT GENERATED ALWAYS AS (json_extract(doc, '$.name')) VIRTUAL,
        good TEXT GENERATED ALWAYS AS (json_extract(doc, '$.good')) VIRTUAL
    );
    """,
    # 6: finished operations, their confirmations and stops leave memory (edge.domain.retire)
    # and their rows stay: retired_ms is the wall time they left (NULL: in memory). The start,
    # the checkpoints and edge verify read the rows in memory only (the *_live indexes); the
    # engine looks a retired row up by its key or idempotency key to name it in a refusal;
    # retention deletes retired rows by age (the *_retired indexes).
    """
    ALTER TABLE operation ADD COLUMN retired_ms INTEGER;
    ALTER TABLE stop ADD COLUMN retired_ms INTEGER;
    ALTER TABLE confirmation ADD COLUMN retired_ms INTEGER;
    CREATE INDEX operation_live ON operation(key) WHERE retired_ms IS NULL;
    CREATE INDEX stop_live ON stop(key) WHERE retired_ms IS NULL;
    CREATE INDEX confirmation_live ON confirmation(key) WHERE retired_ms IS NULL;
    CREATE INDEX operation_retired ON operation(retired_ms) WHERE retired_ms IS NOT NULL;
    CREATE INDEX stop_retired ON stop(retired_ms) WHERE retired_ms IS NOT NULL;
    CREATE INDEX confirmation_retired ON confirmation(retired_ms) WHERE retired_ms IS NOT NULL;
    CREATE INDEX confirmation_idem ON confirmation(idem_key) WHERE retired_ms IS NOT NULL;
    CREATE INDEX confirmation_rev_idem ON confirmation(json_extract(doc, '$.reversal_idem_key'))
        WHERE retired_ms IS NOT NULL;
    """,
    # 7: unassigned production that a supervisor assigned leaves memory the same way.
    """
    ALTER TABLE unassigned ADD COLUMN retired_ms INTEGER;
    CREATE INDEX unassigned_live ON unassigned(key) WHERE retired_ms IS NULL;
    CREATE INDEX unassigned_retired ON unassigned(retired_ms) WHERE retired_ms IS NOT NULL;
    """,
)

# The projection tables whose rows leave memory and stay stored, marked (migrations 6, 7).
RETIRING_TABLES = ("operation", "stop", "confirmation", "unassigned")

# How a checkpoint's docs are encoded: 1 = zlib(JSON of {table: {key: doc}}), each doc as
# codec writes it into the projection tables.
CHECKPOINT_FORMAT = 1

PROJECTION_TABLES = (
    "work_center",
    "operation",
    "counter",
    "stop",
    "confirmation",
    "unassigned",
    "shift",
)


def migrate(conn: sqlite3.Connection) -> int:
    """Apply the migrations the file lacks, each in its own transaction; return the version."""
    version: int = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > len(MIGRATIONS):
        raise RuntimeError(
            f"database schema version {version} is newer than this gateway knows "
            f"({len(MIGRATIONS)}); install the newer gateway version again"
        )
    for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in script.split(";\n"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {number}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return len(MIGRATIONS)


def check_version(conn: sqlite3.Connection) -> None:
    """For tools that must not migrate: the file's schema must be the one this code knows."""
    version: int = conn.execute("PRAGMA user_version").fetchone()[0]
    if version != len(MIGRATIONS):
        newer = "newer" if version > len(MIGRATIONS) else "older"
        raise RuntimeError(
            f"database schema version {version} is {newer} than this tool's "
            f"({len(MIGRATIONS)}); use the same gateway version as the daemon"
        )


@contextmanager
def read_only(db: Path, error: Callable[[str], Exception]) -> Iterator[sqlite3.Connection]:
    """``db`` opened for tools that only read (``edge report``, ``edge trace``): read-only, in
    one snapshot (also while the daemon commits), never created, and of this code's schema
    version. What goes wrong is raised as ``error`` with a text naming the path."""
    if not db.exists():
        raise error(f"{db}: no such database (nothing was created)")
    if not db.is_file():
        raise error(f"{db}: not a database file")
    wal = db.with_name(db.name + "-wal")
    # Without a write-ahead log nobody is writing: immutable keeps SQLite from making one.
    mode = "mode=ro" if wal.exists() else "mode=ro&immutable=1"
    try:
        conn = sqlite3.connect(f"{db.absolute().as_uri()}?{mode}", uri=True)
    except sqlite3.Error as exc:
        raise error(f"{db}: cannot open the database: {exc}") from None
    try:
        conn.execute("PRAGMA query_only = ON")
        conn.execute("BEGIN")
        check_version(conn)
        yield conn
    except sqlite3.DatabaseError as exc:
        raise error(f"{db}: not a readable gateway database: {exc}") from None
    except RuntimeError as exc:
        raise error(f"{db}: {exc}") from None
    finally:
        conn.close()
