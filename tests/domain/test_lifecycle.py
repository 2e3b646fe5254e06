"""rules.md §1 (one active operation) and §2 (the operation lifecycle)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from edge.domain.core import WorkCenter
from edge.domain.events import EventType, RejectionCode
from edge.domain.inputs import Action, MachineState, MachineStateChanged, Pulses, Transition
from edge.domain.model import OperationStatus

from .builders import (
    CENTRAL,
    OPERATOR,
    SUPERVISOR,
    act,
    at,
    count_good,
    events_of,
    key,
    make_wc,
    ok,
    one,
    pulse_source,
    rejected,
    spec,
)

A = Action
S = OperationStatus
OP = "4711/0020"

# ---------------------------------------------------------------- §1 one active operation


def test_starting_a_second_operation_while_one_runs_is_rejected_with_the_plant_message() -> None:
    wc = make_wc(spec(), spec("4712", "0010"))
    act(wc, A.START_PRODUCTION, 0)
    rej = rejected(wc, Transition(A.START_SETUP, "4712/0010", OPERATOR, at(10)))
    assert rej.code is RejectionCode.OPERATION_ACTIVE
    assert rej.message == "operation 4711/0020 is running; interrupt or complete it first"


@pytest.mark.parametrize("how", [A.START_SETUP, A.START_PRODUCTION])
def test_setup_and_interrupted_operations_are_active_too(how: Action) -> None:
    wc = make_wc(spec(), spec("4712", "0010"))
    act(wc, how, 0)
    act(wc, A.INTERRUPT, 10)
    rej = rejected(wc, Transition(A.START_PRODUCTION, "4712/0010", OPERATOR, at(20)))
    assert rej.message == "operation 4711/0020 is interrupted; interrupt or complete it first"


@pytest.mark.parametrize("first_to", [A.HOLD, A.COMPLETE, A.CANCEL])
def test_held_completed_and_cancelled_operations_are_not_active(first_to: Action) -> None:
    wc = make_wc(spec(), spec("4712", "0010"))
    act(wc, A.START_PRODUCTION, 0)
    act(wc, first_to, 10)
    act(wc, A.START_PRODUCTION, 20, op="4712/0010")
    assert [op.key for op in wc.active] == [key("4712/0010")]


def test_releasing_a_held_operation_while_another_runs_is_rejected() -> None:
    wc = make_wc(spec(), spec("4712", "0010"))
    act(wc, A.START_PRODUCTION, 0)
    act(wc, A.HOLD, 10)
    act(wc, A.START_PRODUCTION, 20, op="4712/0010")
    rej = rejected(wc, Transition(A.RELEASE, OP, OPERATOR, at(30)))
    assert rej.message == "operation 4712/0010 is running; interrupt or complete it first"


def test_family_tool_runs_operations_together_and_counts_parts_per_cycle_for_each() -> None:
    left = spec("4711", "0020", parts_per_signal=Decimal(2))
    right = spec("4712", "0020", parts_per_signal=Decimal(2))
    wc = make_wc(left, right, family_tool=True, sources=(pulse_source("cycles"),))
    act(wc, A.START_PRODUCTION, 0)
    act(wc, A.START_PRODUCTION, 1, op="4712/0020")
    assert len(wc.active) == 2
    ok(wc, Pulses("cycles", 1, at(10)))  # one machine cycle
    assert wc.operations[key("4711/0020")].counted.good == 2
    assert wc.operations[key("4712/0020")].counted.good == 2
    # Stops and machine state apply to all of them.
    out = ok(wc, MachineStateChanged("press1", MachineState.DOWN, at(20)))
    started = one(out, EventType.STOP_STARTED)
    assert sorted(started.data["operations"]) == ["4711/0020", "4712/0020"]  # type: ignore[call-overload]


# ---------------------------------------------------------------- §2 the lifecycle table


def in_state(state: str) -> WorkCenter:
    """A fresh work center with 4711/0020 brought into ``state`` (set up or run first)."""
    wc = make_wc(spec())
    steps: dict[str, list[Action]] = {
        "dispatched": [],
        "setup": [A.START_SETUP],
        "running": [A.START_PRODUCTION],
        "interrupted": [A.START_PRODUCTION, A.INTERRUPT],
        "interrupted_from_setup": [A.START_SETUP, A.INTERRUPT],
        "held": [A.START_PRODUCTION, A.HOLD],
        "held_from_setup": [A.START_SETUP, A.HOLD],
        "held_from_dispatched": [A.HOLD],
        "held_from_interrupted": [A.START_PRODUCTION, A.INTERRUPT, A.HOLD],
        "completed": [A.START_PRODUCTION, A.COMPLETE],
        "cancelled": [A.CANCEL],
    }
    for i, step in enumerate(steps[state]):
        act(wc, step, i * 60)
    return wc


# (state, action) -> resulting status; every pair not listed must be rejected.
ALLOWED: dict[tuple[str, Action], S] = {
    ("dispatched", A.START_SETUP): S.SETUP,
    ("dispatched", A.START_PRODUCTION): S.RUNNING,
    ("dispatched", A.HOLD): S.HELD,
    ("dispatched", A.CANCEL): S.CANCELLED,
    ("setup", A.START_PRODUCTION): S.RUNNING,
    ("setup", A.INTERRUPT): S.INTERRUPTED,
    ("setup", A.COMPLETE): S.COMPLETED,  # supervisor only
    ("setup", A.HOLD): S.HELD,
    ("setup", A.CANCEL): S.CANCELLED,
    ("running", A.INTERRUPT): S.INTERRUPTED,
    ("running", A.COMPLETE): S.COMPLETED,
    ("running", A.HOLD): S.HELD,
    ("running", A.CANCEL): S.CANCELLED,
    ("running", A.SPLIT): S.COMPLETED,
    ("interrupted", A.RESUME): S.RUNNING,
    ("interrupted", A.COMPLETE): S.COMPLETED,
    ("interrupted", A.HOLD): S.HELD,
    ("interrupted", A.CANCEL): S.CANCELLED,
    ("interrupted", A.SPLIT): S.COMPLETED,
    ("held", A.RELEASE): S.RUNNING,
    ("held", A.CANCEL): S.CANCELLED,
    ("held", A.SPLIT): S.COMPLETED,
}
TABLE_STATES = ["dispatched", "setup", "running", "interrupted", "held", "completed", "cancelled"]
CELLS = [(s, a) for s in TABLE_STATES for a in Action]


@pytest.mark.parametrize(("state", "action"), CELLS, ids=[f"{s}-{a}" for s, a in CELLS])
def test_lifecycle_table_cell(state: str, action: Action) -> None:
    wc = in_state(state)
    actor = SUPERVISOR if (state, action) == ("setup", A.COMPLETE) else OPERATOR
    inp = Transition(action, OP, actor, at(1000))
    expected = ALLOWED.get((state, action))
    if expected is None:
        rej = rejected(wc, inp)
        assert rej.code in (RejectionCode.ILLEGAL_TRANSITION, RejectionCode.OPERATION_FINISHED)
        assert rej.state == state
        assert rej.action == action.value
        assert state in rej.message
        assert action.value.replace("_", " ") in rej.message
        return
    out = ok(wc, inp)
    assert wc.operations[key(OP)].status is expected
    changes = events_of(out, EventType.OPERATION_STATE_CHANGED)
    assert changes[-1].actor == actor
    assert changes[-1].data["to"] == expected.value
    assert changes[-1].data["action"] == action.value


@pytest.mark.parametrize(
    ("state", "back_to"),
    [("interrupted", S.RUNNING), ("interrupted_from_setup", S.SETUP)],
)
def test_resume_goes_back_to_setup_or_running(state: str, back_to: S) -> None:
    wc = in_state(state)
    act(wc, A.RESUME, 1000)
    assert wc.operations[key(OP)].status is back_to


@pytest.mark.parametrize(
    ("state", "back_to"),
    [
        ("held", S.RUNNING),
        ("held_from_setup", S.SETUP),
        ("held_from_dispatched", S.DISPATCHED),
        ("held_from_interrupted", S.INTERRUPTED),
    ],
)
def test_release_goes_back_to_the_state_before_hold(state: str, back_to: S) -> None:
    wc = in_state(state)
    act(wc, A.RELEASE, 1000)
    assert wc.operations[key(OP)].status is back_to


@pytest.mark.parametrize("actor", [OPERATOR, "button:b1", CENTRAL, "machine:press1"])
def test_completing_from_setup_is_for_a_supervisor_only(actor: str) -> None:
    wc = in_state("setup")
    rej = rejected(wc, Transition(A.COMPLETE, OP, actor, at(1000)))
    assert rej.code is RejectionCode.SUPERVISOR_ONLY
    assert rej.field == "actor"
    assert rej.value == actor


@pytest.mark.parametrize("actor", ["operator:17", "button:b1", "central", "supervisor:anna"])
def test_every_accepted_action_is_an_event_with_its_actor(actor: str) -> None:
    wc = in_state("dispatched")
    out = act(wc, A.START_PRODUCTION, 0, actor=actor)
    assert one(out, EventType.OPERATION_STATE_CHANGED).actor == actor


def test_cancel_with_quantities_first_confirms_what_was_done(running: WorkCenter) -> None:
    op = running.operations[key(OP)]
    count_good(running, 50, 100)
    out = act(running, A.CANCEL, 120)
    types = [e.type for e in out.events]
    assert types.index(EventType.CONFIRMATION_CREATED) < types.index(
        EventType.OPERATION_STATE_CHANGED
    )
    conf = one(out, EventType.CONFIRMATION_CREATED)
    assert conf.data["final"] is True
    assert conf.data["yield_qty"] == 50
    assert op.status is S.CANCELLED
    assert op.pending.good == 0


def test_cancel_without_quantities_makes_no_confirmation(running: WorkCenter) -> None:
    out = act(running, A.CANCEL, 120)
    assert events_of(out, EventType.CONFIRMATION_CREATED) == []
    assert running.operations[key(OP)].status is S.CANCELLED


def test_cancel_from_central_while_running_interrupts_first(running: WorkCenter) -> None:
    count_good(running, 30, 100)
    out = act(running, A.CANCEL, 120, actor=CENTRAL)
    steps = [
        (e.data["from"], e.data["to"]) for e in events_of(out, EventType.OPERATION_STATE_CHANGED)
    ]
    assert steps == [("running", "interrupted"), ("interrupted", "cancelled")]
    assert one(out, EventType.CONFIRMATION_CREATED).data["yield_qty"] == 30
    assert all(e.actor == CENTRAL for e in out.events)


def test_split_confirms_the_done_part_and_dispatches_the_remainder(running: WorkCenter) -> None:
    count_good(running, 600, 6000)
    out = act(running, A.SPLIT, 7000)
    done = running.operations[key(OP)]
    assert done.status is S.COMPLETED
    assert done.split_done is True
    final = one(out, EventType.CONFIRMATION_CREATED)
    assert final.data["final"] is True
    assert final.data["yield_qty"] == 600
    split = one(out, EventType.OPERATION_SPLIT)
    assert split.data["remainder_op"] == "4711/0020/1"
    assert split.data["remainder_qty"] == 400
    rest = running.operations[key("4711/0020/1")]
    assert rest.status is S.DISPATCHED
    assert rest.spec.target_qty == 400
    assert (rest.spec.order, rest.spec.operation, rest.spec.split) == ("4711", "0020", 1)
    assert one(out, EventType.OPERATION_DISPATCHED).op == "4711/0020/1"
    # The remainder can be split again: the next split index follows.
    act(running, A.START_PRODUCTION, 7100, op="4711/0020/1")
    count_good(running, 100, 7900)
    out = act(running, A.SPLIT, 8000, op="4711/0020/1")
    assert one(out, EventType.OPERATION_SPLIT).data["remainder_op"] == "4711/0020/2"


def test_split_with_an_explicit_remaining_quantity(running: WorkCenter) -> None:
    count_good(running, 100, 600)
    act(running, A.SPLIT, 7000, quantity=Decimal(250))
    assert running.operations[key("4711/0020/1")].spec.target_qty == 250


def test_reaching_the_target_signals_but_does_not_complete() -> None:
    wc = make_wc(spec(target=100), sources=(pulse_source("press1"),))
    act(wc, A.START_PRODUCTION, 0)
    out = ok(wc, Pulses("press1", 99, at(1000)))
    assert events_of(out, EventType.TARGET_REACHED) == []
    out = ok(wc, Pulses("press1", 1, at(1010)))
    reached = one(out, EventType.TARGET_REACHED)
    assert (reached.data["good"], reached.data["target"]) == (100, 100)
    assert wc.operations[key(OP)].status is S.RUNNING
    out = ok(wc, Pulses("press1", 1, at(1020)))  # over-produce: signalled once only
    assert events_of(out, EventType.TARGET_REACHED) == []
    assert wc.operations[key(OP)].counted.good == 101


def test_auto_complete_at_target_completes_with_a_final_confirmation() -> None:
    wc = make_wc(spec(target=100), sources=(pulse_source("press1"),), auto_complete_at_target=True)
    act(wc, A.START_PRODUCTION, 0)
    out = ok(wc, Pulses("press1", 100, at(1000)))
    op = wc.operations[key(OP)]
    assert op.status is S.COMPLETED
    final = one(out, EventType.CONFIRMATION_CREATED)
    assert final.data["final"] is True
    assert final.data["yield_qty"] == 100


def test_family_tool_partner_still_counts_when_one_operation_auto_completes() -> None:
    left = spec("4711", "0020", target=2, parts_per_signal=Decimal(2))
    right = spec("4712", "0020", target=100, parts_per_signal=Decimal(2))
    wc = make_wc(
        left,
        right,
        family_tool=True,
        auto_complete_at_target=True,
        sources=(pulse_source("cycles"),),
    )
    act(wc, A.START_PRODUCTION, 0)
    act(wc, A.START_PRODUCTION, 1, op="4712/0020")
    ok(wc, Pulses("cycles", 1, at(10)))
    assert wc.operations[key("4711/0020")].status is S.COMPLETED
    assert wc.operations[key("4711/0020")].counted.good == 2
    assert wc.operations[key("4712/0020")].counted.good == 2  # the same cycle made its parts too
