"""Orders down from Dynamics 365 Supply Chain Management: the production orders that are
released for the asked work centers (F&O resources), read from the OData data entities.

What :meth:`D365OrderSource.snapshot` asks (every request ``GET {base_url}/data/<entity>`` with
``cross-company=true``, ``dataAreaId eq '<company>'`` in the filter, ``Prefer:
odata.maxpagesize=<page_size>``, following ``@odata.nextLink`` to the last page; lists of values
go ``filter_chunk`` at a time, as ``(Field eq 'a' or Field eq 'b' ...)``):

1. ``ProductionOrderHeaders`` (``ProdProductionOrderHeaderEntity``) whose
   ``ProductionOrderStatus`` is one of ``released_statuses`` or ``held_statuses`` (enum literals
   ``Microsoft.Dynamics.DataEntities.ProdStatus'<name>'``), and, by number, the orders the last
   snapshot of an asked work center reported that are not among them any more (to tell an
   order that ended from one that was never there; a source that has just started knows none,
   so an order that ended while the relay was down leaves the list without a cancel).
2. ``ProductionOrderRouteJobs`` of those orders on the asked resources
   (``OperationsResourceId``): which operation is scheduled on which resource, and when. Only
   ``Setup`` and ``Process`` jobs (``job_types``) of the ``Primary`` operation count, and no
   cancelled job (``IsJobCancelled``).
3. ``ProductionOrderRouteOperations`` of the orders with a job there: the standards. With
   ``resource_from = "costing_resource"`` steps 2 and 3 are one: the route operations of those
   orders whose ``CostingOperationResourceId`` is an asked resource.
4. ``ReleasedProductsV2`` of their items: the inventory unit (``InventoryUnitSymbol``), the
   unit of ``ScheduledQuantity``; without ``product_entity`` every quantity is in ``unit``.
5. ``ProductionOrderBillOfMaterialLines`` of those orders (``bom_entity``; the collection
   behind the headers' navigation ``ProdutionOrderBOMLines``): the components.

Mapping, per (resource, order, operation): ``order_id`` = ``ProductionOrderNumber``,
``operation`` = ``OperationNumber`` as four digits (``10`` -> ``"0010"``: what the gateway uses,
and what :mod:`edge.relay.d365` turns back into the integer it sends), ``material`` =
``ItemNumber``, ``material_text`` = ``ProductionOrderName``, ``quantity`` = the order's
``ScheduledQuantity``, ``unit`` (above), ``planned_setup_s`` = ``SetupTime`` x
``OperationsTimeToHourConversionFactor`` x 3600, ``planned_run_s_per_unit`` = ``ProcessTime`` x
the factor x 3600 / ``ProcessQuantity`` (F&O's standard formula: run time x hours per time unit
x quantity / process quantity), ``latest_end`` = the operation's ``ScheduledEndDate`` +
``ScheduledEndTime`` (else the order's), ``sequence`` = the rank (1, 2, ...) on the resource by
scheduled start (the earliest job there, else the operation's ``ScheduledFromDate/Time``), then
order and operation; ``components`` = the order's BOM lines consumed at the operation
(``RouteOperationNumber``; a line on none, 0, at the order's first route operation), not
``Phantom`` lines (``LineType``): ``material`` = ``ItemNumber``, ``qty_per_unit`` =
``BOMLineQuantity`` / ``BOMLineQuantityDenominator`` (the quantity is for so many units of the
order's item; 1 when absent) to 6 places (:func:`edge.relay.orders.qty_per_unit`, as LOIPRO's),
``unit`` = ``BOMLineUnitSymbol``, ``backflush`` when ``FlushingPrinciple`` is not ``Manual``
(``Start``, ``Finish``, ``Available``: D365 consumes it itself, as the stand-in models it),
``batch_managed`` when an ``ItemBatchNumber`` is given (the entity has no batch-management
flag), ``item`` = ``LineNumber``. A line the gateway would refuse (no item or one over 40
characters, a quantity or denominator that is not a number above 0 or rounds to 0 per unit, no
unit, an item listed twice for the operation) is left out with a warning
``d365_component_left_out`` naming the order, the operation, the line, the field and the value;
the operation and its other components stay. F&O gives a date (midnight, ``1900-01-01`` for
none) and a time of day in seconds; both are taken as the plant's local time in ``timezone`` and
sent in UTC.

Status (the order's, first rule that applies):

- ``ProductionOrderStatus`` in ``cancelled_statuses`` (default ``Ended``, the final status: no
  more quantities are produced; ``Completed`` is the same status under its X++ name) ->
  ``cancelled``, ``status_text`` the status;
- the order's stop flag (``stopped_field``) is ``Yes`` and its status is released or held ->
  ``held``, ``status_text`` ``Stopped``;
- in ``held_statuses`` (default none) -> ``held``, ``status_text`` the status;
- in ``released_statuses`` (default ``Released`` and ``StartedUp``) -> ``released``;
- any other (``Created``, ``CostEstimated``, ``Scheduled``: not released, or reset to before
  release; ``ReportedFinished``: the whole quantity is reported, and route cards may still be
  posted until the order is ended): not reported, so the operation leaves the next dispatch list
  without an ``order/cancel``. Put ``ReportedFinished`` into ``cancelled_statuses`` to cancel
  instead, ``Scheduled`` into ``held_statuses`` to hold an order that is reset (but an order
  scheduled and not yet released is then held too).

An operation with ``IsOperationCompleted`` = ``Yes`` is done and is not reported.

A value the gateway would refuse (``edge.sync.contract.OperationMsg``) never stops a snapshot:
without a usable order number, operation number, item, quantity or unit the operation is left
out; a bad time or date is left at its default; an over-long name is cut, a quantity with more
than 6 decimal places rounded. Each is logged as a warning (``d365_operation_left_out`` or
``d365_value_left_out``) naming the order, the operation and the field.

Errors: every failed request (no connection, no answer within ``timeout_s``, an HTTP error, a
body that is not an OData collection, a next link to another host) makes the snapshot a
:class:`~edge.relay.orders.SnapshotFailed` naming the entity and what happened. A client the
token endpoint refuses, or a 401 with a fresh token, is a configuration error and says so.

**Not confirmed** (``erp-apis.md`` §3.5 names the header entity and ``ProductionOrderRouteJobs``
as a navigation, but not the others' public collection names): the collection names
``ProductionOrderRouteOperations``, ``ProductionOrderRouteJobs`` and ``ReleasedProductsV2`` and
the job fields (``OperationsResourceId``, ``RouteJobType``, ``IsJobCancelled``, scheduled dates)
and ``InventoryUnitSymbol`` (all configurable); that the route jobs name the resource (an
environment that plans by operations scheduling only has no jobs); that the scheduled times are
the plant's local time; the BOM line collection name and its fields (the reference names only
the navigation; these are the names F&O's published metadata shows), and which operation is
"first" with ``resource_from = "costing_resource"`` (the lowest of the order's operations on the
asked resources: the others are not read); a stop flag on the header (the standard entity has none:
``stopped_field`` names one where an extension exposes it; without it nothing is held unless its
status is in ``held_statuses``); the enum symbol of the final status (``Ended`` in samples).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Annotated, Any, ClassVar, Literal, TypeGuard, get_args
from urllib.parse import urlsplit

import httpx
from pydantic import Field, StringConstraints, model_validator

from edge.domain.limits import MAX_CYCLE_S, MAX_QUANTITY, MAX_SETUP_S, MAX_TEXT, QUANTITY_PLACES
from edge.logging import Logger, get_logger
from edge.relay.d365 import APP_HINT, Connection, D365Service, erp_text, read_secret
from edge.relay.oauth import TokenRefused, TokenUnavailable
from edge.relay.orders import (
    ErpComponent,
    ErpOperation,
    ErpStatus,
    OrderSource,
    SnapshotFailed,
    qty_per_unit,
)

ProdStatus = Literal[
    "Created",
    "CostEstimated",
    "Scheduled",
    "Released",
    "StartedUp",
    "ReportedFinished",
    "Ended",
    "Completed",
]
RouteJobType = Literal["QueueBefore", "Setup", "Process", "Overlap", "Transport", "QueueAfter"]
ENUM_NAMESPACE = "Microsoft.Dynamics.DataEntities"

_Symbol = Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=r"^[A-Za-z_]\w*$")]
_Unit = Annotated[str, StringConstraints(min_length=1, max_length=40, pattern=r"^\S+$")]
_Statuses = Annotated[tuple[ProdStatus, ...], Field(strict=False, max_length=8)]

_IDENT = re.compile(r"^[^/+#\s]{1,40}$")
_UNIT = re.compile(r"^\S{1,40}$")
_PLACES = Decimal(1).scaleb(-QUANTITY_PLACES)
_NULL_YEAR = 1900  # F&O's empty date is 1900-01-01
_MAX_NEXT_LINKS = 10_000


class Settings(Connection):
    """One F&O environment and legal entity, as an order source (the connection fields are the
    confirmation adapter's, :class:`edge.relay.d365.Connection`)."""

    page_size: int = Field(default=1000, ge=1, le=10_000)
    """Rows per page asked for (``Prefer: odata.maxpagesize``; F&O pages at 10,000 anyway)."""
    filter_chunk: int = Field(default=20, ge=1, le=100)
    """At most this many values in one ``$filter`` list (orders, resources, items)."""
    max_pages: int = Field(default=1000, ge=1, le=_MAX_NEXT_LINKS)
    """A query that pages on longer than this fails (a server that never stops)."""
    released_statuses: _Statuses = ("Released", "StartedUp")
    held_statuses: _Statuses = ()
    cancelled_statuses: _Statuses = ("Ended", "Completed")
    stopped_field: _Symbol | None = None
    """A NoYes field of the header entity that marks a stopped order (not in the standard
    entity; see the module docstring): ``Yes`` holds the order's operations."""
    job_types: Annotated[
        tuple[RouteJobType, ...], Field(strict=False, min_length=1, max_length=6)
    ] = ("Setup", "Process")
    """The route jobs that place an operation on a resource."""
    resource_from: Literal["route_jobs", "costing_resource"] = "route_jobs"
    """Where an operation's resource comes from: the resource its setup/process jobs are
    scheduled on (job scheduling), or the route operation's ``CostingOperationResourceId``
    (for an environment without route jobs)."""
    header_entity: _Symbol = "ProductionOrderHeaders"
    operation_entity: _Symbol = "ProductionOrderRouteOperations"
    job_entity: _Symbol = "ProductionOrderRouteJobs"
    product_entity: _Symbol | None = "ReleasedProductsV2"
    """Where the items' units are read; ``None``: every quantity is in ``unit``."""
    unit_field: _Symbol = "InventoryUnitSymbol"
    bom_entity: _Symbol | None = "ProductionOrderBillOfMaterialLines"
    """Where the orders' BOM lines (their components) are read; ``None``: no components."""
    unit: _Unit = "PC"
    """The unit of every quantity when ``product_entity`` is ``None``."""

    @model_validator(mode="after")
    def _statuses(self) -> Settings:
        if not self.released_statuses:
            raise ValueError("released_statuses: at least one status is released")
        groups = {
            "released_statuses": self.released_statuses,
            "held_statuses": self.held_statuses,
            "cancelled_statuses": self.cancelled_statuses,
        }
        seen: dict[str, str] = {}
        for name, statuses in groups.items():
            for status in statuses:
                if status in seen:
                    where = "twice" if seen[status] == name else f"also in {seen[status]}"
                    raise ValueError(f"{name}: {status} is {where}")
                seen[status] = name
        return self


def build(settings: Settings) -> D365OrderSource:
    """The source for ``settings``, with the client secret read from its file."""
    return D365OrderSource(settings, read_secret(settings.client_secret_file))


class _Failed(Exception):
    pass


class _Refused(Exception):
    """A value the gateway would refuse: its field, the value and why."""

    def __init__(self, field: str, value: Any, reason: str) -> None:
        super().__init__(f"{field} = {value!r}: {reason}")
        self.field = field
        self.value = value
        self.reason = reason


@dataclass(frozen=True, slots=True)
class _Placement:
    """An operation on one asked resource, by its jobs there."""

    work_center: str
    order: str
    number: int
    start: datetime | None


class D365OrderSource(D365Service[Settings], OrderSource):
    """Released production orders of one F&O legal entity; see the module docstring."""

    system: ClassVar[str] = "d365"

    def __init__(
        self,
        settings: Settings,
        client_secret: str,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        logger: Logger | None = None,
    ) -> None:
        super().__init__(settings, client_secret, transport=transport)
        # per work center, the orders its last snapshot reported (not cancelled)
        self._known: dict[str, set[str]] = {}
        self.log: Logger = logger or get_logger("edge.relay.orders_d365")

    # -- the snapshot ----------------------------------------------------------------------

    async def snapshot(
        self, work_centers: Sequence[str]
    ) -> dict[str, list[ErpOperation]] | SnapshotFailed:
        wanted = list(dict.fromkeys(work_centers))
        try:
            return await self._snapshot(wanted)
        except _Failed as exc:
            return SnapshotFailed(str(exc))

    async def _snapshot(self, work_centers: list[str]) -> dict[str, list[ErpOperation]]:
        result: dict[str, list[ErpOperation]] = {wc: [] for wc in work_centers}
        if not work_centers:
            return result
        known_before = set().union(*(self._known.get(wc, set()) for wc in work_centers))
        headers = await self._headers(known_before)
        known: dict[str, set[str]] = {wc: set() for wc in work_centers}
        if not headers:
            self._known.update(known)
            return result
        if self.settings.resource_from == "route_jobs":
            placements = await self._placements(work_centers, sorted(headers))
            operations = await self._operations(sorted({p.order for p in placements}))
        else:
            placements, operations = await self._costing_placements(work_centers, sorted(headers))
        orders = sorted({p.order for p in placements})
        units = await self._units(headers[o] for o in orders)
        boms = await self._bom_lines(orders)
        first: dict[str, int] = {}
        for order, number in operations:
            first[order] = min(first.get(order, number), number)
        by_wc: dict[str, list[tuple[tuple[Any, ...], ErpOperation]]] = {}
        for place in placements:
            header = headers[place.order]
            route = operations.get((place.order, place.number))
            if route is None:
                self._warn(place.order, place.number, "OperationNumber", "no route operation")
                continue
            op = self._map(place, header, route, units)
            if op is None:
                continue
            if op.status != "cancelled" and boms.get(place.order):
                at_first = first.get(place.order) == place.number
                components = self._components(op, place.number, at_first, boms[place.order])
                op = replace(op, components=components)
            start = place.start or self._when(route, "ScheduledFrom")
            rank = (start is None, start or datetime.min.replace(tzinfo=UTC), op.order_id)
            by_wc.setdefault(place.work_center, []).append(((*rank, place.number), op))
        for wc, items in by_wc.items():
            items.sort(key=lambda item: item[0])
            for i, (_, op) in enumerate(items, 1):
                result[wc].append(replace(op, sequence=i))
                if op.status != "cancelled":
                    known[wc].add(op.order_id)
        self._known.update(known)
        return result

    async def _headers(self, known: set[str]) -> dict[str, Mapping[str, Any]]:
        """The orders to look at, by number: the active ones, and those reported last time."""
        s = self.settings
        active = [*s.released_statuses, *s.held_statuses]
        rows = await self._read(
            s.header_entity,
            [f"ProductionOrderStatus eq {ENUM_NAMESPACE}.ProdStatus'{x}'" for x in active],
        )
        found = {str(r.get("ProductionOrderNumber")): r for r in rows}
        missing = sorted(known - found.keys())
        for rows in await self._read_lists(s.header_entity, "ProductionOrderNumber", missing):
            for row in rows:
                found.setdefault(str(row.get("ProductionOrderNumber")), row)
                status = row.get("ProductionOrderStatus")
                if status not in get_args(ProdStatus):
                    number = str(row.get("ProductionOrderNumber"))
                    self._warn(number, None, "ProductionOrderStatus", f"unknown status {status!r}")
        return {n: r for n, r in found.items() if r.get("ProductionOrderNumber")}

    async def _placements(self, work_centers: list[str], orders: list[str]) -> list[_Placement]:
        s = self.settings
        by_fold = {wc.casefold(): wc for wc in work_centers}
        earliest: dict[tuple[str, str, int], datetime | None] = {}
        for wc_chunk in _chunks(work_centers, s.filter_chunk):
            resources = _or(_eq("OperationsResourceId", wc_chunk))
            for rows in await self._read_lists(
                s.job_entity, "ProductionOrderNumber", orders, also=resources
            ):
                for row in rows:
                    if row.get("RouteJobType") not in s.job_types:
                        continue
                    if row.get("IsJobCancelled") == "Yes":
                        continue
                    wc = by_fold.get(str(row.get("OperationsResourceId") or "").casefold())
                    ids = _primary(row)
                    if wc is None or ids is None:
                        continue
                    key = (wc, *ids)
                    start = self._when(row, "ScheduledFrom")
                    if key not in earliest:
                        earliest[key] = start
                    elif start is not None:
                        before = earliest[key]
                        earliest[key] = start if before is None else min(before, start)
        return [
            _Placement(wc, order, number, start) for (wc, order, number), start in earliest.items()
        ]

    async def _costing_placements(
        self, work_centers: list[str], orders: list[str]
    ) -> tuple[list[_Placement], dict[tuple[str, int], Mapping[str, Any]]]:
        """``resource_from = "costing_resource"``: the route operations whose
        ``CostingOperationResourceId`` is an asked resource, placed there."""
        s = self.settings
        by_fold = {wc.casefold(): wc for wc in work_centers}
        placements: list[_Placement] = []
        found: dict[tuple[str, int], Mapping[str, Any]] = {}
        for wc_chunk in _chunks(work_centers, s.filter_chunk):
            resources = _or(_eq("CostingOperationResourceId", wc_chunk))
            for rows in await self._read_lists(
                s.operation_entity, "ProductionOrderNumber", orders, also=resources
            ):
                for row in rows:
                    wc = by_fold.get(str(row.get("CostingOperationResourceId") or "").casefold())
                    ids = _primary(row)
                    if wc is None or ids is None:
                        continue
                    found[ids] = row
                    placements.append(_Placement(wc, *ids, self._when(row, "ScheduledFrom")))
        return placements, found

    async def _operations(self, orders: list[str]) -> dict[tuple[str, int], Mapping[str, Any]]:
        found: dict[tuple[str, int], Mapping[str, Any]] = {}
        if not orders:
            return found
        for rows in await self._read_lists(
            self.settings.operation_entity, "ProductionOrderNumber", orders
        ):
            for row in rows:
                ids = _primary(row)
                if ids is not None:
                    found[ids] = row
        return found

    async def _units(self, headers: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
        s = self.settings
        if s.product_entity is None:
            return {}
        items = sorted(
            {
                str(h["ItemNumber"])
                for h in headers
                if isinstance(h.get("ItemNumber"), str) and h["ItemNumber"]
            }
        )
        units: dict[str, Any] = {}
        if not items:
            return units
        for rows in await self._read_lists(s.product_entity, "ItemNumber", items):
            for row in rows:
                item = row.get("ItemNumber")
                if isinstance(item, str):
                    units[item.casefold()] = row.get(s.unit_field)
        return units

    async def _bom_lines(self, orders: list[str]) -> dict[str, list[Mapping[str, Any]]]:
        """The BOM lines of ``orders``, by order, in line order."""
        found: dict[str, list[Mapping[str, Any]]] = {}
        entity = self.settings.bom_entity
        if entity is None or not orders:
            return found
        for rows in await self._read_lists(entity, "ProductionOrderNumber", orders):
            for row in rows:
                order = row.get("ProductionOrderNumber")
                if isinstance(order, str):
                    found.setdefault(order, []).append(row)
        for rows in found.values():
            rows.sort(key=lambda r: _decimal(r.get("LineNumber")) or Decimal(0))
        return found

    # -- mapping ---------------------------------------------------------------------------

    def _components(
        self, op: ErpOperation, number: int, at_first: bool, rows: Sequence[Mapping[str, Any]]
    ) -> tuple[ErpComponent, ...]:
        """The BOM lines of the operation's order consumed at this operation
        (``RouteOperationNumber``; a line on none at the order's first operation), per unit."""
        out: list[ErpComponent] = []
        seen: set[str] = set()
        for row in rows:
            if row.get("LineType") == "Phantom":
                continue  # exploded into its own lines
            on = row.get("RouteOperationNumber")
            if _is_int(on) and on != 0:
                if on != number:
                    continue
            elif not at_first:
                continue
            line = _decimal(row.get("LineNumber"))
            try:
                component = _component(row)
                if component.material in seen:
                    raise _Refused("ItemNumber", component.material, "listed twice")
            except _Refused as why:
                self.log.warning(
                    "d365_component_left_out",
                    order=op.order_id,
                    operation=number,
                    line=None if line is None else str(_tidy(line)),
                    field=why.field,
                    value=repr(why.value)[:200],
                    reason=why.reason,
                    consequence="the operation is dispatched without this component",
                )
                continue
            seen.add(component.material)
            out.append(replace(component, item=None if line is None else str(_tidy(line))))
        return tuple(out)

    def _map(
        self,
        place: _Placement,
        header: Mapping[str, Any],
        route: Mapping[str, Any],
        units: Mapping[str, Any],
    ) -> ErpOperation | None:
        s = self.settings
        order, number = place.order, place.number
        if route.get("IsOperationCompleted") == "Yes":
            return None
        state = self._status(header)
        if state is None:
            return None
        status, status_text = state
        if not _IDENT.match(order):
            return self._refuse(order, number, "ProductionOrderNumber", order, "not an order id")
        if not 0 <= number <= 9999:
            return self._refuse(order, number, "OperationNumber", number, "not 0 to 9999")
        item = header.get("ItemNumber")
        if not isinstance(item, str) or not 1 <= len(item.strip()) <= 40:
            return self._refuse(order, number, "ItemNumber", item, "1 to 40 characters")
        quantity = _decimal(header.get("ScheduledQuantity"))
        if quantity is not None and 0 < quantity <= MAX_QUANTITY:
            rounded = quantity.quantize(_PLACES, ROUND_HALF_EVEN)
            if rounded != quantity:
                self._warn(order, number, "ScheduledQuantity", f"{quantity} rounded to 6 places")
            quantity = _tidy(rounded) if rounded > 0 else None
        else:
            quantity = None
        if quantity is None:
            value = header.get("ScheduledQuantity")
            return self._refuse(
                order, number, "ScheduledQuantity", value, "not a positive quantity"
            )
        if s.product_entity is None:
            unit: Any = s.unit
        else:
            unit = units.get(item.casefold())
        if not isinstance(unit, str) or not 1 <= len(unit.strip()) <= 40:
            field = f"{s.product_entity}.{s.unit_field}"
            return self._refuse(order, number, field, unit, "no unit for the item")
        name = header.get("ProductionOrderName")
        text = name.strip() if isinstance(name, str) else ""
        if len(text) > MAX_TEXT:
            self._warn(order, number, "ProductionOrderName", f"cut to {MAX_TEXT} characters")
            text = text[:MAX_TEXT]
        factor = self._number(route, "OperationsTimeToHourConversionFactor", order, number, 1)
        if factor is not None and factor <= 0:
            self._warn(order, number, "OperationsTimeToHourConversionFactor", "not above 0")
            factor = None
        setup_s = 0.0
        run_s = 0.0
        if factor is not None:
            setup = self._number(route, "SetupTime", order, number)
            if setup is not None:
                setup_s = self._seconds(
                    setup * factor * 3600, MAX_SETUP_S, order, number, "SetupTime"
                )
            run = self._number(route, "ProcessTime", order, number)
            per = self._number(route, "ProcessQuantity", order, number, 1)
            if per is not None and per <= 0:
                self._warn(order, number, "ProcessQuantity", "not above 0; no run time")
            elif run is not None and per is not None:
                run_s = self._seconds(
                    run * factor * 3600 / per, MAX_CYCLE_S, order, number, "ProcessTime"
                )
        end = self._when(route, "ScheduledEnd") or self._when(header, "ScheduledEnd")
        return ErpOperation(
            work_center=place.work_center,
            order_id=order,
            operation=f"{number:04d}",
            material=item.strip(),
            quantity=quantity,
            unit=unit.strip(),
            status=status,
            material_text=text,
            planned_setup_s=setup_s,
            planned_run_s_per_unit=run_s,
            latest_end=end.strftime("%Y-%m-%dT%H:%M:%SZ") if end else None,
            status_text=status_text,
        )

    def _status(self, header: Mapping[str, Any]) -> tuple[ErpStatus, str] | None:
        s = self.settings
        status = header.get("ProductionOrderStatus")
        if status in s.cancelled_statuses:
            return "cancelled", str(status)
        active = status in s.released_statuses or status in s.held_statuses
        if active and s.stopped_field is not None and header.get(s.stopped_field) == "Yes":
            return "held", "Stopped"
        if status in s.held_statuses:
            return "held", str(status)
        if status in s.released_statuses:
            return "released", ""
        return None

    def _number(
        self, row: Mapping[str, Any], name: str, order: str, number: int, default: int = 0
    ) -> Decimal | None:
        """A number of ``row`` (``default`` when absent or null); None with a warning when it
        is not one."""
        value = row.get(name)
        if value is None:
            return Decimal(default)
        result = _decimal(value)
        if result is None:
            self._warn(order, number, name, f"not a number: {value!r}")
        return result

    def _seconds(self, value: Decimal, limit: float, order: str, number: int, name: str) -> float:
        seconds = float(value)
        if not 0 <= seconds <= limit:
            self._warn(order, number, name, f"{seconds:g} s is not 0 to {limit:g} s; left out")
            return 0.0
        return round(seconds, 6)

    def _when(self, row: Mapping[str, Any], prefix: str) -> datetime | None:
        """``<prefix>Date`` + ``<prefix>Time`` (local) in UTC; None for the empty date."""
        day = row.get(f"{prefix}Date")
        if not isinstance(day, str) or len(day) < 10:
            return None
        try:
            base = datetime.strptime(day[:10], "%Y-%m-%d")
        except ValueError:
            return None
        if base.year <= _NULL_YEAR:
            return None
        seconds = row.get(f"{prefix}Time")
        if not _is_int(seconds) or not 0 <= int(seconds) <= 86_400:
            seconds = 0
        local = (base + timedelta(seconds=int(seconds))).replace(tzinfo=self._zone)
        return local.astimezone(UTC)

    def _refuse(
        self, order: str, number: int, field: str, value: Any, why: str
    ) -> ErpOperation | None:
        """Log that the operation is left out for ``field``; None (nothing to report)."""
        self.log.warning(
            "d365_operation_left_out",
            order=order,
            operation=number,
            field=field,
            value=repr(value)[:200],
            reason=why,
        )
        return None

    def _warn(self, order: str, number: int | None, field: str, why: str) -> None:
        self.log.warning(
            "d365_value_left_out", order=order, operation=number, field=field, reason=why
        )

    # -- reading ---------------------------------------------------------------------------

    async def _read_lists(
        self, entity: str, name: str, values: list[str], *, also: str | None = None
    ) -> list[list[Mapping[str, Any]]]:
        pages: list[list[Mapping[str, Any]]] = []
        for chunk in _chunks(values, self.settings.filter_chunk):
            terms = _eq(name, chunk)
            pages.append(await self._read(entity, terms, also=also))
        return pages

    async def _read(
        self, entity: str, any_of: list[str], *, also: str | None = None
    ) -> list[Mapping[str, Any]]:
        """Every row of ``entity`` in the company matching one of ``any_of`` (and ``also``)."""
        s = self.settings
        parts = [f"dataAreaId eq {_literal(s.company)}", _or(any_of)]
        if also:
            parts.append(also)
        url: str | None = f"{s.root}/data/{entity}"
        params: dict[str, str] | None = {"$filter": " and ".join(parts), "cross-company": "true"}
        rows: list[Mapping[str, Any]] = []
        pages = 0
        while url is not None:
            pages += 1
            if pages > s.max_pages:
                raise _Failed(f"D365 {entity}: more than {s.max_pages} pages; giving up")
            body = await self._get(entity, url, params)
            value = body.get("value")
            if not isinstance(value, list):
                raise _Failed(f"D365 {entity}: HTTP 200 without an OData value list")
            rows.extend(r for r in value if isinstance(r, dict))
            link = body.get("@odata.nextLink")
            if link is None:
                url = None
            elif isinstance(link, str) and _same_origin(link, s.root):
                url, params = link, None
            else:
                raise _Failed(f"D365 {entity}: a next link outside {s.root}: {str(link)[:200]!r}")
        return rows

    async def _get(
        self, entity: str, url: str, params: Mapping[str, str] | None
    ) -> Mapping[str, Any]:
        s = self.settings
        what = f"D365 {entity}"
        try:
            response = await self._authorized(
                "GET", url, params=params, headers={"Prefer": f"odata.maxpagesize={s.page_size}"}
            )
        except TokenUnavailable as exc:
            raise _Failed(f"{what}: not read, {exc.outcome.text}") from None
        except TokenRefused as exc:
            raise _Failed(f"{what}: not read, configuration error: {exc}") from None
        except httpx.TimeoutException as exc:
            raise _Failed(
                f"{what}: no answer within {s.timeout_s:g} s ({type(exc).__name__})"
            ) from None
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            text = str(exc)
            raise _Failed(f"{what}: {type(exc).__name__}{': ' + text if text else ''}") from None
        if response.status_code == 401:
            raise _Failed(f"{what}: HTTP 401 with a new token, configuration error {APP_HINT}")
        if response.status_code != 200:
            text = erp_text(response)
            raise _Failed(f"{what}: HTTP {response.status_code} {text}".rstrip())
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise _Failed(f"{what}: HTTP 200 without a JSON object")
        return body


def _component(row: Mapping[str, Any]) -> ErpComponent:
    """One BOM line as a component; :class:`_Refused` names what the gateway would refuse."""
    item = row.get("ItemNumber")
    if not isinstance(item, str) or not 1 <= len(item.strip()) <= 40:
        raise _Refused("ItemNumber", item, "1 to 40 characters")
    value = row.get("BOMLineQuantity")
    quantity = _decimal(value)
    if quantity is None or not 0 < quantity <= MAX_QUANTITY:
        raise _Refused("BOMLineQuantity", value, f"not a quantity above 0 up to {MAX_QUANTITY}")
    per_value = row.get("BOMLineQuantityDenominator")
    per = Decimal(1) if per_value is None else _decimal(per_value)
    if per is None or not 0 < per <= MAX_QUANTITY:
        raise _Refused("BOMLineQuantityDenominator", per_value, "not a quantity above 0")
    per_unit = qty_per_unit(quantity, per)
    if per_unit <= 0:
        raise _Refused("BOMLineQuantity", value, "rounds to 0 per unit")
    unit = row.get("BOMLineUnitSymbol")
    if not isinstance(unit, str) or not _UNIT.match(unit.strip()):
        raise _Refused("BOMLineUnitSymbol", unit, "no unit (1 to 40 characters, no spaces)")
    flushing = row.get("FlushingPrinciple")
    batch = row.get("ItemBatchNumber")
    return ErpComponent(
        material=item.strip(),
        qty_per_unit=per_unit,
        unit=unit.strip(),
        # Any principle but Manual (Start, Finish, Available) is D365's own consumption.
        backflush=isinstance(flushing, str) and flushing.strip() not in ("", "Manual"),
        # The entity has no batch-management flag: a batch given means booked by batch.
        batch_managed=isinstance(batch, str) and bool(batch.strip()),
    )


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _eq(name: str, values: Iterable[str]) -> list[str]:
    return [f"{name} eq {_literal(v)}" for v in values]


def _or(terms: list[str]) -> str:
    return terms[0] if len(terms) == 1 else "(" + " or ".join(terms) + ")"


def _chunks(values: list[str], size: int) -> Iterator[list[str]]:
    for i in range(0, len(values), size):
        yield values[i : i + size]


def _primary(row: Mapping[str, Any]) -> tuple[str, int] | None:
    """(order, operation number) of a row of an order's primary operation; None for another
    row (a secondary operation, no order or number)."""
    if (row.get("OperationPriority") or "Primary") != "Primary":
        return None
    order, number = row.get("ProductionOrderNumber"), row.get("OperationNumber")
    if not isinstance(order, str) or not _is_int(number):
        return None
    return order, int(number)


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _decimal(value: Any) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        result = Decimal(str(value))
    except InvalidOperation:
        return None
    return result if result.is_finite() else None


def _tidy(value: Decimal) -> Decimal:
    """Without trailing zeros (``120.0000`` -> ``120``, ``7.50`` -> ``7.5``)."""
    if value == value.to_integral_value():
        return value.quantize(Decimal(1))
    return value.normalize()


def _same_origin(link: str, root: str) -> bool:
    a, b = urlsplit(link), urlsplit(root)
    return (a.scheme, a.netloc.lower()) == (b.scheme, b.netloc.lower())
