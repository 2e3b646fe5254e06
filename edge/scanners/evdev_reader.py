"""A USB HID (keyboard) scanner read through python-evdev: a thin shell over
:class:`edge.scanners.hid.HidDecoder`.

The device (``/dev/input/eventN``, better its ``/dev/input/by-id/...-event-kbd`` link) is
grabbed exclusively, so the scans do not also type into the panel's kiosk browser. Its key
events go to the decoder; :meth:`HidScanner.scans` yields what the decoder makes of them: a
:class:`~edge.scanners.hid.Scanned` or a :class:`~edge.scanners.hid.KeyRefused` (shown to the
operator like any refused scan). A scan with no end key within ``idle_s`` is dropped as a
KeyRefused.

python-evdev is optional (``pip install evdev``) and imported only when a device is opened.
Without it, or for a path that is no input device, or without the right to read it,
:class:`~edge.scanners.errors.ScannerUnavailable` says so at once. A device that is missing
or goes away (unplugged) is reported (:attr:`HidScanner.connected`, :attr:`HidScanner.problem`)
and opened again after a pause doubling from ``reconnect_s`` to ``reconnect_max_s``.
"""

from __future__ import annotations

import asyncio
import errno
import importlib
import os
import stat
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Sequence
from typing import Any, Literal

import structlog

from edge.scanners.config import ScannerConfig
from edge.scanners.errors import ScannerUnavailable
from edge.scanners.hid import EV_KEY, HidDecoder, HidResult
from edge.scanners.link import LinkState

__all__ = ["DeviceGone", "HidScanner", "decoded", "open_device"]

Event = tuple[int, int, int]


class DeviceGone(OSError):
    """The input device is not there (yet, or any more): worth trying again later."""


def open_device(path: str, *, grab: bool = True) -> Any:
    """The evdev ``InputDevice`` at ``path``, grabbed if ``grab``.

    :class:`DeviceGone` if nothing is at ``path`` or it went away while opening;
    :class:`ScannerUnavailable` if python-evdev is missing, ``path`` is no input device, the
    gateway may not read it, or it has no keys."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise DeviceGone(
            errno.ENOENT, f"hid scanner {path}: no such device (not plugged in?)"
        ) from None
    except OSError as exc:
        raise DeviceGone(exc.errno, f"hid scanner {path}: {exc.strerror}") from None
    if not stat.S_ISCHR(mode):
        raise ScannerUnavailable(
            f"hid scanner {path} is no character device: expected /dev/input/eventN or a"
            " /dev/input/by-id/...-event-kbd link"
        )
    try:
        evdev = importlib.import_module("evdev")
    except ImportError as exc:
        raise ScannerUnavailable(
            "the hid scanner needs the Python package evdev (python-evdev; pip install evdev,"
            f" or the Debian package python3-evdev): {exc}"
        ) from None
    try:
        device = evdev.InputDevice(path)
    except PermissionError:
        raise ScannerUnavailable(
            f"hid scanner {path}: not allowed to read it (the gateway's user needs the group"
            " that owns it, usually 'input')"
        ) from None
    except OSError as exc:
        raise DeviceGone(exc.errno, f"hid scanner {path}: {exc.strerror or exc}") from None
    if EV_KEY not in device.capabilities():
        device.close()
        raise ScannerUnavailable(f"hid scanner {path} ({device.name}) has no keys")
    if grab:
        try:
            device.grab()
        except OSError as exc:
            device.close()
            held = " (another program holds it)" if exc.errno == errno.EBUSY else ""
            raise DeviceGone(exc.errno, f"hid scanner {path}: cannot grab it{held}") from None
    return device


async def decoded(
    events: asyncio.Queue[Sequence[Event] | BaseException],
    decoder: HidDecoder,
    *,
    idle_s: float,
) -> AsyncIterator[HidResult]:
    """What ``decoder`` makes of the batches of events put on ``events``; a scan quiet for
    ``idle_s`` without its end is flushed (a refusal). An exception put on the queue is raised
    (the device's end)."""
    while True:
        try:
            async with asyncio.timeout(idle_s if decoder.pending else None):
                item = await events.get()
        except TimeoutError:
            dropped = decoder.flush()
            if dropped is not None:
                yield dropped
            continue
        if isinstance(item, BaseException):
            raise item
        for type_, code, value in item:
            result = decoder.feed(type_, code, value)
            if result is not None:
                yield result


class HidScanner(LinkState):
    """Scans from one HID scanner; see the module's description."""

    def __init__(
        self,
        device: str,
        *,
        layout: Literal["us", "de"] = "us",
        max_length: int = 256,
        end_on_tab: bool = False,
        separator_keys: Iterable[int] = (),
        grab: bool = True,
        idle_s: float = 0.5,
        reconnect_s: float = 1.0,
        reconnect_max_s: float = 30.0,
        logger: Any = None,
        on_change: Callable[[bool, str | None], None] | None = None,
    ) -> None:
        self.device = device
        self.grab = grab
        self.idle_s = idle_s
        self.reconnect_s = reconnect_s
        self.reconnect_max_s = max(reconnect_max_s, reconnect_s)
        self._decoder_args = (layout, max_length, end_on_tab, tuple(separator_keys))
        HidDecoder(layout, max_length=max_length)  # checks the layout and the length now
        self.log = (logger or structlog.get_logger("edge.scanner")).bind(device=device)
        self.on_change = on_change
        self.connected = False
        self.problem: str | None = None
        self.opened = 0

    @classmethod
    def from_config(cls, cfg: ScannerConfig, **kw: Any) -> HidScanner:
        return cls(
            cfg.device,
            layout=cfg.layout,
            max_length=cfg.max_length,
            end_on_tab=cfg.end_on_tab,
            separator_keys=cfg.separator_keys,
            grab=cfg.grab,
            idle_s=cfg.read_timeout_s,
            reconnect_s=cfg.reconnect_s,
            reconnect_max_s=cfg.reconnect_max_s,
            **kw,
        )

    def _decoder(self) -> HidDecoder:
        layout, max_length, end_on_tab, keys = self._decoder_args
        return HidDecoder(layout, max_length=max_length, end_on_tab=end_on_tab, separator_keys=keys)

    async def _connect(self) -> Any:
        delay = self.reconnect_s
        while True:
            try:
                device = open_device(self.device, grab=self.grab)
            except DeviceGone as exc:
                problem = exc.strerror or str(exc)
                if problem != self.problem:
                    self.log.warning("scanner_unavailable", problem=problem, retry_s=delay)
                self._set(False, problem)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.reconnect_max_s)
                continue
            self.opened += 1
            self.log.info("scanner_connected", name=str(getattr(device, "name", "")))
            self._set(True, None)
            return device

    async def scans(self) -> AsyncGenerator[HidResult, None]:
        """The scans as they come, for ever (cancel to stop); ScannerUnavailable at once if
        the device can never be read here."""
        loop = asyncio.get_running_loop()
        while True:
            device = await self._connect()
            queue: asyncio.Queue[Sequence[Event] | BaseException] = asyncio.Queue()
            fd: int = device.fd

            def readable(device: Any = device, queue: Any = queue) -> None:
                try:
                    batch = [(e.type, e.code, e.value) for e in device.read()]
                except BlockingIOError:
                    return
                except OSError as exc:  # ENODEV: unplugged
                    loop.remove_reader(device.fd)
                    queue.put_nowait(exc)
                    return
                queue.put_nowait(batch)

            loop.add_reader(fd, readable)
            try:
                async for result in decoded(queue, self._decoder(), idle_s=self.idle_s):
                    yield result
            except OSError as exc:
                problem = f"hid scanner {self.device} lost: {exc.strerror or exc}"
                self.log.warning("scanner_lost", problem=problem)
                self._set(False, problem)
            finally:
                loop.remove_reader(fd)
                try:
                    device.close()
                except OSError as exc:
                    self.log.debug("scanner_close_failed", error=str(exc))
                if self.connected:
                    self._set(False, self.problem)
            await asyncio.sleep(self.reconnect_s)
