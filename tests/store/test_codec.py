"""The stored form of what the core keeps (edge.store.codec): an operation with components,
batch loads and consumption reads back as it was, and one without them is stored exactly as
before those fields existed, so ``edge verify`` holds across the upgrade."""

from __future__ import annotations

import json
from decimal import Decimal

from edge.domain.inputs import Action, ComponentBatchLoaded, ComponentConsumed, Pulses
from edge.domain.model import ComponentSpec
from edge.store import codec
from tests.domain.builders import OPERATOR, act, at, make_wc, ok, pulse_source, spec

COMPONENTS = (
    ComponentSpec("STEEL", Decimal("0.25"), "KG", backflush=True, batch_managed=True),
    ComponentSpec("LABEL", Decimal(1), batch_managed=True, item="0030", gtin="04012345000014"),
)


def test_components_batches_and_consumption_read_back_as_they_were() -> None:
    wc = make_wc(spec(components=COMPONENTS, batch="FG-1"), sources=(pulse_source("press1"),))
    act(wc, Action.START_PRODUCTION, 0)
    ok(wc, ComponentBatchLoaded("B1", OPERATOR, at(1), material="STEEL", expiry="2027-01-31"))
    ok(wc, ComponentBatchLoaded("L1", OPERATOR, at(2), gtin="04012345000014"))
    ok(wc, Pulses("press1", 6, at(30)))
    ok(wc, ComponentConsumed("LABEL", Decimal("6.5"), OPERATOR, at(31)))
    act(wc, Action.COMPLETE, 40)
    docs = codec.all_docs(wc)
    back = codec.restore(docs)
    assert back is not None
    assert back.operations == wc.operations
    assert back.confirmations == wc.confirmations
    assert codec.all_docs(back) == docs
    (conf,) = back.confirmations.values()
    assert conf.consumption == {"STEEL": {"B1": Decimal("1.5")}, "LABEL": {"L1": Decimal("6.5")}}


def test_an_operation_without_components_is_stored_as_before_they_existed() -> None:
    wc = make_wc(spec(), sources=(pulse_source("press1"),))
    act(wc, Action.START_PRODUCTION, 0)
    ok(wc, Pulses("press1", 3, at(30)))
    act(wc, Action.COMPLETE, 40)
    docs = codec.all_docs(wc)
    (op_doc,) = docs["operation"].values()
    op = json.loads(op_doc)
    assert not {"batch_loads", "consumed", "consumed_confirmed"} & op.keys()
    assert not {"components", "batch"} & op["spec"].keys()
    (conf_doc,) = docs["confirmation"].values()
    assert "consumption" not in json.loads(conf_doc)
