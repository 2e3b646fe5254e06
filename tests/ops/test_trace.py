"""``edge trace BATCH`` on a database the real engine wrote.

An operation with a batch-managed backflushed component (steel) and a recorded one (labels) is
dispatched, started, batch A of the steel loaded, 10 parts counted, batch B loaded, 6 counted, a
partial confirmation made (the relay posts it), 4 more counted and the operation completed (its
final confirmation). Only the clocks are the test's. Then the command answers from the file:
in-process and as the real ``python -m edge``; after retention has deleted the operation's rows
too, from the events alone; and it refuses a bad batch and an unusable database.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from edge import cli
from edge.domain.inputs import (
    Action,
    ComponentBatchLoaded,
    ComponentConsumed,
    ConfirmationResult,
    DispatchList,
    Pulses,
    RequestConfirmation,
    ResultStatus,
    ReverseConfirmation,
    Transition,
)
from edge.domain.material import MAX_BATCH
from edge.domain.model import ComponentSpec
from edge.engine import Engine
from edge.store.retention import RetentionPolicy
from edge.store.store import Store
from edge.sync import messages
from edge.trace import Trace, TraceError, trace_batch
from tests.engine.helpers import rules, spec
from tests.engine.test_retention_engine import DAY_MS, Clocks
from tests.ops.conftest import edge, write_config

ZONE = ZoneInfo("Europe/Berlin")
OP = "4711/0020"
OPERATOR = "operator:7"
STEEL = ComponentSpec("STEEL-2MM", Decimal("0.25"), "KG", backflush=True, batch_managed=True)
LABEL = ComponentSpec("LABEL-7", Decimal(1), "PC", batch_managed=True)


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, ZONE).isoformat(timespec="seconds")


@dataclass
class Story:
    """What the engine was given, to check the trace against."""

    loaded_a: str = ""
    loaded_b: str = ""
    loaded_label: str = ""
    recorded_at: str = ""
    ended: str = ""
    idem: tuple[str, str] = ("", "")


@contextlib.asynccontextmanager
async def running(path: Path, clocks: Clocks) -> AsyncIterator[Engine]:
    engine = await Engine.open(
        Store(path),
        rules(timezone="Europe/Berlin"),
        outbound=messages,
        time_source=clocks.source(),
    )
    task = asyncio.create_task(engine.run(tick_interval_s=None))
    try:
        yield engine
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await engine.close()


async def work(engine: Engine, clocks: Clocks) -> Story:
    story = Story()
    now = engine.now

    async def ok(inp: object) -> None:
        out = await engine.submit(inp)  # type: ignore[arg-type]
        assert out.accepted, out.rejection
        clocks.advance(60_000)

    await ok(
        DispatchList(1, (spec(target=100, components=(STEEL, LABEL), batch="FG-0815"),), now())
    )
    await ok(Transition(Action.START_PRODUCTION, OP, OPERATOR, now()))
    story.loaded_a = iso(clocks.wall_ms)
    await ok(ComponentBatchLoaded("A-100", OPERATOR, now(), material="STEEL-2MM"))
    story.loaded_label = iso(clocks.wall_ms)
    await ok(ComponentBatchLoaded("L-1", "operator:8", now(), material="LABEL-7"))
    await ok(Pulses("pulses", 10, now()))
    story.loaded_b = iso(clocks.wall_ms)
    await ok(ComponentBatchLoaded("B-200", OPERATOR, now(), material="STEEL-2MM"))
    await ok(Pulses("pulses", 6, now()))
    story.recorded_at = iso(clocks.wall_ms)
    await ok(ComponentConsumed("LABEL-7", Decimal(20), OPERATOR, now()))
    await ok(RequestConfirmation(OPERATOR, now(), OP))
    first = engine.wc.confirmations[f"{OP}#1"]
    await ok(ConfirmationResult(first.idem_key, ResultStatus.POSTED, now(), erp_ref="CONF-1"))
    await ok(Pulses("pulses", 4, now()))
    story.ended = iso(clocks.wall_ms)
    await ok(Transition(Action.COMPLETE, OP, OPERATOR, now()))
    story.idem = (first.idem_key, engine.wc.confirmations[f"{OP}#2"].idem_key)
    return story


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Story]:
    db = tmp_path_factory.mktemp("trace") / "edge.db"
    clocks = Clocks()

    async def build() -> Story:
        async with running(db, clocks) as engine:
            return await work(engine, clocks)

    return db, asyncio.run(asyncio.wait_for(build(), 60))


@pytest.fixture
def db(tmp_path: Path, made: tuple[Path, Story]) -> Path:
    copy = tmp_path / "edge.db"
    shutil.copy(made[0], copy)
    return copy


@pytest.fixture
def story(made: tuple[Path, Story]) -> Story:
    return made[1]


def run(*argv: str) -> tuple[int, str, str]:
    """``edge`` in this process: exit code, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(list(argv))
    return code, out.getvalue(), err.getvalue()


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def side_files(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir() if p.name != path.name)


# ---------------------------------------------------------------------------- what is found


def test_batch_a_was_loaded_until_b_replaced_it_and_went_into_the_first_confirmation(
    db: Path, story: Story
) -> None:
    before, files = digest(db), side_files(db)
    code, out, err = run("trace", "A-100", "--db", str(db), "--json")
    assert (code, err) == (0, "")
    doc = json.loads(out)
    assert doc["batch"] == "A-100"
    assert doc["found"] is True
    assert doc["time_zone"] == "Europe/Berlin"
    assert doc["used"]["loads"] == [
        {
            "op": OP,
            "order": "4711",
            "operation": "0020",
            "split": 0,
            "material": "STEEL-2MM",
            "loaded_at": story.loaded_a,
            "actor": OPERATOR,
            "until": story.loaded_b,
            "replaced_by": "B-200",
            "expiry": None,
            "operation_stored": True,
        }
    ]
    assert story.loaded_a.endswith("+02:00")  # wall clock with its zone (May, Berlin)
    assert doc["used"]["recorded"] == []
    [line] = doc["used"]["confirmations"]
    # 10 parts x 0.25 kg while A was loaded; posted by the relay.
    assert (line["conf_id"], line["conf_index"], line["material"]) == (f"{OP}#1", 1, "STEEL-2MM")
    assert (line["qty"], line["unit"], line["direction"]) == ("2.5", "KG", "issue")
    assert (line["erp_status"], line["erp_ref"], line["reversed"]) == ("posted", "CONF-1", False)
    assert line["idem_key"] == story.idem[0]
    assert isinstance(line["seq"], int)
    assert line["seq"] > 0
    assert line["posting_date"]
    assert line["period_end"]
    assert doc["produced"] == []
    # Only read: the file is as it was and nothing was made beside it.
    assert digest(db) == before
    assert side_files(db) == files


def test_batch_b_went_into_both_confirmations_and_stayed_until_the_end(
    db: Path, story: Story
) -> None:
    t = trace_batch(db, "B-200")
    assert [(x.op, x.material, x.loaded_at, x.until, x.replaced_by) for x in t.loads] == [
        (OP, "STEEL-2MM", story.loaded_b, story.ended, None)
    ]
    # 6 parts x 0.25 kg in the first, 4 in the final one (still awaiting the ERP's answer).
    assert [
        (c.conf_id, c.qty, c.unit, c.direction, c.erp_status, c.idem_key) for c in t.consumed
    ] == [
        (f"{OP}#1", "1.5", "KG", "issue", "posted", story.idem[0]),
        (f"{OP}#2", 1, "KG", "issue", "awaiting_result", story.idem[1]),
    ]
    assert t.produced == []


def test_the_produced_batch_names_the_operation_and_its_yield(db: Path) -> None:
    t = trace_batch(db, "FG-0815")
    assert (t.loads, t.consumed, t.recorded) == ([], [], [])
    [p] = t.produced
    assert (p.op, p.material, p.unit, p.status, p.target_qty) == (
        OP,
        "FG-1",
        "PC",
        "completed",
        100,
    )
    assert [
        (c.conf_id, c.final, c.yield_qty, c.scrap_qty, c.rework_qty, c.erp_status)
        for c in p.confirmations
    ] == [
        (f"{OP}#1", False, 16, 0, 0, "posted"),
        (f"{OP}#2", True, 4, 0, 0, "awaiting_result"),
    ]


def test_recorded_consumption_of_a_label_batch(db: Path, story: Story) -> None:
    t = trace_batch(db, "L-1")
    assert [(x.material, x.actor, x.loaded_at) for x in t.loads] == [
        ("LABEL-7", "operator:8", story.loaded_label)
    ]
    [r] = t.recorded
    assert (r.op, r.material, r.qty, r.unit) == (OP, "LABEL-7", 20, "PC")
    assert [(x["at"], x["actor"], x["qty"]) for x in r.records] == [
        (story.recorded_at, OPERATOR, 20)
    ]
    assert [(c.conf_id, c.qty, c.unit) for c in t.consumed] == [(f"{OP}#1", 20, "PC")]


def test_the_real_command_prints_a_table_and_the_same_facts_as_json(
    tmp_path: Path, db: Path, story: Story
) -> None:
    cfg = write_config(tmp_path, db=db)
    proc = edge("trace", "B-200", "--config", str(cfg))
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert "batch 'B-200'" in text
    assert "Europe/Berlin" in text
    assert f"loaded {story.loaded_b} by {OPERATOR}, until {story.ended}" in text
    rows = [line.split() for line in text.splitlines() if line.strip().startswith(f"{OP}#")]
    assert [r[:5] for r in rows] == [
        [f"{OP}#1", "STEEL-2MM", "1.5", "KG", "issue"],
        [f"{OP}#2", "STEEL-2MM", "1", "KG", "issue"],
    ]
    as_json = edge("-c", str(cfg), "trace", "B-200", "--json")
    assert as_json.returncode == 0, as_json.stderr
    doc = json.loads(as_json.stdout)
    assert [(c["conf_id"], c["qty"]) for c in doc["used"]["confirmations"]] == [
        (f"{OP}#1", "1.5"),
        (f"{OP}#2", 1),
    ]
    assert sorted(doc) == [
        "batch",
        "database",
        "found",
        "produced",
        "retention",
        "time_zone",
        "used",
    ]


def test_an_unknown_batch_says_so_with_the_retention_window(tmp_path: Path, db: Path) -> None:
    code, out, err = run("trace", "NO-SUCH", "--db", str(db))
    assert code == 1, err
    assert "No operation or confirmation" in out
    assert "'NO-SUCH'" in out
    assert "90 days" in out
    assert "365 days" in out
    assert "oldest event kept is from" in out
    cfg = write_config(tmp_path, db=db)
    with cfg.open("a") as f:
        f.write("\n[retention]\njournal_days = 30\nfinished_days = 200\n")
    proc = edge("trace", "NO-SUCH", "--config", str(cfg), "--json")
    assert proc.returncode == 1, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["found"] is False
    assert doc["used"]["loads"] == []
    assert doc["produced"] == []
    assert (doc["retention"]["journal_days"], doc["retention"]["finished_days"]) == (30, 200)
    assert "30 days" in proc.stderr


async def test_a_reversed_confirmation_is_shown_reversed_and_its_batch_in_the_next_one(
    tmp_path: Path,
) -> None:
    db, clocks = tmp_path / "edge.db", Clocks()
    async with running(db, clocks) as engine:
        now = engine.now
        for inp in (
            DispatchList(1, (spec(target=100, components=(STEEL,), batch="FG-0900"),), now()),
            Transition(Action.START_PRODUCTION, OP, OPERATOR, now()),
            ComponentBatchLoaded("C-300", OPERATOR, now(), material="STEEL-2MM"),
            Pulses("pulses", 8, now()),
            RequestConfirmation(OPERATOR, now(), OP),
            ReverseConfirmation(OP, 1, "supervisor:anna", now()),
            Transition(Action.COMPLETE, OP, OPERATOR, now()),
        ):
            assert (await engine.submit(inp)).accepted, inp
            clocks.advance(60_000)
        first = engine.wc.confirmations[f"{OP}#1"]
        assert first.reversal_idem_key is not None
        posted = ConfirmationResult(first.reversal_idem_key, ResultStatus.POSTED, now())
        assert (await engine.submit(posted)).accepted
        reversal_key = first.reversal_idem_key
    t = trace_batch(db, "C-300")
    # 8 parts x 0.25 kg: taken by the first, given back by its reversal, taken by the final.
    assert [
        (c.conf_id, c.qty, c.direction, c.reversed, c.reversal_idem_key, c.reversal_status)
        for c in t.consumed
    ] == [
        (f"{OP}#1", 2, "issue", True, reversal_key, "posted"),
        (f"{OP}#2", 2, "issue", False, None, None),
    ]
    [p] = trace_batch(db, "FG-0900").produced
    assert [(c.conf_id, c.yield_qty, c.reversed) for c in p.confirmations] == [
        (f"{OP}#1", 8, True),
        (f"{OP}#2", 8, False),
    ]
    code, out, _ = run("trace", "C-300", "--db", str(db))
    assert code == 0
    assert "awaiting_result (reversed)" in out


# ---------------------------------------------------------------------------- refused


def test_a_missing_database_is_named_and_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "gone" / "edge.db"
    code, out, err = run("trace", "A-100", "--db", str(missing))
    assert code == 2
    assert out == ""
    assert str(missing) in err
    assert "no such database" in err
    assert not missing.parent.exists()
    here = tmp_path / "edge.db"
    proc = edge("trace", "A-100", "--db", str(here))
    assert proc.returncode == 2
    assert str(here) in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_damaged_or_foreign_file_is_named_and_left_alone(tmp_path: Path) -> None:
    damaged = tmp_path / "edge.db"
    damaged.write_bytes(b"this is not SQLite at all" * 100)
    before = digest(damaged)
    code, _, err = run("trace", "A-100", "--db", str(damaged))
    assert code == 2
    assert str(damaged) in err
    assert "not a readable gateway database" in err
    assert digest(damaged) == before
    assert side_files(damaged) == []
    with pytest.raises(TraceError, match="not a database file"):
        trace_batch(tmp_path, "A-100")


@pytest.mark.parametrize(
    "batch",
    ["", " A-100", "A-100 ", "A" * (MAX_BATCH + 1), "A\x1b[2J", "A\nB", "X" * 100_000],
)
def test_a_hostile_batch_argument_is_refused_naming_it(db: Path, batch: str) -> None:
    code, out, err = run("trace", batch, "--db", str(db))
    assert code == 2
    assert out == ""
    assert f"must be 1 to {MAX_BATCH} printable characters" in err
    assert repr(batch[: MAX_BATCH + 1]) in err
    assert len(err) < 400  # a long one is named by its start and its length
    if len(batch) > MAX_BATCH:
        assert f"({len(batch)} characters given)" in err


# ---------------------------------------------------------------------------- after retention


def same_facts(t: Trace) -> dict[str, Any]:
    """The facts both sources hold: the operation's status, and when a batch still loaded at
    its end was taken off, are known from its row only."""
    doc = t.payload()
    for load in doc["used"]["loads"]:
        load.pop("operation_stored")
        if load["replaced_by"] is None:
            load.pop("until")
    for p in doc["produced"]:
        p.pop("status")
    doc.pop("database")
    doc["retention"].pop("oldest_event_at")
    return doc


async def test_once_retention_deleted_the_rows_the_events_still_answer(tmp_path: Path) -> None:
    db = tmp_path / "edge.db"
    clocks = Clocks()
    # The events are kept longer than the rows of what left memory.
    policy = RetentionPolicy(
        finished_in_memory_h=24,
        finished_in_memory_max=None,
        finished_days=1,
        journal_days=400,
        checkpoint_interval_s=3600,
        min_free_mb=0,
    )
    async with running(db, clocks) as engine:
        story = await work(engine, clocks)
        # Read beside the running engine (its write-ahead log is there).
        second = engine.wc.confirmations[f"{OP}#2"]
        await engine.submit(ConfirmationResult(second.idem_key, ResultStatus.POSTED, engine.now()))
        assert (db.parent / "edge.db-wal").exists()
        with_rows = {b: await asyncio.to_thread(trace_batch, db, b) for b in BATCHES}
        rows = await engine.outbox_pending(100_000, 0)
        await engine.outbox_mark([r.seq for r in rows], [], ())
        for _ in range(4 * 24):
            clocks.advance(DAY_MS // 24)
            await engine.maintenance_step(policy)
        left = await engine.run_store(
            lambda: engine.store.conn.execute(
                "SELECT (SELECT COUNT(*) FROM operation), (SELECT COUNT(*) FROM confirmation)"
            ).fetchone()
        )
    assert tuple(left) == (0, 0)  # the rows are gone, the events stay
    for batch in BATCHES:
        t = trace_batch(db, batch)
        assert t.found, batch
        assert same_facts(t) == same_facts(with_rows[batch]), batch
    a = trace_batch(db, "A-100")
    assert [(x.until, x.replaced_by, x.operation_stored) for x in a.loads] == [
        (story.loaded_b, "B-200", False)
    ]
    b = trace_batch(db, "B-200")
    # When B was taken off is not known without the row; the final confirmation is posted now.
    assert [(x.until, x.replaced_by) for x in b.loads] == [(None, None)]
    assert [c.erp_status for c in b.consumed] == ["posted", "posted"]
    [p] = trace_batch(db, "FG-0815").produced
    assert (p.status, [c.yield_qty for c in p.confirmations]) == (None, [16, 4])
    code, out, _ = run("trace", "B-200", "--db", str(db))
    assert code == 0
    assert "until not known" in out


BATCHES = ("A-100", "B-200", "FG-0815", "L-1")
