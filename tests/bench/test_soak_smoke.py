"""The soak's short version: half a minute of production at 20 parts a second over the whole
chain (machine, gateway, mosquitto, two relays on PostgreSQL, SAP stand-in).

``bench/soak.py`` runs as a user runs it; the figures are the bench's. The test holds what must
be true at any length: samples taken (memory, fds, the database), every confirmation in SAP
once, every alarm stop seen, the daemons stopped cleanly, the CSV and the plot written.
"""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import pytest

from tests.bench.runner import ROOT, run_bench
from tests.pg import PostgresNotFound, find_bin_dir

BENCH = ROOT / "bench" / "soak.py"


@pytest.mark.timeout(90)
def test_half_a_minute_of_the_chain_is_sampled_and_nothing_is_lost(tmp_path: Path) -> None:
    try:
        find_bin_dir()
    except PostgresNotFound as exc:  # pragma: no cover - scripts/test installs PostgreSQL
        pytest.skip(str(exc))
    plotting = importlib.util.find_spec("matplotlib") is not None
    out, table, png = tmp_path / "soak.json", tmp_path / "soak.csv", tmp_path / "soak.png"
    args = ["--minutes", "0.5", "--rate", "20", "--op-s", "8,12", "--sample-s", "2"]
    args += ["--json", str(out), "--csv", str(table), "--png", str(png)]
    stdout, data = run_bench(BENCH, out, args, timeout=85)

    s = data["summary"]
    assert s["problems"] == [], s["problems"]
    assert s["lost"] == 0
    assert s["doubled"] == 0
    assert s["orphans"] == 0
    assert s["operations"] >= 2
    assert s["cycles"] == s["parts_good"] + s["parts_scrap"] > 0
    assert s["confirmations"] >= s["operations"]  # at least the final one of each
    assert s["posted"] == s["confirmations"]
    assert s["stops_expected"] > 0
    assert s["stops_missed"] == 0
    assert s["exit_codes"] == {"gateway": 0, "relay-a": 0, "relay-b": 0}
    assert s["latency_n"] == s["posted"]
    assert s["latency_p50_ms"] is not None
    assert 0 < s["latency_p50_ms"] <= s["latency_p99_ms"]

    samples = data["samples"]
    assert len(samples) >= 10  # 30 s and more every 2 s
    assert all(x["rss_mb"] > 0 for x in samples)
    assert all(x["fds"] > 0 for x in samples)
    assert samples[-1]["db_mb"] + samples[-1]["wal_mb"] > 0
    assert s["max_rss_mb"] == max(x["rss_mb"] for x in samples)
    made = [x["parts_made"] for x in samples]
    assert made == sorted(made)
    assert made[-1] == s["cycles"]

    with table.open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(samples)
    assert {"rss_mb", "cpu_pct", "fds", "db_mb", "wal_mb", "outbox", "latency_p99_ms"} <= set(
        rows[0]
    )
    assert float(rows[-1]["rss_mb"]) == samples[-1]["rss_mb"]

    assert "lost / doubled / orphans   0 / 0 / 0" in stdout
    if plotting:
        assert png.stat().st_size > 10_000
