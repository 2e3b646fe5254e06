"""When things happened at the machine: the OPC UA source dates states, alarms and counts by
the server's timestamps, bounded by what is plausible, and corrects a server clock that is off."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

from structlog.testing import capture_logs

from edge.config import GatewayConfig, load_config
from edge.domain.inputs import MachineState
from edge.domain.model import OperationKey, OperationSpec
from edge.engine import Engine
from edge.sources.opcua import OpcUaLink
from simulators.opcua_machine import MachineSimulator
from tests.opcua.stamped_server import StampedServer
from tests.opcua.tcp_proxy import TcpProxy
from tests.opcua.test_opcua_source import CONFIG, until
from tests.opcua.test_opcua_source import gateway as source_gateway

# No standard cycle time: no stop opens for want of counts, only the machine state opens one.
OP = OperationSpec("4711", "0020", "FG-4711", Decimal(10**6), std_cycle_s=0)
KEY = OperationKey("4711", "0020")
SKEW_WARNING = "the opc ua server's clock disagrees with ours; its timestamps are corrected"


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


def config(tmp_path: Path, endpoint: str, ids: dict[str, str], **keys: object) -> GatewayConfig:
    text = CONFIG.format(
        db=tmp_path / "edge.db",
        bits=32,
        endpoint=endpoint,
        state=ids["state"],
        alarm=ids["alarm"],
        mode=ids["mode"],
        good=ids["good"],
    )
    lines = [ln for ln in text.splitlines() if ln.split(" = ")[0] not in keys]
    at = lines.index('template = "machinery"') + 1
    lines[at:at] = [f"{key} = {json.dumps(value)}" for key, value in keys.items()]
    path = tmp_path / "edge.toml"
    path.write_text("\n".join(lines) + "\n")
    return load_config(path, env={})


@contextlib.asynccontextmanager
async def gateway(cfg: GatewayConfig) -> AsyncIterator[tuple[Engine, OpcUaLink]]:
    """The source tests' gateway, with this file's operation (no standard cycle time)."""
    async with source_gateway(cfg, OP) as running:
        yield running


def state_events(engine: Engine) -> list[tuple[int, dict[str, Any]]]:
    """The machine_state events committed so far: (at_wall_ms, data)."""
    rows = engine.store.conn.execute(
        "SELECT at_wall_ms, data FROM event WHERE type = 'machine_state' ORDER BY id"
    ).fetchall()
    return [(int(row[0]), json.loads(row[1])) for row in rows]


def down_ms(engine: Engine) -> int:
    return int(engine.wc.operations[KEY].counted.down_ms)


async def test_a_stop_that_began_before_the_gateway_started_is_dated_when_it_began(
    tmp_path: Path,
) -> None:
    async with MachineSimulator(cycle_s=0.02, seed=41) as machine:
        before = wall_ms()
        await machine.stop(alarm="E-217")
        after = wall_ms()
        await asyncio.sleep(2.0)  # the gateway is (re)starting meanwhile
        cfg = config(tmp_path, machine.endpoint, machine.node_ids)
        async with gateway(cfg) as (engine, _link):
            await until(lambda: engine.wc.open_stop is not None, 10, "the stop")
            stop = engine.wc.open_stop
            assert stop is not None
            assert stop.alarm == "E-217"
            assert before - 50 <= stop.start.wall_ms <= after + 50, (before, stop.start, after)


async def test_a_stop_during_an_outage_is_dated_when_it_began_and_booked_whole(
    tmp_path: Path,
) -> None:
    async with (
        MachineSimulator(cycle_s=0.02, seed=42) as machine,
        TcpProxy(machine.host, machine.port) as line,
    ):
        cfg = config(tmp_path, line.endpoint, machine.node_ids, reconnect_max_s=0.5)
        async with gateway(cfg) as (engine, link):
            await until(lambda: link.link_status == "ok", 10, "the connection")
            await machine.run()
            await until(
                lambda: engine.wc.header.machine_state is MachineState.RUNNING, 5, "running"
            )
            line.cut(refuse=True)
            await until(lambda: link.link_status == "down", 5, "the cut to be noticed")
            before = wall_ms()
            await machine.stop(alarm="E-217")
            after = wall_ms()
            await asyncio.sleep(2.0)
            line.heal()
            await until(lambda: engine.wc.open_stop is not None, 10, "the stop after the outage")
            stop = engine.wc.open_stop
            assert stop is not None
            assert before - 50 <= stop.start.wall_ms <= after + 50, (before, stop.start, after)
            ended = wall_ms()
            await machine.run()
            await until(lambda: engine.wc.open_stop is None, 5, "the stop to end")
            booked = down_ms(engine)
            # Down from the stop to the run: the outage's two seconds included (100 ms either
            # way: a full run on a busy machine once booked 16 ms more than a 50 ms bound).
            assert ended - after - 100 <= booked <= wall_ms() - before + 100, booked


async def test_a_timestamp_in_the_future_is_taken_as_now(tmp_path: Path) -> None:
    async with StampedServer() as server:
        future = server.now().replace(year=server.now().year + 1)
        await server.write("state", "OutOfService", at=future)  # before we connect
        cfg = config(tmp_path, server.endpoint, server.node_ids)
        async with gateway(cfg) as (engine, _link):
            started = wall_ms()
            await until(lambda: engine.wc.open_stop is not None, 10, "the stop")
            stop = engine.wc.open_stop
            assert stop is not None
            assert started - 50 <= stop.start.wall_ms <= wall_ms(), (started, stop.start)
            # Live: a run stamped in the future is dated when it is seen...
            sent = wall_ms()
            await server.write("state", "Executing", at=future)
            await until(lambda: engine.wc.open_stop is None, 5, "the stop to end")
            seen = wall_ms()
            ended = [at for at, data in state_events(engine) if data["state"] == "running"][-1]
            assert sent <= ended <= seen, (sent, ended, seen)
            # ... and a correct stamp after it is never dated before it.
            await server.write("state", "OutOfService")
            await until(lambda: engine.wc.open_stop is not None, 5, "the next stop")
            again = engine.wc.open_stop
            assert again is not None
            assert again.start.mono_ms >= stop.start.mono_ms
            assert again.start.wall_ms >= ended


async def test_a_server_clock_that_is_off_is_corrected_and_said_once(tmp_path: Path) -> None:
    with capture_logs() as logs:
        async with (
            StampedServer(skew_s=-60.0) as server,  # the PLC's clock is a minute behind
            TcpProxy("127.0.0.1", server.port) as line,
        ):
            before = wall_ms()
            await server.write("alarm", "E-105")
            await server.write("state", "OutOfService")
            after = wall_ms()
            await asyncio.sleep(1.5)
            cfg = config(tmp_path, line.endpoint, server.node_ids, reconnect_max_s=0.5)
            async with gateway(cfg) as (engine, link):
                await until(lambda: engine.wc.open_stop is not None, 10, "the stop")
                stop = engine.wc.open_stop
                assert stop is not None
                assert stop.alarm == "E-105"
                assert before - 50 <= stop.start.wall_ms <= after + 50, (before, stop, after)
                assert -61.0 < link.state.clock_offset_s < -59.0
                # A reconnect and a few watchdog periods: still said once.
                connects = link.state.connects
                line.cut()
                await until(lambda: link.state.connects > connects, 10, "the reconnect")
                await asyncio.sleep(4 * link.cfg.watchdog_s)
                sent = wall_ms()
                await server.write("alarm", "")
                await server.write("state", "Executing")
                await until(lambda: engine.wc.open_stop is None, 5, "the stop to end")
                seen = wall_ms()
                ended = [at for at, data in state_events(engine) if data["state"] == "running"]
                assert sent - 50 <= ended[-1] <= seen, (sent, ended, seen)
    said = [e for e in logs if str(e.get("event", "")).startswith(SKEW_WARNING)]
    assert len(said) == 1, said
    assert -61.0 < said[0]["offset_s"] < -59.0
