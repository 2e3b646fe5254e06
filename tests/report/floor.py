"""A work center on simulated time for the drift report's tests: operations set up, run, stop and
complete through the real core (edge.domain.core.WorkCenter), and, given a database, stored the
way the engine stores them: after each operation one commit of edge.store.Store with the
journal and its events, the rows that changed and the rows that left memory. As in the running
gateway, the ERP's relay answers every confirmation ("posted") and the maintenance lets
finished operations leave memory after ``kept_h`` (edge.domain.retire): a year's history is
then in the database, not in the core.

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
    ConfirmationResult,
    DispatchList,
    Input,
    MachineState,
    MachineStateChanged,
    Pulses,
    ResultStatus,
    RetireFinished,
    SetStopReason,
    Transition,
)
from edge.domain.model import ConfirmationStatus, OperationSpec
from edge.domain.rules import CountKind, CountSource, SignalType
from edge.store import codec
from edge.store.store import JournalEntry, Store, retired_rows
from tests.domain.builders import WC_NAME, make_rules

T0_WALL_MS = int(datetime(2025, 1, 6, 6, 0, tzinfo=UTC).timestamp() * 1000)
MONO0_MS = 7_000_000
PULSE = CountSource("press1", CountKind.GOOD, SignalType.PULSE)
OPERATOR = "operator:17"
PLANNED = "BRK"  # planned in tests.domain.builders.MASTER
UNPLANNED = "M01"
KEPT_H = 72.0  # [retention] finished_in_memory_h's default


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

    def __init__(self, db: Path | None = None) -> None:
        self.wc = WorkCenter(make_rules(sources=(PULSE,)))
        self.t = 0.0
        self.version = 0
        self.orders = 0
        self.entries: list[JournalEntry] = []
        self.dirty: set[tuple[str, str]] = set()
        self.store: Store | None = None
        if db is not None:
            self.store = Store(db)
            self.store.open()

    def apply(self, inp: Input) -> None:
        out = self.wc.apply(inp)
        assert out.rejection is None, f"{inp} was rejected: {out.rejection}"
        self.entries.append(JournalEntry(inp, out.events))
        self.dirty |= self.wc.take_dirty()

    def commit(self) -> None:
        """What the engine writes after a batch: the journal, the changed rows, the rows that
        left memory."""
        if self.store is None:
            return
        rows = [(t, k, codec.entity_doc(self.wc, t, k)) for t, k in sorted(self.dirty)]
        self.store.commit(self.entries, rows, retired_rows(self.wc))
        self.entries, self.dirty = [], set()

    def close(self) -> None:
        self.commit()
        if self.store is not None:
            self.store.close()

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
        self.t += 1
        for conf in list(self.wc.confirmations.values()):  # the relay: posted
            if conf.status is ConfirmationStatus.AWAITING_RESULT:
                self.apply(ConfirmationResult(conf.idem_key, ResultStatus.POSTED, at(self.t)))
        self.retire()
        self.commit()
        self.t += gap_s
        return key

    def retire(self) -> None:
        """The engine's maintenance: what is ready leaves memory (its rows stay stored)."""
        found = self.wc.retire_candidates(at(self.t), KEPT_H)
        if found.ops or found.stops or found.unassigned:
            self.apply(RetireFinished(tuple(found.ops), KEPT_H, at(self.t)))

    def stop(self, plan: StopPlan) -> None:
        self.apply(MachineStateChanged(PULSE.name, MachineState.DOWN, at(self.t)))
        if plan.kind == "planned":
            self.apply(SetStopReason(PLANNED, OPERATOR, at(self.t + min(1.0, plan.s / 2))))
        self.t += plan.s
        self.apply(MachineStateChanged(PULSE.name, MachineState.RUNNING, at(self.t)))
        if plan.kind == "unplanned":
            self.apply(SetStopReason(UNPLANNED, OPERATOR, at(self.t)))
