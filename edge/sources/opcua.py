"""The OPC UA source: subscriptions on a machine controller's nodes, translated into inputs.

One task owns one server connection. It resolves the configured nodes (NodeIds or browse
paths), checks that each exists and has a fitting type, reads the current values as a new
baseline, subscribes to changes, and hands what arrives to the engine in batches. A watchdog
reads the server's clock; a silent or dead session is closed and opened again with backoff.

After a reconnect the counters are simply read again: the core's reset / wrap / gap rules decide
what counts, so a server restart that reset its counters to 0 loses nothing and doubles
nothing. When ``ServerStatus.StartTime`` changed, the source says so first (a restart input),
so the first reading after it counts from 0 at the restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog
from asyncua import ua
from asyncua.client.client import Client
from asyncua.common.node import Node
from asyncua.common.subscription import DataChangeNotif
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.uaerrors import UaError, UaStatusCodeError

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
from edge.ports import InputSink
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
NODE_ID_PREFIXES = ("ns=", "i=", "s=", "g=", "b=")
STATE_QUEUE = 16
# While the store refuses (a full disk): how often to try again, and how many values may wait.
STORE_RETRY_S = 0.5
MAX_WAITING = 100_000


@dataclass(slots=True)
class Mapped:
    role: str  # "counter", "state", "mode", "alarm"
    ref: str
    counter: str | None = None
    node: Node | None = None


@dataclass(slots=True)
class LinkState:
    status: str = "starting"
    connects: int = 0
    errors: int = 0
    last_error: str | None = None
    last_change_ms: int | None = None
    server_start: datetime | None = None
    values: dict[str, Any] = field(default_factory=dict)


class _Handler:
    """asyncua calls this on our loop; it only queues, the pump hands batches to the engine."""

    def __init__(self, source: OpcUaLink) -> None:
        self.source = source

    def datachange_notification(self, node: Node, value: Any, data: DataChangeNotif) -> None:
        self.source.on_change(node, value)

    def status_change_notification(self, status: Any) -> None:
        self.source.on_status(status)


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

    # ------------------------------------------------------------------ status for health

    @property
    def link_status(self) -> str:
        return self.state.status

    # ------------------------------------------------------------------ the loop

    async def run(self) -> None:
        delay = self.cfg.reconnect_min_s
        while True:
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._down(exc)
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                # asyncua's disconnect can swallow our cancellation while it tears down;
                # a stopping gateway must still stop.
                raise asyncio.CancelledError
            wait = delay * random.uniform(0.8, 1.2)
            await asyncio.sleep(wait)
            delay = min(self.cfg.reconnect_max_s, delay * 2)
            if self.state.status == "ok":
                delay = self.cfg.reconnect_min_s

    def _down(self, exc: BaseException) -> None:
        reason = _describe(exc)
        self.state.errors += 1
        if self.state.status != "down" or self.state.last_error != reason:
            self.log.warning("opc ua source unavailable; retrying", reason=reason)
        self.state.status = "down"
        self.state.last_error = reason

    async def _session(self) -> None:
        client = Client(self.cfg.endpoint, timeout=self.cfg.timeout_s)
        await self._secure(client)
        self._lost.clear()
        async with client:
            self.state.connects += 1
            await self._resolve(client)
            await self._baseline(client)
            handler = _Handler(self)
            period = self.cfg.publishing_interval_ms
            sub = await client.create_subscription(period, handler)
            sampling = ua.Double(self.cfg.sampling_interval_ms)
            counters = [m.node for m in self.mapped if m.node is not None and m.role == "counter"]
            states = [m.node for m in self.mapped if m.node is not None and m.role != "counter"]
            # An absolute counter needs only its newest value (the core counts the delta);
            # a state must not lose a short blip between two publishes: keep a queue.
            if counters:
                await sub.subscribe_data_change(counters, queuesize=1, sampling_interval=sampling)
            if states:
                await sub.subscribe_data_change(
                    states, queuesize=STATE_QUEUE, sampling_interval=sampling
                )
            self.subscription = sub
            if self.state.status != "ok":
                self.log.info("opc ua source connected", nodes=len(self.mapped))
            self.state.status = "ok"
            self.state.last_error = None
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
        """Find every configured node and check its type; a bad one names itself."""
        self._by_node.clear()
        for m in self.mapped:
            await self._resolve_one(client, m)
            assert m.node is not None
            self._by_node[m.node.nodeid.to_string()] = m

    async def _resolve_one(self, client: Client, m: Mapped) -> None:
        node = await self._find(client, m.ref)
        try:
            vtype = await node.read_data_type_as_variant_type()
        except UaStatusCodeError as exc:
            raise SourceUnavailable(f"node {m.ref!r} ({m.role}): {_describe(exc)}") from None
        if m.role == "counter" and vtype not in INTEGER_TYPES:
            raise SourceUnavailable(
                f"node {m.ref!r} for counter {m.counter!r} has type {vtype.name}; "
                "a counter needs an integer type"
            )
        m.node = node

    async def _find(self, client: Client, ref: str) -> Node:
        try:
            if ref.startswith(NODE_ID_PREFIXES):
                node = client.get_node(ref)
                await node.read_browse_name()  # raises BadNodeIdUnknown for a missing node
                return node
            path = [p for p in ref.strip("/").split("/") if p]
            found: Node = await client.nodes.root.get_child(path)
            return found
        except UaStatusCodeError as exc:
            raise SourceUnavailable(
                f"node {ref!r} not found on the server: {_describe(exc)}"
            ) from None
        except ValueError as exc:
            raise SourceUnavailable(f"node {ref!r}: {exc}") from None

    async def _baseline(self, client: Client) -> None:
        """After (re)connecting: restart detection, then the current values as a baseline."""
        start = await client.get_node(ObjectIds.Server_ServerStatus_StartTime).read_value()
        now = self.engine.now()
        inputs: list[Input] = []
        previous = self.state.server_start
        if previous is not None and start != previous:
            restarted = _restart_instant(now, start)
            self.log.warning(
                "opc ua server restarted; its counters count from 0 again",
                previous_start=str(previous),
                start=str(start),
            )
            inputs += [SourceRestarted(m.counter, restarted) for m in self._counters() if m.counter]
        self.state.server_start = start
        nodes = [m.node for m in self.mapped if m.node is not None]
        values = await client.read_values(nodes)
        for m, value in zip(self.mapped, values, strict=True):
            inputs += self._inputs_for(m, value, now)
        if inputs:
            await self.engine.submit_many(inputs)

    def _counters(self) -> list[Mapped]:
        return [m for m in self.mapped if m.role == "counter" and m.counter]

    # ------------------------------------------------------------------ changes

    def on_change(self, node: Node, value: Any) -> None:
        m = self._by_node.get(node.nodeid.to_string())
        if m is None:
            return
        self._pending.extend(self._inputs_for(m, value, self.engine.now()))
        self.state.last_change_ms = time.time_ns() // 1_000_000
        self._wake.set()

    def on_status(self, status: Any) -> None:
        self.log.warning("opc ua subscription status changed", status=str(status))
        self._lost.set()

    def _inputs_for(self, m: Mapped, value: Any, now: Instant) -> list[Input]:
        self.state.values[m.ref] = value
        if m.role == "counter":
            if isinstance(value, bool) or not isinstance(value, int):
                self.log.error(
                    "counter node delivered a non-integer value; ignored",
                    node=m.ref,
                    value=repr(value)[:80],
                )
                return []
            assert m.counter is not None
            return [CounterReading(m.counter, value, now)]
        if m.role == "alarm":
            self._alarm = str(value) if value not in (None, "", 0) else None
        elif m.role == "state":
            self._raw_state = value
        elif m.role == "mode":
            self._raw_mode = value
        state = self._machine_state()
        if state is None:
            return []
        return [MachineStateChanged(self.cfg.name, state, now, self._alarm)]

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
        """Until the session dies: every watchdog period read the server's clock (a dead
        session) and the counters (a silently stalled subscription: the value moved, but no
        notification came for two periods in a row)."""
        clock = client.get_node(ObjectIds.Server_ServerStatus_CurrentTime)
        counters = [m for m in self._counters() if m.node is not None]
        counter_nodes = [m.node for m in counters if m.node is not None]
        behind = 0
        while not self._lost.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._lost.wait(), self.cfg.watchdog_s)
            if self._lost.is_set():
                break
            try:
                await asyncio.wait_for(clock.read_value(), self.cfg.timeout_s)
                values = await asyncio.wait_for(
                    client.read_values(counter_nodes), self.cfg.timeout_s
                )
            except (TimeoutError, UaError, OSError, ConnectionError) as exc:
                raise SourceUnavailable(
                    f"watchdog: the server does not answer ({_describe(exc)})"
                ) from None
            moved = any(
                self.state.values.get(m.ref) != v for m, v in zip(counters, values, strict=True)
            )
            behind = behind + 1 if moved else 0
            if behind >= 2:
                raise SourceUnavailable(
                    "watchdog: counters moved on the server but the subscription reported "
                    "nothing; subscribing again"
                )
        raise SourceUnavailable("the subscription was lost")


def _merge_states(batch: list[Input]) -> list[Input]:
    """State and alarm nodes change together but notify one by one: a state followed in the
    same batch by the same state with more detail (the alarm) is one change, not two."""
    out: list[Input] = []
    for inp in batch:
        if (
            isinstance(inp, MachineStateChanged)
            and out
            and isinstance(out[-1], MachineStateChanged)
            and out[-1].state is inp.state
        ):
            out[-1] = inp
        else:
            out.append(inp)
    return out


def _restart_instant(now: Instant, start: Any) -> Instant:
    """The restart as an instant: the server's start time, if it is in the recent past."""
    if not isinstance(start, datetime):
        return now
    if start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    ago_ms = int((now.wall_ms / 1000 - start.timestamp()) * 1000)
    if 0 <= ago_ms <= 24 * 3600 * 1000:
        return now.after_ms(-ago_ms)
    return now


def _describe(exc: BaseException) -> str:
    if isinstance(exc, UaStatusCodeError):
        return f"{type(exc).__name__}: {exc}"
    text = str(exc) or type(exc).__name__
    return text if isinstance(exc, SourceUnavailable) else f"{type(exc).__name__}: {text}"
