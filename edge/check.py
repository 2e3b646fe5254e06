"""``edge check``: every link in the config, one line per check, non-zero exit if one fails.

Run by maintenance staff after editing the config and before enabling the service: the config
itself, the database, the clock, the broker with the configured credentials, and every OPC UA
node (it exists and has a fitting type).

A check only reads. It is often run as root before the service ever ran: whatever it made (the
database, its ``-wal`` and ``-shm``, the OPC UA certificate, a rejected server certificate)
would belong to root, and the service user could not open it later. So a missing database is
reported as such (the first ``edge run`` makes it), a missing certificate is replaced by a
temporary one for the connect, and the files that are there are judged for the service user.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import os
import pwd
import shutil
import sqlite3
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edge.config import GatewayConfig, OpcUaSource, file_problems, mqtt_password
from edge.domain.clock import EARLIEST_PLAUSIBLE
from edge.errors import SourceUnavailable
from edge.store import integrity
from edge.store.identity import identity_path, read_identity
from edge.store.schema import MIGRATIONS

SERVICE_USER = "edge-gateway"  # User= of systemd/edge-gateway.service


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str


def _service_user(name: str | None) -> pwd.struct_passwd | None:
    """The user whose access to the files counts: ``name`` (``--service-user``), or the unit's
    user when the check runs as root and that user exists. None: the user running the check."""
    try:
        if name is not None:
            return pwd.getpwnam(name)
        if os.geteuid() == 0:
            return pwd.getpwnam(SERVICE_USER)
    except KeyError:
        if name is not None:
            raise
    return None


def _may(path: Path, user: pwd.struct_passwd | None, bit: int) -> bool:
    """May ``user`` read (``bit`` 4) or write (2) ``path``, by its owner, group and mode?"""
    if user is None:
        return os.access(path, os.R_OK if bit == 4 else os.W_OK)
    if user.pw_uid == 0:
        return True
    st = path.stat()
    if st.st_uid == user.pw_uid:
        return bool(st.st_mode & (bit << 6))
    groups = {user.pw_gid, *(g.gr_gid for g in grp.getgrall() if user.pw_name in g.gr_mem)}
    if st.st_gid in groups:
        return bool(st.st_mode & (bit << 3))
    return bool(st.st_mode & bit)


def _owner(path: Path) -> str:
    st = path.stat()
    try:
        who = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        who = str(st.st_uid)
    return f"owner {who}, mode {stat.S_IMODE(st.st_mode):04o}"


def _not_theirs(
    paths: list[tuple[Path, int]], user: pwd.struct_passwd | None, fix_dir: Path
) -> str | None:
    """What ``user`` cannot read or write of ``paths`` (path, 4 or 6), with the fix; None if
    nothing."""
    bad = [
        f"{path} ({_owner(path)})"
        for path, bits in paths
        if path.exists() and not all(_may(path, user, b) for b in (4, 2) if bits & b)
    ]
    if not bad:
        return None
    if user is None:
        who = f"this user (uid {os.geteuid()})"
        return f"{who} cannot use {', '.join(bad)}: run the check as the gateway's user"
    return (
        f"the service user {user.pw_name} cannot use {', '.join(bad)}; give them to it: "
        f"chown -R {user.pw_name}: {fix_dir}"
    )


@contextmanager
def read_only(db: Path) -> Iterator[sqlite3.Connection]:
    """A connection that only reads ``db`` and makes no file beside it.

    SQLite's read-only mode still creates the ``-wal`` and ``-shm`` files of a database in WAL
    mode when they are missing (and leaves them there, owned by whoever ran the check: as root,
    files the service cannot open). So: without a log, the main file is all there is and is
    read as immutable; with the running gateway's ``-wal`` and ``-shm`` it is read through
    them; a log without its ``-shm`` is read from a temporary copy of both, removed after."""
    wal, shm = integrity.wal_path(db), integrity.shm_path(db)
    with contextlib.ExitStack() as stack:
        if not wal.exists():
            target, flags = db, "immutable=1"
        elif shm.exists():
            target, flags = db, "mode=ro"
        else:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="edge-check-")))
            target, flags = tmp / db.name, "mode=ro"
            shutil.copyfile(db, target)
            shutil.copyfile(wal, integrity.wal_path(target))
        conn = sqlite3.connect(f"{target.resolve().as_uri()}?{flags}", uri=True, timeout=5)
        try:
            yield conn
        finally:
            conn.close()


def check_database(cfg: GatewayConfig, service_user: pwd.struct_passwd | None = None) -> Check:
    """The database as the daemon will find it, read only: a check never creates it (nor its
    directory, its log or anything else), as root that would leave files the service cannot
    open."""
    path = cfg.store.path
    directory = path.parent
    if path.exists() and not path.is_file():
        return Check("database", False, f"{path} is not a file: the database cannot be there")
    if not path.exists() or path.stat().st_size == 0:
        try:
            lost = read_identity(path)
        except ValueError as exc:
            return Check("database", False, str(exc))
        if lost is not None:
            return Check(
                "database",
                False,
                f"{path} is {'empty' if path.exists() else 'missing'}, but "
                f"{identity_path(path)} says database {lost.db_id} ran here ({lost.boot_seq} "
                "boots): edge run refuses to start a new one (exit 3); restore a copy made by "
                "edge backup, or start an empty one with edge run --new-database",
            )
        if not directory.exists():
            return Check(
                "database",
                True,
                f"no database yet: {path} and its directory are made at the first edge run",
            )
        if not directory.is_dir():
            return Check("database", False, f"{directory} is not a directory")
        problem = _not_theirs([(directory, 6)], service_user, directory)
        if problem:
            return Check("database", False, problem)
        free = integrity.free_bytes(directory)
        room = "" if free is None else f", {free // (1 << 20)} MiB free"
        return Check(
            "database",
            True,
            f"no database yet: {path} is made at the first edge run ({directory} writable{room})",
        )
    files = [(directory, 6), (path, 6)]
    files += [(p, 6) for p in (integrity.wal_path(path), integrity.shm_path(path))]
    files.append((identity_path(path), 6))
    problem = _not_theirs(files, service_user, directory)
    if problem:
        return Check("database", False, problem)
    try:
        wal = integrity.check_wal(path)
        damage = integrity.check_header(path, wal) or (wal.damage if wal else None)
    except OSError as exc:
        return Check("database", False, f"{path}: cannot be read: {exc.strerror}")
    if damage:
        return Check("database", False, f"{path} is damaged: {damage}; edge run refuses it")
    try:
        with read_only(path) as conn:
            version: int = conn.execute("PRAGMA user_version").fetchone()[0]
    except (sqlite3.Error, OSError) as exc:
        return Check("database", False, f"{path}: {exc}")
    known = len(MIGRATIONS)
    if version > known:
        return Check(
            "database",
            False,
            f"{path} has schema version {version}, newer than this gateway's ({known}): it was "
            "written by a newer version; run that one",
        )
    later = "" if version == known else f"; edge run migrates it to {known}"
    return Check("database", True, f"{path} usable (schema version {version}{later})")


def check_clock(cfg: GatewayConfig) -> Check:
    now = datetime.now(UTC)
    if now < EARLIEST_PLAUSIBLE:
        return Check("clock", False, f"system time {now:%Y-%m-%d %H:%M} UTC is not plausible")
    detail = f"system time {now:%Y-%m-%d %H:%M:%S} UTC"
    path = cfg.store.path
    if path.is_file() and path.stat().st_size > 0:
        try:
            with read_only(path) as conn:
                row = conn.execute("SELECT MAX(at_wall_ms) FROM journal").fetchone()
        except (sqlite3.Error, OSError):
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


def _certificate(
    src: OpcUaSource, tmp: Path, service_user: pwd.struct_passwd | None
) -> tuple[OpcUaSource, Check]:
    """The source as the check connects it: with ``tmp`` as its certificate directory, so that
    nothing is made in the real one (no certificate, no ``rejected/`` server certificate).
    ``tmp/own`` is the gateway's certificate when there is one, else a temporary one;
    ``tmp/trusted`` is the real trust list. And a line on the gateway's certificate."""
    from edge.sources.opcua_security import application_uri, ensure_certificate, thumbprint

    real = src.certificate_dir
    own = real / "own"
    cert, key = own / "cert.der", own / "key.pem"
    name = f"opcua {src.name} certificate"
    if cert.is_file() and key.is_file():
        (tmp / "own").symlink_to(own.resolve(), target_is_directory=True)
        problem = _not_theirs([(real, 4), (own, 4), (cert, 4), (key, 4)], service_user, real)
        if problem:
            line = Check(name, False, problem)
        else:
            try:
                print_ = thumbprint(cert.read_bytes())
            except OSError as exc:
                line = Check(name, False, f"{cert} cannot be read: {exc.strerror}")
            else:
                line = Check(name, True, f"{cert} (SHA-1 {print_}), key {key}")
    else:
        ensure_certificate(tmp, application_uri(src.name))  # tmp/own, trusted, rejected
        (tmp / "trusted").rmdir()
        line = Check(
            name,
            True,
            f"none yet: {cert} is made at the first edge run, or by edge certs (as root it "
            f"gives the files to {SERVICE_USER}) to give it to the machine builder first; "
            "this check connects with a temporary one",
        )
    trusted = real / "trusted"
    if trusted.is_dir():
        (tmp / "trusted").symlink_to(trusted.resolve(), target_is_directory=True)
    else:
        (tmp / "trusted").mkdir()
    (tmp / "rejected").mkdir(exist_ok=True)
    return src.model_copy(update={"certificate_dir": tmp}), line


async def check_opcua(
    cfg: GatewayConfig, service_user: pwd.struct_passwd | None = None
) -> list[Check]:
    """Connect as the source does and find every node; a failure is one line that names the
    cause and the fix (edge.sources.opcua_errors), never a traceback. A secure source connects
    with the gateway's certificate, or a temporary one when it has none yet, and the real trust
    list; the check writes nothing into the certificate directory."""
    from edge.sources.opcua_security import thumbprint

    checks: list[Check] = []
    for configured in cfg.sources.opcua:
        with contextlib.ExitStack() as stack:
            src, real, tmp = configured, str(configured.certificate_dir), None
            if configured.security_policy != "None":
                tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="edge-check-")))
                src, line = _certificate(configured, tmp, service_user)
                checks.append(line)
            found = await _connect(src)
            if tmp is not None:
                rejected = sorted((tmp / "rejected").glob("*.der"))
                for i, c in enumerate(found):
                    detail = c.detail.replace(str(tmp), real)
                    if rejected and not c.ok and "not trusted" in detail:
                        print_ = thumbprint(rejected[0].read_bytes())
                        detail = (
                            f"{src.endpoint} presents a server certificate the gateway does not "
                            f"trust (SHA-1 {print_}): put the server's certificate into "
                            f"{real}/trusted/ (at its first connect the gateway keeps it as "
                            f"{real}/rejected/{print_}.der, to be moved there)"
                        )
                    found[i] = Check(c.name, c.ok, detail)
            checks.extend(found)
    return checks


async def _connect(src: OpcUaSource) -> list[Check]:
    from edge.sources.opcua import OpcUaLink
    from edge.sources.opcua_errors import PhasedClient, explain

    link = OpcUaLink(src, engine=None)  # type: ignore[arg-type]  # resolving needs no engine
    client = PhasedClient(src.endpoint, timeout=src.timeout_s)
    name = f"opcua {src.name}"
    checks: list[Check] = []
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


def run_checks(
    cfg: GatewayConfig, out: Callable[[str], None] = print, service_user: str | None = None
) -> int:
    """Every check, one line each, and how many passed; 0 if all did, else 1. Files are judged
    for ``service_user`` (as root by default the unit's user, when it exists)."""
    try:
        user = _service_user(service_user)
    except KeyError:
        out(f"FAIL  no user {service_user!r} on this machine (--service-user)")
        return 1
    checks = [
        Check("config", True, "read and valid"),
        check_database(cfg, user),
        check_clock(cfg),
    ]
    if (identity := check_identity(cfg)) is not None:
        checks.append(identity)
    checks.append(check_broker(cfg))
    checks.extend(asyncio.run(check_opcua(cfg, user)))
    checks.extend(asyncio.run(check_modbus(cfg)))
    width = max(len(c.name) for c in checks)
    for c in checks:
        out(f"{'ok  ' if c.ok else 'FAIL'}  {c.name:<{width}}  {c.detail}")
    failed = sum(not c.ok for c in checks)
    out(f"{len(checks) - failed} of {len(checks)} checks passed")
    return 0 if failed == 0 else 1
