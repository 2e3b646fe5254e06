"""Operations commands for maintenance staff: ``edge status``, ``edge outbox ...``, ``edge backup``.

They read the gateway's database beside the running daemon: the store is opened without counting
a boot (``Store.open(boot=False)``); reads run in one snapshot (WAL: they never block a commit).
Only ``edge outbox replay`` writes, through :meth:`Store.replay_published`.

Nothing here prints a secret: the MQTT password is never read, only whether a file is set.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from edge.config import GatewayConfig, config_path, load_config
from edge.domain.clock import Instant
from edge.domain.kpis import kpis_payload
from edge.domain.order_kpis import work_center_kpis, work_center_payload
from edge.errors import StoreError
from edge.store.store import Store

EXIT_OK, EXIT_FAILED = 0, 1


# ---------------------------------------------------------------------------- wiring


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the operations commands to the ``edge`` parser (called from ``edge.cli``)."""

    def common(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument(
            "-c", "--config", help="config file (default: $EDGE_CONFIG or /etc/edge-gateway/...)"
        )
        p.add_argument("--db", help="database file (default: [store] path of the config)")
        return p

    status = common(sub.add_parser("status", help="the gateway's state from its database"))
    status.add_argument("--json", action="store_true", help="one JSON document")
    status.set_defaults(fn=cmd_status)

    outbox = sub.add_parser("outbox", help="messages waiting for the broker or the ERP relay")
    osub = outbox.add_subparsers(dest="outbox_command", required=True)
    olist = common(osub.add_parser("list", help="unfinished messages, oldest first"))
    olist.add_argument(
        "--state",
        choices=("pending", "published", "done", "unfinished", "all"),
        default="unfinished",
        help="which rows (default: unfinished = pending and published)",
    )
    olist.add_argument("--limit", type=int, default=50)
    olist.add_argument("--payload", action="store_true", help="show each message's body")
    olist.add_argument("--json", action="store_true", help="JSON lines")
    olist.set_defaults(fn=cmd_outbox_list)
    count = common(osub.add_parser("count", help="rows per state, depth and oldest age"))
    count.add_argument("--json", action="store_true")
    count.set_defaults(fn=cmd_outbox_count)
    replay = common(
        osub.add_parser(
            "replay",
            help="send 'published' messages again (sets them back to 'pending')",
            description="Messages the broker acknowledged but the ERP relay has not answered "
            "are set back to 'pending'; the running gateway sends them again at its next resend "
            "round or restart (`systemctl restart edge-gateway` for at once), with the same "
            "msg_id and idem_key, so the relay de-duplicates.",
        )
    )
    replay.add_argument("--seq", type=int, action="append", default=[], help="only this row")
    replay.set_defaults(fn=cmd_outbox_replay)

    backup = common(
        sub.add_parser(
            "backup",
            help="a consistent copy of the database, also while the gateway runs",
        )
    )
    backup.add_argument("dest", help="the copy's file name (must not exist)")
    backup.set_defaults(fn=cmd_backup)

    acl = sub.add_parser(
        "mqtt-acl", help="print this gateway's entries for the broker's ACL file (mosquitto)"
    )
    acl.add_argument("-c", "--config", help="config file")
    acl.set_defaults(fn=cmd_mqtt_acl)


def _config(args: argparse.Namespace) -> GatewayConfig | None:
    """The config when one is given or found; None when only ``--db`` was given."""
    if args.db and not args.config and not os.environ.get("EDGE_CONFIG"):
        return None
    return load_config(config_path(args.config))


def _db_path(args: argparse.Namespace, cfg: GatewayConfig | None) -> Path:
    if args.db:
        return Path(args.db)
    assert cfg is not None
    return Path(cfg.store.path)


@contextmanager
def _open(db: Path) -> Iterator[Store]:
    if not db.exists():
        raise StoreError(f"{db}: no such database")
    store = Store(db)
    store.open(boot=False, migrate_schema=False)
    try:
        yield store
    finally:
        store.close()


def _iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="seconds")


def _age_s(ms: int | None, now_ms: int) -> float | None:
    return None if ms is None else round(max(0, now_ms - ms) / 1000, 1)


def _num(value: object) -> object:
    """Decimals as JSON numbers where exact (int), else as text."""
    text = str(value)
    try:
        as_int = int(text)
    except ValueError:
        return text
    return as_int


# ---------------------------------------------------------------------------- status


def gather_status(
    store: Store, cfg: GatewayConfig | None, now_ms: int | None = None
) -> dict[str, Any]:
    """Everything ``edge status`` shows, as plain data."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    with store.read_snapshot():
        wc = store.load()
        counts = store.outbox_counts()
        depth = store.outbox_depth()
        oldest = store.outbox_oldest_ms()
        last_acked = store.outbox_last_acked_ms()
        journal = store.journal_count()
        last = store.last_instant()
        boot_seq = store.stored_boot_seq()
    wal = Path(f"{store.path}-wal")
    out: dict[str, Any] = {
        "edge_id": wc.rules.edge_id if wc else (cfg.gateway.edge_id if cfg else None),
        "work_center": wc.rules.work_center if wc else (cfg.gateway.work_center if cfg else None),
        "database": {
            "path": str(store.path),
            "bytes": store.path.stat().st_size,
            "wal_bytes": wal.stat().st_size if wal.exists() else 0,
        },
        "boot_seq": boot_seq,
        "journal": {
            "entries": journal,
            "last_input_at": _iso(last.wall_ms if last else None),
            "last_input_age_s": _age_s(last.wall_ms if last else None, now_ms),
        },
        "machine": {"state": None, "alarm": None},
        "open_stop": None,
        "active_operations": [],
        "dispatched_operations": 0,
        "outbox": {
            "depth": depth,
            "pending": counts.get("pending", 0),
            "published": counts.get("published", 0),
            "done": counts.get("done", 0),
            "oldest_unfinished_at": _iso(oldest),
            "oldest_unfinished_age_s": _age_s(oldest, now_ms),
            # PUBACK times are not stored; this is when the newest acknowledged message was made.
            "last_acked_message_at": _iso(last_acked),
        },
    }
    if cfg is not None:
        m = cfg.mqtt
        out["mqtt"] = {
            "enabled": m.enabled,
            "broker": f"{m.host}:{m.port}",
            "root": m.root_for(cfg.gateway.work_center),
            "tls": bool(m.tls_ca_file or m.tls_cert_file),
            "client_certificate": m.tls_cert_file is not None,
            "username": m.username,
            "password": "from file" if m.password_file else None,
        }
    if wc is None:
        return out
    # The current shift up to now (the daemon's monotonic clock goes on with the wall clock
    # from the last journaled input, as far as this tool can tell).
    mark = last or Instant(now_ms, 0)
    now = Instant(now_ms, mark.mono_ms + max(0, now_ms - mark.wall_ms))
    kpis = wc.shift_kpis(now)
    out["shift"] = kpis_payload(kpis) if kpis is not None else None
    day = wc.day_kpis(now)
    out["day"] = kpis_payload(day) if day is not None else None
    out["orders"] = work_center_payload(work_center_kpis(wc, now))
    header = wc.header
    out["machine"] = {
        "state": header.machine_state.value if header.machine_state else None,
        "alarm": header.machine_alarm,
        "hours": wc.machine_hours(now),
    }
    out["crew"] = [m.personnel for m in header.crew]
    stop = wc.open_stop
    if stop is not None:
        out["open_stop"] = {
            "stop_id": stop.stop_id,
            "since": _iso(stop.start.wall_ms),
            "duration_s": _age_s(stop.start.wall_ms, now_ms),
            "origin": stop.origin.value,
            "reason": stop.reason,
            "alarm": stop.alarm,
            "micro": stop.micro,
            "operations": list(stop.operations),
        }
    for op in wc.active:
        out["active_operations"].append(
            {
                "op": str(op.key),
                "order": op.spec.order,
                "operation": op.spec.operation,
                "split": op.spec.split,
                "material": op.spec.material,
                "status": op.status.value,
                "good": _num(op.counted.good),
                "scrap": _num(op.counted.scrap_total),
                "rework": _num(op.counted.rework_total),
                "target": _num(op.spec.target_qty),
                "unit": op.spec.unit,
                "confirmed_good": _num(op.confirmed.good),
                "confirmations": op.conf_count,
            }
        )
    out["dispatched_operations"] = sum(
        1 for op in wc.operations.values() if op.status.value == "dispatched"
    )
    return out


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.0f} %"


def shift_line(k: dict[str, Any]) -> str:
    """One line of a shift's KPIs (kpis_payload) for a terminal."""
    top = ", ".join(f"{r['code']} {r['s'] / 60:.0f} min" for r in k["down_by_reason_s"][:3])
    return (
        f"{k['shift_id']}: OEE {_pct(k['oee'])} (availability {_pct(k['availability'])}, "
        f"effectiveness {_pct(k['effectiveness'])}, quality {_pct(k['quality_ratio'])}), "
        f"good {k['good']}, scrap {k['scrap']}; stops {top or 'none'}"
    )


def _hours(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds / 3600:.1f} h"


def orders_line(k: dict[str, Any]) -> str:
    """One line of the work center's order KPIs (work_center_payload) for a terminal."""
    return (
        f"on time {k['on_time']} of {k['with_due']} completed with a due date "
        f"({_pct(k['on_time_rate'])}), cycle time {_hours(k['cycle_s_median'])} median "
        f"(value-add {_pct(k['value_add_ratio'])}), schedule stability "
        f"{_pct(k['schedule_stability'])} ({k['rescheduled']} of {k['dispatched']} "
        f"rescheduled), WIP {k['wip']} (oldest {_hours(k['wip_age_s_max'])}"
        + (
            f", value {k['wip_value']} of {k['wip_valued']} with a standard cost)"
            if k.get("wip_value") is not None
            else ")"
        )
    )


def render_status(s: dict[str, Any]) -> str:
    lines = [f"gateway {s['edge_id']}, work center {s['work_center']}"]
    db = s["database"]
    lines.append(
        f"  database   {db['path']} ({db['bytes'] // 1024} KiB, WAL {db['wal_bytes'] // 1024} KiB)"
        f", boot {s['boot_seq']}, {s['journal']['entries']} journal entries"
        f", last input {s['journal']['last_input_at'] or '-'}"
    )
    machine = s["machine"]
    state = machine["state"] or "unknown"
    if machine["alarm"]:
        state += f" (alarm {machine['alarm']})"
    lines.append(f"  machine    {state}")
    hours = machine.get("hours")
    if hours:
        lines.append(
            f"  hours      {hours['hours']} h run, {hours['starts']} starts, "
            f"{hours['cycles']} cycles, {hours['parts']} parts since {hours['since']}"
        )
        for item in hours["service"]:
            left = (
                f"DUE since {item['due_since']}"
                if item["due"]
                else f"{item['remaining']} {item['measure']} left"
            )
            lines.append(
                f"  service    {item['name']}: every {item['every']} {item['measure']}, {left}"
            )
    if s.get("crew"):
        lines.append(f"  crew       {', '.join(s['crew'])}")
    stop = s["open_stop"]
    if stop:
        lines.append(
            f"  open stop  {stop['stop_id']} since {stop['since']} ({stop['duration_s']} s), "
            f"reason {stop['reason'] or 'NOT GIVEN'}"
        )
    else:
        lines.append("  open stop  none")
    if not s["active_operations"]:
        lines.append(f"  operation  none active ({s['dispatched_operations']} dispatched)")
    for op in s["active_operations"]:
        lines.append(
            f"  operation  {op['order']}/{op['operation']}"
            f"{'/' + str(op['split']) if op['split'] else ''} {op['status']}: "
            f"good {op['good']}, scrap {op['scrap']} of {op['target']} {op['unit']} "
            f"({op['confirmations']} confirmations)"
        )
    if s.get("shift"):
        lines.append(f"  shift      {shift_line(s['shift'])}")
    if s.get("day"):
        lines.append(f"  day        {shift_line(s['day'])}")
    if s.get("orders"):
        lines.append(f"  orders     {orders_line(s['orders'])}")
    o = s["outbox"]
    oldest = f", oldest unfinished {o['oldest_unfinished_age_s']} s old" if o["depth"] else ""
    lines.append(
        f"  outbox     {o['depth']} unfinished ({o['pending']} to send, "
        f"{o['published']} awaiting the relay){oldest}"
        f", last acknowledged message made {o['last_acked_message_at'] or '-'}"
    )
    if "mqtt" in s:
        m = s["mqtt"]
        if m["enabled"]:
            lines.append(
                f"  mqtt       {m['broker']}, root {m['root']}, "
                f"tls {'on' if m['tls'] else 'off'}"
                f"{', client certificate' if m['client_certificate'] else ''}"
            )
        else:
            lines.append("  mqtt       disabled (local only)")
    return "\n".join(lines)


def cmd_status(args: argparse.Namespace) -> int:
    cfg = _config(args)
    with _open(_db_path(args, cfg)) as store:
        status = gather_status(store, cfg)
    print(json.dumps(status, indent=2) if args.json else render_status(status))
    return EXIT_OK


# ---------------------------------------------------------------------------- outbox

_STATES = {
    "unfinished": ("pending", "published"),
    "all": ("pending", "published", "done"),
}


def cmd_outbox_list(args: argparse.Namespace) -> int:
    cfg = _config(args)
    states = _STATES.get(args.state, (args.state,))
    with _open(_db_path(args, cfg)) as store:
        rows = store.outbox_rows(states, limit=args.limit)
    for row, last_error in rows:
        item: dict[str, Any] = {
            "seq": row.seq,
            "state": row.state,
            "kind": row.kind,
            "topic": row.topic,
            "msg_id": row.msg_id,
            "idem_key": row.idem_key,
            "made_at": _iso(row.at_wall_ms),
            "attempts": row.attempts,
            "last_error": last_error,
        }
        if args.payload:
            item["payload"] = json.loads(row.payload)
        if args.json:
            print(json.dumps(item))
            continue
        line = (
            f"{row.seq:>8} {row.state:<9} {item['made_at']} {row.kind:<22} {row.topic}"
            f"  attempts={row.attempts}"
        )
        if row.idem_key:
            line += f" idem={row.idem_key}"
        if last_error:
            line += f" refused: {last_error}"
        print(line)
        if args.payload:
            print(f"         {row.payload}")
    if not args.json and not rows:
        print("no rows")
    return EXIT_OK


def cmd_outbox_count(args: argparse.Namespace) -> int:
    cfg = _config(args)
    now_ms = int(time.time() * 1000)
    with _open(_db_path(args, cfg)) as store, store.read_snapshot():
        counts = store.outbox_counts()
        depth = store.outbox_depth()
        oldest = store.outbox_oldest_ms()
    data = {
        "pending": counts.get("pending", 0),
        "published": counts.get("published", 0),
        "done": counts.get("done", 0),
        "depth": depth,
        "oldest_unfinished_age_s": _age_s(oldest, now_ms),
    }
    if args.json:
        print(json.dumps(data))
    else:
        print(
            f"{data['pending']} pending, {data['published']} published (awaiting the relay), "
            f"{data['done']} done; oldest unfinished: "
            f"{'-' if oldest is None else str(data['oldest_unfinished_age_s']) + ' s'}"
        )
    return EXIT_OK


def cmd_outbox_replay(args: argparse.Namespace) -> int:
    cfg = _config(args)
    with _open(_db_path(args, cfg)) as store:
        count = store.replay_published(args.seq)
    print(
        f"{count} message(s) set back to pending; the gateway sends them again at its next "
        "resend round or restart"
    )
    return EXIT_OK


# ---------------------------------------------------------------------------- backup


def cmd_backup(args: argparse.Namespace) -> int:
    cfg = _config(args)
    dest = Path(args.dest)
    if dest.exists():
        print(f"edge: {dest} exists; not overwritten", file=sys.stderr)
        return EXIT_FAILED
    tmp = dest.with_name(f".{dest.name}.partial")
    with _open(_db_path(args, cfg)) as store:
        try:
            store.backup_to(tmp)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    os.replace(tmp, dest)  # a half-written copy never carries the final name
    check = Store(dest)
    check.open(boot=False)
    try:
        journal = check.journal_count()
        integrity = check.conn.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        check.close()
    if integrity != "ok":
        print(f"edge: the copy {dest} fails the integrity check: {integrity}", file=sys.stderr)
        return EXIT_FAILED
    print(f"{dest}: consistent copy with {journal} journal entries")
    return EXIT_OK


# ---------------------------------------------------------------------------- broker ACL


def acl_block(edge_id: str, root: str) -> str:
    """The mosquitto ACL entries for one gateway: the client certificate's CN is its edge id.

    It may publish only what the contract lets a gateway send, under its own root, and read
    only its own command topics (so it cannot fake a dispatch, not even for itself).
    """
    from edge.sync.contract import BY_PATH
    from edge.sync.service import relay_state_topic

    lines = [f"# gateway {edge_id}: certificate CN = {edge_id}", f"user {edge_id}"]
    for path, topic in sorted(BY_PATH.items(), key=lambda kv: (kv[1].direction, kv[0])):
        access = "read" if topic.direction == "down" else "write"
        lines.append(f"topic {access} {root}/{path}")
    relay = relay_state_topic(root)
    if relay is not None:  # whether the relay is there: confirmations wait while it is not
        lines.append(f"topic read {relay}")
    return "\n".join(lines) + "\n"


def cmd_mqtt_acl(args: argparse.Namespace) -> int:
    cfg = load_config(config_path(args.config))
    print(acl_block(cfg.gateway.edge_id, cfg.mqtt.root_for(cfg.gateway.work_center)), end="")
    return EXIT_OK
