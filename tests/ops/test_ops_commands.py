"""``edge status``, ``edge outbox``, ``edge backup`` on databases the real engine produced."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.ops.conftest import REPO, edge, write_config

pytestmark = pytest.mark.timeout(90)


def _boot_seq(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT value FROM meta WHERE key='boot_seq'").fetchone()[0])


def _journal(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM journal").fetchone()[0])


def test_status_json_shows_the_work_center_state(plant: tuple[Path, Path]) -> None:
    cfg, db = plant
    before = _boot_seq(db)
    result = edge("status", "-c", str(cfg), "--json")
    assert result.returncode == 0, result.stderr
    s = json.loads(result.stdout)
    assert s["edge_id"] == "wc-press-07"
    assert s["work_center"] == "PRESS07"
    assert s["boot_seq"] == before == 1
    assert s["journal"]["entries"] == _journal(db)
    assert s["machine"]["state"] == "down"
    # Machine hours: the 32 pulses are 32 cycles and parts (counted since the first start).
    hours = s["machine"]["hours"]
    assert (hours["cycles"], hours["parts"], hours["running"]) == (32, 32, False)
    assert s["open_stop"]["reason"] is None
    assert s["open_stop"]["operations"] == ["4711/0020"]
    [op] = s["active_operations"]
    assert (op["order"], op["operation"], op["status"]) == ("4711", "0020", "running")
    # 32 pulses counted, 2 reported as scrap (operator scrap reduces good), target 100
    assert (op["good"], op["scrap"], op["target"], op["unit"]) == (30, 2, 100, "PC")
    assert s["dispatched_operations"] == 1
    o = s["outbox"]
    assert o["published"] == 2  # two partial confirmations await the relay
    assert o["pending"] >= 2  # counted after the broker went away
    assert o["depth"] == o["pending"] + o["published"]
    assert o["oldest_unfinished_age_s"] is not None
    assert o["last_acked_message_at"] is not None
    assert s["mqtt"]["enabled"] is False
    # The shift so far (the default calendar: one shift a day): the same parts, the machine
    # down now, so the open stop's time is delay time (ADET), reason pending.
    shift = s["shift"]
    assert shift["shift_id"].endswith("/day")
    assert (shift["good"], shift["scrap"]) == (30, 2)
    assert shift["quality_ratio"] == round(30 / 32, 4)
    assert shift["time_s"]["ADET"] > 0
    assert shift["down_by_reason_s"][0]["code"] == "PENDING"
    total = sum(v for k, v in shift["time_s"].items() if k not in ("POT", "PBT"))
    assert total == pytest.approx(shift["time_s"]["POT"], abs=0.01)
    # The day so far: its one shift (and no unscheduled time), the same figures.
    day = s["day"]
    assert (day["shift"], day["shift_id"]) == ("day", shift["day"])
    assert (day["good"], day["scrap"]) == (30, 2)
    assert day["time_s"]["POT"] == shift["time_s"]["POT"]
    # The order KPIs: both operations open since their dispatch, none completed yet.
    orders = s["orders"]
    assert (orders["dispatched"], orders["rescheduled"], orders["schedule_stability"]) == (
        2,
        0,
        1.0,
    )
    assert (orders["completed"], orders["on_time_rate"], orders["cycle_s_median"]) == (
        0,
        None,
        None,
    )
    assert orders["wip"] == 2
    assert orders["wip_age_s_max"] >= orders["wip_age_s_median"] > 0
    # A status read is not a boot, and leaves the database as it was.
    assert _boot_seq(db) == before


def test_status_text_without_a_config(plant: tuple[Path, Path]) -> None:
    _, db = plant
    result = edge("status", "--db", str(db), env={"EDGE_CONFIG": ""})
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "gateway wc-press-07, work center PRESS07" in out
    assert "machine    down" in out
    assert "32 cycles, 32 parts since " in out
    assert "reason NOT GIVEN" in out
    assert "4711/0020 running: good 30, scrap 2 of 100 PC" in out
    assert "2 awaiting the relay" in out
    assert "/day: OEE " in out
    assert "  day        " in out
    assert "  orders     on time 0 of 0 completed with a due date (-)" in out
    assert "schedule stability 100 % (0 of 2 rescheduled), WIP 2 (oldest " in out
    assert "stops PENDING" in out


def test_status_of_a_missing_database_fails_cleanly(tmp_path: Path) -> None:
    result = edge("status", "--db", str(tmp_path / "nope.db"), env={"EDGE_CONFIG": ""})
    assert result.returncode == 1
    assert "no such database" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "nope.db").exists()


def test_outbox_count_list_and_replay(plant: tuple[Path, Path]) -> None:
    cfg, _ = plant
    count = json.loads(edge("outbox", "count", "-c", str(cfg), "--json").stdout)
    assert count["published"] == 2
    listed = edge("outbox", "list", "-c", str(cfg), "--state", "published", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [r["kind"] for r in rows] == ["confirmation_created"] * 2
    assert all(r["idem_key"] and r["attempts"] == 1 for r in rows)
    text = edge("outbox", "list", "-c", str(cfg), "--payload").stdout
    assert "published" in text
    assert "pending" in text
    assert '"yield_qty"' in text or "yield" in text

    first = edge("outbox", "replay", "-c", str(cfg), "--seq", str(rows[0]["seq"]))
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("1 message(s)")
    again = edge("outbox", "replay", "-c", str(cfg), "--seq", str(rows[0]["seq"]))
    assert again.stdout.startswith("0 message(s)")  # already pending
    rest = edge("outbox", "replay", "-c", str(cfg))
    assert rest.stdout.startswith("1 message(s)")
    after = json.loads(edge("outbox", "count", "-c", str(cfg), "--json").stdout)
    assert after["published"] == 0
    assert after["pending"] == count["pending"] + 2
    assert after["depth"] == count["depth"]


def test_backup_while_the_gateway_commits_is_consistent(tmp_path: Path) -> None:
    """A gateway process counts parts flat out; backups taken meanwhile verify against replay."""
    cfg = write_config(tmp_path, log_level="warning")
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.gateway.gateway_child", str(cfg), "--produce-s", "30"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "READY"
        time.sleep(0.5)
        journals = []
        for i in range(3):
            dest = tmp_path / f"copy{i}.db"
            result = edge("backup", "-c", str(cfg), str(dest))
            assert result.returncode == 0, result.stderr
            assert "consistent copy" in result.stdout
            assert not (tmp_path / f".copy{i}.db.partial").exists()
            verified = edge("verify", "--db", str(dest))
            assert verified.returncode == 0, verified.stdout + verified.stderr
            journals.append(_journal(dest))
            time.sleep(0.3)
        assert child.poll() is None, child.stderr.read() if child.stderr else ""
        assert journals[0] < journals[1] < journals[2]  # it went on committing meanwhile
        # The copy is one file (no -wal needed) and not a boot of its own.
        assert not Path(f"{dest}-wal").exists() or Path(f"{dest}-wal").stat().st_size == 0
        assert _boot_seq(dest) == 1
    finally:
        child.terminate()
        try:
            child.wait(15)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(5)
    refused = edge("backup", "-c", str(cfg), str(tmp_path / "copy0.db"))
    assert refused.returncode == 1
    assert "exists" in refused.stderr
