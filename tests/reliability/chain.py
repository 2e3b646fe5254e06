"""The whole chain, each part its own process on free loopback ports: the OPC UA machine
simulator, mosquitto, the gateway (``edge run``), two ERP relays (``edge relay run``) sharing the
subscription and one ledger, and the SAP stand-in (``python -m simulators.erp.sap``).

Central's dispatcher is played by an MQTT client in the test (``mes.dispatch/1`` on the
gateway's ``order/dispatch`` topic, until the gateway answers ``order/received``), the operator
by the gateway's local API (``/api/commands/...``, a ``command_id`` per tap, so a tap repeated
across a gateway restart acts once), the machine by its control port (``--control-port``).

A :class:`Schedule` (seeded) lists the operations with the parts the machine makes for each and
the alarms it stops with; :meth:`Chain.produce` works through it and calls a fault hook between
machine cycles; :meth:`Chain.settle` waits for every verdict; :meth:`Chain.ledgers` reads the
three ledgers: what the machine made (its own counters, never
wrapped), what the gateway confirmed (its database) and what SAP posted (the stand-in's ledger,
by ``ExternalSystemConfirmation``, the GUID the relay makes of each ``idem_key``).
:func:`judge` compares them.

Every process starts in a session of its own; :meth:`Chain.close` kills every one still alive
(the process group, SIGKILL after a SIGTERM that was not heeded), also after a failure.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from edge.pin import hash_pin
from edge.relay.erp import external_id
from simulators.broker import Mosquitto, free_port

REPO = Path(__file__).resolve().parents[2]
EDGE_ID = "wc-chain-01"
WORK_CENTER = "CHAIN01"
ROOT = f"umh/v1/acme/plant1/assembly/line1/{WORK_CENTER}"
SAP_USER, SAP_PASSWORD = "RELAY", "relay-secret"
SUPERVISOR_PIN = "2468"
NAMESPACE = "urn:edge-gateway:simulator:machine"
MACHINE = "Press07"
FINAL_VERDICTS = ("posted", "duplicate")

GATEWAY_TOML = """\
[gateway]
edge_id = "{edge_id}"
work_center = "{work_center}"
timezone = "Europe/Berlin"
log_level = "info"

[store]
path = "{db}"

[engine]
tick_interval_s = 0.2

[mqtt]
enabled = true
host = "127.0.0.1"
port = {mqtt_port}
enterprise = "acme"
site = "plant1"
area = "assembly"
line = "line1"
reconnect_min_s = 0.2
reconnect_max_s = 1
keepalive_s = {keepalive_s}
health_interval_s = 2
result_timeout_s = {result_timeout_s}
historical_after_s = 2

[panel]
enabled = true
host = "127.0.0.1"
port = {panel_port}
supervisor_pin_hash = "{pin_hash}"

[[counting.sources]]
name = "press_good"
kind = "good"
signal = "absolute"
bits = {bits}

[[counting.sources]]
name = "press_scrap"
kind = "scrap"
signal = "absolute"
bits = {bits}

[confirmations]
every_good = {every_good}

[[master_data.stop_reasons]]
code = "M01"
text = "Material missing"
category = "unplanned"

[[master_data.scrap_reasons]]
code = "S03"
text = "Burr on edge"

[[sources.opcua]]
name = "machine"
endpoint = "{endpoint}"
template = "machinery"
publishing_interval_ms = 50
watchdog_s = 2
reconnect_min_s = 0.2
reconnect_max_s = 1
state_node = "nsu={ns};s={machine}.MachineryItemState.CurrentState"
mode_node = "nsu={ns};s={machine}.MachineryOperationMode.CurrentState"
alarm_node = "nsu={ns};s={machine}.Alarm.ActiveAlarmCode"

[[sources.opcua.counters]]
counter = "press_good"
node = "nsu={ns};s={machine}.Counters.GoodCount"

[[sources.opcua.counters]]
counter = "press_scrap"
node = "nsu={ns};s={machine}.Counters.ScrapCount"
"""

RELAY_TOML = """\
[relay]
enterprise = "acme"
instance = "{name}"
lease_s = {lease_s}
retry_min_s = 0.2
retry_max_s = 2.0
poll_s = 0.05
concurrency = 4
log_json = true

[mqtt]
host = "127.0.0.1"
port = {mqtt_port}
reconnect_min_s = 0.2

[ledger]
url = "{ledger}"

[erp]
system = "sap"
service_url = "{sap_url}"
user = "{user}"
password_file = "{secret}"
timeout_s = {timeout_s}
"""


class ChainFailed(AssertionError):
    """Something the chain waits for did not happen in time; the message says what."""


def until(check: Callable[[], bool], timeout: float, what: str, step: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise ChainFailed(f"waited {timeout:.0f} s for {what}")
        time.sleep(step)


def http(
    method: str,
    url: str,
    body: Any = None,
    timeout: float = 5.0,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("content-type", "application/json")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
            status = resp.status
    except urllib.error.HTTPError as exc:
        raw, status = exc.read(), exc.code
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw.decode(errors="replace")


# ------------------------------------------------------------------------------ processes


class Procs:
    """Child processes, each in its own session (process group); all killed by :meth:`kill_all`."""

    def __init__(self) -> None:
        self.all: list[subprocess.Popen[bytes]] = []

    def spawn(self, argv: list[str], log: Path, **kw: Any) -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            proc = subprocess.Popen(
                argv,
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=kw.pop("stdout", out),
                stderr=out,
                env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO)},
                start_new_session=True,
                **kw,
            )
        self.all.append(proc)
        return proc

    @staticmethod
    def kill(proc: subprocess.Popen[bytes]) -> None:
        """SIGKILL to the process's group, then reap it."""
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)

    @staticmethod
    def terminate(proc: subprocess.Popen[bytes], timeout: float = 20.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; the exit code (None: it had to be killed)."""
        if proc.poll() is not None:
            return proc.returncode
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            Procs.kill(proc)
            return None

    def kill_all(self) -> None:
        for proc in self.all:
            self.kill(proc)


def python(*args: str) -> list[str]:
    return [sys.executable, *args]


class Machine:
    """The OPC UA machine simulator in its own process, driven over its control port."""

    def __init__(
        self,
        procs: Procs,
        workdir: Path,
        seed: int,
        cycle_s: float,
        scrap_rate: float,
        bits: int = 32,
        start_value: int = 0,
    ):
        self.port = free_port()
        self.endpoint = f"opc.tcp://127.0.0.1:{self.port}"
        self.log = workdir / "machine.log"
        self.proc = procs.spawn(
            python(
                "-m", "simulators.opcua_machine", "--port", str(self.port), "--control-port", "0",
                "--cycle-s", str(cycle_s), "--jitter", "0.3", "--scrap-rate", str(scrap_rate),
                "--seed", str(seed), "--idle", "--log-level", "WARNING", "--machine", MACHINE,
                "--bits", str(bits), "--start-value", str(start_value),
            ),
            self.log,
            stdout=subprocess.PIPE,
        )  # fmt: skip
        self._file: Any = None
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()

    def connect(self) -> None:
        """Wait for the simulator's banner and connect to its control port."""
        self.control_port = self._read_banner()
        self._sock = socket.create_connection(("127.0.0.1", self.control_port), timeout=10)
        self._file = self._sock.makefile("rwb")

    def _read_banner(self) -> int:
        assert self.proc.stdout is not None
        port: int | None = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline().decode()
            if not line:
                raise ChainFailed(f"the machine simulator ended: {self.log.read_text()[-2000:]}")
            if line.startswith("control "):
                port = int(line.split()[1])
            if line.rstrip().endswith(" ready"):
                if port is None:
                    raise ChainFailed("the machine simulator printed no control port")
                return port
        raise ChainFailed("the machine simulator did not start")

    def cmd(self, cmd: str, **args: Any) -> dict[str, Any]:
        with self._lock:
            self._file.write(json.dumps({"cmd": cmd, **args}).encode() + b"\n")
            self._file.flush()
            answer: dict[str, Any] = json.loads(self._file.readline())
        if not answer.get("ok"):
            raise ChainFailed(f"machine {cmd}: {answer}")
        return answer

    def made(self) -> dict[str, int]:
        made: dict[str, int] = self.cmd("values")["made"]
        return made

    def close(self) -> None:
        with contextlib.suppress(OSError, AttributeError):
            self._file.close()
            assert self._sock is not None
            self._sock.close()


class Sap:
    """The SAP stand-in in its own process; its faults and ledger over ``/_control``."""

    def __init__(self, procs: Procs, workdir: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.url = f"{self.base}/sap/opu/odata/sap/API_PROD_ORDER_CONFIRMATION_2_SRV/"
        self.log = workdir / "sap.log"
        self.procs = procs
        self.ledger_file = workdir / "sap-ledger.db"
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        self.proc = self.procs.spawn(
            python(
                "-m", "simulators.erp.sap", "--port", str(self.port), "--user", SAP_USER,
                "--password", SAP_PASSWORD, "--ledger", str(self.ledger_file),
            ),
            self.log,
        )  # fmt: skip

    def wait_up(self) -> None:
        def up() -> bool:
            try:
                return self.control("GET", "stats") is not None
            except OSError:
                return False

        until(up, 30, "the SAP stand-in", step=0.1)

    def control(self, method: str, path: str, body: Any = None) -> Any:
        status, answer = http(method, f"{self.base}/_control/{path}", body)
        if status != 200:
            raise ChainFailed(f"SAP control {path}: HTTP {status} {answer}")
        return answer

    def set(self, path: str, **body: Any) -> None:
        self.control("POST", path, body)

    def ledger(self) -> dict[str, Any]:
        answer: dict[str, Any] = self.control("GET", "ledger")
        return answer

    def stats(self) -> dict[str, Any]:
        answer: dict[str, Any] = self.control("GET", "stats")
        return answer


class Central:
    """Central's MQTT client: sends the dispatch list, sees what the gateway publishes."""

    def __init__(self, broker: Mosquitto) -> None:
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"central-{uuid.uuid4().hex[:8]}",
            protocol=paho.MQTTv5,
        )
        self.lock = threading.Lock()
        self.received: list[tuple[str, Any]] = []
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(0.2, 1)
        self.client.connect_async(broker.host, broker.port)
        self.client.loop_start()

    def _on_connect(self, client: paho.Client, *_: Any) -> None:
        client.subscribe(f"{ROOT}/_mes_v1/#", qos=1)

    def _on_message(self, _c: Any, _u: Any, msg: paho.MQTTMessage) -> None:
        try:
            data = json.loads(msg.payload)
        except ValueError:
            data = None
        with self.lock:
            self.received.append((msg.topic, data))

    def seen(self, suffix: str) -> list[Any]:
        with self.lock:
            return [d for t, d in self.received if t.endswith(suffix)]

    def dispatch(self, version: int, operations: list[dict[str, Any]]) -> None:
        msg_id = str(uuid.uuid4())
        payload = json.dumps(
            {
                "schema": "mes.dispatch/1",
                "msg_id": msg_id,
                "ts_ms": time.time_ns() // 1_000_000,
                "body": {"version": version, "operations": operations},
            }
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            before = len(self.seen("/order/received"))
            self.client.publish(f"{ROOT}/_mes_v1/order/dispatch", payload, qos=1)
            with contextlib.suppress(ChainFailed):

                def received(before: int = before) -> bool:
                    return len(self.seen("/order/received")) > before

                until(received, 3, "order/received")
                return
        raise ChainFailed("the gateway never applied the dispatch list")

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


# ------------------------------------------------------------------------------ the schedule


@dataclass(frozen=True, slots=True)
class Stop:
    at_part: int  # the machine stops once it has made this many parts of the operation
    alarm: str
    seconds: float


@dataclass(frozen=True, slots=True)
class Op:
    order: str
    operation: str
    parts: int  # what the machine makes for it
    stops: tuple[Stop, ...]

    @property
    def ref(self) -> str:
        return f"{self.order}/{self.operation}"


@dataclass(frozen=True, slots=True)
class Schedule:
    seed: int
    ops: tuple[Op, ...]

    @classmethod
    def make(
        cls,
        seed: int,
        n_ops: int,
        parts: tuple[int, int],
        stops: tuple[int, int] = (0, 1),
        first_order: int = 4800,
    ) -> Schedule:
        """``n_ops`` operations (orders from ``first_order`` on), each of a number of parts
        drawn from ``parts`` and with a number of alarm stops drawn from ``stops``."""
        rng = random.Random(seed)
        ops = []
        for i in range(n_ops):
            n = rng.randint(*parts)
            at = sorted(rng.sample(range(5, n - 5), rng.randint(*stops)))
            ops.append(
                Op(
                    order=str(first_order + i),
                    operation="0010",
                    parts=n,
                    stops=tuple(
                        Stop(a, rng.choice(("E-217", "E-105")), round(rng.uniform(0.6, 1.2), 2))
                        for a in at
                    ),
                )
            )
        return cls(seed, tuple(ops))

    def dispatch(self) -> list[dict[str, Any]]:
        return [
            {
                "order_id": op.order,
                "operation": op.operation,
                "split": 0,
                "material": f"FG-{op.order}",
                "material_text": "bracket",
                "quantity": op.parts * 10,  # room for what a fault adds
                "unit": "PC",
                "sequence": (i + 1) * 10,
                "over_tolerance_pct": 100,
            }
            for i, op in enumerate(self.ops)
        ]


# ------------------------------------------------------------------------------ the chain


@dataclass
class Ledgers:
    made: dict[str, int]  # the machine's own totals since it started
    made_by_op: dict[str, tuple[int, int]]  # good, scrap the machine made under each operation
    op_windows: dict[str, tuple[int, int]]  # wall ms from its start to its completion
    counted: dict[str, dict[str, Decimal]]  # op -> good, scrap (the gateway's database)
    confirmations: list[dict[str, Any]]  # the gateway's confirmation docs
    postings: list[dict[str, Any]]  # SAP's records (summaries)
    machine_stops: list[tuple[int, int, str]]  # start ms, end ms, alarm
    gateway_stops: list[dict[str, Any]]


@dataclass
class Verdict:
    """What :func:`judge` found; ``problems`` empty when the chain kept its promise."""

    parts_made: int
    scrap_made: int
    confirmations: int
    posted: int
    stops: int = 0  # the machine's alarm stops found as the gateway's
    lost: list[str] = field(default_factory=list)
    doubled: dict[str, int] = field(default_factory=dict)
    orphans: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (
            f"made good {self.parts_made} scrap {self.scrap_made}; confirmations "
            f"{self.confirmations}, SAP postings {self.posted}, lost {len(self.lost)}, "
            f"doubled {len(self.doubled)}, orphans {len(self.orphans)}; alarm stops matched "
            f"{self.stops}"
        )


class Chain:
    """Every part of the chain, started in :meth:`__enter__`, killed in :meth:`close`."""

    def __init__(
        self,
        workdir: Path,
        schedule: Schedule,
        *,
        ledger_url: str | None = None,
        cycle_s: float = 0.03,
        scrap_rate: float = 0.05,
        every_good: int = 20,
        result_timeout_s: float = 6.0,
        relay_timeout_s: float = 2.0,
        lease_s: float | None = None,
        gateway_keepalive_s: int = 30,  # the gateway's MQTT keepalive (30: its default)
        db_dir: Path | None = None,  # the gateway's database here (a small disk); else workdir
        min_free_mb: float | None = None,  # [retention] min_free_mb; None: the default
        bits: int = 32,  # the machine's counters (16 or 32) and the gateway's counting.sources
        start_value: int = 0,  # the machine's GoodCount at its start (near the top: a wrap)
        wall_offset_ms: int | None = None,  # the gateway's wall clock steppable, from this offset
    ) -> None:
        self.workdir = workdir
        self.schedule = schedule
        self.rng = random.Random(schedule.seed ^ 0x5EED)
        self.procs = Procs()
        self.ledger_url = ledger_url or f"sqlite:///{workdir / 'relay-ledger.db'}"
        self.cycle_s = cycle_s
        self.scrap_rate = scrap_rate
        self.every_good = every_good
        self.result_timeout_s = result_timeout_s
        self.lease_s = lease_s if lease_s is not None else 3 * relay_timeout_s  # the minimum
        self.relay_timeout_s = relay_timeout_s
        self.gateway_keepalive_s = gateway_keepalive_s
        self.panel_port = free_port()
        self.api = f"http://127.0.0.1:{self.panel_port}"
        self.db = (db_dir or workdir) / "edge.db"
        self.min_free_mb = min_free_mb
        self.bits = bits
        self.start_value = start_value
        self.broker = Mosquitto(workdir / "broker")
        # the port the gateway's [mqtt] connects to: a proxy's in front of the broker, if set
        # before the chain starts (tests/reliability/net_proxy.py); else the broker's own
        self.gateway_mqtt_port: int | None = None
        # the same for the relays' [mqtt] (a proxy in front of the broker for both relays)
        self.relay_mqtt_port: int | None = None
        # tests/reliability/stepped_gateway.py reads the gateway's wall-clock offset here
        self.offset_file: Path | None = None
        if wall_offset_ms is not None:
            self.offset_file = workdir / "clock.offset"
            self.step_clock(wall_offset_ms)
        self.gateway: subprocess.Popen[bytes] | None = None
        self.relays: dict[str, subprocess.Popen[bytes]] = {}
        self.gateway_starts = 0
        self.gateway_kills = 0
        self.machine: Machine | None = None
        self.sap: Sap | None = None
        self.central: Central | None = None
        self._token: str | None = None
        self.dispatched = 0
        self.op_base = 0  # the machine's parts made when the running operation started
        # what produce() had the machine make for each operation (good, scrap), and when
        self.made_by_op: dict[str, tuple[int, int]] = {}
        self.op_windows: dict[str, tuple[int, int]] = {}  # wall ms: started, completed
        self.windows: list[tuple[int, int]] = []

    # ------------------------------------------------------------------ start and stop

    def __enter__(self) -> Chain:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        """Every process at once (they start in parallel), then wait for each."""
        self.broker.start()
        self.machine = Machine(
            self.procs,
            self.workdir,
            self.schedule.seed,
            self.cycle_s,
            self.scrap_rate,
            bits=self.bits,
            start_value=self.start_value,
        )
        self.sap = Sap(self.procs, self.workdir)
        for name in ("relay-a", "relay-b"):
            self.start_relay(name)
        self.start_gateway(wait=False)
        self.central = Central(self.broker)
        self.machine.connect()
        self.sap.wait_up()
        self.wait_gateway_up()
        self.dispatch(self.schedule)

    def dispatch(self, schedule: Schedule) -> None:
        """Central's dispatch list: the operations of ``schedule`` (a new list version)."""
        assert self.central is not None
        self.dispatched += 1
        self.central.dispatch(self.dispatched, schedule.dispatch())

    def close(self) -> None:
        for part in (self.central, self.machine):
            if part is not None:
                with contextlib.suppress(Exception):
                    part.close()
        self.procs.kill_all()
        self.broker.stop(kill=True)

    def stop_daemons(self) -> dict[str, int | None]:
        """SIGTERM to the gateway and the relays (the way systemd stops them); exit codes."""
        codes: dict[str, int | None] = {}
        if self.gateway is not None:
            codes["gateway"] = Procs.terminate(self.gateway)
        for name, proc in self.relays.items():
            codes[name] = Procs.terminate(proc)
        return codes

    # ------------------------------------------------------------------ the gateway

    def write_gateway_config(self) -> Path:
        assert self.machine is not None
        cfg = self.workdir / "edge.toml"
        cfg.write_text(
            GATEWAY_TOML.format(
                edge_id=EDGE_ID,
                work_center=WORK_CENTER,
                db=self.db,
                mqtt_port=self.gateway_mqtt_port or self.broker.port,
                keepalive_s=self.gateway_keepalive_s,
                result_timeout_s=self.result_timeout_s,
                panel_port=self.panel_port,
                pin_hash=hash_pin(SUPERVISOR_PIN, n=2**10),
                every_good=self.every_good,
                endpoint=self.machine.endpoint,
                ns=NAMESPACE,
                machine=MACHINE,
                bits=self.bits,
            )
            + (
                f"\n[retention]\nmin_free_mb = {self.min_free_mb}\ndisk_check_s = 1\n"
                if self.min_free_mb is not None
                else ""
            )
        )
        return cfg

    def start_gateway(self, wait: bool = True) -> None:
        cfg = self.workdir / "edge.toml"
        if not cfg.exists():
            self.write_gateway_config()
        argv = python("-m", "edge", "run", "-c", str(cfg))
        if self.offset_file is not None:
            argv = python(
                "-m", "tests.reliability.stepped_gateway", "-c", str(cfg),
                "--offset-file", str(self.offset_file),
            )  # fmt: skip
        self.gateway = self.procs.spawn(argv, self.workdir / "gateway.log")
        self.gateway_starts += 1
        self._token = None
        if wait:
            self.wait_gateway_up()

    def step_clock(self, offset_ms: int) -> None:
        """Set the gateway's wall clock ``offset_ms`` from the computer's (a chain made with
        ``wall_offset_ms``): the running gateway reads it within 20 ms."""
        assert self.offset_file is not None, "a chain made without wall_offset_ms"
        tmp = self.offset_file.with_suffix(".tmp")
        tmp.write_text(f"{offset_ms}\n")
        tmp.replace(self.offset_file)

    def metric(self, name: str) -> float | None:
        """A gauge without labels from the gateway's /metrics (None: not there)."""
        status, text = http("GET", self.api + "/metrics", timeout=5)
        if status != 200 or not isinstance(text, str):
            return None
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        return None

    def wait_gateway_up(self, timeout: float = 60.0) -> None:
        def up() -> bool:
            assert self.gateway is not None
            if self.gateway.poll() is not None:
                raise ChainFailed(
                    f"the gateway exited with {self.gateway.returncode}: {self.gateway_log()}"
                )
            try:
                status, text = http("GET", self.api + "/metrics", timeout=2)
            except OSError:
                return False
            return (
                status == 200
                and isinstance(text, str)
                and 'edge_link_up{link="opcua:machine"} 1' in text
            )

        until(up, timeout, "the gateway: panel up, OPC UA link up", step=0.1)

    def kill_gateway(self) -> None:
        assert self.gateway is not None
        Procs.kill(self.gateway)
        self.gateway_kills += 1

    def gateway_log(self, chars: int = 3000) -> str:
        return (self.workdir / "gateway.log").read_text(errors="replace")[-chars:]

    def command(self, path: str, body: dict[str, Any], timeout: float = 60.0) -> Any:
        """A tap on the panel: sent again with the same ``command_id`` until the gateway
        answers (it may be restarting); the same id never acts twice."""
        body = {"command_id": str(uuid.uuid4()), **body}
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            headers = {"x-supervisor-token": self._token} if self._token else {}
            try:
                status, answer = http("POST", self.api + path, body, timeout=10, headers=headers)
            except OSError as exc:
                last = exc
                time.sleep(0.2)
                continue
            if status == 200:
                return answer
            last = (status, answer)
            if status < 500:
                raise ChainFailed(f"{path} {body}: HTTP {status} {answer}")
            time.sleep(0.2)
        raise ChainFailed(f"{path}: no answer in {timeout:.0f} s (last: {last})")

    def get(self, path: str, timeout: float = 60.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            try:
                status, answer = http("GET", self.api + path, timeout=10)
                if status == 200:
                    return answer
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise ChainFailed(f"GET {path}: no answer in {timeout:.0f} s")
            time.sleep(0.2)

    def supervisor_login(self) -> None:
        status, answer = http("POST", self.api + "/api/supervisor/login", {"pin": SUPERVISOR_PIN})
        if status != 200:
            raise ChainFailed(f"supervisor login: HTTP {status} {answer}")
        self._token = answer["token"]

    # ------------------------------------------------------------------ the relays

    def start_relay(self, name: str) -> None:
        assert self.sap is not None
        secret = self.workdir / "sap-password"
        secret.write_text(SAP_PASSWORD + "\n")
        cfg = self.workdir / f"{name}.toml"
        cfg.write_text(
            RELAY_TOML.format(
                name=name,
                lease_s=self.lease_s,
                mqtt_port=self.relay_mqtt_port or self.broker.port,
                ledger=self.ledger_url,
                sap_url=self.sap.url,
                user=SAP_USER,
                secret=secret,
                timeout_s=self.relay_timeout_s,
            )
        )
        self.relays[name] = self.procs.spawn(
            python("-m", "edge", "relay", "run", "-c", str(cfg)), self.workdir / f"{name}.log"
        )

    def relay_log(self, name: str, chars: int = 3000) -> str:
        return (self.workdir / f"{name}.log").read_text(errors="replace")[-chars:]

    # ------------------------------------------------------------------ production

    def produce(
        self,
        fault: Callable[[Chain, Op, int], None] | None = None,
        schedule: Schedule | None = None,
    ) -> None:
        """Work through the schedule: start each operation on the panel, let the machine make
        its parts (stopping with its alarms on the way), wait until the gateway counted every
        part, complete it. ``fault(chain, op, made)`` is called between machine cycles; while
        its ``pending(op)`` says so, the machine goes on past the operation's parts; its
        ``before_complete(chain, op)``, if any, is called before each completion."""
        machine = self.machine
        assert machine is not None
        began = time.time_ns() // 1_000_000
        for op in (schedule or self.schedule).ops:
            self.command("/api/commands/start-production", {"op": op.ref})
            started = time.time_ns() // 1_000_000
            base = machine.made()
            base_total = self.op_base = base["good"] + base["scrap"]
            stops = list(op.stops)
            run_until = 0  # after a stop the machine runs a few parts before it goes idle
            machine.cmd("run")
            while True:
                made = machine.made()
                n = made["good"] + made["scrap"] - base_total
                if (
                    n >= max(op.parts, run_until)
                    and not stops
                    and not (fault is not None and pending(fault, op))
                ):
                    break
                if stops and n >= stops[0].at_part:
                    stop = stops.pop(0)
                    machine.cmd("stop", alarm=stop.alarm)
                    time.sleep(stop.seconds)
                    machine.cmd("run")
                    run_until = n + 3
                    continue
                if fault is not None:
                    fault(self, op, n)
                time.sleep(0.02)
            machine.cmd("idle")
            made = machine.made()
            want = (made["good"] - base["good"], made["scrap"] - base["scrap"])

            def counted(op: Op = op, want: tuple[int, int] = want) -> bool:
                got = self.get(f"/api/operations/{op.ref}")
                return (Decimal(got["good"]), Decimal(got["scrap"])) == tuple(map(Decimal, want))

            until(counted, 60, f"the gateway to count {want} on {op.ref}", step=0.1)
            self.made_by_op[op.ref] = want
            before = getattr(fault, "before_complete", None)
            if callable(before):
                before(self, op)
            self.command("/api/commands/complete", {"op": op.ref})
            self.op_windows[op.ref] = (started, time.time_ns() // 1_000_000)
        self.windows.append((began, time.time_ns() // 1_000_000))

    def confirmations(self) -> list[dict[str, Any]]:
        answer: list[dict[str, Any]] = self.get("/api/confirmations")
        return answer

    def settle(
        self,
        timeout: float = 90.0,
        allow: Callable[[dict[str, Any]], bool] | None = None,
        schedule: Schedule | None = None,
    ) -> None:
        """Wait until every operation is completed and every confirmation has its final
        verdict (``allow(conf)``: a confirmation that may stay as it is)."""

        refs = {op.ref for op in (schedule or self.schedule).ops}

        def done() -> bool:
            confs = [c for c in self.confirmations() if c["op"] in refs]
            finals = {c["op"] for c in confs if c["final"]}
            if not refs <= finals:
                # Finished operations leave the gateway's memory (and the panel's list) once
                # the ERP answered all their confirmations: their rows say they are done.
                finals |= self.stored_finished()
            return refs <= finals and all(
                c["status"] in FINAL_VERDICTS or (allow is not None and allow(c)) for c in confs
            )

        try:
            until(done, timeout, "a final verdict on every confirmation", step=0.3)
        except ChainFailed as exc:
            open_ = [
                (c["conf_id"], c["status"], c["erp_message"])
                for c in self.confirmations()
                if c["status"] not in FINAL_VERDICTS
            ]
            ended = {n: p.returncode for n, p in self.relays.items() if p.poll() is not None}
            raise ChainFailed(f"{exc}; still open: {open_}; relays ended: {ended}") from None

    def stored_finished(self) -> set[str]:
        """The operations whose final confirmation the ERP answered, as the gateway's database
        holds them (read-only, a committed snapshot): also those that left its memory."""
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True)
        try:
            docs = [json.loads(d) for (d,) in conn.execute("SELECT doc FROM confirmation")]
        finally:
            conn.close()
        return {
            f"{d['key']['order']}/{d['key']['operation']}"
            for d in docs
            if d["final"] and d["status"] in FINAL_VERDICTS
        }

    # ------------------------------------------------------------------ the ledgers

    def ledgers(self) -> Ledgers:
        """The three ledgers: the machine's counters, the gateway's database (read-only, a
        committed snapshot, also while it runs) and SAP's ledger."""
        assert self.machine is not None
        assert self.sap is not None
        report = self.machine.cmd("values")
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True)
        try:
            ops = [json.loads(d) for (d,) in conn.execute("SELECT doc FROM operation")]
            confs = [json.loads(d) for (d,) in conn.execute("SELECT doc FROM confirmation")]
            stops = [json.loads(d) for (d,) in conn.execute("SELECT doc FROM stop")]
        finally:
            conn.close()
        counted = {
            f"{o['spec']['order']}/{o['spec']['operation']}": {
                "good": Decimal(str(o["counted"]["good"])),
                "scrap": sum((Decimal(str(q)) for q in o["counted"]["scrap"].values()), Decimal(0)),
            }
            for o in ops
        }
        return Ledgers(
            made=report["made"],
            made_by_op=dict(self.made_by_op),
            op_windows=dict(self.op_windows),
            counted=counted,
            confirmations=confs,
            postings=self.sap.ledger()["postings"],
            machine_stops=machine_stops(report["history"]),
            gateway_stops=stops,
        )


def pending(fault: object, op: Op) -> bool:
    """Whether the fault hook still has work to do in ``op`` (its ``pending(op)``, if any):
    the machine goes on making parts until it is done."""
    check = getattr(fault, "pending", None)
    return bool(check(op)) if callable(check) else False


def machine_stops(history: list[list[Any]]) -> list[tuple[int, int, str]]:
    """The machine's alarm stops from its state history: (start ms, end ms, alarm)."""
    out: list[tuple[int, int, str]] = []
    start: tuple[int, str] | None = None
    for at, state, alarm in history:
        if state == "OutOfService" and alarm and start is None:
            start = (int(at), str(alarm))
        elif state != "OutOfService" and start is not None:
            out.append((start[0], int(at), start[1]))
            start = None
    return out


def conf_scrap(doc: dict[str, Any]) -> Decimal:
    scrap = doc["tally"]["scrap"]
    if isinstance(scrap, dict):
        return sum((Decimal(str(q)) for q in scrap.values()), Decimal(0))
    return Decimal(str(scrap))


def judge(
    led: Ledgers,
    ops: Iterable[Op],
    *,
    stop_tolerance_ms: int = 1000,
    unconfirmed: Callable[[dict[str, Any]], bool] | None = None,
) -> Verdict:
    """Compare the three ledgers for ``ops``.

    - The machine made every part under one of the operations produce() ran (its totals are
      the sum of what it made for each): by the rules no part is left unassigned, none counted
      in setup, so every part made must be confirmed.
    - The gateway counted what the machine made for each operation, and its confirmations add
      up to what it counted (reversed ones left out).
    - Every confirmation with a final verdict is in SAP exactly once (by
      ``ExternalSystemConfirmation``) with its yield and scrap; SAP has nothing for these
      orders that the gateway did not confirm; SAP's totals equal what the machine made.
      ``unconfirmed(conf)`` names confirmations that may stay unposted (the rules keep a
      rejected one at the gateway, so its parts are missing from SAP, not from the gateway).
    - Every alarm stop of the machine during these operations is a stop of the gateway with
      the same alarm, starting and ending within ``stop_tolerance_ms``, and there is none more.
    """
    refs = {op.ref for op in ops}
    orders = {op.order for op in ops}
    made_good = sum(led.made_by_op[r][0] for r in refs if r in led.made_by_op)
    made_scrap = sum(led.made_by_op[r][1] for r in refs if r in led.made_by_op)
    confs = [c for c in led.confirmations if _ref(c) in refs]
    postings = [
        p for p in led.postings if not p["is_reversal"] and p["order_id"].lstrip("0") in orders
    ]
    v = Verdict(
        parts_made=made_good,
        scrap_made=made_scrap,
        confirmations=len(confs),
        posted=len(postings),
    )
    missing = refs - set(led.made_by_op)
    if missing:
        v.problems.append(f"operations never produced: {sorted(missing)}")
    all_good = sum(g for g, _ in led.made_by_op.values())
    all_scrap = sum(s for _, s in led.made_by_op.values())
    if (all_good, all_scrap) != (led.made["good"], led.made["scrap"]):
        v.problems.append(
            f"the machine made {led.made} in all, {all_good}/{all_scrap} under operations"
        )
    by_ext: dict[str, list[dict[str, Any]]] = {}
    for p in postings:
        by_ext.setdefault(p["external_id"], []).append(p)
    v.doubled = {k: len(ps) for k, ps in by_ext.items() if len(ps) > 1}
    known: set[str] = set()
    confirmed_good = confirmed_scrap = posted_good = posted_scrap = Decimal(0)
    for c in confs:
        if c.get("reversed"):
            continue
        good, scrap = Decimal(str(c["tally"]["good"])), conf_scrap(c)
        confirmed_good += good
        confirmed_scrap += scrap
        ext = external_id(c["idem_key"])
        known.add(ext)
        if unconfirmed is not None and unconfirmed(c):
            continue
        name = f"{_ref(c)}#{c['counter']}"
        if c["status"] not in FINAL_VERDICTS:
            v.problems.append(f"{name}: {c['status']} ({c.get('erp_message')})")
        found = by_ext.get(ext, [])
        if not found:
            v.lost.append(name)
            continue
        p = found[0]
        if (Decimal(p["yield"]), Decimal(p["scrap"])) != (good, scrap):
            v.problems.append(f"{name}: gateway {good}/{scrap}, SAP {p['yield']}/{p['scrap']}")
        posted_good += good
        posted_scrap += scrap
    v.orphans = sorted(set(by_ext) - known)
    if v.lost:
        v.problems.append(f"confirmed, not in SAP: {v.lost}")
    if v.doubled:
        v.problems.append(f"posted twice: {v.doubled}")
    if v.orphans:
        v.problems.append(f"in SAP, not confirmed by the gateway: {v.orphans}")
    counted = [led.counted[r] for r in refs if r in led.counted]
    counted_good = sum((c["good"] for c in counted), Decimal(0))
    counted_scrap = sum((c["scrap"] for c in counted), Decimal(0))
    if (counted_good, counted_scrap) != (made_good, made_scrap):
        v.problems.append(
            f"the gateway counted {counted_good}/{counted_scrap}, the machine made "
            f"{made_good}/{made_scrap}"
        )
    if (confirmed_good, confirmed_scrap) != (counted_good, counted_scrap):
        v.problems.append(
            f"confirmed {confirmed_good}/{confirmed_scrap} != counted "
            f"{counted_good}/{counted_scrap}"
        )
    if unconfirmed is None and (posted_good, posted_scrap) != (made_good, made_scrap):
        v.problems.append(
            f"SAP has {posted_good}/{posted_scrap}, the machine made {made_good}/{made_scrap}"
        )
    problems, v.stops = compare_stops(led, refs, stop_tolerance_ms)
    v.problems.extend(problems)
    return v


def _ref(conf: dict[str, Any]) -> str:
    key = conf["key"]
    return f"{key['order']}/{key['operation']}"


def compare_stops(led: Ledgers, refs: set[str], tolerance_ms: int) -> tuple[list[str], int]:
    """Machine alarm stops while these operations ran against the gateway's alarm stops: what
    does not match, and how many matched."""
    problems: list[str] = []
    gw = [
        s
        for s in led.gateway_stops
        if s.get("alarm") and s.get("origin") == "machine_state" and set(s["operations"]) & refs
    ]
    windows = [led.op_windows[r] for r in refs if r in led.op_windows]
    machine = [m for m in led.machine_stops if m[2] and any(a <= m[0] <= b for a, b in windows)]
    unmatched = list(gw)
    for start, end, alarm in machine:
        match = next(
            (
                s
                for s in unmatched
                if s["alarm"] == alarm
                and abs(s["start"]["wall_ms"] - start) <= tolerance_ms
                and s.get("end") is not None
                and abs(s["end"]["wall_ms"] - end) <= tolerance_ms
            ),
            None,
        )
        if match is None:
            problems.append(f"machine stop {alarm} {start}-{end}: no gateway stop matches")
        else:
            unmatched.remove(match)
    for s in unmatched:
        problems.append(
            f"gateway stop {s.get('stop_id')} ({s['alarm']}, {s['start']['wall_ms']}-"
            f"{(s.get('end') or {}).get('wall_ms')}): no machine stop matches"
        )
    return problems, len(gw) - len(unmatched)


def expected_stops(schedule: Schedule) -> int:
    return sum(len(op.stops) for op in schedule.ops)


def check(chain: Chain, schedule: Schedule, **kw: Any) -> str:
    """Judge the ledgers for ``schedule``'s operations; the summary line when all holds, else
    an AssertionError naming what differs; the gateway and both relays must still run."""
    v = judge(chain.ledgers(), schedule.ops, **kw)
    assert not v.problems, f"seed {schedule.seed}: {v.line()}: {v.problems}"
    assert v.parts_made > 0
    assert v.confirmations >= len(schedule.ops)
    assert v.stops == sum(len(op.stops) for op in schedule.ops), v.line()
    for name, proc in chain.relays.items():
        assert proc.poll() is None, f"{name} ended: {chain.relay_log(name)}"
    assert chain.gateway is not None
    assert chain.gateway.poll() is None, chain.gateway_log()
    return v.line()
