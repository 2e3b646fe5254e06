"""The HID scanner's evdev shell (edge.scanners.evdev_reader). Without /dev/uinput no input
device can be made here, so the device itself is not read: these tests hold the errors to being
clear (no evdev package, no device, no input device), the retrying when the device is missing,
and the decoding loop over batches of recorded events with its idle flush."""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Sequence
from pathlib import Path

import pytest

from edge.scanners import hid
from edge.scanners.config import ScannerConfig
from edge.scanners.errors import ScannerUnavailable
from edge.scanners.evdev_reader import DeviceGone, HidScanner, decoded, open_device
from edge.scanners.hid import HidDecoder, HidResult, KeyRefused, Scanned

HAVE_EVDEV = importlib.util.find_spec("evdev") is not None
Event = tuple[int, int, int]


def tap(code: int) -> list[Event]:
    return [(hid.EV_KEY, code, 1), (hid.EV_SYN, 0, 0), (hid.EV_KEY, code, 0), (hid.EV_SYN, 0, 0)]


def test_a_missing_device_is_named(tmp_path: Path) -> None:
    path = tmp_path / "usb-Scanner-event-kbd"
    with pytest.raises(DeviceGone) as info:
        open_device(str(path))
    assert info.value.strerror == f"hid scanner {path}: no such device (not plugged in?)"


def test_a_file_is_no_input_device(tmp_path: Path) -> None:
    path = tmp_path / "event3"
    path.write_bytes(b"")
    with pytest.raises(ScannerUnavailable, match="is no character device"):
        open_device(str(path))


@pytest.mark.skipif(HAVE_EVDEV, reason="python-evdev is installed here")
def test_without_evdev_the_package_is_named() -> None:
    with pytest.raises(ScannerUnavailable) as info:
        open_device("/dev/null")
    assert "needs the Python package evdev" in str(info.value)
    assert "pip install evdev" in str(info.value)


@pytest.mark.skipif(HAVE_EVDEV, reason="python-evdev is installed here")
async def test_without_evdev_scans_fail_at_once() -> None:
    scanner = HidScanner("/dev/null")

    async def first() -> HidResult:
        async with asyncio.timeout(2):
            return await anext(aiter(scanner.scans()))

    with pytest.raises(ScannerUnavailable, match="evdev"):
        await first()


async def test_a_missing_device_is_reported_and_retried(tmp_path: Path) -> None:
    path = tmp_path / "kbd"
    changes: list[tuple[bool, str | None]] = []
    scanner = HidScanner(
        str(path),
        reconnect_s=0.02,
        reconnect_max_s=0.05,
        on_change=lambda c, p: changes.append((c, p)),
    )

    async def run() -> None:
        async for _ in scanner.scans():
            pass

    task = asyncio.create_task(run())
    await asyncio.sleep(0.3)
    assert not task.done()  # still trying, not raising
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not scanner.connected
    assert scanner.problem == f"hid scanner {path}: no such device (not plugged in?)"
    assert changes == [(False, scanner.problem)]  # reported once, not at every retry


async def collect(
    batches: list[Sequence[Event] | BaseException], decoder: HidDecoder, idle_s: float, n: int
) -> list[HidResult]:
    queue: asyncio.Queue[Sequence[Event] | BaseException] = asyncio.Queue()
    for b in batches:
        queue.put_nowait(b)
    out: list[HidResult] = []
    async with asyncio.timeout(3):
        async for r in decoded(queue, decoder, idle_s=idle_s):
            out.append(r)
            if len(out) == n:
                break
    return out


async def test_batches_are_decoded_across_reads() -> None:
    batches: list[Sequence[Event] | BaseException] = [
        tap(hid.KEY_Z),
        [*tap(hid.KEY_1), (hid.EV_KEY, hid.KEY_LEFTSHIFT, 1)],
        [*tap(hid.KEY_7), (hid.EV_KEY, hid.KEY_LEFTSHIFT, 0), *tap(hid.KEY_ENTER)],
    ]
    assert await collect(batches, HidDecoder("de"), 0.5, 1) == [Scanned("y1/")]


async def test_a_scan_without_its_end_is_flushed_after_idle() -> None:
    got = await collect([tap(hid.KEY_A)], HidDecoder("us"), 0.1, 1)
    assert isinstance(got[0], KeyRefused)
    assert got[0].typed == "a"
    assert "no end key" in got[0].reason


async def test_the_device_ending_is_raised() -> None:
    queue: asyncio.Queue[Sequence[Event] | BaseException] = asyncio.Queue()
    queue.put_nowait(OSError(19, "No such device"))
    with pytest.raises(OSError, match="No such device"):
        await anext(aiter(decoded(queue, HidDecoder(), idle_s=0.1)))


def test_from_config() -> None:
    cfg = ScannerConfig(
        enabled=True, kind="hid", device="/dev/input/event3", layout="de", separator_keys=[66]
    )
    s = HidScanner.from_config(cfg)
    assert (s.device, s.grab, s.idle_s) == ("/dev/input/event3", True, 0.5)
    with pytest.raises(ValueError, match="layout 'xx'"):
        HidScanner("/dev/input/event3", layout="xx")  # type: ignore[arg-type]
