"""``edge check``: every link in the config, one line per check, non-zero exit if one fails.

Run by maintenance staff after editing the config and before enabling the service: the config
itself, the database, the clock, the broker with the configured credentials, and every OPC UA
node (it exists and has a fitting type).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from edge.config import GatewayConfig, file_problems, mqtt_password
from edge.errors import SourceUnavailable

EARLIEST_PLAUSIBLE = datetime(2025, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str


def check_database(cfg: GatewayConfig) -> Check:
    path = cfg.store.path
    directory = path.parent
    if not directory.exists():
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            return Check("database", False, f"cannot create {directory}: {exc.strerror}")
    if not os.access(directory, os.W_OK):
        return Check("database", False, f"{directory} is not writable by this user")
    try:
        conn = sqlite3.connect(str(path), timeout=5)
        try:
            conn.execute("BEGIN IMMEDIATE")  # takes the write lock, then gives it back
            conn.execute("ROLLBACK")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return Check("database", False, f"{path}: {exc}")
    return Check("database", True, f"{path} writable (schema version {version})")


def check_clock(cfg: GatewayConfig) -> Check:
    now = datetime.now(UTC)
    if now < EARLIEST_PLAUSIBLE:
        return Check("clock", False, f"system time {now:%Y-%m-%d %H:%M} UTC is not plausible")
    detail = f"system time {now:%Y-%m-%d %H:%M:%S} UTC"
    path = cfg.store.path
    if path.exists():
        try:
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
            try:
                row = conn.execute("SELECT MAX(at_wall_ms) FROM journal").fetchone()
            finally:
                conn.close()
        except sqlite3.Error:
            row = None
        if row and row[0]:
            behind = row[0] / 1000 - now.timestamp()
            if behind > 300:
                return Check(
                    "clock",
                    False,
                    f"{detail} is {behind:.0f} s before the last journaled event: the clock "
                    "went back; fix the time (NTP) before starting",
                )
    return Check("clock", True, detail)


def check_broker(cfg: GatewayConfig, timeout_s: float = 5.0) -> Check:
    m = cfg.mqtt
    if not m.enabled:
        return Check("broker", True, "MQTT not enabled: the gateway runs local-only")
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    unusable = [f"{k} = {v!r}: {why}" for k, v, why in file_problems(cfg) if k.startswith("mqtt.")]
    if unusable:
        return Check("broker", False, "; ".join(unusable))
    result: dict[str, str] = {}
    # With a client certificate the broker (use_username_as_clientid) gives this connection the
    # gateway's own client id, the CN, whatever we ask for: it then resumes the gateway's
    # session instead of starting a clean one (which would drop the queued commands), never
    # acknowledges what the session delivers (the broker sends it to the gateway again), and
    # removes the session afterwards only if it made it. A running gateway is thrown off once
    # and reconnects by itself.
    own_session = m.tls_cert_file is not None

    def on_connect(_c: paho.Client, _u: object, flags: Any, reason: object, _p: object) -> None:
        result["reason"] = str(reason)
        result["session"] = str(bool(getattr(flags, "session_present", False)))

    client = paho.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=f"edge-check-{cfg.gateway.edge_id}",
        protocol=paho.MQTTv5,
        manual_ack=own_session,
    )
    client.on_connect = on_connect
    if m.username:
        client.username_pw_set(m.username, mqtt_password(cfg))
    if m.tls_ca_file or m.tls_cert_file:
        import ssl

        context = ssl.create_default_context(cafile=str(m.tls_ca_file) if m.tls_ca_file else None)
        if m.tls_cert_file:
            context.load_cert_chain(str(m.tls_cert_file), str(m.tls_key_file or m.tls_cert_file))
        client.tls_set_context(context)
    where = f"{m.host}:{m.port}"
    props = None
    if own_session:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = m.session_expiry_s
    try:
        client.connect(m.host, m.port, keepalive=10, clean_start=not own_session, properties=props)
    except (OSError, ValueError) as exc:
        return Check("broker", False, f"{where}: {exc}")
    deadline = time.monotonic() + timeout_s
    while "reason" not in result and time.monotonic() < deadline:
        client.loop(timeout=0.1)
    if own_session and result.get("session") == "False":
        end = Properties(PacketTypes.DISCONNECT)  # type: ignore[no-untyped-call]
        end.SessionExpiryInterval = 0
        client.disconnect(properties=end)
    else:
        client.disconnect()
    client.loop(timeout=0.1)  # sends the DISCONNECT
    reason = result.get("reason")
    if reason is None:
        return Check("broker", False, f"{where}: no answer within {timeout_s:.0f} s")
    if reason != "Success":
        return Check("broker", False, f"{where} refused the connection: {reason}")
    return Check("broker", True, f"{where} accepts this gateway's credentials")


def check_identity(cfg: GatewayConfig) -> Check | None:
    """With a client certificate the broker knows the gateway by the certificate's CN alone.

    mosquitto takes the CN as the user name (use_identity_as_username), which the ACL is keyed
    by (`edge mqtt-acl` prints it as the edge id), and as the client id
    (use_username_as_clientid): a configured client_id must be that CN.
    """
    m = cfg.mqtt
    if not m.enabled or m.tls_cert_file is None:
        return None
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    path = m.tls_cert_file
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as exc:
        return Check("mqtt identity", False, f"cannot read the certificate {path}: {exc}")
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    cn = str(names[0].value) if names else ""
    edge_id = cfg.gateway.edge_id
    if not cn:
        return Check("mqtt identity", False, f"{path} has no CN; issue it with CN = {edge_id!r}")
    if m.client_id is not None and m.client_id != cn:
        return Check(
            "mqtt identity",
            False,
            f"[mqtt] client_id {m.client_id!r} differs from the certificate's CN {cn!r}: the "
            f"broker uses the CN as the client id; set client_id = {cn!r} or leave it out",
        )
    if cn != edge_id:
        return Check(
            "mqtt identity",
            False,
            f"the certificate's CN {cn!r} is not the edge id {edge_id!r}: the broker's ACL "
            f"(edge mqtt-acl) knows this gateway as {edge_id!r}; issue a certificate with "
            f"CN = {edge_id!r}",
        )
    return Check("mqtt identity", True, f"certificate CN {cn!r} = edge id = broker client id")


async def check_opcua(cfg: GatewayConfig) -> list[Check]:
    """Connect as the source does and find every node; a failure is one line that names the
    cause and the fix (edge.sources.opcua_errors), never a traceback."""
    from edge.sources.opcua import OpcUaLink
    from edge.sources.opcua_errors import PhasedClient, explain

    checks: list[Check] = []
    for src in cfg.sources.opcua:
        link = OpcUaLink(src, engine=None)  # type: ignore[arg-type]  # resolving needs no engine
        client = PhasedClient(src.endpoint, timeout=src.timeout_s)
        name = f"opcua {src.name}"
        try:
            await link._secure(client)
            async with client:
                security = f"{src.security_policy}/{src.security_mode}"
                checks.append(Check(name, True, f"{src.endpoint} connected ({security})"))
                for m in link.mapped:
                    try:
                        await link._resolve_one(client, m)
                        checks.append(Check(f"{name} {m.role}", True, f"{m.ref} found"))
                    except SourceUnavailable as exc:
                        checks.append(Check(f"{name} {m.role}", False, str(exc)))
        except SourceUnavailable as exc:
            checks.append(Check(name, False, str(exc)))
        except Exception as exc:
            checks.append(Check(name, False, explain(exc, link.where, client.phase)))
    return checks


async def check_modbus(cfg: GatewayConfig) -> list[Check]:
    """Connect to each module and read every configured block once, as the source will."""
    from edge.sources.modbus import ModbusLink, ReadFailed, counter_bits

    checks: list[Check] = []
    bits = counter_bits(cfg)
    for src in cfg.sources.modbus:
        link = ModbusLink(src, engine=None, bits=bits)  # type: ignore[arg-type]  # reads only
        name = f"modbus {src.name}"
        client = link._new_client()
        try:
            await link._connect(client)
            checks.append(Check(name, True, f"{link.where} connected, unit {src.unit_id}"))
            for block in link.blocks:
                try:
                    await link._read(client, block)
                    checks.append(Check(f"{name} {block.key}", True, "read"))
                except (ReadFailed, SourceUnavailable) as exc:
                    checks.append(Check(f"{name} {block.key}", False, str(exc)))
        except SourceUnavailable as exc:
            checks.append(Check(name, False, str(exc)))
        except Exception as exc:
            checks.append(Check(name, False, f"{link.where}: {type(exc).__name__}: {exc}"))
        finally:
            client.close()
    return checks


def run_checks(cfg: GatewayConfig, out: Callable[[str], None] = print) -> int:
    checks = [Check("config", True, "read and valid"), check_database(cfg), check_clock(cfg)]
    if (identity := check_identity(cfg)) is not None:
        checks.append(identity)
    checks.append(check_broker(cfg))
    checks.extend(asyncio.run(check_opcua(cfg)))
    checks.extend(asyncio.run(check_modbus(cfg)))
    width = max(len(c.name) for c in checks)
    for c in checks:
        out(f"{'ok  ' if c.ok else 'FAIL'}  {c.name:<{width}}  {c.detail}")
    failed = sum(not c.ok for c in checks)
    out(f"{len(checks) - failed} of {len(checks)} checks passed")
    return 0 if failed == 0 else 1
