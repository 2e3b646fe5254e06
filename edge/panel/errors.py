"""The API's refusals: :class:`ApiError` and the text safe to quote back in an error body."""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any, Final

from edge.panel import models as m

SHOWN_MAX: Final = 64  # characters of a refused value quoted back in an error
_BIG: Final = 10**18

# The error answers of the commands, for the OpenAPI document.
COMMAND_ERRORS: Final[dict[int | str, dict[str, Any]]] = {
    409: {"model": m.ErrorBody, "description": "the core refused the command; nothing changed"},
    413: {"model": m.ErrorBody, "description": "the body is over [panel] max_body_bytes"},
    415: {"model": m.ErrorBody, "description": "the body is not JSON"},
    422: {"model": m.ErrorBody, "description": "a field is not valid; nothing changed"},
    503: {"model": m.ErrorBody, "description": "the gateway cannot take commands right now"},
}
SUPERVISOR_ERRORS: Final[dict[int | str, dict[str, Any]]] = {
    **COMMAND_ERRORS,
    401: {"model": m.ErrorBody, "description": "no supervisor session: log in with the PIN"},
}


class ApiError(Exception):
    """Answered as ``status`` with an :class:`~edge.panel.models.ErrorBody`."""

    def __init__(self, status: int, body: m.ErrorBody, headers: dict[str, str] | None = None):
        super().__init__(body.message)
        self.status = status
        self.body = body
        self.headers = headers


def unavailable(why: str) -> m.ErrorBody:
    return m.ErrorBody(code="unavailable", message=f"{why}; nothing was done, try again")


def safe_text(value: str, limit: int | None = None) -> str:
    """Safe to send as UTF-8 JSON (an unpaired surrogate as its escape); cut at ``limit``."""
    if limit is not None and len(value) > limit:
        value = value[:limit] + "..."
    return value.encode("utf-8", "backslashreplace").decode("utf-8")


def scalar(value: object) -> str | int | float | bool | None:
    """``value`` as an error body's ``value``: JSON can carry it and it stays short."""
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
    return safe_text(value if isinstance(value, str) else str(value))
