"""The HID scanner read for real through the kernel: a virtual keyboard made with /dev/uinput
types what a scanner would, and :class:`edge.scanners.evdev_reader.HidScanner` reads it from its
event device, grabbed. Needs /dev/uinput writable and python-evdev (``pip install evdev``);
where either is missing (as on a machine without the uinput module), it is skipped and the
decoder's tests with recorded events (tests/scanners/test_hid.py) stand for it."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import pytest

from edge.scanners import hid
from edge.scanners.evdev_reader import HidScanner
from edge.scanners.hid import Scanned

UINPUT = "/dev/uinput"

pytestmark = pytest.mark.skipif(
    not os.access(UINPUT, os.W_OK), reason=f"{UINPUT} is not there or not writable"
)


def _typer(layout: str) -> dict[str, tuple[int, ...]]:
    """The chord that types each character on ``layout``, from the decoder's own tables
    (a plain key where there is one, else Shift and the key); Enter ends a scan."""
    lay = hid.LAYOUTS[layout]
    out: dict[str, tuple[int, ...]] = {}
    for code, ch in lay.shifted.items():
        if code not in lay.dead:
            out.setdefault(ch, (hid.KEY_LEFTSHIFT, code))
    for code, ch in lay.plain.items():
        if code not in lay.dead:
            out[ch] = (code,)
    out["\n"] = (hid.KEY_ENTER,)
    return out


def _type(ui: Any, text: str, layout: str) -> None:
    ev_key = pytest.importorskip("evdev").ecodes.EV_KEY
    chords = _typer(layout)
    for ch in text:
        chord = chords[ch]
        for code in chord:
            ui.write(ev_key, code, 1)
            ui.syn()
        for code in reversed(chord):
            ui.write(ev_key, code, 0)
            ui.syn()
        time.sleep(0.002)


@pytest.mark.parametrize(("layout", "code"), [("us", "OP4711/0020"), ("de", "OP4711/0020")])
async def test_a_virtual_keyboard_s_scan_is_read_from_its_event_device(
    layout: str, code: str
) -> None:
    evdev = pytest.importorskip("evdev")
    keys = sorted({code for chord in _typer(layout).values() for code in chord})
    ui = evdev.UInput({evdev.ecodes.EV_KEY: keys}, name="edge-test-scanner")
    try:
        await asyncio.sleep(0.3)  # udev makes the event device
        scanner = HidScanner(ui.device.path, layout=layout, idle_s=0.5, reconnect_s=0.1)  # type: ignore[arg-type]
        scans = scanner.scans()
        first = asyncio.ensure_future(anext(scans))
        await asyncio.sleep(0.3)  # opened and grabbed
        assert scanner.connected
        await asyncio.to_thread(_type, ui, code + "\n", layout)
        got = await asyncio.wait_for(first, 5)
        assert got == Scanned(code)
        await scans.aclose()
    finally:
        ui.close()
