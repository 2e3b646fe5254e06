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
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Final

import structlog
from fastapi import Depends, FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    StreamingResponse,
)
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from edge.config import GatewayConfig
from edge.domain.events import Outcome
from edge.domain.inputs import (
    AcknowledgeHelp,
    AcknowledgeOverDelivery,
    Action,
    CallForHelp,
    CloseHelp,
    CorrectCount,
    Input,
    ReportScrap,
    RequestConfirmation,
    ResendConfirmation,
    ReverseConfirmation,
    SetStopReason,
    Transition,
)
from edge.domain.model import OperationKey
from edge.engine import Engine
from edge.errors import DuplicateCommand, EngineStopped, StoreError
from edge.metrics import MetricsSources
from edge.metrics import render as render_metrics
from edge.panel import models as m
from edge.panel.auth import SupervisorAuth
from edge.panel.guard import RequestGuard
from edge.panel.view import (
    ViewMeta,
    active_out,
    confirmation_out,
    operation_out,
    snapshot,
    stop_out,
)
from edge.store.store import OutboxRow

log = structlog.get_logger("edge.panel")

HERE: Final = Path(__file__).resolve().parent
STATIC: Final = HERE / "static"
I18N: Final = HERE / "i18n"
LANGUAGES: Final = ("en", "de")
HEARTBEAT_S: Final = 5.0
MIN_PUSH_INTERVAL_S: Final = 0.25
TOKEN_HEADER: Final = "X-Supervisor-Token"

_ERRORS = {
    409: {"model": m.ErrorBody, "description": "the core refused the command; nothing changed"},
    413: {"model": m.ErrorBody, "description": "the body is over [panel] max_body_bytes"},
    415: {"model": m.ErrorBody, "description": "the body is not JSON"},
    422: {"model": m.ErrorBody, "description": "a field is not valid; nothing changed"},
    503: {"model": m.ErrorBody, "description": "the gateway cannot take commands right now"},
}
_SUPERVISOR_ERRORS = {
    **_ERRORS,
    401: {"model": m.ErrorBody, "description": "no supervisor session: log in with the PIN"},
}


class ApiError(Exception):
    """Answered as ``status`` with an :class:`~edge.panel.models.ErrorBody`."""

    def __init__(self, status: int, body: m.ErrorBody, headers: dict[str, str] | None = None):
        super().__init__(body.message)
        self.status = status
        self.body = body
        self.headers = headers


def assets_version() -> str:
    """A digest of the panel's files: a page loaded with other files reloads itself."""
    digest = hashlib.sha256()
    for path in sorted([*STATIC.rglob("*"), *I18N.rglob("*")]):
        if path.is_file():
            digest.update(path.relative_to(HERE).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


_SHOWN_MAX: Final = 64  # characters of a refused value quoted back in an error
_BIG: Final = 10**18


def _text(value: str, limit: int | None = None) -> str:
    """Safe to send as UTF-8 JSON (an unpaired surrogate as its escape); cut at ``limit``."""
    if limit is not None and len(value) > limit:
        value = value[:limit] + "..."
    return value.encode("utf-8", "backslashreplace").decode("utf-8")


def _scalar(value: object) -> str | int | float | bool | None:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        # A huge integer would make a huge (past 4300 digits: an impossible) message.
        return value if abs(value) < _BIG else f"an integer of {value.bit_length()} bits"
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)  # JSON has no inf or nan
    if isinstance(value, Decimal):
        if not value.is_finite() or abs(value) >= _BIG:
            return str(value)  # int(Decimal("1e999999999")) would not end
        return int(value) if value == value.to_integral_value() else float(value)
    return _text(value if isinstance(value, str) else str(value))


class PanelHub:
    """Counts commits and wakes the event streams; builds snapshots for everyone."""

    def __init__(self, engine: Engine, cfg: GatewayConfig, auth: SupervisorAuth) -> None:
        self.engine = engine
        self.cfg = cfg
        self.auth = auth
        self.revision = 0
        self.assets = assets_version()
        self.closing = False
        self._changed = asyncio.Event()
        self._inflight: dict[str, asyncio.Future[m.CommandResult]] = {}
        # A commit hook rather than an event listener: counts change the numbers on the panel
        # without any event, and every commit that journaled something may have changed them.
        engine.add_commit_hook(self.on_commit)

    def on_commit(self, _: Sequence[OutboxRow]) -> None:
        self.revision += 1
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def close(self) -> None:
        """End every event stream (the server is shutting down)."""
        self.closing = True
        self._changed.set()

    async def wait_change(self, revision: int, timeout: float) -> None:
        if self.revision != revision or self.closing:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)

    @property
    def operator(self) -> str:
        return f"operator:{self.cfg.panel.operator_id}"

    def snapshot(self) -> m.PanelState:
        panel = self.cfg.panel
        meta = ViewMeta(
            boot=self.engine.store.boot_seq,
            revision=self.revision,
            assets=self.assets,
            language=panel.language,
            operator=self.operator,
            variance_reasons=tuple(panel.variance_reasons),
            supervisor_configured=self.auth.configured,
        )
        # engine.wc, not a kept reference: the engine replaces it after an internal error.
        return snapshot(self.engine.wc, self.engine.now(), meta)

    # ------------------------------------------------------------------ commands

    async def command(
        self, name: str, command_id: str, inp: Input, op: str | None = None
    ) -> m.CommandResult:
        """Submit ``inp`` once for ``command_id``; answer after the commit."""
        running = self._inflight.get(command_id)
        if running is not None:
            # The same tap twice while the first is still being committed: share its answer.
            result = await asyncio.shield(running)
            return result.model_copy(update={"duplicate": True})
        future: asyncio.Future[m.CommandResult] = asyncio.get_running_loop().create_future()
        self._inflight[command_id] = future
        try:
            result = await self._submit(name, command_id, inp, op)
        except ApiError as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: nobody else may be waiting
            raise
        except BaseException as exc:
            future.set_exception(ApiError(503, _unavailable("the command was interrupted")))
            future.exception()
            raise exc
        else:
            future.set_result(result)
            return result
        finally:
            del self._inflight[command_id]

    async def _submit(
        self, name: str, command_id: str, inp: Input, op: str | None
    ) -> m.CommandResult:
        fields: dict[str, object] = {"command": name, "command_id": command_id}
        if op:
            key = OperationKey.parse(op)
            fields.update(order_id=key.order, operation=key.operation, split=key.split)
        fields["actor"] = getattr(inp, "actor", None)
        try:
            outcome: Outcome = await self.engine.submit(inp, command_id=command_id)
        except DuplicateCommand:
            log.info("panel command already carried out", **fields)
            return m.CommandResult(
                command_id=command_id, duplicate=True, events=[], state=self.snapshot()
            )
        except EngineStopped:
            log.warning("panel command while the gateway stops", **fields)
            raise ApiError(503, _unavailable("the gateway is stopping")) from None
        except StoreError as exc:
            log.error("panel command not stored", error=str(exc), **fields)
            raise ApiError(
                503,
                m.ErrorBody(
                    code="store_error",
                    message=f"the gateway could not save it ({exc}); nothing was done",
                ),
            ) from None
        rejection = outcome.rejection
        if rejection is not None:
            log.info(
                "panel command rejected",
                code=rejection.code.value,
                reason=rejection.message,
                **fields,
            )
            raise ApiError(
                409,
                m.ErrorBody(
                    code=rejection.code.value,
                    message=rejection.message,
                    field=rejection.field,
                    value=_scalar(rejection.value),
                    state=rejection.state,
                    action=rejection.action,
                ),
            )
        events = [e.type.value for e in outcome.events]
        log.info("panel command done", events=events, **fields)
        return m.CommandResult(
            command_id=command_id, duplicate=False, events=events, state=self.snapshot()
        )

    # ------------------------------------------------------------------ event stream

    async def stream(self, request: Request) -> AsyncIterator[str]:
        yield "retry: 2000\n\n"  # the browser reconnects after 2 s when the daemon is gone
        sent = -1
        while not self.closing:
            revision = self.revision
            state = self.snapshot()
            sent = revision
            yield f"event: state\nid: {state.boot}.{revision}\ndata: {state.model_dump_json()}\n\n"
            await asyncio.sleep(MIN_PUSH_INTERVAL_S)
            if await request.is_disconnected():
                return
            await self.wait_change(sent, HEARTBEAT_S)


def _unavailable(why: str) -> m.ErrorBody:
    return m.ErrorBody(code="unavailable", message=f"{why}; nothing was done, try again")


def _validation_body(exc: RequestValidationError) -> m.ErrorBody:
    """The first problem as ``field = value: what is wrong``, like the core's messages."""
    errors = exc.errors()
    if not errors:
        return m.ErrorBody(code="invalid_value", message="the request is not valid")
    first = errors[0]
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    field = _text(".".join(loc), _SHOWN_MAX) or None
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
    shown = _scalar(value)
    if isinstance(shown, str):
        shown = _text(shown, _SHOWN_MAX)
    return m.ErrorBody(
        code="invalid_value",
        message=_text(f"{field} = {shown!r}: {text}" if field else text),
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
    path = _text(request.url.path, _SHOWN_MAX)
    if exc.status_code == 404:
        message = f"no such path: {path}"
    elif exc.status_code == 405:
        message = f"{request.method} is not allowed on {path}"
    else:
        message = _text(str(exc.detail))
    return m.ErrorBody(code=_HTTP_CODES.get(exc.status_code, "http_error"), message=message)


def _supervisor(
    request: Request,
    token: Annotated[str | None, Header(alias=TOKEN_HEADER)] = None,
) -> str:
    """The actor of a live supervisor session, else a 401."""
    hub: PanelHub = request.app.state.hub
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


# Module level: FastAPI resolves the (string) annotations of the routes in this module's names.
Supervisor = Annotated[str, Depends(_supervisor)]


def create_app(
    engine: Engine,
    cfg: GatewayConfig,
    auth: SupervisorAuth | None = None,
    metrics: MetricsSources | None = None,
) -> FastAPI:
    """The panel's app over ``engine``; ``auth`` holds the supervisor PINs (none: no PIN)."""
    auth = auth or SupervisorAuth({})
    metrics = metrics or MetricsSources()
    hub = PanelHub(engine, cfg, auth)
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
    app.state.hub = hub
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

    def actor(body: m.Command) -> str:
        return f"operator:{body.operator}" if body.operator else hub.operator

    # ------------------------------------------------------------------ pages and files

    index = (STATIC / "index.html").read_text(encoding="utf-8")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        html = index.replace("{{ASSETS}}", hub.assets).replace("{{LANGUAGE}}", cfg.panel.language)
        return HTMLResponse(html, headers={"Cache-Control": "no-cache"})

    @app.get("/i18n/{language}.json", include_in_schema=False)
    async def catalog(language: str) -> FileResponse:
        if language not in LANGUAGES:
            raise ApiError(
                404,
                m.ErrorBody(code="not_found", message=f"no strings for language {language!r}"),
            )
        return FileResponse(I18N / f"{language}.json", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    # ------------------------------------------------------------------ reads

    @app.get("/api/state", response_model=m.PanelState, tags=["read"])
    async def state() -> m.PanelState:
        """Everything the panel shows, in one snapshot."""
        return hub.snapshot()

    @app.get("/api/dispatch", response_model=list[m.OperationOut], tags=["read"])
    async def dispatch() -> list[m.OperationOut]:
        """The dispatch list: operations not finished, in the central sequence."""
        return hub.snapshot().dispatch

    @app.get("/api/active", response_model=list[m.ActiveOperation], tags=["read"])
    async def active() -> list[m.ActiveOperation]:
        """The active operation(s) with good, scrap, target and time elements."""
        wc = engine.wc
        now = engine.now()
        return [active_out(wc, op, now) for op in wc.active]

    @app.get("/api/operations/{order}/{operation}", response_model=m.OperationOut, tags=["read"])
    async def operation(order: str, operation: str, split: int = 0) -> m.OperationOut:
        """One operation, finished or not."""
        key = OperationKey(order, operation, split)
        op = engine.wc.operations.get(key)
        if op is None:
            raise ApiError(
                404,
                m.ErrorBody(
                    code="unknown_operation",
                    message=f"op = {str(key)!r}: no such operation at this work center",
                    field="op",
                    value=str(key),
                ),
            )
        if op.status.active:
            return active_out(engine.wc, op, engine.now())
        return operation_out(op)

    @app.get("/api/stops", response_model=list[m.StopOut], tags=["read"])
    async def stops() -> list[m.StopOut]:
        """The open stop, stops waiting for a reason, then the most recent ones."""
        snap = hub.snapshot()
        seen: set[str] = set()
        out: list[m.StopOut] = []
        for stop in [*([snap.stop] if snap.stop else []), *snap.pending_stops, *snap.stops]:
            if stop.stop_id not in seen:
                seen.add(stop.stop_id)
                out.append(stop)
        return out

    @app.get("/api/stops/{stop_id}", response_model=m.StopOut, tags=["read"])
    async def stop(stop_id: str) -> m.StopOut:
        found = engine.wc.stops.get(stop_id)
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
        return stop_out(engine.wc, found, engine.now())

    @app.get("/api/confirmations", response_model=list[m.ConfirmationOut], tags=["read"])
    async def confirmations() -> list[m.ConfirmationOut]:
        """Confirmations with their ERP verdicts, newest first."""
        wc = engine.wc
        return [confirmation_out(wc, c) for c in reversed(wc.confirmations.values())]

    @app.get("/api/health", response_model=m.Health, tags=["read"])
    async def health() -> m.Health:
        return m.Health(
            ok=not engine.stopped,
            boot=engine.store.boot_seq,
            revision=hub.revision,
            engine_healthy=engine.healthy,
        )

    @app.get(
        "/metrics",
        tags=["read"],
        response_class=PlainTextResponse,
        responses={200: {"content": {"text/plain": {}}}},
    )
    async def prometheus() -> PlainTextResponse:
        """Prometheus text exposition: writer, outbox, links, MQTT, the floor."""
        return PlainTextResponse(
            await render_metrics(engine, metrics), media_type="text/plain; version=0.0.4"
        )

    @app.get(
        "/api/events",
        tags=["read"],
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {}}}},
    )
    async def events(request: Request) -> StreamingResponse:
        """Server-Sent Events: ``event: state`` with a PanelState after each commit."""
        return StreamingResponse(
            hub.stream(request),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    # ------------------------------------------------------------------ operator commands

    def transition_route(path: str, action: Action, summary: str) -> None:
        async def handler(body: m.OpCommand) -> m.CommandResult:
            inp = Transition(action, body.op, actor(body), engine.now())
            return await hub.command(action.value, body.command_id, inp, body.op)

        handler.__name__ = f"command_{action.value}"
        app.post(
            path,
            response_model=m.CommandResult,
            responses=_ERRORS,  # type: ignore[arg-type]
            tags=["operator"],
            summary=summary,
        )(handler)

    transition_route("/api/commands/start-setup", Action.START_SETUP, "Start setup")
    transition_route("/api/commands/start-production", Action.START_PRODUCTION, "Start production")
    transition_route("/api/commands/interrupt", Action.INTERRUPT, "Interrupt")
    transition_route("/api/commands/resume", Action.RESUME, "Resume")

    def post(
        path: str, tag: str = "operator", errors: dict[int, dict[str, Any]] | None = None
    ) -> Callable[[Callable[..., Awaitable[m.CommandResult]]], Any]:
        return app.post(
            path,
            response_model=m.CommandResult,
            responses=errors or _ERRORS,  # type: ignore[arg-type]
            tags=[tag],
        )

    @post("/api/commands/complete")
    async def complete(body: m.CompleteCommand) -> m.CommandResult:
        """Complete: a final confirmation of what is pending, and the operation ends."""
        inp = Transition(
            Action.COMPLETE,
            body.op,
            actor(body),
            engine.now(),
            variance_reason=body.variance_reason,
        )
        return await hub.command("complete", body.command_id, inp, body.op)

    @post("/api/commands/split")
    async def split(body: m.SplitCommand) -> m.CommandResult:
        """Split: confirm what is done as final and hand the remainder back as a new split."""
        inp = Transition(Action.SPLIT, body.op, actor(body), engine.now(), quantity=body.quantity)
        return await hub.command("split", body.command_id, inp, body.op)

    @post("/api/commands/scrap")
    async def scrap(body: m.ScrapCommand) -> m.CommandResult:
        """Report scrap (or rework) with its reason and quantity."""
        inp = ReportScrap(
            body.qty, body.reason, actor(body), engine.now(), op=body.op, rework=body.rework
        )
        return await hub.command("scrap", body.command_id, inp, body.op)

    @post("/api/commands/stop-reason")
    async def stop_reason(body: m.StopReasonCommand) -> m.CommandResult:
        """Give the open (or latest pending) stop its reason."""
        inp = SetStopReason(body.reason, actor(body), engine.now(), stop_id=body.stop_id)
        return await hub.command("stop_reason", body.command_id, inp)

    @post("/api/commands/confirm")
    async def confirm(body: m.OpCommand) -> m.CommandResult:
        """A partial confirmation of what is pending, now."""
        inp = RequestConfirmation(actor(body), engine.now(), op=body.op)
        return await hub.command("confirm", body.command_id, inp, body.op)

    @post("/api/commands/acknowledge-over-delivery")
    async def acknowledge_over(body: m.OpCommand) -> m.CommandResult:
        """Go on past the over-delivery tolerance."""
        inp = AcknowledgeOverDelivery(actor(body), engine.now(), op=body.op)
        return await hub.command("acknowledge_over_delivery", body.command_id, inp, body.op)

    @post("/api/commands/call-help")
    async def call_help(body: m.HelpCommand) -> m.CommandResult:
        """Call for help (material, maintenance, quality, supervisor)."""
        inp = CallForHelp(body.category, actor(body), engine.now())
        return await hub.command("call_help", body.command_id, inp)

    @post("/api/commands/acknowledge-help")
    async def acknowledge_help(body: m.HelpCallCommand) -> m.CommandResult:
        inp = AcknowledgeHelp(body.call_id, actor(body), engine.now())
        return await hub.command("acknowledge_help", body.command_id, inp)

    @post("/api/commands/close-help")
    async def close_help(body: m.HelpCallCommand) -> m.CommandResult:
        inp = CloseHelp(body.call_id, actor(body), engine.now())
        return await hub.command("close_help", body.command_id, inp)

    # ------------------------------------------------------------------ supervisor

    @app.post(
        "/api/supervisor/login",
        response_model=m.LoginOut,
        tags=["supervisor"],
        responses={
            403: {"model": m.ErrorBody, "description": "wrong PIN"},
            429: {"model": m.ErrorBody, "description": "too many wrong PINs: locked"},
            503: {"model": m.ErrorBody, "description": "no supervisor PIN is configured"},
        },
    )
    async def login(body: m.PinLogin, request: Request) -> m.LoginOut:
        """Check the supervisor PIN; a session token for the supervisor actions."""
        # Wrong PINs count per client address (and all together against a global ceiling).
        client = request.client.host if request.client else ""
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
        return m.LoginOut(
            supervisor=result.supervisor, token=result.token, session_s=auth.session_s
        )

    @app.post("/api/supervisor/logout", tags=["supervisor"], status_code=204)
    async def logout(
        token: Annotated[str | None, Header(alias=TOKEN_HEADER)] = None,
    ) -> None:
        auth.logout(token)

    @app.get("/api/supervisor/session", tags=["supervisor"], responses=_SUPERVISOR_ERRORS)  # type: ignore[arg-type]
    async def session(who: Supervisor) -> dict[str, str]:
        """Is the session still open? (Its idle time starts again.)"""
        return {"supervisor": who}

    @post("/api/supervisor/cancel", "supervisor", _SUPERVISOR_ERRORS)
    async def cancel(body: m.OpCommand, who: Supervisor) -> m.CommandResult:
        """Cancel an operation (what was counted is confirmed as final first)."""
        inp = Transition(Action.CANCEL, body.op, who, engine.now())
        return await hub.command("cancel", body.command_id, inp, body.op)

    @post("/api/supervisor/reverse", "supervisor", _SUPERVISOR_ERRORS)
    async def reverse(body: m.ConfirmationCommand, who: Supervisor) -> m.CommandResult:
        """Reverse a confirmation; its quantities count toward the next one again."""
        inp = ReverseConfirmation(body.op, body.counter, who, engine.now())
        return await hub.command("reverse", body.command_id, inp, body.op)

    @post("/api/supervisor/resend", "supervisor", _SUPERVISOR_ERRORS)
    async def resend(body: m.ResendCommand, who: Supervisor) -> m.CommandResult:
        """Send a rejected confirmation again after correction."""
        inp = ResendConfirmation(
            body.op,
            body.counter,
            who,
            engine.now(),
            posting_date=body.posting_date,
            variance_reason=body.variance_reason,
        )
        return await hub.command("resend", body.command_id, inp, body.op)

    @post("/api/supervisor/reclassify-stop", "supervisor", _SUPERVISOR_ERRORS)
    async def reclassify(body: m.ReclassifyCommand, who: Supervisor) -> m.CommandResult:
        """Give a past stop another reason (a reclassification event, never a rewrite)."""
        inp = SetStopReason(body.reason, who, engine.now(), stop_id=body.stop_id)
        return await hub.command("reclassify_stop", body.command_id, inp)

    @post("/api/supervisor/correct-count", "supervisor", _SUPERVISOR_ERRORS)
    async def correct_count(body: m.CorrectCountCommand, who: Supervisor) -> m.CommandResult:
        """Correct the unconfirmed good and scrap counts, with the reason why."""
        inp = CorrectCount(
            body.op,
            body.good_delta,
            body.scrap_delta,
            body.reason,
            who,
            engine.now(),
            scrap_reason=body.scrap_reason or "",
        )
        return await hub.command("correct_count", body.command_id, inp, body.op)

    return app
