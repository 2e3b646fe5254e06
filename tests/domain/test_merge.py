"""Central merges dispatched operations of the same material into one (edge.domain.lifecycle)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from edge.domain.core import WorkCenter
from edge.domain.events import EventType, RejectionCode
from edge.domain.inputs import Action, MergeOperations, RequestConfirmation, Transition
from edge.domain.limits import MAX_MERGE
from edge.domain.model import OperationStatus
from tests.domain.builders import (
    CENTRAL,
    SUPERVISOR,
    act,
    at,
    count_good,
    events_of,
    key,
    make_wc,
    ok,
    one,
    rejected,
    spec,
)

A, B, C = "4711/0020", "4712/0020", "4713/0020"


def three() -> WorkCenter:
    return make_wc(
        spec("4711", "0020", 100, due="2024-03-08T12:00:00Z"),
        spec("4712", "0020", 50, due="2024-03-06T06:00:00+01:00"),
        spec("4713", "0020", 25, due=None),
    )


def merge(*sources: str, target: str = A, seconds: float = 0, **kw: object) -> MergeOperations:
    return MergeOperations(target, tuple(sources), at(seconds), CENTRAL, **kw)  # type: ignore[arg-type]


def test_the_sources_end_merged_and_the_target_takes_the_sum_and_the_earliest_due() -> None:
    wc = three()
    out = ok(wc, merge(B, C, reason="one setup"))
    target = wc.operations[key(A)]
    assert target.spec.target_qty == Decimal(175)
    assert target.spec.due == "2024-03-06T06:00:00+01:00"
    assert target.status is OperationStatus.DISPATCHED
    for ref in (B, C):
        op = wc.operations[key(ref)]
        assert op.status is OperationStatus.MERGED
        assert op.status.finished
        assert op.merged_into == A
        assert op.status_reason == f"merged into {A}"
        assert op.ended == at(0)
    merged = one(out, EventType.OPERATION_MERGED)
    assert merged.op == A
    assert merged.data["sources"] == [B, C]
    assert merged.data["target_qty"] == 175
    assert merged.data["reason"] == "one setup"
    assert merged.data["changes"] == {
        "target_qty": [100, 175],
        "due": ["2024-03-08T12:00:00Z", "2024-03-06T06:00:00+01:00"],
    }
    moved = events_of(out, EventType.OPERATION_STATE_CHANGED)
    assert [(e.op, e.data["from"], e.data["to"], e.data["action"]) for e in moved] == [
        (B, "dispatched", "merged", "merge"),
        (C, "dispatched", "merged", "merge"),
    ]


def test_a_quantity_and_a_due_date_given_win() -> None:
    wc = three()
    ok(wc, merge(B, quantity=Decimal("140.5"), due="2024-03-07"))
    target = wc.operations[key(A)]
    assert (target.spec.target_qty, target.spec.due) == (Decimal("140.5"), "2024-03-07")


def test_the_same_merge_again_changes_nothing_and_is_not_refused() -> None:
    wc = three()
    ok(wc, merge(B, C))
    out = ok(wc, merge(B, C))
    assert out.events == ()
    assert not out.changed
    assert wc.operations[key(A)].spec.target_qty == 175
    # the target may have started since: the repeat is still no error
    act(wc, Action.START_PRODUCTION, 10, A)
    assert not ok(wc, merge(C, B, seconds=20)).changed


def test_a_merge_naming_one_merged_before_and_one_new_merges_the_new_one_only() -> None:
    wc = three()
    ok(wc, merge(B))
    out = ok(wc, merge(B, C, seconds=5))
    assert one(out, EventType.OPERATION_MERGED).data["sources"] == [C]
    assert wc.operations[key(A)].spec.target_qty == 175


def test_merged_operations_never_confirm_nor_take_unassigned_parts() -> None:
    wc = three()
    ok(wc, merge(B))
    refusal = rejected(wc, RequestConfirmation(SUPERVISOR, at(5), B))
    assert refusal.code is RejectionCode.NOTHING_TO_CONFIRM
    refusal = rejected(wc, Transition(Action.START_PRODUCTION, B, "operator:1", at(6)))
    assert refusal.code is RejectionCode.ILLEGAL_TRANSITION


@pytest.mark.parametrize(
    ("prepare", "inp", "field", "words"),
    [
        (None, merge(B, target="9999/0010"), "target", "no such operation"),
        (None, merge("9999/0010"), "sources[0]", "no such operation"),
        (None, merge("4711"), "sources[0]", "not ORDER/OPERATION"),
        (None, merge(A), "sources[0]", "is the target"),
        (None, merge(B, B), "sources[1]", "named twice"),
        (None, merge(), "sources", "a merge names 1 to"),
        (None, merge(*[f"9{i}/0010" for i in range(MAX_MERGE + 1)]), "sources", "1 to 50"),
        ("run_b", merge(B), "sources[0]", "is running"),
        ("run_a", merge(B), "target", "is running"),
        ("setup_b", merge(B), "sources[0]", "is setup"),
        ("interrupt_b", merge(B), "sources[0]", "is interrupted"),
        ("hold_b", merge(B), "sources[0]", "is held"),
        ("hold_a", merge(B), "target", "is held"),
        ("confirmed_b", merge(B), "sources[0]", "is completed"),
        ("cancel_b", merge(B), "sources[0]", "is cancelled"),
        ("merged_c_into_b", merge(C), "sources[0]", "is merged (into 4712/0020)"),
        ("other_material", merge("4714/0020"), "sources[0]", "material 'MAT-2'"),
        ("other_unit", merge("4715/0020"), "sources[0]", "unit 'KG'"),
        (None, merge(B, reason="x" * 201), "reason", "at most 200"),
        (None, merge(B, quantity=Decimal(0)), "quantity", "positive number"),
        (None, merge(B, due="\x00bad"), "due", "printable"),
    ],
)
def test_a_merge_is_refused_with_the_reason_and_changes_nothing(
    prepare: str | None, inp: MergeOperations, field: str, words: str
) -> None:
    wc = make_wc(
        spec("4711", "0020", 100),
        spec("4712", "0020", 50),
        spec("4713", "0020", 25),
        spec("4714", "0020", 10, material="MAT-2"),
        spec("4715", "0020", 10, unit="KG"),
    )
    if prepare == "run_b":
        act(wc, Action.START_PRODUCTION, -60, B)
    elif prepare == "run_a":
        act(wc, Action.START_PRODUCTION, -60, A)
    elif prepare == "setup_b":
        act(wc, Action.START_SETUP, -60, B)
    elif prepare == "interrupt_b":
        act(wc, Action.START_PRODUCTION, -60, B)
        act(wc, Action.INTERRUPT, -50, B)
    elif prepare in ("hold_b", "hold_a"):
        ok(wc, Transition(Action.HOLD, B if prepare == "hold_b" else A, CENTRAL, at(-60)))
    elif prepare == "confirmed_b":
        act(wc, Action.START_PRODUCTION, -600, B)
        count_good(wc, 5, -100)
        act(wc, Action.COMPLETE, -50, B, variance_reason="short")
    elif prepare == "cancel_b":
        ok(wc, Transition(Action.CANCEL, B, CENTRAL, at(-60)))
    elif prepare == "merged_c_into_b":
        ok(wc, merge(C, target=B, seconds=-60))
    refusal = rejected(wc, inp)
    assert refusal.field == field
    assert words in refusal.message, refusal.message


def test_a_source_with_counts_is_refused_as_partly_done() -> None:
    wc = make_wc(spec("4711", "0020", 100), spec("4712", "0020", 50))
    act(wc, Action.START_PRODUCTION, -600, B)
    count_good(wc, 5, -100)
    ok(wc, RequestConfirmation("operator:1", at(-90), B))
    act(wc, Action.INTERRUPT, -80, B)
    refusal = rejected(wc, merge(B))
    assert refusal.code is RejectionCode.OPERATION_ACTIVE
    assert "is interrupted" in refusal.message


def test_a_sum_over_the_bound_is_refused() -> None:
    wc = make_wc(spec("4711", "0020", 999_999_999), spec("4712", "0020", 2))
    refusal = rejected(wc, merge(B))
    assert refusal.field == "quantity"
    assert "give the quantity" in refusal.message
