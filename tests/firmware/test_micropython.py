"""The firmware's logic under the real MicroPython interpreter (the Unix port), checked against
CPython running the very same script: integers above 2**30, bytes and slicing, exceptions and
the CRC table must behave the same on the board's interpreter."""

from __future__ import annotations

import subprocess
import sys

import pytest
from modbus_rtu import with_crc

from .support import FIRMWARE, run_micropython

pytestmark = pytest.mark.timeout(30)

# Runs unchanged under both interpreters; prints one line per result.
SCENARIO = """
from binascii import hexlify
from counter import Channel
from modbus_rtu import Framer, Slave, crc16, silent_interval_us, with_crc
from registers import Board

def show(*values):
    print(" ".join(str(v) for v in values))

def hx(data):
    return "-" if data is None else hexlify(data).decode()

show("crc", hex(crc16(bytes([1, 3, 0, 0, 0, 10]))), hex(crc16(b"123456789")))
show("frame", hx(with_crc(bytes([1, 3, 0, 0, 0, 10]))))
show("silent", silent_interval_us(9600), silent_interval_us(19200), silent_interval_us(115200))

framer = Framer(2006)
request = with_crc(bytes([1, 4, 0, 0, 0, 8]))
show("framer", hx(framer.feed(request[:4], 0)), hx(framer.poll(2005)),
     hx(framer.feed(request[4:], 2005)), hx(framer.poll(4010)), hx(framer.poll(4011)))

ch = Channel(5000)
t = 0
for i in range(20):
    for level in (1, 0, 1, 0, 1):
        t += 150
        ch.edge(level, t)
    t += 8000
    for level in (0, 1, 0):
        t += 150
        ch.edge(level, t)
    t += 8000
    ch.poll(t)
show("debounce", ch.value(), ch.rejected)

ch.preset(0xFFFFFFFE)
for i in range(4):
    t += 6000
    ch.edge(1, t)
    t += 6000
    ch.edge(0, t)
ch.poll(t + 6000)
show("wrap", ch.value(), ch.hi, ch.lo)

board = Board([Channel(5000) for _ in range(4)], Channel(20000), [False] * 4, boot_count=9)
slave = Slave(1, board)
board.slave = slave
board.channels[2].preset(4000000000)
for pdu in (
    bytes([4, 0, 0, 0, 8]),
    bytes([3, 0, 4, 0, 2]),
    bytes([4, 0, 100, 0, 11]),
    bytes([16, 0, 200, 0, 2, 4, 0xFF, 0xFF, 0xFF, 0xF0]),
    bytes([4, 0, 0, 0, 2]),
    bytes([6, 0, 100, 0, 20]),
    bytes([3, 0, 100, 0, 1]),
    bytes([5, 0, 1, 0xFF, 0]),
    bytes([15, 0, 0, 0, 3, 1, 5]),
    bytes([1, 0, 0, 0, 4]),
    bytes([2, 0, 0, 0, 5]),
    bytes([7]),
    bytes([4, 0, 0, 0, 0]),
    bytes([4, 0, 8, 0, 1]),
    bytes([6, 0, 0, 0, 1]),
    bytes([16, 0, 201, 0, 2, 4, 0, 0, 0, 0]),
):
    show("answer", hx(slave.handle(with_crc(bytes([1]) + pdu))))
bad = with_crc(bytes([1, 4, 0, 0, 0, 8]))
show("silent", hx(slave.handle(bad[:-1] + bytes([bad[-1] ^ 0xFF]))), hx(slave.handle(bad[:5])),
     hx(slave.handle(with_crc(bytes([7, 4, 0, 0, 0, 8])))))
show("stats", slave.answered, slave.exceptions, slave.bad_frames, slave.not_for_us)
show("counters", [c.value() for c in board.channels])
"""


def run_cpython(script: str) -> str:
    prelude = f"import sys\nsys.path.insert(0, {str(FIRMWARE)!r})\n"
    done = subprocess.run(
        [sys.executable, "-c", prelude + script],
        capture_output=True,
        timeout=20,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode()


def test_micropython_and_cpython_agree_on_every_result() -> None:
    micro = run_micropython(SCENARIO).splitlines()
    cpython = run_cpython(SCENARIO).splitlines()
    assert micro == cpython
    answers = [line.split()[1] for line in micro if line.startswith("answer")]
    # the preset through the test register, then channel 0 read back
    assert answers[4] == with_crc(bytes([1, 4, 4, 0xFF, 0xFF, 0xFF, 0xF0])).hex()
    assert answers[11] == with_crc(bytes([1, 0x87, 1])).hex()  # unknown function
    assert answers[13] == with_crc(bytes([1, 0x84, 2])).hex()  # past the counters
    lines = dict(line.split(" ", 1) for line in micro if not line.startswith("answer"))
    assert lines["crc"] == "0xcdc5 0x4b37"
    assert lines["frame"] == "01030000000ac5cd"
    # nothing until 3.5 characters (2006 us) of silence after the last byte, then all of it
    assert lines["framer"] == "- - - - " + with_crc(bytes([1, 4, 0, 0, 0, 8])).hex()
    assert lines["debounce"] == "20 60"  # 20 pulses; 3 bounces per pulse rejected
    assert lines["wrap"] == "2 0 2"
    assert lines["stats"] == "11 5 2 1"  # answers, exceptions, bad frames, other units
    assert lines["counters"] == "[4294967280, 0, 4000000000, 0]"  # only the preset moved it


def test_micropython_is_the_interpreter_that_ran() -> None:
    out = run_micropython("import sys\nprint(sys.implementation.name, sys.maxsize > 2**40)")
    assert out.split()[0] == "micropython"
