"""The relay ledger's database, SQLite or PostgreSQL, behind one small async face.

The ledger (:mod:`edge.relay.ledger`) writes one SQL text for both: ``?`` placeholders (the
PostgreSQL driver turns them into ``%s``; no statement of ours has a literal ``?``), ``INSERT
... ON CONFLICT DO NOTHING``, ``UPDATE ... RETURNING`` (SQLite 3.35+), integers for times
(ms since the Unix epoch) and TEXT for JSON. Every statement runs in a :meth:`Db.transaction`:
committed when the block ends, rolled back when it raises.

SQLite (one relay): one connection in a thread of its own (the loop never waits on the disk),
WAL, ``synchronous=FULL`` (a verdict the relay answered is on disk), transactions ``BEGIN
IMMEDIATE`` so a writer never finds the database locked half-way. PostgreSQL (several relays):
:mod:`edge.relay.pg`.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any, Literal, Protocol

Row = dict[str, Any]
Params = Sequence[object]


class Tx(Protocol):
    async def fetch(self, sql: str, params: Params = ()) -> list[Row]: ...

    async def execute(self, sql: str, params: Params = ()) -> int:
        """Run a statement; the number of rows it changed."""
        ...


class Db(Protocol):
    dialect: Literal["sqlite", "postgres"]

    def transaction(self) -> AbstractAsyncContextManager[Tx]:
        """``async with db.transaction() as tx:`` committed at the end, rolled back on error."""
        ...

    async def close(self) -> None: ...


SCHEMA_LOCK = 7_340_215_001  # pg_advisory_xact_lock key: one relay at a time creates tables


async def lock_schema(db: Db, tx: Tx) -> None:
    """Call first in a transaction that creates tables: PostgreSQL's ``CREATE TABLE IF NOT
    EXISTS`` is not safe against itself (two relays starting together on a new database can
    both try, and one fails on a unique index of the catalogue), so they take turns. SQLite's
    ``BEGIN IMMEDIATE`` already serialises writers."""
    if db.dialect == "postgres":
        await tx.fetch("SELECT pg_advisory_xact_lock(?)", (SCHEMA_LOCK,))


class DamagedLedger(Exception):
    """The ledger's database cannot be read as one (not a database, corrupt): refused, never
    replaced."""


class SqliteDb:
    dialect: Literal["sqlite", "postgres"] = "sqlite"

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="relay-ledger")
        self._conn: sqlite3.Connection | None = None
        self._lock = asyncio.Lock()

    async def open(self) -> SqliteDb:
        await self._run(self._open)
        return self

    def _open(self) -> None:
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA busy_timeout=5000")
            problem = conn.execute("PRAGMA quick_check").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            raise DamagedLedger(f"{self.path} is not a readable ledger database: {exc}") from None
        if problem != "ok":
            conn.close()
            raise DamagedLedger(f"{self.path} is damaged: {problem}")
        self._conn = conn

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[_SqliteTx]:
        async with self._lock:
            conn = self._conn
            if conn is None:
                raise RuntimeError("ledger database is closed")
            await self._run(conn.execute, "BEGIN IMMEDIATE")
            try:
                yield _SqliteTx(self, conn)
            except BaseException:
                await asyncio.shield(self._run(conn.execute, "ROLLBACK"))
                raise
            await asyncio.shield(self._run(conn.execute, "COMMIT"))

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await self._run(conn.close)
        self._pool.shutdown(wait=True)


class _SqliteTx:
    def __init__(self, db: SqliteDb, conn: sqlite3.Connection) -> None:
        self._db = db
        self._conn = conn

    async def fetch(self, sql: str, params: Params = ()) -> list[Row]:
        def run() -> list[Row]:
            return [dict(r) for r in self._conn.execute(sql, tuple(params)).fetchall()]

        rows: list[Row] = await self._db._run(run)
        return rows

    async def execute(self, sql: str, params: Params = ()) -> int:
        def run() -> int:
            return self._conn.execute(sql, tuple(params)).rowcount

        count: int = await self._db._run(run)
        return count
