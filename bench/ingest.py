"""Durable events per second through the engine: group commit vs. one commit per event.

    python bench/ingest.py            # 5 runs of each, medians, printed as a table
    python bench/ingest.py --runs 9 --events 40000

Each run opens a fresh SQLite file (WAL, synchronous=FULL), dispatches and starts one operation,
then 64 concurrent producers submit counter readings and wait until each is acknowledged, i.e.
durable. In "group" mode each producer hands over 16 readings at a time, as a subscription's
data-change notification or a poll of several registers does, and the engine commits what
arrived while the previous transaction was being written (up to 1000 readings) in one
transaction: the engine's defaults. In "per-event" mode (the
baseline) every reading is submitted alone and committed alone (max_batch=1): one transaction
and one fsync per event. The modes alternate within one run so machine noise hits both alike.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import contextlib

from edge.domain.inputs import (
    Action,
    CounterReading,
    DispatchList,
    Input,
    Transition,
)
from edge.engine import Engine
from edge.logging import configure_logging
from edge.store.store import Store
from edge.sync import messages
from tests.engine.helpers import rules, spec

PRODUCERS = 64
SOURCE_BATCH = 16


async def one_run(events: int, *, grouped: bool) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        engine = await Engine.open(
            Store(Path(tmp) / "bench.db"),
            rules(),
            max_batch=1000 if grouped else 1,
            batch_window_ms=0.0,
            outbound=messages,
        )
        task = asyncio.create_task(engine.run(tick_interval_s=None))
        op = spec(target=10**9)
        await engine.submit(DispatchList(1, (op,), engine.now()))
        await engine.submit(
            Transition(Action.START_PRODUCTION, str(op.key), "operator:1", engine.now())
        )
        await engine.submit(CounterReading("good", 0, engine.now()))
        size = SOURCE_BATCH if grouped else 1
        per_producer = events // (PRODUCERS * size) * size
        counter = iter(range(1, per_producer * PRODUCERS + 1))

        async def producer() -> None:
            for _ in range(per_producer // size):
                readings: list[Input] = [
                    CounterReading("good", next(counter), engine.now()) for _ in range(size)
                ]
                outcomes = await engine.submit_many(readings)
                assert all(o.accepted for o in outcomes)

        start = time.perf_counter()
        await asyncio.gather(*(producer() for _ in range(PRODUCERS)))
        elapsed = time.perf_counter() - start
        good = engine.wc.operations[op.key].counted.good
        assert good == per_producer * PRODUCERS, good
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await engine.close()
        return per_producer * PRODUCERS / elapsed


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--events", type=int, default=20000, help="per group-commit run")
    parser.add_argument(
        "--baseline-events", type=int, default=2000, help="per one-commit-per-event run"
    )
    args = parser.parse_args()
    configure_logging("warning", json=True)
    group: list[float] = []
    single: list[float] = []
    for i in range(args.runs):
        group.append(await one_run(args.events, grouped=True))
        single.append(await one_run(args.baseline_events, grouped=False))
        print(
            f"run {i + 1}: group {group[-1]:9,.0f}/s   per-event {single[-1]:7,.0f}/s", flush=True
        )
    g, s = statistics.median(group), statistics.median(single)
    print()
    print("| mode                         | durable events/s (median) | runs |")
    print("|------------------------------|---------------------------|------|")
    print(f"| group commit (<=1000/tx)     | {g:25,.0f} | {len(group):4d} |")
    print(f"| one commit per event         | {s:25,.0f} | {len(single):4d} |")
    print(f"| ratio                        | {g / s:24.1f}x |      |")


if __name__ == "__main__":
    asyncio.run(main())
