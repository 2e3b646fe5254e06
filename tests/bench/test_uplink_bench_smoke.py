"""The uplink benchmark's short version: both parts run, nothing lost, duplicated or reordered.

No timing is asserted: on a loaded CI machine the numbers mean little; delivery must hold anyway.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from simulators.broker import Mosquitto, find_mosquitto

BENCH = Path(__file__).resolve().parents[2] / "bench" / "uplink.py"


def load_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_uplink", BENCH)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def broker(tmp_path: Path):  # type: ignore[no-untyped-def]
    try:
        find_mosquitto()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    with Mosquitto(tmp_path / "broker") as b:
        yield b


@pytest.mark.timeout(60)
async def test_uplink_bench_delivers_everything_in_order(broker: Mosquitto) -> None:
    bench = load_bench()
    lat, drain = await bench.one_run(broker, events=100, rate=100, backlog=2000)

    for d in (lat.gateway, lat.naive):
        assert d.received == d.expected == 100
        assert (d.missing, d.duplicates, d.out_of_order) == (0, 0, 0)
        assert len(d.latencies_ms) == 100
    assert len(lat.durable.latencies_ms) == 100

    for d in (drain.gateway, drain.naive):
        assert d.expected == 2000
        assert (d.missing, d.duplicates, d.out_of_order) == (0, 0, 0)
        assert d.received == 2000
    assert broker.running  # restarted after the outage, and stopped by the fixture
