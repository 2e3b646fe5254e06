"""A serial barcode scanner (RS-232, or USB in CDC/virtual COM mode) read over pyserial.

A scanner sends each scan as one line: the code and a terminator (CR, LF or CR LF, as set in the
scanner; ``terminator`` says which, ``any`` takes each). :class:`SerialScanner` yields the scans
as text (latin-1, so every byte is seen as sent and a stray one is shown, never an error):

- The port is read without blocking the event loop: pyserial opens and sets it up, the loop
  watches its file descriptor, and each read takes only what is there.
- A scan longer than ``max_length`` is dropped up to its terminator, with a warning.
- A partial scan whose terminator does not come within ``read_timeout_s`` of its last byte is
  dropped with a warning (a scanner unplugged mid-scan, line noise).
- When the device goes away (a USB scanner unplugged, a read error) or cannot be opened, that is
  logged and reported (:attr:`SerialScanner.connected`, :attr:`SerialScanner.problem`), and the
  port is opened again after a pause that doubles from ``reconnect_s`` to ``reconnect_max_s``.
  :meth:`SerialScanner.scans` never raises for the device's faults; only cancelling it ends it
  (or :class:`~edge.scanners.errors.ScannerUnavailable` at once if pyserial is not installed).
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any, Literal

import structlog

from edge.scanners.config import ScannerConfig
from edge.scanners.errors import ScannerUnavailable
from edge.scanners.link import LinkState

__all__ = ["Dropped", "LineSplitter", "SerialScanner", "Terminator"]

Terminator = Literal["cr", "lf", "crlf", "any"]
_ENDS: dict[str, re.Pattern[bytes]] = {
    "cr": re.compile(rb"\r"),
    "lf": re.compile(rb"\n"),
    "crlf": re.compile(rb"\r\n"),
    "any": re.compile(rb"[\r\n]"),  # CR LF: a line and an empty one, skipped
}


@dataclass(frozen=True, slots=True)
class Dropped:
    """Bytes that were not a scan: ``reason`` says why, ``head`` is their start."""

    reason: str
    head: bytes


class LineSplitter:
    """Bytes in, terminated lines out (without the terminator); lines over ``max_length`` and
    empty ones are not lines. Pure."""

    def __init__(self, terminator: Terminator = "any", max_length: int = 256) -> None:
        if terminator not in _ENDS:
            raise ValueError(f"terminator {terminator!r} is none of {sorted(_ENDS)}")
        if max_length < 1:
            raise ValueError(f"max_length {max_length} must be at least 1")
        self.terminator = terminator
        self.max_length = max_length
        self._end = _ENDS[terminator]
        self._buf = bytearray()
        self._overlong: bytes | None = None  # the head of a line being skipped

    @property
    def pending(self) -> bool:
        return bool(self._buf) or self._overlong is not None

    def feed(self, data: bytes) -> list[bytes | Dropped]:
        self._buf += data
        out: list[bytes | Dropped] = []
        while True:
            m = self._end.search(self._buf)
            if m is None:
                break
            line = bytes(self._buf[: m.start()])
            del self._buf[: m.end()]
            if self._overlong is not None:
                out.append(self._too_long(self._overlong))
                self._overlong = None
                continue
            line = line.strip(b"\r\n")
            if len(line) > self.max_length:
                out.append(self._too_long(line))
            elif line:
                out.append(line)
        keep = self.max_length + (1 if self.terminator == "crlf" else 0)  # its CR
        if self._overlong is None and len(self._buf) > keep:
            self._overlong = bytes(self._buf[:40])
        if self._overlong is not None:
            self._buf.clear()
        return out

    def _too_long(self, head: bytes) -> Dropped:
        return Dropped(f"longer than {self.max_length} bytes", head[:40])

    def drop(self) -> Dropped | None:
        """Give up the partial line (its terminator did not come)."""
        if self._overlong is not None:
            head, self._overlong = self._overlong, None
            self._buf.clear()
            return self._too_long(head)
        if not self._buf:
            return None
        head = bytes(self._buf[:40])
        self._buf.clear()
        return Dropped("no terminator came in time: the scan is incomplete", head)


class _Lost(Exception):
    """The port failed while open."""


class SerialScanner(LinkState):
    """Scans from one serial device; see the module's description."""

    def __init__(
        self,
        device: str,
        *,
        baudrate: int = 9600,
        terminator: Terminator = "any",
        max_length: int = 256,
        read_timeout_s: float = 0.5,
        reconnect_s: float = 1.0,
        reconnect_max_s: float = 30.0,
        encoding: str = "latin-1",
        logger: Any = None,
        on_change: Callable[[bool, str | None], None] | None = None,
    ) -> None:
        LineSplitter(terminator, max_length)  # checks both
        if read_timeout_s <= 0 or reconnect_s <= 0 or reconnect_max_s < reconnect_s:
            raise ValueError(
                f"read_timeout_s {read_timeout_s} and reconnect_s {reconnect_s} must be above 0,"
                f" reconnect_max_s {reconnect_max_s} at least reconnect_s"
            )
        self.device = device
        self.baudrate = baudrate
        self.terminator: Terminator = terminator
        self.max_length = max_length
        self.read_timeout_s = read_timeout_s
        self.reconnect_s = reconnect_s
        self.reconnect_max_s = reconnect_max_s
        self.encoding = encoding
        self.log = (logger or structlog.get_logger("edge.scanner")).bind(device=device)
        self.on_change = on_change
        self.connected = False
        self.problem: str | None = None  # the last fault of the device, None while all is well
        self.opened = 0  # how often the port was opened
        self.dropped = 0  # partial, over-long scans dropped

    @classmethod
    def from_config(cls, cfg: ScannerConfig, **kw: Any) -> SerialScanner:
        return cls(
            cfg.device,
            baudrate=cfg.baudrate,
            terminator=cfg.terminator,
            max_length=cfg.max_length,
            read_timeout_s=cfg.read_timeout_s,
            reconnect_s=cfg.reconnect_s,
            reconnect_max_s=cfg.reconnect_max_s,
            **kw,
        )

    # -- state

    def _dropped(self, dropped: Dropped) -> None:
        self.dropped += 1
        self.log.warning(
            "scanner_scan_dropped",
            reason=dropped.reason,
            head=dropped.head.decode(self.encoding, "replace"),
        )

    # -- the port

    def _open(self) -> Any:
        try:  # pyserial comes with pymodbus[serial]; imported only where a scanner is read
            import serial
        except ImportError as exc:
            raise ScannerUnavailable(
                "the serial scanner needs the Python package pyserial"
                f" (pip install pyserial): {exc}"
            ) from None

        try:
            return serial.Serial(self.device, self.baudrate, timeout=0, exclusive=True)
        except (serial.SerialException, OSError, ValueError) as exc:
            code = getattr(exc, "errno", None)  # pyserial's message names the port again
            reason = os.strerror(code) if isinstance(code, int) else str(exc)
            raise _Lost(f"cannot open {self.device}: {reason}") from None

    async def _connect(self) -> Any:
        delay = self.reconnect_s
        while True:
            try:
                port = self._open()
            except _Lost as exc:
                if str(exc) != self.problem:
                    self.log.warning("scanner_unavailable", problem=str(exc), retry_s=delay)
                self._set(False, str(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.reconnect_max_s)
                continue
            self.opened += 1
            self.log.info("scanner_connected", baudrate=self.baudrate)
            self._set(True, None)
            return port

    async def scans(self) -> AsyncGenerator[str, None]:
        """The scans as they come, for ever (cancel to stop)."""
        loop = asyncio.get_running_loop()
        while True:
            port = await self._connect()
            queue: asyncio.Queue[bytes | Exception] = asyncio.Queue()
            fd: int = port.fileno()

            def readable(port: Any = port, queue: asyncio.Queue[bytes | Exception] = queue) -> None:
                try:
                    data = port.read(4096)
                except Exception as exc:  # pyserial's SerialException, an OSError: the port died
                    loop.remove_reader(port.fileno())
                    queue.put_nowait(exc)
                    return
                if data:
                    queue.put_nowait(bytes(data))

            loop.add_reader(fd, readable)
            lines = LineSplitter(self.terminator, self.max_length)
            try:
                while True:
                    try:
                        async with asyncio.timeout(self.read_timeout_s if lines.pending else None):
                            item = await queue.get()
                    except TimeoutError:
                        dropped = lines.drop()
                        if dropped is not None:
                            self._dropped(dropped)
                        continue
                    if isinstance(item, Exception):
                        problem = f"{self.device} lost: {item}"
                        self.log.warning("scanner_lost", problem=problem)
                        self._set(False, problem)
                        break
                    for line in lines.feed(item):
                        if isinstance(line, Dropped):
                            self._dropped(line)
                        else:
                            yield line.decode(self.encoding, "replace")
            finally:
                loop.remove_reader(fd)
                try:
                    port.close()
                except Exception as exc:  # closing a dead port may fail too; it is gone anyway
                    self.log.debug("scanner_close_failed", error=str(exc))
                if self.connected:
                    self._set(False, self.problem)
            await asyncio.sleep(self.reconnect_s)
