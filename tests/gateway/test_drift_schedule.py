"""The routing-drift review on the gateway's schedule ([report] drift_every_days): made from the
database, sent on _mes_v1/report/drift in the published schema over a real mosquitto, not sent
again after a restart before it is due; the core refuses a body that is no review, naming the
field, and changes nothing."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from edge.config import load_config
from edge.domain.drift import MAX_ROWS
from edge.domain.events import EventType
from edge.domain.inputs import DriftReported
from simulators.broker import Mosquitto
from tests.domain.builders import at, make_wc
from tests.gateway.conftest import CONFIG, Collector, gateway, validate

REVIEW = "/_mes_v1/report/drift"


def review(**changes: object) -> str:
    body: dict[str, object] = {
        "type": "routing_drift",
        "event_time": "2024-03-04T10:00:00.000Z",
        "work_center": "PRESS07",
        "rows": [],
        "operations": 0,
        **changes,
    }
    return json.dumps(body)


def test_the_core_sends_a_review_on_and_refuses_what_is_none() -> None:
    wc = make_wc()
    out = wc.apply(DriftReported(review(flagged=0), at(0)))
    assert out.rejection is None
    (event,) = out.events
    assert event.type is EventType.ROUTING_DRIFT
    assert event.data["work_center"] == "PRESS07"
    assert "type" not in event.data
    assert "event_time" not in event.data  # the event's own time is the review's
    for body, field in (
        ("{not json", "body"),
        ("[]", "body"),
        (review(type="shift_closed"), "body"),
        (review(rows="all"), "body.rows"),
        (review(rows=[{}] * (MAX_ROWS + 1)), "body.rows"),
        ("x" * 1_000_001, "body"),
    ):
        refused = wc.apply(DriftReported(body, at(1)))
        assert refused.rejection is not None, body[:40]
        assert refused.rejection.field == field
        assert not refused.events


def config(tmp_path: Path, broker: Mosquitto) -> Path:
    path = tmp_path / "edge.toml"
    path.write_text(
        CONFIG.format(db=tmp_path / "edge.db", port=broker.port, result_timeout_s=600)
        + "\n[report]\ndrift_every_days = 1\ndrift_days = 30\ndrift_check_s = 1\n"
    )
    return path


@pytest.mark.timeout(60)
async def test_the_review_goes_up_on_its_schedule_and_not_again_after_a_restart(
    tmp_path: Path, broker: Mosquitto, collector: Collector
) -> None:
    cfg = load_config(config(tmp_path, broker), env={})
    async with gateway(cfg):
        (sent,) = await collector.wait_for(REVIEW, timeout=20)
        validate(sent)
        body = sent.json()["body"]
        assert body["type"] == "routing_drift"
        assert body["work_center"] == "PRESS07"
        assert body["operations"] == 0  # a new database: nothing completed in 30 days
        start = time.mktime(time.strptime(body["period_start"][:19], "%Y-%m-%dT%H:%M:%S"))
        end = time.mktime(time.strptime(body["period_end"][:19], "%Y-%m-%dT%H:%M:%S"))
        assert end - start == 30 * 86_400
        await asyncio.sleep(2.5)  # two more checks: not due again for a day
        assert len(collector.on(REVIEW)) == 1
    async with gateway(cfg):
        await collector.wait_for("/_mes_v1/health")
        await asyncio.sleep(2.5)
        assert len(collector.on(REVIEW)) == 1  # the stored event says when the last one went
