"""The gateway's own exception types.

Each outside library raises its own errors (sqlite3, asyncua, pymodbus, paho-mqtt, pydantic).
They are translated once, at the adapter boundary that talks to that library, into one of the
types below, so the engine and the supervisor decide what to do (retry, mark a source down,
refuse to start) on a small closed set of types instead of on every library's exceptions.
"""

from __future__ import annotations

import functools
import re
import reprlib
from collections.abc import Iterable
from typing import Any, Final, NamedTuple

__all__ = [
    "MISSING",
    "ComponentFailed",
    "ConfigError",
    "ConfigProblem",
    "DuplicateCommand",
    "EngineStopped",
    "GatewayError",
    "SourceUnavailable",
    "StoreError",
    "StoreRefused",
]


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose.

    Anything else reaching the supervisor is a bug; a GatewayError is an expected condition with a
    message fit for the maintenance staff who read the log.
    """


class _Missing:
    """Type of MISSING: the value of a required field that was not given at all."""

    def __repr__(self) -> str:
        return "<missing>"

    def __reduce__(self) -> str:
        return "MISSING"  # unpickles to the module's singleton, so `is MISSING` still holds


MISSING: Final = _Missing()
"""Pass as a problem's value when the field is absent; it is then rendered without `= value`."""


class ConfigProblem(NamedTuple):
    """One thing wrong in a configuration: where, what was given, and why it is wrong."""

    field_path: str
    value: object
    message: str


# A value under a field whose last path segment has one of these words (split at _ and -) is never
# shown: error messages end up in logs, and logs must not carry secrets.
_SECRET_WORDS: Final = frozenset(
    {"password", "passwd", "pwd", "secret", "token", "passphrase", "pin"}
)

_repr = reprlib.Repr()
_repr.maxstring = 240  # whole file paths; still bounded for a pasted blob
_repr.maxother = 60


def _is_secret(field_path: str) -> bool:
    last = field_path.rsplit(".", 1)[-1].lower()
    words = set(re.split(r"[_\-]", last))
    return bool(words & _SECRET_WORDS) or "password" in last or "private_key" in last


class ConfigError(GatewayError, ValueError):
    """The configuration is invalid; the gateway refuses to start until it is fixed.

    Carries every problem found (not only the first), so one run of the config check tells the
    maintainer everything to fix. It is also a ValueError, so code that validates values generally
    can catch it that way.

        >>> print(ConfigError([("sources.press1.kind", "x", "must be one of good, scrap, total")]))
        invalid configuration (1 problem):
          sources.press1.kind = 'x': must be one of good, scrap, total
    """

    problems: list[ConfigProblem]
    source: str | None

    def __init__(
        self,
        problems: Iterable[tuple[str, object, str]],
        *,
        source: str | None = None,
    ) -> None:
        """`problems` are (field_path, value, message); `source` names the file, if there is one."""
        self.problems = [ConfigProblem(*p) for p in problems]
        self.source = source
        # args hold the rendered (redacted) text, so repr() and tracebacks show no secret values.
        super().__init__(self._render_all())

    def __str__(self) -> str:
        return self._render_all()

    def __reduce__(self) -> tuple[Any, ...]:
        return (functools.partial(type(self), source=self.source), (self.problems,))

    def _render_all(self) -> str:
        n = len(self.problems)
        where = f" in {self.source}" if self.source else ""
        head = f"invalid configuration{where} ({n} problem{'' if n == 1 else 's'}):"
        return "\n".join([head, *(self._render(p) for p in self.problems)])

    @staticmethod
    def _render(problem: ConfigProblem) -> str:
        if problem.value is MISSING:
            return f"  {problem.field_path}: {problem.message}"
        shown = "<redacted>" if _is_secret(problem.field_path) else _repr.repr(problem.value)
        return f"  {problem.field_path} = {shown}: {problem.message}"


class StoreError(GatewayError):
    """The local SQLite store failed (disk full, I/O error, corruption, schema too new).

    Raised only by edge.store, which translates sqlite3 errors at its boundary, so the engine can
    stop accepting inputs safely: nothing is acknowledged that was not durably written.
    """


class StoreRefused(StoreError):
    """The daemon will not run on this database until a person decides (lost, damaged, or
    unusable): a restart cannot help, so the process exits with its own code, which systemd
    does not restart."""


class ComponentFailed(GatewayError):
    """A long-running part of the daemon (a source, the sync, the panel) ended with an error:
    the daemon stopped cleanly so that its supervisor starts it again."""


class SourceUnavailable(GatewayError):
    """A machine signal source cannot be reached (OPC UA, Modbus module, GPIO, counter board).

    Raised by the source adapters in place of their library's connection errors; the engine records
    the source as down and the adapter reconnects. No count is lost: counters are absolute and the
    delta is taken when the source comes back.
    """


class EngineStopped(GatewayError):
    """A submission after the engine's writer stopped (shutdown): nothing was applied."""


class DuplicateCommand(GatewayError):
    """An operator command whose id was already committed: it acted once and will not again."""

    def __init__(self, command_id: str) -> None:
        super().__init__(f"command {command_id!r} was already carried out")
        self.command_id = command_id
