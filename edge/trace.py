"""``edge trace BATCH``: the local genealogy of one batch, from the gateway's own database.

Which operations used a batch (it was loaded for them as a component, and which confirmations'
goods movements consumed it) and which produced it (their produced batch, with the yield and
scrap of their confirmations). Answered from what the database still holds:

- the projections: every stored operation and confirmation, also those that left the daemon's
  memory (``retired_ms``, edge.domain.retire) until retention deletes them
  (``[retention] finished_days`` after they left);
- the events (``component_batch_loaded``, ``component_consumed``, the confirmations and the
  relay's answers), kept ``[retention] journal_days``: an operation whose row is gone is
  still found while its events are there.

What both hold is shown once: a load by its operation, material, batch and time, a confirmation
by its id (``ORDER/OPERATION[/SPLIT]#N``), recorded consumption by its event id.

The database is only read: opened through SQLite's URI with ``mode=ro`` (without a write-ahead
log beside it also ``immutable=1``, so not even a ``-shm`` file is made), in one snapshot, also
beside the running daemon. A missing, damaged or foreign database is named with its path
(exit 2) and nothing is created; a batch found exits 0, none found exits 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import ValidationError

from edge.config import GatewayConfig, config_path, load_config
from edge.domain import material
from edge.domain.events import EventType
from edge.domain.material import MAX_BATCH, batch_of
from edge.domain.model import (
    ZERO,
    Confirmation,
    Operation,
    OperationKey,
    OperationSpec,
    number,
)
from edge.domain.state import Reject
from edge.store import codec
from edge.store.retention import RetentionPolicy
from edge.store.schema import read_only

EXIT_FOUND, EXIT_NOTHING, EXIT_ERROR = 0, 1, 2

# The events a batch shows up in (edge.domain.material, edge.domain.confirmations).
_CONFIRMATION_EVENTS = (
    EventType.CONFIRMATION_CREATED,
    EventType.CONFIRMATION_RESENT,
    EventType.CONFIRMATION_REVERSED,
)
_BATCH_EVENTS = (
    EventType.COMPONENT_BATCH_LOADED,
    EventType.COMPONENT_CONSUMED,
    EventType.OPERATION_DISPATCHED,
    *_CONFIRMATION_EVENTS,
)


_DEFAULT_RETENTION = RetentionPolicy()


class TraceError(Exception):
    """What keeps the trace from being made, in words naming the file or the argument."""


# ---------------------------------------------------------------------------- the answer


@dataclass(slots=True)
class Load:
    """The batch loaded as a component for an operation."""

    op: str
    order: str
    operation: str
    split: int
    material: str
    loaded_at: str | None
    actor: str | None
    until: str | None = None  # when the next batch of the material came, or the operation ended
    replaced_by: str | None = None
    expiry: str | None = None
    # False: the operation's row is gone (found by its events); when it ended is not known.
    operation_stored: bool = True
    at_ms: int = field(default=0, repr=False)


@dataclass(slots=True)
class Recorded:
    """Consumption of the batch an operator recorded for an operation (not backflushed)."""

    op: str
    material: str
    qty: int | str
    unit: str
    records: list[dict[str, object]] = field(default_factory=list)  # at, actor, qty (events)


@dataclass(slots=True)
class Consumed:
    """One goods movement of a confirmation that booked the batch."""

    conf_id: str
    op: str
    order: str
    operation: str
    split: int
    conf_index: int
    idem_key: str | None
    seq: int | None  # the message's seq as central and the relay saw it, while the outbox has it
    material: str
    qty: int | str
    unit: str
    direction: str  # issue, or return (a negative line: material given back)
    posting_date: str | None
    period_end: str | None
    erp_status: str | None  # awaiting_result, posted, rejected; None: nothing known
    erp_ref: str | None = None
    reversed: bool = False
    reversal_idem_key: str | None = None
    reversal_status: str | None = None


@dataclass(slots=True)
class ProducedConfirmation:
    conf_id: str
    conf_index: int
    idem_key: str | None
    seq: int | None
    final: bool
    yield_qty: int | str
    scrap_qty: int | str
    rework_qty: int | str
    posting_date: str | None
    period_end: str | None
    erp_status: str | None
    reversed: bool = False


@dataclass(slots=True)
class Produced:
    """An operation whose produced batch (from the ERP's dispatch list) is the batch."""

    op: str
    order: str
    operation: str
    split: int
    material: str | None
    unit: str | None
    status: str | None  # None: the operation's row is gone, found by its events
    target_qty: int | str | None
    confirmations: list[ProducedConfirmation] = field(default_factory=list)


@dataclass(slots=True)
class Trace:
    batch: str
    database: str
    time_zone: str
    loads: list[Load] = field(default_factory=list)
    recorded: list[Recorded] = field(default_factory=list)
    consumed: list[Consumed] = field(default_factory=list)
    produced: list[Produced] = field(default_factory=list)
    # What the store still reaches: the oldest event kept, and the configured retention.
    oldest_event_at: str | None = None
    journal_days: float = _DEFAULT_RETENTION.journal_days
    finished_days: float = _DEFAULT_RETENTION.finished_days

    @property
    def found(self) -> bool:
        return bool(self.loads or self.recorded or self.consumed or self.produced)

    def payload(self) -> dict[str, Any]:
        """The JSON document of ``edge trace --json`` (stable keys)."""
        loads = []
        for load in self.loads:
            row = asdict(load)
            del row["at_ms"]
            loads.append(row)
        return {
            "batch": self.batch,
            "database": self.database,
            "time_zone": self.time_zone,
            "found": self.found,
            "used": {
                "loads": loads,
                "recorded": [asdict(r) for r in self.recorded],
                "confirmations": [asdict(c) for c in self.consumed],
            },
            "produced": [asdict(p) for p in self.produced],
            "retention": {
                "journal_days": self.journal_days,
                "finished_days": self.finished_days,
                "oldest_event_at": self.oldest_event_at,
            },
        }


# ---------------------------------------------------------------------------- reading


def check_batch(value: str) -> str:
    """The batch argument, under the domain's bound for a batch number; TraceError naming it."""
    try:
        # A long argument is refused for its length: its first MAX_BATCH + 1 characters show it.
        batch_of(value if len(value) <= MAX_BATCH else value[: MAX_BATCH + 1])
    except Reject as exc:
        more = f" ({len(value)} characters given)" if len(value) > MAX_BATCH else ""
        raise TraceError(f"{exc.rejection.message}{more}; nothing was read") from None
    return value


class _Clock:
    """Wall-clock milliseconds as ISO text in the work center's time zone."""

    def __init__(self, zone: str) -> None:
        try:
            self.zone: ZoneInfo = ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            self.zone = ZoneInfo("UTC")
        self.name = str(self.zone)

    def iso(self, ms: int | None) -> str | None:
        if ms is None:
            return None
        return datetime.fromtimestamp(ms / 1000, self.zone).isoformat(timespec="seconds")


@dataclass(slots=True)
class _Event:
    id: int
    type: str
    at_ms: int
    op: str | None
    actor: str | None
    data: dict[str, Any]


def _qty(value: object) -> Decimal:
    try:
        return Decimal(str(value))
    except (InvalidOperation, ValueError):
        return ZERO


def _key(text: str | None) -> OperationKey | None:
    try:
        return OperationKey.parse(text or "")
    except ValueError:
        return None


def _decode_rows(
    conn: sqlite3.Connection, db: Path, table: str, sql: str, args: tuple[object, ...] = ()
) -> Iterator[tuple[str, Any]]:
    adapter = codec.OPERATION if table == "operation" else codec.CONFIRMATION
    for key, doc in conn.execute(sql, args):
        try:
            yield key, adapter.validate_json(doc)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise TraceError(
                f"{db}: {table} {key!r} is not a readable row ({where}: {first['msg']})"
            ) from None


def _events(conn: sqlite3.Connection, batch: str) -> list[_Event]:
    """The events that may name ``batch``: the text as JSON writes it, checked field by field
    by the caller."""
    needle = json.dumps(batch, ensure_ascii=False)
    types = [t.value for t in _BATCH_EVENTS]
    rows = conn.execute(
        "SELECT id, type, at_wall_ms, op, actor, data FROM event "
        "WHERE type IN (SELECT value FROM json_each(?)) AND instr(data, ?) > 0 ORDER BY id",
        (json.dumps(types), needle),
    ).fetchall()
    out = []
    for id_, type_, at_ms, op, actor, data in rows:
        try:
            body = json.loads(data)
        except ValueError:
            continue
        if isinstance(body, dict):
            out.append(_Event(id_, type_, at_ms, op, actor, body))
    return out


def _movements_of(data: dict[str, Any], batch: str) -> list[dict[str, Any]]:
    lines = data.get("goods_movements")
    if not isinstance(lines, list):
        return []
    return [m for m in lines if isinstance(m, dict) and m.get("batch") == batch]


class _Tracer:
    def __init__(self, conn: sqlite3.Connection, db: Path, batch: str, clock: _Clock) -> None:
        self.conn, self.db, self.batch, self.clock = conn, db, batch, clock
        self.ops: dict[str, Operation] = {}  # every stored operation that names the batch
        self.specs: dict[str, OperationSpec] = {}
        self.loads: dict[tuple[str, str, int], Load] = {}
        self.recorded: dict[tuple[str, str], Recorded] = {}
        self.consumed: dict[tuple[str, str, str], Consumed] = {}
        self.produced: dict[str, Produced] = {}
        self.produced_confs: dict[str, ProducedConfirmation] = {}
        self.stored_confs: set[str] = set()  # conf_ids read from the projection
        self.stored_recorded: set[tuple[str, str]] = set()

    # -------------------------------------------------------------- the projections

    def from_projections(self) -> None:
        needle = json.dumps(self.batch, ensure_ascii=False)
        for key, op in _decode_rows(
            self.conn,
            self.db,
            "operation",
            "SELECT key, doc FROM operation WHERE instr(doc, ?) > 0 ORDER BY key",
            (needle,),
        ):
            self.ops[key] = op
            self.specs[key] = op.spec
            self._operation(key, op)
        # A confirmation's key is its id, ORDER/OPERATION[/SPLIT]#N.
        for _, conf in _decode_rows(
            self.conn,
            self.db,
            "confirmation",
            "SELECT key, doc FROM confirmation WHERE instr(doc, ?) > 0 "
            "OR substr(key, 1, instr(key, '#') - 1) IN (SELECT value FROM json_each(?)) "
            "ORDER BY key",
            (needle, json.dumps(sorted(self.produced))),
        ):
            self._confirmation(conf)

    def _operation(self, key: str, op: Operation) -> None:
        k = op.key
        for i, load in enumerate(op.batch_loads):
            if load.batch != self.batch:
                continue
            after = next((n for n in op.batch_loads[i + 1 :] if n.material == load.material), None)
            until_ms = after.at.wall_ms if after else (op.ended.wall_ms if op.ended else None)
            self.loads[(key, load.material, load.at.wall_ms)] = Load(
                key,
                k.order,
                k.operation,
                k.split,
                load.material,
                self.clock.iso(load.at.wall_ms),
                load.actor,
                self.clock.iso(until_ms),
                after.batch if after else None,
                load.expiry,
                at_ms=load.at.wall_ms,
            )
        for mat, lines in op.consumed.items():
            if self.batch in lines:
                c = op.spec.component(mat)
                self.recorded[(key, mat)] = Recorded(
                    key, mat, number(lines[self.batch]), c.unit if c else ""
                )
                self.stored_recorded.add((key, mat))
        if op.spec.batch == self.batch:
            self.produced[key] = Produced(
                key,
                k.order,
                k.operation,
                k.split,
                op.spec.material,
                op.spec.unit,
                op.status.value,
                number(op.spec.target_qty),
            )

    def _confirmation(self, conf: Confirmation) -> None:
        op_key = str(conf.key)
        self.stored_confs.add(conf.conf_id)
        spec = self.specs.get(op_key) or OperationSpec(
            conf.key.order, conf.key.operation, "", ZERO, split=conf.key.split
        )
        mine = {
            m: {b: q for b, q in lines.items() if b == self.batch}
            for m, lines in conf.consumption.items()
        }
        for line in material.movements({m: ls for m, ls in mine.items() if ls}, spec):
            self.consumed[(conf.conf_id, str(line["material"]), str(line["direction"]))] = Consumed(
                conf.conf_id,
                op_key,
                conf.key.order,
                conf.key.operation,
                conf.key.split,
                conf.counter,
                conf.idem_key,
                None,
                str(line["material"]),
                number(_qty(line["qty"])),
                str(line["unit"]),
                str(line["direction"]),
                conf.posting_date,
                self.clock.iso(conf.period_end.wall_ms),
                conf.status.value,
                conf.erp_ref,
                conf.reversed,
                conf.reversal_idem_key,
                conf.reversal_status.value if conf.reversal_status else None,
            )
        if op_key in self.produced:
            t = conf.tally
            self.produced_confs[conf.conf_id] = ProducedConfirmation(
                conf.conf_id,
                conf.counter,
                conf.idem_key,
                None,
                conf.final,
                number(t.good),
                number(t.scrap_total),
                number(t.rework_total),
                conf.posting_date,
                self.clock.iso(conf.period_end.wall_ms),
                conf.status.value,
                conf.reversed,
            )

    # -------------------------------------------------------------- the events

    def from_events(self) -> None:
        events = _events(self.conn, self.batch)
        for ev in events:
            if ev.type == EventType.OPERATION_DISPATCHED:
                self._dispatched(ev)
        for ev in events:
            if ev.type == EventType.COMPONENT_BATCH_LOADED:
                self._loaded(ev)
            elif ev.type == EventType.COMPONENT_CONSUMED:
                self._recorded(ev)
            elif ev.type in _CONFIRMATION_EVENTS:
                self._confirmation_event(ev)
        self._answers()

    def _dispatched(self, ev: _Event) -> None:
        k = _key(ev.op)
        if k is None or ev.data.get("batch") != self.batch or str(k) in self.produced:
            return
        self.produced[str(k)] = Produced(
            str(k),
            k.order,
            k.operation,
            k.split,
            _text(ev.data.get("material")),
            _text(ev.data.get("unit")),
            None,
            number(_qty(ev.data.get("target_qty"))),
        )

    def _loaded(self, ev: _Event) -> None:
        k = _key(ev.op)
        mat = _text(ev.data.get("material"))
        if k is None or mat is None:
            return
        op_key = str(k)
        if ev.data.get("batch") == self.batch and (op_key, mat, ev.at_ms) not in self.loads:
            self.loads[(op_key, mat, ev.at_ms)] = Load(
                op_key,
                k.order,
                k.operation,
                k.split,
                mat,
                self.clock.iso(ev.at_ms),
                ev.actor,
                expiry=_text(ev.data.get("expiry")),
                operation_stored=op_key in self.ops,
                at_ms=ev.at_ms,
            )
        elif ev.data.get("previous_batch") == self.batch:
            # The next batch of the material: the load before it ends here.
            before = [
                load
                for load in self.loads.values()
                if (load.op, load.material) == (op_key, mat) and load.at_ms <= ev.at_ms
            ]
            if before:
                last = max(before, key=lambda load: load.at_ms)
                if last.replaced_by is None:
                    last.replaced_by = _text(ev.data.get("batch"))
                    last.until = self.clock.iso(ev.at_ms)

    def _recorded(self, ev: _Event) -> None:
        k = _key(ev.op)
        mat = _text(ev.data.get("material"))
        if k is None or mat is None or ev.data.get("batch") != self.batch:
            return
        where = (str(k), mat)
        qty = _qty(ev.data.get("qty"))
        row = self.recorded.get(where)
        if row is None:
            row = Recorded(str(k), mat, 0, _text(ev.data.get("unit")) or "")
            self.recorded[where] = row
        if where not in self.stored_recorded:  # the row is gone: the events add up
            row.qty = number(_qty(row.qty) + qty)
        row.records.append(
            {
                "event_id": ev.id,
                "at": self.clock.iso(ev.at_ms),
                "actor": ev.actor,
                "qty": number(qty),
            }
        )

    def _confirmation_event(self, ev: _Event) -> None:
        d = ev.data
        conf_id = _text(d.get("conf_id"))
        k = _key(ev.op)
        if conf_id is None or k is None:
            return
        op_key = str(k)
        index = d.get("conf_index")
        counter = index if isinstance(index, int) else 0
        if ev.type == EventType.CONFIRMATION_REVERSED:
            for done in self._rows_of(conf_id):
                done.reversed = True
                done.reversal_idem_key = done.reversal_idem_key or _text(d.get("idem_key"))
            if conf_id in self.produced_confs:
                self.produced_confs[conf_id].reversed = True
            return
        for line in _movements_of(d, self.batch):
            mat, direction = _text(line.get("material")) or "", _text(line.get("direction")) or ""
            row = self.consumed.get((conf_id, mat, direction))
            if row is not None:
                if not row.unit:
                    row.unit = _text(line.get("unit")) or ""
                if conf_id not in self.stored_confs:  # a corrected resend has a new key
                    row.idem_key = _text(d.get("idem_key"))
                continue
            self.consumed[(conf_id, mat, direction)] = Consumed(
                conf_id,
                op_key,
                k.order,
                k.operation,
                k.split,
                counter,
                _text(d.get("idem_key")),
                None,
                mat,
                number(_qty(line.get("qty"))),
                _text(line.get("unit")) or "",
                direction,
                _text(d.get("posting_date")),
                self.clock.iso(ev.at_ms),
                None,
            )
        if d.get("batch") == self.batch:
            known = self.produced_confs.get(conf_id)
            if known is not None:
                if conf_id not in self.stored_confs:
                    known.idem_key = _text(d.get("idem_key"))
                return
            if op_key not in self.produced:
                self.produced[op_key] = Produced(
                    op_key,
                    k.order,
                    k.operation,
                    k.split,
                    _text(d.get("material")),
                    _text(d.get("unit")),
                    None,
                    None,
                )
            self.produced_confs[conf_id] = ProducedConfirmation(
                conf_id,
                counter,
                _text(d.get("idem_key")),
                None,
                bool(d.get("final")),
                number(_qty(d.get("yield_qty"))),
                number(_qty(d.get("scrap_qty"))),
                number(_qty(d.get("rework_qty"))),
                _text(d.get("posting_date")),
                self.clock.iso(ev.at_ms),
                None,
            )

    def _rows_of(self, conf_id: str) -> list[Consumed]:
        return [row for row in self.consumed.values() if row.conf_id == conf_id]

    def _answers(self) -> None:
        """The relay's answers to what only the events know, and the messages' seq."""
        keys = {r.idem_key for r in self.consumed.values() if r.idem_key}
        keys |= {r.reversal_idem_key for r in self.consumed.values() if r.reversal_idem_key}
        keys |= {c.idem_key for c in self.produced_confs.values() if c.idem_key}
        if not keys:
            return
        wanted = json.dumps(sorted(keys))
        answers: dict[str, tuple[str, str | None]] = {}
        for idem, status, erp_ref in self.conn.execute(
            "SELECT json_extract(data, '$.idem_key'), json_extract(data, '$.status'), "
            "json_extract(data, '$.erp_ref') FROM event WHERE type = ? AND "
            "json_extract(data, '$.idem_key') IN (SELECT value FROM json_each(?)) ORDER BY id",
            (EventType.CONFIRMATION_RESULT.value, wanted),
        ):
            answers[idem] = (str(status), _text(erp_ref))
        seqs: dict[str, int | None] = {}
        for idem, env_seq in self.conn.execute(
            "SELECT idem_key, env_seq FROM outbox WHERE idem_key IN "
            "(SELECT value FROM json_each(?)) ORDER BY seq",
            (wanted,),
        ):
            seqs[idem] = env_seq
        for row in self.consumed.values():
            row.seq = seqs.get(row.idem_key or "")
            if row.erp_status is None and row.idem_key in answers:
                row.erp_status, row.erp_ref = answers[row.idem_key]
            if row.reversal_status is None and row.reversal_idem_key in answers:
                row.reversal_status = answers[row.reversal_idem_key][0]
        for conf in self.produced_confs.values():
            conf.seq = seqs.get(conf.idem_key or "")
            if conf.erp_status is None and conf.idem_key in answers:
                conf.erp_status = answers[conf.idem_key][0]

    # -------------------------------------------------------------- the answer

    def trace(self, db: Path) -> Trace:
        out = Trace(self.batch, str(db), self.clock.name)
        out.loads = sorted(self.loads.values(), key=lambda x: (x.at_ms, x.op, x.material))
        out.recorded = sorted(self.recorded.values(), key=lambda x: (x.op, x.material))
        out.consumed = sorted(
            self.consumed.values(),
            key=lambda x: (_key(x.op) or OperationKey("", ""), x.conf_index, x.material),
        )
        for conf_id, conf in sorted(self.produced_confs.items(), key=lambda c: c[1].conf_index):
            op_key = conf_id.rsplit("#", 1)[0]
            if op_key in self.produced:
                self.produced[op_key].confirmations.append(conf)
        out.produced = [self.produced[k] for k in sorted(self.produced)]
        oldest = self.conn.execute("SELECT MIN(at_wall_ms) FROM event").fetchone()[0]
        out.oldest_event_at = self.clock.iso(oldest)
        return out


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _zone_of(conn: sqlite3.Connection, fallback: str) -> str:
    row = conn.execute("SELECT json_extract(doc, '$.rules.timezone') FROM work_center").fetchone()
    return row[0] if row and isinstance(row[0], str) else fallback


def trace_batch(
    db: Path, batch: str, *, retention: RetentionPolicy | None = None, zone: str = "UTC"
) -> Trace:
    """Everything ``db`` still knows about ``batch``; TraceError naming the path or the batch."""
    check_batch(batch)
    policy = retention or RetentionPolicy()
    with read_only(db, TraceError) as conn:
        tracer = _Tracer(conn, db, batch, _Clock(_zone_of(conn, zone)))
        tracer.from_projections()
        tracer.from_events()
        out = tracer.trace(db)
    out.journal_days, out.finished_days = policy.journal_days, policy.finished_days
    return out


# ---------------------------------------------------------------------------- output


def _n(value: object) -> str:
    return "" if value is None else str(value)


def text_of(t: Trace) -> str:
    """The trace as people read it at the terminal."""
    lines = [f"batch {t.batch!r} in {t.database} (times in {t.time_zone})"]
    if not t.found:
        lines.append(nothing_found(t))
        return "\n".join(lines)
    lines.append("")
    lines.append(f"Loaded for {len(t.loads)} operation(s):" if t.loads else "Loaded: nowhere")
    for load in t.loads:
        until = ""
        if load.replaced_by:
            until = f", until {load.until} (replaced by {load.replaced_by!r})"
        elif load.until:
            until = f", until {load.until} (the operation ended)"
        elif not load.operation_stored:
            until = ", until not known (the operation's row is gone; found by its events)"
        else:
            until = ", still loaded"
        who = _n(load.actor)
        lines.append(f"  {load.op:<16} {load.material:<16} loaded {load.loaded_at} by {who}{until}")
    if t.recorded:
        lines.append("Consumption recorded:")
        for r in t.recorded:
            lines.append(f"  {r.op:<16} {r.material:<16} {r.qty} {r.unit}")
    lines.append("")
    if t.consumed:
        lines.append("Consumed by confirmations:")
        head: tuple[str, ...] = (
            "confirmation",
            "material",
            "qty",
            "unit",
            "dir",
            "seq",
            "posting",
            "ERP",
            "idem key",
        )
        rows: list[tuple[str, ...]] = [
            (
                c.conf_id,
                c.material,
                str(c.qty),
                c.unit,
                c.direction,
                _n(c.seq),
                _n(c.posting_date),
                _n(c.erp_status) + (" (reversed)" if c.reversed else ""),
                _n(c.idem_key),
            )
            for c in t.consumed
        ]
        lines += _table(head, rows)
    else:
        lines.append("Consumed by confirmations: none stored")
    lines.append("")
    if t.produced:
        lines.append(f"Produced by {len(t.produced)} operation(s):")
        for p in t.produced:
            status = p.status or "row gone, from its events"
            lines.append(
                f"  {p.op} {_n(p.material)}, target {_n(p.target_qty)} {_n(p.unit)} ({status})"
            )
            confs: list[tuple[str, ...]] = [
                (
                    c.conf_id,
                    "final" if c.final else "partial",
                    str(c.yield_qty),
                    str(c.scrap_qty),
                    str(c.rework_qty),
                    _n(c.seq),
                    _n(c.posting_date),
                    _n(c.erp_status) + (" (reversed)" if c.reversed else ""),
                )
                for c in p.confirmations
            ]
            head = ("confirmation", "kind", "yield", "scrap", "rework", "seq", "posting", "ERP")
            lines += ["  " + line for line in _table(head, confs)] if confs else []
    else:
        lines.append("Produced by: no operation stored")
    return "\n".join(lines)


def _table(head: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in (head, *rows)) for i in range(len(head))]
    return [
        "  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in (head, *rows)
    ]


def nothing_found(t: Trace) -> str:
    since = (
        f"the oldest event kept is from {t.oldest_event_at}"
        if t.oldest_event_at
        else ("it holds no events")
    )
    return (
        f"No operation or confirmation in {t.database} used or produced batch {t.batch!r}. "
        f"The store keeps events for {t.journal_days:g} days ([retention] journal_days; {since}) "
        f"and finished operations for {t.finished_days:g} days after they left memory "
        "([retention] finished_days)."
    )


# ---------------------------------------------------------------------------- the command


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``edge trace`` to the ``edge`` parser (called from ``edge.cli``)."""
    p = sub.add_parser(
        "trace",
        help="which operations and confirmations used or produced a batch (local store)",
        description="Which operations a batch was loaded for, which confirmations' goods "
        "movements consumed it, and which operations produced it, from the gateway's "
        "database within its retention. Reads the database only. Exit 0: found, 1: nothing "
        "found, 2: a bad batch or an unusable database.",
    )
    p.add_argument("batch", help="the batch number, as the ERP and the labels give it")
    p.add_argument("-c", "--config", help="config file (default: $EDGE_CONFIG or ...)")
    p.add_argument("--db", help="database file (default: [store] path of the config)")
    p.add_argument("--json", action="store_true", help="one JSON document")
    p.set_defaults(fn=cmd_trace)


def _config(args: argparse.Namespace) -> GatewayConfig | None:
    if args.db and not args.config and not os.environ.get("EDGE_CONFIG"):
        return None
    return load_config(config_path(args.config))


def cmd_trace(args: argparse.Namespace) -> int:
    try:
        check_batch(args.batch)
        cfg = _config(args)
        db = Path(args.db) if args.db else Path(cfg.store.path) if cfg else Path()
        policy = None
        zone = "UTC"
        if cfg is not None:
            r = cfg.retention
            policy = RetentionPolicy(journal_days=r.journal_days, finished_days=r.finished_days)
            zone = cfg.gateway.timezone
        result = trace_batch(db, args.batch, retention=policy, zone=zone)
    except TraceError as err:
        print(f"edge trace: {err}", file=sys.stderr)
        return EXIT_ERROR
    if args.json:
        print(json.dumps(result.payload(), indent=2, ensure_ascii=False))
        if not result.found:
            print(nothing_found(result), file=sys.stderr)
    else:
        print(text_of(result))
    return EXIT_FOUND if result.found else EXIT_NOTHING
