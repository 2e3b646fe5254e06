"""Who works the work center: operators log in and out by badge (rules.md §1's actors).

A badge scanned at the work center logs its holder in; scanned again it logs them out. The
holders are the configured ones (``[[operators]]``: badge, personnel number, name); a badge
nobody holds is refused naming it, and nothing changes. Several operators may be logged in at
once (a crew). At a shift change everyone still logged in is logged out: the next shift logs
in again. Each login and logout is an event with the personnel number, journaled like every
input, so a restart and a replay give the same crew.

Labour per operator: the setup and production time of each active operation is booked to
every operator logged in while it passed (:func:`edge.domain.times.accrue`; the time is
accrued up to each login and logout first), and each confirmation carries the labour of its
period per personnel number (``labour_by_operator``); a reversal gives it back to the next
one. Counted from the first rules that say so (``labour_per_operator``), so a journal of a
version without it replays as it was.

Every action an operator takes at the panel or the scanner while someone is logged in is
theirs: :func:`actor_for` gives the actor the adapters stamp on the inputs they make
(``operator:<personnel>`` of the one who logged in last), so the journal and the events name
the person, not the panel.
"""

from __future__ import annotations

from edge.domain.calendar import shift_of
from edge.domain.clock import Instant
from edge.domain.events import EventType, RejectionCode
from edge.domain.inputs import BadgeScanned
from edge.domain.model import CrewMember
from edge.domain.rules import BadgeHolder
from edge.domain.state import WorkCenterState, reject
from edge.domain.times import accrue_active

MAX_BADGE = 64  # characters of a badge id
MAX_DEVICE = 100


def holder(s: WorkCenterState, badge_id: str) -> BadgeHolder | None:
    for h in s.header.rules.badges:
        if h.badge_id == badge_id:
            return h
    return None


def _checked(value: object, name: str, most: int) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= most or not value.isprintable():
        raise reject(
            RejectionCode.INVALID_VALUE,
            f"{name} {value!r}: must be 1 to {most} printable characters",
            field=name,
            value=value if isinstance(value, str) else repr(value),
        )
    return value


def on_badge(s: WorkCenterState, b: BadgeScanned) -> bool:
    badge_id = _checked(b.badge_id, "badge_id", MAX_BADGE)
    device = _checked(b.device, "device", MAX_DEVICE)
    who = holder(s, badge_id)
    if who is None:
        raise reject(
            RejectionCode.INVALID_VALUE,
            f"badge {badge_id!r} belongs to no operator of this work center",
            field="badge_id",
            value=badge_id,
        )
    here = next((m for m in s.header.crew if m.personnel == who.personnel), None)
    if here is not None:
        _log_out(s, (here,), b.at, "badge", device)
        return True
    member = CrewMember(who.personnel, who.name, badge_id, b.at)
    _book_labour(s, b.at)
    s.header.crew = (*s.header.crew, member)
    s.touch("work_center", "")
    s.emit(
        EventType.OPERATOR_LOGGED_IN,
        b.at,
        None,
        f"operator:{who.personnel}",
        personnel=who.personnel,
        name=who.name,
        device=device,
        crew=[m.personnel for m in s.header.crew],
    )
    return True


def _log_out(
    s: WorkCenterState, leaving: tuple[CrewMember, ...], at: Instant, why: str, device: str
) -> None:
    gone = {m.personnel for m in leaving}
    _book_labour(s, at)
    s.header.crew = tuple(m for m in s.header.crew if m.personnel not in gone)
    s.touch("work_center", "")
    for m in leaving:
        s.emit(
            EventType.OPERATOR_LOGGED_OUT,
            at,
            None,
            f"operator:{m.personnel}",
            personnel=m.personnel,
            name=m.name,
            reason=why,
            device=device,
            logged_in_ms=at.since(m.since),
            crew=[c.personnel for c in s.header.crew],
        )


def _book_labour(s: WorkCenterState, at: Instant) -> None:
    """Before the crew changes: the time so far is labour of those who were there."""
    if s.rules.labour_per_operator:
        accrue_active(s, at)


def at_shift_change(s: WorkCenterState, now: Instant) -> None:
    """Before the shift change is booked: everyone still logged in is logged out."""
    if not s.header.crew or s.header.shift_id is None:
        return
    name, day = shift_of(now, s.calendar)
    if f"{day.isoformat()}/{name}" != s.header.shift_id:
        _log_out(s, s.header.crew, now, "shift_end", "")


def actor_for(crew: tuple[CrewMember, ...], default: str) -> str:
    """The actor of an operator's action now: the one who logged in last, else ``default``."""
    return f"operator:{crew[-1].personnel}" if crew else default
