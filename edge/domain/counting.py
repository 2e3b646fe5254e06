"""Turning raw counter readings into parts (rules.md §3).

An absolute counter can go backwards for two reasons: it wrapped (16 or 32 bits) or it was reset
(order change, PLC restart). It can jump forward after a link gap or a gateway restart. The one
question behind every case is "could the machine have made that many in the time that passed?";
the answer comes from the maximum plausible rate. A reading that fails it becomes a new baseline
and a discontinuity for a supervisor: never one huge delta, never silently lost parts.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from edge.domain.clock import Instant


class ReadingKind(StrEnum):
    BASELINE = "baseline"  # first reading ever: nothing to count yet
    DUPLICATE = "duplicate"
    NORMAL = "normal"
    WRAP = "wrap"
    RESET = "reset"
    RESTART = "restart"  # first reading after the source said it restarted
    DISCONTINUITY = "discontinuity"


@dataclass(frozen=True, slots=True)
class ReadingResult:
    kind: ReadingKind
    signals: int  # signals to count (0 for baseline, duplicate and discontinuity)


def plausible_limit(max_rate_per_s: float | None, elapsed_ms: int, grace_s: float) -> float:
    """The most signals the machine could have made in ``elapsed_ms`` (infinite if rate unknown)."""
    if max_rate_per_s is None:
        return float("inf")
    return max_rate_per_s * (elapsed_ms / 1000 + grace_s)


def classify_reading(
    *,
    last_value: int | None,
    last_at: Instant | None,
    restarted_at: Instant | None,
    value: int,
    at: Instant,
    bits: int,
    max_rate_per_s: float | None,
    grace_s: float,
) -> ReadingResult:
    """Classify one reading of an absolute counter against the last one.

    The caller has checked that ``0 <= value < 2**bits``.
    """
    if restarted_at is not None:
        # The source restarted: its counter started again from 0 at that moment.
        limit = plausible_limit(max_rate_per_s, at.since(restarted_at), grace_s)
        if value <= limit:
            return ReadingResult(ReadingKind.RESTART, value)
        return ReadingResult(ReadingKind.DISCONTINUITY, 0)
    if last_value is None or last_at is None:
        return ReadingResult(ReadingKind.BASELINE, 0)
    if value == last_value:
        return ReadingResult(ReadingKind.DUPLICATE, 0)
    limit = plausible_limit(max_rate_per_s, at.since(last_at), grace_s)
    if value > last_value:
        delta = value - last_value
        if delta <= limit:
            return ReadingResult(ReadingKind.NORMAL, delta)
        return ReadingResult(ReadingKind.DISCONTINUITY, 0)
    modulus = 1 << bits
    across_wrap = modulus - last_value + value
    near_top = last_value >= modulus - modulus // 4
    if bits < 64 and near_top and across_wrap <= limit:
        return ReadingResult(ReadingKind.WRAP, across_wrap)
    if value <= limit:
        return ReadingResult(ReadingKind.RESET, value)
    return ReadingResult(ReadingKind.DISCONTINUITY, 0)
