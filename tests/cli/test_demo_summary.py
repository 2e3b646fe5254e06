"""The demo's summary after ``--stay``: every operation worked and every stop still open, on a
real engine and store, and SAP's ledger (the stand-in's) against what the gateway confirmed.
(The whole demo with --stay runs in tests/cli/test_demo_panel.py.)"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from edge.domain.inputs import (
    Action,
    CounterReading,
    DispatchList,
    MachineState,
    MachineStateChanged,
    Transition,
)
from simulators.broker import Mosquitto
from simulators.demo import Central, order_summary, stops_summary, worked
from tests.engine.helpers import spec
from tests.engine.test_retention_engine import Clocks, running


async def test_summary_covers_every_operation_worked_and_the_open_stop(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    central = Central(Mosquitto(tmp_path / "mosquitto"), "umh/v1/e/s/a/l/WC1", tmp_path, "V01")
    clocks = Clocks()
    async with running(tmp_path / "edge.db", clocks) as engine:
        now = engine.now
        specs = (spec("4711", "0020", target=60), spec("4711", "0030", target=60))
        await engine.submit(DispatchList(1, specs, now()))
        for action in (Action.START_SETUP, Action.START_PRODUCTION):
            assert (
                await engine.submit(Transition(action, "4711/0030", "operator:1", now()))
            ).accepted
        await engine.submit(MachineStateChanged("good", MachineState.RUNNING, now()))
        await engine.submit(CounterReading("good", 100, now()))
        clocks.advance(10_000)
        await engine.submit(CounterReading("good", 112, now()))
        await engine.submit(MachineStateChanged("good", MachineState.DOWN, now()))
        clocks.advance(5_000)
        keys = worked(engine)
        assert [str(k) for k in keys] == ["4711/0030"]  # 4711/0020 was only dispatched
        capsys.readouterr()
        failed = order_summary(engine, central, keys[0])
        stops_summary(engine)
    out = capsys.readouterr().out
    assert failed == [], out
    assert "What the gateway holds for 4711/0030:\n  status running; counted good 12" in out
    assert "  no confirmation yet" in out
    assert (
        "SAP yield 0 / scrap 0 vs. the gateway's posted confirmations yield 0 / scrap 0 "
        "(running, counted good 12 so far): they match" in out
    )
    assert re.search(
        r"stop \S+ open, since \d\d:\d\d:\d\d \(machine_state, 4711/0030\): reason NOT GIVEN", out
    ), out
