"""What the ERP stand-ins share to be served and run: the ``with`` / ``async with`` life cycle,
uvicorn on a bound socket (on the caller's loop or on a thread of its own), the latency and
outage knobs, and the command-line wait for SIGTERM/SIGINT."""

from __future__ import annotations

import abc
import asyncio
import contextlib
import random
import signal
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Any, Self

import uvicorn

__all__ = [
    "AsyncLifecycle",
    "FaultKnobs",
    "Latency",
    "Lifecycle",
    "QuietServer",
    "ThreadedServer",
    "bind",
    "parse_latency",
    "run_until_signal",
    "signal_event",
    "until_started",
    "uvicorn_config",
    "wait_until",
]

# ---------------------------------------------------------------------------------------------
# The life cycle


class AsyncLifecycle(abc.ABC):
    """``async with``: :meth:`_astart` on entry, :meth:`_astop` on exit."""

    @abc.abstractmethod
    async def _astart(self) -> None: ...

    @abc.abstractmethod
    async def _astop(self) -> None: ...

    async def __aenter__(self) -> Self:
        await self._astart()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._astop()


class Lifecycle(AsyncLifecycle):
    """``with`` and ``async with`` over a blocking :meth:`start` and :meth:`close` (the async
    form runs them on a worker thread)."""

    @abc.abstractmethod
    def start(self) -> None: ...

    @abc.abstractmethod
    def close(self) -> None: ...

    async def _astart(self) -> None:
        await asyncio.to_thread(self.start)

    async def _astop(self) -> None:
        await asyncio.to_thread(self.close)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


# ---------------------------------------------------------------------------------------------
# uvicorn


def bind(host: str, port: int) -> socket.socket:
    """A listening, non-blocking socket on ``host:port`` (``0``: a free port; IPv6 hosts too)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family, backlog=128)
    sock.setblocking(False)
    return sock


def uvicorn_config(app: Any, **overrides: Any) -> uvicorn.Config:
    """uvicorn's settings for a stand-in: no logging setup, no access log, no lifespan, no
    websockets, no server header, a one-second graceful shutdown; ``overrides`` on top."""
    settings: dict[str, Any] = {
        "log_config": None,
        "log_level": "warning",
        "access_log": False,
        "lifespan": "off",
        "ws": "none",
        "server_header": False,
        "timeout_graceful_shutdown": 1,
    }
    settings.update(overrides)
    return uvicorn.Config(app, **settings)


class QuietServer(uvicorn.Server):
    """uvicorn's server without its signal handlers: the runner (or the CLI) owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def until_started(server: uvicorn.Server, task: asyncio.Task[None], poll_s: float) -> bool:
    """Wait until ``server`` (served by ``task``) accepts connections: ``True``; ``False`` when
    the task ended first."""
    while not server.started:
        if task.done():
            return False
        await asyncio.sleep(poll_s)
    return True


class ThreadedServer(Lifecycle):
    """An ASGI app served by uvicorn on a thread of its own (its own event loop).

    ``with``, ``async with`` or :meth:`start` / :meth:`stop`; ``port=0`` picks a free port.
    ``label`` names the stand-in in errors, ``thread_name`` prefixes its thread's name;
    ``config`` goes to :func:`uvicorn_config`. Subclasses may hook :meth:`_on_loop` (the
    server's loop is running) and :meth:`_on_stop`."""

    def __init__(
        self,
        app: Any,
        *,
        host: str,
        port: int,
        label: str,
        thread_name: str,
        **config: Any,
    ) -> None:
        self.host = host
        self._port = port
        self.app = app
        self._label = label
        self._thread_name = thread_name
        self._config = config
        self._thread: threading.Thread | None = None
        self._server: QuietServer | None = None
        self._sock: socket.socket | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None

    @property
    def port(self) -> int:
        return self._port

    @property
    def base(self) -> str:
        """``http://127.0.0.1:<port>``: the host URL (no trailing slash)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self._port}"

    def start(self, timeout_s: float = 5.0) -> None:
        """Bind, serve on a background thread, return once it answers."""
        if self._thread is not None:
            raise RuntimeError("already started")
        self._sock = bind(self.host, self._port)
        self._port = self._sock.getsockname()[1]
        self._server = QuietServer(uvicorn_config(self.app, **self._config))
        self._started.clear()
        self._error = None
        self._thread = threading.Thread(
            target=self._run, name=f"{self._thread_name}-{self._port}", daemon=True
        )
        self._thread.start()
        if not self._started.wait(timeout_s) or self._error is not None:
            error = self._error
            self.stop()
            raise RuntimeError(f"{self._label} did not start: {error!r}")

    def _on_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Called on the server's thread once its loop runs."""

    def _on_stop(self) -> None:
        """Called by :meth:`stop` once the server is down."""

    def _run(self) -> None:
        async def serve() -> None:
            assert self._server is not None
            assert self._sock is not None
            self._on_loop(asyncio.get_running_loop())
            task = asyncio.create_task(self._server.serve(sockets=[self._sock]))
            await until_started(self._server, task, 0.005)
            self._started.set()
            await task

        try:
            asyncio.run(serve())
        except BaseException as exc:  # reported by start()
            self._error = exc
        finally:
            self._started.set()

    def stop(self) -> None:
        """Stop serving (within about a second, open requests cut off) and free the port."""
        thread, server = self._thread, self._server
        if thread is not None and server is not None:
            server.should_exit = True
            thread.join(0.6)
            if thread.is_alive():
                server.force_exit = True
                thread.join(2.0)
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._thread = None
        self._server = None
        self._on_stop()

    def close(self) -> None:
        self.stop()


# ---------------------------------------------------------------------------------------------
# Knobs


def parse_latency(text: str) -> float | tuple[float, float]:
    """``"0.1"`` or ``"0.05-0.2"`` (seconds)."""
    low, sep, high = text.partition("-")
    return (float(low), float(high)) if sep else float(low)


class Latency:
    """A delay: fixed (``0.1``), uniform in a range (``(0.05, 0.2)``) or none (``None``)."""

    def __init__(self, latency_s: float | tuple[float, float] | None = None) -> None:
        self.span: tuple[float, float] = (0.0, 0.0)
        self.set(latency_s)

    def set(self, latency_s: float | tuple[float, float] | None) -> None:
        if latency_s is None:
            span = (0.0, 0.0)
        elif isinstance(latency_s, tuple):
            span = (float(latency_s[0]), float(latency_s[1]))
        else:
            span = (float(latency_s), float(latency_s))
        if span[0] < 0 or span[1] < span[0]:
            raise ValueError(f"bad latency {latency_s!r}")
        self.span = span

    def draw(self) -> float:
        low, high = self.span
        return low if high <= low else random.uniform(low, high)


class FaultKnobs:
    """The knobs every threaded stand-in's state has: a delay and an outage, under the state's
    lock (the server runs on its own loop, often in another thread, while a test turns them)."""

    def __init__(self, latency_s: float | tuple[float, float] | None = None) -> None:
        self._lock = threading.RLock()
        self._latency = Latency(latency_s)
        self._outage = False

    def set_latency(self, latency_s: float | tuple[float, float] | None) -> None:
        """A delay for every service request: fixed (``0.1``) or uniform in a range
        (``(0.05, 0.2)``); ``None`` for none."""
        with self._lock:
            self._latency.set(latency_s)

    def latency(self) -> float:
        return self._latency.draw()

    async def delay(self) -> None:
        """Sleep for one draw of the latency (none when it is 0)."""
        seconds = self.latency()
        if seconds > 0:
            await asyncio.sleep(seconds)

    def set_outage(self, on: bool = True) -> None:
        """While on, every service request (and the token endpoint) answers 503."""
        with self._lock:
            self._outage = on

    @property
    def outage(self) -> bool:
        return self._outage


# ---------------------------------------------------------------------------------------------
# The command line


def signal_event() -> threading.Event:
    """An event that SIGTERM and SIGINT set (the handlers are installed now, before the
    stand-in starts, so that a signal right after its first line is not lost)."""
    done = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return done


def wait_until(done: threading.Event) -> None:
    """Block until ``done`` is set (looking every half second, so signals get handled)."""
    while not done.wait(0.5):
        pass


def run_until_signal(runner: Lifecycle, banner: Callable[[], Iterable[str]], farewell: str) -> int:
    """A stand-in's ``main``: start ``runner``, print the lines of ``banner``, serve until
    SIGTERM or SIGINT, close it and print ``farewell``."""
    done = signal_event()
    runner.start()
    for line in banner():
        print(line, flush=True)
    try:
        wait_until(done)
    finally:
        runner.close()
    print(farewell, flush=True)
    return 0
