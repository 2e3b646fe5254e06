"""What the core decides: events (facts that happened) and rejections (inputs refused).

Events are journaled and the ones central needs go to the outbox. A rejection changes nothing;
it names the current state, the attempted action, and the field and value that were wrong.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from edge.domain.clock import Instant


class EventType(StrEnum):
    OPERATION_DISPATCHED = "operation_dispatched"
    OPERATION_CHANGED = "operation_changed"  # a new dispatch list changed its spec
    OPERATION_WITHDRAWN = "operation_withdrawn"  # dropped from the dispatch list before it started
    DISPATCH_APPLIED = "dispatch_applied"
    DISPATCH_CONFLICT = "dispatch_conflict"
    OPERATION_STATE_CHANGED = "operation_state_changed"
    PICKED_OUT_OF_SEQUENCE = "picked_out_of_sequence"
    OPERATION_SPLIT = "operation_split"
    OPERATION_MERGED = "operation_merged"  # central merged others into it (sources ended merged)
    TARGET_REACHED = "target_reached"
    OVER_TOLERANCE = "over_tolerance"
    OVER_TOLERANCE_ACKNOWLEDGED = "over_tolerance_acknowledged"
    SCRAP_REPORTED = "scrap_reported"
    SETUP_PARTS_DECLARED_GOOD = "setup_parts_declared_good"
    COUNTER_DISCONTINUITY = "counter_discontinuity"
    COUNTER_RESET = "counter_reset"
    COUNTER_WRAPPED = "counter_wrapped"
    COUNTER_DRIFT = "counter_drift"  # a cross-check and the authoritative source disagree
    SOURCE_RESTARTED = "source_restarted"
    UNASSIGNED_PRODUCTION = "unassigned_production"  # a record opened or closed
    UNASSIGNED_ASSIGNED = "unassigned_assigned"
    MACHINE_STATE = "machine_state"
    STOP_STARTED = "stop_started"
    STOP_ENDED = "stop_ended"
    STOP_REASON_REQUESTED = "stop_reason_requested"
    STOP_REASON_SET = "stop_reason_set"
    STOP_RECLASSIFIED = "stop_reclassified"
    CONFIRMATION_CREATED = "confirmation_created"
    CONFIRMATION_RESENT = "confirmation_resent"
    CONFIRMATION_RESULT = "confirmation_result"
    CONFIRMATION_REVERSED = "confirmation_reversed"
    # A late verdict contradicting a final one; kept, not applied (rules.md §6)
    VERDICT_CONFLICT = "confirmation_verdict_conflict"
    FINAL_CONFIRMATION_WITHHELD = "final_confirmation_withheld"
    COUNT_CORRECTED = "count_corrected"
    HELP_CALLED = "help_called"
    HELP_ACKNOWLEDGED = "help_acknowledged"
    HELP_ESCALATED = "help_escalated"
    HELP_CLOSED = "help_closed"
    SHIFT_CHANGED = "shift_changed"
    SHIFT_CLOSED = "shift_closed"  # a shift ended: its ISO 22400 KPIs (edge.domain.kpis)
    DAY_CLOSED = "day_closed"  # a day's figures are complete: its KPIs (edge.domain.kpis)
    # An operation completed: its order KPIs and ISO 22400 figures (edge.domain.order_kpis)
    OPERATION_KPIS = "operation_kpis"
    # The routing-drift review of a period, on the gateway's schedule (edge.domain.drift)
    ROUTING_DRIFT = "routing_drift"
    MASTER_DATA_APPLIED = "master_data_applied"
    # Finished operations, their confirmations and stops left memory (rows stay stored)
    OPERATIONS_RETIRED = "operations_retired"
    OPERATOR_LOGGED_IN = "operator_logged_in"
    OPERATOR_LOGGED_OUT = "operator_logged_out"
    RULES_APPLIED = "rules_applied"
    COMPONENT_BATCH_LOADED = "component_batch_loaded"  # edge.domain.material
    COMPONENT_CONSUMED = "component_consumed"
    # edge.domain.machine: a maintenance interval fell due or was done; a maintenance request
    # raised (from a stop); the machine's hours, at every shift change
    MAINTENANCE_DUE = "maintenance_due"
    MAINTENANCE_DONE = "maintenance_done"
    MAINTENANCE_REQUESTED = "maintenance_requested"
    MACHINE_HOURS = "machine_hours"


@dataclass(frozen=True, slots=True)
class Event:
    type: EventType
    at: Instant
    op: str | None = None  # operation key as ORDER/OPERATION[/SPLIT]
    actor: str | None = None
    data: Mapping[str, object] = field(default_factory=dict)


class RejectionCode(StrEnum):
    ILLEGAL_TRANSITION = "illegal_transition"
    OPERATION_ACTIVE = "operation_active"
    SUPERVISOR_ONLY = "supervisor_only"
    UNKNOWN_OPERATION = "unknown_operation"
    NO_ACTIVE_OPERATION = "no_active_operation"
    OPERATION_FINISHED = "operation_finished"
    UNKNOWN_SOURCE = "unknown_source"
    UNKNOWN_REASON = "unknown_reason"
    INVALID_VALUE = "invalid_value"
    EXCEEDS_PENDING = "exceeds_pending"
    NOTHING_TO_CONFIRM = "nothing_to_confirm"
    VARIANCE_REASON_REQUIRED = "variance_reason_required"
    STALE_DISPATCH = "stale_dispatch"
    UNKNOWN_STOP = "unknown_stop"
    UNKNOWN_CONFIRMATION = "unknown_confirmation"
    CONFIRMATION_STATE = "confirmation_state"
    CONFIRMATION_BLOCKED = "confirmation_blocked"
    UNKNOWN_UNASSIGNED = "unknown_unassigned"
    UNKNOWN_HELP_CALL = "unknown_help_call"
    UNKNOWN_COMPONENT = "unknown_component"
    UNKNOWN_SERVICE = "unknown_service"
    INTERNAL_ERROR = "internal_error"


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why an input was refused. ``field``/``value`` name the offending part of the input."""

    code: RejectionCode
    message: str
    field: str | None = None
    value: object = None
    state: str | None = None  # the operation's status, for illegal transitions
    action: str | None = None

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True, slots=True)
class Outcome:
    """The result of applying one input: events, or a rejection and no events."""

    events: tuple[Event, ...] = ()
    rejection: Rejection | None = None
    changed: bool = True  # False when the input left the state untouched (an idle tick)

    @property
    def accepted(self) -> bool:
        return self.rejection is None
