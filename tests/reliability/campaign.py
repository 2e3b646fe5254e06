"""What a long chain run did, for the summary table tests/reliability/conftest.py prints at
the end of the run: the faults by kind and the sum of ``judge``'s verdicts (the three
ledgers), never numbers typed in."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import pytest

from tests.reliability.chain import Schedule, Verdict, expected_stops

RECORDS = pytest.StashKey[list["CampaignRecord"]]()


@dataclass
class CampaignRecord:
    """What one long test did: its faults (by kind) and the sum of :func:`judge`'s verdicts
    over the schedules it judged."""

    test: str
    started: float = field(default_factory=time.monotonic)
    faults: dict[str, int] = field(default_factory=dict)
    rounds: int = 0  # schedules judged
    ops: int = 0
    parts: int = 0  # good + scrap the machine made
    confirmations: int = 0
    posted: int = 0
    lost: int = 0
    doubled: int = 0
    orphans: int = 0
    stops: int = 0  # the machine's alarm stops the schedules made
    stops_missed: int = 0
    problems: int = 0
    wall_s: float = 0.0
    outcome: str = "running"

    def fault(self, kind: str, n: int) -> None:
        self.faults[kind] = self.faults.get(kind, 0) + n

    @property
    def cycles(self) -> int:
        return sum(self.faults.values())

    def judged(self, schedule: Schedule, v: Verdict) -> None:
        self.rounds += 1
        self.ops += len(schedule.ops)
        self.parts += v.parts_made + v.scrap_made
        self.confirmations += v.confirmations
        self.posted += v.posted
        self.lost += len(v.lost)
        self.doubled += len(v.doubled)
        self.orphans += len(v.orphans)
        want = expected_stops(schedule)
        self.stops += want
        self.stops_missed += max(0, want - v.stops)
        self.problems += len(v.problems)
        self.wall_s = time.monotonic() - self.started

    def progress(self) -> str:
        faults = ", ".join(f"{k} {n}" for k, n in self.faults.items())
        return (
            f"{self.test}: {self.cycles} cycles ({faults}), {self.rounds} rounds, "
            f"{self.parts} parts, {self.confirmations} confirmations ({self.posted} in SAP), "
            f"lost {self.lost}, doubled {self.doubled}, orphans {self.orphans}, stops missed "
            f"{self.stops_missed} of {self.stops}, problems {self.problems}, "
            f"{self.wall_s:.0f} s"
        )
