"""The installer's path: `edge run` with an OPC UA source records counts and states."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

from edge.store.store import Store
from simulators.opcua_machine import MachineSimulator
from tests.opcua.test_opcua_source import config

ROOT = Path(__file__).resolve().parents[2]


async def test_edge_run_reads_the_machine_and_stops_cleanly(tmp_path: Path) -> None:
    async with MachineSimulator(cycle_s=0.02, seed=9) as machine:
        cfg = config(tmp_path, machine)
        await machine.run()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "edge", "run", "-c", str(tmp_path / "edge.toml"), cwd=ROOT,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        await asyncio.sleep(3)
        await machine.stop(alarm="E-217")
        await asyncio.sleep(1)
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 20)
        assert proc.returncode == 0, err.decode()[-2000:]
    store = Store(cfg.store.path)
    store.open(boot=False)
    try:
        wc = store.load()
        assert wc is not None
        track = wc.counters["press_good"]
        assert track.last_value is not None
        assert track.last_value > 0
        assert wc.header.machine_state is not None
        assert wc.header.machine_state.value == "down"
        assert wc.header.machine_alarm == "E-217"
    finally:
        store.close()
