"""Points in time as the core sees them.

The core never reads a clock. Every input carries an :class:`Instant` stamped by the adapter that
received it: a wall-clock time for what people and the ERP read (posting dates, period start and
end) and a monotonic time for every duration, so a wall-clock step (NTP, a wrong RTC after a
power cut) never makes a duration negative or jump. The engine keeps the monotonic time
continuous across restarts, so durations stay exact over a gateway restart too.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

# No gateway of this version ran before this date: a wall clock (or a date made from one) before
# it is wrong: a board without a real-time clock that booted before NTP answered says 1970.
EARLIEST_PLAUSIBLE = datetime(2025, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Instant:
    """One moment: wall clock in epoch milliseconds (UTC) and gateway-monotonic milliseconds."""

    wall_ms: int
    mono_ms: int

    def since(self, earlier: Instant) -> int:
        """Milliseconds from ``earlier`` to this instant; never negative."""
        return max(0, self.mono_ms - earlier.mono_ms)

    def wall(self) -> datetime:
        return datetime.fromtimestamp(self.wall_ms / 1000, tz=UTC)

    def iso(self) -> str:
        return self.wall().isoformat(timespec="milliseconds").replace("+00:00", "Z")

    def after_ms(self, ms: int) -> Instant:
        """The instant ``ms`` later on both clocks (used for simulated time)."""
        return Instant(self.wall_ms + ms, self.mono_ms + ms)
