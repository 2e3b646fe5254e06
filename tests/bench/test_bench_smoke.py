"""The ingest benchmark's short version: both modes run and count every reading exactly once."""

from __future__ import annotations

import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "ingest.py"


def load_bench():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("bench_ingest", BENCH)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_ingest_bench_runs_both_modes() -> None:
    bench = load_bench()
    grouped = await bench.one_run(2048, grouped=True)
    single = await bench.one_run(128, grouped=False)
    assert grouped > 0
    assert single > 0
