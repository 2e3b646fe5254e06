"""A gateway process that ingests counter readings as fast as it can until it is killed.

Run by test_crash.py: it prints ``ACK <value>`` once every reading up to that counter value is
durable, so the parent knows what was acknowledged before its SIGKILL.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from edge.domain.inputs import Action, CounterReading, DispatchList, Transition
from edge.domain.model import OperationStatus
from edge.engine import Engine
from edge.logging import configure_logging
from edge.store.store import Store
from edge.sync import messages
from tests.engine.helpers import rules, spec

OP = spec(target=10**9)
CHUNK = 64


async def main(db: Path) -> None:
    configure_logging("warning", json=True)
    engine = await Engine.open(
        Store(db), rules(policy=rules().policy), batch_window_ms=0.5, outbound=messages
    )
    task = asyncio.create_task(engine.run(tick_interval_s=None))
    if OP.key not in engine.wc.operations:
        await engine.submit(DispatchList(1, (OP,), engine.now()))
    if engine.wc.operations[OP.key].status is OperationStatus.DISPATCHED:
        await engine.submit(
            Transition(Action.START_PRODUCTION, str(OP.key), "operator:1", engine.now())
        )
    track = engine.wc.counters.get("good")
    value = (track.last_value or 0) if track else 0
    print("READY", value, flush=True)
    while True:
        values = range(value + 1, value + 1 + CHUNK)
        await asyncio.gather(
            *(engine.submit(CounterReading("good", v, engine.now())) for v in values)
        )
        value += CHUNK
        sys.stdout.write(f"ACK {value}\n")  # one write: a kill cuts at most this line
        sys.stdout.flush()
        if task.done():
            task.result()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
