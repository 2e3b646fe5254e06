"""Finished operations in memory and at start-up, with and without their leaving memory.

    python bench/finished.py                     # 50 days x 60 operations (~5 min here)
    python bench/finished.py --days 10 --per-day 20 --json out.json

Builds two databases through the real engine and store (only the clocks are the bench's):
``days`` days of ``per_day`` operations each, one after the other (dispatched, run, counted,
a stop with its reason, completed, the final confirmation posted by the relay, every message
taken by the broker), the maintenance every six hours of simulated time. One with
``[retention] finished_in_memory_h = 24``, one with 8760 (a year: nothing leaves within the
run, which is how every version before this one behaved). Then, in a fresh interpreter per
database and three times each, the start as the daemon does it (``Store.open`` and
``Store.load``): the medians of its time and of the RSS it added, the operations, stops and
confirmations it loaded, and the size of the newest checkpoint.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import statistics
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import structlog

from edge.clock import TimeSource
from edge.domain.inputs import (
    Action,
    ConfirmationResult,
    CounterReading,
    DispatchList,
    MachineState,
    MachineStateChanged,
    ResultStatus,
    SetStopReason,
    Transition,
)
from edge.domain.model import OperationSpec
from edge.domain.rules import (
    CountKind,
    CountSource,
    MasterData,
    SignalType,
    StopReason,
    WorkCenterRules,
)
from edge.engine import Engine
from edge.store.retention import RetentionPolicy
from edge.store.store import Store
from edge.sync import messages

DAY_MS = 86_400_000
START_MS = 1_780_000_000_000
RULES = WorkCenterRules(
    edge_id="bench-01",
    work_center="WC1",
    sources=(CountSource("good", CountKind.GOOD, SignalType.ABSOLUTE, bits=32),),
    master_data=MasterData(stop_reasons=(StopReason("M01", "material"),)),
)

_START = """
import json, sys, time
sys.path.insert(0, {root!r})
from edge.store.store import Store
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
before = rss()
t = time.perf_counter()
s = Store({db!r})
s.open(boot=False)
wc = s.load()
took = time.perf_counter() - t
row = s.conn.execute("SELECT length(docs) FROM checkpoint ORDER BY id DESC LIMIT 1").fetchone()
print(json.dumps({{"load_ms": took * 1000, "rss_mb": rss() - before,
    "ops": len(wc.operations), "stops": len(wc.stops), "confirmations": len(wc.confirmations),
    "checkpoint_bytes": row[0] if row else 0, "stored_ops": s.conn.execute(
    "SELECT COUNT(*) FROM operation").fetchone()[0]}}))
"""


class Clocks:
    def __init__(self) -> None:
        self.wall_ms = START_MS
        self.up_ms = 1_000

    def advance(self, ms: int) -> None:
        self.wall_ms += ms
        self.up_ms += ms

    def source(self) -> TimeSource:
        return TimeSource(
            wall_ns=lambda: self.wall_ms * 1_000_000,
            mono_ns=lambda: self.up_ms * 1_000_000,
            boottime_ns=lambda: self.up_ms * 1_000_000,
            boot_id=lambda: "bench",
            ntp_synchronized=lambda: True,
            floor_ms=lambda: START_MS - 365 * DAY_MS,
        )


@contextlib.asynccontextmanager
async def running(
    db: Path, clocks: Clocks, rules: WorkCenterRules = RULES
) -> AsyncIterator[Engine]:
    engine = await Engine.open(Store(db), rules, outbound=messages, time_source=clocks.source())
    task = asyncio.create_task(engine.run(tick_interval_s=None))
    try:
        yield engine
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await engine.close()


async def build(db: Path, days: int, per_day: int, kept_h: float) -> int:
    clocks = Clocks()
    # The year-long variant is how every version before behaved: no cap on the count either.
    cap = None if kept_h >= 8760 else RetentionPolicy().finished_in_memory_max
    policy = RetentionPolicy(finished_in_memory_h=kept_h, finished_in_memory_max=cap, min_free_mb=0)
    counter = 1000
    async with running(db, clocks) as engine:
        now = engine.now
        await engine.submit(CounterReading("good", counter, now()))
        for day in range(days):
            specs = tuple(
                OperationSpec(f"{day:04d}{j:03d}", "0010", "FG-1", Decimal(10), std_cycle_s=1.0)
                for j in range(per_day)
            )
            await engine.submit(DispatchList(day + 1, specs, now()))
            for spec in specs:
                ref = str(spec.key)
                await engine.submit(Transition(Action.START_PRODUCTION, ref, "operator:1", now()))
                for state in (MachineState.DOWN, MachineState.RUNNING):
                    clocks.advance(200_000)  # a stop longer than a micro-stop
                    counter += 5
                    await engine.submit(CounterReading("good", counter, now()))
                    await engine.submit(MachineStateChanged("good", state, now()))
                await engine.submit(SetStopReason("M01", "operator:1", now()))
                await engine.submit(Transition(Action.COMPLETE, ref, "operator:1", now()))
            rows = await engine.outbox_pending(1_000_000, 0)
            await engine.outbox_mark([r.seq for r in rows], [], ())
            for conf in list(engine.wc.confirmations.values()):
                if conf.status.value == "awaiting_result":
                    await engine.submit(
                        ConfirmationResult(conf.idem_key, ResultStatus.POSTED, now())
                    )
            for _ in range(4):
                clocks.advance(DAY_MS // 4)
                await engine.maintenance_step(policy)
        return len(engine.wc.operations)


def start(db: Path) -> dict[str, float]:
    root = str(Path(__file__).resolve().parents[1])
    out = subprocess.run(
        [sys.executable, "-c", _START.format(root=root, db=str(db))],
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--days", type=int, default=50)
    parser.add_argument("--per-day", type=int, default=60)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, kept_h in (("leave after 24 h", 24.0), ("stay (8760 h)", 8760.0)):
            db = Path(tmp) / f"{int(kept_h)}.db"
            asyncio.run(build(db, args.days, args.per_day, kept_h))
            runs = [start(db) for _ in range(3)]
            results[label] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    total = args.days * args.per_day
    print(f"{total} finished operations over {args.days} days, start-up medians of 3:")
    print(
        "| finished operations | loaded ops / stops / confs | load ms | RSS added MB | "
        "newest checkpoint KB | rows stored |"
    )
    print("|---|---|---|---|---|---|")
    for label, r in results.items():
        print(
            f"| {label} | {r['ops']:.0f} / {r['stops']:.0f} / {r['confirmations']:.0f} | "
            f"{r['load_ms']:.0f} | {r['rss_mb']:.1f} | {r['checkpoint_bytes'] / 1024:.0f} | "
            f"{r['stored_ops']:.0f} |"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
