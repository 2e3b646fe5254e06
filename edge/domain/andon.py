"""Calls for help (rules.md §8) and what the andon shows (the stack light and the panel's colour).

A call button (physical or on the panel) raises a help request with a category as an event to
central and lights the call lamp; a second call of the same category while one waits is refused
(a double press). Nobody acknowledging it within ``help_escalate_after_s`` escalates it, once.
Acknowledge and close are events with their actor. A call is not a stop: the machine may keep
running.

:func:`andon_state` is the one definition of what the work center's state looks like from across
the hall; the stack light (``edge.operator.stacklight``) and the panel (``edge.panel.view``) both
render it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Reversible
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from edge.domain import machine
from edge.domain.clock import Instant
from edge.domain.events import EventType, RejectionCode
from edge.domain.inputs import (
    AcknowledgeHelp,
    CallForHelp,
    CloseHelp,
    MachineState,
)
from edge.domain.model import HelpCall, OperationStatus, Stop
from edge.domain.state import (
    WorkCenterState,
    reject,
    text_of,
)


def on_call_for_help(s: WorkCenterState, c: CallForHelp) -> None:
    if c.category not in s.rules.help_categories:
        raise reject(
            RejectionCode.UNKNOWN_REASON,
            f"category = {c.category!r}: not one of {', '.join(s.rules.help_categories)}",
            field="category",
            value=c.category,
        )
    note = text_of(c.note, "note") if c.note else None
    for call in s.help_calls.values():
        if call.category == c.category and call.acknowledged_by is None:
            raise reject(
                RejectionCode.INVALID_VALUE,
                f"a {c.category} call ({call.call_id}) is already waiting for an answer",
                field="category",
                value=c.category,
            )
    h = s.header
    call = HelpCall(f"H{h.next_help_no:06d}", c.category, c.at, c.actor, note)
    h.next_help_no += 1
    h.help_calls[call.call_id] = call
    s.touch("work_center", "")
    active = s.active
    s.emit(
        EventType.HELP_CALLED,
        c.at,
        active[0] if len(active) == 1 else None,
        c.actor,
        call_id=call.call_id,
        category=call.category,
        note=note,
        machine_state=h.machine_state.value if h.machine_state else None,
    )


def find_help_call(s: WorkCenterState, call_id: str) -> HelpCall:
    call = s.help_calls.get(call_id)
    if call is None:
        raise reject(
            RejectionCode.UNKNOWN_HELP_CALL,
            f"call_id = {call_id!r}: no open call for help with this id",
            field="call_id",
            value=call_id,
        )
    return call


def on_acknowledge_help(s: WorkCenterState, a: AcknowledgeHelp) -> None:
    call = find_help_call(s, a.call_id)
    if call.acknowledged_by is not None:
        raise reject(
            RejectionCode.INVALID_VALUE,
            f"call {call.call_id} was already acknowledged by {call.acknowledged_by}",
            field="call_id",
            value=a.call_id,
        )
    call.acknowledged_at, call.acknowledged_by = a.at, a.actor
    s.touch("work_center", "")
    s.emit(
        EventType.HELP_ACKNOWLEDGED,
        a.at,
        None,
        a.actor,
        call_id=call.call_id,
        category=call.category,
        waited_ms=a.at.since(call.raised_at),
    )


def on_close_help(s: WorkCenterState, c: CloseHelp) -> None:
    call = find_help_call(s, c.call_id)
    del s.header.help_calls[call.call_id]
    s.touch("work_center", "")
    s.emit(
        EventType.HELP_CLOSED,
        c.at,
        None,
        c.actor,
        call_id=call.call_id,
        category=call.category,
        duration_ms=c.at.since(call.raised_at),
        acknowledged_by=call.acknowledged_by,
    )


def escalate(s: WorkCenterState, now: Instant) -> None:
    """A call nobody acknowledged within the configured time escalates, once."""
    after_ms = s.rules.help_escalate_after_s * 1000
    if not after_ms:
        return
    for call in s.help_calls.values():
        waited = now.since(call.raised_at)
        if call.acknowledged_by is None and not call.escalated and waited >= after_ms:
            call.escalated = True
            s.touch("work_center", "")
            s.emit(
                EventType.HELP_ESCALATED,
                now,
                None,
                "machine:andon",
                call_id=call.call_id,
                category=call.category,
                waited_ms=waited,
            )


# ---------------------------------------------------------------------- what the andon shows


class Lamp(StrEnum):
    OFF = "off"
    ON = "on"
    BLINK = "blink"


@dataclass(frozen=True, slots=True)
class Lights:
    """The stack light's lamps."""

    green: Lamp = Lamp.OFF
    yellow: Lamp = Lamp.OFF
    red: Lamp = Lamp.OFF
    blue: Lamp = Lamp.OFF

    @property
    def blinking(self) -> bool:
        return Lamp.BLINK in (self.green, self.yellow, self.red, self.blue)


# The panel's one colour: the most urgent lamp lit, in this order.
Colour = Literal["red_blink", "red", "blue", "green", "yellow"]


@dataclass(frozen=True, slots=True)
class AndonState:
    """The work center's state as the andon shows it.

    ``state`` names what the panel's big label says (``state.<state>``): reason_pending, down,
    help, running, idle, setup, interrupted or no_order. ``lights`` are the stack light's lamps;
    ``colour`` is the panel's one colour, the most urgent lamp lit.
    """

    state: str
    lights: Lights
    # A running operation reached its target quantity; one went past its over-delivery
    # tolerance and nobody acknowledged it yet (what :func:`signalled` puts on the lamps).
    target_reached: bool = False
    over_tolerance: bool = False
    # A maintenance interval is due and nobody said it was done (edge.domain.machine).
    maintenance_due: bool = False

    @property
    def colour(self) -> Colour:
        lights = self.lights
        if lights.red is Lamp.BLINK:
            return "red_blink"
        if lights.red is Lamp.ON:
            return "red"
        if lights.blue is not Lamp.OFF:
            return "blue"
        if lights.green is not Lamp.OFF:
            return "green"
        return "yellow"


def andon_state(s: WorkCenterState) -> AndonState:
    """What the stack light and the panel show for the work center's state.

    - **red**: the machine is down: a stop is open (or the machine state says down). **Red
      blinking**: a stop waits for its reason (rules.md §4: past the micro-stop threshold, none
      given): the open stop, or the latest real stop after it ended, until somebody gives the
      reason; so a machine that runs again with a reason still missing shows green and red
      blinking.
    - **green**: no stop, and an operation is running.
    - **yellow**: no stop and nothing running: an operation in setup or interrupted, or no
      operation active at all (the work center waits for an order to be started).
    - **blue** (the call lamp, rules.md §8): a call for help is open; blinking until somebody
      acknowledged it, steady while help is on its way, off once every call is closed.
    """
    down = s.open_stop is not None or s.header.machine_state is MachineState.DOWN
    statuses = {op.status for op in s.active}
    running = OperationStatus.RUNNING in statuses
    pending = _reason_pending(s.open_stop, s.stops.values())
    red = Lamp.BLINK if pending else Lamp.ON if down else Lamp.OFF
    calls = list(s.help_calls.values())
    if not calls:
        blue = Lamp.OFF
    elif any(call.acknowledged_by is None for call in calls):
        blue = Lamp.BLINK
    else:
        blue = Lamp.ON
    lights = Lights(
        green=Lamp.ON if running and not down else Lamp.OFF,
        yellow=Lamp.ON if not running and not down else Lamp.OFF,
        red=red,
        blue=blue,
    )
    if pending:
        state = "reason_pending"
    elif down:
        state = "down"
    elif calls:
        state = "help"
    elif running:
        state = "idle" if s.header.machine_state is MachineState.IDLE else "running"
    elif OperationStatus.SETUP in statuses:
        state = "setup"
    elif OperationStatus.INTERRUPTED in statuses:
        state = "interrupted"
    else:
        state = "no_order"
    reached = any(op.target_reached for op in s.active if op.status is OperationStatus.RUNNING)
    over = any(op.over_tolerance and not op.over_tolerance_acknowledged for op in s.active)
    return AndonState(
        state,
        lights,
        target_reached=reached,
        over_tolerance=over,
        maintenance_due=machine.any_due(s),
    )


class Signal(StrEnum):
    """How the stack light shows an order's target reached or over-delivery (configurable)."""

    NONE = "none"
    BLINK_GREEN = "blink_green"  # the green lamp blinks while it would be on
    BLINK_YELLOW = "blink_yellow"
    YELLOW = "yellow"  # the yellow lamp on, steady


def signalled(
    a: AndonState,
    target_reached: Signal,
    over_tolerance: Signal,
    maintenance_due: Signal = Signal.NONE,
) -> Lights:
    """The lamps of ``a`` with the signals on top: maintenance due first, then the order's
    target reached, then over-delivery (the more urgent, so each wins over the one before
    where they use the same lamp). Red and blue are never changed: a stop or a call for help
    reads the same whatever the order."""
    lights = a.lights
    for flag, signal in (
        (a.maintenance_due, maintenance_due),
        (a.target_reached, target_reached),
        (a.over_tolerance, over_tolerance),
    ):
        if not flag or signal is Signal.NONE:
            continue
        if signal is Signal.BLINK_GREEN:
            if lights.green is Lamp.ON:
                lights = dataclasses.replace(lights, green=Lamp.BLINK)
        elif signal is Signal.BLINK_YELLOW:
            lights = dataclasses.replace(lights, yellow=Lamp.BLINK)
        elif lights.yellow is Lamp.OFF:
            lights = dataclasses.replace(lights, yellow=Lamp.ON)
    return lights


def _reason_pending(open_stop: Stop | None, stops: Reversible[Stop]) -> bool:
    if open_stop is not None:
        return open_stop.reason_pending
    # The latest stop that was not a micro-stop (those never ask); older ones are history.
    for past in reversed(stops):
        if not past.micro:
            return past.reason_pending
    return False
