"""The supervisor PIN: stored as a scrypt hash, checked in constant time, guessing rate limited.

A 4-8 digit PIN has few possibilities, so what protects it is the rate limit, not the hash:
after ``max_failures`` wrong PINs in a row every attempt is refused for a lockout that doubles
with each further lockout (30 s, 60 s, 120 s ... up to ``lockout_max_s``), and attempts are
checked one at a time so they cannot be raced in parallel. The hash (scrypt, from the standard
library: no dependency) keeps a copied config file from giving the PIN away at a glance.

A correct PIN opens a short supervisor session (a random token, forgotten on restart) that
ends after ``session_s`` without use, so a supervisor can do a few things in a row without
typing the PIN for each, and a forgotten panel does not stay unlocked.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import structlog

log = structlog.get_logger("edge.panel.auth")

PREFIX: Final = "scrypt"
# n=2^15, r=8: 32 MiB and about 0.1 s here (a few tenths on a Raspberry Pi) per check.
DEFAULT_N: Final = 1 << 15
DEFAULT_R: Final = 8
DEFAULT_P: Final = 1
_MAXMEM: Final = 256 * 1024 * 1024
_DKLEN: Final = 32
PIN_MIN, PIN_MAX = 4, 12


class PinFormatError(ValueError):
    """A PIN or a stored hash that is not in the expected form (the message says how)."""


def check_pin_format(pin: str) -> None:
    """PINs are digits only: the panel has a number pad, and gloves make letters hard."""
    if not (PIN_MIN <= len(pin) <= PIN_MAX) or not pin.isdigit() or not pin.isascii():
        raise PinFormatError(f"a PIN is {PIN_MIN} to {PIN_MAX} digits (0-9)")


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


@dataclass(frozen=True, slots=True)
class PinHash:
    """``scrypt$<n>$<r>$<p>$<salt>$<hash>`` (salt and hash in unpadded base64)."""

    n: int
    r: int
    p: int
    salt: bytes
    digest: bytes

    def __str__(self) -> str:
        return f"{PREFIX}${self.n}${self.r}${self.p}${_b64(self.salt)}${_b64(self.digest)}"

    @classmethod
    def parse(cls, text: str) -> PinHash:
        parts = text.strip().split("$")
        if len(parts) != 6 or parts[0] != PREFIX:
            raise PinFormatError(
                "not a PIN hash: expected scrypt$N$r$p$salt$hash (made by `edge panel-pin`)"
            )
        try:
            n, r, p = (int(x) for x in parts[1:4])
            salt, digest = _unb64(parts[4]), _unb64(parts[5])
        except ValueError:
            raise PinFormatError("not a PIN hash: a number or base64 part is broken") from None
        if n < 2 or n & (n - 1) or not (1 <= r <= 64) or not (1 <= p <= 16):
            raise PinFormatError("not a PIN hash: N must be a power of 2, r 1-64, p 1-16")
        if 128 * n * r > _MAXMEM:
            raise PinFormatError("not a PIN hash: N*r needs more memory than allowed")
        if len(salt) < 8 or len(digest) < 16:
            raise PinFormatError("not a PIN hash: salt or hash too short")
        return cls(n, r, p, salt, digest)

    def matches(self, pin: str) -> bool:
        candidate = _derive(pin, self.salt, self.n, self.r, self.p, len(self.digest))
        return hmac.compare_digest(candidate, self.digest)


def _derive(pin: str, salt: bytes, n: int, r: int, p: int, dklen: int) -> bytes:
    return hashlib.scrypt(
        pin.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=_MAXMEM, dklen=dklen
    )


def hash_pin(pin: str, *, n: int = DEFAULT_N, r: int = DEFAULT_R, p: int = DEFAULT_P) -> str:
    """The line to store for ``pin``; a fresh random salt each time."""
    check_pin_format(pin)
    salt = os.urandom(16)
    return str(PinHash(n, r, p, salt, _derive(pin, salt, n, r, p, _DKLEN)))


def read_pin_file(path: Path) -> dict[str, PinHash]:
    """``<supervisor id> <hash>`` per line; blank lines and ``#`` comments are skipped."""
    out: dict[str, PinHash] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        ident, _, text = line.partition(" ")
        if not ident or not text.strip():
            raise PinFormatError(f"{path}:{number}: expected '<supervisor id> <hash>'")
        if ident in out:
            raise PinFormatError(f"{path}:{number}: supervisor {ident!r} is listed twice")
        try:
            out[ident] = PinHash.parse(text)
        except PinFormatError as exc:
            raise PinFormatError(f"{path}:{number}: {exc}") from None
    return out


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


class SupervisorAuth:
    """PIN checks with a growing lockout, and the sessions a correct PIN opens."""

    def __init__(
        self,
        pins: dict[str, PinHash],
        *,
        max_failures: int = 3,
        lockout_s: float = 30.0,
        lockout_max_s: float = 900.0,
        session_s: float = 120.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._pins = pins
        self.max_failures = max_failures
        self.lockout_s = lockout_s
        self.lockout_max_s = lockout_max_s
        self.session_s = session_s
        self._clock = clock
        self._failures = 0
        self._lockouts = 0
        self._locked_until = 0.0
        self._sessions: dict[str, _Session] = {}
        # One check at a time: parallel guesses would otherwise all pass the lockout check.
        self._lock = asyncio.Lock()

    @property
    def configured(self) -> bool:
        return bool(self._pins)

    def locked_for(self) -> float:
        return max(0.0, self._locked_until - self._clock())

    async def login(self, pin: str) -> LoginResult:
        if not self._pins:
            return LoginResult(configured=False)
        async with self._lock:
            locked = self.locked_for()
            if locked > 0:
                return LoginResult(locked_for_s=locked)
            try:
                check_pin_format(pin)
                candidates: Iterable[tuple[str, PinHash]] = self._pins.items()
            except PinFormatError:
                candidates = ()  # a malformed PIN is a wrong PIN, and counts as one
            found = await asyncio.to_thread(_first_match, candidates, pin)
            if found is None:
                return self._failed()
            self._failures = 0
            self._lockouts = 0
            token = secrets.token_urlsafe(32)
            self._prune()
            self._sessions[token] = _Session(found, self._clock() + self.session_s)
            log.info("supervisor logged in at the panel", supervisor=found)
            return LoginResult(supervisor=found, token=token)

    def _failed(self) -> LoginResult:
        self._failures += 1
        if self._failures < self.max_failures:
            left = self.max_failures - self._failures
            log.warning("wrong supervisor PIN at the panel", attempts_left=left)
            return LoginResult(attempts_left=left)
        self._failures = 0
        self._lockouts += 1
        lock = min(self.lockout_s * 2 ** (self._lockouts - 1), self.lockout_max_s)
        self._locked_until = self._clock() + lock
        log.warning(
            "wrong supervisor PIN at the panel; locked", locked_s=lock, lockouts=self._lockouts
        )
        return LoginResult(locked_for_s=lock)

    def session(self, token: str | None) -> str | None:
        """The supervisor id of a live session (and its idle time starts again), else None."""
        if not token:
            return None
        now = self._clock()
        found = None
        for known, session in self._sessions.items():
            # Compare every token in constant time rather than look it up by value.
            if hmac.compare_digest(known, token) and session.expires > now:
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
