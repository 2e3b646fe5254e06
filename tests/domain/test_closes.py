"""Shifts and days close once, after their end, whatever the wall clock does (rules of
revision 2, edge.domain.kpis.close_ended).

The wall clock steps here while the monotonic clock runs on, as NTP stepping the clock, a
wrong real-time clock corrected, or a board that booted in 1970 would make it. Before this
rule a step back closed the running shift early and sent shifts and days a second time when
the clock passed their end again, and a step forward over an end closed the day late or
never (the span it looked at was placed by the monotonic clock).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from edge.domain.clock import Instant
from edge.domain.core import WorkCenter
from edge.domain.events import EventType
from edge.domain.inputs import Action, DispatchList, Pulses, Tick, Transition
from edge.domain.kpis import RECLOSE_BEHIND_MS
from edge.domain.rules import Shift
from edge.store import codec

from .builders import OPERATOR, make_rules, ok, pulse_source, spec

H = 3_600_000
MIN = 60_000
DAY = 24 * H
EARLY = Shift.parse("early", "06:00", "14:00")
LATE = Shift.parse("late", "14:00", "22:00")
NIGHT = Shift.parse("night", "22:00", "06:00")
MONDAY = int(datetime(2026, 3, 2, tzinfo=UTC).timestamp() * 1000)  # 00:00 UTC


@dataclass
class Press:
    """A work center running one operation, fed by a wall clock that can step while the
    monotonic clock runs on; every close it sent, with the wall time it went out at."""

    wc: WorkCenter
    wall: int
    mono: int = 10_000_000
    closes: list[tuple[str, str, int, dict[str, Any]]] = field(default_factory=list)

    @property
    def now(self) -> Instant:
        return Instant(self.wall, self.mono)

    def feed(self, out: Any) -> None:
        for e in out.events:
            if e.type in (EventType.SHIFT_CLOSED, EventType.DAY_CLOSED):
                kind = "shift" if e.type is EventType.SHIFT_CLOSED else "day"
                self.closes.append((kind, e.data["shift_id"], self.wall, e.data))

    def run(self, ms: int, parts_per_tick: int = 6, tick_ms: int = 10 * MIN) -> None:
        """``ms`` of time passing: a tick and some parts every ``tick_ms``."""
        end = self.mono + ms
        while self.mono < end:
            step = min(tick_ms, end - self.mono)
            self.wall += step
            self.mono += step
            if parts_per_tick:
                self.feed(ok(self.wc, Pulses("press1", parts_per_tick, self.now)))
            self.feed(ok(self.wc, Tick(self.now)))

    def step(self, ms: int) -> None:
        self.wall += ms

    def sent(self, kind: str) -> list[str]:
        return [key for k, key, _, _ in self.closes if k == kind]

    def when(self, key: str) -> list[int]:
        return [at for _, k, at, _ in self.closes if k == key]

    def payloads(self, key: str) -> list[dict[str, Any]]:
        return [data for _, k, _, data in self.closes if k == key]

    def twice(self) -> list[str]:
        return [key for key, n in Counter(k for _, k, _, _ in self.closes).items() if n > 1]


def press(*shifts: Shift, start_h: float = 9, revision: int = 2) -> Press:
    """From 09:00 on Monday 2 March 2026 (UTC), production from 09:10."""
    rules = make_rules(sources=(pulse_source("press1"),), shifts=shifts, revision=revision)
    p = Press(WorkCenter(rules), MONDAY + int(start_h * H))
    ok(p.wc, DispatchList(1, (spec(std_cycle_s=10.0, target=1_000_000),), p.now))
    p.run(10 * MIN, parts_per_tick=0)
    ok(p.wc, Transition(Action.START_PRODUCTION, "4711/0020", OPERATOR, p.now))
    return p


def at(day: int, hh: float) -> int:
    return MONDAY + day * DAY + int(hh * H)


def test_without_steps_each_shift_and_day_closes_once_at_its_end() -> None:
    p = press(EARLY, LATE, NIGHT)
    p.run(46 * H)  # Monday 09:10 to Wednesday 07:10
    assert p.sent("shift") == [
        "2026-03-02/early", "2026-03-02/late", "2026-03-02/night",
        "2026-03-03/early", "2026-03-03/late", "2026-03-03/night",
    ]  # fmt: skip
    assert p.sent("day") == ["2026-03-02", "2026-03-03"]
    assert p.when("2026-03-02/early") == [at(0, 14.0)]  # the tick at 14:00
    # the day with its night shift (it ends at 06:00): the shift first, then the day
    kinds = [(k, key) for k, key, _, _ in p.closes]
    assert kinds.index(("shift", "2026-03-02/night")) + 1 == kinds.index(("day", "2026-03-02"))
    assert not p.twice()


def test_a_step_forward_over_midnight_closes_the_day_at_once() -> None:
    p = press(EARLY, LATE)
    p.run(14 * H + 40 * MIN)  # to 23:50
    p.step(H)
    p.run(10 * MIN)  # the first input after the step says 01:00
    assert p.sent("day") == ["2026-03-02"]
    assert p.when("2026-03-02") == [at(1, 1.0)]
    p.run(H)
    assert not p.twice()


def test_a_step_back_after_midnight_sends_no_day_again() -> None:
    p = press(EARLY, LATE)
    p.run(15 * H)  # to 00:10 Tuesday: Monday closed
    assert p.sent("day") == ["2026-03-02"]
    p.step(-H)  # 23:10 Monday again
    p.run(3 * H)
    assert p.sent("day") == ["2026-03-02"]
    p.run(24 * H)
    assert p.sent("day") == ["2026-03-02", "2026-03-03"]
    assert not p.twice()


def test_a_step_back_a_day_never_corrected_closes_each_shift_once_after_its_end() -> None:
    p = press(EARLY, LATE)
    p.run(25 * H)  # Tuesday 10:10, the early shift running
    p.step(-DAY)  # Monday 10:10 again
    p.run(H)
    # The running shift goes on: the step did not end it.
    assert "2026-03-03/early" not in p.sent("shift")
    p.run(40 * H)
    assert not p.twice()
    # Tuesday's early shift ends when the clock passes its end, and not before.
    (closed,) = p.when("2026-03-03/early")
    assert closed >= at(1, 14.0)
    assert p.sent("day") == ["2026-03-02", "2026-03-03"]


def test_a_step_back_a_day_corrected_later_closes_what_ended_at_the_correction() -> None:
    p = press(EARLY, LATE)
    p.run(25 * H)  # Tuesday 10:10
    p.step(-DAY)  # Monday 10:10
    p.run(5 * H)  # Monday 15:10 by the wrong clock
    assert "2026-03-03/early" not in p.sent("shift")
    p.step(DAY)  # corrected: Tuesday 15:10
    p.run(10 * MIN)
    # Tuesday's early shift ended at 14:00: it goes out at the first input after the
    # correction, with every part booked into it.
    assert p.when("2026-03-03/early") == [at(1, 15.0 + 2 / 6)]
    p.run(24 * H)
    assert not p.twice()
    assert p.sent("day") == ["2026-03-02", "2026-03-03"]


def test_a_wrong_step_days_ahead_then_corrected_closes_the_real_shift_again() -> None:
    p = press(EARLY, LATE)
    p.run(25 * H)  # Tuesday 10:10
    p.step(10 * DAY)  # a wrong clock: Friday of the week after
    p.run(2 * H)
    early = "2026-03-03/early"
    assert p.when(early) == [at(11, 10.0 + 2 / 6)]  # closed early, under the wrong clock
    first = p.payloads(early)[0]
    p.step(-10 * DAY)  # corrected: Tuesday 12:10; the clock was more than two days ahead
    assert 10 * DAY > RECLOSE_BEHIND_MS
    p.run(3 * H)
    # The real shift closes again at its real end, with what was made in it after the step.
    assert p.when(early) == [at(11, 10.0 + 2 / 6), at(1, 14.0)]
    assert p.payloads(early)[1]["good"] > first["good"]
    # The shift the wrong clock ran in is not closed by the correction.
    assert "2026-03-13/early" not in p.sent("shift")


def test_a_wrong_step_months_ahead_then_corrected_closes_the_real_shift_once() -> None:
    """Of a gap longer than the book keeps (KEEP_DAYS) nothing older closes: the real shift
    closes once, at its real end after the correction."""
    p = press(EARLY, LATE)
    p.run(25 * H)
    p.step(90 * DAY)
    p.run(2 * H)
    assert "2026-03-03/early" not in p.sent("shift")
    p.step(-90 * DAY)
    p.run(3 * H)
    assert p.when("2026-03-03/early") == [at(1, 14.0)]


def test_a_boot_in_1970_closes_nothing_and_abandons_nothing() -> None:
    p = press(EARLY, LATE)
    p.run(15 * H)  # Tuesday 00:10: Monday closed
    real = p.wall
    p.step(-real + 3 * H)  # 1 January 1970, 03:00
    p.run(2 * H)
    assert [c for c in p.closes if c[2] < MONDAY] == []
    p.step(real - 3 * H)  # NTP answers: Tuesday 02:10 (the two hours passed)
    p.run(30 * H)
    assert not p.twice()
    assert p.sent("day") == ["2026-03-02", "2026-03-03"]


def test_a_restored_work_center_goes_on_from_the_same_close() -> None:
    p = press(EARLY, LATE)
    p.run(25 * H)
    p.step(-H)
    p.run(H)
    again = codec.restore(codec.all_docs(p.wc))
    assert again is not None
    assert again.header.closed_to_ms == p.wc.header.closed_to_ms
    twin = Press(again, p.wall, p.mono)
    p.run(30 * H)
    twin.run(30 * H)
    assert [c[:3] for c in twin.closes] == [c[:3] for c in p.closes[-len(twin.closes) :]]
    assert twin.closes


def test_journals_of_older_rules_close_as_they_did() -> None:
    """Under rules of revision 1 the step back closes the running shift at once, as the
    versions before made it (a journal they wrote replays the same)."""
    p = press(EARLY, LATE, revision=1)
    p.run(25 * H)
    p.step(-DAY)
    p.run(20 * MIN)
    assert "2026-03-03/early" in p.sent("shift")
