"""Components, their batches and what each confirmation consumed of them.

The dispatch list may carry an operation's components (:class:`ComponentSpec`): a material,
how much of it one unit of the operation takes, its unit, whether it is backflushed and whether
it is batch-managed.

- **Batches.** The operator (or the scanner) records which batch of a batch-managed component
  was loaded for the active operation (:func:`on_batch_loaded`). A batch stays loaded until the
  next batch of the same component: what the operation produces in between is booked to it.
  Each load records the operation's produced quantity at that moment (its *basis*: the good
  count, plus scrap and rework unless ``backflush_scrap`` is off), so a batch change in the
  middle of a confirmation period splits that period's consumption exactly where it happened.
- **Consumption.** A backflushed component is consumed by the count:
  ``qty_per_unit`` times the produced quantity while each batch was loaded (rounded to the
  quantity places, per batch); parts produced before any batch of a batch-managed component
  was loaded are booked without a batch (the ERP then asks for one). Any other component is
  consumed as the operator records it (:func:`on_consumed`), from the loaded batch unless
  another is named.
- **Confirmations.** Like the quantities (rules.md §6), a confirmation takes exactly what was
  consumed and not yet confirmed (:func:`pending_consumption`), so the sum rule holds for
  components as well: the non-reversed confirmations of an operation add up to what it
  consumed. A reversal gives its consumption back to the next confirmation. A scrap report
  that lowers the produced quantity after a confirmation makes a negative line: material given
  back (a return).

The batches and the consumption go up as events (``component_batch_loaded``,
``component_consumed``) and inside the confirmations, so central can build the plant's
genealogy; ``edge trace`` answers from the local store.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal

from edge.domain.events import EventType, RejectionCode
from edge.domain.inputs import ComponentBatchLoaded, ComponentConsumed
from edge.domain.limits import MAX_QUANTITY, QUANTITY_PLACES, out_of_range
from edge.domain.model import (
    ZERO,
    BatchLoad,
    ComponentSpec,
    Operation,
    OperationSpec,
    Tally,
    number,
)
from edge.domain.state import Reject, WorkCenterState, reject

MAX_BATCH = 40  # characters of a batch number (SAP keeps 10, Dynamics 365 more)
MAX_COMPONENTS = 100  # components of one operation
MAX_BATCH_LOADS = 1000  # batch loads kept with one operation

Consumption = dict[str, dict[str, Decimal]]  # material -> batch ("" for none) -> quantity

_PLACES = Decimal(1).scaleb(-QUANTITY_PLACES)


# ------------------------------------------------------------------ what was consumed


def basis(tally: Tally, with_scrap: bool) -> Decimal:
    """The produced quantity components are consumed for."""
    if with_scrap:
        return tally.good + tally.scrap_total + tally.rework_total
    return tally.good


def loaded(op: Operation, material: str) -> BatchLoad | None:
    """The batch of ``material`` loaded for ``op`` now, if any."""
    for load in reversed(op.batch_loads):
        if load.material == material:
            return load
    return None


def current_batches(op: Operation) -> list[BatchLoad]:
    """The batch of each component loaded now, in the order of the components."""
    out = []
    for c in op.spec.components:
        load = loaded(op, c.material)
        if load is not None:
            out.append(load)
    return out


def _round(qty: Decimal) -> Decimal:
    q = qty.quantize(_PLACES, rounding=ROUND_HALF_EVEN)
    return q.to_integral_value() if q == q.to_integral_value() else q.normalize()


def backflushed(op: Operation, c: ComponentSpec, with_scrap: bool) -> dict[str, Decimal]:
    """Batch -> quantity of backflushed component ``c`` consumed by what ``op`` produced."""
    produced = basis(op.counted, with_scrap)
    marks: list[tuple[str, Decimal]] = [("", ZERO)]
    for load in op.batch_loads:
        if load.material == c.material:
            marks.append((load.batch, load.basis))
    out: dict[str, Decimal] = {}
    for i, (batch, start) in enumerate(marks):
        end = marks[i + 1][1] if i + 1 < len(marks) else produced
        share = min(end, produced) - start
        if share > 0:
            out[batch] = out.get(batch, ZERO) + share
    return {b: q for b, q in ((b, _round(share * c.qty_per_unit)) for b, share in out.items()) if q}


def consumed(op: Operation, with_scrap: bool) -> Consumption:
    """Everything ``op`` consumed so far: backflushed by the count, recorded otherwise."""
    out: Consumption = {}
    for c in op.spec.components:
        if c.backflush:
            by_batch = backflushed(op, c, with_scrap)
        else:
            by_batch = dict(op.consumed.get(c.material, {}))
        if by_batch:
            out[c.material] = by_batch
    return out


def pending_consumption(op: Operation, with_scrap: bool) -> Consumption:
    """What ``op`` consumed and no confirmation took yet (a negative quantity: given back)."""
    out: Consumption = {}
    now = consumed(op, with_scrap)
    for material in sorted(set(now) | set(op.consumed_confirmed)):
        have = now.get(material, {})
        done = op.consumed_confirmed.get(material, {})
        lines = {
            batch: have.get(batch, ZERO) - done.get(batch, ZERO)
            for batch in sorted(set(have) | set(done))
        }
        lines = {b: q for b, q in lines.items() if q}
        if lines:
            out[material] = lines
    return out


def add(into: Consumption, other: Consumption, sign: int = 1) -> None:
    for material, lines in other.items():
        mine = into.setdefault(material, {})
        for batch, qty in lines.items():
            value = mine.get(batch, ZERO) + sign * qty
            if value:
                mine[batch] = value
            else:
                mine.pop(batch, None)
        if not mine:
            del into[material]


def movements(consumption: Consumption, spec: OperationSpec) -> list[dict[str, object]]:
    """The goods movements of a confirmation's consumption, as its payload carries them."""
    out: list[dict[str, object]] = []
    for material, lines in sorted(consumption.items()):
        c = spec.component(material)
        for batch, qty in sorted(lines.items()):
            out.append(
                {
                    "material": material,
                    "batch": batch or None,
                    "qty": number(abs(qty)),
                    "unit": c.unit if c else "",
                    "direction": "issue" if qty > 0 else "return",
                    "backflush": bool(c and c.backflush),
                    "item": c.item if c else None,
                    "batch_missing": bool(c and c.batch_managed and not batch),
                }
            )
    return out


# ------------------------------------------------------------------ inputs


def _component(
    s: WorkCenterState, op: Operation, material: str | None, gtin: str | None
) -> ComponentSpec:
    if material:
        found = op.spec.component(material)
        what, field_name = material, "material"
    elif gtin:
        found = next((c for c in op.spec.components if c.gtin == gtin), None)
        what, field_name = gtin, "gtin"
    else:
        raise reject(
            RejectionCode.INVALID_VALUE,
            "material = None: name the component's material or its GTIN",
            field="material",
            value=None,
        )
    if found is None:
        names = ", ".join(c.material for c in op.spec.components) or "none"
        raise reject(
            RejectionCode.UNKNOWN_COMPONENT,
            f"{field_name} = {what!r}: operation {op.key} has no such component "
            f"(its components: {names})",
            field=field_name,
            value=what,
        )
    return found


def _active(s: WorkCenterState, ref: str | None) -> Operation:
    op = s.find_op(ref or "")
    if not op.status.active:
        raise reject(
            RejectionCode.NO_ACTIVE_OPERATION,
            f"operation {op.key} is {op.status.value}: components are loaded and consumed "
            "for an operation in setup or production",
            field="op",
            value=ref,
            state=op.status.value,
        )
    return op


def batch_of(value: str | None, field_name: str = "batch") -> str:
    text = value if isinstance(value, str) else ""
    if not text or len(text) > MAX_BATCH or not text.isprintable() or text != text.strip():
        raise reject(
            RejectionCode.INVALID_VALUE,
            f"{field_name} = {value!r}: must be 1 to {MAX_BATCH} printable characters, "
            "without leading or trailing spaces",
            field=field_name,
            value=value,
        )
    return text


def on_batch_loaded(s: WorkCenterState, b: ComponentBatchLoaded) -> None:
    op = _active(s, b.op)
    c = _component(s, op, b.material, b.gtin)
    batch = batch_of(b.batch)
    if not c.batch_managed:
        raise reject(
            RejectionCode.INVALID_VALUE,
            f"batch = {batch!r}: component {c.material} of operation {op.key} is not batch-managed",
            field="batch",
            value=batch,
        )
    if b.expiry is not None and (len(b.expiry) != 10 or not b.expiry[:4].isdigit()):
        raise reject(
            RejectionCode.INVALID_VALUE,
            f"expiry = {b.expiry!r}: not a date YYYY-MM-DD",
            field="expiry",
            value=b.expiry,
        )
    previous = loaded(op, c.material)
    if previous is not None and previous.batch == batch:
        raise reject(
            RejectionCode.INVALID_VALUE,
            f"batch = {batch!r}: already the loaded batch of {c.material} for operation {op.key}",
            field="batch",
            value=batch,
        )
    if len(op.batch_loads) >= MAX_BATCH_LOADS:
        raise reject(
            RejectionCode.INVALID_VALUE,
            f"batch = {batch!r}: operation {op.key} has {MAX_BATCH_LOADS} batch loads already; "
            "split it to go on",
            field="batch",
            value=batch,
        )
    produced = basis(op.counted, s.rules.backflush_scrap)
    op.batch_loads.append(BatchLoad(c.material, batch, produced, b.at, b.actor, b.expiry))
    s.touch("operation", op.key)
    s.emit(
        EventType.COMPONENT_BATCH_LOADED,
        b.at,
        op,
        b.actor,
        material=c.material,
        batch=batch,
        previous_batch=previous.batch if previous else None,
        produced=number(produced),
        unit=op.spec.unit,
        expiry=b.expiry,
    )


def on_consumed(s: WorkCenterState, r: ComponentConsumed) -> None:
    op = _active(s, r.op)
    c = _component(s, op, r.material, None)
    qty = r.qty
    if out_of_range(qty, ZERO, MAX_QUANTITY) or qty <= 0:
        raise reject(
            RejectionCode.INVALID_VALUE,
            f"qty = {qty!r}: must be a positive number up to {MAX_QUANTITY} "
            f"with at most {QUANTITY_PLACES} decimal places",
            field="qty",
            value=str(qty),
        )
    if c.backflush:
        raise reject(
            RejectionCode.INVALID_VALUE,
            f"material = {c.material!r}: backflushed, its consumption follows from the count",
            field="material",
            value=c.material,
        )
    if r.batch is not None:
        batch = batch_of(r.batch)
        if not c.batch_managed:
            raise reject(
                RejectionCode.INVALID_VALUE,
                f"batch = {batch!r}: component {c.material} is not batch-managed",
                field="batch",
                value=batch,
            )
    elif c.batch_managed:
        load = loaded(op, c.material)
        if load is None:
            raise reject(
                RejectionCode.INVALID_VALUE,
                f"batch = None: no batch of {c.material} is loaded for operation {op.key}; "
                "scan or name it",
                field="batch",
                value=None,
            )
        batch = load.batch
    else:
        batch = ""
    lines = op.consumed.setdefault(c.material, {})
    total = lines.get(batch, ZERO) + qty
    if total > MAX_QUANTITY:
        raise reject(
            RejectionCode.INVALID_VALUE,
            f"qty = {number(qty)}: {c.material} would exceed {MAX_QUANTITY} for this batch",
            field="qty",
            value=str(qty),
        )
    lines[batch] = total
    s.touch("operation", op.key)
    s.emit(
        EventType.COMPONENT_CONSUMED,
        r.at,
        op,
        r.actor,
        material=c.material,
        batch=batch or None,
        qty=number(qty),
        unit=c.unit,
    )


# ------------------------------------------------------------------ dispatch


def check_components(spec: OperationSpec, i: int) -> None:
    """The components of ``operations[i]`` within their bounds (see edge.domain.dispatch)."""

    def bad(name: str, value: object, why: str) -> Reject:
        return reject(
            RejectionCode.INVALID_VALUE,
            f"operations[{i}].{name} = {value!r}: {why}",
            field=f"operations[{i}].{name}",
            value=value,
        )

    if len(spec.components) > MAX_COMPONENTS:
        raise bad("components", len(spec.components), f"at most {MAX_COMPONENTS} components")
    seen: set[str] = set()
    for j, c in enumerate(spec.components):
        where = f"components[{j}]"
        if not c.material or len(c.material) > 40 or not c.material.isprintable():
            raise bad(f"{where}.material", c.material, "must be 1 to 40 printable characters")
        if c.material in seen:
            raise bad(f"{where}.material", c.material, "is listed twice")
        seen.add(c.material)
        if out_of_range(c.qty_per_unit, ZERO, MAX_QUANTITY) or c.qty_per_unit <= 0:
            raise bad(
                f"{where}.qty_per_unit",
                str(c.qty_per_unit),
                f"must be a positive number up to {MAX_QUANTITY} "
                f"with at most {QUANTITY_PLACES} decimal places",
            )
        for name in ("unit", "item", "gtin", "material_text"):
            value = getattr(c, name)
            if value is not None and len(value) > 200:
                raise bad(f"{where}.{name}", value[:40] + "...", "at most 200 characters")
    if spec.batch is not None:
        batch_of(spec.batch, f"operations[{i}].batch")


def component_data(c: ComponentSpec) -> dict[str, object]:
    return {
        "material": c.material,
        "qty_per_unit": number(c.qty_per_unit),
        "unit": c.unit,
        "backflush": c.backflush,
        "batch_managed": c.batch_managed,
        "item": c.item,
    }


def carried_to_remainder(op: Operation) -> list[BatchLoad]:
    """A split's remainder starts with the batches loaded now (they stay on the machine)."""
    return [
        BatchLoad(load.material, load.batch, ZERO, load.at, load.actor, load.expiry)
        for load in current_batches(op)
    ]
