"""The systemd unit: what it promises, that systemd accepts it, and its hardening score."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.ops.conftest import REPO

pytestmark = pytest.mark.timeout(60)

UNIT = REPO / "systemd" / "edge-gateway.service"
SYSUSERS = REPO / "systemd" / "edge-gateway.sysusers"
RELAY_UNIT = REPO / "systemd" / "edge-relay.service"
RELAY_SYSUSERS = REPO / "systemd" / "edge-relay.sysusers"
UNITS = pytest.mark.parametrize("unit_file", [UNIT, RELAY_UNIT], ids=lambda p: p.stem)
MAX_EXPOSURE = 2.0

needs_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze is not installed (Debian package 'systemd'); not installed by "
    "scripts/_setup.sh because it is not a small package",
)


def _unit(path: Path = UNIT) -> dict[str, list[str]]:
    """Every key of the unit with all its values (systemd keys repeat, configparser's do not)."""
    values: dict[str, list[str]] = {}
    section = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        values.setdefault(f"{section}.{key}", []).append(value)
    return values


def _bytes(value: str) -> int:
    """A systemd size (``384M``, ``1G``, ``268435456``) in bytes; a percentage is refused."""
    found = re.fullmatch(r"(\d+)([KMGT]?)", value.strip())
    assert found, f"not an absolute size: {value!r}"
    return int(found.group(1)) * 1024 ** " KMGT".index(found.group(2) or " ")


def test_the_unit_says_what_the_service_needs() -> None:
    u = _unit()
    one = {k: v[-1] for k, v in u.items()}
    assert one["Service.Type"] == "notify"
    assert one["Service.WatchdogSec"] == "30"
    assert one["Service.Restart"] == "on-failure"  # includes a watchdog timeout
    assert one["Service.User"] == "edge-gateway"
    assert one["Service.StateDirectory"] == "edge-gateway"
    assert one["Service.ConfigurationDirectory"] == "edge-gateway"
    assert one["Service.ExecStart"] == "/usr/bin/edge run -c /etc/edge-gateway/edge.toml"
    # a bad config (2) or a lost or damaged database (3): no restart loop
    assert one["Service.RestartPreventExitStatus"] == "2 3"
    assert one["Service.UMask"] == "0077"
    assert one["Service.CapabilityBoundingSet"] == ""
    assert one["Service.RestrictAddressFamilies"] == "AF_UNIX AF_INET AF_INET6"
    assert "@system-service" in u["Service.SystemCallFilter"]
    assert one["Service.DevicePolicy"] == "closed"
    allowed = {v.split()[0] for v in u["Service.DeviceAllow"]}
    assert {"char-gpiochip", "char-ttyUSB", "char-ttyAMA"} <= allowed
    assert set(one["Service.SupplementaryGroups"].split()) == {"dialout", "gpio"}
    for key in (
        "NoNewPrivileges",
        "ProtectHome",
        "PrivateTmp",
        "MemoryDenyWriteExecute",
        "LockPersonality",
        "RestrictRealtime",
        "RestrictNamespaces",
        "ProtectKernelTunables",
        "ProtectKernelModules",
        "ProtectKernelLogs",
        "ProtectControlGroups",
        "ProtectClock",
        "ProtectHostname",
    ):
        assert one[f"Service.{key}"] == "yes", key
    assert one["Service.ProtectSystem"] == "strict"
    # Resource ceilings for a Raspberry Pi: a leak or a flood must not take the whole machine.
    memory_max = _bytes(one["Service.MemoryMax"])
    memory_high = _bytes(one["Service.MemoryHigh"])
    assert 128 * 2**20 <= memory_high < memory_max <= 512 * 2**20, (memory_high, memory_max)
    tasks = int(one["Service.TasksMax"])
    assert 32 <= tasks <= 256, tasks
    # configparser reads it too (no stray syntax); strict=False because keys repeat.
    configparser.ConfigParser(strict=False, interpolation=None).read_string(UNIT.read_text())


def test_the_relay_unit_says_what_the_relay_needs() -> None:
    u = _unit(RELAY_UNIT)
    one = {k: v[-1] for k, v in u.items()}
    assert one["Service.Type"] == "notify"  # READY=1, STATUS=, WATCHDOG=1 (edge/relay/app.py)
    assert one["Service.WatchdogSec"] == "60"
    assert one["Service.Restart"] == "on-failure"
    assert one["Service.User"] == "edge-relay"
    assert one["Service.StateDirectory"] == "edge-relay"
    assert one["Service.ConfigurationDirectory"] == "edge-relay"
    assert one["Service.ExecStart"] == "/usr/bin/edge relay run -c /etc/edge-relay/relay.toml"
    # a bad config (2) or a refused ledger (3): no restart loop (edge/relay/cli.py cmd_run)
    assert one["Service.RestartPreventExitStatus"] == "2 3"
    assert one["Service.UMask"] == "0077"
    assert one["Service.CapabilityBoundingSet"] == ""
    assert one["Service.ProtectSystem"] == "strict"
    assert one["Service.PrivateDevices"] == "yes"  # no GPIO or serial ports on the relay
    for key in ("NoNewPrivileges", "ProtectHome", "PrivateTmp", "MemoryDenyWriteExecute"):
        assert one[f"Service.{key}"] == "yes", key
    memory_high, memory_max = _bytes(one["Service.MemoryHigh"]), _bytes(one["Service.MemoryMax"])
    assert 128 * 2**20 <= memory_high < memory_max <= 512 * 2**20
    assert 32 <= int(one["Service.TasksMax"]) <= 256
    configparser.ConfigParser(strict=False, interpolation=None).read_string(RELAY_UNIT.read_text())
    from edge.relay.cli import DEFAULT_PATH

    assert one["Service.ExecStart"].endswith(f"-c {DEFAULT_PATH}")


@needs_analyze
@UNITS
def test_hardening_exposure_is_at_most_2(unit_file: Path) -> None:
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(unit_file)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=unit_file.parent,
    )
    if "--offline" in result.stderr and "unrecognized" in result.stderr:
        pytest.skip("this systemd-analyze has no --offline (systemd < 250)")
    found = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", result.stdout)
    assert found, result.stdout[-2000:] + result.stderr
    score = float(found.group(1))
    print(f"systemd-analyze security exposure: {score}")
    assert score <= MAX_EXPOSURE, result.stdout


@needs_analyze
@UNITS
def test_systemd_accepts_every_setting(tmp_path: Path, unit_file: Path) -> None:
    """``systemd-analyze verify`` (with ExecStart pointed at this checkout's ``edge``)."""
    edge = Path(sys.executable).with_name("edge")
    if not edge.exists():
        pytest.skip(f"{edge} is not installed (pip install -e .)")
    unit = tmp_path / unit_file.name
    unit.write_text(unit_file.read_text().replace("/usr/bin/edge", str(edge)))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert "Unknown key" not in result.stderr, result.stderr
    assert "Invalid" not in result.stderr, result.stderr


@pytest.mark.skipif(shutil.which("systemd-sysusers") is None, reason="no systemd-sysusers")
def test_sysusers_makes_the_service_user_with_its_device_groups(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (tmp_path / "etc" / "group").write_text("root:x:0:\ndialout:x:20:\n")
    result = subprocess.run(
        ["systemd-sysusers", f"--root={tmp_path}", str(SYSUSERS)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    passwd = (tmp_path / "etc" / "passwd").read_text()
    group = (tmp_path / "etc" / "group").read_text()
    assert re.search(
        r"^edge-gateway:x:\d+:\d+:.*:/var/lib/edge-gateway:/usr/sbin/nologin$", passwd, re.M
    )
    assert re.search(r"^dialout:x:20:edge-gateway$", group, re.M)
    assert re.search(r"^gpio:x:\d+:edge-gateway$", group, re.M)


@pytest.mark.skipif(shutil.which("systemd-sysusers") is None, reason="no systemd-sysusers")
def test_sysusers_makes_the_relay_user(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (tmp_path / "etc" / "group").write_text("root:x:0:\n")
    result = subprocess.run(
        ["systemd-sysusers", f"--root={tmp_path}", str(RELAY_SYSUSERS)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    passwd = (tmp_path / "etc" / "passwd").read_text()
    assert re.search(
        r"^edge-relay:x:\d+:\d+:.*:/var/lib/edge-relay:/usr/sbin/nologin$", passwd, re.M
    )
