"""The SAP S/4HANA stand-in (simulators.erp.sap), served for real on 127.0.0.1 and asked over
HTTP with httpx: CSRF, Basic and OAuth 2, the OData V2 formats, the business rules, the
faults on command and the ledger that judges exactly once."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from simulators.erp.sap import SapStandIn, SapState

pytestmark = pytest.mark.timeout(10)

USER, PASSWORD = "RELAY", "pw-1"
CLIENT_ID, CLIENT_SECRET = "edge-relay", "s3cret"
GUID_A = "7f1b7f4e-2a59-4a0c-9d61-3c2f0b0f2a11"
GUID_B = "0b5c1a3e-1111-4a0c-9d61-3c2f0b0f2a12"
DAY = 1741046400000  # 2025-03-04 00:00 UTC
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def sap() -> Iterator[SapStandIn]:
    with SapStandIn(
        user=USER, password=PASSWORD, client_id=CLIENT_ID, client_secret=CLIENT_SECRET
    ) as stand_in:
        yield stand_in


@contextlib.contextmanager
def session(sap: SapStandIn) -> Iterator[httpx.Client]:
    """A client that has done the CSRF handshake (token in its headers, cookie in its jar)."""
    with httpx.Client(auth=(USER, PASSWORD), timeout=5) as client:
        fetched = client.get(sap.url, headers={"x-csrf-token": "Fetch"})
        assert fetched.status_code == 200
        client.headers["x-csrf-token"] = fetched.headers["x-csrf-token"]
        yield client


def body(**extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "OrderID": "1000123",
        "OrderOperation": "0010",
        "Sequence": "0",
        "ConfirmationUnit": "PC",
        "ConfirmationYieldQuantity": "95",
        "ConfirmationScrapQuantity": "5",
        "VarianceReasonCode": "",
        "PostingDate": f"/Date({DAY})/",
        "ConfirmedExecutionStartDate": f"/Date({DAY})/",
        "ConfirmedExecutionStartTime": "PT06H00M00S",
        "ConfirmedExecutionEndDate": f"/Date({DAY})/",
        "ConfirmedExecutionEndTime": "PT10H00M00S",
        "OpConfirmedWorkQuantity1": "0.250",
        "IsFinalConfirmation": False,
        "ExternalSystemConfirmation": GUID_A,
        "ConfirmationText": "gw-wc-4711 shift 1",
    }
    data.update(extra)
    return data


def post(client: httpx.Client, sap: SapStandIn, **extra: Any) -> httpx.Response:
    return client.post(sap.url + "ProdnOrdConf2", json=body(**extra))


def assert_sap_error(response: httpx.Response, status: int, code: str, text: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert error["message"] == {"lang": "en", "value": text}
    inner = error["innererror"]
    assert inner["application"]["service_id"] == "API_PROD_ORDER_CONFIRMATION_2_SRV"
    assert set(inner["application"]) == {
        "component_id",
        "service_namespace",
        "service_id",
        "service_version",
    }
    assert len(inner["transactionid"]) == 32
    assert len(inner["timestamp"]) == len("20250304101500.1234560")
    assert inner["errordetails"][0]["code"] == code
    assert inner["errordetails"][0]["message"] == text
    assert inner["errordetails"][0]["severity"] == "error"


# -- CSRF, Basic, OAuth ----------------------------------------------------------------------


def test_csrf_handshake_and_expiry(sap: SapStandIn) -> None:
    with httpx.Client(auth=(USER, PASSWORD), timeout=5) as client:
        refused = client.post(sap.url + "ProdnOrdConf2", json=body())
        assert refused.status_code == 403
        assert refused.headers["x-csrf-token"] == "Required"
        assert refused.json()["error"]["message"]["value"] == "CSRF token validation failed"

        fetched = client.head(sap.url, headers={"x-csrf-token": "Fetch"})
        assert fetched.status_code == 200
        token = fetched.headers["x-csrf-token"]
        assert token
        assert token != "Required"
        assert "SAP_SESSIONID_S4H_100" in client.cookies
        # the token without the session cookie is not enough
        with httpx.Client(auth=(USER, PASSWORD), timeout=5) as other:
            bare = other.post(
                sap.url + "ProdnOrdConf2", json=body(), headers={"x-csrf-token": token}
            )
            assert bare.status_code == 403
        created = client.post(
            sap.url + "ProdnOrdConf2", json=body(), headers={"x-csrf-token": token}
        )
        assert created.status_code == 201
        # a second fetch in the same session hands out the same token
        again = client.get(sap.url + "$metadata", headers={"x-csrf-token": "Fetch"})
        assert again.headers["x-csrf-token"] == token

        sap.state.expire_csrf_tokens()
        stale = client.post(
            sap.url + "ProdnOrdConf2",
            json=body(ExternalSystemConfirmation=GUID_B),
            headers={"x-csrf-token": token},
        )
        assert stale.status_code == 403
        assert stale.headers["x-csrf-token"] == "Required"
        renewed = client.get(sap.url, headers={"x-csrf-token": "Fetch"}).headers["x-csrf-token"]
        assert renewed != token
        replayed = client.post(
            sap.url + "ProdnOrdConf2",
            json=body(ExternalSystemConfirmation=GUID_B),
            headers={"x-csrf-token": renewed},
        )
        assert replayed.status_code == 201
    assert sap.state.count_by_external_id() == {GUID_A: 1, GUID_B: 1}


def test_basic_auth(sap: SapStandIn) -> None:
    assert httpx.get(sap.url, timeout=5).status_code == 401
    wrong = httpx.get(sap.url, auth=(USER, "nope"), timeout=5)
    assert wrong.status_code == 401
    assert wrong.headers["www-authenticate"].startswith("Basic")
    ok = httpx.get(sap.url, auth=(USER, PASSWORD), params={"sap-client": "100"}, timeout=5)
    assert ok.status_code == 200
    assert "ProdnOrdConf2" in ok.json()["d"]["EntitySets"]


def test_oauth_client_credentials(sap: SapStandIn) -> None:
    bad = httpx.post(
        sap.token_url,
        data={"grant_type": "client_credentials", "client_id": CLIENT_ID, "client_secret": "x"},
    )
    assert bad.status_code == 400
    assert bad.json()["error"] == "invalid_client"
    grant = httpx.post(sap.token_url, data={"grant_type": "password", "client_id": CLIENT_ID})
    assert grant.status_code == 400
    got = httpx.post(
        sap.token_url,
        data={
            "grant_type": "client_credentials",
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
        },
    )
    assert got.status_code == 200
    answer = got.json()
    assert answer["token_type"] == "bearer"
    assert answer["expires_in"] > 0
    bearer = {"Authorization": f"Bearer {answer['access_token']}"}
    with httpx.Client(headers=bearer, timeout=5) as client:
        fetched = client.get(sap.url, headers={"x-csrf-token": "Fetch"})
        assert fetched.status_code == 200
        created = client.post(
            sap.url + "ProdnOrdConf2",
            json=body(),
            headers={"x-csrf-token": fetched.headers["x-csrf-token"]},
        )
        assert created.status_code == 201
        assert created.json()["d"]["EnteredByUser"] == CLIENT_ID.upper()
        sap.state.expire_tokens()
        assert client.get(sap.url).status_code == 401
    assert httpx.get(sap.url, headers={"Authorization": "Bearer made-up"}).status_code == 401


# -- create, read, formats -------------------------------------------------------------------


def test_create_and_read_back_by_key_and_filter(sap: SapStandIn) -> None:
    with session(sap) as client:
        created = post(client, sap)
        assert created.status_code == 201
        d = created.json()["d"]
        group, count = d["ConfirmationGroup"], d["ConfirmationCount"]
        assert len(group) == 10
        assert group.isdigit()
        assert count == "00000001"
        uri = f"{sap.url}ProdnOrdConf2(ConfirmationGroup='{group}',ConfirmationCount='{count}')"
        assert d["__metadata"] == {
            "id": uri,
            "uri": uri,
            "type": "API_PROD_ORDER_CONFIRMATION_2_SRV.ProdnOrdConf2Type",
        }
        assert created.headers["location"] == uri
        # literal formats
        assert d["ConfirmationYieldQuantity"] == "95.000"
        assert d["ConfirmationScrapQuantity"] == "5.000"
        assert d["ConfirmationReworkQuantity"] == "0.000"
        assert d["OpConfirmedWorkQuantity1"] == "0.250"
        assert d["PostingDate"] == f"/Date({DAY})/"
        assert d["ConfirmedExecutionStartTime"] == "PT06H00M00S"
        assert d["ConfirmedSetupEndTime"] == "PT00H00M00S"
        assert d["ConfirmedSetupEndDate"] is None
        assert d["ExternalSystemConfirmation"] == GUID_A
        assert d["IsReversal"] is False
        assert d["IsReversed"] is False
        assert d["ConfirmationText"] == "gw-wc-4711 shift 1"
        assert d["EnteredByUser"] == USER
        assert d["to_ProdnOrdConfMatlDocItm"] == {
            "__deferred": {"uri": uri + "/to_ProdnOrdConfMatlDocItm"}
        }

        # the same operation: same group, next count; numbers accepted for decimals
        second = post(
            client,
            sap,
            ExternalSystemConfirmation=GUID_B,
            ConfirmationYieldQuantity=10.5,
            ConfirmationScrapQuantity=1,
            ConfirmedExecutionEndTime="PT7H5M",
        ).json()["d"]
        assert second["ConfirmationGroup"] == group
        assert second["ConfirmationCount"] == "00000002"
        assert second["ConfirmationYieldQuantity"] == "10.500"
        assert second["ConfirmationScrapQuantity"] == "1.000"
        assert second["ConfirmedExecutionEndTime"] == "PT07H05M00S"
        other_op = post(client, sap, OrderOperation="0020", ExternalSystemConfirmation=None)
        assert other_op.json()["d"]["ConfirmationGroup"] != group

        by_key = client.get(uri)
        assert by_key.status_code == 200
        assert by_key.json()["d"]["ExternalSystemConfirmation"] == GUID_A
        # keys without their leading zeros find the same record
        short = client.get(
            f"{sap.url}ProdnOrdConf2(ConfirmationGroup='{int(group)}',ConfirmationCount='1')"
        )
        assert short.json()["d"]["ConfirmationCount"] == "00000001"
        missing = client.get(f"{sap.url}ProdnOrdConf2(ConfirmationGroup='1',ConfirmationCount='1')")
        assert missing.status_code == 404
        assert "error" in missing.json()

        found = client.get(
            sap.url + "ProdnOrdConf2",
            params={
                "$filter": f"ExternalSystemConfirmation eq guid'{GUID_B}'",
                "$format": "json",
                "$inlinecount": "allpages",
            },
        ).json()["d"]
        assert found["__count"] == "1"
        assert [r["ConfirmationCount"] for r in found["results"]] == ["00000002"]

        combined = client.get(
            sap.url + "ProdnOrdConf2",
            params={
                "$filter": "OrderID eq '1000123' and OrderOperation eq '0010' and Sequence eq '0'"
                f" and ConfirmationGroup eq '{group}' and IsReversal eq false"
                " and ConfirmationText eq 'gw-wc-4711 shift 1'",
                "$inlinecount": "allpages",
                "$top": "1",
                "$skip": "1",
            },
        ).json()["d"]
        assert combined["__count"] == "2"
        assert [r["ConfirmationCount"] for r in combined["results"]] == ["00000002"]
        none = client.get(
            sap.url + "ProdnOrdConf2",
            params={"$filter": "OrderID eq '4711'", "$inlinecount": "allpages"},
        ).json()["d"]
        assert none == {"results": [], "__count": "0"}
        bad = client.get(sap.url + "ProdnOrdConf2", params={"$filter": "Nope eq '1'"})
        assert bad.status_code == 400
        # a GUID wants its guid'…' literal
        plain = client.get(
            sap.url + "ProdnOrdConf2",
            params={"$filter": f"ExternalSystemConfirmation eq '{GUID_A}'"},
        )
        assert plain.status_code == 400
    entries = sap.state.ledger()
    assert len(entries) == 3
    assert entries[0].sent["ConfirmationYieldQuantity"] == "95"  # as the client sent it
    assert entries[0].values["ConfirmationYieldQuantity"] == Decimal("95.000")


def test_query_options(sap: SapStandIn) -> None:
    with session(sap) as client:
        for n, qty in enumerate(["5", "30", "12"]):
            guid = f"00000000-0000-4000-8000-{n:012d}"
            post(client, sap, ConfirmationYieldQuantity=qty, ExternalSystemConfirmation=guid)
        listed = client.get(
            sap.url + "ProdnOrdConf2",
            params={
                "$orderby": "ConfirmationYieldQuantity desc",
                "$select": "ConfirmationCount,ConfirmationYieldQuantity",
                "$filter": "ConfirmationYieldQuantity gt 6M or ConfirmationCount eq '1'",
            },
        )
        assert listed.headers["dataserviceversion"] == "2.0"
        rows = listed.json()["d"]["results"]
        assert [r["ConfirmationYieldQuantity"] for r in rows] == ["30.000", "12.000", "5.000"]
        assert set(rows[0]) == {"__metadata", "ConfirmationCount", "ConfirmationYieldQuantity"}
        count = client.get(
            sap.url + "ProdnOrdConf2/$count", params={"$filter": "ConfirmationYieldQuantity ge 12M"}
        )
        assert count.text == "2"
        # the root without its slash, as SAP's Cloud SDK fetches the token
        head = client.head(sap.url.rstrip("/"), headers={"x-csrf-token": "Fetch"})
        assert head.status_code == 200
        assert head.headers["x-csrf-token"] == client.headers["x-csrf-token"]
        assert client.get(sap.url + "Nothing").status_code == 404
        assert client.patch(sap.url + "ProdnOrdConf2", json={}).status_code == 405


@pytest.mark.parametrize("shape", ["verbose", "array"])
def test_deep_insert_shapes(sap: SapStandIn, shape: str) -> None:
    items = [
        {
            "Material": "FG-100",
            "Plant": "1010",
            "StorageLocation": "0001",
            "GoodsMovementType": "101",
            "GoodsMovementRefDocType": "F",
            "EntryUnit": "PC",
            "QuantityInEntryUnit": "95",
            "Batch": "B250304",
            "ManufactureDate": f"/Date({DAY})/",
            "to_ProdnOrderConfBatchCharc": [{"Characteristic": "COLOR", "CharcValue": "RED"}],
        },
        {
            "Material": "RM-1",
            "GoodsMovementType": "261",
            "EntryUnit": "KG",
            "QuantityInEntryUnit": 3,
        },
    ]
    nested: Any = {"results": items} if shape == "verbose" else items
    with session(sap) as client:
        created = post(client, sap, to_ProdnOrdConfMatlDocItm=nested)
        assert created.status_code == 201, created.text
        d = created.json()["d"]
        inline = d["to_ProdnOrdConfMatlDocItm"]["results"]
        assert [i["GoodsMovementType"] for i in inline] == ["101", "261"]
        assert inline[0]["QuantityInEntryUnit"] == "95.000"
        assert inline[0]["OrderID"] == "1000123"
        assert inline[0]["to_ProdnOrderConfBatchCharc"]["results"][0]["CharcValue"] == "RED"
        nav = client.get(d["__metadata"]["uri"] + "/to_ProdnOrdConfMatlDocItm").json()["d"]
        docs = {i["MaterialDocument"] for i in nav["results"]}
        assert len(docs) == 1
        assert docs != {""}
        assert [i["MaterialDocumentItem"] for i in nav["results"]] == ["0001", "0002"]
        expanded = client.get(
            d["__metadata"]["uri"], params={"$expand": "to_ProdnOrdConfMatlDocItm"}
        ).json()["d"]
        assert len(expanded["to_ProdnOrdConfMatlDocItm"]["results"]) == 2
        item_uri = nav["results"][0]["__metadata"]["uri"]
        assert client.get(item_uri).json()["d"]["Batch"] == "B250304"

        sap.state.goods_movement_fails(1)
        failed = post(
            client, sap, ExternalSystemConfirmation=GUID_B, to_ProdnOrdConfMatlDocItm=nested
        )
        assert failed.status_code == 201
        uri = failed.json()["d"]["__metadata"]["uri"]
        assert client.get(uri + "/to_ProdnOrdConfMatlDocItm").json()["d"]["results"] == []
    assert [e.goods_movement_failed for e in sap.state.ledger()] == [False, True]


@pytest.mark.parametrize(
    ("extra", "target"),
    [
        ({"ConfirmationYieldQuantity": "abc"}, "ConfirmationYieldQuantity"),
        ({"ConfirmationYieldQuantity": "1.2345"}, "ConfirmationYieldQuantity"),
        ({"PostingDate": "2025-03-04"}, "PostingDate"),
        ({"ConfirmedExecutionStartTime": "06:00"}, "ConfirmedExecutionStartTime"),
        ({"ConfirmationText": "x" * 41}, "ConfirmationText"),
        ({"ExternalSystemConfirmation": "not-a-guid"}, "ExternalSystemConfirmation"),
        ({"IsFinalConfirmation": "yes"}, "IsFinalConfirmation"),
        ({"NoSuchProperty": "1"}, "NoSuchProperty"),
    ],
)
def test_unreadable_values_are_400(sap: SapStandIn, extra: dict[str, Any], target: str) -> None:
    with session(sap) as client:
        refused = post(client, sap, **extra)
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert error["code"] == "/IWBEP/CM_MGW_RT/000"
    assert error["innererror"]["errordetails"][0]["target"] == target
    assert sap.state.ledger() == []


# -- business rules --------------------------------------------------------------------------


def test_final_confirmation_closes_the_operation(sap: SapStandIn) -> None:
    with session(sap) as client:
        final = post(client, sap, IsFinalConfirmation=True, FinalConfirmationType="X")
        assert final.status_code == 201
        again = post(client, sap, ExternalSystemConfirmation=GUID_B)
        assert_sap_error(
            again, 400, "RU/105", "Operation 0010 of order 1000123 is already finally confirmed"
        )
        d = final.json()["d"]
        cancelled = client.post(
            sap.url + "CancelProdnOrdConf",
            params={
                "ConfirmationGroup": f"'{d['ConfirmationGroup']}'",
                "ConfirmationCount": f"'{d['ConfirmationCount']}'",
            },
        )
        assert cancelled.status_code == 200
        # the final confirmation cancelled: the operation is open again
        assert post(client, sap, ExternalSystemConfirmation=GUID_B).status_code == 201


def test_variance_reason_rule(sap: SapStandIn) -> None:
    with session(sap) as client:
        assert post(client, sap, VarianceReasonCode="ZZ99").status_code == 201  # none configured
        sap.state.set_variance_reasons({"0001", "0002"})
        refused = post(client, sap, VarianceReasonCode="ZZ99", ExternalSystemConfirmation=GUID_B)
        assert_sap_error(refused, 400, "RU/348", "Reason for variance ZZ99 is not defined")
        ok = post(client, sap, VarianceReasonCode="0002", ExternalSystemConfirmation=GUID_B)
        assert ok.status_code == 201
        assert post(client, sap, ExternalSystemConfirmation=None).status_code == 201  # "" is fine


def test_over_tolerance_rule(sap: SapStandIn) -> None:
    sap.state.register_order("1000123", planned_qty="100", tolerance_pct="10", unit="PC")
    with session(sap) as client:
        assert post(client, sap, ConfirmationYieldQuantity="100").status_code == 201
        refused = post(
            client, sap, ConfirmationYieldQuantity="10.5", ExternalSystemConfirmation=GUID_B
        )
        assert_sap_error(
            refused,
            400,
            "RU/315",
            "Confirmed yield 110.500 PC exceeds planned quantity 100.000 PC plus tolerance 10 %",
        )
        fits = post(client, sap, ConfirmationYieldQuantity="10", ExternalSystemConfirmation=GUID_B)
        assert fits.status_code == 201
        assert fits.json()["d"]["OrderPlannedTotalQty"] == "100.000"
    assert sap.state.totals("1000123", "0010")["yield"] == Decimal("110")


def test_not_released_rule(sap: SapStandIn) -> None:
    sap.state.register_order("1000124", released=False)
    with session(sap) as client:
        refused = post(client, sap, OrderID="1000124")
        assert_sap_error(refused, 400, "RU/170", "Order 1000124 is not released")
        sap.state.release_order("1000124")
        assert post(client, sap, OrderID="1000124").status_code == 201


def test_period_closed_rule(sap: SapStandIn) -> None:
    sap.state.close_posting_period(before="2025-04-01")
    with session(sap) as client:
        refused = post(client, sap)
        assert_sap_error(
            refused, 400, "M7/053", "Posting period 003/2025 is closed (posting date 2025-03-04)"
        )
        later = post(client, sap, PostingDate="/Date(1743465600000)/")  # 2025-04-01
        assert later.status_code == 201
        sap.state.open_posting_period()
        assert post(client, sap, ExternalSystemConfirmation=GUID_B).status_code == 201


def test_unknown_orders_and_operations(sap: SapStandIn) -> None:
    sap.state.register_order("1000125", operations=["0010"])
    with session(sap) as client:
        refused = post(client, sap, OrderID="1000125", OrderOperation="0030")
        assert_sap_error(refused, 400, "RU/021", "Operation 0030 does not exist in order 1000125")
        assert post(client, sap, OrderID="1000125", OrderOperation="10").status_code == 201
        sap.state.set_accept_unknown_orders(False)
        unknown = post(client, sap, OrderID="999")
        assert_sap_error(unknown, 400, "CO/004", "Order 999 does not exist")
        missing = post(client, sap, OrderOperation="")
        assert missing.status_code == 400
        assert missing.json()["error"]["code"] == "RU/100"


def test_configured_confirmation_group_and_messages(sap: SapStandIn) -> None:
    sap.state.register_operation("1000123", "0010", confirmation_group="13985")
    sap.state.set_message("order_locked", code="ZPP/001", text="{order} held by {user}")
    sap.state.lock_order("1000123", user="SMITH", times=1)
    with session(sap) as client:
        assert_sap_error(post(client, sap), 400, "ZPP/001", "1000123 held by SMITH")
        d = post(client, sap).json()["d"]
        assert d["ConfirmationGroup"] == "0000013985"
        # a posting naming only the group lands on the same operation
        by_group = client.post(
            sap.url + "ProdnOrdConf2",
            json={"ConfirmationGroup": "13985", "ConfirmationYieldQuantity": "1"},
        ).json()["d"]
        assert (by_group["OrderID"], by_group["OrderOperation"]) == ("1000123", "0010")
        assert by_group["ConfirmationCount"] == "00000002"


def test_lock_knob(sap: SapStandIn) -> None:
    sap.state.lock_order("1000123", user="MUELLER", times=2)
    with session(sap) as client:
        for _ in range(2):
            assert_sap_error(
                post(client, sap), 400, "CO/469", "Order 1000123 is locked by user MUELLER"
            )
        assert post(client, sap).status_code == 201
        sap.state.lock_order("1000123")  # until unlocked
        for _ in range(3):
            assert post(client, sap, ExternalSystemConfirmation=GUID_B).status_code == 400
        sap.state.unlock_order("1000123")
        assert post(client, sap, ExternalSystemConfirmation=GUID_B).status_code == 201
    assert sap.state.count_by_external_id() == {GUID_A: 1, GUID_B: 1}


# -- cancel ----------------------------------------------------------------------------------


def test_cancel_and_cancel_twice(sap: SapStandIn) -> None:
    with session(sap) as client:
        d = post(client, sap).json()["d"]
        group, count = d["ConfirmationGroup"], d["ConfirmationCount"]
        params = {
            "ConfirmationGroup": f"'{group}'",
            "ConfirmationCount": f"'{count}'",
            "PostingDate": "datetime'2025-03-05T00:00'",
            "ConfirmationText": "'storno it''s wrong'",
            "ExternalSystemConfirmation": f"guid'{GUID_B}'",
            "sap-client": "100",
        }
        cancelled = client.post(sap.url + "CancelProdnOrdConf", params=params)
        assert cancelled.status_code == 200, cancelled.text
        rev = cancelled.json()["d"]
        assert rev["IsReversal"] is True
        assert rev["ConfirmationGroup"] == group
        assert rev["ConfirmationCount"] == "00000002"
        assert rev["PostingDate"] == f"/Date({DAY + 86_400_000})/"
        assert rev["ConfirmationText"] == "storno it's wrong"
        assert rev["ExternalSystemConfirmation"] == GUID_B
        assert rev["ConfirmationYieldQuantity"] == "95.000"
        original = client.get(d["__metadata"]["uri"]).json()["d"]
        assert original["IsReversed"] is True

        twice = client.post(sap.url + "CancelProdnOrdConf", params=params)
        assert_sap_error(twice, 400, "RU/502", f"Confirmation {group}/{count} is already cancelled")
        unknown = client.post(
            sap.url + "CancelProdnOrdConf",
            params={"ConfirmationGroup": "'42'", "ConfirmationCount": "'1'"},
        )
        assert_sap_error(unknown, 400, "RU/201", "Confirmation 42/1 does not exist")
        of_reversal = client.post(
            sap.url + "CancelProdnOrdConf",
            params={"ConfirmationGroup": f"'{group}'", "ConfirmationCount": "'2'"},
        )
        assert of_reversal.json()["error"]["code"] == "RU/503"
        unquoted = client.post(
            sap.url + "CancelProdnOrdConf",
            params={"ConfirmationGroup": group, "ConfirmationCount": "'1'"},
        )
        assert unquoted.status_code == 400
        reversals = client.get(
            sap.url + "ProdnOrdConf2",
            params={"$filter": "IsReversal eq true", "$inlinecount": "allpages"},
        ).json()["d"]
        assert reversals["__count"] == "1"
    state = sap.state
    assert state.count_by_external_id() == {GUID_A: 1}
    assert state.reversals_by_external_id() == {GUID_B: 1}
    assert [r.reverses for r in state.reversals()] == ["00000001"]
    assert state.totals("1000123", "0010") == {
        "yield": Decimal(0),
        "scrap": Decimal(0),
        "rework": Decimal(0),
    }


def test_get_conf_proposal(sap: SapStandIn) -> None:
    sap.state.register_order("1000123", planned_qty="100", material="FG-100", plant="1010")
    sap.state.register_operation(
        "1000123", "0010", activities=[("MIN", "0.5"), ("MIN", "1.25")], planned_qty="100"
    )
    with session(sap) as client:
        assert post(client, sap, ConfirmationYieldQuantity="40").status_code == 201
        answer = client.post(
            sap.url + "GetConfProposal",
            params={
                "OrderID": "'1000123'",
                "OrderOperation": "'0010'",
                "Sequence": "'0'",
                "QuantityIsToBeProposed": "true",
                "ActivityIsToBeProposed": "true",
                "ConfirmationScrapQuantity": "2M",
            },
        )
        assert answer.status_code == 200, answer.text
        proposal = answer.json()["d"]["GetConfProposal"]
        assert proposal["__metadata"]["type"].endswith(".AProductionorderconf2")
        assert proposal["ConfirmationCount"] == "0"
        assert proposal["ConfirmationYieldQuantity"] == "60.000"
        assert proposal["OpConfirmedWorkQuantity1"] == "31.000"
        assert proposal["OpConfirmedWorkQuantity2"] == "77.500"
        assert proposal["OpWorkQuantityUnit1"] == "MIN"
        assert proposal["Material"] == "FG-100"
        goods = client.post(
            sap.url + "GetGdsMvtProposal",
            params={"OrderID": "'1000123'", "ConfirmationYieldQuantity": "60M"},
        ).json()["d"]["results"]
        assert goods[0]["GoodsMovementType"] == "101"
        assert goods[0]["QuantityInEntryUnit"] == "60.000"
    assert len(sap.state.ledger()) == 1  # proposals post nothing


# -- faults ----------------------------------------------------------------------------------


def test_drop_after_commit(sap: SapStandIn) -> None:
    with session(sap) as client:
        sap.state.drop_after_commit(1)
        with pytest.raises(httpx.RemoteProtocolError):
            post(client, sap)
    with session(sap) as client:  # a new connection: was it posted?
        found = client.get(
            sap.url + "ProdnOrdConf2",
            params={"$filter": f"ExternalSystemConfirmation eq guid'{GUID_A}'"},
        ).json()["d"]["results"]
        assert len(found) == 1
        # the next posting is answered normally again
        assert post(client, sap, ExternalSystemConfirmation=GUID_B).status_code == 201
    assert sap.state.count_by_external_id() == {GUID_A: 1, GUID_B: 1}


def test_drop_after_commit_on_cancel(sap: SapStandIn) -> None:
    with session(sap) as client:
        d = post(client, sap).json()["d"]
        sap.state.drop_after_commit(1)
        with pytest.raises(httpx.RemoteProtocolError):
            client.post(
                sap.url + "CancelProdnOrdConf",
                params={
                    "ConfirmationGroup": f"'{d['ConfirmationGroup']}'",
                    "ConfirmationCount": f"'{d['ConfirmationCount']}'",
                },
            )
    assert len(sap.state.reversals()) == 1
    assert sap.state.ledger()[0].is_reversed


def test_timeout_after_commit(sap: SapStandIn) -> None:
    with session(sap) as client:
        sap.state.timeout_after_commit(1)
        answered = post(client, sap)
        assert answered.status_code == 504
        sap.state.timeout_after_commit(1, delay_s=1.0)
        with pytest.raises(httpx.ReadTimeout):
            client.post(
                sap.url + "ProdnOrdConf2",
                json=body(ExternalSystemConfirmation=GUID_B),
                timeout=0.3,
            )
    assert sap.state.count_by_external_id() == {GUID_A: 1, GUID_B: 1}
    assert sap.state.duplicates() == {}


def test_latency_knob(sap: SapStandIn) -> None:
    with session(sap) as client:
        sap.state.set_latency(0.3)
        start = time.monotonic()
        assert client.get(sap.url).status_code == 200
        assert time.monotonic() - start >= 0.3
        sap.state.set_latency((0.05, 0.1))
        for _ in range(3):
            start = time.monotonic()
            client.get(sap.url)
            assert 0.05 <= time.monotonic() - start < 1.0
        sap.state.set_latency(None)
        start = time.monotonic()
        client.get(sap.url)
        assert time.monotonic() - start < 0.25


def test_outage_and_fail_next(sap: SapStandIn) -> None:
    with session(sap) as client:
        sap.state.set_outage(True)
        down = client.get(sap.url)
        assert_sap_error(down, 503, "/IWFND/CM_BEC/026", "SAP system is not available")
        assert (
            httpx.post(sap.token_url, data={"grant_type": "client_credentials"}).status_code == 503
        )
        sap.state.set_outage(False)
        assert client.get(sap.url).status_code == 200

        sap.state.fail_next(1, status=500)
        assert client.get(sap.url).status_code == 500
        assert client.get(sap.url).status_code == 200
        sap.state.fail_next(2, status=423, code="ZZ/001", text="busy", method="POST")
        assert client.get(sap.url).status_code == 200  # a GET is not a POST
        assert_sap_error(post(client, sap), 423, "ZZ/001", "busy")
        assert post(client, sap).status_code == 423
        assert post(client, sap).status_code == 201
    assert sap.state.count_by_external_id() == {GUID_A: 1}


async def test_max_concurrency(sap: SapStandIn) -> None:
    sap.state.set_latency(0.2)
    sap.state.set_max_concurrency(1)
    async with httpx.AsyncClient(auth=(USER, PASSWORD), timeout=5) as client:
        start = time.monotonic()
        answers = await asyncio.gather(*(client.get(sap.url) for _ in range(3)))
        serial = time.monotonic() - start
        assert [a.status_code for a in answers] == [200] * 3
        assert serial >= 0.6
        assert sap.state.stats()["peak_in_flight"] == 1
        sap.state.set_max_concurrency(None)
        start = time.monotonic()
        await asyncio.gather(*(client.get(sap.url) for _ in range(3)))
        assert time.monotonic() - start < serial * 0.75


def test_control_over_http(sap: SapStandIn) -> None:
    control = httpx.Client(base_url=sap.base, timeout=5)
    assert control.post("/_control/orders", json={"order_id": "77", "released": False}).is_success
    assert control.post("/_control/fail_next", json={"n": 1, "status": 502}).is_success
    assert control.post("/_control/latency", json={"latency": "0.01-0.02"}).is_success
    with httpx.Client(auth=(USER, PASSWORD), timeout=5) as raw:
        assert raw.get(sap.url).status_code == 502
        assert raw.get(sap.url).status_code == 200
    with session(sap) as client:
        assert post(client, sap, OrderID="77").json()["error"]["code"] == "RU/170"
        assert control.post("/_control/release_order", json={"order_id": "77"}).is_success
        assert post(client, sap, OrderID="77").status_code == 201
        assert control.post("/_control/lock_order", json={"order_id": "77", "times": 1}).is_success
        assert post(client, sap, OrderID="77").json()["error"]["code"] == "CO/469"
        assert control.post("/_control/drop_after_commit", json={"n": 1}).is_success
        with pytest.raises(httpx.RemoteProtocolError):
            post(client, sap, OrderID="77")
        assert control.post("/_control/expire_csrf").is_success
        assert post(client, sap, OrderID="78").status_code == 403
    ledger = control.get("/_control/ledger").json()
    assert ledger["count_by_external_id"] == {GUID_A: 2}
    assert ledger["duplicates"] == {GUID_A: 2}  # posted twice: what the relay must never do
    assert ledger["totals"] == [
        {"order_id": "77", "sequence": "0", "operation": "0010", "yield": "190.000",
         "scrap": "10.000", "rework": "0.000"}
    ]  # fmt: skip
    assert ledger["postings"][0]["sent"]["ConfirmationYieldQuantity"] == "95"
    assert control.post("/_control/reset_faults").is_success
    assert control.post("/_control/messages/nope", json={}).status_code == 404
    assert control.get("/_control/stats").json()["records"] == 2
    control.close()


def test_metadata_is_edmx(sap: SapStandIn) -> None:
    answer = httpx.get(sap.url + "$metadata", auth=(USER, PASSWORD), timeout=5)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("application/xml")
    root = ET.fromstring(answer.content)
    ns = {
        "edmx": "http://schemas.microsoft.com/ado/2007/06/edmx",
        "m": "http://schemas.microsoft.com/ado/2007/08/dataservices/metadata",
        "e": "http://schemas.microsoft.com/ado/2008/09/edm",
    }
    services = root.find("edmx:DataServices", ns)
    assert services is not None
    assert services.get(f"{{{ns['m']}}}DataServiceVersion") == "2.0"
    conf = root.find(".//e:EntityType[@Name='ProdnOrdConf2Type']", ns)
    assert conf is not None
    keys = [k.get("Name") for k in conf.findall("e:Key/e:PropertyRef", ns)]
    assert keys == ["ConfirmationGroup", "ConfirmationCount"]
    props = {p.get("Name"): p for p in conf.findall("e:Property", ns)}
    for name in (
        "OrderID",
        "OrderOperation",
        "Sequence",
        "ConfirmationYieldQuantity",
        "ExternalSystemConfirmation",
        "IsReversal",
        "PostingDate",
        "OpConfirmedWorkQuantity6",
        "NoFurtherBusinessProcQtyIsExpd",
    ):
        assert name in props
    assert props["ConfirmationYieldQuantity"].get("Type") == "Edm.Decimal"
    assert props["ConfirmationYieldQuantity"].get("Scale") == "3"
    assert props["ExternalSystemConfirmation"].get("Type") == "Edm.Guid"
    assert props["ConfirmationText"].get("MaxLength") == "40"
    functions = {f.get("Name") for f in root.iter(f"{{{ns['e']}}}FunctionImport")}
    assert functions == {"GetConfProposal", "GetGdsMvtProposal", "CancelProdnOrdConf"}
    nav = conf.find("e:NavigationProperty", ns)
    assert nav is not None
    assert nav.get("Name") == "to_ProdnOrdConfMatlDocItm"


# -- the runner ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_async_with_starts_stops_and_frees_the_port() -> None:
    port = free_port()
    start = time.monotonic()
    async with SapStandIn(port=port, user=USER, password=PASSWORD) as sap:
        assert time.monotonic() - start < 1.0
        assert sap.port == port
        assert sap.base == f"http://127.0.0.1:{port}"
        assert sap.url.endswith("/sap/opu/odata/sap/API_PROD_ORDER_CONFIRMATION_2_SRV/")
        assert sap.token_url == f"http://127.0.0.1:{port}/oauth/token"
        async with httpx.AsyncClient(auth=(USER, PASSWORD)) as client:
            assert (await client.get(sap.url)).status_code == 200
            sap.state.set_latency(5.0)  # a request in flight does not hold the stop up
            pending = asyncio.create_task(client.get(sap.url, timeout=8))
            await asyncio.sleep(0.1)
            stopping = time.monotonic()
    assert time.monotonic() - stopping < 1.5
    with pytest.raises(httpx.HTTPError):
        await pending
    with socket.socket() as s:  # the port is free again
        s.bind(("127.0.0.1", port))


def test_ledger_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "sap.db"
    with SapStandIn(user=USER, password=PASSWORD, ledger_path=path) as sap, session(sap) as client:
        first = post(client, sap).json()["d"]
        client.post(
            sap.url + "CancelProdnOrdConf",
            params={
                "ConfirmationGroup": f"'{first['ConfirmationGroup']}'",
                "ConfirmationCount": f"'{first['ConfirmationCount']}'",
            },
        )
    with SapStandIn(user=USER, password=PASSWORD, ledger_path=path) as sap, session(sap) as client:
        assert sap.state.count_by_external_id() == {GUID_A: 1}
        assert len(sap.state.reversals()) == 1
        again = post(client, sap, ExternalSystemConfirmation=GUID_B).json()["d"]
        assert again["ConfirmationGroup"] == first["ConfirmationGroup"]
        assert again["ConfirmationCount"] == "00000003"
        other = post(client, sap, OrderOperation="0020").json()["d"]
        assert int(other["ConfirmationGroup"]) > int(first["ConfirmationGroup"])


def test_start_stop_start_on_the_same_port() -> None:
    sap = SapStandIn(user=USER, password=PASSWORD)
    sap.start()
    try:
        url = sap.url
        with session(sap) as client:
            assert post(client, sap).status_code == 201
        sap.stop()
        with pytest.raises(httpx.ConnectError):
            httpx.get(url, timeout=2)
        sap.start()
        assert sap.url == url
        with session(sap) as client:
            sap.state.set_max_concurrency(2)  # the new server's loop is told, not the old one's
            assert post(client, sap, ExternalSystemConfirmation=GUID_B).status_code == 201
        assert sap.state.count_by_external_id() == {GUID_A: 1, GUID_B: 1}
    finally:
        sap.close()


def test_state_can_be_built_alone() -> None:
    state = SapState(latency_s=(0.01, 0.02), valid_variance_reasons=["0001"])
    assert 0.01 <= state.latency() <= 0.02
    with pytest.raises(ValueError, match="latency"):
        state.set_latency((0.2, 0.1))


def test_python_m_entry_serves_until_sigterm() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "simulators.erp.sap", "--port", str(port), "--user", USER,
         "--password", PASSWORD, "--latency", "0.01-0.02"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # bounded by the test's timeout
        assert f"http://127.0.0.1:{port}/sap/opu/odata/sap/" in line, line
        url = line.split()[-1]
        assert httpx.get(url, auth=(USER, PASSWORD), timeout=5).status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
