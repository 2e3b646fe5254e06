"""A TCP proxy for the chain's network faults, run in threads (the chain's tests are
synchronous): it listens on a free loopback port and forwards each connection to a target.

Faults, each on the live connections and on the ones still to come:

- :meth:`NetProxy.stall` (``seconds``): connections are accepted, nothing is forwarded either
  way until the stall is over; what was sent meanwhile is delivered then, in order (a link
  that goes dark without closing, the way a lost route or a wedged switch looks to TCP).
- :meth:`NetProxy.drop`: every open connection is closed at once (a reset with ``reset``);
  the peers must connect again by themselves.
- ``delay_down_s`` / ``delay_up_s``: every chunk from the target to the client (down) or from
  the client to the target (up) is held that long before it is sent on, order kept (with MQTT
  behind it: the broker's PUBACKs reach the gateway late).

``accepted`` counts the connections the proxy took (a reconnect shows as one more).
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections import deque
from types import TracebackType

CHUNK = 65536


class _Pipe:
    """One direction of one connection: a reader thread queues what arrives with its time, a
    writer thread sends each chunk on once its delay (and any stall) is over."""

    def __init__(self, proxy: NetProxy, src: socket.socket, dst: socket.socket, down: bool):
        self.proxy = proxy
        self.src = src
        self.dst = dst
        self.down = down
        self.queue: deque[tuple[float, bytes]] = deque()
        self.cond = threading.Condition()
        self.eof = False
        self.threads = [
            threading.Thread(target=self._read, daemon=True, name="proxy-read"),
            threading.Thread(target=self._write, daemon=True, name="proxy-write"),
        ]
        for t in self.threads:
            t.start()

    def _read(self) -> None:
        try:
            while data := self.src.recv(CHUNK):
                with self.cond:
                    self.queue.append((time.monotonic(), data))
                    self.cond.notify()
        except OSError:
            pass
        finally:
            with self.cond:
                self.eof = True
                self.cond.notify()

    def _write(self) -> None:
        try:
            while True:
                with self.cond:
                    while not self.queue and not self.eof:
                        self.cond.wait(0.5)
                    if not self.queue:  # the source closed and everything went through
                        break
                    got, data = self.queue[0]
                # held for the delay of this direction and while the proxy stalls
                while (wait := self.proxy.hold_until(got, self.down) - time.monotonic()) > 0:
                    time.sleep(min(wait, 0.05))
                    if self.proxy.closed:
                        return
                with self.cond:
                    self.queue.popleft()
                self.dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                self.dst.shutdown(socket.SHUT_WR)


class _Link:
    def __init__(self, proxy: NetProxy, client: socket.socket, upstream: socket.socket) -> None:
        self.client = client
        self.upstream = upstream
        self.pipes = (
            _Pipe(proxy, client, upstream, down=False),
            _Pipe(proxy, upstream, client, down=True),
        )

    def close(self, reset: bool = False) -> None:
        for s in (self.client, self.upstream):
            with contextlib.suppress(OSError):
                if reset:  # SO_LINGER 0: close sends RST, not FIN
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                s.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                s.close()

    def alive(self) -> bool:
        return any(t.is_alive() for p in self.pipes for t in p.threads)


class NetProxy:
    """Forwards 127.0.0.1:``port`` (a free one) to ``host:target_port``; see the module."""

    def __init__(self, host: str, target_port: int) -> None:
        self.target = (host, target_port)
        self.delay_down_s = 0.0
        self.delay_up_s = 0.0
        self.accepted = 0
        self.drops = 0
        self.closed = False
        self._stall_until = 0.0
        self._lock = threading.Lock()
        self._links: list[_Link] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)  # accept() wakes up to see close()
        self.port: int = self._listener.getsockname()[1]
        self._acceptor = threading.Thread(target=self._accept, daemon=True, name="proxy-accept")
        self._acceptor.start()

    def __enter__(self) -> NetProxy:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ faults

    def stall(self, seconds: float) -> None:
        """Forward nothing, either way, for ``seconds`` from now (returns at once)."""
        with self._lock:
            self._stall_until = max(self._stall_until, time.monotonic() + seconds)

    def unstall(self) -> None:
        """End a stall now."""
        with self._lock:
            self._stall_until = 0.0

    def stalled(self) -> bool:
        return time.monotonic() < self._stall_until

    def drop(self, *, reset: bool = False) -> int:
        """Close every open connection; how many there were."""
        with self._lock:
            links, self._links = self._links, []
            self.drops += 1
        for link in links:
            link.close(reset)
        return len(links)

    def hold_until(self, got: float, down: bool) -> float:
        """When a chunk that arrived at ``got`` may go on."""
        delay = self.delay_down_s if down else self.delay_up_s
        return max(got + delay, self._stall_until)

    def open_links(self) -> int:
        with self._lock:
            self._links = [link for link in self._links if link.alive()]
            return len(self._links)

    # ------------------------------------------------------------------ plumbing

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:  # the target is down: the client sees the line close
                with contextlib.suppress(OSError):
                    client.close()
                continue
            for s in (client, upstream):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self.accepted += 1
                self._links.append(_Link(self, client, upstream))

    def close(self) -> None:
        self.closed = True
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            links, self._links = self._links, []
        for link in links:
            link.close()
