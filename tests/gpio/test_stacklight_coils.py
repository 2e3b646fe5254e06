"""The stack light on Modbus coils, through a stand-in for ModbusLink.write_coils."""

from __future__ import annotations

from dataclasses import dataclass

import structlog
from gpio_support import running_task, until

from edge.config import GatewayConfig, StackLightEntry
from edge.domain.inputs import MachineState, MachineStateChanged
from edge.engine import Engine
from edge.operator import find_coil_writer, operator_components
from edge.operator.stacklight import ModbusCoils, StackLight


class Coils:
    """What a Modbus module would hold; the first ``fail`` writes raise like a link that is down."""

    def __init__(self, fail: int = 0) -> None:
        self.state: dict[int, bool] = {}
        self.writes: list[tuple[int, list[bool]]] = []
        self.fail = fail

    async def write_coils(self, address: int, values: list[bool]) -> None:
        if self.fail:
            self.fail -= 1
            raise ConnectionError("modbus module io1 does not answer")
        self.writes.append((address, values))
        for i, value in enumerate(values):
            self.state[address + i] = value


@dataclass
class FakeTask:
    link: str
    adapter: object


def light_cfg() -> StackLightEntry:
    return StackLightEntry(
        output="modbus", modbus_source="io1", green=0, yellow=1, red=2, lamp_test_s=0.1
    )


def test_the_coil_writer_is_found_by_source_name() -> None:
    coils = Coils()
    tasks = [FakeTask("opcua:press", object()), FakeTask("modbus:io1", coils)]
    writer = find_coil_writer(tasks, "io1")
    assert writer is not None
    assert writer == coils.write_coils
    assert find_coil_writer(tasks, "io2") is None


async def test_lamps_on_coils_follow_and_a_failed_write_is_retried(engine: Engine) -> None:
    coils = Coils(fail=1)
    with structlog.testing.capture_logs() as logs:
        light = StackLight(light_cfg(), engine, ModbusCoils(light_cfg(), coils.write_coils))
        async with running_task(light.run):
            # The lamp test, then yellow (nothing active); the write that failed was retried.
            await until(lambda: coils.state == {0: False, 1: True, 2: False}, "yellow")
            assert light.link_status == "ok"
            await engine.submit(MachineStateChanged("press", MachineState.DOWN, engine.now()))
            await until(lambda: coils.state == {0: False, 1: False, 2: True}, "red")
    assert coils.state == {0: False, 1: False, 2: False}  # dark after the stop
    assert all(len(values) == 1 for _, values in coils.writes)
    down = [log for log in logs if log["event"] == "stack light outputs unavailable; retrying"]
    assert "does not answer" in down[0]["reason"]


async def test_a_missing_coil_output_keeps_the_light_dark_without_crashing(
    cfg: GatewayConfig, engine: Engine
) -> None:
    modbus_cfg = cfg.model_copy(
        update={"operator": cfg.operator.model_copy(update={"stacklight": light_cfg()})}
    )
    with structlog.testing.capture_logs() as logs:
        (*_, light_component) = operator_components(modbus_cfg, [])

        def said(text: str) -> bool:
            return any(text in str(log.get("reason", log["event"])) for log in logs)

        async with running_task(lambda: light_component(engine)) as task:
            await until(lambda: said("offers no coil output"), "the warning")
            assert not task.done()
    assert said("no modbus source with coil output found")
