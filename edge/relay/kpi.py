"""The relay's KPI, confirmation latency (machine event to ERP posting): one home for how it is
summed up, for ``edge relay stats`` and the retained ``<root>/_mes_v1/relay/kpi`` alike."""

from __future__ import annotations

from collections import defaultdict
from typing import Any


def percentile(values: list[int], q: float) -> int:
    """Nearest-rank percentile of ascending ``values`` (not empty)."""
    rank = max(1, min(len(values), int(-(-q * len(values) // 1))))
    return values[rank - 1]


def latency_table(rows: list[tuple[str, str, int]]) -> list[dict[str, Any]]:
    """(work center, ERP, ms) rows -> count, p50, p95, max per work center and ERP."""
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    for work_center, erp, ms in rows:
        groups[(work_center, erp)].append(ms)
    table = []
    for (work_center, erp), values in sorted(groups.items()):
        values.sort()
        table.append(
            {
                "work_center": work_center,
                "erp": erp,
                "count": len(values),
                "p50_ms": percentile(values, 0.50),
                "p95_ms": percentile(values, 0.95),
                "max_ms": values[-1],
            }
        )
    return table


def kpi_body(values: list[int], window_s: float, erp: str, now_ms: int) -> dict[str, Any]:
    """The retained ``relay/kpi`` message of one work center (``values`` ascending, in ms)."""
    return {
        "metric": "confirmation_latency",
        "erp": erp,
        "window_s": window_s,
        "count": len(values),
        "p50_ms": percentile(values, 0.50),
        "p95_ms": percentile(values, 0.95),
        "max_ms": values[-1],
        "ts_ms": now_ms,
    }
