"""The gateway's clock: wall time for people, and a monotonic time that survives restarts.

Within one run the monotonic part comes from ``time.monotonic_ns``. Across a restart it goes on
from the last journaled instant by the time that passed while the gateway was down, judged
from what can be trusted, in this order:

1. **The same OS boot** (a restart of the service): the identity file beside the database keeps
   where this clock stood against the OS boot clock (``CLOCK_BOOTTIME``, which no wall-clock
   step moves), so the gap is exact, whatever the wall clock did.
2. **A new OS boot, both wall times plausible** (the last journaled one and now, and now is
   not before it): the wall-clock difference, but at least this boot's uptime.
3. **Otherwise** (a journal written under a 1970 clock, a Pi without an RTC before NTP, a
   clock that went back): this boot's uptime after a reboot (time that certainly passed), or
   nothing when not even that is known. Never a wall-clock difference that cannot be true.

The wall clock is judged at start and watched after: before a plausible time (the build date of
this package, or more than five minutes before the last journaled event) event times are
*untrusted*: a warning in the log, a flag in ``/metrics``, and a log line when it becomes
plausible (NTP stepped it).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from edge.domain.clock import EARLIEST_PLAUSIBLE, Instant
from edge.store.identity import ClockAnchor

log = structlog.get_logger("edge.clock")

CLOCK_WENT_BACK_MS = 300_000  # a wall clock this far before the last journaled event is wrong
TIMESYNCD_FLAG = Path("/run/systemd/timesync/synchronized")
_TIME_ERROR = 5  # adjtimex(2): the kernel clock is not synchronized


def build_floor_ms() -> int:
    """The earliest plausible wall time: this package's build (its files' time) or the floor."""
    floor = int(EARLIEST_PLAUSIBLE.timestamp() * 1000)
    try:
        built = int(Path(__file__).with_name("__init__.py").stat().st_mtime * 1000)
    except OSError:
        return floor
    # A day of slack for the build machine's own clock.
    return max(floor, built - 86_400_000)


def ntp_synchronized() -> bool | None:
    """Whether the kernel clock is NTP-synchronized: True, False, or None if it cannot be read."""
    if TIMESYNCD_FLAG.exists():
        return True
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        buf = ctypes.create_string_buffer(512)  # struct timex, modes = 0: only read
        state = int(libc.adjtimex(buf))
    except (OSError, AttributeError):
        return None
    if state < 0:
        return None
    return state != _TIME_ERROR


def _boottime_ns() -> int:
    return time.clock_gettime_ns(time.CLOCK_BOOTTIME)


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


@dataclass(frozen=True, slots=True)
class TimeSource:
    """Where the clock reads time; tests pass their own to replay a 1970 boot."""

    wall_ns: Callable[[], int] = time.time_ns
    mono_ns: Callable[[], int] = time.monotonic_ns
    boottime_ns: Callable[[], int] = _boottime_ns
    boot_id: Callable[[], str] = _boot_id
    ntp_synchronized: Callable[[], bool | None] = ntp_synchronized
    floor_ms: Callable[[], int] = build_floor_ms


@dataclass(frozen=True, slots=True)
class Resumption:
    """How the monotonic clock went on from the last journaled instant at this start."""

    gap_ms: int
    how: str  # "first start", "same OS boot", "wall clock", "uptime", "unknown"
    wall_trusted: bool
    reasons: tuple[str, ...] = field(default_factory=tuple)
    ntp_synchronized: bool | None = None


class GatewayClock:
    def __init__(
        self,
        last: Instant | None = None,
        *,
        wall_ns: Callable[[], int] = time.time_ns,
        mono_ns: Callable[[], int] = time.monotonic_ns,
        anchor: ClockAnchor | None = None,
        source: TimeSource | None = None,
    ) -> None:
        src = source or TimeSource(wall_ns=wall_ns, mono_ns=mono_ns)
        self._wall_ns = src.wall_ns
        self._mono_ns = src.mono_ns
        wall_ms = src.wall_ns() // 1_000_000
        boottime_ms = src.boottime_ns() // 1_000_000
        boot_id = src.boot_id()
        floor = src.floor_ms()
        self._threshold = floor
        reasons: list[str] = []
        if wall_ms < floor:
            reasons.append(
                f"the wall clock says {_iso(wall_ms)}, before {_iso(floor)}, the earliest "
                "plausible time (this version's build)"
            )
        last_ok = last is not None and last.wall_ms >= floor
        if last is not None and last_ok:
            self._threshold = max(floor, last.wall_ms - CLOCK_WENT_BACK_MS)
            if wall_ms < last.wall_ms - CLOCK_WENT_BACK_MS:
                reasons.append(
                    f"the wall clock says {_iso(wall_ms)}, before the last journaled event "
                    f"({_iso(last.wall_ms)}): it went back"
                )
        if last is not None and not last_ok:
            reasons.append(
                f"the last journaled event was stamped {_iso(last.wall_ms)} under a wrong clock"
            )
        wall_ok = wall_ms >= self._threshold
        exact_from: int | None = None
        if last is None:
            gap, how = 0, "first start"
            base = wall_ms
        else:
            same_boot = (
                anchor is not None
                and bool(boot_id)
                and anchor.boot_id == boot_id
                and last.mono_ms >= anchor.exact_from_mono_ms
            )
            if same_boot and anchor is not None:
                last_boottime = anchor.boottime_ms + (last.mono_ms - anchor.mono_ms)
                gap, how = max(0, boottime_ms - last_boottime), "same OS boot"
                exact_from = anchor.exact_from_mono_ms
            elif last_ok and wall_ok and wall_ms >= last.wall_ms:
                # A new OS boot (or one not known): the down time is at least its uptime.
                rebooted = anchor is not None and anchor.boot_id != boot_id
                floor_gap = boottime_ms if rebooted else 0
                gap, how = max(wall_ms - last.wall_ms, floor_gap), "wall clock"
            elif anchor is not None and anchor.boot_id != boot_id:
                gap, how = boottime_ms, "uptime"  # time that certainly passed since the reboot
            else:
                gap, how = 0, "unknown"
            base = last.mono_ms + gap
        self._base = base
        self._mono0 = src.mono_ns() // 1_000_000
        self.anchor = ClockAnchor(
            boot_id, boottime_ms, base, base if exact_from is None else exact_from
        )
        self.trusted = wall_ok
        self.resumption = Resumption(gap, how, wall_ok, tuple(reasons), src.ntp_synchronized())

    def now(self) -> Instant:
        wall = self._wall_ns() // 1_000_000
        mono = self._base + self._mono_ns() // 1_000_000 - self._mono0
        plausible = wall >= self._threshold
        if plausible != self.trusted:
            self._changed(plausible, wall)
        return Instant(wall, mono)

    def _changed(self, plausible: bool, wall_ms: int) -> None:
        self.trusted = plausible
        if plausible:
            log.info("the wall clock is plausible now; event times are trusted", wall=_iso(wall_ms))
        else:
            log.warning(
                "the wall clock went back before a plausible time; event times are untrusted",
                wall=_iso(wall_ms),
                earliest=_iso(self._threshold),
            )

    def report(self) -> None:
        """Say at start how the clock was judged (a warning when event times are untrusted)."""
        r = self.resumption
        fields: dict[str, Any] = {
            "wall": _iso(self._wall_ns() // 1_000_000),
            "gap_s": r.gap_ms / 1000,
            "resumed_by": r.how,
            "ntp_synchronized": r.ntp_synchronized,
        }
        if r.wall_trusted and not r.reasons:
            log.info("clock started", **fields)
            return
        log.warning(
            "the wall clock is not trusted: " + "; ".join(r.reasons) + ". Event times are "
            "flagged untrusted until it is plausible; durations go on from the last journaled "
            f"instant by {r.gap_ms / 1000:g} s ({r.how}), never by a wall-clock jump",
            wall_trusted=r.wall_trusted,
            **fields,
        )


def _iso(ms: int) -> str:
    try:
        return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="seconds")
    except (OverflowError, OSError, ValueError):
        return str(ms)
