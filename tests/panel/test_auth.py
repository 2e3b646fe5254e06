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


# ---------------------------------------------------------------------------- lockout per client


class Wall(Clock):
    """The wall clock for the lockout file: starts elsewhere, moves with the monotonic one."""

    def __init__(self, mono: Clock) -> None:
        super().__init__()
        self.mono = mono
        self.offset = 1_800_000_000.0 - mono.t

    def __call__(self) -> float:
        return self.mono.t + self.offset


def _auth(
    clock: Clock, state: Path | None = None, *, wall: Wall | None = None, **kw: float
) -> SupervisorAuth:
    return SupervisorAuth(
        {"2001": PinHash.parse(hash_pin("4711", **FAST))},
        max_failures=int(kw.pop("max_failures", 3)),
        global_max_failures=int(kw.pop("global_max_failures", 10)),
        lockout_s=kw.pop("lockout_s", 30),
        lockout_max_s=kw.pop("lockout_max_s", 900),
        session_s=60,
        state_path=state,
        clock=clock,
        wall_clock=wall or Wall(clock),
    )


async def test_one_clients_wrong_pins_do_not_lock_out_another() -> None:
    clock = Clock()
    auth = _auth(clock)
    for _ in range(3):
        await auth.login("0000", "10.0.0.66")
    assert (await auth.login("4711", "10.0.0.66")).locked_for_s == 30
    ok = await auth.login("4711", "10.0.0.7")  # the supervisor at the panel
    assert ok.supervisor == "2001"
    # and the second client's own count starts at the full number of tries
    assert (await auth.login("0000", "10.0.0.7")).attempts_left == 2
    assert (await auth.login("0000", "10.0.0.66")).locked_for_s == 30  # still locked


async def test_a_global_ceiling_stops_guessing_from_rotating_addresses() -> None:
    clock = Clock()
    auth = _auth(clock, global_max_failures=10, lockout_max_s=100)
    for i in range(9):
        result = await auth.login("0000", f"10.0.1.{i}")  # one guess per address
        assert result.locked_for_s == 0
        assert result.attempts_left == min(2, 10 - (i + 1))
    assert (await auth.login("0000", "10.0.1.9")).locked_for_s == 30  # the 10th: all locked
    assert (await auth.login("4711", "10.0.9.9")).locked_for_s == 30  # a fresh address too
    clock.t += 30
    for i in range(9):
        await auth.login("0000", f"10.0.2.{i}")
    assert (await auth.login("0000", "10.0.2.9")).locked_for_s == 60  # doubles like a client's
    clock.t += 60
    ok = await auth.login("4711", "10.0.9.9")
    assert ok.supervisor == "2001"  # a correct PIN ends the global series
    assert (await auth.login("0000", "10.0.3.1")).attempts_left == 2


async def test_remembered_clients_are_bounded() -> None:
    from edge.panel.auth import MAX_CLIENTS

    clock = Clock()
    auth = _auth(clock, global_max_failures=1000)
    for i in range(MAX_CLIENTS + 50):
        await auth.login("0000", f"fd00::{i:x}")
        if i % 100 == 99:
            await auth.login("4711", "10.9.9.9")  # keeps the global series below its ceiling
    assert len(auth._state.clients) == MAX_CLIENTS
    assert "fd00::0" not in auth._state.clients  # the oldest went first


# ---------------------------------------------------------------------------- across restarts


async def test_the_lockout_survives_a_restart(tmp_path: Path) -> None:
    state = tmp_path / "edge.pin-lockout.json"
    clock = Clock()
    wall = Wall(clock)
    auth = _auth(clock, state, wall=wall)
    for _ in range(3):
        await auth.login("0000", "10.0.0.66")
    await auth.login("0000", "10.0.0.7")
    await auth.login("0000", "10.0.0.7")  # two wrong in a row: one try left
    assert state.exists()
    assert not list(tmp_path.glob("*.tmp"))
    assert oct(state.stat().st_mode & 0o777) == "0o600"

    clock.t += 10  # the daemon restarts: memory gone, a new monotonic origin
    restarted = Clock()
    restarted.t = 5.0
    wall.mono, wall.offset = restarted, wall() - restarted.t
    again = _auth(restarted, state, wall=wall)
    assert (await again.login("4711", "10.0.0.66")).locked_for_s == pytest.approx(20)
    assert (await again.login("0000", "10.0.0.7")).locked_for_s == 30  # no fresh tries
    assert (await again.login("4711", "10.0.0.8")).supervisor == "2001"
    restarted.t += 30
    assert (await again.login("4711", "10.0.0.66")).supervisor == "2001"


async def test_a_clock_set_back_cannot_lengthen_a_lockout_beyond_the_longest(
    tmp_path: Path,
) -> None:
    state = tmp_path / "edge.pin-lockout.json"
    clock = Clock()
    wall = Wall(clock)
    auth = _auth(clock, state, wall=wall, lockout_max_s=100)
    for _ in range(3):
        await auth.login("0000", "10.0.0.66")
    wall.offset -= 10 * 86_400  # ten days back
    again = _auth(clock, state, wall=wall, lockout_max_s=100)
    assert again.locked_for("10.0.0.66") == 100


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"{not json",
        b"\xff\xfe",
        b'{"version": 1, "global": {"failures": -1, "lockouts": 0, "locked_until": 0}, '
        b'"clients": {}}',
        b'{"version": 2, "global": {}, "clients": {}}',
        b"[]",
        b'{"version": 1, "global": {"failures": 0, "lockouts": 0, "locked_until": "soon"}, '
        b'"clients": {}}',
    ],
    ids=["empty", "truncated", "binary", "negative", "version", "list", "text-time"],
)
async def test_a_damaged_lockout_file_starts_locked_and_does_not_stop_the_daemon(
    tmp_path: Path, content: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "edge.pin-lockout.json"
    state.write_bytes(content)
    clock = Clock()
    auth = _auth(clock, state)
    assert "supervisor PIN lockout state is damaged" in capsys.readouterr().out
    assert (await auth.login("4711", "10.0.0.7")).locked_for_s == 30  # fail safe
    clock.t += 30
    assert (await auth.login("4711", "10.0.0.7")).supervisor == "2001"
    # the file was replaced by a good one
    assert _auth(Clock(), state).locked_for("10.0.0.7") == 0


async def test_an_unwritable_lockout_file_is_logged_and_the_lockout_still_works(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clock = Clock()
    auth = _auth(clock, tmp_path / "missing-dir" / "edge.pin-lockout.json")
    for _ in range(2):
        await auth.login("0000", "10.0.0.66")
    assert (await auth.login("0000", "10.0.0.66")).locked_for_s == 30
    assert "lockout state not saved" in capsys.readouterr().out


def test_a_session_token_with_non_ascii_characters_is_no_session() -> None:
    auth = _auth(Clock())
    assert auth.session("\xff\xfe") is None
    assert auth.session("\ud800") is None


@pytest.mark.parametrize(
    "damage",
    [
        # one client's entry broken, the global lockout of 10 minutes legible
        b'"clients": {"10.0.0.9": {"failures": "x", "lockouts": 0, "locked_until": 0}}}',
        # cut off in the middle of the clients
        b'"clients": {"10.0.0.9": {"fail',
    ],
    ids=["bad-entry", "cut-off"],
)
async def test_a_damaged_lockout_file_never_shortens_the_lockout_it_held(
    tmp_path: Path, damage: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: any damage meant 30 s from the restart, even when the file still showed a
    lockout of 10 more minutes."""
    state = tmp_path / "edge.pin-lockout.json"
    clock = Clock()
    wall = Wall(clock)
    until = wall() + 600
    state.write_bytes(
        b'{"version": 1, "global": {"failures": 0, "lockouts": 5, "locked_until": '
        + str(until).encode()
        + b"}, "
        + damage
    )
    auth = _auth(clock, state, wall=wall)
    out = capsys.readouterr().out
    assert "supervisor PIN lockout state is damaged" in out
    assert str(state) in out  # the log names the file
    assert (await auth.login("4711", "10.0.0.7")).locked_for_s == pytest.approx(600)
    clock.t += 599
    assert (await auth.login("4711", "10.0.0.8")).locked_for_s == pytest.approx(1)
    clock.t += 1
    assert (await auth.login("4711", "10.0.0.8")).supervisor == "2001"


async def test_a_damaged_lockout_file_with_an_absurd_time_is_capped(tmp_path: Path) -> None:
    state = tmp_path / "edge.pin-lockout.json"
    clock = Clock()
    wall = Wall(clock)
    state.write_bytes(
        b'{"version": 1, "global": {"failures": 0, "lockouts": 1, "locked_until": '
        + str(wall() + 10 * 86_400).encode()
        + b'}, "clients": 7}'
    )
    auth = _auth(clock, state, wall=wall, lockout_max_s=900)
    assert auth.locked_for("10.0.0.7") == 900  # locked, at most the longest lockout
