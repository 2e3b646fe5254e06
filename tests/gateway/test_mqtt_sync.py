"""The gateway against a real mosquitto: dispatch down, events and confirmations up, results."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from pathlib import Path
from typing import Any

from edge.domain.inputs import Action, Pulses, Transition
from edge.domain.model import ConfirmationStatus, OperationKey
from simulators.broker import Mosquitto
from tests.gateway.conftest import (
    DISPATCH,
    ROOT,
    Collector,
    business_inputs,
    envelope,
    gateway,
    gateway_config,
    validate,
)

OP = OperationKey("4711", "0020")


async def dispatch_and_start(collector: Collector, gw: Any) -> None:
    await collector.wait_for("/_mes_v1/health")  # online and subscribed
    collector.publish(f"{ROOT}/_mes_v1/order/dispatch", envelope("mes.dispatch/1", DISPATCH, "d-1"))
    await collector.wait_for("/_mes_v1/order/received")
    engine = gw.engine
    out = await engine.submit(
        Transition(Action.START_PRODUCTION, str(OP), "operator:7", engine.now())
    )
    assert out.accepted


async def outbox_states(gw: Any) -> dict[str, int]:
    store = gw.engine.store

    def read() -> dict[str, int]:
        rows = store.conn.execute("SELECT state, COUNT(*) FROM outbox GROUP BY state").fetchall()
        return dict(rows)

    result: dict[str, int] = await gw.engine.run_store(read)
    return result


async def test_dispatch_down_events_up_with_envelope(
    tmp_path: Path, broker: Mosquitto, collector: Collector
) -> None:
    async with gateway(gateway_config(tmp_path, broker)) as gw:
        await dispatch_and_start(collector, gw)
        assert set(gw.engine.wc.operations) == {OP, OperationKey("4712", "0010")}
        received = (await collector.wait_for("/_mes_v1/order/received"))[0]
        env = received.json()
        assert env["schema"] == "mes.order-received/1"
        assert env["edge_id"] == "wc-press-07"
        assert env["body"]["version"] == 1
        # Two dispatched, then the start: picked out of sequence and the state change, which
        # may still be on its way when the third arrives.
        events = await collector.wait_for("/_mes_v1/order/event", 4)
        seqs = [
            e.json()["seq"]
            for e in collector.messages
            if "_mes_v1" in e.topic and "seq" in e.json()
        ]
        assert seqs == sorted(seqs)
        assert [e.json()["body"]["type"] for e in events][-1] == "operation_state_changed"
        for message in collector.messages:
            validate(message)


async def test_confirmation_stays_until_the_relay_answers(
    tmp_path: Path, broker: Mosquitto, collector: Collector
) -> None:
    async with gateway(gateway_config(tmp_path, broker)) as gw:
        await dispatch_and_start(collector, gw)
        await gw.engine.submit(Pulses("press_good", 10, gw.engine.now()))
        conf = (await collector.wait_for("/_mes_v1/confirmation"))[0].json()
        assert conf["body"]["yield_qty"] == 10
        assert conf["idem_key"] == conf["body"]["idem_key"]
        # Acknowledged by the broker, awaiting the relay (acknowledgements are stored within
        # the uplink's flush delay).
        deadline = time.monotonic() + 5
        while (await outbox_states(gw)).get("published") != 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert (await outbox_states(gw)).get("published") == 1
        result = {
            "idem_key": conf["idem_key"],
            "status": "posted",
            "erp": {"confirmation_count": "7"},
        }
        collector.publish(
            f"{ROOT}/_mes_v1/confirmation/result",
            envelope("mes.confirmation-result/1", result, "r-1"),
        )
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if gw.engine.wc.confirmations[f"{OP}#1"].status is ConfirmationStatus.POSTED:
                break
            await asyncio.sleep(0.05)
        assert gw.engine.wc.confirmations[f"{OP}#1"].status is ConfirmationStatus.POSTED
        assert "published" not in await outbox_states(gw)


async def test_bad_inbound_messages_are_rejected_and_change_nothing(
    tmp_path: Path, broker: Mosquitto, collector: Collector
) -> None:
    cfg = gateway_config(tmp_path, broker)
    async with gateway(cfg) as gw:
        await dispatch_and_start(collector, gw)
        journal = business_inputs(gw)
        c = collector.client
        c.publish(f"{ROOT}/_mes_v1/order/cancel", b"{not json", qos=1).wait_for_publish(5)
        collector.publish(
            f"{ROOT}/_mes_v1/order/cancel",
            envelope("mes.cancel/1", {"order_id": 4711, "operation": "0020"}, "bad-type"),
        )
        collector.publish(
            f"{ROOT}/_mes_v1/order/cancel",
            envelope("mes.cancel/1", {"order_id": "9999", "operation": "0010"}, "unknown-order"),
        )
        collector.publish(
            f"{ROOT}/_mes_v1/confirmation/result",
            envelope("mes.confirmation-result/1", {"idem_key": "nope", "status": "posted"}, "r-x"),
        )
        huge = envelope("mes.dispatch/1", {"version": 2, "operations": []}, "huge")
        huge["pad"] = "x" * (cfg.mqtt.max_inbound_bytes + 10)
        collector.publish(f"{ROOT}/_mes_v1/order/dispatch", huge)
        collector.publish(
            f"{ROOT}/_mes_v1/order/dispatch", envelope("mes.dispatch/1", DISPATCH, "stale")
        )
        rejected = await collector.wait_for("/_mes_v1/rejected", 6)
        by_id = {r.json()["msg_id"]: r.json() for r in rejected if r.json()["msg_id"]}
        without_id = sorted(r.json()["reason"] for r in rejected if not r.json()["msg_id"])
        assert without_id[0].startswith("not JSON")  # no envelope could be read: no msg_id
        # Too big to be parsed, but its msg_id is plainly readable near the start.
        assert "over the limit" in by_id["huge"]["reason"]
        assert by_id["bad-type"]["field"] == "body.order_id"
        assert "no such operation" in by_id["unknown-order"]["reason"]
        assert "no confirmation" in by_id["r-x"]["reason"]
        assert "not newer" in by_id["stale"]["reason"]
        for r in rejected:
            validate(r)
        assert business_inputs(gw) == journal
        assert gw.engine.wc.operations[OP].status.value == "running"


async def test_health_and_snapshot_are_retained_and_say_offline_at_stop(
    tmp_path: Path, broker: Mosquitto, collector: Collector
) -> None:
    async with gateway(gateway_config(tmp_path, broker)) as gw:
        await dispatch_and_start(collector, gw)
        health = (await collector.wait_for("/_mes_v1/health"))[-1].json()
        assert health["online"] is True
        snapshot = (await collector.wait_for("/_mes_v1/snapshot"))[-1]
        await asyncio.sleep(1.0)
        snapshot = collector.on("/_mes_v1/snapshot")[-1].json()
        assert snapshot["active"][0]["op"] == "4711/0020"
        await gw.close()
    late = Collector(broker.host, broker.port, [f"{ROOT}/_mes_v1/health"], "late").start()
    try:
        retained = await late.wait_for("/_mes_v1/health")
        assert retained[0].retain
        assert json.loads(retained[0].payload)["online"] is False
    finally:
        late.stop()


async def test_master_data_from_central_sets_reasons_shifts_and_policy(
    tmp_path: Path, broker: Mosquitto, collector: Collector
) -> None:
    async with gateway(gateway_config(tmp_path, broker)) as gw:
        await dispatch_and_start(collector, gw)
        body = {
            "version": 3,
            "stop_reasons": [{"code": "M01", "text": "Material missing"}],
            "scrap_reasons": [{"code": "S07", "text": "Crack"}],
            "alarm_reasons": {"E-217": "M01"},
            "shifts": [
                {"name": "night", "start": "22:00", "end": "06:00"},
                {
                    "name": "day",
                    "start": "06:00",
                    "end": "22:00",
                    "weekdays": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
                    "breaks": [{"name": "lunch", "start": "12:00", "end": "12:30"}],
                },
            ],
            "holidays": ["2026-12-25"],
            "planned_downtime": [
                {"start": "2026-12-28T06:00:00+01:00", "end": "2026-12-28T10:00:00+01:00"}
            ],
            "confirmation_policy": {"every_good": 4},
        }
        collector.publish(
            f"{ROOT}/_mes_v1/masterdata", envelope("mes.masterdata/1", body, "md-3"), retain=True
        )
        wc = gw.engine.wc
        deadline = time.monotonic() + 5
        while wc.master_data.version != 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert wc.policy.every_good == 4
        assert {s.name: s.length_minutes for s in wc.shifts} == {"night": 480, "day": 960}
        # the calendar of the KPIs and posting dates is central's, with its breaks and days off
        calendar = wc.calendar
        assert calendar.shifts[1].breaks[0].name == "lunch"
        assert calendar.holidays == frozenset({dt.date(2026, 12, 25)})
        assert [(w.start_ms, w.reason) for w in calendar.planned] == [
            (int(dt.datetime(2026, 12, 28, 5, tzinfo=dt.UTC).timestamp() * 1000), "planned")
        ]
        assert wc.master_data.has_scrap_reason("S07")
        await gw.engine.submit(Pulses("press_good", 4, gw.engine.now()))
        conf = (await collector.wait_for("/_mes_v1/confirmation"))[0].json()
        assert conf["body"]["yield_qty"] == 4


async def test_confirmations_wait_while_the_relay_is_offline_in_seq_order(
    tmp_path: Path, broker: Mosquitto, collector: Collector
) -> None:
    """domain.md §10.5 rule 4: the relay's retained state holds confirmations back.

    What follows a withheld confirmation waits with it (seq stays in order, rule 2); what came
    before it, and the time series, go out at once.
    """
    relay_state = "umh/v1/acme/_mes_v1/relay/state"
    collector.publish(relay_state, {"online": False, "ts_ms": 1}, retain=True)
    try:
        async with gateway(gateway_config(tmp_path, broker)) as gw:
            await dispatch_and_start(collector, gw)
            started = await collector.wait_for("/_mes_v1/order/event", count=1)
            await gw.engine.submit(Pulses("press_good", 10, gw.engine.now()))  # policy: every 10
            await gw.engine.submit(Pulses("press_good", 10, gw.engine.now()))
            await gw.engine.submit(
                Transition(Action.INTERRUPT, str(OP), "operator:7", gw.engine.now())
            )
            await collector.wait_for("/_historian/counter/good", count=2)
            await asyncio.sleep(1.2)  # a health message (every second here) says why
            assert collector.on("/_mes_v1/confirmation") == []
            interrupted = [
                m for m in collector.on("/_mes_v1/order/event")
                if m.json()["body"].get("to") == "interrupted"
            ]  # fmt: skip
            assert interrupted == [], "a message behind a withheld confirmation went out"
            assert started
            assert collector.on("/_mes_v1/health")[-1].json()["relay_online"] is False
            assert (await outbox_states(gw)).get("pending", 0) >= 3
            # The relay comes back: the confirmations, then the interruption, in seq order.
            collector.publish(relay_state, {"online": True, "ts_ms": 2}, retain=True)
            confs = await collector.wait_for("/_mes_v1/confirmation", count=2)
            assert [c.json()["body"]["conf_index"] for c in confs] == [1, 2]
            deadline = time.monotonic() + 5
            while not interrupted:
                assert time.monotonic() < deadline, "the interruption was not published"
                await asyncio.sleep(0.02)
                interrupted = [
                    m for m in collector.on("/_mes_v1/order/event")
                    if m.json()["body"].get("to") == "interrupted"
                ]  # fmt: skip
        seqs = [
            m.json()["seq"] for m in collector.messages
            if "/_mes_v1/" in m.topic and not m.retain and "seq" in m.json()
        ]  # fmt: skip
        assert seqs == sorted(seqs)
    finally:
        collector.publish(relay_state, {"online": True}, retain=True)


async def test_resync_republishes_the_snapshot_and_replays_from_a_seq(
    tmp_path: Path, broker: Mosquitto, collector: Collector
) -> None:
    async with gateway(gateway_config(tmp_path, broker)) as gw:
        await dispatch_and_start(collector, gw)
        await gw.engine.submit(Pulses("press_good", 10, gw.engine.now()))
        await collector.wait_for("/_mes_v1/confirmation")
        await asyncio.sleep(0.5)
        first = {m.json()["seq"]: m.json() for m in collector.messages if _enveloped(m)}
        snapshots = len(collector.on("/_mes_v1/snapshot"))
        collector.publish(
            f"{ROOT}/_mes_v1/cmd/resync", envelope("mes.resync/1", {"from_seq": 2}, "rs-1")
        )
        await collector.wait_for("/_mes_v1/snapshot", count=snapshots + 1)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            replayed = [m.json() for m in collector.messages if _enveloped(m)][len(first) :]
            if len(replayed) >= len(first) - 1:
                break
            await asyncio.sleep(0.05)
        assert [r["seq"] for r in replayed] == sorted(s for s in first if s >= 2)
        for again in replayed:
            original = first[again["seq"]]
            assert again["msg_id"] == original["msg_id"]
            assert again["body"] == original["body"]
            assert again["historical"] is True
        # Nothing in the gateway changed: the confirmation still awaits the relay, once.
        assert (await outbox_states(gw)).get("published") == 1
        collector.publish(
            f"{ROOT}/_mes_v1/cmd/resync", envelope("mes.resync/1", {"from_seq": 0}, "rs-2")
        )
        rejected = (await collector.wait_for("/_mes_v1/rejected"))[0].json()
        assert rejected["field"] == "body.from_seq"


def _enveloped(m: Any) -> bool:
    return "/_mes_v1/" in m.topic and not m.retain and "seq" in m.json()
