"""The D365 adapter against the D365 stand-in, over real HTTP on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pydantic
import pytest

from edge.relay.d365 import D365Adapter, Settings, build
from edge.relay.erp import (
    NotFound,
    Outcome,
    Posted,
    Posting,
    Quantity,
    Rejected,
    Submitted,
    Transient,
    Unknown,
    external_id,
)
from simulators.erp.d365 import D365StandIn, validate_content
from tests.erp.helpers import D365_SECRET, d365_token, d365_values, write_secret

pytestmark = pytest.mark.timeout(10)

SECRET = D365_SECRET
T0 = 1_764_583_200_000  # 2025-12-01T10:00:00Z


def make_posting(**changes: Any) -> Posting:
    fields: dict[str, Any] = {
        "kind": "confirmation",
        "idem_key": "edge1/wc7/P000123/0010/0/1",
        "edge_id": "edge1",
        "root": "umh/v1/acme/plant1/area/line4/PRESS07",
        "seq": 1,
        "work_center": "PRESS07",
        "order_id": "P000123",
        "operation": "0010",
        "split": 0,
        "conf_index": 1,
        "event_ms": T0 + 3_600_000,
        "yield_qty": Decimal(40),
        "scrap_qty": Decimal(3),
        "rework_qty": Decimal(0),
        "scrap_by_reason": (Quantity("SC-BURR", Decimal(2)), Quantity("SC-MAT", Decimal(1))),
        "unit": "PC",
        "material": "A0001",
        "posting_date": "2025-12-01",
        "period_start_ms": T0,
        "period_end_ms": T0 + 3_600_000,
        "setup_s": 900.0,
        "machine_s": 2700.0,
        "labour_s": 3600.0,
        "actor": "00012345",
    }
    fields.update(changes)
    return Posting(**fields)


def settings_for(d365: D365StandIn, secret_file: Path, **changes: Any) -> Settings:
    causes = {"SC-BURR": "Machine", "SC-MAT": "Material"}
    values = {"poll_interval_s": 0.1, "error_causes": causes, **changes}
    return Settings.model_validate(d365_values(d365, secret_file, **values))


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    return write_secret(tmp_path)


@pytest.fixture
async def d365() -> AsyncIterator[D365StandIn]:
    async with D365StandIn(client_secret=SECRET, process_delay_s=0.05) as stand_in:
        stand_in.state.add_order("P000123", item="A0001", quantity=100, operations=(10, 20))
        yield stand_in


AdapterFactory = Callable[..., Awaitable[D365Adapter]]


@pytest.fixture
async def adapter_for(d365: D365StandIn, secret_file: Path) -> AsyncIterator[AdapterFactory]:
    made: list[D365Adapter] = []

    async def make(**changes: Any) -> D365Adapter:
        adapter = build(settings_for(d365, secret_file, **changes))
        await adapter.start()
        made.append(adapter)
        return adapter

    yield make
    for adapter in made:
        await adapter.close()


@pytest.fixture
async def adapter(adapter_for: AdapterFactory) -> D365Adapter:
    return await adapter_for()


async def post_once(settings: Settings) -> Outcome:
    """``make_posting()`` posted by an adapter of its own (started, then closed)."""
    adapter = build(settings)
    await adapter.start()
    try:
        return await adapter.post(make_posting())
    finally:
        await adapter.close()


async def settle(adapter: D365Adapter, posting: Posting, outcome: Outcome) -> Outcome:
    """Poll a Submitted posting until it is something else (at most 5 s)."""
    deadline = time.monotonic() + 5.0
    while isinstance(outcome, Submitted):
        assert time.monotonic() < deadline, "still submitted after 5 s"
        await asyncio.sleep(0.05)
        outcome = await adapter.poll(posting, outcome.ref)
    return outcome


def content(d365: D365StandIn, message_id: str) -> dict[str, Any]:
    (message,) = d365.state.by_id(message_id)
    doc = json.loads(message.content)
    assert isinstance(doc, dict)
    return doc


# -- posting ---------------------------------------------------------------------------------


async def test_route_card_is_submitted_then_posted(d365: D365StandIn, adapter: D365Adapter) -> None:
    posting = make_posting()
    outcome = await adapter.post(posting)
    assert isinstance(outcome, Submitted)
    assert outcome.ref == {"route_card": posting.external_id}
    assert outcome.ref["route_card"] == external_id(posting.idem_key)

    (message,) = d365.state.by_id(posting.external_id)
    assert message.company == "usmf"
    assert message.queue == "JmgMES3P"
    assert message.message_type == "ProdProductionOrderRouteCard"
    doc = content(d365, posting.external_id)
    assert doc["ProductionOrderNumber"] == "P000123"
    setup, process, extra = doc["RouteCardLines"]
    assert setup == {
        "OperationNumber": 10,
        "OperationsResourceId": "PRESS07",
        "TaskType": "Setup",
        "Hours": 0.25,
        "ConsumptionDate": "2025-12-01",
    }
    assert process["TaskType"] == "Process"
    assert process["Hours"] == 0.75
    assert process["GoodQuantity"] == 40
    assert (process["ErrorQuantity"], process["ErrorCause"]) == (2, "Machine")
    assert process["OperationCompleted"] == "No"
    assert (extra["ErrorQuantity"], extra["ErrorCause"], extra["GoodQuantity"]) == (
        1,
        "Material",
        0,
    )
    assert len(doc["RouteCardLines"]) == 3  # no labour line without labour_resource

    final = await settle(adapter, posting, outcome)
    assert isinstance(final, Posted)
    assert final.keys["route_card"] == posting.external_id
    assert final.keys["route_card_journal"].startswith("RC-")
    totals = d365.state.totals("P000123", 10)
    assert totals["good"] == 40
    assert totals["error"] == 3
    assert totals["hours"] == Decimal("1.0")
    d365.state.assert_exactly_once()


async def test_labour_line_when_a_labour_resource_is_set(
    d365: D365StandIn, adapter_for: AdapterFactory
) -> None:
    adapter = await adapter_for(labour_resource="CREW-A")
    posting = make_posting(scrap_qty=Decimal(0), scrap_by_reason=())
    outcome = await adapter.post(posting)
    assert isinstance(outcome, Submitted)
    lines = content(d365, posting.external_id)["RouteCardLines"]
    assert [x["OperationsResourceId"] for x in lines] == ["PRESS07", "PRESS07", "CREW-A"]
    assert lines[2]["Hours"] == 1.0
    assert lines[1]["ErrorQuantity"] == 0
    assert "ErrorCause" not in lines[1]
    assert isinstance(await settle(adapter, posting, outcome), Posted)


async def test_failed_message_is_rejected_with_the_log_text(
    d365: D365StandIn, adapter: D365Adapter
) -> None:
    d365.state.fail_next_message("Production order P000123 is locked by user Admin.")
    posting = make_posting()
    outcome = await settle(adapter, posting, await adapter.post(posting))
    assert isinstance(outcome, Rejected)
    assert "Production order P000123 is locked by user Admin." in outcome.text
    assert "ProdProductionOrderRouteCard" in outcome.text
    assert outcome.code == "Failed"
    (message,) = d365.state.by_id(posting.external_id)
    assert message.attempts == 3  # tried three times before Failed
    assert d365.state.totals("P000123", 10)["good"] == 0


async def test_a_failure_that_clears_on_retry_is_posted(
    d365: D365StandIn, adapter: D365Adapter
) -> None:
    d365.state.fail_next_message("Deadlock; retrying.", attempts=2)
    posting = make_posting()
    outcome = await settle(adapter, posting, await adapter.post(posting))
    assert isinstance(outcome, Posted)


@pytest.mark.parametrize(
    ("changes", "text"),
    [
        ({"order_id": "P999999"}, "Production order P999999 does not exist."),
        ({"operation": "0030"}, "Operation 30 does not exist on production order P000123."),
        ({"yield_qty": Decimal(101)}, "exceeds the remaining quantity 100"),
    ],
)
async def test_erp_errors_fail_the_message(
    d365: D365StandIn, adapter: D365Adapter, changes: dict[str, Any], text: str
) -> None:
    posting = make_posting(**changes)
    outcome = await settle(adapter, posting, await adapter.post(posting))
    assert isinstance(outcome, Rejected)
    assert text in outcome.text


async def test_order_not_started_fails(d365: D365StandIn, adapter: D365Adapter) -> None:
    d365.state.add_order("P000200", status="Released")
    posting = make_posting(order_id="P000200", idem_key="k-200")
    outcome = await settle(adapter, posting, await adapter.post(posting))
    assert isinstance(outcome, Rejected)
    assert "has not been started" in outcome.text


async def test_operation_that_is_not_a_number_is_rejected(adapter: D365Adapter) -> None:
    outcome = await adapter.post(make_posting(operation="SETUP"))
    assert isinstance(outcome, Rejected)
    assert "OperationNumber is an integer" in outcome.text


async def test_final_confirmation_reports_finished(d365: D365StandIn, adapter: D365Adapter) -> None:
    posting = make_posting(final=True, variance_reason=None)
    outcome = await adapter.post(posting)
    assert isinstance(outcome, Submitted)
    assert set(outcome.ref) == {"route_card", "report_finished"}
    route_card = content(d365, outcome.ref["route_card"])
    assert route_card["RouteCardLines"][1]["OperationCompleted"] == "Yes"
    doc = content(d365, outcome.ref["report_finished"])
    (line,) = doc["ReportFinishedLines"]
    assert doc["ProductionOrderNumber"] == "P000123"
    assert line["ItemNumber"] == "A0001"
    assert line["ReportedGoodQuantity"] == 40
    assert line["ReportedErrorQuantity"] == 3
    assert line["ErrorCause"] == "Machine"
    assert line["ReportAsFinishedDate"] == "2025-12-01"
    assert line["ExecutedDateTime"] == "2025-12-01T11:00:00Z"
    types = [m.message_type for m in d365.state.messages]
    assert types == ["ProdProductionOrderRouteCard", "ProdProductionOrderReportFinished"]

    final = await settle(adapter, posting, outcome)
    assert isinstance(final, Posted)
    assert final.keys["report_finished"] == outcome.ref["report_finished"]
    assert final.keys["report_finished_journal"].startswith("RAF-")
    assert d365.state.reported_finished("P000123") == {"good": 40, "error": 3}


async def test_report_finished_off_and_end_on(
    d365: D365StandIn, adapter_for: AdapterFactory
) -> None:
    adapter = await adapter_for(report_finished_on_final=False, end_on_final=True)
    posting = make_posting(final=True)
    outcome = await adapter.post(posting)
    assert isinstance(outcome, Submitted)
    assert set(outcome.ref) == {"route_card", "end"}
    assert content(d365, outcome.ref["end"])["EndedDate"] == "2025-12-01"
    assert isinstance(await settle(adapter, posting, outcome), Posted)
    assert d365.state.orders["P000123"].status == "Ended"
    # nothing more goes on an ended order
    later = make_posting(idem_key="k-after-end")
    rejected = await settle(adapter, later, await adapter.post(later))
    assert isinstance(rejected, Rejected)
    assert "is ended" in rejected.text


async def test_start_is_sent_once_per_order(d365: D365StandIn, adapter_for: AdapterFactory) -> None:
    d365.state.add_order("P000300", quantity=100, status="Released")
    adapter = await adapter_for(start_on_first=True)
    first = make_posting(order_id="P000300", idem_key="k-300-1")
    second = make_posting(order_id="P000300", idem_key="k-300-2", conf_index=2)
    one = await adapter.post(first)
    assert isinstance(one, Submitted)
    assert set(one.ref) == {"start", "route_card"}
    assert isinstance(await settle(adapter, first, one), Posted)
    two = await adapter.post(second)
    assert isinstance(two, Submitted)
    assert isinstance(await settle(adapter, second, two), Posted)
    starts = [m for m in d365.state.messages if m.message_type == "ProdProductionOrderStart"]
    assert len(starts) == 1
    assert json.loads(starts[0].content) == {
        "ProductionOrderNumber": "P000300",
        "StartedDate": "2025-12-01",
    }
    assert d365.state.totals("P000300", 10)["good"] == 80


async def test_concurrent_postings_of_an_order_send_one_start(
    d365: D365StandIn, adapter_for: AdapterFactory
) -> None:
    d365.state.add_order("P000301", quantity=100, status="Released", operations=(10, 20))
    adapter = await adapter_for(start_on_first=True)
    postings = [
        make_posting(order_id="P000301", idem_key=f"k-301-{op}", operation=op)
        for op in ("0010", "0020")
    ]
    outcomes = await asyncio.gather(*(adapter.post(p) for p in postings))
    assert all(isinstance(o, Submitted) for o in outcomes)
    starts = [m for m in d365.state.messages if m.message_type == "ProdProductionOrderStart"]
    assert len(starts) == 1
    for posting, outcome in zip(postings, outcomes, strict=True):
        assert isinstance(await settle(adapter, posting, outcome), Posted)


async def test_dates_are_the_plants(d365: D365StandIn, adapter_for: AdapterFactory) -> None:
    d365.state.add_order("P000302", status="Released")
    adapter = await adapter_for(start_on_first=True, timezone="Europe/Berlin")
    late = T0 + 13 * 3_600_000 + 30 * 60_000  # 23:30 UTC is 00:30 the next day in Berlin
    posting = make_posting(
        order_id="P000302",
        idem_key="k-302",
        posting_date="",
        period_start_ms=late,
        period_end_ms=late + 60_000,
    )
    outcome = await adapter.post(posting)
    assert isinstance(outcome, Submitted)
    assert content(d365, outcome.ref["start"])["StartedDate"] == "2025-12-02"
    lines = content(d365, outcome.ref["route_card"])["RouteCardLines"]
    assert {x["ConsumptionDate"] for x in lines} == {"2025-12-02"}


async def test_poll_of_a_message_that_is_not_there_is_unknown(adapter: D365Adapter) -> None:
    posting = make_posting()
    outcome = await adapter.poll(posting, {"route_card": posting.external_id})
    assert isinstance(outcome, Unknown)
    assert posting.external_id in outcome.text


async def test_reversal_posts_the_negated_route_card(
    d365: D365StandIn, adapter: D365Adapter
) -> None:
    original = make_posting()
    assert isinstance(await settle(adapter, original, await adapter.post(original)), Posted)
    reversal = make_posting(
        kind="reversal",
        idem_key="edge1/wc7/P000123/0010/0/1/cancel",
        reverses_idem_key=original.idem_key,
    )
    outcome = await adapter.reverse(reversal)
    assert isinstance(outcome, Submitted)
    assert outcome.ref == {"route_card": reversal.external_id}
    lines = content(d365, reversal.external_id)["RouteCardLines"]
    assert lines[1]["GoodQuantity"] == -40
    assert lines[0]["Hours"] == -0.25
    assert isinstance(await settle(adapter, reversal, outcome), Posted)
    assert d365.state.totals("P000123", 10) == {
        "good": 0,
        "error": 0,
        "hours": 0,
        "setup_hours": 0,
        "process_hours": 0,
    }
    wrong = await adapter.post(reversal)
    assert isinstance(wrong, Rejected)


# -- in doubt, lookup ------------------------------------------------------------------------


async def test_lookup_after_commit_then_drop(d365: D365StandIn, adapter: D365Adapter) -> None:
    posting = make_posting()
    d365.state.drop_next()
    outcome = await adapter.post(posting)
    assert isinstance(outcome, Unknown)
    assert "sent, but no answer" in outcome.text
    assert len(d365.state.by_id(posting.external_id)) == 1  # it was committed

    found = await adapter.lookup(posting)
    assert isinstance(found, Submitted | Posted)
    await d365.state.wait_settled()
    found = await adapter.lookup(posting)
    assert isinstance(found, Posted)
    assert found.keys["route_card"] == posting.external_id

    # posting it again sends nothing new
    again = await adapter.post(posting)
    assert isinstance(again, Submitted)
    assert len(d365.state.by_id(posting.external_id)) == 1
    d365.state.assert_exactly_once()

    never = make_posting(idem_key="never-sent")
    assert isinstance(await adapter.lookup(never), NotFound)


async def test_timeout_after_commit_is_unknown(
    d365: D365StandIn, adapter_for: AdapterFactory
) -> None:
    adapter = await adapter_for(timeout_s=1.0)
    posting = make_posting()
    d365.state.hang_next(4.0)
    started = time.monotonic()
    outcome = await adapter.post(posting)
    assert isinstance(outcome, Unknown)
    assert "ReadTimeout" in outcome.text
    assert time.monotonic() - started < 3.0
    await d365.state.wait_settled()
    found = await adapter.lookup(posting)
    assert isinstance(found, Posted)


async def test_retry_after_half_way_sends_only_what_is_missing(
    d365: D365StandIn, adapter: D365Adapter
) -> None:
    posting = make_posting(final=True)
    # the route card goes; the report-finished gets a 503
    real_take = d365.state.take_send_fault
    calls = 0

    def second_call_fails() -> Any:
        nonlocal calls
        calls += 1
        if calls == 2:
            d365.state.fail_next(503, "Service busy", retry_after_s=2)
        return real_take()

    d365.state.take_send_fault = second_call_fails  # type: ignore[method-assign]
    outcome = await adapter.post(posting)
    assert isinstance(outcome, Transient)
    assert "HTTP 503" in outcome.text
    assert outcome.retry_after_s == 2
    assert [m.message_type for m in d365.state.messages] == ["ProdProductionOrderRouteCard"]

    again = await adapter.post(posting)
    assert isinstance(again, Submitted)
    assert [m.message_type for m in d365.state.messages] == [
        "ProdProductionOrderRouteCard",
        "ProdProductionOrderReportFinished",
    ]
    assert isinstance(await settle(adapter, posting, again), Posted)
    d365.state.assert_exactly_once()


async def test_resubmitting_a_failed_posting_sends_it_again(
    d365: D365StandIn, adapter: D365Adapter
) -> None:
    d365.state.fail_order("P000123", "Production order P000123 is locked by user Admin.")
    posting = make_posting()
    assert isinstance(await settle(adapter, posting, await adapter.post(posting)), Rejected)
    d365.state.clear_order_fault("P000123")
    outcome = await settle(adapter, posting, await adapter.post(posting))
    assert isinstance(outcome, Posted)
    assert [m.state for m in d365.state.by_id(posting.external_id)] == ["Failed", "Processed"]
    d365.state.assert_exactly_once()


# -- auth, outages, HTTP errors --------------------------------------------------------------


async def test_token_expiry_mid_run_fetches_a_new_one(
    d365: D365StandIn, adapter: D365Adapter
) -> None:
    first = make_posting()
    assert isinstance(await adapter.post(first), Submitted)
    tokens = d365.state.token_requests
    assert tokens == 1
    d365.state.expire_tokens()
    second = make_posting(idem_key="k-2", conf_index=2)
    outcome = await adapter.post(second)
    assert isinstance(outcome, Submitted)
    assert d365.state.token_requests == 2
    assert isinstance(await settle(adapter, second, outcome), Posted)


@pytest.mark.parametrize("status", [400, 401])
async def test_bad_secret_is_transient_with_a_clear_text(
    d365: D365StandIn, tmp_path: Path, status: int
) -> None:
    d365.state.bad_secret_status = status
    wrong = tmp_path / "wrong.secret"
    wrong.write_text("not-the-secret")
    outcome = await post_once(settings_for(d365, wrong))
    assert isinstance(outcome, Transient)
    assert "configuration error" in outcome.text
    assert f"HTTP {status}" in outcome.text
    assert "invalid_client" in outcome.text or "Invalid client secret" in outcome.text
    assert "not-the-secret" not in outcome.text
    assert d365.state.messages == []


async def test_fo_refusing_a_fresh_token_is_transient(
    d365: D365StandIn, adapter: D365Adapter
) -> None:
    d365.state.fail_next(401, count=2)  # neither the first nor the retried call gets through

    outcome = await adapter.post(make_posting())
    assert isinstance(outcome, Transient)
    assert "HTTP 401" in outcome.text
    assert d365.state.token_requests == 2  # the token was dropped and fetched again


async def test_outage_is_transient(d365: D365StandIn, adapter: D365Adapter) -> None:
    d365.state.outage = True
    outcome = await adapter.post(make_posting())
    assert isinstance(outcome, Transient)
    assert "HTTP 503" in outcome.text
    assert outcome.retry_after_s == 1
    d365.state.outage = False
    assert isinstance(await adapter.post(make_posting()), Submitted)


async def test_connection_refused_is_transient(d365: D365StandIn, secret_file: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = settings_for(
        d365, secret_file, base_url=f"http://127.0.0.1:{port}", scope=f"{d365.base_url}/.default"
    )
    outcome = await post_once(settings)
    assert isinstance(outcome, Transient)
    assert "not sent" in outcome.text
    assert "ConnectError" in outcome.text


@pytest.mark.parametrize(
    ("status", "said", "retry_after_s", "answer"),
    [
        # a bad request: the ERP refuses the data, in its own words
        (400, "Field 'GoodQuantity' has an invalid value.", None, Rejected),
        # too many requests: not now, and when again
        (429, "Too many requests", 7, Transient),
    ],
)
async def test_an_http_error_is_rejected_or_transient_with_the_erp_text(
    d365: D365StandIn,
    adapter: D365Adapter,
    status: int,
    said: str,
    retry_after_s: float | None,
    answer: type[Rejected | Transient],
) -> None:
    d365.state.fail_next(status, said, retry_after_s=retry_after_s)
    outcome = await adapter.post(make_posting())
    assert isinstance(outcome, answer)
    assert f"HTTP {status}" in outcome.text
    assert said in outcome.text
    if isinstance(outcome, Transient):
        assert outcome.retry_after_s == retry_after_s


async def test_poll_during_an_outage_is_transient(d365: D365StandIn, adapter: D365Adapter) -> None:
    posting = make_posting()
    outcome = await adapter.post(posting)
    assert isinstance(outcome, Submitted)
    d365.state.outage = True
    polled = await adapter.poll(posting, outcome.ref)
    assert isinstance(polled, Transient)
    looked = await adapter.lookup(posting)
    assert isinstance(looked, Transient)


async def test_queued_message_stays_submitted(d365: D365StandIn, adapter: D365Adapter) -> None:
    d365.state.paused = True
    posting = make_posting()
    outcome = await adapter.post(posting)
    assert isinstance(outcome, Submitted)
    polled = await adapter.poll(posting, outcome.ref)
    assert isinstance(polled, Submitted)
    assert polled.poll_after_s == pytest.approx(0.1)
    d365.state.paused = False
    assert isinstance(await settle(adapter, posting, polled), Posted)


async def test_canceled_message_is_rejected(d365: D365StandIn, adapter: D365Adapter) -> None:
    d365.state.paused = True
    posting = make_posting()
    outcome = await adapter.post(posting)
    assert isinstance(outcome, Submitted)
    d365.state.cancel(posting.external_id)
    polled = await adapter.poll(posting, outcome.ref)
    assert isinstance(polled, Rejected)
    assert polled.code == "Canceled"


# -- the stand-in's own checks ---------------------------------------------------------------


async def test_stand_in_refuses_a_bad_envelope(d365: D365StandIn, adapter: D365Adapter) -> None:
    async with httpx.AsyncClient() as client:
        token = await d365_token(client, d365)
        url = f"{d365.base_url}/api/services/SysMessageServices/SysMessageService/SendMessage"
        headers = {"Authorization": f"Bearer {token}"}
        body = {
            "_companyId": "usmf",
            "_messageQueue": "JmgMES3P",
            "_messageType": "ProdProductionOrderRouteCard",
            "_messageContent": {"ProductionOrderNumber": "P000123"},  # an object, not a string
        }
        answer = await client.post(url, json=body, headers=headers)
        assert answer.status_code == 500
        assert "_messageContent" in answer.json()["Message"]
        answer = await client.post(url, json={**body, "_extra": 1}, headers=headers)
        assert answer.status_code == 500
        answer = await client.post(url, json=body)
        assert answer.status_code == 401
    assert d365.state.messages == []


def test_stand_in_validates_content_per_type() -> None:
    from simulators.erp.d365 import ProcessingError

    good = {"ProductionOrderNumber": "P1", "RouteCardLines": [{"OperationNumber": 10}]}
    validate_content("ProdProductionOrderRouteCard", json.dumps(good))
    cases = [
        ({"RouteCardLines": [{"OperationNumber": 10}]}, "'ProductionOrderNumber' is mandatory"),
        ({"ProductionOrderNumber": "P1", "RouteCardLines": []}, "at least one line"),
        ({"ProductionOrderNumber": "P1", "RouteCardLines": [{}]}, "'OperationNumber'"),
        (
            {"ProductionOrderNumber": "P1", "RouteCardLines": [{"OperationNumber": "10"}]},
            "type int",
        ),
        (
            {"ProductionOrderNumber": "P1", "RouteCardLines": [{"OperationNumber": 1, "X": 1}]},
            "'X' is not supported",
        ),
        (
            {
                "ProductionOrderNumber": "P1",
                "RouteCardLines": [{"OperationNumber": 1, "TaskType": "Run"}],
            },
            "not a valid value",
        ),
    ]
    for doc, text in cases:
        with pytest.raises(ProcessingError, match=text.replace("(", r"\(")):
            validate_content("ProdProductionOrderRouteCard", json.dumps(doc))


async def test_stand_in_stops_within_a_second() -> None:
    d365 = D365StandIn()
    await d365.__aenter__()
    d365.state.latency_s = 30.0  # a request is in the middle of its answer when it stops

    async def slow() -> None:
        async with httpx.AsyncClient(timeout=5) as client:
            with contextlib.suppress(httpx.HTTPError):
                await client.get(f"{d365.base_url}/data/SysMessageProcessorMessages")

    pending = asyncio.create_task(slow())
    await asyncio.sleep(0.2)
    started = time.monotonic()
    await d365.__aexit__(None, None, None)
    assert time.monotonic() - started < 1.0
    await asyncio.wait_for(pending, 2.0)


# -- settings --------------------------------------------------------------------------------


def base_settings(secret_file: Path, **changes: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "system": "d365",
        "base_url": "https://contoso.operations.dynamics.com",
        "tenant_token_url": "https://login.microsoftonline.com/tenant/oauth2/v2.0/token",
        "client_id": "edge-relay",
        "client_secret_file": str(secret_file),
        "company": "usmf",
    }
    values.update(changes)
    return values


def test_settings_defaults(secret_file: Path) -> None:
    settings = Settings.model_validate(base_settings(secret_file))
    assert settings.queue == "JmgMES3P"
    assert settings.scope == "https://contoso.operations.dynamics.com/.default"
    assert settings.effective_scope == settings.scope
    given = Settings.model_validate(base_settings(secret_file, scope="api://other/.default"))
    assert given.scope == "api://other/.default"
    assert settings.report_finished_on_final is True
    assert settings.start_on_first is False
    assert settings.timeout_s == 30
    adapter = build(settings)
    assert SECRET not in repr(adapter)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"colour": "blue"}, "colour"),
        ({"timeout_s": 0}, "timeout_s"),
        ({"timeout_s": 301}, "timeout_s"),
        ({"poll_interval_s": 0.0}, "poll_interval_s"),
        ({"company": "toolong"}, "company"),
        ({"base_url": "contoso"}, "base_url"),
        ({"client_id": ""}, "client_id"),
        ({"system": "sap"}, "system"),
        ({"timeout_s": "30"}, "timeout_s"),
        ({"error_causes": {"SC-X": "Weather"}}, "error_causes"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"poll_interval_s": float("inf")}, "poll_interval_s"),
    ],
)
def test_settings_refuse(secret_file: Path, changes: dict[str, Any], field: str) -> None:
    with pytest.raises(pydantic.ValidationError) as info:
        Settings.model_validate(base_settings(secret_file, **changes))
    assert field in str(info.value)


def test_unreadable_secret_file_names_the_field(tmp_path: Path) -> None:
    missing = tmp_path / "nope.secret"
    settings = Settings.model_validate(base_settings(missing))
    with pytest.raises(ValueError, match="client_secret_file") as info:
        build(settings)
    assert str(missing) in str(info.value)
    empty = tmp_path / "empty.secret"
    empty.write_text("\n")
    with pytest.raises(ValueError, match=r"client_secret_file.*empty"):
        build(Settings.model_validate(base_settings(empty)))
