"""Contract fuzz of the downlink: generated messages through a real broker to a real daemon.

For every message central could send (valid, at the edges of the contract, or broken in any
way, see ``messages.py``) the gateway must stay up, and either apply it or answer it on
``_mes_v1/rejected`` with a reason and the message's msg_id (where one was readable); a
message that can only be refused must be refused. After the run the store's projections equal
a replay of its journal (``edge verify``), and the daemon stops cleanly.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from simulators.broker import Mosquitto, find_mosquitto
from tests.fuzz.harness import (
    RELAY_TOPIC,
    Central,
    Daemon,
    Finding,
    error_lines,
    latest_health,
    report,
    run_fuzz,
    wait_online,
)
from tests.fuzz.messages import DOWN, RELAY, generate_isolated, schema_of

SEED = 20250303


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    try:
        find_mosquitto()
    except FileNotFoundError as exc:  # pragma: no cover - the test scripts install it
        pytest.skip(str(exc))
    with Mosquitto(tmp_path / "broker") as b:
        yield b


def fuzz(tmp_path: Path, broker: Mosquitto, n: int, seed: int, budget_s: float) -> None:
    messages = generate_isolated(n, seed)
    assert len(messages) == n
    assert {m.topic for m in messages} == {*DOWN, RELAY}, "every down topic and the relay state"
    daemon = Daemon(tmp_path, broker)
    central = Central(broker).start()
    daemon.start()
    try:
        wait_online(daemon, central)
        run = run_fuzz(messages, daemon, central, budget_s=budget_s)
        run.findings += after_the_run(daemon, central)
    finally:
        central.stop()
        daemon.kill()
    out = Path(os.environ.get("EDGE_FUZZ_REPORT", tmp_path / "fuzz-report.json"))
    digest = report(run, out)
    print(json.dumps(run.summary()))
    assert not run.findings, digest


def after_the_run(daemon: Daemon, central: Central) -> list[Finding]:
    """The daemon is up and online, the relay state still works, it stops cleanly, and the
    projections equal a replay of the journal."""
    found: list[Finding] = []
    if not daemon.alive:
        found.append(Finding("dead_at_end", f"exit code {daemon.returncode}"))
        daemon.start()
        wait_online(daemon, central)
    # the relay says it is there: health must show it within a few health intervals
    central.publish(RELAY_TOPIC, b'{"online": true}')
    since = time.monotonic()

    def relay_online_health() -> bool:
        h = latest_health(central)
        return bool(h and h["_received"] > since and h.get("relay_online") is True)

    if not central.wait(relay_online_health, 10, alive=lambda: daemon.alive):
        found.append(
            Finding("health", f"no health with relay_online true: {latest_health(central)}")
        )
    health = latest_health(central)
    if not health or health.get("online") is not True:
        found.append(Finding("health", f"last health is not online: {health}"))
    errors = error_lines(daemon.log_lines())
    if errors:
        found.append(Finding("error_log", f"{len(errors)} error lines, e.g. " + errors[-1][:600]))
    code = daemon.stop()
    if code != 0:
        found.append(Finding("unclean_stop", f"exit code {code} after SIGTERM"))
    verified = daemon.verify()
    if verified.returncode != 0:
        found.append(Finding("verify", (verified.stdout + verified.stderr)[-1500:]))
    return found


def test_down_topics_have_published_schemas() -> None:
    """The generator covers what the AsyncAPI document says the gateway receives."""
    doc = json.loads(
        (Path(__file__).resolve().parents[2] / "contract" / "asyncapi.json").read_text()
    )
    received = {
        doc["channels"][op["channel"]["$ref"].rsplit("/", 1)[-1]]["address"]
        for op in doc["operations"].values()
        if op["action"] == "receive"
        and {"$ref": "#/components/tags/gateway"} in op.get("tags", [])  # not the relay's
    }
    paths = {a.removeprefix("{root}/") for a in received if a.startswith("{root}/")}
    assert paths == set(DOWN)
    for path in DOWN:
        assert schema_of(path)["properties"]["schema"]["const"]


def test_generation_is_deterministic() -> None:
    a, b = generate_isolated(80, SEED), generate_isolated(80, SEED)
    assert [(m.topic, m.payload) for m in a] == [(m.topic, m.payload) for m in b]
    assert [m.payload for m in generate_isolated(80, SEED + 1)] != [m.payload for m in a]


@pytest.mark.timeout(240)
def test_downlink_fuzz_500(tmp_path: Path, broker: Mosquitto) -> None:
    fuzz(tmp_path, broker, 500, SEED, budget_s=150)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_downlink_fuzz_10000(tmp_path: Path, broker: Mosquitto) -> None:
    fuzz(tmp_path, broker, 10_000, SEED + 1, budget_s=1500)
