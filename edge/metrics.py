"""Prometheus text exposition of the gateway's health, served by the local API at ``/metrics``.

Only numbers a plant's monitoring acts on: is the writer alive and keeping up, is the outbox
draining, are the machine links up (and how often they reconnect or fail), how long the broker
takes to acknowledge, how old is the oldest message central has not got. The names follow
Prometheus conventions (``_total`` for counters, base units in the name).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from edge.histogram import Histogram

if TYPE_CHECKING:  # for the annotation only: the sync component imports MqttFigures from here
    from edge.ports import MetricsFace


@dataclass(frozen=True, slots=True)
class MqttFigures:
    """What ``/metrics`` shows of the MQTT sync, as the sync component reports it."""

    connected: bool
    relay_online: bool
    connects: int  # connections to the broker made
    sent: int
    acked: int
    refused: int
    requeued: int
    withheld: int
    publish_latency: Histogram  # publish -> PUBACK, seconds


class MqttReporter(Protocol):
    """Whatever reports the MQTT figures (the sync component); metrics never imports it."""

    def mqtt_figures(self) -> MqttFigures: ...


@dataclass(slots=True)
class MetricsSources:
    """What the metrics read besides the engine; the daemon fills it in as it wires things up."""

    links: Callable[[], dict[str, str]] = dict
    # The source adapters by link name; those with a ``state.connects`` / ``state.errors``
    # (OPC UA, Modbus) give reconnect and error counts.
    adapters: Callable[[], Mapping[str, object]] = dict
    sync: MqttReporter | None = None  # None: MQTT not enabled
    started_at: float = field(default_factory=time.time)


def _line(name: str, value: float, labels: dict[str, str] | None = None) -> str:
    if labels:
        inner = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))
        return f"{name}{{{inner}}} {value}"
    return f"{name} {value}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _family(name: str, kind: str, help_text: str, lines: list[str]) -> list[str]:
    return [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", *lines]


def _one(name: str, kind: str, help_text: str, value: float) -> list[str]:
    return _family(name, kind, help_text, [_line(name, value)])


def _retention(engine: MetricsFace) -> list[str]:
    """Checkpoints and retention ([retention]): what was written, pruned and given back."""
    r = engine.retention
    out: list[str] = []
    out += _family(
        "edge_retention_pruned_rows_total",
        "counter",
        "Rows deleted by retention since the start, by table (never an unfinished outbox row).",
        [
            _line("edge_retention_pruned_rows_total", n, {"table": table})
            for table, n in (
                ("journal", r.journal_pruned),
                ("event", r.events_pruned),
                ("outbox", r.outbox_pruned),
                ("checkpoint", r.checkpoints_pruned),
            )
        ],
    )
    for name, value, help_text in (
        ("edge_checkpoints_written_total", r.checkpoints_written, "Checkpoints written."),
        ("edge_retention_pages_returned_total", r.pages_returned, "Pages given back (vacuum)."),
        ("edge_retention_failures_total", r.failures, "Maintenance steps that failed (retried)."),
        (
            "edge_retention_exported_rows_total",
            r.exported,
            "Rows written to the archive before their deletion ([retention] export_dir).",
        ),
        (
            "edge_retention_export_failures_total",
            r.export_failures,
            "Retention runs that stopped deleting because the export failed.",
        ),
        (
            "edge_counts_refused_total",
            r.counts_refused,
            "Machine-count inputs refused while the disk was below the floor.",
        ),
    ):
        out += _one(name, "counter", help_text, value)
    out += _one(
        "edge_disk_free_bytes",
        "gauge",
        "Free space for the database: its file system's and its own free pages (-1: unknown).",
        -1 if r.free_bytes is None else r.free_bytes,
    )
    out += _one(
        "edge_disk_floor_bytes",
        "gauge",
        "The disk watermark, [retention] min_free_mb (0: none).",
        r.floor_bytes,
    )
    out += _one(
        "edge_disk_low",
        "gauge",
        "1 while machine counts are refused: free space below the floor.",
        1 if r.disk_low else 0,
    )
    age = engine.checkpoint_age_s()
    out += _one(
        "edge_checkpoint_age_seconds",
        "gauge",
        "Seconds since the newest checkpoint (-1 before the first).",
        -1 if age is None else round(age, 3),
    )
    out += _one(
        "edge_command_ids_remembered",
        "gauge",
        "Command and message ids remembered to refuse a duplicate (bounded by retention).",
        engine.command_id_count,
    )
    return out


async def render(engine: MetricsFace, sources: MetricsSources) -> str:
    """The whole exposition; the outbox figures are read on the store's thread."""
    open_counts = await engine.outbox_open_counts()
    oldest_ms = await engine.outbox_oldest_ms()
    s = engine.stats
    out: list[str] = []
    out += _one("edge_up", "gauge", "1 while the engine's writer runs.", 1 if engine.running else 0)
    out += _one(
        "edge_store_healthy",
        "gauge",
        "0 after a failed commit until the next success.",
        1 if engine.healthy else 0,
    )
    out += _one(
        "edge_wall_clock_trusted",
        "gauge",
        "0 while the wall clock is before a plausible time (no RTC, no NTP yet): event times "
        "are untrusted.",
        1 if engine.clock_trusted else 0,
    )
    out += _one(
        "edge_start_time_seconds",
        "gauge",
        "When the daemon started (Unix time).",
        round(sources.started_at, 3),
    )
    for name, value, help_text in (
        ("edge_inputs_total", s.inputs, "Inputs applied to the core (accepted or rejected)."),
        ("edge_inputs_journaled_total", s.journaled, "Inputs journaled (they changed the state)."),
        ("edge_inputs_rejected_total", s.rejected, "Inputs the core refused."),
        ("edge_commits_total", s.commits, "SQLite transactions committed."),
        ("edge_commit_failures_total", s.commit_failures, "Commits that failed (disk full, I/O)."),
        ("edge_internal_errors_total", s.internal_errors, "Inputs that hit a bug in the core."),
    ):
        out += _one(name, "counter", help_text, value)
    out += _one("edge_queue_depth", "gauge", "Inputs waiting for the writer.", engine.queue_depth)
    out += _family(
        "edge_outbox_messages",
        "gauge",
        "Outbox messages not finished, by state.",
        [
            _line("edge_outbox_messages", open_counts.get(state, 0), {"state": state})
            for state in ("pending", "published")
        ],
    )
    age = 0.0 if oldest_ms is None else max(0.0, time.time() - oldest_ms / 1000)
    out += _one(
        "edge_outbox_oldest_age_seconds",
        "gauge",
        "Age of the oldest unfinished outbox message (0 when empty).",
        round(age, 3),
    )
    out += _retention(engine)
    out += _family(
        "edge_link_up",
        "gauge",
        "1 when a machine link reports ok.",
        [
            _line("edge_link_up", 1 if status == "ok" else 0, {"link": link})
            for link, status in sorted(sources.links().items())
        ],
    )
    out += _source_counters(sources.adapters())
    if sources.sync is not None:
        out += _mqtt(sources.sync.mqtt_figures())
    wc = engine.work_center
    out += _one(
        "edge_active_operations", "gauge", "Operations active at the work center.", len(wc.active)
    )
    stop = wc.open_stop
    out += _family(
        "edge_stop_open",
        "gauge",
        "1 while a stop is open; reason=pending when unknown.",
        [
            _line(
                "edge_stop_open",
                1 if stop else 0,
                {"reason": (stop.reason or "pending") if stop else ""},
            )
        ],
    )
    out += _one(
        "edge_help_calls_open", "gauge", "Calls for help not yet closed.", len(wc.help_calls)
    )
    return "\n".join(out) + "\n"


def _source_counters(adapters: Mapping[str, object]) -> list[str]:
    connects: list[str] = []
    errors: list[str] = []
    for link, adapter in sorted(adapters.items()):
        state = getattr(adapter, "state", None)
        n = getattr(state, "connects", None)
        if isinstance(n, int):
            connects.append(_line("edge_source_connects_total", n, {"link": link}))
        n = getattr(state, "errors", None)
        if isinstance(n, int):
            errors.append(_line("edge_source_errors_total", n, {"link": link}))
    return [
        *_family(
            "edge_source_connects_total",
            "counter",
            "Connections a machine link made (more than 1: it reconnected).",
            connects,
        ),
        *_family(
            "edge_source_errors_total",
            "counter",
            "Failed reads or lost sessions of a machine link.",
            errors,
        ),
    ]


def _mqtt(m: MqttFigures) -> list[str]:
    out = _one(
        "edge_mqtt_connected", "gauge", "1 while connected to the broker.", 1 if m.connected else 0
    )
    out += _one(
        "edge_mqtt_relay_online",
        "gauge",
        "0 while the ERP relay says it is offline (confirmations wait).",
        1 if m.relay_online else 0,
    )
    for name, value, help_text in (
        ("edge_mqtt_connects_total", m.connects, "Connections to the broker made."),
        ("edge_mqtt_sent_total", m.sent, "Messages published (QoS 1)."),
        ("edge_mqtt_acked_total", m.acked, "Publishes the broker acknowledged."),
        ("edge_mqtt_refused_total", m.refused, "Publishes the broker refused (PUBACK >= 0x80)."),
        ("edge_mqtt_requeued_total", m.requeued, "Confirmations sent again, relay silent."),
        ("edge_mqtt_withheld_total", m.withheld, "Messages held back while the relay was away."),
    ):
        out += _one(name, "counter", help_text, value)
    out += _histogram("edge_mqtt_publish_seconds", "Publish to PUBACK, seconds.", m.publish_latency)
    return out


def _histogram(name: str, help_text: str, h: Histogram) -> list[str]:
    lines = [_line(f"{name}_bucket", n, {"le": le}) for le, n in h.cumulative()]
    lines += [_line(f"{name}_sum", round(h.sum, 6)), _line(f"{name}_count", h.total)]
    return _family(name, "histogram", help_text, lines)
