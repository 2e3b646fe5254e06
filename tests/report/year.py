"""A year of operations with known drifts, through the real core (tests.report.floor).

Ten materials and operations, 312 completed operations spread over 2025, each with noise of a
few percent on its cycle and setup, micro-stops, breaks (planned) and breakdowns (unplanned),
some without a setup phase, one routing whose standard changes mid-year (the actual follows:
no drift); three injected drifts, the ground truth the report must find and nothing else:

- M-300/0010: cycle 25 % slower than its standard;
- M-700/0020: cycle 20 % faster;
- M-A00/0010: setup 40 % longer.

Every operation's true run, setup and parts are kept (``Truth``), so a test can check the
report's hours against what was generated. As in the gateway, finished operations leave the
core's memory three days after they ended; the database keeps them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

from tests.report.floor import Floor, StopPlan

YEAR_S = 365 * 86_400
OPERATIONS = 312


@dataclass(frozen=True, slots=True)
class Routing:
    material: str
    operation: str
    std_cycle_s: float
    std_setup_s: float
    parts: tuple[int, int]
    cycle_factor: float = 1.0  # the injected drift (1.0: none)
    setup_factor: float = 1.0
    text: str = ""


ROUTINGS = (
    Routing("M-100", "0010", 12.0, 1800, (200, 600), text="bracket, left"),
    Routing("M-200", "0010", 4.5, 900, (1000, 3000), text="washer 12 mm"),
    Routing("M-300", "0010", 20.0, 2400, (100, 400), cycle_factor=1.25, text="housing"),
    Routing("M-400", "0020", 7.0, 1200, (300, 900), text="lid"),
    Routing("M-500", "0010", 8.0, 600, (400, 800), text="clip (re-routed mid-year)"),
    Routing("M-600", "0010", 30.0, 3600, (50, 200), text="frame"),
    Routing("M-700", "0020", 15.0, 1500, (200, 500), cycle_factor=0.80, text="cover"),
    Routing("M-800", "0010", 2.0, 300, (2000, 5000), text="pin"),
    Routing("M-900", "0030", 45.0, 5400, (20, 80), text="mould insert"),
    Routing("M-A00", "0010", 10.0, 1800, (200, 600), setup_factor=1.40, text="bracket, right"),
)
DRIFTED = {("M-300", "0010"): "cycle", ("M-700", "0020"): "cycle", ("M-A00", "0010"): "setup"}
REROUTED = "M-500"  # its standard cycle goes from 8 to 10 s on 1 July, and so does the actual


@dataclass(slots=True)
class Truth:
    """What was generated, per material and operation: sums over its operations."""

    operations: int = 0
    parts: int = 0
    run_s: float = 0.0  # production + micro-stops
    std_run_s: float = 0.0  # standard cycle x parts
    setup_s: float = 0.0
    std_setup_s: float = 0.0  # for operations with a setup
    micro_s: float = 0.0
    planned_s: float = 0.0
    unplanned_s: float = 0.0
    keys: list[str] = field(default_factory=list)


def generate(
    db: Path | None = None, seed: int = 22400
) -> tuple[Floor, dict[tuple[str, str], Truth]]:
    """The year, stored in ``db`` (then closed) when given."""
    rng = random.Random(seed)
    floor = Floor(db)
    truth: dict[tuple[str, str], Truth] = {}
    slot = YEAR_S / OPERATIONS
    for i in range(OPERATIONS):
        routing = ROUTINGS[i % len(ROUTINGS)] if i % 7 else rng.choice(ROUTINGS)
        floor.t = max(floor.t, i * slot)
        std_cycle = routing.std_cycle_s
        if routing.material == REROUTED and floor.t >= 181 * 86_400:
            std_cycle = 10.0
        parts = rng.randint(*routing.parts)
        run = std_cycle * parts * routing.cycle_factor * rng.uniform(0.95, 1.05)
        micro = [rng.uniform(20, 100) for _ in range(rng.randint(0, 3))]
        stops = [StopPlan("micro", s) for s in micro]
        if rng.random() < 0.3:
            stops.append(StopPlan("planned", 1800))
        if rng.random() < 0.2:
            stops.append(StopPlan("unplanned", rng.uniform(300, 2400)))
        rng.shuffle(stops)
        with_setup = rng.random() > 0.1
        setup = (
            routing.std_setup_s * routing.setup_factor * rng.uniform(0.92, 1.08)
            if with_setup
            else 0.0
        )
        # whole milliseconds, as the core's clock counts them
        run, setup = round(run, 3), round(setup, 3)
        stops = [StopPlan(s.kind, round(s.s, 3)) for s in stops]
        micro_s = sum(s.s for s in stops if s.kind == "micro")
        key = floor.operation(
            routing.material,
            routing.operation,
            std_cycle_s=std_cycle,
            std_setup_s=routing.std_setup_s,
            setup_s=setup,
            production_s=run - micro_s,
            parts=parts,
            stops=tuple(stops),
            material_text=routing.text,
        )
        t = truth.setdefault((routing.material, routing.operation), Truth())
        t.operations += 1
        t.parts += parts
        t.run_s += run
        t.std_run_s += std_cycle * parts
        if setup:
            t.setup_s += setup
            t.std_setup_s += routing.std_setup_s
        t.micro_s += micro_s
        t.planned_s += sum(s.s for s in stops if s.kind == "planned")
        t.unplanned_s += sum(s.s for s in stops if s.kind == "unplanned")
        t.keys.append(key)
    floor.close()
    return floor, truth
