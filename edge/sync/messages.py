"""Which committed events become messages for central, and on which topic (beside the
contract's models in ``edge/sync/contract.py``).

The engine is handed this module as its :class:`edge.ports.Outbound` and knows no topics.

The topic is relative to the work center's root (``umh/v1/<enterprise>/.../<workcenter>``);
the uplink publisher adds the root and the envelope (``msg_id``, ``seq``, ``boot_seq``, ...).
Business events go under ``_mes_v1``; time series under ``_historian``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable

from edge.domain.events import Event, EventType
from edge.domain.model import Operation, OperationKey
from edge.store.codec import dumps
from edge.store.store import OutboxMessage

E = EventType
ORDER_EVENT = "_mes_v1/order/event"
TOPICS: dict[EventType, str] = {
    E.OPERATION_DISPATCHED: ORDER_EVENT,
    E.OPERATION_CHANGED: ORDER_EVENT,
    E.OPERATION_WITHDRAWN: ORDER_EVENT,
    E.OPERATION_STATE_CHANGED: ORDER_EVENT,
    E.PICKED_OUT_OF_SEQUENCE: ORDER_EVENT,
    E.OPERATION_SPLIT: ORDER_EVENT,
    E.OPERATION_MERGED: ORDER_EVENT,
    E.TARGET_REACHED: ORDER_EVENT,
    E.OVER_TOLERANCE: ORDER_EVENT,
    E.OVER_TOLERANCE_ACKNOWLEDGED: ORDER_EVENT,
    E.DISPATCH_CONFLICT: ORDER_EVENT,
    E.DISPATCH_APPLIED: "_mes_v1/order/received",
    E.SCRAP_REPORTED: "_mes_v1/scrap",
    E.SETUP_PARTS_DECLARED_GOOD: "_mes_v1/scrap",
    E.COUNTER_DISCONTINUITY: "_mes_v1/counter/event",
    E.COUNTER_RESET: "_mes_v1/counter/event",
    E.COUNTER_WRAPPED: "_mes_v1/counter/event",
    E.COUNTER_DRIFT: "_mes_v1/counter/event",
    E.SOURCE_RESTARTED: "_mes_v1/counter/event",
    E.UNASSIGNED_PRODUCTION: "_mes_v1/counter/event",
    E.UNASSIGNED_ASSIGNED: "_mes_v1/counter/event",
    E.STOP_STARTED: "_mes_v1/stop",
    E.STOP_ENDED: "_mes_v1/stop",
    E.STOP_REASON_REQUESTED: "_mes_v1/stop",
    E.STOP_REASON_SET: "_mes_v1/stop",
    E.STOP_RECLASSIFIED: "_mes_v1/stop",
    E.CONFIRMATION_CREATED: "_mes_v1/confirmation",
    E.CONFIRMATION_RESENT: "_mes_v1/confirmation",
    E.CONFIRMATION_REVERSED: "_mes_v1/confirmation/cancel",
    E.COUNT_CORRECTED: ORDER_EVENT,
    E.FINAL_CONFIRMATION_WITHHELD: ORDER_EVENT,
    E.VERDICT_CONFLICT: ORDER_EVENT,
    E.HELP_CALLED: "_mes_v1/andon",
    E.HELP_ACKNOWLEDGED: "_mes_v1/andon",
    E.HELP_ESCALATED: "_mes_v1/andon",
    E.HELP_CLOSED: "_mes_v1/andon",
    E.SHIFT_CLOSED: "_mes_v1/kpi/shift",
    E.DAY_CLOSED: "_mes_v1/kpi/day",
    E.OPERATION_KPIS: "_mes_v1/kpi/operation",
    E.ROUTING_DRIFT: "_mes_v1/report/drift",
    E.COMPONENT_BATCH_LOADED: "_mes_v1/material",
    E.COMPONENT_CONSUMED: "_mes_v1/material",
    E.MAINTENANCE_DUE: "_mes_v1/maintenance",
    E.MAINTENANCE_DONE: "_mes_v1/maintenance",
    E.MAINTENANCE_REQUESTED: "_mes_v1/maintenance",
    E.MACHINE_HOURS: "_mes_v1/maintenance",
    E.OPERATOR_LOGGED_IN: "_mes_v1/crew",
    E.OPERATOR_LOGGED_OUT: "_mes_v1/crew",
}
# Not published: relay results (they came from central), shift changes, master data and rules
# applied (central or the installer made them); they stay in the journal and event tables.
# Machine states go to the historian as time series.


def event_body(event: Event) -> dict[str, object]:
    body: dict[str, object] = {"type": event.type.value, "event_time": event.at.iso()}
    if event.op:
        key = OperationKey.parse(event.op)
        body.update(order_id=key.order, operation=key.operation, split=key.split)
    if event.actor:
        body["actor"] = event.actor
    body.update(event.data)
    return body


RESULT_SETTLES = frozenset({"posted", "duplicate", "rejected"})


def settled_keys(events: Iterable[Event]) -> list[str]:
    """Idempotency keys the relay answered for good: their outbox rows are finished."""
    return [
        str(e.data["idem_key"])
        for e in events
        if e.type is E.CONFIRMATION_RESULT and e.data.get("status") in RESULT_SETTLES
    ]


def messages_for(events: Iterable[Event]) -> list[OutboxMessage]:
    out: list[OutboxMessage] = []
    for index, event in enumerate(events):
        if event.type is E.MACHINE_STATE:
            out.append(historian_message("state", event.data["state"], event.at.wall_ms))
            out.append(historian_message("alarm", event.data.get("alarm") or "", event.at.wall_ms))
            continue
        topic = TOPICS.get(event.type)
        if topic is None:
            continue
        idem = event.data.get("idem_key") if topic.startswith("_mes_v1/confirmation") else None
        out.append(
            OutboxMessage(
                msg_id=str(uuid.uuid4()),
                topic=topic,
                kind=event.type.value,
                payload=dumps(event_body(event)),
                at_wall_ms=event.at.wall_ms,
                idem_key=idem if isinstance(idem, str) else None,
                event_index=index,
            )
        )
    return out


CounterKey = tuple[str, str]  # (operation key, "counter/good" | "counter/scrap")


class CounterSeries:
    """The historian values of each operation's counters (``_historian/counter/good`` and
    ``/scrap``), from the commits: a value goes out when it changed, at most once per
    ``min_interval_ms`` for each operation and counter. One that changed sooner is held, the
    latest winning, and goes out once its interval is over (:meth:`due`, then the commit of
    :meth:`changed` or :meth:`flush`), stamped when it was reached: the last value is always
    sent. A fast counter so adds about one outbox row a second instead of one per commit (the
    rows, their indexes and their acknowledgements are most of what a commit writes), and a
    slow one is sent as before. Business messages are never held. 0: every commit that changed
    a value sends it. Times are the engine's monotonic milliseconds."""

    def __init__(self, min_interval_ms: float = 0.0) -> None:
        self.min_interval_ms = max(0.0, float(min_interval_ms))
        self._sent: dict[CounterKey, object] = {}  # the value last sent
        self._sent_at: dict[CounterKey, int] = {}
        # (value, when reached in wall ms, since when held in monotonic ms)
        self._held: dict[CounterKey, tuple[object, int, int]] = {}

    def __len__(self) -> int:
        return len(self._sent) + len(self._held)

    def changed(
        self, active: Iterable[Operation], at_wall_ms: int, mono_ms: int, *, idle: bool = False
    ) -> list[OutboxMessage]:
        """The values of the active operations' counters that changed since they were last
        sent, and those held whose interval is over: the messages of this commit. ``idle``
        (a tick with nothing else to commit): only what waited a whole interval goes, so a
        counter that moves about once an interval goes out with its own commits and adds none;
        one that stopped is sent within two intervals."""
        for op in active:
            for name, value in (
                ("counter/good", op.counted.good),
                ("counter/scrap", op.counted.scrap_total),
            ):
                key = (str(op.key), name)
                held = self._held.get(key)
                if key in self._sent and self._sent[key] == value:
                    self._held.pop(key, None)  # back where it was sent: nothing to say
                elif held is None:
                    self._held[key] = (value, at_wall_ms, mono_ms)
                elif held[0] != value:
                    self._held[key] = (value, at_wall_ms, held[2])
        return self._out(mono_ms, idle)

    @property
    def held(self) -> int:
        """How many values wait for their interval."""
        return len(self._held)

    def due(self, mono_ms: int) -> bool:
        """Whether a held value may go out now."""
        return any(self._ready(key, mono_ms) for key in self._held)

    def release(self) -> None:
        """From now on every value goes out at once (the engine stops: nothing stays held)."""
        self.min_interval_ms = 0.0

    def flush(self, mono_ms: int) -> list[OutboxMessage]:
        """The held values whose interval is over, as messages; they count as sent."""
        return self._out(mono_ms, idle=False)

    def _out(self, mono_ms: int, idle: bool) -> list[OutboxMessage]:
        msgs: list[OutboxMessage] = []
        for key in [k for k in self._held if self._ready(k, mono_ms)]:
            if idle and mono_ms - self._held[key][2] < self.min_interval_ms:
                continue
            value, at_wall_ms, _ = self._held.pop(key)
            self._sent[key] = value
            self._sent_at[key] = mono_ms
            msgs.append(historian_message(key[1], value, at_wall_ms))
        return msgs

    def forget(self, keep: Callable[[OperationKey], bool]) -> None:
        """Leave out the operations ``keep`` says no to (they left memory)."""
        for store in (self._sent, self._sent_at, self._held):
            for key in [k for k in store if not keep(OperationKey.parse(k[0]))]:
                del store[key]

    def clear(self) -> None:
        """After a failed commit: what was sent is not known, so everything goes out again."""
        self._sent.clear()
        self._sent_at.clear()
        self._held.clear()

    def _ready(self, key: CounterKey, mono_ms: int) -> bool:
        last = self._sent_at.get(key)
        return last is None or mono_ms - last >= self.min_interval_ms


def counter_series(min_interval_ms: float = 0.0) -> CounterSeries:
    """The engine's :class:`CounterSeries` (an :class:`edge.ports.Outbound` part)."""
    return CounterSeries(min_interval_ms)


def historian_message(name: str, value: object, at_wall_ms: int) -> OutboxMessage:
    """A time-series value in the UMH ``{timestamp_ms, value}`` shape."""
    return OutboxMessage(
        msg_id=str(uuid.uuid4()),
        topic=f"_historian/{name}",
        kind="historian",
        payload=dumps({"timestamp_ms": at_wall_ms, "value": value}),
        at_wall_ms=at_wall_ms,
        enveloped=False,
    )
