"""Components, batches and their consumption (edge.domain.material): backflush by the count split
where the batch changed, recorded consumption, the sum rule for components across partial,
final and reversed confirmations, a split's remainder, and the bad input a scanner or a panel
may send."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.domain.core import WorkCenter
from edge.domain.events import EventType, RejectionCode
from edge.domain.inputs import (
    Action,
    ComponentBatchLoaded,
    ComponentConsumed,
    DispatchList,
    Pulses,
    ReportScrap,
    RequestConfirmation,
    ReverseConfirmation,
)
from edge.domain.material import consumed
from edge.domain.model import ComponentSpec

from .builders import (
    OPERATOR,
    SUPERVISOR,
    act,
    at,
    events_of,
    key,
    make_wc,
    ok,
    one,
    pulse_source,
    rejected,
    spec,
)

OP = "4711/0020"
STEEL = ComponentSpec(
    "STEEL-2MM", Decimal("0.25"), "KG", backflush=True, batch_managed=True, gtin="04012345000014"
)
SCREW = ComponentSpec("SCREW-M4", Decimal(4), "PC", backflush=True)
LABEL = ComponentSpec("LABEL-7", Decimal(1), "PC", batch_managed=True, item="0030")
COMPONENTS = (STEEL, SCREW, LABEL)


def running(**rules_kw: object) -> WorkCenter:
    kw: dict[str, object] = {"sources": (pulse_source("press1"),)}
    kw.update(rules_kw)
    wc = make_wc(spec(target=1000, components=COMPONENTS, batch="FG-0815"), **kw)
    act(wc, Action.START_PRODUCTION, 0)
    return wc


def parts(wc: WorkCenter, n: int, seconds: float) -> None:
    ok(wc, Pulses("press1", n, at(seconds)))


def load(wc: WorkCenter, batch: str, seconds: float, material: str = "STEEL-2MM") -> None:
    ok(wc, ComponentBatchLoaded(batch, OPERATOR, at(seconds), material=material))


def lines(event_data: object) -> list[tuple[object, ...]]:
    assert isinstance(event_data, dict)
    return [
        (m["material"], m["batch"], m["qty"], m["direction"]) for m in event_data["goods_movements"]
    ]


def test_a_batch_change_mid_period_splits_the_backflush_where_it_happened() -> None:
    wc = running()
    load(wc, "B1", 1)
    parts(wc, 10, 30)
    load(wc, "B2", 40)
    parts(wc, 6, 60)
    out = ok(wc, RequestConfirmation(OPERATOR, at(70), OP))
    conf = one(out, EventType.CONFIRMATION_CREATED)
    assert conf.data["yield_qty"] == 16
    assert lines(conf.data) == [
        ("SCREW-M4", None, 64, "issue"),
        ("STEEL-2MM", "B1", "2.5", "issue"),
        ("STEEL-2MM", "B2", "1.5", "issue"),
    ]
    assert conf.data["batch"] == "FG-0815"  # what the ERP gave the produced quantity
    steel = conf.data["goods_movements"][1]
    assert (steel["unit"], steel["backflush"], steel["batch_missing"]) == ("KG", True, False)


def test_parts_made_before_any_batch_was_scanned_are_booked_without_one() -> None:
    wc = running()
    parts(wc, 4, 30)
    load(wc, "B1", 40)
    parts(wc, 4, 60)
    out = act(wc, Action.COMPLETE, 70)
    conf = one(out, EventType.CONFIRMATION_CREATED)
    steel = [m for m in conf.data["goods_movements"] if m["material"] == "STEEL-2MM"]
    assert [(m["batch"], m["qty"], m["batch_missing"]) for m in steel] == [
        (None, 1, True),
        ("B1", 1, False),
    ]


def test_recorded_consumption_comes_from_the_loaded_batch_unless_named() -> None:
    wc = running()
    load(wc, "L-1", 1, material="LABEL-7")
    out = ok(wc, ComponentConsumed("LABEL-7", Decimal(20), OPERATOR, at(10)))
    ev = one(out, EventType.COMPONENT_CONSUMED)
    assert (ev.data["batch"], ev.data["qty"], ev.data["unit"]) == ("L-1", 20, "PC")
    ok(wc, ComponentConsumed("LABEL-7", Decimal(5), OPERATOR, at(11), batch="L-0"))
    parts(wc, 2, 30)
    out = ok(wc, RequestConfirmation(OPERATOR, at(40), OP))
    conf = one(out, EventType.CONFIRMATION_CREATED)
    label = [m for m in conf.data["goods_movements"] if m["material"] == "LABEL-7"]
    assert [(m["batch"], m["qty"], m["item"], m["backflush"]) for m in label] == [
        ("L-0", 5, "0030", False),
        ("L-1", 20, "0030", False),
    ]


def test_components_obey_the_sum_rule_across_partial_reversed_and_final() -> None:
    wc = running()
    load(wc, "B1", 1)
    parts(wc, 8, 30)
    ok(wc, RequestConfirmation(OPERATOR, at(40), OP))
    load(wc, "B2", 41)
    parts(wc, 4, 60)
    ok(wc, RequestConfirmation(OPERATOR, at(70), OP))
    out = ok(wc, ReverseConfirmation(OP, 1, SUPERVISOR, at(80)))
    rev = one(out, EventType.CONFIRMATION_REVERSED)
    assert ("STEEL-2MM", "B1", 2, "issue") in lines(rev.data)
    out = act(wc, Action.COMPLETE, 90)
    final = one(out, EventType.CONFIRMATION_CREATED)
    assert ("STEEL-2MM", "B1", 2, "issue") in lines(final.data)  # given back by the reversal
    op = wc.operations[key(OP)]
    total: dict[tuple[str, str], Decimal] = {}
    for conf in wc.confirmations.values():
        if conf.reversed:
            continue
        for material, by_batch in conf.consumption.items():
            for batch, qty in by_batch.items():
                total[(material, batch)] = total.get((material, batch), Decimal(0)) + qty
    expected = {
        (m, b): q for m, by_batch in consumed(op, True).items() for b, q in by_batch.items()
    }
    assert (
        total
        == expected
        == {
            ("STEEL-2MM", "B1"): Decimal(2),
            ("STEEL-2MM", "B2"): Decimal(1),
            ("SCREW-M4", ""): Decimal(48),
        }
    )


def test_without_scrap_consumed_only_the_yield_takes_backflushed_material() -> None:
    wc = running(backflush_scrap=False)
    load(wc, "B1", 1)
    parts(wc, 8, 30)
    ok(wc, ReportScrap(Decimal(4), "S01", OPERATOR, at(50)))
    out = act(wc, Action.COMPLETE, 60)
    final = one(out, EventType.CONFIRMATION_CREATED)
    assert (final.data["yield_qty"], final.data["scrap_qty"]) == (4, 4)
    assert lines(final.data) == [("SCREW-M4", None, 16, "issue"), ("STEEL-2MM", "B1", 1, "issue")]


def test_with_scrap_consumed_a_scrap_report_changes_no_consumption() -> None:
    wc = running()
    load(wc, "B1", 1)
    parts(wc, 8, 30)
    ok(wc, ReportScrap(Decimal(4), "S01", OPERATOR, at(50)))
    out = act(wc, Action.COMPLETE, 60)
    final = one(out, EventType.CONFIRMATION_CREATED)
    assert (final.data["yield_qty"], final.data["scrap_qty"]) == (4, 4)
    assert lines(final.data) == [("SCREW-M4", None, 32, "issue"), ("STEEL-2MM", "B1", 2, "issue")]


def test_a_loaded_batch_event_names_the_produced_quantity_and_the_one_it_replaced() -> None:
    wc = running()
    load(wc, "B1", 1)
    parts(wc, 7, 30)
    out = ok(
        wc,
        ComponentBatchLoaded("B2", OPERATOR, at(40), gtin="04012345000014", expiry="2027-06-30"),
    )
    ev = one(out, EventType.COMPONENT_BATCH_LOADED)
    assert ev.op == OP
    assert (ev.data["material"], ev.data["batch"], ev.data["previous_batch"]) == (
        "STEEL-2MM",
        "B2",
        "B1",
    )
    assert (ev.data["produced"], ev.data["expiry"]) == (7, "2027-06-30")


def test_a_split_remainder_starts_with_the_batches_on_the_machine() -> None:
    wc = running()
    load(wc, "B1", 1)
    parts(wc, 10, 30)
    load(wc, "B2", 31)
    parts(wc, 2, 40)
    out = act(wc, Action.SPLIT, 50)
    remainder = wc.operations[key("4711/0020/1")]
    assert [(b.material, b.batch, b.basis) for b in remainder.batch_loads] == [
        ("STEEL-2MM", "B2", Decimal(0))
    ]
    assert events_of(out, EventType.CONFIRMATION_CREATED)
    act(wc, Action.START_PRODUCTION, 60, op="4711/0020/1")
    ok(wc, Pulses("press1", 4, at(90)))
    out = act(wc, Action.COMPLETE, 100, op="4711/0020/1")
    assert ("STEEL-2MM", "B2", 1, "issue") in lines(one(out, EventType.CONFIRMATION_CREATED).data)


@pytest.mark.parametrize(
    ("inp", "code", "field", "says"),
    [
        (
            ComponentBatchLoaded("B1", OPERATOR, at(5), material="COPPER"),
            RejectionCode.UNKNOWN_COMPONENT,
            "material",
            "operation 4711/0020 has no such component (its components: STEEL-2MM, SCREW-M4",
        ),
        (
            ComponentBatchLoaded("B1", OPERATOR, at(5), gtin="09999999999999"),
            RejectionCode.UNKNOWN_COMPONENT,
            "gtin",
            "gtin = '09999999999999'",
        ),
        (
            ComponentBatchLoaded("B1", OPERATOR, at(5), material="SCREW-M4"),
            RejectionCode.INVALID_VALUE,
            "batch",
            "SCREW-M4 of operation 4711/0020 is not batch-managed",
        ),
        (
            ComponentBatchLoaded("", OPERATOR, at(5), material="STEEL-2MM"),
            RejectionCode.INVALID_VALUE,
            "batch",
            "must be 1 to 40 printable characters",
        ),
        (
            ComponentBatchLoaded("B\x1d1", OPERATOR, at(5), material="STEEL-2MM"),
            RejectionCode.INVALID_VALUE,
            "batch",
            "printable",
        ),
        (
            ComponentBatchLoaded("B1", OPERATOR, at(5)),
            RejectionCode.INVALID_VALUE,
            "material",
            "name the component's material or its GTIN",
        ),
        (
            ComponentBatchLoaded("B1", OPERATOR, at(5), material="STEEL-2MM", expiry="soon"),
            RejectionCode.INVALID_VALUE,
            "expiry",
            "not a date",
        ),
        (
            ComponentConsumed("SCREW-M4", Decimal(1), OPERATOR, at(5)),
            RejectionCode.INVALID_VALUE,
            "material",
            "backflushed",
        ),
        (
            ComponentConsumed("LABEL-7", Decimal(1), OPERATOR, at(5)),
            RejectionCode.INVALID_VALUE,
            "batch",
            "no batch of LABEL-7 is loaded",
        ),
        (
            ComponentConsumed("LABEL-7", Decimal("-1"), OPERATOR, at(5), batch="L1"),
            RejectionCode.INVALID_VALUE,
            "qty",
            "must be a positive number",
        ),
        (
            ComponentConsumed("LABEL-7", Decimal("0.0000001"), OPERATOR, at(5), batch="L1"),
            RejectionCode.INVALID_VALUE,
            "qty",
            "at most 6 decimal places",
        ),
        (
            ComponentConsumed("LABEL-7", Decimal("NaN"), OPERATOR, at(5), batch="L1"),
            RejectionCode.INVALID_VALUE,
            "qty",
            "positive number",
        ),
    ],
)
def test_bad_component_input_is_refused_naming_the_field(
    inp: ComponentBatchLoaded | ComponentConsumed, code: RejectionCode, field: str, says: str
) -> None:
    wc = running()
    rej = rejected(wc, inp)
    assert (rej.code, rej.field) == (code, field)
    assert says in rej.message


def test_the_same_batch_again_and_no_active_operation_are_refused() -> None:
    wc = running()
    load(wc, "B1", 1)
    rej = rejected(wc, ComponentBatchLoaded("B1", OPERATOR, at(2), material="STEEL-2MM"))
    assert "already the loaded batch" in rej.message
    act(wc, Action.COMPLETE, 3)
    rej = rejected(wc, ComponentBatchLoaded("B2", OPERATOR, at(4), material="STEEL-2MM"))
    assert rej.code is RejectionCode.NO_ACTIVE_OPERATION
    rej = rejected(wc, ComponentBatchLoaded("B2", OPERATOR, at(4), material="STEEL-2MM", op=OP))
    assert rej.code is RejectionCode.NO_ACTIVE_OPERATION
    assert "completed" in rej.message


def test_a_dispatch_list_with_bad_components_changes_nothing() -> None:
    wc = make_wc(spec())
    bad = (
        ComponentSpec("X", Decimal(0)),
        ComponentSpec("X", Decimal("1e-9")),
        ComponentSpec("", Decimal(1)),
    )
    for c in bad:
        rej = rejected(wc, DispatchList(2, (spec(components=(c,)),), at(0)))
        assert rej.field is not None
        assert rej.field.startswith("operations[0].components[0].")
    rej = rejected(wc, DispatchList(2, (spec(components=(SCREW, SCREW)),), at(0)))
    assert rej.field == "operations[0].components[1].material"
    assert "twice" in rej.message
    rej = rejected(wc, DispatchList(2, (spec(batch=" B1"),), at(0)))
    assert rej.field == "operations[0].batch"


def test_components_cannot_change_once_the_operation_started() -> None:
    wc = running()
    out = ok(wc, DispatchList(2, (spec(target=1000, components=(SCREW,)),), at(10)))
    conflict = one(out, EventType.DISPATCH_CONFLICT)
    assert conflict.data["conflict"] == "change_refused"
    assert "components" in conflict.data["changes"]  # type: ignore[operator]
    assert wc.operations[key(OP)].spec.components == COMPONENTS


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 12), st.booleans(), st.booleans(), st.integers(0, 3)),
        min_size=1,
        max_size=12,
    )
)
def test_property_confirmed_consumption_equals_what_the_count_consumed(
    steps: list[tuple[int, bool, bool, int]],
) -> None:
    """Whatever the order of parts, batch changes, scrap reports, confirmations and reversals,
    the non-reversed confirmations carry exactly what the operation consumed."""
    wc = running()
    t = 1.0
    batch_no = 0
    for n, change, confirm, scrap in steps:
        t += 60
        if change:
            batch_no += 1
            load(wc, f"B{batch_no}", t)
        if n:
            parts(wc, n, t + 30)
        op = wc.operations[key(OP)]
        if scrap and op.pending.good >= scrap:
            ok(wc, ReportScrap(Decimal(scrap), "S01", OPERATOR, at(t + 31)))
        if confirm and op.pending.has_quantity():
            ok(wc, RequestConfirmation(OPERATOR, at(t + 32), OP))
            if batch_no % 2:
                last = max(c.counter for c in wc.confirmations.values())
                ok(wc, ReverseConfirmation(OP, last, SUPERVISOR, at(t + 33)))
    act(wc, Action.COMPLETE, t + 100)
    op = wc.operations[key(OP)]
    total: dict[tuple[str, str], Decimal] = {}
    for conf in wc.confirmations.values():
        if not conf.reversed:
            for material, by_batch in conf.consumption.items():
                for batch, qty in by_batch.items():
                    k = (material, batch)
                    total[k] = total.get(k, Decimal(0)) + qty
    expected = {
        (m, b): q for m, by_batch in consumed(op, True).items() for b, q in by_batch.items()
    }
    assert {k: v for k, v in total.items() if v} == expected
