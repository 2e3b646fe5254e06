"""Building a relay from its configuration, and running it until SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from pathlib import Path
from urllib.parse import unquote

from edge.relay import d365, files, orders_d365, orders_files, orders_sap, sap
from edge.relay.config import LedgerSection, RelayConfig
from edge.relay.db import SqliteDb
from edge.relay.erp import ErpAdapter
from edge.relay.ledger import Ledger
from edge.relay.orders import OrderSource
from edge.relay.service import Relay


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


async def run_relay(cfg: RelayConfig) -> None:
    """Serve until SIGTERM or SIGINT; then stop cleanly (offline state, claims given back by
    their leases)."""
    erp = build_erp(cfg)
    ledger = await open_ledger(cfg.ledger)
    relay = Relay(cfg, ledger, erp, orders=build_source(cfg))
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, task.cancel if task else (lambda: None))
    try:
        await relay.run()
    except asyncio.CancelledError:
        pass
    finally:
        await ledger.close()
