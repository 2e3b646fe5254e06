"""What the contract tests need around a real run: a consumer that keeps every message with its
MQTT 5 properties, the mapping of a concrete topic to the AsyncAPI channel it belongs to, and the
official validators (npm, installed once into the git-ignored ``tests/contract_js/.npm/`` the
way bench/npm.py installs Node-RED for the benchmarks)."""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.subscribeoptions import SubscribeOptions

from bench.npm import Installed, Unavailable, npm_install

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
CONTRACT = REPO / "contract"
NPM_DIR = HERE / ".npm"  # git-ignored
VALIDATE_JS = HERE / "validate.js"
REQUIRED = ("@asyncapi/parser", "ajv")


def validators() -> Installed:
    """@asyncapi/parser and Ajv in tests/contract_js/.npm (npm install the first time); the
    test is skipped with the reason when node, npm or the registry are missing."""
    try:
        return npm_install(
            NPM_DIR,
            (HERE / "package.json").read_text(),
            REQUIRED,
            what="the contract's validators (@asyncapi/parser, ajv)",
            min_node=18,
            timeout=300,
        )
    except Unavailable as exc:
        pytest.skip(str(exc))


def run_validators(
    installed: Installed, contract: Path = CONTRACT, messages: Path | None = None
) -> dict[str, Any]:
    """tests/contract_js/validate.js on ``contract`` (and the captured ``messages``)."""
    args = [str(installed.node), str(VALIDATE_JS), str(installed.directory), str(contract)]
    if messages is not None:
        args.append(str(messages))
    done = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, f"validate.js failed: {done.stderr[-2000:]}"
    report: dict[str, Any] = json.loads(done.stdout)
    return report


@dataclass(frozen=True, slots=True)
class Captured:
    topic: str
    payload: bytes
    retain: bool  # as published (the subscription asks for retain-as-published)
    qos: int
    payload_format: int | None
    content_type: str | None
    user_properties: tuple[tuple[str, str], ...]

    def json(self) -> Any:
        return json.loads(self.payload)


@dataclass
class Capture:
    """A plain paho MQTT 5 client subscribed to ``#``, as a consumer at central would run one:
    every message with its retain flag as published and its MQTT 5 properties."""

    host: str
    port: int
    client_id: str = "contract-capture"
    messages: list[Captured] = field(default_factory=list)
    sent: set[tuple[str, bytes]] = field(default_factory=set)  # what the test published itself

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        c = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=paho.MQTTv5,
        )
        c.on_connect = self._on_connect
        c.on_subscribe = lambda *_: self._subscribed.set()
        c.on_message = self._on_message
        self.client = c

    def _on_connect(self, client: paho.Client, *_: Any) -> None:
        client.subscribe("#", options=SubscribeOptions(qos=1, retainAsPublished=True))

    def _on_message(self, _c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        props = msg.properties
        captured = Captured(
            topic=msg.topic,
            payload=bytes(msg.payload),
            retain=bool(msg.retain),
            qos=msg.qos,
            payload_format=getattr(props, "PayloadFormatIndicator", None),
            content_type=getattr(props, "ContentType", None),
            user_properties=tuple(getattr(props, "UserProperty", ())),
        )
        with self._lock:
            self.messages.append(captured)

    def start(self) -> Capture:
        self.client.connect(self.host, self.port)
        self.client.loop_start()
        assert self._subscribed.wait(10), "no SUBACK"
        return self

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        """Publish as central would (kept apart from what the code under test published)."""
        self.sent.add((topic, payload))
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)

    def published_by_others(self) -> list[Captured]:
        with self._lock:
            return [m for m in self.messages if (m.topic, m.payload) not in self.sent]

    def on(self, suffix: str) -> list[Captured]:
        with self._lock:
            return [m for m in self.messages if m.topic.endswith(suffix)]

    def wait_for(self, suffix: str, timeout: float = 10.0) -> list[Captured]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.on(suffix)
            if found:
                return found
            time.sleep(0.02)
        raise AssertionError(f"no message on *{suffix} within {timeout} s")


def channel_address(topic: str, roots: tuple[str, ...], enterprise: str) -> str | None:
    """The AsyncAPI address (``{root}/...``, ``umh/v1/{enterprise}/...``) a concrete topic or
    subscription filter belongs to; ``$share/<group>/`` is taken off first. None: none of them."""
    if topic.startswith("$share/"):
        topic = topic.split("/", 2)[2]
    for root in roots:
        if topic.startswith(root + "/"):
            return "{root}/" + topic.removeprefix(root + "/")
    prefix = f"umh/v1/{enterprise}/"
    if topic.startswith(prefix):
        return "umh/v1/{enterprise}/" + topic.removeprefix(prefix)
    return None


_SUBSCRIBED = re.compile(r"^\d+: (\S+) [012] (\S+)$")


def subscriptions(log_file: Path) -> dict[str, set[str]]:
    """Client id -> the topic filters it subscribed to, from mosquitto's log (``log_type
    subscribe``): what the code really asked the broker for."""
    found: dict[str, set[str]] = {}
    for line in log_file.read_text().splitlines():
        m = _SUBSCRIBED.match(line)
        if m:
            found.setdefault(m.group(1), set()).add(m.group(2))
    return found
