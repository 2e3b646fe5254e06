"""``/metrics``: the Prometheus exposition reads the real engine and store."""

from __future__ import annotations

import asyncio
import contextlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from edge.domain.inputs import Action, CallForHelp, DispatchList, Pulses, Transition
from edge.engine import Engine
from edge.metrics import MetricsSources, render
from edge.store.store import Store
from edge.sync import messages
from tests.engine.helpers import rules, spec

SAMPLE = re.compile(r'^[a-z_]+(\{[a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*\})? -?[0-9.e+]+$')


@dataclass
class LinkState:
    connects: int = 3
    errors: int = 7


@dataclass
class Adapter:
    """What the metrics read of a source adapter (OpcUaLink, ModbusLink have the same)."""

    state: LinkState = field(default_factory=LinkState)


def parse(text: str) -> dict[str, float]:
    """Every line is a comment or a valid sample; every family has HELP and TYPE first."""
    samples: dict[str, float] = {}
    declared: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# HELP "):
            declared.add(line.split()[2])
            continue
        if line.startswith("# TYPE "):
            assert line.split()[3] in {"gauge", "counter", "histogram"}, line
            continue
        assert SAMPLE.match(line), f"not a Prometheus sample: {line!r}"
        name_labels, value = line.rsplit(" ", 1)
        family = re.sub(r"_(bucket|sum|count)$", "", name_labels.split("{")[0])
        assert name_labels.split("{")[0] in declared or family in declared, f"no HELP: {line!r}"
        samples[name_labels] = float(value)
    return samples


async def test_metrics_show_the_writer_the_outbox_the_links_and_the_floor(tmp_path: Path) -> None:
    engine = await Engine.open(Store(tmp_path / "edge.db"), rules(), outbound=messages)
    task = asyncio.create_task(engine.run(tick_interval_s=None))
    try:
        now = engine.now
        await engine.submit(DispatchList(1, (spec(std_cycle_s=1.0),), now()))
        await engine.submit(Transition(Action.START_PRODUCTION, "4711/0020", "operator:7", now()))
        await engine.submit(Pulses("pulses", 5, now()))
        await engine.submit(CallForHelp("material", "button:call", now()))
        sources = MetricsSources(
            links=lambda: {"opcua:press": "ok", "modbus:io1": "down"},
            adapters=lambda: {"modbus:io1": Adapter()},
        )
        before = parse(await render(engine, sources))
        await engine.checkpoint()
        m = parse(await render(engine, sources))
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await engine.close()
    assert m["edge_up"] == 1
    assert m["edge_store_healthy"] == 1
    assert m["edge_inputs_journaled_total"] >= 4
    assert m['edge_link_up{link="opcua:press"}'] == 1
    assert m['edge_link_up{link="modbus:io1"}'] == 0
    # Nothing was sent (no broker here): every business message is still pending.
    assert m['edge_outbox_messages{state="pending"}'] >= 4
    assert m["edge_outbox_oldest_age_seconds"] >= 0
    assert m['edge_source_connects_total{link="modbus:io1"}'] == 3
    assert m['edge_source_errors_total{link="modbus:io1"}'] == 7
    assert m["edge_active_operations"] == 1
    assert m["edge_help_calls_open"] == 1
    # Checkpoints and retention: none before, one after; every table's pruned rows shown.
    assert before["edge_checkpoint_age_seconds"] == -1
    assert m["edge_checkpoints_written_total"] == 1
    assert 0 <= m["edge_checkpoint_age_seconds"] < 60
    for table in ("journal", "event", "outbox", "checkpoint"):
        assert m[f'edge_retention_pruned_rows_total{{table="{table}"}}'] == 0
    assert m["edge_command_ids_remembered"] == engine.command_id_count
