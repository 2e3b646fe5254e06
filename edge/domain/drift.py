"""Routing drift: the ERP's standard setup and cycle times against what the work center did.

One definition for everyone who shows it (``edge report drift``, the message to central
planning): per material and operation number, over the operations *completed* in a period,

- **actual cycle time** = run time / parts made, per operation; run time is the operation's
  production time (time ``running`` without a stop, rules.md §5) plus, with
  ``micro_stops_in_cycle`` (the default), its micro-stops (stops shorter than the micro-stop
  threshold that no planned reason was given: a speed loss every part pays, which a standard
  for capacity planning has to cover). Planned stops (a reason the master data marks planned)
  and the other unplanned stops are down time, never run time: they are shown beside the cycle,
  in hours. Parts made = good + scrap + rework (every part took machine time), in the
  operation's unit, as the standard cycle time is per unit.
- **actual setup time** = the time the operation spent in ``setup`` (stops during setup
  included: setup is what it took); operations that went straight to production (no setup
  phase) are left out of the setup figures.
- the **median** of the operations' values, and the interquartile range as their spread;
- **drift** = the median of actual / standard over the operations, - 1 (each operation against
  the standard it was dispatched with, so a routing changed within the period is no drift; with
  one standard it is median / standard - 1), flagged when its size is above ``threshold`` and
  at least ``min_operations`` operations gave a value; no standard (0) is never flagged;
- **impact** in hours of capacity misplanned over the period = the sum over the operations of
  (actual - standard) x quantity: for the cycle (actual run time - standard cycle x parts
  made), for setup (actual - standard setup, one per operation with a setup), each operation
  with the standard it was dispatched with. Positive: the plan had too little time.

The standard shown for a material and operation is the one of its latest completed operation
(the routing in force); ``standards`` lists every one seen in the period when they differ.

Pure and synchronous: the period comes in, nothing is read from outside.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

from edge.domain.events import EventType, RejectionCode
from edge.domain.inputs import DriftReported
from edge.domain.model import ZERO, Operation, OperationStatus, Stop, number
from edge.domain.rules import MasterData
from edge.domain.state import WorkCenterState, reject

DEFAULT_THRESHOLD = 0.15
DEFAULT_MIN_OPERATIONS = 3

# At most this many rows in a payload (the largest impacts): the message's bound.
MAX_ROWS = 500

# How a payload says where a kind of stop went: into the run time, or left out of it.
IN_CYCLE = "in_cycle"
EXCLUDED = "excluded"


@dataclass(frozen=True, slots=True)
class DriftSettings:
    """How drift is judged: ``threshold`` as a fraction (0.15 = ±15 %)."""

    threshold: float = DEFAULT_THRESHOLD
    min_operations: int = DEFAULT_MIN_OPERATIONS
    micro_stops_in_cycle: bool = True

    def __post_init__(self) -> None:
        if not 0 < self.threshold <= 10:
            raise ValueError(f"threshold = {self.threshold}: must be above 0 and at most 10")
        if not 1 <= self.min_operations <= 1_000_000:
            raise ValueError(f"min_operations = {self.min_operations}: must be 1 to 1000000")


@dataclass(frozen=True, slots=True)
class Period:
    """``[start_ms, end_ms)`` in wall-clock epoch milliseconds: an operation belongs to the
    period its completion falls in."""

    start_ms: int
    end_ms: int

    def __post_init__(self) -> None:
        if self.end_ms <= self.start_ms:
            raise ValueError("the period must end after it starts")

    def holds(self, wall_ms: int) -> bool:
        return self.start_ms <= wall_ms < self.end_ms


@dataclass(frozen=True, slots=True)
class OperationActuals:
    """One completed operation as the report reads it (seconds; parts in the operation's unit)."""

    op: str
    material: str
    operation: str
    ended_ms: int
    material_text: str
    unit: str
    parts: Decimal
    setup_s: float
    production_s: float
    micro_stop_s: float
    planned_stop_s: float
    unplanned_stop_s: float
    std_setup_s: float
    std_cycle_s: float

    def run_s(self, micro_in_cycle: bool) -> float:
        return self.production_s + (self.micro_stop_s if micro_in_cycle else 0.0)

    def cycle_s(self, micro_in_cycle: bool) -> float | None:
        """Actual cycle time, or None where no part was made or nothing ran."""
        run = self.run_s(micro_in_cycle)
        if self.parts <= 0 or run <= 0:
            return None
        return run / float(self.parts)


@dataclass(frozen=True, slots=True)
class Figure:
    """Actual against standard for one time (cycle or setup) of a material and operation."""

    standard_s: float
    samples: int  # operations that gave a value
    median_s: float | None
    q1_s: float | None
    q3_s: float | None
    drift: float | None  # median / standard - 1; None without a standard or a value
    flagged: bool
    impact_h: float  # (actual - standard) x quantity, summed over the operations
    standards: tuple[float, ...]  # every standard seen, when more than one


@dataclass(frozen=True, slots=True)
class DriftRow:
    material: str
    material_text: str
    operation: str
    unit: str
    operations: int
    parts: Decimal
    run_h: float
    micro_stop_h: float
    planned_stop_h: float
    unplanned_stop_h: float
    cycle: Figure
    setup: Figure
    rank: int = 0

    @property
    def impact_h(self) -> float:
        return self.cycle.impact_h + self.setup.impact_h

    @property
    def flagged(self) -> bool:
        return self.cycle.flagged or self.setup.flagged


@dataclass(frozen=True, slots=True)
class DriftReport:
    work_center: str
    period: Period
    settings: DriftSettings
    operations: int  # completed operations in the period
    rows: tuple[DriftRow, ...] = field(default=())  # by impact, largest first

    @property
    def flagged(self) -> tuple[DriftRow, ...]:
        return tuple(r for r in self.rows if r.flagged)


def actuals(
    operations: Iterable[Operation], stops: Iterable[Stop], master_data: MasterData
) -> list[OperationActuals]:
    """The completed operations with their stop time split into micro, planned and unplanned.

    A stop's reason decides first: a planned reason makes it planned whatever its length; else
    a micro-stop is micro, and every other stop (a reason pending included) is unplanned."""
    micro: dict[str, int] = {}
    planned: dict[str, int] = {}
    unplanned: dict[str, int] = {}
    for stop in stops:
        reason = master_data.stop_reason(stop.reason) if stop.reason else None
        if reason is not None and reason.planned:
            into = planned
        elif stop.micro and not stop.open:
            into = micro
        else:
            into = unplanned
        for key, ms in stop.down_ms.items():
            into[key] = into.get(key, 0) + ms
    out = []
    for op in operations:
        if op.status is not OperationStatus.COMPLETED or op.ended is None:
            continue
        key = str(op.key)
        counted = op.counted
        out.append(
            OperationActuals(
                op=key,
                material=op.spec.material,
                operation=op.spec.operation,
                ended_ms=op.ended.wall_ms,
                material_text=op.spec.material_text,
                unit=op.spec.unit,
                parts=counted.good + counted.scrap_total + counted.rework_total,
                setup_s=counted.setup_ms / 1000,
                production_s=counted.production_ms / 1000,
                micro_stop_s=micro.get(key, 0) / 1000,
                planned_stop_s=planned.get(key, 0) / 1000,
                unplanned_stop_s=unplanned.get(key, 0) / 1000,
                std_setup_s=op.spec.std_setup_s,
                std_cycle_s=op.spec.std_cycle_s,
            )
        )
    return out


def drift_report(
    operations: Iterable[Operation],
    stops: Iterable[Stop],
    master_data: MasterData,
    period: Period,
    settings: DriftSettings = DriftSettings(),
    *,
    work_center: str = "",
) -> DriftReport:
    """The drift report over the operations completed in ``period`` (see the module)."""
    return report_of(
        actuals(operations, stops, master_data), period, settings, work_center=work_center
    )


def report_of(
    samples: Iterable[OperationActuals],
    period: Period,
    settings: DriftSettings = DriftSettings(),
    *,
    work_center: str = "",
) -> DriftReport:
    """The report from operations' actuals (see the module)."""
    groups: dict[tuple[str, str], list[OperationActuals]] = {}
    count = 0
    for a in samples:
        if not period.holds(a.ended_ms):
            continue
        count += 1
        groups.setdefault((a.material, a.operation), []).append(a)
    rows = [
        _row(material, operation, group, settings)
        for (material, operation), group in groups.items()
    ]
    rows.sort(key=lambda r: (-abs(r.impact_h), r.material, r.operation))
    ranked = tuple(_ranked(r, i) for i, r in enumerate(rows, start=1))
    return DriftReport(work_center, period, settings, count, ranked)


def _ranked(row: DriftRow, rank: int) -> DriftRow:
    return DriftRow(
        row.material,
        row.material_text,
        row.operation,
        row.unit,
        row.operations,
        row.parts,
        row.run_h,
        row.micro_stop_h,
        row.planned_stop_h,
        row.unplanned_stop_h,
        row.cycle,
        row.setup,
        rank,
    )


def _row(
    material: str,
    operation: str,
    group: list[OperationActuals],
    settings: DriftSettings,
) -> DriftRow:
    group = sorted(group, key=lambda a: (a.ended_ms, a.op))
    micro_in = settings.micro_stops_in_cycle
    latest = group[-1]
    cycles = [(a, c) for a in group if (c := a.cycle_s(micro_in)) is not None]
    cycle_impact = sum(
        a.run_s(micro_in) - a.std_cycle_s * float(a.parts) for a, _ in cycles if a.std_cycle_s > 0
    )
    cycle = _figure(
        latest.std_cycle_s,
        [(c, a.std_cycle_s) for a, c in cycles],
        {a.std_cycle_s for a in group},
        cycle_impact / 3600,
        settings,
    )
    setups = [a for a in group if a.setup_s > 0]
    setup_impact = sum(a.setup_s - a.std_setup_s for a in setups if a.std_setup_s > 0)
    setup = _figure(
        latest.std_setup_s,
        [(a.setup_s, a.std_setup_s) for a in setups],
        {a.std_setup_s for a in group},
        setup_impact / 3600,
        settings,
    )
    return DriftRow(
        material=material,
        material_text=latest.material_text,
        operation=operation,
        unit=latest.unit,
        operations=len(group),
        parts=sum((a.parts for a in group), ZERO),
        run_h=sum(a.run_s(micro_in) for a in group) / 3600,
        micro_stop_h=sum(a.micro_stop_s for a in group) / 3600,
        planned_stop_h=sum(a.planned_stop_s for a in group) / 3600,
        unplanned_stop_h=sum(a.unplanned_stop_s for a in group) / 3600,
        cycle=cycle,
        setup=setup,
    )


def _figure(
    standard: float,
    values: list[tuple[float, float]],
    standards: set[float],
    impact_h: float,
    settings: DriftSettings,
) -> Figure:
    """``values``: (actual, the standard it was dispatched with) per operation."""
    if not values:
        return Figure(standard, 0, None, None, None, None, False, impact_h, ())
    actual = [v for v, _ in values]
    median = statistics.median(actual)
    if len(actual) > 1:
        q1, _, q3 = statistics.quantiles(actual, n=4, method="inclusive")
    else:
        q1 = q3 = actual[0]
    # Each operation against its own standard: a routing changed in the period is no drift.
    ratios = [v / std for v, std in values if std > 0]
    drift = statistics.median(ratios) - 1 if ratios and standard > 0 else None
    flagged = (
        drift is not None
        and len(ratios) >= settings.min_operations
        and abs(drift) > settings.threshold
    )
    seen = tuple(sorted(standards)) if len(standards) > 1 else ()
    return Figure(standard, len(values), median, q1, q3, drift, flagged, impact_h, seen)


# ------------------------------------------------------------------------------ the payload

# The largest numbers a payload carries (the message's bounds); a value beyond is capped there.
MAX_PAYLOAD_S = 1e12
MAX_PAYLOAD_H = 1e12
MAX_PAYLOAD_PCT = 1e9


def definitions(settings: DriftSettings) -> dict[str, str]:
    """How the report counts each time, in words, for every output (table, CSV, message)."""
    inside = settings.micro_stops_in_cycle
    return {
        "cycle": "actual cycle = run time / (good + scrap + rework), per completed operation; "
        "run time = time running without a stop" + (" + its micro-stops" if inside else ""),
        "micro_stops": "stops shorter than the micro-stop threshold without a planned reason: "
        + (
            "inside the run time (a speed loss every part pays)"
            if inside
            else "left out of the run time (down time, like the other stops)"
        ),
        "planned_stops": "stops with a planned reason: left out of the run time (down time)",
        "unplanned_stops": "stops past the micro-stop threshold without a planned reason "
        "(breakdowns, a reason pending): left out of the run time (down time)",
        "setup": "actual setup = time in setup (its stops included), operations with a setup",
        "drift": "median of actual / standard per operation - 1; flagged beyond the threshold "
        "with enough operations",
        "impact": "hours misplanned = sum over operations of (actual - standard) x quantity",
    }


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat().replace("+00:00", "Z")


def _cap(value: float, bound: float) -> float:
    return max(-bound, min(bound, value))


def _r(value: float | None, places: int = 3) -> float | None:
    return None if value is None else round(_cap(float(value), MAX_PAYLOAD_S), places)


def _h(value: float) -> float:
    return round(_cap(value, MAX_PAYLOAD_H), 3)


def _figure_payload(f: Figure) -> dict[str, object]:
    return {
        "standard_s": _r(f.standard_s),
        "samples": f.samples,
        "median_s": _r(f.median_s),
        "q1_s": _r(f.q1_s),
        "q3_s": _r(f.q3_s),
        "drift_pct": None if f.drift is None else round(_cap(f.drift * 100, MAX_PAYLOAD_PCT), 2),
        "flagged": f.flagged,
        "impact_h": _h(f.impact_h),
        "standards_s": [_r(s) for s in f.standards],
    }


def drift_payload(report: DriftReport, at_ms: int, top: int | None = MAX_ROWS) -> dict[str, object]:
    """The report as everyone shows it (``edge report drift``, the message to central
    planning): seconds and hours rounded, drift in percent, None where undefined, the rows by
    impact: the first ``top`` of them (the message's bound by default; None: all, for the
    CSV); ``materials`` counts every row."""
    s = report.settings
    rows = report.rows if top is None else report.rows[:top]
    return {
        "type": "routing_drift",
        "event_time": _iso(at_ms),
        "work_center": report.work_center,
        "period_start": _iso(report.period.start_ms),
        "period_end": _iso(report.period.end_ms),
        "threshold_pct": round(s.threshold * 100, 2),
        "min_operations": s.min_operations,
        "micro_stops": IN_CYCLE if s.micro_stops_in_cycle else EXCLUDED,
        "planned_stops": EXCLUDED,
        "definitions": definitions(s),
        "operations": report.operations,
        "materials": len(report.rows),
        "flagged": len(report.flagged),
        "rows": [
            {
                "rank": r.rank,
                "material": r.material,
                "material_text": r.material_text,
                "operation": r.operation,
                "unit": r.unit,
                "operations": r.operations,
                "parts": number(r.parts),
                "run_h": _h(r.run_h),
                "micro_stop_h": _h(r.micro_stop_h),
                "planned_stop_h": _h(r.planned_stop_h),
                "unplanned_stop_h": _h(r.unplanned_stop_h),
                "cycle": _figure_payload(r.cycle),
                "setup": _figure_payload(r.setup),
                "impact_h": _h(r.impact_h),
                "flagged": r.flagged,
            }
            for r in rows
        ],
    }


# The longest report the core sends on: MAX_ROWS rows of a few hundred bytes each.
MAX_REPORT_BYTES = 1_000_000


def on_drift_reported(s: WorkCenterState, d: DriftReported) -> None:
    """Send a routing-drift review on (``_mes_v1/report/drift``): the body as made by
    :func:`drift_payload` (its ``type`` and ``event_time`` come from the event)."""
    if len(d.body) > MAX_REPORT_BYTES:
        raise reject(
            RejectionCode.INVALID_VALUE,
            f"body: {len(d.body)} characters; a report has at most {MAX_REPORT_BYTES}",
            field="body",
            value=len(d.body),
        )
    try:
        body = json.loads(d.body)
    except ValueError as exc:
        raise reject(
            RejectionCode.INVALID_VALUE, f"body: not JSON ({exc})", field="body", value=None
        ) from None
    if not isinstance(body, dict) or body.get("type") != "routing_drift":
        raise reject(
            RejectionCode.INVALID_VALUE,
            'body: not a routing-drift report (an object with "type": "routing_drift")',
            field="body",
            value=None,
        )
    rows = body.get("rows")
    if not isinstance(rows, list) or len(rows) > MAX_ROWS:
        raise reject(
            RejectionCode.INVALID_VALUE,
            f"body.rows: a list of at most {MAX_ROWS} rows",
            field="body.rows",
            value=None,
        )
    data = {k: v for k, v in body.items() if k not in ("type", "event_time")}
    s.emit(EventType.ROUTING_DRIFT, d.at, None, None, **data)
