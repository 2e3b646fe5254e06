"""Reads: snapshots of the core's state, the health, the metrics and the event stream."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import PlainTextResponse, StreamingResponse

from edge.domain.model import OperationKey
from edge.panel import models as m
from edge.panel.deps import Hub, Metrics
from edge.panel.errors import ApiError

router = APIRouter(tags=["read"])


@router.get("/api/state", response_model=m.PanelState)
async def state(hub: Hub) -> m.PanelState:
    """Everything the panel shows, in one snapshot."""
    return hub.snapshot()


@router.get("/api/dispatch", response_model=list[m.OperationOut])
async def dispatch(hub: Hub) -> list[m.OperationOut]:
    """The dispatch list: operations not finished, in the central sequence."""
    return hub.snapshot().dispatch


@router.get("/api/active", response_model=list[m.ActiveOperation])
async def active(hub: Hub) -> list[m.ActiveOperation]:
    """The active operation(s) with good, scrap, target and time elements."""
    return hub.active()


@router.get("/api/shift", response_model=m.ShiftView)
async def shift(hub: Hub) -> m.ShiftView:
    """The current shift so far: OEE and its three factors (null where undefined), good and
    scrap against the target, the 3 stop reasons that cost the most time."""
    found = hub.shift()
    if found is None:
        raise ApiError(
            404,
            m.ErrorBody(code="no_shift", message="nothing booked yet: no shift to show"),
        )
    return found


@router.get("/api/operations/{order}/{operation}", response_model=m.OperationOut)
async def operation(hub: Hub, order: str, operation: str, split: int = 0) -> m.OperationOut:
    """One operation, finished or not."""
    key = OperationKey(order, operation, split)
    found = hub.operation(key)
    if found is None:
        raise ApiError(
            404,
            m.ErrorBody(
                code="unknown_operation",
                message=f"op = {str(key)!r}: no such operation at this work center",
                field="op",
                value=str(key),
            ),
        )
    return found


@router.get("/api/confirmation-history", response_model=m.ConfirmationHistoryOut)
async def confirmation_history(
    hub: Hub,
    conf_id: Annotated[str, Query(pattern=m.CONF_ID_PATTERN, examples=["4711/0020#1"])],
) -> m.ConfirmationHistoryOut:
    """One confirmation's history (created, sent, verdicts, resent, reversed), oldest first."""
    found = await hub.confirmation_history(conf_id)
    if found is None:
        raise ApiError(
            404,
            m.ErrorBody(
                code="unknown_confirmation",
                message=f"conf_id = {conf_id!r}: no such confirmation at this work center",
                field="conf_id",
                value=conf_id,
            ),
        )
    return found


@router.get("/api/stops", response_model=list[m.StopOut])
async def stops(hub: Hub) -> list[m.StopOut]:
    """The open stop, stops waiting for a reason, then the most recent ones."""
    snap = hub.snapshot()
    seen: set[str] = set()
    out: list[m.StopOut] = []
    for stop in [*([snap.stop] if snap.stop else []), *snap.pending_stops, *snap.stops]:
        if stop.stop_id not in seen:
            seen.add(stop.stop_id)
            out.append(stop)
    return out


@router.get("/api/stops/{stop_id}", response_model=m.StopOut)
async def stop(hub: Hub, stop_id: str) -> m.StopOut:
    found = hub.stop(stop_id)
    if found is None:
        raise ApiError(
            404,
            m.ErrorBody(
                code="unknown_stop",
                message=f"stop_id = {stop_id!r}: no such stop",
                field="stop_id",
                value=stop_id,
            ),
        )
    return found


@router.get("/api/confirmations", response_model=list[m.ConfirmationOut])
async def confirmations(hub: Hub) -> list[m.ConfirmationOut]:
    """Confirmations with their ERP verdicts, newest first."""
    return hub.confirmations()


@router.get("/api/health", response_model=m.Health)
async def health(hub: Hub) -> m.Health:
    return hub.health()


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/plain": {}}}},
)
async def prometheus(hub: Hub, metrics: Metrics) -> PlainTextResponse:
    """Prometheus text exposition: writer, outbox, links, MQTT, the floor."""
    return PlainTextResponse(await hub.metrics(metrics), media_type="text/plain; version=0.0.4")


@router.get(
    "/api/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def events(hub: Hub, request: Request) -> StreamingResponse:
    """Server-Sent Events: ``event: state`` with a PanelState after each commit."""
    return StreamingResponse(
        hub.stream(request),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
