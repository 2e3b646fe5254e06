"""The relay end to end with Dynamics 365: route cards through SendMessage, processed
asynchronously by the stand-in; the verdict is ``posted`` only once D365 processed them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from simulators.broker import Mosquitto
from simulators.erp.d365 import D365StandIn
from tests.relay.builders import posting, reversal
from tests.relay.harness import Gateways, relay_config, running_relay, sqlite_url

pytestmark = pytest.mark.timeout(60)
SECRET = "d365-secret"


@pytest.fixture
async def d365() -> AsyncIterator[D365StandIn]:
    async with D365StandIn(client_secret=SECRET, process_delay_s=0.2) as stand_in:
        yield stand_in


def d365_erp(d365: D365StandIn, tmp_path: Path) -> dict[str, Any]:
    secret = tmp_path / "d365-secret"
    secret.write_text(SECRET + "\n")
    return {
        "system": "d365",
        "base_url": d365.base_url,
        "tenant_token_url": d365.token_url,
        "client_id": "edge-relay",
        "client_secret_file": str(secret),
        "company": "usmf",
        "timeout_s": 2.0,
        "poll_interval_s": 0.1,
    }


async def test_a_route_card_is_posted_when_d365_has_processed_it(
    broker: Mosquitto, d365: D365StandIn, tmp_path: Path
) -> None:
    cfg = relay_config(broker, sqlite_url(tmp_path / "ledger.db"), d365_erp(d365, tmp_path))
    p = posting(1, good=40, scrap=1)
    r = reversal(p)
    async with running_relay(cfg), Gateways(broker) as gw:
        await gw.send(p)
        verdict = await gw.final(p.idem_key)
        assert verdict.status == "posted"
        assert verdict.body["erp"]["system"] == "d365"
        assert verdict.body["erp"]["route_card"]
        assert d365.state.totals("1000123", 10)["good"] == Decimal(40)
        await gw.send(r)
        assert (await gw.final(r.idem_key)).status == "posted"
        assert d365.state.totals("1000123", 10)["good"] == Decimal(0)
    d365.state.assert_exactly_once()


async def test_a_failed_message_comes_back_rejected_with_its_log(
    broker: Mosquitto, d365: D365StandIn, tmp_path: Path
) -> None:
    d365.state.add_order("1000999", operations=[20])  # only this order exists now
    cfg = relay_config(broker, sqlite_url(tmp_path / "ledger.db"), d365_erp(d365, tmp_path))
    p = posting(1)  # order 1000123: unknown to D365
    async with running_relay(cfg), Gateways(broker) as gw:
        await gw.send(p)
        verdict = await gw.final(p.idem_key)
        assert verdict.status == "rejected"
        assert "1000123" in verdict.body["error"]["text"]
