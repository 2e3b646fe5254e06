"""Digital I/O: GPIO pulse counting and Modbus TCP polling, each against a bare baseline.

    python bench/digital_io.py             # 3 runs of each part, medians (~6 min)
    python bench/digital_io.py --smoke     # one short run of each part (< 20 s), same output
    python bench/digital_io.py --runs 3 --rates 50,200,1000,5000 --gpio-seconds 2 \\
        --cycle-seconds 5 --cpu-seconds 30

Every part runs the gateway and its baseline in the same run, alternating which goes first
(swapped every run) so machine noise hits both alike; tables quote medians over ``--runs``. The
last line printed is one JSON object with the same numbers (for scripts and the smoke test).

(1) GPIO: the highest pulse rate counted without loss. The pins are gpiozero's ``MockFactory``
(one for the whole benchmark). The gateway side is the real ``GpioLink`` on a real ``Engine``
(``edge.app.open_engine``: SQLite WAL, synchronous=FULL, on a temp file) with one operation
started, so every pulse is a good part; a fresh engine (file) and link per rate step. A driver
thread makes ``rate * --gpio-seconds`` active-low pulses on the MockPin (``drive_low`` /
``drive_high``) at absolute deadlines. MockPin calls back synchronously on the driving thread
with the drive time as its ticks, so nothing is queued that could overflow: the ceiling is how
fast one thread can produce edges while the callbacks (and, for the gateway, the loop thread's
batches and commits competing for the GIL) cost what they cost. A rate step holds when the count
is exact AND the driver reached the rate (>= 95 % of it; a driver that falls behind makes fewer
pulses per second than asked, which is no proof that the rate works). Gateway count = the
``Pulses`` journaled in SQLite during the step (checked against the link's and the operation's
count too).

Debounce and rate: the link accepts an edge only if no edge came within ``bounce_ms`` before it,
and both edges restart that quiet time, so each high and each low phase must last at least
``bounce_ms``: max rate < 1 / (2 * bounce). Each step uses bounce = 1 / (8 * rate), a quarter
of a phase. The driver never lets a phase shrink below half of its nominal length (after a
stall, e.g. the loop thread holding the GIL during a batch, it catches up at up to twice the
rate), so phases stay >= 2 * bounce and a stalled driver cannot fake a debounce loss: a lost
pulse here would be a real one. The ladder goes up until a step fails or ``--gpio-limit-s``
of one contender's steps in one run are used up.

Baseline: a bare gpiozero ``DigitalInputDevice`` on the same MockFactory and pin, its
``when_activated`` callback adding 1 (no engine, no debounce: MockPin does not implement
``bounce_time``), driven the same way. "CPU ms / 1000 pulses" is the pulses' own cost: the
CPU of every thread but the driver (loop thread: batches, engine, SQLite) over the step until
the last pulse is durable, plus the driver's CPU inside ``drive_low`` / ``drive_high`` (where
the callbacks run), measured with ``time.thread_time`` around the pulses (every pulse up to
2 kHz, every 16th above, scaled up: a clock read per edge would slow the driver where it
matters); the driver's waiting (sleep, spin) is left out. At low rates this is dominated by
fixed costs: the gateway's 10 batches (commits) a second whatever the rate, and a callback
after the driver slept runs on cold caches (~10x a warm one here), for both contenders alike.
The baseline runs with no engine open (each gateway step opens its own on a fresh file).

(2) Modbus TCP poll cycle for 32 registers. The module is ``python -m simulators.modbus_io``
in a SEPARATE process on 127.0.0.1 (free port) with 16 counters of 32 bits at registers
100..131 (``--counters32 16``), each counting ``--sim-rate`` pulses/s (all in step). The gateway
side is the real ``ModbusLink`` (16 ``[[sources.modbus.counters]]``, 32 bits each, contiguous,
so the read planner makes ONE request of 32 holding registers; checked) on a real Engine, at
``poll_interval_ms = 10``, the smallest the config allows. The link keeps no timing of its own,
so its ``_poll`` (read + decode + ``submit_many`` of the changed counters until durable) is
wrapped with ``perf_counter_ns``: one sample per cycle. A cycle whose values changed hands 16
readings over and waits for their commit (fsync); the others only read; both are shown. The
baseline is a bare pymodbus ``AsyncModbusTcpClient`` reading the same 32 registers in one
request at the same 10 ms cadence, each read timed the same way.

(3) CPU % at 10 Hz polling: the engine and a ``ModbusLink`` at ``poll_interval_ms = 100`` (same
16 counters, the simulator in its process) for ``--cpu-seconds`` after a warm-up; CPU % = this
process's CPU time (``resource.getrusage``, all threads) / wall time. Baseline: the same engine
(same config, operation started, its 1 s tick) with no source, for the same time. The
simulator's CPU over the gateway's window (``/proc/<pid>/stat``) is printed for context.

Every phase is bounded in time; the simulator is terminated in ``finally``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import re
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gpiozero import DigitalInputDevice
from gpiozero.pins.mock import MockFactory, MockPin
from pymodbus.client import AsyncModbusTcpClient

from edge.app import open_engine
from edge.config import GatewayConfig, GpioSource, load_config
from edge.domain.inputs import Action, DispatchList, Input, Pulses, Transition
from edge.domain.limits import MAX_QUANTITY
from edge.domain.model import OperationKey, OperationSpec
from edge.engine import Engine
from edge.logging import configure_logging
from edge.sources.gpio import GpioLink
from edge.sources.modbus import ModbusLink, counter_bits

ROOT = Path(__file__).resolve().parents[1]

# No standard cycle time: the tick opens no "no count" stops and sets no plausibility limit.
OP = OperationSpec("4711", "0010", "FG-BENCH", MAX_QUANTITY, std_cycle_s=0.0)
KEY = OperationKey("4711", "0010")
PIN = 17
PULSE_COUNTER = "pulses"
HOLD_FRACTION = 0.95  # a step holds when the driver reached this share of the rate
# The driver's CPU inside its drive calls is read (time.thread_time, ~0.7 us a read here) around
# every pulse up to this rate, above it around every 16th pulse, so the reads do not slow the
# driver where it matters; pulse 0 is never sampled (cold code paths, ~1 ms, would dominate the
# few samples of a slow step).
CPU_SAMPLE_ALL_UP_TO_HZ = 2000.0
CPU_SAMPLE_EVERY = 16
DRAIN_TIMEOUT_S = 10.0

N_COUNTERS = 16  # 32-bit counters: 32 registers
BASE_REGISTER = 100  # the simulator's default base32
REGISTERS = 2 * N_COUNTERS
CYCLE_POLL_MS = 10.0  # the smallest poll_interval_ms the config accepts
CPU_POLL_MS = 100.0  # 10 Hz
UNIT = 1

CONFIG = """
[gateway]
edge_id = "wc-bench-01"
work_center = "BENCH01"
timezone = "Europe/Berlin"
log_level = "warning"

[store]
path = "{db}"

[engine]
tick_interval_s = 1.0
{source}"""

GPIO = """
[gpio]
pin_factory = "mock"

[[counting.sources]]
name = "{pulse_counter}"
kind = "good"
signal = "pulse"

[[sources.gpio]]
name = "bench_io"
batch_ms = 100

[[sources.gpio.counters]]
counter = "{pulse_counter}"
pin = {pin}
"""

MODBUS = """
[[sources.modbus]]
name = "bench_mb"
transport = "tcp"
host = "127.0.0.1"
port = {port}
unit_id = {unit}
poll_interval_ms = {poll_ms}
timeout_s = 1
reconnect_min_s = 0.2
reconnect_max_s = 1
word_order = "big"
"""


def counter_name(i: int) -> str:
    return f"c{i:02d}"


def gpio_config(workdir: Path) -> GatewayConfig:
    """One GPIO pulse counter (pin 17, the mock pin factory), good parts."""
    return _write(workdir, GPIO.format(pulse_counter=PULSE_COUNTER, pin=PIN))


def modbus_config(workdir: Path, port: int, poll_ms: float) -> GatewayConfig:
    """16 absolute 32-bit counters at holding registers 100..131 of the simulator."""
    # One authoritative counter for good parts, the other 15 cross-checks: all 16 are read,
    # decoded and journaled alike, and the good count is not multiplied by 16.
    source = "".join(
        f'\n[[counting.sources]]\nname = "{counter_name(i)}"\nkind = "good"\nbits = 32\n'
        f"authoritative = {'true' if i == 0 else 'false'}\n"
        for i in range(N_COUNTERS)
    )
    source += MODBUS.format(port=port, unit=UNIT, poll_ms=float(poll_ms))
    source += "".join(
        f'\n[[sources.modbus.counters]]\ncounter = "{counter_name(i)}"\ntable = "holding"\n'
        f"address = {BASE_REGISTER + 2 * i}\n"
        for i in range(N_COUNTERS)
    )
    return _write(workdir, source)


def _write(workdir: Path, source: str) -> GatewayConfig:
    """Through the gateway's own loader, as ``edge run`` reads its file."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "edge.toml"
    path.write_text(CONFIG.format(db=workdir / "edge.db", source=source))
    return load_config(path, env={})


# ---------------------------------------------------------------------- small helpers


def cpu_s() -> float:
    """CPU seconds (user + system, all threads) of this process so far."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def proc_cpu_s(pid: int) -> float:
    """CPU seconds of another process (utime + stime from /proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(xs: list[float], q: float) -> float:
    """Nearest-rank percentile; q = 1.0 is the maximum."""
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b > 0 and a == a else "-"


async def wait_until(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


def good(engine: Engine) -> int:
    return int(engine.wc.operations[KEY].counted.good)


@contextlib.asynccontextmanager
async def running_engine(cfg: GatewayConfig) -> AsyncIterator[Engine]:
    """The engine as the gateway opens it, its writer loop and tick running, one operation
    started (so counts land on it, as in production)."""
    engine = await open_engine(cfg)
    runner = asyncio.create_task(engine.run(cfg.engine.tick_interval_s))
    try:
        assert (await engine.submit(DispatchList(1, (OP,), engine.now()))).accepted
        out = await engine.submit(
            Transition(Action.START_PRODUCTION, str(KEY), "operator:1", engine.now())
        )
        assert out.accepted, out
        yield engine
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(runner, 10)
        await engine.close()


async def stop_task(task: asyncio.Task[Any]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait_for(task, 10)


# ---------------------------------------------------------------------- (1) GPIO


def bounce_ms_for(rate: float) -> float:
    """A quarter of a phase: max rate 1 / (2 * bounce) is then 4x the rate driven."""
    return 1000.0 / (8.0 * rate)


@dataclass
class Drive:
    planned: int
    pulses: int  # made (a pulse = falling edge, then rising edge)
    achieved_hz: float
    driver_cpu_s: float  # the driver thread's CPU, waiting included
    in_calls_cpu_s: float  # estimated CPU inside drive_low/drive_high (the callbacks)


def _thread_time_overhead() -> float:
    """What two back-to-back ``thread_time`` reads measure on their own (subtracted)."""
    tt = time.thread_time
    return min(-tt() + tt() for _ in range(200))


def drive_pulses(pin: MockPin, rate: float, seconds: float) -> Drive:
    """Active-low pulses at ``rate`` for ``seconds`` (absolute deadlines), on the calling thread.

    A phase is never shorter than half its nominal length, so catching up after a stall never
    squeezes edges into the debounce window. Gives up at twice the nominal duration (+0.5 s).
    """
    half = 0.5 / rate
    min_gap = half / 2
    planned = max(1, round(rate * seconds))
    tt, mono, sleep = time.thread_time, time.monotonic, time.sleep

    def wait(due: float) -> float:
        while (now := mono()) < due:
            # Sleep while far off (releases the GIL and the core); spin the last 2 ms, since a
            # sleep overshoots by tens of microseconds.
            if due - now > 0.002:
                sleep(due - now - 0.001)
        return now

    every = 1 if rate <= CPU_SAMPLE_ALL_UP_TO_HZ else CPU_SAMPLE_EVERY
    overhead = _thread_time_overhead()
    sampled = 0.0  # CPU inside the drive calls of the sampled pulses
    samples = 0
    cpu0 = tt()
    t0 = mono() + 0.005
    give_up = t0 + 2 * seconds + 0.5
    first = last = t0 - half
    made = 0
    for k in range(planned):
        now = wait(max(t0 + 2 * k * half, last + min_gap))
        if now > give_up:
            break
        if k == 0:
            first = now
        if k % every == 0 and k > 0:
            c = tt()
            pin.drive_low()
            sampled += tt() - c - overhead
            last = mono()
            wait(max(t0 + (2 * k + 1) * half, last + min_gap))
            c = tt()
            pin.drive_high()
            sampled += tt() - c - overhead
            samples += 1
        else:
            pin.drive_low()
            last = mono()
            wait(max(t0 + (2 * k + 1) * half, last + min_gap))
            pin.drive_high()
        # After the call, so the next phase is measured from when this edge really happened.
        last = mono()
        made += 1
    driver_cpu = tt() - cpu0
    # First falling edge to last rising edge, plus the closing low phase taken as nominal:
    # exactly made / rate when every edge is on time.
    span = last - first + half
    in_calls = max(0.0, sampled) * made / samples if samples else 0.0
    return Drive(planned, made, made / span if made and span > 0 else 0.0, driver_cpu, in_calls)


@dataclass
class GpioStep:
    who: str  # "gateway" | "bare"
    rate: float
    bounce_ms: float
    planned: int
    driven: int
    counted: int  # gateway: Pulses journaled in SQLite; bare: callback count
    achieved_hz: float
    cpu_ms_per_1000: float
    checks: dict[str, int] = field(default_factory=dict)  # gateway: link / operation counts

    @property
    def exact(self) -> bool:
        return self.counted == self.driven and all(v == self.driven for v in self.checks.values())

    @property
    def held(self) -> bool:
        return (
            self.exact
            and self.driven == self.planned
            and self.achieved_hz >= HOLD_FRACTION * self.rate
        )


def _journal_top(engine: Engine) -> int:
    row = engine.store.conn.execute("SELECT COALESCE(MAX(id), 0) FROM journal").fetchone()
    return int(row[0])


def _journaled_pulses(engine: Engine, after_id: int) -> int:
    return sum(
        inp.n
        for _, inp in engine.store.iter_journal(after_id)
        if isinstance(inp, Pulses) and inp.source == PULSE_COUNTER
    )


def _cpu_per_1000(proc_cpu: float, drive: Drive) -> float:
    """ms per 1000 pulses: other threads' CPU + the driver's CPU inside the drive calls."""
    others = max(0.0, proc_cpu - drive.driver_cpu_s)
    return 1e6 * (others + drive.in_calls_cpu_s) / drive.pulses if drive.pulses else float("nan")


def _source_for(cfg: GatewayConfig, bounce_ms: float) -> GpioSource:
    src = cfg.sources.gpio[0]
    entry = src.counters[0].model_copy(update={"bounce_ms": bounce_ms})
    return src.model_copy(update={"counters": [entry]})


async def gpio_gateway_step(
    workdir: Path, factory: MockFactory, rate: float, seconds: float
) -> GpioStep:
    """A fresh engine (own SQLite file) and link per step: nothing of the gateway runs during
    the bare steps, and no step inherits another's database."""
    cfg = gpio_config(workdir)
    bounce = bounce_ms_for(rate)
    async with running_engine(cfg) as engine:
        link = GpioLink(_source_for(cfg, bounce), engine, factory=factory)
        top = await engine.run_store(_journal_top, engine)
        good0 = good(engine)
        task = asyncio.create_task(link.run())
        try:
            await wait_until(lambda: link.link_status == "ok", 5, "the GPIO link")
            pin = factory.pin(PIN)
            pin.clear_states()  # MockPin keeps every state change; start the step with none
            c0 = cpu_s()
            drive = await asyncio.to_thread(drive_pulses, pin, rate, seconds)
            # The step ends when its last pulse is durable (the CPU of getting it there counts).
            with contextlib.suppress(TimeoutError):
                await wait_until(
                    lambda: link.counted >= drive.pulses, DRAIN_TIMEOUT_S, "the pulses"
                )
            proc_cpu = cpu_s() - c0
        finally:
            await stop_task(task)  # closes the pin and hands over a last partial batch, if any
        pin.clear_states()
        journaled = await engine.run_store(_journaled_pulses, engine, top)
        operation = good(engine) - good0
    return GpioStep(
        "gateway",
        rate,
        bounce,
        drive.planned,
        drive.pulses,
        journaled,
        drive.achieved_hz,
        _cpu_per_1000(proc_cpu, drive),
        {"link": link.counted, "operation": operation},
    )


async def gpio_bare_step(factory: MockFactory, rate: float, seconds: float) -> GpioStep:
    count = [0]

    def activated() -> None:
        count[0] += 1  # one thread (the driver) calls this: no lock needed

    device = DigitalInputDevice(PIN, pull_up=True, bounce_time=None, pin_factory=factory)
    try:
        device.when_activated = activated
        pin = factory.pin(PIN)
        pin.clear_states()
        c0 = cpu_s()
        drive = await asyncio.to_thread(drive_pulses, pin, rate, seconds)
        proc_cpu = cpu_s() - c0
    finally:
        device.close()
    factory.pin(PIN).clear_states()
    return GpioStep(
        "bare",
        rate,
        0.0,
        drive.planned,
        drive.pulses,
        count[0],
        drive.achieved_hz,
        _cpu_per_1000(proc_cpu, drive),
    )


async def gpio_run(
    workdir: Path,
    factory: MockFactory,
    rates: list[float],
    seconds: float,
    limit_s: float,
    gateway_first: bool,
    log: Callable[[str], None],
) -> list[GpioStep]:
    """One ladder per contender, rate by rate (alternating), each stopping at its first failure
    or when its steps have used ``limit_s``."""
    steps: list[GpioStep] = []
    alive = {"gateway": True, "bare": True}
    used = {"gateway": 0.0, "bare": 0.0}
    for rate in rates:
        order = ("gateway", "bare") if gateway_first else ("bare", "gateway")
        for who in order:
            # A step takes ``seconds`` at best, twice that if the driver falls behind.
            if not alive[who] or used[who] + seconds > limit_s:
                alive[who] = False
                continue
            w0 = time.monotonic()
            if who == "gateway":
                step = await gpio_gateway_step(workdir / f"{rate:g}", factory, rate, seconds)
            else:
                step = await gpio_bare_step(factory, rate, seconds)
            used[who] += time.monotonic() - w0
            steps.append(step)
            alive[who] = step.held
            log(
                f"  gpio {who:7s} {rate:8g} Hz: {'held' if step.held else 'FAILED'}"
                f" (driven {step.driven}/{step.planned} at {step.achieved_hz:,.0f} Hz,"
                f" counted {step.counted}{'' if step.exact else ' NOT EXACT'},"
                f" {step.cpu_ms_per_1000:.1f} ms CPU/1000)"
            )
        if not any(alive.values()):
            break
    return steps


# ---------------------------------------------------------------------- the Modbus simulator


class SimProcess:
    """``python -m simulators.modbus_io`` in its own process: 16 x 32-bit counters, TCP, free
    port on 127.0.0.1. Stopped with SIGTERM (its CLI handles it), killed if it lingers."""

    def __init__(self, rate: float, log_path: Path) -> None:
        self.rate = rate
        self.log_path = log_path
        self.proc: asyncio.subprocess.Process | None = None
        self.port = 0

    async def __aenter__(self) -> SimProcess:
        with open(self.log_path, "wb") as err:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "simulators.modbus_io",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--counters16",
                "0",
                "--counters32",
                str(N_COUNTERS),
                "--base32",
                str(BASE_REGISTER),
                "--rate",
                str(self.rate),
                cwd=ROOT,
                stdout=asyncio.subprocess.PIPE,
                stderr=err,
            )
        try:
            assert self.proc.stdout is not None
            line = await asyncio.wait_for(self.proc.stdout.readline(), 30)
            m = re.search(rb"ready on 127\.0\.0\.1:(\d+)", line)
            if m is None:
                tail = self.log_path.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"the simulator did not start: {line!r}\n{tail}")
            self.port = int(m.group(1))
        except BaseException:
            await self.aclose()
            raise
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.returncode

    def cpu_s(self) -> float:
        return proc_cpu_s(self.pid)

    async def aclose(self) -> None:
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()


@contextlib.asynccontextmanager
async def modbus_link(cfg: GatewayConfig, engine: Engine) -> AsyncIterator[ModbusLink]:
    """The configured ModbusLink polling, connected and past its first (baseline) reading."""
    link = ModbusLink(cfg.sources.modbus[0], engine, bits=counter_bits(cfg))
    # What this part claims to measure: one request for all 32 registers.
    assert [(b.table, b.address, b.count) for b in link.blocks] == [
        ("holding", BASE_REGISTER, REGISTERS)
    ], link.blocks
    task = asyncio.create_task(link.run())
    try:
        await wait_until(lambda: link.state.polls >= 2, 15, "the Modbus link")
        assert link.link_status == "ok", link.state.last_error
        yield link
        assert not task.done(), "the modbus source task ended"
        assert link.link_status == "ok", link.state.last_error
    finally:
        await stop_task(task)


# ---------------------------------------------------------------------- (2) poll cycle


@dataclass
class Cycles:
    who: str  # "gateway" | "bare"
    ms: list[float]  # one per cycle
    handed: list[bool] = field(default_factory=list)  # gateway: the cycle submitted readings

    def q(self, q: float, handed: bool | None = None) -> float:
        if handed is None:
            return pct(self.ms, q)
        return pct([m for m, h in zip(self.ms, self.handed, strict=True) if h == handed], q)

    def n(self, handed: bool | None = None) -> int:
        return len(self.ms) if handed is None else sum(1 for h in self.handed if h == handed)


async def cycle_gateway(sim: SimProcess, workdir: Path, seconds: float) -> Cycles:
    cfg = modbus_config(workdir, sim.port, CYCLE_POLL_MS)
    out = Cycles("gateway", [])
    async with running_engine(cfg) as engine, modbus_link(cfg, engine) as link:
        poll = link._poll
        submit_many = engine.submit_many
        recording = False
        submitted = False

        async def counting_submit_many(inputs: list[Input]) -> Any:
            nonlocal submitted
            submitted = True
            return await submit_many(inputs)

        async def timed_poll(client: Any) -> None:
            nonlocal submitted
            submitted = False
            t0 = time.perf_counter_ns()
            try:
                await poll(client)
            finally:
                if recording:
                    out.ms.append((time.perf_counter_ns() - t0) / 1e6)
                    out.handed.append(submitted)

        # The link looks its _poll up on the instance each cycle, so the wrapper takes over at
        # the next one; the engine's submit_many likewise.
        engine.submit_many = counting_submit_many  # type: ignore[method-assign]
        link._poll = timed_poll  # type: ignore[method-assign]
        await asyncio.sleep(0.2)  # a few cycles through the wrappers before recording
        recording = True
        await asyncio.sleep(seconds)
        recording = False
    return out


async def cycle_bare(sim: SimProcess, seconds: float) -> Cycles:
    """A plain pymodbus client: connect, then read the 32 registers in one request every
    10 ms (the same cadence as the link's), each read timed."""
    out = Cycles("bare", [])
    client = AsyncModbusTcpClient("127.0.0.1", port=sim.port, timeout=1)
    try:
        assert await client.connect(), "no connection to the simulator"
        loop = asyncio.get_running_loop()
        interval = CYCLE_POLL_MS / 1000
        warmup_until = loop.time() + 0.2
        stop_at = warmup_until + seconds
        due = loop.time()
        while (now := loop.time()) < stop_at:
            t0 = time.perf_counter_ns()
            rr = await client.read_holding_registers(BASE_REGISTER, count=REGISTERS, device_id=UNIT)
            dt = (time.perf_counter_ns() - t0) / 1e6
            assert not rr.isError(), rr
            assert len(rr.registers) == REGISTERS
            if now >= warmup_until:
                out.ms.append(dt)
            due = max(due + interval, loop.time())
            await asyncio.sleep(due - loop.time())
    finally:
        client.close()
    return out


# ---------------------------------------------------------------------- (3) CPU at 10 Hz


@dataclass
class CpuPhase:
    who: str  # "gateway" | "idle"
    window_s: float
    cpu_pct: float
    polls: int = 0
    commits: int = 0
    sim_pct: float = float("nan")


async def cpu_gateway(sim: SimProcess, workdir: Path, seconds: float, warmup_s: float) -> CpuPhase:
    cfg = modbus_config(workdir, sim.port, CPU_POLL_MS)
    async with running_engine(cfg) as engine, modbus_link(cfg, engine) as link:
        await asyncio.sleep(warmup_s)
        polls0, commits0 = link.state.polls, engine.stats.commits
        c0, s0, w0 = cpu_s(), sim.cpu_s(), time.monotonic()
        await asyncio.sleep(seconds)
        c1, s1, w1 = cpu_s(), sim.cpu_s(), time.monotonic()
        return CpuPhase(
            "gateway",
            w1 - w0,
            100 * (c1 - c0) / (w1 - w0),
            link.state.polls - polls0,
            engine.stats.commits - commits0,
            100 * (s1 - s0) / (w1 - w0),
        )


async def cpu_idle(sim: SimProcess, workdir: Path, seconds: float, warmup_s: float) -> CpuPhase:
    # The very config of the gateway phase (so the same rules, counters, tick), no link run.
    cfg = modbus_config(workdir, sim.port, CPU_POLL_MS)
    async with running_engine(cfg) as engine:
        await asyncio.sleep(warmup_s)
        commits0 = engine.stats.commits
        c0, w0 = cpu_s(), time.monotonic()
        await asyncio.sleep(seconds)
        c1, w1 = cpu_s(), time.monotonic()
        return CpuPhase(
            "idle", w1 - w0, 100 * (c1 - c0) / (w1 - w0), 0, engine.stats.commits - commits0
        )


# ---------------------------------------------------------------------- the report


def table(header: list[tuple[str, int]], rows: list[list[str]], left: int = 1) -> None:
    """A markdown table; each column (title, width); cells right-aligned after ``left``."""
    print("| " + " | ".join(f"{t:<{w}}" for t, w in header) + " |")
    print("|" + "|".join("-" * (w + 2) for _, w in header) + "|")
    for row in rows:
        cells = [
            f"{c:<{w}}" if i < left else f"{c:>{w}}"
            for i, (c, (_, w)) in enumerate(zip(row, header, strict=True))
        ]
        print("| " + " | ".join(cells) + " |")


def highest_held(steps: list[GpioStep], who: str) -> float:
    """The highest rate of an unbroken run of held steps from the bottom of the ladder."""
    best = 0.0
    for s in sorted((s for s in steps if s.who == who), key=lambda s: s.rate):
        if not s.held:
            break
        best = s.rate
    return best


@dataclass
class Results:
    args: dict[str, Any]
    gpio: list[list[GpioStep]] = field(default_factory=list)  # per run
    cycles: list[tuple[Cycles, Cycles]] = field(default_factory=list)  # (gateway, bare) per run
    cpu: list[tuple[CpuPhase, CpuPhase]] = field(default_factory=list)  # (gateway, idle) per run


def summarize(res: Results, rates: list[float]) -> dict[str, Any]:
    """The medians the tables show, as one JSON-able dict."""
    out: dict[str, Any] = {"bench": "digital_io", "runs": len(res.gpio), **res.args}
    if res.gpio:
        per_rate: list[dict[str, Any]] = []
        for rate in rates:
            row: dict[str, Any] = {"rate_hz": rate, "bounce_ms": bounce_ms_for(rate)}
            for who in ("gateway", "bare"):
                ss = [s for run in res.gpio for s in run if s.who == who and s.rate == rate]
                row[who] = (
                    {
                        "steps": len(ss),
                        "held": sum(s.held for s in ss),
                        "exact": sum(s.exact for s in ss),
                        "driven": sum(s.driven for s in ss),
                        "counted": sum(s.counted for s in ss),
                        "achieved_hz": med([s.achieved_hz for s in ss]),
                        "cpu_ms_per_1000": med([s.cpu_ms_per_1000 for s in ss]),
                    }
                    if ss
                    else None
                )
            per_rate.append(row)
        g = med([highest_held(run, "gateway") for run in res.gpio])
        b = med([highest_held(run, "bare") for run in res.gpio])
        at50 = [s for run in res.gpio for s in run if s.who == "gateway" and s.rate == 50]
        out["gpio"] = {
            "gateway_max_hz": g,
            "bare_max_hz": b,
            "ratio": g / b if b else None,
            "lossless_at_50hz": bool(at50) and all(s.held for s in at50),
            "any_loss": any(not s.exact for run in res.gpio for s in run),
            "per_rate": per_rate,
        }
    if res.cycles:
        gw = [g for g, _ in res.cycles]
        bare = [b for _, b in res.cycles]
        out["modbus_cycle"] = {
            "registers": REGISTERS,
            "poll_ms": CYCLE_POLL_MS,
            "gateway_p50_ms": med([c.q(0.5) for c in gw]),
            "gateway_p99_ms": med([c.q(0.99) for c in gw]),
            "gateway_read_only_p50_ms": med([c.q(0.5, False) for c in gw]),
            "gateway_hand_over_p50_ms": med([c.q(0.5, True) for c in gw]),
            "gateway_hand_over_p99_ms": med([c.q(0.99, True) for c in gw]),
            "gateway_cycles": sum(c.n() for c in gw),
            "gateway_hand_overs": sum(c.n(True) for c in gw),
            "bare_p50_ms": med([c.q(0.5) for c in bare]),
            "bare_p99_ms": med([c.q(0.99) for c in bare]),
            "bare_cycles": sum(c.n() for c in bare),
        }
        m = out["modbus_cycle"]
        m["ratio_p50"] = m["gateway_p50_ms"] / m["bare_p50_ms"]
        m["ratio_p99"] = m["gateway_p99_ms"] / m["bare_p99_ms"]
    if res.cpu:
        gw_pct = med([g.cpu_pct for g, _ in res.cpu])
        idle_pct = med([i.cpu_pct for _, i in res.cpu])
        out["cpu_10hz"] = {
            "window_s": med([g.window_s for g, _ in res.cpu]),
            "gateway_pct": gw_pct,
            "idle_pct": idle_pct,
            "difference_pct": gw_pct - idle_pct,
            "polls_per_s": med([g.polls / g.window_s for g, _ in res.cpu]),
            "commits_per_s": med([g.commits / g.window_s for g, _ in res.cpu]),
            "idle_commits_per_s": med([i.commits / i.window_s for _, i in res.cpu]),
            "simulator_pct": med([g.sim_pct for g, _ in res.cpu]),
        }
    return out


def _f(x: Any, fmt: str) -> str:
    return "-" if x is None or x != x else format(x, fmt)


def gpio_cells(x: dict[str, Any] | None) -> list[str]:
    """One contender's cells of a rate row: held, exact, rate reached, CPU per 1000 pulses."""
    if x is None:
        return ["-", "-", "-", "-"]
    return [
        f"{x['held']}/{x['steps']}",
        "yes" if x["exact"] == x["steps"] else "NO",
        f"{x['achieved_hz']:,.0f}",
        f"{x['cpu_ms_per_1000']:.1f}",
    ]


def report(s: dict[str, Any]) -> None:
    runs = s["runs"]
    print()
    if "gpio" in s:
        g = s["gpio"]
        print(
            f"(1) GPIO pulses on gpiozero MockFactory, {s['gpio_seconds']:g} s per rate step,"
            f" medians of {runs} run(s); held = exact count and >= {HOLD_FRACTION:.0%} of the"
            " rate reached (runs held / steps run)"
        )
        rows: list[list[str]] = []
        for r in g["per_rate"]:
            gw, bare = r["gateway"], r["bare"]
            if gw is None and bare is None:
                continue
            rows.append(
                [
                    f"{r['rate_hz']:g}",
                    f"{r['bounce_ms']:.4g}",
                    *gpio_cells(gw),
                    *gpio_cells(bare),
                    ratio(gw["cpu_ms_per_1000"], bare["cpu_ms_per_1000"])
                    if gw is not None and bare is not None
                    else "-",
                ]
            )
        table(
            [
                ("rate Hz", 7),
                ("bounce ms", 9),
                ("gw held", 7),
                ("gw exact", 8),
                ("gw reached Hz", 13),
                ("gw CPU ms/1000", 14),
                ("bare held", 9),
                ("bare exact", 10),
                ("bare reached Hz", 15),
                ("bare CPU ms/1000", 16),
                ("CPU gw/bare", 11),
            ],
            rows,
        )
        print(
            f"highest rate held (median of runs): gateway {g['gateway_max_hz']:g} Hz,"
            f" bare gpiozero {g['bare_max_hz']:g} Hz, ratio {_f(g['ratio'], '.2f')};"
            f" any pulse lost: {'YES' if g['any_loss'] else 'no'}"
        )
        print()
    if "modbus_cycle" in s:
        m = s["modbus_cycle"]
        print(
            f"(2) Modbus TCP poll cycle, {m['registers']} holding registers in one request,"
            f" every {m['poll_ms']:g} ms for {s['cycle_seconds']:g} s, simulator in its own"
            f" process ({s['sim_rate']:g} pulses/s per counter), medians of {runs} run(s)"
        )
        table(
            [("client", 44), ("cycles", 6), ("p50 ms", 6), ("p99 ms", 6)],
            [
                [
                    "gateway ModbusLink (read + hand-over)",
                    str(m["gateway_cycles"]),
                    f"{m['gateway_p50_ms']:.3f}",
                    f"{m['gateway_p99_ms']:.3f}",
                ],
                [
                    "  cycles that handed readings over (commit)",
                    str(m["gateway_hand_overs"]),
                    _f(m["gateway_hand_over_p50_ms"], ".3f"),
                    _f(m["gateway_hand_over_p99_ms"], ".3f"),
                ],
                [
                    "  cycles with nothing new (read only)",
                    str(m["gateway_cycles"] - m["gateway_hand_overs"]),
                    _f(m["gateway_read_only_p50_ms"], ".3f"),
                    "",
                ],
                [
                    "bare AsyncModbusTcpClient read",
                    str(m["bare_cycles"]),
                    f"{m['bare_p50_ms']:.3f}",
                    f"{m['bare_p99_ms']:.3f}",
                ],
                [
                    "ratio gateway / bare",
                    "",
                    ratio(m["gateway_p50_ms"], m["bare_p50_ms"]),
                    ratio(m["gateway_p99_ms"], m["bare_p99_ms"]),
                ],
            ],
        )
        print()
    if "cpu_10hz" in s:
        c = s["cpu_10hz"]
        print(
            f"(3) CPU at 10 Hz polling, {c['window_s']:.0f} s windows, medians of {runs} run(s)"
            " (this process, all threads; one core = 100 %)"
        )
        table(
            [("process", 44), ("CPU %", 6), ("polls/s", 7), ("commits/s", 9)],
            [
                [
                    "gateway: engine + ModbusLink @ 100 ms",
                    f"{c['gateway_pct']:.2f}",
                    f"{c['polls_per_s']:.1f}",
                    f"{c['commits_per_s']:.1f}",
                ],
                [
                    "baseline: the same engine idle (no source)",
                    f"{c['idle_pct']:.2f}",
                    "0",
                    f"{c['idle_commits_per_s']:.1f}",
                ],
                ["difference (the polling)", f"{c['difference_pct']:.2f}", "", ""],
                ["the simulator process (context)", f"{c['simulator_pct']:.2f}", "", ""],
            ],
        )
        print()


# ---------------------------------------------------------------------- running it


async def run(args: argparse.Namespace) -> dict[str, Any]:
    rates = [float(r) for r in args.rates.split(",") if r.strip()]
    parts = set(args.parts.split(","))
    settings = {
        "smoke": args.smoke,
        "gpio_seconds": args.gpio_seconds,
        "cycle_seconds": args.cycle_seconds,
        "cpu_seconds": args.cpu_seconds,
        "sim_rate": args.sim_rate,
    }
    res = Results(settings)

    def log(line: str) -> None:
        print(line, flush=True)

    with tempfile.TemporaryDirectory(prefix="bench-dio-") as tmp:
        work = Path(tmp)
        if "gpio" in parts:
            factory = MockFactory()
            try:
                for i in range(args.runs):
                    log(f"run {i + 1} gpio")
                    res.gpio.append(
                        await gpio_run(
                            work / f"gpio{i}",
                            factory,
                            rates,
                            args.gpio_seconds,
                            args.gpio_limit_s,
                            i % 2 == 0,
                            log,
                        )
                    )
            finally:
                factory.close()
        if parts & {"cycle", "cpu"}:
            async with SimProcess(args.sim_rate, work / "sim.log") as sim:
                for i in range(args.runs):
                    first = i % 2 == 0
                    if "cycle" in parts:
                        if first:
                            g = await cycle_gateway(sim, work / f"cyc{i}", args.cycle_seconds)
                            b = await cycle_bare(sim, args.cycle_seconds)
                        else:
                            b = await cycle_bare(sim, args.cycle_seconds)
                            g = await cycle_gateway(sim, work / f"cyc{i}", args.cycle_seconds)
                        res.cycles.append((g, b))
                        log(
                            f"run {i + 1} cycle: gateway p50/p99 {g.q(0.5):.3f}/{g.q(0.99):.3f}"
                            f" ms ({g.n()} cycles, {g.n(True)} hand-overs), bare"
                            f" {b.q(0.5):.3f}/{b.q(0.99):.3f} ms ({b.n()} reads)"
                        )
                    if "cpu" in parts:
                        secs, warm = args.cpu_seconds, args.cpu_warmup_s
                        if first:
                            gp = await cpu_gateway(sim, work / f"cpu{i}g", secs, warm)
                            ip = await cpu_idle(sim, work / f"cpu{i}i", secs, warm)
                        else:
                            ip = await cpu_idle(sim, work / f"cpu{i}i", secs, warm)
                            gp = await cpu_gateway(sim, work / f"cpu{i}g", secs, warm)
                        res.cpu.append((gp, ip))
                        log(
                            f"run {i + 1} cpu: gateway {gp.cpu_pct:.2f} % ({gp.polls} polls,"
                            f" {gp.commits} commits), idle {ip.cpu_pct:.2f} %,"
                            f" simulator {gp.sim_pct:.2f} %"
                        )
            # Checked by the smoke test: the simulator process was stopped and reaped.
            settings["simulator_exit"] = sim.returncode
    return summarize(res, rates)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    doc = __doc__ or ""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="one short run of each part (< 20 s)")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument(
        "--rates",
        default="50,200,1000,2000,5000,10000,20000,50000,70000,100000,150000,200000",
        help="GPIO pulse rates (Hz) of the ladder, comma-separated, rising",
    )
    p.add_argument("--gpio-seconds", type=float, default=2.0, help="per GPIO rate step")
    p.add_argument(
        "--gpio-limit-s", type=float, default=60.0, help="GPIO steps per contender and run"
    )
    p.add_argument("--cycle-seconds", type=float, default=5.0, help="per poll-cycle phase")
    p.add_argument("--cpu-seconds", type=float, default=30.0, help="CPU window per phase")
    p.add_argument("--cpu-warmup-s", type=float, default=2.0)
    p.add_argument(
        "--sim-rate", type=float, default=10.0, help="simulator pulses/s on every counter"
    )
    p.add_argument("--parts", default="gpio,cycle,cpu", help="which parts, comma-separated")
    args = p.parse_args(argv)
    if args.smoke:
        # Short, and the same code paths: the smoke test checks structure, not speed.
        args.runs = 1
        args.rates = "50,1000"
        args.gpio_seconds = 0.5
        args.gpio_limit_s = 5.0
        args.cycle_seconds = 1.0
        args.cpu_seconds = 2.0
        args.cpu_warmup_s = 0.5
    return args


async def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    configure_logging("error", json=True)
    logging.getLogger("asyncio").setLevel(logging.ERROR)
    summary = await run(args)
    report(summary)
    print(json.dumps(summary, default=lambda o: asdict(o)))


if __name__ == "__main__":
    asyncio.run(main())
