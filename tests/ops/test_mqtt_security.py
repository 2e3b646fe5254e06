"""The broker set up as config/mosquitto/ describes: TLS, a client certificate per gateway, ACL.

Certificates are made per test run with ``cryptography``: a plant CA, the broker's certificate
(SAN 127.0.0.1 and localhost), one per gateway (CN = edge id) and one for central IT; and a
second, foreign CA with a certificate that claims a gateway's name.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import json
import os
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from paho.mqtt.enums import CallbackAPIVersion

from edge.app import open_engine, run_gateway
from edge.check import check_broker, check_identity
from edge.ops import acl_block
from edge.sync.mqtt import MqttLink, TlsSettings, is_success
from simulators.broker import Mosquitto, free_port
from tests.ops.conftest import REPO, ROOT, edge, load, write_config

pytestmark = pytest.mark.timeout(60)

CONF = REPO / "config" / "mosquitto" / "mosquitto.conf"
ACL = REPO / "config" / "mosquitto" / "edge-gateway.acl"
OTHER_ROOT = "umh/v1/acme/plant1/stamping/line4/PRESS08"
NOT_AUTHORIZED = 135


# ---------------------------------------------------------------------------- certificates


@dataclass
class Pki:
    directory: Path

    def path(self, name: str) -> Path:
        return self.directory / name


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ACME plant 1"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _write(
    directory: Path, stem: str, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate
) -> None:
    (directory / f"{stem}.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    (directory / f"{stem}.key").chmod(0o600)
    (directory / f"{stem}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _ca(directory: Path, stem: str, cn: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write(directory, stem, key, cert)
    return key, cert


def _issue(
    directory: Path,
    stem: str,
    cn: str,
    ca: tuple[ec.EllipticCurvePrivateKey, x509.Certificate],
    *,
    server: bool = False,
) -> None:
    ca_key, ca_cert = ca
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    _write(directory, stem, key, builder.sign(ca_key, hashes.SHA256()))


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    plant = _ca(d, "plant-ca", "ACME plant 1 MQTT CA")
    _issue(d, "broker", "mqtt.plant1.example", plant, server=True)
    for cn in ("wc-press-07", "wc-press-08", "mes-central"):
        _issue(d, cn, cn, plant)
    rogue = _ca(d, "rogue-ca", "Somebody else's CA")
    _issue(d, "rogue-wc-press-07", "wc-press-07", rogue)
    return Pki(d)


# ---------------------------------------------------------------------------- the broker


class TlsMosquitto(Mosquitto):
    """mosquitto with config/mosquitto/mosquitto.conf and the ACL file, on free ports."""

    def __init__(self, workdir: Path, pki: Pki) -> None:
        super().__init__(workdir)
        self.pki = pki
        self.plain_port = free_port()

    def write_config(self) -> Path:
        self.data_dir.mkdir(exist_ok=True)
        text = CONF.read_text()
        for line, new in (
            ("listener 1883 127.0.0.1", f"listener {self.plain_port} 127.0.0.1"),
            ("listener 8883", f"listener {self.port} 127.0.0.1"),
            ("/etc/mosquitto/certs/", f"{self.pki.directory}/"),
            ("/etc/mosquitto/edge-gateway.acl", str(ACL)),
        ):
            assert line in text, line
            text = text.replace(line, new)
        text += (
            f"persistence_location {self.data_dir}/\n"
            f"log_dest file {self.log_file}\nlog_type all\n"
            + ("user root\n" if os.geteuid() == 0 else "")
        )
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(text)
        return conf


@pytest.fixture
def broker(tmp_path: Path, pki: Pki) -> Iterator[TlsMosquitto]:
    b = TlsMosquitto(tmp_path / "broker", pki)
    b.start()
    yield b
    b.stop()


def _tls(pki: Pki, stem: str | None, ca: str = "plant-ca") -> TlsSettings:
    return TlsSettings(
        str(pki.path(f"{ca}.crt")),
        str(pki.path(f"{stem}.crt")) if stem else None,
        str(pki.path(f"{stem}.key")) if stem else None,
    )


class Central:
    """Central IT's client (CN = mes-central), in paho's own thread."""

    def __init__(self, broker: TlsMosquitto, pki: Pki) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        c = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id="mes-central",
            protocol=paho.MQTTv5,
        )
        ctx = ssl.create_default_context(cafile=str(pki.path("plant-ca.crt")))
        ctx.load_cert_chain(str(pki.path("mes-central.crt")), str(pki.path("mes-central.key")))
        c.tls_set_context(ctx)
        c.on_connect = lambda client, *_: client.subscribe("umh/v1/acme/#", qos=1)
        c.on_subscribe = lambda *_: self._subscribed.set()
        c.on_message = self._on_message
        c.connect(broker.host, broker.port)
        c.loop_start()
        assert self._subscribed.wait(10), broker.log_tail()
        self.client = c

    def _on_message(self, _c: Any, _u: Any, msg: paho.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((msg.topic, bytes(msg.payload)))

    def on(self, topic: str) -> list[bytes]:
        with self._lock:
            return [p for t, p in self.messages if t == topic]

    async def wait_for(self, topic: str, timeout: float = 10) -> bytes:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if found := self.on(topic):
                return found[-1]
            await asyncio.sleep(0.05)
        raise AssertionError(f"nothing on {topic}; got {[t for t, _ in self.messages]}")

    def publish(self, topic: str, body: dict[str, Any]) -> None:
        self.client.publish(topic, json.dumps(body), qos=1).wait_for_publish(5)

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


# ---------------------------------------------------------------------------- tests


def test_the_example_acl_is_what_edge_mqtt_acl_prints() -> None:
    text = ACL.read_text()
    assert acl_block("wc-press-07", ROOT) in text
    assert acl_block("wc-press-08", OTHER_ROOT) in text


async def test_a_gateway_with_its_certificate_publishes_and_reads_its_commands(
    tmp_path: Path, broker: TlsMosquitto, pki: Pki
) -> None:
    central = Central(broker, pki)
    tls = (
        f'tls_ca_file = "{pki.path("plant-ca.crt")}"\n'
        f'tls_cert_file = "{pki.path("wc-press-07.crt")}"\n'
        f'tls_key_file = "{pki.path("wc-press-07.key")}"\n'
    )
    cfg = load(write_config(tmp_path, mqtt=True, port=broker.port, mqtt_extra=tls))
    engine = await open_engine(cfg)
    stop = asyncio.Event()
    task = asyncio.create_task(run_gateway(cfg, stop=stop, engine=engine))
    try:
        health = json.loads(await central.wait_for(f"{ROOT}/_mes_v1/health"))
        assert health.get("body", health)["online"] is True
        central.publish(
            f"{ROOT}/_mes_v1/order/dispatch",
            {
                "schema": "mes.dispatch/1",
                "msg_id": "d-1",
                "ts_ms": int(time.time() * 1000),
                "body": {
                    "version": 1,
                    "operations": [
                        {"order_id": "4711", "operation": "0020", "material": "FG", "quantity": 5}
                    ],
                },
            },
        )
        received = json.loads(await central.wait_for(f"{ROOT}/_mes_v1/order/received"))
        assert received["body"]["version"] == 1
        assert any(str(k) == "4711/0020" for k in engine.wc.operations)
        assert "wc-press-07" in broker.log_tail(200)
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
        central.stop()


async def _link(broker: TlsMosquitto, tls: TlsSettings, client_id: str) -> MqttLink:
    link = MqttLink(
        host=broker.host,
        port=broker.port,
        client_id=client_id,
        tls=tls,
        reconnect_min_s=0.2,
        reconnect_max_s=1,
    )
    link.start()
    return link


async def test_a_certificate_from_another_ca_or_none_is_refused(
    broker: TlsMosquitto, pki: Pki
) -> None:
    rogue = await _link(broker, _tls(pki, "rogue-wc-press-07"), "edge-wc-press-07")
    anonymous = await _link(broker, _tls(pki, None), "nobody")
    try:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(
                asyncio.gather(rogue.connected.wait(), anonymous.connected.wait()), 3
            )
        assert not rogue.connected.is_set()
        assert not anonymous.connected.is_set()
        assert rogue.stats.connects == anonymous.stats.connects == 0
    finally:
        await rogue.stop()
        await anonymous.stop()
    # The proof the refusal was the certificate: the same client id with the plant's cert gets in.
    good = await _link(broker, _tls(pki, "wc-press-07"), "edge-wc-press-07")
    try:
        await asyncio.wait_for(good.connected.wait(), 10)
    finally:
        await good.stop()


async def test_a_gateway_may_not_publish_under_another_root_nor_commands(
    broker: TlsMosquitto, pki: Pki
) -> None:
    link = await _link(broker, _tls(pki, "wc-press-07"), "edge-wc-press-07")
    try:
        await asyncio.wait_for(link.connected.wait(), 10)
        own = await asyncio.wait_for(link.publish(f"{ROOT}/_mes_v1/stop", b"{}"), 5)
        assert is_success(own), own
        foreign = await asyncio.wait_for(link.publish(f"{OTHER_ROOT}/_mes_v1/stop", b"{}"), 5)
        assert foreign == NOT_AUTHORIZED
        command = await asyncio.wait_for(link.publish(f"{ROOT}/_mes_v1/order/dispatch", b"{}"), 5)
        assert command == NOT_AUTHORIZED
        assert link.stats.refused == 2
    finally:
        await link.stop()


# ---------------------------------------------------------------------------- client ids


DISPATCH = f"{ROOT}/_mes_v1/order/dispatch"


class Intruder:
    """A client with some plant certificate that asks for another gateway's client id."""

    def __init__(
        self, broker: TlsMosquitto, pki: Pki, stem: str, client_id: str, *, clean_start: bool
    ) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.suback: list[int] = []
        self.puback: list[int] = []
        self._connack = threading.Event()
        self._subscribed = threading.Event()
        self._published = threading.Event()
        self.session_present: bool | None = None
        self.reason = ""
        c = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=paho.MQTTv5,
        )
        ctx = ssl.create_default_context(cafile=str(pki.path("plant-ca.crt")))
        ctx.load_cert_chain(str(pki.path(f"{stem}.crt")), str(pki.path(f"{stem}.key")))
        c.tls_set_context(ctx)
        c.on_connect = self._on_connect
        c.on_subscribe = self._on_subscribe
        c.on_publish = self._on_publish
        c.on_message = lambda _c, _u, msg: self.messages.append((msg.topic, bytes(msg.payload)))
        # No session expiry: the session it is given ends with it, so session_present on its
        # CONNACK can only be the session of the client id it asked for, if it got that.
        c.connect(broker.host, broker.port, clean_start=clean_start)
        c.loop_start()
        self.client = c
        assert self._connack.wait(10), broker.log_tail()

    def _on_connect(self, _c: Any, _u: Any, flags: Any, reason: Any, _p: Any) -> None:
        self.session_present = bool(flags.session_present)
        self.reason = str(reason)
        self._connack.set()

    def _on_subscribe(self, _c: Any, _u: Any, _mid: int, codes: list[Any], _p: Any) -> None:
        self.suback.extend(int(code.value) for code in codes)
        self._subscribed.set()

    def _on_publish(self, _c: Any, _u: Any, _mid: int, reason: Any, _p: Any) -> None:
        self.puback.append(int(reason.value))
        self._published.set()

    def subscribe(self, topic: str) -> int:
        self._subscribed.clear()
        self.client.subscribe(topic, qos=1)
        assert self._subscribed.wait(5)
        return self.suback[-1]

    def publish(self, topic: str) -> int:
        self._published.clear()
        self.client.publish(topic, b"{}", qos=1)
        assert self._published.wait(5)
        return self.puback[-1]

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _dispatch(msg_id: str) -> dict[str, Any]:
    return {"schema": "mes.dispatch/1", "msg_id": msg_id, "ts_ms": int(time.time() * 1000)}


async def _gateway(broker: TlsMosquitto, pki: Pki, seen: list[bool]) -> MqttLink:
    """Gateway A as the gateway connects: its certificate, client id = CN, persistent session."""

    async def on_connect(session_present: bool) -> None:
        seen.append(session_present)

    link = MqttLink(
        host=broker.host,
        port=broker.port,
        client_id="wc-press-07",
        tls=_tls(pki, "wc-press-07"),
        reconnect_min_s=0.2,
        reconnect_max_s=1,
    )
    link.subscribe([(DISPATCH, 1)])
    link.add_on_connect(on_connect)
    link.start()
    await asyncio.wait_for(link.connected.wait(), 10)
    return link


async def _next(link: MqttLink, timeout: float = 5) -> tuple[str, str]:
    message = await asyncio.wait_for(link.messages.get(), timeout)
    link.ack(message)
    return message.topic, json.loads(message.payload)["msg_id"]


async def _wait_log(broker: TlsMosquitto, text: str, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while text not in broker.log_tail(500):
        assert time.monotonic() < deadline, f"{text!r} not in the log:\n{broker.log_tail()}"
        await asyncio.sleep(0.05)


async def test_another_certificate_cannot_take_over_a_gateways_client_id(
    broker: TlsMosquitto, pki: Pki
) -> None:
    central = Central(broker, pki)
    seen: list[bool] = []
    a = await _gateway(broker, pki, seen)
    intruder: Intruder | None = None
    try:
        await _wait_log(broker, "Sending SUBACK to wc-press-07")

        # While A is online: wc-press-08's certificate asks for A's client id.
        intruder = Intruder(broker, pki, "wc-press-08", "wc-press-07", clean_start=False)
        assert intruder.reason == "Success"  # it gets in, but as itself
        assert intruder.session_present is False  # not A's session
        await _wait_log(broker, "as wc-press-08 (p5, c0")
        await asyncio.sleep(1.5)  # A's reconnect, had it been thrown out, comes within ~1 s
        assert a.connected.is_set()
        assert (a.stats.connects, a.stats.disconnects) == (1, 0), broker.log_tail()
        assert "already connected, closing old connection" not in broker.log_tail(500)
        # mosquitto's ACL file grants the SUBSCRIBE but checks read access on delivery.
        intruder.subscribe(DISPATCH)
        intruder.subscribe("umh/v1/acme/#")
        assert intruder.publish(f"{ROOT}/_mes_v1/order/received") == NOT_AUTHORIZED
        central.publish(DISPATCH, _dispatch("d-1"))
        assert await _next(a) == (DISPATCH, "d-1")
        await asyncio.sleep(0.3)
        assert intruder.messages == []
        intruder.stop()

        # While A is away: a dispatch queues in its session; the intruder tries again.
        await a.stop()
        central.publish(DISPATCH, _dispatch("d-2"))
        intruder = Intruder(broker, pki, "wc-press-08", "wc-press-07", clean_start=False)
        assert intruder.session_present is False
        await asyncio.sleep(0.5)
        assert intruder.messages == []
        intruder.stop()
        intruder = Intruder(broker, pki, "wc-press-08", "wc-press-07", clean_start=True)
        intruder.stop()
        intruder = None

        # A comes back: its session is still there and the queued dispatch arrives.
        a = await _gateway(broker, pki, seen)
        assert seen == [False, True]
        assert await _next(a) == (DISPATCH, "d-2")
    finally:
        if intruder is not None:
            intruder.stop()
        await a.stop()
        central.stop()


def _check_config(tmp_path: Path, broker: TlsMosquitto, pki: Pki, extra: str = "") -> Path:
    tls = (
        f'tls_ca_file = "{pki.path("plant-ca.crt")}"\n'
        f'tls_cert_file = "{pki.path("wc-press-07.crt")}"\n'
        f'tls_key_file = "{pki.path("wc-press-07.key")}"\n'
    )
    return write_config(tmp_path, mqtt=True, port=broker.port, mqtt_extra=tls + extra)


async def test_edge_check_with_the_gateways_certificate_leaves_its_session_alone(
    tmp_path: Path, broker: TlsMosquitto, pki: Pki
) -> None:
    """The broker gives `edge check` the gateway's own client id (the CN): it must neither
    start a clean session (that would drop the queued dispatches) nor take them."""
    cfg = load(_check_config(tmp_path, broker, pki))
    # Before the gateway ever connected: the session the check opened goes with it.
    result = await asyncio.to_thread(check_broker, cfg)
    assert result.ok, result
    central = Central(broker, pki)
    seen: list[bool] = []
    a = await _gateway(broker, pki, seen)
    try:
        await _wait_log(broker, "Sending SUBACK to wc-press-07")
        await a.stop()
        central.publish(DISPATCH, _dispatch("d-3"))
        result = await asyncio.to_thread(check_broker, cfg)
        assert result.ok, result
        a = await _gateway(broker, pki, seen)
        assert seen == [False, True]
        assert await _next(a) == (DISPATCH, "d-3")
        # The check was sent d-3 first and never acknowledged it: the broker sent it again.
        await _wait_log(broker, "Sending PUBLISH to wc-press-07 (d1, q1")
        await _wait_log(broker, "Received PUBACK from wc-press-07")  # A's, before the next
        # And beside the running gateway: it is thrown off once, comes back to its session.
        result = await asyncio.to_thread(check_broker, cfg)
        assert result.ok, result
        deadline = time.monotonic() + 10
        while a.stats.connects < 2 or not a.connected.is_set():
            assert time.monotonic() < deadline, broker.log_tail()
            await asyncio.sleep(0.05)
        assert a.stats.disconnects == 1
        assert seen == [False, True, True]
        central.publish(DISPATCH, _dispatch("d-4"))
        assert await _next(a) == (DISPATCH, "d-4")
    finally:
        await a.stop()
        central.stop()


def test_edge_check_says_when_the_client_id_or_the_edge_id_is_not_the_cn(
    tmp_path: Path, broker: TlsMosquitto, pki: Pki
) -> None:
    ok = check_identity(load(_check_config(tmp_path, broker, pki)))
    assert ok is not None
    assert ok.ok, ok
    same = check_identity(load(_check_config(tmp_path, broker, pki, 'client_id = "wc-press-07"')))
    assert same is not None
    assert same.ok, same

    other_cn = (
        _check_config(tmp_path, broker, pki)
        .read_text()
        .replace("wc-press-07.crt", "wc-press-08.crt")
        .replace("wc-press-07.key", "wc-press-08.key")
    )
    (tmp_path / "edge.toml").write_text(other_cn)
    wrong = check_identity(load(tmp_path / "edge.toml"))
    assert wrong is not None
    assert not wrong.ok, wrong
    assert "CN 'wc-press-08' is not the edge id 'wc-press-07'" in wrong.detail

    # The real command, against the real broker: the mismatch is one FAIL line, exit 1.
    path = _check_config(tmp_path, broker, pki, 'client_id = "edge-wc-press-07"')
    run = edge("check", "-c", str(path))
    assert run.returncode == 1, run.stdout + run.stderr
    line = next(x for x in run.stdout.splitlines() if "mqtt identity" in x)
    assert line.startswith("FAIL"), run.stdout
    assert "client_id 'edge-wc-press-07' differs from the certificate's CN 'wc-press-07'" in line, (
        line
    )
    assert "set client_id = 'wc-press-07' or leave it out" in line
    broker_line = next(x for x in run.stdout.splitlines() if x.split()[1:2] == ["broker"])
    assert broker_line.startswith("ok"), run.stdout
