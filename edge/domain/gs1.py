"""What a barcode scan says: GS1 element strings and the plant's own plain codes.

Pure: a scan (the text a scanner sent) in, a :class:`Scan` or a :class:`ScanRefused` out; nothing
is read or written. The rules follow the GS1 General Specifications:

- A symbology identifier in front (``]C1`` GS1-128, ``]d2`` GS1 DataMatrix, ``]Q3`` GS1 QR,
  ``]e0`` GS1 DataBar) marks a GS1 element string and is stripped; other ``]xy`` prefixes are
  stripped too and the rest is judged by its shape.
- An element string is a sequence of application identifiers (AI) and their data. A
  fixed-length AI (00, 01, 17, 310n) needs no separator; a variable-length one (10, 21, 30, 37)
  ends at the group separator (ASCII 29, FNC1 in the symbol) or at the end of the scan. Scanners
  that cannot send ASCII 29 are set to send something else for it (``<GS>``, ``^``, ``~``):
  ``fnc1`` names those substitutes; each is read as a separator.
- The bracketed human-readable form ``(01)09506000134352(10)ABC`` is read too: brackets
  delimit the AIs, so no separator is needed.
- Check digits (00 SSCC, 01 GTIN) are verified with the GS1 mod-10 algorithm.
- 17 (expiry) is YYMMDD; DD = 00 means the last day of that month; the century is the GS1
  sliding window (§7.12): the year is placed within 49 years back and 50 years ahead of
  ``today``'s year.
- 310n is the net weight in kg with ``n`` implied decimals (3102 001250 = 12.50 kg).

A text that is no GS1 element string (no symbology identifier, no bracketed AI, no separator)
is a *plain* code, classified by the first of the configured :class:`PlainPattern` it matches in
full (an order/operation number, an operator's badge, a logout card). A text with a GS1
symbology identifier that does not parse, and a bracketed form that does not, are refused
naming the AI and why. A plain text matching no pattern is refused as unknown.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal

__all__ = [
    "AI_RULES",
    "DEFAULT_FNC1",
    "GS",
    "MAX_SCAN",
    "AiRule",
    "Element",
    "PlainPattern",
    "Scan",
    "ScanRefused",
    "check_digit",
    "encode",
    "expiry_date",
    "parse",
]

GS = "\x1d"  # ASCII 29, the group separator; FNC1 as a field separator in a symbol
DEFAULT_FNC1 = ("<GS>", "^")  # what scanners commonly send instead of ASCII 29
MAX_SCAN = 512  # a GS1 DataMatrix holds much more, but no element string we read is longer

GS1_SYMBOLOGIES = frozenset({"]C1", "]d2", "]Q3", "]e0", "]J1"})
_SYMBOLOGY = re.compile(r"\](?P<id>[A-Za-z][0-9A-Za-z])")
# GS1's character set 82 (the printable subset allowed in alphanumeric AIs)
_CSET82 = re.compile(r"[!\"%&'()*+,\-./0-9:;<=>?A-Z_a-z]*")


@dataclass(frozen=True, slots=True)
class AiRule:
    """One application identifier: its data's length and kind."""

    ai: str
    title: str
    length: int  # the fixed length, or the maximum of a variable one
    fixed: bool
    numeric: bool
    check_digit: bool = False


def _rules() -> dict[str, AiRule]:
    rules = [
        AiRule("00", "SSCC", 18, fixed=True, numeric=True, check_digit=True),
        AiRule("01", "GTIN", 14, fixed=True, numeric=True, check_digit=True),
        AiRule("02", "CONTENT", 14, fixed=True, numeric=True, check_digit=True),
        AiRule("10", "BATCH/LOT", 20, fixed=False, numeric=False),
        AiRule("11", "PROD DATE", 6, fixed=True, numeric=True),
        AiRule("15", "BEST BEFORE", 6, fixed=True, numeric=True),
        AiRule("17", "USE BY OR EXPIRY", 6, fixed=True, numeric=True),
        AiRule("21", "SERIAL", 20, fixed=False, numeric=False),
        AiRule("30", "VAR. COUNT", 8, fixed=False, numeric=True),
        AiRule("37", "COUNT", 8, fixed=False, numeric=True),
    ]
    rules += [AiRule(f"310{n}", "NET WEIGHT (kg)", 6, fixed=True, numeric=True) for n in range(6)]
    return {r.ai: r for r in rules}


AI_RULES: dict[str, AiRule] = _rules()
_DATES = frozenset({"11", "15", "17"})


@dataclass(frozen=True, slots=True)
class Element:
    """One AI and its data, as scanned."""

    ai: str
    data: str

    @property
    def title(self) -> str:
        return AI_RULES[self.ai].title


@dataclass(frozen=True, slots=True)
class PlainPattern:
    """A plain (non-GS1) code's kind by a regular expression matched against the whole code.

    ``kind`` is what the code is (``operation``, ``badge``, ``logout``, ...); the pattern's
    named group ``value`` (if any) is the part that matters (the order/operation, the badge id),
    else the whole code."""

    kind: str
    pattern: re.Pattern[str]

    @classmethod
    def of(cls, kind: str, pattern: str) -> PlainPattern:
        return cls(kind, re.compile(pattern))


@dataclass(frozen=True, slots=True)
class Scan:
    """A scan understood: GS1 elements (``kind`` "gs1") or a plain code of a configured kind."""

    raw: str
    kind: str
    value: str = ""  # a plain code's value (its ``value`` group, or the whole code)
    elements: tuple[Element, ...] = ()
    symbology: str | None = None

    def get(self, ai: str) -> str | None:
        for e in self.elements:
            if e.ai == ai:
                return e.data
        return None

    @property
    def sscc(self) -> str | None:
        return self.get("00")

    @property
    def gtin(self) -> str | None:
        return self.get("01")

    @property
    def batch(self) -> str | None:
        return self.get("10")

    @property
    def serial(self) -> str | None:
        return self.get("21")

    @property
    def count(self) -> int | None:
        """AI 37 (count of trade items), else AI 30 (variable count)."""
        value = self.get("37") or self.get("30")
        return int(value) if value is not None else None

    def expiry(self, today: date) -> date | None:
        value = self.get("17")
        return expiry_date(value, today) if value is not None else None

    @property
    def net_weight_kg(self) -> Decimal | None:
        for e in self.elements:
            if e.ai.startswith("310"):
                return Decimal(int(e.data)).scaleb(-int(e.ai[3]))
        return None


@dataclass(frozen=True, slots=True)
class ScanRefused:
    """Why a scan was not understood: ``ai`` names the element at fault (None: the whole)."""

    raw: str
    reason: str
    ai: str | None = None

    @property
    def message(self) -> str:
        where = f"AI ({self.ai}): " if self.ai is not None else ""
        return f"scan {_shown(self.raw)} refused: {where}{self.reason}"


class _Refuse(Exception):
    def __init__(self, reason: str, ai: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.ai = ai


def _shown(raw: str) -> str:
    """The scan as a log line may show it: separators visible, bounded."""
    text = raw.replace(GS, "<GS>")
    text = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)
    return repr(text[:80] + ("..." if len(text) > 80 else ""))


# ---------------------------------------------------------------------- check digits and dates


def check_digit(digits: str) -> int:
    """The GS1 mod-10 check digit of ``digits`` (the data without its check digit): weights 3
    and 1 alternating from the right."""
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(digits)))
    return (10 - total % 10) % 10


def _year(yy: int, today: date) -> int:
    """GS1 General Specifications §7.12: the century placing YY within -49..+50 of today."""
    century = today.year - today.year % 100
    diff = yy - today.year % 100
    if diff > 50:
        century -= 100
    elif diff < -49:
        century += 100
    return century + yy


def expiry_date(yymmdd: str, today: date) -> date:
    """A GS1 date (AI 11, 15, 17): DD 00 is the last day of the month. ValueError if invalid."""
    if len(yymmdd) != 6 or not yymmdd.isdigit():
        raise ValueError(f"date {yymmdd!r} is not YYMMDD")
    yy, mm, dd = int(yymmdd[:2]), int(yymmdd[2:4]), int(yymmdd[4:])
    if not 1 <= mm <= 12:
        raise ValueError(f"month {mm:02d} is not 01-12")
    year = _year(yy, today)
    if dd == 0:
        first_next = date(year + (mm == 12), mm % 12 + 1, 1)
        return first_next - timedelta(days=1)
    try:
        return date(year, mm, dd)
    except ValueError:
        raise ValueError(f"day {dd:02d} does not exist in {year}-{mm:02d}") from None


# ---------------------------------------------------------------------- parsing


def _rule_at(text: str, i: int) -> AiRule:
    for n in (2, 3, 4):
        rule = AI_RULES.get(text[i : i + n])
        if rule is not None:
            return rule
    head = text[i : i + 4]
    if len(head) < 2 or not head[:2].isdigit():
        raise _Refuse(f"expected an application identifier, found {head!r}")
    ai = "".join(c for c in head if c.isdigit())[: 4 if head[:2] in ("31", "32", "33") else 2]
    raise _Refuse("unknown application identifier", ai)


def _check(rule: AiRule, data: str, today: date | None) -> None:
    if rule.fixed and len(data) != rule.length:
        raise _Refuse(f"needs {rule.length} characters, got {len(data)} ({data!r})", rule.ai)
    if not data:
        raise _Refuse("has no data", rule.ai)
    if len(data) > rule.length:
        raise _Refuse(f"too long: {len(data)} characters, at most {rule.length}", rule.ai)
    if rule.numeric and not (data.isascii() and data.isdigit()):
        raise _Refuse(f"must be digits only, got {data!r}", rule.ai)
    if not rule.numeric and not _CSET82.fullmatch(data):
        raise _Refuse(f"has characters outside GS1's set 82: {data!r}", rule.ai)
    if rule.check_digit and check_digit(data[:-1]) != int(data[-1]):
        raise _Refuse(
            f"bad check digit {data[-1]} in {data}, expected {check_digit(data[:-1])}", rule.ai
        )
    if rule.ai in _DATES:
        try:
            expiry_date(data, today or date(2000, 1, 1))
        except ValueError as exc:
            raise _Refuse(str(exc), rule.ai) from None


def _elements_raw(text: str, today: date | None) -> list[Element]:
    """An unbracketed element string, separators already ASCII 29."""
    out: list[Element] = []
    i = 0
    while i < len(text):
        if text[i] == GS:  # a separator after a fixed-length AI, or doubled: allowed, skipped
            i += 1
            continue
        rule = _rule_at(text, i)
        i += len(rule.ai)
        if rule.fixed:
            data = text[i : i + rule.length]
            if GS in data:
                data = data[: data.index(GS)]
            i += len(data)
        else:
            end = text.find(GS, i)
            end = len(text) if end < 0 else end
            data = text[i:end]
            if len(data) > rule.length:
                raise _Refuse(
                    f"too long: {len(data)} characters, at most {rule.length}"
                    " (a missing separator after it?)",
                    rule.ai,
                )
            i = end
        _check(rule, data, today)
        out.append(Element(rule.ai, data))
    return out


_BRACKETED = re.compile(r"\((\d{2,4})\)([^()]*)")


def _elements_bracketed(text: str, today: date | None) -> list[Element]:
    out: list[Element] = []
    pos = 0
    for m in _BRACKETED.finditer(text):
        if m.start() != pos:
            raise _Refuse(f"unexpected text {text[pos : m.start()]!r} between elements")
        pos = m.end()
        ai, data = m.group(1), m.group(2)
        rule = AI_RULES.get(ai)
        if rule is None:
            raise _Refuse("unknown application identifier", ai)
        _check(rule, data, today)
        out.append(Element(ai, data))
    if pos != len(text) or not out:
        raise _Refuse(f"unexpected text {text[pos:]!r} after the elements")
    return out


def _duplicates(elements: Sequence[Element]) -> None:
    seen: dict[str, str] = {}
    for e in elements:
        if e.ai in seen and seen[e.ai] != e.data:
            raise _Refuse(f"appears twice with different data ({seen[e.ai]!r}, {e.data!r})", e.ai)
        seen[e.ai] = e.data


def parse(
    raw: str,
    *,
    patterns: Iterable[PlainPattern] = (),
    fnc1: Iterable[str] = DEFAULT_FNC1,
    today: date | None = None,
) -> Scan | ScanRefused:
    """What ``raw`` says. Never raises: anything not understood is a :class:`ScanRefused`.

    ``today`` judges the century of dates (default: dates are only checked for a valid month
    and day in 2000-2099's calendar)."""
    text = raw.strip("\r\n")
    if not text:
        return ScanRefused(raw, "empty")
    if len(text) > MAX_SCAN:
        return ScanRefused(raw, f"too long: {len(text)} characters, at most {MAX_SCAN}")
    symbology: str | None = None
    m = _SYMBOLOGY.match(text)
    if m is not None:
        symbology = "]" + m.group("id")
        text = text[m.end() :]
    gs1 = symbology in GS1_SYMBOLOGIES
    for sub in fnc1:
        if sub and sub in text:
            text = text.replace(sub, GS)
            gs1 = gs1 or symbology is None
    if text.startswith(GS):  # a leading FNC1 some scanners send for the symbol's first one
        text = text[1:]
        gs1 = True
    bracketed = text.startswith("(") and _BRACKETED.match(text) is not None
    try:
        if bracketed:
            elements = _elements_bracketed(text, today)
        elif gs1 or GS in text:
            elements = _elements_raw(text.rstrip(GS), today)
        else:
            plain = _plain(raw, text, symbology, patterns)
            if plain is not None:
                return plain
            try:  # a scanner set to drop the symbology identifier: still an element string?
                elements = _elements_raw(text, today)
            except _Refuse as exc:
                return ScanRefused(
                    raw,
                    "matches no configured code pattern and is no GS1 element string"
                    f" ({'AI (' + exc.ai + '): ' if exc.ai else ''}{exc.reason})",
                )
        if not elements:
            raise _Refuse("no elements")
        _duplicates(elements)
    except _Refuse as exc:
        return ScanRefused(raw, exc.reason, exc.ai)
    return Scan(raw, "gs1", elements=tuple(elements), symbology=symbology)


def _plain(
    raw: str, text: str, symbology: str | None, patterns: Iterable[PlainPattern]
) -> Scan | None:
    for p in patterns:
        m = p.pattern.fullmatch(text)
        if m is not None:
            value = m.groupdict().get("value")
            return Scan(raw, p.kind, value if value is not None else text, symbology=symbology)
    return None


# ---------------------------------------------------------------------- encoding


def encode(elements: Iterable[Element], *, separator: str = GS, bracketed: bool = False) -> str:
    """The element string of ``elements`` (unchecked): fixed-length AIs need no separator,
    variable ones get ``separator`` unless they are last; ``bracketed``: ``(AI)data`` each."""
    items = list(elements)
    if bracketed:
        return "".join(f"({e.ai}){e.data}" for e in items)
    parts: list[str] = []
    for n, e in enumerate(items):
        parts.append(e.ai + e.data)
        if not AI_RULES[e.ai].fixed and n < len(items) - 1:
            parts.append(separator)
    return "".join(parts)
