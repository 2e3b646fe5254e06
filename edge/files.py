"""Small files the gateway keeps beside its database, written so a power cut never halves them."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def sync_dir(directory: Path) -> None:
    """Make a rename or a new name in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: Path, data: bytes, *, tmp_name: str | None = None) -> None:
    """Replace ``path`` with ``data``: afterwards it is the old file or the new one, never half
    (temporary file, fsync, rename, fsync of the directory). Raises OSError; the temporary file
    is removed then."""
    tmp = path.with_name(tmp_name or f".{path.name}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    sync_dir(path.parent)
