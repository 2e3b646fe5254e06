"""The relay at work: messages in through a shared subscription, the ledger as the work queue,
the ERP adapter, and a verdict back to the gateway for every valid message.

One task takes the gateways' messages (:meth:`Relay._take`): each valid one is written to the
ledger once (a resend, or a copy another relay got, finds its row) and acknowledged to the
broker only after that commit; a resend of a finished posting is answered at once (``duplicate``
with the ERP's keys, or the ``rejected`` verdict again). Another task claims due rows and posts
them (:meth:`Relay._process`), at most ``concurrency`` at a time, one per operation, in ``seq``
order. A relay that dies leaves its claims to run out; whoever takes such a row next asks the
ERP before posting (see :mod:`edge.relay.ledger`).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Literal, TypeVar

from edge.aio import wait_set, within
from edge.domain.clock import EARLIEST_PLAUSIBLE
from edge.logging import Logger, get_logger
from edge.relay.config import LEASE_CALLS, RelayConfig
from edge.relay.dispatch import Dispatcher, Target
from edge.relay.erp import (
    ErpAdapter,
    Kind,
    NotFound,
    Outcome,
    Posted,
    Posting,
    Rejected,
    Submitted,
    Transient,
    Unknown,
)
from edge.relay.kpi import kpi_body
from edge.relay.ledger import Entry, Ledger, Status
from edge.relay.messages import (
    CONFIRMATION,
    CONFIRMATION_CANCEL,
    CONFIRMATION_RESULT,
    BodyRefused,
    Unreadable,
    answer_root,
    read,
)
from edge.relay.orders import OrderSource
from edge.sync.contract import (
    BadJson,
    ConfirmationResultBody,
    ErpError,
    InboundEnvelope,
    parse_json,
    relay_last_will,
    topic,
)
from edge.sync.mqtt import Message, MqttLink, TlsSettings, Will

T = TypeVar("T")
Verdict = Literal["posted", "duplicate", "rejected", "retrying"]
RESULT_SCHEMA = topic(CONFIRMATION_RESULT).schema
PUBLISH_TIMEOUT_S = 30.0
KPI = "_mes_v1/relay/kpi"
STATE_BYTES = 4096  # relay/state and a gateway's snapshot are small; more is not read


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


def relay_state_topic(enterprise: str) -> str:
    return f"umh/v1/{enterprise}/_mes_v1/relay/state"


@dataclass(slots=True)
class RelayStats:
    received: int = 0
    invalid: int = 0
    refused: int = 0
    resends: int = 0
    posted: int = 0
    rejected: int = 0
    retries: int = 0
    unknown: int = 0
    in_doubt: int = 0
    found_after_doubt: int = 0
    intake_errors: int = 0  # messages that could not be taken (left unacknowledged)
    answers: dict[str, int] = field(default_factory=dict)


class Relay:
    def __init__(
        self,
        cfg: RelayConfig,
        ledger: Ledger,
        erp: ErpAdapter,
        *,
        link: MqttLink | None = None,
        orders: OrderSource | None = None,
        clock: Callable[[], int] = wall_ms,
        logger: Logger | None = None,
    ) -> None:
        self.cfg = cfg
        self.orders = orders
        self.ledger = ledger
        self.erp = erp
        self.clock = clock
        self.name = cfg.relay.name()
        self.log: Logger = logger or get_logger("edge.relay", relay=self.name)
        self.state_topic = relay_state_topic(cfg.relay.enterprise)
        self.link = link or self._make_link()
        self.stats = RelayStats()
        self._wake = asyncio.Event()
        self._running: set[asyncio.Task[None]] = set()
        self._stopping = False
        self.ready = asyncio.Event()
        self.dispatcher: Dispatcher | None = None
        if orders is not None:
            self.dispatcher = Dispatcher(
                orders,
                [Target(t.work_center, t.root) for t in cfg.dispatch.work_centers],
                ledger.db,
                self.link,
                owner=self.name,
                interval_s=cfg.dispatch.interval_s,
                clock=clock,
                logger=self.log,
            )

    # ------------------------------------------------------------------ wiring

    def _make_link(self) -> MqttLink:
        m = self.cfg.mqtt
        password = m.password_file.read_text().strip() if m.password_file else None
        tls = (
            TlsSettings(
                str(m.tls_ca_file),
                str(m.tls_cert_file) if m.tls_cert_file else None,
                str(m.tls_key_file) if m.tls_key_file else None,
            )
            if m.tls_ca_file
            else None
        )
        return MqttLink(
            host=m.host,
            port=m.port,
            client_id=m.client_id or f"edge-relay-{self.name}",
            keepalive_s=m.keepalive_s,
            session_expiry_s=m.session_expiry_s,
            username=m.username,
            password=password,
            will=Will(self.state_topic, relay_last_will()),
            tls=tls,
            reconnect_min_s=m.reconnect_min_s,
            reconnect_max_s=m.reconnect_max_s,
            max_inflight=m.max_inflight,
            logger=self.log,
        )

    def subscriptions(self) -> list[tuple[str, int]]:
        group = self.cfg.relay.share_group
        topics = [(self.state_topic, 1)]
        for root in self.cfg.relay.filters():
            for suffix in (CONFIRMATION, CONFIRMATION_CANCEL):
                topics.append((f"$share/{group}/{root}/{suffix}", 1))
        if self.dispatcher is not None:
            topics.extend(self.dispatcher.topics())
        return topics

    async def run(self) -> None:
        """Serve until cancelled; the ERP adapter is started and closed here."""
        await self.erp.start()
        self.link.add_on_connect(self._connected)
        self.link.subscribe(self.subscriptions())
        self.link.start()
        self.log.info(
            "relay starting",
            erp=self.erp.system,
            broker=f"{self.link.host}:{self.link.port}",
            roots=self.cfg.relay.filters(),
            group=self.cfg.relay.share_group,
        )
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._intake())
                tasks.create_task(self._work())
                if self.dispatcher is not None:
                    await self.dispatcher.open()
                    tasks.create_task(self.dispatcher.run())
                if self.cfg.relay.kpi_interval_s > 0:
                    tasks.create_task(self._kpi())
                self.ready.set()
        finally:
            self._stopping = True
            for task in list(self._running):
                task.cancel()
            with contextlib.suppress(Exception):
                await asyncio.gather(*self._running, return_exceptions=True)
            with contextlib.suppress(Exception):
                if self.link.connected.is_set():
                    await within(self._publish_state(False), 5.0)
            await self.link.stop()
            await self.erp.close()
            self.log.info("relay stopped")

    async def _connected(self, _session_present: bool) -> None:
        await self._publish_state(True)
        self._wake.set()

    async def _publish_state(self, online: bool) -> None:
        payload = json.dumps({"online": online, "ts_ms": self.clock()}).encode()
        future = self.link.publish(self.state_topic, payload, qos=1, retain=True)
        with contextlib.suppress(Exception):
            await within(future, PUBLISH_TIMEOUT_S)

    # ------------------------------------------------------------------ intake

    async def _intake(self) -> None:
        while True:
            message = await self.link.messages.get()
            try:
                await self._take(message)
            except asyncio.CancelledError:
                raise
            except Exception:
                # Not acknowledged: the broker gives it again (or the gateway resends it).
                self.stats.intake_errors += 1
                self.log.exception("relay could not take a message", topic=message.topic)
                await asyncio.sleep(self.cfg.relay.poll_s)

    async def _take(self, message: Message) -> None:
        if self.dispatcher is not None and self.dispatcher.on_message(
            message.topic, message.payload
        ):
            self.link.ack(message)
            return
        if message.topic == self.state_topic:
            self.link.ack(message)
            await self._on_state(message.payload)
            return
        self.stats.received += 1
        kind: Kind = "confirmation"
        suffix = CONFIRMATION
        if message.topic.endswith("/" + CONFIRMATION_CANCEL):
            kind, suffix = "reversal", CONFIRMATION_CANCEL
        root = answer_root(message.topic, suffix)
        if root is None:
            self.stats.invalid += 1
            self.log.warning("message on an unexpected topic", topic=message.topic)
            self.link.ack(message)
            return
        try:
            posting = read(kind, root, message.payload, self.cfg.relay.max_inbound_bytes)
        except Unreadable as exc:
            self.stats.invalid += 1
            self.log.warning(
                "unreadable message; nobody to answer", topic=message.topic, error=str(exc)
            )
            self.link.ack(message)
            return
        except BodyRefused as exc:
            await self._refuse(root, exc)
            self.link.ack(message)
            return
        entry, created = await self.ledger.accept(posting, self.clock())
        self.link.ack(message)
        if created:
            self.log.info(
                "confirmation received" if kind == "confirmation" else "reversal received",
                **_ids(posting),
            )
            self._wake.set()
            if kind == "confirmation":
                await self._tell_held(posting)
            return
        self.stats.resends += 1
        await self._answer_resend(entry)

    async def _refuse(self, root: str, exc: BodyRefused) -> None:
        key = exc.head.idem_key
        held = await self.ledger.get(key)
        if held is not None and held.status == "posted":
            await self._answer(root, key, "duplicate", erp=self._keys(held))
            return
        self.stats.refused += 1
        self.log.warning("message refused", idem_key=key, edge_id=exc.head.edge_id, error=str(exc))
        await self._answer(root, key, "rejected", error=(str(exc), "RELAY/INVALID"))

    async def _answer_resend(self, entry: Entry) -> None:
        p = entry.posting
        if entry.status == "posted":
            await self._answer(p.root, p.idem_key, "duplicate", erp=self._keys(entry))
        elif entry.status == "rejected":
            await self._answer(
                p.root, p.idem_key, "rejected", error=(entry.error_text or "", entry.error_code)
            )
        else:
            text = entry.error_text or "accepted; the ERP posting follows"
            await self._answer(p.root, p.idem_key, "retrying", error=(text, entry.error_code))

    async def _on_state(self, payload: bytes) -> None:
        try:
            data = parse_json(payload, max_bytes=STATE_BYTES)
        except BadJson:
            return  # somebody else's garbage on the topic: nothing to say about this relay
        online = data.get("online") if isinstance(data, dict) else None
        if online is False and not self._stopping and self.link.connected.is_set():
            # Another relay's Last Will (or its planned stop): this one is still here.
            await asyncio.sleep(random.uniform(0.05, 0.5))
            if not self._stopping:
                await self._publish_state(True)

    # ------------------------------------------------------------------ the KPI

    async def _kpi(self) -> None:
        """Confirmation latency per work center (machine event to ERP posting), retained on
        ``<root>/_mes_v1/relay/kpi``: what the plant compares with the hours it took before."""
        r = self.cfg.relay
        while True:
            await asyncio.sleep(r.kpi_interval_s)
            if not self.link.connected.is_set():
                continue
            try:
                await self.publish_kpi()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.log.warning("confirmation latency not published", error=repr(exc))

    async def publish_kpi(self) -> int:
        """Publish every work center's latency figures now; how many the broker took (one it
        refuses, e.g. by its ACL, is logged with the reason code once per round)."""
        r = self.cfg.relay
        now = self.clock()
        by_root = await self.ledger.latencies_by_root(now - int(r.kpi_window_s * 1000))
        taken = 0
        refused: dict[int, list[str]] = {}
        for root, values in by_root.items():
            payload = json.dumps(kpi_body(values, r.kpi_window_s, self.erp.system, now)).encode()
            future = self.link.publish(f"{root}/{KPI}", payload, qos=1, retain=True)
            code = await within(future, PUBLISH_TIMEOUT_S)
            if code >= 0x80:
                refused.setdefault(code, []).append(root)
            else:
                taken += 1
        for code, roots in refused.items():
            self.log.warning(
                "broker refused the confirmation latency",
                reason=code,
                topics=[f"{root}/{KPI}" for root in roots[:5]],
                refused=len(roots),
            )
        return taken

    # ------------------------------------------------------------------ work

    async def _work(self) -> None:
        r = self.cfg.relay
        while True:
            free = r.concurrency - len(self._running)
            claimed: list[Entry] = []
            if free > 0:
                try:
                    claimed = await self.ledger.claim(
                        self.name,
                        self.clock(),
                        int(r.lease_s * 1000),
                        free,
                        int(r.gap_wait_s * 1000),
                    )
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    self.log.warning("ledger claim failed; trying again", error=repr(exc))
            for entry in claimed:
                task = asyncio.create_task(self._process(entry))
                self._running.add(task)
                task.add_done_callback(self._done)
            if len(claimed) >= free > 0:
                continue
            await wait_set(self._wake, r.poll_s)
            self._wake.clear()

    def _done(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._wake.set()

    async def _process(self, entry: Entry) -> None:
        keeper = asyncio.create_task(self._keep_claim(entry.idem_key))
        try:
            await self._work_on(entry)
        finally:
            keeper.cancel()

    async def _keep_claim(self, idem_key: str) -> None:
        """Renew the claim every third of the lease while the row is worked on."""
        lease_ms = int(self.cfg.relay.lease_s * 1000)
        while True:
            await asyncio.sleep(self.cfg.relay.lease_s / 3)
            try:
                if not await self.ledger.renew(idem_key, self.name, self.clock() + lease_ms):
                    return  # finished (or taken): nothing to keep
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.log.warning("claim not renewed", idem_key=idem_key, error=repr(exc))

    async def _work_on(self, entry: Entry) -> None:
        p = entry.posting
        try:
            if entry.status == "posting":
                outcome = await self._settle_doubt(entry)
            elif entry.status == "submitted":
                outcome = await self._call(self.erp.poll(p, entry.ref))
            else:
                outcome = await self._send(entry)
            if outcome is not None:
                await self._conclude(entry, outcome)
        except asyncio.CancelledError:
            raise
        except Exception:
            self.log.exception("relay could not work a posting", **_ids(p))
            with contextlib.suppress(Exception):
                await self.ledger.defer(
                    p.idem_key,
                    self.name,
                    "posting" if entry.status == "posting" else entry.status,
                    self.clock() + self._backoff_ms(entry.attempts + 1),
                    self.clock(),
                )

    async def _call(self, step: Awaitable[T]) -> T | Unknown:
        try:
            return await step
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.log.exception("ERP adapter failed")
            return Unknown(f"the {self.erp.system} adapter failed: {exc!r}")

    async def _send(self, entry: Entry) -> Outcome | None:
        p = entry.posting
        if p.kind == "reversal":
            prepared = await self._prepare_reversal(entry)
            if not isinstance(prepared, Posting):
                return prepared
            p = prepared
        elif (wrong := implausible_date(p, self.clock())) is not None:
            self.log.error("confirmation not posted: its date cannot be true", why=wrong, **_ids(p))
            return Rejected(wrong, "RELAY/DATE")
        if not await self.ledger.start_posting(p.idem_key, self.name, self.clock()):
            self.log.warning("claim lost before posting; another relay has it", **_ids(p))
            return None
        if p.kind == "reversal":
            return await self._call(self.erp.reverse(p))
        return await self._call(self.erp.post(p))

    async def _prepare_reversal(self, entry: Entry) -> Posting | Outcome | None:
        p = entry.posting
        assert p.reverses_idem_key is not None
        target = await self.ledger.get(p.reverses_idem_key)
        if target is None:
            if self.erp.can_lookup:
                return p  # the adapter finds the confirmation's keys in the ERP
            return Rejected(
                f"no posting of confirmation {p.reverses_idem_key} is known to the relay, and "
                f"{self.erp.system} cannot be asked for it",
                "RELAY/NOTFOUND",
            )
        if target.status == "posted":
            return replace(p, reverses_keys=dict(target.erp))
        if target.status == "rejected":
            return Posted({"cancelled": "none: the confirmation was rejected, never posted"})
        # Not finished yet (it is earlier in seq, so it goes first): look again shortly.
        await self.ledger.defer(
            p.idem_key,
            self.name,
            "new",
            self.clock() + int(self.cfg.relay.retry_min_s * 1000),
            self.clock(),
        )
        return None

    async def _settle_doubt(self, entry: Entry) -> Outcome | None:
        """A row left in ``posting``: the ERP may or may not have it."""
        p = entry.posting
        now = self.clock()
        if not self.erp.can_lookup:
            self.stats.in_doubt += 1
            text = (
                f"in doubt: a post to {self.erp.system} got no answer, and {self.erp.system} "
                "cannot be asked whether it has the document; a person decides "
                "(edge relay doubt)"
            )
            await self.ledger.in_doubt(p.idem_key, self.name, text, now)
            self.log.warning("posting in doubt; left for a person", **_ids(p))
            await self._answer(p.root, p.idem_key, "retrying", error=(text, "RELAY/DOUBT"))
            return None
        found = await self._call(self.erp.lookup(p))
        if isinstance(found, Posted):
            self.stats.found_after_doubt += 1
            self.log.info("posting in doubt found in the ERP", **_ids(p), keys=dict(found.keys))
            return found
        if isinstance(found, NotFound):
            self.log.info("posting in doubt not in the ERP; posting it", **_ids(p))
            return await self._send(entry)
        if isinstance(found, Submitted):
            return found
        text = found.text if isinstance(found, Transient | Unknown) else "lookup failed"
        await self.ledger.defer(
            p.idem_key,
            self.name,
            "posting",
            now + self._backoff_ms(entry.attempts + 1),
            now,
            text=f"in doubt, the ERP could not be asked: {text}",
        )
        return None

    async def _conclude(self, entry: Entry, outcome: Outcome) -> None:
        p = entry.posting
        now = self.clock()
        if isinstance(outcome, Posted):
            latency = max(0, now - p.event_ms)
            await self.ledger.posted(
                p.idem_key, self.name, self.erp.system, outcome.keys, now, latency
            )
            self.stats.posted += 1
            keys = dict(outcome.keys)
            self.log.info("posted", **_ids(p), erp=self.erp.system, keys=keys, latency_ms=latency)
            await self._answer(
                p.root,
                p.idem_key,
                "posted",
                erp={"system": self.erp.system, **outcome.keys},
                latency_ms=latency,
            )
        elif isinstance(outcome, Rejected):
            await self.ledger.rejected(p.idem_key, self.name, outcome.text, outcome.code, now)
            self.stats.rejected += 1
            self.log.warning(
                "rejected by the ERP", **_ids(p), error=outcome.text, code=outcome.code
            )
            await self._answer(p.root, p.idem_key, "rejected", error=(outcome.text, outcome.code))
            if p.kind == "confirmation":
                await self._tell_held(p)
        elif isinstance(outcome, Submitted):
            await self.ledger.defer(
                p.idem_key,
                self.name,
                "submitted",
                now + int(outcome.poll_after_s * 1000),
                now,
                ref=outcome.ref,
            )
        else:
            # Transient: the ERP did not take it. Unknown: it may have; the row stays in
            # ``posting`` and is looked up in the ERP before anything is sent again.
            status: Status = "retrying" if isinstance(outcome, Transient) else "posting"
            delay = self._backoff_ms(entry.attempts + 1)
            if isinstance(outcome, Transient) and outcome.retry_after_s:
                delay = max(delay, int(outcome.retry_after_s * 1000))
            if isinstance(outcome, Unknown):
                # The ERP may still be working on what it was sent and commit it after we gave
                # up waiting; asked at once, it says "not there" and the post goes again (posted
                # twice). Ask only once it has had as long again as a lease allows for a call.
                timeout_s = float(getattr(self.cfg.erp, "timeout_s", 0.0))
                delay = max(delay, int(LEASE_CALLS * timeout_s * 1000))
            code = outcome.code if isinstance(outcome, Transient) else "RELAY/UNKNOWN"
            await self.ledger.defer(
                p.idem_key, self.name, status, now + delay, now, text=outcome.text, code=code
            )
            if isinstance(outcome, Transient):
                self.stats.retries += 1
            else:
                self.stats.unknown += 1
            self.log.warning(
                "ERP not reached; will retry" if status == "retrying" else "ERP answer lost",
                **_ids(p),
                error=outcome.text,
                retry_in_s=delay / 1000,
            )
            if entry.answered != "retrying":
                await self._answer(p.root, p.idem_key, "retrying", error=(outcome.text, code))

    async def _tell_held(self, p: Posting) -> None:
        """The later confirmations of ``p``'s operation held behind a rejected one (not posted
        until it is made good, see :mod:`edge.relay.ledger`): answered ``retrying`` with the
        confirmation they wait for, once for each change of it."""
        for held in await self.ledger.mark_held(p, self.clock()):
            self.log.warning(
                "confirmation held behind a rejected one",
                **_ids(held.posting),
                error=held.error_text,
            )
            await self._answer(
                held.posting.root,
                held.idem_key,
                "retrying",
                error=(held.error_text or "", held.error_code),
            )

    def _backoff_ms(self, attempt: int) -> int:
        r = self.cfg.relay
        ceiling = min(r.retry_max_s, r.retry_min_s * 2 ** max(0, attempt - 1))
        return int(ceiling * random.uniform(0.5, 1.0) * 1000)

    # ------------------------------------------------------------------ answers

    def _keys(self, entry: Entry) -> dict[str, str]:
        return {"system": entry.erp_system or self.erp.system, **entry.erp}

    async def _answer(
        self,
        root: str,
        idem_key: str,
        status: Verdict,
        *,
        erp: Mapping[str, str] | None = None,
        error: tuple[str, str | None] | None = None,
        latency_ms: int | None = None,
    ) -> None:
        now = self.clock()
        body = ConfirmationResultBody(
            idem_key=idem_key,
            status=status,
            erp=dict(erp) if erp is not None else None,
            error=ErpError(text=error[0][:1000], code=(error[1] or None) and error[1][:40])
            if error is not None
            else None,
            ts=dt.datetime.fromtimestamp(now / 1000, dt.UTC).isoformat(timespec="milliseconds"),
            latency_ms=latency_ms,
        )
        envelope = InboundEnvelope(
            schema=RESULT_SCHEMA,
            msg_id=str(uuid.uuid4()),
            ts_ms=now,
            body=body.model_dump(mode="json", exclude_none=True),
        )
        payload = envelope.model_dump_json(by_alias=True, exclude_none=True).encode()
        future = self.link.publish(f"{root}/{CONFIRMATION_RESULT}", payload, qos=1)
        try:
            code = await within(future, PUBLISH_TIMEOUT_S)
        except (TimeoutError, ConnectionError) as exc:
            # The gateway sends the message again and is answered then.
            self.log.warning("answer not delivered", idem_key=idem_key, error=repr(exc))
            return
        if code >= 0x80:
            self.log.warning("broker refused the answer", idem_key=idem_key, reason=code)
            return
        self.stats.answers[status] = self.stats.answers.get(status, 0) + 1
        if status == "retrying":  # (a final verdict is told by the row's status itself)
            await self.ledger.answered(idem_key, status)


# A posting date this far after the relay's own today (UTC) is a gateway clock running ahead.
POSTING_DATE_AHEAD = dt.timedelta(days=1)


def implausible_date(p: Posting, now_ms: int) -> str | None:
    """Why ``p``'s posting date cannot be true, or None: before any gateway of this version
    ran (a gateway that booted without a real-time clock before NTP answered dates its
    confirmations 1970), or after the relay's own today. Posted, it would book the costs and the
    stock into a period that is not the one they were made in; rejected, it stays at the
    gateway with this text, its quantities kept, for a person to correct. A period that ends
    before it starts (a gateway's wall clock stepped back while it was made, by a version that
    did not correct it) is refused the same way: the ERP would book it as it is, or refuse it
    without saying why."""
    start, end = p.period_start_ms, p.period_end_ms
    if start is not None and end is not None and end < start:
        return (
            f"its period ends ({_iso_ms(end)}) before it starts ({_iso_ms(start)}): the "
            "gateway's wall clock went back while it was made, so it is not posted"
        )
    if not p.posting_date:
        return None
    try:
        day = dt.date.fromisoformat(p.posting_date)
    except ValueError:  # the message's pattern takes 2026-13-45 too
        return f"posting date {p.posting_date!r} is not a date"
    earliest = EARLIEST_PLAUSIBLE.date()
    if day < earliest:
        return (
            f"posting date {day} cannot be true (before {earliest}): the gateway's wall clock "
            "was wrong when it made this confirmation, so it is not posted"
        )
    latest = (dt.datetime.fromtimestamp(now_ms / 1000, dt.UTC) + POSTING_DATE_AHEAD).date()
    if day > latest:
        return (
            f"posting date {day} cannot be true (after {latest}, by the relay's clock): the "
            "gateway's wall clock was ahead when it made this confirmation, so it is not posted"
        )
    return None


def _iso_ms(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="seconds")


def _ids(p: Posting) -> dict[str, object]:
    return {
        "idem_key": p.idem_key,
        "edge_id": p.edge_id,
        "order": p.order_id,
        "operation": p.operation,
        "conf_index": p.conf_index,
        "seq": p.seq,
        "kind": p.kind,
    }
