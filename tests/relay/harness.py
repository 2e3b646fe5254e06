"""A relay under test: the real relay on a private mosquitto, with the gateways' side played by
one MQTT client that publishes confirmations (the contract's messages) and collects verdicts."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.relay.app import build_erp, build_source, open_ledger
from edge.relay.config import RelayConfig
from edge.relay.erp import Posting
from edge.relay.service import Relay
from edge.sync.mqtt import MqttLink
from simulators.broker import Mosquitto
from tests.relay.builders import message

RESULTS = "umh/v1/+/+/+/+/+/_mes_v1/confirmation/result"
STATE = "umh/v1/acme/_mes_v1/relay/state"
KPIS = "umh/v1/+/+/+/+/+/_mes_v1/relay/kpi"


def relay_config(
    broker: Mosquitto,
    ledger_url: str,
    erp: dict[str, Any],
    **relay: Any,
) -> RelayConfig:
    return RelayConfig.model_validate(
        {
            "relay": {
                "enterprise": "acme",
                "instance": relay.pop("instance", f"relay-{uuid.uuid4().hex[:6]}"),
                "retry_min_s": 0.2,
                "retry_max_s": 1.0,
                "poll_s": 0.05,
                "lease_s": 6.0,
                **relay,
            },
            "mqtt": {"host": broker.host, "port": broker.port, "reconnect_min_s": 0.2},
            "ledger": {"url": ledger_url},
            "erp": erp,
        }
    )


@dataclass(frozen=True, slots=True)
class Verdict:
    topic: str
    status: str
    body: dict[str, Any]

    @property
    def idem_key(self) -> str:
        key: str = self.body["idem_key"]
        return key


class Gateways:
    """Publishes the gateways' messages and collects every verdict and relay state."""

    def __init__(self, broker: Mosquitto) -> None:
        self.link = MqttLink(
            host=broker.host,
            port=broker.port,
            client_id=f"gateways-{uuid.uuid4().hex[:8]}",
            session_expiry_s=0,
            reconnect_min_s=0.2,
        )
        self.verdicts: list[Verdict] = []
        self.states: list[dict[str, Any]] = []
        self.kpis: list[tuple[str, dict[str, Any]]] = []
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Gateways:
        self.link.subscribe([(RESULTS, 1), (STATE, 1), (KPIS, 1)])
        self.link.start()
        await asyncio.wait_for(self.link.connected.wait(), 10)
        self._task = asyncio.create_task(self._collect())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.link.stop()

    async def _collect(self) -> None:
        while True:
            m = await self.link.messages.get()
            self.link.ack(m)
            try:
                data = json.loads(m.payload)
            except (ValueError, RecursionError):
                continue  # what a hostile test put on a topic the collector also reads
            async with self._changed:
                if m.topic == STATE:
                    self.states.append(data)
                elif m.topic.endswith("/relay/kpi"):
                    self.kpis.append((m.topic, data))
                else:
                    body = data["body"]
                    self.verdicts.append(Verdict(m.topic, body["status"], body))
                self._changed.notify_all()

    async def send(self, p: Posting, *, historical: bool = False) -> None:
        suffix = "confirmation" if p.kind == "confirmation" else "confirmation/cancel"
        await self.send_raw(f"{p.root}/_mes_v1/{suffix}", message(p, historical=historical))

    async def send_raw(self, topic: str, payload: bytes) -> None:
        code = await asyncio.wait_for(self.link.publish(topic, payload, qos=1), 10)
        assert code < 0x80

    def of(self, idem_key: str) -> list[str]:
        return [v.status for v in self.verdicts if v.idem_key == idem_key]

    async def wait(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(predicate)

    async def final(self, idem_key: str, timeout: float = 10.0) -> Verdict:
        """The first verdict that is not ``retrying`` for this key."""

        def done() -> bool:
            return any(v.status != "retrying" for v in self.verdicts if v.idem_key == idem_key)

        await self.wait(done, timeout)
        return next(v for v in self.verdicts if v.idem_key == idem_key and v.status != "retrying")


@contextlib.asynccontextmanager
async def running_relay(cfg: RelayConfig) -> AsyncIterator[Relay]:
    """The relay of ``cfg`` in this process, serving until the block ends."""
    ledger = await open_ledger(cfg.ledger)
    relay = Relay(cfg, ledger, build_erp(cfg), orders=build_source(cfg))
    task = asyncio.create_task(relay.run())
    try:
        await asyncio.wait_for(relay.ready.wait(), 10)
        await asyncio.wait_for(relay.link.connected.wait(), 10)
        # and subscribed: a posting sent before the broker took the relay's subscription is
        # not delivered to it (a gateway sends again when the relay says it is online)
        await asyncio.wait_for(relay.link.subscribed.wait(), 10)
        yield relay
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await ledger.close()


async def until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def pg_url(dsn: str) -> str:
    """The ``postgresql://`` URL of a libpq conninfo string (what ``[ledger] url`` takes)."""
    from psycopg.conninfo import conninfo_to_dict

    d = conninfo_to_dict(dsn)
    return f"postgresql://{d['user']}@{d['host']}:{d['port']}/{d['dbname']}"
