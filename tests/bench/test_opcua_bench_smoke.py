"""The OPC UA benchmark's short version: both parts run and every part made is counted.

No timing is asserted: on a loaded CI machine the numbers mean little; the counts must hold anyway.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "opcua.py"


def load_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_opcua", BENCH)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.timeout(60)
async def test_opcua_bench_counts_every_part(tmp_path: Path) -> None:
    bench = load_bench()
    async with bench.Child("server", "--nodes", "5") as server:
        gw = await bench.latency_gateway(
            server, tmp_path / "lat", rate=10, seconds=2, publishing_ms=0
        )
        naive = await bench.latency_naive(server, rate=10, seconds=2, publishing_ms=0)
        cpu = await bench.cpu_run(server, tmp_path / "cpu", nodes=5, seconds=3, warmup_s=0.5)
        server_proc = server.proc

    assert gw.made == 20
    assert gw.counted == gw.made  # parts counted == parts made
    assert gw.lost == 0
    assert 1 <= gw.notifications <= gw.made
    assert len(gw.latencies_ms) == gw.made

    assert naive.made == 20
    assert naive.lost == 0
    assert len(naive.latencies_ms) == naive.made

    assert cpu.made >= 3
    assert cpu.counted == cpu.made
    assert cpu.values_match  # all 5 counters, in the gateway and in the naive client
    assert cpu.gateway_readings > 0
    assert cpu.naive_notifications > 0

    assert server_proc is not None
    assert server_proc.returncode is not None  # the server process is gone
