"""Bad input: each is a rejection naming the field and value, and changes nothing."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from edge.domain.core import WorkCenter
from edge.domain.events import RejectionCode
from edge.domain.inputs import (
    Action,
    AssignUnassigned,
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
    ReverseConfirmation,
    SetStopReason,
    SourceRestarted,
    Transition,
)
from edge.domain.rules import CountKind, CountSource

from .builders import (
    OPERATOR,
    SUPERVISOR,
    act,
    at,
    key,
    make_wc,
    ok,
    pulse_source,
    rejected,
    spec,
)

OP = "4711/0020"
SOURCES = (
    CountSource("press1", CountKind.GOOD, bits=32),
    CountSource("plc16", CountKind.GOOD, bits=16),
    pulse_source("gpio1"),
)


@pytest.fixture
def busy() -> WorkCenter:
    """A work center mid-run: parts counted, readings held, a confirmation, a stop, more ops."""
    wc = make_wc(spec(), spec("4712", "0010"), spec("4713", "0010"), sources=SOURCES)
    act(wc, Action.START_PRODUCTION, 0)
    ok(wc, CounterReading("press1", 100, at(10)))
    ok(wc, CounterReading("press1", 110, at(60)))
    ok(wc, CounterReading("plc16", 65000, at(60)))
    ok(wc, Pulses("gpio1", 5, at(70)))
    ok(wc, RequestConfirmation(OPERATOR, at(80)))
    ok(wc, Pulses("gpio1", 3, at(90)))
    act(wc, Action.CANCEL, 100, op="4713/0010")
    ok(wc, MachineStateChanged("press1", MachineState.DOWN, at(110)))
    assert list(wc.stops) == ["S000001"]
    return wc


def bad(field: str, value: Any, inp: Input, code: RejectionCode | None = None) -> Any:
    return pytest.param(field, value, inp, code, id=f"{field}={value!r}")


CASES = [
    bad(
        "op",
        "9999/0010",
        Transition(Action.START_PRODUCTION, "9999/0010", OPERATOR, at(200)),
        RejectionCode.UNKNOWN_OPERATION,
    ),
    bad(
        "op",
        "9999/0010",
        ReportScrap(Decimal(1), "S01", OPERATOR, at(200), "9999/0010"),
        RejectionCode.UNKNOWN_OPERATION,
    ),
    bad("op", "4711", Transition(Action.INTERRUPT, "4711", OPERATOR, at(200))),
    bad(
        "reason",
        "S99",
        ReportScrap(Decimal(1), "S99", OPERATOR, at(200)),
        RejectionCode.UNKNOWN_REASON,
    ),
    bad(
        "reason",
        "X1",
        SetStopReason("X1", OPERATOR, at(200), "S000001"),
        RejectionCode.UNKNOWN_REASON,
    ),
    bad("qty", Decimal(-3), ReportScrap(Decimal(-3), "S01", OPERATOR, at(200))),
    bad("qty", Decimal(0), ReportScrap(Decimal(0), "S01", OPERATOR, at(200))),
    bad("qty", "abc", ReportScrap("abc", "S01", OPERATOR, at(200))),  # type: ignore[arg-type]
    bad("qty", Decimal("NaN"), ReportScrap(Decimal("NaN"), "S01", OPERATOR, at(200))),
    bad("qty", Decimal("sNaN"), ReportScrap(Decimal("sNaN"), "S01", OPERATOR, at(200))),
    bad("qty", float("nan"), ReportScrap(float("nan"), "S01", OPERATOR, at(200))),  # type: ignore[arg-type]
    bad("qty", Decimal("Infinity"), ReportScrap(Decimal("Infinity"), "S01", OPERATOR, at(200))),
    bad("qty", None, ReportScrap(None, "S01", OPERATOR, at(200))),  # type: ignore[arg-type]
    bad("qty", True, ReportScrap(True, "S01", OPERATOR, at(200))),  # type: ignore[arg-type]
    bad("qty", Decimal(-1), DeclareSetupGood(Decimal(-1), OPERATOR, at(200))),
    bad(
        "qty",
        Decimal(999),
        ReportScrap(Decimal(999), "S01", OPERATOR, at(200)),
        RejectionCode.EXCEEDS_PENDING,
    ),
    bad(
        "quantity",
        Decimal(-5),
        Transition(Action.SPLIT, OP, OPERATOR, at(200), quantity=Decimal(-5)),
    ),
    bad(
        "quantity",
        Decimal("NaN"),
        Transition(Action.SPLIT, OP, OPERATOR, at(200), quantity=Decimal("NaN")),
    ),
    bad(
        "op",
        "4713/0010",
        ReportScrap(Decimal(1), "S01", OPERATOR, at(200), "4713/0010"),
        RejectionCode.OPERATION_FINISHED,
    ),
    bad(
        "action",
        "resume",
        Transition(Action.RESUME, OP, OPERATOR, at(200)),
        RejectionCode.ILLEGAL_TRANSITION,
    ),
    bad(
        "action",
        "release",
        Transition(Action.RELEASE, "4712/0010", OPERATOR, at(200)),
        RejectionCode.ILLEGAL_TRANSITION,
    ),
    bad(
        "action",
        "start_production",
        Transition(Action.START_PRODUCTION, "4713/0010", OPERATOR, at(200)),
        RejectionCode.ILLEGAL_TRANSITION,
    ),
    bad("source", "nope", CounterReading("nope", 5, at(200)), RejectionCode.UNKNOWN_SOURCE),
    bad("source", "nope", Pulses("nope", 5, at(200)), RejectionCode.UNKNOWN_SOURCE),
    bad("source", "nope", SourceRestarted("nope", at(200)), RejectionCode.UNKNOWN_SOURCE),
    bad("source", "gpio1", CounterReading("gpio1", 5, at(200))),  # a pulse source
    bad("value", 65536, CounterReading("plc16", 65536, at(200))),
    bad("value", -1, CounterReading("plc16", -1, at(200))),
    bad("value", 2**32, CounterReading("press1", 2**32, at(200))),
    bad("value", 12.5, CounterReading("press1", 12.5, at(200))),  # type: ignore[arg-type]
    bad("value", True, CounterReading("press1", True, at(200))),  # type: ignore[arg-type]
    bad("n", -2, Pulses("gpio1", -2, at(200))),
    bad("actor", "operator", Transition(Action.INTERRUPT, OP, "operator", at(200))),
    bad("actor", "operator:", Transition(Action.INTERRUPT, OP, "operator:", at(200))),
    bad("actor", "robot:7", Transition(Action.INTERRUPT, OP, "robot:7", at(200))),
    bad("actor", "", ReportScrap(Decimal(1), "S01", "", at(200))),
    bad("actor", "supervisor:", RequestConfirmation("supervisor:", at(200))),
    bad(
        "actor",
        "operator:" + "x" * 300,
        Transition(Action.INTERRUPT, OP, "operator:" + "x" * 300, at(200)),
    ),
    bad("unassigned_id", "U999", AssignUnassigned("U999", OP, SUPERVISOR, at(200))),
    bad("operations[0].target_qty", Decimal(-1), DispatchList(2, (spec(target=-1),), at(200))),
    bad(
        "operations[0].target_qty", Decimal("NaN"), DispatchList(2, (spec(target="NaN"),), at(200))
    ),
    bad(
        "operations[0].parts_per_signal",
        Decimal(0),
        DispatchList(2, (spec(parts_per_signal=Decimal(0)),), at(200)),
    ),
    bad("operations[0].std_cycle_s", -1.0, DispatchList(2, (spec(std_cycle_s=-1.0),), at(200))),
    # Contract-valid once, each one made every count of the operation an internal error, a
    # discontinuity, or froze the loop (issue: extreme values).
    *(
        bad(f"operations[0].{name}", value, DispatchList(2, (spec(**{kw: value}),), at(200)))
        for name, kw, value in (
            ("parts_per_signal", "parts_per_signal", Decimal("1E-400")),
            ("parts_per_signal", "parts_per_signal", Decimal("1E+999999")),
            ("parts_per_signal", "parts_per_signal", Decimal("0.00001")),
            ("parts_per_signal", "parts_per_signal", Decimal("Infinity")),
            ("target_qty", "target", Decimal("1E+5000")),
            ("target_qty", "target", Decimal("1000000001")),
            ("target_qty", "target", Decimal("0.0000001")),
            ("std_cycle_s", "std_cycle_s", 1e300),
            ("std_cycle_s", "std_cycle_s", float("inf")),
            ("std_cycle_s", "std_cycle_s", float("nan")),
            ("std_setup_s", "std_setup_s", 1e12),
            ("over_tolerance_pct", "over_tolerance_pct", Decimal("1E+999999")),
            ("crew_size", "crew_size", Decimal("-1")),
            ("sequence", "sequence", 10**30),
            ("split", "split", 10**6),
        )
    ),
    bad(
        "operations[0].work_center",
        "WC-OTHER",
        DispatchList(2, (spec(work_center="WC-OTHER"),), at(200)),
    ),
    bad("operations[1]", "4711/0020", DispatchList(2, (spec(), spec()), at(200))),
]


@pytest.mark.parametrize(("field", "value", "inp", "code"), CASES)
def test_bad_input_is_rejected_naming_field_and_value_and_changes_nothing(
    busy: WorkCenter, field: str, value: Any, inp: Input, code: RejectionCode | None
) -> None:
    rej = rejected(busy, inp)
    if code is not None:
        assert rej.code is code
    assert rej.field == field
    if isinstance(value, Decimal) and value.is_nan():
        assert rej.value is not None
        assert Decimal(rej.value).is_nan()  # type: ignore[arg-type]
    elif isinstance(value, float) and value != value:
        assert rej.value != rej.value
    else:
        assert rej.value == value
    if field == "action":
        # An illegal transition names the current state and the action.
        assert rej.state is not None
        assert rej.state in rej.message
        assert value.replace("_", " ") in rej.message
    else:
        assert field.split(".")[-1].split("[")[0] in rej.message or field == "op"
        assert str(value) in rej.message


def test_the_busy_fixture_is_really_busy(busy: WorkCenter) -> None:
    assert busy.confirmations
    assert busy.counters["press1"].last_value == 110
    op = busy.operations[key(OP)]
    assert op.counted.good == 18
    assert op.pending.good == 3


def test_an_unknown_input_type_is_rejected(busy: WorkCenter) -> None:
    rej = rejected(busy, object())  # type: ignore[arg-type]
    assert rej.code is RejectionCode.INVALID_VALUE
    assert "object" in rej.message


@pytest.mark.parametrize(
    "inp",
    [
        AssignUnassigned("U000001", OP, OPERATOR, at(200)),
        ReverseConfirmation(OP, 1, OPERATOR, at(200)),
        ResendConfirmation(OP, 1, OPERATOR, at(200)),
        RequestConfirmation(OPERATOR, at(200), "4713/0010"),
    ],
    ids=["assign", "reverse", "resend", "confirm-cancelled"],
)
def test_supervisor_only_actions_name_the_actor(busy: WorkCenter, inp: Input) -> None:
    rej = rejected(busy, inp)
    assert rej.code is RejectionCode.SUPERVISOR_ONLY
    assert (rej.field, rej.value) == ("actor", OPERATOR)
