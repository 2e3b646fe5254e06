"""The file ERP: confirmations and reversals written as files into a drop folder that an older
ERP (Navision, InforCOM-style interfaces) reads, in one of two formats:

- ``b2mml``: a B2MML V0700 ``OperationsPerformance`` document (namespace
  ``http://www.mesa.org/xml/B2MML``, UTF-8 with an XML declaration), see :func:`b2mml_document`.
- ``csv``: one header line (:data:`COLUMNS`) and one row, see :func:`csv_document`.

**File names.** ``name_pattern`` (default :data:`DEFAULT_PATTERN`) is filled with the posting's
fields, each reduced to ``[A-Za-z0-9_-]`` (anything else becomes ``-``, at most 64 characters).
Placeholders: ``work_center``, ``order_id``, ``operation``, ``split``, ``conf_index``, ``seq``,
``edge_id``, ``posting_date``, ``kind`` (``conf`` or ``rev``), ``key8`` / ``key16`` / ``key``
(the first 8 / 16 / all 64 hex digits of SHA-256 over the posting's ``instance_key``: its
``idem_key``, with ``|resubmit|<n>`` once a person resubmitted it after a rejection; the pattern
must hold one of them) and ``ext`` (``xml`` or ``csv``). The same posting therefore always gets
the same name, two postings never share one, and a resubmission is a new file beside the
rejected one and its ``.err``.

**Writing.** The document goes to a temporary file in the drop folder (``.<name>.<random>.tmp``:
a leading dot and a ``.tmp`` suffix, which the ERP must ignore), is fsynced, renamed to its
final name with :func:`os.replace` and the folder is fsynced: the ERP sees the whole file or
nothing. A failure (disk full, permission denied, read-only file system) removes the temporary
file and answers :class:`~edge.relay.erp.Transient` with the OS error's text. A crash between
writing and renaming leaves only a temporary file, which :meth:`FileAdapter.start` removes once
it is older than an hour. All file I/O runs in a worker thread (:func:`asyncio.to_thread`).

A posting is written at most once per name: before writing, :meth:`FileAdapter.post` looks for
what the ERP left (an answer file, the file in the archive, the file still in the drop folder)
and answers from that instead of writing again. A file already in the drop folder with the same
bytes is left alone (an ERP that watches the folder would see a second write as a second file).

**Answers** (``ack_dir`` set). The ERP answers a file ``<name>`` with one file in ``ack_dir``:

- ``<name>.ok``: posted. Each line ``key=value`` becomes a key of :class:`Posted` (``document=
  4900000017``); a line without ``=`` is taken as ``document``. ``file`` is always the name.
- ``<name>.err``: rejected. The first line is the ERP's text; a leading code
  (``E123: Order 1000123 is locked``: one word with a digit, then ``:``) becomes ``code`` and the
  rest ``text``.

The ERP should write answers under a temporary name and rename them; an empty answer file less
than two seconds old is taken as one still being written. Answer files are read in ``encoding``
(undecodable bytes replaced) and never deleted by the adapter: they are what :meth:`lookup`
reads later.

:meth:`FileAdapter.post` then answers :class:`Submitted` with ``ref = {"file": <name>,
"written_ms": <ms>}`` and :meth:`FileAdapter.poll` looks for the answer. With no answer after
``ack_timeout_s``: when the file is still in the drop folder (the ERP does not read it), poll
answers :class:`Transient` (posting again rewrites nothing: the same name is already there);
when the ERP took the file but did not answer, :class:`Unknown` (the relay asks
:meth:`FileAdapter.lookup`; the file is never written again under another name).

Without ``ack_dir`` a file that is durably in the drop folder counts as posted:
``Posted(keys={"file": <name>})``.

**Lookup** reads the answer files, the drop folder and ``archive_dir`` (where the ERP moves the
files it processed): an ``.ok`` answer is :class:`Posted`; the file present without an answer is
:class:`Submitted` (or :class:`Posted` without ``ack_dir``); an ``.err`` answer or no trace at all
is :class:`NotFound` (posting again then answers the rejection from the ``.err`` file without
writing). An ERP that deletes processed files leaves no trace unless it answers: without
``ack_dir``, set ``archive_dir``.

**CSV** (:data:`COLUMNS`, in this order): ``kind`` (``confirmation``/``reversal``),
``idem_key``, ``edge_id``, ``order``, ``operation``, ``split``, ``conf_index``,
``work_center``, ``material``, ``unit``, ``yield``, ``scrap``, ``rework``,
``scrap_by_reason`` and ``rework_by_reason`` (``code:qty|code:qty``), ``setup_s``,
``machine_s``, ``labour_s`` (seconds), ``period_start``, ``period_end`` (ISO 8601 UTC,
``2025-03-04T06:00:00Z``), ``posting_date`` (``YYYY-MM-DD``), ``final`` (``1``/``0``),
``variance_reason``, ``confirmation_no``, ``reverses_key`` (the ``idem_key`` of the
confirmation a reversal cancels). Decimals with a point, or a comma with ``decimal_comma``;
fields are quoted by :mod:`csv` where needed (``QUOTE_MINIMAL``), lines end in CRLF, the file is
encoded in ``encoding`` (a character the encoding cannot hold rejects the posting).

**B2MML** (child order per the V0700 sequence)::

    ProcessOperationsPerformance releaseID=V0700     (a reversal: CancelOperationsPerformance)
      ApplicationArea
        Sender/LogicalID = edge_id, Sender/ReferenceID = idem_key
        CreationDateTime = the event's time; BODID = Posting.external_id (GUID of idem_key)
      DataArea
        Process (a reversal: Cancel)
        OperationsPerformance
          ID = idem_key (a reversal: reverses_idem_key, the document it cancels)
          Description = 1000123/0010#4 (a reversal: "reversal of ...")
          HierarchyScope = EquipmentID work_center, EquipmentElementLevel WorkCenter
          OperationsType Production, OperationsScheduleID = order, StartTime, EndTime (period)
          OperationsResponse
            ID = OperationsRequestID = order, OperationsType, StartTime, EndTime,
            ResponseState = Completed (final) or Running
            SegmentResponse
              ID = operation (``0010/1`` for split 1), HierarchyScope, OperationsType,
              ProcessSegmentID = operation, ActualStartTime, ActualEndTime,
              PostingDate = <posting_date>T00:00:00, SegmentState = Completed or Running,
              SegmentData (ID + Value/ValueString + DataType): ConfirmationCounter, Split,
                FinalConfirmation, SetupDuration, RunDuration, LabourDuration (ISO 8601
                durations, PT1H30M), VarianceReason, ConfirmationNumber, Actor
              MaterialActual: MaterialDefinitionID, MaterialUse Produced, Quantity (yield)
              MaterialActual per scrap reason: MaterialUse Other OtherValue=Scrap, Quantity,
                MaterialActualProperty ID ReasonCode (Value = the reason code)
              MaterialActual per rework reason: the same with OtherValue=Rework
              MaterialActual per goods movement (``goods_movements``: ``recorded``, the
                default, those of components not backflushed; ``all``; ``none``):
                MaterialDefinitionID, MaterialLotID (the batch), MaterialUse Consumed (a
                return: Other OtherValue=Returned), Quantity with its unit,
                MaterialActualProperty ReservationItem and Backflush (true/false); the
                Produced one carries the produced batch as MaterialLotID. A reversal carries
                the cancelled confirmation's movements (the ERP takes them back with it).
                The CSV layout has no place for goods movements: none are written there.

**Not confirmed** (conventions of this adapter, not facts about any ERP): that an ERP reads a
reversal as ``CancelOperationsPerformance`` whose ``OperationsPerformance/ID`` is the cancelled
document's ID (the verb is B2MML's, its meaning for performance is ours); scrap and rework as
``MaterialUse Other`` with ``OtherValue`` (the schema has no scrap use); the ``SegmentData``
IDs (ours; the ``DataType`` values ``integer``, ``boolean``, ``duration``, ``string`` and
``decimal`` are in B2MML's ``DataTypeEnum``); ``PostingDate`` as the date at midnight (the
plant's local date, no zone); ``Sender/ReferenceID`` carrying the idempotency key; the answer
file convention above; the CSV layout (no standard exists). The output has not been validated
against the V0700 XSDs here (they are not vendored); the child order follows the reference.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import errno
import hashlib
import io
import os
import re
import string
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated, ClassVar, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edge.relay.checks import check_folders, distinct_folders
from edge.relay.erp import (
    ErpAdapter,
    GoodsMovement,
    GoodsMovementsMode,
    LookupOutcome,
    NotFound,
    Outcome,
    Posted,
    Posting,
    Quantity,
    Rejected,
    Submitted,
    Transient,
    Unknown,
    movements_to_post,
)

B2MML_NS: Final = "http://www.mesa.org/xml/B2MML"
B2MML_RELEASE: Final = "V0700"

COLUMNS: Final[tuple[str, ...]] = (
    "kind",
    "idem_key",
    "edge_id",
    "order",
    "operation",
    "split",
    "conf_index",
    "work_center",
    "material",
    "unit",
    "yield",
    "scrap",
    "rework",
    "scrap_by_reason",
    "rework_by_reason",
    "setup_s",
    "machine_s",
    "labour_s",
    "period_start",
    "period_end",
    "posting_date",
    "final",
    "variance_reason",
    "confirmation_no",
    "reverses_key",
)
"""The CSV columns, in order: the header line of every CSV file (the stand-in reads by it)."""

DEFAULT_PATTERN: Final = "{work_center}_{order_id}_{operation}_{conf_index}_{kind}_{key8}.{ext}"
PLACEHOLDERS: Final = frozenset(
    {
        "work_center",
        "order_id",
        "operation",
        "split",
        "conf_index",
        "seq",
        "edge_id",
        "posting_date",
        "kind",
        "key8",
        "key16",
        "key",
        "ext",
    }
)
_KEY_PLACEHOLDERS: Final = frozenset({"key8", "key16", "key"})
OK_SUFFIX: Final = ".ok"
ERR_SUFFIX: Final = ".err"
TMP_SUFFIX: Final = ".tmp"
# A temporary file left by a crash is removed at start once it is this old (another relay
# sharing the folder may be writing a younger one).
STALE_TMP_S: Final = 3600.0
# An empty answer file younger than this is taken as one still being written.
_FRESH_EMPTY_S: Final = 2.0
_MAX_NAME: Final = 200
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_ERR_CODE = re.compile(r"^([A-Za-z_-]*[0-9][A-Za-z0-9_-]*)\s*:\s*(.*)$")


class Settings(BaseModel):
    """``[erp]`` with ``system = "file"``. Every number is bounded; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)

    system: Literal["file"]
    format: Literal["b2mml", "csv"]
    # where the files go (must exist and be writable at start)
    drop_dir: Annotated[Path, Field(strict=False)]
    # the file name: placeholders in the module docstring; one of {key8}/{key16}/{key} required
    name_pattern: Annotated[str, Field(min_length=1, max_length=200)] = DEFAULT_PATTERN
    # where the ERP writes <name>.ok / <name>.err; None: a durable file counts as posted
    ack_dir: Annotated[Path, Field(strict=False)] | None = None
    # where the ERP moves the files it processed (read by lookup); None: it deletes them
    archive_dir: Annotated[Path, Field(strict=False)] | None = None
    # no answer this long after writing: Transient (not taken) or Unknown (taken, unanswered)
    ack_timeout_s: Annotated[float, Field(ge=1.0, le=7 * 86400.0)] = 900.0
    # Submitted.poll_after_s: how soon the relay asks again
    poll_interval_s: Annotated[float, Field(ge=0.05, le=300.0)] = 2.0
    # CSV only: the field separator, decimal comma; CSV files and answer files: the encoding
    csv_delimiter: Annotated[str, Field(min_length=1, max_length=1)] = ";"
    decimal_comma: bool = False
    encoding: Literal["utf-8", "cp1252"] = "utf-8"
    # The goods movements written (edge.relay.erp.GoodsMovementsMode), B2MML only: the CSV
    # layout has no place for them. Default: "recorded" with b2mml, "none" with csv.
    goods_movements: GoodsMovementsMode | None = None

    @property
    def movements_mode(self) -> GoodsMovementsMode:
        if self.goods_movements is not None:
            return self.goods_movements
        return "recorded" if self.format == "b2mml" else "none"

    @field_validator("name_pattern")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        fields: set[str] = set()
        try:
            parsed = list(string.Formatter().parse(value))
        except ValueError as exc:
            raise ValueError(f"name_pattern {value!r}: {exc}") from None
        for _, name, spec, conversion in parsed:
            if name is None:
                continue
            if name not in PLACEHOLDERS:
                known = ", ".join(sorted(PLACEHOLDERS))
                raise ValueError(f"name_pattern: unknown placeholder {{{name}}}; known: {known}")
            if spec or conversion:
                raise ValueError(f"name_pattern: {{{name}}} takes no format or conversion")
            fields.add(name)
        if not fields & _KEY_PLACEHOLDERS:
            raise ValueError(
                "name_pattern must hold {key8}, {key16} or {key} (the same posting, the same "
                "name; two postings, two names)"
            )
        sample = value.format(**dict.fromkeys(PLACEHOLDERS, "x"))
        if "/" in value or "\\" in value or ".." in sample or "\0" in value:
            raise ValueError(f"name_pattern {value!r} must give a plain file name (no / or ..)")
        if sample.startswith(".") or sample.endswith((TMP_SUFFIX, OK_SUFFIX, ERR_SUFFIX)):
            raise ValueError(
                f"name_pattern {value!r} must not start with '.' or end in .tmp, .ok or .err "
                "(names of temporary and answer files)"
            )
        return value

    @model_validator(mode="after")
    def _comma_not_both(self) -> Settings:
        if self.decimal_comma and self.csv_delimiter == ",":
            raise ValueError("csv_delimiter ',' cannot go with decimal_comma = true")
        if self.csv_delimiter in {'"', "\r", "\n"}:
            raise ValueError(f"csv_delimiter {self.csv_delimiter!r} is not a field separator")
        if self.format == "csv" and self.goods_movements not in (None, "none"):
            raise ValueError(
                f"goods_movements = {self.goods_movements!r} needs format = 'b2mml': the CSV "
                "layout has no place for goods movements (use 'none')"
            )
        distinct_folders(
            (
                ("drop_dir", self.drop_dir),
                ("ack_dir", self.ack_dir),
                ("archive_dir", self.archive_dir),
            )
        )
        return self


def build(settings: Settings) -> FileAdapter:
    return FileAdapter(settings)


# -- names and values ---------------------------------------------------------------------------


def file_key(idem_key: str) -> str:
    """The 64 hex digits the file name's ``key8``/``key16``/``key`` are cut from."""
    return hashlib.sha256(idem_key.encode()).hexdigest()


def _safe(value: object) -> str:
    return _UNSAFE.sub("-", str(value))[:64] or "-"


def file_name(settings: Settings, posting: Posting) -> str:
    """The name ``posting`` is written under (always the same for the same posting)."""
    key = file_key(posting.instance_key)
    values = {
        "work_center": _safe(posting.work_center),
        "order_id": _safe(posting.order_id),
        "operation": _safe(posting.operation),
        "split": str(posting.split),
        "conf_index": str(posting.conf_index),
        "seq": str(posting.seq),
        "edge_id": _safe(posting.edge_id),
        "posting_date": _safe(posting.posting_date),
        "kind": "conf" if posting.kind == "confirmation" else "rev",
        "key8": key[:8],
        "key16": key[:16],
        "key": key,
        "ext": "xml" if settings.format == "b2mml" else "csv",
    }
    name = settings.name_pattern.format(**values)
    if len(name) > _MAX_NAME:
        # keep the end, which holds the key in any sensible pattern; never cut the key off
        name = f"{name[: _MAX_NAME - 18]}-{key[:16]}"
    return name


def iso_ms(ms: int) -> str:
    """``2025-03-04T06:00:00Z`` (``.123`` when the milliseconds are not zero)."""
    stamp = datetime.fromtimestamp(ms // 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{ms % 1000:03d}Z" if ms % 1000 else f"{stamp}Z"


def iso_duration(seconds: float) -> str:
    """Seconds as an ISO 8601 duration: ``PT1H30M``, ``PT12.5S``, ``PT0S``."""
    total_ms = round(max(seconds, 0.0) * 1000)
    hours, rest = divmod(total_ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, ms = divmod(rest, 1000)
    parts = "PT"
    if hours:
        parts += f"{hours}H"
    if minutes:
        parts += f"{minutes}M"
    if secs or ms or parts == "PT":
        parts += f"{secs}.{ms:03d}".rstrip("0").rstrip(".") + "S"
    return parts


def _decimal(value: Decimal, comma: bool) -> str:
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    if text in {"", "-0"}:
        text = "0"
    return text.replace(".", ",") if comma else text


def _seconds(value: float, comma: bool) -> str:
    return _decimal(Decimal(f"{value:.3f}"), comma)


class _BadPosting(Exception):
    """The posting cannot be written in this format (answered :class:`Rejected`)."""


# -- documents ----------------------------------------------------------------------------------


def _sub(parent: ET.Element, tag: str, text: str | None = None) -> ET.Element:
    child = ET.SubElement(parent, tag)
    if text is not None:
        child.text = text
    return child


def _present(parent: ET.Element, *children: tuple[str, str | None]) -> None:
    """A child ``tag`` per ``(tag, text)`` that has a text; none for an empty one."""
    for tag, text in children:
        if text:
            _sub(parent, tag, text)


def _scope(parent: ET.Element, work_center: str) -> None:
    scope = _sub(parent, "HierarchyScope")
    _sub(scope, "EquipmentID", work_center)
    _sub(scope, "EquipmentElementLevel", "WorkCenter")


def _data(parent: ET.Element, ident: str, value: str, data_type: str) -> None:
    data = _sub(parent, "SegmentData")
    _sub(data, "ID", ident)
    val = _sub(data, "Value")
    _sub(val, "ValueString", value)
    _sub(val, "DataType", data_type)


def _material(
    parent: ET.Element,
    posting: Posting,
    use: str,
    other: str | None,
    qty: Decimal,
    reason: str | None,
    lot: str | None = None,
) -> None:
    actual = _sub(parent, "MaterialActual")
    if posting.material:
        _sub(actual, "MaterialDefinitionID", posting.material)
    if lot:
        _sub(actual, "MaterialLotID", lot)
    use_el = _sub(actual, "MaterialUse", use)
    if other is not None:
        use_el.set("OtherValue", other)
    quantity = _sub(actual, "Quantity")
    _sub(quantity, "QuantityString", _decimal(qty, comma=False))
    _sub(quantity, "DataType", "decimal")
    if posting.unit:
        _sub(quantity, "UnitOfMeasure", posting.unit)
    if reason is not None:
        prop = _sub(actual, "MaterialActualProperty")
        _sub(prop, "ID", "ReasonCode")
        value = _sub(prop, "Value")
        _sub(value, "ValueString", reason)
        _sub(value, "DataType", "string")


def _property(actual: ET.Element, ident: str, value: str, data_type: str) -> None:
    prop = _sub(actual, "MaterialActualProperty")
    _sub(prop, "ID", ident)
    val = _sub(prop, "Value")
    _sub(val, "ValueString", value)
    _sub(val, "DataType", data_type)


def _consumed(parent: ET.Element, m: GoodsMovement) -> None:
    """A goods movement as a ``MaterialActual``: ``Consumed`` for an issue, ``Other``
    ``OtherValue="Returned"`` for a return (B2MML's MaterialUse has no return), the batch as
    ``MaterialLotID``, properties ``ReservationItem`` and ``Backflush`` (a file ERP that
    backflushes must not backflush one written with ``true``)."""
    actual = _sub(parent, "MaterialActual")
    _sub(actual, "MaterialDefinitionID", m.material)
    if m.batch:
        _sub(actual, "MaterialLotID", m.batch)
    if m.direction == "issue":
        _sub(actual, "MaterialUse", "Consumed")
    else:
        _sub(actual, "MaterialUse", "Other").set("OtherValue", "Returned")
    quantity = _sub(actual, "Quantity")
    _sub(quantity, "QuantityString", _decimal(m.qty, comma=False))
    _sub(quantity, "DataType", "decimal")
    _sub(quantity, "UnitOfMeasure", m.unit)
    if m.item:
        _property(actual, "ReservationItem", m.item, "string")
    _property(actual, "Backflush", "true" if m.backflush else "false", "boolean")


def _by_reason(total: Decimal, reasons: tuple[Quantity, ...]) -> list[tuple[str | None, Decimal]]:
    """One entry per reason, and the rest of ``total`` without a reason."""
    out: list[tuple[str | None, Decimal]] = [(q.code, q.qty) for q in reasons if q.qty]
    rest = total - sum((q.qty for q in reasons), Decimal(0))
    if rest > 0:
        out.append((None, rest))
    return out


def b2mml_document(posting: Posting, movements: tuple[GoodsMovement, ...] = ()) -> bytes:
    """The B2MML V0700 document for a confirmation (``ProcessOperationsPerformance``) or a
    reversal (``CancelOperationsPerformance``), with ``movements`` (those of the posting's
    goods movements to write) as consumed material; deterministic: the same posting, the same
    bytes."""
    reversal = posting.kind == "reversal"
    if reversal and not posting.reverses_idem_key:
        raise _BadPosting(f"reversal {posting.label} names no confirmation (reverses_idem_key)")
    verb = "Cancel" if reversal else "Process"
    # local names under a default xmlns on the root (ElementTree's default_namespace cannot
    # serialize the unqualified releaseID attribute)
    root = ET.Element(
        f"{verb}OperationsPerformance", {"xmlns": B2MML_NS, "releaseID": B2MML_RELEASE}
    )
    area = _sub(root, "ApplicationArea")
    sender = _sub(area, "Sender")
    _sub(sender, "LogicalID", posting.edge_id or "edge")
    _sub(sender, "ReferenceID", posting.idem_key)
    _sub(area, "CreationDateTime", iso_ms(posting.event_ms))
    _sub(area, "BODID", posting.external_id)
    data_area = _sub(root, "DataArea")
    _sub(data_area, verb)
    perf = _sub(data_area, "OperationsPerformance")
    _sub(perf, "ID", posting.reverses_idem_key if reversal else posting.idem_key)
    _sub(perf, "Description", f"reversal of {posting.label}" if reversal else posting.label)
    _scope(perf, posting.work_center)
    _sub(perf, "OperationsType", "Production")
    _sub(perf, "OperationsScheduleID", posting.order_id)
    start = iso_ms(posting.period_start_ms) if posting.period_start_ms is not None else None
    end = iso_ms(posting.period_end_ms) if posting.period_end_ms is not None else None
    _present(perf, ("StartTime", start), ("EndTime", end))
    response = _sub(perf, "OperationsResponse")
    _sub(response, "ID", posting.order_id)
    _sub(response, "OperationsType", "Production")
    _sub(response, "OperationsRequestID", posting.order_id)
    _present(response, ("StartTime", start), ("EndTime", end))
    state = "Completed" if posting.final else "Running"
    _sub(response, "ResponseState", state)
    segment = _sub(response, "SegmentResponse")
    split = f"/{posting.split}" if posting.split else ""
    _sub(segment, "ID", f"{posting.operation}{split}")
    _scope(segment, posting.work_center)
    _sub(segment, "OperationsType", "Production")
    _sub(segment, "ProcessSegmentID", posting.operation)
    day = f"{posting.posting_date}T00:00:00" if posting.posting_date else None
    _present(segment, ("ActualStartTime", start), ("ActualEndTime", end), ("PostingDate", day))
    _sub(segment, "SegmentState", state)
    _data(segment, "ConfirmationCounter", str(posting.conf_index), "integer")
    _data(segment, "Split", str(posting.split), "integer")
    _data(segment, "FinalConfirmation", "true" if posting.final else "false", "boolean")
    _data(segment, "SetupDuration", iso_duration(posting.setup_s), "duration")
    _data(segment, "RunDuration", iso_duration(posting.machine_s), "duration")
    _data(segment, "LabourDuration", iso_duration(posting.labour_s), "duration")
    if posting.variance_reason:
        _data(segment, "VarianceReason", posting.variance_reason, "string")
    if posting.confirmation_no:
        _data(segment, "ConfirmationNumber", posting.confirmation_no, "string")
    if posting.actor:
        _data(segment, "Actor", posting.actor, "string")
    _material(segment, posting, "Produced", None, posting.yield_qty, None, posting.batch)
    for reason, qty in _by_reason(posting.scrap_qty, posting.scrap_by_reason):
        _material(segment, posting, "Other", "Scrap", qty, reason)
    for reason, qty in _by_reason(posting.rework_qty, posting.rework_by_reason):
        _material(segment, posting, "Other", "Rework", qty, reason)
    for movement in movements:
        _consumed(segment, movement)
    ET.indent(root)
    body = ET.tostring(root, encoding="unicode")
    return f'<?xml version="1.0" encoding="UTF-8"?>\n{body}\n'.encode()


def _reasons(reasons: tuple[Quantity, ...], comma: bool) -> str:
    for q in reasons:
        if not q.code or any(c in q.code for c in ":|"):
            raise _BadPosting(f"reason code {q.code!r} cannot be written as code:qty|code:qty")
    return "|".join(f"{q.code}:{_decimal(q.qty, comma)}" for q in reasons)


def csv_row(posting: Posting, *, decimal_comma: bool) -> dict[str, str]:
    """The CSV row of ``posting`` by column name (:data:`COLUMNS`)."""
    if posting.kind == "reversal" and not posting.reverses_idem_key:
        raise _BadPosting(f"reversal {posting.label} names no confirmation (reverses_idem_key)")
    comma = decimal_comma
    return {
        "kind": posting.kind,
        "idem_key": posting.idem_key,
        "edge_id": posting.edge_id,
        "order": posting.order_id,
        "operation": posting.operation,
        "split": str(posting.split),
        "conf_index": str(posting.conf_index),
        "work_center": posting.work_center,
        "material": posting.material,
        "unit": posting.unit,
        "yield": _decimal(posting.yield_qty, comma),
        "scrap": _decimal(posting.scrap_qty, comma),
        "rework": _decimal(posting.rework_qty, comma),
        "scrap_by_reason": _reasons(posting.scrap_by_reason, comma),
        "rework_by_reason": _reasons(posting.rework_by_reason, comma),
        "setup_s": _seconds(posting.setup_s, comma),
        "machine_s": _seconds(posting.machine_s, comma),
        "labour_s": _seconds(posting.labour_s, comma),
        "period_start": iso_ms(posting.period_start_ms)
        if posting.period_start_ms is not None
        else "",
        "period_end": iso_ms(posting.period_end_ms) if posting.period_end_ms is not None else "",
        "posting_date": posting.posting_date,
        "final": "1" if posting.final else "0",
        "variance_reason": posting.variance_reason or "",
        "confirmation_no": posting.confirmation_no or "",
        "reverses_key": (posting.reverses_idem_key or "") if posting.kind == "reversal" else "",
    }


def csv_document(posting: Posting, settings: Settings) -> bytes:
    """Header and one row, CRLF, in ``settings.encoding``."""
    row = csv_row(posting, decimal_comma=settings.decimal_comma)
    out = io.StringIO(newline="")
    writer = csv.writer(out, delimiter=settings.csv_delimiter, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    writer.writerow([row[c] for c in COLUMNS])
    try:
        return out.getvalue().encode(settings.encoding)
    except UnicodeEncodeError as exc:
        bad = exc.object[exc.start : exc.end]
        raise _BadPosting(
            f"{bad!r} in {posting.label} cannot be written in {settings.encoding}"
        ) from None


def document(posting: Posting, settings: Settings) -> bytes:
    if settings.format == "b2mml":
        movements = movements_to_post(posting.goods_movements, settings.movements_mode)
        return b2mml_document(posting, movements)
    return csv_document(posting, settings)


# -- the file system (all of it runs in a worker thread) ------------------------------------------


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(directory: Path, name: str, data: bytes) -> None:
    """``data`` under ``directory/name`` whole or not at all (temp file, fsync, rename, fsync of
    the folder). On any failure the temporary file is removed and the error raised."""
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=TMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, directory / name)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(directory)


def _os_text(exc: OSError, path: Path) -> tuple[str, str | None]:
    code = errno.errorcode.get(exc.errno) if exc.errno is not None else None
    reason = exc.strerror or str(exc)
    return f"cannot write {path}: {reason}", code


@dataclass(frozen=True, slots=True)
class _Trace:
    """What the folders say about one file name."""

    answer: Posted | Rejected | None
    in_drop: bytes | None
    in_archive: bool
    mtime: float | None


def _read_answer(ack_dir: Path, name: str, encoding: str) -> Posted | Rejected | None:
    for suffix in (OK_SUFFIX, ERR_SUFFIX):
        path = ack_dir / f"{name}{suffix}"
        try:
            raw = path.read_bytes()
            age = time.time() - path.stat().st_mtime
        except FileNotFoundError:
            continue
        if not raw.strip() and age < _FRESH_EMPTY_S:
            return None  # being written
        text = raw.decode(encoding, errors="replace").lstrip("\ufeff")
        if suffix == OK_SUFFIX:
            return Posted(keys=_ok_keys(name, text))
        return _err_answer(name, text)
    return None


def _ok_keys(name: str, text: str) -> dict[str, str]:
    keys: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        key, sep, value = line.partition("=")
        if sep and key.strip():
            keys[key.strip()] = value.strip()
        else:
            keys.setdefault("document", line)
    keys["file"] = name
    return keys


def _err_answer(name: str, text: str) -> Rejected:
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    if not first:
        return Rejected(f"the ERP rejected {name} (empty error file)")
    match = _ERR_CODE.match(first)
    if match and match.group(2):
        return Rejected(match.group(2), code=match.group(1))
    return Rejected(first)


@dataclass(slots=True)
class _Slot:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


class FileAdapter(ErpAdapter):
    """Postings as files in a drop folder (see the module docstring)."""

    system: ClassVar[str] = "file"
    can_lookup = True

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # one write at a time per file name (two calls for the same posting never race)
        self._busy: dict[str, _Slot] = {}

    # -- lifecycle

    async def start(self) -> None:
        """Checks the folders (raises :class:`ValueError` naming the setting and the path: a
        missing mount or a typo is a configuration error, not something to retry) and removes
        temporary files a crash left more than an hour ago."""
        await asyncio.to_thread(self._check_dirs)
        await asyncio.to_thread(self._remove_stale)

    def _check_dirs(self) -> None:
        s = self.settings
        dirs: list[tuple[str, Path, int]] = [("drop_dir", s.drop_dir, os.W_OK | os.X_OK)]
        if s.ack_dir is not None:
            dirs.append(("ack_dir", s.ack_dir, os.R_OK | os.X_OK))
        if s.archive_dir is not None:
            dirs.append(("archive_dir", s.archive_dir, os.R_OK | os.X_OK))
        check_folders("erp", dirs)

    def _remove_stale(self) -> None:
        now = time.time()
        with os.scandir(self.settings.drop_dir) as entries:
            for entry in entries:
                if not (entry.name.startswith(".") and entry.name.endswith(TMP_SUFFIX)):
                    continue
                with contextlib.suppress(OSError):
                    if now - entry.stat().st_mtime > STALE_TMP_S:
                        os.unlink(entry.path)

    # -- the interface

    def name_for(self, posting: Posting) -> str:
        return file_name(self.settings, posting)

    async def post(self, posting: Posting) -> Outcome:
        return await self._submit(posting, "confirmation")

    async def reverse(self, posting: Posting) -> Outcome:
        return await self._submit(posting, "reversal")

    async def lookup(self, posting: Posting) -> LookupOutcome:
        name = self.name_for(posting)
        try:
            trace = await asyncio.to_thread(self._trace, name)
        except OSError as exc:
            return Transient(f"cannot read the folders for {name}: {exc.strerror or exc}")
        if isinstance(trace.answer, Posted):
            return trace.answer
        if isinstance(trace.answer, Rejected):
            return NotFound()
        if trace.in_drop is not None or trace.in_archive:
            if self.settings.ack_dir is None:
                return Posted(keys={"file": name})
            return self._submitted(name, trace.mtime)
        return NotFound()

    async def poll(self, posting: Posting, ref: Mapping[str, str]) -> Outcome:
        name = ref.get("file", "")
        if not name or name != os.path.basename(name) or name.startswith("."):
            return Unknown(f"no file name in the reference {dict(ref)!r}")
        try:
            trace = await asyncio.to_thread(self._trace, name)
        except OSError as exc:
            return Transient(f"cannot read the folders for {name}: {exc.strerror or exc}")
        if trace.answer is not None:
            return trace.answer
        if self.settings.ack_dir is None:  # configuration changed since the post
            if trace.in_drop is not None or trace.in_archive:
                return Posted(keys={"file": name})
            return Unknown(f"{name} is neither in the drop folder nor in the archive")
        written_ms = _int(ref.get("written_ms"))
        if written_ms is None:
            written_ms = int((trace.mtime or time.time()) * 1000)
        waited = time.time() - written_ms / 1000
        timeout = self.settings.ack_timeout_s
        if waited < timeout:
            return Submitted(ref=dict(ref), poll_after_s=self.settings.poll_interval_s)
        if trace.in_drop is not None:
            return Transient(
                f"the ERP has not taken {name} from {self.settings.drop_dir} in {waited:.0f} s "
                "(is it running?)",
                retry_after_s=self.settings.poll_interval_s,
            )
        where = "moved it to the archive" if trace.in_archive else "took it"
        return Unknown(f"the ERP {where} but wrote no answer for {name} in {timeout:.0f} s")

    # -- internals

    def _submitted(self, name: str, mtime: float | None) -> Submitted:
        written = int((mtime if mtime is not None else time.time()) * 1000)
        return Submitted(
            ref={"file": name, "written_ms": str(written)},
            poll_after_s=self.settings.poll_interval_s,
        )

    def _trace(self, name: str) -> _Trace:
        s = self.settings
        answer = _read_answer(s.ack_dir, name, s.encoding) if s.ack_dir is not None else None
        in_drop: bytes | None = None
        mtime: float | None = None
        path = s.drop_dir / name
        try:
            in_drop = path.read_bytes()
            mtime = path.stat().st_mtime
        except FileNotFoundError:
            pass
        in_archive = False
        if s.archive_dir is not None:
            try:
                archived = (s.archive_dir / name).stat().st_mtime
            except FileNotFoundError:
                pass
            else:
                in_archive = True
                mtime = archived if mtime is None else mtime
        return _Trace(answer=answer, in_drop=in_drop, in_archive=in_archive, mtime=mtime)

    async def _submit(self, posting: Posting, kind: str) -> Outcome:
        if posting.kind != kind:
            method = "post" if kind == "confirmation" else "reverse"
            raise ValueError(f"{method}() takes {kind}s, not a {posting.kind}")
        name = self.name_for(posting)
        try:
            data = document(posting, self.settings)
        except _BadPosting as exc:
            return Rejected(str(exc), code="FORMAT")
        slot = self._busy.setdefault(name, _Slot())
        slot.users += 1
        try:
            async with slot.lock:
                return await self._write_once(name, data)
        finally:
            slot.users -= 1
            if not slot.users:
                del self._busy[name]

    async def _write_once(self, name: str, data: bytes) -> Outcome:
        s = self.settings
        try:
            trace = await asyncio.to_thread(self._trace, name)
        except OSError as exc:
            return Transient(f"cannot read the folders for {name}: {exc.strerror or exc}")
        if trace.answer is not None:
            return trace.answer  # answered already: never written again
        if trace.in_archive and trace.in_drop is None:
            return self._done(name, trace.mtime)  # the ERP has it
        if trace.in_drop != data:
            try:
                await asyncio.to_thread(write_atomic, s.drop_dir, name, data)
            except OSError as exc:
                text, code = _os_text(exc, s.drop_dir / name)
                return Transient(text, code=code)
            return self._done(name, None)
        try:  # already there, same bytes: make sure the rename is durable
            await asyncio.to_thread(_fsync_dir, s.drop_dir)
        except OSError as exc:
            text, code = _os_text(exc, s.drop_dir)
            return Transient(text, code=code)
        return self._done(name, trace.mtime)

    def _done(self, name: str, mtime: float | None) -> Outcome:
        if self.settings.ack_dir is None:
            return Posted(keys={"file": name})
        return self._submitted(name, mtime)


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None
