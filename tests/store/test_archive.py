"""Export before deletion ([retention] export_dir): a real engine on a real SQLite file, the
archive in a real folder (a full one on a small tmpfs). Only the clocks are moved on."""

from __future__ import annotations

import gzip
import os
import re
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from edge.store import retention
from edge.store.archive import Archive, read_archive
from edge.store.replay import verify_all
from edge.store.retention import RetentionPolicy
from tests.engine.test_retention_engine import Clocks, a_shift, running
from tests.small_disk import fill, small_disk

DAY_MS = retention.DAY_MS
TABLES = {"journal": "id", "event": "id", "outbox": "seq"}
NAME = re.compile(r"^edge-wc-1-\d{8}-\d{6}(-\d+)?\.jsonl\.gz$")


def rows_of(conn: Any) -> dict[tuple[str, int], dict[str, Any]]:
    out: dict[tuple[str, int], dict[str, Any]] = {}
    for table, key in TABLES.items():
        cursor = conn.execute(f"SELECT * FROM {table}")
        names = [d[0] for d in cursor.description]
        for row in cursor.fetchall():
            doc = dict(zip(names, row, strict=True))
            out[(table, doc[key])] = doc
    return out


def archived(folder: Path) -> list[dict[str, Any]]:
    return [r for path in sorted(folder.iterdir()) for r in read_archive(path)]


def policy(folder: Path, **kw: Any) -> RetentionPolicy:
    base: dict[str, Any] = {
        "journal_days": 1,
        "outbox_days": 1,
        "command_id_days": 1,
        "batch_rows": 100,
        "export_dir": folder,
        "export_prefix": "edge-wc-1",
    }
    base.update(kw)
    return RetentionPolicy(**base)


async def two_old_days(engine: Any, clocks: Clocks) -> None:
    """Two shifts of history, finished by the broker, checkpointed and 3 days old."""
    counter = await a_shift(engine, clocks, 1000, first=True)
    await a_shift(engine, clocks, counter)
    await engine.run_store(engine.store.conn.execute, "UPDATE outbox SET state = 'done'")
    await engine.checkpoint()
    clocks.advance(3 * DAY_MS)
    await a_shift(engine, clocks, counter + 500)  # the newer, unfinished part
    await engine.checkpoint()


async def test_the_archive_holds_exactly_what_was_deleted(tmp_path: Path) -> None:
    folder = tmp_path / "archive"
    folder.mkdir()
    clocks = Clocks()
    async with running(tmp_path / "edge.db", clocks) as engine:
        await two_old_days(engine, clocks)
        before = rows_of(engine.store.conn)
        pruned = await engine.prune(policy(folder))
        after = rows_of(engine.store.conn)
        deleted = {k: v for k, v in before.items() if k not in after}
        assert pruned.journal
        assert pruned.events
        assert pruned.outbox
        assert len(deleted) == pruned.journal + pruned.events + pruned.outbox
        records = archived(folder)
        assert {(r["table"], r["id"]): r["row"] for r in records} == deleted
        assert len(records) == len(deleted)  # nothing twice without a crash
        assert pruned.exported == len(deleted) == engine.retention.exported
        assert all(r["row"]["state"] == "done" for r in records if r["table"] == "outbox")
        files = os.listdir(folder)
        assert len(files) == 1
        assert NAME.match(files[0])
        # zcat reads it: plain gzip of JSON lines.
        with gzip.open(folder / files[0], "rt") as f:
            assert sum(1 for _ in f) == len(deleted)
        checks = await engine.run_store(verify_all, engine.store)
        assert [c.what for c in checks if c.differences] == []


async def test_the_archive_rotates_by_size_and_keeps_the_newest_files(tmp_path: Path) -> None:
    folder = tmp_path / "archive"
    folder.mkdir()
    (folder / "notes.txt").write_text("not ours")  # other files in the folder are left alone
    clocks = Clocks()
    small = policy(folder, batch_rows=20, export_max_bytes=1, export_keep_files=3)
    async with running(tmp_path / "edge.db", clocks) as engine:
        await two_old_days(engine, clocks)
        before = rows_of(engine.store.conn)
        pruned = await engine.prune(small)
        after = rows_of(engine.store.conn)
    batches = -(-pruned.outbox // 20) + -(-pruned.events // 20) + -(-pruned.journal // 20)
    assert batches > 3  # a file each (export_max_bytes = 1): more files made than kept
    names = sorted(p.name for p in folder.iterdir() if p.name != "notes.txt")
    assert len(names) == 3
    assert all(NAME.match(n) for n in names)
    assert (folder / "notes.txt").exists()
    # The three newest batches are what is left: the last rows deleted (the journal's).
    kept = archived(folder)
    newest_journal = max(k[1] for k in before if k[0] == "journal" and k not in after)
    assert any(r["table"] == "journal" and r["id"] == newest_journal for r in kept)
    assert all(r["row"] == before[(r["table"], r["id"])] for r in kept)


def test_a_file_per_start_and_the_same_second_gets_a_number(tmp_path: Path) -> None:
    rows = [{"id": i, "v": "x" * 10} for i in range(3)]
    a = Archive(tmp_path, "edge-wc-1", max_bytes=10**6, keep_files=10)
    first = a.append("journal", "id", rows, 1_780_000_000_000)
    assert a.append("journal", "id", rows, 1_780_000_000_000) == first  # appended to
    b = Archive(tmp_path, "edge-wc-1", max_bytes=10**6, keep_files=10)  # a restart
    second = b.append("journal", "id", rows, 1_780_000_000_000)
    assert second != first
    assert second.name.endswith("-2.jsonl.gz")
    assert [r["id"] for r in read_archive(first)] == [0, 1, 2, 0, 1, 2]
    # A member cut short by a kill is left out; what came before it is read.
    with first.open("ab") as f:
        f.write(gzip.compress(b'{"table":"journal","id":9,"row":{}}\n')[:-6])
    assert [r["id"] for r in read_archive(first)] == [0, 1, 2, 0, 1, 2]


@pytest.mark.parametrize("where", ["missing", "a file"])
async def test_an_unusable_folder_deletes_nothing_and_says_where(
    tmp_path: Path, where: str
) -> None:
    folder = tmp_path / "archive"
    if where == "a file":
        folder.write_text("")
    clocks = Clocks()
    async with running(tmp_path / "edge.db", clocks) as engine:
        await two_old_days(engine, clocks)
        before = rows_of(engine.store.conn)
        checkpoints = await engine.run_store(retention.checkpoints, engine.store)
        with capture_logs() as logs:
            pruned = await engine.prune(policy(folder))
        assert rows_of(engine.store.conn) == before
        assert await engine.run_store(retention.checkpoints, engine.store) == checkpoints
        assert (pruned.journal, pruned.events, pruned.outbox) == (0, 0, 0)
        assert engine.retention.export_failures == 1
        errors = [e for e in logs if e["log_level"] == "error"]
        assert len(errors) == 1
        assert "exporting before deletion failed" in errors[0]["event"]
        assert errors[0]["path"] == str(folder)
        assert errors[0]["error"]
        assert not folder.is_dir()  # never created
        # The folder appears (the stick is mounted): the next run exports and deletes.
        if where == "a file":
            folder.unlink()
        folder.mkdir()
        pruned = await engine.prune(policy(folder))
        assert pruned.journal
        assert pruned.outbox
        assert len(archived(folder)) == pruned.journal + pruned.events + pruned.outbox


async def test_a_full_disk_under_the_archive_keeps_the_rows(tmp_path: Path) -> None:
    clocks = Clocks()
    with small_disk(tmp_path / "disk", "256k") as disk:
        folder = disk / "archive"
        folder.mkdir()
        filler = fill(disk)
        async with running(tmp_path / "edge.db", clocks) as engine:
            await two_old_days(engine, clocks)
            before = rows_of(engine.store.conn)
            with capture_logs() as logs:
                pruned = await engine.prune(policy(folder))
            assert rows_of(engine.store.conn) == before
            assert pruned.export_failed is not None
            (error,) = [e for e in logs if e["log_level"] == "error"]
            assert str(folder) in error["path"]
            assert "No space left on device" in error["error"]
            # Space again: exported and deleted, exactly the rows.
            filler.unlink()
            pruned = await engine.prune(policy(folder))
            after = rows_of(engine.store.conn)
            deleted = {k: v for k, v in before.items() if k not in after}
            assert deleted
            got = {(r["table"], r["id"]): r["row"] for r in archived(folder)}
            assert got == deleted


async def test_a_read_only_folder_keeps_the_rows(tmp_path: Path) -> None:
    clocks = Clocks()
    with small_disk(tmp_path / "ro", "256k", read_only=True) as folder:
        async with running(tmp_path / "edge.db", clocks) as engine:
            await two_old_days(engine, clocks)
            before = rows_of(engine.store.conn)
            with capture_logs() as logs:
                pruned = await engine.prune(policy(folder))
            assert rows_of(engine.store.conn) == before
            assert pruned.export_failed is not None
            (error,) = [e for e in logs if e["log_level"] == "error"]
            assert error["path"] == str(folder)
            assert "Read-only file system" in error["error"]


def test_the_config_section_reaches_the_policy(tmp_path: Path) -> None:
    from edge.app import retention_policy
    from edge.config import ConfigError, load_config

    cfg_file = tmp_path / "edge.toml"
    body = '[gateway]\nedge_id = "wc-1"\nwork_center = "WC1"\n[retention]\n{}\n'
    cfg_file.write_text(body.format(f'export_dir = "{tmp_path}"\nexport_keep_files = 5'))
    p = retention_policy(load_config(cfg_file))
    assert (p.export_dir, p.export_prefix, p.export_keep_files) == (tmp_path, "edge-wc-1", 5)
    for bad in ("export_max_bytes = 1000", "export_keep_files = 0"):
        cfg_file.write_text(body.format(bad))
        with pytest.raises(ConfigError) as err:
            load_config(cfg_file)
        key, value = bad.split(" = ")
        assert key in str(err.value)
        assert value in str(err.value)
