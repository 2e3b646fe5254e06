"""The uplink keeps ``seq`` order across every way the connection to the broker can break.

A real mosquitto per test, real paho subscribers, and the gateway's engine, outbox, uplink and
MQTT link (``Engine`` + ``Uplink`` + ``MqttLink``, as ``edge.sync.service`` wires them). Each
scenario keeps committing business messages while the fault hits, so that the uplink has
unacknowledged QoS 1 messages in flight and newer rows waiting when the connection comes back.

What is asserted, on what the subscribers received (``first_deliveries``): the *first* delivery
of each ``seq`` comes in ascending order. A later copy of a seq whose first delivery was in order
(a resend: same ``msg_id`` and ``seq``) may come after newer ones; consumers de-duplicate by
``msg_id``. Where the broker keeps what it acknowledged (every scenario but the wiped broker), no
seq is missing either. The refusal scenario states its own, weaker, bound.

The reconnect scenarios slow paho's thread down right after ``on_connect``
(``paho_descheduled_after_connect``): paho re-sends what it holds only once that callback has
returned, and on a busy gateway its thread may lose the processor just there. That makes the
interleaving that put seq 21-23 before seq 20 at a subscriber happen every time, instead of now
and then.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge.domain.inputs import (
    Action,
    CallForHelp,
    DispatchList,
    Input,
    MachineState,
    MachineStateChanged,
    Pulses,
    SetStopReason,
    Transition,
)
from edge.engine import Engine
from edge.store.store import Store
from edge.sync import messages, mqtt
from edge.sync.mqtt import MqttLink, is_success
from edge.sync.uplink import Uplink
from simulators.broker import Mosquitto, find_mosquitto
from tests.engine.helpers import rules, spec

pytestmark = pytest.mark.timeout(60)

ROOT = "umh/v1/t/WC1"
BUSINESS = f"{ROOT}/_mes_v1/#"
WINDOW = 100  # the uplink's window ([mqtt] max_inflight)
ROUNDS = 3


@pytest.fixture(autouse=True)
def _needs_mosquitto() -> None:
    try:
        find_mosquitto()
    except FileNotFoundError as exc:  # pragma: no cover - the test scripts install it
        pytest.skip(str(exc))


# ---------------------------------------------------------------------------- subscribers


@dataclass(frozen=True)
class Delivery:
    seq: int
    msg_id: str
    topic: str
    historical: bool


@dataclass
class Deliveries:
    """Every enveloped message the subscribers got, in arrival order."""

    seen: list[Delivery] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, topic: str, payload: bytes) -> None:
        data = json.loads(payload)
        if isinstance(data, dict) and "seq" in data:
            delivery = Delivery(int(data["seq"]), data["msg_id"], topic, data["historical"])
            with self.lock:
                self.seen.append(delivery)

    def all(self) -> list[Delivery]:
        with self.lock:
            return list(self.seen)

    def count(self) -> int:
        with self.lock:
            return len(self.seen)

    def has(self, seq: int) -> bool:
        with self.lock:
            return any(d.seq == seq for d in self.seen)


class Subscriber:
    """A plain paho MQTT 5 client in its own thread, as central IT would run one."""

    def __init__(
        self, broker: Mosquitto, into: Deliveries, client_id: str, *, persistent: bool = False
    ) -> None:
        self.into = into
        self.subscribed = threading.Event()
        client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=paho.MQTTv5,
        )
        client.reconnect_delay_set(1, 1)
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        self.client = client
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        if persistent:  # the broker keeps the subscription and queues for it while it is away
            props.SessionExpiryInterval = 3600
        client.connect(broker.host, broker.port, clean_start=not persistent, properties=props)
        client.loop_start()
        assert self.subscribed.wait(5), "the subscriber did not subscribe"

    def _on_connect(self, client: paho.Client, *_: Any) -> None:
        self.subscribed.clear()
        client.subscribe(BUSINESS, qos=1)

    def _on_subscribe(self, *_: Any) -> None:
        self.subscribed.set()

    def _on_message(self, _c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        self.into.add(msg.topic, bytes(msg.payload))

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.disconnect()
        self.client.loop_stop()


# ---------------------------------------------------------------------------- the checks


def first_deliveries(seen: list[Delivery]) -> list[int]:
    """Each seq once, in the order of its first arrival."""
    first: dict[int, None] = {}
    for delivery in seen:
        first.setdefault(delivery.seq, None)
    return list(first)


def assert_first_deliveries_in_order(first: list[int], *, complete: bool) -> None:
    assert first, "nothing was delivered"
    highest = 0
    for position, seq in enumerate(first):
        if seq < highest:
            newer = sorted(s for s in first[:position] if s > seq)
            raise AssertionError(
                f"seq {seq} first arrived after {len(newer)} newer ones "
                f"({newer[0]}..{newer[-1]}): out of seq order"
            )
        highest = seq
    if complete:
        missing = sorted(set(range(first[0], first[-1] + 1)) - set(first))
        assert not missing, f"{len(missing)} seqs never arrived: {missing[:5]}..."


# ---------------------------------------------------------------------------- the gateway


@dataclass
class Rig:
    engine: Engine
    link: MqttLink
    uplink: Uplink
    stop_id: str
    next_reason: int = 0
    produced: int = 0

    def classify(self) -> Input:
        """One business message (``_mes_v1/stop``): the open stop reclassified."""
        reason = ("M01", "B01")[self.next_reason]
        self.next_reason ^= 1
        self.produced += 1
        return SetStopReason(reason, f"operator:{self.produced}", self.engine.now(), self.stop_id)

    async def produce(self, count: int, batch: int = 500) -> None:
        while count > 0:
            size = min(batch, count)
            outcomes = await self.engine.submit_many([self.classify() for _ in range(size)])
            assert all(o.accepted for o in outcomes)
            count -= size

    async def submit(self, inp: Input) -> None:
        outcome = await self.engine.submit(inp)
        assert outcome.accepted, outcome

    async def last_seq(self) -> int:
        def newest() -> int:
            row = self.engine.store.conn.execute("SELECT MAX(env_seq) FROM outbox").fetchone()
            return int(row[0])

        return await self.engine.run_store(newest)

    async def pending(self) -> int:
        return (await self.engine.outbox_open_counts()).get("pending", 0)


@contextlib.asynccontextmanager
async def rig(
    tmp_path: Path, host: str, port: int, *, client_id: str = "edge-wc-test-01", **uplink: Any
) -> AsyncIterator[Rig]:
    """An engine with a running operation and an open stop, its uplink over a real link."""
    engine = await Engine.open(Store(tmp_path / "edge.db"), rules(), outbound=messages)
    runner = asyncio.create_task(engine.run(None), name="engine")
    link = MqttLink(
        host=host,
        port=port,
        client_id=client_id,
        reconnect_min_s=0.5,  # paho waits 1 s before it reconnects
        reconnect_max_s=1,
        max_inflight=2 * WINDOW,  # as edge.sync.service sets it
    )
    up = Uplink(engine, link, root=ROOT, edge_id="wc-test-01", window=WINDOW, **uplink)
    for inp in (
        DispatchList(1, (spec(target=100_000),), engine.now()),
        Transition(Action.START_PRODUCTION, "4711/0020", "operator:1", engine.now()),
        MachineStateChanged("press", MachineState.DOWN, engine.now(), "E-STOP"),
    ):
        outcome = await engine.submit(inp)
        assert outcome.accepted, outcome
    stop_id = engine.work_center.header.open_stop
    assert stop_id
    link.start()
    sender = asyncio.create_task(up.run(), name="uplink")
    try:
        yield Rig(engine, link, up, stop_id)
    finally:
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sender
        await link.stop()
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
        await engine.close()


@contextlib.asynccontextmanager
async def producing(
    r: Rig, every_s: float = 0.002, extra: Callable[[int], Input | None] = (lambda _n: None)
) -> AsyncIterator[None]:
    """Commit two business messages every few milliseconds (and ``extra(n)`` if it gives one)
    until the block ends: slower than the uplink drains, so its window is never full."""
    stop = asyncio.Event()

    async def run() -> None:
        n = 0
        while not stop.is_set():
            await r.produce(2)
            more = extra(n)
            if more is not None:
                await r.submit(more)
            n += 1
            await asyncio.sleep(every_s)

    task = asyncio.create_task(run(), name="producer")
    try:
        yield
    finally:
        stop.set()
        await task


def paho_descheduled_after_connect(link: MqttLink, seconds: float = 0.1) -> None:
    """paho's thread loses the processor for a moment right after ``on_connect`` returned:
    the asyncio loop runs first, before paho re-sends anything it still holds."""
    client = link._client
    callback = client.on_connect
    assert callback is not None

    def slow(*args: Any) -> None:
        callback(*args)
        time.sleep(seconds)

    client.on_connect = slow


async def until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.005)


async def drained(r: Rig, got: Deliveries, timeout: float = 15) -> None:
    """Until nothing is left to send and the subscriber has the newest seq."""
    last = await r.last_seq()
    await until(lambda: got.has(last), timeout, f"seq {last} at the subscriber")
    deadline = time.monotonic() + timeout
    while await r.pending():
        assert time.monotonic() < deadline, "the outbox did not drain"
        await asyncio.sleep(0.02)


async def flowing(got: Deliveries, more: int) -> None:
    """Until the subscriber got ``more`` messages than it has now."""
    target = got.count() + more
    await until(lambda: got.count() >= target, 10, "the stream to flow")


async def unacknowledged_at(broker: Mosquitto, got: Deliveries, r: Rig) -> int:
    """Freeze the broker mid-stream: what the gateway publishes now stays unacknowledged."""
    await flowing(got, 50)
    assert broker.proc is not None
    broker.proc.send_signal(signal.SIGSTOP)
    await asyncio.sleep(0.05)
    return in_flight(r)


def in_flight(r: Rig) -> int:
    """The uplink's sends without an acknowledgement so far (> 0: some are in flight now)."""
    stats = r.uplink.stats
    return stats.sent - stats.acked - stats.refused


async def reconnected(r: Rig, connects: int) -> None:
    await until(lambda: r.link.stats.connects > connects, 10, "the gateway to reconnect")
    await asyncio.sleep(0.3)  # newer rows go out behind the ones sent again


# ---------------------------------------------------------------------------- the link


async def test_a_resend_false_publish_fails_on_a_lost_connection_and_paho_keeps_no_copy(
    tmp_path: Path,
) -> None:
    """``MqttLink.publish(resend=False)``: when the connection ends before the PUBACK the future
    fails with ``LinkLost`` and paho does not send its copy after the reconnect; while the link
    is down such a publish fails at once. A default publish paho still sends again."""
    got = Deliveries()
    with Mosquitto(tmp_path / "mq", persistence=False) as broker:
        subscriber = Subscriber(broker, got, "central-0")
        link = MqttLink(host=broker.host, port=broker.port, client_id="edge-t", reconnect_min_s=0.5)
        link.start()
        try:
            await asyncio.wait_for(link.connected.wait(), 5)
            assert broker.proc is not None
            broker.proc.send_signal(signal.SIGSTOP)  # nothing is acknowledged from now on
            topic = f"{ROOT}/_mes_v1/stop"
            body = {"msg_id": "m", "historical": False}
            own = link.publish(topic, json.dumps({**body, "seq": 1}), resend=False)
            kept = link.publish(topic, json.dumps({**body, "seq": 2}))
            await asyncio.sleep(0.05)
            broker.stop(kill=True)
            with pytest.raises(mqtt.LinkLost):
                await asyncio.wait_for(own, 5)
            assert not kept.done()
            with pytest.raises(mqtt.LinkLost):  # not connected: not handed to paho at all
                await link.publish(topic, b"{}", resend=False)
            broker.start()
            # A new subscriber, back before paho reconnects (1 s); the old one's thread may
            # sleep that long before it notices that it is told to stop.
            old, subscriber = subscriber, Subscriber(broker, got, "central-1")
            old.close()
            assert is_success(await asyncio.wait_for(kept, 10))
            await until(lambda: got.has(2), 10, "paho's own resend")
            await asyncio.sleep(0.3)
            assert not got.has(1), "paho sent a resend=False message again"
            assert link.stats.lost == 2
        finally:
            await link.stop()
            subscriber.close()


# ---------------------------------------------------------------------------- reconnects


async def test_a_wiped_broker_gets_the_unacknowledged_rows_again_before_newer_ones(
    tmp_path: Path,
) -> None:
    """mosquitto killed (-9) mid-stream and started again without persistence on the same
    port: the gateway's session is gone. Three times in a row."""
    got = Deliveries()
    with Mosquitto(tmp_path / "mq", persistence=False) as broker:
        subscriber = Subscriber(broker, got, "central-0")
        async with rig(tmp_path, broker.host, broker.port) as r:
            paho_descheduled_after_connect(r.link)
            unacked = 0
            for n in range(ROUNDS):
                async with producing(r):
                    unacked += await unacknowledged_at(broker, got, r)
                    connects = r.link.stats.connects
                    broker.stop(kill=True)
                    broker.start()  # nothing remembered
                    # A new subscriber, back before the gateway (paho waits 1 s).
                    old, subscriber = subscriber, Subscriber(broker, got, f"central-{n + 1}")
                    old.close()
                    await reconnected(r, connects)
                await drained(r, got)
        subscriber.close()
    assert unacked > 0, "nothing was in flight when the broker died"
    # What the broker had acknowledged but not yet delivered died with it: gaps, no disorder.
    assert_first_deliveries_in_order(first_deliveries(got.all()), complete=False)
    assert any(d.historical for d in got.all()), "a resend must say historical"


async def test_a_broker_restarted_with_its_persistence_gets_everything_in_order(
    tmp_path: Path,
) -> None:
    """mosquitto stopped mid-stream and started again with its persistence: the gateway's and
    the subscriber's sessions are kept (session present), and what the broker acknowledged it
    delivers after the restart."""
    got = Deliveries()
    with Mosquitto(tmp_path / "mq") as broker:
        subscriber = Subscriber(broker, got, "central", persistent=True)
        async with rig(tmp_path, broker.host, broker.port) as r:
            paho_descheduled_after_connect(r.link)
            unacked = 0
            for _ in range(ROUNDS):
                async with producing(r):
                    unacked += await unacknowledged_at(broker, got, r)
                    connects = r.link.stats.connects
                    assert broker.proc is not None
                    broker.proc.send_signal(signal.SIGTERM)  # it saves its state, then ends
                    broker.proc.send_signal(signal.SIGCONT)
                    broker.stop()
                    broker.start()
                    await reconnected(r, connects)
                await drained(r, got)
        subscriber.close()
    assert unacked > 0, "nothing was in flight when the broker stopped"
    assert_first_deliveries_in_order(first_deliveries(got.all()), complete=True)


class Proxy:
    """A TCP relay between the gateway and the broker that can stall and cut the line."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.server.getsockname()[1]
        self.flowing = threading.Event()
        self.flowing.set()
        self.lines: list[tuple[socket.socket, socket.socket, threading.Event]] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, name="proxy", daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                near, _ = self.server.accept()
            except OSError:
                return
            far = socket.create_connection(self.target)
            dead = threading.Event()
            with self.lock:
                self.lines.append((near, far, dead))
            for a, b in ((near, far), (far, near)):
                threading.Thread(target=self._pump, args=(a, b, dead), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, dead: threading.Event) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                while not self.flowing.wait(0.01):
                    if dead.is_set():
                        return  # what the line held is lost with it
                if dead.is_set():
                    return
                dst.sendall(data)

    def stall(self) -> None:
        """Nothing gets through any more, and nobody is told (a dead link)."""
        self.flowing.clear()

    def cut(self) -> None:
        """Both ends see the line close; what was stalled on it is lost. (The sockets are only
        shut down, never closed here: a descriptor reused by the next line must not get old
        bytes from a pump that is still running.)"""
        with self.lock:
            lines = list(self.lines)
        for near, far, dead in lines:
            dead.set()
            for s in (near, far):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
        self.flowing.set()

    def close(self) -> None:
        self.server.close()
        self.cut()
        with self.lock:
            lines, self.lines = self.lines, []
        for near, far, _ in lines:
            near.close()
            far.close()


async def test_a_network_drop_the_gateway_reconnects_by_itself_after_keeps_seq_order(
    tmp_path: Path,
) -> None:
    """The line to the broker stalls mid-stream, then drops; the broker runs on and keeps the
    gateway's session, and paho reconnects by itself through the same line."""
    got = Deliveries()
    with Mosquitto(tmp_path / "mq") as broker:
        subscriber = Subscriber(broker, got, "central")  # beside the broker, never cut off
        proxy = Proxy(broker.host, broker.port)
        try:
            async with rig(tmp_path, "127.0.0.1", proxy.port) as r:
                paho_descheduled_after_connect(r.link)
                unacked = 0
                for _ in range(ROUNDS):
                    async with producing(r):
                        await flowing(got, 50)
                        proxy.stall()
                        await asyncio.sleep(0.05)
                        unacked += in_flight(r)
                        connects = r.link.stats.connects
                        proxy.cut()
                        await reconnected(r, connects)
                    await drained(r, got)
        finally:
            proxy.close()
            subscriber.close()
    assert unacked > 0, "nothing was in flight when the line dropped"
    assert_first_deliveries_in_order(first_deliveries(got.all()), complete=True)


# ---------------------------------------------------------------------------- refusals


ACL = """topic read {root}/#
topic write {root}/_mes_v1/stop
topic write {root}/_mes_v1/order/#
topic write {root}/_historian/#
"""


async def test_a_refused_business_message_holds_the_newer_ones_until_the_broker_takes_it(
    tmp_path: Path,
) -> None:
    """The broker refuses one ``_mes_v1/andon`` message (PUBACK 135, its ACL) in a stream of
    stop messages; later its ACL allows it and the retry gets through.

    A refusal comes back after the messages behind it were sent (the window of QoS 1 messages in
    flight): those reach the subscriber before the refused one, and nothing can call them back.
    What is asserted: at most a window of newer seqs overtakes the refused one, all of them sent
    before the refusal came back; everything committed after it arrives after the refused one,
    in order; no seq is missing; without the refused one, first deliveries are in order.
    """
    acl = tmp_path / "acl"
    acl.write_text(ACL.format(root=ROOT))
    got = Deliveries()
    with Mosquitto(tmp_path / "mq", extra_config=f"acl_file {acl}\n") as broker:
        subscriber = Subscriber(broker, got, "central")
        async with rig(tmp_path, broker.host, broker.port, retry_refused_s=1.0) as r:
            help_call: list[Input] = []

            def call_once(n: int) -> Input | None:
                if n == 50 and not help_call:
                    help_call.append(CallForHelp("material", "button:call", r.engine.now()))
                    return help_call[0]
                return None

            async with producing(r, extra=call_once):
                await until(lambda: r.uplink.stats.refused > 0, 10, "the refusal")
                known = await r.last_seq()  # committed before the refusal was known
                await asyncio.sleep(0.5)  # newer ones keep coming
            acl.write_text(ACL.format(root=ROOT) + f"topic write {ROOT}/_mes_v1/andon\n")
            assert broker.proc is not None
            broker.proc.send_signal(signal.SIGHUP)  # mosquitto reads its ACL again
            await drained(r, got)
        subscriber.close()
    andon = [d.seq for d in got.all() if d.topic.endswith("/_mes_v1/andon")]
    assert andon, "the refused message never arrived"
    refused = andon[0]
    first = first_deliveries(got.all())
    position = first.index(refused)
    overtook = [s for s in first[:position] if s > refused]
    assert len(overtook) <= WINDOW, f"{len(overtook)} newer seqs overtook the refused one"
    assert all(s <= known for s in overtook), (
        f"seqs committed after the refusal came back went out before the refused seq {refused}: "
        f"{[s for s in overtook if s > known][:5]}..."
    )
    assert_first_deliveries_in_order([s for s in first if s != refused], complete=False)
    assert set(range(first[0], max(first) + 1)) == set(first), "a seq is missing"


# ---------------------------------------------------------------------------- the relay


async def test_confirmations_withheld_for_the_relay_keep_seq_order_across_a_reconnect(
    tmp_path: Path,
) -> None:
    """The relay goes away mid-stream (confirmations are withheld, the business messages behind
    them wait, time series go on), the broker restarts at that moment with messages in flight,
    and the relay comes back.

    Asserted: no confirmation committed while the relay was away arrives before it is back;
    first deliveries in seq order, none missing."""
    got = Deliveries()
    with Mosquitto(tmp_path / "mq") as broker:
        subscriber = Subscriber(broker, got, "central", persistent=True)
        async with rig(tmp_path, broker.host, broker.port) as r:
            paho_descheduled_after_connect(r.link)

            def confirmation(n: int) -> Input | None:  # every good 50 makes a confirmation
                return Pulses("pulses", 50, r.engine.now()) if n % 10 == 5 else None

            unacked = 0
            for _ in range(ROUNDS):
                async with producing(r, extra=confirmation):
                    await flowing(got, 100)
                    r.uplink.set_relay_online(False)
                    away_from = await r.last_seq()
                    assert broker.proc is not None
                    broker.proc.send_signal(signal.SIGSTOP)
                    await asyncio.sleep(0.05)
                    unacked += in_flight(r)
                    connects = r.link.stats.connects
                    broker.proc.send_signal(signal.SIGTERM)
                    broker.proc.send_signal(signal.SIGCONT)
                    broker.stop()
                    broker.start()
                    await reconnected(r, connects)
                    arrived_while_away = got.all()
                    r.uplink.set_relay_online(True)
                    await asyncio.sleep(0.2)
                await drained(r, got)
                early = [
                    d.seq
                    for d in arrived_while_away
                    if d.topic.endswith("/_mes_v1/confirmation") and d.seq > away_from
                ]
                assert not early, f"confirmations went out while the relay was away: {early}"
                assert any(
                    d.seq > away_from and d.topic.endswith("/_mes_v1/confirmation")
                    for d in got.all()
                ), "no confirmation was withheld"
            assert r.uplink.stats.withheld > 0
        subscriber.close()
    assert unacked > 0, "nothing was in flight when the broker stopped"
    assert_first_deliveries_in_order(first_deliveries(got.all()), complete=True)


async def test_a_replay_while_the_relay_is_away_sends_nothing_the_uplink_withholds(
    tmp_path: Path,
) -> None:
    """Central asks for a replay (``cmd/resync``) while confirmations are withheld: it gets again
    what was sent, up to the first withheld row, and no withheld confirmation or business message
    behind it. Afterwards first deliveries are in seq order, none missing."""
    got = Deliveries()
    with Mosquitto(tmp_path / "mq") as broker:
        subscriber = Subscriber(broker, got, "central")
        async with rig(tmp_path, broker.host, broker.port) as r:
            await r.produce(20)
            await drained(r, got)
            sent = await r.last_seq()
            r.uplink.set_relay_online(False)
            await r.submit(Pulses("pulses", 50, r.engine.now()))  # a confirmation, withheld
            await r.produce(20)  # and business messages behind it
            await asyncio.sleep(0.3)
            replayed = await r.uplink.replay(1)
            await asyncio.sleep(0.3)
            newer = sorted({d.seq for d in got.all() if d.seq > sent})
            assert newer == [], f"a replay sent what the uplink withholds: {newer[:5]}"
            assert replayed == sent
            r.uplink.set_relay_online(True)
            await drained(r, got)
        subscriber.close()
    assert_first_deliveries_in_order(first_deliveries(got.all()), complete=True)
