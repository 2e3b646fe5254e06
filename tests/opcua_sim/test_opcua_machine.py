"""The OPC UA machine simulator, checked with a real asyncua Client over TCP (no mocks)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from asyncua import ua
from asyncua.client.client import Client
from asyncua.crypto.security_policies import (
    SecurityPolicyAes128Sha256RsaOaep,
    SecurityPolicyAes256Sha256RsaPss,
    SecurityPolicyBasic256Sha256,
)
from asyncua.ua.status_codes import StatusCodes
from asyncua.ua.uaerrors import UaError, UaStatusCodeError

from simulators.opcua_machine import MachineSimulator, ensure_certificate, free_port

pytestmark = pytest.mark.timeout(30)

CLIENT_URI = "urn:edge-gateway:test:client"
FAST: dict[str, Any] = {"cycle_s": 0.05, "jitter": 0.1, "seed": 7}


async def wait_value(
    client: Client, node_id: str, predicate: Callable[[Any], bool], timeout: float = 5.0
) -> Any:
    """Poll a node through the client until predicate(value) holds."""

    async def _poll() -> Any:
        while True:
            value = await client.get_node(node_id).read_value()
            if predicate(value):
                return value
            await asyncio.sleep(0.02)

    return await asyncio.wait_for(_poll(), timeout)


async def test_browse_finds_nodes_by_id() -> None:
    async with MachineSimulator(**FAST) as sim, Client(sim.endpoint, timeout=5) as client:
        ids = sim.node_ids
        ns = await client.get_namespace_index("urn:edge-gateway:simulator:machine")
        assert ns == 2
        assert ids["good"] == "ns=2;s=Press07.Counters.GoodCount"
        assert ids["state"] == "ns=2;s=Press07.MachineryItemState.CurrentState"
        assert ids["packml_state_number"] == "ns=2;s=Press07.PackML.StateCurrent"

        # Browse Objects -> Machines -> Press07 -> Counters -> GoodCount by browse names ...
        good = await client.nodes.objects.get_child(
            ["2:Machines", "2:Press07", "2:Counters", "2:GoodCount"]
        )
        assert good.nodeid.to_string() == ids["good"]
        machine = client.get_node(ids["machine"])
        children = {(await c.read_browse_name()).Name for c in await machine.get_children()}
        assert {
            "Identification",
            "MachineryItemState",
            "MachineryOperationMode",
            "Counters",
            "Alarm",
            "PackML",
            "Job",
        } <= children
        # ... and every documented node id reads.
        for role, node_id in ids.items():
            if role in ("machine", "machines"):
                continue
            await client.get_node(node_id).read_value()
        assert await client.get_node(ids["manufacturer"]).read_value()
        dv = await client.get_node(ids["total"]).read_data_value()
        assert dv.Value is not None
        assert dv.Value.VariantType == ua.VariantType.UInt32
        assert await client.get_node(ids["state"]).read_value() == "NotExecuting"
        assert await client.get_node(ids["packml_state"]).read_value() == "Idle"
        assert await client.get_node(ids["packml_state_number"]).read_value() == 4


async def test_counts_while_running_not_while_down_and_alarm() -> None:
    async with MachineSimulator(**FAST, scrap_rate=0.3) as sim, Client(sim.endpoint) as client:
        ids = sim.node_ids
        await sim.run()
        assert await client.get_node(ids["state"]).read_value() == "Executing"
        assert await client.get_node(ids["packml_state_number"]).read_value() == 6
        await wait_value(client, ids["total"], lambda v: v >= 8)

        await sim.stop(alarm="E-217")
        assert await client.get_node(ids["alarm"]).read_value() == "E-217"
        assert await client.get_node(ids["state"]).read_value() == "OutOfService"
        assert await client.get_node(ids["packml_state"]).read_value() == "Aborted"
        frozen = [await client.get_node(ids[k]).read_value() for k in ("good", "scrap", "total")]
        assert frozen[0] + frozen[1] == frozen[2]
        await asyncio.sleep(0.4)  # ~8 cycles
        assert [await client.get_node(ids[k]).read_value() for k in ("good", "scrap", "total")] == (
            frozen
        )

        await sim.run()
        assert await client.get_node(ids["alarm"]).read_value() == ""
        await wait_value(client, ids["total"], lambda v: v >= frozen[2] + 3)

        await sim.setup(program="PRG-200", order="4712")
        assert await client.get_node(ids["mode"]).read_value() == "Setup"
        assert await client.get_node(ids["order"]).read_value() == "4712"
        await sim.idle()
        assert await client.get_node(ids["state"]).read_value() == "NotExecuting"
        assert sim.values["packml_state_number"] == 4
        await sim.stop()
        assert await client.get_node(ids["packml_state"]).read_value() == "Stopped"
        assert await client.get_node(ids["alarm"]).read_value() == ""


async def test_16_bit_counter_wraps() -> None:
    async with (
        MachineSimulator(**FAST, bits=16, scrap_rate=0.0) as sim,
        Client(sim.endpoint) as client,
    ):
        ids = sim.node_ids
        await sim.set_counter(good=2**16 - 3, scrap=0)
        dv = await client.get_node(ids["good"]).read_data_value()
        assert dv.Value is not None
        assert dv.Value.VariantType == ua.VariantType.UInt16
        assert dv.Value.Value == 65533
        await sim.run()
        seen = await wait_value(client, ids["good"], lambda v: v < 100)
        assert seen < 10
        assert await client.get_node(ids["total"]).read_value() < 100
        # set_counter itself is taken modulo 2**bits
        await sim.set_counter(good=2**16 + 5)
        assert sim.values["good"] == 5


async def test_32_bit_counter_wraps() -> None:
    async with MachineSimulator(**FAST, scrap_rate=0.0) as sim, Client(sim.endpoint) as client:
        await sim.set_counter(good=2**32 - 2)
        await sim.run()
        assert await wait_value(client, sim.node_ids["good"], lambda v: v < 100) < 10


async def test_restart_resets_counters_and_start_time() -> None:
    async with MachineSimulator(**FAST) as sim:
        ids = sim.node_ids
        await sim.run()
        async with Client(sim.endpoint) as client:
            start1 = await client.get_node(ids["start_time"]).read_value()
            await wait_value(client, ids["total"], lambda v: v >= 10)
            port = sim.port
            await asyncio.wait_for(sim.restart(), 10)
            # the old connection is gone (TCP closed): a read on it fails at once
            with pytest.raises(ConnectionError):
                await asyncio.wait_for(client.get_node(ids["total"]).read_value(), 3)
        assert sim.port == port
        async with Client(sim.endpoint) as client:
            start2 = await client.get_node(ids["start_time"]).read_value()
            assert start2 > start1
            assert start2 == sim.start_time
            total = await client.get_node(ids["total"]).read_value()
            assert total < 10  # reset to 0, a few parts since
            assert await client.get_node(ids["state"]).read_value() == "Executing"
            await wait_value(client, ids["total"], lambda v: v > total)


async def test_subscription_receives_data_changes() -> None:
    changes: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

    class Handler:
        def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
            changes.put_nowait((node.nodeid.to_string(), val))

    async with MachineSimulator(**FAST) as sim, Client(sim.endpoint) as client:
        ids = sim.node_ids
        sub = await client.create_subscription(20, Handler())
        await sub.subscribe_data_change(
            [client.get_node(ids[k]) for k in ("total", "alarm", "state")]
        )
        await sim.run()
        await sim.stop(alarm="E-105")

        async def _collect() -> dict[str, list[Any]]:
            seen: dict[str, list[Any]] = {}
            while "E-105" not in seen.get(ids["alarm"], []) or len(seen.get(ids["total"], [])) < 2:
                node_id, val = await changes.get()
                seen.setdefault(node_id, []).append(val)
            return seen

        await sim.run()
        seen = await asyncio.wait_for(_collect(), 5)
        assert seen[ids["total"]][-1] > seen[ids["total"]][0]
        assert "OutOfService" in seen[ids["state"]]
        await sub.delete()


@pytest.mark.parametrize(
    ("security", "mode"),
    [("sign", ua.MessageSecurityMode.Sign), ("encrypt", ua.MessageSecurityMode.SignAndEncrypt)],
)
async def test_basic256sha256_with_client_cert_and_password(
    tmp_path: Path, security: Any, mode: ua.MessageSecurityMode
) -> None:
    cert, key = ensure_certificate(tmp_path / "client", CLIENT_URI, "test client", client=True)
    users = {"operator": "s3cret"}
    sim = MachineSimulator(**FAST, security=security, cert_dir=tmp_path / "server", users=users)
    async with sim:
        assert sim.cert_path == tmp_path / "server" / "server_cert.der"
        assert (tmp_path / "server" / "server_key.pem").exists()

        async def connect(password: str | None, policy: Any = SecurityPolicyBasic256Sha256) -> Any:
            client = Client(sim.endpoint, timeout=5)
            client.application_uri = CLIENT_URI
            if password is not None:
                client.set_user("operator")
                client.set_password(password)
            await client.set_security(
                policy, str(cert), str(key), server_certificate=str(sim.cert_path), mode=mode
            )
            await asyncio.wait_for(client.connect(), 10)
            try:
                return await client.get_node(sim.node_ids["state"]).read_value()
            finally:
                await client.disconnect()

        assert await connect("s3cret") == "NotExecuting"
        for policy in (SecurityPolicyAes128Sha256RsaOaep, SecurityPolicyAes256Sha256RsaPss):
            assert await connect("s3cret", policy) == "NotExecuting"
        with pytest.raises(UaStatusCodeError) as wrong:
            await connect("wrong")
        assert wrong.value.code == StatusCodes.BadUserAccessDenied
        with pytest.raises(UaStatusCodeError):
            await connect(None)  # anonymous is not offered when users are configured
        # an unsecured connection is not offered at all
        plain = Client(sim.endpoint, timeout=5)
        plain.set_user("operator")
        plain.set_password("s3cret")
        with pytest.raises(UaError, match="No matching endpoints"):
            await asyncio.wait_for(plain.connect(), 10)
        await plain.disconnect()


async def test_trust_dir_rejects_unknown_client_cert(tmp_path: Path) -> None:
    trusted_cert, trusted_key = ensure_certificate(
        tmp_path / "trusted", CLIENT_URI, "trusted", client=True
    )
    other_cert, other_key = ensure_certificate(tmp_path / "other", CLIENT_URI, "other", client=True)
    trust_dir = tmp_path / "trust"
    trust_dir.mkdir()
    (trust_dir / "client.der").write_bytes(trusted_cert.read_bytes())
    async with MachineSimulator(
        **FAST, security="encrypt", cert_dir=tmp_path / "server", trust_dir=trust_dir
    ) as sim:

        async def connect(cert: Path, key: Path) -> Any:
            client = Client(sim.endpoint, timeout=5)
            client.application_uri = CLIENT_URI
            await client.set_security(
                SecurityPolicyBasic256Sha256,
                str(cert),
                str(key),
                server_certificate=str(sim.cert_path),
            )
            await asyncio.wait_for(client.connect(), 10)
            try:
                return await client.get_node(sim.node_ids["state"]).read_value()
            finally:
                await client.disconnect()

        assert await connect(trusted_cert, trusted_key) == "NotExecuting"
        with pytest.raises(UaStatusCodeError) as untrusted:
            await connect(other_cert, other_key)
        assert untrusted.value.code == StatusCodes.BadCertificateUntrusted


async def test_scenario_mode_runs_and_stops_with_alarms() -> None:
    async with MachineSimulator(cycle_s=0.01, jitter=0.2, seed=3) as sim:
        sim.start_scenario(alarms=("E-900",))
        assert await sim.wait_for("alarm", lambda a: a == "E-900", timeout=5) == "E-900"
        assert sim.values["state"] == "OutOfService"
        assert await sim.wait_for("alarm", lambda a: a == "", timeout=5) == ""
        assert sim.values["total"] > 0


async def test_cancelled_owner_stops_the_server() -> None:
    sim = MachineSimulator(**FAST)
    entered = asyncio.Event()

    async def owner() -> None:
        async with sim:
            await sim.run()
            entered.set()
            await asyncio.sleep(60)

    task = asyncio.create_task(owner())
    await asyncio.wait_for(entered.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 10)
    assert not sim.running
    with pytest.raises(ConnectionRefusedError):
        await asyncio.wait_for(asyncio.open_connection(sim.host, sim.port), 2)


def test_cli_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "simulators.opcua_machine",
            "--port",
            str(port),
            "--cycle-s",
            "0.05",
            "--bits",
            "16",
            "--start-value",
            "65530",
        ],
        stdout=subprocess.PIPE,
        stderr=(tmp_path / "stderr.log").open("wb"),
        cwd=Path(__file__).resolve().parents[2],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline().decode()
        assert f"opc.tcp://127.0.0.1:{port} ready" in first, (tmp_path / "stderr.log").read_text()

        async def check() -> None:
            async with Client(f"opc.tcp://127.0.0.1:{port}") as client:
                node = "ns=2;s=Press07.Counters.GoodCount"
                assert await wait_value(client, node, lambda v: v < 65530, timeout=5) < 100

        asyncio.run(asyncio.wait_for(check(), 15))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(timeout=10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
