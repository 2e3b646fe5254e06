"""Machine hours and maintenance over the local API, against the real daemon: the view shows the
machine's hours, starts, cycles and parts and each service interval; an interval falls due after
enough counted cycles; the operator asks for maintenance from a stop (once) or with a note; a
supervisor, and only a supervisor, says the service was done. Every refusal names the field and
its value and changes nothing stored."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from edge.domain.inputs import MachineState
from tests.panel.conftest import Panel, panel_config, running_panel, spec, wait_until
from tests.panel.test_api import login, post
from tests.panel.test_components import journal
from tests.panel.test_hostile_input import settled

OP = "4711/0020"
SERVICE = """
[[service]]
name = "oil"
measure = "hours"
every = 250
text = "Oil the slide"

[[service]]
name = "die-check"
measure = "cycles"
every = 10
text = "Check the die for wear"
"""


def config(tmp_path: Path) -> Any:
    return panel_config(tmp_path, extra=SERVICE)


async def running(panel: Panel, client: httpx.AsyncClient) -> None:
    await panel.dispatch(spec("4711", "0020", 100, 10))
    r = await post(client, "/api/commands/start-production", op=OP)
    assert r.status_code == 200, r.text


def interval(state: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(s for s in state["machine"]["service"] if s["name"] == name)
    return found


async def event_data(panel: Panel, kind: str) -> list[dict[str, Any]]:
    rows = await panel.rows("SELECT data FROM event WHERE type = ? ORDER BY id", kind)
    return [json.loads(row[0]) for row in rows]


async def open_stop(panel: Panel) -> str:
    await panel.machine(MachineState.DOWN)
    await wait_until(lambda: panel.engine.wc.open_stop is not None, what="the open stop")
    stop = panel.engine.wc.open_stop
    assert stop is not None
    return stop.stop_id


async def test_the_view_shows_hours_and_intervals_and_the_due_flag(tmp_path: Path) -> None:
    async with (
        running_panel(config(tmp_path)) as panel,
        httpx.AsyncClient(base_url=panel.url) as client,
    ):
        await running(panel, client)
        await panel.pulses(4)
        state = (await client.get("/api/state")).json()
        machine = state["machine"]
        assert set(machine) == {
            "since",
            "running",
            "hours",
            "starts",
            "cycles",
            "parts",
            "service",
        }
        assert (machine["running"], machine["starts"], machine["cycles"], machine["parts"]) == (
            True,
            1,
            4,
            4,
        )
        assert 0 <= machine["hours"] < 0.1
        assert [s["name"] for s in machine["service"]] == ["oil", "die-check"]
        die = interval(state, "die-check")
        assert die == {
            "name": "die-check",
            "measure": "cycles",
            "every": 10,
            "since_done": 4,
            "remaining": 6,
            "due": False,
            "due_since": None,
            "done_at": None,
            "text": "Check the die for wear",
        }
        oil = interval(state, "oil")
        assert (oil["measure"], oil["every"], oil["due"]) == ("hours", 250, False)
        assert oil["since_done"] + oil["remaining"] == pytest.approx(250)
        assert state["maintenance_due"] is False
        # the view says what the core counts, no more and no less
        core = panel.engine.wc.machine_hours(panel.engine.now())
        assert core is not None
        assert (core["starts"], core["cycles"], core["parts"]) == (1, 4, 4)

        # six more cycles: the die check is due, listed first and flagged for the andon
        await panel.pulses(6)
        state = (await client.get("/api/state")).json()
        assert state["maintenance_due"] is True
        assert [s["name"] for s in state["machine"]["service"]] == ["die-check", "oil"]
        die = interval(state, "die-check")
        assert (die["due"], die["since_done"], die["remaining"]) == (True, 10, 0)
        assert die["due_since"] is not None
        assert interval(state, "oil")["due"] is False
        (due,) = await event_data(panel, "maintenance_due")
        assert (due["name"], due["measure"], due["every"], due["since_done"]) == (
            "die-check",
            "cycles",
            10,
            10,
        )
        # still due, once: more cycles raise no second event and count on past the interval
        await panel.pulses(3)
        state = (await client.get("/api/state")).json()
        assert interval(state, "die-check")["remaining"] == -3
        assert len(await event_data(panel, "maintenance_due")) == 1


async def test_a_gateway_without_machine_hours_shows_none(tmp_path: Path) -> None:
    cfg = panel_config(tmp_path, extra="\n[machine]\nhours = false\n")
    async with running_panel(cfg) as panel, httpx.AsyncClient(base_url=panel.url) as client:
        await running(panel, client)
        await panel.pulses(3)
        state = (await client.get("/api/state")).json()
        assert state["machine"] is None
        assert state["maintenance_due"] is False


async def test_maintenance_is_asked_for_from_a_stop_once(tmp_path: Path) -> None:
    async with (
        running_panel(config(tmp_path)) as panel,
        httpx.AsyncClient(base_url=panel.url) as client,
    ):
        await running(panel, client)
        await panel.pulses(2)
        stop_id = await open_stop(panel)
        r = await post(
            client,
            "/api/commands/request-maintenance",
            stop_id=stop_id,
            note="Die stuck",
            operator="4242",
        )
        assert r.status_code == 200, r.text
        assert r.json()["events"] == ["maintenance_requested"]
        state = r.json()["state"]
        assert state["stop"]["stop_id"] == stop_id
        request_id = state["stop"]["maintenance_request"]
        assert request_id
        (asked,) = await event_data(panel, "maintenance_requested")
        assert asked["request_id"] == request_id
        assert (asked["stop_id"], asked["note"], asked["stop_open"]) == (stop_id, "Die stuck", True)
        (actor,) = await panel.rows("SELECT actor FROM event WHERE type = 'maintenance_requested'")
        assert actor == ("operator:4242",)

        # a second tap for the same stop: refused naming the stop, nothing more stored
        await settled(panel)
        before = await journal(panel)
        r = await post(client, "/api/commands/request-maintenance", stop_id=stop_id)
        assert r.status_code == 409, r.text
        error = r.json()
        assert (error["field"], error["value"]) == ("stop_id", stop_id)
        assert request_id in error["message"]
        assert await journal(panel) == before

        # the stop ended: still listed with its request
        await panel.machine(MachineState.RUNNING)
        await wait_until(lambda: panel.engine.wc.open_stop is None, what="the stop's end")
        stops = (await client.get("/api/state")).json()["stops"]
        listed = next(s for s in stops if s["stop_id"] == stop_id)
        assert (listed["open"], listed["maintenance_request"]) == (False, request_id)

        # a stop that does not exist
        await settled(panel)
        before = await journal(panel)
        r = await post(client, "/api/commands/request-maintenance", stop_id="nope-1")
        assert r.status_code == 409, r.text
        assert (r.json()["field"], r.json()["value"]) == ("stop_id", "nope-1")
        assert await journal(panel) == before


async def test_without_a_stop_a_note_is_needed(tmp_path: Path) -> None:
    async with (
        running_panel(config(tmp_path)) as panel,
        httpx.AsyncClient(base_url=panel.url) as client,
    ):
        await running(panel, client)
        await panel.pulses(1)
        await settled(panel)
        before = await journal(panel)
        r = await post(client, "/api/commands/request-maintenance")
        assert r.status_code == 409, r.text
        assert r.json()["field"] == "note"
        assert "note" in r.json()["message"]
        # an empty note is no note; a note with control characters is not words
        r = await post(client, "/api/commands/request-maintenance", note="")
        assert r.status_code == 422, r.text
        assert r.json()["field"] == "note"
        r = await post(client, "/api/commands/request-maintenance", note="oil\x00leak")
        assert r.status_code == 422, r.text
        assert r.json()["field"] == "note"
        assert await journal(panel) == before

        r = await post(client, "/api/commands/request-maintenance", note="Oil leak at the slide")
        assert r.status_code == 200, r.text
        assert r.json()["events"] == ["maintenance_requested"]
        (asked,) = await event_data(panel, "maintenance_requested")
        assert (asked["stop_id"], asked["note"]) == (None, "Oil leak at the slide")
        assert asked["request_id"]


async def test_only_a_supervisor_says_a_service_was_done(tmp_path: Path) -> None:
    async with (
        running_panel(config(tmp_path)) as panel,
        httpx.AsyncClient(base_url=panel.url) as client,
    ):
        await running(panel, client)
        await panel.pulses(12)
        state = (await client.get("/api/state")).json()
        assert state["maintenance_due"] is True
        await settled(panel)
        before = await journal(panel)

        # an operator: no supervisor session, refused before the core sees it
        r = await post(client, "/api/supervisor/service-done", name="die-check")
        assert r.status_code == 401, r.text
        assert r.json()["code"] == "supervisor_login_required"
        r = await post(client, "/api/supervisor/service-done", name="die-check", operator="4242")
        assert r.status_code == 401, r.text
        assert await journal(panel) == before

        headers = await login(client)
        # an interval nobody configured: refused naming the name, the known ones listed
        r = await client.post(
            "/api/supervisor/service-done",
            json={"command_id": "service-unknown-1", "name": "grease"},
            headers=headers,
        )
        assert r.status_code == 409, r.text
        error = r.json()
        assert (error["code"], error["field"], error["value"]) == (
            "unknown_service",
            "name",
            "grease",
        )
        assert "die-check" in error["message"]
        r = await client.post(
            "/api/supervisor/service-done",
            json={"command_id": "service-long-0001", "name": "x" * 5000},
            headers=headers,
        )
        assert (r.status_code, r.json()["field"]) == (422, "name")
        assert len(r.json()["message"]) < 300
        assert await journal(panel) == before

        r = await client.post(
            "/api/supervisor/service-done",
            json={"command_id": "service-done-0001", "name": "die-check", "note": "Die reground"},
            headers=headers,
        )
        assert r.status_code == 200, r.text
        assert r.json()["events"] == ["maintenance_done"]
        state = r.json()["state"]
        assert state["maintenance_due"] is False
        die = interval(state, "die-check")
        assert (die["due"], die["since_done"], die["remaining"], die["due_since"]) == (
            False,
            0,
            10,
            None,
        )
        assert die["done_at"] is not None
        (done,) = await event_data(panel, "maintenance_done")
        assert (done["name"], done["since_done"], done["note"]) == ("die-check", 12, "Die reground")
        assert done["due_since"] is not None
        (actor,) = await panel.rows("SELECT actor FROM event WHERE type = 'maintenance_done'")
        assert actor == ("supervisor:2001",)
        # counted again from there
        await panel.pulses(4)
        state = (await client.get("/api/state")).json()
        assert interval(state, "die-check")["since_done"] == 4
        assert state["maintenance_due"] is False
