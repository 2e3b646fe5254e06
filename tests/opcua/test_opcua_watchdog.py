"""The OPC UA watchdog against the machine simulator: what is a stalled subscription, and what
is only a busy machine."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from structlog.testing import capture_logs

from simulators.opcua_machine import MachineSimulator
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
