"""The example broker ACL (config/mosquitto/edge-gateway.acl) lets central IT's services do what
the contract says the relay does: every channel the relay sends on is writable by the central
user, every one it receives on readable. (The relay's KPI topic was missing: the broker
refused it with reason 135 and nobody saw it.)"""

from __future__ import annotations

import json

from paho.mqtt.client import topic_matches_sub

from tests.ops.conftest import REPO

ACL = REPO / "config" / "mosquitto" / "edge-gateway.acl"
CONTRACT = REPO / "contract" / "asyncapi.json"
ROOT = "umh/v1/acme/plant1/stamping/line4/PRESS07"  # the example gateway's root in the ACL


def _blocks() -> dict[str, dict[str, list[str]]]:
    """user -> {"read": [...], "write": [...]} as the ACL file says."""
    blocks: dict[str, dict[str, list[str]]] = {}
    user = ""
    for raw in ACL.read_text().splitlines():
        words = raw.split()
        if not words or words[0].startswith("#"):
            continue
        if words[0] == "user":
            user = words[1]
            blocks[user] = {"read": [], "write": [], "readwrite": []}
        elif words[0] == "topic" and len(words) == 3:
            blocks[user][words[1]].append(words[2])
    return blocks


def _relay_operations() -> list[tuple[str, str, str]]:
    """(operation id, action, a concrete topic) of each relay operation in the contract."""
    doc = json.loads(CONTRACT.read_text())
    out = []
    for op_id, op in doc["operations"].items():
        tags = {t["$ref"].rsplit("/", 1)[-1] for t in op.get("tags", [])}
        if "relay" not in tags:
            continue
        channel = doc["channels"][op["channel"]["$ref"].rsplit("/", 1)[-1]]
        topic = channel["address"].replace("{root}", ROOT).replace("{enterprise}", "acme")
        assert "{" not in topic, topic
        out.append((op_id, op["action"], topic))
    return out


def test_the_central_user_may_do_all_the_relay_does() -> None:
    central = _blocks()["mes-central"]
    operations = _relay_operations()
    assert {a for _, a, _ in operations} == {"send", "receive"}
    assert any(topic.endswith("/relay/kpi") for _, _, topic in operations)
    for op_id, action, topic in operations:
        kind = "write" if action == "send" else "read"
        allowed = central[kind] + central["readwrite"]
        assert any(topic_matches_sub(p, topic) for p in allowed), (op_id, topic)


def test_each_example_gateway_block_is_what_edge_mqtt_acl_prints() -> None:
    """A topic the contract adds for the gateway and the example file lacks would be refused by
    the broker (reason 135) at the first publish: the file is what the command makes."""
    from edge.ops import acl_block

    text = ACL.read_text()
    for edge_id, work_center in (("wc-press-07", "PRESS07"), ("wc-press-08", "PRESS08")):
        block = acl_block(edge_id, f"umh/v1/acme/plant1/stamping/line4/{work_center}")
        assert block in text, f"{edge_id}: the example ACL differs from `edge mqtt-acl`"
