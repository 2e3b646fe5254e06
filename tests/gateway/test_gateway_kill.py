"""Kill -9 the gateway while it drains a backlog: the ERP relay gets each confirmation once."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from edge.domain.model import ConfirmationStatus, OperationKey
from edge.store.replay import verify
from edge.store.store import Store
from simulators.broker import Mosquitto
from simulators.central import CentralSimulator
from tests.gateway.conftest import ROOT, Collector, gateway_config

REPO = Path(__file__).resolve().parents[2]
OP = OperationKey("4711", "0020")


def start_child(config: Path, *args: str) -> subprocess.Popen[str]:
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.gateway.gateway_child", str(config), *args],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "READY"
    return child


def kill(child: subprocess.Popen[str]) -> None:
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=10)


def read_db(db: Path) -> tuple[dict[str, ConfirmationStatus], int, int, bool]:
    store = Store(db)
    store.open(boot=False)
    try:
        with store.read_snapshot():
            wc = store.load()
            assert wc is not None
            assert verify(store) == []
            statuses = {c.idem_key: c.status for c in wc.confirmations.values()}
            good = int(wc.operations[OP].counted.good)
            open_rows = store.outbox_depth()
            completed = wc.operations[OP].status.value == "completed"
        return statuses, good, open_rows, completed
    finally:
        store.close()


async def assert_health_retained(broker: Mosquitto, *, online: bool) -> None:
    late = Collector(broker.host, broker.port, [f"{ROOT}/_mes_v1/health"], "health-check")
    late.start()
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            found = late.on("/_mes_v1/health")
            if found and found[-1].json()["online"] is online:
                assert found[-1].retain
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"retained health online={online} not seen")
    finally:
        late.stop()


async def test_kill_9_during_backlog_drain_posts_each_confirmation_once(tmp_path: Path) -> None:
    rng = random.Random(4711)
    broker = Mosquitto(tmp_path / "broker")  # not started yet: the gateway works offline
    cfg = gateway_config(tmp_path, broker)
    config = tmp_path / "edge.toml"
    db = cfg.store.path

    # 1. Offline: a backlog of counts and confirmations builds up; the gateway dies mid-count.
    child = start_child(config, "--produce-s", "10")
    await asyncio.sleep(2.5)
    kill(child)
    backlog, _, open_rows, _ = read_db(db)
    assert len(backlog) >= 10
    assert open_rows > len(backlog)

    broker.start()
    try:
        async with CentralSimulator(broker.host, broker.port, roots=[ROOT]) as central:
            # 2. The broker is back: killed again at random moments while draining.
            for _ in range(3):
                child = start_child(config)
                await asyncio.sleep(rng.uniform(0.1, 0.6))
                kill(child)
            # The broker published the Last Will: central sees the gateway offline.
            await assert_health_retained(broker, online=False)
            # 3. Once more, to the end: complete the operation and let everything drain.
            child = start_child(config, "--complete")
            try:
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    statuses, good, open_rows, completed = read_db(db)
                    if (
                        completed
                        and open_rows == 0
                        and all(s is ConfirmationStatus.POSTED for s in statuses.values())
                    ):
                        break
                    await asyncio.sleep(0.3)
                else:
                    raise AssertionError(f"not drained: {open_rows} outbox rows open")
            finally:
                child.send_signal(signal.SIGTERM)
                child.wait(timeout=15)
            ledger = central.ledger
            posted = ledger.count_by_idem()
            assert set(posted) == set(statuses), "ledger and gateway disagree on confirmations"
            assert set(posted.values()) == {1}, "a confirmation was posted twice"
            totals = ledger.totals("4711", "0020")
            assert totals["yield"] == good
            assert totals["final"] is True
            assert ledger.received["duplicates"] >= 0
    finally:
        broker.stop()
