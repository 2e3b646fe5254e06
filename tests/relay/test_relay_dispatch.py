"""Orders down end to end: the ERP drops LOIPRO IDocs into a folder (the order file generator),
the relay's dispatcher reads them and sends the work center's gateway (the real one) its
dispatch list, a change, a hold and its release, and a cancel."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from edge.domain.model import OperationKey, OperationStatus
from simulators.broker import Mosquitto
from simulators.erp.files import FileErpStandIn
from simulators.erp.order_files import Operation, Order, OrderFiles
from tests.gateway.conftest import ROOT, gateway, gateway_config
from tests.relay.harness import relay_config, running_relay, sqlite_url, until

pytestmark = pytest.mark.timeout(90)


def dirs(tmp_path: Path, *names: str) -> list[Path]:
    out = [tmp_path / n for n in names]
    for d in out:
        d.mkdir()
    return out


async def test_released_orders_reach_the_gateway_and_follow_the_erp(
    tmp_path: Path, broker: Mosquitto
) -> None:
    inbox, archive, errors = dirs(tmp_path, "inbox", "archive", "errors")
    drop, ack = dirs(tmp_path, "drop", "ack")
    files = OrderFiles(inbox)
    order = Order(
        order_id="4711",
        material="FG-100",
        quantity=Decimal(500),
        unit="PC",
        operations=(Operation(number="0020", work_center="PRESS07", text="Stamp bracket"),),
    )
    other = replace(order, order_id="4712", operations=(Operation(work_center="LATHE01"),))
    files.loipro(order, other)
    erp: dict[str, Any] = {"system": "file", "format": "csv", "drop_dir": str(drop)}
    base = relay_config(broker, sqlite_url(tmp_path / "ledger.db"), erp, instance="dispatching")
    cfg = type(base).model_validate(
        {
            **base.model_dump(mode="python"),
            "dispatch": {
                "enabled": True,
                "interval_s": 1.0,
                "work_centers": [{"work_center": "PRESS07", "root": ROOT}],
                "source": {
                    "system": "file",
                    "format": "loipro",
                    "inbox_dir": str(inbox),
                    "archive_dir": str(archive),
                    "error_dir": str(errors),
                    "state_file": str(tmp_path / "orders.json"),
                    "settle_s": 0.0,
                },
            },
        }
    )
    op = OperationKey("4711", "0020")
    async with (
        FileErpStandIn(drop, ack),
        running_relay(cfg) as relay,
        gateway(gateway_config(tmp_path, broker)) as gw,
    ):
        ops = gw.engine.wc.operations
        await until(lambda: op in ops, 15, "the dispatch list from the IDoc")
        assert ops[op].spec.target_qty == Decimal(500)
        assert OperationKey("4712", "0010") not in ops  # another work center's
        files.loipro(order.with_quantity(600))
        await until(lambda: ops[op].spec.target_qty == Decimal(600), 15, "the changed quantity")
        files.loipro(order.with_quantity(600).locked())
        await until(lambda: ops[op].status is OperationStatus.HELD, 15, "the hold")
        files.loipro(order.with_quantity(600).locked().unlocked())
        await until(lambda: ops[op].status is not OperationStatus.HELD, 15, "the release")
        files.loipro(order.with_quantity(600).teco())
        await until(lambda: ops[op].status is OperationStatus.CANCELLED, 15, "the cancel")
        assert relay.dispatcher is not None
        assert relay.dispatcher.failures == 0
