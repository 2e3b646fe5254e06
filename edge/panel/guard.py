"""What the local API refuses before a request reaches FastAPI: oversized bodies and hostile JSON.

An ASGI middleware in front of the app, because the checks must happen before anything buffers
or parses the body:

- **Size**: a ``Content-Length`` above ``[panel] max_body_bytes`` is answered 413 at once,
  without reading the body; a body without one (chunked) is counted as it arrives and cut off
  with a 413 as soon as it passes the limit. At most the limit (plus uvicorn's own 64 KiB read
  buffer) is ever held per request, however much the client sends. A 413 closes the
  connection, so the rest of the upload is not read either.
- **Type**: a body must be JSON (``application/json`` or ``application/*+json``, UTF-8):
  anything else is a 415.
- **Content**: the body must be UTF-8 JSON whose numbers are finite (no ``NaN``,
  ``Infinity``, ``1e309``), whose whole numbers fit in 64 bits (Python would otherwise refuse
  integers with more than 4300 digits inside the parser, or carry huge ones into the core),
  whose strings are valid Unicode (a ``\\ud800`` escape cannot be stored or shown), and which
  is nested at most ``MAX_DEPTH`` levels. Each failure is a 422 with the API's error body,
  naming the field (``qty = '1e309': not a finite number``).

Every refusal happens before the engine sees anything, so a refused request changes nothing.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from typing import Final

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edge.panel import models as m

DEFAULT_MAX_BODY_BYTES: Final = 64 * 1024
MAX_DEPTH: Final = 32
INT_MIN: Final = -(2**63)
INT_MAX: Final = 2**63 - 1
_SHOWN_MAX: Final = 40  # characters of a refused value quoted back
_SURROGATE: Final = re.compile("[\ud800-\udfff]")


class _Bad:
    """A number json.loads must not turn into a value: kept as its text, found by the walk."""

    __slots__ = ("text", "why")

    def __init__(self, text: str, why: str) -> None:
        self.text = text
        self.why = why


def _constant(text: str) -> _Bad:
    return _Bad(text, "must be a finite number")


def _float(text: str) -> float | _Bad:
    value = float(text)
    return value if math.isfinite(value) else _Bad(text, "not a finite number (out of range)")


def _int(text: str) -> int | _Bad:
    digits = text.lstrip("-")
    # Checked by length first: int() of thousands of digits is slow or refused.
    if len(digits) > 19 or not (INT_MIN <= (value := int(text)) <= INT_MAX):
        return _Bad(text, "out of range (a whole number must fit in 64 bits)")
    return value


def _shown(text: str) -> str:
    text = text if len(text) <= _SHOWN_MAX else text[:_SHOWN_MAX] + "..."
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _invalid(message: str, field: str | None = None, value: str | None = None) -> m.ErrorBody:
    return m.ErrorBody(code="invalid_value", message=message, field=field, value=value)


def _walk(doc: object) -> Iterator[tuple[str, int, object]]:
    """Every value and key in ``doc`` with its dotted path and depth, without recursion."""
    stack: list[tuple[str, int, object]] = [("", 1, doc)]
    while stack:
        path, depth, value = stack.pop()
        yield path, depth, value
        if isinstance(value, dict):
            for key, item in value.items():
                sub = f"{path}.{key}" if path else str(key)
                yield sub, depth, key  # a key is text to check, too
                stack.append((sub, depth + 1, item))
        elif isinstance(value, list):
            stack.extend(
                (f"{path}.{i}" if path else str(i), depth + 1, item) for i, item in enumerate(value)
            )


def check_json(body: bytes) -> m.ErrorBody | None:
    """Why ``body`` is not acceptable JSON for this API, or None."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        return _invalid(f"the request body is not UTF-8 text (byte {exc.start}); JSON must be")
    try:
        doc = json.loads(
            text.removeprefix("\ufeff"),
            parse_constant=_constant,
            parse_float=_float,
            parse_int=_int,
        )
    except RecursionError:
        return _invalid(f"the request is nested too deeply (at most {MAX_DEPTH} levels)")
    except json.JSONDecodeError as exc:
        return _invalid(
            f"the request is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
        )
    for path, depth, value in _walk(doc):
        field = _shown(path) if path else None
        if depth > MAX_DEPTH:
            return _invalid(f"the request is nested too deeply (at most {MAX_DEPTH} levels)")
        if isinstance(value, _Bad):
            shown = _shown(value.text)
            message = f"{field} = {shown!r}: {value.why}" if field else value.why
            return _invalid(message, field, shown)
        if isinstance(value, str) and _SURROGATE.search(value):
            shown = _shown(value)
            why = "not valid text (an unpaired surrogate)"
            return _invalid(f"{field} = {shown!r}: {why}" if field else why, field, shown)
    return None


def _is_json(content_type: str) -> tuple[bool, str]:
    """(is it JSON in UTF-8, the media type shown back)."""
    media, *params = (part.strip() for part in content_type.split(";"))
    media = media.lower()
    kind, _, sub = media.partition("/")
    json_type = kind == "application" and (sub == "json" or sub.endswith("+json"))
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in (
            "utf-8",
            "utf8",
        ):
            return False, content_type
    return json_type, media


class RequestGuard:
    """The ASGI middleware: size limit, JSON only, sane JSON (see the module docstring)."""

    def __init__(self, app: ASGIApp, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    def _too_large(self) -> m.ErrorBody:
        limit = self.max_body_bytes
        return m.ErrorBody(
            code="body_too_large",
            message=f"the request body is larger than the limit of {limit} bytes "
            "([panel] max_body_bytes); nothing was done",
            field="max_body_bytes",
            value=limit,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        declared = headers.get("content-length")
        # (h11 has already refused a Content-Length that is not a number.)
        if (
            declared is not None
            and declared.strip().isdigit()
            and (int(declared) > self.max_body_bytes)
        ):
            await _answer(send, 413, self._too_large(), close=True)
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client is gone; nobody to answer
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                await _answer(send, 413, self._too_large(), close=True)
                return
            if chunk:
                chunks.append(chunk)
            more = bool(message.get("more_body", False))
        body = b"".join(chunks)
        if body.strip():
            is_json, media = _is_json(headers.get("content-type", ""))
            if not is_json:
                shown = _shown(media) if media else "none"
                await _answer(
                    send,
                    415,
                    m.ErrorBody(
                        code="unsupported_media_type",
                        message=f"the body must be JSON in UTF-8 (Content-Type: "
                        f"application/json), not {shown}; nothing was done",
                        field="content-type",
                        value=shown,
                    ),
                )
                return
            problem = check_json(body)
            if problem is not None:
                await _answer(send, 422, problem)
                return

        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: only a disconnect can come

        await self.app(scope, replay, send)


async def _answer(send: Send, status: int, body: m.ErrorBody, *, close: bool = False) -> None:
    payload = body.model_dump_json().encode("utf-8")
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode("ascii")),
    ]
    if close:
        # The rest of an oversized upload is not read: the connection ends with this answer.
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
