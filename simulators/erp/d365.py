"""A stand-in for Dynamics 365 SCM's MES integration: the token endpoint, ``SendMessage`` and a
message processor that works the queue in the background, with a ledger and fault knobs.

Use it from a test::

    async with D365StandIn(client_secret="s3cret") as d365:
        d365.state.add_order("P000123", quantity=100, operations=(10, 20))
        ...  # an adapter with base_url=d365.base_url, tenant_token_url=d365.token_url
        assert d365.state.totals("P000123", 10)["good"] == 40
        d365.state.assert_exactly_once()

or run it (``python -m simulators.erp.d365 --port 8365``) and drive it over HTTP:
``GET /_control/ledger``, ``POST /_control/orders`` (``{"number", "quantity", "status",
"operations"}``), ``POST /_control/knobs`` (``outage``, ``paused``, ``strict_fields``,
``latency_s``, ``process_delay_s``, ``token_lifetime_s``, ``expire_tokens``, ``fail_next``
``{"status", "text"}``, ``fail_next_message``, ``drop_next``, ``hang_next_s``, ``page_size``,
``fail_next_read`` ``{"status", "text", "entity"}``); orders down: ``POST /_control/orders``
also takes ``name``, ``start``, ``end`` (local ISO date-times) and ``stopped``; ``POST
/_control/operations`` (``{"order", "number", "resource", "setup_time", "process_time",
"process_quantity", "hours_factor", "start", "end", "operation_id"}``), ``POST
/_control/products`` (``{"item", "unit", "name"}``), ``POST /_control/orders/{number}``
(``{"status", "stopped", "quantity", "start", "end"}``, with ``"operation"`` also
``"resource"``, ``"completed"``, and dates for that operation).

Knobs on :class:`D365State` (``d365.state``): ``add_order``, ``expire_tokens``, ``fail_next``
(an HTTP status for the next SendMessage calls, nothing stored), ``drop_next`` (commit then
drop), ``hang_next`` (commit, answer late), ``fail_next_message`` / ``fail_order`` (a processing
failure with a log text), ``cancel``, ``outage`` (503 + ``Retry-After``), ``latency_s``,
``paused``, ``process_delay_s``. Ledger: ``messages``, ``by_id``, ``route_cards``, ``totals``,
``reported_finished``, ``processed_counts``, ``assert_exactly_once``, ``ledger()``.

Material: ``add_bom_line`` (an order's component, its unit and flushing principle) and
``consumption``. A ``ProdProductionOrderPickingList`` is kept line by line
(``consumed_lines``); a line with a quantity of 0, an item not on the order's BOM (or, without
a BOM, not a released product) or another unit fails the message with a log naming the field.
A BOM line whose flushing principle is not ``Manual`` is consumed by the stand-in itself with
each route card of the order (``qty_per_unit`` x good and error quantity) unless the route
card line says ``BOMConsumption`` ``No``: the stand-in's model of automatic consumption, not
D365's exact rule.

Orders down (the data entities): ``add_order`` (``name``, ``start``/``end`` local scheduled
date-times, ``stopped``), ``add_operation`` (a route operation on a resource, with a setup job
when it has setup time and a process job), ``add_product`` (item -> inventory unit),
``set_status`` / ``release`` / ``start_up`` / ``reset`` / ``end``, ``stop_order`` /
``resume_order``, ``set_quantity``, ``set_dates`` (order or operation), ``move_operation``,
``complete_operation``, ``set_raw`` (any value in a header or route row, for values a client
must refuse), ``fail_next_read`` (an HTTP error for the next entity reads), ``page_size`` (the
server's page). ``outage`` and ``latency_s`` apply to the reads too; ``read_requests`` counts
them per entity and ``read_log`` keeps every URL.

What it serves (paths as in ``erp-apis.md`` §3):

- ``POST /{tenant}/oauth2/v2.0/token`` (form, client credentials): ``{"token_type": "Bearer",
  "expires_in", "ext_expires_in", "access_token"}``; a wrong secret is 401 ``invalid_client``
  (``AADSTS7000215``; ``bad_secret_status`` makes it 400), an unknown client 400
  ``unauthorized_client``, a scope other than ``<base_url>/.default`` 400 ``invalid_scope``.
  Tokens expire after ``token_lifetime_s``; :meth:`D365State.expire_tokens` ends every token
  issued so far.
- ``POST /api/services/SysMessageServices/SysMessageService/SendMessage``: Bearer required
  (401 otherwise); the envelope must have the four string parameters (``_companyId``,
  ``_messageQueue``, ``_messageType``, ``_messageContent``) and may have ``_messageId`` (the
  adapter's correlation, **not confirmed** for the real F&O); any other key, a missing or
  non-string parameter, an unknown company or queue is a 500 fault body ``{"Message",
  "ExceptionType", "ActivityId"}`` (shape **not confirmed**). A good call stores the message
  as Queued and answers 200 with an empty body.
- ``GET /data/SysMessageProcessorMessages?$filter=MessageId eq '...' or ...`` (an OData v4
  collection of message states; **not confirmed**: no such entity is documented) with
  ``MessageId``, ``ControlNumber``, ``MessageQueue``, ``MessageType``, ``MessageState``,
  ``MessageStateLabel``, ``MessageProcessingResult``, ``MessageInfolog``, ``MessageContent``,
  ``dataAreaId`` and ``JournalId``.
- ``GET /data/<entity>`` for ``ProductionOrderHeaders`` (``dataAreaId``,
  ``ProductionOrderNumber``, ``ProductionOrderName``, ``ItemNumber``, ``ProductionOrderStatus``,
  ``ScheduledQuantity``, ``RemainingReportAsFinishedQuantity``, ``ScheduledStartDate/Time``,
  ``ScheduledEndDate/Time``, and ``IsProductionOrderStopped``: **not confirmed**, the standard
  entity has no stop flag), ``ProductionOrderRouteOperations`` (``OperationNumber``,
  ``OperationPriority``, ``OperationId``, ``SetupTime``, ``ProcessTime``, ``ProcessQuantity``,
  ``OperationsTimeToHourConversionFactor``, ``ScheduledFromDate/Time``,
  ``ScheduledEndDate/Time``, ``IsOperationStarted``, ``IsOperationCompleted``,
  ``CostingOperationResourceId``), ``ProductionOrderRouteJobs`` (``JobId``,
  ``ProductionOrderNumber``, ``OperationNumber``, ``OperationPriority``, ``RouteJobType``,
  ``OperationsResourceId``, scheduled dates, ``JobStatus``, ``IsJobCancelled``,
  ``IsJobEnded``), ``ReleasedProductsV2`` (``ItemNumber``, ``ProductName``,
  ``InventoryUnitSymbol``) and ``ProductionOrderBillOfMaterialLines``, the order's BOM lines of
  ``add_bom_line`` (the collection behind the headers' navigation ``ProdutionOrderBOMLines``:
  ``ProductionOrderNumber``, ``LineNumber``, ``LineType``, ``ItemNumber``, ``BOMLineQuantity``
  for ``BOMLineQuantityDenominator`` units, ``BOMLineUnitSymbol``, ``FlushingPrinciple``,
  ``RouteOperationNumber``, ``ItemBatchNumber``; ``set_bom_raw`` serves any value in one); the
  collection names other than the headers' and the BOM line fields are **not confirmed**.
  OData v4 JSON ``{"@odata.context", "value", "@odata.nextLink"?}``; dates are
  F&O's date (midnight ``Z``, ``1900-01-01`` for none) plus a time of day in seconds. Query
  options: ``cross-company=true`` (else only the first company), ``$filter`` (comparisons of a
  property with a string, number or enum literal ``Ns.Type'Value'``, ``and``/``or``/``not``,
  parentheses; strings case-insensitive; an unknown property is a 400 OData error),
  ``$select``, ``$top``, ``$skip``; pages of ``page_size`` rows (10,000) or fewer when the
  client sends ``Prefer: odata.maxpagesize=N``, the next page by ``@odata.nextLink``
  (``$skip``). Any other entity is a 404.

The processor takes the messages of one production order in arrival order, each after
``process_delay_s``; a message that fails is tried three times in all, then set to Failed with a
log text in D365's manner. The content is checked per message type against the fields of §3.3
(mandatory fields, types, enum values; an unknown field fails the message when
``strict_fields``, which is **not confirmed**), then against the registered orders (when any
are registered): the order must exist, be started (``StartedUp``) for route cards and
reports-as-finished, not be ``Ended``; an operation must exist; a good quantity must not exceed
what remains.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import secrets
import signal
import socket
import time
import uuid
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from simulators.erp.odata import Filter, Predicate, compare, unquote
from simulators.erp.serve import AsyncLifecycle, QuietServer, bind, until_started, uvicorn_config

SEND_PATH = "/api/services/SysMessageServices/SysMessageService/SendMessage"
STATE_ENTITY = "SysMessageProcessorMessages"
ATTEMPTS = 3  # D365 tries each message three times before it sets it to Failed
NULL_DATE = "1900-01-01T00:00:00Z"  # F&O's empty date
# Not a field of the standard header entity (see the module docstring): the order's Stopped flag.
STOPPED_FIELD = "IsProductionOrderStopped"
HEADERS = "ProductionOrderHeaders"
ROUTE_OPERATIONS = "ProductionOrderRouteOperations"
ROUTE_JOBS = "ProductionOrderRouteJobs"
RELEASED_PRODUCTS = "ReleasedProductsV2"
# The collection behind the headers' navigation ProdutionOrderBOMLines (sic): not confirmed.
BOM_LINES = "ProductionOrderBillOfMaterialLines"
MAX_PAGE = 10_000  # F&O's server page size

# -- the message types of §3.3 -------------------------------------------------------------

YES_NO = frozenset({"Yes", "No"})
ERROR_CAUSE = frozenset({"None", "Material", "Machine", "OperatingStaff"})
BOM_RULE = frozenset({"FlushingPrincip", "Always", "Never"})
ROUTE_RULE = frozenset({"RouteDependent", "Always", "Never"})
PRODUCTION_TYPE = frozenset({"MainItem", "Formula", "BOM", "Co_Product", "By_Product", "None"})
TASK_TYPE = frozenset(
    {"QueueBefore", "Setup", "Process", "Overlap", "Transport", "QueueAfter", "Burden"}
)
PRIORITY = frozenset({"Primary", *(f"Secondary{i}" for i in range(1, 21))})

Kind = str | frozenset[str]  # "string" | "real" | "int" | "date" | "datetime" | an enum's values

START_FIELDS: dict[str, Kind] = {
    "ProductionOrderNumber": "string",
    "StartedQuantity": "real",
    "StartedDate": "date",
    "AutomaticBOMConsumptionRule": BOM_RULE,
}
REPORT_FINISHED_LINE: dict[str, Kind] = {
    "LineNumber": "real",
    "ItemNumber": "string",
    "ProductionType": PRODUCTION_TYPE,
    "ReportedErrorQuantity": "real",
    "ReportedGoodQuantity": "real",
    "ReportedErrorCatchWeightQuantity": "real",
    "ReportedGoodCatchWeightQuantity": "real",
    "AcceptError": YES_NO,
    "ErrorCause": ERROR_CAUSE,
    "ExecutedDateTime": "datetime",
    "ReportAsFinishedDate": "date",
    "AutomaticBOMConsumptionRule": BOM_RULE,
    "AutomaticRouteConsumptionRule": ROUTE_RULE,
    "RespectFlushingPrincipleDuringOverproduction": YES_NO,
    # both spellings of the journal names (2024 and 2022 texts)
    "JournalNameId": "string",
    "PickingListJournalNameId": "string",
    "RouteCardJournalNameId": "string",
    "ProductionJournalNameId": "string",
    "PickingListProductionJournalNameId": "string",
    "RouteCardProductionJournalNameId": "string",
    "FromOperationNumber": "int",
    "ToOperationNumber": "int",
    "InventoryLotId": "string",
    "BaseValue": "string",
    "EndJob": YES_NO,
    "EndPickingList": YES_NO,
    "EndRouteCard": YES_NO,
    "PostNow": YES_NO,
    "AutoUpdate": YES_NO,
    **dict.fromkeys(
        (
            "ProductColorId",
            "ProductConfigurationId",
            "ProductSizeId",
            "ProductStyleId",
            "ProductVersionId",
            "ItemBatchNumber",
            "ProductSerialNumber",
            "LicensePlateNumber",
            "InventoryStatusId",
            "ProductionWarehouseId",
            "ProductionSiteId",
            "ProductionWarehouseLocationId",
            *(f"InventoryDimension{i}" for i in range(1, 13)),
        ),
        "string",
    ),
}
PICKING_LIST_LINE: dict[str, Kind] = {
    "ItemNumber": "string",
    "ConsumptionBOMQuantity": "real",
    "ProposalBOMQuantity": "real",
    "ScrapBOMQuantity": "real",
    "BOMUnitSymbol": "string",
    "ConsumptionInventoryQuantity": "real",
    "ProposalInventoryQuantity": "real",
    "ConsumptionCatchWeightQuantity": "real",
    "ProposalCatchWeightQuantity": "real",
    "ConsumptionDate": "date",
    "OperationNumber": "int",
    "LineNumber": "real",
    "PositionNumber": "string",
    "IsConsumptionEnded": YES_NO,
    "ErrorCause": ERROR_CAUSE,
    "InventoryLotId": "string",
}
ROUTE_CARD_LINE: dict[str, Kind] = {
    "OperationNumber": "int",
    "OperationPriority": PRIORITY,
    "OperationId": "string",
    "OperationsResourceId": "string",
    "Worker": "string",
    "HoursRouteCostCategoryId": "string",
    "QuantityRouteCostCategoryId": "string",
    "HourlyRate": "real",
    "Hours": "real",
    "GoodQuantity": "real",
    "ErrorQuantity": "real",
    "CatchWeightGoodQuantity": "real",
    "CatchWeightErrorQuantity": "real",
    "QuantityPrice": "real",
    "ProcessingPercentage": "real",
    "ConsumptionDate": "date",
    "TaskType": TASK_TYPE,
    "ErrorCause": ERROR_CAUSE,
    "OperationCompleted": YES_NO,
    "BOMConsumption": YES_NO,
    "ReportAsFinished": YES_NO,
}
END_FIELDS: dict[str, Kind] = {
    "ProductionOrderNumber": "string",
    "ExecutedDateTime": "datetime",
    "EndedDate": "date",
    "UseTimeAndAttendanceCost": YES_NO,
    "AutoReportAsFinished": YES_NO,
    "AutoUpdate": YES_NO,
}


@dataclass(frozen=True, slots=True)
class MessageSchema:
    header: Mapping[str, Kind]
    mandatory: frozenset[str]
    lines_key: str | None = None
    line: Mapping[str, Kind] = field(default_factory=dict)
    line_mandatory: frozenset[str] = frozenset()


SCHEMAS: dict[str, MessageSchema] = {
    "ProdProductionOrderStart": MessageSchema(START_FIELDS, frozenset({"ProductionOrderNumber"})),
    "ProdProductionOrderReportFinished": MessageSchema(
        {"ProductionOrderNumber": "string"},
        frozenset({"ProductionOrderNumber"}),
        "ReportFinishedLines",
        REPORT_FINISHED_LINE,
    ),
    "ProdProductionOrderPickingList": MessageSchema(
        {"ProductionOrderNumber": "string", "JournalNameId": "string"},
        frozenset({"ProductionOrderNumber"}),
        "PickingListLines",
        PICKING_LIST_LINE,
        frozenset({"ItemNumber"}),
    ),
    "ProdProductionOrderRouteCard": MessageSchema(
        {"ProductionOrderNumber": "string", "JournalNameId": "string"},
        frozenset({"ProductionOrderNumber"}),
        "RouteCardLines",
        ROUTE_CARD_LINE,
        frozenset({"OperationNumber"}),
    ),
    "ProdProductionOrderEnd": MessageSchema(END_FIELDS, frozenset({"ProductionOrderNumber"})),
}


class ProcessingError(Exception):
    """A message fails with this text in its log."""


def _check_value(where: str, name: str, kind: Kind, value: Any) -> None:
    if isinstance(kind, frozenset):
        if not isinstance(value, str) or value not in kind:
            allowed = ", ".join(sorted(kind))
            raise ProcessingError(
                f"{where}: '{value}' is not a valid value for field '{name}' ({allowed})."
            )
        return
    ok: bool
    if kind == "string":
        ok = isinstance(value, str)
    elif kind == "real":
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif kind == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind == "date":
        ok = isinstance(value, str) and _parses(date.fromisoformat, value, r"\d{4}-\d{2}-\d{2}")
    else:
        ok = isinstance(value, str) and _parses(
            datetime.fromisoformat, value, r"\d{4}-\d{2}-\d{2}T"
        )
    if not ok:
        raise ProcessingError(f"{where}: field '{name}' must be of type {kind}, got {value!r}.")


def _parses(parse: Callable[[str], object], value: str, shape: str) -> bool:
    if not re.match(shape, value):
        return False
    try:
        parse(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def _check_fields(
    where: str, doc: Any, fields: Mapping[str, Kind], mandatory: Iterable[str], strict: bool
) -> None:
    if not isinstance(doc, dict):
        raise ProcessingError(f"{where}: a JSON object was expected.")
    for name in mandatory:
        if name not in doc or doc[name] is None or doc[name] == "":
            raise ProcessingError(f"{where}: field '{name}' is mandatory.")
    for name, value in doc.items():
        if name not in fields:
            if strict:
                raise ProcessingError(f"{where}: field '{name}' is not supported.")
            continue
        if value is not None:
            _check_value(where, name, fields[name], value)


def validate_content(message_type: str, content: str, *, strict: bool = True) -> dict[str, Any]:
    """The parsed ``_messageContent`` of a message type, or :class:`ProcessingError`."""
    schema = SCHEMAS.get(message_type)
    if schema is None:
        raise ProcessingError(f"Message type '{message_type}' is not set up for this queue.")
    try:
        doc = json.loads(content)
    except ValueError as exc:
        raise ProcessingError(f"Message content could not be deserialized: {exc}.") from None
    allowed = dict(schema.header)
    if schema.lines_key:
        allowed[schema.lines_key] = "lines"
    if not isinstance(doc, dict):
        raise ProcessingError(f"{message_type}: the message content must be a JSON object.")
    _check_fields(
        message_type,
        {k: v for k, v in doc.items() if k != schema.lines_key},
        schema.header,
        schema.mandatory,
        strict,
    )
    if schema.lines_key:
        lines = doc.get(schema.lines_key)
        if not isinstance(lines, list) or not lines:
            raise ProcessingError(
                f"{message_type}: field '{schema.lines_key}' is mandatory (at least one line)."
            )
        for i, line in enumerate(lines, 1):
            where = f"{message_type}, {schema.lines_key} line {i}"
            _check_fields(where, line, schema.line, schema.line_mandatory, strict)
    return doc


# -- state ---------------------------------------------------------------------------------


@dataclass
class RouteOperation:
    """One operation of a production order's route, on one resource (its setup and process jobs
    are scheduled there). Times as F&O stores them: in the route's time unit, hours after
    ``hours_factor`` (``OperationsTimeToHourConversionFactor``); the process time is for
    ``process_quantity`` units. ``start``/``end`` are the plant's local date-times."""

    order: str
    number: int
    resource: str
    operation_id: str = ""
    priority: str = "Primary"
    setup_time: Decimal = Decimal(0)
    process_time: Decimal = Decimal(0)
    process_quantity: Decimal = Decimal(1)
    hours_factor: Decimal = Decimal(1)
    start: datetime | None = None
    end: datetime | None = None
    started: bool = False
    completed: bool = False
    setup_job: str = ""
    process_job: str = ""
    extra: dict[str, Any] = field(default_factory=dict)  # raw overrides of the route row

    def row(self, company: str) -> dict[str, Any]:
        row: dict[str, Any] = {
            "dataAreaId": company,
            "ProductionOrderNumber": self.order,
            "OperationNumber": self.number,
            "OperationPriority": self.priority,
            "OperationId": self.operation_id,
            "SetupTime": _json_num(self.setup_time),
            "ProcessTime": _json_num(self.process_time),
            "ProcessQuantity": _json_num(self.process_quantity),
            "OperationsTimeToHourConversionFactor": _json_num(self.hours_factor),
            **_date_time("ScheduledFrom", self.start),
            **_date_time("ScheduledEnd", self.end),
            "IsOperationStarted": "Yes" if self.started else "No",
            "IsOperationCompleted": "Yes" if self.completed else "No",
            "CostingOperationResourceId": self.resource,
        }
        row.update(self.extra)
        return row

    def job_rows(self, company: str) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for job, kind in ((self.setup_job, "Setup"), (self.process_job, "Process")):
            if not job:
                continue
            rows.append(
                {
                    "dataAreaId": company,
                    "JobId": job,
                    "ProductionOrderNumber": self.order,
                    "OperationNumber": self.number,
                    "OperationPriority": self.priority,
                    "RouteJobType": kind,
                    "OperationsResourceId": self.resource,
                    **_date_time("ScheduledFrom", self.start),
                    **_date_time("ScheduledEnd", self.end),
                    "JobStatus": "Completed" if self.completed else "Waiting",
                    "IsJobCancelled": "No",
                    "IsJobEnded": "Yes" if self.completed else "No",
                }
            )
        return rows


@dataclass
class Order:
    number: str
    item: str = ""
    quantity: Decimal = Decimal(1000)
    # Created | CostEstimated | Scheduled | Released | StartedUp | ReportedFinished | Ended
    status: str = "StartedUp"
    operations: frozenset[int] | None = None  # None: any operation number
    reported_good: Decimal = Decimal(0)
    name: str = ""
    stopped: bool = False
    start: datetime | None = None  # the plant's local date-time
    end: datetime | None = None
    company: str = ""  # "": the stand-in's first company
    route: dict[int, RouteOperation] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # raw overrides of the header row
    bom: dict[str, BomLine] = field(default_factory=dict)  # by item number

    def row(self, company: str) -> dict[str, Any]:
        row: dict[str, Any] = {
            "dataAreaId": self.company or company,
            "ProductionOrderNumber": self.number,
            "ProductionOrderName": self.name,
            "ItemNumber": self.item,
            "ProductionOrderStatus": self.status,
            "ScheduledQuantity": float(self.quantity),
            "RemainingReportAsFinishedQuantity": float(self.quantity - self.reported_good),
            **_date_time("ScheduledStart", self.start),
            **_date_time("ScheduledEnd", self.end),
            STOPPED_FIELD: "Yes" if self.stopped else "No",
        }
        row.update(self.extra)
        return row


@dataclass
class Message:
    control_number: int
    message_id: str | None
    company: str
    queue: str
    message_type: str
    content: str
    order: str
    due: float
    state: str = "Queued"  # Queued | Processed | Failed | Canceled
    log: str = ""
    attempts: int = 0
    journal_id: str | None = None
    scripted: tuple[str, int] | None = None  # (log text, attempts that fail)

    def row(self) -> dict[str, Any]:
        return {
            "MessageId": self.message_id,
            "ControlNumber": self.control_number,
            "MessageQueue": self.queue,
            "MessageType": self.message_type,
            "MessageState": self.state,
            "MessageStateLabel": self.state,
            "MessageProcessingResult": "Success" if self.state == "Processed" else self.state,
            "MessageInfolog": self.log,
            "MessageContent": self.content,
            "dataAreaId": self.company,
            "JournalId": self.journal_id,
        }


@dataclass(frozen=True, slots=True)
class BomLine:
    """A component of an order. ``flushing`` ``Manual``: consumed only by a picking list;
    any other principle: the stand-in consumes it itself with every route card of the order
    (``qty_per_unit`` x good and error quantity) unless the line says ``BOMConsumption``
    ``No`` -- the stand-in's model of D365's automatic consumption, not D365's exact rule."""

    item: str
    qty_per_unit: Decimal
    unit: str
    flushing: str = "Manual"
    operation: int = 0  # RouteOperationNumber; 0: none
    line_number: int = 1
    per: Decimal = Decimal(1)  # BOMLineQuantityDenominator: BOMLineQuantity is for so many
    batch: str = ""  # ItemBatchNumber
    extra: dict[str, Any] = field(default_factory=dict)  # raw overrides of the BOM line row

    def row(self, order: str, company: str) -> dict[str, Any]:
        row: dict[str, Any] = {
            "dataAreaId": company,
            "ProductionOrderNumber": order,
            "LineNumber": float(self.line_number),
            "LineType": "Item",
            "ItemNumber": self.item,
            "BOMLineQuantity": _json_num(self.qty_per_unit * self.per),
            "BOMLineQuantityDenominator": _json_num(self.per),
            "BOMLineUnitSymbol": self.unit,
            "FlushingPrinciple": self.flushing,
            "RouteOperationNumber": self.operation,
            "ItemBatchNumber": self.batch,
        }
        row.update(self.extra)
        return row


@dataclass(frozen=True, slots=True)
class ConsumedLine:
    """A quantity of a component consumed: by a picking list or by the stand-in's flushing."""

    message_id: str | None
    order: str
    operation: int | None
    item: str
    qty: Decimal
    unit: str
    source: str  # "picking_list" | "flushed"


@dataclass(frozen=True, slots=True)
class RouteCardLine:
    message_id: str | None
    order: str
    operation: int
    task: str
    hours: Decimal
    good: Decimal
    error: Decimal
    cause: str | None
    resource: str | None


@dataclass(frozen=True, slots=True)
class SendFault:
    status: int
    text: str
    retry_after_s: float | None = None


class D365State:
    """What the stand-in knows, the knobs that make it misbehave, and its ledger."""

    def __init__(
        self,
        *,
        tenant: str = "00000000-0000-4000-8000-000000000365",
        client_id: str = "edge-relay",
        client_secret: str = "s3cret",
        companies: Iterable[str] = ("usmf",),
        queues: Iterable[str] = ("JmgMES3P",),
        token_lifetime_s: float = 3600.0,
        process_delay_s: float = 0.1,
        retry_delay_s: float = 0.05,
        strict_fields: bool = True,
        bad_secret_status: int = 401,
    ) -> None:
        self.tenant = tenant
        self.client_id = client_id
        self.client_secret = client_secret
        self.companies = {c.lower() for c in companies}
        self.queues = set(queues)
        self.base_url = ""  # set by the runner; the expected scope is <base_url>/.default
        # knobs
        self.token_lifetime_s = token_lifetime_s
        self.process_delay_s = process_delay_s
        self.retry_delay_s = retry_delay_s
        self.strict_fields = strict_fields
        self.bad_secret_status = bad_secret_status  # 401 (erp-apis.md §3.6); AAD also uses 400
        self.outage = False
        self.outage_retry_after_s: float | None = 1.0
        self.latency_s = 0.0
        self.paused = False
        self._send_faults: list[SendFault] = []
        self._drops = 0
        self._hangs: list[float] = []
        self._message_faults: list[tuple[str, int]] = []
        self.order_faults: dict[str, str] = {}
        # data
        self.orders: dict[str, Order] = {}
        self.messages: list[Message] = []
        self.route_card_lines: list[RouteCardLine] = []
        self.consumed_lines: list[ConsumedLine] = []
        self.finished: dict[str, dict[str, Decimal]] = {}
        self.tokens: dict[str, float] = {}
        self.token_requests = 0
        self.send_requests = 0
        self.state_requests = 0
        self._journal = 0
        self._stopping = asyncio.Event()
        self._processor: asyncio.Task[None] | None = None
        # the data entities (orders down)
        self.products: dict[str, tuple[str, str]] = {}  # item -> (unit, name)
        self.page_size = MAX_PAGE  # the server's page size (a client may ask for less)
        self._read_faults: list[tuple[str | None, SendFault]] = []
        self.read_requests: Counter[str] = Counter()
        # the data-entity URLs asked for (path and query), the last 10,000
        self.read_log: deque[str] = deque(maxlen=10_000)
        self._jobs = 0

    # -- knobs -----------------------------------------------------------------------------

    def add_order(
        self,
        number: str,
        *,
        item: str = "",
        quantity: Decimal | int | str = 1000,
        status: str = "StartedUp",
        operations: Iterable[int] | None = None,
        name: str = "",
        start: datetime | None = None,
        end: datetime | None = None,
        stopped: bool = False,
        company: str = "",
    ) -> Order:
        """Register a production order; once any is registered, messages for others fail.
        ``start``/``end`` are the plant's local scheduled date-times; route operations come
        with :meth:`add_operation`."""
        order = Order(
            number,
            item,
            Decimal(quantity),
            status,
            frozenset(operations) if operations is not None else None,
            name=name,
            stopped=stopped,
            start=start,
            end=end,
            company=company.lower(),
        )
        self.orders[number] = order
        return order

    def add_operation(
        self,
        order: str,
        number: int,
        resource: str,
        *,
        setup_time: Decimal | int | str = 0,
        process_time: Decimal | int | str = 0,
        process_quantity: Decimal | int | str = 1,
        hours_factor: Decimal | int | str = 1,
        start: datetime | None = None,
        end: datetime | None = None,
        operation_id: str = "",
        priority: str = "Primary",
    ) -> RouteOperation:
        """A route operation of ``order`` on ``resource``, with a setup job (when there is setup
        time) and a process job scheduled there from ``start`` to ``end`` (local)."""
        target = self._get(order)
        self._jobs += 1
        setup_job = f"J{self._jobs:06d}" if Decimal(setup_time) else ""
        self._jobs += 1
        operation = RouteOperation(
            order,
            number,
            resource,
            operation_id=operation_id,
            priority=priority,
            setup_time=Decimal(setup_time),
            process_time=Decimal(process_time),
            process_quantity=Decimal(process_quantity),
            hours_factor=Decimal(hours_factor),
            start=start,
            end=end,
            setup_job=setup_job,
            process_job=f"J{self._jobs:06d}",
        )
        target.route[number] = operation
        target.operations = (target.operations or frozenset()) | {number}
        return operation

    def add_bom_line(
        self,
        order: str,
        item: str,
        *,
        qty_per_unit: Decimal | int | str,
        unit: str,
        flushing: str = "Manual",
        operation: int = 0,
        per: Decimal | int | str = 1,
        batch: str = "",
    ) -> BomLine:
        """A component of ``order`` (``ProductionOrderBillOfMaterialLines``): ``qty_per_unit``
        of ``unit`` per unit of the order, served as ``BOMLineQuantity`` for ``per`` units,
        on route operation ``operation`` (0: none); the same item again replaces its line.
        Once an order has any, a picking list of another item fails, and one in another
        unit."""
        target = self._get(order)
        before = target.bom.get(item)
        number = (
            before.line_number
            if before
            else max((b.line_number for b in target.bom.values()), default=0) + 1
        )
        line = BomLine(
            item,
            Decimal(str(qty_per_unit)),
            unit,
            flushing,
            operation=operation,
            line_number=number,
            per=Decimal(str(per)),
            batch=batch,
        )
        target.bom[item] = line
        return line

    def set_bom_raw(self, order: str, item: str, name: str, value: Any) -> None:
        """Any value for a field of a BOM line's row, as the entity will serve it."""
        target = self._get(order)
        line = target.bom.get(item)
        if line is None:
            raise KeyError(f"D365 stand-in: no BOM line of item {item} on production order {order}")
        target.bom[item] = replace(line, extra={**line.extra, name: value})

    def remove_bom_line(self, order: str, item: str) -> None:
        self._get(order).bom.pop(item, None)

    def consumption(self, order: str) -> dict[str, Decimal]:
        """Item -> the net quantity the order consumed (picking lists and flushing)."""
        net: dict[str, Decimal] = {}
        for line in self.consumed_lines:
            if line.order == order:
                net[line.item] = net.get(line.item, Decimal(0)) + line.qty
        return {k: v for k, v in net.items() if v}

    def add_product(self, item: str, unit: str = "PC", name: str = "") -> None:
        """A released product (``ReleasedProductsV2``) with its inventory unit."""
        self.products[item] = (unit, name)

    def _get(self, number: str) -> Order:
        order = self.orders.get(number)
        if order is None:
            raise KeyError(f"D365 stand-in: no production order {number}")
        return order

    def _operation(self, order: str, number: int) -> RouteOperation:
        operation = self._get(order).route.get(number)
        if operation is None:
            raise KeyError(f"D365 stand-in: no operation {number} on production order {order}")
        return operation

    def set_status(self, number: str, status: str) -> None:
        """The order's ``ProductionOrderStatus`` (Created, CostEstimated, Scheduled, Released,
        StartedUp, ReportedFinished, Ended)."""
        self._get(number).status = status

    def release(self, number: str) -> None:
        self.set_status(number, "Released")

    def start_up(self, number: str) -> None:
        self.set_status(number, "StartedUp")

    def reset(self, number: str, status: str = "Scheduled") -> None:
        """Reset status: the order goes back to ``status`` (no longer released)."""
        self.set_status(number, status)

    def end(self, number: str) -> None:
        self.set_status(number, "Ended")

    def stop_order(self, number: str, stopped: bool = True) -> None:
        """Set (or clear) the order's Stopped flag (``IsProductionOrderStopped``)."""
        self._get(number).stopped = stopped

    def resume_order(self, number: str) -> None:
        self.stop_order(number, False)

    def set_quantity(self, number: str, quantity: Decimal | int | str) -> None:
        self._get(number).quantity = Decimal(quantity)

    def set_dates(
        self,
        number: str,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        operation: int | None = None,
    ) -> None:
        """Reschedule the order (or one of its operations, with its jobs): local date-times;
        a date not given stays."""
        target: Order | RouteOperation = (
            self._get(number) if operation is None else self._operation(number, operation)
        )
        if start is not None:
            target.start = start
        if end is not None:
            target.end = end

    def move_operation(self, order: str, number: int, resource: str) -> None:
        """Schedule the operation's jobs on another resource."""
        self._operation(order, number).resource = resource

    def complete_operation(self, order: str, number: int, completed: bool = True) -> None:
        """``IsOperationCompleted`` (the operation's jobs end with it)."""
        self._operation(order, number).completed = completed

    def set_raw(self, order: str, name: str, value: Any, *, operation: int | None = None) -> None:
        """Any value for a field of the order's header row (or of an operation's route row), as
        the entity will serve it: for values a client must refuse."""
        if operation is None:
            self._get(order).extra[name] = value
        else:
            self._operation(order, operation).extra[name] = value

    def fail_next_read(
        self, status: int, text: str = "", *, count: int = 1, entity: str | None = None
    ) -> None:
        """The next ``count`` reads of a data entity (of ``entity`` only, when given) answer
        ``status`` with an OData error body."""
        self._read_faults.extend([(entity, SendFault(status, text))] * count)

    def take_read_fault(self, entity: str) -> SendFault | None:
        for i, (wanted, fault) in enumerate(self._read_faults):
            if wanted is None or wanted == entity:
                del self._read_faults[i]
                return fault
        return None

    def entity_rows(self, entity: str) -> list[dict[str, Any]]:
        """Every row of a data entity, every company."""
        default = next(iter(self.companies), "")
        if entity == HEADERS:
            return [o.row(default) for o in self.orders.values()]
        if entity == ROUTE_OPERATIONS:
            return [
                op.row(o.company or default)
                for o in self.orders.values()
                for op in sorted(o.route.values(), key=lambda x: x.number)
            ]
        if entity == ROUTE_JOBS:
            return [
                job
                for o in self.orders.values()
                for op in sorted(o.route.values(), key=lambda x: x.number)
                for job in op.job_rows(o.company or default)
            ]
        if entity == BOM_LINES:
            return [
                line.row(o.number, o.company or default)
                for o in self.orders.values()
                for line in sorted(o.bom.values(), key=lambda b: b.line_number)
            ]
        if entity == RELEASED_PRODUCTS:
            return [
                {
                    "dataAreaId": default,
                    "ItemNumber": item,
                    "ProductName": name,
                    "SearchName": name,
                    "InventoryUnitSymbol": unit,
                }
                for item, (unit, name) in self.products.items()
            ]
        raise KeyError(entity)

    def expire_tokens(self) -> None:
        """Every token issued so far is expired now (the next F&O call gets 401)."""
        self.tokens.clear()

    def fail_next(
        self, status: int, text: str = "", *, count: int = 1, retry_after_s: float | None = None
    ) -> None:
        """The next ``count`` SendMessage calls answer ``status`` and store nothing."""
        self._send_faults.extend([SendFault(status, text, retry_after_s)] * count)

    def drop_next(self, count: int = 1) -> None:
        """Commit then drop: the next ``count`` messages are stored, and the connection is
        closed without an answer."""
        self._drops += count

    def hang_next(self, seconds: float, count: int = 1) -> None:
        """The next ``count`` messages are stored, and the answer comes ``seconds`` later."""
        self._hangs.extend([seconds] * count)

    def fail_next_message(self, text: str, *, attempts: int = ATTEMPTS) -> None:
        """The next message processed fails with ``text`` in its log for ``attempts`` attempts
        (three or more: it ends Failed; fewer: it is Processed on a later attempt)."""
        self._message_faults.append((text, attempts))

    def fail_order(self, order: str, text: str) -> None:
        """Every message of ``order`` fails with ``text`` until :meth:`clear_order_fault`."""
        self.order_faults[order] = text

    def clear_order_fault(self, order: str) -> None:
        self.order_faults.pop(order, None)

    def cancel(self, message_id: str) -> None:
        """A user cancels the queued copies of a message."""
        for m in self.messages:
            if m.message_id == message_id and m.state == "Queued":
                m.state, m.log = "Canceled", "Canceled by user Admin."

    # -- the ledger ------------------------------------------------------------------------

    def by_id(self, message_id: str) -> list[Message]:
        return [m for m in self.messages if m.message_id == message_id]

    def processed_counts(self) -> Counter[str]:
        return Counter(
            m.message_id for m in self.messages if m.state == "Processed" and m.message_id
        )

    def assert_exactly_once(self) -> None:
        """No message id was processed more than once, and none was stored twice while the
        first copy was still good (Queued or Processed)."""
        twice = [mid for mid, n in self.processed_counts().items() if n > 1]
        assert not twice, f"processed more than once: {twice}"
        live = Counter(m.message_id for m in self.messages if m.message_id and m.state != "Failed")
        doubled = [mid for mid, n in live.items() if n > 1]
        assert not doubled, f"stored more than once: {doubled}"

    def route_cards(self, order: str, operation: int) -> list[RouteCardLine]:
        return [x for x in self.route_card_lines if x.order == order and x.operation == operation]

    def totals(self, order: str, operation: int) -> dict[str, Decimal]:
        lines = self.route_cards(order, operation)
        return {
            "good": sum((x.good for x in lines), Decimal(0)),
            "error": sum((x.error for x in lines), Decimal(0)),
            "hours": sum((x.hours for x in lines), Decimal(0)),
            "setup_hours": sum((x.hours for x in lines if x.task == "Setup"), Decimal(0)),
            "process_hours": sum((x.hours for x in lines if x.task == "Process"), Decimal(0)),
        }

    def reported_finished(self, order: str) -> dict[str, Decimal]:
        return dict(self.finished.get(order, {"good": Decimal(0), "error": Decimal(0)}))

    def ledger(self) -> dict[str, Any]:
        """Everything, JSON-ready (for ``/_control/ledger``)."""
        return {
            "messages": [m.row() for m in self.messages],
            "orders": {n: o.row(next(iter(self.companies), "")) for n, o in self.orders.items()},
            "route_card_lines": [
                {
                    "message_id": x.message_id,
                    "order": x.order,
                    "operation": x.operation,
                    "task": x.task,
                    "hours": str(x.hours),
                    "good": str(x.good),
                    "error": str(x.error),
                    "cause": x.cause,
                }
                for x in self.route_card_lines
            ],
            "finished": {o: {k: str(v) for k, v in t.items()} for o, t in self.finished.items()},
            "consumed_lines": [
                {
                    "message_id": x.message_id,
                    "order": x.order,
                    "operation": x.operation,
                    "item": x.item,
                    "qty": str(x.qty),
                    "unit": x.unit,
                    "source": x.source,
                }
                for x in self.consumed_lines
            ],
            "requests": {
                "token": self.token_requests,
                "send": self.send_requests,
                "state": self.state_requests,
            },
        }

    # -- the message processor -------------------------------------------------------------

    def start(self) -> None:
        self._stopping.clear()
        if self._processor is None:
            self._processor = asyncio.create_task(self._process_loop(), name="d365-processor")

    async def stop(self) -> None:
        self._stopping.set()
        task, self._processor = self._processor, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def wait_settled(self, timeout: float = 5.0) -> None:
        """Until no message is Queued (or ``timeout``)."""
        deadline = time.monotonic() + timeout
        while any(m.state == "Queued" for m in self.messages):
            if time.monotonic() > deadline:
                raise TimeoutError("D365 stand-in: messages still queued")
            await asyncio.sleep(0.01)

    async def _process_loop(self) -> None:
        while True:
            await asyncio.sleep(0.01)
            if not self.paused:
                self.process_due(time.monotonic())

    def process_due(self, now: float) -> None:
        """One pass: the first queued message of each order, when it is due."""
        heads: dict[str, Message] = {}
        for m in self.messages:
            if m.state == "Queued" and m.order not in heads:
                heads[m.order] = m
        for m in heads.values():
            if m.due <= now:
                self._attempt(m, now)

    def _attempt(self, m: Message, now: float) -> None:
        m.attempts += 1
        if m.attempts == 1 and self._message_faults:
            m.scripted = self._message_faults.pop(0)
        try:
            if m.scripted is not None and m.attempts <= m.scripted[1]:
                raise ProcessingError(m.scripted[0])
            doc = validate_content(m.message_type, m.content, strict=self.strict_fields)
            order = str(doc["ProductionOrderNumber"])
            if order in self.order_faults:
                raise ProcessingError(self.order_faults[order])
            m.journal_id = self._apply(m, doc)
        except ProcessingError as exc:
            m.log = str(exc)
            if m.attempts >= ATTEMPTS:
                m.state = "Failed"
            else:
                m.due = now + self.retry_delay_s
            return
        m.state, m.log = "Processed", "Message processed."

    def _order(self, number: str) -> Order | None:
        if not self.orders:
            return None
        order = self.orders.get(number)
        if order is None:
            raise ProcessingError(f"Production order {number} does not exist.")
        if order.status == "Ended":
            raise ProcessingError(f"Production order {number} is ended. Updating is not allowed.")
        return order

    def _next_journal(self, prefix: str) -> str:
        self._journal += 1
        return f"{prefix}-{self._journal:06d}"

    def _apply(self, m: Message, doc: dict[str, Any]) -> str | None:
        number = str(doc["ProductionOrderNumber"])
        order = self._order(number)
        kind = m.message_type
        if kind == "ProdProductionOrderStart":
            if order is not None:
                order.status = "StartedUp"
            return None
        if kind == "ProdProductionOrderEnd":
            if order is not None:
                if order.status == "Released":
                    raise ProcessingError(f"Production order {number} has not been started.")
                order.status = "Ended"
            return None
        if kind == "ProdProductionOrderPickingList":
            self.consumed_lines.extend(self._picking_list(m, number, order, doc))
            return self._next_journal("PL")
        if order is not None and order.status == "Released":
            raise ProcessingError(
                f"Production order {number} has not been started. Status: Released."
            )
        if kind == "ProdProductionOrderRouteCard":
            lines = doc["RouteCardLines"]
            new: list[RouteCardLine] = []
            good_by_op: dict[int, Decimal] = {}
            for line in lines:
                op = int(line["OperationNumber"])
                known = order.operations if order is not None else None
                if known is not None and op not in known:
                    raise ProcessingError(
                        f"Operation {op} does not exist on production order {number}."
                    )
                good = _dec(line.get("GoodQuantity"))
                good_by_op[op] = good_by_op.get(op, Decimal(0)) + good
                new.append(
                    RouteCardLine(
                        m.message_id,
                        number,
                        op,
                        str(line.get("TaskType") or "Process"),
                        _dec(line.get("Hours")),
                        good,
                        _dec(line.get("ErrorQuantity")),
                        line.get("ErrorCause"),
                        line.get("OperationsResourceId"),
                    )
                )
            if order is not None:
                for op, good in good_by_op.items():
                    done = self.totals(number, op)["good"]
                    remaining = order.quantity - done
                    if good > remaining:
                        raise ProcessingError(
                            f"The good quantity {good} exceeds the remaining quantity "
                            f"{remaining} of operation {op} on production order {number}."
                        )
                    if done + good < 0:
                        raise ProcessingError(
                            f"The quantity {good} cannot be reversed: only {done} is reported "
                            f"on operation {op} of production order {number}."
                        )
            self.route_card_lines.extend(new)
            if order is not None and order.bom:
                pieces = sum(
                    (
                        _dec(line.get("GoodQuantity")) + _dec(line.get("ErrorQuantity"))
                        for line in lines
                        if line.get("BOMConsumption") != "No"
                    ),
                    Decimal(0),
                )
                for bom in order.bom.values():
                    if bom.flushing != "Manual" and pieces:
                        self.consumed_lines.append(
                            ConsumedLine(
                                m.message_id,
                                number,
                                None,
                                bom.item,
                                bom.qty_per_unit * pieces,
                                bom.unit,
                                "flushed",
                            )
                        )
            return self._next_journal("RC")
        # report as finished
        good = sum(
            (_dec(x.get("ReportedGoodQuantity")) for x in doc["ReportFinishedLines"]), Decimal(0)
        )
        error = sum(
            (_dec(x.get("ReportedErrorQuantity")) for x in doc["ReportFinishedLines"]), Decimal(0)
        )
        if order is not None:
            remaining = order.quantity - order.reported_good
            if good > remaining:
                raise ProcessingError(
                    f"The quantity {good} exceeds the remaining quantity {remaining} to report "
                    f"as finished on production order {number}."
                )
            order.reported_good += good
            if order.reported_good >= order.quantity:
                order.status = "ReportedFinished"
        totals = self.finished.setdefault(number, {"good": Decimal(0), "error": Decimal(0)})
        totals["good"] += good
        totals["error"] += error
        return self._next_journal("RAF")

    def _picking_list(
        self, m: Message, number: str, order: Order | None, doc: Mapping[str, Any]
    ) -> list[ConsumedLine]:
        """The lines of a picking list, checked: a quantity that is not 0, an item D365 knows
        (the order's BOM when it has one, else the released products when any), its unit."""
        consumed: list[ConsumedLine] = []
        for i, line in enumerate(doc["PickingListLines"], 1):
            where = f"PickingListLines line {i}"
            item = str(line["ItemNumber"])
            qty = _dec(line.get("ConsumptionBOMQuantity"))
            if not qty:
                raise ProcessingError(
                    f"{where}: field 'ConsumptionBOMQuantity' must not be 0 for item {item}."
                )
            unit = str(line.get("BOMUnitSymbol") or "")
            expected: str | None = None
            if order is not None and order.bom:
                if item not in order.bom:
                    raise ProcessingError(
                        f"{where}: item {item} is not on the BOM of production order {number}."
                    )
                expected = order.bom[item].unit
            elif self.products:
                if item not in self.products:
                    raise ProcessingError(f"{where}: item number {item} does not exist.")
                expected = self.products[item][0]
            if unit and expected and unit != expected:
                raise ProcessingError(
                    f"{where}: field 'BOMUnitSymbol' {unit} is not the unit {expected} of "
                    f"item {item}."
                )
            operation = line.get("OperationNumber")
            consumed.append(
                ConsumedLine(
                    m.message_id,
                    number,
                    int(operation) if operation is not None else None,
                    item,
                    qty,
                    unit or (expected or ""),
                    "picking_list",
                )
            )
        return consumed

    # -- requests --------------------------------------------------------------------------

    def issue_token(self) -> str:
        token = secrets.token_urlsafe(24)
        self.tokens[token] = time.monotonic() + self.token_lifetime_s
        return token

    def authorized(self, request: Request) -> bool:
        header = request.headers.get("authorization", "")
        if not header.startswith("Bearer "):
            return False
        until = self.tokens.get(header[len("Bearer ") :])
        return until is not None and time.monotonic() < until

    def take_send_fault(self) -> SendFault | None:
        return self._send_faults.pop(0) if self._send_faults else None

    def take_drop(self) -> bool:
        if self._drops:
            self._drops -= 1
            return True
        return False

    def take_hang(self) -> float | None:
        return self._hangs.pop(0) if self._hangs else None

    def store(self, body: Mapping[str, Any]) -> Message:
        content = str(body["_messageContent"])
        try:
            doc = json.loads(content)
            order = str(doc.get("ProductionOrderNumber", "")) if isinstance(doc, dict) else ""
        except ValueError:
            order = ""
        message = Message(
            control_number=len(self.messages) + 1,
            message_id=body.get("_messageId"),
            company=str(body["_companyId"]),
            queue=str(body["_messageQueue"]),
            message_type=str(body["_messageType"]),
            content=content,
            order=order,
            due=time.monotonic() + self.process_delay_s,
        )
        self.messages.append(message)
        return message

    async def sleep_unless_stopping(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)


def _dec(value: Any) -> Decimal:
    if value is None:
        return Decimal(0)
    return Decimal(str(value))


def _json_num(value: Decimal) -> int | float:
    return int(value) if value == value.to_integral_value() else float(value)


def _date_time(prefix: str, when: datetime | None) -> dict[str, Any]:
    """F&O's date + time-of-day pair: ``<prefix>Date`` (an Edm.DateTimeOffset at midnight, the
    empty date 1900-01-01 when none) and ``<prefix>Time`` (seconds after midnight)."""
    if when is None:
        return {f"{prefix}Date": NULL_DATE, f"{prefix}Time": 0}
    midnight = when.replace(hour=0, minute=0, second=0, microsecond=0)
    return {
        f"{prefix}Date": f"{when.date().isoformat()}T00:00:00Z",
        f"{prefix}Time": int((when - midnight).total_seconds()),
    }


# -- OData v4 queries on the data entities -------------------------------------------------


class ODataError(Exception):
    """A 400 with an OData error body."""


class _Filter(Filter[str]):
    tokens = re.compile(
        r"\s*(?:(?P<lp>\()|(?P<rp>\))|(?P<str>'(?:[^']|'')*')"
        r"|(?P<enum>[A-Za-z_][\w.]*'(?:[^']|'')*')|(?P<num>-?\d+(?:\.\d+)?)"
        r"|(?P<word>[A-Za-z_]\w*))"
    )
    at_text = "Syntax error at position {pos} in '{text}'."
    end_text = "Unexpected end of the expression '{text}'."
    near_text = "Unexpected '{token}' in '{text}'."
    paren_text = "')' expected in '{text}'."
    op_text = "Unknown operator '{op}' in '{text}'."

    def __init__(self, text: str, fields: Iterable[str]) -> None:
        self.known = set(fields)
        super().__init__(text)

    def error(self, message: str) -> Exception:
        return ODataError(message)

    def field(self, kind: str, name: str) -> str:
        if kind != "word":
            raise ODataError(f"A property name was expected, found '{name}' in '{self.text}'.")
        if name not in self.known:
            raise ODataError(f"Could not find a property named '{name}' on the entity.")
        return name

    def leaf(self, name: str, op: str, literal: tuple[str, str]) -> Predicate:
        kind, value = literal
        wanted: Any
        if kind == "str":
            wanted = unquote(value)
        elif kind == "enum":
            wanted = unquote(value[value.index("'") :])
        elif kind == "num":
            wanted = Decimal(value)
        elif kind == "word" and value in ("true", "false"):
            wanted = value == "true"
        elif kind == "word" and value == "null":
            wanted = None
        else:
            raise ODataError(f"A literal was expected, found '{value}' in '{self.text}'.")
        return lambda row: _compare(row.get(name), op, wanted)


def parse_filter(text: str, fields: Iterable[str]) -> Predicate:
    """A predicate for a ``$filter`` of comparisons (``eq ne gt ge lt le``) of a property with a
    string, number, ``true``/``false``/``null`` or enum literal (``Ns.Type'Value'``), joined by
    ``and``/``or``/``not`` and parentheses. Strings compare case-insensitively, as SQL Server
    does in F&O. An unknown property is :class:`ODataError`."""
    return _Filter(text, fields).parse()


def _compare(actual: Any, op: str, wanted: Any) -> bool:
    if wanted is None or actual is None:
        same = actual is None and wanted is None
        return same if op == "eq" else (not same if op == "ne" else False)
    left: Any
    right: Any
    if isinstance(wanted, Decimal):
        try:
            left, right = Decimal(str(actual)), wanted
        except ArithmeticError:
            return op == "ne"
    elif isinstance(wanted, bool):
        left, right = bool(actual), wanted
    else:
        left, right = str(actual).casefold(), str(wanted).casefold()
    return compare(op, left, right)


# -- the app -------------------------------------------------------------------------------

_ENVELOPE = ("_companyId", "_messageQueue", "_messageType", "_messageContent")


def _fault(text: str, exception_type: str = "XppServicesDeserializationException") -> JSONResponse:
    return JSONResponse(
        {"Message": text, "ExceptionType": exception_type, "ActivityId": str(uuid.uuid4())},
        status_code=500,
    )


def _aad_error(status: int, error: str, description: str, code: int) -> JSONResponse:
    return JSONResponse(
        {
            "error": error,
            "error_description": f"AADSTS{code}: {description}",
            "error_codes": [code],
            "timestamp": datetime.now().strftime("%Y-%m-%d %H:%M:%SZ"),
            "trace_id": str(uuid.uuid4()),
            "correlation_id": str(uuid.uuid4()),
        },
        status_code=status,
    )


def _unauthorized() -> Response:
    return Response(status_code=401, headers={"WWW-Authenticate": "Bearer"})


ENTITY_FIELDS: dict[str, frozenset[str]] = {
    HEADERS: frozenset(Order("").row("")),
    ROUTE_OPERATIONS: frozenset(RouteOperation("", 0, "").row("")),
    ROUTE_JOBS: frozenset(RouteOperation("", 0, "", process_job="J").job_rows("")[0]),
    RELEASED_PRODUCTS: frozenset(
        {"dataAreaId", "ItemNumber", "ProductName", "SearchName", "InventoryUnitSymbol"}
    ),
    BOM_LINES: frozenset(BomLine("", Decimal(0), "").row("", "")),
}


def _local(value: Any) -> datetime | None:
    """A local date-time from the control API (ISO 8601 without an offset), or None."""
    return datetime.fromisoformat(str(value)) if value else None


def _changed(change: Callable[[], object]) -> JSONResponse:
    """``{"ok": true}`` once ``change`` is made; 404 with the error when it names an order or an
    operation the stand-in does not have (or a field is missing)."""
    try:
        change()
    except KeyError as exc:
        return JSONResponse({"ok": False, "error": str(exc)}, status_code=404)
    return JSONResponse({"ok": True})


def _odata_error(status: int, message: str) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": "", "message": message, "innererror": {"message": message}}},
        status_code=status,
    )


def _int_param(request: Request, name: str) -> int | None:
    value = request.query_params.get(name)
    if value is None:
        return None
    if not value.isdigit():
        raise ODataError(f"Invalid value '{value}' for {name}.")
    return int(value)


def _query(state: D365State, entity: str, fields: frozenset[str], request: Request) -> Response:
    """One page of ``entity``: ``cross-company``, ``$filter``, ``$select``, ``$top``, ``$skip``
    and the page size (the server's, or less when the client sends ``Prefer:
    odata.maxpagesize``), with ``@odata.nextLink`` when more rows follow."""
    params = request.query_params
    rows = state.entity_rows(entity)
    if params.get("cross-company", "").lower() != "true":
        default = next(iter(state.companies), "")
        rows = [r for r in rows if str(r.get("dataAreaId", "")).lower() == default]
    query = params.get("$filter")
    if query:
        predicate = parse_filter(query, fields)
        rows = [r for r in rows if predicate(r)]
    select = params.get("$select")
    if select:
        names = [n.strip() for n in select.split(",") if n.strip()]
        unknown = [n for n in names if n not in fields]
        if unknown:
            raise ODataError(f"Could not find a property named '{unknown[0]}' on the entity.")
        rows = [{n: r.get(n) for n in names} for r in rows]
    skip = _int_param(request, "$skip") or 0
    top = _int_param(request, "$top")
    rows = rows[skip:]
    if top is not None:
        rows = rows[:top]
    size = min(MAX_PAGE, max(1, state.page_size))
    headers: dict[str, str] = {}
    prefer = re.search(r"odata\.maxpagesize=(\d+)", request.headers.get("prefer", ""))
    if prefer and 0 < int(prefer.group(1)) < size:
        size = int(prefer.group(1))
        headers["Preference-Applied"] = f"odata.maxpagesize={size}"
    body: dict[str, Any] = {
        "@odata.context": f"{state.base_url}/data/$metadata#{entity}",
        "value": rows[:size],
    }
    if len(rows) > size:
        rest = [(k, v) for k, v in params.multi_items() if k not in ("$skip", "$top")]
        rest.append(("$skip", str(skip + size)))
        if top is not None:
            rest.append(("$top", str(top - size)))
        body["@odata.nextLink"] = (
            f"{state.base_url}{request.url.path}?{urlencode(rest, quote_via=quote)}"
        )
    return JSONResponse(body, headers=headers)


def build_app(state: D365State) -> FastAPI:
    app = FastAPI(title="D365 SCM stand-in", docs_url=None, redoc_url=None, openapi_url=None)

    @app.post("/{tenant}/oauth2/v2.0/token")
    async def token(tenant: str, request: Request) -> Response:
        state.token_requests += 1
        raw = parse_qs((await request.body()).decode("utf-8", "replace"))
        form = {key: values[-1] for key, values in raw.items()}
        if tenant != state.tenant:
            return _aad_error(400, "invalid_request", f"Tenant '{tenant}' not found.", 90002)
        if form.get("grant_type") != "client_credentials":
            return _aad_error(
                400,
                "unsupported_grant_type",
                "The provided value for grant_type is not supported.",
                70003,
            )
        if form.get("client_id") != state.client_id:
            return _aad_error(
                400,
                "unauthorized_client",
                f"Application with identifier '{form.get('client_id')}' was not found.",
                700016,
            )
        if form.get("client_secret") != state.client_secret:
            return _aad_error(
                state.bad_secret_status,
                "invalid_client",
                "Invalid client secret provided. Ensure the secret being sent in the request is "
                f"the client secret value, not the client secret ID, for app '{state.client_id}'.",
                7000215,
            )
        expected = f"{state.base_url}/.default"
        if form.get("scope") != expected:
            return _aad_error(
                400,
                "invalid_scope",
                f"The provided value '{form.get('scope')}' for the input parameter 'scope' is not "
                "valid.",
                70011,
            )
        lifetime = int(state.token_lifetime_s)
        return JSONResponse(
            {
                "token_type": "Bearer",
                "expires_in": lifetime,
                "ext_expires_in": lifetime,
                "access_token": state.issue_token(),
            }
        )

    async def fo_gate(request: Request) -> Response | None:
        if state.latency_s:
            await state.sleep_unless_stopping(state.latency_s)
        if state.outage:
            headers = {}
            if state.outage_retry_after_s is not None:
                headers["Retry-After"] = str(int(state.outage_retry_after_s))
            return Response(
                "Service Unavailable: the environment is in maintenance.",
                status_code=503,
                headers=headers,
            )
        if not state.authorized(request):
            return _unauthorized()
        return None

    @app.post(SEND_PATH)
    async def send_message(request: Request) -> Response:
        state.send_requests += 1
        gate = await fo_gate(request)
        if gate is not None:
            return gate
        fault = state.take_send_fault()
        if fault is not None:
            headers = {}
            if fault.retry_after_s is not None:
                headers["Retry-After"] = str(int(fault.retry_after_s))
            return JSONResponse(
                {"Message": fault.text or f"Scripted fault {fault.status}."},
                status_code=fault.status,
                headers=headers,
            )
        try:
            body = await request.json()
        except ValueError:
            return _fault("The request body is not valid JSON.")
        if not isinstance(body, dict):
            return _fault("The request body must be a JSON object of the operation's parameters.")
        for key in body:
            if key not in _ENVELOPE and key != "_messageId":
                return _fault(f"Parameter '{key}' is not found within the request content body.")
        for key in _ENVELOPE:
            if not isinstance(body.get(key), str):
                return _fault(
                    f"An exception occured when deserializing a parameter - Exception occurred "
                    f"when parsing and deserializing parameter '{key}' - 'a string is expected'"
                )
        mid = body.get("_messageId")
        if mid is not None:
            try:
                uuid.UUID(str(mid))
            except ValueError:
                return _fault(f"Parameter '_messageId' is not a GUID: {mid!r}.")
        if str(body["_companyId"]).lower() not in state.companies:
            return _fault(f"Company '{body['_companyId']}' does not exist.", "XppException")
        if body["_messageQueue"] not in state.queues:
            return _fault(
                f"Message queue '{body['_messageQueue']}' does not exist.", "XppException"
            )
        state.store(body)
        if state.take_drop():
            request.scope["d365.holder"]["drop"] = True
            return Response(status_code=200)
        hang = state.take_hang()
        if hang is not None:
            await state.sleep_unless_stopping(hang)
        return Response(status_code=200)

    @app.get(f"/data/{STATE_ENTITY}")
    async def message_states(request: Request) -> Response:
        state.state_requests += 1
        gate = await fo_gate(request)
        if gate is not None:
            return gate
        rows = [m.row() for m in state.messages]
        query = request.query_params.get("$filter")
        if query:
            ids: set[str] = set()
            for term in re.split(r"\s+or\s+", query.strip()):
                match = re.fullmatch(r"\(?\s*MessageId\s+eq\s+'([^']*)'\s*\)?", term)
                if match is None:
                    return JSONResponse(
                        {
                            "error": {
                                "code": "",
                                "message": f"The query specified in the URI is not valid: "
                                f"{query!r}",
                            }
                        },
                        status_code=400,
                    )
                ids.add(match.group(1))
            rows = [r for r in rows if r["MessageId"] in ids]
        top = request.query_params.get("$top")
        if top is not None and top.isdigit():
            rows = rows[: int(top)]
        return JSONResponse(
            {"@odata.context": f"{state.base_url}/data/$metadata#{STATE_ENTITY}", "value": rows}
        )

    @app.get("/data/{entity}")
    async def data_entity(entity: str, request: Request) -> Response:
        state.read_requests[entity] += 1
        state.read_log.append(str(request.url.path) + "?" + str(request.url.query))
        gate = await fo_gate(request)
        if gate is not None:
            return gate
        fields = ENTITY_FIELDS.get(entity)
        if fields is None:
            return _odata_error(404, f"Resource not found for the segment '{entity}'.")
        fault = state.take_read_fault(entity)
        if fault is not None:
            return _odata_error(fault.status, fault.text or f"Scripted fault {fault.status}.")
        try:
            return _query(state, entity, fields, request)
        except ODataError as exc:
            return _odata_error(400, f"The query specified in the URI is not valid. {exc}")

    # -- control (for `python -m`; tests use D365State directly) -----------------------------

    @app.get("/_control/ledger")
    async def control_ledger() -> Response:
        return JSONResponse(state.ledger())

    @app.post("/_control/orders")
    async def control_order(request: Request) -> Response:
        body = await request.json()
        state.add_order(
            str(body["number"]),
            item=str(body.get("item", "")),
            quantity=str(body.get("quantity", 1000)),
            status=str(body.get("status", "StartedUp")),
            operations=body.get("operations"),
            name=str(body.get("name", "")),
            start=_local(body.get("start")),
            end=_local(body.get("end")),
            stopped=bool(body.get("stopped", False)),
        )
        return JSONResponse({"ok": True})

    @app.post("/_control/operations")
    async def control_operation(request: Request) -> Response:
        body = await request.json()
        return _changed(
            lambda: state.add_operation(
                str(body["order"]),
                int(body["number"]),
                str(body["resource"]),
                setup_time=str(body.get("setup_time", 0)),
                process_time=str(body.get("process_time", 0)),
                process_quantity=str(body.get("process_quantity", 1)),
                hours_factor=str(body.get("hours_factor", 1)),
                start=_local(body.get("start")),
                end=_local(body.get("end")),
                operation_id=str(body.get("operation_id", "")),
            )
        )

    @app.post("/_control/products")
    async def control_product(request: Request) -> Response:
        body = await request.json()
        state.add_product(str(body["item"]), str(body.get("unit", "PC")), str(body.get("name", "")))
        return JSONResponse({"ok": True})

    @app.post("/_control/orders/{number}")
    async def control_change(number: str, request: Request) -> Response:
        """``{"status"?, "stopped"?, "quantity"?, "start"?, "end"?, "operation"?, "resource"?,
        "completed"?}``: change an order (or, with ``operation``, one of its operations)."""
        body = await request.json()

        def change() -> None:
            operation = body.get("operation")
            if "status" in body:
                state.set_status(number, str(body["status"]))
            if "stopped" in body:
                state.stop_order(number, bool(body["stopped"]))
            if "quantity" in body:
                state.set_quantity(number, str(body["quantity"]))
            if "start" in body or "end" in body:
                state.set_dates(
                    number,
                    start=_local(body.get("start")),
                    end=_local(body.get("end")),
                    operation=None if operation is None else int(operation),
                )
            if operation is not None and "resource" in body:
                state.move_operation(number, int(operation), str(body["resource"]))
            if operation is not None and "completed" in body:
                state.complete_operation(number, int(operation), bool(body["completed"]))

        return _changed(change)

    @app.post("/_control/knobs")
    async def control_knobs(request: Request) -> Response:
        body = await request.json()
        for key in ("outage", "paused", "strict_fields"):
            if key in body:
                setattr(state, key, bool(body[key]))
        for key in ("latency_s", "process_delay_s", "token_lifetime_s"):
            if key in body:
                setattr(state, key, float(body[key]))
        if "page_size" in body:
            state.page_size = int(body["page_size"])
        if "fail_next_read" in body:
            spec = body["fail_next_read"]
            state.fail_next_read(
                int(spec["status"]), str(spec.get("text", "")), entity=spec.get("entity")
            )
        if body.get("expire_tokens"):
            state.expire_tokens()
        if "fail_next" in body:
            spec = body["fail_next"]
            state.fail_next(int(spec["status"]), str(spec.get("text", "")))
        if "fail_next_message" in body:
            state.fail_next_message(str(body["fail_next_message"]))
        if body.get("drop_next"):
            state.drop_next(int(body["drop_next"]))
        if body.get("hang_next_s"):
            state.hang_next(float(body["hang_next_s"]))
        return JSONResponse({"ok": True})

    return app


ASGIApp = Callable[
    [dict[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]],
    Awaitable[None],
]


def with_drop(app: FastAPI) -> ASGIApp:
    """Wrap the app so an endpoint can close the connection instead of answering (commit then
    drop): it sets ``scope["d365.holder"]["drop"]``, and the response never leaves."""

    async def wrapped(
        scope: dict[str, Any],
        receive: Callable[[], Awaitable[Any]],
        send: Callable[[Any], Awaitable[None]],
    ) -> None:
        if scope.get("type") != "http":
            await app(scope, receive, send)
            return
        holder: dict[str, bool] = {}
        scope["d365.holder"] = holder

        async def guarded_send(message: Any) -> None:
            if holder.get("drop"):
                cycle = getattr(receive, "__self__", None)
                transport = getattr(cycle, "transport", None)
                if transport is not None:
                    transport.abort()
                    cycle.disconnected = True  # type: ignore[union-attr]
                return
            await send(message)

        await app(scope, receive, guarded_send)

    return wrapped


# -- the runner ----------------------------------------------------------------------------


class D365StandIn(AsyncLifecycle):
    """``async with D365StandIn() as d365:`` serves on 127.0.0.1 (a free port unless given)."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, **state: Any) -> None:
        self.host = host
        self.port = port
        self.state = D365State(**state)
        self._server: QuietServer | None = None
        self._task: asyncio.Task[None] | None = None
        self._sock: socket.socket | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def token_url(self) -> str:
        return f"{self.base_url}/{self.state.tenant}/oauth2/v2.0/token"

    async def _astart(self) -> None:
        sock = bind(self.host, self.port)
        self._sock = sock
        self.port = sock.getsockname()[1]
        self.state.base_url = self.base_url
        config = uvicorn_config(
            with_drop(build_app(self.state)),
            log_level="critical",
            http="h11",
            proxy_headers=False,
        )
        self._server = QuietServer(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name="d365-stand-in")
        try:
            started = await asyncio.wait_for(until_started(self._server, self._task, 0.01), 5.0)
        except TimeoutError:
            raise TimeoutError("D365 stand-in did not start") from None
        if not started:
            self._task.result()
            raise RuntimeError("D365 stand-in stopped while starting")
        self.state.start()

    async def _astop(self) -> None:
        await self.state.stop()
        server, task = self._server, self._task
        if server is not None and task is not None:
            server.should_exit = True
            try:
                await asyncio.wait_for(asyncio.shield(task), 0.9)
            except (TimeoutError, asyncio.CancelledError):
                server.force_exit = True
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if self._sock is not None:
            self._sock.close()
        self._server = self._task = self._sock = None


async def _main(args: argparse.Namespace) -> None:
    async with D365StandIn(
        host=args.host,
        port=args.port,
        client_id=args.client_id,
        client_secret=args.client_secret,
        process_delay_s=args.process_delay_s,
    ) as d365:
        print(f"D365 stand-in on {d365.base_url}", flush=True)
        print(f"  token URL  {d365.token_url}")
        print(f"  client     {args.client_id}")
        print(f"  ledger     {d365.base_url}/_control/ledger", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--client-id", default="edge-relay")
    parser.add_argument("--client-secret", default="s3cret")
    parser.add_argument("--process-delay-s", type=float, default=0.5)
    asyncio.run(_main(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
