"""The FastAPI dependencies of the routes: the hub, the metrics sources, the supervisor session.

``create_app`` keeps the hub and the metrics sources in ``app.state``; a route asks for them by
annotating a parameter with :data:`Hub`, :data:`Metrics` or :data:`Supervisor`.
"""

from __future__ import annotations

from typing import Annotated, Final

from fastapi import Depends, Header, Request

from edge.metrics import MetricsSources
from edge.panel import models as m
from edge.panel.errors import ApiError
from edge.panel.hub import PanelHub

TOKEN_HEADER: Final = "X-Supervisor-Token"


def get_hub(request: Request) -> PanelHub:
    """The app's :class:`PanelHub`."""
    hub: PanelHub = request.app.state.hub
    return hub


def get_metrics(request: Request) -> MetricsSources:
    """The gateway's components that report metrics besides the engine."""
    sources: MetricsSources = request.app.state.metrics
    return sources


# Module level: FastAPI resolves the (string) annotations in the names of the defining module.
Hub = Annotated[PanelHub, Depends(get_hub)]
Metrics = Annotated[MetricsSources, Depends(get_metrics)]


def supervisor_actor(
    hub: Hub,
    token: Annotated[str | None, Header(alias=TOKEN_HEADER)] = None,
) -> str:
    """The actor of a live supervisor session, else a 401."""
    who = hub.auth.session(token)
    if who is None:
        raise ApiError(
            401,
            m.ErrorBody(
                code="supervisor_login_required",
                message="supervisor PIN needed (the session ended or was never opened)",
            ),
        )
    return f"supervisor:{who}"


Supervisor = Annotated[str, Depends(supervisor_actor)]
