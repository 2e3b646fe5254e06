"""The ERP relay under load: confirmations per second, latency and exactly once, 1, 2, 4 relays.

    python bench/relay.py                       # 1 (SQLite and PostgreSQL), 2, 4 relays, 60 s each
    python bench/relay.py --relays 1,4 --seconds 30 --gateways 200
    python bench/relay.py --rate 100            # open loop: 100 confirmations/s in total
    python bench/relay.py --quick               # a few seconds per phase (the smoke test)
    python bench/relay.py --json out.json --workdir DIR   # every number; keep logs and configs

Per phase (one number of relays on one kind of ledger) everything is started fresh:

- **the broker**: a private mosquitto (``simulators.broker.Mosquitto``, free loopback port,
  persistence off), shared by the phases; MQTT 5 shared subscriptions.
- **the ledger**: for 2 and more relays one PostgreSQL database shared by them (a private
  cluster, ``tests.pg.PostgresCluster``: ``fsync=off`` as in the tests, ``--pg-fsync`` turns it
  on); for 1 relay SQLite (``synchronous=FULL``, a file in the work directory) *and*
  PostgreSQL, so that the scaling ratio compares like with like (``--ledger``).
- **the ERP**: the SAP OData stand-in (``python -m simulators.erp.sap``, its own process) with a
  posting latency uniform in ``--latency`` (default 50-200 ms per request) and at most
  ``--erp-concurrency`` requests worked on at a time (default 32; the others queue), as an
  ERP's dialog work processes do.
- **the relays**: ``python -m edge relay run -c relay-<i>.toml``, each its own process, the
  shipped defaults except the broker, the ledger, the ERP and ``concurrency``
  (``--relay-concurrency``, default 8 as shipped); logs (JSON, info) to files. The first relay
  starts alone and makes the ledger's tables, the others once it is connected: two relays
  creating them at the same moment on PostgreSQL collide (``CREATE TABLE IF NOT EXISTS`` is not
  safe under concurrency there: a unique violation in ``pg_type``) and the loser exits.
- **the gateways**: ``--gateways`` (100) light gateways in this process, each its own MQTT
  connection (``edge.sync.mqtt.MqttLink``, the gateway's own link), its own work center root
  ``umh/v1/acme/plant1/bench/line<k>/WC<i>`` and one order with ``--ops`` operations (4). Each
  publishes the contract's ``mes.confirmation/1`` (``tests.relay.builders``: the messages the
  relay's tests use) with ``ts_event_ms`` = now, on ``<root>/_mes_v1/confirmation`` (QoS 1),
  confirmation 1, 2, 3, ... of each operation, to the operation with the fewest unanswered, and
  collects the verdicts on ``<root>/_mes_v1/confirmation/result``. Closed loop (default): each
  gateway keeps at most ``--inflight`` (2) confirmations without a final verdict (``posted``,
  ``duplicate``, ``rejected``; ``retrying`` is not final) and sends the next as soon as one is
  answered: the relays' capacity. ``--rate R``: open loop, R confirmations/s in total, evenly
  spread over the gateways (random phase), still at most ``--inflight`` unanswered per gateway
  (a gateway that hits it sends late; the offered rate is reported). A publish that the broker
  acknowledges with "no matching subscribers" (16) or that gets no PUBACK is sent again.

Timeline of a phase: start (stand-in, relays; every relay's MQTT connected, 1 s to subscribe),
``--warmup`` s of load (excluded), ``--seconds`` s measured, then no new confirmations and a
drain until every published one has its final verdict (at most ``--drain`` s). Then the
stand-in's ledger is the judge: every published idem_key must be in it exactly once (by
``ExternalSystemConfirmation``): ``lost`` = published and not posted, ``dup`` = posted twice
(``SapState.duplicates()``), ``unanswered`` = no final verdict at the end of the drain.

Measured over the window: confirmations posted per second (``posted`` verdicts received, the
median over ``--window`` s windows, 5 s; and the mean), the latency publish -> ``posted``
verdict at the gateway (p50/p99), the relay's own ``latency_ms`` (its clock at posting minus
``ts_event_ms``), the verdicts by status, the CPU of every relay process (utime + stime of all
its threads from ``/proc``, over the window's wall time; 100 % = one core) and its RSS (at the
end of the window, and its peak ``VmHWM``), the CPU of the stand-in, the broker, PostgreSQL (the
postmaster and its backends) and this process (the gateways), the machine's busy CPU
(``/proc/stat``) and load average (other users of the machine included), and the stand-in's
requests in flight (sampled every second: at ``--erp-concurrency`` the ERP is the limit).

Every child runs in its own process group and is stopped at the end of its phase and, whatever
happened (an error, Ctrl-C, SIGTERM), in ``finally`` (SIGTERM, then SIGKILL); every wait is
bounded. Exit status 0 when every phase completed with nothing lost and nothing posted twice.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import math
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))  # this tree's gateway, simulators and test helpers

from bench.procfs import child_env as _env  # noqa: E402
from bench.procfs import cpu_seconds, mem_mb, tail  # noqa: E402
from bench.procfs import tree_cpu_s as tree_cpu_seconds  # noqa: E402
from edge.logging import configure_logging  # noqa: E402
from edge.relay.erp import external_id  # noqa: E402
from edge.sync.mqtt import LinkLost, Message, MqttLink  # noqa: E402
from simulators.broker import Mosquitto, find_mosquitto, free_port  # noqa: E402
from tests.pg import PostgresCluster  # noqa: E402
from tests.relay.builders import message, posting  # noqa: E402

ENTERPRISE = "acme"
SAP_USER = "RELAY"
SAP_PASSWORD = "relay-secret"
FINAL = ("posted", "duplicate", "rejected")
NO_SUBSCRIBERS = 16  # MQTT 5 PUBACK reason: accepted, but nobody subscribed
FULL = {"seconds": 60.0, "warmup": 10.0, "window": 5.0, "drain": 60.0}
QUICK = {"seconds": 3.0, "warmup": 1.0, "window": 1.0, "drain": 20.0}
NCPU = os.cpu_count() or 1

RELAY_TOML = """\
[relay]
enterprise = "{enterprise}"
instance = "{instance}"
concurrency = {concurrency}
log_json = true
log_level = "{log_level}"

[mqtt]
host = "{mqtt_host}"
port = {mqtt_port}
reconnect_min_s = 0.5

[ledger]
url = "{ledger}"

[erp]
system = "sap"
service_url = "{sap_url}"
user = "{sap_user}"
password_file = "{secret}"
timeout_s = 30.0
"""


# ---------------------------------------------------------------------- small helpers


def pct(xs: list[float], q: float) -> float:
    """Nearest-rank percentile of ``xs`` (sorted here); NaN when empty."""
    if not xs:
        return math.nan
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))]


def med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else math.nan


def http_json(url: str, timeout: float = 10.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


def child_env() -> dict[str, str]:
    return _env(ROOT, PYTHONUNBUFFERED="1")


def machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine (every CPU) so far."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    total = sum(values[:8])
    return total - idle, total


def loadavg() -> list[float]:
    with open("/proc/loadavg") as f:
        return [float(v) for v in f.read().split()[:3]]


# ---------------------------------------------------------------------- processes


class Procs:
    """Every child of the bench, each in its own process group."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def spawn(self, argv: list[str], log: Path, cwd: Path) -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            proc = subprocess.Popen(
                argv,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=child_env(),
                start_new_session=True,  # a Ctrl-C in the terminal is for us; we stop them
            )
        self.procs.append(proc)
        return proc

    @staticmethod
    def stop(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> int | None:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout)
        rc = proc.returncode
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # whatever the leader left in its group
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)
        return rc if rc is not None else proc.returncode

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            self.stop(proc, timeout=5.0)
        self.procs.clear()


async def wait_for_text(
    path: Path, text: str, timeout: float, proc: subprocess.Popen[bytes], what: str
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if text in path.read_text(errors="replace"):
                return
        except OSError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited (rc={proc.returncode}); its log:\n{tail(path)}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: no {text!r} in {timeout:g} s; its log:\n{tail(path)}")
        await asyncio.sleep(0.1)


# ---------------------------------------------------------------------- the gateways


@dataclass(slots=True)
class Done:
    """A confirmation's first final verdict."""

    status: str
    t_pub: float  # monotonic s, just before the first publish
    t_recv: float  # monotonic s, verdict received
    relay_ms: float | None  # the verdict's latency_ms


@dataclass(slots=True)
class Tally:
    """What every gateway of a phase saw (one event loop: no locks)."""

    published: set[str] = field(default_factory=set)
    pending: dict[str, tuple[int, str, float]] = field(default_factory=dict)  # gw, op, t_pub
    done: list[Done] = field(default_factory=list)
    verdicts: dict[str, int] = field(default_factory=dict)  # every verdict, by status
    extra_finals: int = 0  # a second final verdict for one key
    unknown_verdicts: int = 0  # a verdict for a key this phase never published
    republished: int = 0  # sent again: no subscriber, no PUBACK, refused
    late_s: float = 0.0  # open loop: sum of lateness against the schedule
    sent_t: list[float] = field(default_factory=list)  # monotonic s of every first publish


class Gateway:
    def __init__(
        self, index: int, broker: Mosquitto, ops: int, inflight: int, tally: Tally
    ) -> None:
        self.index = index
        self.edge_id = f"wc-bench-{index:03d}"
        self.work_center = f"WC{index:03d}"
        self.root = f"umh/v1/{ENTERPRISE}/plant1/bench/line{index % 10}/{self.work_center}"
        self.order = f"{7_000_000 + index}"
        self.ops = [f"{(k + 1) * 10:04d}" for k in range(ops)]
        self.next_conf = dict.fromkeys(self.ops, 1)
        self.busy = dict.fromkeys(self.ops, 0)
        self.seq = 0
        self.free = inflight
        self.tally = tally
        self.changed = asyncio.Event()
        self.stopping = False
        self.link = MqttLink(
            host=broker.host,
            port=broker.port,
            client_id=f"bench-{self.edge_id}-{uuid.uuid4().hex[:6]}",
            session_expiry_s=0,
            reconnect_min_s=0.5,
        )
        self.tasks: list[asyncio.Task[None]] = []

    async def connect(self) -> None:
        self.link.subscribe([(f"{self.root}/_mes_v1/confirmation/result", 1)])
        self.link.start()
        await asyncio.wait_for(self.link.connected.wait(), 20)
        self.tasks.append(asyncio.create_task(self._collect()))

    def start(self, interval: float | None) -> None:
        self.tasks.append(asyncio.create_task(self._publish_loop(interval)))

    def stopped(self) -> bool:
        return self.stopping

    def stop_sending(self) -> None:
        self.stopping = True
        self.changed.set()

    async def close(self) -> None:
        self.stop_sending()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks.clear()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.link.stop(), 10)

    async def _collect(self) -> None:
        tally = self.tally
        while True:
            m: Message = await self.link.messages.get()
            self.link.ack(m)
            t = time.monotonic()
            try:
                body = json.loads(m.payload)["body"]
                status, key = str(body["status"]), str(body["idem_key"])
            except (ValueError, KeyError, TypeError):
                tally.unknown_verdicts += 1
                continue
            tally.verdicts[status] = tally.verdicts.get(status, 0) + 1
            if status not in FINAL:
                continue
            held = tally.pending.pop(key, None)
            if held is None:
                if key in tally.published:
                    tally.extra_finals += 1
                else:
                    tally.unknown_verdicts += 1
                continue
            _, op, t_pub = held
            latency = body.get("latency_ms")
            tally.done.append(
                Done(status, t_pub, t, float(latency) if latency is not None else None)
            )
            self.busy[op] -= 1
            self.free += 1
            self.changed.set()

    async def _publish_loop(self, interval: float | None) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time() + (random.uniform(0, interval) if interval else 0.0)
        while not self.stopping:
            if interval is not None:
                delay = next_at - loop.time()
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.changed.wait(), delay)
                    self.changed.clear()
                    continue  # woken early (an answer, or the stop): look again
                self.tally.late_s += -delay
            while self.free <= 0 and not self.stopped():
                await self.changed.wait()
                self.changed.clear()
            if self.stopped():
                return
            if interval is not None:
                next_at += interval
            await self._send_next()

    async def _send_next(self) -> None:
        op = min(self.ops, key=lambda o: (self.busy[o], random.random()))
        n = self.next_conf[op]
        self.next_conf[op] = n + 1
        self.seq += 1
        self.free -= 1
        self.busy[op] += 1
        now_ms = time.time_ns() // 1_000_000
        p = posting(
            n,
            edge_id=self.edge_id,
            order=self.order,
            op=op,
            seq=self.seq,
            root=self.root,
            good=random.randint(20, 200),
            scrap=random.randint(0, 3),
            event_ms=now_ms,
            period_start_ms=now_ms - 60_000,
            period_end_ms=now_ms,
            posting_date=dt.datetime.fromtimestamp(now_ms / 1000, dt.UTC).date().isoformat(),
        )
        payload = message(p)
        t_pub = time.monotonic()
        self.tally.published.add(p.idem_key)
        self.tally.pending[p.idem_key] = (self.index, op, t_pub)
        self.tally.sent_t.append(t_pub)
        await self._publish(f"{self.root}/_mes_v1/confirmation", payload)

    async def _publish(self, topic: str, payload: bytes) -> None:
        """Until the broker took it for a subscriber (bounded by the phase's end: cancelled)."""
        while True:
            try:
                code = await asyncio.wait_for(self.link.publish(topic, payload, qos=1), 10)
            except (TimeoutError, LinkLost, ConnectionError):
                code = -1
            if 0 <= code < 0x80 and code != NO_SUBSCRIBERS:
                return
            self.tally.republished += 1
            await asyncio.sleep(0.5)


# ---------------------------------------------------------------------- a phase


@dataclass(slots=True)
class Phase:
    relays: int
    ledger: str  # "sqlite" or "postgres"

    @property
    def key(self) -> str:
        return f"{self.relays}/{self.ledger}"


@dataclass(slots=True)
class Context:
    args: argparse.Namespace
    work: Path
    broker: Mosquitto
    pg: PostgresCluster | None
    procs: Procs


class Sampler:
    """CPU and memory of the phase's processes, and the ERP's requests in flight."""

    def __init__(self, named: dict[str, int], trees: dict[str, int], control_url: str) -> None:
        self.named = named  # name -> pid (the process alone)
        self.trees = trees  # name -> pid (with its children)
        self.control_url = control_url
        self.cpu0: dict[str, float] = {}
        self.t0 = 0.0
        self.ticks0 = (0, 0)
        self.in_flight: list[int] = []
        self.rss: dict[str, list[float]] = {name: [] for name in named}

    def _cpu(self) -> dict[str, float]:
        out = {name: cpu_seconds(pid) or 0.0 for name, pid in self.named.items()}
        out.update({name: tree_cpu_seconds(pid) for name, pid in self.trees.items()})
        return out

    def begin(self) -> None:
        self.cpu0 = self._cpu()
        self.t0 = time.monotonic()
        self.ticks0 = machine_ticks()

    def sample(self) -> None:
        for name, pid in self.named.items():
            self.rss[name].append(mem_mb(pid)[0])
        try:
            stats = http_json(self.control_url + "/stats", timeout=2)
            self.in_flight.append(int(stats["in_flight"]))
        except (OSError, ValueError, KeyError):
            pass

    def end(self) -> dict[str, Any]:
        cpu1 = self._cpu()
        wall = time.monotonic() - self.t0
        busy1, total1 = machine_ticks()
        busy = busy1 - self.ticks0[0]
        total = total1 - self.ticks0[1]
        cpu = {name: 100.0 * (cpu1[name] - self.cpu0.get(name, 0.0)) / wall for name in cpu1}
        mem = {}
        for name, pid in self.named.items():
            rss, hwm = mem_mb(pid)
            mem[name] = {"rss_end_mb": rss, "rss_peak_mb": hwm}
        return {
            "wall_s": wall,
            "cpu_pct": cpu,
            "mem": mem,
            "machine_busy_pct": 100.0 * NCPU * busy / total if total else math.nan,
            "erp_in_flight_mean": statistics.fmean(self.in_flight) if self.in_flight else math.nan,
            "erp_in_flight_max": max(self.in_flight) if self.in_flight else 0,
        }


def postmaster_pid(pg: PostgresCluster) -> int | None:
    try:
        return int((pg.data_dir / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


async def run_phase(ctx: Context, phase: Phase) -> dict[str, Any]:
    args = ctx.args
    workdir = ctx.work / phase.key.replace("/", "-")
    workdir.mkdir(parents=True, exist_ok=True)
    load_before = loadavg()
    started = time.monotonic()
    procs: list[subprocess.Popen[bytes]] = []
    gateways: list[Gateway] = []
    result: dict[str, Any] = {"phase": phase.key, "relays": phase.relays, "ledger": phase.ledger}
    try:
        # The ERP.
        sap_port = free_port()
        sap_log = workdir / "sap.log"
        sap_argv = [
            sys.executable, "-m", "simulators.erp.sap", "--port", str(sap_port),
            "--user", SAP_USER, "--password", SAP_PASSWORD, "--latency", args.latency,
        ]  # fmt: skip
        if args.erp_concurrency > 0:
            sap_argv += ["--max-concurrency", str(args.erp_concurrency)]
        sap = ctx.procs.spawn(sap_argv, sap_log, ROOT)
        procs.append(sap)
        base = f"http://127.0.0.1:{sap_port}"
        sap_url = f"{base}/sap/opu/odata/sap/API_PROD_ORDER_CONFIRMATION_2_SRV/"

        # The ledger.
        if phase.ledger == "sqlite":
            ledger_url = f"sqlite:///{workdir / 'ledger.db'}"
        else:
            assert ctx.pg is not None
            name = f"relay_{phase.relays}_{uuid.uuid4().hex[:6]}"
            await asyncio.to_thread(ctx.pg.create_database, name)
            ledger_url = ctx.pg.url(name)

        # The relays.
        secret = workdir / "sap-password"
        secret.write_text(SAP_PASSWORD + "\n")
        relay_logs: list[Path] = []
        relay_procs: list[subprocess.Popen[bytes]] = []
        for i in range(phase.relays):
            cfg = workdir / f"relay-{i + 1}.toml"
            cfg.write_text(
                RELAY_TOML.format(
                    enterprise=ENTERPRISE,
                    instance=f"bench-relay-{i + 1}",
                    concurrency=args.relay_concurrency,
                    log_level=args.relay_log_level,
                    mqtt_host=ctx.broker.host,
                    mqtt_port=ctx.broker.port,
                    ledger=ledger_url,
                    sap_url=sap_url,
                    sap_user=SAP_USER,
                    secret=secret,
                )
            )
            log = workdir / f"relay-{i + 1}.log"
            relay_logs.append(log)
            proc = ctx.procs.spawn(
                [sys.executable, "-m", "edge", "relay", "run", "-c", str(cfg)], log, ROOT
            )
            relay_procs.append(proc)
            procs.append(proc)
            if i == 0 and phase.relays > 1:
                # The first one makes the ledger's tables; the others start once it has: on
                # PostgreSQL two concurrent CREATE TABLE IF NOT EXISTS can collide (a unique
                # violation in pg_type) and the loser exits.
                await wait_for_text(log, "mqtt connected", 60, proc, "relay 1")
        await wait_for_text(sap_log, "SAP stand-in serving", 60, sap, "the SAP stand-in")
        for i, (proc, log) in enumerate(zip(relay_procs, relay_logs, strict=True)):
            await wait_for_text(log, "mqtt connected", 60, proc, f"relay {i + 1}")
        await asyncio.sleep(1.0)  # their SUBSCRIBEs reach the broker

        # The gateways.
        tally = Tally()
        gateways = [
            Gateway(g, ctx.broker, args.ops, args.inflight, tally) for g in range(args.gateways)
        ]
        await asyncio.gather(*(gw.connect() for gw in gateways))
        result["startup_s"] = time.monotonic() - started

        named = {f"relay-{i + 1}": p.pid for i, p in enumerate(relay_procs)}
        named.update({"sap": sap.pid, "bench": os.getpid()})
        if ctx.broker.proc is not None:
            named["broker"] = ctx.broker.proc.pid
        trees: dict[str, int] = {}
        if phase.ledger == "postgres" and ctx.pg is not None:
            pm = postmaster_pid(ctx.pg)
            if pm is not None:
                trees["postgres"] = pm
        sampler = Sampler(named, trees, f"{base}/_control")

        interval = args.gateways / args.rate if args.rate > 0 else None
        t_start = time.monotonic()
        for gw in gateways:
            gw.start(interval)
        await asyncio.sleep(args.warmup)
        t0 = time.monotonic()
        sampler.begin()
        t_end = t0 + args.seconds
        while (now := time.monotonic()) < t_end:
            await asyncio.sleep(min(1.0, t_end - now))
            await asyncio.to_thread(sampler.sample)
            for i, proc in enumerate(relay_procs):
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"relay {i + 1} exited (rc={proc.returncode}):\n{tail(relay_logs[i])}"
                    )
        usage = sampler.end()
        t1 = time.monotonic()
        for gw in gateways:
            gw.stop_sending()

        # The drain: every published confirmation gets its final verdict.
        drain_until = time.monotonic() + args.drain
        while tally.pending and time.monotonic() < drain_until:
            await asyncio.sleep(0.1)
        drain_s = time.monotonic() - t1
        await asyncio.sleep(0.3)  # a late second verdict would show

        erp_stats = await asyncio.to_thread(http_json, f"{base}/_control/stats")
        ledger = await asyncio.to_thread(http_json, f"{base}/_control/ledger", 60.0)
        counts: dict[str, int] = {
            str(k).lower(): int(v) for k, v in ledger["count_by_external_id"].items()
        }
        expected = {external_id(k).lower(): k for k in tally.published}
        lost = [k for ext, k in expected.items() if counts.get(ext, 0) == 0]
        twice = {k: n for k, n in counts.items() if n > 1}
        unexpected = [k for k in counts if k not in expected]

        # The numbers.
        w = args.window
        windows = max(1, int(args.seconds // w))
        per_window = [0] * windows
        lat_gw: list[float] = []
        lat_relay: list[float] = []
        in_window: dict[str, int] = {}
        for d in tally.done:
            if not t0 <= d.t_recv < t0 + windows * w:
                continue
            in_window[d.status] = in_window.get(d.status, 0) + 1
            if d.status != "posted":
                continue
            per_window[int((d.t_recv - t0) // w)] += 1
            lat_gw.append(1000.0 * (d.t_recv - d.t_pub))
            if d.relay_ms is not None:
                lat_relay.append(d.relay_ms)
        rates = [n / w for n in per_window]
        sent_window = sum(1 for t in tally.sent_t if t0 <= t < t1)
        relay_rc = [Procs.stop(p) for p in relay_procs]
        relay_names = [f"relay-{i + 1}" for i in range(phase.relays)]
        result.update(
            {
                "ledger_url": ledger_url.split("@")[-1],
                "load_before": load_before,
                "warmup_s": t0 - t_start,
                "measured_s": t1 - t0,
                "drain_s": drain_s,
                "posted_per_s_median": med(rates),
                "posted_per_s_mean": sum(per_window) / (windows * w),
                "posted_per_s_windows": rates,
                "offered_per_s": sent_window / (t1 - t0),
                "latency_ms": {
                    "n": len(lat_gw),
                    "p50": pct(lat_gw, 0.50),
                    "p99": pct(lat_gw, 0.99),
                    "max": max(lat_gw) if lat_gw else math.nan,
                },
                "relay_latency_ms": {
                    "n": len(lat_relay),
                    "p50": pct(lat_relay, 0.50),
                    "p99": pct(lat_relay, 0.99),
                },
                "verdicts": dict(sorted(tally.verdicts.items())),
                "verdicts_in_window": dict(sorted(in_window.items())),
                "published": len(tally.published),
                "final": len(tally.done),
                "unanswered": len(tally.pending),
                "lost": len(lost),
                "lost_keys": lost[:20],
                "duplicates": len(twice),
                "duplicate_ids": dict(list(twice.items())[:20]),
                "unexpected_in_erp": len(unexpected),
                "extra_final_verdicts": tally.extra_finals,
                "unknown_verdicts": tally.unknown_verdicts,
                "republished": tally.republished,
                "late_s_total": tally.late_s,
                "erp": {
                    "posts": erp_stats.get("posts"),
                    "requests": erp_stats.get("requests"),
                    "peak_in_flight": erp_stats.get("peak_in_flight"),
                    "max_concurrency": erp_stats.get("max_concurrency"),
                    "in_flight_mean": usage["erp_in_flight_mean"],
                    "in_flight_max": usage["erp_in_flight_max"],
                },
                "cpu_pct": usage["cpu_pct"],
                "relay_cpu_pct": [usage["cpu_pct"][n] for n in relay_names],
                "relay_rss_mb": [usage["mem"][n]["rss_end_mb"] for n in relay_names],
                "relay_rss_peak_mb": [usage["mem"][n]["rss_peak_mb"] for n in relay_names],
                "machine_busy_pct": usage["machine_busy_pct"],
                "relay_exit_codes": relay_rc,
                "pids": [p.pid for p in procs],
            }
        )
        result.update(cpu_budget(result))
        result["bound"] = what_limits(result, args)
        result["ok"] = (
            not lost
            and not twice
            and not unexpected
            and not tally.pending
            and all(rc == 0 for rc in relay_rc)
        )
        return result
    finally:
        await asyncio.gather(*(gw.close() for gw in gateways), return_exceptions=True)
        for proc in reversed(procs):
            await asyncio.to_thread(Procs.stop, proc)
            with contextlib.suppress(ValueError):
                ctx.procs.procs.remove(proc)


def cpu_budget(r: dict[str, Any]) -> dict[str, Any]:
    """CPU ms per posted confirmation of each part, what the rest of the machine used, and the
    posts/s the machine's CPUs would allow these parts alone."""
    rate = r["posted_per_s_mean"]
    cpu: dict[str, float] = r["cpu_pct"]
    ours = sum(cpu.values())
    per_post = {
        "relays": sum(v for k, v in cpu.items() if k.startswith("relay-")) * 10 / rate,
        **{k: v * 10 / rate for k, v in cpu.items() if not k.startswith("relay-")},
    }
    total = sum(per_post.values())
    return {
        "cpu_ms_per_post": per_post,
        "cpu_ms_per_post_total": total,
        "others_cpu_pct": max(0.0, r["machine_busy_pct"] - ours),
        "cpu_ceiling_per_s": NCPU * 1000 / total if total else math.nan,
    }


def ceilings(relays: int, args: argparse.Namespace) -> dict[str, float]:
    """Posts/s the ERP's latency allows with the relays' and the ERP's concurrency."""
    low, high = parse_latency(args.latency)
    mean = (low + high) / 2 or 1e-3
    erp = args.erp_concurrency / mean if args.erp_concurrency > 0 else math.inf
    return {"relays": relays * args.relay_concurrency / mean, "erp": erp}


def what_limits(r: dict[str, Any], args: argparse.Namespace) -> str:
    c = ceilings(r["relays"], args)
    in_flight = r["erp"]["in_flight_mean"]
    limit = args.erp_concurrency
    relay_slots = r["relays"] * args.relay_concurrency
    if r["machine_busy_pct"] >= 0.9 * 100 * NCPU:
        return f"the machine's CPU ({r['machine_busy_pct']:.0f} % of {NCPU * 100} %)"
    if limit > 0 and in_flight >= 0.9 * limit and c["erp"] <= c["relays"]:
        return f"the ERP's concurrency ({in_flight:.1f} of {limit} in flight)"
    if in_flight >= 0.9 * relay_slots:
        return f"the relays' concurrency ({in_flight:.1f} of {relay_slots} posts in flight)"
    if args.rate > 0 and r["offered_per_s"] < 0.95 * args.rate:
        return "the offered load (open loop)"
    if args.rate > 0:
        return "none: the offered rate was absorbed"
    return (
        f"relay work between posts ({in_flight:.1f} of {relay_slots} posts in flight: "
        "ledger, MQTT, CPU)"
    )


def parse_latency(text: str) -> tuple[float, float]:
    if "-" in text:
        low, high = text.split("-", 1)
        return float(low), float(high)
    return float(text), float(text)


# ---------------------------------------------------------------------- the report


def fmt(x: float | None, spec: str = ".0f") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return format(x, spec)


def table(results: list[dict[str, Any]]) -> str:
    head = (
        "| relays | ledger   | posted/s | mean/s | p50 ms | p99 ms | relay p50 | relay p99 "
        "| relay CPU %   | relay RSS MB  | ERP in flight | machine CPU % | lost | dup |"
    )
    rule = "|" + "|".join("-" * (len(c)) for c in head.split("|")[1:-1]) + "|"
    lines = [head, rule]
    for r in results:
        lat, rl, erp = r["latency_ms"], r["relay_latency_ms"], r["erp"]
        cpu = "/".join(fmt(x) for x in r["relay_cpu_pct"])
        rss = "/".join(fmt(x) for x in r["relay_rss_mb"])
        cols = [
            f"{r['relays']:<6}",
            f"{r['ledger']:<8}",
            f"{fmt(r['posted_per_s_median'], '.1f'):>8}",
            f"{fmt(r['posted_per_s_mean'], '.1f'):>6}",
            f"{fmt(lat['p50']):>6}",
            f"{fmt(lat['p99']):>6}",
            f"{fmt(rl['p50']):>9}",
            f"{fmt(rl['p99']):>9}",
            f"{cpu:<13}",
            f"{rss:<13}",
            f"{fmt(erp['in_flight_mean'], '.1f') + ' / ' + str(erp['max_concurrency']):<13}",
            f"{fmt(r['machine_busy_pct']):>13}",
            f"{r['lost']:>4}",
            f"{r['duplicates']:>3}",
        ]
        lines.append("| " + " | ".join(cols) + " |")
    return "\n".join(lines)


def scaling(results: list[dict[str, Any]]) -> dict[str, float]:
    by = {r["phase"]: r["posted_per_s_median"] for r in results}
    out: dict[str, float] = {}
    for base in ("1/postgres", "1/sqlite"):
        for n in sorted({r["relays"] for r in results if r["relays"] > 1}):
            hi = by.get(f"{n}/postgres")
            lo = by.get(base)
            key = f"{n}/postgres over {base}"
            if hi is not None and lo:
                out[key] = hi / lo
    return out


def report(results: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        f"ERP relay: {args.gateways} gateways x {args.ops} operations, "
        + (f"open loop {args.rate:g}/s in total, " if args.rate > 0 else "closed loop, ")
        + f"at most {args.inflight} unanswered per gateway; SAP stand-in latency "
        f"{args.latency} s, "
        f"ERP concurrency {args.erp_concurrency or 'unlimited'}, relay concurrency "
        f"{args.relay_concurrency}; {args.seconds:g} s measured after {args.warmup:g} s, "
        f"{args.window:g}-s windows; {NCPU} CPUs",
        "",
        table(results),
        "",
    ]
    for r in results:
        c = ceilings(r["relays"], args)
        others = {k: v for k, v in r["cpu_pct"].items() if not k.startswith("relay-")}
        lines.append(
            f"{r['phase']}: {r['published']} published, verdicts {r['verdicts']}, "
            f"unanswered {r['unanswered']}, republished {r['republished']}; "
            f"CPU % {', '.join(f'{k} {v:.0f}' for k, v in sorted(others.items()))}; "
            f"load before {r['load_before'][0]:.2f}; ceiling relays {c['relays']:.0f}/s, "
            f"ERP {c['erp']:.0f}/s; bound: {r['bound']}"
        )
        lines.append(
            "    CPU ms per posting: "
            + ", ".join(f"{k} {v:.1f}" for k, v in r["cpu_ms_per_post"].items())
            + f" (total {r['cpu_ms_per_post_total']:.1f}: {NCPU} CPUs alone would allow "
            f"{r['cpu_ceiling_per_s']:.0f}/s); the rest of the machine used "
            f"{r['others_cpu_pct']:.0f} %"
        )
    ratio = scaling(results)
    lines.append("")
    for k, v in ratio.items():
        lines.append(f"scaling {k}: {v:.2f}x")
    ok = all(r["ok"] for r in results)
    lines.append(
        "every published confirmation posted exactly once, every one answered: "
        + ("yes" if ok else "NO")
    )
    return "\n".join(lines)


# ---------------------------------------------------------------------- main


def phases_of(args: argparse.Namespace) -> list[Phase]:
    out: list[Phase] = []
    for n in args.relays:
        if n == 1 and args.ledger == "both":
            out += [Phase(1, "sqlite"), Phase(1, "postgres")]
        elif n == 1 and args.ledger == "sqlite":
            out.append(Phase(1, "sqlite"))
        else:
            out.append(Phase(n, "postgres"))
    return out


async def amain(args: argparse.Namespace) -> int:
    configure_logging("warning", json=False)
    loop = asyncio.get_running_loop()
    main_task = asyncio.current_task()
    if main_task is not None:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGTERM, main_task.cancel)
    keep = args.workdir is not None
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-relay-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    procs = Procs()
    broker = Mosquitto(work / "broker", persistence=False)
    pg: PostgresCluster | None = None
    phases = phases_of(args)
    results: list[dict[str, Any]] = []
    failure: str | None = None
    try:
        await asyncio.to_thread(broker.start)
        if any(p.ledger == "postgres" for p in phases):
            settings = {"fsync": "on", "full_page_writes": "on"} if args.pg_fsync else {}
            pg = PostgresCluster(settings=settings)
            await asyncio.to_thread(pg.start)
        ctx = Context(args, work, broker, pg, procs)
        for phase in phases:
            print(f"phase {phase.key} ...", file=sys.stderr, flush=True)
            r = await run_phase(ctx, phase)
            results.append(r)
            print(
                f"phase {phase.key}: {r['posted_per_s_median']:.1f} posted/s, "
                f"p50 {r['latency_ms']['p50']:.0f} ms, lost {r['lost']}, dup {r['duplicates']}",
                file=sys.stderr,
                flush=True,
            )
    except asyncio.CancelledError:
        failure = "stopped by a signal (Ctrl-C or SIGTERM)"
    except Exception as exc:
        failure = f"{type(exc).__name__}: {exc}"
    finally:
        procs.stop_all()
        await asyncio.to_thread(broker.stop)
        if pg is not None:
            await asyncio.to_thread(pg.destroy)
        if not keep and failure is None:
            shutil.rmtree(work, ignore_errors=True)
    if results:
        print(report(results, args))
    if failure is not None:
        print(f"FAILED: {failure} (logs in {work})", file=sys.stderr)
    if args.json:
        doc = {
            "meta": {
                "args": {k: v for k, v in vars(args).items() if k != "json"},
                "cpus": NCPU,
                "python": sys.version.split()[0],
                "started_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                "mosquitto": find_mosquitto(),
                "commit": git_commit(),
                "workdir": str(work) if keep or failure else None,
            },
            "phases": results,
            "scaling": scaling(results),
            "ok": failure is None and bool(results) and all(r["ok"] for r in results),
            "failure": failure,
        }
        Path(args.json).write_text(json.dumps(doc, indent=2, default=str) + "\n")
    if failure is not None:
        return 2
    return 0 if all(r["ok"] for r in results) else 1


def git_commit() -> str:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--relays", default="1,2,4", help="numbers of relays, one phase each (1,2,4)")
    p.add_argument(
        "--ledger",
        choices=("both", "postgres", "sqlite"),
        default="both",
        help="1 relay on SQLite and PostgreSQL (both), or only one of them; more: PostgreSQL",
    )
    p.add_argument("--gateways", type=int, default=100)
    p.add_argument("--ops", type=int, default=4, help="operations per gateway (4)")
    p.add_argument("--inflight", type=int, default=2, help="unanswered per gateway at most (2)")
    p.add_argument("--rate", type=float, default=0.0, help="total confirmations/s; 0: closed loop")
    p.add_argument("--seconds", type=float, help="measured per phase (60; --quick 3)")
    p.add_argument("--warmup", type=float, help="load before measuring (10; --quick 1)")
    p.add_argument("--window", type=float, help="throughput window, s (5; --quick 1)")
    p.add_argument("--drain", type=float, help="wait for the last verdicts (60; --quick 20)")
    p.add_argument("--latency", default="0.05-0.2", help="the ERP's latency, s: 0.1 or 0.05-0.2")
    p.add_argument("--erp-concurrency", type=int, default=32, help="0: unlimited (32)")
    p.add_argument("--relay-concurrency", type=int, default=8, help="[relay] concurrency (8)")
    p.add_argument("--relay-log-level", default="info", choices=("debug", "info", "warning"))
    p.add_argument("--pg-fsync", action="store_true", help="PostgreSQL with fsync on")
    p.add_argument("--quick", action="store_true", help="3 s per phase, 1 s warm-up, 1-s windows")
    p.add_argument("--json", help="write every number here")
    p.add_argument("--workdir", help="keep configs and logs here")
    args = p.parse_args(argv)
    defaults = QUICK if args.quick else FULL
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.relays = [int(x) for x in str(args.relays).split(",") if x.strip()]
    if not args.relays or min(args.relays) < 1:
        p.error("--relays: numbers of at least 1")
    if args.gateways < 1 or args.ops < 1 or args.inflight < 1:
        p.error("--gateways, --ops and --inflight must be at least 1")
    if args.window <= 0 or args.seconds < args.window:
        p.error("--window must be positive and at most --seconds")
    parse_latency(args.latency)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return asyncio.run(amain(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
