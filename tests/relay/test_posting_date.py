"""A confirmation whose posting date cannot be true is refused by the relay, never posted:
a gateway that booted without a real-time clock dates its confirmations 1970 until NTP sets
its clock (tests/reliability/test_chain.py runs that through the whole chain)."""

from __future__ import annotations

import datetime as dt

import pytest

from edge.relay.service import implausible_date
from tests.relay.builders import posting

NOW_MS = int(dt.datetime(2026, 12, 3, 10, 0, tzinfo=dt.UTC).timestamp() * 1000)


@pytest.mark.parametrize(
    ("day", "why"),
    [
        ("1970-12-06", "posting date 1970-12-06 cannot be true (before 2025-01-01)"),
        ("2024-12-31", "posting date 2024-12-31 cannot be true (before 2025-01-01)"),
        ("2026-12-05", "posting date 2026-12-05 cannot be true (after 2026-12-04, by the relay"),
        ("2099-01-01", "posting date 2099-01-01 cannot be true (after 2026-12-04"),
        ("2026-13-45", "posting date '2026-13-45' is not a date"),
        ("2026-02-30", "posting date '2026-02-30' is not a date"),
    ],
)
def test_a_date_before_any_gateway_ran_or_after_tomorrow_is_refused(day: str, why: str) -> None:
    said = implausible_date(posting(posting_date=day), NOW_MS)
    assert said is not None
    assert said.startswith(why), said


@pytest.mark.parametrize("day", ["2025-01-01", "2026-01-15", "2026-12-03", "2026-12-04", ""])
def test_a_plausible_date_or_none_goes(day: str) -> None:
    # tomorrow too: a plant east of UTC is a day ahead of the relay's UTC date
    assert implausible_date(posting(posting_date=day), NOW_MS) is None


def test_a_period_that_ends_before_it_starts_is_refused() -> None:
    hour = 3_600_000
    backwards = posting(period_start_ms=NOW_MS, period_end_ms=NOW_MS - hour)
    said = implausible_date(backwards, NOW_MS)
    assert said is not None
    assert said.startswith(
        "its period ends (2026-12-03T09:00:00+00:00) before it starts (2026-12-03T10:00:00+00:00)"
    ), said
    assert (
        implausible_date(posting(period_start_ms=NOW_MS - hour, period_end_ms=NOW_MS), NOW_MS)
        is None
    )
    assert implausible_date(posting(period_start_ms=NOW_MS, period_end_ms=NOW_MS), NOW_MS) is None
