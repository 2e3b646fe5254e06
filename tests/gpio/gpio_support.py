"""Shared by the GPIO tests (imported as a plain module: pytest puts this folder on sys.path)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from gpiozero.pins.mock import MockPin

from edge.config import GatewayConfig, load_config

# 4711/0010 comes first in the dispatch sequence although its key sorts after 4711/0005.
FIRST = "4711/0010"
SECOND = "4711/0005"

COUNTER_PIN = 17
BUTTON_PINS = {
    "setup": 5,
    "produce": 6,
    "pause": 13,
    "resume": 19,
    "done": 26,
    "reason_next": 16,
    "reason_ok": 20,
    "scrap": 21,
    "help": 12,
}
LAMP_PINS = {"green": 22, "yellow": 23, "red": 24, "blue": 25, "buzzer": 27}

CONFIG = """
[gateway]
edge_id = "wc-test-01"
work_center = "WC1"
log_level = "warning"

[store]
path = "{db}"

[engine]
tick_interval_s = 0.2

[gpio]
pin_factory = "mock"

[stops]
micro_stop_s = 0

[[counting.sources]]
name = "pulses"
kind = "good"
signal = "pulse"

[[master_data.stop_reasons]]
code = "M01"
text = "No material"

[[master_data.stop_reasons]]
code = "B01"
text = "Break"
category = "planned"

[[master_data.scrap_reasons]]
code = "S03"
text = "Burr"

[[sources.gpio]]
name = "press_io"
batch_ms = 100

[[sources.gpio.counters]]
counter = "pulses"
pin = {counter_pin}

[[operator.buttons]]
name = "setup"
pin = {setup}
action = "start_setup"

[[operator.buttons]]
name = "produce"
pin = {produce}
action = "start_production"

[[operator.buttons]]
name = "pause"
pin = {pause}
action = "interrupt"

[[operator.buttons]]
name = "resume"
pin = {resume}
action = "resume"

[[operator.buttons]]
name = "done"
pin = {done}
action = "complete"
long_press_s = 1.0

[[operator.buttons]]
name = "reason_next"
pin = {reason_next}
action = "stop_reason_next"

[[operator.buttons]]
name = "reason_ok"
pin = {reason_ok}
action = "stop_reason_confirm"

[[operator.buttons]]
name = "scrap"
pin = {scrap}
action = "scrap_one"
reason = "S03"

[[operator.buttons]]
name = "help"
pin = {help}
action = "call_help"
category = "maintenance"

[operator.stacklight]
green = {green}
yellow = {yellow}
red = {red}
blue = {blue}
buzzer = {buzzer}
blink_s = 0.1
buzzer_s = 0.3
lamp_test_s = 0.3
"""


def config(tmp_path: Path, db: str = "edge.db") -> GatewayConfig:
    path = tmp_path / "edge.toml"
    path.write_text(
        CONFIG.format(db=tmp_path / db, counter_pin=COUNTER_PIN, **BUTTON_PINS, **LAMP_PINS),
        encoding="utf-8",
    )
    return load_config(path, env={})


async def until(check: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.01)


async def press(pin: MockPin, hold_s: float = 0.08) -> None:
    """A button wired to ground (pull-up, active low): pressed, held, released, and a pause
    as long as a hand needs before the next press (a press right after the release would be
    bounce, and debounced away)."""
    pin.drive_low()
    await asyncio.sleep(hold_s)
    pin.drive_high()
    await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def running_task(run: Callable[[], Awaitable[Any]]) -> AsyncIterator[asyncio.Task[Any]]:
    """Run a component's ``run()`` for the block, then cancel it and wait for its cleanup."""
    task = asyncio.ensure_future(run())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 5)
