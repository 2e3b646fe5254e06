"""The scanner as one stream of inputs: the configured reader's scans, each routed.

What the daemon needs from ``[scanner]``: :func:`make_reader` (the serial or the HID reader)
and :func:`routed_scans` (each scan with what it is for, refusals included, so the caller can
show them). The date comes from a function, read at every scan (the core takes time passed in).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import date
from typing import Any

from edge.scanners.config import ScannerConfig
from edge.scanners.evdev_reader import HidScanner
from edge.scanners.hid import KeyRefused
from edge.scanners.route import Routed, Router, refused_key
from edge.scanners.serial_reader import SerialScanner

__all__ = ["RoutedScan", "make_reader", "routed_scans"]


@dataclass(frozen=True, slots=True)
class RoutedScan:
    """One scan: ``raw`` as read (for the log), ``result`` what it is for or why refused."""

    raw: str
    result: Routed


def make_reader(cfg: ScannerConfig, **kw: Any) -> SerialScanner | HidScanner:
    """The reader ``cfg.kind`` names, set up from ``cfg`` (``kw``: logger, on_change)."""
    if cfg.kind == "hid":
        return HidScanner.from_config(cfg, **kw)
    return SerialScanner.from_config(cfg, **kw)


async def routed_scans(
    cfg: ScannerConfig,
    *,
    today: Callable[[], date],
    badge_known: Callable[[str], bool] | None = None,
    reader: SerialScanner | HidScanner | None = None,
) -> AsyncIterator[RoutedScan]:
    """Each scan from ``reader`` (default: :func:`make_reader`), routed, for ever (cancel to
    stop). Raises only :class:`~edge.scanners.errors.ScannerUnavailable` (the reader's package
    missing, a path that is no such device)."""
    router = Router(cfg)
    source = reader if reader is not None else make_reader(cfg)
    async for scan in source.scans():
        if isinstance(scan, KeyRefused):
            yield RoutedScan(scan.typed, refused_key(scan))
            continue
        raw = scan if isinstance(scan, str) else scan.text
        yield RoutedScan(raw, router.route(raw, today=today(), badge_known=badge_known))
