"""A simulated year on one gateway: database size, rows, memory and start-up, month by month.

    python bench/year.py                              # 14 months (~10 min here)
    python bench/year.py --months 3 --png year.png --json year.json
    python bench/year.py --finished-days 60           # a shorter retention, flat sooner
    python bench/year.py --months 4 --tracemalloc 10  # where Python's memory grew, by line

The real engine and store with the daemon's retention (``[retention]`` defaults unless given);
only the clocks are the bench's, so a year passes in minutes. Each simulated day: three shifts
of eight hours, ``orders`` a month (about 6.7 a day), each one operation dispatched, set up,
run and completed, its parts made at a cycle of 2-20 s, two to four stops with their reasons,
partial confirmations at every shift end, every message taken by the broker and every
confirmation posted by the relay. For one hour a day the counter runs at 1,000 changes/s,
delivered as the OPC UA source delivers it (``--burst-hz`` readings a second, the default
publishing interval of 100 ms). Between bursts the source's readings come every ``--reading-s``
(the parts made in between, counted by difference as the engine counts an absolute counter).
The maintenance (checkpoint, retention, finished operations leaving memory) runs every 30
simulated minutes, as often as the daemon's wall clock would.

At the end of each month: the database's size (with its ``-wal``), the rows of each table, the
RSS of the process running the engine, and the start-up as the daemon does it (``Store.open``
and ``Store.load`` in a fresh interpreter: its time and the RSS it added). ``--png`` plots them
(matplotlib, the ``plot`` extra). ``--tracemalloc N`` traces Python's allocations and prints,
after each month, the N source lines whose live memory grew most since the end of month 1
(several times slower; RSS then includes the tracing itself).

Targets (issue: years on an SD card): size and RSS flat after the first retention period,
start-up under 2 s at every month, nothing unfinished deleted (checked at the end: every
operation still open and every confirmation not yet final is stored).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import sqlite3
import sys
import tempfile
import time
import tracemalloc
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import structlog  # noqa: E402

from bench.finished import DAY_MS, Clocks, running, start  # noqa: E402
from edge.domain.clock import Instant  # noqa: E402
from edge.domain.inputs import (  # noqa: E402
    Action,
    ConfirmationResult,
    CounterReading,
    DispatchList,
    Input,
    MachineState,
    MachineStateChanged,
    ResultStatus,
    SetStopReason,
    Transition,
)
from edge.domain.model import OperationSpec  # noqa: E402
from edge.domain.rules import (  # noqa: E402
    CountKind,
    CountSource,
    MasterData,
    Shift,
    SignalType,
    StopReason,
    WorkCenterRules,
)
from edge.engine import Engine  # noqa: E402
from edge.store.retention import RetentionPolicy  # noqa: E402

HOUR_MS = 3_600_000
MAINTENANCE_MS = 30 * 60_000
BURST_RATE = 1000  # counter changes a second during the burst hour
REASONS = ("M01", "M02", "E01", "Q01")
RULES = WorkCenterRules(
    edge_id="year-01",
    work_center="WC1",
    timezone="Europe/Berlin",
    sources=(CountSource("good", CountKind.GOOD, SignalType.ABSOLUTE, bits=32),),
    shifts=(
        Shift("early", 6 * 60, 8 * 60, breaks=(("lunch", 10 * 60, 30),)),
        Shift("late", 14 * 60, 8 * 60, breaks=(("dinner", 18 * 60, 30),)),
        Shift("night", 22 * 60, 8 * 60, breaks=(("night", 2 * 60, 30),)),
    ),
    master_data=MasterData(
        stop_reasons=tuple(
            StopReason(code, text)
            for code, text in zip(
                REASONS, ("material", "tool", "electrical", "quality"), strict=True
            )
        )
    ),
)


@dataclass
class Month:
    month: int
    days: int
    db_mb: float
    rows: dict[str, int]
    rss_mb: float
    load_ms: float
    load_rss_mb: float
    ops_in_memory: int
    stops_in_memory: int
    shifts_in_memory: int
    inputs: int
    took_s: float


@dataclass
class Run:
    months: list[Month] = field(default_factory=list)
    unfinished_missing: int = 0


def db_mb(db: Path) -> float:
    size = sum(p.stat().st_size for p in (db, Path(f"{db}-wal")) if p.exists())
    return size / 2**20


def rows(db: Path) -> dict[str, int]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        ]
        return {t: conn.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0] for t in tables}
    finally:
        conn.close()


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    return 0.0


class Day:
    """One simulated day's inputs, submitted in batches as the clock moves."""

    def __init__(
        self, engine: Engine, clocks: Clocks, rnd: random.Random, args: argparse.Namespace
    ):
        self.engine = engine
        self.clocks = clocks
        self.rnd = rnd
        self.args = args
        self.counter = 0
        self.pending: list[Input] = []
        self.inputs = 0
        self.next_maintenance_ms = clocks.wall_ms + MAINTENANCE_MS
        self.policy = args.policy

    def now(self) -> Instant:
        return self.engine.now()

    async def flush(self) -> None:
        if self.pending:
            self.inputs += len(self.pending)
            batch, self.pending = self.pending, []
            await self.engine.submit_many(batch)

    async def advance(self, ms: int) -> None:
        """The clock moves ``ms``; the maintenance runs whenever its interval passed."""
        end = self.clocks.wall_ms + ms
        while self.next_maintenance_ms <= end:
            self.clocks.advance(self.next_maintenance_ms - self.clocks.wall_ms)
            await self.flush()
            await self.settle()
            await self.engine.maintenance_step(self.policy)
            self.next_maintenance_ms += MAINTENANCE_MS
        self.clocks.advance(end - self.clocks.wall_ms)

    async def settle(self) -> None:
        """The broker took every message; the relay posted every confirmation waiting."""
        rows_ = await self.engine.outbox_pending(1_000_000, 0)
        if rows_:
            await self.engine.outbox_mark([r.seq for r in rows_], [], ())
        answers: list[Input] = [
            ConfirmationResult(conf.idem_key, ResultStatus.POSTED, self.now())
            for conf in list(self.engine.wc.confirmations.values())
            if conf.status.value == "awaiting_result"
        ]
        if answers:
            self.inputs += len(answers)
            await self.engine.submit_many(answers)

    async def produce(self, ms: int, cycle_s: float) -> None:
        """``ms`` of running: a reading every ``reading_s`` with the parts made since."""
        step = round(self.args.reading_s * 1000)
        made = 0.0
        left = ms
        while left > 0:
            dt = min(step, left)
            await self.advance(dt)
            left -= dt
            made += dt / 1000 / cycle_s
            whole = int(made)
            if whole:
                made -= whole
                self.counter = (self.counter + whole) % 2**32
            self.pending.append(CounterReading("good", self.counter, self.now()))
            if len(self.pending) >= 500:
                await self.flush()

    async def burst(self) -> None:
        """An hour at 1,000 changes a second, read ``burst_hz`` times a second."""
        hz = self.args.burst_hz
        per = max(1, round(BURST_RATE / hz))
        step = round(1000 / hz)
        for _ in range(round(3600 * hz)):
            await self.advance(step)
            self.counter = (self.counter + per) % 2**32
            self.pending.append(CounterReading("good", self.counter, self.now()))
            if len(self.pending) >= 2000:
                await self.flush()

    async def stop(self) -> None:
        self.pending.append(MachineStateChanged("good", MachineState.DOWN, self.now()))
        await self.advance(self.rnd.randint(5, 30) * 60_000)
        self.pending.append(SetStopReason(self.rnd.choice(REASONS), "operator:7", self.now()))
        self.pending.append(MachineStateChanged("good", MachineState.RUNNING, self.now()))

    async def run(self, day: int, orders: int) -> None:
        """``orders`` operations one after another over the day's 24 hours."""
        specs = []
        for j in range(orders):
            burst = j == 0
            cycle = 0.001 if burst else self.rnd.uniform(2.0, 20.0)
            specs.append(
                OperationSpec(
                    f"{400_000_000 + day * 100 + j}",
                    "0010",
                    f"FG-{self.rnd.randint(1, 40)}",
                    Decimal(1_000_000),
                    std_setup_s=900.0,
                    std_cycle_s=cycle,
                )
            )
        self.pending.append(DispatchList(day + 1, tuple(specs), self.now()))
        share = DAY_MS // max(1, orders)
        for j, spec in enumerate(specs):
            ref = str(spec.key)
            started = self.clocks.wall_ms
            self.pending.append(Transition(Action.START_SETUP, ref, "operator:7", self.now()))
            await self.advance(15 * 60_000)
            self.pending.append(Transition(Action.START_PRODUCTION, ref, "operator:7", self.now()))
            if j == 0:
                await self.burst()
            stops = self.rnd.randint(2, 4)
            for _ in range(stops):
                left = share - (self.clocks.wall_ms - started)
                await self.produce(max(60_000, left // (stops + 1)), spec.std_cycle_s or 10.0)
                await self.stop()
            left = share - (self.clocks.wall_ms - started)
            await self.produce(max(60_000, left), spec.std_cycle_s if j else 10.0)
            self.pending.append(Transition(Action.COMPLETE, ref, "operator:7", self.now()))
            await self.flush()


def orders_today(rnd: random.Random, args: argparse.Namespace) -> int:
    """``orders`` a month (of 30 days) spread over the days (a day's share rounded at random)."""
    share = args.orders / 30
    return int(share) + (1 if rnd.random() < share - int(share) else 0)


async def simulate(db: Path, args: argparse.Namespace) -> Run:
    clocks = Clocks()
    rnd = random.Random(args.seed)
    run = Run()
    day_no = 0
    started = time.perf_counter()
    baseline: tracemalloc.Snapshot | None = None
    async with running(db, clocks, RULES) as engine:
        day = Day(engine, clocks, rnd, args)
        for month in range(1, args.months + 1):
            for _ in range(args.month_days):
                await day.run(day_no, orders_today(rnd, args))
                day_no += 1
            await day.flush()
            await day.settle()
            load = start(db)
            run.months.append(
                Month(
                    month=month,
                    days=day_no,
                    db_mb=round(db_mb(db), 2),
                    rows=rows(db),
                    rss_mb=round(rss_mb(), 1),
                    load_ms=round(load["load_ms"], 1),
                    load_rss_mb=round(load["rss_mb"], 1),
                    ops_in_memory=len(engine.wc.operations),
                    stops_in_memory=len(engine.wc.stops),
                    shifts_in_memory=len(engine.wc.shift_book.shifts),
                    inputs=day.inputs,
                    took_s=round(time.perf_counter() - started, 1),
                )
            )
            print(line(run.months[-1]), flush=True)
            if args.tracemalloc:
                baseline = grown(baseline, args.tracemalloc)
        run.unfinished_missing = unfinished_missing(db, engine)
    return run


def grown(baseline: tracemalloc.Snapshot | None, top: int) -> tracemalloc.Snapshot:
    """Print the ``top`` lines whose live memory grew most since ``baseline`` (the end of
    month 1); the first call only takes that baseline."""
    snap = tracemalloc.take_snapshot().filter_traces(
        (tracemalloc.Filter(False, tracemalloc.__file__),)
    )
    if baseline is None:
        traced = sum(s.size for s in snap.statistics("filename")) / 1e6
        print(f"  tracemalloc: {traced:.1f} MB live (the baseline)", flush=True)
        return snap
    stats = snap.compare_to(baseline, "lineno")
    total = sum(s.size_diff for s in stats) / 1e6
    print(f"  tracemalloc: {total:+.2f} MB live since month 1; most grown:", flush=True)
    for stat in stats[:top]:
        frame = stat.traceback[0]
        print(
            f"    {stat.size_diff / 1e3:+9.1f} kB {stat.count_diff:+7d} blocks  "
            f"{frame.filename}:{frame.lineno}",
            flush=True,
        )
    return baseline


def unfinished_missing(db: Path, engine: Engine) -> int:
    """What the engine still needs (open operations, confirmations not final, unsent
    messages) and the database no longer holds."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        stored_ops = {r[0] for r in conn.execute("SELECT key FROM operation")}
        stored_confs = {r[0] for r in conn.execute("SELECT key FROM confirmation")}
    finally:
        conn.close()
    missing = 0
    for key, op in engine.wc.operations.items():
        if not op.status.finished and str(key) not in stored_ops:
            missing += 1
    for conf_id, conf in engine.wc.confirmations.items():
        if conf.status.value != "posted" and conf_id not in stored_confs:
            missing += 1
    return missing


HEADER = (
    "| month | days | DB MB | journal rows | outbox rows | operations stored | RSS MB | "
    "start-up ms | start-up RSS MB | ops / stops / shifts in memory | inputs | run s |"
)


def line(m: Month) -> str:
    return (
        f"| {m.month} | {m.days} | {m.db_mb:.1f} | {m.rows.get('journal', 0)} | "
        f"{m.rows.get('outbox', 0)} | {m.rows.get('operation', 0)} | {m.rss_mb:.1f} | "
        f"{m.load_ms:.0f} | {m.load_rss_mb:.1f} | "
        f"{m.ops_in_memory} / {m.stops_in_memory} / {m.shifts_in_memory} | {m.inputs} | "
        f"{m.took_s:.0f} |"
    )


def plot(run: Run, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    months = [m.month for m in run.months]
    fig, axes = plt.subplots(2, 2, figsize=(10, 7), sharex=True)
    series = (
        ("database (MB, with -wal)", [m.db_mb for m in run.months]),
        ("RSS of the running engine (MB)", [m.rss_mb for m in run.months]),
        ("start-up: Store.open + load (ms)", [m.load_ms for m in run.months]),
        ("operations in memory / stored", None),
    )
    for ax, (title, values) in zip(axes.flat, series, strict=True):
        if values is None:
            ax.plot(months, [m.ops_in_memory for m in run.months], marker="o", label="in memory")
            ax.plot(
                months,
                [m.rows.get("operation", 0) for m in run.months],
                marker="s",
                label="stored",
            )
            ax.legend()
        else:
            ax.plot(months, values, marker="o")
            ax.set_ylim(bottom=0)
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel("simulated month")
    axes.flat[2].axhline(2000, color="red", linestyle="--", linewidth=1)
    fig.suptitle("bench/year.py: one gateway, simulated months")
    fig.tight_layout()
    fig.savefig(png, dpi=100)


def policy(args: argparse.Namespace) -> RetentionPolicy:
    base = RetentionPolicy(min_free_mb=0)
    if args.finished_days is not None:
        base = RetentionPolicy(min_free_mb=0, finished_days=args.finished_days)
    return base


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--months", type=int, default=14)
    parser.add_argument("--month-days", type=int, default=30, help="simulated days a month")
    parser.add_argument("--orders", type=int, default=200, help="operations a month")
    parser.add_argument("--reading-s", type=float, default=30.0)
    parser.add_argument("--burst-hz", type=float, default=10.0)
    parser.add_argument("--finished-days", type=float, help="[retention] finished_days")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--png", type=Path)
    parser.add_argument(
        "--tracemalloc", type=int, default=0, metavar="N", help="print the N lines grown most"
    )
    args = parser.parse_args()
    if args.tracemalloc:
        tracemalloc.start(1)
    args.policy = policy(args)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    with tempfile.TemporaryDirectory() as tmp:
        print(HEADER)
        print("|---" * (HEADER.count("|") - 1) + "|")
        run = asyncio.run(simulate(Path(tmp) / "year.db", args))
    print(f"unfinished records missing from the database: {run.unfinished_missing}")
    if args.json:
        args.json.write_text(json.dumps(asdict(run), indent=2))
    if args.png:
        plot(run, args.png)
        print(f"plot: {args.png}")


if __name__ == "__main__":
    main()
