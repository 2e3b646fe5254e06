"""systemd's notify protocol without libsystemd: readiness, status, watchdog pings, stopping.

    notifier = Notifier.from_env()          # a no-op when not started by systemd (Type=notify)
    notifier.ready("running")               # READY=1 + STATUS=running
    notifier.watchdog()                     # WATCHDOG=1
    notifier.stopping()                     # STOPPING=1

The protocol is one datagram per message, ``KEY=VALUE`` lines, sent to the AF_UNIX datagram
socket named by ``$NOTIFY_SOCKET`` (a path, or ``@name`` for the abstract namespace).
``$WATCHDOG_USEC`` (and ``$WATCHDOG_PID``, when set, must be our pid) gives the watchdog
interval; :func:`watchdog_interval` reads it. Sending never raises: a lost notification must not
stop the gateway (systemd then restarts it, which is the safe direction).

:class:`EngineLiveness` decides whether the gateway deserves a watchdog ping: the engine task is
alive, its last commit did not fail, no batch has been in hand for too long, and queued inputs
are being taken. A broker that is down is NOT a reason to stop pinging: the gateway is built to
work offline, and a restart would not bring the broker back.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

log = structlog.get_logger("edge.systemd")

__all__ = ["EngineLiveness", "Liveness", "Notifier", "socket_address", "watchdog_interval"]


def socket_address(value: str) -> str | bytes:
    """``$NOTIFY_SOCKET`` as an address for ``socket.sendto``: '@name' is the abstract namespace."""
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    return value


def watchdog_interval(env: Mapping[str, str] | None = None) -> float | None:
    """The watchdog interval in seconds, or None when systemd does not watch us.

    ``WATCHDOG_PID``, when present, names the process the watchdog is meant for: a child that
    inherited the environment must not ping on its parent's behalf.
    """
    env = os.environ if env is None else env
    raw = env.get("WATCHDOG_USEC", "").strip()
    if not raw:
        return None
    try:
        usec = int(raw)
    except ValueError:
        return None
    if usec <= 0:
        return None
    pid = env.get("WATCHDOG_PID", "").strip()
    if pid:
        try:
            if int(pid) != os.getpid():
                return None
        except ValueError:
            return None
    return usec / 1_000_000


class Notifier:
    """Sends notify messages; with no socket configured every call does nothing."""

    def __init__(self, address: str | bytes | None) -> None:
        self.address = address
        self._sock: socket.socket | None = None
        self.sent = 0
        self.failed = 0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Notifier:
        env = os.environ if env is None else env
        raw = env.get("NOTIFY_SOCKET", "").strip()
        return cls(socket_address(raw) if raw else None)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *fields: str) -> bool:
        """Send ``fields`` (``KEY=VALUE`` each) as one datagram; False if it could not be sent."""
        if self.address is None or not fields:
            return False
        # A newline inside a value would start a new assignment: keep each field on its line.
        message = "\n".join(f.replace("\n", " ") for f in fields).encode()
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(message, self.address)
        except OSError as exc:
            self.failed += 1
            if self.failed == 1 or self.failed % 100 == 0:
                log.warning("systemd notification failed", error=str(exc), failed=self.failed)
            return False
        self.sent += 1
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, status: str) -> bool:
        return self.send(f"STATUS={status}")

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def stopping(self, status: str | None = None) -> bool:
        return self.send("STOPPING=1", *([f"STATUS={status}"] if status else []))

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class Liveness(Protocol):
    """Whatever decides whether a daemon deserves its watchdog ping."""

    def problem(self) -> str | None:
        """None when alive, else why not (for STATUS= and the log)."""
        ...


class _EngineView(Protocol):
    """What the liveness check reads from the engine (all plain attributes: no I/O, no locks)."""

    healthy: bool
    busy_since: float | None
    batches_done: int

    @property
    def queue_depth(self) -> int: ...


@dataclass(slots=True)
class EngineLiveness:
    """Is the engine making progress? Cheap: reads a few attributes the engine loop updates.

    - the engine task has not ended;
    - ``engine.healthy``: the last commit did not fail;
    - ``engine.busy_since``: a batch taken off the queue is applied and committed within
      ``stall_s`` (a hung fsync, a lock never released, a runaway loop in the core all show here);
    - inputs waiting on the queue are taken within ``stall_s`` (``engine.batches_done`` moves).

    An idle engine (nothing queued, nothing in hand) is alive.
    """

    engine: _EngineView
    task: asyncio.Future[Any] | None
    stall_s: float
    _waiting_since: float | None = None
    _seen_batches: int = -1

    def problem(self, now: float | None = None) -> str | None:
        """None when alive, else why not (for STATUS= and the log)."""
        now = time.monotonic() if now is None else now
        engine = self.engine
        if self.task is not None and self.task.done():
            return "engine task ended"
        if not engine.healthy:
            return "engine unhealthy: the last commit failed"
        busy = engine.busy_since
        if busy is not None and now - busy > self.stall_s:
            return f"engine stuck: one batch in hand for {now - busy:.1f} s"
        if engine.queue_depth and busy is None:
            if self._waiting_since is None or engine.batches_done != self._seen_batches:
                self._waiting_since = now
                self._seen_batches = engine.batches_done
            elif now - self._waiting_since > self.stall_s:
                return (
                    f"engine stuck: {engine.queue_depth} inputs queued and none taken for "
                    f"{now - self._waiting_since:.1f} s"
                )
        else:
            self._waiting_since = None
        return None


async def watchdog_loop(
    notifier: Notifier,
    liveness: Liveness,
    interval_s: float,
    *,
    status: Callable[[], str] | None = None,
) -> None:
    """Ping at half the watchdog interval, only while ``liveness`` finds no problem.

    ``status`` gives a STATUS= text sent along with each ping.
    """
    period = interval_s / 2
    reported: str | None = None
    while True:
        problem = liveness.problem()
        if problem is None:
            text = status() if status is not None else None
            notifier.send("WATCHDOG=1", *([f"STATUS={text}"] if text else []))
            if reported is not None:
                log.warning("alive again; watchdog pings resume")
                reported = None
        else:
            # No ping: systemd kills and restarts us after WatchdogSec unless this clears.
            notifier.status(problem)
            kind = problem.split(":", 1)[0]
            if kind != reported:
                log.error("watchdog ping withheld", problem=problem)
                reported = kind
        await asyncio.sleep(period)
