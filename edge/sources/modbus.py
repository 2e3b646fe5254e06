"""The Modbus source: counter registers and state bits of an I/O module, polled.

One task owns one connection (Modbus TCP, or RTU on a serial port). Every poll interval it
reads the configured registers and bits, contiguous ones in one request (so a 32-bit counter's
two registers always come from the same moment), and hands what changed to the engine in one
``submit_many``. Counter values go over raw: the core's reset / wrap / gap rules decide what
counts, so a module that was power-cycled (counters back at 0) loses nothing and doubles nothing.

Machine state from bits, by precedence: **down > setup > running**; none of them set is
**idle**. A fault bit wins over everything because a machine that reports a fault is stopped
whatever else it says; setup wins over running because a machine running in setup mode makes
setup parts, not production.

A read that fails (exception response, no answer, bad CRC) is logged once per kind and block,
and so is its recovery; meanwhile the link status is "error" and polling goes on. A lost
connection is opened again with jittered backoff ("down" meanwhile). Nothing here ends the
daemon.

Outputs: :meth:`ModbusLink.write_coils` (the stack light). The values asked for are kept and
written again after every reconnect, since a module that restarted has switched its outputs off.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import termios
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

import structlog
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.framer import FramerRTU, FramerType
from pymodbus.pdu import ModbusPDU

from edge.config import GatewayConfig, ModbusSource
from edge.domain.inputs import CounterReading, Input, MachineState, MachineStateChanged
from edge.errors import EngineStopped, SourceUnavailable, StoreError
from edge.logging import Logger
from edge.ports import InputSink

Table = Literal["holding", "input", "discrete_inputs", "coils"]

# Modbus limits per request (application protocol spec, 6.1-6.4).
MAX_REGISTERS: Final = 125
MAX_BITS: Final = 2000
MAX_WRITE_COILS: Final = 1968

EXCEPTION_NAMES: Final = {
    0x01: "illegal function",
    0x02: "illegal data address",
    0x03: "illegal data value",
    0x04: "server device failure",
    0x05: "acknowledge",
    0x06: "server device busy",
    0x08: "memory parity error",
    0x0A: "gateway path unavailable",
    0x0B: "gateway target device failed to respond",
}
_STATE_ROLES: Final = ("running", "down", "setup")


def counter_bits(cfg: GatewayConfig) -> dict[str, int]:
    """Each absolute counter's width in bits, from ``[[counting.sources]]``."""
    return {s.name: s.bits for s in cfg.counting.sources if s.signal == "absolute"}


# ---------------------------------------------------------------------- planning the reads


@dataclass(frozen=True, slots=True)
class Span:
    """One thing to read: a counter (1, 2 or 4 registers) or a state bit."""

    name: str  # the counter, or the state role
    table: Table
    address: int
    count: int


@dataclass(slots=True)
class Block:
    """One request: contiguous spans of one table."""

    table: Table
    address: int
    count: int
    spans: list[Span] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.table} {self.address}-{self.address + self.count - 1}"


def plan_reads(spans: Iterable[Span]) -> list[Block]:
    """Group spans into as few requests as the protocol allows.

    Only spans that touch are merged: reading a gap between them could hit addresses the
    module does not have (exception 02) and would fail the whole block. A span is never split
    over two requests, so a multi-register counter is read in one piece.
    """
    blocks: list[Block] = []
    for span in sorted(spans, key=lambda s: (s.table, s.address)):
        limit = MAX_BITS if span.table in ("discrete_inputs", "coils") else MAX_REGISTERS
        last = blocks[-1] if blocks else None
        if (
            last is not None
            and last.table == span.table
            and span.address <= last.address + last.count
            and span.address + span.count - last.address <= limit
        ):
            last.count = max(last.count, span.address + span.count - last.address)
            last.spans.append(span)
        else:
            blocks.append(Block(span.table, span.address, span.count, [span]))
    return blocks


def decode_counter(words: Sequence[int], word_order: Literal["big", "little"]) -> int:
    """Registers to an unsigned integer; "big": high word first."""
    ordered = reversed(words) if word_order == "little" else words
    value = 0
    for word in ordered:
        value = (value << 16) | (word & 0xFFFF)
    return value


def machine_state(bits: Mapping[str, bool]) -> MachineState:
    """down > setup > running > idle (see the module docstring for why)."""
    if bits.get("down"):
        return MachineState.DOWN
    if bits.get("setup"):
        return MachineState.SETUP
    if bits.get("running"):
        return MachineState.RUNNING
    return MachineState.IDLE


# ---------------------------------------------------------------------- the link


class ReadFailed(Exception):
    """One block could not be read; ``kind`` groups failures for logging."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(slots=True)
class LinkState:
    status: str = "starting"  # "ok", "error" (connected, reads failing), "down" (no link)
    connects: int = 0
    errors: int = 0
    polls: int = 0
    last_error: str | None = None
    last_ok_ms: int | None = None
    values: dict[str, int] = field(default_factory=dict)  # counter -> last raw value
    bits: dict[str, bool] = field(default_factory=dict)  # state role -> level (after inversion)
    machine_state: MachineState | None = None


ModbusClient = AsyncModbusTcpClient | AsyncModbusSerialClient


class ModbusLink:
    """One ``[[sources.modbus]]`` module; ``bits`` gives each counter's width (counter_bits)."""

    def __init__(
        self,
        cfg: ModbusSource,
        engine: InputSink,
        *,
        bits: Mapping[str, int],
        logger: Logger | None = None,
    ) -> None:
        self.cfg = cfg
        self.engine = engine
        self.where = cfg.device if cfg.transport == "rtu" else f"{cfg.host}:{cfg.port}"
        self.log = (logger or structlog.get_logger("edge.modbus")).bind(
            source=cfg.name, address=self.where, unit_id=cfg.unit_id
        )
        self.state = LinkState()
        self.state_source = f"modbus:{cfg.name}"
        spans: list[Span] = []
        for entry in cfg.counters:
            width = bits.get(entry.counter)
            if width is None or width % 16:
                raise ValueError(
                    f"counter {entry.counter!r}: not an absolute counter of 16/32/64 bits"
                )
            spans.append(Span(entry.counter, entry.table, entry.address, width // 16))
        if cfg.state is not None:
            for role in _STATE_ROLES:
                address = getattr(cfg.state, role)
                if address is not None:
                    spans.append(Span(role, cfg.state.table, address, 1))
        self.blocks = plan_reads(spans)
        self._roles = {s.name for s in spans if s.table in ("discrete_inputs", "coils")}
        self._inverted = set(cfg.state.inverted) if cfg.state is not None else set()
        self._client: ModbusClient | None = None
        self._sent: dict[str, int] = {}  # counter -> value the engine has durably
        self._sent_state: MachineState | None = None
        self._faults: dict[str, tuple[str, str]] = {}  # block key -> (kind, text), as logged
        self._link_fault: str | None = None
        self._outputs: dict[int, bool] = {}  # coil -> value asked for
        self._rx = b""  # bytes received since the last request (RTU: to tell a bad CRC)
        _quiet_pymodbus()

    # ------------------------------------------------------------------ status for health

    @property
    def link_status(self) -> str:
        return self.state.status

    # ------------------------------------------------------------------ the loop

    async def run(self) -> None:
        delay = self.cfg.reconnect_min_s
        while True:
            polled = self.state.polls
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except EngineStopped:
                self.log.info("engine stopped; modbus source ends")
                return
            except Exception as exc:
                self._down(exc)
            _raise_if_cancelled()
            if self.state.polls > polled:
                delay = self.cfg.reconnect_min_s  # it worked for a while: a fresh outage
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(self.cfg.reconnect_max_s, delay * 2)

    def _down(self, exc: BaseException) -> None:
        reason = _describe(exc)
        self.state.errors += 1
        self.state.status = "down"
        self.state.last_error = reason
        if self._link_fault != reason:
            self.log.warning("modbus source unavailable; retrying", reason=reason)
            self._link_fault = reason

    async def _session(self) -> None:
        client = self._new_client()
        try:
            await self._connect(client)
            self._client = client
            self.state.connects += 1
            if self.state.connects == 1:
                self.log.info("modbus source connected", blocks=[b.key for b in self.blocks])
            # A new connection may be a restarted module: hand every value over again (the
            # core ignores what did not change) and switch the outputs back on.
            self._sent.clear()
            self._sent_state = None
            await self._restore_outputs(client)
            loop = asyncio.get_running_loop()
            interval = self.cfg.poll_interval_ms / 1000
            due = loop.time()
            while True:
                await self._poll(client)
                _raise_if_cancelled()
                due += interval
                now = loop.time()
                # A poll that overran (timeouts) is followed at once, not by a burst.
                due = max(due, now)
                await asyncio.sleep(due - now)
        finally:
            self._client = None
            client.close()

    def _new_client(self) -> ModbusClient:
        cfg = self.cfg
        name = f"modbus:{cfg.name}"
        # retries=0: the poll loop is the retry; reconnect_delay=0: run() reconnects, with
        # its own backoff, so pymodbus must not reconnect behind its back.
        if cfg.transport == "rtu":
            assert cfg.device is not None
            return AsyncModbusSerialClient(
                cfg.device,
                framer=FramerType.RTU,
                baudrate=cfg.baudrate,
                bytesize=cfg.bytesize,
                parity=cfg.parity,
                stopbits=cfg.stopbits,
                name=name,
                timeout=cfg.timeout_s,
                retries=0,
                reconnect_delay=0,
                trace_packet=self._trace_packet,
            )
        assert cfg.host is not None
        return AsyncModbusTcpClient(
            cfg.host,
            port=cfg.port,
            name=name,
            timeout=cfg.timeout_s,
            retries=0,
            reconnect_delay=0,
            trace_packet=self._trace_packet,
        )

    async def _connect(self, client: ModbusClient) -> None:
        cfg = self.cfg
        try:
            connected = await client.connect()
        except termios.error as exc:  # pyserial: the port refuses these line settings
            raise SourceUnavailable(
                f"serial device {cfg.device} refuses {cfg.baudrate} baud, "
                f"{cfg.bytesize}{cfg.parity}{cfg.stopbits} ({exc.args[-1]})"
            ) from None
        if connected:
            return
        if cfg.transport == "tcp":
            raise SourceUnavailable(
                f"no connection to {cfg.host}:{cfg.port} "
                f"(refused, unreachable or no answer within {cfg.timeout_s} s)"
            )
        if cfg.device is not None and not os.path.exists(cfg.device):
            raise SourceUnavailable(f"serial device {cfg.device} does not exist")
        raise SourceUnavailable(
            f"serial device {cfg.device} cannot be opened "
            "(in use by another program, or no permission: is the user in group dialout?)"
        )

    # ------------------------------------------------------------------ polling

    async def _poll(self, client: ModbusClient) -> None:
        if not client.connected:
            raise SourceUnavailable("the connection was lost")
        words: dict[str, list[int]] = {}
        levels: dict[str, bool] = {}
        read = 0
        for block in self.blocks:
            try:
                data = await self._read(client, block)
            except ReadFailed as exc:
                self._fault(block, exc)
                continue
            read += 1
            self._recovered(block)
            for span in block.spans:
                at = span.address - block.address
                if block.table in ("holding", "input"):
                    words[span.name] = [int(w) for w in data[at : at + span.count]]
                else:
                    levels[span.name] = bool(data[at]) != (span.name in self._inverted)
        self.state.polls += 1
        if read or not self.blocks:
            self.state.last_ok_ms = time.time_ns() // 1_000_000
            if self._link_fault is not None:
                self.log.info("modbus source reading again", after=self._link_fault)
                self._link_fault = None
        self.state.status = "error" if self._faults else "ok"
        self.state.last_error = "; ".join(text for _, text in self._faults.values()) or None
        await self._hand_over(words, levels)

    async def _read(self, client: ModbusClient, block: Block) -> Sequence[int] | Sequence[bool]:
        readers: dict[Table, Callable[..., Awaitable[ModbusPDU]]] = {
            "holding": client.read_holding_registers,
            "input": client.read_input_registers,
            "discrete_inputs": client.read_discrete_inputs,
            "coils": client.read_coils,
        }
        try:
            response = await readers[block.table](
                block.address, count=block.count, device_id=self.cfg.unit_id
            )
        except ConnectionException:
            # Closed by the module, or by pymodbus after several unanswered requests in a
            # row (a half-open TCP connection): the session ends and run() reconnects.
            raise SourceUnavailable("the connection was lost") from None
        except ModbusIOException:
            raise self._no_answer() from None
        except ModbusException as exc:
            raise ReadFailed("error", f"{type(exc).__name__}: {exc}") from None
        if response.isError():
            code = response.exception_code
            name = EXCEPTION_NAMES.get(code, "unknown exception code")
            raise ReadFailed(f"exception {code:#04x}", f"exception response {code:#04x} ({name})")
        if block.table in ("holding", "input"):
            if len(response.registers) < block.count:
                raise ReadFailed("short", f"{len(response.registers)} registers in the answer")
            return response.registers
        if len(response.bits) < block.count:
            raise ReadFailed("short", f"{len(response.bits)} bits in the answer")
        return response.bits

    def _no_answer(self) -> ReadFailed:
        """A request without a usable answer: nothing came back, or (RTU) something that
        failed its CRC check, which pymodbus drops silently and then waits out."""
        rx = self._rx
        if rx and self.cfg.transport == "rtu":
            if len(rx) >= 4 and not FramerRTU.check_CRC(rx[:-2], int.from_bytes(rx[-2:], "big")):
                return ReadFailed("crc", f"answer failed its CRC check ({len(rx)} bytes)")
            return ReadFailed("garbled", f"garbled or incomplete answer ({len(rx)} bytes)")
        return ReadFailed("timeout", f"no answer within {self.cfg.timeout_s} s")

    def _trace_packet(self, sending: bool, data: bytes) -> bytes:
        if sending:
            self._rx = b""
        else:
            self._rx = bytes(data)  # pymodbus passes its whole receive buffer so far
        return data

    def _fault(self, block: Block, exc: ReadFailed) -> None:
        self.state.errors += 1
        previous = self._faults.get(block.key)
        self._faults[block.key] = (exc.kind, f"{block.key} unit {self.cfg.unit_id}: {exc}")
        if previous is None or previous[0] != exc.kind:
            self.log.warning(
                "modbus read failed",
                table=block.table,
                register=block.address,
                count=block.count,
                kind=exc.kind,
                reason=str(exc),
                reads=[s.name for s in block.spans],
            )

    def _recovered(self, block: Block) -> None:
        if self._faults.pop(block.key, None) is not None:
            self.log.info(
                "modbus read recovered",
                table=block.table,
                register=block.address,
                count=block.count,
            )

    async def _hand_over(self, words: Mapping[str, list[int]], levels: Mapping[str, bool]) -> None:
        now = self.engine.now()
        inputs: list[Input] = []
        values: dict[str, int] = {}
        for name, regs in words.items():
            value = decode_counter(regs, self.cfg.word_order)
            self.state.values[name] = value
            # Only changes go over: an unchanged value tells the core nothing, and every
            # accepted input is a journal row.
            if self._sent.get(name) != value:
                values[name] = value
                inputs.append(CounterReading(name, value, now))
        self.state.bits.update(levels)
        state: MachineState | None = None
        # Only from a complete set of bits: a missing fault bit must not read as "no fault".
        if self._roles and set(levels) == self._roles:
            state = machine_state(levels)
            self.state.machine_state = state
            if state is not self._sent_state:
                inputs.append(MachineStateChanged(self.state_source, state, now))
        if not inputs:
            return
        try:
            outcomes = await self.engine.submit_many(inputs)
        except StoreError:
            return  # the engine logged it; the next poll hands the same values over again
        for inp, outcome in zip(inputs, outcomes, strict=True):
            if outcome.rejection is not None:
                self.log.warning(
                    "input from modbus rejected",
                    input=type(inp).__name__,
                    reason=outcome.rejection.message,
                )
        self._sent.update(values)
        if state is not None:
            self._sent_state = state

    # ------------------------------------------------------------------ outputs

    async def write_coils(self, address: int, values: list[bool]) -> None:
        """Switch coils ``address ..`` to ``values``; raises SourceUnavailable when the module
        cannot be reached or refuses. The values are kept and written again after a reconnect.
        """
        if not values or len(values) > MAX_WRITE_COILS:
            raise ValueError(f"1-{MAX_WRITE_COILS} coils per write, not {len(values)}")
        if not 0 <= address <= 65536 - len(values):
            raise ValueError(f"coil address {address} out of range")
        for offset, value in enumerate(values):
            self._outputs[address + offset] = bool(value)
        client = self._client
        if client is None or not client.connected:
            raise SourceUnavailable(
                f"modbus:{self.cfg.name} ({self.where}) is not connected; coils {address}.. "
                "are written when it is"
            )
        await self._write(client, address, [bool(v) for v in values])

    async def _write(self, client: ModbusClient, address: int, values: list[bool]) -> None:
        where = f"coils {address}-{address + len(values) - 1} unit {self.cfg.unit_id}"
        try:
            response = await client.write_coils(address, values, device_id=self.cfg.unit_id)
        except ModbusIOException:
            raise SourceUnavailable(f"{where}: {self._no_answer()}") from None
        except ModbusException as exc:
            raise SourceUnavailable(f"{where}: {type(exc).__name__}: {exc}") from None
        if response.isError():
            code = response.exception_code
            raise SourceUnavailable(
                f"{where}: exception response {code:#04x} "
                f"({EXCEPTION_NAMES.get(code, 'unknown exception code')})"
            )

    async def _restore_outputs(self, client: ModbusClient) -> None:
        if not self._outputs:
            return
        for run in _runs(sorted(self._outputs)):
            try:
                await self._write(client, run[0], [self._outputs[c] for c in run])
            except SourceUnavailable as exc:
                self.log.warning("modbus outputs not restored", reason=str(exc))


def _runs(addresses: list[int]) -> list[list[int]]:
    """Sorted coil addresses in contiguous runs of at most one request each."""
    runs: list[list[int]] = []
    for a in addresses:
        if runs and a == runs[-1][-1] + 1 and len(runs[-1]) < MAX_WRITE_COILS:
            runs[-1].append(a)
        else:
            runs.append([a])
    return runs


def _raise_if_cancelled() -> None:
    """Python 3.11's wait_for (inside pymodbus' execute) loses a cancellation that arrives as
    the answer does, and the poll loop would go on forever; a stopping gateway must stop."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _quiet_pymodbus() -> None:
    """pymodbus logs every unanswered request as an error with a frame dump; this source
    logs each failure once, with its address and unit id. Its own lines stay available at
    debug level."""
    library = logging.getLogger("pymodbus")
    if not library.isEnabledFor(logging.DEBUG):
        logging.getLogger("pymodbus.logging").setLevel(logging.CRITICAL)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, SourceUnavailable):
        return str(exc)
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"
