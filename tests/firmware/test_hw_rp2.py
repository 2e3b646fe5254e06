"""hw_rp2.py under the real MicroPython interpreter with stand-ins for ``machine`` and ``select``:
no Pico here, but the board's own hardware layer runs its interrupt handlers, its UART with the
RS-485 DE pin, its watchdog and boot count, and the firmware's main loop, in the interpreter
the board runs. What it cannot show: real pin timing, the RP2040's UART and flash."""

from __future__ import annotations

from pathlib import Path

import pytest
from modbus_rtu import with_crc

from .support import run_micropython

pytestmark = pytest.mark.timeout(30)

FAKE_MACHINE = """
import sys, time

log = []

class StopLoop(Exception):
    pass

class Pin:
    IN = 0
    OUT = 1
    PULL_UP = 1
    PULL_DOWN = 2
    IRQ_RISING = 4
    IRQ_FALLING = 8
    pins = {}
    grounded = ()  # pins wired to ground at power-up

    def __init__(self, id, mode=-1, pull=None, value=None):
        self.id = id
        self.v = 1 if pull == Pin.PULL_UP and id not in Pin.grounded else 0
        if value is not None:
            self.v = value
        self.handler = None
        Pin.pins[id] = self

    def value(self, v=None):
        if v is None:
            return self.v
        self.v = v
        log.append(("pin", self.id, v))

    def irq(self, handler, trigger, hard=False):
        self.handler = handler
        log.append(("irq", self.id, trigger, hard))

    def drive(self, v):
        self.v = v
        if self.handler is not None:
            self.handler(self)

class UART:
    def __init__(self, id, **kw):
        self.kw = kw
        self.rx = b""
        self.tx = b""
        UART.last = self

    def read(self):
        data, self.rx = self.rx, b""
        return data or None

    def write(self, data):
        log.append(("tx", Pin.pins[2].v))  # the DE pin while sending
        self.tx += data

    def txdone(self):
        return True

class WDT:
    feeds = 0
    limit = 10 ** 9

    def __init__(self, timeout):
        log.append(("wdt", timeout))

    def feed(self):
        WDT.feeds += 1
        if WDT.feeds >= WDT.limit:
            raise StopLoop()

class Timer:
    PERIODIC = 1

    def __init__(self, id):
        Timer.last = self

    def init(self, period, mode, callback):
        self.callback = callback

class machine:
    PWRON_RESET = 1
    WDT_RESET = 3
    Pin = Pin
    UART = UART
    WDT = WDT
    Timer = Timer

    @staticmethod
    def reset_cause():
        return 3

    @staticmethod
    def disable_irq():
        return 7

    @staticmethod
    def enable_irq(state):
        log.append(("irq_state", state))

class Poll:
    def register(self, obj, mask):
        self.obj = obj

    def poll(self, timeout):
        if self.obj.rx:
            return [(self.obj, 1)]
        time.sleep_ms(timeout)
        return []

class select:
    POLLIN = 1

    @staticmethod
    def poll():
        return Poll()

sys.modules["machine"] = machine
sys.modules["select"] = select
"""

SCENARIO = """
import hw_rp2, main
from modbus_rtu import with_crc

cfg = main.settings()
hw_rp2.configure(cfg, [])
cfg["boot_count_file"] = BOOT_FILE

Pin.grounded = (22,)
print("maintenance", hw_rp2.Hardware(cfg).maintenance())
Pin.grounded = ()
hw = hw_rp2.Hardware(cfg)
print("maintenance", hw.maintenance())
print("boot", hw.boot_info())
boot, cause, stored = hw.boot_info()
print("boot", boot, cause, stored)

board = main.make_board(cfg, boot, cause)
hw.attach(board)
print("irqs", sorted(e[1] for e in log if e[0] == "irq" and e[3]))
print("uart", UART.last.kw["baudrate"], UART.last.kw["parity"], UART.last.kw["stop"])

# channel 0 (GP10), active low behind an opto-coupler: 5 clean pulses, 6 ms each level
for _ in range(5):
    Pin.pins[10].drive(0)
    time.sleep_ms(6)
    Pin.pins[10].drive(1)
    time.sleep_ms(6)
# channel 1 (GP11): a bouncing press, then held; the loop's update() accepts it
for level in (0, 1, 0, 1, 0):
    Pin.pins[11].drive(level)
time.sleep_ms(6)
hw.update()
print("counts", [ch.value() for ch in board.channels], board.channels[1].rejected)

# the main loop: two requests on the UART, then the watchdog stand-in ends the loop
UART.last.rx = with_crc(bytes([1, 4, 0, 0, 0, 4]))
WDT.limit = WDT.feeds + 5
try:
    main.serve(hw, board, cfg)
except StopLoop:
    pass
print("answer", UART.last.tx.hex())
print("de", [e[1] for e in log if e[0] == "tx"], Pin.pins[2].v)
UART.last.tx = b""
UART.last.rx = with_crc(bytes([1, 15, 0, 0, 0, 4, 1, 0b0101]))
WDT.limit = WDT.feeds + 5
try:
    main.serve(hw, board, cfg)
except StopLoop:
    pass
print("outputs", [Pin.pins[n].v for n in cfg["output_pins"]], UART.last.tx.hex())

# the portable fallback: sampled by a 1 ms timer instead of interrupts
cfg["count_mode"] = "poll"
hw2 = hw_rp2.Hardware(cfg)
board2 = main.make_board(cfg, 1, 0)
hw2.attach(board2)
for _ in range(3):
    Pin.pins[12].v = 0
    for _ in range(6):
        Timer.last.callback(Timer.last)
        time.sleep_ms(1)
    Pin.pins[12].v = 1
    for _ in range(7):
        Timer.last.callback(Timer.last)
        time.sleep_ms(1)
print("polled", hw2.polled, [ch.value() for ch in board2.channels])
"""


def test_the_rp2_layer_counts_answers_and_drives_de_under_micropython(tmp_path: Path) -> None:
    boot_file = tmp_path / "boot_count.txt"
    out = run_micropython(FAKE_MACHINE + f"BOOT_FILE = {str(boot_file)!r}\n" + SCENARIO)
    lines = dict(line.split(" ", 1) for line in out.splitlines())
    assert lines["maintenance"] == "False"  # the last one printed: no jumper
    assert "maintenance True" in out  # GP22 grounded: the firmware stays out of the way
    assert lines["boot"] == "2 1 True"  # second start, after a watchdog reset, stored
    assert boot_file.read_text().strip() == "2"
    assert lines["irqs"] == "[10, 11, 12, 13]"  # hard interrupts on every count pin
    assert lines["uart"] == "19200 0 1"  # 8E1
    assert lines["counts"] == "[5, 1, 0, 0] 2"
    expected = bytes([1, 4, 8, 0, 0, 0, 5, 0, 0, 0, 1])
    assert lines["answer"] == with_crc(expected).hex()
    assert lines["de"] == "[1] 0"  # DE high while sending, low again after
    assert lines["outputs"] == "[1, 0, 1, 0] " + with_crc(bytes([1, 15, 0, 0, 0, 4])).hex()
    assert lines["polled"] == "True [0, 0, 3, 0]"
