"""The relay's ledger on both databases (SQLite for one relay, PostgreSQL for several): once per
idem_key, claims with leases and one winner, seq order per operation, the gap wait, the states a
posting goes through, and what a person does with doubts and rejections."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from edge.relay.db import SqliteDb
from edge.relay.ledger import Ledger, posting_from_json, posting_to_json
from edge.relay.pg import PostgresDb
from tests.relay.builders import posting, reversal

pytestmark = pytest.mark.timeout(30)

Opener = Callable[[], Awaitable[Ledger]]
LEASE = 60_000
GAP = 30_000
T0 = 1_800_000_000_000


@pytest.fixture(params=["sqlite", "postgres"])
async def open_ledger(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Opener]:
    """Opens a ledger on one database; each call is another relay on the same database."""
    opened: list[Ledger] = []
    if request.param == "postgres":
        dsn = request.getfixturevalue("pg_dsn")

        async def open_one() -> Ledger:
            ledger = await Ledger(await PostgresDb(dsn).open()).open()
            opened.append(ledger)
            return ledger
    else:
        path = tmp_path / "ledger.db"

        async def open_one() -> Ledger:
            ledger = await Ledger(await SqliteDb(path).open()).open()
            opened.append(ledger)
            return ledger

    yield open_one
    for ledger in opened:
        await ledger.close()


def test_a_posting_survives_its_json() -> None:
    p = posting(3, good="12.5", scrap=0)
    assert posting_from_json(posting_to_json(p)) == p
    r = reversal(p)
    assert posting_from_json(posting_to_json(r)) == r


async def test_the_same_key_is_recorded_once(open_ledger: Opener) -> None:
    a, b = await open_ledger(), await open_ledger()
    p = posting(1)
    first, created = await a.accept(p, T0)
    again, created_again = await b.accept(posting(1, good=999), T0 + 5)
    assert created
    assert not created_again
    assert again.posting.yield_qty == 100  # the first one's row, unchanged
    assert first.status == again.status == "new"
    assert await a.counts() == {"new": 1}


async def test_two_relays_never_claim_the_same_row(open_ledger: Opener) -> None:
    a, b = await open_ledger(), await open_ledger()
    for n in range(1, 41):
        await a.accept(posting(1, order=f"10{n:05d}"), T0)
    for _ in range(3):
        got_a, got_b = await asyncio.gather(
            a.claim("a", T0 + 1, LEASE, 40, GAP), b.claim("b", T0 + 1, LEASE, 40, GAP)
        )
        keys_a = {e.idem_key for e in got_a}
        keys_b = {e.idem_key for e in got_b}
        assert not keys_a & keys_b
        if keys_a or keys_b:
            assert len(keys_a | keys_b) == 40
    # leases hold: nothing more to claim until they run out, then all of it again
    assert await a.claim("a", T0 + 2, LEASE, 40, GAP) == []
    assert len(await b.claim("b", T0 + LEASE + 10, LEASE, 40, GAP)) == 40


async def test_one_operation_goes_in_seq_order_and_waits_for_its_earlier_one(
    open_ledger: Opener,
) -> None:
    ledger = await open_ledger()
    p1, p2, p3 = posting(1), posting(2), posting(3)
    other = posting(1, order="2000001")
    for p in (p3, p1, other, p2):  # arrival order is not seq order
        await ledger.accept(p, T0)
    got = await ledger.claim("a", T0 + 1, LEASE, 10, GAP)
    assert {e.idem_key for e in got} == {p1.idem_key, other.idem_key}
    # while #1 is unfinished (posting, retrying, submitted, in doubt) #2 is not claimable
    assert await ledger.start_posting(p1.idem_key, "a", T0 + 2)
    assert await ledger.defer(p1.idem_key, "a", "retrying", T0 + 5, T0 + 3)
    assert [e.idem_key for e in await ledger.claim("b", T0 + 10, LEASE, 10, GAP)] == [p1.idem_key]
    assert await ledger.posted(p1.idem_key, "b", "sap", {"confirmation_count": "1"}, T0 + 11, 5)
    assert [e.idem_key for e in await ledger.claim("b", T0 + 12, LEASE, 10, GAP)] == [p2.idem_key]


async def test_a_rejected_earlier_one_holds_the_later_ones_of_its_operation(
    open_ledger: Opener,
) -> None:
    """Until the rejected #1 is made good, #2 and the final #3 are not posted (the ERP would
    close the operation and refuse #1's resend); another operation goes on."""
    ledger = await open_ledger()
    p1, p2, p3 = posting(1), posting(2), posting(3, final=True)
    other = posting(1, order="2000001")
    for p in (p1, p2, p3, other):
        await ledger.accept(p, T0)
    got = await ledger.claim("a", T0, LEASE, 10, GAP)
    assert {e.idem_key for e in got} == {p1.idem_key, other.idem_key}
    assert await ledger.rejected(p1.idem_key, "a", "Order 1000123 is locked", "CO/469", T0 + 1)
    assert await ledger.claim("a", T0 + 2, LEASE, 10, GAP) == []
    held = await ledger.held()
    assert [(e.idem_key, b.idem_key) for e, b in held] == [
        (p2.idem_key, p1.idem_key),
        (p3.idem_key, p1.idem_key),
    ]
    assert await ledger.held(other) == []
    marked = await ledger.mark_held(p2, T0 + 3)
    assert [e.idem_key for e in marked] == [p2.idem_key, p3.idem_key]
    for e in marked:
        assert e.error_code == "RELAY/HELD"
        assert e.error_text is not None
        assert p1.idem_key in e.error_text
        assert "Order 1000123 is locked" in e.error_text
        assert (await ledger.get(e.idem_key)).status == "new"  # type: ignore[union-attr]
    assert await ledger.mark_held(p2, T0 + 4) == []  # told once, not at every rejection
    # the supervisor corrects the order in the ERP and resubmits #1: it goes first, then #2
    await ledger.resubmit(p1.idem_key, who="anna", now_ms=T0 + 5)
    assert await ledger.held() == []
    assert [e.idem_key for e in await ledger.claim("a", T0 + 6, LEASE, 10, GAP)] == [p1.idem_key]
    assert await ledger.posted(p1.idem_key, "a", "sap", {"confirmation_count": "1"}, T0 + 7, 5)
    assert [e.idem_key for e in await ledger.claim("a", T0 + 8, LEASE, 10, GAP)] == [p2.idem_key]


async def test_a_reversed_rejection_lets_the_later_ones_go(open_ledger: Opener) -> None:
    """The supervisor gives the rejected one up: reversed at the gateway, its reversal is
    posted with nothing to cancel, and the later ones of its operation are no longer held."""
    ledger = await open_ledger()
    p1, p2 = posting(1), posting(2)
    for p in (p1, p2):
        await ledger.accept(p, T0)
    (e1,) = await ledger.claim("a", T0, LEASE, 10, GAP)
    assert await ledger.rejected(e1.idem_key, "a", "over tolerance", "RU/123", T0 + 1)
    rev = reversal(p1, seq=p2.seq + 1)
    await ledger.accept(rev, T0 + 2)
    assert [e.idem_key for e in await ledger.claim("a", T0 + 3, LEASE, 10, GAP)] == [rev.idem_key]
    assert await ledger.posted(rev.idem_key, "a", "sap", {"cancelled": "none"}, T0 + 4, 5)
    assert await ledger.held() == []
    assert [e.idem_key for e in await ledger.claim("a", T0 + 5, LEASE, 10, GAP)] == [p2.idem_key]


async def test_a_confirmation_waits_for_a_missing_predecessor_then_goes(
    open_ledger: Opener,
) -> None:
    ledger = await open_ledger()
    p4 = posting(4)  # #3 never arrived (yet)
    await ledger.accept(p4, T0)
    assert await ledger.claim("a", T0 + GAP - 1, LEASE, 10, GAP) == []
    got = await ledger.claim("a", T0 + GAP, LEASE, 10, GAP)
    assert [e.idem_key for e in got] == [p4.idem_key]
    # the first confirmation of an operation and a reversal never wait for a predecessor
    await ledger.accept(posting(1, order="3000001"), T0)
    await ledger.accept(reversal(posting(7, order="3000002")), T0)
    assert len(await ledger.claim("a", T0 + 1, LEASE, 10, GAP)) == 2


async def test_a_lost_claim_cannot_be_written(open_ledger: Opener) -> None:
    a, b = await open_ledger(), await open_ledger()
    p = posting(1)
    await a.accept(p, T0)
    await a.claim("a", T0, LEASE, 1, GAP)
    # a's lease ran out (it hung); b takes the row; a's late writes change nothing
    (taken,) = await b.claim("b", T0 + LEASE + 1, LEASE, 1, GAP)
    assert taken.status == "new"
    assert not await a.start_posting(p.idem_key, "a", T0 + LEASE + 2)
    assert not await a.posted(p.idem_key, "a", "sap", {"x": "1"}, T0 + LEASE + 3, 1)
    assert await b.start_posting(p.idem_key, "b", T0 + LEASE + 2)
    entry = await b.get(p.idem_key)
    assert entry is not None
    assert (entry.status, entry.owner, entry.attempts) == ("posting", "b", 1)


async def test_a_posting_whose_relay_died_comes_back_as_posting(open_ledger: Opener) -> None:
    """The write-ahead state: the next relay sees ``posting`` and must ask the ERP first."""
    a, b = await open_ledger(), await open_ledger()
    p = posting(1)
    await a.accept(p, T0)
    await a.claim("a", T0, LEASE, 1, GAP)
    await a.start_posting(p.idem_key, "a", T0 + 1)
    # a dies here (no more writes)
    assert await b.claim("b", T0 + LEASE - 1, LEASE, 1, GAP) == []
    (again,) = await b.claim("b", T0 + LEASE + 1, LEASE, 1, GAP)
    assert again.status == "posting"
    assert again.attempts == 1


async def test_doubts_and_rejections_go_to_a_person(open_ledger: Opener) -> None:
    ledger = await open_ledger()
    doubtful, refused = posting(1), posting(1, order="4000001")
    for p in (doubtful, refused):
        await ledger.accept(p, T0)
    await ledger.claim("a", T0, LEASE, 10, GAP)
    assert await ledger.in_doubt(doubtful.idem_key, "a", "no answer", T0 + 1)
    assert await ledger.rejected(refused.idem_key, "a", "over tolerance", "RU/123", T0 + 1)
    assert [e.idem_key for e in await ledger.by_status(["in_doubt"])] == [doubtful.idem_key]
    assert [e.idem_key for e in await ledger.by_status(["rejected"])] == [refused.idem_key]
    assert await ledger.claim("a", T0 + 2, LEASE, 10, GAP) == []
    with pytest.raises(ValueError, match="not in_doubt"):
        await ledger.resolve(refused.idem_key, as_posted=None, who="anna", now_ms=T0 + 3)
    with pytest.raises(KeyError):
        await ledger.resubmit("0" * 64, who="anna", now_ms=T0 + 3)
    done = await ledger.resolve(
        doubtful.idem_key, as_posted={"confirmation_count": "7"}, who="anna", now_ms=T0 + 3
    )
    assert (done.status, dict(done.erp), done.note) == (
        "posted",
        {"confirmation_count": "7"},
        "resolved by anna",
    )
    again = await ledger.resubmit(refused.idem_key, who="ben", now_ms=T0 + 4)
    assert again.status == "new"
    assert again.note is not None
    assert "over tolerance" in again.note
    assert [e.idem_key for e in await ledger.claim("a", T0 + 5, LEASE, 10, GAP)] == [
        refused.idem_key
    ]


async def test_latencies_and_counts(open_ledger: Opener) -> None:
    ledger = await open_ledger()
    for n, ms in ((1, 800), (2, 1200)):
        p = posting(1, order=f"500000{n}")
        await ledger.accept(p, T0)
        await ledger.claim("a", T0, LEASE, 10, GAP)
        await ledger.posted(p.idem_key, "a", "sap", {"confirmation_count": str(n)}, T0 + n, ms)
    assert sorted(await ledger.latencies(T0)) == [
        ("PRESS07", "sap", 800),
        ("PRESS07", "sap", 1200),
    ]
    assert await ledger.counts() == {"posted": 2}


async def test_a_newer_ledger_is_refused(tmp_path: Path) -> None:
    from edge.relay.ledger import LedgerTooNew

    path = tmp_path / "ledger.db"
    ledger = await Ledger(await SqliteDb(path).open()).open()
    async with ledger.db.transaction() as tx:
        await tx.execute("UPDATE relay_meta SET value = '99' WHERE key = 'schema_version'")
    await ledger.close()
    with pytest.raises(LedgerTooNew, match="99"):
        await Ledger(await SqliteDb(path).open()).open()


async def test_a_damaged_ledger_is_refused_not_replaced(tmp_path: Path) -> None:
    from edge.relay.db import DamagedLedger

    path = tmp_path / "ledger.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(DamagedLedger, match="not a readable ledger"):
        await SqliteDb(path).open()
    assert path.read_bytes().startswith(b"this is not a database")


async def test_a_renewed_claim_is_not_taken(open_ledger: Opener) -> None:
    a, b = await open_ledger(), await open_ledger()
    p = posting(1)
    await a.accept(p, T0)
    await a.claim("a", T0, LEASE, 1, GAP)
    assert await a.renew(p.idem_key, "a", T0 + 2 * LEASE)
    assert await b.claim("b", T0 + LEASE + 1, LEASE, 1, GAP) == []  # the old lease ran out
    assert len(await b.claim("b", T0 + 2 * LEASE + 1, LEASE, 1, GAP)) == 1
    assert not await a.renew(p.idem_key, "a", T0 + 3 * LEASE)  # b has it now


async def test_relays_starting_together_on_a_new_database_all_open_it(pg_dsn: str) -> None:
    """CREATE TABLE IF NOT EXISTS is not safe against itself in PostgreSQL: two relays opening a
    fresh ledger at the same moment could fail with a unique violation on pg_type."""
    dbs = [PostgresDb(pg_dsn) for _ in range(6)]
    for db in dbs:
        await db.open()
    ledgers = await asyncio.gather(*(Ledger(db).open() for db in dbs))
    from edge.relay.dispatch import Dispatcher

    await asyncio.gather(
        *(Dispatcher.create_tables(led.db) for led in ledgers)  # the dispatcher's tables too
    )
    for led in ledgers:
        await led.close()
