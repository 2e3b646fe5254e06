"""What the panel shows, read from the core's state: a snapshot, never a change.

The lamp is the stack light's most urgent lamp (:func:`edge.domain.andon.andon_state`, which the
stack light renders too): red blinking while a stop waits for its reason, red while the machine
is down, blue while a call for help is open (the machine may run), green while running, yellow
in setup, interrupted or with nothing running.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from edge.domain.clock import Instant
from edge.domain.core import WorkCenter
from edge.domain.dispatch import dispatch_order
from edge.domain.kpis import parts_target, share, top_stops
from edge.domain.material import consumed, loaded, pending_consumption
from edge.domain.model import ZERO, Confirmation, Operation, Stop
from edge.panel.models import (
    ActiveOperation,
    BatchLoadOut,
    BatchQty,
    ComponentOut,
    ConfirmationOut,
    HelpCallOut,
    Lamp,
    MachineOut,
    OperationOut,
    PanelState,
    QtyByReason,
    Reason,
    ShiftView,
    StopLossOut,
    StopOut,
    TimeElementsOut,
    UnassignedOut,
)

RECENT_STOPS = 20
RECENT_CONFIRMATIONS = 40
RECENT_FINISHED = 5
RECENT_UNASSIGNED = 20


@dataclass(frozen=True, slots=True)
class ViewMeta:
    """What the snapshot needs besides the core's state."""

    boot: int
    revision: int
    assets: str
    language: str
    operator: str
    variance_reasons: tuple[str, ...]
    supervisor_configured: bool
    disk_low: bool = False


def _s(ms: int) -> float:
    return round(ms / 1000, 1)


def _iso(at: Instant | None) -> str | None:
    return at.iso() if at is not None else None


def operation_out(op: Operation) -> OperationOut:
    return OperationOut(**_operation_fields(op))


def _operation_fields(op: Operation) -> dict[str, object]:
    spec, counted, confirmed = op.spec, op.counted, op.confirmed
    return {
        "op": str(op.key),
        "order": spec.order,
        "operation": spec.operation,
        "split": spec.split,
        "material": spec.material,
        "material_text": spec.material_text,
        "status": op.status,
        "sequence": spec.sequence,
        "target_qty": spec.target_qty,
        "unit": spec.unit,
        "good": counted.good,
        "scrap": counted.scrap_total,
        "rework": counted.rework_total,
        "confirmed_good": confirmed.good,
        "pending_good": counted.good - confirmed.good,
        "pending_scrap": counted.scrap_total - confirmed.scrap_total,
        "remaining": max(ZERO, spec.target_qty - counted.good),
        "due": spec.due,
        "target_reached": op.target_reached,
        "over_tolerance": op.over_tolerance,
        "over_tolerance_acknowledged": op.over_tolerance_acknowledged,
        "final_withheld": op.final_withheld,
        "under_tolerance_pct": spec.under_tolerance_pct,
        "first_start": _iso(op.first_start),
        "ended": _iso(op.ended),
        "status_reason": op.status_reason,
        "parts_per_signal": spec.parts_per_signal,
    }


def _by_batch(lines: dict[str, Decimal]) -> list[BatchQty]:
    return [BatchQty(batch=batch or None, qty=qty) for batch, qty in sorted(lines.items())]


def components_out(wc: WorkCenter, op: Operation) -> list[ComponentOut]:
    """The operation's components as edge.domain.material keeps them: the batch loaded now,
    what was consumed so far and what no confirmation took yet."""
    with_scrap = wc.rules.backflush_scrap
    used = consumed(op, with_scrap)
    pending = pending_consumption(op, with_scrap)
    out = []
    for c in op.spec.components:
        load = loaded(op, c.material)
        out.append(
            ComponentOut(
                material=c.material,
                material_text=c.material_text,
                qty_per_unit=c.qty_per_unit,
                unit=c.unit,
                backflush=c.backflush,
                batch_managed=c.batch_managed,
                item=c.item,
                gtin=c.gtin,
                loaded=BatchLoadOut(
                    batch=load.batch, at=load.at.iso(), actor=load.actor, expiry=load.expiry
                )
                if load is not None
                else None,
                consumed=_by_batch(used.get(c.material, {})),
                pending=_by_batch(pending.get(c.material, {})),
            )
        )
    return out


def active_out(wc: WorkCenter, op: Operation, now: Instant) -> ActiveOperation:
    te = wc.time_elements(op, now)
    texts = {r.code: r.text for r in wc.master_data.scrap_reasons}
    setup = wc.rules.setup_scrap_reason
    return ActiveOperation(
        **_operation_fields(op),
        time_elements=TimeElementsOut(
            setup_s=_s(te.setup_ms),
            production_s=_s(te.production_ms),
            down_s=_s(te.down_ms),
            down_planned_s=_s(te.down_planned_ms),
            down_unplanned_s=_s(te.down_unplanned_ms),
            waiting_s=_s(te.waiting_ms),
            down_by_reason_s={code: _s(ms) for code, ms in te.down_by_reason_ms.items()},
        ),
        scrap_by_reason=[
            QtyByReason(code=code, text=texts.get(code, code), qty=qty)
            for code, qty in sorted(op.counted.scrap.items())
        ],
        setup_scrap_pending=max(
            ZERO, op.counted.scrap.get(setup, ZERO) - op.confirmed.scrap.get(setup, ZERO)
        ),
        components=components_out(wc, op),
    )


def stop_out(wc: WorkCenter, stop: Stop, now: Instant) -> StopOut:
    reason = wc.master_data.stop_reason(stop.reason) if stop.reason else None
    return StopOut(
        stop_id=stop.stop_id,
        start=stop.start.iso(),
        end=_iso(stop.end),
        duration_s=_s(stop.duration_ms(now)),
        origin=stop.origin.value,
        open=stop.open,
        reason=stop.reason,
        reason_text=reason.text if reason else None,
        reason_source=stop.reason_source,
        alarm=stop.alarm,
        micro=stop.micro,
        reason_pending=stop.reason_pending,
        operations=list(stop.operations),
        maintenance_request=stop.maintenance_request,
    )


def confirmation_out(wc: WorkCenter, conf: Confirmation) -> ConfirmationOut:
    op = wc.operations.get(conf.key)
    return ConfirmationOut(
        conf_id=conf.conf_id,
        op=str(conf.key),
        counter=conf.counter,
        final=conf.final,
        yield_qty=conf.tally.good,
        scrap_qty=conf.tally.scrap_total,
        rework_qty=conf.tally.rework_total,
        unit=op.spec.unit if op is not None else "",
        status=conf.status,
        erp_message=conf.erp_message,
        erp_ref=conf.erp_ref,
        retries=conf.retries,
        reversed=conf.reversed,
        reversal_status=conf.reversal_status,
        posting_date=conf.posting_date,
        period_end=conf.period_end.iso(),
        actor=conf.actor,
        verdict_conflicts=conf.verdict_conflicts,
        last_conflict=conf.last_conflict,
    )


def stop_reasons(wc: WorkCenter) -> list[Reason]:
    """Grouped as the master data groups them (a ``group`` where it has one, else the
    category), unplanned first: the losses an operator reports most."""
    out = [
        Reason(code=r.code, text=r.text, group=str(getattr(r, "group", None) or r.category))
        for r in wc.master_data.stop_reasons
    ]
    return sorted(out, key=lambda r: (r.group == "planned", r.group))


def scrap_reasons(wc: WorkCenter) -> list[Reason]:
    # The reasons the gateway books by itself go last: operators rarely pick them.
    own = {wc.rules.setup_scrap_reason, wc.rules.machine_scrap_reason}
    out = [
        Reason(code=r.code, text=r.text, group="gateway" if r.code in own else "scrap")
        for r in wc.master_data.scrap_reasons
    ]
    return sorted(out, key=lambda r: r.group == "gateway")


def lamp(wc: WorkCenter) -> tuple[Lamp, str]:
    """The panel's colour and the i18n key of its state label."""
    andon = wc.andon
    return andon.colour, f"state.{andon.state}"


def shift_view(wc: WorkCenter, now: Instant) -> ShiftView | None:
    """The current shift so far: OEE and its factors, parts against the target
    (:func:`edge.domain.kpis.parts_target`), the 3 stop reasons that cost the most time
    (:func:`edge.domain.kpis.top_stops`, by each stop's latest reason). None before the
    gateway booked anything."""
    k = wc.shift_kpis(now)
    if k is None:
        return None
    target = parts_target(wc, k, now)
    texts = {r.code: r.text for r in wc.master_data.stop_reasons}
    return ShiftView(
        shift_id=k.shift_id,
        shift=k.name,
        start=Instant(k.start_ms, 0).iso(),
        end=Instant(k.end_ms, 0).iso(),
        oee=share(k.oee),
        availability=share(k.availability),
        effectiveness=share(k.effectiveness),
        quality_ratio=share(k.quality_ratio),
        good=k.good,
        scrap=k.scrap + k.rework,
        target=target.target if target else None,
        target_due=target.due if target else None,
        cycle_s=target.cycle_s if target else None,
        top_stops=[
            StopLossOut(
                reason=s.reason,
                reason_text=texts.get(s.reason),
                minutes=round(s.ms / 60_000, 1),
                stops=s.stops,
            )
            for s in top_stops(k)
        ],
    )


def machine_view(wc: WorkCenter, now: Instant) -> MachineOut | None:
    """The machine's totals as edge.domain.machine gives them, the due intervals first;
    None while they are not counted."""
    totals = wc.machine_hours(now)
    if totals is None:
        return None
    machine = MachineOut.model_validate(totals)
    due_first = sorted(machine.service, key=lambda s: not s.due)
    return machine.model_copy(update={"service": due_first})


def snapshot(wc: WorkCenter, now: Instant, meta: ViewMeta) -> PanelState:
    ops = list(wc.operations.values())
    waiting = sorted(
        (op for op in ops if not op.status.finished),
        key=dispatch_order,
    )
    finished = sorted(
        (op for op in ops if op.status.finished and op.ended is not None),
        key=lambda op: op.ended.mono_ms if op.ended else 0,
        reverse=True,
    )[:RECENT_FINISHED]
    stops = list(wc.stops.values())
    pending = [s for s in stops if s.reason_pending]
    recent = stops[-RECENT_STOPS:][::-1]
    confirmations = list(wc.confirmations.values())[-RECENT_CONFIRMATIONS:][::-1]
    colour, key = lamp(wc)
    header = wc.header
    return PanelState(
        work_center=wc.rules.work_center,
        edge_id=wc.rules.edge_id,
        boot=meta.boot,
        revision=meta.revision,
        assets=meta.assets,
        now=now.iso(),
        language=meta.language,
        operator=meta.operator,
        machine_state=header.machine_state.value if header.machine_state else None,
        machine_alarm=header.machine_alarm,
        lamp=colour,
        state_key=key,
        family_tool=wc.rules.family_tool,
        active=[active_out(wc, op, now) for op in wc.active],
        dispatch=[operation_out(op) for op in waiting],
        finished=[operation_out(op) for op in finished],
        stop=stop_out(wc, wc.open_stop, now) if wc.open_stop else None,
        pending_stops=[stop_out(wc, s, now) for s in pending],
        stops=[stop_out(wc, s, now) for s in recent],
        confirmations=[confirmation_out(wc, c) for c in confirmations],
        stop_reasons=stop_reasons(wc),
        scrap_reasons=scrap_reasons(wc),
        variance_reasons=list(meta.variance_reasons),
        help_categories=list(wc.rules.help_categories),
        help_calls=[
            HelpCallOut(
                call_id=call.call_id,
                category=call.category,
                raised_at=call.raised_at.iso(),
                raised_by=call.raised_by,
                waiting_s=_s(now.since(call.raised_at)),
                note=call.note,
                acknowledged_by=call.acknowledged_by,
                escalated=call.escalated,
            )
            for call in wc.help_calls.values()
        ],
        unassigned=[
            UnassignedOut(
                unassigned_id=rec.unassigned_id,
                start=rec.start.iso(),
                end=rec.end.iso(),
                open=rec.open,
                good_signals=rec.tally.good,
                scrap_signals=rec.tally.scrap_total,
            )
            for rec in list(wc.unassigned.values())[::-1]
            if rec.assigned_to is None and rec.tally.has_quantity()
        ][:RECENT_UNASSIGNED],
        supervisor_configured=meta.supervisor_configured,
        shift=shift_view(wc, now),
        disk_low=meta.disk_low,
        machine=machine_view(wc, now),
        maintenance_due=wc.andon.maintenance_due,
    )
