"""The ``edge`` command as maintenance staff use it: readable reports, exit codes, no tracebacks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def edge(*args: str, cwd: Path = ROOT, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_check_config_accepts_the_example() -> None:
    result = edge("check-config", "-c", str(ROOT / "config" / "example.toml"))
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout
    assert "work center PRESS07" in result.stdout


def test_bad_config_is_a_readable_report_with_exit_code_2(tmp_path: Path) -> None:
    bad = tmp_path / "edge.toml"
    bad.write_text(
        '[gateway]\nedge_id = "wc-1"\nwork_center = "WC1"\n'
        '[engine]\nmax_batch = "many"\n'
        '[[counting.sources]]\nname = "press"\nkind = "tota"\n'
    )
    for command in ("check-config", "run"):
        result = edge(command, "-c", str(bad))
        assert result.returncode == 2, result
        assert "Traceback" not in result.stderr
        assert "engine.max_batch" in result.stderr
        assert "'many'" in result.stderr
        assert "kind" in result.stderr
        assert "'tota'" in result.stderr


def test_missing_config_file_exit_code_2(tmp_path: Path) -> None:
    result = edge("check-config", "-c", str(tmp_path / "nope.toml"))
    assert result.returncode == 2
    assert "nope.toml" in result.stderr
    assert "Traceback" not in result.stderr


def test_verify_on_a_missing_database_fails_cleanly(tmp_path: Path) -> None:
    result = edge("verify", "--db", str(tmp_path / "none.db"))
    assert result.returncode == 1
    assert "no such database" in result.stderr


def test_demo_runs_an_order_to_its_final_confirmation(tmp_path: Path) -> None:
    """The README's first command: what a new user sees."""
    result = edge("demo", "--data-dir", str(tmp_path / "demo"), timeout=180)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for seen in (
        "dispatch list v1",
        "dispatched -> setup",
        "setup -> running",
        "REASON PENDING",
        "reason M01",
        "micro-stop",
        "confirmation #1 partial",
        "final",
        "running -> completed",
        "projections equal the journal replay: yes",
    ):
        assert seen in out, f"{seen!r} missing from the demo output:\n{out}"
    assert "Traceback" not in result.stderr
    verify = edge("verify", "--db", str(tmp_path / "demo" / "edge.db"))
    assert verify.returncode == 0, verify.stdout + verify.stderr


@pytest.mark.parametrize("args", [["--version"], ["--help"]])
def test_help_and_version(args: list[str]) -> None:
    assert edge(*args).returncode == 0
