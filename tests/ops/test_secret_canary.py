"""The MQTT password never shows: not in the daemon's debug log, not in any command's output."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from simulators.broker import Mosquitto
from tests.ops.conftest import REPO, edge, write_config

pytestmark = pytest.mark.timeout(90)


def _canary_config(tmp_path: Path, port: int) -> tuple[Path, str]:
    canary = f"CANARY-{secrets.token_hex(12)}"
    pw = tmp_path / "mqtt-password"
    pw.write_text(canary + "\n")
    pw.chmod(0o600)
    cfg = write_config(
        tmp_path,
        mqtt=True,
        port=port,
        log_level="debug",
        mqtt_extra=f'username = "wc-press-07"\npassword_file = "{pw}"',
    )
    return cfg, canary


def _run_until(cfg: Path, marker: str, timeout: float = 20) -> tuple[str, str, int]:
    """``edge run`` until ``marker`` shows in its log, then SIGTERM; (stdout, stderr, code)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge", "run", "-c", str(cfg)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONASYNCIODEBUG": "1"},
    )
    assert proc.stderr is not None
    stderr = proc.stderr
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(stderr.readline, "")), daemon=True)
    reader.start()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and not any(marker in line for line in list(lines)):
            if proc.poll() is not None:
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        out = proc.stdout.read() if proc.stdout else ""
        proc.wait(15)
        reader.join(5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    err = "".join(lines)
    assert any(marker in line for line in err.splitlines()), err[-3000:]
    return out, err, proc.returncode


def test_the_password_never_appears_in_logs_or_outputs(tmp_path: Path) -> None:
    with Mosquitto(tmp_path / "broker") as broker:
        cfg, canary = _canary_config(tmp_path, broker.port)
        out, err, code = _run_until(cfg, "mqtt connected")
    assert code == 0, err[-3000:]
    assert "wc-press-07" in err  # the log is there and talks about us...
    assert canary not in out
    assert canary not in err  # ...but never about the password

    # The broker gone: connect failures and retries are logged, still without the password.
    _, err_down, _ = _run_until(cfg, "mqtt connect failed")
    assert canary not in err_down

    for args in (
        ("check-config", "-c", str(cfg)),
        ("status", "-c", str(cfg)),
        ("status", "-c", str(cfg), "--json"),
        ("outbox", "list", "-c", str(cfg), "--state", "all", "--payload"),
        ("outbox", "count", "-c", str(cfg)),
        ("verify", "-c", str(cfg)),
    ):
        result = edge(*args)
        assert result.returncode == 0, (args, result.stderr)
        assert canary not in result.stdout, args
        assert canary not in result.stderr, args
    status = edge("status", "-c", str(cfg), "--json").stdout
    assert '"password": "from file"' in status


def test_a_bad_config_report_does_not_show_the_password(tmp_path: Path) -> None:
    cfg, canary = _canary_config(tmp_path, 1883)
    cfg.write_text(cfg.read_text().replace("keepalive", "x") + "\n[mqtt_typo]\nx = 1\n")
    for command in ("check-config", "run", "status"):
        result = edge(command, "-c", str(cfg))
        assert result.returncode == 2, result
        assert canary not in result.stdout + result.stderr
