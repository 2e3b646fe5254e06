"""A small asyncio adapter around paho-mqtt's MQTT 5 client.

Why not aiomqtt for publishing: aiomqtt 2.5 drops the PUBACK reason code, and over MQTT 5 a
broker's refusal (an ACL denial, a quota) arrives only as that reason code. Here every QoS 1
publish returns a future that resolves with the reason code, and a code >= 0x80 is a refusal,
never an acknowledgement.

paho runs its network loop in its own thread and reconnects by itself (exponential backoff,
with a random start so a plant's gateways do not reconnect in lockstep). With a persistent
session (clean start off, a session expiry) the broker keeps our subscriptions and queues
commands while we are away, and paho re-sends unacknowledged QoS 1 messages after a reconnect.

That resend is not ordered with anything published after the reconnect (paho sends its copies
only once ``on_connect`` has returned, from its own thread), so a publisher that promises an
order publishes with ``resend=False`` and sends again itself: when the connection is lost, such
a message's future fails with :class:`LinkLost` (it may or may not have reached the broker);
paho's copy is taken out of its queue before it could be sent again; and until the loop has
seen the new connection, a ``resend=False`` publish fails at once instead of going to paho.
Every callback hops onto the asyncio loop; nothing of ours runs on paho's thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import ssl
import threading
import time
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edge.logging import Logger, get_logger
from edge.sync.contract import CONTENT_TYPE, PAYLOAD_FORMAT_INDICATOR

OnConnect = Callable[[bool], Awaitable[None]]


class LinkLost(ConnectionError):
    """A ``resend=False`` publish had no PUBACK when its connection ended: whether the broker
    got it is unknown, and nobody sends it again but its publisher."""


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    payload: bytes
    retain: bool
    mid: int = 0
    qos: int = 0


@dataclass(frozen=True, slots=True)
class Will:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


@dataclass(slots=True)
class LinkStats:
    connects: int = 0
    disconnects: int = 0
    published: int = 0
    refused: int = 0
    received: int = 0
    lost: int = 0  # resend=False publishes failed with LinkLost
    last_puback_ms: int | None = None
    last_error: str | None = None


@dataclass(frozen=True, slots=True)
class TlsSettings:
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None


def contract_properties(packet_type: int = PacketTypes.PUBLISH) -> Properties:
    """The MQTT 5 properties every message of the contract carries (one definition:
    :data:`~edge.sync.contract.PAYLOAD_FORMAT_INDICATOR` and
    :data:`~edge.sync.contract.CONTENT_TYPE`), for a PUBLISH or a Last Will (``WILLMESSAGE``)."""
    props = Properties(packet_type)  # type: ignore[no-untyped-call]
    props.PayloadFormatIndicator = PAYLOAD_FORMAT_INDICATOR
    props.ContentType = CONTENT_TYPE
    return props


@dataclass(slots=True)
class _Pending:
    futures: dict[int, asyncio.Future[int]] = field(default_factory=dict)
    early: dict[int, int] = field(default_factory=dict)


class MqttLink:
    """One MQTT 5 connection: publish with PUBACK reason codes, subscriptions, inbound queue."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        client_id: str,
        keepalive_s: int = 30,
        session_expiry_s: int = 7 * 24 * 3600,
        username: str | None = None,
        password: str | None = None,
        will: Will | None = None,
        tls: TlsSettings | None = None,
        reconnect_min_s: float = 1.0,
        reconnect_max_s: float = 30.0,
        max_inflight: int = 200,
        logger: Logger | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.client_id = client_id
        self.keepalive_s = keepalive_s
        self.session_expiry_s = session_expiry_s
        self.log: Logger = logger or get_logger("edge.mqtt")
        self.stats = LinkStats()
        self.connected = asyncio.Event()
        # The broker took this connection's subscriptions (SUBACK): set until it is lost.
        self.subscribed = asyncio.Event()
        self.messages: asyncio.Queue[Message] = asyncio.Queue(maxsize=10_000)
        self._on_connect: list[OnConnect] = []
        self._subscriptions: list[tuple[str, int]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        # Held across paho's publish and our bookkeeping of it, and while a new connection
        # takes the ``resend=False`` messages out of paho's queue: each such message is then
        # either fully registered or not handed to paho yet. Never taken under ``_lock``.
        self._gate = threading.Lock()
        self._pending = _Pending()
        self._owned: set[int] = set()  # mids of resend=False messages awaiting a PUBACK
        self._abandoned: set[int] = set()  # failed at a disconnect, still in paho's queue
        self._up = False  # resend=False publishes may go to paho (the loop saw the connect)
        self._generation = 0  # counts paho's connects and disconnects
        self._acks: list[tuple[asyncio.Future[int], int]] = []
        self._acks_scheduled = False
        self._started = False

        client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=paho.MQTTv5,
            # An inbound QoS 1 message is acknowledged only after the engine committed it
            # (:meth:`ack`): if we die before, the broker delivers it again.
            manual_ack=True,
        )
        client.max_inflight_messages_set(max_inflight)
        client.max_queued_messages_set(0)
        # A random start spreads the reconnects of many gateways after a broker restart.
        low = max(1, round(reconnect_min_s * random.uniform(0.5, 1.5)))
        client.reconnect_delay_set(low, max(low, round(reconnect_max_s)))
        if username is not None:
            client.username_pw_set(username, password)
        if will is not None:
            client.will_set(
                will.topic,
                will.payload,
                will.qos,
                will.retain,
                properties=contract_properties(PacketTypes.WILLMESSAGE),
            )
        if tls is not None:
            context = ssl.create_default_context(cafile=tls.ca_file)
            if tls.cert_file:
                context.load_cert_chain(tls.cert_file, tls.key_file)
            client.tls_set_context(context)
        client.on_connect = self._cb_connect
        client.on_disconnect = self._cb_disconnect
        client.on_publish = self._cb_publish
        client.on_message = self._cb_message
        client.on_connect_fail = self._cb_connect_fail
        client.on_subscribe = self._cb_subscribe
        self._client = client
        # Packed anew at every publish and never changed: one object serves them all.
        self._properties = contract_properties()

    # ------------------------------------------------------------------ lifecycle

    def add_on_connect(self, callback: OnConnect) -> None:
        """Run ``callback(session_present)`` on the loop after every (re)connect."""
        self._on_connect.append(callback)

    def subscribe(self, topics: list[tuple[str, int]]) -> None:
        """Topics to (re)subscribe to on every connect."""
        self._subscriptions.extend(topics)
        if self.connected.is_set():
            self._client.subscribe(topics)

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self.session_expiry_s
        self._client.connect_async(
            self.host, self.port, self.keepalive_s, clean_start=False, properties=props
        )
        self._client.loop_start()
        self._started = True

    async def stop(self) -> None:
        """Disconnect cleanly (no Last Will) and stop paho's thread."""
        if not self._started:
            return
        self._started = False
        self.connected.clear()  # before the disconnect: a planned stop is not an outage
        with contextlib.suppress(Exception):
            self._client.disconnect()
        await asyncio.get_running_loop().run_in_executor(None, self._client.loop_stop)
        self.connected.clear()
        with self._lock:
            for fut in self._pending.futures.values():
                if not fut.done():
                    fut.cancel()
            self._pending.futures.clear()
            self._owned.clear()
            self._abandoned.clear()
            self._up = False

    async def __aenter__(self) -> MqttLink:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ publishing

    def publish(
        self,
        topic: str,
        payload: bytes | str,
        *,
        qos: int = 1,
        retain: bool = False,
        resend: bool = True,
    ) -> asyncio.Future[int]:
        """Publish; the future resolves with the PUBACK reason code (0 at once for QoS 0).

        Every message carries the contract's MQTT 5 properties (:func:`contract_properties`):
        ``payload`` must be UTF-8 JSON, as everything the contract carries is.

        With ``resend`` (the default), called while disconnected, paho keeps the message and
        sends it after the reconnect, as it does with one the connection lost unacknowledged.
        With ``resend=False`` (QoS 1) neither happens: the future fails with
        :class:`LinkLost` if the connection ends before the PUBACK, or at once if the loop has
        not seen a connection since the last one ended; the caller sends it again.
        """
        loop = self._loop or asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        if qos == 0:
            self._client.publish(
                topic, payload, qos=qos, retain=retain, properties=self._properties
            )
            future.set_result(0)
            return future
        with self._gate:
            if not resend and not self._up:
                future.set_exception(LinkLost("not connected"))
                self.stats.lost += 1
                return future
            # paho calls on_publish holding its own lock, and that callback takes ours: so
            # ours is never held while calling into paho, or the two threads could deadlock.
            info = self._client.publish(
                topic, payload, qos=qos, retain=retain, properties=self._properties
            )
            with self._lock:
                early = self._pending.early.pop(info.mid, None)
                if early is not None:
                    future.set_result(early)
                else:
                    self._pending.futures[info.mid] = future
                    if not resend:
                        self._owned.add(info.mid)
        return future

    def ack(self, message: Message) -> None:
        """Acknowledge an inbound message once its effect is durable (or it was refused)."""
        if message.qos > 0:
            self._client.ack(message.mid, message.qos)

    # ------------------------------------------------------------------ paho's thread

    def _to_loop(self, fn: Callable[..., None], *args: Any) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(fn, *args)

    def _cb_connect(
        self, client: paho.Client, _ud: Any, flags: Any, reason: ReasonCode, _props: Any
    ) -> None:
        if reason.is_failure:
            self._to_loop(self._connect_failed, str(reason))
            return
        if self._subscriptions:
            client.subscribe(list(self._subscriptions))
        # paho re-sends what is left in its queue as soon as this returns: the resend=False
        # messages leave it first (their publisher sends them again, in its own order).
        with self._gate:
            with self._lock:
                self._up = False
                self._generation += 1
                generation = self._generation
                lost = self._take_owned()
                forget, self._abandoned = self._abandoned, set()
            _forget(client, forget)
        self._to_loop(
            self._connected, bool(getattr(flags, "session_present", False)), lost, generation
        )

    def _cb_connect_fail(self, _client: paho.Client, _ud: Any) -> None:
        self._to_loop(self._connect_failed, "connection failed")

    def _cb_subscribe(self, _client: paho.Client, _ud: Any, _mid: int, *_rest: Any) -> None:
        self._to_loop(self.subscribed.set)

    def _cb_disconnect(
        self, _client: paho.Client, _ud: Any, _flags: Any, reason: ReasonCode, _props: Any
    ) -> None:
        # Not the gate here: paho may call this holding the lock its publish takes.
        with self._lock:
            self._up = False
            self._generation += 1
            lost = self._take_owned()
        self._to_loop(self._disconnected, str(reason), lost)

    def _take_owned(self) -> list[asyncio.Future[int]]:
        """The futures of the unacknowledged resend=False messages; held: ``_lock``."""
        futures = self._pending.futures
        lost = [futures.pop(mid) for mid in self._owned if mid in futures]
        self._abandoned |= self._owned
        self._owned = set()
        return lost

    def _cb_publish(
        self, _client: paho.Client, _ud: Any, mid: int, reason: ReasonCode, _props: Any
    ) -> None:
        code = int(reason.value) if isinstance(reason, ReasonCode) else int(reason)
        with self._lock:
            self._owned.discard(mid)
            future = self._pending.futures.pop(mid, None)
            if future is None:
                self._pending.early[mid] = code
                return
            # Hand acknowledgements over in bunches: one loop wake-up, not one per PUBACK.
            self._acks.append((future, code))
            if self._acks_scheduled:
                return
            self._acks_scheduled = True
        self._to_loop(self._resolve_acks)

    def _cb_message(self, _client: paho.Client, _ud: Any, msg: paho.MQTTMessage) -> None:
        message = Message(msg.topic, bytes(msg.payload), bool(msg.retain), msg.mid, msg.qos)
        self._to_loop(self._enqueue, message)

    # ------------------------------------------------------------------ on the loop

    def _resolve_acks(self) -> None:
        with self._lock:
            acks, self._acks = self._acks, []
            self._acks_scheduled = False
        now = time.time_ns() // 1_000_000
        for future, code in acks:
            if future.done():
                continue
            future.set_result(code)
            if code < 0x80:
                self.stats.published += 1
                self.stats.last_puback_ms = now
            else:
                self.stats.refused += 1

    def _enqueue(self, message: Message) -> None:
        self.stats.received += 1
        try:
            self.messages.put_nowait(message)
        except asyncio.QueueFull:
            # QoS 1 was acknowledged by paho already; dropping here would lose a command.
            # The queue is only full if the engine is stuck, and then the watchdog restarts
            # us and the broker redelivers from the persistent session.
            self.log.error("inbound queue full; message dropped", topic=message.topic)

    def _fail(self, lost: list[asyncio.Future[int]]) -> None:
        for future in lost:
            if future.done():
                continue
            if not self._started:  # stopping: nobody is left to send it again
                future.cancel()
                continue
            future.set_exception(LinkLost("the connection ended before the PUBACK"))
            self.stats.lost += 1

    def _connected(
        self, session_present: bool, lost: list[asyncio.Future[int]], generation: int
    ) -> None:
        self._fail(lost)
        with self._lock:
            if generation == self._generation:  # not already lost again
                self._up = True
        self.stats.connects += 1
        self.connected.set()
        self.log.info(
            "mqtt connected",
            broker=f"{self.host}:{self.port}",
            client_id=self.client_id,
            session_present=session_present,
        )
        for callback in self._on_connect:
            task = asyncio.ensure_future(callback(session_present))
            task.add_done_callback(self._callback_done)

    def _callback_done(self, task: asyncio.Future[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self.log.error("on-connect callback failed", error=repr(task.exception()))

    def _connect_failed(self, reason: str) -> None:
        if self.stats.last_error != reason:
            self.log.warning(
                "mqtt connect failed", broker=f"{self.host}:{self.port}", reason=reason
            )
        self.stats.last_error = reason

    def _disconnected(self, reason: str, lost: list[asyncio.Future[int]]) -> None:
        self._fail(lost)
        if self.connected.is_set():
            self.stats.disconnects += 1
            self.log.warning("mqtt disconnected", reason=reason)
        self.connected.clear()
        self.subscribed.clear()
        self.stats.last_error = reason


def is_success(code: int) -> bool:
    """PUBACK reason codes below 0x80 succeed (16 "no matching subscribers" included)."""
    return code < 0x80


def _forget(client: paho.Client, mids: Collection[int]) -> None:
    """Take these messages out of paho's queue of unacknowledged ones: it never sends them again.

    paho has no call for some of them (``drop_out_messages``, from 2.2 on, takes them all); this
    does what that does, under the same lock, for the ones given.
    """
    if not mids:
        return
    with client._out_message_mutex:
        for mid in mids:
            client._out_messages.pop(mid, None)
