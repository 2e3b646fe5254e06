"""OPC UA security: the gateway's application certificate and the server trust list.

Layout of ``certificate_dir`` (default ``/var/lib/edge-gateway/pki``)::

    own/cert.der  own/key.pem     the gateway's application instance certificate (made once)
    trusted/*.der                 server certificates the installer trusts
    rejected/*.der                certificates of servers that were refused, to inspect and move

An unknown server certificate is refused by default: the gateway stores it under ``rejected/``
and logs which file to move to ``trusted/`` to trust that server.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import socket
from pathlib import Path

from asyncua import ua
from asyncua.client.client import Client
from asyncua.crypto import security_policies
from asyncua.ua.uaerrors import UaError
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from edge.config import OpcUaSource
from edge.errors import SourceUnavailable
from edge.logging import Logger
from edge.sources.opcua_errors import Where, explain

POLICIES: dict[str, type[security_policies.SecurityPolicy]] = {
    "Basic256Sha256": security_policies.SecurityPolicyBasic256Sha256,
    "Aes128_Sha256_RsaOaep": security_policies.SecurityPolicyAes128Sha256RsaOaep,
    "Aes256_Sha256_RsaPss": security_policies.SecurityPolicyAes256Sha256RsaPss,
}
MODES = {
    "Sign": ua.MessageSecurityMode.Sign,
    "SignAndEncrypt": ua.MessageSecurityMode.SignAndEncrypt,
}


def application_uri(name: str) -> str:
    return f"urn:edge-gateway:{socket.gethostname()}:{name}"


def ensure_certificate(cert_dir: Path, uri: str) -> tuple[Path, Path]:
    """The gateway's certificate and key, made on first use (RSA 2048, SHA-256, 10 years)."""
    own = cert_dir / "own"
    cert_path, key_path = own / "cert.der", own / "key.pem"
    if cert_path.exists() and key_path.exists():
        return cert_path, key_path
    own.mkdir(parents=True, exist_ok=True)
    for sub in ("trusted", "rejected"):
        (cert_dir / sub).mkdir(exist_ok=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    host = socket.gethostname()
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, f"edge-gateway@{host}"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "edge-gateway"),
        ]
    )
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri), x509.DNSName(host)]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=True,
                key_encipherment=True,
                data_encipherment=True,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.DER))
    return cert_path, key_path


def thumbprint(der: bytes) -> str:
    return hashlib.sha1(der, usedforsecurity=False).hexdigest()


def check_trusted(cert_dir: Path, der: bytes, endpoint: str) -> None:
    """Refuse a server certificate that is not in ``trusted/``; keep it under ``rejected/``."""
    trusted = cert_dir / "trusted"
    for path in trusted.glob("*.der"):
        if path.read_bytes() == der:
            return
    rejected = cert_dir / "rejected"
    rejected.mkdir(parents=True, exist_ok=True)
    target = rejected / f"{thumbprint(der)}.der"
    target.write_bytes(der)
    raise SourceUnavailable(
        f"the server certificate of {endpoint} is not trusted; to trust it: mv {target} {trusted}/"
    )


def certificate_uri(cert_path: Path) -> str | None:
    """The application URI in a certificate's SubjectAltName (DER or PEM), if any."""
    raw = cert_path.read_bytes()
    cert = (
        x509.load_pem_x509_certificate(raw)
        if raw.lstrip().startswith(b"-----")
        else x509.load_der_x509_certificate(raw)
    )
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    return str(uris[0]) if uris else None


def _der(path: Path) -> bytes:
    raw = path.read_bytes()
    if raw.lstrip().startswith(b"-----"):
        return x509.load_pem_x509_certificate(raw).public_bytes(serialization.Encoding.DER)
    return raw


async def secure_client(
    client: Client,
    *,
    endpoint: str,
    policy_name: str,
    mode_name: str,
    certificate_dir: Path,
    uri: str,
    timeout_s: float,
    certificate: Path | None = None,
    private_key: Path | None = None,
    server_certificate: Path | None = None,
) -> None:
    """Sign (and encrypt) the client's session with ``policy_name``/``mode_name``.

    Our certificate: ``certificate`` and ``private_key``, or the gateway's own in
    ``certificate_dir`` (made on first use). The server's: the one the endpoint offers, taken
    only when it is ``server_certificate`` or in ``certificate_dir/trusted`` (else it is kept
    under ``rejected/`` and the error says which file to move)."""
    try:
        if certificate is None or private_key is None:
            certificate, private_key = ensure_certificate(certificate_dir, uri)
        client.application_uri = certificate_uri(certificate) or uri
    except OSError as exc:
        raise SourceUnavailable(
            f"the gateway's certificate in {certificate_dir} cannot be made or read: "
            f"{exc.strerror or exc} ({exc.filename or certificate_dir}); run as the gateway's "
            "user, or point certificate_dir (edge browse: --certificate-dir) elsewhere"
        ) from None
    except ValueError as exc:
        raise SourceUnavailable(f"{certificate} is no certificate: {exc}") from None
    policy = POLICIES[policy_name]
    mode = MODES[mode_name]
    try:
        endpoints = await client.connect_and_get_server_endpoints()
    except (OSError, TimeoutError, UaError, AssertionError) as exc:
        # The endpoints are asked for over an unsecured channel.
        where = Where(endpoint, timeout_s=timeout_s)
        phase = getattr(client, "phase", "socket")
        raise SourceUnavailable(f"cannot reach {explain(exc, where, phase)}") from None
    if hasattr(client, "phase"):
        client.phase = "socket"  # the session's connect comes next
    wanted = [e for e in endpoints if e.SecurityPolicyUri == policy.URI and e.SecurityMode == mode]
    if not wanted:
        offered = sorted(
            {f"{e.SecurityPolicyUri.rsplit('#', 1)[-1]}/{e.SecurityMode.name}" for e in endpoints}
        )
        raise SourceUnavailable(
            f"{endpoint} offers no {policy_name}/{mode_name} endpoint; "
            f"it offers {', '.join(offered)}"
        )
    server_cert = bytes(wanted[0].ServerCertificate)
    if server_certificate is not None:
        try:
            given = _der(server_certificate)
        except (OSError, ValueError) as exc:
            raise SourceUnavailable(f"{server_certificate} cannot be read: {exc}") from None
        if given != server_cert:
            raise SourceUnavailable(
                f"{endpoint} presents another certificate than {server_certificate} "
                f"(SHA-1 {thumbprint(server_cert)}); refused"
            )
    else:
        check_trusted(certificate_dir, server_cert, endpoint)
    await client.set_security(
        policy, str(certificate), str(private_key), server_certificate=server_cert, mode=mode
    )


async def apply_security(client: Client, cfg: OpcUaSource, log: Logger) -> None:
    await secure_client(
        client,
        endpoint=cfg.endpoint,
        policy_name=cfg.security_policy,
        mode_name=cfg.security_mode,
        certificate_dir=cfg.certificate_dir,
        uri=application_uri(cfg.name),
        timeout_s=cfg.timeout_s,
    )
    log.debug("opc ua security set", policy=cfg.security_policy, mode=cfg.security_mode)
