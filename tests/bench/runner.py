"""Running a benchmark as a user does, for the smoke tests: its own process, a JSON result."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def run_bench(
    bench: Path, out: Path, args: list[str], timeout: float
) -> tuple[str, dict[str, Any]]:
    """``python <bench> *args`` (which must write ``out``); its stdout and that JSON. On a
    timeout the bench gets SIGTERM (it stops its children), then SIGKILL."""
    proc = subprocess.Popen(
        [sys.executable, str(bench), *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
    assert proc.returncode == 0, stdout[-3000:] + stderr[-3000:]
    return stdout, json.loads(out.read_text())
