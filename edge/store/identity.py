"""The database's identity, kept beside it: proof that a gateway ran here before.

``edge.db.identity`` (a small JSON file next to the database, in the state directory) records
which database the daemon last ran on: its id, the boot count, the last journal id and outbox
seq, and where the gateway's monotonic clock stood against this machine's boot clock. It is
rewritten (temporary file, fsync, rename, fsync of the directory) each time the daemon opens
and closes the database, never per commit.

When ``edge.db`` is missing or empty but its identity file is there, the database was lost (a
wiped card, a wrong volume, a bad restore): the daemon then refuses to start a new one by itself,
since history, boot and message numbers and idempotency keys would all start over.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from edge.files import write_atomically

FORMAT = 1


@dataclass(frozen=True, slots=True)
class ClockAnchor:
    """Where the gateway's monotonic clock stood against the OS boot clock during one OS boot.

    ``mono_ms`` (gateway-monotonic) was ``boottime_ms`` (``CLOCK_BOOTTIME``) in the OS boot
    ``boot_id``; the mapping is exact for every instant from ``exact_from_mono_ms`` on.
    """

    boot_id: str
    boottime_ms: int
    mono_ms: int
    exact_from_mono_ms: int


@dataclass(frozen=True, slots=True)
class Identity:
    db_id: str
    boot_seq: int
    journal_id: int  # the highest journal id when it was written
    outbox_seq: int  # the highest outbox seq given out
    written_at: str  # ISO time, as the wall clock said
    clock: ClockAnchor | None = None
    extra: dict[str, str] = field(default_factory=dict)


def identity_path(db: Path) -> Path:
    return db.with_name(db.name + ".identity")


def read_identity(db: Path) -> Identity | None:
    """The identity file of ``db``; None if there is none. A garbled one raises ValueError."""
    path = identity_path(db)
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        raw = json.loads(text)
        clock = raw.get("clock")
        return Identity(
            db_id=str(raw["db_id"]),
            boot_seq=int(raw["boot_seq"]),
            journal_id=int(raw["journal_id"]),
            outbox_seq=int(raw["outbox_seq"]),
            written_at=str(raw.get("written_at", "")),
            clock=ClockAnchor(
                str(clock["boot_id"]),
                int(clock["boottime_ms"]),
                int(clock["mono_ms"]),
                int(clock["exact_from_mono_ms"]),
            )
            if clock
            else None,
            extra={str(k): str(v) for k, v in raw.get("extra", {}).items()},
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{path} cannot be read: {exc!r}") from exc


def write_identity(db: Path, identity: Identity) -> None:
    """Atomically replace the identity file: it is the old one or the new one, never half."""
    body = {"format": FORMAT, **asdict(identity)}
    data = (json.dumps(body, indent=1, sort_keys=True) + "\n").encode()
    write_atomically(identity_path(db), data)


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
