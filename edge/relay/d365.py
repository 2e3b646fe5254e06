"""Dynamics 365 Supply Chain Management: confirmations through the MES integration API.

Every confirmation becomes one or more messages for the message processor, sent with
``POST {base_url}/api/services/SysMessageServices/SysMessageService/SendMessage`` and the body
``{"_companyId", "_messageQueue", "_messageType", "_messageContent"}`` (``_messageContent`` the
inner document as a JSON *string*). F&O only enqueues: a 2xx means "stored", and a batch job
processes the message later (Queued -> Processed, or Failed after three attempts, with a log).
So :meth:`D365Adapter.post` answers :class:`Submitted` and :meth:`D365Adapter.poll` reads the
message states until they are final.

What a posting sends (in this order; D365 processes the messages of one production order in
the order they arrive):

- ``ProdProductionOrderStart`` for the order, when ``start_on_first`` and no start message for
  that order is in D365 yet (its id is made from the company and the order, so the first
  posting of an order sends it and the others find it; postings of one order that would send
  it go one at a time). ``StartedDate`` is the plant's date of the period's start.
- ``ProdProductionOrderRouteCard`` (always): a ``Setup`` line with the setup hours (when any), a
  ``Process`` line with the machine hours, the good quantity (yield) and the error quantity
  (scrap) with its ``ErrorCause``, one more ``Process`` line per further error cause, and a
  labour line when ``labour_resource`` is set. ``OperationsResourceId`` is the work center,
  ``OperationNumber`` the operation as an integer (an operation that is not a number is
  :class:`Rejected` before anything is sent), ``ConsumptionDate`` the posting date (the
  plant's date, in ``timezone``, of the period's end when the posting has none), ``Hours`` in
  hours. ``OperationCompleted`` is ``Yes`` on a final confirmation. The error cause comes from
  the scrap reasons through ``error_causes`` (scrap without a reason: ``default_error_cause``).
- ``ProdProductionOrderPickingList`` when the posting has goods movements to send
  (``goods_movements``: ``recorded``, the default, those of components not backflushed, which
  D365 flushes itself by their flushing principle; ``all`` every one, and the start, route card
  and report-finished tell D365 not to consume the BOM itself: ``AutomaticBOMConsumptionRule``
  ``Never``, ``BOMConsumption`` ``No``; ``none`` none): a line per movement with
  ``ItemNumber``, ``ConsumptionBOMQuantity`` (negative for a return), ``BOMUnitSymbol``,
  ``ConsumptionDate`` and ``OperationNumber``; ``JournalNameId`` from
  ``picking_list_journal``. The line has no batch field in the documentation, so the
  component's batch is not sent. Its id comes from the ``idem_key``: a resend (or a
  resubmission) never consumes twice what a processed picking list consumed.
- ``ProdProductionOrderReportFinished`` for a final confirmation when
  ``report_finished_on_final``: this posting's yield as ``ReportedGoodQuantity`` and scrap as
  ``ReportedErrorQuantity``, ``ItemNumber`` the material, ``ItemBatchNumber`` the produced
  batch, ``ReportAsFinishedDate`` the posting date, ``ExecutedDateTime`` the period's end
  (UTC). A :class:`Posting` carries no totals, so earlier partial confirmations of the
  operation are *not* reported as finished by it.
- ``ProdProductionOrderEnd`` for a final confirmation when ``end_on_final`` (off by default:
  the documentation says End puts the order in its final status *Ended*, "no more quantities
  will be produced", and the final confirmation of one operation does not say the order is
  done).

Rework quantities and the split have no field in these messages and are not sent; the worker
(``Worker``) is not sent either.

**Not confirmed** (the documentation has none of it; see ``erp-apis.md`` §3.2/§3.4):

- *Message id.* The documented ``SendMessage`` call has four parameters and no id or
  correlation field. This adapter sends a fifth envelope key, ``_messageId``, with a GUID made
  from the posting's ``external_id`` (same key, same id), and expects D365 to store it as the
  message's id. A real environment must be extended to take it.
- *Message state.* No OData entity for message-processor messages was found. This adapter reads
  ``GET {base_url}/data/{state_entity}?$filter=MessageId eq '<id>' or ...&cross-company=true``
  and expects rows with ``MessageId``, ``MessageState`` (``Queued``/``Processed``/``Failed``/
  ``Canceled``), ``MessageInfolog`` (the log text), ``ControlNumber`` and, when the processing
  made a journal, ``JournalId`` -- the field names of the documented "message processed"
  business event, plus ``JournalId``. A real environment needs a custom entity of that shape.
- *Duplicates.* Whether D365 refuses a second message with the same id is unknown, so before
  sending, :meth:`D365Adapter.post` reads the states of the posting's messages and sends only
  those not in D365 yet (or whose last copy Failed or was Canceled: a person resubmitting a
  rejected posting wants it processed again). A retry after a :class:`Transient` half-way
  (route card stored, report-finished refused) therefore sends only what is missing.
- *Reversal.* The MES integration documents no reversal. :meth:`D365Adapter.reverse` posts a
  route card with the negated hours and quantities (and, for a final confirmation with
  ``report_finished_on_final``, a report-finished with negated quantities), as a correcting
  route-card journal line would be entered by hand. It never reverses a start or an end (a
  reversal on an ended order fails in D365 and comes back :class:`Rejected`). The reversal's
  messages have ids of their own (from the reversal's ``external_id``).
- *Error bodies.* The body and status of an F&O JSON-service fault are not documented: a 400 is
  taken as the ERP refusing the data (:class:`Rejected` with its ``Message``), 5xx, 408 and
  429 as "not now" (:class:`Transient`, honouring ``Retry-After``), any other 4xx (403, 404) as
  a configuration problem (:class:`Transient` too, with the status and the ERP's text).

What comes back: :class:`Submitted` with ``ref`` = ``{"start"?, "route_card",
"report_finished"?, "end"?}`` (kind -> message id); :meth:`D365Adapter.poll` answers
:class:`Posted` when every message but the start is Processed, with ``keys`` = the same message
ids plus ``<kind>_journal`` where the state names a journal; :class:`Rejected` with the log
text when one of them Failed or was Canceled (a failed start alone does not reject); else
:class:`Submitted` again. :meth:`D365Adapter.lookup` reads the same states: :class:`NotFound`
when a message of the posting is missing (posting again sends only that one).

Errors: a connection that fails before the request went out is :class:`Transient`; a timeout or a
broken connection after the request was (being) sent is :class:`Unknown` (the relay then asks
:meth:`D365Adapter.lookup`, which reads the message states by id). A 401 drops the token and
retries once with a new one, then is :class:`Transient`. A client the token endpoint refuses
(:class:`~edge.relay.oauth.TokenRefused`: wrong secret, app not registered) is a configuration
error, not the confirmation's fault: it is :class:`Transient` with the token endpoint's text, so
nothing is lost and the posting goes once the configuration is corrected.
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Annotated, Any, Generic, Literal, TypeVar
from zoneinfo import ZoneInfo

import httpx
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from edge.relay.checks import Zone
from edge.relay.erp import (
    GOODS_MOVEMENTS_DEFAULT,
    ErpAdapter,
    GoodsMovementsMode,
    LookupOutcome,
    NotFound,
    Outcome,
    Posted,
    Posting,
    Rejected,
    Submitted,
    Transient,
    Unknown,
    external_id,
    movements_to_post,
)
from edge.relay.oauth import ClientCredentials, TokenRefused, TokenSource, TokenUnavailable

SEND_PATH = "/api/services/SysMessageServices/SysMessageService/SendMessage"
MESSAGE_ID_KEY = "_messageId"  # not confirmed: see the module docstring

ErrorCause = Literal["None", "Material", "Machine", "OperatingStaff"]

_Url = Annotated[
    str, StringConstraints(min_length=8, max_length=500, pattern=r"^https?://[^\s/?#]+[^\s?#]*$")
]
_Id = Annotated[str, StringConstraints(min_length=1, max_length=200)]
_Symbol = Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=r"^[A-Za-z_]\w*$")]
_Code = Annotated[str, StringConstraints(min_length=1, max_length=64)]

# The message kinds of a posting, as they appear in a Submitted ``ref`` and in Posted ``keys``.
START, ROUTE_CARD, REPORT_FINISHED, END = "start", "route_card", "report_finished", "end"
PICKING_LIST = "picking_list"
_MAIN = (ROUTE_CARD, PICKING_LIST, REPORT_FINISHED, END)
_TYPES = {
    START: "ProdProductionOrderStart",
    ROUTE_CARD: "ProdProductionOrderRouteCard",
    PICKING_LIST: "ProdProductionOrderPickingList",
    REPORT_FINISHED: "ProdProductionOrderReportFinished",
    END: "ProdProductionOrderEnd",
}
_RETRY_AFTER_MAX_S = 3600.0


class Connection(BaseModel):
    """One F&O environment and legal entity, and how to sign in to it (shared by the
    confirmation adapter and the order source, :mod:`edge.relay.orders_d365`)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)

    system: Literal["d365"]
    base_url: _Url
    """The F&O environment, ``https://<env>.operations.dynamics.com`` (no trailing slash needed)."""
    tenant_token_url: _Url
    """``https://login.microsoftonline.com/<tenant>/oauth2/v2.0/token``."""
    client_id: _Id
    client_secret_file: Path = Field(strict=False)
    """A file holding the client secret (read by :func:`build`; the secret is never logged)."""
    scope: Annotated[str, StringConstraints(min_length=1, max_length=600)] | None = None
    """Default (filled in when not given) ``<base_url>/.default``."""
    company: Annotated[str, StringConstraints(min_length=1, max_length=4, pattern=r"^\w+$")]
    """The legal entity (``dataAreaId``, e.g. ``usmf``): ``_companyId`` of every message."""
    timeout_s: float = Field(default=30.0, ge=1.0, le=300.0)
    timezone: Zone = "UTC"
    """The plant's IANA time zone: the local date of a time (``StartedDate``, and the posting
    date when a posting has none)."""

    @model_validator(mode="before")
    @classmethod
    def _default_scope(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("scope") is None:
            base = data.get("base_url")
            if isinstance(base, str) and base.strip():
                data = {**data, "scope": f"{base.rstrip('/')}/.default"}
        return data

    @property
    def root(self) -> str:
        return self.base_url.rstrip("/")

    @property
    def effective_scope(self) -> str:
        return self.scope or f"{self.root}/.default"


class Settings(Connection):
    """One F&O environment and legal entity, for confirmations."""

    queue: _Symbol = "JmgMES3P"
    poll_interval_s: float = Field(default=5.0, ge=0.1, le=3600.0)
    """How long the relay waits before it asks again about a Submitted posting."""
    report_finished_on_final: bool = True
    start_on_first: bool = False
    end_on_final: bool = False
    labour_resource: _Id | None = None
    """A resource for labour hours (a route-card line of its own); without it they are not sent."""
    error_causes: dict[_Code, ErrorCause] = Field(default_factory=dict, max_length=1000)
    """Scrap reason code -> D365 ``ErrorCause``; unmapped codes get ``default_error_cause``."""
    default_error_cause: ErrorCause = "None"
    state_entity: _Symbol = "SysMessageProcessorMessages"
    """The OData collection the message states are read from (not confirmed; see above)."""
    goods_movements: GoodsMovementsMode = GOODS_MOVEMENTS_DEFAULT
    """Which goods movements go as a picking list (:data:`edge.relay.erp.GoodsMovementsMode`):
    ``recorded`` those of components not backflushed (D365 flushes the others by their
    flushing principle), ``all`` every one with D365's own BOM consumption turned off
    (``BOMConsumption`` ``No``, ``AutomaticBOMConsumptionRule`` ``Never``), ``none`` none."""
    picking_list_journal: _Id | None = None
    """``JournalNameId`` of the picking lists (default: the journal name D365 is set up with)."""


def read_secret(path: Path) -> str:
    """The client secret in ``path`` (stripped), or ValueError naming ``client_secret_file``."""
    try:
        secret = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise ValueError(f"client_secret_file: cannot read {path}: {reason}") from None
    if not secret:
        raise ValueError(f"client_secret_file: {path} is empty")
    return secret


APP_HINT = "(is the app registered in F&O, Microsoft Entra ID applications?)"
"""What a 401 with a fresh token asks of the person who reads it."""

SettingsT = TypeVar("SettingsT", bound=Connection)


class D365Service(Generic[SettingsT]):
    """One F&O environment as the confirmation adapter and the order source
    (:mod:`edge.relay.orders_d365`) both use it: the settings, the HTTP client (opened by
    :meth:`start`, or by the first request) and the bearer tokens of the client secret."""

    def __init__(
        self,
        settings: SettingsT,
        client_secret: str,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.settings = settings
        self._secret = client_secret
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._tokens: TokenSource | None = None
        self._zone = ZoneInfo(settings.timezone)

    def __repr__(self) -> str:  # the secret stays out of every text
        s = self.settings
        return f"{type(self).__name__}({s.root!r}, company={s.company!r})"

    async def start(self) -> None:
        if self._client is not None:
            return
        s = self.settings
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(s.timeout_s),
            transport=self._transport,
            headers={"Accept": "application/json"},
        )
        self._tokens = TokenSource(
            ClientCredentials(s.tenant_token_url, s.client_id, self._secret, s.effective_scope),
            self._client,
        )

    async def close(self) -> None:
        client, self._client, self._tokens = self._client, None, None
        if client is not None:
            await client.aclose()

    async def _authorized(
        self,
        method: str,
        url: str,
        *,
        json: Any = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """One request with a bearer token; a 401 drops the token and the request goes once
        more with a new one (whose answer is returned, a 401 too). Raises
        :class:`TokenUnavailable`, :class:`TokenRefused` and httpx's errors."""
        if self._client is None or self._tokens is None:
            await self.start()
        assert self._client is not None
        assert self._tokens is not None
        for attempt in (1, 2):
            token = await self._tokens.token()
            response = await self._client.request(
                method,
                url,
                json=json,
                params=params,
                headers={**(headers or {}), "Authorization": f"Bearer {token}"},
            )
            if response.status_code != 401:
                return response
            self._tokens.forget()
            if attempt == 2:
                return response
        raise AssertionError("unreachable")


def build(settings: Settings) -> D365Adapter:
    """The adapter for ``settings``, with the client secret read from its file."""
    return D365Adapter(settings, read_secret(settings.client_secret_file))


@dataclass(frozen=True, slots=True)
class _Message:
    kind: str
    message_id: str
    content: Mapping[str, Any]

    @property
    def message_type(self) -> str:
        return _TYPES[self.kind]


@dataclass(frozen=True, slots=True)
class _State:
    message_id: str
    state: str
    log: str
    journal_id: str | None


@dataclass(slots=True)
class _OrderLock:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


class _Failed(Exception):
    """Raised inside the adapter to return an outcome from deep in a request."""

    def __init__(self, outcome: Transient | Unknown | Rejected) -> None:
        super().__init__(outcome.text)
        self.outcome = outcome


class D365Adapter(D365Service[Settings], ErpAdapter):
    """The MES integration API of one F&O environment; see the module docstring."""

    system = "d365"
    can_lookup = True

    @functools.cached_property
    def _order_locks(self) -> dict[str, _OrderLock]:
        return {}

    def _local(self, ms: int | None) -> datetime | None:
        return None if ms is None else datetime.fromtimestamp(ms / 1000, self._zone)

    def _day(self, posting: Posting) -> str:
        """``posting_date``, else the plant's date of the period's end (or of the event)."""
        if posting.posting_date:
            return posting.posting_date
        end = self._local(posting.period_end_ms) or self._local(posting.event_ms)
        assert end is not None
        return end.date().isoformat()

    # -- the interface ---------------------------------------------------------------------

    async def post(self, posting: Posting) -> Outcome:
        return await self._post(posting, "confirmation")

    async def reverse(self, posting: Posting) -> Outcome:
        return await self._post(posting, "reversal")

    async def poll(self, posting: Posting, ref: Mapping[str, str]) -> Outcome:
        ids = {kind: ref[kind] for kind in (START, *_MAIN) if kind in ref}
        if not any(kind in ids for kind in _MAIN):
            return Unknown(f"D365: no message id in ref {dict(ref)!r} for {posting.label}")
        try:
            states = await self._states(list(ids.values()), posting.label)
        except _Failed as exc:
            return exc.outcome
        return self._verdict(ids, states)

    async def lookup(self, posting: Posting) -> LookupOutcome:
        try:
            messages = self._messages(posting)
            ids = {m.kind: m.message_id for m in messages}
            states = await self._states(list(ids.values()), posting.label)
        except _Failed as exc:
            if isinstance(exc.outcome, Transient):
                return exc.outcome
            return NotFound()  # a posting the adapter cannot build was never sent
        if any(ids[k] not in states for k in _MAIN if k in ids):
            return NotFound()  # post() sends what is missing, and only that
        verdict = self._verdict(ids, states)
        if isinstance(verdict, Posted | Submitted | Transient):
            return verdict
        return Submitted(ref=ids, poll_after_s=0.0)  # poll() reports the failure

    # -- posting ---------------------------------------------------------------------------

    async def _post(self, posting: Posting, kind: str) -> Outcome:
        if posting.kind != kind:
            return Rejected(f"D365: {posting.label} is a {posting.kind}, not a {kind}")
        if not (self.settings.start_on_first and posting.kind == "confirmation"):
            return await self._post_unlocked(posting)
        # One posting of an order at a time checks for and sends the order's start message.
        order = posting.order_id
        entry = self._order_locks.setdefault(order, _OrderLock())
        entry.users += 1
        try:
            async with entry.lock:
                return await self._post_unlocked(posting)
        finally:
            entry.users -= 1
            if entry.users == 0:
                del self._order_locks[order]

    async def _post_unlocked(self, posting: Posting) -> Outcome:
        try:
            messages = self._messages(posting)
            states = await self._states([m.message_id for m in messages], posting.label)
            for message in messages:
                known = states.get(message.message_id)
                if known is not None and known.state not in ("Failed", "Canceled"):
                    continue
                await self._send(message, posting)
        except _Failed as exc:
            return exc.outcome
        return Submitted(
            ref={m.kind: m.message_id for m in messages},
            poll_after_s=self.settings.poll_interval_s,
        )

    def _messages(self, posting: Posting) -> list[_Message]:
        s = self.settings
        try:
            operation = int(posting.operation)
        except ValueError:
            raise _Failed(
                Rejected(
                    f"D365: operation {posting.operation!r} of {posting.label} is not a number "
                    "(OperationNumber is an integer)",
                    code="operation",
                )
            ) from None
        reversal = posting.kind == "reversal"
        sign = Decimal(-1) if reversal else Decimal(1)
        day = self._day(posting)
        order = posting.order_id
        messages: list[_Message] = []
        if s.start_on_first and not reversal:
            started = self._local(posting.period_start_ms) or self._local(posting.event_ms)
            start: dict[str, Any] = {
                "ProductionOrderNumber": order,
                "StartedDate": started.date().isoformat() if started else day,
            }
            if s.goods_movements == "all":
                start["AutomaticBOMConsumptionRule"] = "Never"
            messages.append(_Message(START, external_id(f"d365/start/{s.company}/{order}"), start))
        messages.append(
            _Message(
                ROUTE_CARD,
                posting.external_id,
                {
                    "ProductionOrderNumber": order,
                    "RouteCardLines": self._route_card_lines(posting, operation, sign, day),
                },
            )
        )
        lines = self._picking_list_lines(posting, operation, sign, day)
        if lines:
            content: dict[str, Any] = {"ProductionOrderNumber": order}
            if s.picking_list_journal:
                content["JournalNameId"] = s.picking_list_journal
            content["PickingListLines"] = lines
            messages.append(
                _Message(
                    PICKING_LIST,
                    # From idem_key, not instance_key: a resubmission after a rejection must
                    # not consume again what a processed picking list already did (a failed
                    # one is sent again under the same id, as every failed message is).
                    external_id(f"{posting.idem_key}/d365/picking-list"),
                    content,
                )
            )
        causes = self._causes(posting)
        if posting.final and s.report_finished_on_final:
            line: dict[str, Any] = {
                "ReportedGoodQuantity": _num(sign * posting.yield_qty),
                "ReportAsFinishedDate": day,
                "ExecutedDateTime": _executed(posting),
            }
            if posting.material:
                line["ItemNumber"] = posting.material
            if posting.batch:
                line["ItemBatchNumber"] = posting.batch
            if s.goods_movements == "all":
                line["AutomaticBOMConsumptionRule"] = "Never"
            if posting.scrap_qty:
                line["ReportedErrorQuantity"] = _num(sign * posting.scrap_qty)
                line["ErrorCause"] = causes[0][0] if causes else s.default_error_cause
            messages.append(
                _Message(
                    REPORT_FINISHED,
                    external_id(f"{posting.idem_key}/d365/report-finished"),
                    {"ProductionOrderNumber": order, "ReportFinishedLines": [line]},
                )
            )
        if posting.final and s.end_on_final and not reversal:
            messages.append(
                _Message(
                    END,
                    external_id(f"{posting.idem_key}/d365/end"),
                    {
                        "ProductionOrderNumber": order,
                        "EndedDate": day,
                        "ExecutedDateTime": _executed(posting),
                    },
                )
            )
        return messages

    def _causes(self, posting: Posting) -> list[tuple[ErrorCause, Decimal]]:
        """The scrap per D365 error cause, the largest first."""
        s = self.settings
        by_cause: dict[ErrorCause, Decimal] = {}
        for reason in posting.scrap_by_reason:
            cause = s.error_causes.get(reason.code, s.default_error_cause)
            by_cause[cause] = by_cause.get(cause, Decimal(0)) + reason.qty
        rest = posting.scrap_qty - sum(by_cause.values(), Decimal(0))
        if rest > 0:
            by_cause[s.default_error_cause] = by_cause.get(s.default_error_cause, Decimal(0)) + rest
        return sorted(
            ((c, q) for c, q in by_cause.items() if q), key=lambda item: item[1], reverse=True
        )

    def _picking_list_lines(
        self, posting: Posting, operation: int, sign: Decimal, day: str
    ) -> list[dict[str, Any]]:
        """A picking-list line per goods movement sent (``goods_movements``): a return and a
        reversal's movements consume a negative quantity. The reference's picking-list line
        has no batch field (``InventoryLotId`` is the lot, not the batch), so a component's
        batch is not sent: D365 takes it from the reservation or its batch determination."""
        lines: list[dict[str, Any]] = []
        for m in movements_to_post(posting.goods_movements, self.settings.goods_movements):
            qty = sign * (m.qty if m.direction == "issue" else -m.qty)
            lines.append(
                {
                    "ItemNumber": m.material,
                    "ConsumptionBOMQuantity": _num(qty),
                    "BOMUnitSymbol": m.unit,
                    "ConsumptionDate": day,
                    "OperationNumber": operation,
                }
            )
        return lines

    def _route_card_lines(
        self, posting: Posting, operation: int, sign: Decimal, day: str
    ) -> list[dict[str, Any]]:
        s = self.settings

        def line(task: str, hours: float, resource: str) -> dict[str, Any]:
            return {
                "OperationNumber": operation,
                "OperationsResourceId": resource,
                "TaskType": task,
                "Hours": _hours(float(sign) * hours),
                "ConsumptionDate": day,
            }

        lines: list[dict[str, Any]] = []
        if posting.setup_s:
            lines.append(line("Setup", posting.setup_s, posting.work_center))
        process = line("Process", posting.machine_s, posting.work_center)
        process["GoodQuantity"] = _num(sign * posting.yield_qty)
        causes = self._causes(posting)
        if causes:
            cause, qty = causes[0]
            process["ErrorQuantity"] = _num(sign * qty)
            process["ErrorCause"] = cause
        else:
            process["ErrorQuantity"] = 0
        completed = posting.final and posting.kind == "confirmation"
        process["OperationCompleted"] = "Yes" if completed else "No"
        if s.goods_movements == "all":
            process["BOMConsumption"] = "No"  # the picking list has every component
        lines.append(process)
        for cause, qty in causes[1:]:
            extra = line("Process", 0.0, posting.work_center)
            extra.update(GoodQuantity=0, ErrorQuantity=_num(sign * qty), ErrorCause=cause)
            lines.append(extra)
        if s.labour_resource and posting.labour_s:
            lines.append(line("Process", posting.labour_s, s.labour_resource))
        return lines

    async def _send(self, message: _Message, posting: Posting) -> None:
        s = self.settings
        body = {
            "_companyId": s.company,
            "_messageQueue": s.queue,
            "_messageType": message.message_type,
            "_messageContent": json.dumps(message.content, separators=(",", ":")),
            MESSAGE_ID_KEY: message.message_id,
        }
        what = f"D365 {message.message_type} for {posting.label}"
        response = await self._request("POST", f"{s.root}{SEND_PATH}", what, json=body)
        status = response.status_code
        if 200 <= status < 300:
            return
        text = f"{what}: HTTP {status} {erp_text(response)}".rstrip()
        if status == 400:
            raise _Failed(Rejected(text, code=_erp_code(response) or "400"))
        raise _Failed(_transient(response, text))

    # -- reading message states ------------------------------------------------------------

    async def _states(self, ids: Sequence[str], label: str) -> dict[str, _State]:
        """The last copy of each message in D365, by message id (absent when not there)."""
        s = self.settings
        wanted = sorted(set(ids))
        if not wanted:
            return {}
        query = " or ".join(f"MessageId eq '{i}'" for i in wanted)
        url = f"{s.root}/data/{s.state_entity}"
        params = {"$filter": query, "cross-company": "true"}
        what = f"D365 message states ({s.state_entity}) for {label}"
        response = await self._request("GET", url, what, params=params, idempotent=True)
        if response.status_code != 200:
            text = f"{what}: HTTP {response.status_code} {erp_text(response)}".rstrip()
            raise _Failed(_transient(response, text))
        try:
            rows = response.json().get("value")
        except (ValueError, AttributeError):
            rows = None
        if not isinstance(rows, list):
            raise _Failed(Transient(f"{what}: HTTP 200 without an OData value list"))
        best: dict[str, tuple[int, _State]] = {}
        for row in rows:
            if not isinstance(row, dict) or row.get("MessageId") not in wanted:
                continue
            mid = str(row["MessageId"])
            try:
                order = int(row.get("ControlNumber") or 0)
            except (TypeError, ValueError):
                order = 0
            journal = row.get("JournalId")
            state = _State(
                mid,
                str(row.get("MessageState") or ""),
                str(row.get("MessageInfolog") or row.get("MessageProcessingResult") or ""),
                str(journal) if journal else None,
            )
            if mid not in best or order >= best[mid][0]:
                best[mid] = (order, state)
        return {mid: state for mid, (_, state) in best.items()}

    def _verdict(self, ids: Mapping[str, str], states: Mapping[str, _State]) -> Outcome:
        """Posted when every message but the start is Processed; Rejected when one of them
        Failed or was Canceled (a failed start alone does not reject: the route card may still
        go through); else Submitted."""
        failures: list[tuple[str, _State]] = []
        for kind in (START, *_MAIN):
            if kind not in ids:
                continue
            state = states.get(ids[kind])
            if state is None:
                if kind == START:
                    continue
                return Unknown(
                    f"D365: {_TYPES[kind]} message {ids[kind]} was stored (HTTP 2xx) but is "
                    f"not in {self.settings.state_entity}"
                )
            if state.state in ("Failed", "Canceled"):
                failures.append((kind, state))
        main_failures = [f for f in failures if f[0] != START]
        if main_failures:
            texts = [
                f"D365 {_TYPES[kind]} {state.state.lower()}: {state.log or '(no log)'}"
                for kind, state in failures
            ]
            return Rejected("; ".join(texts), code=main_failures[0][1].state)
        if all(states[ids[k]].state == "Processed" for k in _MAIN if k in ids):
            keys: dict[str, str] = {}
            for kind in _MAIN:
                if kind in ids:
                    keys[kind] = ids[kind]
                    journal = states[ids[kind]].journal_id
                    if journal:
                        keys[f"{kind}_journal"] = journal
            return Posted(keys=keys)
        return Submitted(ref=dict(ids), poll_after_s=self.settings.poll_interval_s)

    # -- HTTP ------------------------------------------------------------------------------

    async def _request(
        self,
        method: str,
        url: str,
        what: str,
        *,
        idempotent: bool = False,
        json: Any = None,
        params: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        try:
            response = await self._authorized(method, url, json=json, params=params)
        except TokenUnavailable as exc:
            raise _Failed(Transient(f"{what}: {exc.outcome.text}")) from None
        except TokenRefused as exc:
            raise _Failed(
                Transient(f"{what}: not sent, configuration error: {exc}", code="token")
            ) from None
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise _Failed(Transient(f"{what}: not sent, {_describe(exc)}")) from None
        except (httpx.UnsupportedProtocol, httpx.ProxyError) as exc:
            raise _Failed(Transient(f"{what}: not sent, {_describe(exc)}")) from None
        except httpx.TransportError as exc:
            if idempotent:
                raise _Failed(Transient(f"{what}: {_describe(exc)}")) from None
            raise _Failed(Unknown(f"{what}: sent, but no answer ({_describe(exc)})")) from None
        if response.status_code == 401:
            parts = (f"{what}: HTTP 401 with a new token", erp_text(response), APP_HINT)
            raise _Failed(Transient(" ".join(p for p in parts if p), code="401"))
        return response


def _describe(exc: httpx.HTTPError) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _transient(response: httpx.Response, text: str) -> Transient:
    return Transient(
        text, code=str(response.status_code), retry_after_s=_retry_after(response.headers)
    )


def _retry_after(headers: httpx.Headers) -> float | None:
    value = headers.get("Retry-After")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    return min(max(seconds, 0.0), _RETRY_AFTER_MAX_S)


def _erp_body(response: httpx.Response) -> tuple[Any, Any]:
    """The JSON body of an error answer and its ``error`` member (None where there is none)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    return body, body.get("error") if isinstance(body, dict) else None


def _first(data: Any, keys: tuple[str, ...], limit: int) -> str | None:
    """The first of ``keys`` with a value in ``data`` (when a JSON object), as text of at most
    ``limit`` characters."""
    if isinstance(data, dict):
        for key in keys:
            if data.get(key):
                return str(data[key])[:limit]
    return None


def erp_text(response: httpx.Response) -> str:
    """The ERP's own words from an error body (F&O JSON-service fault or OData error)."""
    body, error = _erp_body(response)
    inner = error.get("innererror") if isinstance(error, dict) else None
    return (
        _first(inner, ("message",), 1000)
        or _first(error, ("message",), 1000)
        or _first(body, ("Message", "message", "error_description"), 1000)
        or re.sub(r"\s+", " ", response.text).strip()[:300]
    )


def _erp_code(response: httpx.Response) -> str | None:
    body, error = _erp_body(response)
    return _first(error, ("code",), 100) or _first(body, ("ExceptionType",), 100)


def _utc(ms: int | None) -> datetime | None:
    return datetime.fromtimestamp(ms / 1000, UTC) if ms is not None else None


def _executed(posting: Posting) -> str:
    end = _utc(posting.period_end_ms) or _utc(posting.event_ms)
    assert end is not None
    return end.strftime("%Y-%m-%dT%H:%M:%SZ")


def _num(value: Decimal) -> int | float:
    """A JSON number (Real) for an exact decimal: an int when whole, else the nearest float."""
    if value == 0:
        return 0
    if value == value.to_integral_value():
        return int(value)
    return float(value)


def _hours(value: float) -> float | int:
    hours = round(value / 3600.0, 6)
    return 0 if hours == 0 else hours
