"""Core fuzz: every input type with extreme values in every field, on a busy work center.

Whatever the values, the core never raises, a rejection changes nothing, and what an accepted
input leads to can be encoded for the journal and the uplink at once (a quantity that reaches
the encoder as ``1E+999999`` would freeze the event loop expanding it to a million digits).
A verdict never goes back from posted, whatever the relay sends and in which order.
"""

from __future__ import annotations

import dataclasses
import time
import typing
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.domain.clock import Instant
from edge.domain.core import WorkCenter
from edge.domain.inputs import (
    INPUT_TYPES,
    Action,
    ConfirmationResult,
    CounterReading,
    DispatchList,
    MachineState,
    MasterDataReceived,
    Pulses,
    ResultStatus,
    RulesApplied,
    Tick,
)
from edge.domain.model import ComponentSpec, ConfirmationStatus, OperationSpec
from edge.domain.rules import (
    ConfirmationPolicy,
    CountKind,
    CountSource,
    MasterData,
    ScrapReason,
    Shift,
    StopReason,
)
from edge.store import codec
from edge.sync.messages import event_body, messages_for

from .builders import OPERATOR, SUPERVISOR, act, at, make_wc, ok, pulse_source, snapshot, spec

SETTINGS = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

DECIMALS = st.one_of(
    st.sampled_from(
        [
            Decimal("1E+999999"),
            Decimal("-1E+999999"),
            Decimal("1E-400"),
            Decimal("NaN"),
            Decimal("sNaN"),
            Decimal("Infinity"),
            Decimal("-Infinity"),
            Decimal(0),
            Decimal("-0"),
            Decimal(-1),
            Decimal("0.0000001"),
            Decimal("999999999.999999"),
            Decimal(1_000_000_001),
            Decimal(10**30),
            Decimal(1),
            Decimal(5),
        ]
    ),
    st.decimals(allow_nan=True, allow_infinity=True),
)
INTS = st.one_of(
    st.sampled_from([0, -1, 1, 2**15, 2**16, 2**31, 2**32, 2**53, 2**63, -(2**63), 10**30]),
    st.integers(),
)
FLOATS = st.floats(allow_nan=True, allow_infinity=True)
TEXTS = st.one_of(
    st.sampled_from(["", " ", "x" * 10_000, "a/b", "\x00", "4711/0020", "M01", "S01", "plc"]),
    st.text(max_size=300),
)
ACTORS = st.one_of(
    st.sampled_from([OPERATOR, SUPERVISOR, "central", "machine:plc", "button:b", "x" * 500]),
    TEXTS,
)
NOW = at(10_000)


def _for(hint: Any, name: str) -> st.SearchStrategy[Any]:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return st.one_of(st.none(), *(_for(a, name) for a in args))
    if hint is Instant:
        return st.just(NOW)
    if hint is Decimal:
        return DECIMALS
    if hint is bool:
        return st.booleans()
    if hint is int:
        # Near the values that get past the first checks, and anything else.
        near = {"version": st.integers(2, 5), "value": st.integers(150, 400)}.get(name)
        return st.one_of(near, INTS) if near is not None else INTS
    if hint is float:
        return FLOATS
    if hint is str:
        if name == "actor":
            return ACTORS
        near = {
            "source": ["plc", "gpio"],
            "op": ["4711/0020", ""],
            "material": ["STEEL", "SCREW"],
            "batch": ["B1", "B2"],
        }.get(name)
        return st.one_of(st.sampled_from(near), TEXTS) if near else TEXTS
    if isinstance(hint, type) and issubclass(hint, Action | MachineState | ResultStatus):
        return st.sampled_from(list(hint))
    if hint is OperationSpec or (origin is tuple and typing.get_args(hint)[0] is OperationSpec):
        one = extreme_spec()
        return one if hint is OperationSpec else st.lists(one, max_size=3).map(tuple)
    if hint is MasterData:
        return extreme_master_data()
    if origin is tuple and typing.get_args(hint)[0] is ComponentSpec:
        return st.lists(extreme_component(), max_size=3).map(tuple)
    if origin is tuple and typing.get_args(hint)[0] is str:
        return st.lists(_for(str, name), max_size=3).map(tuple)
    raise AssertionError(f"no strategy for {hint!r} ({name})")


def extreme(cls: type) -> st.SearchStrategy[Any]:
    hints = typing.get_type_hints(cls)
    fields = {f.name: _for(hints[f.name], f.name) for f in dataclasses.fields(cls)}
    return st.builds(cls, **fields)


@st.composite
def extreme_spec(draw: st.DrawFn) -> OperationSpec:
    """Mostly sane operations with one or two extreme fields, so checks past the first run."""
    base = spec(
        draw(st.sampled_from(["4711", "4711", "4712", "9999", ""])),
        draw(st.sampled_from(["0020", "0020", "0010", "a/b"])),
    )
    hints = typing.get_type_hints(OperationSpec)
    names = [f.name for f in dataclasses.fields(base)]
    for name in draw(st.lists(st.sampled_from(names), max_size=2)):
        base = dataclasses.replace(base, **{name: draw(_for(hints[name], name))})
    return base


@st.composite
def extreme_component(draw: st.DrawFn) -> ComponentSpec:
    """A sane component (what ``material`` inputs name) with one or two extreme fields."""
    base = ComponentSpec(
        draw(st.sampled_from(["STEEL", "SCREW", ""])),
        Decimal("0.5"),
        backflush=draw(st.booleans()),
        batch_managed=draw(st.booleans()),
    )
    hints = typing.get_type_hints(ComponentSpec)
    names = [f.name for f in dataclasses.fields(base)]
    for name in draw(st.lists(st.sampled_from(names), max_size=2)):
        base = dataclasses.replace(base, **{name: draw(_for(hints[name], name))})
    return base


@st.composite
def extreme_master_data(draw: st.DrawFn) -> MasterData:
    reasons = draw(st.sampled_from([(), (StopReason("M01", "mechanical"),), (StopReason("", ""),)]))
    policy = draw(
        st.one_of(
            st.none(),
            st.builds(
                ConfirmationPolicy,
                st.one_of(st.none(), DECIMALS),
                st.one_of(st.none(), FLOATS),
                st.booleans(),
            ),
        )
    )
    shifts = draw(st.one_of(st.none(), st.just((Shift("day", 360, 960),))))
    return MasterData(
        version=draw(INTS),
        stop_reasons=reasons,
        scrap_reasons=(ScrapReason("S01", "flash"),),
        alarm_reasons=draw(st.sampled_from([(), (("E1", "M01"),), (("E1", "NOPE"),)])),
        crew_size=draw(DECIMALS),
        shifts=shifts,
        policy=policy,
    )


FUZZED = [cls for name, cls in sorted(INPUT_TYPES.items()) if cls is not RulesApplied]


def busy() -> WorkCenter:
    sources = (CountSource("plc", CountKind.GOOD, bits=16), pulse_source("gpio"))
    wc = make_wc(spec(), spec("4712", "0010"), sources=sources)
    act(wc, Action.START_PRODUCTION, 0)
    ok(wc, CounterReading("plc", 100, at(10)))
    ok(wc, CounterReading("plc", 150, at(600)))
    ok(wc, Pulses("gpio", 20, at(700)))
    return wc


@given(st.lists(st.sampled_from(FUZZED).flatmap(extreme), min_size=1, max_size=8))
@SETTINGS
def test_extreme_values_in_every_field_never_break_the_core(inputs: list[Any]) -> None:
    wc = busy()
    for inp in inputs:
        before = snapshot(wc)
        out = wc.apply(inp)  # never raises
        if out.rejection is not None:
            assert out.events == ()
            assert snapshot(wc) == before, f"rejected {inp} changed the state"
            assert out.rejection.message
            continue
        started = time.perf_counter()
        codec.encode_input(inp)
        messages_for(out.events)
        for event in out.events:
            codec.dumps(event_body(event))
        for table, key in sorted(wc.take_dirty()):
            codec.entity_doc(wc, table, key)
        assert time.perf_counter() - started < 0.5, f"encoding what {inp} led to took too long"
        # What the machine does next must still count: a reading, pulses, time passing.
        track = wc.counters.get("plc")
        last = track.last_value if track is not None and track.last_value is not None else 150
        probe_at = at(10_000 + len(wc.stops) + 60)
        for probe in (
            CounterReading("plc", (last + 5) % 65536, probe_at),
            Pulses("gpio", 3, probe_at),
            Tick(probe_at),
        ):
            probe_out = wc.apply(probe)
            messages_for(probe_out.events)
            for table, key in sorted(wc.take_dirty()):
                codec.entity_doc(wc, table, key)


def test_each_input_type_is_fuzzed() -> None:
    assert {c.__name__ for c in FUZZED} == set(INPUT_TYPES) - {"RulesApplied"}


@given(
    st.lists(
        st.tuples(st.integers(0, 3), st.sampled_from(list(ResultStatus))), min_size=1, max_size=12
    )
)
@SETTINGS
def test_a_posted_verdict_is_final_whatever_follows(verdicts: list[tuple[int, Any]]) -> None:
    from edge.domain.inputs import RequestConfirmation

    wc = make_wc(spec(), sources=(pulse_source("gpio"),))
    act(wc, Action.START_PRODUCTION, 0)
    for i in range(4):
        ok(wc, Pulses("gpio", 5, at(100 + i * 100)))
        ok(wc, RequestConfirmation(OPERATOR, at(150 + i * 100)))
    confs = sorted(wc.confirmations.values(), key=lambda c: c.counter)
    # The model: what each confirmation should show, and how many verdicts contradicted.
    model = {c.conf_id: "awaiting_result" for c in confs}
    conflicts = dict.fromkeys(model, 0)
    good_news = (ResultStatus.POSTED, ResultStatus.DUPLICATE)
    for n, (which, status) in enumerate(verdicts):
        conf = confs[which]
        out = wc.apply(ConfirmationResult(conf.idem_key, status, at(1000 + n), "relay says"))
        assert out.rejection is None
        held = model[conf.conf_id]
        if held == "posted":
            conflicts[conf.conf_id] += status not in good_news
        elif status in good_news:
            model[conf.conf_id] = "posted"
        elif status is ResultStatus.REJECTED:
            model[conf.conf_id] = "rejected"
        elif held == "rejected":  # retrying after rejected
            conflicts[conf.conf_id] += 1
        for c in confs:
            assert c.status.value == model[c.conf_id]
            assert c.verdict_conflicts == conflicts[c.conf_id]
    assert all(c.status is ConfirmationStatus.POSTED for c in confs if model[c.conf_id] == "posted")


def test_the_dispatch_fuzz_reaches_past_the_first_checks() -> None:
    """A sanity check of the generator: sane lists with one extreme field are accepted too."""
    wc = busy()
    out = wc.apply(DispatchList(2, (spec(), spec("4712", "0010", target=Decimal("0.5"))), NOW))
    assert out.rejection is None
    md = MasterData(3, (StopReason("M01", "x"),), crew_size=Decimal(2))
    assert wc.apply(MasterDataReceived(md, NOW)).rejection is None
