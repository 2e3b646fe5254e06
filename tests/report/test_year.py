"""A year of operations with three injected drifts (tests/report/year.py), run through the real
core and stored by the real store: the report finds exactly those drifts and no others, and
its hours are the generated ones."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from edge.domain.core import WorkCenter
from edge.domain.drift import DriftReport, DriftSettings, Period, drift_report
from edge.report import read_work_center
from tests.report.floor import Floor, wall_ms
from tests.report.year import DRIFTED, OPERATIONS, REROUTED, YEAR_S, Truth, generate

YEAR = Period(wall_ms(-86_400), wall_ms(YEAR_S + 86_400))


@pytest.fixture(scope="module")
def year(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Floor, dict[tuple[str, str], Truth], Path]:
    started = time.monotonic()
    db = tmp_path_factory.mktemp("year") / "edge.db"
    floor, truth = generate(db)
    assert time.monotonic() - started < 30, "the year should take seconds"
    return floor, truth, db


def stored(db: Path) -> WorkCenter:
    wc = read_work_center(db)
    assert wc is not None
    return wc


def report_of(wc: WorkCenter, settings: DriftSettings = DriftSettings()) -> DriftReport:  # noqa: B008
    return drift_report(
        wc.operations.values(), wc.stops.values(), wc.master_data, YEAR, settings,
        work_center=wc.rules.work_center,
    )  # fmt: skip


def test_the_year_finds_exactly_the_injected_drifts(
    year: tuple[Floor, dict[tuple[str, str], Truth], Path],
) -> None:
    _, truth, db = year
    report = report_of(stored(db))
    assert report.operations == OPERATIONS
    assert len(report.rows) == len(truth)
    found = {
        (r.material, r.operation): kind
        for r in report.rows
        for kind, figure in (("cycle", r.cycle), ("setup", r.setup))
        if figure.flagged
    }
    assert found == DRIFTED
    by_key = {(r.material, r.operation): r for r in report.rows}
    assert by_key["M-300", "0010"].cycle.drift == pytest.approx(0.25, abs=0.03)
    assert by_key["M-700", "0020"].cycle.drift == pytest.approx(-0.20, abs=0.03)
    assert by_key["M-A00", "0010"].setup.drift == pytest.approx(0.40, abs=0.04)
    # every other figure is within the noise, well inside the threshold
    for key, r in by_key.items():
        for kind, figure in (("cycle", r.cycle), ("setup", r.setup)):
            if DRIFTED.get(key) != kind:
                assert figure.drift is not None
                assert abs(figure.drift) < 0.06, (key, kind, figure.drift)
    rerouted = next(r for r in report.rows if r.material == REROUTED)
    assert rerouted.cycle.standards == (8.0, 10.0)
    assert rerouted.cycle.standard_s == 10.0
    assert not rerouted.flagged


def test_the_hours_are_the_generated_ones(
    year: tuple[Floor, dict[tuple[str, str], Truth], Path],
) -> None:
    _, truth, db = year
    for r in report_of(stored(db)).rows:
        t = truth[r.material, r.operation]
        assert r.operations == t.operations
        assert r.parts == t.parts
        assert r.run_h == pytest.approx(t.run_s / 3600, abs=0.01)
        assert r.micro_stop_h == pytest.approx(t.micro_s / 3600, abs=0.01)
        assert r.planned_stop_h == pytest.approx(t.planned_s / 3600, abs=0.01)
        assert r.unplanned_stop_h == pytest.approx(t.unplanned_s / 3600, abs=0.01)
        assert r.cycle.impact_h == pytest.approx((t.run_s - t.std_run_s) / 3600, abs=0.01)
        assert r.setup.impact_h == pytest.approx((t.setup_s - t.std_setup_s) / 3600, abs=0.01)
    ranked = report_of(stored(db)).rows
    assert [abs(r.impact_h) for r in ranked] == sorted(
        (abs(r.impact_h) for r in ranked), reverse=True
    )
    # the drifted cycles misplan the most hours: they lead the ranking
    assert {(r.material, r.operation) for r in ranked[:2]} == {("M-300", "0010"), ("M-700", "0020")}


def test_micro_stops_left_out_move_no_flag_here(
    year: tuple[Floor, dict[tuple[str, str], Truth], Path],
) -> None:
    """The generated micro-stops are a small share of run time: either way the same drifts."""
    _, _, db = year
    excluded = report_of(stored(db), DriftSettings(micro_stops_in_cycle=False))
    flagged = {(r.material, r.operation) for r in excluded.flagged}
    assert flagged == set(DRIFTED)


def test_the_history_is_the_database_s_not_the_core_s(
    year: tuple[Floor, dict[tuple[str, str], Truth], Path],
) -> None:
    """Finished operations left the core's memory days after they ended (edge.domain.retire);
    their rows stayed in the database, and the report reads them there, read-only."""
    floor, _, db = year
    in_memory = report_of(floor.wc)
    assert in_memory.operations < 10  # the last three days' only
    assert report_of(stored(db)).operations == OPERATIONS
    with sqlite3.connect(db) as conn:
        retired = conn.execute(
            "SELECT COUNT(*) FROM operation WHERE retired_ms IS NOT NULL"
        ).fetchone()[0]
    conn.close()
    assert retired == OPERATIONS - len(floor.wc.operations)
    assert not db.with_name("edge.db-shm").exists()
