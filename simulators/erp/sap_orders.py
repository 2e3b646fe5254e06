"""A stand-in for SAP S/4HANA's production order service (OData V2
``API_PRODUCTION_ORDER_2_SRV``): the ERP the relay reads released orders from.

From a test::

    async with SapOrdersStandIn(user="RELAY", password="pw") as sap:
        sap.state.add_order("1000123", material="FG-100", quantity=100, plant="1010",
                            end=datetime(2025, 3, 4, 16, 0))
        sap.state.add_operation("1000123", "0010", work_center="WC-4711",
                                setup=(30, "MIN"), run=(1.5, "MIN"),
                                start=datetime(2025, 3, 4, 6, 0), end=datetime(2025, 3, 4, 9, 0))
        sap.state.lock("1000123")            # held
        sap.state.confirm("1000123", "0010")  # gone from the released list
        ...  # read it at sap.url (Basic) or with a token from sap.token_url (OAuth 2)

From another process (a demo)::

    python -m simulators.erp.sap_orders --port 8301 --user RELAY --password pw

which serves a few demo orders and prints the service URL until SIGTERM/SIGINT.

URLs (``base`` = ``http://127.0.0.1:<port>``):

- ``{base}/sap/opu/odata/sap/API_PRODUCTION_ORDER_2_SRV/`` (:attr:`SapOrdersStandIn.url`):
  ``GET``/``HEAD`` (service document; ``x-csrf-token: Fetch`` hands out a token, though nothing here
  modifies), ``GET $metadata`` (EDMX of the entity types served), ``GET A_ProductionOrder_2`` and
  ``A_ProductionOrder_2('1000123')`` (also ``(ManufacturingOrder='1000123')``) with its
  ``/to_ProductionOrderOperation``, ``/to_ProductionOrderStatus`` and
  ``/to_ProductionOrderComponent``, ``GET A_ProductionOrderOperation_2`` and its key
  ``(OrderInternalBillOfOperations='…',OrderIntBillOfOperationsItem='…')``, ``GET
  A_ProductionOrderStatus_2``, ``GET A_ProductionOrderComponent_2`` and its key
  ``(Reservation='…',ReservationItem='…')``. Query options: ``$filter`` (``eq ne gt ge lt le``,
  ``and``, ``or``, ``not``, parentheses; literals ``'…'``, ``datetime'…'``, ``time'…'``, ``95M``,
  ``true``, ``null``), ``$orderby``, ``$top``, ``$skip``, ``$inlinecount=allpages``, ``$select``,
  ``$expand=to_ProductionOrderOperation,to_ProductionOrderStatus,to_ProductionOrderComponent``
  (headers), ``$format=json``; ``sap-client`` is accepted. Answers are verbose OData V2 JSON:
  ``{"d": {...}}``, collections ``{"d": {"results": [...]}}``, each entity with ``__metadata``
  (``id``, ``uri``, ``type``, and an ``etag`` from ``LastChangeDateTime``), decimals as strings with
  their scale, dates ``/Date(ms)/`` (the local calendar day as UTC midnight), times ``PThhHmmMssS``
  (local), flags ``"X"``/``""``, ``LastChangeDateTime`` as ``YYYYMMDDhhmmss`` (UTC). Modifying
  methods answer 405: the stand-in is read-only over HTTP.
- ``{base}/oauth/token`` (:attr:`SapOrdersStandIn.token_url`): OAuth 2 client credentials
  (form fields or HTTP Basic), as the confirmation stand-in's.

Authentication: HTTP Basic with the configured user and password, or ``Authorization:
Bearer`` with a token from the token endpoint; else 401 with SAP Gateway's error body.

Two shapes (``standard_values``): ``True`` (the default) serves the fields later releases add
to operations (``WorkCenterStandardWorkQty1..6``, their units with ISO and SAP codes,
``OrderOperationLongText``, processing and teardown starts); ``False`` serves the 2021
export's shape, without them (in the answers and in ``$metadata``).

The control API (:class:`SapOrdersState`, thread-safe, for a test to script an ERP's day):
:meth:`~SapOrdersState.add_order`, :meth:`~SapOrdersState.add_operation`,
:meth:`~SapOrdersState.release`, :meth:`~SapOrdersState.lock`,
:meth:`~SapOrdersState.unlock`, :meth:`~SapOrdersState.set_user_status`,
:meth:`~SapOrdersState.mark_for_deletion`, :meth:`~SapOrdersState.delete_order`,
:meth:`~SapOrdersState.technically_complete`, :meth:`~SapOrdersState.close_order`,
:meth:`~SapOrdersState.delete_operation`, :meth:`~SapOrdersState.set_quantity`,
:meth:`~SapOrdersState.set_dates`, :meth:`~SapOrdersState.confirm`,
:meth:`~SapOrdersState.move_operation`, :meth:`~SapOrdersState.add_component` /
:meth:`~SapOrdersState.set_component` (an order's components, one reservation per order, its
items ``0001``, ``0002``, …; a property's JSON value as it is, for what SAP should not send),
:meth:`~SapOrdersState.set_fields` (any JSON value,
to serve what SAP should not send), :meth:`~SapOrdersState.remove_order` (archived: gone).
Server-driven paging: :attr:`SapOrdersState.max_page` (at most so many entities per answer,
with a ``__next`` link). :attr:`SapOrdersState.unfilterable`: properties a ``$filter`` may not
name (400), as in a release where they are not ``sap:filterable``. Every change made through the
control API moves ``LastChangeDateTime`` of the order and of the operation it touches (a change
of the header alone, such as a lock, a user status or the order's technical completion, moves
the header's only). Faults: :meth:`~SapOrdersState.set_outage` (503),
:meth:`~SapOrdersState.set_latency`, :meth:`~SapOrdersState.fail_next` (``n`` requests, or
those under a ``path``, answer ``status``), :meth:`~SapOrdersState.expire_tokens`. What was
asked: :attr:`SapOrdersState.requests` (each service request's path and decoded query, the
latest 10,000).

Choices of the stand-in where the reference leaves SAP's behaviour open (none is a fact about SAP):
every status flag is filterable; a component has the fields the 2021 service's published reads show
(``Material``, ``RequiredQuantity`` for the order, ``BaseUnit``,
``ManufacturingOrderOperation``/``Sequence``, ``MatlCompIsMarkedForBackflush``, ``Batch``,
``IsBulkMaterialComponent``, ``MaterialComponentIsPhantomItem``, ``MatlCompIsMarkedForDeletion``,
``GoodsMovementType``, …), and a change of one moves the order's ``LastChangeDateTime`` (the
component has none of its own); keys and ``ManufacturingOrder`` compare with leading zeros ignored
(SAP's ALPHA conversion) and are answered in the form they were added in; the status rows are
derived from the flags with the system status codes I0001 CRTD, I0002 REL, I0042 PREL, I0043 LKD,
I0045 TECO, I0046 CLSD, I0076 DLFL, I0013 DLT, I0009 CNF, I0010 PCNF, and user statuses get E0001,
E0002, … in the order they are first used; the outage's message code is ``/IWFND/CM_BEC/026``;
technically completing or closing an order leaves its operations' own flags alone.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import re
import secrets
import sys
import urllib.parse
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Final, Literal, Unpack
from xml.sax.saxutils import quoteattr

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from simulators.erp import odata
from simulators.erp.odata import TECH_CODE, Predicate, alpha, unquote
from simulators.erp.serve import run_until_signal

__all__ = [
    "ABSENT",
    "NAV_COMPONENTS",
    "NAV_OPERATIONS",
    "NAV_STATUS",
    "SERVICE",
    "SERVICE_PATH",
    "Component",
    "Operation",
    "Order",
    "SapOrdersStandIn",
    "SapOrdersState",
    "StandardValue",
    "add_demo_orders",
    "create_app",
    "main",
    "metadata_xml",
    "mount",
]

SERVICE: Final = "API_PRODUCTION_ORDER_2_SRV"
SERVICE_PATH: Final = f"/sap/opu/odata/sap/{SERVICE}"
ORDERS: Final = "A_ProductionOrder_2"
OPERATIONS: Final = "A_ProductionOrderOperation_2"
STATUSES: Final = "A_ProductionOrderStatus_2"
NAV_OPERATIONS: Final = "to_ProductionOrderOperation"
NAV_STATUS: Final = "to_ProductionOrderStatus"
NAV_COMPONENTS: Final = "to_ProductionOrderComponent"
COMPONENTS: Final = "A_ProductionOrderComponent_2"

# ---------------------------------------------------------------------------------------------
# The entity types

Kind = Literal["String", "Decimal", "DateTime", "Time", "Boolean", "Int32"]


@dataclass(frozen=True, slots=True)
class Prop:
    name: str
    kind: Kind
    length: int = 0  # String: MaxLength (0: none); Decimal: Precision
    scale: int = 0


def _strings(length: int, *names: str) -> list[Prop]:
    return [Prop(n, "String", length) for n in names]


def _date_time(*prefixes: tuple[str, str]) -> list[Prop]:
    out: list[Prop] = []
    for date_name, time_name in prefixes:
        out += [Prop(date_name, "DateTime"), Prop(time_name, "Time")]
    return out


ORDER_FLAGS: Final = (
    "OrderIsCreated",
    "OrderIsReleased",
    "OrderIsPrinted",
    "OrderIsConfirmed",
    "OrderIsPartiallyConfirmed",
    "OrderIsDelivered",
    "OrderIsDeleted",
    "OrderIsPreCosted",
    "SettlementRuleIsCreated",
    "OrderIsPartiallyReleased",
    "OrderIsLocked",
    "OrderIsTechnicallyCompleted",
    "OrderIsClosed",
    "OrderIsPartiallyDelivered",
    "OrderIsMarkedForDeletion",
    "SettlementRuleIsCrtedManually",
    "OrderIsScheduled",
    "OrderHasGeneratedOperations",
    "OrderIsToBeHandledInBatches",
    "MaterialAvailyIsNotChecked",
)
OPERATION_FLAGS: Final = (
    "OperationIsCreated",
    "OperationIsReleased",
    "OperationIsPrinted",
    "OperationIsConfirmed",
    "OperationIsPartiallyConfirmed",
    "OperationIsDeleted",
    "OperationIsTechlyCompleted",
    "OperationIsClosed",
    "OperationIsScheduled",
    "OperationIsPartiallyDelivered",
    "OperationIsDelivered",
)

ORDER_PROPS: Final[tuple[Prop, ...]] = (
    Prop("ManufacturingOrder", "String", 12),
    Prop("ManufacturingOrderCategory", "String", 2),
    Prop("ManufacturingOrderType", "String", 4),
    Prop("OrderLongText", "String"),
    *_strings(1, *ORDER_FLAGS),
    *_date_time(("MfgOrderCreationDate", "MfgOrderCreationTime")),
    Prop("LastChangeDateTime", "String", 14),
    Prop("Material", "String", 40),
    Prop("StorageLocation", "String", 4),
    Prop("OrderInternalBillOfOperations", "String", 10),
    *_strings(4, "ProductionPlant", "Plant"),
    *_strings(3, "MRPController", "ProductionSupervisor"),
    Prop("ProductionVersion", "String", 4),
    *_date_time(
        ("MfgOrderPlannedStartDate", "MfgOrderPlannedStartTime"),
        ("MfgOrderPlannedEndDate", "MfgOrderPlannedEndTime"),
        ("MfgOrderScheduledStartDate", "MfgOrderScheduledStartTime"),
        ("MfgOrderScheduledEndDate", "MfgOrderScheduledEndTime"),
    ),
    Prop("MfgOrderActualReleaseDate", "DateTime"),
    *_strings(3, "ProductionUnit", "ProductionUnitISOCode", "ProductionUnitSAPCode"),
    Prop("TotalQuantity", "Decimal", 13, 3),
    Prop("MfgOrderPlannedScrapQty", "Decimal", 13, 3),
    Prop("MfgOrderConfirmedYieldQty", "Decimal", 13, 3),
)

OPERATION_PROPS_2021: Final[tuple[Prop, ...]] = (
    Prop("OrderInternalBillOfOperations", "String", 10),
    Prop("OrderIntBillOfOperationsItem", "String", 8),
    Prop("ManufacturingOrder", "String", 12),
    Prop("ManufacturingOrderSequence", "String", 6),
    Prop("MfgOrderSequenceText", "String", 40),
    Prop("ManufacturingOrderOperation", "String", 4),
    Prop("ManufacturingOrderSubOperation", "String", 4),
    Prop("ManufacturingOrderCategory", "String", 2),
    Prop("ManufacturingOrderType", "String", 4),
    Prop("MfgOrderOperationText", "String", 40),
    *_strings(1, *OPERATION_FLAGS),
    Prop("ProductionPlant", "String", 4),
    Prop("WorkCenterInternalID", "String", 8),
    Prop("WorkCenterTypeCode", "String", 1),
    Prop("WorkCenter", "String", 8),
    Prop("OperationControlProfile", "String", 4),
    *_date_time(
        ("OpErlstSchedldExecStrtDte", "OpErlstSchedldExecStrtTme"),
        ("OpErlstSchedldExecEndDte", "OpErlstSchedldExecEndTme"),
        ("OpActualExecutionStartDate", "OpActualExecutionStartTime"),
        ("OpActualExecutionEndDate", "OpActualExecutionEndTime"),
    ),
    Prop("ErlstSchedldExecDurnInWorkdays", "Int32"),
    Prop("OpActualExecutionDays", "Int32"),
    *_strings(3, "OperationUnit", "OperationUnitISOCode", "OperationUnitSAPCode"),
    Prop("OpPlannedTotalQuantity", "Decimal", 13, 3),
    Prop("OpTotalConfirmedYieldQty", "Decimal", 13, 3),
    Prop("LastChangeDateTime", "String", 14),
)


def _standard_value_props() -> tuple[Prop, ...]:
    props = [
        Prop("OrderOperationLongText", "String"),
        Prop("OrderSequenceLongText", "String"),
        *_date_time(
            ("OpErlstSchedldProcgStrtDte", "OpErlstSchedldProcgStrtTme"),
            ("OpErlstSchedldTrdwnStrtDte", "OpErlstSchedldTrdwnStrtTme"),
        ),
    ]
    for n in range(1, 7):
        props += [
            Prop(f"WorkCenterStandardWorkQtyUnit{n}", "String", 3),
            Prop(f"StdWrkQtyUnit{n}ISOCode", "String", 3),
            Prop(f"StdWrkQtyUnit{n}SAPCode", "String", 3),
            Prop(f"WorkCenterStandardWorkQty{n}", "Decimal", 9, 3),
        ]
    return tuple(props)


STANDARD_VALUE_PROPS: Final = _standard_value_props()

STATUS_PROPS: Final[tuple[Prop, ...]] = (
    Prop("ManufacturingOrder", "String", 12),
    Prop("StatusCode", "String", 5),
    Prop("IsUserStatus", "Boolean"),
    Prop("StatusShortName", "String", 4),
    Prop("StatusName", "String", 30),
)

COMPONENT_PROPS: Final[tuple[Prop, ...]] = (
    Prop("Reservation", "String", 10),
    Prop("ReservationItem", "String", 4),
    Prop("Material", "String", 40),
    Prop("Plant", "String", 4),
    Prop("ManufacturingOrder", "String", 12),
    Prop("ManufacturingOrderSequence", "String", 6),
    Prop("ManufacturingOrderOperation", "String", 4),
    Prop("OrderInternalBillOfOperations", "String", 10),
    *_date_time(("MatlCompRequirementDate", "MatlCompRequirementTime")),
    Prop("ReservationIsFinallyIssued", "Boolean"),
    Prop("IsBulkMaterialComponent", "Boolean"),
    Prop("MatlCompIsMarkedForBackflush", "Boolean"),
    Prop("MatlCompIsMarkedForDeletion", "Boolean"),
    Prop("MaterialComponentIsPhantomItem", "Boolean"),
    Prop("StorageLocation", "String", 4),
    Prop("Batch", "String", 10),
    Prop("GoodsMovementType", "String", 3),
    Prop("BaseUnit", "String", 3),
    Prop("RequiredQuantity", "Decimal", 13, 3),
    Prop("WithdrawnQuantity", "Decimal", 13, 3),
)

_KEYS: Final[dict[str, tuple[str, ...]]] = {
    ORDERS: ("ManufacturingOrder",),
    OPERATIONS: ("OrderInternalBillOfOperations", "OrderIntBillOfOperationsItem"),
    STATUSES: ("ManufacturingOrder", "StatusCode"),
    COMPONENTS: ("Reservation", "ReservationItem"),
}
# Compared with leading zeros ignored (SAP's ALPHA conversion of numeric keys).
_ALPHA: Final = frozenset(
    {"ManufacturingOrder", "OrderInternalBillOfOperations", "OrderIntBillOfOperationsItem"}
)
_ISO_UNITS: Final = {"S": "SEC", "MIN": "MIN", "H": "HUR", "HR": "HUR", "STD": "HUR", "PC": "PCE"}
_SYSTEM_STATUSES: Final = (
    # (order flag, code, short name, name), in the order SAP lists them
    ("OrderIsCreated", "I0001", "CRTD", "Created"),
    ("OrderIsReleased", "I0002", "REL", "Released"),
    ("OrderIsPartiallyReleased", "I0042", "PREL", "Partially released"),
    ("OrderIsPartiallyConfirmed", "I0010", "PCNF", "Partially confirmed"),
    ("OrderIsConfirmed", "I0009", "CNF", "Confirmed"),
    ("OrderIsLocked", "I0043", "LKD", "Locked"),
    ("OrderIsTechnicallyCompleted", "I0045", "TECO", "Technically completed"),
    ("OrderIsClosed", "I0046", "CLSD", "Closed"),
    ("OrderIsMarkedForDeletion", "I0076", "DLFL", "Deletion flag"),
    ("OrderIsDeleted", "I0013", "DLT", "Deletion indicator"),
)


# ---------------------------------------------------------------------------------------------
# Errors


class SapError(odata.SapError):
    """An answer in SAP Gateway's OData V2 error shape."""

    service = SERVICE


_bad_request = SapError.bad_request
_not_found = SapError.not_found


# ---------------------------------------------------------------------------------------------
# Literals


def _date_json(day: date | None) -> str | None:
    if day is None:
        return None
    midnight = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return odata.fmt_date(int(midnight.timestamp()) * 1000)


def _time_json(moment: datetime | None) -> str:
    if moment is None:
        return odata.fmt_time(0)
    return odata.fmt_time(moment.hour * 3600 + moment.minute * 60 + moment.second)


_decimal_json = odata.fmt_decimal


def _stamp(moment: datetime) -> str:
    return f"{moment.astimezone(UTC):%Y%m%d%H%M%S}"


def _flag(on: bool) -> str:
    return "X" if on else ""


def _time_seconds(text: str) -> int | None:
    return odata.parse_time(text, time_of_day=False)


def _as_decimal(value: Decimal | int | float | str) -> Decimal:
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"not a number: {value!r}") from None
    if not number.is_finite():
        raise ValueError(f"not a finite number: {value!r}")
    return number


# ---------------------------------------------------------------------------------------------
# $filter, over the JSON values of an entity


def _comparable(prop: Prop, value: Any) -> Any:
    """A JSON value of ``prop`` in a form Python compares as OData does."""
    if value is None:
        return None
    if prop.kind == "String":
        text = str(value)
        return alpha(text) if prop.name in _ALPHA else text
    if prop.kind == "Decimal":
        try:
            return Decimal(str(value))
        except InvalidOperation:
            return None
    if prop.kind == "DateTime":
        match = odata.DATE_JSON.match(str(value))
        return int(match.group(1)) if match else None
    if prop.kind == "Time":
        return _time_seconds(str(value))
    return value


def _literal(prop: Prop, kind: str, text: str) -> Any:
    """A URI literal as a comparable value of ``prop``'s type (400 when it does not fit)."""
    wrong = _bad_request(f"Invalid literal {text} for property {prop.name} (Edm.{prop.kind})")
    if kind == "word" and text == "null":
        return None
    if prop.kind == "String":
        if kind != "str":
            raise wrong
        value = unquote(text)
        return alpha(value) if prop.name in _ALPHA else value
    if prop.kind in ("Decimal", "Int32"):
        if kind != "num":
            raise wrong
        number = Decimal(text.rstrip("MmDdLlFf"))
        return int(number) if prop.kind == "Int32" else number
    if prop.kind == "Boolean":
        if kind != "word" or text not in ("true", "false"):
            raise wrong
        return text == "true"
    prefix, _, rest = text.partition("'")
    inner = unquote("'" + rest) if kind == "typed" else ""
    if prop.kind == "Time":
        seconds = _time_seconds(inner) if prefix == "time" else None
        if seconds is None:
            raise wrong
        return seconds
    if prefix not in ("datetime", "datetimeoffset"):
        raise wrong
    try:
        return odata.datetime_ms(inner)
    except ValueError:
        raise wrong from None


class _Filter(odata.Filter[Prop]):
    tokens = odata.uri_tokens()
    at_text = "Invalid filter expression: {text!r} (at {pos})"

    def __init__(
        self,
        text: str,
        props: Mapping[str, Prop],
        type_name: str,
        unfilterable: frozenset[str] = frozenset(),
    ) -> None:
        self.props = props
        self.type_name = type_name
        self.unfilterable = unfilterable
        super().__init__(text)

    def error(self, message: str) -> Exception:
        return _bad_request(message)

    def field(self, kind: str, name: str) -> Prop:
        prop = self.props.get(name) if kind == "word" else None
        if prop is None:
            raise _bad_request(f"Property {name} not found in type {self.type_name}")
        if name in self.unfilterable:
            # sap:filterable="false" (the text is the stand-in's; SAP's is not confirmed)
            raise _bad_request(f"Property {name} of type {self.type_name} is not filterable")
        return prop

    def leaf(self, prop: Prop, op: str, literal: tuple[str, str]) -> Predicate:
        wanted = _literal(prop, *literal)
        return lambda row: odata.compare(op, _comparable(prop, row.get(prop.name)), wanted)


# ---------------------------------------------------------------------------------------------
# The orders


@dataclass(frozen=True, slots=True)
class StandardValue:
    """One standard value of an operation (``WorkCenterStandardWorkQty<n>`` and its unit)."""

    quantity: Decimal
    unit: str


def _standard(value: StandardValue | tuple[Any, str] | None) -> StandardValue | None:
    if value is None or isinstance(value, StandardValue):
        return value
    return StandardValue(_as_decimal(value[0]), value[1])


@dataclass(slots=True)
class Operation:
    """An operation as the stand-in keeps it; ``None`` quantity and unit: the order's."""

    operation: str
    work_center: str
    item: str  # OrderIntBillOfOperationsItem
    text: str = ""
    long_text: str = ""
    quantity: Decimal | None = None
    unit: str | None = None
    sequence: str = "0"
    sub_operation: str = ""
    control_profile: str = "PP01"
    start: datetime | None = None  # local time of the plant, naive
    end: datetime | None = None
    standard_values: dict[int, StandardValue] = field(default_factory=dict)
    flags: set[str] = field(default_factory=set)
    confirmed_yield: Decimal = Decimal(0)
    last_change: datetime = field(default_factory=lambda: datetime.now(UTC))
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Component:
    """A component of an order (a reservation item): ``operation`` the operation it is
    assigned to (``""``: none), ``required`` for the order's total quantity, in ``unit``."""

    item: str  # ReservationItem
    material: str
    required: Decimal
    unit: str
    operation: str = ""
    sequence: str = "0"
    backflush: bool = False
    batch: str = ""
    bulk: bool = False
    phantom: bool = False
    deleted: bool = False
    movement_type: str = "261"
    withdrawn: Decimal = Decimal(0)
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Order:
    order_id: str
    material: str
    quantity: Decimal
    unit: str
    plant: str
    routing: str  # OrderInternalBillOfOperations
    order_type: str = "PP01"
    long_text: str = ""
    start: datetime | None = None  # scheduled, local time of the plant, naive
    end: datetime | None = None
    flags: set[str] = field(default_factory=set)
    user_statuses: dict[str, str] = field(default_factory=dict)  # short name -> name
    operations: dict[str, Operation] = field(default_factory=dict)  # ALPHA operation -> op
    reservation: str = ""
    components: dict[str, Component] = field(default_factory=dict)  # ALPHA item -> component
    created: datetime = field(default_factory=lambda: datetime.now(UTC))
    last_change: datetime = field(default_factory=lambda: datetime.now(UTC))
    overrides: dict[str, Any] = field(default_factory=dict)


class SapOrdersState(odata.SapServiceState):
    """The stand-in's orders, credentials and knobs (the keywords of
    :class:`~simulators.erp.odata.SapServiceState` and ``standard_values``). Thread-safe: the
    server runs on its own loop in another thread while a test changes the orders."""

    error = SapError

    def __init__(
        self,
        *,
        standard_values: bool = True,
        **service: Unpack[odata.ServiceSettings],
    ) -> None:
        super().__init__(**service)
        self.standard_values = standard_values
        self._orders: dict[str, Order] = {}  # ALPHA order id -> order
        self._user_codes: dict[str, str] = {}  # user status short name -> E000n
        self._next_routing = 1000
        # Server-driven paging: at most this many entities per answer, with a "__next" link.
        self.max_page: int | None = None
        # Properties a $filter may not name (a release where they are not sap:filterable).
        self.unfilterable: set[str] = set()
        # "<path>?<decoded query>" of each service request (the latest 10,000)
        self.requests: deque[str] = deque(maxlen=10_000)

    # -- orders ---------------------------------------------------------------------------------

    def add_order(
        self,
        order_id: str,
        *,
        material: str,
        quantity: Decimal | int | float | str,
        unit: str = "PC",
        plant: str = "1010",
        order_type: str = "PP01",
        text: str = "",
        start: datetime | None = None,
        end: datetime | None = None,
        released: bool = True,
    ) -> Order:
        """A production order (``start``/``end``: scheduled, in the plant's local time)."""
        with self._lock:
            if alpha(order_id) in self._orders:
                raise ValueError(f"order {order_id} exists")
            self._next_routing += 1
            order = Order(
                order_id=order_id,
                material=material,
                quantity=_as_decimal(quantity),
                unit=unit,
                plant=plant,
                routing=f"{self._next_routing:010d}",
                order_type=order_type,
                long_text=text,
                start=start,
                end=end,
                flags={"OrderIsReleased"} if released else {"OrderIsCreated"},
            )
            order.flags |= {"OrderIsScheduled", "OrderIsPreCosted"}
            order.reservation = f"{self._next_routing + 20_000_000:010d}"
            self._orders[alpha(order_id)] = order
            return order

    def add_operation(
        self,
        order_id: str,
        operation: str,
        *,
        work_center: str,
        text: str = "",
        long_text: str = "",
        quantity: Decimal | int | float | str | None = None,
        unit: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        setup: StandardValue | tuple[Any, str] | None = None,
        run: StandardValue | tuple[Any, str] | None = None,
        standard_values: Mapping[int, StandardValue | tuple[Any, str]] | None = None,
        sequence: str = "0",
        sub_operation: str = "",
        released: bool | None = None,
    ) -> Operation:
        """An operation of ``order_id``: ``setup`` goes to standard value 1, ``run`` to 2
        (SAP's usual key), ``standard_values`` sets any of 1..6; released with its order
        unless ``released`` says otherwise."""
        with self._lock:
            order = self._order(order_id)
            values: dict[int, StandardValue] = {}
            for slot, value in ((1, setup), (2, run), *(standard_values or {}).items()):
                std = _standard(value)
                if std is not None:
                    if not 1 <= slot <= 6:
                        raise ValueError(f"standard value {slot}: slots are 1..6")
                    values[slot] = std
            is_released = "OrderIsReleased" in order.flags if released is None else released
            op = Operation(
                operation=operation,
                work_center=work_center,
                item=f"{len(order.operations) + 1:08d}",
                text=text,
                long_text=long_text,
                quantity=None if quantity is None else _as_decimal(quantity),
                unit=unit,
                sequence=sequence,
                sub_operation=sub_operation,
                start=start,
                end=end,
                standard_values=values,
                flags={"OperationIsReleased" if is_released else "OperationIsCreated"},
            )
            op.flags.add("OperationIsScheduled")
            order.operations[alpha(operation)] = op
            self._touch(order, op)
            return op

    def add_component(
        self,
        order_id: str,
        material: str,
        *,
        required: Decimal | int | float | str,
        unit: str = "PC",
        operation: str = "",
        sequence: str = "0",
        backflush: bool = False,
        batch: str = "",
        bulk: bool = False,
        phantom: bool = False,
        movement_type: str = "261",
        item: str | None = None,
    ) -> Component:
        """A component of ``order_id`` (the next reservation item, ``0001``, ``0002``, …,
        unless ``item`` names one; the same item again replaces it): ``required`` for the
        order's total quantity, assigned to ``operation`` (``""``: to none)."""
        with self._lock:
            order = self._order(order_id)
            number = item if item is not None else f"{len(order.components) + 1:04d}"
            component = Component(
                item=number,
                material=material,
                required=_as_decimal(required),
                unit=unit,
                operation=operation,
                sequence=sequence,
                backflush=backflush,
                batch=batch,
                bulk=bulk,
                phantom=phantom,
                movement_type=movement_type,
            )
            order.components[alpha(number)] = component
            self._touch(order)
            return component

    def set_component(self, order_id: str, item: str, **values: Any) -> None:
        """Change a component: its attributes by name (``required``, ``unit``, ``operation``,
        ``backflush``, ``batch``, ``deleted``, …), or, for a name of a property
        (``RequiredQuantity="-5.000"``, :data:`ABSENT`), that JSON value as it is. Like every
        change of an order, it moves the header's ``LastChangeDateTime``."""
        with self._lock:
            order = self._order(order_id)
            component = order.components.get(alpha(item))
            if component is None:
                raise KeyError(f"no component {item} in order {order_id}")
            for name, value in values.items():
                if name[:1].isupper():
                    component.overrides[name] = value
                elif name == "required":
                    component.required = _as_decimal(value)
                elif hasattr(component, name) and name != "overrides":
                    setattr(component, name, value)
                else:
                    raise KeyError(f"a component has no {name}")
            self._touch(order)

    def release(self, order_id: str, operation: str | None = None) -> None:
        """Release the order (and all its operations), or one operation of it."""
        with self._lock:
            order = self._order(order_id)
            ops = [self._operation(order, operation)] if operation else order.operations.values()
            for op in ops:
                op.flags.discard("OperationIsCreated")
                op.flags.add("OperationIsReleased")
                self._touch(order, op)
            order.flags.discard("OrderIsCreated")
            everything = all("OperationIsReleased" in o.flags for o in order.operations.values())
            if operation is None or everything:
                order.flags.discard("OrderIsPartiallyReleased")
                order.flags.add("OrderIsReleased")
            elif "OrderIsReleased" not in order.flags:
                order.flags.add("OrderIsPartiallyReleased")
            self._touch(order)

    def lock(self, order_id: str) -> None:
        """System status LKD (``OrderIsLocked``)."""
        self._set_order_flag(order_id, "OrderIsLocked", True)

    def unlock(self, order_id: str) -> None:
        self._set_order_flag(order_id, "OrderIsLocked", False)

    def set_user_status(
        self, order_id: str, short_name: str, name: str | None = None, *, active: bool = True
    ) -> None:
        """Set (or with ``active=False`` remove) a user status of the order, e.g. ``HOLD``."""
        with self._lock:
            order = self._order(order_id)
            if active:
                self._user_codes.setdefault(short_name, f"E{len(self._user_codes) + 1:04d}")
                order.user_statuses[short_name] = name if name is not None else short_name
            else:
                order.user_statuses.pop(short_name, None)
            self._touch(order)

    def mark_for_deletion(self, order_id: str, on: bool = True) -> None:
        """System status DLFL (``OrderIsMarkedForDeletion``)."""
        self._set_order_flag(order_id, "OrderIsMarkedForDeletion", on)

    def delete_order(self, order_id: str) -> None:
        """System status DLT (``OrderIsDeleted``, with the deletion flag)."""
        with self._lock:
            order = self._order(order_id)
            order.flags |= {"OrderIsDeleted", "OrderIsMarkedForDeletion"}
            self._touch(order)

    def technically_complete(self, order_id: str, operation: str | None = None) -> None:
        """TECO of the order (``OrderIsTechnicallyCompleted``) or of one operation
        (``OperationIsTechlyCompleted``)."""
        if operation is None:
            self._set_order_flag(order_id, "OrderIsTechnicallyCompleted", True)
        else:
            self._set_operation_flag(order_id, operation, "OperationIsTechlyCompleted", True)

    def close_order(self, order_id: str, operation: str | None = None) -> None:
        """CLSD of the order (``OrderIsClosed``) or of one operation (``OperationIsClosed``)."""
        if operation is None:
            self._set_order_flag(order_id, "OrderIsClosed", True)
        else:
            self._set_operation_flag(order_id, operation, "OperationIsClosed", True)

    def delete_operation(self, order_id: str, operation: str) -> None:
        """``OperationIsDeleted``: the operation stays, flagged."""
        self._set_operation_flag(order_id, operation, "OperationIsDeleted", True)

    def set_quantity(
        self,
        order_id: str,
        quantity: Decimal | int | float | str,
        operation: str | None = None,
    ) -> None:
        """The order's total quantity (operations without their own follow), or one
        operation's planned total quantity."""
        with self._lock:
            order = self._order(order_id)
            if operation is None:
                order.quantity = _as_decimal(quantity)
                self._touch(order)
            else:
                op = self._operation(order, operation)
                op.quantity = _as_decimal(quantity)
                self._touch(order, op)

    def set_dates(
        self,
        order_id: str,
        operation: str | None = None,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> None:
        """New scheduled start and/or end (local time) of the order or one operation."""
        with self._lock:
            order = self._order(order_id)
            target: Order | Operation = self._operation(order, operation) if operation else order
            if start is not None:
                target.start = start
            if end is not None:
                target.end = end
            self._touch(order, target if isinstance(target, Operation) else None)

    def confirm(
        self,
        order_id: str,
        operation: str,
        yield_qty: Decimal | int | float | str | None = None,
        *,
        final: bool = True,
    ) -> None:
        """A confirmation of the operation: ``final`` sets ``OperationIsConfirmed`` (CNF),
        else ``OperationIsPartiallyConfirmed``; ``yield_qty`` (default: the planned quantity)
        is added to the confirmed yield."""
        with self._lock:
            order = self._order(order_id)
            op = self._operation(order, operation)
            planned = op.quantity if op.quantity is not None else order.quantity
            op.confirmed_yield += planned if yield_qty is None else _as_decimal(yield_qty)
            if final:
                op.flags.discard("OperationIsPartiallyConfirmed")
                op.flags.add("OperationIsConfirmed")
            else:
                op.flags.add("OperationIsPartiallyConfirmed")
            ops = order.operations.values()
            if all("OperationIsConfirmed" in o.flags for o in ops):
                order.flags.discard("OrderIsPartiallyConfirmed")
                order.flags.add("OrderIsConfirmed")
            else:
                order.flags.add("OrderIsPartiallyConfirmed")
            self._touch(order, op)

    def move_operation(self, order_id: str, operation: str, work_center: str) -> None:
        with self._lock:
            order = self._order(order_id)
            op = self._operation(order, operation)
            op.work_center = work_center
            self._touch(order, op)

    def set_fields(self, order_id: str, operation: str | None = None, **values: Any) -> None:
        """Serve these JSON values as they are (``OpPlannedTotalQuantity="0.000"``, a text
        too long, ``None`` for null), over whatever the stand-in would compute; a value of
        :data:`ABSENT` leaves the property out of the answers."""
        with self._lock:
            order = self._order(order_id)
            if operation is None:
                order.overrides.update(values)
                self._touch(order)
            else:
                op = self._operation(order, operation)
                op.overrides.update(values)
                self._touch(order, op)

    def remove_order(self, order_id: str) -> None:
        """The order is gone (archived): its key answers 404, its operations are not listed."""
        with self._lock:
            self._orders.pop(alpha(order_id), None)

    def order(self, order_id: str) -> Order:
        with self._lock:
            return self._order(order_id)

    def orders(self) -> list[Order]:
        with self._lock:
            return list(self._orders.values())

    def _order(self, order_id: str) -> Order:
        found = self._orders.get(alpha(order_id))
        if found is None:
            raise KeyError(f"no order {order_id}")
        return found

    def _operation(self, order: Order, operation: str) -> Operation:
        found = order.operations.get(alpha(operation))
        if found is None:
            raise KeyError(f"no operation {operation} in order {order.order_id}")
        return found

    def _set_order_flag(self, order_id: str, flag: str, on: bool) -> None:
        with self._lock:
            order = self._order(order_id)
            if on:
                order.flags.add(flag)
            else:
                order.flags.discard(flag)
            self._touch(order)

    def _set_operation_flag(self, order_id: str, operation: str, flag: str, on: bool) -> None:
        with self._lock:
            order = self._order(order_id)
            op = self._operation(order, operation)
            if on:
                op.flags.add(flag)
            else:
                op.flags.discard(flag)
            self._touch(order, op)

    @staticmethod
    def _touch(order: Order, op: Operation | None = None) -> None:
        now = datetime.now(UTC)
        order.last_change = now
        if op is not None:
            op.last_change = now

    # -- faults ---------------------------------------------------------------------------------

    def fail_next(
        self,
        n: int = 1,
        status: int = 500,
        *,
        code: str | None = None,
        text: str | None = None,
        path: str | None = None,
    ) -> None:
        """The next ``n`` service requests (only those whose path under the service root
        starts with ``path`` when given, e.g. ``"A_ProductionOrder_2("``) answer ``status``
        with an SAP error body."""
        self._queue_faults(n, status, code, text, path)

    def take_fault(self, path: str) -> odata.SapError | None:
        return self._take_fault(lambda scope: scope is None or path.startswith(scope))

    def reset_faults(self) -> None:
        with self._lock:
            self._faults.clear()
            self._outage = False
            self._latency.set(None)

    def authorized(self, authorization: str | None) -> bool:
        return self.check_credentials(authorization) is not None

    # -- the entities as JSON -------------------------------------------------------------------

    def operation_props(self) -> tuple[Prop, ...]:
        extra = STANDARD_VALUE_PROPS if self.standard_values else ()
        return OPERATION_PROPS_2021 + extra

    def status_rows(self, order: Order) -> list[dict[str, Any]]:
        rows = [
            {
                "ManufacturingOrder": order.order_id,
                "StatusCode": code,
                "IsUserStatus": False,
                "StatusShortName": short,
                "StatusName": name,
            }
            for flag, code, short, name in _SYSTEM_STATUSES
            if flag in order.flags
        ]
        rows += [
            {
                "ManufacturingOrder": order.order_id,
                "StatusCode": self._user_codes[short],
                "IsUserStatus": True,
                "StatusShortName": short,
                "StatusName": name[:30],
            }
            for short, name in order.user_statuses.items()
        ]
        return rows

    def order_values(self, order: Order) -> dict[str, Any]:
        values: dict[str, Any] = {
            "ManufacturingOrder": order.order_id,
            "ManufacturingOrderCategory": "10",
            "ManufacturingOrderType": order.order_type,
            "OrderLongText": order.long_text,
            **{name: _flag(name in order.flags) for name in ORDER_FLAGS},
            "MfgOrderCreationDate": _date_json(order.created.date()),
            "MfgOrderCreationTime": _time_json(order.created),
            "LastChangeDateTime": _stamp(order.last_change),
            "Material": order.material,
            "StorageLocation": "0001",
            "OrderInternalBillOfOperations": order.routing,
            "ProductionPlant": order.plant,
            "Plant": order.plant,
            "MRPController": "001",
            "ProductionSupervisor": "001",
            "ProductionVersion": "0001",
            "MfgOrderActualReleaseDate": (
                _date_json(order.created.date()) if "OrderIsReleased" in order.flags else None
            ),
            "ProductionUnit": order.unit,
            "ProductionUnitISOCode": _ISO_UNITS.get(order.unit, order.unit)[:3],
            "ProductionUnitSAPCode": order.unit,
            "TotalQuantity": _decimal_json(order.quantity),
            "MfgOrderPlannedScrapQty": "0.000",
            "MfgOrderConfirmedYieldQty": _decimal_json(
                sum((o.confirmed_yield for o in order.operations.values()), Decimal(0))
                if order.operations
                else Decimal(0)
            ),
        }
        for kind in ("Planned", "Scheduled"):
            for edge, moment in (("Start", order.start), ("End", order.end)):
                values[f"MfgOrder{kind}{edge}Date"] = _date_json(moment.date() if moment else None)
                values[f"MfgOrder{kind}{edge}Time"] = _time_json(moment)
        values.update(order.overrides)
        return {k: v for k, v in values.items() if v is not ABSENT}

    def operation_values(self, order: Order, op: Operation) -> dict[str, Any]:
        start = op.start or order.start
        end = op.end or order.end
        unit = op.unit if op.unit is not None else order.unit
        quantity = op.quantity if op.quantity is not None else order.quantity
        values: dict[str, Any] = {
            "OrderInternalBillOfOperations": order.routing,
            "OrderIntBillOfOperationsItem": op.item,
            "ManufacturingOrder": order.order_id,
            "ManufacturingOrderSequence": op.sequence,
            "MfgOrderSequenceText": "Standard sequence" if op.sequence == "0" else "",
            "ManufacturingOrderOperation": op.operation,
            "ManufacturingOrderSubOperation": op.sub_operation,
            "ManufacturingOrderCategory": "10",
            "ManufacturingOrderType": order.order_type,
            "MfgOrderOperationText": op.text,
            **{name: _flag(name in op.flags) for name in OPERATION_FLAGS},
            "ProductionPlant": order.plant,
            "WorkCenterInternalID": f"{zlib.crc32(op.work_center.encode()) % 10**8:08d}",
            "WorkCenterTypeCode": "A",
            "WorkCenter": op.work_center,
            "OperationControlProfile": op.control_profile,
            "OpErlstSchedldExecStrtDte": _date_json(start.date() if start else None),
            "OpErlstSchedldExecStrtTme": _time_json(start),
            "OpErlstSchedldExecEndDte": _date_json(end.date() if end else None),
            "OpErlstSchedldExecEndTme": _time_json(end),
            "OpActualExecutionStartDate": None,
            "OpActualExecutionStartTime": "PT00H00M00S",
            "OpActualExecutionEndDate": None,
            "OpActualExecutionEndTime": "PT00H00M00S",
            "ErlstSchedldExecDurnInWorkdays": (
                max(1, (end.date() - start.date()).days + 1) if start and end else 0
            ),
            "OpActualExecutionDays": 0,
            "OperationUnit": unit,
            "OperationUnitISOCode": _ISO_UNITS.get(unit, unit)[:3],
            "OperationUnitSAPCode": unit,
            "OpPlannedTotalQuantity": _decimal_json(quantity),
            "OpTotalConfirmedYieldQty": _decimal_json(op.confirmed_yield),
            "LastChangeDateTime": _stamp(op.last_change),
        }
        if self.standard_values:
            values["OrderOperationLongText"] = op.long_text
            values["OrderSequenceLongText"] = ""
            for prefix in ("OpErlstSchedldProcgStrt", "OpErlstSchedldTrdwnStrt"):
                moment = start if prefix.endswith("ProcgStrt") else end
                values[f"{prefix}Dte"] = _date_json(moment.date() if moment else None)
                values[f"{prefix}Tme"] = _time_json(moment)
            for n in range(1, 7):
                std = op.standard_values.get(n)
                std_unit = std.unit if std else ""
                values[f"WorkCenterStandardWorkQtyUnit{n}"] = std_unit
                values[f"StdWrkQtyUnit{n}ISOCode"] = _ISO_UNITS.get(std_unit, std_unit)[:3]
                values[f"StdWrkQtyUnit{n}SAPCode"] = std_unit
                values[f"WorkCenterStandardWorkQty{n}"] = _decimal_json(
                    std.quantity if std else Decimal(0)
                )
        values.update(op.overrides)
        return {k: v for k, v in values.items() if v is not ABSENT}

    def component_values(self, order: Order, component: Component) -> dict[str, Any]:
        values: dict[str, Any] = {
            "Reservation": order.reservation,
            "ReservationItem": component.item,
            "Material": component.material,
            "Plant": order.plant,
            "ManufacturingOrder": order.order_id,
            "ManufacturingOrderSequence": component.sequence if component.operation else "",
            "ManufacturingOrderOperation": component.operation,
            "OrderInternalBillOfOperations": order.routing,
            "MatlCompRequirementDate": _date_json(order.start.date() if order.start else None),
            "MatlCompRequirementTime": _time_json(order.start),
            "ReservationIsFinallyIssued": False,
            "IsBulkMaterialComponent": component.bulk,
            "MatlCompIsMarkedForBackflush": component.backflush,
            "MatlCompIsMarkedForDeletion": component.deleted,
            "MaterialComponentIsPhantomItem": component.phantom,
            "StorageLocation": "0001",
            "Batch": component.batch,
            "GoodsMovementType": component.movement_type,
            "BaseUnit": component.unit,
            "RequiredQuantity": _decimal_json(component.required),
            "WithdrawnQuantity": _decimal_json(component.withdrawn),
        }
        values.update(component.overrides)
        return {k: v for k, v in values.items() if v is not ABSENT}

    def all_orders(self) -> list[Order]:
        """The orders themselves (not copies): read them inside ``with state.locked():``."""
        return list(self._orders.values())

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        with self._lock:
            yield


ABSENT: Final = object()
"""A :meth:`SapOrdersState.set_fields` value that leaves the property out of the answers."""


# ---------------------------------------------------------------------------------------------
# The OData service


def _props(props: Iterable[Prop]) -> dict[str, Prop]:
    return {p.name: p for p in props}


def _entity(
    values: Mapping[str, Any], uri: str, type_name: str, *, etag: str | None = None
) -> dict[str, Any]:
    meta: dict[str, Any] = {"id": uri, "uri": uri, "type": f"{SERVICE}.{type_name}"}
    if etag is not None:
        meta["etag"] = f"W/\"'{etag}'\""
    return {"__metadata": meta, **values}


def _quote_key(value: str) -> str:
    return "'" + urllib.parse.quote(value.replace("'", "''"), safe="") + "'"


_KEY_SEGMENT = re.compile(r"^(?P<set>[A-Za-z_0-9]+)\((?P<keys>[^)]*)\)(?:/(?P<nav>[A-Za-z_]+))?$")
_KEY_PART = re.compile(r"^\s*(?:(?P<name>[A-Za-z_]+)\s*=\s*)?'(?P<value>(?:[^']|'')*)'\s*$")


def _parse_keys(text: str, entity_set: str) -> dict[str, str]:
    names = _KEYS[entity_set]
    parts = re.split(r",(?=(?:[^']*'[^']*')*[^']*$)", text)
    keys: dict[str, str] = {}
    for i, part in enumerate(parts):
        match = _KEY_PART.match(part)
        if match is None:
            raise _bad_request(f"Invalid key predicate ({text}) for {entity_set}")
        name = match.group("name") or (names[i] if len(parts) == 1 and i == 0 else None)
        if name is None or name not in names:
            raise _bad_request(f"Invalid key predicate ({text}) for {entity_set}")
        keys[name] = match.group("value").replace("''", "'")
    if set(keys) != set(names):
        raise _bad_request(f"Key predicate ({text}) needs {', '.join(names)}")
    return keys


class _Service:
    """The OData service, one request at a time: outage, latency, faults, auth, resource."""

    def __init__(self, state: SapOrdersState) -> None:
        self.state = state

    async def __call__(self, request: Request, rest: str) -> Response:
        state = self.state
        query = urllib.parse.unquote_plus(request.url.query)
        with state.locked():
            state.requests.append(f"{rest}?{query}" if query else rest)
        await state.delay()
        try:
            if state.outage:
                raise SapError(503, "/IWFND/CM_BEC/026", "SAP system is not available")
            fault = state.take_fault(rest.lstrip("/"))
            if fault is not None:
                raise fault
            if not state.authorized(request.headers.get("authorization")):
                raise state.logon_failed()
            if request.method not in ("GET", "HEAD"):
                raise SapError(405, TECH_CODE, f"Method {request.method} is not allowed here")
            response = self._route(request, rest.strip("/"))
        except odata.SapError as exc:
            response = exc.response()
        response.headers["dataserviceversion"] = "2.0"
        if request.headers.get("x-csrf-token", "").lower() == "fetch":
            response.headers["x-csrf-token"] = base64.b64encode(secrets.token_bytes(18)).decode()
        return response

    def _route(self, request: Request, path: str) -> Response:
        root = f"{str(request.base_url).rstrip('/')}{SERVICE_PATH}/"
        fmt = request.query_params.get("$format", "json")
        if fmt != "json":
            raise _bad_request(f"The stand-in answers in JSON only ($format={fmt})")
        if path == "":
            return JSONResponse({"d": {"EntitySets": [ORDERS, OPERATIONS, STATUSES, COMPONENTS]}})
        if path == "$metadata":
            return Response(metadata_xml(self.state.standard_values), media_type="application/xml")
        with self.state.locked():
            if path == ORDERS:
                rows = [(o, self.state.order_values(o)) for o in self.state.all_orders()]
                return self._collection(request, root, ORDERS, rows)
            if path == OPERATIONS:
                op_rows = [
                    ((o, op), self.state.operation_values(o, op))
                    for o in self.state.all_orders()
                    for op in o.operations.values()
                ]
                return self._collection(request, root, OPERATIONS, op_rows)
            if path == COMPONENTS:
                component_rows = [
                    (c, self.state.component_values(o, c))
                    for o in self.state.all_orders()
                    for c in o.components.values()
                ]
                return self._collection(request, root, COMPONENTS, component_rows)
            if path == STATUSES:
                status_rows = [
                    (o, row) for o in self.state.all_orders() for row in self.state.status_rows(o)
                ]
                return self._collection(request, root, STATUSES, status_rows)
            match = _KEY_SEGMENT.match(path)
            if match is not None and match.group("set") in _KEYS:
                return self._by_key(request, root, match)
        raise _not_found(f"Resource not found for segment '{path.split('/')[0]}'")

    # -- rendering ------------------------------------------------------------------------------

    def _order_json(
        self, root: str, order: Order, values: Mapping[str, Any], expand: set[str]
    ) -> dict[str, Any]:
        uri = f"{root}{ORDERS}({_quote_key(order.order_id)})"
        out = _entity(values, uri, f"{ORDERS}Type", etag=str(values.get("LastChangeDateTime")))
        if NAV_OPERATIONS in expand:
            out[NAV_OPERATIONS] = {
                "results": [
                    self._operation_json(root, order, op, self.state.operation_values(order, op))
                    for op in order.operations.values()
                ]
            }
        else:
            out[NAV_OPERATIONS] = {"__deferred": {"uri": f"{uri}/{NAV_OPERATIONS}"}}
        if NAV_STATUS in expand:
            out[NAV_STATUS] = {
                "results": [self._status_json(root, row) for row in self.state.status_rows(order)]
            }
        else:
            out[NAV_STATUS] = {"__deferred": {"uri": f"{uri}/{NAV_STATUS}"}}
        if NAV_COMPONENTS in expand:
            out[NAV_COMPONENTS] = {
                "results": [
                    self._component_json(root, self.state.component_values(order, c))
                    for c in order.components.values()
                ]
            }
        else:
            out[NAV_COMPONENTS] = {"__deferred": {"uri": f"{uri}/{NAV_COMPONENTS}"}}
        return out

    @staticmethod
    def _component_json(root: str, values: Mapping[str, Any]) -> dict[str, Any]:
        uri = (
            f"{root}{COMPONENTS}(Reservation={_quote_key(str(values.get('Reservation')))},"
            f"ReservationItem={_quote_key(str(values.get('ReservationItem')))})"
        )
        return _entity(values, uri, f"{COMPONENTS}Type")

    @staticmethod
    def _operation_json(
        root: str, order: Order, op: Operation, values: Mapping[str, Any]
    ) -> dict[str, Any]:
        uri = (
            f"{root}{OPERATIONS}(OrderInternalBillOfOperations={_quote_key(order.routing)},"
            f"OrderIntBillOfOperationsItem={_quote_key(op.item)})"
        )
        return _entity(values, uri, f"{OPERATIONS}Type", etag=str(values.get("LastChangeDateTime")))

    @staticmethod
    def _status_json(root: str, row: Mapping[str, Any]) -> dict[str, Any]:
        uri = (
            f"{root}{STATUSES}(ManufacturingOrder={_quote_key(row['ManufacturingOrder'])},"
            f"StatusCode={_quote_key(row['StatusCode'])})"
        )
        return _entity(row, uri, f"{STATUSES}Type")

    def _render(
        self, root: str, entity_set: str, item: Any, values: Mapping[str, Any], expand: set[str]
    ) -> dict[str, Any]:
        if entity_set == ORDERS:
            return self._order_json(root, item, values, expand)
        if entity_set == OPERATIONS:
            order, op = item
            return self._operation_json(root, order, op, values)
        if entity_set == COMPONENTS:
            return self._component_json(root, values)
        return self._status_json(root, values)

    # -- query options --------------------------------------------------------------------------

    def _props_of(self, entity_set: str) -> dict[str, Prop]:
        if entity_set == ORDERS:
            return _props(ORDER_PROPS)
        if entity_set == OPERATIONS:
            return _props(self.state.operation_props())
        if entity_set == COMPONENTS:
            return _props(COMPONENT_PROPS)
        return _props(STATUS_PROPS)

    def _expand(self, request: Request, entity_set: str) -> set[str]:
        text = request.query_params.get("$expand", "")
        wanted = {p.strip() for p in text.split(",") if p.strip()}
        allowed = {NAV_OPERATIONS, NAV_STATUS, NAV_COMPONENTS} if entity_set == ORDERS else set()
        for nav in wanted - allowed:
            raise _bad_request(f"Navigation property {nav} not found in {entity_set}Type")
        return wanted

    def _collection(
        self, request: Request, root: str, entity_set: str, rows: list[tuple[Any, dict[str, Any]]]
    ) -> Response:
        q = request.query_params
        props = self._props_of(entity_set)
        expand = self._expand(request, entity_set)
        if "$filter" in q:
            unfilterable = frozenset(self.state.unfilterable)
            pred = _Filter(q["$filter"], props, f"{entity_set}Type", unfilterable).parse()
            rows = [row for row in rows if pred(row[1])]
        total = len(rows)
        if "$orderby" in q:
            for part in reversed([p.strip() for p in q["$orderby"].split(",") if p.strip()]):
                name, _, direction = part.partition(" ")
                prop = props.get(name)
                if prop is None:
                    raise _bad_request(f"Property {name} not found in type {entity_set}Type")
                if direction.strip().lower() not in ("", "asc", "desc"):
                    raise _bad_request(f"Invalid $orderby direction {direction!r}")

                def key(row: tuple[Any, dict[str, Any]], p: Prop = prop) -> tuple[bool, Any]:
                    value = _comparable(p, row[1].get(p.name))
                    return (value is not None, value if value is not None else 0)

                rows.sort(key=key, reverse=direction.strip().lower() == "desc")
        skip = 0
        for option in ("$skip", "$top"):
            if option in q:
                text = q[option]
                if not text.isdigit():
                    raise _bad_request(f"Invalid value {text!r} for system query option {option}")
                if option == "$skip":
                    skip = int(text)
                    rows = rows[skip:]
                else:
                    rows = rows[: int(text)]
        following: str | None = None
        limit = self.state.max_page
        if limit is not None and len(rows) > limit:
            rows = rows[:limit]
            params = dict(q)
            params["$skip"] = str(skip + limit)
            if "$top" in params:
                params["$top"] = str(int(params["$top"]) - limit)
            following = f"{root}{entity_set}?{urllib.parse.urlencode(params)}"
        select = self._select(request, props, expand)
        results = [
            self._pick(self._render(root, entity_set, item, values, expand), select)
            for item, values in rows
        ]
        d: dict[str, Any] = {"results": results}
        count = q.get("$inlinecount", "none")
        if count not in ("none", "allpages"):
            raise _bad_request(f"Invalid value {count!r} for $inlinecount")
        if count == "allpages":
            d["__count"] = str(total)
        if following is not None:
            d["__next"] = following
        return JSONResponse({"d": d})

    @staticmethod
    def _select(request: Request, props: Mapping[str, Prop], expand: set[str]) -> set[str] | None:
        text = request.query_params.get("$select", "")
        names = {p.strip() for p in text.split(",") if p.strip()}
        if not names or "*" in names:
            return None
        for name in names:
            if name not in props and name not in expand:
                raise _bad_request(f"Property {name} not found ($select)")
        return names | expand

    @staticmethod
    def _pick(entity: dict[str, Any], select: set[str] | None) -> dict[str, Any]:
        if select is None:
            return entity
        return {k: v for k, v in entity.items() if k == "__metadata" or k in select}

    def _by_key(self, request: Request, root: str, match: re.Match[str]) -> Response:
        entity_set, nav = match.group("set"), match.group("nav")
        keys = _parse_keys(urllib.parse.unquote(match.group("keys")), entity_set)
        state = self.state
        if entity_set == ORDERS:
            order = next(
                (
                    o
                    for o in state.all_orders()
                    if alpha(o.order_id) == alpha(keys[_KEYS[ORDERS][0]])
                ),
                None,
            )
            if order is None:
                raise _not_found(
                    f"Resource not found for segment '{ORDERS}Type' "
                    f"(ManufacturingOrder='{keys['ManufacturingOrder']}')"
                )
            if nav is None:
                expand = self._expand(request, ORDERS)
                entity = self._order_json(root, order, state.order_values(order), expand)
                return JSONResponse(
                    {"d": self._pick(entity, self._select(request, _props(ORDER_PROPS), expand))}
                )
            if nav == NAV_OPERATIONS:
                rows: list[tuple[Any, dict[str, Any]]] = [
                    ((order, op), state.operation_values(order, op))
                    for op in order.operations.values()
                ]
                return self._collection(request, root, OPERATIONS, rows)
            if nav == NAV_STATUS:
                rows = [(order, row) for row in state.status_rows(order)]
                return self._collection(request, root, STATUSES, rows)
            if nav == NAV_COMPONENTS:
                rows = [(c, state.component_values(order, c)) for c in order.components.values()]
                return self._collection(request, root, COMPONENTS, rows)
            raise _not_found(f"Resource not found for segment '{nav}'")
        if nav is not None:
            raise _not_found(f"Resource not found for segment '{nav}'")
        if entity_set == OPERATIONS:
            for order in state.all_orders():
                if alpha(order.routing) != alpha(keys["OrderInternalBillOfOperations"]):
                    continue
                for op in order.operations.values():
                    if alpha(op.item) == alpha(keys["OrderIntBillOfOperationsItem"]):
                        values = state.operation_values(order, op)
                        return JSONResponse({"d": self._operation_json(root, order, op, values)})
        elif entity_set == COMPONENTS:
            for order in state.all_orders():
                if alpha(order.reservation) != alpha(keys["Reservation"]):
                    continue
                found = order.components.get(alpha(keys["ReservationItem"]))
                if found is not None:
                    values = state.component_values(order, found)
                    return JSONResponse({"d": self._component_json(root, values)})
        else:
            for order in state.all_orders():
                for row in state.status_rows(order):
                    if alpha(row["ManufacturingOrder"]) == alpha(keys["ManufacturingOrder"]) and (
                        row["StatusCode"] == keys["StatusCode"]
                    ):
                        return JSONResponse({"d": self._status_json(root, row)})
        raise _not_found(f"Resource not found for segment '{entity_set}Type'")


# ---------------------------------------------------------------------------------------------
# $metadata


_EDM: Final[dict[Kind, str]] = {
    "String": "Edm.String",
    "Decimal": "Edm.Decimal",
    "DateTime": "Edm.DateTime",
    "Time": "Edm.Time",
    "Boolean": "Edm.Boolean",
    "Int32": "Edm.Int32",
}


def _property_xml(prop: Prop, keys: Sequence[str]) -> str:
    attrs = [f"Name={quoteattr(prop.name)}", f"Type={quoteattr(_EDM[prop.kind])}"]
    if prop.name in keys:
        attrs.append('Nullable="false"')
    attrs += odata.facets(prop.kind, prop.length, prop.scale)
    return f"        <Property {' '.join(attrs)}/>"


def _entity_type_xml(name: str, props: Sequence[Prop], keys: Sequence[str], navs: str) -> str:
    lines = [f'      <EntityType Name="{name}Type" sap:content-version="1">', "        <Key>"]
    lines += [f'          <PropertyRef Name="{k}"/>' for k in keys]
    lines.append("        </Key>")
    lines += [_property_xml(p, keys) for p in props]
    if navs:
        lines.append(navs)
    lines.append("      </EntityType>")
    return "\n".join(lines)


_ASSOCIATIONS: Final = (
    ("assoc_Order_Operation", OPERATIONS, "Operation"),
    ("assoc_Order_Status", STATUSES, "Status"),
    ("assoc_Order_Component", COMPONENTS, "Component"),
)


def metadata_xml(standard_values: bool = True) -> str:
    """The EDMX of the entity types served (``standard_values=False``: the 2021 shape)."""
    ops = OPERATION_PROPS_2021 + (STANDARD_VALUE_PROPS if standard_values else ())
    ns = SERVICE
    navs = (
        f'        <NavigationProperty Name="{NAV_OPERATIONS}" '
        f'Relationship="{ns}.assoc_Order_Operation" FromRole="FromRole_Order" '
        'ToRole="ToRole_Operation"/>\n'
        f'        <NavigationProperty Name="{NAV_STATUS}" Relationship="{ns}.assoc_Order_Status" '
        'FromRole="FromRole_Order" ToRole="ToRole_Status"/>\n'
        f'        <NavigationProperty Name="{NAV_COMPONENTS}" '
        f'Relationship="{ns}.assoc_Order_Component" FromRole="FromRole_Order" '
        'ToRole="ToRole_Component"/>'
    )
    associations = []
    for name, target, role in _ASSOCIATIONS:
        associations.append(
            f'      <Association Name="{name}" sap:content-version="1">\n'
            f'        <End Type="{ns}.{ORDERS}Type" Multiplicity="1" Role="FromRole_Order"/>\n'
            f'        <End Type="{ns}.{target}Type" Multiplicity="*" Role="ToRole_{role}"/>\n'
            "      </Association>"
        )
    sets = "\n".join(
        f'        <EntitySet Name="{s}" EntityType="{ns}.{s}Type" sap:creatable="false" '
        'sap:updatable="false" sap:deletable="false" sap:content-version="1"/>'
        for s in (ORDERS, OPERATIONS, STATUSES, COMPONENTS)
    )
    assoc_sets = "\n".join(
        f'        <AssociationSet Name="{name}_Set" Association="{ns}.{name}" '
        f'sap:creatable="false" sap:updatable="false" sap:deletable="false" '
        f'sap:content-version="1">\n'
        f'          <End EntitySet="{ORDERS}" Role="FromRole_Order"/>\n'
        f'          <End EntitySet="{target}" Role="ToRole_{role}"/>\n'
        "        </AssociationSet>"
        for name, target, role in _ASSOCIATIONS
    )
    return "\n".join(
        [
            '<?xml version="1.0" encoding="utf-8"?>',
            '<edmx:Edmx Version="1.0" xmlns:edmx="http://schemas.microsoft.com/ado/2007/06/edmx" '
            'xmlns:m="http://schemas.microsoft.com/ado/2007/08/dataservices/metadata" '
            'xmlns:sap="http://www.sap.com/Protocols/SAPData">',
            '  <edmx:DataServices m:DataServiceVersion="2.0">',
            f'    <Schema Namespace="{ns}" xml:lang="en" sap:schema-version="1" '
            'xmlns="http://schemas.microsoft.com/ado/2008/09/edm">',
            _entity_type_xml(ORDERS, ORDER_PROPS, _KEYS[ORDERS], navs),
            _entity_type_xml(OPERATIONS, ops, _KEYS[OPERATIONS], ""),
            _entity_type_xml(STATUSES, STATUS_PROPS, _KEYS[STATUSES], ""),
            _entity_type_xml(COMPONENTS, COMPONENT_PROPS, _KEYS[COMPONENTS], ""),
            *associations,
            f'      <EntityContainer Name="{ns}_Entities" '
            'm:IsDefaultEntityContainer="true" sap:supported-formats="atom json xlsx">',
            sets,
            assoc_sets,
            "      </EntityContainer>",
            "    </Schema>",
            "  </edmx:DataServices>",
            "</edmx:Edmx>",
            "",
        ]
    )


# ---------------------------------------------------------------------------------------------
# The app


def mount(app: FastAPI, state: SapOrdersState, *, token_endpoint: bool = True) -> None:
    """Serve the order service (and, unless ``token_endpoint=False`` because the host already
    has one, ``POST /oauth/token``) from ``app``, e.g. beside the confirmation stand-in."""
    service = _Service(state)
    methods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "MERGE"]

    async def root(request: Request) -> Response:
        return await service(request, "")

    async def resource(request: Request, rest: str) -> Response:
        return await service(request, rest)

    app.add_api_route(SERVICE_PATH, root, methods=methods, include_in_schema=False)
    app.add_api_route(
        SERVICE_PATH + "/{rest:path}", resource, methods=methods, include_in_schema=False
    )
    if token_endpoint:
        app.add_api_route(odata.TOKEN_PATH, _token_endpoint(state), methods=["POST"])


def _token_endpoint(state: SapOrdersState) -> Callable[[Request], Any]:
    async def token(request: Request) -> Response:
        if state.outage:
            return SapError(503, "/IWFND/CM_BEC/026", "SAP system is not available").response()
        return await odata.token_response(state, request, invalid_client_status=401)

    return token


def create_app(state: SapOrdersState) -> FastAPI:
    app = FastAPI(
        title="SAP S/4HANA production order stand-in",
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    mount(app, state)
    return app


# ---------------------------------------------------------------------------------------------
# The runner


class SapOrdersStandIn(odata.ServiceStandIn[SapOrdersState]):
    """The stand-in served by uvicorn on a thread of its own. ``async with`` or ``with`` or
    :meth:`start`/:meth:`stop`; ``port=None`` picks a free port; every other keyword goes to
    :class:`SapOrdersState` (``user``, ``password``, ``client_id``, ``client_secret``,
    ``standard_values``, ``latency_s``, ...)."""

    service_path = SERVICE_PATH
    label = "SAP order stand-in"
    thread_name = "sap-orders"
    state_class = SapOrdersState
    _app = staticmethod(create_app)


# ---------------------------------------------------------------------------------------------
# Demo


def add_demo_orders(state: SapOrdersState, day: date | None = None) -> None:
    """Three orders on two work centers of plant 1010 for ``day`` (default: today): one
    released with setup and run times, one locked, one with a HOLD user status."""
    day = day or date.today()

    def at(hour: int, minute: int = 0) -> datetime:
        return datetime(day.year, day.month, day.day, hour, minute)

    orders = (
        ("1000123", "FG-100", 100, "Bracket, zinc plated", 18),
        ("1000124", "FG-200", 250, "Cover plate", 20),
        ("1000125", "FG-300", 40, "Hinge", 22),
    )
    for order_id, material, quantity, text, end in orders:
        state.add_order(order_id, material=material, quantity=quantity, text=text, end=at(end))
    # (order, operation, work center, text, setup, run, start hour, end hour)
    operations = (
        ("1000123", "0010", "WC-4711", "Stamping", (30, "MIN"), (0.5, "MIN"), 6, 8),
        ("1000123", "0020", "WC-4712", "Deburring", (0.25, "H"), (20, "S"), 8, 10),
        ("1000124", "0010", "WC-4711", "Stamping", (45, "MIN"), (0.2, "MIN"), 10, 12),
        ("1000125", "0010", "WC-4712", "Welding", (10, "MIN"), (2, "MIN"), 12, 14),
    )
    for order_id, operation, work_center, text, setup, run, start, end in operations:
        state.add_operation(
            order_id,
            operation,
            work_center=work_center,
            text=text,
            setup=setup,
            run=run,
            start=at(start),
            end=at(end),
        )
    state.lock("1000124")
    state.set_user_status("1000125", "HOLD", "Held by quality")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m simulators.erp.sap_orders",
        description="SAP S/4HANA stand-in (API_PRODUCTION_ORDER_2_SRV) with demo orders",
    )
    odata.add_service_arguments(parser)
    parser.add_argument("--release-2021", action="store_true", help="no standard value fields")
    parser.add_argument("--no-demo", action="store_true", help="start without orders")
    args = parser.parse_args(argv)
    stand_in = SapOrdersStandIn(
        **odata.service_arguments(args), standard_values=not args.release_2021
    )
    if not args.no_demo:
        add_demo_orders(stand_in.state)
    return run_until_signal(
        stand_in,
        lambda: (
            f"SAP order stand-in serving {stand_in.url}",
            f"token endpoint {stand_in.token_url}",
        ),
        "SAP order stand-in stopped",
    )


if __name__ == "__main__":
    sys.exit(main())
