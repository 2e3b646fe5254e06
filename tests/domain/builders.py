"""Builders for the domain tests: instants, rules, operations and a work center ready to use.

Time in these tests is counted in seconds after 2024-03-04 10:00:00 UTC (a Monday); the monotonic
clock starts at an arbitrary non-zero value so nothing relies on it being the wall clock.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from edge.domain.clock import Instant
from edge.domain.core import WorkCenter
from edge.domain.events import Event, EventType, Outcome, Rejection
from edge.domain.inputs import Action, DispatchList, Input, Transition
from edge.domain.model import OperationKey, OperationSpec
from edge.domain.rules import (
    ConfirmationPolicy,
    CountKind,
    CountSource,
    MasterData,
    ScrapReason,
    SignalType,
    StopReason,
    WorkCenterRules,
)

T0_WALL_MS = int(datetime(2024, 3, 4, 10, 0, tzinfo=UTC).timestamp() * 1000)
MONO0_MS = 5_000_000
EDGE_ID = "edge-01"
WC_NAME = "WC-PRESS-1"
OPERATOR = "operator:17"
SUPERVISOR = "supervisor:anna"
CENTRAL = "central"


def at(seconds: float) -> Instant:
    """The instant ``seconds`` after 10:00:00 on both clocks."""
    ms = round(seconds * 1000)
    return Instant(T0_WALL_MS + ms, MONO0_MS + ms)


def clock(hhmmss: str) -> Instant:
    """The instant at ``HH:MM[:SS]`` on the test day (UTC), for the worked examples."""
    parts = [int(p) for p in hhmmss.split(":")]
    h, m, s = [*parts, 0][:3]
    return at((h - 10) * 3600 + m * 60 + s)


MASTER = MasterData(
    version=1,
    stop_reasons=(
        StopReason("M01", "mechanical failure"),
        StopReason("M02", "tool change"),
        StopReason("BRK", "break", "planned"),
    ),
    scrap_reasons=(
        ScrapReason("S01", "flash"),
        ScrapReason("S03", "short shot"),
        ScrapReason("SETUP", "setup scrap"),
        ScrapReason("MACHINE", "machine scrap"),
    ),
    alarm_reasons=(("E42", "M01"),),
)

GOOD = CountSource("press1", CountKind.GOOD, bits=32)


def make_rules(**kw: Any) -> WorkCenterRules:
    base: dict[str, Any] = {
        "edge_id": EDGE_ID,
        "work_center": WC_NAME,
        "sources": (GOOD,),
        "master_data": MASTER,
    }
    base.update(kw)
    return WorkCenterRules(**base)


def spec(
    order: str = "4711",
    operation: str = "0020",
    target: int | str | Decimal = 1000,
    **kw: Any,
) -> OperationSpec:
    base: dict[str, Any] = {"material": "MAT-1", "work_center": WC_NAME, "std_cycle_s": 10.0}
    base.update(kw)
    return OperationSpec(order=order, operation=operation, target_qty=Decimal(target), **base)


def make_wc(*specs: OperationSpec, **rules_kw: Any) -> WorkCenter:
    """A work center with the given operations dispatched (version 1) at 09:00."""
    wc = WorkCenter(make_rules(**rules_kw))
    if specs:
        ok(wc, DispatchList(1, tuple(specs), at(-3600)))
    return wc


def ok(wc: WorkCenter, inp: Input) -> Outcome:
    out = wc.apply(inp)
    assert out.rejection is None, f"{inp} was rejected: {out.rejection}"
    return out


def snapshot(wc: WorkCenter) -> Any:
    return copy.deepcopy(
        (
            wc.header,
            wc.operations,
            wc.counters,
            wc.stops,
            wc.confirmations,
            wc.unassigned,
            [op.key for op in wc.active],
            wc.shift_book.shifts,
        )
    )


def rejected(wc: WorkCenter, inp: Input) -> Rejection:
    """Apply ``inp``, assert it was refused with no events, and that the state did not change."""
    before = snapshot(wc)
    out = wc.apply(inp)
    assert out.rejection is not None, f"{inp} was accepted: {out.events}"
    assert out.events == ()
    assert snapshot(wc) == before, "a rejected input changed the state"
    return out.rejection


def act(
    wc: WorkCenter,
    action: Action,
    seconds: float,
    op: str = "4711/0020",
    actor: str = OPERATOR,
    **kw: Any,
) -> Outcome:
    return ok(wc, Transition(action, op, actor, at(seconds), **kw))


def events_of(out: Outcome, type_: EventType) -> list[Event]:
    return [e for e in out.events if e.type is type_]


def one(out: Outcome, type_: EventType) -> Event:
    found = events_of(out, type_)
    assert len(found) == 1, f"expected one {type_}, got {[e.type for e in out.events]}"
    return found[0]


def key(text: str) -> OperationKey:
    return OperationKey.parse(text)


def pulse_source(name: str = "gpio1", kind: CountKind = CountKind.GOOD, **kw: Any) -> CountSource:
    return CountSource(name, kind, signal=SignalType.PULSE, **kw)


def policy_every(n: int) -> ConfirmationPolicy:
    return ConfirmationPolicy(every_good=Decimal(n))


def count_good(wc: WorkCenter, n: int, seconds: float, source: str = "press1") -> None:
    """Count ``n`` good signals on an absolute counter with one reading at ``seconds``.

    The first time, a baseline reading goes in early enough for ``n`` to be plausible at the
    default pace (10 s cycle: at most 0.3 signals/s); later calls must leave that time themselves.
    """
    from edge.domain.inputs import CounterReading

    track = wc.counters.get(source)
    if track is None or track.last_value is None:
        ok(wc, CounterReading(source, 0, at(seconds - 4 * n - 1)))
        last = 0
    else:
        last = track.last_value
    ok(wc, CounterReading(source, last + n, at(seconds)))
