"""SAP S/4HANA: confirmations through the OData V2 service ``API_PROD_ORDER_CONFIRMATION_2_SRV``.

A confirmation becomes one ``POST /ProdnOrdConf2`` (entity ``ProdnOrdConf2``): yield, scrap and
rework in the confirmation unit, the variance reason, the activities (setup, machine, labour) in
the slots ``OpConfirmedWorkQuantity1..3``, the posting date, the execution start and end in the
plant's local time, final confirmation (``IsFinalConfirmation``/``FinalConfirmationType``), a
confirmation text, and ``ExternalSystemConfirmation``: a GUID made from the ``idem_key``. SAP
answers 201 with ``ConfirmationGroup``/``ConfirmationCount``, the keys the relay keeps and
sends back to the gateway. A reversal is ``POST /CancelProdnOrdConf`` with the keys of the
confirmation it cancels.

Goods movements (``goods_movements``, see :data:`edge.relay.erp.GoodsMovementsMode`) go in the
same POST as a deep insert under ``to_ProdnOrdConfMatlDocItm``: a component issue is movement
type 261, a return 262, with the material, the batch, the unit and quantity, the plant and
storage location when configured. ``recorded`` sends those of components not backflushed (SAP
backflushes the others by the order's BOM), ``all`` every one with
``APIConfHasNoGoodsMovements`` (SAP's own backflush off), ``none`` none. With ``goods_receipt``
(only with ``all``) the yield goes as a 101 receipt with the produced batch. Everything is in
the one POST, so a resend after a lost answer (found by the lookup) posts no movement twice;
``CancelProdnOrdConf`` reverses the confirmation's movements with it.

The handshake: a CSRF token fetched with ``x-csrf-token: Fetch`` on the service root, sent with
the session's cookies on every POST; a 403 ``x-csrf-token: Required`` fetches a new one and
replays once. Authentication: HTTP Basic, or an OAuth 2 client-credentials bearer token
(S/4HANA Cloud, an API management front end).

What is transient and what is final:

- not sent (connection refused, DNS, connect timeout), 408, 423, 429, 5xx, and a 400 whose SAP
  message code is one of ``transient_codes`` (an order locked by a user: ``CO/469`` by default,
  with ``MC/601`` and ``M3/897``, the lock messages): retried with backoff;
- sent but no answer (read timeout, connection dropped), and a 502 or 504 to a POST (a web
  dispatcher or proxy that gave up waiting for SAP, which may have posted it meanwhile):
  :class:`Unknown`; the relay asks SAP before posting again, by
  ``$filter=ExternalSystemConfirmation eq guid'...'``;
- any other 400 (already finally confirmed, unknown variance reason, over tolerance, period
  closed): :class:`Rejected` with SAP's own message text and code, shown to the operator.

Not confirmed against a real system (see the reference on SAP's APIs): whether
``ExternalSystemConfirmation`` is filterable on every release (``lookup = false`` turns the
question off; postings in doubt then wait for a person), the message numbers of the lock and
business errors, and that business errors come as HTTP 400.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, ClassVar, Final, Generic, Literal, TypedDict, TypeVar, Unpack
from urllib.parse import quote
from zoneinfo import ZoneInfo

import httpx
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from edge.relay.checks import Zone
from edge.relay.erp import (
    GOODS_MOVEMENTS_DEFAULT,
    ErpAdapter,
    GoodsMovement,
    GoodsMovementsMode,
    LookupOutcome,
    NotFound,
    Outcome,
    Posted,
    Posting,
    Rejected,
    Transient,
    Unknown,
    external_id,
    movements_to_post,
)
from edge.relay.oauth import ClientCredentials, TokenRefused, TokenSource, TokenUnavailable

SERVICE: Final = "API_PROD_ORDER_CONFIRMATION_2_SRV"
_RETRY_STATUSES: Final = frozenset({408, 423, 425, 429, 500, 502, 503, 504})
# A proxy's answer to a request it passed on and then gave up waiting for (bad gateway, gateway
# timeout): SAP may have posted it. Retrying without asking first could post it twice.
_SENT_UNKNOWN_STATUSES: Final = frozenset({502, 504})
# SAP's Decimal(13,3): at most 10 digits before the point and 3 after.
_MAX_PLACES: Final = 3
_MAX_QTY: Final = Decimal("9999999999.999")
_UNIT_SECONDS: Final = {"S": 1.0, "MIN": 60.0, "H": 3600.0}
_DAY_MS: Final = 86_400_000
_ODATA_DATE: Final = re.compile(r"^/Date\((-?\d+)(?:[+-]\d{4})?\)/$")
_ODATA_TIME: Final = re.compile(r"^PT(?:(\d{1,2})H)?(?:(\d{1,2})M)?(?:(\d{1,2})(?:\.\d+)?S)?$")


class Connection(BaseModel):
    """How the relay reaches one of SAP's OData services: the service root, the client, the
    authentication (Basic or OAuth 2 client credentials), TLS and the timeout. Shared by the
    confirmation adapter and the order source (:mod:`edge.relay.orders_sap`)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)

    service_url: Annotated[str, StringConstraints(pattern=r"^https?://\S+$", max_length=500)]
    sap_client: Annotated[str, StringConstraints(pattern=r"^\d{3}$")] | None = None
    auth: Literal["basic", "oauth"] = "basic"
    user: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = None
    password_file: Annotated[Path, Field(strict=False)] | None = None
    token_url: Annotated[str, StringConstraints(pattern=r"^https?://\S+$")] | None = None
    client_id: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None
    client_secret_file: Annotated[Path, Field(strict=False)] | None = None
    scope: Annotated[str, StringConstraints(max_length=500)] | None = None
    ca_file: Annotated[Path, Field(strict=False)] | None = None
    timeout_s: Annotated[float, Field(ge=1, le=300)] = 30.0

    @field_validator("service_url")
    @classmethod
    def _slash(cls, value: str) -> str:
        return value if value.endswith("/") else value + "/"


class Settings(Connection):
    """``[erp]`` with ``system = "sap"``."""

    system: Literal["sap"]
    lookup: bool = True
    transient_codes: list[Annotated[str, StringConstraints(max_length=40)]] = Field(
        default_factory=lambda: ["CO/469", "MC/601", "M3/897"], max_length=100
    )
    timezone: Zone = "UTC"
    plant: Annotated[str, StringConstraints(max_length=4)] | None = None
    sequence: Annotated[str, StringConstraints(max_length=6)] = "0"
    activity_unit: Literal["S", "MIN", "H"] = "MIN"
    setup_slot: Annotated[int, Field(ge=0, le=6)] = 1
    machine_slot: Annotated[int, Field(ge=0, le=6)] = 2
    labour_slot: Annotated[int, Field(ge=0, le=6)] = 3
    text: Annotated[str, StringConstraints(max_length=200)] = "{label} {edge_id}"
    # The gateway's variance reason codes (``[confirmations] variance_reason``) as SAP's
    # four-character ``VarianceReasonCode``; a code without an entry is sent as it is.
    variance_reasons: dict[
        Annotated[str, StringConstraints(min_length=1, max_length=40)],
        Annotated[str, StringConstraints(min_length=1, max_length=4)],
    ] = Field(default_factory=dict, max_length=1000)
    # Send the work center (``WorkCenter``, 8 characters)? SAP takes the operation's own when
    # it is not sent, which is right unless the plant confirms on alternative work centers.
    send_work_center: bool = False
    # Which goods movements go with a confirmation (edge.relay.erp.GoodsMovementsMode):
    # "recorded" those of components SAP does not backflush, "all" every one with
    # APIConfHasNoGoodsMovements (SAP's own backflush off), "none" none.
    goods_movements: GoodsMovementsMode = GOODS_MOVEMENTS_DEFAULT
    # The storage location (4 characters) of the components' issues, when the plant has one.
    storage_location: Annotated[str, StringConstraints(min_length=1, max_length=4)] | None = None
    # Post the yield as a goods receipt (101, with the produced batch) with each confirmation.
    # Only with goods_movements = "all" (APIConfHasNoGoodsMovements turns SAP's automatic
    # receipt off too), and only right where each order is confirmed at one operation.
    goods_receipt: bool = False

    @model_validator(mode="after")
    def _receipt_needs_all(self) -> Settings:
        if self.goods_receipt and self.goods_movements != "all":
            raise ValueError(
                f"goods_receipt = true needs goods_movements = 'all' (it is "
                f"{self.goods_movements!r}): SAP receives the yield itself otherwise, and a "
                "receipt from the relay would receive it twice"
            )
        return self


def _read_secret(field: str, path: Path | None, section: str = "erp") -> str:
    if path is None:
        raise ValueError(f"{section}.{field}: required for this kind of authentication")
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise ValueError(
            f"{section}.{field} = {str(path)!r}: cannot be read: {exc.strerror}"
        ) from None


def read_credentials(
    settings: Connection, section: str = "erp"
) -> tuple[str | None, ClientCredentials | None]:
    """``(password, None)`` for Basic, ``(None, client credentials)`` for OAuth, with the
    secrets read from their files; a ValueError names a missing or unreadable one."""
    if settings.auth == "basic":
        if settings.user is None:
            raise ValueError(f"{section}.user: required with auth = 'basic'")
        return _read_secret("password_file", settings.password_file, section), None
    if settings.token_url is None or settings.client_id is None:
        raise ValueError(
            f"{section}.token_url and {section}.client_id: required with auth = 'oauth'"
        )
    secret = _read_secret("client_secret_file", settings.client_secret_file, section)
    return None, ClientCredentials(settings.token_url, settings.client_id, secret, settings.scope)


def open_client(settings: Connection, password: str | None) -> httpx.AsyncClient:
    """The HTTP client for one SAP service: Basic credentials when ``auth = "basic"``, the
    CA file, the timeout (connect at most 10 s), JSON answers."""
    s = settings
    auth = httpx.BasicAuth(s.user or "", password or "") if s.auth == "basic" else None
    verify: Any = str(s.ca_file) if s.ca_file else True
    return httpx.AsyncClient(
        auth=auth,
        timeout=httpx.Timeout(s.timeout_s, connect=min(10.0, s.timeout_s)),
        verify=verify,
        headers={"Accept": "application/json"},
    )


def service_url(settings: Connection, path: str) -> str:
    """``path`` under the service root, with ``sap-client`` when one is configured."""
    url = settings.service_url + path
    if settings.sap_client:
        url += ("&" if "?" in path else "?") + f"sap-client={settings.sap_client}"
    return url


class Credentials(TypedDict, total=False):
    """What :func:`read_credentials` read: the password (Basic) or the client credentials
    (OAuth)."""

    password: str | None
    oauth: ClientCredentials | None


SettingsT = TypeVar("SettingsT", bound=Connection)


class SapService(Generic[SettingsT]):
    """One SAP OData service as the confirmation adapter and the order source
    (:mod:`edge.relay.orders_sap`) both use it: the settings, the HTTP client (opened by
    :meth:`start`) and, with OAuth, the bearer tokens."""

    def __init__(self, settings: SettingsT, **credentials: Unpack[Credentials]) -> None:
        self.settings = settings
        self._password = credentials.get("password")
        self._oauth = credentials.get("oauth")
        self._client: httpx.AsyncClient | None = None
        self._tokens: TokenSource | None = None

    async def start(self) -> None:
        self._client = open_client(self.settings, self._password)
        if self._oauth is not None:
            self._tokens = TokenSource(self._oauth, self._client)

    async def close(self) -> None:
        client, self._client, self._tokens = self._client, None, None
        if client is not None:
            await client.aclose()

    async def _bearer(self) -> dict[str, str]:
        """The ``Authorization`` header with OAuth (none with Basic: the client sends it);
        raises :class:`TokenUnavailable` or :class:`TokenRefused`."""
        if self._tokens is None:
            return {}
        return {"Authorization": f"Bearer {await self._tokens.token()}"}


def build(settings: Settings) -> SapAdapter:
    """The adapter, with its secrets read; a ValueError names a missing or unreadable one."""
    password, oauth = read_credentials(settings)
    if oauth is None:
        return SapAdapter(settings, password=password)
    return SapAdapter(settings, oauth=oauth)


def odata_date(day: dt.date) -> str:
    """``/Date(ms)/`` of the day's UTC midnight (OData V2 ``Edm.DateTime`` for a date)."""
    midnight = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
    return f"/Date({int(midnight.timestamp() * 1000)})/"


def odata_time(t: dt.time) -> str:
    return f"PT{t.hour:02d}H{t.minute:02d}M{t.second:02d}S"


def odata_day(text: str) -> dt.date | None:
    """The day of ``/Date(ms)/`` (its UTC midnight, as :func:`odata_date` writes it; an offset
    ``+hhmm`` is passed over); None for other text."""
    match = _ODATA_DATE.match(text)
    if match is None:
        return None
    return dt.date(1970, 1, 1) + dt.timedelta(days=int(match.group(1)) // _DAY_MS)


def odata_seconds(text: str) -> int | None:
    """``PThhHmmMssS`` (as :func:`odata_time` writes it; parts may be missing) as seconds into
    the day, at most 86 400; None for other text."""
    match = _ODATA_TIME.match(text)
    if match is None or text == "PT":
        return None
    h, m, s = (int(g) if g else 0 for g in match.groups())
    return min(h * 3600 + m * 60 + s, 86_400)


def sap_decimal(name: str, value: Decimal) -> str:
    """A quantity as SAP's Decimal(13,3) text; more places or digits are refused, never
    rounded (a rounded quantity is a wrong quantity in the ERP)."""
    if value < 0 or value > _MAX_QTY:
        raise _Unpostable(f"{name} = {value}: outside SAP's Decimal(13,3)")
    exponent = value.normalize().as_tuple().exponent
    if isinstance(exponent, int) and -exponent > _MAX_PLACES:
        raise _Unpostable(f"{name} = {value}: more than SAP's {_MAX_PLACES} decimal places")
    return f"{value:.3f}"


class _Unpostable(Exception):
    """The posting cannot be expressed in SAP's fields (too long, too many places)."""


class _Misconfigured(Exception):
    """The relay's configuration does not fit SAP's fields: not the confirmation's fault, so it
    waits (answered ``retrying`` with this text) until central IT corrects the mapping."""


def _fit(name: str, value: str, length: int) -> str:
    if len(value) > length:
        raise _Unpostable(f"{name} = {value!r}: longer than SAP's {length} characters")
    return value


def sap_error(response: httpx.Response) -> tuple[str, str | None]:
    """SAP's message text and code from an OData V2 error body (or the status when none)."""
    try:
        data: Any = response.json()
    except ValueError:
        data = None
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        code = error.get("code") if isinstance(error.get("code"), str) else None
        message = error.get("message")
        if isinstance(message, list):  # some releases send a list of {lang, value}
            english = [m for m in message if isinstance(m, dict) and m.get("lang") == "en"]
            message = (english or message or [None])[0]
        text = message.get("value") if isinstance(message, dict) else message
        if isinstance(text, str) and text:
            return text[:1000], code
    body = response.text.strip().replace("\n", " ")[:200]
    return f"HTTP {response.status_code}{': ' + body if body else ''}", None


class SapAdapter(SapService[Settings], ErpAdapter):
    system: ClassVar[str] = "sap"
    can_lookup = True

    def __init__(self, settings: Settings, **credentials: Unpack[Credentials]) -> None:
        super().__init__(settings, **credentials)
        self._zone = ZoneInfo(settings.timezone)
        self._csrf: str | None = None
        self._csrf_lock = asyncio.Lock()
        self._transient = frozenset(settings.transient_codes)
        self.can_lookup = settings.lookup

    # ------------------------------------------------------------------ the interface

    async def post(self, posting: Posting) -> Outcome:
        try:
            body = self.body(posting)
        except _Unpostable as exc:
            return Rejected(str(exc), "RELAY/FIELD")
        except _Misconfigured as exc:
            return Transient(str(exc), "RELAY/CONFIG")
        result = await self._modify("POST", "ProdnOrdConf2", json=body)
        if isinstance(result, httpx.Response):
            return self._created(result)
        return result

    async def reverse(self, posting: Posting) -> Outcome:
        keys = dict(posting.reverses_keys)
        if not (keys.get("confirmation_group") and keys.get("confirmation_count")):
            if posting.reverses_idem_key is None:
                return Rejected("a reversal without the confirmation it reverses", "RELAY/REF")
            found = await self._find(external_id(posting.reverses_idem_key), reversal=False)
            if not isinstance(found, Posted):
                if isinstance(found, NotFound):
                    return Rejected(
                        f"SAP has no confirmation with external id "
                        f"{external_id(posting.reverses_idem_key)} to cancel",
                        "RELAY/NOTFOUND",
                    )
                return found if isinstance(found, Transient) else Transient("lookup pending")
            keys = dict(found.keys)
        day = self._posting_day(posting)
        text = self._text(posting)
        params = {
            "ConfirmationGroup": f"'{keys['confirmation_group']}'",
            "ConfirmationCount": f"'{keys['confirmation_count']}'",
            "PostingDate": f"datetime'{day.isoformat()}T00:00'",
            "ConfirmationText": f"'{_quote_literal(text)}'",
            "ExternalSystemConfirmation": f"guid'{posting.external_id}'",
        }
        query = "&".join(f"{k}={quote(v, safe=chr(39) + ':-')}" for k, v in params.items())
        result = await self._modify("POST", f"CancelProdnOrdConf?{query}")
        if not isinstance(result, httpx.Response):
            return result
        outcome = self._created(result)
        if isinstance(outcome, Posted):
            return Posted(
                {**outcome.keys, "cancelled_confirmation_count": keys["confirmation_count"]}
            )
        return outcome

    async def lookup(self, posting: Posting) -> LookupOutcome:
        if not self.can_lookup:
            return Transient("lookup is turned off (erp.lookup = false)")
        return await self._find(posting.external_id, reversal=posting.kind == "reversal")

    # ------------------------------------------------------------------ the body

    def body(self, posting: Posting) -> dict[str, Any]:
        s = self.settings
        body: dict[str, Any] = {
            "OrderID": _fit("OrderID", posting.order_id, 12),
            "OrderOperation": _fit("OrderOperation", posting.operation, 4),
            "Sequence": s.sequence,
            "ConfirmationUnit": _fit("ConfirmationUnit", posting.unit, 3),
            "ConfirmationYieldQuantity": sap_decimal("yield_qty", posting.yield_qty),
            "ConfirmationScrapQuantity": sap_decimal("scrap_qty", posting.scrap_qty),
            "ConfirmationReworkQuantity": sap_decimal("rework_qty", posting.rework_qty),
            "VarianceReasonCode": self._variance(posting.variance_reason),
            "PostingDate": odata_date(self._posting_day(posting)),
            "IsFinalConfirmation": posting.final,
            "ExternalSystemConfirmation": posting.external_id,
            "ConfirmationText": self._text(posting),
        }
        if s.send_work_center:
            body["WorkCenter"] = _fit("WorkCenter", posting.work_center, 8)
        if posting.final:
            body["FinalConfirmationType"] = "X"
        if s.plant:
            body["Plant"] = s.plant
        for prefix, ms in (
            ("ConfirmedExecutionStart", posting.period_start_ms),
            ("ConfirmedExecutionEnd", posting.period_end_ms),
        ):
            if ms is not None:
                local = dt.datetime.fromtimestamp(ms / 1000, self._zone)
                body[f"{prefix}Date"] = odata_date(local.date())
                body[f"{prefix}Time"] = odata_time(local.time())
        per = _UNIT_SECONDS[s.activity_unit]
        for slot, seconds in (
            (s.setup_slot, posting.setup_s),
            (s.machine_slot, posting.machine_s),
            (s.labour_slot, posting.labour_s),
        ):
            if slot:
                body[f"OpConfirmedWorkQuantity{slot}"] = f"{Decimal(seconds / per):.3f}"
                body[f"OpWorkQuantityUnit{slot}"] = s.activity_unit
        items = [
            self._movement(posting, n, m)
            for n, m in enumerate(movements_to_post(posting.goods_movements, s.goods_movements))
        ]
        if s.goods_movements == "all":
            # "Confirmation: No Goods Movement via API" (the property's label): read as "no
            # automatic movements (backflush, automatic receipt)", the items sent being posted.
            # Not confirmed (erp-apis.md 1.6). The safer reading for exactly once: without it
            # SAP would backflush what the relay sends as well.
            body["APIConfHasNoGoodsMovements"] = True
        if s.goods_receipt and posting.yield_qty > 0:
            items.insert(0, self._receipt(posting))
        if items:
            # The plain array of GORE's production bodies (erp-apis.md 1.6); SAP also takes
            # {"results": [...]}.
            body["to_ProdnOrdConfMatlDocItm"] = items
        return body

    def _movement(self, posting: Posting, n: int, m: GoodsMovement) -> dict[str, Any]:
        """One component movement as a ``ProdnOrdConfMatlDocItm`` of the deep insert: 261 an
        issue, 262 a return (erp-apis.md 1.4). ``GoodsMovementRefDocType`` is left out: the
        reference shows it (``F``) only on a goods receipt."""
        s = self.settings
        where = f"goods_movements[{n}]"
        item: dict[str, Any] = {
            "OrderID": _fit("OrderID", posting.order_id, 12),
            "Material": _fit(f"{where}.material", m.material, 40),
            "GoodsMovementType": "261" if m.direction == "issue" else "262",
            "EntryUnit": _fit(f"{where}.unit", m.unit, 3),
            "QuantityInEntryUnit": sap_decimal(f"{where}.qty", m.qty),
        }
        if s.plant:
            item["Plant"] = s.plant
        if s.storage_location:
            item["StorageLocation"] = s.storage_location
        if m.batch:
            item["Batch"] = _fit(f"{where}.batch", m.batch, 10)
        reservation, _, position = (m.item or "").rpartition("/")
        # A reservation item names nothing without its reservation: sent only as the pair
        # ("<Reservation>/<ReservationItem>"); a bare item (LOIPRO RSPOS) is left out, and SAP
        # posts the issue to the order without a reservation (the safer reading: a wrong
        # reference could be refused or book against another requirement).
        if reservation and position:
            item["Reservation"] = _fit(f"{where}.item", reservation, 10)
            item["ReservationItem"] = _fit(f"{where}.item", position, 4)
        return item

    def _receipt(self, posting: Posting) -> dict[str, Any]:
        """The yield's goods receipt (101, ``GoodsMovementRefDocType`` ``F`` as in GORE's
        bodies, erp-apis.md 1.4/1.6) with the produced batch."""
        if not posting.material:
            raise _Unpostable("goods_receipt: the confirmation names no material to receive")
        s = self.settings
        item: dict[str, Any] = {
            "OrderID": _fit("OrderID", posting.order_id, 12),
            "OrderItem": "0001",
            "Material": _fit("material", posting.material, 40),
            "GoodsMovementType": "101",
            "GoodsMovementRefDocType": "F",
            "EntryUnit": _fit("unit", posting.unit, 3),
            "QuantityInEntryUnit": sap_decimal("yield_qty", posting.yield_qty),
            "ManufactureDate": odata_date(self._posting_day(posting)),
        }
        if s.plant:
            item["Plant"] = s.plant
        if posting.batch:
            item["Batch"] = _fit("batch", posting.batch, 10)
        return item

    def _variance(self, reason: str | None) -> str:
        if not reason:
            return ""
        code = self.settings.variance_reasons.get(reason, reason)
        if len(code) > 4:
            raise _Misconfigured(
                f"variance reason {reason!r} has no SAP code of at most 4 characters: map it in "
                f'the relay\'s [erp] variance_reasons (e.g. {reason} = "0001")'
            )
        return code

    def _posting_day(self, posting: Posting) -> dt.date:
        if posting.posting_date:
            return dt.date.fromisoformat(posting.posting_date)
        return dt.datetime.fromtimestamp(posting.event_ms / 1000, self._zone).date()

    def _text(self, posting: Posting) -> str:
        text = self.settings.text.format(
            label=posting.label,
            edge_id=posting.edge_id,
            order_id=posting.order_id,
            operation=posting.operation,
            conf_index=posting.conf_index,
            work_center=posting.work_center,
        )
        return text[:40]

    # ------------------------------------------------------------------ HTTP

    def _url(self, path: str) -> str:
        return service_url(self.settings, path)

    async def _headers(self) -> dict[str, str] | Transient:
        try:
            return await self._bearer()
        except TokenUnavailable as exc:
            return exc.outcome
        except TokenRefused as exc:
            # A configuration fault, not the confirmation's: it waits (and is not lost).
            return Transient(f"SAP's token endpoint refused the relay: {exc}", "RELAY/AUTH")

    async def _fetch_csrf(self, stale: str | None) -> str | Transient:
        async with self._csrf_lock:
            if self._csrf is not None and self._csrf != stale:
                return self._csrf
            headers = await self._headers()
            if isinstance(headers, Transient):
                return headers
            assert self._client is not None
            try:
                response = await self._client.get(
                    self._url(""), headers={**headers, "x-csrf-token": "Fetch"}
                )
            except httpx.HTTPError as exc:
                return Transient(f"SAP not reachable for the CSRF token: {exc!r}")
            if response.status_code == 401 and self._tokens is not None:
                self._tokens.forget()
            token: str | None = response.headers.get("x-csrf-token")
            if response.status_code >= 400 or not token or token.lower() == "required":
                text, _code = sap_error(response)
                return Transient(f"no CSRF token from SAP (HTTP {response.status_code}): {text}")
            self._csrf = token
            return token

    async def _modify(
        self, method: str, path: str, json: Mapping[str, Any] | None = None
    ) -> httpx.Response | Transient | Unknown | Rejected:
        """A modifying request with the CSRF token; 403 Required and 401 are retried once."""
        if self._client is None:
            return Transient("the SAP adapter is not started")
        token = self._csrf
        for attempt in range(2):
            if token is None:
                got = await self._fetch_csrf(None)
                if isinstance(got, Transient):
                    return got
                token = got
            headers = await self._headers()
            if isinstance(headers, Transient):
                return headers
            headers["x-csrf-token"] = token
            try:
                response = await self._client.request(
                    method, self._url(path), json=json, headers=headers
                )
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                return Transient(f"SAP not reachable: {exc!r}")
            except httpx.HTTPError as exc:
                return Unknown(f"no answer from SAP after sending: {exc!r}")
            if (
                response.status_code == 403
                and response.headers.get("x-csrf-token", "").lower() == "required"
                and attempt == 0
            ):
                got = await self._fetch_csrf(token)
                if isinstance(got, Transient):
                    return got
                token = got
                continue
            if response.status_code == 401 and attempt == 0:
                if self._tokens is not None:
                    self._tokens.forget()
                token = None
                continue
            if response.status_code in _SENT_UNKNOWN_STATUSES:
                text, _ = sap_error(response)
                return Unknown(
                    f"SAP answered HTTP {response.status_code} after the request was sent; "
                    f"whether it posted is not known: {text}"
                )
            return self._classify(response)
        return Transient("SAP refused the session twice (CSRF or credentials)")

    def _classify(self, response: httpx.Response) -> httpx.Response | Transient | Rejected:
        status = response.status_code
        if status < 300:
            return response
        text, code = sap_error(response)
        if status in _RETRY_STATUSES or (status == 400 and code in self._transient):
            after = response.headers.get("retry-after")
            delay = float(after) if after and after.isdigit() else None
            return Transient(text, code, delay)
        if status in (401, 403, 404, 405):
            # The service URL, the credentials or the authorisations are wrong: a fault of the
            # configuration, never of the confirmation.
            return Transient(f"SAP answered HTTP {status}: {text}", code or f"HTTP/{status}")
        return Rejected(text, code)

    def _created(self, response: httpx.Response) -> Outcome:
        try:
            data = response.json()["d"]
            group, count = data["ConfirmationGroup"], data["ConfirmationCount"]
        except (ValueError, KeyError, TypeError):
            return Unknown(f"SAP answered HTTP {response.status_code} without the document keys")
        return Posted({"confirmation_group": str(group), "confirmation_count": str(count)})

    async def _find(self, guid: str, *, reversal: bool) -> LookupOutcome:
        if self._client is None:
            return Transient("the SAP adapter is not started")
        headers = await self._headers()
        if isinstance(headers, Transient):
            return headers
        flag = "true" if reversal else "false"
        query = (
            f"$filter=ExternalSystemConfirmation eq guid'{guid}' and IsReversal eq {flag}"
            "&$format=json"
        )
        try:
            response = await self._client.get(
                self._url(f"ProdnOrdConf2?{quote(query, safe='=&$')}"), headers=headers
            )
        except httpx.HTTPError as exc:
            return Transient(f"SAP not reachable to look up {guid}: {exc!r}")
        if response.status_code != 200:
            text, code = sap_error(response)
            return Transient(f"SAP lookup of {guid} failed: {text}", code)
        try:
            results = response.json()["d"]["results"]
        except (ValueError, KeyError, TypeError):
            return Transient(f"SAP lookup of {guid}: unreadable answer")
        if not results:
            return NotFound()
        first = results[0]
        return Posted(
            {
                "confirmation_group": str(first.get("ConfirmationGroup", "")),
                "confirmation_count": str(first.get("ConfirmationCount", "")),
            }
        )


def quote_literal(text: str) -> str:
    """An OData V2 string literal's content: a single quote is doubled."""
    return text.replace("'", "''")


_quote_literal = quote_literal
