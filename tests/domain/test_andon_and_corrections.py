"""rules.md §8 calls for help, and a supervisor's count correction with a reason."""

from __future__ import annotations

from decimal import Decimal

import pytest

from edge.domain.core import WorkCenter
from edge.domain.events import EventType, RejectionCode
from edge.domain.inputs import (
    AcknowledgeHelp,
    Action,
    CallForHelp,
    CloseHelp,
    CorrectCount,
    Pulses,
    ReportScrap,
    RequestConfirmation,
    ReverseConfirmation,
    Tick,
)

from .builders import (
    OPERATOR,
    SUPERVISOR,
    act,
    at,
    events_of,
    make_wc,
    ok,
    one,
    pulse_source,
    rejected,
    spec,
)


def escalations(wc: WorkCenter, seconds: float) -> list[object]:
    return events_of(wc.apply(Tick(at(seconds))), EventType.HELP_ESCALATED)


def test_a_call_is_raised_acknowledged_and_closed_with_its_actors(running: WorkCenter) -> None:
    raised = one(ok(running, CallForHelp("material", "button:call", at(10))), EventType.HELP_CALLED)
    call_id = str(raised.data["call_id"])
    assert raised.op == "4711/0020"  # the one active operation, for central's context
    assert raised.actor == "button:call"
    assert running.help_calls[call_id].category == "material"
    # A call is not a stop: the operation keeps running and no stop opens.
    assert running.open_stop is None
    acked = one(
        ok(running, AcknowledgeHelp(call_id, "operator:logistics-3", at(70))),
        EventType.HELP_ACKNOWLEDGED,
    )
    assert acked.data["waited_ms"] == 60_000
    closed = one(ok(running, CloseHelp(call_id, OPERATOR, at(130))), EventType.HELP_CLOSED)
    assert closed.data["duration_ms"] == 120_000
    assert closed.data["acknowledged_by"] == "operator:logistics-3"
    assert running.help_calls == {}


def test_an_unanswered_call_escalates_once_after_the_configured_time() -> None:
    wc = make_wc(spec(), help_escalate_after_s=300.0)
    call_id = str(
        one(ok(wc, CallForHelp("maintenance", OPERATOR, at(0))), EventType.HELP_CALLED).data[
            "call_id"
        ]
    )
    assert not escalations(wc, 299)
    escalated = one(wc.apply(Tick(at(300))), EventType.HELP_ESCALATED)
    assert escalated.data == {"call_id": call_id, "category": "maintenance", "waited_ms": 300_000}
    assert not escalations(wc, 900)
    assert wc.help_calls[call_id].escalated


def test_an_acknowledged_call_does_not_escalate() -> None:
    wc = make_wc(spec(), help_escalate_after_s=60.0)
    call_id = str(
        one(ok(wc, CallForHelp("quality", OPERATOR, at(0))), EventType.HELP_CALLED).data["call_id"]
    )
    ok(wc, AcknowledgeHelp(call_id, SUPERVISOR, at(30)))
    assert not escalations(wc, 600)


def test_escalation_zero_means_never() -> None:
    wc = make_wc(spec(), help_escalate_after_s=0.0)
    ok(wc, CallForHelp("quality", OPERATOR, at(0)))
    assert not escalations(wc, 86_400)


@pytest.mark.parametrize(
    ("inp", "code", "field"),
    [
        (CallForHelp("coffee", OPERATOR, at(1)), RejectionCode.UNKNOWN_REASON, "category"),
        (CallForHelp("material", OPERATOR, at(1), note=" "), RejectionCode.INVALID_VALUE, "note"),
        (CallForHelp("material", "nobody", at(1)), RejectionCode.INVALID_VALUE, "actor"),
        (AcknowledgeHelp("H999999", OPERATOR, at(1)), RejectionCode.UNKNOWN_HELP_CALL, "call_id"),
        (CloseHelp("H999999", OPERATOR, at(1)), RejectionCode.UNKNOWN_HELP_CALL, "call_id"),
    ],
)
def test_bad_calls_are_refused_naming_the_field(
    wc: WorkCenter, inp: object, code: RejectionCode, field: str
) -> None:
    rej = rejected(wc, inp)  # type: ignore[arg-type]
    assert (rej.code, rej.field) == (code, field)


def test_a_second_call_of_the_same_kind_waits_for_the_first(wc: WorkCenter) -> None:
    """A double press must not raise two calls; another category may be called meanwhile."""
    first = one(ok(wc, CallForHelp("material", OPERATOR, at(0))), EventType.HELP_CALLED)
    rej = rejected(wc, CallForHelp("material", "button:call", at(1)))
    assert str(first.data["call_id"]) in rej.message
    ok(wc, CallForHelp("maintenance", OPERATOR, at(2)))
    ok(wc, AcknowledgeHelp(str(first.data["call_id"]), SUPERVISOR, at(3)))
    ok(wc, CallForHelp("material", OPERATOR, at(4)))  # the first is being answered
    assert len(wc.help_calls) == 3


def test_acknowledging_twice_is_refused(wc: WorkCenter) -> None:
    call_id = str(
        one(ok(wc, CallForHelp("material", OPERATOR, at(0))), EventType.HELP_CALLED).data["call_id"]
    )
    ok(wc, AcknowledgeHelp(call_id, SUPERVISOR, at(3)))
    assert "already acknowledged" in rejected(wc, AcknowledgeHelp(call_id, OPERATOR, at(4))).message


# -- count corrections ----------------------------------------------------------------------------


def counted(n: int) -> WorkCenter:
    wc = make_wc(spec(), sources=(pulse_source("press1"),))
    act(wc, Action.START_PRODUCTION, 0)
    ok(wc, Pulses("press1", n, at(10)))
    return wc


def test_a_supervisor_corrects_counts_with_a_reason() -> None:
    wc = counted(50)
    out = ok(
        wc,
        CorrectCount(
            "4711/0020",
            Decimal(-3),
            Decimal(3),
            "3 parts found cracked",
            SUPERVISOR,
            at(20),
            scrap_reason="S03",
        ),
    )
    event = one(out, EventType.COUNT_CORRECTED)
    assert event.actor == SUPERVISOR
    assert event.data == {
        "good_delta": -3,
        "scrap_delta": 3,
        "scrap_reason": "S03",
        "reason": "3 parts found cracked",
    }
    (op,) = wc.active
    assert op.counted.good == 47
    assert op.counted.scrap == {"S03": 3}


def test_a_scrap_correction_without_a_code_books_machine_scrap() -> None:
    wc = counted(5)
    ok(wc, CorrectCount("", Decimal(0), Decimal(2), "counted by hand", SUPERVISOR, at(20)))
    (op,) = wc.active
    assert op.counted.scrap == {"MACHINE": 2}


@pytest.mark.parametrize(
    ("correction", "code", "field"),
    [
        (
            CorrectCount("", Decimal(1), Decimal(0), "why", OPERATOR, at(20)),
            RejectionCode.SUPERVISOR_ONLY,
            "actor",
        ),
        (
            CorrectCount("", Decimal(0), Decimal(0), "why", SUPERVISOR, at(20)),
            RejectionCode.INVALID_VALUE,
            "good_delta",
        ),
        (
            CorrectCount("", Decimal("1e7"), Decimal(0), "why", SUPERVISOR, at(20)),
            RejectionCode.INVALID_VALUE,
            "good_delta",
        ),
        (
            CorrectCount("", Decimal("NaN"), Decimal(0), "why", SUPERVISOR, at(20)),
            RejectionCode.INVALID_VALUE,
            "good_delta",
        ),
        (
            CorrectCount("", Decimal(1), Decimal(0), "  ", SUPERVISOR, at(20)),
            RejectionCode.INVALID_VALUE,
            "reason",
        ),
        (
            CorrectCount("", Decimal(0), Decimal(1), "why", SUPERVISOR, at(20), scrap_reason="ZZ"),
            RejectionCode.UNKNOWN_REASON,
            "scrap_reason",
        ),
        (
            CorrectCount("", Decimal(-51), Decimal(0), "why", SUPERVISOR, at(20)),
            RejectionCode.EXCEEDS_PENDING,
            "good_delta",
        ),
        (
            CorrectCount("9999/0010", Decimal(1), Decimal(0), "why", SUPERVISOR, at(20)),
            RejectionCode.UNKNOWN_OPERATION,
            "op",
        ),
    ],
)
def test_bad_corrections_are_refused_and_change_nothing(
    correction: CorrectCount, code: RejectionCode, field: str
) -> None:
    rej = rejected(counted(50), correction)
    assert (rej.code, rej.field) == (code, field)


def test_confirmed_counts_are_corrected_by_reversal_not_by_editing() -> None:
    wc = counted(50)
    one(ok(wc, RequestConfirmation(OPERATOR, at(30))), EventType.CONFIRMATION_CREATED)
    rej = rejected(wc, CorrectCount("", Decimal(-1), Decimal(0), "why", SUPERVISOR, at(40)))
    assert rej.code is RejectionCode.EXCEEDS_PENDING
    assert "reverse" in rej.message
    ok(wc, ReverseConfirmation("4711/0020", 1, SUPERVISOR, at(50)))
    ok(wc, CorrectCount("", Decimal(-1), Decimal(0), "why", SUPERVISOR, at(60)))


def test_absurd_scrap_quantities_are_refused(running: WorkCenter) -> None:
    rej = rejected(running, ReportScrap(Decimal("1e12"), "S03", OPERATOR, at(5)))
    assert rej.field == "qty"
    assert "up to" in rej.message
