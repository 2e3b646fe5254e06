"""The shift view over the real app, engine and store: /api/shift and the state's ``shift``
(pushed with every snapshot), OEE and its factors null where undefined, parts against the
target, the stops of the shift by reason."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from edge.domain.inputs import MachineState
from tests.panel.conftest import panel_config, running_panel, spec
from tests.panel.test_api import post


async def test_the_current_shift_through_the_api(tmp_path: Path) -> None:
    async with (
        running_panel(panel_config(tmp_path)) as panel,
        httpx.AsyncClient(base_url=panel.url) as client,
    ):
        await panel.dispatch(spec("4711", "0020", 30, 10, std_cycle_s=2.0))
        before = (await client.get("/api/shift")).json()
        # nothing made yet: no OEE, no effectiveness, no quality ratio (null, never 0)
        assert (before["oee"], before["effectiveness"], before["quality_ratio"]) == (None,) * 3
        assert before["top_stops"] == []
        r = await post(client, "/api/commands/start-production", op="4711/0020")
        assert r.status_code == 200, r.text
        await panel.pulses(8)
        await panel.machine(MachineState.DOWN)
        await asyncio.sleep(0.05)
        await panel.machine(MachineState.RUNNING)
        shift = (await client.get("/api/shift")).json()
        assert shift["shift_id"].endswith("/" + shift["shift"])
        assert (shift["good"], shift["scrap"]) == (8, 0)
        assert shift["quality_ratio"] == 1.0
        assert 0 <= shift["availability"] <= 1
        assert shift["oee"] is not None
        assert shift["cycle_s"] == 2.0
        # the shift's planned busy time at 2 s a part
        k = panel.engine.work_center.shift_kpis(panel.engine.now())
        assert k is not None
        assert shift["target"] == k.pbt_ms // 2000
        assert 0 <= shift["target_due"] <= shift["target"]
        (stop,) = shift["top_stops"]
        assert (stop["reason"], stop["stops"]) == ("MICRO", 1)  # shorter than micro_stop_s
        state = (await client.get("/api/state")).json()
        assert state["shift"]["shift_id"] == shift["shift_id"]
        assert state["shift"]["good"] == 8
