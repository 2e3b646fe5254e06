"""``[[sources.modbus]]``: what loads, and bad values named by their field."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from edge.config import GatewayConfig, load_config
from edge.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "example.toml"

BASE = """\
[gateway]
edge_id = "wc-test-01"
work_center = "TEST01"

[[counting.sources]]
name = "good16"
kind = "good"
bits = 16

[[counting.sources]]
name = "scrap32"
kind = "scrap"
bits = 32

[[counting.sources]]
name = "strokes"
kind = "total"
signal = "pulse"
authoritative = false
"""

TCP = """
[[sources.modbus]]
name = "io1"
host = "192.168.10.31"
"""


def load(tmp_path: Path, text: str) -> GatewayConfig:
    path = tmp_path / "edge.toml"
    path.write_text(BASE + text, encoding="utf-8")
    return load_config(path, env={})


def problems(tmp_path: Path, text: str) -> dict[str, str]:
    """field path -> 'value: message' of every problem."""
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    return {p.field_path: f"{p.value!r}: {p.message}" for p in info.value.problems}


def test_a_tcp_module_with_defaults(tmp_path: Path) -> None:
    cfg = load(
        tmp_path,
        TCP
        + """
[[sources.modbus.counters]]
counter = "good16"
address = 0

[[sources.modbus.counters]]
counter = "scrap32"
table = "input"
address = 0

[sources.modbus.state]
running = 0
down = 1
inverted = ["down"]
""",
    )
    (mb,) = cfg.sources.modbus
    assert (mb.transport, mb.host, mb.port, mb.unit_id) == ("tcp", "192.168.10.31", 502, 1)
    assert (mb.poll_interval_ms, mb.timeout_s, mb.word_order) == (100.0, 1.0, "big")
    assert [(c.counter, c.table, c.address) for c in mb.counters] == [
        ("good16", "holding", 0),
        ("scrap32", "input", 0),
    ]
    assert mb.state is not None
    assert (mb.state.table, mb.state.running, mb.state.down, mb.state.setup) == (
        "discrete_inputs",
        0,
        1,
        None,
    )


def test_an_rtu_module(tmp_path: Path) -> None:
    cfg = load(
        tmp_path,
        """
[[sources.modbus]]
name = "io1"
transport = "rtu"
device = "/dev/ttyUSB0"
baudrate = 9600
parity = "n"
stopbits = 2
unit_id = 17
word_order = "little"
""",
    )
    (mb,) = cfg.sources.modbus
    assert (mb.device, mb.baudrate, mb.parity, mb.stopbits, mb.bytesize) == (
        "/dev/ttyUSB0",
        9600,
        "N",
        2,
        8,
    )
    assert (mb.unit_id, mb.word_order) == (17, "little")


def test_the_example_block_loads_when_uncommented(tmp_path: Path) -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    start = text.index("# [[sources.modbus]]")
    end = text.find("\n# -- ", start)
    section = text[start : end if end != -1 else len(text)]
    # "# key = value" and "# [table]" lines; the prose around them is not TOML
    keys = [ln[2:] for ln in section.splitlines() if re.match(r"^# (\[|[a-z_]+ = )", ln)]
    # tcp and rtu keys are listed together; a real block has one set
    rtu_only = ("device", "baudrate", "parity", "stopbits", "bytesize")
    block = "\n".join(k for k in keys if not k.startswith(rtu_only))
    cfg = load(tmp_path, "\n" + block.replace('"press_good"', '"good16"') + "\n")
    (mb,) = cfg.sources.modbus
    assert (mb.name, mb.host, mb.counters[0].table) == ("io1", "192.168.10.31", "input")
    assert mb.state is not None
    assert mb.state.inverted == ["down"]


def test_transport_keys_must_fit(tmp_path: Path) -> None:
    found = problems(tmp_path, '\n[[sources.modbus]]\nname = "io1"\nbaudrate = 9600\n')
    assert found["sources.modbus[io1].host"] == "<missing>: required with transport = 'tcp'"
    assert found["sources.modbus[io1].baudrate"] == "9600: not used with transport = 'tcp'"

    found = problems(
        tmp_path,
        '\n[[sources.modbus]]\nname = "io1"\ntransport = "rtu"\nhost = "10.0.0.1"\nunit_id = 0\n',
    )
    assert "required with transport = 'rtu'" in found["sources.modbus[io1].device"]
    assert found["sources.modbus[io1].host"] == "'10.0.0.1': not used with transport = 'rtu'"
    assert found["sources.modbus[io1].unit_id"] == "0: on a serial line a unit id is 1-247"


@pytest.mark.parametrize(
    ("line", "field", "message"),
    [
        ('transport = "udp"', "transport", "Input should be 'tcp' or 'rtu'"),
        ("port = 0", "port", "greater than or equal to 1"),
        ("unit_id = 256", "unit_id", "less than or equal to 255"),
        ('unit_id = "1"', "unit_id", "valid integer"),
        ("poll_interval_ms = 5", "poll_interval_ms", "greater than or equal to 10"),
        ("timeout_s = 0", "timeout_s", "greater than 0"),
        ('word_order = "middle"', "word_order", "Input should be 'big' or 'little'"),
        ("reconnect_min_s = 60", "reconnect_min_s", "larger than reconnect_max_s"),
        ('hots = "x"', "hots", "unknown key"),
    ],
)
def test_bad_values_name_the_field(tmp_path: Path, line: str, field: str, message: str) -> None:
    found = problems(tmp_path, TCP + line + "\n")
    assert message in found[f"sources.modbus[io1].{field}"]


@pytest.mark.parametrize(
    ("line", "field", "message"),
    [
        ('parity = "X"', "parity", "Input should be 'N', 'E' or 'O'"),
        ("stopbits = 3", "stopbits", "Input should be 1 or 2"),
        ("bytesize = 9", "bytesize", "Input should be 7 or 8"),
        ("baudrate = 100", "baudrate", "greater than or equal to 300"),
    ],
)
def test_bad_serial_settings(tmp_path: Path, line: str, field: str, message: str) -> None:
    rtu = '\n[[sources.modbus]]\nname = "io1"\ntransport = "rtu"\ndevice = "/dev/ttyUSB0"\n'
    found = problems(tmp_path, rtu + line + "\n")
    assert message in found[f"sources.modbus[io1].{field}"]


def test_counters_must_be_absolute_counters_read_once(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        TCP
        + """
[[sources.modbus.counters]]
counter = "nope"
address = 0

[[sources.modbus.counters]]
counter = "strokes"
address = 1

[[sources.modbus]]
name = "io2"
host = "192.168.10.32"

[[sources.modbus.counters]]
counter = "good16"
address = 5

[[sources.modbus.counters]]
counter = "good16"
address = 6
""",
    )
    assert found["sources.modbus[io1].counters.0.counter"] == (
        "'nope': not an absolute counter in [[counting.sources]]"
    )
    assert "not an absolute counter" in found["sources.modbus[io1].counters.1.counter"]
    assert found["sources.modbus[io2].counters.1.counter"] == (
        "'good16': already read by modbus source 'io2'; both would count"
    )
    found = problems(
        tmp_path, TCP + '\n[[sources.modbus.counters]]\ncounter = "good16"\naddress = -1\n'
    )
    assert "greater than or equal to 0" in found["sources.modbus[io1].counters.0.address"]


def test_a_counter_read_over_opc_ua_and_modbus(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        """
[[sources.opcua]]
name = "press"
endpoint = "opc.tcp://10.0.0.5:4840"

[[sources.opcua.counters]]
counter = "good16"
node = "ns=2;s=Good"
"""
        + TCP
        + '\n[[sources.modbus.counters]]\ncounter = "good16"\naddress = 0\n',
    )
    assert (
        "already read by an [[sources.opcua]] link"
        in (found["sources.modbus[io1].counters.0.counter"])
    )


def test_counter_registers_must_not_overlap_or_run_off_the_end(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        TCP
        + """
[[sources.modbus.counters]]
counter = "scrap32"
address = 10

[[sources.modbus.counters]]
counter = "good16"
address = 11
""",
    )
    assert found["sources.modbus[io1].counters.1.address"] == (
        "11: holding register 11 is also read for counter 'scrap32'"
    )
    found = problems(
        tmp_path,
        TCP + '\n[[sources.modbus.counters]]\ncounter = "scrap32"\naddress = 65535\n',
    )
    assert "a 32-bit counter spans 2 registers" in found["sources.modbus[io1].counters.0.address"]
    # the same address in another table is another register
    load(
        tmp_path,
        TCP
        + '\n[[sources.modbus.counters]]\ncounter = "scrap32"\naddress = 10\n'
        + '\n[[sources.modbus.counters]]\ncounter = "good16"\ntable = "input"\naddress = 10\n',
    )


def test_names_and_serial_ports_are_not_shared(tmp_path: Path) -> None:
    rtu = '\n[[sources.modbus]]\nname = "{}"\ntransport = "rtu"\ndevice = "/dev/ttyUSB0"\n'
    found = problems(tmp_path, rtu.format("io1") + rtu.format("io1") + rtu.format("io3"))
    # a duplicated name cannot label its entry: the path gives the index instead
    assert found["sources.modbus.1.name"] == "'io1': duplicate name"
    assert "already opened by modbus source 'io1'" in found["sources.modbus[io3].device"]


@pytest.mark.parametrize(
    ("state", "field", "message"),
    [
        ("", "state.running", "give the address of at least one of running, down, setup"),
        ("running = 3\ndown = 3", "state.down", "the same bit as running"),
        ('running = 0\ninverted = ["down"]', "state.inverted.0", "down has no bit address here"),
        ('running = 0\ninverted = ["fault"]', "state.inverted.0", "'running', 'down' or 'setup'"),
        ('running = 0\ntable = "holding"', "state.table", "'discrete_inputs' or 'coils'"),
    ],
)
def test_bad_state_bits(tmp_path: Path, state: str, field: str, message: str) -> None:
    found = problems(tmp_path, TCP + "\n[sources.modbus.state]\n" + state + "\n")
    assert message in found[f"sources.modbus[io1].{field}"]


def test_the_report_reads_well(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, TCP + "poll_interval_ms = 1\n")
    assert "sources.modbus[io1].poll_interval_ms = 1: Input should be greater than or equal" in (
        str(info.value)
    )
