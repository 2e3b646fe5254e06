"""The Last Wills the broker publishes are the documented ones: a gateway (``edge run``) and a
relay (``edge relay run``) as processes of their own, killed with SIGKILL, and a consumer that
sees what the broker then publishes for them, compared with asyncapi.json (the server binding's
``lastWill`` for the gateway, the relay/state channel's Last Will example for the relay) and
with the models' definition, MQTT 5 properties included."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge.sync.contract import (
    CONTENT_TYPE,
    PAYLOAD_FORMAT_INDICATOR,
    gateway_last_will,
    relay_last_will,
)
from simulators.broker import Mosquitto, find_mosquitto
from tests.contract_js.wire import CONTRACT, REPO, Capture, Captured
from tests.gateway.conftest import ROOT, gateway_config

pytestmark = pytest.mark.timeout(60)

EDGE_ID = "wc-press-07"
HEALTH = f"{ROOT}/_mes_v1/health"
RELAY_STATE = "umh/v1/acme/_mes_v1/relay/state"

RELAY_TOML = """
[relay]
enterprise = "acme"
instance = "will"
log_level = "warning"

[mqtt]
host = "127.0.0.1"
port = {port}
client_id = "edge-relay-will"
reconnect_min_s = 0.2

[ledger]
url = "sqlite:///{ledger}"

[erp]
system = "file"
format = "csv"
drop_dir = "{drop}"
"""


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    try:
        find_mosquitto()
    except FileNotFoundError as exc:  # pragma: no cover - the test scripts install it
        pytest.skip(str(exc))
    with Mosquitto(tmp_path / "broker") as running:
        yield running


def spawn(*args: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "edge.cli", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def online(capture: Capture, topic: str) -> bool:
    return any(m.topic == topic and m.json().get("online") is True for m in capture.on(topic))


def wait(check: Any, what: str, children: list[subprocess.Popen[bytes]]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if check():
            return
        for child in children:
            if child.poll() is not None:
                err = child.stderr.read().decode(errors="replace") if child.stderr else ""
                raise AssertionError(f"{child.args} exited ({child.returncode}): {err[-1500:]}")
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def last(capture: Capture, topic: str) -> Captured:
    return [m for m in capture.on(topic) if m.topic == topic][-1]


def documented() -> tuple[dict[str, Any], dict[str, Any]]:
    doc = json.loads((CONTRACT / "asyncapi.json").read_text())
    will = doc["servers"]["central"]["bindings"]["mqtt"]["lastWill"]
    state = doc["components"]["messages"]["MesV1RelayState"]
    (example,) = [x for x in state["examples"] if x["name"] == "last-will"]
    return will, example["payload"]


def test_the_last_wills_sent_are_the_documented_ones(tmp_path: Path, broker: Mosquitto) -> None:
    gateway_config(tmp_path, broker)  # writes tmp_path/edge.toml
    relay_toml = tmp_path / "relay.toml"
    (tmp_path / "drop").mkdir()
    relay_toml.write_text(
        RELAY_TOML.format(port=broker.port, ledger=tmp_path / "ledger.db", drop=tmp_path / "drop")
    )
    capture = Capture(broker.host, broker.port).start()
    children = [
        spawn("run", "--config", str(tmp_path / "edge.toml")),
        spawn("relay", "run", "--config", str(relay_toml)),
    ]
    try:
        wait(
            lambda: online(capture, HEALTH) and online(capture, RELAY_STATE),
            "the gateway's health and the relay's state online",
            children,
        )
        for child in children:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait(10)
        wait(
            lambda: (
                last(capture, HEALTH).json()["online"] is False
                and last(capture, RELAY_STATE).json()["online"] is False
            ),
            "the Last Wills",
            [],
        )
    finally:
        for child in children:
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait(10)
        capture.stop()
    will, relay_example = documented()
    gateway_sent, relay_sent = last(capture, HEALTH), last(capture, RELAY_STATE)

    assert will["topic"].replace("{root}", ROOT) == gateway_sent.topic
    assert json.loads(will["message"].replace("<edge_id>", EDGE_ID)) == gateway_sent.json()
    assert gateway_sent.payload == gateway_last_will(EDGE_ID)
    assert (will["qos"], will["retain"]) == (gateway_sent.qos, gateway_sent.retain) == (1, True)

    assert relay_sent.json() == relay_example
    assert relay_sent.payload == relay_last_will()
    assert (relay_sent.qos, relay_sent.retain) == (1, True)

    for sent in (gateway_sent, relay_sent):
        assert (sent.payload_format, sent.content_type, sent.user_properties) == (
            PAYLOAD_FORMAT_INDICATOR,
            CONTENT_TYPE,
            (),
        ), sent
