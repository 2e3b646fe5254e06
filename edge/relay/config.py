"""The relay's configuration: one TOML file (``config/relay.example.toml`` lists every key).

Read with the gateway's rules (``edge.config``): unknown keys are errors, types are strict,
every number is bounded, and every problem is reported at once with its field and value.
Secrets live in files named by the configuration (``password_file``, ``client_secret_file``),
never in it.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Annotated

from pydantic import Field, StringConstraints, field_validator, model_validator

from edge.config import Section, load_model
from edge.relay import d365, files, orders_d365, orders_files, orders_sap, sap

LEASE_CALLS = 3  # lease_s >= LEASE_CALLS x erp.timeout_s
TopicLevel = Annotated[str, StringConstraints(pattern=r"^[^/+#\x00-\x20\x7f]{1,64}$")]
RootFilter = Annotated[str, StringConstraints(pattern=r"^[^#\x00-\x20\x7f]{1,500}$")]


class RelaySection(Section):
    """``[relay]``: whom the relay serves and how it shares the work."""

    instance: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._:-]{1,64}$")] | None = None
    enterprise: TopicLevel
    # Work center roots to serve (MQTT filters); default every UNS work center of the enterprise.
    roots: list[RootFilter] | None = Field(None, min_length=1, max_length=100)
    share_group: TopicLevel = "erp-relay"
    concurrency: Annotated[int, Field(ge=1, le=256)] = 8
    lease_s: Annotated[float, Field(ge=1, le=3600)] = 120.0
    retry_min_s: Annotated[float, Field(ge=0.1, le=3600)] = 2.0
    retry_max_s: Annotated[float, Field(ge=1, le=86_400)] = 300.0
    gap_wait_s: Annotated[float, Field(ge=0, le=3600)] = 30.0
    poll_s: Annotated[float, Field(ge=0.05, le=60)] = 0.5
    max_inbound_bytes: Annotated[int, Field(ge=1024, le=16 * 1024 * 1024)] = 256 * 1024
    # Every kpi_interval_s (0: never) each work center's confirmation latency over the last
    # kpi_window_s goes out retained on <root>/_mes_v1/relay/kpi.
    kpi_interval_s: Annotated[float, Field(ge=0, le=86_400)] = 60.0
    kpi_window_s: Annotated[float, Field(ge=60, le=30 * 86_400)] = 3600.0
    log_level: Annotated[str, StringConstraints(pattern=r"^(debug|info|warning|error)$")] = "info"
    log_json: bool | None = None

    @field_validator("roots")
    @classmethod
    def _roots(cls, value: list[str] | None) -> list[str] | None:
        for root in value or []:
            if root.startswith(("/", "$")) or root.endswith("/"):
                raise ValueError(f"{root!r}: a root must not start or end with '/' or use '$'")
        return value

    @model_validator(mode="after")
    def _retry_order(self) -> RelaySection:
        if self.retry_max_s < self.retry_min_s:
            raise ValueError("retry_max_s must not be below retry_min_s")
        return self

    def name(self) -> str:
        return self.instance or f"{socket.gethostname()}-{os.getpid()}"

    def filters(self) -> list[str]:
        return self.roots or [f"umh/v1/{self.enterprise}/+/+/+/+"]


class RelayMqtt(Section):
    """``[mqtt]``: the central broker (MQTT 5, shared subscriptions)."""

    host: Annotated[str, StringConstraints(min_length=1, max_length=255)] = "localhost"
    port: Annotated[int, Field(ge=1, le=65535)] = 1883
    client_id: Annotated[str, StringConstraints(min_length=1, max_length=128)] | None = None
    username: Annotated[str, StringConstraints(max_length=200)] | None = None
    password_file: Annotated[Path, Field(strict=False)] | None = None
    tls_ca_file: Annotated[Path, Field(strict=False)] | None = None
    tls_cert_file: Annotated[Path, Field(strict=False)] | None = None
    tls_key_file: Annotated[Path, Field(strict=False)] | None = None
    keepalive_s: Annotated[int, Field(ge=5, le=3600)] = 30
    # 0: a relay that dies leaves no session holding messages for it; the gateways resend
    # what was not answered, and the shared subscription hands it to a relay that is there.
    session_expiry_s: Annotated[int, Field(ge=0, le=86_400)] = 0
    reconnect_min_s: Annotated[float, Field(gt=0, le=600)] = 1.0
    reconnect_max_s: Annotated[float, Field(gt=0, le=3600)] = 30.0
    max_inflight: Annotated[int, Field(ge=1, le=65535)] = 100


class LedgerSection(Section):
    """``[ledger]``: ``sqlite:///var/lib/edge-relay/ledger.db`` (one relay) or
    ``postgresql://user@host:5432/relay`` (several relays sharing the work)."""

    url: Annotated[str, StringConstraints(pattern=r"^(sqlite:///|postgres(ql)?://)\S+$")] = (
        "sqlite:////var/lib/edge-relay/ledger.db"
    )
    password_file: Annotated[Path, Field(strict=False)] | None = None
    pool_size: Annotated[int, Field(ge=1, le=64)] = 4


ErpSettings = Annotated[
    sap.Settings | d365.Settings | files.Settings, Field(discriminator="system")
]


OrderSourceSettings = Annotated[
    orders_sap.Settings | orders_d365.Settings | orders_files.Settings,
    Field(discriminator="system"),
]


class DispatchTarget(Section):
    """``[[dispatch.work_centers]]``: a work center as the ERP names it, and its gateway's root."""

    work_center: Annotated[str, StringConstraints(pattern=r"^[^/+#\s]{1,40}$")]
    root: Annotated[str, StringConstraints(pattern=r"^[^+#$\x00-\x20\x7f]{1,500}$")]

    @field_validator("root")
    @classmethod
    def _plain(cls, value: str) -> str:
        if value.startswith("/") or value.endswith("/"):
            raise ValueError(f"{value!r}: a root must not start or end with '/'")
        return value


class DispatchSection(Section):
    """``[dispatch]``: orders down. The relay reads the ERP's released orders every
    ``interval_s`` and sends each work center its dispatch list, holds, releases and cancels."""

    enabled: bool = False
    interval_s: Annotated[float, Field(ge=1, le=86_400)] = 60.0
    work_centers: list[DispatchTarget] = Field(default_factory=list, max_length=1000)
    source: OrderSourceSettings | None = None

    @model_validator(mode="after")
    def _complete(self) -> DispatchSection:
        if self.enabled and (self.source is None or not self.work_centers):
            raise ValueError("enabled = true needs [dispatch.source] and [[dispatch.work_centers]]")
        names = [t.work_center for t in self.work_centers]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"work centers listed twice: {', '.join(twice)}")
        return self


class RelayConfig(Section):
    relay: RelaySection
    mqtt: RelayMqtt = RelayMqtt()
    ledger: LedgerSection = LedgerSection()
    erp: ErpSettings
    dispatch: DispatchSection = DispatchSection()

    @model_validator(mode="after")
    def _lease_outlasts_a_call(self) -> RelayConfig:
        """A claim is renewed while its ERP call runs; should the renewal stall, the lease
        must still outlast one call (several requests, each up to ``timeout_s``), or another
        relay could look the posting up while it is in the air and post it again."""
        timeout = getattr(self.erp, "timeout_s", 0.0)
        if self.relay.lease_s < LEASE_CALLS * timeout:
            raise ValueError(
                f"relay.lease_s = {self.relay.lease_s:g} must be at least {LEASE_CALLS} x "
                f"erp.timeout_s ({LEASE_CALLS * timeout:g} s)"
            )
        return self


def load_relay_config(path: str | Path) -> RelayConfig:
    return load_model(RelayConfig, path)
