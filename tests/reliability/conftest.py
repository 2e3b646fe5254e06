"""The long chain runs' summary: each test that asks for ``campaign_record`` gets a
:class:`CampaignRecord` (tests/reliability/campaign.py) it adds its judged rounds and its
faults to (the numbers come from ``judge`` on the three ledgers); at the end of the run pytest
prints one table of them, whatever the test's outcome (a failed run's record shows what it had
judged so far)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.reliability.campaign import RECORDS, CampaignRecord


@pytest.fixture
def campaign_record(request: pytest.FixtureRequest) -> Iterator[CampaignRecord]:
    record = CampaignRecord(request.node.name)
    request.config.stash.setdefault(RECORDS, []).append(record)
    yield record
    record.wall_s = time.monotonic() - record.started
    rep = getattr(request.node, "rep_call", None)
    record.outcome = "no call" if rep is None else rep.outcome


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report = yield
    if report.when == "call":
        item.rep_call = report  # type: ignore[attr-defined]
    return report


COLUMNS = (
    ("test", "<"),
    ("cycles", ">"),
    ("faults", "<"),
    ("ops", ">"),
    ("parts", ">"),
    ("confirmations", ">"),
    ("in SAP", ">"),
    ("lost", ">"),
    ("doubled", ">"),
    ("orphans", ">"),
    ("stops missed", ">"),
    ("wall", ">"),
    ("outcome", "<"),
)


def rows(records: list[CampaignRecord]) -> list[tuple[str, ...]]:
    out = []
    for r in records:
        out.append(
            (
                r.test,
                f"{r.cycles:,}",
                ", ".join(f"{k} {n:,}" for k, n in r.faults.items()) or "-",
                f"{r.ops:,}",
                f"{r.parts:,}",
                f"{r.confirmations:,}",
                f"{r.posted:,}",
                str(r.lost),
                str(r.doubled),
                str(r.orphans),
                f"{r.stops_missed} of {r.stops}",
                f"{r.wall_s:,.0f} s",
                r.outcome,
            )
        )
    return out


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    records = terminalreporter.config.stash.get(RECORDS, [])
    if not records:
        return
    table = rows(records)
    widths = [max(len(h), *(len(row[i]) for row in table)) for i, (h, _) in enumerate(COLUMNS)]

    def line(cells: tuple[str, ...]) -> str:
        return " | ".join(
            f"{c:{a}{w}}" for c, (_, a), w in zip(cells, COLUMNS, widths, strict=True)
        )

    terminalreporter.write_sep("=", "the chain's long runs (judged ledgers)")
    terminalreporter.write_line(line(tuple(h for h, _ in COLUMNS)))
    terminalreporter.write_line("-+-".join("-" * w for w in widths))
    for row in table:
        terminalreporter.write_line(line(row))
    total = [r for r in records if r.outcome != "running"]
    terminalreporter.write_line(
        f"{sum(r.cycles for r in records):,} cycles in all; "
        f"{sum(r.lost + r.doubled + r.orphans + r.stops_missed for r in records)} "
        f"lost/doubled/orphans/stops missed; {len(total)} of {len(records)} finished"
    )
