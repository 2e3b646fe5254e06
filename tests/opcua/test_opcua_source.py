"""The OPC UA source against the real machine simulator (an asyncua server on a free port)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import structlog

from edge.app import open_engine
from edge.config import GatewayConfig, load_config
from edge.domain.inputs import Action, DispatchList, MachineState, Transition
from edge.domain.model import OperationKey, OperationSpec
from edge.engine import Engine
from edge.sources.opcua import OpcUaLink
from simulators.opcua_machine import MachineSimulator

# No standard cycle: these tests are about what the source reports, so no no-count stop (the
# stop rule's own timer, 3 x cycle without a part) may open in between when a busy machine
# delays a notification or the first connect; the stop rule has its own tests.
OP = OperationSpec("4711", "0020", "FG-4711", Decimal(10**6), std_cycle_s=0)
KEY = OperationKey("4711", "0020")

CONFIG = """
[gateway]
edge_id = "wc-press-07"
work_center = "PRESS07"
log_level = "warning"

[store]
path = "{db}"

[engine]
tick_interval_s = 0.2

[[counting.sources]]
name = "press_good"
kind = "good"
bits = {bits}

[[sources.opcua]]
name = "press"
endpoint = "{endpoint}"
template = "machinery"
watchdog_s = 0.5
timeout_s = 2
reconnect_min_s = 0.2
reconnect_max_s = 1
publishing_interval_ms = 20
state_node = "{state}"
alarm_node = "{alarm}"
mode_node = "{mode}"

[[sources.opcua.counters]]
counter = "press_good"
node = "{good}"
"""


def config(
    tmp_path: Path, machine: MachineSimulator, bits: int = 32, **nodes: str
) -> GatewayConfig:
    ids = {**machine.node_ids, **nodes}
    path = tmp_path / "edge.toml"
    path.write_text(
        CONFIG.format(
            db=tmp_path / "edge.db",
            bits=bits,
            endpoint=machine.endpoint,
            state=ids["state"],
            alarm=ids["alarm"],
            mode=ids["mode"],
            good=ids["good"],
        )
    )
    return load_config(path, env={})


async def until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@contextlib.asynccontextmanager
async def gateway(
    cfg: GatewayConfig, op: OperationSpec = OP
) -> AsyncIterator[tuple[Engine, OpcUaLink]]:
    """An engine with ``op`` dispatched and running, and the config's first OPC UA link."""
    engine = await open_engine(cfg)
    runner = asyncio.create_task(engine.run(cfg.engine.tick_interval_s))
    await engine.submit(DispatchList(1, (op,), engine.now()))
    key = str(OperationKey(op.order, op.operation))
    await engine.submit(Transition(Action.START_PRODUCTION, key, "operator:1", engine.now()))
    link = OpcUaLink(cfg.sources.opcua[0], engine)
    source = asyncio.create_task(link.run())
    try:
        yield engine, link
    finally:
        source.cancel()
        runner.cancel()
        for task in (source, runner):
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, 15)
        await engine.close()


def good(engine: Engine) -> int:
    return int(engine.wc.operations[KEY].counted.good)


async def test_counts_states_and_alarms_arrive(tmp_path: Path) -> None:
    async with (
        MachineSimulator(cycle_s=0.02, seed=1) as machine,
        gateway(config(tmp_path, machine)) as (engine, link),
    ):
        await until(lambda: link.link_status == "ok", 10, "the connection")
        base = machine.values["good"]
        await machine.run()
        await until(lambda: good(engine) >= 10, 10, "counts")
        await until(lambda: engine.wc.header.machine_state is MachineState.RUNNING, 5, "running")
        await machine.stop(alarm="E-217")
        await until(lambda: engine.wc.open_stop is not None, 5, "a stop")
        stop = engine.wc.open_stop
        assert stop is not None
        assert stop.alarm == "E-217"
        await asyncio.sleep(0.3)
        assert good(engine) == machine.values["good"] - base  # exact, nothing lost
        await machine.run()
        await until(lambda: engine.wc.open_stop is None, 5, "the stop to end")


async def test_server_restart_resets_counters_and_counts_stay_exact(tmp_path: Path) -> None:
    async with (
        MachineSimulator(cycle_s=0.02, seed=2) as machine,
        gateway(config(tmp_path, machine)) as (engine, link),
    ):
        await until(lambda: link.link_status == "ok", 10, "the connection")
        base = machine.values["good"]
        await machine.run()
        await until(lambda: good(engine) >= 20, 10, "counts")
        await machine.idle()
        await asyncio.sleep(0.3)
        before = machine.values["good"] - base
        assert good(engine) == before
        with structlog.testing.capture_logs() as logs:
            await machine.restart()  # a PLC power cycle: counters back to 0
            await until(
                lambda: any("unavailable" in str(e.get("event")) for e in logs), 5, "the end"
            )
        assert machine.values["good"] == 0
        # The server said BadShutdown: told in words, once, as the reason of the reconnect.
        reasons = [e["reason"] for e in logs if "unavailable" in str(e.get("event"))]
        assert "shutting down (BadShutdown" in reasons[0], reasons
        assert not any("StatusChangeNotification" in str(e) for e in logs)
        await machine.run()
        await until(lambda: machine.values["good"] >= 15, 10, "production after the restart")
        await machine.idle()
        await until(lambda: good(engine) == before + machine.values["good"], 10, "exact counts")

        def restarts_journaled() -> bool:
            # The core's state moves before its commit is on disk: wait for the commit too.
            row = engine.store.conn.execute(
                "SELECT COUNT(*) FROM journal WHERE input_type = 'SourceRestarted'"
            ).fetchone()
            return bool(row[0] >= 1)

        await until(restarts_journaled, 5, "the restart in the journal")


async def test_a_16_bit_counter_wraps_without_losing_parts(tmp_path: Path) -> None:
    async with MachineSimulator(cycle_s=0.02, bits=16, seed=3) as machine:
        await machine.set_counter(good=65530)
        async with gateway(config(tmp_path, machine, bits=16)) as (engine, link):
            await until(lambda: link.link_status == "ok", 10, "the connection")
            await machine.run()
            await until(lambda: 10 <= machine.values["good"] < 1000, 10, "the wrap")
            await machine.idle()
            made = 65536 - 65530 + machine.values["good"]
            await until(lambda: good(engine) == made, 10, "exact counts across the wrap")


async def test_server_down_at_start_then_up(tmp_path: Path) -> None:
    machine = MachineSimulator(cycle_s=0.02, seed=4)  # not serving yet
    async with gateway(config(tmp_path, machine)) as (engine, link):
        await until(lambda: link.link_status == "down", 10, "the link to be down")
        assert link.state.last_error
        assert engine.healthy
        await machine.start_server()
        try:
            await until(lambda: link.link_status == "ok", 15, "the connection")
            await machine.run()
            await until(lambda: good(engine) >= 5, 10, "counts")
        finally:
            await machine.aclose()


async def test_missing_node_and_wrong_type_are_named_and_retried(tmp_path: Path) -> None:
    async with MachineSimulator(cycle_s=0.02, seed=5) as machine:
        cases: dict[str, Any] = {
            "ns=2;s=Press07.Counters.Nope": "not found",
            machine.node_ids["program"]: "a counter needs an integer type",
        }
        for node, expected in cases.items():
            sub = tmp_path / expected.replace(" ", "_")
            sub.mkdir()
            async with gateway(config(sub, machine, good=node)) as (engine, link):
                await until(lambda: link.state.last_error is not None, 10, "the error")
                assert node in (link.state.last_error or "")
                assert expected in (link.state.last_error or "")
                seen = link.state.errors
                await until(lambda s=seen: link.state.errors > s, 5, "a retry")
                assert engine.healthy


async def test_a_silently_stalled_subscription_is_noticed_and_renewed(tmp_path: Path) -> None:
    async with (
        MachineSimulator(cycle_s=0.02, seed=6) as machine,
        gateway(config(tmp_path, machine)) as (engine, link),
    ):
        await until(lambda: link.link_status == "ok", 10, "the connection")
        base = machine.values["good"]
        connects = link.state.connects
        # The server forgets our subscription without a word: no more notifications.
        await link.subscription.delete()
        await machine.run()
        await until(lambda: link.state.connects > connects, 10, "the watchdog to resubscribe")
        await until(lambda: good(engine) >= 10, 10, "counts again")
        await machine.idle()
        await until(lambda: good(engine) == machine.values["good"] - base, 10, "exact counts")


async def test_counts_that_hit_a_full_disk_are_handed_over_again(tmp_path: Path) -> None:
    """A full disk refuses the commits: the source keeps its values and hands them over again
    once there is room; no part is lost and the source never goes dark."""
    from tests.small_disk import fill, small_disk

    with small_disk(tmp_path / "disk", size="4M") as disk:
        async with (
            MachineSimulator(cycle_s=0.02, seed=7) as machine,
            gateway(config(disk, machine)) as (engine, link),
        ):
            await until(lambda: link.link_status == "ok", 10, "the connection")
            base = machine.values["good"]
            await machine.run()
            await until(lambda: good(engine) >= 5, 10, "counts")
            filler = fill(disk)
            failures = engine.stats.commit_failures
            await until(lambda: engine.stats.commit_failures > failures, 10, "a failed commit")
            await asyncio.sleep(1.0)  # the machine goes on counting meanwhile
            filler.unlink()
            await machine.stop()
            await until(
                lambda: good(engine) == machine.values["good"] - base, 15, "every part counted"
            )
            await asyncio.sleep(0.5)
            assert good(engine) == machine.values["good"] - base  # nothing doubled either
            await machine.run()
            await until(lambda: good(engine) > machine.values["good"] - base - 3, 10, "more")
