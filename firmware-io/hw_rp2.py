"""The hardware layer on the Raspberry Pi Pico (RP2040), and on other ports with ``machine``.

- Pulse inputs: an interrupt on both edges of each pin calls Channel.edge with the time in
  microseconds (hard interrupt: hardware-timed, nothing allocated). COUNT_MODE = "poll", or a
  port whose pins have no hard interrupt, samples every pin once a millisecond from a timer.
- Serial: machine.UART with the RS-485 transceiver's DE pin raised while sending, or the USB
  serial port (sys.stdin/stdout; Ctrl-C is turned off, since 0x03 is a Modbus function code).
- Watchdog: machine.WDT, fed by the main loop; a hung loop restarts the board.
- Boot count: one small file on the flash, written once per start. Counters are never stored:
  see REGISTERS.md ("What survives a power cut") for why.
"""

import select
import sys
import time

import machine
from machine import Pin
from registers import (
    RESET_OTHER,
    RESET_POWER_ON,
    RESET_SOFT,
    RESET_WATCHDOG,
    bump_boot_count,
)

_PARITY = {"N": None, "E": 0, "O": 1}


def configure(cfg, argv):
    pass  # everything comes from config.py on the board


def _pull(name):
    if name == "up":
        return Pin.PULL_UP
    if name == "down":
        return Pin.PULL_DOWN
    return None


class _Input:
    """One pin feeding one Channel; the interrupt handler is a bound method made once."""

    def __init__(self, pin, channel, invert):
        self.pin = pin
        self.channel = channel
        self.invert = invert
        channel.level = channel.raw = pin.value() ^ invert  # the level at start is settled

    def irq(self, pin):
        self.channel.edge(pin.value() ^ self.invert, time.ticks_us())

    def sample(self, now):
        self.channel.sample(self.pin.value() ^ self.invert, now)


class Hardware:
    def __init__(self, cfg):
        self.cfg = cfg
        self.ticks_us = time.ticks_us
        self.ticks_ms = time.ticks_ms
        self.polled = cfg["count_mode"] == "poll"
        self.inputs = []
        self.timer = None
        self.wdt = None
        self.de = None
        self.uart = None
        try:
            self.led = Pin("LED", Pin.OUT)
        except (TypeError, ValueError):
            self.led = None
        self.outputs = [Pin(n, Pin.OUT, value=0) for n in cfg["output_pins"]]
        # one character's time on the line, to hold DE until the last stop bit is out
        self.char_us = 11 * 1000000 // cfg["baudrate"] + 1

    def maintenance(self):
        pin = self.cfg["maintenance_pin"]
        if pin is None:
            return False
        return Pin(pin, Pin.IN, Pin.PULL_UP).value() == 0

    def boot_info(self):
        causes = {
            machine.PWRON_RESET: RESET_POWER_ON,
            machine.WDT_RESET: RESET_WATCHDOG,
        }
        soft = getattr(machine, "SOFT_RESET", None)
        if soft is not None:
            causes[soft] = RESET_SOFT
        cause = causes.get(machine.reset_cause(), RESET_OTHER)
        count, stored = bump_boot_count(self.cfg["boot_count_file"])
        return count, cause, stored

    def attach(self, board):
        import micropython

        # an exception inside a hard interrupt handler can then still be reported (not every
        # port has it)
        reserve = getattr(micropython, "alloc_emergency_exception_buf", None)
        if reserve is not None:
            reserve(100)
        cfg = self.cfg
        invert = 0 if cfg["active_level"] else 1
        pull = _pull(cfg["pull"])
        for i, channel in enumerate(board.channels):
            pin = Pin(cfg["count_pins"][i], Pin.IN, pull)
            self.inputs.append(_Input(pin, channel, invert))
        self.state = None
        if board.state is not None:
            state_pin = Pin(cfg["state_pin"], Pin.IN, pull)
            self.state = _Input(state_pin, board.state, invert)
        if not self.polled:
            try:
                for inp in self.inputs:
                    inp.pin.irq(inp.irq, Pin.IRQ_RISING | Pin.IRQ_FALLING, hard=True)
            except (TypeError, ValueError, OSError):
                self.polled = True  # no hard edge interrupts on this port: sample instead
        if self.polled:
            self.timer = machine.Timer(-1)
            self.timer.init(period=1, mode=machine.Timer.PERIODIC, callback=self._sample)
        board.on_outputs = self._outputs
        self._open_serial()
        if cfg["watchdog_ms"]:
            self.wdt = machine.WDT(timeout=cfg["watchdog_ms"])

    def _sample(self, _timer):
        now = time.ticks_us()
        for inp in self.inputs:
            inp.sample(now)

    def _open_serial(self):
        cfg = self.cfg
        if cfg["serial"] == "usb":
            import micropython

            micropython.kbd_intr(-1)
            self.rx = sys.stdin.buffer  # bytes, not text
            self.tx = sys.stdout.buffer
            watched = sys.stdin  # what select knows how to poll on every port
        else:
            self.uart = machine.UART(
                cfg["uart_id"],
                baudrate=cfg["baudrate"],
                bits=8,
                parity=_PARITY[cfg["parity"]],
                stop=cfg["stop_bits"],
                tx=Pin(cfg["tx_pin"]),
                rx=Pin(cfg["rx_pin"]),
                rxbuf=512,
            )
            self.rx = self.tx = watched = self.uart
            if cfg["de_pin"] is not None:
                self.de = Pin(cfg["de_pin"], Pin.OUT, value=0)  # receiving
        self.poller = select.poll()
        self.poller.register(watched, select.POLLIN)

    # -- the main loop's calls

    def read(self, timeout_ms):
        if not self.poller.poll(timeout_ms):
            return b""
        if self.uart is not None:
            return self.uart.read() or b""
        out = bytearray()
        while len(out) < 512 and self.poller.poll(0):
            out.extend(self.rx.read(1))
        return bytes(out)

    def write(self, data):
        if self.uart is None:
            self.tx.write(data)
            return
        if self.de is not None:
            self.de.value(1)
        self.uart.write(data)
        if self.de is not None:
            # Release the bus only after the last stop bit, or the end of the answer is cut.
            if hasattr(self.uart, "txdone"):
                while not self.uart.txdone():
                    pass
            else:
                time.sleep_us(len(data) * self.char_us)
            self.de.value(0)

    def update(self):
        now = time.ticks_us()
        if not self.polled:  # polled: the timer's sample() accepts levels itself
            # An edge interrupt between the check and the accept in poll() would count twice.
            irq = machine.disable_irq()
            try:
                for inp in self.inputs:
                    inp.channel.poll(now)
            finally:
                machine.enable_irq(irq)
        if self.state is not None:
            self.state.sample(now)  # slow signal: sampled by the loop, every 10 ms at most

    def feed(self, heartbeat):
        if self.wdt is not None:
            self.wdt.feed()
        if self.led is not None:
            self.led.value(heartbeat & 1)

    def _outputs(self, address, values):
        for i, value in enumerate(values):
            self.outputs[address + i].value(1 if value else 0)
