"""The OPC UA watchdog against the machine simulator: what is a stalled subscription, and what
is only a busy machine."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from structlog.testing import capture_logs

from edge.config import GatewayConfig, load_config
from simulators.opcua_machine import MachineSimulator
from tests.opcua.tcp_proxy import TcpProxy
from tests.opcua.test_opcua_source import config, gateway, good, until


def reasons(logs: list[dict[str, Any]]) -> list[str]:
    """Why the source went down, each time."""
    return [
        str(e.get("reason"))
        for e in logs
        if e.get("event") == "opc ua source unavailable; retrying"
    ]


async def test_a_busy_counter_is_not_taken_for_a_stalled_subscription(tmp_path: Path) -> None:
    """A counter that moves between every read and the next publish: the read almost never
    equals the last notification, yet notifications keep coming; the session stays up."""
    async with (
        MachineSimulator(cycle_s=0.005, jitter=0.0, seed=21) as machine,  # 200 parts/s
        gateway(config(tmp_path, machine)) as (engine, link),
    ):
        await until(lambda: link.link_status == "ok", 10, "the connection")
        watchdog_s = link.cfg.watchdog_s
        base = machine.values["good"]
        await machine.run()
        await asyncio.sleep(8 * watchdog_s)
        await machine.idle()
        made = machine.values["good"] - base
        assert made >= 4 * watchdog_s * 100  # it was busy
        assert link.state.connects == 1, link.state.last_error
        assert link.state.errors == 0, link.state.last_error
        await until(lambda: good(engine) == made, 10, "exact counts")


async def test_a_dead_subscription_on_a_quiet_machine_is_noticed(tmp_path: Path) -> None:
    """Nothing moves on the machine, so no read can differ from a notification: only the
    missing keep-alives tell that the subscription is gone."""
    with capture_logs() as logs:
        async with (
            MachineSimulator(cycle_s=0.02, seed=22) as machine,
            gateway(config(tmp_path, machine)) as (engine, link),
        ):
            await until(lambda: link.link_status == "ok", 10, "the connection")
            base = machine.values["good"]
            connects = link.state.connects
            await link.subscription.delete()  # the server forgets it; the machine stays idle
            await until(lambda: link.state.connects > connects, 10, "the watchdog to resubscribe")
            assert any("keep-alive" in r for r in reasons(logs)), reasons(logs)
            await machine.run()
            await until(lambda: good(engine) >= 10, 10, "counts again")
            await machine.idle()
            await until(lambda: good(engine) == machine.values["good"] - base, 10, "exact counts")


async def test_a_dead_monitored_item_in_a_live_subscription_is_noticed(tmp_path: Path) -> None:
    """The subscription keeps publishing (keep-alives, the state nodes) but the counter's
    monitored item is gone: the counter reads show what was never delivered."""
    with capture_logs() as logs:
        async with (
            MachineSimulator(cycle_s=0.02, seed=23) as machine,
            gateway(config(tmp_path, machine)) as (engine, link),
        ):
            await until(lambda: link.link_status == "ok", 10, "the connection")
            base = machine.values["good"]
            connects = link.state.connects
            await link.subscription.unsubscribe(link.monitored[machine.node_ids["good"]])
            await machine.run()
            await until(lambda: link.state.connects > connects, 10, "the watchdog to resubscribe")
            assert any("nothing was delivered" in r for r in reasons(logs)), reasons(logs)
            await until(lambda: good(engine) >= 10, 10, "counts again")
            await machine.idle()
            await until(lambda: good(engine) == machine.values["good"] - base, 10, "exact counts")


def tuned(tmp_path: Path, machine: MachineSimulator, **keys: object) -> GatewayConfig:
    """The tests' config with some keys of the OPC UA source set (added or replaced)."""
    config(tmp_path, machine)
    path = tmp_path / "edge.toml"
    lines = path.read_text().splitlines()
    for key, value in keys.items():
        lines = [ln for ln in lines if not ln.startswith(f"{key} =")]
        at = lines.index('template = "machinery"')
        lines.insert(at + 1, f"{key} = {json.dumps(value)}")
    path.write_text("\n".join(lines) + "\n")
    return load_config(path, env={})


async def test_the_reconnect_backoff_starts_over_after_a_healthy_session(
    tmp_path: Path,
) -> None:
    """Each line cut after a healthy while is reconnected after the shortest delay, not after
    twice the previous one (up to reconnect_max_s) as if it were one long outage."""
    async with (
        MachineSimulator(cycle_s=0.02, seed=24) as machine,
        TcpProxy(machine.host, machine.port) as line,
    ):
        cfg = tuned(
            tmp_path, machine, endpoint=line.endpoint, reconnect_min_s=0.1, reconnect_max_s=1.0
        )
        async with gateway(cfg) as (engine, link):
            await until(lambda: link.link_status == "ok", 10, "the connection")
            await machine.run()
            took: list[float] = []
            for _ in range(6):
                await asyncio.sleep(1.6)  # healthy for longer than max(reconnect_max_s, 3 x 0.5 s)
                connects = link.state.connects
                line.cut()
                await until(lambda: link.link_status == "down", 5, "the cut to be noticed")
                down = time.monotonic()
                await until(lambda c=connects: link.state.connects > c, 10, "the reconnect")
                took.append(time.monotonic() - down)
            # 0.1 s +-20 % and the connect; the old doubling waited 0.8-1 s from the fifth on.
            # One slow connect is the machine's load (a full run once took 0.9 s for the first),
            # two would be the doubling.
            assert sorted(took)[-2] < 0.5, took
            await machine.idle()
            assert engine.healthy
