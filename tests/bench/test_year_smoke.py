"""The simulated year's short version: two months of two days, a slow burst.

``bench/year.py`` runs as a user runs it; the figures are the bench's, the test holds what
must be true at any length: a row a month, the tables counted, the start-up measured,
nothing unfinished missing from the database, and the plot written.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.bench.runner import ROOT, run_bench

BENCH = ROOT / "bench" / "year.py"


@pytest.mark.timeout(120)
def test_two_short_months_are_measured_and_nothing_unfinished_is_lost(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "year.json"
    png = tmp_path / "year.png"
    stdout, data = run_bench(
        BENCH,
        out,
        [
            "--months",
            "2",
            "--month-days",
            "2",
            "--burst-hz",
            "0.5",
            "--reading-s",
            "120",
            "--json",
            str(out),
            "--png",
            str(png),
        ],
        timeout=110,
    )
    months = data["months"]
    assert [m["month"] for m in months] == [1, 2]
    assert [m["days"] for m in months] == [2, 4]
    for m in months:
        assert m["db_mb"] > 0
        assert m["rows"]["journal"] > 0
        assert m["rows"]["operation"] > 0
        assert 0 < m["load_ms"] < 2000
        assert m["rss_mb"] > 0
    assert months[1]["inputs"] > months[0]["inputs"]
    assert data["unfinished_missing"] == 0
    assert "unfinished records missing from the database: 0" in stdout
    assert png.stat().st_size > 10_000
