"""The Modbus I/O module simulator on its own: the counting model, and the command line."""

from __future__ import annotations

import asyncio
import re
import signal
import sys

import pytest
from pymodbus.client import AsyncModbusTcpClient

from simulators.modbus_io import ModbusIoSimulator

pytestmark = pytest.mark.timeout(30)


def test_counters_wrap_at_their_width() -> None:
    sim = ModbusIoSimulator(counters16=1, counters32=1)
    sim.set_counter(0, 65534)
    sim.add(0, 3)
    assert sim.counter(0) == 1
    sim.set_counter(1, 2**32 - 1)
    sim.add(1, 2)
    assert sim.counter(1) == 1
    assert (sim.address_of(0), sim.address_of(1), sim.bits_of(1)) == (0, 100, 32)


async def test_counting_at_a_rate() -> None:
    async with ModbusIoSimulator(counters16=2, counters32=0, rate=[100.0, 0.0]) as sim:
        await asyncio.sleep(0.5)
        assert 20 <= sim.counter(0) <= 80
        assert sim.counter(1) == 0
        await sim.power_cycle()
        assert sim.counter(0) <= 5


async def test_the_command_line_serves_until_interrupted() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "simulators.modbus_io",
        "--port",
        "0",
        "--rate",
        "50",
        "--counters32",
        "0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 10)).decode()
        found = re.search(r"ready on 127\.0\.0\.1:(\d+)", line)
        assert found, line
        client = AsyncModbusTcpClient("127.0.0.1", port=int(found[1]), timeout=2, retries=0)
        assert await client.connect()
        try:
            first = (await client.read_input_registers(0, count=1, device_id=1)).registers[0]
            await asyncio.sleep(0.3)
            second = (await client.read_input_registers(0, count=1, device_id=1)).registers[0]
            assert second > first
        finally:
            client.close()
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
