"""``edge demo``: the gateway on a simulated press, one order from dispatch to final confirmation.

It uses the real engine, store and core; only the machine and the people are simulated: central
sends a dispatch list, an operator starts setup and production, the press runs, jams, stops
without a reason until the operator gives one, scrap is reported, and the operator completes.
Every committed event is printed as it happens, then what the SQLite file holds.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import time
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path

from edge.app import open_engine, run_gateway
from edge.config import GatewayConfig, load_config
from edge.domain.events import Event, EventType
from edge.domain.inputs import (
    Action,
    DispatchList,
    Input,
    MachineState,
    ReportScrap,
    SetStopReason,
    Transition,
)
from edge.domain.model import OperationKey, OperationSpec
from edge.engine import Engine
from edge.sources.simulated import SimulatedMachine
from edge.store.replay import verify

CONFIG = Path(__file__).resolve().parent.parent / "config" / "demo.toml"
OPERATOR = "operator:1001"
ORDER = OperationKey("4711", "0020")


def dispatch_list(engine: Engine) -> DispatchList:
    def op(
        order: str, operation: str, material: str, text: str, qty: int, seq: int
    ) -> OperationSpec:
        return OperationSpec(
            order,
            operation,
            material,
            Decimal(qty),
            unit="PC",
            sequence=seq,
            material_text=text,
            std_setup_s=3.0,
            std_cycle_s=0.25,
            under_tolerance_pct=Decimal(2),
            over_tolerance_pct=Decimal(10),
        )

    return DispatchList(
        1,
        (
            op("4711", "0020", "FG-4711", "Bracket 30x15", 60, 10),
            op("4711", "0030", "FG-4711", "Bracket 30x15, deburr", 60, 20),
            op("4712", "0010", "FG-4712", "Hinge plate", 200, 30),
        ),
        engine.now(),
    )


class Narrator:
    """Prints each committed event as one line a person can follow."""

    def __init__(self, out: object = sys.stdout) -> None:
        self.t0 = time.monotonic()
        self.out = out

    def say(self, text: str) -> None:
        print(f"  {time.monotonic() - self.t0:6.1f}s  {text}", file=self.out, flush=True)  # type: ignore[call-overload]

    def __call__(self, events: Sequence[Event]) -> None:
        for ev in events:
            line = describe(ev)
            if line:
                self.say(line)


def describe(ev: Event) -> str | None:
    d = ev.data
    op = f"{ev.op}  " if ev.op else ""
    who = f"  ({ev.actor})" if ev.actor else ""
    match ev.type:
        case EventType.DISPATCH_APPLIED:
            return f"dispatch list v{d['version']} from central: {', '.join(d['operations'])}"  # type: ignore[arg-type]
        case EventType.OPERATION_STATE_CHANGED:
            return f"{op}{d['from']} -> {d['to']}{who}"
        case EventType.STOP_STARTED:
            alarm = f", alarm {d['alarm']}" if d.get("alarm") else ""
            return f"stop {d['stop_id']} started ({d['origin']}{alarm})"
        case EventType.STOP_REASON_REQUESTED:
            return f"stop {d['stop_id']}: REASON PENDING - the panel and stack light ask for it"
        case EventType.STOP_REASON_SET:
            return f"stop {d['stop_id']}: reason {d['reason']} (from {d['source']}){who}"
        case EventType.STOP_ENDED:
            kind = "micro-stop" if d["micro"] else "stop"
            return f"{kind} {d['stop_id']} ended after {d['duration_s']:.1f} s"
        case EventType.CONFIRMATION_CREATED:
            return (
                f"{op}confirmation #{d['conf_index']} {d['kind']}: yield {d['yield_qty']}, "
                f"scrap {d['scrap_qty']} {d['scrap_by_reason']}, "
                f"idem_key {str(d['idem_key'])[:12]}..."
            )
        case EventType.SCRAP_REPORTED:
            return f"{op}{d['qty']} scrap reported, reason {d['reason']}{who}"
        case EventType.TARGET_REACHED:
            return f"{op}target reached: {d['good']} of {d['target']}"
        case EventType.PICKED_OUT_OF_SEQUENCE:
            return f"{op}picked out of sequence (next was {d['expected']})"
        case EventType.COUNTER_DISCONTINUITY:
            return f"counter {d['source']} jumped {d['previous']} -> {d['value']}: discontinuity"
        case _:
            return None


async def story(engine: Engine, narrator: Narrator, stop: asyncio.Event) -> None:
    """What central, the press and the operator do, in order."""
    press = SimulatedMachine(
        engine.submit, engine.now, counter_source="press_good", cycle_s=0.25, seed=7
    )
    machine = asyncio.create_task(press.run(), name="simulated-press")

    async def do(inp: Input) -> None:
        outcome = await engine.submit(inp)
        if outcome.rejection is not None:
            narrator.say(f"REJECTED: {outcome.rejection.message}")

    async def good_reaches(qty: int) -> None:
        while engine.wc.operations[ORDER].counted.good < qty:
            await asyncio.sleep(0.05)

    try:
        narrator.say("central sends the dispatch list")
        await do(dispatch_list(engine))
        await asyncio.sleep(1)
        narrator.say("operator starts setup of 4711/0020 on the panel")
        await do(Transition(Action.START_SETUP, str(ORDER), OPERATOR, engine.now()))
        await press.set_state(MachineState.SETUP)
        await asyncio.sleep(2.5)
        narrator.say("first-off part is good: operator starts production")
        await do(Transition(Action.START_PRODUCTION, str(ORDER), OPERATOR, engine.now()))
        await press.set_state(MachineState.RUNNING)
        await good_reaches(24)
        narrator.say("the press stops with alarm E-217 (not mapped to a reason)")
        await press.set_state(MachineState.DOWN, "E-217")
        await asyncio.sleep(3.5)
        await press.set_state(MachineState.RUNNING)
        await asyncio.sleep(0.5)
        narrator.say("operator taps 'Material missing' for the stop")
        await do(SetStopReason("M01", OPERATOR, engine.now()))
        await good_reaches(38)
        narrator.say("the press jams (alarm E-100), cleared within a second")
        await press.set_state(MachineState.DOWN, "E-100")
        await asyncio.sleep(0.8)
        await press.set_state(MachineState.RUNNING)
        await good_reaches(45)
        narrator.say("operator sorts out 2 parts with a burr")
        await do(ReportScrap(Decimal(2), "S03", OPERATOR, engine.now()))
        await good_reaches(64)
        narrator.say("operator completes 4711/0020 a few parts over target, within tolerance")
        await do(Transition(Action.COMPLETE, str(ORDER), OPERATOR, engine.now()))
        await press.set_state(MachineState.IDLE)
    finally:
        machine.cancel()
        stop.set()


def summary(engine: Engine, cfg: GatewayConfig) -> None:
    wc = engine.wc
    op = wc.operations[ORDER]
    print("\nWhat the gateway holds for 4711/0020:")
    print(
        f"  status {op.status.value}; counted good {op.counted.good}, "
        f"scrap {dict(op.counted.scrap)}"
    )
    te = wc.time_elements(op)
    by_reason = {k: v / 1000 for k, v in te.down_by_reason_ms.items()}
    print(
        f"  time elements: setup {te.setup_ms / 1000:.1f} s, production "
        f"{te.production_ms / 1000:.1f} s, down {te.down_ms / 1000:.1f} s {by_reason}, "
        f"waiting {te.waiting_ms / 1000:.1f} s"
    )
    confs = [c for c in wc.confirmations.values() if c.key == ORDER]
    print("  confirmations (to the ERP relay):")
    for c in confs:
        print(
            f"    #{c.counter} {'final  ' if c.final else 'partial'} yield {c.tally.good:>3} "
            f"scrap {c.tally.scrap_total:>2}  posting {c.posting_date}  {c.status.value}"
        )
    total = sum((c.tally.good for c in confs), Decimal(0))
    print(f"  yields sum to {total} = counted good {op.counted.good}")
    store = engine.store
    print(f"\nThe SQLite file {cfg.store.path}:")
    print(
        f"  journal: {store.journal_count()} inputs; "
        f"outbox: {store.outbox_depth()} messages waiting for MQTT"
    )
    for topic, n in store.conn.execute(
        "SELECT topic, COUNT(*) FROM outbox GROUP BY topic ORDER BY topic"
    ):
        print(f"    {n:4d}  {topic}")
    diffs = verify(store)
    agree = "yes" if not diffs else f"NO ({len(diffs)} rows differ)"
    print(f"  projections equal the journal replay: {agree}")


async def run_demo(data_dir: Path, keep: bool) -> int:
    db = data_dir / "edge.db"
    if not keep and data_dir.exists():
        shutil.rmtree(data_dir)
    cfg = load_config(CONFIG, env={"EDGE_STORE__PATH": str(db)})
    narrator = Narrator()
    print(f"edge demo: work center {cfg.gateway.work_center}, database {db}\n")
    stop = asyncio.Event()
    engine = await open_engine(cfg)
    engine.add_listener(narrator)

    async def scripted(e: Engine) -> None:
        await story(e, narrator, stop)

    await run_gateway(cfg, components=(scripted,), stop=stop, engine=engine)
    engine.store.open(boot=False)  # read what was committed, as a new start would
    try:
        summary(engine, cfg)
    finally:
        engine.store.close()
    return 0
