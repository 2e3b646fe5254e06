"""edge.config: loading the TOML file, environment overrides, every problem as one ConfigError."""

from __future__ import annotations

import pickle
from decimal import Decimal
from pathlib import Path

import pytest

from edge.config import GatewayConfig, config_report, load_config, rules_from_config
from edge.domain.rules import (
    ConfirmationPolicy,
    CountKind,
    CountSource,
    ScrapReason,
    Shift,
    SignalType,
    StopReason,
    WorkCenterRules,
)
from edge.errors import MISSING, ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "example.toml"

MINIMAL = """\
[gateway]
edge_id = "wc-test-01"
work_center = "TEST01"
"""


def write(tmp_path: Path, text: str, name: str = "edge.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load_error(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> ConfigError:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={} if env is None else env)
    return info.value


def paths(err: ConfigError) -> list[str]:
    return [p.field_path for p in err.problems]


# -- the example --------------------------------------------------------------------------------


def test_example_loads_and_gives_valid_rules() -> None:
    cfg = load_config(EXAMPLE, env={})
    assert cfg.gateway.edge_id == "wc-press-07"
    assert cfg.gateway.work_center == "PRESS07"
    assert cfg.gateway.timezone == "Europe/Berlin"
    rules = rules_from_config(cfg)
    assert isinstance(rules, WorkCenterRules)
    assert rules.source("press_good") == CountSource(
        "press_good", CountKind.GOOD, SignalType.ABSOLUTE, 32, True, 0.75
    )
    press_scrap = rules.source("press_scrap")
    assert press_scrap is not None
    assert press_scrap.kind is CountKind.SCRAP
    assert press_scrap.bits == 16
    assert press_scrap.authoritative
    assert not rules.counts_total()
    weekdays, nights = frozenset(range(5)), frozenset({6, 0, 1, 2, 3})
    assert rules.shifts == (
        Shift("early", 6 * 60, 8 * 60, weekdays, (("breakfast", 9 * 60, 15),)),
        Shift("late", 14 * 60, 8 * 60, weekdays),
        Shift("night", 22 * 60, 8 * 60, nights, (("meal", 2 * 60, 30),)),
    )
    assert len(rules.holidays) == 4
    assert rules.planned_downtime == ()
    assert rules.policy == ConfirmationPolicy(every_good=Decimal(250), at_shift_end=True)
    md = rules.master_data
    assert [r.code for r in md.scrap_reasons][:5] == ["S01", "S02", "S03", "S04", "S05"]
    assert all(r.text for r in md.scrap_reasons)
    assert md.has_scrap_reason("SETUP")
    assert md.has_scrap_reason("MACHINE")
    assert md.reason_for_alarm("E101") == "JAM"
    assert md.reason_for_alarm("E230") == "ELEC"
    assert {r.category for r in md.stop_reasons} == {"planned", "unplanned"}
    assert md.crew_size == Decimal(1)


def test_minimal_config_takes_the_defaults(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, MINIMAL), env={})
    assert cfg.gateway.timezone == "UTC"
    assert cfg.gateway.log_level == "info"
    assert cfg.gateway.log_json is None
    assert cfg.store.path == Path("/var/lib/edge-gateway/edge.db")
    assert cfg.store.synchronous == "full"
    assert (cfg.engine.batch_window_ms, cfg.engine.max_batch, cfg.engine.tick_interval_s) == (
        0.0,
        1000,
        1.0,
    )
    rules = rules_from_config(cfg)
    defaults = WorkCenterRules(edge_id="wc-test-01", work_center="TEST01")
    # everything but the automatically added system scrap reasons is the domain's default
    assert rules.shifts == defaults.shifts == (Shift("day", 0, 24 * 60),)
    assert rules.policy == defaults.policy
    assert rules.sources == ()
    assert rules.plausibility_factor == defaults.plausibility_factor
    assert rules.plausibility_grace_s == defaults.plausibility_grace_s
    assert rules.setup_counts_as_good is defaults.setup_counts_as_good
    assert rules.no_count_factor == defaults.no_count_factor
    assert rules.micro_stop_s == defaults.micro_stop_s
    assert rules.variance_threshold == defaults.variance_threshold
    assert rules.variance_reason == defaults.variance_reason
    assert rules.master_data.scrap_reasons == (
        ScrapReason("SETUP", "Setup scrap"),
        ScrapReason("MACHINE", "Machine scrap"),
    )


def test_rules_from_config_converts_every_section(tmp_path: Path) -> None:
    text = (
        MINIMAL
        + """\
timezone = "America/Chicago"

[counting]
plausibility_factor = 2.5
plausibility_grace_s = 4
setup_counts_as = "good"
setup_scrap_reason = "S01"
machine_scrap_reason = "MX"
operator_scrap_reduces_good = false

[[counting.sources]]
name = "cycles"
kind = "total"
signal = "pulse"
bits = 64
max_rate_per_s = 2

[[counting.sources]]
name = "plc_good"
kind = "good"
authoritative = false

[operations]
family_tool = true
auto_complete_at_target = true

[stops]
no_count_factor = 4
micro_stop_s = 60

[confirmations]
every_good = 12.5
every_minutes = 30
variance_threshold = 0.1
variance_reason = "VAR"

[[shifts]]
name = "a"
start = 07:30:00
end = "19:30"

[[shifts]]
name = "b"
start = "19:30"
end = "07:30"

[master_data]
crew_size = 0.5
alarm_reasons = { "17" = "BRK" }

[[master_data.stop_reasons]]
code = "BRK"
text = "Break"
category = "planned"

[[master_data.scrap_reasons]]
code = "S01"
text = "Burr"
"""
    )
    rules = rules_from_config(load_config(write(tmp_path, text), env={}))
    assert rules.timezone == "America/Chicago"
    assert rules.sources == (
        CountSource("cycles", CountKind.TOTAL, SignalType.PULSE, 64, True, 2.0),
        CountSource("plc_good", CountKind.GOOD, SignalType.ABSOLUTE, 32, False, None),
    )
    assert rules.counts_total()
    assert rules.plausibility_factor == 2.5
    assert rules.plausibility_grace_s == 4.0
    assert rules.setup_counts_as_good is True
    assert rules.operator_scrap_reduces_good is False
    assert rules.family_tool is True
    assert rules.auto_complete_at_target is True
    assert (rules.no_count_factor, rules.micro_stop_s) == (4.0, 60.0)
    assert rules.policy == ConfirmationPolicy(
        every_good=Decimal("12.5"), every_minutes=30.0, at_shift_end=False
    )
    assert (rules.variance_threshold, rules.variance_reason) == (0.1, "VAR")
    assert rules.shifts == (Shift("a", 7 * 60 + 30, 12 * 60), Shift("b", 19 * 60 + 30, 12 * 60))
    md = rules.master_data
    assert md.crew_size == Decimal("0.5")
    assert md.stop_reasons == (StopReason("BRK", "Break", "planned"),)
    assert md.stop_reasons[0].planned
    # S01 is listed (its text stays); MX is added
    assert md.scrap_reasons == (ScrapReason("S01", "Burr"), ScrapReason("MX", "Machine scrap"))
    assert md.alarm_reasons == (("17", "BRK"),)


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        ("06:00", "14:00", (360, 480)),
        ("22:00", "06:00", (1320, 480)),
        ("00:00", "00:00", (0, 1440)),
        ("18:00", "24:00", (1080, 360)),
        ("23:59", "00:00", (1439, 1)),
    ],
)
def test_shift_times(tmp_path: Path, start: str, end: str, expected: tuple[int, int]) -> None:
    text = MINIMAL + f'[[shifts]]\nname = "s"\nstart = "{start}"\nend = "{end}"\n'
    (shift,) = rules_from_config(load_config(write(tmp_path, text), env={})).shifts
    assert (shift.start_minute, shift.length_minutes) == expected


# -- environment --------------------------------------------------------------------------------


def test_env_overrides_the_file() -> None:
    env = {
        "EDGE_GATEWAY__EDGE_ID": "wc-press-08",
        "EDGE_STORE__PATH": "/tmp/x.db",
        "EDGE_ENGINE__MAX_BATCH": "500",
        "EDGE_OPERATIONS__FAMILY_TOOL": "true",
        "EDGE_CONFIRMATIONS__EVERY_GOOD": "100",
        "EDGE_GATEWAY__LOG_LEVEL": "DEBUG",
        "edge_gateway__log_json": "false",  # names are case-insensitive
        "EDGE_MASTER_DATA__ALARM_REASONS": '{"E999": "PM"}',
        "EDGE_OTHER": "ignored: no section delimiter, may belong to other software",
    }
    cfg = load_config(EXAMPLE, env=env)
    assert cfg.gateway.edge_id == "wc-press-08"
    assert cfg.gateway.work_center == "PRESS07"  # the rest of the section stays from the file
    assert cfg.store.path == Path("/tmp/x.db")
    assert cfg.engine.max_batch == 500
    assert cfg.operations.family_tool is True
    assert cfg.confirmations.every_good == Decimal(100)
    assert cfg.confirmations.at_shift_end is True
    assert cfg.gateway.log_level == "debug"
    assert cfg.gateway.log_json is False
    # a table from the environment merges into the file's table key by key (a list replaces)
    assert cfg.master_data.alarm_reasons == {"E101": "JAM", "E230": "ELEC", "E999": "PM"}


def test_os_environ_is_used_when_env_is_not_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGE_GATEWAY__EDGE_ID", "wc-from-environ")
    assert load_config(EXAMPLE).gateway.edge_id == "wc-from-environ"
    # an explicit mapping replaces os.environ entirely
    assert load_config(EXAMPLE, env={}).gateway.edge_id == "wc-press-07"


def test_config_from_environment_alone() -> None:
    cfg = load_config(
        None, env={"EDGE_GATEWAY__EDGE_ID": "wc-1", "EDGE_GATEWAY__WORK_CENTER": "W1"}
    )
    assert (cfg.gateway.edge_id, cfg.gateway.work_center) == ("wc-1", "W1")


def test_bad_env_value_names_the_variable() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(EXAMPLE, env={"EDGE_ENGINE__MAX_BATCH": "lots", "EDGE_GATEWY__EDGE_ID": "x"})
    text = str(info.value)
    assert "engine.max_batch = 'lots'" in text
    assert "EDGE_ENGINE__MAX_BATCH" in text
    assert "EDGE_GATEWY__EDGE_ID" in text
    assert "unknown section 'gatewy'" in text


def test_env_list_that_is_not_json() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(EXAMPLE, env={"EDGE_COUNTING__SOURCES": "[press"})
    assert "EDGE_COUNTING__SOURCES = '[press': not valid JSON" in str(info.value)


def test_unknown_key_in_env_is_an_error() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(EXAMPLE, env={"EDGE_GATEWAY__EDGE_IDD": "wc-9"})
    assert "gateway.edge_idd = 'wc-9': unknown key" in str(info.value)


# -- bad configs --------------------------------------------------------------------------------


def test_wrong_type(tmp_path: Path) -> None:
    err = load_error(
        tmp_path,
        MINIMAL + '[engine]\nmax_batch = "1000"\n[operations]\nfamily_tool = 1\n',
    )
    text = str(err)
    assert "engine.max_batch = '1000': Input should be a valid integer" in text
    assert "operations.family_tool = 1: Input should be a valid boolean" in text


def test_bounds(tmp_path: Path) -> None:
    err = load_error(
        tmp_path,
        MINIMAL + "[engine]\nmax_batch = 0\ntick_interval_s = 0\nbatch_window_ms = nan\n",
    )
    assert set(paths(err)) == {
        "engine.max_batch",
        "engine.tick_interval_s",
        "engine.batch_window_ms",
    }
    assert "engine.max_batch = 0: Input should be greater than or equal to 1" in str(err)


def test_unknown_key_and_unknown_section(tmp_path: Path) -> None:
    err = load_error(tmp_path, MINIMAL + 'time_zone = "UTC"\n[stroes]\npath = "/x"\n')
    text = str(err)
    assert "gateway.time_zone = 'UTC': unknown key" in text
    assert "stroes = {'path': '/x'}: unknown key" in text


def test_bad_enum_names_the_source(tmp_path: Path) -> None:
    text = MINIMAL + '[[counting.sources]]\nname = "press1"\nkind = "tota"\n'
    err = load_error(tmp_path, text)
    assert str(err).splitlines()[1] == (
        "  counting.sources[press1].kind = 'tota': Input should be 'good', 'scrap' or 'total'"
    )


def test_missing_required_fields(tmp_path: Path) -> None:
    err = load_error(tmp_path, '[gateway]\nwork_center = "X"\n[[counting.sources]]\nname = "a"\n')
    assert err.problems[0].field_path == "gateway.edge_id"
    assert err.problems[0].value is MISSING
    assert "gateway.edge_id: required, but not given" in str(err)
    assert "counting.sources[a].kind: required" in str(err)


def test_missing_gateway_section(tmp_path: Path) -> None:
    err = load_error(tmp_path, "[store]\n")
    assert paths(err) == ["gateway"]


@pytest.mark.parametrize(
    "sources",
    [
        [("a", "good", "true"), ("b", "good", "true")],
        [("a", "scrap", "true"), ("b", "scrap", "true")],
        [("a", "total", "true"), ("b", "total", "true")],
    ],
)
def test_two_authoritative_sources_for_one_kind(
    tmp_path: Path, sources: list[tuple[str, str, str]]
) -> None:
    text = MINIMAL + "".join(
        f'[[counting.sources]]\nname = "{n}"\nkind = "{k}"\nauthoritative = {a}\n'
        for n, k, a in sources
    )
    err = load_error(tmp_path, text)
    assert len(err.problems) == 1
    line = str(err).splitlines()[1]
    assert line.startswith("  counting.sources[b].authoritative = True: ")
    assert "'a'" in line
    assert "'b'" in line


def test_total_and_good_both_authoritative(tmp_path: Path) -> None:
    text = MINIMAL + (
        '[[counting.sources]]\nname = "cycles"\nkind = "total"\n'
        '[[counting.sources]]\nname = "scrap"\nkind = "scrap"\n'
        '[[counting.sources]]\nname = "good"\nkind = "good"\n'
    )
    err = load_error(tmp_path, text)
    assert paths(err) == ["counting.sources[good].authoritative"]
    assert "'cycles'" in str(err)
    assert "counted twice" in str(err)


def test_authoritative_combinations_that_are_fine(tmp_path: Path) -> None:
    text = MINIMAL + (
        '[[counting.sources]]\nname = "g"\nkind = "good"\n'
        '[[counting.sources]]\nname = "s"\nkind = "scrap"\n'
        '[[counting.sources]]\nname = "g2"\nkind = "good"\nauthoritative = false\n'
        '[[counting.sources]]\nname = "t"\nkind = "total"\nauthoritative = false\n'
    )
    cfg = load_config(write(tmp_path, text), env={})
    assert [s.name for s in cfg.counting.sources] == ["g", "s", "g2", "t"]


def test_duplicate_source_names(tmp_path: Path) -> None:
    text = MINIMAL + (
        '[[counting.sources]]\nname = "a"\nkind = "good"\n'
        '[[counting.sources]]\nname = "a"\nkind = "scrap"\n'
    )
    err = load_error(tmp_path, text)
    # the name is not unique, so the entry is named by its index
    assert paths(err) == ["counting.sources.1.name"]
    assert "counting.sources.1.name = 'a': duplicate source name" in str(err)


def test_bad_time_zone(tmp_path: Path) -> None:
    err = load_error(tmp_path, MINIMAL + 'timezone = "Europe/Berlim"\n')
    assert "gateway.timezone = 'Europe/Berlim': unknown time zone" in str(err)


def test_alarm_mapped_to_unknown_reason(tmp_path: Path) -> None:
    text = MINIMAL + (
        "[[master_data.stop_reasons]]\n"
        'code = "JAM"\ntext = "Jam"\n'
        '[master_data.alarm_reasons]\n"E101" = "JAM"\n"E102" = "JAMM"\n'
    )
    err = load_error(tmp_path, text)
    assert paths(err) == ["master_data.alarm_reasons.E102"]
    line = str(err).splitlines()[1]
    assert line.startswith("  master_data.alarm_reasons.E102 = 'JAMM': alarm 'E102'")
    assert "JAM" in line


def test_bad_stop_category_and_duplicate_reason(tmp_path: Path) -> None:
    text = MINIMAL + (
        '[[master_data.stop_reasons]]\ncode = "A"\ntext = "a"\ncategory = "sometimes"\n'
        '[[master_data.scrap_reasons]]\ncode = "S1"\ntext = "x"\n'
        '[[master_data.scrap_reasons]]\ncode = "S1"\ntext = "y"\n'
    )
    text_out = str(load_error(tmp_path, text))
    assert "master_data.stop_reasons[A].category = 'sometimes'" in text_out


@pytest.mark.parametrize("bad", ["6:00", "25:00", "06:60", "0600", "noon", "24:00"])
def test_bad_shift_start(tmp_path: Path, bad: str) -> None:
    text = MINIMAL + f'[[shifts]]\nname = "early"\nstart = "{bad}"\nend = "14:00"\n'
    err = load_error(tmp_path, text)
    assert paths(err) == ["shifts[early].start"]
    assert f"shifts[early].start = '{bad}': should be a local time of day \"HH:MM\"" in str(err)


def test_duplicate_shift_starts(tmp_path: Path) -> None:
    text = MINIMAL + (
        '[[shifts]]\nname = "a"\nstart = "06:00"\nend = "14:00"\n'
        '[[shifts]]\nname = "b"\nstart = "06:00"\nend = "18:00"\n'
    )
    err = load_error(tmp_path, text)
    assert "shifts[b].start = '06:00': shift 'a' starts at the same time" in str(err)


def test_toml_syntax_error(tmp_path: Path) -> None:
    err = load_error(tmp_path, MINIMAL + "[engine]\nmax_batch = = 5\n")
    assert err.source is not None
    assert err.source.endswith("edge.toml")
    text = str(err)
    assert "line 5 = 'max_batch = = 5': TOML syntax error" in text
    assert "line 5, column" in text


def test_toml_syntax_error_hides_a_line_that_may_hold_a_secret(tmp_path: Path) -> None:
    err = load_error(tmp_path, MINIMAL + '[mqtt]\npassword = "hunter2\n')
    assert "hunter2" not in str(err)
    assert "line 5: TOML syntax error" in str(err)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert f"file = {str(path)!r}: no such file" in str(info.value)


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path, env={})
    assert "is a directory" in str(info.value)


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "edge.toml"
    path.write_bytes(MINIMAL.encode() + b'[[shifts]]\nname = "Fr\xfch"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert "line 5: not UTF-8" in str(info.value)


def test_all_problems_at_once_and_report(tmp_path: Path) -> None:
    text = """\
[gateway]
edge_id = "bad id!"
work_center = "W1"
timezone = "Nowhere/Land"
[store]
synchronous = "sometimes"
[confirmations]
every_good = -5
"""
    err = load_error(tmp_path, text)
    assert paths(err) == [
        "gateway.edge_id",
        "gateway.timezone",
        "store.synchronous",
        "confirmations.every_good",
    ]
    assert "gateway.edge_id = 'bad id!': should be 1-64 characters of A-Z a-z 0-9 _ . -" in str(err)
    report = config_report(err)
    lines = report.splitlines()
    assert lines[0] == f"invalid configuration in {tmp_path / 'edge.toml'} (4 problems):"
    assert len(lines) == 5
    assert "Traceback" not in report


def test_config_error_survives_pickling(tmp_path: Path) -> None:
    err = load_error(tmp_path, MINIMAL + 'timezone = "X/Y"\n')
    assert str(pickle.loads(pickle.dumps(err))) == str(err)


def test_gateway_config_is_frozen() -> None:
    cfg = load_config(EXAMPLE, env={})
    assert isinstance(cfg, GatewayConfig)
    with pytest.raises(ValueError, match="frozen"):
        cfg.gateway.edge_id = "other"  # type: ignore[misc]


# -- the shift calendar: weekdays, breaks, holidays, planned downtime ---------------------------

CALENDAR = (
    MINIMAL
    + """\
timezone = "Europe/Berlin"

[[shifts]]
name = "early"
start = "06:00"
end = "14:00"
weekdays = ["mon", "tue", "wed", "thu", "fri"]
breaks = [{ name = "breakfast", start = "09:00", end = "09:15" }]

[[shifts]]
name = "sat"
start = "06:00"
end = "12:00"
weekdays = ["sat"]

[calendar]
holidays = [2026-12-25, 2026-12-26]

[[calendar.planned_downtime]]
start = 2026-12-28T06:00:00
end = 2026-12-28T10:00:00
reason = "stocktake"
"""
)


def test_the_shift_calendar_reaches_the_rules(tmp_path: Path) -> None:
    import datetime as dt

    rules = rules_from_config(load_config(write(tmp_path, CALENDAR), env={}))
    early, sat = rules.shifts
    assert early.weekdays == frozenset({0, 1, 2, 3, 4})
    assert early.breaks == (("breakfast", 9 * 60, 15),)
    assert sat.weekdays == frozenset({5})  # the same start on another day is fine
    assert rules.holidays == (dt.date(2026, 12, 25), dt.date(2026, 12, 26))
    # local time in Berlin (CET, +1)
    start = dt.datetime(2026, 12, 28, 5, tzinfo=dt.UTC).timestamp() * 1000
    assert rules.planned_downtime == ((start, start + 4 * 3_600_000, "stocktake"),)


@pytest.mark.parametrize(
    ("change", "where", "says"),
    [
        (
            ('weekdays = ["mon", "tue", "wed", "thu", "fri"]', 'weekdays = ["monday"]'),
            "shifts[early].weekdays.0",
            "Input should be",
        ),
        (
            ('start = "09:00", end = "09:15"', 'start = "15:00", end = "15:15"'),
            "shifts[early].breaks",
            "is not inside the shift",
        ),
        (
            ("holidays = [2026-12-25, 2026-12-26]", "holidays = [2026-12-25T00:00:00]"),
            "calendar.holidays",
            "dates, not date-times",
        ),
        (
            ("end = 2026-12-28T10:00:00", "end = 2026-12-28T05:00:00"),
            "calendar.planned_downtime.0.end",
            "must be after start",
        ),
        (('weekdays = ["sat"]', 'weekdays = ["fri"]'), "shifts[sat].start", "same day"),
        (
            (
                'name = "sat"\nstart = "06:00"\nend = "12:00"',
                'name = "sat"\nstart = "22:00"\nend = "08:00"',
            ),
            "shifts",
            "overlap",
        ),
    ],
)
def test_a_calendar_that_cannot_be_is_refused_naming_the_field(
    tmp_path: Path, change: tuple[str, str], where: str, says: str
) -> None:
    old, new = change
    assert old in CALENDAR
    text = CALENDAR.replace(old, new)
    if "22:00" in new:  # Sunday's night into Monday's early shift
        text = text.replace('weekdays = ["sat"]', 'weekdays = ["sun"]')
    err = load_error(tmp_path, text)
    assert where in paths(err), (paths(err), str(err))
    assert says in str(err)


def test_badges_become_the_rules_holders_and_each_is_listed_once(tmp_path: Path) -> None:
    entry = '[[badges]]\nbadge = "{b}"\npersonnel = "{p}"\nname = "Ana Weber"\n'
    cfg = load_config(write(tmp_path, MINIMAL + entry.format(b="00012345", p="12345")), env={})
    (holder,) = rules_from_config(cfg).badges
    assert (holder.badge_id, holder.personnel, holder.name) == ("00012345", "12345", "Ana Weber")
    twice = MINIMAL + entry.format(b="00012345", p="1") + entry.format(b="00012345", p="2")
    text = str(load_error(tmp_path, twice))
    assert "badge '00012345' is listed twice" in text, text
    bad = MINIMAL + entry.format(b="has space", p="toolong-personnel-number-x")
    assert set(paths(load_error(tmp_path, bad))) == {"badges.0.badge", "badges.0.personnel"}


def test_service_intervals_become_the_rules_and_bad_ones_are_named(tmp_path: Path) -> None:
    entry = '[[service]]\nname = "{n}"\nmeasure = "{m}"\nevery = {e}\n'
    good = (
        MINIMAL
        + entry.format(n="oil", m="hours", e="500.5")
        + "[material]\nbackflush_scrap = false\n"
    )
    rules = rules_from_config(load_config(write(tmp_path, good), env={}))
    (oil,) = rules.service
    assert (oil.name, oil.measure.value, oil.every) == ("oil", "hours", Decimal("500.5"))
    assert rules.machine_hours is True
    assert rules.labour_per_operator is True
    assert rules.backflush_scrap is False
    for every, measure, words in (
        ("0", "hours", "greater than 0"),
        ("1.5", "cycles", "cycles are whole numbers"),
        ("10000000000000", "parts", "at most 1000000000000 parts"),
        ("2000000", "hours", "at most 1000000 hours"),
        ("true", "starts", "Input should be a number"),
        ('"x"', "starts", "decimal"),
    ):
        text = str(load_error(tmp_path, MINIMAL + entry.format(n="die", m=measure, e=every)))
        assert "service" in text, text
        assert words in text, (every, measure, text)
    twice = MINIMAL + entry.format(n="die", m="cycles", e=1) * 2
    assert "name 'die' is listed twice" in str(load_error(tmp_path, twice))
    many = MINIMAL + "".join(entry.format(n=f"s{i}", m="starts", e=1) for i in range(33))
    assert "service" in str(load_error(tmp_path, many))
    bad_name = MINIMAL + entry.format(n="has space", m="starts", e=1)
    assert set(paths(load_error(tmp_path, bad_name))) == {"service.0.name"}
    bad_measure = MINIMAL + entry.format(n="die", m="years", e=1)
    assert set(paths(load_error(tmp_path, bad_measure))) == {"service[die].measure"}
    off = MINIMAL + "[machine]\nhours = false\n"
    assert rules_from_config(load_config(write(tmp_path, off), env={})).machine_hours is False
