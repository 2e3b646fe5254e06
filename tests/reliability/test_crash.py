"""Kill -9 at random moments while counts pour in; nothing acknowledged may be lost or doubled.

After every kill: the projections equal the journal replay, every reading acknowledged before
the kill is in the journal exactly once, and the operation counted exactly the readings the
journal holds (each reading is +1 on the counter, so good = readings after the first).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from edge.domain.core import WorkCenter
from edge.store.replay import replay, verify
from edge.store.store import Store
from tests.engine.helpers import spec

ROOT = Path(__file__).resolve().parents[2]


def run_and_kill(db: Path, rng: random.Random) -> int:
    """Start the child, kill it with SIGKILL after a random time; return the last ACKed value."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.reliability.crash_child", str(db)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
        env=env,
        text=True,
    )
    assert child.stdout is not None
    ready = child.stdout.readline()
    assert ready.startswith("READY"), ready
    time.sleep(rng.uniform(0.0, 0.4))
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=10)
    acked = int(ready.split()[1])
    # Only whole lines: the kill may cut the last one short ("ACK 12" of "ACK 123", or "ACK").
    for line in child.stdout.read().split("\n")[:-1]:
        if line.startswith("ACK "):
            acked = int(line.split()[1])
    return acked


class Replayed:
    """The journal replayed so far: each check applies only the entries added since the last."""

    def __init__(self) -> None:
        self.wc: WorkCenter | None = None
        self.last_id = 0
        self.values: list[int] = []


def check(db: Path, acked: int, replayed: Replayed) -> None:
    store = Store(db)
    store.open()
    try:
        checked_up_to = replayed.last_id
        replayed.wc, replayed.last_id = replay(store, replayed.wc, replayed.last_id)
        assert verify(store, replayed.wc) == [], "projections differ from the journal replay"
        replayed.values.extend(
            json.loads(body)["value"]
            for (body,) in store.conn.execute(
                "SELECT body FROM journal WHERE input_type='CounterReading' AND id > ? ORDER BY id",
                (checked_up_to,),
            )
        )
        values = replayed.values
        dupes = [v for v, n in Counter(values).items() if n > 1]
        assert not dupes, f"readings journaled twice: {dupes[:5]}"
        assert set(range(1, acked + 1)) <= set(values), "an acknowledged reading was lost"
        assert values == sorted(values)
        wc = store.load()
        assert wc is not None
        good = wc.operations[spec().key].counted.good
        assert good == len(values) - 1  # the first reading is the baseline
    finally:
        store.close()


def crash_cycles(tmp_path: Path, cycles: int, seed: int) -> None:
    rng = random.Random(seed)
    db = tmp_path / "edge.db"
    acked_total = 0
    replayed = Replayed()
    for _ in range(cycles):
        acked = run_and_kill(db, rng)
        assert acked >= acked_total
        acked_total = acked
        check(db, acked, replayed)
    assert acked_total > 0


def test_kill_9_loses_and_doubles_nothing(tmp_path: Path) -> None:
    crash_cycles(tmp_path, cycles=20, seed=20261125)


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_kill_9_a_thousand_times(tmp_path: Path) -> None:
    crash_cycles(tmp_path, cycles=1000, seed=1)
