"""A whole gateway process (engine, store, MQTT sync) with a fast-counting press, for kill tests.

    python -m tests.gateway.gateway_child CONFIG --produce-s 3 [--complete]

It dispatches its own operation on first start (as central would), starts production, counts
pulses for ``--produce-s`` seconds, optionally completes the operation, and keeps running (so
the uplink drains) until it is stopped or killed.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from decimal import Decimal

from edge.app import open_engine, run_gateway
from edge.config import load_config
from edge.domain.inputs import Action, DispatchList, Pulses, Transition
from edge.domain.model import OperationSpec, OperationStatus
from edge.engine import Engine
from edge.logging import configure_logging

OP = OperationSpec("4711", "0020", "FG-4711", Decimal(10**6), std_cycle_s=0.001)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("config")
    parser.add_argument("--produce-s", type=float, default=0.0)
    parser.add_argument("--complete", action="store_true")
    args = parser.parse_args()
    configure_logging("warning", json=True)
    cfg = load_config(args.config)
    engine = await open_engine(cfg)

    async def press(e: Engine) -> None:
        if OP.key not in e.wc.operations:
            await e.submit(DispatchList(1, (OP,), e.now()))
        if e.wc.operations[OP.key].status is OperationStatus.DISPATCHED:
            await e.submit(Transition(Action.START_PRODUCTION, str(OP.key), "operator:1", e.now()))
        print("READY", flush=True)
        loop = asyncio.get_running_loop()
        end = loop.time() + args.produce_s
        while loop.time() < end:
            await e.submit(Pulses("press_good", 3, e.now()))
            await asyncio.sleep(0.005)
        if args.complete and e.wc.operations[OP.key].status is OperationStatus.RUNNING:
            await e.submit(Transition(Action.COMPLETE, str(OP.key), "operator:1", e.now()))
        print("PRODUCED", flush=True)
        await asyncio.Event().wait()

    await run_gateway(cfg, components=(press,), engine=engine)


if __name__ == "__main__":
    asyncio.run(main())
    sys.exit(0)
