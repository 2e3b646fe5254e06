"""The serial scanner (edge.scanners.serial_reader) end to end over a real pty pair: the test
writes on the master what a scanner sends, the reader opens the slave by its path through
pyserial. Terminators, the partial-scan timeout, over-long scans, and unplugging (the master
closed, a new pty behind the same by-id style symlink)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from edge.scanners.config import ScannerConfig
from edge.scanners.serial_reader import Dropped, LineSplitter, SerialScanner


class Pty:
    """A scanner's end: the master; ``path`` is the slave the reader opens."""

    def __init__(self) -> None:
        self.master, slave = os.openpty()
        self.path = os.ttyname(slave)
        os.close(slave)

    def send(self, data: bytes) -> None:
        os.write(self.master, data)

    def unplug(self) -> None:
        os.close(self.master)


@dataclass
class Reading:
    scanner: SerialScanner
    got: asyncio.Queue[str] = field(default_factory=asyncio.Queue)
    changes: list[tuple[bool, str | None]] = field(default_factory=list)

    async def next(self, timeout: float = 3.0) -> str:
        async with asyncio.timeout(timeout):
            return await self.got.get()

    async def until(self, what: Callable[[], bool], timeout: float = 3.0) -> None:
        deadline = time.monotonic() + timeout
        while not what():
            assert time.monotonic() < deadline, f"timed out: {self.changes}"
            await asyncio.sleep(0.01)


@asynccontextmanager
async def reading(device: str, *, wait: bool = True, **kw: object) -> AsyncIterator[Reading]:
    changes: list[tuple[bool, str | None]] = []
    scanner = SerialScanner(
        device,
        reconnect_s=0.05,
        reconnect_max_s=0.2,
        on_change=lambda c, p: changes.append((c, p)),
        **kw,  # type: ignore[arg-type]
    )
    r = Reading(scanner, changes=changes)

    async def run() -> None:
        async for scan in scanner.scans():
            r.got.put_nowait(scan)

    task = asyncio.create_task(run())
    try:
        if wait:
            await r.until(lambda: scanner.connected or task.done())
        yield r
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


@pytest.fixture
def pty() -> Iterator[Pty]:
    p = Pty()
    yield p
    with suppress(OSError):
        os.close(p.master)


@pytest.mark.parametrize(
    ("terminator", "sent", "expected"),
    [
        ("any", b"OP4711/0020\r\nB12345\rM1+L1\n", ["OP4711/0020", "B12345", "M1+L1"]),
        ("crlf", b"A\r\nB\r\n", ["A", "B"]),
        ("cr", b"A\rB\r", ["A", "B"]),
        ("lf", b"A\nB\n", ["A", "B"]),
    ],
)
async def test_scans_over_a_pty(
    pty: Pty, terminator: str, sent: bytes, expected: list[str]
) -> None:
    async with reading(pty.path, terminator=terminator) as r:
        assert r.scanner.connected
        pty.send(sent)
        assert [await r.next() for _ in expected] == expected


async def test_a_crlf_split_across_reads_and_the_separator(pty: Pty) -> None:
    async with reading(pty.path, terminator="crlf") as r:
        pty.send(b"]C1010950600013435210AB\x1d")
        await asyncio.sleep(0.05)
        pty.send(b"21X\r")
        await asyncio.sleep(0.05)
        pty.send(b"\n")
        assert await r.next() == "]C1010950600013435210AB\x1d21X"


async def test_a_partial_scan_is_dropped_after_the_timeout(pty: Pty) -> None:
    async with reading(pty.path, read_timeout_s=0.2) as r:
        pty.send(b"OP47")
        await r.until(lambda: r.scanner.dropped == 1)
        pty.send(b"B777\r")
        assert await r.next() == "B777"  # the dropped part did not stick to it
        assert r.scanner.connected


async def test_an_overlong_scan_is_dropped_up_to_its_end(pty: Pty) -> None:
    async with reading(pty.path, max_length=8) as r:
        pty.send(b"123456789012\r\nSHORT\r\n")
        assert await r.next() == "SHORT"
        assert r.scanner.dropped == 1
        pty.send(b"12345678\n")  # exactly the maximum
        assert await r.next() == "12345678"


async def test_the_event_loop_is_not_blocked(pty: Pty) -> None:
    """A scan trickling in byte by byte, then a burst: the loop keeps turning meanwhile."""
    async with reading(pty.path, read_timeout_s=2.0) as r:
        gaps: list[float] = []
        last = time.monotonic()
        for b in b"]C110SLOW\x1d21BYTEWISE":
            pty.send(bytes([b]))
            await asyncio.sleep(0.005)
            now = time.monotonic()
            gaps.append(now - last)
            last = now
        pty.send(b"\r")
        assert await r.next() == "]C110SLOW\x1d21BYTEWISE"
        assert max(gaps) < 0.25, max(gaps)
        n = 300
        pty.send(b"".join(b"B%06d\r\n" % i for i in range(n)))
        got = [await r.next() for _ in range(n)]
        assert got == [f"B{i:06d}" for i in range(n)]


async def test_a_missing_device_is_reported_and_retried(tmp_path: Path) -> None:
    link = tmp_path / "scanner"
    async with reading(str(link), wait=False) as r:
        await r.until(lambda: r.scanner.problem is not None)
        assert not r.scanner.connected
        assert r.scanner.problem == f"cannot open {link}: No such file or directory"
        p = Pty()  # plugged in: the symlink appears
        try:
            link.symlink_to(p.path)
            await r.until(lambda: r.scanner.connected)
            p.send(b"B1234\r")
            assert await r.next() == "B1234"
        finally:
            p.unplug()


async def test_unplug_and_replug(tmp_path: Path) -> None:
    first = Pty()
    link = tmp_path / "by-id-scanner"
    link.symlink_to(first.path)
    async with reading(str(link)) as r:
        first.send(b"ONE\r")
        assert await r.next() == "ONE"
        first.unplug()
        await r.until(lambda: not r.scanner.connected)
        assert r.scanner.problem
        assert str(link) in r.scanner.problem
        second = Pty()
        try:
            tmp = tmp_path / "new"
            tmp.symlink_to(second.path)
            os.replace(tmp, link)
            await r.until(lambda: r.scanner.connected)
            assert r.scanner.opened == 2
            second.send(b"TWO\r\n")
            assert await r.next() == "TWO"
        finally:
            second.unplug()
    assert r.changes[0][0] is True
    assert any(not c and p for c, p in r.changes)
    states = [c for n, (c, _) in enumerate(r.changes) if n == 0 or r.changes[n - 1][0] != c]
    assert states == [True, False, True, False]  # the last: cancelled
    assert not r.scanner.connected


def test_from_config() -> None:
    cfg = ScannerConfig(enabled=True, device="/dev/ttyACM0", terminator="crlf", max_length=64)
    s = SerialScanner.from_config(cfg)
    assert (s.device, s.terminator, s.max_length, s.baudrate) == ("/dev/ttyACM0", "crlf", 64, 9600)


@pytest.mark.parametrize(
    ("terminator", "chunks", "lines"),
    [
        ("any", [b"A\r", b"\nB\n\n\rC"], [b"A", b"B"]),
        ("crlf", [b"A\rB\r\n"], [b"A\rB"]),
        ("cr", [b"\nA\r"], [b"A"]),
    ],
)
def test_line_splitter(terminator: str, chunks: list[bytes], lines: list[bytes]) -> None:
    s = LineSplitter(terminator, 16)  # type: ignore[arg-type]
    got = [line for c in chunks for line in s.feed(c)]
    assert got == lines


def test_line_splitter_drops() -> None:
    s = LineSplitter("lf", 4)
    assert s.feed(b"12345") == []
    assert s.pending
    dropped = s.drop()
    assert isinstance(dropped, Dropped)
    assert "longer than 4" in dropped.reason
    assert s.feed(b"ab") == []
    partial = s.drop()
    assert partial == Dropped("no terminator came in time: the scan is incomplete", b"ab")
    assert s.drop() is None
    with pytest.raises(ValueError, match="terminator 'x'"):
        LineSplitter("x")  # type: ignore[arg-type]


async def test_a_failing_hook_does_not_end_the_reading(pty: Pty) -> None:
    calls: list[bool] = []

    def hook(connected: bool, problem: str | None) -> None:
        calls.append(connected)
        raise RuntimeError("the caller's bug")

    scanner = SerialScanner(pty.path, on_change=hook, reconnect_s=0.05)
    stream = scanner.scans()
    try:
        pending = asyncio.ensure_future(anext(stream))
        deadline = time.monotonic() + 3
        while not scanner.connected:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        pty.send(b"STILL\r")
        async with asyncio.timeout(3):
            assert await pending == "STILL"
    finally:
        await stream.aclose()
    assert calls[0] is True
