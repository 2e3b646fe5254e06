"""The gateway against a second OPC UA stack: a node-opcua server (tests/opcua/nodeopcua/).

Security None, Sign and SignAndEncrypt (Basic256Sha256). Software we did not write, with its
own ideas: namespace 1 is the server's, a vendor namespace
is registered before ours (ours is ns=3, and the vendor's ns=2 has a decoy node with the same
string id), one counter is declared with the abstract UInteger type, and node-opcua closes the
secure channel of an untrusted client with an ERR message asyncua cannot read. The real source
(OpcUaLink with the engine) runs against it; counts are exact.

node-opcua is installed once with npm into tests/opcua/.nodeopcua/ (git-ignored); without node,
npm or the registry the tests skip and say why.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
from decimal import Decimal
from pathlib import Path

import pytest
import structlog

from bench.npm import Unavailable, npm_install
from edge.check import check_opcua
from edge.config import GatewayConfig, load_config
from edge.engine import Engine
from edge.sources.opcua_browse import browse
from tests.opcua.nodeopcua_server import OUR_URI, VENDOR_URI, NodeOpcUaServer, installed, nid
from tests.opcua.test_browse_and_check import edge
from tests.opcua.test_opcua_source import KEY, gateway, good, until

CONFIG = """
[gateway]
edge_id = "wc-press-07"
work_center = "PRESS07"
log_level = "warning"

[store]
path = "{db}"

[engine]
tick_interval_s = 0.2

[[counting.sources]]
name = "press_good"
kind = "good"
bits = 32

[[counting.sources]]
name = "press_scrap"
kind = "scrap"
bits = 32

[[sources.opcua]]
name = "press"
endpoint = "{endpoint}"
template = "plain"
watchdog_s = 1
timeout_s = 3
reconnect_min_s = 0.2
reconnect_max_s = 1
publishing_interval_ms = 20
state_node = "{state}"
{extra}

[[sources.opcua.counters]]
counter = "press_good"
node = "{good}"

[[sources.opcua.counters]]
counter = "press_scrap"
node = "{scrap}"
"""


@pytest.fixture(autouse=True)
def _node_opcua() -> None:
    try:
        installed()  # once per machine (npm), then cached in tests/opcua/.nodeopcua/
    except Unavailable as exc:  # no node/npm, node too old, or no registry
        pytest.skip(f"node-opcua cannot be installed here: {exc}")


def write_config(tmp_path: Path, server: NodeOpcUaServer, extra: str = "", **nodes: str) -> Path:
    ids = {
        "good": nid("GoodCount"),
        "scrap": nid("AbstractCount"),
        "state": nid("State"),
        **nodes,
    }
    path = tmp_path / "edge.toml"
    path.write_text(
        CONFIG.format(db=tmp_path / "edge.db", endpoint=server.endpoint, extra=extra, **ids)
    )
    return path


def config(tmp_path: Path, server: NodeOpcUaServer, extra: str = "", **nodes: str) -> GatewayConfig:
    return load_config(write_config(tmp_path, server, extra, **nodes), env={})


def scrap(engine: Engine) -> int:
    return int(sum(engine.wc.operations[KEY].counted.scrap.values(), Decimal(0)))


async def test_nsu_ids_shifted_namespaces_and_an_abstract_counter_count_exactly(
    tmp_path: Path,
) -> None:
    async with NodeOpcUaServer(tmp_path / "server") as server:
        # Another namespace came first: ours is not where a ns=2 id would look.
        assert server.namespaces.index(VENDOR_URI) == 2
        assert server.namespaces.index(OUR_URI) == 3
        await server.set("GoodCount", 100)  # before the gateway: the baseline, not counted
        async with gateway(config(tmp_path, server)) as (engine, link):
            await until(lambda: link.link_status == "ok", 15, "the connection")
            assert link.state.last_error is None
            for _ in range(5):
                await server.add("GoodCount", 3)
                await server.add("AbstractCount", 1)  # declared UInteger, values UInt32
                await asyncio.sleep(0.05)
            await until(lambda: good(engine) == 15, 10, "exact good counts")
            await until(lambda: scrap(engine) == 5, 10, "exact counts of the UInteger counter")
            await asyncio.sleep(0.5)
            assert (good(engine), scrap(engine)) == (15, 5)  # nothing doubled
            assert link.state.errors == 0
        code, out = await edge("verify", "--db", str(tmp_path / "edge.db"))
        assert code == 0, out


async def test_browse_and_check_name_namespaces_and_types(tmp_path: Path) -> None:
    async with NodeOpcUaServer(tmp_path / "server") as server:
        lines: list[str] = []
        assert await browse(server.endpoint, text_filter="Count", out=lines.append) == 0
        out = "\n".join(lines)
        assert f"[{nid('GoodCount')}]  UInt32 = 0" in out
        assert f"[{nid('AbstractCount')}]  UInteger = 0" in out
        assert f"ns=3 {OUR_URI}" in out
        assert f"nsu={VENDOR_URI};s=Press.GoodCount" in out  # the decoy, in its own namespace

        path = write_config(
            tmp_path,
            server,
            'alarm_node = "ns=7;s=Press.Alarm"',
            good=nid("AbstractRatio"),
            scrap=nid("Ratio"),
            state="nsu=urn:nobody:registered-this;s=Press.State",
        )
        checks = await check_opcua(load_config(path, env={}))  # `edge check`, OPC UA part
        assert [c.ok for c in checks] == [True, False, False, False, False]
        lines = [c.detail for c in checks]
        unknown = next(ln for ln in lines if "urn:nobody:registered-this" in ln)
        assert "the server has no namespace 'urn:nobody:registered-this'" in unknown
        assert f"ns=3 {OUR_URI}" in unknown  # the server's namespace array, to pick from
        double = next(ln for ln in lines if f"{nid('Ratio')}'" in ln)
        assert "has type Double;" in double
        assert "a counter needs an integer type" in double
        number = next(ln for ln in lines if nid("AbstractRatio") in ln)
        assert "has type Number and holds a Double value" in number
        missing = next(ln for ln in lines if "ns=7;s=Press.Alarm" in ln)
        assert "BadNodeIdUnknown" in missing
        assert f"ns=2 {VENDOR_URI}" in missing


def secure(pki: Path) -> str:
    return (
        'security_policy = "Basic256Sha256"\nsecurity_mode = "SignAndEncrypt"\n'
        f'certificate_dir = "{pki}"'
    )


# Three server starts and the trust handshake: 10-15 s on 2 cores, more than the normal suite's
# share for these tests; ./scripts/test --long runs it. (Sign, below, runs in the normal suite.)
@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_sign_and_encrypt_trust_both_ways_then_a_wrap_and_a_restart(
    tmp_path: Path,
) -> None:
    pki = tmp_path / "pki"
    wrap_at = 2**32 - 6
    async with NodeOpcUaServer(tmp_path / "server", secure=True, good=wrap_at) as server:
        cfg = config(tmp_path, server, secure(pki))
        with structlog.testing.capture_logs() as logs:
            async with gateway(cfg) as (engine, link):
                # 1. We do not know the server's certificate: refused, kept under rejected/.
                await until(lambda: "not trusted" in (link.state.last_error or ""), 15, "ours")
                rejected = list((pki / "rejected").glob("*.der"))
                assert len(rejected) == 1
                shutil.move(rejected[0], pki / "trusted" / rejected[0].name)
                # 2. The server does not know ours: one line with the cause and the fix.
                await until(lambda: "own/cert.der" in (link.state.last_error or ""), 15, "its")
                error = link.state.last_error or ""
                assert str(pki / "own" / "cert.der") in error, error
                assert "edge certs" in error
                assert "trust" in error
                seen = link.state.errors
                await until(lambda: link.state.errors > seen, 10, "another retry")
                refusals = [e for e in logs if e.get("reason") == error]
                assert len(refusals) == 1, refusals  # logged once, not at every retry
                # The machine builder puts own/cert.der into the server's trust list and
                # restarts the server: node-opcua reads its trust list at start, and the copy
                # it keeps in its rejected/ folder would still win, so that goes.
                shutil.copy(pki / "own" / "cert.der", server.trusted / "edge-gateway.der")
                assert len(list(server.rejected.iterdir())) == 1
                for copy in server.rejected.iterdir():
                    copy.unlink()
                await server.stop()
                await server.start(good=wrap_at)
                await until(lambda: link.link_status == "ok", 20, "the encrypted session")
                # 3. A UInt32 counter wraps: 6 before the wrap, 4 after it.
                for _ in range(5):
                    await server.add("GoodCount", 2)
                    await asyncio.sleep(0.05)
                assert server.values["GoodCount"] == 4
                await until(lambda: good(engine) == 10, 10, "exact counts across the wrap")
                # 4. A power cycle: counters at 0, a new StartTime.
                connects = link.state.connects
                await server.restart()
                await until(lambda: link.state.connects > connects, 20, "the reconnect")
                await until(lambda: link.link_status == "ok", 20, "the session again")
                for _ in range(7):
                    await server.add("GoodCount", 1)
                    await asyncio.sleep(0.05)
                await until(lambda: good(engine) == 17, 10, "exact counts after the restart")
                await asyncio.sleep(0.5)
                assert good(engine) == 17
        assert not any("Traceback" in str(e) for e in logs)
    code, out = await edge("verify", "--db", str(tmp_path / "edge.db"))
    assert code == 0, out


async def test_sign_with_certificates_trusted_beforehand_and_a_user(tmp_path: Path) -> None:
    """Installed as the README says: `edge certs` made the gateway's certificate, the machine
    builder trusted it before the server started, the server's is in trusted/. The server
    wants a user (node-opcua offers user names only on secure endpoints): a wrong password is
    refused in words and never shown; the right one gets in."""
    from edge.sources.opcua_security import application_uri, ensure_certificate

    pki = tmp_path / "pki"
    own, _ = ensure_certificate(pki, application_uri("press"))
    users = {"tech": "s3cret"}
    server = NodeOpcUaServer(tmp_path / "server", secure=True, sign_only=True, users=users)
    (tmp_path / "server" / "trusted" / "certs").mkdir(parents=True)
    shutil.copy(own, tmp_path / "server" / "trusted" / "certs" / "edge-gateway.der")
    secret = tmp_path / "password"
    secret.write_text("not-it\n")
    async with server:
        cert = next((tmp_path / "server" / "own" / "certs").glob("*.pem"))
        (pki / "trusted" / "server.der").write_bytes(_der(cert))
        extra = secure(pki).replace('"SignAndEncrypt"', '"Sign"')
        extra += f'\nusername = "tech"\npassword_file = "{secret}"'
        async with gateway(config(tmp_path, server, extra)) as (engine, link):
            await until(lambda: link.state.last_error is not None, 15, "the refusal")
            error = link.state.last_error or ""
            assert "refused the user 'tech'" in error, error
            assert "password_file" in error
            assert "not-it" not in error
            secret.write_text("s3cret\n")  # the installer fixes it: the next attempt gets in
            await until(lambda: link.link_status == "ok", 15, "the signed session")
            await server.add("GoodCount", 9)
            await until(lambda: good(engine) == 9, 10, "exact counts")


def _der(pem: Path) -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    return x509.load_pem_x509_certificate(pem.read_bytes()).public_bytes(Encoding.DER)


def test_without_node_the_install_says_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no node, no npm
    with pytest.raises(Unavailable, match="node and npm are needed for node-opcua"):
        npm_install(tmp_path / "npm", "{}", ("node-opcua",), what="node-opcua")


if __name__ == "__main__":  # pragma: no cover - `python tests/opcua/test_nodeopcua.py`
    sys.exit(pytest.main([__file__, "-v"]))
