"""Machine write -> consumer receipt, end to end: our gateway vs. a naive script vs. Node-RED.

    python bench/e2e.py                     # defaults: 100 and 1,000 changes/s, 60 s, 3 runs
    python bench/e2e.py --rates 100 --seconds 10 --runs 1 --peers ours,naive
    python bench/e2e.py --json out.json     # + every number as JSON
    python bench/e2e.py --profile DIR       # + one py-spy'd phase of our gateway per rate
    python bench/e2e.py --workdir DIR       # keep every peer's log, config and database

One OPC UA server, one broker, one subscriber, three peers that carry a machine counter from the
server to the subscriber, each in its own process, taking turns in the same run (per rate: ours,
naive, Node-RED; then the next rate; then the next run):

- **the server** (``--child server``): the asyncua server of ``bench/opcua.py`` (``BenchServer``)
  in its own process on 127.0.0.1 (free port), one UInt32 counter ``ns=2;s=Bench.Counter000``,
  +1 per write. At ``rate`` writes/s for ``--seconds``, write i happens at a uniformly random
  point of its slot ``[t0 + i/rate, t0 + (i+1)/rate)``: asyncua publishes on fixed deadlines, and
  evenly spaced writes would phase-lock with them. Each peer at a rate in a run gets the same
  write schedule (one seed per run and rate). ``monotonic_ns()`` is taken just before each write.
  Its garbage collector is off while it writes: a PLC does not pause, and a full collection of
  the server's heap (~140 ms here) would stall the notifications of whichever peer is running.
- **the broker**: a private mosquitto (``simulators.broker.Mosquitto``, free loopback port).
- **the subscriber**: a paho MQTT 5 client in a thread of this process; it only notes
  ``monotonic_ns()`` and the payload of every message. CLOCK_MONOTONIC is one clock for every
  process on Linux, so the server's write times and the receipt times can be subtracted.
- **ours**: ``edge run --config <toml>`` (the real CLI, a fresh database per phase), with the
  shipped defaults except what points it at the server and the broker: ``[mqtt]`` on the bench
  broker, ``[panel]`` enabled on a free port (the local API starts the operation), one
  ``[[counting.sources]]`` good counter and one ``[[sources.opcua]]`` link on the counter node
  with ``publishing_interval_ms = 10`` (``sampling_interval_ms`` left at its default, 0), and
  ``[mqtt] historian_interval_s = 0``: every counter value goes out, as the naive script and
  Node-RED send them (the shipped 1 s holds a fast counter to one message a second, which
  ``bench/wear.py`` measures; it would make this a measure of that interval). The
  operation is dispatched as a plant does it, ``mes.dispatch/1`` on
  ``<root>/_mes_v1/order/dispatch`` (QoS 1; the bench waits for ``_mes_v1/order/received``),
  and started with ``POST /api/commands/start-production``. The operation has no standard cycle
  time (``planned_run_s_per_unit`` 0): no no-count stops between changes and no rate limit on
  the counter. The consumer reads ``<root>/_historian/counter/good`` (UMH
  ``{timestamp_ms, value}``): the good count of the active operation, published after each
  commit that changed it, i.e. once it is durable. The counter value it stands for is the
  server's value when the operation started plus that good count.
- **naive** (``--child naive``): the script a plant engineer writes: an asyncua subscription
  (publishing interval 10 ms, ``subscribe_data_change`` with asyncua's defaults: sampling
  50 ms, queue size 0) whose callback publishes ``{"value": v}`` with paho (QoS 1, defaults),
  no storage. It imports asyncua and paho only.
- **Node-RED**: Node-RED 4 with node-red-contrib-opcua, installed by this bench with npm into
  ``bench/.nodered/`` (git-ignored; versions in ``bench/nodered/package.json``) and started
  (``node red.js``) with a fresh user directory, a settings file and ``bench/nodered/flows.json``:
  an inject at start -> ``OpcUa-Client`` (action subscribe, 10 ms: the node uses it as both the
  publishing and the sampling interval, queue size 10) -> a function node making
  ``{value: msg.payload}`` -> ``mqtt out`` QoS 1.

Per written value v, latency = the first message at the subscriber (of that peer) whose value
is >= v, minus v's write time: the counter is absolute, so a coalesced value is carried by a
later one and counts from its own write. A value never covered within 15 s after the last write
is lost; "delivered" says the last written value arrived. CPU % is the peer's whole process tree
(every thread: utime + stime from ``/proc/<pid>/stat``) over the write window, divided by its
wall time (one core = 100 %); RSS is the tree's, at the end of the window and its peak (the
processes' ``VmHWM``, start-up included). Our gateway's OPC UA reconnects are its
``edge_source_connects_total`` (``/metrics``) less the first connect. The tables show the
medians of the runs (lost, reconnects and messages summed over them) and the ratios ours /
naive and ours / Node-RED; a line per run also gives the OPC UA server's CPU over the window
and its pacing (how late its writes were against their deadlines), for context. Last,
``bench/uplink.py``'s backlog drain against its naive burst runs as a subprocess
(``--uplink-backlog`` messages; 0 skips it).

Every child runs in its own process group and is stopped at the end of its phase, and all of
them in ``finally`` (SIGTERM, then SIGKILL), whatever happened; every wait is bounded.
"""

from __future__ import annotations

import abc
import argparse
import contextlib
import json
import math
import os
import queue
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))  # this tree's simulators (the broker), whatever is installed

from bench.npm import Unavailable, npm_install  # noqa: E402  (a peer that cannot run here)
from bench.procfs import CLK_TCK, child_env, tail, tree_cpu_s, tree_mem_mb  # noqa: E402

NODERED_TEMPLATE = BENCH / "nodered"
NODERED_DIR = BENCH / ".nodered"  # git-ignored: npm installs Node-RED here


PEERS = ("ours", "naive", "nodered")
PEER_TITLE = {"ours": "ours: edge run", "naive": "naive asyncua+paho", "nodered": "Node-RED 4"}
DRAIN_S = 15.0  # a value not at the subscriber this long after the last write is lost
SETTLE_S = 1.0  # a peer that is ready idles this long before the writes start
PUBLISHING_MS = 10.0

EDGE_ID = "wc-bench-e2e"
WORK_CENTER = "BENCH01"
MQTT_ROOT = f"umh/v1/acme/plant1/bench/line1/{WORK_CENTER}"
TOPIC = {
    "ours": f"{MQTT_ROOT}/_historian/counter/good",
    "naive": "bench/e2e/naive/counter",
    "nodered": "bench/e2e/nodered/counter",
}
DISPATCH_TOPIC = f"{MQTT_ROOT}/_mes_v1/order/dispatch"
RECEIVED_TOPIC = f"{MQTT_ROOT}/_mes_v1/order/received"
OP = ("4711", "0010")
LINK = "machine"

GATEWAY_TOML = """\
[gateway]
edge_id = "{edge_id}"
work_center = "{work_center}"

[store]
path = "{db}"

[mqtt]
enabled = true
host = "127.0.0.1"
port = {mqtt_port}
enterprise = "acme"
site = "plant1"
area = "bench"
line = "line1"
historian_interval_s = {historian_s}

[panel]
enabled = true
host = "127.0.0.1"
port = {panel_port}

[[counting.sources]]
name = "counter"
kind = "good"

[[sources.opcua]]
name = "{link}"
endpoint = "{endpoint}"
publishing_interval_ms = {publishing_ms}

[[sources.opcua.counters]]
counter = "counter"
node = "{node}"
"""

NODERED_SETTINGS = """\
module.exports = {{
    uiHost: "127.0.0.1",
    uiPort: {port},
    userDir: {user_dir},
    flowFile: "flows.json",
    credentialSecret: false,
    httpAdminRoot: false,
    disableEditor: true,
    diagnostics: {{ enabled: false, ui: false }},
    telemetry: {{ enabled: false }},
    logging: {{ console: {{ level: "warn", metrics: false, audit: false }} }},
    editorTheme: {{ projects: {{ enabled: false }} }}
}};
"""


# ---------------------------------------------------------------------- small helpers


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def pct(xs: list[float], q: float) -> float:
    """Nearest-rank percentile of sorted ``xs``; q = 1.0 is the maximum."""
    if not xs:
        return float("nan")
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


def covered_at(records: list[tuple[int, int]], first: int, n: int) -> list[int | None]:
    """For each value first .. first+n-1: the time of the first record with a value >= it."""
    out: list[int | None] = [None] * n
    j = 0
    for t, v in records:
        while j < n and first + j <= v:
            out[j] = t
            j += 1
        if j == n:
            break
    return out


def med(xs: list[float]) -> float:
    xs = [x for x in xs if x is not None and not math.isnan(x)]
    return statistics.median(xs) if xs else float("nan")


def wait_for(cond: Callable[[], bool], timeout: float, what: str, step: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(step)


def http(url: str, body: Any = None, timeout: float = 5.0) -> tuple[int, str]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="GET" if body is None else "POST")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def git_commit() -> dict[str, Any]:
    def git(*args: str) -> str:
        try:
            done = subprocess.run(
                ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return done.stdout.strip() if done.returncode == 0 else ""

    return {
        "commit": git("rev-parse", "HEAD"),
        "edge_dirty": bool(git("status", "--porcelain", "--", "edge")),
    }


# ---------------------------------------------------------------------- processes


class Procs:
    """Every child of the bench, each in its own process group; ``stop_all`` ends them all."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[Any]] = []

    def spawn(self, argv: list[str], **kw: Any) -> subprocess.Popen[Any]:
        proc = subprocess.Popen(argv, start_new_session=True, **kw)
        self.procs.append(proc)
        return proc

    @staticmethod
    def stop(proc: subprocess.Popen[Any], timeout: float = 15.0) -> int | None:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout)
        # whatever the leader left behind in its group goes too
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)
        return proc.returncode

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            self.stop(proc, timeout=5.0)
        self.procs.clear()


class LineChild:
    """A child of this file (``--child server``) that answers one JSON line per command."""

    def __init__(self, procs: Procs, role: str, *args: str) -> None:
        self.role = role
        self.proc = procs.spawn(
            [sys.executable, str(Path(__file__).resolve()), "--child", role, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=child_env(ROOT),
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, name=f"{role}-reader", daemon=True).start()
        self.hello = self.read(60)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def read(self, timeout: float) -> dict[str, Any]:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"the {self.role} process did not answer in {timeout:g} s") from None
        if line is None:
            raise RuntimeError(f"the {self.role} process exited (rc={self.proc.poll()})")
        msg: dict[str, Any] = json.loads(line)
        if "error" in msg:
            raise RuntimeError(f"{self.role} process: {msg['error']}")
        return msg

    def request(self, cmd: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        return self.read(timeout)


# ---------------------------------------------------------------------- the subscriber


class Subscriber:
    """A plain paho MQTT 5 client in its own thread: receipt time and payload, nothing else."""

    def __init__(self, host: str, port: int, topics: list[str]) -> None:
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        self.topics = topics
        self.received: list[tuple[int, str, bytes]] = []  # (monotonic_ns, topic, payload)
        self._subscribed = threading.Event()
        c = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"bench-e2e-sub-{uuid.uuid4().hex[:8]}",
            protocol=paho.MQTTv5,
        )
        c.on_connect = lambda client, *_: client.subscribe([(t, 1) for t in self.topics])
        c.on_subscribe = lambda *_: self._subscribed.set()
        c.on_message = self._on_message
        c.max_inflight_messages_set(100)
        self.client = c
        c.connect(host, port)
        c.loop_start()
        if not self._subscribed.wait(10):
            self.stop()
            raise TimeoutError("the subscriber got no SUBACK")

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        self.received.append((time.monotonic_ns(), msg.topic, msg.payload))

    def mark(self) -> int:
        return len(self.received)

    def since(self, mark: int, topic: str) -> list[tuple[int, bytes]]:
        return [(t, p) for t, tp, p in self.received[mark:] if tp == topic]

    def last(self, mark: int, topic: str) -> bytes | None:
        """The newest payload on ``topic`` since ``mark`` (searched from the end: cheap)."""
        for i in range(len(self.received) - 1, mark - 1, -1):
            if self.received[i][1] == topic:
                return self.received[i][2]
        return None

    def publish(self, topic: str, payload: bytes) -> None:
        info = self.client.publish(topic, payload, qos=1)
        info.wait_for_publish(10)
        if not info.is_published():
            raise TimeoutError(f"no PUBACK for {topic}")

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.client.disconnect()
        self.client.loop_stop()


# ---------------------------------------------------------------------- the peers


@dataclass
class Context:
    procs: Procs
    tmp: Path
    sub: Subscriber
    broker_port: int
    endpoint: str
    node: str
    nodered_red: Path | None = None


class Peer(abc.ABC):
    """One way from the OPC UA server to the subscriber, started fresh for each phase."""

    name = ""

    def __init__(self, ctx: Context, workdir: Path) -> None:
        self.ctx = ctx
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.log = workdir / f"{self.name}.log"
        self.proc: subprocess.Popen[Any] | None = None
        self.base = 0

    @property
    def topic(self) -> str:
        return TOPIC[self.name]

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def value(self, payload: bytes) -> int:
        return int(json.loads(payload)["value"])

    @abc.abstractmethod
    def start(self, base: int, mark: int) -> None:
        """Start the peer's process for a phase whose counter starts at ``base``."""

    def alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(
                f"{self.name} exited (rc={self.proc.returncode}); its log:\n{tail(self.log)}"
            )

    def wait_value(self, mark: int, value: int, timeout: float) -> None:
        """Until the subscriber got a message of this peer carrying ``value`` (or more)."""

        def seen() -> bool:
            self.alive()
            return any(self.value(p) >= value for _, p in self.ctx.sub.since(mark, self.topic))

        wait_for(seen, timeout, f"{self.name}'s first message (value {value})")

    def extras(self) -> dict[str, Any]:
        return {}

    def stop(self) -> None:
        if self.proc is not None:
            self.ctx.procs.stop(self.proc)


class Ours(Peer):
    name = "ours"
    extra_toml = ""  # appended to the config (a variant's own settings, e.g. bench/wear.py's)
    publishing_ms = PUBLISHING_MS
    # Every value, as the naive script and Node-RED send it (the shipped default, 1 s, holds
    # a fast counter's values to one a second: bench/wear.py measures what that saves)
    historian_s = 0.0

    def start(self, base: int, mark: int) -> None:
        self.base = base
        self.panel_port = free_port()
        self.url = f"http://127.0.0.1:{self.panel_port}"
        cfg = self.workdir / "edge.toml"
        cfg.write_text(
            GATEWAY_TOML.format(
                edge_id=EDGE_ID,
                work_center=WORK_CENTER,
                db=self.workdir / "edge.db",
                mqtt_port=self.ctx.broker_port,
                panel_port=self.panel_port,
                link=LINK,
                endpoint=self.ctx.endpoint,
                node=self.ctx.node,
                publishing_ms=self.publishing_ms,
                historian_s=self.historian_s,
            )
            + self.extra_toml
        )
        edge = Path(sys.executable).with_name("edge")
        argv = [str(edge)] if edge.exists() else [sys.executable, "-m", "edge"]
        with self.log.open("ab") as log:
            self.proc = self.ctx.procs.spawn(
                [*argv, "run", "--config", str(cfg)],
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=child_env(ROOT),
            )

        def up() -> bool:
            self.alive()
            try:
                status, text = http(self.url + "/metrics", timeout=2)
            except OSError:
                return False
            return (
                status == 200
                and "edge_mqtt_connected 1" in text
                and f'edge_link_up{{link="opcua:{LINK}"}} 1' in text
            )

        wait_for(up, 60, "edge run: panel up, MQTT connected, OPC UA link up", step=0.1)
        self.dispatch(mark)
        status, text = http(
            self.url + "/api/commands/start-production",
            {"command_id": str(uuid.uuid4()), "op": "/".join(OP)},
            timeout=10,
        )
        if status != 200:
            raise RuntimeError(f"start-production answered {status}: {text[:500]}")
        # The commit that started it publishes good = 0: the pipeline is there end to end.
        self.wait_value(mark, base, 20)

    def dispatch(self, mark: int) -> None:
        """The dispatch list on the downlink topic, as central sends it; resent (same msg_id,
        which the gateway applies once) until the gateway says it applied it."""
        message = {
            "schema": "mes.dispatch/1",
            "msg_id": str(uuid.uuid4()),
            "ts_ms": time.time_ns() // 1_000_000,
            "body": {
                "version": 1,
                "operations": [
                    {
                        "order_id": OP[0],
                        "operation": OP[1],
                        "split": 0,
                        "material": "FG-BENCH",
                        "material_text": "benchmark part",
                        "quantity": 1_000_000_000,
                        "unit": "PC",
                        "sequence": 1,
                    }
                ],
            },
        }
        payload = json.dumps(message).encode()
        for _ in range(5):
            self.ctx.sub.publish(DISPATCH_TOPIC, payload)
            with contextlib.suppress(TimeoutError):
                wait_for(
                    lambda: bool(self.ctx.sub.since(mark, RECEIVED_TOPIC)), 3, "order/received"
                )
                return
            self.alive()
        raise TimeoutError("the gateway never applied the dispatch list (no order/received)")

    def value(self, payload: bytes) -> int:
        return self.base + int(json.loads(payload)["value"])

    def extras(self) -> dict[str, Any]:
        out: dict[str, Any] = {"connects": None, "source_errors": None}
        with contextlib.suppress(OSError):
            status, text = http(self.url + "/metrics", timeout=5)
            if status == 200:
                for key, name in (
                    ("connects", "edge_source_connects_total"),
                    ("source_errors", "edge_source_errors_total"),
                ):
                    m = re.search(rf'^{name}{{link="opcua:{LINK}"}} (\d+)', text, re.M)
                    if m:
                        out[key] = int(m.group(1))
        reasons: dict[str, int] = {}
        warnings = 0
        said: dict[str, int] = {}
        with contextlib.suppress(OSError):
            for line in self.log.read_text(errors="replace").splitlines():
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if not isinstance(rec, dict):
                    continue
                if rec.get("level") in ("warning", "error", "critical"):
                    warnings += 1
                    what = f"{rec.get('level')}: {rec.get('event')}"
                    said[what] = said.get(what, 0) + 1
                if rec.get("event") == "opc ua source unavailable; retrying":
                    reason = str(rec.get("reason"))
                    reasons[reason] = reasons.get(reason, 0) + 1
        out["log_warnings"] = warnings
        out["log_said"] = said
        out["unavailable_reasons"] = reasons
        return out


class Naive(Peer):
    name = "naive"

    def start(self, base: int, mark: int) -> None:
        with self.log.open("ab") as log:
            self.proc = self.ctx.procs.spawn(
                [
                    sys.executable,
                    str(Path(__file__).resolve()),
                    "--child",
                    "naive",
                    "--endpoint",
                    self.ctx.endpoint,
                    "--node",
                    self.ctx.node,
                    "--mqtt-port",
                    str(self.ctx.broker_port),
                    "--topic",
                    self.topic,
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=child_env(ROOT),
            )
        self.wait_value(mark, base, 30)  # the subscription's initial value went through


class NodeRed(Peer):
    name = "nodered"

    def start(self, base: int, mark: int) -> None:
        red = self.ctx.nodered_red
        if red is None:
            raise Unavailable("Node-RED is not installed")
        user = self.workdir / "userdir"
        user.mkdir(parents=True, exist_ok=True)
        flows = json.loads((NODERED_TEMPLATE / "flows.json").read_text())
        for n in flows:
            if n["type"] == "OpcUa-Endpoint":
                n["endpoint"] = self.ctx.endpoint
            elif n["type"] == "mqtt-broker":
                n["port"] = str(self.ctx.broker_port)
            elif n["type"] == "inject":
                n["topic"] = self.ctx.node
            elif n["type"] == "OpcUa-Client":
                n["time"], n["timeUnit"] = PUBLISHING_MS, "ms"
            elif n["type"] == "mqtt out":
                n["topic"] = self.topic
        (user / "flows.json").write_text(json.dumps(flows, indent=1))
        settings = user / "settings.js"
        settings.write_text(
            NODERED_SETTINGS.format(port=free_port(), user_dir=json.dumps(str(user)))
        )
        node = shutil.which("node") or "node"
        with self.log.open("ab") as log:
            self.proc = self.ctx.procs.spawn(
                [node, str(red), "--settings", str(settings), "--userDir", str(user)],
                cwd=user,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                # node-red-contrib-opcua keeps its client certificate under XDG_CONFIG_HOME:
                # made once, in the install directory, not in the user's home.
                env={**os.environ, "XDG_CONFIG_HOME": str(red.parents[2] / "xdg")},
            )
        self.wait_value(mark, base, 90)  # the first start makes the OPC UA certificate


PEER_CLASSES: dict[str, type[Peer]] = {"ours": Ours, "naive": Naive, "nodered": NodeRed}


# ---------------------------------------------------------------------- Node-RED install


def nodered_install(directory: Path = NODERED_DIR, timeout: float = 600.0) -> dict[str, Any]:
    """Node-RED and node-red-contrib-opcua in ``directory`` (npm, once; cached there).

    Raises :class:`Unavailable` with the reason when node or npm is missing or npm fails.
    """
    done = npm_install(
        directory,
        (NODERED_TEMPLATE / "package.json").read_text(),
        ("node-red", "node-red-contrib-opcua", "node-opcua", "mqtt"),
        what="Node-RED 4",
        min_node=18,
        timeout=timeout,
    )
    return {
        "red": done.module("node-red") / "red.js",
        "node": done.node_version,
        **done.versions,
        "install_s": done.install_s,
    }


# ---------------------------------------------------------------------- one phase


def thread_ticks(pid: int) -> tuple[int, int] | None:
    """(main thread's user + system, every thread's system) clock ticks of ``pid`` so far;
    None when it is gone. The main thread's id is the process's."""
    try:
        with open(f"/proc/{pid}/task/{pid}/stat") as f:
            main = f.read().rsplit(")", 1)[1].split()
        with open(f"/proc/{pid}/stat") as f:
            every = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(main[11]) + int(main[12]), int(every[12])


@dataclass
class Phase:
    """One peer at one rate in one run."""

    peer: str
    rate: float
    run: int
    made: int = 0
    delivered: bool = False
    lost: int = 0
    messages: int = 0  # messages of this peer at the subscriber from the first write on
    wrong: int = 0  # messages with a value not written yet, or past the last: a miscount
    p50_ms: float = float("nan")
    p90_ms: float = float("nan")
    p99_ms: float = float("nan")
    p999_ms: float = float("nan")
    max_ms: float = float("nan")
    cpu_pct: float = float("nan")
    rss_end_mb: float = float("nan")
    rss_peak_mb: float = float("nan")
    window_s: float = 0.0
    server_late_p99_ms: float = float("nan")  # the server's pacing: write time - its deadline
    server_late_max_ms: float = float("nan")
    server_late_10ms: int = 0  # writes more than 10 ms after their deadline
    server_late_at: list[Any] = field(default_factory=list)  # (index, ms late), the first 200
    server_cpu_pct: float = float("nan")  # the OPC UA server process over the window (context)
    # The peer's own process over the window (not its children): its main thread (the event
    # loop of ours and of the naive script) and the kernel's part of all its threads (fsyncs,
    # socket sends), both in % of a core; the rest of cpu_pct is its other threads.
    main_thread_cpu_pct: float = float("nan")
    system_cpu_pct: float = float("nan")
    server_gc_max_ms: float = float("nan")  # its longest garbage collection in the window
    reconnects: int | None = None  # ours only: OPC UA connects - 1
    extras: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    skipped: str | None = None


def run_phase(
    ctx: Context,
    server: LineChild,
    peer_name: str,
    rate: float,
    seconds: float,
    run: int,
    seed: int,
    profile: Path | None = None,
) -> Phase:
    phase = Phase(peer_name, rate, run)
    workdir = ctx.tmp / f"run{run}-{rate:g}-{peer_name}{'-profile' if profile else ''}"
    peer = PEER_CLASSES[peer_name](ctx, workdir)
    spy: subprocess.Popen[Any] | None = None
    try:
        base = int(server.request({"cmd": "value"})["value"])
        mark = ctx.sub.mark()
        peer.start(base, mark)
        time.sleep(SETTLE_S)
        peer.alive()
        if profile is not None:
            spy = start_py_spy(ctx, peer.pid, profile / f"ours-{rate:g}.svg", seconds)
        write_mark = ctx.sub.mark()
        t0 = thread_ticks(peer.pid)
        c0, s0, w0 = tree_cpu_s(peer.pid), tree_cpu_s(server.proc.pid), time.monotonic()
        w = server.request(
            {"cmd": "writes", "rate": rate, "seconds": seconds, "seed": seed}, seconds + 60
        )
        c1, s1, w1 = tree_cpu_s(peer.pid), tree_cpu_s(server.proc.pid), time.monotonic()
        t1 = thread_ticks(peer.pid)
        phase.rss_end_mb = tree_mem_mb(peer.pid)[0]
        first, t_ns = int(w["first"]), [int(t) for t in w["t_ns"]]
        last = first + len(t_ns) - 1
        cutoff = t_ns[-1] + int(DRAIN_S * 1e9)

        def done() -> bool:
            peer.alive()
            newest = ctx.sub.last(write_mark, peer.topic)
            return newest is not None and peer.value(newest) >= last

        with contextlib.suppress(TimeoutError):
            wait_for(done, DRAIN_S, f"{peer_name}'s last value", step=0.01)
        phase.rss_peak_mb = tree_mem_mb(peer.pid)[1]
        phase.extras = peer.extras()
        records = [
            (t, peer.value(p)) for t, p in ctx.sub.since(write_mark, peer.topic) if t <= cutoff
        ]
        seen = covered_at(records, first, len(t_ns))
        lat = sorted((a - t) / 1e6 for t, a in zip(t_ns, seen, strict=True) if a is not None)
        phase.made = len(t_ns)
        phase.lost = sum(1 for a in seen if a is None)
        phase.delivered = seen[-1] is not None
        phase.messages = len(records)
        # A message may only carry what was written by then (and never more than the last).
        phase.wrong = sum(
            1 for t, v in records if v > last or (first <= v and t < t_ns[min(v, last) - first])
        )
        phase.p50_ms, phase.p90_ms, phase.p99_ms, phase.p999_ms, phase.max_ms = (
            pct(lat, q) for q in (0.5, 0.9, 0.99, 0.999, 1.0)
        )
        phase.window_s = w1 - w0
        phase.cpu_pct = 100 * (c1 - c0) / (w1 - w0)
        phase.server_cpu_pct = 100 * (s1 - s0) / (w1 - w0)
        if t0 is not None and t1 is not None:
            phase.main_thread_cpu_pct = 100 * (t1[0] - t0[0]) / CLK_TCK / (w1 - w0)
            phase.system_cpu_pct = 100 * (t1[1] - t0[1]) / CLK_TCK / (w1 - w0)
        phase.server_late_p99_ms = float(w["late_p99_ms"])
        phase.server_late_max_ms = float(w["late_max_ms"])
        phase.server_late_10ms = int(w["late_10ms"])
        phase.server_late_at = w["late_at"]
        phase.server_gc_max_ms = float(w["gc_max_ms"])
        connects = phase.extras.get("connects")
        if isinstance(connects, int):
            phase.reconnects = max(0, connects - 1)
    except Unavailable as exc:
        phase.skipped = str(exc)
    except Exception as exc:
        phase.error = f"{type(exc).__name__}: {exc}"
        print(f"  {peer_name} at {rate:g}/s failed: {phase.error}", flush=True)
        log = tail(peer.log)
        if log:
            print("  its log ends:\n    " + log.replace("\n", "\n    "), flush=True)
    finally:
        if spy is not None:
            finish_py_spy(ctx, spy)
        peer.stop()
    return phase


def start_py_spy(ctx: Context, pid: int, out: Path, seconds: float) -> subprocess.Popen[Any]:
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    out.parent.mkdir(parents=True, exist_ok=True)
    return ctx.procs.spawn(
        [spy, "record", "--pid", str(pid), "--duration", str(math.ceil(seconds) + 1), "-o",
         str(out), "--nonblocking"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip


def finish_py_spy(ctx: Context, spy: subprocess.Popen[Any]) -> None:
    try:
        spy.wait(30)
    except subprocess.TimeoutExpired:
        ctx.procs.stop(spy)
    if spy.returncode:
        err = spy.stderr.read().decode(errors="replace") if spy.stderr else ""
        print(f"  py-spy failed (rc={spy.returncode}): {err[-400:]}", flush=True)


# ---------------------------------------------------------------------- the uplink drain


def uplink_drain(procs: Procs, backlog: int, timeout: float = 600.0) -> dict[str, Any]:
    """``bench/uplink.py``'s backlog drain (b), one run, as a subprocess; its table parsed."""
    argv = [sys.executable, str(BENCH / "uplink.py"), "--runs", "0", "--backlog", str(backlog)]
    argv += ["--backlog-runs", "1"]
    out: dict[str, Any] = {"backlog": backlog}
    proc = procs.spawn(
        argv,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(ROOT),
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        out["error"] = f"bench/uplink.py took longer than {timeout:g} s"
        return out
    finally:
        if proc.poll() is None:
            # Ctrl-C is what makes it stop its own broker (a process of its own) on the way out
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(20)
            procs.stop(proc)
    out["output"] = stdout
    if proc.returncode != 0:
        out["error"] = f"bench/uplink.py exited {proc.returncode}: {stderr[-800:]}"
        return out
    row = r"\|\s*{}\s*\|\s*([\d,.]+)\s*\|\s*(\d+)\s*\|\s*(\d+)\s*\|\s*(\S+)\s*\|"
    for key, title in (("gateway", "gateway outbox -> subscriber"), ("naive", "naive paho burst")):
        m = re.search(row.format(re.escape(title) + r"[^|]*"), stdout)
        if m:
            out[key] = {
                "msg_per_s": float(m.group(1).replace(",", "")),
                "lost": int(m.group(2)),
                "dup": int(m.group(3)),
                "order": m.group(4),
            }
    if "gateway" in out and "naive" in out:
        out["ratio"] = out["gateway"]["msg_per_s"] / out["naive"]["msg_per_s"]
    else:
        out["error"] = "could not read bench/uplink.py's table"
    return out


# ---------------------------------------------------------------------- the report


def table(header: list[tuple[str, int]], rows: list[list[str]], left: int = 2) -> None:
    print("| " + " | ".join(f"{t:<{w}}" for t, w in header) + " |")
    print("|" + "|".join("-" * (w + 2) for _, w in header) + "|")
    for row in rows:
        cells = [
            f"{c:<{w}}" if i < left else f"{c:>{w}}"
            for i, (c, (_, w)) in enumerate(zip(row, header, strict=True))
        ]
        print("| " + " | ".join(cells) + " |")


def fmt(x: float, digits: int = 2) -> str:
    return "-" if x is None or math.isnan(x) else f"{x:,.{digits}f}"


def ratio(a: float, b: float) -> str:
    if a is None or b is None or math.isnan(a) or math.isnan(b) or b <= 0:
        return "-"
    return f"{a / b:.1f}x"


def summarize(phases: list[Phase]) -> dict[str, Any]:
    ok = [p for p in phases if p.error is None and p.skipped is None]
    s: dict[str, Any] = {
        "runs": len(phases),
        "measured": len(ok),
        "delivered_all": bool(ok) and len(ok) == len(phases) and all(p.delivered for p in ok),
        "delivered_runs": sum(1 for p in ok if p.delivered),
        "lost": sum(p.lost for p in ok),
        "made": sum(p.made for p in ok),
        "messages": sum(p.messages for p in ok),
        "wrong": sum(p.wrong for p in ok),
        "errors": [p.error for p in phases if p.error],
        "skipped": next((p.skipped for p in phases if p.skipped), None),
    }
    for key in (
        "p50_ms",
        "p99_ms",
        "max_ms",
        "cpu_pct",
        "rss_peak_mb",
        "rss_end_mb",
        "server_cpu_pct",
        "server_late_p99_ms",
        "main_thread_cpu_pct",
        "system_cpu_pct",
    ):
        s[key] = med([getattr(p, key) for p in ok])
    recon = [p.reconnects for p in ok if p.reconnects is not None]
    s["reconnects"] = sum(recon) if recon else None
    return s


def per_run_line(p: Phase) -> str:
    if p.skipped:
        return f"run {p.run + 1} {p.rate:6g}/s {p.peer:8} skipped: {p.skipped}"
    if p.error:
        return f"run {p.run + 1} {p.rate:6g}/s {p.peer:8} FAILED: {p.error}"
    line = (
        f"run {p.run + 1} {p.rate:6g}/s {p.peer:8} p50/p99/max {fmt(p.p50_ms)}/{fmt(p.p99_ms)}/"
        f"{fmt(p.max_ms)} ms, delivered {'yes' if p.delivered else 'NO'}, lost {p.lost} of"
        f" {p.made}, {p.messages} msgs{f' ({p.wrong} WRONG)' if p.wrong else ''},"
        f" CPU {fmt(p.cpu_pct, 1)} % (main thread {fmt(p.main_thread_cpu_pct, 1)}, system"
        f" {fmt(p.system_cpu_pct, 1)}), RSS {fmt(p.rss_end_mb, 1)}"
        f" MB (peak {fmt(p.rss_peak_mb, 1)}); server CPU {fmt(p.server_cpu_pct, 1)} %, its"
        f" pacing late p99 {fmt(p.server_late_p99_ms)} ms"
        + (f" ({p.server_late_10ms} writes > 10 ms late)" if p.server_late_10ms else "")
    )
    if p.peer == "ours":
        line += f", OPC UA reconnects {p.reconnects if p.reconnects is not None else '?'}"
        reasons = p.extras.get("unavailable_reasons") or {}
        if reasons:
            line += " (" + "; ".join(f"{n}x {r}" for r, n in reasons.items()) + ")"
    return line


def report(
    phases: list[Phase],
    rates: list[float],
    peers: list[str],
    seconds: float,
    uplink: dict[str, Any] | None,
) -> dict[str, Any]:
    runs = max((p.run for p in phases), default=-1) + 1
    summary: dict[str, Any] = {}
    print()
    print(
        f"end to end: OPC UA server write -> MQTT subscriber, {seconds:g} s per rate and peer,"
        f" publishing interval {PUBLISHING_MS:g} ms, {runs} run(s): medians of the runs"
        " (lost, messages, reconnects: sums)"
    )
    rows: list[list[str]] = []
    for rate in rates:
        for peer in peers:
            s = summarize([p for p in phases if p.rate == rate and p.peer == peer])
            summary[f"{rate:g}/{peer}"] = s
            if s["skipped"] and not s["measured"]:
                rows.append([f"{rate:g}", PEER_TITLE[peer], "skipped", *[""] * 9])
                continue
            delivered = "yes" if s["delivered_all"] else f"NO ({s['delivered_runs']}/{s['runs']})"
            rows.append(
                [
                    f"{rate:g}",
                    PEER_TITLE[peer],
                    delivered,
                    f"{s['lost']}",
                    fmt(s["p50_ms"]),
                    fmt(s["p99_ms"]),
                    fmt(s["max_ms"]),
                    fmt(s["cpu_pct"], 1),
                    fmt(s["rss_peak_mb"], 1),
                    fmt(s["rss_end_mb"], 1),
                    f"{s['messages']:,}",
                    "-" if s["reconnects"] is None else str(s["reconnects"]),
                ]
            )
        ours = summary.get(f"{rate:g}/ours")
        for other in ("naive", "nodered"):
            o = summary.get(f"{rate:g}/{other}")
            if ours is None or o is None or other not in peers or not o["measured"]:
                continue
            rows.append(
                [
                    f"{rate:g}",
                    f"ratio ours / {'naive' if other == 'naive' else 'Node-RED'}",
                    "",
                    "",
                    ratio(ours["p50_ms"], o["p50_ms"]),
                    ratio(ours["p99_ms"], o["p99_ms"]),
                    ratio(ours["max_ms"], o["max_ms"]),
                    ratio(ours["cpu_pct"], o["cpu_pct"]),
                    ratio(ours["rss_peak_mb"], o["rss_peak_mb"]),
                    ratio(ours["rss_end_mb"], o["rss_end_mb"]),
                    "",
                    "",
                ]
            )
    table(
        [
            ("rate/s", 6),
            ("peer", 22),
            ("delivered", 9),
            ("lost", 4),
            ("p50 ms", 6),
            ("p99 ms", 7),
            ("max ms", 8),
            ("CPU %", 5),
            ("RSS peak MB", 11),
            ("RSS end MB", 10),
            ("messages", 9),
            ("OPC UA reconnects", 17),
        ],
        rows,
        left=2,
    )
    print(
        "CPU: the peer's process tree over the write window, one core = 100 %; RSS: the tree's"
        " (peak: VmHWM, start-up included); messages: at the subscriber, all runs;"
        " reconnects: our gateway's OPC UA session (edge_source_connects_total - 1)"
    )
    bad = [
        k
        for k, s in summary.items()
        if s["measured"] and (s["lost"] or s["wrong"] or not s["delivered_all"])
    ]
    print(
        "every peer delivered its last value, no value lost, none ahead of the writes: "
        + ("yes" if not bad else "NO: " + ", ".join(bad))
    )
    if uplink is not None:
        print()
        if "ratio" in uplink:
            g, n = uplink["gateway"], uplink["naive"]
            print(
                f"uplink backlog drain (bench/uplink.py, {uplink['backlog']:,} messages, QoS 1):"
                f" gateway {g['msg_per_s']:,.0f} msg/s (lost {g['lost']}, dup {g['dup']},"
                f" order {g['order']}), naive paho burst {n['msg_per_s']:,.0f} msg/s"
                f" (lost {n['lost']}): ratio ours / naive {uplink['ratio']:.2f}x"
            )
        else:
            print(f"uplink backlog drain: {uplink.get('error')}")
    return summary


# ---------------------------------------------------------------------- child processes


def server_main() -> None:
    """``--child server``: bench/opcua.py's BenchServer, writes placed at random in their slot."""
    import asyncio
    import gc
    import importlib.util
    import logging

    spec = importlib.util.spec_from_file_location("bench_opcua", BENCH / "opcua.py")
    assert spec is not None
    assert spec.loader is not None
    opcua = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = opcua
    spec.loader.exec_module(opcua)

    gc_pauses: list[tuple[int, float]] = []  # (generation, ms) of each collection (a check)
    gc_started = [0]

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            gc_started[0] = time.perf_counter_ns()
        else:
            gc_pauses.append((info["generation"], (time.perf_counter_ns() - gc_started[0]) / 1e6))

    gc.callbacks.append(on_gc)

    class E2EServer(opcua.BenchServer):  # type: ignore[misc, name-defined]
        def hello(self) -> dict[str, Any]:
            return {"endpoint": f"opc.tcp://127.0.0.1:{self.port}", "node": self.hello_node()}

        def hello_node(self) -> str:
            return str(self.node_ids[0].to_string())

        async def cmd_value(self) -> dict[str, Any]:
            return {"value": self.values[0]}

        async def cmd_writes(self, rate: float, seconds: float, seed: int) -> dict[str, Any]:
            """``rate * seconds`` writes of +1, write i at a random point of slot i.

            The server stands in for a PLC, which does not stop: its collector is off while it
            writes. (A full collection of its heap took ~140 ms here, a stall every peer would
            see as its own latency.) What it frees by reference counting is freed as usual.
            """
            gc.collect()
            gc.freeze()
            gc.disable()
            try:
                return await self._writes(rate, seconds, seed)
            finally:
                gc.enable()

        async def _writes(self, rate: float, seconds: float, seed: int) -> dict[str, Any]:
            n = max(1, round(rate * seconds))
            period_ns = 1e9 / rate
            rng = random.Random(seed)
            first = self.values[0] + 1
            gc_pauses.clear()
            t_ns: list[int] = []
            late_ms: list[float] = []
            t0 = time.monotonic_ns() + 20_000_000
            for i in range(n):
                deadline = t0 + int((i + rng.random()) * period_ns)
                delay = deadline - time.monotonic_ns()
                if delay > 0:
                    await asyncio.sleep(delay / 1e9)
                else:
                    await asyncio.sleep(0)  # let the server answer publish requests when behind
                t = time.monotonic_ns()
                await self._write(0)
                t_ns.append(t)
                late_ms.append((t - deadline) / 1e6)
            late_at = [(i, round(x, 2)) for i, x in enumerate(late_ms) if x > 10][:200]
            late_ms.sort()
            return {
                "first": first,
                "t_ns": t_ns,
                "late_p99_ms": pct(late_ms, 0.99),
                "late_max_ms": pct(late_ms, 1.0),
                "late_10ms": sum(1 for x in late_ms if x > 10),
                "late_at": late_at,
                "gc_max_ms": max((ms for _, ms in gc_pauses), default=0.0),
                "gc_over_10ms": [(g, round(ms, 1)) for g, ms in gc_pauses if ms > 10][:50],
            }

    async def main() -> None:
        logging.basicConfig(level=logging.WARNING)
        logging.getLogger("asyncua").setLevel(logging.ERROR)
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=1 << 20)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

        def reply(msg: dict[str, Any]) -> None:
            sys.stdout.write(json.dumps(msg) + "\n")
            sys.stdout.flush()

        try:
            server = E2EServer(1)
            await server.__aenter__()
        except Exception as exc:
            reply({"error": repr(exc)})
            return
        try:
            reply(server.hello())
            while line := await reader.readline():
                cmd = json.loads(line)
                try:
                    reply(await getattr(server, "cmd_" + cmd.pop("cmd"))(**cmd))
                except Exception as exc:
                    reply({"error": repr(exc)})
        finally:
            await server.__aexit__(None, None, None)

    asyncio.run(main())


def naive_main(endpoint: str, node_id: str, mqtt_port: int, topic: str) -> None:
    """``--child naive``: what a plant engineer writes. asyncua and paho, nothing else."""
    import asyncio

    import paho.mqtt.client as mqtt
    from asyncua import Client

    parent = os.getppid()
    mq = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    mq.connect("127.0.0.1", mqtt_port)
    mq.loop_start()

    class Handler:
        def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
            mq.publish(topic, json.dumps({"value": val}), qos=1)

    async def main() -> None:
        async with Client(endpoint) as client:
            sub = await client.create_subscription(PUBLISHING_MS, Handler())
            await sub.subscribe_data_change(client.get_node(node_id))
            while os.getppid() == parent:  # (the bench's own addition: never outlive it)
                await asyncio.sleep(1)

    asyncio.run(main())


# ---------------------------------------------------------------------- main


@contextlib.contextmanager
def terminated_as_exit() -> Iterator[None]:
    """SIGTERM (and SIGHUP) end the bench through its ``finally`` blocks, like Ctrl-C."""

    def handler(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


@contextlib.contextmanager
def workspace(keep: Path | None) -> Iterator[Path]:
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        yield keep.resolve()
        return
    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as tmp:
        yield Path(tmp)


def jsonable(x: Any) -> Any:
    """NaN (nothing measured) as null: the file stays standard JSON."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [jsonable(v) for v in x]
    return x


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="100,1000", help="changes/s, comma-separated")
    parser.add_argument("--seconds", type=float, default=60.0, help="per rate, peer and run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--peers", default=",".join(PEERS), help="of ours,naive,nodered")
    parser.add_argument("--json", type=Path, help="write every number here")
    parser.add_argument(
        "--profile",
        type=Path,
        help="after the runs, one more phase of our gateway per rate under py-spy (flame "
        "graphs DIR/ours-<rate>.svg; not in the tables)",
    )
    parser.add_argument(
        "--uplink-backlog",
        type=int,
        default=20_000,
        help="messages in bench/uplink.py's backlog drain (0: skip it)",
    )
    parser.add_argument(
        "--workdir", type=Path, help="keep the peers' logs, configs and databases here"
    )
    parser.add_argument("--nodered-dir", type=Path, default=NODERED_DIR, help=argparse.SUPPRESS)
    parser.add_argument("--child", choices=("server", "naive"), help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", help=argparse.SUPPRESS)
    parser.add_argument("--node", help=argparse.SUPPRESS)
    parser.add_argument("--mqtt-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--topic", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "server":
        server_main()
        return 0
    if args.child == "naive":
        naive_main(args.endpoint, args.node, args.mqtt_port, args.topic)
        return 0

    rates = [float(r) for r in args.rates.split(",") if r.strip()]
    peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    unknown = [p for p in peers if p not in PEERS]
    if unknown or not peers or not rates or args.runs < 1 or args.seconds <= 0:
        parser.error(f"bad --peers/--rates/--runs/--seconds (unknown peers: {unknown})")
    profile = args.profile
    if profile is not None and not (
        shutil.which("py-spy") or Path(sys.executable).with_name("py-spy").exists()
    ):
        print("--profile: py-spy is not installed (pip install py-spy); no profile taken")
        profile = None

    from simulators.broker import Mosquitto, find_mosquitto

    find_mosquitto()  # says how to install it when it is missing
    meta: dict[str, Any] = {
        **git_commit(),
        "rates": rates,
        "seconds": args.seconds,
        "runs": args.runs,
        "peers": peers,
        "publishing_interval_ms": PUBLISHING_MS,
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
    }
    phases: list[Phase] = []
    uplink: dict[str, Any] | None = None
    procs = Procs()
    red: Path | None = None
    if "nodered" in peers:
        try:
            info = nodered_install(args.nodered_dir)
            red = info.pop("red")
            meta["nodered"] = info
            print(
                f"Node-RED {info['node-red']}, node-red-contrib-opcua"
                f" {info['node-red-contrib-opcua']} (node-opcua {info['node-opcua']}, mqtt.js"
                f" {info['mqtt']}) on node {info['node']}"
                + (f"; npm install took {info['install_s']:.0f} s" if info["install_s"] else ""),
                flush=True,
            )
        except Unavailable as exc:
            meta["nodered"] = {"unavailable": str(exc)}
            print(f"Node-RED skipped: {exc}", flush=True)
    dirty = " (edge/ has uncommitted changes)" if meta["edge_dirty"] else ""
    print(
        f"commit {meta['commit'][:12]}{dirty}"
        f"; rates {', '.join(f'{r:g}' for r in rates)}/s, {args.seconds:g} s each, {args.runs}"
        f" run(s), peers {', '.join(peers)}",
        flush=True,
    )
    with terminated_as_exit(), workspace(args.workdir) as tmp:
        broker = Mosquitto(tmp / "broker")
        sub: Subscriber | None = None
        try:
            broker.start()
            server = LineChild(procs, "server")
            sub = Subscriber(broker.host, broker.port, [*TOPIC.values(), RECEIVED_TOPIC])
            ctx = Context(
                procs, tmp, sub, broker.port, server.hello["endpoint"], server.hello["node"], red
            )
            for run in range(args.runs):
                for rate in rates:
                    seed = run * 1_000_003 + int(rate)
                    for peer in peers:
                        p = run_phase(ctx, server, peer, rate, args.seconds, run, seed)
                        phases.append(p)
                        print(per_run_line(p), flush=True)
            if profile is not None and "ours" in peers:
                for rate in rates:
                    p = run_phase(ctx, server, "ours", rate, args.seconds, args.runs, 7, profile)
                    print(f"profiled (not in the tables): {per_run_line(p)}", flush=True)
                    print(f"  flame graph: {profile / f'ours-{rate:g}.svg'}", flush=True)
        finally:
            if sub is not None:
                sub.stop()
            procs.stop_all()
            broker.stop()
        if args.uplink_backlog > 0:
            print(f"uplink backlog drain, {args.uplink_backlog:,} messages ...", flush=True)
            try:
                uplink = uplink_drain(procs, args.uplink_backlog)
            finally:
                procs.stop_all()
    summary = report(phases, rates, peers, args.seconds, uplink)
    if args.json is not None:
        if uplink is not None:
            uplink.pop("output", None)
        args.json.write_text(
            json.dumps(
                jsonable(
                    {
                        "meta": meta,
                        "summary": summary,
                        "phases": [asdict(p) for p in phases],
                        "uplink": uplink,
                    }
                ),
                indent=1,
                default=str,
            )
        )
    return 1 if any(p.error for p in phases) else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; every child process was stopped", file=sys.stderr)
        sys.exit(130)
