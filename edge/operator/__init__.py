"""The operator side beside the machine: push buttons and the stack light.

:func:`operator_components` turns the ``[operator]`` section into the gateway's components
(``async def component(engine)``, run by :func:`edge.app.run_gateway`).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import structlog

from edge.config import GatewayConfig
from edge.operator.buttons import ButtonPanel
from edge.operator.stacklight import CoilWriter, GpioLamps, LampDriver, ModbusCoils, StackLight
from edge.ports import FloorFace

__all__ = ["find_coil_writer", "operator_components"]

Component = Callable[[FloorFace], Coroutine[Any, Any, None]]

log = structlog.get_logger("edge.operator")


def operator_components(cfg: GatewayConfig, sources: Sequence[Any] = ()) -> list[Component]:
    """The buttons and the stack light the config asks for (none: an empty list).

    ``sources`` are the running source tasks (:func:`edge.sources.registry.build_sources`); a
    stack light on Modbus coils writes through the Modbus source it names.
    """
    components: list[Component] = []
    factory = cfg.gpio.pin_factory
    if cfg.operator.buttons:
        buttons = cfg.operator.buttons

        async def operator_buttons(engine: FloorFace) -> None:
            await ButtonPanel(buttons, engine, pin_factory=factory).run()

        components.append(operator_buttons)
    light = cfg.operator.stacklight
    if light is not None:
        driver: LampDriver
        if light.output == "modbus":
            assert light.modbus_source is not None  # the config requires it with modbus
            driver = ModbusCoils(light, find_coil_writer(sources, light.modbus_source))
        else:
            driver = GpioLamps(light, pin_factory=factory)

        async def stack_light(engine: FloorFace) -> None:
            await StackLight(light, engine, driver).run()

        components.append(stack_light)
    return components


def find_coil_writer(sources: Sequence[Any], name: str) -> CoilWriter | None:
    """``write_coils`` of the Modbus source called ``name`` (the adapter its task carries)."""
    for task in sources:
        if getattr(task, "link", None) != f"modbus:{name}":
            continue
        write = getattr(getattr(task, "adapter", None), "write_coils", None)
        if callable(write):
            writer: CoilWriter = write
            return writer
    log.error(
        "stack light: no modbus source with coil output found; its lamps stay dark", source=name
    )
    return None
