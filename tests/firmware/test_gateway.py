"""End to end: the firmware under MicroPython on one end of a pty pair, the gateway's real Modbus
RTU source (ModbusLink, pymodbus) with a real engine and SQLite store on the other, configured
by config/modbus/pico-counter.toml. Simulated pulses in, exact counts out."""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from modbus_rtu import with_crc

from edge.config import GatewayConfig, load_config
from edge.domain.inputs import MachineState
from edge.engine import Engine
from edge.sources.modbus import ModbusLink
from tests.modbus.helpers import KEY, events, gateway, until

from .support import ROOT, Board, require_micropython

pytestmark = pytest.mark.timeout(60)

TEMPLATE = ROOT / "config" / "modbus" / "pico-counter.toml"

GATEWAY = """
[gateway]
edge_id = "wc-pico-01"
work_center = "PRESS07"
log_level = "warning"

[store]
path = "{db}"

[engine]
tick_interval_s = 0.2
"""


def minimal_config(tmp_path: Path, template: str) -> GatewayConfig:
    """The template pasted under a minimal gateway config, as the README tells a plant to."""
    path = tmp_path / "edge.toml"
    path.write_text(GATEWAY.format(db=tmp_path / "edge.db") + template)
    return load_config(path, env={})


def on_the_pty(board: Board) -> str:
    """The template, pointed at the board's pty and made quick for a test."""
    text = TEMPLATE.read_text()
    swaps = {
        'device = "/dev/ttyUSB0"': f'device = "{board.device}"',
        # this kernel refuses parity on a pty (tcsetattr EINVAL); the board's line takes "E"
        'parity = "E"': 'parity = "N"',
        "poll_interval_ms = 100": "poll_interval_ms = 20",
        "timeout_s = 0.5": "timeout_s = 0.2",
        "reconnect_min_s = 1": "reconnect_min_s = 0.05",
        "reconnect_max_s = 30": "reconnect_max_s = 0.3",
    }
    for old, new in swaps.items():
        assert text.count(old) == 1, f"the template no longer says {old!r}"
        text = text.replace(old, new)
    return text


@asynccontextmanager
async def gateway_on(board: Board, tmp_path: Path) -> AsyncIterator[tuple[Engine, ModbusLink]]:
    async with gateway(minimal_config(tmp_path, on_the_pty(board))) as (engine, link):
        yield engine, link


def counted(engine: Engine) -> tuple[int, int]:
    tally = engine.wc.operations[KEY].counted
    return int(tally.good), int(sum(tally.scrap.values()))  # scrap by reason


def raw(engine: Engine, counter: str) -> int | None:
    track = engine.wc.counters.get(counter)
    return None if track is None else track.last_value


async def exactly(engine: Engine, good: int, scrap: int, what: str) -> None:
    await until(lambda: counted(engine) == (good, scrap), 10, f"{what}: {good} good {scrap} scrap")
    await asyncio.sleep(0.1)  # a few more polls: nothing more comes
    assert counted(engine) == (good, scrap), "counted more than the board did"


async def pulses(board: Board, channel: int, n: int) -> list[int]:
    # the board's control pipe blocks for a moment; keep the gateway's loop running meanwhile
    return await asyncio.to_thread(board.pulses, channel, n)


def test_the_template_loads_into_a_gateway_config(tmp_path: Path) -> None:
    cfg = minimal_config(tmp_path, TEMPLATE.read_text())
    (source,) = cfg.sources.modbus
    assert source.transport == "rtu"
    assert (source.device, source.baudrate, source.parity, source.unit_id) == (
        "/dev/ttyUSB0",
        19200,
        "E",
        1,
    )
    assert [(c.counter, c.table, c.address) for c in source.counters] == [
        ("pico_good", "input", 0),
        ("pico_scrap", "input", 2),
    ]
    assert source.state is not None
    assert (source.state.table, source.state.running) == ("discrete_inputs", 0)
    assert {s.name: s.bits for s in cfg.counting.sources} == {"pico_good": 32, "pico_scrap": 32}


async def test_pulses_in_exact_counts_out_across_noise_and_a_restart(tmp_path: Path) -> None:
    require_micropython()
    rng = random.Random(7)
    with Board(tmp_path) as board:
        async with gateway_on(board, tmp_path) as (engine, link):
            await until(lambda: raw(engine, "pico_good") == 0, 10, "the first reading")
            assert link.link_status == "ok"
            good = scrap = 0
            # bursts of pulses between (and during) the gateway's reads
            for _ in range(25):
                n = rng.randint(1, 40)
                await pulses(board, 0, n)
                good += n
                if rng.random() < 0.3:
                    await pulses(board, 1, 1)
                    scrap += 1
                await asyncio.sleep(rng.uniform(0, 0.03))
            await exactly(engine, good, scrap, "pulses in bursts")

            # the state input
            await asyncio.to_thread(board.command, "state 1")
            await until(
                lambda: engine.wc.header.machine_state is MachineState.RUNNING, 5, "running"
            )

            # power cut: the board is gone for a moment and comes back with its counters at 0
            board.kill()
            errors = link.state.errors
            await until(lambda: link.state.errors > errors + 2, 5, "the gateway noticing")
            assert link.link_status in ("error", "down")  # unanswered reads, or reconnecting
            await asyncio.to_thread(board.start)
            await pulses(board, 0, 12)
            await pulses(board, 1, 2)
            good += 12
            scrap += 2
            await exactly(engine, good, scrap, "counts after the restart")
            assert await events(engine, "counter_reset") == 2  # one per counter, nothing doubled
            assert await events(engine, "counter_discontinuity") == 0
            await until(lambda: link.link_status == "ok", 5, "the link to be ok again")
            # the state input starts inactive after the restart
            await until(lambda: engine.wc.header.machine_state is MachineState.IDLE, 5, "idle")

            # noise on the line while the gateway polls: garbled requests get no answer, the
            # gateway retries, the board's counters are untouched
            for _ in range(10):
                os.write(board.slave, bytes(rng.randrange(256) for _ in range(rng.randint(1, 9))))
                await pulses(board, 0, 3)
                good += 3
                await asyncio.sleep(0.02)
            await exactly(engine, good, scrap, "pulses with noise on the line")
            await until(lambda: link.link_status == "ok", 5, "the link to be ok again")

        # the board answered through all of it: one restart, and the noise dropped as bad frames
        await asyncio.sleep(0.1)  # the answer to the gateway's last request, if any, arrives
        answer = board.transact(with_crc(bytes([1, 4, 0, 103, 0, 6])))
        assert len(answer) == 5 + 12
        words = [int.from_bytes(answer[3 + 2 * i : 5 + 2 * i], "big") for i in range(6)]
        boot, bad_frames = words[0], words[5]
        assert boot == 2
        assert bad_frames >= 1


async def test_a_32_bit_wrap_forced_through_the_test_register(tmp_path: Path) -> None:
    require_micropython()
    with Board(tmp_path) as board:
        near = 2**32 - 20
        preset = bytes([1, 16, 0, 200, 0, 2, 4, *near.to_bytes(4, "big")])
        assert board.transact(with_crc(preset)) == with_crc(bytes([1, 16, 0, 200, 0, 2]))
        async with gateway_on(board, tmp_path) as (engine, link):
            await until(lambda: raw(engine, "pico_good") == near, 10, "the preset value")
            await pulses(board, 0, 15)
            await exactly(engine, 15, 0, "before the wrap")
            assert raw(engine, "pico_good") == 2**32 - 5
            for _ in range(10):  # across the wrap in single steps, read on the way
                await pulses(board, 0, 1)
                await asyncio.sleep(0.01)
            await pulses(board, 0, 40)
            final = board.command("counts")[0]
            assert final == 45  # 2**32 - 5 + 50, modulo 2**32
            await exactly(engine, 65, 0, "across the wrap")
            assert link.state.values["pico_good"] == final
            assert await events(engine, "counter_wrapped") == 1
            assert await events(engine, "counter_discontinuity") == 0
