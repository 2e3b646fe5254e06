"""The drift report's figures, computed by hand, on operations run through the real core.

Each material here has three completed operations (the default minimum to flag); the numbers in
the comments are the arithmetic the assertions check.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from edge.domain.drift import (
    DriftReport,
    DriftRow,
    DriftSettings,
    Period,
    actuals,
    drift_payload,
    drift_report,
)
from tests.report.floor import Floor, StopPlan, wall_ms

ALL = Period(wall_ms(-1), wall_ms(10 * 86_400))


DEFAULT = DriftSettings()


def report(floor: Floor, settings: DriftSettings = DEFAULT, period: Period = ALL) -> DriftReport:
    wc = floor.wc
    return drift_report(
        wc.operations.values(), wc.stops.values(), wc.master_data, period, settings,
        work_center="WC-PRESS-1",
    )  # fmt: skip


def row(r: DriftReport, material: str) -> DriftRow:
    (found,) = [x for x in r.rows if x.material == material]
    return found


def three(floor: Floor, material: str, **kw: object) -> None:
    for _ in range(3):
        floor.operation(material, **kw)  # type: ignore[arg-type]


def test_a_cycle_20_percent_slower_is_flagged_one_8_percent_slower_is_not() -> None:
    floor = Floor()
    # 100 parts in 1200 s of production: 12 s against 10 s = +20 %
    three(floor, "MAT-SLOW", std_cycle_s=10, production_s=1200, parts=100)
    # 100 parts in 1080 s: 10.8 s against 10 s = +8 %
    three(floor, "MAT-OK", std_cycle_s=10, production_s=1080, parts=100)
    r = report(floor)
    slow, ok = row(r, "MAT-SLOW"), row(r, "MAT-OK")
    assert slow.cycle.median_s == pytest.approx(12.0)
    assert slow.cycle.drift == pytest.approx(0.20)
    assert slow.cycle.flagged
    assert slow.flagged
    assert ok.cycle.median_s == pytest.approx(10.8)
    assert ok.cycle.drift == pytest.approx(0.08)
    assert not ok.cycle.flagged
    assert not ok.flagged
    # impact: (12 - 10) s x 300 parts = 600 s = 1/6 h; (10.8 - 10) x 300 = 240 s = 1/15 h
    assert slow.cycle.impact_h == pytest.approx(600 / 3600)
    assert ok.cycle.impact_h == pytest.approx(240 / 3600)
    assert [x.material for x in r.rows] == ["MAT-SLOW", "MAT-OK"]
    assert [x.rank for x in r.rows] == [1, 2]
    assert r.flagged == (slow,)
    assert r.operations == 6
    assert slow.parts == Decimal(300)


def test_a_faster_cycle_is_drift_too_and_the_threshold_is_configurable() -> None:
    floor = Floor()
    # 100 parts in 800 s: 8 s against 10 s = -20 %, capacity planned but not needed
    three(floor, "MAT-FAST", std_cycle_s=10, production_s=800, parts=100)
    # 100 parts in 1100 s: +10 %
    three(floor, "MAT-TEN", std_cycle_s=10, production_s=1100, parts=100)
    fast, ten = row(report(floor), "MAT-FAST"), row(report(floor), "MAT-TEN")
    assert fast.cycle.drift == pytest.approx(-0.20)
    assert fast.cycle.flagged
    assert fast.cycle.impact_h == pytest.approx(-600 / 3600)
    assert not ten.cycle.flagged
    tight = report(floor, DriftSettings(threshold=0.05))
    assert row(tight, "MAT-TEN").cycle.flagged
    loose = report(floor, DriftSettings(threshold=0.25))
    assert not loose.flagged


def test_a_setup_drift_is_flagged_on_its_own() -> None:
    floor = Floor()
    # setup 900 s against 600 s = +50 %; the cycle is on standard (500 s / 100 = 5 s)
    three(
        floor, "MAT-SETUP", std_cycle_s=5, std_setup_s=600, setup_s=900, production_s=500,
        parts=100,
    )  # fmt: skip
    # setup 630 s against 600 s = +5 %: not flagged
    three(
        floor, "MAT-SETOK", std_cycle_s=5, std_setup_s=600, setup_s=630, production_s=500,
        parts=100,
    )  # fmt: skip
    r = report(floor)
    bad, good = row(r, "MAT-SETUP"), row(r, "MAT-SETOK")
    assert bad.setup.median_s == pytest.approx(900)
    assert bad.setup.drift == pytest.approx(0.5)
    assert bad.setup.flagged
    assert not bad.cycle.flagged
    assert bad.flagged
    # impact: 300 s too little per setup, three setups = 900 s = 0.25 h
    assert bad.setup.impact_h == pytest.approx(0.25)
    assert bad.impact_h == pytest.approx(0.25)
    assert good.setup.drift == pytest.approx(0.05)
    assert not good.flagged


def test_operations_without_a_setup_phase_are_left_out_of_the_setup_figures() -> None:
    floor = Floor()
    floor.operation(
        "MAT-A", std_cycle_s=5, std_setup_s=600, setup_s=600, production_s=500, parts=100
    )
    # straight to production: no setup time, so no setup sample (and no setup impact)
    floor.operation("MAT-A", std_cycle_s=5, std_setup_s=600, production_s=500, parts=100)
    a = row(report(floor, DriftSettings(min_operations=1)), "MAT-A")
    assert a.operations == 2
    assert a.setup.samples == 1
    assert a.setup.median_s == pytest.approx(600)
    assert a.setup.impact_h == 0
    assert a.cycle.samples == 2


def test_micro_stops_count_as_run_time_by_default_and_can_be_left_out() -> None:
    floor = Floor()
    # 1000 s of production and two micro-stops of 100 s each (below the 120 s threshold) per
    # operation, 100 parts: in the cycle (1000 + 200) / 100 = 12 s = +20 %; left out 10 s = 0 %
    micro = (StopPlan("micro", 100), StopPlan("micro", 100))
    three(floor, "MAT-MICRO", std_cycle_s=10, production_s=1000, parts=100, stops=micro)
    inside = row(report(floor), "MAT-MICRO")
    assert inside.micro_stop_h == pytest.approx(600 / 3600)
    assert inside.cycle.median_s == pytest.approx(12.0)
    assert inside.cycle.flagged
    assert inside.run_h == pytest.approx(3600 / 3600)
    assert inside.unplanned_stop_h == 0
    assert inside.planned_stop_h == 0
    excluded = row(report(floor, DriftSettings(micro_stops_in_cycle=False)), "MAT-MICRO")
    assert excluded.cycle.median_s == pytest.approx(10.0)
    assert not excluded.cycle.flagged
    assert excluded.micro_stop_h == pytest.approx(600 / 3600)  # still shown, beside the cycle
    assert excluded.run_h == pytest.approx(3000 / 3600)
    payload = drift_payload(report(floor), 0)
    assert payload["micro_stops"] == "in_cycle"
    assert "micro-stops" in str(payload["definitions"])


def test_planned_and_unplanned_stops_are_down_time_never_run_time() -> None:
    floor = Floor()
    # 1000 s of production, 100 parts: 10 s whatever the stops; a 30 min break (planned), a
    # 10 min breakdown (unplanned), and a 60 s stop given the planned reason: planned, not micro
    stops = (StopPlan("planned", 1800), StopPlan("unplanned", 600), StopPlan("planned", 60))
    three(floor, "MAT-STOPS", std_cycle_s=10, production_s=1000, parts=100, stops=stops)
    r = row(report(floor), "MAT-STOPS")
    assert r.cycle.median_s == pytest.approx(10.0)
    assert r.cycle.drift == pytest.approx(0.0)
    assert not r.flagged
    assert r.planned_stop_h == pytest.approx(3 * 1860 / 3600)
    assert r.unplanned_stop_h == pytest.approx(3 * 600 / 3600)
    assert r.micro_stop_h == 0
    # the core's own time elements agree: production plus the stops is the operation's down time
    for op in floor.wc.operations.values():
        assert op.counted.production_ms == 1_000_000
        assert op.counted.down_ms == 2_460_000


def test_a_stop_without_a_reason_past_the_threshold_is_unplanned() -> None:
    floor = Floor()
    three(
        floor, "MAT-P", std_cycle_s=10, production_s=1000, parts=100, stops=(StopPlan("none", 300),)
    )
    r = row(report(floor), "MAT-P")
    assert r.unplanned_stop_h == pytest.approx(900 / 3600)
    assert r.cycle.median_s == pytest.approx(10.0)


def test_too_few_operations_are_shown_but_not_flagged() -> None:
    floor = Floor()
    floor.operation("MAT-TWO", std_cycle_s=10, production_s=1500, parts=100)
    floor.operation("MAT-TWO", std_cycle_s=10, production_s=1500, parts=100)
    two = row(report(floor), "MAT-TWO")
    assert two.cycle.drift == pytest.approx(0.5)
    assert not two.flagged
    assert row(report(floor, DriftSettings(min_operations=2)), "MAT-TWO").flagged


def test_median_and_spread_are_over_the_operations() -> None:
    floor = Floor()
    for production in (1000, 1100, 1200, 1300, 3000):  # 10, 11, 12, 13, 30 s
        floor.operation("MAT-M", std_cycle_s=10, production_s=production, parts=100)
    m = row(report(floor), "MAT-M")
    assert m.cycle.median_s == pytest.approx(12.0)  # an outlier does not move the median
    assert m.cycle.q1_s == pytest.approx(11.0)
    assert m.cycle.q3_s == pytest.approx(13.0)
    assert m.cycle.drift == pytest.approx(0.2)
    # impact is every operation's own: (0 + 100 + 200 + 300 + 2000) s
    assert m.cycle.impact_h == pytest.approx(2600 / 3600)


def test_a_standard_changed_in_the_period_is_no_drift() -> None:
    floor = Floor()
    for _ in range(3):
        floor.operation("MAT-R", std_cycle_s=8, production_s=800, parts=100)
    for _ in range(3):
        floor.operation("MAT-R", std_cycle_s=10, production_s=1000, parts=100)
    r = row(report(floor), "MAT-R")
    assert r.cycle.standard_s == 10  # the latest
    assert r.cycle.standards == (8.0, 10.0)
    assert r.cycle.drift is not None
    assert abs(r.cycle.drift) < 1e-9
    assert not r.flagged


def test_only_completed_operations_of_the_period_count() -> None:
    floor = Floor()
    three(floor, "MAT-Q", std_cycle_s=10, production_s=1200, parts=100)
    first_end = floor.wc.operations[min(floor.wc.operations)].ended
    assert first_end is not None
    # a period that ends just after the first operation holds only that one
    one = report(floor, DriftSettings(min_operations=1), Period(wall_ms(-1), first_end.wall_ms + 1))
    assert one.operations == 1
    assert row(one, "MAT-Q").operations == 1
    empty = report(floor, period=Period(wall_ms(-100), wall_ms(-1)))
    assert empty.rows == ()
    assert empty.operations == 0
    # an operation that made no part gives no cycle, but counts as an operation
    floor.operation("MAT-Q", std_cycle_s=10, production_s=100, parts=0)
    q = row(report(floor), "MAT-Q")
    assert (q.operations, q.cycle.samples) == (4, 3)
    assert len(actuals(floor.wc.operations.values(), (), floor.wc.master_data)) == 4


def test_no_standard_is_never_flagged() -> None:
    floor = Floor()
    three(floor, "MAT-NONE", std_cycle_s=0, production_s=1200, parts=100)
    r = row(report(floor), "MAT-NONE")
    assert r.cycle.median_s == pytest.approx(12.0)
    assert r.cycle.drift is None
    assert not r.flagged
    assert r.cycle.impact_h == 0


def test_settings_are_bounded() -> None:
    with pytest.raises(ValueError, match="threshold"):
        DriftSettings(threshold=0)
    with pytest.raises(ValueError, match="min_operations"):
        DriftSettings(min_operations=0)
    with pytest.raises(ValueError, match="end after"):
        Period(10, 10)
