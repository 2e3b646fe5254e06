"""Generate the published contract (``contract/``) from the pydantic models in :mod:`contract`.

``generate(out_dir)`` writes ``out_dir/asyncapi.json`` (an AsyncAPI 3.0.0 document: one channel per
topic of :data:`~edge.sync.contract.TOPICS`, addressed ``{root}/<path>``, with the gateway's
operations and the MQTT bindings) and one JSON Schema per topic in
``out_dir/schemas/<path with / replaced by .>.json``:

* enveloped up-topics: ``Envelope[Body]`` (what the gateway publishes),
* down-topics: :class:`~edge.sync.contract.InboundEnvelope` whose ``body`` is the body model,
* topics without an envelope (``_historian``, snapshot, health, rejected): the model itself.

Enveloped schemas pin the ``schema`` field to the topic's schema name (``const``).

The output is deterministic (sorted keys, two-space indent, trailing newline) so a test compares
the committed files with a fresh run. Regenerate after changing a model::

    python -m edge.sync.asyncapi            # writes ./contract
    python -m edge.sync.asyncapi --check    # exit 1 if ./contract is out of date
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, create_model

from edge.sync.contract import (
    CONTRACT_VERSION,
    TOPICS,
    Envelope,
    InboundEnvelope,
    Topic,
)

__all__ = ["DEFAULT_OUT", "generate", "main", "render", "schema_file_name"]

DEFAULT_OUT = Path("contract")
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
MQTT_BINDING_VERSION = "0.2.0"
ROOT_EXAMPLE = "umh/v1/acme/plant1/stamping/line4/PRESS07"
HEALTH_PATH = "_mes_v1/health"


def schema_file_name(t: Topic) -> str:
    """``_mes_v1/order/dispatch`` -> ``_mes_v1.order.dispatch.json``."""
    return t.path.replace("/", ".") + ".json"


def _channel_id(t: Topic) -> str:
    return t.path.replace("/", ".")


def _camel(t: Topic) -> str:
    """``_mes_v1/confirmation/cancel`` -> ``MesV1ConfirmationCancel`` (message ids)."""
    parts = t.path.replace("-", "/").replace("_", "/").split("/")
    return "".join(p[:1].upper() + p[1:] for p in parts if p)


def _wire_model(t: Topic) -> type[BaseModel]:
    """The model of the whole payload on the wire for topic ``t``."""
    if not t.enveloped:
        return t.model
    if t.direction == "up":
        return Envelope[t.model]  # type: ignore[name-defined]
    wrapped: type[BaseModel] = create_model(
        f"InboundEnvelope[{t.model.__name__}]",
        __base__=InboundEnvelope,
        __doc__=InboundEnvelope.__doc__,
        body=(t.model, ...),
    )
    return wrapped


def topic_schema(t: Topic) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of one topic's payload."""
    schema: dict[str, Any] = _wire_model(t).model_json_schema(mode="validation")
    if t.enveloped and t.schema:
        schema["properties"]["schema"]["const"] = t.schema
    schema["$schema"] = JSON_SCHEMA_DIALECT
    schema["$id"] = f"urn:edge-gateway:contract:{CONTRACT_VERSION}:{_channel_id(t)}"
    direction = "gateway -> central" if t.direction == "up" else "central -> gateway"
    schema["description"] = (
        f"Payload of `{{root}}/{t.path}` ({direction}, QoS {t.qos}, "
        f"{'retained' if t.retain else 'not retained'}"
        f"{', enveloped' if t.enveloped else ''}). {t.summary}"
    )
    return schema


def _mqtt_op_binding(t: Topic) -> dict[str, Any]:
    return {"bindingVersion": MQTT_BINDING_VERSION, "qos": t.qos, "retain": t.retain}


def _last_will() -> dict[str, Any]:
    return {
        "message": '{"online": false, "edge_id": "<edge_id>"}',
        "qos": 1,
        "retain": True,
        "topic": "{root}/" + HEALTH_PATH,
    }


def asyncapi_document() -> dict[str, Any]:
    """The AsyncAPI 3.0.0 document, from the gateway's point of view."""
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for t in TOPICS:
        cid = _channel_id(t)
        mid = _camel(t)
        description = t.summary
        if t.path == HEALTH_PATH:
            description += (
                " The gateway connects with a Last Will on this topic (QoS 1, retained): "
                '`{"online": false, "edge_id": "<edge_id>"}`, so the broker replaces the '
                "retained health when the gateway vanishes without a clean disconnect."
            )
        channel: dict[str, Any] = {
            "address": "{root}/" + t.path,
            "description": description,
            "messages": {mid: {"$ref": f"#/components/messages/{mid}"}},
            "parameters": {"root": {"$ref": "#/components/parameters/root"}},
            "title": t.path,
        }
        channels[cid] = channel
        action = "send" if t.direction == "up" else "receive"
        operation: dict[str, Any] = {
            "action": action,
            "bindings": {"mqtt": _mqtt_op_binding(t)},
            "channel": {"$ref": f"#/channels/{cid}"},
            "messages": [{"$ref": f"#/channels/{cid}/messages/{mid}"}],
            "summary": t.summary,
        }
        if t.path == HEALTH_PATH:
            operation["description"] = (
                "Published retained at connect and periodically; the Last Will (see the server "
                "binding) replaces it with online false."
            )
        operations[f"{action}.{cid}"] = operation
        message: dict[str, Any] = {
            "bindings": {
                "mqtt": {
                    "bindingVersion": MQTT_BINDING_VERSION,
                    "contentType": "application/json",
                    "payloadFormatIndicator": 1,
                }
            },
            "contentType": "application/json",
            "name": mid,
            "payload": {"$ref": f"schemas/{schema_file_name(t)}"},
            "summary": t.summary,
            "title": t.path,
        }
        if t.enveloped and t.schema:
            message["x-schema-name"] = t.schema
        messages[mid] = message
    return {
        "asyncapi": "3.0.0",
        "channels": channels,
        "components": {
            "messages": messages,
            "parameters": {
                "root": {
                    "description": (
                        "The work center's root: umh/v1/<enterprise>/<site>/<area>/<line>/"
                        "<workcenter> by default (configurable per gateway)."
                    ),
                    "examples": [ROOT_EXAMPLE],
                }
            },
        },
        "defaultContentType": "application/json",
        "id": "urn:edge-gateway:contract",
        "info": {
            "description": (
                "MQTT 5 contract between one work-center edge gateway and central (MES / ERP "
                "relay). Business messages (_mes_v1) are QoS 1 and, except snapshot, health and "
                "rejected, wrapped in an envelope; time series (_historian) use the UMH shape "
                "{timestamp_ms, value}. Operations are from the gateway's point of view: send = "
                "the gateway publishes, receive = the gateway subscribes. Within _mes_v1 fields "
                "are only ever added; consumers must ignore fields they do not know. See "
                "README.md next to this file."
            ),
            "title": "Work-center edge gateway MQTT contract",
            "version": CONTRACT_VERSION,
        },
        "operations": operations,
        "servers": {
            "central": {
                "bindings": {
                    "mqtt": {
                        "bindingVersion": MQTT_BINDING_VERSION,
                        "cleanSession": False,
                        "clientId": "<edge_id>",
                        "keepAlive": 30,
                        "lastWill": _last_will(),
                    }
                },
                "description": "Placeholder: central's MQTT 5 broker (TLS, client certificates).",
                "host": "{broker}:{port}",
                "protocol": "secure-mqtt",
                "protocolVersion": "5",
                "variables": {
                    "broker": {"default": "mqtt.central.example", "description": "broker host"},
                    "port": {"default": "8883", "description": "broker TLS port"},
                },
            }
        },
    }


def render(document: Any) -> str:
    """Deterministic JSON text: sorted keys, two-space indent, trailing newline."""
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def contents() -> dict[str, str]:
    """Relative path -> file text, for everything ``generate`` writes."""
    files = {"asyncapi.json": render(asyncapi_document())}
    for t in TOPICS:
        files[f"schemas/{schema_file_name(t)}"] = render(topic_schema(t))
    return files


def generate(out_dir: Path) -> list[Path]:
    """Write ``asyncapi.json`` and ``schemas/*.json`` under ``out_dir`` (the contract directory).

    Schema files in ``out_dir/schemas`` that no topic produces any more are removed. Returns the
    written paths, in a stable order.
    """
    out_dir = Path(out_dir)
    (out_dir / "schemas").mkdir(parents=True, exist_ok=True)
    files = contents()
    written: list[Path] = []
    for rel, text in files.items():
        path = out_dir / rel
        path.write_bytes(text.encode("utf-8"))
        written.append(path)
    for stale in sorted((out_dir / "schemas").glob("*.json")):
        if f"schemas/{stale.name}" not in files:
            stale.unlink()
    return written


def check(out_dir: Path) -> list[str]:
    """Relative paths under ``out_dir`` that differ from what ``generate`` would write."""
    out_dir = Path(out_dir)
    files = contents()
    stale = [
        rel
        for rel, text in files.items()
        if not (out_dir / rel).is_file() or (out_dir / rel).read_bytes() != text.encode("utf-8")
    ]
    if (out_dir / "schemas").is_dir():
        stale += [
            f"schemas/{p.name}"
            for p in sorted((out_dir / "schemas").glob("*.json"))
            if f"schemas/{p.name}" not in files
        ]
    return stale


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="edge contract",
        description="Write the AsyncAPI document and JSON Schemas of the MQTT contract.",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help="the contract directory (default: ./contract)",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 if the directory differs from the models",
    )
    args = parser.parse_args(list(argv) if argv is not None else None)
    out: Path = args.out
    if args.check:
        stale = check(out)
        if stale:
            print(
                f"{out}: out of date ({', '.join(stale)}); run `python -m edge.sync.asyncapi "
                f"--out {out}`",
                file=sys.stderr,
            )
            return 1
        print(f"{out}: up to date (contract {CONTRACT_VERSION})")
        return 0
    paths = generate(out)
    print(f"wrote {len(paths)} files to {out} (contract {CONTRACT_VERSION})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
