"""The local API and the panel's files, as one FastAPI app over the running engine.

Reads are snapshots of the core's state (``view.snapshot``). Commands become inputs submitted to
the engine and are answered only after the commit; a rejection by the core is a 409 with the
core's message, field and value. Each command carries a client-made ``command_id``: the engine
refuses to act twice on one id (also after a restart), and a second request with an id that is
still in flight waits for the first and gets its answer, marked ``duplicate``.

Live updates go out as Server-Sent Events (``/api/events``): a full snapshot after each commit
(at most four a second per client) and every few seconds anyway, so the clocks on the panel
move and a client notices a dead connection. SSE rather than WebSocket: one direction is all
the panel needs, the browser reconnects by itself, and it needs no extra server library.

The routes are in :mod:`edge.panel.routes` (page, reads, operator commands, supervisor); they
reach the engine only through the :class:`~edge.panel.hub.PanelHub`, which they get, like the
supervisor session, as a FastAPI dependency (:mod:`edge.panel.deps`).
"""

from __future__ import annotations

from typing import Final

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from edge.config import GatewayConfig
from edge.metrics import MetricsSources
from edge.panel import models as m
from edge.panel.auth import SupervisorAuth
from edge.panel.deps import TOKEN_HEADER
from edge.panel.errors import SHOWN_MAX, ApiError, safe_text, scalar
from edge.panel.guard import RequestGuard
from edge.panel.hub import HEARTBEAT_S, I18N, MIN_PUSH_INTERVAL_S, STATIC, PanelHub
from edge.panel.routes import commands, pages, reads, supervisor
from edge.panel.routes.pages import LANGUAGES
from edge.ports import PanelFace

__all__ = [
    "HEARTBEAT_S",
    "I18N",
    "LANGUAGES",
    "MIN_PUSH_INTERVAL_S",
    "STATIC",
    "TOKEN_HEADER",
    "ApiError",
    "PanelHub",
    "create_app",
]


def _validation_body(exc: RequestValidationError) -> m.ErrorBody:
    """The first problem as ``field = value: what is wrong``, like the core's messages."""
    errors = exc.errors()
    if not errors:
        return m.ErrorBody(code="invalid_value", message="the request is not valid")
    first = errors[0]
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    field = safe_text(".".join(loc), SHOWN_MAX) or None
    kind = first.get("type", "")
    ctx = first.get("ctx") or {}
    value = first.get("input")
    if kind == "missing":
        if field is None:
            return m.ErrorBody(code="invalid_value", message="the request needs a JSON body")
        return m.ErrorBody(code="invalid_value", message=f"{field}: missing", field=field)
    if kind == "json_invalid":
        return m.ErrorBody(code="invalid_value", message="the request is not valid JSON")
    texts = {
        "greater_than": "must be greater than {gt}",
        "less_than": "must be less than {lt}",
        "decimal_max_places": "at most {decimal_places} decimals",
        "decimal_max_digits": "too many digits",
        "decimal_parsing": "not a number",
        "string_pattern_mismatch": "not valid here",
        "extra_forbidden": "unknown field",
        "finite_number": "must be a finite number",
    }
    try:
        text = texts.get(kind, str(first.get("msg", "not valid"))).format(**ctx)
    except (KeyError, IndexError, ValueError):
        text = str(first.get("msg", "not valid"))
    shown = scalar(value)
    if isinstance(shown, str):
        shown = safe_text(shown, SHOWN_MAX)
    return m.ErrorBody(
        code="invalid_value",
        message=safe_text(f"{field} = {shown!r}: {text}" if field else text),
        field=field,
        value=shown,
    )


_HTTP_CODES: Final = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
}


def _http_body(exc: StarletteHTTPException, request: Request) -> m.ErrorBody:
    """Starlette's own refusals (no such path, wrong method) in the API's error body."""
    path = safe_text(request.url.path, SHOWN_MAX)
    if exc.status_code == 404:
        message = f"no such path: {path}"
    elif exc.status_code == 405:
        message = f"{request.method} is not allowed on {path}"
    else:
        message = safe_text(str(exc.detail))
    return m.ErrorBody(code=_HTTP_CODES.get(exc.status_code, "http_error"), message=message)


def create_app(
    engine: PanelFace,
    cfg: GatewayConfig,
    auth: SupervisorAuth | None = None,
    metrics: MetricsSources | None = None,
) -> FastAPI:
    """The panel's app over ``engine``; ``auth`` holds the supervisor PINs (none: no PIN)."""
    app = FastAPI(
        title="Edge gateway operator panel API",
        version="1",
        description=(
            "The work center's local API: what the operator panel shows and the commands it "
            "sends. Commands are answered after they are durable; a refused one is a 409 with "
            "the core's message. Every command carries a client-made command_id."
        ),
        # Swagger UI loads its files from a CDN, and the panel must work with the network down;
        # the OpenAPI document itself stays at /openapi.json.
        docs_url=None,
        redoc_url=None,
    )
    # What the routes' dependencies hand them (edge.panel.deps).
    app.state.hub = PanelHub(engine, cfg, auth or SupervisorAuth({}))
    app.state.metrics = metrics or MetricsSources()
    app.state.index_html = (STATIC / "index.html").read_text(encoding="utf-8")
    # Outermost: oversized and hostile bodies are refused before anything buffers or parses them.
    app.add_middleware(RequestGuard, max_body_bytes=cfg.panel.max_body_bytes)

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body.model_dump(mode="json"), exc.status, headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(
            _http_body(exc, request).model_dump(mode="json"),
            exc.status_code,
            headers=exc.headers,
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(_validation_body(exc).model_dump(mode="json"), 422)

    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.include_router(reads.router)
    app.include_router(commands.router)
    app.include_router(supervisor.router)
    return app
