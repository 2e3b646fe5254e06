"""The pure core's cost per input: ``WorkCenter.apply`` of counter pulses on a running operation,
with the shift book (ISO 22400 KPIs booked after every input that changed the state) and, in the
same run, without it (its booking step replaced by nothing: the baseline).

    python bench/core.py                   # 5 runs of 20,000 inputs per case (~10 s)
    python bench/core.py --inputs 50000 --runs 7 --json out.json

Cases: one shift a day (the default calendar), three shifts in Europe/Berlin with breaks on
weekdays; each with and without the book. Each run builds a new work center, dispatches and
starts one operation, then times ``apply`` alone (``time.perf_counter_ns`` around the loop).
Prints the median microseconds per input and the ratio to the baseline. No I/O: the engine,
SQLite and MQTT are not part of it (see bench/ingest.py for the durable path).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge.domain import kpis
from edge.domain.clock import Instant
from edge.domain.core import WorkCenter
from edge.domain.inputs import Action, DispatchList, Pulses, Transition
from edge.domain.model import OperationSpec
from edge.domain.rules import CountKind, CountSource, Shift, SignalType, WorkCenterRules

T0 = 1_764_662_400_000  # 2025-12-02 08:00 UTC, a Tuesday
WEEK = ["mon", "tue", "wed", "thu", "fri"]
CALENDARS: dict[str, tuple[tuple[Shift, ...], str]] = {
    "one shift a day": ((Shift("day", 0, 24 * 60),), "UTC"),
    "3 shifts, breaks": (
        (
            Shift.parse("early", "06:00", "14:00", WEEK, [("b", "09:00", "09:15")]),
            Shift.parse("late", "14:00", "22:00", WEEK, [("b", "18:00", "18:15")]),
            Shift.parse("night", "22:00", "06:00", WEEK, [("m", "02:00", "02:30")]),
        ),
        "Europe/Berlin",
    ),
}


@contextlib.contextmanager
def without_the_book() -> Iterator[None]:
    booking = kpis.on_change
    kpis.on_change = lambda *_args: None  # type: ignore[assignment]
    try:
        yield
    finally:
        kpis.on_change = booking


def one_run(shifts: tuple[Shift, ...], zone: str, inputs: int) -> float:
    """Microseconds per input."""
    rules = WorkCenterRules(
        edge_id="bench",
        work_center="WC",
        timezone=zone,
        shifts=shifts,
        sources=(CountSource("press", CountKind.GOOD, signal=SignalType.PULSE),),
    )
    wc = WorkCenter(rules)
    spec = OperationSpec(
        order="4711",
        operation="0010",
        target_qty=Decimal(10**8),
        material="M",
        work_center="WC",
        std_cycle_s=0.1,
    )
    wc.apply(DispatchList(1, (spec,), Instant(T0, 1)))
    wc.apply(Transition(Action.START_PRODUCTION, "4711/0010", "operator:1", Instant(T0 + 1, 2)))
    pulses = [Pulses("press", 1, Instant(T0 + 10 + i * 10, 11 + i * 10)) for i in range(inputs)]
    start = time.perf_counter_ns()
    for p in pulses:
        wc.apply(p)
    return (time.perf_counter_ns() - start) / inputs / 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inputs", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", type=Path, help="write the results here too")
    args = parser.parse_args(argv)
    rows = []
    for name, (shifts, zone) in CALENDARS.items():
        book, base = [], []
        for _ in range(args.runs):  # interleaved: the machine's noise hits both alike
            book.append(one_run(shifts, zone, args.inputs))
            with without_the_book():
                base.append(one_run(shifts, zone, args.inputs))
        row = {
            "case": name,
            "with_book_us": round(statistics.median(book), 2),
            "baseline_us": round(statistics.median(base), 2),
        }
        row["ratio"] = round(row["with_book_us"] / row["baseline_us"], 2)
        rows.append(row)
    print(f"{'case':<20} {'with the book':>14} {'without (baseline)':>19} {'ratio':>6}")
    for r in rows:
        print(
            f"{r['case']:<20} {r['with_book_us']:>11.2f} us {r['baseline_us']:>16.2f} us "
            f"{r['ratio']:>5.2f}x"
        )
    print(f"median of {args.runs} runs of {args.inputs} inputs each; WorkCenter.apply alone")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "inputs": args.inputs, "runs": args.runs}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
