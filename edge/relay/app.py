"""Building a relay from its configuration, and running it until SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from edge import systemd
from edge.logging import get_logger
from edge.relay import d365, files, orders_d365, orders_files, orders_sap, sap
from edge.relay.config import LedgerSection, RelayConfig
from edge.relay.db import SqliteDb
from edge.relay.erp import ErpAdapter
from edge.relay.ledger import Ledger
from edge.relay.orders import OrderSource
from edge.relay.service import Relay

log = get_logger(__name__)


def build_erp(cfg: RelayConfig) -> ErpAdapter:
    """The adapter of ``[erp] system``; a ValueError names a missing or unreadable secret."""
    settings = cfg.erp
    if isinstance(settings, sap.Settings):
        return sap.build(settings)
    if isinstance(settings, d365.Settings):
        return d365.build(settings)
    return files.build(settings)


def build_source(cfg: RelayConfig) -> OrderSource | None:
    """The order source of ``[dispatch.source]`` (None when orders down is off)."""
    settings = cfg.dispatch.source
    if not cfg.dispatch.enabled or settings is None:
        return None
    if isinstance(settings, orders_sap.Settings):
        return orders_sap.build(settings)
    if isinstance(settings, orders_d365.Settings):
        return orders_d365.build(settings)
    return orders_files.build(settings)


def sqlite_path(url: str) -> Path:
    """``sqlite:///relative.db`` or ``sqlite:////abs/path.db``."""
    return Path(unquote(url[len("sqlite:///") :]))


async def open_ledger(section: LedgerSection) -> Ledger:
    """The ledger of ``[ledger] url``: SQLite (the directory is made if missing) or
    PostgreSQL (needs the ``postgres`` extra)."""
    if section.url.startswith("sqlite:///"):
        path = sqlite_path(section.url)
        path.parent.mkdir(parents=True, exist_ok=True)
        return await Ledger(await SqliteDb(path).open()).open()
    from edge.relay.pg import PostgresDb

    password: str | None = None
    if section.password_file is not None:
        try:
            password = section.password_file.read_text().strip()
        except OSError as exc:
            raise ValueError(
                f"ledger.password_file = {str(section.password_file)!r}: cannot be read: "
                f"{exc.strerror}"
            ) from None
    try:
        conninfo = section.url
        if password is not None:
            from psycopg.conninfo import make_conninfo

            conninfo = make_conninfo(conninfo, password=password)
        db = PostgresDb(conninfo, pool_size=section.pool_size)
    except ImportError as exc:  # pragma: no cover - the extra is part of the dev install
        raise ValueError(
            f"ledger.url is PostgreSQL, but psycopg is not installed ({exc}); "
            "install edge-gateway[postgres]"
        ) from None
    await db.open()
    return await Ledger(db).open()


class LedgerLiveness:
    """Does the relay deserve its watchdog ping? Its task runs, and the ledger answers.

    :meth:`probe` asks the ledger a cheap question (the rows per state) every so often; a
    question that has had no answer for ``stall_s`` (half the watchdog's interval) means the
    relay is stuck (a connection that hangs after a network fault, a lock never given back)
    and a restart is what helps. A ledger that answers with an error (PostgreSQL down) is not
    a reason: a restart would not bring it back, and the relay retries on its own, as it does
    with the broker.
    """

    def __init__(
        self,
        ledger: Ledger,
        task: asyncio.Future[Any] | None,
        stall_s: float,
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ledger = ledger
        self.task = task
        self.stall_s = stall_s
        self._monotonic = monotonic
        self._asked_at: float | None = None  # a question without an answer since then
        self._failing: str | None = None  # the ledger's last error (logged when it changes)
        self.counts: dict[str, int] = {}

    async def probe(self) -> None:
        self._asked_at = self._monotonic()
        try:
            self.counts = await self.ledger.counts()
        except Exception as exc:  # any answer, even an error, is an answer
            error = str(exc) or type(exc).__name__
            if error != self._failing:
                log.warning("ledger_not_answering", error=error, watchdog="pings go on")
            self._failing = error
        else:
            if self._failing is not None:
                log.info("ledger_answering_again")
            self._failing = None
        finally:
            self._asked_at = None

    def problem(self) -> str | None:
        if self.task is not None and self.task.done():
            return "relay task ended"
        asked = self._asked_at
        if asked is not None and (waited := self._monotonic() - asked) > self.stall_s:
            return f"ledger stuck: a query has had no answer for {waited:.1f} s"
        return None


def status_line(relay: Relay, counts: dict[str, int]) -> str:
    """systemd's STATUS= of a running relay."""
    st = relay.stats
    waiting = sum(n for state, n in counts.items() if state not in ("posted", "rejected"))
    return (
        f"relay {relay.cfg.relay.name()}: {st.received} received, {st.posted} posted, "
        f"{st.rejected} rejected, {st.in_doubt} in doubt since start; {waiting} open in the ledger"
    )


async def _watch(
    notifier: systemd.Notifier, liveness: LedgerLiveness, relay: Relay, interval: float | None
) -> None:
    if interval is None:
        return
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(
            systemd.watchdog_loop(
                notifier,
                liveness,
                interval,
                status=lambda: status_line(relay, liveness.counts),
            )
        )
        while True:  # the probe may hang: that is what the watchdog loop looks at
            await liveness.probe()
            await asyncio.sleep(interval / 4)


async def run_relay(cfg: RelayConfig) -> None:
    """Serve until SIGTERM or SIGINT; then stop cleanly (offline state, claims given back by
    their leases). Under systemd (``Type=notify``): READY=1 once the ledger is open and the
    relay runs, a STATUS= line, WATCHDOG=1 while :class:`LedgerLiveness` finds no problem,
    STOPPING=1 at SIGTERM."""
    erp = build_erp(cfg)
    ledger = await open_ledger(cfg.ledger)
    relay = Relay(cfg, ledger, erp, orders=build_source(cfg))
    notifier = systemd.Notifier.from_env()
    main = asyncio.current_task()

    def stop() -> None:
        notifier.stopping(f"relay {cfg.relay.name()}: stopping")
        if main is not None:
            main.cancel()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop)
    serving = asyncio.create_task(relay.run(), name="relay")
    watchdog_s = systemd.watchdog_interval()
    stall_s = watchdog_s / 2 if watchdog_s is not None else cfg.relay.lease_s
    liveness = LedgerLiveness(ledger, serving, stall_s=stall_s)
    watching = asyncio.create_task(_watch(notifier, liveness, relay, watchdog_s), name="watchdog")
    try:
        notifier.ready(status_line(relay, {}))
        await serving
    except asyncio.CancelledError:
        serving.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await serving
    finally:
        watching.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watching
        await ledger.close()
        notifier.close()
