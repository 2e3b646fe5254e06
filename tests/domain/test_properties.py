"""Property tests: counting never loses or doubles a part; random floor activity keeps the rules.

(a) A machine makes a known number of parts per step; the test derives the readings its absolute
    counter would show (resets, 16/32-bit wraps, link gaps, server and gateway restarts) at a pace
    the standard cycle time allows. Every plausible step must be counted exactly. A counter jump
    beyond the plausible rate must produce a discontinuity and count nothing of that step, so the
    count stays exact apart from the parts of the jump steps, which a supervisor assigns later.

    Two readings an absolute counter cannot tell apart are left out on purpose: a reset to a value
    at or above the last reading (it looks like normal counting) and a reset from the top quarter
    of the range (it looks like a wrap).

(b) Random operator, machine and central activity never raises, never leaves an undefined state,
    and keeps the sum rule after every single step.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.domain.core import WorkCenter
from edge.domain.events import EventType, Outcome
from edge.domain.inputs import (
    AcknowledgeOverDelivery,
    Action,
    AssignUnassigned,
    ConfirmationResult,
    CounterReading,
    DeclareSetupGood,
    DispatchList,
    Input,
    MachineState,
    MachineStateChanged,
    Pulses,
    ReportScrap,
    RequestConfirmation,
    ResendConfirmation,
    ResultStatus,
    ReverseConfirmation,
    SetStopReason,
    SourceRestarted,
    Tick,
    Transition,
)
from edge.domain.model import OperationStatus, Tally
from edge.domain.rules import ConfirmationPolicy, CountKind, CountSource

from .builders import at, make_wc, ok, pulse_source, snapshot, spec

SETTINGS = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def restored(wc: WorkCenter) -> WorkCenter:
    """What the engine does after a gateway restart: a new instance from the stored rows."""
    return WorkCenter.restore(
        copy.deepcopy(wc.header),
        copy.deepcopy(list(wc.operations.values())),
        copy.deepcopy(list(wc.counters.values())),
        copy.deepcopy(list(wc.stops.values())),
        copy.deepcopy(list(wc.confirmations.values())),
        copy.deepcopy(list(wc.unassigned.values())),
        copy.deepcopy(list(wc.shift_book.shifts.values())),
    )


# ---------------------------------------------------------------- (a) counting

STEP_KINDS = ("run", "run", "run", "gap", "reset", "server_restart", "gateway_restart", "jump")


@st.composite
def counter_story(draw: st.DrawFn) -> tuple[int, float, int, list[tuple[str, int, float, int]]]:
    bits = draw(st.sampled_from([16, 32]))
    cycle = draw(st.sampled_from([1.0, 2.0, 5.0, 10.0]))
    top = 1 << bits
    start = draw(st.one_of(st.integers(0, 5000), st.integers(top - 3000, top - 1)))
    steps = []
    for _ in range(draw(st.integers(1, 30))):
        kind = draw(st.sampled_from(STEP_KINDS))
        dt = draw(st.integers(120, 3600) if kind == "gap" else st.integers(1, 120))
        share = draw(st.floats(0, 1))  # of the most the machine could make in dt
        extra = draw(st.integers(0, 100_000))
        steps.append((kind, dt, share, extra))
    return bits, cycle, start, steps


@given(counter_story())
@SETTINGS
def test_counting_never_loses_or_doubles_a_part(
    story: tuple[int, float, int, list[tuple[str, int, float, int]]],
) -> None:
    bits, cycle, start, steps = story
    top = 1 << bits
    source = CountSource("plc", CountKind.GOOD, bits=bits)
    wc = make_wc(spec(target=10**9, std_cycle_s=cycle), sources=(source,))
    ok(wc, Transition(Action.START_PRODUCTION, "4711/0020", "operator:1", at(-1)))
    rules = wc.rules
    t = 0.0
    value = start
    made = lost = jumps = 0
    gaps: list[tuple[object, object]] = []

    def read(v: int, seconds: float) -> None:
        out = ok(wc, CounterReading("plc", v, at(seconds)))
        gaps.extend(
            (e.data["previous"], e.data["value"])
            for e in out.events
            if e.type is EventType.COUNTER_DISCONTINUITY
        )

    read(value, t)  # the baseline
    for kind, dt, share, extra in steps:
        most = math.floor(dt / cycle)  # parts the machine can make in dt at its standard cycle
        n = math.floor(most * share)
        if kind == "gateway_restart":
            wc = restored(wc)
            kind = "run"
        if kind == "reset" and not (n < value < top - top // 4):
            kind = "run"  # a reset the counter could not show (see the module docstring)
        if kind == "jump":
            limit = rules.plausibility_factor / cycle * (dt + rules.plausibility_grace_s)
            jump = math.ceil(limit) + 1 + extra
            if value + n + jump >= top:
                kind = "run"
            else:
                value += n + jump
                lost += n
                jumps += 1
        if kind in ("run", "gap"):
            value = (value + n) % top
        elif kind == "reset":
            value = n
        elif kind == "server_restart":
            ok(wc, SourceRestarted("plc", at(t + dt / 2)))
            n = math.floor(math.floor(dt / 2 / cycle) * share)  # made since the restart
            value = n
        made += n
        t += dt
        read(value, t)

    counted = wc.operations[next(iter(wc.operations))].counted.good
    assert counted == made - lost
    assert len(gaps) == jumps
    assert counted <= made
    if jumps == 0:
        assert counted == made


# ---------------------------------------------------------------- (b) random floor activity

OPS = ("4711/0020", "4712/0010", "4713/0030")
ACTORS = ("operator:17", "supervisor:anna", "central", "button:b1", "machine:plc")
SCRAP_CODES = ("S01", "S03", "SETUP", "NOPE")
STOP_CODES = ("M01", "M02", "BRK", "NOPE")


def specs(version: int) -> tuple:
    """The dispatch list: version 2+ drops or changes operations to stir up conflicts."""
    a = spec("4711", "0020", target=60, sequence=1, under_tolerance_pct=Decimal(10))
    b = spec("4712", "0010", target=40, sequence=2, over_tolerance_pct=Decimal(5), std_cycle_s=2.0)
    c = spec("4713", "0030", target=30, sequence=3, parts_per_signal=Decimal(2), std_cycle_s=0.0)
    if version % 3 == 2:
        return (b, spec("4713", "0030", target=45, sequence=1, parts_per_signal=Decimal(2)))
    if version % 3 == 0:
        return (a, c)
    return (a, b, c)


def weighted(*pairs: tuple[int, st.SearchStrategy[tuple]]) -> st.SearchStrategy[tuple]:
    """One of the strategies, each as often as its weight (so lifecycle and counting dominate)."""
    choices = [i for i, (weight, _) in enumerate(pairs) for _ in range(weight)]
    return st.sampled_from(choices).flatmap(lambda i: pairs[i][1])


LIKELY_ACTIONS = [Action.START_PRODUCTION, Action.START_SETUP, Action.COMPLETE, Action.INTERRUPT]

step = st.tuples(
    st.integers(0, 400),  # seconds that pass before the input
    weighted(
        (
            8,
            st.tuples(
                st.just("transition"),
                st.one_of(st.sampled_from(LIKELY_ACTIONS), st.sampled_from(list(Action))),
                st.integers(0, 2),
                st.sampled_from([0, 0, 0, 1, 2, 3, 4]),
                st.sampled_from([None, None, Decimal(5), Decimal(-1)]),
                st.sampled_from([None, "MATERIAL"]),
            ),
        ),
        (
            4,
            st.tuples(
                st.just("pulses"), st.sampled_from(["good", "good", "bad"]), st.integers(0, 12)
            ),
        ),
        (3, st.tuples(st.just("reading"), st.integers(0, 30), st.booleans())),
        (2, st.tuples(st.just("tick"))),
        (
            2,
            st.tuples(
                st.just("scrap"),
                st.integers(-1, 6),
                st.integers(0, 3),
                st.integers(-1, 2),
                st.booleans(),
            ),
        ),
        (2, st.tuples(st.just("request"), st.integers(-1, 2), st.integers(0, 1))),
        (3, st.tuples(st.just("result"), st.integers(0, 20), st.sampled_from(list(ResultStatus)))),
        (2, st.tuples(st.just("reverse"), st.integers(0, 2), st.integers(1, 4))),
        (2, st.tuples(st.just("resend"), st.integers(0, 2), st.integers(1, 4))),
        (1, st.tuples(st.just("assign"), st.integers(0, 3), st.integers(0, 2))),
        (1, st.tuples(st.just("ack"), st.integers(-1, 2))),
        (
            1,
            st.tuples(
                st.just("state"),
                st.sampled_from(list(MachineState)),
                st.sampled_from([None, "E42", "E99"]),
            ),
        ),
        (1, st.tuples(st.just("reason"), st.integers(0, 3), st.integers(0, 3), st.integers(0, 1))),
        (1, st.tuples(st.just("setup_good"), st.integers(1, 4))),
        (1, st.tuples(st.just("restart"))),
        (1, st.tuples(st.just("dispatch"))),
    ),
)


@dataclass
class Floor:
    """The test's side of the work center: the instance, time, the counter and the history."""

    wc: WorkCenter
    seconds: float = 0.0
    counter: int = 1000
    version: int = 1
    idem_keys: list[str] = field(default_factory=list)
    # operations that were reversed or got parts assigned after they completed
    touched_after_completion: set[str] = field(default_factory=set)


def to_input(floor: Floor, action: tuple) -> Input:
    wc = floor.wc
    now = at(floor.seconds)
    kind = action[0]
    if kind == "transition":
        _, what, op, actor, qty, variance = action
        return Transition(what, OPS[op], ACTORS[actor], now, qty, variance)
    if kind == "reading":
        _, delta, reset = action
        floor.counter = delta if reset else (floor.counter + delta) % 65536
        return CounterReading("plc", floor.counter, now)
    if kind == "pulses":
        return Pulses(f"gpio_{action[1]}", action[2], now)
    if kind == "restart":
        floor.counter = 0
        return SourceRestarted("plc", now)
    if kind == "scrap":
        _, qty, reason, op, rework = action
        ref = OPS[op] if op >= 0 else ""
        return ReportScrap(Decimal(qty), SCRAP_CODES[reason], "operator:17", now, ref, rework)
    if kind == "setup_good":
        return DeclareSetupGood(Decimal(action[1]), "operator:17", now)
    if kind == "tick":
        return Tick(now)
    if kind == "state":
        return MachineStateChanged("plc", action[1], now, action[2])
    if kind == "reason":
        _, code, which, actor = action
        stops = list(wc.stops)
        stop_id = stops[which % len(stops)] if stops and which else ""
        return SetStopReason(STOP_CODES[code], ACTORS[actor], now, stop_id)
    if kind == "reverse":
        return _existing(wc, ReverseConfirmation, action, now)
    if kind == "request":
        _, op, actor = action
        return RequestConfirmation(ACTORS[actor], now, OPS[op] if op >= 0 else "")
    if kind == "result":
        keys = (
            [c.idem_key for c in wc.confirmations.values()]
            + [c.reversal_idem_key for c in wc.confirmations.values() if c.reversal_idem_key]
            + floor.idem_keys
        )
        key = keys[action[1] % len(keys)] if keys else "0" * 64
        return ConfirmationResult(key, action[2], now, "from the relay")
    if kind == "resend":
        return _existing(wc, ResendConfirmation, action, now)
    if kind == "assign":
        ids = list(wc.unassigned)
        uid = ids[action[1] % len(ids)] if ids else "U000001"
        return AssignUnassigned(uid, OPS[action[2]], "supervisor:anna", now)
    if kind == "ack":
        return AcknowledgeOverDelivery("operator:17", now, OPS[action[1]] if action[1] >= 0 else "")
    assert kind == "dispatch"
    floor.version += 1
    return DispatchList(floor.version, specs(floor.version), now)


def _existing(wc: WorkCenter, cls: type, action: tuple, now: object) -> Input:
    """A reversal or resend, of an existing confirmation when there is one."""
    confs = sorted(wc.confirmations.values(), key=lambda c: (c.key, c.counter))
    if confs:
        conf = confs[(action[1] * 7 + action[2]) % len(confs)]
        return cls(str(conf.key), conf.counter, "supervisor:anna", now)  # type: ignore[no-any-return]
    return cls(OPS[action[1]], action[2], "supervisor:anna", now)  # type: ignore[no-any-return]


def quantities(t: Tally) -> tuple[Decimal, dict[str, Decimal], dict[str, Decimal]]:
    return (
        t.good,
        {k: v for k, v in t.scrap.items() if v},
        {k: v for k, v in t.rework.items() if v},
    )


def check_invariants(floor: Floor, out: Outcome) -> None:
    wc = floor.wc
    for e in out.events:
        if e.type is EventType.CONFIRMATION_REVERSED and e.op is not None:
            op = wc.operations.get(_key(e.op))
            if op is not None and op.status is OperationStatus.COMPLETED:
                floor.touched_after_completion.add(e.op)
        if e.type is EventType.UNASSIGNED_ASSIGNED and e.op is not None:
            op = wc.operations.get(_key(e.op))
            if op is not None and op.status.finished:
                floor.touched_after_completion.add(e.op)
    statuses = set(OperationStatus)
    active = [op for op in wc.operations.values() if op.status.active]
    assert all(op.status in statuses for op in wc.operations.values())
    assert sorted(op.key for op in wc.active) == sorted(op.key for op in active)
    if not wc.rules.family_tool:
        assert len(active) <= 1
    for key, op in wc.operations.items():
        confirmed = Tally()
        for conf in wc.confirmations.values():
            if conf.key == key and not conf.reversed:
                confirmed.add(conf.tally)
        summed = confirmed.copy()
        summed.add(op.pending)
        assert quantities(summed) == quantities(op.counted), f"sum rule broken for {key}"
        assert quantities(confirmed) == quantities(op.confirmed)
        if op.final_withheld:  # rule 2: only while an earlier confirmation stands rejected
            assert wc.blocking_confirmation(op) is not None, f"{key} withheld for nothing"
        elif (
            op.status is OperationStatus.COMPLETED
            and str(key) not in floor.touched_after_completion
        ):
            assert quantities(confirmed) == quantities(op.counted), f"{key} completed with pending"
        for conf in wc.confirmations.values():
            if conf.key == key:
                assert conf.tally.setup_ms >= 0
                assert conf.tally.production_ms >= 0
                assert conf.tally.down_ms >= 0
                assert conf.tally.waiting_ms >= 0


def _key(text: str):  # type: ignore[no-untyped-def]
    from edge.domain.model import OperationKey

    return OperationKey.parse(text)


@given(
    family_tool=st.booleans(),
    auto_complete=st.booleans(),
    every_good=st.sampled_from([None, Decimal(7), Decimal(25)]),
    setup_good=st.booleans(),
    scrap_reduces_good=st.booleans(),
    steps=st.lists(step, min_size=20, max_size=60),
    restart_at=st.integers(0, 60),
)
@SETTINGS
def test_random_floor_activity_keeps_the_rules(
    family_tool: bool,
    auto_complete: bool,
    every_good: Decimal | None,
    setup_good: bool,
    scrap_reduces_good: bool,
    steps: list[tuple[int, tuple]],
    restart_at: int,
) -> None:
    wc = make_wc(
        *specs(1),
        sources=(
            CountSource("plc", CountKind.GOOD, bits=16),
            pulse_source("gpio_good"),
            pulse_source("gpio_bad", CountKind.SCRAP),
            CountSource("check", CountKind.GOOD, authoritative=False),
        ),
        family_tool=family_tool,
        auto_complete_at_target=auto_complete,
        policy=ConfirmationPolicy(every_good=every_good, every_minutes=30),
        setup_counts_as_good=setup_good,
        operator_scrap_reduces_good=scrap_reduces_good,
    )
    floor = Floor(wc)
    twin: WorkCenter | None = None  # restored from the stored rows mid-way: must behave the same
    for i, (dt, action) in enumerate(steps):
        if i == restart_at:
            twin = restored(floor.wc)
        floor.seconds += dt
        inp = to_input(floor, action)
        before = snapshot(floor.wc)
        out = floor.wc.apply(inp)
        if out.rejection is not None:
            assert out.events == ()
            assert snapshot(floor.wc) == before, f"rejected {inp} changed the state"
        check_invariants(floor, out)
        if twin is not None:
            twin_out = twin.apply(inp)
            assert twin_out == out
            assert snapshot(twin) == snapshot(floor.wc)
