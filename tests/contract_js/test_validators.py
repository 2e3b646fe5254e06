"""The published contract read by validators we did not write (npm, tests/contract_js/validate.js):
the AsyncAPI document by the official ``@asyncapi/parser`` with no error and no warning, and
every JSON Schema compiled by Ajv for draft 2020-12 in strict mode (unknown keywords, ambiguous
types and the like are errors there). A broken copy shows the two really look."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from edge.sync.contract import CHANNELS, CONTRACT_VERSION
from tests.contract_js.wire import CONTRACT, run_validators, validators

pytestmark = pytest.mark.timeout(300)  # a first npm install included

ERROR, WARNING = 0, 1


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    return run_validators(validators())


def test_the_asyncapi_parser_finds_no_error_and_no_warning(report: dict[str, Any]) -> None:
    parser = report["parser"]
    assert parser["parsed"]
    serious = [d for d in parser["diagnostics"] if d["severity"] in (ERROR, WARNING)]
    assert serious == [], serious
    assert sorted(parser["channels"]) == sorted(t.address for t in CHANNELS)
    doc = json.loads((CONTRACT / "asyncapi.json").read_text())
    assert sorted(parser["operations"]) == sorted(doc["operations"])
    assert doc["info"]["version"] == CONTRACT_VERSION


def test_every_schema_compiles_in_ajv_strict_mode_for_draft_2020_12(
    report: dict[str, Any],
) -> None:
    schemas = report["schemas"]
    assert schemas["errors"] == []
    assert schemas["compiled"] == len(CHANNELS) == len(list((CONTRACT / "schemas").glob("*.json")))


def test_the_validators_refuse_a_broken_contract(tmp_path: Path) -> None:
    broken = tmp_path / "contract"
    shutil.copytree(CONTRACT, broken)
    doc = json.loads((broken / "asyncapi.json").read_text())
    first = next(iter(doc["operations"].values()))
    first["channel"] = {"$ref": "#/channels/no.such.channel"}
    (broken / "asyncapi.json").write_text(json.dumps(doc))
    stop = broken / "schemas" / "_mes_v1.stop.json"
    schema = json.loads(stop.read_text())
    schema["properties"]["seq"]["minimun"] = 1  # a typo that a lax validator ignores
    stop.write_text(json.dumps(schema))
    result = run_validators(validators(), contract=broken)
    assert [d for d in result["parser"]["diagnostics"] if d["severity"] == ERROR]
    assert [e["schema"] for e in result["schemas"]["errors"]] == ["_mes_v1.stop.json"]
    assert "minimun" in result["schemas"]["errors"][0]["error"]
