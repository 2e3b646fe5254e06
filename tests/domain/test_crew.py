"""Operators log in and out by badge (edge.domain.crew): who is known, the toggle, the shift
change, and that a restart from the projections has the same crew."""

from __future__ import annotations

import pytest

from edge.domain.core import WorkCenter
from edge.domain.crew import actor_for
from edge.domain.events import EventType
from edge.domain.inputs import (
    Action,
    BadgeScanned,
    CounterReading,
    MachineState,
    MachineStateChanged,
    RequestConfirmation,
    ReverseConfirmation,
    Tick,
)
from edge.domain.model import OperationKey
from edge.domain.rules import BadgeHolder, Shift

from .builders import act, at, make_wc, ok, one, rejected, spec

BADGES = (
    BadgeHolder("00012345", "12345", "Ana Weber"),
    BadgeHolder("00067890", "67890", "Tom Kraus"),
)
SHIFTS = (
    Shift("early", 6 * 60, 8 * 60),
    Shift("late", 14 * 60, 8 * 60),
    Shift("night", 22 * 60, 8 * 60),
)


def crew_of(wc: WorkCenter) -> list[str]:
    return [m.personnel for m in wc.header.crew]


def test_a_badge_logs_its_holder_in_and_again_out() -> None:
    wc = make_wc(spec(), badges=BADGES)
    out = ok(wc, BadgeScanned("00012345", "scanner:front", at(10)))
    ev = one(out, EventType.OPERATOR_LOGGED_IN)
    assert ev.actor == "operator:12345"
    assert ev.data["name"] == "Ana Weber"
    assert ev.data["device"] == "scanner:front"
    ok(wc, BadgeScanned("00067890", "scanner:front", at(20)))
    assert crew_of(wc) == ["12345", "67890"]  # a crew of two
    assert actor_for(wc.header.crew, "operator:panel") == "operator:67890"
    out = ok(wc, BadgeScanned("00012345", "scanner:front", at(70)))
    ev = one(out, EventType.OPERATOR_LOGGED_OUT)
    assert ev.data["reason"] == "badge"
    assert ev.data["logged_in_ms"] == 60_000
    assert crew_of(wc) == ["67890"]
    ok(wc, BadgeScanned("00067890", "scanner:front", at(80)))
    assert actor_for(wc.header.crew, "operator:panel") == "operator:panel"


@pytest.mark.parametrize(
    ("badge", "device", "field", "says"),
    [
        ("99999999", "scanner:front", "badge_id", "badge '99999999' belongs to no operator"),
        ("", "scanner:front", "badge_id", "badge_id '': must be 1 to 64"),
        ("x" * 65, "scanner:front", "badge_id", "must be 1 to 64 printable characters"),
        ("0001\x1d2345", "scanner:front", "badge_id", "printable"),
        ("00012345", "", "device", "device '': must be 1 to 100"),
    ],
)
def test_a_badge_nobody_holds_or_garbage_is_refused_naming_it(
    badge: str, device: str, field: str, says: str
) -> None:
    wc = make_wc(spec(), badges=BADGES)
    rej = rejected(wc, BadgeScanned(badge, device, at(10)))  # and nothing changed
    assert rej.field == field
    assert says in rej.message, rej.message


def test_no_badges_configured_refuses_every_badge() -> None:
    wc = make_wc(spec())
    assert rejected(wc, BadgeScanned("00012345", "scanner:front", at(10))).field == "badge_id"


def test_the_shift_change_logs_everyone_out() -> None:
    wc = make_wc(spec(), badges=BADGES, shifts=SHIFTS)
    wc.apply(Tick(at(0)))  # 10:00, the early shift
    ok(wc, BadgeScanned("00012345", "scanner:front", at(10)))
    ok(wc, BadgeScanned("00067890", "scanner:front", at(20)))
    wc.apply(Tick(at(3 * 3600)))  # 13:00: still early
    assert crew_of(wc) == ["12345", "67890"]
    out = wc.apply(Tick(at(4 * 3600 + 1)))  # 14:00:01: late
    outs = [e for e in out.events if e.type is EventType.OPERATOR_LOGGED_OUT]
    assert [e.data["personnel"] for e in outs] == ["12345", "67890"]
    assert {e.data["reason"] for e in outs} == {"shift_end"}
    assert crew_of(wc) == []
    # Logged-out events come before the shift change itself.
    types = [e.type for e in out.events]
    assert types.index(EventType.OPERATOR_LOGGED_OUT) < types.index(EventType.SHIFT_CHANGED)


def test_the_crew_is_kept_in_the_work_centers_projection() -> None:
    wc = make_wc(spec(), badges=BADGES)
    ok(wc, BadgeScanned("00012345", "scanner:front", at(10)))
    again = WorkCenter.restore(wc.header, [], [], [], [], [], [])
    assert crew_of(again) == ["12345"]
    out = ok(again, BadgeScanned("00012345", "scanner:front", at(30)))
    assert one(out, EventType.OPERATOR_LOGGED_OUT).data["logged_in_ms"] == 20_000


# ------------------------------------------------------------------ labour per operator


def _labour(out_data: object) -> dict[str, float]:
    assert isinstance(out_data, dict)
    return {e["personnel"]: e["labour_s"] for e in out_data["labour_by_operator"]}


def test_setup_and_production_time_is_labour_of_whoever_was_logged_in() -> None:
    wc = make_wc(spec(), badges=BADGES, labour_per_operator=True)
    ok(wc, BadgeScanned("00012345", "scanner:front", at(0)))
    act(wc, Action.START_SETUP, 0)
    act(wc, Action.START_PRODUCTION, 600)
    ok(wc, BadgeScanned("00067890", "scanner:front", at(1200)))  # Tom joins
    ok(wc, MachineStateChanged("plc", MachineState.DOWN, at(1300)))  # a stop: nobody's labour
    ok(wc, MachineStateChanged("plc", MachineState.RUNNING, at(1400)))
    ok(wc, BadgeScanned("00012345", "scanner:front", at(1500)))  # Ana leaves
    out = ok(wc, RequestConfirmation("operator:67890", at(1800), "4711/0020"))
    conf = one(out, EventType.CONFIRMATION_CREATED)
    # Ana: 600 s setup, 600-1300 and 1400-1500 production; Tom: 1200-1300 and 1400-1800.
    assert _labour(conf.data) == {"12345": 1400.0, "67890": 500.0}
    # The standard labour (production time x the crew size) is still there.
    assert conf.data["activities"]["labour_s"] == 1100.0  # type: ignore[index]


def test_a_reversal_gives_the_labour_back_to_the_next_confirmation() -> None:
    wc = make_wc(spec(), badges=BADGES, labour_per_operator=True)
    ok(wc, BadgeScanned("00012345", "scanner:front", at(0)))
    act(wc, Action.START_PRODUCTION, 0)
    ok(wc, CounterReading("press1", 0, at(1)))
    ok(wc, CounterReading("press1", 10, at(100)))
    first = one(
        ok(wc, RequestConfirmation("operator:12345", at(100), "4711/0020")),
        EventType.CONFIRMATION_CREATED,
    )
    assert _labour(first.data) == {"12345": 100.0}
    ok(wc, ReverseConfirmation("4711/0020", 1, "supervisor:anna", at(150)))
    ok(wc, CounterReading("press1", 11, at(200)))
    second = one(
        ok(wc, RequestConfirmation("operator:12345", at(200), "4711/0020")),
        EventType.CONFIRMATION_CREATED,
    )
    assert _labour(second.data) == {"12345": 200.0}


def test_the_shift_change_books_the_labour_of_those_it_logs_out() -> None:
    # A slow machine: no no-count stop in five hours.
    wc = make_wc(
        spec(std_cycle_s=6 * 3600.0), badges=BADGES, shifts=SHIFTS, labour_per_operator=True
    )
    wc.apply(Tick(at(0)))
    ok(wc, BadgeScanned("00012345", "scanner:front", at(0)))
    act(wc, Action.START_PRODUCTION, 0)
    ok(wc, CounterReading("press1", 0, at(1)))
    wc.apply(Tick(at(4 * 3600 + 1)))  # 14:00:01: Ana is logged out by the shift change
    ok(wc, CounterReading("press1", 1, at(5 * 3600)))
    out = ok(wc, RequestConfirmation("operator:7", at(5 * 3600), "4711/0020"))
    assert _labour(one(out, EventType.CONFIRMATION_CREATED).data) == {"12345": 14401.0}


def test_without_labour_per_operator_in_the_rules_none_is_booked() -> None:
    wc = make_wc(spec(), badges=BADGES)
    ok(wc, BadgeScanned("00012345", "scanner:front", at(0)))
    act(wc, Action.START_PRODUCTION, 0)
    ok(wc, CounterReading("press1", 0, at(1)))
    ok(wc, CounterReading("press1", 10, at(100)))
    out = ok(wc, RequestConfirmation("operator:12345", at(100), "4711/0020"))
    assert _labour(one(out, EventType.CONFIRMATION_CREATED).data) == {}
    assert wc.operations[OperationKey.parse("4711/0020")].labour == {}
