"""A Modbus counter I/O module (TCP or RTU) for the demo and the tests.

Run it::

    python -m simulators.modbus_io --port 5020 --rate 2.0 [--host 127.0.0.1] [--unit 1] \\
        [--counters16 2] [--counters32 1] [--word-order big|little] [--base32 100]
    python -m simulators.modbus_io --pty --rate 2.0          # RTU on a new pty; prints its path
    python -m simulators.modbus_io --serial /dev/ttyUSB1     # RTU on a real serial port

or use it from a test::

    async with ModbusIoSimulator(port=0, counters16=2, counters32=1) as sim:
        sim.add(0, 5)                   # five pulses on counter 0, exactly
        sim.set_input(0, True)          # the machine's "running" input
        sim.fail_next(2, 0x06)          # the next two requests: exception 06 (device busy)
        sim.stall = True                # no answers at all (timeouts) until False again
        await sim.power_cycle(offline_s=0.5)   # counters and coils back to 0
        print(sim.port, sim.coil_history)

    async with ModbusIoSimulator(transport="rtu") as sim:   # RTU on a pty pair
        print(sim.device)                                     # the client opens this path
        sim.corrupt_crc = True                                # every answer fails its CRC

Register map (0-based protocol addresses; holding and input registers hold the same values)::

    0 .. counters16-1            16-bit counters, wrapping 65535 -> 0
    base32 + 2k, base32 + 2k+1   32-bit counter k, in the configured word order
                                 ("big": high word first, "little": low word first)
    discrete inputs 0 ..         machine state bits, set with set_input()
    coils 0 ..                   outputs (the stack light); every write lands in coil_history

Everything else answers exception 02 (illegal data address); writing registers is refused
the same way, as on a module whose counters are read-only. Counter ``i`` counts
16-bit counters first, then 32-bit ones (``address_of(i)`` gives its register).

Another unit id is treated the way pymodbus treats a device it does not have: over TCP the
answer is exception 0x0B (gateway target device failed to respond), on a serial line no answer
at all (on a real RS-485 bus the other device, not this one, would answer).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import time
import tty
from collections import deque
from collections.abc import Sequence
from typing import Literal, cast

import structlog
from pymodbus.constants import ExcCodes
from pymodbus.exceptions import NoSuchIdException
from pymodbus.framer import FramerType
from pymodbus.pdu import ModbusPDU
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice
from pymodbus.simulator.simcore import SimCore
from pymodbus.transport import ModbusProtocol

log = structlog.get_logger("simulators.modbus_io")

WordOrder = Literal["big", "little"]
_READ_REGISTERS = (3, 4)
_WRITE_COILS = (5, 15)


class _OneUnit(SimCore):
    """pymodbus' SimCore answers every unit id it does not know with a KeyError (exception 04
    and a traceback in its log); a module has one unit id, and pymodbus' own answer to a
    missing device (NoSuchIdException: 0x0B over TCP, silence with ignore_missing_devices) is
    what a real one does."""

    def __init__(self, device: SimDevice) -> None:
        super().__init__(device)
        self.unit = device.id

    async def async_getValues(
        self, device_id: int, func_code: int, address: int, count: int = 1
    ) -> list[int] | list[bool] | ExcCodes:
        self._check(device_id)
        return await super().async_getValues(device_id, func_code, address, count)

    async def async_setValues(
        self, device_id: int, func_code: int, address: int, values: list[int] | list[bool]
    ) -> ExcCodes | None:
        self._check(device_id)
        return await super().async_setValues(device_id, func_code, address, values)

    def _check(self, device_id: int) -> None:
        if device_id != self.unit:
            raise NoSuchIdException(f"unit {device_id} is not this module ({self.unit})")


class _PtyTransport(asyncio.Transport):
    """An asyncio transport on a pty master fd: pymodbus' serial transport opens a device by
    its path, and a pty master has none (the client opens the slave's path)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int, protocol: ModbusProtocol) -> None:
        super().__init__()
        self._loop = loop
        self._fd = fd
        self._protocol = protocol
        self._out = bytearray()
        self._closing = False
        os.set_blocking(fd, False)
        loop.add_reader(fd, self._readable)

    def _readable(self) -> None:
        try:
            data = os.read(self._fd, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return  # EIO while no one holds the other end open; we keep it open, so rare
        if data:
            self._protocol.data_received(data)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing or not data:
            return
        self._out += data
        self._flush()

    def _flush(self) -> None:
        while self._out:
            try:
                n = os.write(self._fd, self._out)
            except (BlockingIOError, InterruptedError):
                self._loop.add_writer(self._fd, self._flush)
                return
            except OSError:
                self._out.clear()
                break
            del self._out[:n]
        self._loop.remove_writer(self._fd)

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._loop.remove_reader(self._fd)
        self._loop.remove_writer(self._fd)
        os.close(self._fd)


class ModbusIoSimulator:
    """A counter I/O module: counters, state inputs, coils and injectable faults."""

    def __init__(
        self,
        *,
        transport: Literal["tcp", "rtu"] = "tcp",
        host: str = "127.0.0.1",
        port: int = 0,
        device: str | None = None,
        baudrate: int = 19200,
        parity: Literal["N", "E", "O"] = "E",
        stopbits: int = 1,
        unit_id: int = 1,
        counters16: int = 2,
        counters32: int = 1,
        base32: int = 100,
        word_order: WordOrder = "big",
        rate: float | Sequence[float] = 0.0,
        inputs: int = 16,
        coils: int = 16,
        tick_s: float = 0.01,
    ) -> None:
        if counters16 + counters32 < 1 or inputs < 1 or coils < 1:
            raise ValueError("a module needs at least one counter, one input and one coil")
        if counters16 > base32:
            raise ValueError("the 16-bit counters would overlap the 32-bit ones; raise base32")
        self.transport = transport
        self.host = host
        self.port = port
        # RTU: the serial device to serve on; None makes a pty pair and serves its master end,
        # and ``device`` is then the path of the other end, for the client.
        self.device = device
        self._own_pty = transport == "rtu" and device is None
        self.baudrate = baudrate
        self.parity = parity
        self.stopbits = stopbits
        self.unit_id = unit_id
        self.counters16 = counters16
        self.counters32 = counters32
        self.base32 = base32
        self.word_order: WordOrder = word_order
        n = counters16 + counters32
        self.rates = [float(rate)] * n if isinstance(rate, (int, float)) else list(rate)
        if len(self.rates) != n:
            raise ValueError(f"rate: one value, or one per counter ({n})")
        self.tick_s = tick_s
        self.counters = [0] * n
        self.inputs = [False] * inputs
        self.coils = [False] * coils
        self.coil_history: list[tuple[float, int, bool]] = []  # (time.monotonic(), coil, value)
        self.requests: deque[tuple[int, int, int, int]] = deque(maxlen=2000)  # unit, fc, addr, n
        self.stall = False  # take requests and never answer
        self.corrupt_crc = False  # RTU: answer with a wrong CRC
        self._failures = 0
        self._failure_code = ExcCodes.DEVICE_FAILURE
        self._fraction = [0.0] * n
        self._powered = True
        self._server: ModbusTcpServer | ModbusSerialServer | None = None
        self._pty: _PtyTransport | None = None
        self._pty_handler: ModbusProtocol | None = None
        self._slave_fd: int | None = None
        self._master_fd = -1
        self._ticker: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> ModbusIoSimulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Serve (again); counting starts with it."""
        if self._server is None:
            await self._serve()
        if self._ticker is None:
            self._ticker = asyncio.create_task(self._tick(), name="modbus-io-sim-ticker")

    async def aclose(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        await self._unserve()
        if self._slave_fd is not None:
            os.close(self._slave_fd)
            self._slave_fd = None

    async def _serve(self) -> None:
        unit = self._device()
        if self.transport == "tcp":
            tcp = ModbusTcpServer(
                unit,
                address=(self.host, self.port),
                trace_packet=self._trace_packet,
                trace_pdu=self._trace_pdu,
            )
            tcp.context = _OneUnit(unit)
            await tcp.serve_forever(background=True)
            server = cast(asyncio.Server, tcp.transport)
            self.port = int(server.sockets[0].getsockname()[1])
            self._server = tcp
            log.info("modbus i/o module listening", host=self.host, port=self.port)
            return
        if self._own_pty and self._slave_fd is None:
            master, slave = os.openpty()
            tty.setraw(slave)
            self._slave_fd = slave
            self._master_fd = master
            self.device = os.ttyname(slave)
        assert self.device is not None
        rtu = ModbusSerialServer(
            unit,
            framer=FramerType.RTU,
            port=self.device,
            baudrate=self.baudrate,
            parity=self.parity,
            stopbits=self.stopbits,
            ignore_missing_devices=True,
            trace_packet=self._trace_packet,
            trace_pdu=self._trace_pdu,
        )
        rtu.context = _OneUnit(unit)
        self._server = rtu
        if self._own_pty:
            handler = cast(ModbusProtocol, rtu.callback_new_connection())  # type: ignore[no-untyped-call]
            self._pty = _PtyTransport(asyncio.get_running_loop(), self._master_fd, handler)
            self._pty_handler = handler
            handler.connection_made(self._pty)
        else:
            await rtu.serve_forever(background=True)
        log.info("modbus i/o module on serial line", device=self.device, unit_id=self.unit_id)

    async def _unserve(self) -> None:
        if self._pty_handler is not None:
            self._pty_handler.close()
            self._pty_handler = None
        if self._pty is not None:
            self._pty.close()
            self._pty = None
        if self._server is not None:
            server, self._server = self._server, None
            await server.shutdown()  # type: ignore[no-untyped-call]

    def _device(self) -> SimDevice:
        registers = []
        if self.counters16:
            registers.append(
                SimData(0, count=self.counters16, values=0, datatype=DataType.REGISTERS)
            )
        if self.counters32:
            registers.append(
                SimData(
                    self.base32, count=2 * self.counters32, values=0, datatype=DataType.REGISTERS
                )
            )
        for entry in registers:
            entry.readonly = True
        holding = registers
        input_regs = [
            SimData(e.address, count=e.count, values=0, datatype=DataType.REGISTERS)
            for e in registers
        ]
        coils = [SimData(0, count=len(self.coils), values=False, datatype=DataType.BITS)]
        inputs = [SimData(0, count=len(self.inputs), values=False, datatype=DataType.BITS)]
        return SimDevice(
            self.unit_id, simdata=(coils, inputs, holding, input_regs), action=self._action
        )

    # ------------------------------------------------------------------ the machine

    def address_of(self, index: int) -> int:
        """The (first) register address of counter ``index``."""
        if index < self.counters16:
            return index
        return self.base32 + 2 * (index - self.counters16)

    def bits_of(self, index: int) -> int:
        return 16 if index < self.counters16 else 32

    def counter(self, index: int) -> int:
        return self.counters[index]

    def add(self, index: int, n: int = 1) -> None:
        """``n`` pulses on counter ``index``, wrapping like the module's register."""
        self.counters[index] = (self.counters[index] + n) % (1 << self.bits_of(index))

    def set_counter(self, index: int, value: int) -> None:
        self.counters[index] = value % (1 << self.bits_of(index))

    def set_input(self, address: int, value: bool) -> None:
        self.inputs[address] = value

    def fail_next(self, n: int, exception_code: int = ExcCodes.DEVICE_FAILURE) -> None:
        """Answer the next ``n`` requests with this Modbus exception code."""
        self._failures = n
        self._failure_code = ExcCodes(exception_code)

    async def power_cycle(self, offline_s: float = 0.0) -> None:
        """Power off and on: counters and coils back to 0 (inputs follow the machine). With
        ``offline_s`` the module is unreachable that long: over TCP it closes its port and
        drops every connection, on a serial line it stops answering."""
        self._powered = False
        if offline_s > 0 and self.transport == "tcp":
            await self._unserve()
        self.counters = [0] * len(self.counters)
        self._fraction = [0.0] * len(self._fraction)
        self.coils = [False] * len(self.coils)
        if offline_s > 0:
            await asyncio.sleep(offline_s)
            if self.transport == "tcp":
                await self._serve()
        self._powered = True
        log.info("modbus i/o module power-cycled", offline_s=offline_s)

    async def _tick(self) -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(self.tick_s)
            now = time.monotonic()
            elapsed, last = now - last, now
            if not self._powered:
                continue
            for i, rate in enumerate(self.rates):
                if rate <= 0:
                    continue
                self._fraction[i] += rate * elapsed
                whole = int(self._fraction[i])
                if whole:
                    self._fraction[i] -= whole
                    self.add(i, whole)

    # ------------------------------------------------------------------ pymodbus hooks

    def _register_values(self) -> dict[int, int]:
        values: dict[int, int] = {}
        for i, value in enumerate(self.counters):
            address = self.address_of(i)
            if i < self.counters16:
                values[address] = value
                continue
            high, low = value >> 16, value & 0xFFFF
            first, second = (high, low) if self.word_order == "big" else (low, high)
            values[address], values[address + 1] = first, second
        return values

    async def _action(
        self,
        func_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        """Called by pymodbus on every valid access: fault injection, then the block it is
        about to answer from is filled from the model (which alone changes over time)."""
        if self._failures > 0:
            self._failures -= 1
            return self._failure_code
        if func_code in _READ_REGISTERS:
            for reg, value in self._register_values().items():
                registers[reg - start_address] = value
        elif func_code == 2:
            _pack_bits(registers, start_address, self.inputs)
        elif func_code == 1:
            _pack_bits(registers, start_address, self.coils)
        elif func_code in _WRITE_COILS and set_values is not None:
            at = time.monotonic()
            for offset, value in enumerate(set_values):
                self.coils[address + offset] = bool(value)
                self.coil_history.append((at, address + offset, bool(value)))
        return None

    def _trace_pdu(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU:
        if sending:
            return pdu
        self.requests.append((pdu.dev_id, pdu.function_code, pdu.address, pdu.count))
        if self.stall or not self._powered:
            # pymodbus' request handler skips a request whose traced PDU is falsy: no answer.
            return cast(ModbusPDU, None)
        return pdu

    def _trace_packet(self, sending: bool, data: bytes) -> bytes:
        if sending and self.corrupt_crc and self.transport == "rtu" and len(data) >= 4:
            return data[:-1] + bytes([data[-1] ^ 0xFF])
        return data


def _pack_bits(registers: list[int], start_register: int, bits: list[bool]) -> None:
    """Bits into pymodbus' bit block: 16 to a register, bit 0 in the lowest position."""
    for i in range(0, len(bits), 16):
        word = 0
        for j, bit in enumerate(bits[i : i + 16]):
            if bit:
                word |= 1 << j
        registers[i // 16 - start_register] = word


# --------------------------------------------------------------------------- CLI


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    doc = __doc__ or ""
    p = argparse.ArgumentParser(
        prog="python -m simulators.modbus_io", description=doc.split("\n")[0]
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument("--port", type=int, default=5020, help="Modbus TCP port (0 = a free one)")
    where.add_argument("--serial", metavar="DEVICE", help="Modbus RTU on this serial device")
    where.add_argument("--pty", action="store_true", help="Modbus RTU on a new pty pair")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--baudrate", type=int, default=19200)
    p.add_argument("--parity", choices=("N", "E", "O"), default="E")
    p.add_argument("--stopbits", type=int, choices=(1, 2), default=1)
    p.add_argument("--unit", type=int, default=1, help="unit id (device id)")
    p.add_argument("--counters16", type=int, default=2)
    p.add_argument("--counters32", type=int, default=1)
    p.add_argument("--base32", type=int, default=100, help="register of the first 32-bit counter")
    p.add_argument("--word-order", choices=("big", "little"), default="big")
    p.add_argument("--rate", type=float, default=1.0, help="pulses per second, every counter")
    return p.parse_args(argv)


async def _amain(args: argparse.Namespace) -> None:
    rtu = bool(args.serial or args.pty)
    sim = ModbusIoSimulator(
        transport="rtu" if rtu else "tcp",
        host=args.host,
        port=args.port,
        device=args.serial,
        baudrate=args.baudrate,
        parity=args.parity,
        stopbits=args.stopbits,
        unit_id=args.unit,
        counters16=args.counters16,
        counters32=args.counters32,
        base32=args.base32,
        word_order=args.word_order,
        rate=args.rate,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    async with sim:
        where = sim.device if rtu else f"{sim.host}:{sim.port}"
        print(f"modbus i/o module (unit {sim.unit_id}) ready on {where}", flush=True)
        for i in range(len(sim.counters)):
            print(
                f"  counter {i}: {sim.bits_of(i)}-bit at holding/input register "
                f"{sim.address_of(i)}",
                flush=True,
            )
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 5.0)
            log.info("counters", values=list(sim.counters), coils=_on(sim.coils))


def _on(bits: list[bool]) -> list[int]:
    return [i for i, bit in enumerate(bits) if bit]


def main(argv: list[str] | None = None) -> None:
    args = _parse_args(argv)
    # stdout carries the "ready" line and the register map for whoever started us; logs go
    # to stderr.
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    asyncio.run(_amain(args))


if __name__ == "__main__":
    main()
