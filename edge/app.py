"""Wiring: config in, store and engine opened, tasks supervised, a clean stop on SIGTERM.

All long-running tasks run in one ``asyncio.TaskGroup``, each under a supervisor: a task that
fails is logged with its name and error, the others are stopped in order (the engine commits
what is queued), and :func:`run_gateway` raises :class:`ComponentFailed`, so the process exits
non-zero and systemd restarts it, rather than limping on half alive. A task that ends by itself
is logged too.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Coroutine
from typing import Any

import structlog

from edge import systemd
from edge.clock import TimeSource
from edge.config import GatewayConfig, rules_from_config
from edge.engine import Engine
from edge.errors import ComponentFailed
from edge.metrics import MetricsSources
from edge.sources.registry import SourceTask, build_sources
from edge.store.retention import RetentionPolicy
from edge.store.store import Store
from edge.sync import messages

log = structlog.get_logger("edge.app")

Component = Callable[[Engine], Coroutine[Any, Any, None]]


async def open_engine(
    cfg: GatewayConfig, *, new_database: bool = False, time_source: TimeSource | None = None
) -> Engine:
    """The engine on the configured store; ``time_source`` is where its clock reads time (the
    computer's clocks unless given)."""
    store = Store(cfg.store.path, synchronous=cfg.store.synchronous, new_database=new_database)
    return await Engine.open(
        store,
        rules_from_config(cfg),
        time_source=time_source,
        batch_window_ms=cfg.engine.batch_window_ms,
        max_batch=cfg.engine.max_batch,
        outbound=messages,
        historian_interval_ms=cfg.mqtt.historian_interval_s * 1000,
    )


async def run_gateway(
    cfg: GatewayConfig,
    *,
    components: tuple[Component, ...] = (),
    stop: asyncio.Event | None = None,
    engine: Engine | None = None,
    new_database: bool = False,
    time_source: TimeSource | None = None,
) -> Engine:
    """Run until ``stop`` is set or SIGTERM/SIGINT arrives; return the (closed) engine.

    Raises :class:`ComponentFailed` (after the clean stop) when a component failed."""
    stop = stop or asyncio.Event()
    failures: list[str] = []

    def supervised(name: str, work: Coroutine[Any, Any, None]) -> Coroutine[Any, Any, None]:
        async def supervisor() -> None:
            try:
                await work
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures.append(f"{name}: {exc!r}")
                log.error(
                    "a component failed; the gateway stops so that it is started again",
                    component=name,
                    error=repr(exc),
                    exc_info=exc,
                )
                stop.set()
                return
            if not stop.is_set():
                log.warning("a component ended by itself", component=name)

        return supervisor()

    loop = asyncio.get_running_loop()
    # systemd (Type=notify): READY=1 once running, WATCHDOG=1 while the engine is alive,
    # STOPPING=1 on the way out. Without $NOTIFY_SOCKET all of it does nothing.
    notifier = systemd.Notifier.from_env()
    watchdog_s = systemd.watchdog_interval()

    stopping_sent = False

    def say_stopping() -> None:
        nonlocal stopping_sent
        if not stopping_sent:
            stopping_sent = True
            notifier.stopping("stopping: committing what is queued")

    def on_signal() -> None:
        say_stopping()
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, on_signal)
    engine = engine or await open_engine(cfg, new_database=new_database, time_source=time_source)
    sources = build_sources(cfg, engine)
    for source in sources:

        async def run_source(_: Engine, source: SourceTask = source) -> None:
            await source.run()

        components = (*components, run_source)
    if cfg.operator.buttons or cfg.operator.stacklight is not None:
        from edge.operator import operator_components

        components = (*components, *operator_components(cfg, sources))

    def links() -> dict[str, str]:
        return {source.link: source.status() for source in sources}

    metrics = MetricsSources(
        links=links, adapters=lambda: {s.link: s.adapter for s in sources if s.adapter}
    )
    if cfg.retention.enabled or cfg.retention.min_free_mb > 0:
        # Checkpoints and retention, and the disk watermark (also without retention).
        policy = retention_policy(cfg)

        async def retention(_: Engine) -> None:
            await engine.maintain(policy)

        components = (*components, retention)
    if cfg.report.drift_every_days > 0:
        from edge.report import drift_schedule

        async def drift_review(_: Engine) -> None:
            await drift_schedule(cfg, engine)

        components = (*components, drift_review)
    if cfg.mqtt.enabled:
        from edge.sync.service import build_sync

        sync = build_sync(cfg, engine, links=links)
        metrics.sync = sync

        async def mqtt_sync(_: Engine) -> None:
            await sync.run()

        components = (*components, mqtt_sync)
    scan_log = None
    if cfg.scanner.enabled:
        from edge.operator.scanner import ScanLog, ScanStation

        scan_log = ScanLog()
        station = ScanStation(cfg, engine, scan_log)

        async def scanner(_: Engine) -> None:
            await station.run()

        components = (*components, scanner)
    if cfg.panel.enabled:
        from edge.panel.server import build_panel

        panel = build_panel(cfg, engine, metrics)
        if scan_log is not None:
            panel.hub.attach_scans(scan_log)

        async def operator_panel(_: Engine) -> None:
            await panel.run()

        components = (*components, operator_panel)
    log.info(
        "gateway started",
        edge_id=cfg.gateway.edge_id,
        work_center=cfg.gateway.work_center,
        db=str(cfg.store.path),
        boot_seq=engine.boot_seq,
    )
    try:
        async with asyncio.TaskGroup() as tg:
            engine_task = tg.create_task(
                supervised("engine", engine.run(cfg.engine.tick_interval_s)), name="engine"
            )
            others: list[asyncio.Task[None]] = []
            for component in components:
                name = getattr(component, "__name__", "component")
                others.append(tg.create_task(supervised(name, component(engine)), name=name))
            stopper = tg.create_task(stop.wait(), name="stop")
            waiting: set[asyncio.Task[Any]] = {engine_task, stopper, *others}
            await asyncio.sleep(0)  # let every component take its first step
            notifier.ready(_status(engine))
            if watchdog_s is not None:
                liveness = systemd.EngineLiveness(engine, engine_task, stall_s=watchdog_s / 2)
                others.append(
                    tg.create_task(
                        supervised(
                            "watchdog",
                            systemd.watchdog_loop(
                                notifier, liveness, watchdog_s, status=lambda: _status(engine)
                            ),
                        ),
                        name="watchdog",
                    )
                )
            while waiting:
                done, waiting = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                if stopper in done or engine_task in done:
                    break
            say_stopping()
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
        notifier.close()
        log.info("gateway stopped", journaled=engine.stats.journaled)
    if failures:
        raise ComponentFailed(
            f"the gateway stopped because a component failed ({'; '.join(failures)}); "
            "systemd starts it again (see the log for the details)"
        )
    return engine


def retention_policy(cfg: GatewayConfig) -> RetentionPolicy:
    r = cfg.retention
    return RetentionPolicy(
        enabled=r.enabled,
        checkpoint_interval_s=r.checkpoint_interval_s,
        checkpoint_journal_rows=r.checkpoint_journal_rows,
        journal_days=r.journal_days,
        outbox_days=r.outbox_days,
        command_id_days=r.command_id_days,
        batch_rows=r.batch_rows,
        vacuum_pages=r.vacuum_pages,
        export_dir=r.export_dir,
        export_prefix=f"edge-{cfg.gateway.edge_id}",
        export_max_bytes=r.export_max_bytes,
        export_keep_files=r.export_keep_files,
        min_free_mb=r.min_free_mb,
        disk_check_s=r.disk_check_s,
        finished_in_memory_h=r.finished_in_memory_h,
        finished_in_memory_max=r.finished_in_memory_max,
        finished_days=r.finished_days,
    )


def _status(engine: Engine) -> str:
    """The one-line STATUS= that ``systemctl status edge-gateway`` shows."""
    s = engine.stats
    return (
        f"running: {s.journaled} inputs journaled, {engine.queue_depth} queued, "
        f"boot {engine.boot_seq}"
    )
