"""The firmware's pure logic under CPython: CRC, framing by silence, the slave, debounce, the map.

The same modules run on the board; test_micropython.py runs these scenarios again under the real
MicroPython interpreter and expects the same results.
"""

from __future__ import annotations

import pytest
from counter import Channel
from modbus_rtu import Framer, Slave, crc16, crc_ok, silent_interval_us, with_crc
from registers import RESET_WATCHDOG, ST_PRESET, ST_WATCHDOG_RESET, Board

pytestmark = pytest.mark.timeout(10)


def make_board(channels: int = 4, debounce_ms: int = 5) -> Board:
    return Board(
        [Channel(debounce_ms * 1000) for _ in range(channels)],
        Channel(20_000),
        [False] * 4,
        boot_count=3,
    )


def make_slave(board: Board | None = None, unit: int = 1) -> tuple[Slave, Board]:
    board = board or make_board()
    slave = Slave(unit, board)
    board.slave = slave
    return slave, board


def req(unit: int, *pdu: int) -> bytes:
    return with_crc(bytes([unit, *pdu]))


def u16(value: int) -> tuple[int, int]:
    return (value >> 8) & 0xFF, value & 0xFF


# -- CRC ------------------------------------------------------------------------------------------


def test_crc_of_the_standard_example() -> None:
    # "MODBUS over serial line" spec: read 10 holding registers from 0 of unit 1 -> C5 CD
    assert crc16(bytes.fromhex("01030000000A")) == 0xCDC5
    assert with_crc(bytes.fromhex("01030000000A")).hex().upper() == "01030000000AC5CD"
    assert crc16(b"123456789") == 0x4B37  # CRC-16/MODBUS check value
    assert crc16(b"") == 0xFFFF


def test_crc_check_catches_a_flipped_bit_and_short_frames() -> None:
    frame = with_crc(bytes.fromhex("0104000000080000"))
    assert crc_ok(frame)
    for i in range(len(frame)):
        broken = bytearray(frame)
        broken[i] ^= 0x10
        assert not crc_ok(bytes(broken))
    assert not crc_ok(frame[:3])


# -- framing --------------------------------------------------------------------------------------


def test_silent_interval() -> None:
    assert silent_interval_us(19200) == 2006  # 3.5 characters of 11 bits
    assert silent_interval_us(9600) == 4011
    assert silent_interval_us(115200) == 1750  # fixed above 19200 baud


def test_a_frame_ends_only_after_the_silent_interval() -> None:
    framer = Framer(2000)
    frame = req(1, 4, 0, 0, 0, 8)
    assert framer.feed(frame[:3], 0) is None
    assert framer.poll(1999) is None  # bytes in bursts: still one frame
    assert framer.feed(frame[3:], 1500) is None
    assert framer.pending()
    assert framer.poll(3499) is None
    assert framer.poll(3500) == frame
    assert not framer.pending()
    assert framer.poll(10_000) is None


def test_a_gap_cuts_a_frame_in_two_and_each_part_fails_its_crc() -> None:
    framer = Framer(2000)
    frame = req(1, 3, 0, 0, 0, 10)
    assert framer.feed(frame[:5], 0) is None
    first = framer.feed(frame[5:], 2500)  # the main loop polled late: feed hands it over
    assert first == frame[:5]
    second = framer.poll(5000)
    assert second == frame[5:]
    slave, _ = make_slave()
    assert slave.handle(first) is None
    assert slave.handle(second) is None
    assert slave.bad_frames == 2


def test_an_overlong_frame_is_dropped_and_the_next_one_is_read() -> None:
    framer = Framer(2000)
    for i in range(10):
        assert framer.feed(bytes(40), i * 100) is None  # 400 bytes without a pause
    assert framer.poll(5000) is None
    assert framer.overflows == 1
    frame = req(1, 4, 0, 0, 0, 2)
    framer.feed(frame, 6000)
    assert framer.poll(9000) == frame


# -- debounce -------------------------------------------------------------------------------------


def clean_pulses(ch: Channel, n: int, start: int, width: int) -> int:
    t = start
    for _ in range(n):
        t += width
        ch.edge(1, t)
        t += width
        ch.edge(0, t)
    t += width
    ch.poll(t)
    return t


def test_clean_pulses_count_exactly() -> None:
    ch = Channel(5000)
    clean_pulses(ch, 1000, 0, 6000)
    assert ch.value() == 1000
    assert ch.rejected == 0


def test_a_bouncing_contact_counts_once() -> None:
    ch = Channel(5000)
    t = 0
    for _ in range(3):
        # press: 4 bounces within 0.3 ms, then steady for 10 ms; release bounces the same way
        for level in (1, 0, 1, 0, 1):
            t += 100
            ch.edge(level, t)
        t += 10_000
        for level in (0, 1, 0, 1, 0):
            t += 100
            ch.edge(level, t)
        t += 10_000
        ch.poll(t)
    assert ch.value() == 3
    assert ch.rejected == 12  # each return to the accepted level within the debounce time


def test_glitches_shorter_than_the_debounce_time_never_count() -> None:
    ch = Channel(5000)
    t = 0
    for _ in range(50):
        t += 20_000
        ch.edge(1, t)
        t += 4_999  # one microsecond short
        ch.edge(0, t)
    ch.poll(t + 100_000)
    assert ch.value() == 0
    assert ch.rejected == 50
    ch.edge(1, t + 200_000)
    ch.edge(0, t + 205_000)  # exactly the debounce time counts
    ch.poll(t + 300_000)
    assert ch.value() == 1


def test_an_input_active_at_power_up_is_not_a_pulse_and_a_late_interrupt_is_put_right() -> None:
    ch = Channel(5000, level=1)
    ch.poll(1_000_000)
    assert ch.value() == 0
    ch.edge(0, 0)
    ch.edge(0, 10)  # an interrupt whose edge bounced back before the pin was read: no change
    ch.poll(10_000)
    ch.edge(1, 20_000)
    ch.poll(30_000)
    assert ch.value() == 1
    assert ch.is_active()


def test_the_32_bit_counter_wraps_to_0_in_16_bit_halves() -> None:
    ch = Channel(0)
    ch.preset(2**32 - 3)
    assert (ch.hi, ch.lo) == (0xFFFF, 0xFFFD)
    clean_pulses(ch, 5, 0, 10)
    assert ch.value() == 2
    ch.preset(0xFFFF)
    clean_pulses(ch, 1, 100, 10)
    assert ch.value() == 0x10000


# -- the slave and the register map ----------------------------------------------------------------


def test_reads_of_counters_status_and_bits() -> None:
    slave, board = make_slave()
    board.channels[0].preset(0x0001_0002)
    board.channels[3].preset(0xFFFF_FFFF)
    board.state.edge(1, 0)
    board.state.poll(30_000)
    answer = slave.handle(req(1, 4, 0, 0, 0, 8))
    assert answer == with_crc(bytes([1, 4, 16, 0, 1, 0, 2, *bytes(8), 0xFF, 0xFF, 0xFF, 0xFF]))
    assert slave.handle(req(1, 3, 0, 6, 0, 2)) == with_crc(bytes([1, 3, 4, 0xFF, 0xFF, 0xFF, 0xFF]))
    info = slave.handle(req(1, 4, 0, 100, 0, 11))
    assert info is not None
    words = [int.from_bytes(info[3 + 2 * i : 5 + 2 * i], "big") for i in range(11)]
    assert words[0] == 0x0100  # version 1.0
    assert words[3] == 3  # boot count
    assert words[6] == 4  # channels
    assert slave.handle(req(1, 2, 0, 0, 0, 5)) == with_crc(bytes([1, 2, 1, 0b00001]))
    assert slave.handle(req(1, 3, 0, 100, 0, 1)) == with_crc(bytes([1, 3, 2, 0, 5]))


def test_writes_debounce_coils_and_the_preset_test_register() -> None:
    slave, board = make_slave()
    switched: list[tuple[int, list[bool]]] = []
    board.on_outputs = lambda a, v: switched.append((a, list(v)))
    request = req(1, 6, 0, 100, 0, 10)
    assert slave.handle(request) == request  # FC 6 answers with the request's echo
    assert all(ch.debounce_us == 10_000 for ch in board.channels)
    request = req(1, 5, 0, 2, 0xFF, 0)
    assert slave.handle(request) == request
    assert board.outputs == [False, False, True, False]
    answer = slave.handle(req(1, 15, 0, 0, 0, 4, 1, 0b1001))
    assert answer == with_crc(bytes([1, 15, 0, 0, 0, 4]))
    assert board.outputs == [True, False, False, True]
    assert switched == [(2, [True]), (0, [True, False, False, True])]
    assert slave.handle(req(1, 1, 0, 0, 0, 4)) == with_crc(bytes([1, 1, 1, 0b1001]))
    preset = req(1, 16, 0, 202, 0, 2, 4, 0xFF, 0xFF, 0xFF, 0xFB)
    assert slave.handle(preset) == with_crc(bytes([1, 16, 0, 202, 0, 2]))
    assert board.channels[1].value() == 2**32 - 5
    assert board.status & ST_PRESET


@pytest.mark.parametrize(
    ("pdu", "code"),
    [
        ((7,), 1),  # read exception status: not supported
        ((0x2B, 0x0E, 1, 0), 1),  # device identification: not supported
        ((0x41, 0, 0, 0, 1), 1),  # a user function code
        ((4, 0, 0, 0, 0), 3),  # quantity 0
        ((3, 0, 0, 0, 126), 3),  # more than 125 registers
        ((4, 0, 0, 0), 3),  # a request one byte short, with a good CRC
        ((4, 0, 0, 0, 9), 2),  # counters end at input register 7
        ((4, 0, 99, 0, 1), 2),  # a gap in the map
        ((4, 0xFF, 0xFF, 0, 2), 2),  # past the end of the address space
        ((3, 0, 101, 0, 1), 2),  # status words are input registers only
        ((6, 0, 0, 0, 1), 2),  # the counters are read-only
        ((6, 0, 100, *u16(1001)), 3),  # debounce above 1000 ms
        ((6, 0, 200, 0, 1), 3),  # the preset takes both words at once
        ((16, 0, 201, 0, 2, 4, 0, 0, 0, 0), 3),  # ... starting at a channel's first word
        ((16, 0, 200, 0, 2, 3, 0, 0, 0), 3),  # byte count does not match the quantity
        ((16, 0, 206, 0, 4, 8, *bytes(8)), 2),  # there is no channel 4
        ((5, 0, 0, 0x12, 0x34), 3),  # a coil is 0xFF00 or 0x0000
        ((5, 0, 4, 0xFF, 0), 2),  # four coils
        ((2, 0, 5, 0, 1), 2),  # state + four channel levels
    ],
)
def test_bad_requests_get_the_right_exception_and_change_nothing(
    pdu: tuple[int, ...], code: int
) -> None:
    slave, board = make_slave()
    board.channels[0].preset(1234)
    answer = slave.handle(req(1, *pdu))
    assert answer == with_crc(bytes([1, pdu[0] | 0x80, code]))
    assert board.channels[0].value() == 1234
    assert [ch.value() for ch in board.channels[1:]] == [0, 0, 0]
    assert all(ch.debounce_us == 5000 for ch in board.channels)
    assert slave.exceptions == 1


def test_silence_for_bad_crc_short_frames_other_units_and_broadcasts() -> None:
    slave, board = make_slave()
    good = req(1, 4, 0, 0, 0, 2)
    assert slave.handle(good[:-1] + bytes([good[-1] ^ 1])) is None
    assert slave.handle(good[:5]) is None
    assert slave.handle(b"\x01\x04") is None
    assert slave.handle(b"") is None
    assert slave.bad_frames == 4
    assert slave.handle(req(2, 4, 0, 0, 0, 2)) is None
    assert slave.handle(req(2, 0x07)) is None  # not even an exception for another unit
    assert slave.not_for_us == 2
    # a broadcast write is carried out, never answered; a broadcast read is ignored
    assert slave.handle(req(0, 6, 0, 100, 0, 8)) is None
    assert board.channels[0].debounce_us == 8000
    assert slave.handle(req(0, 4, 0, 0, 0, 2)) is None
    assert slave.exceptions == 0
    assert slave.handle(good) is not None


def test_watchdog_reset_shows_in_the_status_word() -> None:
    board = Board([Channel(0)], None, [], boot_count=70_000, reset_cause=RESET_WATCHDOG)
    slave = Slave(1, board)
    board.slave = slave
    answer = slave.handle(req(1, 4, 0, 101, 0, 3))
    assert answer == with_crc(bytes([1, 4, 6, 0, ST_WATCHDOG_RESET, 0, 0, *u16(70_000 & 0xFFFF)]))
    board.second()
    assert board.heartbeat == 1
    # no state input fitted: discrete input 0 does not exist
    assert slave.handle(req(1, 2, 0, 0, 0, 1)) == with_crc(bytes([1, 0x82, 2]))
