"""What the relay reads from the gateways: every message the contract allows is read (unknown
fields ignored, as a consumer must), and nothing at all, however broken, makes it raise anything
but its two refusals."""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.relay.messages import BodyRefused, Unreadable, read
from tests.fuzz.messages import extreme_payloads, valid_payloads
from tests.relay.builders import message, posting, reversal

REPO = Path(__file__).resolve().parents[2]
ROOT = "umh/v1/acme/plant1/stamping/line4/PRESS07"
LIMIT = 256 * 1024
CONF = "_mes_v1/confirmation"


def readme_example(path: str) -> dict[str, Any]:
    text = (REPO / "contract" / "README.md").read_text()
    block = re.search(rf"<!-- example: {re.escape(path)} -->\n```json\n(.*?)```", text, re.S)
    assert block is not None
    data: dict[str, Any] = json.loads(block.group(1))
    return data


def test_the_contract_s_examples_are_read() -> None:
    conf = read(
        "confirmation", ROOT, json.dumps(readme_example("_mes_v1/confirmation")).encode(), LIMIT
    )
    assert (conf.order_id, conf.operation, conf.conf_index) == ("1000123", "0010", 4)
    assert (conf.yield_qty, conf.scrap_qty, conf.rework_qty) == (250, 6, 2)
    assert conf.machine_s == 4920.0
    assert conf.work_center == "PRESS07"
    assert conf.period_start_ms is not None
    rev = read(
        "reversal", ROOT, json.dumps(readme_example("_mes_v1/confirmation/cancel")).encode(), LIMIT
    )
    assert (
        rev.reverses_idem_key == "0d263753b63efc38194812874ad6d2413071c3ce6e1aaef3baa1a8d2f08970b7"
    )
    assert str(rev.scrap_qty) == "1.5"


def test_fields_a_later_gateway_adds_are_ignored() -> None:
    data = json.loads(message(posting(1)))
    data["new_envelope_field"] = {"x": 1}
    data["body"]["new_body_field"] = [1, 2]
    data["body"]["activities"]["tool_s"] = 3.0
    assert read("confirmation", ROOT, json.dumps(data).encode(), LIMIT).idem_key == data["idem_key"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda b: b.update(yield_qty=-1), "body.yield_qty"),
        (lambda b: b.update(yield_qty="1e9999"), "body.yield_qty"),
        (lambda b: b.update(scrap_qty=1.0000001), "body.scrap_qty"),
        (lambda b: b.update(order_id="x" * 41), "body.order_id"),
        (lambda b: b.update(conf_index=0), "body.conf_index"),
        (lambda b: b.update(posting_date="yesterday"), "body.posting_date"),
        (lambda b: b.pop("unit"), "body.unit"),
        (lambda b: b.update(idem_key="f" * 64), "body.idem_key"),
    ],
)
def test_a_body_that_cannot_be_posted_is_refused_naming_the_field(change: Any, field: str) -> None:
    data = json.loads(message(posting(1)))
    change(data["body"])
    with pytest.raises(BodyRefused) as info:
        read("confirmation", ROOT, json.dumps(data).encode(), LIMIT)
    assert info.value.field == field or field in str(info.value)
    assert info.value.head.idem_key == data["idem_key"]  # so it can be answered


def test_the_wrong_schema_on_a_topic_is_refused() -> None:
    with pytest.raises(BodyRefused, match="schema"):
        read("reversal", ROOT, message(posting(1)), LIMIT)
    assert read("reversal", ROOT, message(reversal(posting(1))), LIMIT).kind == "reversal"


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.binary(max_size=2048))
def test_bytes_are_refused_never_raised(payload: bytes) -> None:
    with contextlib.suppress(Unreadable, BodyRefused):
        read("confirmation", ROOT, payload, LIMIT)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.one_of(valid_payloads(CONF), extreme_payloads(CONF)))
def test_whatever_the_schema_allows_is_read_or_refused_cleanly(data: Any) -> None:
    try:
        p = read("confirmation", ROOT, json.dumps(data).encode(), LIMIT)
    except (Unreadable, BodyRefused):
        return
    assert p.idem_key == data["idem_key"]


def test_deep_and_huge_payloads_are_unreadable() -> None:
    with pytest.raises(Unreadable, match="nested"):
        read("confirmation", ROOT, b"[" * 100_000, LIMIT)
    with pytest.raises(Unreadable, match="over the limit"):
        read("confirmation", ROOT, b" " * (LIMIT + 1), LIMIT)
    with pytest.raises(Unreadable):
        read("confirmation", ROOT, b'{"seq": NaN}', LIMIT)


quantities = st.decimals(
    min_value=0, max_value=10**9, places=6, allow_nan=False, allow_infinity=False
)
ids = st.text("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ-_.", min_size=1, max_size=40)


@settings(max_examples=100, deadline=None)
@given(ids, ids, st.integers(1, 10**6), quantities, quantities, st.booleans())
def test_what_a_gateway_sends_is_read_back_exactly(
    order: str, op: str, n: int, good: Any, scrap: Any, final: bool
) -> None:
    p = posting(n, order=order, op=op, good=str(good), scrap=str(scrap), final=final)
    got = read("confirmation", p.root, message(p), LIMIT)
    assert (got.order_id, got.operation, got.conf_index, got.final) == (order, op, n, final)
    assert (got.yield_qty, got.scrap_qty) == (good, scrap)
    assert got.idem_key == p.idem_key
    assert got.period_end_ms == p.period_end_ms
