"""The uplink: the outbox to the broker, in order, QoS 1, until each row is acknowledged.

A row is finished only when the broker acknowledged it with a success reason code; a
confirmation or reversal additionally waits for the relay's result (the engine settles it when
the result is committed). After a restart everything not finished is sent again with the same
``msg_id``, ``seq`` and ``idem_key``, so consumers de-duplicate.

What a subscriber sees: the first delivery of every ``seq`` comes in ascending order. A copy of
a seq that already arrived may come again later (a resend); a seq the broker lost after
acknowledging it (a broker restarted without its persistence) is never sent again, so a
consumer that finds it missing asks for a replay (``cmd/resync``). How the order is kept:

- **A reconnect.** The uplink, not paho's session, sends again what was not acknowledged: the
  link fails every unacknowledged message of ours when the connection ends and takes paho's
  copies out of its queue (``MqttLink.publish(resend=False)``). After a reconnect nothing newer
  goes out before every older unacknowledged row was sent again, in ``seq`` order, from the
  outbox (``historical: true``). Whether the broker kept our session makes no difference.
- **A refusal** (PUBACK >= 0x80, e.g. 135 "not authorized") is not an acknowledgement: the row
  stays, the reason is logged and stored, and it is tried again after ``retry_refused_s``. A
  refused business message holds the newer ones (time series go on) until the broker takes it.
  What was already in flight behind it when the refusal came back (at most ``window``
  messages) cannot be called back and arrives before it.
- **The relay away.** While the ERP relay says it is offline (its retained ``relay/state``),
  confirmations and reversals are withheld and stay queued, like a Sparkplug edge waiting for
  its primary host. Business messages behind a withheld confirmation wait with it; time series
  (no ``seq``) go on. When the relay is back, the withheld rows go out in order.
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
# Acknowledgements are stored in one transaction per this many, or this long after the first:
# a crash before that only sends those messages again (consumers de-duplicate by msg_id), and
# a machine counting 100 times a second is not held to a second fsync per commit.
FLUSH_AFTER_S = 0.25
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
        # True while every pending row after the cursor is in _fresh (read nothing back then).
        self._fresh_complete = False
        engine.add_commit_hook(self._on_commit)
        # A reconnect to a broker that lost this gateway's session (restarted without its
        # persistence): the relay's verdicts sent meanwhile had no subscription to reach.
        # Or the relay came back after it was gone (its Last Will, then its state online
        # again): it connects with a clean session, so a confirmation the broker had handed
        # to it, or sent while no relay was there, went with that session. Either way every
        # unanswered confirmation is asked for again: "session" or "relay", None otherwise.
        self._connects = 0
        self._lost: str | None = None
        link.add_on_connect(self._on_connect)
        self._flush_task: asyncio.Task[None] | None = None
        self._inflight: deque[tuple[OutboxRow, asyncio.Future[int]]] = deque()
        self._unflushed: set[int] = set()  # sent rows whose outcome is not yet stored
        self._done: list[int] = []
        self._published: list[int] = []
        self._refused: list[tuple[int, str]] = []
        self._first_unflushed: float | None = None
        self._flush_failing = False
        self._cursor = 0
        self._retry_from: int | None = None  # the oldest refused row, tried again at _retry_at
        self._retry_at = 0.0
        self.relay_online = True
        # The first row passed over (a withheld confirmation, or what waits behind one or
        # behind a refused business message); sent from here once nothing holds it any more.
        self._withheld_from: int | None = None
        self._refused_at: int | None = None  # a refused business row: no newer seq goes out
        self._resend_from: int | None = None  # go back here before sending anything further
        self._resending: set[int] = set()  # rows a lost connection left unacknowledged

    def set_relay_online(self, online: bool) -> None:
        """The relay's presence changed: withhold confirmations, or send the withheld ones."""
        if online == self.relay_online:
            return
        self.relay_online = online
        if not online:
            self.log.warning("the ERP relay is offline; confirmations are withheld and queued")
            return
        self.log.info("the ERP relay is back; sending the withheld confirmations")
        self._lost = self._lost or "relay"
        self._release()
        self._wake.set()

    def _release(self) -> None:
        """Send the rows passed over from the first of them on, once nothing holds them.

        A refused business row holds only what is newer than itself: a confirmation that was
        withheld before it (or the refused row itself, withheld) goes out when the relay is back.
        """
        first = self._withheld_from
        if not self.relay_online or first is None:
            return
        if self._refused_at is None or first <= self._refused_at:
            self._rewind_to(first)
            self._withheld_from = None

    def _rewind_to(self, seq: int) -> None:
        self._resend_from = seq if self._resend_from is None else min(self._resend_from, seq)

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
                self._fresh_complete = False
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
        if self._fresh_complete and not self._fresh:
            return []  # caught up: the next rows arrive with their commit
        rows = await self.engine.outbox_pending(FETCH, self._cursor)
        # All that is pending after the cursor was read; what commits from now on is handed
        # over by the commit hook (a commit during the read is in both: _take_fresh skips it).
        self._fresh_complete = len(rows) < FETCH
        return [r for r in rows if r.seq not in self._unflushed]

    def _move_cursor_back(self, seq: int) -> None:
        """Send from after ``seq`` again: those rows come from the store, not from _fresh."""
        if seq < self._cursor:
            self._cursor = seq
            self._fresh_complete = False

    async def _on_connect(self, session_present: bool) -> None:
        self._connects += 1
        if self._connects > 1 and not session_present:
            self._lost = "session"
            self._wake.set()

    async def run(self) -> None:
        requeued = await self.engine.outbox_requeue()
        if requeued:
            self.log.info("resending confirmations the relay had not answered", rows=requeued)
        next_requeue = time.monotonic() + self.result_timeout_s
        try:
            while True:
                if not self.link.connected.is_set():
                    await self._collect(block=False)
                    await self._flush_now()
                    await self.link.connected.wait()
                # What a lost connection left unacknowledged failed before the loop saw the
                # new one: taking it now puts the cursor back before anything newer is sent.
                await self._collect(block=False)
                if self._lost is not None:
                    lost, self._lost = self._lost, None
                    await self._requeue_unanswered(lost=lost)
                now = time.monotonic()
                if now >= next_requeue:
                    await self._requeue_unanswered()
                    next_requeue = now + self.result_timeout_s
                if self._retry_from is not None and now >= self._retry_at:
                    self._rewind_to(self._retry_from)
                    self._retry_from = None
                if self._resend_from is not None:
                    await self._flush_now()  # (it may go lower meanwhile: read it after)
                    first, self._resend_from = self._resend_from, None
                    self._move_cursor_back(first - 1)
                self._wake.clear()
                rows = await self._next_rows()
                if not rows:
                    await self._collect(block=False)
                    self._flush_soon()
                    await self._idle()
                    continue
                for row in rows:
                    if self._stop_sending():
                        break
                    if not self._waits(row):
                        while len(self._inflight) >= self.window:
                            await self._collect(block=True)
                        # Meanwhile the connection may have ended, a refusal may hold this
                        # row, or the relay may be back (withheld rows first).
                        if self._stop_sending():
                            break
                    if self._waits(row):
                        self._withhold(row)
                        continue
                    self._send(row)
                await self._collect(block=False)
                self._flush_soon()
        finally:
            await asyncio.shield(self._flush_quietly())

    def _stop_sending(self) -> bool:
        """Nothing further before the loop went back to its top: no connection, or a rewind."""
        return not self.link.connected.is_set() or self._resend_from is not None

    def _waits(self, row: OutboxRow) -> bool:
        """Is this row passed over for now? Time series (no seq) never are."""
        if row.env_seq is None:
            return False
        if self._withheld_from is not None and row.seq >= self._withheld_from:
            return True  # behind one passed over: seq stays in order
        if self._refused_at is not None and row.seq > self._refused_at:
            return True  # behind a refused business message, until the broker takes it
        return not self.relay_online and row.kind in AWAITS_RESULT

    async def _idle(self) -> None:
        """Wait for a commit, the oldest publish's outcome, the acknowledgements' flush being
        due, or a second to pass (a timer and a callback: no task per wait)."""
        timeout = 1.0
        if self._first_unflushed is not None:
            due = self._first_unflushed + FLUSH_AFTER_S - time.monotonic()
            timeout = min(timeout, max(0.0, due))
        wake = self._wake
        timer = asyncio.get_running_loop().call_later(timeout, wake.set)
        oldest = self._inflight[0][1] if self._inflight else None
        if oldest is not None:
            oldest.add_done_callback(self._wake_up)
        try:
            await wake.wait()
        finally:
            timer.cancel()
            if oldest is not None:
                oldest.remove_done_callback(self._wake_up)

    def _wake_up(self, _: object) -> None:
        self._wake.set()

    async def replay(self, from_seq: int) -> int:
        """Send the business messages from ``from_seq`` on again, as they were (same msg_id and
        seq, historical), for a consumer that lost them; the outbox itself is not touched.

        Only what the uplink has sent already: it stops at the first row the uplink has not
        sent yet, or passes over for now (withheld for the relay, behind a refused one), which
        the uplink sends itself, in order. At most REPLAY_MAX per request: a consumer that
        needs more asks again from where it got.
        """
        rows = await self.engine.outbox_from_seq(from_seq, REPLAY_MAX)
        window: deque[asyncio.Future[int]] = deque()
        sent = 0
        for row in rows:
            if not self.link.connected.is_set() or not self._sent_before(row):
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

    def _sent_before(self, row: OutboxRow) -> bool:
        """Did the uplink send this row already (and is it not about to send it again)?"""
        last = self._cursor
        for first_not in (self._withheld_from, self._resend_from):
            if first_not is not None:
                last = min(last, first_not - 1)
        return row.seq <= last

    def _withhold(self, row: OutboxRow) -> None:
        """Pass over a row for now; the cursor goes back to it when nothing holds it any more."""
        if self._withheld_from is None or row.seq < self._withheld_from:
            self._withheld_from = row.seq
        self._cursor = max(self._cursor, row.seq)
        if not self.relay_online:
            self.stats.withheld += 1

    def _timer(self) -> Callable[[asyncio.Future[int]], None]:
        started = time.monotonic()
        observe = self.stats.latency.observe

        def acknowledged(future: asyncio.Future[int]) -> None:
            if not future.cancelled() and future.exception() is None:  # not a lost connection
                observe(time.monotonic() - started)

        return acknowledged

    def _send(self, row: OutboxRow) -> None:
        sent = now_ms()
        again = False
        if self._resending:
            again = row.seq in self._resending
            self._resending.discard(row.seq)
        # Not paho's resend after a reconnect: this uplink sends again itself, in seq order.
        future = self.link.publish(
            f"{self.root}/{row.topic}", self.envelope(row, sent, replay=again), resend=False
        )
        future.add_done_callback(self._timer())
        self._inflight.append((row, future))
        self._unflushed.add(row.seq)
        self._cursor = max(self._cursor, row.seq)
        self.stats.sent += 1

    async def _collect(self, *, block: bool) -> None:
        """Take the outcomes of finished publishes, oldest first (they finish in order).

        The connection ending fails every unacknowledged one at once (``LinkLost``): from the
        oldest of them on, the rows go out again before anything newer.
        """
        if block and self._inflight:
            await asyncio.wait([self._inflight[0][1]])
        lost: list[int] = []
        while self._inflight and self._inflight[0][1].done():
            row, future = self._inflight.popleft()
            if future.cancelled():
                self._unflushed.discard(row.seq)
                continue
            if future.exception() is not None:
                self._unflushed.discard(row.seq)
                self._resending.add(row.seq)
                lost.append(row.seq)
                continue
            code = future.result()
            if self._first_unflushed is None:
                self._first_unflushed = time.monotonic()
            if is_success(code):
                self.stats.acked += 1
                self.stats.last_puback_ms = now_ms()
                (self._published if row.kind in AWAITS_RESULT else self._done).append(row.seq)
                if row.seq == self._refused_at:  # taken at last: what waited behind it follows
                    self._refused_at = None
                    self._release()
            else:
                self._refuse(row, code)
        if lost:
            first = min(lost)  # (a rewind may have sent an older row after newer ones)
            self._rewind_to(first)
            self.log.info(
                "the connection ended before the broker acknowledged messages; "
                "they are sent again first, in seq order",
                messages=len(lost),
                from_row=first,
            )

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
        if row.env_seq is not None and (self._refused_at is None or row.seq < self._refused_at):
            if self._refused_at is None:
                self.log.warning(
                    "newer business messages wait behind the refused one, so that seq stays "
                    "in order; time series go on",
                    seq=row.env_seq,
                )
            self._refused_at = row.seq

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

    async def _requeue_unanswered(self, *, lost: str | None = None) -> None:
        """Send the confirmations the relay has not answered again: those older than
        ``result_timeout_s``, or all of them when a session was lost on the way: the broker
        lost this gateway's (``lost="session"``: a verdict the relay sent while the gateway
        had no subscription is gone) or the relay came back after it was gone
        (``lost="relay"``: what the broker had handed to it went with its clean session). The
        relay knows each by its idem_key and answers with its verdict; nothing posts twice."""
        await self._flush_now()
        older = None if lost else now_ms() - int(self.result_timeout_s * 1000)
        count = await self.engine.outbox_requeue(older)
        if count:
            self.stats.requeued += count
            self._move_cursor_back(0)
            self._fresh.clear()
            why = {
                "session": "the broker lost this gateway's session",
                "relay": "the ERP relay came back after it was gone",
            }.get(lost or "", "the relay has not answered confirmations")
            self.log.warning(f"{why}; sending what it has not answered again", rows=count)


def _reason_name(code: int) -> str:
    return {
        0x80: "unspecified error",
        0x83: "implementation specific error",
        0x87: "not authorized",
        0x90: "topic name invalid",
        0x97: "quota exceeded",
        0x99: "payload format invalid",
    }.get(code, "refused")
