"""``edge browse``: the address space of an OPC UA server as a tree, to find the counter nodes.

Each variable shows its NodeId (paste it into ``[[sources.opcua.counters]] node``), its browse
name, data type and current value. ``--filter`` keeps the branches whose name or NodeId contains
the text.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from asyncua import ua
from asyncua.client.client import Client
from asyncua.common.node import Node
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.uaerrors import UaError

MAX_NODES = 20_000
SERVER_NODE = ua.NodeId.from_string(f"i={ObjectIds.Server}")


@dataclass(slots=True)
class Entry:
    depth: int
    node_id: str
    name: str
    node_class: str
    data_type: str = ""
    value: str = ""


async def walk(client: Client, start: Node, *, max_depth: int, include_server: bool) -> list[Entry]:
    entries: list[Entry] = []

    async def visit(node: Node, depth: int) -> None:
        if len(entries) >= MAX_NODES or depth > max_depth:
            return
        for child in await node.get_children():
            if not include_server and child.nodeid == SERVER_NODE:
                continue
            name = (await child.read_browse_name()).to_string()
            cls = await child.read_node_class()
            entry = Entry(depth, child.nodeid.to_string(), name, cls.name)
            if cls == ua.NodeClass.Variable:
                try:
                    entry.data_type = (await child.read_data_type_as_variant_type()).name
                    entry.value = repr(await child.read_value())[:60]
                except (UaError, ValueError) as exc:
                    entry.value = f"<{type(exc).__name__}>"
            entries.append(entry)
            if cls == ua.NodeClass.Object or cls == ua.NodeClass.Variable:
                await visit(child, depth + 1)

    await visit(start, 0)
    return entries


def render(entries: list[Entry], text_filter: str | None) -> list[str]:
    keep = set(range(len(entries)))
    if text_filter:
        needle = text_filter.lower()
        keep = set()
        for i, e in enumerate(entries):
            if needle in e.name.lower() or needle in e.node_id.lower():
                keep.add(i)
                # keep the ancestors so the match reads in its place
                depth = e.depth
                for j in range(i - 1, -1, -1):
                    if entries[j].depth < depth:
                        keep.add(j)
                        depth = entries[j].depth
    lines = []
    for i, e in enumerate(entries):
        if i not in keep:
            continue
        pad = "  " * e.depth
        if e.node_class == "Variable":
            lines.append(f"{pad}{e.name}  [{e.node_id}]  {e.data_type} = {e.value}")
        else:
            lines.append(f"{pad}{e.name}  [{e.node_id}]")
    return lines


async def browse(
    endpoint: str,
    *,
    text_filter: str | None = None,
    max_depth: int = 8,
    include_server: bool = False,
    timeout_s: float = 5.0,
    out: Callable[[str], None] = print,
) -> int:
    client = Client(endpoint, timeout=timeout_s)
    try:
        async with client:
            entries = await walk(
                client, client.nodes.objects, max_depth=max_depth, include_server=include_server
            )
    except (OSError, TimeoutError, UaError) as exc:
        out(f"cannot browse {endpoint}: {type(exc).__name__}: {exc}")
        return 1
    lines = render(entries, text_filter)
    out(f"{endpoint}: {len(entries)} nodes" + (f", {len(lines)} shown" if text_filter else ""))
    for line in lines:
        out(line)
    return 0
