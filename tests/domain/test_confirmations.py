"""rules.md §6: confirmations — the worked example, keys, reversal, relay results, posting date."""

from __future__ import annotations

import hashlib
from decimal import Decimal

import pytest

from edge.domain.clock import Instant
from edge.domain.core import WorkCenter
from edge.domain.events import EventType, RejectionCode
from edge.domain.inputs import (
    Action,
    ConfirmationResult,
    Pulses,
    ReportScrap,
    RequestConfirmation,
    ResendConfirmation,
    ResultStatus,
    ReverseConfirmation,
    Transition,
)
from edge.domain.model import Confirmation, ConfirmationStatus
from edge.domain.rules import CURRENT_REVISION, Shift

from .builders import (
    EDGE_ID,
    OPERATOR,
    SUPERVISOR,
    act,
    at,
    events_of,
    key,
    make_wc,
    ok,
    one,
    policy_every,
    pulse_source,
    rejected,
    spec,
)

OP = "4711/0020"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def example_wc(**rules_kw: object) -> WorkCenter:
    """Target 1000 pcs, policy "every 250 good", running from 10:00."""
    kw: dict[str, object] = {"sources": (pulse_source("press1"),), "policy": policy_every(250)}
    kw.update(rules_kw)
    wc = make_wc(spec(target=1000), **kw)
    act(wc, Action.START_PRODUCTION, 0)
    return wc


def count_up(wc: WorkCenter, to: int, seconds: float) -> list:
    """Count good parts one batch of 10 at a time until the counted good reaches ``to``."""
    events = []
    op = wc.operations[key(OP)]
    while op.counted.good + op.counted.scrap.get("S03", 0) < to:
        n = min(10, to - int(op.counted.good + op.counted.scrap.get("S03", 0)))
        seconds += 10
        events.extend(ok(wc, Pulses("press1", n, at(seconds))).events)
    return events


def confs(wc: WorkCenter) -> list[Confirmation]:
    return sorted(wc.confirmations.values(), key=lambda c: c.counter)


def non_reversed_sum(wc: WorkCenter) -> tuple[Decimal, dict[str, Decimal]]:
    good = Decimal(0)
    scrap: dict[str, Decimal] = {}
    for c in confs(wc):
        if not c.reversed:
            good += c.tally.good
            for code, q in c.tally.scrap.items():
                scrap[code] = scrap.get(code, Decimal(0)) + q
    return good, scrap


def run_example(wc: WorkCenter) -> None:
    events = count_up(wc, 250, 0)
    (first,) = events_of_list(events)
    assert (first.data["conf_index"], first.data["yield_qty"], first.data["final"]) == (
        1,
        250,
        False,
    )
    events = count_up(wc, 500, 3000)
    (second,) = events_of_list(events)
    assert (second.data["conf_index"], second.data["yield_qty"]) == (2, 250)
    # The machine counts 742; the operator sorts out 12 as S03 and completes: 730 good.
    events = count_up(wc, 742, 6000)
    assert events_of_list(events) == []
    ok(wc, ReportScrap(Decimal(12), "S03", OPERATOR, at(9000)))


def events_of_list(events: list) -> list:
    return [e for e in events if e.type is EventType.CONFIRMATION_CREATED]


def test_the_confirmation_example() -> None:
    wc = example_wc()
    run_example(wc)
    out = act(wc, Action.COMPLETE, 9100)
    final = one(out, EventType.CONFIRMATION_CREATED)
    assert final.data["conf_index"] == 3
    assert final.data["final"] is True
    assert final.data["yield_qty"] == 230
    assert final.data["scrap_qty"] == 12
    assert final.data["scrap_by_reason"] == [{"code": "S03", "qty": 12}]
    c1, c2, c3 = confs(wc)
    assert [c.tally.good for c in (c1, c2, c3)] == [250, 250, 230]
    assert [c.final for c in (c1, c2, c3)] == [False, False, True]
    op = wc.operations[key(OP)]
    assert op.counted.good == 730
    assert non_reversed_sum(wc) == (Decimal(730), {"S03": Decimal(12)})
    # Periods follow each other without a gap.
    assert c1.period_start == at(0)
    assert c2.period_start == c1.period_end
    assert c3.period_start == c2.period_end == c2.period_end
    assert c3.period_end == at(9100)


def test_the_example_with_a_good_counter_that_never_saw_the_scrap() -> None:
    wc = example_wc(operator_scrap_reduces_good=False)
    count_up(wc, 730, 0)
    ok(wc, ReportScrap(Decimal(12), "S03", OPERATOR, at(9000)))
    act(wc, Action.COMPLETE, 9100)
    assert [(c.tally.good, c.tally.scrap) for c in confs(wc)] == [
        (250, {}),
        (250, {}),
        (230, {"S03": 12}),
    ]


def test_a_confirmation_carries_what_the_erp_needs() -> None:
    wc = example_wc()
    events = count_up(wc, 250, 0)
    (created,) = events_of_list(events)
    d = created.data
    assert (d["order_id"], d["operation"], d["split"], d["conf_index"]) == ("4711", "0020", 0, 1)
    assert d["unit"] == "PC"
    assert d["material"] == "MAT-1"
    assert d["period_start"] == "2024-03-04T10:00:00.000Z"
    assert d["posting_date"] == "2024-03-04"
    assert d["actor"] == created.actor
    assert set(d["activities"]) == {"setup_s", "machine_s", "labour_s"}  # type: ignore[arg-type]


def test_labour_time_is_machine_time_times_crew_size() -> None:
    wc = make_wc(spec(crew_size=Decimal(2), std_cycle_s=0.0), sources=(pulse_source("press1"),))
    act(wc, Action.START_PRODUCTION, 0)
    ok(wc, Pulses("press1", 5, at(100)))
    out = act(wc, Action.COMPLETE, 600)
    d = one(out, EventType.CONFIRMATION_CREATED).data
    assert d["activities"] == {"setup_s": 0.0, "machine_s": 600.0, "labour_s": 1200.0}


def test_a_cycle_time_far_from_standard_gives_a_variance_reason() -> None:
    wc = make_wc(spec(std_cycle_s=10.0), sources=(pulse_source("press1"),))
    act(wc, Action.START_PRODUCTION, 0)
    ok(wc, Pulses("press1", 5, at(25)))
    out = act(wc, Action.COMPLETE, 30)  # 30 s for 5 parts: 6 s a part, 40 % off the 10 s
    assert one(out, EventType.CONFIRMATION_CREATED).data["variance_reason"] == "CYCLE"
    wc = make_wc(spec(std_cycle_s=10.0), sources=(pulse_source("press1"),))
    act(wc, Action.START_PRODUCTION, 0)
    ok(wc, Pulses("press1", 5, at(25)))
    out = act(wc, Action.COMPLETE, 50)  # 10 s a part
    assert one(out, EventType.CONFIRMATION_CREATED).data["variance_reason"] is None


def test_idem_key_is_the_sha256_of_the_confirmation_identity() -> None:
    wc = example_wc()
    run_example(wc)
    act(wc, Action.COMPLETE, 9100)
    for c in confs(wc):
        assert c.idem_key == sha(f"{EDGE_ID}|4711|0020|0|conf|{c.counter}")
    assert len({c.idem_key for c in confs(wc)}) == 3


def test_idem_key_of_a_split_remainder_names_the_split_index() -> None:
    wc = example_wc()
    count_up(wc, 100, 0)
    act(wc, Action.SPLIT, 2000)
    act(wc, Action.START_PRODUCTION, 2100, op="4711/0020/1")
    count_up_op = wc.operations[key("4711/0020/1")]
    ok(wc, Pulses("press1", 5, at(2200)))
    assert count_up_op.counted.good == 5
    out = act(wc, Action.COMPLETE, 2300, op="4711/0020/1")
    created = one(out, EventType.CONFIRMATION_CREATED)
    assert created.data["idem_key"] == sha(f"{EDGE_ID}|4711|0020|1|conf|1")


def test_reversal_of_2_counts_its_quantities_toward_the_next_confirmation() -> None:
    wc = example_wc()
    run_example(wc)
    out = ok(wc, ReverseConfirmation(OP, 2, SUPERVISOR, at(9050)))
    reversal = one(out, EventType.CONFIRMATION_REVERSED)
    assert reversal.data["idem_key"] == sha(f"{EDGE_ID}|4711|0020|0|rev|2")
    assert reversal.data["reverses_idem_key"] == sha(f"{EDGE_ID}|4711|0020|0|conf|2")
    assert reversal.data["yield_qty"] == 250
    assert reversal.actor == SUPERVISOR
    out = act(wc, Action.COMPLETE, 9100)
    final = one(out, EventType.CONFIRMATION_CREATED)
    assert final.data["conf_index"] == 3
    assert final.data["yield_qty"] == 480
    # The sum rule: non-reversed confirmations add up to what was counted.
    assert non_reversed_sum(wc) == (Decimal(730), {"S03": Decimal(12)})


def test_a_reversal_is_for_a_supervisor_and_only_once() -> None:
    wc = example_wc()
    count_up(wc, 250, 0)
    rej = rejected(wc, ReverseConfirmation(OP, 1, OPERATOR, at(5000)))
    assert rej.code is RejectionCode.SUPERVISOR_ONLY
    ok(wc, ReverseConfirmation(OP, 1, SUPERVISOR, at(5000)))
    rej = rejected(wc, ReverseConfirmation(OP, 1, SUPERVISOR, at(5001)))
    assert rej.code is RejectionCode.CONFIRMATION_STATE
    rej = rejected(wc, ReverseConfirmation(OP, 9, SUPERVISOR, at(5002)))
    assert (rej.code, rej.field, rej.value) == (RejectionCode.UNKNOWN_CONFIRMATION, "counter", 9)


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (ResultStatus.POSTED, ConfirmationStatus.POSTED),
        (ResultStatus.DUPLICATE, ConfirmationStatus.POSTED),
        (ResultStatus.REJECTED, ConfirmationStatus.REJECTED),
        (ResultStatus.RETRYING, ConfirmationStatus.AWAITING_RESULT),
    ],
)
def test_relay_results(status: ResultStatus, expected: ConfirmationStatus) -> None:
    wc = example_wc()
    count_up(wc, 250, 0)
    (c1,) = confs(wc)
    assert c1.status is ConfirmationStatus.AWAITING_RESULT
    out = ok(wc, ConfirmationResult(c1.idem_key, status, at(5000), "msg", "ERP-1"))
    result = one(out, EventType.CONFIRMATION_RESULT)
    assert result.data["status"] == status.value
    assert c1.status is expected


@pytest.mark.parametrize("late", [ResultStatus.REJECTED, ResultStatus.RETRYING])
@pytest.mark.parametrize("first", [ResultStatus.POSTED, ResultStatus.DUPLICATE])
def test_a_late_verdict_never_undoes_a_posting(first: ResultStatus, late: ResultStatus) -> None:
    # posted is final: a late "rejected" would invite a resend that posts the same quantities
    # a second time; a late "retrying" would leave it awaiting a result that never comes.
    wc = example_wc()
    count_up(wc, 250, 0)
    (c1,) = confs(wc)
    ok(wc, ConfirmationResult(c1.idem_key, first, at(5000), None, "ERP-1"))
    out = ok(wc, ConfirmationResult(c1.idem_key, late, at(5100), "mapping says no"))
    conflict = one(out, EventType.VERDICT_CONFLICT)
    assert conflict.data["status"] == "posted"
    assert conflict.data["verdict"] == late.value
    assert events_of(out, EventType.CONFIRMATION_RESULT) == []  # nothing settles or changes
    assert c1.status is ConfirmationStatus.POSTED
    assert (c1.erp_ref, c1.erp_message) == ("ERP-1", None)
    assert c1.verdict_conflicts == 1
    assert c1.last_conflict == f"{late.value} after posted: mapping says no"
    rej = rejected(wc, ResendConfirmation(OP, 1, SUPERVISOR, at(5200)))
    assert rej.code is RejectionCode.CONFIRMATION_STATE


def test_the_same_posting_again_changes_nothing() -> None:
    wc = example_wc()
    count_up(wc, 250, 0)
    (c1,) = confs(wc)
    ok(wc, ConfirmationResult(c1.idem_key, ResultStatus.POSTED, at(5000), None, "ERP-1"))
    out = ok(wc, ConfirmationResult(c1.idem_key, ResultStatus.DUPLICATE, at(5100)))
    assert out.events == ()
    assert not out.changed
    assert (c1.status, c1.verdict_conflicts) == (ConfirmationStatus.POSTED, 0)


def test_retrying_after_rejected_is_a_conflict_and_a_later_posting_still_counts() -> None:
    wc = example_wc()
    count_up(wc, 250, 0)
    (c1,) = confs(wc)
    ok(wc, ConfirmationResult(c1.idem_key, ResultStatus.REJECTED, at(5000), "locked"))
    out = ok(wc, ConfirmationResult(c1.idem_key, ResultStatus.RETRYING, at(5100)))
    one(out, EventType.VERDICT_CONFLICT)
    assert c1.status is ConfirmationStatus.REJECTED
    out = ok(wc, ConfirmationResult(c1.idem_key, ResultStatus.POSTED, at(5200), None, "ERP-9"))
    one(out, EventType.CONFIRMATION_RESULT)
    assert c1.status is ConfirmationStatus.POSTED


def test_a_reversal_verdict_only_moves_forward_too() -> None:
    wc = example_wc()
    count_up(wc, 250, 0)
    ok(wc, ReverseConfirmation(OP, 1, SUPERVISOR, at(5000)))
    (c1,) = confs(wc)
    assert c1.reversal_idem_key is not None
    ok(wc, ConfirmationResult(c1.reversal_idem_key, ResultStatus.POSTED, at(5100)))
    out = ok(wc, ConfirmationResult(c1.reversal_idem_key, ResultStatus.REJECTED, at(5200), "x"))
    assert one(out, EventType.VERDICT_CONFLICT).data["reversal"] is True
    assert c1.reversal_status is ConfirmationStatus.POSTED


def test_a_rejected_confirmation_keeps_the_erp_message_and_is_resent_with_a_retry_key() -> None:
    wc = example_wc()
    count_up(wc, 250, 0)
    (c1,) = confs(wc)
    old_key = c1.idem_key
    ok(wc, ConfirmationResult(old_key, ResultStatus.REJECTED, at(5000), "period closed"))
    assert c1.status is ConfirmationStatus.REJECTED
    assert c1.erp_message == "period closed"
    rej = rejected(wc, ResendConfirmation(OP, 1, OPERATOR, at(5100)))
    assert rej.code is RejectionCode.SUPERVISOR_ONLY
    out = ok(wc, ResendConfirmation(OP, 1, SUPERVISOR, at(5100), posting_date="2024-03-05"))
    resent = one(out, EventType.CONFIRMATION_RESENT)
    assert c1.counter == 1
    assert c1.idem_key == sha(f"{EDGE_ID}|4711|0020|0|conf|1|retry|1")
    assert resent.data["idem_key"] == c1.idem_key
    assert resent.data["posting_date"] == "2024-03-05"
    assert c1.status is ConfirmationStatus.AWAITING_RESULT
    # A late answer for the superseded key changes nothing.
    rej = rejected(wc, ConfirmationResult(old_key, ResultStatus.POSTED, at(5200)))
    assert rej.field == "idem_key"
    ok(wc, ConfirmationResult(c1.idem_key, ResultStatus.REJECTED, at(5300), "again"))
    ok(wc, ResendConfirmation(OP, 1, SUPERVISOR, at(5400)))
    assert c1.idem_key == sha(f"{EDGE_ID}|4711|0020|0|conf|1|retry|2")
    ok(wc, ConfirmationResult(c1.idem_key, ResultStatus.POSTED, at(5500)))
    assert c1.status is ConfirmationStatus.POSTED


def test_only_a_rejected_confirmation_can_be_resent() -> None:
    wc = example_wc()
    count_up(wc, 250, 0)
    rej = rejected(wc, ResendConfirmation(OP, 1, SUPERVISOR, at(5100)))
    assert rej.code is RejectionCode.CONFIRMATION_STATE


def test_a_rejected_confirmation_may_be_reversed_instead() -> None:
    wc = example_wc()
    count_up(wc, 250, 0)
    (c1,) = confs(wc)
    ok(wc, ConfirmationResult(c1.idem_key, ResultStatus.REJECTED, at(5000), "bad"))
    out = ok(wc, ReverseConfirmation(OP, 1, SUPERVISOR, at(5100)))
    rev = one(out, EventType.CONFIRMATION_REVERSED)
    ok(wc, ConfirmationResult(str(rev.data["idem_key"]), ResultStatus.POSTED, at(5200)))
    assert c1.reversal_status is ConfirmationStatus.POSTED
    assert wc.operations[key(OP)].pending.good == 250


def test_a_result_for_an_unknown_key_is_rejected() -> None:
    wc = example_wc()
    rej = rejected(wc, ConfirmationResult("f" * 64, ResultStatus.POSTED, at(10)))
    assert (rej.field, rej.value) == ("idem_key", "f" * 64)


def test_confirmation_on_request_and_nothing_to_confirm() -> None:
    wc = example_wc()
    ok(wc, Pulses("press1", 7, at(10)))
    out = ok(wc, RequestConfirmation(OPERATOR, at(20)))
    assert one(out, EventType.CONFIRMATION_CREATED).data["yield_qty"] == 7
    act(wc, Action.INTERRUPT, 30)
    act(wc, Action.COMPLETE, 40)
    rej = rejected(wc, RequestConfirmation(OPERATOR, at(50), OP))
    assert rej.code is RejectionCode.NOTHING_TO_CONFIRM


# ---------------------------------------------------------------- posting date by shift

BERLIN_SHIFTS = (
    Shift("early", 6 * 60, 480),
    Shift("late", 14 * 60, 480),
    Shift("night", 22 * 60, 480),
)
H = 3600


@pytest.mark.parametrize(
    ("seconds", "posting_date", "shift"),
    [
        # 2024-03-05 02:00 in Berlin (01:00 UTC) ends in the night shift that began on the 4th.
        (15 * H, "2024-03-04", "2024-03-04/night"),
        # 2024-03-04 23:30 Berlin (22:30 UTC): the same night shift, same date.
        (12.5 * H, "2024-03-04", "2024-03-04/night"),
        # 2024-03-05 06:30 Berlin (05:30 UTC): already the early shift of the 5th.
        (19.5 * H, "2024-03-05", "2024-03-05/early"),
        # 2024-03-04 21:30 Berlin (20:30 UTC): the late shift.
        (10.5 * H, "2024-03-04", "2024-03-04/late"),
    ],
)
def test_posting_date_is_the_date_of_the_shift_the_period_ends_in(
    seconds: float, posting_date: str, shift: str
) -> None:
    wc = make_wc(
        spec(std_cycle_s=0.0),
        sources=(pulse_source("press1"),),
        timezone="Europe/Berlin",
        shifts=BERLIN_SHIFTS,
    )
    act(wc, Action.START_PRODUCTION, 0)
    ok(wc, Pulses("press1", 3, at(seconds - 60)))
    out = act(wc, Action.COMPLETE, seconds)
    d = one(out, EventType.CONFIRMATION_CREATED).data
    assert (d["posting_date"], d["shift"]) == (posting_date, shift)


def test_confirmations_at_shift_end_post_on_the_ending_shift() -> None:
    from edge.domain.inputs import Tick
    from edge.domain.rules import ConfirmationPolicy

    wc = make_wc(
        spec(std_cycle_s=0.0),
        sources=(pulse_source("press1"),),
        timezone="Europe/Berlin",
        shifts=BERLIN_SHIFTS,
        policy=ConfirmationPolicy(at_shift_end=True),
    )
    act(wc, Action.START_PRODUCTION, 0)
    ok(wc, Tick(at(60)))  # 11:01 Berlin: the early shift
    ok(wc, Tick(at(11 * H)))  # 22:00 Berlin: the night shift begins, nothing pending
    assert wc.header.shift_id == "2024-03-04/night"
    ok(wc, Pulses("press1", 3, at(12 * H)))  # 23:00 Berlin
    ok(wc, Pulses("press1", 4, at(16 * H)))  # 03:00 Berlin on the 5th
    out = ok(wc, Tick(at(20 * H)))  # 07:00 Berlin on the 5th: the night shift has ended
    created = events_of(out, EventType.CONFIRMATION_CREATED)
    assert len(created) == 1
    assert created[0].data["posting_date"] == "2024-03-04"
    assert created[0].data["shift"] == "2024-03-04/night"
    assert created[0].data["yield_qty"] == 7
    assert wc.header.shift_id == "2024-03-05/early"


def test_central_master_data_brings_its_own_shifts_and_confirmation_policy() -> None:
    """Central may plan shifts and the partial policy; they replace the configured ones."""
    from edge.domain.inputs import Action, MasterDataReceived, Pulses
    from edge.domain.rules import ConfirmationPolicy, MasterData, Shift

    from .builders import MASTER, act, at, make_wc, ok, pulse_source, spec

    wc = make_wc(spec(), sources=(pulse_source("press1"),))
    md = MasterData(
        version=2,
        stop_reasons=MASTER.stop_reasons,
        scrap_reasons=MASTER.scrap_reasons,
        shifts=(Shift("late", 9 * 60, 12 * 60),),
        policy=ConfirmationPolicy(every_good=Decimal(5)),
    )
    ok(wc, MasterDataReceived(md, at(0)))
    act(wc, Action.START_PRODUCTION, 1)
    ok(wc, Pulses("press1", 5, at(30)))
    conf = wc.confirmations["4711/0020#1"]
    assert conf.tally.good == 5
    assert conf.shift == "2024-03-04/late"


# -- domain.md §10.5 rule 2: a rejected confirmation blocks later ones of the same operation -----


def rejected_first() -> WorkCenter:
    """250 confirmed by policy, then rejected by the ERP ("period closed")."""
    wc = example_wc()
    count_up(wc, 250, 0)
    (c1,) = confs(wc)
    ok(wc, ConfirmationResult(c1.idem_key, ResultStatus.REJECTED, at(3000), "period closed"))
    return wc


def test_policy_confirmations_wait_while_one_is_rejected_and_nothing_is_lost() -> None:
    wc = rejected_first()
    count_up(wc, 600, 3000)  # two more "every 250" points pass
    assert len(confs(wc)) == 1
    assert wc.operations[key(OP)].pending.good == 350
    ok(wc, ResendConfirmation(OP, 1, SUPERVISOR, at(9000), posting_date="2024-03-05"))
    count_up(wc, 610, 9000)  # the next policy point takes everything pending
    c1, c2 = confs(wc)
    assert c2.tally.good == 360
    assert c1.tally.good + c2.tally.good == wc.operations[key(OP)].counted.good


def test_an_operator_request_is_refused_with_the_erp_message() -> None:
    wc = rejected_first()
    count_up(wc, 300, 3000)
    rej = rejected(wc, RequestConfirmation(OPERATOR, at(4000)))
    assert rej.code is RejectionCode.CONFIRMATION_BLOCKED
    assert "period closed" in rej.message
    assert "4711/0020#1" in rej.message


def test_completing_withholds_the_final_confirmation_until_the_rejected_one_is_resent() -> None:
    wc = rejected_first()
    count_up(wc, 400, 3000)
    out = act(wc, Action.COMPLETE, 5000)
    withheld = one(out, EventType.FINAL_CONFIRMATION_WITHHELD)
    assert withheld.data == {"blocked_by": "4711/0020#1", "erp_message": "period closed"}
    op = wc.operations[key(OP)]
    assert op.status.finished
    assert op.final_withheld
    assert len(confs(wc)) == 1
    out = ok(wc, ResendConfirmation(OP, 1, SUPERVISOR, at(6000), posting_date="2024-03-05"))
    final = one(out, EventType.CONFIRMATION_CREATED)
    assert final.data["kind"] == "final"
    assert final.data["yield_qty"] == 150
    assert not op.final_withheld


def test_reversing_the_rejected_one_also_releases_the_final_confirmation() -> None:
    wc = rejected_first()
    count_up(wc, 400, 3000)
    act(wc, Action.COMPLETE, 5000)
    out = ok(wc, ReverseConfirmation(OP, 1, SUPERVISOR, at(6000)))
    final = one(out, EventType.CONFIRMATION_CREATED)
    assert final.data["yield_qty"] == 400  # the reversed 250 are pending again
    assert final.data["kind"] == "final"


def test_a_late_posted_for_the_rejected_one_also_releases_the_final_confirmation() -> None:
    """The relay retried on its side and the ERP took it after all: nothing is blocked any more."""
    wc = rejected_first()
    count_up(wc, 400, 3000)
    act(wc, Action.COMPLETE, 5000)
    (c1,) = confs(wc)
    out = ok(wc, ConfirmationResult(c1.idem_key, ResultStatus.DUPLICATE, at(6000)))
    final = one(out, EventType.CONFIRMATION_CREATED)
    assert final.data["kind"] == "final"
    assert final.data["yield_qty"] == 150
    assert not wc.operations[key(OP)].final_withheld


def test_a_wall_clock_stepped_back_never_gives_a_period_that_ends_before_it_starts() -> None:
    """NTP steps a clock that ran an hour ahead back within a confirmation's period: the
    period ends at the corrected time and is as long as the monotonic clock says; under
    rules of revision 0 (journals of older versions) it stays as those versions made it."""

    def ahead(seconds: float) -> Instant:
        i = at(seconds)
        return Instant(i.wall_ms + 3_600_000, i.mono_ms)

    for revision, consistent in ((CURRENT_REVISION, True), (0, False)):
        wc = make_wc(spec(), sources=(pulse_source("press1"),), revision=revision)
        ok(wc, Transition(Action.START_PRODUCTION, "4711/0020", OPERATOR, ahead(0)))
        ok(wc, Pulses("press1", 5, ahead(100)))
        ok(wc, Pulses("press1", 5, at(200)))  # the clock is right again
        out = ok(wc, RequestConfirmation(OPERATOR, at(300), "4711/0020"))
        conf = one(out, EventType.CONFIRMATION_CREATED)
        start, end = conf.data["period_start"], conf.data["period_end"]
        assert end == at(300).iso()
        if consistent:
            assert start == at(0).iso()  # its end less the 300 s it lasted
        else:
            assert start == ahead(0).iso()  # after its end, as older versions made it
