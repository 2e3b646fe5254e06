"""A Modbus RTU slave: CRC-16, frames by silent interval, the function codes. Pure logic.

Follows "MODBUS over Serial Line V1.02" and the application protocol V1.1b3:

- A frame ends after 3.5 character times of silence (1.75 ms above 19200 baud). Bytes that
  arrive after a longer gap start a new frame.
- A frame with a wrong CRC, too short to hold an address, a function and a CRC, or longer than
  256 bytes is dropped without an answer: the master cannot know who should have answered, so
  the standard wants silence (the master times out and asks again).
- A frame for another unit id is ignored; unit 0 is a broadcast: writes are carried out, nothing
  is answered, reads are ignored.
- Function codes 1, 2, 3, 4, 5, 6, 15, 16. Anything else: exception 01. A quantity out of range
  or a request of the wrong length: 03. An address the board does not have: 02 (raised by the
  data model, see registers.py). Checks run in the standard's order: function, value, address.

The 1.5-character inter-byte limit is not enforced: a host OS or a USB-serial bridge delivers
bytes in bursts that would break it, while the CRC still catches a frame that lost bytes.
"""

try:
    from micropython import const
except ImportError:  # CPython (the tests)

    def const(value):
        return value


ILLEGAL_FUNCTION = const(1)
ILLEGAL_ADDRESS = const(2)
ILLEGAL_VALUE = const(3)
DEVICE_FAILURE = const(4)

MAX_FRAME = const(256)  # address + PDU (253) + CRC
MAX_READ_BITS = const(2000)
MAX_READ_REGISTERS = const(125)
MAX_WRITE_COILS = const(1968)
MAX_WRITE_REGISTERS = const(123)

try:
    from time import ticks_diff
except ImportError:

    def ticks_diff(new, old):
        return new - old


class ModbusError(Exception):
    """Raised by the data model (or here) to answer with an exception code."""

    def __init__(self, code):
        super().__init__(code)
        self.code = code


def _crc_table():
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_TABLE = _crc_table()


def crc16(data):
    """CRC-16/MODBUS of ``data``; on the wire it goes low byte first."""
    crc = 0xFFFF
    for byte in data:
        crc = (crc >> 8) ^ _TABLE[(crc ^ byte) & 0xFF]
    return crc


def with_crc(body):
    crc = crc16(body)
    return bytes(body) + bytes((crc & 0xFF, crc >> 8))


def crc_ok(frame):
    return len(frame) >= 4 and crc16(frame[:-2]) == frame[-2] | (frame[-1] << 8)


def silent_interval_us(baudrate):
    """3.5 characters of 11 bits; a fixed 1750 us above 19200 baud, as the standard says."""
    if baudrate > 19200:
        return 1750
    return (3_500_000 * 11) // baudrate + 1


class Framer:
    """Collects received bytes into frames, cut by silence.

    ``feed`` the bytes with the time they were read; ``poll`` returns a frame once the line has
    been silent for the interval. ``feed`` also returns the previous frame when the gap before
    the new bytes already ended it (the main loop was late to poll).
    """

    def __init__(self, silent_us):
        self.silent_us = silent_us
        self.buf = bytearray()
        self.last = 0
        self.overflow = False
        self.overflows = 0  # frames dropped for length

    def feed(self, data, now):
        done = None
        if self.buf and ticks_diff(now, self.last) >= self.silent_us:
            done = self._take()
        if self.overflow:
            pass  # the rest of an overlong frame: dropped until the line is silent
        elif len(self.buf) + len(data) > MAX_FRAME:
            self.overflow = True
            self.overflows += 1
            self.buf = bytearray()
        else:
            self.buf.extend(data)
        self.last = now
        return done

    def poll(self, now):
        if (self.buf or self.overflow) and ticks_diff(now, self.last) >= self.silent_us:
            return self._take()
        return None

    def pending(self):
        return bool(self.buf) or self.overflow

    def _take(self):
        frame = bytes(self.buf)
        self.buf = bytearray()
        if self.overflow:
            self.overflow = False
            return None
        return frame or None


def _u16(pdu, at):
    return (pdu[at] << 8) | pdu[at + 1]


def _pack_bits(bits):
    out = bytearray((len(bits) + 7) // 8)
    for i, bit in enumerate(bits):
        if bit:
            out[i >> 3] |= 1 << (i & 7)
    return out


def _unpack_bits(data, count):
    return [bool(data[i >> 3] & (1 << (i & 7))) for i in range(count)]


class Slave:
    """Answers frames for ``unit_id`` from a data model with these methods (see registers.py):

    read_bits(table, address, count) with table "coils" or "discrete"; write_coils(address,
    values); read_registers(table, address, count) with table "holding" or "input";
    write_registers(address, values, single). Each raises ModbusError for what it refuses.
    """

    def __init__(self, unit_id, model):
        self.unit_id = unit_id
        self.model = model
        self.answered = 0  # normal answers
        self.exceptions = 0  # exception answers
        self.bad_frames = 0  # wrong CRC or too short: dropped silently
        self.not_for_us = 0  # other unit ids

    def handle(self, frame):
        """The answer to one frame (bytes with CRC), or None when the standard says silence."""
        if len(frame) < 4 or not crc_ok(frame):
            self.bad_frames += 1
            return None
        unit = frame[0]
        if unit != self.unit_id and unit != 0:
            self.not_for_us += 1
            return None
        pdu = frame[1:-2]
        function = pdu[0]
        try:
            answer = self._execute(function, pdu, broadcast=unit == 0)
        except ModbusError as exc:
            if unit == 0:
                return None
            self.exceptions += 1
            return with_crc(bytes((unit, function | 0x80, exc.code)))
        if unit == 0:
            return None
        self.answered += 1
        return with_crc(bytes((unit,)) + answer)

    def _execute(self, function, pdu, broadcast):
        model = self.model
        if function in (1, 2, 3, 4):
            if broadcast:
                raise ModbusError(ILLEGAL_FUNCTION)  # no answer anyway: reads make no sense
            if len(pdu) != 5:
                raise ModbusError(ILLEGAL_VALUE)
            address = _u16(pdu, 1)
            count = _u16(pdu, 3)
            limit = MAX_READ_BITS if function <= 2 else MAX_READ_REGISTERS
            if not 1 <= count <= limit:
                raise ModbusError(ILLEGAL_VALUE)
            if address + count > 0x10000:
                raise ModbusError(ILLEGAL_ADDRESS)
            if function <= 2:
                table = "coils" if function == 1 else "discrete"
                data = _pack_bits(model.read_bits(table, address, count))
                return bytes((function, len(data))) + data
            table = "holding" if function == 3 else "input"
            words = model.read_registers(table, address, count)
            out = bytearray((function, 2 * count))
            for word in words:
                out.append((word >> 8) & 0xFF)
                out.append(word & 0xFF)
            return bytes(out)
        if function == 5:
            if len(pdu) != 5:
                raise ModbusError(ILLEGAL_VALUE)
            value = _u16(pdu, 3)
            if value not in (0x0000, 0xFF00):
                raise ModbusError(ILLEGAL_VALUE)
            model.write_coils(_u16(pdu, 1), [value == 0xFF00])
            return bytes(pdu)  # the echo of the request
        if function == 6:
            if len(pdu) != 5:
                raise ModbusError(ILLEGAL_VALUE)
            model.write_registers(_u16(pdu, 1), [_u16(pdu, 3)], True)
            return bytes(pdu)
        if function in (15, 16):
            if len(pdu) < 6:
                raise ModbusError(ILLEGAL_VALUE)
            address = _u16(pdu, 1)
            count = _u16(pdu, 3)
            size = pdu[5]
            if function == 15:
                ok = 1 <= count <= MAX_WRITE_COILS and size == (count + 7) // 8
            else:
                ok = 1 <= count <= MAX_WRITE_REGISTERS and size == 2 * count
            if not ok or len(pdu) != 6 + size:
                raise ModbusError(ILLEGAL_VALUE)
            if address + count > 0x10000:
                raise ModbusError(ILLEGAL_ADDRESS)
            if function == 15:
                model.write_coils(address, _unpack_bits(pdu[6:], count))
            else:
                values = [_u16(pdu, 6 + 2 * i) for i in range(count)]
                model.write_registers(address, values, False)
            return bytes(pdu[:5])
        raise ModbusError(ILLEGAL_FUNCTION)
