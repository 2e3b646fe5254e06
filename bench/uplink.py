"""Event -> subscriber over MQTT: the durable gateway path vs. a naive paho script, same run.

    python bench/uplink.py                 # defaults: 5 latency runs, 2 backlog runs (~3 min)
    python bench/uplink.py --runs 5 --rate 100 --events 2000 --backlog 100000 --backlog-runs 2
    python bench/uplink.py --profile-drain /tmp/drain.prof   # cProfile of the gateway's drain

One private mosquitto (``simulators.broker.Mosquitto``, 127.0.0.1, free port) serves the whole
benchmark. Every run starts a fresh gateway (a generated TOML through ``edge.config.load_config``,
``edge.app.open_engine`` + ``run_gateway`` with ``[mqtt] enabled``: engine, SQLite WAL with
synchronous=FULL, outbox, uplink over paho MQTT 5). The input is an operator classifying the
open machine stop: ``SetStopReason`` alternating between two reasons, so every input commits one
journal row, one event and one outbox row, and yields exactly one ``_mes_v1/stop`` business message
(``stop_reason_set`` / ``stop_reclassified``, ~450 B with the envelope). The input's index rides
in the event's ``actor`` (``operator:g<i>``) so the subscriber can match it.

(a) Latency at a steady rate (absolute deadlines, never sleep drift): a source task in the
gateway's loop submits one input per period and records ``perf_counter_ns`` just before
submitting; the gateway journals it, commits, and the uplink publishes it (QoS 1) after the
commit. A naive script publishes the same-shaped payload with paho-mqtt (MQTT 5, QoS 1, no
storage) from its own thread at the same rate, half a period out of phase with the gateway, in
the same time window, so both see the same machine and broker. The subscriber is a separate paho
client in its own thread (same process, same clock): latency = receive - send. Lost, duplicated
and out-of-order messages are counted (by index and by the envelope's ``seq``).

(b) Backlog drain: the broker is stopped while the gateway runs, the engine commits ``--backlog``
inputs (``submit_many`` batches of 1000, each input one outbox row), the broker starts again and
the gateway reconnects by itself and drains the outbox. The subscriber (a persistent session, so
nothing published before it is back is lost) must receive all of them, in ``seq`` order, none
missing; duplicates are reported. The rate is taken at the subscriber from the first to the last
message (the reconnect delay is printed separately). The baseline is a paho client publishing
as many pre-built messages of the same size, QoS 1, with the uplink's in-flight window
(``[mqtt] max_inflight``, 100), as fast as it can, measured the same way.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import json
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge.app import open_engine, run_gateway
from edge.config import GatewayConfig, load_config
from edge.domain.inputs import Input, MachineState, MachineStateChanged, SetStopReason
from edge.engine import Engine
from edge.logging import configure_logging
from simulators.broker import Mosquitto

EDGE_ID = "wc-bench-01"
WORK_CENTER = "BENCH01"
ROOT = f"umh/v1/acme/plant1/bench/line1/{WORK_CENTER}"
STOP_TOPIC = f"{ROOT}/_mes_v1/stop"
NAIVE_TOPIC = "umh/v1/acme/plant1/bench/line1/NAIVE01/_mes_v1/stop"
REASONS = ("M01", "B01")
WINDOW = 100  # [mqtt] max_inflight: the uplink's window; the naive baseline uses the same
FILL_BATCH = 1000
BATCH_WINDOW_MS = 0.0  # [engine] batch_window_ms, the shipped default

CONFIG = """
[gateway]
edge_id = "{edge_id}"
work_center = "{work_center}"
timezone = "Europe/Berlin"
log_level = "warning"

[store]
path = "{db}"

[engine]
tick_interval_s = 1.0
batch_window_ms = {batch_window_ms}

[mqtt]
enabled = true
host = "127.0.0.1"
port = {port}
enterprise = "acme"
site = "plant1"
area = "bench"
line = "line1"
reconnect_min_s = 0.2
reconnect_max_s = 1
health_interval_s = 30
max_inflight = {window}

[[master_data.stop_reasons]]
code = "M01"
text = "Material missing"

[[master_data.stop_reasons]]
code = "B01"
text = "Break"
category = "planned"
"""


def gateway_config(workdir: Path, port: int) -> GatewayConfig:
    path = workdir / "edge.toml"
    path.write_text(
        CONFIG.format(
            edge_id=EDGE_ID,
            work_center=WORK_CENTER,
            db=workdir / "edge.db",
            port=port,
            window=WINDOW,
            batch_window_ms=BATCH_WINDOW_MS,
        )
    )
    return load_config(path, env={})


# ---------------------------------------------------------------------- the subscriber


class Subscriber:
    """A plain paho MQTT 5 client in its own thread; it only timestamps and keeps payloads."""

    def __init__(
        self, host: str, port: int, topics: list[str], client_id: str, *, persistent: bool = False
    ) -> None:
        self.host, self.port, self.topics = host, port, topics
        self.persistent = persistent
        self.received: list[tuple[int, str, bytes]] = []  # (perf_counter_ns, topic, payload)
        self._subscribed = threading.Event()
        self._counted: dict[tuple[str, bytes], tuple[int, int]] = {}
        c = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=paho.MQTTv5,
        )
        c.on_connect = self._on_connect
        c.on_subscribe = self._on_subscribe
        c.on_message = self._on_message
        self.client = c

    def _on_connect(self, client: paho.Client, *_: Any) -> None:
        client.subscribe([(t, 1) for t in self.topics])

    def _on_subscribe(self, *_: Any) -> None:
        self._subscribed.set()

    def _on_message(self, _c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        self.received.append((time.perf_counter_ns(), msg.topic, msg.payload))

    def start(self, timeout: float = 10.0) -> Subscriber:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 3600 if self.persistent else 0
        self.client.connect(self.host, self.port, clean_start=not self.persistent, properties=props)
        self.client.loop_start()
        if not self._subscribed.wait(timeout):
            self.stop()
            raise TimeoutError("the subscriber got no SUBACK")
        return self

    def stop(self, *, end_session: bool = False) -> None:
        """Disconnect; a persistent session is kept unless ``end_session``."""
        props = None
        if end_session and self.persistent:
            props = Properties(PacketTypes.DISCONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = 0
        with contextlib.suppress(Exception):
            self.client.disconnect(properties=props)
        self.client.loop_stop()

    def count(self, topic: str, marker: bytes) -> int:
        """Messages on ``topic`` whose payload contains ``marker`` (one sender's messages).

        Incremental, so polling it costs the gateway (same process) next to nothing.
        """
        key = (topic, marker)
        start, total = self._counted.get(key, (0, 0))
        end = len(self.received)
        total += sum(1 for _, t, p in self.received[start:end] if t == topic and marker in p)
        self._counted[key] = (end, total)
        return total


@contextlib.contextmanager
def subscribed(*args: Any, **kwargs: Any) -> Iterator[Subscriber]:
    sub = Subscriber(*args, **kwargs).start()
    try:
        yield sub
    finally:
        sub.stop()


# ---------------------------------------------------------------------- checking what arrived


@dataclass
class Delivery:
    """What one sender's messages looked like at the subscriber."""

    expected: int
    received: int = 0
    missing: int = 0
    duplicates: int = 0
    out_of_order: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    first_ns: int = 0
    last_ns: int = 0

    @property
    def ok(self) -> bool:
        return self.missing == 0 and self.duplicates == 0 and self.out_of_order == 0

    def pct(self, q: float) -> float:
        xs = sorted(self.latencies_ms)
        if not xs:
            return float("nan")
        return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]

    @property
    def rate(self) -> float:
        span = (self.last_ns - self.first_ns) / 1e9
        return (self.received - 1) / span if span > 0 else float("nan")


def check(
    received: list[tuple[int, str, bytes]],
    topic: str,
    prefix: str,
    expected: int,
    send_ns: list[int] | None = None,
) -> Delivery:
    """Match messages on ``topic`` whose actor is ``operator:<prefix><i>`` to inputs 0..n-1."""
    d = Delivery(expected)
    seen = bytearray(expected)
    last_seq = -1
    last_index = -1
    tag = f"operator:{prefix}"
    for recv_ns, t, payload in received:
        if t != topic:
            continue
        msg = json.loads(payload)
        actor = msg["body"].get("actor", "")
        if not actor.startswith(tag):
            continue
        index = int(actor[len(tag) :])
        d.received += 1
        if d.received == 1:
            d.first_ns = recv_ns
        d.last_ns = recv_ns
        if seen[index]:
            d.duplicates += 1
            continue
        seen[index] = 1
        if index < last_index or msg["seq"] <= last_seq:
            d.out_of_order += 1
        last_index, last_seq = index, msg["seq"]
        if send_ns is not None:
            d.latencies_ms.append((recv_ns - send_ns[index]) / 1e6)
    d.missing = expected - sum(seen)
    return d


# ---------------------------------------------------------------------- the gateway


@dataclass
class Gateway:
    engine: Engine
    stop: asyncio.Event
    task: asyncio.Task[Engine]
    stop_id: str
    next_reason: int = 0
    durable_ns: dict[str, int] = field(default_factory=dict)  # actor -> commit listener called

    def __post_init__(self) -> None:
        self.engine.add_listener(self._committed)

    def _committed(self, events: Any) -> None:
        now = time.perf_counter_ns()
        for ev in events:
            if ev.actor and ev.actor.startswith("operator:g"):
                self.durable_ns[ev.actor] = now

    def reason(self, index: int, prefix: str) -> Input:
        """Classify the open stop, each time with the other reason: one event, one outbox row."""
        inp = SetStopReason(
            REASONS[self.next_reason], f"operator:{prefix}{index}", self.engine.now(), self.stop_id
        )
        self.next_reason ^= 1
        return inp

    async def outbox_depth(self) -> int:
        return await self.engine.run_store(self.engine.store.outbox_depth)


@contextlib.asynccontextmanager
async def gateway(cfg: GatewayConfig) -> Any:
    engine = await open_engine(cfg)
    stop = asyncio.Event()
    task = asyncio.create_task(run_gateway(cfg, stop=stop, engine=engine))
    try:
        out = await engine.submit(
            MachineStateChanged("press", MachineState.DOWN, engine.now(), "E-STOP")
        )
        assert out.accepted, out
        stop_id = engine.wc.header.open_stop
        assert stop_id, "no open stop"
        yield Gateway(engine, stop, task, stop_id)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def wait_until(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def wait_drained(gw: Gateway, timeout: float) -> None:
    """Until the uplink is connected and has nothing left to send (the set-up messages)."""
    deadline = time.monotonic() + timeout
    while await gw.outbox_depth():
        if time.monotonic() > deadline:
            raise TimeoutError("the gateway did not connect and send its set-up messages")
        await asyncio.sleep(0.02)


# ---------------------------------------------------------------------- (a) latency


async def gateway_source(gw: Gateway, n: int, rate: float, t0: float, send_ns: list[int]) -> None:
    """One input per period at absolute deadlines ``t0 + i/rate``; each submit awaited in a task."""
    period = 1.0 / rate
    tasks: list[asyncio.Task[Any]] = []
    for i in range(n):
        delay = t0 + i * period - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        inp = gw.reason(i, "g")
        send_ns[i] = time.perf_counter_ns()
        tasks.append(asyncio.create_task(gw.engine.submit(inp)))
    outcomes = await asyncio.gather(*tasks)
    rejected = [o for o in outcomes if not o.accepted]
    assert not rejected, rejected[:3]


def naive_payload(i: int, seq: int, sent_ms: int) -> bytes:
    """A script's message: the same envelope and body shape as the gateway's."""
    body = {
        "type": "stop_reclassified",
        "event_time": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(sent_ms / 1000)),
        "actor": f"operator:n{i}",
        "stop_id": "S000001",
        "old_reason": REASONS[(i + 1) % 2],
        "new_reason": REASONS[i % 2],
    }
    env = {
        "schema": "mes.stop.v1",
        "msg_id": str(uuid.uuid4()),
        "idem_key": None,
        "edge_id": "wc-naive-01",
        "boot_seq": 1,
        "seq": seq,
        "ts_event_ms": sent_ms,
        "ts_sent_ms": sent_ms,
        "historical": False,
        "body": body,
    }
    return json.dumps(env, separators=(",", ":")).encode()


def naive_client(host: str, port: int, client_id: str, window: int) -> paho.Client:
    c = paho.Client(
        callback_api_version=CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5
    )
    c.max_inflight_messages_set(window)
    c.max_queued_messages_set(0)
    c.connect(host, port)
    c.loop_start()
    return c


def naive_paced(
    host: str, port: int, n: int, rate: float, t0: float, send_ns: list[int], errors: list[str]
) -> None:
    """The script: build, publish QoS 1, next; absolute deadlines, no storage."""
    client = naive_client(host, port, "bench-naive-paced", WINDOW)
    try:
        infos = []
        period = 1.0 / rate
        for i in range(n):
            delay = t0 + i * period - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            payload = naive_payload(i, i + 1, time.time_ns() // 1_000_000)
            send_ns[i] = time.perf_counter_ns()
            infos.append(client.publish(NAIVE_TOPIC, payload, qos=1))
        for info in infos:
            info.wait_for_publish(10)
            if info.rc != 0 or not info.is_published():
                errors.append(f"publish rc={info.rc}")
    except Exception as exc:  # reported, never hangs the benchmark
        errors.append(repr(exc))
    finally:
        client.disconnect()
        client.loop_stop()


@dataclass
class LatencyRun:
    gateway: Delivery
    naive: Delivery
    durable: Delivery  # the gateway's part up to the commit: send -> commit listener


async def latency_run(broker: Mosquitto, gw: Gateway, n: int, rate: float) -> LatencyRun:
    g_send = [0] * n
    n_send = [0] * n
    errors: list[str] = []
    with subscribed(
        broker.host, broker.port, [STOP_TOPIC, NAIVE_TOPIC], "bench-sub-latency"
    ) as sub:
        t0 = time.perf_counter() + 0.2
        naive = threading.Thread(
            target=naive_paced,
            args=(broker.host, broker.port, n, rate, t0 + 0.5 / rate, n_send, errors),
            name="naive-publisher",
            daemon=True,
        )
        naive.start()
        try:
            await gateway_source(gw, n, rate, t0, g_send)
        finally:
            await asyncio.to_thread(naive.join, 60)
        assert not errors, errors[:3]
        await wait_until(
            lambda: (
                sub.count(STOP_TOPIC, b'"operator:g') >= n
                and sub.count(NAIVE_TOPIC, b'"operator:n') >= n
            ),
            10,
            "the latency messages",
        )
        await asyncio.sleep(0.2)  # a late duplicate would show up now
        received = list(sub.received)
    durable = Delivery(n)
    durable.latencies_ms = [
        (gw.durable_ns[f"operator:g{i}"] - g_send[i]) / 1e6
        for i in range(n)
        if f"operator:g{i}" in gw.durable_ns
    ]
    gw.durable_ns.clear()
    return LatencyRun(
        check(received, STOP_TOPIC, "g", n, g_send),
        check(received, NAIVE_TOPIC, "n", n, n_send),
        durable,
    )


# ---------------------------------------------------------------------- (b) backlog drain


@dataclass
class DrainRun:
    gateway: Delivery
    naive: Delivery
    fill_s: float
    reconnect_s: float  # broker started -> first message at the subscriber
    naive_ack_rate: float  # publisher side: first publish -> last PUBACK


async def fill_outbox(gw: Gateway, n: int) -> float:
    start = time.perf_counter()
    done = 0
    pending: list[asyncio.Task[Any]] = []
    while done < n:
        size = min(FILL_BATCH, n - done)
        batch = [gw.reason(done + k, "b") for k in range(size)]
        pending.append(asyncio.create_task(gw.engine.submit_many(batch)))
        done += size
        if len(pending) >= 4:  # a few batches queued keep the writer busy without a pile-up
            outcomes = await pending.pop(0)
            assert all(o.accepted for o in outcomes)
    for task in pending:
        outcomes = await task
        assert all(o.accepted for o in outcomes)
    return time.perf_counter() - start


def naive_burst(host: str, port: int, n: int) -> tuple[float, list[str]]:
    """The baseline: n pre-built messages, QoS 1, ``WINDOW`` in flight, as fast as paho goes.

    Like the uplink it keeps at most ``WINDOW`` unacknowledged (a semaphore released by
    ``on_publish``): paho's message ids wrap at 65,535, so 100,000 cannot all be queued at once.
    """
    payloads = [naive_payload(i, i + 1, time.time_ns() // 1_000_000) for i in range(n)]
    errors: list[str] = []
    window = threading.Semaphore(WINDOW)
    acked = threading.Event()
    count = [0]

    def on_publish(*_: Any) -> None:
        count[0] += 1
        window.release()
        if count[0] == n:
            acked.set()

    client = naive_client(host, port, "bench-naive-burst", WINDOW)
    client.on_publish = on_publish
    try:
        start = time.perf_counter()
        for p in payloads:
            if not window.acquire(timeout=30):
                errors.append("no PUBACK for 30 s")
                break
            info = client.publish(NAIVE_TOPIC, p, qos=1)
            if info.rc != 0:
                errors.append(f"publish rc={info.rc}")
        if not errors and not acked.wait(60):
            errors.append(f"only {count[0]} of {n} acknowledged")
        elapsed = time.perf_counter() - start
    finally:
        client.disconnect()
        client.loop_stop()
    return n / elapsed, errors


async def drain_run(
    broker: Mosquitto, gw: Gateway, n: int, profile: cProfile.Profile | None
) -> DrainRun:
    # A persistent session: the subscription survives the broker restart (mosquitto persists it)
    # and whatever the gateway publishes before the subscriber is back is queued for it.
    client_id = f"bench-sub-drain-{uuid.uuid4().hex[:8]}"  # a fresh session every run
    sub = Subscriber(broker.host, broker.port, [STOP_TOPIC], client_id, persistent=True)
    sub.start()
    sub.stop()
    broker.stop()
    try:
        fill_s = await fill_outbox(gw, n)
        depth = await gw.outbox_depth()
        assert depth >= n, f"outbox holds {depth} rows, {n} expected"
    finally:
        broker.start()
    started_ns = time.perf_counter_ns()
    sub = Subscriber(broker.host, broker.port, [STOP_TOPIC], client_id, persistent=True)
    sub.start()
    try:
        if profile is not None:
            profile.enable()
        try:
            await wait_until(
                lambda: sub.count(STOP_TOPIC, b'"operator:b') >= n,
                max(60.0, n / 500),
                "the backlog",
            )
        finally:
            if profile is not None:
                profile.disable()
        await asyncio.sleep(0.3)
        received = list(sub.received)
    finally:
        sub.stop(end_session=True)
    g = check(received, STOP_TOPIC, "b", n)
    reconnect_s = (g.first_ns - started_ns) / 1e9

    with subscribed(broker.host, broker.port, [NAIVE_TOPIC], "bench-sub-naive") as nsub:
        ack_rate, errors = await asyncio.to_thread(naive_burst, broker.host, broker.port, n)
        assert not errors, errors[:3]
        await wait_until(
            lambda: nsub.count(NAIVE_TOPIC, b'"operator:n') >= n, 60, "the naive burst"
        )
        await asyncio.sleep(0.3)
        nreceived = list(nsub.received)
    return DrainRun(g, check(nreceived, NAIVE_TOPIC, "n", n), fill_s, reconnect_s, ack_rate)


# ---------------------------------------------------------------------- running it


async def one_run(
    broker: Mosquitto,
    *,
    events: int,
    rate: float,
    backlog: int,
    profile: cProfile.Profile | None = None,
) -> tuple[LatencyRun | None, DrainRun | None]:
    with tempfile.TemporaryDirectory(prefix="bench-uplink-") as tmp:
        cfg = gateway_config(Path(tmp), broker.port)
        async with gateway(cfg) as gw:
            await wait_drained(gw, 15)
            lat = await latency_run(broker, gw, events, rate) if events else None
            drain = await drain_run(broker, gw, backlog, profile) if backlog else None
    return lat, drain


def med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def order(out_of_order: int) -> str:
    return str(out_of_order) if out_of_order else "ok"


def report(lats: list[LatencyRun], drains: list[DrainRun], rate: float) -> None:
    print()
    if lats:
        gp50, gp99, gmax = (med([r.gateway.pct(q) for r in lats]) for q in (0.5, 0.99, 1.0))
        np50, np99, nmax = (med([r.naive.pct(q) for r in lats]) for q in (0.5, 0.99, 1.0))
        n = lats[0].gateway.expected
        lost_g = sum(r.gateway.missing for r in lats)
        lost_n = sum(r.naive.missing for r in lats)
        dup_g = sum(r.gateway.duplicates for r in lats)
        dup_n = sum(r.naive.duplicates for r in lats)
        ooo_g = sum(r.gateway.out_of_order for r in lats)
        ooo_n = sum(r.naive.out_of_order for r in lats)
        print(f"(a) latency event -> subscriber, {rate:g} events/s, {n} events/run, medians")
        print("| path                            | p50 ms | p99 ms | max ms | lost | dup | order |")
        print("|---------------------------------|--------|--------|--------|------|-----|-------|")
        print(
            f"| gateway (journal+outbox+uplink) | {gp50:6.2f} | {gp99:6.2f} | {gmax:6.2f} "
            f"| {lost_g:4d} | {dup_g:3d} | {order(ooo_g):>5} |"
        )
        print(
            f"| naive paho script, no storage   | {np50:6.2f} | {np99:6.2f} | {nmax:6.2f} "
            f"| {lost_n:4d} | {dup_n:3d} | {order(ooo_n):>5} |"
        )
        print(
            f"| ratio gateway / naive           | {gp50 / np50:5.1f}x | {gp99 / np99:5.1f}x "
            f"| {gmax / nmax:5.1f}x |      |     |       |"
        )
        dp50, dp99 = (med([r.durable.pct(q) for r in lats]) for q in (0.5, 0.99))
        print(
            f"of which input -> durable (commit done): p50 {dp50:.2f} ms, p99 {dp99:.2f} ms "
            f"(engine group-commit window {BATCH_WINDOW_MS} ms + fsync)"
        )
        print(f"target: gateway p99 <= 2x naive p99 -> {'met' if gp99 <= 2 * np99 else 'MISSED'}")
        print()
    if drains:
        n = drains[0].gateway.expected
        g = med([d.gateway.rate for d in drains])
        nv = med([d.naive.rate for d in drains])
        na = med([d.naive_ack_rate for d in drains])
        print(f"(b) backlog drain, {n:,} messages, QoS 1, {WINDOW} in flight, medians")
        print("| path                            |   msg/s | lost | dup | order |")
        print("|---------------------------------|---------|------|-----|-------|")
        for name, rate_, ds in (
            ("gateway outbox -> subscriber", g, [d.gateway for d in drains]),
            ("naive paho burst -> subscriber", nv, [d.naive for d in drains]),
        ):
            lost = sum(d.missing for d in ds)
            dup = sum(d.duplicates for d in ds)
            ooo = sum(d.out_of_order for d in ds)
            print(f"| {name:31} | {rate_:7,.0f} | {lost:4d} | {dup:3d} | {order(ooo):>5} |")
        print(f"| ratio gateway / naive           | {g / nv:6.2f}x |      |     |       |")
        print(
            f"filling the outbox: {n / med([d.fill_s for d in drains]):,.0f} inputs/s durable; "
            f"broker start -> first message: {med([d.reconnect_s for d in drains]):.2f} s; "
            f"naive publisher side (to last PUBACK): {na:,.0f} msg/s"
        )
        print(f"target: gateway >= 5,000 msg/s -> {'met' if g >= 5000 else 'MISSED'}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="latency runs")
    parser.add_argument("--rate", type=float, default=100.0, help="events/s in (a)")
    parser.add_argument("--events", type=int, default=2000, help="events per latency run")
    parser.add_argument("--backlog", type=int, default=100_000, help="outbox rows in (b)")
    parser.add_argument(
        "--backlog-runs", type=int, default=2, help="runs that also drain a backlog (b)"
    )
    parser.add_argument("--profile-drain", type=Path, help="write a cProfile of the drain here")
    args = parser.parse_args()
    configure_logging("error", json=True)
    lats: list[LatencyRun] = []
    drains: list[DrainRun] = []
    profile = cProfile.Profile() if args.profile_drain else None
    with tempfile.TemporaryDirectory(prefix="bench-broker-") as tmp, Mosquitto(Path(tmp)) as broker:
        for i in range(max(args.runs, args.backlog_runs)):
            lat, drain = await one_run(
                broker,
                events=args.events if i < args.runs else 0,
                rate=args.rate,
                backlog=args.backlog if i < args.backlog_runs else 0,
                profile=profile if i == 0 else None,
            )
            line = f"run {i + 1}:"
            if lat is not None:
                lats.append(lat)
                line += (
                    f" latency p50/p99/max gateway {lat.gateway.pct(0.5):.2f}/"
                    f"{lat.gateway.pct(0.99):.2f}/{lat.gateway.pct(1.0):.2f} ms"
                    f" (lost {lat.gateway.missing}, dup {lat.gateway.duplicates},"
                    f" out of order {lat.gateway.out_of_order})"
                    f", naive {lat.naive.pct(0.5):.2f}/{lat.naive.pct(0.99):.2f}/"
                    f"{lat.naive.pct(1.0):.2f} ms (lost {lat.naive.missing})"
                )
            if drain is not None:
                drains.append(drain)
                line += (
                    f"\n       drain gateway {drain.gateway.rate:,.0f} msg/s"
                    f" (lost {drain.gateway.missing}, dup {drain.gateway.duplicates},"
                    f" out of order {drain.gateway.out_of_order}),"
                    f" naive {drain.naive.rate:,.0f} msg/s (lost {drain.naive.missing})"
                )
            print(line, flush=True)
    if profile is not None:
        profile.dump_stats(args.profile_drain)
        print(f"drain profile (the gateway's loop thread) written to {args.profile_drain}")
    report(lats, drains, args.rate)


if __name__ == "__main__":
    asyncio.run(main())
