"""The stack light and the panel's colour render one andon state (rules.md §4, §8).

Every combination of machine state, active operations, stops and calls for help: the panel shows
the stack light's most urgent lamp, and its label names the state that lamp stands for.
"""

from __future__ import annotations

import itertools
from decimal import Decimal

import pytest

from edge.domain.andon import Lamp, Lights
from edge.domain.core import WorkCenter, WorkCenterHeader
from edge.domain.inputs import MachineState, MachineStateChanged, Tick
from edge.domain.model import HelpCall, Operation, OperationSpec, OperationStatus, Stop, StopOrigin
from edge.operator.stacklight import lights_for
from edge.panel.view import lamp
from tests.domain.builders import OPERATOR, at, make_rules

S = OperationStatus
MACHINE = [None, *MachineState]
ACTIVE = [(), (S.DISPATCHED,), (S.HELD,), (S.SETUP,), (S.RUNNING,), (S.INTERRUPTED,)]
ACTIVE += [(S.SETUP, S.RUNNING), (S.INTERRUPTED, S.SETUP)]  # a family tool
STOPS = [
    "none",
    "open",
    "open_pending",
    "open_with_reason",
    "past_pending",
    "past_pending_then_micro",
    "past_with_reason",
]
CALLS = ["none", "waiting", "acknowledged", "both"]


def _stops(kind: str) -> list[Stop]:
    def stop(n: int, *, end: bool, requested: bool, reason: str | None, micro: bool) -> Stop:
        s = Stop(f"S{n:06d}", at(n * 100), StopOrigin.MACHINE_STATE)
        s.end = at(n * 100 + 50) if end else None
        s.reason_requested, s.reason, s.micro = requested, reason, micro
        return s

    return {
        "none": [],
        "open": [stop(1, end=False, requested=False, reason=None, micro=False)],
        "open_pending": [stop(1, end=False, requested=True, reason=None, micro=False)],
        "open_with_reason": [stop(1, end=False, requested=True, reason="M01", micro=False)],
        "past_pending": [stop(1, end=True, requested=True, reason=None, micro=False)],
        "past_pending_then_micro": [
            stop(1, end=True, requested=True, reason=None, micro=False),
            stop(2, end=True, requested=False, reason=None, micro=True),
        ],
        "past_with_reason": [stop(1, end=True, requested=True, reason="M01", micro=False)],
    }[kind]


def _calls(kind: str) -> dict[str, HelpCall]:
    waiting = HelpCall("H000001", "material", at(0), OPERATOR)
    acked = HelpCall("H000002", "quality", at(0), OPERATOR, None, at(5), "supervisor:anna")
    chosen = {"none": [], "waiting": [waiting], "acknowledged": [acked], "both": [waiting, acked]}
    return {c.call_id: c for c in chosen[kind]}


def work_center(
    machine: MachineState | None, active: tuple[OperationStatus, ...], stops: str, calls: str
) -> WorkCenter:
    header = WorkCenterHeader(make_rules(family_tool=len(active) > 1))
    header.machine_state = machine
    header.help_calls = _calls(calls)
    stop_rows = _stops(stops)
    header.open_stop = next((s.stop_id for s in stop_rows if s.open), None)
    ops = [
        Operation(OperationSpec("4711", f"00{i}0", "FG-1", Decimal(100), sequence=i), status)
        for i, status in enumerate(active, 1)
    ]
    return WorkCenter.restore(header, ops, [], stop_rows, [], [], [])


def most_urgent(lights: Lights) -> str:
    if lights.red is Lamp.BLINK:
        return "red_blink"
    if lights.red is Lamp.ON:
        return "red"
    if lights.blue is not Lamp.OFF:
        return "blue"
    if lights.green is not Lamp.OFF:
        return "green"
    assert lights.yellow is Lamp.ON, lights  # one of green, yellow and red is always lit
    return "yellow"


LABELS = {
    "red_blink": {"state.reason_pending"},
    "red": {"state.down"},
    "blue": {"state.help"},
    "green": {"state.running", "state.idle"},
    "yellow": {"state.setup", "state.interrupted", "state.no_order"},
}


@pytest.mark.parametrize(("stops", "calls"), list(itertools.product(STOPS, CALLS)))
def test_the_panel_shows_the_stack_lights_most_urgent_lamp(stops: str, calls: str) -> None:
    for machine, active in itertools.product(MACHINE, ACTIVE):
        wc = work_center(machine, active, stops, calls)
        lights = lights_for(wc)
        colour, label = lamp(wc)
        where = (machine, active, stops, calls, lights)
        assert colour == most_urgent(lights), where
        assert label in LABELS[colour], where
        # green and yellow never together; neither while the machine is down
        assert not (lights.green is Lamp.ON and lights.yellow is Lamp.ON), where
        if wc.open_stop is not None or machine is MachineState.DOWN:
            assert lights.green is lights.yellow is Lamp.OFF, where


def test_a_stop_ended_without_its_reason_keeps_asking_on_both() -> None:
    """The machine runs again, the reason is still missing: green and red blinking on the stack
    light, red blinking on the panel (the panel is where the reason is given)."""
    wc = work_center(None, (S.RUNNING,), "none", "none")
    t0 = at(0)
    assert wc.apply(MachineStateChanged("press", MachineState.DOWN, t0)).accepted
    assert wc.apply(Tick(t0.after_ms(200_000))).accepted
    assert lamp(wc) == ("red_blink", "state.reason_pending")
    assert wc.apply(
        MachineStateChanged("press", MachineState.RUNNING, t0.after_ms(210_000))
    ).accepted
    assert lights_for(wc) == Lights(green=Lamp.ON, red=Lamp.BLINK)
    assert lamp(wc) == ("red_blink", "state.reason_pending")


def test_target_reached_and_over_delivery_on_the_lamps() -> None:
    """A running order at its target blinks green; past its tolerance and not acknowledged,
    yellow blinks too; each is configurable, and neither touches red or blue."""
    from edge.config import StackLightEntry
    from edge.domain.andon import Signal, signalled
    from edge.domain.inputs import AcknowledgeOverDelivery, Action, MachineState, Pulses
    from tests.domain.builders import act, make_wc, ok, pulse_source, spec

    wc = make_wc(
        spec(target=10, std_cycle_s=0, over_tolerance_pct=Decimal(10)),
        sources=(pulse_source("press1"),),
    )
    act(wc, Action.START_PRODUCTION, 0)
    ok(wc, Pulses("press1", 9, at(10)))
    assert lights_for(wc) == Lights(green=Lamp.ON)
    ok(wc, Pulses("press1", 1, at(20)))  # 10 of 10
    assert wc.andon.target_reached
    assert lights_for(wc) == Lights(green=Lamp.BLINK)
    ok(wc, Pulses("press1", 2, at(30)))  # 12: past 10 % over
    assert wc.andon.over_tolerance
    assert lights_for(wc) == Lights(green=Lamp.BLINK, yellow=Lamp.BLINK)
    # configured otherwise: a steady yellow for over-delivery, nothing for the target
    cfg = StackLightEntry(green=17, yellow=27, target_reached="none", over_tolerance="yellow")
    assert lights_for(wc, cfg) == Lights(green=Lamp.ON, yellow=Lamp.ON)
    # a stop: red as always, the order's signals stay on their own lamps
    ok(wc, MachineStateChanged("press1", MachineState.DOWN, at(40)))
    assert signalled(wc.andon, Signal.BLINK_GREEN, Signal.BLINK_YELLOW).red is Lamp.ON
    ok(wc, MachineStateChanged("press1", MachineState.RUNNING, at(50)))
    ok(wc, AcknowledgeOverDelivery(OPERATOR, at(60)))
    assert not wc.andon.over_tolerance
    assert lights_for(wc) == Lights(green=Lamp.BLINK)
    act(wc, Action.COMPLETE, 70)
    assert not wc.andon.target_reached  # nothing runs any more
