"""Builders shared by the engine, store and reliability tests."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

from edge.domain.model import OperationSpec
from edge.domain.rules import (
    ConfirmationPolicy,
    CountKind,
    CountSource,
    MasterData,
    ScrapReason,
    SignalType,
    StopReason,
    WorkCenterRules,
)
from edge.engine import Engine
from edge.store.store import Store
from edge.sync import messages


def rules(**overrides: object) -> WorkCenterRules:
    base: dict[str, object] = {
        "edge_id": "wc-test-01",
        "work_center": "WC1",
        "sources": (
            CountSource("good", CountKind.GOOD, SignalType.ABSOLUTE, bits=32),
            CountSource("pulses", CountKind.GOOD, SignalType.PULSE),
        ),
        "policy": ConfirmationPolicy(every_good=Decimal(50)),
        "master_data": MasterData(
            stop_reasons=(StopReason("M01", "material"), StopReason("B01", "break", "planned")),
            scrap_reasons=(ScrapReason("S03", "burr"), ScrapReason("SETUP", "setup")),
        ),
    }
    base.update(overrides)
    return WorkCenterRules(**base)  # type: ignore[arg-type]


def spec(
    order: str = "4711", operation: str = "0020", target: int = 1000, **kw: object
) -> OperationSpec:
    return OperationSpec(order, operation, "FG-1", Decimal(target), **kw)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def running(path: Path, **kw: object) -> AsyncIterator[Engine]:
    """An engine on the database at ``path`` with :func:`rules` (``kw`` overriding), running
    without a ticker; closed on the way out."""
    engine = await Engine.open(Store(path), rules(**kw), outbound=messages)
    task = asyncio.create_task(engine.run(tick_interval_s=None))
    try:
        yield engine
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await engine.close()
