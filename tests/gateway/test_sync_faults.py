"""Faults between the gateway and central: broker outages, a wiped broker, nothing lost or doubled.

Invariant everywhere: every confirmation the gateway made reaches the ERP relay's ledger exactly
once, the ledger's totals equal what the gateway counted, and every outbox row is finished.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

from edge.config import load_config
from edge.domain.inputs import Action, Pulses, Transition
from edge.domain.model import ConfirmationStatus, OperationKey
from simulators.broker import Mosquitto
from simulators.central import CentralSimulator
from tests.gateway.conftest import (
    DISPATCH,
    ROOT,
    Collector,
    envelope,
    gateway,
    gateway_config,
    validate,
)

OP = OperationKey("4711", "0020")


async def until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


async def produce(gw: Any, stop: asyncio.Event, pulses: int = 3, every_s: float = 0.02) -> None:
    engine = gw.engine
    while not stop.is_set():
        await engine.submit(Pulses("press_good", pulses, engine.now()))
        await asyncio.sleep(every_s)


def all_posted(gw: Any) -> bool:
    confs = gw.engine.wc.confirmations.values()
    return bool(confs) and all(c.status is ConfirmationStatus.POSTED for c in confs)


async def start_order(gw: Any, collector: Collector) -> None:
    await collector.wait_for("/_mes_v1/health")
    collector.publish(f"{ROOT}/_mes_v1/order/dispatch", envelope("mes.dispatch/1", DISPATCH, "d1"))
    await until(lambda: OP in gw.engine.wc.operations, 10, "the dispatch list")
    engine = gw.engine
    await engine.submit(Transition(Action.START_PRODUCTION, str(OP), "operator:7", engine.now()))


async def finish_and_check(gw: Any, central: CentralSimulator) -> None:
    engine = gw.engine
    out = await engine.submit(Transition(Action.COMPLETE, str(OP), "operator:7", engine.now()))
    assert out.accepted
    await until(lambda: all_posted(gw), 30, "every confirmation posted by the relay")
    op = engine.wc.operations[OP]
    totals = central.ledger.totals("4711", "0020")
    assert totals["yield"] == op.counted.good
    assert totals["final"] is True
    assert totals["confirmations"] == op.conf_count
    assert set(central.ledger.count_by_idem().values()) == {1}
    await until(lambda: outbox_open(gw) == 0, 15, "the outbox to drain")


def outbox_open(gw: Any) -> int:
    row = gw.engine.store.conn.execute("SELECT COUNT(*) FROM outbox WHERE state != 'done'")
    count: int = row.fetchone()[0]
    return count


def envelopes(collector: Collector) -> list[dict[str, Any]]:
    out = []
    for m in collector.messages:
        if "/_mes_v1/" in m.topic and not m.topic.endswith(("health", "snapshot", "rejected")):
            data = m.json()
            if "seq" in data:
                out.append(data)
    return out


async def test_broker_down_under_load_then_back_nothing_lost_in_order(
    tmp_path: Path, broker: Mosquitto
) -> None:
    # A consumer with a persistent session: the broker keeps its messages across the outage.
    observer = Collector(broker.host, broker.port, [f"{ROOT}/#"], "observer")
    observer.client.reconnect_delay_set(1, 1)
    observer.client.connect(broker.host, broker.port, clean_start=False, properties=_session(3600))
    observer.client.loop_start()
    await asyncio.sleep(0.3)
    cfg = gateway_config(tmp_path, broker)
    async with (
        CentralSimulator(broker.host, broker.port, roots=[ROOT]) as central,
        gateway(cfg) as gw,
    ):
        await start_order(gw, observer)
        stop = asyncio.Event()
        producer = asyncio.create_task(produce(gw, stop))
        await asyncio.sleep(1.0)
        broker.stop()
        await asyncio.sleep(3.0)  # counts, stops and confirmations pile up in the outbox
        during = outbox_open(gw)
        broker.start()
        await asyncio.sleep(1.0)
        stop.set()
        await producer
        await finish_and_check(gw, central)
        assert during > 0
        confirmations = gw.engine.wc.operations[OP].conf_count
    await observer.wait_for("/_mes_v1/confirmation", confirmations, timeout=15)
    observer.stop()
    for message in observer.messages:
        validate(message)
    seen = envelopes(observer)
    first: dict[str, int] = {}
    for env in seen:
        first.setdefault(env["msg_id"], env["seq"])
    seqs = list(first.values())
    assert seqs == sorted(seqs), "messages arrived out of order"
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "a message is missing"
    late = [e for e in seen if e["ts_sent_ms"] - e["ts_event_ms"] > 2000]
    assert late, f"the outage produced no late messages: {len(seen)} seen, last {seqs[-3:]}"
    assert all(e["historical"] for e in late)


async def test_broker_restarted_without_its_persistence_loses_nothing(
    tmp_path: Path, broker: Mosquitto, collector: Collector
) -> None:
    cfg = gateway_config(tmp_path, broker)
    async with (
        CentralSimulator(broker.host, broker.port, roots=[ROOT]) as central,
        gateway(cfg) as gw,
    ):
        await start_order(gw, collector)
        stop = asyncio.Event()
        producer = asyncio.create_task(produce(gw, stop))
        await asyncio.sleep(1.0)
        broker.stop(kill=True)
        await asyncio.sleep(1.0)
        broker.restart(wipe=True)  # sessions, subscriptions and queued messages are gone
        await asyncio.sleep(1.5)
        stop.set()
        await producer
        await finish_and_check(gw, central)


async def test_relay_answering_late_or_rejecting_keeps_the_confirmation(
    tmp_path: Path, broker: Mosquitto, collector: Collector
) -> None:
    cfg = gateway_config(tmp_path, broker)
    async with (
        CentralSimulator(broker.host, broker.port, roots=[ROOT]) as central,
        gateway(cfg) as gw,
    ):
        await start_order(gw, collector)
        engine = gw.engine
        central.relay.reject_order("4711", "order locked by user")
        await engine.submit(Pulses("press_good", 10, engine.now()))
        conf = engine.wc.confirmations[f"{OP}#1"]
        await until(lambda: conf.status is ConfirmationStatus.REJECTED, 10, "the rejection")
        assert conf.erp_message == "order locked by user"
        # Answered: the row is finished; a resend makes a new one.
        await until(lambda: outbox_open(gw) == 0, 5, "the outbox to drain")
        central.relay.clear_rejections()
        central.relay.set_delay(1.0)
        from edge.domain.inputs import ResendConfirmation

        out = await engine.submit(ResendConfirmation(str(OP), 1, "supervisor:anna", engine.now()))
        assert out.accepted
        await asyncio.sleep(0.5)
        assert conf.status is ConfirmationStatus.AWAITING_RESULT  # the relay is slow
        await until(lambda: conf.status is ConfirmationStatus.POSTED, 10, "the late answer")
        assert central.ledger.totals("4711", "0020")["yield"] == Decimal(10)


def _session(seconds: int) -> Any:
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = seconds
    return props


async def test_a_verdict_sent_while_the_broker_had_lost_the_session_is_asked_for_again(
    tmp_path: Path, broker: Mosquitto, collector: Collector
) -> None:
    """The relay answers a confirmation while the gateway is away and the broker was
    restarted without its persistence: the answer finds no subscription and is gone. When the
    gateway comes back to a session the broker no longer has, it sends what the relay has not
    answered again at once (the relay answers by idem_key), instead of after
    result_timeout_s (600 s here)."""
    cfg = gateway_config(tmp_path, broker)
    slow = tmp_path / "slow.toml"  # the gateway comes back 5 s after a lost connection
    slow.write_text(
        (tmp_path / "edge.toml")
        .read_text()
        .replace("reconnect_min_s = 0.2", "reconnect_min_s = 5")
        .replace("reconnect_max_s = 1", "reconnect_max_s = 5")
    )
    cfg = load_config(slow, env={})
    async with (
        CentralSimulator(broker.host, broker.port, roots=[ROOT]) as central,
        gateway(cfg) as gw,
    ):
        await start_order(gw, collector)
        engine = gw.engine
        central.relay.pause()  # received, not answered yet
        await engine.submit(Pulses("press_good", 20, engine.now()))
        await until(lambda: bool(engine.wc.confirmations), 10, "a confirmation")
        conf = next(iter(engine.wc.confirmations.values()))
        await until(lambda: outbox_open(gw) > 0 and central.connected, 10, "it at the relay")
        await asyncio.sleep(0.5)
        broker.stop(kill=True)
        await asyncio.sleep(1.0)
        broker.restart(wipe=True)  # sessions and subscriptions gone
        await until(lambda: central.connected, 10, "central back")
        central.relay.resume()  # the verdict goes out: no gateway subscribed to hear it
        await asyncio.sleep(1.0)
        assert conf.status is ConfirmationStatus.AWAITING_RESULT
        await until(lambda: conf.status is ConfirmationStatus.POSTED, 15, "the verdict again")
        assert set(central.ledger.count_by_idem().values()) == {1}  # posted once


async def test_a_confirmation_lost_with_the_relays_session_is_sent_again_when_it_is_back(
    tmp_path: Path, broker: Mosquitto, collector: Collector
) -> None:
    """The broker hands a confirmation to the relay, then the relay's line breaks before it
    took it: the relay connects with a clean session, so the message is gone with it. Its Last
    Will says it is offline, its state says online again when it is back: the gateway then
    sends what the relay has not answered again at once, instead of after result_timeout_s
    (600 s here), and it is posted once."""
    cfg = gateway_config(tmp_path, broker)
    async with (
        CentralSimulator(broker.host, broker.port, roots=[ROOT]) as central,
        gateway(cfg) as gw,
    ):
        await start_order(gw, collector)
        engine = gw.engine
        central.relay.pause()  # it arrives, not taken yet
        await engine.submit(Pulses("press_good", 20, engine.now()))
        await until(lambda: bool(engine.wc.confirmations), 10, "a confirmation")
        conf = next(iter(engine.wc.confirmations.values()))
        await until(lambda: central.relay.pending > 0, 10, "it at the relay")
        assert central.relay.forget_pending() == 1  # the line broke: gone with the session
        state = central.relay.state_topics[0]
        # Its Last Will, then its state when it is back: one topic, so they arrive in order.
        collector.publish(state, {"online": False}, retain=True)
        central.relay.resume()
        collector.publish(state, {"online": True, "ts_ms": 1}, retain=True)
        await until(lambda: conf.status is ConfirmationStatus.POSTED, 10, "the verdict")
        assert set(central.ledger.count_by_idem().values()) == {1}  # posted once
