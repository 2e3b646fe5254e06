"""The OPC UA source: subscriptions on a machine controller's nodes, translated into inputs.

One task owns one server connection. It resolves the configured nodes (NodeIds or browse
paths), checks that each exists and has a fitting type, reads the current values as a new
baseline, subscribes to changes, and hands what arrives to the engine in batches. A dead
session is closed and opened again with backoff: from ``reconnect_min_s``, doubling up to
``reconnect_max_s`` while it keeps failing, and from ``reconnect_min_s`` again once a session
ran healthy for ``max(reconnect_max_s, 3 watchdog periods)``.

The watchdog reads the server's clock and the counters every ``watchdog_s``. No answer: the
session is dead. The subscription asks for a keep-alive at least twice per watchdog period, and
every publish response (data or keep-alive) is noted; while the server answers reads, a
subscription is stalled when it sent nothing at all for longer than the keep-alive window the
server granted (plus a margin; a server that grants a publishing interval of 0 promises no
keep-alives, and this rule is off), or when a read showed a counter value newer than the newest
one delivered for it and no notification at all came for that counter by the time one was due
(two publishing intervals and the sampling interval, plus a margin). A read that differs from
the last notification is no sign by itself: a busy counter moves between every read and the
next publish.

After a reconnect the counters are simply read again: the core's reset / wrap / gap rules decide
what counts, so a server restart that reset its counters to 0 loses nothing and doubles
nothing. When ``ServerStatus.StartTime`` changed, the source says so first (a restart input),
so the first reading after it counts from 0 at the restart. The state, mode and alarm values
read at connect are taken in together and make one machine state change, with its alarm.

Time rules. A value is dated when it changed at the machine, not when the gateway saw it: by
its DataValue's SourceTimestamp (the ServerTimestamp when there is none; our own now when there
is neither), in the baseline read as in every notification. The instant is the engine's now
moved back by the value's age, on the wall and the monotonic clock alike (durations stay
consistent within a session), and bounded:

- never after now (a timestamp in the future is taken as now);
- never before the previous value of the same node, and a machine state never before the
  previous machine state (made from state, mode and alarm, it is as new as the newest of them);
- never before the session's floor: the last sign of life of the previous session (its last
  publish response or baseline), since we knew the values up to then; at the first connect, not
  more than ``FIRST_LOOKBACK_S`` before it.

So a stop that began while the gateway was restarting or cut off is dated when it began. A
value's age is judged on the server's own clock: ``ServerStatus.CurrentTime`` is read at connect
and in every watchdog round and held against our monotonic clock (the midpoint of the read, the
largest of the last few samples, as the server may refresh that node only now and then), which
gives the server's time now, at every value, whatever our wall clock did since the last
sample. While that agrees with our wall clock within ``max_clock_skew_s`` the value's age is
our wall clock minus its timestamp (exact when both clocks are right); beyond it, the server's
time now minus its timestamp. So neither a server clock that is off nor a step of our own wall
clock (NTP setting it, a boot in 1970) moves a stop or stretches it. The disagreement is logged
once when it is beyond the limit (and again when it is back within half of it).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import deque
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import structlog
from asyncua import ua
from asyncua.client.client import Client
from asyncua.common.node import Node
from asyncua.common.subscription import DataChangeNotif, Subscription
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.uaerrors import UaError, UaStatusCodeError

from edge.aio import wait_set, within
from edge.config import OpcUaSource
from edge.domain.clock import Instant
from edge.domain.inputs import (
    CounterReading,
    Input,
    MachineState,
    MachineStateChanged,
    SourceRestarted,
)
from edge.errors import EngineStopped, SourceUnavailable, StoreError
from edge.logging import Logger
from edge.opcua_nodeid import (
    Namespace,
    ParsedNodeId,
    PathSegment,
    parse_node_ref,
)
from edge.ports import InputSink
from edge.sources.opcua_errors import (
    PhasedClient,
    Where,
    explain,
    explain_status,
    quiet_asyncua,
    status_name,
)
from edge.sources.opcua_templates import StateTranslator

INTEGER_TYPES = frozenset(
    {
        ua.VariantType.Byte,
        ua.VariantType.SByte,
        ua.VariantType.UInt16,
        ua.VariantType.Int16,
        ua.VariantType.UInt32,
        ua.VariantType.Int32,
        ua.VariantType.UInt64,
        ua.VariantType.Int64,
    }
)
# The data types a counter may be declared with although they are no integer type: the
# abstract ones (a value of any number type may come); the value it has decides.
ABSTRACT_TYPES = frozenset({"BaseDataType", "Number", "Integer", "UInteger"})
# Status codes of a lookup that mean "not there": the message then names the namespaces.
NOT_FOUND = frozenset({"BadNodeIdUnknown", "BadNoMatch", "BadBrowseNameInvalid"})
STATE_QUEUE = 16
# While the store refuses (a full disk): how often to try again, and how many values may wait.
STORE_RETRY_S = 0.5
MAX_WAITING = 100_000
# The subscription is asked for a keep-alive this many times per watchdog period, so a silent
# one is told from a quiet machine within a period or two.
KEEPALIVES_PER_WATCHDOG = 2
# Slack on top of what the server promised (keep-alive window, publishing interval), for the
# latency of the network, of the server's loop and of ours.
SILENCE_MARGIN_S = 0.5
DUE_MARGIN_S = 2.0
# At the first connect no value is dated earlier than this before it (nothing says when we last
# knew the machine); after that, not before the last sign of life of the previous session.
FIRST_LOOKBACK_S = 120.0
# The clock offset is the largest of the last few samples: a server that refreshes its clock
# node only now and then reads behind, never ahead.
OFFSET_SAMPLES = 5
# State and alarm changes this close together (by the server's clock) in one batch are one
# change of the machine state.
MERGE_WINDOW_MS = 1000


@dataclass(slots=True)
class Mapped:
    role: str  # "counter", "state", "mode", "alarm"
    ref: str
    counter: str | None = None
    node: Node | None = None
    # The newest value the server delivered for this node (baseline or notification): the
    # server's timestamp of it, the instant it was given (a later one is never earlier), and
    # how many notifications came this session.
    stamp: datetime | None = None
    at: Instant | None = None
    delivered: int = 0
    # The watchdog's suspicion: since when (monotonic s) a read showed a newer value than the
    # subscription delivered, and how many notifications had come by then.
    suspect_since: float | None = None
    suspect_delivered: int = 0


@dataclass(slots=True)
class LinkState:
    status: str = "starting"
    connects: int = 0
    errors: int = 0
    last_error: str | None = None
    last_change_ms: int | None = None
    server_start: datetime | None = None
    clock_offset_s: float = 0.0  # the server's clock minus our wall clock, when beyond the limit
    values: dict[str, Any] = field(default_factory=dict)


class _Handler:
    """asyncua calls this on our loop; it only queues, the pump hands batches to the engine."""

    def __init__(self, source: OpcUaLink) -> None:
        self.source = source

    def datachange_notification(self, node: Node, value: Any, data: DataChangeNotif) -> None:
        self.source.on_change(node, value, data)

    def status_change_notification(self, status: Any) -> None:
        self.source.on_status(status)


class _Subscription(Subscription):
    """asyncua's subscription that tells the link of every publish response, a keep-alive
    (no data) included: the watchdog's sign that the subscription is alive."""

    def __init__(self, link: OpcUaLink, client: Client, params: Any, handler: _Handler) -> None:
        super().__init__(client.uaclient.session, params, handler)
        self.link = link

    async def publish_callback(self, publish_result: ua.PublishResult) -> None:
        self.link.on_publish()
        await super().publish_callback(publish_result)


class OpcUaLink:
    def __init__(
        self, cfg: OpcUaSource, engine: InputSink, *, logger: Logger | None = None
    ) -> None:
        self.cfg = cfg
        self.engine = engine
        self.log = (logger or structlog.get_logger("edge.opcua")).bind(
            source=cfg.name, endpoint=cfg.endpoint
        )
        self.state = LinkState()
        self.translator = StateTranslator(cfg.template, cfg.state_map)
        self.mapped: list[Mapped] = [
            Mapped("counter", c.node, counter=c.counter) for c in cfg.counters
        ]
        for role, ref in (
            ("state", cfg.state_node),
            ("mode", cfg.mode_node),
            ("alarm", cfg.alarm_node),
        ):
            if ref:
                self.mapped.append(Mapped(role, ref))
        self._by_node: dict[str, Mapped] = {}
        self._pending: list[Input] = []
        self._wake = asyncio.Event()
        self._store_failing = False
        self._lost = asyncio.Event()
        self._raw_state: Any = None
        self._raw_mode: Any = None
        self._alarm: str | None = None
        self.subscription: Any = None
        # node ref -> the server's id of its monitored item (for diagnostics and tests)
        self.monitored: dict[str, int] = {}
        # What the server granted: publishing interval and keep-alive window (None: the server
        # sends no keep-alives, e.g. a publishing interval of 0), in seconds.
        self.publish_s = 0.0
        self.keepalive_s: float | None = None
        self._last_publish = 0.0  # monotonic s of the last publish response
        self._healthy_since: float | None = None  # monotonic s the session became "ok"
        # Time rules: no value of this session is dated before _floor; _contact (monotonic s)
        # is the last moment the server told us its values (baseline, publish response), and
        # becomes _last_contact, the next session's floor, when the session ends.
        self._floor: Instant | None = None
        self._contact: float | None = None
        self._last_contact: Instant | None = None
        self._state_at: Instant | None = None  # the newest machine state's instant
        # The server's clock minus our monotonic one, ms (the last few samples), and the
        # largest of them (None before the first): the server's time now.
        self._offsets: deque[float] = deque(maxlen=OFFSET_SAMPLES)
        self._server_mono_ms: float | None = None
        self._offset_ms = 0  # the server's clock minus our wall clock, beyond the limit; else 0
        self._skew_logged = False
        # The server's NamespaceArray, read at each connect: nsu= ids resolve against it.
        self.namespaces: list[str] | None = None
        self.where = Where(
            cfg.endpoint,
            secure=cfg.security_policy != "None",
            own_cert=cfg.certificate_dir / "own" / "cert.der",
            username=cfg.username,
            timeout_s=cfg.timeout_s,
        )
        self._client: PhasedClient | None = None
        self._status_said: str | None = None
        quiet_asyncua()

    # ------------------------------------------------------------------ status for health

    @property
    def link_status(self) -> str:
        return self.state.status

    # ------------------------------------------------------------------ the loop

    async def run(self) -> None:
        delay = self.cfg.reconnect_min_s
        while True:
            self._healthy_since = None
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._down(exc)
            self._session_ended()
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                # asyncua's disconnect can swallow our cancellation while it tears down;
                # a stopping gateway must still stop.
                raise asyncio.CancelledError
            if self._healthy_for() >= self.healthy_reset_s:
                # The session ran well for a while: this is a new outage, not the same one
                # going on; the backoff starts over.
                delay = self.cfg.reconnect_min_s
            wait = delay * random.uniform(0.8, 1.2)
            await asyncio.sleep(wait)
            delay = min(self.cfg.reconnect_max_s, delay * 2)

    def _session_ended(self) -> None:
        """Remember the last moment the ended session told us the server's values."""
        if self._contact is None:
            return
        ago_s = max(0.0, time.monotonic() - self._contact)
        self._last_contact = self.engine.now().after_ms(-int(ago_s * 1000))
        self._contact = None

    def _healthy_for(self) -> float:
        """How long the session that just ended had been "ok" (0: it never was)."""
        since = self._healthy_since
        return 0.0 if since is None else time.monotonic() - since

    @property
    def healthy_reset_s(self) -> float:
        """How long a session must have run healthy for the next reconnect to wait only
        ``reconnect_min_s`` again (a server that drops every session at once is not hammered)."""
        return max(self.cfg.reconnect_max_s, 3 * self.cfg.watchdog_s)

    def _down(self, exc: BaseException) -> None:
        phase = self._client.phase if self._client is not None else "session"
        reason = (
            exc.args[0] if isinstance(exc, SourceUnavailable) else explain(exc, self.where, phase)
        )
        self.state.errors += 1
        if self.state.status != "down" or self.state.last_error != reason:
            self.log.warning("opc ua source unavailable; retrying", reason=reason)
        self.state.status = "down"
        self.state.last_error = reason

    async def _session(self) -> None:
        client = self._client = PhasedClient(self.cfg.endpoint, timeout=self.cfg.timeout_s)
        await self._secure(client)
        self._lost.clear()
        async with client:
            self.state.connects += 1
            self._status_said = None
            await self._resolve(client)
            clock = client.get_node(ObjectIds.Server_ServerStatus_CurrentTime)
            await self._sample_clock(clock)  # the baseline's times need the offset
            await self._baseline(client)
            self.subscription = await self._subscribe(client)
            if self.state.status != "ok":
                self.log.info("opc ua source connected", nodes=len(self.mapped))
            self.state.status = "ok"
            self.state.last_error = None
            self._client.phase = "session"
            self._healthy_since = time.monotonic()
            pump = asyncio.create_task(self._pump(), name=f"opcua-pump-{self.cfg.name}")
            try:
                await self._watch(client)
            finally:
                pump.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pump
                # What arrived last still counts; when stopping, the engine may be gone, and
                # the next start reads the counters again anyway.
                with contextlib.suppress(EngineStopped, StoreError):
                    await self._flush()

    async def _subscribe(self, client: Client) -> _Subscription:
        """One subscription for every node, with a keep-alive the watchdog can rely on: the
        server must answer at least every ``watchdog_s / KEEPALIVES_PER_WATCHDOG``, data or not.
        (asyncua's default asks for one keep-alive per 3/4 of the session timeout: an hour.)"""
        period = self.cfg.publishing_interval_ms
        params = ua.CreateSubscriptionParameters()
        params.RequestedPublishingInterval = period
        params.RequestedMaxKeepAliveCount = self._keepalive_count(period)
        # OPC UA: the lifetime is at least three keep-alives.
        params.RequestedLifetimeCount = max(10_000, 3 * params.RequestedMaxKeepAliveCount)
        params.MaxNotificationsPerPublish = 10_000
        params.PublishingEnabled = True
        params.Priority = 0
        sub = _Subscription(self, client, params, _Handler(self))
        granted = await sub.init()
        interval = float(granted.RevisedPublishingInterval)
        count = int(granted.RevisedMaxKeepAliveCount)
        if 0 < interval != period and count != self._keepalive_count(interval):
            # The server chose another interval: ask again for keep-alives in time with it.
            change = ua.ModifySubscriptionParameters()
            change.SubscriptionId = sub.subscription_id
            change.RequestedPublishingInterval = interval
            change.RequestedMaxKeepAliveCount = self._keepalive_count(interval)
            change.RequestedLifetimeCount = max(
                int(granted.RevisedLifetimeCount), 3 * change.RequestedMaxKeepAliveCount
            )
            change.MaxNotificationsPerPublish = params.MaxNotificationsPerPublish
            change.Priority = 0
            modified = await sub.update(change)
            interval = float(modified.RevisedPublishingInterval)
            count = int(modified.RevisedMaxKeepAliveCount)
        self.publish_s = interval / 1000
        self.keepalive_s = interval * count / 1000 if interval > 0 and count > 0 else None
        self._last_publish = time.monotonic()
        sampling = ua.Double(self.cfg.sampling_interval_ms)
        counters = [m for m in self.mapped if m.node is not None and m.role == "counter"]
        states = [m for m in self.mapped if m.node is not None and m.role != "counter"]
        # An absolute counter needs only its newest value (the core counts the delta);
        # a state must not lose a short blip between two publishes: keep a queue.
        self.monitored.clear()
        for group, queue in ((counters, 1), (states, STATE_QUEUE)):
            if not group:
                continue
            nodes = [m.node for m in group if m.node is not None]
            handles = await sub.subscribe_data_change(
                nodes, queuesize=queue, sampling_interval=sampling
            )
            for m, handle in zip(group, handles, strict=True):
                m.delivered = 0
                m.suspect_since = None
                if isinstance(handle, int):
                    self.monitored[m.ref] = handle
        return sub

    def _keepalive_count(self, interval_ms: float) -> int:
        """Publishing intervals per keep-alive: KEEPALIVES_PER_WATCHDOG per watchdog period."""
        target_ms = self.cfg.watchdog_s * 1000 / KEEPALIVES_PER_WATCHDOG
        # An interval of 0 is revised by the server; guess a small usual one.
        step_ms = interval_ms if interval_ms > 0 else 50.0
        return max(1, int(target_ms // step_ms))

    async def _secure(self, client: Client) -> None:
        if self.cfg.username:
            client.set_user(self.cfg.username)
            if self.cfg.password_file is not None:
                try:
                    client.set_password(self.cfg.password_file.read_text().strip())
                except OSError as exc:
                    raise SourceUnavailable(
                        f"password_file {self.cfg.password_file} cannot be read: {exc.strerror}"
                    ) from None
        if self.cfg.security_policy != "None":
            from edge.sources.opcua_security import apply_security

            await apply_security(client, self.cfg, self.log)

    # ------------------------------------------------------------------ nodes

    async def _resolve(self, client: Client) -> None:
        """Find every configured node and check its type; a bad one names itself. The
        namespace array is read again first: nsu= ids resolve against this server's."""
        self._by_node.clear()
        self.namespaces = None
        for m in self.mapped:
            await self._resolve_one(client, m)
            assert m.node is not None
            self._by_node[m.node.nodeid.to_string()] = m

    async def _resolve_one(self, client: Client, m: Mapped) -> None:
        node = await self._find(client, m.ref)
        try:
            vtype = await node.read_data_type_as_variant_type()
            if m.role == "counter" and vtype not in INTEGER_TYPES:
                await self._check_counter_type(client, m, node, vtype)
        except UaStatusCodeError as exc:
            raise SourceUnavailable(f"node {m.ref!r} ({m.role}): {_describe(exc)}") from None
        m.node = node

    async def _check_counter_type(
        self, client: Client, m: Mapped, node: Node, vtype: ua.VariantType
    ) -> None:
        """A counter declared with an abstract type (UInteger, Integer, Number) is judged by
        the value it has: an integer is fine, anything else is refused."""
        declared = vtype.name
        if vtype is ua.VariantType.Variant:
            dtype = await node.read_data_type()
            declared = (await client.get_node(dtype).read_browse_name()).Name
            if declared in ABSTRACT_TYPES:
                dv = await node.read_data_value(raise_on_bad_status=False)
                held = dv.Value.VariantType if dv.Value is not None else None
                if held in INTEGER_TYPES:
                    return
                what = (
                    "no value yet"
                    if held in (None, ua.VariantType.Null)
                    else f"a {held.name} value"
                )
                raise SourceUnavailable(
                    f"node {m.ref!r} for counter {m.counter!r} has type {declared} and holds "
                    f"{what}; a counter needs an integer type"
                )
        raise SourceUnavailable(
            f"node {m.ref!r} for counter {m.counter!r} has type {declared}; "
            "a counter needs an integer type"
        )

    async def _namespaces(self, client: Client) -> list[str]:
        """The server's NamespaceArray (read once per session)."""
        if self.namespaces is None:
            self.namespaces = [str(uri) for uri in await client.get_namespace_array()]
        return self.namespaces

    def _namespace_list(self) -> str:
        return ", ".join(f"ns={i} {uri}" for i, uri in enumerate(self.namespaces or []))

    async def _index(self, client: Client, ns: Namespace, ref: str) -> int:
        if ns.uri is None:
            return ns.index or 0
        namespaces = await self._namespaces(client)
        if ns.uri not in namespaces:
            raise SourceUnavailable(
                f"node {ref!r}: the server has no namespace {ns.uri!r}; its namespace array: "
                f"{self._namespace_list()}"
            )
        return namespaces.index(ns.uri)

    async def _find(self, client: Client, ref: str) -> Node:
        try:
            parsed = parse_node_ref(ref)
        except ValueError as exc:
            raise SourceUnavailable(f"node {ref!r}: {exc}") from None
        try:
            if isinstance(parsed, ParsedNodeId):
                index = await self._index(client, parsed.namespace, ref)
                node = client.get_node(
                    ua.NodeId.from_string(f"ns={index};{parsed.kind}={parsed.identifier}")
                )
                await node.read_browse_name()  # raises BadNodeIdUnknown for a missing node
                return node
            path = [await self._qualified(client, seg, ref) for seg in parsed.segments]
            found: Node = await client.nodes.root.get_child(path)
            return found
        except UaStatusCodeError as exc:
            said = f"node {ref!r} not found on the server: {_describe(exc)}"
            if status_name(exc) in NOT_FOUND:
                with contextlib.suppress(UaError, OSError, TimeoutError):
                    await self._namespaces(client)
                said += (
                    f"; the server's namespace array: {self._namespace_list()} "
                    "(an nsu=<namespace uri>;... id stays right when the indexes move)"
                )
            raise SourceUnavailable(said) from None
        except ValueError as exc:
            raise SourceUnavailable(f"node {ref!r}: {exc}") from None

    async def _qualified(self, client: Client, seg: PathSegment, ref: str) -> ua.QualifiedName:
        return ua.QualifiedName(seg.name, await self._index(client, seg.namespace, ref))

    async def _baseline(self, client: Client) -> None:
        """After (re)connecting: restart detection, then the current values as a baseline,
        each dated by the server's timestamp (see the module's time rules)."""
        start = await client.get_node(ObjectIds.Server_ServerStatus_StartTime).read_value()
        nodes = [m.node for m in self.mapped if m.node is not None]
        values = await _read(client, nodes)
        now = self.engine.now()
        self._contact = time.monotonic()
        self._floor = self._last_contact or now.after_ms(-int(FIRST_LOOKBACK_S * 1000))
        inputs: list[Input] = []
        previous = self.state.server_start
        if previous is not None and start != previous:
            restarted = self._dated(_aware(start), self._floor, now)
            self.log.warning(
                "opc ua server restarted; its counters count from 0 again",
                previous_start=str(previous),
                start=str(start),
            )
            inputs += [SourceRestarted(m.counter, restarted) for m in self._counters() if m.counter]
        self.state.server_start = start
        readings: list[Input] = []
        state_at: Instant | None = None
        for m, dv in zip(self.mapped, values, strict=True):
            at = self._node_instant(m, dv, now)
            reading = self._take(m, _value(dv), at)
            if reading is not None:
                readings.append(reading)
            if m.role != "counter":
                state_at = _later(state_at, at)
        # State, mode and alarm are all taken in first: a stop seen at connect is one change
        # with its alarm, not a stop without one and the alarm after it. It is as new as the
        # newest of them.
        if state_at is not None:
            change = self._state_change(state_at)
            if change is not None:
                readings.append(change)
        inputs += sorted(readings, key=lambda inp: _instant_of(inp).mono_ms)
        if inputs:
            await self.engine.submit_many(inputs)

    def _counters(self) -> list[Mapped]:
        return [m for m in self.mapped if m.role == "counter" and m.counter]

    # ------------------------------------------------------------------ changes

    def on_publish(self) -> None:
        """A publish response arrived (data or a keep-alive): the subscription lives."""
        self._last_publish = self._contact = time.monotonic()

    def on_change(self, node: Node, value: Any, data: DataChangeNotif | None = None) -> None:
        m = self._by_node.get(node.nodeid.to_string())
        if m is None:
            return
        m.delivered += 1
        dv = data.monitored_item.Value if data is not None else None
        at = self._node_instant(m, dv, self.engine.now())
        self._pending.extend(self._inputs_for(m, value, at))
        self.state.last_change_ms = time.time_ns() // 1_000_000
        self._wake.set()

    def on_status(self, status: Any) -> None:
        """The server says the subscription ended (BadShutdown, BadTimeout, ...): the session
        is renewed, and the status in words is the reason logged for it."""
        code = getattr(status, "Status", status)
        name = getattr(code, "name", None) or str(code)
        # Said once, as the reason the session ends (the source's "unavailable" line).
        self._status_said = explain_status(str(name), self.where)
        self._lost.set()

    def _inputs_for(self, m: Mapped, value: Any, at: Instant) -> list[Input]:
        """A notification's inputs: a counter's reading, or the machine state it changes."""
        reading = self._take(m, value, at)
        if m.role == "counter":
            return [reading] if reading is not None else []
        change = self._state_change(at)
        return [change] if change is not None else []

    # ------------------------------------------------------------------ time

    def _node_instant(self, m: Mapped, dv: ua.DataValue | None, now: Instant) -> Instant:
        """A node's new value as an instant: when the server says it changed, never before
        the node's previous value nor this session's floor, never after now."""
        m.stamp = _stamp(dv)
        floor = m.at if self._floor is None else _later(m.at, self._floor)
        m.at = self._dated(m.stamp, floor, now)
        return m.at

    def _dated(self, stamp: datetime | None, floor: Instant | None, now: Instant) -> Instant:
        """``now`` moved back by the age of ``stamp`` (corrected by the clock offset), on both
        clocks, so durations stay consistent; bounded by ``floor`` and ``now``."""
        at = now
        if stamp is not None:
            age_ms = int(self._server_now_ms(now) - stamp.timestamp() * 1000)
            if age_ms > 0:
                at = now.after_ms(-age_ms)
        if floor is not None and at.mono_ms < floor.mono_ms:
            at = floor
        return at

    def _server_now_ms(self, now: Instant) -> float:
        """The server's clock at ``now``: our wall clock while the two agree within
        ``max_clock_skew_s`` (the server may refresh its clock node only now and then, so a
        sample can be behind), else from its samples against our monotonic clock, which no
        step of our wall clock moves; our wall clock before the first sample."""
        if self._server_mono_ms is None:
            return now.wall_ms
        server = now.mono_ms + self._server_mono_ms
        if abs(server - now.wall_ms) <= self.cfg.max_clock_skew_s * 1000:
            return now.wall_ms
        return server

    async def _sample_clock(self, clock: Node) -> None:
        """Read the server's clock: it answers (or raises), and one more sample of it against
        our monotonic clock; how far it is from our wall clock is logged beyond the limit."""
        before = self.engine.now()
        value = await within(clock.read_value(), self.cfg.timeout_s)
        after = self.engine.now()
        server = _aware(value)
        if server is None:
            return
        self._offsets.append(server.timestamp() * 1000 - (before.mono_ms + after.mono_ms) / 2)
        self._server_mono_ms = max(self._offsets)
        offset = after.mono_ms + self._server_mono_ms - after.wall_ms
        limit_ms = self.cfg.max_clock_skew_s * 1000
        # Once correcting, only a clearly smaller difference ends it (no flapping at the limit).
        if abs(offset) > (limit_ms / 2 if self._offset_ms else limit_ms):
            if not self._skew_logged:
                self.log.warning(
                    "the opc ua server's clock disagrees with ours; its timestamps are "
                    "corrected by the difference",
                    offset_s=round(offset / 1000, 3),
                    max_clock_skew_s=self.cfg.max_clock_skew_s,
                )
                self._skew_logged = True
            self._offset_ms = int(offset)
        elif self._offset_ms:
            self.log.info(
                "the opc ua server's clock agrees with ours again", offset_s=round(offset / 1000, 3)
            )
            self._offset_ms = 0
        self.state.clock_offset_s = self._offset_ms / 1000

    def _take(self, m: Mapped, value: Any, at: Instant) -> Input | None:
        """Take a node's new value in; a counter's is a reading of its own."""
        self.state.values[m.ref] = value
        if m.role == "counter":
            if isinstance(value, bool) or not isinstance(value, int):
                self.log.error(
                    "counter node delivered a non-integer value; ignored",
                    node=m.ref,
                    value=repr(value)[:80],
                )
                return None
            assert m.counter is not None
            return CounterReading(m.counter, value, at)
        if m.role == "alarm":
            self._alarm = str(value) if value not in (None, "", 0) else None
        elif m.role == "state":
            self._raw_state = value
        elif m.role == "mode":
            self._raw_mode = value
        return None

    def _state_change(self, at: Instant) -> MachineStateChanged | None:
        """The machine state from the state, mode and alarm values taken in so far; never
        dated before the previous one."""
        state = self._machine_state()
        if state is None:
            return None
        self._state_at = at = _later(self._state_at, at)
        return MachineStateChanged(self.cfg.name, state, at, self._alarm)

    def _machine_state(self) -> MachineState | None:
        if self._raw_mode is not None:
            mode = self.translator.translate(self._raw_mode)
            if mode is MachineState.SETUP:
                return mode
        if self._raw_state is None:
            return None
        state = self.translator.translate(self._raw_state)
        if state is None:
            self.log.warning(
                "state value not in the template; add it to state_map",
                value=str(self._raw_state),
                template=self.cfg.template,
            )
        return state

    async def _pump(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._flush()
            except StoreError as exc:
                # Not durable, so not counted: the values wait, in order, for the next try.
                # The counters are absolute, so what changes meanwhile is not lost either.
                if not self._store_failing:
                    self.log.warning(
                        "values from opc ua not stored; kept and handed over again",
                        error=str(exc),
                        waiting=len(self._pending),
                    )
                self._store_failing = True
                await asyncio.sleep(STORE_RETRY_S)
                self._wake.set()
                continue
            if self._store_failing:
                self.log.info("values from opc ua stored again")
                self._store_failing = False

    async def _flush(self) -> None:
        if not self._pending:
            return
        batch, self._pending = _merge_states(self._pending), []
        try:
            outcomes = await self.engine.submit_many(batch)
        except StoreError:
            kept = batch + self._pending
            if len(kept) > MAX_WAITING:
                # A long outage at a fast machine: the oldest readings go (the newer ones of
                # an absolute counter still carry the parts, unless it wrapped meanwhile).
                self.log.error(
                    "opc ua values waiting for the store dropped", dropped=len(kept) - MAX_WAITING
                )
                kept = kept[-MAX_WAITING:]
            self._pending = kept
            raise
        for inp, outcome in zip(batch, outcomes, strict=True):
            if outcome.rejection is not None:
                self.log.warning(
                    "input from opc ua rejected",
                    input=type(inp).__name__,
                    reason=outcome.rejection.message,
                )

    async def _watch(self, client: Client) -> None:
        """Until the session dies: every watchdog period read the server's clock and the
        counters. The server does not answer: a dead session. It answers, and

        - the subscription sent nothing at all, not even a keep-alive, for longer than the
          keep-alive window it granted (plus a margin): a silently dead subscription;
        - or a counter read showed a value newer than the newest one delivered for it (by
          more than a publishing interval, when the server stamps its values), and no
          notification at all came for that counter by the time one was due: a dead
          monitored item.

        A busy counter moves between the read and the next publish, so a read that differs
        from the last notification proves nothing by itself; only nothing arriving does."""
        clock = client.get_node(ObjectIds.Server_ServerStatus_CurrentTime)
        counters = [m for m in self._counters() if m.node is not None]
        counter_nodes = [m.node for m in counters if m.node is not None]
        while not self._lost.is_set():
            await wait_set(self._lost, self.cfg.watchdog_s)
            if self._lost.is_set():
                break
            try:
                await self._sample_clock(clock)
                values = await within(_read(client, counter_nodes), self.cfg.timeout_s)
            except (TimeoutError, UaError, OSError, ConnectionError) as exc:
                if status_name(exc) is not None:  # the server answered: with a status code
                    raise SourceUnavailable(explain(exc, self.where)) from None
                raise SourceUnavailable(
                    f"watchdog: the server does not answer ({_describe(exc)})"
                ) from None
            # A publish response that came before these answers is taken in first.
            await asyncio.sleep(0)
            self._check_silence()
            for m, dv in zip(counters, values, strict=True):
                self._check_delivery(m, dv)
        raise SourceUnavailable(self._status_said or "the subscription was lost")

    def _check_silence(self) -> None:
        if self.keepalive_s is None:
            return  # no keep-alives promised: only the counters tell
        silent = time.monotonic() - self._last_publish
        limit = self.keepalive_s + max(self.keepalive_s / 2, self.publish_s) + SILENCE_MARGIN_S
        if silent > limit:
            raise SourceUnavailable(
                f"watchdog: the subscription sent nothing for {silent:.1f} s, not even a "
                f"keep-alive (promised every {self.keepalive_s:.2f} s), while the server "
                "answers; subscribing again"
            )

    def _check_delivery(self, m: Mapped, dv: ua.DataValue) -> None:
        now = time.monotonic()
        if m.suspect_since is not None:
            if m.delivered != m.suspect_delivered:
                m.suspect_since = None  # something came: the subscription delivers
            elif now - m.suspect_since > self._due_s():
                raise SourceUnavailable(
                    f"watchdog: counter node {m.ref!r} moved on the server (read {_value(dv)!r}) "
                    f"but nothing was delivered for it in {now - m.suspect_since:.1f} s; "
                    "subscribing again"
                )
        if m.suspect_since is None and self._newer_than_delivered(m, dv):
            m.suspect_since = now
            m.suspect_delivered = m.delivered

    def _due_s(self) -> float:
        """How long a healthy subscription may take to deliver a change a read has shown."""
        sampling_s = self.cfg.sampling_interval_ms / 1000
        return 2 * self.publish_s + sampling_s + DUE_MARGIN_S

    def _newer_than_delivered(self, m: Mapped, dv: ua.DataValue) -> bool:
        if _value(dv) == self.state.values.get(m.ref):
            return False
        stamp = _stamp(dv)
        if stamp is None or m.stamp is None:
            return True  # no timestamps to compare: a different value is newer
        window_s = self.publish_s + self.cfg.sampling_interval_ms / 1000
        return (stamp - m.stamp).total_seconds() > window_s


def _merge_states(batch: list[Input]) -> list[Input]:
    """State and alarm nodes change together but notify one by one: a state followed in the
    same batch, within MERGE_WINDOW_MS, by the same state with more detail (the alarm) is one
    change, not two; it happened when the first of them did."""
    out: list[Input] = []
    for inp in batch:
        last = out[-1] if out else None
        if (
            isinstance(inp, MachineStateChanged)
            and isinstance(last, MachineStateChanged)
            and last.state is inp.state
            and inp.at.mono_ms - last.at.mono_ms <= MERGE_WINDOW_MS
        ):
            out[-1] = replace(inp, at=last.at)
        else:
            out.append(inp)
    return out


def _later(a: Instant | None, b: Instant) -> Instant:
    return b if a is None or b.mono_ms > a.mono_ms else a


def _instant_of(inp: Input) -> Instant:
    at: Instant = inp.at
    return at


async def _read(client: Client, nodes: list[Node]) -> list[ua.DataValue]:
    """The nodes' values as DataValues, with the server's and the source's timestamps."""
    if not nodes:
        return []
    params = ua.ReadParameters()
    params.TimestampsToReturn = ua.TimestampsToReturn.Both
    for node in nodes:
        rv = ua.ReadValueId()
        rv.NodeId = node.nodeid
        rv.AttributeId = AttributeIds.Value
        params.NodesToRead.append(rv)
    results: list[ua.DataValue] = await client.uaclient.read(params)
    return results


def _value(dv: ua.DataValue | None) -> Any:
    if dv is None or dv.Value is None:
        return None
    return dv.Value.Value


def _stamp(dv: ua.DataValue | None) -> datetime | None:
    """When the value changed, by the server's clock: its SourceTimestamp, else ServerTimestamp."""
    if dv is None:
        return None
    return _aware(dv.SourceTimestamp or dv.ServerTimestamp)


def _aware(value: Any) -> datetime | None:
    """An OPC UA DateTime (UTC; asyncua may hand it over without a zone)."""
    if not isinstance(value, datetime):
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, UaStatusCodeError):
        name = status_name(exc) or type(exc).__name__
        return f"{name}: {exc}"
    text = str(exc) or type(exc).__name__
    return text if isinstance(exc, SourceUnavailable) else f"{type(exc).__name__}: {text}"
