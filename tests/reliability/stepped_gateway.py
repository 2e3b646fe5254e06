"""The gateway daemon (``edge run``) with its clock's wall time read through an offset file:
the chain steps the gateway's wall clock by writing a number of milliseconds there (``3600000``
an hour ahead, ``-1767000000000`` back to about 1970), as NTP stepping the clock or a Pi
without a real-time clock would. Only the gateway's injectable clock moves (edge.clock's
``TimeSource``): the computer's clocks, the monotonic and boot clocks, the broker, the machine
and the relays are left as they are.

    python -m tests.reliability.stepped_gateway -c edge.toml --offset-file clock.offset
"""

from __future__ import annotations

import argparse
import asyncio
import threading
import time
from pathlib import Path

from edge.app import run_gateway
from edge.cli import _load, _usable_files
from edge.clock import TimeSource
from edge.config import config_path


class SteppedWall:
    """``time.time_ns()`` plus the offset in the file, read again every ``poll_s``."""

    def __init__(self, path: Path, poll_s: float = 0.02) -> None:
        self.path = path
        self.poll_s = poll_s
        self.offset_ns = self._read()
        threading.Thread(target=self._watch, name="stepped-wall", daemon=True).start()

    def _read(self) -> int:
        try:
            return int(self.path.read_text().strip() or 0) * 1_000_000
        except (OSError, ValueError):
            return 0

    def _watch(self) -> None:
        while True:
            time.sleep(self.poll_s)
            self.offset_ns = self._read()

    def __call__(self) -> int:
        return time.time_ns() + self.offset_ns


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("-c", "--config", required=True)
    p.add_argument("--offset-file", type=Path, required=True)
    args = p.parse_args()
    cfg = _load(args)
    _usable_files(cfg, config_path(args.config))
    source = TimeSource(wall_ns=SteppedWall(args.offset_file))
    asyncio.run(run_gateway(cfg, time_source=source))


if __name__ == "__main__":
    main()
