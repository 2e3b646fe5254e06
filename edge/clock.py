"""The gateway's clock: wall time for people, and a monotonic time that survives restarts.

Within one run the monotonic part comes from ``time.monotonic_ns``. Across a restart it goes on
from the last journaled instant plus the wall-clock time that passed while the gateway was down
(never less than zero), so a duration spanning a restart stays exact even if the wall clock
stepped while the gateway ran.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from edge.domain.clock import Instant


class GatewayClock:
    def __init__(
        self,
        last: Instant | None = None,
        *,
        wall_ns: Callable[[], int] = time.time_ns,
        mono_ns: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        self._wall_ns = wall_ns
        self._mono_ns = mono_ns
        wall_ms = wall_ns() // 1_000_000
        self._base = wall_ms if last is None else last.mono_ms + max(0, wall_ms - last.wall_ms)
        self._mono0 = mono_ns() // 1_000_000

    def now(self) -> Instant:
        mono = self._base + self._mono_ns() // 1_000_000 - self._mono0
        return Instant(self._wall_ns() // 1_000_000, mono)
