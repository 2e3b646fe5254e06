"""Commands: a table of (path, command, body model, builder), one POST route for each row.

Every command has the same shape: a body with a ``command_id``, an actor (the operator, or the
supervisor of the session), the core input the builder makes of the two and the clock, and the
hub's answer after the commit. The operator commands are here; the supervisor's use the same
table form (:mod:`edge.panel.routes.supervisor`).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final, Generic, TypeVar

from fastapi import APIRouter

from edge.domain.clock import Instant
from edge.domain.inputs import (
    AcknowledgeHelp,
    AcknowledgeOverDelivery,
    Action,
    CallForHelp,
    CloseHelp,
    ComponentBatchLoaded,
    ComponentConsumed,
    DeclareSetupGood,
    Input,
    ReportScrap,
    RequestConfirmation,
    RequestMaintenance,
    SetStopReason,
    Transition,
)
from edge.panel import models as m
from edge.panel.deps import Hub, Supervisor
from edge.panel.errors import COMMAND_ERRORS
from edge.panel.hub import PanelHub

B = TypeVar("B", bound=m.Command)

# body, actor, now -> the core's input
Builder = Callable[[B, str, Instant], Input]


@dataclass(frozen=True, slots=True)
class CommandRoute(Generic[B]):
    """One command: ``POST path`` with a ``body``; ``build`` makes its input for the engine.

    ``command`` names it in the log. The route is named after the builder (so its OpenAPI
    operation id and summary follow the builder's name) and the builder's docstring is the
    route's description; ``summary`` overrides the summary made of the name.
    """

    path: str
    command: str
    body: type[B]
    build: Builder[B]
    summary: str | None = None


def operator_actor(body: m.Command, hub: PanelHub) -> str:
    """The operator named in the command, else the panel's configured one."""
    return f"operator:{body.operator}" if body.operator else hub.operator


def _endpoint(spec: CommandRoute[Any], supervisor: bool) -> Callable[..., Awaitable[Any]]:
    async def endpoint(body: m.Command, hub: PanelHub, who: str | None = None) -> m.CommandResult:
        actor = who if who is not None else operator_actor(body, hub)
        inp = spec.build(body, actor, hub.now())
        op = body.op if isinstance(body, m.OpCommand) else None
        return await hub.command(spec.command, body.command_id, inp, op)

    # FastAPI reads the parameters from the signature: the body is the row's model, the
    # supervisor actor (a 401 without a session) comes before the hub, as it does in a route
    # written by hand.
    keyword = inspect.Parameter.POSITIONAL_OR_KEYWORD
    params = [inspect.Parameter("body", keyword, annotation=spec.body)]
    if supervisor:
        params.append(inspect.Parameter("who", keyword, annotation=Supervisor))
    params.append(inspect.Parameter("hub", keyword, annotation=Hub))
    endpoint.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        params, return_annotation=m.CommandResult
    )
    endpoint.__name__ = spec.build.__name__
    endpoint.__qualname__ = spec.build.__name__
    endpoint.__doc__ = spec.build.__doc__
    return endpoint


def add_commands(
    router: APIRouter,
    table: Iterable[CommandRoute[Any]],
    *,
    supervisor: bool = False,
    responses: dict[int | str, dict[str, Any]] = COMMAND_ERRORS,
) -> None:
    """A POST route on ``router`` for each row of ``table``."""
    for spec in table:
        router.add_api_route(
            spec.path,
            _endpoint(spec, supervisor),
            methods=["POST"],
            response_model=m.CommandResult,
            responses=responses,
            summary=spec.summary,
        )


# ---------------------------------------------------------------------- operator builders


def transition(action: Action) -> Builder[m.OpCommand]:
    """A lifecycle action on ``body.op`` with nothing more to it."""

    def build(body: m.OpCommand, actor: str, now: Instant) -> Input:
        return Transition(action, body.op, actor, now)

    build.__name__ = build.__qualname__ = f"command_{action.value}"
    build.__doc__ = None
    return build


def complete(body: m.CompleteCommand, actor: str, now: Instant) -> Input:
    """Complete: a final confirmation of what is pending, and the operation ends."""
    return Transition(Action.COMPLETE, body.op, actor, now, variance_reason=body.variance_reason)


def split(body: m.SplitCommand, actor: str, now: Instant) -> Input:
    """Split: confirm what is done as final and hand the remainder back as a new split."""
    return Transition(Action.SPLIT, body.op, actor, now, quantity=body.quantity)


def scrap(body: m.ScrapCommand, actor: str, now: Instant) -> Input:
    """Report scrap (or rework) with its reason and quantity."""
    return ReportScrap(body.qty, body.reason, actor, now, op=body.op, rework=body.rework)


def setup_good(body: m.SetupGoodCommand, actor: str, now: Instant) -> Input:
    """First-off parts booked as setup scrap were good after all: they count as good."""
    return DeclareSetupGood(body.qty, actor, now, op=body.op)


def stop_reason(body: m.StopReasonCommand, actor: str, now: Instant) -> Input:
    """Give the open (or latest pending) stop its reason."""
    return SetStopReason(body.reason, actor, now, stop_id=body.stop_id)


def confirm(body: m.OpCommand, actor: str, now: Instant) -> Input:
    """A partial confirmation of what is pending, now."""
    return RequestConfirmation(actor, now, op=body.op)


def acknowledge_over(body: m.OpCommand, actor: str, now: Instant) -> Input:
    """Go on past the over-delivery tolerance."""
    return AcknowledgeOverDelivery(actor, now, op=body.op)


def call_help(body: m.HelpCommand, actor: str, now: Instant) -> Input:
    """Call for help (material, maintenance, quality, supervisor)."""
    return CallForHelp(body.category, actor, now)


def acknowledge_help(body: m.HelpCallCommand, actor: str, now: Instant) -> Input:
    return AcknowledgeHelp(body.call_id, actor, now)


def close_help(body: m.HelpCallCommand, actor: str, now: Instant) -> Input:
    return CloseHelp(body.call_id, actor, now)


def load_batch(body: m.LoadBatchCommand, actor: str, now: Instant) -> Input:
    """Load a batch of a batch-managed component: what the operation produces from now on is
    booked to it, until the next batch of the same component."""
    return ComponentBatchLoaded(body.batch, actor, now, material=body.material, op=body.op)


def consume(body: m.ConsumeCommand, actor: str, now: Instant) -> Input:
    """Record consumption of a component that is not backflushed, in its unit, from the batch
    loaded now unless ``batch`` names another."""
    return ComponentConsumed(body.material, body.qty, actor, now, batch=body.batch, op=body.op)


def request_maintenance(body: m.RequestMaintenanceCommand, actor: str, now: Instant) -> Input:
    """Ask maintenance to come: from a stop (once per stop), or without one saying in a note
    what is wrong."""
    return RequestMaintenance(actor, now, stop_id=body.stop_id, note=body.note)


def _transition_row(path: str, action: Action, summary: str) -> CommandRoute[m.OpCommand]:
    return CommandRoute(path, action.value, m.OpCommand, transition(action), summary)


OPERATOR_COMMANDS: Final[tuple[CommandRoute[Any], ...]] = (
    _transition_row("/api/commands/start-setup", Action.START_SETUP, "Start setup"),
    _transition_row("/api/commands/start-production", Action.START_PRODUCTION, "Start production"),
    _transition_row("/api/commands/interrupt", Action.INTERRUPT, "Interrupt"),
    _transition_row("/api/commands/resume", Action.RESUME, "Resume"),
    CommandRoute("/api/commands/complete", "complete", m.CompleteCommand, complete),
    CommandRoute("/api/commands/split", "split", m.SplitCommand, split),
    CommandRoute("/api/commands/scrap", "scrap", m.ScrapCommand, scrap),
    CommandRoute("/api/commands/setup-good", "setup_good", m.SetupGoodCommand, setup_good),
    CommandRoute("/api/commands/stop-reason", "stop_reason", m.StopReasonCommand, stop_reason),
    CommandRoute("/api/commands/confirm", "confirm", m.OpCommand, confirm),
    CommandRoute(
        "/api/commands/acknowledge-over-delivery",
        "acknowledge_over_delivery",
        m.OpCommand,
        acknowledge_over,
    ),
    CommandRoute("/api/commands/call-help", "call_help", m.HelpCommand, call_help),
    CommandRoute(
        "/api/commands/acknowledge-help", "acknowledge_help", m.HelpCallCommand, acknowledge_help
    ),
    CommandRoute("/api/commands/close-help", "close_help", m.HelpCallCommand, close_help),
    CommandRoute("/api/commands/load-batch", "load_batch", m.LoadBatchCommand, load_batch),
    CommandRoute("/api/commands/consume", "consume", m.ConsumeCommand, consume),
    CommandRoute(
        "/api/commands/request-maintenance",
        "request_maintenance",
        m.RequestMaintenanceCommand,
        request_maintenance,
    ),
)

router = APIRouter(tags=["operator"])
add_commands(router, OPERATOR_COMMANDS)
