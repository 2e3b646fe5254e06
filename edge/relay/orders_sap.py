"""SAP S/4HANA: released production orders through the OData V2 service
``API_PRODUCTION_ORDER_2_SRV`` (orders down; confirmations go up through :mod:`edge.relay.sap`).

A snapshot reads, for every work center asked about, the released operations of the plant,
``$top``/``$skip`` page by page (a shorter page with a ``__next`` link, SAP's own paging, is
followed on with ``$skip`` too)::

    GET A_ProductionOrderOperation_2?$filter=ProductionPlant eq '1010' and WorkCenter eq 'WC-4711'
        and OperationIsReleased eq 'X' and OperationIsConfirmed eq ''
        &$orderby=OrderInternalBillOfOperations,OrderIntBillOfOperationsItem
        &$top=500&$skip=0&$format=json

(the header has no work center: operations first; they are ordered by their key, a total
order, so that pages do not shuffle) and then each of their orders' headers once, with the
status set, the order's operations and its components (a few at a time)::

    GET A_ProductionOrder_2('1000123')?$expand=to_ProductionOrderStatus,
        to_ProductionOrderOperation,to_ProductionOrderComponent&$format=json

An operation becomes an :class:`~edge.relay.orders.ErpOperation`:

- ``order_id``: ``ManufacturingOrder`` as SAP returns it (its external form after the ALPHA
  conversion, e.g. ``1000123``), neither padded nor stripped: the confirmation adapter sends
  the gateway's order id back as ``OrderID`` unchanged;
- ``operation``: ``ManufacturingOrderOperation`` as returned (``0010``);
- ``material``: the header's ``Material``; ``material_text``: ``MfgOrderOperationText``, else
  the first line of the header's ``OrderLongText``, cut at 200 characters (the service has no
  material description);
- ``quantity``, ``unit``: ``OpPlannedTotalQuantity`` in ``OperationUnit``; the header's
  ``TotalQuantity``/``ProductionUnit`` when the operation has none;
- ``planned_setup_s``: ``WorkCenterStandardWorkQty<setup_slot>`` in seconds, once per
  operation whatever the quantity;
- ``planned_run_s_per_unit``: ``WorkCenterStandardWorkQty<run_slot>`` in seconds divided by
  the quantity it is given for: SAP keeps standard values per the operation's base quantity
  (from the routing), not per lot, so neither ``OpPlannedTotalQuantity`` nor ``TotalQuantity``
  divides it; the service does not publish the base quantity, so it is ``run_base_quantity``
  (1: per unit), or ``OperationReferenceQuantity`` should an answer carry it;
- ``latest_end``: ``OpErlstSchedldExecEndDte``/``Tme`` (the service has the earliest
  schedule only), else the header's ``MfgOrderScheduledEndDate``/``Time``; SAP's dates and
  times are the plant's local time (``timezone``; a date is ``/Date(ms)/`` of the day's UTC
  midnight): sent as UTC, ``2025-03-04T08:30:00Z``;
- ``sequence``: 1, 2, … per work center by the scheduled start
  (``OpErlstSchedldExecStrtDte``/``Tme``, else the header's; none: last), then order and
  operation;
- ``confirmation_no``: none (RUECK is not in the service); ``split`` 0; no tolerances or crew;
- ``components``: the order's ``to_ProductionOrderComponent`` (``A_ProductionOrderComponent_2``)
  assigned to the operation (``ManufacturingOrderOperation``, and
  ``ManufacturingOrderSequence`` when given); one assigned to no operation goes to the order's
  first operation (the standard sequence's lowest number among the header's
  ``to_ProductionOrderOperation``). Left out as not issued to the order: those marked for
  deletion (``MatlCompIsMarkedForDeletion``), phantom items
  (``MaterialComponentIsPhantomItem``), bulk material (``IsBulkMaterialComponent``: taken
  from stock at the line, the safer reading: the gateway would else book consumption SAP does
  not expect), and a ``GoodsMovementType`` other than ``261`` (or none). ``material`` =
  ``Material``; ``qty_per_unit`` = ``RequiredQuantity`` (for the order) / the operation's
  quantity, to 6 places, as LOIPRO's (:func:`edge.relay.orders.qty_per_unit`); ``unit`` =
  ``BaseUnit`` (``EntryUnit`` when SAP sends no ``BaseUnit``); ``backflush`` =
  ``MatlCompIsMarkedForBackflush``; ``batch_managed``: a ``Batch`` given (the service has no
  batch-management flag; as LOIPRO's ``CHARG``); ``item`` = ``<Reservation>/<ReservationItem>``,
  the pair the confirmation adapter (:mod:`edge.relay.sap`) sends with the component's goods
  movements. A component the gateway would refuse (no material or one over 40 characters, a
  required quantity that is not a number, not above 0 or rounds to 0 per unit, a unit that is
  not 1 to 3 characters, a material listed twice for the operation) is left out with a
  warning ``sap_component_left_out`` naming the order, the operation, the reservation item,
  the field and the value; the operation and its other components are dispatched.

The units of standard values: the ISO code (``StdWrkQtyUnit<n>ISOCode``: ``SEC``, ``MIN``,
``HUR``) when present, else ``WorkCenterStandardWorkQtyUnit<n>`` looked up in ``time_units``
(``S``, ``MIN``, ``H`` by default; a German logon says ``STD`` for hours: add it). A standard
value in a unit that is not a time is reported as 0 with a warning. Without the standard value
fields (the 2021 release) both times are 0.

Status (:data:`~edge.relay.orders.ErpStatus`), with ``status_text`` naming SAP's fields:

- ``cancelled``: the order is deleted, marked for deletion, technically completed or closed
  (``OrderIsDeleted``, ``OrderIsMarkedForDeletion``, ``OrderIsTechnicallyCompleted``,
  ``OrderIsClosed``), or the operation is (``OperationIsDeleted``,
  ``OperationIsTechlyCompleted``, ``OperationIsClosed``);
- else ``held``: ``OrderIsLocked``, or a user status of the order (``IsUserStatus``) whose short
  name is in ``held_user_statuses``;
- else ``released``.

Reading only what changed (``poll = "changed_since"``, the default): the first snapshot, one
every ``full_read_s`` (an hour) and one after the work centers asked about changed read the
whole released set as above; the snapshots between ask SAP only for what changed since the
newest ``LastChangeDateTime`` seen (SAP's own clock, ``YYYYMMDDhhmmss``), less ``overlap_s``
for a change whose time was taken before it was committed::

    GET A_ProductionOrderOperation_2?$filter=ProductionPlant eq '1010'
        and LastChangeDateTime ge '20250304061500'&$orderby=...&$top=500&$skip=0
    GET A_ProductionOrder_2?$filter=ProductionPlant eq '1010'
        and LastChangeDateTime ge '20250304061500'
        &$expand=to_ProductionOrderStatus,to_ProductionOrderOperation&$orderby=ManufacturingOrder

over the whole plant, not per work center: an operation moved to a work center the relay does
not serve is seen leaving, since its row now names the other one. A changed header (locked, a
user status, technically completed) comes with its status set, all its operations and its
components, so a change SAP records on the header alone still re-judges its operations. The
source keeps SAP's rows of the released operations and their headers and applies the changes to
them: a row that is no longer released, is finally confirmed or names another work center
leaves; the header of an order seen for the first time is read as above. What no
changed-since read can show, an order archived away (its key answers 404), leaves at the next
full read. A failed read changes nothing kept, and the next one asks again from the same
time. When SAP refuses the filter (HTTP 400: ``LastChangeDateTime`` not filterable in that
release) or sends no readable ``LastChangeDateTime``, the source says so once and reads the
whole set every time; more than ``max_operations`` changes also make it a full read.

Finally confirmed operations (``OperationIsConfirmed``) are not asked for, and sub-operations
are skipped (confirmations name operations). An operation the gateway would refuse (a quantity
not above 0 or over 10⁹ or with more than 6 places, an id with ``/``, ``+``, ``#`` or white
space or over 40 characters, no material or unit, standard times over the contract's bounds)
is left out with a warning naming the order, the operation and the field; the rest of the
snapshot stands. A cancelled operation only needs its ids. Anything HTTP or SAP says otherwise
(not reachable, a timeout, 401, 5xx, an answer that is not OData) fails the whole snapshot as
:class:`~edge.relay.orders.SnapshotFailed`, naming the HTTP status and SAP's message.

Not confirmed against a real system (see the reference on SAP's APIs): that the status flags
and ``LastChangeDateTime`` are filterable (``$filter`` on ``OperationIsReleased``,
``OperationIsConfirmed`` and ``LastChangeDateTime``), that every change of an operation or
its order moves one of the two ``LastChangeDateTime`` and that it is UTC (the OData V2 delta
token, ``!deltatoken``, is not offered by this service as far as the reference goes), whether
any release has ``OperationReferenceQuantity`` in this service, and the exact codes of the
standard value units in the answers. The component fields beyond the keys ``Reservation`` and
``ReservationItem`` (the reference names only those; the others are as the 2021 service's
published reads show them), and that a change of a component moves the order's
``LastChangeDateTime`` (the component entity has none of its own): should it not, a changed
component is seen at the next full read (``full_read_s``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, ClassVar, Final, Literal, Unpack
from urllib.parse import quote
from zoneinfo import ZoneInfo

import httpx
from pydantic import Field, StringConstraints, model_validator

from edge.domain import limits as L
from edge.logging import get_logger
from edge.relay.checks import Zone
from edge.relay.oauth import TokenRefused, TokenUnavailable
from edge.relay.orders import (
    ErpComponent,
    ErpOperation,
    ErpStatus,
    OrderSource,
    SnapshotFailed,
    qty_per_unit,
)
from edge.relay.sap import (
    Connection,
    Credentials,
    SapService,
    odata_day,
    odata_seconds,
    quote_literal,
    read_credentials,
    sap_error,
    service_url,
)

log = get_logger(__name__)

SERVICE: Final = "API_PRODUCTION_ORDER_2_SRV"
OPERATIONS: Final = "A_ProductionOrderOperation_2"
ORDERS: Final = "A_ProductionOrder_2"
STATUS_NAV: Final = "to_ProductionOrderStatus"
OPERATIONS_NAV: Final = "to_ProductionOrderOperation"
COMPONENTS_NAV: Final = "to_ProductionOrderComponent"
# What a header read expands: the status set, the order's operations (which one is first) and
# its components (A_ProductionOrderComponent_2).
HEADER_EXPAND: Final = f"{STATUS_NAV},{OPERATIONS_NAV},{COMPONENTS_NAV}"
OPERATION_ORDER: Final = "OrderInternalBillOfOperations,OrderIntBillOfOperationsItem"
CHANGED: Final = "LastChangeDateTime"
_STAMP: Final = re.compile(r"^\d{14}$")  # YYYYMMDDhhmmss
# Where the relay's configuration keeps these settings (named in errors).
SECTION: Final = "dispatch.source"
_ISO_SECONDS: Final = {"SEC": 1.0, "MIN": 60.0, "HUR": 3600.0}
_IDENT: Final = re.compile(r"^[^/+#\s]{1,40}$")
_SAP_UNIT: Final = re.compile(r"^\S{1,3}$")  # SAP's units of measure are CHAR 3
# Components that are not issued to the order by a goods movement: left out.
_NOT_ISSUED: Final = (
    "MatlCompIsMarkedForDeletion",
    "MaterialComponentIsPhantomItem",  # exploded into its own components
    "IsBulkMaterialComponent",  # taken from bulk stock at the line, not issued per order
)

_ORDER_CANCELLED: Final = (
    ("OrderIsDeleted", "order deleted"),
    ("OrderIsMarkedForDeletion", "order marked for deletion"),
    ("OrderIsTechnicallyCompleted", "order technically completed"),
    ("OrderIsClosed", "order closed"),
)
_OPERATION_CANCELLED: Final = (
    ("OperationIsDeleted", "operation deleted"),
    ("OperationIsTechlyCompleted", "operation technically completed"),
    ("OperationIsClosed", "operation closed"),
)

_Unit = Annotated[str, StringConstraints(min_length=1, max_length=3)]
_Seconds = Annotated[float, Field(gt=0, le=86_400.0)]
_StatusName = Annotated[str, StringConstraints(min_length=1, max_length=4)]


class Settings(Connection):
    """Where and how to read released orders from SAP (``system = "sap"``); the connection
    fields (``service_url`` = the ``API_PRODUCTION_ORDER_2_SRV`` root, ``auth``, ``user``,
    ``password_file``, ``token_url``, ``client_id``, ``client_secret_file``, ``scope``,
    ``sap_client``, ``ca_file``, ``timeout_s``) are the confirmation adapter's."""

    system: Literal["sap"]
    plant: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9]{4}$")]
    timezone: Zone = "UTC"
    setup_slot: Annotated[int, Field(ge=0, le=6)] = 1
    run_slot: Annotated[int, Field(ge=0, le=6)] = 2
    time_units: dict[_Unit, _Seconds] = Field(
        default_factory=lambda: {"S": 1.0, "MIN": 60.0, "H": 3600.0}, max_length=50
    )
    run_base_quantity: Annotated[float, Field(gt=0, le=1e9)] = 1.0
    page_size: Annotated[int, Field(ge=1, le=5000)] = 500
    max_operations: Annotated[int, Field(ge=1, le=100_000)] = 10_000
    parallel: Annotated[int, Field(ge=1, le=32)] = 4
    held_user_statuses: list[_StatusName] = Field(default_factory=lambda: ["HOLD"], max_length=100)
    poll: Literal["changed_since", "full"] = "changed_since"
    full_read_s: Annotated[int, Field(ge=60, le=7 * 86_400)] = 3600
    overlap_s: Annotated[int, Field(ge=0, le=86_400)] = 300

    @model_validator(mode="after")
    def _slots(self) -> Settings:
        if self.setup_slot and self.setup_slot == self.run_slot:
            raise ValueError(f"setup_slot and run_slot are both {self.setup_slot}")
        return self


def build(settings: Settings, *, monotonic: Callable[[], float] = time.monotonic) -> SapOrderSource:
    """The source, with its secrets read; a ValueError names a missing or unreadable one."""
    password, oauth = read_credentials(settings, SECTION)
    return SapOrderSource(settings, monotonic=monotonic, password=password, oauth=oauth)


class _Failed(Exception):
    """The snapshot cannot be taken (the text says why; ``status``: SAP's HTTP status)."""

    def __init__(self, text: str, status: int | None = None) -> None:
        super().__init__(text)
        self.status = status


class _TooMany(_Failed):
    """More rows than ``max_operations``."""


class _LeftOut(Exception):
    """One operation the gateway would refuse: the field, its value and why."""

    def __init__(self, field: str, value: object, reason: str) -> None:
        super().__init__(f"{field} = {value!r}: {reason}")
        self.field = field
        self.value = value
        self.reason = reason


@dataclass(frozen=True, slots=True)
class _Mapped:
    op: ErpOperation
    start: dt.datetime | None
    sequence: str  # ManufacturingOrderSequence


_RowKey = tuple[str, str]


@dataclass(slots=True)
class _Kept:
    """SAP's rows as last read: the released operations of the work centers asked about (by
    the operation's key, with the work center they count for) and their orders' headers."""

    work_centers: tuple[str, ...]
    rows: dict[_RowKey, tuple[str, dict[str, Any]]]
    headers: dict[str, dict[str, Any] | None]
    newest: str | None  # the newest LastChangeDateTime seen, None: SAP sends none
    full_at: float  # monotonic time of the last full read


class SapOrderSource(SapService[Settings], OrderSource):
    system: ClassVar[str] = "sap"

    def __init__(
        self,
        settings: Settings,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        **credentials: Unpack[Credentials],
    ) -> None:
        super().__init__(settings, **credentials)
        self._zone = ZoneInfo(settings.timezone)
        self._held = frozenset(s.upper() for s in settings.held_user_statuses)
        self._monotonic = monotonic
        self._kept: _Kept | None = None
        # Why changed-since reads are off for good (SAP refused them, or sends no times).
        self._full_only: str | None = None
        self.full_reads = 0
        self.change_reads = 0

    # ------------------------------------------------------------------ the interface

    async def snapshot(
        self, work_centers: Sequence[str]
    ) -> dict[str, list[ErpOperation]] | SnapshotFailed:
        if self._client is None:
            return SnapshotFailed("the SAP order source is not started")
        try:
            kept = await self._refresh(tuple(dict.fromkeys(work_centers)))
        except _Failed as exc:
            return SnapshotFailed(str(exc))
        rows: dict[str, list[dict[str, Any]]] = {wc: [] for wc in kept.work_centers}
        for wc, row in kept.rows.values():
            rows[wc].append(row)
        return {wc: self._work_center(wc, rows[wc], kept.headers) for wc in work_centers}

    # ------------------------------------------------------------------ reading

    async def _refresh(self, work_centers: tuple[str, ...]) -> _Kept:
        """SAP's rows for ``work_centers`` now: what changed applied to those kept, or a full
        read when one is due (the kept rows change only when every read succeeded)."""
        kept, now = self._kept, self._monotonic()
        why = self._full_only
        if why is None:
            if kept is None:
                why = "the first read"
            elif kept.work_centers != work_centers:
                why = "the work centers asked about changed"
            elif kept.newest is None:
                why = "no LastChangeDateTime seen yet"
            elif now - kept.full_at >= self.settings.full_read_s:
                why = f"{self.settings.full_read_s} s since the last full read"
        if self.settings.poll == "full":
            why = "poll = full"
        if why is None and kept is not None:
            try:
                await self._apply_changes(kept)
                self.change_reads += 1
                return kept
            except _TooMany as exc:
                why = f"more changes than a changed-since read takes: {exc}"
            except _Failed as exc:
                if exc.status != 400:
                    raise
                self._full_only = why = f"SAP refused the changed-since read: {exc}"
                log.warning(
                    "sap_changed_since_refused",
                    reason=str(exc),
                    consequence="every poll reads the whole released set",
                )
        kept = await self._read_all(work_centers, now)
        self.full_reads += 1
        log.info("sap_orders_full_read", reason=why, operations=len(kept.rows))
        no_times = kept.newest is None and bool(kept.rows)
        if no_times and self.settings.poll == "changed_since" and not self._full_only:
            self._full_only = "SAP sends no readable LastChangeDateTime"
            log.warning(
                "sap_changed_since_impossible",
                reason=self._full_only,
                consequence="every poll reads the whole released set",
            )
        self._kept = kept
        return kept

    async def _read_all(self, work_centers: tuple[str, ...], now: float) -> _Kept:
        rows = {wc: await self._operations(wc) for wc in work_centers}
        kept_rows: dict[_RowKey, tuple[str, dict[str, Any]]] = {}
        for wc, found in rows.items():
            for row in found:
                kept_rows[_row_key(row)] = (wc, row)
        headers = await self._headers_of(_orders_of(row for _, row in kept_rows.values()))
        newest = _newest(
            [row for _, row in kept_rows.values()] + [h for h in headers.values() if h is not None]
        )
        return _Kept(work_centers, kept_rows, headers, newest, now)

    async def _apply_changes(self, kept: _Kept) -> None:
        """Read what changed since ``kept.newest`` (less the overlap) and apply it to ``kept``."""
        assert kept.newest is not None
        s = self.settings
        moment = dt.datetime.strptime(kept.newest, "%Y%m%d%H%M%S") - dt.timedelta(
            seconds=s.overlap_s
        )
        since = f"{max(moment, dt.datetime(1970, 1, 1)):%Y%m%d%H%M%S}"
        filter_ = f"ProductionPlant eq '{quote_literal(s.plant)}' and {CHANGED} ge '{since}'"
        changed_ops = await self._pages(
            OPERATIONS, filter_, OPERATION_ORDER, f"the operations changed since {since}"
        )
        changed_orders = await self._pages(
            ORDERS,
            filter_,
            "ManufacturingOrder",
            f"the orders changed since {since}",
            expand=HEADER_EXPAND,
        )
        # The newest state of each operation: its own row, or its order's (read later) when
        # that is not older.
        latest: dict[_RowKey, dict[str, Any]] = {_row_key(r): r for r in changed_ops}
        headers_now: dict[str, dict[str, Any]] = {}
        for header in changed_orders:
            order = _text(header, "ManufacturingOrder")
            if _IDENT.match(order):
                headers_now[order] = header
            for row in _nav_rows(header, OPERATIONS_NAV):
                key = _row_key(row)
                other = latest.get(key)
                if other is None or _text(row, CHANGED) >= _text(other, CHANGED):
                    latest[key] = row
        rows = dict(kept.rows)
        for key, row in latest.items():
            wc = _text(row, "WorkCenter")
            if (
                wc in kept.work_centers
                and _flag(row, "OperationIsReleased")
                and not _flag(row, "OperationIsConfirmed")
            ):
                rows[key] = (wc, row)
            else:
                rows.pop(key, None)  # confirmed, no longer released, or another work center's
        needed = _orders_of(row for _, row in rows.values())
        headers = {o: headers_now.get(o, kept.headers.get(o)) for o in needed}
        new = [o for o in needed if o not in headers_now and o not in kept.headers]
        headers.update(await self._headers_of(new))
        newest = _newest(changed_ops + changed_orders + list(latest.values()))
        kept.rows, kept.headers = rows, headers
        if newest is not None and newest > kept.newest:
            kept.newest = newest

    async def _operations(self, work_center: str) -> list[dict[str, Any]]:
        filter_ = (
            f"ProductionPlant eq '{quote_literal(self.settings.plant)}'"
            f" and WorkCenter eq '{quote_literal(work_center)}'"
            " and OperationIsReleased eq 'X' and OperationIsConfirmed eq ''"
        )
        what = f"the operations of work center {work_center!r}"
        return await self._pages(OPERATIONS, filter_, OPERATION_ORDER, what)

    async def _pages(
        self, entity_set: str, filter_: str, orderby: str, what: str, *, expand: str = ""
    ) -> list[dict[str, Any]]:
        """Every row of a filtered collection, ``$top``/``$skip`` page by page."""
        s = self.settings
        rows: list[dict[str, Any]] = []
        skip = 0
        while True:
            query = {"$filter": filter_, "$orderby": orderby}
            if expand:
                query["$expand"] = expand
            query |= {"$top": str(s.page_size), "$skip": str(skip), "$format": "json"}
            data = await self._get(entity_set, query, what)
            page = _results(data, what)
            rows += page
            if len(rows) > s.max_operations:
                raise _TooMany(
                    f"SAP has more than {s.max_operations} rows for {what} "
                    f"({SECTION}.max_operations)"
                )
            # A full page may have more behind it, and so may a shorter one with a "__next"
            # link (SAP paging on its own: at most so many per answer); a longer page means
            # SAP ignored $top and sent them all.
            more = _has_next(data) or len(page) == s.page_size
            if not page or not more or len(page) > s.page_size:
                return rows
            skip += len(page)

    async def _headers_of(self, orders: Sequence[str]) -> dict[str, dict[str, Any] | None]:
        gate = asyncio.Semaphore(self.settings.parallel)

        async def one(order: str) -> dict[str, Any] | None:
            async with gate:
                key = quote(f"'{quote_literal(order)}'", safe="'")
                query = {"$expand": HEADER_EXPAND, "$format": "json"}
                data = await self._get(f"{ORDERS}({key})", query, f"order {order}", missing=True)
            if data is None:
                return None
            d = data.get("d") if isinstance(data, dict) else None
            if not isinstance(d, dict):
                raise _Failed(f"SAP answered for order {order} without an OData entity")
            return d

        results = await asyncio.gather(*(one(o) for o in orders), return_exceptions=True)
        headers: dict[str, dict[str, Any] | None] = {}
        for order, result in zip(orders, results, strict=True):
            if isinstance(result, BaseException):
                if isinstance(result, _Failed):
                    raise result
                raise _Failed(f"reading order {order} failed: {result!r}") from result
            headers[order] = result
        return headers

    async def _get(
        self, path: str, query: Mapping[str, str], what: str, *, missing: bool = False
    ) -> Any:
        """The JSON of one GET; ``None`` for a 404 when ``missing``; else :class:`_Failed`."""
        assert self._client is not None
        encoded = "&".join(f"{k}={quote(v, safe=chr(39) + ',()')}" for k, v in query.items())
        url = service_url(self.settings, f"{path}?{encoded}")
        response: httpx.Response | None = None
        for attempt in range(2):
            headers = await self._auth()
            try:
                response = await self._client.get(url, headers=headers)
            except httpx.TimeoutException as exc:
                raise _Failed(
                    f"SAP did not answer in time ({self.settings.timeout_s:g} s) reading "
                    f"{what}: {type(exc).__name__}"
                ) from None
            except httpx.HTTPError as exc:
                raise _Failed(f"SAP not reachable reading {what}: {exc!r}") from None
            if response.status_code == 401 and self._tokens is not None and attempt == 0:
                self._tokens.forget()  # an expired token: one more try with a new one
                continue
            break
        assert response is not None
        status = response.status_code
        if status == 404 and missing:
            return None
        if status != 200:
            text, code = sap_error(response)
            said = "" if text.startswith(f"HTTP {status}") else f": {text}"
            hint = ""
            if status == 401:
                hint = f" (check {SECTION}.user and {SECTION}.password_file, or the OAuth client)"
            raise _Failed(
                f"SAP answered HTTP {status} reading {what}{said}"
                f"{f' [{code}]' if code else ''}{hint}",
                status,
            )
        try:
            return response.json()
        except ValueError:
            raise _Failed(f"SAP answered {what} with something that is not JSON") from None

    async def _auth(self) -> dict[str, str]:
        try:
            return await self._bearer()
        except TokenUnavailable as exc:
            raise _Failed(f"no OAuth token for SAP: {exc.outcome.text}") from None
        except TokenRefused as exc:
            raise _Failed(f"SAP's token endpoint refused the relay: {exc}") from None

    # ------------------------------------------------------------------ mapping

    def _work_center(
        self,
        work_center: str,
        rows: Sequence[dict[str, Any]],
        headers: Mapping[str, dict[str, Any] | None],
    ) -> list[ErpOperation]:
        mapped: list[_Mapped] = []
        for row in rows:
            order = row.get("ManufacturingOrder")
            operation = row.get("ManufacturingOrderOperation")
            if _flag(row, "OperationIsConfirmed") or not _flag(row, "OperationIsReleased"):
                continue  # the filter asked SAP for neither
            if _text(row, "ManufacturingOrderSubOperation"):
                continue  # confirmations name operations, not sub-operations
            try:
                order_id = _ident(row, "ManufacturingOrder")
                _ident(row, "ManufacturingOrderOperation")
                header = headers.get(order_id)
                if header is None:
                    raise _LeftOut("ManufacturingOrder", order, "SAP has no such order (404)")
                mapped.append(self._operation(work_center, row, header))
            except _LeftOut as why:
                log.warning(
                    "sap_operation_left_out",
                    work_center=work_center,
                    order=order,
                    operation=operation,
                    field=why.field,
                    value=why.value,
                    reason=why.reason,
                )
        # One operation per key: the standard sequence's ("0") first, a page read twice once.
        mapped.sort(key=lambda m: (m.sequence != "0", m.sequence))
        kept: dict[tuple[str, str, int], _Mapped] = {}
        for m in mapped:
            other = kept.get(m.op.key)
            if other is None:
                kept[m.op.key] = m
            elif other.sequence != m.sequence:
                log.warning(
                    "sap_operation_left_out",
                    work_center=work_center,
                    order=m.op.order_id,
                    operation=m.op.operation,
                    field="ManufacturingOrderSequence",
                    value=m.sequence,
                    reason=f"the same operation number is also in sequence {other.sequence}",
                )
        far = dt.datetime.max.replace(tzinfo=dt.UTC)
        ordered = sorted(
            kept.values(), key=lambda m: (m.start or far, m.op.order_id, m.op.operation)
        )
        out: list[ErpOperation] = []
        for n, m in enumerate(ordered, start=1):
            out.append(_with_sequence(m.op, n))
        return out

    def _operation(
        self, work_center: str, row: Mapping[str, Any], header: Mapping[str, Any]
    ) -> _Mapped:
        order_id = _ident(row, "ManufacturingOrder")
        operation = _ident(row, "ManufacturingOrderOperation")
        status, status_text = self._status(row, header)
        start = self._moment(row, "OpErlstSchedldExecStrtDte", "OpErlstSchedldExecStrtTme")
        if start is None:
            start = self._moment(header, "MfgOrderScheduledStartDate", "MfgOrderScheduledStartTime")
        sequence = _text(row, "ManufacturingOrderSequence")
        if status == "cancelled":
            # The gateway is told to cancel by the ids alone: nothing else has to be valid.
            op = ErpOperation(
                work_center=work_center,
                order_id=order_id,
                operation=operation,
                material=_text(header, "Material"),
                quantity=_decimal_or_zero(row.get("OpPlannedTotalQuantity")),
                unit=_text(row, "OperationUnit") or _text(header, "ProductionUnit"),
                status=status,
                status_text=status_text,
            )
            return _Mapped(op, start, sequence)
        material = _code(header, "Material")
        quantity_field, source = "OpPlannedTotalQuantity", row
        if row.get(quantity_field) is None:
            quantity_field, source = "TotalQuantity", header
        quantity = _quantity(quantity_field, source.get(quantity_field))
        unit_field, source = "OperationUnit", row
        if not _text(row, unit_field):
            unit_field, source = "ProductionUnit", header
        unit = _code(source, unit_field)
        text = _text(row, "MfgOrderOperationText") or _first_line(_text(header, "OrderLongText"))
        setup_s = self._standard(row, self.settings.setup_slot, order_id, operation)
        run_s = self._standard(row, self.settings.run_slot, order_id, operation)
        base = _decimal_or_zero(row.get("OperationReferenceQuantity"))
        per_unit = run_s / (float(base) if base > 0 else self.settings.run_base_quantity)
        if setup_s > L.MAX_SETUP_S:
            raise _LeftOut(_std_field(self.settings.setup_slot), setup_s, "setup over 30 days")
        if per_unit > L.MAX_CYCLE_S:
            raise _LeftOut(_std_field(self.settings.run_slot), per_unit, "over a day per unit")
        end = self._moment(row, "OpErlstSchedldExecEndDte", "OpErlstSchedldExecEndTme")
        if end is None:
            end = self._moment(header, "MfgOrderScheduledEndDate", "MfgOrderScheduledEndTime")
        components = _components(order_id, operation, sequence, header, quantity)
        op = ErpOperation(
            work_center=work_center,
            order_id=order_id,
            operation=operation,
            material=material,
            quantity=quantity,
            unit=unit,
            status=status,
            material_text=text[: L.MAX_TEXT],
            planned_setup_s=setup_s,
            planned_run_s_per_unit=per_unit,
            latest_end=None if end is None else end.strftime("%Y-%m-%dT%H:%M:%SZ"),
            confirmation_no=None,
            status_text=status_text,
            components=components,
        )
        return _Mapped(op, start, sequence)

    def _status(self, row: Mapping[str, Any], header: Mapping[str, Any]) -> tuple[ErpStatus, str]:
        cancelled = [
            f"{words} ({name})" for name, words in _ORDER_CANCELLED if _flag(header, name)
        ] + [f"{words} ({name})" for name, words in _OPERATION_CANCELLED if _flag(row, name)]
        if cancelled:
            return "cancelled", "SAP: " + ", ".join(cancelled)
        held = ["order locked (OrderIsLocked)"] if _flag(header, "OrderIsLocked") else []
        for status in _status_rows(header):
            short = status.get("StatusShortName")
            user = status.get("IsUserStatus") in (True, "X")
            if user and isinstance(short, str) and short.upper() in self._held:
                name = status.get("StatusName")
                named = f" ({name})" if isinstance(name, str) and name else ""
                held.append(f"user status {short}{named}")
        if held:
            return "held", "SAP: " + ", ".join(held)
        return "released", ""

    def _standard(self, row: Mapping[str, Any], slot: int, order: str, operation: str) -> float:
        """Standard value ``slot`` in seconds (0 without the slot, the field or a time unit)."""
        if not slot:
            return 0.0
        name = _std_field(slot)
        if row.get(name) is None:
            return 0.0  # the 2021 release has no standard values
        value = _decimal(name, row.get(name))
        if value == 0:
            return 0.0
        if value < 0:
            raise _LeftOut(name, row.get(name), "a negative standard value")
        iso = _text(row, f"StdWrkQtyUnit{slot}ISOCode").upper()
        unit = _text(row, f"WorkCenterStandardWorkQtyUnit{slot}")
        per = _ISO_SECONDS.get(iso) or self.settings.time_units.get(unit)
        if per is None:
            log.warning(
                "sap_standard_value_unit_unknown",
                order=order,
                operation=operation,
                field=f"WorkCenterStandardWorkQtyUnit{slot}",
                value=unit,
                iso_code=iso,
                reason=f"not a time unit in {SECTION}.time_units; the standard value is left at 0",
            )
            return 0.0
        return float(value) * per

    def _moment(
        self, entity: Mapping[str, Any], date_field: str, time_field: str
    ) -> dt.datetime | None:
        """A local date (``/Date(ms)/`` of its UTC midnight) and time (``PThhHmmMssS``) of
        the plant, in UTC; ``None`` without a date or when SAP's text cannot be read."""
        raw_date = entity.get(date_field)
        if not isinstance(raw_date, str) or not raw_date:
            return None
        day = odata_day(raw_date)
        if day is None:
            log.warning("sap_date_unreadable", field=date_field, value=raw_date)
            return None
        seconds = 0
        raw_time = entity.get(time_field)
        if isinstance(raw_time, str) and raw_time:
            clock = odata_seconds(raw_time)
            if clock is None:
                log.warning("sap_time_unreadable", field=time_field, value=raw_time)
            else:
                seconds = clock
        # Wall-clock arithmetic: the zone's offset is the one of the resulting local time.
        local = dt.datetime(day.year, day.month, day.day, tzinfo=self._zone)
        return (local + dt.timedelta(seconds=seconds)).astimezone(dt.UTC)


# ---------------------------------------------------------------------------------------------
# Components


def _components(
    order: str, operation: str, sequence: str, header: Mapping[str, Any], quantity: Decimal
) -> tuple[ErpComponent, ...]:
    """The components of the order (its header's ``to_ProductionOrderComponent``) assigned to
    this operation, per unit of its ``quantity``; one the gateway would refuse is left out
    with a warning naming the order, the field and the value, and the operation is kept."""
    rows = _nav_rows(header, COMPONENTS_NAV)
    if not rows:
        return ()
    first = _first_operation(header)
    out: list[ErpComponent] = []
    seen: set[str] = set()
    for row in rows:
        if any(_flag(row, name) for name in _NOT_ISSUED):
            continue
        if _text(row, "GoodsMovementType") not in ("", "261"):
            continue  # not a goods issue to the order (a co-product's receipt, ...)
        assigned = _text(row, "ManufacturingOrderOperation")
        if assigned:
            own_sequence = _text(row, "ManufacturingOrderSequence")
            if assigned != operation or (own_sequence and sequence and own_sequence != sequence):
                continue
        elif first != (sequence, operation):
            # Assigned to no operation: it belongs to the order's first operation (what SAP
            # itself does with a component that has none).
            if first is None:
                _left_out(
                    order,
                    operation,
                    row,
                    _LeftOut(
                        "ManufacturingOrderOperation",
                        row.get("ManufacturingOrderOperation"),
                        "assigned to no operation, and SAP listed none of the order's",
                    ),
                )
            continue
        try:
            material = _code(row, "Material")
            if material in seen:
                raise _LeftOut("Material", material, "listed twice for the operation")
            required = _quantity("RequiredQuantity", row.get("RequiredQuantity"))
            unit_field = "BaseUnit" if row.get("BaseUnit") is not None else "EntryUnit"
            unit = _text(row, unit_field)
            if not _SAP_UNIT.match(unit):
                raise _LeftOut(
                    unit_field, row.get(unit_field), "not a unit of SAP's (1 to 3 characters)"
                )
            per_unit = qty_per_unit(required, quantity)
            if per_unit <= 0:
                raise _LeftOut("RequiredQuantity", row.get("RequiredQuantity"), "0 per unit")
        except _LeftOut as why:
            _left_out(order, operation, row, why)
            continue
        seen.add(material)
        out.append(
            ErpComponent(
                material=material,
                qty_per_unit=per_unit,
                unit=unit,
                backflush=_flag(row, "MatlCompIsMarkedForBackflush"),
                # The 2021 service has no batch-management flag: a batch given means the
                # component is booked by batch (as LOIPRO's CHARG).
                batch_managed=bool(_text(row, "Batch")),
                item=_reservation_item(row),
            )
        )
    return tuple(out)


def _first_operation(header: Mapping[str, Any]) -> tuple[str, str] | None:
    """(sequence, operation) of the order's first operation: the standard sequence's
    (``0``) lowest operation number; None when the header lists no operations."""
    found: list[tuple[bool, str, int, str]] = []
    for row in _nav_rows(header, OPERATIONS_NAV):
        number = _text(row, "ManufacturingOrderOperation")
        if not number or _text(row, "ManufacturingOrderSubOperation"):
            continue
        sequence = _text(row, "ManufacturingOrderSequence")
        numeric = int(number) if number.isdigit() else 1 << 30
        found.append((sequence not in ("", "0"), sequence, numeric, number))
    if not found:
        return None
    best = min(found)
    return (best[1], best[3])


def _reservation_item(row: Mapping[str, Any]) -> str | None:
    """``<Reservation>/<ReservationItem>``, the pair a goods movement names (the confirmation
    adapter splits it again); the item alone without a reservation."""
    reservation = _text(row, "Reservation")
    item = _text(row, "ReservationItem")
    text = f"{reservation}/{item}" if reservation and item else item
    return text if text and len(text) <= 40 else None


def _left_out(order: str, operation: str, row: Mapping[str, Any], why: _LeftOut) -> None:
    log.warning(
        "sap_component_left_out",
        order=order,
        operation=operation,
        reservation_item=_reservation_item(row),
        field=why.field,
        value=why.value,
        reason=why.reason,
        consequence="the operation is dispatched without this component",
    )


# ---------------------------------------------------------------------------------------------
# Reading SAP's JSON


def _results(data: Any, what: str) -> list[dict[str, Any]]:
    d = data.get("d") if isinstance(data, dict) else None
    results = d.get("results") if isinstance(d, dict) else None
    if not isinstance(results, list):
        raise _Failed(f"SAP answered {what} without an OData collection ({{'d': {{'results'}}}})")
    return [r for r in results if isinstance(r, dict)]


def _has_next(data: Any) -> bool:
    d = data.get("d") if isinstance(data, dict) else None
    return isinstance(d, dict) and isinstance(d.get("__next"), str)


def _status_rows(header: Mapping[str, Any]) -> list[dict[str, Any]]:
    return _nav_rows(header, STATUS_NAV)


def _nav_rows(entity: Mapping[str, Any], nav: str) -> list[dict[str, Any]]:
    """The expanded entities of a navigation property (``{"results": [...]}`` or a list)."""
    found = entity.get(nav)
    rows = found.get("results") if isinstance(found, dict) else found
    return [r for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []


def _row_key(row: Mapping[str, Any]) -> _RowKey:
    """An operation's key: SAP's entity key, else its order, sequence, number and sub-number."""
    routing = _text(row, "OrderInternalBillOfOperations")
    item = _text(row, "OrderIntBillOfOperationsItem")
    if routing and item:
        return (routing, item)
    parts = ("ManufacturingOrderSequence", "ManufacturingOrderOperation")
    return (
        "order " + _text(row, "ManufacturingOrder"),
        "/".join(_text(row, p) for p in (*parts, "ManufacturingOrderSubOperation")),
    )


def _orders_of(rows: Iterable[Mapping[str, Any]]) -> list[str]:
    """The order ids the rows name (those that can be ids), sorted, each once."""
    return sorted(
        {
            order.strip()
            for row in rows
            if isinstance(order := row.get("ManufacturingOrder"), str)
            and _IDENT.match(order.strip())
        }
    )


def _newest(entities: Iterable[Mapping[str, Any]]) -> str | None:
    """The newest readable ``LastChangeDateTime`` of the entities, or None."""
    stamps = [t for e in entities if _STAMP.match(t := _text(e, CHANGED))]
    return max(stamps, default=None)


def _flag(entity: Mapping[str, Any], name: str) -> bool:
    value = entity.get(name)
    return value is True or (isinstance(value, str) and value.strip().upper() == "X")


def _text(entity: Mapping[str, Any], name: str) -> str:
    value = entity.get(name)
    return value.strip() if isinstance(value, str) else ""


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def _ident(entity: Mapping[str, Any], name: str) -> str:
    value = entity.get(name)
    if not isinstance(value, str) or not _IDENT.match(value.strip()):
        raise _LeftOut(
            name, value, "ids are 1 to 40 characters without '/', '+', '#' or white space"
        )
    return value.strip()


def _code(entity: Mapping[str, Any], name: str) -> str:
    value = _text(entity, name)
    if not 1 <= len(value) <= 40:
        raise _LeftOut(name, entity.get(name), "empty or longer than 40 characters")
    return value


def _decimal(name: str, value: Any) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise _LeftOut(name, value, "not a number")
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        raise _LeftOut(name, value, "not a number") from None
    if not number.is_finite():
        raise _LeftOut(name, value, "not a finite number")
    return number


def _decimal_or_zero(value: Any) -> Decimal:
    try:
        return _decimal("", value)
    except _LeftOut:
        return Decimal(0)


def _quantity(name: str, value: Any) -> Decimal:
    number = _decimal(name, value)
    if number <= 0 or L.out_of_range(number, Decimal(0), L.MAX_QUANTITY):
        raise _LeftOut(
            name, value, f"the gateway takes quantities above 0 up to {L.MAX_QUANTITY:,}"
        )
    exact = number.normalize()
    return exact.quantize(Decimal(1)) if exact == exact.to_integral_value() else exact


def _std_field(slot: int) -> str:
    return f"WorkCenterStandardWorkQty{slot}"


def _with_sequence(op: ErpOperation, sequence: int) -> ErpOperation:
    return replace(op, sequence=sequence)
