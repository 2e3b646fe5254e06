"""What keeps a scanner from being read at all (as opposed to a device that comes and goes)."""

from __future__ import annotations

__all__ = ["ScannerUnavailable"]


class ScannerUnavailable(RuntimeError):
    """A scanner cannot be read here: a Python package is missing, or the device is no device
    of that kind. The message says which and what to do; retrying does not help."""
