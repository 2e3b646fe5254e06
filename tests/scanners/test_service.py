"""The scanner as one stream of inputs (edge.scanners.service): a serial scanner on a real pty,
its scans routed to an operation pick, a component batch, a badge, and refusals saying why."""

from __future__ import annotations

import asyncio
import os
import time
from datetime import date
from decimal import Decimal

from edge.domain.gs1 import check_digit
from edge.scanners.config import ScannerConfig
from edge.scanners.evdev_reader import HidScanner
from edge.scanners.route import Badge, ComponentBatch, OperationPick, Refused
from edge.scanners.serial_reader import SerialScanner
from edge.scanners.service import RoutedScan, make_reader, routed_scans

GTIN = "0400638133393" + str(check_digit("0400638133393"))


async def test_scans_over_a_pty_become_inputs() -> None:
    master, slave = os.openpty()
    path = os.ttyname(slave)
    os.close(slave)
    cfg = ScannerConfig(enabled=True, device=path, terminator="crlf", reconnect_s=0.05)
    reader = make_reader(cfg)
    assert isinstance(reader, SerialScanner)
    got: asyncio.Queue[RoutedScan] = asyncio.Queue()

    async def run() -> None:
        known = {"4242"}
        async for r in routed_scans(
            cfg, today=lambda: date(2026, 12, 2), badge_known=known.__contains__, reader=reader
        ):
            got.put_nowait(r)

    task = asyncio.create_task(run())
    try:
        deadline = time.monotonic() + 3
        while not reader.connected:
            assert time.monotonic() < deadline, reader.problem
            await asyncio.sleep(0.01)
        sent = [
            b"OP4711/0020",
            b"]C101" + GTIN.encode() + b"10L-77\x1d3704",
            b"B4242",
            b"B9999",
            b"]C101" + GTIN[:-1].encode() + b"0",
        ]
        os.write(master, b"\r\n".join(sent) + b"\r\n")
        results = []
        async with asyncio.timeout(3):
            for _ in sent:
                results.append(await got.get())
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        os.close(master)
    assert [r.raw for r in results] == [s.decode("latin-1") for s in sent]
    assert results[0].result == OperationPick("4711", "0020")
    assert results[1].result == ComponentBatch("L-77", gtin=GTIN, quantity=Decimal(4), unit="pcs")
    assert results[2].result == Badge("4242")
    unknown, malformed = results[3].result, results[4].result
    assert isinstance(unknown, Refused)
    assert unknown.message == "scan 'B9999' refused: badge '9999' belongs to no known operator"
    assert isinstance(malformed, Refused)
    assert "AI (01): bad check digit 0" in malformed.message
    assert GTIN[:-1] in malformed.code_shown


def test_make_reader_by_kind() -> None:
    cfg = ScannerConfig(enabled=True, kind="hid", device="/dev/input/event0", layout="de")
    assert isinstance(make_reader(cfg), HidScanner)
