"""GS1 element strings and plain codes (edge.domain.gs1): the General Specifications' examples,
the refusals, a round trip and a fuzz property."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.domain.gs1 import (
    AI_RULES,
    GS,
    Element,
    PlainPattern,
    Scan,
    ScanRefused,
    check_digit,
    encode,
    expiry_date,
    parse,
)

TODAY = date(2026, 12, 2)
PATTERNS = (
    PlainPattern.of("operation", r"OP(?P<value>\d{1,10}/\d{4}(/\d{1,3})?)"),
    PlainPattern.of("badge", r"B(?P<value>\d{4,8})"),
    PlainPattern.of("logout", r"LOGOUT"),
)


def ok(raw: str, **kw: object) -> Scan:
    got = parse(raw, patterns=PATTERNS, today=TODAY, **kw)  # type: ignore[arg-type]
    assert isinstance(got, Scan), got
    return got


def refused(raw: str, **kw: object) -> ScanRefused:
    got = parse(raw, patterns=PATTERNS, today=TODAY, **kw)  # type: ignore[arg-type]
    assert isinstance(got, ScanRefused), got
    return got


@pytest.mark.parametrize(
    ("digits", "check"),
    [
        # GS1 General Specifications' examples (company prefix 0614141) and GTIN-13s in trade
        ("0061414112345", 2),  # GTIN 00614141123452
        ("10614141123456789", 7),  # SSCC 106141411234567897
        ("0950600013435", 2),  # GTIN 09506000134352 (GS1 Digital Link examples)
        ("400638133393", 1),  # EAN-13 4006381333931
    ],
)
def test_check_digit(digits: str, check: int) -> None:
    assert check_digit(digits) == check


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # GS1-128 with symbology identifier: fixed AIs need no separator, variable ones do
        (
            "]C101095060001343521012345" + GS + "21A1B2",
            {"01": "09506000134352", "10": "12345", "21": "A1B2"},
        ),
        ("]C100106141411234567897", {"00": "106141411234567897"}),
        # GS1 DataMatrix, expiry, batch last (no separator needed at the end)
        (
            "]d20100614141123452172512311098765",
            {"01": "00614141123452", "17": "251231", "10": "98765"},
        ),
        # GS1 QR, counts
        (
            "]Q3010061414112345237100" + GS + "3012",
            {"01": "00614141123452", "37": "100", "30": "12"},
        ),
        # the bracketed human-readable form
        (
            "(01)09506000134352(10)ABC-123(21)X9",
            {"01": "09506000134352", "10": "ABC-123", "21": "X9"},
        ),
        # scanners sending a substitute for FNC1 / ASCII 29, and a leading FNC1
        (
            "0109506000134352" + "10LOT7<GS>21SN1",
            {"01": "09506000134352", "10": "LOT7", "21": "SN1"},
        ),
        ("^0109506000134352" + "10LOT7^21SN1", {"01": "09506000134352", "10": "LOT7", "21": "SN1"}),
        # no symbology identifier, no separator: still read as an element string
        ("0109506000134352", {"01": "09506000134352"}),
        # net weight 3102: 12.50 kg
        ("]C10109506000134352" + "3102001250", {"01": "09506000134352", "3102": "001250"}),
    ],
)
def test_element_strings(raw: str, expected: dict[str, str]) -> None:
    scan = ok(raw + "\r\n")
    assert scan.kind == "gs1"
    assert {e.ai: e.data for e in scan.elements} == expected


def test_accessors() -> None:
    scan = ok("]d201006141411234521725020010B1" + GS + "21S1" + GS + "3704" + GS + "3102001250")
    assert scan.symbology == "]d2"
    assert (scan.gtin, scan.batch, scan.serial, scan.count) == ("00614141123452", "B1", "S1", 4)
    assert scan.expiry(TODAY) == date(2025, 2, 28)  # DD 00: the month's last day
    assert scan.net_weight_kg == Decimal("12.50")
    assert scan.sscc is None


@pytest.mark.parametrize(
    ("yymmdd", "today", "expected"),
    [
        ("251231", TODAY, date(2025, 12, 31)),
        ("240200", TODAY, date(2024, 2, 29)),  # DD 00 in a leap year
        ("231200", TODAY, date(2023, 12, 31)),
        # the sliding window (GS1 GS §7.12): -49..+50 years around today
        ("760101", TODAY, date(2076, 1, 1)),  # +50: ahead
        ("770101", TODAY, date(1977, 1, 1)),  # +51: back
        ("770101", date(2000, 1, 1), date(1977, 1, 1)),
        ("490101", date(2099, 6, 1), date(2149, 1, 1)),  # 49 - 99 = -50: next century
    ],
)
def test_dates(yymmdd: str, today: date, expected: date) -> None:
    assert expiry_date(yymmdd, today) == expected


@pytest.mark.parametrize(
    ("raw", "ai", "reason"),
    [
        ("]C101095060001343531", "01", "bad check digit 3"),
        ("]C100106141411234567890", "00", "bad check digit 0"),
        ("]C10109506000134", "01", "needs 14 characters"),
        ("]C10109506000134352" + "10" + "A" * 21, "10", "too long: 21"),
        # no separator after a variable AI: its data swallows the next AI, too long
        ("]C110ABCDEFGHIJ21SERIALSERIAL1", "10", "missing separator"),
        ("]C13712345678901", "37", "too long"),
        ("]C13012AB", "30", "digits only"),
        ("]C19912345", "99", "unknown application identifier"),
        ("]d2010950600013435217261301", "17", "month 13"),
        ("]d20109506000134352172502300", "17", "day 30 does not exist"),
        ("(01)09506000134352(10)", "10", "has no data"),
        ("(01)09506000134352(98)X", "98", "unknown application identifier"),
        ("]C110A" + GS + "10B", "10", "appears twice"),
        ("]C110ÄÖ", "10", "set 82"),
    ],
)
def test_refusals_name_the_ai_and_why(raw: str, ai: str, reason: str) -> None:
    got = refused(raw)
    assert got.ai == ai
    assert reason in got.reason
    assert f"AI ({ai})" in got.message


@pytest.mark.parametrize(
    ("raw", "kind", "value"),
    [
        ("OP4711/0020", "operation", "4711/0020"),
        ("OP4711/0020/1\r", "operation", "4711/0020/1"),
        ("B12345", "badge", "12345"),
        ("LOGOUT\n", "logout", "LOGOUT"),
        ("]C0OP4711/0020", "operation", "4711/0020"),  # Code 128 without FNC1
    ],
)
def test_plain_codes(raw: str, kind: str, value: str) -> None:
    scan = ok(raw)
    assert (scan.kind, scan.value) == (kind, value)


@pytest.mark.parametrize("raw", ["", "\r\n", "hello", "OP47110020", "B12", "x" * 600])
def test_plain_refused(raw: str) -> None:
    got = refused(raw)
    assert got.reason
    assert "refused" in got.message


def test_substitutes_are_configurable() -> None:
    # "~" is no separator by default, and outside set 82: the batch is refused as scanned
    assert refused("]C110LOT~21S").ai == "10"
    scan = ok("]C110LOT~21S", fnc1=("~",))
    assert (scan.batch, scan.serial) == ("LOT", "S")


def test_message_shows_the_separator() -> None:
    got = refused("]C110A" + GS + "99X")
    assert "<GS>" in got.message
    assert "\x1d" not in got.message


# ---------------------------------------------------------------------- properties

_CSET82 = "!\"%&'()*+,-./0123456789:;<=>?ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz"


@st.composite
def elements(draw: st.DrawFn) -> Element:
    ai = draw(st.sampled_from(sorted(AI_RULES)))
    rule = AI_RULES[ai]
    if ai in ("11", "15", "17"):
        d = draw(st.dates(date(2000, 1, 1), date(2075, 12, 31)))
        data = d.strftime("%y%m%d")
    elif rule.numeric:
        n = rule.length if rule.fixed else draw(st.integers(1, rule.length))
        data = draw(st.text("0123456789", min_size=n, max_size=n))
        if rule.check_digit:
            data = data[:-1] + str(check_digit(data[:-1]))
    else:
        alphabet = _CSET82.replace("(", "").replace(")", "").replace("^", "")
        data = draw(st.text(alphabet, min_size=1, max_size=rule.length))
    return Element(ai, data)


def _distinct(es: list[Element]) -> list[Element]:
    seen: dict[str, Element] = {}
    for e in es:
        seen.setdefault(e.ai, e)
    return list(seen.values())


@settings(max_examples=300, deadline=None)
@given(
    st.lists(elements(), min_size=1, max_size=6).map(_distinct),
    st.sampled_from([GS, "<GS>", "^", "bracketed"]),
    st.sampled_from(["]C1", "]d2", "]Q3", ""]),
)
def test_round_trip(es: list[Element], sep: str, symbology: str) -> None:
    if sep == "bracketed":
        raw = encode(es, bracketed=True)
    else:
        raw = symbology + encode(es, separator=sep)
        if not symbology:
            raw = "^" + encode(es, separator=sep)  # a leading FNC1 marks it
    got = parse(raw, today=TODAY)
    assert isinstance(got, Scan), got
    assert list(got.elements) == es


@settings(max_examples=500, deadline=None)
@given(
    st.one_of(
        st.text(max_size=80),
        st.binary(max_size=80).map(lambda b: b.decode("latin-1")),
        st.text(alphabet="0123456789()]Cd12^\x1d<GS>", max_size=60),
    )
)
def test_anything_is_parsed_or_refused(raw: str) -> None:
    got = parse(raw, patterns=PATTERNS, today=TODAY)
    assert isinstance(got, Scan | ScanRefused)
    if isinstance(got, ScanRefused):
        assert got.reason
        assert isinstance(got.message, str)


def test_patterns_are_whole_code_matches() -> None:
    assert "no configured code pattern" in refused("XOP4711/0020").reason
