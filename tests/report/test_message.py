"""The report as a message to central planning (``_mes_v1/report/drift``): the body the command
prints, enveloped as the uplink envelopes a stored body, is valid against the published JSON
Schema and the model; every number in it is bounded, and a value beyond a bound is refused."""

from __future__ import annotations

import copy
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest
from pydantic import ValidationError

from edge.domain.drift import (
    MAX_ROWS,
    DriftSettings,
    Figure,
    OperationActuals,
    Period,
    drift_payload,
    drift_report,
    report_of,
)
from edge.report import csv_text, read_work_center
from edge.sync import asyncapi
from edge.sync.contract import DriftReportBody, Envelope, envelope_json, topic
from tests.report.floor import wall_ms
from tests.report.year import YEAR_S, generate

CONTRACT = Path(__file__).resolve().parents[2] / "contract"
TOPIC = topic("_mes_v1/report/drift")


def schema() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(
        (CONTRACT / "schemas" / asyncapi.schema_file_name(TOPIC)).read_text()
    )
    return data


def enveloped(body: dict[str, object]) -> Any:
    """The wire form, as the uplink writes it: the envelope's head around the stored body."""
    text = envelope_json(
        json.dumps(body, separators=(",", ":")),
        schema=TOPIC.schema,
        msg_id="0190f3c0-4051-7c6d-8e7f-8a9b0c1d2e40",
        idem_key=None,
        edge_id="wc-press-07",
        boot_seq=3,
        seq=1200,
        ts_event_ms=wall_ms(YEAR_S),
        ts_sent_ms=wall_ms(YEAR_S) + 40,
        historical=False,
    )
    return json.loads(text)


@pytest.fixture(scope="module")
def body(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    db = tmp_path_factory.mktemp("year") / "edge.db"
    generate(db)
    wc = read_work_center(db)
    assert wc is not None
    report = drift_report(
        wc.operations.values(), wc.stops.values(), wc.master_data,
        Period(wall_ms(-86_400), wall_ms(YEAR_S + 86_400)), work_center=wc.rules.work_center,
    )  # fmt: skip
    return drift_payload(report, wall_ms(YEAR_S))


def test_the_year_s_report_is_valid_against_the_published_schema_and_the_model(
    body: dict[str, object],
) -> None:
    message = enveloped(body)
    jsonschema.Draft202012Validator(schema()).validate(message)
    parsed = Envelope[DriftReportBody].model_validate(message)
    assert parsed.body.flagged == 3
    assert len(parsed.body.rows) == 10
    assert parsed.body.micro_stops == "in_cycle"
    rows: Any = body["rows"]
    assert [r.material for r in parsed.body.rows] == [r["material"] for r in rows]
    assert [r.parts for r in parsed.body.rows] == [Decimal(r["parts"]) for r in rows]
    assert message["schema"] == "mes.routing-drift/1"


def test_every_number_in_the_schema_is_bounded() -> None:
    unbounded: list[str] = []

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            if node.get("type") in ("number", "integer") and where.split("/")[1] == "body":
                low = "minimum" in node or "exclusiveMinimum" in node
                high = "maximum" in node or "exclusiveMaximum" in node
                if not (low and high):
                    unbounded.append(where)
            for key, value in node.items():
                walk(value, f"{where}/{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{where}/{i}")

    s = schema()
    for name, definition in s.get("$defs", {}).items():
        walk(definition, f"/body/{name}")
    walk(s["properties"]["body"], "/body")
    assert not unbounded, unbounded
    assert s["$defs"]["DriftReportBody"]["properties"]["rows"]["maxItems"] == MAX_ROWS


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("threshold_pct",), 0),
        (("rows", 0, "cycle", "drift_pct"), 1e10),
        (("rows", 0, "cycle", "drift_pct"), -101),
        (("rows", 0, "run_h"), -1),
        (("rows", 0, "setup", "median_s"), 1e13),
        (("rows", 0, "impact_h"), 2e12),
        (("rows", 0, "operations"), 0),
        (("rows", 0, "parts"), -5),
        (("rows", 0, "material"), "M" * 41),
        (("micro_stops",), "sometimes"),
    ],
)
def test_a_value_beyond_its_bound_is_refused(
    body: dict[str, object], path: tuple[str | int, ...], value: object
) -> None:
    bad: Any = copy.deepcopy(body)
    target = bad
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(enveloped(bad), schema())
    with pytest.raises(ValidationError):
        DriftReportBody.model_validate(bad)


def test_extreme_reports_are_capped_at_the_bounds_and_stay_valid() -> None:
    """A tiny standard and a huge run: the payload caps drift and hours where the bounds are,
    and more rows than a message holds keep the largest impacts."""
    samples = [
        OperationActuals(
            f"{i}/0010",
            f"M{i:04d}",
            "0010",
            wall_ms(10),
            "",
            "PC",
            Decimal("0.000001"),
            0.0,
            1e9,
            0.0,
            0.0,
            0.0,
            0.0,
            1e-9,
        )
        for i in range(MAX_ROWS + 20)
    ]
    report = report_of(samples, Period(0, wall_ms(100)), DriftSettings(min_operations=1))
    assert len(report.rows) == MAX_ROWS + 20
    payload = drift_payload(report, wall_ms(100))
    rows: Any = payload["rows"]
    assert len(rows) == MAX_ROWS
    assert payload["materials"] == MAX_ROWS + 20
    jsonschema.Draft202012Validator(schema()).validate(enveloped(payload))
    DriftReportBody.model_validate(payload)
    assert rows[0]["cycle"]["drift_pct"] == 1e9
    # the command's CSV has every row
    every = drift_payload(report, wall_ms(100), top=None)
    assert len(csv_text(every).splitlines()) == 1 + MAX_ROWS + 20
    assert isinstance(report.rows[0].cycle, Figure)
