"""A stand-in for SAP S/4HANA's production-order confirmation service
(OData V2 ``API_PROD_ORDER_CONFIRMATION_2_SRV``): the ERP the relay posts confirmations to.

From a test::

    async with SapStandIn(user="RELAY", password="pw") as sap:
        sap.state.register_order("1000123", planned_qty="100", tolerance_pct="10")
        sap.state.lock_order("1000123", user="MUELLER", times=2)
        ...  # run the relay against sap.url (Basic) or sap.token_url (OAuth 2)
        assert sap.state.duplicates() == {}

From another process (a demo, a benchmark)::

    python -m simulators.erp.sap --port 8300 --user RELAY --password pw --latency 0.05-0.2

which prints the service URL and serves until SIGTERM/SIGINT; the faults are then driven over
HTTP under ``/_control/...`` (see :func:`create_app`).

URLs (``base`` = ``http://127.0.0.1:<port>``):

- ``{base}/sap/opu/odata/sap/API_PROD_ORDER_CONFIRMATION_2_SRV/`` (:attr:`SapStandIn.url`):
  ``GET``/``HEAD`` (service document; CSRF token fetch), ``GET $metadata`` (EDMX),
  ``GET``/``POST ProdnOrdConf2``, ``GET ProdnOrdConf2(ConfirmationGroup='…',ConfirmationCount='…')``
  and its ``/to_ProdnOrdConfMatlDocItm``, ``GET ProdnOrdConfMatlDocItm``,
  ``POST CancelProdnOrdConf``, ``POST GetConfProposal``, ``POST GetGdsMvtProposal``. Query
  options: ``$filter`` (``eq ne gt ge lt le``, ``and``, ``or``, parentheses; typed literals
  ``'…'``, ``guid'…'``, ``datetime'…'``, ``time'…'``, ``95M``, ``true``, ``null``), ``$top``,
  ``$skip``, ``$orderby``, ``$select``, ``$expand=to_ProdnOrdConfMatlDocItm``,
  ``$inlinecount=allpages``, ``$format=json``; ``sap-client`` is accepted. Answers are always
  JSON (verbose OData V2: ``{"d": {...}}``, collections ``{"d": {"results": [...]}}``).
- ``{base}/oauth/token`` (:attr:`SapStandIn.token_url`): OAuth 2 client credentials.
- ``{base}/_control/...``: the control API over HTTP (no authentication).

Authentication: HTTP Basic with the configured user and password, or ``Authorization: Bearer``
with a token from the token endpoint. CSRF: ``x-csrf-token: Fetch`` on a GET/HEAD hands out a
token and the session cookie ``SAP_SESSIONID_<SID>_<client>``; every POST must carry both, else
HTTP 403 with ``x-csrf-token: Required``.

Business rules (each a :data:`Rule`, HTTP 400 with the SAP Gateway error body; code and text of
each are configurable with :meth:`SapState.set_message`). **The SAP message numbers below are
the stand-in's own choice: no public source lists the real RU/CO numbers, so none is
confirmed**; only the shape of the body is taken from SAP Gateway:

================== ================ ==========================================================
rule               default code     default text
================== ================ ==========================================================
order_locked       CO/469           Order {order} is locked by user {user}
already_final      RU/105           Operation {operation} of order {order} is already finally
                                    confirmed
variance_reason    RU/348           Reason for variance {reason} is not defined
over_tolerance     RU/315           Confirmed yield {confirmed} {unit} exceeds planned quantity
                                    {planned} {unit} plus tolerance {tolerance} %
not_released       RU/170           Order {order} is not released
period_closed      M7/053           Posting period {period} is closed (posting date {date})
unknown_order      CO/004           Order {order} does not exist
unknown_operation  RU/021           Operation {operation} does not exist in order {order}
missing_operation  RU/100           Enter an order and an operation or a confirmation group
unknown_conf       RU/201           Confirmation {group}/{count} does not exist
already_reversed   RU/502           Confirmation {group}/{count} is already cancelled
reversal_of_rev    RU/503           Confirmation {group}/{count} is a cancellation itself
outage (HTTP 503)  /IWFND/CM_BEC/026 SAP system is not available
movement_field     M7/002           Goods movement item {item}: enter {field}
movement_type      M7/005           ... movement type {value} is not allowed for an order
movement_qty       M7/010           ... QuantityInEntryUnit {value} must be greater than 0
movement_unit      M7/012           ... EntryUnit {value} is not the unit {unit} of component
unknown_material   M7/001           ... material {material} is not a component of order {order}
batch_missing      M7/018           ... material {material} is handled in batches, enter a Batch
================== ================ ==========================================================

Goods movements: the deep insert under ``to_ProdnOrdConfMatlDocItm`` is read in both shapes
(``{"results": [...]}`` and a plain array); each item needs ``Material``,
``GoodsMovementType`` (101, 102, 261 or 262), ``EntryUnit`` and a ``QuantityInEntryUnit``
above 0, and, once the order has components (:meth:`SapState.register_component`), an issue
or return must be of one of them, in its unit, with a ``Batch`` when it is batch-managed
(each refusal an HTTP 400 naming the property as ``target``; the stand-in refuses the whole
posting where SAP may instead park the movement in COGI). The stand-in models SAP's
backflush: each component registered with ``backflush`` is issued by the stand-in itself
(``qty_per_unit`` x yield, scrap and rework; item text ``backflush``) unless the confirmation
has ``APIConfHasNoGoodsMovements`` -- the stand-in's reading of that flag, **not confirmed**:
it stops the automatic movements, the items sent are posted. A cancellation reverses every
item of the confirmation (261 -> 262, 101 -> 102) in a material document of its own.
:meth:`SapState.consumption` and :meth:`SapState.received` sum what an order got.

Other answers: 401 (bad credentials), 403 (CSRF), 404 (unknown segment or key), 405 (method),
400 ``/IWBEP/CM_MGW_RT/000`` for a body or a literal the service cannot read (an unknown
property, a string longer than its MaxLength, a decimal with more places than its scale: the
stand-in is strict where SAP's exact behaviour is not published, to catch client mistakes).

Faults on command (:class:`SapState`): latency, outage, ``fail_next``, commit-then-drop
(``drop_after_commit``: the posting is in the ledger, the connection is closed without an answer;
``timeout_after_commit``: in the ledger, then HTTP 504; ``commit_late``: the body read, the
posting committed only after a delay, whether the client still waits or not, as a slow work
process finishes after the caller timed out), a concurrency limit, lock knobs, expiry of
the CSRF and OAuth tokens, "posted but goods movement failed".

The ledger (:meth:`SapState.ledger`, ``GET /_control/ledger``) is the judge of exactly once:
:meth:`SapState.count_by_external_id` counts the records created per
``ExternalSystemConfirmation``; more than one is a posting made twice. The stand-in itself never
rejects a second posting with the same GUID (whether SAP does is not published): the relay must
not rely on it.

Choices of the stand-in where the reference leaves SAP's behaviour open (none of them is a fact
about SAP): the group is assigned per (OrderID, Sequence, OrderOperation), leading zeros aside,
or taken from the operation's registered confirmation number; the over-delivery check counts
yield only (net of cancelled confirmations) against the planned quantity plus tolerance; the 201
answer carries the deep-inserted items inline (``{"results": [...]}``, with their material
document) and a ``Location`` header; a cancellation copies the original's quantities and fields,
takes ``PostingDate``, ``ConfirmationText`` and ``ExternalSystemConfirmation`` from the call (the
zero GUID when none is given) and answers HTTP 200; the 504 of ``timeout_after_commit`` is an
HTML page, as a web dispatcher sends one.

Room for orders down: the orders registered here (:class:`OrderSpec`, :class:`OperationSpec`:
quantity, unit, material, plant, work center, release) are what a later
``API_PRODUCTION_ORDER_2_SRV`` stand-in (released orders down) would serve from the same
:class:`SapState`, with its routes beside this service's in :func:`create_app` and the same
authentication, CSRF and faults (:class:`_ServiceHandler`).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import dataclasses
import json
import re
import secrets
import sqlite3
import sys
import time
from collections import deque
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path
from typing import Any, ClassVar, Generic, Literal, TypeVar, Unpack, cast
from xml.sax.saxutils import quoteattr

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from simulators.erp import odata
from simulators.erp.odata import DAY_MS, TECH_CODE, Filter, Predicate, alpha, fmt_decimal
from simulators.erp.serve import parse_latency, run_until_signal

__all__ = [
    "DEFAULT_MESSAGES",
    "SERVICE",
    "SERVICE_PATH",
    "ComponentSpec",
    "Confirmation",
    "Message",
    "OperationSpec",
    "OrderSpec",
    "Rule",
    "SapError",
    "SapStandIn",
    "SapState",
    "create_app",
    "main",
]

SERVICE = "API_PROD_ORDER_CONFIRMATION_2_SRV"
SERVICE_PATH = f"/sap/opu/odata/sap/{SERVICE}"
CONTROL_PATH = "/_control"
ZERO_GUID = "00000000-0000-0000-0000-000000000000"
CONF_TYPE = f"{SERVICE}.ProdnOrdConf2Type"
ITEM_TYPE = f"{SERVICE}.ProdnOrdConfMatlDocItmType"
CHARC_TYPE = f"{SERVICE}.ProdnOrderConfBatchCharcType"
PROPOSAL_TYPE = f"{SERVICE}.AProductionorderconf2"
GM_PROPOSAL_TYPE = f"{SERVICE}.AProdnordconfmatldocitem"
NAV_ITEMS = "to_ProdnOrdConfMatlDocItm"
NAV_CHARCS = "to_ProdnOrderConfBatchCharc"

# ---------------------------------------------------------------------------------------------
# The entity types: property name -> (Edm type, max length or precision, scale)

EdmKind = Literal["String", "Decimal", "DateTime", "Time", "Boolean", "Guid", "Byte"]


@dataclass(frozen=True, slots=True)
class Prop:
    name: str
    kind: EdmKind
    length: int = 0  # String: MaxLength; Decimal: Precision
    scale: int = 0


def _s(name: str, length: int) -> Prop:
    return Prop(name, "String", length)


def _d(name: str, precision: int = 13, scale: int = 3) -> Prop:
    return Prop(name, "Decimal", precision, scale)


def _dt(name: str) -> Prop:
    return Prop(name, "DateTime")


def _t(name: str) -> Prop:
    return Prop(name, "Time")


def _b(name: str) -> Prop:
    return Prop(name, "Boolean")


def _conf_props() -> list[Prop]:
    props = [
        _s("ConfirmationGroup", 10),
        _s("ConfirmationCount", 8),
        _s("OrderID", 12),
        _s("Sequence", 6),
        _s("OrderOperation", 4),
        _s("OrderSuboperation", 4),
        _s("OrderType", 4),
        _s("OrderOperationInternalID", 8),
        _s("ConfirmationText", 40),
        _s("Language", 2),
        _s("Material", 40),
        _d("OrderPlannedTotalQty"),
        _s("ProductionUnit", 3),
        _s("FinalConfirmationType", 1),
        _b("IsFinalConfirmation"),
        _b("OpenReservationsIsCleared"),
        _b("IsReversed"),
        _b("IsReversal"),
        _b("APIConfHasNoGoodsMovements"),
        _s("OrderConfirmationRecordType", 3),
        _dt("ConfirmationEntryDate"),
        _t("ConfirmationEntryTime"),
        _s("EnteredByUser", 12),
        _dt("LastChangeDate"),
        _s("LastChangedByUser", 12),
        _dt("ConfirmationExternalEntryDate"),
        _t("ConfirmationExternalEntryTime"),
        _s("EnteredByExternalUser", 12),
        Prop("ExternalSystemConfirmation", "Guid"),
        _s("Plant", 4),
        _s("WorkCenterTypeCode", 2),
        _s("WorkCenter", 8),
        _s("CapacityCategoryCode", 3),
        Prop("CapacityRequirementSplit", "Byte"),
        _s("Personnel", 8),
        _s("TimeRecording", 8),
        _s("EmployeeWageType", 4),
        _s("EmployeeWageGroup", 3),
        _s("EmployeeSuitability", 2),
        _d("NumberOfEmployees", 5, 2),
        _s("BreakDurationUnit", 3),
        _s("BreakDurationUnitISOCode", 3),
        _s("BreakDurationUnitSAPCode", 3),
        _d("ConfirmedBreakDuration", 9, 3),
        _dt("PostingDate"),
    ]
    for stage in ("ExecutionStart", "SetupEnd", "ProcessingStart", "ProcessingEnd"):
        props += [_dt(f"Confirmed{stage}Date"), _t(f"Confirmed{stage}Time")]
    for stage in ("TeardownStart", "ExecutionEnd"):
        props += [_dt(f"Confirmed{stage}Date"), _t(f"Confirmed{stage}Time")]
    props += [
        _s("ConfirmationUnit", 3),
        _s("ConfirmationUnitISOCode", 3),
        _s("ConfirmationUnitSAPCode", 3),
        _d("ConfirmationYieldQuantity"),
        _d("ConfirmationScrapQuantity"),
        _d("ConfirmationReworkQuantity"),
        _s("VarianceReasonCode", 4),
    ]
    for n in range(1, 7):
        props += [
            _s(f"OpWorkQuantityUnit{n}", 3),
            _s(f"WorkQuantityUnit{n}ISOCode", 3),
            _s(f"WorkQuantityUnit{n}SAPCode", 3),
            _d(f"OpConfirmedWorkQuantity{n}"),
            _b(f"NoFurtherOpWorkQuantity{n}IsExpd"),
        ]
    props += [
        _s("BusinessProcessEntryUnit", 3),
        _s("BusProcessEntrUnitISOCode", 3),
        _s("BusProcessEntryUnitSAPCode", 3),
        _d("BusinessProcessConfirmedQty"),
        _b("NoFurtherBusinessProcQtyIsExpd"),
    ]
    return props


def _document_keys() -> list[Prop]:
    """The keys of a material document item: its confirmation's and its document's."""
    return [
        _s("ConfirmationGroup", 10),
        _s("ConfirmationCount", 8),
        _s("MaterialDocument", 10),
        _s("MaterialDocumentItem", 4),
        _s("MaterialDocumentYear", 4),
    ]


def _item_props() -> list[Prop]:
    return [
        *_document_keys(),
        _s("OrderType", 4),
        _s("OrderID", 12),
        _s("OrderItem", 4),
        _s("ManufacturingOrderCategory", 2),
        _s("Material", 40),
        _s("Plant", 4),
        _s("Reservation", 10),
        _s("ReservationItem", 4),
        _s("StorageLocation", 4),
        _s("ProductionSupplyArea", 10),
        _s("Batch", 10),
        _s("InventoryValuationType", 10),
        _s("GoodsMovementType", 3),
        _s("GoodsMovementRefDocType", 1),
        _s("InventoryUsabilityCode", 1),
        _s("InventorySpecialStockType", 1),
        _s("SalesOrder", 10),
        _s("SalesOrderItem", 6),
        _s("WBSElementExternalID", 24),
        _s("Supplier", 10),
        _s("Customer", 10),
        _b("ReservationIsFinallyIssued"),
        _b("IsCompletelyDelivered"),
        _dt("ShelfLifeExpirationDate"),
        _dt("ManufactureDate"),
        _s("StorageType", 3),
        _s("StorageBin", 10),
        _s("MaterialDocumentItemText", 50),
        _s("EntryUnit", 3),
        _s("EntryUnitISOCode", 3),
        _s("EntryUnitSAPCode", 3),
        _d("QuantityInEntryUnit"),
    ]


def _charc_props() -> list[Prop]:
    return [
        *_document_keys(),
        _s("Plant", 4),
        _s("Material", 40),
        _s("Batch", 10),
        _s("CharcInternalID", 10),
        _s("Characteristic", 30),
        _s("CharcValue", 70),
    ]


CONF_PROPS: dict[str, Prop] = {p.name: p for p in _conf_props()}
ITEM_PROPS: dict[str, Prop] = {p.name: p for p in _item_props()}
CHARC_PROPS: dict[str, Prop] = {p.name: p for p in _charc_props()}
CONF_KEYS = ("ConfirmationGroup", "ConfirmationCount")
ITEM_KEYS = (*CONF_KEYS, "MaterialDocument", "MaterialDocumentItem", "MaterialDocumentYear")
CHARC_KEYS = (*ITEM_KEYS, "Plant", "Material", "Batch", "CharcInternalID")
# Keys the client must not set: the server assigns them.
SERVER_ASSIGNED = {"ConfirmationCount", "IsReversal", "IsReversed"}
# Numeric-text fields compared without their leading zeros (SAP's ALPHA conversion).
ALPHA = {"OrderID", "OrderOperation", "Sequence", "ConfirmationGroup", "ConfirmationCount"}

_PROPOSAL_PARAMS: dict[str, EdmKind] = {
    "ConfirmationGroup": "String",
    "OrderID": "String",
    "OrderOperation": "String",
    "Sequence": "String",
    "OrderSuboperation": "String",
    "OrderConfirmationRecordType": "String",
    "ConfirmationUnit": "String",
    "ConfirmationUnitISOCode": "String",
    "ConfirmationUnitSAPCode": "String",
    "ConfirmationYieldQuantity": "Decimal",
    "ConfirmationScrapQuantity": "Decimal",
    "ConfirmationReworkQuantity": "Decimal",
    "QuantityIsToBeProposed": "Boolean",
    "ActivityIsToBeProposed": "Boolean",
    "DateAndTimeIsToBeProposed": "Boolean",
    "PersonnelIsToBeProposed": "Boolean",
}
_CANCEL_PARAMS: dict[str, EdmKind] = {
    "ConfirmationGroup": "String",
    "ConfirmationCount": "String",
    "PostingDate": "DateTime",
    "ConfirmationText": "String",
    "ExternalSystemConfirmation": "Guid",
}


# ---------------------------------------------------------------------------------------------
# Errors


Rule = Literal[
    "order_locked",
    "already_final",
    "variance_reason",
    "over_tolerance",
    "not_released",
    "period_closed",
    "unknown_order",
    "unknown_operation",
    "missing_operation",
    "unknown_conf",
    "already_reversed",
    "reversal_of_rev",
    "outage",
    "movement_field",
    "movement_type",
    "movement_qty",
    "movement_unit",
    "unknown_material",
    "batch_missing",
]


@dataclass(frozen=True, slots=True)
class Message:
    """What a rule answers: the SAP message (``<class>/<number>``), its text (a
    :meth:`str.format` template over the rule's fields) and the HTTP status."""

    code: str
    text: str
    status: int = 400


DEFAULT_MESSAGES: dict[Rule, Message] = {
    "order_locked": Message("CO/469", "Order {order} is locked by user {user}"),
    "already_final": Message(
        "RU/105", "Operation {operation} of order {order} is already finally confirmed"
    ),
    "variance_reason": Message("RU/348", "Reason for variance {reason} is not defined"),
    "over_tolerance": Message(
        "RU/315",
        "Confirmed yield {confirmed} {unit} exceeds planned quantity {planned} {unit} "
        "plus tolerance {tolerance} %",
    ),
    "not_released": Message("RU/170", "Order {order} is not released"),
    "period_closed": Message("M7/053", "Posting period {period} is closed (posting date {date})"),
    "unknown_order": Message("CO/004", "Order {order} does not exist"),
    "unknown_operation": Message("RU/021", "Operation {operation} does not exist in order {order}"),
    "missing_operation": Message(
        "RU/100", "Enter an order and an operation or a confirmation group"
    ),
    "unknown_conf": Message("RU/201", "Confirmation {group}/{count} does not exist"),
    "already_reversed": Message("RU/502", "Confirmation {group}/{count} is already cancelled"),
    "reversal_of_rev": Message("RU/503", "Confirmation {group}/{count} is a cancellation itself"),
    "outage": Message("/IWFND/CM_BEC/026", "SAP system is not available", 503),
    "movement_field": Message("M7/002", "Goods movement item {item}: enter {field}"),
    "movement_type": Message(
        "M7/005", "Goods movement item {item}: movement type {value} is not allowed for an order"
    ),
    "movement_qty": Message(
        "M7/010", "Goods movement item {item}: QuantityInEntryUnit {value} must be greater than 0"
    ),
    "movement_unit": Message(
        "M7/012",
        "Goods movement item {item}: EntryUnit {value} is not the unit {unit} of component "
        "{material}",
    ),
    "unknown_material": Message(
        "M7/001",
        "Goods movement item {item}: material {material} is not a component of order {order}",
    ),
    "batch_missing": Message(
        "M7/018",
        "Goods movement item {item}: material {material} is handled in batches, enter a Batch",
    ),
}
# Movement types a confirmation's goods movements may have (the stand-in's choice: goods
# receipt 101 and its reversal 102, component issue 261 and return 262).
MOVEMENT_TYPES = frozenset({"101", "102", "261", "262"})
REVERSE_TYPE = {"101": "102", "102": "101", "261": "262", "262": "261"}
BACKFLUSH_TEXT = "backflush"


class SapError(odata.SapError):
    """An answer in SAP Gateway's error shape."""

    service = SERVICE
    default_component = "PP-SFC-EXE-CON"
    resolution = (
        "Look the timestamp above up in the gateway error log (transaction /IWFND/ERROR_LOG)",
        "SAP Note 1797736 describes how to analyse such errors",
    )


bad_request = SapError.bad_request
not_found = SapError.not_found


class _Fields(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


# ---------------------------------------------------------------------------------------------
# Literals: JSON (verbose OData V2) and URI


_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def _decimal(value: Any, prop: Prop) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        raise ValueError from None
    if not number.is_finite():
        raise ValueError
    quantized = number.quantize(Decimal(1).scaleb(-prop.scale), rounding=ROUND_HALF_UP)
    if quantized != number:  # more places than the scale
        raise ValueError
    if len(str(abs(quantized.to_integral_value(rounding="ROUND_DOWN")))) > prop.length - prop.scale:
        raise ValueError
    return quantized


def from_json(prop: Prop, value: Any) -> Any:
    """A JSON value of ``prop`` as the stand-in stores it (raises ValueError when unreadable)."""
    if prop.kind == "String":
        if value is None:
            return ""
        if not isinstance(value, str) or len(value) > prop.length:
            raise ValueError
        return value
    if prop.kind == "Decimal":
        return Decimal(0) if value is None else _decimal(value, prop)
    if prop.kind == "DateTime":
        if value is None:
            return None
        match = odata.DATE_JSON.match(value) if isinstance(value, str) else None
        if match is None:
            raise ValueError
        return int(match.group(1)) // DAY_MS * DAY_MS  # date-only fields: UTC midnight
    if prop.kind == "Time":
        if value is None:
            return 0
        seconds = odata.parse_time(value) if isinstance(value, str) else None
        if seconds is None:
            raise ValueError
        return seconds
    if prop.kind == "Boolean":
        if value is None:
            return False
        if not isinstance(value, bool):
            raise ValueError
        return value
    if prop.kind == "Guid":
        if value is None:
            return ZERO_GUID
        if not isinstance(value, str) or not _GUID.match(value):
            raise ValueError
        return value.lower()
    # Byte
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 255:
        raise ValueError
    return value


def to_json(prop: Prop, value: Any) -> Any:
    if prop.kind == "Decimal":
        return fmt_decimal(cast(Decimal, value), prop.scale)
    if prop.kind == "DateTime":
        return odata.fmt_date(cast("int | None", value))
    if prop.kind == "Time":
        return odata.fmt_time(cast(int, value))
    return value


def default_of(prop: Prop) -> Any:
    return from_json(prop, None)


@dataclass(frozen=True, slots=True)
class UriLiteral:
    kind: Literal["string", "guid", "datetime", "time", "number", "bool", "null"]
    value: Any
    text: str


_URI_TOKEN = odata.uri_tokens(r"[A-Za-z_][A-Za-z0-9_/]*")


def _literal(kind: str, text: str) -> UriLiteral:
    if kind == "str":
        return UriLiteral("string", odata.unquote(text), text)
    if kind == "typed":
        prefix, _, rest = text.partition("'")
        inner = odata.unquote("'" + rest)
        if prefix == "guid":
            if not _GUID.match(inner):
                raise ValueError(text)
            return UriLiteral("guid", inner.lower(), text)
        if prefix == "time":
            seconds = odata.parse_time(inner)
            if seconds is None:
                raise ValueError(text)
            return UriLiteral("time", seconds, text)
        return UriLiteral("datetime", odata.datetime_ms(inner), text)
    if kind == "num":
        digits = text.rstrip("MmDdLlFf")
        return UriLiteral("number", Decimal(digits), text)
    if text in ("true", "false"):
        return UriLiteral("bool", text == "true", text)
    if text == "null":
        return UriLiteral("null", None, text)
    raise ValueError(text)


def parse_uri_literal(text: str) -> UriLiteral:
    """One OData V2 URI literal (``'0010'``, ``guid'…'``, ``datetime'…'``, ``95M``, ``true``)."""
    match = _URI_TOKEN.fullmatch(text.strip())
    if match is None or match.lastgroup in (None, "lp", "rp"):
        raise ValueError(text)
    return _literal(match.lastgroup, match.group(match.lastgroup))


def coerce(kind: EdmKind, lit: UriLiteral, name: str) -> Any:
    """A URI literal as a value of an Edm type (the literal's form must fit the type)."""
    if lit.kind == "null":
        return None
    ok: dict[EdmKind, tuple[str, ...]] = {
        "String": ("string",),
        "Guid": ("guid",),
        "DateTime": ("datetime",),
        "Time": ("time",),
        "Boolean": ("bool",),
        "Decimal": ("number",),
        "Byte": ("number",),
    }
    if lit.kind not in ok[kind]:
        raise bad_request(f"Invalid literal {lit.text} for {name} (Edm.{kind})", name)
    if kind == "DateTime":
        return int(lit.value) // DAY_MS * DAY_MS
    if kind == "Byte":
        return int(lit.value)
    return lit.value


# ---------------------------------------------------------------------------------------------
# $filter


class _FilterParser(Filter[Prop]):
    tokens = _URI_TOKEN
    op_text = "Operator {op!r} is not supported by the stand-in's $filter"

    def __init__(self, text: str, props: Mapping[str, Prop]) -> None:
        self.props = props
        super().__init__(text)

    def error(self, message: str) -> Exception:
        return bad_request(message)

    def field(self, kind: str, name: str) -> Prop:
        if kind != "word" or name not in self.props:
            raise bad_request(f"Property {name} not found in the filter expression", name)
        return self.props[name]

    def leaf(self, prop: Prop, op: str, literal: tuple[str, str]) -> Predicate:
        lit_kind, lit_text = literal
        try:
            lit = _literal(lit_kind, lit_text)
        except (ValueError, InvalidOperation):
            raise bad_request(f"Invalid literal {lit_text} in the filter expression") from None
        value = coerce(prop.kind, lit, prop.name)
        name = prop.name
        if name in ALPHA and isinstance(value, str):
            wanted = alpha(value)
            return lambda row: odata.compare(op, alpha(str(row.get(name, ""))), wanted)
        return lambda row: odata.compare(op, row.get(name), value)


def parse_filter(text: str, props: Mapping[str, Prop]) -> Predicate:
    """A ``$filter`` expression as a predicate over stored rows (property -> stored value)."""
    return _FilterParser(text, props).parse()


# ---------------------------------------------------------------------------------------------
# Orders and the ledger


@dataclass(slots=True)
class OperationSpec:
    """An operation a test registered; ``None`` fields fall back to the order's."""

    operation: str
    sequence: str = "0"
    confirmation_group: str | None = None
    planned_qty: Decimal | None = None
    tolerance_pct: Decimal | None = None
    unit: str | None = None
    released: bool | None = None
    work_center: str = ""
    # Proposed activities (GetConfProposal): (unit, quantity per piece) for slots 1..6.
    activities: tuple[tuple[str, Decimal], ...] = ()


@dataclass(slots=True)
class ComponentSpec:
    """A component of an order (a reservation item). ``backflush``: SAP issues it by itself
    with each confirmation (``qty_per_unit`` x yield, scrap and rework) unless the confirmation
    says ``APIConfHasNoGoodsMovements``; ``batch_managed``: a movement of it needs a batch
    (``batch`` is the one SAP's backflush takes)."""

    material: str
    qty_per_unit: Decimal
    unit: str
    backflush: bool = False
    batch_managed: bool = False
    batch: str = ""
    reservation: str = ""
    reservation_item: str = ""


@dataclass(slots=True)
class OrderSpec:
    order_id: str
    released: bool = True
    planned_qty: Decimal | None = None
    tolerance_pct: Decimal = Decimal(0)
    unit: str = "PC"
    material: str = ""
    plant: str = ""
    order_type: str = "PP01"
    operations: dict[tuple[str, str], OperationSpec] = field(default_factory=dict)
    components: dict[str, ComponentSpec] = field(default_factory=dict)  # by material


T = TypeVar("T")


class _Value(Generic[T]):
    """A read-only attribute of a :class:`Confirmation`: one of its stored ``values``."""

    def __init__(self, name: str, convert: Callable[[Any], T]) -> None:
        self.name = name
        self.convert = convert

    def __get__(self, record: Confirmation, owner: type[Confirmation] | None = None) -> T:
        return self.convert(record.values[self.name])


def _stored_decimal(value: Any) -> Decimal:
    return cast(Decimal, value)


@dataclass(slots=True)
class Confirmation:
    """One record of the ledger (a confirmation or a cancellation).

    ``values`` holds every property as stored (Decimal, ms, seconds, str, bool); ``sent`` is the
    body (or, for a cancellation, the parameters) exactly as the client sent it."""

    group: str
    count: str
    values: dict[str, Any]
    sent: dict[str, Any]
    items: list[dict[str, Any]] = field(default_factory=list)
    charcs: list[dict[str, Any]] = field(default_factory=list)
    reverses: str | None = None  # the count this cancellation cancels
    reversed_by: str | None = None
    user: str = ""
    created_at: float = 0.0  # time.time()
    goods_movement_failed: bool = False
    sap_client: str = ""

    order_id = _Value("OrderID", str)
    operation = _Value("OrderOperation", str)
    sequence = _Value("Sequence", str)
    external_id = _Value("ExternalSystemConfirmation", str)
    is_reversal = _Value("IsReversal", bool)
    is_reversed = _Value("IsReversed", bool)
    is_final = _Value("IsFinalConfirmation", bool)
    yield_qty = _Value("ConfirmationYieldQuantity", _stored_decimal)
    scrap_qty = _Value("ConfirmationScrapQuantity", _stored_decimal)
    rework_qty = _Value("ConfirmationReworkQuantity", _stored_decimal)

    def entity(self) -> dict[str, Any]:
        """The properties in their JSON form (no ``__metadata``)."""
        return {name: to_json(prop, self.values[name]) for name, prop in CONF_PROPS.items()}

    def summary(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "count": self.count,
            "order_id": self.order_id,
            "sequence": self.sequence,
            "operation": self.operation,
            "external_id": self.external_id,
            "yield": fmt_decimal(self.yield_qty),
            "scrap": fmt_decimal(self.scrap_qty),
            "rework": fmt_decimal(self.rework_qty),
            "final": self.is_final,
            "is_reversal": self.is_reversal,
            "is_reversed": self.is_reversed,
            "reverses": self.reverses,
            "reversed_by": self.reversed_by,
            "user": self.user,
            "created_at": self.created_at,
            "goods_movement_failed": self.goods_movement_failed,
            "material_documents": sorted({str(i["MaterialDocument"]) for i in self.items}),
            "entity": self.entity(),
            "sent": self.sent,
        }


def _item_json(item: Mapping[str, Any], props: Mapping[str, Prop]) -> dict[str, Any]:
    return {name: to_json(prop, item[name]) for name, prop in props.items() if name in item}


def _item_from_json(data: Mapping[str, Any], props: Mapping[str, Prop]) -> dict[str, Any]:
    return {name: from_json(prop, data.get(name)) for name, prop in props.items()}


@dataclass(slots=True)
class _Lock:
    user: str
    times: int | None


def _as_decimal(value: Decimal | str | int | float | None) -> Decimal | None:
    return None if value is None else Decimal(str(value))


def _as_date(value: date | str | None) -> date | None:
    if value is None or isinstance(value, date):
        return value
    return date.fromisoformat(value)


class _Limiter:
    """At most ``limit()`` holders at a time, the others wait in arrival order (one event loop)."""

    def __init__(self, limit: Callable[[], int | None]) -> None:
        self._limit = limit
        self.in_flight = 0
        self.peak = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    def _free(self) -> bool:
        limit = self._limit()
        return limit is None or self.in_flight < limit

    def wake(self) -> None:
        while self._waiters and self._free():
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.in_flight += 1
                self.peak = max(self.peak, self.in_flight)
                waiter.set_result(None)

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        if self._free() and not self._waiters:
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
        else:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self.in_flight -= 1
                    self.wake()
                raise
        try:
            yield
        finally:
            self.in_flight -= 1
            self.wake()


class SapState(odata.SapServiceState):
    """The stand-in's data and knobs: orders, the ledger, auth, faults. Thread-safe: the server
    runs on its own loop (often in another thread) while a test turns the knobs."""

    error = SapError

    def __init__(
        self,
        *,
        require_csrf: bool = True,
        accept_unknown_orders: bool = True,
        strict_properties: bool = True,
        valid_variance_reasons: Iterable[str] | None = None,
        messages: Mapping[Rule, Message] | None = None,
        max_concurrency: int | None = None,
        ledger_path: str | Path | None = None,
        first_group: int = 10000,
        **service: Unpack[odata.ServiceSettings],
    ) -> None:
        """``service``: the credentials, ``sap_client``, ``system_id``, ``token_lifetime_s``,
        ``require_auth`` and ``latency_s`` (:class:`~simulators.erp.odata.SapServiceState`)."""
        super().__init__(**service)
        self.require_csrf = require_csrf
        self.accept_unknown_orders = accept_unknown_orders
        self.strict_properties = strict_properties
        self.messages: dict[Rule, Message] = {**DEFAULT_MESSAGES, **(messages or {})}
        self._reasons: set[str] | None = (
            set(valid_variance_reasons) if valid_variance_reasons else None
        )
        self._max_concurrency = max_concurrency
        self._orders: dict[str, OrderSpec] = {}
        self._locks: dict[str, _Lock] = {}
        self._period_closed = False
        self._period_closed_before: date | None = None
        self._after_commit: deque[tuple[Literal["drop", "timeout"], float]] = deque()
        self._late_commits: deque[float] = deque()
        self._gm_fail = 0
        self._sessions: dict[str, str] = {}  # session cookie -> CSRF token
        self._records: list[Confirmation] = []
        self._by_key: dict[tuple[str, str], Confirmation] = {}
        self._groups: dict[tuple[str, str, str], str] = {}  # (order, sequence, op), ALPHA form
        self._group_ops: dict[str, tuple[str, str, str]] = {}  # group -> (order, seq, op) sent
        self._next_group = first_group
        self._next_doc = 4900000000
        self._by_op: dict[tuple[str, str, str], list[Confirmation]] = {}
        self._last_count: dict[str, int] = {}  # group (ALPHA form) -> highest count
        self._wake: Callable[[], None] | None = None
        self.requests = 0
        self.posts = 0
        self.limiter = _Limiter(lambda: self._max_concurrency)
        self._db: sqlite3.Connection | None = None
        if ledger_path is not None:
            self._open_db(Path(ledger_path))

    # -- knobs: auth ---------------------------------------------------------------------------

    def expire_csrf_tokens(self) -> None:
        """Every CSRF token and session is forgotten: the next POST answers 403 Required."""
        with self._lock:
            self._sessions.clear()

    def csrf_session(self, session: str | None) -> tuple[str, str]:
        """(session, token) for a fetch: the same token again within a known session."""
        with self._lock:
            if session is not None and session in self._sessions:
                return session, self._sessions[session]
            session = secrets.token_urlsafe(18)
            token = base64.b64encode(secrets.token_bytes(18)).decode()
            self._sessions[session] = token
            return session, token

    def csrf_ok(self, session: str | None, token: str | None) -> bool:
        if not self.require_csrf:
            return True
        with self._lock:
            return (
                session is not None and token is not None and self._sessions.get(session) == token
            )

    @property
    def session_cookie(self) -> str:
        return f"SAP_SESSIONID_{self.system_id}_{self.sap_client}"

    # -- knobs: orders and rules ---------------------------------------------------------------

    def register_order(
        self,
        order_id: str,
        *,
        released: bool = True,
        planned_qty: Decimal | str | int | None = None,
        tolerance_pct: Decimal | str | int = 0,
        unit: str = "PC",
        material: str = "",
        plant: str = "",
        order_type: str = "PP01",
        operations: Iterable[str] = (),
    ) -> OrderSpec:
        """An order the stand-in knows. Without ``operations`` any operation of it is accepted
        (with the order's quantity and tolerance); with them (or :meth:`register_operation`)
        only those."""
        with self._lock:
            spec = OrderSpec(
                order_id=order_id,
                released=released,
                planned_qty=_as_decimal(planned_qty),
                tolerance_pct=Decimal(str(tolerance_pct)),
                unit=unit,
                material=material,
                plant=plant,
                order_type=order_type,
            )
            self._orders[alpha(order_id)] = spec
            for op in operations:
                self.register_operation(order_id, op)
            return spec

    def register_operation(
        self,
        order_id: str,
        operation: str,
        *,
        sequence: str = "0",
        confirmation_group: str | None = None,
        planned_qty: Decimal | str | int | None = None,
        tolerance_pct: Decimal | str | int | None = None,
        unit: str | None = None,
        released: bool | None = None,
        work_center: str = "",
        activities: Iterable[tuple[str, Decimal | str | int]] = (),
    ) -> OperationSpec:
        """An operation of an order (registered first if it is not yet). ``confirmation_group``
        is the operation's confirmation number (RUECK): postings to it get that group."""
        with self._lock:
            order = self._orders.get(alpha(order_id)) or self.register_order(order_id)
            spec = OperationSpec(
                operation=operation,
                sequence=sequence,
                confirmation_group=confirmation_group,
                planned_qty=_as_decimal(planned_qty),
                tolerance_pct=_as_decimal(tolerance_pct),
                unit=unit,
                released=released,
                work_center=work_center,
                activities=tuple((u, Decimal(str(q))) for u, q in activities),
            )
            order.operations[(alpha(sequence), alpha(operation))] = spec
            if confirmation_group is not None:
                group = confirmation_group.zfill(10)
                key = (alpha(order_id), alpha(sequence), alpha(operation))
                self._groups[key] = group
                self._group_ops[group] = (order_id, sequence, operation)
            return spec

    def register_component(
        self,
        order_id: str,
        material: str,
        *,
        qty_per_unit: Decimal | str | int,
        unit: str,
        backflush: bool = False,
        batch_managed: bool = False,
        batch: str = "",
        reservation: str = "",
        reservation_item: str = "",
    ) -> ComponentSpec:
        """A component of an order (registered first if it is not yet). Once an order has
        components, a goods movement of another material is refused (``unknown_material``)."""
        with self._lock:
            order = self._orders.get(alpha(order_id)) or self.register_order(order_id)
            spec = ComponentSpec(
                material=material,
                qty_per_unit=Decimal(str(qty_per_unit)),
                unit=unit,
                backflush=backflush,
                batch_managed=batch_managed,
                batch=batch,
                reservation=reservation,
                reservation_item=reservation_item,
            )
            order.components[material] = spec
            return spec

    def consumption(self, order_id: str) -> dict[tuple[str, str], Decimal]:
        """(material, batch) -> the net quantity issued to the order (261 less 262, over every
        confirmation and cancellation in the ledger): what the order consumed in SAP."""
        return self._movements_net(order_id, "261", "262")

    def received(self, order_id: str) -> dict[tuple[str, str], Decimal]:
        """(material, batch) -> the net goods receipt of the order (101 less 102)."""
        return self._movements_net(order_id, "101", "102")

    def _movements_net(
        self, order_id: str, plus: str, minus: str
    ) -> dict[tuple[str, str], Decimal]:
        """(material, batch) -> the order's items of movement type ``plus`` less ``minus``."""
        net: dict[tuple[str, str], Decimal] = {}
        with self._lock:
            for record in self._records:
                if alpha(record.order_id) != alpha(order_id):
                    continue
                for item in record.items:
                    kind = item["GoodsMovementType"]
                    if kind not in (plus, minus):
                        continue
                    key = (str(item["Material"]), str(item["Batch"]))
                    qty = cast(Decimal, item["QuantityInEntryUnit"])
                    net[key] = net.get(key, Decimal(0)) + (qty if kind == plus else -qty)
        return {k: v for k, v in net.items() if v}

    def release_order(self, order_id: str, released: bool = True) -> None:
        with self._lock:
            order = self._orders.get(alpha(order_id)) or self.register_order(order_id)
            order.released = released

    def lock_order(self, order_id: str, user: str = "MUELLER", times: int | None = None) -> None:
        """Postings to the order answer ``order_locked`` (CO/469, HTTP 400) ``times`` times, or
        until :meth:`unlock_order` when ``times`` is None."""
        with self._lock:
            self._locks[alpha(order_id)] = _Lock(user, times)

    def unlock_order(self, order_id: str) -> None:
        with self._lock:
            self._locks.pop(alpha(order_id), None)

    def set_variance_reasons(self, codes: Iterable[str] | None) -> None:
        """The valid variance reason codes; ``None`` (or empty): any code is accepted."""
        with self._lock:
            self._reasons = set(codes) if codes else None

    def close_posting_period(self, before: date | str | None = None) -> None:
        """Postings dated before ``before`` (all postings when None) answer ``period_closed``."""
        with self._lock:
            self._period_closed = True
            self._period_closed_before = _as_date(before)

    def open_posting_period(self) -> None:
        with self._lock:
            self._period_closed = False
            self._period_closed_before = None

    def set_message(
        self,
        rule: Rule,
        *,
        code: str | None = None,
        text: str | None = None,
        status: int | None = None,
    ) -> None:
        with self._lock:
            old = self.messages[rule]
            self.messages[rule] = Message(
                code if code is not None else old.code,
                text if text is not None else old.text,
                status if status is not None else old.status,
            )

    def set_accept_unknown_orders(self, accept: bool) -> None:
        with self._lock:
            self.accept_unknown_orders = accept

    # -- knobs: faults -------------------------------------------------------------------------

    def fail_next(
        self,
        n: int = 1,
        status: int = 500,
        *,
        code: str | None = None,
        text: str | None = None,
        method: str | None = None,
    ) -> None:
        """The next ``n`` service requests (only those with ``method`` when given, e.g. "POST")
        answer ``status`` with an SAP error body, before authentication, untouched."""
        self._queue_faults(n, status, code, text, method.upper() if method else None)

    def take_fault(self, method: str) -> odata.SapError | None:
        return self._take_fault(lambda scope: scope is None or scope == method)

    def drop_after_commit(self, n: int = 1) -> None:
        """The next ``n`` postings (creates and cancellations) are committed to the ledger, then
        the connection is closed without an answer."""
        with self._lock:
            self._after_commit.extend([("drop", 0.0)] * n)

    def timeout_after_commit(self, n: int = 1, delay_s: float = 0.0) -> None:
        """The next ``n`` postings are committed, then answered (after ``delay_s``) with 504."""
        with self._lock:
            self._after_commit.extend([("timeout", delay_s)] * n)

    def take_after_commit(self) -> tuple[Literal["drop", "timeout"], float] | None:
        with self._lock:
            return self._after_commit.popleft() if self._after_commit else None

    def commit_late(self, n: int = 1, delay_s: float = 5.0) -> None:
        """The next ``n`` creates are committed ``delay_s`` after their body arrived (then
        answered as usual), also when the client gave up waiting meanwhile."""
        with self._lock:
            self._late_commits.extend([delay_s] * n)

    def take_late_commit(self) -> float | None:
        with self._lock:
            return self._late_commits.popleft() if self._late_commits else None

    def goods_movement_fails(self, n: int = 1) -> None:
        """The next ``n`` creates with goods movements are posted (201) without their material
        document, as when the goods movement fails after the confirmation (SAP's COGI)."""
        with self._lock:
            self._gm_fail += n

    def set_max_concurrency(self, limit: int | None) -> None:
        """At most ``limit`` service requests are worked on at a time; the others wait."""
        with self._lock:
            self._max_concurrency = limit
            wake = self._wake
        if wake is not None:
            wake()

    @property
    def max_concurrency(self) -> int | None:
        return self._max_concurrency

    def on_limit_change(self, wake: Callable[[], None] | None) -> None:
        """What the server calls (thread-safe) to let waiting requests in when the limit
        changes; one server per state."""
        with self._lock:
            self._wake = wake

    def reset_faults(self) -> None:
        """No latency, outage, queued failure, lock, closed period or concurrency limit."""
        with self._lock:
            self._latency.set(None)
            self._outage = False
            self._faults.clear()
            self._after_commit.clear()
            self._late_commits.clear()
            self._gm_fail = 0
            self._locks.clear()
            self._period_closed = False
            self._period_closed_before = None
        self.set_max_concurrency(None)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": self.requests,
                "posts": self.posts,
                "in_flight": self.limiter.in_flight,
                "peak_in_flight": self.limiter.peak,
                "records": len(self._records),
                "max_concurrency": self._max_concurrency,
                "latency_s": list(self._latency.span),
                "outage": self._outage,
                "queued_faults": len(self._faults),
                "queued_after_commit": len(self._after_commit),
                "queued_late_commits": len(self._late_commits),
            }

    # -- the ledger ----------------------------------------------------------------------------

    def ledger(self) -> list[Confirmation]:
        """Every record, in the order posted (copies)."""
        with self._lock:
            return [dataclasses.replace(r, values=dict(r.values)) for r in self._records]

    def get(self, group: str, count: str) -> Confirmation | None:
        with self._lock:
            record = self._by_key.get((alpha(group), alpha(count)))
            return (
                None if record is None else dataclasses.replace(record, values=dict(record.values))
            )

    def find(self, external_id: str) -> list[Confirmation]:
        return [r for r in self.ledger() if r.external_id == external_id.lower()]

    def count_by_external_id(self) -> dict[str, int]:
        """ExternalSystemConfirmation -> number of confirmations (not cancellations) created
        with it; the zero GUID (none sent) is left out. More than 1: posted twice."""
        counts: dict[str, int] = {}
        for r in self.ledger():
            if not r.is_reversal and r.external_id != ZERO_GUID:
                counts[r.external_id] = counts.get(r.external_id, 0) + 1
        return counts

    def duplicates(self) -> dict[str, int]:
        return {k: n for k, n in self.count_by_external_id().items() if n > 1}

    def reversals(self) -> list[Confirmation]:
        return [r for r in self.ledger() if r.is_reversal]

    def reversals_by_external_id(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for r in self.reversals():
            if r.external_id != ZERO_GUID:
                counts[r.external_id] = counts.get(r.external_id, 0) + 1
        return counts

    def totals(
        self, order_id: str, operation: str, sequence: str | None = None
    ) -> dict[str, Decimal]:
        """Yield, scrap and rework of an operation net of cancelled confirmations."""
        sums = {"yield": Decimal(0), "scrap": Decimal(0), "rework": Decimal(0)}
        for r in self.ledger():
            if r.is_reversal or r.is_reversed:
                continue
            if alpha(r.order_id) != alpha(order_id) or alpha(r.operation) != alpha(operation):
                continue
            if sequence is not None and alpha(r.sequence) != alpha(sequence):
                continue
            sums["yield"] += r.yield_qty
            sums["scrap"] += r.scrap_qty
            sums["rework"] += r.rework_qty
        return sums

    def all_totals(self) -> dict[tuple[str, str, str], dict[str, Decimal]]:
        """(order, sequence, operation) -> net totals, for every operation posted to."""
        keys = sorted({(r.order_id, r.sequence, r.operation) for r in self.ledger()})
        return {k: self.totals(k[0], k[2], k[1]) for k in keys}

    def ledger_json(self) -> dict[str, Any]:
        records = self.ledger()
        return {
            "postings": [r.summary() for r in records],
            "count_by_external_id": self.count_by_external_id(),
            "duplicates": self.duplicates(),
            "reversals": sum(1 for r in records if r.is_reversal),
            "totals": [
                {
                    "order_id": k[0],
                    "sequence": k[1],
                    "operation": k[2],
                    **{name: fmt_decimal(q) for name, q in sums.items()},
                }
                for k, sums in self.all_totals().items()
            ],
        }

    def clear_ledger(self) -> None:
        with self._lock:
            self._records.clear()
            self._by_key.clear()
            self._by_op.clear()
            self._last_count.clear()
            if self._db is not None:
                self._db.execute("DELETE FROM record")
                self._db.commit()

    # -- persistence ---------------------------------------------------------------------------

    def _open_db(self, path: Path) -> None:
        db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(
            "CREATE TABLE IF NOT EXISTS record (seq INTEGER PRIMARY KEY, grp TEXT NOT NULL, "
            "cnt TEXT NOT NULL, data TEXT NOT NULL, UNIQUE (grp, cnt))"
        )
        self._db = db
        for (data,) in db.execute("SELECT data FROM record ORDER BY seq"):
            self._index(self._record_from_row(json.loads(data)))

    def _record_row(self, r: Confirmation) -> str:
        return json.dumps(
            {
                "entity": r.entity(),
                "sent": r.sent,
                "items": [_item_json(i, ITEM_PROPS) for i in r.items],
                "charcs": [_item_json(c, CHARC_PROPS) for c in r.charcs],
                "reverses": r.reverses,
                "reversed_by": r.reversed_by,
                "user": r.user,
                "created_at": r.created_at,
                "goods_movement_failed": r.goods_movement_failed,
                "sap_client": r.sap_client,
            }
        )

    @staticmethod
    def _record_from_row(row: Mapping[str, Any]) -> Confirmation:
        values = {name: from_json(p, row["entity"].get(name)) for name, p in CONF_PROPS.items()}
        return Confirmation(
            group=values["ConfirmationGroup"],
            count=values["ConfirmationCount"],
            values=values,
            sent=row["sent"],
            items=[_item_from_json(i, ITEM_PROPS) for i in row["items"]],
            charcs=[_item_from_json(c, CHARC_PROPS) for c in row["charcs"]],
            reverses=row["reverses"],
            reversed_by=row["reversed_by"],
            user=row["user"],
            created_at=row["created_at"],
            goods_movement_failed=row["goods_movement_failed"],
            sap_client=row.get("sap_client", ""),
        )

    def _save(self, *records: Confirmation) -> None:
        """Write records in one transaction (a cancellation and the record it cancels)."""
        if self._db is None:
            return
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for record in records:
                self._db.execute(
                    "INSERT INTO record (grp, cnt, data) VALUES (?, ?, ?) "
                    "ON CONFLICT (grp, cnt) DO UPDATE SET data = excluded.data",
                    (record.group, record.count, self._record_row(record)),
                )
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _index(self, record: Confirmation) -> None:
        self._records.append(record)
        self._by_key[(alpha(record.group), alpha(record.count))] = record
        key = (alpha(record.order_id), alpha(record.sequence), alpha(record.operation))
        self._by_op.setdefault(key, []).append(record)
        if record.count.isdigit():
            group = alpha(record.group)
            self._last_count[group] = max(self._last_count.get(group, 0), int(record.count))
        self._groups.setdefault(key, record.group)
        self._group_ops.setdefault(
            record.group, (record.order_id, record.sequence, record.operation)
        )
        if record.group.isdigit():
            self._next_group = max(self._next_group, int(record.group) + 1)
        for item in record.items:
            doc = str(item["MaterialDocument"])
            if doc.isdigit():
                self._next_doc = max(self._next_doc, int(doc))

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    # -- business ------------------------------------------------------------------------------

    def _reject(self, rule: Rule, target: str = "", **fields: Any) -> SapError:
        message = self.messages[rule]
        return SapError(
            message.status,
            message.code,
            message.text.format_map(_Fields(fields)),
            target=target,
        )

    def _check_lock(self, order_id: str) -> None:
        lock = self._locks.get(alpha(order_id))
        if lock is None:
            return
        if lock.times is not None:
            lock.times -= 1
            if lock.times <= 0:
                del self._locks[alpha(order_id)]
        raise self._reject("order_locked", "OrderID", order=order_id, user=lock.user)

    def _check_period(self, posting_ms: int) -> None:
        if not self._period_closed:
            return
        day = datetime.fromtimestamp(posting_ms / 1000, UTC).date()
        if self._period_closed_before is None or day < self._period_closed_before:
            raise self._reject(
                "period_closed",
                "PostingDate",
                period=f"{day.month:03d}/{day.year}",
                date=day.isoformat(),
            )

    def _net(self, key: tuple[str, str, str]) -> tuple[Decimal, bool]:
        """(net yield, finally confirmed) of an operation."""
        total = Decimal(0)
        final = False
        for r in self._by_op.get(key, ()):
            if r.is_reversal or r.is_reversed:
                continue
            total += r.yield_qty
            final = final or r.is_final
        return total, final

    def _read_body(self, body: Any, props: Mapping[str, Prop], where: str) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise bad_request(f"{where}: a JSON object is expected")
        values: dict[str, Any] = {}
        for name, value in body.items():
            if name == "__metadata" or name in (NAV_ITEMS, NAV_CHARCS):
                continue
            prop = props.get(name)
            if prop is None:
                if self.strict_properties:
                    raise bad_request(f"Property '{name}' is invalid in {where}", name)
                continue
            try:
                values[name] = from_json(prop, value)
            except ValueError:
                extra = f", MaxLength {prop.length}" if prop.kind == "String" else ""
                if prop.kind == "Decimal":
                    extra = f", Precision {prop.length}, Scale {prop.scale}"
                raise bad_request(
                    f"Invalid value {json.dumps(value)} for property '{name}' "
                    f"(Edm.{prop.kind}{extra})",
                    name,
                ) from None
        return values

    @staticmethod
    def _nested(body: Mapping[str, Any], name: str) -> list[Any]:
        nested = body.get(name)
        if nested is None:
            return []
        if isinstance(nested, dict) and isinstance(nested.get("results"), list):
            return list(nested["results"])
        if isinstance(nested, list):
            return nested
        raise bad_request(f"Navigation property '{name}': a list or {{\"results\": [...]}}", name)

    def _next_count(self, group: str) -> str:
        return f"{self._last_count.get(alpha(group), 0) + 1:08d}"

    def create(self, body: Any, user: str, sap_client: str = "") -> Confirmation:
        """POST ProdnOrdConf2: check the rules, then commit (raises :class:`SapError`)."""
        with self._lock:
            values = self._read_body(body, CONF_PROPS, "ProdnOrdConf2")
            raw_items = self._nested(body, NAV_ITEMS)
            items_in = [self._read_body(i, ITEM_PROPS, NAV_ITEMS) for i in raw_items]
            charcs_in = [
                [self._read_body(c, CHARC_PROPS, NAV_CHARCS) for c in self._nested(i, NAV_CHARCS)]
                for i in raw_items
            ]
            for name in SERVER_ASSIGNED:
                values.pop(name, None)
            group_in = values.pop("ConfirmationGroup", "")
            order_id = values.get("OrderID", "")
            operation = values.get("OrderOperation", "")
            sequence = values.get("Sequence", "") or "0"
            if group_in:
                known = self._group_ops.get(group_in.zfill(10))
                if known is None:
                    raise self._reject(
                        "unknown_conf", "ConfirmationGroup", group=group_in, count=""
                    )
                if (order_id and alpha(order_id) != alpha(known[0])) or (
                    operation and alpha(operation) != alpha(known[2])
                ):
                    raise bad_request(
                        f"Confirmation group {group_in} belongs to {known[0]}/{known[2]}",
                        "ConfirmationGroup",
                    )
                order_id, sequence, operation = known
            if not order_id or not operation:
                raise self._reject("missing_operation", "OrderID")
            order = self._orders.get(alpha(order_id))
            op_spec: OperationSpec | None = None
            if order is None and not self.accept_unknown_orders:
                raise self._reject("unknown_order", "OrderID", order=order_id)
            if order is not None and order.operations:
                op_spec = order.operations.get((alpha(sequence), alpha(operation)))
                if op_spec is None:
                    raise self._reject(
                        "unknown_operation",
                        "OrderOperation",
                        order=order_id,
                        operation=operation,
                        sequence=sequence,
                    )
            self._check_lock(order_id)
            released = order.released if order is not None else True
            if op_spec is not None and op_spec.released is not None:
                released = released and op_spec.released
            if not released:
                raise self._reject("not_released", "OrderID", order=order_id, operation=operation)
            now = time.time()
            today_ms = int(now * 1000) // DAY_MS * DAY_MS
            posting_ms = values.get("PostingDate") or today_ms
            self._check_period(posting_ms)
            key = (alpha(order_id), alpha(sequence), alpha(operation))
            confirmed, final = self._net(key)
            if final:
                raise self._reject(
                    "already_final", "OrderOperation", order=order_id, operation=operation
                )
            reason = values.get("VarianceReasonCode", "")
            if reason and self._reasons is not None and reason not in self._reasons:
                raise self._reject("variance_reason", "VarianceReasonCode", reason=reason)
            unit = (op_spec.unit if op_spec and op_spec.unit else None) or (
                order.unit if order else "PC"
            )
            planned = op_spec.planned_qty if op_spec and op_spec.planned_qty is not None else None
            if planned is None and order is not None:
                planned = order.planned_qty
            if planned is not None:
                tolerance = (
                    op_spec.tolerance_pct
                    if op_spec and op_spec.tolerance_pct is not None
                    else (order.tolerance_pct if order else Decimal(0))
                )
                new_total = confirmed + values.get("ConfirmationYieldQuantity", Decimal(0))
                if new_total > planned * (1 + tolerance / 100):
                    raise self._reject(
                        "over_tolerance",
                        "ConfirmationYieldQuantity",
                        order=order_id,
                        operation=operation,
                        confirmed=fmt_decimal(new_total),
                        planned=fmt_decimal(planned),
                        tolerance=format(tolerance.normalize(), "f"),
                        unit=unit,
                    )
            for n, item_values in enumerate(items_in, start=1):
                self._check_item(n, item_values, order, order_id)
            if order is not None and not values.get("APIConfHasNoGoodsMovements"):
                pieces = sum(
                    (
                        values.get(name, Decimal(0))
                        for name in (
                            "ConfirmationYieldQuantity",
                            "ConfirmationScrapQuantity",
                            "ConfirmationReworkQuantity",
                        )
                    ),
                    Decimal(0),
                )
                for component in order.components.values():
                    qty = (component.qty_per_unit * pieces).quantize(
                        Decimal("0.001"), rounding=ROUND_HALF_UP
                    )
                    if component.backflush and qty > 0:
                        items_in.append(self._backflush_item(component, qty, order_id))
                        charcs_in.append([])
            # committed from here on
            group = self._groups.get(key)
            if group is None:
                group = f"{self._next_group:010d}"
                self._next_group += 1
                self._groups[key] = group
                self._group_ops[group] = (order_id, sequence, operation)
            count = self._next_count(group)
            full = {name: default_of(p) for name, p in CONF_PROPS.items()}
            full.update(values)
            seconds = int(now) % 86_400
            full.update(
                ConfirmationGroup=group,
                ConfirmationCount=count,
                OrderID=order_id,
                OrderOperation=operation,
                Sequence=sequence,
                PostingDate=posting_ms,
                ConfirmationEntryDate=today_ms,
                ConfirmationEntryTime=seconds,
                LastChangeDate=today_ms,
                EnteredByUser=user[:12].upper(),
                LastChangedByUser=user[:12].upper(),
                IsReversal=False,
                IsReversed=False,
            )
            if not full["ConfirmationUnit"]:
                full["ConfirmationUnit"] = unit
            if order is not None:
                for name, value in (
                    ("Material", order.material),
                    ("Plant", order.plant),
                    ("OrderType", order.order_type),
                    ("ProductionUnit", order.unit),
                ):
                    if not full[name]:
                        full[name] = value
                if order.planned_qty is not None and "OrderPlannedTotalQty" not in values:
                    full["OrderPlannedTotalQty"] = order.planned_qty
            if op_spec is not None and op_spec.work_center and not full["WorkCenter"]:
                full["WorkCenter"] = op_spec.work_center
            record = Confirmation(
                group=group,
                count=count,
                values=full,
                sent=dict(body),
                user=user,
                created_at=now,
                sap_client=sap_client,
            )
            if items_in:
                if self._gm_fail > 0:
                    self._gm_fail -= 1
                    record.goods_movement_failed = True
                else:
                    self._next_doc += 1
                    doc = f"{self._next_doc:010d}"
                    year = str(datetime.fromtimestamp(posting_ms / 1000, UTC).year)
                    for n, (item_values, item_charcs) in enumerate(
                        zip(items_in, charcs_in, strict=True), start=1
                    ):
                        item = {name: default_of(p) for name, p in ITEM_PROPS.items()}
                        item.update(item_values)
                        keys = {
                            "ConfirmationGroup": group,
                            "ConfirmationCount": count,
                            "MaterialDocument": doc,
                            "MaterialDocumentItem": f"{n:04d}",
                            "MaterialDocumentYear": year,
                        }
                        item.update(keys)
                        if not item["OrderID"]:
                            item["OrderID"] = order_id
                        record.items.append(item)
                        for m, charc_values in enumerate(item_charcs, start=1):
                            charc = {name: default_of(p) for name, p in CHARC_PROPS.items()}
                            charc.update(charc_values)
                            charc.update(keys)
                            charc["Plant"] = charc["Plant"] or item["Plant"]
                            charc["Material"] = charc["Material"] or item["Material"]
                            charc["Batch"] = charc["Batch"] or item["Batch"]
                            charc["CharcInternalID"] = charc["CharcInternalID"] or f"{m:010d}"
                            record.charcs.append(charc)
            self._index(record)
            self._save(record)
            self.posts += 1
            return dataclasses.replace(record, values=dict(record.values))

    def _check_item(
        self, n: int, item: Mapping[str, Any], order: OrderSpec | None, order_id: str
    ) -> None:
        """A goods movement of a deep insert, checked as the stand-in reads SAP's rules (its
        own choice: the reference lists the fields, not the checks): the material, movement
        type, unit and a quantity above 0 are required; an order with registered components
        takes issues and returns of those only, in their unit, with a batch for a
        batch-managed one."""
        for name in ("Material", "GoodsMovementType", "EntryUnit"):
            if not item.get(name):
                raise self._reject("movement_field", name, item=n, field=name)
        if "QuantityInEntryUnit" not in item:
            raise self._reject(
                "movement_field", "QuantityInEntryUnit", item=n, field="QuantityInEntryUnit"
            )
        kind = item["GoodsMovementType"]
        if kind not in MOVEMENT_TYPES:
            raise self._reject("movement_type", "GoodsMovementType", item=n, value=kind)
        qty = item["QuantityInEntryUnit"]
        if qty <= 0:
            raise self._reject(
                "movement_qty", "QuantityInEntryUnit", item=n, value=fmt_decimal(qty)
            )
        if order is None or not order.components or kind not in ("261", "262"):
            return
        material = item["Material"]
        component = order.components.get(material)
        if component is None:
            raise self._reject(
                "unknown_material", "Material", item=n, material=material, order=order_id
            )
        if item["EntryUnit"] != component.unit:
            raise self._reject(
                "movement_unit",
                "EntryUnit",
                item=n,
                value=item["EntryUnit"],
                unit=component.unit,
                material=material,
            )
        if component.batch_managed and not item.get("Batch"):
            raise self._reject("batch_missing", "Batch", item=n, material=material)

    @staticmethod
    def _backflush_item(component: ComponentSpec, qty: Decimal, order_id: str) -> dict[str, Any]:
        """SAP's own issue of a backflushed component (the stand-in's model of backflush)."""
        return {
            "OrderID": order_id,
            "Material": component.material,
            "GoodsMovementType": "261",
            "EntryUnit": component.unit,
            "QuantityInEntryUnit": qty,
            "Batch": component.batch,
            "Reservation": component.reservation,
            "ReservationItem": component.reservation_item,
            "MaterialDocumentItemText": BACKFLUSH_TEXT,
        }

    def cancel(self, params: Mapping[str, Any], user: str, sap_client: str = "") -> Confirmation:
        """CancelProdnOrdConf: a cancellation record in the same group; the original is marked
        IsReversed."""
        with self._lock:
            group = params.get("ConfirmationGroup")
            count = params.get("ConfirmationCount")
            if not group or not count:
                raise bad_request(
                    "Parameters ConfirmationGroup and ConfirmationCount are mandatory",
                    "ConfirmationGroup",
                )
            original = self._by_key.get((alpha(group), alpha(count)))
            if original is None:
                raise self._reject("unknown_conf", "ConfirmationCount", group=group, count=count)
            if original.is_reversal:
                raise self._reject("reversal_of_rev", "ConfirmationCount", group=group, count=count)
            if original.is_reversed:
                raise self._reject(
                    "already_reversed", "ConfirmationCount", group=group, count=count
                )
            self._check_lock(original.order_id)
            now = time.time()
            today_ms = int(now * 1000) // DAY_MS * DAY_MS
            posting_ms = params.get("PostingDate") or today_ms
            self._check_period(posting_ms)
            new_count = self._next_count(original.group)
            values = dict(original.values)
            values.update(
                ConfirmationCount=new_count,
                IsReversal=True,
                IsReversed=False,
                PostingDate=posting_ms,
                ConfirmationEntryDate=today_ms,
                ConfirmationEntryTime=int(now) % 86_400,
                LastChangeDate=today_ms,
                EnteredByUser=user[:12].upper(),
                LastChangedByUser=user[:12].upper(),
                ExternalSystemConfirmation=params.get("ExternalSystemConfirmation") or ZERO_GUID,
            )
            if params.get("ConfirmationText") is not None:
                text = str(params["ConfirmationText"])
                if len(text) > 40:
                    raise bad_request("ConfirmationText is longer than 40", "ConfirmationText")
                values["ConfirmationText"] = text
            record = Confirmation(
                group=original.group,
                count=new_count,
                values=values,
                sent={k: (v if not isinstance(v, Decimal) else str(v)) for k, v in params.items()},
                reverses=original.count,
                user=user,
                created_at=now,
                sap_client=sap_client,
            )
            if original.items:
                # The cancellation reverses the confirmation's goods movements (as SAP's
                # CN29/CancelProdnOrdConf does): each item with the opposite movement type, in
                # a material document of its own.
                self._next_doc += 1
                doc = f"{self._next_doc:010d}"
                year = str(datetime.fromtimestamp(posting_ms / 1000, UTC).year)
                for n, item in enumerate(original.items, start=1):
                    reversed_item = dict(item)
                    reversed_item.update(
                        ConfirmationCount=new_count,
                        MaterialDocument=doc,
                        MaterialDocumentItem=f"{n:04d}",
                        MaterialDocumentYear=year,
                        GoodsMovementType=REVERSE_TYPE.get(
                            str(item["GoodsMovementType"]), str(item["GoodsMovementType"])
                        ),
                    )
                    record.items.append(reversed_item)
            original.values["IsReversed"] = True
            original.values["LastChangeDate"] = today_ms
            original.values["LastChangedByUser"] = user[:12].upper()
            original.reversed_by = new_count
            self._index(record)
            self._save(original, record)
            self.posts += 1
            return dataclasses.replace(record, values=dict(record.values))

    def proposal(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """GetConfProposal: the operation's data, the quantities asked for (or, with
        QuantityIsToBeProposed, what is still open), activities from the registered rates."""
        with self._lock:
            group = params.get("ConfirmationGroup") or ""
            order_id = params.get("OrderID") or ""
            operation = params.get("OrderOperation") or ""
            sequence = params.get("Sequence") or "0"
            if group:
                known = self._group_ops.get(str(group).zfill(10))
                if known is None:
                    raise self._reject("unknown_conf", "ConfirmationGroup", group=group, count="")
                order_id, sequence, operation = known
            if not order_id or not operation:
                raise self._reject("missing_operation", "OrderID")
            order = self._orders.get(alpha(order_id))
            if order is None and not self.accept_unknown_orders:
                raise self._reject("unknown_order", "OrderID", order=order_id)
            op_spec = order.operations.get((alpha(sequence), alpha(operation))) if order else None
            if order is not None and order.operations and op_spec is None:
                raise self._reject(
                    "unknown_operation", "OrderOperation", order=order_id, operation=operation
                )
            key = (alpha(order_id), alpha(sequence), alpha(operation))
            values = {name: default_of(p) for name, p in CONF_PROPS.items()}
            confirmed, _ = self._net(key)
            planned = (op_spec.planned_qty if op_spec else None) or (
                order.planned_qty if order else None
            )
            yield_qty = params.get("ConfirmationYieldQuantity")
            if yield_qty is None and params.get("QuantityIsToBeProposed") and planned is not None:
                yield_qty = max(planned - confirmed, Decimal(0))
            scrap = params.get("ConfirmationScrapQuantity") or Decimal(0)
            values.update(
                ConfirmationGroup=self._groups.get(key, ""),
                ConfirmationCount="0",
                OrderID=order_id,
                OrderOperation=operation,
                Sequence=sequence,
                ConfirmationYieldQuantity=yield_qty or Decimal(0),
                ConfirmationScrapQuantity=scrap,
                ConfirmationReworkQuantity=params.get("ConfirmationReworkQuantity") or Decimal(0),
                ConfirmationUnit=params.get("ConfirmationUnit")
                or (op_spec.unit if op_spec and op_spec.unit else (order.unit if order else "")),
                PostingDate=int(time.time() * 1000) // DAY_MS * DAY_MS,
            )
            if order is not None:
                values.update(
                    Material=order.material, Plant=order.plant, OrderType=order.order_type
                )
            if planned is not None:
                values["OrderPlannedTotalQty"] = planned
                if confirmed + values["ConfirmationYieldQuantity"] >= planned:
                    values["FinalConfirmationType"] = "X"
            if op_spec is not None and params.get("ActivityIsToBeProposed"):
                pieces = values["ConfirmationYieldQuantity"] + scrap
                for n, (unit, rate) in enumerate(op_spec.activities[:6], start=1):
                    values[f"OpWorkQuantityUnit{n}"] = unit
                    values[f"OpConfirmedWorkQuantity{n}"] = (rate * pieces).quantize(
                        Decimal("0.001"), rounding=ROUND_HALF_UP
                    )
            return values

    def gm_proposal(self, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        """GetGdsMvtProposal: a goods receipt (101) of the order's material, when it has one."""
        with self._lock:
            order_id = params.get("OrderID") or ""
            if params.get("ConfirmationGroup"):
                known = self._group_ops.get(str(params["ConfirmationGroup"]).zfill(10))
                order_id = known[0] if known else order_id
            order = self._orders.get(alpha(order_id))
            if order is None or not order.material:
                return []
            item = {name: default_of(p) for name, p in ITEM_PROPS.items()}
            item.update(
                OrderID=order_id,
                OrderType=order.order_type,
                OrderItem="0001",
                ManufacturingOrderCategory="10",
                Material=order.material,
                Plant=order.plant,
                GoodsMovementType="101",
                GoodsMovementRefDocType="F",
                EntryUnit=order.unit,
                QuantityInEntryUnit=params.get("ConfirmationYieldQuantity") or Decimal(0),
            )
            return [item]

    def records(self) -> list[Confirmation]:
        """The stored records themselves (the service reads them under its own loop)."""
        with self._lock:
            return list(self._records)

    def record(self, group: str, count: str) -> Confirmation | None:
        """The stored record with these keys (leading zeros do not matter), not a copy."""
        with self._lock:
            return self._by_key.get((alpha(group), alpha(count)))


# ---------------------------------------------------------------------------------------------
# $metadata


def _prop_xml(prop: Prop, keys: Sequence[str], indent: str) -> str:
    attrs = [f"Name={quoteattr(prop.name)}", f'Type="Edm.{prop.kind}"']
    if prop.name in keys:
        attrs.append('Nullable="false"')
    attrs += odata.facets(prop.kind, prop.length, prop.scale)
    if prop.name in keys:
        attrs.append('sap:creatable="false" sap:updatable="false"')
    return f"{indent}<Property {' '.join(attrs)}/>"


def _entity_xml(
    name: str, props: Mapping[str, Prop], keys: Sequence[str], navs: Sequence[tuple[str, str]]
) -> list[str]:
    lines = [f'   <EntityType Name="{name}" sap:content-version="1">', "    <Key>"]
    lines += [f'     <PropertyRef Name="{k}"/>' for k in keys]
    lines.append("    </Key>")
    lines += [_prop_xml(p, keys, "    ") for p in props.values()]
    for nav, assoc in navs:
        lines.append(
            f'    <NavigationProperty Name="{nav}" Relationship="{SERVICE}.{assoc}" '
            f'FromRole="FromRole_{assoc}" ToRole="ToRole_{assoc}"/>'
        )
    lines.append("   </EntityType>")
    return lines


def _function_xml(name: str, params: Mapping[str, EdmKind], returns: str, entity_set: str) -> str:
    ret = f' EntitySet="{entity_set}"' if entity_set else ""
    lines = [f'    <FunctionImport Name="{name}" ReturnType="{returns}"{ret} m:HttpMethod="POST">']
    for pname, kind in params.items():
        lines.append(
            f'     <Parameter Name="{pname}" Type="Edm.{kind}" Mode="In" Nullable="true"/>'
        )
    lines.append("    </FunctionImport>")
    return "\n".join(lines)


def metadata_xml() -> str:
    """The service's EDMX (OData V2): the three entity types, the two complex types of the
    proposals, the associations and the three function imports."""
    assoc_items = "assoc_ProdnOrdConf2_MatlDocItm"
    assoc_charcs = "assoc_MatlDocItm_BatchCharc"
    conf_nonkey = dict(CONF_PROPS)
    item_nonkey = dict(ITEM_PROPS)
    lines = [
        '<?xml version="1.0" encoding="utf-8"?>',
        '<edmx:Edmx Version="1.0" xmlns:edmx="http://schemas.microsoft.com/ado/2007/06/edmx" '
        'xmlns:m="http://schemas.microsoft.com/ado/2007/08/dataservices/metadata" '
        'xmlns:sap="http://www.sap.com/Protocols/SAPData">',
        ' <edmx:DataServices m:DataServiceVersion="2.0">',
        f'  <Schema Namespace="{SERVICE}" xml:lang="en" sap:schema-version="1" '
        'xmlns="http://schemas.microsoft.com/ado/2008/09/edm">',
    ]
    lines += _entity_xml("ProdnOrdConf2Type", CONF_PROPS, CONF_KEYS, [(NAV_ITEMS, assoc_items)])
    lines += _entity_xml(
        "ProdnOrdConfMatlDocItmType", ITEM_PROPS, ITEM_KEYS, [(NAV_CHARCS, assoc_charcs)]
    )
    lines += _entity_xml("ProdnOrderConfBatchCharcType", CHARC_PROPS, CHARC_KEYS, [])
    for cname, props in (
        ("AProductionorderconf2", conf_nonkey),
        ("AProdnordconfmatldocitem", item_nonkey),
    ):
        lines.append(f'   <ComplexType Name="{cname}">')
        lines += [_prop_xml(p, (), "    ") for p in props.values()]
        lines.append("   </ComplexType>")
    for assoc, src, dst in (
        (assoc_items, "ProdnOrdConf2Type", "ProdnOrdConfMatlDocItmType"),
        (assoc_charcs, "ProdnOrdConfMatlDocItmType", "ProdnOrderConfBatchCharcType"),
    ):
        lines += [
            f'   <Association Name="{assoc}" sap:content-version="1">',
            f'    <End Type="{SERVICE}.{src}" Multiplicity="1" Role="FromRole_{assoc}"/>',
            f'    <End Type="{SERVICE}.{dst}" Multiplicity="*" Role="ToRole_{assoc}"/>',
            "   </Association>",
        ]
    lines.append(
        f'   <EntityContainer Name="{SERVICE}_Entities" m:IsDefaultEntityContainer="true">'
    )
    for set_name, type_name, creatable in (
        ("ProdnOrdConf2", "ProdnOrdConf2Type", "true"),
        ("ProdnOrdConfMatlDocItm", "ProdnOrdConfMatlDocItmType", "false"),
        ("ProdnOrderConfBatchCharc", "ProdnOrderConfBatchCharcType", "false"),
    ):
        lines.append(
            f'    <EntitySet Name="{set_name}" EntityType="{SERVICE}.{type_name}" '
            f'sap:creatable="{creatable}" sap:updatable="false" sap:deletable="false" '
            'sap:content-version="1"/>'
        )
    for assoc, src, dst in (
        (assoc_items, "ProdnOrdConf2", "ProdnOrdConfMatlDocItm"),
        (assoc_charcs, "ProdnOrdConfMatlDocItm", "ProdnOrderConfBatchCharc"),
    ):
        lines += [
            f'    <AssociationSet Name="{assoc}_Set" Association="{SERVICE}.{assoc}" '
            'sap:creatable="false" sap:updatable="false" sap:deletable="false">',
            f'     <End EntitySet="{src}" Role="FromRole_{assoc}"/>',
            f'     <End EntitySet="{dst}" Role="ToRole_{assoc}"/>',
            "    </AssociationSet>",
        ]
    lines.append(
        _function_xml("GetConfProposal", _PROPOSAL_PARAMS, f"{SERVICE}.AProductionorderconf2", "")
    )
    lines.append(
        _function_xml(
            "GetGdsMvtProposal",
            _PROPOSAL_PARAMS,
            f"Collection({SERVICE}.AProdnordconfmatldocitem)",
            "",
        )
    )
    lines.append(_function_xml("CancelProdnOrdConf", _CANCEL_PARAMS, CONF_TYPE, "ProdnOrdConf2"))
    lines += ["   </EntityContainer>", "  </Schema>", " </edmx:DataServices>", "</edmx:Edmx>", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# The HTTP app


_KEY_SEGMENT = re.compile(r"^(?P<set>\w+)\((?P<keys>.*)\)(?:/(?P<nav>\w+))?$")
_KEY_PAIR = re.compile(r"\s*(\w+)\s*=\s*('(?:[^']|'')*')\s*(?:,|$)")
TRANSPORT_KEY = "sap_standin.transport"


def _parse_keys(text: str) -> dict[str, str]:
    keys: dict[str, str] = {}
    pos = 0
    while pos < len(text):
        match = _KEY_PAIR.match(text, pos)
        if match is None or match.end() == pos:
            raise bad_request(f"Invalid key predicate ({text})")
        keys[match.group(1)] = odata.unquote(match.group(2))
        pos = match.end()
    return keys


def _conf_uri(service_url: str, group: str, count: str) -> str:
    return f"{service_url}ProdnOrdConf2(ConfirmationGroup='{group}',ConfirmationCount='{count}')"


def _item_uri(service_url: str, item: Mapping[str, Any]) -> str:
    keys = ",".join(f"{k}='{item[k]}'" for k in ITEM_KEYS)
    return f"{service_url}ProdnOrdConfMatlDocItm({keys})"


def _charc_json(service_url: str, charc: Mapping[str, Any]) -> dict[str, Any]:
    keys = ",".join(f"{k}='{charc[k]}'" for k in CHARC_KEYS)
    uri = f"{service_url}ProdnOrderConfBatchCharc({keys})"
    return {
        "__metadata": {"id": uri, "uri": uri, "type": CHARC_TYPE},
        **_item_json(charc, CHARC_PROPS),
    }


def _items_of(record: Confirmation, item: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [
        c
        for c in record.charcs
        if c["MaterialDocument"] == item["MaterialDocument"]
        and c["MaterialDocumentItem"] == item["MaterialDocumentItem"]
    ]


def _item_entity(
    service_url: str, record: Confirmation, item: Mapping[str, Any], expand_charcs: bool
) -> dict[str, Any]:
    uri = _item_uri(service_url, item)
    out: dict[str, Any] = {"__metadata": {"id": uri, "uri": uri, "type": ITEM_TYPE}}
    out.update(_item_json(item, ITEM_PROPS))
    if expand_charcs:
        out[NAV_CHARCS] = {
            "results": [_charc_json(service_url, c) for c in _items_of(record, item)]
        }
    else:
        out[NAV_CHARCS] = {"__deferred": {"uri": f"{uri}/{NAV_CHARCS}"}}
    return out


def _conf_entity(
    service_url: str,
    record: Confirmation,
    *,
    expand: frozenset[str] = frozenset(),
    select: Sequence[str] | None = None,
) -> dict[str, Any]:
    uri = _conf_uri(service_url, record.group, record.count)
    out: dict[str, Any] = {"__metadata": {"id": uri, "uri": uri, "type": CONF_TYPE}}
    entity = record.entity()
    if select:
        entity = {k: v for k, v in entity.items() if k in select}
    out.update(entity)
    if select and NAV_ITEMS not in select and NAV_ITEMS not in expand:
        return out
    if NAV_ITEMS in expand:
        deep = f"{NAV_ITEMS}/{NAV_CHARCS}" in expand
        out[NAV_ITEMS] = {
            "results": [_item_entity(service_url, record, i, deep) for i in record.items]
        }
    else:
        out[NAV_ITEMS] = {"__deferred": {"uri": f"{uri}/{NAV_ITEMS}"}}
    return out


def _function_params(request: Request, spec: Mapping[str, EdmKind]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for name, text in request.query_params.items():
        if name.startswith("$") or name == "sap-client":
            continue
        kind = spec.get(name)
        if kind is None:
            raise bad_request(f"Parameter '{name}' is not a parameter of the function", name)
        try:
            lit = parse_uri_literal(text)
        except (ValueError, InvalidOperation):
            raise bad_request(
                f"Invalid URI literal {text!r} for parameter '{name}'", name
            ) from None
        params[name] = coerce(kind, lit, name)
    return params


Row = tuple[Confirmation, Mapping[str, Any]]


def _apply_query(
    request: Request, rows: list[Row], props: Mapping[str, Prop]
) -> tuple[list[Row], int]:
    q = request.query_params
    if "$filter" in q:
        pred = parse_filter(q["$filter"], props)
        rows = [row for row in rows if pred(row[1])]
    total = len(rows)
    if "$orderby" in q:
        for part in reversed([p.strip() for p in q["$orderby"].split(",") if p.strip()]):
            name, _, direction = part.partition(" ")
            if name not in props:
                raise bad_request(f"Property {name} not found ($orderby)", name)
            desc = direction.strip().lower() == "desc"
            rows.sort(
                key=lambda row, n=name: (
                    (row[1].get(n) is not None, row[1].get(n) or 0)  # type: ignore[misc]
                    if props[n].kind in ("Decimal", "DateTime", "Time", "Byte")
                    else str(row[1].get(n) or "")
                ),
                reverse=desc,
            )
    for opt in ("$skip", "$top"):
        if opt in q:
            text = q[opt]
            if not text.isdigit():
                raise bad_request(f"Invalid value {text!r} for {opt}")
            rows = rows[int(text) :] if opt == "$skip" else rows[: int(text)]
    return rows, total


def _expand_of(request: Request, allowed: set[str]) -> frozenset[str]:
    text = request.query_params.get("$expand", "")
    wanted = frozenset(p.strip() for p in text.split(",") if p.strip())
    for part in wanted:
        if part not in allowed:
            raise bad_request(f"Navigation property {part} cannot be expanded", part)
    if f"{NAV_ITEMS}/{NAV_CHARCS}" in wanted:
        wanted = wanted | {NAV_ITEMS}
    return wanted


def _select_of(request: Request, props: Mapping[str, Prop]) -> list[str] | None:
    text = request.query_params.get("$select")
    if not text:
        return None
    names = [p.strip() for p in text.split(",") if p.strip()]
    for name in names:
        if name not in props and name != NAV_ITEMS and name != "*":
            raise bad_request(f"Property {name} not found ($select)", name)
    return None if "*" in names else names


def _collection(request: Request, results: list[dict[str, Any]], total: int) -> dict[str, Any]:
    d: dict[str, Any] = {"results": results}
    count = request.query_params.get("$inlinecount", "none")
    if count not in ("allpages", "none"):
        raise bad_request(f"Invalid value {count!r} for $inlinecount")
    if count == "allpages":
        d["__count"] = str(total)
    return {"d": d}


class _ServiceHandler:
    """The OData service, one request at a time: faults, auth, CSRF, then the resource."""

    def __init__(self, state: SapState) -> None:
        self.state = state

    async def __call__(self, request: Request, rest: str) -> Response:
        state = self.state
        with state._lock:
            state.requests += 1
        if state.outage:
            return self._reject_outage()
        async with state.limiter.slot():
            await state.delay()
            try:
                fault = state.take_fault(request.method)
                if fault is not None:
                    raise fault
                user = state.check_credentials(request.headers.get("authorization"))
                if user is None:
                    raise state.logon_failed()
                return await self._serve(request, rest, user)
            except odata.SapError as exc:
                return exc.response()

    def _reject_outage(self) -> Response:
        message = self.state.messages["outage"]
        return SapError(
            message.status, message.code, message.text, component="OPU-BSE-SDE"
        ).response()

    def _service_url(self, request: Request) -> str:
        return f"{str(request.base_url).rstrip('/')}{SERVICE_PATH}/"

    async def _serve(self, request: Request, rest: str, user: str) -> Response:
        state = self.state
        method = request.method
        headers: dict[str, str] = {}
        session = request.cookies.get(state.session_cookie)
        new_session: str | None = None
        if method in ("GET", "HEAD"):
            if request.headers.get("x-csrf-token", "").lower() == "fetch":
                sid, token = state.csrf_session(session)
                headers["x-csrf-token"] = token
                if sid != session:
                    new_session = sid
        elif not state.csrf_ok(session, request.headers.get("x-csrf-token")):
            raise SapError(
                403,
                "/IWFND/CM_BEC/403",
                "CSRF token validation failed",
                component="OPU-BSE-SDE",
                headers={"x-csrf-token": "Required"},
            )
        response = await self._route(request, rest.strip("/"), user)
        headers["dataserviceversion"] = "2.0"
        response.headers.update(headers)
        if new_session is not None:
            response.set_cookie(state.session_cookie, new_session, path="/", httponly=True)
            response.set_cookie(
                f"sap-XSRF_{state.system_id}_{state.sap_client}",
                secrets.token_urlsafe(12),
                path=SERVICE_PATH,
                httponly=True,
            )
        return response

    async def _route(self, request: Request, path: str, user: str) -> Response:
        method = request.method
        read = method in ("GET", "HEAD")
        service_url = self._service_url(request)
        sap_client = request.query_params.get("sap-client", self.state.sap_client)
        if path == "":
            if not read:
                raise SapError(405, TECH_CODE, f"Method {method} is not allowed on the service")
            return JSONResponse(
                {
                    "d": {
                        "EntitySets": [
                            "ProdnOrdConf2",
                            "ProdnOrdConfMatlDocItm",
                            "ProdnOrderConfBatchCharc",
                        ]
                    }
                }
            )
        if path == "$metadata":
            if not read:
                raise SapError(405, TECH_CODE, f"Method {method} is not allowed on $metadata")
            return Response(metadata_xml(), media_type="application/xml")
        if path == "ProdnOrdConf2":
            if method == "POST":
                return await self._create(request, user, service_url, sap_client)
            if read:
                return self._list(request, service_url)
            raise SapError(405, TECH_CODE, "ProdnOrdConf2 can only be read and created")
        if path == "ProdnOrdConf2/$count" and read:
            rows: list[Row] = [(r, r.values) for r in self.state.records()]
            _, total = _apply_query(request, rows, CONF_PROPS)
            return Response(str(total), media_type="text/plain")
        if path in ("ProdnOrdConfMatlDocItm", "ProdnOrderConfBatchCharc"):
            if not read:
                raise SapError(405, TECH_CODE, f"{path} can only be read")
            return self._list_items(request, service_url, path == "ProdnOrderConfBatchCharc")
        if path in ("CancelProdnOrdConf", "GetConfProposal", "GetGdsMvtProposal"):
            if method != "POST":
                raise SapError(405, TECH_CODE, f"Function {path} is called with POST")
            if path == "CancelProdnOrdConf":
                return await self._cancel(request, user, service_url, sap_client)
            if path == "GetConfProposal":
                values = self.state.proposal(_function_params(request, _PROPOSAL_PARAMS))
                body = {name: to_json(CONF_PROPS[name], v) for name, v in values.items()}
                return JSONResponse(
                    {"d": {"GetConfProposal": {"__metadata": {"type": PROPOSAL_TYPE}, **body}}}
                )
            items = self.state.gm_proposal(_function_params(request, _PROPOSAL_PARAMS))
            return JSONResponse(
                {
                    "d": {
                        "results": [
                            {"__metadata": {"type": GM_PROPOSAL_TYPE}, **_item_json(i, ITEM_PROPS)}
                            for i in items
                        ]
                    }
                }
            )
        match = _KEY_SEGMENT.match(path)
        if match is not None and read:
            keys = _parse_keys(match.group("keys"))
            if match.group("set") == "ProdnOrdConf2":
                return self._by_key(request, service_url, keys, match.group("nav"))
            if match.group("set") == "ProdnOrdConfMatlDocItm" and not match.group("nav"):
                return self._item_by_key(request, service_url, keys)
        if match is not None and match.group("set") in ("ProdnOrdConf2", "ProdnOrdConfMatlDocItm"):
            raise SapError(405, TECH_CODE, f"Method {method} is not allowed (not updatable)")
        if path == "$batch":
            raise SapError(501, TECH_CODE, "$batch is not implemented by the stand-in")
        raise not_found(f"Resource not found for segment '{path.split('/')[0]}'")

    async def _body(self, request: Request) -> Any:
        raw = await request.body()
        try:
            return json.loads(raw) if raw else None
        except (ValueError, UnicodeDecodeError):
            raise bad_request("The request body is not valid JSON") from None

    async def _after_commit(self, request: Request) -> Response | None:
        what = self.state.take_after_commit()
        if what is None:
            return None
        kind, delay = what
        if kind == "drop":
            transport = request.scope.get(TRANSPORT_KEY)
            if transport is not None:
                transport.close()
            for _ in range(3):
                await asyncio.sleep(0)
            return Response(status_code=500)
        if delay > 0:
            await asyncio.sleep(delay)
        return Response(
            "<html><head><title>504 Gateway Time-out</title></head><body><h1>Gateway Time-out"
            "</h1><p>The request timed out; its outcome is unknown.</p></body></html>",
            status_code=504,
            media_type="text/html",
        )

    async def _create(
        self, request: Request, user: str, service_url: str, sap_client: str
    ) -> Response:
        body = await self._body(request)
        late = self.state.take_late_commit()
        if late is not None:
            await asyncio.sleep(late)
        record = self.state.create(body, user, sap_client)
        dropped = await self._after_commit(request)
        if dropped is not None:
            return dropped
        expand = (
            frozenset({NAV_ITEMS, f"{NAV_ITEMS}/{NAV_CHARCS}"}) if record.items else frozenset()
        )
        entity = _conf_entity(service_url, record, expand=expand)
        return JSONResponse(
            {"d": entity},
            status_code=201,
            headers={"location": entity["__metadata"]["uri"]},
        )

    async def _cancel(
        self, request: Request, user: str, service_url: str, sap_client: str
    ) -> Response:
        params = _function_params(request, _CANCEL_PARAMS)
        record = self.state.cancel(params, user, sap_client)
        dropped = await self._after_commit(request)
        if dropped is not None:
            return dropped
        return JSONResponse({"d": _conf_entity(service_url, record)})

    def _list(self, request: Request, service_url: str) -> Response:
        rows: list[Row] = [(r, r.values) for r in self.state.records()]
        expand = _expand_of(request, {NAV_ITEMS, f"{NAV_ITEMS}/{NAV_CHARCS}"})
        select = _select_of(request, CONF_PROPS)
        rows, total = _apply_query(request, rows, CONF_PROPS)
        results = [_conf_entity(service_url, r, expand=expand, select=select) for r, _ in rows]
        return JSONResponse(_collection(request, results, total))

    def _list_items(self, request: Request, service_url: str, charcs: bool) -> Response:
        records = self.state.records()
        if charcs:
            crows: list[Row] = [(r, c) for r in records for c in r.charcs]
            crows, total = _apply_query(request, crows, CHARC_PROPS)
            results = [_charc_json(service_url, c) for _, c in crows]
            return JSONResponse(_collection(request, results, total))
        expand = _expand_of(request, {NAV_CHARCS})
        rows: list[Row] = [(r, i) for r in records for i in r.items]
        rows, total = _apply_query(request, rows, ITEM_PROPS)
        results = [_item_entity(service_url, r, i, NAV_CHARCS in expand) for r, i in rows]
        return JSONResponse(_collection(request, results, total))

    def _find(self, keys: Mapping[str, str]) -> Confirmation:
        if set(keys) != set(CONF_KEYS):
            raise bad_request("Key predicate needs ConfirmationGroup and ConfirmationCount")
        found = self.state.record(keys["ConfirmationGroup"], keys["ConfirmationCount"])
        if found is not None:
            return found
        raise not_found(
            f"Resource not found for segment 'ProdnOrdConf2Type' "
            f"(ConfirmationGroup='{keys['ConfirmationGroup']}',"
            f"ConfirmationCount='{keys['ConfirmationCount']}')"
        )

    def _by_key(
        self, request: Request, service_url: str, keys: Mapping[str, str], nav: str | None
    ) -> Response:
        record = self._find(keys)
        if nav is None:
            expand = _expand_of(request, {NAV_ITEMS, f"{NAV_ITEMS}/{NAV_CHARCS}"})
            select = _select_of(request, CONF_PROPS)
            return JSONResponse(
                {"d": _conf_entity(service_url, record, expand=expand, select=select)}
            )
        if nav != NAV_ITEMS:
            raise not_found(f"Resource not found for segment '{nav}'")
        expand = _expand_of(request, {NAV_CHARCS})
        rows: list[Row] = [(record, i) for i in record.items]
        rows, total = _apply_query(request, rows, ITEM_PROPS)
        results = [_item_entity(service_url, record, i, NAV_CHARCS in expand) for _, i in rows]
        return JSONResponse(_collection(request, results, total))

    def _item_by_key(self, request: Request, service_url: str, keys: Mapping[str, str]) -> Response:
        if set(keys) != set(ITEM_KEYS):
            raise bad_request("Key predicate needs the five keys of ProdnOrdConfMatlDocItm")
        for r in self.state.records():
            for item in r.items:
                if all(alpha(str(item[k])) == alpha(keys[k]) for k in ITEM_KEYS):
                    expand = _expand_of(request, {NAV_CHARCS})
                    return JSONResponse(
                        {"d": _item_entity(service_url, r, item, NAV_CHARCS in expand)}
                    )
        raise not_found("Resource not found for segment 'ProdnOrdConfMatlDocItmType'")


# Control API bodies


class _N(BaseModel):
    n: int = 1


class _FailNext(BaseModel):
    n: int = 1
    status: int = 500
    code: str | None = None
    text: str | None = None
    method: str | None = None


class _TimeoutAfter(BaseModel):
    n: int = 1
    delay_s: float = 0.0


class _Latency(BaseModel):
    min_s: float | None = None
    max_s: float | None = None
    latency: str | None = None  # "0.05-0.2" or "0.1"


class _On(BaseModel):
    on: bool = True


class _Limit(BaseModel):
    limit: int | None = None


class _LockOrder(BaseModel):
    order_id: str
    user: str = "MUELLER"
    times: int | None = None


class _OrderId(BaseModel):
    order_id: str
    released: bool = True


class _Order(BaseModel):
    order_id: str
    released: bool = True
    planned_qty: str | None = None
    tolerance_pct: str = "0"
    unit: str = "PC"
    material: str = ""
    plant: str = ""
    order_type: str = "PP01"
    operations: list[str] = []


class _Operation(BaseModel):
    order_id: str
    operation: str
    sequence: str = "0"
    confirmation_group: str | None = None
    planned_qty: str | None = None
    tolerance_pct: str | None = None
    unit: str | None = None
    released: bool | None = None
    work_center: str = ""
    activities: list[tuple[str, str]] = []


class _Component(BaseModel):
    order_id: str
    material: str
    qty_per_unit: str
    unit: str
    backflush: bool = False
    batch_managed: bool = False
    batch: str = ""
    reservation: str = ""
    reservation_item: str = ""


class _Period(BaseModel):
    closed: bool = True
    before: date | None = None


class _Reasons(BaseModel):
    codes: list[str] | None = None


class _MessageBody(BaseModel):
    code: str | None = None
    text: str | None = None
    status: int | None = None


def create_app(state: SapState) -> FastAPI:
    """The stand-in's ASGI app: the OData service, the token endpoint and ``/_control``.

    Control endpoints (JSON bodies, all optional fields as in :class:`SapState`'s methods):
    ``GET /_control/ledger``, ``GET /_control/stats``, ``POST /_control/latency``
    ``{"min_s","max_s"}`` or ``{"latency": "0.05-0.2"}``, ``/outage {"on"}``, ``/fail_next
    {"n","status","code","text","method"}``, ``/drop_after_commit {"n"}``,
    ``/timeout_after_commit {"n","delay_s"}``, ``/commit_late {"n","delay_s"}``,
    ``/goods_movement_fails {"n"}``,
    ``/max_concurrency {"limit"}``, ``/lock_order {"order_id","user","times"}``,
    ``/unlock_order {"order_id"}``, ``/release_order {"order_id","released"}``, ``/orders``
    (register an order), ``/operations`` (register an operation), ``/components`` (register a
    component: ``{"order_id","material","qty_per_unit","unit","backflush","batch_managed",
    "batch"}``), ``/period {"closed","before"}``,
    ``/variance_reasons {"codes"}``, ``/messages/{rule} {"code","text","status"}``,
    ``/expire_csrf``, ``/expire_tokens``, ``/reset_faults``, ``/clear_ledger``."""
    app = FastAPI(title="SAP S/4HANA stand-in", openapi_url=None, docs_url=None, redoc_url=None)
    handler = _ServiceHandler(state)
    methods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "MERGE"]

    @app.api_route(SERVICE_PATH, methods=methods, include_in_schema=False)
    async def service_root(request: Request) -> Response:
        return await handler(request, "")

    @app.api_route(SERVICE_PATH + "/{rest:path}", methods=methods, include_in_schema=False)
    async def service(request: Request, rest: str) -> Response:
        return await handler(request, rest)

    @app.post(odata.TOKEN_PATH)
    async def token(request: Request) -> Response:
        if state.outage:
            return handler._reject_outage()
        await state.delay()
        return await odata.token_response(state, request, invalid_client_status=400)

    ok = {"ok": True}

    @app.get(CONTROL_PATH + "/ledger")
    async def ledger() -> dict[str, Any]:
        return state.ledger_json()

    @app.get(CONTROL_PATH + "/stats")
    async def stats() -> dict[str, Any]:
        return state.stats()

    @app.post(CONTROL_PATH + "/latency")
    async def latency(body: _Latency) -> dict[str, Any]:
        if body.latency is not None:
            state.set_latency(parse_latency(body.latency))
        elif body.min_s is None:
            state.set_latency(None)
        else:
            state.set_latency((body.min_s, body.max_s if body.max_s is not None else body.min_s))
        return ok

    def set_period(body: _Period) -> None:
        if body.closed:
            state.close_posting_period(body.before)
        else:
            state.open_posting_period()

    # name -> (body, what it does)
    with_body: dict[str, tuple[type[BaseModel], Callable[[Any], object]]] = {
        "outage": (_On, lambda b: state.set_outage(b.on)),
        "fail_next": (
            _FailNext,
            lambda b: state.fail_next(b.n, b.status, code=b.code, text=b.text, method=b.method),
        ),
        "drop_after_commit": (_N, lambda b: state.drop_after_commit(b.n)),
        "timeout_after_commit": (
            _TimeoutAfter,
            lambda b: state.timeout_after_commit(b.n, b.delay_s),
        ),
        "commit_late": (_TimeoutAfter, lambda b: state.commit_late(b.n, b.delay_s)),
        "goods_movement_fails": (_N, lambda b: state.goods_movement_fails(b.n)),
        "max_concurrency": (_Limit, lambda b: state.set_max_concurrency(b.limit)),
        "lock_order": (_LockOrder, lambda b: state.lock_order(b.order_id, b.user, b.times)),
        "unlock_order": (_OrderId, lambda b: state.unlock_order(b.order_id)),
        "release_order": (_OrderId, lambda b: state.release_order(b.order_id, b.released)),
        "orders": (
            _Order,
            lambda b: state.register_order(b.order_id, **b.model_dump(exclude={"order_id"})),
        ),
        "operations": (
            _Operation,
            lambda b: state.register_operation(
                b.order_id, b.operation, **b.model_dump(exclude={"order_id", "operation"})
            ),
        ),
        "components": (
            _Component,
            lambda b: state.register_component(
                b.order_id, b.material, **b.model_dump(exclude={"order_id", "material"})
            ),
        ),
        "period": (_Period, set_period),
        "variance_reasons": (_Reasons, lambda b: state.set_variance_reasons(b.codes)),
    }

    def body_endpoint(
        model: type[BaseModel], action: Callable[[Any], object]
    ) -> Callable[[BaseModel], Awaitable[dict[str, Any]]]:
        async def run(body: BaseModel) -> dict[str, Any]:
            action(body)
            return ok

        run.__annotations__["body"] = model  # the model FastAPI reads the body into
        return run

    for name, (model, act) in with_body.items():
        app.add_api_route(
            f"{CONTROL_PATH}/{name}", body_endpoint(model, act), methods=["POST"], name=name
        )

    @app.post(CONTROL_PATH + "/messages/{rule}")
    async def message(rule: str, body: _MessageBody) -> Response:
        if rule not in DEFAULT_MESSAGES:
            return JSONResponse({"error": f"no rule {rule!r}"}, status_code=404)
        state.set_message(rule, code=body.code, text=body.text, status=body.status)
        return JSONResponse(ok)

    simple: dict[str, Callable[[], None]] = {
        "expire_csrf": state.expire_csrf_tokens,
        "expire_tokens": state.expire_tokens,
        "reset_faults": state.reset_faults,
        "clear_ledger": state.clear_ledger,
    }

    def endpoint(action: Callable[[], None]) -> Callable[[], Awaitable[dict[str, Any]]]:
        async def run() -> dict[str, Any]:
            action()
            return ok

        return run

    for name, action in simple.items():
        app.add_api_route(f"{CONTROL_PATH}/{name}", endpoint(action), methods=["POST"], name=name)

    return app


# ---------------------------------------------------------------------------------------------
# The runner


class _Protocol(H11Protocol):
    """uvicorn's h11 protocol, handing the app its connection's transport (in the scope) so the
    stand-in can close a connection without answering (commit then drop)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        inner: ASGIApp = self.app

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            scope[TRANSPORT_KEY] = self.transport
            await inner(scope, receive, send)

        self.app = app


class SapStandIn(odata.ServiceStandIn[SapState]):
    """The stand-in served by uvicorn on a thread of its own (its own event loop).

    ``async with SapStandIn(...) as sap`` or ``with SapStandIn(...) as sap`` or
    ``start()``/``stop()``. ``port=None`` picks a free port. Every other keyword goes to
    :class:`SapState` (``user``, ``password``, ``client_id``, ``client_secret``,
    ``sap_client``, ``latency_s``, ``max_concurrency``, ``ledger_path``, ...)."""

    service_path = SERVICE_PATH
    label = "SAP stand-in"
    thread_name = "sap-standin"
    uvicorn_settings: ClassVar[dict[str, Any]] = {
        "http": _Protocol,
        "proxy_headers": False,
        "timeout_keep_alive": 30,
    }
    state_class = SapState
    _app = staticmethod(create_app)

    @property
    def control_url(self) -> str:
        return f"{self.base}{CONTROL_PATH}"

    def _on_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        def wake() -> None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nothing waits
                loop.call_soon_threadsafe(self.state.limiter.wake)

        self.state.on_limit_change(wake)

    def _on_stop(self) -> None:
        self.state.on_limit_change(None)

    def close(self) -> None:
        self.stop()
        self.state.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m simulators.erp.sap",
        description="SAP S/4HANA stand-in (API_PROD_ORDER_CONFIRMATION_2_SRV)",
    )
    odata.add_service_arguments(parser)
    parser.add_argument("--sap-client", default="100")
    parser.add_argument("--latency", default=None, help="seconds: 0.1 or a range 0.05-0.2")
    parser.add_argument("--max-concurrency", type=int, default=None)
    parser.add_argument("--ledger", default=None, help="SQLite file that keeps the ledger")
    parser.add_argument("--no-csrf", action="store_true", help="do not require CSRF tokens")
    parser.add_argument("--strict-orders", action="store_true", help="reject orders not registered")
    args = parser.parse_args(argv)
    stand_in = SapStandIn(
        **odata.service_arguments(args),
        sap_client=args.sap_client,
        latency_s=parse_latency(args.latency) if args.latency else None,
        max_concurrency=args.max_concurrency,
        ledger_path=args.ledger,
        require_csrf=not args.no_csrf,
        accept_unknown_orders=not args.strict_orders,
    )
    return run_until_signal(
        stand_in,
        lambda: (
            f"SAP stand-in serving {stand_in.url}",
            f"token endpoint {stand_in.token_url}",
            f"control {stand_in.control_url}",
        ),
        "SAP stand-in stopped",
    )


if __name__ == "__main__":
    sys.exit(main())
