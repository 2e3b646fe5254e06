"""The stack light (andon lamp): the work center's state, readable from across the hall.

What it shows is a pure function of the work center (:func:`edge.domain.andon.andon_state`, which
the panel's colour renders too; :func:`lights_for` here):

- **red**: the machine is down: a stop is open (or the machine state says down). **Red
  blinking**: a stop waits for its reason (rules.md §4: past the micro-stop threshold, none
  given): the open stop, or the latest real stop after it ended, until somebody gives the reason;
  so a machine that runs again with a reason still missing shows green and red blinking.
- **green**: no stop, and an operation is running.
- **yellow**: no stop and nothing running: an operation in setup or interrupted, or no operation
  active at all (the work center waits for an order to be started: somebody should act).
- **blue** (the call lamp, rules.md §8): a call for help is open; blinking until somebody
  acknowledged it, steady while help is on its way, off once every call is closed.
- **buzzer**: sounds ``buzzer_s`` when a stop starts or a call is raised (not for what was
  already open when the gateway started).
- **the order's signals** (``target_reached``, ``over_tolerance``): a running operation that
  reached its target blinks the green lamp; one past its over-delivery tolerance that nobody
  acknowledged blinks the yellow lamp (:func:`edge.domain.andon.signalled`; each configurable:
  ``none``, ``blink_green``, ``blink_yellow``, ``yellow``). Red and blue never change for them.
- **maintenance due** (``maintenance_due``, by default ``yellow``): a maintenance interval fell
  due (``[[service]]``) and nobody said it was done; the order's signals win where they use
  the same lamp.

The light follows the engine: after each commit a listener wakes a small task that recomputes
the lamps and writes only those that changed; the same task flips blinking lamps every
``blink_s`` (all in phase). At start every lamp (not the buzzer) is on for ``lamp_test_s`` so a
dead bulb shows; at shutdown every lamp goes off, since a light the gateway no longer drives
would show a state nobody keeps up to date.

The lamps are GPIO outputs (:class:`GpioLamps`) or coils of a Modbus I/O module
(:class:`ModbusCoils`, through the Modbus source's ``write_coils``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from gpiozero import DigitalOutputDevice, GPIOZeroError

from edge.aio import wait_set
from edge.config import StackLightEntry
from edge.domain.andon import Lamp, Lights, Signal, signalled
from edge.domain.core import WorkCenter
from edge.domain.events import Event
from edge.errors import SourceUnavailable
from edge.logging import Logger, get_logger
from edge.ports import StateView
from edge.sources.gpio import open_with_retry, shared_factory

__all__ = [
    "GpioLamps",
    "Lamp",
    "LampDriver",
    "Lights",
    "ModbusCoils",
    "StackLight",
    "alarm_keys",
    "lights_for",
    "outputs",
]

CoilWriter = Callable[[int, list[bool]], Awaitable[None]]
RETRY_WRITE_S = 1.0


def lights_for(wc: WorkCenter, cfg: StackLightEntry | None = None) -> Lights:
    """The lamps for the work center's state (see the module's docstring), with the order's
    signals as ``cfg`` says (its defaults without one)."""
    if cfg is None:
        return signalled(wc.andon, Signal.BLINK_GREEN, Signal.BLINK_YELLOW, Signal.YELLOW)
    return signalled(
        wc.andon,
        Signal(cfg.target_reached),
        Signal(cfg.over_tolerance),
        Signal(cfg.maintenance_due),
    )


def alarm_keys(wc: WorkCenter) -> frozenset[str]:
    """What the buzzer sounds for when it is new: the open stop and the open calls for help."""
    keys = {f"call:{call_id}" for call_id in wc.help_calls}
    if wc.open_stop is not None:
        keys.add(f"stop:{wc.open_stop.stop_id}")
    return frozenset(keys)


def outputs(lights: Lights, *, blink_on: bool, buzzing: bool) -> dict[str, bool]:
    """Each output's level now: a blinking lamp is on in the blink phase ``blink_on``."""

    def level(lamp: Lamp) -> bool:
        return lamp is Lamp.ON or (lamp is Lamp.BLINK and blink_on)

    return {
        "green": level(lights.green),
        "yellow": level(lights.yellow),
        "red": level(lights.red),
        "blue": level(lights.blue),
        "buzzer": buzzing,
    }


# -- drivers -------------------------------------------------------------------------------------


class LampDriver(Protocol):
    def open(self) -> None:
        """Take the outputs; raises SourceUnavailable when they cannot be had (yet)."""

    async def set(self, lamp: str, on: bool) -> None:
        """Switch one wired lamp ("green", ..., "buzzer")."""

    def close(self) -> None:
        """Give the outputs back."""


class GpioLamps:
    """Lamps on GPIO outputs (a relay or transistor board); ``active = "low"`` inverts them."""

    def __init__(
        self, cfg: StackLightEntry, *, pin_factory: str = "lgpio", factory: Any = None
    ) -> None:
        self.cfg = cfg
        self.factory_name = pin_factory
        self.factory = factory
        self._devices: dict[str, Any] = {}

    def open(self) -> None:
        factory = self.factory if self.factory is not None else shared_factory(self.factory_name)
        devices: dict[str, Any] = {}
        try:
            for lamp, pin in self.cfg.lamps.items():
                devices[lamp] = DigitalOutputDevice(
                    pin,
                    active_high=self.cfg.active == "high",
                    initial_value=False,
                    pin_factory=factory,
                )
        except (GPIOZeroError, OSError) as exc:
            for device in devices.values():
                device.close()
            raise SourceUnavailable(
                f"stack light on GPIO{pin}: {type(exc).__name__}: {exc}"
            ) from None
        self._devices = devices

    async def set(self, lamp: str, on: bool) -> None:
        # A GPIO write is a register or ioctl write: microseconds, fine on the loop.
        device = self._devices[lamp]
        if on:
            device.on()
        else:
            device.off()

    def close(self) -> None:
        devices, self._devices = self._devices, {}
        for device in devices.values():
            with contextlib.suppress(Exception):
                device.close()


class ModbusCoils:
    """Lamps on coils of a Modbus I/O module, written through its source's ``write_coils``."""

    def __init__(self, cfg: StackLightEntry, write_coils: CoilWriter | None) -> None:
        self.cfg = cfg
        self._write = write_coils

    def open(self) -> None:
        if self._write is None:
            raise SourceUnavailable(
                f"modbus source {self.cfg.modbus_source!r} offers no coil output (write_coils)"
            )

    async def set(self, lamp: str, on: bool) -> None:
        assert self._write is not None
        await self._write(self.cfg.lamps[lamp], [on])

    def close(self) -> None:
        pass  # the Modbus source owns the connection


# -- the light -----------------------------------------------------------------------------------


class StackLight:
    """Drives one stack light from the engine's state."""

    def __init__(
        self,
        cfg: StackLightEntry,
        engine: StateView,
        driver: LampDriver,
        *,
        logger: Logger | None = None,
    ) -> None:
        self.cfg = cfg
        self.engine = engine
        self.driver = driver
        self.log: Logger = logger or get_logger("edge.stacklight")
        self.status = "starting"
        self.last_error: str | None = None
        self.lights = Lights()
        self.written: dict[str, bool] = {}  # what each wired output was last set to
        self._wake = asyncio.Event()
        self._following = False
        self._seen: frozenset[str] = frozenset()
        self._buzz_until = 0.0
        self._listening = False

    @property
    def link_status(self) -> str:
        return self.status

    async def run(self) -> None:
        await open_with_retry(self.driver.open, self._down)
        self.status = "ok"
        self.last_error = None
        self._seen = alarm_keys(self.engine.work_center)
        if not self._listening:  # the engine has no way to remove a listener
            self.engine.add_listener(self._on_commit)
            self._listening = True
        self._following = True
        try:
            if self.cfg.lamp_test_s:
                test = {lamp: lamp != "buzzer" for lamp in self.cfg.lamps}
                await self._write(test)
                self.log.info("stack light lamp test", lamps=sorted(self.cfg.lamps))
                await asyncio.sleep(self.cfg.lamp_test_s)
            await self._follow()
        finally:
            self._following = False
            self.status = "stopped"
            with contextlib.suppress(Exception):
                await self._write(dict.fromkeys(self.cfg.lamps, False))
            self.driver.close()

    async def _follow(self) -> None:
        blink_s = self.cfg.blink_s
        while True:
            self._wake.clear()
            now = time.monotonic()
            lights = lights_for(self.engine.work_center, self.cfg)
            if lights != self.lights:
                self.log.info(
                    "stack light",
                    green=lights.green.value,
                    yellow=lights.yellow.value,
                    red=lights.red.value,
                    blue=lights.blue.value,
                )
                self.lights = lights
            buzzing = now < self._buzz_until
            phase = int(now / blink_s)
            ok = await self._write(outputs(lights, blink_on=phase % 2 == 0, buzzing=buzzing))
            waits = []
            if lights.blinking:
                waits.append((phase + 1) * blink_s - now)
            if buzzing:
                waits.append(self._buzz_until - now)
            if not ok:
                waits.append(RETRY_WRITE_S)
            timeout = max(0.0, min(waits)) if waits else None
            await wait_set(self._wake, timeout)

    async def _write(self, levels: dict[str, bool]) -> bool:
        """Set the wired outputs that differ from what they were last set to; False if one
        could not be set (it is tried again)."""
        ok = True
        for lamp in self.cfg.lamps:
            value = levels.get(lamp, False)
            if self.written.get(lamp) is value:
                continue
            try:
                await self.driver.set(lamp, value)
            except Exception as exc:  # a Modbus module away: the lamp is set on the next try
                ok = False
                self.written.pop(lamp, None)
                self._down(SourceUnavailable(f"{lamp}: {type(exc).__name__}: {exc}"))
                continue
            self.written[lamp] = value
        if ok and self.status == "down":
            self.status = "ok"
            self.last_error = None
            self.log.info("stack light outputs back")
        return ok

    def _down(self, exc: SourceUnavailable) -> None:
        reason = str(exc)
        if self.status != "down" or self.last_error != reason:
            self.log.warning("stack light outputs unavailable; retrying", reason=reason)
        self.status = "down"
        self.last_error = reason

    def _on_commit(self, events: Sequence[Event]) -> None:
        # The engine's loop, right after a commit: note what is new, let the task redraw.
        if not self._following:
            return
        keys = alarm_keys(self.engine.work_center)
        if keys - self._seen and self.cfg.buzzer_s and "buzzer" in self.cfg.lamps:
            self._buzz_until = max(self._buzz_until, time.monotonic() + self.cfg.buzzer_s)
        self._seen = keys
        self._wake.set()
