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


def test_core_bench_books_the_shifts_and_measures_both(tmp_path: Path) -> None:
    """bench/core.py's short version: both cases, with the book and without, and the book did
    book (its baseline really leaves it out)."""
    spec = importlib.util.spec_from_file_location("bench_core", BENCH.with_name("core.py"))
    assert spec is not None
    assert spec.loader is not None
    core = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(core)
    out = tmp_path / "core.json"
    assert core.main(["--inputs", "300", "--runs", "1", "--json", str(out)]) == 0
    import json

    rows = json.loads(out.read_text())["rows"]
    assert [r["case"] for r in rows] == list(core.CALENDARS)
    assert all(r["with_book_us"] > 0 and r["baseline_us"] > 0 for r in rows)
    from edge.domain import kpis

    assert kpis.on_change.__name__ == "on_change"  # the baseline put it back
