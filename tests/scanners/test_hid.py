"""The HID scanner's decoder (edge.scanners.hid): key event sequences as evdev delivers them
(EV_MSC scan codes, EV_KEY press/release/repeat, EV_SYN) to scanned strings on the us and de
layouts, the group separator three ways, and the refusals naming the key."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.domain.gs1 import Scan, parse
from edge.scanners import hid
from edge.scanners.hid import GS, HidDecoder, KeyRefused, Scanned

K = hid  # key codes

Event = tuple[int, int, int]

# "A1" then Enter on a us scanner, as `evtest` shows it: each key a MSC_SCAN (type 4, the HID
# usage), the EV_KEY, a SYN_REPORT; Shift held around the A.
RECORDED_US_A1: list[Event] = [
    (4, 4, 0x700E1), (1, 42, 1), (0, 0, 0),
    (4, 4, 0x70004), (1, 30, 1), (0, 0, 0),
    (4, 4, 0x70004), (1, 30, 0), (0, 0, 0),
    (4, 4, 0x700E1), (1, 42, 0), (0, 0, 0),
    (4, 4, 0x7001E), (1, 2, 1), (0, 0, 0),
    (4, 4, 0x7001E), (1, 2, 0), (0, 0, 0),
    (4, 4, 0x70028), (1, 28, 1), (0, 0, 0),
    (4, 4, 0x70028), (1, 28, 0), (0, 0, 0),
]  # fmt: skip


def press(*codes: int) -> list[Event]:
    """Press the keys in order, release them in reverse (a chord; one key: a tap)."""
    events: list[Event] = []
    for c in codes:
        events += [(K.EV_KEY, c, 1), (K.EV_SYN, 0, 0)]
    for c in reversed(codes):
        events += [(K.EV_KEY, c, 0), (K.EV_SYN, 0, 0)]
    return events


def keys(*chords: tuple[int, ...] | int) -> list[Event]:
    events: list[Event] = []
    for chord in chords:
        events += press(*(chord if isinstance(chord, tuple) else (chord,)))
    return events


def alt_code(digits: str) -> list[Event]:
    pad = {"0": K.KEY_KP0, "1": K.KEY_KP1, "2": K.KEY_KP2, "9": K.KEY_KP9, "3": K.KEY_KP3}
    events: list[Event] = [(K.EV_KEY, K.KEY_LEFTALT, 1)]
    for d in digits:
        events += press(pad[d])
    return [*events, (K.EV_KEY, K.KEY_LEFTALT, 0)]


ENTER = press(K.KEY_ENTER)
S = K.KEY_LEFTSHIFT


def decode(events: list[Event], layout: str = "us", **kw: object) -> list[hid.HidResult]:
    decoder = HidDecoder(layout, **kw)  # type: ignore[arg-type]
    return list(decoder.feed_all(events))


def text(events: list[Event], layout: str = "us", **kw: object) -> str:
    (got,) = decode(events, layout, **kw)
    assert isinstance(got, Scanned), got
    return got.text


def test_recorded_us_sequence() -> None:
    assert text(RECORDED_US_A1) == "A1"


def test_us_digits_letters_and_signs() -> None:
    events = keys(
        K.KEY_O, (S, K.KEY_P), K.KEY_4, K.KEY_7, K.KEY_SLASH, K.KEY_MINUS, K.KEY_DOT,
        (S, K.KEY_9), K.KEY_Y, K.KEY_Z, (S, K.KEY_0), (K.KEY_RIGHTSHIFT, K.KEY_EQUAL),
        K.KEY_SPACE, (S, K.KEY_7),
    ) + ENTER  # fmt: skip
    assert text(events) == "oP47/-.(yz)+ &"


def test_de_qwertz_and_its_shifted_digits() -> None:
    # the same keys on a German layout: y and z swapped, Shift+7 '/', Shift+8 '(', Shift+9 ')',
    # the key right of Ä is '#', right of Ü '+', the one left of Shift '-'
    events = keys(
        K.KEY_Y, K.KEY_Z, (S, K.KEY_Y), (S, K.KEY_7), (S, K.KEY_8), (S, K.KEY_9),
        K.KEY_RIGHTBRACE, K.KEY_SLASH, K.KEY_DOT, (S, K.KEY_0), (S, K.KEY_2), K.KEY_MINUS,
    ) + ENTER  # fmt: skip
    assert text(events, "de") == 'zyZ/()+-.="ß'
    # and on us those keys are something else
    assert text(events, "us") == "yzY&*(]/.)@-"


def test_de_altgr_and_dead_circumflex() -> None:
    altgr = K.KEY_RIGHTALT
    events = keys(
        (altgr, K.KEY_Q), (altgr, K.KEY_8), (altgr, K.KEY_9), K.KEY_GRAVE, K.KEY_SPACE, K.KEY_A
    )
    assert text(events + ENTER, "de") == "@[]^a"
    # a dead key straight before another key: both, in order; last before Enter: itself
    assert text(keys(K.KEY_GRAVE, K.KEY_1, K.KEY_GRAVE) + ENTER, "de") == "^1^"


def test_keypad_and_capslock() -> None:
    events = keys(K.KEY_KP1, K.KEY_KP0, K.KEY_KPDOT, K.KEY_KPMINUS, K.KEY_KPPLUS, K.KEY_KPSLASH)
    events += keys(K.KEY_CAPSLOCK, K.KEY_A, (S, K.KEY_B), K.KEY_CAPSLOCK, K.KEY_C)
    assert text(events + press(K.KEY_KPENTER)) == "10.-+/Abc"


@pytest.mark.parametrize("layout", ["us", "de"])
def test_the_group_separator_three_ways(layout: str) -> None:
    ctrl = keys((K.KEY_LEFTCTRL, K.KEY_RIGHTBRACE))
    events = keys(K.KEY_1, K.KEY_0, K.KEY_A) + ctrl + keys(K.KEY_2, K.KEY_1, K.KEY_B)
    events += alt_code("0029") + keys(K.KEY_3, K.KEY_7, K.KEY_5)
    events += press(K.KEY_F8) + keys(K.KEY_3, K.KEY_0, K.KEY_2) + ENTER
    got = text(events, layout, separator_keys=[K.KEY_F8])
    assert got == f"10a{GS}21b{GS}375{GS}302"


def test_a_gs1_code_typed_by_a_scanner_parses() -> None:
    digits = {str(i): code for i, code in enumerate((K.KEY_0, *range(K.KEY_1, K.KEY_0)))}
    events = keys(*(digits[c] for c in "010950600013435210")) + keys((S, K.KEY_L), (S, K.KEY_O))
    events += alt_code("29") + keys(*(digits[c] for c in "3712")) + ENTER
    scanned = text(events, "de")
    scan = parse(scanned)
    assert isinstance(scan, Scan), scan
    assert (scan.gtin, scan.batch, scan.count) == ("09506000134352", "LO", 12)


def test_repeats_and_other_events_are_ignored() -> None:
    events = [(K.EV_KEY, K.KEY_A, 1), (K.EV_KEY, K.KEY_A, 2), (K.EV_KEY, K.KEY_A, 2)]
    events += [(K.EV_KEY, K.KEY_A, 0), (K.EV_MSC, 4, 0x70004), (2, 0, 5), *ENTER]
    assert text(events) == "a"


def test_several_scans_in_one_stream() -> None:
    events = keys(K.KEY_1) + ENTER + keys(K.KEY_2, K.KEY_TAB, K.KEY_3) + ENTER
    got = decode(events, end_on_tab=True)
    assert got == [Scanned("1"), Scanned("2"), Scanned("3")]


def refusal(events: list[Event], layout: str = "us", **kw: object) -> KeyRefused:
    (got,) = decode(events, layout, **kw)
    assert isinstance(got, KeyRefused), got
    return got


@pytest.mark.parametrize(
    ("events", "layout", "code", "words"),
    [
        (
            keys(K.KEY_A, K.KEY_F5, K.KEY_B),
            "us",
            K.KEY_F5,
            "key code 63 (KEY_F5) makes no character",
        ),
        (keys(K.KEY_A, K.KEY_TAB), "us", K.KEY_TAB, "KEY_TAB"),
        (keys(K.KEY_A, K.KEY_ESC), "de", K.KEY_ESC, "key code 1 (KEY_ESC)"),
        (keys(K.KEY_A, 183), "de", 183, "key code 183 makes no character on 'de'"),
        (keys((K.KEY_LEFTCTRL, K.KEY_C)), "us", K.KEY_C, "Ctrl + key code 46 (KEY_C)"),
        (keys((K.KEY_RIGHTALT, K.KEY_A)), "de", K.KEY_A, "AltGr + key code 30"),
        (keys((K.KEY_LEFTALT, K.KEY_F4)), "us", K.KEY_F4, "Alt + key code 62 (KEY_F4)"),
    ],
)
def test_unknown_keys_are_refused_naming_the_code(
    events: list[Event], layout: str, code: int, words: str
) -> None:
    got = refusal(events + ENTER, layout)
    assert got.code == code
    assert words in got.reason
    assert got.typed == "a"[: len(got.typed)]
    assert words in got.message


def test_an_alt_code_out_of_range_is_refused() -> None:
    got = refusal(alt_code("0300") + ENTER)
    assert "Alt+0300" in got.reason


def test_too_long_is_refused_and_the_next_scan_is_read() -> None:
    decoder = HidDecoder("us", max_length=5)
    got = list(decoder.feed_all(keys(*[K.KEY_1] * 6) + ENTER + keys(K.KEY_2) + ENTER))
    assert isinstance(got[0], KeyRefused)
    assert "longer than 5 characters" in got[0].reason
    assert got[0].typed == "11111"
    assert got[1] == Scanned("2")
    # exactly the maximum is fine
    assert text(keys(*[K.KEY_1] * 5) + ENTER, max_length=5) == "11111"


def test_flush_drops_a_scan_without_its_end() -> None:
    decoder = HidDecoder("de")
    assert not list(decoder.feed_all(keys(K.KEY_Z, K.KEY_1)))
    assert decoder.pending
    dropped = decoder.flush()
    assert dropped is not None
    assert dropped.typed == "y1"
    assert "no end key" in dropped.reason
    assert decoder.flush() is None  # nothing pending any more
    assert list(decoder.feed_all(keys(K.KEY_2) + ENTER)) == [Scanned("2")]


def test_a_bad_layout_or_length_is_named() -> None:
    with pytest.raises(ValueError, match="layout 'fr'"):
        HidDecoder("fr")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_length 0"):
        HidDecoder("us", max_length=0)


# ---------------------------------------------------------------------- properties

_GS1_CHARS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz-./()+ "


def typer(layout: str) -> dict[str, list[Event]]:
    """How a scanner set to ``layout`` types each of GS1's characters (from the layout's own
    tables: this checks the decoder's handling of them, the tables are checked above)."""
    lay = hid.LAYOUTS[layout]
    out: dict[str, list[Event]] = {}
    for ch in _GS1_CHARS:
        plain = [c for c, v in lay.plain.items() if v == ch and c not in lay.dead]
        shifted = [c for c, v in lay.shifted.items() if v == ch and c not in lay.dead]
        if plain:
            out[ch] = press(plain[0])
        else:
            assert shifted, (layout, ch)
            out[ch] = press(S, shifted[0])
    out[GS] = press(K.KEY_LEFTCTRL, K.KEY_RIGHTBRACE)
    return out


TYPERS = {name: typer(name) for name in hid.LAYOUTS}


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(hid.LAYOUTS)), st.text(_GS1_CHARS + GS, min_size=1, max_size=60))
def test_what_is_typed_is_read(layout: str, scanned: str) -> None:
    events = [e for ch in scanned for e in TYPERS[layout][ch]] + ENTER
    assert decode(events, layout) == [Scanned(scanned)]


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(sorted(hid.LAYOUTS)),
    st.lists(
        st.tuples(st.sampled_from([0, 1, 1, 1, 4]), st.integers(0, 300), st.integers(-1, 3)),
        max_size=80,
    ),
)
def test_no_event_stream_makes_it_raise(layout: str, events: list[Event]) -> None:
    decoder = HidDecoder(layout, max_length=20)  # type: ignore[arg-type]
    for result in decoder.feed_all(events):
        assert isinstance(result, Scanned | KeyRefused)
        if isinstance(result, Scanned):
            assert len(result.text) <= 20
        else:
            assert result.reason
            assert len(result.typed) <= 20
    dropped = decoder.flush()
    assert dropped is None or dropped.reason
