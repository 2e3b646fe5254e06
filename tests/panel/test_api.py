"""The local API over HTTP against the real daemon: reads, commands, refusals, double taps, PIN."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from edge.domain.inputs import MachineState, Pulses
from edge.domain.model import ConfirmationStatus, OperationKey
from edge.panel.api import STATIC
from simulators.broker import Mosquitto
from tests.panel.conftest import (
    PIN,
    SUPERVISOR,
    Panel,
    panel_config,
    running_panel,
    spec,
    wait_http,
    wait_until,
)

OP = "4711/0020"
KEY = OperationKey("4711", "0020")


def cid() -> str:
    return str(uuid.uuid4())


async def post(client: httpx.AsyncClient, path: str, **body: Any) -> httpx.Response:
    body.setdefault("command_id", cid())
    return await client.post(path, json=body)


async def started(panel: Panel, client: httpx.AsyncClient) -> None:
    await panel.dispatch(spec("4711", "0020", 30, 10), spec("4712", "0010", 50, 20))
    r = await post(client, "/api/commands/start-production", op=OP)
    assert r.status_code == 200, r.text


async def login(client: httpx.AsyncClient) -> dict[str, str]:
    r = await client.post("/api/supervisor/login", json={"pin": PIN})
    assert r.status_code == 200, r.text
    return {"X-Supervisor-Token": r.json()["token"]}


async def test_reads_and_a_whole_operation_through_the_api(tmp_path: Path) -> None:
    async with (
        running_panel(panel_config(tmp_path)) as panel,
        httpx.AsyncClient(base_url=panel.url) as client,
    ):
        await panel.dispatch(spec("4711", "0020", 30, 10), spec("4712", "0010", 50, 20))
        state = (await client.get("/api/state")).json()
        assert [o["op"] for o in state["dispatch"]] == [OP, "4712/0010"]
        assert state["lamp"] == "yellow"
        assert state["state_key"] == "state.no_order"
        assert state["work_center"] == "PRESS07"
        assert {r["group"] for r in state["stop_reasons"]} == {"unplanned"}

        r = await post(client, "/api/commands/start-setup", op=OP)
        assert r.status_code == 200
        assert r.json()["events"] == ["operation_state_changed"]
        assert r.json()["state"]["lamp"] == "yellow"
        assert r.json()["state"]["state_key"] == "state.setup"
        await post(client, "/api/commands/start-production", op=OP)
        await panel.pulses(8)
        active = (await client.get("/api/active")).json()[0]
        assert (active["good"], active["target_qty"], active["status"]) == (8, 30, "running")
        assert set(active["time_elements"]) >= {"setup_s", "production_s", "down_s", "waiting_s"}
        assert (await client.get("/api/state")).json()["lamp"] == "green"

        await panel.machine(MachineState.DOWN)
        await wait_until(
            lambda: (
                panel.engine.wc.open_stop is not None and panel.engine.wc.open_stop.reason_requested
            ),
            what="reason request",
        )
        state = (await client.get("/api/state")).json()
        assert state["lamp"] == "red_blink"
        assert state["stop"]["reason_pending"] is True
        r = await post(client, "/api/commands/stop-reason", reason="M01")
        assert r.json()["events"] == ["stop_reason_set"]
        assert r.json()["state"]["lamp"] == "red"
        await panel.machine(MachineState.RUNNING)

        r = await post(client, "/api/commands/scrap", op=OP, qty=2, reason="S03")
        assert r.status_code == 200, r.text
        active = r.json()["state"]["active"][0]
        assert (active["good"], active["scrap"]) == (6, 2)
        assert active["scrap_by_reason"] == [{"code": "S03", "text": "Burr", "qty": 2}]

        r = await post(client, "/api/commands/confirm", op=OP)
        assert "confirmation_created" in r.json()["events"]
        r = await post(client, "/api/commands/complete", op=OP)
        assert r.status_code == 200
        confs = (await client.get("/api/confirmations")).json()
        assert [(c["counter"], c["final"], c["yield_qty"]) for c in confs] == [
            (2, True, 0),
            (1, False, 6),
        ]
        assert confs[0]["status"] == "awaiting_result"
        stops = (await client.get("/api/stops")).json()
        assert stops[0]["reason"] == "M01"
        assert stops[0]["reason_text"] == "Material missing"
        op = (await client.get("/api/operations/4711/0020")).json()
        assert op["status"] == "completed"
        # every command names the panel's operator as the actor
        actors = await panel.rows(
            "SELECT DISTINCT actor FROM event WHERE type IN "
            "('operation_state_changed', 'scrap_reported', 'stop_reason_set')"
        )
        assert actors == [("operator:panel",)]


async def test_a_refused_command_is_a_409_with_the_cores_message(tmp_path: Path) -> None:
    async with (
        running_panel(panel_config(tmp_path)) as panel,
        httpx.AsyncClient(base_url=panel.url) as client,
    ):
        await started(panel, client)
        r = await post(client, "/api/commands/resume", op=OP)
        assert r.status_code == 409
        body = r.json()
        assert body == {
            "ok": False,
            "code": "illegal_transition",
            "message": "operation 4711/0020 is running; cannot resume",
            "field": "action",
            "value": "resume",
            "state": "running",
            "action": "resume",
            "retry_after_s": None,
        }
        r = await post(client, "/api/commands/start-setup", op="4712/0010")
        assert r.status_code == 409
        assert r.json()["code"] == "operation_active"
        assert "4711/0020 is running" in r.json()["message"]
        r = await post(client, "/api/commands/start-setup", op="9999/0010")
        assert (r.status_code, r.json()["field"], r.json()["value"]) == (409, "op", "9999/0010")


async def test_bad_quantities_are_refused_and_nothing_is_stored(tmp_path: Path) -> None:
    async with (
        running_panel(panel_config(tmp_path)) as panel,
        httpx.AsyncClient(base_url=panel.url) as client,
    ):
        await started(panel, client)
        await panel.pulses(5)
        journal_sql = "SELECT COUNT(*) FROM journal WHERE input_type != 'Tick'"
        journal = await panel.rows(journal_sql)
        cases: list[tuple[object, int, str]] = [
            (-3, 422, "qty = -3: must be greater than 0"),
            (0, 422, "qty = 0: must be greater than 0"),
            ("abc", 422, "qty = 'abc': not a number"),
            (1e12, 422, "qty = 1000000000000.0: must be less than 1000000"),
            ("1.23456", 422, "qty = '1.23456': at most 3 decimals"),
            (None, 422, "qty = None"),
            (999_999, 409, "qty = 999999: more than the 5 PC good parts"),
        ]
        for qty, status, message in cases:
            r = await post(client, "/api/commands/scrap", op=OP, qty=qty, reason="S03")
            assert r.status_code == status, (qty, r.text)
            assert r.json()["message"].startswith(message), (qty, r.json())
            assert r.json()["field"] == "qty"
        r = await post(client, "/api/commands/scrap", op=OP, qty=1, reason="NOPE")
        assert (r.status_code, r.json()["code"]) == (409, "unknown_reason")
        r = await post(client, "/api/commands/split", op=OP, quantity=-1)
        assert (r.status_code, r.json()["field"]) == (422, "quantity")
        r = await client.post("/api/commands/scrap", json={"op": OP, "qty": 1, "reason": "S03"})
        assert (r.status_code, r.json()["message"]) == (422, "command_id: missing")
        r = await client.post(
            "/api/commands/scrap", content=b"{no json", headers={"content-type": "application/json"}
        )
        assert r.status_code == 422
        assert await panel.rows(journal_sql) == journal
        assert panel.engine.wc.operations[KEY].counted.good == 5
        assert not panel.engine.wc.operations[KEY].counted.scrap


async def test_the_same_command_twice_acts_once(tmp_path: Path) -> None:
    cfg = panel_config(tmp_path)
    command_id = cid()
    async with running_panel(cfg) as panel, httpx.AsyncClient(base_url=panel.url) as client:
        await started(panel, client)
        await panel.pulses(5)
        first = await post(
            client, "/api/commands/scrap", op=OP, qty=1, reason="S03", command_id=command_id
        )
        again = await post(
            client, "/api/commands/scrap", op=OP, qty=1, reason="S03", command_id=command_id
        )
        assert (first.json()["duplicate"], again.json()["duplicate"]) == (False, True)
        assert again.json()["events"] == []
        # a double tap: both requests in flight at once
        twin = cid()
        both = await asyncio.gather(
            *(
                post(client, "/api/commands/scrap", op=OP, qty=1, reason="S03", command_id=twin)
                for _ in range(2)
            )
        )
        assert sorted(r.json()["duplicate"] for r in both) == [False, True]
        assert panel.engine.wc.operations[KEY].counted.scrap == {"S03": 2}
    # after a restart the id is still known (the journal keeps it)
    async with running_panel(cfg) as panel, httpx.AsyncClient(base_url=panel.url) as client:
        again = await post(
            client, "/api/commands/scrap", op=OP, qty=1, reason="S03", command_id=command_id
        )
        assert again.status_code == 200
        assert again.json()["duplicate"] is True
        assert panel.engine.wc.operations[KEY].counted.scrap == {"S03": 2}
        reports = await panel.rows("SELECT COUNT(*) FROM event WHERE type = 'scrap_reported'")
        assert reports == [(2,)]


async def test_supervisor_pin_lockout_and_actions_name_the_supervisor(tmp_path: Path) -> None:
    async with (
        running_panel(panel_config(tmp_path, lockout_s=1.0)) as panel,
        httpx.AsyncClient(base_url=panel.url) as client,
    ):
        await started(panel, client)
        await panel.pulses(12)  # a partial confirmation at 10
        r = await post(client, "/api/supervisor/reverse", op=OP, counter=1)
        assert (r.status_code, r.json()["code"]) == (401, "supervisor_login_required")

        for left in (2, 1):
            r = await client.post("/api/supervisor/login", json={"pin": "0000"})
            assert (r.status_code, r.json()["code"]) == (403, "wrong_pin")
            assert r.json()["message"] == f"wrong PIN; {left} more tries before a lockout"
        r = await client.post("/api/supervisor/login", json={"pin": "0000"})
        assert (r.status_code, r.json()["code"]) == (429, "pin_locked")
        assert r.headers["Retry-After"] == "1"
        # while locked even the right PIN is refused, so guessing gains nothing
        r = await client.post("/api/supervisor/login", json={"pin": PIN})
        assert r.status_code == 429
        r = await client.post("/api/supervisor/login", json={"pin": "12ab"})
        assert r.status_code == 429
        await asyncio.sleep(1.1)
        headers = await login(client)

        r = await client.post(
            "/api/supervisor/reverse",
            json={"command_id": cid(), "op": OP, "counter": 1},
            headers=headers,
        )
        assert r.status_code == 200, r.text
        assert panel.engine.wc.confirmations[f"{OP}#1"].reversed
        r = await client.post(
            "/api/supervisor/correct-count",
            json={"command_id": cid(), "op": OP, "good_delta": -2, "reason": "Parts recounted"},
            headers=headers,
        )
        assert r.status_code == 200, r.text
        assert panel.engine.wc.operations[KEY].counted.good == 10
        stop_id = None
        await panel.machine(MachineState.DOWN)
        await post(client, "/api/commands/stop-reason", reason="M01")
        await panel.machine(MachineState.RUNNING)
        stop_id = next(iter(panel.engine.wc.stops))
        r = await client.post(
            "/api/supervisor/reclassify-stop",
            json={"command_id": cid(), "stop_id": stop_id, "reason": "M01"},
            headers=headers,
        )
        assert (r.status_code, r.json()["code"]) == (409, "invalid_value")  # same reason again
        r = await client.post(
            "/api/supervisor/cancel", json={"command_id": cid(), "op": OP}, headers=headers
        )
        assert r.status_code == 200
        actors = await panel.rows(
            "SELECT type, actor FROM event WHERE type IN "
            "('confirmation_reversed', 'count_corrected', 'operation_state_changed') ORDER BY id"
        )
        assert ("confirmation_reversed", f"supervisor:{SUPERVISOR}") in actors
        assert ("count_corrected", f"supervisor:{SUPERVISOR}") in actors
        assert actors[-1] == ("operation_state_changed", f"supervisor:{SUPERVISOR}")

        # an operator's command on the order cancelled meanwhile: refused with the reason
        r = await post(client, "/api/commands/scrap", op=OP, qty=1, reason="S03")
        assert (r.status_code, r.json()["code"]) == (409, "operation_finished")
        assert r.json()["message"] == "operation 4711/0020 is cancelled"

        await client.post("/api/supervisor/logout", headers=headers)
        r = await client.get("/api/supervisor/session", headers=headers)
        assert r.status_code == 401


async def test_resend_of_a_rejected_confirmation(tmp_path: Path) -> None:
    from edge.domain.inputs import ConfirmationResult, ResultStatus

    async with (
        running_panel(panel_config(tmp_path)) as panel,
        httpx.AsyncClient(base_url=panel.url) as client,
    ):
        await started(panel, client)
        await panel.pulses(10)
        conf = panel.engine.wc.confirmations[f"{OP}#1"]
        await panel.engine.submit(
            ConfirmationResult(
                conf.idem_key, ResultStatus.REJECTED, panel.engine.now(), "order locked by user"
            )
        )
        listed = (await client.get("/api/confirmations")).json()[0]
        assert (listed["status"], listed["erp_message"]) == ("rejected", "order locked by user")
        # While it stands rejected: a partial confirmation is refused with the ERP's text, and
        # completing withholds the final one (the panel says so on the ERP tab).
        await panel.pulses(5)
        r = await post(client, "/api/commands/confirm", op=OP)
        assert r.status_code == 409
        assert "order locked by user" in r.json()["message"]
        r = await post(client, "/api/commands/complete", op=OP, variance_reason="CYCLE")
        assert r.status_code == 200, r.text
        (done,) = [o for o in r.json()["state"]["finished"] if o["op"] == OP]
        assert done["final_withheld"] is True
        headers = await login(client)
        r = await client.post(
            "/api/supervisor/resend",
            json={"command_id": cid(), "op": OP, "counter": 1},
            headers=headers,
        )
        assert r.status_code == 200, r.text
        assert conf.status is ConfirmationStatus.AWAITING_RESULT
        assert conf.retries == 1
        assert "confirmation_created" in r.json()["events"]  # the final one, released
        (done,) = [o for o in r.json()["state"]["finished"] if o["op"] == OP]
        assert done["final_withheld"] is False


async def test_help_calls(tmp_path: Path) -> None:
    async with (
        running_panel(panel_config(tmp_path)) as panel,
        httpx.AsyncClient(base_url=panel.url) as client,
    ):
        r = await post(client, "/api/commands/call-help", category="maintenance")
        assert r.status_code == 200, r.text
        state = r.json()["state"]
        assert state["lamp"] == "blue"
        call = state["help_calls"][0]
        r = await post(client, "/api/commands/call-help", category="maintenance")
        assert r.status_code == 409
        r = await post(client, "/api/commands/acknowledge-help", call_id=call["call_id"])
        assert r.json()["state"]["help_calls"][0]["acknowledged_by"] == "operator:panel"
        r = await post(client, "/api/commands/close-help", call_id=call["call_id"])
        assert r.json()["state"]["help_calls"] == []
        r = await post(client, "/api/commands/call-help", category="coffee")
        assert (r.status_code, r.json()["field"]) == (409, "category")


async def test_event_stream_pushes_a_snapshot_after_each_commit(tmp_path: Path) -> None:
    async with (
        running_panel(panel_config(tmp_path)) as panel,
        httpx.AsyncClient(base_url=panel.url, timeout=10) as client,
    ):
        await started(panel, client)
        seen: list[dict[str, Any]] = []

        async def listen() -> None:
            async with client.stream("GET", "/api/events") as stream:
                assert stream.headers["content-type"].startswith("text/event-stream")
                async for line in stream.aiter_lines():
                    if line.startswith("data: "):
                        seen.append(json.loads(line[6:]))
                        if seen[-1]["active"] and seen[-1]["active"][0]["good"] == 3:
                            return

        listener = asyncio.create_task(listen())
        await wait_until(lambda: bool(seen), what="first snapshot")
        t0 = time.monotonic()
        await panel.pulses(3)
        await asyncio.wait_for(listener, 5)
        assert time.monotonic() - t0 < 1.0
        assert seen[-1]["revision"] > seen[0]["revision"]
        assert seen[-1]["boot"] == seen[0]["boot"]


async def test_openapi_and_local_assets(tmp_path: Path) -> None:
    async with (
        running_panel(panel_config(tmp_path)) as panel,
        httpx.AsyncClient(base_url=panel.url) as client,
    ):
        doc = (await client.get("/openapi.json")).json()
        for path in (
            "/api/state",
            "/api/commands/start-setup",
            "/api/commands/scrap",
            "/api/commands/stop-reason",
            "/api/commands/split",
            "/api/supervisor/reverse",
            "/api/events",
        ):
            assert path in doc["paths"], path
        scrap = doc["paths"]["/api/commands/scrap"]["post"]
        assert scrap["responses"]["409"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/ErrorBody"
        }
        assert {"PanelState", "ScrapCommand", "CommandResult"} <= set(doc["components"]["schemas"])
        page = await client.get("/")
        assert page.status_code == 200
        assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        assert assets
        assert all(a.startswith("/static/") for a in assets)
        for asset in assets:
            assert (await client.get(asset)).status_code == 200
        for name in ("en", "de"):
            assert (await client.get(f"/i18n/{name}.json")).status_code == 200
        assert (await client.get("/i18n/fr.json")).status_code == 404
        # nothing from outside the gateway: no CDN, no web fonts
        for path in STATIC.iterdir():
            text = path.read_text()
            assert not re.search(r"https?://", text), path
        assert (await client.get("/docs")).status_code == 404


def test_catalogs_have_the_same_keys() -> None:
    en = json.loads((STATIC.parent / "i18n" / "en.json").read_text())
    de = json.loads((STATIC.parent / "i18n" / "de.json").read_text())
    assert set(en) == set(de)
    js = (STATIC / "panel.js").read_text()
    used = set(re.findall(r"t\('([a-z_]+(?:\.[a-z_]+)+)'\s*[,)]", js))
    assert used <= set(en), used - set(en)


async def test_a_busy_port_does_not_stop_the_gateway(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        cfg = panel_config(tmp_path, port=port)
        from tests.gateway.conftest import gateway

        async with gateway(cfg) as gw:
            await asyncio.sleep(0.5)
            assert not gw.task.done()
            # the gateway works on: operator inputs from elsewhere are still taken
            counted = await gw.engine.submit(Pulses("press_good", 3, gw.engine.now()))
            assert counted.accepted
            squatter.close()
            await wait_http(f"http://127.0.0.1:{port}/api/health", timeout=5)


async def test_shutdown_with_a_live_event_stream_is_prompt(tmp_path: Path) -> None:
    cfg = panel_config(tmp_path)
    async with (
        running_panel(cfg) as panel,
        httpx.AsyncClient(base_url=panel.url, timeout=10) as client,
    ):

        async def hold() -> None:
            async with client.stream("GET", "/api/events") as stream:
                async for _ in stream.aiter_lines():
                    pass

        holder = asyncio.create_task(hold())
        await asyncio.sleep(0.3)
        t0 = time.monotonic()
        await panel.gw.close()
        assert time.monotonic() - t0 < 3.0
        await asyncio.wait_for(holder, 3)


async def test_malformed_pins_count_as_wrong(tmp_path: Path) -> None:
    async with (
        running_panel(panel_config(tmp_path)) as panel,
        httpx.AsyncClient(base_url=panel.url) as client,
    ):
        r = await client.post("/api/supervisor/login", json={"pin": ""})
        assert (r.status_code, r.json()["field"]) == (422, "pin")
        for pin, status in (("12", 403), ("abcd", 403), ("1234567890123", 429)):
            r = await client.post("/api/supervisor/login", json={"pin": pin})
            assert r.status_code == status, pin


async def test_metrics_are_served_beside_the_panel(tmp_path: Path, broker: Mosquitto) -> None:
    """/metrics on the panel's port, with the MQTT uplink and the links of the running daemon."""
    async with (
        running_panel(panel_config(tmp_path, broker=broker)) as panel,
        httpx.AsyncClient(base_url=panel.url) as client,
    ):
        await panel.dispatch(spec("4711", "0020", 30, 10))
        deadline = time.monotonic() + 5
        while True:
            r = await client.get("/metrics")
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/plain")
            text = r.text
            if "edge_mqtt_connected 1" in text and "edge_mqtt_acked_total 0" not in text:
                break
            assert time.monotonic() < deadline, text
            await asyncio.sleep(0.1)
    assert "edge_up 1" in text
    assert "# TYPE edge_outbox_oldest_age_seconds gauge" in text
    assert "edge_mqtt_relay_online 1" in text
    # Every acknowledged publish is in the latency histogram, up to its +Inf bucket.
    acked = int(re.search(r"^edge_mqtt_acked_total (\d+)$", text, re.M)[1])  # type: ignore[index]
    inf = re.search(r'^edge_mqtt_publish_seconds_bucket\{le="\+Inf"\} (\d+)$', text, re.M)
    assert inf is not None
    assert int(inf[1]) >= acked > 0


async def test_pin_lockout_is_per_client_and_survives_a_restart(tmp_path: Path) -> None:
    """Wrong PINs from one address lock only that address, and a restart gives no fresh tries."""
    cfg = panel_config(tmp_path, lockout_s=30.0)

    def clients(url: str) -> tuple[httpx.AsyncClient, httpx.AsyncClient]:
        # Another loopback address as the source: another client to the daemon.
        other = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
        return httpx.AsyncClient(base_url=url, transport=other), httpx.AsyncClient(base_url=url)

    async with running_panel(cfg) as panel:
        attacker, panel_screen = clients(panel.url)
        async with attacker, panel_screen:
            for _ in range(3):
                r = await attacker.post("/api/supervisor/login", json={"pin": "0000"})
            assert (r.status_code, r.json()["code"]) == (429, "pin_locked")
            r = await attacker.post("/api/supervisor/login", json={"pin": PIN})
            assert r.status_code == 429
            await login(panel_screen)  # the supervisor at the screen is not locked out
            r = await panel_screen.post("/api/supervisor/login", json={"pin": "0000"})
            assert r.json()["message"] == "wrong PIN; 2 more tries before a lockout"
    state = tmp_path / "edge.pin-lockout.json"
    assert "127.0.0.2" in json.loads(state.read_text())["clients"]

    async with running_panel(cfg) as panel:  # the daemon restarted
        attacker, panel_screen = clients(panel.url)
        async with attacker, panel_screen:
            r = await attacker.post("/api/supervisor/login", json={"pin": PIN})
            assert (r.status_code, r.json()["code"]) == (429, "pin_locked")
            assert 20 <= int(r.headers["Retry-After"]) <= 30
            await login(panel_screen)


async def test_a_contradicting_late_verdict_is_shown_not_applied(tmp_path: Path) -> None:
    from edge.domain.inputs import ConfirmationResult, ResultStatus

    async with (
        running_panel(panel_config(tmp_path)) as panel,
        httpx.AsyncClient(base_url=panel.url) as client,
    ):
        await started(panel, client)
        await panel.pulses(10)
        conf = panel.engine.wc.confirmations[f"{OP}#1"]
        engine = panel.engine
        await engine.submit(ConfirmationResult(conf.idem_key, ResultStatus.POSTED, engine.now()))
        await engine.submit(
            ConfirmationResult(conf.idem_key, ResultStatus.REJECTED, engine.now(), "no mapping")
        )
        listed = (await client.get("/api/confirmations")).json()[0]
        assert listed["status"] == "posted"
        assert listed["verdict_conflicts"] == 1
        assert listed["last_conflict"] == "rejected after posted: no mapping"
        # Nothing to resend: the posting stands.
        headers = await login(client)
        r = await client.post(
            "/api/supervisor/resend",
            json={"command_id": cid(), "op": OP, "counter": 1},
            headers=headers,
        )
        assert r.status_code == 409
