"""A real mosquitto and a real gateway process-in-process, wired through MQTT."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from pydantic import BaseModel

from edge.app import open_engine, run_gateway
from edge.config import GatewayConfig, load_config
from edge.engine import Engine
from edge.sync.contract import BY_PATH, Envelope, InboundEnvelope
from simulators.broker import Mosquitto

ROOT = "umh/v1/acme/plant1/stamping/line4/PRESS07"

CONFIG = """
[gateway]
edge_id = "wc-press-07"
work_center = "PRESS07"
timezone = "Europe/Berlin"
log_level = "warning"

[store]
path = "{db}"

[engine]
tick_interval_s = 0.2

[mqtt]
enabled = true
host = "127.0.0.1"
port = {port}
enterprise = "acme"
site = "plant1"
area = "stamping"
line = "line4"
reconnect_min_s = 0.2
reconnect_max_s = 1
health_interval_s = 1
result_timeout_s = {result_timeout_s}
historical_after_s = 2

[[counting.sources]]
name = "press_good"
kind = "good"
signal = "pulse"

[confirmations]
every_good = 10

[[master_data.scrap_reasons]]
code = "S03"
text = "Burr"

[[master_data.stop_reasons]]
code = "M01"
text = "Material missing"
"""


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    with Mosquitto(tmp_path / "broker") as b:
        yield b


def gateway_config(
    tmp_path: Path, broker: Mosquitto, result_timeout_s: float = 600, extra: str = ""
) -> GatewayConfig:
    """The test gateway's config; ``extra``: more TOML sections after it."""
    path = tmp_path / "edge.toml"
    path.write_text(
        CONFIG.format(db=tmp_path / "edge.db", port=broker.port, result_timeout_s=result_timeout_s)
        + extra
    )
    return load_config(path, env={})


@dataclass
class Received:
    topic: str
    payload: bytes
    retain: bool

    def json(self) -> Any:
        return json.loads(self.payload)


@dataclass
class Collector:
    """A plain MQTT 5 client in its own thread, as central IT would run one."""

    host: str
    port: int
    topics: list[str]
    client_id: str = "collector"
    messages: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._connected = threading.Event()
        c = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=paho.MQTTv5,
        )
        c.on_message = self._on_message
        c.on_connect = self._on_connect
        self.client = c

    def _on_connect(self, client: paho.Client, *_: Any) -> None:
        client.subscribe([(t, 1) for t in self.topics])
        self._connected.set()

    def _on_message(self, _c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        with self._lock:
            self.messages.append(Received(msg.topic, bytes(msg.payload), bool(msg.retain)))

    def start(self) -> Collector:
        self.client.connect(self.host, self.port)
        self.client.loop_start()
        assert self._connected.wait(5)
        time.sleep(0.1)  # the SUBACK
        return self

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def publish(self, topic: str, body: dict[str, Any], *, retain: bool = False) -> None:
        self.client.publish(topic, json.dumps(body), qos=1, retain=retain).wait_for_publish(5)

    def on(self, suffix: str) -> list[Received]:
        with self._lock:
            return [m for m in self.messages if m.topic.endswith(suffix)]

    async def wait_for(self, suffix: str, count: int = 1, timeout: float = 10.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.on(suffix)
            if len(found) >= count:
                return found
            await asyncio.sleep(0.02)
        raise AssertionError(f"{count} messages on *{suffix} expected, got {len(self.on(suffix))}")


@pytest.fixture
def collector(broker: Mosquitto) -> Iterator[Collector]:
    c = Collector(broker.host, broker.port, [f"{ROOT}/#"]).start()
    yield c
    c.stop()


@dataclass
class RunningGateway:
    engine: Engine
    stop: asyncio.Event
    task: asyncio.Task[Engine]

    async def close(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, 15)


@contextlib.asynccontextmanager
async def gateway(cfg: GatewayConfig) -> AsyncIterator[RunningGateway]:
    engine = await open_engine(cfg)
    stop = asyncio.Event()
    task = asyncio.create_task(run_gateway(cfg, stop=stop, engine=engine))
    running = RunningGateway(engine, stop, task)
    try:
        yield running
    finally:
        if not task.done():
            await running.close()


def envelope(schema: str, body: dict[str, Any], msg_id: str) -> dict[str, Any]:
    return {"schema": schema, "msg_id": msg_id, "ts_ms": int(time.time() * 1000), "body": body}


DISPATCH = {
    "version": 1,
    "operations": [
        {
            "order_id": "4711",
            "operation": "0020",
            "material": "FG-4711",
            "quantity": 100,
            "planned_run_s_per_unit": 0.01,
            "sequence": 10,
        },
        {"order_id": "4712", "operation": "0010", "material": "FG-4712", "quantity": 50},
    ],
}


SCHEMAS = Path(__file__).resolve().parents[2] / "contract" / "schemas"


@functools.cache
def schema_validator(path: str) -> jsonschema.protocols.Validator:
    schema = json.loads((SCHEMAS / f"{path.replace('/', '.')}.json").read_text())
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema)  # type: ignore[no-any-return]


def validate(received: Any) -> BaseModel:
    """Every message on the broker matches its topic's committed JSON Schema and model."""
    path = received.topic.removeprefix(ROOT + "/")
    schema_validator(path).validate(json.loads(received.payload))
    topic = BY_PATH[path]
    if topic.direction == "down":
        inbound = InboundEnvelope.model_validate_json(received.payload)
        return topic.model.model_validate(inbound.body)
    model = Envelope[topic.model] if topic.enveloped else topic.model  # type: ignore[name-defined]
    return model.model_validate_json(received.payload)


def business_inputs(gw: Any) -> int:
    """Journaled inputs other than ticks (a tick that starts a new shift, or ends a stop, is
    journaled too, at any moment)."""
    row = gw.engine.store.conn.execute(
        "SELECT COUNT(*) FROM journal WHERE input_type != 'Tick'"
    ).fetchone()
    return int(row[0])
