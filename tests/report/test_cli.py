"""``edge report drift``: exit codes, the table, the CSV and the PNG, and a database that is only
ever read (a missing or damaged one is named, exit 2, and nothing is created)."""

from __future__ import annotations

import csv
import hashlib
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from edge.cli import main
from edge.store.store import Store
from tests.report.floor import Floor, StopPlan

ROOT = Path(__file__).resolve().parents[2]
PERIOD = ("--since", "2025-01-01", "--until", "2025-01-31")


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three materials of three operations each in January 2025: one cycle 20 % slow, one
    setup 50 % long, one on standard (with micro-stops and a break)."""
    db = tmp_path_factory.mktemp("db") / "edge.db"
    floor = Floor(db)
    for _ in range(3):
        floor.operation("MAT-SLOW", std_cycle_s=10, production_s=1200, parts=100)
        floor.operation(
            "MAT-SETUP", std_cycle_s=5, std_setup_s=600, setup_s=900, production_s=500,
            parts=100,
        )  # fmt: skip
        floor.operation(
            "MAT-OK", std_cycle_s=10, production_s=960, parts=100,
            stops=(StopPlan("micro", 20), StopPlan("micro", 20), StopPlan("planned", 1800)),
        )  # fmt: skip
    floor.close()
    return db


def listing(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}


def run(*args: str) -> int:
    return main(["report", "drift", *args])


def test_the_table_the_csv_and_the_png(
    db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = listing(db.parent)
    assert run("--db", str(db), *PERIOD, "--out-dir", str(tmp_path)) == 0
    out = capsys.readouterr().out
    assert "Routing drift of work center WC-PRESS-1, 2025-01-01 .. 2025-01-31" in out
    assert "9 completed operations, 3 material/operation pairs, 2 flagged" in out
    assert "micro-stops:   stops shorter than the micro-stop threshold" in out
    assert "inside the run time" in out
    assert "planned stops: stops with a planned reason: left out of the run time" in out
    table = out.splitlines()
    (slow,) = [line for line in table if "MAT-SLOW" in line]
    assert slow.split()[:4] == ["2", "MAT-SLOW", "0010", "3"]  # 1/6 h, after the setup's 1/4 h
    assert "+20.0 %" in slow
    assert slow.endswith("CYCLE")
    (setup,) = [line for line in table if "MAT-SETUP" in line]
    assert "+50.0 %" in setup
    assert setup.endswith("SETUP")
    (ok,) = [line for line in table if "MAT-OK" in line]
    assert not ok.endswith(("CYCLE", "SETUP"))
    files = sorted(p.name for p in tmp_path.iterdir())
    stem = "drift-WC-PRESS-1-2025-01-01-2025-01-31"
    assert files == [f"{stem}.csv", f"{stem}.png"]
    rows = list(csv.DictReader((tmp_path / f"{stem}.csv").open()))
    assert [r["material"] for r in rows] == ["MAT-SETUP", "MAT-SLOW", "MAT-OK"]
    by = {r["material"]: r for r in rows}
    assert by["MAT-SLOW"]["cycle_drift_pct"] == "20.0"
    assert by["MAT-SLOW"]["cycle_flagged"] == "yes"
    assert by["MAT-SLOW"]["impact_h"] == "0.167"  # (12 - 10) s x 300 parts
    assert by["MAT-SETUP"]["setup_drift_pct"] == "50.0"
    assert by["MAT-SETUP"]["setup_impact_h"] == "0.25"
    assert by["MAT-OK"]["flagged"] == "no"
    assert by["MAT-OK"]["cycle_median_s"] == "10.0"  # (960 + 40) s / 100 parts
    assert by["MAT-OK"]["micro_stops"] == "in_cycle"
    assert by["MAT-OK"]["planned_stop_h"] == "1.5"
    assert (tmp_path / f"{stem}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert listing(db.parent) == before, "the report changed the database's folder"


def test_ranked_by_impact(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("--db", str(db), *PERIOD, "--no-files", "--json") == 0
    payload = json.loads(capsys.readouterr().out)
    # setup: 3 x 300 s = 0.25 h; cycle: 300 parts x 2 s = 0.167 h
    assert [(r["material"], r["impact_h"]) for r in payload["rows"]] == [
        ("MAT-SETUP", 0.25),
        ("MAT-SLOW", 0.167),
        ("MAT-OK", 0.0),
    ]


def test_options_change_the_judgement(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("--db", str(db), *PERIOD, "--no-files", "--json", "--threshold", "25") == 0
    assert json.loads(capsys.readouterr().out)["flagged"] == 1  # the setup only (+50 %)
    assert run("--db", str(db), *PERIOD, "--no-files", "--json", "--min-operations", "4") == 0
    assert json.loads(capsys.readouterr().out)["flagged"] == 0
    assert run("--db", str(db), *PERIOD, "--no-files", "--json", "--micro-stops", "excluded") == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["micro_stops"] == "excluded"
    ok = next(r for r in payload["rows"] if r["material"] == "MAT-OK")
    assert ok["cycle"]["median_s"] == 9.6
    # a period without operations: an empty report, still exit 0
    assert run("--db", str(db), "--since", "2024-01-01", "--until", "2024-12-31", "--no-files") == 0
    assert "no operation was completed in the period" in capsys.readouterr().out


def test_without_matplotlib_the_png_is_skipped_with_one_line(
    db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    assert run("--db", str(db), *PERIOD, "--out-dir", str(tmp_path)) == 0
    captured = capsys.readouterr()
    assert [p.suffix for p in tmp_path.iterdir()] == [".csv"]
    (line,) = captured.err.splitlines()
    assert "no PNG: matplotlib is not installed" in line
    assert "edge-gateway[plot]" in line
    assert "MAT-SLOW" in captured.out


def test_a_missing_database_is_named_and_not_created(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "state" / "edge.db"
    assert run("--db", str(missing), "--out-dir", str(tmp_path)) == 2
    err = capsys.readouterr().err
    assert str(missing) in err
    assert "no such database" in err
    assert not (tmp_path / "state").exists()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "content",
    [b"not a database at all " * 300, b"SQLite format 3\x00" + b"\xff" * 4080],
    ids=["garbage", "broken-header"],
)
def test_a_damaged_database_is_named_exit_2_nothing_created(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes
) -> None:
    db = tmp_path / "edge.db"
    db.write_bytes(content)
    before = listing(tmp_path)
    assert run("--db", str(db), "--no-files") == 2
    err = capsys.readouterr().err
    assert err.startswith(f"edge report drift: {db}: ")
    assert len(err.splitlines()) == 1
    assert listing(tmp_path) == before


def test_another_sqlite_file_is_not_taken_for_a_gateway_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "other.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE t (x)")
    conn.close()
    before = listing(tmp_path)
    assert run("--db", str(db), "--no-files") == 2
    err = capsys.readouterr().err
    assert str(db) in err
    assert "schema version" in err
    assert listing(tmp_path) == before


def test_it_reads_beside_a_running_gateway(
    db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With the daemon's connection open (a write-ahead log beside the database), the report
    reads the committed state in one snapshot."""
    copy = tmp_path / "edge.db"
    copy.write_bytes(db.read_bytes())
    store = Store(copy)
    store.open(boot=False, migrate_schema=False)
    try:
        assert copy.with_name("edge.db-wal").exists()
        assert run("--db", str(copy), *PERIOD, "--no-files") == 0
    finally:
        store.close()
    assert "3 material/operation pairs" in capsys.readouterr().out


def test_bad_options_exit_2(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("--db", str(db), "--threshold", "0", "--no-files") == 2
    assert "--threshold" in capsys.readouterr().err
    assert run("--db", str(db), "--since", "2025-13-01", "--no-files") == 2
    assert "--since '2025-13-01': not a date" in capsys.readouterr().err
    assert run("--db", str(db), "--since", "2025-02-01", "--until", "2025-01-01") == 2
    assert "the period is empty" in capsys.readouterr().err


def test_an_output_folder_that_is_not_there(
    db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run("--db", str(db), *PERIOD, "--out-dir", str(tmp_path / "nope")) == 1
    assert f"{tmp_path / 'nope'}: no such folder" in capsys.readouterr().err
    assert not (tmp_path / "nope").exists()


def test_the_command_line_exit_code(tmp_path: Path) -> None:
    missing = tmp_path / "edge.db"
    done = subprocess.run(
        [sys.executable, "-m", "edge", "report", "drift", "--db", str(missing)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert f"edge report drift: {missing}: no such database" in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_the_database_of_the_config(
    db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "edge.toml"
    config.write_text(
        f'[gateway]\nedge_id = "wc-press-07"\nwork_center = "PRESS07"\n\n[store]\npath = "{db}"\n'
    )
    assert run("-c", str(config), *PERIOD, "--no-files") == 0
    assert "9 completed operations" in capsys.readouterr().out
    # a config naming a database that is not there: named, exit 2, nothing made
    config.write_text(
        '[gateway]\nedge_id = "wc-1"\nwork_center = "P1"\n\n'
        f'[store]\npath = "{tmp_path}/no/edge.db"\n'
    )
    assert run("-c", str(config), "--no-files") == 2
    assert f"{tmp_path}/no/edge.db: no such database" in capsys.readouterr().err
    assert not (tmp_path / "no").exists()
    # a config that is not valid: its problems, exit 2
    config.write_text('[gateway]\nedge_id = "wc-1"\n')
    assert run("-c", str(config), "--no-files") == 2
    assert "gateway.work_center: required" in capsys.readouterr().err


def test_the_json_is_the_message_body(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--json`` prints what the contract's _mes_v1/report/drift carries as its body."""
    from edge.sync.contract import DriftReportBody

    assert run("--db", str(db), *PERIOD, "--no-files", "--json") == 0
    body = DriftReportBody.model_validate_json(capsys.readouterr().out)
    assert body.type == "routing_drift"
    assert body.flagged == 2
    assert body.planned_stops == "excluded"
    assert body.period_start == "2025-01-01T00:00:00Z"
    assert body.period_end == "2025-02-01T00:00:00Z"
