"""A Prometheus-style histogram: fixed buckets, counts, sum. No locking: used on the loop only."""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field

# Publish -> PUBACK on a plant network: a millisecond on loopback, up to seconds over a bad link.
LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip


@dataclass(slots=True)
class Histogram:
    buckets: tuple[float, ...] = LATENCY_BUCKETS_S
    counts: list[int] = field(default_factory=list)  # per bucket, the last one is +Inf
    total: int = 0
    sum: float = 0.0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.buckets) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.buckets, value)] += 1
        self.total += 1
        self.sum += value

    def cumulative(self) -> list[tuple[str, int]]:
        """(le, count) pairs as Prometheus wants them: cumulative, ending with +Inf."""
        out: list[tuple[str, int]] = []
        running = 0
        for bound, n in zip((*map(_le, self.buckets), "+Inf"), self.counts, strict=True):
            running += n
            out.append((bound, running))
        return out


def _le(bound: float) -> str:
    return f"{bound:g}"
