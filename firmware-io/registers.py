"""The register map (REGISTERS.md explains it for the plant): what the Modbus master reads and
writes, on top of the channels. Pure logic; the hardware layer fills in the inputs.

Addresses are 0-based protocol addresses (a manual's 30001 is input register 0).
"""

try:
    from micropython import const
except ImportError:

    def const(value):
        return value


from modbus_rtu import ILLEGAL_ADDRESS, ILLEGAL_VALUE, ModbusError

VERSION_MAJOR = const(1)
VERSION_MINOR = const(0)

MAX_CHANNELS = const(8)

# input registers (FC 4); the counters also as read-only holding registers (FC 3)
COUNTERS = const(0)  # 2 per channel, high word first
VERSION = const(100)  # major << 8 | minor
STATUS = const(101)
HEARTBEAT = const(102)  # +1 per second, wraps at 65535
BOOT_COUNT = const(103)
UPTIME = const(104)  # seconds, 32-bit, 104 high word, 105 low word
CHANNELS = const(106)
RESET_CAUSE = const(107)
BAD_FRAMES = const(108)
EXCEPTIONS = const(109)
REJECTED_EDGES = const(110)

# holding registers (FC 3, 6, 16)
DEBOUNCE_MS = const(100)  # every channel's debounce time, 0-1000 ms, RAM only
PRESET = const(200)  # test register: FC 16 with both words of a channel sets its counter

# discrete inputs (FC 2)
STATE_INPUT = const(0)  # the machine's state input (1 = active), debounced
CHANNEL_LEVELS = const(1)  # 1 + channel: the pulse input's debounced level

# status bits (input register 101)
ST_WATCHDOG_RESET = const(0x0001)  # the board started after a watchdog reset
ST_RX_OVERFLOW = const(0x0002)  # a frame longer than 256 bytes was dropped
ST_BAD_FRAME = const(0x0004)  # a frame with a wrong CRC, or too short, was dropped
ST_PRESET = const(0x0008)  # a counter was set through the test register
ST_BOOT_NOT_STORED = const(0x0010)  # the boot count could not be written
ST_POLLED_INPUTS = const(0x0020)  # inputs are sampled (portable fallback), not interrupts

# reset causes (input register 107)
RESET_POWER_ON = const(0)
RESET_WATCHDOG = const(1)
RESET_SOFT = const(2)
RESET_OTHER = const(3)

MAX_DEBOUNCE_MS = const(1000)


class Board:
    """The board's data: channels (counting), the state input, outputs and the status words."""

    def __init__(self, channels, state, outputs, boot_count=0, reset_cause=RESET_POWER_ON):
        self.channels = channels  # counter.Channel, at most MAX_CHANNELS
        self.state = state  # counter.Channel used for its level only (None: not fitted)
        self.outputs = outputs  # list of bools, what the coils are set to
        self.boot_count = boot_count & 0xFFFF
        self.reset_cause = reset_cause
        self.status = ST_WATCHDOG_RESET if reset_cause == RESET_WATCHDOG else 0
        self.heartbeat = 0
        self.uptime_s = 0
        self.slave = None  # set by main: the Slave, for its frame statistics
        self.on_outputs = None  # called with (address, values) after coils were written

    # -- what main calls

    def second(self):
        """Once a second: the heartbeat and the uptime."""
        self.heartbeat = (self.heartbeat + 1) & 0xFFFF
        self.uptime_s = (self.uptime_s + 1) & 0xFFFFFFFF

    def flag(self, bit):
        self.status |= bit

    def debounce_ms(self):
        if not self.channels:
            return 0
        return self.channels[0].debounce_us // 1000

    # -- the data model for modbus_rtu.Slave

    def read_registers(self, table, address, count):
        return [self._register(table, a) for a in range(address, address + count)]

    def _register(self, table, address):
        n = len(self.channels)
        if COUNTERS <= address < COUNTERS + 2 * n:
            value = self.channels[(address - COUNTERS) >> 1].value()
            return (value >> 16) & 0xFFFF if (address - COUNTERS) % 2 == 0 else value & 0xFFFF
        if table == "holding":
            if address == DEBOUNCE_MS:
                return self.debounce_ms()
            if PRESET <= address < PRESET + 2 * n:
                return 0
            raise ModbusError(ILLEGAL_ADDRESS)
        slave = self.slave
        if address == VERSION:
            return (VERSION_MAJOR << 8) | VERSION_MINOR
        if address == STATUS:
            return self.status
        if address == HEARTBEAT:
            return self.heartbeat
        if address == BOOT_COUNT:
            return self.boot_count
        if address == UPTIME:
            return self.uptime_s >> 16
        if address == UPTIME + 1:
            return self.uptime_s & 0xFFFF
        if address == CHANNELS:
            return n
        if address == RESET_CAUSE:
            return self.reset_cause
        if address == BAD_FRAMES:
            return (slave.bad_frames & 0xFFFF) if slave else 0
        if address == EXCEPTIONS:
            return (slave.exceptions & 0xFFFF) if slave else 0
        if address == REJECTED_EDGES:
            total = 0
            for ch in self.channels:
                total += ch.rejected
            return total & 0xFFFF
        raise ModbusError(ILLEGAL_ADDRESS)

    def write_registers(self, address, values, single):
        n = len(self.channels)
        end = address + len(values)
        if address == DEBOUNCE_MS and end == address + 1:
            ms = values[0]
            if ms > MAX_DEBOUNCE_MS:
                raise ModbusError(ILLEGAL_VALUE)
            for ch in self.channels:
                ch.debounce_us = ms * 1000
            return
        if address >= PRESET and end <= PRESET + 2 * n:
            # Both words of whole channels in one request, so a counter never holds half of
            # an old value and half of a new one.
            if single or (address - PRESET) % 2 or len(values) % 2:
                raise ModbusError(ILLEGAL_VALUE)
            first = (address - PRESET) >> 1
            for i in range(len(values) // 2):
                self.channels[first + i].preset((values[2 * i] << 16) | values[2 * i + 1])
            self.flag(ST_PRESET)
            return
        # the counters, the status words, anything else: not writable or not there
        raise ModbusError(ILLEGAL_ADDRESS)

    def read_bits(self, table, address, count):
        return [self._bit(table, a) for a in range(address, address + count)]

    def _bit(self, table, address):
        if table == "coils":
            if address < len(self.outputs):
                return self.outputs[address]
            raise ModbusError(ILLEGAL_ADDRESS)
        if address == STATE_INPUT and self.state is not None:
            return self.state.is_active()
        if CHANNEL_LEVELS <= address < CHANNEL_LEVELS + len(self.channels):
            return self.channels[address - CHANNEL_LEVELS].is_active()
        raise ModbusError(ILLEGAL_ADDRESS)

    def write_coils(self, address, values):
        if address + len(values) > len(self.outputs):
            raise ModbusError(ILLEGAL_ADDRESS)
        for i, value in enumerate(values):
            self.outputs[address + i] = bool(value)
        if self.on_outputs is not None:
            self.on_outputs(address, values)


def bump_boot_count(path):
    """Count this start in a small file (one flash write per boot, nothing per pulse).

    Returns (count, stored): the 16-bit count including this start, and whether it could be
    written (a full or read-only filesystem still lets the board count).
    """
    count = 0
    try:
        with open(path) as f:
            count = int(f.read().strip() or "0")
    except (OSError, ValueError):
        pass
    count = (count + 1) & 0xFFFF
    try:
        with open(path, "w") as f:
            f.write(str(count) + "\n")
    except OSError:
        return count, False
    return count, True
