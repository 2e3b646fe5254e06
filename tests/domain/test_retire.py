"""Finished operations leave memory (edge.domain.retire): when, with what, and what keeps them."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from edge.domain.core import WorkCenter
from edge.domain.events import EventType, RejectionCode
from edge.domain.inputs import (
    Action,
    AssignUnassigned,
    ConfirmationResult,
    CounterReading,
    MachineState,
    MachineStateChanged,
    RequestConfirmation,
    ResendConfirmation,
    ResultStatus,
    RetireFinished,
    ReverseConfirmation,
    SetStopReason,
    Tick,
    Transition,
)
from edge.domain.model import ConfirmationStatus, OperationStatus
from edge.domain.retire import MAX_PER_INPUT, answered

from .builders import (
    OPERATOR,
    SUPERVISOR,
    act,
    at,
    count_good,
    key,
    make_wc,
    ok,
    one,
    rejected,
    spec,
)

H = 3600
OP = "4711/0020"


def post_all(wc: WorkCenter, seconds: float, status: ResultStatus = ResultStatus.POSTED) -> None:
    for conf in list(wc.confirmations.values()):
        if conf.status is ConfirmationStatus.AWAITING_RESULT:
            ok(wc, ConfirmationResult(conf.idem_key, status, at(seconds), erp_ref="E1"))


def finished_op(wc: WorkCenter) -> None:
    """4711/0020 runs from 10:00, counts 20, stands still 5 min, completes at 10:30."""
    act(wc, Action.START_PRODUCTION, 0)
    count_good(wc, 10, 100)
    ok(wc, MachineStateChanged("press1", MachineState.DOWN, at(200)))
    ok(wc, MachineStateChanged("press1", MachineState.RUNNING, at(500)))
    count_good(wc, 10, 600)
    act(wc, Action.COMPLETE, 1800)


def test_a_finished_operation_leaves_memory_with_its_confirmations_and_stops() -> None:
    wc = make_wc(spec(), spec("4712"))
    finished_op(wc)
    post_all(wc, 1801)
    stop_ids = list(wc.stops)
    assert stop_ids
    idem = [c.idem_key for c in wc.confirmations.values()]
    # Not before the time in memory is over; then with its stops.
    assert wc.retire_candidates(at(1800 + 72 * H - 1), 72) == ([], [], [])
    assert wc.retire_candidates(at(1800 + 72 * H), 72) == ([OP], stop_ids, [])
    out = ok(wc, RetireFinished((OP,), 72, at(1800 + 72 * H)))
    ev = one(out, EventType.OPERATIONS_RETIRED)
    assert ev.data["ops"] == [OP]
    assert ev.data["stops"] == stop_ids
    assert ev.data["confirmations"] == 1
    assert key(OP) not in wc.operations
    assert key("4712/0020") in wc.operations  # dispatched: stays
    assert wc.confirmations == {}
    assert not any(k in wc.idem_index for k in idem)
    assert wc.stops == {}
    retired = wc.take_retired()
    assert set(retired) == {
        ("operation", OP),
        ("confirmation", f"{OP}#1"),
        *(("stop", s) for s in stop_ids),
    }
    assert ("operation", OP) not in wc.take_dirty()
    # Again: nothing left to take, nothing changes.
    out = wc.apply(RetireFinished((OP,), 72, at(1800 + 73 * H)))
    assert out.accepted
    assert not out.changed
    assert out.events == ()


def test_what_names_an_operation_that_left_memory_is_refused_naming_it() -> None:
    wc = make_wc(spec())
    finished_op(wc)
    post_all(wc, 1801)
    conf = wc.confirmations[f"{OP}#1"]
    stop_id = next(iter(wc.stops))
    ok(wc, RetireFinished((OP,), 24, at(1800 + 24 * H)))
    now = at(1800 + 25 * H)
    for inp, field in (
        (ReverseConfirmation(OP, 1, SUPERVISOR, now), "op"),
        (ResendConfirmation(OP, 1, SUPERVISOR, now), "op"),
        (Transition(Action.START_SETUP, OP, OPERATOR, now), "op"),
        (ConfirmationResult(conf.idem_key, ResultStatus.REJECTED, now, "late"), "idem_key"),
        (SetStopReason("M02", SUPERVISOR, now, stop_id), "stop_id"),
    ):
        rej = rejected(wc, inp)
        assert rej.field == field
        assert rej.value in (OP, conf.idem_key, stop_id)
        assert rej.code in (
            RejectionCode.UNKNOWN_OPERATION,
            RejectionCode.UNKNOWN_CONFIRMATION,
            RejectionCode.UNKNOWN_STOP,
        )


def _awaiting(wc: WorkCenter) -> None:
    pass  # the final confirmation's verdict never came


def _rejected(wc: WorkCenter) -> None:
    post_all(wc, 1801, ResultStatus.REJECTED)


def _retrying(wc: WorkCenter) -> None:
    post_all(wc, 1801, ResultStatus.RETRYING)


def _reversal_unanswered(wc: WorkCenter) -> None:
    post_all(wc, 1801)
    ok(wc, ReverseConfirmation(OP, 1, SUPERVISOR, at(1900)))


def _reversed_and_pending(wc: WorkCenter) -> None:
    post_all(wc, 1801)
    ok(wc, ReverseConfirmation(OP, 1, SUPERVISOR, at(1900)))
    rev = wc.confirmations[f"{OP}#1"].reversal_idem_key
    assert rev is not None
    ok(wc, ConfirmationResult(rev, ResultStatus.POSTED, at(1901)))  # quantities pending again


def _resent_unanswered(wc: WorkCenter) -> None:
    post_all(wc, 1801, ResultStatus.REJECTED)
    ok(wc, ResendConfirmation(OP, 1, SUPERVISOR, at(1900)))


@pytest.mark.parametrize(
    "story",
    [
        _awaiting,
        _rejected,
        _retrying,
        _reversal_unanswered,
        _reversed_and_pending,
        _resent_unanswered,
    ],
)
def test_an_operation_the_erp_or_a_supervisor_still_needs_stays_in_memory(story: object) -> None:
    wc = make_wc(spec())
    finished_op(wc)
    story(wc)  # type: ignore[operator]
    late = at(1800 + 1000 * H)
    assert wc.retire_candidates(late, 24)[0] == []
    out = wc.apply(RetireFinished((OP,), 24, late))  # named anyway: still not taken
    assert out.accepted
    assert out.events == ()
    assert key(OP) in wc.operations
    assert all(f"{OP}" in s.operations for s in wc.stops.values())


def test_a_rejected_confirmation_reversed_and_answered_lets_the_operation_go() -> None:
    wc = make_wc(spec())
    finished_op(wc)
    post_all(wc, 1801, ResultStatus.REJECTED)
    ok(wc, ReverseConfirmation(OP, 1, SUPERVISOR, at(1900)))
    conf = wc.confirmations[f"{OP}#1"]
    assert conf.reversal_idem_key is not None
    ok(wc, ConfirmationResult(conf.reversal_idem_key, ResultStatus.POSTED, at(1901)))
    # The reversal put the quantities back: they are pending, so it stays until confirmed.
    assert wc.retire_candidates(at(1800 + 100 * H), 24)[0] == []
    ok(wc, RequestConfirmation(SUPERVISOR, at(2000), OP))
    post_all(wc, 2001)
    assert answered(conf)
    assert wc.retire_candidates(at(1800 + 100 * H), 24)[0] == [OP]


def test_unfinished_operations_and_the_open_stop_never_leave() -> None:
    wc = make_wc(spec(), spec("4712"), spec("4713"))
    act(wc, Action.START_PRODUCTION, 0)
    count_good(wc, 10, 100)
    act(wc, Action.HOLD, 200)
    ok(wc, Transition(Action.START_PRODUCTION, "4712/0020", OPERATOR, at(300)))
    ok(wc, MachineStateChanged("press1", MachineState.DOWN, at(400)))
    late = at(1000 * H)
    assert wc.retire_candidates(late, 24) == ([], [], [])
    out = wc.apply(RetireFinished((OP, "4712/0020", "4713/0020"), 24, late))
    assert out.events == ()
    assert len(wc.operations) == 3
    assert wc.open_stop is not None


def test_a_stop_while_nothing_ran_leaves_by_its_age_and_one_of_an_operation_in_memory_stays() -> (
    None
):
    wc = make_wc(spec())
    ok(wc, MachineStateChanged("press1", MachineState.DOWN, at(0)))
    ok(wc, MachineStateChanged("press1", MachineState.RUNNING, at(600)))
    idle_stop = next(iter(wc.stops))
    act(wc, Action.START_PRODUCTION, 700)
    ok(wc, MachineStateChanged("press1", MachineState.DOWN, at(800)))
    ok(wc, MachineStateChanged("press1", MachineState.RUNNING, at(900)))
    op_stop = [s for s in wc.stops if s != idle_stop]
    assert op_stop
    assert wc.retire_candidates(at(600 + 24 * H), 24) == ([], [idle_stop], [])
    ok(wc, RetireFinished((), 24, at(600 + 24 * H)))
    assert list(wc.stops) == op_stop


def test_kept_h_and_the_names_are_checked() -> None:
    wc = make_wc(spec())
    for kept in (23.9, 8761.0, float("nan")):
        rej = rejected(wc, RetireFinished((), kept, at(0)))
        assert rej.field == "kept_h"
    rej = rejected(wc, RetireFinished(("nonsense",), 24, at(0)))
    assert rej.field == "ops[0]"
    assert rej.value == "nonsense"
    rej = rejected(wc, RetireFinished((OP,) * (MAX_PER_INPUT + 1), 24, at(0)))
    assert rej.field == "ops"


def test_beyond_max_kept_the_oldest_finished_operations_leave_before_their_time() -> None:
    """A fast line: twelve operations finished within an hour, ``max_kept`` 10. The two
    oldest leave at once (not 72 hours later); one whose confirmation the ERP has not answered
    stays whatever the count; their stops leave only by their own age."""
    refs = [f"{4800 + i}/0020" for i in range(12)]
    wc = make_wc(*(spec(r.split("/")[0]) for r in refs), family_tool=True)
    t = 0.0
    for ref in refs:
        act(wc, Action.START_PRODUCTION, t, op=ref)
        count_good(wc, 5, t + 100)
        act(wc, Action.COMPLETE, t + 200, op=ref)
        for conf in list(wc.confirmations.values()):
            # the ERP answers every confirmation but the first operation's
            if conf.status is ConfirmationStatus.AWAITING_RESULT and str(conf.key) != refs[0]:
                ok(wc, ConfirmationResult(conf.idem_key, ResultStatus.POSTED, at(t + 201)))
        t += 300
    now = at(t)
    assert wc.retire_candidates(now, 72) == ([], [], [])  # by time alone: nothing yet
    found = wc.retire_candidates(now, 72, max_kept=10)
    assert found.ops == [refs[1]]  # the oldest two are over the cap; the first is awaited
    assert found.stops == []
    out = ok(wc, RetireFinished(tuple(found.ops), 72, now, max_kept=10))
    assert one(out, EventType.OPERATIONS_RETIRED).data["max_kept"] == 10
    assert key(refs[0]) in wc.operations
    assert key(refs[1]) not in wc.operations
    assert len([op for op in wc.operations.values() if op.status.finished]) == 11
    # The same input without the cap takes nothing: it is the input's, journaled with it.
    assert not wc.apply(RetireFinished((refs[2],), 72, now)).changed
    post_all(wc, t + 1)  # the first one's answer: now it is the oldest over the cap
    assert wc.retire_candidates(at(t + 2), 72, max_kept=10).ops == [refs[0]]
    for bad in (9, 100_001):
        assert rejected(wc, RetireFinished((), 72, now, max_kept=bad)).field == "max_kept"


# ---------------------------------------------------------------------- property

OPS = ("4711/0020", "4712/0020", "4713/0020")
STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("act"), st.sampled_from(list(Action)), st.sampled_from(OPS)),
        st.tuples(
            st.just("act"),
            st.sampled_from([Action.START_PRODUCTION, Action.COMPLETE, Action.CANCEL]),
            st.sampled_from(OPS),
        ),
        st.tuples(st.just("answer"), st.sampled_from(list(ResultStatus)), st.booleans()),
        st.tuples(st.just("run"), st.sampled_from(OPS), st.integers(1, 5)),
        # The usual day, more often: run, the ERP posts, time passes, the engine asks.
        st.tuples(st.just("run"), st.sampled_from(OPS), st.integers(1, 5)),
        st.tuples(st.just("answer"), st.just(ResultStatus.POSTED), st.just(False)),
        st.tuples(st.just("wait"), st.integers(10, 60), st.just("")),
        st.tuples(st.just("retire"), st.just(24.0), st.just(True)),
        st.tuples(st.just("count"), st.integers(1, 5), st.just("")),
        st.tuples(st.just("state"), st.sampled_from(list(MachineState)), st.just("")),
        st.tuples(st.just("verdict"), st.sampled_from(list(ResultStatus)), st.integers(0, 9)),
        st.tuples(st.just("reverse"), st.sampled_from(OPS), st.integers(1, 3)),
        st.tuples(st.just("resend"), st.sampled_from(OPS), st.integers(1, 3)),
        st.tuples(st.just("confirm"), st.sampled_from(OPS), st.just("")),
        st.tuples(st.just("wait"), st.integers(1, 60), st.just("")),
        st.tuples(st.just("retire"), st.sampled_from((24.0, 30.0, 72.0)), st.booleans()),
    ),
    min_size=15,
    max_size=80,
)


def _settled(wc: WorkCenter, ref: str, now_s: float, kept_h: float) -> bool:
    op = wc.operations[key(ref)]
    if not op.status.finished or op.ended is None or op.pending.has_quantity():
        return False
    if (at(now_s).mono_ms - op.ended.mono_ms) < kept_h * H * 1000:
        return False
    confs = [c for c in wc.confirmations.values() if str(c.key) == ref]
    return all(
        c.status is ConfirmationStatus.POSTED
        if not c.reversed
        else c.status is not ConfirmationStatus.AWAITING_RESULT
        and c.reversal_status in (ConfirmationStatus.POSTED, ConfirmationStatus.REJECTED)
        for c in confs
    )


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(STEPS)
def test_nothing_unfinished_ever_leaves_memory(steps: list[tuple[object, object, object]]) -> None:
    wc = make_wc(*(spec(r.split("/")[0]) for r in OPS), family_tool=True)
    t = 1.0
    value = 0
    ok(wc, CounterReading("press1", 0, at(0)))
    for kind, a, b in steps:
        t += 1
        if kind == "act":
            wc.apply(Transition(a, b, SUPERVISOR, at(t)))  # type: ignore[arg-type]
        elif kind == "count":
            t += 60
            value += int(a)  # type: ignore[call-overload]
            wc.apply(CounterReading("press1", value, at(t)))
        elif kind == "state":
            wc.apply(MachineStateChanged("press1", a, at(t)))  # type: ignore[arg-type]
        elif kind == "verdict":
            confs = sorted(wc.confirmations.values(), key=lambda c: c.conf_id)
            if confs:
                conf = confs[int(b) % len(confs)]  # type: ignore[call-overload]
                idem = conf.reversal_idem_key if conf.reversed and int(b) % 2 else conf.idem_key  # type: ignore[call-overload]
                wc.apply(ConfirmationResult(idem or conf.idem_key, a, at(t)))  # type: ignore[arg-type]
        elif kind == "run":  # an operation runs, counts and completes
            wc.apply(Transition(Action.START_PRODUCTION, a, OPERATOR, at(t)))  # type: ignore[arg-type]
            t += 60
            value += int(b)  # type: ignore[call-overload]
            wc.apply(CounterReading("press1", value, at(t)))
            wc.apply(Transition(Action.COMPLETE, a, OPERATOR, at(t + 1)))  # type: ignore[arg-type]
        elif kind == "answer":  # the relay answers everything awaiting (or reversals only)
            for conf in list(wc.confirmations.values()):
                if conf.status is ConfirmationStatus.AWAITING_RESULT and not b:
                    wc.apply(ConfirmationResult(conf.idem_key, a, at(t)))  # type: ignore[arg-type]
                if (
                    conf.reversal_idem_key
                    and conf.reversal_status is ConfirmationStatus.AWAITING_RESULT
                ):
                    wc.apply(ConfirmationResult(conf.reversal_idem_key, a, at(t)))  # type: ignore[arg-type]
        elif kind == "reverse":
            wc.apply(ReverseConfirmation(a, b, SUPERVISOR, at(t)))  # type: ignore[arg-type]
        elif kind == "resend":
            wc.apply(ResendConfirmation(a, b, SUPERVISOR, at(t)))  # type: ignore[arg-type]
        elif kind == "confirm":
            wc.apply(RequestConfirmation(SUPERVISOR, at(t), a))  # type: ignore[arg-type]
        elif kind == "wait":
            t += int(a) * 2 * H  # type: ignore[call-overload]
        else:
            kept = float(a)  # type: ignore[arg-type]
            named = [r for r in OPS if key(r) in wc.operations]
            if b:  # what the engine would name
                named = wc.retire_candidates(at(t), kept)[0]
            allowed = {r for r in named if _settled(wc, r, t, kept)}
            open_stop = wc.header.open_stop
            before = set(wc.operations)
            statuses = {str(k): op.status for k, op in wc.operations.items()}
            out = wc.apply(RetireFinished(tuple(named), kept, at(t)))
            assert out.accepted
            left = {str(k) for k in before - set(wc.operations)}
            event(f"operations left memory: {min(len(left), 2)}")
            assert left <= allowed, (left, allowed, statuses)
            if b:
                assert left == allowed
            assert all(
                statuses[r] in (OperationStatus.COMPLETED, OperationStatus.CANCELLED) for r in left
            )
            assert open_stop is None or open_stop in wc.stops
            for stop in wc.take_retired().values():
                entity = stop[0]
                if hasattr(entity, "stop_id"):
                    assert entity.end is not None  # type: ignore[union-attr]
            # What is still in memory is whole: every confirmation's operation is there.
            assert all(c.key in wc.operations for c in wc.confirmations.values())
            assert all(wc.idem_index[c.idem_key][0] == c.conf_id for c in wc.confirmations.values())


def test_nothing_leaves_before_the_shift_change_is_booked() -> None:
    """After a restart days later, the first tick closes the shift and day that ended with
    the stops in memory; only then may they leave."""
    wc = make_wc(spec())
    ok(wc, Tick(at(0)))
    finished_op(wc)
    post_all(wc, 1801)
    later = at(1800 + 72 * H)
    assert wc.retire_candidates(later, 24) == ([], [], [])
    out = wc.apply(RetireFinished((OP,), 24, later))
    assert out.events == ()
    assert key(OP) in wc.operations
    ok(wc, Tick(later))
    assert wc.retire_candidates(later, 24)[0] == [OP]
    one(ok(wc, RetireFinished((OP,), 24, later)), EventType.OPERATIONS_RETIRED)
    assert wc.stops == {}


def test_assigned_unassigned_production_leaves_and_what_nobody_assigned_stays() -> None:
    wc = make_wc(spec(), spec("4712"))
    count_good(wc, 5, 100)  # nothing active: unassigned production
    act(wc, Action.START_PRODUCTION, 200)  # closes it
    act(wc, Action.HOLD, 300)
    count_good(wc, 5, 400)  # held: a second record
    act(wc, Action.RELEASE, 500)
    first, second = sorted(wc.unassigned)
    ok(wc, AssignUnassigned(first, "4712/0020", SUPERVISOR, at(600)))
    later = at(600 + 25 * H)
    assert wc.retire_candidates(later, 24).unassigned == [first]
    out = ok(wc, RetireFinished((), 24, later))
    assert one(out, EventType.OPERATIONS_RETIRED).data["unassigned"] == [first]
    assert list(wc.unassigned) == [second]
    assert ("unassigned", first) in wc.take_retired()
    rej = rejected(wc, AssignUnassigned(first, OP, SUPERVISOR, at(600 + 26 * H)))
    assert rej.field == "unassigned_id"
    assert rej.value == first
