"""Small asyncio helpers every long-running loop of the gateway uses.

Python 3.11's ``asyncio.wait_for`` swallows a cancellation when the awaited thing finishes in
the same turn of the loop as the cancel: it returns the result instead of raising. A loop that
waits with it (``while True: await wait_for(event.wait(), t)``) can then miss the one
cancellation its task group sends at shutdown, and the gateway never stops. These helpers wait
with ``asyncio.timeout``, which keeps the cancellation.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def wait_set(event: asyncio.Event, timeout: float | None) -> bool:
    """Wait until ``event`` is set or ``timeout`` seconds passed (None: no limit); True if it
    was set."""
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        return False
    return True


async def within(awaitable: Awaitable[T], timeout: float) -> T:
    """``await awaitable``, raising TimeoutError after ``timeout`` seconds (the cancellation of
    the waiting task is never swallowed)."""
    async with asyncio.timeout(timeout):
        return await awaitable
