"""Which source adapters the config asks for (one per ``[[sources.<kind>]]`` entry).

New kinds of machine link (S7, EtherNet/IP, ...) add an entry here and a module beside this
one; the engine and the core do not change.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from edge.config import GatewayConfig
from edge.engine import Engine


@dataclass(frozen=True, slots=True)
class SourceTask:
    link: str  # as health shows it: "opcua:press"
    run: Callable[[], Coroutine[Any, Any, None]]
    status: Callable[[], str]


def _status_of(link: Any) -> Callable[[], str]:
    def status() -> str:
        return str(link.link_status)

    return status


def build_sources(cfg: GatewayConfig, engine: Engine) -> list[SourceTask]:
    tasks: list[SourceTask] = []
    if cfg.sources.opcua:
        from edge.sources.opcua import OpcUaLink

        for src in cfg.sources.opcua:
            link = OpcUaLink(src, engine)
            tasks.append(SourceTask(f"opcua:{src.name}", link.run, _status_of(link)))
    return tasks
