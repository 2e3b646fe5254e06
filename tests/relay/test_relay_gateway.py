"""The whole round trip with the real parts: the gateway (engine, outbox, MQTT sync) makes
confirmations from counted parts, the real relay posts them to the SAP stand-in, SAP's verdict
comes back to the gateway's confirmation (what the panel shows). SAP's ledger is the judge."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from edge.domain.inputs import Action, Pulses, Transition
from edge.domain.model import ConfirmationStatus, OperationKey
from simulators.broker import Mosquitto
from simulators.erp.sap import SapStandIn
from tests.gateway.conftest import DISPATCH, ROOT, Collector, envelope, gateway, gateway_config
from tests.relay.harness import relay_config, running_relay, sqlite_url, until

pytestmark = pytest.mark.timeout(90)
OP = OperationKey("4711", "0020")


@pytest.fixture
async def sap() -> AsyncIterator[SapStandIn]:
    async with SapStandIn(user="RELAY", password="relay-secret") as stand_in:
        yield stand_in


def sap_erp(sap: SapStandIn, tmp_path: Path) -> dict[str, Any]:
    secret = tmp_path / "sap-password"
    secret.write_text("relay-secret\n")
    return {
        "system": "sap",
        "service_url": sap.url,
        "user": "RELAY",
        "password_file": str(secret),
        "timeout_s": 2.0,
        "variance_reasons": {"CYCLE": "0001"},
    }


async def start_order(gw: Any, broker: Mosquitto) -> None:
    collector = Collector(broker.host, broker.port, [f"{ROOT}/#"]).start()
    try:
        await collector.wait_for("/_mes_v1/health")
        collector.publish(
            f"{ROOT}/_mes_v1/order/dispatch", envelope("mes.dispatch/1", DISPATCH, "d1")
        )
        await until(lambda: OP in gw.engine.wc.operations, 10, "the dispatch list")
    finally:
        collector.stop()
    engine = gw.engine
    await engine.submit(Transition(Action.START_PRODUCTION, str(OP), "operator:7", engine.now()))


def confirmation(gw: Any, n: int) -> Any:
    return gw.engine.wc.confirmations.get(f"{OP}#{n}")


async def test_a_locked_order_shows_sap_s_text_until_it_is_posted(
    tmp_path: Path, broker: Mosquitto, sap: SapStandIn
) -> None:
    sap.state.lock_order("4711", user="MUELLER")
    cfg = relay_config(broker, sqlite_url(tmp_path / "ledger.db"), sap_erp(sap, tmp_path))
    async with running_relay(cfg), gateway(gateway_config(tmp_path, broker)) as gw:
        await start_order(gw, broker)
        engine = gw.engine
        await engine.submit(Pulses("press_good", 10, engine.now()))
        await until(lambda: confirmation(gw, 1) is not None, 10, "confirmation #1")
        conf = confirmation(gw, 1)
        await until(
            lambda: conf.erp_message == "Order 4711 is locked by user MUELLER",
            10,
            "SAP's lock text on the confirmation",
        )
        assert conf.status is ConfirmationStatus.AWAITING_RESULT  # retrying: not a rejection
        sap.state.unlock_order("4711")
        await until(lambda: conf.status is ConfirmationStatus.POSTED, 20, "the posting")
        assert conf.erp_message is None
        await engine.submit(Pulses("press_good", 5, engine.now()))
        out = await engine.submit(Transition(Action.COMPLETE, str(OP), "operator:7", engine.now()))
        assert out.accepted
        confs = engine.wc.confirmations.values()
        await until(
            lambda: all(c.status is ConfirmationStatus.POSTED for c in confs), 20, "all posted"
        )
        counted = engine.wc.operations[OP].counted.good
    totals = sap.state.totals("4711", "0020")
    assert totals["yield"] == Decimal(counted)
    assert sap.state.duplicates() == {}
    assert any(r.is_final for r in sap.state.ledger())


async def test_a_relay_that_vanished_is_replaced_and_the_gateway_s_resend_is_posted_once(
    tmp_path: Path, broker: Mosquitto, sap: SapStandIn
) -> None:
    """The relay goes away with a post in the air; the gateway resends what is unanswered
    (``result_timeout_s``); a relay on the same ledger looks the posting up in SAP first."""
    ledger = sqlite_url(tmp_path / "ledger.db")
    first = relay_config(broker, ledger, sap_erp(sap, tmp_path), instance="first", lease_s=6)
    gcfg = gateway_config(tmp_path, broker, result_timeout_s=3)
    async with gateway(gcfg) as gw:
        sap.state.timeout_after_commit(1, delay_s=3.0)  # saved; the answer is held back
        async with running_relay(first) as a:
            await start_order(gw, broker)
            engine = gw.engine
            await engine.submit(Pulses("press_good", 10, engine.now()))
            await until(lambda: len(sap.state.ledger()) == 1, 10, "the post saved in SAP")
        assert a.stats.posted == 0  # it went before SAP answered
        second = relay_config(broker, ledger, sap_erp(sap, tmp_path), instance="second")
        async with running_relay(second):
            conf = confirmation(gw, 1)
            await until(lambda: conf.status is ConfirmationStatus.POSTED, 40, "the posting")
    assert sap.state.count_by_external_id() == {r.external_id: 1 for r in sap.state.ledger()}
    assert len(sap.state.ledger()) == 1
