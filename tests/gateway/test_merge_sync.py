"""Merge over a real mosquitto (issue 18): central's _mes_v1/order/merge down, operation_merged
up on order/event in the published schema, a bad merge rejected naming the field and changing
nothing, and the merge surviving a restart (replay and ``edge verify``)."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

from edge.domain.model import Operation, OperationKey, OperationStatus
from edge.store.codec import OPERATION
from edge.store.replay import verify_all
from simulators.broker import Mosquitto
from simulators.central import CentralSimulator
from tests.gateway.conftest import (
    ROOT,
    Collector,
    Received,
    business_inputs,
    envelope,
    gateway,
    gateway_config,
    validate,
)

SAME = "FG-4711"
DISPATCH = {
    "version": 1,
    "operations": [
        {"order_id": "5001", "operation": "0010", "material": SAME, "quantity": 40,
         "latest_end": "2030-03-05T14:00:00Z"},
        {"order_id": "5002", "operation": "0010", "material": SAME, "quantity": 25,
         "latest_end": "2030-03-04T14:00:00Z"},
        {"order_id": "5003", "operation": "0010", "material": SAME, "quantity": 10},
        {"order_id": "5004", "operation": "0010", "material": "FG-OTHER", "quantity": 5},
    ],
}  # fmt: skip
TARGET = OperationKey("5001", "0010")


def merge(sources: list[str], **extra: object) -> dict[str, object]:
    return {
        "order_id": "5001",
        "operation": "0010",
        "sources": [{"order_id": s, "operation": "0010"} for s in sources],
        **extra,
    }


def stored_ops(db: Path) -> dict[str, Operation]:
    """The operations as the database holds them (read-only, after the gateway stopped)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        ops = [OPERATION.validate_json(d) for (d,) in conn.execute("SELECT doc FROM operation")]
    finally:
        conn.close()
    return {str(op.key): op for op in ops}


def is_merged(message: Received) -> bool:
    return bool(message.json()["body"]["type"] == "operation_merged")


async def merged_event(collector: Collector, timeout: float = 10.0) -> Received:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [m for m in collector.on("/_mes_v1/order/event") if is_merged(m)]
        if found:
            return found[0]
        await asyncio.sleep(0.02)
    raise AssertionError("no operation_merged on order/event")


async def test_a_merge_from_central_goes_down_and_its_event_comes_up(
    tmp_path: Path, broker: Mosquitto, collector: Collector
) -> None:
    cfg = gateway_config(tmp_path, broker)
    topic = f"{ROOT}/_mes_v1/order/merge"
    async with gateway(cfg) as gw:
        await collector.wait_for("/_mes_v1/health")
        collector.publish(
            f"{ROOT}/_mes_v1/order/dispatch", envelope("mes.dispatch/1", DISPATCH, "d-1")
        )
        await collector.wait_for("/_mes_v1/order/received")
        journal = business_inputs(gw)

        # refused, each naming the field, changing nothing
        collector.publish(topic, envelope("mes.merge/1", merge(["5004"]), "other-material"))
        collector.publish(topic, envelope("mes.merge/1", merge(["5001"]), "itself"))
        collector.publish(topic, envelope("mes.merge/1", merge([]), "none"))
        collector.publish(topic, envelope("mes.merge/1", merge(["9999"]), "unknown"))
        rejected = await collector.wait_for("/_mes_v1/rejected", 4)
        by_id = {r.json()["msg_id"]: r.json() for r in rejected}
        assert "material" in by_id["other-material"]["reason"]
        assert by_id["itself"]["field"].endswith("sources[0]")
        assert "sources" in (by_id["none"]["field"] or "")
        assert "no such operation" in by_id["unknown"]["reason"]
        for r in rejected:
            validate(r)
        after = business_inputs(gw)
        assert after == journal
        assert gw.engine.wc.operations[TARGET].spec.target_qty == 40

        # the merge: the sum, the earliest due date, the sources merged into the target
        async with CentralSimulator(broker.host, broker.port, roots=[ROOT]) as central:
            await central.dispatcher.send_merge(
                ROOT, ("5001", "0010"), [("5002", "0010"), ("5003", "0010")]
            )
        event = await merged_event(collector)
        validate(event)
        body = event.json()["body"]
        assert body["sources"] == ["5002/0010", "5003/0010"]
        ops = gw.engine.wc.operations
        assert ops[TARGET].spec.target_qty == 75
        assert ops[TARGET].spec.due == "2030-03-04T14:00:00Z"
        for order in ("5002", "5003"):
            op = ops[OperationKey(order, "0010")]
            assert op.status is OperationStatus.MERGED
            assert op.merged_into == "5001/0010"
        # the same merge again changes nothing and is not refused; a bad one behind it on the
        # same topic tells when the gateway has taken both (one subscription, in order)
        collector.publish(topic, envelope("mes.merge/1", merge(["5002", "5003"]), "m-2"))
        collector.publish(topic, envelope("mes.merge/1", merge(["5001"]), "barrier"))
        rejected = await collector.wait_for("/_mes_v1/rejected", 5)
        assert [r.json()["msg_id"] for r in rejected][-1] == "barrier"
        assert "m-2" not in {r.json()["msg_id"] for r in rejected}
        assert ops[TARGET].spec.target_qty == 75
        assert [e for e in collector.on("/_mes_v1/order/event") if is_merged(e)] == [event]

    # after a restart: the journal replays to the same, and verify agrees
    docs = stored_ops(cfg.store.path)
    assert docs["5002/0010"].status is OperationStatus.MERGED
    assert docs["5002/0010"].merged_into == "5001/0010"
    assert docs["5001/0010"].spec.target_qty == 75
    async with gateway(cfg) as gw:
        ops = gw.engine.wc.operations
        assert ops[TARGET].spec.target_qty == 75
        assert ops[OperationKey("5003", "0010")].status is OperationStatus.MERGED
        failed = [c.what for c in verify_all(gw.engine.store) if c.differences]
        assert failed == []
