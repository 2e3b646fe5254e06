"""The firmware as a process under MicroPython, spoken to with raw bytes over a pty: the frames a
noisy RS-485 line delivers, and what the standard says the board must answer (or not)."""

from __future__ import annotations

import os
import select
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from modbus_rtu import with_crc

from .support import FIRMWARE, Board, require_micropython

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def board(tmp_path: Path) -> Iterator[Board]:
    require_micropython()
    with Board(tmp_path) as b:
        yield b


def req(unit: int, *pdu: int) -> bytes:
    return with_crc(bytes([unit, *pdu]))


def registers(answer: bytes) -> list[int]:
    assert answer[:2] in (b"\x01\x03", b"\x01\x04"), answer.hex()
    assert with_crc(answer[:-2]) == answer, "the answer's CRC"
    n = answer[2] // 2
    return [int.from_bytes(answer[3 + 2 * i : 5 + 2 * i], "big") for i in range(n)]


def counters(board: Board) -> list[int]:
    words = registers(board.transact(req(1, 4, 0, 0, 0, 8)))
    return [(words[2 * i] << 16) | words[2 * i + 1] for i in range(4)]


def info(board: Board) -> dict[str, int]:
    words = registers(board.transact(req(1, 4, 0, 100, 0, 11)))
    names = ["version", "status", "heartbeat", "boot", "up_hi", "up_lo", "channels", "cause"]
    names += ["bad_frames", "exceptions", "rejected"]
    return dict(zip(names, words, strict=True))


def test_pulses_in_counts_out(board: Board) -> None:
    assert board.pulses(0, 250) == [250, 0, 0, 0]
    assert board.pulses(3, 7) == [250, 0, 0, 7]
    assert counters(board) == [250, 0, 0, 7]
    # the holding registers mirror the counters, read-only
    assert registers(board.transact(req(1, 3, 0, 6, 0, 2))) == [0, 7]
    facts = info(board)
    assert facts["version"] == 0x0100
    assert facts["channels"] == 4
    assert facts["boot"] == 1


def test_bad_frames_get_silence_or_the_right_exception_and_counts_stay(board: Board) -> None:
    board.pulses(1, 42)
    good = req(1, 4, 0, 0, 0, 8)
    # wrong CRC, a truncated frame, two bytes of noise, another unit: silence (the standard)
    assert board.transact(good[:-1] + bytes([good[-1] ^ 0x55])) == b""
    assert board.transact(good[:5]) == b""
    assert board.transact(b"\x00\xff") == b""
    assert board.transact(req(9, 4, 0, 0, 0, 8)) == b""
    # a frame cut by a pause longer than 3.5 characters: two broken frames, both dropped
    board.drain()
    os.write(board.slave, good[:4])
    time.sleep(0.05)
    assert board.transact(good[4:]) == b""
    # well-formed but refused: exception responses
    assert board.transact(req(1, 0x07)) == req(1, 0x87, 1)  # unknown function
    assert board.transact(req(1, 0x11)) == req(1, 0x91, 1)  # report server id: not here
    assert board.transact(req(1, 4, 0, 0, 0, 9)) == req(1, 0x84, 2)  # past the counters
    assert board.transact(req(1, 3, 0x27, 0x0F, 0, 1)) == req(1, 0x83, 2)  # no register 9999
    assert board.transact(req(1, 4, 0, 0, 0, 0)) == req(1, 0x84, 3)  # quantity 0
    assert board.transact(req(1, 6, 0, 1, 0, 0)) == req(1, 0x86, 2)  # counters are read-only
    assert board.transact(req(1, 16, 0, 200, 0, 1, 2, 0, 0)) == req(1, 0x90, 3)  # half a preset
    # nothing of that touched a counter, and the board keeps score of what it dropped
    assert counters(board) == [0, 42, 0, 0]
    facts = info(board)
    assert facts["bad_frames"] == 5
    assert facts["exceptions"] == 7
    assert facts["status"] & 0x0004  # "bad frame seen"
    assert board.pulses(1, 1) == [0, 43, 0, 0]


def test_back_to_back_requests_each_get_their_answer(board: Board) -> None:
    board.pulses(2, 5)
    for _ in range(20):
        assert counters(board) == [0, 0, 5, 0]


def test_debounce_register_and_bouncy_inputs(board: Board) -> None:
    # 5 ms by default; raised to 20 ms over Modbus, the same 10 ms pulses no longer count
    assert board.transact(req(1, 6, 0, 100, 0, 20)) == req(1, 6, 0, 100, 0, 20)
    assert board.command("pulse 0 10 10000") == [0, 0, 0, 0]
    assert board.transact(req(1, 6, 0, 100, 0, 5)) == req(1, 6, 0, 100, 0, 5)
    # a contact bouncing on press and release: one count per press
    for _ in range(3):
        board.command("edges 0 100:1 80:0 60:1 9000:0 70:1 90:0")
        board.command("wait 9000")
    assert board.command("counts") == [3, 0, 0, 0]
    assert info(board)["rejected"] >= 6


def test_state_input_and_coils(board: Board) -> None:
    assert board.transact(req(1, 2, 0, 0, 0, 1)) == req(1, 2, 1, 0)
    board.command("state 1")
    assert board.transact(req(1, 2, 0, 0, 0, 1)) == req(1, 2, 1, 1)
    assert board.transact(req(1, 5, 0, 3, 0xFF, 0)) == req(1, 5, 0, 3, 0xFF, 0)
    assert board.transact(req(1, 1, 0, 0, 0, 4)) == req(1, 1, 1, 0b1000)


def test_a_restart_starts_at_0_and_counts_the_boot(board: Board) -> None:
    board.pulses(0, 30)
    assert info(board)["boot"] == 1
    board.kill()
    assert board.transact(req(1, 4, 0, 0, 0, 8), wait=0.1) == b""  # off: silence
    board.start()
    assert counters(board) == [0, 0, 0, 0]
    assert info(board)["boot"] == 2
    time.sleep(1.1)
    assert info(board)["heartbeat"] >= 1


def test_the_unix_port_opens_a_serial_device_by_path(tmp_path: Path) -> None:
    """``--device PATH`` (a real adapter's way): termios puts the tty in raw mode itself."""
    command = require_micropython()
    master, slave = os.openpty()
    path = os.ttyname(slave)
    os.close(slave)
    proc = subprocess.Popen(
        [*command, str(FIRMWARE / "main.py"), "--device", path, "--unit", "7", "--channels", "1"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith(b"ready unit=7 channels=1")
        os.write(master, req(7, 4, 0, 0, 0, 2))
        answer = b""
        deadline = time.monotonic() + 5
        while len(answer) < 9 and time.monotonic() < deadline:
            if select.select([master], [], [], 0.1)[0]:
                answer += os.read(master, 64)
        assert answer == req(7, 4, 4, 0, 0, 0, 0)
    finally:
        proc.kill()
        proc.wait(5)
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                pipe.close()
        os.close(master)
