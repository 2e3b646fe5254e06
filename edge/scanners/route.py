"""What a scan is for: an operation to pick, a component batch, an operator's badge, or refused.

Pure: a scanned string and the ``[scanner]`` configuration in, one result out; ``today`` is
passed in (it places a GS1 date's century and judges expiry), and ``badge_known`` (if given)
says whether a badge belongs to anyone. Never raises: what is not understood is a
:class:`Refused` showing the code (separators visible, bounded) and why.

- A GS1 element string (:func:`edge.domain.gs1.parse`) with a batch (AI 10) is a
  :class:`ComponentBatch`: the GTIN (01, else 02), the batch, the quantity (37 or 30 as pieces,
  310n as kg), the expiry (17) and the serial (21). Without a batch it is refused: a component
  is booked by its batch. An expired batch is refused if ``refuse_expired``.
- A plain code is what the first configured pattern it matches says: ``operation`` (groups
  ``order`` and ``operation``), ``badge`` (group ``badge``, else the whole code), ``component``
  (groups ``material``, ``batch`` and optionally ``quantity``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation

from edge.domain.gs1 import GS, Scan, ScanRefused, parse
from edge.scanners.config import ScannerConfig
from edge.scanners.hid import KeyRefused

__all__ = [
    "Badge",
    "ComponentBatch",
    "OperationPick",
    "Refused",
    "Routed",
    "Router",
    "refused_key",
    "route",
    "shown",
]

_SYMBOLOGY_LEN = 3  # "]C1"


@dataclass(frozen=True, slots=True)
class OperationPick:
    """Pick an order's operation (an order card or a routing sheet's code)."""

    order: str
    operation: str


@dataclass(frozen=True, slots=True)
class ComponentBatch:
    """A component's batch brought to the work center. ``gtin`` for a GS1 label, ``material``
    for the plant's own label; ``unit`` is "pcs" or "kg" when ``quantity`` is given."""

    batch: str
    gtin: str | None = None
    material: str | None = None
    quantity: Decimal | None = None
    unit: str | None = None
    expiry: date | None = None
    serial: str | None = None


@dataclass(frozen=True, slots=True)
class Badge:
    """An operator's badge: log in (or out, if already logged in: the caller decides)."""

    badge_id: str


@dataclass(frozen=True, slots=True)
class Refused:
    """A scan not taken: ``code_shown`` is the code as a log line or the panel may show it."""

    code_shown: str
    reason: str

    @property
    def message(self) -> str:
        return f"scan {self.code_shown} refused: {self.reason}"


Routed = OperationPick | ComponentBatch | Badge | Refused


def shown(raw: str, limit: int = 80) -> str:
    """``raw`` quoted, the group separator as ``<GS>``, other control characters as ``\\xNN``,
    cut after ``limit`` characters."""
    text = raw.replace(GS, "<GS>")
    text = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)
    return repr(text[:limit] + ("..." if len(text) > limit else ""))


class Router:
    """The configuration's patterns compiled once; :meth:`route` for each scan."""

    def __init__(self, cfg: ScannerConfig) -> None:
        self.cfg = cfg
        self._patterns = cfg.patterns()
        self._by_kind = {p.kind: p.pattern for p in self._patterns}
        self._fnc1 = tuple(cfg.fnc1)

    def route(
        self, raw: str, *, today: date, badge_known: Callable[[str], bool] | None = None
    ) -> Routed:
        code = shown(raw)
        if len(raw) > self.cfg.max_length + 2:  # the terminator may still be on it
            return Refused(code, f"too long: {len(raw)} characters, at most {self.cfg.max_length}")
        got = parse(raw, patterns=self._patterns, fnc1=self._fnc1, today=today)
        if isinstance(got, ScanRefused):
            where = f"AI ({got.ai}): " if got.ai is not None else ""
            return Refused(code, where + got.reason)
        if got.kind == "gs1":
            return self._gs1(code, got, today)
        return self._plain(code, got, badge_known)

    def _gs1(self, code: str, scan: Scan, today: date) -> Routed:
        present = ", ".join(f"({e.ai})" for e in scan.elements)
        batch = scan.batch
        if batch is None:
            what = "a pallet's SSCC label" if scan.sscc is not None else "a GS1 code"
            return Refused(code, f"{what} without a batch (AI 10); it has {present}")
        quantity: Decimal | None = None
        unit: str | None = None
        if scan.count is not None:
            quantity, unit = Decimal(scan.count), "pcs"
        elif scan.net_weight_kg is not None:
            quantity, unit = scan.net_weight_kg, "kg"
        if quantity is not None and quantity <= 0:
            return Refused(code, f"batch {batch!r}: quantity {quantity} {unit} is not above 0")
        try:
            expiry = scan.expiry(today)
        except ValueError as exc:  # parse checked it against the same today; kept as a refusal
            return Refused(code, f"AI (17): {exc}")
        if self.cfg.refuse_expired and expiry is not None and expiry < today:
            return Refused(code, f"batch {batch!r} expired on {expiry.isoformat()}")
        gtin = scan.gtin or scan.get("02")
        return ComponentBatch(
            batch, gtin=gtin, quantity=quantity, unit=unit, expiry=expiry, serial=scan.serial
        )

    def _groups(self, scan: Scan) -> dict[str, str | None]:
        text = scan.raw.strip("\r\n")
        if scan.symbology is not None:
            text = text[_SYMBOLOGY_LEN:]
        pattern = self._by_kind.get(scan.kind)
        m = pattern.fullmatch(text) if pattern is not None else None
        return m.groupdict() if m is not None else {}

    def _plain(self, code: str, scan: Scan, badge_known: Callable[[str], bool] | None) -> Routed:
        groups = self._groups(scan)
        if scan.kind == "operation":
            order, operation = groups.get("order"), groups.get("operation")
            if not order or not operation:
                return Refused(code, "the operation pattern matched without an order or operation")
            return OperationPick(order, operation)
        if scan.kind == "badge":
            badge_id = groups.get("badge") or scan.value
            if badge_known is not None and not badge_known(badge_id):
                return Refused(code, f"badge {badge_id!r} belongs to no known operator")
            return Badge(badge_id)
        if scan.kind == "component":
            material, batch = groups.get("material"), groups.get("batch")
            if not material or not batch:
                return Refused(code, "the component pattern matched without a material or batch")
            raw_qty = groups.get("quantity")
            quantity: Decimal | None = None
            if raw_qty:
                try:
                    quantity = Decimal(raw_qty.replace(",", "."))
                except InvalidOperation:
                    return Refused(code, f"quantity {raw_qty!r} is no number")
                if not quantity.is_finite() or quantity <= 0:
                    return Refused(code, f"quantity {raw_qty!r} is not above 0")
            return ComponentBatch(batch, material=material, quantity=quantity)
        return Refused(code, f"codes of kind {scan.kind!r} are not handled")


def route(
    raw: str,
    cfg: ScannerConfig,
    *,
    today: date,
    badge_known: Callable[[str], bool] | None = None,
) -> Routed:
    """:meth:`Router.route` with a router made for this one scan."""
    return Router(cfg).route(raw, today=today, badge_known=badge_known)


def refused_key(refused: KeyRefused) -> Refused:
    """A HID scan the decoder refused (an unknown key, too long), as a :class:`Refused`."""
    return Refused(shown(refused.typed), refused.reason)
