"""The relay end to end with SAP: a private mosquitto, the real relay, the SAP OData stand-in
(CSRF, Basic auth, SAP's error bodies, faults on command). The stand-in's ledger judges:
every confirmation posted once, none twice, whatever broke on the way."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import structlog

from edge.relay.erp import external_id
from simulators.broker import Mosquitto
from simulators.erp.sap import SapStandIn
from tests.relay.builders import posting, reversal
from tests.relay.harness import (
    Gateways,
    pg_url,
    relay_config,
    running_relay,
    sqlite_url,
    until,
)

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def sap() -> AsyncIterator[SapStandIn]:
    async with SapStandIn(user="RELAY", password="relay-secret") as stand_in:
        yield stand_in


def sap_erp(sap: SapStandIn, tmp_path: Path, **extra: Any) -> dict[str, Any]:
    secret = tmp_path / "sap-password"
    secret.write_text("relay-secret\n")
    return {
        "system": "sap",
        "service_url": sap.url,
        "user": "RELAY",
        "password_file": str(secret),
        "timeout_s": 2.0,
        **extra,
    }


def oauth_erp(sap: SapStandIn, tmp_path: Path, secret: str) -> dict[str, Any]:
    path = tmp_path / "client-secret"
    path.write_text(secret + "\n")
    return {
        "system": "sap",
        "service_url": sap.url,
        "auth": "oauth",
        "token_url": sap.token_url,
        "client_id": "edge-relay",
        "client_secret_file": str(path),
        "timeout_s": 2.0,
    }


def sqlite(tmp_path: Path) -> str:
    return sqlite_url(tmp_path / "ledger.db")


async def test_a_confirmation_becomes_one_sap_document(
    broker: Mosquitto, sap: SapStandIn, tmp_path: Path
) -> None:
    cfg = relay_config(broker, sqlite(tmp_path), sap_erp(sap, tmp_path))
    p = posting(1, good=95, scrap=5, final=True)
    async with running_relay(cfg), Gateways(broker) as gw:
        await gw.send(p)
        verdict = await gw.final(p.idem_key)
        assert verdict.status == "posted"
        erp = verdict.body["erp"]
        assert erp["system"] == "sap"
        (record,) = sap.state.ledger()
        assert erp["confirmation_group"] == record.entity()["ConfirmationGroup"]
        assert erp["confirmation_count"] == record.entity()["ConfirmationCount"]
        await gw.send(p, historical=True)
        await gw.wait(lambda: "duplicate" in gw.of(p.idem_key))
    body = record.entity()
    assert body["OrderID"] == "1000123"
    assert body["OrderOperation"] == "0010"
    assert body["ConfirmationYieldQuantity"] == "95.000"
    assert body["ConfirmationScrapQuantity"] == "5.000"
    assert body["IsFinalConfirmation"] is True
    assert body["ExternalSystemConfirmation"] == external_id(p.idem_key)
    assert body["ConfirmationText"].startswith("1000123/0010#1")
    assert body["OpConfirmedWorkQuantity1"] == "2.000"  # 120 s of setup, in minutes
    assert sap.state.count_by_external_id() == {external_id(p.idem_key): 1}


async def test_a_post_whose_answer_was_lost_is_looked_up_not_posted_again(
    broker: Mosquitto, sap: SapStandIn, tmp_path: Path
) -> None:
    sap.state.drop_after_commit(1)  # SAP saves it, then the connection drops
    cfg = relay_config(broker, sqlite(tmp_path), sap_erp(sap, tmp_path))
    p = posting(1)
    async with running_relay(cfg) as relay, Gateways(broker) as gw:
        await gw.send(p)
        verdict = await gw.final(p.idem_key)
        assert verdict.status == "posted"
        assert gw.of(p.idem_key)[0] == "retrying"  # the operator saw it was in the air
        assert relay.stats.unknown == 1
        assert relay.stats.found_after_doubt == 1
    assert sap.state.count_by_external_id() == {external_id(p.idem_key): 1}
    assert sap.state.duplicates() == {}


async def test_without_a_lookup_a_lost_answer_waits_for_a_person(
    broker: Mosquitto, sap: SapStandIn, tmp_path: Path
) -> None:
    sap.state.timeout_after_commit(1, delay_s=5.0)  # saved; the answer never comes in time
    cfg = relay_config(broker, sqlite(tmp_path), sap_erp(sap, tmp_path, lookup=False))
    p = posting(1)
    async with running_relay(cfg) as relay, Gateways(broker) as gw:
        await gw.send(p)
        await gw.wait(
            lambda: any(
                v.body.get("error", {}).get("code") == "RELAY/DOUBT"
                for v in gw.verdicts
                if v.idem_key == p.idem_key
            ),
            timeout=20,
        )
        (doubt,) = await relay.ledger.by_status(["in_doubt"])
        assert doubt.idem_key == p.idem_key
        # the person finds the document in SAP and records it; the gateway's resend is then
        # answered as a duplicate with those keys
        (record,) = sap.state.ledger()
        keys = {
            "confirmation_group": record.entity()["ConfirmationGroup"],
            "confirmation_count": record.entity()["ConfirmationCount"],
        }
        await relay.ledger.resolve(p.idem_key, as_posted=keys, who="anna", now_ms=relay.clock())
        await gw.send(p, historical=True)
        await gw.wait(lambda: "duplicate" in gw.of(p.idem_key))
    assert sap.state.count_by_external_id() == {external_id(p.idem_key): 1}


async def test_a_locked_order_is_retried_and_a_closed_one_rejected(
    broker: Mosquitto, sap: SapStandIn, tmp_path: Path
) -> None:
    sap.state.lock_order("1000123", user="MUELLER", times=2)
    cfg = relay_config(broker, sqlite(tmp_path), sap_erp(sap, tmp_path))
    locked = posting(1)
    final = posting(1, order="1000200", final=True)
    late = posting(2, order="1000200")
    async with running_relay(cfg), Gateways(broker) as gw:
        await gw.send(locked)
        await gw.send(final)
        assert (await gw.final(locked.idem_key)).status == "posted"
        retrying = next(v for v in gw.verdicts if v.idem_key == locked.idem_key)
        assert retrying.status == "retrying"
        assert retrying.body["error"] == {
            "text": "Order 1000123 is locked by user MUELLER",
            "code": "CO/469",
        }
        assert (await gw.final(final.idem_key)).status == "posted"
        await gw.send(late)  # after the final confirmation: SAP refuses, for good
        refused = await gw.final(late.idem_key)
        assert refused.status == "rejected"
        assert refused.body["error"]["code"] == "RU/105"
        assert "already finally confirmed" in refused.body["error"]["text"]
    assert sap.state.duplicates() == {}
    assert len(sap.state.ledger()) == 2


async def test_sap_down_then_back_and_an_expired_csrf_token(
    broker: Mosquitto, sap: SapStandIn, tmp_path: Path
) -> None:
    cfg = relay_config(broker, sqlite(tmp_path), sap_erp(sap, tmp_path))
    first, second = posting(1), posting(1, order="1000300")
    async with running_relay(cfg), Gateways(broker) as gw:
        await gw.send(first)
        assert (await gw.final(first.idem_key)).status == "posted"
        sap.state.set_outage(True)
        sap.state.expire_csrf_tokens()
        await gw.send(second)
        await gw.wait(lambda: "retrying" in gw.of(second.idem_key))
        sap.state.set_outage(False)
        assert (await gw.final(second.idem_key, timeout=20)).status == "posted"
    assert len(sap.state.ledger()) == 2
    assert sap.state.duplicates() == {}


async def test_a_reversal_cancels_the_sap_confirmation(
    broker: Mosquitto, sap: SapStandIn, tmp_path: Path
) -> None:
    cfg = relay_config(broker, sqlite(tmp_path), sap_erp(sap, tmp_path))
    p = posting(1)
    r = reversal(p)
    async with running_relay(cfg), Gateways(broker) as gw:
        await gw.send(p)
        posted = await gw.final(p.idem_key)
        await gw.send(r)
        cancelled = await gw.final(r.idem_key)
        assert cancelled.status == "posted"
        assert (
            cancelled.body["erp"]["confirmation_group"] == posted.body["erp"]["confirmation_group"]
        )
        assert (
            cancelled.body["erp"]["cancelled_confirmation_count"]
            == posted.body["erp"]["confirmation_count"]
        )
        await gw.send(r, historical=True)
        await gw.wait(lambda: "duplicate" in gw.of(r.idem_key))
    assert len(sap.state.reversals()) == 1
    assert sap.state.ledger()[0].is_reversed


async def test_two_relays_share_the_work_and_post_each_confirmation_once(
    broker: Mosquitto, sap: SapStandIn, tmp_path: Path, pg_dsn: str
) -> None:
    sap.state.set_latency((0.01, 0.05))
    url = pg_url(pg_dsn)
    one = relay_config(broker, url, sap_erp(sap, tmp_path), instance="one")
    two = relay_config(broker, url, sap_erp(sap, tmp_path), instance="two")
    parts = [posting(n, order=f"20000{o:02d}") for o in range(10) for n in (1, 2, 3)]
    async with running_relay(one) as a, running_relay(two) as b, Gateways(broker) as gw:
        for p in parts:
            await gw.send(p)
        for p in parts[::2]:  # and the same message again, at once, to whoever takes it
            await gw.send(p, historical=True)
        for p in parts:
            # the copy may be answered (duplicate) before the first one's verdict arrives
            verdict = await gw.final(p.idem_key, timeout=30)
            assert verdict.status in ("posted", "duplicate")
            await gw.wait(lambda p=p: "posted" in gw.of(p.idem_key))
        assert a.stats.received > 0
        assert b.stats.received > 0  # the shared subscription split the messages
    counts = sap.state.count_by_external_id()
    assert counts == {external_id(p.idem_key): 1 for p in parts}
    # and in seq order per operation
    for o in range(10):
        order = f"20000{o:02d}"
        texts = [r.entity()["ConfirmationText"] for r in sap.state.ledger() if r.order_id == order]
        assert [t.split()[0] for t in texts] == [f"{order}/0010#{n}" for n in (1, 2, 3)]


async def test_a_relay_stopped_mid_post_leaves_it_to_the_other(
    broker: Mosquitto, sap: SapStandIn, tmp_path: Path, pg_dsn: str
) -> None:
    """The first relay dies while SAP is working on its post (cancelled there and then, no
    more ledger writes): the second finds the row in ``posting`` once the lease runs out, asks
    SAP, and answers; SAP has the document once."""
    url = pg_url(pg_dsn)
    fast = {"timeout_s": 1.0}
    one = relay_config(broker, url, sap_erp(sap, tmp_path, **fast), instance="one", lease_s=3)
    p = posting(1)
    async with Gateways(broker) as gw:
        sap.state.timeout_after_commit(1, delay_s=3.0)  # saved; the answer is held back
        async with running_relay(one):
            await gw.send(p)
            await until(lambda: len(sap.state.ledger()) == 1, 10, "the post saved in SAP")
        # one is gone in the middle of its call; two takes over after the lease
        two = relay_config(broker, url, sap_erp(sap, tmp_path, **fast), instance="two", lease_s=3)
        async with running_relay(two) as b:
            await gw.send(p, historical=True)  # the gateway resends the unanswered one
            verdict = await gw.final(p.idem_key, timeout=30)
            assert verdict.status == "posted"
            assert b.stats.found_after_doubt + b.stats.posted >= 1
    assert sap.state.count_by_external_id() == {external_id(p.idem_key): 1}


@pytest.mark.timeout(120)
async def test_a_variance_reason_sap_cannot_take_waits_for_the_mapping(
    broker: Mosquitto, sap: SapStandIn, tmp_path: Path
) -> None:
    """The gateway's default variance reason (CYCLE) is longer than SAP's four characters:
    not the confirmation's fault, so it is not rejected; it waits with the advice, and goes
    through once the relay's mapping has it. Two relay starts, each with its ledger opened and
    its session made, and the second waits out the first one's lease: the bounds leave room for
    a machine busy with the rest of the suite (10 and 20 s were once too short there)."""
    p = posting(1, variance_reason="CYCLE")
    unmapped = relay_config(broker, sqlite(tmp_path), sap_erp(sap, tmp_path))
    async with Gateways(broker) as gw:
        async with running_relay(unmapped):
            await gw.send(p)
            await gw.wait(lambda: "retrying" in gw.of(p.idem_key), timeout=40)
            (waiting,) = [v for v in gw.verdicts if v.idem_key == p.idem_key]
            assert waiting.body["error"]["code"] == "RELAY/CONFIG"
            assert "variance_reasons" in waiting.body["error"]["text"]
        mapped = relay_config(
            broker, sqlite(tmp_path), sap_erp(sap, tmp_path, variance_reasons={"CYCLE": "0001"})
        )
        async with running_relay(mapped):
            assert (await gw.final(p.idem_key, timeout=60)).status == "posted"
    (record,) = sap.state.ledger()
    assert record.entity()["VarianceReasonCode"] == "0001"


async def test_the_confirmation_latency_goes_out_per_work_center(
    broker: Mosquitto, sap: SapStandIn, tmp_path: Path
) -> None:
    cfg = relay_config(broker, sqlite(tmp_path), sap_erp(sap, tmp_path), kpi_interval_s=0)
    a = posting(1, order="1000400", event_ms=0)
    b = posting(1, order="1000401", root="umh/v1/acme/plant1/stamping/line4/PRESS08")
    async with running_relay(cfg) as relay, Gateways(broker) as gw:
        for p in (a, b):
            await gw.send(replace(p, event_ms=relay.clock() - 1500))
            assert (await gw.final(p.idem_key)).status == "posted"
        assert await relay.publish_kpi() == 2
        await gw.wait(lambda: len(gw.kpis) == 2)
    kpis = dict(gw.kpis)
    press07 = kpis[f"{a.root}/_mes_v1/relay/kpi"]
    assert press07["metric"] == "confirmation_latency"
    assert press07["erp"] == "sap"
    assert press07["count"] == 1
    assert 1500 <= press07["p50_ms"] == press07["max_ms"] < 10_000
    assert f"{b.root}/_mes_v1/relay/kpi" in kpis


async def test_latency_figures_the_broker_refuses_are_said(sap: SapStandIn, tmp_path: Path) -> None:
    """A broker whose ACL does not let the relay write relay/kpi (as the example ACL once did)
    answers reason 135; the relay says so (before, the refusal went unnoticed)."""
    acl = tmp_path / "acl"
    acl.write_text(
        "topic readwrite umh/v1/acme/+/+/+/+/_mes_v1/confirmation\n"
        "topic readwrite umh/v1/acme/+/+/+/+/_mes_v1/confirmation/result\n"
        "topic readwrite umh/v1/acme/_mes_v1/relay/state\n"
    )
    with Mosquitto(tmp_path / "broker", extra_config=f"acl_file {acl}\n") as broker:
        cfg = relay_config(broker, sqlite(tmp_path), sap_erp(sap, tmp_path), kpi_interval_s=0)
        p = posting(1)
        async with running_relay(cfg) as relay, Gateways(broker) as gw:
            await gw.send(p)
            assert (await gw.final(p.idem_key)).status == "posted"
            with structlog.testing.capture_logs() as logs:
                assert await relay.publish_kpi() == 0
    (said,) = [e for e in logs if e["event"] == "broker refused the confirmation latency"]
    assert said["reason"] == 135
    assert said["topics"] == [f"{p.root}/_mes_v1/relay/kpi"]


async def test_oauth_client_credentials_with_an_expiring_token(
    broker: Mosquitto, sap: SapStandIn, tmp_path: Path
) -> None:
    cfg = relay_config(broker, sqlite(tmp_path), oauth_erp(sap, tmp_path, "relay-secret"))
    first, second = posting(1), posting(1, order="1000500")
    async with running_relay(cfg), Gateways(broker) as gw:
        await gw.send(first)
        assert (await gw.final(first.idem_key)).status == "posted"
        sap.state.expire_tokens()  # SAP answers 401: a new token, the same post once
        await gw.send(second)
        assert (await gw.final(second.idem_key)).status == "posted"
    assert sap.state.duplicates() == {}
    assert len(sap.state.ledger()) == 2


async def test_a_refused_client_secret_waits_and_is_not_rejected(
    broker: Mosquitto, sap: SapStandIn, tmp_path: Path
) -> None:
    cfg = relay_config(broker, sqlite(tmp_path), oauth_erp(sap, tmp_path, "wrong"))
    p = posting(1)
    async with running_relay(cfg), Gateways(broker) as gw:
        await gw.send(p)
        await gw.wait(lambda: "retrying" in gw.of(p.idem_key))
        (waiting,) = [v for v in gw.verdicts if v.idem_key == p.idem_key]
        assert waiting.body["error"]["code"] == "RELAY/AUTH"
        assert "refused" in waiting.body["error"]["text"]
    assert sap.state.ledger() == []
