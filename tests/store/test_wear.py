"""What one commit writes: the pages a machine count puts into the write-ahead log.

An SD card wears by the pages written, at every commit (``bench/wear.py`` measures bytes per
hour). These tests read the last commit's frames out of the WAL through the real engine and
store, name each page by its table or index (SQLite's ``dbstat``), and hold the count to a
budget: a table or index added to the hot path shows up here. (The upsert of a projection once
also set ``retired_ms = NULL``: that rewrote the partial indexes on ``retired_ms`` at every
commit, a page more per operation, stop and confirmation row written.)
"""

from __future__ import annotations

import contextlib
import sqlite3
import struct
from pathlib import Path

from edge.domain.inputs import Action, CounterReading, DispatchList, Transition
from tests.engine.helpers import spec
from tests.engine.test_retention_engine import Clocks, running

OP = "4711/0020"
FRAME_HEADER = 24


def last_commit_pages(db: Path) -> list[str]:
    """The tables and indexes of the pages the newest commit in ``db``'s WAL wrote."""
    wal = (db.parent / (db.name + "-wal")).read_bytes()
    page_size = struct.unpack(">I", wal[8:12])[0]
    salts = wal[16:24]
    commits: list[list[int]] = []
    frame: list[int] = []
    offset = 32
    while offset + FRAME_HEADER + page_size <= len(wal):
        page, size_after = struct.unpack(">II", wal[offset : offset + 8])
        if wal[offset + 8 : offset + 16] != salts:
            break  # a frame of an earlier round of the WAL: the log ends here
        frame.append(page)
        if size_after:  # the commit's last frame
            commits.append(frame)
            frame = []
        offset += FRAME_HEADER + page_size
    assert commits, "no commit in the WAL"
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        names = dict(conn.execute("SELECT pageno, name FROM dbstat").fetchall())
    return [str(names.get(p, f"page {p}")) for p in commits[-1]]


async def test_a_count_writes_its_journal_entry_and_projections_and_no_index_it_leaves_alone(
    tmp_path: Path,
) -> None:
    db = tmp_path / "edge.db"
    clocks = Clocks()
    async with running(db, clocks) as engine:
        now = engine.now
        await engine.submit(DispatchList(1, (spec(std_cycle_s=1.0, target=100_000),), now()))
        await engine.submit(Transition(Action.START_PRODUCTION, OP, "operator:7", now()))
        for value in (10, 20, 30):
            clocks.advance(1_000)
            assert (await engine.submit(CounterReading("good", value, now()))).accepted
        pages = last_commit_pages(db)
    assert len(pages) == len(set(pages)), pages  # each page once
    # the input, the operation's and the counter's and the shift's rows, the historian row
    # and its indexes: nothing else
    assert {"journal", "operation", "counter", "shift"} <= set(pages), pages
    left_alone = {p for p in pages if p.endswith(("_live", "_retired", "_idem"))}
    assert not left_alone, pages
    assert len(pages) <= 8, pages
