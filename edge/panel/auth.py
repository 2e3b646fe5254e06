"""The supervisor PIN: stored as a scrypt hash, checked in constant time, guessing rate limited.

A 4-8 digit PIN has few possibilities, so what protects it is the rate limit, not the hash. The
hash (scrypt, from the standard library: no dependency) keeps a copied config file from giving
the PIN away at a glance.

**Lockout, per client and global.** Wrong PINs are counted per client (the remote address of
the connection): after ``max_failures`` wrong PINs in a row from one address, that address is
refused for a lockout that doubles with each further lockout of it (30 s, 60 s, 120 s ... up
to ``lockout_max_s``). Another address is not affected, so a stray or hostile client on the
network cannot keep the real supervisor at the panel locked out. Because addresses are cheap
to change (several hosts, IPv6), all wrong PINs also count toward a global ceiling: after
``global_max_failures`` wrong PINs in a row from all clients together, every client is locked
out the same doubling way. Guessing is therefore bounded at about ``global_max_failures`` per
lockout period however many addresses an attacker has; the price is that an attacker who
spends that many guesses can lock everyone out for a while, which is the safe side for a PIN.
A correct PIN ends the series of its own address and the global one. The daemon sees the
peer's address itself (no proxy headers are trusted), so every browser behind one proxy is one
client. At most ``MAX_CLIENTS`` addresses are remembered (the least recently failing one is
forgotten first); the global ceiling does not depend on them.

Attempts are checked one at a time, so they cannot be raced in parallel.

**Across restarts.** The counters and lockouts are kept in a small JSON file beside the
database (``<database name>.pin-lockout.json`` in the state directory), written after every
change atomically (a temporary file, fsync, rename, fsync of the directory), so a restart
does not give fresh guesses. A lockout's end is stored as wall-clock time and, on reading,
capped at ``lockout_max_s`` from now (a clock set back cannot lengthen it beyond that); while
running, lockouts are timed on the monotonic clock. A file that cannot be read or is damaged
does not stop the daemon: it is logged, and every client starts locked for ``lockout_s``
(fail safe: a deleted or corrupted file must not be a way to reset the counters), or until the
latest lockout end still legible in it and as many lockouts as it still shows, when that is
longer (a damaged file never shortens a lockout it held; capped at ``lockout_max_s``). A file
that cannot be written is logged and the gateway goes on with the state in memory.

A correct PIN opens a short supervisor session (a random token, forgotten on restart) that
ends after ``session_s`` without use, so a supervisor can do a few things in a row without
typing the PIN for each, and a forgotten panel does not stay unlocked.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import re
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import structlog

# The PIN's format and hash live in edge.pin, below the config (which checks a configured hash);
# the names the panel's callers know are re-exported here.
from edge.files import write_atomically
from edge.pin import PinFormatError as PinFormatError
from edge.pin import PinHash as PinHash
from edge.pin import check_pin_format
from edge.pin import hash_pin as hash_pin
from edge.pin import read_pin_file as read_pin_file

log = structlog.get_logger("edge.panel.auth")

MAX_CLIENTS: Final = 256
STATE_VERSION: Final = 1


@dataclass(frozen=True, slots=True)
class LoginResult:
    """``supervisor`` and ``token`` on success; otherwise why not, and for how long."""

    supervisor: str | None = None
    token: str | None = None
    locked_for_s: float = 0.0
    attempts_left: int = 0
    configured: bool = True


@dataclass(slots=True)
class _Session:
    supervisor: str
    expires: float


@dataclass(slots=True)
class _Strikes:
    """Wrong PINs in a row, lockouts so far, and the end of the current one (monotonic)."""

    failures: int = 0
    lockouts: int = 0
    until: float = 0.0


class LockoutFileError(ValueError):
    """The lockout state file is not what this module writes."""


@dataclass(slots=True)
class _State:
    glob: _Strikes = field(default_factory=_Strikes)
    clients: dict[str, _Strikes] = field(default_factory=dict)


def lockout_path(db_path: Path) -> Path:
    """Where the lockout state of the gateway with database ``db_path`` is kept."""
    return db_path.with_name(f"{db_path.stem}.pin-lockout.json")


def _parse_strikes(raw: object) -> tuple[int, int, float]:
    if not isinstance(raw, dict) or set(raw) != {"failures", "lockouts", "locked_until"}:
        raise LockoutFileError("an entry is not {failures, lockouts, locked_until}")
    failures, lockouts, until = raw["failures"], raw["lockouts"], raw["locked_until"]
    for name, value in (("failures", failures), ("lockouts", lockouts)):
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 10_000:
            raise LockoutFileError(f"{name} = {value!r} is not a count")
    if not isinstance(until, int | float) or isinstance(until, bool) or not 0 <= until < 1e11:
        raise LockoutFileError(f"locked_until = {until!r} is not a time")
    return failures, lockouts, float(until)


_NUMBER = rb"\s*:\s*(-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)"


def _legible(text: bytes) -> tuple[int, float]:
    """The most lockouts and the latest lockout end still legible in a damaged file (0 if
    none): what it held must not be shortened by the damage."""
    lockouts = [float(m) for m in re.findall(rb'"lockouts"' + _NUMBER, text)]
    until = [float(m) for m in re.findall(rb'"locked_until"' + _NUMBER, text)]
    finite = [v for v in lockouts if 0 <= v <= 10_000]
    ends = [v for v in until if 0 <= v < 1e11]
    return int(max(finite, default=0)), max(ends, default=0.0)


class SupervisorAuth:
    """PIN checks with growing lockouts (per client, and global), and the sessions a PIN opens."""

    def __init__(
        self,
        pins: dict[str, PinHash],
        *,
        max_failures: int = 3,
        global_max_failures: int = 10,
        lockout_s: float = 30.0,
        lockout_max_s: float = 900.0,
        session_s: float = 120.0,
        state_path: Path | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._pins = pins
        self.max_failures = max_failures
        self.global_max_failures = global_max_failures
        self.lockout_s = lockout_s
        self.lockout_max_s = lockout_max_s
        self.session_s = session_s
        self.state_path = state_path
        self._clock = clock
        self._wall = wall_clock
        self._state = _State()
        self._sessions: dict[str, _Session] = {}
        # One check at a time: parallel guesses would otherwise all pass the lockout check.
        self._lock = asyncio.Lock()
        if state_path is not None and self._pins:
            self._load(state_path)

    @property
    def configured(self) -> bool:
        return bool(self._pins)

    def locked_for(self, client: str = "") -> float:
        """Seconds until ``client`` may try a PIN again (0: now)."""
        now = self._clock()
        strikes = self._state.clients.get(client)
        mine = strikes.until if strikes is not None else 0.0
        return max(0.0, self._state.glob.until - now, mine - now)

    async def login(self, pin: str, client: str = "") -> LoginResult:
        """Check ``pin`` for ``client`` (its remote address; it keys the lockout)."""
        if not self._pins:
            return LoginResult(configured=False)
        async with self._lock:
            locked = self.locked_for(client)
            if locked > 0:
                return LoginResult(locked_for_s=locked)
            try:
                check_pin_format(pin)
                candidates: Iterable[tuple[str, PinHash]] = self._pins.items()
            except PinFormatError:
                candidates = ()  # a malformed PIN is a wrong PIN, and counts as one
            found = await asyncio.to_thread(_first_match, candidates, pin)
            if found is None:
                result = self._failed(client)
                await self._save()
                return result
            glob = self._state.glob
            changed = client in self._state.clients or glob.failures or glob.lockouts
            self._state.clients.pop(client, None)
            self._state.glob = _Strikes()
            if changed:
                await self._save()
            token = secrets.token_urlsafe(32)
            self._prune()
            self._sessions[token] = _Session(found, self._clock() + self.session_s)
            log.info("supervisor logged in at the panel", supervisor=found, client=client)
            return LoginResult(supervisor=found, token=token)

    def _lockout(self, strikes: _Strikes, now: float) -> float:
        strikes.failures = 0
        strikes.lockouts += 1
        step: int = 2 ** min(strikes.lockouts - 1, 60)
        lock = min(self.lockout_s * step, self.lockout_max_s)
        strikes.until = now + lock
        return lock

    def _failed(self, client: str) -> LoginResult:
        now = self._clock()
        clients = self._state.clients
        strikes = clients.pop(client, None) or _Strikes()
        clients[client] = strikes  # the most recent at the end: the oldest is forgotten first
        while len(clients) > MAX_CLIENTS:
            del clients[next(iter(clients))]
        glob = self._state.glob
        strikes.failures += 1
        glob.failures += 1
        if strikes.failures >= self.max_failures:
            lock = self._lockout(strikes, now)
            log.warning(
                "wrong supervisor PIN at the panel; this client is locked",
                client=client,
                locked_s=lock,
                lockouts=strikes.lockouts,
            )
        if glob.failures >= self.global_max_failures:
            lock = self._lockout(glob, now)
            log.warning(
                "too many wrong supervisor PINs from all clients; every client is locked",
                client=client,
                locked_s=lock,
                lockouts=glob.lockouts,
            )
        locked = self.locked_for(client)
        if locked > 0:
            return LoginResult(locked_for_s=locked)
        left = min(self.max_failures - strikes.failures, self.global_max_failures - glob.failures)
        log.warning("wrong supervisor PIN at the panel", client=client, attempts_left=left)
        return LoginResult(attempts_left=left)

    # ------------------------------------------------------------------ the state file

    def _dump(self) -> bytes:
        now, wall = self._clock(), self._wall()

        def entry(strikes: _Strikes) -> dict[str, object]:
            left = max(0.0, strikes.until - now)
            return {
                "failures": strikes.failures,
                "lockouts": strikes.lockouts,
                "locked_until": round(wall + left, 3) if left > 0 else 0,
            }

        doc = {
            "version": STATE_VERSION,
            "global": entry(self._state.glob),
            "clients": {addr: entry(s) for addr, s in self._state.clients.items()},
        }
        return json.dumps(doc, indent=1).encode("utf-8")

    def _restore(self, raw: object) -> _State:
        if not isinstance(raw, dict) or raw.get("version") != STATE_VERSION:
            raise LockoutFileError(f"not version {STATE_VERSION} of the lockout state")
        if set(raw) != {"version", "global", "clients"} or not isinstance(raw["clients"], dict):
            raise LockoutFileError("expected version, global and clients")
        now, wall = self._clock(), self._wall()

        def strikes(value: object) -> _Strikes:
            failures, lockouts, until = _parse_strikes(value)
            # A clock set back must not lengthen a lockout beyond the longest one.
            left = min(max(0.0, until - wall), self.lockout_max_s) if until else 0.0
            return _Strikes(failures, lockouts, now + left if left > 0 else 0.0)

        clients = list(raw["clients"].items())[-MAX_CLIENTS:]
        return _State(strikes(raw["global"]), {str(a): strikes(v) for a, v in clients})

    def _load(self, path: Path) -> None:
        try:
            text = path.read_bytes()
        except FileNotFoundError:
            return
        except OSError as exc:
            self._fail_safe(path, f"cannot be read: {exc.strerror or exc}")
            return
        try:
            self._state = self._restore(json.loads(text))
        except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError too
            self._fail_safe(path, f"is damaged: {exc}", _legible(text))
            return
        log.info(
            "supervisor PIN lockout state read",
            path=str(path),
            clients=len(self._state.clients),
            locked_s=round(max(0.0, self._state.glob.until - self._clock()), 1),
        )

    def _fail_safe(self, path: Path, why: str, legible: tuple[int, float] = (0, 0.0)) -> None:
        lockouts, until = legible
        left = min(max(self.lockout_s, until - self._wall()), self.lockout_max_s)
        left = max(left, self.lockout_s)
        glob = _Strikes(lockouts=max(1, lockouts), until=self._clock() + left)
        self._state = _State(glob)
        log.error(
            f"supervisor PIN lockout state {why}; every client is locked",
            path=str(path),
            locked_s=round(left, 1),
            lockouts=glob.lockouts,
        )
        self._write(self._dump())

    async def _save(self) -> None:
        if self.state_path is not None:
            await asyncio.to_thread(self._write, self._dump())

    def _write(self, data: bytes) -> None:
        path = self.state_path
        if path is None:
            return
        try:
            write_atomically(path, data, tmp_name=path.name + ".tmp")
        except OSError as exc:
            log.error(
                "supervisor PIN lockout state not saved; kept in memory only",
                path=str(path),
                error=exc.strerror or str(exc),
            )

    # ------------------------------------------------------------------ sessions

    def session(self, token: str | None) -> str | None:
        """The supervisor id of a live session (and its idle time starts again), else None."""
        if not token:
            return None
        now = self._clock()
        given = token.encode("utf-8", "surrogatepass")
        found = None
        for known, session in self._sessions.items():
            # Compare every token in constant time rather than look it up by value. As bytes:
            # compare_digest refuses str with non-ASCII characters (a header may have them).
            if hmac.compare_digest(known.encode("ascii"), given) and session.expires > now:
                found = session
        if found is None:
            return None
        found.expires = now + self.session_s
        return found.supervisor

    def logout(self, token: str | None) -> None:
        if token:
            self._sessions.pop(token, None)

    def _prune(self) -> None:
        now = self._clock()
        for token in [t for t, s in self._sessions.items() if s.expires <= now]:
            del self._sessions[token]


def _first_match(candidates: Iterable[tuple[str, PinHash]], pin: str) -> str | None:
    found = None
    for ident, pin_hash in candidates:
        # Check every entry, so the time taken does not tell which supervisor matched.
        if pin_hash.matches(pin) and found is None:
            found = ident
    return found


def load_pins(
    pin_hash: str | None, supervisor_id: str, pin_file: Path | None
) -> dict[str, PinHash]:
    """The configured supervisors and their PIN hashes (raises PinFormatError, OSError)."""
    pins: dict[str, PinHash] = {}
    if pin_hash:
        pins[supervisor_id] = PinHash.parse(pin_hash)
    if pin_file is not None:
        for ident, parsed in read_pin_file(pin_file).items():
            if ident in pins:
                raise PinFormatError(
                    f"{pin_file}: supervisor {ident!r} also has panel.supervisor_pin_hash"
                )
            pins[ident] = parsed
    return pins
