"""GPIO tests: gpiozero's MockFactory for the pins, a real engine on a temporary SQLite file."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from gpio_support import config
from gpiozero.pins.mock import MockFactory

from edge.app import open_engine
from edge.config import GatewayConfig
from edge.domain.inputs import DispatchList
from edge.domain.model import OperationSpec
from edge.engine import Engine


@pytest.fixture
def cfg(tmp_path: Path) -> GatewayConfig:
    return config(tmp_path)


@pytest.fixture
def factory() -> Iterator[MockFactory]:
    """A pin factory of its own per test: no pin state leaks from one test to the next."""
    f = MockFactory()
    try:
        yield f
    finally:
        f.close()


@pytest.fixture
async def engine(cfg: GatewayConfig) -> AsyncIterator[Engine]:
    """The engine the config describes, two operations dispatched, no timer tick."""
    eng = await open_engine(cfg)
    task = asyncio.create_task(eng.run(tick_interval_s=None))
    try:
        ops = tuple(
            OperationSpec("4711", number, "FG-1", Decimal(1000), sequence=sequence)
            for number, sequence in (("0010", 1), ("0005", 2))
        )
        assert (await eng.submit(DispatchList(1, ops, eng.now()))).accepted
        yield eng
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await eng.close()
