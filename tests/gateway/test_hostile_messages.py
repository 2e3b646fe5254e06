"""Single messages that once stopped the daemon or falsified what it reports, through a real broker.

Each one must be refused with a reason on ``_mes_v1/rejected`` (or, for the relay's state, read
safely), acknowledged so the broker does not deliver it again, change nothing, and leave the
daemon taking the next message as if nothing happened.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from edge.domain.model import OperationKey
from edge.store.replay import verify
from edge.store.store import Store
from simulators.broker import Mosquitto
from tests.gateway.conftest import (
    DISPATCH,
    ROOT,
    Collector,
    envelope,
    gateway,
    gateway_config,
    validate,
)
from tests.gateway.test_mqtt_sync import business_inputs, dispatch_and_start

OP = OperationKey("4711", "0020")
RELAY_STATE = "umh/v1/acme/_mes_v1/relay/state"


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def raw(collector: Collector, topic: str, payload: bytes, *, retain: bool = False) -> None:
    collector.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)


async def rejections(collector: Collector, count: int) -> dict[str | None, dict[str, Any]]:
    got = await collector.wait_for("/_mes_v1/rejected", count)
    for message in got:
        validate(message)
    return {m.json()["msg_id"]: m.json() for m in got}


async def still_serves(collector: Collector, gw: Any, msg_id: str) -> None:
    """The daemon takes the next message: a hold, then a release, of the running operation."""
    for action in ("hold", "release"):
        body = {"order_id": "4711", "operation": "0020"}
        collector.publish(
            f"{ROOT}/_mes_v1/order/{action}", envelope(f"mes.{action}/1", body, msg_id + action)
        )
        want = "held" if action == "hold" else "running"
        deadline = time.monotonic() + 10
        while gw.engine.wc.operations[OP].status.value != want:
            assert not gw.task.done(), "the gateway stopped"
            assert time.monotonic() < deadline, f"the {action} was not applied"
            await asyncio.sleep(0.02)


async def test_deeply_nested_json_is_refused_and_the_daemon_goes_on(
    tmp_path: Path, broker: Mosquitto, collector: Collector
) -> None:
    async with gateway(gateway_config(tmp_path, broker)) as gw:
        await dispatch_and_start(collector, gw)
        journal = business_inputs(gw)
        # 100,000 levels in 200 KB: under the size limit, far past any parser's recursion.
        raw(collector, f"{ROOT}/_mes_v1/order/dispatch", nested(100_000))
        inner = json.dumps(envelope("mes.cancel/1", {}, "deep-body"))
        deep_body = inner.replace('"body": {}', '"body": {"x": ' + "[" * 5000 + "]" * 5000 + "}")
        raw(collector, f"{ROOT}/_mes_v1/order/cancel", deep_body.encode())
        got = await rejections(collector, 2)
        assert "nested 100000 levels deep" in got[None]["reason"]
        assert "nested" in got["deep-body"]["reason"]  # its msg_id still readable
        await still_serves(collector, gw, "after-deep-")
        assert business_inputs(gw) == journal + 2


async def test_a_nested_relay_state_retained_for_the_enterprise_does_not_stop_a_gateway(
    tmp_path: Path, broker: Mosquitto, collector: Collector
) -> None:
    raw(collector, RELAY_STATE, nested(100_000), retain=True)
    try:
        cfg = gateway_config(tmp_path, broker)
        async with gateway(cfg) as gw:
            await dispatch_and_start(collector, gw)
            await still_serves(collector, gw, "relay-")
            health = (await collector.wait_for("/_mes_v1/health"))[-1].json()
            assert health["relay_online"] is True  # unreadable: taken as online
        # And once more from the start, as after a crash loop's restart.
        async with gateway(cfg) as gw:
            await asyncio.sleep(0.5)
            assert not gw.task.done()
    finally:
        raw(collector, RELAY_STATE, b"", retain=True)


async def test_out_of_range_numbers_are_refused_at_once(
    tmp_path: Path, broker: Mosquitto, collector: Collector
) -> None:
    async with gateway(gateway_config(tmp_path, broker)) as gw:
        await dispatch_and_start(collector, gw)
        journal = business_inputs(gw)
        ops = DISPATCH["operations"]
        cases: dict[str, tuple[str, bytes]] = {
            "resync-huge": (
                "cmd/resync",
                json.dumps(envelope("mes.resync/1", {"from_seq": 10**30}, "resync-huge")).encode(),
            ),
        }
        for msg_id, field, value in (
            ("qty-5000", "quantity", "1E+5000"),
            ("qty-999999", "quantity", "1E+999999"),
            ("pps-tiny", "parts_per_signal", "1E-400"),
            ("pps-huge", "parts_per_signal", "1E+999999"),
            ("cycle-inf", "planned_run_s_per_unit", 1e309),
        ):
            op = {**ops[1], field: value}  # type: ignore[dict-item]
            body = {"version": 2, "operations": [ops[0], op]}
            text = json.dumps(envelope("mes.dispatch/1", body, msg_id))
            # A JSON number literal too large for a float, written as the sender would.
            text = text.replace('"1E+5000"', "1E+5000").replace("Infinity", "1e309")
            cases[msg_id] = ("order/dispatch", text.encode())
        cases["version-huge"] = (
            "order/dispatch",
            json.dumps(
                envelope("mes.dispatch/1", {**DISPATCH, "version": 10**30}, "version-huge")
            ).encode(),
        )
        started = time.monotonic()
        for path, payload in cases.values():
            raw(collector, f"{ROOT}/_mes_v1/{path}", payload)
        got = await rejections(collector, len(cases))
        assert time.monotonic() - started < 5, "an extreme value took the loop's time"
        assert got["resync-huge"]["field"] == "body.from_seq"
        assert got["qty-5000"]["field"] == "body.operations.1.quantity"
        assert got["qty-999999"]["field"] == "body.operations.1.quantity"
        assert got["pps-tiny"]["field"] == "body.operations.1.parts_per_signal"
        assert got["pps-huge"]["field"] == "body.operations.1.parts_per_signal"
        assert got["cycle-inf"]["field"] == "body.operations.1.planned_run_s_per_unit"
        assert got["version-huge"]["field"] == "body.version"
        assert business_inputs(gw) == journal
        await still_serves(collector, gw, "after-range-")


async def test_oversize_and_reused_ids_are_named(
    tmp_path: Path, broker: Mosquitto, collector: Collector
) -> None:
    cfg = gateway_config(tmp_path, broker)
    async with gateway(cfg) as gw:
        await dispatch_and_start(collector, gw)
        huge = envelope("mes.dispatch/1", {"version": 2, "operations": []}, "too-big")
        huge["pad"] = "x" * (cfg.mqtt.max_inbound_bytes + 10)
        collector.publish(f"{ROOT}/_mes_v1/order/dispatch", huge)
        body = {"order_id": "4711", "operation": "0020"}
        collector.publish(f"{ROOT}/_mes_v1/order/hold", envelope("mes.hold/1", body, "once"))
        collector.publish(f"{ROOT}/_mes_v1/order/cancel", envelope("mes.cancel/1", body, "once"))
        got = await rejections(collector, 2)
        assert "over the limit" in got["too-big"]["reason"]
        assert got["once"]["field"] == "msg_id"
        assert "order/hold" in got["once"]["reason"]
        assert gw.engine.wc.operations[OP].status.value == "held"  # the cancel did nothing


async def test_a_message_applied_before_a_restart_is_not_applied_again(
    tmp_path: Path, broker: Mosquitto, collector: Collector
) -> None:
    cfg = gateway_config(tmp_path, broker)
    body = {"order_id": "4711", "operation": "0020"}
    hold = envelope("mes.hold/1", body, "hold-1")
    async with gateway(cfg) as gw:
        await dispatch_and_start(collector, gw)
        collector.publish(f"{ROOT}/_mes_v1/order/hold", hold)
        deadline = time.monotonic() + 10
        while gw.engine.wc.operations[OP].status.value != "held":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        collector.publish(
            f"{ROOT}/_mes_v1/order/release", envelope("mes.release/1", body, "release-1")
        )
        while gw.engine.wc.operations[OP].status.value != "running":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
    async with gateway(cfg) as gw:
        await collector.wait_for("/_mes_v1/health")
        journal = business_inputs(gw)
        collector.publish(f"{ROOT}/_mes_v1/order/hold", hold)  # replayed by central
        marker = envelope("mes.hold/1", {"order_id": "4712", "operation": "0010"}, "m-1")
        collector.publish(f"{ROOT}/_mes_v1/order/hold", marker)
        deadline = time.monotonic() + 10
        while gw.engine.wc.operations[OperationKey("4712", "0010")].status.value != "held":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        assert gw.engine.wc.operations[OP].status.value == "running"
        assert business_inputs(gw) == journal + 1
    store = Store(tmp_path / "edge.db")
    store.open(boot=False, migrate_schema=False)
    try:
        assert verify(store) == []
    finally:
        store.close()


async def test_a_late_rejected_after_posted_is_kept_not_applied(
    tmp_path: Path, broker: Mosquitto, collector: Collector
) -> None:
    from edge.domain.inputs import Pulses
    from edge.domain.model import ConfirmationStatus

    async with gateway(gateway_config(tmp_path, broker)) as gw:
        await dispatch_and_start(collector, gw)
        await gw.engine.submit(Pulses("press_good", 10, gw.engine.now()))
        conf = (await collector.wait_for("/_mes_v1/confirmation"))[0].json()
        for n, status in enumerate(("posted", "rejected", "retrying")):
            result: dict[str, Any] = {"idem_key": conf["idem_key"], "status": status}
            if status != "posted":
                result["error"] = {"text": "late and wrong"}
            collector.publish(
                f"{ROOT}/_mes_v1/confirmation/result",
                envelope("mes.confirmation-result/1", result, f"v-{n}"),
            )
        events = await collector.wait_for("/_mes_v1/order/event", 1, timeout=10)
        deadline = time.monotonic() + 10
        conflicts: list[Any] = []
        while len(conflicts) < 2:
            assert time.monotonic() < deadline, "no verdict conflict was published"
            await asyncio.sleep(0.05)
            events = collector.on("/_mes_v1/order/event")
            conflicts = [
                e.json()["body"]
                for e in events
                if e.json()["body"]["type"] == "confirmation_verdict_conflict"
            ]
        assert [c["verdict"] for c in conflicts] == ["rejected", "retrying"]
        assert all(c["status"] == "posted" for c in conflicts)
        c1 = gw.engine.wc.confirmations[f"{OP}#1"]
        assert c1.status is ConfirmationStatus.POSTED
        assert c1.verdict_conflicts == 2
        for e in events:
            validate(e)


async def test_a_failing_command_is_refused_and_the_downlink_goes_on(
    tmp_path: Path, broker: Mosquitto, collector: Collector
) -> None:
    """The guard itself: whatever a handler raises, the message is refused, acknowledged, and
    the next one is taken."""
    from edge.app import open_engine
    from edge.sync.downlink import Downlink
    from edge.sync.mqtt import Message

    cfg = gateway_config(tmp_path, broker)
    engine = await open_engine(cfg)
    published: list[tuple[str, str]] = []

    class Link:
        messages: asyncio.Queue[Message] = asyncio.Queue()
        acked: list[Message] = []  # noqa: RUF012

        def publish(self, topic: str, payload: str, qos: int = 1) -> None:
            published.append((topic, payload))

        def ack(self, message: Message) -> None:
            self.acked.append(message)

    async def resync(from_seq: int | None) -> None:
        raise OverflowError("Python int too large to convert to SQLite INTEGER")

    link = Link()
    downlink = Downlink(engine, link, root=ROOT, on_resync=resync)  # type: ignore[arg-type]
    writer = asyncio.create_task(engine.run())
    runner = asyncio.create_task(downlink.run())
    try:
        resync_msg = envelope("mes.resync/1", {"from_seq": 5}, "rs-boom")
        hold = envelope("mes.hold/1", {"order_id": "4711", "operation": "0020"}, "h-1")
        for n, (path, env) in enumerate((("cmd/resync", resync_msg), ("order/hold", hold))):
            await link.messages.put(
                Message(f"{ROOT}/_mes_v1/{path}", json.dumps(env).encode(), False, n, 1)
            )
        deadline = time.monotonic() + 10
        while len(link.acked) < 2:
            assert not runner.done(), "the downlink stopped"
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        refusal = json.loads(published[0][1])
        assert refusal["msg_id"] == "rs-boom"
        assert "OverflowError" in refusal["reason"]
        assert downlink.errors == 1
        assert [json.loads(p)["msg_id"] for _, p in published] == ["rs-boom", "h-1"]
    finally:
        runner.cancel()
        writer.cancel()
        await asyncio.gather(runner, writer, return_exceptions=True)
        await engine.close()


async def test_a_message_that_meets_a_full_disk_is_refused_saying_so(
    tmp_path: Path, broker: Mosquitto, collector: Collector
) -> None:
    """Not stored, so not applied: central is told why and may send it again; the downlink and
    the daemon go on, and take the same message once there is room."""
    from tests.small_disk import fill, small_disk

    with small_disk(tmp_path / "disk", size="4M") as disk:
        async with gateway(gateway_config(disk, broker)) as gw:
            await dispatch_and_start(collector, gw)
            filler = fill(disk)
            body = {"order_id": "4711", "operation": "0020"}
            collector.publish(f"{ROOT}/_mes_v1/order/hold", envelope("mes.hold/1", body, "h-f"))
            got = await rejections(collector, 1)
            assert "full" in got["h-f"]["reason"], got
            assert gw.engine.wc.operations[OP].status.value == "running"
            filler.unlink()
            # The same message again: it was not applied, so its msg_id is not taken.
            collector.publish(f"{ROOT}/_mes_v1/order/hold", envelope("mes.hold/1", body, "h-f"))
            deadline = time.monotonic() + 10
            while gw.engine.wc.operations[OP].status.value != "held":
                assert not gw.task.done(), "the gateway stopped"
                assert time.monotonic() < deadline, "the hold was not applied"
                await asyncio.sleep(0.05)


async def test_a_service_done_that_names_no_interval_is_refused_naming_it(
    tmp_path: Path, broker: Mosquitto, collector: Collector
) -> None:
    extra = '\n[[service]]\nname = "die"\nmeasure = "cycles"\nevery = 100\n'
    async with gateway(gateway_config(tmp_path, broker, extra=extra)) as gw:
        await dispatch_and_start(collector, gw)
        journal = business_inputs(gw)
        for msg_id, name in (("unknown", "dye"), ("pattern", "has space"), ("long", "x" * 41)):
            body = {"name": name}
            raw(
                collector,
                f"{ROOT}/_mes_v1/maintenance/done",
                json.dumps(envelope("mes.maintenance-done/1", body, msg_id)).encode(),
            )
        got = await rejections(collector, 3)
        assert got["unknown"]["field"] == "name"
        assert "dye" in got["unknown"]["reason"]
        assert "die" in got["unknown"]["reason"]  # the configured ones are named
        assert got["pattern"]["field"] == "body.name"
        assert got["long"]["field"] == "body.name"
        assert business_inputs(gw) == journal
        await still_serves(collector, gw, "after-service")
