"""The uplink: the outbox to the broker, in order, QoS 1, until each row is acknowledged.

A row is finished only when the broker acknowledged it with a success reason code; a
confirmation or reversal additionally waits for the relay's result (the engine settles it when
the result is committed). A refusal (PUBACK >= 0x80, e.g. 135 "not authorized") is not an
acknowledgement: the row stays, the reason is logged and stored, and it is tried again later.
After a restart everything not finished is sent again with the same ``msg_id``, ``seq`` and
``idem_key``, so consumers de-duplicate.

While the ERP relay says it is offline (its retained ``relay/state``), confirmations and
reversals are withheld and stay queued, like a Sparkplug edge waiting for its primary host.
Business messages behind a withheld confirmation wait with it, so that consumers still see one
gap-free ``seq`` order; time series (no ``seq``) go on. When the relay is back, the withheld
rows go out in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from edge.errors import StoreError
from edge.histogram import Histogram
from edge.logging import Logger, get_logger
from edge.ports import OutboxPort
from edge.store.store import OutboxRow
from edge.sync.contract import BY_PATH, envelope_json
from edge.sync.mqtt import MqttLink, is_success

# Rows that stay until the relay answers (the engine settles them by idempotency key).
AWAITS_RESULT = frozenset({"confirmation_created", "confirmation_resent", "confirmation_reversed"})
FETCH = 1000
FRESH_MAX = 20_000
FLUSH_EVERY = 256
FLUSH_AFTER_S = 0.05
REPLAY_MAX = 10_000


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(slots=True)
class UplinkStats:
    sent: int = 0
    acked: int = 0
    refused: int = 0
    requeued: int = 0
    withheld: int = 0
    last_puback_ms: int | None = None
    flush_failures: int = 0  # acknowledgements that could not be stored (disk full)
    # publish -> PUBACK, seconds, for /metrics
    latency: Histogram = field(default_factory=Histogram)


class Uplink:
    def __init__(
        self,
        engine: OutboxPort,
        link: MqttLink,
        *,
        root: str,
        edge_id: str,
        window: int = 100,
        result_timeout_s: float = 600.0,
        historical_after_s: float = 10.0,
        retry_refused_s: float = 30.0,
        logger: Logger | None = None,
    ) -> None:
        self.engine = engine
        self.link = link
        self.root = root
        self.edge_id = edge_id
        self.window = window
        self.result_timeout_s = result_timeout_s
        self.historical_after_ms = int(historical_after_s * 1000)
        self.retry_refused_s = retry_refused_s
        self.log: Logger = logger or get_logger("edge.uplink")
        self.stats = UplinkStats()
        self._wake = asyncio.Event()
        # Rows just committed, handed over by the engine: in steady state nothing is read back.
        self._fresh: deque[OutboxRow] = deque()
        engine.add_commit_hook(self._on_commit)
        self._flush_task: asyncio.Task[None] | None = None
        self._inflight: deque[tuple[OutboxRow, asyncio.Future[int]]] = deque()
        self._unflushed: set[int] = set()  # sent rows whose outcome is not yet stored
        self._done: list[int] = []
        self._published: list[int] = []
        self._refused: list[tuple[int, str]] = []
        self._first_unflushed: float | None = None
        self._flush_failing = False
        self._cursor = 0
        self._retry_from: int | None = None
        self._retry_at = 0.0
        self.relay_online = True
        self._withheld_from: int | None = None
        self._rewind = False  # go back to _retry_from before sending anything further

    def set_relay_online(self, online: bool) -> None:
        """The relay's presence changed: withhold confirmations, or send the withheld ones."""
        if online == self.relay_online:
            return
        self.relay_online = online
        if not online:
            self.log.warning("the ERP relay is offline; confirmations are withheld and queued")
            return
        self.log.info("the ERP relay is back; sending the withheld confirmations")
        if self._withheld_from is not None:
            first = self._withheld_from
            self._retry_from = first if self._retry_from is None else min(self._retry_from, first)
            self._retry_at = 0.0
            self._withheld_from = None
            self._rewind = True
        self._wake.set()

    # ------------------------------------------------------------------ the envelope

    def envelope(self, row: OutboxRow, sent_ms: int, *, replay: bool = False) -> str:
        """The wire form of a row: the envelope around the stored body, or the body alone.

        The stored JSON body goes in as text (``contract.envelope_json``, from the model's
        fields), so a resend carries it byte for byte.
        """
        topic = BY_PATH.get(row.topic)
        if topic is not None and not topic.enveloped:
            return row.payload
        historical = (
            replay
            or row.boot_seq != self.engine.boot_seq
            or sent_ms - row.at_wall_ms > self.historical_after_ms
        )
        return envelope_json(
            row.payload,
            schema=topic.schema if topic else row.topic,
            msg_id=row.msg_id,
            idem_key=row.idem_key,
            edge_id=self.edge_id,
            boot_seq=row.boot_seq,
            seq=row.env_seq,
            ts_event_ms=row.at_wall_ms,
            ts_sent_ms=sent_ms,
            historical=historical,
        )

    # ------------------------------------------------------------------ the loop

    def _on_commit(self, rows: list[OutboxRow]) -> None:
        if rows:
            if len(self._fresh) + len(rows) > FRESH_MAX:
                self._fresh.clear()  # a backlog: read it from the store instead
            else:
                self._fresh.extend(rows)
        self._wake.set()

    def _take_fresh(self) -> list[OutboxRow]:
        """Committed rows that follow the last one sent without a gap, else nothing."""
        fresh = self._fresh
        while fresh and fresh[0].seq <= self._cursor:
            fresh.popleft()
        if not fresh or fresh[0].seq != self._cursor + 1:
            return []
        rows: list[OutboxRow] = []
        while fresh and len(rows) < FETCH:
            rows.append(fresh.popleft())
        return rows

    async def _next_rows(self) -> list[OutboxRow]:
        rows = self._take_fresh()
        if rows:
            return rows
        rows = await self.engine.outbox_pending(FETCH, self._cursor)
        return [r for r in rows if r.seq not in self._unflushed]

    async def run(self) -> None:
        requeued = await self.engine.outbox_requeue()
        if requeued:
            self.log.info("resending confirmations the relay had not answered", rows=requeued)
        next_requeue = time.monotonic() + self.result_timeout_s
        try:
            while True:
                if not self.link.connected.is_set():
                    await self._flush_now()
                    await self.link.connected.wait()
                now = time.monotonic()
                if now >= next_requeue:
                    await self._requeue_unanswered()
                    next_requeue = now + self.result_timeout_s
                if self._retry_from is not None and now >= self._retry_at:
                    await self._flush_now()
                    self._cursor = min(self._cursor, self._retry_from - 1)
                    self._retry_from = None
                    self._rewind = False
                self._wake.clear()
                rows = await self._next_rows()
                if not rows:
                    await self._collect(block=False)
                    self._flush_soon(force=True)
                    await self._idle()
                    continue
                for row in rows:
                    if not self.link.connected.is_set() or self._rewind:
                        break
                    if not self.relay_online and (
                        row.kind in AWAITS_RESULT
                        or (self._withheld_from is not None and row.env_seq is not None)
                    ):
                        self._withhold(row)
                        continue
                    while len(self._inflight) >= self.window:
                        await self._collect(block=True)
                    if self._rewind_due():  # the relay came back meanwhile: withheld rows first
                        break
                    self._send(row)
                await self._collect(block=False)
                self._flush_soon()
        finally:
            await asyncio.shield(self._flush_quietly())

    async def _idle(self) -> None:
        """Wait for a commit, an acknowledgement, or a second to pass."""
        waiters = [asyncio.ensure_future(self._wake.wait())]
        if self._inflight:
            waiters.append(self._inflight[0][1])  # type: ignore[arg-type]
        try:
            await asyncio.wait(waiters, timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiters[0].cancel()

    async def replay(self, from_seq: int) -> int:
        """Send the business messages from ``from_seq`` on again, as they were (same msg_id and
        seq, historical), for a consumer that lost them; the outbox itself is not touched.

        At most REPLAY_MAX per request: a consumer that needs more asks again from where it got.
        """
        rows = await self.engine.outbox_from_seq(from_seq, REPLAY_MAX)
        window: deque[asyncio.Future[int]] = deque()
        sent = 0
        for row in rows:
            if not self.link.connected.is_set():
                break
            while len(window) >= self.window:
                with contextlib.suppress(Exception):
                    await window.popleft()
            topic = f"{self.root}/{row.topic}"
            window.append(
                self.link.publish(topic, self.envelope(row, now_ms(), replay=True), qos=1)
            )
            sent += 1
        for future in window:
            with contextlib.suppress(Exception):
                await future
        last = rows[sent - 1].env_seq if sent else None
        self.log.info(
            "replayed business messages for central",
            from_seq=from_seq,
            messages=sent,
            last_seq=last,
            truncated=len(rows) == REPLAY_MAX,
        )
        return sent

    def _rewind_due(self) -> bool:
        return self._rewind

    def _withhold(self, row: OutboxRow) -> None:
        """Pass over a confirmation for now; the cursor goes back to it when the relay returns."""
        if self._withheld_from is None:
            self._withheld_from = row.seq
        self._cursor = max(self._cursor, row.seq)
        self.stats.withheld += 1

    def _timer(self) -> Callable[[asyncio.Future[int]], None]:
        started = time.monotonic()
        observe = self.stats.latency.observe

        def acknowledged(future: asyncio.Future[int]) -> None:
            if not future.cancelled():
                observe(time.monotonic() - started)

        return acknowledged

    def _send(self, row: OutboxRow) -> None:
        sent = now_ms()
        future = self.link.publish(f"{self.root}/{row.topic}", self.envelope(row, sent), qos=1)
        future.add_done_callback(self._timer())
        self._inflight.append((row, future))
        self._unflushed.add(row.seq)
        self._cursor = max(self._cursor, row.seq)
        self.stats.sent += 1

    async def _collect(self, *, block: bool) -> None:
        """Take the outcomes of finished publishes, oldest first (they finish in order)."""
        if block and self._inflight:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(self._inflight[0][1])
        while self._inflight and self._inflight[0][1].done():
            row, future = self._inflight.popleft()
            if future.cancelled():
                self._unflushed.discard(row.seq)
                continue
            code = future.result()
            if self._first_unflushed is None:
                self._first_unflushed = time.monotonic()
            if is_success(code):
                self.stats.acked += 1
                self.stats.last_puback_ms = now_ms()
                (self._published if row.kind in AWAITS_RESULT else self._done).append(row.seq)
            else:
                self._refuse(row, code)

    def _refuse(self, row: OutboxRow, code: int) -> None:
        self.stats.refused += 1
        reason = f"PUBACK reason code {code} ({_reason_name(code)})"
        self._refused.append((row.seq, reason))
        self.log.error(
            "broker refused a message; it stays in the outbox and is tried again",
            topic=f"{self.root}/{row.topic}",
            seq=row.seq,
            reason=reason,
        )
        self._retry_from = row.seq if self._retry_from is None else min(self._retry_from, row.seq)
        self._retry_at = time.monotonic() + self.retry_refused_s

    def _flush_soon(self, *, force: bool = False) -> None:
        """Store acknowledgements in the background: sending goes on meanwhile."""
        if self._flush_task is not None:
            if not self._flush_task.done():
                return
            # A flush that died of a bug ends the uplink (its supervisor logs and restarts
            # the gateway); a failing store is handled inside _flush and never gets here.
            self._flush_task.result()
            self._flush_task = None
        if force or self._should_flush():
            self._flush_task = asyncio.create_task(self._flush(), name="uplink-flush")
            self._flush_task.add_done_callback(self._flush_done)

    def _flush_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self.log.error(
                "storing acknowledgements failed unexpectedly; the uplink stops",
                error=repr(task.exception()),
            )

    async def _flush_now(self) -> None:
        if self._flush_task is not None:
            await self._flush_task
            self._flush_task = None
        await self._flush()

    def _should_flush(self) -> bool:
        pending = len(self._done) + len(self._published) + len(self._refused)
        if pending >= FLUSH_EVERY:
            return True
        return self._first_unflushed is not None and (
            time.monotonic() - self._first_unflushed >= FLUSH_AFTER_S
        )

    async def _flush(self) -> None:
        if not (self._done or self._published or self._refused):
            return
        done, published, refused = self._done, self._published, self._refused
        self._done, self._published, self._refused = [], [], []
        self._first_unflushed = None
        try:
            await self.engine.outbox_mark(done, published, refused)
        except StoreError as exc:
            # A full disk: keep the acknowledgements and store them at a later flush. The rows
            # stay 'pending' in the database meanwhile; after a restart they are sent again.
            self._done = done + self._done
            self._published = published + self._published
            self._refused = refused + self._refused
            self._first_unflushed = time.monotonic()
            self.stats.flush_failures += 1
            if not self._flush_failing:
                self._flush_failing = True
                self.log.error(
                    "storing acknowledgements failed; they are kept and stored again later",
                    error=str(exc),
                    acknowledgements=len(done) + len(published) + len(refused),
                )
            return
        if self._flush_failing:
            self._flush_failing = False
            self.log.info("acknowledgements stored again", failures=self.stats.flush_failures)
        for seq in done + published:
            self._unflushed.discard(seq)
        for seq, _ in refused:
            self._unflushed.discard(seq)

    async def _flush_quietly(self) -> None:
        try:
            await self._collect(block=False)
            await self._flush_now()
        except Exception as exc:  # stopping: what is not stored is simply sent again
            self.log.warning("could not store the last acknowledgements", error=repr(exc))

    async def _requeue_unanswered(self) -> None:
        await self._flush_now()
        older = now_ms() - int(self.result_timeout_s * 1000)
        count = await self.engine.outbox_requeue(older)
        if count:
            self.stats.requeued += count
            self._cursor = 0
            self._fresh.clear()
            self.log.warning(
                "the relay has not answered confirmations; sending them again", rows=count
            )


def _reason_name(code: int) -> str:
    return {
        0x80: "unspecified error",
        0x83: "implementation specific error",
        0x87: "not authorized",
        0x90: "topic name invalid",
        0x97: "quota exceeded",
        0x99: "payload format invalid",
    }.get(code, "refused")
