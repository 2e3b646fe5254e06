"""The end-to-end benchmark's short version: every peer delivers every value, the table prints.

``bench/e2e.py`` runs as a user runs it (its own process, which starts the OPC UA server, the
broker, ``edge run``, the naive script and Node-RED as its children), a few seconds per peer at
100 changes/s, one run. No timing is asserted: on a loaded CI machine the numbers mean little;
delivery must hold anyway, and our gateway must not have reconnected its OPC UA session.

Node-RED comes from npm: the bench installs it once into ``bench/.nodered/`` (git-ignored; about
30 s the first time here, 10 s with npm's cache warm, nothing once installed). Without node,
npm or the registry that test is skipped with the reason; the others run. It is a slow test
(``./scripts/test --long``): the install alone would be a twentieth of the normal suite.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from simulators.broker import find_mosquitto
from tests.bench.runner import run_bench as bench_run

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench" / "e2e.py"


def load_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_e2e", BENCH)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def _mosquitto() -> None:
    try:
        find_mosquitto()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))


def run_bench(work: Path, *args: str, timeout: float) -> tuple[str, dict[str, Any]]:
    out = work / "e2e.json"
    return bench_run(
        BENCH,
        out,
        [
            "--rates",
            "100",
            "--seconds",
            "3",
            "--runs",
            "1",
            "--json",
            str(out),
            "--workdir",
            str(work / "peers"),
            *args,
        ],
        timeout,
    )


def left_running(work: Path) -> list[str]:
    """Processes whose command line names the bench's work directory (the gateway's config,
    Node-RED's settings, the broker's config): there must be none once the bench is done."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if str(work) in cmdline:
            found.append(f"{pid}: {cmdline}")
    return found


def assert_delivered(summary: dict[str, Any], key: str) -> None:
    s = summary[key]
    assert s["measured"] == 1, s
    assert s["delivered_all"], s  # the last value written reached the subscriber
    assert s["lost"] == 0, s  # every value written was covered by a message
    assert s["made"] == 300
    assert s["messages"] > 0
    assert s["wrong"] == 0  # no message carried a value before it was written
    assert s["p50_ms"] > 0
    assert s["p99_ms"] >= s["p50_ms"]
    assert s["cpu_pct"] > 0
    assert s["rss_peak_mb"] >= s["rss_end_mb"] > 0


@pytest.mark.timeout(240)
def test_ours_and_the_naive_script_deliver_every_value(tmp_path: Path) -> None:
    out, data = run_bench(
        tmp_path, "--peers", "ours,naive", "--uplink-backlog", "2000", timeout=200
    )
    summary = data["summary"]
    assert_delivered(summary, "100/ours")
    assert_delivered(summary, "100/naive")
    assert summary["100/ours"]["reconnects"] == 0  # one OPC UA session all along
    assert summary["100/naive"]["reconnects"] is None
    (ours,) = [p for p in data["phases"] if p["peer"] == "ours"]
    assert ours["extras"]["connects"] == 1
    assert not ours["extras"]["unavailable_reasons"]

    for text in (
        "| rate/s | peer",
        "| 100    | ours: edge run",
        "| 100    | naive asyncua+paho",
        "| 100    | ratio ours / naive",
        "every peer delivered its last value, no value lost, none ahead of the writes: yes",
        "uplink backlog drain (bench/uplink.py, 2,000 messages",
    ):
        assert text in out, out
    uplink = data["uplink"]
    assert uplink["gateway"]["lost"] == uplink["naive"]["lost"] == 0
    assert uplink["gateway"]["dup"] == 0
    assert uplink["ratio"] > 0
    assert not left_running(tmp_path)


@pytest.mark.slow  # npm installs Node-RED first (about 30 s on a fresh machine): --long
@pytest.mark.timeout(600)
def test_node_red_delivers_every_value(tmp_path: Path) -> None:
    bench = load_bench()
    try:
        bench.nodered_install()  # once; cached in bench/.nodered/
    except bench.Unavailable as exc:
        pytest.skip(f"Node-RED: {exc}")
    out, data = run_bench(tmp_path, "--peers", "nodered", "--uplink-backlog", "0", timeout=200)
    assert_delivered(data["summary"], "100/nodered")
    assert "| 100    | Node-RED 4" in out, out
    assert data["meta"]["nodered"]["node-red"].startswith("4.")
    assert not left_running(tmp_path)
