"""A shift's "HH:MM" times, read the same for the config and for central's shift calendar."""

from __future__ import annotations

import pytest

from edge.domain.rules import Shift, minute_of_day


@pytest.mark.parametrize(
    ("start", "end", "start_minute", "length"),
    [
        ("06:00", "14:00", 360, 480),
        ("22:00", "06:00", 1320, 480),  # past midnight
        ("00:00", "00:00", 0, 1440),  # end == start: a whole day
        ("06:00", "24:00", 360, 1080),  # 24:00: the midnight that ends the day
        ("00:00", "24:00", 0, 1440),
    ],
)
def test_a_shift_from_its_start_and_end(
    start: str, end: str, start_minute: int, length: int
) -> None:
    assert Shift.parse("A", start, end) == Shift("A", start_minute, length)


@pytest.mark.parametrize("text", ["24:00", "6:00", "06:60", "25:00", "0600", "", "ab:cd"])
def test_not_a_start_time(text: str) -> None:
    with pytest.raises(ValueError, match="HH:MM"):
        minute_of_day(text)


def test_24_00_only_ends_a_shift() -> None:
    assert minute_of_day("24:00", allow_24=True) == 1440
    with pytest.raises(ValueError, match="HH:MM"):
        Shift.parse("A", "24:00", "06:00")
