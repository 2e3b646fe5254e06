"""Postings and gateway messages for the relay's tests, in the contract's shapes."""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import replace
from decimal import Decimal
from typing import Any

from edge.relay.erp import Posting

EPOCH_MS = 1_741_000_000_000  # 2025-03-03T11:06:40Z


def idem(edge_id: str, order: str, op: str, n: int, kind: str = "conf", split: int = 0) -> str:
    return hashlib.sha256(f"{edge_id}|{order}|{op}|{split}|{kind}|{n}".encode()).hexdigest()


def posting(
    n: int = 1,
    *,
    edge_id: str = "wc-press-07",
    order: str = "1000123",
    op: str = "0010",
    seq: int | None = None,
    good: int | str = 100,
    scrap: int | str = 2,
    final: bool = False,
    root: str = "umh/v1/acme/plant1/stamping/line4/PRESS07",
    **changes: Any,
) -> Posting:
    p = Posting(
        kind="confirmation",
        idem_key=idem(edge_id, order, op, n),
        edge_id=edge_id,
        root=root,
        seq=seq if seq is not None else 100 + n,
        work_center=root.rsplit("/", 1)[-1],
        order_id=order,
        operation=op,
        split=0,
        conf_index=n,
        event_ms=EPOCH_MS + n * 60_000,
        yield_qty=Decimal(good),
        scrap_qty=Decimal(scrap),
        rework_qty=Decimal(0),
        unit="PC",
        material="FG-4711",
        final=final,
        posting_date="2025-03-03",
        period_start_ms=EPOCH_MS + (n - 1) * 60_000,
        period_end_ms=EPOCH_MS + n * 60_000,
        setup_s=120.0 if n == 1 else 0.0,
        machine_s=60.0,
        labour_s=60.0,
    )
    return replace(p, **changes) if changes else p


def reversal(of: Posting, *, seq: int | None = None) -> Posting:
    return replace(
        of,
        kind="reversal",
        idem_key=idem(of.edge_id, of.order_id, of.operation, of.conf_index, "rev"),
        seq=seq if seq is not None else of.seq + 50,
        reverses_idem_key=of.idem_key,
    )


def message(p: Posting, *, historical: bool = False, boot_seq: int = 1) -> bytes:
    """The gateway's MQTT payload for a posting (``mes.confirmation/1`` or the reversal)."""
    iso = "2025-03-03T08:00:00.000Z"
    common = {
        "event_time": iso,
        "order_id": p.order_id,
        "operation": p.operation,
        "split": p.split,
        "actor": "system",
        "conf_id": f"{p.order_id}/{p.operation}#{p.conf_index}",
        "idem_key": p.idem_key,
        "conf_index": p.conf_index,
        "yield_qty": _num(p.yield_qty),
        "scrap_qty": _num(p.scrap_qty),
        "rework_qty": _num(p.rework_qty),
        "scrap_by_reason": [{"code": r.code, "qty": _num(r.qty)} for r in p.scrap_by_reason],
        "rework_by_reason": [],
    }
    if p.kind == "confirmation":
        body: dict[str, Any] = {
            **common,
            "type": "confirmation_created",
            "confirmation_no": p.confirmation_no,
            "kind": "final" if p.final else "partial",
            "final": p.final,
            "unit": p.unit,
            "material": p.material,
            "work_center": p.work_center,
            "variance_reason": p.variance_reason,
            "posting_date": p.posting_date,
            "shift": "2025-03-03/early",
            "period_start": _iso(p.period_start_ms),
            "period_end": _iso(p.period_end_ms),
            "activities": {"setup_s": p.setup_s, "machine_s": p.machine_s, "labour_s": p.labour_s},
            "iso22400": {"AUST_s": p.setup_s, "APT_s": p.machine_s, "ADT_s": 0.0, "waiting_s": 0.0},
            "retry": 0,
        }
        schema = "mes.confirmation/1"
    else:
        body = {**common, "type": "confirmation_reversed", "reverses_idem_key": p.reverses_idem_key}
        schema = "mes.confirmation-cancel/1"
    envelope = {
        "schema": schema,
        "msg_id": str(uuid.uuid5(uuid.NAMESPACE_URL, p.idem_key)),
        "idem_key": p.idem_key,
        "edge_id": p.edge_id,
        "boot_seq": boot_seq,
        "seq": p.seq,
        "ts_event_ms": p.event_ms,
        "ts_sent_ms": p.event_ms + 20,
        "historical": historical,
        "body": body,
    }
    return json.dumps(envelope).encode()


def _num(q: Decimal) -> int | str:
    return int(q) if q == q.to_integral_value() else str(q)


def _iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    import datetime as dt

    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="milliseconds")
