"""Shared by the Modbus tests: a config for a simulated module, and a gateway reading it.

The gateway is the real thing minus MQTT: a real Engine on a SQLite file in the test's temp
dir, an operation dispatched and started (so counts land on it), and a ModbusLink polling the
simulator every 20 ms.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from pathlib import Path

from edge.app import open_engine
from edge.config import GatewayConfig, load_config
from edge.domain.inputs import Action, DispatchList, Transition
from edge.domain.model import OperationKey, OperationSpec
from edge.engine import Engine
from edge.sources.modbus import ModbusLink, counter_bits
from simulators.modbus_io import ModbusIoSimulator

OP = OperationSpec("4711", "0020", "FG-4711", Decimal(10**6), std_cycle_s=0.01)
KEY = OperationKey("4711", "0020")
COUNTER = "io_good"
SOURCE = "press_io"

CONFIG = """
[gateway]
edge_id = "wc-press-07"
work_center = "PRESS07"
log_level = "warning"

[store]
path = "{db}"

[engine]
tick_interval_s = 0.2

[[counting.sources]]
name = "{counter}"
kind = "good"
bits = {bits}

[[sources.modbus]]
name = "{source}"
{link}
unit_id = {unit}
poll_interval_ms = 20
timeout_s = 0.2
reconnect_min_s = 0.05
reconnect_max_s = 0.3
word_order = "{word_order}"

[[sources.modbus.counters]]
counter = "{counter}"
table = "{table}"
address = {address}

[sources.modbus.state]
table = "discrete_inputs"
running = 0
down = 1
setup = 2
{state_extra}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def modbus_config(
    tmp_path: Path,
    sim: ModbusIoSimulator,
    *,
    index: int = 0,
    table: str = "holding",
    address: int | None = None,
    unit: int | None = None,
    state_extra: str = "",
) -> GatewayConfig:
    """A gateway config reading counter ``index`` of ``sim`` (its width and word order)."""
    if sim.transport == "tcp":
        link = f'transport = "tcp"\nhost = "{sim.host}"\nport = {sim.port}'
    else:
        # A pty refuses parity on this kernel (tcsetattr EINVAL); a real port takes "E".
        link = f'transport = "rtu"\ndevice = "{sim.device}"\nbaudrate = 19200\nparity = "N"'
    path = tmp_path / "edge.toml"
    path.write_text(
        CONFIG.format(
            db=tmp_path / "edge.db",
            counter=COUNTER,
            source=SOURCE,
            bits=sim.bits_of(index),
            link=link,
            unit=sim.unit_id if unit is None else unit,
            word_order=sim.word_order,
            table=table,
            address=sim.address_of(index) if address is None else address,
            state_extra=state_extra,
        )
    )
    return load_config(path, env={})


async def until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@contextlib.asynccontextmanager
async def gateway(cfg: GatewayConfig) -> AsyncIterator[tuple[Engine, ModbusLink]]:
    engine = await open_engine(cfg)
    runner = asyncio.create_task(engine.run(cfg.engine.tick_interval_s))
    await engine.submit(DispatchList(1, (OP,), engine.now()))
    await engine.submit(Transition(Action.START_PRODUCTION, str(KEY), "operator:1", engine.now()))
    link = ModbusLink(cfg.sources.modbus[0], engine, bits=counter_bits(cfg))
    source = asyncio.create_task(link.run())
    try:
        yield engine, link
        assert not source.done(), "the modbus source task ended"
    finally:
        source.cancel()
        runner.cancel()
        for task in (source, runner):
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, 10)
        await engine.close()


def good(engine: Engine) -> int:
    return int(engine.wc.operations[KEY].counted.good)


async def events(engine: Engine, kind: str) -> int:
    """Events of ``kind`` on disk. Read on the store's thread, after the commit in flight: the
    core's state (what the tests wait for) moves before its commit is done."""

    def count() -> int:
        query = "SELECT COUNT(*) FROM event WHERE type = ?"
        return int(engine.store.conn.execute(query, (kind,)).fetchone()[0])

    return await engine.run_store(count)


def core_value(engine: Engine) -> int | None:
    track = engine.wc.counters.get(COUNTER)
    return None if track is None else track.last_value


async def baseline(engine: Engine, sim: ModbusIoSimulator, index: int = 0) -> None:
    """Wait until the core holds the counter's current value (the first reading: a baseline)."""
    await until(lambda: core_value(engine) == sim.counter(index), 5, "the first reading")


async def counted(engine: Engine, expected: int, what: str = "exact counts") -> None:
    await until(lambda: good(engine) == expected, 5, f"{what} ({expected})")
    await asyncio.sleep(0.1)
    assert good(engine) == expected, "counted more than was made"
