"""Central's side of the MQTT contract: an ERP relay stand-in and a dispatcher, over one connection.

Run it next to a gateway::

    python -m simulators.central --host 127.0.0.1 --port 1883 \\
        --root umh/v1/acme/plant1/stamping/line4/PRESS07 --ledger central.db \\
        --reject 1000124="order locked by user" --delay-s 0.5 --dispatch-demo

or use it from a test::

    async with CentralSimulator(broker.host, broker.port, roots=[root]) as central:
        await central.dispatcher.send_dispatch(root, 1, [op])
        central.relay.reject_order("4712", "order locked by user")
        answer = await central.relay.wait_answer(idem_key, timeout=5)
        assert central.ledger.totals("4711", "0010")["yield"] == 250

:class:`ErpRelay` answers every confirmation and reversal by its ``idem_key`` on
``<root>/_mes_v1/confirmation/result`` (``posted`` once, then ``duplicate``; ``rejected`` by rule)
and keeps a :class:`Ledger` of what it posted. :class:`Dispatcher` sends dispatch lists, master
data and cancel/hold/release, and keeps what the gateway answers on ``order/received`` and
``rejected``. Every message is built and checked with the models of :mod:`edge.sync.contract`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sqlite3
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from types import TracebackType
from typing import Any, Generic, Literal, TypeVar

import aiomqtt
from pydantic import BaseModel, ValidationError

from edge.logging import configure_logging, get_logger
from edge.sync.contract import (
    ConfirmationBody,
    ConfirmationCancelBody,
    ConfirmationResultBody,
    DispatchListBody,
    DispatchReceivedBody,
    Envelope,
    ErpError,
    InboundEnvelope,
    MasterDataBody,
    MergeBody,
    OperationKeyMsg,
    OperationMsg,
    OperationRefBody,
    RejectedBody,
    topic,
)

__all__ = [
    "Answer",
    "Arrival",
    "CentralSimulator",
    "Dispatcher",
    "ErpRelay",
    "Ledger",
    "MqttLink",
    "demo_dispatch",
    "main",
]

log = get_logger(__name__)

CONFIRMATION = "_mes_v1/confirmation"
CONFIRMATION_CANCEL = "_mes_v1/confirmation/cancel"
CONFIRMATION_RESULT = "_mes_v1/confirmation/result"
DISPATCH = "_mes_v1/order/dispatch"
ORDER_CANCEL = "_mes_v1/order/cancel"
ORDER_HOLD = "_mes_v1/order/hold"
ORDER_RELEASE = "_mes_v1/order/release"
ORDER_MERGE = "_mes_v1/order/merge"
MASTERDATA = "_mes_v1/masterdata"
ORDER_RECEIVED = "_mes_v1/order/received"
REJECTED = "_mes_v1/rejected"
RELAY_STATE = "_mes_v1/relay/state"  # under umh/v1/<enterprise>, not under a work center root

Handler = Callable[[str, bytes], None]
OnConnect = Callable[[], Awaitable[None]]
ResultStatus = Literal["posted", "duplicate", "rejected", "retrying"]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"


def jsonable(value: Any) -> Any:
    """Decimals as the gateway writes them: whole numbers as integers, others as exact text."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else str(value)
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def quantity(value: int | Decimal | str) -> Decimal:
    """A contract quantity as a Decimal; ValueError for text that is not a finite number."""
    try:
        q = Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"not a quantity: {value!r}") from None
    if not q.is_finite():
        raise ValueError(f"not a quantity: {value!r}")
    return q


def split_topic(topic_name: str, suffix: str) -> str:
    """The root of ``topic_name`` = everything before ``/<suffix>``."""
    return topic_name[: -(len(suffix) + 1)]


def enterprise_of(root: str) -> str | None:
    """The 3rd level of a ``umh/v1/<enterprise>/...`` root, or None if it is a wildcard."""
    levels = root.split("/")
    if len(levels) < 3 or levels[2] in ("+", "#"):
        return None
    return levels[2]


def relay_state_topic(enterprise: str) -> str:
    return f"umh/v1/{enterprise}/{RELAY_STATE}"


# ---------------------------------------------------------------------------------- MQTT link


class MqttLink:
    """One MQTT 5 connection (aiomqtt) that reconnects with backoff and re-subscribes.

    Components register topic filters with a handler (called with topic and payload, in the
    event loop) and coroutines to run after every (re)connect. ``publish`` waits for a
    connection and retries across reconnects until its timeout.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        client_id: str | None = None,
        keepalive: int = 10,
        reconnect_min_s: float = 0.1,
        reconnect_max_s: float = 2.0,
    ) -> None:
        self.host = host
        self.port = port
        self.client_id = client_id or f"central-sim-{uuid.uuid4().hex[:10]}"
        self.keepalive = keepalive
        self.reconnect_min_s = reconnect_min_s
        self.reconnect_max_s = reconnect_max_s
        self.will: aiomqtt.Will | None = None
        self.connected = asyncio.Event()
        self.connects = 0
        self._filters: list[tuple[str, Handler]] = []
        self._on_connect: list[OnConnect] = []
        self._client: aiomqtt.Client | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def subscribe(self, topic_filter: str, handler: Handler) -> None:
        """Register before ``start`` (later ones apply from the next reconnect)."""
        self._filters.append((topic_filter, handler))

    def on_connect(self, callback: OnConnect) -> None:
        self._on_connect.append(callback)

    async def start(self) -> None:
        if self._task is None:
            self._stopping = False
            self._task = asyncio.create_task(self._run(), name=f"mqtt-link-{self.client_id}")

    async def stop(self) -> None:
        self._stopping = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.connected.clear()

    async def wait_connected(self, timeout: float) -> None:
        await asyncio.wait_for(self.connected.wait(), timeout)

    async def publish(
        self,
        topic_name: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        timeout: float = 30.0,
    ) -> None:
        """Publish, waiting for a connection; TimeoutError if not done within ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"publish to {topic_name} not acknowledged in {timeout}s")
            client = self._client
            if client is None or not self.connected.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.connected.wait(), remaining)
                continue
            try:
                await client.publish(
                    topic_name, payload, qos=qos, retain=retain, timeout=min(5.0, remaining)
                )
                return
            except aiomqtt.MqttError as exc:
                log.debug("central_publish_retry", topic=topic_name, error=str(exc))
                await asyncio.sleep(min(0.1, max(0.0, deadline - time.monotonic())))

    async def _run(self) -> None:
        delay = self.reconnect_min_s
        while not self._stop_requested():
            client = aiomqtt.Client(
                self.host,
                self.port,
                identifier=self.client_id,
                protocol=aiomqtt.ProtocolVersion.V5,
                will=self.will,
                keepalive=self.keepalive,
                timeout=5.0,
            )
            try:
                async with client:
                    for topic_filter in dict.fromkeys(f for f, _ in self._filters):
                        await client.subscribe(topic_filter, qos=1)
                    self._client = client
                    self.connects += 1
                    self.connected.set()
                    delay = self.reconnect_min_s
                    log.info(
                        "central_connected",
                        broker=f"{self.host}:{self.port}",
                        client_id=self.client_id,
                        connects=self.connects,
                    )
                    for callback in self._on_connect:
                        await callback()
                    async for message in client.messages:
                        self._dispatch(message.topic.value, message.payload)
            except aiomqtt.MqttError as exc:
                if not self._stop_requested():
                    log.warning("central_disconnected", error=str(exc), retry_in_s=round(delay, 2))
            except Exception:
                log.exception("central_link_failed", retry_in_s=round(delay, 2))
            finally:
                self._client = None
                self.connected.clear()
            if self._stop_requested():
                break
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.reconnect_max_s)

    def _stop_requested(self) -> bool:
        return self._stopping

    def _dispatch(self, topic_name: str, payload: Any) -> None:
        data = payload if isinstance(payload, bytes) else str(payload or "").encode()
        t = aiomqtt.Topic(topic_name)
        seen: set[int] = set()
        for topic_filter, handler in self._filters:
            if id(handler) in seen or not t.matches(topic_filter):
                continue
            seen.add(id(handler))
            try:
                handler(topic_name, data)
            except Exception:
                log.exception("central_handler_failed", topic=topic_name)


# -------------------------------------------------------------------------------------- ledger

_SCHEMA = """
CREATE TABLE IF NOT EXISTS confirmation (
    idem_key TEXT PRIMARY KEY,
    msg_id TEXT NOT NULL,
    root TEXT NOT NULL,
    edge_id TEXT NOT NULL,
    order_id TEXT,
    operation TEXT,
    split INTEGER NOT NULL,
    conf_id TEXT NOT NULL,
    conf_index INTEGER NOT NULL,
    kind TEXT NOT NULL,
    final INTEGER NOT NULL,
    unit TEXT NOT NULL,
    yield_qty TEXT NOT NULL,
    scrap_qty TEXT NOT NULL,
    scrap_by_reason TEXT NOT NULL,
    rework_qty TEXT NOT NULL,
    rework_by_reason TEXT NOT NULL,
    posting_date TEXT NOT NULL,
    received_ms INTEGER NOT NULL,
    posted_ms INTEGER NOT NULL,
    confirmation_group TEXT NOT NULL,
    confirmation_count TEXT NOT NULL,
    reversed INTEGER NOT NULL DEFAULT 0,
    reversed_by TEXT
);
CREATE INDEX IF NOT EXISTS confirmation_op ON confirmation (order_id, operation, split);
CREATE TABLE IF NOT EXISTS reversal (
    idem_key TEXT PRIMARY KEY,
    msg_id TEXT NOT NULL,
    root TEXT NOT NULL,
    edge_id TEXT NOT NULL,
    reverses_idem_key TEXT NOT NULL,
    order_id TEXT,
    operation TEXT,
    split INTEGER NOT NULL,
    conf_index INTEGER NOT NULL,
    received_ms INTEGER NOT NULL,
    posted_ms INTEGER NOT NULL,
    confirmation_count TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS inbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    topic TEXT NOT NULL,
    msg_id TEXT NOT NULL,
    idem_key TEXT NOT NULL,
    edge_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    historical INTEGER NOT NULL,
    received_ms INTEGER NOT NULL,
    answered_ms INTEGER,
    status TEXT
);
CREATE INDEX IF NOT EXISTS inbox_idem ON inbox (idem_key);
"""

_QTY_COLUMNS = ("yield_qty", "scrap_qty", "rework_qty")
_REASON_COLUMNS = ("scrap_by_reason", "rework_by_reason")


class Ledger:
    """What the ERP relay posted, in SQLite (a file, or memory when ``path`` is None).

    ``confirmation``: one row per posted confirmation (idem_key is the primary key, so a key is
    posted at most once); ``reversal``: posted reversals; ``inbox``: every valid confirmation or
    reversal that arrived, with the status it was answered with. ``received`` counts messages
    seen, duplicates, invalid ones and the rest (in memory).
    """

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = str(path) if path else ":memory:"
        self.db = sqlite3.connect(self.path, isolation_level=None)
        self.db.row_factory = sqlite3.Row
        if self.path != ":memory:":
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(_SCHEMA)
        self.received: Counter[str] = Counter()

    def close(self) -> None:
        self.db.close()

    # -- writes (the relay)

    def record_arrival(
        self,
        kind: str,
        topic_name: str,
        env: Envelope[ConfirmationBody] | Envelope[ConfirmationCancelBody],
    ) -> int:
        cur = self.db.execute(
            "INSERT INTO inbox (kind, topic, msg_id, idem_key, edge_id, seq, historical,"
            " received_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                kind,
                topic_name,
                env.msg_id,
                env.body.idem_key,
                env.edge_id,
                env.seq,
                int(env.historical),
                now_ms(),
            ),
        )
        return int(cur.lastrowid or 0)

    def record_answer(self, inbox_id: int, status: str) -> None:
        self.db.execute(
            "UPDATE inbox SET status = ?, answered_ms = ? WHERE id = ?",
            (status, now_ms(), inbox_id),
        )

    def confirmation(self, idem_key: str) -> dict[str, Any] | None:
        row = self.db.execute(
            "SELECT * FROM confirmation WHERE idem_key = ?", (idem_key,)
        ).fetchone()
        return self._row(row) if row is not None else None

    def reversal(self, idem_key: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT * FROM reversal WHERE idem_key = ?", (idem_key,)).fetchone()
        return dict(row) if row is not None else None

    def _next_count(self, group: str) -> str:
        row = self.db.execute(
            "SELECT (SELECT count(*) FROM confirmation WHERE confirmation_group = ?)"
            " + (SELECT count(*) FROM reversal r JOIN confirmation c"
            "    ON c.idem_key = r.reverses_idem_key WHERE c.confirmation_group = ?)",
            (group, group),
        ).fetchone()
        return f"{int(row[0]) + 1:08d}"

    def post_confirmation(
        self, root: str, env: Envelope[ConfirmationBody], received_ms: int
    ) -> dict[str, Any]:
        b = env.body
        split = b.split or 0
        group = b.confirmation_no or f"{b.order_id}/{b.operation}/{split}"
        count = self._next_count(group)
        self.db.execute(
            "INSERT INTO confirmation (idem_key, msg_id, root, edge_id, order_id, operation,"
            " split, conf_id, conf_index, kind, final, unit, yield_qty, scrap_qty,"
            " scrap_by_reason, rework_qty, rework_by_reason, posting_date, received_ms,"
            " posted_ms, confirmation_group, confirmation_count)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                b.idem_key,
                env.msg_id,
                root,
                env.edge_id,
                b.order_id,
                b.operation,
                split,
                b.conf_id,
                b.conf_index,
                b.kind,
                int(b.final),
                b.unit,
                str(quantity(b.yield_qty)),
                str(quantity(b.scrap_qty)),
                json.dumps({r.code: str(quantity(r.qty)) for r in b.scrap_by_reason}),
                str(quantity(b.rework_qty)),
                json.dumps({r.code: str(quantity(r.qty)) for r in b.rework_by_reason}),
                b.posting_date,
                received_ms,
                now_ms(),
                group,
                count,
            ),
        )
        self.received["posted"] += 1
        row = self.confirmation(b.idem_key)
        assert row is not None
        return row

    def post_reversal(
        self,
        root: str,
        env: Envelope[ConfirmationCancelBody],
        target: Mapping[str, Any],
        received_ms: int,
    ) -> str:
        b = env.body
        count = self._next_count(str(target["confirmation_group"]))
        with self.db:  # one transaction: the reversal row and the reversed flag
            self.db.execute("BEGIN")
            self.db.execute(
                "INSERT INTO reversal (idem_key, msg_id, root, edge_id, reverses_idem_key,"
                " order_id, operation, split, conf_index, received_ms, posted_ms,"
                " confirmation_count) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    b.idem_key,
                    env.msg_id,
                    root,
                    env.edge_id,
                    b.reverses_idem_key,
                    b.order_id,
                    b.operation,
                    b.split or 0,
                    b.conf_index,
                    received_ms,
                    now_ms(),
                    count,
                ),
            )
            self.db.execute(
                "UPDATE confirmation SET reversed = 1, reversed_by = ? WHERE idem_key = ?",
                (b.idem_key, b.reverses_idem_key),
            )
        self.received["reversed"] += 1
        return count

    # -- reads (tests)

    @staticmethod
    def _row(row: sqlite3.Row) -> dict[str, Any]:
        out = dict(row)
        for col in _QTY_COLUMNS:
            out[col] = Decimal(out[col])
        for col in _REASON_COLUMNS:
            out[col] = {k: Decimal(v) for k, v in json.loads(out[col]).items()}
        out["final"] = bool(out["final"])
        out["reversed"] = bool(out["reversed"])
        return out

    def posted(self) -> list[dict[str, Any]]:
        """Every posted confirmation (reversed ones too, with ``reversed`` True), oldest first."""
        rows = self.db.execute("SELECT * FROM confirmation ORDER BY posted_ms, rowid").fetchall()
        return [self._row(r) for r in rows]

    def reversals(self) -> list[dict[str, Any]]:
        rows = self.db.execute("SELECT * FROM reversal ORDER BY posted_ms, rowid").fetchall()
        return [dict(r) for r in rows]

    def inbox(self) -> list[dict[str, Any]]:
        """Every valid confirmation or reversal that arrived, with the answer it got (or None)."""
        return [dict(r) for r in self.db.execute("SELECT * FROM inbox ORDER BY id").fetchall()]

    def totals(self, order_id: str, operation: str, split: int = 0) -> dict[str, Any]:
        """Sum of the posted, non-reversed confirmations of one operation.

        ``{"yield", "scrap", "rework": Decimal, "scrap_by_reason", "rework_by_reason":
        {code: Decimal}, "confirmations": int, "final": bool}``.
        """
        rows = self.db.execute(
            "SELECT * FROM confirmation WHERE order_id = ? AND operation = ? AND split = ?"
            " AND reversed = 0 ORDER BY conf_index",
            (order_id, operation, split),
        ).fetchall()
        out: dict[str, Any] = {
            "yield": Decimal(0),
            "scrap": Decimal(0),
            "rework": Decimal(0),
            "scrap_by_reason": {},
            "rework_by_reason": {},
            "confirmations": 0,
            "final": False,
        }
        for raw in rows:
            row = self._row(raw)
            out["yield"] += row["yield_qty"]
            out["scrap"] += row["scrap_qty"]
            out["rework"] += row["rework_qty"]
            for col in _REASON_COLUMNS:
                acc: dict[str, Decimal] = out[col]
                for code, qty in row[col].items():
                    acc[code] = acc.get(code, Decimal(0)) + qty
            out["confirmations"] += 1
            out["final"] = out["final"] or row["final"]
        return out

    def count_by_idem(self) -> dict[str, int]:
        """idem_key -> how many times the relay answered ``posted`` for it (1 = exactly once)."""
        rows = self.db.execute(
            "SELECT idem_key, count(*) FROM inbox WHERE status = 'posted' GROUP BY idem_key"
        ).fetchall()
        return {str(k): int(n) for k, n in rows}

    def arrivals_by_idem(self) -> dict[str, int]:
        """idem_key -> how many times it arrived (resends included)."""
        rows = self.db.execute("SELECT idem_key, count(*) FROM inbox GROUP BY idem_key").fetchall()
        return {str(k): int(n) for k, n in rows}


# ---------------------------------------------------------------------------------- waiting


T = TypeVar("T")


class _Waiters(Generic[T]):
    """Futures resolved by the first item appended (or already present) that matches."""

    def __init__(self) -> None:
        self.items: list[T] = []
        self._waiting: list[tuple[Callable[[T], bool], asyncio.Future[T]]] = []

    def append(self, item: T) -> None:
        self.items.append(item)
        still: list[tuple[Callable[[T], bool], asyncio.Future[T]]] = []
        for predicate, fut in self._waiting:
            if fut.done():
                continue
            if predicate(item):
                fut.set_result(item)
            else:
                still.append((predicate, fut))
        self._waiting = still

    async def wait(self, predicate: Callable[[T], bool], timeout: float, start: int = 0) -> T:
        for item in self.items[start:]:
            if predicate(item):
                return item
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._waiting.append((predicate, fut))
        try:
            return await asyncio.wait_for(fut, timeout)
        finally:
            fut.cancel()


# ------------------------------------------------------------------------------------ relay


@dataclass(frozen=True, slots=True)
class Answer:
    """One ``confirmation/result`` the relay published."""

    topic: str
    root: str
    msg_id: str
    kind: Literal["confirmation", "reversal"]
    body: ConfirmationResultBody
    at_ms: int

    @property
    def idem_key(self) -> str:
        return self.body.idem_key

    @property
    def status(self) -> ResultStatus:
        return self.body.status


@dataclass(slots=True)
class _Pending:
    inbox_id: int
    kind: Literal["confirmation", "reversal"]
    topic: str
    root: str
    env: Envelope[ConfirmationBody] | Envelope[ConfirmationCancelBody]
    received_ms: int
    arrived: float = field(default_factory=time.monotonic)


class ErpRelay:
    """The ERP relay stand-in: answers confirmations and reversals by ``idem_key``.

    Invalid messages are logged and counted (``ledger.received["invalid"]``), never answered.
    Answers go out in arrival order, each ``delay_s`` after it arrived at the earliest; a paused
    relay records what arrives and answers when resumed.
    """

    def __init__(
        self,
        link: MqttLink,
        roots: Sequence[str],
        ledger: Ledger,
        *,
        enterprise: str | None = None,
        delay_s: float = 0.0,
        reject: Mapping[str, str] | None = None,
        erp_system: str = "sim",
    ) -> None:
        self.link = link
        self.roots = list(roots)
        self.ledger = ledger
        self.erp_system = erp_system
        self._delay_s = float(delay_s)
        self._rejections: dict[str, ErpError] = {}
        for order_id, text in (reject or {}).items():
            self.reject_order(order_id, text)
        self._paused = False
        self._forget_before = 0.0  # what arrived before this is dropped unanswered
        self._changed = asyncio.Event()
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._answers: _Waiters[Answer] = _Waiters()
        self._worker: asyncio.Task[None] | None = None
        self._unanswered = 0
        enterprises = [enterprise] if enterprise else [enterprise_of(r) for r in self.roots]
        self.state_topics: list[str] = list(
            dict.fromkeys(relay_state_topic(e) for e in enterprises if e)
        )
        if not self.state_topics:
            log.warning("relay_state_not_published", reason="no enterprise in the roots")
        for root in self.roots:
            link.subscribe(f"{root}/{CONFIRMATION}", self._on_confirmation)
            link.subscribe(f"{root}/{CONFIRMATION_CANCEL}", self._on_cancel)
        if self.state_topics:
            # one Last Will per connection: the first enterprise's relay state
            link.will = aiomqtt.Will(
                self.state_topics[0], json.dumps({"online": False}), qos=1, retain=True
            )
        link.on_connect(self._publish_online)

    # -- runtime knobs

    @property
    def delay_s(self) -> float:
        return self._delay_s

    @delay_s.setter
    def delay_s(self, seconds: float) -> None:
        self.set_delay(seconds)

    def set_delay(self, seconds: float) -> None:
        """Answer each message ``seconds`` after it arrived (applies to pending ones too)."""
        self._delay_s = max(0.0, float(seconds))
        self._changed.set()

    def reject_order(self, order_id: str, text: str, code: str | None = None) -> None:
        """Reject confirmations and reversals of ``order_id`` with ``text`` (until removed)."""
        self._rejections[order_id] = ErpError(text=text, code=code)

    def unreject_order(self, order_id: str) -> None:
        self._rejections.pop(order_id, None)

    def clear_rejections(self) -> None:
        self._rejections.clear()

    @property
    def rejections(self) -> dict[str, str]:
        return {k: v.text for k, v in self._rejections.items()}

    def pause(self) -> None:
        """Stop answering; arrivals are still recorded and answered after ``resume``."""
        self._paused = True
        self._changed.set()

    def resume(self) -> None:
        self._paused = False
        self._changed.set()

    @property
    def paused(self) -> bool:
        return self._paused

    def forget_pending(self) -> int:
        """Drop what arrived and is not answered yet, as a relay does whose connection broke
        before it took them (a clean session keeps nothing); returns how many."""
        self._forget_before = time.monotonic()
        self._changed.set()
        return self._unanswered

    @property
    def pending(self) -> int:
        """Arrived, not answered yet."""
        return self._unanswered

    @property
    def answers(self) -> list[Answer]:
        return list(self._answers.items)

    async def wait_answer(
        self, idem_key: str, *, status: ResultStatus | None = None, timeout: float = 10.0
    ) -> Answer:
        """The first answer for ``idem_key`` (with ``status``, if given); TimeoutError if none."""
        return await self._answers.wait(
            lambda a: a.idem_key == idem_key and (status is None or a.status == status), timeout
        )

    # -- lifecycle

    async def start(self) -> None:
        if self._worker is None:
            self._worker = asyncio.create_task(self._work(), name="erp-relay")

    async def stop(self, *, announce_offline: bool = True) -> None:
        if announce_offline and self.link.connected.is_set():
            payload = json.dumps({"online": False, "ts_ms": now_ms()}).encode()
            for state_topic in self.state_topics:
                with contextlib.suppress(TimeoutError):
                    await self.link.publish(state_topic, payload, retain=True, timeout=2.0)
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker

    async def _publish_online(self) -> None:
        payload = json.dumps({"online": True, "ts_ms": now_ms()}).encode()
        for state_topic in self.state_topics:
            await self.link.publish(state_topic, payload, retain=True, timeout=5.0)

    # -- inbound

    def _on_confirmation(self, topic_name: str, payload: bytes) -> None:
        self._arrive("confirmation", topic_name, payload)

    def _on_cancel(self, topic_name: str, payload: bytes) -> None:
        self._arrive("reversal", topic_name, payload)

    def _arrive(
        self, kind: Literal["confirmation", "reversal"], topic_name: str, payload: bytes
    ) -> None:
        counts = self.ledger.received
        counts["messages"] += 1
        env: Envelope[ConfirmationBody] | Envelope[ConfirmationCancelBody]
        try:
            if kind == "confirmation":
                env = Envelope[ConfirmationBody].model_validate_json(payload)
                expected = topic(CONFIRMATION).schema
                b = env.body
                for q in (b.yield_qty, b.scrap_qty, b.rework_qty):
                    quantity(q)
            else:
                env = Envelope[ConfirmationCancelBody].model_validate_json(payload)
                expected = topic(CONFIRMATION_CANCEL).schema
            if env.schema_ != expected:
                raise ValueError(f"schema {env.schema_!r}, expected {expected!r}")
            for r in (*env.body.scrap_by_reason, *env.body.rework_by_reason):
                quantity(r.qty)
        except (ValidationError, ValueError) as exc:
            counts["invalid"] += 1
            log.warning(
                "relay_invalid_message",
                topic=topic_name,
                error=str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
                errors=exc.error_count() if isinstance(exc, ValidationError) else 1,
                size=len(payload),
            )
            return
        counts["confirmations" if kind == "confirmation" else "reversals"] += 1
        if env.historical:
            counts["historical"] += 1
        suffix = CONFIRMATION if kind == "confirmation" else CONFIRMATION_CANCEL
        inbox_id = self.ledger.record_arrival(kind, topic_name, env)
        self._unanswered += 1
        self._queue.put_nowait(
            _Pending(inbox_id, kind, topic_name, split_topic(topic_name, suffix), env, now_ms())
        )
        log.debug(
            "relay_received",
            kind=kind,
            idem_key=env.body.idem_key,
            edge_id=env.edge_id,
            seq=env.seq,
            historical=env.historical,
            order=env.body.order_id,
            paused=self._paused,
        )

    # -- answering

    async def _wait_turn(self, item: _Pending) -> None:
        while True:
            self._changed.clear()
            wait_s = item.arrived + self._delay_s - time.monotonic()
            if (not self._paused and wait_s <= 0) or item.arrived < self._forget_before:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._changed.wait(), None if self._paused else max(wait_s, 0.001)
                )

    async def _work(self) -> None:
        while True:
            item = await self._queue.get()
            try:
                await self._wait_turn(item)
                if item.arrived < self._forget_before:
                    continue  # forgotten: never answered
                body = self._decide(item)
                await self._answer(item, body)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("relay_answer_failed", idem_key=item.env.body.idem_key)
            finally:
                self._unanswered -= 1
                self._queue.task_done()

    def _decide(self, item: _Pending) -> ConfirmationResultBody:
        counts = self.ledger.received
        b = item.env.body
        ts = _iso(now_ms())
        rule = self._rejections.get(b.order_id or "")
        if item.kind == "confirmation":
            assert isinstance(b, ConfirmationBody)
            done = self.ledger.confirmation(b.idem_key)
            if done is not None:
                counts["duplicates"] += 1
                return ConfirmationResultBody(
                    idem_key=b.idem_key, status="duplicate", erp=self._erp(done), ts=ts
                )
            if rule is not None:
                counts["rejected"] += 1
                return ConfirmationResultBody(
                    idem_key=b.idem_key, status="rejected", error=rule, ts=ts
                )
            row = self.ledger.post_confirmation(
                item.root,
                item.env,  # type: ignore[arg-type]
                item.received_ms,
            )
            return ConfirmationResultBody(
                idem_key=b.idem_key, status="posted", erp=self._erp(row), ts=ts
            )
        assert isinstance(b, ConfirmationCancelBody)
        done_rev = self.ledger.reversal(b.idem_key)
        if done_rev is not None:
            counts["duplicates"] += 1
            return ConfirmationResultBody(
                idem_key=b.idem_key,
                status="duplicate",
                erp={
                    "system": self.erp_system,
                    "confirmation_count": done_rev["confirmation_count"],
                },
                ts=ts,
            )
        if rule is not None:
            counts["rejected"] += 1
            return ConfirmationResultBody(idem_key=b.idem_key, status="rejected", error=rule, ts=ts)
        target = self.ledger.confirmation(b.reverses_idem_key)
        if target is None:
            counts["rejected"] += 1
            return ConfirmationResultBody(
                idem_key=b.idem_key,
                status="rejected",
                error=ErpError(
                    text=f"no posted confirmation with idem_key {b.reverses_idem_key}",
                    code="NOT_FOUND",
                ),
                ts=ts,
            )
        if target["reversed"]:
            counts["duplicates"] += 1
            return ConfirmationResultBody(
                idem_key=b.idem_key,
                status="duplicate",
                erp={**self._erp(target), "reversed_by": str(target["reversed_by"])},
                ts=ts,
            )
        count = self.ledger.post_reversal(
            item.root,
            item.env,  # type: ignore[arg-type]
            target,
            item.received_ms,
        )
        return ConfirmationResultBody(
            idem_key=b.idem_key,
            status="posted",
            erp={
                "system": self.erp_system,
                "confirmation_group": str(target["confirmation_group"]),
                "confirmation_count": count,
                "cancelled_confirmation_count": str(target["confirmation_count"]),
            },
            ts=ts,
        )

    def _erp(self, row: Mapping[str, Any]) -> dict[str, str]:
        return {
            "system": self.erp_system,
            "confirmation_group": str(row["confirmation_group"]),
            "confirmation_count": str(row["confirmation_count"]),
        }

    async def _answer(self, item: _Pending, body: ConfirmationResultBody) -> None:
        msg_id = str(uuid.uuid4())
        at = now_ms()
        envelope = InboundEnvelope(
            schema=topic(CONFIRMATION_RESULT).schema,
            msg_id=msg_id,
            ts_ms=at,
            body=body.model_dump(mode="json", exclude_none=True),
        )
        out_topic = f"{item.root}/{CONFIRMATION_RESULT}"
        payload = envelope.model_dump_json(by_alias=True, exclude_none=True).encode()
        await self.link.publish(out_topic, payload, qos=1, timeout=3600.0)
        self.ledger.record_answer(item.inbox_id, body.status)
        log_fn = log.warning if body.status == "rejected" else log.info
        log_fn(
            "relay_answered",
            kind=item.kind,
            status=body.status,
            idem_key=body.idem_key,
            order=item.env.body.order_id,
            operation=item.env.body.operation,
            edge_id=item.env.edge_id,
            error=body.error.text if body.error else None,
            waited_ms=at - item.received_ms,
        )
        self._answers.append(Answer(out_topic, item.root, msg_id, item.kind, body, at))


# ------------------------------------------------------------------------------- dispatcher


@dataclass(frozen=True, slots=True)
class Arrival:
    """One message the dispatcher's listener received from a gateway."""

    kind: Literal["received", "rejected"]
    topic: str
    root: str
    payload: Any
    at_ms: int
    error: str | None = None  # why it does not validate against the contract, if it does not

    @property
    def valid(self) -> bool:
        return self.error is None


class Dispatcher:
    """Sends ``InboundEnvelope`` messages to work centers and listens for their answers.

    Keeps what arrived on ``<root>/_mes_v1/order/received`` (``received``) and
    ``<root>/_mes_v1/rejected`` (``rejected``), validated against the contract.
    """

    def __init__(self, link: MqttLink, roots: Sequence[str], *, publish_timeout_s: float = 30.0):
        self.link = link
        self.roots = list(roots)
        self.publish_timeout_s = publish_timeout_s
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self._arrivals: _Waiters[Arrival] = _Waiters()
        for root in self.roots:
            link.subscribe(f"{root}/{ORDER_RECEIVED}", self._on_received)
            link.subscribe(f"{root}/{REJECTED}", self._on_rejected)

    @property
    def received(self) -> list[Arrival]:
        return [a for a in self._arrivals.items if a.kind == "received"]

    @property
    def rejected(self) -> list[Arrival]:
        return [a for a in self._arrivals.items if a.kind == "rejected"]

    async def wait_for(
        self,
        kind: Literal["received", "rejected"],
        predicate: Callable[[Arrival], bool] | None = None,
        *,
        timeout: float = 10.0,
    ) -> Arrival:
        """The first arrival of ``kind`` matching ``predicate``; TimeoutError if none."""
        return await self._arrivals.wait(
            lambda a: a.kind == kind and (predicate is None or predicate(a)), timeout
        )

    # -- sending

    async def send_dispatch(
        self, root: str, version: int, operations: Iterable[OperationMsg | Mapping[str, Any]]
    ) -> str:
        ops = [
            o if isinstance(o, OperationMsg) else OperationMsg.model_validate(o) for o in operations
        ]
        return await self.send(root, DISPATCH, DispatchListBody(version=version, operations=ops))

    async def send_masterdata(self, root: str, body: MasterDataBody | Mapping[str, Any]) -> str:
        """Retained, so a gateway that connects later gets it too."""
        md = body if isinstance(body, MasterDataBody) else MasterDataBody.model_validate(body)
        return await self.send(root, MASTERDATA, md)

    async def send_cancel(
        self, root: str, order_id: str, operation: str, split: int = 0, reason: str | None = None
    ) -> str:
        return await self._send_ref(root, ORDER_CANCEL, order_id, operation, split, reason)

    async def send_hold(
        self, root: str, order_id: str, operation: str, split: int = 0, reason: str | None = None
    ) -> str:
        return await self._send_ref(root, ORDER_HOLD, order_id, operation, split, reason)

    async def send_release(
        self, root: str, order_id: str, operation: str, split: int = 0, reason: str | None = None
    ) -> str:
        return await self._send_ref(root, ORDER_RELEASE, order_id, operation, split, reason)

    async def send_merge(
        self,
        root: str,
        target: tuple[str, str],
        sources: Iterable[tuple[str, str]],
        *,
        quantity: Decimal | int | None = None,
        latest_end: str | None = None,
        reason: str | None = None,
    ) -> str:
        """Merge ``sources`` (order, operation) into ``target``: the gateway ends them merged
        and gives the target the sum (or ``quantity``) and the earliest due date."""
        body = MergeBody(
            order_id=target[0],
            operation=target[1],
            sources=[OperationKeyMsg(order_id=o, operation=op) for o, op in sources],
            quantity=quantity,
            latest_end=latest_end,
            reason=reason,
        )
        return await self.send(root, ORDER_MERGE, body)

    async def _send_ref(
        self, root: str, path: str, order_id: str, operation: str, split: int, reason: str | None
    ) -> str:
        body = OperationRefBody(order_id=order_id, operation=operation, split=split, reason=reason)
        return await self.send(root, path, body)

    async def send(
        self, root: str, path: str, body: BaseModel, *, msg_id: str | None = None
    ) -> str:
        """Wrap ``body`` in an ``InboundEnvelope`` for down-topic ``path``; returns the msg_id."""
        t = topic(path)
        if t.direction != "down" or not isinstance(body, t.model):
            raise ValueError(f"{path} carries {t.model.__name__} down, not {type(body).__name__}")
        msg_id = msg_id or str(uuid.uuid4())
        envelope = InboundEnvelope(
            schema=t.schema,
            msg_id=msg_id,
            ts_ms=now_ms(),
            body=jsonable(body.model_dump(mode="python", by_alias=True, exclude_none=True)),
        )
        data = envelope.model_dump(mode="json", by_alias=True, exclude_none=True)
        await self.send_raw(root, path, data, retain=t.retain, qos=t.qos)
        log.info(
            "central_sent", topic=f"{root}/{path}", schema=t.schema, msg_id=msg_id, retain=t.retain
        )
        return msg_id

    async def send_raw(
        self,
        root: str,
        path: str,
        payload: bytes | str | Mapping[str, Any],
        *,
        retain: bool = False,
        qos: int = 1,
    ) -> None:
        """Publish anything (also invalid payloads, for bad-input tests) to ``<root>/<path>``."""
        if isinstance(payload, Mapping):
            data = json.dumps(dict(payload), separators=(",", ":")).encode()
            self.sent.append((f"{root}/{path}", dict(payload)))
        else:
            data = payload.encode() if isinstance(payload, str) else payload
        await self.link.publish(
            f"{root}/{path}", data, qos=qos, retain=retain, timeout=self.publish_timeout_s
        )

    # -- listening

    def _on_received(self, topic_name: str, payload: bytes) -> None:
        self._arrive("received", topic_name, payload, ORDER_RECEIVED)

    def _on_rejected(self, topic_name: str, payload: bytes) -> None:
        self._arrive("rejected", topic_name, payload, REJECTED)

    def _arrive(
        self, kind: Literal["received", "rejected"], topic_name: str, payload: bytes, suffix: str
    ) -> None:
        error: str | None = None
        data: Any = None
        try:
            data = json.loads(payload)
            if kind == "received":
                Envelope[DispatchReceivedBody].model_validate(data)
            else:
                RejectedBody.model_validate(data)
        except (ValueError, ValidationError) as exc:
            error = str(exc)
            if data is None:
                data = payload.decode("utf-8", "replace")
        arrival = Arrival(kind, topic_name, split_topic(topic_name, suffix), data, now_ms(), error)
        if error:
            log.warning("central_invalid_message", topic=topic_name, error=error.splitlines()[0])
        elif kind == "rejected":
            log.warning(
                "gateway_rejected_message",
                topic=topic_name,
                msg_id=data.get("msg_id"),
                reason=data.get("reason"),
            )
        else:
            body = data.get("body", {})
            log.info(
                "gateway_applied_dispatch",
                topic=topic_name,
                version=body.get("version"),
                operations=body.get("operations"),
            )
        self._arrivals.append(arrival)


# --------------------------------------------------------------------------------- bundle


class CentralSimulator:
    """The ERP relay and the dispatcher over one MQTT 5 connection (with a Last Will).

    ``async with CentralSimulator(host, port, roots=[root]) as central:`` connects (waiting up to
    ``connect_timeout_s``; None = do not wait) and keeps reconnecting with backoff when the broker
    goes away; leaving the block announces the relay offline and disconnects.
    """

    def __init__(
        self,
        host: str,
        port: int,
        roots: Sequence[str],
        ledger_path: str | Path | None = None,
        *,
        client_id: str | None = None,
        enterprise: str | None = None,
        delay_s: float = 0.0,
        reject: Mapping[str, str] | None = None,
        connect_timeout_s: float | None = 10.0,
        keepalive: int = 10,
        reconnect_max_s: float = 2.0,
    ) -> None:
        if not roots:
            raise ValueError("CentralSimulator needs at least one root")
        self.roots = list(roots)
        self.connect_timeout_s = connect_timeout_s
        self.link = MqttLink(
            host, port, client_id=client_id, keepalive=keepalive, reconnect_max_s=reconnect_max_s
        )
        self.ledger = Ledger(ledger_path)
        self.relay = ErpRelay(
            self.link,
            self.roots,
            self.ledger,
            enterprise=enterprise,
            delay_s=delay_s,
            reject=reject,
        )
        self.dispatcher = Dispatcher(self.link, self.roots)

    @property
    def connected(self) -> bool:
        return self.link.connected.is_set()

    @property
    def connects(self) -> int:
        """Successful connects so far (2 after one reconnect)."""
        return self.link.connects

    async def wait_connected(self, timeout: float = 10.0) -> None:
        await self.link.wait_connected(timeout)

    async def start(self) -> None:
        await self.relay.start()
        await self.link.start()
        if self.connect_timeout_s is not None:
            try:
                await self.link.wait_connected(self.connect_timeout_s)
            except TimeoutError:
                await self.stop()
                raise TimeoutError(
                    f"central simulator: no MQTT connection to {self.link.host}:{self.link.port} "
                    f"within {self.connect_timeout_s}s"
                ) from None

    async def stop(self) -> None:
        await self.relay.stop()
        await self.link.stop()
        self.ledger.close()

    async def __aenter__(self) -> CentralSimulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


# ------------------------------------------------------------------------------------- demo

DEMO_OPERATIONS: tuple[dict[str, Any], ...] = (
    {
        "order_id": "1000123",
        "operation": "0010",
        "material": "FG-4711",
        "material_text": "Bracket 30x15, galvanised",
        "quantity": 1200,
        "unit": "PC",
        "sequence": 1,
        "planned_setup_s": 1800,
        "planned_run_s_per_unit": 4.2,
        "latest_end": "2025-03-03T14:00:00Z",
        "over_tolerance_pct": 5,
        "under_tolerance_pct": 2,
        "confirmation_no": "0000456789",
    },
    {
        "order_id": "1000124",
        "operation": "0010",
        "material": "FG-4720",
        "material_text": "Hinge plate 60x40",
        "quantity": 500,
        "unit": "PC",
        "sequence": 2,
        "planned_setup_s": 1200,
        "planned_run_s_per_unit": 3.0,
        "parts_per_signal": 2,
        "latest_end": "2025-03-03T22:00:00Z",
        "confirmation_no": "0000456790",
    },
    {
        "order_id": "1000131",
        "operation": "0020",
        "material": "FG-5002",
        "material_text": "Cover 120x80",
        "quantity": 800,
        "unit": "PC",
        "sequence": 3,
        "planned_setup_s": 2400,
        "planned_run_s_per_unit": 5.5,
        "latest_end": "2025-03-04T06:00:00Z",
        "crew_size": 2,
        "confirmation_no": "0000456801",
    },
)

DEMO_MASTERDATA: dict[str, Any] = {
    "version": 1,
    "stop_reasons": [
        {"code": "PL-BREAK", "text": "Break", "category": "planned"},
        {"code": "PL-SETUP", "text": "Die change", "category": "planned"},
        {"code": "TE-DIE", "text": "Die damaged", "category": "unplanned"},
        {"code": "MA-COIL", "text": "Waiting for coil", "category": "unplanned"},
    ],
    "scrap_reasons": [
        {"code": "S01", "text": "Burr"},
        {"code": "S02", "text": "Crack"},
        {"code": "S03", "text": "Dimension out of tolerance"},
    ],
    "alarm_reasons": {"E101": "TE-DIE", "E205": "MA-COIL"},
    "crew_size": 1,
}


async def demo_dispatch(central: CentralSimulator, root: str, version: int = 1) -> list[str]:
    """Send the demo master data (retained) and a 3-operation dispatch list; their msg_ids."""
    md = await central.dispatcher.send_masterdata(root, DEMO_MASTERDATA)
    dl = await central.dispatcher.send_dispatch(root, version, DEMO_OPERATIONS)
    return [md, dl]


# -------------------------------------------------------------------------------------- CLI


def _parse_rejections(items: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        order_id, sep, text = item.partition("=")
        if not sep or not order_id.strip() or not text.strip():
            raise argparse.ArgumentTypeError(f"--reject wants ORDER=TEXT, got {item!r}")
        out[order_id.strip()] = text.strip()
    return out


async def _run(args: argparse.Namespace, rejections: dict[str, str]) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    central = CentralSimulator(
        args.host,
        args.port,
        roots=args.root,
        ledger_path=args.ledger,
        client_id=args.client_id,
        delay_s=args.delay_s,
        reject=rejections,
        connect_timeout_s=None,
    )
    async with central:
        log.info(
            "central_started",
            broker=f"{args.host}:{args.port}",
            roots=args.root,
            ledger=args.ledger or ":memory:",
            rejections=rejections,
            delay_s=args.delay_s,
        )
        if args.dispatch_demo:
            for root in args.root:
                if "+" in root or "#" in root:
                    log.warning("dispatch_demo_skipped", root=root, reason="wildcard root")
                    continue
                ids = await demo_dispatch(central, root)
                log.info("dispatch_demo_sent", root=root, msg_ids=ids)
        await stop.wait()
        log.info("central_stopping", received=dict(central.ledger.received))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m simulators.central",
        description="Central's side of the MQTT contract: ERP relay stand-in and dispatcher.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1883)
    parser.add_argument(
        "--root",
        action="append",
        required=True,
        help="work center root, e.g. umh/v1/acme/plant1/stamping/line4/PRESS07 (repeatable; "
        "umh/v1/+/+/+/+/+ serves all)",
    )
    parser.add_argument("--ledger", default=None, help="SQLite file (default: in memory)")
    parser.add_argument(
        "--reject",
        action="append",
        default=[],
        metavar="ORDER=TEXT",
        help="reject confirmations of ORDER with TEXT (repeatable)",
    )
    parser.add_argument("--delay-s", type=float, default=0.0, help="answer this late")
    parser.add_argument(
        "--dispatch-demo",
        action="store_true",
        help="send master data and a 3-operation dispatch list at start",
    )
    parser.add_argument("--client-id", default=None)
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(list(argv) if argv is not None else None)
    try:
        rejections = _parse_rejections(args.reject)
    except argparse.ArgumentTypeError as exc:
        parser.error(str(exc))
    configure_logging(args.log_level)
    try:
        return asyncio.run(_run(args, rejections))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
