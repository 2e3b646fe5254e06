"""The chain (tests/reliability/chain.py) under network and database faults (issue 20):

1. A TCP proxy (tests/reliability/net_proxy.py) between the gateway and mosquitto: the
   broker's answers delayed (PUBACKs and the relay's results reach the gateway late), the
   line stalled (open, nothing through for seconds), the connections dropped (FIN or RST),
   a reconnect caught by a stall; and a line that goes dead for good (half-open), which the
   gateway must notice by its MQTT keepalive. The gateway must reconnect by itself.
2. PostgreSQL, the relays' shared ledger, stopped (``pg_ctl -m fast``: every session cut)
   while confirmations are being posted, and started again after a few seconds. The relays
   must keep running and take up their work again (a long version also crashes it,
   ``-m immediate``).

Under both nothing may be lost or posted twice (the three ledgers judged by ``judge``), every
daemon keeps running and stops cleanly on SIGTERM. The short tests share one chain (its own
PostgreSQL, so that stopping it touches no other test); the long ones (``slow``) run many
more faults on a chain of their own.
"""

from __future__ import annotations

import contextlib
import random
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.pg import PostgresCluster, PostgresNotFound
from tests.relay.harness import pg_url
from tests.reliability.chain import (
    FINAL_VERDICTS,
    Chain,
    ChainFailed,
    Op,
    Schedule,
    check,
    http,
    until,
)
from tests.reliability.net_proxy import NetProxy

pytestmark = pytest.mark.timeout(60)  # the short ones take 10-20 s
KEEPALIVE_S = 5  # the gateway's MQTT keepalive (its least): a dead line noticed in 5-10 s


@dataclass
class Net:
    """A chain whose gateway reaches the broker through ``proxy``; the relays' ledger on
    ``pg``, a PostgreSQL server of its own."""

    chain: Chain
    proxy: NetProxy
    pg: PostgresCluster


def own_cluster() -> PostgresCluster:
    try:
        return PostgresCluster()
    except PostgresNotFound as exc:  # pragma: no cover - scripts/test installs PostgreSQL
        pytest.skip(str(exc))


@contextlib.contextmanager
def net_chain(workdir: Path, name: str, keepalive_s: int = KEEPALIVE_S) -> Iterator[Net]:
    """Start a PostgreSQL, the proxy (its target: the chain's broker, whose port stays the
    same across restarts) and the chain, the gateway pointed at the proxy."""
    with own_cluster() as pg:  # started
        chain = Chain(
            workdir,
            Schedule(0, ()),
            ledger_url=pg_url(pg.create_database(name)),
            relay_timeout_s=1.0,
            result_timeout_s=4.0,
            gateway_keepalive_s=keepalive_s,
        )
        with NetProxy(chain.broker.host, chain.broker.port) as proxy:
            chain.gateway_mqtt_port = proxy.port
            with chain:
                yield Net(chain, proxy, pg)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    with net_chain(tmp_path_factory.mktemp("chain-net"), "chain_net") as net:
        yield net
        # The daemons kept running through every fault, and stop cleanly on SIGTERM.
        assert net.chain.stop_daemons() == {"gateway": 0, "relay-a": 0, "relay-b": 0}


def run(chain: Chain, schedule: Schedule, fault: Any, **settle: Any) -> None:
    chain.dispatch(schedule)
    chain.produce(fault, schedule)
    chain.settle(schedule=schedule, **settle)


_METRIC = re.compile(r"^([a-z_]+)(\{[^}]*\})? (\S+)$")


def metrics(chain: Chain) -> dict[str, float]:
    """The gateway's /metrics: name (with its labels as written) -> value."""
    status, text = http("GET", chain.api + "/metrics", timeout=5)
    if status != 200 or not isinstance(text, str):
        raise ChainFailed(f"/metrics: HTTP {status}")
    out: dict[str, float] = {}
    for line in text.splitlines():
        if m := _METRIC.match(line):
            out[m[1] + (m[2] or "")] = float(m[3])
    return out


def slow_acks(m: dict[str, float], over: str = "0.25") -> float:
    """Publishes whose PUBACK took longer than ``over`` seconds."""
    return (
        m["edge_mqtt_publish_seconds_count"] - m[f'edge_mqtt_publish_seconds_bucket{{le="{over}"}}']
    )


# ----------------------------------------------------------------------- 0. the proxy itself


@contextlib.contextmanager
def echo_server() -> Iterator[int]:
    """A TCP server on a free loopback port that sends back what it gets; its port."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    stop = threading.Event()

    def serve(conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            while data := conn.recv(4096):
                conn.sendall(data)

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            conn.settimeout(None)
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        server.close()


def round_trip(sock: socket.socket, data: bytes) -> float:
    """Send ``data``, read it back; the seconds it took."""
    began = time.monotonic()
    sock.sendall(data)
    got = b""
    while len(got) < len(data):
        chunk = sock.recv(4096)
        assert chunk, f"the line closed after {got!r}"
        got += chunk
    assert got == data
    return time.monotonic() - began


@pytest.mark.timeout(30)
def test_the_proxy_delays_stalls_and_drops_what_it_says() -> None:
    """The faults the chain tests rely on are real: a delay holds the target's answers that
    long, in order; a stall holds both ways and delivers after it, also on a connection made
    during it; a drop closes the line (a reset with ``reset``) and the next connection works."""
    with echo_server() as port, NetProxy("127.0.0.1", port) as proxy:
        sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
        assert round_trip(sock, b"plain") < 0.2
        proxy.delay_down_s = 0.4
        took = round_trip(sock, b"".join(b"%03d" % i for i in range(100)))
        assert 0.4 <= took < 1.2, took
        proxy.delay_down_s = 0.0
        proxy.stall(1.0)
        late = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
        assert 0.9 <= round_trip(sock, b"held") < 1.6
        assert round_trip(late, b"held too") < 1.6  # the stall ended meanwhile
        assert proxy.accepted == 2
        assert proxy.drop(reset=True) == 2
        for s in (sock, late):
            with contextlib.suppress(ConnectionResetError):
                assert s.recv(10) == b""  # closed, by FIN or RST
            s.close()
        again = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
        assert round_trip(again, b"back") < 0.2
        assert proxy.accepted == 3
        again.close()
        until(lambda: proxy.open_links() == 0, 5, "the proxy to let go of a closed line")


# ----------------------------------------------------------------------- 1. gateway <-> broker


@dataclass
class NetFaults:
    """In each operation, while the machine counts and the gateway confirms:

    1. after 5 parts the broker's direction is delayed by a seeded 0.3-0.8 s (PUBACKs and the
       relay's results come late; the gateway's result timeout is 4 s);
    2. after 20 parts the line stalls for a seeded 1.5-3 s (the delay still on);
    3. once the stall is over, every connection is dropped (RST or FIN, seeded), and the line
       stalls again for 0.5-1.5 s (the gateway's reconnect hangs on it);
    4. once the gateway is connected again (one connection more at the proxy and the gateway
       says so), the delay ends.
    """

    net: Net
    rng: random.Random
    done: list[str] = field(default_factory=list)
    op: str | None = None
    step: int = 0
    until: float = 0.0
    accepted: int = 0
    connects: float = 0.0
    reconnects: list[float] = field(default_factory=list)  # seconds from drop to connected

    def pending(self, op: Op) -> bool:
        return op.ref != self.op or self.step < 4

    def __call__(self, chain: Chain, op: Op, made: int) -> None:
        proxy = self.net.proxy
        if op.ref != self.op:
            self.op, self.step = op.ref, 0
        now = time.monotonic()
        if self.step == 0 and made >= 5:
            proxy.delay_down_s = round(self.rng.uniform(0.3, 0.8), 2)
            self.step = 1
        elif self.step == 1 and made >= 20:
            stall = self.rng.uniform(1.5, 3.0)
            proxy.stall(stall)
            self.step, self.until = 2, now + stall
        elif self.step == 2 and now >= self.until:
            self.accepted = proxy.accepted
            self.connects = metrics(chain)["edge_mqtt_connects_total"]
            reset = self.rng.random() < 0.5
            assert proxy.drop(reset=reset) >= 1, "the gateway had no connection at the proxy"
            proxy.stall(self.rng.uniform(0.5, 1.5))
            self.step, self.until = 3, now
        elif self.step == 3:
            m = metrics(chain)
            if (
                proxy.accepted > self.accepted
                and m["edge_mqtt_connected"] == 1
                and m["edge_mqtt_connects_total"] > self.connects
            ):
                self.reconnects.append(round(now - self.until, 2))
                proxy.delay_down_s = 0.0
                self.done.append(op.ref)
                self.step = 4
            elif now - self.until > 30:
                raise ChainFailed(f"the gateway did not reconnect in 30 s: {chain.gateway_log()}")


def net_faults(net: Net, seed: int, n_ops: int) -> str:
    chain = net.chain
    schedule = Schedule.make(seed, n_ops, (60, 80), (0, 1), first_order=seed * 10)
    fault = NetFaults(net, random.Random(seed))
    before = metrics(chain)
    run(chain, schedule, fault, timeout=120)
    after = metrics(chain)
    assert fault.done == [op.ref for op in schedule.ops]
    # the gateway reconnected by itself after each drop, and is connected now
    assert after["edge_mqtt_connected"] == 1
    assert after["edge_mqtt_connects_total"] - before["edge_mqtt_connects_total"] >= n_ops
    # the delay was real: PUBACKs came later than a quarter of a second
    assert slow_acks(after) > slow_acks(before)
    return f"{check(chain, schedule)}; reconnected after {fault.reconnects} s"


def test_the_line_to_the_broker_delayed_stalled_and_dropped(shared: Net) -> None:
    print(net_faults(shared, seed=808, n_ops=2))


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_the_line_to_the_broker_delayed_stalled_and_dropped_many_times(tmp_path: Path) -> None:
    with net_chain(tmp_path, "chain_net_long") as net:
        print(net_faults(net, seed=8008, n_ops=20))
        assert net.chain.stop_daemons() == {"gateway": 0, "relay-a": 0, "relay-b": 0}


@dataclass
class DeadLine:
    """In each operation, after 10 parts: the line stalls for good (a half-open TCP
    connection: no FIN, no RST, nothing through). The gateway must find out by its keepalive
    (no PINGRESP) and drop the line within ``limit_s``; its reconnect hangs in the stall for
    a second more; then the line comes back and the gateway must connect again."""

    net: Net
    limit_s: float
    done: list[str] = field(default_factory=list)
    noticed: list[float] = field(default_factory=list)  # seconds from stall to disconnected
    op: str | None = None
    step: int = 0
    since: float = 0.0
    connects: float = 0.0

    def pending(self, op: Op) -> bool:
        return op.ref not in self.done

    def __call__(self, chain: Chain, op: Op, made: int) -> None:
        proxy = self.net.proxy
        if op.ref != self.op:
            self.op, self.step = op.ref, 0
        now = time.monotonic()
        if self.step == 0 and made >= 10:
            self.connects = metrics(chain)["edge_mqtt_connects_total"]
            proxy.stall(3600)
            self.step, self.since = 1, now
        elif self.step == 1:
            if metrics(chain)["edge_mqtt_connected"] == 0:
                self.noticed.append(round(now - self.since, 2))
                self.step, self.since = 2, now
            elif now - self.since > self.limit_s:
                proxy.unstall()
                raise ChainFailed(
                    f"the gateway still thinks it is connected {self.limit_s:.0f} s into a dead "
                    f"line (keepalive {chain.gateway_keepalive_s} s)"
                )
        elif self.step == 2 and now - self.since >= 1.0:
            proxy.unstall()
            self.step, self.since = 3, now
        elif self.step == 3 and op.ref not in self.done:
            m = metrics(chain)
            if m["edge_mqtt_connected"] == 1 and m["edge_mqtt_connects_total"] > self.connects:
                self.done.append(op.ref)
            elif now - self.since > 30:
                raise ChainFailed(
                    f"no reconnect 30 s after the line came back: {chain.gateway_log()}"
                )


def dead_line(net: Net, seed: int, n_ops: int) -> str:
    chain = net.chain
    schedule = Schedule.make(seed, n_ops, (40, 60), (0, 1), first_order=seed * 10)
    # paho sends PINGREQ after a keepalive of silence and gives up after one more
    fault = DeadLine(net, limit_s=2 * KEEPALIVE_S + 5)
    run(chain, schedule, fault, timeout=120)
    assert fault.done == [op.ref for op in schedule.ops]
    return f"{check(chain, schedule)}; dead line noticed after {fault.noticed} s"


def test_a_dead_line_to_the_broker_is_noticed_and_left(shared: Net) -> None:
    print(dead_line(shared, seed=818, n_ops=1))


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_a_dead_line_to_the_broker_many_times(tmp_path: Path) -> None:
    with net_chain(tmp_path, "chain_dead_long") as net:
        print(dead_line(net, seed=8018, n_ops=10))
        assert net.chain.stop_daemons() == {"gateway": 0, "relay-a": 0, "relay-b": 0}


# ----------------------------------------------------------------------- 2. the relays' ledger


@dataclass
class LedgerRestarts:
    """In each operation, once a confirmation of it is at the relays and not yet answered
    (SAP answers slowly, 0.3-0.6 s, so that one is in flight), or at the latest after 50
    parts: PostgreSQL stopped with ``pg_ctl -m fast`` (its sessions cut), down a seeded 1-3 s
    while the machine goes on counting, started again."""

    net: Net
    rng: random.Random
    mode: str = "fast"  # pg_ctl stop -m: fast (sessions cut) or immediate (a crash)
    done: list[str] = field(default_factory=list)
    in_flight: list[bool] = field(default_factory=list)  # one was open when it went down

    def pending(self, op: Op) -> bool:
        return op.ref not in self.done

    def __call__(self, chain: Chain, op: Op, made: int) -> None:
        if op.ref in self.done or made < 10:
            return
        open_ = [
            c
            for c in chain.confirmations()
            if c["op"] == op.ref and c["status"] not in FINAL_VERDICTS
        ]
        if not open_ and made < 50:
            return
        self.net.pg.stop(self.mode)
        try:
            time.sleep(self.rng.uniform(1.0, 3.0))
        finally:
            self.net.pg.start()
        self.in_flight.append(bool(open_))
        self.done.append(op.ref)


def ledger_errors(chain: Chain) -> int:
    """How often the relays logged that the ledger was out of reach."""
    return sum(
        (chain.workdir / f"{name}.log").read_text(errors="replace").count("LedgerUnavailable")
        for name in chain.relays
    )


def ledger_restarts(net: Net, seed: int, n_ops: int, mode: str = "fast") -> str:
    chain = net.chain
    assert chain.sap is not None
    schedule = Schedule.make(seed, n_ops, (60, 80), (0, 1), first_order=seed * 10)
    fault = LedgerRestarts(net, random.Random(seed), mode)
    before = ledger_errors(chain)
    chain.sap.set("latency", min_s=0.3, max_s=0.6)
    try:
        run(chain, schedule, fault, timeout=120)
    finally:
        chain.sap.set("latency")
    assert fault.done == [op.ref for op in schedule.ops]
    assert any(fault.in_flight), "no confirmation was open when PostgreSQL went down"
    # the relays felt it (their ledger calls failed) and came through it
    assert ledger_errors(chain) > before
    return f"{check(chain, schedule)}; in flight at the stop: {fault.in_flight}"


def test_postgres_restarted_under_the_relays(shared: Net) -> None:
    print(ledger_restarts(shared, seed=909, n_ops=2))


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_postgres_restarted_under_the_relays_many_times(tmp_path: Path) -> None:
    with net_chain(tmp_path, "chain_pg_long") as net:
        print(ledger_restarts(net, seed=9009, n_ops=20))
        assert net.chain.stop_daemons() == {"gateway": 0, "relay-a": 0, "relay-b": 0}


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_postgres_crashed_under_the_relays_many_times(tmp_path: Path) -> None:
    """As above, the server taken down as a crash (``-m immediate``: no shutdown checkpoint,
    recovery from the WAL at start) - what a power cut of the database host does."""
    with net_chain(tmp_path, "chain_pg_crash_long") as net:
        print(ledger_restarts(net, seed=9109, n_ops=10, mode="immediate"))
        assert net.chain.stop_daemons() == {"gateway": 0, "relay-a": 0, "relay-b": 0}


# ------------------------------------------------------------------- the relays <-> broker


@dataclass
class RelayLine:
    """The line from both relays to the broker, in each operation: after 5 parts the relays'
    direction is delayed 0.3-0.6 s (their results and PUBACKs reach the broker late); after
    15 parts it stalls 1-2 s and then every relay connection is dropped (RST or FIN); once
    both relays are connected again (two connections more at the proxy), the delay ends."""

    proxy: NetProxy
    rng: random.Random
    done: list[str] = field(default_factory=list)
    op: str | None = None
    step: int = 0
    until: float = 0.0
    accepted: int = 0

    def pending(self, op: Op) -> bool:
        return op.ref != self.op or self.step < 4

    def __call__(self, chain: Chain, op: Op, made: int) -> None:
        if op.ref != self.op:
            self.op, self.step = op.ref, 0
        now = time.monotonic()
        if self.step == 0 and made >= 5:
            self.proxy.delay_up_s = round(self.rng.uniform(0.3, 0.6), 2)
            self.step = 1
        elif self.step == 1 and made >= 15:
            stall = self.rng.uniform(1.0, 2.0)
            self.proxy.stall(stall)
            self.step, self.until = 2, now + stall
        elif self.step == 2 and now >= self.until:
            self.accepted = self.proxy.accepted
            assert self.proxy.drop(reset=self.rng.random() < 0.5) >= 2, "a relay was not there"
            self.step, self.until = 3, now
        elif self.step == 3:
            if self.proxy.accepted >= self.accepted + 2:
                self.proxy.delay_up_s = 0.0
                self.done.append(op.ref)
                self.step = 4
            elif now - self.until > 30:
                raise ChainFailed(
                    f"the relays did not reconnect in 30 s: {chain.relay_log('relay-a')}"
                )


def test_the_relays_line_to_the_broker_delayed_stalled_and_dropped(tmp_path: Path) -> None:
    """Both relays reach the broker through a proxy: their results come late, their line
    stalls and is cut while confirmations are in flight; they reconnect by themselves and
    every confirmation is posted once. The gateway's result timeout is its default of 600 s,
    far past the test's: what a relay lost with its clean session comes back because the
    gateway sends what is unanswered again when the relays say they are back."""
    schedule = Schedule.make(818, 2, (50, 70), (0, 0), first_order=8180)
    chain = Chain(tmp_path, schedule, relay_timeout_s=1.0, result_timeout_s=600.0)
    with NetProxy(chain.broker.host, chain.broker.port) as proxy:
        chain.relay_mqtt_port = proxy.port
        with chain:
            fault = RelayLine(proxy, random.Random(818))
            run(chain, schedule, fault, timeout=120)
            assert fault.done == [op.ref for op in schedule.ops]
            print(check(chain, schedule))
            assert chain.stop_daemons() == {"gateway": 0, "relay-a": 0, "relay-b": 0}
