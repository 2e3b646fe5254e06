"""Central's shift calendar in the master data message: weekdays, breaks, holidays and planned
downtime are read into the core's terms; what cannot be a calendar is refused naming the field
(and so never reaches the core)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from pydantic import ValidationError

from edge.sync.contract import MasterDataBody
from edge.sync.downlink import _master_data


def body(**changes: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "version": 2,
        "stop_reasons": [{"code": "M01", "text": "Material missing"}],
        "shifts": [
            {
                "name": "early",
                "start": "06:00",
                "end": "14:00",
                "weekdays": ["mon", "fri"],
                "breaks": [{"name": "b", "start": "09:00", "end": "09:15"}],
            }
        ],
        "holidays": ["2026-12-25"],
        "planned_downtime": [
            {"start": "2026-12-28T06:00:00Z", "end": "2026-12-28T07:00:00Z", "reason": "PM"}
        ],
    }
    out.update(changes)
    return out


def test_the_calendar_reaches_the_core() -> None:
    md = _master_data(MasterDataBody.model_validate(body()), None).master_data
    (early,) = md.shifts or ()
    assert (early.weekdays, early.breaks) == (frozenset({0, 4}), (("b", 540, 15),))
    assert md.holidays == (dt.date(2026, 12, 25),)
    start = int(dt.datetime(2026, 12, 28, 6, tzinfo=dt.UTC).timestamp() * 1000)
    assert md.planned_downtime == ((start, start + 3_600_000, "PM"),)


def shift(**changes: Any) -> list[dict[str, Any]]:
    return [{**body()["shifts"][0], **changes}]


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"shifts": shift(weekdays=["monday"])}, "weekdays"),
        ({"shifts": shift(weekdays=[])}, "weekdays"),
        ({"shifts": shift(breaks=[{"name": "b", "start": "15:00", "end": "15:10"}])}, "not inside"),
        (
            {"shifts": shift(breaks=[{"name": "b", "start": "09:00", "end": "09:30"}] * 2)},
            "overlap",
        ),
        (
            {
                "shifts": [
                    {"name": "n", "start": "22:00", "end": "08:00", "weekdays": ["sun"]},
                    {"name": "e", "start": "06:00", "end": "14:00", "weekdays": ["mon"]},
                ]
            },
            "overlap",
        ),
        ({"holidays": ["25.12.2026"]}, "holidays"),
        (
            {"planned_downtime": [{"start": "2026-12-28T06:00:00", "end": "2026-12-28T07:00:00"}]},
            "planned_downtime.0.start",
        ),
        (
            {
                "planned_downtime": [
                    {"start": "2026-12-28T07:00:00Z", "end": "2026-12-28T06:00:00Z"}
                ]
            },
            "end must be after start",
        ),
        ({"holidays": ["2026-12-25"] * 1001}, "holidays"),
    ],
)
def test_what_cannot_be_a_calendar_is_refused_naming_it(changes: dict[str, Any], says: str) -> None:
    with pytest.raises(ValidationError) as caught:
        MasterDataBody.model_validate(body(**changes))
    assert says in str(caught.value)
