"""rules.md §7: the dispatch list — versions, replace semantics, conflicts, tolerances."""

from __future__ import annotations

from decimal import Decimal

from edge.domain.core import WorkCenter
from edge.domain.events import EventType, RejectionCode
from edge.domain.inputs import AcknowledgeOverDelivery, Action, DispatchList, Pulses, Transition

from .builders import (
    OPERATOR,
    act,
    at,
    events_of,
    key,
    make_rules,
    make_wc,
    ok,
    one,
    pulse_source,
    rejected,
    snapshot,
    spec,
)

OP = "4711/0020"


def wc_pulses(*specs: object) -> WorkCenter:
    return make_wc(*specs, sources=(pulse_source("press1"),))  # type: ignore[arg-type]


def test_a_newer_version_applies_and_an_older_or_equal_one_is_rejected() -> None:
    wc = wc_pulses(spec())
    out = ok(wc, DispatchList(2, (spec(), spec("4712", "0010")), at(0)))
    applied = one(out, EventType.DISPATCH_APPLIED)
    assert applied.data["version"] == 2
    assert wc.header.dispatch_version == 2
    rej = rejected(wc, DispatchList(1, (spec("4800", "0010"),), at(10)))
    assert rej.code is RejectionCode.STALE_DISPATCH
    assert (rej.field, rej.value) == ("version", 1)
    assert "version = 1" in rej.message
    # The list held, delivered again (a retained message after a reconnect), changes nothing.
    before = snapshot(wc)
    out = wc.apply(DispatchList(2, (spec(), spec("4712", "0010")), at(20)))
    assert out.events == ()
    assert snapshot(wc) == before


def test_replace_semantics_a_dropped_waiting_operation_is_withdrawn() -> None:
    wc = wc_pulses(spec(), spec("4712", "0010"))
    out = ok(wc, DispatchList(2, (spec("4712", "0010"), spec("4713", "0010")), at(0)))
    assert key(OP) not in wc.operations
    assert one(out, EventType.OPERATION_WITHDRAWN).op == OP
    assert one(out, EventType.OPERATION_DISPATCHED).op == "4713/0010"
    assert sorted(str(k) for k in wc.operations) == ["4712/0010", "4713/0010"]


def test_a_list_that_drops_the_active_operation_does_not_stop_it() -> None:
    wc = wc_pulses(spec(), spec("4712", "0010"))
    act(wc, Action.START_PRODUCTION, 0)
    ok(wc, Pulses("press1", 5, at(10)))
    out = ok(wc, DispatchList(2, (spec("4712", "0010"),), at(20)))
    conflict = one(out, EventType.DISPATCH_CONFLICT)
    assert conflict.op == OP
    assert conflict.data["conflict"] == "active_not_in_list"
    op = wc.operations[key(OP)]
    assert op.status.value == "running"
    ok(wc, Pulses("press1", 5, at(30)))
    assert op.counted.good == 10
    act(wc, Action.COMPLETE, 40)


def test_a_list_that_changes_the_active_operation_applies_from_then_on() -> None:
    wc = wc_pulses(spec(target=1000, over_tolerance_pct=Decimal(5)))
    act(wc, Action.START_PRODUCTION, 0)
    ok(wc, Pulses("press1", 100, at(1000)))
    op = wc.operations[key(OP)]
    changed = spec(target=1200, over_tolerance_pct=Decimal(5), std_cycle_s=8.0, due="2024-03-09")
    out = ok(wc, DispatchList(2, (changed,), at(1100)))
    event = one(out, EventType.OPERATION_CHANGED)
    assert event.op == OP
    assert event.data["active"] is True
    assert event.data["changes"] == {
        "target_qty": [1000, 1200],
        "std_cycle_s": [10.0, 8.0],
        "due": [None, "2024-03-09"],
    }
    assert op.spec == changed
    assert op.counted.good == 100  # never rewritten
    # The new target counts from now on: 1000 is no longer "target reached".
    out = ok(wc, Pulses("press1", 900, at(5000)))
    assert events_of(out, EventType.TARGET_REACHED) == []
    out = ok(wc, Pulses("press1", 200, at(6000)))
    assert one(out, EventType.TARGET_REACHED).data["target"] == 1200


def test_a_change_does_not_rewrite_confirmed_quantities() -> None:
    wc = wc_pulses(spec())
    act(wc, Action.START_PRODUCTION, 0)
    ok(wc, Pulses("press1", 40, at(500)))
    from edge.domain.inputs import RequestConfirmation

    ok(wc, RequestConfirmation(OPERATOR, at(600)))
    (c1,) = wc.confirmations.values()
    ok(wc, DispatchList(2, (spec(target=50),), at(700)))
    assert c1.tally.good == 40
    op = wc.operations[key(OP)]
    assert op.counted.good == 40
    assert op.spec.target_qty == 50
    ok(wc, Pulses("press1", 1, at(800)))
    assert op.counted.good == 41


def test_an_unchanged_operation_in_a_new_list_emits_no_change() -> None:
    wc = wc_pulses(spec())
    out = ok(wc, DispatchList(2, (spec(),), at(0)))
    assert events_of(out, EventType.OPERATION_CHANGED) == []


def test_picking_out_of_the_central_sequence_is_recorded() -> None:
    wc = wc_pulses(spec("4711", "0020", sequence=1), spec("4712", "0010", sequence=2))
    out = act(wc, Action.START_SETUP, 0, op="4712/0010")
    picked = one(out, EventType.PICKED_OUT_OF_SEQUENCE)
    assert picked.op == "4712/0010"
    assert picked.data["expected"] == "4711/0020"
    assert picked.actor == OPERATOR


def test_picking_in_sequence_records_nothing() -> None:
    wc = wc_pulses(spec("4711", "0020", sequence=1), spec("4712", "0010", sequence=2))
    out = act(wc, Action.START_SETUP, 0, op="4711/0020")
    assert events_of(out, EventType.PICKED_OUT_OF_SEQUENCE) == []


def test_completing_below_the_under_delivery_tolerance_needs_a_variance_reason() -> None:
    wc = wc_pulses(spec(target=1000, under_tolerance_pct=Decimal(2)))
    act(wc, Action.START_PRODUCTION, 0)
    ok(wc, Pulses("press1", 979, at(1000)))  # the floor is 980
    rej = rejected(wc, Transition(Action.COMPLETE, OP, OPERATOR, at(1100)))
    assert rej.code is RejectionCode.VARIANCE_REASON_REQUIRED
    assert rej.field == "variance_reason"
    assert "980" in rej.message
    out = act(wc, Action.COMPLETE, 1100, variance_reason="MATERIAL")
    final = one(out, EventType.CONFIRMATION_CREATED)
    assert final.data["variance_reason"] == "MATERIAL"
    assert final.data["final"] is True


def test_completing_within_the_under_delivery_tolerance_needs_no_reason() -> None:
    wc = wc_pulses(spec(target=1000, under_tolerance_pct=Decimal(2)))
    act(wc, Action.START_PRODUCTION, 0)
    ok(wc, Pulses("press1", 980, at(1000)))
    act(wc, Action.COMPLETE, 1100)


def test_passing_the_over_delivery_tolerance_warns_and_needs_an_acknowledgement() -> None:
    wc = wc_pulses(spec(target=1000, over_tolerance_pct=Decimal(5)))
    act(wc, Action.START_PRODUCTION, 0)
    rej = rejected(wc, AcknowledgeOverDelivery(OPERATOR, at(10)))
    assert rej.field == "op"
    out = ok(wc, Pulses("press1", 1050, at(1000)))  # exactly at the tolerance: no warning yet
    assert events_of(out, EventType.OVER_TOLERANCE) == []
    out = ok(wc, Pulses("press1", 1, at(1010)))
    warning = one(out, EventType.OVER_TOLERANCE)
    assert (warning.data["good"], warning.data["tolerance_pct"]) == (1051, 5)
    op = wc.operations[key(OP)]
    assert op.over_tolerance
    assert not op.over_tolerance_acknowledged
    out = ok(wc, AcknowledgeOverDelivery(OPERATOR, at(1020)))
    assert one(out, EventType.OVER_TOLERANCE_ACKNOWLEDGED).actor == OPERATOR
    assert op.over_tolerance_acknowledged
    rejected(wc, AcknowledgeOverDelivery(OPERATOR, at(1030)))
    out = ok(wc, Pulses("press1", 10, at(1040)))  # counted, and warned once only
    assert events_of(out, EventType.OVER_TOLERANCE) == []
    assert op.counted.good == 1061


def test_master_data_from_central_keeps_the_gateways_own_scrap_reasons() -> None:
    from edge.domain.inputs import MasterDataReceived
    from edge.domain.rules import MasterData, ScrapReason, StopReason

    wc = WorkCenter(make_rules())
    md = MasterData(
        version=2,
        stop_reasons=(StopReason("M01", "mechanical failure"),),
        scrap_reasons=(ScrapReason("S01", "flash"),),
    )
    ok(wc, MasterDataReceived(md, at(0)))
    codes = {r.code for r in wc.master_data.scrap_reasons}
    assert codes == {"S01", wc.rules.setup_scrap_reason, wc.rules.machine_scrap_reason}


def test_material_unit_and_parts_per_signal_stay_once_an_operation_started() -> None:
    # A running operation's counted parts belong to its material, in its unit, converted with
    # its parts per signal: central may change its target and standards, not those.
    wc = wc_pulses(spec(), spec("4712", "0010"))
    act(wc, Action.START_PRODUCTION, 0)
    ok(wc, Pulses("press1", 10, at(100)))
    changed = spec(
        target=1200, material="MAT-2", unit="KG", parts_per_signal=Decimal(4), std_cycle_s=8.0
    )
    waiting = spec("4712", "0010", material="MAT-9")
    out = ok(wc, DispatchList(2, (changed, waiting), at(200)))
    conflict = one(out, EventType.DISPATCH_CONFLICT)
    assert (conflict.op, conflict.data["conflict"]) == (OP, "change_refused")
    assert conflict.data["changes"] == {
        "material": ["MAT-1", "MAT-2"],
        "unit": ["PC", "KG"],
        "parts_per_signal": [1, 4],
    }
    op = wc.operations[key(OP)]
    assert (op.spec.material, op.spec.unit, op.spec.parts_per_signal) == ("MAT-1", "PC", 1)
    assert (op.spec.target_qty, op.spec.std_cycle_s) == (1200, 8.0)  # these apply
    changes = [e.data["changes"] for e in events_of(out, EventType.OPERATION_CHANGED)]
    assert {"target_qty": [1000, 1200], "std_cycle_s": [10.0, 8.0]} in changes
    # The waiting operation has not started: everything may change.
    assert wc.operations[key("4712/0010")].spec.material == "MAT-9"
    ok(wc, Pulses("press1", 10, at(300)))
    assert op.counted.good == 20  # no jump, no discontinuity: the same conversion
    assert events_of(ok(wc, Pulses("press1", 1, at(310))), EventType.COUNTER_DISCONTINUITY) == []


def test_a_dispatch_version_beyond_the_bound_is_refused() -> None:
    from edge.domain.limits import MAX_INT

    wc = wc_pulses(spec())
    rej = rejected(wc, DispatchList(10**30, (spec(),), at(10)))
    assert (rej.code, rej.field) == (RejectionCode.INVALID_VALUE, "version")
    ok(wc, DispatchList(MAX_INT, (spec(),), at(20)))
    rej = rejected(wc, DispatchList(MAX_INT + 1, (spec(),), at(30)))
    assert rej.field == "version"


def test_master_data_with_an_empty_stop_catalogue_is_refused() -> None:
    from edge.domain.inputs import MasterDataReceived
    from edge.domain.rules import ConfirmationPolicy, MasterData, StopReason

    wc = WorkCenter(make_rules())
    rej = rejected(wc, MasterDataReceived(MasterData(version=2), at(0)))
    assert (rej.code, rej.field) == (RejectionCode.INVALID_VALUE, "stop_reasons")
    reasons = (StopReason("M01", "mechanical failure"),)
    flood = ConfirmationPolicy(every_minutes=1e-9)
    rej = rejected(wc, MasterDataReceived(MasterData(2, reasons, policy=flood), at(0)))
    assert rej.field == "confirmation_policy.every_minutes"
    tiny = ConfirmationPolicy(every_good=Decimal("1E-400"))
    rej = rejected(wc, MasterDataReceived(MasterData(2, reasons, policy=tiny), at(0)))
    assert rej.field == "confirmation_policy.every_good"
    crew = MasterData(2, reasons, crew_size=Decimal("1E+5000"))
    assert rejected(wc, MasterDataReceived(crew, at(0))).field == "crew_size"
