"""A work center on simulated time for the drift report's tests: operations set up, run, stop and
complete through the real core (edge.domain.core.WorkCenter), and the result stored the way the
engine stores it (journal, events and projection rows in one commit of edge.store.Store).

Time is counted in seconds after 2025-01-06 06:00 UTC (a Monday) on both clocks.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from edge.domain.clock import Instant
from edge.domain.core import WorkCenter
from edge.domain.inputs import (
    Action,
    DispatchList,
    Input,
    MachineState,
    MachineStateChanged,
    Pulses,
    SetStopReason,
    Transition,
)
from edge.domain.model import OperationSpec
from edge.domain.rules import CountKind, CountSource, SignalType
from edge.store import codec
from edge.store.store import JournalEntry, Store
from tests.domain.builders import WC_NAME, make_rules

T0_WALL_MS = int(datetime(2025, 1, 6, 6, 0, tzinfo=UTC).timestamp() * 1000)
MONO0_MS = 7_000_000
PULSE = CountSource("press1", CountKind.GOOD, SignalType.PULSE)
OPERATOR = "operator:17"
PLANNED = "BRK"  # planned in tests.domain.builders.MASTER
UNPLANNED = "M01"


def at(seconds: float) -> Instant:
    ms = round(seconds * 1000)
    return Instant(T0_WALL_MS + ms, MONO0_MS + ms)


def wall_ms(seconds: float) -> int:
    return at(seconds).wall_ms


@dataclass(frozen=True, slots=True)
class StopPlan:
    """A stop inside the run: ``kind`` micro, planned or unplanned, for ``s`` seconds."""

    kind: str
    s: float


class Floor:
    """One work center; every input goes through the core and must be accepted."""

    def __init__(self) -> None:
        self.wc = WorkCenter(make_rules(sources=(PULSE,)))
        self.t = 0.0
        self.version = 0
        self.orders = 0
        self.entries: list[JournalEntry] = []

    def apply(self, inp: Input) -> None:
        out = self.wc.apply(inp)
        assert out.rejection is None, f"{inp} was rejected: {out.rejection}"
        self.entries.append(JournalEntry(inp, out.events))
        self.wc.take_dirty()  # as the engine does after each commit; store() writes every row

    def operation(
        self,
        material: str,
        operation: str = "0010",
        *,
        std_cycle_s: float,
        std_setup_s: float = 0.0,
        setup_s: float = 0.0,
        production_s: float,
        parts: int,
        stops: tuple[StopPlan, ...] = (),
        material_text: str = "",
        gap_s: float = 600.0,
    ) -> str:
        """Dispatch, set up for ``setup_s`` (none: straight to production), run for
        ``production_s`` of production time with ``stops`` in between, count ``parts`` and
        complete; the next operation starts ``gap_s`` later. Returns the operation's key."""
        self.orders += 1
        self.version += 1
        order = f"{100000 + self.orders}"
        spec = OperationSpec(
            order=order,
            operation=operation,
            material=material,
            material_text=material_text,
            target_qty=Decimal(max(parts, 1)),
            work_center=WC_NAME,
            std_cycle_s=std_cycle_s,
            std_setup_s=std_setup_s,
        )
        key = f"{order}/{operation}"
        self.apply(DispatchList(self.version, (spec,), at(self.t)))
        if setup_s:
            self.apply(Transition(Action.START_SETUP, key, OPERATOR, at(self.t)))
            self.t += setup_s
        self.apply(Transition(Action.START_PRODUCTION, key, OPERATOR, at(self.t)))
        segments = len(stops) + 1
        for i in range(segments):
            self.t += production_s / segments
            n = parts // segments + (1 if i < parts % segments else 0)
            if n:
                self.apply(Pulses(PULSE.name, n, at(self.t)))
            if i < len(stops):
                self.stop(stops[i])
        if self.wc.operations[spec.key].status.active:
            self.apply(Transition(Action.COMPLETE, key, OPERATOR, at(self.t)))
        self.t += gap_s
        return key

    def stop(self, plan: StopPlan) -> None:
        self.apply(MachineStateChanged(PULSE.name, MachineState.DOWN, at(self.t)))
        if plan.kind == "planned":
            self.apply(SetStopReason(PLANNED, OPERATOR, at(self.t + min(1.0, plan.s / 2))))
        self.t += plan.s
        self.apply(MachineStateChanged(PULSE.name, MachineState.RUNNING, at(self.t)))
        if plan.kind == "unplanned":
            self.apply(SetStopReason(UNPLANNED, OPERATOR, at(self.t)))

    def store(self, path: Path) -> Path:
        """Everything applied, stored as the engine stores it: the journal with its events and
        the projection rows, in one transaction of the real store."""
        store = Store(path)
        store.open()
        try:
            rows = [
                (table, key, doc)
                for table, docs in codec.all_docs(self.wc).items()
                for key, doc in docs.items()
            ]
            store.commit(self.entries, rows)
        finally:
            store.close()
        return path
