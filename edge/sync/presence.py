"""Retained presence: ``health`` (with a Last Will that flips it offline) and ``snapshot``.

A consumer that subscribes late learns at once whether the gateway is online, how far its
outbox is behind, and what runs at the work center now, without waiting for the next event.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

from edge import __version__
from edge.aio import wait_set, within
from edge.domain.events import Event
from edge.domain.kpis import kpis_payload
from edge.domain.model import OperationStatus
from edge.logging import Logger, get_logger
from edge.ports import PresenceFace
from edge.store.codec import dumps
from edge.sync.contract import (
    ActiveOperation,
    HealthBody,
    ShiftNowBody,
    SnapshotBody,
    gateway_last_will,
)
from edge.sync.mqtt import MqttLink, Will

HEALTH = "_mes_v1/health"
SNAPSHOT = "_mes_v1/snapshot"
KPI_NOW = "_mes_v1/kpi/current"
SNAPSHOT_DEBOUNCE_S = 0.5


def _ms() -> int:
    return time.time_ns() // 1_000_000


def last_will(root: str, edge_id: str) -> Will:
    """The Last Will the gateway connects with: the contract's (one definition), retained."""
    return Will(f"{root}/{HEALTH}", gateway_last_will(edge_id))


class Presence:
    def __init__(
        self,
        engine: PresenceFace,
        link: MqttLink,
        *,
        root: str,
        edge_id: str,
        interval_s: float = 30.0,
        links: Callable[[], dict[str, str]] | None = None,
        last_puback_ms: Callable[[], int | None] | None = None,
        relay_online: Callable[[], bool] | None = None,
        logger: Logger | None = None,
    ) -> None:
        self.engine = engine
        self.link = link
        self.root = root
        self.edge_id = edge_id
        self.interval_s = interval_s
        self._links = links or (dict)
        self._last_puback = last_puback_ms or (lambda: None)
        self._relay_online = relay_online
        self.log: Logger = logger or get_logger("edge.presence")
        self._started = time.monotonic()
        self._changed = asyncio.Event()
        engine.add_listener(self._on_events)
        link.add_on_connect(self._on_connect)

    def _on_events(self, _events: Sequence[Event]) -> None:
        self._changed.set()

    async def _on_connect(self, _session_present: bool) -> None:
        await self.publish_health()
        self.publish_snapshot()

    async def run(self) -> None:
        next_health = time.monotonic() + self.interval_s
        while True:
            timeout = max(0.0, next_health - time.monotonic())
            await wait_set(self._changed, timeout)
            if self._changed.is_set():
                await asyncio.sleep(SNAPSHOT_DEBOUNCE_S)  # a burst of events: one snapshot
                self._changed.clear()
                if self.link.connected.is_set():
                    self.publish_snapshot()
            if time.monotonic() >= next_health:
                next_health = time.monotonic() + self.interval_s
                if self.link.connected.is_set():
                    await self.publish_health()

    async def health(self, online: bool = True) -> HealthBody:
        depth = await self.engine.outbox_depth()
        oldest = await self.engine.outbox_oldest_ms()
        now = _ms()
        return HealthBody(
            online=online,
            edge_id=self.edge_id,
            boot_seq=self.engine.boot_seq,
            sw_version=__version__,
            uptime_s=round(time.monotonic() - self._started, 1),
            outbox_depth=depth,
            oldest_unacked_age_s=None if oldest is None else round((now - oldest) / 1000, 1),
            last_puback_ms=self._last_puback(),
            relay_online=self._relay_online() if self._relay_online else None,
            clock_trusted=self.engine.clock_trusted,
            disk_low=self.engine.disk_low,
            links={"mqtt": "ok" if self.link.connected.is_set() else "down", **self._links()},
            ts_ms=now,
        )

    async def publish_health(self, online: bool = True) -> asyncio.Future[int]:
        body = await self.health(online)
        future = self.link.publish(f"{self.root}/{HEALTH}", dumps(body.model_dump()), retain=True)
        if online:
            self.publish_kpis()
        return future

    def kpis(self) -> ShiftNowBody | None:
        """The current shift's KPIs so far (None before anything was booked)."""
        found = self.engine.work_center.shift_kpis(self.engine.now())
        if found is None:
            return None
        return ShiftNowBody.model_validate(
            {**kpis_payload(found), "edge_id": self.edge_id, "ts_ms": _ms()}
        )

    def publish_kpis(self) -> None:
        body = self.kpis()
        if body is not None:
            self.link.publish(f"{self.root}/{KPI_NOW}", dumps(body.model_dump()), retain=True)

    def snapshot(self) -> SnapshotBody:
        wc = self.engine.work_center
        h = wc.header
        return SnapshotBody(
            edge_id=self.edge_id,
            work_center=wc.rules.work_center,
            boot_seq=self.engine.boot_seq,
            dispatch_version=h.dispatch_version,
            machine_state=h.machine_state.value if h.machine_state else None,
            open_stop=h.open_stop,
            active=[
                ActiveOperation(
                    op=str(op.key),
                    status=op.status.value,
                    material=op.spec.material,
                    target_qty=op.spec.target_qty,
                    good=op.counted.good,
                    scrap=op.counted.scrap_total,
                    unit=op.spec.unit,
                )
                for op in wc.active
            ],
            dispatched=sorted(
                str(k) for k, op in wc.operations.items() if op.status is OperationStatus.DISPATCHED
            ),
            ts_ms=_ms(),
        )

    def publish_snapshot(self) -> None:
        body = self.snapshot()
        self.link.publish(f"{self.root}/{SNAPSHOT}", dumps(body.model_dump()), retain=True)

    async def goodbye(self, timeout: float = 2.0) -> None:
        """On a clean stop the Last Will does not fire: say offline ourselves."""
        if not self.link.connected.is_set():
            return
        try:
            future = await self.publish_health(online=False)
            await within(future, timeout)
        except (TimeoutError, asyncio.CancelledError, Exception) as exc:
            self.log.warning("could not publish the offline health", error=repr(exc))
