"""The package as a plant installs it: a wheel with everything the daemon needs, pipx install.

The quick test builds the wheel and runs the installed copy (not this checkout) against the
dependencies already in the test venv; the slow one does the real ``pipx install`` from PyPI.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.cli.test_cli import example_without_tls

REPO = Path(__file__).resolve().parents[2]


def build_wheel(out: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(out), str(REPO)],
        check=True, timeout=300, capture_output=True,
    )  # fmt: skip
    (wheel,) = out.glob("edge_gateway-*.whl")
    return wheel


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("wheel"))


def test_the_wheel_carries_the_panel_the_contract_code_and_the_simulators(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    must = {
        "edge/py.typed",
        "edge/panel/static/index.html",
        "edge/panel/i18n/en.json",
        "edge/panel/i18n/de.json",
        "simulators/modbus_io.py",
        "simulators/central.py",
    }
    assert must <= names, f"missing from the wheel: {sorted(must - names)}"
    assert not [n for n in names if n.startswith("tests/")], "tests do not belong in the wheel"


def test_the_installed_copy_runs_from_anywhere(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
         str(wheel)],
        check=True, timeout=300, capture_output=True,
    )  # fmt: skip
    # The installed copy first, the test venv's packages for the dependencies; not this checkout.
    env = {**os.environ, "PYTHONPATH": str(target), "PYTHONSAFEPATH": "1"}
    probe = (
        "import edge, edge.panel.api, pathlib; "
        "root = pathlib.Path(edge.__file__).parent; "
        "assert (root / 'panel' / 'static' / 'index.html').is_file(); "
        "print(root)"
    )
    found = subprocess.run(
        [sys.executable, "-c", probe], env=env, cwd=tmp_path, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert found.returncode == 0, found.stderr
    assert found.stdout.strip().startswith(str(target))
    checked = subprocess.run(
        [sys.executable, "-m", "edge.cli", "check-config", "-c",
         str(example_without_tls(tmp_path))],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_pipx_install_from_pypi_gives_a_working_edge_command(wheel: Path, tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--target", str(tmp_path / "pipx"), "pipx"],
        check=True, timeout=300, capture_output=True,
    )  # fmt: skip
    env = {
        **os.environ,
        "PYTHONPATH": str(tmp_path / "pipx"),
        "PIPX_HOME": str(tmp_path / "pipx-home"),
        "PIPX_BIN_DIR": str(tmp_path / "bin"),
        "PIPX_MAN_DIR": str(tmp_path / "man"),
    }
    env.pop("VIRTUAL_ENV", None)
    subprocess.run(
        [sys.executable, "-m", "pipx", "install", str(wheel)],
        check=True, timeout=800, env=env, capture_output=True,
    )  # fmt: skip
    edge = tmp_path / "bin" / "edge"
    result = subprocess.run(
        [str(edge), "check-config", "-c", str(example_without_tls(tmp_path))],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
