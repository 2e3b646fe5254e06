"""The counters' time series (``_historian/counter/...``): at most one value per interval for
each operation and counter, the latest winning, the last always sent, business messages never
held; by hand on :class:`CounterSeries` and through the real engine and store."""

from __future__ import annotations

import contextlib
import json
from decimal import Decimal
from pathlib import Path

from edge.domain.inputs import Action, CounterReading, DispatchList, ReportScrap, Tick, Transition
from edge.domain.model import OperationKey, OperationSpec, Tally
from edge.sync import messages
from edge.sync.messages import CounterSeries
from tests.engine.helpers import spec
from tests.engine.test_retention_engine import Clocks, running

OP = "4711/0020"


class _Op:
    """What the series reads of an operation: its key and its counts."""

    def __init__(self, key: str, good: int, scrap: int = 0) -> None:
        self.key = OperationKey.parse(key)
        self.counted = Tally(Decimal(good), {"S01": Decimal(scrap)} if scrap else {})


def values(msgs: list[messages.OutboxMessage]) -> list[tuple[str, object, int]]:
    out = []
    for m in msgs:
        body = json.loads(m.payload)
        out.append((m.topic, body["value"], body["timestamp_ms"]))
    return out


def test_one_value_per_interval_the_latest_winning_and_stamped_when_reached() -> None:
    series = CounterSeries(1000)
    first = series.changed([_Op(OP, 1)], at_wall_ms=10_000, mono_ms=0)  # type: ignore[list-item]
    assert values(first) == [
        ("_historian/counter/good", 1, 10_000),
        ("_historian/counter/scrap", 0, 10_000),
    ]
    assert not series.changed([_Op(OP, 2)], 10_100, 100)  # type: ignore[list-item]
    assert not series.changed([_Op(OP, 3)], 10_200, 200)  # type: ignore[list-item]
    assert series.held == 1
    assert not series.due(999)
    assert series.due(1000)
    assert values(series.flush(1000)) == [("_historian/counter/good", 3, 10_200)]
    assert series.held == 0
    # a value back where it was sent is nothing to say
    assert not series.changed([_Op(OP, 4)], 10_300, 1100)  # type: ignore[list-item]
    assert not series.changed([_Op(OP, 3)], 10_400, 1200)  # type: ignore[list-item]
    assert series.held == 0
    # an operation that completed in between: its held value still goes out when due
    assert not series.changed([_Op(OP, 9)], 10_500, 1300)  # type: ignore[list-item]
    assert values(series.changed([], 12_000, 2000)) == [("_historian/counter/good", 9, 10_500)]


def test_interval_zero_sends_every_change_and_release_lets_everything_out() -> None:
    series = CounterSeries(0)
    for n in range(1, 4):
        msgs = series.changed([_Op(OP, n)], n, n)  # type: ignore[list-item]
        assert [v for t, v, _ in values(msgs) if t.endswith("good")] == [n]
    held = CounterSeries(60_000)
    held.changed([_Op(OP, 1)], 0, 0)  # type: ignore[list-item]
    held.changed([_Op(OP, 2)], 1, 1)  # type: ignore[list-item]
    held.release()
    assert held.due(2)
    assert values(held.flush(2)) == [("_historian/counter/good", 2, 1)]


def test_an_idle_tick_sends_only_what_waited_a_whole_interval() -> None:
    series = CounterSeries(1000)
    series.changed([_Op(OP, 1)], 0, 0)  # type: ignore[list-item]
    assert not series.changed([_Op(OP, 2)], 900, 900)  # type: ignore[list-item]
    # the tick at 1.5 s: the value waited 0.6 s only; the next part's commit will carry it
    assert not series.changed([_Op(OP, 2)], 1500, 1500, idle=True)  # type: ignore[list-item]
    assert values(series.changed([_Op(OP, 3)], 1900, 1900)) == [
        ("_historian/counter/good", 3, 1900)
    ]
    # a counter that stopped: the tick a whole interval after it was held sends it
    assert not series.changed([_Op(OP, 4)], 2100, 2100)  # type: ignore[list-item]
    assert not series.changed([_Op(OP, 4)], 3000, 3000, idle=True)  # type: ignore[list-item]
    assert values(series.changed([_Op(OP, 4)], 3100, 3100, idle=True)) == [  # type: ignore[list-item]
        ("_historian/counter/good", 4, 2100)
    ]


def test_forget_and_clear() -> None:
    series = CounterSeries(1000)
    series.changed([_Op(OP, 1), _Op("4711/0030", 1)], 0, 0)  # type: ignore[list-item]
    assert len(series) == 4
    series.forget(lambda key: str(key) == OP)
    assert len(series) == 2
    series.clear()
    assert len(series) == 0
    # after a clear (a failed commit) the values go out again
    assert len(series.changed([_Op(OP, 1)], 0, 10)) == 2  # type: ignore[list-item]


def historian(db: Path, topic: str = "_historian/counter/good") -> list[object]:
    import sqlite3

    with contextlib.closing(sqlite3.connect(db)) as conn:
        rows = conn.execute("SELECT payload FROM outbox WHERE topic = ? ORDER BY seq", (topic,))
        return [json.loads(r[0])["value"] for r in rows]


async def test_a_fast_counter_through_the_engine_one_row_a_second_and_the_last_value(
    tmp_path: Path,
) -> None:
    db = tmp_path / "edge.db"
    clocks = Clocks()
    op = OperationSpec("4711", "0020", "FG-1", Decimal(100_000))
    async with running(db, clocks, historian_interval_ms=1000) as engine:
        now = engine.now
        await engine.submit(DispatchList(1, (op,), now()))
        await engine.submit(Transition(Action.START_PRODUCTION, OP, "operator:7", now()))
        for value in range(1, 101):  # 100 changes in a second, each its own commit
            clocks.advance(10)
            assert (await engine.submit(CounterReading("good", value, now()))).accepted
        commits = engine.stats.commits
        sent = historian(db)
        assert sent[0] == 0  # the start: the pipeline is there
        assert len(sent) <= 3  # not one per commit
        # scrap is reported meanwhile: a business message is never held
        await engine.submit(ReportScrap(Decimal(2), "S03", "operator:7", now(), op=OP))
        scrap_events = [
            r for r in await engine.outbox_pending(1000, 0) if r.kind == "scrap_reported"
        ]
        assert len(scrap_events) == 1
        # nothing else comes; the next tick after the interval sends the last value
        clocks.advance(1500)
        await engine.submit(Tick(now()))
        good = engine.wc.operations[OperationKey.parse(OP)].counted.good
        assert good > 90  # (the first reading is the counter's baseline)
        assert historian(db)[-1] == good
        assert engine.stats.commits == commits + 2  # the scrap and the tick that carried it
        assert historian(db, "_historian/counter/scrap")[-1] == 2
        # an idle tick later commits nothing
        clocks.advance(1500)
        await engine.submit(Tick(now()))
        assert engine.stats.commits == commits + 2


async def test_what_is_held_when_the_engine_stops_goes_out(tmp_path: Path) -> None:
    db = tmp_path / "edge.db"
    clocks = Clocks()
    async with running(db, clocks, historian_interval_ms=60_000) as engine:
        now = engine.now
        await engine.submit(DispatchList(1, (spec(),), now()))
        await engine.submit(Transition(Action.START_PRODUCTION, OP, "operator:7", now()))
        for value in (5, 6, 7):
            clocks.advance(100)
            await engine.submit(CounterReading("good", value, now()))
        good = engine.wc.operations[OperationKey.parse(OP)].counted.good
        assert good > 0
        assert historian(db)[-1] != good
    assert historian(db)[-1] == good
