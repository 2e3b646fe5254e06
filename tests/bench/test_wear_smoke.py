"""The write-wear benchmark's short version: it measures our gateway and the naive logger.

``bench/wear.py`` runs as a user runs it (its own process with the OPC UA server, the broker
and each variant as children), two seconds per variant at 100 changes/s. No byte count is
asserted beyond "something was written and counted": the numbers come from the bench.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from simulators.broker import find_mosquitto
from tests.bench.runner import ROOT, run_bench
from tests.bench.test_e2e_smoke import left_running

BENCH = ROOT / "bench" / "wear.py"


@pytest.mark.timeout(180)
def test_wear_is_measured_for_ours_and_the_logger(tmp_path: Path) -> None:
    try:
        find_mosquitto()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    out = tmp_path / "wear.json"
    stdout, data = run_bench(
        BENCH,
        out,
        [
            "--rates",
            "100",
            "--seconds",
            "2",
            "--variants",
            "ours,logger",
            "--json",
            str(out),
            "--workdir",
            str(tmp_path / "work"),
        ],
        timeout=150,
    )
    by = {r["variant"]: r for r in data["results"]}
    assert set(by) == {"ours", "logger"}
    for r in by.values():
        assert r["error"] is None, r
        assert r["changes"] == 200
        assert r["write_bytes"] > 0  # it stored something, and /proc/<pid>/io counted it
        assert r["db_bytes"] > 0
        assert r["mb_per_h"] > 0
    assert by["ours"]["commits"] > 0  # from the gateway's /metrics
    assert by["ours"]["extras"]["connects"] == 1  # one OPC UA session all along
    assert "naive logger" in stdout
    assert "ours, shipped defaults" in stdout
    assert "vs logger" in stdout
    assert not left_running(tmp_path)
