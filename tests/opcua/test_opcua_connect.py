"""What the OPC UA source reports of a machine it finds already stopped when it connects."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from edge.domain.inputs import MachineState
from edge.engine import Engine
from simulators.opcua_machine import MachineSimulator
from tests.opcua.test_opcua_source import config, gateway, until


def events(engine: Engine, *types: str) -> list[tuple[str, dict[str, Any]]]:
    marks = ",".join("?" * len(types))
    rows = engine.store.conn.execute(
        f"SELECT type, data FROM event WHERE type IN ({marks}) ORDER BY id", types
    ).fetchall()
    return [(row[0], json.loads(row[1])) for row in rows]


def journaled(engine: Engine, input_type: str) -> int:
    row = engine.store.conn.execute(
        "SELECT COUNT(*) FROM journal WHERE input_type = ?", (input_type,)
    ).fetchone()
    return int(row[0])


async def test_a_stop_found_at_connect_is_one_change_with_its_alarm(tmp_path: Path) -> None:
    async with MachineSimulator(cycle_s=0.02, seed=31) as machine:
        await machine.stop(alarm="E-217")  # down with an alarm before the gateway looks
        async with gateway(config(tmp_path, machine)) as (engine, link):
            await until(lambda: link.link_status == "ok", 10, "the connection")
            await until(lambda: engine.wc.open_stop is not None, 5, "the stop")
            await until(lambda: journaled(engine, "MachineStateChanged") >= 1, 5, "the commit")
            await asyncio.sleep(0.5)  # the subscription's first notifications: nothing new
            assert engine.wc.header.machine_state is MachineState.DOWN
            assert engine.wc.header.machine_alarm == "E-217"
            assert journaled(engine, "MachineStateChanged") == 1
            seen = events(engine, "machine_state", "stop_started")
            assert [t for t, _ in seen] == ["machine_state", "stop_started"], seen
            assert seen[0][1]["state"] == "down"
            assert seen[0][1]["alarm"] == "E-217"
            assert seen[1][1]["alarm"] == "E-217"
