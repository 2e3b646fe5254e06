"""The digital I/O benchmark's smoke mode: every part runs and the numbers have a sane shape.

It runs ``bench/digital_io.py --smoke`` as a user would (its own process, so the GPIO driver
thread and the CPU readings are not mixed up with pytest's), then reads its closing JSON line.
No speed is asserted: on a loaded CI machine the numbers mean little; the counts must hold anyway.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench" / "digital_io.py"


def finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


@pytest.fixture(scope="module")
def smoke() -> tuple[str, dict[str, Any]]:
    done = subprocess.run(
        [sys.executable, str(BENCH), "--smoke"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    return done.stdout, json.loads(lines[-1])


@pytest.mark.timeout(120)
def test_prints_the_three_tables(smoke: tuple[str, dict[str, Any]]) -> None:
    out, summary = smoke
    assert summary["bench"] == "digital_io"
    assert summary["smoke"] is True
    for title in ("(1) GPIO", "(2) Modbus TCP poll cycle", "(3) CPU at 10 Hz"):
        assert title in out


@pytest.mark.timeout(120)
def test_gpio_counts_every_pulse_at_50_hz(smoke: tuple[str, dict[str, Any]]) -> None:
    gpio = smoke[1]["gpio"]
    assert gpio["lossless_at_50hz"]
    assert not gpio["any_loss"]
    at50 = next(r for r in gpio["per_rate"] if r["rate_hz"] == 50)
    for who in ("gateway", "bare"):
        step = at50[who]
        assert step["held"] == step["steps"] == 1
        assert step["driven"] == step["counted"] > 0  # journaled / called back: exact
        assert finite(step["cpu_ms_per_1000"])
        assert step["cpu_ms_per_1000"] > 0
    assert gpio["gateway_max_hz"] >= 50
    assert gpio["bare_max_hz"] >= 50


@pytest.mark.timeout(120)
def test_modbus_poll_cycle_is_measured_on_both_sides(smoke: tuple[str, dict[str, Any]]) -> None:
    m = smoke[1]["modbus_cycle"]
    assert m["registers"] == 32
    assert m["gateway_cycles"] > 0
    assert m["bare_cycles"] > 0
    for side in ("gateway", "bare"):
        assert finite(m[f"{side}_p50_ms"])
        assert m[f"{side}_p50_ms"] > 0
        assert m[f"{side}_p99_ms"] >= m[f"{side}_p50_ms"]
    assert finite(m["ratio_p50"])
    # The simulator counts at 10 pulses/s: some cycles had new values to hand over, not all.
    assert 0 < m["gateway_hand_overs"] < m["gateway_cycles"]


@pytest.mark.timeout(120)
def test_cpu_numbers_are_present(smoke: tuple[str, dict[str, Any]]) -> None:
    summary = smoke[1]
    c = summary["cpu_10hz"]
    for key in ("gateway_pct", "idle_pct", "difference_pct", "simulator_pct"):
        assert finite(c[key]), key
    assert c["gateway_pct"] > 0
    assert c["idle_pct"] >= 0
    assert c["polls_per_s"] > 0
    assert c["commits_per_s"] > 0
    # The simulator ran in its own process and was stopped and reaped.
    assert summary["simulator_exit"] is not None
