"""The [scanner] table (edge.scanners.config): defaults, bounds, and problems naming the field
and the value."""

from __future__ import annotations

import tomllib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.scanners.config import ScannerConfig, ScannerConfigError, load_scanner

EXAMPLE = r"""
[scanner]
enabled = true
kind = "hid"
device = "/dev/input/by-id/usb-Scanner-event-kbd"
layout = "de"
max_length = 128
separator_keys = [66]
fnc1 = ["<GS>", "~"]
operation = 'OP(?P<order>\d{1,12})/(?P<operation>\d{4})'
badge = 'B(?P<badge>\d{4,10})'
component = 'M(?P<material>[A-Z0-9-]{1,18})\+(?P<batch>[A-Z0-9]{1,10})'
read_timeout_s = 1
"""


def test_the_example_loads() -> None:
    cfg = load_scanner(tomllib.loads(EXAMPLE)["scanner"])
    assert (cfg.enabled, cfg.kind, cfg.layout, cfg.max_length) == (True, "hid", "de", 128)
    assert cfg.read_timeout_s == 1.0
    assert [p.kind for p in cfg.patterns()] == ["operation", "badge", "component"]


def test_defaults_are_off_and_valid() -> None:
    cfg = ScannerConfig()
    assert not cfg.enabled
    assert cfg.fnc1 == ["<GS>", "^"]
    assert [p.kind for p in cfg.patterns()] == ["operation", "badge"]


@pytest.mark.parametrize(
    ("table", "field", "words"),
    [
        ({"baudrate": 9601}, "scanner.baudrate", "9601 is none of"),
        ({"enabled": True}, "scanner.device", "needed when the scanner is enabled"),
        ({"device": "ttyUSB0"}, "scanner.device", "'ttyUSB0' must be an absolute path"),
        ({"device": "/dev/tty USB0"}, "scanner.device", "spaces"),
        ({"kind": "usb"}, "scanner.kind", "'usb'"),
        ({"layout": "fr"}, "scanner.layout", "'fr'"),
        ({"terminator": "nul"}, "scanner.terminator", "'nul'"),
        ({"max_length": 0}, "scanner.max_length", "got 0"),
        ({"max_length": 5000}, "scanner.max_length", "got 5000"),
        ({"read_timeout_s": 0.0}, "scanner.read_timeout_s", "got 0.0"),
        ({"read_timeout_s": float("nan")}, "scanner.read_timeout_s", "finite"),
        ({"reconnect_s": 5.0, "reconnect_max_s": 1.0}, "scanner.reconnect_max_s", "below"),
        ({"separator_keys": [0]}, "scanner.separator_keys.0", "got 0"),
        ({"fnc1": ["0"]}, "scanner.fnc1", "'0' would be mistaken for data"),
        ({"fnc1": ["GS"]}, "scanner.fnc1", "'GS' would be mistaken"),
        ({"fnc1": [""]}, "scanner.fnc1", "1-8 characters"),
        ({"operation": "OP(\\d+"}, "scanner.operation", "no regular expression"),
        ({"badge": "B\\d{99999999999}"}, "scanner.badge", "repetition number is too large"),
        ({"operation": "OP(?P<order>\\d+)"}, "scanner.operation", "(?P<operation>...)"),
        ({"component": "M(?P<batch>\\d+)"}, "scanner.component", "(?P<material>...)"),
        ({"badge": "B?\\d*"}, "scanner.badge", "matches an empty code"),
        ({"badge": 12}, "scanner.badge", "got 12"),
        ({"baudrat": 9600}, "scanner.baudrat", "Extra inputs"),
    ],
)
def test_problems_name_the_field_and_value(
    table: dict[str, object], field: str, words: str
) -> None:
    with pytest.raises(ScannerConfigError) as info:
        load_scanner(table)
    line = next((p for p in info.value.problems if p.startswith(field + ":")), None)
    assert line is not None, info.value.problems
    assert words in line


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from([*sorted(ScannerConfig.model_fields), "other"]),
        st.one_of(
            st.none(),
            st.booleans(),
            st.integers(-(10**12), 10**12),
            st.floats(allow_nan=True),
            st.text(max_size=30),
            st.text("(?P<>orderation)\\d{}+*9", max_size=30),
            st.lists(st.one_of(st.integers(-5, 800), st.text(max_size=5)), max_size=10),
        ),
        max_size=6,
    )
)
def test_any_table_loads_or_is_refused_naming_fields(table: dict[str, object]) -> None:
    problems: list[str] = []
    try:
        cfg = load_scanner(table)
    except ScannerConfigError as exc:
        problems = exc.problems
    else:
        assert isinstance(cfg, ScannerConfig)
        assert len(cfg.patterns()) <= 3
        return
    assert problems
    assert all(p.startswith("scanner") for p in problems)
