"""Wiring: config in, store and engine opened, tasks supervised, a clean stop on SIGTERM.

All long-running tasks run in one ``asyncio.TaskGroup``: if one fails, the others are cancelled
and the process exits non-zero, so systemd restarts it, rather than limping on half alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Coroutine
from typing import Any

import structlog

from edge.config import GatewayConfig, rules_from_config
from edge.engine import Engine
from edge.store.store import Store

log = structlog.get_logger("edge.app")

Component = Callable[[Engine], Coroutine[Any, Any, None]]


async def open_engine(cfg: GatewayConfig) -> Engine:
    store = Store(cfg.store.path, synchronous=cfg.store.synchronous)
    return await Engine.open(
        store,
        rules_from_config(cfg),
        batch_window_ms=cfg.engine.batch_window_ms,
        max_batch=cfg.engine.max_batch,
    )


async def run_gateway(
    cfg: GatewayConfig,
    *,
    components: tuple[Component, ...] = (),
    stop: asyncio.Event | None = None,
    engine: Engine | None = None,
) -> Engine:
    """Run until ``stop`` is set or SIGTERM/SIGINT arrives; return the (closed) engine."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    engine = engine or await open_engine(cfg)
    if cfg.mqtt.enabled:
        from edge.sync.service import build_sync

        sync = build_sync(cfg, engine)

        async def mqtt_sync(_: Engine) -> None:
            await sync.run()

        components = (*components, mqtt_sync)
    log.info(
        "gateway started",
        edge_id=cfg.gateway.edge_id,
        work_center=cfg.gateway.work_center,
        db=str(cfg.store.path),
        boot_seq=engine.store.boot_seq,
    )
    try:
        async with asyncio.TaskGroup() as tg:
            engine_task = tg.create_task(engine.run(cfg.engine.tick_interval_s), name="engine")
            others: list[asyncio.Task[None]] = [
                tg.create_task(component(engine), name=getattr(component, "__name__", "component"))
                for component in components
            ]
            stopper = tg.create_task(stop.wait(), name="stop")
            waiting: set[asyncio.Task[Any]] = {engine_task, stopper, *others}
            while waiting:
                done, waiting = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                if stopper in done or engine_task in done:
                    break
            # Sources first, so nothing new arrives; the engine then commits what is queued.
            for task in others:
                task.cancel()
            stopper.cancel()
            engine_task.cancel()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
        await engine.close()
        log.info("gateway stopped", journaled=engine.stats.journaled)
    return engine
