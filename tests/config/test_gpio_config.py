"""[gpio], [[sources.gpio]], [[operator.buttons]], [operator.stacklight]: loading and problems."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from edge.config import GatewayConfig, load_config
from edge.errors import MISSING, ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "example.toml"

BASE = """\
[gateway]
edge_id = "wc-test-01"
work_center = "TEST01"

[[counting.sources]]
name = "strokes"
kind = "good"
signal = "pulse"

[[counting.sources]]
name = "plc_scrap"
kind = "scrap"
"""

COUNTER = """
[[sources.gpio]]
name = "press_io"

[[sources.gpio.counters]]
counter = "{counter}"
pin = {pin}
"""


def load(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> GatewayConfig:
    path = tmp_path / "edge.toml"
    path.write_text(BASE + text, encoding="utf-8")
    return load_config(path, env={} if env is None else env)


def problems(tmp_path: Path, text: str) -> dict[str, tuple[object, str]]:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    return {p.field_path: (p.value, p.message) for p in info.value.problems}


def button(name: str, pin: int, action: str, extra: str = "") -> str:
    return f'\n[[operator.buttons]]\nname = "{name}"\npin = {pin}\naction = "{action}"\n{extra}\n'


def test_the_commented_example_is_valid_once_uncommented(tmp_path: Path) -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    part = text[text.index("# -- GPIO: pulse counters") :]
    toml = re.compile(r"^# (\[\[?[a-z_.]+\]\]?|[a-z_]+ = .*)$")
    lines = [m[1] for line in part.splitlines() if (m := toml.match(line))]
    # modbus_source goes only with output = "modbus"; the example shows the gpio wiring
    lines = [line for line in lines if not line.startswith("modbus_source")]
    assert len(lines) > 40
    path = tmp_path / "edge.toml"
    path.write_text(text + "\n" + "\n".join(lines) + "\n", encoding="utf-8")
    cfg = load_config(path, env={})
    assert cfg.gpio.pin_factory == "lgpio"
    (src,) = cfg.sources.gpio
    assert (src.name, src.batch_ms) == ("press_io", 100)
    (counter,) = src.counters
    assert (counter.counter, counter.pin, counter.active_high) == ("press_strokes", 17, False)
    actions = [b.action for b in cfg.operator.buttons]
    assert actions == [
        "start_production",
        "complete",
        "stop_reason_next",
        "stop_reason_confirm",
        "scrap_one",
        "call_help",
    ]
    light = cfg.operator.stacklight
    assert light is not None
    assert light.lamps == {"green": 20, "yellow": 21, "red": 12, "blue": 25, "buzzer": 24}


def test_defaults_and_an_environment_override(tmp_path: Path) -> None:
    cfg = load(
        tmp_path, COUNTER.format(counter="strokes", pin=17), {"EDGE_GPIO__PIN_FACTORY": "mock"}
    )
    assert cfg.gpio.pin_factory == "mock"
    entry = cfg.sources.gpio[0].counters[0]
    assert (entry.pull, entry.active, entry.active_high, entry.bounce_ms) == ("up", None, False, 5)
    assert cfg.sources.gpio[0].batch_ms == 100
    assert cfg.operator.buttons == []
    assert cfg.operator.stacklight is None
    # Nothing about GPIO configured: the defaults, nothing to run.
    assert load(tmp_path, "").sources.gpio == []


def test_bad_pin_numbers(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        COUNTER.format(counter="strokes", pin=40)
        + button("go", -1, "resume")
        + "\n[operator.stacklight]\ngreen = 28\n",
    )
    bcm = "should be a BCM GPIO number 0-27 (GPIO0-GPIO27 of the 40-pin header)"
    assert found["sources.gpio[press_io].counters.0.pin"] == (40, bcm)
    assert found["operator.buttons[go].pin"] == (-1, bcm)
    assert found["operator.stacklight.green"] == (28, bcm)


def test_a_pin_used_twice(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        COUNTER.format(counter="strokes", pin=17)
        + button("go", 17, "resume")
        + button("stop", 5, "interrupt")
        + "\n[operator.stacklight]\ngreen = 5\nred = 6\n",
    )
    assert found == {
        "operator.buttons[go].pin": (
            17,
            "GPIO pin 17 is already used by counter 'strokes' of [[sources.gpio]]",
        ),
        "operator.stacklight.green": (5, "GPIO pin 5 is already used by button 'stop'"),
    }
    # two lamps of one light on one pin: found by the light itself
    found = problems(tmp_path, "\n[operator.stacklight]\nred = 6\nyellow = 6\n")
    assert found == {"operator.stacklight.red": (6, "the yellow lamp is wired there too")}


def test_unknown_action(tmp_path: Path) -> None:
    found = problems(tmp_path, button("go", 5, "start"))
    value, message = found["operator.buttons[go].action"]
    assert value == "start"
    assert "'start_setup'" in message
    assert "'call_help'" in message


def test_unknown_or_absolute_counter(tmp_path: Path) -> None:
    found = problems(tmp_path, COUNTER.format(counter="strokez", pin=17))
    assert found["sources.gpio[press_io].counters.0.counter"] == (
        "strokez",
        'not a counter in [[counting.sources]] (one with signal = "pulse")',
    )
    found = problems(tmp_path, COUNTER.format(counter="plc_scrap", pin=17))
    value, message = found["sources.gpio[press_io].counters.0.counter"]
    assert value == "plc_scrap"
    assert "signal = 'absolute'" in message
    assert 'set signal = "pulse"' in message


def test_one_counter_fed_by_two_pins(tmp_path: Path) -> None:
    text = COUNTER.format(counter="strokes", pin=17) + (
        '\n[[sources.gpio.counters]]\ncounter = "strokes"\npin = 18\n'
    )
    found = problems(tmp_path, text)
    assert found["sources.gpio[press_io].counters.1.counter"] == (
        "strokes",
        "already fed by GPIO pin 17: it would count twice",
    )


def test_complete_needs_a_long_press(tmp_path: Path) -> None:
    found = problems(tmp_path, button("done", 5, "complete", "long_press_s = 0.5"))
    value, message = found["operator.buttons[done].long_press_s"]
    assert value == 0.5
    assert "long_press_s >= 1" in message
    cfg = load(tmp_path, button("done", 5, "complete", "long_press_s = 1.5"))
    assert cfg.operator.buttons[0].long_press_s == 1.5


def test_action_specific_keys(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        button("help", 5, "call_help") + button("scrap", 6, "scrap_one", 'category = "quality"'),
    )
    assert found["operator.buttons[help].category"] == (
        MISSING,
        "required for action = 'call_help'",
    )
    assert found["operator.buttons[scrap].reason"] == (MISSING, "required for action = 'scrap_one'")
    assert found["operator.buttons[scrap].category"] == ("quality", "only for action = 'call_help'")
    # the categories are [andon]'s: checked once every button is valid by itself
    found = problems(tmp_path, button("mat", 7, "call_help", 'category = "coffee"'))
    assert found["operator.buttons[mat].category"] == (
        "coffee",
        "not one of [andon].categories (material, maintenance, quality, supervisor)",
    )


def test_floating_input_needs_its_level_and_names_are_unique(tmp_path: Path) -> None:
    found = problems(tmp_path, button("go", 5, "resume", 'pull = "off"'))
    assert found["operator.buttons[go].active"] == (
        MISSING,
        'required with pull = "off": "low" or "high"',
    )
    found = problems(tmp_path, button("go", 5, "resume") + button("go", 6, "interrupt"))
    assert found["operator.buttons.1.name"] == ("go", "duplicate button name (also buttons.0)")
    cfg = load(tmp_path, button("go", 5, "resume", 'pull = "off"\nactive = "high"'))
    assert cfg.operator.buttons[0].active_high


def test_stack_light_wiring(tmp_path: Path) -> None:
    found = problems(tmp_path, '\n[operator.stacklight]\noutput = "modbus"\n')
    assert found["operator.stacklight.modbus_source"] == (
        MISSING,
        'required with output = "modbus"',
    )
    assert "operator.stacklight.green" in found  # no lamp at all
    found = problems(
        tmp_path, '\n[operator.stacklight]\noutput = "modbus"\nmodbus_source = "io9"\nred = 100\n'
    )
    value, message = found["operator.stacklight.modbus_source"]
    assert value == "io9"
    assert message.startswith("not a [[sources.modbus]] name")
    found = problems(tmp_path, '\n[operator.stacklight]\nmodbus_source = "io1"\nred = 4\n')
    assert found["operator.stacklight.modbus_source"] == ("io1", 'only with output = "modbus"')


def test_bad_pin_factory(tmp_path: Path) -> None:
    found = problems(tmp_path, '\n[gpio]\npin_factory = "sysfs"\n')
    value, message = found["gpio.pin_factory"]
    assert value == "sysfs"
    assert "'lgpio'" in message
