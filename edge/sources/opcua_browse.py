"""``edge browse``: the address space of an OPC UA server as a tree, to find the counter nodes.

Each variable shows its NodeId with the namespace URI (``nsu=<uri>;s=...``: paste it into
``[[sources.opcua.counters]] node``; unlike ``ns=<index>`` it stays right when the server
registers its namespaces in another order), its browse name, data type (an abstract one such as
``UInteger`` by its name) and current value. The header lists the server's namespace array.
``--filter`` keeps the branches whose name or NodeId (either form) contains the text.

A server that offers only secure endpoints is browsed with the source's options
(``--security-policy``, ``--security-mode``, the gateway's certificate in ``--certificate-dir``
or ``--certificate``/``--private-key``, the server's certificate trusted there or given as
``--server-certificate``, ``--user`` and ``--password-file``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from asyncua import ua
from asyncua.client.client import Client
from asyncua.common.node import Node
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.uaerrors import UaError

from edge.errors import SourceUnavailable
from edge.sources.opcua_errors import PhasedClient, Where, explain, quiet_asyncua

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
    index_id: str = ""  # the same NodeId with the namespace index (ns=2;...)


@dataclass(frozen=True, slots=True)
class Security:
    """What ``edge browse`` signs (and encrypts) with; the defaults are the source's."""

    policy: str = "None"
    mode: str = "None"
    certificate_dir: Path = Path("/var/lib/edge-gateway/pki")
    certificate: Path | None = None
    private_key: Path | None = None
    server_certificate: Path | None = None
    user: str | None = None
    password_file: Path | None = None


def uri_id(node_id: ua.NodeId, namespaces: list[str]) -> str:
    """``nsu=<uri>;s=...`` for a node outside namespace 0 (``i=85`` stays as it is)."""
    text: str = node_id.to_string()
    ns = node_id.NamespaceIndex
    if ns == 0 or ns >= len(namespaces):
        return text
    _, _, rest = text.partition(";")
    return f"nsu={namespaces[ns]};{rest}"


async def walk(
    client: Client,
    start: Node,
    *,
    max_depth: int,
    include_server: bool,
    namespaces: list[str] | None = None,
) -> list[Entry]:
    entries: list[Entry] = []
    names = namespaces or []

    async def visit(node: Node, depth: int) -> None:
        if len(entries) >= MAX_NODES or depth > max_depth:
            return
        for child in await node.get_children():
            if not include_server and child.nodeid == SERVER_NODE:
                continue
            name = (await child.read_browse_name()).to_string()
            cls = await child.read_node_class()
            node_id = uri_id(child.nodeid, names)
            entry = Entry(depth, node_id, name, cls.name, index_id=child.nodeid.to_string())
            if cls == ua.NodeClass.Variable:
                try:
                    vtype = await child.read_data_type_as_variant_type()
                    entry.data_type = vtype.name
                    if vtype is ua.VariantType.Variant:  # abstract (UInteger, Number): its name
                        dtype = client.get_node(await child.read_data_type())
                        entry.data_type = (await dtype.read_browse_name()).Name
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
            if needle in f"{e.name}\n{e.node_id}\n{e.index_id}".lower():
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


async def _secure(client: PhasedClient, endpoint: str, sec: Security, timeout_s: float) -> None:
    if sec.user:
        client.set_user(sec.user)
        if sec.password_file is not None:
            try:
                client.set_password(sec.password_file.read_text().splitlines()[0].strip())
            except (OSError, IndexError) as exc:
                reason = getattr(exc, "strerror", None) or "empty"
                raise SourceUnavailable(
                    f"--password-file {sec.password_file} cannot be read: {reason}"
                ) from None
    if sec.policy == "None":
        return
    from edge.sources.opcua_security import application_uri, secure_client

    await secure_client(
        client,
        endpoint=endpoint,
        policy_name=sec.policy,
        mode_name=sec.mode,
        certificate_dir=sec.certificate_dir,
        uri=application_uri("browse"),
        timeout_s=timeout_s,
        certificate=sec.certificate,
        private_key=sec.private_key,
        server_certificate=sec.server_certificate,
    )


async def browse(
    endpoint: str,
    *,
    text_filter: str | None = None,
    max_depth: int = 8,
    include_server: bool = False,
    timeout_s: float = 5.0,
    security: Security | None = None,
    out: Callable[[str], None] = print,
) -> int:
    sec = security or Security()
    quiet_asyncua()
    client = PhasedClient(endpoint, timeout=timeout_s)
    where = Where(
        endpoint,
        secure=sec.policy != "None",
        own_cert=sec.certificate or sec.certificate_dir / "own" / "cert.der",
        username=sec.user,
        timeout_s=timeout_s,
    )
    try:
        await _secure(client, endpoint, sec, timeout_s)
        async with client:
            namespaces = [str(uri) for uri in await client.get_namespace_array()]
            entries = await walk(
                client,
                client.nodes.objects,
                max_depth=max_depth,
                include_server=include_server,
                namespaces=namespaces,
            )
    except SourceUnavailable as exc:
        out(f"cannot browse {endpoint}: {exc}")
        return 1
    except (OSError, TimeoutError, UaError, AssertionError, EOFError) as exc:
        out(f"cannot browse {endpoint}: {explain(exc, where, client.phase)}")
        return 1
    lines = render(entries, text_filter)
    security_text = f"{sec.policy}/{sec.mode}" if sec.policy != "None" else "no security"
    out(
        f"{endpoint} ({security_text}): {len(entries)} nodes"
        + (f", {len(lines)} shown" if text_filter else "")
    )
    out("namespaces: " + ", ".join(f"ns={i} {uri}" for i, uri in enumerate(namespaces)))
    for line in lines:
        out(line)
    return 0
