"""The ledger's database drivers against real databases: PostgreSQL (a private cluster,
tests/pg.py) and SQLite, for the SQL the ledger writes once for both.

The first part runs every check on both drivers (``db`` is parametrized); the second is about
PostgreSQL alone: two relays racing for a claim, deadlocks and serialization failures, the pool,
cancellation in the middle of a query, a server restarted or crashed under the driver, and
connection failures that must name the server but never the password.
"""

from __future__ import annotations

import asyncio
import random
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from edge.relay.db import Db, SqliteDb
from edge.relay.pg import (
    LedgerConflict,
    LedgerUnavailable,
    PostgresDb,
    TransactionAborted,
    to_psycopg,
)
from tests.pg import PostgresCluster, free_port

pytestmark = pytest.mark.timeout(15)

SCHEMA = "CREATE TABLE t (id TEXT PRIMARY KEY, owner TEXT, n INTEGER NOT NULL DEFAULT 0, note TEXT)"
CLAIM = "UPDATE t SET owner = ? WHERE id = ? AND owner IS NULL RETURNING id"

Opener = Callable[[], Awaitable[Db]]


@pytest.fixture(params=["sqlite", "postgres"])
async def open_db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Opener]:
    """Opens a driver on one database (each call another driver on the same database: two
    relays); the table ``t`` exists; all are closed at the end."""
    opened: list[Db] = []
    if request.param == "sqlite":
        path = tmp_path / "ledger.db"

        async def opener() -> Db:
            db = await SqliteDb(path).open()
            opened.append(db)
            return db
    else:
        dsn: str = request.getfixturevalue("pg_dsn")

        async def opener() -> Db:
            db = await PostgresDb(dsn).open()
            opened.append(db)
            return db

    first = await opener()
    async with first.transaction() as tx:
        await tx.execute(SCHEMA)
    yield opener
    for db in opened:
        await db.close()


@pytest.fixture
async def db(open_db: Opener) -> Db:
    return await open_db()


@pytest.fixture
async def pg(pg_dsn: str) -> AsyncIterator[PostgresDb]:
    db = await PostgresDb(pg_dsn).open()
    async with db.transaction() as tx:
        await tx.execute(SCHEMA)
    yield db
    await db.close()


async def count(db: Db, where: str = "1 = 1", params: tuple[object, ...] = ()) -> int:
    async with db.transaction() as tx:
        rows = await tx.fetch(f"SELECT COUNT(*) AS c FROM t WHERE {where}", params)
    return int(rows[0]["c"])


class Boom(Exception):
    pass


# -- both drivers --------------------------------------------------------------------------------


async def test_placeholders_and_a_literal_percent(db: Db) -> None:
    async with db.transaction() as tx:
        assert await tx.execute("INSERT INTO t (id, note) VALUES (?, ?)", ("a", "50% off")) == 1
        await tx.execute("INSERT INTO t (id, note) VALUES (?, ?)", ("b", "full price"))
        rows = await tx.fetch(
            "SELECT id, note, '100%' AS pct FROM t WHERE note LIKE '%off' AND id = ?", ("a",)
        )
        assert rows == [{"id": "a", "note": "50% off", "pct": "100%"}]
        # a percent sign in a parameter is data, and no parameters at all still unescapes
        rows = await tx.fetch("SELECT id FROM t WHERE note LIKE ? ORDER BY id", ("%o%",))
        assert [r["id"] for r in rows] == ["a"]
        assert await tx.fetch("SELECT 'x%y' AS v") == [{"v": "x%y"}]


async def test_rows_are_dicts_keyed_by_column(db: Db) -> None:
    async with db.transaction() as tx:
        await tx.execute("INSERT INTO t (id, owner, n) VALUES (?, ?, ?)", ("k", None, 7))
        rows = await tx.fetch("SELECT id, owner, n, note FROM t")
        assert rows == [{"id": "k", "owner": None, "n": 7, "note": None}]
        assert type(rows[0]) is dict
        assert await tx.fetch("SELECT id FROM t WHERE id = ?", ("missing",)) == []
        # a statement that returns no rows, run with fetch
        assert await tx.fetch("UPDATE t SET n = n + 1 WHERE id = ?", ("k",)) == []
        assert (await tx.fetch("SELECT n FROM t"))[0]["n"] == 8


async def test_the_block_commits_and_another_connection_sees_it(open_db: Opener) -> None:
    one, two = await open_db(), await open_db()
    async with one.transaction() as tx:
        await tx.execute("INSERT INTO t (id) VALUES (?)", ("x",))
    assert await count(two) == 1


async def test_an_exception_in_the_block_leaves_nothing(db: Db) -> None:
    async with db.transaction() as tx:
        await tx.execute("INSERT INTO t (id) VALUES (?)", ("kept",))

    async def fails() -> None:
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO t (id) VALUES (?)", ("gone",))
            await tx.execute("UPDATE t SET n = 5 WHERE id = ?", ("kept",))
            raise Boom

    with pytest.raises(Boom):
        await fails()
    async with db.transaction() as tx:
        assert await tx.fetch("SELECT id, n FROM t") == [{"id": "kept", "n": 0}]


async def test_insert_on_conflict_do_nothing(db: Db) -> None:
    sql = "INSERT INTO t (id, note) VALUES (?, ?) ON CONFLICT DO NOTHING"
    async with db.transaction() as tx:
        assert await tx.execute(sql, ("key-1", "first")) == 1
    async with db.transaction() as tx:
        assert await tx.execute(sql, ("key-1", "second")) == 0
        assert await tx.execute(sql, ("key-2", "other")) == 1
        assert await tx.fetch("SELECT id, note FROM t ORDER BY id") == [
            {"id": "key-1", "note": "first"},
            {"id": "key-2", "note": "other"},
        ]
        # the conflict target spelled out, as the ledger may
        sql_target = "INSERT INTO t (id, note) VALUES (?, ?) ON CONFLICT (id) DO NOTHING"
        assert await tx.execute(sql_target, ("key-1", "third")) == 0


async def test_update_returning_and_rows_changed(db: Db) -> None:
    async with db.transaction() as tx:
        for key in ("a", "b", "c"):
            await tx.execute("INSERT INTO t (id) VALUES (?)", (key,))
        rows = await tx.fetch("UPDATE t SET n = n + 1 WHERE id = ? RETURNING id, n", ("b",))
        assert rows == [{"id": "b", "n": 1}]
        assert await tx.fetch("UPDATE t SET n = 9 WHERE id = ? RETURNING id", ("none",)) == []
        assert await tx.execute("UPDATE t SET note = ? WHERE id <> ?", ("seen", "b")) == 2
        assert await tx.execute("DELETE FROM t WHERE note = ?", ("seen",)) == 2
    assert await count(db) == 1


async def test_the_conditional_claim_has_exactly_one_winner(open_db: Opener) -> None:
    """Two relays (two drivers on the same database) claim the same row, many times over."""
    relays = {"relay-1": await open_db(), "relay-2": await open_db()}
    rounds = 40

    async def claim(owner: str, key: str) -> bool:
        async with relays[owner].transaction() as tx:
            won = await tx.fetch(CLAIM, (owner, key))
            # hold the row (lock) a moment, so the other claim really runs into it
            await asyncio.sleep(random.uniform(0, 0.003))
        return bool(won)

    async with relays["relay-1"].transaction() as tx:
        for i in range(rounds):
            await tx.execute("INSERT INTO t (id) VALUES (?)", (f"job-{i}",))
    wins = {"relay-1": 0, "relay-2": 0}
    for i in range(rounds):
        key = f"job-{i}"
        results = await asyncio.gather(claim("relay-1", key), claim("relay-2", key))
        assert sorted(results) == [False, True], f"round {i}: {results}"
        winner = "relay-1" if results[0] else "relay-2"
        wins[winner] += 1
        async with relays["relay-2"].transaction() as tx:
            rows = await tx.fetch("SELECT owner FROM t WHERE id = ?", (key,))
        assert rows == [{"owner": winner}]
    assert sum(wins.values()) == rounds


async def test_a_cancelled_transaction_rolls_back_and_the_driver_goes_on(db: Db) -> None:
    inside = asyncio.Event()

    async def stuck() -> None:
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO t (id) VALUES (?)", ("cancelled",))
            inside.set()
            await asyncio.Event().wait()

    for _ in range(6):  # more than a pool's worth: a connection lost per cancel would show
        inside.clear()
        task = asyncio.create_task(stuck())
        await inside.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert await count(db) == 0
    async with db.transaction() as tx:
        await tx.execute("INSERT INTO t (id) VALUES (?)", ("after",))
    assert await count(db) == 1


async def test_a_failed_statement_raises_and_the_driver_goes_on(db: Db) -> None:
    async with db.transaction() as tx:
        await tx.execute("INSERT INTO t (id) VALUES (?)", ("dup",))

    async def fails() -> None:
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO t (id) VALUES (?)", ("other",))
            await tx.execute("INSERT INTO t (id) VALUES (?)", ("dup",))

    with pytest.raises(Exception, match=r"(?i)unique|duplicate"):
        await fails()
    assert await count(db) == 1
    assert await count(db, "id = ?", ("other",)) == 0


async def test_the_transaction_object_is_dead_after_the_block(db: Db) -> None:
    async with db.transaction() as tx:
        await tx.execute("INSERT INTO t (id) VALUES (?)", ("a",))
    if isinstance(db, PostgresDb):
        with pytest.raises(RuntimeError, match="ended"):
            await tx.fetch("SELECT 1 AS one")


# -- PostgreSQL ----------------------------------------------------------------------------------


def test_question_marks_become_psycopg_placeholders() -> None:
    assert to_psycopg("SELECT ? AS a, '5%' AS b WHERE x LIKE '%?' ") == (
        b"SELECT %s AS a, '5%%' AS b WHERE x LIKE '%%%s' "
    )
    assert to_psycopg("UPDATE t SET a = ? WHERE b = ?") == b"UPDATE t SET a = %s WHERE b = %s"


async def test_postgres_values_come_back_typed(pg: PostgresDb) -> None:
    assert pg.dialect == "postgres"
    async with pg.transaction() as tx:
        rows = await tx.fetch(
            "SELECT ?::bigint AS big, ?::text AS s, ? AS p, CAST(NULL AS TEXT) AS nothing",
            (2**40, "é ü ß", "plain"),
        )
    assert rows == [{"big": 2**40, "s": "é ü ß", "p": "plain", "nothing": None}]


async def test_postgres_transactions_are_read_committed(pg_dsn: str) -> None:
    """Whatever the database's default, the driver's transactions are READ COMMITTED."""
    with psycopg.connect(pg_dsn, autocommit=True) as admin:
        dbname = admin.info.dbname
        admin.execute(
            f"ALTER DATABASE \"{dbname}\" SET default_transaction_isolation = 'serializable'"
            .encode()
        )  # fmt: skip
    fresh = await PostgresDb(pg_dsn).open()
    try:
        async with fresh.transaction() as tx:
            rows = await tx.fetch("SELECT current_setting('transaction_isolation') AS iso")
        assert rows == [{"iso": "read committed"}]
    finally:
        await fresh.close()


async def test_postgres_deadlock_is_a_conflict_the_caller_can_retry(pg: PostgresDb) -> None:
    other = await PostgresDb(pg.conninfo).open()
    try:
        async with pg.transaction() as tx:
            await tx.execute("INSERT INTO t (id) VALUES (?), (?)", ("a", "b"))
        both_hold = asyncio.Barrier(2)

        async def cross(db: PostgresDb, first: str, second: str) -> str:
            async with db.transaction() as tx:
                await tx.execute("UPDATE t SET n = n + 1 WHERE id = ?", (first,))
                await both_hold.wait()
                await tx.execute("UPDATE t SET n = n + 1 WHERE id = ?", (second,))
            return "done"

        results = await asyncio.gather(
            cross(pg, "a", "b"), cross(other, "b", "a"), return_exceptions=True
        )
        conflicts = [r for r in results if isinstance(r, LedgerConflict)]
        assert len(conflicts) == 1, results
        assert conflicts[0].sqlstate == "40P01"
        assert results.count("done") == 1
        # the loser was rolled back: each row went up once, by the winner
        async with pg.transaction() as tx:
            assert await tx.fetch("SELECT id, n FROM t ORDER BY id") == [
                {"id": "a", "n": 1},
                {"id": "b", "n": 1},
            ]
    finally:
        await other.close()


async def test_postgres_serialization_failure_is_a_conflict(pg: PostgresDb) -> None:
    raise_it = "RAISE EXCEPTION 'fake' USING ERRCODE = 'serialization_failure'"

    async def fails() -> None:
        async with pg.transaction() as tx:
            await tx.execute("INSERT INTO t (id) VALUES (?)", ("lost",))
            await tx.execute(f"DO $$ BEGIN {raise_it}; END $$")

    with pytest.raises(LedgerConflict) as caught:
        await fails()
    assert caught.value.sqlstate == "40001"
    assert await count(pg) == 0


async def test_postgres_pool_holds_at_most_pool_size_connections(pg_dsn: str) -> None:
    db = await PostgresDb(pg_dsn, pool_size=2).open()
    try:
        pids: set[int] = set()
        busy = 0
        most = 0

        async def work() -> None:
            nonlocal busy, most
            async with db.transaction() as tx:
                busy += 1
                most = max(most, busy)
                pids.add((await tx.fetch("SELECT pg_backend_pid() AS pid"))[0]["pid"])
                await asyncio.sleep(0.01)
                busy -= 1

        await asyncio.gather(*(work() for _ in range(10)))
        assert most == 2
        assert len(pids) == 2
    finally:
        await db.close()
    with psycopg.connect(pg_dsn, autocommit=True) as admin:
        left = admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'edge-relay'"
            " AND datname = current_database()"
        ).fetchone()
        assert left == (0,)
    with pytest.raises(RuntimeError, match="closed"):
        async with db.transaction():
            pass


async def test_postgres_cancel_in_the_middle_of_a_query(pg: PostgresDb) -> None:
    async def slow() -> None:
        async with pg.transaction() as tx:
            await tx.execute("INSERT INTO t (id) VALUES (?)", ("half",))
            await tx.fetch("SELECT pg_sleep(30)")

    task = asyncio.create_task(slow())
    await asyncio.sleep(0.3)
    started = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - started < 5  # the server was told to stop the query
    assert await count(pg) == 0
    for _ in range(pg.pool_size + 1):
        async with pg.transaction() as tx:
            assert await tx.fetch("SELECT 1 AS one") == [{"one": 1}]


async def test_postgres_a_connection_killed_under_a_transaction_is_replaced(
    pg: PostgresDb, pg_dsn: str
) -> None:
    pids: list[int] = []

    async def killed() -> None:
        async with pg.transaction() as tx:
            await tx.execute("INSERT INTO t (id) VALUES (?)", ("lost",))
            pids.append((await tx.fetch("SELECT pg_backend_pid() AS pid"))[0]["pid"])
            with psycopg.connect(pg_dsn, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", (pids[0],))
            await tx.fetch("SELECT 1 AS one")

    with pytest.raises(LedgerUnavailable):
        await killed()
    pid = pids[0]
    for _ in range(pg.pool_size + 1):
        async with pg.transaction() as tx:
            assert (await tx.fetch("SELECT pg_backend_pid() AS pid"))[0]["pid"] != pid
    assert await count(pg) == 0


async def _fill_pool(db: PostgresDb) -> None:
    """Make the driver open all its connections (concurrent transactions)."""
    barrier = asyncio.Barrier(db.pool_size)

    async def hold() -> None:
        async with db.transaction() as tx:
            await tx.fetch("SELECT 1 AS one")
            await barrier.wait()

    await asyncio.gather(*(hold() for _ in range(db.pool_size)))


async def _table(cluster: PostgresCluster) -> PostgresDb:
    dsn = await asyncio.to_thread(cluster.create_database, "ledger")
    db = await PostgresDb(dsn).open()
    async with db.transaction() as tx:
        await tx.execute(SCHEMA)
    return db


async def test_postgres_server_restart_the_driver_reconnects(pg_private: PostgresCluster) -> None:
    db = await _table(pg_private)
    try:
        await _fill_pool(db)
        await asyncio.to_thread(pg_private.restart)  # every pooled connection is now dead
        # A connection found dead at BEGIN is replaced within the same transaction (nothing of
        # the block has run yet), so not even the first attempt fails; the brief allowed it to.
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO t (id) VALUES (?)", ("first",))
        # nor any later one, however many dead connections the pool still held
        for i in range(db.pool_size * 2):
            async with db.transaction() as tx:
                await tx.execute("INSERT INTO t (id) VALUES (?)", (f"after-{i}",))
        assert await count(db, "id LIKE ?", ("after-%",)) == db.pool_size * 2
        # and concurrently
        await _fill_pool(db)
    finally:
        await db.close()


async def test_postgres_server_down_then_back(pg_private: PostgresCluster) -> None:
    db = await _table(pg_private)
    try:
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO t (id) VALUES (?)", ("committed",))
        await _fill_pool(db)
        await asyncio.to_thread(pg_private.crash)
        for _ in range(db.pool_size + 1):  # every stale connection, then a refused connect
            started = time.monotonic()
            with pytest.raises(LedgerUnavailable):
                async with db.transaction() as tx:
                    await tx.fetch("SELECT 1 AS one")
            assert time.monotonic() - started < 3
        await asyncio.to_thread(pg_private.start)
        async with db.transaction() as tx:
            assert await tx.fetch("SELECT id FROM t") == [{"id": "committed"}]
        await _fill_pool(db)
    finally:
        await db.close()


async def test_postgres_unreachable_server_is_ledger_unavailable_without_password() -> None:
    port = free_port()  # nothing listens there
    secret = "s3cret-Pa55word"
    for conninfo in (
        f"host=127.0.0.1 port={port} dbname=ledger user=relay password={secret}",
        f"postgresql://relay:{secret}@127.0.0.1:{port}/ledger",
    ):
        db = PostgresDb(conninfo, connect_timeout=2)
        assert secret not in repr(db)
        started = time.monotonic()
        with pytest.raises(LedgerUnavailable) as caught:
            await db.open()
        assert time.monotonic() - started < 3
        text = str(caught.value)
        assert secret not in text
        assert "127.0.0.1" in text
        assert str(port) in text
        assert "ledger" in text
        assert "relay" in text
        assert caught.value.__cause__ is None


async def test_postgres_silent_server_times_out_as_ledger_unavailable() -> None:
    """A server that accepts the TCP connection and never answers: the connect timeout."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        db = PostgresDb(f"host=127.0.0.1 port={port} dbname=ledger user=relay", connect_timeout=1)
        started = time.monotonic()
        with pytest.raises(LedgerUnavailable, match=str(port)):
            await db.open()
        assert time.monotonic() - started < 5


async def test_postgres_bad_connection_string_never_echoes_it() -> None:
    with pytest.raises(ValueError, match="cannot be parsed") as caught:
        PostgresDb("host=127.0.0.1 password=s3cret 'unterminated")
    assert "s3cret" not in str(caught.value)


def test_postgres_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="pool_size"):
        PostgresDb("host=127.0.0.1", pool_size=0)
    with pytest.raises(ValueError, match="connect_timeout"):
        PostgresDb("host=127.0.0.1", connect_timeout=0)


async def test_postgres_transaction_before_open_is_refused() -> None:
    db: Any = PostgresDb("host=127.0.0.1")
    with pytest.raises(RuntimeError, match="not opened"):
        async with db.transaction():
            pass


async def test_postgres_a_caught_failure_is_not_committed_silently(pg: PostgresDb) -> None:
    async def carries_on() -> None:
        async with pg.transaction() as tx:
            await tx.execute("INSERT INTO t (id) VALUES (?)", ("a",))
            with pytest.raises(psycopg.errors.UniqueViolation):
                await tx.execute("INSERT INTO t (id) VALUES (?)", ("a",))

    with pytest.raises(TransactionAborted, match="nothing was committed"):
        await carries_on()
    assert await count(pg) == 0
    async with pg.transaction() as tx:
        assert await tx.execute("INSERT INTO t (id) VALUES (?)", ("b",)) == 1


async def test_postgres_closed_while_waiting_for_a_connection(pg_dsn: str) -> None:
    db = await PostgresDb(pg_dsn, pool_size=1).open()
    holding = asyncio.Event()
    release = asyncio.Event()

    async def holder() -> None:
        async with db.transaction() as tx:
            await tx.fetch("SELECT 1 AS one")
            holding.set()
            await release.wait()

    async def waiter() -> None:
        async with db.transaction():
            pass

    held = asyncio.create_task(holder())
    await holding.wait()
    waiting = asyncio.create_task(waiter())
    await asyncio.sleep(0.05)
    closing = asyncio.create_task(db.close())
    await asyncio.sleep(0.05)
    release.set()
    await held
    await closing
    with pytest.raises(RuntimeError, match="closed"):
        await waiting
    assert db.closed
