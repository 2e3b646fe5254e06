"""Structured logging for the gateway (structlog), with the standard library routed through it.

Call `configure_logging()` once at start-up (the CLI does); calling it again replaces the previous
setup, so tests may call it freely. Then log with `get_logger(__name__)`:

    log = get_logger(__name__)
    log.info("order_dispatched", order="4711", operation="0010")

Output goes to stderr: one JSON object per line when stderr is not a terminal (systemd's journal,
log shippers), coloured key=value lines for a person at a terminal. Libraries that log through the
standard `logging` module (asyncua, pymodbus, aiosqlite, ...) come out in the same format, with the
same context variables (`structlog.contextvars.bind_contextvars`) merged in.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Final, TextIO

# structlog looks for optional helpers when it is imported: rich (pretty tracebacks for the
# console renderer, about 4 MB with pygments) and greenlet (for its deprecated threadlocal
# module). Either may be installed beside the gateway as some other tool's dependency. The
# daemon's own output (JSON lines to the journal, or plain key=value lines) needs neither, so
# unless a person watches stderr at a terminal structlog is imported with both hidden from it.
# Nothing else is affected: they are importable again right after, for whoever needs them.
_OPTIONAL_FOR_STRUCTLOG: Final = ("rich", "greenlet")


def _import_structlog_lean() -> None:
    if "structlog" in sys.modules or sys.stderr is None or sys.stderr.isatty():
        return  # already imported, or a terminal, where rich's tracebacks are welcome
    hidden = [name for name in _OPTIONAL_FOR_STRUCTLOG if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]  # makes `import name` fail
    try:
        import structlog  # noqa: F401
    finally:
        for name in hidden:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]


_import_structlog_lean()

import structlog  # noqa: E402
from structlog.typing import Processor  # noqa: E402

__all__ = ["Logger", "configure_logging", "get_logger"]

# The logger every component holds (and may be handed, e.g. bound to its source's name).
Logger = structlog.stdlib.BoundLogger

_LEVELS: Final[dict[str, int]] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}

# Libraries that are chatty at INFO (every connect, session and subscription). Below our level
# they are raised to WARNING unless the gateway itself runs at DEBUG.
_NOISY_LIBRARIES: Final = ("asyncua", "pymodbus")


class _StderrHandler(logging.StreamHandler[TextIO]):
    """A stream handler that writes to whatever sys.stderr is at the time of each record.

    pytest's capture and other redirections replace sys.stderr after start-up; a handler that kept
    the original stream would write around them.
    """

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass  # always sys.stderr; see the class docstring


def _parse_level(level: str) -> int:
    try:
        return _LEVELS[level.strip().lower()]
    except KeyError:
        choices = ", ".join(k for k in _LEVELS if k != "warn")
        raise ValueError(f"unknown log level {level!r}: must be one of {choices}") from None


def configure_logging(level: str = "info", json: bool | None = None) -> None:
    """Set up structlog and the standard library's logging to render the same way, to stderr.

    `level` is one of debug, info, warning, error, critical (any case). `json` forces JSON lines
    (True) or console rendering (False); None picks JSON unless stderr is a terminal.
    Safe to call more than once: each call replaces the previous configuration.
    """
    numeric_level = _parse_level(level)
    if json is None:
        json = not sys.stderr.isatty()

    # Applied to every record, from structlog loggers and from plain stdlib loggers alike.
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]

    renderer: Processor
    final: list[Processor] = [structlog.stdlib.ProcessorFormatter.remove_processors_meta]
    if json:
        final.append(structlog.processors.format_exc_info)
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    final.append(renderer)

    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=final,
    )
    handler = _StderrHandler()
    handler.setFormatter(formatter)

    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _StderrHandler)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(numeric_level)

    for name in _NOISY_LIBRARIES:
        if numeric_level <= logging.DEBUG:
            logging.getLogger(name).setLevel(logging.NOTSET)  # inherit DEBUG from the root
        else:
            logging.getLogger(name).setLevel(max(logging.WARNING, numeric_level))

    logging.captureWarnings(True)

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # Not cached, so a later configure_logging() (or structlog.testing.capture_logs in a test)
        # also applies to loggers that module code created at import time.
        cache_logger_on_first_use=False,
    )


def get_logger(name: str | None = None, **initial_values: Any) -> structlog.stdlib.BoundLogger:
    """A typed structlog logger named `name` (use `__name__`), with optional bound values."""
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name, **initial_values)
    return logger
