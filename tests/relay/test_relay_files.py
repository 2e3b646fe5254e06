"""The relay end to end with the file ERP: a private mosquitto, the real relay, the file ERP
stand-in answering in its acknowledgement folder. The stand-in's ledger judges exactly once."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from simulators.broker import Mosquitto
from simulators.erp.files import FileErpStandIn
from tests.relay.builders import message, posting, reversal
from tests.relay.harness import Gateways, pg_url, relay_config, running_relay, sqlite_url

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def erp(tmp_path: Path) -> AsyncIterator[FileErpStandIn]:
    dirs = [tmp_path / d for d in ("drop", "ack", "archive")]
    for d in dirs:
        d.mkdir()
    async with FileErpStandIn(*dirs) as stand_in:
        yield stand_in


def file_erp(erp: FileErpStandIn) -> dict[str, Any]:
    return {
        "system": "file",
        "format": "b2mml",
        "drop_dir": str(erp.drop_dir),
        "ack_dir": str(erp.ack_dir),
        "archive_dir": str(erp.archive_dir),
        "poll_interval_s": 0.05,
    }


async def test_a_confirmation_is_posted_once_and_a_resend_is_a_duplicate(
    broker: Mosquitto, erp: FileErpStandIn, tmp_path: Path
) -> None:
    cfg = relay_config(broker, sqlite_url(tmp_path / "ledger.db"), file_erp(erp))
    async with running_relay(cfg), Gateways(broker) as gw:
        p = posting(1)
        await gw.send(p)
        first = await gw.final(p.idem_key)
        assert first.status == "posted"
        assert first.topic == f"{p.root}/_mes_v1/confirmation/result"
        assert first.body["erp"]["system"] == "file"
        assert first.body["latency_ms"] >= 0
        await gw.send(p, historical=True)
        await gw.wait(lambda: "duplicate" in gw.of(p.idem_key))
        dup = next(v for v in gw.verdicts if v.status == "duplicate")
        assert dup.body["erp"] == first.body["erp"]
    assert erp.count(p.idem_key) == 1
    assert erp.duplicates() == {}


async def test_one_operation_reaches_the_erp_in_seq_order(
    broker: Mosquitto, erp: FileErpStandIn, tmp_path: Path
) -> None:
    cfg = relay_config(broker, sqlite_url(tmp_path / "ledger.db"), file_erp(erp))
    parts = [posting(n) for n in (1, 2, 3, 4)]
    async with running_relay(cfg), Gateways(broker) as gw:
        for p in reversed(parts):  # the broker hands them over in the wrong order
            await gw.send(p)
        for p in parts:
            assert (await gw.final(p.idem_key)).status == "posted"
    assert [e.idem_key for e in erp.postings] == [p.idem_key for p in parts]


async def test_a_reversal_cancels_the_posted_confirmation_once(
    broker: Mosquitto, erp: FileErpStandIn, tmp_path: Path
) -> None:
    cfg = relay_config(broker, sqlite_url(tmp_path / "ledger.db"), file_erp(erp))
    p = posting(1)
    r = reversal(p)
    async with running_relay(cfg), Gateways(broker) as gw:
        await gw.send(r)  # the reversal overtakes its confirmation: it waits (seq order)
        await gw.send(p)
        assert (await gw.final(p.idem_key)).status == "posted"
        assert (await gw.final(r.idem_key)).status == "posted"
        await gw.send(r, historical=True)
        await gw.wait(lambda: "duplicate" in gw.of(r.idem_key))
    assert erp.is_reversed(p.idem_key)
    assert erp.duplicates() == {}


async def test_the_erps_rejection_comes_back_with_its_text(
    broker: Mosquitto, erp: FileErpStandIn, tmp_path: Path
) -> None:
    erp.reject_order("1000123", "Order 1000123 is closed", "E042")
    cfg = relay_config(broker, sqlite_url(tmp_path / "ledger.db"), file_erp(erp))
    async with running_relay(cfg) as relay, Gateways(broker) as gw:
        p = posting(1)
        await gw.send(p)
        verdict = await gw.final(p.idem_key)
        assert verdict.status == "rejected"
        assert verdict.body["error"] == {"text": "Order 1000123 is closed", "code": "E042"}
        # a resend is answered with the same verdict, and nothing is posted again
        await gw.send(p, historical=True)
        await gw.wait(lambda: gw.of(p.idem_key).count("rejected") == 2)
        # corrected in the ERP, a person resubmits it from the dead letters
        erp.allow_order("1000123")
        await relay.ledger.resubmit(p.idem_key, who="anna", now_ms=relay.clock())
        await gw.wait(lambda: "posted" in gw.of(p.idem_key))
    assert erp.count(p.idem_key) == 1


async def test_what_cannot_be_read_is_refused_and_the_relay_goes_on(
    broker: Mosquitto, erp: FileErpStandIn, tmp_path: Path
) -> None:
    cfg = relay_config(broker, sqlite_url(tmp_path / "ledger.db"), file_erp(erp))
    root = posting(1).root
    async with running_relay(cfg) as relay, Gateways(broker) as gw:
        await gw.send_raw(f"{root}/_mes_v1/confirmation", b"\xff not json")
        await gw.send_raw(f"{root}/_mes_v1/confirmation", b"[" * 100_000)
        await gw.send_raw(f"{root}/_mes_v1/confirmation", json.dumps({"schema": 1}).encode())
        # a valid envelope with a body that cannot be posted: answered, naming the field
        bad = json.loads(message(posting(2)))
        bad["body"]["yield_qty"] = "-5"
        await gw.send_raw(f"{root}/_mes_v1/confirmation", json.dumps(bad).encode())
        refused = await gw.final(bad["idem_key"])
        assert refused.status == "rejected"
        assert refused.body["error"]["code"] == "RELAY/INVALID"
        assert "body.yield_qty" in refused.body["error"]["text"]
        good = posting(1, order="7000001")
        await gw.send(good)
        assert (await gw.final(good.idem_key)).status == "posted"
        assert relay.stats.invalid == 3
    assert erp.count(bad["idem_key"]) == 0
    with sqlite3.connect(tmp_path / "ledger.db") as conn:
        rows = dict(conn.execute("SELECT status, COUNT(*) FROM relay_ledger GROUP BY status"))
    assert rows == {"posted": 1}  # nothing of the refused ones was stored


async def test_relay_state_is_online_and_stays_so_while_one_relay_is_left(
    broker: Mosquitto, erp: FileErpStandIn, pg_dsn: str
) -> None:
    url = pg_url(pg_dsn)
    one = relay_config(broker, url, file_erp(erp), instance="one")
    two = relay_config(broker, url, file_erp(erp), instance="two")
    async with Gateways(broker) as gw, running_relay(one):
        await gw.wait(lambda: bool(gw.states) and gw.states[-1]["online"] is True)
        async with running_relay(two):
            await asyncio.sleep(0.2)
        # two stopped (and said offline); one is still there and says so again
        await gw.wait(lambda: gw.states[-1]["online"] is False)
        await gw.wait(lambda: gw.states[-1]["online"] is True, timeout=5)
        p = posting(1)
        await gw.send(p)
        assert (await gw.final(p.idem_key)).status == "posted"


async def test_hostile_relay_state_and_snapshots_neither_stop_nor_stall_the_relay(
    broker: Mosquitto, erp: FileErpStandIn, tmp_path: Path
) -> None:
    """The relay also reads the enterprise's relay/state and, dispatching, the gateways'
    snapshots: nested, huge, NaN or not JSON at all, each is dropped and acknowledged. One that
    raised was left unacknowledged (given again at every reconnect) with a traceback each."""
    root = posting(1).root
    base = relay_config(broker, sqlite_url(tmp_path / "ledger.db"), file_erp(erp))
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    cfg = type(base).model_validate(
        {
            **base.model_dump(mode="python"),
            "dispatch": {
                "enabled": True,
                "interval_s": 60.0,
                "work_centers": [{"work_center": "PRESS07", "root": root}],
                "source": {
                    "system": "file",
                    "format": "loipro",
                    "inbox_dir": str(inbox),
                    "state_file": str(tmp_path / "orders.json"),
                },
            },
        }
    )
    hostile = [
        b"[" * 100_000,
        b"{" * 50 + b"}" * 50,
        b'{"online": NaN}',
        b"\xff\xfe",
        b" " * 300_000,
    ]
    async with running_relay(cfg) as relay, Gateways(broker) as gw:
        for _ in range(8):
            for payload in hostile:
                await gw.send_raw("umh/v1/acme/_mes_v1/relay/state", payload)
                await gw.send_raw(f"{root}/_mes_v1/snapshot", payload)
        p = posting(1)
        await gw.send(p)
        assert (await gw.final(p.idem_key, timeout=20)).status == "posted"
        assert relay.link.connected.is_set()
        assert relay.stats.intake_errors == 0  # each one dropped and acknowledged, none left
