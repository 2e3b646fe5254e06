"""Which source adapters the config asks for (one per ``[[sources.<kind>]]`` entry).

New kinds of machine link (S7, EtherNet/IP, ...) add an entry here and a module beside this
one; the engine and the core do not change.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from edge.config import GatewayConfig
from edge.ports import InputSink


@dataclass(frozen=True, slots=True)
class SourceTask:
    link: str  # as health shows it: "opcua:press"
    run: Callable[[], Coroutine[Any, Any, None]]
    status: Callable[[], str]
    # The adapter object itself, for a component that acts through it (the stack light writes
    # coils through a ModbusLink). ``link`` above was already the health name, hence this name.
    adapter: object | None = None


def _status_of(link: Any) -> Callable[[], str]:
    def status() -> str:
        return str(link.link_status)

    return status


def build_sources(cfg: GatewayConfig, engine: InputSink) -> list[SourceTask]:
    tasks: list[SourceTask] = []
    if cfg.sources.opcua:
        from edge.sources.opcua import OpcUaLink

        for src in cfg.sources.opcua:
            link = OpcUaLink(src, engine)
            tasks.append(SourceTask(f"opcua:{src.name}", link.run, _status_of(link), adapter=link))
    if cfg.sources.gpio:
        from edge.sources.gpio import GpioLink

        for gp in cfg.sources.gpio:
            gpio = GpioLink(gp, engine, pin_factory=cfg.gpio.pin_factory)
            tasks.append(SourceTask(f"gpio:{gp.name}", gpio.run, _status_of(gpio), adapter=gpio))
    if cfg.sources.modbus:
        from edge.sources.modbus import ModbusLink, counter_bits

        bits = counter_bits(cfg)
        for mb in cfg.sources.modbus:
            modbus = ModbusLink(mb, engine, bits=bits)
            tasks.append(
                SourceTask(f"modbus:{mb.name}", modbus.run, _status_of(modbus), adapter=modbus)
            )
    return tasks
