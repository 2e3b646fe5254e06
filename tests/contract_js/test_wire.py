"""The contract against a real run: the gateway and the ERP relay (the real ones, with a SAP
stand-in and an ERP dropping LOIPRO IDocs for the orders) on a private mosquitto, and a consumer
subscribed to ``#`` that keeps every message with its MQTT 5 properties.

- every message carries Payload Format Indicator 1 and Content Type application/json (what the
  AsyncAPI message bindings declare) and no user property (the contract's decision);
- every topic published is a channel of asyncapi.json with a send operation, and every channel
  with a send operation was published in the run; every subscription the gateway and the relay
  made (mosquitto's log) is a channel with a receive operation of that application, and all of
  them were made; retain flags are the documented ones;
- every captured payload is valid against its channel's schema, by Ajv (a validator we did not
  write, tests/contract_js/validate.js) and by the Python jsonschema.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest

from edge.config import ReportSection
from edge.domain.inputs import (
    Action,
    BadgeScanned,
    CallForHelp,
    ComponentBatchLoaded,
    ComponentConsumed,
    DriftReported,
    MachineState,
    MachineStateChanged,
    Pulses,
    ReportScrap,
    RequestMaintenance,
    ReverseConfirmation,
    SourceRestarted,
    Tick,
    Transition,
)
from edge.domain.model import ConfirmationStatus, OperationKey, OperationStatus
from edge.report import scheduled_review
from edge.sync.asyncapi import schema_file_name
from edge.sync.contract import CHANNELS, CONTENT_TYPE, PAYLOAD_FORMAT_INDICATOR, Topic
from simulators.broker import Mosquitto, find_mosquitto
from simulators.erp.order_files import Component, Operation, Order, OrderFiles
from simulators.erp.sap import SapStandIn
from tests.contract_js.wire import (
    CONTRACT,
    Capture,
    Captured,
    channel_address,
    run_validators,
    subscriptions,
    validators,
)
from tests.gateway.conftest import ROOT, gateway, gateway_config
from tests.relay.harness import relay_config, running_relay, sqlite_url, until

pytestmark = pytest.mark.timeout(120)

ENTERPRISE = "acme"
GATEWAY_ID = "edge-wc-press-07"  # the gateway config's client id (edge-<edge_id>)
RELAY_ID = "edge-relay-contract"
A = OperationKey("4711", "0020")
B = OperationKey("4712", "0010")


@dataclass
class Run:
    broker_log: Path
    messages: list[Captured]  # what the gateway and the relay published
    roots: tuple[str, ...]  # the gateway's root and the relay's subscription filters


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    try:
        find_mosquitto()
    except FileNotFoundError as exc:  # pragma: no cover - the test scripts install it
        pytest.skip(str(exc))
    tmp = tmp_path_factory.mktemp("wire")
    with Mosquitto(tmp / "broker", extra_config="log_type subscribe\n") as broker:
        capture = Capture(broker.host, broker.port).start()
        try:
            asyncio.run(_plant(tmp, broker, capture))
        finally:
            capture.stop()
        messages = capture.published_by_others()
        yield Run(broker.log_file, messages, (ROOT, f"umh/v1/{ENTERPRISE}/+/+/+/+"))


def _relay_cfg(tmp: Path, broker: Mosquitto, sap: SapStandIn, inbox: Path) -> Any:
    secret = tmp / "sap-password"
    secret.write_text("relay-secret\n")
    erp = {
        "system": "sap",
        "service_url": sap.url,
        "user": "RELAY",
        "password_file": str(secret),
        "timeout_s": 2.0,
        "variance_reasons": {"CYCLE": "0001"},
    }
    base = relay_config(
        broker, sqlite_url(tmp / "ledger.db"), erp, instance="contract", kpi_interval_s=0.5
    )
    data = base.model_dump(mode="python")
    data["mqtt"]["client_id"] = RELAY_ID
    for name in ("archive", "errors"):
        (tmp / name).mkdir()
    data["dispatch"] = {
        "enabled": True,
        "interval_s": 1.0,
        "work_centers": [{"work_center": "PRESS07", "root": ROOT}],
        "source": {
            "system": "file",
            "format": "loipro",
            "inbox_dir": str(inbox),
            "archive_dir": str(tmp / "archive"),
            "error_dir": str(tmp / "errors"),
            "state_file": str(tmp / "orders.json"),
            "settle_s": 0.0,
        },
    }
    return type(base).model_validate(data)


# A badge to log in with and a service interval that falls due at the first stroke.
EXTRA = """
[[badges]]
badge = "00012345"
personnel = "12345"
name = "Ana Weber"

[[service]]
name = "die"
measure = "cycles"
every = 1
text = "check the die"
"""


def _central(schema: str, body: dict[str, Any]) -> bytes:
    envelope = {"schema": schema, "msg_id": str(uuid.uuid4()), "ts_ms": 1, "body": body}
    return json.dumps(envelope).encode()


async def _plant(tmp: Path, broker: Mosquitto, capture: Capture) -> None:
    inbox = tmp / "inbox"
    inbox.mkdir()
    files = OrderFiles(inbox)
    a = Order(
        order_id=A.order,
        material="FG-4711",
        quantity=Decimal(500),
        unit="PC",
        operations=(
            Operation(
                number=A.operation,
                work_center="PRESS07",
                text="Stamp",
                components=(
                    Component("COIL-2MM", Decimal(50), "KG", backflush=True, batch_managed=True),
                    Component("LABEL-7", Decimal(500), "PC", item="0002"),
                ),
            ),
        ),
    )
    b = Order(
        order_id=B.order,
        material="FG-4712",
        quantity=Decimal(50),
        unit="PC",
        operations=(Operation(number=B.operation, work_center="PRESS07", text="Bend"),),
    )
    files.loipro(a, b)
    async with (
        SapStandIn(user="RELAY", password="relay-secret") as sap,
        running_relay(_relay_cfg(tmp, broker, sap, inbox)) as relay,
        gateway(gateway_config(tmp, broker, extra=EXTRA)) as gw,
    ):
        e = gw.engine
        ops = e.wc.operations
        await until(lambda: A in ops and B in ops, 15, "the dispatch list from the IDoc")
        # central's own messages (not the relay's): master data, a resync, a bad command
        capture.publish(
            f"{ROOT}/_mes_v1/masterdata",
            _central(
                "mes.masterdata/1",
                {
                    "version": 1,
                    "stop_reasons": [{"code": "M01", "text": "Material missing"}],
                    "scrap_reasons": [{"code": "S03", "text": "Burr"}],
                },
            ),
            retain=True,
        )
        capture.publish(f"{ROOT}/_mes_v1/cmd/resync", _central("mes.resync/1", {}))
        capture.publish(f"{ROOT}/_mes_v1/order/hold", _central("mes.hold/1", {"order_id": 1}))
        await e.submit(Transition(Action.START_PRODUCTION, str(A), "operator:7", e.now()))
        loaded = await e.submit(
            ComponentBatchLoaded("C1", "operator:7", e.now(), material="COIL-2MM")
        )
        assert loaded.accepted, loaded.rejection
        used = await e.submit(ComponentConsumed("LABEL-7", Decimal(10), "operator:7", e.now()))
        assert used.accepted, used.rejection
        badge = await e.submit(BadgeScanned("00012345", "scanner:front", e.now()))
        assert badge.accepted, badge.rejection
        await e.submit(Pulses("press_good", 10, e.now()))
        await until(lambda: f"{A}#1" in e.wc.confirmations, 10, "confirmation #1")
        await until(lambda: bool(capture.on("/_mes_v1/maintenance")), 10, "the die due")
        capture.publish(
            f"{ROOT}/_mes_v1/maintenance/done",
            _central("mes.maintenance-done/1", {"name": "die", "note": "reground"}),
        )
        await until(lambda: not e.wc.andon.maintenance_due, 10, "the die done by central")
        asked = await e.submit(RequestMaintenance("operator:12345", e.now(), None, "oil leak"))
        assert asked.accepted, asked.rejection
        conf = e.wc.confirmations[f"{A}#1"]
        await until(lambda: conf.status is ConfirmationStatus.POSTED, 15, "the posting")
        await e.submit(Pulses("press_good", 2, e.now()))  # not confirmed yet: scrap comes off
        out = await e.submit(ReportScrap(Decimal(1), "S03", "operator:7", e.now(), op=str(A)))
        assert out.accepted, out.rejection
        await e.submit(MachineStateChanged("press", MachineState.DOWN, e.now(), alarm="E101"))
        await e.submit(MachineStateChanged("press", MachineState.RUNNING, e.now()))
        category = e.wc.rules.help_categories[0]
        await e.submit(CallForHelp(category, "button:call", e.now()))
        await e.submit(SourceRestarted("press_good", e.now()))
        await e.submit(ReverseConfirmation(str(A), 1, "supervisor:1", e.now()))
        # the ERP holds, releases and closes order B: the relay tells the gateway
        files.loipro(b.locked())
        await until(lambda: ops[B].status is OperationStatus.HELD, 15, "the hold")
        files.loipro(b.locked().unlocked())
        await until(lambda: ops[B].status is not OperationStatus.HELD, 15, "the release")
        files.loipro(b.teco())
        await until(lambda: ops[B].status is OperationStatus.CANCELLED, 15, "the cancel")
        await until(lambda: bool(capture.on("/relay/kpi")), 10, "the relay's KPI")
        await until(lambda: relay.stats.answers.get("posted", 0) >= 2, 15, "the reversal")
        await until(lambda: bool(capture.on("/_mes_v1/rejected")), 10, "the refusal")
        await until(lambda: bool(capture.on("/_mes_v1/andon")), 10, "the andon call")
        await until(lambda: bool(capture.on("/_mes_v1/kpi/current")), 10, "the shift so far")
        # the operator completes A (short of its quantity, with the reason): its order KPIs
        done = await e.submit(
            Transition(Action.COMPLETE, str(A), "operator:7", e.now(), variance_reason="CYCLE")
        )
        assert done.accepted, done.rejection
        await until(lambda: bool(capture.on("/_mes_v1/kpi/operation")), 10, "A's order KPIs")
        # the routing-drift review, as [report] drift_every_days makes and sends it
        body = await asyncio.to_thread(
            scheduled_review, e.store.path, ReportSection(), e.now().wall_ms
        )
        sent = await e.submit(DriftReported(json.dumps(body), e.now()))
        assert sent.accepted, sent.rejection
        await until(lambda: bool(capture.on("/_mes_v1/report/drift")), 10, "the drift review")
        # a shift ends (a tick a day on: the default calendar has one shift a day): the closed
        # shift's KPIs go out, and the day's
        await e.submit(Tick(e.now().after_ms(86_400_000)))
        await until(lambda: bool(capture.on("/_mes_v1/kpi/shift")), 10, "the closed shift")
        await until(lambda: bool(capture.on("/_mes_v1/kpi/day")), 10, "the closed day")
    await asyncio.sleep(0.3)  # the offline health and relay state of the clean stops


def _channels() -> dict[str, Topic]:
    return {t.address: t for t in CHANNELS}


def _document() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((CONTRACT / "asyncapi.json").read_text())
    return doc


def _operations(app: str, action: str) -> set[str]:
    """Addresses of the channels where ``app`` has an operation ``action`` in asyncapi.json."""
    doc = _document()
    found = set()
    for op in doc["operations"].values():
        # (untagged: the gateway's, as every operation was before the relay's were added)
        tags = {t["$ref"].rsplit("/", 1)[1] for t in op.get("tags", [{"$ref": "gateway"}])}
        if app in tags and op["action"] == action:
            cid = op["channel"]["$ref"].rsplit("/", 1)[1]
            found.add(doc["channels"][cid]["address"])
    return found


def _address(run: Run, topic: str) -> str:
    address = channel_address(topic, run.roots, ENTERPRISE)
    assert address is not None, f"{topic}: under no root of the run"
    return address


def test_every_message_carries_the_contract_s_mqtt5_properties(run: Run) -> None:
    assert run.messages
    by_channel: dict[str, list[Captured]] = {}
    for m in run.messages:
        by_channel.setdefault(_address(run, m.topic), []).append(m)
    wrong = [
        (address, m.payload_format, m.content_type, m.user_properties)
        for address, found in sorted(by_channel.items())
        for m in found
        if (m.payload_format, m.content_type, m.user_properties)
        != (PAYLOAD_FORMAT_INDICATOR, CONTENT_TYPE, ())
    ]
    assert not wrong, f"{len(wrong)} messages without the contract's properties: {wrong[:5]}"
    for binding in (c["bindings"]["mqtt"] for c in _document()["components"]["messages"].values()):
        assert binding["payloadFormatIndicator"] == PAYLOAD_FORMAT_INDICATOR
        assert binding["contentType"] == CONTENT_TYPE


def test_the_channels_are_the_topics_the_code_publishes(run: Run) -> None:
    channels = _channels()
    published = {_address(run, m.topic) for m in run.messages}
    unknown = published - set(channels)
    assert not unknown, f"published on topics that are no channel of asyncapi.json: {unknown}"
    senders = _operations("gateway", "send") | _operations("relay", "send")
    assert published == senders, (
        f"sent but no send operation: {sorted(published - senders)}; "
        f"a send operation the run never used: {sorted(senders - published)}"
    )
    for m in run.messages:
        t = channels[_address(run, m.topic)]
        assert m.retain == t.retain, f"{m.topic}: retain {m.retain}, the contract says {t.retain}"
        assert m.qos == t.qos


def test_the_channels_are_the_topics_the_code_subscribes_to(run: Run) -> None:
    subscribed = subscriptions(run.broker_log)
    for app, client_id in (("gateway", GATEWAY_ID), ("relay", RELAY_ID)):
        filters = subscribed.get(client_id, set())
        assert filters, f"the {app} ({client_id}) subscribed to nothing: {sorted(subscribed)}"
        addresses = {_address(run, f) for f in filters}
        receives = _operations(app, "receive")
        assert addresses == receives, (
            f"the {app} subscribed to {sorted(addresses - receives)} without a receive "
            f"operation; receive operations it did not subscribe to: {sorted(receives - addresses)}"
        )


def test_every_captured_message_is_valid_for_ajv_and_jsonschema(run: Run, tmp_path: Path) -> None:
    channels = _channels()
    records = []
    for m in run.messages:
        t = channels[_address(run, m.topic)]
        payload = m.json()
        schema = json.loads((CONTRACT / "schemas" / schema_file_name(t)).read_text())
        jsonschema.Draft202012Validator(schema).validate(payload)
        records.append({"topic": m.topic, "schema": schema_file_name(t), "payload": payload})
    file = tmp_path / "captured.json"
    file.write_text(json.dumps(records))
    report = run_validators(validators(), messages=file)
    assert report["messages"]["checked"] == len(records)
    assert report["messages"]["invalid"] == [], report["messages"]["invalid"][:3]
    kinds = {r["schema"] for r in records}
    assert len(kinds) >= 20, sorted(kinds)  # nearly every channel (not central's own)
