"""A simulated machine as a source: an absolute 32-bit part counter and a machine state.

Used by ``edge demo`` and for training without a machine. It behaves like a counter in a PLC:
the count goes up once per cycle (with jitter) while the machine runs, nothing moves while it
is down, and the gateway sees only readings and states, exactly as from OPC UA or Modbus.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable

from edge.domain.clock import Instant
from edge.domain.events import Outcome
from edge.domain.inputs import CounterReading, Input, MachineState, MachineStateChanged

Submit = Callable[[Input], Awaitable[Outcome]]


class SimulatedMachine:
    def __init__(
        self,
        submit: Submit,
        now: Callable[[], Instant],
        *,
        counter_source: str,
        cycle_s: float,
        jitter: float = 0.1,
        start_value: int = 0,
        seed: int | None = None,
    ) -> None:
        self._submit = submit
        self._now = now
        self.counter_source = counter_source
        self.cycle_s = cycle_s
        self.jitter = jitter
        self.value = start_value
        self.state = MachineState.IDLE
        self.alarm: str | None = None
        self._rng = random.Random(seed)
        self._changed = asyncio.Event()

    async def set_state(self, state: MachineState, alarm: str | None = None) -> None:
        self.state, self.alarm = state, alarm
        await self._submit(
            MachineStateChanged(f"sim:{self.counter_source}", state, self._now(), alarm)
        )
        self._changed.set()

    async def run(self) -> None:
        """Report the counter once (the baseline), then once per cycle while producing."""
        await self._submit(CounterReading(self.counter_source, self.value, self._now()))
        while True:
            if self.state not in (MachineState.RUNNING, MachineState.SETUP):
                self._changed.clear()
                await self._changed.wait()
                continue
            cycle = self.cycle_s * (1 + self._rng.uniform(-self.jitter, self.jitter))
            if self.state is MachineState.SETUP:
                cycle *= 4  # setup parts come slowly: adjust, try, measure
            await asyncio.sleep(cycle)
            if self.state in (MachineState.RUNNING, MachineState.SETUP):
                self.value = (self.value + 1) % (1 << 32)
                await self._submit(CounterReading(self.counter_source, self.value, self._now()))
