"""The GPIO pulse source: every pulse counted once, in batches, with bounce filtered out."""

from __future__ import annotations

import asyncio
import threading
import time
from decimal import Decimal

import pytest
from gpio_support import COUNTER_PIN as PIN
from gpio_support import FIRST, running_task, until
from gpiozero.pins.mock import MockFactory, MockPin

from edge.config import GatewayConfig, GpioCounterEntry, GpioSource
from edge.domain.inputs import Action, Transition
from edge.domain.model import OperationKey
from edge.engine import Engine
from edge.sources.gpio import EdgeFilter, GpioLink, InputLine, shared_factory
from edge.store.replay import verify


def source(cfg: GatewayConfig, batch_ms: float = 100.0, **counter: object) -> GpioSource:
    """The configured [[sources.gpio]] entry, with other settings for its one counter."""
    src = cfg.sources.gpio[0]
    entry = src.counters[0].model_copy(update=counter)
    return src.model_copy(update={"batch_ms": batch_ms, "counters": [entry]})


async def produce(engine: Engine) -> None:
    outcome = await engine.submit(
        Transition(Action.START_PRODUCTION, FIRST, "operator:7", engine.now())
    )
    assert outcome.accepted


def good(engine: Engine) -> Decimal:
    return engine.wc.operations[OperationKey.parse(FIRST)].counted.good


def pulse_train(pin: MockPin, pulses: int, phase_s: float, bounces: int = 0) -> None:
    """Active-low pulses (a contact to ground), driven from a thread as gpiozero's would be.

    Each phase lasts at least ``phase_s``; ``bounces`` extra edge pairs come right after each
    edge, microseconds apart, like a bouncing contact.
    """
    for _ in range(pulses):
        pin.drive_low()
        for _ in range(bounces):
            pin.drive_high()
            pin.drive_low()
        time.sleep(phase_s)
        pin.drive_high()
        for _ in range(bounces):
            pin.drive_low()
            pin.drive_high()
        time.sleep(phase_s)


async def test_a_50_hz_pulse_train_is_counted_exactly_in_batches(
    cfg: GatewayConfig, engine: Engine, factory: MockFactory
) -> None:
    await produce(engine)
    journal_before = engine.store.journal_count()
    link = GpioLink(source(cfg), engine, factory=factory)
    async with running_task(link.run):
        await until(lambda: link.link_status == "ok", "the pins")
        started = time.monotonic()
        # 150 pulses of 10 ms high and 10 ms low: 50 Hz for 3 s.
        await asyncio.to_thread(pulse_train, factory.pin(PIN), 150, 0.010)
        took = time.monotonic() - started
        await until(lambda: good(engine) == 150, "150 parts")
        # the link counts a batch once the engine took it: a moment after the engine's count
        await until(lambda: link.counted == 150, "the link's own count")
    assert good(engine) == 150
    assert link.counted == 150
    # Batches of 100 ms, not one input per pulse.
    batches = engine.store.journal_count() - journal_before
    assert batches <= took / 0.1 + 3
    assert batches < 60
    assert verify(engine.store) == []


async def test_a_bouncing_contact_counts_once_per_pulse(
    cfg: GatewayConfig, engine: Engine, factory: MockFactory
) -> None:
    await produce(engine)
    link = GpioLink(source(cfg), engine, factory=factory)
    async with running_task(link.run):
        await until(lambda: link.link_status == "ok", "the pins")
        # Three extra edge pairs on closing and on opening, well within bounce_ms = 5.
        await asyncio.to_thread(pulse_train, factory.pin(PIN), 20, 0.015, 3)
        await until(lambda: good(engine) >= 20, "20 parts")
        await asyncio.sleep(0.25)  # two more batches: nothing else may come
    assert good(engine) == 20


async def test_without_debounce_every_edge_counts(
    cfg: GatewayConfig, engine: Engine, factory: MockFactory
) -> None:
    """The same bouncing contact with bounce_ms = 0: the filter is what made the difference."""
    await produce(engine)
    link = GpioLink(source(cfg, bounce_ms=0.0), engine, factory=factory)
    async with running_task(link.run):
        await until(lambda: link.link_status == "ok", "the pins")
        await asyncio.to_thread(pulse_train, factory.pin(PIN), 5, 0.005, 3)
        await until(lambda: good(engine) >= 5 * 7, "every edge")


async def test_active_high_with_pull_down(
    cfg: GatewayConfig, engine: Engine, factory: MockFactory
) -> None:
    await produce(engine)
    link = GpioLink(source(cfg, pull="down"), engine, factory=factory)
    async with running_task(link.run):
        await until(lambda: link.link_status == "ok", "the pins")
        pin = factory.pin(PIN)
        assert pin.state is False  # pulled down
        for _ in range(3):
            pin.drive_high()  # a PNP sensor: active high
            await asyncio.sleep(0.01)
            pin.drive_low()
            await asyncio.sleep(0.01)
        await until(lambda: good(engine) == 3, "3 parts")


async def test_the_last_partial_batch_is_flushed_on_shutdown(
    cfg: GatewayConfig, engine: Engine, factory: MockFactory
) -> None:
    await produce(engine)
    # A batch period far longer than the test: only the flush at shutdown can deliver.
    link = GpioLink(source(cfg, batch_ms=5000.0), engine, factory=factory)
    async with running_task(link.run):
        await until(lambda: link.link_status == "ok", "the pins")
        await asyncio.to_thread(pulse_train, factory.pin(PIN), 7, 0.006)
        assert good(engine) == 0
    assert good(engine) == 7
    assert link.link_status == "stopped"
    # The pin was given back: a new device may take it.
    factory.pin(PIN).drive_low()


async def test_pulses_with_no_operation_are_unassigned_production(
    cfg: GatewayConfig, engine: Engine, factory: MockFactory
) -> None:
    link = GpioLink(source(cfg), engine, factory=factory)
    async with running_task(link.run):
        await until(lambda: link.link_status == "ok", "the pins")
        await asyncio.to_thread(pulse_train, factory.pin(PIN), 4, 0.006)
        await until(
            lambda: sum(u.tally.good for u in engine.wc.unassigned.values()) == 4, "unassigned"
        )


async def test_an_unavailable_pin_factory_keeps_retrying_without_crashing(
    cfg: GatewayConfig, engine: Engine
) -> None:
    try:
        shared_factory("lgpio")
    except Exception:
        pass
    else:
        pytest.skip("lgpio works on this machine")
    link = GpioLink(source(cfg), engine, pin_factory="lgpio")
    async with running_task(link.run) as task:
        await until(lambda: link.link_status == "down", "down")
        assert link.last_error is not None
        assert "lgpio" in link.last_error
        assert not task.done()


def test_edge_filter_needs_quiet_before_an_edge() -> None:
    edges = EdgeFilter(0.005, lambda later, earlier: later - earlier)
    kept = [edges.accept(t) for t in (0.0, 0.001, 0.002, 0.010, 0.0105, 0.016)]
    # 0.0105 comes 0.5 ms after an edge: bounce; 0.016 comes 5.5 ms after the last edge.
    assert kept == [True, False, False, True, False, True]


def test_input_line_reports_only_kept_edges_from_any_thread(factory: MockFactory) -> None:
    seen: list[bool] = []
    entry = GpioCounterEntry(counter="pulses", pin=PIN, bounce_ms=2.0)
    line = InputLine(entry, factory, seen.append)
    try:
        pin = factory.pin(PIN)
        worker = threading.Thread(target=pulse_train, args=(pin, 3, 0.004, 2))
        worker.start()
        worker.join(5)
        assert seen == [True, False] * 3
        assert not line.is_active
    finally:
        line.close()


def test_pin_factory_is_shared_and_unknown_ones_are_refused() -> None:
    assert shared_factory("mock") is shared_factory("mock")
    with pytest.raises(Exception, match="unknown"):
        shared_factory("sysfs")


def test_pins_in_use_are_refused(factory: MockFactory) -> None:
    entry = GpioCounterEntry(counter="pulses", pin=PIN)
    first = InputLine(entry, factory, lambda active: None)
    try:
        with pytest.raises(Exception, match="GPIO pin 17"):
            InputLine(entry, factory, lambda active: None)
    finally:
        first.close()
