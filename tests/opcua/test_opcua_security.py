"""OPC UA security: signed and encrypted sessions, the server trust list, user and password."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import structlog

from edge.config import GatewayConfig, load_config
from simulators.opcua_machine import MachineSimulator
from tests.opcua.test_opcua_source import config, gateway, good, until


def secure_config(tmp_path: Path, machine: MachineSimulator, extra: str) -> GatewayConfig:
    config(tmp_path, machine)
    path = tmp_path / "edge.toml"
    text = path.read_text().replace(
        "publishing_interval_ms = 20\n", f"publishing_interval_ms = 20\n{extra}\n"
    )
    path.write_text(text)
    return load_config(path, env={})


def security(pki: Path, mode: str, policy: str = "Basic256Sha256") -> str:
    return f'security_policy = "{policy}"\nsecurity_mode = "{mode}"\ncertificate_dir = "{pki}"'


async def test_an_unknown_server_certificate_is_refused_until_trusted(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    async with MachineSimulator(cycle_s=0.02, security="encrypt", seed=1) as machine:
        cfg = secure_config(tmp_path, machine, security(pki, "SignAndEncrypt"))
        async with gateway(cfg) as (engine, link):
            await until(lambda: link.state.last_error is not None, 15, "the refusal")
            error = link.state.last_error or ""
            assert "not trusted" in error
            rejected = list((pki / "rejected").glob("*.der"))
            assert len(rejected) == 1
            assert str(rejected[0]) in error  # the log line says which file to move
            assert link.link_status == "down"
            # The installer trusts it, as the message says; the next attempt connects.
            shutil.move(str(rejected[0]), pki / "trusted" / rejected[0].name)
            await until(lambda: link.link_status == "ok", 15, "the secure connection")
            await machine.run()
            await until(lambda: good(engine) >= 5, 10, "counts over the encrypted session")
        assert (pki / "own" / "cert.der").exists()
        assert (pki / "own" / "key.pem").stat().st_mode & 0o077 == 0


@pytest.mark.parametrize(
    ("policy", "mode", "served"),
    [
        ("Basic256Sha256", "Sign", "sign"),
        ("Aes128_Sha256_RsaOaep", "SignAndEncrypt", "encrypt"),
        ("Aes256_Sha256_RsaPss", "Sign", "sign"),
    ],
)
async def test_secure_session_with_a_trusted_server(
    tmp_path: Path, policy: str, mode: str, served: Any
) -> None:
    pki = tmp_path / "pki"
    async with MachineSimulator(cycle_s=0.02, security=served, seed=2) as machine:
        assert machine.cert_path is not None
        (pki / "trusted").mkdir(parents=True)
        shutil.copy(machine.cert_path, pki / "trusted" / "press07.der")
        cfg = secure_config(tmp_path, machine, security(pki, mode, policy))
        async with gateway(cfg) as (engine, link):
            await until(lambda: link.link_status == "ok", 15, "the signed connection")
            await machine.run()
            await until(lambda: good(engine) >= 5, 10, "counts")


async def test_a_wrong_password_is_refused_and_never_logged(tmp_path: Path) -> None:
    canary = "Canary-7f3a91-not-for-logs"
    secret = tmp_path / "opcua.password"
    secret.write_text(canary + "\n")
    async with MachineSimulator(cycle_s=0.02, users={"operator": "right"}, seed=3) as machine:
        extra = f'username = "operator"\npassword_file = "{secret}"'
        cfg = secure_config(tmp_path, machine, extra)
        with structlog.testing.capture_logs() as logs:
            async with gateway(cfg) as (_engine, link):
                await until(lambda: link.state.last_error is not None, 15, "the refusal")
                assert link.link_status == "down"
                secret.write_text("right\n")  # fixed by the installer: the retry gets in
                await until(lambda: link.link_status == "ok", 15, "the connection")
        assert canary not in repr(logs)
        assert any("unavailable" in str(e.get("event")) for e in logs)


def untrusted_client_server(tmp_path: Path) -> MachineSimulator:
    """A server with a trust list of its own that does not hold the gateway's certificate."""
    from simulators.opcua_machine import ensure_certificate

    trust = tmp_path / "server-trust"
    trust.mkdir()
    other, _ = ensure_certificate(tmp_path / "other", "urn:someone:else", "someone else")
    shutil.copy(other, trust / "someone-else.der")  # the store cannot be empty
    return MachineSimulator(cycle_s=0.02, security="encrypt", seed=4, trust_dir=trust)


async def test_a_server_that_refuses_our_certificate_is_told_once_with_the_fix(
    tmp_path: Path,
) -> None:
    """BadCertificateUntrusted names the file to give the machine builder and `edge certs`,
    once however often the gateway retries; `edge check` says the same in one line, and
    `edge browse` with the source's security options says it too (without them, that the
    server wants security)."""
    from edge.check import check_opcua
    from edge.sources.opcua_browse import Security, browse
    from tests.opcua.test_browse_and_check import edge

    pki = tmp_path / "pki"
    async with untrusted_client_server(tmp_path) as machine:
        assert machine.cert_path is not None
        (pki / "trusted").mkdir(parents=True)
        shutil.copy(machine.cert_path, pki / "trusted" / "press07.der")
        cfg = secure_config(tmp_path, machine, security(pki, "SignAndEncrypt"))
        with structlog.testing.capture_logs() as logs:
            async with gateway(cfg) as (_engine, link):
                await until(lambda: link.state.errors >= 2, 15, "two refusals")
        error = link.state.last_error or ""
        assert "BadCertificateUntrusted" in error
        assert str(pki / "own" / "cert.der") in error
        assert "edge certs" in error
        said = [e for e in logs if e.get("event") == "opc ua source unavailable; retrying"]
        assert [e["reason"] for e in said] == [error]  # once, not at every retry

        checks = await check_opcua(cfg)  # `edge check`'s OPC UA part, in this process
        line = next(c.detail for c in checks if c.name == "opcua press")
        assert not next(c.ok for c in checks if c.name == "opcua press")
        assert "BadCertificateUntrusted" in line
        assert "own/cert.der" in line

        code, out = await edge("browse", machine.endpoint)  # no unsecured endpoint offered
        assert code == 1
        assert "security_policy and security_mode" in out
        assert "Traceback" not in out
        lines: list[str] = []
        sec = Security("Basic256Sha256", "SignAndEncrypt", pki)
        assert await browse(machine.endpoint, security=sec, out=lines.append) == 1
        assert "BadCertificateUntrusted" in lines[0]
