"""The dispatch list and the master data from central (rules.md §7).

Central sends the whole list for the work center with a version number (replace semantics); an
older version than the one held is rejected (:func:`on_dispatch`). Every number in it is checked
against its bounds first (:func:`check_spec`), so a bad list changes nothing. The operator may
pick any dispatched operation; picking out of the central sequence (:func:`dispatch_order`) is
recorded (:func:`note_sequence`).

Once an operation has started, a new list may change its target, tolerances, standards, due date,
texts and sequence, but not what the parts already counted belong to (:data:`FIXED_ONCE_STARTED`,
:func:`changeable`). A list that drops an active or started operation does not stop it: a
conflict event goes to central.

Master data (:func:`on_master_data`) replaces the configured catalogues, but the gateway's own
scrap reasons (setup, machine) are always kept; it needs at least one stop reason.
"""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

from edge.domain.confirmations import check_policy
from edge.domain.events import EventType, RejectionCode
from edge.domain.inputs import (
    DispatchList,
    MasterDataReceived,
    Transition,
)
from edge.domain.limits import (
    MAX_CATALOGUE,
    MAX_CREW,
    MAX_CYCLE_S,
    MAX_INT,
    MAX_PARTS_PER_SIGNAL,
    MAX_QUANTITY,
    MAX_SEQUENCE,
    MAX_SETUP_S,
    MAX_SPLIT,
    MAX_TEXT,
    MAX_TOLERANCE_PCT,
    MIN_PARTS_PER_SIGNAL,
    QUANTITY_PLACES,
    out_of_range,
)
from edge.domain.material import check_components, component_data
from edge.domain.model import (
    ZERO,
    ComponentSpec,
    Operation,
    OperationKey,
    OperationSpec,
    OperationStatus,
    number,
)
from edge.domain.rules import (
    MasterData,
    ScrapReason,
    WorkCenterRules,
)
from edge.domain.state import (
    Reject,
    WorkCenterState,
    reject,
)

# What a dispatch list may no longer change once an operation started (see changeable).
FIXED_ONCE_STARTED = ("material", "unit", "parts_per_signal", "components")


def dispatch_order(op: Operation) -> tuple[int, OperationKey]:
    """The order central dispatched the operations in: by sequence, then by operation key.

    The dispatch list shows them so, a start button with no operation named starts the first
    one, and starting another one first is picking out of sequence.
    """
    return (op.spec.sequence, op.key)


def note_sequence(s: WorkCenterState, op: Operation, t: Transition) -> None:
    """rules.md §7: picking out of the central sequence is recorded (schedule stability)."""
    waiting = [
        o for o in s.operations.values() if o.status is OperationStatus.DISPATCHED and o is not op
    ]
    earlier = [o for o in waiting if o.spec.sequence < op.spec.sequence]
    if earlier:
        first = min(earlier, key=dispatch_order)
        s.emit(
            EventType.PICKED_OUT_OF_SEQUENCE,
            t.at,
            op,
            t.actor,
            expected=str(first.key),
            sequence=op.spec.sequence,
        )


def check_version(version: int) -> None:
    """A dispatch list's or master data's version: 1 up to the bound (limits.MAX_INT), so that
    one absurd version cannot leave no newer one for ever."""
    if not 1 <= version <= MAX_INT:
        raise reject(
            RejectionCode.INVALID_VALUE,
            f"version = {version}: must be between 1 and {MAX_INT}",
            field="version",
            value=version,
        )


# A change of these after the first dispatch makes an operation rescheduled (the order KPIs'
# schedule stability, edge.domain.order_kpis).
RESCHEDULING = frozenset({"sequence", "due"})


def on_dispatch(s: WorkCenterState, d: DispatchList) -> None:
    """rules.md §7: the whole list with a version; replace semantics."""
    h = s.header
    check_version(d.version)
    if d.version <= h.dispatch_version:
        raise reject(
            RejectionCode.STALE_DISPATCH,
            f"version = {d.version}: not newer than the dispatch list held ({h.dispatch_version})",
            field="version",
            value=d.version,
        )
    seen: set[OperationKey] = set()
    for i, spec in enumerate(d.operations):
        check_spec(spec, i, s.rules.work_center)
        if spec.key in seen:
            raise reject(
                RejectionCode.INVALID_VALUE,
                f"operations[{i}]: operation {spec.key} is listed twice",
                field=f"operations[{i}]",
                value=str(spec.key),
            )
        seen.add(spec.key)
    h.dispatch_version = d.version
    s.touch("work_center", "")
    for listed in d.operations:
        spec = replace(listed, work_center=s.rules.work_center)
        op = s.operations.get(spec.key)
        if op is None:
            s.operations[spec.key] = Operation(spec, dispatched_at=d.at if d.timed else None)
            s.touch("operation", spec.key)
            s.emit(EventType.OPERATION_DISPATCHED, d.at, spec.key, d.actor, **spec_data(spec))
        elif op.status.finished:
            s.emit(
                EventType.DISPATCH_CONFLICT,
                d.at,
                op,
                d.actor,
                conflict="already_finished",
                status=op.status.value,
            )
        elif op.spec != spec:
            spec = changeable(s, op, spec, d)
            if op.spec == spec:
                continue
            changes = spec_changes(op.spec, spec)
            op.spec = spec
            if d.timed and op.dispatched_at is not None and RESCHEDULING.intersection(changes):
                op.rescheduled = True
            s.touch("operation", spec.key)
            s.emit(
                EventType.OPERATION_CHANGED,
                d.at,
                op,
                d.actor,
                active=op.status.active,
                changes=changes,
            )
    for key, op in list(s.operations.items()):
        if key in seen or op.status.finished:
            continue
        if op.status.active:
            s.emit(
                EventType.DISPATCH_CONFLICT,
                d.at,
                op,
                d.actor,
                conflict="active_not_in_list",
                status=op.status.value,
            )
        elif not op.counted.has_quantity() and op.first_start is None:
            del s.operations[key]
            s.dirty.add(("operation", str(key)))
            s.emit(EventType.OPERATION_WITHDRAWN, d.at, op, d.actor)
        else:
            s.emit(
                EventType.DISPATCH_CONFLICT,
                d.at,
                op,
                d.actor,
                conflict="started_not_in_list",
                status=op.status.value,
            )
    s.emit(
        EventType.DISPATCH_APPLIED,
        d.at,
        None,
        d.actor,
        version=d.version,
        operations=[str(spec.key) for spec in d.operations],
    )


def changeable(
    s: WorkCenterState, op: Operation, spec: OperationSpec, d: DispatchList
) -> OperationSpec:
    """rules.md §7: what a new dispatch list may change of an operation that has started.

    Once an operation has started (set up, run, or counted anything), the parts it counted
    belong to its material, in its unit, converted with its parts per signal: a new value
    for any of them would mislabel or rescale what is already counted, and a new parts per
    signal would make the next readings look like a jump. The list is applied with the old
    values kept for those fields, and a ``dispatch_conflict`` (``change_refused``) says so;
    complete or split the operation and dispatch a new one to change them. Everything else
    (target, tolerances, standards, due date, texts, sequence) applies from then on.
    """
    if op.first_start is None and not op.counted.has_quantity():
        return spec
    refused = {
        name: [plain(getattr(op.spec, name)), plain(getattr(spec, name))]
        for name in FIXED_ONCE_STARTED
        if getattr(op.spec, name) != getattr(spec, name)
    }
    if not refused:
        return spec
    s.emit(
        EventType.DISPATCH_CONFLICT,
        d.at,
        op,
        d.actor,
        conflict="change_refused",
        status=op.status.value,
        changes=refused,
    )
    return replace(spec, **{name: getattr(op.spec, name) for name in refused})


def on_master_data(s: WorkCenterState, m: MasterDataReceived) -> bool:
    current = s.header.master_data
    md = m.master_data
    if current is not None and md.version <= current.version:
        if md.version == current.version:
            return False  # the retained message again after a reconnect
        raise reject(
            RejectionCode.STALE_DISPATCH,
            f"version = {md.version}: older than the master data held ({current.version})",
            field="version",
            value=md.version,
        )
    check_version(md.version)
    if not md.stop_reasons:
        # Without stop reasons no stop could ever be given a reason: every stop would ask
        # for ever and no confirmation could explain its down time.
        raise reject(
            RejectionCode.INVALID_VALUE,
            "stop_reasons = []: the stop-reason catalogue must not be empty",
            field="stop_reasons",
            value="[]",
        )
    for name in ("stop_reasons", "scrap_reasons", "alarm_reasons"):
        size = len(getattr(md, name))
        if size > MAX_CATALOGUE:
            raise reject(
                RejectionCode.INVALID_VALUE,
                f"{name}: {size} entries, more than {MAX_CATALOGUE}",
                field=name,
                value=size,
            )
    if out_of_range(md.crew_size, ZERO, MAX_CREW) or md.crew_size <= 0:
        raise reject(
            RejectionCode.INVALID_VALUE,
            f"crew_size = {md.crew_size}: must be more than 0 and at most {MAX_CREW}",
            field="crew_size",
            value=str(md.crew_size),
        )
    if md.policy is not None:
        check_policy(md.policy)
    codes = {r.code for r in md.stop_reasons}
    for alarm, reason in md.alarm_reasons:
        if reason not in codes:
            raise reject(
                RejectionCode.UNKNOWN_REASON,
                f"alarm_reasons[{alarm!r}] = {reason!r}: not a stop reason in this master data",
                field=f"alarm_reasons.{alarm}",
                value=reason,
            )
    s.header.master_data = with_own_reasons(md, s.rules)
    s.touch("work_center", "")
    s.emit(EventType.MASTER_DATA_APPLIED, m.at, None, "central", version=md.version)
    return True


def with_own_reasons(md: MasterData, rules: WorkCenterRules) -> MasterData:
    """Central's catalogue plus the scrap reasons the gateway books by itself (setup, machine),
    so every reason a confirmation carries is one the catalogue knows."""
    own = [
        ScrapReason(code, text)
        for code, text in (
            (rules.setup_scrap_reason, "Setup scrap"),
            (rules.machine_scrap_reason, "Machine scrap"),
        )
        if not md.has_scrap_reason(code)
    ]
    return replace(md, scrap_reasons=md.scrap_reasons + tuple(own)) if own else md


def check_spec(spec: OperationSpec, i: int, work_center: str) -> None:
    def bad(name: str, value: object, why: str) -> Reject:
        return reject(
            RejectionCode.INVALID_VALUE,
            f"operations[{i}].{name} = {value!r}: {why}",
            field=f"operations[{i}].{name}",
            value=value,
        )

    if not spec.order or not spec.operation or "/" in spec.order + spec.operation:
        raise bad(
            "order",
            f"{spec.order}/{spec.operation}",
            "order and operation must be non-empty, without '/'",
        )
    if spec.work_center and spec.work_center != work_center:
        raise bad("work_center", spec.work_center, f"this gateway is work center {work_center!r}")
    if out_of_range(spec.target_qty, ZERO, MAX_QUANTITY) or spec.target_qty <= 0:
        raise bad(
            "target_qty",
            spec.target_qty,
            f"must be a positive number up to {MAX_QUANTITY} "
            f"with at most {QUANTITY_PLACES} decimal places",
        )
    if out_of_range(spec.parts_per_signal, MIN_PARTS_PER_SIGNAL, MAX_PARTS_PER_SIGNAL):
        raise bad(
            "parts_per_signal",
            spec.parts_per_signal,
            f"must be between {MIN_PARTS_PER_SIGNAL} and {MAX_PARTS_PER_SIGNAL} "
            f"with at most {QUANTITY_PLACES} decimal places",
        )
    for name, high in (("std_setup_s", MAX_SETUP_S), ("std_cycle_s", MAX_CYCLE_S)):
        value = getattr(spec, name)
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= high:
            raise bad(name, value, f"must be a number of seconds from 0 to {high:g}")
    for name, limit in (
        ("over_tolerance_pct", MAX_TOLERANCE_PCT),
        ("under_tolerance_pct", MAX_TOLERANCE_PCT),
        ("crew_size", MAX_CREW),
        ("std_cost", MAX_QUANTITY),
    ):
        value = getattr(spec, name)
        if value is not None and out_of_range(value, ZERO, limit):
            raise bad(name, value, f"must be a number from 0 to {limit}")
    if not -MAX_SEQUENCE <= spec.sequence <= MAX_SEQUENCE:
        raise bad("sequence", spec.sequence, f"must be between -{MAX_SEQUENCE} and {MAX_SEQUENCE}")
    if not 0 <= spec.split <= MAX_SPLIT:
        raise bad("split", spec.split, f"must be between 0 and {MAX_SPLIT}")
    for name in ("material", "unit", "material_text", "confirmation_no", "due"):
        value = getattr(spec, name)
        if value is not None and len(value) > MAX_TEXT:
            raise bad(name, value[:40] + "...", f"must be at most {MAX_TEXT} characters")
    check_components(spec, i)


def spec_data(spec: OperationSpec) -> dict[str, object]:
    data: dict[str, object] = {
        "material": spec.material,
        "target_qty": number(spec.target_qty),
        "unit": spec.unit,
        "sequence": spec.sequence,
        "std_setup_s": spec.std_setup_s,
        "std_cycle_s": spec.std_cycle_s,
        "due": spec.due,
    }
    if spec.components:
        data["components"] = plain(spec.components)
    if spec.batch is not None:
        data["batch"] = spec.batch
    return data


def plain(value: object) -> object:
    if isinstance(value, Decimal):
        return number(value)
    if isinstance(value, tuple):
        return [component_data(c) if isinstance(c, ComponentSpec) else plain(c) for c in value]
    return value


def spec_changes(old: OperationSpec, new: OperationSpec) -> dict[str, list[object]]:
    changes: dict[str, list[object]] = {}
    for name in old.__dataclass_fields__:
        a, b = getattr(old, name), getattr(new, name)
        if a != b:
            changes[name] = [plain(a), plain(b)]
    return changes
