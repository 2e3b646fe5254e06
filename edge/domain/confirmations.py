"""Confirmation arithmetic without state: idempotency keys, shifts and posting dates, payloads.

``idem_key = sha256("<edge_id>|<order>|<operation>|<split>|conf|<counter>")`` (rules.md §6): the
same confirmation always gets the same key, so a resend after a crash never posts twice, and a new
confirmation never reuses one. A corrected resend appends ``|retry|<n>``; a reversal uses ``rev``.
"""

from __future__ import annotations

import hashlib
from datetime import date, datetime, timedelta
from decimal import Decimal
from functools import lru_cache
from zoneinfo import ZoneInfo

from edge.domain.clock import Instant
from edge.domain.model import Confirmation, OperationKey, OperationSpec, Tally
from edge.domain.rules import Shift


def _key_text(edge_id: str, key: OperationKey) -> str:
    return f"{edge_id}|{key.order}|{key.operation}|{key.split}"


def confirmation_idem_key(edge_id: str, key: OperationKey, counter: int, retry: int = 0) -> str:
    text = f"{_key_text(edge_id, key)}|conf|{counter}"
    if retry:
        text += f"|retry|{retry}"
    return hashlib.sha256(text.encode()).hexdigest()


def reversal_idem_key(edge_id: str, key: OperationKey, counter: int) -> str:
    return hashlib.sha256(f"{_key_text(edge_id, key)}|rev|{counter}".encode()).hexdigest()


@lru_cache(maxsize=8)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def shift_of(at: Instant, shifts: tuple[Shift, ...], timezone: str) -> tuple[str, date]:
    """The shift ``at`` falls in: (shift name, the local date the shift started on).

    A night shift 22:00-06:00 that ends at 02:00 on the 4th belongs to the 3rd. Where the
    calendar has a gap, the shift that started last before ``at`` is taken.
    """
    zone = _zone(timezone)
    local = at.wall().astimezone(zone)
    best: tuple[datetime, str, date] | None = None
    for day in (local.date() - timedelta(days=1), local.date()):
        for shift in shifts:
            start = datetime(day.year, day.month, day.day, tzinfo=zone) + timedelta(
                minutes=shift.start_minute
            )
            if start <= local and (best is None or start > best[0]):
                best = (start, shift.name, day)
    if best is None:  # no shifts configured: the calendar day
        return "day", local.date()
    return best[1], best[2]


def shift_id(at: Instant, shifts: tuple[Shift, ...], timezone: str) -> str:
    name, day = shift_of(at, shifts, timezone)
    return f"{day.isoformat()}/{name}"


def number(value: Decimal) -> int | str:
    """A quantity for a payload: an int when whole, else the exact decimal as text."""
    return int(value) if value == value.to_integral_value() else str(value)


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
        "iso22400": {
            "AUST_s": t.setup_ms / 1000,
            "APT_s": t.production_ms / 1000,
            "ADT_s": t.down_ms / 1000,
            "waiting_s": t.waiting_ms / 1000,
        },
        "actor": conf.actor,
        "retry": conf.retries,
    }
    return payload
