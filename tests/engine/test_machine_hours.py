"""Machine hours through the real engine and SQLite: a database written before machine hours
existed is upgraded in place (counting begins with the new rules, the journal still replays to
the projections), the counts survive restarts and a counter reset in between, and a service
interval that fell due is still due after a restart."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

from edge.domain.events import EventType
from edge.domain.inputs import (
    Action,
    CounterReading,
    DispatchList,
    MachineState,
    MachineStateChanged,
    RequestMaintenance,
    ServiceDone,
    Transition,
)
from edge.domain.rules import ServiceInterval, ServiceMeasure
from edge.engine import Engine
from edge.store.replay import verify
from tests.engine.helpers import running, spec

DIE = ServiceInterval("die", ServiceMeasure.CYCLES, Decimal(25), "regrind")


def due(engine: Engine) -> bool:
    return engine.wc.andon.maintenance_due


def outbox_kinds(engine: Engine) -> list[str]:
    return [r[0] for r in engine.store.conn.execute("SELECT kind FROM outbox ORDER BY seq")]


async def test_an_older_database_upgrades_and_the_counts_survive_restarts(tmp_path: Path) -> None:
    db = tmp_path / "edge.db"
    async with running(db) as engine:  # as a version without machine hours ran
        await engine.submit(DispatchList(1, (spec(std_cycle_s=0.1),), engine.now()))
        await engine.submit(
            Transition(Action.START_PRODUCTION, "4711/0020", "operator:7", engine.now())
        )
        await engine.submit(CounterReading("good", 100, engine.now()))
        await asyncio.sleep(0.05)
        await engine.submit(CounterReading("good", 110, engine.now()))
        assert engine.wc.machine_hours(engine.now()) is None
    async with running(db, machine_hours=True, service=(DIE,)) as engine:
        await engine.submit(MachineStateChanged("plc", MachineState.RUNNING, engine.now()))
        await asyncio.sleep(0.05)
        await engine.submit(CounterReading("good", 120, engine.now()))
        totals = engine.wc.machine_hours(engine.now())
        assert totals is not None
        assert totals["cycles"] == 10  # the 10 before the upgrade are not machine cycles
        assert verify(engine.store) == []
    async with running(db, machine_hours=True, service=(DIE,)) as engine:
        # The PLC restarted and its counter began again: 5, then 20 more.
        await asyncio.sleep(0.05)
        out = await engine.submit(CounterReading("good", 5, engine.now()))
        assert out.accepted
        await asyncio.sleep(0.2)
        out = await engine.submit(CounterReading("good", 25, engine.now()))
        assert [e.type for e in out.events if e.type is EventType.MAINTENANCE_DUE] == [
            EventType.MAINTENANCE_DUE
        ]
        totals = engine.wc.machine_hours(engine.now())
        assert totals is not None
        assert totals["cycles"] == 35
        assert totals["starts"] == 0  # it was running when counting began
        assert due(engine)
        asked = await engine.submit(
            RequestMaintenance("operator:7", engine.now(), None, "die worn")
        )
        assert asked.accepted
        assert "maintenance_due" in outbox_kinds(engine)
        assert "maintenance_requested" in outbox_kinds(engine)
    async with running(db, machine_hours=True, service=(DIE,)) as engine:
        assert due(engine)  # still due after the restart
        done = await engine.submit(ServiceDone("die", "supervisor:anna", engine.now()))
        assert done.accepted
        assert not due(engine)
        assert verify(engine.store) == []
