"""What the daemon's entry path loads: heavy optional modules stay out of ``edge run``.

Each check runs a fresh interpreter (stderr a pipe, as under systemd) so that nothing this test
process already imported counts.
"""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.util import find_spec

import pytest

# Everything `edge run` imports for a config with an OPC UA source, MQTT and the panel.
DAEMON_PATH = (
    "import edge.cli, edge.app, edge.sources.opcua, edge.sync.service, edge.panel.server",
)
# Pulled in by structlog when installed (rich: only a dev tool's dependency here).
KEPT_OUT = ("rich", "pygments", "greenlet")


def _child(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _loaded_after(statements: tuple[str, ...], names: tuple[str, ...]) -> dict[str, bool]:
    code = "\n".join(
        [
            "import json, sys",
            *statements,
            f"print(json.dumps({{n: n in sys.modules for n in {list(names)!r}}}))",
        ]
    )
    proc = _child(code)
    assert proc.returncode == 0, proc.stderr
    loaded: dict[str, bool] = json.loads(proc.stdout.strip().splitlines()[-1])
    return loaded


@pytest.mark.skipif(find_spec("rich") is None, reason="rich is not installed: nothing to keep out")
def test_daemon_path_does_not_load_structlogs_optional_helpers() -> None:
    loaded = _loaded_after(DAEMON_PATH, (*KEPT_OUT, "structlog", "asyncua", "fastapi"))
    # the parts the daemon needs are there (so the check below is about the right process)
    assert loaded["structlog"], loaded
    assert loaded["asyncua"], loaded
    assert loaded["fastapi"], loaded
    assert [name for name in KEPT_OUT if loaded[name]] == []


@pytest.mark.skipif(find_spec("rich") is None, reason="rich is not installed")
def test_the_hidden_modules_are_importable_again_afterwards() -> None:
    loaded = _loaded_after(("import edge.cli", "import rich.console"), ("rich", "rich.console"))
    assert loaded == {"rich": True, "rich.console": True}


def test_console_and_json_rendering_still_show_the_traceback() -> None:
    code = """
import sys
from edge.logging import configure_logging, get_logger
for as_json in (False, True):
    configure_logging("info", json=as_json)
    try:
        {}["missing-key-4711"]
    except KeyError:
        get_logger("weight").exception("failed here", json_mode=as_json)
"""
    proc = _child(code)
    assert proc.returncode == 0, proc.stderr
    console, json_line = proc.stderr.split("\n", 1)[0], proc.stderr.strip().splitlines()[-1]
    assert "failed here" in console
    assert "json_mode=False" in console
    assert "Traceback (most recent call last)" in proc.stderr
    assert "missing-key-4711" in proc.stderr
    record = json.loads(json_line)
    assert record["event"] == "failed here"
    assert record["json_mode"] is True
    assert "missing-key-4711" in record["exception"]
