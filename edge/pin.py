"""The supervisor PIN's format and its stored hash: scrypt, from the standard library.

A PIN is 4-12 digits (the panel has a number pad). It is stored only as the line
``scrypt$<n>$<r>$<p>$<salt>$<hash>`` that ``edge panel-pin`` prints; :class:`PinHash` reads and
checks that line (the config does so when it is loaded) and compares a PIN with it in constant
time. Guessing is limited by the panel (:mod:`edge.panel.auth`), not here.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final

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
