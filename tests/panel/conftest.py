"""The real daemon with its panel on a free port; the broker and gateway come from tests/gateway."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

from edge.config import GatewayConfig, load_config
from edge.domain.inputs import DispatchList, MachineState, MachineStateChanged, Pulses
from edge.domain.model import OperationSpec
from edge.engine import Engine
from edge.panel.auth import hash_pin
from simulators.broker import Mosquitto, free_port
from tests.gateway.conftest import CONFIG, RunningGateway, broker, gateway

__all__ = ["broker"]  # the mosquitto fixture, shared with tests/gateway

PIN = "4711"
SUPERVISOR = "2001"

PANEL = """
[stops]
micro_stop_s = {micro_stop_s}

[panel]
enabled = true
host = "127.0.0.1"
port = {panel_port}
supervisor_id = "{supervisor}"
supervisor_pin_hash = "{pin_hash}"
pin_lockout_s = {lockout_s}
bind_retry_s = 0.2
"""


@functools.cache
def pin_hash() -> str:
    return hash_pin(PIN)


def panel_config(
    tmp_path: Path,
    *,
    broker: Mosquitto | None = None,
    port: int | None = None,
    micro_stop_s: float = 1.0,
    lockout_s: float = 30.0,
    env: dict[str, str] | None = None,
    extra: str = "",
) -> GatewayConfig:
    """The gateway test config plus a panel; without a broker the gateway runs local-only.
    ``extra``: more TOML sections after it."""
    path = tmp_path / "edge.toml"
    text = CONFIG.format(
        db=tmp_path / "edge.db",
        port=broker.port if broker else 1883,
        result_timeout_s=600,
    ) + PANEL.format(
        micro_stop_s=micro_stop_s,
        panel_port=port or free_port(),
        supervisor=SUPERVISOR,
        pin_hash=pin_hash(),
        lockout_s=lockout_s,
    )
    path.write_text(text + extra)
    overrides = {} if broker else {"EDGE_MQTT__ENABLED": "false"}
    return load_config(path, env={**overrides, **(env or {})})


@dataclass
class Panel:
    gw: RunningGateway
    cfg: GatewayConfig

    @property
    def engine(self) -> Engine:
        return self.gw.engine

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.cfg.panel.port}"

    async def pulses(self, n: int) -> None:
        out = await self.engine.submit(Pulses("press_good", n, self.engine.now()))
        assert out.accepted, out.rejection

    async def machine(self, state: MachineState, alarm: str | None = None) -> None:
        out = await self.engine.submit(
            MachineStateChanged("press", state, self.engine.now(), alarm)
        )
        assert out.accepted, out.rejection

    async def dispatch(self, *specs: OperationSpec, version: int = 1) -> None:
        out = await self.engine.submit(DispatchList(version, specs, self.engine.now()))
        assert out.accepted, out.rejection

    async def rows(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        store = self.engine.store

        def read() -> list[tuple[Any, ...]]:
            return list(store.conn.execute(sql, args).fetchall())

        result: list[tuple[Any, ...]] = await self.engine.run_store(read)
        return result


def spec(order: str, operation: str, qty: int, sequence: int = 10, **kw: Any) -> OperationSpec:
    return OperationSpec(
        order,
        operation,
        f"FG-{order}",
        Decimal(qty),
        sequence=sequence,
        material_text=kw.pop("material_text", f"Part {order}"),
        **kw,
    )


async def wait_http(url: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient() as client:
        while True:
            try:
                if (await client.get(url, timeout=1.0)).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"{url} did not answer within {timeout} s")
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def running_panel(cfg: GatewayConfig) -> AsyncIterator[Panel]:
    async with gateway(cfg) as gw:
        panel = Panel(gw, cfg)
        await wait_http(panel.url + "/api/health")
        yield panel


async def wait_until(predicate: Any, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)
