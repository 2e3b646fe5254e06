"""rules.md §2: the reason in words a hold or a cancel carries (central's, or a supervisor's).

It stays on the operation while it is held (and for good once cancelled), goes out in the
event's data, and ends with a release; a bad reason is refused naming the field and the value.
"""

from __future__ import annotations

import pytest

from edge.domain.events import EventType, RejectionCode
from edge.domain.inputs import Action, Transition
from edge.domain.limits import MAX_TEXT
from edge.domain.model import OperationStatus

from .builders import CENTRAL, SUPERVISOR, act, at, key, make_wc, one, rejected, spec

A = Action
OP = "4711/0020"


def test_a_hold_keeps_its_reason_until_the_release() -> None:
    wc = make_wc(spec())
    act(wc, A.START_PRODUCTION, 0)
    out = act(wc, A.HOLD, 10, actor=CENTRAL, reason="quality hold: coil batch 88")
    event = one(out, EventType.OPERATION_STATE_CHANGED)
    assert event.data["reason"] == "quality hold: coil batch 88"
    op = wc.operations[key(OP)]
    assert (op.status, op.status_reason) == (OperationStatus.HELD, "quality hold: coil batch 88")
    out = act(wc, A.RELEASE, 20, actor=SUPERVISOR)
    assert "reason" not in one(out, EventType.OPERATION_STATE_CHANGED).data
    assert (op.status, op.status_reason) == (OperationStatus.RUNNING, None)


def test_a_cancel_keeps_its_reason_and_a_central_cancel_of_a_running_one_too() -> None:
    wc = make_wc(spec())
    act(wc, A.START_PRODUCTION, 0)
    out = act(wc, A.CANCEL, 10, actor=CENTRAL, reason="  order withdrawn by planning ")
    changes = [e for e in out.events if e.type is EventType.OPERATION_STATE_CHANGED]
    # central's cancel of a running operation interrupts it first: only the cancel says why
    assert [e.data["to"] for e in changes] == ["interrupted", "cancelled"]
    assert [e.data.get("reason") for e in changes] == [None, "order withdrawn by planning"]
    assert wc.operations[key(OP)].status_reason == "order withdrawn by planning"


def test_a_hold_without_a_reason_or_a_blank_one_has_none() -> None:
    wc = make_wc(spec(), spec("4712", "0010"))
    act(wc, A.HOLD, 0, actor=CENTRAL)
    act(wc, A.HOLD, 0, op="4712/0010", actor=CENTRAL, reason="   ")
    assert wc.operations[key(OP)].status_reason is None
    assert wc.operations[key("4712/0010")].status_reason is None


def test_held_then_split_drops_the_reason() -> None:
    wc = make_wc(spec())
    act(wc, A.START_PRODUCTION, 0)
    act(wc, A.HOLD, 10, actor=CENTRAL, reason="tool check")
    act(wc, A.SPLIT, 20, actor=SUPERVISOR)
    assert wc.operations[key(OP)].status_reason is None


@pytest.mark.parametrize(
    ("action", "reason", "why"),
    [
        (A.HOLD, "x" * (MAX_TEXT + 1), f"at most {MAX_TEXT} characters"),
        (A.HOLD, "bad\x00byte", "only printable characters"),
        (A.CANCEL, "line\nbreak", "only printable characters"),
        (A.START_PRODUCTION, "because", "only a hold or a cancel carries a reason"),
    ],
)
def test_a_bad_reason_is_refused_naming_the_field(action: Action, reason: str, why: str) -> None:
    wc = make_wc(spec())
    rej = rejected(wc, Transition(action, OP, SUPERVISOR, at(0), reason=reason))
    assert rej.code is RejectionCode.INVALID_VALUE
    assert rej.field == "reason"
    assert why in rej.message
    assert isinstance(rej.value, str)
    assert len(rej.value) <= 43
