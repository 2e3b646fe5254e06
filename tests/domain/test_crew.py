"""Operators log in and out by badge (edge.domain.crew): who is known, the toggle, the shift
change, and that a restart from the projections has the same crew."""

from __future__ import annotations

import pytest

from edge.domain.core import WorkCenter
from edge.domain.crew import actor_for
from edge.domain.events import EventType
from edge.domain.inputs import BadgeScanned, Tick
from edge.domain.rules import BadgeHolder, Shift

from .builders import at, make_wc, ok, one, rejected, spec

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
