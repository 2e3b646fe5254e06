"""What a scan is for (edge.scanners.route): GS1 component labels, the plant's plain codes by
the configured patterns, and refusals that show the code and say why; no input makes it raise."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.domain.gs1 import GS, Element, check_digit, encode
from edge.scanners.config import ScannerConfig
from edge.scanners.hid import KEY_F5, HidDecoder, KeyRefused
from edge.scanners.route import (
    Badge,
    ComponentBatch,
    OperationPick,
    Refused,
    Routed,
    Router,
    refused_key,
    route,
    shown,
)

TODAY = date(2026, 12, 2)
CFG = ScannerConfig(
    component=r"M(?P<material>[A-Z0-9-]{1,18})\+(?P<batch>[A-Z0-9]{1,10})(\*(?P<quantity>\d+(,\d+)?))?",
    fnc1=["<GS>", "^"],
)
ROUTER = Router(CFG)
GTIN = "0950600013435" + str(check_digit("0950600013435"))


def go(raw: str, **kw: object) -> Routed:
    return ROUTER.route(raw, today=TODAY, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("OP4711/0020\r\n", OperationPick("4711", "0020")),
        ("]C0OP100000000001/0010", OperationPick("100000000001", "0010")),
        ("B00012345\r", Badge("00012345")),
        ("MBRK-7+L42\n", ComponentBatch("L42", material="BRK-7")),
        ("MBRK-7+L42*12,5", ComponentBatch("L42", material="BRK-7", quantity=Decimal("12.5"))),
        (
            f"]C101{GTIN}10LOT7{GS}3712",
            ComponentBatch("LOT7", gtin=GTIN, quantity=Decimal(12), unit="pcs"),
        ),
        (
            f"]d201{GTIN}1727033110B-9<GS>3102001250",
            ComponentBatch(
                "B-9", gtin=GTIN, quantity=Decimal("12.50"), unit="kg", expiry=date(2027, 3, 31)
            ),
        ),
        (
            f"(01){GTIN}(10)ABC(21)S1(17)261200",
            ComponentBatch("ABC", gtin=GTIN, expiry=date(2026, 12, 31), serial="S1"),
        ),
        (f"^01{GTIN}10X^30004", ComponentBatch("X", gtin=GTIN, quantity=Decimal(4), unit="pcs")),
    ],
)
def test_scans_become_inputs(raw: str, expected: Routed) -> None:
    assert go(raw) == expected


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        ("", "empty"),
        ("HELLO", "matches no configured code pattern"),
        ("OP4711-0020", "matches no configured code pattern"),
        (f"]C101{GTIN[:-1]}0", "AI (01): bad check digit"),
        ("]C11012345678901234567890121X", "AI (10): too long"),
        (f"]C101{GTIN}", "a GS1 code without a batch (AI 10); it has (01)"),
        ("]C100106141411234567897", "SSCC label without a batch"),
        (f"]C101{GTIN}10OLD{GS}17261130", "batch 'OLD' expired on 2026-11-30"),
        (f"]C101{GTIN}10Z{GS}37000", "quantity 0 pcs is not above 0"),
        ("MBRK+L1*0", "quantity '0' is not above 0"),
        ("x" * 300, "too long: 300 characters, at most 256"),
    ],
)
def test_refusals_show_the_code_and_why(raw: str, words: str) -> None:
    got = go(raw)
    assert isinstance(got, Refused), got
    assert words in got.reason
    assert got.code_shown == shown(raw)
    assert got.message.startswith(f"scan {shown(raw)} refused: ")


def test_the_separator_is_shown_not_sent() -> None:
    got = go(f"]C110A{GS}99X")
    assert isinstance(got, Refused)
    assert "<GS>" in got.code_shown
    assert GS not in got.message
    assert "AI (99)" in got.reason


def test_a_badge_nobody_knows() -> None:
    known = {"12345"}
    assert go("B12345", badge_known=known.__contains__) == Badge("12345")
    got = go("B54321", badge_known=known.__contains__)
    assert isinstance(got, Refused)
    assert got.reason == "badge '54321' belongs to no known operator"
    assert "'B54321'" in got.message


def test_expired_batches_may_be_allowed() -> None:
    raw = f"]C101{GTIN}10OLD{GS}17200101"
    assert isinstance(go(raw), Refused)
    got = route(raw, ScannerConfig(refuse_expired=False), today=TODAY)
    assert isinstance(got, ComponentBatch)
    assert got.expiry == date(2020, 1, 1)


def test_unconfigured_kinds_are_not_recognised() -> None:
    cfg = ScannerConfig(badge=None, operation=r"(?P<order>\d{6})-(?P<operation>\d{2})")
    assert route("123456-10", cfg, today=TODAY) == OperationPick("123456", "10")
    got = route("B12345", cfg, today=TODAY)
    assert isinstance(got, Refused)
    assert "no configured code pattern" in got.reason


def test_the_badge_group_is_optional() -> None:
    cfg = ScannerConfig(badge=r"[0-9A-F]{8}")
    assert route("00A1B2C3", cfg, today=TODAY) == Badge("00A1B2C3")


def test_shown_bounds_and_escapes() -> None:
    assert shown("a\x00b" + GS) == repr("a\\x00b<GS>")
    assert shown("y" * 100) == repr("y" * 80 + "...")


@st.composite
def gs1_ish(draw: st.DrawFn) -> str:
    ais = draw(
        st.lists(st.sampled_from(["01", "10", "17", "21", "30", "37", "3102", "00"]), max_size=5)
    )
    data = [Element(ai, draw(st.text("0123456789AB-", min_size=1, max_size=20))) for ai in ais]
    prefix = draw(st.sampled_from(["]C1", "]d2", "^", "", "]Q3", "]C0"]))
    sep = draw(st.sampled_from([GS, "<GS>", "^", ""]))
    return prefix + encode(data, separator=sep) if data else prefix


@settings(max_examples=600, deadline=None)
@given(
    st.one_of(
        st.text(max_size=300),
        st.binary(max_size=120).map(lambda b: b.decode("latin-1")),
        st.text(alphabet="OPB0123456789/+*,M-]Cd^\x1d<GS>\r\n()", max_size=60),
        gs1_ish(),
    ),
    st.dates(date(1990, 1, 1), date(2090, 12, 31)),
)
def test_no_input_makes_it_raise(raw: str, today: date) -> None:
    got = ROUTER.route(raw, today=today, badge_known=lambda b: b.endswith("7"))
    assert isinstance(got, OperationPick | ComponentBatch | Badge | Refused)
    if isinstance(got, Refused):
        assert got.reason
        assert got.code_shown == shown(raw)
    elif isinstance(got, ComponentBatch):
        assert got.batch
        assert got.quantity is None or got.quantity > 0
        assert got.expiry is None or not CFG.refuse_expired or got.expiry >= today
    elif isinstance(got, OperationPick):
        assert got.order
        assert got.operation


def test_a_key_refused_by_the_hid_decoder() -> None:
    decoder = HidDecoder("us")
    events = [(1, 30, 1), (1, 30, 0), (1, KEY_F5, 1), (1, KEY_F5, 0), (1, 28, 1)]
    (refused,) = decoder.feed_all(events)
    assert isinstance(refused, KeyRefused)
    got = refused_key(refused)
    assert got.code_shown == "'a'"
    assert "key code 63 (KEY_F5)" in got.message
