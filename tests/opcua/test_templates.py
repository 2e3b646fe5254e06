"""The OPC UA mapping templates in config/opcua load, and their state tables read right."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.config import load_config
from edge.domain.inputs import MachineState
from edge.sources.opcua_templates import StateTranslator

TEMPLATES = Path(__file__).resolve().parents[2] / "config" / "opcua"
BASE = """
[gateway]
edge_id = "wc-1"
work_center = "WC1"

[[counting.sources]]
name = "good"
kind = "good"

[[counting.sources]]
name = "scrap"
kind = "scrap"
"""


@pytest.mark.parametrize("snippet", sorted(TEMPLATES.glob("*.toml")), ids=lambda p: p.stem)
def test_each_template_block_loads_into_a_config(tmp_path: Path, snippet: Path) -> None:
    path = tmp_path / "edge.toml"
    path.write_text(BASE + snippet.read_text())
    cfg = load_config(path, env={})
    assert cfg.sources.opcua[0].template == snippet.stem


@pytest.mark.parametrize(
    ("template", "raw", "state"),
    [
        ("machinery", "Executing", MachineState.RUNNING),
        ("machinery", "NotExecuting", MachineState.IDLE),
        ("machinery", "OutOfService", MachineState.DOWN),
        ("machinery", "Setup", MachineState.SETUP),
        ("packml", "Execute", MachineState.RUNNING),
        ("packml", 6, MachineState.RUNNING),
        ("packml", "Held", MachineState.DOWN),
        ("packml", "Suspended", MachineState.IDLE),
        ("weihenstephan", "Tailback", MachineState.IDLE),
        ("weihenstephan", "EquipmentFailure", MachineState.DOWN),
        ("euromap77", "PRODUCTION", MachineState.RUNNING),
        ("euromap77", "START_UP", MachineState.SETUP),
        ("plain", True, MachineState.RUNNING),
        ("plain", "down", MachineState.DOWN),
    ],
)
def test_state_values_translate(template: str, raw: object, state: MachineState) -> None:
    assert StateTranslator(template).translate(raw) is state


def test_state_map_overrides_and_unknown_values_are_none() -> None:
    t = StateTranslator("packml", {"Warmup": "setup", "Held": "idle"})
    assert t.translate("warm up") is MachineState.SETUP
    assert t.translate("Held") is MachineState.IDLE
    assert t.translate("Dancing") is None
