"""``edge report drift``: the ERP's routing standards against what the work center did.

The quarterly check of setup and cycle standards, from the gateway's own database: the
operations completed in a period, per material and operation, their actual setup and cycle
times (median and spread) against the standards of the dispatch list, drift beyond a threshold
flagged, ranked by hours of capacity misplanned. The figures come from
:func:`edge.domain.drift.drift_report` and :func:`~edge.domain.drift.drift_payload`, the same
definition the message to central planning (``_mes_v1/report/drift``) carries.

Outputs: a table on the terminal (or ``--json``: the message body), a CSV, and a PNG plot of
actual against standard (with the optional extra ``plot``: ``pip install 'edge-gateway[plot]'``;
without matplotlib the PNG is skipped with one line saying so).

The database is only read: opened read-only through SQLite's URI (``mode=ro``; with no
write-ahead log beside it, also ``immutable=1``, so not even a ``-shm`` file is made), beside
a running daemon too, in one snapshot. Every stored operation and stop is read, also those
that left the daemon's memory (``retired_ms``, edge.domain.retire): a quarter's history is in
the database, not in the core. A missing, damaged or foreign database is named with its path,
exit 2, and nothing is created.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import sqlite3
import sys
import time
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from edge.config import GatewayConfig, ReportSection, config_path, load_config
from edge.domain.core import WorkCenter
from edge.domain.drift import (
    DEFAULT_MIN_OPERATIONS,
    DEFAULT_THRESHOLD,
    DriftReport,
    DriftSettings,
    Period,
    drift_payload,
    drift_report,
    report_of,
)
from edge.domain.inputs import DriftReported
from edge.logging import get_logger
from edge.ports import InputSink
from edge.store import codec
from edge.store.schema import PROJECTION_TABLES, read_only

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
DEFAULT_DAYS = 90
PLOT_MISSING = (
    "edge report drift: no PNG: matplotlib is not installed "
    "(pip install 'edge-gateway[plot]'); the CSV and the table are complete without it"
)


class ReportError(Exception):
    """What keeps the report from being made, in words naming the file."""


# ---------------------------------------------------------------------------- the schedule


def last_review_ms(db: Path) -> int | None:
    """When the newest routing-drift review was sent (its event, while retention keeps the
    events: ``[retention] journal_days``); None if none is stored."""
    try:
        conn = sqlite3.connect(f"{db.absolute().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise ReportError(f"{db}: cannot open the database: {exc}") from None
    try:
        row = conn.execute(
            "SELECT MAX(at_wall_ms) FROM event WHERE type = 'routing_drift'"
        ).fetchone()
    except sqlite3.DatabaseError as exc:
        raise ReportError(f"{db}: not a readable gateway database: {exc}") from None
    finally:
        conn.close()
    return None if row is None or row[0] is None else int(row[0])


def scheduled_review(db: Path, r: ReportSection, now_ms: int) -> dict[str, object]:
    """The review the schedule sends: the last ``drift_days`` x 24 hours up to ``now_ms``,
    from every stored operation (also those that left the daemon's memory), as the message
    body (at most the message's rows)."""
    settings = DriftSettings(
        threshold=r.drift_threshold_pct / 100,
        min_operations=r.drift_min_operations,
        micro_stops_in_cycle=r.drift_micro_stops == "in-cycle",
    )
    period = Period(now_ms - r.drift_days * 86_400_000, now_ms)
    return drift_payload(review(read_work_center(db), period, settings, ""), now_ms)


def review(
    wc: WorkCenter | None, period: Period, settings: DriftSettings, center: str
) -> DriftReport:
    """The report of ``wc``'s stored operations in ``period``; for a database the gateway
    has not run on yet (``wc`` None) the empty one of work center ``center``."""
    if wc is None:  # nothing was completed
        return report_of((), period, settings, work_center=center)
    return drift_report(
        wc.operations.values(),
        wc.stops.values(),
        wc.master_data,
        period,
        settings,
        work_center=wc.rules.work_center,
    )


async def drift_schedule(cfg: GatewayConfig, sink: InputSink) -> None:
    """Send the routing-drift review every ``[report] drift_every_days`` (0: never): the first
    at the start when none was sent before (or retention deleted its event). The report is
    made off the loop from the database, read-only; a failure is logged and tried again at
    the next check, and never stops the gateway."""
    r = cfg.report
    if r.drift_every_days <= 0:
        return
    log = get_logger("edge.report")
    db = cfg.store.path
    every_ms = r.drift_every_days * 86_400_000
    try:
        last = await asyncio.to_thread(last_review_ms, db)
    except ReportError as exc:
        log.warning("the last routing-drift review cannot be read", error=str(exc))
        last = None
    while True:
        now = sink.now()
        if last is None or now.wall_ms - last >= every_ms:
            try:
                body = await asyncio.to_thread(scheduled_review, db, r, now.wall_ms)
            except (ReportError, ValueError) as exc:
                log.warning("routing-drift review not made", error=str(exc))
            else:
                out = await sink.submit(DriftReported(json.dumps(body), now))
                if out.accepted:
                    last = now.wall_ms
                    log.info(
                        "routing-drift review sent",
                        days=r.drift_days,
                        operations=body["operations"],
                        flagged=body["flagged"],
                    )
                else:
                    reason = out.rejection.message if out.rejection else None
                    log.warning("routing-drift review refused", reason=reason)
        await asyncio.sleep(r.drift_check_s)


# ---------------------------------------------------------------------------- wiring


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``edge report ...`` to the ``edge`` parser (called from ``edge.cli``)."""
    report = sub.add_parser("report", help="reports from the gateway's database")
    rsub = report.add_subparsers(dest="report_command", required=True)
    drift = rsub.add_parser(
        "drift",
        help="actual setup and cycle times against the ERP's standards, per material",
        description="Compares the actual setup and cycle times of the operations completed in "
        "a period with the standards of the dispatch list, per material and operation "
        "(median and interquartile spread), flags drift beyond a threshold and ranks by hours "
        "of capacity misplanned. Reads the database only.",
    )
    drift.add_argument("-c", "--config", help="config file (default: $EDGE_CONFIG or ...)")
    drift.add_argument("--db", help="database file (default: [store] path of the config)")
    drift.add_argument("--since", help="first day, YYYY-MM-DD in the plant's time zone")
    drift.add_argument("--until", help="last day (included), YYYY-MM-DD")
    drift.add_argument(
        "--days",
        type=int,
        default=DEFAULT_DAYS,
        help=f"without --since: this many days up to --until or now (default {DEFAULT_DAYS})",
    )
    drift.add_argument(
        "--threshold",
        type=float,
        default=DEFAULT_THRESHOLD * 100,
        help=f"flag drift beyond +/- this many percent (default {DEFAULT_THRESHOLD * 100:g})",
    )
    drift.add_argument(
        "--min-operations",
        type=int,
        default=DEFAULT_MIN_OPERATIONS,
        help=f"flag only with at least this many operations (default {DEFAULT_MIN_OPERATIONS})",
    )
    drift.add_argument(
        "--micro-stops",
        choices=("in-cycle", "excluded"),
        default="in-cycle",
        help="count micro-stops as run time of the actual cycle (default) or leave them out",
    )
    drift.add_argument("--top", type=int, default=10, help="rows in the table (default 10)")
    drift.add_argument(
        "--out-dir", default=".", help="where the CSV and PNG go (default: here; must exist)"
    )
    drift.add_argument("--csv", help="the CSV's file name (default: drift-<center>-<dates>.csv)")
    drift.add_argument("--png", help="the plot's file name (default: drift-<center>-<dates>.png)")
    drift.add_argument("--no-files", action="store_true", help="the table only, no CSV or PNG")
    drift.add_argument("--json", action="store_true", help="print the message body instead")
    drift.set_defaults(fn=cmd_drift)


# ---------------------------------------------------------------------------- reading


def read_work_center(db: Path) -> WorkCenter | None:
    """The work center as the database's projections hold it, read without writing anything."""
    with read_only(db, ReportError) as conn:
        docs = {
            table: dict(conn.execute(f"SELECT key, doc FROM {table} ORDER BY key").fetchall())
            for table in PROJECTION_TABLES
        }
        try:
            return codec.restore(docs)
        except ValueError as exc:
            raise ReportError(f"{db}: {exc}") from None


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ReportError(f"time zone {name!r} of the database is unknown here") from None


def _day(text: str, option: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ReportError(f"{option} {text!r}: not a date (YYYY-MM-DD)") from None


def period_of(
    since: str | None, until: str | None, days: int, zone: ZoneInfo, now_ms: int
) -> tuple[Period, str, str]:
    """The period from the options: local days, ``until`` included; and the first and last
    day as text (for file names)."""
    if days < 1:
        raise ReportError(f"--days {days}: must be 1 or more")

    def midnight(d: date) -> int:
        return int(datetime(d.year, d.month, d.day, tzinfo=zone).timestamp() * 1000)

    if until is not None:
        last = _day(until, "--until")
        end_ms = midnight(last + timedelta(days=1))
    else:
        end_ms = now_ms
        last = datetime.fromtimestamp(now_ms / 1000, tz=zone).date()
    if since is not None:
        first = _day(since, "--since")
        start_ms = midnight(first)
    elif until is not None:
        first = last - timedelta(days=days - 1)
        start_ms = midnight(first)
    else:  # the last ``days`` x 24 hours up to now
        start_ms = end_ms - days * 86_400_000
        first = datetime.fromtimestamp(start_ms / 1000, tz=zone).date()
    if end_ms <= start_ms:
        raise ReportError(f"--since {first} is after --until {last}: the period is empty")
    return Period(start_ms, end_ms), first.isoformat(), last.isoformat()


# ---------------------------------------------------------------------------- outputs

CSV_COLUMNS = (
    "rank",
    "material",
    "material_text",
    "operation",
    "unit",
    "operations",
    "parts",
    "flagged",
    "impact_h",
    "cycle_standard_s",
    "cycle_median_s",
    "cycle_q1_s",
    "cycle_q3_s",
    "cycle_drift_pct",
    "cycle_samples",
    "cycle_flagged",
    "cycle_impact_h",
    "cycle_standards_s",
    "setup_standard_s",
    "setup_median_s",
    "setup_q1_s",
    "setup_q3_s",
    "setup_drift_pct",
    "setup_samples",
    "setup_flagged",
    "setup_impact_h",
    "setup_standards_s",
    "run_h",
    "micro_stop_h",
    "planned_stop_h",
    "unplanned_stop_h",
    "micro_stops",
)


def csv_text(payload: dict[str, Any]) -> str:
    """One row per material and operation; ``micro_stops`` says how the cycle counted them."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in payload["rows"]:
        flat: dict[str, Any] = {**row, "micro_stops": payload["micro_stops"]}
        for part in ("cycle", "setup"):
            flat.update({f"{part}_{key}": value for key, value in row[part].items()})
        writer.writerow(["" if flat.get(c) is None else _cell(flat[c]) for c in CSV_COLUMNS])
    return out.getvalue()


def _cell(value: object) -> object:
    if isinstance(value, list):
        return " ".join(str(v) for v in value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    return value


def _num(value: float | None, places: int = 1) -> str:
    return "-" if value is None else f"{value:.{places}f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:+.1f} %"


def _standard(f: dict[str, Any], scale: float, places: int) -> str:
    if not f["standard_s"]:
        return "-"
    return _num(f["standard_s"] / scale, places) + ("*" if f["standards_s"] else "")


def _spread(f: dict[str, Any], places: int = 2) -> str:
    if f["q1_s"] is None:
        return "-"
    return f"{f['q1_s']:.{places}f}-{f['q3_s']:.{places}f}"


def table_text(payload: dict[str, Any], first: str, last: str, top: int) -> str:
    """The report for a terminal: what was counted how, then the top rows by impact."""
    d = payload["definitions"]
    lines = [
        f"Routing drift of work center {payload['work_center'] or '-'}, {first} .. {last}: "
        f"{payload['operations']} completed operations, {payload['materials']} material/"
        f"operation pairs, {payload['flagged']} flagged (beyond +/-{payload['threshold_pct']:g} %"
        f", at least {payload['min_operations']} operations)",
        f"  cycle:         {d['cycle']}",
        f"  micro-stops:   {d['micro_stops']}",
        f"  planned stops: {d['planned_stops']}",
        f"  other stops:   {d['unplanned_stops']}",
        f"  setup:         {d['setup']}",
        f"  impact:        {d['impact']}; + = the plan had too little time",
        "",
    ]
    head = (
        "rank", "material", "op", "ops", "parts", "cycle std s", "actual s", "IQR s", "drift",
        "setup std min", "actual min", "drift", "impact h", "",
    )  # fmt: skip
    body: list[tuple[str, ...]] = []
    for r in payload["rows"][:top]:
        c, s = r["cycle"], r["setup"]
        body.append(
            (
                str(r["rank"]),
                r["material"],
                r["operation"],
                str(r["operations"]),
                str(r["parts"]),
                _standard(c, 1, 2),
                _num(c["median_s"], 2),
                _spread(c),
                _pct(c["drift_pct"]),
                _standard(s, 60, 1),
                _num(None if s["median_s"] is None else s["median_s"] / 60),
                _pct(s["drift_pct"]),
                f"{r['impact_h']:+.1f}",
                " ".join(
                    word for word, on in (("CYCLE", c["flagged"]), ("SETUP", s["flagged"])) if on
                ),
            )
        )
    if not body:
        lines.append("no operation was completed in the period")
        return "\n".join(lines)
    widths = [max(len(row[i]) for row in (head, *body)) for i in range(len(head))]
    right = {0, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}
    for row in (head, *body):
        cells = [
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ]
        lines.append("  ".join(cells).rstrip())
    hidden = len(payload["rows"]) - len(body)
    if hidden > 0:
        lines.append(f"... {hidden} more rows in the CSV")
    if any("*" in cell for row in body for cell in row):
        lines.append(
            "* the standard changed in the period (the latest is shown): each operation's "
            "drift is against the standard it was dispatched with"
        )
    return "\n".join(lines)


def write_png(payload: dict[str, Any], path: Path, title: str) -> bool:
    """Actual against standard per material and operation, cycle and setup side by side;
    False (and nothing written) when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot as plt
    except ImportError:
        return False
    threshold = payload["threshold_pct"] / 100
    fig, axes = plt.subplots(1, 2, figsize=(13, 6))
    for ax, part, unit, scale in (
        (axes[0], "cycle", "s per unit", 1),
        (axes[1], "setup", "min", 60),
    ):
        # actual as the median of actual / standard times the standard in force, so that a
        # standard changed in the period lands where its drift says
        points = [
            (
                r[part]["standard_s"] / scale,
                r[part]["standard_s"] * (1 + r[part]["drift_pct"] / 100) / scale,
                r,
            )
            for r in payload["rows"]
            if r[part]["standard_s"] and r[part]["drift_pct"] is not None
        ]
        ax.set_title(f"{part}: actual against the ERP's standard")
        ax.set_xlabel(f"ERP standard, {unit}")
        ax.set_ylabel(f"actual, {unit}")
        if not points:
            ax.text(0.5, 0.5, "no values", ha="center", va="center", transform=ax.transAxes)
            continue
        high = max(max(x, y) for x, y, _ in points) * 1.15
        ax.plot([0, high], [0, high], color="black", linewidth=1, label="actual = standard")
        ax.fill_between(
            [0, high],
            [0, high * (1 - threshold)],
            [0, high * (1 + threshold)],
            color="green",
            alpha=0.12,
            label=f"within +/-{payload['threshold_pct']:g} %",
        )
        for x, y, r in points:
            flagged = r[part]["flagged"]
            ax.scatter([x], [y], color="red" if flagged else "tab:blue", zorder=3)
            if flagged:
                ax.annotate(
                    f"{r['material']}/{r['operation']}", (x, y), textcoords="offset points",
                    xytext=(4, 4), fontsize=8,
                )  # fmt: skip
        ax.set_xlim(0, high)
        ax.set_ylim(0, high)
        ax.legend(loc="upper left", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100)
    plt.close(fig)
    return True


# ---------------------------------------------------------------------------- the command


def _db_and_center(args: argparse.Namespace) -> tuple[Path, str]:
    if args.db:
        return Path(args.db), ""
    cfg = load_config(config_path(args.config))
    return Path(cfg.store.path), cfg.gateway.work_center


def cmd_drift(args: argparse.Namespace) -> int:
    try:
        return _drift(args)
    except ReportError as err:
        print(f"edge report drift: {err}", file=sys.stderr)
        return EXIT_USAGE


def _drift(args: argparse.Namespace) -> int:
    try:
        settings = DriftSettings(
            threshold=args.threshold / 100,
            min_operations=args.min_operations,
            micro_stops_in_cycle=args.micro_stops == "in-cycle",
        )
    except ValueError as exc:
        raise ReportError(str(exc).replace("threshold = ", "--threshold / 100 = ")) from None
    if args.top < 1:
        raise ReportError(f"--top {args.top}: must be 1 or more")
    db, center = _db_and_center(args)
    wc = read_work_center(db)
    zone = _zone(wc.rules.timezone if wc is not None else "UTC")
    now_ms = int(time.time() * 1000)
    period, first, last = period_of(args.since, args.until, args.days, zone, now_ms)
    if wc is not None:
        center = wc.rules.work_center
    report = review(wc, period, settings, center)
    payload = drift_payload(report, now_ms, top=None)  # every row, for the CSV
    if args.json:
        print(json.dumps(drift_payload(report, now_ms), indent=2))  # the message's body
    else:
        print(table_text(payload, first, last, args.top))
    if args.no_files:
        return EXIT_OK
    return _write_files(args, payload, center, first, last)


def _write_files(
    args: argparse.Namespace, payload: dict[str, Any], center: str, first: str, last: str
) -> int:
    out_dir = Path(args.out_dir)
    if not out_dir.is_dir():
        print(
            f"edge report drift: {out_dir}: no such folder; no CSV or PNG written", file=sys.stderr
        )
        return EXIT_FAILED
    stem = f"drift-{_safe(center) or 'work-center'}-{first}-{last}"
    csv_path = Path(args.csv) if args.csv else out_dir / f"{stem}.csv"
    png_path = Path(args.png) if args.png else out_dir / f"{stem}.png"
    note = sys.stderr if args.json else sys.stdout
    try:
        csv_path.write_text(csv_text(payload), encoding="utf-8")
        print(f"CSV: {csv_path}", file=note)
        title = f"Routing drift, {payload['work_center'] or 'work center'}, {first} .. {last}"
        if write_png(payload, png_path, title):
            print(f"PNG: {png_path}", file=note)
        else:
            print(PLOT_MISSING, file=sys.stderr)
    except OSError as exc:
        print(f"edge report drift: cannot write {exc.filename}: {exc.strerror}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)
