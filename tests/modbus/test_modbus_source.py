"""The Modbus source against the real module simulator (pymodbus server, TCP and RTU on a pty)."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from edge.app import open_engine
from edge.domain.inputs import MachineState
from edge.errors import SourceUnavailable
from edge.sources.modbus import (
    Block,
    ModbusLink,
    Span,
    counter_bits,
    decode_counter,
    machine_state,
    plan_reads,
)
from edge.sources.registry import build_sources
from simulators.modbus_io import ModbusIoSimulator

from .helpers import (
    SOURCE,
    baseline,
    core_value,
    counted,
    events,
    free_port,
    gateway,
    good,
    modbus_config,
    until,
)

pytestmark = pytest.mark.timeout(30)


def warnings_of(logs: list[MutableMapping[str, Any]], event: str) -> list[MutableMapping[str, Any]]:
    return [e for e in logs if e["event"] == event]


# -- counting -------------------------------------------------------------------------------------


async def test_counts_stay_exact_across_a_16_bit_wrap(tmp_path: Path) -> None:
    async with ModbusIoSimulator(counters16=1, counters32=0) as sim:
        sim.set_counter(0, 65530)
        async with gateway(modbus_config(tmp_path, sim)) as (engine, link):
            await baseline(engine, sim)
            assert link.link_status == "ok"
            sim.add(0, 3)
            await counted(engine, 3)
            sim.add(0, 10)  # 65533 -> 7: across the wrap
            await counted(engine, 13)
            assert sim.counter(0) == 7
            assert await events(engine, "counter_wrapped") == 1


async def test_a_power_cycled_module_restarts_at_0_and_nothing_is_doubled(tmp_path: Path) -> None:
    async with (
        ModbusIoSimulator(counters16=1, counters32=0) as sim,
        gateway(modbus_config(tmp_path, sim)) as (engine, link),
    ):
        await baseline(engine, sim)
        sim.add(0, 50)
        await counted(engine, 50)
        # Off for a moment: the port closes, the connection drops, counters come back at 0.
        await sim.power_cycle(offline_s=0.3)
        await until(lambda: link.state.connects >= 2, 5, "the reconnect")
        await until(lambda: core_value(engine) == 0, 5, "the reset reading")
        sim.add(0, 20)
        await counted(engine, 70, "counts after the power cycle")
        # A quick one, while connected: the counter falls back to 0 between two polls.
        sim.add(0, 5)
        await counted(engine, 75)
        await sim.power_cycle()
        sim.add(0, 3)
        await counted(engine, 78, "counts after a reset between polls")
        assert await events(engine, "counter_reset") == 2
        assert await events(engine, "counter_discontinuity") == 0


@pytest.mark.parametrize("word_order", ["big", "little"])
async def test_32_bit_counter_in_either_word_order(tmp_path: Path, word_order: Any) -> None:
    async with ModbusIoSimulator(counters16=1, counters32=1, word_order=word_order) as sim:
        sim.set_counter(1, 0x0001_FFF0)  # the next parts carry into the high word
        cfg = modbus_config(tmp_path, sim, index=1, table="input")
        async with gateway(cfg) as (engine, link):
            await baseline(engine, sim, index=1)
            sim.add(1, 40)
            await counted(engine, 40)
            assert link.state.values["io_good"] == 0x0002_0018
            # One request for the counter's two registers, one for the three state bits.
            reads = {(fc, addr, n) for _, fc, addr, n in sim.requests}
            assert reads == {(4, 100, 2), (2, 0, 3)}


# -- failures -------------------------------------------------------------------------------------


async def test_module_unreachable_then_reachable(tmp_path: Path) -> None:
    sim = ModbusIoSimulator(port=free_port(), counters16=1, counters32=0)  # not serving yet
    async with gateway(modbus_config(tmp_path, sim)) as (engine, link):
        await until(lambda: link.link_status == "down", 5, "the link to be down")
        assert f"127.0.0.1:{sim.port}" in (link.state.last_error or "")
        errors = link.state.errors
        await until(lambda: link.state.errors > errors + 2, 5, "retries")
        assert engine.healthy
        await sim.start()
        try:
            await until(lambda: link.link_status == "ok", 5, "the connection")
            await baseline(engine, sim)
            sim.add(0, 7)
            await counted(engine, 7)
        finally:
            await sim.aclose()


async def test_wrong_unit_id_over_tcp_is_named_not_read(tmp_path: Path) -> None:
    async with ModbusIoSimulator(unit_id=1, counters16=1, counters32=0) as sim:
        with capture_logs() as logs:
            async with gateway(modbus_config(tmp_path, sim, unit=7)) as (engine, link):
                await until(lambda: link.link_status == "error", 5, "the error status")
                await asyncio.sleep(0.2)  # ten more polls, all failing
                error = link.state.last_error or ""
                assert "unit 7" in error
                assert "0x0b" in error
                assert "gateway target device failed to respond" in error
                assert core_value(engine) is None
                assert engine.wc.header.machine_state is None
    failed = warnings_of(logs, "modbus read failed")
    assert len(failed) == 2  # once for the counter block, once for the state bits; not per poll
    assert {e["unit_id"] for e in failed} == {7}
    assert {e["address"] for e in failed} == {f"127.0.0.1:{sim.port}"}


async def test_exception_responses_are_logged_once_and_polling_goes_on(tmp_path: Path) -> None:
    async with ModbusIoSimulator(counters16=1, counters32=0) as sim:
        with capture_logs() as logs:
            # A register the module does not have: exception 02 for that block only.
            cfg = modbus_config(tmp_path, sim, address=50)
            async with gateway(cfg) as (engine, link):
                await until(lambda: link.link_status == "error", 5, "the error status")
                await asyncio.sleep(0.2)
                assert "holding 50-50 unit 1: exception response 0x02 (illegal data address)" in (
                    link.state.last_error or ""
                )
                sim.set_input(0, True)  # the state bits are read all the same
                await until(
                    lambda: engine.wc.header.machine_state is MachineState.RUNNING, 5, "running"
                )
        failed = warnings_of(logs, "modbus read failed")
        assert len(failed) == 1
        assert failed[0]["register"] == 50
        assert failed[0]["kind"] == "exception 0x02"

        # Busy for a few requests: logged once, recovered, and no part lost.
        sub = tmp_path / "busy"
        sub.mkdir()
        with capture_logs() as logs:
            async with gateway(modbus_config(sub, sim)) as (engine, link):
                await baseline(engine, sim)
                sim.fail_next(12, 0x06)
                sim.add(0, 4)
                await until(lambda: link.link_status == "error", 5, "the error status")
                assert "server device busy" in (link.state.last_error or "")
                await counted(engine, 4)
                assert link.link_status == "ok"
        assert len(warnings_of(logs, "modbus read failed")) == 2  # each block once
        assert len(warnings_of(logs, "modbus read recovered")) == 2


async def test_a_stalled_module_times_out_and_counts_catch_up(tmp_path: Path) -> None:
    async with (
        ModbusIoSimulator(counters16=1, counters32=0) as sim,
        gateway(modbus_config(tmp_path, sim)) as (engine, link),
    ):
        await baseline(engine, sim)
        sim.stall = True
        sim.add(0, 9)
        await until(
            lambda: "no answer within 0.2 s" in (link.state.last_error or ""), 5, "timeouts"
        )
        assert link.link_status in ("error", "down")  # pymodbus drops a silent TCP peer too
        assert good(engine) == 0
        sim.stall = False
        await until(lambda: link.link_status == "ok", 5, "recovery")
        await counted(engine, 9)


# -- RTU ------------------------------------------------------------------------------------------


async def test_rtu_over_a_pty_counts_and_survives_crc_errors(tmp_path: Path) -> None:
    async with ModbusIoSimulator(transport="rtu", parity="N", counters16=1, counters32=0) as sim:
        assert sim.device is not None
        assert os.path.exists(sim.device)
        with capture_logs() as logs:
            async with gateway(modbus_config(tmp_path, sim)) as (engine, link):
                await baseline(engine, sim)
                assert link.link_status == "ok"
                sim.add(0, 11)
                await counted(engine, 11)
                sim.corrupt_crc = True
                sim.add(0, 5)
                await until(lambda: link.link_status == "error", 5, "the CRC errors")
                assert "CRC" in (link.state.last_error or "")
                await asyncio.sleep(0.3)
                assert good(engine) == 11
                sim.corrupt_crc = False
                await until(lambda: link.link_status == "ok", 5, "recovery")
                await counted(engine, 16)
        crc = [e for e in warnings_of(logs, "modbus read failed") if e["kind"] == "crc"]
        assert len(crc) == 2  # counter block and state block, once each

        # Another unit id on a serial line: silence, not an answer.
        sub = tmp_path / "unit"
        sub.mkdir()
        async with gateway(modbus_config(sub, sim, unit=9)) as (engine, link):
            await until(lambda: link.link_status == "error", 5, "the error status")
            assert "unit 9: no answer within 0.2 s" in (link.state.last_error or "")
            assert core_value(engine) is None


async def test_rtu_device_that_does_not_exist(tmp_path: Path) -> None:
    missing = tmp_path / "ttyUSB9"  # a pty path could be taken again by the next pty
    sim = ModbusIoSimulator(transport="rtu", device=str(missing), counters16=1, counters32=0)
    async with gateway(modbus_config(tmp_path, sim)) as (engine, link):
        await until(lambda: link.link_status == "down", 5, "the link to be down")
        assert link.state.last_error == f"serial device {missing} does not exist"
        assert engine.healthy


# -- state and outputs ----------------------------------------------------------------------------


async def test_state_bits_become_machine_states(tmp_path: Path) -> None:
    async with (
        ModbusIoSimulator(counters16=1, counters32=0) as sim,
        gateway(modbus_config(tmp_path, sim)) as (engine, _link),
    ):

        def state() -> MachineState | None:
            return engine.wc.header.machine_state

        await until(lambda: state() is MachineState.IDLE, 5, "idle")
        sim.set_input(0, True)
        await until(lambda: state() is MachineState.RUNNING, 5, "running")
        sim.set_input(1, True)  # a fault while the running bit is still on: down wins
        await until(lambda: state() is MachineState.DOWN, 5, "down")
        assert engine.wc.open_stop is not None
        sim.set_input(1, False)
        await until(lambda: state() is MachineState.RUNNING, 5, "running again")
        sim.set_input(2, True)  # setup wins over running
        await until(lambda: state() is MachineState.SETUP, 5, "setup")
        sim.set_input(2, False)
        sim.set_input(0, False)
        await until(lambda: state() is MachineState.IDLE, 5, "idle again")

        def journaled() -> list[str]:
            return [
                body
                for (body,) in engine.store.conn.execute(
                    "SELECT body FROM journal WHERE input_type = 'MachineStateChanged'"
                )
            ]

        # one row per change (the last one may still be on its way to disk), not per poll
        await until(lambda: len(journaled()) == 6, 5, "six state changes journaled")
        await asyncio.sleep(0.2)
        assert len(journaled()) == 6
        assert all(f'"source":"modbus:{SOURCE}"' in body for body in journaled())


async def test_an_inverted_fault_bit(tmp_path: Path) -> None:
    async with ModbusIoSimulator(counters16=1, counters32=0) as sim:
        sim.set_input(1, True)  # the normally-closed fault contact is closed: no fault
        cfg = modbus_config(tmp_path, sim, state_extra='inverted = ["down"]')
        async with gateway(cfg) as (engine, _link):
            sim.set_input(0, True)
            await until(
                lambda: engine.wc.header.machine_state is MachineState.RUNNING, 5, "running"
            )
            sim.set_input(1, False)  # contact opens (or the wire breaks): down
            await until(lambda: engine.wc.header.machine_state is MachineState.DOWN, 5, "down")


async def test_coil_writes_reach_the_module_and_come_back_after_a_restart(tmp_path: Path) -> None:
    async with (
        ModbusIoSimulator(counters16=1, counters32=0) as sim,
        gateway(modbus_config(tmp_path, sim)) as (_engine, link),
    ):
        await until(lambda: link.link_status == "ok", 5, "the connection")
        await link.write_coils(0, [True, False, True])
        assert [(a, v) for _, a, v in sim.coil_history] == [(0, True), (1, False), (2, True)]
        assert sim.coils[:3] == [True, False, True]
        cycle = asyncio.create_task(sim.power_cycle(offline_s=0.5))  # outputs off meanwhile
        await until(lambda: link.link_status == "down", 5, "the link to be down")
        with pytest.raises(SourceUnavailable, match="not connected"):
            await link.write_coils(3, [True])
        await cycle
        await until(lambda: sim.coils[:4] == [True, False, True, True], 5, "outputs restored")
        with pytest.raises(ValueError, match="coils per write"):
            await link.write_coils(0, [])
        sim.fail_next(1, 0x04)
        with pytest.raises(SourceUnavailable, match="server device failure"):
            await link.write_coils(5, [True])


async def test_the_registry_builds_and_exposes_the_link(tmp_path: Path) -> None:
    async with ModbusIoSimulator(counters16=1, counters32=0) as sim:
        cfg = modbus_config(tmp_path, sim)
        async with gateway(cfg) as (engine, _link):
            tasks = build_sources(cfg, engine)
            (task,) = tasks
            assert task.link == f"modbus:{SOURCE}"
            assert task.status() == "starting"
            assert hasattr(task.adapter, "write_coils")


async def test_the_source_ends_quietly_when_the_engine_stops(tmp_path: Path) -> None:
    async with ModbusIoSimulator(counters16=1, counters32=0) as sim:
        cfg = modbus_config(tmp_path, sim)
        engine = await open_engine(cfg)
        runner = asyncio.create_task(engine.run(None))
        link = ModbusLink(cfg.sources.modbus[0], engine, bits=counter_bits(cfg))
        source = asyncio.create_task(link.run())
        try:
            await until(lambda: link.link_status == "ok", 5, "the connection")
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner
            sim.add(0, 1)  # a change to hand over to a stopped engine
            await asyncio.wait_for(source, 5)
        finally:
            source.cancel()
            await engine.close()


# -- pure parts -----------------------------------------------------------------------------------


def test_contiguous_spans_share_a_request_and_counters_are_never_split() -> None:
    spans = [
        Span("a", "holding", 0, 1),
        Span("b", "holding", 1, 2),
        Span("c", "holding", 10, 2),
        Span("d", "input", 3, 1),
        Span("run", "discrete_inputs", 0, 1),
        Span("down", "discrete_inputs", 1, 1),
        Span("e", "holding", 124, 2),
    ]
    blocks = plan_reads(spans)
    assert [(b.table, b.address, b.count) for b in blocks] == [
        ("discrete_inputs", 0, 2),
        ("holding", 0, 3),
        ("holding", 10, 2),
        ("holding", 124, 2),
        ("input", 3, 1),
    ]
    # 125 registers at most per request: a counter that would cross the limit starts a new one
    long = [Span(f"c{i}", "holding", 2 * i, 2) for i in range(64)]
    sizes = [b.count for b in plan_reads(long)]
    assert sizes == [124, 4]
    assert all(isinstance(b, Block) for b in blocks)


def test_decoding_and_state_precedence() -> None:
    assert decode_counter([0x0002, 0x0018], "big") == 0x0002_0018
    assert decode_counter([0x0018, 0x0002], "little") == 0x0002_0018
    assert decode_counter([1, 2, 3, 4], "big") == 0x0001_0002_0003_0004
    assert decode_counter([65535], "little") == 65535
    assert machine_state({"running": True, "down": True, "setup": True}) is MachineState.DOWN
    assert machine_state({"running": True, "setup": True}) is MachineState.SETUP
    assert machine_state({"running": True}) is MachineState.RUNNING
    assert machine_state({"running": False, "down": False}) is MachineState.IDLE


async def test_edge_check_reads_each_block_and_names_what_fails(tmp_path: Path) -> None:
    """``edge check`` connects to the module and reads what the source would read."""
    from edge.check import check_modbus
    from edge.config import load_config

    async with ModbusIoSimulator(counters16=1, counters32=0) as sim:
        toml = tmp_path / "edge.toml"
        toml.write_text(
            f"""
[gateway]
edge_id = "wc-check"
work_center = "WC1"

[[counting.sources]]
name = "good"
kind = "good"
bits = 16

[[sources.modbus]]
name = "io1"
host = "127.0.0.1"
port = {sim.port}
timeout_s = 0.5

[[sources.modbus.counters]]
counter = "good"
table = "input"
address = 0

[sources.modbus.state]
running = 9000
"""
        )
        checks = await check_modbus(load_config(toml, env={}))
    by_name = {c.name: c for c in checks}
    assert by_name["modbus io1"].ok
    assert by_name["modbus io1 input 0-0"].ok
    bad = by_name["modbus io1 discrete_inputs 9000-9000"]
    assert not bad.ok
    assert "0x02" in bad.detail  # illegal data address: the register range does not exist
