"""What the relay reads from the gateways, bounded, and the Posting it makes of it.

The contract's models (``edge.sync.contract``) describe what a gateway publishes; here the relay
is the consumer, and a consumer must ignore fields it does not know (a gateway of a later 1.x
may add some), while refusing what it cannot post: every string has a length bound, every
quantity is an exact decimal within the contract's bounds, every time a plausible instant. A
message that fails is answered nowhere (without a valid ``idem_key`` there is no one to answer)
and logged with the field and the value; one that has a valid envelope and key but a bad body
is answered ``rejected`` naming the field, so the operator sees why.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from edge.domain import limits as L
from edge.relay.erp import GoodsMovement, Kind, Posting, Quantity
from edge.sync.contract import BadJson, parse_json

CONFIRMATION = "_mes_v1/confirmation"
CONFIRMATION_CANCEL = "_mes_v1/confirmation/cancel"
CONFIRMATION_RESULT = "_mes_v1/confirmation/result"
SCHEMAS: dict[Kind, str] = {
    "confirmation": "mes.confirmation/1",
    "reversal": "mes.confirmation-cancel/1",
}

IdemKey = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
Name = Annotated[str, StringConstraints(min_length=1, max_length=40)]
Text = Annotated[str, StringConstraints(max_length=L.MAX_TEXT)]
Instant = Annotated[int, Field(ge=0, le=L.MAX_INT)]
Seconds = Annotated[float, Field(ge=0, le=L.MAX_SETUP_S * 12)]
Qty = Annotated[
    Decimal,
    Field(ge=0, le=L.MAX_QUANTITY, max_digits=16, decimal_places=L.QUANTITY_PLACES),
]


class _Read(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, allow_inf_nan=False)


class ByReason(_Read):
    code: Name
    qty: Qty


class ActivitiesIn(_Read):
    setup_s: Seconds = 0.0
    machine_s: Seconds = 0.0
    labour_s: Seconds = 0.0


class MovementIn(_Read):
    material: Name
    batch: Annotated[str, StringConstraints(min_length=1, max_length=40)] | None = None
    qty: Qty
    unit: Name
    direction: Literal["issue", "return"] = "issue"
    backflush: bool = False
    item: Annotated[str, StringConstraints(max_length=40)] | None = None


class BodyIn(_Read):
    type: Name
    event_time: Annotated[str, StringConstraints(max_length=40)] | None = None
    order_id: Name
    operation: Name
    split: Annotated[int, Field(ge=0, le=L.MAX_SPLIT)] = 0
    actor: Text | None = None
    conf_id: Text | None = None
    idem_key: IdemKey
    conf_index: Annotated[int, Field(ge=1, le=L.MAX_INT)]
    yield_qty: Qty
    scrap_qty: Qty
    rework_qty: Qty
    scrap_by_reason: list[ByReason] = Field(default_factory=list, max_length=L.MAX_CATALOGUE)
    rework_by_reason: list[ByReason] = Field(default_factory=list, max_length=L.MAX_CATALOGUE)
    goods_movements: list[MovementIn] = Field(default_factory=list, max_length=1000)


class ConfirmationIn(BodyIn):
    confirmation_no: Name | None = None
    kind: Literal["partial", "final"] = "partial"
    final: bool = False
    unit: Name
    material: Annotated[str, StringConstraints(max_length=40)] = ""
    work_center: Name
    variance_reason: Name | None = None
    posting_date: Annotated[str, StringConstraints(pattern=r"^\d{4}-\d{2}-\d{2}$")]
    period_start: Annotated[str, StringConstraints(max_length=40)] | None = None
    period_end: Annotated[str, StringConstraints(max_length=40)] | None = None
    activities: ActivitiesIn = ActivitiesIn()
    retry: Annotated[int, Field(ge=0, le=L.MAX_INT)] = 0
    batch: Annotated[str, StringConstraints(min_length=1, max_length=40)] | None = None


class ReversalIn(BodyIn):
    reverses_idem_key: IdemKey


class EnvelopeHead(_Read):
    """The envelope without its body: enough to know whom to answer."""

    schema_: Annotated[str, StringConstraints(max_length=64)] = Field(alias="schema")
    msg_id: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    idem_key: IdemKey
    edge_id: Name
    boot_seq: Annotated[int, Field(ge=0, le=L.MAX_INT)]
    seq: Annotated[int, Field(ge=1, le=L.MAX_INT)]
    ts_event_ms: Instant
    ts_sent_ms: Instant
    historical: bool = False
    body: dict[str, Any]


class Unreadable(ValueError):
    """Not a message the relay can answer: no valid envelope or idempotency key."""


class BodyRefused(ValueError):
    """A valid envelope whose body cannot be posted; answered ``rejected`` with this text."""

    def __init__(self, head: EnvelopeHead, text: str, field: str | None) -> None:
        super().__init__(text)
        self.head = head
        self.field = field


def _first_error(exc: ValidationError, prefix: str) -> tuple[str, str]:
    err = exc.errors(include_url=False)[0]
    where = ".".join(str(p) for p in (prefix, *err["loc"]) if p != "")
    value = repr(err.get("input"))[:80]
    return where, f"{where} = {value}: {err['msg']}"


def read(kind: Kind, root: str, payload: bytes, max_bytes: int) -> Posting:
    """The Posting a gateway's message asks for; :class:`Unreadable` or :class:`BodyRefused`."""
    try:
        data = parse_json(payload, max_bytes=max_bytes)
    except BadJson as exc:
        raise Unreadable(str(exc)) from None
    try:
        head = EnvelopeHead.model_validate(data)
    except ValidationError as exc:
        raise Unreadable(_first_error(exc, "")[1]) from None
    model: type[ConfirmationIn] | type[ReversalIn] = (
        ConfirmationIn if kind == "confirmation" else ReversalIn
    )
    if head.schema_ != SCHEMAS[kind]:
        raise BodyRefused(
            head, f"schema = {head.schema_!r}: expected {SCHEMAS[kind]!r} on this topic", "schema"
        )
    try:
        body = model.model_validate(head.body)
    except ValidationError as exc:
        field, text = _first_error(exc, "body")
        raise BodyRefused(head, text, field) from None
    if body.idem_key != head.idem_key:
        raise BodyRefused(
            head, f"body.idem_key = {body.idem_key!r} differs from the envelope's", "body.idem_key"
        )
    return _posting(kind, root, head, body)


def _ms(text: str | None) -> int | None:
    if not text:
        return None
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return int(when.timestamp() * 1000)


def _reasons(items: list[ByReason]) -> tuple[Quantity, ...]:
    return tuple(Quantity(r.code, r.qty) for r in items)


def _posting(
    kind: Kind, root: str, head: EnvelopeHead, body: ConfirmationIn | ReversalIn
) -> Posting:
    common: dict[str, Any] = {
        "kind": kind,
        "idem_key": head.idem_key,
        "edge_id": head.edge_id,
        "root": root,
        "seq": head.seq,
        "order_id": body.order_id,
        "operation": body.operation,
        "split": body.split,
        "conf_index": body.conf_index,
        "event_ms": head.ts_event_ms,
        "yield_qty": body.yield_qty,
        "scrap_qty": body.scrap_qty,
        "rework_qty": body.rework_qty,
        "scrap_by_reason": _reasons(body.scrap_by_reason),
        "rework_by_reason": _reasons(body.rework_by_reason),
        "actor": body.actor or "",
        "goods_movements": tuple(
            GoodsMovement(
                material=m.material,
                qty=m.qty,
                unit=m.unit,
                direction=m.direction,
                batch=m.batch or "",
                item=m.item,
                backflush=m.backflush,
            )
            for m in body.goods_movements
        ),
    }
    if isinstance(body, ConfirmationIn):
        return Posting(
            **common,
            work_center=body.work_center,
            unit=body.unit,
            material=body.material,
            confirmation_no=body.confirmation_no,
            final=body.final or body.kind == "final",
            variance_reason=body.variance_reason,
            posting_date=body.posting_date,
            period_start_ms=_ms(body.period_start),
            period_end_ms=_ms(body.period_end),
            setup_s=body.activities.setup_s,
            machine_s=body.activities.machine_s,
            labour_s=body.activities.labour_s,
            batch=body.batch,
        )
    return Posting(
        **common,
        work_center=root.rsplit("/", 1)[-1],
        reverses_idem_key=body.reverses_idem_key,
    )


def answer_root(topic: str, suffix: str) -> str | None:
    """The work center's root of a message that came on ``<root>/<suffix>``."""
    if not topic.endswith("/" + suffix):
        return None
    root = topic[: -len(suffix) - 1]
    return root or None


def refused_head(payload: bytes, max_bytes: int) -> EnvelopeHead | None:
    """The envelope of a message whose body was refused (to answer it), else None."""
    try:
        return EnvelopeHead.model_validate(parse_json(payload, max_bytes=max_bytes))
    except (BadJson, ValidationError):
        return None
