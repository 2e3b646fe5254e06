"""The narrow faces of the engine: what each adapter may do with it, and nothing more.

The engine (``edge/engine.py``) is the one writer. An adapter is handed only the face it needs:

- :class:`InputSink` for whatever brings inputs in (OPC UA, Modbus, GPIO, buttons, the downlink,
  the panel's commands): the clock, and submitting inputs that are answered once durable;
- :class:`StateView` for whatever shows the work center (the panel, presence, the stack light,
  metrics): the state as of the last commit, and a call after every commit;
- :class:`FloorFace`, both of them, for the operator's buttons and panel;
- :class:`OutboxPort` for the uplink (and what reports on it): the outbox rows to send and their
  marks, run in order with the commits on the store's thread;
- :class:`EngineHealth` for what reports on the writer itself (metrics, presence).

:class:`~edge.engine.Engine` implements all of them; only the wiring (``edge/app.py``) knows it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from edge.domain.clock import Instant
from edge.domain.core import WorkCenter
from edge.domain.events import Event, Outcome
from edge.domain.inputs import Input
from edge.domain.model import Operation, OperationKey
from edge.store.retention import RetentionStats
from edge.store.store import OutboxMessage, OutboxRow

CommitListener = Callable[[Sequence[Event]], None]
CommitHook = Callable[[list[OutboxRow]], None]


@dataclass(slots=True)
class EngineStats:
    """What the writer has done since it started (for metrics and the status line)."""

    inputs: int = 0
    journaled: int = 0
    rejected: int = 0
    commits: int = 0
    commit_failures: int = 0
    internal_errors: int = 0
    last_batch: int = 0


class Outbound(Protocol):
    """Which committed events become messages, and which relay answers finish a message: the
    engine is handed this (``edge.sync.messages``) and knows no topics itself."""

    def messages_for(self, events: Iterable[Event]) -> list[OutboxMessage]: ...

    def settled_keys(self, events: Iterable[Event]) -> list[str]: ...

    def counter_series(self, min_interval_ms: float) -> CounterSeries: ...


class CounterSeries(Protocol):
    """The counters' time series (``edge.sync.messages.CounterSeries``): what each commit
    sends of the operations' counts, at most once per interval, the last value always."""

    def __len__(self) -> int: ...

    def changed(
        self, active: Iterable[Operation], at_wall_ms: int, mono_ms: int, *, idle: bool = False
    ) -> list[OutboxMessage]: ...

    @property
    def held(self) -> int: ...

    def release(self) -> None: ...

    def forget(self, keep: Callable[[OperationKey], bool]) -> None: ...

    def clear(self) -> None: ...


class InputSink(Protocol):
    """Inputs in: each is answered once it is durable (or rejected, with the reason)."""

    def now(self) -> Instant: ...

    async def submit(self, inp: Input, *, command_id: str | None = None) -> Outcome: ...

    async def submit_many(self, inputs: list[Input]) -> list[Outcome]: ...


class StateView(Protocol):
    """The work center as of the last commit. Read it; never change it (only the engine does)."""

    @property
    def work_center(self) -> WorkCenter: ...

    def add_listener(self, listener: CommitListener) -> None:
        """``listener`` gets the events of each commit, on the loop, once they are durable."""
        ...


class FloorFace(InputSink, StateView, Protocol):
    """Inputs in and the state to read them against: the operator's buttons and panel."""


class EngineHealth(Protocol):
    """How the writer is doing: for metrics, health messages and the watchdog."""

    @property
    def running(self) -> bool: ...

    @property
    def healthy(self) -> bool: ...

    @property
    def clock_trusted(self) -> bool: ...

    @property
    def queue_depth(self) -> int: ...

    @property
    def stats(self) -> EngineStats: ...


class MetricsFace(StateView, EngineHealth, Protocol):
    """What ``/metrics`` reports: the writer, the outbox and the floor."""

    async def outbox_open_counts(self) -> dict[str, int]: ...

    async def outbox_oldest_ms(self) -> int | None: ...

    @property
    def retention(self) -> RetentionStats: ...

    @property
    def command_id_count(self) -> int: ...

    def checkpoint_age_s(self) -> float | None: ...


class PanelFace(FloorFace, MetricsFace, Protocol):
    """The touch panel's local API: commands in, the state out (also as ``/metrics``), and a
    call after every commit (counts change the state without an event) to tell open pages."""

    @property
    def boot_seq(self) -> int: ...

    def add_commit_hook(self, hook: CommitHook) -> None: ...


class OutboxPort(Protocol):
    """The outbox, for the uplink: every call runs on the store's thread, in order with commits."""

    @property
    def boot_seq(self) -> int: ...

    def add_commit_hook(self, hook: CommitHook) -> None:
        """``hook`` gets the outbox rows each commit added, on the loop, once they are durable."""
        ...

    async def outbox_pending(self, limit: int, after_seq: int) -> list[OutboxRow]: ...

    async def outbox_from_seq(self, from_seq: int, limit: int) -> list[OutboxRow]: ...

    async def outbox_mark(
        self,
        done: Sequence[int],
        published: Sequence[int],
        refused: Sequence[tuple[int, str]],
    ) -> None: ...

    async def outbox_requeue(self, older_than_wall_ms: int | None = None) -> int: ...

    async def outbox_depth(self) -> int: ...

    async def outbox_oldest_ms(self) -> int | None: ...

    async def outbox_open_counts(self) -> dict[str, int]: ...


class PresenceFace(StateView, Protocol):
    """What the health and snapshot messages report: the state, the outbox, the clock."""

    @property
    def boot_seq(self) -> int: ...

    @property
    def clock_trusted(self) -> bool: ...

    @property
    def disk_low(self) -> bool:
        """Free space below the floor: new machine counts are refused."""
        ...

    def now(self) -> Instant:
        """The engine's clock (the shift KPIs so far are read up to it)."""
        ...

    async def outbox_depth(self) -> int: ...

    async def outbox_oldest_ms(self) -> int | None: ...


class SyncFace(InputSink, OutboxPort, PresenceFace, Protocol):
    """What the MQTT sync as a whole is handed: its downlink, uplink and presence each take
    their own part of it."""
