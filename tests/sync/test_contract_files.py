"""The committed contract/ files match the models, and the README's examples match the schemas."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest
from pydantic import BaseModel

from edge.sync import asyncapi
from edge.sync.contract import (
    CHANNELS,
    CONTRACT_VERSION,
    TOPICS,
    Envelope,
    InboundEnvelope,
    Topic,
    gateway_last_will,
    relay_last_will,
    topic,
)

REPO = Path(__file__).resolve().parents[2]
CONTRACT = REPO / "contract"
README = CONTRACT / "README.md"
REGENERATE = "run `python -m edge.sync.asyncapi --out contract` and commit contract/"

EXAMPLE = re.compile(r"<!-- example: (\S+) -->\s*```json\n(.*?)```", re.DOTALL)


def examples() -> list[tuple[str, Any]]:
    found = [(path, json.loads(text)) for path, text in EXAMPLE.findall(README.read_text())]
    assert found, "no examples found in contract/README.md"
    return found


def schema_for(path: str) -> dict[str, Any]:
    t = topic(path)
    data: dict[str, Any] = json.loads(
        (CONTRACT / "schemas" / asyncapi.schema_file_name(t)).read_text()
    )
    return data


def validate_with_models(t: Topic, payload: Any) -> None:
    if not t.enveloped:
        t.model.model_validate(payload)
        return
    if t.direction == "up":
        envelope: BaseModel = Envelope[t.model].model_validate(payload)  # type: ignore[name-defined]
    else:
        envelope = InboundEnvelope.model_validate(payload)
        t.model.model_validate(payload["body"])
    assert payload["schema"] == t.schema, f"{t.path}: schema {payload['schema']!r}"
    assert envelope is not None


def test_committed_files_equal_generated(tmp_path: Path) -> None:
    written = asyncapi.generate(tmp_path)
    assert len(written) == len(CHANNELS) + 1
    generated = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.json")}
    committed = {p.relative_to(CONTRACT).as_posix() for p in CONTRACT.rglob("*.json")}
    assert committed == generated, f"contract/ has other files than the models give: {REGENERATE}"
    for rel in sorted(generated):
        assert (CONTRACT / rel).read_bytes() == (tmp_path / rel).read_bytes(), (
            f"contract/{rel} differs from the models: {REGENERATE}"
        )


def test_generate_is_deterministic(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    asyncapi.generate(first)
    asyncapi.generate(second)
    for path in sorted(first.rglob("*.json")):
        rel = path.relative_to(first)
        text = path.read_text()
        assert text.endswith("}\n")
        assert text == (second / rel).read_text()


def test_check_flags_stale_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert asyncapi.main(["--out", str(tmp_path)]) == 0
    assert asyncapi.main(["--out", str(tmp_path), "--check"]) == 0
    (tmp_path / "schemas" / "_mes_v1.stop.json").write_text("{}\n")
    (tmp_path / "schemas" / "_mes_v1.gone.json").write_text("{}\n")
    assert asyncapi.main(["--out", str(tmp_path), "--check"]) == 1
    err = capsys.readouterr().err
    assert "_mes_v1.stop.json" in err
    assert "_mes_v1.gone.json" in err
    asyncapi.generate(tmp_path)
    assert not (tmp_path / "schemas" / "_mes_v1.gone.json").exists()


def test_asyncapi_document_covers_every_topic() -> None:
    doc = json.loads((CONTRACT / "asyncapi.json").read_text())
    assert doc["asyncapi"] == "3.0.0"
    assert doc["info"]["version"] == CONTRACT_VERSION
    assert doc["servers"]["central"]["bindings"]["mqtt"]["lastWill"]["topic"] == (
        "{root}/_mes_v1/health"
    )
    by_address = {c["address"]: (cid, c) for cid, c in doc["channels"].items()}
    assert len(by_address) == len(CHANNELS)
    assert {t.path for t in TOPICS} < {t.path for t in CHANNELS}
    for t in CHANNELS:
        cid, channel = by_address[t.address]
        assert ("enterprise" if t.scope == "enterprise" else "root") in channel["parameters"]
        ops = [o for o in doc["operations"].values() if o["channel"]["$ref"] == f"#/channels/{cid}"]
        by_app: dict[str, set[str]] = {"gateway": set(), "relay": set()}
        for op in ops:
            (tag,) = op["tags"]
            by_app[tag["$ref"].rsplit("/", 1)[1]].add(op["action"])
            assert op["bindings"]["mqtt"]["qos"] == t.qos
            assert op["bindings"]["mqtt"]["retain"] == t.retain
        gateway = {"send" if t.direction == "up" else "receive"} if t.gateway else set()
        assert by_app == {"gateway": gateway, "relay": set(t.relay)}, t.path
        (ref,) = channel["messages"].values()
        message = doc["components"]["messages"][ref["$ref"].rsplit("/", 1)[1]]
        payload_file = CONTRACT / message["payload"]["$ref"]
        assert payload_file.is_file(), payload_file
    health = by_address["{root}/_mes_v1/health"][1]
    assert "Last Will" in health["description"]


@pytest.mark.parametrize("t", CHANNELS, ids=[t.path for t in CHANNELS])
def test_schema_is_a_valid_json_schema(t: Topic) -> None:
    schema = schema_for(t.path)
    jsonschema.Draft202012Validator.check_schema(schema)
    if t.enveloped:
        assert schema["properties"]["schema"]["const"] == t.schema
        assert set(schema["required"]) >= {"schema", "msg_id", "body"}


def test_readme_has_an_example_per_topic_and_lists_every_topic() -> None:
    text = README.read_text()
    paths = {path for path, _ in examples()}
    missing = [t.path for t in CHANNELS if t.path not in paths]
    assert not missing, f"contract/README.md has no example for {missing}"
    unknown = paths - {t.path for t in CHANNELS}
    assert not unknown, f"examples for unknown topics {unknown}"
    for t in CHANNELS:
        shown = t.address.replace("{enterprise}", "<enterprise>").removeprefix("{root}/")
        assert f"| `{shown}` " in text, f"{t.path} missing from the README's topic table"
        if t.schema:
            assert f"`{t.schema}`" in text


@pytest.mark.parametrize(
    ("path", "payload"), examples(), ids=[f"{i}:{p}" for i, (p, _) in enumerate(examples())]
)
def test_readme_example_validates(path: str, payload: Any) -> None:
    t = topic(path)
    jsonschema.Draft202012Validator(schema_for(path)).validate(payload)
    validate_with_models(t, payload)


def test_schema_rejects_what_the_models_reject() -> None:
    """A sanity check that the schema files are not trivially permissive."""
    bad = {
        "schema": "mes.cancel/1",
        "msg_id": "x",
        "body": {"order_id": "1/2", "operation": "0010"},
    }
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema_for("_mes_v1/order/cancel"))
    wrong_type = {"timestamp_ms": "soon", "value": 2}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(wrong_type, schema_for("_historian/counter/good"))


def test_up_schemas_let_consumers_ignore_fields_a_later_version_adds() -> None:
    """Versioning rule: within _mes_v1 fields are only added, so consumers' schemas allow more."""
    later = {"timestamp_ms": 1, "value": 2, "unit": "PC"}
    jsonschema.validate(later, schema_for("_historian/counter/good"))


def test_the_envelope_is_written_from_the_model() -> None:
    """The uplink's fast envelope (text around the stored body) is the model's, field by field."""
    from edge.sync.contract import ENVELOPE_HEAD, Envelope, envelope_json

    fields = [f.alias or name for name, f in Envelope.model_fields.items()]
    assert [*ENVELOPE_HEAD, "body"] == fields
    body = '{"type":"x","event_time":"2024-03-04T10:00:00Z","odd":"quote \\" and é"}'
    text = envelope_json(
        body,
        schema="mes.order-event/1",
        msg_id="m-1",
        idem_key=None,
        edge_id="wc-1",
        boot_seq=3,
        seq=7,
        ts_event_ms=1,
        ts_sent_ms=2,
        historical=False,
    )
    env = Envelope[dict[str, object]].model_validate_json(text)  # type: ignore[type-var]
    assert env.model_dump(by_alias=True)["body"] == json.loads(body)
    assert json.loads(text)["seq"] == 7
    with pytest.raises(ValueError, match="missing"):
        envelope_json(body, schema="x")


def test_every_published_event_type_is_in_its_topics_model_and_no_other() -> None:
    """The event -> topic map (edge/sync/messages.py) and the models' ``type`` lists agree."""
    import typing

    from edge.sync import messages

    for path in {*messages.TOPICS.values()}:
        model = topic(path).model
        allowed = set(typing.get_args(model.model_fields["type"].annotation))
        sent = {e.value for e, p in messages.TOPICS.items() if p == path}
        assert sent == allowed, f"{path}: sent {sorted(sent ^ allowed)} differ from the model"


def test_the_relay_s_kpi_is_what_the_contract_describes() -> None:
    """edge/relay/kpi.py builds the retained relay/kpi message: it matches the model and schema."""
    from edge.relay.kpi import kpi_body

    payload = kpi_body([40, 1200, 9000], 3600.0, "sap", 1741003600000)
    jsonschema.Draft202012Validator(schema_for("_mes_v1/relay/kpi")).validate(payload)
    validate_with_models(topic("_mes_v1/relay/kpi"), payload)


def test_the_last_wills_are_defined_once_and_documented_as_sent() -> None:
    """The AsyncAPI server binding and the README show the Last Will the gateway connects with
    (``gateway_last_will``, used by edge/sync/presence.py); the relay/state channel and the README
    the relay's (``relay_last_will``, used by edge/relay/service.py)."""
    from edge.sync.presence import last_will

    doc = json.loads((CONTRACT / "asyncapi.json").read_text())
    will = doc["servers"]["central"]["bindings"]["mqtt"]["lastWill"]
    sent = last_will("umh/v1/acme/plant1/stamping/line4/PRESS07", "wc-press-07")
    assert will["topic"].replace("{root}", "umh/v1/acme/plant1/stamping/line4/PRESS07") == (
        sent.topic
    )
    assert json.loads(will["message"].replace("<edge_id>", "wc-press-07")) == json.loads(
        sent.payload
    )
    assert sent.payload == gateway_last_will("wc-press-07")
    assert (will["qos"], will["retain"]) == (sent.qos, sent.retain) == (1, True)
    readme_wills = [p for path, p in examples() if p.get("online") is False]
    assert json.loads(gateway_last_will("wc-press-07")) in readme_wills
    assert json.loads(relay_last_will()) in readme_wills
    state = doc["components"]["messages"]["MesV1RelayState"]
    assert [x["payload"] for x in state["examples"]] == [json.loads(relay_last_will())]
