"""The supervisor PIN: hash format, constant work per check, a growing lockout, sessions, config."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edge.config import load_config
from edge.errors import ConfigError
from edge.panel.auth import (
    PinFormatError,
    PinHash,
    SupervisorAuth,
    hash_pin,
    load_pins,
    read_pin_file,
)

ROOT = Path(__file__).resolve().parents[2]
FAST = {"n": 1 << 10, "r": 8, "p": 1}  # a cheap hash: these tests check logic, not cost


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_hash_round_trip_and_salt() -> None:
    first, second = hash_pin("4711", **FAST), hash_pin("4711", **FAST)
    assert first != second  # a fresh salt each time
    parsed = PinHash.parse(first)
    assert parsed.matches("4711")
    assert not parsed.matches("4712")
    assert str(parsed) == first
    assert "4711" not in first


@pytest.mark.parametrize(
    "text",
    ["", "4711", "bcrypt$1$2$3$4$5", "scrypt$1000$8$1$c2FsdHNhbHQ$aGFzaA", "scrypt$x$8$1$a$b"],
)
def test_malformed_hashes_are_refused(text: str) -> None:
    with pytest.raises(PinFormatError):
        PinHash.parse(text)


@pytest.mark.parametrize("pin", ["", "123", "12a4", "1234567890123", "\uff11\uff12\uff13\uff14"])
def test_pin_format(pin: str) -> None:
    with pytest.raises(PinFormatError):
        hash_pin(pin, **FAST)


async def test_lockout_grows_and_a_right_pin_resets_it() -> None:
    clock = Clock()
    auth = SupervisorAuth(
        {"2001": PinHash.parse(hash_pin("4711", **FAST))},
        max_failures=3,
        lockout_s=30,
        lockout_max_s=100,
        session_s=60,
        clock=clock,
    )
    for left in (2, 1):
        assert (await auth.login("0000")).attempts_left == left
    assert (await auth.login("0000")).locked_for_s == 30
    assert (await auth.login("4711")).locked_for_s == 30  # the right PIN waits too
    clock.t += 30
    for _ in range(2):
        await auth.login("0000")
    assert (await auth.login("0000")).locked_for_s == 60  # doubled
    clock.t += 60
    for _ in range(2):
        await auth.login("0000")
    assert (await auth.login("0000")).locked_for_s == 100  # capped
    clock.t += 100
    ok = await auth.login("4711")
    assert ok.supervisor == "2001"
    assert ok.token
    for _ in range(2):
        await auth.login("0000")
    assert (await auth.login("0000")).locked_for_s == 30  # back to the first step

    assert auth.session(ok.token) == "2001"
    clock.t += 59
    assert auth.session(ok.token) == "2001"  # used: the idle time starts again
    clock.t += 61
    assert auth.session(ok.token) is None
    assert auth.session("") is None
    assert auth.session("forged") is None


async def test_no_pin_configured() -> None:
    result = await SupervisorAuth({}).login("4711")
    assert not result.configured
    assert result.token is None


def test_pin_file(tmp_path: Path) -> None:
    path = tmp_path / "pins"
    path.write_text(
        f"# supervisors\n2001 {hash_pin('1111', **FAST)}\n\n2002 {hash_pin('2222', **FAST)}\n"
    )
    pins = read_pin_file(path)
    assert sorted(pins) == ["2001", "2002"]
    assert pins["2002"].matches("2222")
    both = load_pins(hash_pin("3333", **FAST), "shift", path)
    assert sorted(both) == ["2001", "2002", "shift"]
    path.write_text("2001\n")
    with pytest.raises(PinFormatError, match=":1: expected"):
        read_pin_file(path)


def test_config_checks_the_hash_and_never_shows_it(tmp_path: Path) -> None:
    path = tmp_path / "edge.toml"
    base = '[gateway]\nedge_id = "wc-1"\nwork_center = "WC1"\n[panel]\nenabled = true\n'
    path.write_text(base + 'supervisor_pin_hash = "scrypt$nope"\nport = 70000\n')
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    text = str(err.value)
    assert "panel.supervisor_pin_hash = <redacted>: not a PIN hash" in text
    assert "panel.port = 70000" in text
    good = hash_pin("4711", **FAST)
    path.write_text(base + f'supervisor_pin_hash = "{good}"\n')
    cfg = load_config(path, env={})
    assert cfg.panel.host == "127.0.0.1"
    assert cfg.panel.port == 8080
    assert good not in repr(cfg)


def test_panel_pin_command() -> None:
    def run(*args: str, stdin: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "edge", "panel-pin", *args],
            input=stdin,
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=60,
        )

    out = run(stdin="4711\n")
    assert out.returncode == 0, out.stderr
    line = out.stdout.strip()
    assert line.startswith('supervisor_pin_hash = "scrypt$')
    assert PinHash.parse(line.split('"')[1]).matches("4711")
    out = run("--id", "2001", stdin="4711\n")
    ident, text = out.stdout.strip().split(" ")
    assert ident == "2001"
    assert PinHash.parse(text).matches("4711")
    out = run(stdin="12\n")
    assert out.returncode == 1
    assert "4 to 12 digits" in out.stderr
    assert "Traceback" not in out.stderr
