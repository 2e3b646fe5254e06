"""The monotonic clock across restarts when the wall clock was wrong (a Pi without an RTC).

The gateway runs on a real store and engine; only the clocks it reads are replaced, the way a
Pi that booted in 1970 and got NTP later would show them: the wall clock, the monotonic clock,
the OS boot clock and the OS boot id.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import structlog

from edge.clock import TimeSource
from edge.domain.inputs import Action, DispatchList, Pulses, Transition
from edge.engine import Engine
from edge.metrics import MetricsSources, render
from edge.store.store import Store
from edge.sync import messages
from tests.engine.helpers import rules, spec

OP = "4711/0020"
DAY_MS = 86_400_000
FLOOR_MS = int(datetime(2026, 1, 15, tzinfo=UTC).timestamp() * 1000)
REAL_NOW_MS = int(datetime(2026, 3, 2, 7, 0, tzinfo=UTC).timestamp() * 1000)


@dataclass
class Machine:
    """One OS boot of the gateway's computer: what its clocks say, moved on by the test."""

    boot_id: str
    wall_ms: int
    uptime_ms: int
    ntp: bool | None = None

    def advance(self, ms: int) -> None:
        self.wall_ms += ms
        self.uptime_ms += ms

    def source(self) -> TimeSource:
        return TimeSource(
            wall_ns=lambda: self.wall_ms * 1_000_000,
            mono_ns=lambda: self.uptime_ms * 1_000_000,
            boottime_ns=lambda: self.uptime_ms * 1_000_000,
            boot_id=lambda: self.boot_id,
            ntp_synchronized=lambda: self.ntp,
            floor_ms=lambda: FLOOR_MS,  # the build date of the release in this story
        )


async def _open(db: Path, machine: Machine) -> Engine:
    return await Engine.open(Store(db), rules(), time_source=machine.source(), outbound=messages)


async def _first_run_in_1970(db: Path, machine: Machine, run_ms: int = 60_000) -> None:
    """Set up and produce for ``run_ms`` under the 1970 clock, then stop the service."""
    engine = await _open(db, machine)
    await engine.apply_now(DispatchList(1, (spec(),), engine.now()))
    await engine.apply_now(Transition(Action.START_PRODUCTION, OP, "operator:1", engine.now()))
    machine.advance(run_ms)
    await engine.apply_now(Pulses("pulses", 10, engine.now()))
    await engine.close()


async def _complete(engine: Engine) -> dict[str, object]:
    await engine.apply_now(Pulses("pulses", 5, engine.now()))
    await engine.apply_now(Transition(Action.COMPLETE, OP, "operator:1", engine.now()))
    rows = engine.store.conn.execute(
        "SELECT payload FROM outbox WHERE kind = 'confirmation_created' ORDER BY seq"
    ).fetchall()
    final: dict[str, object] = json.loads(rows[-1][0])
    return final


def _durations(conf: dict[str, object]) -> tuple[float, float]:
    iso = conf["iso22400"]
    act = conf["activities"]
    assert isinstance(iso, dict)
    assert isinstance(act, dict)
    return float(iso["APT_s"]), float(act["labour_s"])


async def test_1970_journal_then_a_reboot_with_the_right_time_does_not_jump(
    tmp_path: Path,
) -> None:
    """The field case: 55.8 years of APT_s and labour_s went to the ERP."""
    db = tmp_path / "edge.db"
    pi = Machine("boot-1", wall_ms=120_000, uptime_ms=120_000)  # 1970-01-01 00:02
    with structlog.testing.capture_logs() as logs:
        await _first_run_in_1970(db, pi)
    warned = [e for e in logs if e["log_level"] == "warning" and "not trusted" in e["event"]]
    assert warned
    assert warned[0]["wall_trusted"] is False
    assert "1970-01-01" in warned[0]["event"]

    # Power cut, reboot; NTP set the time before the gateway started, 30 s after boot.
    rebooted = Machine("boot-2", wall_ms=REAL_NOW_MS, uptime_ms=30_000, ntp=True)
    engine = await _open(db, rebooted)
    last = engine.store.last_instant()
    assert last is not None
    gap = engine.clock.now().mono_ms - last.mono_ms
    assert gap == 30_000  # this boot's uptime: the time that certainly passed
    assert engine.clock.resumption.how == "uptime"
    assert engine.clock.trusted
    rebooted.advance(20_000)
    apt_s, labour_s = _durations(await _complete(engine))
    await engine.close()
    # 60 s produced before the cut, 30 s down (at least), 20 s after it.
    assert 60 <= apt_s <= 60 + 30 + 20
    assert labour_s <= 60 + 30 + 20


async def test_a_service_restart_in_the_same_boot_is_exact_whatever_the_wall_clock_did(
    tmp_path: Path,
) -> None:
    db = tmp_path / "edge.db"
    pi = Machine("boot-1", wall_ms=120_000, uptime_ms=120_000)
    await _first_run_in_1970(db, pi)
    # NTP steps the clock by 56 years while the service is stopped for 10 s.
    pi.wall_ms = REAL_NOW_MS
    pi.uptime_ms += 10_000
    engine = await _open(db, pi)
    last = engine.store.last_instant()
    assert last is not None
    assert engine.clock.now().mono_ms - last.mono_ms == 10_000
    assert engine.clock.resumption.how == "same OS boot"
    pi.advance(5_000)
    apt_s, _ = _durations(await _complete(engine))
    await engine.close()
    assert apt_s == 60 + 10 + 5


async def test_two_plausible_wall_clocks_across_a_reboot_count_the_time_down(
    tmp_path: Path,
) -> None:
    db = tmp_path / "edge.db"
    pi = Machine("boot-1", wall_ms=REAL_NOW_MS, uptime_ms=50_000, ntp=True)
    await _first_run_in_1970(db, pi)
    # A weekend off: the reboot's wall clock (NTP) says 2 days later.
    later = Machine("boot-2", wall_ms=pi.wall_ms + 2 * DAY_MS, uptime_ms=40_000, ntp=True)
    engine = await _open(db, later)
    last = engine.store.last_instant()
    assert last is not None
    assert engine.clock.now().mono_ms - last.mono_ms == 2 * DAY_MS
    assert engine.clock.resumption.how == "wall clock"
    await engine.close()


async def test_a_wall_clock_that_went_back_is_untrusted_and_adds_nothing(
    tmp_path: Path,
) -> None:
    db = tmp_path / "edge.db"
    pi = Machine("boot-1", wall_ms=REAL_NOW_MS, uptime_ms=50_000, ntp=True)
    await _first_run_in_1970(db, pi)
    # A reboot with a dead RTC battery: 1970 again; the gap is this boot's uptime.
    cold = Machine("boot-2", wall_ms=15_000, uptime_ms=15_000, ntp=False)
    with structlog.testing.capture_logs() as logs:
        engine = await _open(db, cold)
    last = engine.store.last_instant()
    assert last is not None
    assert engine.clock.now().mono_ms - last.mono_ms == 15_000
    assert not engine.clock.trusted
    warning = next(e for e in logs if "not trusted" in e["event"])
    assert warning["ntp_synchronized"] is False
    assert "edge_wall_clock_trusted 0" in (await render(engine, MetricsSources())).splitlines()
    # NTP arrives while running: the flag clears and says so.
    with structlog.testing.capture_logs() as logs:
        cold.wall_ms = REAL_NOW_MS + DAY_MS
        before = engine.clock.now()
        cold.advance(1_000)
        after = engine.clock.now()
    assert engine.clock.trusted
    assert after.mono_ms - before.mono_ms == 1_000  # the step moved no duration
    assert any("plausible now" in e["event"] for e in logs)
    assert "edge_wall_clock_trusted 1" in (await render(engine, MetricsSources())).splitlines()
    await engine.close()
