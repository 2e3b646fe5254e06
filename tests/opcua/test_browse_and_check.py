"""``edge browse`` finds the counter nodes; ``edge check`` tests every link of a config."""

from __future__ import annotations

import asyncio
import sys
from dataclasses import replace
from pathlib import Path

from edge.sources.opcua_browse import Security, browse
from simulators.opcua_machine import MachineSimulator
from tests.opcua.test_opcua_source import config

ROOT = Path(__file__).resolve().parents[2]


async def edge(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "edge",
        *args,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_browse_shows_the_counter_nodes_to_copy(tmp_path: Path) -> None:
    async with MachineSimulator(cycle_s=0.05, seed=1) as machine:
        code, out = await edge("browse", machine.endpoint, "--filter", "GoodCount")
        assert code == 0, out
        # With the namespace URI (it stays right when the indexes move), the index form too.
        assert f"nsu={machine.namespace_uri};s=Press07.Counters.GoodCount" in out
        assert f"ns=2 {machine.namespace_uri}" in out
        assert "UInt32" in out
        assert "Machines" in out  # the path to it stays visible
        assert "ScrapCount" not in out


async def test_browse_an_unreachable_server_says_so(tmp_path: Path) -> None:
    machine = MachineSimulator()  # never started: nothing listens on its port
    code, out = await edge("browse", machine.endpoint, "--timeout", "1")
    assert code == 1
    assert "cannot browse" in out
    assert "Traceback" not in out


async def test_check_is_green_for_a_good_config_and_names_a_bad_node(tmp_path: Path) -> None:
    async with MachineSimulator(cycle_s=0.05, seed=2) as machine:
        good = tmp_path / "good"
        good.mkdir()
        config(good, machine)
        code, out = await edge("check", "-c", str(good / "edge.toml"))
        assert code == 0, out
        assert "FAIL" not in out
        for line in ("database", "clock", "broker", "opcua press counter", "opcua press state"):
            assert line in out
        bad = tmp_path / "bad"
        bad.mkdir()
        config(bad, machine, good="ns=2;s=Press07.Counters.Nope")
        code, out = await edge("check", "-c", str(bad / "edge.toml"))
        assert code == 1
        assert "FAIL" in out
        assert "ns=2;s=Press07.Counters.Nope" in out


async def in_process(endpoint: str, security: Security) -> tuple[int, str]:
    """``edge browse`` in this process (the same code without a Python start per call)."""
    lines: list[str] = []
    code = await browse(endpoint, text_filter="GoodCount", security=security, out=lines.append)
    return code, "\n".join(lines)


async def test_browse_a_server_with_only_secure_endpoints_and_a_user(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("s3cret\n")
    users = {"tech": "s3cret"}
    async with MachineSimulator(cycle_s=0.05, security="encrypt", users=users, seed=3) as machine:
        assert machine.cert_path is not None
        pki = tmp_path / "pki"
        sec = Security("Basic256Sha256", "SignAndEncrypt", pki, user="tech", password_file=secret)
        # The server's certificate is not in the trust list yet: refused, kept to move.
        code, out = await in_process(machine.endpoint, sec)
        assert code == 1
        assert "not trusted" in out
        # Trusted by naming it (or by moving it into trusted/, as the source's message says):
        # the command line as a technician types it.
        args = [
            "browse",
            machine.endpoint,
            "--filter",
            "GoodCount",
            "--security-policy",
            "Basic256Sha256",
            "--security-mode",
            "SignAndEncrypt",
            "--certificate-dir",
            str(pki),
            "--user",
            "tech",
            "--password-file",
            str(secret),
            "--server-certificate",
            str(machine.cert_path),
        ]
        code, out = await edge(*args)
        assert code == 0, out
        assert "(Basic256Sha256/SignAndEncrypt)" in out
        assert f"nsu={machine.namespace_uri};s=Press07.Counters.GoodCount" in out
        trusted = replace(sec, server_certificate=machine.cert_path)
        not_a_dir = tmp_path / "a-file"
        not_a_dir.write_text("")
        code, out = await in_process(
            machine.endpoint, replace(trusted, certificate_dir=not_a_dir / "pki")
        )
        assert code == 1
        assert f"the gateway's certificate in {not_a_dir / 'pki'} cannot be made" in out
        secret.write_text("wrong\n")
        code, out = await in_process(machine.endpoint, trusted)
        assert code == 1
        assert "refused the user 'tech'" in out
        assert "wrong" not in out
