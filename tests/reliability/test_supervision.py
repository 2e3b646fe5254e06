"""Background tasks never die unobserved: a failure is logged, the daemon stops cleanly and
says why (so that systemd starts it again); the uplink keeps acknowledgements it could not
store on a full disk and stores them once there is room."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import pytest
import structlog

from edge.app import run_gateway
from edge.config import load_config
from edge.domain.inputs import Action, DispatchList, Transition
from edge.engine import Engine
from edge.errors import ComponentFailed
from edge.store.replay import verify
from edge.store.store import Store
from edge.sync import messages
from edge.sync.mqtt import MqttLink
from edge.sync.uplink import Uplink
from simulators.broker import Mosquitto, find_mosquitto
from tests.engine.helpers import rules, spec
from tests.small_disk import fill, small_disk

CONFIG = """
[gateway]
edge_id = "wc-1"
work_center = "WC1"

[store]
path = "{db}"

[engine]
tick_interval_s = 0.05
"""


async def test_a_failing_component_stops_the_gateway_clearly(tmp_path: Path) -> None:
    cfg_file = tmp_path / "edge.toml"
    cfg_file.write_text(CONFIG.format(db=tmp_path / "edge.db"))
    cfg = load_config(cfg_file)
    started = asyncio.Event()

    async def flaky_source(engine: Engine) -> None:
        started.set()
        await asyncio.sleep(0.2)
        raise OSError(28, "No space left on device")

    with (
        structlog.testing.capture_logs() as logs,
        pytest.raises(ComponentFailed, match="flaky_source: OSError"),
    ):
        await asyncio.wait_for(run_gateway(cfg, components=(flaky_source,)), 30)
    assert started.is_set()
    failed = [e for e in logs if e["event"].startswith("a component failed")]
    assert len(failed) == 1
    assert failed[0]["component"] == "flaky_source"
    assert failed[0]["log_level"] == "error"
    assert any(e["event"] == "gateway stopped" for e in logs)  # the clean way out
    store = Store(tmp_path / "edge.db")
    store.open(boot=False)
    try:
        assert verify(store) == []
    finally:
        store.close()


async def test_a_component_that_ends_by_itself_is_logged(tmp_path: Path) -> None:
    cfg_file = tmp_path / "edge.toml"
    cfg_file.write_text(CONFIG.format(db=tmp_path / "edge.db"))
    stop = asyncio.Event()

    async def short_lived(engine: Engine) -> None:
        return

    async def stopper(engine: Engine) -> None:
        await asyncio.sleep(0.3)
        stop.set()

    with structlog.testing.capture_logs() as logs:
        await asyncio.wait_for(
            run_gateway(load_config(cfg_file), components=(short_lived, stopper), stop=stop), 30
        )
    ended = [e for e in logs if e["event"] == "a component ended by itself"]
    assert [e["component"] for e in ended] == ["short_lived"]


async def _wait_for(predicate: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        await asyncio.sleep(0.05)
    return False


async def test_acknowledgements_that_hit_a_full_disk_are_stored_later(tmp_path: Path) -> None:
    try:
        find_mosquitto()
    except FileNotFoundError as exc:  # pragma: no cover - the test scripts install it
        pytest.skip(str(exc))
    with small_disk(tmp_path / "disk", size="2M") as disk, Mosquitto(tmp_path / "mq") as broker:
        engine = await Engine.open(Store(disk / "edge.db"), rules(), outbound=messages)
        await engine.apply_now(DispatchList(1, (spec(),), engine.now()))
        await engine.apply_now(
            Transition(Action.START_PRODUCTION, "4711/0020", "operator:1", engine.now())
        )
        store = engine.store
        pending = await engine.run_store(store.outbox_counts)
        assert pending.get("pending", 0) >= 2
        filler = fill(disk)
        link = MqttLink(host=broker.host, port=broker.port, client_id="edge-wc-test-01")
        uplink = Uplink(engine, link, root="umh/v1/t/WC1", edge_id="wc-test-01")
        link.start()
        task = asyncio.create_task(uplink.run())
        try:
            with structlog.testing.capture_logs() as logs:
                assert await _wait_for(lambda: uplink.stats.acked >= pending["pending"], 20)
                assert await _wait_for(lambda: uplink.stats.flush_failures > 0, 10)
                assert not task.done()  # the uplink lives on
                counts = await engine.run_store(store.outbox_counts)
                assert counts.get("pending", 0) == pending["pending"]  # nothing stored yet
                filler.unlink()  # room again
                assert await _wait_for(lambda: not uplink._flush_failing, 10)
                await asyncio.sleep(0.2)
                counts = await engine.run_store(store.outbox_counts)
            assert counts.get("pending", 0) == 0, counts
            failed = [e for e in logs if e["event"].startswith("storing acknowledgements failed")]
            assert len(failed) == 1
            assert failed[0]["log_level"] == "error"
            assert "full" in failed[0]["error"]
            assert any(e["event"] == "acknowledgements stored again" for e in logs)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await link.stop()
            await engine.close()
