"""OPC UA value change -> committed in SQLite: the gateway's OPC UA source vs. a naive client.

    python bench/opcua.py                  # defaults: 3 runs, 10/100/1000 changes/s, 50 nodes
    python bench/opcua.py --runs 3 --rates 10,100,1000 --seconds 5 --nodes 50 --cpu-seconds 15
    python bench/opcua.py --profile /tmp/opcua.prof   # + one cProfiled gateway phase (not timed)

The OPC UA server is a small asyncua server of this file's own (``--child server``), started as a
SEPARATE process on 127.0.0.1 (free port) and driven over a pipe (one JSON line per command and
reply), so the gateway process (this one) is measured alone. It holds ``--nodes`` UInt32 counter
variables ``ns=2;s=Bench.Counter000`` ... and changes them itself: a write is
``Server.write_attribute_value`` on the server's loop, exactly as the machine simulator does it.
Every run starts a fresh gateway per phase: a generated TOML through ``edge.config.load_config``,
``edge.app.open_engine`` + ``run_gateway`` (engine, SQLite WAL, ``synchronous = full``, the shipped
engine defaults, the ``[[sources.opcua]]`` source built by the registry, i.e. ``OpcUaLink``), one
operation dispatched and started so every counter delta is counted as good parts (it has no
standard cycle time, so the tick opens no "no count" stops between changes; the plausibility limit
is ``max_rate_per_s = 100000`` on every counter, far above any rate here).

Clock: every timestamp is ``time.monotonic_ns()``, i.e. CLOCK_MONOTONIC, one system-wide clock on
Linux, so the server process's write times and this process's commit times can be subtracted.

(a) Latency at 10, 100 and 1,000 changes/s (``--rates``) for ``--seconds`` each. The server adds 1
to ``Counter000`` at absolute deadlines ``t0 + i/rate`` (no drift) and records
``monotonic_ns()`` just before each write. The gateway subscribes to that one node with
``publishing_interval_ms = --publishing-ms`` (default 0: publish as soon as a change is queued).
The source's ``subscribe_data_change`` call takes asyncua's runtime defaults: queue size 0 (the
server's default) and a requested sampling interval of 50 ms (asyncua 2.1's implementation default;
its type overloads say 0). This asyncua server reports on every write whatever the sampling
interval and revises queue size 0 to 10,000, so here no change is coalesced; a PLC that samples at
50 ms with a queue of 1 would coalesce changes faster than 20/s, which the absolute counter still
counts exactly and the "notifications" column would show. "Durable" is taken
from the engine's commit hook (``Engine.add_commit_hook``): it runs on the loop after each
successful ``Store.commit`` (fsync done, WAL, synchronous=FULL) and before the next batch is
applied (the writer loop is sequential), so ``wc.counters["c000"].last_value`` at that moment is
the newest counter value that is on disk. A write of value v is durable at the first commit hook
whose committed value is >= v; its latency is that time minus the server's write time. As the
counter is absolute, a value that was never notified by itself (coalesced into a later one) still
has its part counted and becomes durable with the later value: its latency is measured from its
OWN write, so coalescing shows up as latency, never as a part lost. The table reports both the
notifications that reached the engine (CounterReadings handed to ``Engine.submit_many``, seen by
a thin wrapper around it) and parts counted (the operation's good count, after - before) next to
parts made (writes). "lost" is a value never durable within 15 s after the last write.
The baseline, in the same run and alternating with the gateway (first one, then the other,
swapped every run), is a naive asyncua client in this process: the same subscription call with
the same publishing interval, same server, same node, same rate, whose callback only records
``monotonic_ns()`` (no storage); its latency is write -> first callback with a value >= v.
"CPU %" is this process's CPU time (``resource.getrusage``, all threads) over the writes, divided by
their wall time. The breakdown table splits the gateway's latency into server write ->
``submit_many`` (OPC UA transport, asyncua client, the source's pump, which hands a batch over
only once the previous one is durable) and ``submit_many`` -> durable (engine, SQLite commit), and
shows commits and outbox rows per second (the engine adds a historian message to each commit
that changed a count) and the server's pacing error (write time - deadline).

(b) CPU with ``--nodes`` (50) subscribed counters that all change every 1 s, publishing interval
1000 ms: 50 ``[[counting.sources]]`` absolute counters (the first authoritative for good, the
other 49 ``authoritative = false`` cross-checks, which are journaled the same way) and 50
``[[sources.opcua.counters]]``. The naive client is another process of this file
(``--child naive``) subscribed to the same 50 nodes with the same subscription parameters, at the
same time (the load is a few percent of one core, so they do not crowd each other). After a
warm-up each process's CPU time (user + system, every thread; ``resource.getrusage``) over the
same ``--cpu-seconds`` window is divided by the wall time; the server's CPU over that window
(``/proc/<pid>/stat``) is printed for context. Parts counted == parts made is checked here too.

Every child process exits when its pipe closes and is terminated in ``finally`` otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import json
import logging
import os
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from asyncua import ua
from asyncua.client.client import Client

from edge.app import open_engine, run_gateway
from edge.config import GatewayConfig, load_config
from edge.domain.inputs import Action, CounterReading, DispatchList, Input, Transition
from edge.domain.model import OperationKey, OperationSpec
from edge.engine import Engine
from edge.logging import configure_logging
from simulators.opcua_machine import free_port

NAMESPACE_URI = "urn:edge-gateway:bench:opcua"
# No standard cycle time: the engine does only counting (no no-count stops opened by the tick).
OP = OperationSpec("4711", "0010", "FG-BENCH", Decimal(10**9), std_cycle_s=0.0)
KEY = OperationKey("4711", "0010")
MAX_RATE_PER_S = 100_000.0  # plausibility: far above any rate here, so nothing is refused
PIPE_LIMIT = 64 * 1024 * 1024  # one reply line carries every write time of a phase
DRAIN_TIMEOUT_S = 15.0

CONFIG = """
[gateway]
edge_id = "wc-bench-01"
work_center = "BENCH01"
timezone = "Europe/Berlin"
log_level = "warning"

[store]
path = "{db}"

[engine]
tick_interval_s = 1.0

{counting}
[[sources.opcua]]
name = "bench"
endpoint = "{endpoint}"
publishing_interval_ms = {publishing_ms}
timeout_s = 5
watchdog_s = 5
reconnect_min_s = 0.2
reconnect_max_s = 1
{counters}"""


def counter_name(i: int) -> str:
    return f"c{i:03d}"


def gateway_config(
    workdir: Path, endpoint: str, nodes: list[str], publishing_ms: float
) -> GatewayConfig:
    counting = "".join(
        f'[[counting.sources]]\nname = "{counter_name(i)}"\nkind = "good"\n'
        f"authoritative = {'true' if i == 0 else 'false'}\nmax_rate_per_s = {MAX_RATE_PER_S}\n\n"
        for i in range(len(nodes))
    )
    counters = "".join(
        f'\n[[sources.opcua.counters]]\ncounter = "{counter_name(i)}"\nnode = "{node}"\n'
        for i, node in enumerate(nodes)
    )
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "edge.toml"
    path.write_text(
        CONFIG.format(
            db=workdir / "edge.db",
            counting=counting,
            endpoint=endpoint,
            publishing_ms=float(publishing_ms),
            counters=counters,
        )
    )
    return load_config(path, env={})


def cpu_s() -> float:
    """CPU seconds (user + system, all threads) of this process so far."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def pct(xs: list[float], q: float) -> float:
    """Nearest-rank percentile; q = 1.0 is the maximum."""
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def covered_at(records: list[tuple[int, int]], first: int, n: int) -> list[int | None]:
    """For each value first .. first+n-1: the time of the first record with a value >= it.

    ``records`` are (monotonic_ns, value) in time order, the values never decreasing.
    """
    out: list[int | None] = [None] * n
    j = 0
    for t, v in records:
        while j < n and first + j <= v:
            out[j] = t
            j += 1
        if j == n:
            break
    return out


# ---------------------------------------------------------------------- child processes


class Child:
    """A helper process of this file (``--child server|naive``), one JSON line per message."""

    def __init__(self, role: str, *args: str) -> None:
        self.role = role
        self.args = args
        self.proc: asyncio.subprocess.Process | None = None
        self.hello: dict[str, Any] = {}

    async def __aenter__(self) -> Child:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(Path(__file__).resolve()),
            "--child",
            self.role,
            *self.args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=PIPE_LIMIT,
        )
        try:
            self.hello = await self._read(60)
        except BaseException:
            await self.aclose()
            raise
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def request(self, cmd: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
        assert self.proc is not None
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd).encode() + b"\n")
        await self.proc.stdin.drain()
        return await self._read(timeout)

    async def _read(self, timeout: float) -> dict[str, Any]:
        assert self.proc is not None
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        if not line:
            rc = await asyncio.wait_for(self.proc.wait(), 5)
            raise RuntimeError(f"the {self.role} process exited (rc={rc})")
        msg: dict[str, Any] = json.loads(line)
        if "error" in msg:
            raise RuntimeError(f"{self.role} process: {msg['error']}")
        return msg

    def cpu_s(self) -> float:
        """CPU seconds of the child so far (utime + stime from /proc/<pid>/stat)."""
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    async def aclose(self) -> None:
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        if proc.stdin is not None:
            with contextlib.suppress(Exception):
                proc.stdin.close()  # the child exits on EOF
        try:
            await asyncio.wait_for(proc.wait(), 5)
        except TimeoutError:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 3)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def _child_main(role: str, nodes: int) -> None:
    """A child's loop: commands from stdin, replies on stdout, exit at EOF."""
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("asyncua").setLevel(logging.ERROR)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=PIPE_LIMIT)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    def reply(msg: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(msg) + "\n")
        sys.stdout.flush()

    async with contextlib.AsyncExitStack() as stack:
        try:
            handler: Any = (
                await stack.enter_async_context(BenchServer(nodes))
                if role == "server"
                else NaiveCpuClient(stack)
            )
            reply(handler.hello())
        except Exception as exc:
            reply({"error": repr(exc)})
            return
        while line := await reader.readline():
            cmd = json.loads(line)
            try:
                reply(await getattr(handler, "cmd_" + cmd.pop("cmd"))(**cmd))
            except Exception as exc:
                reply({"error": repr(exc)})


# ---------------------------------------------------------------------- the server (child)


class BenchServer:
    """An asyncua server with ``nodes`` UInt32 counters, changed on command at a given pace."""

    def __init__(self, nodes: int) -> None:
        self.n = nodes
        self.port = free_port()
        self.values = [0] * nodes
        self.node_ids: list[ua.NodeId] = []
        self.server: Any = None

    async def __aenter__(self) -> BenchServer:
        from asyncua.server.server import Server

        server = Server()
        await server.init()
        server.set_endpoint(f"opc.tcp://127.0.0.1:{self.port}")
        server.set_server_name("edge-gateway OPC UA benchmark server")
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        idx = await server.register_namespace(NAMESPACE_URI)
        folder = await server.nodes.objects.add_folder(
            ua.NodeId(ua.String("Bench"), ua.Int16(idx)), ua.QualifiedName("Bench", idx)
        )
        for i in range(self.n):
            var = await folder.add_variable(
                ua.NodeId(ua.String(f"Bench.Counter{i:03d}"), ua.Int16(idx)),
                ua.QualifiedName(f"Counter{i:03d}", idx),
                0,
                varianttype=ua.VariantType.UInt32,
            )
            self.node_ids.append(var.nodeid)
        await server.start()
        self.server = server
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.server.stop()

    def hello(self) -> dict[str, Any]:
        return {
            "endpoint": f"opc.tcp://127.0.0.1:{self.port}",
            "nodes": [n.to_string() for n in self.node_ids],
        }

    async def _write(self, i: int) -> None:
        self.values[i] += 1
        now = ua.DateTime.now(UTC)
        dv = ua.DataValue(
            ua.Variant(self.values[i], ua.VariantType.UInt32),
            SourceTimestamp=now,
            ServerTimestamp=now,
        )
        await self.server.write_attribute_value(self.node_ids[i], dv)

    async def cmd_values(self) -> dict[str, Any]:
        return {"values": self.values}

    async def cmd_changes(self, node: int, rate: float, seconds: float) -> dict[str, Any]:
        """``rate * seconds`` writes of +1 to one node at absolute deadlines."""
        n = max(1, round(rate * seconds))
        period_ns = 1e9 / rate
        first = self.values[node] + 1
        t_ns: list[int] = []
        late_ns: list[int] = []
        t0 = time.monotonic_ns() + 20_000_000
        for i in range(n):
            deadline = t0 + int(i * period_ns)
            delay = deadline - time.monotonic_ns()
            if delay > 0:
                await asyncio.sleep(delay / 1e9)
            else:
                await asyncio.sleep(0)  # let the server answer publish requests even when behind
            t = time.monotonic_ns()
            await self._write(node)
            t_ns.append(t)
            late_ns.append(t - deadline)
        late_ms = [x / 1e6 for x in late_ns]
        return {"first": first, "t_ns": t_ns, "late_p99_ms": pct(late_ms, 0.99)}

    async def cmd_tick(self, period: float, seconds: float) -> dict[str, Any]:
        """Every ``period`` s, +1 on every node (at absolute deadlines)."""
        ticks = max(1, round(seconds / period))
        t0 = time.monotonic()
        for k in range(ticks):
            delay = t0 + k * period - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            for i in range(self.n):
                await self._write(i)
        return {"ticks": ticks, "values": self.values}


# ---------------------------------------------------------------------- the naive client


class NaiveHandler:
    """The baseline's whole work: note the receive time and the value, nothing else."""

    def __init__(self) -> None:
        self.records: list[tuple[int, Any, Any]] = []  # (monotonic_ns, node, value)

    def datachange_notification(self, node: Any, value: Any, data: Any) -> None:
        self.records.append((time.monotonic_ns(), node, value))


@contextlib.asynccontextmanager
async def naive_client(
    endpoint: str, node_ids: list[str], publishing_ms: float
) -> AsyncIterator[NaiveHandler]:
    """Connect and subscribe as the gateway's source does (same call, same defaults)."""
    client = Client(endpoint, timeout=5)
    async with client:
        handler = NaiveHandler()
        sub = await client.create_subscription(publishing_ms, handler)
        nodes = [client.get_node(n) for n in node_ids]
        await sub.subscribe_data_change(nodes)
        await wait_until(lambda: len(handler.records) >= len(nodes), 10, "initial values")
        yield handler


class NaiveCpuClient:
    """``--child naive``: the naive client in its own process, for the CPU comparison."""

    def __init__(self, stack: contextlib.AsyncExitStack) -> None:
        self.stack = stack
        self.handler: NaiveHandler | None = None
        self.nodes: list[str] = []
        self.mark_cpu = cpu_s()
        self.mark_wall = time.monotonic()
        self.mark_n = 0

    def hello(self) -> dict[str, Any]:
        return {"pid": os.getpid()}

    async def cmd_subscribe(
        self, endpoint: str, nodes: list[str], publishing_ms: float
    ) -> dict[str, Any]:
        self.nodes = nodes
        self.handler = await self.stack.enter_async_context(
            naive_client(endpoint, nodes, publishing_ms)
        )
        return {"subscribed": len(nodes)}

    async def cmd_mark(self) -> dict[str, Any]:
        """CPU, wall time and notifications since the previous mark."""
        assert self.handler is not None
        c, w, n = cpu_s(), time.monotonic(), len(self.handler.records)
        out = {
            "cpu_s": c - self.mark_cpu,
            "wall_s": w - self.mark_wall,
            "notifications": n - self.mark_n,
        }
        self.mark_cpu, self.mark_wall, self.mark_n = c, w, n
        return out

    async def cmd_values(self) -> dict[str, Any]:
        assert self.handler is not None
        last: dict[Any, Any] = {}
        for _, node, v in self.handler.records:
            last[node] = v
        by_id = {node.nodeid.to_string(): v for node, v in last.items()}
        return {"values": [by_id.get(n) for n in self.nodes]}


# ---------------------------------------------------------------------- the gateway


@dataclass
class Gateway:
    engine: Engine
    commits: list[tuple[int, int]] = field(default_factory=list)  # (ns, committed c000 value)
    handed: list[tuple[int, int]] = field(default_factory=list)  # (ns, c000 value) per reading
    readings: dict[str, int] = field(default_factory=dict)  # counter -> readings handed over
    outbox_rows: int = 0  # added by the commits (the per-commit historian message)

    def __post_init__(self) -> None:
        engine = self.engine
        engine.add_commit_hook(self._committed)
        submit_many = engine.submit_many

        async def counting_submit_many(inputs: list[Input]) -> Any:
            now = time.monotonic_ns()
            for inp in inputs:
                if isinstance(inp, CounterReading):
                    self.readings[inp.source] = self.readings.get(inp.source, 0) + 1
                    if inp.source == "c000":
                        self.handed.append((now, inp.value))
            return await submit_many(inputs)

        engine.submit_many = counting_submit_many  # type: ignore[method-assign]

    def _committed(self, rows: list[Any]) -> None:
        self.outbox_rows += len(rows)
        track = self.engine.wc.counters.get("c000")
        if track is not None and track.last_value is not None:
            self.commits.append((time.monotonic_ns(), track.last_value))

    def committed(self, counter: str = "c000") -> int | None:
        track = self.engine.wc.counters.get(counter)
        return None if track is None else track.last_value

    def good(self) -> int:
        return int(self.engine.wc.operations[KEY].counted.good)


@contextlib.asynccontextmanager
async def gateway(cfg: GatewayConfig) -> AsyncIterator[Gateway]:
    """The gateway as ``edge run`` composes it, an operation running, every node subscribed."""
    engine = await open_engine(cfg)
    gw = Gateway(engine)
    stop = asyncio.Event()
    task = asyncio.create_task(run_gateway(cfg, stop=stop, engine=engine))
    try:
        await engine.submit(DispatchList(1, (OP,), engine.now()))
        out = await engine.submit(
            Transition(Action.START_PRODUCTION, str(KEY), "operator:1", engine.now())
        )
        assert out.accepted, out
        names = [c.counter for c in cfg.sources.opcua[0].counters]
        # The baseline read, then the subscription's initial notification of every node: after
        # that every change is a notification of the live subscription.
        await wait_until(
            lambda: all(gw.readings.get(n, 0) >= 2 for n in names), 20, "the OPC UA source"
        )
        yield gw
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def wait_until(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


# ---------------------------------------------------------------------- (a) latency


@dataclass
class Latency:
    """One client at one rate in one run."""

    made: int
    notifications: int
    counted: int | None  # the gateway's good delta; None for the naive client
    lost: int
    latencies_ms: list[float]
    to_engine_ms: list[float] = field(default_factory=list)  # gateway: write -> submit_many
    in_engine_ms: list[float] = field(default_factory=list)  # gateway: submit_many -> durable
    commits: int = 0
    outbox_rows: int = 0  # gateway: rows its commits added to the outbox
    cpu_pct: float = 0.0  # this process's CPU over the writes (one core = 100)
    late_p99_ms: float = 0.0  # the server's pacing: write time - deadline

    def q(self, q: float) -> float:
        return pct(self.latencies_ms, q)


def _latencies(t_ns: list[int], at: list[int | None]) -> list[float]:
    return [(a - t) / 1e6 for t, a in zip(t_ns, at, strict=True) if a is not None]


async def changes(server: Child, rate: float, seconds: float) -> tuple[dict[str, Any], float]:
    """Have the server make its paced writes on node 0; also this process's CPU % meanwhile."""
    c0, w0 = cpu_s(), time.monotonic()
    w = await server.request(
        {"cmd": "changes", "node": 0, "rate": rate, "seconds": seconds}, seconds + 60
    )
    return w, 100 * (cpu_s() - c0) / (time.monotonic() - w0)


async def latency_gateway(
    server: Child,
    workdir: Path,
    rate: float,
    seconds: float,
    publishing_ms: float,
    profile: cProfile.Profile | None = None,
) -> Latency:
    cfg = gateway_config(
        workdir, server.hello["endpoint"], server.hello["nodes"][:1], publishing_ms
    )
    async with gateway(cfg) as gw:
        good0 = gw.good()
        commits0 = gw.engine.stats.commits
        gw.commits.clear()
        gw.handed.clear()
        if profile is not None:
            profile.enable()
        rows0 = gw.outbox_rows
        try:
            w, cpu_pct = await changes(server, rate, seconds)
            first, t_ns = w["first"], w["t_ns"]
            last = first + len(t_ns) - 1
            with contextlib.suppress(TimeoutError):
                await wait_until(
                    lambda: (gw.committed() or 0) >= last, DRAIN_TIMEOUT_S, "the last change"
                )
        finally:
            if profile is not None:
                profile.disable()
        await asyncio.sleep(0.05)
        durable = covered_at(gw.commits, first, len(t_ns))
        handed = covered_at(gw.handed, first, len(t_ns))
        return Latency(
            made=len(t_ns),
            notifications=sum(1 for _, v in gw.handed if first <= v <= last),
            counted=gw.good() - good0,
            lost=sum(1 for a in durable if a is None),
            latencies_ms=_latencies(t_ns, durable),
            to_engine_ms=_latencies(t_ns, handed),
            in_engine_ms=[
                (d - h) / 1e6
                for h, d in zip(handed, durable, strict=True)
                if h is not None and d is not None
            ],
            commits=gw.engine.stats.commits - commits0,
            outbox_rows=gw.outbox_rows - rows0,
            cpu_pct=cpu_pct,
            late_p99_ms=w["late_p99_ms"],
        )


async def latency_naive(
    server: Child, rate: float, seconds: float, publishing_ms: float
) -> Latency:
    node = server.hello["nodes"][0]
    async with naive_client(server.hello["endpoint"], [node], publishing_ms) as handler:
        start = len(handler.records)
        w, cpu_pct = await changes(server, rate, seconds)
        first, t_ns = w["first"], w["t_ns"]
        last = first + len(t_ns) - 1
        with contextlib.suppress(TimeoutError):
            await wait_until(
                lambda: handler.records[-1][2] >= last, DRAIN_TIMEOUT_S, "the last change"
            )
        records = [(t, v) for t, _, v in handler.records[start:]]
    seen = covered_at(records, first, len(t_ns))
    return Latency(
        made=len(t_ns),
        notifications=sum(1 for _, v in records if first <= v <= last),
        counted=None,
        lost=sum(1 for a in seen if a is None),
        latencies_ms=_latencies(t_ns, seen),
        cpu_pct=cpu_pct,
        late_p99_ms=w["late_p99_ms"],
    )


# ---------------------------------------------------------------------- (b) CPU


@dataclass
class Cpu:
    nodes: int
    window_s: float
    gateway_pct: float
    naive_pct: float
    server_pct: float
    gateway_readings: int  # CounterReadings handed to the engine in the window
    naive_notifications: int
    made: int  # parts made on the authoritative counter over the whole phase
    counted: int
    values_match: bool  # every counter's committed value == the server's (gateway and naive)
    commits: int


async def cpu_run(
    server: Child, workdir: Path, nodes: int, seconds: float, warmup_s: float = 1.5
) -> Cpu:
    endpoint, node_ids = server.hello["endpoint"], server.hello["nodes"][:nodes]
    cfg = gateway_config(workdir, endpoint, node_ids, 1000.0)
    async with Child("naive") as naive, gateway(cfg) as gw:
        await naive.request(
            {"cmd": "subscribe", "endpoint": endpoint, "nodes": node_ids, "publishing_ms": 1000.0}
        )
        good0 = gw.good()
        ticks = round(warmup_s + seconds + 1)
        tick = asyncio.create_task(
            server.request({"cmd": "tick", "period": 1.0, "seconds": ticks}, ticks + 60)
        )
        try:
            await asyncio.sleep(warmup_s)
            readings0 = sum(gw.readings.values())
            commits0 = gw.engine.stats.commits
            await naive.request({"cmd": "mark"})
            c0, s0, w0 = cpu_s(), server.cpu_s(), time.monotonic()
            await asyncio.sleep(seconds)
            c1, s1, w1 = cpu_s(), server.cpu_s(), time.monotonic()
            nv = await naive.request({"cmd": "mark"})
            readings = sum(gw.readings.values()) - readings0
            commits = gw.engine.stats.commits - commits0
            done = await tick
        finally:
            if not tick.done():
                tick.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await tick
        final = done["values"][:nodes]
        names = [counter_name(i) for i in range(nodes)]
        with contextlib.suppress(TimeoutError):
            await wait_until(
                lambda: [gw.committed(n) for n in names] == final, DRAIN_TIMEOUT_S, "the last tick"
            )
        committed = [gw.committed(n) for n in names]
        with contextlib.suppress(TimeoutError):
            for _ in range(int(DRAIN_TIMEOUT_S / 0.1)):
                if (await naive.request({"cmd": "values"}))["values"] == final:
                    break
                await asyncio.sleep(0.1)
        naive_values = (await naive.request({"cmd": "values"}))["values"]
        wall = w1 - w0
        return Cpu(
            nodes=nodes,
            window_s=wall,
            gateway_pct=100 * (c1 - c0) / wall,
            naive_pct=100 * nv["cpu_s"] / nv["wall_s"],
            server_pct=100 * (s1 - s0) / wall,
            gateway_readings=readings,
            naive_notifications=nv["notifications"],
            made=done["ticks"],
            counted=gw.good() - good0,
            values_match=committed == final and naive_values == final,
            commits=commits,
        )


# ---------------------------------------------------------------------- running it


def med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def ratio(a: float, b: float) -> str:
    return f"{a / b:5.1f}x" if b > 0 else "    -"


def table(header: list[tuple[str, int]], rows: list[list[str]], left: int = 2) -> None:
    """A markdown table; each column (title, width); numbers right-aligned after ``left``."""
    print("| " + " | ".join(f"{t:<{w}}" for t, w in header) + " |")
    print("|" + "|".join("-" * (w + 2) for _, w in header) + "|")
    for row in rows:
        cells = [
            f"{c:<{w}}" if i < left else f"{c:>{w}}"
            for i, (c, (_, w)) in enumerate(zip(row, header, strict=True))
        ]
        print("| " + " | ".join(cells) + " |")


def report(
    lat: dict[tuple[float, str], list[Latency]],
    cpus: list[Cpu],
    rates: list[float],
    seconds: float,
    publishing_ms: float,
) -> None:
    runs = max((len(v) for v in lat.values()), default=0)
    print()
    if lat:
        print(
            f"(a) latency: OPC UA server write -> durable in SQLite (gateway) / -> callback"
            f" (naive), {seconds:g} s per rate, publishing interval {publishing_ms:g} ms,"
            f" medians of {runs} runs (counts: sums)"
        )
        rows: list[list[str]] = []
        for rate in rates:
            g, n = lat[(rate, "gateway")], lat[(rate, "naive")]
            gq = [med([r.q(q) for r in g]) for q in (0.5, 0.99, 1.0)]
            nq = [med([r.q(q) for r in n]) for q in (0.5, 0.99, 1.0)]
            gc, nc = med([r.cpu_pct for r in g]), med([r.cpu_pct for r in n])
            for name, rs, qs, c in (
                ("gateway (durable)", g, gq, gc),
                ("naive asyncua (callback)", n, nq, nc),
            ):
                counted = sum(r.counted or 0 for r in rs) if rs[0].counted is not None else "-"
                rows.append(
                    [
                        f"{rate:g}",
                        name,
                        *(f"{x:.2f}" for x in qs),
                        f"{c:.1f}",
                        str(sum(r.made for r in rs)),
                        str(sum(r.notifications for r in rs)),
                        str(counted),
                        str(sum(r.lost for r in rs)),
                    ]
                )
            rows.append(
                [
                    f"{rate:g}",
                    "ratio gateway / naive",
                    *(ratio(a, b).strip() for a, b in zip(gq, nq, strict=True)),
                    ratio(gc, nc).strip(),
                    "",
                    "",
                    "",
                    "",
                ]
            )
        table(
            [
                ("changes/s", 9),
                ("client", 24),
                ("p50 ms", 6),
                ("p99 ms", 6),
                ("max ms", 7),
                ("CPU %", 5),
                ("made", 5),
                ("notifications", 13),
                ("counted", 7),
                ("lost", 4),
            ],
            rows,
        )
        ok = all(
            r.counted == r.made and r.lost == 0
            for rs in lat.values()
            for r in rs
            if r.counted is not None
        )
        print(f"parts counted == parts made, nothing lost: {'yes' if ok else 'NO'}")
        print()
        print("gateway breakdown (medians of the runs' p50 / p99):")
        rows = []
        for rate in rates:
            g = lat[(rate, "gateway")]
            t50, t99 = (med([pct(r.to_engine_ms, q) for r in g]) for q in (0.5, 0.99))
            e50, e99 = (med([pct(r.in_engine_ms, q) for r in g]) for q in (0.5, 0.99))
            late = med([r.late_p99_ms for r in g + lat[(rate, "naive")]])
            rows.append(
                [
                    f"{rate:g}",
                    f"{t50:.2f} / {t99:.2f}",
                    f"{e50:.2f} / {e99:.2f}",
                    f"{med([r.commits / seconds for r in g]):.0f}",
                    f"{med([r.made / r.commits for r in g if r.commits]):.1f}",
                    f"{med([r.outbox_rows / seconds for r in g]):.0f}",
                    f"{late:.2f}",
                ]
            )
        table(
            [
                ("changes/s", 9),
                ("write -> submit_many ms", 23),
                ("submit_many -> durable ms", 25),
                ("commits/s", 9),
                ("changes/commit", 14),
                ("outbox rows/s", 13),
                ("server late p99 ms", 18),
            ],
            rows,
            left=1,
        )
        print("(server late = the server's write time - its deadline, the pacing's own error)")
        print()
    if cpus:
        one = cpus[0]
        gpct, npct, spct = (
            med([getattr(x, a) for x in cpus]) for a in ("gateway_pct", "naive_pct", "server_pct")
        )
        print(
            f"(b) CPU: {one.nodes} subscribed counters, each changing every 1 s, publishing 1000 ms"
            f", {one.window_s:.0f} s windows, medians of {len(cpus)} runs (one core = 100 %)"
        )
        table(
            [("process", 30), ("CPU %", 6), ("readings in window", 18), ("commits", 7)],
            [
                [
                    "gateway (source+engine+SQLite)",
                    f"{gpct:.2f}",
                    f"{med([x.gateway_readings for x in cpus]):.0f}",
                    f"{med([x.commits for x in cpus]):.0f}",
                ],
                [
                    "naive asyncua client",
                    f"{npct:.2f}",
                    f"{med([x.naive_notifications for x in cpus]):.0f}",
                    "-",
                ],
                ["ratio gateway / naive", ratio(gpct, npct).strip(), "", ""],
                ["the OPC UA server (context)", f"{spct:.2f}", "", ""],
            ],
            left=1,
        )
        ok = all(x.counted == x.made and x.values_match for x in cpus)
        print(
            f"parts counted == parts made ({sum(x.counted for x in cpus)} == "
            f"{sum(x.made for x in cpus)}), every counter's last value == the server's: "
            f"{'yes' if ok else 'NO'}"
        )


def run_line(i: int, rate: float, g: Latency, n: Latency) -> str:
    return (
        f"run {i + 1} {rate:6g}/s: gateway p50/p99/max {g.q(0.5):.2f}/{g.q(0.99):.2f}/"
        f"{g.q(1.0):.2f} ms (notified {g.notifications}, counted {g.counted} of {g.made},"
        f" lost {g.lost}), naive {n.q(0.5):.2f}/{n.q(0.99):.2f}/{n.q(1.0):.2f} ms"
        f" (notified {n.notifications} of {n.made}, lost {n.lost})"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rates", default="10,100,1000", help="changes/s in (a), comma-separated")
    parser.add_argument("--seconds", type=float, default=5.0, help="per rate and client in (a)")
    parser.add_argument("--nodes", type=int, default=50, help="subscribed counters in (b)")
    parser.add_argument("--cpu-seconds", type=float, default=15.0, help="CPU window in (b)")
    parser.add_argument("--publishing-ms", type=float, default=0.0, help="publishing interval, (a)")
    parser.add_argument(
        "--profile",
        type=Path,
        help="after the runs, one more gateway phase at the top rate, "
        "cProfiled (loop thread), not in the tables",
    )
    parser.add_argument("--child", choices=("server", "naive"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        await _child_main(args.child, args.nodes)
        return
    configure_logging("error", json=True)
    rates = [float(r) for r in args.rates.split(",") if r.strip()]
    lat: dict[tuple[float, str], list[Latency]] = {}
    cpus: list[Cpu] = []
    with tempfile.TemporaryDirectory(prefix="bench-opcua-") as tmp:
        async with Child("server", "--nodes", str(max(1, args.nodes))) as server:
            for i in range(args.runs):
                for rate in rates:
                    work = Path(tmp) / f"run{i}-{rate:g}"
                    for who in ("gateway", "naive") if i % 2 == 0 else ("naive", "gateway"):
                        if who == "gateway":
                            r = await latency_gateway(
                                server, work, rate, args.seconds, args.publishing_ms
                            )
                        else:
                            r = await latency_naive(server, rate, args.seconds, args.publishing_ms)
                        lat.setdefault((rate, who), []).append(r)
                    g, n = lat[(rate, "gateway")][-1], lat[(rate, "naive")][-1]
                    print(run_line(i, rate, g, n), flush=True)
                if args.nodes > 0 and args.cpu_seconds > 0:
                    work = Path(tmp) / f"run{i}-cpu"
                    c = await cpu_run(server, work, args.nodes, args.cpu_seconds)
                    cpus.append(c)
                    print(
                        f"run {i + 1} cpu: gateway {c.gateway_pct:.2f} %, naive"
                        f" {c.naive_pct:.2f} %, server {c.server_pct:.2f} % (counted {c.counted}"
                        f" of {c.made}, values match: {c.values_match})",
                        flush=True,
                    )
            if args.profile:
                profile = cProfile.Profile()
                work = Path(tmp) / "profile"
                top = max(rates)
                await latency_gateway(
                    server, work, top, args.seconds, args.publishing_ms, profile=profile
                )
                profile.dump_stats(args.profile)
                print(f"cProfile of the gateway's loop thread at {top:g}/s: {args.profile}")
    report(lat, cpus, rates, args.seconds, args.publishing_ms)


if __name__ == "__main__":
    asyncio.run(main())
