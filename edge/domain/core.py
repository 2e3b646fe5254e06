"""The work center: one state, one ``apply`` per input, events or a rejection out.

The plant's rules live in one module per chapter of rules.md, each rule named where it is applied:

- ``lifecycle``: one active operation (§1), the operation state machine, split (§2) and merge;
- ``counting``: readings, pulses, unassigned production, cross-checks, scrap, corrections (§3);
- ``stops``: when a stop starts and ends, micro-stops, reasons (§4);
- ``times``: the time elements of an operation (§5);
- ``confirmations``: confirmations, reversal, resend, the ERP's verdict (§6, §9);
- ``dispatch``: the dispatch list, master data, what may change once started, (§7);
- ``material``: components, their batches and what each confirmation consumed;
- ``machine``: machine hours, starts, cycles and parts, maintenance intervals and requests;
- ``andon``: calls for help and what the stack light and panel show (§8);
- ``calendar`` and ``kpis``: the shift calendar, and ISO 22400 time elements and KPIs per shift,
  booked after every input that changed the state;
- ``retire``: finished operations, their confirmations and stops leave memory once nothing
  needs them there (their rows stay stored).

:class:`WorkCenter` owns the state (:class:`edge.domain.state.WorkCenterState`) and routes each
input to its chapter. It is synchronous and pure: time comes in with each input, nothing is read
from outside, nothing is written. The engine owns the only instance and persists what
``take_dirty`` names after each commit.

Every handler validates the whole input before it changes anything, so a rejection leaves the
state exactly as it was. An unexpected exception is a bug; the engine then throws this instance
away and reloads the state from the store, so a half-applied input never survives.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from edge.domain import (
    andon,
    confirmations,
    counting,
    crew,
    dispatch,
    drift,
    kpis,
    lifecycle,
    machine,
    material,
    retire,
    stops,
)
from edge.domain.andon import AndonState, andon_state
from edge.domain.calendar import shift_of
from edge.domain.clock import Instant
from edge.domain.confirmations import index_confirmation, next_verdict
from edge.domain.dispatch import FIXED_ONCE_STARTED, dispatch_order
from edge.domain.events import EventType, Outcome, Rejection, RejectionCode
from edge.domain.inputs import (
    AcknowledgeHelp,
    AcknowledgeOverDelivery,
    AssignUnassigned,
    BadgeScanned,
    CallForHelp,
    CloseHelp,
    ComponentBatchLoaded,
    ComponentConsumed,
    ConfirmationResult,
    CorrectCount,
    CounterReading,
    DeclareSetupGood,
    DispatchList,
    DriftReported,
    Input,
    MachineStateChanged,
    MasterDataReceived,
    MergeOperations,
    Pulses,
    ReportScrap,
    RequestConfirmation,
    RequestMaintenance,
    ResendConfirmation,
    RetireFinished,
    ReverseConfirmation,
    RulesApplied,
    ServiceDone,
    SetStopReason,
    SourceRestarted,
    Tick,
    Transition,
)
from edge.domain.kpis import Kpis, ShiftBook, ShiftTimes
from edge.domain.lifecycle import TRANSITIONS
from edge.domain.model import (
    Confirmation,
    CounterTrack,
    Operation,
    Stop,
    TimeElements,
    UnassignedProduction,
)
from edge.domain.rules import WorkCenterRules
from edge.domain.state import Reject, WorkCenterHeader, WorkCenterState, check_actor
from edge.domain.times import time_elements

__all__ = [
    "FIXED_ONCE_STARTED",
    "TRANSITIONS",
    "WorkCenter",
    "WorkCenterHeader",
    "check_actor",
    "dispatch_order",
    "next_verdict",
]


class WorkCenter(WorkCenterState):
    """One work center's orders, counting, stops and confirmations."""

    def __init__(self, rules: WorkCenterRules) -> None:
        super().__init__(rules)
        # Which chapter each input goes to.
        self._handlers: dict[type, Callable[[Any], bool | None]] = {
            CounterReading: partial(counting.on_reading, self),
            Pulses: partial(counting.on_pulses, self),
            SourceRestarted: partial(counting.on_source_restarted, self),
            ReportScrap: partial(counting.on_report_scrap, self),
            DeclareSetupGood: partial(counting.on_setup_good, self),
            AcknowledgeOverDelivery: partial(counting.on_acknowledge_over_delivery, self),
            AssignUnassigned: partial(counting.on_assign_unassigned, self),
            CorrectCount: partial(counting.on_correct_count, self),
            MachineStateChanged: partial(stops.on_machine_state, self),
            SetStopReason: partial(stops.on_stop_reason, self),
            Transition: partial(lifecycle.on_transition, self),
            RequestConfirmation: partial(confirmations.on_request_confirmation, self),
            ReverseConfirmation: partial(confirmations.on_reverse, self),
            ResendConfirmation: partial(confirmations.on_resend, self),
            ConfirmationResult: partial(confirmations.on_result, self),
            CallForHelp: partial(andon.on_call_for_help, self),
            AcknowledgeHelp: partial(andon.on_acknowledge_help, self),
            CloseHelp: partial(andon.on_close_help, self),
            DispatchList: partial(dispatch.on_dispatch, self),
            MasterDataReceived: partial(dispatch.on_master_data, self),
            MergeOperations: partial(lifecycle.on_merge, self),
            RetireFinished: partial(retire.on_retire, self),
            BadgeScanned: partial(crew.on_badge, self),
            ComponentBatchLoaded: partial(material.on_batch_loaded, self),
            ComponentConsumed: partial(material.on_consumed, self),
            ServiceDone: partial(machine.on_service_done, self),
            RequestMaintenance: partial(machine.on_request, self),
            DriftReported: partial(drift.on_drift_reported, self),
            Tick: self._on_tick,
            RulesApplied: self._on_rules,
        }

    @classmethod
    def restore(
        cls,
        header: WorkCenterHeader,
        operations: list[Operation],
        counters: list[CounterTrack],
        stops: list[Stop],
        confirmations: list[Confirmation],
        unassigned: list[UnassignedProduction],
        shifts: list[ShiftTimes],
    ) -> WorkCenter:
        """Rebuild from stored rows (the projections); derived indexes are recomputed."""
        wc = cls(header.rules)
        wc.header = header
        wc.operations = {op.key: op for op in operations}
        wc.counters = {c.source: c for c in counters}
        wc.stops = {s.stop_id: s for s in stops}
        wc.confirmations = {c.conf_id: c for c in confirmations}
        wc.unassigned = {u.unassigned_id: u for u in unassigned}
        wc.active_keys = sorted(k for k, op in wc.operations.items() if op.status.active)
        for conf in confirmations:
            index_confirmation(wc, conf)
        wc.shift_book = ShiftBook(wc.calendar, shifts)
        return wc

    # ------------------------------------------------------------------ apply

    def apply(self, inp: Input) -> Outcome:
        """Apply one input. Never raises for bad input: a rejection names what was wrong."""
        self.emitted = []
        handler = self._handlers.get(type(inp))
        if handler is None:
            return Outcome(
                rejection=Rejection(
                    RejectionCode.INVALID_VALUE, f"unknown input type {type(inp).__name__}"
                ),
                changed=False,
            )
        before = self.condition_before = kpis.condition_of(self)
        try:
            actor = getattr(inp, "actor", None)
            if actor is not None:
                check_actor(actor)
            changed = handler(inp)
        except Reject as rej:
            self.emitted = []
            return Outcome(rejection=rej.rejection, changed=False)
        at = getattr(inp, "at", None)
        if isinstance(at, Instant) and (self.emitted or changed is not False or type(inp) is Tick):
            # before the booking below moves the book's mark
            if self.rules.revision >= 2:
                kpis.close_ended(self, at)
            else:
                kpis.at_day_change(self, at)
            machine.after_input(self, at, bool(self.emitted) or changed is not False)
        events = tuple(self.emitted)
        self.emitted = []
        outcome = Outcome(events, changed=bool(events) or changed is not False)
        if outcome.changed and isinstance(at, Instant):
            kpis.on_change(self, before, at)
        self.condition_before = None
        return outcome

    def _on_tick(self, t: Tick) -> bool:
        """Time passes: stops, the shift, calls for help and timed confirmations, in this order."""
        now = t.at
        stops.on_time(self, now)
        kpis.at_shift_change(self, now)
        crew.at_shift_change(self, now)
        machine.at_shift_change(self, now)
        confirmations.at_shift_change(self, now)
        andon.escalate(self, now)
        confirmations.by_time(self, now)
        return False  # a tick changes state only through the events it emits

    def _on_rules(self, r: RulesApplied) -> None:
        self.header.rules = r.rules
        self.touch("work_center", "")
        machine.reconcile(self, r.at)
        self.emit(EventType.RULES_APPLIED, r.at, None, None, edge_id=r.rules.edge_id)

    # ------------------------------------------------------------------ reads

    def time_elements(self, op: Operation, now: Instant | None = None) -> TimeElements:
        """ISO 22400 time elements of one operation, down time by its stops' latest reasons."""
        return time_elements(self, op, now)

    def shift_kpis(self, now: Instant) -> Kpis | None:
        """ISO 22400 KPIs of the shift ``now`` falls in, up to ``now``."""
        return kpis.current(self, now)

    def day_kpis(self, now: Instant) -> Kpis | None:
        """ISO 22400 KPIs of the day of the shift ``now`` falls in (a night shift after
        midnight belongs to the day it started), up to ``now``."""
        return kpis.closing_day(self, shift_of(now, self.calendar)[1], now)

    def booked_kpis(self, shift_id: str) -> Kpis | None:
        """ISO 22400 KPIs of a booked shift (``2026-03-04/early``), stops by their latest
        reason."""
        return self.shift_book.kpis(shift_id, kpis.stop_facts(self))

    def retire_candidates(
        self, now: Instant, kept_h: float, max_kept: int | None = None
    ) -> retire.Candidates:
        """The finished operations that may leave memory at ``now`` and the stops (and
        assigned unassigned production) that would leave with them (edge.domain.retire);
        what the outbox still holds is the engine's to leave out."""
        return retire.candidates(self, now, kept_h, max_kept)

    def machine_hours(self, now: Instant) -> dict[str, object] | None:
        """The machine's hours, starts, cycles and parts and each maintenance interval's
        standing at ``now`` (edge.domain.machine); None until they are counted."""
        return machine.totals(self, now)

    def blocking_confirmation(self, op: Operation) -> Confirmation | None:
        """The confirmation of ``op`` the ERP rejected and nobody resent or reversed yet."""
        return confirmations.blocking_confirmation(self, op)

    @property
    def andon(self) -> AndonState:
        """What the stack light and the panel show (rules.md §4, §8)."""
        return andon_state(self)
