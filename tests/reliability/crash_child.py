"""A gateway process that ingests counter readings as fast as it can until it is killed.

Run by test_crash.py: it prints ``ACK <value>`` once every reading up to that counter value is
durable, so the parent knows what was acknowledged before its SIGKILL.

Beside the readings it runs the daemon's own maintenance (``Engine.maintain``) with a policy
squeezed into milliseconds: a checkpoint every 40 ms or 300 entries, the journal, events and
finished outbox rows deleted once a few milliseconds old, in batches of 500, the pages given
back 8 at a time, every deleted row exported first to ``archive/`` beside the database
(``[retention] export_dir``, files of 256 KiB). A stand-in for the broker marks the outbox
rows done (so they may be deleted), except seq % 50 == 25, published (awaiting the relay for
ever), and seq % 50 == 0, left pending: those are never finished and must all survive every
kill (:func:`unfinished`).

With a target (``argv[2]``), the child stops for a moment at the chosen point of the store's
work and says so (``IN <target>``), so that the parent's kill lands exactly there: inside the
statement (``mid``: SQLite's progress handler, as a slow SD card would hold it) or after the
statement and before its transaction's COMMIT (``commit``). ``argv[3]`` skips that many
occurrences first.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sqlite3
import sys
import time
from decimal import Decimal
from pathlib import Path

from edge.clock import TimeSource
from edge.domain.inputs import Action, CounterReading, DispatchList, Transition
from edge.domain.model import OperationStatus
from edge.domain.rules import ConfirmationPolicy
from edge.engine import Engine
from edge.logging import configure_logging
from edge.store.retention import DAY_MS, RetentionPolicy
from edge.store.store import Store
from edge.sync import messages
from tests.engine.helpers import rules, spec

OP = spec(target=10**9)
CHUNK = 64
MS = 1 / DAY_MS  # one millisecond in days

POLICY = RetentionPolicy(
    checkpoint_interval_s=0.04,
    checkpoint_journal_rows=300,
    journal_days=3 * MS,
    outbox_days=3 * MS,
    command_id_days=3 * MS,
    batch_rows=500,
    vacuum_pages=8,
    export_prefix="edge-crash",
    export_max_bytes=256 * 1024,
    export_keep_files=1_000_000,  # all kept: the parent checks every deleted row is there
)


def archive_dir(db: Path) -> Path:
    return db.parent / "archive"


# target: (where it pauses, the statement it is about)
TARGETS: dict[str, tuple[str, str]] = {
    "checkpoint": ("commit", "INSERT INTO checkpoint"),
    "outbox": ("commit", "DELETE FROM outbox"),
    "events": ("mid", "DELETE FROM event"),
    "journal": ("mid", "DELETE FROM journal"),
    "checkpoints": ("commit", "DELETE FROM checkpoint"),
    "vacuum": ("mid", "PRAGMA incremental_vacuum"),
}
PAUSE_S = 0.3


def unfinished(seq: int) -> bool:
    """The outbox rows this child never finishes."""
    return seq % 50 in (0, 25)


class Pauser:
    """On the store's thread: trace callback and progress handler of its connection."""

    def __init__(self, target: str, skip: int) -> None:
        self.name = target
        self.where, self.prefix = TARGETS[target]
        self.skip = skip
        self.current = ""  # the statement running now
        self.seen_target = False  # the target statement ran in this transaction
        self.fired = False

    def install(self, conn: sqlite3.Connection) -> None:
        conn.set_trace_callback(self.trace)
        if self.where == "mid":
            conn.set_progress_handler(self.progress, 50)

    def pause(self) -> None:
        if self.fired:
            return
        if self.skip > 0:
            self.skip -= 1
            return
        self.fired = True
        os.write(1, f"IN {self.name}\n".encode())
        time.sleep(PAUSE_S)

    def trace(self, sql: str) -> None:
        if self.where == "mid" and self.current.startswith(self.prefix):
            # The statement before ended without a progress call (a small one): pause right
            # after it, still in its transaction when it had one.
            self.pause()
        self.current = sql
        if sql.startswith(self.prefix):
            self.seen_target = True
        elif sql.startswith("COMMIT"):
            if self.where == "commit" and self.seen_target:
                self.pause()
            self.seen_target = False

    def progress(self) -> int:
        if self.current.startswith(self.prefix):
            self.pause()
        return 0


async def broker(engine: Engine) -> None:
    """Marks what a broker and a relay would: done, published, or left pending (see above)."""
    after = 0
    while True:
        rows = await engine.outbox_pending(1000, after)
        if rows:
            after = rows[-1].seq
            await engine.outbox_mark(
                [r.seq for r in rows if not unfinished(r.seq)],
                [r.seq for r in rows if r.seq % 50 == 25],
                (),
            )
        await asyncio.sleep(0.005)


async def main(db: Path, target: str | None, skip: int) -> None:
    configure_logging("warning", json=True)
    archive_dir(db).mkdir(exist_ok=True)
    policy = dataclasses.replace(POLICY, export_dir=archive_dir(db))
    # The computer's clocks, but NTP-synchronised (the outbox's ages are wall times).
    source = TimeSource(ntp_synchronized=lambda: True)
    engine = await Engine.open(
        Store(db),
        # A partial confirmation every 1000 parts, not 50: the core keeps every confirmation
        # in memory and scans them all at each new one, which over a thousand runs of
        # thousands of readings would make the harness quadratic.
        rules(policy=ConfirmationPolicy(every_good=Decimal(1000))),
        batch_window_ms=0.5,
        outbound=messages,
        time_source=source,
    )
    if target is not None:
        await engine.run_store(Pauser(target, skip).install, engine.store.conn)
    task = asyncio.create_task(engine.run(tick_interval_s=None))
    if OP.key not in engine.wc.operations:
        await engine.submit(DispatchList(1, (OP,), engine.now()))
    if engine.wc.operations[OP.key].status is OperationStatus.DISPATCHED:
        await engine.submit(
            Transition(Action.START_PRODUCTION, str(OP.key), "operator:1", engine.now())
        )
    track = engine.wc.counters.get("good")
    value = (track.last_value or 0) if track else 0
    print("READY", value, flush=True)
    helpers = [
        asyncio.create_task(engine.maintain(policy, poll_s=0.005)),
        asyncio.create_task(broker(engine)),
    ]
    while True:
        values = range(value + 1, value + 1 + CHUNK)
        await asyncio.gather(
            *(engine.submit(CounterReading("good", v, engine.now())) for v in values)
        )
        value += CHUNK
        sys.stdout.write(f"ACK {value}\n")  # one write: a kill cuts at most this line
        sys.stdout.flush()
        for t in (task, *helpers):
            if t.done():
                t.result()


if __name__ == "__main__":
    args = sys.argv[1:]
    asyncio.run(
        main(
            Path(args[0]),
            args[1] if len(args) > 1 and args[1] != "-" else None,
            int(args[2]) if len(args) > 2 else 0,
        )
    )
