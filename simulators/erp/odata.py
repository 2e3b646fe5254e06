"""What the two SAP stand-ins (:mod:`simulators.erp.sap`, :mod:`simulators.erp.sap_orders`)
share: SAP Gateway's error body, OData V2 literal formats, the ``$filter`` grammar (also used
by the Dynamics 365 stand-in's OData v4 queries), and a service state with the credentials
(HTTP Basic, bearer tokens from the client-credentials endpoint), latency, outage and queued
faults."""

from __future__ import annotations

import abc
import argparse
import base64
import contextlib
import re
import secrets
import time
import urllib.parse
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, ClassVar, Generic, Self, TypedDict, TypeVar

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from simulators.erp.serve import FaultKnobs, ThreadedServer

__all__ = [
    "COMPARISONS",
    "DATE_JSON",
    "DAY_MS",
    "NOT_FOUND_CODE",
    "TECH_CODE",
    "TOKEN_PATH",
    "Filter",
    "Predicate",
    "SapError",
    "SapServiceState",
    "ServiceSettings",
    "ServiceStandIn",
    "add_service_arguments",
    "alpha",
    "compare",
    "datetime_ms",
    "facets",
    "fmt_date",
    "fmt_decimal",
    "fmt_time",
    "parse_time",
    "service_arguments",
    "token_response",
    "unquote",
    "uri_tokens",
]

TOKEN_PATH = "/oauth/token"
DAY_MS = 86_400_000
TECH_CODE = "/IWBEP/CM_MGW_RT/000"
NOT_FOUND_CODE = "/IWBEP/CM_MGW_RT/021"


def alpha(value: str) -> str:
    """``"0010"`` -> ``"10"``: the form numeric texts are compared in (SAP's ALPHA
    conversion)."""
    return (value.lstrip("0") or "0") if value.isdigit() else value


# ---------------------------------------------------------------------------------------------
# Errors


class SapError(Exception):
    """An answer in SAP Gateway's OData V2 error shape; a subclass names its service
    (:attr:`service`), its default component and the resolution texts of the body."""

    service: ClassVar[str] = ""
    default_component: ClassVar[str] = "OPU-BSE-SDE"
    resolution: ClassVar[tuple[str, str]] = (
        "Run transaction /IWFND/ERROR_LOG on SAP Gateway hub system and search for entries "
        "with the timestamp above",
        "See SAP Note 1797736 for error analysis",
    )

    def __init__(
        self,
        status: int,
        code: str,
        text: str,
        *,
        target: str = "",
        component: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(f"{status} {code} {text}")
        self.status = status
        self.code = code
        self.text = text
        self.target = target
        self.component = component if component is not None else self.default_component
        self.headers = dict(headers or {})

    @classmethod
    def bad_request(cls, text: str, target: str = "") -> Self:
        return cls(400, TECH_CODE, text, target=target, component="OPU-BSE-SDE")

    @classmethod
    def not_found(cls, text: str) -> Self:
        return cls(404, NOT_FOUND_CODE, text, component="OPU-BSE-SDE")

    def body(self) -> dict[str, Any]:
        now = datetime.now(UTC)
        transaction, note = self.resolution
        return {
            "error": {
                "code": self.code,
                "message": {"lang": "en", "value": self.text},
                "innererror": {
                    "application": {
                        "component_id": self.component,
                        "service_namespace": "/SAP/",
                        "service_id": self.service,
                        "service_version": "0001",
                    },
                    "transactionid": uuid.uuid4().hex.upper(),
                    "timestamp": f"{now:%Y%m%d%H%M%S}.{now.microsecond:06d}0",
                    "Error_Resolution": {"SAP_Transaction": transaction, "SAP_Note": note},
                    "errordetails": [
                        {
                            "code": self.code,
                            "message": self.text,
                            "propertyref": self.target,
                            "severity": "error",
                            "target": self.target,
                        }
                    ],
                },
            }
        }

    def response(self) -> Response:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


# ---------------------------------------------------------------------------------------------
# Literals: JSON (verbose OData V2) and URI


DATE_JSON = re.compile(r"^/Date\((-?\d+)(?:[+-]\d{4})?\)/$")
_TIME = re.compile(r"^PT(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)(?:\.\d+)?S)?$")


def fmt_decimal(value: Decimal, scale: int = 3) -> str:
    return f"{value.quantize(Decimal(1).scaleb(-scale), rounding=ROUND_HALF_UP):.{scale}f}"


def fmt_date(ms: int | None) -> str | None:
    return None if ms is None else f"/Date({ms})/"


def fmt_time(seconds: int) -> str:
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"PT{h:02d}H{m:02d}M{s:02d}S"


def parse_time(text: str, *, time_of_day: bool = True) -> int | None:
    """The seconds of an Edm.Time (``PT08H30M00S``), ``None`` when it is not one. With
    ``time_of_day`` the value must be a time of day (below 24 hours, minutes and seconds below
    60); without, any hours, minutes and seconds of one or two digits each."""
    match = _TIME.match(text)
    if match is None or text == "PT":
        return None
    parts = [g or "" for g in match.groups()]
    if not time_of_day and any(len(p) > 2 for p in parts):
        return None
    h, m, s = (int(p) if p else 0 for p in parts)
    total = h * 3600 + m * 60 + s
    if time_of_day and not (total < 86_400 and m < 60 and s < 60):
        return None
    return total


def unquote(text: str) -> str:
    """``'it''s'`` -> ``it's``: a quoted URI literal's text."""
    return text[1:-1].replace("''", "'")


def datetime_ms(text: str) -> int:
    """A ``datetime'…'`` literal's text (``2025-03-04T06:00``, seconds, fractions or a date
    alone; a trailing ``Z`` is ignored) as milliseconds since the epoch, UTC."""
    text = text.rstrip("Z")
    for fmt in ("%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%S.%f", "%Y-%m-%d"):
        try:
            parsed = datetime.strptime(text, fmt).replace(tzinfo=UTC)
        except ValueError:
            continue
        return int(parsed.timestamp() * 1000)
    raise ValueError(text)


def uri_tokens(word: str = r"[A-Za-z_][A-Za-z0-9_]*") -> re.Pattern[str]:
    """The tokens of an OData V2 ``$filter`` (and of a URI literal): typed literals
    (``guid'…'``, ``datetime'…'``, ``time'…'``), strings, numbers (``95M``), parentheses and
    words (names, operators, ``true``, ``null``) of the pattern ``word``."""
    return re.compile(
        r"""\s*(?:
          (?P<typed>(?:guid|datetime|datetimeoffset|time)'(?:[^']|'')*')
         |(?P<str>'(?:[^']|'')*')
         |(?P<num>-?\d+(?:\.\d+)?[MmDdLlFf]?)
         |(?P<lp>\()|(?P<rp>\))
         |(?P<word>"""
        + word
        + r""")
        )""",
        re.X,
    )


def facets(kind: str, length: int, scale: int) -> list[str]:
    """The ``$metadata`` facets of a property of Edm type ``kind`` (``length``: a string's
    MaxLength, none when 0, or a decimal's Precision)."""
    if kind == "String" and length:
        return [f'MaxLength="{length}"']
    if kind == "Decimal":
        return [f'Precision="{length}" Scale="{scale}"']
    if kind == "DateTime":
        return ['Precision="0" sap:display-format="Date"']
    if kind == "Time":
        return ['Precision="0"']
    return []


# ---------------------------------------------------------------------------------------------
# $filter


Predicate = Callable[[Mapping[str, Any]], bool]
COMPARISONS = ("eq", "ne", "gt", "ge", "lt", "le")
Token = tuple[str, str]
F = TypeVar("F")


def compare(op: str, left: Any, right: Any) -> bool:
    """``left <op> right`` for an OData comparison; ``null`` is only equal to ``null``, and
    values that do not compare are not greater or less."""
    if op == "eq":
        return bool(left == right)
    if op == "ne":
        return bool(left != right)
    if left is None or right is None:
        return False
    try:
        if op == "gt":
            return bool(left > right)
        if op == "ge":
            return bool(left >= right)
        if op == "lt":
            return bool(left < right)
        return bool(left <= right)
    except TypeError:
        return False


class Filter(abc.ABC, Generic[F]):
    """A ``$filter`` expression as a predicate over rows: ``or`` of ``and`` of (``not``)
    comparisons ``<property> <op> <literal>`` or parenthesised expressions.

    A subclass says what the tokens are (:attr:`tokens`), what a property is (:meth:`field`,
    which raises on an unknown one), how a comparison reads its literal (:meth:`leaf`) and how
    errors are raised (:meth:`error`, with the texts of the ``*_text`` templates over
    ``text``, ``pos``, ``token`` and ``op``)."""

    tokens: ClassVar[re.Pattern[str]]
    at_text: ClassVar[str] = "Invalid filter expression at position {pos}: {text!r}"
    end_text: ClassVar[str] = "Invalid filter expression: it ends too early"
    near_text: ClassVar[str] = "Invalid filter expression near {token!r}"
    paren_text: ClassVar[str] = "Invalid filter expression: ')' expected"
    op_text: ClassVar[str] = "Operator {op!r} is not supported in $filter"

    def __init__(self, text: str) -> None:
        self.text = text
        self.items: list[Token] = []
        pos = 0
        while text[pos:].strip():
            match = self.tokens.match(text, pos)
            if match is None or match.lastgroup is None:
                raise self.error(self.at_text.format(text=text, pos=pos))
            self.items.append((match.lastgroup, match.group(match.lastgroup)))
            pos = match.end()
        self.i = 0

    # -- what a subclass says

    @abc.abstractmethod
    def error(self, message: str) -> Exception: ...

    @abc.abstractmethod
    def field(self, kind: str, name: str) -> F: ...

    @abc.abstractmethod
    def leaf(self, field: F, op: str, literal: Token) -> Predicate: ...

    # -- the grammar

    def parse(self) -> Predicate:
        pred = self._or()
        if self.i < len(self.items):
            raise self.error(self.near_text.format(text=self.text, token=self.items[self.i][1]))
        return pred

    def _peek(self) -> Token | None:
        return self.items[self.i] if self.i < len(self.items) else None

    def _take(self) -> Token:
        token = self._peek()
        if token is None:
            raise self.error(self.end_text.format(text=self.text))
        self.i += 1
        return token

    def _joined(self, word: str, part: Callable[[], Predicate]) -> list[Predicate]:
        preds = [part()]
        while self._peek() == ("word", word):
            self._take()
            preds.append(part())
        return preds

    def _or(self) -> Predicate:
        preds = self._joined("or", self._and)
        return preds[0] if len(preds) == 1 else (lambda row: any(p(row) for p in preds))

    def _and(self) -> Predicate:
        preds = self._joined("and", self._unary)
        return preds[0] if len(preds) == 1 else (lambda row: all(p(row) for p in preds))

    def _unary(self) -> Predicate:
        kind, text = self._take()
        if kind == "lp":
            inner = self._or()
            if self._take()[0] != "rp":
                raise self.error(self.paren_text.format(text=self.text))
            return inner
        if (kind, text) == ("word", "not"):
            negated = self._unary()
            return lambda row: not negated(row)
        field = self.field(kind, text)
        op_kind, op = self._take()
        if op_kind != "word" or op not in COMPARISONS:
            raise self.error(self.op_text.format(text=self.text, op=op))
        return self.leaf(field, op, self._take())


# ---------------------------------------------------------------------------------------------
# The service state: credentials, latency, outage, queued faults


class ServiceSettings(TypedDict, total=False):
    """The keywords of :class:`SapServiceState` (a subclass passes them on)."""

    user: str
    password: str
    client_id: str
    client_secret: str
    sap_client: str
    system_id: str
    token_lifetime_s: float
    require_auth: bool
    latency_s: float | tuple[float, float] | None


@dataclass(frozen=True, slots=True)
class _Fault:
    status: int
    code: str | None
    text: str | None
    scope: str | None  # which requests it is for (the state's own sense), None: any


class SapServiceState(FaultKnobs):
    """Credentials and faults of an SAP OData service. Thread-safe: the server runs on its
    own loop (often in another thread) while a test turns the knobs. :attr:`error` is the
    service's :class:`SapError` subclass."""

    error: ClassVar[type[SapError]] = SapError

    def __init__(
        self,
        *,
        user: str = "RELAY",
        password: str = "relay-secret",
        client_id: str = "edge-relay",
        client_secret: str = "relay-secret",
        sap_client: str = "100",
        system_id: str = "S4H",
        token_lifetime_s: float = 3600.0,
        require_auth: bool = True,
        latency_s: float | tuple[float, float] | None = None,
    ) -> None:
        super().__init__(latency_s)
        self.user = user
        self.password = password
        self.client_id = client_id
        self.client_secret = client_secret
        self.sap_client = sap_client
        self.system_id = system_id
        self.token_lifetime_s = token_lifetime_s
        self.require_auth = require_auth
        self._tokens: dict[str, float] = {}  # bearer token -> monotonic expiry
        self._faults: deque[_Fault] = deque()

    # -- auth

    def issue_token(self, client_id: str, client_secret: str) -> str | None:
        with self._lock:
            if (client_id, client_secret) != (self.client_id, self.client_secret):
                return None
            token = secrets.token_urlsafe(24)
            self._tokens[token] = time.monotonic() + self.token_lifetime_s
            return token

    def expire_tokens(self) -> None:
        """Every bearer token given out is expired: the next request with one answers 401."""
        with self._lock:
            self._tokens.clear()

    def check_credentials(self, authorization: str | None) -> str | None:
        """The user an ``Authorization`` header names (``None``: not accepted): the user of
        HTTP Basic, the client of a bearer token."""
        if not self.require_auth:
            return self.user
        scheme, _, value = (authorization or "").partition(" ")
        if scheme.lower() == "basic":
            try:
                user, _, password = base64.b64decode(value.strip()).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                return None
            return user if (user, password) == (self.user, self.password) else None
        if scheme.lower() == "bearer":
            with self._lock:
                until = self._tokens.get(value.strip())
                if until is None or time.monotonic() >= until:
                    self._tokens.pop(value.strip(), None)
                    return None
            return self.client_id
        return None

    def logon_failed(self) -> SapError:
        """The 401 for credentials not accepted."""
        return self.error(
            401,
            "/IWFND/CM_CONSUMER/401",
            "Logon failed: user, password or token not accepted",
            component="BC-SEC-LGN",
            headers={
                "www-authenticate": 'Basic realm="SAP NetWeaver Application Server '
                f'[{self.system_id}/{self.sap_client}]"'
            },
        )

    # -- queued faults

    def _queue_faults(
        self, n: int, status: int, code: str | None, text: str | None, scope: str | None
    ) -> None:
        with self._lock:
            self._faults.extend(_Fault(status, code, text, scope) for _ in range(n))

    def _take_fault(self, applies: Callable[[str | None], bool]) -> SapError | None:
        """The first queued fault whose scope ``applies``, as its error (taken off the
        queue)."""
        with self._lock:
            fault = next((f for f in self._faults if applies(f.scope)), None)
            if fault is None:
                return None
            self._faults.remove(fault)
        return self.error(
            fault.status,
            fault.code or f"/IWFND/CM_BEC/{fault.status}",
            fault.text or f"Injected fault: HTTP {fault.status}",
            component="OPU-BSE-SDE",
        )


async def token_response(
    state: SapServiceState, request: Request, *, invalid_client_status: int
) -> Response:
    """``POST /oauth/token``: OAuth 2 client credentials (form fields or HTTP Basic)."""
    # application/x-www-form-urlencoded, read here (python-multipart is not a dependency)
    raw = (await request.body()).decode("utf-8", "replace")
    form = dict(urllib.parse.parse_qsl(raw, keep_blank_values=True))
    client_id, client_secret = form.get("client_id", ""), form.get("client_secret", "")
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("basic "):
        with contextlib.suppress(ValueError, UnicodeDecodeError):
            client_id, _, client_secret = base64.b64decode(auth[6:]).decode().partition(":")
    if form.get("grant_type") != "client_credentials":
        return JSONResponse(
            {"error": "unsupported_grant_type", "error_description": "client_credentials only"},
            status_code=400,
        )
    issued = state.issue_token(client_id, client_secret)
    if issued is None:
        return JSONResponse(
            {"error": "invalid_client", "error_description": "Bad credentials"},
            status_code=invalid_client_status,
        )
    return JSONResponse(
        {
            "access_token": issued,
            "token_type": "bearer",
            "expires_in": int(state.token_lifetime_s),
            "scope": "",
        },
        headers={"cache-control": "no-store"},
    )


# ---------------------------------------------------------------------------------------------
# The runner and its command line

S = TypeVar("S", bound=SapServiceState)


class ServiceStandIn(ThreadedServer, Generic[S]):
    """An SAP service served by uvicorn on a thread of its own: ``async with`` or ``with`` or
    :meth:`start`/:meth:`stop`; ``port=None`` picks a free port; every other keyword goes to
    the state (:attr:`state_class`). A subclass names its :attr:`service_path`, its
    :attr:`label` and :attr:`thread_name`, the app (:meth:`_app`) and uvicorn's
    :attr:`uvicorn_settings`."""

    service_path: ClassVar[str]
    label: ClassVar[str]
    thread_name: ClassVar[str]
    uvicorn_settings: ClassVar[dict[str, Any]] = {}
    state_class: type[S]

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        state: S | None = None,
        **settings: Any,
    ) -> None:
        self.state: S = state if state is not None else self.state_class(**settings)
        super().__init__(
            self._app(self.state),
            host=host,
            port=port or 0,
            label=self.label,
            thread_name=self.thread_name,
            **self.uvicorn_settings,
        )

    @staticmethod
    @abc.abstractmethod
    def _app(state: S) -> FastAPI: ...

    @property
    def url(self) -> str:
        """The service root, with a trailing slash."""
        return f"{self.base}{self.service_path}/"

    @property
    def token_url(self) -> str:
        return f"{self.base}{TOKEN_PATH}"


def add_service_arguments(parser: argparse.ArgumentParser) -> None:
    """``--host``, ``--port``, ``--user``, ``--password``, ``--client-id``, ``--client-secret``."""
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: a free port")
    parser.add_argument("--user", default="RELAY")
    parser.add_argument("--password", default="relay-secret")
    parser.add_argument("--client-id", default="edge-relay")
    parser.add_argument("--client-secret", default="relay-secret")


def service_arguments(args: argparse.Namespace) -> dict[str, Any]:
    """The stand-in's keywords from :func:`add_service_arguments`' options."""
    names = ("host", "port", "user", "password", "client_id", "client_secret")
    return {name: getattr(args, name) for name in names}
