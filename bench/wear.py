"""Write wear: bytes our gateway writes to storage per hour, at 1 part/s and at 100 changes/s.

    python bench/wear.py                          # 1 and 100 changes/s, 60 s per variant
    python bench/wear.py --rates 100 --seconds 120 --json out.json

An SD card or eMMC wears by the bytes written to it, not by the bytes stored: a gateway that
keeps a database of a few MB can still write gigabytes an hour, one page at a time. This bench
measures what reaches the block layer (``write_bytes`` of ``/proc/<pid>/io``, summed over the
process tree: WAL frames, checkpoints back into the database file, fsyncs; counted when a page
is dirtied) while an OPC UA counter changes at a given rate, and turns it into MB per hour and
bytes per change. Each variant runs in turn against the same OPC UA server (``bench/e2e.py``'s
``--child server``: a UInt32 counter, +1 per write, each write at a random point of its slot),
the same mosquitto and the same subscriber:

- **ours, shipped defaults**: ``edge run`` as ``bench/e2e.py`` starts it (dispatched over MQTT,
  started through the local API, every count durable with ``synchronous=FULL`` before it is
  sent), with the shipped OPC UA publishing interval (100 ms) and the shipped
  ``[mqtt] historian_interval_s = 1`` (a counter's time series: at most one value a second);
- **ours, every historian value**: the same with ``historian_interval_s = 0`` (one message,
  so one outbox row and its acknowledgement, per commit that changed the count);
- **ours, 10 ms publishing**: ``publishing_interval_ms = 10``: up to ten times more
  notifications, so more commits; and with every historian value too (``bench/e2e.py``'s
  latency setting), and that with ``[engine] batch_window_ms = 20``, which trades up to 20 ms
  of latency for fewer commits;
- **naive logger** (``--child logger``, the baseline): what a plant engineer adds to the naive
  script to keep the values: an asyncua subscription (100 ms publishing, asyncua's defaults)
  whose callback inserts the value into a SQLite table and commits (WAL, ``synchronous=FULL``,
  one commit per notified value). It publishes nothing: its writes are its storage alone.

The window runs from the first write to 2 s after the last (the gateway's acknowledgement
bookkeeping, every 0.25 s, falls inside); the hourly checkpoint of the projections and the
daily retention do not (they write a few pages per hour for one operation). What a day or a
year at that rate adds to the card is in the table; it is only the database's share: the logs
go to the journal (systemd) or stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))

from bench.e2e import (  # noqa: E402
    RECEIVED_TOPIC,
    TOPIC,
    Context,
    LineChild,
    Ours,
    Procs,
    Subscriber,
    git_commit,
    http,
    jsonable,
    terminated_as_exit,
    wait_for,
    workspace,
)
from bench.procfs import child_env, tail, tree_write_bytes  # noqa: E402

SETTLE_S = 1.0
TAIL_S = 2.0  # after the last write: the last commits and acknowledgements
LOGGER_PUBLISHING_MS = 100.0


@dataclass
class Variant:
    name: str
    title: str
    publishing_ms: float = 100.0
    extra_toml: str = ""
    historian_s: float = 1.0  # the shipped [mqtt] historian_interval_s


VARIANTS = (
    Variant("ours", "ours, shipped defaults (publishing 100 ms, historian 1 s)"),
    Variant("ours-every", "ours, every historian value (historian_interval_s 0)", historian_s=0.0),
    Variant("ours-10ms", "ours, publishing 10 ms", publishing_ms=10.0),
    Variant(
        "ours-10ms-every",
        "ours, publishing 10 ms, every historian value (bench/e2e.py's)",
        publishing_ms=10.0,
        historian_s=0.0,
    ),
    Variant(
        "ours-10ms-every-batch20",
        "ours, as bench/e2e.py's, batch_window_ms 20",
        publishing_ms=10.0,
        historian_s=0.0,
        extra_toml="\n[engine]\nbatch_window_ms = 20\n",
    ),
    Variant("logger", "naive logger (asyncua -> SQLite, commit per value)"),
)
BY_NAME = {v.name: v for v in VARIANTS}


@dataclass
class Result:
    variant: str
    rate: float
    run: int
    changes: int = 0
    window_s: float = 0.0
    write_bytes: int = 0
    commits: int | None = None
    db_bytes: int = 0
    error: str | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def mb_per_h(self) -> float:
        return self.write_bytes / self.window_s * 3600 / 1e6 if self.window_s else float("nan")

    @property
    def bytes_per_change(self) -> float:
        return self.write_bytes / self.changes if self.changes else float("nan")


class Logger:
    """The baseline child: a subscription that stores each value with a commit."""

    def __init__(self, procs: Procs, workdir: Path, endpoint: str, node: str) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.db = workdir / "logger.db"
        self.log = workdir / "logger.log"
        with self.log.open("ab") as log:
            self.proc = procs.spawn(
                [
                    sys.executable,
                    str(Path(__file__).resolve()),
                    "--child",
                    "logger",
                    "--endpoint",
                    endpoint,
                    "--node",
                    node,
                    "--db",
                    str(self.db),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=child_env(ROOT),
            )

    def rows(self) -> int:
        import sqlite3

        try:
            with contextlib.closing(sqlite3.connect(f"file:{self.db}?mode=ro", uri=True)) as c:
                return int(c.execute("SELECT COUNT(*) FROM reading").fetchone()[0])
        except sqlite3.Error:
            return 0

    def alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"the logger exited ({self.proc.returncode}):\n{tail(self.log)}")


def logger_main(endpoint: str, node_id: str, db: str) -> None:
    """``--child logger``: asyncua -> SQLite, one row and one commit per notified value."""
    import asyncio
    import sqlite3

    from asyncua import Client

    parent = os.getppid()
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE IF NOT EXISTS reading (at_ms INTEGER, value INTEGER)")
    conn.commit()

    class Handler:
        def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
            conn.execute("INSERT INTO reading VALUES (?, ?)", (time.time_ns() // 1_000_000, val))
            conn.commit()

    async def main() -> None:
        async with Client(endpoint) as client:
            sub = await client.create_subscription(LOGGER_PUBLISHING_MS, Handler())
            await sub.subscribe_data_change(client.get_node(node_id))
            while os.getppid() == parent:
                await asyncio.sleep(1)

    asyncio.run(main())


def files_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.glob("*.db*") if p.is_file())


def commits(url: str) -> int | None:
    with contextlib.suppress(OSError):
        status, text = http(url + "/metrics", timeout=5)
        if status == 200:
            m = re.search(r"^edge_commits_total (\d+)", text, re.M)
            if m:
                return int(m.group(1))
    return None


def run_variant(
    ctx: Context, server: LineChild, variant: Variant, rate: float, seconds: float, run: int
) -> Result:
    result = Result(variant.name, rate, run)
    workdir = ctx.tmp / f"run{run}-{rate:g}-{variant.name}"
    ours: Ours | None = None
    logger: Logger | None = None
    try:
        if variant.name == "logger":
            logger = Logger(ctx.procs, workdir, ctx.endpoint, ctx.node)
            pid = logger.proc.pid

            def stored() -> bool:
                assert logger is not None
                logger.alive()
                return logger.rows() > 0  # the subscription's first value

            wait_for(stored, 60, "the logger's first row")
        else:
            ours = Ours(ctx, workdir)
            ours.publishing_ms = variant.publishing_ms
            ours.historian_s = variant.historian_s
            ours.extra_toml = variant.extra_toml
            base = int(server.request({"cmd": "value"})["value"])
            ours.start(base, ctx.sub.mark())
            pid = ours.pid
        time.sleep(SETTLE_S)
        c0 = commits(ours.url) if ours else None
        b0, w0 = tree_write_bytes(pid), time.monotonic()
        w = server.request(
            {"cmd": "writes", "rate": rate, "seconds": seconds, "seed": run}, seconds + 60
        )
        time.sleep(TAIL_S)
        b1, w1 = tree_write_bytes(pid), time.monotonic()
        c1 = commits(ours.url) if ours else None
        if ours is not None:
            ours.alive()
        if logger is not None:
            logger.alive()
        result.changes = len(w["t_ns"])
        result.window_s = w1 - w0
        result.write_bytes = b1 - b0
        result.db_bytes = files_bytes(workdir)
        if c0 is not None and c1 is not None:
            result.commits = c1 - c0
        if ours is not None:
            result.extras = ours.extras()
    except Exception as exc:
        result.error = f"{type(exc).__name__}: {exc}"
        print(f"  {variant.name} at {rate:g}/s failed: {result.error}", flush=True)
    finally:
        if logger is not None:
            ctx.procs.stop(logger.proc)
        if ours is not None:
            ours.stop()
    return result


def fmt(x: float | None, digits: int = 1) -> str:
    if x is None or x != x:
        return "-"
    return f"{x:,.{digits}f}"


def report(results: list[Result], rates: list[float], names: list[str]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    header = (
        "rate/s",
        "variant",
        "MB/h",
        "GB/year",
        "bytes/change",
        "commits/s",
        "db MB",
        "vs logger",
    )
    rows: list[tuple[str, ...]] = []
    for rate in rates:
        meds: dict[str, dict[str, float]] = {}
        for name in names:
            ok = [r for r in results if r.variant == name and r.rate == rate and not r.error]
            if not ok:
                continue
            cps = [r.commits / r.window_s for r in ok if r.commits is not None and r.window_s]
            meds[name] = {
                "mb_per_h": statistics.median(r.mb_per_h for r in ok),
                "bytes_per_change": statistics.median(r.bytes_per_change for r in ok),
                "commits_per_s": statistics.median(cps) if cps else float("nan"),
                "db_mb": statistics.median(r.db_bytes / 1e6 for r in ok),
            }
        summary[f"{rate:g}"] = meds
        logger = meds.get("logger", {}).get("mb_per_h")
        for name, m in meds.items():
            vs = f"{m['mb_per_h'] / logger:.2f}x" if logger else "-"
            rows.append(
                (
                    f"{rate:g}",
                    BY_NAME[name].title,
                    fmt(m["mb_per_h"]),
                    fmt(m["mb_per_h"] * 24 * 365 / 1000),
                    fmt(m["bytes_per_change"], 0),
                    fmt(m["commits_per_s"]),
                    fmt(m["db_mb"], 2),
                    vs,
                )
            )
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)
    ]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))
    print("\n" + line + "\n" + "-" * len(line))
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="1,100", help="changes/s, comma-separated")
    parser.add_argument("--seconds", type=float, default=60.0, help="per rate, variant and run")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument(
        "--variants", default=",".join(v.name for v in VARIANTS), help="of " + ",".join(BY_NAME)
    )
    parser.add_argument("--json", type=Path, help="write every number here")
    parser.add_argument("--workdir", type=Path, help="keep the databases and logs here")
    parser.add_argument("--child", choices=("logger",), help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", help=argparse.SUPPRESS)
    parser.add_argument("--node", help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "logger":
        logger_main(args.endpoint, args.node, args.db)
        return 0
    rates = [float(r) for r in args.rates.split(",") if r.strip()]
    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    unknown = [n for n in names if n not in BY_NAME]
    if unknown or not names or not rates or args.runs < 1 or args.seconds <= 0:
        parser.error(f"bad --variants/--rates/--runs/--seconds (unknown variants: {unknown})")

    from simulators.broker import Mosquitto, find_mosquitto

    find_mosquitto()
    meta = {**git_commit(), "rates": rates, "seconds": args.seconds, "runs": args.runs}
    print(
        f"commit {meta['commit'][:12]}; rates {', '.join(f'{r:g}' for r in rates)}/s,"
        f" {args.seconds:g} s each, {args.runs} run(s), variants {', '.join(names)}",
        flush=True,
    )
    results: list[Result] = []
    procs = Procs()
    with terminated_as_exit(), workspace(args.workdir) as tmp:
        broker = Mosquitto(tmp / "broker")
        sub: Subscriber | None = None
        try:
            broker.start()
            server = LineChild(procs, "server")
            sub = Subscriber(broker.host, broker.port, [*TOPIC.values(), RECEIVED_TOPIC])
            ctx = Context(
                procs, tmp, sub, broker.port, server.hello["endpoint"], server.hello["node"]
            )
            for run in range(args.runs):
                for rate in rates:
                    for name in names:
                        r = run_variant(ctx, server, BY_NAME[name], rate, args.seconds, run)
                        results.append(r)
                        print(
                            f"run {run} {rate:g}/s {name}: {r.write_bytes / 1e6:.2f} MB in"
                            f" {r.window_s:.1f} s = {fmt(r.mb_per_h)} MB/h,"
                            f" {fmt(r.bytes_per_change, 0)} B/change, commits {r.commits}",
                            flush=True,
                        )
        finally:
            if sub is not None:
                sub.stop()
            procs.stop_all()
            broker.stop()
    summary = report(results, rates, names)
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                jsonable(
                    {
                        "meta": meta,
                        "summary": summary,
                        "results": [
                            {
                                **asdict(r),
                                "mb_per_h": r.mb_per_h,
                                "bytes_per_change": r.bytes_per_change,
                            }
                            for r in results
                        ],
                    }
                ),
                indent=1,
            )
        )
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
