"""An OPC UA machine (a press / moulding machine) for the demo and the tests.

Run it::

    python -m simulators.opcua_machine --port 4840 [--host 127.0.0.1] [--cycle-s 1.0] \\
        [--jitter 0.1] [--scrap-rate 0.02] [--bits 32] [--start-value 0] \\
        [--security none|sign|encrypt|all] [--cert-dir DIR] [--trust-dir DIR] \\
        [--user NAME --password-file FILE] [--machine Press07] [--scenario] [--seed N] \\
        [--control-port N]

or use it from a test::

    async with MachineSimulator(port=0, bits=16, cycle_s=0.05) as machine:
        await machine.run()
        await machine.set_counter(good=65530)       # force a 16-bit wrap soon
        await machine.stop(alarm="E-217")           # unplanned stop, alarm code set
        await machine.restart()                     # PLC power cycle: counters 0, new StartTime
        print(machine.endpoint, machine.node_ids["good"], machine.values)

Address space (Machinery-style, OPC 40001-1; names after PackML OPC 30050 where noted)
---------------------------------------------------------------------------------------
Namespace URI ``urn:edge-gateway:simulator:machine`` (index 2: index 1 is the server's application
URI ``urn:edge-gateway:simulator:<machine>``). Node ids are STRING ids equal to the browse path from
the ``Machines`` folder, with ``<M>`` the machine name (default ``Press07``)::

    ns=2;s=Machines                                     Folder under Objects (Machinery entry point)
    ns=2;s=<M>                                          Object, the machine
    ns=2;s=<M>.Identification                           Object
    ns=2;s=<M>.Identification.Manufacturer              String  "Edge Gateway Simulators"
    ns=2;s=<M>.Identification.Model                     String  "SIM-PRESS-250"
    ns=2;s=<M>.Identification.SerialNumber              String  "SIM-<M>-0001"
    ns=2;s=<M>.MachineryItemState                       Object
    ns=2;s=<M>.MachineryItemState.CurrentState          String  NotAvailable | OutOfService |
                                                                NotExecuting | Executing
    ns=2;s=<M>.MachineryItemState.StateNumber           UInt32  0 | 1 | 3 | 2 (same order)
    ns=2;s=<M>.MachineryOperationMode                   Object
    ns=2;s=<M>.MachineryOperationMode.CurrentState      String  None|Maintenance|Setup|Processing
    ns=2;s=<M>.MachineryOperationMode.StateNumber       UInt32  0 | 1 | 2 | 3
    ns=2;s=<M>.Counters                                 Folder
    ns=2;s=<M>.Counters.GoodCount                       UInt32 (UInt16 with bits=16)
    ns=2;s=<M>.Counters.ScrapCount                      UInt32 (UInt16 with bits=16)
    ns=2;s=<M>.Counters.TotalCount                      UInt32 (UInt16 with bits=16), good + scrap
    ns=2;s=<M>.Alarm                                    Object
    ns=2;s=<M>.Alarm.ActiveAlarmCode                    String  "" when no alarm, e.g. "E-217"
    ns=2;s=<M>.PackML                                   Object
    ns=2;s=<M>.PackML.CurrentState                      String  PackML state name (Execute, ...)
    ns=2;s=<M>.PackML.StateCurrent                      Int32   PackML state number (PACKML_STATES)
    ns=2;s=<M>.Job                                      Object
    ns=2;s=<M>.Job.CurrentProgram                       String  e.g. "PRG-100"
    ns=2;s=<M>.Job.CurrentOrder                         String  e.g. "4711"
    i=2256  Server.ServerStatus            (standard; State Running)
    i=2257  Server.ServerStatus.StartTime  (standard; a new value after every restart())

From another process (``--control-port``, 0 = a free one, printed as ``control <port>``): one
JSON object per line over TCP, one answer line each: ``{"cmd": "run"}`` (also ``setup``,
``idle``, ``stop`` with an optional ``"alarm"``, ``restart`` with ``"keep_counters"``) answers
``{"ok": true}``; ``{"cmd": "values"}`` answers :meth:`MachineSimulator.report`: what the server
shows, the parts made since start (:attr:`MachineSimulator.made`, never wrapped) and every state
change with its time (:attr:`MachineSimulator.history`). Unknown commands answer
``{"ok": false, "error": ...}``.

All machine variables are read-only for clients (AccessLevel CurrentRead) and carry a
SourceTimestamp of the moment the machine changed them.

Machine states (API method -> MachineryItemState / OperationMode / PackML / alarm / parts)::

    run()              Executing    / Processing  / Execute(6)   / ""     / a part per cycle_s
    setup()            Executing    / Setup       / Execute(6)   / ""     / slower (setup_slowdown)
    idle()             NotExecuting / Processing  / Idle(4)      / ""     / none
    stop()             NotExecuting / Processing  / Stopped(2)   / ""     / none   (planned stop)
    stop(alarm="E-1")  OutOfService / Processing  / Aborted(9)   / "E-1"  / none   (unplanned stop)
    hold(alarm=None)   NotExecuting / Processing  / Held(11)     / alarm  / none
    suspend()          NotExecuting / Processing  / Suspended(5) / ""     / none   (starved/blocked)
    maintenance()      OutOfService / Maintenance / Stopped(2)   / ""     / none
    unavailable()      NotAvailable / None        / Stopped(2)   / ""     / none

A new simulator starts ``idle``. Each cycle is ``cycle_s * (1 ± jitter)`` (uniform); a part is scrap
with probability ``scrap_rate``. Counters wrap modulo ``2**bits``; TotalCount = (good + scrap) mod
``2**bits`` (set_counter() can move good and scrap; the total follows).

Security
--------
``security``: ``none`` (SecurityPolicy None only), ``sign`` (Basic256Sha256, Aes128_Sha256_RsaOaep,
Aes256_Sha256_RsaPss with MessageSecurityMode Sign), ``encrypt`` (the same three policies with
SignAndEncrypt), ``all`` (None + all six). For anything but ``none`` the server certificate and key
are created on first start in ``cert_dir`` as ``server_cert.der`` (DER, self-signed, SAN URI = the
application URI, SAN DNS = localhost + hostname, SAN IP = 127.0.0.1 + host) and ``server_key.pem``
(PKCS#8, unencrypted); they are reused later unless the SAN URI no longer matches. Client
certificates are accepted without checks by default (no trust list); with ``trust_dir`` they must
be found in that directory (DER or PEM files), checked with asyncua's CertificateValidator
(TRUSTED_VALIDATION). With ``users`` ({name: password}) only UserName identity tokens are offered
and a wrong password gives BadUserAccessDenied; without ``users`` only Anonymous is offered.
:func:`ensure_certificate` also makes client certificates for tests.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import ipaddress
import json
import logging
import random
import signal
import socket
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from asyncua import ua
from asyncua.crypto.cert_gen import (
    dump_private_key_as_pem,
    generate_private_key,
    generate_self_signed_app_certificate,
)
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.crypto.truststore import TrustStore
from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions
from asyncua.server.server import Server
from asyncua.server.user_managers import UserManager
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

log = logging.getLogger("simulators.opcua_machine")

NAMESPACE_URI = "urn:edge-gateway:simulator:machine"
SERVER_CERT_FILE = "server_cert.der"
SERVER_KEY_FILE = "server_key.pem"

ITEM_STATES: dict[str, int] = {
    "NotAvailable": 0,
    "OutOfService": 1,
    "Executing": 2,
    "NotExecuting": 3,
}
OPERATION_MODES: dict[str, int] = {"None": 0, "Maintenance": 1, "Setup": 2, "Processing": 3}
PACKML_STATES: dict[str, int] = {
    "Undefined": 0,
    "Clearing": 1,
    "Stopped": 2,
    "Starting": 3,
    "Idle": 4,
    "Suspended": 5,
    "Execute": 6,
    "Stopping": 7,
    "Aborting": 8,
    "Aborted": 9,
    "Holding": 10,
    "Held": 11,
    "Unholding": 12,
    "Suspending": 13,
    "Unsuspending": 14,
    "Resetting": 15,
    "Completing": 16,
    "Complete": 17,
}

Security = Literal["none", "sign", "encrypt", "all"]
_P = ua.SecurityPolicyType
SECURITY_POLICIES: dict[str, list[Any]] = {
    "none": [_P.NoSecurity],
    "sign": [_P.Basic256Sha256_Sign, _P.Aes128Sha256RsaOaep_Sign, _P.Aes256Sha256RsaPss_Sign],
    "encrypt": [
        _P.Basic256Sha256_SignAndEncrypt,
        _P.Aes128Sha256RsaOaep_SignAndEncrypt,
        _P.Aes256Sha256RsaPss_SignAndEncrypt,
    ],
}
SECURITY_POLICIES["all"] = (
    SECURITY_POLICIES["none"] + SECURITY_POLICIES["sign"] + SECURITY_POLICIES["encrypt"]
)

# (role, browse path below the machine, data type); counters get their type from `bits`.
_VARIABLES: tuple[tuple[str, str, str], ...] = (
    ("manufacturer", "Identification.Manufacturer", "String"),
    ("model", "Identification.Model", "String"),
    ("serial", "Identification.SerialNumber", "String"),
    ("state", "MachineryItemState.CurrentState", "String"),
    ("state_number", "MachineryItemState.StateNumber", "UInt32"),
    ("mode", "MachineryOperationMode.CurrentState", "String"),
    ("mode_number", "MachineryOperationMode.StateNumber", "UInt32"),
    ("good", "Counters.GoodCount", "counter"),
    ("scrap", "Counters.ScrapCount", "counter"),
    ("total", "Counters.TotalCount", "counter"),
    ("alarm", "Alarm.ActiveAlarmCode", "String"),
    ("packml_state", "PackML.CurrentState", "String"),
    ("packml_state_number", "PackML.StateCurrent", "Int32"),
    ("program", "Job.CurrentProgram", "String"),
    ("order", "Job.CurrentOrder", "String"),
)
_FOLDERS = ("Counters",)
_OBJECTS = (
    "Identification",
    "MachineryItemState",
    "MachineryOperationMode",
    "Alarm",
    "PackML",
    "Job",
)

START_TIME_NODE_ID = "i=2257"  # Server_ServerStatus_StartTime


def _nid(identifier: str, ns: int) -> ua.NodeId:
    return ua.NodeId(ua.String(identifier), ua.Int16(ns))


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (bind to 0, read it back, close)."""
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


# --------------------------------------------------------------------------- certificates


def _san_uris(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return list(san.value.get_values_for_type(x509.UniformResourceIdentifier))


def ensure_certificate(
    cert_dir: str | Path,
    application_uri: str,
    common_name: str,
    *,
    client: bool = False,
    cert_file: str | None = None,
    key_file: str | None = None,
    hosts: tuple[str, ...] = ("127.0.0.1",),
    days: int = 365,
) -> tuple[Path, Path]:
    """Create (or reuse) a self-signed OPC UA application certificate and its key.

    Returns ``(cert_path, key_path)``: DER certificate and PEM (PKCS#8, unencrypted) key. Default
    names: ``server_cert.der``/``server_key.pem`` or ``client_cert.der``/``client_key.pem``. An
    existing pair is reused when the certificate's SAN URI equals ``application_uri``.
    """
    directory = Path(cert_dir)
    directory.mkdir(parents=True, exist_ok=True)
    prefix = "client" if client else "server"
    cert_path = directory / (cert_file or f"{prefix}_cert.der")
    key_path = directory / (key_file or f"{prefix}_key.pem")
    if cert_path.exists() and key_path.exists():
        try:
            existing = x509.load_der_x509_certificate(cert_path.read_bytes())
        except ValueError:
            existing = None
        if existing is not None and application_uri in _san_uris(existing):
            return cert_path, key_path
    key = generate_private_key()
    names: list[x509.GeneralName] = [
        x509.UniformResourceIdentifier(application_uri),
        x509.DNSName("localhost"),
    ]
    hostname = socket.gethostname()
    if hostname and hostname != "localhost":
        names.append(x509.DNSName(hostname))
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
    cert = generate_self_signed_app_certificate(
        key, common_name, {"organizationName": "edge-gateway"}, names, [usage], days=days
    )
    key_path.write_bytes(dump_private_key_as_pem(key))
    key_path.chmod(0o600)
    cert_path.write_bytes(cert.public_bytes(Encoding.DER))
    return cert_path, key_path


class _PasswordUserManager(UserManager):
    """Username/password check (constant-time compare); anything else is refused."""

    def __init__(self, users: Mapping[str, str]) -> None:
        self._users = dict(users)

    def get_user(
        self,
        iserver: Any,
        username: str | None = None,
        password: str | None = None,
        certificate: Any = None,
    ) -> User | None:
        if username is None or password is None or username not in self._users:
            return None
        if not hmac.compare_digest(self._users[username].encode(), password.encode()):
            return None
        return User(role=UserRole.User, name=username)


# --------------------------------------------------------------------------- machine


@dataclass
class _MachineState:
    state: str = "NotExecuting"
    mode: str = "Processing"
    packml: str = "Idle"
    alarm: str = ""
    good: int = 0
    scrap: int = 0
    program: str = "PRG-100"
    order: str = "4711"


class MachineSimulator:
    """One simulated machine served by an asyncua ``Server``; use ``async with``.

    ``port=0`` picks a free port once; the port stays the same over :meth:`restart`.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        machine: str = "Press07",
        bits: int = 32,
        cycle_s: float = 1.0,
        jitter: float = 0.1,
        scrap_rate: float = 0.02,
        start_value: int = 0,
        setup_slowdown: float = 3.0,
        security: Security = "none",
        cert_dir: str | Path | None = None,
        trust_dir: str | Path | None = None,
        users: Mapping[str, str] | None = None,
        seed: int | None = None,
        namespace_uri: str = NAMESPACE_URI,
    ) -> None:
        if bits not in (16, 32):
            raise ValueError("bits must be 16 or 32")
        if security not in SECURITY_POLICIES:
            raise ValueError(f"security must be one of {sorted(SECURITY_POLICIES)}")
        if cycle_s <= 0:
            raise ValueError("cycle_s must be > 0")
        if not 0 <= jitter < 1:
            raise ValueError("jitter must be in [0, 1)")
        self.host = host
        self.port = port or free_port(host)
        self.machine = machine
        self.bits = bits
        self.modulo = 2**bits
        self.cycle_s = cycle_s
        self.jitter = jitter
        self.scrap_rate = scrap_rate
        self.setup_slowdown = setup_slowdown
        self.security: Security = security
        self._tmp_cert_dir: tempfile.TemporaryDirectory[str] | None = None
        if cert_dir is None and security != "none":
            self._tmp_cert_dir = tempfile.TemporaryDirectory(prefix="opcua-sim-certs-")
            cert_dir = self._tmp_cert_dir.name
        self.cert_dir = Path(cert_dir) if cert_dir is not None else None
        self.trust_dir = Path(trust_dir) if trust_dir is not None else None
        self.users = dict(users) if users else None
        self.namespace_uri = namespace_uri
        self.application_uri = f"urn:edge-gateway:simulator:{machine}"
        self.rng = random.Random(seed)
        self._st = _MachineState(good=start_value % self.modulo)
        self._server: Server | None = None
        self._ns = 2
        self._nodes: dict[str, Any] = {}
        self._loop_task: asyncio.Task[None] | None = None
        self._scenario_task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._changed = asyncio.Condition()
        self.start_time: datetime | None = None
        self.restarts = 0
        # Parts made since this simulator was made (never wrapped, never reset by restart()),
        # and every state change: (wall-clock ms, MachineryItemState, alarm code).
        self.made: dict[str, int] = {"good": 0, "scrap": 0}
        self.history: list[tuple[int, str, str]] = []
        self.cert_path: Path | None = None
        self.key_path: Path | None = None

    # ------------------------------------------------------------------ properties

    @property
    def endpoint(self) -> str:
        return f"opc.tcp://{self.host}:{self.port}"

    def node_id(self, path: str) -> str:
        """String node id for a browse path below the machine, e.g. ``Counters.GoodCount``."""
        return (
            f"ns={self._ns};s={self.machine}.{path}" if path else f"ns={self._ns};s={self.machine}"
        )

    @property
    def node_ids(self) -> dict[str, str]:
        """role -> node id string (module docstring), plus ``start_time`` and ``machine``."""
        ids = {role: self.node_id(path) for role, path, _ in _VARIABLES}
        ids["machine"] = self.node_id("")
        ids["machines"] = f"ns={self._ns};s=Machines"
        ids["start_time"] = START_TIME_NODE_ID
        return ids

    @property
    def values(self) -> dict[str, Any]:
        """Snapshot of what the server shows now (same roles as :attr:`node_ids`)."""
        st = self._st
        return {
            "good": st.good,
            "scrap": st.scrap,
            "total": (st.good + st.scrap) % self.modulo,
            "state": st.state,
            "state_number": ITEM_STATES[st.state],
            "mode": st.mode,
            "mode_number": OPERATION_MODES[st.mode],
            "packml_state": st.packml,
            "packml_state_number": PACKML_STATES[st.packml],
            "alarm": st.alarm,
            "program": st.program,
            "order": st.order,
            "start_time": self.start_time,
        }

    @property
    def running(self) -> bool:
        return self._server is not None

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> MachineSimulator:
        await self.start_server()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def start_server(self) -> None:
        """Build the address space, listen, and start the production loop."""
        if self._server is not None:
            return
        await self._start_opcua()
        if self._loop_task is None:
            self._loop_task = asyncio.create_task(self._production_loop(), name="opcua-sim-loop")

    async def aclose(self) -> None:
        """Stop the scenario, the production loop and the server (idempotent, cancel-safe)."""
        for task in (self._scenario_task, self._loop_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._scenario_task = None
        self._loop_task = None
        try:
            await self._stop_opcua()
        finally:
            if self._tmp_cert_dir is not None:
                self._tmp_cert_dir.cleanup()
                self._tmp_cert_dir = None

    async def _start_opcua(self) -> None:
        server = Server(user_manager=_PasswordUserManager(self.users) if self.users else None)
        await server.init()
        server.set_endpoint(f"opc.tcp://{self.host}:{self.port}")
        server.set_server_name(f"Edge gateway machine simulator {self.machine}")
        server.product_uri = "urn:edge-gateway:simulator"
        server.manufacturer_name = "edge-gateway"
        await server.set_application_uri(self.application_uri)
        server.set_security_policy(SECURITY_POLICIES[self.security])
        if self.users:
            server.set_identity_tokens([ua.UserNameIdentityToken])
        else:
            server.set_identity_tokens([ua.AnonymousIdentityToken])
        if self.security != "none" and self.cert_dir is not None:
            hosts = tuple(dict.fromkeys(("127.0.0.1", self.host)))
            self.cert_path, self.key_path = ensure_certificate(
                self.cert_dir, self.application_uri, f"{self.machine} simulator", hosts=hosts
            )
            await server.load_certificate(str(self.cert_path))
            await server.load_private_key(str(self.key_path))
        if self.trust_dir is not None:
            store = TrustStore([self.trust_dir], [])
            await store.load()
            validator = CertificateValidator(
                CertificateValidatorOptions.TRUSTED_VALIDATION
                | CertificateValidatorOptions.PEER_CLIENT,
                store,
            )
            server.set_certificate_validator(validator.validate)
        self._ns = await server.register_namespace(self.namespace_uri)
        await self._build_address_space(server)
        try:
            await server.start()
        except BaseException:  # cancelled or port taken: leave nothing listening
            with contextlib.suppress(Exception):
                await server.stop()
            raise
        self._server = server
        self.start_time = await server.get_node(START_TIME_NODE_ID).read_value()
        log.info("OPC UA machine %s listening on %s", self.machine, self.endpoint)

    async def _stop_opcua(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        # The server's clock task sleeps 1 s between writes and stop() waits for it: cancel it.
        clock = getattr(server.iserver, "time_task", None)
        if clock is not None:
            clock.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await clock
            server.iserver.time_task = None
        await server.stop()

    async def _build_address_space(self, server: Server) -> None:
        ns = self._ns
        nodes: dict[str, Any] = {}
        machines = await server.nodes.objects.add_folder(
            _nid("Machines", ns), ua.QualifiedName("Machines", ns)
        )
        machine = await machines.add_object(
            _nid(self.machine, ns), ua.QualifiedName(self.machine, ns)
        )
        children: dict[str, Any] = {}
        for name in _FOLDERS:
            children[name] = await machine.add_folder(
                _nid(f"{self.machine}.{name}", ns), ua.QualifiedName(name, ns)
            )
        for name in _OBJECTS:
            children[name] = await machine.add_object(
                _nid(f"{self.machine}.{name}", ns), ua.QualifiedName(name, ns)
            )
        initial = self._initial_values()
        for role, path, kind in _VARIABLES:
            parent_name, leaf = path.split(".")
            variant = self._variant(kind, initial[role])
            nodes[role] = await children[parent_name].add_variable(
                _nid(f"{self.machine}.{path}", ns),
                ua.QualifiedName(leaf, ns),
                variant.Value,
                varianttype=variant.VariantType,
            )
        self._nodes = nodes

    def _initial_values(self) -> dict[str, Any]:
        values = self.values
        values["manufacturer"] = "Edge Gateway Simulators"
        values["model"] = "SIM-PRESS-250"
        values["serial"] = f"SIM-{self.machine}-0001"
        return values

    def _variant(self, kind: str, value: Any) -> Any:
        if kind == "counter":
            vt = ua.VariantType.UInt16 if self.bits == 16 else ua.VariantType.UInt32
        else:
            vt = getattr(ua.VariantType, kind)
        return ua.Variant(value, vt)

    async def _publish(self, *roles: str) -> None:
        """Write the current values of ``roles`` (all when empty) to the address space."""
        server = self._server
        if server is None or not self._nodes:
            return
        values = self.values
        kinds = {role: kind for role, _, kind in _VARIABLES}
        now = ua.DateTime.now(UTC)
        for role in roles or tuple(kinds):
            if role in ("manufacturer", "model", "serial"):
                continue
            dv = ua.DataValue(
                self._variant(kinds[role], values[role]), SourceTimestamp=now, ServerTimestamp=now
            )
            await server.write_attribute_value(self._nodes[role].nodeid, dv)
        async with self._changed:
            self._changed.notify_all()

    # ------------------------------------------------------------------ production

    def _cycle_interval(self) -> float:
        base = self.cycle_s * (self.setup_slowdown if self._st.mode == "Setup" else 1.0)
        return max(0.001, base * (1.0 + self.rng.uniform(-self.jitter, self.jitter)))

    async def _production_loop(self) -> None:
        while True:
            if self._st.state != "Executing":
                self._wake.clear()
                await self._wake.wait()
                continue
            interval = self._cycle_interval()
            self._wake.clear()
            # Wake early on a state change, so stop() is immediate and run() starts a fresh cycle.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), interval)
                continue
            async with self._lock:
                if self._st.state != "Executing":
                    continue
                if self.rng.random() < self.scrap_rate:
                    self._st.scrap = (self._st.scrap + 1) % self.modulo
                    self.made["scrap"] += 1
                    await self._publish("scrap", "total")
                else:
                    self._st.good = (self._st.good + 1) % self.modulo
                    self.made["good"] += 1
                    await self._publish("good", "total")

    async def _set_state(
        self, state: str, mode: str, packml: str, alarm: str = "", **job: str
    ) -> None:
        async with self._lock:
            self._st.state, self._st.mode, self._st.packml, self._st.alarm = (
                state,
                mode,
                packml,
                alarm,
            )
            for key, value in job.items():
                setattr(self._st, key, value)
            self.history.append((time.time_ns() // 1_000_000, state, alarm))
            await self._publish(
                "state",
                "state_number",
                "mode",
                "mode_number",
                "packml_state",
                "packml_state_number",
                "alarm",
                *job,
            )
            self._wake.set()

    # ------------------------------------------------------------------ control API

    async def run(self) -> None:
        """Produce: Executing / Processing / PackML Execute; clears the alarm."""
        await self._set_state("Executing", "Processing", "Execute")

    async def setup(self, *, program: str | None = None, order: str | None = None) -> None:
        """Setup (changeover): Executing / Setup; parts come ``setup_slowdown`` times slower."""
        job = {k: v for k, v in (("program", program), ("order", order)) if v is not None}
        await self._set_state("Executing", "Setup", "Execute", **job)

    async def idle(self) -> None:
        """Ready but not producing: NotExecuting / PackML Idle."""
        await self._set_state("NotExecuting", "Processing", "Idle")

    async def stop(self, alarm: str | None = None) -> None:
        """Stop. Without alarm a planned stop (NotExecuting, PackML Stopped); with an alarm code
        an unplanned one (OutOfService, PackML Aborted, ActiveAlarmCode = alarm)."""
        if alarm:
            await self._set_state("OutOfService", "Processing", "Aborted", alarm)
        else:
            await self._set_state("NotExecuting", "Processing", "Stopped")

    async def hold(self, alarm: str | None = None) -> None:
        """Held (e.g. material lack): NotExecuting, PackML Held, optional alarm code."""
        await self._set_state("NotExecuting", "Processing", "Held", alarm or "")

    async def suspend(self) -> None:
        """Suspended (starved/blocked by the line): NotExecuting, PackML Suspended."""
        await self._set_state("NotExecuting", "Processing", "Suspended")

    async def maintenance(self) -> None:
        """Maintenance: OutOfService / Maintenance / PackML Stopped."""
        await self._set_state("OutOfService", "Maintenance", "Stopped")

    async def unavailable(self) -> None:
        """NotAvailable (e.g. no communication to the machine's own controller)."""
        await self._set_state("NotAvailable", "None", "Stopped")

    async def set_job(self, *, program: str | None = None, order: str | None = None) -> None:
        async with self._lock:
            roles = []
            if program is not None:
                self._st.program = program
                roles.append("program")
            if order is not None:
                self._st.order = order
                roles.append("order")
            await self._publish(*roles)

    async def set_counter(self, *, good: int | None = None, scrap: int | None = None) -> None:
        """Set good and/or scrap (taken modulo 2**bits); TotalCount follows."""
        async with self._lock:
            roles = ["total"]
            if good is not None:
                self._st.good = good % self.modulo
                roles.append("good")
            if scrap is not None:
                self._st.scrap = scrap % self.modulo
                roles.append("scrap")
            await self._publish(*roles)

    async def restart(self, *, downtime_s: float = 0.2, keep_counters: bool = False) -> None:
        """PLC power cycle: stop the server (clients lose their connection and subscriptions),
        reset every counter to 0 (unless ``keep_counters``), wait ``downtime_s``, start a fresh
        server on the same port with a new ServerStatus.StartTime. The machine state is kept."""
        async with self._lock:
            await self._stop_opcua()
            if not keep_counters:
                self._st.good = self._st.scrap = 0
            await asyncio.sleep(downtime_s)
            old = self.start_time
            await self._start_opcua()
            if self.start_time == old:  # clock resolution paranoia: StartTime must change
                await asyncio.sleep(0.01)
                await self._stop_opcua()
                await self._start_opcua()
            self.restarts += 1
            self._wake.set()

    async def wait_for(self, role: str, predicate: Any, timeout: float = 5.0) -> Any:
        """Wait until ``predicate(values[role])`` holds; returns the value (TimeoutError)."""

        async def _wait() -> Any:
            async with self._changed:
                while not predicate(self.values[role]):
                    await self._changed.wait()
                return self.values[role]

        return await asyncio.wait_for(_wait(), timeout)

    def report(self) -> dict[str, Any]:
        """What the control port's ``values`` answers: the values shown (``start_time`` as
        ISO text), :attr:`made` and :attr:`history`, as JSON types."""
        values = dict(self.values)
        start = values.pop("start_time")
        values["start_time"] = start.isoformat() if start is not None else None
        return {
            "values": values,
            "made": dict(self.made),
            "history": [list(h) for h in self.history],
            "restarts": self.restarts,
        }

    async def control(self, command: Mapping[str, Any]) -> dict[str, Any]:
        """One command of the control port (module docstring); the answer to send back."""
        match command.get("cmd"):
            case "run":
                await self.run()
            case "setup":
                await self.setup()
            case "idle":
                await self.idle()
            case "stop":
                await self.stop(alarm=command.get("alarm") or None)
            case "restart":
                await self.restart(keep_counters=bool(command.get("keep_counters", False)))
            case "values":
                return {"ok": True, **self.report()}
            case other:
                return {"ok": False, "error": f"unknown command {other!r}"}
        return {"ok": True}

    async def serve_control(self, host: str, port: int) -> asyncio.Server:
        """Listen for control connections (module docstring) on ``host:port`` (0: free)."""

        async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while line := await reader.readline():
                    try:
                        command = json.loads(line)
                        answer = (
                            await self.control(command)
                            if isinstance(command, dict)
                            else {"ok": False, "error": "not a JSON object"}
                        )
                    except ValueError as exc:
                        answer = {"ok": False, "error": f"not JSON: {exc}"}
                    writer.write(json.dumps(answer).encode() + b"\n")
                    await writer.drain()
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                writer.close()

        return await asyncio.start_server(client, host, port)

    # ------------------------------------------------------------------ scenario

    def start_scenario(
        self, alarms: tuple[str, ...] = ("E-217", "E-105", "E-330", "E-044")
    ) -> None:
        """Run :meth:`scenario` in the background until :meth:`aclose`."""
        if self._scenario_task is None or self._scenario_task.done():
            self._scenario_task = asyncio.create_task(
                self.scenario(alarms), name="opcua-sim-scenario"
            )

    async def scenario(
        self, alarms: tuple[str, ...] = ("E-217", "E-105", "E-330", "E-044")
    ) -> None:
        """Demo loop: run, short unplanned stop, run, long unplanned stop, run, planned stop,
        setup with a new program/order, run ... forever. Durations scale with ``cycle_s``."""
        c = self.cycle_s
        orders = iter(range(4711, 10**9))
        next(orders)
        while True:
            await self.run()
            await asyncio.sleep(c * self.rng.uniform(20, 60))
            await self.stop(alarm=self.rng.choice(alarms))
            await asyncio.sleep(c * self.rng.uniform(2, 8))
            await self.run()
            await asyncio.sleep(c * self.rng.uniform(20, 60))
            await self.stop(alarm=self.rng.choice(alarms))
            await asyncio.sleep(c * self.rng.uniform(30, 90))
            await self.run()
            await asyncio.sleep(c * self.rng.uniform(20, 60))
            await self.stop()
            await asyncio.sleep(c * self.rng.uniform(5, 15))
            await self.setup(program=f"PRG-{self.rng.randint(100, 999)}", order=str(next(orders)))
            await asyncio.sleep(c * self.rng.uniform(10, 20))
            await self.idle()
            await asyncio.sleep(c * self.rng.uniform(2, 5))


# --------------------------------------------------------------------------- CLI


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m simulators.opcua_machine", description=__doc__.split("\n")[0]
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=4840, help="0 = a free port")
    p.add_argument("--machine", default="Press07", help="machine object name (node id prefix)")
    p.add_argument("--cycle-s", type=float, default=1.0)
    p.add_argument("--jitter", type=float, default=0.1)
    p.add_argument("--scrap-rate", type=float, default=0.02)
    p.add_argument("--bits", type=int, choices=(16, 32), default=32)
    p.add_argument("--start-value", type=int, default=0, help="initial GoodCount")
    p.add_argument("--security", choices=sorted(SECURITY_POLICIES), default="none")
    p.add_argument("--cert-dir", type=Path, default=None, help="server cert/key (made if missing)")
    p.add_argument("--trust-dir", type=Path, default=None, help="trusted client certs (def.: all)")
    p.add_argument("--user", default=None)
    p.add_argument("--password-file", type=Path, default=None)
    p.add_argument("--scenario", action="store_true", help="autonomous demo: runs, stops, setups")
    p.add_argument("--idle", action="store_true", help="start idle instead of running")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument(
        "--control-port", type=int, default=None, help="JSON-lines control over TCP (0 = free)"
    )
    p.add_argument("--log-level", default="INFO")
    args = p.parse_args(argv)
    if (args.user is None) != (args.password_file is None):
        p.error("--user and --password-file go together")
    if args.security != "none" and args.cert_dir is None:
        p.error("--security sign/encrypt/all needs --cert-dir")
    return args


async def _amain(args: argparse.Namespace) -> None:
    users = None
    if args.user is not None:
        users = {args.user: args.password_file.read_text().strip()}
    sim = MachineSimulator(
        args.host,
        args.port,
        machine=args.machine,
        bits=args.bits,
        cycle_s=args.cycle_s,
        jitter=args.jitter,
        scrap_rate=args.scrap_rate,
        start_value=args.start_value,
        security=args.security,
        cert_dir=args.cert_dir,
        trust_dir=args.trust_dir,
        users=users,
        seed=args.seed,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    async with sim:
        if args.scenario:
            sim.start_scenario()
        elif not args.idle:
            await sim.run()
        control = None
        if args.control_port is not None:
            control = await sim.serve_control(args.host, args.control_port)
            print(f"control {control.sockets[0].getsockname()[1]}", flush=True)
        print(f"{sim.endpoint} ready", flush=True)
        for role, node_id in sim.node_ids.items():
            print(f"  {role:20s} {node_id}", flush=True)
        await stop.wait()
        if control is not None:
            control.close()


def main(argv: list[str] | None = None) -> None:
    args = _parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    # asyncua logs every request at INFO; keep the simulator's own lines readable.
    logging.getLogger("asyncua").setLevel(max(logging.WARNING, logging.getLogger().level))
    asyncio.run(_amain(args))


if __name__ == "__main__":
    main()
