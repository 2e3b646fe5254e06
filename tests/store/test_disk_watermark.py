"""The disk watermark ([retention] min_free_mb) on a real, small file system: the database on a
tmpfs that a file fills, the free space read by statvfs, a real engine and store."""

from __future__ import annotations

import os
import sqlite3
from decimal import Decimal
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from edge.domain.inputs import (
    ConfirmationResult,
    CounterReading,
    Pulses,
    ReportScrap,
    RequestConfirmation,
    ResultStatus,
    Tick,
)
from edge.metrics import MetricsSources, render
from edge.store import retention
from edge.store.replay import verify_all
from edge.store.retention import DiskLow, RetentionPolicy
from edge.sync.mqtt import MqttLink
from edge.sync.presence import Presence
from tests.engine.helpers import spec
from tests.engine.test_retention_engine import OP, START_MS, Clocks, a_shift, running
from tests.small_disk import small_disk

DAY_MS = retention.DAY_MS
MB = retention.MB


def fill_to(disk: Path, free_bytes: int) -> Path:
    """A file that leaves about ``free_bytes`` free on ``disk``; delete it to free the space."""
    st = os.statvfs(disk)
    filler = disk / "filler"
    size = st.f_bavail * st.f_frsize - free_bytes
    with filler.open("wb") as f:
        while size > 0:
            chunk = min(size, 1 << 20)
            f.write(b"\0" * chunk)
            size -= chunk
    return filler


def stored(conn: sqlite3.Connection) -> dict[str, set[tuple[object, ...]]]:
    return {
        table: set(conn.execute(f"SELECT * FROM {table}"))
        for table in ("journal", "event", "outbox", "checkpoint")
    }


def metric(text: str, name: str) -> float:
    (line,) = [ln for ln in text.splitlines() if ln.startswith(name + " ")]
    return float(line.split()[1])


async def test_below_the_floor_counts_are_refused_the_rest_goes_on_and_it_resumes(
    tmp_path: Path,
) -> None:
    clocks = Clocks()
    policy = RetentionPolicy(min_free_mb=2, disk_check_s=10)
    with small_disk(tmp_path / "disk", "16M") as disk:
        async with running(disk / "edge.db", clocks) as engine:
            counter = await a_shift(engine, clocks, 1000, first=True)
            counter += 20  # counted, not yet confirmed
            assert (await engine.submit(CounterReading("good", counter, engine.now()))).accepted
            assert not await engine.watch_disk(policy, force=True)
            filler = fill_to(disk, MB)  # 1 MB left, the floor is 2
            clocks.advance(10_000)
            with capture_logs() as logs:
                await engine.maintenance_step(policy)  # the check is due again
            assert engine.disk_low
            (told,) = [e for e in logs if "below the floor" in e["event"]]
            assert told["log_level"] == "error"
            assert told["floor_mb"] == 2.0
            assert told["free_mb"] < 2.0
            assert told["path"] == str(disk)
            before = stored(engine.store.conn)

            # Machine counts are refused, loudly, whole submissions with them.
            with capture_logs() as logs, pytest.raises(DiskLow) as refused:
                await engine.submit(CounterReading("good", counter + 30, engine.now()))
            assert "below the floor of 2.0 MB" in str(refused.value)
            assert "MB free for the database in" in str(refused.value)
            assert [e["log_level"] for e in logs if "machine counts refused" in e["event"]] == [
                "error"
            ]
            with pytest.raises(DiskLow):
                await engine.submit_many([Tick(engine.now()), Pulses("pulses", 5, engine.now())])
            assert engine.retention.counts_refused == 3
            assert stored(engine.store.conn) == before

            # Operator actions, relay answers, confirmations of what is counted: taken.
            scrap = ReportScrap(Decimal(1), "S03", "operator:7", engine.now())
            assert (await engine.submit(scrap, command_id="scrap-1")).accepted
            assert (
                await engine.submit(RequestConfirmation("operator:7", engine.now(), OP))
            ).accepted
            keys = [
                r.idem_key
                for r in await engine.outbox_pending(1000, 0)
                if r.kind == "confirmation_created" and r.idem_key
            ]
            assert keys
            result = ConfirmationResult(keys[-1], ResultStatus.POSTED, engine.now(), erp_ref="E9")
            assert (await engine.submit(result)).accepted
            good = engine.wc.operations[spec().key].counted.good
            with pytest.raises(DiskLow):  # and still no counts
                await engine.submit(CounterReading("good", counter + 10, engine.now()))
            # The backlog still goes out: the uplink reads and marks the outbox.
            pending = await engine.outbox_pending(1000, 0)
            await engine.outbox_mark([r.seq for r in pending], (), ())
            assert await engine.outbox_depth() < len(pending)
            after = stored(engine.store.conn)
            for table in ("journal", "event", "checkpoint"):
                assert before[table] <= after[table], table  # nothing stored went
            assert {r[0] for r in before["outbox"]} <= {r[0] for r in after["outbox"]}
            assert engine.wc.operations[spec().key].counted.good == good

            text = await render(engine, MetricsSources())
            assert metric(text, "edge_disk_low") == 1
            assert metric(text, "edge_disk_floor_bytes") == 2 * MB
            assert 0 <= metric(text, "edge_disk_free_bytes") < 2 * MB
            assert metric(text, "edge_counts_refused_total") == 4
            # and the MQTT health message says so (a link that is not started: nothing is sent)
            presence = Presence(
                engine, MqttLink(host="127.0.0.1", port=1, client_id="t"), root="r", edge_id="e"
            )
            assert (await presence.health()).disk_low is True

            # Not yet 10 s later: not measured again; a little space is not enough (margin).
            os.truncate(filler, filler.stat().st_size - MB - 100_000)  # 2.1 MB free
            clocks.advance(5_000)
            assert await engine.watch_disk(policy)
            clocks.advance(5_000)
            assert await engine.watch_disk(policy)  # above the floor, below floor + 10 %
            # Space returns: counts are taken again by themselves.
            filler.unlink()
            clocks.advance(10_000)
            with capture_logs() as logs:
                await engine.maintenance_step(policy)
            assert not engine.disk_low
            assert any("back above the floor" in e["event"] for e in logs)
            assert (
                await engine.submit(CounterReading("good", counter + 30, engine.now()))
            ).accepted
            # The absolute counter carries the parts made while counts were refused.
            assert engine.wc.operations[spec().key].counted.good == good + 30
            assert metric(await render(engine, MetricsSources()), "edge_disk_low") == 0
            checks = await engine.run_store(verify_all, engine.store)
            assert [c.what for c in checks if c.differences] == []


async def test_below_the_floor_retention_runs_first_and_may_be_enough(tmp_path: Path) -> None:
    clocks = Clocks()
    with small_disk(tmp_path / "disk", "24M") as disk:
        db = disk / "edge.db"
        async with running(db, clocks):
            pass
        rows = 20_000  # old journal entries with an event each: some MB
        with sqlite3.connect(db) as conn:
            conn.executemany(
                "INSERT INTO journal(id, boot_seq, at_wall_ms, at_mono_ms, input_type, body) "
                "VALUES (?, 1, ?, ?, 'Tick', ?)",
                ((i, START_MS + i, 1_000 + i, "{}" + " " * 100) for i in range(2, rows + 2)),
            )
            conn.executemany(
                "INSERT INTO event(journal_id, type, at_wall_ms, data) VALUES (?, 'tick', ?, ?)",
                ((i, START_MS + i, "{}" + " " * 100) for i in range(2, rows + 2)),
            )
        policy = RetentionPolicy(min_free_mb=3)
        async with running(db, clocks) as engine:
            await engine.checkpoint()
            clocks.advance(91 * DAY_MS)
            await engine.submit(Tick(engine.now()))
            filler = fill_to(disk, 2 * MB)
            try:
                assert not await engine.watch_disk(policy, force=True)
                assert engine.retention.journal_pruned == rows + 1
                free = engine.retention.free_bytes
                assert free is not None
                assert free >= policy.floor_bytes
            finally:
                filler.unlink()


def test_the_config_refuses_a_bad_floor(tmp_path: Path) -> None:
    from edge.app import retention_policy
    from edge.config import ConfigError, load_config

    cfg_file = tmp_path / "edge.toml"
    body = '[gateway]\nedge_id = "wc-1"\nwork_center = "WC1"\n[retention]\n{}\n'
    cfg_file.write_text(body.format("min_free_mb = 512\ndisk_check_s = 30\nenabled = false"))
    p = retention_policy(load_config(cfg_file))
    assert (p.floor_bytes, p.resume_bytes, p.disk_check_s) == (512 * MB, 563_200_000, 30)
    for bad in ("min_free_mb = -1", "disk_check_s = 0.5", 'min_free_mb = "lots"'):
        cfg_file.write_text(body.format(bad))
        with pytest.raises(ConfigError) as err:
            load_config(cfg_file)
        key, value = bad.split(" = ")
        assert key in str(err.value)
        assert value.strip('"') in str(err.value)
