"""The relay ledger on PostgreSQL: the :class:`edge.relay.db.Db` face for several relays sharing
one database.

``await PostgresDb(conninfo).open()`` (a libpq conninfo string ``host=... dbname=...`` or a URL
``postgresql://user@host:5432/db``), then ``async with db.transaction() as tx:`` exactly as with
:class:`edge.relay.db.SqliteDb`: the ledger's SQL has ``?`` placeholders, turned here into
psycopg's ``%s`` (a literal ``%`` becomes ``%%``; no statement of ours has a literal ``?``), rows
come back as dicts, the block commits when it ends and rolls back when it raises, cancellation
included (the rollback is shielded, and the connection goes back to the pool only once it is
idle again).

Connections: psycopg 3 async, autocommit at the protocol level, each transaction opened here
with an explicit ``BEGIN ISOLATION LEVEL READ COMMITTED``. A small pool of our own (``pool_size``,
default 4): one connection per transaction, handed out through an :class:`asyncio.Queue`, made
on demand. A connection the server dropped while it sat in the pool (server restarted, idle
timeout, failover) is found at that ``BEGIN`` - before the caller's block has run - and replaced
by a new one in the same transaction; one that breaks later is closed and replaced on the next
transaction, never handed out again. A transaction holds its connection until the block ends:
do not open a second transaction inside the first (with the pool exhausted it would wait for
ever).

Isolation is READ COMMITTED, on purpose. The ledger claims work with a conditional update, ``UPDATE
t SET owner = ? WHERE id = ? AND owner IS NULL RETURNING id``: the second of two concurrent claims
waits for the first's row lock, then re-checks its ``WHERE`` on the committed row and updates
nothing, so exactly one relay wins and the loser simply gets no row back (under REPEATABLE READ
or SERIALIZABLE the loser would get a serialization failure instead). ``INSERT ... ON CONFLICT DO
NOTHING`` likewise waits for a concurrent insert of the same key and then does nothing. Each
statement sees what was committed when it started, not a snapshot of the whole transaction.

Errors:

- :class:`LedgerUnavailable`: the database cannot be reached (connect failed - the message names
  host, port, database and user, never the password - or the connection broke under the
  transaction). Retry later. Raised by the ``COMMIT`` itself the outcome is unknown: the
  transaction may have committed; the ledger's idempotency keys make the retry safe.
- :class:`LedgerConflict`: a serialization failure or a deadlock (SQLSTATE 40001, 40P01). The
  server has rolled the transaction back; the block is the caller's, so it is not retried here:
  run it again.
- anything else from psycopg (a constraint violated, bad SQL) comes through as psycopg raised
  it. Unlike SQLite, after an error PostgreSQL refuses every further statement of the
  transaction: let the block end with the exception. A block that catches the error and ends
  normally gets :class:`TransactionAborted` (nothing committed) rather than a silent rollback.

Differences from SQLite to keep in mind when writing the ledger's one SQL text: parameters are
bound on the server and typed (a Python ``bool`` is not an ``INTEGER``; pass ``int(flag)``), and
placeholders are for values only (not in DDL or ``SET``).

psycopg (the ``postgres`` extra) is imported only when a :class:`PostgresDb` is made (an
:class:`ImportError` then if it is missing), so this module - and its exceptions - can be
imported where only SQLite is used.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Literal

from edge.relay.db import Params, Row

if TYPE_CHECKING:
    from psycopg import AsyncConnection, AsyncCursor

BEGIN = b"BEGIN ISOLATION LEVEL READ COMMITTED"
COMMIT = b"COMMIT"
ROLLBACK = b"ROLLBACK"

# SQLSTATEs the caller retries by running its transaction again.
CONFLICT_STATES = frozenset({"40001", "40P01"})  # serialization_failure, deadlock_detected
# SQLSTATEs meaning the server is not there for us (class 08: connection exceptions; 57P01-03:
# admin/crash shutdown, cannot connect now).
UNAVAILABLE_PREFIXES = ("08", "57P")


class LedgerUnavailable(Exception):
    """The ledger's database cannot be reached, or the connection broke; retry later."""


class LedgerConflict(Exception):
    """A serialization failure or deadlock (SQLSTATE 40001 / 40P01): the transaction was rolled
    back; run it again."""

    def __init__(self, message: str, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


class TransactionAborted(Exception):
    """The block caught a failed statement's error and ended normally: PostgreSQL had already
    aborted the transaction, so nothing was committed (SQLite would have committed the rest)."""


@functools.lru_cache(maxsize=512)
def to_psycopg(sql: str) -> bytes:
    """The ledger's SQL (``?`` placeholders) as psycopg's (``%s``, a literal ``%`` as ``%%``)."""
    return sql.replace("%", "%%").replace("?", "%s").encode("utf-8")


class PostgresDb:
    """The ledger's database on PostgreSQL; see the module's documentation."""

    dialect: Literal["sqlite", "postgres"] = "postgres"

    def __init__(
        self,
        conninfo: str,
        *,
        pool_size: int = 4,
        connect_timeout: float = 5.0,
        application_name: str = "edge-relay",
    ) -> None:
        if pool_size < 1:
            raise ValueError(f"pool_size must be at least 1, not {pool_size}")
        if connect_timeout <= 0:
            raise ValueError(f"connect_timeout must be positive, not {connect_timeout}")
        self.conninfo = conninfo  # may hold the password: log self.where, never this
        self.pool_size = pool_size
        self.connect_timeout = connect_timeout
        self.application_name = application_name
        self._params = _parse(conninfo)
        self.where = _describe(self._params)
        self._slots: asyncio.Queue[AsyncConnection[Row] | None] | None = None
        self._finishing: set[asyncio.Task[None]] = set()
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def __repr__(self) -> str:
        return f"PostgresDb({self.where}, pool_size={self.pool_size})"

    async def open(self) -> PostgresDb:
        """Connect (one connection, to know the database is there); :class:`LedgerUnavailable`
        when it is not. The pool's other connections are made when they are first needed."""
        if self._closed:
            raise RuntimeError("ledger database is closed")
        if self._slots is not None:
            return self
        conn = await self._connect()
        slots: asyncio.Queue[AsyncConnection[Row] | None] = asyncio.Queue()
        slots.put_nowait(conn)
        for _ in range(self.pool_size - 1):
            slots.put_nowait(None)
        self._slots = slots
        return self

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[PostgresTx]:
        """``async with db.transaction() as tx:`` - committed at the end, rolled back when the
        block raises (or is cancelled)."""
        conn = await self._begin()
        tx = PostgresTx(conn)
        try:
            yield tx
        except BaseException:
            tx._done = True
            await self._finish(conn, commit=False)
            raise
        tx._done = True
        await self._finish(conn, commit=True)

    async def close(self) -> None:
        """Close the idle connections now, the busy ones as their transactions end."""
        if self._closed:
            return
        self._closed = True
        if self._finishing:
            await asyncio.gather(*self._finishing, return_exceptions=True)
        slots = self._slots
        while slots is not None and not slots.empty():
            conn = slots.get_nowait()
            if conn is not None:
                await _close_quietly(conn)

    # -- the pool ----------------------------------------------------------------------------

    async def _connect(self) -> AsyncConnection[Row]:
        import psycopg
        from psycopg.conninfo import make_conninfo
        from psycopg.rows import dict_row

        extra: dict[str, str | int] = {"connect_timeout": max(1, math.ceil(self.connect_timeout))}
        if "application_name" not in self._params:
            extra["application_name"] = self.application_name
        try:
            conninfo = make_conninfo(self.conninfo, **extra)
            async with asyncio.timeout(self.connect_timeout + 1.0):
                conn = await psycopg.AsyncConnection.connect(
                    conninfo, autocommit=True, row_factory=dict_row
                )
        except (psycopg.Error, OSError) as exc:  # TimeoutError is an OSError
            detail = _scrub(str(exc).strip() or type(exc).__name__, self._params)
            raise LedgerUnavailable(
                f"cannot connect to the ledger database ({self.where}): {detail}"
            ) from None
        return conn

    async def _begin(self) -> AsyncConnection[Row]:
        """A connection from the pool with a transaction open on it."""
        import psycopg

        slots = self._slots
        if slots is None or self._closed:
            raise RuntimeError("ledger database is closed" if self._closed else "not opened")
        conn = await slots.get()
        if self.closed:  # closed while we waited
            self._put_back(None)  # wakes the next waiter, who finds it closed too
            if conn is not None:
                await _close_quietly(conn)
            raise RuntimeError("ledger database is closed")
        try:
            if conn is not None and _gone(conn):
                await _close_quietly(conn)
                conn = None
            if conn is not None:
                try:
                    await conn.execute(BEGIN)
                    return conn
                except psycopg.Error as exc:
                    if not _gone(conn):
                        raise _translate(exc, conn) from exc
                # Dropped while idle in the pool (server restart, idle timeout): nothing of the
                # caller's has run yet, so a new connection does the same transaction.
                await _close_quietly(conn)
                conn = None
            conn = await self._connect()
            try:
                await conn.execute(BEGIN)
            except psycopg.Error as exc:
                raise _translate(exc, conn) from exc
            return conn
        except BaseException:
            if conn is None:
                self._put_back(None)
            else:
                await self._finish(conn, commit=False)
            raise

    async def _finish(self, conn: AsyncConnection[Row], *, commit: bool) -> None:
        """Commit or roll back, then hand the connection back; in a task of its own, so a
        cancellation of the caller neither interrupts it nor loses the connection."""
        task = asyncio.get_running_loop().create_task(self._end(conn, commit=commit))
        self._finishing.add(task)
        task.add_done_callback(self._finishing.discard)
        await asyncio.shield(task)

    async def _end(self, conn: AsyncConnection[Row], *, commit: bool) -> None:
        import psycopg
        from psycopg.pq import TransactionStatus

        try:
            if commit:
                if conn.info.transaction_status == TransactionStatus.INERROR:
                    # A statement failed and the block caught the error: PostgreSQL would turn
                    # this COMMIT into a ROLLBACK without a word. Say so instead.
                    raise TransactionAborted(
                        "a statement of the ledger transaction failed and the block went on: "
                        "rolled back, nothing was committed"
                    )
                try:
                    cur = await conn.execute(COMMIT)
                except psycopg.Error as exc:
                    raise _translate(exc, conn) from exc
                if cur.statusmessage != "COMMIT":
                    raise TransactionAborted(
                        f"the ledger transaction was not committed (the server said "
                        f"{cur.statusmessage!r})"
                    )
        finally:
            self._put_back(await self._settle(conn))

    async def _settle(self, conn: AsyncConnection[Row]) -> AsyncConnection[Row] | None:
        """``conn`` back to idle (rolled back if need be), or closed and None."""
        import psycopg
        from psycopg.pq import TransactionStatus

        if not _gone(conn) and conn.info.transaction_status != TransactionStatus.IDLE:
            with contextlib.suppress(psycopg.Error):
                await conn.execute(ROLLBACK)
        if self._closed or _gone(conn) or conn.info.transaction_status != TransactionStatus.IDLE:
            await _close_quietly(conn)
            return None
        return conn

    def _put_back(self, conn: AsyncConnection[Row] | None) -> None:
        if self._slots is not None:
            self._slots.put_nowait(conn)


class PostgresTx:
    """One transaction's statements (a :class:`edge.relay.db.Tx`)."""

    def __init__(self, conn: AsyncConnection[Row]) -> None:
        self._conn = conn
        self._done = False

    async def fetch(self, sql: str, params: Params = ()) -> list[Row]:
        """Run a statement; its rows as dicts (``[]`` for one that returns none)."""
        cur = await self._run(sql, params)
        if cur.description is None:
            return []
        return await cur.fetchall()

    async def execute(self, sql: str, params: Params = ()) -> int:
        """Run a statement; the number of rows it changed."""
        cur = await self._run(sql, params)
        return cur.rowcount

    async def _run(self, sql: str, params: Params) -> AsyncCursor[Row]:
        import psycopg

        if self._done:
            raise RuntimeError("the transaction has ended")
        try:
            return await self._conn.execute(to_psycopg(sql), tuple(params))
        except psycopg.Error as exc:
            mapped = _translate(exc, self._conn)
            if mapped is exc:
                raise
            raise mapped from exc


# -- helpers ---------------------------------------------------------------------------------


def _gone(conn: AsyncConnection[Row]) -> bool:
    return conn.closed or conn.broken


async def _close_quietly(conn: AsyncConnection[Row]) -> None:
    with contextlib.suppress(Exception):
        await conn.close()


def _translate(exc: Exception, conn: AsyncConnection[Row]) -> Exception:
    """The exception the caller sees for one psycopg raised."""
    import psycopg

    state = getattr(exc, "sqlstate", None)
    if state in CONFLICT_STATES:
        return LedgerConflict(f"ledger transaction conflict ({state}): {exc}", state)
    if (
        _gone(conn)
        or isinstance(exc, psycopg.InterfaceError)
        or (state is not None and state.startswith(UNAVAILABLE_PREFIXES))
    ):
        return LedgerUnavailable(f"the ledger database connection was lost: {exc}")
    return exc


def _parse(conninfo: str) -> dict[str, str]:
    try:
        from psycopg.conninfo import conninfo_to_dict
    except ImportError:  # pragma: no cover - the postgres extra is missing
        raise ImportError(
            "the PostgreSQL ledger needs psycopg: pip install 'edge-gateway[postgres]'"
        ) from None
    import psycopg

    try:
        params = conninfo_to_dict(conninfo)
    except psycopg.Error:
        # libpq's message may quote the string, password and all: say only that it is bad.
        raise ValueError("the ledger's PostgreSQL connection string cannot be parsed") from None
    return {k: str(v) for k, v in params.items() if v is not None}


def _describe(params: dict[str, str]) -> str:
    """host, port, database and user as libpq will use them; never the password."""

    def get(key: str, env: str, default: str) -> str:
        return params.get(key) or os.environ.get(env) or default

    user = get("user", "PGUSER", "(the login name)")
    return (
        f"host={get('host', 'PGHOST', 'localhost')} port={get('port', 'PGPORT', '5432')} "
        f"dbname={get('dbname', 'PGDATABASE', user)} user={user}"
    )


def _scrub(text: str, params: dict[str, str]) -> str:
    password = params.get("password") or os.environ.get("PGPASSWORD")
    if password:
        text = text.replace(password, "***")
    return text
