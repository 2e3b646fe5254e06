"""The ``[scanner]`` table: which scanner, how it is read, and what its plain codes look like.

::

    [scanner]
    enabled = true
    kind = "serial"                 # or "hid" (a USB scanner acting as a keyboard, via evdev)
    device = "/dev/serial/by-id/usb-Datalogic_Scanner-if00"
    baudrate = 9600
    terminator = "any"              # "cr", "lf", "crlf" or "any" of them
    layout = "de"                   # hid only: the keyboard layout the scanner is set to
    fnc1 = ["<GS>", "^"]            # what the scanner sends instead of ASCII 29
    operation = 'OP(?P<order>\\d{1,12})/(?P<operation>\\d{4})'
    badge = 'B(?P<badge>\\d{4,10})'
    component = 'M(?P<material>[A-Z0-9-]{1,18})\\+(?P<batch>[A-Z0-9]{1,10})'

A pattern is matched against the whole code (after a symbology identifier such as ``]C0``);
``operation`` needs the named groups ``order`` and ``operation``, ``component`` ``material``
and ``batch`` (``quantity`` optional), ``badge`` may name the id with ``badge`` (else the whole
code is the id). GS1 element strings need no pattern. The model is standalone (it imports
nothing of edge.config) so edge.config can take it in as a section.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from edge.domain.gs1 import DEFAULT_FNC1, MAX_SCAN, PlainPattern

__all__ = [
    "BAUDRATES",
    "ScannerConfig",
    "ScannerConfigError",
    "load_scanner",
]

BAUDRATES = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600)
_REQUIRED_GROUPS = {
    "operation": ("order", "operation"),
    "component": ("material", "batch"),
    "badge": (),
}
_KEY_MAX = 0x2FF  # KEY_MAX in linux/input-event-codes.h


class ScannerConfig(BaseModel):
    """``[scanner]``: off unless ``enabled``; then ``device`` is needed."""

    model_config = ConfigDict(
        extra="forbid", strict=True, allow_inf_nan=False, frozen=True, str_strip_whitespace=True
    )

    enabled: bool = False
    kind: Literal["serial", "hid"] = "serial"
    device: Annotated[str, Field(max_length=255)] = ""
    # serial
    baudrate: int = 9600
    terminator: Literal["cr", "lf", "crlf", "any"] = "any"
    read_timeout_s: Annotated[float, Field(ge=0.05, le=10)] = 0.5
    reconnect_s: Annotated[float, Field(ge=0.05, le=60)] = 1.0
    reconnect_max_s: Annotated[float, Field(ge=0.05, le=600)] = 30.0
    # hid
    layout: Literal["us", "de"] = "us"
    grab: bool = True
    end_on_tab: bool = False
    separator_keys: list[Annotated[int, Field(ge=1, le=_KEY_MAX)]] = Field(
        default_factory=list, max_length=8
    )
    # both
    max_length: Annotated[int, Field(ge=1, le=MAX_SCAN)] = 256
    fnc1: list[str] = Field(default_factory=lambda: list(DEFAULT_FNC1), max_length=8)
    operation: Annotated[str, Field(min_length=1, max_length=300)] | None = (
        r"OP(?P<order>\d{1,12})/(?P<operation>\d{4})"
    )
    badge: Annotated[str, Field(min_length=1, max_length=300)] | None = r"B(?P<badge>\d{4,10})"
    component: Annotated[str, Field(min_length=1, max_length=300)] | None = None
    refuse_expired: bool = True

    @field_validator("device")
    @classmethod
    def _device_path(cls, value: str) -> str:
        if value and not value.startswith("/"):
            raise ValueError(f"device {value!r} must be an absolute path such as /dev/ttyACM0")
        if any(c.isspace() or not c.isprintable() for c in value):
            raise ValueError(f"device {value!r} has spaces or control characters")
        return value

    @field_validator("baudrate")
    @classmethod
    def _baudrate(cls, value: int) -> int:
        if value not in BAUDRATES:
            raise ValueError(f"baudrate {value} is none of {', '.join(map(str, BAUDRATES))}")
        return value

    @field_validator("fnc1")
    @classmethod
    def _fnc1(cls, value: list[str]) -> list[str]:
        for sub in value:
            if not 1 <= len(sub) <= 8:
                raise ValueError(f"fnc1 substitute {sub!r} must be 1-8 characters")
            if any(c.isdigit() for c in sub) or sub.isalpha() or sub.isspace():
                raise ValueError(
                    f"fnc1 substitute {sub!r} would be mistaken for data: it must not hold "
                    "digits, be letters only or be blank"
                )
        return value

    @field_validator("operation", "badge", "component")
    @classmethod
    def _pattern(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        field = info.field_name or "pattern"
        try:
            compiled = re.compile(value)
        except (re.error, OverflowError, RecursionError) as exc:  # a{99999999999} overflows
            raise ValueError(f"{field} pattern {value!r} is no regular expression: {exc}") from None
        missing = [g for g in _REQUIRED_GROUPS[field] if g not in compiled.groupindex]
        if missing:
            names = ", ".join(f"(?P<{g}>...)" for g in missing)
            raise ValueError(f"{field} pattern {value!r} needs the named group(s) {names}")
        if compiled.fullmatch("") is not None:
            raise ValueError(f"{field} pattern {value!r} matches an empty code")
        return value

    @model_validator(mode="after")
    def _whole(self) -> ScannerConfig:
        if self.enabled and not self.device:
            raise ValueError("device is needed when the scanner is enabled")
        if self.reconnect_max_s < self.reconnect_s:
            raise ValueError(
                f"reconnect_max_s {self.reconnect_max_s} is below reconnect_s {self.reconnect_s}"
            )
        return self

    def patterns(self) -> tuple[PlainPattern, ...]:
        """The plain-code patterns for :func:`edge.domain.gs1.parse`, in the order tried."""
        named = [("operation", self.operation), ("badge", self.badge)]
        named.append(("component", self.component))
        return tuple(PlainPattern.of(kind, p) for kind, p in named if p is not None)


class ScannerConfigError(ValueError):
    """The ``[scanner]`` table is wrong: ``problems`` holds one line per field."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def load_scanner(table: Mapping[str, object]) -> ScannerConfig:
    """The ``[scanner]`` table as read from TOML; :class:`ScannerConfigError` naming each field
    (``scanner.baudrate: ...``) and the value at fault."""
    try:
        return ScannerConfig.model_validate(dict(table))
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False):
            msg = err["msg"].removeprefix("Value error, ")
            loc = err["loc"] or (msg.split(" ", 1)[0],)  # the whole model's checks name the field
            where = ".".join(str(p) for p in ("scanner", *loc))
            value = err.get("input")
            # our own checks name the value already; pydantic's own do not
            own = err["type"] == "value_error" or isinstance(value, Mapping)
            problems.append(f"{where}: {msg}" + ("" if own else f" (got {value!r})"))
        raise ScannerConfigError(problems) from None
