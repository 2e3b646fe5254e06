"""OPC UA node references as the config writes them, parsed without a server.

A reference is a NodeId or a browse path:

- NodeId, in the OPC UA string form (OPC 10000-6, 5.3.1.10): ``ns=<index>;<t>=<id>``,
  ``nsu=<namespace uri>;<t>=<id>`` or ``<t>=<id>`` (namespace 0), where ``<t>`` is ``i``
  (a number), ``s`` (a string), ``g`` (a GUID) or ``b`` (base64 bytes). A namespace index is
  only valid on one server (another namespace registered first moves it); a namespace URI is
  resolved against the server's NamespaceArray at each connect.
- Browse path, from the root: segments separated by ``/``, each a browse name as ``Name``
  (namespace 0), ``<index>:Name`` or ``nsu=<namespace uri>;Name`` (the URI may contain ``/``),
  e.g. ``Objects/nsu=urn:acme:press;Press07/nsu=urn:acme:press;GoodCount``.

The config checks every reference with :func:`parse_node_ref` (a bad one is refused with the
reason); the OPC UA source resolves the parsed form against the server.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Final

NODE_ID_PREFIXES: Final = ("nsu=", "ns=", "i=", "s=", "g=", "b=")
_GUID: Final = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
_UINT32: Final = 2**32 - 1
_UINT16: Final = 2**16 - 1


@dataclass(frozen=True, slots=True)
class Namespace:
    """Either an index (``ns=``, ``2:``) or a URI (``nsu=``); neither: namespace 0."""

    index: int | None = None
    uri: str | None = None

    def text(self) -> str:
        if self.uri is not None:
            return f"nsu={self.uri}"
        return f"ns={self.index or 0}"


@dataclass(frozen=True, slots=True)
class ParsedNodeId:
    namespace: Namespace
    kind: str  # "i", "s", "g", "b"
    identifier: str  # as written (a number, a string, a GUID or base64)


@dataclass(frozen=True, slots=True)
class PathSegment:
    namespace: Namespace
    name: str


@dataclass(frozen=True, slots=True)
class ParsedPath:
    segments: tuple[PathSegment, ...]


ParsedRef = ParsedNodeId | ParsedPath


def is_node_id(ref: str) -> bool:
    return ref.startswith(NODE_ID_PREFIXES)


def parse_node_ref(ref: str) -> ParsedRef:
    """The reference parsed; ValueError says what is wrong with it."""
    if not ref.strip():
        raise ValueError("empty node reference")
    if is_node_id(ref):
        return parse_node_id(ref)
    return parse_path(ref)


def parse_node_id(text: str) -> ParsedNodeId:
    namespace = Namespace()
    rest = text
    if text.startswith("nsu="):
        uri, sep, rest = text[4:].partition(";")
        if not sep or not uri.strip():
            raise ValueError(
                "an nsu= node id is nsu=<namespace uri>;<i|s|g|b>=<id>, "
                "e.g. nsu=urn:acme:press;s=Press07.GoodCount"
            )
        namespace = Namespace(uri=uri)
    elif text.startswith("ns="):
        index, sep, rest = text[3:].partition(";")
        if not sep or not index.isdigit() or int(index) > _UINT16:
            raise ValueError(
                "an ns= node id is ns=<namespace index>;<i|s|g|b>=<id>, e.g. ns=2;s=Press07.Good"
            )
        namespace = Namespace(index=int(index))
    kind, sep, identifier = rest.partition("=")
    if not sep or kind not in ("i", "s", "g", "b"):
        raise ValueError("the identifier must be i=<number>, s=<string>, g=<guid> or b=<base64>")
    if not identifier:
        raise ValueError(f"the {kind}= identifier is empty")
    if kind == "i" and not (identifier.isdigit() and int(identifier) <= _UINT32):
        raise ValueError("an i= identifier is a number 0..4294967295")
    if kind == "g" and not _GUID.match(identifier):
        raise ValueError("a g= identifier is a GUID like 72962b91-fa75-4ae6-8d28-b404dc7daf63")
    if kind == "b":
        try:
            base64.b64decode(identifier, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("a b= identifier is base64") from None
    return ParsedNodeId(namespace, kind, identifier)


def parse_path(text: str) -> ParsedPath:
    segments: list[PathSegment] = []
    rest = text.strip("/")
    while rest:
        if rest.startswith("/"):
            rest = rest[1:]  # an empty segment ("a//b") is skipped, as before
            continue
        namespace = Namespace()
        if rest.startswith("nsu="):
            uri, sep, rest = rest[4:].partition(";")
            if not sep or not uri.strip():
                raise ValueError(
                    "a browse path segment with a namespace URI is nsu=<namespace uri>;<Name>"
                )
            namespace = Namespace(uri=uri)
        name, _, rest = rest.partition("/")
        if namespace.uri is None:
            head, colon, tail = name.partition(":")
            if colon and head.isdigit():
                if int(head) > _UINT16:
                    raise ValueError(f"namespace index {head} out of range in {name!r}")
                namespace, name = Namespace(index=int(head)), tail
        if not name:
            raise ValueError("a browse path segment has an empty name")
        segments.append(PathSegment(namespace, name))
    if not segments:
        raise ValueError("empty browse path")
    return ParsedPath(tuple(segments))
