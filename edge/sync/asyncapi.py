"""Generate the published contract (``contract/``) from the pydantic models in :mod:`contract`.

``generate(out_dir)`` writes ``out_dir/asyncapi.json`` (an AsyncAPI 3.0.0 document: one channel per
topic of :data:`~edge.sync.contract.CHANNELS`, addressed ``{root}/<path>`` or, for the relay's
state, ``umh/v1/{enterprise}/<path>``, with the gateway's and the ERP relay's operations and the
MQTT bindings) and one JSON Schema per topic in
``out_dir/schemas/<path with / replaced by .>.json``:

* enveloped up-topics: ``Envelope[Body]`` (what the gateway publishes),
* down-topics: :class:`~edge.sync.contract.InboundEnvelope` whose ``body`` is the body model,
* topics without an envelope (``_historian``, snapshot, health, rejected, the relay's state and
  KPI): the model itself.

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
    CHANNELS,
    CONTENT_TYPE,
    CONTRACT_VERSION,
    PAYLOAD_FORMAT_INDICATOR,
    Envelope,
    InboundEnvelope,
    Topic,
    gateway_last_will,
    relay_last_will,
)

__all__ = ["DEFAULT_OUT", "generate", "main", "render", "schema_file_name"]

DEFAULT_OUT = Path("contract")
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
MQTT_BINDING_VERSION = "0.2.0"
ROOT_EXAMPLE = "umh/v1/acme/plant1/stamping/line4/PRESS07"
HEALTH_PATH = "_mes_v1/health"
RELAY_STATE_PATH = "_mes_v1/relay/state"
EDGE_ID_PLACEHOLDER = "<edge_id>"


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
    if t.gateway:
        direction = "gateway -> central" if t.direction == "up" else f"{_sender(t)} -> gateway"
    else:
        direction = f"{_sender(t)} -> central"
    schema["description"] = (
        f"Payload of `{t.address}` ({direction}, QoS {t.qos}, "
        f"{'retained' if t.retain else 'not retained'}"
        f"{', enveloped' if t.enveloped else ''}). {t.summary}"
    )
    return schema


def _mqtt_op_binding(t: Topic) -> dict[str, Any]:
    return {"bindingVersion": MQTT_BINDING_VERSION, "qos": t.qos, "retain": t.retain}


def _last_will() -> dict[str, Any]:
    return {
        "message": gateway_last_will(EDGE_ID_PLACEHOLDER).decode(),
        "qos": 1,
        "retain": True,
        "topic": "{root}/" + HEALTH_PATH,
    }


# Who is at the other end of each channel, for the descriptions.
def _sender(t: Topic) -> str:
    if "send" in t.relay:
        return "ERP relay"
    if t.direction == "up" and t.scope == "root":
        return "gateway"  # a report the gateway makes but does not send yet is the gateway's too
    return "central"


def _operation(
    t: Topic, cid: str, mid: str, action: str, app: str, description: str | None
) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "action": action,
        "bindings": {"mqtt": _mqtt_op_binding(t)},
        "channel": {"$ref": f"#/channels/{cid}"},
        "messages": [{"$ref": f"#/channels/{cid}/messages/{mid}"}],
        "summary": t.summary,
        "tags": [{"$ref": f"#/components/tags/{app}"}],
    }
    if description:
        operation["description"] = description
    return operation


_RELAY_NOTES: dict[tuple[str, str], str] = {
    ("receive", "_mes_v1/confirmation"): (
        "A shared subscription ($share/<group>/<root filter>/...): every confirmation goes to "
        "one relay of the group."
    ),
    ("receive", "_mes_v1/confirmation/cancel"): (
        "A shared subscription ($share/<group>/<root filter>/...), as for confirmations."
    ),
    ("receive", "_mes_v1/snapshot"): (
        "With dispatching on: the dispatch_version each gateway holds (an older one gets the "
        "list again)."
    ),
    ("receive", "_mes_v1/relay/state"): (
        "Another relay's Last Will (or planned stop) on the shared topic: a relay still there "
        "says online again."
    ),
    ("send", "_mes_v1/relay/state"): (
        "Online at every connect; the Last Will (see the channel) and a planned stop say "
        "online false."
    ),
}


def asyncapi_document() -> dict[str, Any]:
    """The AsyncAPI 3.0.0 document: every channel, the gateway's and the ERP relay's operations."""
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for t in CHANNELS:
        cid = _channel_id(t)
        mid = _camel(t)
        description = t.summary
        examples: list[dict[str, Any]] = []
        if t.path == HEALTH_PATH:
            will = gateway_last_will(EDGE_ID_PLACEHOLDER).decode()
            description += (
                " The gateway connects with a Last Will on this topic (QoS 1, retained): "
                f"`{will}`, so the broker replaces the retained health when the gateway "
                "vanishes without a clean disconnect."
            )
            examples.append(
                {
                    "name": "last-will",
                    "payload": json.loads(gateway_last_will("wc-press-07")),
                    "summary": "The gateway's Last Will (the broker publishes it, retained).",
                }
            )
        if t.path == RELAY_STATE_PATH:
            will = relay_last_will().decode()
            description += (
                " The ERP relay connects with a Last Will on this topic (QoS 1, retained): "
                f"`{will}`."
            )
            examples.append(
                {
                    "name": "last-will",
                    "payload": json.loads(relay_last_will()),
                    "summary": "The relay's Last Will (the broker publishes it, retained).",
                }
            )
        param = "enterprise" if t.scope == "enterprise" else "root"
        channel: dict[str, Any] = {
            "address": t.address,
            "description": description,
            "messages": {mid: {"$ref": f"#/components/messages/{mid}"}},
            "parameters": {param: {"$ref": f"#/components/parameters/{param}"}},
            "title": t.path,
        }
        channels[cid] = channel
        if t.gateway:
            action = "send" if t.direction == "up" else "receive"
            note = None
            if t.path == HEALTH_PATH:
                note = (
                    "Published retained at connect and periodically; the Last Will (see the "
                    "server binding) replaces it with online false."
                )
            operations[f"{action}.{cid}"] = _operation(t, cid, mid, action, "gateway", note)
        for role in sorted(t.relay):
            note = _RELAY_NOTES.get((role, t.path))
            operations[f"relay.{role}.{cid}"] = _operation(t, cid, mid, role, "relay", note)
        message: dict[str, Any] = {
            "bindings": {
                "mqtt": {
                    "bindingVersion": MQTT_BINDING_VERSION,
                    "contentType": CONTENT_TYPE,
                    "payloadFormatIndicator": PAYLOAD_FORMAT_INDICATOR,
                }
            },
            "contentType": CONTENT_TYPE,
            "name": mid,
            "payload": {"$ref": f"schemas/{schema_file_name(t)}"},
            "summary": f"{t.summary} Sent by the {_sender(t)}.",
            "title": t.path,
        }
        if examples:
            message["examples"] = examples
        if t.enveloped and t.schema:
            message["x-schema-name"] = t.schema
        messages[mid] = message
    return {
        "asyncapi": "3.0.0",
        "channels": channels,
        "components": {
            "messages": messages,
            "parameters": {
                "enterprise": {
                    "description": (
                        "The enterprise, the third level of the UMH root (umh/v1/<enterprise>/"
                        "...): the ERP relay's state is one topic for all its work centers."
                    ),
                    "examples": ["acme"],
                },
                "root": {
                    "description": (
                        "The work center's root: umh/v1/<enterprise>/<site>/<area>/<line>/"
                        "<workcenter> by default (configurable per gateway)."
                    ),
                    "examples": [ROOT_EXAMPLE],
                },
            },
            "tags": {
                "gateway": {
                    "description": (
                        "An operation of the work-center edge gateway (edge run): send = it "
                        "publishes, receive = it subscribes."
                    ),
                    "name": "gateway",
                },
                "relay": {
                    "description": (
                        "An operation of the ERP relay (edge relay), which posts confirmations "
                        "to the ERP, answers them and, with dispatching on, sends the orders."
                    ),
                    "name": "relay",
                },
            },
        },
        "defaultContentType": CONTENT_TYPE,
        "id": "urn:edge-gateway:contract",
        "info": {
            "description": (
                "MQTT 5 contract between the work-center edge gateways and central (MES / ERP "
                "relay). Business messages (_mes_v1) are QoS 1 and, except snapshot, health, "
                "rejected and the relay's own topics, wrapped in an envelope; time series "
                "(_historian) use the UMH shape {timestamp_ms, value}. Every message, and both "
                "Last Wills, carry the MQTT 5 properties Payload Format Indicator 1 (UTF-8) and "
                "Content Type application/json, and no user properties: the topic names the "
                "message type, an envelope's `schema` its name and major version. Operations "
                "tagged gateway are the gateway's (ids send.* and receive.*), those tagged "
                "relay the ERP relay's (relay.send.*, relay.receive.*). Within _mes_v1 fields "
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
                        "clientId": EDGE_ID_PLACEHOLDER,
                        "keepAlive": 30,
                        "lastWill": _last_will(),
                    }
                },
                "description": (
                    "Placeholder: central's MQTT 5 broker (TLS, client certificates). The "
                    "binding shows a gateway's connection (client id, session, Last Will); the "
                    "relay's Last Will is on the relay/state channel."
                ),
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
    for t in CHANNELS:
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
