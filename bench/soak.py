"""The whole chain for a long time under steady production: does anything grow or leak?

    python bench/soak.py --minutes 60 --rate 100 --csv soak.csv --png soak.png --json soak.json
    python bench/soak.py --minutes 10 --rate 100 --workdir DIR   # keep every log and database
    python bench/soak.py --minutes 0.5 --rate 20 --sample-s 2    # the smoke test's run

The chain of ``tests/reliability/chain.py``, each part its own process on free loopback ports:
the OPC UA machine simulator, mosquitto, the gateway (``edge run``), two ERP relays sharing one
ledger in a private PostgreSQL cluster (``tests.pg.PostgresCluster``, run as an unprivileged
user when this runs as root), and the SAP stand-in. Central's dispatcher and the operator are
played as in the reliability tests (a dispatch list over MQTT, the panel's commands).

Production: one operation after the other, each dispatched on its own (a new list version),
started, run and completed, until ``--minutes`` have passed (the last one is cut short to
end on time). The machine makes a part every ``1 / --rate`` s (its cycle, jitter 30 %), so its
counters change ``--rate`` times a second while it runs; each operation lasts ``--op-s`` s of
running and the machine stops with an alarm ``--stops`` times in it (0.6-1.2 s each). The
gateway confirms partially every ``--every-good`` good parts and finally at completion; the
relays post every confirmation in SAP.

Sampled every ``--sample-s`` s: the gateway's RSS and CPU (its process tree; 100 % = one core),
its open file descriptors (``/proc/<pid>/fd``), the database's size (the file and its ``-wal``),
the outbox's depth and the engine's input queue (the gateway's ``/metrics``), the parts the
machine made, and the confirmation latency of what was posted since the last sample: from the
confirmation's event time (``ts_event_ms``, when the gateway made it from the machine's count)
to its posting in SAP, as the relay records it in its ledger (``latency_ms``), p50 and p99.

At the end production stops, every confirmation is given time to get its verdict, and the three
ledgers are judged (``tests.reliability.chain.judge``): what the machine made, what the gateway
confirmed, what SAP posted; lost, doubled, and the machine's alarm stops the gateway missed.
Then the daemons get SIGTERM (their exit codes are reported). Growth per hour is the slope of
a least-squares line through the samples after the first fifth of the run (the warm-up).

Outputs: a summary table on stdout; ``--csv`` (a row per sample), ``--json`` (the summary and
every sample), ``--png`` (the samples plotted; matplotlib, the ``plot`` extra). Bounded: every
wait has a limit, and every process started (the chain, the PostgreSQL cluster) is stopped in
``finally``, also on an error, Ctrl-C or SIGTERM. Exit status 0 when nothing was lost, nothing
doubled, every stop seen and the ledgers agree.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import os
import random
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
import types
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this tree's gateway, simulators and test harness

from bench.procfs import cpu_seconds, process_tree, tail, tree_mem_mb  # noqa: E402
from tests.pg import PostgresCluster  # noqa: E402
from tests.reliability.chain import (  # noqa: E402
    Chain,
    ChainFailed,
    Op,
    Schedule,
    Stop,
    expected_stops,
    http,
    judge,
)

FIRST_ORDER = 700000


@dataclass
class Sample:
    t_s: float  # since production began
    gateway_pid: int
    rss_mb: float
    cpu_pct: float  # since the last sample, 100 = one core
    fds: int
    db_mb: float
    wal_mb: float
    outbox: int  # outbox messages not finished (pending + published)
    queue: int  # inputs waiting for the engine's writer
    parts_made: int  # by the machine since it started
    operations: int  # started so far
    posted: int  # confirmations the relays posted (their ledger), so far
    posted_window: int  # ... since the last sample
    latency_p50_ms: float | None  # of those posted since the last sample
    latency_p99_ms: float | None


@dataclass
class Summary:
    command: str
    minutes: float
    rate: float
    every_good: int
    seconds: float = 0.0  # of production
    cycles: int = 0  # machine cycles: parts made, good and scrap
    parts_good: int = 0
    parts_scrap: int = 0
    operations: int = 0
    confirmations: int = 0  # the gateway's, for these operations
    posted: int = 0  # SAP's postings for them
    lost: int = 0
    doubled: int = 0
    orphans: int = 0
    stops_expected: int = 0
    stops_matched: int = 0
    stops_missed: int = 0
    problems: list[str] = field(default_factory=list)
    samples: int = 0
    max_rss_mb: float = 0.0
    rss_first_mb: float = 0.0
    rss_last_mb: float = 0.0
    rss_growth_mb_per_h: float = 0.0
    db_first_mb: float = 0.0
    db_last_mb: float = 0.0
    db_growth_mb_per_h: float = 0.0
    max_fds: int = 0
    fds_first: int = 0
    fds_last: int = 0
    cpu_mean_pct: float = 0.0
    max_outbox: int = 0
    latency_n: int = 0
    latency_p50_ms: float | None = None
    latency_p99_ms: float | None = None
    latency_max_ms: float | None = None
    exit_codes: dict[str, int | None] = field(default_factory=dict)


class Stopped(Exception):
    """SIGTERM: stop, judge nothing, clean up."""


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def slope_per_h(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value) in value per hour; 0 with fewer than 3 points."""
    if len(points) < 3:
        return 0.0
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    if den == 0:
        return 0.0
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den * 3600


def metrics(chain: Chain) -> dict[str, float]:
    """The gateway's /metrics, the lines without labels and the outbox's by state."""
    status, text = http("GET", chain.api + "/metrics", timeout=5)
    out: dict[str, float] = {}
    if status != 200 or not isinstance(text, str):
        return out
    for line in text.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        name, value = line.rsplit(" ", 1)
        try:
            out[name] = float(value)
        except ValueError:
            continue
    return out


def fd_count(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def file_mb(path: Path) -> float:
    try:
        return path.stat().st_size / 1e6
    except OSError:
        return 0.0


class Sampler(threading.Thread):
    """Samples the gateway every ``every`` s until :meth:`halt`."""

    def __init__(self, chain: Chain, every: float, began: float, ops: list[Op]) -> None:
        super().__init__(name="sampler", daemon=True)
        self.chain = chain
        self.every = every
        self.began = began
        self.ops = ops
        self.samples: list[Sample] = []
        self.latencies: list[float] = []
        self.errors: list[str] = []
        self._halt = threading.Event()
        self._last_posted_ms = 0
        self._posted = 0
        self._cpu: tuple[float, float] | None = None
        self._conn: Any = None

    def halt(self) -> None:
        self._halt.set()
        self.join(30)
        if self._conn is not None:
            with contextlib.suppress(Exception):  # a connection that may be broken
                self._conn.close()

    def run(self) -> None:
        while not self._halt.wait(self.every):
            try:
                self.samples.append(self.sample())
            except Exception as exc:  # a sample lost is reported, the soak goes on
                self.errors.append(f"{time.monotonic() - self.began:.0f} s: {exc!r}")

    def posted_since(self) -> list[tuple[int, int]]:
        """(posted_ms, latency_ms) of the relays' postings since the last sample."""
        import psycopg

        if self._conn is None:
            self._conn = psycopg.connect(self.chain.ledger_url, connect_timeout=5, autocommit=True)
        rows = self._conn.execute(
            "SELECT posted_ms, latency_ms FROM relay_ledger WHERE status = 'posted' "
            "AND posted_ms > %s AND latency_ms IS NOT NULL ORDER BY posted_ms",
            (self._last_posted_ms,),
        ).fetchall()
        return [(int(a), int(b)) for a, b in rows]

    def sample(self) -> Sample:
        chain = self.chain
        assert chain.gateway is not None
        assert chain.machine is not None
        pid = chain.gateway.pid
        now = time.monotonic()
        tree = process_tree(pid)
        cpu = sum(cpu_seconds(p) or 0.0 for p in tree)
        cpu_pct = 0.0
        if self._cpu is not None and now > self._cpu[0]:
            cpu_pct = max(0.0, (cpu - self._cpu[1]) / (now - self._cpu[0]) * 100)
        self._cpu = (now, cpu)
        rss, _ = tree_mem_mb(pid)
        m = metrics(chain)
        outbox = int(
            m.get('edge_outbox_messages{state="pending"}', 0)
            + m.get('edge_outbox_messages{state="published"}', 0)
        )
        made = chain.machine.made()
        rows = self.posted_since()
        if rows:
            self._last_posted_ms = rows[-1][0]
        lat = [float(b) for _, b in rows]
        self.latencies.extend(lat)
        self._posted += len(rows)
        return Sample(
            t_s=round(now - self.began, 1),
            gateway_pid=pid,
            rss_mb=round(rss, 2),
            cpu_pct=round(cpu_pct, 1),
            fds=sum(fd_count(p) for p in tree),
            db_mb=round(file_mb(chain.db), 3),
            wal_mb=round(file_mb(chain.db.with_name(chain.db.name + "-wal")), 3),
            outbox=outbox,
            queue=int(m.get("edge_queue_depth", 0)),
            parts_made=made["good"] + made["scrap"],
            operations=len(self.ops),
            posted=self._posted,
            posted_window=len(rows),
            latency_p50_ms=percentile(lat, 0.5),
            latency_p99_ms=percentile(lat, 0.99),
        )


def next_op(rng: random.Random, index: int, args: argparse.Namespace, left_s: float) -> Op:
    """The next operation: ``--op-s`` s of running at ``--rate`` (cut to what is left of the
    soak, at least 40 parts), ``--stops`` alarm stops at random parts of it."""
    lo, hi = args.op_s
    seconds = min(rng.uniform(lo, hi), max(left_s, 40 / args.rate))
    parts = max(40, round(seconds * args.rate))
    n_stops = min(rng.randint(*args.stops), (parts - 10) // 10)
    at = sorted(rng.sample(range(5, parts - 5), n_stops)) if n_stops > 0 else []
    return Op(
        order=str(FIRST_ORDER + index),
        operation="0010",
        parts=parts,
        stops=tuple(
            Stop(a, rng.choice(("E-217", "E-105")), round(rng.uniform(0.6, 1.2), 2)) for a in at
        ),
    )


def soak(args: argparse.Namespace, workdir: Path, pg: PostgresCluster) -> tuple[Summary, Sampler]:
    summary = Summary(
        command=" ".join(["python", "bench/soak.py", *sys.argv[1:]]),
        minutes=args.minutes,
        rate=args.rate,
        every_good=args.every_good,
    )
    pg.start()
    pg.create_database("soak")
    ledger = pg.url("soak")
    rng = random.Random(args.seed)
    ops: list[Op] = []
    with Chain(
        workdir,
        Schedule(args.seed, ()),
        ledger_url=ledger,
        cycle_s=1.0 / args.rate,
        scrap_rate=args.scrap_rate,
        every_good=args.every_good,
        relay_timeout_s=2.0,
        result_timeout_s=6.0,
    ) as chain:
        duration = args.minutes * 60
        began = time.monotonic()
        sampler = Sampler(chain, args.sample_s, began, ops)
        sampler.start()
        try:
            while (left := duration - (time.monotonic() - began)) > 0:
                op = next_op(rng, len(ops), args, left)
                one = Schedule(args.seed, (op,))
                ops.append(op)
                chain.dispatch(one)
                chain.produce(None, one)
            summary.seconds = round(time.monotonic() - began, 1)
            everything = Schedule(args.seed, tuple(ops))
            chain.settle(timeout=args.drain, schedule=everything)
            time.sleep(args.sample_s + 0.5)  # the last postings sampled
        finally:
            sampler.halt()
        verdict = judge(chain.ledgers(), ops)
        summary.exit_codes = chain.stop_daemons()
        gateway_log = workdir / "gateway.log"
        if any(code != 0 for code in summary.exit_codes.values()):
            summary.problems.append(f"a daemon did not stop cleanly: {tail(gateway_log, 20)}")
    summary.cycles = verdict.parts_made + verdict.scrap_made
    summary.parts_good = verdict.parts_made
    summary.parts_scrap = verdict.scrap_made
    summary.operations = len(ops)
    summary.confirmations = verdict.confirmations
    summary.posted = verdict.posted
    summary.lost = len(verdict.lost)
    summary.doubled = len(verdict.doubled)
    summary.orphans = len(verdict.orphans)
    summary.stops_expected = expected_stops(Schedule(args.seed, tuple(ops)))
    summary.stops_matched = verdict.stops
    summary.stops_missed = summary.stops_expected - verdict.stops
    summary.problems.extend(verdict.problems)
    summary.problems.extend(f"sample failed: {e}" for e in sampler.errors)
    fill(summary, sampler)
    return summary, sampler


def fill(summary: Summary, sampler: Sampler) -> None:
    s = sampler.samples
    summary.samples = len(s)
    if not s:
        return
    steady = [x for x in s if x.t_s >= s[-1].t_s / 5] or s
    summary.max_rss_mb = max(x.rss_mb for x in s)
    summary.rss_first_mb, summary.rss_last_mb = s[0].rss_mb, s[-1].rss_mb
    summary.rss_growth_mb_per_h = round(slope_per_h([(x.t_s, x.rss_mb) for x in steady]), 2)
    summary.db_first_mb = round(s[0].db_mb + s[0].wal_mb, 3)
    summary.db_last_mb = round(s[-1].db_mb + s[-1].wal_mb, 3)
    summary.db_growth_mb_per_h = round(
        slope_per_h([(x.t_s, x.db_mb + x.wal_mb) for x in steady]), 2
    )
    summary.max_fds = max(x.fds for x in s)
    summary.fds_first, summary.fds_last = s[0].fds, s[-1].fds
    summary.cpu_mean_pct = round(statistics.fmean(x.cpu_pct for x in s[1:] or s), 1)
    summary.max_outbox = max(x.outbox for x in s)
    lat = sampler.latencies
    summary.latency_n = len(lat)
    summary.latency_p50_ms = percentile(lat, 0.5)
    summary.latency_p99_ms = percentile(lat, 0.99)
    summary.latency_max_ms = max(lat) if lat else None


def table(s: Summary) -> str:
    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v:.0f} ms"

    rows = [
        ("production", f"{s.seconds:.0f} s at {s.rate:g} counter changes/s, {s.operations} ops"),
        ("cycles (parts made)", f"{s.cycles} ({s.parts_good} good, {s.parts_scrap} scrap)"),
        ("confirmations", f"{s.confirmations} (every {s.every_good} good), {s.posted} in SAP"),
        ("lost / doubled / orphans", f"{s.lost} / {s.doubled} / {s.orphans}"),
        ("alarm stops seen / missed", f"{s.stops_matched} of {s.stops_expected} / "
         f"{s.stops_missed}"),
        ("max RSS", f"{s.max_rss_mb:.1f} MB (first {s.rss_first_mb:.1f}, last "
         f"{s.rss_last_mb:.1f})"),
        ("RSS growth", f"{s.rss_growth_mb_per_h:+.2f} MB/h"),
        ("database (+ -wal)", f"{s.db_first_mb:.2f} -> {s.db_last_mb:.2f} MB"),
        ("database growth", f"{s.db_growth_mb_per_h:+.2f} MB/h"),
        ("open fds", f"{s.fds_first} -> {s.fds_last} (max {s.max_fds})"),
        ("gateway CPU (mean)", f"{s.cpu_mean_pct:.1f} % of one core"),
        ("outbox depth (max)", str(s.max_outbox)),
        ("latency p50 / p99 / max", f"{ms(s.latency_p50_ms)} / {ms(s.latency_p99_ms)} / "
         f"{ms(s.latency_max_ms)} ({s.latency_n} postings)"),
        ("daemons' exit codes", json.dumps(s.exit_codes)),
        ("problems", str(len(s.problems))),
    ]  # fmt: skip
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def write_csv(path: Path, samples: list[Sample]) -> None:
    names = list(Sample.__dataclass_fields__)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(names)
        for s in samples:
            w.writerow(["" if v is None else v for v in asdict(s).values()])


def plot(path: Path, samples: list[Sample], summary: Summary) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s.t_s / 60 for s in samples]
    fig, axes = plt.subplots(3, 2, figsize=(12, 9), sharex=True)
    panels: list[tuple[Any, list[list[float | None]], list[str], str]] = [
        (axes[0][0], [[s.rss_mb for s in samples]], ["RSS"], "MB"),
        (axes[0][1], [[s.cpu_pct for s in samples]], ["CPU"], "% of one core"),
        (axes[1][0], [[float(s.fds) for s in samples]], ["open fds"], "fds"),
        (
            axes[1][1],
            [[s.db_mb for s in samples], [s.wal_mb for s in samples]],
            ["database", "-wal"],
            "MB",
        ),
        (
            axes[2][0],
            [[float(s.outbox) for s in samples], [float(s.queue) for s in samples]],
            ["outbox depth", "input queue"],
            "messages",
        ),
        (
            axes[2][1],
            [[s.latency_p50_ms for s in samples], [s.latency_p99_ms for s in samples]],
            ["latency p50", "latency p99"],
            "ms",
        ),
    ]
    for ax, series, labels, unit in panels:
        for ys, label in zip(series, labels, strict=True):
            pts = [(x, y) for x, y in zip(t, ys, strict=True) if y is not None]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], label=label, linewidth=1)
        ax.set_ylabel(unit)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", fontsize=8)
    for ax in axes[2]:
        ax.set_xlabel("minutes")
    fig.suptitle(
        f"soak: {summary.rate:g} counter changes/s for {summary.seconds / 60:.1f} min, "
        f"{summary.cycles} parts, {summary.confirmations} confirmations, lost {summary.lost}, "
        f"doubled {summary.doubled}"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def pair(text: str) -> tuple[float, float]:
    lo, _, hi = text.partition(",")
    a, b = float(lo), float(hi or lo)
    if not 0 < a <= b:
        raise argparse.ArgumentTypeError(f"not a range of seconds: {text!r}")
    return a, b


def int_pair(text: str) -> tuple[int, int]:
    lo, _, hi = text.partition(",")
    a, b = int(lo), int(hi or lo)
    if not 0 <= a <= b:
        raise argparse.ArgumentTypeError(f"not a range of counts: {text!r}")
    return a, b


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    p.add_argument("--minutes", type=float, default=60.0, help="of production")
    p.add_argument("--rate", type=float, default=100.0, help="counter changes (parts) a second")
    p.add_argument("--op-s", type=pair, default=(20.0, 40.0), help="an operation's running s")
    p.add_argument("--stops", type=int_pair, default=(1, 2), help="alarm stops per operation")
    p.add_argument("--every-good", type=int, default=50, help="partial confirmation every N good")
    p.add_argument("--scrap-rate", type=float, default=0.05)
    p.add_argument("--sample-s", type=float, default=5.0)
    p.add_argument("--drain", type=float, default=300.0, help="s for the last verdicts")
    p.add_argument("--seed", type=int, default=2020)
    p.add_argument("--workdir", type=Path, help="keep logs and databases here")
    p.add_argument("--csv", type=Path)
    p.add_argument("--png", type=Path)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    if not 0 < args.minutes <= 24 * 60:
        p.error(f"--minutes must be in (0, 1440], not {args.minutes}")
    if not 0 < args.rate <= 500:
        p.error(f"--rate must be in (0, 500], not {args.rate}")
    if args.every_good < 1:
        p.error(f"--every-good must be at least 1, not {args.every_good}")
    if args.sample_s < 0.5:
        p.error(f"--sample-s must be at least 0.5, not {args.sample_s}")
    return args


def on_sigterm(signum: int, frame: types.FrameType | None) -> None:
    raise Stopped(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    signal.signal(signal.SIGTERM, on_sigterm)
    keep = args.workdir is not None
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="soak-"))
    workdir.mkdir(parents=True, exist_ok=True)
    pg = PostgresCluster()
    try:
        summary, sampler = soak(args, workdir, pg)
    except (ChainFailed, Stopped) as exc:
        print(f"soak failed: {exc}", file=sys.stderr)
        for name in ("gateway", "relay-a", "relay-b", "machine", "sap"):
            print(f"--- {name}.log\n{tail(workdir / f'{name}.log', 15)}", file=sys.stderr)
        return 2
    finally:
        pg.destroy()
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print(table(summary))
    for problem in summary.problems[:20]:
        print(f"problem: {problem}")
    if args.csv:
        write_csv(args.csv, sampler.samples)
    if args.json:
        data = {"summary": asdict(summary), "samples": [asdict(s) for s in sampler.samples]}
        args.json.write_text(json.dumps(data, indent=1))
    if args.png:
        try:
            plot(args.png, sampler.samples, summary)
        except ImportError:
            print("no matplotlib: no plot (pip install -e '.[plot]')", file=sys.stderr)
    ok = not summary.problems and summary.lost == 0 and summary.doubled == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
