"""The downlink: central's commands become engine inputs; a bad one is refused with a reason.

Every inbound message is checked (size, JSON, the envelope, the body model of its topic), turned
into a typed input and applied by the engine like any other input. Whatever is wrong with it,
malformed or refused by the plant's rules, is published on ``<root>/_mes_v1/rejected`` with the
original ``msg_id`` and the reason, logged, and changes nothing.
"""

from __future__ import annotations

import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from datetime import date
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from edge.domain.events import Rejection
from edge.domain.inputs import (
    Action,
    ConfirmationResult,
    DispatchList,
    Input,
    MasterDataReceived,
    MergeOperations,
    ResultStatus,
    ServiceDone,
    Transition,
)
from edge.domain.model import ComponentSpec, OperationKey, OperationSpec
from edge.domain.rules import ConfirmationPolicy, MasterData, ScrapReason, StopReason
from edge.errors import DuplicateCommand, EngineStopped, GatewayError
from edge.logging import Logger, get_logger
from edge.ports import InputSink
from edge.store.codec import dumps
from edge.sync.contract import (
    MAX_INBOUND_BYTES,
    MAX_MSG_ID,
    TOPICS,
    BadJson,
    ConfirmationResultBody,
    DispatchListBody,
    InboundEnvelope,
    MasterDataBody,
    MergeBody,
    OperationRefBody,
    RejectedBody,
    ResyncBody,
    ServiceDoneBody,
    parse_json,
)
from edge.sync.mqtt import Message, MqttLink

M = TypeVar("M", bound=BaseModel)
REJECTED = "_mes_v1/rejected"
SEEN_IDS = 1000


class Refused(Exception):
    def __init__(self, reason: str, field: str | None = None, value: object = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.field = field
        self.value = value


def _operation_spec(m: Any) -> OperationSpec:
    return OperationSpec(
        order=m.order_id,
        operation=m.operation,
        material=m.material,
        target_qty=m.quantity,
        unit=m.unit,
        sequence=m.sequence,
        split=m.split,
        material_text=m.material_text,
        std_setup_s=m.planned_setup_s,
        std_cycle_s=m.planned_run_s_per_unit,
        parts_per_signal=m.parts_per_signal,
        due=m.latest_end,
        over_tolerance_pct=m.over_tolerance_pct,
        under_tolerance_pct=m.under_tolerance_pct,
        crew_size=m.crew_size,
        confirmation_no=m.confirmation_no,
        std_cost=m.standard_cost,
        components=tuple(
            ComponentSpec(
                material=c.material,
                qty_per_unit=c.qty_per_unit,
                unit=c.unit,
                backflush=c.backflush,
                batch_managed=c.batch_managed,
                item=c.item,
                gtin=c.gtin,
                material_text=c.material_text,
            )
            for c in m.components
        ),
        batch=m.batch,
    )


def _one_line(text: str | None) -> str | None:
    """A reason in words on one line: central's line breaks and tabs become spaces (the core
    refuses other control characters, naming the field)."""
    return " ".join(text.split()) if text is not None else None


def _op_ref(body: Any) -> str:
    return str(OperationKey(body.order_id, body.operation, body.split))


def _merge(b: MergeBody, at: Any) -> MergeOperations:
    return MergeOperations(
        _op_ref(b),
        tuple(_op_ref(source) for source in b.sources),
        at,
        quantity=b.quantity,
        due=b.latest_end,
        reason=_one_line(b.reason),
    )


class Downlink:
    def __init__(
        self,
        engine: InputSink,
        link: MqttLink,
        *,
        root: str,
        max_bytes: int = MAX_INBOUND_BYTES,
        relay_state_topic: str | None = None,
        on_relay_state: Callable[[bool], None] | None = None,
        on_resync: Callable[[int | None], Awaitable[None]] | None = None,
        logger: Logger | None = None,
    ) -> None:
        self.engine = engine
        self.link = link
        self.root = root
        # The ERP relay's retained {"online": bool} (outside the work center's root).
        self.relay_state_topic = relay_state_topic
        self._on_relay_state = on_relay_state
        self.max_bytes = max_bytes
        self.log: Logger = logger or get_logger("edge.downlink")
        self.accepted = 0
        self.rejected = 0
        self.errors = 0  # messages whose handling failed unexpectedly (refused all the same)
        self._msg_id: str | None = None  # of the message in hand, once it could be read
        # msg_id -> the topic it came on, for the most recent ones: a redelivery is ignored,
        # the same id on another topic refused. Older ones are recognised by the engine.
        self._seen: OrderedDict[str, str] = OrderedDict()
        now = engine.now
        self._convert: dict[str, tuple[type[BaseModel], Callable[[Any], Input]]] = {
            "_mes_v1/order/dispatch": (
                DispatchListBody,
                lambda b: DispatchList(
                    b.version, tuple(_operation_spec(m) for m in b.operations), now(), timed=True
                ),
            ),
            "_mes_v1/order/cancel": (
                OperationRefBody,
                lambda b: Transition(
                    Action.CANCEL, _op_ref(b), "central", now(), reason=_one_line(b.reason)
                ),
            ),
            "_mes_v1/order/hold": (
                OperationRefBody,
                lambda b: Transition(
                    Action.HOLD, _op_ref(b), "central", now(), reason=_one_line(b.reason)
                ),
            ),
            "_mes_v1/order/release": (
                OperationRefBody,
                lambda b: Transition(Action.RELEASE, _op_ref(b), "central", now()),
            ),
            "_mes_v1/order/merge": (MergeBody, lambda b: _merge(b, now())),
            "_mes_v1/masterdata": (MasterDataBody, lambda b: _master_data(b, now())),
            "_mes_v1/maintenance/done": (
                ServiceDoneBody,
                lambda b: ServiceDone(b.name, "central", now(), _one_line(b.note)),
            ),
            "_mes_v1/confirmation/result": (
                ConfirmationResultBody,
                lambda b: ConfirmationResult(
                    b.idem_key,
                    ResultStatus(b.status),
                    now(),
                    b.error.text if b.error else None,
                    dumps(b.erp) if b.erp else None,
                ),
            ),
        }
        # Commands to the gateway itself, not inputs for the core: nothing is journaled.
        self._commands: dict[str, tuple[type[BaseModel], Callable[[Any], Awaitable[None]]]] = {}
        if on_resync is not None:
            self._commands["_mes_v1/cmd/resync"] = (ResyncBody, lambda b: on_resync(b.from_seq))
        self._schemas = {t.path: t.schema for t in TOPICS if t.direction == "down"}
        missing = {t.path for t in TOPICS if t.direction == "down"} - set(self._convert)
        missing.discard("_mes_v1/cmd/resync")
        assert not missing, f"down topics without a handler: {missing}"

    @property
    def subscriptions(self) -> list[tuple[str, int]]:
        topics = [(f"{self.root}/{path}", 1) for path in (*self._convert, *self._commands)]
        if self.relay_state_topic:
            topics.append((self.relay_state_topic, 1))
        return topics

    async def run(self) -> None:
        while True:
            message = await self.link.messages.get()
            if not await self.guarded(message):
                return  # shutting down: not acknowledged, so the broker delivers it again
            self.link.ack(message)

    async def guarded(self, message: Message) -> bool:
        """Handle one message so that nothing it holds can stop the daemon.

        Whatever goes wrong (a bug, a value no check foresaw), the message is refused on
        ``_mes_v1/rejected`` with the reason and then acknowledged, so the broker does not
        deliver it again and again. Returns False only when the engine has stopped."""
        self._msg_id = None
        try:
            await self.handle(message)
        except EngineStopped:
            return False
        except Exception as exc:
            self.errors += 1
            self.log.error(
                "inbound message could not be handled; it is refused and nothing changed",
                topic=message.topic,
                msg_id=self._msg_id,
                error=repr(exc)[:300],
                exc_info=exc,
            )
            # An expected condition (a full disk) says what it is, so central can send it again
            # once it is fixed; anything else is a bug and names only its type.
            why = str(exc)[:300] if isinstance(exc, GatewayError) else type(exc).__name__
            try:
                self._refuse(
                    message.topic,
                    self._msg_id,
                    f"the gateway could not handle this message: {why}",
                    None,
                    None,
                )
            except Exception as publish_exc:
                self.log.error("could not publish the refusal", error=repr(publish_exc)[:300])
        return True

    async def handle(self, message: Message) -> None:
        if message.topic == self.relay_state_topic:
            self._relay_state(message.payload)
            return
        path = message.topic.removeprefix(self.root + "/")
        try:
            if path not in self._convert and path not in self._commands:
                raise Refused(f"no such command topic {message.topic!r}", "topic", message.topic)
            if len(message.payload) > self.max_bytes:
                self._msg_id = _peek_msg_id(message.payload)
                raise Refused(
                    f"payload of {len(message.payload)} bytes is over the limit of "
                    f"{self.max_bytes}",
                    "payload",
                    len(message.payload),
                )
            envelope = self._envelope(message.payload)
            msg_id = self._msg_id = envelope.msg_id
            expected = self._schemas.get(path)
            if expected and envelope.schema_ != expected:
                raise Refused(
                    f"schema {envelope.schema_!r} is not this topic's ({expected!r}); "
                    "was the message sent to the wrong topic?",
                    "schema",
                    envelope.schema_,
                )
            seen_on = self._seen.get(msg_id)
            if seen_on == path:
                self.log.info("duplicate delivery ignored", msg_id=msg_id, topic=path)
                return
            if seen_on is not None:
                raise Refused(
                    f"msg_id {msg_id!r} was already used by a message on {seen_on!r}; "
                    "every message needs its own msg_id",
                    "msg_id",
                    msg_id,
                )
            if path in self._commands:
                command_model, run = self._commands[path]
                command = _validate(command_model, envelope.body, "body")
            else:
                model, convert = self._convert[path]
                body = _validate(model, envelope.body, "body")
                inp = convert(body)
        except Refused as refused:
            self._refuse(message.topic, self._msg_id, refused.reason, refused.field, refused.value)
            return
        if path in self._commands:
            self._remember(msg_id, path)
            self.accepted += 1
            self.log.info("command from central", topic=path, msg_id=msg_id)
            await run(command)
            return
        try:
            # The msg_id goes into the journal with the input: a message applied once is never
            # applied again, also when the broker or central sends it again after a restart.
            outcome = await self.engine.submit(inp, command_id=inbound_command_id(msg_id))
        except DuplicateCommand:
            self._remember(msg_id, path)
            self.log.info("message applied before; not applied again", msg_id=msg_id, topic=path)
            return
        self._remember(msg_id, path)
        if outcome.rejection is not None:
            self._refuse_rejection(message.topic, msg_id, outcome.rejection)
        else:
            self.accepted += 1

    def _relay_state(self, payload: bytes) -> None:
        """Relay presence; anything but an explicit ``"online": false`` counts as online.

        A missing or garbled state must not hold confirmations back for ever: withholding is
        for the case where the relay said (or its Last Will said) that it is gone.
        """
        online = True
        if payload:
            try:
                data = parse_json(payload, max_bytes=self.max_bytes)
            except BadJson as exc:
                data = None
                self.log.warning(
                    "relay state is not readable JSON; taken as online",
                    topic=self.relay_state_topic,
                    reason=str(exc),
                    payload=payload[:200],
                )
            if isinstance(data, dict):
                online = data.get("online") is not False
            elif data is not None:
                self.log.warning(
                    "relay state is not a JSON object; taken as online",
                    topic=self.relay_state_topic,
                    payload=payload[:200],
                )
        if self._on_relay_state is not None:
            self._on_relay_state(online)

    def _envelope(self, payload: bytes) -> InboundEnvelope:
        try:
            data = parse_json(payload, max_bytes=self.max_bytes)
        except BadJson as exc:
            self._msg_id = _peek_msg_id(payload)
            text = payload[:80].decode(errors="replace")
            raise Refused(str(exc), "payload", text) from None
        if isinstance(data, dict):
            msg_id = data.get("msg_id")
            # Quoted back only as it was: a cut id could be another message's.
            if isinstance(msg_id, str) and 0 < len(msg_id) <= MAX_MSG_ID:
                self._msg_id = msg_id
        env: InboundEnvelope = _validate(InboundEnvelope, data, "")
        return env

    def _remember(self, msg_id: str, path: str) -> None:
        self._seen[msg_id] = path
        while len(self._seen) > SEEN_IDS:
            self._seen.popitem(last=False)

    def _refuse_rejection(self, topic: str, msg_id: str, rej: Rejection) -> None:
        self._refuse(topic, msg_id, rej.message, rej.field, rej.value)

    def _refuse(
        self, topic: str, msg_id: str | None, reason: str, field: str | None, value: object
    ) -> None:
        self.rejected += 1
        body = RejectedBody(
            msg_id=_printable(msg_id),
            topic=_printable(topic) or "",
            reason=_printable(reason[:1000]) or "",
            field=_printable(field),
            value=_printable(None if value is None else str(value)[:200]),
            ts_ms=time.time_ns() // 1_000_000,
        )
        self.log.warning("inbound message rejected", topic=topic, msg_id=msg_id, reason=reason)
        self.link.publish(
            f"{self.root}/{REJECTED}", body.model_dump_json(exclude_none=False), qos=1
        )


def _printable(text: str | None) -> str | None:
    """Text quoted back from a message as valid UTF-8 (a lone surrogate, which JSON's \\u escapes
    can carry, cannot be encoded and must not stop the refusal)."""
    if text is None:
        return None
    return text.encode("utf-8", "replace").decode("utf-8")


def inbound_command_id(msg_id: str) -> str:
    """The journal's id for an input that came from central as message ``msg_id``."""
    return f"mqtt:{msg_id}"


_MSG_ID = re.compile(rb'"msg_id"\s*:\s*"([^"\\]{1,%d})"' % MAX_MSG_ID)


def _peek_msg_id(payload: bytes) -> str | None:
    """The msg_id of a payload that cannot be parsed, if it is plainly readable near its start,
    so that central can tell which message was refused."""
    found = _MSG_ID.search(payload[:4096])
    return found.group(1).decode(errors="replace") if found else None


def _validate(model: type[M], data: object, prefix: str) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        where = f"{prefix}.{loc}" if prefix and loc else (prefix or loc)
        value = first.get("input")
        count = exc.error_count()
        more = f" (and {count - 1} more problems)" if count > 1 else ""
        raise Refused(f"{where or 'message'}: {first['msg']}{more}", where or None, value) from None


def _master_data(b: MasterDataBody, at: Any) -> MasterDataReceived:
    policy = b.confirmation_policy
    md = MasterData(
        version=b.version,
        stop_reasons=tuple(StopReason(r.code, r.text, r.category) for r in b.stop_reasons),
        scrap_reasons=tuple(ScrapReason(r.code, r.text) for r in b.scrap_reasons),
        alarm_reasons=tuple(sorted(b.alarm_reasons.items())),
        crew_size=b.crew_size,
        shifts=tuple(s.to_domain() for s in b.shifts) if b.shifts else None,
        holidays=tuple(date.fromisoformat(d) for d in b.holidays) if b.shifts else (),
        planned_downtime=tuple((*w.span_ms(), w.reason) for w in b.planned_downtime)
        if b.shifts
        else (),
        policy=ConfirmationPolicy(policy.every_good, policy.every_minutes, policy.at_shift_end)
        if policy
        else None,
    )
    return MasterDataReceived(md, at)
