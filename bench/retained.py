"""What a finished operation costs in the gateway's memory while it stays there, and whether
that memory goes when it leaves (``[retention] finished_in_memory_h``).

    python bench/retained.py                     # 40 operations as the soak makes them
    python bench/retained.py --ops 100 --parts 3000 --every-good 50 --json out.json

The soak (bench/soak.py, 100 changes/s, operations of 20-40 s, a partial confirmation every
50 good) finishes about 100 operations of about 3,000 parts and 57 confirmations an hour, and
its RSS grows about 12 MB/h. This drives the same shape of operation through the real engine
and store (only the clocks are the bench's: each operation takes 30 simulated seconds, every
message is taken by the broker and every confirmation posted by the relay), and reports the
Python memory traced (tracemalloc) and the RSS after each operation, then after the clock
moves past ``finished_in_memory_h`` and the maintenance retires them: what an operation holds
while it is kept, and what is given back.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import sys
import tempfile
import tracemalloc
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import structlog

from bench.finished import RULES, Clocks, running
from bench.procfs import mem_mb
from edge.domain.inputs import (
    Action,
    ConfirmationResult,
    CounterReading,
    DispatchList,
    ResultStatus,
    Transition,
)
from edge.domain.model import OperationSpec
from edge.domain.rules import ConfirmationPolicy
from edge.engine import Engine
from edge.store.retention import RetentionPolicy

HOUR_MS = 3_600_000


def rss_mb() -> float:
    return mem_mb(os.getpid())[0]


def traced_mb() -> float:
    gc.collect()
    return tracemalloc.get_traced_memory()[0] / 1e6


async def settle(engine: Engine) -> None:
    """The broker takes every message, the relay posts every confirmation."""
    rows = await engine.outbox_pending(1_000_000, 0)
    await engine.outbox_mark([r.seq for r in rows], [], ())
    for conf in list(engine.wc.confirmations.values()):
        if conf.status.value == "awaiting_result":
            await engine.submit(
                ConfirmationResult(conf.idem_key, ResultStatus.POSTED, engine.now())
            )


async def measure(
    db: Path, ops: int, parts: int, every_good: int, op_minutes: float, max_kept: int
) -> dict[str, object]:
    clocks = Clocks()
    rules = RULES.__class__(
        **{
            **{f: getattr(RULES, f) for f in RULES.__dataclass_fields__},
            "policy": ConfirmationPolicy(every_good=Decimal(every_good)),
        }
    )
    kept_h = 24.0
    policy = RetentionPolicy(
        finished_in_memory_h=kept_h, finished_in_memory_max=max_kept, min_free_mb=0
    )
    rows: list[dict[str, float]] = []
    async with running(db, clocks, rules) as engine:
        now = engine.now
        counter = 0
        await engine.submit(CounterReading("good", counter, now()))
        specs = tuple(
            OperationSpec(f"9{i:05d}", "0010", "FG-1", Decimal(parts), std_cycle_s=0.01)
            for i in range(ops)
        )
        await engine.submit(DispatchList(1, specs, now()))
        await settle(engine)
        base_traced, base_rss = traced_mb(), rss_mb()
        step = 10  # a reading every 10 parts, as the OPC UA source delivers 100/s
        for i, spec in enumerate(specs):
            ref = str(spec.key)
            await engine.submit(Transition(Action.START_PRODUCTION, ref, "operator:1", now()))
            for _ in range(parts // step):
                clocks.advance(int(op_minutes * 60_000) * step // parts)
                counter += step
                await engine.submit(CounterReading("good", counter, now()))
            await engine.submit(Transition(Action.COMPLETE, ref, "operator:1", now()))
            await settle(engine)
            await engine.maintenance_step(policy)  # retires what was kept long enough
            if (i + 1) % max(1, ops // 10) == 0 or i + 1 == ops:
                rows.append(
                    {
                        "ops": i + 1,
                        "confirmations": len(engine.wc.confirmations),
                        "in_memory": len(engine.wc.operations),
                        "traced_mb": traced_mb() - base_traced,
                        "rss_mb": rss_mb() - base_rss,
                    }
                )
        clocks.advance(int((kept_h + 1) * HOUR_MS))
        for _ in range(8):
            await engine.maintenance_step(policy)
        after = {
            "ops": ops,
            "confirmations": len(engine.wc.confirmations),
            "in_memory": len(engine.wc.operations),
            "traced_mb": traced_mb() - base_traced,
            "rss_mb": rss_mb() - base_rss,
        }
    return {
        "ops": ops,
        "parts_per_op": parts,
        "every_good": every_good,
        "op_minutes": op_minutes,
        "max_kept": max_kept,
        "rows": rows,
        "per_confirmation_kb": max(
            r["traced_mb"] * 1000 / max(1, r["confirmations"]) for r in rows
        ),
        "after_retired": after,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--ops", type=int, default=40)
    p.add_argument("--parts", type=int, default=3000)
    p.add_argument("--every-good", type=int, default=50)
    p.add_argument(
        "--op-minutes",
        type=float,
        default=0.5,
        help="simulated minutes an operation runs (60: about 24 kept in memory, the rest retired)",
    )
    p.add_argument(
        "--max-kept",
        type=int,
        default=RetentionPolicy().finished_in_memory_max,
        help="[retention] finished_in_memory_max (100000: as good as none)",
    )
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    tracemalloc.start()
    with tempfile.TemporaryDirectory() as tmp:
        result = asyncio.run(
            measure(
                Path(tmp) / "edge.db",
                args.ops,
                args.parts,
                args.every_good,
                args.op_minutes,
                args.max_kept,
            )
        )
    print("| finished | confirmations in memory | operations in memory | traced MB | RSS MB |")
    print("|---|---|---|---|---|")
    for r in [*result["rows"], result["after_retired"]]:  # type: ignore[misc]
        print(
            f"| {r['ops']} | {r['confirmations']} | {r['in_memory']} | "
            f"{r['traced_mb']:+.1f} | {r['rss_mb']:+.1f} |"
        )
    print(
        f"{result['per_confirmation_kb']:.2f} KB of Python memory per confirmation kept (with its "
        f"share of its operation: {args.parts} parts, a confirmation every {args.every_good} "
        f"good); finished_in_memory_max {args.max_kept}; the last row: after the clock moved "
        "past finished_in_memory_h and the maintenance ran"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
