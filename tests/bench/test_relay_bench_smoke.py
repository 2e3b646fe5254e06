"""The ERP relay benchmark's short version: 2 relays sharing a PostgreSQL ledger, 10 gateways,
a few seconds; every confirmation posted exactly once (one phase keeps the suite short; the
relay's tests cover one relay on SQLite).

``bench/relay.py`` runs as a user runs it (its own process, which starts the broker, the
PostgreSQL cluster, the SAP stand-in and ``edge relay run`` as its children). No timing is
asserted beyond "something was posted": on a loaded CI machine the numbers mean little; exactly
once must hold anyway, and no child may be left running.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from simulators.broker import find_mosquitto
from tests.bench.runner import run_bench as bench_run
from tests.pg import PostgresNotFound, find_bin_dir

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench" / "relay.py"


@pytest.fixture(autouse=True)
def _servers() -> None:
    try:
        find_mosquitto()
        find_bin_dir()
    except (FileNotFoundError, PostgresNotFound) as exc:
        pytest.skip(str(exc))


def run_bench(work: Path, *args: str, timeout: float) -> tuple[str, dict[str, Any]]:
    out = work / "relay.json"
    return bench_run(
        BENCH, out, ["--quick", "--json", str(out), "--workdir", str(work / "run"), *args], timeout
    )


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.timeout(90)
def test_two_relays_post_every_confirmation_exactly_once(tmp_path: Path) -> None:
    out, data = run_bench(
        tmp_path, "--relays", "2", "--ledger", "postgres", "--gateways", "10", "--ops", "3",
        timeout=75,
    )  # fmt: skip
    assert data["ok"], data
    phases = {p["phase"]: p for p in data["phases"]}
    assert set(phases) == {"2/postgres"}
    for key, p in phases.items():
        assert p["published"] > 0, key
        assert p["lost"] == 0, p
        assert p["duplicates"] == 0, p
        assert p["unexpected_in_erp"] == 0, p
        assert p["unanswered"] == 0, p
        assert p["extra_final_verdicts"] == 0, p
        assert p["verdicts"].get("rejected", 0) == 0, p
        assert p["posted_per_s_median"] > 0, p
        assert p["latency_ms"]["p99"] >= p["latency_ms"]["p50"] > 0, p
        assert len(p["relay_cpu_pct"]) == len(p["relay_rss_mb"]) == p["relays"]
        assert all(c > 0 for c in p["relay_cpu_pct"]), p
        assert all(m > 0 for m in p["relay_rss_mb"]), p
        assert p["relay_exit_codes"] == [0] * p["relays"], p  # stopped cleanly by SIGTERM
        assert not [pid for pid in p["pids"] if alive(pid)], p
    for text in (
        "| relays | ledger   | posted/s",
        "| 2      | postgres ",
        "every published confirmation posted exactly once, every one answered: yes",
    ):
        assert text in out, out
