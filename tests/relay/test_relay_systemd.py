"""``edge relay run`` under systemd's notify protocol, as a real process against a real
mosquitto and a real PostgreSQL: READY=1 and its STATUS= line, watchdog pings while the ledger
answers, none while a query hangs (every PostgreSQL process frozen with SIGSTOP), pings again
once it answers, and STOPPING=1 at SIGTERM; PostgreSQL shut down (an error is an answer) does
not stop the pings. The exit codes the unit relies on: 2 for a config problem, 3 for a refused
ledger."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from simulators.broker import Mosquitto
from tests.ops.conftest import NotifySocket
from tests.pg import PostgresCluster
from tests.relay.harness import pg_url

pytestmark = pytest.mark.timeout(90)
REPO = Path(__file__).resolve().parents[2]
WATCHDOG_S = 2.0  # pings every 1 s; a query unanswered for 1 s withholds them


def write_config(tmp_path: Path, broker: Mosquitto, ledger: str) -> Path:
    drop = tmp_path / "erp-inbox"
    drop.mkdir(exist_ok=True)
    path = tmp_path / "relay.toml"
    path.write_text(
        f"""
[relay]
enterprise = "acme"
instance = "relay-sd"
lease_s = 6.0
poll_s = 0.2

[mqtt]
host = "{broker.host}"
port = {broker.port}
reconnect_min_s = 0.2

[ledger]
url = "{ledger}"

[erp]
system = "file"
format = "csv"
drop_dir = "{drop}"
"""
    )
    return path


def relay(config: Path, notify: NotifySocket | None = None) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("WATCHDOG_PID", None)
    if notify is not None:
        env |= {"NOTIFY_SOCKET": notify.env_value, "WATCHDOG_USEC": str(int(WATCHDOG_S * 1e6))}
    return subprocess.Popen(
        [sys.executable, "-m", "edge", "relay", "run", "-c", str(config)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def server_pids(cluster: PostgresCluster) -> list[int]:
    """The postmaster and every process it started (backends, checkpointer, ...)."""
    main = int((cluster.data_dir / "postmaster.pid").read_text().split()[0])
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == main:
                    children.append(int(entry.name))
    return [main, *children]


@contextlib.contextmanager
def frozen(cluster: PostgresCluster) -> Iterator[None]:
    pids = server_pids(cluster)
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


def pings(messages: list[dict[str, str]]) -> int:
    return sum(1 for m in messages if m.get("WATCHDOG") == "1")


def test_ready_status_pings_while_the_ledger_answers_and_stopping(
    broker: Mosquitto, pg_private: PostgresCluster, tmp_path: Path
) -> None:
    dsn = pg_private.create_database("relay")
    notify = NotifySocket()
    proc = relay(write_config(tmp_path, broker, pg_url(dsn)), notify)
    try:
        ready = notify.wait_for(lambda m: m.get("READY") == "1", 30)
        assert ready["STATUS"].startswith("relay relay-sd: 0 received, 0 posted"), ready
        notify.wait_for(lambda m: m.get("WATCHDOG") == "1", 5)

        with frozen(pg_private):
            stuck = notify.wait_for(lambda m: "ledger stuck" in m.get("STATUS", ""), 5)
            assert "a query has had no answer for" in stuck["STATUS"]
            assert pings(notify.drain(2.5)) == 0  # systemd would restart it after WatchdogSec
        notify.wait_for(lambda m: m.get("WATCHDOG") == "1", 5)  # answers again: pings again

        pg_private.stop()  # down, not hung: the relay waits it out, and keeps pinging
        assert pings(notify.drain(3.0)) >= 2

        proc.send_signal(signal.SIGTERM)
        stopping = notify.wait_for(lambda m: m.get("STOPPING") == "1", 10)
        assert stopping["STATUS"] == "relay relay-sd: stopping"
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        notify.close()
    assert proc.returncode == 0, err
    assert "ledger_not_answering" in err
    assert "watchdog ping withheld" in err


def test_a_config_problem_exits_2_and_a_refused_ledger_3(broker: Mosquitto, tmp_path: Path) -> None:
    """What the unit's RestartPreventExitStatus=2 3 relies on: no restart loop for either."""
    damaged = tmp_path / "ledger.db"
    damaged.write_bytes(b"this is not a database" * 100)
    config = write_config(tmp_path, broker, f"sqlite:///{damaged}")
    proc = relay(config)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 3, err
    assert f"the ledger is refused: {damaged}" in err
    assert damaged.read_bytes() == b"this is not a database" * 100  # left as it was

    text = config.read_text().replace('drop_dir = "', 'drop_dir = "/nonexistent')
    text = text.replace('format = "csv"', 'format = "csv"\nack_dir = "/nonexistent/answers"')
    config.write_text(text.replace(f"sqlite:///{damaged}", f"sqlite:///{tmp_path}/ok.db"))
    started = time.monotonic()
    proc = relay(config)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2, err
    assert "drop_dir" in err, err
    assert time.monotonic() - started < 30
