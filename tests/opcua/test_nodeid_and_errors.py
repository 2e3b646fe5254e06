"""Node references in the config (nsu= ids, browse paths) and failures told in words."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from asyncua.ua.uaerrors import BadSessionClosed

from edge.config import load_config
from edge.errors import ConfigError
from edge.opcua_nodeid import Namespace, ParsedNodeId, ParsedPath, PathSegment, parse_node_ref
from edge.sources.opcua_errors import ASYNCUA_FILTER, Where, explain, quiet_asyncua

CONFIG = """
[gateway]
edge_id = "wc-press-07"
work_center = "PRESS07"

[[counting.sources]]
name = "press_good"
kind = "good"

[[sources.opcua]]
name = "press"
endpoint = "opc.tcp://10.0.0.7:4840"
state_node = {state}

[[sources.opcua.counters]]
counter = "press_good"
node = {node}
"""


def load(tmp_path: Path, node: str, state: str = "i=2259") -> None:
    path = tmp_path / "edge.toml"
    path.write_text(CONFIG.format(node=f"'{node}'", state=f"'{state}'"))
    load_config(path, env={})


@pytest.mark.parametrize(
    "ref",
    [
        "nsu=urn:acme:press;s=Press07.GoodCount",
        "nsu=http://acme.example/UA/Press/;i=6001",
        "nsu=urn:acme:press;g=72962b91-fa75-4ae6-8d28-b404dc7daf63",
        "nsu=urn:acme:press;b=UHJlc3M=",
        "ns=2;s=Press07.Counters.GoodCount",
        "i=2259",
        "Objects/2:Machines/2:Press07",
        "Objects/nsu=http://acme.example/UA/Press/;Press07/nsu=urn:acme:press;GoodCount",
    ],
)
def test_the_config_takes_node_ids_with_namespace_uris_and_paths(tmp_path: Path, ref: str) -> None:
    load(tmp_path, ref, state=ref)


@pytest.mark.parametrize(
    ("ref", "reason"),
    [
        ("nsu=urn:acme:press", "nsu=<namespace uri>;<i|s|g|b>=<id>"),
        ("nsu=;s=Press07.GoodCount", "nsu=<namespace uri>;<i|s|g|b>=<id>"),
        ("nsu=urn:acme:press;x=1", "i=<number>, s=<string>"),
        ("ns=two;s=Press07", "ns=<namespace index>;<i|s|g|b>=<id>"),
        ("i=GoodCount", "a number"),
        ("g=1234", "GUID"),
        ("b=not base64!", "base64"),
        ("Objects/nsu=urn:acme:press", "nsu=<namespace uri>;<Name>"),
    ],
)
def test_a_bad_node_reference_is_refused_naming_field_value_and_form(
    tmp_path: Path, ref: str, reason: str
) -> None:
    with pytest.raises(ConfigError) as err:
        load(tmp_path, ref)
    text = str(err.value)
    assert "sources.opcua[press].counters.0.node" in text
    assert repr(ref) in text
    assert reason in text
    with pytest.raises(ConfigError) as err:
        load(tmp_path, "i=85", state=ref)
    assert "sources.opcua[press].state_node" in str(err.value)


def test_a_namespace_uri_with_slashes_stays_one_browse_path_segment() -> None:
    parsed = parse_node_ref("Objects/nsu=http://acme.example/UA/;Press07/3:GoodCount")
    assert parsed == ParsedPath(
        (
            PathSegment(Namespace(), "Objects"),
            PathSegment(Namespace(uri="http://acme.example/UA/"), "Press07"),
            PathSegment(Namespace(index=3), "GoodCount"),
        )
    )
    assert parse_node_ref("nsu=urn:a;s=x;y") == ParsedNodeId(Namespace(uri="urn:a"), "s", "x;y")


def test_status_codes_read_as_cause_and_fix() -> None:
    where = Where(
        "opc.tcp://press:4840", secure=True, own_cert=Path("/pki/own/cert.der"), timeout_s=5
    )
    untrusted = explain(BadSessionClosed(), where)
    assert "closed the session" in untrusted
    from asyncua.ua.uaerrors import BadCertificateUntrusted, BadShutdown, BadUserAccessDenied

    line = explain(BadCertificateUntrusted(), where, "create")
    assert "/pki/own/cert.der" in line
    assert "edge certs" in line
    assert "shutting down" in explain(BadShutdown(), where)
    user = Where("opc.tcp://press:4840", username="tech")
    assert "refused the user 'tech'" in explain(BadUserAccessDenied(), user, "activate")
    # What node-opcua's ERR for an untrusted certificate leaves asyncua with:
    closed = explain(ConnectionError("connection lost"), where, "channel")
    assert "does not trust this gateway's certificate" in closed
    assert "/pki/own/cert.der" in closed
    assert "AssertionError" not in explain(AssertionError(), where, "channel")
    assert "nothing listens" in explain(ConnectionRefusedError(111, "refused"), where, "socket")


def test_asyncua_tracebacks_become_one_line_said_once(caplog: pytest.LogCaptureFixture) -> None:
    quiet_asyncua()
    ASYNCUA_FILTER.forget()  # another test may have said the same line a moment ago
    logger = logging.getLogger("asyncua.client.ua_session.UaSession")
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            try:
                raise BadSessionClosed()
            except BadSessionClosed:
                logger.exception("Publish iteration crashed; retrying in 1s")
    crashed = [r for r in caplog.records if "Publish iteration crashed" in r.getMessage()]
    assert len(crashed) == 1
    assert crashed[0].exc_info is None
    assert crashed[0].getMessage().endswith(": BadSessionClosed")
    assert "Traceback" not in caplog.text
