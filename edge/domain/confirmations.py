"""Confirmations (rules.md §6) and the ERP's verdict on them (§9).

A confirmation is exactly what was counted and not yet confirmed (``counted - confirmed``), so the
sum rule holds by construction: the sum of the non-reversed confirmations of an operation is what
was counted for it. Partial ones follow the policy (every n good, every n minutes, at shift end);
completion, split and cancel-with-quantities always make a final one (:func:`confirm`).

``idem_key = sha256("<edge_id>|<order>|<operation>|<split>|conf|<counter>")``: the same
confirmation always gets the same key, so a resend after a crash never posts twice, and a new
confirmation never reuses one. A corrected resend appends ``|retry|<n>`` (:func:`on_resend`); a
reversal uses ``rev`` (:func:`on_reverse`).

A confirmation the ERP rejected blocks later ones of its operation until a supervisor resends it
corrected or reverses it (:func:`blocking_confirmation`). The relay's verdict only moves forward
(:func:`next_verdict`): a later contradicting verdict is counted and shown, never applied.
"""

from __future__ import annotations

import hashlib
from decimal import Decimal

from edge.domain import material
from edge.domain.calendar import shift_of
from edge.domain.clock import Instant
from edge.domain.events import EventType, RejectionCode
from edge.domain.inputs import (
    ConfirmationResult,
    RequestConfirmation,
    ResendConfirmation,
    ResultStatus,
    ReverseConfirmation,
)
from edge.domain.limits import (
    MAX_EVERY_MINUTES,
    MAX_QUANTITY,
    MIN_EVERY_MINUTES,
    out_of_range,
)
from edge.domain.model import (
    Confirmation,
    ConfirmationStatus,
    Operation,
    OperationKey,
    OperationSpec,
    OperationStatus,
    Tally,
    number,
)
from edge.domain.rules import (
    ConfirmationPolicy,
)
from edge.domain.state import (
    WorkCenterState,
    is_supervisor,
    reject,
    require_supervisor,
)
from edge.domain.times import accrue, add_labour, pending_labour


def _key_text(edge_id: str, key: OperationKey) -> str:
    return f"{edge_id}|{key.order}|{key.operation}|{key.split}"


def confirmation_idem_key(edge_id: str, key: OperationKey, counter: int, retry: int = 0) -> str:
    text = f"{_key_text(edge_id, key)}|conf|{counter}"
    if retry:
        text += f"|retry|{retry}"
    return hashlib.sha256(text.encode()).hexdigest()


def reversal_idem_key(edge_id: str, key: OperationKey, counter: int) -> str:
    return hashlib.sha256(f"{_key_text(edge_id, key)}|rev|{counter}".encode()).hexdigest()


def tally_payload(tally: Tally) -> dict[str, object]:
    return {
        "yield_qty": number(tally.good),
        "scrap_qty": number(tally.scrap_total),
        "rework_qty": number(tally.rework_total),
        "scrap_by_reason": [
            {"code": code, "qty": number(qty)} for code, qty in sorted(tally.scrap.items())
        ],
        "rework_by_reason": [
            {"code": code, "qty": number(qty)} for code, qty in sorted(tally.rework.items())
        ],
    }


def confirmation_payload(conf: Confirmation, spec: OperationSpec) -> dict[str, object]:
    """The confirmation as the ERP relay receives it (see contract/ for the schema)."""
    t = conf.tally
    payload: dict[str, object] = {
        "conf_id": conf.conf_id,
        "idem_key": conf.idem_key,
        "order_id": conf.key.order,
        "operation": conf.key.operation,
        "split": conf.key.split,
        "confirmation_no": spec.confirmation_no,
        "conf_index": conf.counter,
        "kind": "final" if conf.final else "partial",
        "final": conf.final,
        "unit": spec.unit,
        "material": spec.material,
        "work_center": spec.work_center,
        **tally_payload(t),
        "variance_reason": conf.variance_reason,
        "posting_date": conf.posting_date,
        "shift": conf.shift,
        "period_start": conf.period_start.iso(),
        "period_end": conf.period_end.iso(),
        "activities": {
            "setup_s": t.setup_ms / 1000,
            "machine_s": t.production_ms / 1000,
            "labour_s": conf.labour_ms / 1000,
        },
        "labour_by_operator": [
            {"personnel": personnel, "labour_s": ms / 1000}
            for personnel, ms in sorted(conf.labour_by.items())
        ],
        "iso22400": {
            "AUST_s": t.setup_ms / 1000,
            "APT_s": t.production_ms / 1000,
            "ADT_s": t.down_ms / 1000,
            "waiting_s": t.waiting_ms / 1000,
        },
        "actor": conf.actor,
        "retry": conf.retries,
        "goods_movements": material.movements(conf.consumption, spec),
        "batch": spec.batch,
    }
    return payload


# ------------------------------------------------------------------ the work center's confirmations


def confirm(
    s: WorkCenterState,
    op: Operation,
    now: Instant,
    actor: str,
    *,
    final: bool,
    variance_reason: str | None = None,
    posting: tuple[str, str] | None = None,
) -> Confirmation | None:
    """Confirm everything pending of ``op`` (rules.md §6). The sum rule holds by construction:
    the confirmation is exactly ``counted - confirmed`` and is added to ``confirmed``.

    While an earlier confirmation of ``op`` stands rejected by the ERP, nothing is confirmed
    (domain.md §10.5 rule 2): partial quantities stay pending and go with the next one, a
    final confirmation is withheld until the rejected one is resent or reversed.
    """
    blocking = blocking_confirmation(s, op)
    if blocking is not None:
        if final and not op.final_withheld:
            op.final_withheld = True
            op.final_withheld_variance = variance_reason
            s.touch("operation", op.key)
            s.emit(
                EventType.FINAL_CONFIRMATION_WITHHELD,
                now,
                op,
                actor,
                blocked_by=blocking.conf_id,
                erp_message=blocking.erp_message,
            )
        return None
    accrue(s, op, now)
    pending = op.pending
    rules = s.rules
    consumption = material.pending_consumption(op, rules.backflush_scrap)
    if posting is None:
        name, day = shift_of(now, s.calendar)
        posting = (day.isoformat(), f"{day.isoformat()}/{name}")
    variance = variance_reason or cycle_variance(s, op.spec, pending)
    crew = op.spec.crew_size if op.spec.crew_size is not None else s.master_data.crew_size
    counter = op.conf_count + 1
    conf = Confirmation(
        key=op.key,
        counter=counter,
        final=final,
        tally=pending,
        period_start=period_start(s, op.last_conf_end or op.first_start or now, now),
        period_end=now,
        posting_date=posting[0],
        shift=posting[1],
        variance_reason=variance,
        labour_ms=int(pending.production_ms * crew),
        idem_key=confirmation_idem_key(rules.key_scope, op.key, counter),
        actor=actor,
        consumption=consumption,
        labour_by=pending_labour(op),
    )
    op.confirmed.add(pending)
    material.add(op.consumed_confirmed, consumption)
    add_labour(op.labour_confirmed, conf.labour_by)
    op.conf_count = counter
    op.last_conf_end = now
    s.confirmations[conf.conf_id] = conf
    index_confirmation(s, conf)
    s.touch("confirmation", conf.conf_id)
    s.touch("operation", op.key)
    s.emit(
        EventType.CONFIRMATION_CREATED,
        now,
        op,
        actor,
        **confirmation_payload(conf, op.spec),
        totals_to_date=tally_payload(op.confirmed),
    )
    return conf


def period_start(s: WorkCenterState, start: Instant, end: Instant) -> Instant:
    """When a confirmation's period began. The wall clock stepped back within it (NTP
    correcting a clock that ran ahead): the start is its end less its length on the
    monotonic clock, so the ERP never gets a period that ends before it begins (rules
    revision 1; before it, the start as it was)."""
    if s.rules.revision >= 1 and end.wall_ms < start.wall_ms:
        return Instant(end.wall_ms - end.since(start), start.mono_ms)
    return start


def blocking_confirmation(s: WorkCenterState, op: Operation) -> Confirmation | None:
    """The confirmation of ``op`` the ERP rejected and nobody resent or reversed yet."""
    for counter in range(1, op.conf_count + 1):
        conf = s.confirmations.get(f"{op.key}#{counter}")
        if conf is not None and conf.status is ConfirmationStatus.REJECTED and not conf.reversed:
            return conf
    return None


def release_withheld(s: WorkCenterState, op: Operation, now: Instant, actor: str) -> None:
    """The rejection is dealt with: the final confirmation that waited for it is made now."""
    if op.final_withheld and blocking_confirmation(s, op) is None:
        op.final_withheld = False
        variance, op.final_withheld_variance = op.final_withheld_variance, None
        s.touch("operation", op.key)
        confirm(s, op, now, actor, final=True, variance_reason=variance)


def cycle_variance(s: WorkCenterState, spec: OperationSpec, pending: Tally) -> str | None:
    made = pending.good + pending.scrap_total + pending.rework_total
    if spec.std_cycle_s <= 0 or made <= 0 or pending.production_ms <= 0:
        return None
    actual = pending.production_ms / 1000 / float(made)
    if abs(actual / spec.std_cycle_s - 1) > s.rules.variance_threshold:
        return s.rules.variance_reason
    return None


def index_confirmation(s: WorkCenterState, conf: Confirmation) -> None:
    s.idem_index[conf.idem_key] = (conf.conf_id, False)
    if conf.reversal_idem_key:
        s.idem_index[conf.reversal_idem_key] = (conf.conf_id, True)


def on_request_confirmation(s: WorkCenterState, r: RequestConfirmation) -> None:
    op = s.find_op(r.op)
    if op.status is OperationStatus.CANCELLED and not is_supervisor(r.actor):
        raise reject(
            RejectionCode.SUPERVISOR_ONLY,
            f"operation {op.key} is cancelled; only a supervisor may confirm it",
            field="actor",
            value=r.actor,
        )
    blocking = blocking_confirmation(s, op)
    if blocking is not None:
        raise reject(
            RejectionCode.CONFIRMATION_BLOCKED,
            f"confirmation {blocking.conf_id} was rejected by the ERP "
            f"({blocking.erp_message or 'no message'}); a supervisor resends it corrected "
            "or reverses it first",
            field="op",
            value=r.op,
        )
    pending = op.pending
    if (
        not pending.has_quantity()
        and not (op.status.active and pending.production_ms)
        and not material.pending_consumption(op, s.rules.backflush_scrap)
    ):
        raise reject(
            RejectionCode.NOTHING_TO_CONFIRM,
            f"operation {op.key} has nothing pending to confirm",
            field="op",
            value=r.op,
        )
    confirm(s, op, r.at, r.actor, final=op.status.finished)


def find_confirmation(s: WorkCenterState, ref: str, counter: int) -> tuple[Operation, Confirmation]:
    op = s.find_op(ref)
    conf = s.confirmations.get(f"{op.key}#{counter}")
    if conf is None:
        raise reject(
            RejectionCode.UNKNOWN_CONFIRMATION,
            f"counter = {counter!r}: operation {op.key} has no such confirmation",
            field="counter",
            value=counter,
        )
    return op, conf


def on_reverse(s: WorkCenterState, r: ReverseConfirmation) -> None:
    require_supervisor(r.actor, "reverse a confirmation")
    op, conf = find_confirmation(s, r.op, r.counter)
    if conf.reversed:
        raise reject(
            RejectionCode.CONFIRMATION_STATE,
            f"confirmation {conf.conf_id} is already reversed",
            field="counter",
            value=r.counter,
        )
    conf.reversed = True
    conf.reversal_idem_key = reversal_idem_key(s.rules.key_scope, op.key, conf.counter)
    conf.reversal_status = ConfirmationStatus.AWAITING_RESULT
    op.confirmed.add(conf.tally, -1)
    material.add(op.consumed_confirmed, conf.consumption, -1)
    add_labour(op.labour_confirmed, conf.labour_by, -1)
    index_confirmation(s, conf)
    s.touch("confirmation", conf.conf_id)
    s.touch("operation", op.key)
    s.emit(
        EventType.CONFIRMATION_REVERSED,
        r.at,
        op,
        r.actor,
        conf_id=conf.conf_id,
        conf_index=conf.counter,
        idem_key=conf.reversal_idem_key,
        reverses_idem_key=conf.idem_key,
        **tally_payload(conf.tally),
        goods_movements=material.movements(conf.consumption, op.spec),
    )
    release_withheld(s, op, r.at, r.actor)


def on_resend(s: WorkCenterState, r: ResendConfirmation) -> None:
    require_supervisor(r.actor, "resend a confirmation")
    op, conf = find_confirmation(s, r.op, r.counter)
    if conf.status is not ConfirmationStatus.REJECTED or conf.reversed:
        raise reject(
            RejectionCode.CONFIRMATION_STATE,
            f"confirmation {conf.conf_id} is {conf.status.value}"
            f"{' and reversed' if conf.reversed else ''}; only a rejected one can be resent",
            field="counter",
            value=r.counter,
        )
    if r.posting_date is not None:
        check_date(r.posting_date)
    if r.variance_reason is not None and len(r.variance_reason) > 40:
        raise reject(
            RejectionCode.INVALID_VALUE,
            f"variance_reason = {r.variance_reason!r}: at most 40 characters",
            field="variance_reason",
            value=r.variance_reason,
        )
    conf.retries += 1
    conf.idem_key = confirmation_idem_key(s.rules.key_scope, op.key, conf.counter, conf.retries)
    conf.status = ConfirmationStatus.AWAITING_RESULT
    conf.erp_message = None
    if r.posting_date is not None:
        conf.posting_date = r.posting_date
    if r.variance_reason is not None:
        conf.variance_reason = r.variance_reason or None
    index_confirmation(s, conf)
    s.touch("confirmation", conf.conf_id)
    s.emit(
        EventType.CONFIRMATION_RESENT,
        r.at,
        op,
        r.actor,
        **confirmation_payload(conf, op.spec),
    )
    release_withheld(s, op, r.at, r.actor)


def on_result(s: WorkCenterState, r: ConfirmationResult) -> bool:
    found = s.confirmation_by_idem(r.idem_key)
    if found is None:
        raise reject(
            RejectionCode.UNKNOWN_CONFIRMATION,
            f"idem_key = {r.idem_key!r}: no confirmation or reversal with that key",
            field="idem_key",
            value=r.idem_key,
        )
    conf, is_reversal = found
    if not is_reversal and conf.idem_key != r.idem_key:
        raise reject(
            RejectionCode.CONFIRMATION_STATE,
            f"idem_key = {r.idem_key!r} was superseded by a corrected resend",
            field="idem_key",
            value=r.idem_key,
        )
    current = conf.reversal_status if is_reversal else conf.status
    status = next_verdict(current, r.status)
    if status is None:
        if current is ConfirmationStatus.POSTED and r.status in _POSTED_AGAIN:
            return False  # the same good news again (a relay's resend): nothing to do
        # A verdict only moves forward: once the ERP posted it, a later "rejected" or
        # "retrying" cannot be true of that posting, and applying it would invite a resend
        # that posts the same quantities twice. Kept, counted and shown to the supervisor.
        conf.verdict_conflicts += 1
        conf.last_conflict = f"{r.status.value} after {current.value if current else '-'}" + (
            f": {r.message}" if r.message else ""
        )
        s.touch("confirmation", conf.conf_id)
        s.emit(
            EventType.VERDICT_CONFLICT,
            r.at,
            conf.key,
            "central",
            conf_id=conf.conf_id,
            idem_key=r.idem_key,
            reversal=is_reversal,
            status=current.value if current else None,
            verdict=r.status.value,
            erp_message=r.message,
        )
        return True
    if is_reversal:
        conf.reversal_status = status
    else:
        conf.status = status
        conf.erp_message = r.message
        if r.erp_ref:
            conf.erp_ref = r.erp_ref
    s.touch("confirmation", conf.conf_id)
    s.emit(
        EventType.CONFIRMATION_RESULT,
        r.at,
        conf.key,
        "central",
        conf_id=conf.conf_id,
        idem_key=r.idem_key,
        reversal=is_reversal,
        status=r.status.value,
        message=r.message,
        erp_ref=r.erp_ref,
    )
    # A late "posted" or "duplicate" for a confirmation rejected before also resolves it.
    op = s.operations.get(conf.key)
    if op is not None:
        release_withheld(s, op, r.at, "central")
    return True


def at_shift_change(s: WorkCenterState, now: Instant) -> None:
    name, day = shift_of(now, s.calendar)
    current = f"{day.isoformat()}/{name}"
    previous = s.header.shift_id
    if current == previous:
        return
    if previous is not None and s.policy.at_shift_end:
        posting = (previous.split("/")[0], previous)
        for op in s.active:
            if op.pending.has_quantity():
                confirm(s, op, now, "machine:shift_end", final=False, posting=posting)
    s.header.shift_id = current
    s.touch("work_center", "")
    s.emit(EventType.SHIFT_CHANGED, now, None, None, shift=current, previous=previous)


_POSTED_AGAIN = frozenset({ResultStatus.POSTED, ResultStatus.DUPLICATE})


def next_verdict(
    current: ConfirmationStatus | None, verdict: ResultStatus
) -> ConfirmationStatus | None:
    """rules.md §6: the ERP relay's verdict as a state machine that only moves forward.

    awaiting_result: posted or duplicate -> posted; rejected -> rejected; retrying stays.
    rejected: posted or duplicate -> posted (the relay got it through after all; the ERP has
    the document); a repeated rejected stays rejected; retrying is a contradiction.
    posted is final: anything after it is a contradiction (None), never applied.
    """
    posted = verdict in _POSTED_AGAIN
    if current is ConfirmationStatus.AWAITING_RESULT or current is None:
        if posted:
            return ConfirmationStatus.POSTED
        if verdict is ResultStatus.REJECTED:
            return ConfirmationStatus.REJECTED
        return ConfirmationStatus.AWAITING_RESULT
    if current is ConfirmationStatus.REJECTED:
        if posted:
            return ConfirmationStatus.POSTED
        return ConfirmationStatus.REJECTED if verdict is ResultStatus.REJECTED else None
    return None


def check_policy(policy: ConfirmationPolicy) -> None:
    every = policy.every_good
    if every is not None and (out_of_range(every, Decimal(1), MAX_QUANTITY)):
        raise reject(
            RejectionCode.INVALID_VALUE,
            f"confirmation_policy.every_good = {every}: must be from 1 to {MAX_QUANTITY}",
            field="confirmation_policy.every_good",
            value=str(every),
        )
    minutes = policy.every_minutes
    if minutes is not None and not MIN_EVERY_MINUTES <= minutes <= MAX_EVERY_MINUTES:
        raise reject(
            RejectionCode.INVALID_VALUE,
            f"confirmation_policy.every_minutes = {minutes}: must be from "
            f"{MIN_EVERY_MINUTES:g} to {MAX_EVERY_MINUTES:g}",
            field="confirmation_policy.every_minutes",
            value=minutes,
        )


def check_date(text: str) -> None:
    parts = text.split("-")
    ok = len(parts) == 3 and all(p.isdigit() for p in parts) and len(parts[0]) == 4
    if ok:
        _, mo, d = (int(p) for p in parts)
        ok = 1 <= mo <= 12 and 1 <= d <= 31
    if not ok:
        raise reject(
            RejectionCode.INVALID_VALUE,
            f"posting_date = {text!r}: not a date YYYY-MM-DD",
            field="posting_date",
            value=text,
        )


def by_time(s: WorkCenterState, now: Instant) -> None:
    """The policy "every n minutes": confirm what is pending of each active operation."""
    minutes = s.policy.every_minutes
    if minutes:
        for op in s.active:
            since = op.last_conf_end or op.first_start
            if since and now.since(since) >= minutes * 60_000 and op.pending.has_quantity():
                confirm(s, op, now, "machine:policy", final=False)
