"""Orders down: the relay reads the ERP's released orders (an :class:`OrderSource`) and keeps
every work center's gateway told, in the contract's messages.

Every ``interval_s`` the dispatcher takes a snapshot and compares it with what it last sent
(kept in the ledger's database, so a restart or another relay goes on from there):

- an operation that became ``cancelled`` in the ERP: ``order/cancel`` (with the ERP's reason),
  and it leaves the list;
- the list changed (an operation added, changed, or gone from the ERP): the whole
  ``order/dispatch`` list again, with a new ``version`` (milliseconds since the epoch, and
  always above the last one; the gateway refuses an older one);
- an operation became ``held``: ``order/hold``; ``held`` → ``released``: ``order/release``.

Cancels go before the list, holds and releases after it (a hold names an operation the gateway
must already have). The state is written after the messages are acknowledged by the broker: a
relay that dies in between sends them again (the gateway applies the same list again under its
new version, and answers a second hold of a held operation on ``_mes_v1/rejected``, changing
nothing). A failed snapshot changes nothing: the last good list stands.

Several relays on one PostgreSQL ledger: one of them dispatches, the one holding the
``dispatch`` lease (renewed every interval; another takes over when it runs out).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any, Final

from pydantic import ValidationError

from edge.aio import wait_set, within
from edge.domain import limits as L
from edge.logging import Logger, get_logger
from edge.relay.db import Db, lock_schema
from edge.relay.orders import ErpOperation, ErpStatus, OrderSource, SnapshotFailed
from edge.sync.contract import (
    BadJson,
    DispatchListBody,
    InboundEnvelope,
    OperationMsg,
    OperationRefBody,
    parse_json,
    topic,
)
from edge.sync.mqtt import MqttLink

DISPATCH: Final = "_mes_v1/order/dispatch"
CANCEL: Final = "_mes_v1/order/cancel"
HOLD: Final = "_mes_v1/order/hold"
RELEASE: Final = "_mes_v1/order/release"
SNAPSHOT: Final = "_mes_v1/snapshot"
SNAPSHOT_BYTES: Final = 256 * 1024  # a snapshot lists the work center's operations
PUBLISH_TIMEOUT_S: Final = 30.0
MAX_LIST: Final = 2000  # DispatchListBody.operations

_DDL: Final = (
    "CREATE TABLE IF NOT EXISTS relay_dispatch ("
    "work_center TEXT PRIMARY KEY, root TEXT NOT NULL, version BIGINT NOT NULL, "
    "list_hash TEXT NOT NULL, statuses TEXT NOT NULL, sent_ms BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS relay_lease ("
    "name TEXT PRIMARY KEY, owner TEXT, until_ms BIGINT NOT NULL)",
)


@dataclass(frozen=True, slots=True)
class Target:
    """A work center (the ERP's name) and its gateway's root topic."""

    work_center: str
    root: str


@dataclass(frozen=True, slots=True)
class Sent:
    """What the dispatcher last told a work center."""

    version: int
    list_hash: str
    statuses: Mapping[str, ErpStatus]  # "order/operation/split" -> status


@dataclass(frozen=True, slots=True)
class Outgoing:
    path: str
    body: DispatchListBody | OperationRefBody


@dataclass(slots=True)
class Plan:
    messages: list[Outgoing] = field(default_factory=list)
    sent: Sent | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (operation, why)


def _key(op: ErpOperation) -> str:
    return f"{op.order_id}/{op.operation}/{op.split}"


def _num(value: Decimal) -> int | str:
    return int(value) if value == value.to_integral_value() else str(value)


def operation_msg(op: ErpOperation) -> OperationMsg:
    """The dispatch list's operation; ValidationError when the gateway would refuse it."""
    data: dict[str, Any] = {
        "order_id": op.order_id,
        "operation": op.operation,
        "split": op.split,
        "material": op.material,
        # a text is shortened, never a reason to leave the operation out
        "material_text": op.material_text[: L.MAX_TEXT],
        "quantity": _num(op.quantity),
        "unit": op.unit,
        "sequence": op.sequence,
        "planned_setup_s": op.planned_setup_s,
        "planned_run_s_per_unit": op.planned_run_s_per_unit,
        "parts_per_signal": _num(op.parts_per_signal),
        "latest_end": op.latest_end,
        "over_tolerance_pct": None
        if op.over_tolerance_pct is None
        else _num(op.over_tolerance_pct),
        "under_tolerance_pct": (
            None if op.under_tolerance_pct is None else _num(op.under_tolerance_pct)
        ),
        "crew_size": None if op.crew_size is None else _num(op.crew_size),
        "confirmation_no": op.confirmation_no,
        "components": [
            {
                "material": c.material,
                "qty_per_unit": _num(c.qty_per_unit),
                "unit": c.unit,
                "backflush": c.backflush,
                "batch_managed": c.batch_managed,
                "item": c.item,
            }
            for c in op.components
        ]
        or None,
    }
    return OperationMsg.model_validate({k: v for k, v in data.items() if v is not None})


def plan(previous: Sent | None, operations: Sequence[ErpOperation], now_ms: int) -> Plan:
    """What to send a work center, given what it was last sent and the ERP's operations now.
    Pure: no I/O, time passed in."""
    out = Plan()
    before: Mapping[str, ErpStatus] = previous.statuses if previous else {}
    listed: list[tuple[ErpOperation, OperationMsg]] = []
    statuses: dict[str, ErpStatus] = {}
    seen: set[str] = set()
    for op in sorted(operations, key=lambda o: (o.sequence, o.order_id, o.operation, o.split)):
        key = _key(op)
        if key in seen:
            out.skipped.append((key, "reported twice by the ERP; the first one is kept"))
            continue
        seen.add(key)
        if op.status == "cancelled":
            if key in before and before[key] != "cancelled":
                out.messages.append(Outgoing(CANCEL, _ref(op)))
                statuses[key] = "cancelled"
            continue
        try:
            msg = operation_msg(op)
        except ValidationError as exc:
            err = exc.errors(include_url=False)[0]
            where = ".".join(str(p) for p in err["loc"])
            out.skipped.append((key, f"{where} = {err.get('input')!r}: {err['msg']}"))
            continue
        if len(listed) >= MAX_LIST:
            out.skipped.append((key, f"the dispatch list holds at most {MAX_LIST} operations"))
            continue
        listed.append((op, msg))
        statuses[key] = op.status
    ops_json = [m.model_dump(mode="json", exclude_none=True) for _, m in listed]
    digest = hashlib.sha256(json.dumps(ops_json, sort_keys=True).encode()).hexdigest()
    version = previous.version if previous else 0
    if previous is None or digest != previous.list_hash:
        version = max(version + 1, now_ms)
        out.messages.append(
            Outgoing(
                DISPATCH,
                DispatchListBody(version=version, operations=[m for _, m in listed]),
            )
        )
    for op, _ in listed:
        key = _key(op)
        was = before.get(key)
        if op.status == "held" and was != "held":
            out.messages.append(Outgoing(HOLD, _ref(op)))
        elif op.status == "released" and was == "held":
            out.messages.append(Outgoing(RELEASE, _ref(op, with_reason=False)))
    # cancelled ones stay remembered while the ERP reports them, so they are cancelled once
    out.sent = Sent(version, digest, statuses)
    return out


def _ref(op: ErpOperation, *, with_reason: bool = True) -> OperationRefBody:
    reason = (op.status_text or op.status)[:200] if with_reason else None
    return OperationRefBody(
        order_id=op.order_id, operation=op.operation, split=op.split, reason=reason
    )


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


class Dispatcher:
    """Runs :func:`plan` for every target every ``interval_s`` and publishes the messages."""

    def __init__(
        self,
        source: OrderSource,
        targets: Sequence[Target],
        db: Db,
        link: MqttLink,
        *,
        owner: str,
        interval_s: float = 60.0,
        clock: Callable[[], int] = wall_ms,
        logger: Logger | None = None,
    ) -> None:
        self.source = source
        self.targets = list(targets)
        self.db = db
        self.link = link
        self.owner = owner
        self.interval_s = interval_s
        self.clock = clock
        self.log: Logger = logger or get_logger("edge.relay.dispatch", relay=owner)
        self.rounds = 0
        self.failures = 0
        self.sent_messages = 0
        self.last_error: str | None = None
        self.round_done = asyncio.Event()
        self._by_root = {t.root: t.work_center for t in self.targets}
        self._seen: dict[str, int] = {}  # work center -> dispatch_version its gateway reports
        self._answered: dict[str, int] = {}  # work center -> the reported version resent for
        self._wake = asyncio.Event()

    def topics(self) -> list[tuple[str, int]]:
        """The gateways' retained snapshots: they tell which dispatch version each holds."""
        return [(f"{t.root}/{SNAPSHOT}", 1) for t in self.targets]

    def on_message(self, topic_name: str, payload: bytes) -> bool:
        """A gateway's snapshot (True: it was one). A gateway that holds an older list than
        the one sent (it was offline without a session, or new) gets the list again, once per
        version it reports."""
        if not topic_name.endswith("/" + SNAPSHOT):
            return False
        work_center = self._by_root.get(topic_name[: -len(SNAPSHOT) - 1])
        if work_center is None:
            return True
        try:
            data = parse_json(payload, max_bytes=SNAPSHOT_BYTES)
        except BadJson:
            return True  # not a snapshot the dispatcher can read: ignored
        version = data.get("dispatch_version") if isinstance(data, dict) else None
        if isinstance(version, int) and not isinstance(version, bool):
            self._seen[work_center] = version
            self._wake.set()
        return True

    async def open(self) -> Dispatcher:
        await self.create_tables(self.db)
        return self

    @staticmethod
    async def create_tables(db: Db) -> None:
        async with db.transaction() as tx:
            await lock_schema(db, tx)
            for statement in _DDL:
                await tx.execute(statement)

    async def run(self) -> None:
        await self.source.start()
        try:
            while True:
                if await self._lead():
                    try:
                        await self.round()
                    except asyncio.CancelledError:
                        raise
                    except Exception as exc:
                        self.failures += 1
                        self.last_error = repr(exc)
                        self.log.exception("dispatch round failed")
                self.round_done.set()
                await wait_set(self._wake, self.interval_s)
                self._wake.clear()
        finally:
            await self.source.close()

    async def _lead(self) -> bool:
        """Take or renew the dispatch lease (one dispatcher among relays sharing a ledger)."""
        now = self.clock()
        until = now + int(self.interval_s * 3 * 1000)
        async with self.db.transaction() as tx:
            await tx.execute(
                "INSERT INTO relay_lease (name, owner, until_ms) VALUES ('dispatch', NULL, 0) "
                "ON CONFLICT (name) DO NOTHING"
            )
            taken: int = await tx.execute(
                "UPDATE relay_lease SET owner = ?, until_ms = ? "
                "WHERE name = 'dispatch' AND (owner = ? OR owner IS NULL OR until_ms < ?)",
                (self.owner, until, self.owner, now),
            )
        return taken == 1

    async def round(self) -> None:
        """One snapshot, and what it asks to send."""
        self.rounds += 1
        snapshot = await self.source.snapshot([t.work_center for t in self.targets])
        if isinstance(snapshot, SnapshotFailed):
            self.failures += 1
            self.last_error = snapshot.text
            self.log.warning("order snapshot failed; the last lists stand", error=snapshot.text)
            return
        self.last_error = None
        for target in self.targets:
            previous = await self._sent(target.work_center)
            seen = self._seen.get(target.work_center)
            if (
                previous is not None
                and seen is not None
                and seen < previous.version
                and self._answered.get(target.work_center) != seen
            ):
                self._answered[target.work_center] = seen
                self.log.info(
                    "gateway holds an older dispatch list; sending it again",
                    work_center=target.work_center,
                    holds=seen,
                    sent=previous.version,
                )
                previous = replace(previous, list_hash="")
            p = plan(previous, snapshot.get(target.work_center, []), self.clock())
            for key, why in p.skipped:
                self.log.warning(
                    "operation left out of the dispatch list",
                    work_center=target.work_center,
                    operation=key,
                    reason=why,
                )
            for message in p.messages:
                await self._publish(target.root, message)
            if p.sent is not None and (p.messages or previous is None):
                await self._store(target, p.sent)

    async def _publish(self, root: str, message: Outgoing) -> None:
        t = topic(message.path)
        envelope = InboundEnvelope(
            schema=t.schema,
            msg_id=str(uuid.uuid4()),
            ts_ms=self.clock(),
            body=message.body.model_dump(mode="json", by_alias=True, exclude_none=True),
        )
        payload = envelope.model_dump_json(by_alias=True, exclude_none=True).encode()
        code = await within(
            self.link.publish(f"{root}/{message.path}", payload, qos=t.qos, retain=t.retain),
            PUBLISH_TIMEOUT_S,
        )
        if code >= 0x80:
            raise ConnectionError(f"the broker refused {message.path} for {root} (reason {code})")
        self.sent_messages += 1
        body = message.body
        if isinstance(body, DispatchListBody):
            self.log.info(
                "dispatch list sent",
                root=root,
                version=body.version,
                operations=len(body.operations),
                msg_id=envelope.msg_id,
            )
        else:
            self.log.info(
                f"{message.path.rsplit('/', 1)[-1]} sent",
                root=root,
                order=body.order_id,
                operation=body.operation,
                reason=body.reason,
                msg_id=envelope.msg_id,
            )

    async def _sent(self, work_center: str) -> Sent | None:
        async with self.db.transaction() as tx:
            rows = await tx.fetch(
                "SELECT version, list_hash, statuses FROM relay_dispatch WHERE work_center = ?",
                (work_center,),
            )
        if not rows:
            return None
        row = rows[0]
        return Sent(int(row["version"]), row["list_hash"], json.loads(row["statuses"]))

    async def _store(self, target: Target, sent: Sent) -> None:
        async with self.db.transaction() as tx:
            await tx.execute(
                "INSERT INTO relay_dispatch (work_center, root, version, list_hash, statuses, "
                "sent_ms) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (work_center) DO UPDATE SET "
                "root = excluded.root, version = excluded.version, "
                "list_hash = excluded.list_hash, statuses = excluded.statuses, "
                "sent_ms = excluded.sent_ms",
                (
                    target.work_center,
                    target.root,
                    sent.version,
                    sent.list_hash,
                    json.dumps(dict(sent.statuses), sort_keys=True),
                    self.clock(),
                ),
            )
