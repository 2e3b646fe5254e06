"""Linux input key events to scanned strings: the pure part of a USB HID (keyboard) scanner.

A HID scanner is a keyboard: it presses a key for every character and Enter at the end. What
arrives through evdev are key codes (linux/input-event-codes.h), not characters, so the
characters are worked out here from the codes, the held modifiers and the keyboard layout the
scanner was set to (``us`` or ``de``, QWERTZ). Nothing is read here; :class:`HidDecoder` is fed
``(type, code, value)`` triples and answers a :class:`Scanned` or a :class:`KeyRefused` when a
scan ends.

- Only ``EV_KEY`` events count; value 1 is a press, 0 a release, 2 the kernel's auto-repeat
  (ignored: a scanner never holds a key, and a repeat would double a character).
- KEY_ENTER and KEY_KPENTER end a scan; KEY_TAB too if ``end_on_tab``.
- The group separator (ASCII 29, FNC1 in GS1 codes) comes as Ctrl + the key right of P (``]``
  on us; the same key on de), as Alt held with its decimal code on the keypad (Alt+0029, any
  number 1-255 is read that way), or as one of ``separator_keys`` (a function key the scanner
  was set to send). A typed substitute such as ``<GS>`` is plain text for the GS1 parser.
- The keypad's digits and signs (NumLock assumed on) are what they show; CapsLock toggles the
  case of letters.
- On ``de`` the accent keys are dead keys: ``^`` and a following space are one ``^``.
- A key that makes no character on the layout, a Ctrl or Alt combination that means nothing, or
  a scan longer than ``max_length`` makes the whole scan a :class:`KeyRefused` naming the key
  code (or the length); the decoder goes on with the next scan.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "EV_KEY",
    "GS",
    "KEY_NAMES",
    "LAYOUTS",
    "HidDecoder",
    "HidResult",
    "KeyRefused",
    "Layout",
    "Scanned",
    "key_name",
]

GS = "\x1d"

# ---------------------------------------------------------------------- linux/input-event-codes.h

EV_SYN = 0x00
EV_KEY = 0x01
EV_MSC = 0x04

KEY_ESC = 1
KEY_1, KEY_2, KEY_3, KEY_4, KEY_5 = 2, 3, 4, 5, 6
KEY_6, KEY_7, KEY_8, KEY_9, KEY_0 = 7, 8, 9, 10, 11
KEY_MINUS = 12
KEY_EQUAL = 13
KEY_BACKSPACE = 14
KEY_TAB = 15
KEY_Q, KEY_W, KEY_E, KEY_R, KEY_T, KEY_Y, KEY_U, KEY_I, KEY_O, KEY_P = range(16, 26)
KEY_LEFTBRACE = 26
KEY_RIGHTBRACE = 27
KEY_ENTER = 28
KEY_LEFTCTRL = 29
KEY_A, KEY_S, KEY_D, KEY_F, KEY_G, KEY_H, KEY_J, KEY_K, KEY_L = range(30, 39)
KEY_SEMICOLON = 39
KEY_APOSTROPHE = 40
KEY_GRAVE = 41
KEY_LEFTSHIFT = 42
KEY_BACKSLASH = 43
KEY_Z, KEY_X, KEY_C, KEY_V, KEY_B, KEY_N, KEY_M = range(44, 51)
KEY_COMMA = 51
KEY_DOT = 52
KEY_SLASH = 53
KEY_RIGHTSHIFT = 54
KEY_KPASTERISK = 55
KEY_LEFTALT = 56
KEY_SPACE = 57
KEY_CAPSLOCK = 58
KEY_F1, KEY_F2, KEY_F3, KEY_F4, KEY_F5, KEY_F6, KEY_F7, KEY_F8, KEY_F9, KEY_F10 = range(59, 69)
KEY_NUMLOCK = 69
KEY_SCROLLLOCK = 70
KEY_KP7, KEY_KP8, KEY_KP9 = 71, 72, 73
KEY_KPMINUS = 74
KEY_KP4, KEY_KP5, KEY_KP6 = 75, 76, 77
KEY_KPPLUS = 78
KEY_KP1, KEY_KP2, KEY_KP3 = 79, 80, 81
KEY_KP0 = 82
KEY_KPDOT = 83
KEY_102ND = 86
KEY_F11, KEY_F12 = 87, 88
KEY_KPENTER = 96
KEY_RIGHTCTRL = 97
KEY_KPSLASH = 98
KEY_RIGHTALT = 100
KEY_LEFTMETA = 125
KEY_RIGHTMETA = 126

KEY_NAMES: dict[int, str] = {
    value: name
    for name, value in sorted(globals().items())
    if name.startswith("KEY_") and isinstance(value, int)
}


def key_name(code: int) -> str:
    """``"key code 30 (KEY_A)"``; the number alone for a code not named here."""
    name = KEY_NAMES.get(code)
    return f"key code {code} ({name})" if name else f"key code {code}"


_SHIFTS = frozenset({KEY_LEFTSHIFT, KEY_RIGHTSHIFT})
_CTRLS = frozenset({KEY_LEFTCTRL, KEY_RIGHTCTRL})
_KEYPAD_DIGITS = {
    KEY_KP0: 0, KEY_KP1: 1, KEY_KP2: 2, KEY_KP3: 3, KEY_KP4: 4,
    KEY_KP5: 5, KEY_KP6: 6, KEY_KP7: 7, KEY_KP8: 8, KEY_KP9: 9,
}  # fmt: skip
_KEYPAD = {
    **{code: str(d) for code, d in _KEYPAD_DIGITS.items()},
    KEY_KPDOT: ".", KEY_KPMINUS: "-", KEY_KPPLUS: "+", KEY_KPASTERISK: "*", KEY_KPSLASH: "/",
}  # fmt: skip
_LETTERS = {
    KEY_A: "a", KEY_B: "b", KEY_C: "c", KEY_D: "d", KEY_E: "e", KEY_F: "f", KEY_G: "g",
    KEY_H: "h", KEY_I: "i", KEY_J: "j", KEY_K: "k", KEY_L: "l", KEY_M: "m", KEY_N: "n",
    KEY_O: "o", KEY_P: "p", KEY_Q: "q", KEY_R: "r", KEY_S: "s", KEY_T: "t", KEY_U: "u",
    KEY_V: "v", KEY_W: "w", KEY_X: "x", KEY_Y: "y", KEY_Z: "z",
}  # fmt: skip
_DIGIT_KEYS = (KEY_1, KEY_2, KEY_3, KEY_4, KEY_5, KEY_6, KEY_7, KEY_8, KEY_9, KEY_0)


@dataclass(frozen=True, slots=True)
class Layout:
    """What each key makes on one keyboard layout: plain, with Shift, with AltGr (right Alt).

    ``dead``: the keys that wait for the next one (a space after them is swallowed)."""

    name: str
    plain: dict[int, str]
    shifted: dict[int, str]
    altgr: dict[int, str]
    dead: frozenset[int] = frozenset()


def _us() -> Layout:
    plain = {**_LETTERS, KEY_SPACE: " "}
    plain.update({code: "1234567890"[i] for i, code in enumerate(_DIGIT_KEYS)})
    shifted = {code: ch.upper() for code, ch in _LETTERS.items()} | {KEY_SPACE: " "}
    shifted.update({code: "!@#$%^&*()"[i] for i, code in enumerate(_DIGIT_KEYS)})
    for code, lower, upper in (
        (KEY_MINUS, "-", "_"), (KEY_EQUAL, "=", "+"), (KEY_LEFTBRACE, "[", "{"),
        (KEY_RIGHTBRACE, "]", "}"), (KEY_SEMICOLON, ";", ":"), (KEY_APOSTROPHE, "'", '"'),
        (KEY_GRAVE, "`", "~"), (KEY_BACKSLASH, "\\", "|"), (KEY_COMMA, ",", "<"),
        (KEY_DOT, ".", ">"), (KEY_SLASH, "/", "?"), (KEY_102ND, "\\", "|"),
    ):  # fmt: skip
        plain[code], shifted[code] = lower, upper
    return Layout("us", plain, shifted, {})


def _de() -> Layout:
    letters = dict(_LETTERS)
    letters[KEY_Y], letters[KEY_Z] = "z", "y"  # QWERTZ
    plain = {**letters, KEY_SPACE: " "}
    plain.update({code: "1234567890"[i] for i, code in enumerate(_DIGIT_KEYS)})
    shifted = {code: ch.upper() for code, ch in letters.items()} | {KEY_SPACE: " "}
    shifted.update({code: '!"§$%&/()='[i] for i, code in enumerate(_DIGIT_KEYS)})
    for code, lower, upper in (
        (KEY_MINUS, "ß", "?"), (KEY_EQUAL, "\u00b4", "`"), (KEY_LEFTBRACE, "ü", "Ü"),
        (KEY_RIGHTBRACE, "+", "*"), (KEY_SEMICOLON, "ö", "Ö"), (KEY_APOSTROPHE, "ä", "Ä"),
        (KEY_GRAVE, "^", "°"), (KEY_BACKSLASH, "#", "'"), (KEY_COMMA, ",", ";"),
        (KEY_DOT, ".", ":"), (KEY_SLASH, "-", "_"), (KEY_102ND, "<", ">"),
    ):  # fmt: skip
        plain[code], shifted[code] = lower, upper
    altgr = {
        KEY_Q: "@", KEY_E: "€", KEY_7: "{", KEY_8: "[", KEY_9: "]", KEY_0: "}",
        KEY_MINUS: "\\", KEY_RIGHTBRACE: "~", KEY_102ND: "|", KEY_2: "²", KEY_3: "³",
        KEY_M: "µ",
    }  # fmt: skip
    return Layout("de", plain, shifted, altgr, dead=frozenset({KEY_GRAVE, KEY_EQUAL}))


LAYOUTS: dict[str, Layout] = {"us": _us(), "de": _de()}


# ---------------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class Scanned:
    """One scan as the scanner typed it (without the end key)."""

    text: str


@dataclass(frozen=True, slots=True)
class KeyRefused:
    """A scan not taken: ``code`` is the key at fault (None: the scan as a whole), ``typed``
    what had been read of it."""

    reason: str
    typed: str
    code: int | None = None

    @property
    def message(self) -> str:
        shown = self.typed.replace(GS, "<GS>")
        shown = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in shown)[:80]
        return f"scan refused after {shown!r}: {self.reason}"


HidResult = Scanned | KeyRefused


class HidDecoder:
    """Feed it key events; it answers a result when a scan ends, else None. Not thread-safe;
    one per device."""

    def __init__(
        self,
        layout: Layout | Literal["us", "de"] = "us",
        *,
        max_length: int = 512,
        end_on_tab: bool = False,
        separator_keys: Iterable[int] = (),
    ) -> None:
        if isinstance(layout, str):
            if layout not in LAYOUTS:
                raise ValueError(f"layout {layout!r} unknown, expected one of {sorted(LAYOUTS)}")
            layout = LAYOUTS[layout]
        if max_length < 1:
            raise ValueError(f"max_length {max_length} must be at least 1")
        self.layout = layout
        self.max_length = max_length
        self.end_on_tab = end_on_tab
        self.separator_keys = frozenset(separator_keys)
        self._held: set[int] = set()
        self._caps = False
        self._chars: list[str] = []
        self._fault: KeyRefused | None = None
        self._alt_digits: list[int] | None = None  # Alt held: the keypad digits typed so far
        self._dead: str | None = None

    # -- state

    @property
    def pending(self) -> bool:
        """Something typed of a scan not yet ended."""
        return bool(self._chars) or self._fault is not None or self._dead is not None

    def _shift(self) -> bool:
        return bool(self._held & _SHIFTS)

    def _refuse(self, reason: str, code: int | None) -> None:
        if self._fault is None:
            self._fault = KeyRefused(reason, "".join(self._chars), code)

    def _put(self, ch: str) -> None:
        if self._fault is not None:
            return
        if len(self._chars) >= self.max_length:
            self._refuse(f"longer than {self.max_length} characters", None)
            return
        self._chars.append(ch)

    def _end(self) -> HidResult:
        if self._dead is not None:
            self._put(self._dead)
        result: HidResult = self._fault or Scanned("".join(self._chars))
        self._chars, self._fault, self._dead, self._alt_digits = [], None, None, None
        return result

    def flush(self) -> KeyRefused | None:
        """Drop a scan whose end key never came (the reader calls it after a quiet spell)."""
        if not self.pending:
            return None
        result = self._end()
        if isinstance(result, KeyRefused):
            return result
        return KeyRefused("no end key (Enter) came: the scan is incomplete", result.text)

    # -- events

    def feed(self, type_: int, code: int, value: int) -> HidResult | None:
        """One input event. Returns a result when it ended a scan."""
        if type_ != EV_KEY or value == 2:
            return None
        if value == 0:
            return self._release(code)
        if value != 1:
            return None
        return self._press(code)

    def feed_all(self, events: Iterable[tuple[int, int, int]]) -> Iterator[HidResult]:
        for type_, code, value in events:
            result = self.feed(type_, code, value)
            if result is not None:
                yield result

    def _release(self, code: int) -> HidResult | None:
        self._held.discard(code)
        if code == KEY_LEFTALT and self._alt_digits is not None:
            digits, self._alt_digits = self._alt_digits, None
            if digits:
                number = int("".join(map(str, digits)))
                if 1 <= number <= 255:
                    self._put(chr(number))
                else:
                    self._refuse(
                        f"Alt+{''.join(map(str, digits))} is no character code 1-255", None
                    )
        return None

    def _press(self, code: int) -> HidResult | None:
        if code in _SHIFTS or code in _CTRLS or code == KEY_RIGHTALT:
            self._held.add(code)
            return None
        if code == KEY_LEFTALT:
            self._held.add(code)
            self._alt_digits = []
            return None
        if code == KEY_CAPSLOCK:
            self._caps = not self._caps
            return None
        if code in (KEY_NUMLOCK, KEY_SCROLLLOCK, KEY_LEFTMETA, KEY_RIGHTMETA):
            return None
        if code in (KEY_ENTER, KEY_KPENTER) or (code == KEY_TAB and self.end_on_tab):
            if self._alt_digits is not None:  # Enter with Alt held: end the Alt code first
                self._release(KEY_LEFTALT)
                self._held.add(KEY_LEFTALT)
            return self._end()
        if self._alt_digits is not None:
            if code in _KEYPAD_DIGITS and len(self._alt_digits) < 4:
                self._alt_digits.append(_KEYPAD_DIGITS[code])
            else:
                self._refuse(f"Alt + {key_name(code)} makes no character", code)
            return None
        if code in self.separator_keys:
            self._put(GS)
            return None
        if self._held & _CTRLS:
            if code == KEY_RIGHTBRACE:
                self._put(GS)
            else:
                self._refuse(f"Ctrl + {key_name(code)} makes no character", code)
            return None
        self._character(code)
        return None

    def _character(self, code: int) -> None:
        layout = self.layout
        if KEY_RIGHTALT in self._held:
            ch = layout.altgr.get(code)
            if ch is None:
                self._refuse(
                    f"AltGr + {key_name(code)} makes no character on {layout.name!r}", code
                )
                return
        elif code in _KEYPAD:
            ch = _KEYPAD[code]
        else:
            table = layout.shifted if self._shift() else layout.plain
            got = table.get(code)
            if got is None:
                self._refuse(f"{key_name(code)} makes no character on {layout.name!r}", code)
                return
            ch = got
            if self._caps and code in _LETTERS:
                ch = ch.swapcase()
        if self._dead is not None:
            dead, self._dead = self._dead, None
            self._put(dead)
            if ch == " ":
                return  # dead key + space: the accent alone
        if code in layout.dead and KEY_RIGHTALT not in self._held:
            self._dead = ch
            return
        self._put(ch)
