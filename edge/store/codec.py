"""JSON for what the store keeps: inputs for the journal, entities for the projections.

The domain stays free of serialisation; pydantic's TypeAdapters read the domain's dataclasses as
they are, so a new field in the core needs no code here, except where documents stored before it
must stay as they were: an operation's ``status_reason``, ``merged_into``, ``dispatched_at``,
``rescheduled``, ``batch_loads``, ``consumed``, ``consumed_confirmed``, ``labour`` and
``labour_confirmed``, its spec's ``std_cost``, ``components`` and ``batch``, a confirmation's
``consumption`` and ``labour_by``, a counter's ``machine_cycles`` and ``machine_parts`` and a
stop's ``maintenance_request``, are left out while unset, so every operation stored (and every
checkpoint taken) before the fields existed reads the same as a replay writes
it, and ``edge verify`` holds across the upgrade without a migration. (Dispatch times come
only from dispatch lists journaled with ``timed``: a replay of older ones leaves them unset, as
they were stored.)
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from pydantic import TypeAdapter

from edge.domain.core import WorkCenter, WorkCenterHeader
from edge.domain.events import Event
from edge.domain.inputs import INPUT_TYPES, Input
from edge.domain.kpis import ShiftTimes
from edge.domain.model import (
    Confirmation,
    CounterTrack,
    Operation,
    OperationKey,
    Stop,
    UnassignedProduction,
)

_INPUT_ADAPTERS: dict[str, TypeAdapter[Any]] = {
    name: TypeAdapter(cls) for name, cls in INPUT_TYPES.items()
}

HEADER = TypeAdapter(WorkCenterHeader)
OPERATION = TypeAdapter(Operation)
COUNTER = TypeAdapter(CounterTrack)
STOP = TypeAdapter(Stop)
CONFIRMATION = TypeAdapter(Confirmation)
UNASSIGNED = TypeAdapter(UnassignedProduction)
SHIFT = TypeAdapter(ShiftTimes)

TABLES = ("work_center", "operation", "counter", "stop", "confirmation", "unassigned", "shift")


# Fields of an operation written only when set (see the module's docstring), with the value
# that means unset.
_OPERATION_OPTIONAL: dict[str, object] = {
    "status_reason": None,
    "merged_into": None,
    "dispatched_at": None,
    "rescheduled": False,
    "batch_loads": [],
    "consumed": {},
    "consumed_confirmed": {},
    "labour": {},
    "labour_confirmed": {},
}
# The same for an operation's spec and for a confirmation.
_SPEC_OPTIONAL: dict[str, object] = {"std_cost": None, "components": (), "batch": None}
_CONFIRMATION_OPTIONAL: dict[str, object] = {"consumption": {}, "labour_by": {}}
_COUNTER_OPTIONAL: dict[str, object] = {"machine_cycles": 0, "machine_parts": 0}
_STOP_OPTIONAL: dict[str, object] = {"maintenance_request": None}


def _unset(value: object, optional: dict[str, object]) -> dict[str, Any]:
    return {name: True for name, none in optional.items() if getattr(value, name) == none}


def operation_doc(op: Operation) -> str:
    """The stored form of ``op``; a field added later is left out while it is unset."""
    exclude = _unset(op, _OPERATION_OPTIONAL)
    spec = _unset(op.spec, _SPEC_OPTIONAL)
    if spec:
        exclude["spec"] = spec
    return OPERATION.dump_json(op, exclude=exclude or None).decode()


def confirmation_doc(conf: Confirmation) -> str:
    """The stored form of ``conf``; a field added later is left out while it is unset."""
    exclude = _unset(conf, _CONFIRMATION_OPTIONAL)
    return CONFIRMATION.dump_json(conf, exclude=exclude or None).decode()


def counter_doc(track: CounterTrack) -> str:
    """The stored form of ``track``; a field added later is left out while it is unset."""
    exclude = _unset(track, _COUNTER_OPTIONAL)
    return COUNTER.dump_json(track, exclude=exclude or None).decode()


def stop_doc(stop: Stop) -> str:
    """The stored form of ``stop``; a field added later is left out while it is unset."""
    exclude = _unset(stop, _STOP_OPTIONAL)
    return STOP.dump_json(stop, exclude=exclude or None).decode()


def encode_input(inp: Input) -> tuple[str, str]:
    name = type(inp).__name__
    return name, _INPUT_ADAPTERS[name].dump_json(inp).decode()


def decode_input(name: str, body: str) -> Input:
    adapter = _INPUT_ADAPTERS.get(name)
    if adapter is None:
        raise ValueError(f"journal holds an input of unknown type {name!r}")
    value: Input = adapter.validate_json(body)
    return value


def _default(value: object) -> object:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else str(value)
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"cannot encode {type(value).__name__}")


def dumps(value: object) -> str:
    return json.dumps(value, default=_default, separators=(",", ":"), ensure_ascii=False)


def encode_event(event: Event) -> str:
    return dumps(dict(event.data))


def entity_doc(wc: WorkCenter, table: str, key: str) -> str | None:
    """The stored form of one entity of ``wc``, or None when it no longer exists."""
    if table == "work_center":
        return HEADER.dump_json(wc.header).decode()
    if table == "operation":
        op = wc.operations.get(OperationKey.parse(key))
        return operation_doc(op) if op is not None else None
    if table == "counter":
        track = wc.counters.get(key)
        return counter_doc(track) if track is not None else None
    if table == "stop":
        stop = wc.stops.get(key)
        return stop_doc(stop) if stop is not None else None
    if table == "confirmation":
        conf = wc.confirmations.get(key)
        return confirmation_doc(conf) if conf is not None else None
    if table == "unassigned":
        rec = wc.unassigned.get(key)
        return UNASSIGNED.dump_json(rec).decode() if rec is not None else None
    if table == "shift":
        times = wc.shift_book.shifts.get(key)
        return SHIFT.dump_json(times).decode() if times is not None else None
    raise ValueError(f"unknown projection table {table!r}")


def all_keys(wc: WorkCenter) -> dict[str, list[str]]:
    return {
        "work_center": [""],
        "operation": [str(k) for k in wc.operations],
        "counter": list(wc.counters),
        "stop": list(wc.stops),
        "confirmation": list(wc.confirmations),
        "unassigned": list(wc.unassigned),
        "shift": list(wc.shift_book.shifts),
    }


def all_docs(wc: WorkCenter) -> dict[str, dict[str, str]]:
    """Every projection row ``wc`` implies: what the store must hold after each commit."""
    out: dict[str, dict[str, str]] = {}
    for table, keys in all_keys(wc).items():
        rows: dict[str, str] = {}
        for key in keys:
            doc = entity_doc(wc, table, key)
            if doc is not None:
                rows[key] = doc
        out[table] = rows
    return out


def restore(docs: dict[str, dict[str, str]]) -> WorkCenter | None:
    header_doc = docs.get("work_center", {}).get("")
    if header_doc is None:
        return None
    return WorkCenter.restore(
        HEADER.validate_json(header_doc),
        [OPERATION.validate_json(d) for d in docs.get("operation", {}).values()],
        [COUNTER.validate_json(d) for d in docs.get("counter", {}).values()],
        [STOP.validate_json(d) for d in docs.get("stop", {}).values()],
        [CONFIRMATION.validate_json(d) for d in docs.get("confirmation", {}).values()],
        [UNASSIGNED.validate_json(d) for d in docs.get("unassigned", {}).values()],
        [SHIFT.validate_json(d) for d in docs.get("shift", {}).values()],
    )
