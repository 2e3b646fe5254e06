"""The GPIO source: pulse counting on the gateway's own input pins (gpiozero).

Each ``[[sources.gpio.counters]]`` entry is one input pin feeding one pulse counter. gpiozero
calls back on its own thread for every edge; there the edge is debounced and, when it counts, a
per-counter tally goes up under a lock: nothing else happens per pulse. A task on the loop takes
the tallies every ``batch_ms`` and hands the non-zero ones to the engine as one batch of
:class:`~edge.domain.inputs.Pulses`, so a 50 Hz pulse train costs ten inputs a second, not fifty,
and loses nothing: pulses that arrive while a commit is on disk wait in the tally for the next
batch. On shutdown the pins are closed first, then the last partial batch is handed over.

Debounce is done here rather than by gpiozero's ``bounce_time``, whose meaning depends on the
pin factory (a glitch filter with lgpio, a lock-out after an edge with RPi.GPIO, nothing at
all with MockPin): an edge counts only when the line was quiet for ``bounce_ms`` before it.
Both edges restart the quiet time, so the bounce of a closing contact and that of an opening one
are dropped alike (a lock-out after the counted edge alone would count a bouncing release as a
second part). The price: ``bounce_ms`` must be shorter than the shortest high and low phase of
the signal (5 ms, the default, allows up to 100 pulses per second).

The helpers here (:func:`shared_factory`, :class:`InputLine`, :func:`open_with_retry`) also serve
the operator's buttons and the stack light, so that every GPIO user in the process shares one
pin factory and one debounce rule.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import random
import threading
from collections.abc import Callable
from typing import Any, Final, TypeVar

import structlog
from gpiozero import GPIOZeroError, InputDevice

from edge.config import GpioInput, GpioSource
from edge.domain.inputs import Input, Pulses
from edge.errors import EngineStopped, SourceUnavailable, StoreError
from edge.logging import Logger
from edge.ports import InputSink

__all__ = ["EdgeFilter", "GpioLink", "InputLine", "open_with_retry", "shared_factory"]

T = TypeVar("T")

RETRY_MIN_S: Final = 1.0
RETRY_MAX_S: Final = 30.0

# pin_factory key -> (gpiozero module, class, what to install when the import fails)
_FACTORIES: Final = {
    "lgpio": ("gpiozero.pins.lgpio", "LGPIOFactory", "python3-lgpio (or pip install lgpio)"),
    "rpigpio": ("gpiozero.pins.rpigpio", "RPiGPIOFactory", "python3-rpi.gpio (or RPi.GPIO)"),
    "native": ("gpiozero.pins.native", "NativeFactory", "nothing (needs /dev/gpiomem)"),
    "mock": ("gpiozero.pins.mock", "MockFactory", "nothing"),
}
_shared: dict[str, Any] = {}


def shared_factory(name: str) -> Any:
    """The process's gpiozero pin factory of this kind, made on first use.

    One per process: gpiozero keeps pin reservations per factory, so a pin claimed twice is only
    refused when counters, buttons and stack light share one; and a demo on the mock factory
    drives its simulated pins through this same object. Raises SourceUnavailable when it cannot
    be made (a missing library, no GPIO chip on this machine).
    """
    factory = _shared.get(name)
    if factory is None:
        factory = _shared[name] = _make_factory(name)
    return factory


def _make_factory(name: str) -> Any:
    if name not in _FACTORIES:
        raise SourceUnavailable(f"pin_factory = {name!r}: unknown (known: {', '.join(_FACTORIES)})")
    module_name, class_name, needs = _FACTORIES[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SourceUnavailable(
            f"pin_factory = {name!r} needs {needs}: {type(exc).__name__}: {exc}"
        ) from None
    try:
        return getattr(module, class_name)()
    # gpiozero and the GPIO libraries raise their own types, and OSError, RuntimeError ...
    except Exception as exc:
        raise SourceUnavailable(
            f"pin_factory = {name!r} cannot open the GPIO chip: {type(exc).__name__}: {exc}"
        ) from None


async def open_with_retry(
    open_fn: Callable[[], T], on_down: Callable[[SourceUnavailable], None]
) -> T:
    """``open_fn()`` until it works: a GPIO chip or an I/O module may come later (a driver
    loaded late, a container given the device on restart), and the rest of the gateway keeps
    working meanwhile."""
    delay = RETRY_MIN_S
    while True:
        try:
            return open_fn()
        except SourceUnavailable as exc:
            on_down(exc)
        await asyncio.sleep(delay * random.uniform(0.8, 1.2))
        delay = min(RETRY_MAX_S, delay * 2)


class EdgeFilter:
    """Debounce by quiet time: an edge counts when no edge came within ``bounce_s`` before it.

    ``ticks`` are the pin factory's timestamps of the edges (their differences in seconds come
    from the factory's ``ticks_diff``), so a late callback does not shorten a quiet time.
    Not thread-safe: one pin's edges arrive one after another on one gpiozero thread.
    """

    __slots__ = ("_diff", "_last", "bounce_s")

    def __init__(self, bounce_s: float, ticks_diff: Callable[[Any, Any], float]) -> None:
        self.bounce_s = bounce_s
        self._diff = ticks_diff
        self._last: Any = None

    def accept(self, ticks: Any) -> bool:
        last, self._last = self._last, ticks
        return last is None or self._diff(ticks, last) >= self.bounce_s


class InputLine:
    """One debounced GPIO input; ``on_edge(active)`` runs on gpiozero's thread per kept edge."""

    def __init__(self, entry: GpioInput, factory: Any, on_edge: Callable[[bool], None]) -> None:
        pull_up = {"up": True, "down": False, "off": None}[entry.pull]
        self.pin_number = entry.pin
        self._active_high = entry.active_high
        self._on_edge = on_edge
        self._filter = EdgeFilter(entry.bounce_ms / 1000, factory.ticks_diff)
        try:
            # InputDevice (not DigitalInputDevice): it reserves the pin and sets the pull, and
            # leaves the edges to us, so no gpiozero debounce or event thread gets in between.
            self.device = InputDevice(
                entry.pin,
                pull_up=pull_up,
                active_state=entry.active_high if pull_up is None else None,
                pin_factory=factory,
            )
        except (GPIOZeroError, OSError) as exc:
            raise SourceUnavailable(f"GPIO pin {entry.pin}: {type(exc).__name__}: {exc}") from None
        try:
            pin = self.device.pin
            pin.bounce = None
            pin.edges = "both"
            # A bound method: gpiozero keeps only a weak reference, the owner keeps this line.
            pin.when_changed = self._changed
        except (GPIOZeroError, OSError) as exc:
            self.device.close()
            raise SourceUnavailable(
                f"GPIO pin {entry.pin}: edge detection: {type(exc).__name__}: {exc}"
            ) from None

    @property
    def is_active(self) -> bool:
        """The line's level right now (not debounced)."""
        return bool(self.device.pin.state) == self._active_high

    def close(self) -> None:
        self.device.close()

    def _changed(self, ticks: Any, state: Any) -> None:
        if self._filter.accept(ticks):
            self._on_edge(bool(state) == self._active_high)


class _Tally:
    """Pulses counted on gpiozero's thread, taken on the loop: the lock is all they share."""

    __slots__ = ("_lock", "_n")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._n = 0

    def add(self, n: int = 1) -> None:
        with self._lock:
            self._n += n

    def take(self) -> int:
        with self._lock:
            n, self._n = self._n, 0
        return n


class GpioLink:
    """One ``[[sources.gpio]]`` entry: its input pins, counted and handed over in batches."""

    def __init__(
        self,
        cfg: GpioSource,
        engine: InputSink,
        *,
        pin_factory: str = "lgpio",
        factory: Any = None,
        logger: Logger | None = None,
    ) -> None:
        self.cfg = cfg
        self.engine = engine
        self.factory_name = pin_factory
        self.factory = factory  # None: the process's shared factory of that kind, at start
        self.log = (logger or structlog.get_logger("edge.gpio")).bind(source=cfg.name)
        self.status = "starting"
        self.last_error: str | None = None
        self.counted = 0  # pulses handed to the engine since start
        self._tallies = {c.counter: _Tally() for c in cfg.counters}
        self._lines: list[InputLine] = []

    @property
    def link_status(self) -> str:
        return self.status

    # ------------------------------------------------------------------ the loop

    async def run(self) -> None:
        await open_with_retry(self._open, self._down)
        self.status = "ok"
        self.last_error = None
        self.log.info("gpio source ready", pins=[c.pin for c in self.cfg.counters])
        try:
            while True:
                await asyncio.sleep(self.cfg.batch_ms / 1000)
                if not await self._flush():
                    return
        finally:
            # No edge after this point, so the last batch is really the last.
            self._close()
            self.status = "stopped"
            with contextlib.suppress(EngineStopped, StoreError):
                await self._flush(final=True)

    def _open(self) -> None:
        factory = self.factory if self.factory is not None else shared_factory(self.factory_name)
        lines: list[InputLine] = []
        try:
            for entry in self.cfg.counters:
                tally = self._tallies[entry.counter]
                lines.append(InputLine(entry, factory, _counting(tally)))
        except SourceUnavailable:
            for line in lines:
                line.close()
            raise
        self._lines = lines

    def _close(self) -> None:
        lines, self._lines = self._lines, []
        for line in lines:
            with contextlib.suppress(Exception):  # a pin that fails to close is gone anyway
                line.close()

    def _down(self, exc: SourceUnavailable) -> None:
        reason = str(exc)
        if self.status != "down" or self.last_error != reason:
            self.log.warning("gpio source unavailable; retrying", reason=reason)
        self.status = "down"
        self.last_error = reason

    async def _flush(self, *, final: bool = False) -> bool:
        """Hand the pulses counted so far to the engine; False once the engine has stopped."""
        taken = [(name, tally.take()) for name, tally in self._tallies.items()]
        taken = [(name, n) for name, n in taken if n]
        if not taken:
            return True
        at = self.engine.now()
        batch: list[Input] = [Pulses(name, n, at) for name, n in taken]
        try:
            outcomes = await self.engine.submit_many(batch)
        except StoreError as exc:
            if final:
                self.log.error("last pulses not stored", pulses=dict(taken), error=str(exc))
                raise
            # Not durable, so not counted: the pulses go back and ride with the next batch.
            for name, n in taken:
                self._tallies[name].add(n)
            self.log.warning("pulses not stored; kept for the next batch", error=str(exc))
            return True
        except EngineStopped:
            self.log.warning("engine stopped; pulses not counted", pulses=dict(taken))
            if final:
                raise
            return False
        for (name, n), outcome in zip(taken, outcomes, strict=True):
            if outcome.rejection is not None:
                self.log.warning(
                    "pulses rejected", counter=name, n=n, reason=outcome.rejection.message
                )
            else:
                self.counted += n
        return True


def _counting(tally: _Tally) -> Callable[[bool], None]:
    def on_edge(active: bool) -> None:
        if active:
            tally.add()

    return on_edge
