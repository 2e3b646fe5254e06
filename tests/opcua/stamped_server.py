"""A bare OPC UA server whose values carry the timestamps a test chooses, and whose clock may
run off ours: for the OPC UA source's time rules.

It serves the four nodes the tests' config reads, under the machine simulator's node ids
(Machinery state and operation mode, the alarm code, a good counter), and computes
``ServerStatus.CurrentTime`` on every read, ``skew_s`` off our clock, as a PLC does.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any

from asyncua import ua
from asyncua.server.server import Server

from simulators.opcua_machine import NAMESPACE_URI, free_port

MACHINE = "Press07"
NODES: dict[str, tuple[str, ua.VariantType, Any]] = {
    "state": ("MachineryItemState.CurrentState", ua.VariantType.String, "Executing"),
    "mode": ("MachineryOperationMode.CurrentState", ua.VariantType.String, "Processing"),
    "alarm": ("Alarm.ActiveAlarmCode", ua.VariantType.String, ""),
    "good": ("Counters.GoodCount", ua.VariantType.UInt32, 0),
}
CURRENT_TIME = ua.NodeId(ua.ObjectIds.Server_ServerStatus_CurrentTime)


class StampedServer:
    def __init__(self, *, skew_s: float = 0.0) -> None:
        self.skew = timedelta(seconds=skew_s)
        self.port = free_port()
        self.node_ids: dict[str, str] = {}
        self._server: Server | None = None
        self._nodes: dict[str, ua.NodeId] = {}

    @property
    def endpoint(self) -> str:
        return f"opc.tcp://127.0.0.1:{self.port}"

    def now(self) -> datetime:
        """The time by the server's clock."""
        return datetime.now(UTC) + self.skew

    async def __aenter__(self) -> StampedServer:
        server = Server()
        await server.init()
        server.set_endpoint(self.endpoint)
        server.disable_clock()  # CurrentTime is computed on each read instead
        ns = await server.register_namespace(NAMESPACE_URI)
        for role, (path, vtype, value) in NODES.items():
            nodeid = ua.NodeId(f"{MACHINE}.{path}", ns)
            await server.nodes.objects.add_variable(
                nodeid, ua.QualifiedName(path, ns), value, varianttype=vtype
            )
            self._nodes[role] = nodeid
            self.node_ids[role] = nodeid.to_string()
        await server.start()
        self._server = server
        server.set_attribute_value_callback(CURRENT_TIME, self._current_time)
        for role, (_, _, value) in NODES.items():
            await self.write(role, value)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        server, self._server = self._server, None
        if server is not None:
            with contextlib.suppress(Exception):
                await server.stop()

    def _current_time(self, nodeid: ua.NodeId, attr: ua.AttributeIds) -> ua.DataValue:
        now = self.now()
        return ua.DataValue(
            ua.Variant(now, ua.VariantType.DateTime), SourceTimestamp=now, ServerTimestamp=now
        )

    async def write(self, role: str, value: Any, at: datetime | None = None) -> datetime:
        """Set a node's value, stamped ``at`` (default: now by the server's clock)."""
        assert self._server is not None
        stamp = at or self.now()
        dv = ua.DataValue(
            ua.Variant(value, NODES[role][1]), SourceTimestamp=stamp, ServerTimestamp=stamp
        )
        await self._server.write_attribute_value(self._nodes[role], dv)
        return stamp
