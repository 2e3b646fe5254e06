"""`edge run` on a lost, damaged or unusable database: a clear paragraph and an exit code.

Every case runs the real daemon (``python -m edge run``) on real files: a database the daemon
made itself, then damaged the way SD cards, power cuts and people damage them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.small_disk import fill, small_disk

ROOT = Path(__file__).resolve().parents[2]
REFUSED = 3

CONFIG = """
[gateway]
edge_id = "wc-1"
work_center = "WC1"
log_level = "info"

[store]
path = "{db}"
"""


def write_config(tmp: Path, db: Path) -> Path:
    cfg = tmp / "edge.toml"
    cfg.write_text(CONFIG.format(db=db))
    return cfg


def run_edge(
    cfg: Path, *args: str, timeout: float = 60, user: int | None = None
) -> subprocess.CompletedProcess[str]:
    """`edge run` that is expected to exit by itself (it refuses to start)."""
    return subprocess.run(
        [sys.executable, "-m", "edge", "run", "-c", str(cfg), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        user=user,
    )


def start_and_stop(cfg: Path, *args: str) -> tuple[int, str]:
    """`edge run` that should start: wait until it says so, then SIGTERM it."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge", "run", "-c", str(cfg), *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    lines: list[str] = []
    deadline = time.monotonic() + 60
    for line in proc.stderr:
        lines.append(line)
        if "gateway started" in line or time.monotonic() > deadline:
            break
    proc.send_signal(signal.SIGTERM)
    rest = proc.communicate(timeout=60)[1]
    return proc.returncode, "".join(lines) + rest


@pytest.fixture
def made(tmp_path: Path) -> tuple[Path, Path]:
    """A database and its identity file as a first `edge run` leaves them, and the config."""
    db = tmp_path / "state" / "edge.db"
    cfg = write_config(tmp_path, db)
    code, err = start_and_stop(cfg)
    assert code == 0, err
    assert db.exists()
    assert db.with_name("edge.db.identity").exists()
    # Enough pages that damage "in the middle" hits a table, not free space.
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        conn.executemany(
            "INSERT INTO meta(key, value) VALUES (?, ?)",
            [(f"filler-{i}", "x" * 500) for i in range(400)],
        )
    assert not db.with_name("edge.db-wal").exists()
    return db, cfg


def with_wal(db: Path, transactions: int, blob: int = 100) -> None:
    """Leave ``db`` as a crash would: committed transactions still in its -wal file."""
    snap = db.with_name("snap")
    snap.mkdir()
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA wal_autocheckpoint=0")
    for i in range(transactions):
        conn.execute("INSERT INTO meta(key, value) VALUES (?, ?)", (f"wal-{i}", "y" * blob))
    for name in (db.name, db.name + "-wal"):
        shutil.copy2(db.with_name(name), snap / name)
    conn.close()  # checkpoints and deletes the WAL: put the crashed state back
    for name in (db.name, db.name + "-wal"):
        shutil.copy2(snap / name, db.with_name(name))
    shutil.rmtree(snap)


def frame_offset(db: Path, index: int) -> int:
    page = int.from_bytes(db.with_name(db.name + "-wal").read_bytes()[8:12], "big")
    return 32 + index * (24 + page)


def garble(path: Path, offset: int, length: int) -> None:
    with path.open("r+b") as f:
        f.seek(offset)
        f.write(os.urandom(length))


def truncate(db: Path) -> None:
    os.truncate(db, db.stat().st_size // 2)


def header(db: Path) -> None:
    garble(db, 0, 100)


def middle(db: Path) -> None:
    pages = db.stat().st_size // 4096
    garble(db, (pages // 2) * 4096, 3 * 4096)


def wal_header(db: Path) -> None:
    with_wal(db, 5)
    garble(db.with_name(db.name + "-wal"), 0, 32)


def wal_frames(db: Path) -> None:
    with_wal(db, 8)
    garble(db.with_name(db.name + "-wal"), frame_offset(db, 1) + 24 + 200, 64)


@pytest.mark.parametrize(
    ("damage", "said"),
    [
        (truncate, "truncated"),
        (header, "not an SQLite header"),
        (middle, "SQLite reports"),
        (wal_header, "write-ahead log edge.db-wal is damaged"),
        (wal_frames, "committed transactions follow it"),
    ],
    ids=["truncated", "header", "garbage-pages", "wal-header", "wal-frames"],
)
def test_a_damaged_database_is_moved_aside_and_the_daemon_refuses(
    made: tuple[Path, Path], damage: Callable[[Path], None], said: str
) -> None:
    db, cfg = made
    damage(db)
    had_wal = db.with_name(db.name + "-wal").exists()
    result = run_edge(cfg)
    assert result.returncode == REFUSED, result.stderr
    assert "Traceback" not in result.stderr
    message = [line for line in result.stderr.splitlines() if line.startswith("edge: ")]
    assert len(message) == 1, result.stderr  # one paragraph
    text = message[0]
    assert f"the database {db} is damaged" in text
    assert said in text
    assert "edge backup" in text
    assert ".recover" in text
    assert "--new-database" in text
    moved = sorted(db.parent.glob("edge.db.corrupt-*"))
    assert moved, list(db.parent.iterdir())
    assert not db.exists()
    if had_wal:  # the log goes with its database, named so that sqlite3 opens them together
        assert any(p.name.endswith("-wal") for p in moved)
    # Nothing replaced it: the next start refuses too, until told.
    again = run_edge(cfg)
    assert again.returncode == REFUSED
    assert "is missing, but a gateway ran here before" in again.stderr
    code, err = start_and_stop(cfg, "--new-database")
    assert code == 0, err
    assert "starting a new, empty database as asked" in err
    assert sorted(db.parent.glob("edge.db.corrupt-*")) == moved  # the evidence stays


def test_a_clean_wal_left_by_a_crash_is_recovered_and_said(made: tuple[Path, Path]) -> None:
    db, cfg = made
    with_wal(db, 5)
    code, err = start_and_stop(cfg)
    assert code == 0, err
    assert "recovering committed transactions from the write-ahead log" in err
    with contextlib.closing(sqlite3.connect(db)) as conn:
        assert conn.execute("SELECT COUNT(*) FROM meta WHERE key LIKE 'wal-%'").fetchone() == (5,)


def test_a_torn_last_transaction_in_the_wal_is_a_warning_with_a_copy(
    made: tuple[Path, Path],
) -> None:
    db, cfg = made
    with_wal(db, 4, blob=10_000)  # the last transaction spans several frames
    wal = db.with_name(db.name + "-wal")
    frames = (wal.stat().st_size - 32) // (frame_offset(db, 1) - frame_offset(db, 0))
    garble(wal, frame_offset(db, frames - 3) + 24 + 100, 64)
    code, err = start_and_stop(cfg)
    assert code == 0, err
    assert "the write-ahead log is damaged at its end" in err
    assert list(db.parent.glob("edge.db-wal.damaged-*"))
    assert "Traceback" not in err


def test_a_lost_database_is_not_started_over_silently(made: tuple[Path, Path]) -> None:
    db, cfg = made
    backup = db.with_name("copy.db")
    shutil.copy2(db, backup)
    db.unlink()
    result = run_edge(cfg)
    assert result.returncode == REFUSED
    assert "Traceback" not in result.stderr
    text = result.stderr
    assert f"the database {db} is missing, but a gateway ran here before" in text
    assert "boot 1" in text
    assert "edge backup" in text
    assert "--new-database" in text
    assert not db.exists()

    db.write_bytes(b"")  # a zero-length file: the same
    result = run_edge(cfg)
    assert result.returncode == REFUSED
    assert "is empty (0 bytes)" in result.stderr

    # Restored from the copy: it runs, on with the next boot number.
    db.unlink()
    shutil.copy2(backup, db)
    code, err = start_and_stop(cfg)
    assert code == 0, err
    assert "boot_seq=2" in err or '"boot_seq": 2' in err

    # Told to start over: a new database whose boot numbers go on (3), never repeat.
    db.unlink()
    code, err = start_and_stop(cfg, "--new-database")
    assert code == 0, err
    assert "starting a new, empty database as asked" in err
    assert "boot_seq=3" in err or '"boot_seq": 3' in err


def test_the_first_start_ever_needs_nothing(tmp_path: Path) -> None:
    db = tmp_path / "new" / "edge.db"
    code, err = start_and_stop(write_config(tmp_path, db))
    assert code == 0, err
    assert "database checked" in err
    assert "took_ms" in err


def test_a_zero_length_file_without_history_is_refused_too(tmp_path: Path) -> None:
    db = tmp_path / "edge.db"
    db.write_bytes(b"")
    result = run_edge(write_config(tmp_path, db))
    assert result.returncode == REFUSED
    assert "is empty (0 bytes)" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_directory_in_place_of_the_database(tmp_path: Path) -> None:
    db = tmp_path / "edge.db"
    db.mkdir()
    result = run_edge(write_config(tmp_path, db))
    assert result.returncode == REFUSED
    assert f"{db} is a directory, not a database file" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_read_only_database_file(made: tuple[Path, Path]) -> None:
    db, cfg = made
    db.chmod(0o444)
    immutable = os.geteuid() == 0  # root writes a 0444 file anyway; not an immutable one
    if immutable and subprocess.run(["chattr", "+i", str(db)]).returncode != 0:
        pytest.skip("chattr +i does not work here")
    try:
        result = run_edge(cfg)
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(db)], check=True)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert f"{db} is read-only for uid {os.geteuid()}" in result.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="a read-only bind mount needs root")
def test_a_database_on_a_read_only_mount(made: tuple[Path, Path]) -> None:
    db, cfg = made
    state = db.parent
    if subprocess.run(["mount", "--bind", str(state), str(state)]).returncode != 0:
        pytest.skip("cannot bind-mount here")
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(state)], check=True)
        result = run_edge(cfg)
    finally:
        subprocess.run(["umount", str(state)], check=True)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert f"{db} is on a read-only file system" in result.stderr
    assert db.exists()  # never moved aside: nothing is wrong with it


def test_a_full_disk_at_the_first_start_says_so(tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk") as disk:
        fill(disk)
        db = disk / "edge.db"
        result = run_edge(write_config(tmp_path, db))
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert f"the disk holding {disk} is full (" in result.stderr
    assert "bytes free)" in result.stderr


def test_a_full_disk_under_an_existing_database_says_so(tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk") as disk:
        db = disk / "edge.db"
        cfg = write_config(tmp_path, db)
        code, err = start_and_stop(cfg)
        assert code == 0, err
        fill(disk)
        result = run_edge(cfg)
        assert db.exists()  # a full disk is not damage: nothing moved aside
        assert not list(disk.glob("edge.db.corrupt-*"))
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert f"the disk holding {disk} is full (" in result.stderr
