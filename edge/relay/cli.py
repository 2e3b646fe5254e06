"""``edge relay ...``: run the relay, and the tools central IT needs beside it.

edge relay run -c relay.toml          serve (systemd/edge-relay.service: Type=notify)
edge relay check-config -c relay.toml
edge relay doubt  -c relay.toml       postings whose fate is unknown, for a person
edge relay doubt  -c relay.toml --resolve KEY --posted confirmation_group=..,... --by NAME
edge relay doubt  -c relay.toml --resolve KEY --repost --by NAME
edge relay failed -c relay.toml       the ERP's rejections (dead letters), and what they hold
edge relay failed -c relay.toml --resubmit KEY --by NAME
edge relay stats  -c relay.toml [--hours 24]   confirmation latency per work center and ERP
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from edge.logging import configure_logging
from edge.relay.kpi import latency_table

if TYPE_CHECKING:  # imported when a command runs: `edge run` (the gateway) needs none of it
    from edge.relay.config import RelayConfig
    from edge.relay.ledger import Entry, Ledger

EXIT_OK, EXIT_FAILED, EXIT_CONFIG, EXIT_REFUSED = 0, 1, 2, 3
DEFAULT_PATH = "/etc/edge-relay/relay.toml"


def _config(args: argparse.Namespace) -> RelayConfig:
    from edge.relay.config import load_relay_config

    return load_relay_config(args.config or DEFAULT_PATH)


def cmd_run(args: argparse.Namespace) -> int:
    """Exit 2: the configuration (or a file it names) is wrong; 3: the ledger is refused
    (damaged, or written by a newer relay). A restart helps neither (the unit's
    ``RestartPreventExitStatus=2 3``)."""
    from edge.relay.app import run_relay
    from edge.relay.db import DamagedLedger
    from edge.relay.ledger import LedgerTooNew

    cfg = _config(args)
    configure_logging(cfg.relay.log_level, cfg.relay.log_json)
    try:
        asyncio.run(run_relay(cfg))
    except ValueError as exc:
        print(f"edge relay: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except (DamagedLedger, LedgerTooNew) as exc:
        print(
            f"edge relay: the ledger is refused: {exc}. It is left as it is: restore it from "
            "a backup, or move it away to start an empty one (what it held is then lost).",
            file=sys.stderr,
        )
        return EXIT_REFUSED
    return EXIT_OK


def cmd_check_config(args: argparse.Namespace) -> int:
    from edge.relay.app import build_erp

    cfg = _config(args)
    try:
        build_erp(cfg)
    except ValueError as exc:
        print(f"edge relay: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    r = cfg.relay
    print(f"relay {r.name()} for enterprise {r.enterprise!r}, group {r.share_group!r}")
    print(f"  serves  {', '.join(r.filters())}")
    print(f"  broker  {cfg.mqtt.host}:{cfg.mqtt.port}")
    print(f"  ledger  {cfg.ledger.url.split('@')[-1]}")
    print(f"  erp     {cfg.erp.system}")
    return EXIT_OK


def _with_ledger(args: argparse.Namespace, fn: Callable[[Ledger], Awaitable[int]]) -> int:
    from edge.relay.app import open_ledger

    cfg = _config(args)

    async def run() -> int:
        ledger = await open_ledger(cfg.ledger)
        try:
            return await fn(ledger)
        finally:
            await ledger.close()

    return asyncio.run(run())


def _row(e: Entry) -> dict[str, Any]:
    p = e.posting
    return {
        "idem_key": e.idem_key,
        "kind": e.kind,
        "status": e.status,
        "edge_id": p.edge_id,
        "work_center": p.work_center,
        "operation": p.label,
        "seq": p.seq,
        "yield": str(p.yield_qty),
        "scrap": str(p.scrap_qty),
        "attempts": e.attempts,
        "error": e.error_text,
        "code": e.error_code,
        "erp": dict(e.erp),
        "note": e.note,
    }


def _print_entries(entries: list[Entry], as_json: bool, empty: str) -> None:
    if as_json:
        for e in entries:
            print(json.dumps(_row(e)))
        return
    if not entries:
        print(empty)
        return
    for e in entries:
        r = _row(e)
        print(
            f"{r['idem_key']}  {r['kind']:<12} {r['operation']:<22} {r['work_center']:<10} "
            f"yield {r['yield']} scrap {r['scrap']}  attempts {r['attempts']}"
        )
        if r["error"]:
            print(f"    {r['code'] or ''} {r['error']}")


def _parse_keys(text: str) -> dict[str, str]:
    keys: dict[str, str] = {}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise SystemExit(f"edge relay: --posted wants NAME=VALUE[,NAME=VALUE]; got {part!r}")
        keys[name.strip()] = value.strip()
    return keys


async def _decide(decision: Awaitable[Entry]) -> int:
    """A person's decision on one entry: print what it became, or why it was refused."""
    try:
        entry = await decision
    except (KeyError, ValueError) as exc:
        print(f"edge relay: {exc.args[0]}", file=sys.stderr)
        return EXIT_FAILED
    print(f"{entry.idem_key}: {entry.status} ({entry.note})")
    return EXIT_OK


def cmd_doubt(args: argparse.Namespace) -> int:
    async def run(ledger: Ledger) -> int:
        if args.resolve:
            if not args.by or (args.posted is None) == (not args.repost):
                print(
                    "edge relay: --resolve needs --by and one of --posted or --repost",
                    file=sys.stderr,
                )
                return EXIT_FAILED
            posted = _parse_keys(args.posted) if args.posted else None
            return await _decide(
                ledger.resolve(args.resolve, as_posted=posted, who=args.by, now_ms=_now())
            )
        _print_entries(await ledger.by_status(["in_doubt"]), args.json, "nothing in doubt")
        return EXIT_OK

    return _with_ledger(args, run)


def cmd_failed(args: argparse.Namespace) -> int:
    async def run(ledger: Ledger) -> int:
        if args.resubmit:
            if not args.by:
                print("edge relay: --resubmit needs --by NAME", file=sys.stderr)
                return EXIT_FAILED
            return await _decide(ledger.resubmit(args.resubmit, who=args.by, now_ms=_now()))
        rejected = await ledger.by_status(["rejected"])
        held = await ledger.held()
        if args.json:
            _print_entries(rejected, True, "")
            for entry, blocker in held:
                print(json.dumps({**_row(entry), "held_by": blocker.idem_key}))
            return EXIT_OK
        _print_entries(rejected, False, "no rejected postings")
        if held:
            print(f"held behind a rejected one of their operation ({len(held)}):")
            _print_entries([entry for entry, _ in held], False, "")
        return EXIT_OK

    return _with_ledger(args, run)


def cmd_stats(args: argparse.Namespace) -> int:
    async def run(ledger: Ledger) -> int:
        since = _now() - int(args.hours * 3600 * 1000)
        table = latency_table(await ledger.latencies(since))
        counts = await ledger.counts()
        if args.json:
            print(json.dumps({"latency": table, "ledger": counts}))
            return EXIT_OK
        print(f"confirmation latency (machine event -> ERP posted), last {args.hours:g} h")
        if not table:
            print("  no postings")
        else:
            head = ("work center", "erp", "count", "p50 ms", "p95 ms", "max ms")
            print("  {:<14}{:<6}{:>7}{:>10}{:>10}{:>10}".format(*head))
            for r in table:
                print(
                    f"  {r['work_center']:<14}{r['erp']:<6}{r['count']:>7}"
                    f"{r['p50_ms']:>10}{r['p95_ms']:>10}{r['max_ms']:>10}"
                )
        print("ledger: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
        return EXIT_OK

    return _with_ledger(args, run)


def _now() -> int:
    from edge.relay.service import wall_ms

    return wall_ms()


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``edge relay ...`` to the ``edge`` parser (called from ``edge.cli``)."""
    relay = sub.add_parser("relay", help="the ERP relay: run it, and its tools")
    rsub = relay.add_subparsers(dest="relay_command", required=True)

    def common(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("-c", "--config", help=f"the relay's config file (default {DEFAULT_PATH})")
        return p

    common(rsub.add_parser("run", help="run the relay")).set_defaults(fn=cmd_run)
    common(rsub.add_parser("check-config", help="read and validate the config")).set_defaults(
        fn=cmd_check_config
    )
    doubt = common(rsub.add_parser("doubt", help="postings in doubt, and resolving one"))
    doubt.add_argument("--json", action="store_true", help="JSON lines")
    doubt.add_argument("--resolve", metavar="IDEM_KEY", help="the posting a person checked")
    doubt.add_argument("--posted", metavar="K=V,...", help="the ERP has it: its document keys")
    doubt.add_argument("--repost", action="store_true", help="the ERP does not have it: post it")
    doubt.add_argument("--by", help="who decided (kept in the ledger)")
    doubt.set_defaults(fn=cmd_doubt)
    failed = common(rsub.add_parser("failed", help="postings the ERP rejected, and resubmitting"))
    failed.add_argument("--json", action="store_true", help="JSON lines")
    failed.add_argument(
        "--resubmit", metavar="IDEM_KEY", help="post it again (corrected in the ERP)"
    )
    failed.add_argument("--by", help="who resubmitted (kept in the ledger)")
    failed.set_defaults(fn=cmd_failed)
    stats = common(rsub.add_parser("stats", help="confirmation latency per work center and ERP"))
    stats.add_argument("--hours", type=float, default=24.0, help="look back this far (24)")
    stats.add_argument("--json", action="store_true", help="one JSON document")
    stats.set_defaults(fn=cmd_stats)
