"""Checks on the database files before the daemon runs on them, and what to do with a bad one.

SQLite itself says little about damage: a file with a garbage header is "not a database", a
truncated one or garbage pages show up only when a damaged page is read (maybe days later, in
the middle of a commit), and a write-ahead log whose header or checksums are damaged is
quietly ignored, with every transaction in it. At start the daemon therefore looks first:

- the main file's header (magic, page size, the page count against the file's length);
- the write-ahead log (``edge.db-wal``): its header and the checksum chain of its frames, the
  way SQLite's own recovery reads them, so that it knows which committed transactions SQLite
  would drop;
- then ``PRAGMA quick_check`` (in :mod:`edge.store.store`, with a time limit).

A damaged database is never repaired or replaced silently: its files are moved aside
(``edge.db.corrupt-<time>`` with its ``-wal`` and ``-shm``, so that ``sqlite3`` opens them as a
set) and the daemon refuses to start until a person restores a backup or asks for a new one.
"""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
import struct
import time
from dataclasses import dataclass
from pathlib import Path

from edge.files import sync_dir

SQLITE_MAGIC = b"SQLite format 3\x00"
WAL_MAGIC = (0x377F0682, 0x377F0683)
WAL_VERSION = 3007000
WAL_HEADER = 32
FRAME_HEADER = 24
LOW_DISK_BYTES = 1 << 20  # below this, an I/O error while writing is taken for a full disk


def wal_path(db: Path) -> Path:
    return db.with_name(db.name + "-wal")


def shm_path(db: Path) -> Path:
    return db.with_name(db.name + "-shm")


# ---------------------------------------------------------------------------- the main file


def check_header(db: Path, wal: WalReport | None = None) -> str | None:
    """What is wrong with the main file's header (None if nothing); ``db`` is not empty.

    With committed frames in the write-ahead log the file may be shorter than its header says:
    a checkpoint killed after writing page 1 but before the pages that extend the file leaves it
    so, and SQLite completes it from the log. Only without such a log is it truncation (what
    the log holds is then checked by ``quick_check``)."""
    size = db.stat().st_size
    with db.open("rb") as f:
        head = f.read(100)
    if len(head) < 100 or not head.startswith(SQLITE_MAGIC):
        return f"its first bytes are not an SQLite header ({size} bytes, from {head[:16]!r})"
    page_size = struct.unpack(">H", head[16:18])[0]
    page_size = 65536 if page_size == 1 else page_size
    if page_size < 512 or page_size & (page_size - 1):
        return f"its header gives an impossible page size ({page_size})"
    change_counter, pages = struct.unpack(">II", head[24:32])
    valid_for = struct.unpack(">I", head[92:96])[0]
    wal_covers = wal is not None and wal.damage is None and wal.frames_valid > 0
    if valid_for == change_counter and pages and size < pages * page_size and not wal_covers:
        return (
            f"it is truncated: its header says {pages} pages of {page_size} bytes "
            f"({pages * page_size} bytes), the file has {size} bytes"
        )
    return None


# ---------------------------------------------------------------------------- the WAL


@dataclass(frozen=True, slots=True)
class WalReport:
    size: int
    frames_valid: int = 0  # frames SQLite will use (up to the last valid commit)
    tail_uncommitted: int = 0  # valid frames after the last commit: a transaction in progress
    damage: str | None = None  # committed transactions SQLite would drop, in words
    warning: str | None = None  # something lost that may not have been acknowledged

    @property
    def empty(self) -> bool:
        return self.frames_valid == 0 and self.tail_uncommitted == 0


def _checksum(data: bytes, big_endian: bool, s0: int, s1: int) -> tuple[int, int]:
    words = struct.unpack(f"{'>' if big_endian else '<'}{len(data) // 4}I", data)
    for i in range(0, len(words), 2):
        s0 = (s0 + words[i] + s1) & 0xFFFFFFFF
        s1 = (s1 + words[i + 1] + s0) & 0xFFFFFFFF
    return s0, s1


def check_wal(db: Path) -> WalReport | None:
    """Read ``db``'s write-ahead log as SQLite's recovery would; None if there is none."""
    path = wal_path(db)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return None
    if size < WAL_HEADER:
        return WalReport(size)  # no frame can be in it: SQLite starts it over, nothing lost
    with path.open("rb") as f:
        data = f.read()
    magic, version, page_size, _ckpt, salt1, salt2, c1, c2 = struct.unpack(">8I", data[:WAL_HEADER])
    frame = FRAME_HEADER + page_size if 512 <= page_size <= 65536 else 0
    frames_in_file = (size - WAL_HEADER) // frame if frame else 0
    if magic not in WAL_MAGIC or version != WAL_VERSION or not frame:
        if size >= WAL_HEADER + FRAME_HEADER + 512:
            return WalReport(
                size,
                damage=(
                    f"its header is not a valid write-ahead log header (magic {magic:#x}, "
                    f"version {version}), so SQLite would ignore all {size} bytes of it, with "
                    "every committed transaction they hold"
                ),
            )
        return WalReport(size)
    big = bool(magic & 1)
    if _checksum(data[:24], big, 0, 0) != (c1, c2):
        return WalReport(
            size,
            damage=(
                f"its header checksum is wrong, so SQLite would ignore all {frames_in_file} "
                "frames in it, with every committed transaction they hold"
            ),
        )
    s0, s1 = c1, c2
    valid = last_commit = 0
    offset = WAL_HEADER
    while offset + frame <= size:
        pgno, commit, fs1, fs2, fc1, fc2 = struct.unpack(">6I", data[offset : offset + 24])
        if (fs1, fs2) != (salt1, salt2) or pgno == 0:
            break
        s0, s1 = _checksum(data[offset : offset + 8], big, s0, s1)
        s0, s1 = _checksum(data[offset + 24 : offset + frame], big, s0, s1)
        if (s0, s1) != (fc1, fc2):
            break
        valid += 1
        if commit:
            last_commit = valid
        offset += frame
    # Frames after the break that carry this log's salts were written after the damaged one
    # (frames of an earlier generation carry other salts and are rightly ignored).
    later: list[bool] = []  # is_commit, for each later frame of this generation
    scan = offset + frame if valid < frames_in_file else offset
    while scan + frame <= size:
        pgno, commit, fs1, fs2 = struct.unpack(">4I", data[scan : scan + 16])
        if (fs1, fs2) == (salt1, salt2) and pgno:
            later.append(bool(commit))
        scan += frame
    report = WalReport(size, last_commit, valid - last_commit)
    commits_later = sum(later)
    if valid < frames_in_file and commits_later >= 2:
        return WalReport(
            size,
            last_commit,
            valid - last_commit,
            damage=(
                f"frame {valid + 1} of {frames_in_file} fails its checksum and "
                f"{commits_later} committed transactions follow it; SQLite would drop them"
            ),
        )
    if valid < frames_in_file and later:
        return WalReport(
            size,
            last_commit,
            valid - last_commit,
            warning=(
                f"frame {valid + 1} of {frames_in_file} fails its checksum; the last "
                f"transaction in the log ({len(later) + 1} frames) is dropped (it was "
                "probably being written when the power went)"
            ),
        )
    return report


# ---------------------------------------------------------------------------- moving aside


def move_aside(db: Path) -> list[Path]:
    """Rename ``db`` with its ``-wal`` and ``-shm`` to ``<db>.corrupt-<time>[-wal|-shm]``.

    The names keep SQLite's convention, so ``sqlite3 edge.db.corrupt-...`` opens the file with
    its own log, for ``.recover``. Returns the new paths (the main file first).
    """
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    base = db.with_name(f"{db.name}.corrupt-{stamp}")
    n = 1
    while base.exists():
        n += 1
        base = db.with_name(f"{db.name}.corrupt-{stamp}.{n}")
    moved: list[Path] = []
    for src, suffix in ((db, ""), (wal_path(db), "-wal"), (shm_path(db), "-shm")):
        if src.exists():
            dest = base.with_name(base.name + suffix)
            os.replace(src, dest)
            moved.append(dest)
    sync_dir(db.parent)
    return moved


# ---------------------------------------------------------------------------- errors in words


def free_bytes(path: Path) -> int | None:
    for candidate in (path, *path.parents):
        try:
            return shutil.disk_usage(candidate).free
        except OSError:
            continue
    return None


def _read_only_mount(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def is_corruption(exc: BaseException) -> bool:
    if isinstance(exc, sqlite3.DatabaseError):
        name = getattr(exc, "sqlite_errorname", "") or ""
        if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")):
            return True
        text = str(exc)
        return "malformed" in text or "not a database" in text
    return False


def explain(exc: BaseException, db: Path) -> str:
    """One sentence on why ``db`` cannot be opened or written, for maintenance staff."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    err_no = getattr(exc, "errno", None)
    free = free_bytes(db.parent)
    free_text = "unknown" if free is None else f"{free} bytes"
    full = name == "SQLITE_FULL" or err_no == errno.ENOSPC
    if not full and (name.startswith("SQLITE_IOERR") or isinstance(exc, OSError)):
        full = free is not None and free < LOW_DISK_BYTES
    if full:
        return (
            f"the disk holding {db.parent} is full ({free_text} free): the database cannot be "
            f"written; free space there (old logs, copies) and start again ({exc})"
        )
    readonly = name.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM")) or (
        err_no in (errno.EACCES, errno.EPERM, errno.EROFS)
    )
    if readonly or (db.exists() and not os.access(db, os.W_OK)):
        if _read_only_mount(db.parent):
            what = f"{db} is on a read-only file system"
        else:
            who = f"uid {os.geteuid()}" if hasattr(os, "geteuid") else "this user"
            where = []
            if db.exists() and not os.access(db, os.W_OK):
                where.append(f"{db} is read-only")
            if db.parent.exists() and not os.access(db.parent, os.W_OK):
                where.append(f"{db.parent} is read-only")
            what = f"{' and '.join(where) or f'{db} cannot be opened for writing'} for {who}"
        return (
            f"{what}: the gateway must write its database and create its -wal and -shm files "
            f"beside it (check the owner and mode of the state directory and its files, and "
            f"the mount) ({exc})"
        )
    if name.startswith("SQLITE_IOERR"):
        return f"disk I/O error on {db} ({free_text} free): check the disk and kernel log ({exc})"
    return str(exc)
