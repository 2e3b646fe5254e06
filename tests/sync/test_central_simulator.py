"""The central simulator (ERP relay + dispatcher) against a real mosquitto."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt
import jsonschema  # type: ignore[import-untyped]
import pytest

from edge.sync import asyncapi
from edge.sync.contract import (
    Activities,
    ConfirmationBody,
    ConfirmationCancelBody,
    ConfirmationResultBody,
    Envelope,
    InboundEnvelope,
    Iso22400Times,
    QuantityByReason,
    topic,
)
from simulators.broker import Mosquitto
from simulators.central import DEMO_OPERATIONS, CentralSimulator, demo_dispatch

pytestmark = pytest.mark.timeout(60)

ROOT = "umh/v1/acme/plant1/stamping/line4/PRESS07"
EDGE_ID = "wc-press-07"
SCHEMAS = Path(__file__).resolve().parents[2] / "contract" / "schemas"
STEP = 10.0  # upper bound for any single wait


def idem(order: str, operation: str, counter: int, what: str = "conf") -> str:
    return hashlib.sha256(f"{EDGE_ID}|{order}|{operation}|0|{what}|{counter}".encode()).hexdigest()


_seq = iter(range(1, 1_000_000))


def confirmation(
    order: str = "4711",
    operation: str = "0010",
    counter: int = 1,
    *,
    yield_qty: int | str = 250,
    scrap: dict[str, int | str] | None = None,
    final: bool = False,
    key: str | None = None,
    msg_id: str | None = None,
    seq: int | None = None,
    historical: bool = False,
) -> dict[str, Any]:
    scrap = scrap or {}
    key = key or idem(order, operation, counter)
    body = ConfirmationBody(
        type="confirmation_created",
        event_time="2025-03-03T08:00:00.000Z",
        order_id=order,
        operation=operation,
        split=0,
        actor="system",
        conf_id=f"{order}/{operation}#{counter}",
        idem_key=key,
        confirmation_no="0000456789",
        conf_index=counter,
        kind="final" if final else "partial",
        final=final,
        unit="PC",
        material="FG-4711",
        work_center="PRESS07",
        yield_qty=yield_qty,
        scrap_qty=sum(int(v) for v in scrap.values()),
        rework_qty=0,
        scrap_by_reason=[QuantityByReason(code=c, qty=q) for c, q in scrap.items()],
        rework_by_reason=[],
        variance_reason=None,
        posting_date="2025-03-03",
        shift="2025-03-03/early",
        period_start="2025-03-03T06:00:00.000Z",
        period_end="2025-03-03T08:00:00.000Z",
        activities=Activities(setup_s=600.0, machine_s=6600.0, labour_s=6600.0),
        iso22400=Iso22400Times(AUST_s=600.0, APT_s=6600.0, ADT_s=0.0, waiting_s=0.0),
        retry=0,
    )
    env = Envelope[ConfirmationBody](
        schema_="mes.confirmation/1",
        msg_id=msg_id or str(uuid.uuid4()),
        idem_key=key,
        edge_id=EDGE_ID,
        boot_seq=1,
        seq=seq if seq is not None else next(_seq),
        ts_event_ms=1741000000000,
        ts_sent_ms=int(time.time() * 1000),
        historical=historical,
        body=body,
    )
    data: dict[str, Any] = json.loads(env.model_dump_json(by_alias=True))
    return data


def reversal(
    order: str, operation: str, counter: int, *, reverses: str | None = None
) -> dict[str, Any]:
    key = idem(order, operation, counter, "rev")
    body = ConfirmationCancelBody(
        type="confirmation_reversed",
        event_time="2025-03-03T08:15:00.000Z",
        order_id=order,
        operation=operation,
        split=0,
        conf_id=f"{order}/{operation}#{counter}",
        conf_index=counter,
        idem_key=key,
        reverses_idem_key=reverses or idem(order, operation, counter),
        yield_qty=0,
        scrap_qty=0,
        rework_qty=0,
        scrap_by_reason=[],
        rework_by_reason=[],
    )
    env = Envelope[ConfirmationCancelBody](
        schema_="mes.confirmation-cancel/1",
        msg_id=str(uuid.uuid4()),
        idem_key=key,
        edge_id=EDGE_ID,
        boot_seq=1,
        seq=next(_seq),
        ts_event_ms=1741000900000,
        ts_sent_ms=int(time.time() * 1000),
        historical=False,
        body=body,
    )
    data: dict[str, Any] = json.loads(env.model_dump_json(by_alias=True))
    return data


class FakeEdge:
    """The gateway's side of the wire, as a plain MQTT client (not the gateway under test)."""

    def __init__(self, client: aiomqtt.Client, root: str) -> None:
        self.client = client
        self.root = root
        self.messages: list[aiomqtt.Message] = []
        self.results: list[tuple[float, dict[str, Any]]] = []
        self._new = asyncio.Event()

    async def publish(self, path: str, payload: dict[str, Any] | bytes) -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        await self.client.publish(f"{self.root}/{path}", data, qos=1)

    async def listen(self) -> None:
        async for message in self.client.messages:
            self.messages.append(message)
            if message.topic.value.endswith("/_mes_v1/confirmation/result"):
                assert isinstance(message.payload, bytes)
                self.results.append((time.monotonic(), json.loads(message.payload)))
            self._new.set()

    async def result(
        self, key: str, status: str | None = None, timeout: float = STEP
    ) -> dict[str, Any]:
        """The first result envelope for ``key`` (with ``status``), checked against the contract."""

        async def find() -> dict[str, Any]:
            while True:
                self._new.clear()
                for _, env in self.results:
                    body = env["body"]
                    if body["idem_key"] == key and (status is None or body["status"] == status):
                        return env
                await self._new.wait()

        env = await asyncio.wait_for(find(), timeout)
        check_result(env)
        return env

    def results_for(self, key: str) -> list[dict[str, Any]]:
        return [env["body"] for _, env in self.results if env["body"]["idem_key"] == key]

    async def wait_topic(self, suffix: str, timeout: float = STEP) -> aiomqtt.Message:
        async def find() -> aiomqtt.Message:
            while True:
                self._new.clear()
                for m in self.messages:
                    if m.topic.value.endswith(suffix):
                        return m
                await self._new.wait()

        return await asyncio.wait_for(find(), timeout)


def check_result(env: dict[str, Any]) -> None:
    InboundEnvelope.model_validate(env)
    ConfirmationResultBody.model_validate(env["body"])
    assert env["schema"] == "mes.confirmation-result/1"
    schema = json.loads((SCHEMAS / "_mes_v1.confirmation.result.json").read_text())
    jsonschema.validate(env, schema)


@contextlib.asynccontextmanager
async def fake_edge(
    broker: Mosquitto, root: str = ROOT, *subscriptions: str
) -> AsyncIterator[FakeEdge]:
    client = aiomqtt.Client(
        broker.host,
        broker.port,
        identifier=f"fake-edge-{uuid.uuid4().hex[:6]}",
        protocol=aiomqtt.ProtocolVersion.V5,
    )
    async with client:
        for sub in (f"{root}/_mes_v1/confirmation/result", *subscriptions):
            await client.subscribe(sub, qos=1)
        edge = FakeEdge(client, root)
        task = asyncio.create_task(edge.listen())
        try:
            yield edge
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await task


@pytest.fixture
async def central(broker: Mosquitto) -> AsyncIterator[CentralSimulator]:
    async with CentralSimulator(broker.host, broker.port, roots=[ROOT]) as sim:
        yield sim


async def test_posted_then_duplicate(broker: Mosquitto, central: CentralSimulator) -> None:
    async with fake_edge(broker) as edge:
        msg = confirmation("4711", "0010", 1, yield_qty=250, scrap={"S01": 3})
        await edge.publish("_mes_v1/confirmation", msg)
        posted = await edge.result(msg["idem_key"])
        assert posted["body"]["status"] == "posted"
        assert set(posted["body"]["erp"]) >= {"confirmation_group", "confirmation_count"}
        assert posted["body"]["erp"]["confirmation_group"] == "0000456789"

        # the gateway resends: same msg_id, seq and idem_key, historical
        resend = dict(msg, historical=True, ts_sent_ms=msg["ts_sent_ms"] + 5000)
        await edge.publish("_mes_v1/confirmation", resend)
        dup = await edge.result(msg["idem_key"], "duplicate")
        assert dup["body"]["erp"] == posted["body"]["erp"]
        assert dup["msg_id"] != posted["msg_id"]  # every answer is a message of its own

    ledger = central.ledger
    assert ledger.count_by_idem() == {msg["idem_key"]: 1}
    assert ledger.arrivals_by_idem() == {msg["idem_key"]: 2}
    assert ledger.received["duplicates"] == 1
    assert ledger.received["historical"] == 1
    assert ledger.received["invalid"] == 0
    (row,) = ledger.posted()
    assert row["edge_id"] == EDGE_ID
    assert (row["order_id"], row["operation"], row["split"], row["conf_index"]) == (
        "4711",
        "0010",
        0,
        1,
    )
    assert row["kind"] == "partial"
    assert row["posting_date"] == "2025-03-03"
    assert row["scrap_by_reason"] == {"S01": 3}
    assert row["reversed"] is False
    totals = ledger.totals("4711", "0010")
    assert (totals["yield"], totals["scrap"], totals["rework"]) == (250, 3, 0)
    answer = await central.relay.wait_answer(msg["idem_key"], status="duplicate", timeout=STEP)
    assert answer.root == ROOT


async def test_rejected_order_then_corrected_resend(
    broker: Mosquitto, central: CentralSimulator
) -> None:
    central.relay.reject_order("4712", "order locked by user")
    async with fake_edge(broker) as edge:
        bad = confirmation("4712", "0010", 1)
        await edge.publish("_mes_v1/confirmation", bad)
        rejected = await edge.result(bad["idem_key"])
        assert rejected["body"]["status"] == "rejected"
        assert rejected["body"]["error"]["text"] == "order locked by user"
        assert central.ledger.posted() == []

        # other orders still post while 4712 is locked
        other = confirmation("4711", "0010", 1)
        await edge.publish("_mes_v1/confirmation", other)
        assert (await edge.result(other["idem_key"]))["body"]["status"] == "posted"

        central.relay.clear_rejections()
        retry_key = hashlib.sha256(f"{EDGE_ID}|4712|0010|0|conf|1|retry|1".encode()).hexdigest()
        fixed = confirmation("4712", "0010", 1, key=retry_key)
        await edge.publish("_mes_v1/confirmation", fixed)
        assert (await edge.result(retry_key))["body"]["status"] == "posted"
    assert central.ledger.totals("4712", "0010")["yield"] == 250
    assert central.ledger.received["rejected"] == 1


async def test_delayed_relay_answers_after_the_delay(
    broker: Mosquitto, central: CentralSimulator
) -> None:
    central.relay.delay_s = 0.8
    async with fake_edge(broker) as edge:
        msg = confirmation("4711", "0010", 1)
        sent = time.monotonic()
        await edge.publish("_mes_v1/confirmation", msg)
        await edge.result(msg["idem_key"], timeout=STEP)
        ((at, _),) = edge.results
        assert at - sent >= 0.7

        central.relay.set_delay(0)
        quick = confirmation("4711", "0010", 2)
        sent = time.monotonic()
        await edge.publish("_mes_v1/confirmation", quick)
        await edge.result(quick["idem_key"], timeout=STEP)
        assert edge.results[-1][0] - sent < 0.7


async def test_paused_relay_answers_after_resume(
    broker: Mosquitto, central: CentralSimulator
) -> None:
    central.relay.pause()
    async with fake_edge(broker) as edge:
        first, second = confirmation("4711", "0010", 1), confirmation("4711", "0010", 2)
        await edge.publish("_mes_v1/confirmation", first)
        await edge.publish("_mes_v1/confirmation", second)

        async def arrived() -> None:
            while len(central.ledger.inbox()) < 2:
                await asyncio.sleep(0.02)

        await asyncio.wait_for(arrived(), STEP)
        await asyncio.sleep(0.3)
        assert edge.results == []
        assert central.relay.pending == 2
        assert [r["status"] for r in central.ledger.inbox()] == [None, None]

        central.relay.resume()
        await edge.result(first["idem_key"], "posted")
        await edge.result(second["idem_key"], "posted")
        assert [env["body"]["idem_key"] for _, env in edge.results] == [
            first["idem_key"],
            second["idem_key"],
        ]
    assert [r["status"] for r in central.ledger.inbox()] == ["posted", "posted"]


async def test_reversal_marks_the_ledger(broker: Mosquitto, central: CentralSimulator) -> None:
    async with fake_edge(broker) as edge:
        c1 = confirmation("4711", "0010", 1, yield_qty=250)
        c2 = confirmation("4711", "0010", 2, yield_qty=250, scrap={"S03": 12})
        for msg in (c1, c2):
            await edge.publish("_mes_v1/confirmation", msg)
            await edge.result(msg["idem_key"], "posted")
        assert central.ledger.totals("4711", "0010")["yield"] == 500

        rev = reversal("4711", "0010", 2)
        await edge.publish("_mes_v1/confirmation/cancel", rev)
        answer = await edge.result(rev["idem_key"])
        assert answer["body"]["status"] == "posted"

        rows = {r["idem_key"]: r for r in central.ledger.posted()}
        assert rows[c2["idem_key"]]["reversed"] is True
        assert rows[c2["idem_key"]]["reversed_by"] == rev["idem_key"]
        assert rows[c1["idem_key"]]["reversed"] is False
        totals = central.ledger.totals("4711", "0010")
        assert (totals["yield"], totals["scrap"], totals["confirmations"]) == (250, 0, 1)

        await edge.publish("_mes_v1/confirmation/cancel", rev)
        await edge.result(rev["idem_key"], "duplicate")

        unknown = reversal("4711", "0010", 9)
        await edge.publish("_mes_v1/confirmation/cancel", unknown)
        refused = await edge.result(unknown["idem_key"])
        assert refused["body"]["status"] == "rejected"
        assert "no posted confirmation" in refused["body"]["error"]["text"]

        # a reversed confirmation's quantities count again: a new one carries them
        c3 = confirmation("4711", "0010", 3, yield_qty=480, final=True)
        await edge.publish("_mes_v1/confirmation", c3)
        await edge.result(c3["idem_key"], "posted")
    assert central.ledger.totals("4711", "0010")["yield"] == 730
    assert len(central.ledger.reversals()) == 1
    assert all(n == 1 for n in central.ledger.count_by_idem().values())


async def test_invalid_messages_are_counted_not_answered(
    broker: Mosquitto, central: CentralSimulator
) -> None:
    async with fake_edge(broker) as edge:
        await edge.publish("_mes_v1/confirmation", b"not json")
        broken = confirmation("4711", "0010", 1)
        del broken["body"]["posting_date"]
        await edge.publish("_mes_v1/confirmation", broken)
        wrong_schema = confirmation("4711", "0010", 2)
        wrong_schema["schema"] = "mes.stop/1"
        await edge.publish("_mes_v1/confirmation", wrong_schema)
        bad_qty = confirmation("4711", "0010", 3)
        bad_qty["body"]["yield_qty"] = "lots"  # what the models would refuse to build
        await edge.publish("_mes_v1/confirmation", bad_qty)
        good = confirmation("4711", "0010", 4)
        await edge.publish("_mes_v1/confirmation", good)
        await edge.result(good["idem_key"], "posted")
        await asyncio.sleep(0.2)
        assert [env["body"]["idem_key"] for _, env in edge.results] == [good["idem_key"]]
    assert central.ledger.received["invalid"] == 4
    assert central.ledger.received["messages"] == 5
    assert len(central.ledger.posted()) == 1


async def test_dispatcher_messages_follow_the_contract(
    broker: Mosquitto, central: CentralSimulator
) -> None:
    async with fake_edge(
        broker, ROOT, f"{ROOT}/_mes_v1/order/#", f"{ROOT}/_mes_v1/masterdata"
    ) as edge:
        d = central.dispatcher
        ids = {
            "_mes_v1/order/dispatch": await d.send_dispatch(ROOT, 1, list(DEMO_OPERATIONS)),
            "_mes_v1/masterdata": await d.send_masterdata(
                ROOT,
                {
                    "version": 1,
                    "stop_reasons": [{"code": "M01", "text": "Material missing"}],
                    "scrap_reasons": [{"code": "S01", "text": "Burr"}],
                },
            ),
            "_mes_v1/order/cancel": await d.send_cancel(ROOT, "1000124", "0010"),
            "_mes_v1/order/hold": await d.send_hold(ROOT, "1000123", "0010", reason="quality"),
            "_mes_v1/order/release": await d.send_release(ROOT, "1000123", "0010", split=1),
        }

        async def all_arrived() -> None:
            while len(edge.messages) < len(ids):
                await asyncio.sleep(0.02)

        await asyncio.wait_for(all_arrived(), STEP)
        for message in edge.messages:
            path = message.topic.value.removeprefix(ROOT + "/")
            t = topic(path)
            assert isinstance(message.payload, bytes)
            payload = json.loads(message.payload)
            env = InboundEnvelope.model_validate(payload)
            t.model.model_validate(env.body)
            assert env.schema_ == t.schema
            assert env.msg_id == ids[path]
            schema = json.loads((SCHEMAS / asyncapi.schema_file_name(t)).read_text())
            jsonschema.validate(payload, schema)
            assert message.qos == 1

        dispatch = json.loads(
            next(m for m in edge.messages if m.topic.value.endswith("/dispatch")).payload
        )
        assert [o["order_id"] for o in dispatch["body"]["operations"]] == [
            "1000123",
            "1000124",
            "1000131",
        ]
        assert dispatch["body"]["operations"][0]["quantity"] == 1200

    # master data is retained: a gateway that connects later still gets it
    async with fake_edge(broker, ROOT, f"{ROOT}/_mes_v1/masterdata") as late:
        retained = await late.wait_topic("/_mes_v1/masterdata")
        assert retained.retain
        assert json.loads(retained.payload)["msg_id"] == ids["_mes_v1/masterdata"]

    with pytest.raises(ValueError, match="carries"):
        await central.dispatcher.send(
            ROOT, "_mes_v1/stop", InboundEnvelope(schema="x", msg_id="y", body={})
        )


async def test_dispatcher_keeps_what_the_gateway_answers(
    broker: Mosquitto, central: CentralSimulator
) -> None:
    async with fake_edge(broker) as edge:
        received = {
            "schema": "mes.order-received/1",
            "msg_id": str(uuid.uuid4()),
            "idem_key": None,
            "edge_id": EDGE_ID,
            "boot_seq": 1,
            "seq": 7,
            "ts_event_ms": 1,
            "ts_sent_ms": 2,
            "historical": False,
            "body": {
                "type": "dispatch_applied",
                "event_time": "2025-03-03T08:00:00.000Z",
                "version": 1,
                "operations": ["1000123/0010"],
            },
        }
        await edge.publish("_mes_v1/order/received", received)
        rejected = {
            "msg_id": "m-1",
            "topic": f"{ROOT}/_mes_v1/order/dispatch",
            "reason": "dispatch version 1 is older than the one held (2)",
            "field": "body.version",
            "value": "1",
            "ts_ms": 3,
        }
        await edge.publish("_mes_v1/rejected", rejected)
        await edge.publish("_mes_v1/rejected", {"nonsense": True})

        got = await central.dispatcher.wait_for("received", timeout=STEP)
        assert got.valid
        assert got.root == ROOT
        assert got.payload["body"]["version"] == 1
        refused = await central.dispatcher.wait_for(
            "rejected", lambda a: a.valid and a.payload["msg_id"] == "m-1", timeout=STEP
        )
        assert refused.payload["field"] == "body.version"
        invalid = await central.dispatcher.wait_for("rejected", lambda a: not a.valid, timeout=STEP)
        assert invalid.error
    assert len(central.dispatcher.rejected) == 2
    assert len(central.dispatcher.received) == 1


async def test_relay_state_online_then_offline(broker: Mosquitto) -> None:
    state_topic = "umh/v1/acme/_mes_v1/relay/state"
    async with fake_edge(broker, ROOT, state_topic) as edge:
        async with CentralSimulator(broker.host, broker.port, roots=[ROOT]) as sim:
            assert sim.relay.state_topics == [state_topic]
            online = await edge.wait_topic("/relay/state")
            assert json.loads(online.payload)["online"] is True

            async def two() -> None:
                while sum(m.topic.value == state_topic for m in edge.messages) < 2:
                    await asyncio.sleep(0.02)

        await asyncio.wait_for(two(), STEP)
        last = [m for m in edge.messages if m.topic.value == state_topic][-1]
        assert json.loads(last.payload)["online"] is False
    # and it stays retained for gateways that connect later
    async with fake_edge(broker, ROOT, state_topic) as late:
        retained = await late.wait_topic("/relay/state")
        assert retained.retain
        assert json.loads(retained.payload)["online"] is False


async def test_relay_survives_a_broker_restart(
    broker: Mosquitto, central: CentralSimulator
) -> None:
    async with fake_edge(broker) as edge:
        before = confirmation("4711", "0010", 1)
        await edge.publish("_mes_v1/confirmation", before)
        await edge.result(before["idem_key"], "posted")
    assert central.connects == 1

    await asyncio.to_thread(broker.restart, wipe=True)

    async def reconnected() -> None:
        while central.connects < 2 or not central.connected:
            await asyncio.sleep(0.05)

    await asyncio.wait_for(reconnected(), 20)
    state_topic = "umh/v1/acme/_mes_v1/relay/state"
    async with fake_edge(broker, ROOT, state_topic) as edge:
        # the retained relay state was wiped with the broker; the relay re-asserted it
        state = await edge.wait_topic("/relay/state")
        assert json.loads(state.payload)["online"] is True
        after = confirmation("4711", "0010", 2)
        await edge.publish("_mes_v1/confirmation", after)
        await edge.result(after["idem_key"], "posted")
        await edge.publish("_mes_v1/confirmation", before)  # the ledger outlived the restart
        await edge.result(before["idem_key"], "duplicate")
    assert central.ledger.totals("4711", "0010")["yield"] == 500


async def test_wildcard_root_serves_every_work_center(broker: Mosquitto, tmp_path: Path) -> None:
    other = "umh/v1/acme/plant1/stamping/line4/PRESS08"
    async with CentralSimulator(
        broker.host,
        broker.port,
        roots=["umh/v1/+/+/+/+/+"],
        ledger_path=tmp_path / "central.db",
        enterprise="acme",
    ) as sim:
        assert sim.relay.state_topics == ["umh/v1/acme/_mes_v1/relay/state"]
        async with fake_edge(broker, ROOT) as press7, fake_edge(broker, other) as press8:
            a = confirmation("4711", "0010", 1)
            b = confirmation("5811", "0010", 1)
            await press7.publish("_mes_v1/confirmation", a)
            await press8.publish("_mes_v1/confirmation", b)
            await press7.result(a["idem_key"], "posted")
            await press8.result(b["idem_key"], "posted")
            await asyncio.sleep(0.1)
            assert press7.results_for(b["idem_key"]) == []  # each answer goes to its own root
        roots = {r["order_id"]: r["root"] for r in sim.ledger.posted()}
        assert roots == {"4711": ROOT, "5811": other}
    # the file ledger keeps what was posted
    async with CentralSimulator(
        broker.host, broker.port, roots=[ROOT], ledger_path=tmp_path / "central.db"
    ) as again:
        assert len(again.ledger.posted()) == 2


async def test_cli_dispatch_demo(broker: Mosquitto, tmp_path: Path) -> None:
    async with fake_edge(
        broker, ROOT, f"{ROOT}/_mes_v1/order/dispatch", f"{ROOT}/_mes_v1/masterdata"
    ) as edge:
        proc = subprocess.Popen(
            [
                sys.executable, "-m", "simulators.central",
                "--host", broker.host, "--port", str(broker.port),
                "--root", ROOT, "--ledger", str(tmp_path / "c.db"),
                "--reject", "4712=order locked by user", "--dispatch-demo",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        try:
            dispatch = await edge.wait_topic("/_mes_v1/order/dispatch", timeout=20)
            body = json.loads(dispatch.payload)["body"]
            assert len(body["operations"]) == 3
            await edge.wait_topic("/_mes_v1/masterdata")
            bad = confirmation("4712", "0010", 1)
            await edge.publish("_mes_v1/confirmation", bad)
            answer = await edge.result(bad["idem_key"], timeout=20)
            assert answer["body"]["error"]["text"] == "order locked by user"
        finally:
            proc.send_signal(signal.SIGTERM)
            _, err = await asyncio.to_thread(proc.communicate, timeout=20)
        assert proc.returncode == 0, err.decode()
        assert b"relay_answered" in err


async def test_demo_dispatch_helper(broker: Mosquitto, central: CentralSimulator) -> None:
    async with fake_edge(broker, ROOT, f"{ROOT}/_mes_v1/order/dispatch") as edge:
        ids = await asyncio.wait_for(demo_dispatch(central, ROOT, version=2), STEP)
        message = await edge.wait_topic("/_mes_v1/order/dispatch")
        payload = json.loads(message.payload)
        assert payload["msg_id"] == ids[1]
        assert payload["body"]["version"] == 2
