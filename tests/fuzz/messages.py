"""Downlink messages generated from the published contract: valid, extreme, and broken.

Everything comes from the committed JSON Schemas of the DOWN topics (``contract/schemas``; which
topic has which schema is ``edge.sync.contract.TOPICS``), through hypothesis and
hypothesis-jsonschema:

- ``valid``: what ``hypothesis_jsonschema.from_schema`` makes of the whole payload schema;
- ``extreme``: schema-valid payloads built from the bounds (minimum, exclusiveMinimum, maxLength,
  maxItems), huge and tiny floats, long and odd unicode strings, empty and full arrays, integers
  far beyond 64 bits;
- ``mutated``: a valid payload with one structural change (wrong type, missing or extra field,
  out of bounds, another topic's schema name, body not an object);
- ``raw``: a payload changed at the text level, where a JSON encoder cannot go: number literals
  such as ``1E+5000`` or 5,000 digits, ``NaN``/``Infinity``, nesting up to 100,000 levels within
  the size limit, duplicate keys, bytes that are not UTF-8, escaped lone surrogates, oversize and
  exactly-at-the-limit payloads, truncated or empty text;
- ``reuse``: a broken body under the msg_id of an earlier message on another topic, and exact
  resends of earlier messages (a broker redelivery);
- ``relay``: the ERP relay's ``relay/state``, well-formed and garbled.

:func:`generate` draws ``n`` of them for a seed: the same seed gives the same bytes. Each
message carries what the gateway must do with it (:class:`FuzzMessage`).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import os
import pickle
import random
import re
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Final

import jsonschema  # type: ignore[import-untyped]
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from hypothesis_jsonschema import from_schema

from edge.sync.contract import MAX_INBOUND_BYTES, TOPICS

REPO: Final = Path(__file__).resolve().parents[2]
SCHEMAS: Final = REPO / "contract" / "schemas"
RELAY: Final = "relay/state"  # stands for umh/v1/<enterprise>/_mes_v1/relay/state
DOWN: Final = tuple(t.path for t in TOPICS if t.direction == "down")
RESYNC: Final = "_mes_v1/cmd/resync"

Json = Any


# ------------------------------------------------------------------------------ the schemas


@functools.cache
def schema_of(path: str) -> dict[str, Any]:
    """The committed JSON Schema of a down topic's whole payload (envelope included)."""
    schema: dict[str, Any] = json.loads((SCHEMAS / f"{path.replace('/', '.')}.json").read_text())
    return schema


@functools.cache
def _validator(path: str) -> jsonschema.protocols.Validator:
    schema = schema_of(path)
    validator: jsonschema.protocols.Validator = jsonschema.validators.validator_for(schema)(schema)
    return validator


def schema_valid(path: str, payload: bytes) -> bool | None:
    """Whether ``payload`` is strict JSON that the topic's published schema accepts (None: it is
    not strict JSON, so the schema says nothing)."""
    data = strict_json(payload)
    if data is _NOT_JSON:
        return None
    return bool(_validator(path).is_valid(data))


class _NotJson:
    pass


_NOT_JSON: Final = _NotJson()


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError("duplicate key")
    return dict(pairs)


def strict_json(payload: bytes) -> Json:
    """RFC 8259 JSON in UTF-8 without NaN/Infinity or duplicate keys, or ``_NOT_JSON``."""
    try:
        return json.loads(
            payload.decode("utf-8"),
            parse_constant=_no_constant,
            object_pairs_hook=_no_duplicates,
        )
    except (ValueError, RecursionError):
        return _NOT_JSON


# ------------------------------------------------------------------------------ the message


@dataclass(frozen=True, slots=True)
class FuzzMessage:
    """One generated message and what the gateway must do with it.

    ``msg_ids``: the msg_id values the gateway may quote back when it refuses the message;
    ``None`` among them means it may also answer without one. A message whose msg_id is
    readable (strict JSON within the size limit, a string of 1-64 characters) allows only that
    id. ``must_reject``: the gateway can only refuse it (not JSON, a field the model forbids or
    misses, the wrong shape); ``duplicate_of``: an exact resend, which may go unanswered.
    """

    index: int
    topic: str  # relative to the root, or RELAY
    payload: bytes
    kind: str
    msg_ids: frozenset[str | None]
    must_reject: bool
    schema_valid: bool | None
    duplicate_of: int | None = None

    def repro(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "message_kind": self.kind,
            "payload": self.payload.decode("utf-8", "backslashreplace")
            if len(self.payload) <= 600
            else f"<{len(self.payload)} bytes> "
            + self.payload[:300].decode("utf-8", "backslashreplace")
            + " ... "
            + self.payload[-100:].decode("utf-8", "backslashreplace"),
            "payload_hex_head": self.payload[:120].hex(),
        }


@dataclass(slots=True)
class Draft:
    """What a strategy draws; :func:`_finish` gives it its msg_id and turns it into bytes."""

    topic: str
    kind: str
    data: Json
    must_reject: bool = False
    # text-level changes, applied after encoding: (sentinel, raw replacement)
    raw: list[tuple[str, bytes]] = field(default_factory=list)
    # a transformation of the final bytes (encodings, truncation, padding)
    post: Callable[[bytes], bytes] | None = None
    id_style: str = "uuid"  # uuid | long | short | keep
    reuse: str | None = None  # "other_topic" | "resend"


# ------------------------------------------------------------------------------ schema walking


def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        ref = schema["$ref"]
        assert ref.startswith("#/"), ref
        node: Any = root
        for part in ref[2:].split("/"):
            node = node[part]
        schema = node
    return schema


TEXT_CHARS: Final = st.characters(codec="utf-8", exclude_categories=["Cs"])
ODD_TEXT: Final = (
    "\u0000",
    " ",
    "\t\n",
    "\u200b",  # zero width space
    "\u202e",  # right-to-left override
    "e\u0301",  # combining accent
    "\U0001f3ed",  # factory emoji (astral)
    "\ufeff",
    "\uffff",
    "Ä",
    "'\"\\",
    "<script>",
    "%s%n",
    "../..",
)
BIG_INTS: Final = (
    2**31 - 1,
    2**31,
    2**53 + 1,
    2**63 - 1,
    2**63,
    2**64,
    10**30,
    10**300,
)
ODD_FLOATS: Final = (
    5e-324,
    2.2250738585072014e-308,
    1e-300,
    1e-7,
    0.1,
    1e15 + 0.3,
    1e300,
    1.7976931348623157e308,
)
NUMERIC_TEXT: Final = (
    "0",
    "-0",
    "1",
    "0.5",
    "1E+5000",
    "1E-400",
    "1e308",
    "9" * 400,
    "0." + "0" * 300 + "1",
    "12.50",
    "NaN",
    "Infinity",
    "-1",
    "1_000",
    " 1",
    "",
)


def _int_strategy(s: dict[str, Any]) -> st.SearchStrategy[int]:
    low = s.get("minimum")
    if "exclusiveMinimum" in s:
        low = int(s["exclusiveMinimum"]) + 1
    high = s.get("maximum")
    if "exclusiveMaximum" in s:
        high = int(s["exclusiveMaximum"]) - 1
    edges = [v for v in (low, high) if v is not None]
    edges += [e + d for e in edges for d in (1, -1)]
    edges += [*BIG_INTS, 0, -1, -(2**63), -(10**30)]
    ok = sorted({v for v in edges if (low is None or v >= low) and (high is None or v <= high)})
    return st.one_of(st.sampled_from(ok), st.integers(min_value=low, max_value=high))


def _number_strategy(s: dict[str, Any]) -> st.SearchStrategy[int | float]:
    low = s.get("minimum", s.get("exclusiveMinimum"))
    exclusive = "exclusiveMinimum" in s
    high = s.get("maximum")
    values: list[float] = [*ODD_FLOATS, *(-v for v in ODD_FLOATS), 0.0, -0.0, 1.0]

    def ok(v: float) -> bool:
        if low is not None and (v < low or (exclusive and v <= low)):
            return False
        return high is None or v <= high

    edges: list[int | float] = [v for v in values if ok(v)]
    edges += [v for v in BIG_INTS if ok(v)]
    if low is not None and not exclusive:
        edges.append(low)
    floats = st.floats(
        min_value=low,
        max_value=high,
        exclude_min=exclusive and low is not None,
        allow_nan=False,
        allow_infinity=False,
    )
    return st.one_of(st.sampled_from(edges), floats)


def _string_strategy(s: dict[str, Any]) -> st.SearchStrategy[str]:
    low = s.get("minLength", 0)
    high = s.get("maxLength")
    if "pattern" in s:
        # the patterned ones (idents, HH:MM) through hypothesis-jsonschema, plus full-width
        # characters at the maximum length, which the ident pattern allows
        regex: st.SearchStrategy[str] = from_schema(s)  # type: ignore[assignment]
        if high is None:
            return regex
        wide = st.sampled_from(["\uff19", "\U0001f3ed", "\u00c4", "x", "\u200b"]).map(
            lambda c: c * high
        )
        return st.one_of(regex, wide.filter(lambda v: _validates(s, v)))
    longest = high if high is not None else 20_000
    sizes = sorted({low, max(low, 1), longest, max(low, longest - 1)})
    fills = st.sampled_from([*ODD_TEXT, "x", "\U0001f3ed", "\u4e2d"])
    exact = st.tuples(st.sampled_from(sizes), fills).map(lambda t: (t[1] * t[0])[: t[0]])
    mixed = st.text(TEXT_CHARS, min_size=low, max_size=min(longest, 50))
    odd = st.sampled_from(ODD_TEXT + NUMERIC_TEXT)
    return st.one_of(exact, mixed, odd).filter(lambda v: _validates(s, v))


def _validates(s: dict[str, Any], value: Any) -> bool:
    return bool(_node_validator(json.dumps(s, sort_keys=True)).is_valid(value))


@functools.cache
def _node_validator(text: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(json.loads(text))


def walk(schema: dict[str, Any], root: dict[str, Any], edges: bool) -> st.SearchStrategy[Any]:
    """Schema-valid values for ``schema`` (a node of ``root``).

    Scalars come from ``hypothesis_jsonschema.from_schema``, and with ``edges`` also from the
    bounds and odd values above. Objects and arrays are put together here: hypothesis-jsonschema
    0.23 builds objects with Hypothesis internals that Hypothesis 6.1xx no longer has.
    """
    s = _resolve(schema, root)
    if "anyOf" in s:
        return st.one_of(*(walk(sub, root, edges) for sub in s["anyOf"]))
    kind = s.get("type")
    if kind == "array":
        return _array_strategy(s, root, edges)
    if kind == "object":
        return _object_strategy(s, root, edges)
    plain: st.SearchStrategy[Any] = from_schema(inline(s, root))
    if not edges or "const" in s or "enum" in s:
        return plain
    if kind == "integer":
        return st.one_of(_int_strategy(s), plain)
    if kind == "number":
        return st.one_of(_number_strategy(s), plain)
    if kind == "string":
        return st.one_of(_string_strategy(s), plain)
    return plain


def _array_strategy(
    s: dict[str, Any], root: dict[str, Any], edges: bool
) -> st.SearchStrategy[list[Any]]:
    low, high = s.get("minItems", 0), s.get("maxItems")
    item = walk(s.get("items", {}), root, edges)
    small = st.lists(item, min_size=low, max_size=low + 3 if high is None else min(high, low + 3))
    if not edges or high is None:
        return small
    # the full array: one item repeated (drawing 2,000 would overrun the example)
    return st.one_of(small, item.map(functools.partial(_full, high)))


def _full(count: int, one: Any) -> list[Any]:
    """``count`` copies of ``one``, fewer if that would not fit the size limit."""
    each = len(json.dumps(one, ensure_ascii=False).encode()) + 2
    count = max(1, min(count, int(MAX_INBOUND_BYTES * 0.9) // each))
    return [copy.deepcopy(one) for _ in range(count)]


def _object_strategy(
    s: dict[str, Any], root: dict[str, Any], edges: bool
) -> st.SearchStrategy[dict[str, Any]]:
    props: dict[str, Any] = s.get("properties", {})
    required = set(s.get("required", ()))
    fixed = {k: walk(v, root, edges) for k, v in props.items() if k in required}
    optional = {k: walk(v, root, edges) for k, v in props.items() if k not in required}
    extra = s.get("additionalProperties")
    extras: st.SearchStrategy[dict[str, Any]] = st.just({})
    if isinstance(extra, dict):
        keys: st.SearchStrategy[str] = st.text(TEXT_CHARS, max_size=20)
        if edges:
            keys = st.one_of(keys, st.sampled_from(["", "\U0001f3ed" * 100, "\u0000"]))
        extras = st.dictionaries(keys, walk(extra, root, edges), max_size=4)
    return st.builds(
        lambda a, b, c: {**c, **a, **b},
        st.fixed_dictionaries(fixed),
        st.fixed_dictionaries({}, optional=optional),
        extras,
    )


def inline(node: Json, root: dict[str, Any]) -> Json:
    """``node`` with every local ``$ref`` replaced by its target (the models have no cycles),
    for hypothesis-jsonschema, which does not follow refs under a URN ``$id``."""
    if isinstance(node, dict):
        if "$ref" in node:
            rest = {k: v for k, v in node.items() if k != "$ref"}
            return {**inline(_resolve({"$ref": node["$ref"]}, root), root), **inline(rest, root)}
        return {k: inline(v, root) for k, v in node.items() if k not in ("$defs", "$id", "$schema")}
    if isinstance(node, list):
        return [inline(v, root) for v in node]
    return node


@functools.cache
def valid_payloads(path: str) -> st.SearchStrategy[dict[str, Any]]:
    """Whole payloads valid under the topic's published schema."""
    root = schema_of(path)
    strategy: st.SearchStrategy[dict[str, Any]] = walk(root, root, edges=False)
    return strategy


@functools.cache
def extreme_payloads(path: str) -> st.SearchStrategy[dict[str, Any]]:
    """Whole payloads valid under the topic's published schema, at its edges."""
    root = schema_of(path)
    strategy: st.SearchStrategy[dict[str, Any]] = walk(root, root, edges=True)
    return strategy


def _bounded_resync(data: dict[str, Any]) -> dict[str, Any]:
    """A replay request from an early seq republishes up to 10,000 messages and holds the
    downlink meanwhile: keep most of them to the extremes that replay nothing."""
    body = data.get("body")
    if isinstance(body, dict) and isinstance(body.get("from_seq"), int):
        n = body["from_seq"]
        if n < 10**6 and n % 8:
            body["from_seq"] = 2**63 - 1 - n
    return data


@st.composite
def valid_drafts(draw: st.DrawFn, path: str) -> Draft:
    extreme_one = draw(st.booleans())
    data = draw(extreme_payloads(path) if extreme_one else valid_payloads(path))
    if path == RESYNC:
        data = _bounded_resync(data)
    return Draft(path, "extreme" if extreme_one else "valid", data, id_style=_id_style(draw))


def _id_style(draw: st.DrawFn) -> str:
    return draw(st.sampled_from(["uuid", "uuid", "uuid", "long", "short"]))


def _paths(node: Json, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Json]]:
    yield prefix, node
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node[:3]):
            yield from _paths(v, (*prefix, i))


def _get(node: Json, path: tuple[Any, ...]) -> Json:
    for p in path:
        node = node[p]
    return node


def _set(node: Json, path: tuple[Any, ...], value: Json) -> None:
    _get(node, path[:-1])[path[-1]] = value


# Replacements the models cannot coerce to the field's type: always refused.
INCOMPATIBLE: Final = {
    "scalar": ([1, {"a": 1}], {"k": [None]}, [], {}),
    "container": (0, -1, 1.5, "x", True, None),
}
# Replacements a lax model may coerce (the schema forbids them; noted, not asserted).
COERCIBLE: Final = ("7", 7.0, 1, True, "", "2025-01-01", -1, 0)


@st.composite
def mutated_drafts(draw: st.DrawFn, path: str) -> Draft:
    data = copy.deepcopy(draw(st.one_of(valid_payloads(path), extreme_payloads(path))))
    places = [p for p, _ in _paths(data) if p]
    objects = [p for p, v in _paths(data) if isinstance(v, dict)]
    how = draw(
        st.sampled_from(
            [
                "wrong_type",
                "wrong_type",
                "coercible_type",
                "missing",
                "extra",
                "extra",
                "out_of_bounds",
                "other_schema",
                "body_shape",
                "null",
            ]
        )
    )
    must_reject = True
    where: tuple[Any, ...] = ()
    if how in ("wrong_type", "coercible_type", "null") and places:
        where = draw(st.sampled_from(places))
        old = _get(data, where)
        new: Json
        if how == "wrong_type":
            pool = INCOMPATIBLE["container" if isinstance(old, dict | list) else "scalar"]
            new = draw(st.sampled_from(pool))
        else:
            new = None if how == "null" else draw(st.sampled_from(COERCIBLE))
        _set(data, where, new)
        # a container for a scalar or the other way round is never coerced; a lax model may
        # coerce "7" to 7, so those are only noted when accepted
        must_reject = how != "coercible_type" and not _allowed(path, where, new)
    elif how == "missing":
        named = ("schema", "msg_id", "body", "version", "operations", "order_id", "idem_key")
        required = [p for p in places if p[-1] in named]
        where = draw(st.sampled_from(required or places))
        parent = _get(data, where[:-1])
        if isinstance(parent, dict):
            del parent[where[-1]]
            must_reject = where[-1] in _required_at(path, where)
        else:
            parent.pop(where[-1])
            must_reject = False
    elif how == "extra":
        at = draw(st.sampled_from(objects))
        target = _get(data, at)
        key = draw(st.sampled_from(["unknown_field", "Version", "msg_id ", "__proto__", "\u00e9"]))
        while key in target:
            key += "_x"
        value: Json = draw(st.sampled_from([1, "x", None, [], {"nested": True}]))
        target[key] = value
        must_reject = not _allowed(path, (*at, key), value)
    elif how == "out_of_bounds":
        where, must_reject = _out_of_bounds(draw, path, data)
    elif how == "other_schema":
        others = [t.schema for t in TOPICS if t.direction == "down" and t.path != path]
        data["schema"] = draw(st.sampled_from([*others, "", "mes.dispatch/2", "MES.DISPATCH/1"]))
        must_reject = False  # the schema name is const in the contract; noted, not asserted
    else:  # body_shape, or nothing to change
        how = "body_shape"
        data["body"] = draw(st.sampled_from([[], "x", 1, None, [data.get("body")]]))
    id_style = "keep" if where[:1] == ("msg_id",) else _id_style(draw)
    return Draft(path, f"mutated:{how}", data, must_reject=must_reject, id_style=id_style)


def _allowed(path: str, where: tuple[Any, ...], value: Any) -> bool:
    """Whether any schema alternative at ``where`` takes ``value`` (no node: nothing does)."""
    defs = schema_of(path).get("$defs", {})
    return any(_validates({**node, "$defs": defs}, value) for node in _schema_at(path, where))


def _schema_at(path: str, where: tuple[Any, ...]) -> list[dict[str, Any]]:
    """Every (resolved) schema node that may describe the value at ``where``."""
    root = schema_of(path)
    nodes = [root]
    for part in where:
        nxt: list[dict[str, Any]] = []
        for node in nodes:
            for alt in _alternatives(node, root):
                if isinstance(part, int) and "items" in alt:
                    nxt.append(alt["items"])
                elif isinstance(part, str):
                    if part in alt.get("properties", {}):
                        nxt.append(alt["properties"][part])
                    elif isinstance(alt.get("additionalProperties"), dict):
                        nxt.append(alt["additionalProperties"])
        nodes = nxt
    return [a for n in nodes for a in _alternatives(n, root)]


def _alternatives(node: dict[str, Any], root: dict[str, Any]) -> list[dict[str, Any]]:
    node = _resolve(node, root)
    if "anyOf" in node:
        return [a for sub in node["anyOf"] for a in _alternatives(sub, root)]
    return [node]


def _required_at(path: str, where: tuple[Any, ...]) -> set[str]:
    req: set[str] = set()
    for node in _schema_at(path, where[:-1]):
        req |= set(node.get("required", ()))
    return req


def _out_of_bounds(draw: st.DrawFn, path: str, data: Json) -> tuple[tuple[Any, ...], bool]:
    """Set one value just outside its schema bounds; (where, must_reject)."""
    candidates: list[tuple[tuple[Any, ...], Any]] = []
    for place, value in _paths(data):
        for node in _schema_at(path, place):
            t = node.get("type")
            if t in ("integer", "number") and isinstance(value, int | float):
                if "minimum" in node:
                    candidates.append((place, _whole(node["minimum"]) - 1))
                if "exclusiveMinimum" in node:
                    candidates.append((place, _whole(node["exclusiveMinimum"])))
                if "maximum" in node:
                    candidates.append((place, _whole(node["maximum"]) + 1))
            elif t == "string" and isinstance(value, str):
                if "maxLength" in node:
                    candidates.append((place, "y" * (node["maxLength"] + 1)))
                if node.get("minLength", 0) > 0:
                    candidates.append((place, ""))
            elif t == "array" and isinstance(value, list) and 0 < node.get("maxItems", 10**9) < 50:
                filler = value[0] if value else {}
                candidates.append((place, [copy.deepcopy(filler)] * (node["maxItems"] + 1)))
    if not candidates:
        data["body"] = "out of bounds"
        return ("body",), True
    place, bad = draw(st.sampled_from(candidates))
    _set(data, place, bad)
    return place, not _allowed(path, place, bad)


def _whole(bound: float) -> int | float:
    return int(bound) if float(bound).is_integer() else bound


SENTINEL: Final = "\u2063fuzz-raw\u2063"
DEEP: Final = (1_000, 10_000, 50_000, 100_000)
NUMBER_LITERALS: Final = (
    b"1E+5000",
    b"-1E+5000",
    b"1E-400",
    b"1e309",
    b"-0",
    b"1E+999999999999",
    b"9" * 5000,
    b"-" + b"9" * 4301,
    b"1." + b"0" * 5000 + b"1",
    b"0.000000000000000000000000000000000000000000000000001",
    b"123456789012345678901234567890",
)
NAN_LITERALS: Final = (b"NaN", b"Infinity", b"-Infinity")


@st.composite
def raw_drafts(draw: st.DrawFn, path: str) -> Draft:
    how = draw(
        st.sampled_from(
            [
                "number_literal",
                "nan",
                "deep",
                "duplicate_key",
                "not_utf8",
                "lone_surrogate",
                "bom",
                "oversize",
                "at_limit",
                "not_json",
                "control_char",
            ]
        )
    )
    # the size-sensitive ones on a small base, so that they test what they say
    small = how in ("deep", "oversize", "at_limit", "not_utf8")
    base = (
        valid_payloads(path) if small else st.one_of(valid_payloads(path), extreme_payloads(path))
    )
    data = copy.deepcopy(draw(base))
    leaves = [p for p, v in _paths(data) if p and not isinstance(v, dict | list)]
    numeric = [p for p in leaves if isinstance(_get(data, p), int | float)]
    body_places = [p for p, _ in _paths(data) if p[:1] == ("body",) and len(p) > 1]
    d = Draft(path, f"raw:{how}", data, id_style=_id_style(draw))
    if how in ("number_literal", "nan"):
        place = draw(st.sampled_from(numeric or body_places or [("body",)]))
        literal = draw(
            st.sampled_from(NUMBER_LITERALS if how == "number_literal" else NAN_LITERALS)
        )
        _set(data, place, SENTINEL)
        d.raw.append((SENTINEL, literal))
        d.must_reject = how == "nan"
    elif how == "deep":
        depth = draw(st.sampled_from(DEEP))
        opener, closer = draw(st.sampled_from([(b"[", b"]"), (b'{"a":', b"}")]))
        depth = min(depth, (MAX_INBOUND_BYTES - 4096) // (len(opener) + len(closer)))
        place = draw(st.sampled_from(body_places or [("body",)]))
        _set(data, place, SENTINEL)
        d.raw.append((SENTINEL, opener * depth + b"1" + closer * depth))
        d.must_reject = True  # no down field takes nested arrays or objects of any shape
    elif how == "duplicate_key":
        objects = [p for p, v in _paths(data) if isinstance(v, dict) and v]
        where = draw(st.sampled_from(objects))
        target = _get(data, where)
        key = draw(st.sampled_from(sorted(target)))
        other: Json = draw(st.sampled_from([None, 0, "dup", [], {}, "other-id"]))
        mark = f"{SENTINEL}{len(d.raw)}"
        target[mark] = other
        d.raw.append((mark, json.dumps(key, ensure_ascii=False).encode("utf-8")))
    elif how == "not_utf8":
        kind = draw(st.sampled_from(["ff", "overlong", "utf16", "latin1", "cesu"]))
        d.post = _NOT_UTF8[kind]
        d.must_reject = True
        d.kind = f"raw:not_utf8:{kind}"
    elif how == "lone_surrogate":
        strings = [p for p in leaves if isinstance(_get(data, p), str)]
        place = draw(st.sampled_from(strings or [("msg_id",)]))
        _set(data, place, SENTINEL)
        d.raw.append(
            (SENTINEL, draw(st.sampled_from([b"\\ud800", b"x\\udfff", b"\\udc00\\ud800"])))
        )
        if place == ("msg_id",):
            d.id_style = "keep"
    elif how == "bom":
        d.post = lambda b: b"\xef\xbb\xbf" + b
        d.must_reject = True
    elif how == "oversize":
        extra = draw(st.sampled_from([1, 1000, MAX_INBOUND_BYTES]))
        d.post = functools.partial(_pad_to, size=MAX_INBOUND_BYTES + extra)
        d.must_reject = True
    elif how == "at_limit":
        d.post = functools.partial(_pad_to, size=MAX_INBOUND_BYTES)
    elif how == "not_json":
        d.post = draw(st.sampled_from(_NOT_JSON_TEXT))
        d.must_reject = True
        d.id_style = "keep"
    elif how == "control_char":
        strings = [p for p in leaves if isinstance(_get(data, p), str) and p != ("msg_id",)]
        place = draw(st.sampled_from(strings or [("schema",)]))
        _set(data, place, SENTINEL)
        d.raw.append((SENTINEL, draw(st.sampled_from([b"a\nb", b"\x00", b"\x1f", b"tab\there"]))))
        d.must_reject = True
    return d


def _pad_to(payload: bytes, size: int) -> bytes:
    """Grow the payload to exactly ``size`` bytes with JSON whitespace before the closing
    brace, so the content stays the same."""
    assert payload.endswith(b"}")
    missing = size - len(payload)
    return payload[:-1] + b" " * max(missing, 0) + b"}"


_NOT_UTF8: Final[dict[str, Callable[[bytes], bytes]]] = {
    "ff": lambda b: b.replace(b'"body"', b'"bo\xffdy"', 1) if b'"body"' in b else b"\xff" + b,
    "overlong": lambda b: (
        b.replace(b'"body"', b'"\xc0\xafbody"', 1) if b'"body"' in b else b"\xc0\xaf" + b
    ),
    "utf16": lambda b: b.decode("utf-8").encode("utf-16"),
    "latin1": lambda b: (
        b.replace(b'"schema"', '"schéma"'.encode("latin-1"), 1) if b'"schema"' in b else b"\xe9" + b
    ),
    "cesu": lambda b: (
        b.replace(b'"body"', b'"\xed\xa0\x80body"', 1) if b'"body"' in b else b"\xed\xa0\x80" + b
    ),
}
_NOT_JSON_TEXT: Final[tuple[Callable[[bytes], bytes], ...]] = (
    lambda b: b"",
    lambda b: b" \n\t",
    lambda b: b"null",
    lambda b: b"[]",
    lambda b: b'"text"',
    lambda b: b"1",
    lambda b: b"true",
    lambda b: b[: len(b) // 2],
    lambda b: b + b"x",
    lambda b: b + b"{}",
    lambda b: b.replace(b"{", b"{,", 1),
    lambda b: b"\x00" + b,
    lambda b: b.replace(b'"', b"'"),
    lambda b: b'{"schema": "mes.dispatch/1", "msg_id": "',
)


@st.composite
def relay_drafts(draw: st.DrawFn) -> Draft:
    good = st.fixed_dictionaries(
        {"online": st.booleans()},
        optional={"ts_ms": st.one_of(st.integers(), st.just(10**30))},
    )
    garbage: st.SearchStrategy[Json] = st.one_of(
        st.sampled_from([[], "online", None, 1, {"online": "false"}, {"online": 0}, {}]),
        st.dictionaries(st.text(max_size=8), st.integers(), max_size=3),
    )
    data = draw(st.one_of(good, garbage))
    d = Draft(RELAY, "relay", data, id_style="keep")
    how = draw(st.sampled_from(["json", "json", "raw", "deep", "not_utf8", "oversize", "empty"]))
    if how == "raw":
        d.post = draw(st.sampled_from(_NOT_JSON_TEXT))
    elif how == "deep":
        depth = draw(st.sampled_from(DEEP))
        d.post = lambda _b, n=depth: b'{"online": ' + b"[" * n + b"]" * n + b"}"
    elif how == "not_utf8":
        d.post = lambda b: b"\xff\xfe" + b
    elif how == "oversize":
        d.post = lambda _b: b'{"online": true, "pad": "' + b"p" * MAX_INBOUND_BYTES + b'"}'
    elif how == "empty":
        d.post = lambda _b: b""
    d.kind = f"relay:{how}"
    return d


@st.composite
def reuse_drafts(draw: st.DrawFn, path: str) -> Draft:
    """A body the model must refuse (an unknown field), under the msg_id of an earlier message
    on another topic; or an exact resend of an earlier message. Filled in by :func:`_finish`."""
    what = draw(st.sampled_from(["other_topic", "other_topic", "resend"]))
    data = copy.deepcopy(draw(valid_payloads(path)))
    if isinstance(data.get("body"), dict):
        data["body"]["reused_msg_id_probe"] = True
    d = Draft(path, f"reuse:{what}", data, must_reject=what == "other_topic", id_style="keep")
    d.reuse = what
    return d


def drafts(only: str | None = None) -> st.SearchStrategy[Draft]:
    """Any draft: valid, extreme, mutated, raw, reused ids, relay state (``only``: of one topic)."""
    makers: dict[str, Callable[[str], st.SearchStrategy[Draft]]] = {
        "valid": valid_drafts,
        "mutated": mutated_drafts,
        "raw": raw_drafts,
        "reuse": reuse_drafts,
    }
    weights = {"valid": 2, "mutated": 2, "raw": 2, "reuse": 1}
    choices: list[tuple[str, str]] = []
    for path in DOWN:
        times = 1 if path == RESYNC else 3  # a replay holds the downlink: fewer of them
        choices += [(maker, path) for maker, w in weights.items() for _ in range(w * times)]
    choices += [("relay", RELAY)] * 2
    if only is not None:
        choices = [c for c in choices if c[1] == only]

    def make(choice: tuple[str, str]) -> st.SearchStrategy[Draft]:
        maker, path = choice
        return relay_drafts() if maker == "relay" else makers[maker](path)

    return st.sampled_from(choices).flatmap(make)


# ------------------------------------------------------------------------------ finishing


def _encode(d: Draft) -> bytes:
    text = json.dumps(d.data, ensure_ascii=False).encode("utf-8")
    for sentinel, raw in d.raw:
        text = text.replace(json.dumps(sentinel, ensure_ascii=False).encode("utf-8"), raw, 1)
    if d.post is not None:
        text = d.post(text)
    return text


_ID_TEXT: Final = re.compile(rb'"msg_id"\s*:\s*"((?:[^"\\]|\\.){0,200})"')


def _all_msg_ids(payload: bytes) -> set[str]:
    """Every string that a tolerant reader could take for the msg_id: any "msg_id" member
    (duplicates included), from a parse that accepts NaN and any number, or from the text."""
    found: set[str] = set()

    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        found.update(v for k, v in pairs if k == "msg_id" and isinstance(v, str))
        return dict(pairs)

    with contextlib.suppress(ValueError, RecursionError):
        json.loads(
            payload,
            object_pairs_hook=hook,
            parse_int=lambda _: 0,
            parse_float=lambda _: 0.0,
            parse_constant=lambda _: 0,
        )
    for raw in _ID_TEXT.findall(payload):
        with contextlib.suppress(ValueError):
            found.add(json.loads(b'"' + raw + b'"'))
    return found


def expected_ids(payload: bytes) -> frozenset[str | None]:
    """The msg_ids the gateway may quote back when it refuses ``payload``.

    Strict JSON within the size limit with a msg_id of 1-64 characters: exactly that id.
    Anything a strict reader cannot take (too big, not UTF-8, NaN, duplicate keys, too deep):
    none, or an id a tolerant reader finds in it.
    """
    data = strict_json(payload)
    if data is not _NOT_JSON and len(payload) <= MAX_INBOUND_BYTES:
        mid = data.get("msg_id") if isinstance(data, dict) else None
        if isinstance(mid, str) and 1 <= len(mid) <= 64:
            return frozenset({mid})
        return frozenset({None, mid} if isinstance(mid, str) else {None})
    return frozenset({None, *_all_msg_ids(payload)})


def _finish(drafts_: list[Draft], seed_: int) -> list[FuzzMessage]:
    """Give every draft its msg_id (unique, except where reuse is the point) and its bytes."""
    rng = random.Random(seed_)
    out: list[FuzzMessage] = []
    used: set[str] = set()
    topics_of: dict[str, set[str]] = {}  # msg_id -> the topics it came on
    for i, d in enumerate(drafts_):
        if d.reuse == "resend":
            earlier = [m for m in out[-200:] if m.topic != RELAY and m.duplicate_of is None]
            if earlier:
                m = rng.choice(earlier)
                out.append(
                    FuzzMessage(
                        i, m.topic, m.payload, d.kind, m.msg_ids, False, m.schema_valid, m.index
                    )
                )
                continue
        if d.reuse == "other_topic":
            # an id that came on another topic only: on the same topic it is a redelivery
            earlier = [
                m
                for m in out[-200:]
                if m.topic != RELAY and (mid := _one_id(m)) and d.topic not in topics_of[mid]
            ]
            if earlier:
                d.data["msg_id"] = _one_id(rng.choice(earlier))
            else:
                d.reuse, d.id_style = None, "uuid"
        _rising_version(d, i, len(drafts_), rng)
        if d.kind in ("valid", "extreme"):
            _steer(d, rng)
        if d.id_style != "keep" and isinstance(d.data, dict) and "msg_id" in d.data:
            d.data["msg_id"] = _fresh_id(rng, i, d.id_style, used)
        payload = _encode(d)
        if d.topic == RELAY:
            out.append(FuzzMessage(i, RELAY, payload, d.kind, frozenset({None}), False, None))
            continue
        ids = expected_ids(payload)
        if d.reuse is None and None not in ids and ids & used and isinstance(d.data, dict):
            # an id hypothesis made (or a mutation left) that an earlier message has: the
            # gateway would take it for a redelivery; reuse is tested on purpose, not by chance
            d.data["msg_id"] = _fresh_id(rng, i, "uuid", used)
            payload = _encode(d)
            ids = expected_ids(payload)
        used.update(x for x in ids if x is not None)
        for x in ids:
            if x is not None:
                topics_of.setdefault(x, set()).add(d.topic)
        out.append(
            FuzzMessage(
                i, d.topic, payload, d.kind, ids, d.must_reject, schema_valid(d.topic, payload)
            )
        )
    return out


# Operations that valid messages name most of the time, so that holds, releases and cancels
# meet dispatched operations and the core's rules, not only "no such operation", are fuzzed.
POOL: Final = (
    ("4711", "0010"),
    ("4711", "0020"),
    ("4712", "0010"),
    ("1000123", "0010"),
    ("1000124", "0010"),
    ("\uff19\uff19", "\U0001f3ed"),
)
VERSIONED: Final = ("_mes_v1/order/dispatch", "_mes_v1/masterdata")


def _rising_version(d: Draft, index: int, total: int, rng: random.Random) -> None:
    """Rising versions for dispatch lists and master data, in every kind of draft: one early
    version at the top of the range would make every later one "older". The top of the range
    comes in the last 2 % of the run; versions outside it (out of bounds, above or below)
    stay as they are: a draft meant to be refused must stay one."""
    body = d.data.get("body") if isinstance(d.data, dict) else None
    if d.topic not in VERSIONED or not isinstance(body, dict) or index >= total * 0.98:
        return
    version = body.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        return
    top = _resolve({"$ref": f"#/$defs/{_BODY[d.topic]}"}, schema_of(d.topic))
    bounds = top["properties"]["version"]
    lowest, highest = bounds.get("minimum", 1), bounds.get("maximum", 2**63)
    if version < lowest:
        return
    if 10**6 < version <= highest or (version <= 10**6 and rng.random() < 0.8):
        body["version"] = 10**6 + index


_BODY: Final = {
    "_mes_v1/order/dispatch": "DispatchListBody",
    "_mes_v1/masterdata": "MasterDataBody",
}


def _steer(d: Draft, rng: random.Random) -> None:
    """Aim most valid messages at what the gateway holds: operations from a small pool, and
    decimals the model takes."""
    body = d.data.get("body") if isinstance(d.data, dict) else None
    if not isinstance(body, dict):
        return
    ops = body.get("operations")
    if isinstance(ops, list):
        free = list(POOL)
        rng.shuffle(free)
        plain = rng.random() < 0.8
        for op in ops:
            if isinstance(op, dict) and free and rng.random() < 0.8:
                op["order_id"], op["operation"] = free.pop()
            if isinstance(op, dict) and plain:
                _plain_decimals(d.topic, "OperationMsg", op, rng)
    if d.topic == "_mes_v1/masterdata" and rng.random() < 0.8:
        _plain_decimals(d.topic, "MasterDataBody", body, rng)
        if isinstance(body.get("confirmation_policy"), dict):
            _plain_decimals(d.topic, "ConfirmationPolicyMsg", body["confirmation_policy"], rng)
    if "order_id" in body and "operation" in body and rng.random() < 0.8:
        body["order_id"], body["operation"] = rng.choice(POOL)
        if rng.random() < 0.8:
            body["split"] = 0


def _plain_decimals(path: str, model: str, op: dict[str, Any], rng: random.Random) -> None:
    """Quantities the model takes: the published schema's bounds of each decimal field, or 1
    (a float with many places, or any string, passes the schema but not the model)."""
    defs = schema_of(path).get("$defs", {})
    if model not in defs:
        return
    node = defs[model]
    for name, prop in node.get("properties", {}).items():
        if name not in op or not isinstance(op[name], int | float | str):
            continue
        numbers = [a for a in _alternatives(prop, schema_of(path)) if a.get("type") == "number"]
        strings = any(a.get("type") == "string" for a in _alternatives(prop, schema_of(path)))
        if not numbers or not strings:
            continue  # a plain float field (times): whatever the schema allows
        edges: list[Any] = [1, "1"]
        for bound in ("maximum", "minimum"):
            if bound in numbers[0]:
                edges += [_whole(numbers[0][bound]), str(_whole(numbers[0][bound]))]
        op[name] = rng.choice(edges)


def _fresh_id(rng: random.Random, index: int, style: str, used: set[str]) -> str:
    if style == "long":
        mid = (f"\u00e9{index}-" + "\U0001f3ed" * 64)[:64]
    elif style == "short":
        mid = f"{index:x}"
    else:
        mid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    while mid in used:
        mid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    return mid


def _one_id(m: FuzzMessage) -> str | None:
    """The single msg_id the gateway read from ``m`` (None: not exactly one)."""
    ids = [x for x in m.msg_ids if x is not None]
    return ids[0] if len(ids) == 1 and None not in m.msg_ids else None


def _collect(n: int, seed_: int, only: str | None = None) -> list[Draft]:
    found: list[Draft] = []

    @settings(
        max_examples=n,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
        report_multiple_bugs=False,
    )
    @seed(seed_)
    @given(drafts(only))
    def collect(d: Draft) -> None:
        found.append(d)

    collect()
    return found


def generate(n: int, seed_: int) -> list[FuzzMessage]:
    """``n`` messages for a seed, drawn in this interpreter.

    Hypothesis mixes literal constants of the local modules *loaded at the time* into its
    draws, so the same seed gives the same bytes only with the same modules imported: use
    :func:`generate_isolated` where that is not under control (a pytest session)."""
    found: list[Draft] = []
    for round_ in range(20):
        more = _collect(n - len(found), seed_ * 1000 + round_)
        found += more
        if len(found) >= n or not more:
            break
    found = found[:n]
    # Every topic at least a few times, whatever hypothesis's draws favoured: the missing ones
    # take evenly spaced places.
    wanted = [*DOWN, RELAY]
    for k, path in enumerate(wanted):
        have = sum(d.topic == path for d in found)
        if have >= MIN_PER_TOPIC or n < MIN_PER_TOPIC * len(wanted) * 2:
            continue
        extra = _collect(MIN_PER_TOPIC - have, seed_ * 1000 + 100 + k, only=path)
        step = max(1, n // (len(extra) + 1))
        for j, d in enumerate(extra):
            found[(k + (j + 1) * step) % n] = d
    return _finish(found, seed_)


MIN_PER_TOPIC: Final = 5


def generate_isolated(n: int, seed_: int, timeout_s: float = 600) -> list[FuzzMessage]:
    """:func:`generate` in a fresh interpreter that imports only this module: the same seed
    gives the same bytes whatever else the caller has imported (and for the same committed
    schemas and code)."""
    with tempfile.TemporaryDirectory(prefix="edge-fuzz-") as tmp:
        out = Path(tmp) / "messages.pickle"
        subprocess.run(
            [sys.executable, "-m", "tests.fuzz.messages", str(n), str(seed_), str(out)],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO), "PYTHONHASHSEED": "0"},
            check=True,
            timeout=timeout_s,
        )
        rows: list[dict[str, Any]] = pickle.loads(out.read_bytes())
    return [FuzzMessage(**row) for row in rows]


def main(argv: list[str]) -> None:
    n, seed_, out = int(argv[0]), int(argv[1]), Path(argv[2])
    rows = [{f.name: getattr(m, f.name) for f in fields(m)} for m in generate(n, seed_)]
    out.write_bytes(pickle.dumps(rows))


if __name__ == "__main__":
    main(sys.argv[1:])
