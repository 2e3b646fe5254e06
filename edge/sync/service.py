"""The sync component: one MQTT connection carrying the uplink, the downlink and presence."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from edge.config import GatewayConfig, mqtt_password
from edge.metrics import MqttFigures
from edge.ports import SyncFace
from edge.sync.downlink import Downlink
from edge.sync.mqtt import MqttLink, TlsSettings
from edge.sync.presence import Presence, last_will
from edge.sync.uplink import Uplink

log = structlog.get_logger("edge.sync")


@dataclass(slots=True)
class Sync:
    link: MqttLink
    uplink: Uplink
    downlink: Downlink
    presence: Presence

    async def run(self) -> None:
        self.link.start()
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self.uplink.run(), name="uplink")
                tg.create_task(self.downlink.run(), name="downlink")
                tg.create_task(self.presence.run(), name="presence")
        finally:
            await asyncio.shield(self._close())

    async def _close(self) -> None:
        await self.presence.goodbye()
        await self.link.stop()

    def mqtt_figures(self) -> MqttFigures:
        """The connection's and the uplink's figures, for ``/metrics``."""
        up = self.uplink.stats
        return MqttFigures(
            connected=self.link.connected.is_set(),
            relay_online=self.uplink.relay_online,
            connects=self.link.stats.connects,
            sent=up.sent,
            acked=up.acked,
            refused=up.refused,
            requeued=up.requeued,
            withheld=up.withheld,
            publish_latency=up.latency,
        )


def relay_state_topic(root: str) -> str | None:
    """``umh/v1/<enterprise>/_mes_v1/relay/state`` for a UNS root; None for another root."""
    parts = root.split("/")
    if len(parts) >= 3 and parts[0] == "umh" and parts[1] == "v1":
        return f"umh/v1/{parts[2]}/_mes_v1/relay/state"
    return None


def build_sync(
    cfg: GatewayConfig, engine: SyncFace, links: Callable[[], dict[str, str]] | None = None
) -> Sync:
    m = cfg.mqtt
    edge_id = cfg.gateway.edge_id
    root = m.root_for(cfg.gateway.work_center)
    tls = None
    if m.tls_ca_file or m.tls_cert_file:
        tls = TlsSettings(
            str(m.tls_ca_file) if m.tls_ca_file else None,
            str(m.tls_cert_file) if m.tls_cert_file else None,
            str(m.tls_key_file) if m.tls_key_file else None,
        )
    link = MqttLink(
        host=m.host,
        port=m.port,
        client_id=m.client_id or f"edge-{edge_id}",
        keepalive_s=m.keepalive_s,
        session_expiry_s=m.session_expiry_s,
        username=m.username,
        password=mqtt_password(cfg),
        will=last_will(root, edge_id),
        tls=tls,
        reconnect_min_s=m.reconnect_min_s,
        reconnect_max_s=m.reconnect_max_s,
        max_inflight=max(m.max_inflight * 2, 20),
    )
    uplink = Uplink(
        engine,
        link,
        root=root,
        edge_id=edge_id,
        window=m.max_inflight,
        result_timeout_s=m.result_timeout_s,
        historical_after_s=m.historical_after_s,
    )
    presence: Presence | None = None

    async def resync(from_seq: int | None) -> None:
        if presence is not None:
            presence.publish_snapshot()
            await presence.publish_health()
        if from_seq is not None:
            await uplink.replay(from_seq)

    downlink = Downlink(
        engine,
        link,
        root=root,
        max_bytes=m.max_inbound_bytes,
        relay_state_topic=relay_state_topic(root),
        on_relay_state=uplink.set_relay_online,
        on_resync=resync,
    )
    link.subscribe(downlink.subscriptions)
    presence = Presence(
        engine,
        link,
        root=root,
        edge_id=edge_id,
        interval_s=m.health_interval_s,
        links=links,
        last_puback_ms=lambda: uplink.stats.last_puback_ms,
        relay_online=lambda: uplink.relay_online,
    )
    log.info("mqtt sync configured", broker=f"{m.host}:{m.port}", root=root)
    return Sync(link, uplink, downlink, presence)
