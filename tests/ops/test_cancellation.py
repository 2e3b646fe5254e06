"""A loop that waits for an event with a timeout must stop on the one cancel its task group
sends at shutdown, also when the event is set in the same turn of the loop as the cancel.

Python 3.11's ``asyncio.wait_for`` returns instead of raising then (it sees the inner wait done
and hands back its result), so a ``while True`` loop around it goes on and the gateway's shutdown
waits for ever. ``edge.aio`` waits with ``asyncio.timeout`` instead; no loop in ``edge/`` waits
for an event with ``wait_for``.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from edge.aio import wait_set, within
from edge.sync.presence import Presence

EDGE = Path(__file__).resolve().parents[2] / "edge"


async def _loop_is_cancelled(wait: Callable[[asyncio.Event], Awaitable[object]]) -> bool:
    """Cancel a waiting loop in the same turn as its event is set; did it stop?"""
    event = asyncio.Event()
    rounds = 0

    async def loop() -> None:
        nonlocal rounds
        while True:
            await wait(event)
            event.clear()
            rounds += 1

    task = asyncio.create_task(loop())
    await asyncio.sleep(0.01)
    event.set()
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=1.0)
    if not done:
        task.cancel()  # a second cancel ends it; the first one was swallowed
        await asyncio.wait({task}, timeout=1.0)
        return False
    return task.cancelled()


async def test_wait_for_in_this_python_swallows_the_cancel_and_wait_set_does_not() -> None:
    async def with_wait_for(event: asyncio.Event) -> object:
        try:
            return await asyncio.wait_for(event.wait(), 10)
        except TimeoutError:
            return None

    swallowed = not await _loop_is_cancelled(with_wait_for)
    kept = await _loop_is_cancelled(lambda event: wait_set(event, 10))
    assert kept, "wait_set swallowed the cancellation"
    # The reason for edge.aio (on 3.12 and later wait_for keeps the cancellation too).
    import sys

    if sys.version_info < (3, 12):
        assert swallowed


async def test_the_helpers_time_out_and_return() -> None:
    event = asyncio.Event()
    assert await wait_set(event, 0.01) is False
    event.set()
    assert await wait_set(event, 0.01) is True
    assert await wait_set(event, None) is True
    with pytest.raises(TimeoutError):
        await within(asyncio.sleep(1), 0.01)
    assert await within(asyncio.sleep(0, "done"), 1) == "done"


class _Quiet:
    """Presence's faces, enough for its loop: never connected, nothing to publish."""

    def __init__(self) -> None:
        self.connected = asyncio.Event()
        self.listeners: list[object] = []

    def add_listener(self, listener: object) -> None:
        self.listeners.append(listener)

    def add_on_connect(self, _: object) -> None:
        pass


async def test_presence_stops_on_one_cancel_when_a_commit_came_in_the_same_turn() -> None:
    quiet = _Quiet()
    presence = Presence(quiet, quiet, root="r", edge_id="e", interval_s=30)  # type: ignore[arg-type]
    for _ in range(20):
        task = asyncio.create_task(presence.run())
        await asyncio.sleep(0.01)
        presence._on_events([])  # a commit: the snapshot is due
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=2.0)
        if not done:
            task.cancel()
            await asyncio.wait({task}, timeout=2.0)
        assert done, "presence went on after its cancellation"
        presence._changed.clear()


def test_no_loop_in_the_gateway_waits_for_an_event_with_wait_for() -> None:
    found = [
        f"{path.relative_to(EDGE.parent)}:{n}"
        for path in EDGE.rglob("*.py")
        if path.name != "aio.py"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"wait_for\([^)]*\.wait\(\)", line)
    ]
    assert not found, f"use edge.aio.wait_set: {found}"
