"""rules.md §5: time elements add up to the wall-clock time; a wall-clock step changes nothing."""

from __future__ import annotations

from edge.domain.clock import Instant
from edge.domain.events import EventType
from edge.domain.inputs import Action, MachineState, MachineStateChanged, Pulses, Tick, Transition

from .builders import OPERATOR, act, at, events_of, key, make_wc, ok, pulse_source, spec

OP = key("4711/0020")


def test_time_elements_add_up_to_the_time_from_first_start_to_completion() -> None:
    wc = make_wc(spec(std_cycle_s=0.0), sources=(pulse_source("press1"),))
    act(wc, Action.START_SETUP, 0)
    act(wc, Action.START_PRODUCTION, 600)  # 600 s setup
    ok(wc, Pulses("press1", 10, at(700)))
    ok(wc, MachineStateChanged("press1", MachineState.DOWN, at(1000)))
    ok(wc, MachineStateChanged("press1", MachineState.RUNNING, at(1300)))  # 300 s down
    act(wc, Action.INTERRUPT, 2000)
    act(wc, Action.RESUME, 2300)  # 300 s waiting
    act(wc, Action.HOLD, 2500)
    act(wc, Action.RELEASE, 2600)  # 100 s waiting
    out = act(wc, Action.COMPLETE, 3000)
    op = wc.operations[OP]
    te = wc.time_elements(op)
    assert te.setup_ms == 600_000
    assert te.production_ms == (2000 - 600 - 300 + 2500 - 2300 + 3000 - 2600) * 1000
    assert te.down_ms == 300_000
    assert te.waiting_ms == 400_000
    total = te.setup_ms + te.production_ms + te.down_ms + te.waiting_ms
    assert total == te.total_ms == 3000 * 1000 == op.ended.since(op.first_start)
    # The final confirmation carries the same times.
    (final,) = events_of(out, EventType.CONFIRMATION_CREATED)
    iso = final.data["iso22400"]
    assert iso == {"AUST_s": 600.0, "APT_s": 1700.0, "ADT_s": 300.0, "waiting_s": 400.0}


def test_a_wall_clock_step_back_never_makes_a_duration_negative() -> None:
    wc = make_wc(spec(std_cycle_s=10.0), sources=(pulse_source("press1"),))
    wall, mono = at(0).wall_ms, at(0).mono_ms
    hour = 3_600_000

    def t(seconds: int, stepped: bool = False) -> Instant:
        # After the step, the wall clock reads an hour earlier; monotonic time goes on.
        return Instant(wall + seconds * 1000 - (hour if stepped else 0), mono + seconds * 1000)

    ok(wc, Transition(Action.START_SETUP, "4711/0020", OPERATOR, t(0)))
    ok(wc, Transition(Action.START_PRODUCTION, "4711/0020", OPERATOR, t(300)))
    ok(wc, Pulses("press1", 1, t(310)))
    ok(wc, Tick(t(320, stepped=True)))
    ok(wc, Pulses("press1", 1, t(330, stepped=True)))
    ok(wc, Tick(t(400, stepped=True)))  # 70 s without a count: a stop from 330
    out = ok(wc, Pulses("press1", 1, t(420, stepped=True)))
    (ended,) = events_of(out, EventType.STOP_ENDED)
    assert ended.data["duration_s"] == 90
    ok(wc, Transition(Action.COMPLETE, "4711/0020", OPERATOR, t(600, stepped=True)))
    te = wc.time_elements(wc.operations[OP])
    for name in ("setup_ms", "production_ms", "down_ms", "waiting_ms"):
        assert getattr(te, name) >= 0
    assert te.setup_ms == 300_000
    assert te.down_ms == 90_000
    assert te.production_ms == 210_000
    (conf,) = wc.confirmations.values()
    assert conf.tally.setup_ms + conf.tally.production_ms + conf.tally.down_ms == 600_000
    assert conf.period_end.since(conf.period_start) == 600_000


def test_an_out_of_order_monotonic_instant_adds_no_time() -> None:
    wc = make_wc(spec(std_cycle_s=0.0), sources=(pulse_source("press1"),))
    act(wc, Action.START_PRODUCTION, 100)
    ok(wc, Pulses("press1", 1, at(200)))
    act(wc, Action.INTERRUPT, 300)
    act(wc, Action.RESUME, 250)  # a late stamp: nothing goes backwards
    act(wc, Action.COMPLETE, 400)
    te = wc.time_elements(wc.operations[OP])
    assert all(getattr(te, n) >= 0 for n in ("setup_ms", "production_ms", "down_ms", "waiting_ms"))
    assert te.production_ms + te.waiting_ms == 300_000
