"""A work center wired like an older machine: a Modbus counter module, GPIO buttons, the stack
light on the module's coils. The real gateway (run_gateway) against the Modbus I/O simulator
and gpiozero's mock pins: counts exact across a wrap and a module power-cycle, the buttons walk
an operation through its lifecycle, the lamps follow on the coils.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

from gpio_support import press, until

from edge.app import run_gateway
from edge.config import load_config
from edge.domain.inputs import DispatchList
from edge.domain.model import OperationKey, OperationSpec, OperationStatus
from edge.engine import Engine
from edge.sources.gpio import shared_factory
from edge.store.replay import verify
from edge.store.store import Store
from simulators.modbus_io import ModbusIoSimulator

KEY = OperationKey("4711", "0010")
BUTTONS = {"setup": 5, "produce": 6, "pause": 13, "resume": 19, "done": 26, "ok": 20, "next": 16}
COILS = {"green": 0, "yellow": 1, "red": 2, "blue": 3}
RUNNING_BIT, DOWN_BIT = 0, 1

CONFIG = """
[gateway]
edge_id = "wc-old-press"
work_center = "PRESS02"
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
name = "press_good"
kind = "good"
bits = 16

[[master_data.stop_reasons]]
code = "M01"
text = "No material"

[[master_data.stop_reasons]]
code = "T02"
text = "Tool change"

[[sources.modbus]]
name = "io1"
host = "127.0.0.1"
port = {port}
poll_interval_ms = 20
timeout_s = 0.5
reconnect_min_s = 0.1
reconnect_max_s = 0.3

[[sources.modbus.counters]]
counter = "press_good"
table = "input"
address = 0

[sources.modbus.state]
table = "discrete_inputs"
running = {running}
down = {down}

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
name = "next"
pin = {next}
action = "stop_reason_next"

[[operator.buttons]]
name = "ok"
pin = {ok}
action = "stop_reason_confirm"

[operator.stacklight]
output = "modbus"
modbus_source = "io1"
green = {green}
yellow = {yellow}
red = {red}
blue = {blue}
blink_s = 0.1
buzzer_s = 0
lamp_test_s = 0.3
"""


def stop_reason(engine: Engine) -> str | None:
    stop = engine.wc.open_stop
    return stop.reason if stop else None


def lit(sim: ModbusIoSimulator) -> set[str]:
    return {lamp for lamp, coil in COILS.items() if sim.coils[coil]}


async def test_modbus_counts_gpio_buttons_and_a_stack_light_on_coils(tmp_path: Path) -> None:
    async with ModbusIoSimulator(counters16=1, counters32=0, coils=8) as sim:
        path = tmp_path / "edge.toml"
        path.write_text(
            CONFIG.format(
                db=tmp_path / "edge.db", port=sim.port, running=RUNNING_BIT, down=DOWN_BIT,
                **BUTTONS, **COILS,
            ),
            encoding="utf-8",
        )  # fmt: skip
        cfg = load_config(path, env={})
        mock = shared_factory("mock")
        stop = asyncio.Event()
        box: list[Engine] = []

        async def dispatch(engine: Engine) -> None:
            box.append(engine)
            spec = OperationSpec("4711", "0010", "FG-7", Decimal(100_000), sequence=1)
            await engine.submit(DispatchList(1, (spec,), engine.now()))

        sim.set_counter(0, 65_500)  # near the top: the wrap comes during production
        gateway = asyncio.create_task(run_gateway(cfg, components=(dispatch,), stop=stop))
        try:
            await until(lambda: bool(box), "the engine")
            engine = box[0]

            def op_status() -> OperationStatus | None:
                op = engine.wc.operations.get(KEY)
                return op.status if op else None

            def good() -> Decimal:
                return engine.wc.operations[KEY].counted.good

            # Lamp test on the coils, then yellow: dispatched, nothing active.
            await until(lambda: lit(sim) == set(COILS), "the lamp test", 3)
            await until(lambda: lit(sim) == {"yellow"}, "yellow after the lamp test", 3)
            await until(lambda: op_status() is OperationStatus.DISPATCHED, "the dispatch")

            await press(mock.pin(BUTTONS["setup"]))
            await until(lambda: op_status() is OperationStatus.SETUP, "setup")
            await press(mock.pin(BUTTONS["produce"]))
            await until(lambda: op_status() is OperationStatus.RUNNING, "running")
            sim.set_input(RUNNING_BIT, True)
            await until(lambda: lit(sim) == {"green"}, "green while running")

            # 100 parts across the 16-bit wrap (65,500 -> 64), then a power-cycle to 0 and 30.
            sim.add(0, 100)
            await until(lambda: good() == 100, "100 good across the wrap")
            await sim.power_cycle(offline_s=0.3)
            sim.add(0, 30)
            await until(lambda: good() == 130, "130 good after the power-cycle")

            # The machine goes down: red, blinking while the reason is pending, then a reason
            # chosen with two taps on "next" and one on "ok".
            sim.set_input(RUNNING_BIT, False)
            sim.set_input(DOWN_BIT, True)
            await until(lambda: engine.wc.open_stop is not None, "the stop")
            await until(lambda: "red" in lit(sim), "red")
            seen: set[bool] = set()
            for _ in range(40):
                seen.add("red" in lit(sim))
                await asyncio.sleep(0.02)
            assert seen == {True, False}, "red does not blink while the reason is pending"
            await press(mock.pin(BUTTONS["next"]))
            await press(mock.pin(BUTTONS["next"]))
            await press(mock.pin(BUTTONS["ok"]))
            await until(lambda: stop_reason(engine) == "T02", "the reason from the buttons")
            sim.set_input(DOWN_BIT, False)
            sim.set_input(RUNNING_BIT, True)
            await until(lambda: engine.wc.open_stop is None, "the stop ends")
            await until(lambda: lit(sim) == {"green"}, "green again")

            await press(mock.pin(BUTTONS["pause"]))
            await until(lambda: op_status() is OperationStatus.INTERRUPTED, "interrupted")
            await until(lambda: lit(sim) == {"yellow"}, "yellow while interrupted")
            await press(mock.pin(BUTTONS["resume"]))
            await until(lambda: op_status() is OperationStatus.RUNNING, "resumed")
            await press(mock.pin(BUTTONS["done"]))  # a short press must not complete
            await asyncio.sleep(0.2)
            assert op_status() is OperationStatus.RUNNING
            await press(mock.pin(BUTTONS["done"]), hold_s=1.2)
            await until(lambda: op_status() is OperationStatus.COMPLETED, "completed")
            await until(lambda: lit(sim) == {"yellow"}, "yellow: nothing active")
            assert good() == 130
            confirmed = engine.wc.operations[KEY].confirmed.good
            assert confirmed == 130, "the final confirmation carries every part"
        finally:
            stop.set()
            await asyncio.wait_for(gateway, 10)
    store = Store(tmp_path / "edge.db")
    store.open()
    try:
        assert verify(store) == []
        buttons = {
            r[0] for r in store.conn.execute("SELECT actor FROM event WHERE actor LIKE 'button:%'")
        }
    finally:
        store.close()
    assert buttons >= {"button:setup", "button:produce", "button:ok", "button:pause", "button:done"}
