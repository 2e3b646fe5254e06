"""Two ``edge relay run`` processes share the work through one PostgreSQL ledger; one is killed
with SIGKILL while SAP is slow and its posts are in the air. The gateways resend what has no
final verdict (as a gateway does after ``result_timeout_s``). Nothing is lost, nothing posted
twice: SAP's ledger has every confirmation exactly once."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from edge.relay.erp import external_id
from simulators.broker import Mosquitto
from simulators.erp.sap import SapStandIn
from tests.relay.builders import posting
from tests.relay.harness import Gateways, pg_url

pytestmark = pytest.mark.timeout(120)
REPO = Path(__file__).resolve().parents[2]


def write_config(path: Path, name: str, broker: Mosquitto, ledger: str, sap: SapStandIn) -> Path:
    secret = path.parent / "sap-password"
    secret.write_text("relay-secret\n")
    path.write_text(
        f"""
[relay]
enterprise = "acme"
instance = "{name}"
lease_s = 6.0
retry_min_s = 0.2
retry_max_s = 2.0
poll_s = 0.05
concurrency = 4
log_json = true

[mqtt]
host = "{broker.host}"
port = {broker.port}
reconnect_min_s = 0.2

[ledger]
url = "{ledger}"

[erp]
system = "sap"
service_url = "{sap.url}"
user = "RELAY"
password_file = "{secret}"
timeout_s = 2.0
"""
    )
    return path


@pytest.fixture
async def sap() -> AsyncIterator[SapStandIn]:
    async with SapStandIn(user="RELAY", password="relay-secret") as stand_in:
        yield stand_in


def start(config: Path, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "edge", "relay", "run", "-c", str(config)],
        cwd=REPO,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


async def test_a_relay_killed_mid_post_loses_nothing_and_posts_nothing_twice(
    broker: Mosquitto, sap: SapStandIn, tmp_path: Path, pg_dsn: str
) -> None:
    url = pg_url(pg_dsn)
    sap.state.set_latency(0.8)
    logs = {n: tmp_path / f"{n}.log" for n in ("one", "two")}
    procs = {
        n: start(write_config(tmp_path / f"{n}.toml", n, broker, url, sap), logs[n])
        for n in ("one", "two")
    }
    parts = [posting(n, order=f"30000{o:02d}") for o in range(6) for n in (1, 2, 3)]
    try:
        async with Gateways(broker) as gw:
            await gw.wait(lambda: sum(1 for s in gw.states if s["online"]) >= 1, timeout=20)
            await asyncio.sleep(1.0)  # both subscribed
            for p in parts:
                await gw.send(p)
            deadline = time.monotonic() + 20
            while sap.state.posts < 4 and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            procs["one"].send_signal(signal.SIGKILL)
            procs["one"].wait(10)

            def unanswered() -> list[str]:
                done = {v.idem_key for v in gw.verdicts if v.status in ("posted", "duplicate")}
                return [p.idem_key for p in parts if p.idem_key not in done]

            deadline = time.monotonic() + 80
            while unanswered() and time.monotonic() < deadline:
                await asyncio.sleep(3.0)
                for p in parts:
                    if p.idem_key in unanswered():
                        await gw.send(p, historical=True)
            assert unanswered() == [], logs["two"].read_text()[-3000:]
            assert not [v for v in gw.verdicts if v.status == "rejected"]
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:  # pragma: no cover - reported below
                proc.kill()
    assert procs["two"].returncode == 0, logs["two"].read_text()[-3000:]
    counts = sap.state.count_by_external_id()
    assert counts == {external_id(p.idem_key): 1 for p in parts}
