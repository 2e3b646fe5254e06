"""systemd's notify protocol against a real AF_UNIX datagram socket (no mocks)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from edge import systemd
from edge.app import open_engine, run_gateway
from edge.domain.inputs import Pulses
from tests.ops.conftest import REPO, NotifySocket, load, write_config

pytestmark = pytest.mark.timeout(60)


def test_messages_reach_a_path_socket(notify_socket: NotifySocket) -> None:
    n = systemd.Notifier.from_env({"NOTIFY_SOCKET": notify_socket.env_value})
    assert n.enabled
    assert n.ready("running: 0 inputs")
    assert n.watchdog()
    assert n.status("two\nlines")
    assert n.stopping()
    n.close()
    got = notify_socket.drain(0.3)
    assert got == [
        {"READY": "1", "STATUS": "running: 0 inputs"},
        {"WATCHDOG": "1"},
        {"STATUS": "two lines"},  # a newline would have started a new assignment
        {"STOPPING": "1"},
    ]


def test_messages_reach_an_abstract_socket() -> None:
    sock = NotifySocket(abstract=True)
    try:
        assert sock.env_value.startswith("@")
        n = systemd.Notifier.from_env({"NOTIFY_SOCKET": sock.env_value})
        assert n.ready()
        assert sock.wait_for(lambda m: m.get("READY") == "1", 2)
        n.close()
    finally:
        sock.close()


def test_without_a_socket_nothing_is_sent_and_nothing_fails(tmp_path: Path) -> None:
    assert not systemd.Notifier.from_env({}).ready()
    # A socket that went away (systemd restarted) is reported, never raised.
    n = systemd.Notifier.from_env({"NOTIFY_SOCKET": str(tmp_path / "gone")})
    assert not n.watchdog()
    assert n.failed == 1


def test_watchdog_interval_parsing() -> None:
    pid = str(os.getpid())
    assert systemd.watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 30.0
    assert systemd.watchdog_interval({"WATCHDOG_USEC": "500000", "WATCHDOG_PID": pid}) == 0.5
    assert systemd.watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None
    assert systemd.watchdog_interval({}) is None
    assert systemd.watchdog_interval({"WATCHDOG_USEC": "0"}) is None
    assert systemd.watchdog_interval({"WATCHDOG_USEC": "soon"}) is None


def _pings(messages: list[dict[str, str]]) -> int:
    return sum(1 for m in messages if m.get("WATCHDOG") == "1")


async def test_ready_watchdog_only_while_the_engine_commits_and_stopping(
    tmp_path: Path, notify_socket: NotifySocket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", notify_socket.env_value)
    monkeypatch.setenv("WATCHDOG_USEC", "600000")  # ping every 0.3 s; stuck after 0.3 s
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    cfg = load(write_config(tmp_path, log_level="warning"))
    engine = await open_engine(cfg)
    stop = asyncio.Event()
    task = asyncio.create_task(run_gateway(cfg, stop=stop, engine=engine))
    try:
        ready = await notify_socket.await_for(lambda m: m.get("READY") == "1", 5)
        assert "running" in ready["STATUS"]
        await notify_socket.await_for(lambda m: m.get("WATCHDOG") == "1", 2)

        # The store thread hangs (as a stuck fsync would): the next commit cannot finish.
        release = threading.Event()
        blocker = asyncio.ensure_future(engine.run_store(release.wait, 30))
        count = asyncio.ensure_future(engine.submit(Pulses("press_good", 1, engine.now())))
        stuck = await notify_socket.await_for(lambda m: "engine stuck" in m.get("STATUS", ""), 5)
        assert "WATCHDOG" not in stuck
        quiet = await asyncio.to_thread(notify_socket.drain, 1.0)
        assert _pings(quiet) == 0, quiet

        release.set()
        await asyncio.wait_for(blocker, 5)
        await asyncio.wait_for(count, 5)
        resumed = await asyncio.to_thread(notify_socket.drain, 1.0)
        assert _pings(resumed) >= 2, resumed

    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
    await notify_socket.await_for(lambda m: m.get("STOPPING") == "1", 2)


async def test_liveness_sees_queued_inputs_nobody_takes(tmp_path: Path) -> None:
    """An engine whose loop does not run (here: never started) while inputs wait is stuck."""
    engine = await open_engine(load(write_config(tmp_path, log_level="warning")))
    try:
        liveness = systemd.EngineLiveness(engine, None, stall_s=0.2)
        now = time.monotonic()
        assert liveness.problem(now) is None  # idle: alive
        engine.post(Pulses("press_good", 1, engine.now()))
        assert liveness.problem(now) is None  # just queued
        problem = liveness.problem(now + 0.5)
        assert problem is not None
        assert "none taken" in problem
        task = asyncio.create_task(engine.run(None))
        while engine.queue_depth:
            await asyncio.sleep(0.01)
        assert liveness.problem() is None
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        liveness.task = task
        assert liveness.problem() == "engine task ended"
    finally:
        await engine.close()


def test_edge_run_under_a_notify_socket_ready_then_stopping_on_sigterm(
    tmp_path: Path, notify_socket: NotifySocket
) -> None:
    cfg = write_config(tmp_path)
    env = {
        **os.environ,
        "NOTIFY_SOCKET": notify_socket.env_value,
        "WATCHDOG_USEC": "1000000",
    }
    env.pop("WATCHDOG_PID", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge", "run", "-c", str(cfg)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        started = time.monotonic()
        notify_socket.wait_for(lambda m: m.get("READY") == "1", 20)
        notify_socket.wait_for(lambda m: m.get("WATCHDOG") == "1", 5)
        assert time.monotonic() - started < 20
        proc.send_signal(signal.SIGTERM)
        notify_socket.wait_for(lambda m: m.get("STOPPING") == "1", 5)
        _, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    assert proc.returncode == 0, err
    assert "gateway stopped" in err
