"""Supervisor: the PIN login, the session, and the actions that need one."""

from __future__ import annotations

from typing import Annotated, Any, Final

from fastapi import APIRouter, Header, Request

from edge.domain.clock import Instant
from edge.domain.inputs import (
    Action,
    AssignUnassigned,
    CorrectCount,
    Input,
    ResendConfirmation,
    ReverseConfirmation,
    ServiceDone,
    SetStopReason,
    Transition,
)
from edge.panel import models as m
from edge.panel.deps import TOKEN_HEADER, Hub, Supervisor
from edge.panel.errors import SUPERVISOR_ERRORS, ApiError
from edge.panel.routes.commands import CommandRoute, add_commands

router = APIRouter(tags=["supervisor"])


@router.post(
    "/api/supervisor/login",
    response_model=m.LoginOut,
    responses={
        403: {"model": m.ErrorBody, "description": "wrong PIN"},
        429: {"model": m.ErrorBody, "description": "too many wrong PINs: locked"},
        503: {"model": m.ErrorBody, "description": "no supervisor PIN is configured"},
    },
)
async def login(body: m.PinLogin, request: Request, hub: Hub) -> m.LoginOut:
    """Check the supervisor PIN; a session token for the supervisor actions."""
    # Wrong PINs count per client address (and all together against a global ceiling).
    client = request.client.host if request.client else ""
    auth = hub.auth
    result = await auth.login(body.pin, client)
    if not result.configured:
        raise ApiError(
            503,
            m.ErrorBody(
                code="no_supervisor_pin",
                message="no supervisor PIN is configured ([panel] supervisor_pin_hash)",
            ),
        )
    if result.locked_for_s > 0:
        seconds = max(1, round(result.locked_for_s))
        raise ApiError(
            429,
            m.ErrorBody(
                code="pin_locked",
                message=f"too many wrong PINs; try again in {seconds} s",
                retry_after_s=float(seconds),
            ),
            headers={"Retry-After": str(seconds)},
        )
    if result.token is None or result.supervisor is None:
        raise ApiError(
            403,
            m.ErrorBody(
                code="wrong_pin",
                message=f"wrong PIN; {result.attempts_left} more tries before a lockout",
                value=result.attempts_left,
            ),
        )
    return m.LoginOut(supervisor=result.supervisor, token=result.token, session_s=auth.session_s)


@router.post("/api/supervisor/logout", status_code=204)
async def logout(
    hub: Hub,
    token: Annotated[str | None, Header(alias=TOKEN_HEADER)] = None,
) -> None:
    hub.auth.logout(token)


@router.get("/api/supervisor/session", responses=SUPERVISOR_ERRORS)
async def session(who: Supervisor) -> dict[str, str]:
    """Is the session still open? (Its idle time starts again.)"""
    return {"supervisor": who}


# ---------------------------------------------------------------------- supervisor actions
# The actor is the session's supervisor (``supervisor:<id>``), never the body's operator.


def cancel(body: m.CancelCommand, actor: str, now: Instant) -> Input:
    """Cancel an operation (what was counted is confirmed as final first), saying why."""
    return Transition(Action.CANCEL, body.op, actor, now, reason=body.reason)


def hold(body: m.HoldCommand, actor: str, now: Instant) -> Input:
    """Put an operation on hold, saying why; the reason is shown until it is released."""
    return Transition(Action.HOLD, body.op, actor, now, reason=body.reason)


def release(body: m.OpCommand, actor: str, now: Instant) -> Input:
    """Release a held operation: it goes back to where it was before the hold."""
    return Transition(Action.RELEASE, body.op, actor, now)


def reverse(body: m.ConfirmationCommand, actor: str, now: Instant) -> Input:
    """Reverse a confirmation; its quantities count toward the next one again."""
    return ReverseConfirmation(body.op, body.counter, actor, now)


def resend(body: m.ResendCommand, actor: str, now: Instant) -> Input:
    """Send a rejected confirmation again after correction."""
    return ResendConfirmation(
        body.op,
        body.counter,
        actor,
        now,
        posting_date=body.posting_date,
        variance_reason=body.variance_reason,
    )


def reclassify(body: m.ReclassifyCommand, actor: str, now: Instant) -> Input:
    """Give a past stop another reason (a reclassification event, never a rewrite)."""
    return SetStopReason(body.reason, actor, now, stop_id=body.stop_id)


def correct_count(body: m.CorrectCountCommand, actor: str, now: Instant) -> Input:
    """Correct the unconfirmed good and scrap counts, with the reason why."""
    return CorrectCount(
        body.op,
        body.good_delta,
        body.scrap_delta,
        body.reason,
        actor,
        now,
        scrap_reason=body.scrap_reason or "",
    )


def assign_unassigned(body: m.AssignCommand, actor: str, now: Instant) -> Input:
    """Assign production counted while nothing ran to an operation (converted by its parts
    per signal)."""
    return AssignUnassigned(body.unassigned_id, body.op, actor, now)


def service_done(body: m.ServiceDoneCommand, actor: str, now: Instant) -> Input:
    """Maintenance did the task of a service interval: it is counted again from now and is no
    longer due."""
    return ServiceDone(body.name, actor, now, note=body.note)


SUPERVISOR_COMMANDS: Final[tuple[CommandRoute[Any], ...]] = (
    CommandRoute("/api/supervisor/cancel", "cancel", m.CancelCommand, cancel),
    CommandRoute("/api/supervisor/hold", "hold", m.HoldCommand, hold),
    CommandRoute("/api/supervisor/release", "release", m.OpCommand, release),
    CommandRoute("/api/supervisor/reverse", "reverse", m.ConfirmationCommand, reverse),
    CommandRoute("/api/supervisor/resend", "resend", m.ResendCommand, resend),
    CommandRoute(
        "/api/supervisor/reclassify-stop", "reclassify_stop", m.ReclassifyCommand, reclassify
    ),
    CommandRoute(
        "/api/supervisor/assign-unassigned",
        "assign_unassigned",
        m.AssignCommand,
        assign_unassigned,
    ),
    CommandRoute(
        "/api/supervisor/correct-count", "correct_count", m.CorrectCountCommand, correct_count
    ),
    CommandRoute(
        "/api/supervisor/service-done", "service_done", m.ServiceDoneCommand, service_done
    ),
)

add_commands(router, SUPERVISOR_COMMANDS, supervisor=True, responses=SUPERVISOR_ERRORS)
