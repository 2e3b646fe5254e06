"""The panel's one way into the engine: reads, commands and the commit count.

Routes never touch the engine; they ask the :class:`PanelHub` (given to them as a FastAPI
dependency, :mod:`edge.panel.deps`), so what the panel needs of the engine is all here.
"""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final

import structlog
from fastapi import Request

from edge.aio import wait_set
from edge.config import GatewayConfig
from edge.domain.clock import Instant
from edge.domain.crew import actor_for
from edge.domain.events import Event, EventType, Outcome
from edge.domain.inputs import Input
from edge.domain.model import OperationKey
from edge.errors import DuplicateCommand, EngineStopped, StoreError
from edge.metrics import MetricsSources
from edge.metrics import render as render_metrics
from edge.panel import models as m
from edge.panel.auth import SupervisorAuth
from edge.panel.errors import ApiError, scalar, unavailable
from edge.panel.history import ConfirmationHistory, change_notice
from edge.panel.view import (
    ViewMeta,
    active_out,
    confirmation_out,
    operation_out,
    shift_view,
    snapshot,
    stop_out,
)
from edge.ports import PanelFace
from edge.store.store import OutboxRow

if TYPE_CHECKING:
    from edge.operator.scanner import ScanLog

log = structlog.get_logger("edge.panel")

HERE: Final = Path(__file__).resolve().parent
STATIC: Final = HERE / "static"
I18N: Final = HERE / "i18n"
HEARTBEAT_S: Final = 5.0
MIN_PUSH_INTERVAL_S: Final = 0.25


def assets_version() -> str:
    """A digest of the panel's files: a page loaded with other files reloads itself."""
    digest = hashlib.sha256()
    for path in sorted([*STATIC.rglob("*"), *I18N.rglob("*")]):
        if path.is_file():
            digest.update(path.relative_to(HERE).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


class PanelHub:
    """Counts commits and wakes the event streams; builds snapshots for everyone."""

    def __init__(self, engine: PanelFace, cfg: GatewayConfig, auth: SupervisorAuth) -> None:
        self.engine = engine
        self.cfg = cfg
        self.auth = auth
        self.history = ConfirmationHistory(cfg.store.path)
        self.revision = 0
        self.assets = assets_version()
        self.closing = False
        self._changed = asyncio.Event()
        self._inflight: dict[str, asyncio.Future[m.CommandResult]] = {}
        # A commit hook rather than an event listener: counts change the numbers on the panel
        # without any event, and every commit that journaled something may have changed them.
        engine.add_commit_hook(self.on_commit)
        # The latest change central made to an active operation, per operation: from each
        # commit's events, and those before the start from the stored events at the first
        # snapshot (for the operations active then).
        self._notices: dict[str, m.ChangeNotice] = {}
        self._stored_notices_read = False
        self._scans: ScanLog | None = None
        engine.add_listener(self.on_events)

    def on_events(self, events: Sequence[Event]) -> None:
        for event in events:
            if event.type is EventType.OPERATION_CHANGED and event.op and event.data.get("active"):
                notice = change_notice(event.op, event.at.wall_ms, dict(event.data))
                if notice is not None:
                    self._notices[event.op] = notice

    def on_commit(self, _: Sequence[OutboxRow]) -> None:
        self.revision += 1
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def attach_scans(self, scans: ScanLog) -> None:
        """Show the scanner's results ([scanner]): the newest goes with every snapshot, and a
        new one (also a refused scan, which commits nothing) wakes the open pages."""
        self._scans = scans
        scans.add_listener(lambda _: self.on_commit(()))

    def close(self) -> None:
        """End every event stream (the server is shutting down)."""
        self.closing = True
        self._changed.set()

    async def wait_change(self, revision: int, timeout: float) -> None:
        if self.revision != revision or self.closing:
            return
        await wait_set(self._changed, timeout)

    @property
    def operator(self) -> str:
        """Who a tap acts as: the operator who logged in last by badge (edge.domain.crew),
        else the panel's ``operator:<[panel] operator_id>``."""
        return actor_for(
            self.engine.work_center.header.crew, f"operator:{self.cfg.panel.operator_id}"
        )

    def now(self) -> Instant:
        """The gateway's clock, to stamp a command's input with."""
        now: Instant = self.engine.now()
        return now

    # ------------------------------------------------------------------ reads
    # engine.work_center each time, never a kept reference: the engine replaces it after an
    # internal error.

    def snapshot(self) -> m.PanelState:
        panel = self.cfg.panel
        meta = ViewMeta(
            boot=self.engine.boot_seq,
            revision=self.revision,
            assets=self.assets,
            language=panel.language,
            operator=self.operator,
            variance_reasons=tuple(panel.variance_reasons),
            supervisor_configured=self.auth.configured,
            disk_low=self.engine.retention.disk_low,
        )
        state = snapshot(self.engine.work_center, self.engine.now(), meta)
        active = {op.op for op in state.active}
        if not self._stored_notices_read:
            self._stored_notices_read = True
            try:
                stored = self.history.latest_changes(sorted(active))
            except sqlite3.Error as exc:
                log.warning("earlier changes by central not read", error=str(exc))
            else:
                self._notices = {**stored, **self._notices}  # what came since is newer
        notices = [n for op, n in self._notices.items() if op in active]
        update: dict[str, object] = {"notices": notices} if notices else {}
        latest = self._scans.latest() if self._scans is not None else None
        if latest is not None:
            update["scan"] = m.ScanOut(
                seq=latest.seq, at=latest.at, code=latest.code, ok=latest.ok, message=latest.message
            )
        return state.model_copy(update=update) if update else state

    def active(self) -> list[m.ActiveOperation]:
        wc = self.engine.work_center
        now = self.engine.now()
        return [active_out(wc, op, now) for op in wc.active]

    def shift(self) -> m.ShiftView | None:
        return shift_view(self.engine.work_center, self.engine.now())

    def operation(self, key: OperationKey) -> m.OperationOut | None:
        """One operation (with its time elements while active), None if there is no such."""
        op = self.engine.work_center.operations.get(key)
        if op is None:
            return None
        if op.status.active:
            return active_out(self.engine.work_center, op, self.engine.now())
        return operation_out(op)

    def stop(self, stop_id: str) -> m.StopOut | None:
        found = self.engine.work_center.stops.get(stop_id)
        if found is None:
            return None
        return stop_out(self.engine.work_center, found, self.engine.now())

    def confirmations(self) -> list[m.ConfirmationOut]:
        """Newest first."""
        wc = self.engine.work_center
        return [confirmation_out(wc, c) for c in reversed(wc.confirmations.values())]

    async def confirmation_history(self, conf_id: str) -> m.ConfirmationHistoryOut | None:
        """How ``conf_id`` got where it is, from the stored events; None if there is no such."""
        op, _, _ = conf_id.rpartition("#")
        try:
            entries = await asyncio.to_thread(self.history.read, op, conf_id)
        except sqlite3.Error as exc:
            log.warning("confirmation history not read", conf_id=conf_id, error=str(exc))
            raise ApiError(503, unavailable(f"the history cannot be read now ({exc})")) from None
        if not entries and conf_id not in self.engine.work_center.confirmations:
            return None
        return m.ConfirmationHistoryOut(conf_id=conf_id, entries=entries)

    def health(self) -> m.Health:
        engine = self.engine
        return m.Health(
            ok=engine.running,
            boot=engine.boot_seq,
            revision=self.revision,
            engine_healthy=engine.healthy,
            disk_low=engine.retention.disk_low,
        )

    async def metrics(self, sources: MetricsSources) -> str:
        """The Prometheus text exposition of the engine and ``sources``."""
        return await render_metrics(self.engine, sources)

    # ------------------------------------------------------------------ commands

    async def command(
        self, name: str, command_id: str, inp: Input, op: str | None = None
    ) -> m.CommandResult:
        """Submit ``inp`` once for ``command_id``; answer after the commit."""
        running = self._inflight.get(command_id)
        if running is not None:
            # The same tap twice while the first is still being committed: share its answer.
            result = await asyncio.shield(running)
            return result.model_copy(update={"duplicate": True})
        future: asyncio.Future[m.CommandResult] = asyncio.get_running_loop().create_future()
        self._inflight[command_id] = future
        try:
            result = await self._submit(name, command_id, inp, op)
        except ApiError as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: nobody else may be waiting
            raise
        except BaseException as exc:
            future.set_exception(ApiError(503, unavailable("the command was interrupted")))
            future.exception()
            raise exc
        else:
            future.set_result(result)
            return result
        finally:
            del self._inflight[command_id]

    async def _submit(
        self, name: str, command_id: str, inp: Input, op: str | None
    ) -> m.CommandResult:
        fields: dict[str, object] = {"command": name, "command_id": command_id}
        if op:
            key = OperationKey.parse(op)
            fields.update(order_id=key.order, operation=key.operation, split=key.split)
        fields["actor"] = getattr(inp, "actor", None)
        try:
            outcome: Outcome = await self.engine.submit(inp, command_id=command_id)
        except DuplicateCommand:
            log.info("panel command already carried out", **fields)
            return m.CommandResult(
                command_id=command_id, duplicate=True, events=[], state=self.snapshot()
            )
        except EngineStopped:
            log.warning("panel command while the gateway stops", **fields)
            raise ApiError(503, unavailable("the gateway is stopping")) from None
        except StoreError as exc:
            log.error("panel command not stored", error=str(exc), **fields)
            raise ApiError(
                503,
                m.ErrorBody(
                    code="store_error",
                    message=f"the gateway could not save it ({exc}); nothing was done",
                ),
            ) from None
        rejection = outcome.rejection
        if rejection is not None:
            log.info(
                "panel command rejected",
                code=rejection.code.value,
                reason=rejection.message,
                **fields,
            )
            raise ApiError(
                409,
                m.ErrorBody(
                    code=rejection.code.value,
                    message=rejection.message,
                    field=rejection.field,
                    value=scalar(rejection.value),
                    state=rejection.state,
                    action=rejection.action,
                ),
            )
        events = [e.type.value for e in outcome.events]
        log.info("panel command done", events=events, **fields)
        return m.CommandResult(
            command_id=command_id, duplicate=False, events=events, state=self.snapshot()
        )

    # ------------------------------------------------------------------ event stream

    async def stream(self, request: Request) -> AsyncIterator[str]:
        yield "retry: 2000\n\n"  # the browser reconnects after 2 s when the daemon is gone
        sent = -1
        while not self.closing:
            revision = self.revision
            state = self.snapshot()
            sent = revision
            yield f"event: state\nid: {state.boot}.{revision}\ndata: {state.model_dump_json()}\n\n"
            await asyncio.sleep(MIN_PUSH_INTERVAL_S)
            if await request.is_disconnected():
                return
            await self.wait_change(sent, HEARTBEAT_S)
