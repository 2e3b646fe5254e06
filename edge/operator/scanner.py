"""The barcode scanner at the work center (``[scanner]``): each scan becomes an input, or a
message saying why not.

What a scan does (:mod:`edge.scanners.route` tells what it is):

- an operation's code (the ``operation`` pattern, e.g. the order card's ``OP4711/0020``): the
  operator picks it. A dispatched operation starts its setup, one in setup starts production,
  an interrupted one resumes; the core refuses it while another operation is active, as it
  refuses a tap. Anything else (running, held, finished, not in the dispatch list) is refused
  naming the operation and its status.
- an operator's badge: logs its holder in, or out when they are logged in (edge.domain.crew);
  a badge nobody in ``[[badges]]`` holds is refused naming it.
- a component's batch (a GS1 label with its GTIN, or the plant's own label naming the
  material): loaded for the active operation (edge.domain.material); the core refuses a
  component the operation does not have, one that is not batch-managed, or no active
  operation, naming it.
- a scan the router refused (a malformed GS1 code, an unknown key, a code no pattern takes):
  its code and the reason.

Every result is logged and kept in :class:`ScanLog` (the newest few), which the panel shows;
a refused scan changes nothing stored. The scanner acts as the operator who logged in last
(``operator:<personnel>``), else as the panel's operator (``operator:<[panel]
operator_id>``). Nothing a scanner sends stops the gateway: a reader that cannot open its
device says so and tries again.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date

from edge.config import GatewayConfig
from edge.domain.calendar import zone
from edge.domain.crew import actor_for
from edge.domain.events import EventType
from edge.domain.inputs import Action, BadgeScanned, ComponentBatchLoaded, Transition
from edge.domain.model import OperationKey, OperationStatus
from edge.errors import EngineStopped, StoreError
from edge.logging import get_logger
from edge.ports import FloorFace
from edge.scanners.errors import ScannerUnavailable
from edge.scanners.route import Badge, ComponentBatch, OperationPick, Refused, Routed
from edge.scanners.service import routed_scans

__all__ = ["ScanLog", "ScanResult", "ScanStation"]

KEPT = 20  # results the panel can show

# What picking an operation does, by its status.
_PICK: dict[OperationStatus, Action] = {
    OperationStatus.DISPATCHED: Action.START_SETUP,
    OperationStatus.SETUP: Action.START_PRODUCTION,
    OperationStatus.INTERRUPTED: Action.RESUME,
}


@dataclass(frozen=True, slots=True)
class ScanResult:
    """One scan as the panel shows it: ``ok`` taken (``message`` says what it did) or not
    (``message`` says why)."""

    seq: int
    at: str  # ISO 8601
    code: str
    ok: bool
    message: str


class ScanLog:
    """The newest scan results, and who wants to hear of a new one (the panel)."""

    def __init__(self) -> None:
        self._results: deque[ScanResult] = deque(maxlen=KEPT)
        self._seq = 0
        self._listeners: list[Callable[[ScanResult], None]] = []

    def add_listener(self, listener: Callable[[ScanResult], None]) -> None:
        self._listeners.append(listener)

    def record(self, at: str, code: str, ok: bool, message: str) -> ScanResult:
        self._seq += 1
        result = ScanResult(self._seq, at, code, ok, message)
        self._results.append(result)
        for listener in self._listeners:
            listener(result)
        return result

    def latest(self) -> ScanResult | None:
        return self._results[-1] if self._results else None

    def results(self) -> list[ScanResult]:
        return list(self._results)


class ScanStation:
    """Reads the configured scanner and hands each scan to the engine (see the module)."""

    def __init__(self, cfg: GatewayConfig, floor: FloorFace, scans: ScanLog) -> None:
        self.cfg = cfg.scanner
        self.floor = floor
        self.scans = scans
        self.actor = f"operator:{cfg.panel.operator_id}"
        self.timezone = cfg.gateway.timezone
        self.log = get_logger("edge.scanner")

    def _today(self) -> date:
        return self.floor.now().wall().astimezone(zone(self.timezone)).date()

    async def run(self) -> None:
        """Read scans until cancelled; a scanner that is not there is looked for again."""
        backoff = self.cfg.reconnect_s
        while True:
            try:
                async for scan in routed_scans(self.cfg, today=self._today):
                    backoff = self.cfg.reconnect_s
                    await self.handle(scan.raw, scan.result)
            except ScannerUnavailable as exc:
                self.log.error("scanner unavailable", device=self.cfg.device, error=str(exc))
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.cfg.reconnect_max_s)

    async def handle(self, raw: str, routed: Routed) -> ScanResult:
        """One routed scan: the input it makes, or why it makes none."""
        at = self.floor.now().iso()
        if isinstance(routed, Refused):
            return self._refused(at, routed.code_shown, routed.reason)
        if isinstance(routed, OperationPick):
            return await self._pick(at, raw, routed)
        if isinstance(routed, ComponentBatch):
            return await self._batch(at, raw, routed)
        if isinstance(routed, Badge):
            return await self._badge(at, raw, routed)
        return self._refused(at, raw, "not a code this gateway takes")  # pragma: no cover

    async def _pick(self, at: str, raw: str, pick: OperationPick) -> ScanResult:
        key = OperationKey(pick.order, pick.operation)
        op = self.floor.work_center.operations.get(key)
        if op is None:
            return self._refused(at, raw, f"operation {key} is not in the dispatch list")
        action = _PICK.get(op.status)
        if action is None:
            return self._refused(at, raw, f"operation {key} is {op.status.value}")
        try:
            out = await self.floor.submit(
                Transition(action, str(key), self._actor(), self.floor.now())
            )
        except (EngineStopped, StoreError) as exc:
            return self._refused(at, raw, f"not taken: {exc}")
        if out.rejection is not None:
            return self._refused(at, raw, out.rejection.message)
        done = f"operation {key}: {action.value.replace('_', ' ')}"
        self.log.info("scan taken", code=raw, action=action.value, operation=str(key))
        return self.scans.record(at, raw, True, done)

    async def _batch(self, at: str, raw: str, scan: ComponentBatch) -> ScanResult:
        inp = ComponentBatchLoaded(
            scan.batch,
            self._actor(),
            self.floor.now(),
            material=scan.material,
            gtin=None if scan.material else scan.gtin,
            expiry=scan.expiry.isoformat() if scan.expiry else None,
        )
        try:
            out = await self.floor.submit(inp)
        except (EngineStopped, StoreError) as exc:
            return self._refused(at, raw, f"not taken: {exc}")
        if out.rejection is not None:
            return self._refused(at, raw, out.rejection.message)
        done = f"batch {scan.batch} loaded"
        for event in out.events:
            if event.type is EventType.COMPONENT_BATCH_LOADED:
                done = f"batch {scan.batch} of {event.data['material']} loaded for {event.op}"
        self.log.info("scan taken", code=raw, batch=scan.batch, result=done)
        return self.scans.record(at, raw, True, done)

    async def _badge(self, at: str, raw: str, badge: Badge) -> ScanResult:
        device = f"scanner:{self.cfg.kind}"
        try:
            out = await self.floor.submit(BadgeScanned(badge.badge_id, device, self.floor.now()))
        except (EngineStopped, StoreError) as exc:
            return self._refused(at, raw, f"not taken: {exc}")
        if out.rejection is not None:
            return self._refused(at, raw, out.rejection.message)
        done = f"badge {badge.badge_id}"
        for event in out.events:
            who = event.data.get("name") or event.data.get("personnel")
            if event.type is EventType.OPERATOR_LOGGED_IN:
                done = f"{who} logged in"
            elif event.type is EventType.OPERATOR_LOGGED_OUT:
                done = f"{who} logged out"
        self.log.info("scan taken", code=raw, badge=badge.badge_id, result=done)
        return self.scans.record(at, raw, True, done)

    def _actor(self) -> str:
        """The operator who logged in last, else the panel's operator."""
        return actor_for(self.floor.work_center.header.crew, self.actor)

    def _refused(self, at: str, code: str, reason: str) -> ScanResult:
        self.log.warning("scan refused", code=code, reason=reason)
        return self.scans.record(at, code, False, reason)
