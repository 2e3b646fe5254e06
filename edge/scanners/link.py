"""What both scanner readers keep about their device: open or not, its last problem, and whom
to tell of a change."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

OnChange = Callable[[bool, str | None], None]


class LinkState:
    """``connected`` and ``problem`` (None while all is well); ``_set`` calls ``on_change``
    once per change, and a hook that fails is logged, never the end of the reading."""

    connected: bool
    problem: str | None
    on_change: OnChange | None
    log: Any

    def _set(self, connected: bool, problem: str | None) -> None:
        changed = connected != self.connected or problem != self.problem
        self.connected, self.problem = connected, problem
        if changed and self.on_change is not None:
            try:
                self.on_change(connected, problem)
            except Exception:  # the caller's hook failing must not end the reading
                self.log.exception("scanner_on_change_failed")
