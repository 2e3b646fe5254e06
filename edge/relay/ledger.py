"""The relay's ledger: one row per ``idem_key``, the work queue and the proof of exactly once.

A confirmation goes through these states (``status``)::

    new ──claim──▶ posting ──▶ posted                     (final: the ERP's keys are kept)
                     │   ├───▶ rejected                   (final until a person resubmits it)
                     │   ├───▶ retrying ──(due)──▶ posting ...
                     │   └───▶ submitted ──(poll)──▶ posted / rejected / submitted
                     └─ relay died or the answer was lost ─▶ posting (lease ran out)
                            ├─ ERP can be asked ─▶ lookup ─▶ posted / post again
                            └─ it cannot ────────▶ in_doubt (for a person: ``edge relay doubt``)

``posting`` is written (and committed) *before* the ERP is called: a row found in ``posting``
with its lease run out is one whose fate nobody knows, and it is never posted blind.

Claims: a relay takes a row by a conditional ``UPDATE ... WHERE lease_ms < now`` (one winner,
SQLite or PostgreSQL alike), holding it for ``lease_ms``. A row is claimed only when no earlier
row (lower ``seq``) of the same operation of the same gateway is unfinished, so the
confirmations of one operation reach the ERP in ``seq`` order, whichever relay took which
message; a confirmation whose predecessor (``conf_index - 1``) has not arrived at all waits
``gap_wait_ms`` for it. Operations are independent: they are posted in parallel.

Held: a confirmation whose operation has an earlier ``conf_index`` rejected by the ERP, and not
made good since (no later row of that ``conf_index``, a corrected resend or a reversal, is
posted), is not claimed. Posting it would let the ERP close the operation (its final one) or
count on past the rejected quantities, and the resend of the rejected one would then be
refused. A held row stays ``new``: it carries ``RELAY/HELD`` and the text naming the one it
waits for (``edge relay failed`` lists it), and goes once that one is resubmitted and posted, or
reversed at the gateway (its reversal is "posted" with nothing to cancel).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from decimal import Decimal
from typing import Any, Final, Literal

from edge.relay.db import Db, Row, lock_schema
from edge.relay.erp import GoodsMovement, Posting, Quantity

Status = Literal["new", "posting", "submitted", "retrying", "in_doubt", "posted", "rejected"]
FINAL: Final = ("posted", "rejected")
UNFINISHED: Final = ("new", "posting", "submitted", "retrying", "in_doubt")
CLAIMABLE: Final = ("new", "posting", "submitted", "retrying")
SCHEMA_VERSION: Final = 1


class LedgerTooNew(Exception):
    """The ledger was written by a newer relay: refused rather than misread."""


_COLUMNS = """
    idem_key TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    edge_id TEXT NOT NULL,
    root TEXT NOT NULL,
    work_center TEXT NOT NULL,
    order_id TEXT NOT NULL,
    operation TEXT NOT NULL,
    split INTEGER NOT NULL,
    conf_index BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    reverses_idem_key TEXT,
    posting TEXT NOT NULL,
    event_ms BIGINT NOT NULL,
    arrived_ms BIGINT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_ms BIGINT NOT NULL,
    owner TEXT,
    lease_ms BIGINT,
    erp_system TEXT,
    erp TEXT,
    ref TEXT,
    error_text TEXT,
    error_code TEXT,
    posted_ms BIGINT,
    latency_ms BIGINT,
    answered TEXT,
    updated_ms BIGINT NOT NULL,
    note TEXT
"""

_DDL = (
    "CREATE TABLE IF NOT EXISTS relay_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    f"CREATE TABLE IF NOT EXISTS relay_ledger ({_COLUMNS})",
    "CREATE INDEX IF NOT EXISTS relay_ledger_op ON relay_ledger "
    "(edge_id, order_id, operation, split, seq)",
    "CREATE INDEX IF NOT EXISTS relay_ledger_due ON relay_ledger (status, next_ms)",
)

_SAME_OP = (
    "e.edge_id = l.edge_id AND e.order_id = l.order_id AND e.operation = l.operation "
    "AND e.split = l.split"
)
_UNFINISHED_SQL = ", ".join(f"'{s}'" for s in UNFINISHED)
_CLAIMABLE_SQL = ", ".join(f"'{s}'" for s in CLAIMABLE)


def _same_op(a: str, b: str) -> str:
    return " AND ".join(f"{a}.{c} = {b}.{c}" for c in ("edge_id", "order_id", "operation", "split"))


def _standing(r: str) -> str:
    """``r`` is a rejected confirmation nothing made good yet: no later row of its
    ``conf_index`` (a corrected resend, or a reversal) is posted."""
    v = r + "v"
    return (
        f"{r}.kind = 'confirmation' AND {r}.status = 'rejected' AND NOT EXISTS ("
        f"SELECT 1 FROM relay_ledger {v} WHERE {_same_op(v, r)} "
        f"AND {v}.conf_index = {r}.conf_index AND {v}.seq > {r}.seq AND {v}.status = 'posted')"
    )


def _held(x: str) -> str:
    """``x`` is a confirmation held behind a standing rejection of an earlier ``conf_index``
    of its operation."""
    r = x + "r"
    return (
        f"{x}.kind = 'confirmation' AND EXISTS (SELECT 1 FROM relay_ledger {r} "
        f"WHERE {_same_op(r, x)} AND {r}.conf_index < {x}.conf_index AND {_standing(r)})"
    )


_HELD = f"SELECT l.* FROM relay_ledger l WHERE l.status IN ({_CLAIMABLE_SQL}) AND {_held('l')}"
_OP_PARAMS = "edge_id = ? AND order_id = ? AND operation = ? AND split = ?"
_BLOCKER = f"""
SELECT r.* FROM relay_ledger r
WHERE r.edge_id = ? AND r.order_id = ? AND r.operation = ? AND r.split = ? AND r.conf_index < ?
  AND {_standing("r")}
ORDER BY r.conf_index, r.seq DESC
LIMIT 1
"""
HELD_CODE: Final = "RELAY/HELD"


_CANDIDATES = f"""
SELECT l.idem_key, l.status FROM relay_ledger l
WHERE l.status IN ({_CLAIMABLE_SQL})
  AND l.next_ms <= ?
  AND (l.lease_ms IS NULL OR l.lease_ms < ?)
  AND NOT EXISTS (
    SELECT 1 FROM relay_ledger e
    WHERE {_SAME_OP} AND e.seq < l.seq AND e.status IN ({_UNFINISHED_SQL})
      AND NOT ({_held("e")}))
  AND NOT ({_held("l")})
  AND (l.kind <> 'confirmation' OR l.conf_index <= 1 OR l.arrived_ms <= ? OR EXISTS (
    SELECT 1 FROM relay_ledger e
    WHERE {_SAME_OP} AND e.kind = 'confirmation' AND e.conf_index = l.conf_index - 1))
ORDER BY l.next_ms, l.seq
LIMIT ?
"""


def posting_to_json(posting: Posting) -> str:
    data = asdict(posting)
    return json.dumps(data, default=str, separators=(",", ":"), sort_keys=True)


_DECIMALS: Final = ("yield_qty", "scrap_qty", "rework_qty")


def posting_from_json(text: str) -> Posting:
    data: dict[str, Any] = json.loads(text)
    known = {f.name for f in fields(Posting)}
    data = {k: v for k, v in data.items() if k in known}
    for name in _DECIMALS:
        data[name] = Decimal(str(data[name]))
    for name in ("scrap_by_reason", "rework_by_reason"):
        data[name] = tuple(Quantity(r["code"], Decimal(str(r["qty"]))) for r in data[name])
    data["reverses_keys"] = dict(data.get("reverses_keys") or {})
    data["goods_movements"] = tuple(
        GoodsMovement(**{**m, "qty": Decimal(str(m["qty"]))})
        for m in data.get("goods_movements") or ()
    )
    return Posting(**data)


def held_text(blocker: Entry) -> str:
    """What a held confirmation says: the rejected one it waits for, and what lets it go."""
    p = blocker.posting
    return (
        f"held: waits for confirmation {p.label} (idem_key {p.idem_key}), rejected by the ERP: "
        f"{blocker.error_text or 'no text'}; it is posted once that one is resent or "
        "resubmitted and posted, or reversed (edge relay failed)"
    )[:1000]


@dataclass(frozen=True, slots=True)
class Entry:
    idem_key: str
    kind: str
    status: Status
    posting: Posting
    attempts: int
    next_ms: int
    arrived_ms: int
    erp_system: str | None
    erp: Mapping[str, str]
    ref: Mapping[str, str]
    error_text: str | None
    error_code: str | None
    posted_ms: int | None
    latency_ms: int | None
    answered: str | None
    owner: str | None
    lease_ms: int | None
    updated_ms: int
    note: str | None

    @property
    def final(self) -> bool:
        return self.status in FINAL

    @classmethod
    def of(cls, row: Row) -> Entry:
        return cls(
            idem_key=row["idem_key"],
            kind=row["kind"],
            status=row["status"],
            posting=posting_from_json(row["posting"]),
            attempts=int(row["attempts"]),
            next_ms=int(row["next_ms"]),
            arrived_ms=int(row["arrived_ms"]),
            erp_system=row["erp_system"],
            erp=json.loads(row["erp"]) if row["erp"] else {},
            ref=json.loads(row["ref"]) if row["ref"] else {},
            error_text=row["error_text"],
            error_code=row["error_code"],
            posted_ms=row["posted_ms"],
            latency_ms=row["latency_ms"],
            answered=row["answered"],
            owner=row["owner"],
            lease_ms=row["lease_ms"],
            updated_ms=int(row["updated_ms"]),
            note=row["note"],
        )


def _json(value: Mapping[str, str] | None) -> str | None:
    return None if value is None else json.dumps(dict(value), sort_keys=True)


class Ledger:
    """The ledger over a :class:`edge.relay.db.Db` (SQLite or PostgreSQL, the same SQL)."""

    def __init__(self, db: Db) -> None:
        self.db = db

    async def open(self) -> Ledger:
        async with self.db.transaction() as tx:
            await lock_schema(self.db, tx)
            for statement in _DDL:
                await tx.execute(statement)
            rows = await tx.fetch("SELECT value FROM relay_meta WHERE key = 'schema_version'")
            if not rows:
                await tx.execute(
                    "INSERT INTO relay_meta (key, value) VALUES ('schema_version', ?) "
                    "ON CONFLICT (key) DO NOTHING",
                    (str(SCHEMA_VERSION),),
                )
            elif int(rows[0]["value"]) > SCHEMA_VERSION:
                raise LedgerTooNew(
                    f"the ledger has schema version {rows[0]['value']}; this relay reads up to "
                    f"{SCHEMA_VERSION}: run the newer relay, or a fresh ledger"
                )
        return self

    async def close(self) -> None:
        await self.db.close()

    # ------------------------------------------------------------------ intake

    async def accept(self, posting: Posting, now_ms: int) -> tuple[Entry, bool]:
        """Record a message's posting once; the stored entry and whether it is new. A second
        message with the same ``idem_key`` (a resend, or the same one delivered to another
        relay) finds the first one's row and changes nothing."""
        async with self.db.transaction() as tx:
            created: int = await tx.execute(
                "INSERT INTO relay_ledger (idem_key, kind, edge_id, root, work_center, order_id, "
                "operation, split, conf_index, seq, reverses_idem_key, posting, event_ms, "
                "arrived_ms, status, next_ms, updated_ms) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'new', ?, ?) "
                "ON CONFLICT (idem_key) DO NOTHING",
                (
                    posting.idem_key,
                    posting.kind,
                    posting.edge_id,
                    posting.root,
                    posting.work_center,
                    posting.order_id,
                    posting.operation,
                    posting.split,
                    posting.conf_index,
                    posting.seq,
                    posting.reverses_idem_key,
                    posting_to_json(posting),
                    posting.event_ms,
                    now_ms,
                    now_ms,
                    now_ms,
                ),
            )
            rows = await tx.fetch(
                "SELECT * FROM relay_ledger WHERE idem_key = ?", (posting.idem_key,)
            )
        return Entry.of(rows[0]), created == 1

    # ------------------------------------------------------------------ claims

    async def claim(
        self, owner: str, now_ms: int, lease_ms: int, limit: int, gap_wait_ms: int
    ) -> list[Entry]:
        """Take up to ``limit`` due rows for ``owner`` until ``now_ms + lease_ms``; at most one
        per operation (the earliest unfinished one)."""
        if limit <= 0:
            return []
        claimed: list[Entry] = []
        async with self.db.transaction() as tx:
            # PostgreSQL: rows another relay is claiming right now are skipped, not waited for
            sql = _CANDIDATES + (
                " FOR UPDATE OF l SKIP LOCKED" if self.db.dialect == "postgres" else ""
            )
            rows = await tx.fetch(sql, (now_ms, now_ms, now_ms - gap_wait_ms, limit * 4))
            ops: set[tuple[str, ...]] = set()
            for row in rows:
                if len(claimed) >= limit:
                    break
                got = await tx.fetch(
                    "UPDATE relay_ledger SET owner = ?, lease_ms = ?, updated_ms = ? "
                    "WHERE idem_key = ? AND status = ? AND (lease_ms IS NULL OR lease_ms < ?) "
                    "RETURNING *",
                    (owner, now_ms + lease_ms, now_ms, row["idem_key"], row["status"], now_ms),
                )
                if not got:
                    continue
                entry = Entry.of(got[0])
                p = entry.posting
                op = (p.edge_id, p.order_id, p.operation, str(p.split))
                if op in ops:  # (cannot happen: the query takes the earliest; kept as a guard)
                    await tx.execute(
                        "UPDATE relay_ledger SET owner = NULL, lease_ms = NULL "
                        "WHERE idem_key = ? AND owner = ?",
                        (entry.idem_key, owner),
                    )
                    continue
                ops.add(op)
                claimed.append(entry)
        return claimed

    async def _update(
        self, idem_key: str, owner: str | None, sets: Mapping[str, object], now_ms: int
    ) -> bool:
        columns = ", ".join(f"{name} = ?" for name in sets)
        params: list[object] = [*sets.values(), now_ms, idem_key]
        where = "idem_key = ?"
        if owner is not None:
            where += " AND owner = ?"
            params.append(owner)
        async with self.db.transaction() as tx:
            changed: int = await tx.execute(
                f"UPDATE relay_ledger SET {columns}, updated_ms = ? WHERE {where}", params
            )
        return changed == 1

    async def renew(self, idem_key: str, owner: str, until_ms: int) -> bool:
        """Extend ``owner``'s claim while it works on the row (False: the claim is gone)."""
        async with self.db.transaction() as tx:
            changed: int = await tx.execute(
                "UPDATE relay_ledger SET lease_ms = ? WHERE idem_key = ? AND owner = ?",
                (until_ms, idem_key, owner),
            )
        return changed == 1

    async def start_posting(self, idem_key: str, owner: str, now_ms: int) -> bool:
        """Written before the ERP is called; False when ``owner`` no longer holds the row."""
        async with self.db.transaction() as tx:
            changed: int = await tx.execute(
                "UPDATE relay_ledger SET status = 'posting', attempts = attempts + 1, "
                "updated_ms = ? WHERE idem_key = ? AND owner = ?",
                (now_ms, idem_key, owner),
            )
        return changed == 1

    async def posted(
        self,
        idem_key: str,
        owner: str | None,
        system: str,
        keys: Mapping[str, str],
        now_ms: int,
        latency_ms: int | None,
        note: str | None = None,
    ) -> bool:
        return await self._update(
            idem_key,
            owner,
            {
                "status": "posted",
                "erp_system": system,
                "erp": _json(keys),
                "posted_ms": now_ms,
                "latency_ms": latency_ms,
                "error_text": None,
                "error_code": None,
                "owner": None,
                "lease_ms": None,
                "note": note,
            },
            now_ms,
        )

    async def rejected(
        self, idem_key: str, owner: str | None, text: str, code: str | None, now_ms: int
    ) -> bool:
        return await self._update(
            idem_key,
            owner,
            {
                "status": "rejected",
                "error_text": text[:1000],
                "error_code": code,
                "owner": None,
                "lease_ms": None,
            },
            now_ms,
        )

    async def defer(
        self,
        idem_key: str,
        owner: str,
        status: Status,
        next_ms: int,
        now_ms: int,
        *,
        text: str | None = None,
        code: str | None = None,
        ref: Mapping[str, str] | None = None,
    ) -> bool:
        """Give the row back, due again at ``next_ms`` in ``status`` (retrying, submitted, or
        posting: its outcome unknown, to be looked up before anything is posted again)."""
        sets: dict[str, object] = {
            "status": status,
            "next_ms": next_ms,
            "owner": None,
            "lease_ms": None,
            "error_text": None if text is None else text[:1000],
            "error_code": code,
        }
        if ref is not None:
            sets["ref"] = _json(ref)
        return await self._update(idem_key, owner, sets, now_ms)

    async def in_doubt(self, idem_key: str, owner: str, text: str, now_ms: int) -> bool:
        return await self._update(
            idem_key,
            owner,
            {"status": "in_doubt", "owner": None, "lease_ms": None, "error_text": text[:1000]},
            now_ms,
        )

    async def answered(self, idem_key: str, status: str) -> None:
        async with self.db.transaction() as tx:
            await tx.execute(
                "UPDATE relay_ledger SET answered = ? WHERE idem_key = ?", (status, idem_key)
            )

    async def held(self, op: Posting | None = None) -> list[tuple[Entry, Entry]]:
        """The confirmations held behind a standing rejection (of ``op``'s operation, or all),
        each with the rejected one it waits for, in ``seq`` order."""
        sql, params = _HELD, []
        if op is not None:
            sql += " AND " + " AND ".join(f"l.{c}" for c in _OP_PARAMS.split(" AND "))
            params = [op.edge_id, op.order_id, op.operation, op.split]
        out: list[tuple[Entry, Entry]] = []
        async with self.db.transaction() as tx:
            rows = await tx.fetch(sql + " ORDER BY l.seq", params)
            for row in rows:
                found = await tx.fetch(
                    _BLOCKER,
                    (
                        row["edge_id"],
                        row["order_id"],
                        row["operation"],
                        row["split"],
                        row["conf_index"],
                    ),
                )
                if found:
                    out.append((Entry.of(row), Entry.of(found[0])))
        return out

    async def mark_held(self, op: Posting, now_ms: int) -> list[Entry]:
        """Write on each confirmation of ``op``'s operation held behind a standing rejection
        which one it waits for; the rows whose text changed (to be answered ``retrying``)."""
        changed: list[Entry] = []
        for entry, blocker in await self.held(op):
            text = held_text(blocker)
            if entry.error_code == HELD_CODE and entry.error_text == text:
                continue
            if await self._update(
                entry.idem_key,
                None,
                {"error_text": text, "error_code": HELD_CODE},
                now_ms,
            ):
                changed.append(replace(entry, error_text=text, error_code=HELD_CODE))
        return changed

    # ------------------------------------------------------------------ a person's tools

    async def resolve(
        self, idem_key: str, *, as_posted: Mapping[str, str] | None, who: str, now_ms: int
    ) -> Entry:
        """An ``in_doubt`` row: the person checked the ERP. ``as_posted`` (the document's keys)
        records it as posted; ``None`` posts it again."""
        entry = await self.get(idem_key)
        if entry is None:
            raise KeyError(f"no ledger entry with idem_key {idem_key}")
        if entry.status != "in_doubt":
            raise ValueError(f"{idem_key} is {entry.status}, not in_doubt")
        if as_posted is not None:
            await self.posted(
                idem_key,
                None,
                entry.erp_system or "",
                as_posted,
                now_ms,
                None,
                f"resolved by {who}",
            )
        else:
            await self._update(
                idem_key,
                None,
                {"status": "new", "next_ms": now_ms, "note": f"repost ordered by {who}"},
                now_ms,
            )
        resolved = await self.get(idem_key)
        assert resolved is not None
        return resolved

    async def resubmit(self, idem_key: str, *, who: str, now_ms: int) -> Entry:
        """A ``rejected`` row, corrected in the ERP: post it again."""
        entry = await self.get(idem_key)
        if entry is None:
            raise KeyError(f"no ledger entry with idem_key {idem_key}")
        if entry.status != "rejected":
            raise ValueError(f"{idem_key} is {entry.status}, not rejected")
        again_posting = replace(entry.posting, resubmission=entry.posting.resubmission + 1)
        await self._update(
            idem_key,
            None,
            {
                "status": "new",
                "next_ms": now_ms,
                "attempts": 0,
                "answered": None,
                "posting": posting_to_json(again_posting),
                "note": f"resubmitted by {who} after: {entry.error_text}",
            },
            now_ms,
        )
        again = await self.get(idem_key)
        assert again is not None
        return again

    # ------------------------------------------------------------------ reading

    async def get(self, idem_key: str) -> Entry | None:
        async with self.db.transaction() as tx:
            rows = await tx.fetch("SELECT * FROM relay_ledger WHERE idem_key = ?", (idem_key,))
        return Entry.of(rows[0]) if rows else None

    async def by_status(self, statuses: Sequence[Status], limit: int = 1000) -> list[Entry]:
        marks = ", ".join("?" for _ in statuses)
        async with self.db.transaction() as tx:
            rows = await tx.fetch(
                f"SELECT * FROM relay_ledger WHERE status IN ({marks}) "
                "ORDER BY arrived_ms, seq LIMIT ?",
                (*statuses, limit),
            )
        return [Entry.of(r) for r in rows]

    async def next_due_ms(self) -> int | None:
        async with self.db.transaction() as tx:
            rows = await tx.fetch(
                f"SELECT MIN(next_ms) AS due FROM relay_ledger WHERE status IN ({_CLAIMABLE_SQL})"
            )
        due = rows[0]["due"] if rows else None
        return None if due is None else int(due)

    async def counts(self) -> dict[str, int]:
        async with self.db.transaction() as tx:
            rows = await tx.fetch("SELECT status, COUNT(*) AS n FROM relay_ledger GROUP BY status")
        return {r["status"]: int(r["n"]) for r in rows}

    async def latencies_by_root(self, since_ms: int) -> dict[str, list[int]]:
        """Root -> latencies (ms) of the postings since ``since_ms``, ascending."""
        async with self.db.transaction() as tx:
            rows = await tx.fetch(
                "SELECT root, latency_ms FROM relay_ledger "
                "WHERE status = 'posted' AND latency_ms IS NOT NULL AND posted_ms >= ? "
                "ORDER BY root, latency_ms",
                (since_ms,),
            )
        out: dict[str, list[int]] = {}
        for r in rows:
            out.setdefault(r["root"], []).append(int(r["latency_ms"]))
        return out

    async def latencies(self, since_ms: int) -> list[tuple[str, str, int]]:
        """(work center, ERP, latency ms) of every posting since ``since_ms``."""
        async with self.db.transaction() as tx:
            rows = await tx.fetch(
                "SELECT work_center, erp_system, latency_ms FROM relay_ledger "
                "WHERE status = 'posted' AND latency_ms IS NOT NULL AND posted_ms >= ? "
                "ORDER BY work_center",
                (since_ms,),
            )
        return [(r["work_center"], r["erp_system"] or "", int(r["latency_ms"])) for r in rows]
