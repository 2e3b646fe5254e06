"""Shared pieces for the operations tests: a real notify socket, configs, a real plant database."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from edge.app import open_engine, run_gateway
from edge.config import GatewayConfig, load_config
from edge.domain.inputs import (
    Action,
    DispatchList,
    MachineState,
    MachineStateChanged,
    Pulses,
    ReportScrap,
    Transition,
)
from edge.domain.model import OperationSpec
from simulators.broker import Mosquitto

REPO = Path(__file__).resolve().parents[2]

CONFIG = """
[gateway]
edge_id = "wc-press-07"
work_center = "PRESS07"
timezone = "Europe/Berlin"
log_level = "{log_level}"
log_json = true

[store]
path = "{db}"

[engine]
tick_interval_s = 0.1

[mqtt]
enabled = {mqtt}
host = "127.0.0.1"
port = {port}
enterprise = "acme"
site = "plant1"
area = "stamping"
line = "line4"
reconnect_min_s = 0.2
reconnect_max_s = 1
health_interval_s = 1
{mqtt_extra}

[[counting.sources]]
name = "press_good"
kind = "good"
signal = "pulse"

[confirmations]
every_good = 10

[[master_data.scrap_reasons]]
code = "S03"
text = "Burr"

[[master_data.stop_reasons]]
code = "M01"
text = "Material missing"
"""

ROOT = "umh/v1/acme/plant1/stamping/line4/PRESS07"


def write_config(
    directory: Path,
    *,
    db: Path | None = None,
    mqtt: bool = False,
    port: int = 1883,
    mqtt_extra: str = "",
    log_level: str = "info",
) -> Path:
    path = directory / "edge.toml"
    path.write_text(
        CONFIG.format(
            db=db or directory / "edge.db",
            mqtt="true" if mqtt else "false",
            port=port,
            mqtt_extra=mqtt_extra,
            log_level=log_level,
        )
    )
    return path


def load(path: Path) -> GatewayConfig:
    return load_config(path, env={})


def edge(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """The real ``edge`` command in a child process."""
    return subprocess.run(
        [sys.executable, "-m", "edge", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


class NotifySocket:
    """What systemd listens on: an AF_UNIX datagram socket; collects every message sent to it."""

    def __init__(self, abstract: bool = False) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            name = f"edge-test-{os.getpid()}-{time.monotonic_ns()}"
            self.sock.bind("\0" + name)
            self.env_value = "@" + name
            self._dir: str | None = None
        else:
            # sun_path holds 108 bytes: pytest's tmp_path can be longer than that.
            self._dir = tempfile.mkdtemp(prefix="sdn-", dir="/tmp")
            path = os.path.join(self._dir, "notify")
            self.sock.bind(path)
            self.env_value = path
        self.messages: list[dict[str, str]] = []

    def _read(self, timeout: float) -> bool:
        self.sock.settimeout(max(timeout, 0.001))
        try:
            data = self.sock.recv(4096)
        except (TimeoutError, BlockingIOError):
            return False
        fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
        self.messages.append(fields)
        return True

    def wait_for(
        self, pred: Callable[[dict[str, str]], bool], timeout: float = 10.0
    ) -> dict[str, str]:
        """The first message (received earlier or within ``timeout``) that ``pred`` accepts."""
        seen = 0
        deadline = time.monotonic() + timeout
        while True:
            for msg in self.messages[seen:]:
                if pred(msg):
                    return msg
            seen = len(self.messages)
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    f"no matching notification within {timeout} s: {self.messages}"
                )
            self._read(min(left, 0.2))

    async def await_for(
        self, pred: Callable[[dict[str, str]], bool], timeout: float = 10.0
    ) -> dict[str, str]:
        return await asyncio.to_thread(self.wait_for, pred, timeout)

    def drain(self, seconds: float) -> list[dict[str, str]]:
        """Everything that arrives within ``seconds`` (blocking)."""
        start = len(self.messages)
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self._read(left)
        return self.messages[start:]

    def close(self) -> None:
        self.sock.close()
        if self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)


@pytest.fixture
def notify_socket() -> Iterator[NotifySocket]:
    s = NotifySocket()
    yield s
    s.close()


OP = OperationSpec("4711", "0020", "FG-4711", Decimal(100), std_cycle_s=0.01)
OP2 = OperationSpec("4712", "0010", "FG-4712", Decimal(50))


async def _produce_plant_db(directory: Path) -> Path:
    """A database as the real gateway leaves it: MQTT sync through a real broker without a relay.

    An order is dispatched and runs; 25 parts counted (two partial confirmations go to the broker
    and wait for the relay: state 'published'), 2 scrapped, the machine goes down (an open stop);
    then the broker goes away and 7 more parts are counted (their rows stay 'pending').
    """
    with Mosquitto(directory / "broker") as broker:
        cfg = load(write_config(directory, mqtt=True, port=broker.port, log_level="warning"))
        engine = await open_engine(cfg)
        stop = asyncio.Event()
        task = asyncio.create_task(run_gateway(cfg, stop=stop, engine=engine))
        await engine.submit(DispatchList(1, (OP, OP2), engine.now(), timed=True))
        await engine.submit(
            Transition(Action.START_PRODUCTION, str(OP.key), "operator:1", engine.now())
        )
        for _ in range(25):
            await engine.submit(Pulses("press_good", 1, engine.now()))
        await engine.submit(ReportScrap(Decimal(2), "S03", "operator:1", engine.now()))
        await engine.submit(MachineStateChanged("press", MachineState.DOWN, engine.now()))
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            published = await engine.run_store(
                lambda: engine.store.conn.execute(
                    "SELECT COUNT(*) FROM outbox WHERE state = 'published'"
                ).fetchone()[0]
            )
            pending = await engine.run_store(lambda: len(engine.store.outbox_pending()))
            if published >= 2 and pending == 0:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the uplink did not publish the confirmations")
        broker.stop()
    await asyncio.sleep(0.3)
    for _ in range(7):
        await engine.submit(Pulses("press_good", 1, engine.now()))
    stop.set()
    await asyncio.wait_for(task, 15)
    return Path(cfg.store.path)


@pytest.fixture(scope="session")
def plant_db_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("plant")
    return asyncio.run(asyncio.wait_for(_produce_plant_db(directory), 60))


@pytest.fixture
def plant(tmp_path: Path, plant_db_template: Path) -> tuple[Path, Path]:
    """(config, database): a private copy of the plant database with a local-only config."""
    db = tmp_path / "edge.db"
    shutil.copy(plant_db_template, db)
    return write_config(tmp_path, db=db), db
