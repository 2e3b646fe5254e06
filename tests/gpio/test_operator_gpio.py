"""Buttons and the stack light on mock pins, against a real engine and store."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import structlog
from gpio_support import BUTTON_PINS, COUNTER_PIN, FIRST, LAMP_PINS, config, press, until
from gpiozero.pins.mock import MockFactory, MockPin

from edge.app import run_gateway
from edge.config import ButtonEntry, GatewayConfig, rules_from_config
from edge.domain.clock import Instant
from edge.domain.core import WorkCenter
from edge.domain.inputs import (
    AcknowledgeHelp,
    Action,
    CloseHelp,
    DispatchList,
    MachineState,
    MachineStateChanged,
    Pulses,
    Tick,
    Transition,
)
from edge.domain.model import OperationKey, OperationSpec, OperationStatus
from edge.engine import Engine
from edge.operator.buttons import ButtonPanel, next_released
from edge.operator.stacklight import GpioLamps, Lamp, Lights, StackLight, lights_for
from edge.sources.gpio import shared_factory
from edge.store.replay import verify

KEY = OperationKey.parse(FIRST)
LAMPS = ("green", "yellow", "red", "blue")


@contextlib.asynccontextmanager
async def operator_side(
    cfg: GatewayConfig, engine: Engine, factory: MockFactory
) -> AsyncIterator[tuple[ButtonPanel, StackLight]]:
    light_cfg = cfg.operator.stacklight
    assert light_cfg is not None
    panel = ButtonPanel(cfg.operator.buttons, engine, factory=factory)
    light = StackLight(light_cfg, engine, GpioLamps(light_cfg, factory=factory))
    tasks = [asyncio.create_task(panel.run()), asyncio.create_task(light.run())]
    try:
        await until(lambda: panel.link_status == "ok", "the buttons")
        yield panel, light
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, 5)


def pin(factory: MockFactory, name: str) -> MockPin:
    number = BUTTON_PINS.get(name, LAMP_PINS.get(name))
    assert number is not None, name
    return factory.pin(number)


def lamps(factory: MockFactory) -> dict[str, bool]:
    return {lamp: bool(factory.pin(number).state) for lamp, number in LAMP_PINS.items()}


def steady(factory: MockFactory, *on: str) -> bool:
    """Exactly these lamps are lit (the buzzer is not looked at)."""
    now = lamps(factory)
    return all(now[lamp] == (lamp in on) for lamp in LAMPS)


async def blinks(factory: MockFactory, lamp: str, window_s: float = 0.35) -> bool:
    """The lamp went on and off while we watched (blink_s = 0.1 in the test config)."""
    out = factory.pin(LAMP_PINS[lamp])
    out.clear_states()
    await asyncio.sleep(window_s)
    changes = len(out.states) - 1
    return changes >= 2


def status(engine: Engine) -> OperationStatus:
    return engine.wc.operations[KEY].status


async def test_buttons_walk_an_operation_and_the_light_follows(
    cfg: GatewayConfig, engine: Engine, factory: MockFactory
) -> None:
    async with operator_side(cfg, engine, factory) as (panel, light):
        # Lamp test: every lamp on, the buzzer not, then the real state.
        assert lamps(factory) == {lamp: lamp != "buzzer" for lamp in LAMP_PINS}
        # Nothing active: the work center waits for an order -> yellow.
        await until(lambda: steady(factory, "yellow"), "yellow after the lamp test")
        assert light.lights == Lights(yellow=Lamp.ON)

        # start_setup takes the first released operation in dispatch order (sequence 1).
        assert next_released(engine.wc) == FIRST
        await press(pin(factory, "setup"))
        await until(lambda: status(engine) is OperationStatus.SETUP, "setup")
        await until(lambda: steady(factory, "yellow"), "yellow in setup")

        await press(pin(factory, "produce"))
        await until(lambda: status(engine) is OperationStatus.RUNNING, "running")
        await until(lambda: steady(factory, "green"), "green")

        # The machine goes down: a stop, red, the buzzer sounds for buzzer_s.
        await engine.submit(MachineStateChanged("press", MachineState.DOWN, engine.now()))
        await until(lambda: steady(factory, "red"), "red")
        await until(lambda: lamps(factory)["buzzer"], "the buzzer")
        await until(lambda: not lamps(factory)["buzzer"], "the buzzer stops", timeout=2)
        # Past the micro-stop threshold (0 s here) the stop asks for its reason: red blinks.
        await engine.submit(Tick(engine.now()))
        await until(lambda: light.lights.red is Lamp.BLINK, "red blinking")
        assert await blinks(factory, "red")
        assert not lamps(factory)["green"]

        # Choose the second stop reason and confirm it.
        await press(pin(factory, "reason_next"))
        await until(lambda: panel.choice == "M01", "the first reason")
        await press(pin(factory, "reason_next"))
        await until(lambda: panel.choice == "B01", "the second reason")
        await press(pin(factory, "reason_ok"))
        stop = engine.wc.open_stop
        assert stop is not None
        await until(lambda: stop.reason == "B01", "the reason given")
        assert stop.reason_source == "button:reason_ok"
        assert panel.choice is None
        await until(lambda: steady(factory, "red"), "red steady once the reason is given")

        await engine.submit(MachineStateChanged("press", MachineState.RUNNING, engine.now()))
        await until(lambda: steady(factory, "green"), "green again")

        await press(pin(factory, "pause"))
        await until(lambda: status(engine) is OperationStatus.INTERRUPTED, "interrupted")
        await until(lambda: steady(factory, "yellow"), "yellow when interrupted")

        await press(pin(factory, "resume"))
        await until(lambda: status(engine) is OperationStatus.RUNNING, "resumed")
        await until(lambda: steady(factory, "green"), "green when resumed")

        # complete needs a long press: a short one does nothing.
        await press(pin(factory, "done"), hold_s=0.1)
        await asyncio.sleep(1.1)
        assert status(engine) is OperationStatus.RUNNING
        await press(pin(factory, "done"), hold_s=1.2)
        await until(lambda: status(engine) is OperationStatus.COMPLETED, "completed")
        await until(lambda: steady(factory, "yellow"), "yellow when nothing is active")

    actors = [getattr(inp, "actor", None) for _, inp in engine.store.iter_journal()]
    assert [a for a in actors if a and a.startswith("button:")] == [
        "button:setup",
        "button:produce",
        "button:reason_ok",
        "button:pause",
        "button:resume",
        "button:done",
    ]
    assert verify(engine.store) == []
    # At shutdown every lamp goes dark.
    assert not any(lamps(factory).values())


async def test_scrap_one_books_one_part_with_the_configured_reason(
    cfg: GatewayConfig, engine: Engine, factory: MockFactory
) -> None:
    await engine.submit(Transition(Action.START_PRODUCTION, FIRST, "operator:7", engine.now()))
    await engine.submit(Pulses("pulses", 5, engine.now()))
    async with operator_side(cfg, engine, factory):
        await press(pin(factory, "scrap"))
        op = engine.wc.operations[KEY]
        await until(lambda: op.counted.scrap.get("S03") == Decimal(1), "one scrap part")
        await press(pin(factory, "scrap"))
        await until(lambda: op.counted.scrap.get("S03") == Decimal(2), "two scrap parts")
        assert op.counted.good == 3  # the machine had counted them as good


async def test_call_help_lights_the_call_lamp_until_closed(
    cfg: GatewayConfig, engine: Engine, factory: MockFactory
) -> None:
    async with operator_side(cfg, engine, factory) as (_, light):
        await until(lambda: steady(factory, "yellow"), "the lamp test is over")
        await press(pin(factory, "help"))
        await until(lambda: len(engine.wc.help_calls) == 1, "a call for help")
        call = next(iter(engine.wc.help_calls.values()))
        assert call.category == "maintenance"
        assert call.raised_by == "button:help"
        # Nobody acknowledged yet: blue blinks, and the buzzer sounds.
        await until(lambda: light.lights.blue is Lamp.BLINK, "blue blinking")
        await until(lambda: lamps(factory)["buzzer"], "the buzzer")
        assert await blinks(factory, "blue")
        assert lamps(factory)["yellow"]  # a call is not a stop
        await engine.submit(AcknowledgeHelp(call.call_id, "operator:maint1", engine.now()))
        await until(lambda: light.lights.blue is Lamp.ON, "blue steady")
        await until(lambda: lamps(factory)["blue"], "blue on")
        await engine.submit(CloseHelp(call.call_id, "operator:maint1", engine.now()))
        await until(lambda: not lamps(factory)["blue"], "blue off")


async def test_a_refused_press_is_logged_and_stores_nothing(
    cfg: GatewayConfig, engine: Engine, factory: MockFactory
) -> None:
    with structlog.testing.capture_logs() as logs:
        async with operator_side(cfg, engine, factory) as (panel, _):
            before = engine.store.journal_count()
            await press(pin(factory, "done"), hold_s=1.1)  # complete, nothing active
            await until(lambda: panel.presses == 1, "the press")
            await until(
                lambda: any("refused" in str(log.get("event")) for log in logs), "the log line"
            )
            # confirm without a choice: refused before the engine
            await press(pin(factory, "reason_ok"))
            await until(lambda: panel.presses == 2, "the second press")
            await asyncio.sleep(0.1)
            assert engine.store.journal_count() == before
            assert panel.link_status == "ok"
    refused = [log for log in logs if str(log.get("event", "")).startswith("button press refused")]
    assert refused[0]["event"] == "button press refused: no operation is active"
    assert refused[0]["button"] == "done"
    assert refused[0]["code"] == "no_active_operation"
    assert "choose a stop reason first" in refused[1]["event"]
    assert status(engine) is OperationStatus.DISPATCHED


async def test_a_spike_shorter_than_the_debounce_does_nothing(
    cfg: GatewayConfig, engine: Engine, factory: MockFactory
) -> None:
    async with operator_side(cfg, engine, factory) as (panel, _):
        setup = pin(factory, "setup")
        setup.drive_low()
        setup.drive_high()  # microseconds: noise on the line, not a press
        await asyncio.sleep(0.15)
        assert panel.presses == 0
        assert status(engine) is OperationStatus.DISPATCHED


async def test_start_production_with_nothing_active_takes_the_next_released(
    cfg: GatewayConfig, engine: Engine, factory: MockFactory
) -> None:
    async with operator_side(cfg, engine, factory):
        await press(pin(factory, "produce"))
        await until(lambda: status(engine) is OperationStatus.RUNNING, "running")
        # start_setup now names the other operation; the core refuses: one is active.
        await press(pin(factory, "setup"))
        await asyncio.sleep(0.15)
        assert engine.wc.operations[OperationKey.parse("4711/0005")].status is (
            OperationStatus.DISPATCHED
        )


async def test_long_press_released_early_does_nothing(engine: Engine, factory: MockFactory) -> None:
    button = ButtonEntry(name="slow", pin=7, action="interrupt", long_press_s=0.3)
    panel = ButtonPanel([button], engine, factory=factory)
    await engine.submit(Transition(Action.START_PRODUCTION, FIRST, "operator:7", engine.now()))
    task = asyncio.create_task(panel.run())
    try:
        await until(lambda: panel.link_status == "ok", "the button")
        await press(factory.pin(7), hold_s=0.1)
        await asyncio.sleep(0.4)
        assert status(engine) is OperationStatus.RUNNING
        await press(factory.pin(7), hold_s=0.4)
        await until(lambda: status(engine) is OperationStatus.INTERRUPTED, "interrupted")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def test_lights_for_states_without_any_operation(cfg: GatewayConfig) -> None:
    """The pure function on a bare work center (no engine): what shows with no order."""
    wc = WorkCenter(rules_from_config(cfg))
    assert lights_for(wc) == Lights(yellow=Lamp.ON)
    t0 = Instant(1_700_000_000_000, 0)
    # Down with no order is a stop too (maintenance needs it): red, not yellow.
    assert wc.apply(MachineStateChanged("press", MachineState.DOWN, t0)).accepted
    assert lights_for(wc) == Lights(red=Lamp.ON)
    assert wc.apply(Tick(t0.after_ms(1000))).accepted
    assert lights_for(wc) == Lights(red=Lamp.BLINK)
    # The stop ends with its reason still missing: yellow, and red keeps asking.
    assert wc.apply(MachineStateChanged("press", MachineState.RUNNING, t0.after_ms(2000))).accepted
    assert lights_for(wc) == Lights(yellow=Lamp.ON, red=Lamp.BLINK)


async def test_the_gateway_wires_counter_buttons_and_light(tmp_path: Path) -> None:
    """run_gateway with [gpio] pin_factory = "mock": the process's shared mock pins."""
    cfg = config(tmp_path)
    mock = shared_factory("mock")
    stop = asyncio.Event()
    engine_box: list[Engine] = []

    async def grab(engine: Engine) -> None:
        engine_box.append(engine)
        spec = OperationSpec("4711", "0010", "FG-1", Decimal(100), sequence=1)
        await engine.submit(DispatchList(1, (spec,), engine.now()))

    gateway = asyncio.create_task(run_gateway(cfg, components=(grab,), stop=stop))
    try:
        await until(lambda: bool(engine_box), "the engine")
        engine = engine_box[0]
        green = mock.pin(LAMP_PINS["green"])
        await until(lambda: mock.pin(LAMP_PINS["yellow"]).state, "the light")
        await until(lambda: KEY in engine.wc.operations, "the dispatch list")
        await asyncio.sleep(0.35)  # past the lamp test
        await press(mock.pin(BUTTON_PINS["produce"]))
        await until(lambda: status(engine) is OperationStatus.RUNNING, "running")
        await until(lambda: green.state, "green")
        counter = mock.pin(COUNTER_PIN)
        for _ in range(5):
            counter.drive_low()
            await asyncio.sleep(0.01)
            counter.drive_high()
            await asyncio.sleep(0.01)
        await until(lambda: engine.wc.operations[KEY].counted.good == 5, "5 parts")
    finally:
        stop.set()
        await asyncio.wait_for(gateway, 10)
    assert not green.state  # the light went dark with the gateway
