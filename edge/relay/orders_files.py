"""Orders down from files: an ERP drops released production orders into a folder, as SAP
``LOIPRO`` IDocs in XML (``format = "loipro"``) or as B2MML V0700 ``OperationsSchedule``
documents (``format = "b2mml"``), and :class:`FileOrderSource` turns them into the
:class:`~edge.relay.orders.ErpOperation` list of every work center.

**Reading.** Each :meth:`FileOrderSource.snapshot` lists ``inbox_dir`` and reads the files it
has not read yet, oldest first (by modification time, then name), at most
``max_files_per_snapshot`` of them. Names starting with ``.`` or ending in ``.tmp`` or ``.why``
are files being written (or our own notes) and are skipped, and so is a file modified less than
``settle_s`` ago (an ERP that writes in place rather than renaming; a modification time in the
future is taken as clock skew and read). A file read is moved to ``archive_dir``; without one it
stays in the inbox and its name, size and modification time are remembered in the state file,
so it is read again only if it changes (and forgotten once it is gone). A file that cannot be
moved (the folder gone, not writable) is remembered the same way, warned about once
(``order_file_not_moved``) and moved on a later snapshot once it can be. All file I/O runs in a
worker thread (:func:`asyncio.to_thread`), one snapshot at a time.

**A file the source cannot read** (bigger than ``max_file_bytes``, nested deeper than
``max_depth``, more than ``max_elements`` elements, a ``DOCTYPE`` (DTDs and entities are refused
outright: no entity expansion, no external entity), not well-formed, truncated, not XML, not the
configured format) never stops the source: a warning ``order_file_refused`` names the file and
the problem, and the file goes to ``error_dir`` with ``<name>.why`` beside it (the problem in
one line of text). Without ``error_dir`` it stays in the inbox and is remembered as refused
(read again only once it changes). A name already taken in the archive or error folder gets a
suffix ``.<nanoseconds>``.

**Values the gateway would refuse** are left out with a warning ``order_value_left_out`` naming
the file, order, operation, field and value: an operation without an order id, operation
number, work center, material or unit, with an id holding ``/``, ``+``, ``#`` or white space or
longer than 40 characters, with a quantity that is not a decimal above 0 (at most 10^9, six
places), with standard times beyond the gateway's bounds: the operation is left out. A text over
200 characters, a tolerance outside 0..1000 %, a confirmation number over 40 characters: that
value is left out, the operation kept. A standard value whose unit is not a time unit (``S``,
``SEC``, ``MIN``, ``H``, ``HUR``, ``STD``, ``D``, ``DAY``, ``TAG``) is taken as 0 with a warning.

**Newest wins.** A LOIPRO IDoc is the whole current state of one order. Each order keeps the
version of the document it came from: LOIPRO ``EDI_DC40`` ``CREDAT``/``CRETIM`` (read in the
plant's ``timezone``) then ``DOCNUM``; B2MML ``ApplicationArea/CreationDateTime``. A document
replaces the order when its version is not older than the one held (the same IDoc delivered
twice changes nothing), so an older IDoc arriving after a newer one is ignored (logged
``order_file_older``). A B2MML document may hold several orders (``OperationsRequest``); each
replaces its order as a whole, and orders it does not name are untouched.

**Status.** The statuses of an operation are its order's (LOIPRO ``E1JSTKL/STAT``; B2MML
``OperationsRequest/RequestState``) together with its own (``E1JSTVL/STAT``;
``SegmentRequirement/SegmentState``). An ``E1JSTKL``/``E1JSTVL`` with ``INACT = X`` is not
counted. In this order:

1. one of ``done_statuses`` (default ``I0009``/``CNF`` confirmed, B2MML ``Completed``): the
   operation is left out (the work center finished it; it leaves the next list);
2. one of ``cancelled_statuses`` (default ``I0013`` DLT deleted, ``I0045`` TECO, ``I0046``
   CLSD, ``I0076`` DLFL, and the short texts; B2MML ``Cancelled``, ``Closed``, ``Aborted``):
   ``cancelled``; the document root ``CancelOperationsSchedule`` cancels every order it names;
3. one of ``held_statuses`` (default ``I0043`` LKD locked; B2MML ``Held``, ``Paused``):
   ``held``;
4. one of ``released_statuses`` (default ``I0002`` REL, ``I0042`` PREL; B2MML ``Released``,
   ``Ready``, ``Running``), or no status at all (an IDoc or request without any): ``released``;
5. otherwise (``I0001`` CRTD alone, B2MML ``Forecast``): not released yet, left out.

``status_text`` names the matching codes, e.g. ``cancelled in the ERP: TECO`` (SAP codes by
their short text). When an order as a whole turns cancelled, its operations known from an
earlier document that the new one no longer carries are kept, as ``cancelled``: a deletion IDoc
with a bare header still cancels what was dispatched. Otherwise an operation the newest document
no longer carries has left the order (moved, confirmed) and leaves the list.

**Forgetting.** An order reported ``cancelled`` as a whole is kept (and reported) for
``forget_cancelled_after_s`` (default 7 days) after the source first saw it so; any order not
updated by a document for ``forget_after_s`` (default 90 days) is dropped. Both count from the
time the source read the file (wall clock), not from the ERP's dates.

**The state file** (``state_file``) is JSON, written whole to a temporary file beside it,
fsynced and renamed (:func:`edge.relay.files.write_atomic`): it holds every order read (its
version, file, when it was read, when it turned cancelled, and its operations with their start
times) and the files remembered without an archive folder. It is written before any file is
moved, so a crash in between only reads a file again (which changes nothing). A state file that
cannot be read is not replaced: every snapshot answers :class:`SnapshotFailed` naming it until a
person moves it away (a new empty state then fills from the next files).

**LOIPRO mapping** (root ``LOIPRO01``..``LOIPRO05`` or an extension; every ``IDOC`` element in
the document is one order; namespaces are ignored)::

    order_id        E1AFKOL/AUFNR (leading zeros removed with strip_zeros)
    operation       E1AFVOL/VORNR (as sent, 0010)
    work_center     E1AFVOL/ARBPL
    material        E1AFKOL/MATNR_LONG, else MATNR, else E1AFPOL/MATNR (numeric: zeros removed)
    material_text   E1AFVOL/LTXA1 (the operation's short text), else E1AFKOL/MAKTX
    quantity, unit  E1AFVOL/MGVRG + MEINH, else E1AFKOL/GAMNG + GMEIN
    planned_setup_s VGW<setup_slot> in VGE<setup_slot> (default slot 1), in seconds
    run per unit    VGW<run_slot> in VGE<run_slot> (default slot 2) / BMSCH (1 when absent), s
    sequence        1, 2, ... per work center by scheduled start: E1AFVOL/FSAVD+FSAVZ, else
                    SSAVD+SSAVZ, else E1AFKOL/GSTRS+GSUZS, else GSTRP+GSUZP (none: last), then
                    order and operation
    latest_end      the operation's scheduled finish: E1AFVOL/SSEDD+SSEDZ (latest), else
                    FSEDD+FSEDZ (earliest, what the SAP OData source reads), else the order's:
                    E1AFKOL/GLTRS+GLUZS, else GLTRP+GLUZP; in the plant's timezone, as UTC
                    (2025-03-04T09:00:00Z); a date with time 000000 or none is the end of that
                    day
    over/under_tolerance_pct  E1AFPOL/UEBTO / UNTTO (none when UEBTK = X, unlimited)
    confirmation_no E1AFVOL/RUECK when present
    components      E1AFVOL/E1RESBL (movement BWART 261 or none; not KZKUP co-products, not
                    SHKZG S receipts): material MATNR_LONG, else MATNR; qty_per_unit BDMNG
                    (for the operation) / the operation's quantity, to 6 places; unit MEINS;
                    item RSPOS; backflush BACKFLUSH or RGEKZ = X; batch-managed XCHPF = X or
                    a batch CHARG given

Numbers are SAP character fields: ``100.000``, a trailing minus ``5.000-`` is negative.

**B2MML mapping** (root ``<Verb>OperationsSchedule``, namespace
``http://www.mesa.org/xml/B2MML`` or none; every ``OperationsSchedule`` in ``DataArea``, every
``OperationsRequest`` in it is one order, every ``SegmentRequirement`` directly in that one
operation)::

    order_id        OperationsRequest/ID
    operation       SegmentRequirement/ID
    work_center     SegmentRequirement/EquipmentRequirement/EquipmentID, else the
                    HierarchyScope/EquipmentID of the segment, the request or the schedule
    material        MaterialRequirement (MaterialUse Produced, else the first)/MaterialDefinitionID
    quantity, unit  that MaterialRequirement's Quantity/QuantityString + UnitOfMeasure
    material_text   SegmentRequirement/Description, else the MaterialRequirement's Description
    planned_setup_s SegmentParameter ID SetupDuration
    run per unit    SegmentParameter ID RunDurationPerUnit
                    (Value/ValueString an ISO 8601 duration PT1M30S, or a number with
                    Value/UnitOfMeasure a time unit as above)
    sequence        by SegmentRequirement/EarliestStartTime, else OperationsRequest/StartTime
    latest_end      SegmentRequirement/LatestEndTime, else OperationsRequest/EndTime (a time
                    without a zone is in the plant's timezone)

**Not confirmed** (conventions of this source, not facts about SAP or B2MML): which standard
value slot is setup and which is run time (it depends on the standard value key ``VGWTS``:
hence ``setup_slot`` and ``run_slot``); that ``CREDAT``/``CRETIM`` are in the plant's zone (only
their order matters here); ``E1AFVOL/RUECK``, ``E1RESBL/XCHPF`` (the batch flag of the
material master), ``E1AFKOL/MAKTX`` and ``INACT`` in the status segments; a finish time
``000000`` as the end of the day; that ``DOCNUM`` grows with every IDoc;
the ``SegmentParameter`` IDs ``SetupDuration``/``RunDurationPerUnit`` (ours, mirroring the
``SegmentData`` IDs of :mod:`edge.relay.files`); ``RequestState Completed`` as done and
``CancelOperationsSchedule`` as a cancellation of the orders it names; that a B2MML request
carries the whole order. Every default status list can be replaced in the settings.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import re
import shutil
import time
import xml.etree.ElementTree as ET
import xml.parsers.expat
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any, ClassVar, Final, Literal
from zoneinfo import ZoneInfo

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from edge.domain import limits as L
from edge.logging import get_logger
from edge.relay.checks import Zone, check_folders, distinct_folders
from edge.relay.files import write_atomic
from edge.relay.orders import (
    ErpComponent,
    ErpOperation,
    ErpStatus,
    OrderSource,
    SnapshotFailed,
    qty_per_unit,
)

log = get_logger(__name__)

STATE_KIND: Final = "edge.relay.orders_files"
STATE_VERSION: Final = 1
WHY_SUFFIX: Final = ".why"
TMP_SUFFIX: Final = ".tmp"

# Time units of standard values (SAP internal and ISO codes), in seconds.
TIME_UNITS: Final[dict[str, int]] = {
    "S": 1,
    "SEC": 1,
    "MIN": 60,
    "H": 3600,
    "HR": 3600,
    "HUR": 3600,
    "STD": 3600,
    "D": 86400,
    "DAY": 86400,
    "TAG": 86400,
}

# SAP system statuses by their short text (E1JSTKL/E1JSTVL carry the I-codes).
SAP_STATUS_TEXT: Final[dict[str, str]] = {
    "I0001": "CRTD",
    "I0002": "REL",
    "I0009": "CNF",
    "I0010": "PCNF",
    "I0012": "DLV",
    "I0013": "DLT",
    "I0042": "PREL",
    "I0043": "LKD",
    "I0045": "TECO",
    "I0046": "CLSD",
    "I0074": "PDLV",
    "I0076": "DLFL",
}

DEFAULT_RELEASED: Final = ("I0002", "I0042", "REL", "PREL", "Released", "Ready", "Running")
DEFAULT_HELD: Final = ("I0043", "LKD", "Held", "Paused")
DEFAULT_CANCELLED: Final = (
    "I0013",
    "I0045",
    "I0046",
    "I0076",
    "DLT",
    "TECO",
    "CLSD",
    "DLFL",
    "Cancelled",
    "Closed",
    "Aborted",
)
DEFAULT_DONE: Final = ("I0009", "CNF", "Completed")

_IDENT = re.compile(r"^[^/+#\s]{1,40}$")
_SAP_NUMBER = re.compile(r"^([+-]?)(\d+(?:\.\d*)?|\.\d+)(-?)$")
_ISO_DURATION = re.compile(
    r"^P(?:(\d+(?:\.\d+)?)D)?(?:T(?:(\d+(?:\.\d+)?)H)?(?:(\d+(?:\.\d+)?)M)?(?:(\d+(?:\.\d+)?)S)?)?$"
)
_DECLARED_ENCODING = re.compile(rb"^(?:\xef\xbb\xbf)?\s*<\?xml[^>]*\bencoding\s*=", re.DOTALL)

StatusCode = Annotated[str, StringConstraints(min_length=1, max_length=40, strip_whitespace=True)]
StatusList = Annotated[tuple[StatusCode, ...], Field(strict=False, max_length=100)]


class Settings(BaseModel):
    """``[orders]`` with ``system = "file"``. Every number is bounded; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)

    system: Literal["file"]
    format: Literal["loipro", "b2mml"]
    # where the ERP drops the order files (must exist and be readable at start)
    inbox_dir: Annotated[Path, Field(strict=False)]
    # where read files are moved; None: left in the inbox and remembered in the state file
    archive_dir: Annotated[Path, Field(strict=False)] | None = None
    # where unreadable files are moved, with <name>.why; None: left and remembered as refused
    error_dir: Annotated[Path, Field(strict=False)] | None = None
    # the source's memory of every order read (JSON, written atomically); not in the inbox
    state_file: Annotated[Path, Field(strict=False)]
    # the plant's time zone: IDoc dates and times, B2MML times without a zone
    timezone: Zone = "UTC"
    # the encoding of a file whose XML declaration names none
    encoding: Literal["utf-8", "iso-8859-1", "cp1252"] = "utf-8"
    released_statuses: StatusList = DEFAULT_RELEASED
    held_statuses: StatusList = DEFAULT_HELD
    cancelled_statuses: StatusList = DEFAULT_CANCELLED
    done_statuses: StatusList = DEFAULT_DONE
    # LOIPRO: which standard value (VGW01..VGW06) is the setup time, which the run time
    setup_slot: Annotated[int, Field(ge=1, le=6)] = 1
    run_slot: Annotated[int, Field(ge=1, le=6)] = 2
    # LOIPRO: 000001000123 -> 1000123 (order numbers, numeric material numbers)
    strip_zeros: bool = True
    # bounds of one file
    max_file_bytes: Annotated[int, Field(ge=1024, le=1024**3)] = 16 * 1024**2
    max_depth: Annotated[int, Field(ge=4, le=256)] = 32
    max_elements: Annotated[int, Field(ge=10, le=10_000_000)] = 1_000_000
    max_files_per_snapshot: Annotated[int, Field(ge=1, le=100_000)] = 1000
    # a file modified less than this long ago may still be being written: read it next time
    settle_s: Annotated[float, Field(ge=0.0, le=3600.0)] = 1.0
    forget_cancelled_after_s: Annotated[float, Field(ge=0.0, le=366 * 86400.0)] = 7 * 86400.0
    forget_after_s: Annotated[float, Field(ge=3600.0, le=10 * 366 * 86400.0)] = 90 * 86400.0

    @model_validator(mode="after")
    def _distinct_dirs(self) -> Settings:
        seen = distinct_folders(
            (
                ("inbox_dir", self.inbox_dir),
                ("archive_dir", self.archive_dir),
                ("error_dir", self.error_dir),
            )
        )
        state_dir = Path(os.path.abspath(self.state_file)).parent
        if state_dir in seen:
            raise ValueError(
                f"state_file must not be in {seen[state_dir]} ({self.state_file}): it would be "
                "read or moved as an order file"
            )
        if self.setup_slot == self.run_slot:
            raise ValueError("setup_slot and run_slot must name different standard values")
        return self


def build(settings: Settings) -> FileOrderSource:
    return FileOrderSource(settings)


# -- safe XML -----------------------------------------------------------------------------------


class Refused(Exception):
    """A file the source will not read; the text says why (it goes into ``<name>.why``)."""


def parse_xml(data: bytes, *, max_depth: int, max_elements: int, encoding: str) -> ET.Element:
    """The document in ``data`` as an element tree with local names (namespaces dropped).

    Built with expat directly, so a ``DOCTYPE`` (and with it any entity declaration) is refused
    as soon as the parser meets it, and the depth and the number of elements are bounded while
    parsing. Raises :class:`Refused`."""
    declared = _DECLARED_ENCODING.match(data) is not None or data[:2] in (b"\xff\xfe", b"\xfe\xff")
    parser = xml.parsers.expat.ParserCreate(
        encoding=None if declared else encoding, namespace_separator="}"
    )
    parser.buffer_text = True
    with contextlib.suppress(AttributeError):  # the constant is missing on old expat builds
        parser.SetParamEntityParsing(xml.parsers.expat.XML_PARAM_ENTITY_PARSING_NEVER)
    stack: list[ET.Element] = []
    root: list[ET.Element] = []
    count = 0

    def local(name: str) -> str:
        return name.rpartition("}")[2]

    def doctype(*_: object) -> None:
        raise Refused("the document has a DOCTYPE (DTDs and entities are refused)")

    def entity(*_: object) -> None:
        raise Refused("the document declares an entity (refused)")

    def start(name: str, attrs: dict[str, str]) -> None:
        nonlocal count
        count += 1
        if count > max_elements:
            raise Refused(f"more than {max_elements} elements (max_elements)")
        if len(stack) >= max_depth:
            raise Refused(f"nested deeper than {max_depth} levels (max_depth)")
        element = ET.Element(local(name), {local(k): v for k, v in attrs.items()})
        if stack:
            stack[-1].append(element)
        else:
            root.append(element)
        stack.append(element)

    def end(_: str) -> None:
        stack.pop()

    def text(chunk: str) -> None:
        if stack:
            current = stack[-1]
            current.text = chunk if current.text is None else current.text + chunk

    parser.StartDoctypeDeclHandler = doctype
    parser.EntityDeclHandler = entity
    parser.UnparsedEntityDeclHandler = entity
    parser.ExternalEntityRefHandler = entity  # type: ignore[assignment]
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = text
    try:
        parser.Parse(data, True)
    except xml.parsers.expat.ExpatError as exc:
        raise Refused(f"not well-formed XML: {exc}") from None
    except (LookupError, UnicodeError) as exc:
        raise Refused(f"cannot decode the file: {exc}") from None
    if not root:
        raise Refused("no XML element in the file")
    return root[0]


def _child(parent: ET.Element | None, tag: str) -> ET.Element | None:
    if parent is None:
        return None
    for element in parent:
        if element.tag == tag:
            return element
    return None


def _children(parent: ET.Element | None, tag: str) -> list[ET.Element]:
    if parent is None:
        return []
    return [element for element in parent if element.tag == tag]


def _text(parent: ET.Element | None, *path: str) -> str:
    """The stripped text at ``path`` below ``parent`` (first match each step); "" if none."""
    node = parent
    for tag in path:
        node = _child(node, tag)
        if node is None:
            return ""
    return (node.text or "").strip() if node is not None else ""


# -- values -------------------------------------------------------------------------------------


class _LeftOut(Exception):
    """A value the gateway would refuse: the operation is left out."""

    def __init__(self, field_name: str, value: str, problem: str) -> None:
        super().__init__(problem)
        self.field_name = field_name
        self.value = value
        self.problem = problem


def sap_decimal(text: str) -> Decimal | None:
    """``100.000`` → 100, ``5.000-`` → -5, ``""`` → None; raises ValueError for other text."""
    text = text.strip()
    if not text:
        return None
    match = _SAP_NUMBER.match(text)
    if not match or (match.group(1) and match.group(3)):
        raise ValueError(f"{text!r} is not a number")
    if len(text) > 40:
        raise ValueError(f"{text[:40]!r}... is too long for a number")
    value = Decimal(match.group(2))
    return -value if "-" in (match.group(1) + match.group(3)) else value


def _plain(value: Decimal) -> Decimal:
    """100.000 → 100, 12.500 → 12.5 (never an exponent for whole numbers)."""
    if value == value.to_integral_value():
        return value.quantize(Decimal(1))
    return value.normalize()


def _strip_zeros(value: str, on: bool) -> str:
    if on and value.isdigit():
        return value.lstrip("0") or "0"
    return value


def _ident(field_name: str, value: str) -> str:
    if not value:
        raise _LeftOut(field_name, value, f"no {field_name}")
    if not _IDENT.match(value):
        raise _LeftOut(
            field_name,
            value,
            f"{field_name} must be 1 to 40 characters without '/', '+', '#' or white space",
        )
    return value


def _code(field_name: str, value: str) -> str:
    if not value:
        raise _LeftOut(field_name, value, f"no {field_name}")
    if len(value) > 40:
        raise _LeftOut(field_name, value, f"{field_name} is longer than 40 characters")
    return value


def _quantity(field_name: str, text: str) -> Decimal:
    try:
        value = sap_decimal(text)
    except (ValueError, InvalidOperation) as exc:
        raise _LeftOut(field_name, text, str(exc)) from None
    if value is None:
        raise _LeftOut(field_name, text, f"no {field_name}")
    if value <= 0 or L.out_of_range(value, Decimal(0), L.MAX_QUANTITY):
        raise _LeftOut(
            field_name,
            text,
            f"{field_name} must be above 0 and at most {L.MAX_QUANTITY} with at most "
            f"{L.QUANTITY_PLACES} decimal places",
        )
    return _plain(value)


def parse_duration(text: str) -> float:
    """An ISO 8601 duration (``PT1H30M``, ``P1DT2H``, ``PT12.5S``) in seconds."""
    match = _ISO_DURATION.match(text.strip())
    if not match or text.strip() in {"P", "PT"} or text.strip().endswith("T"):
        raise ValueError(f"{text!r} is not an ISO 8601 duration")
    days, hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    return days * 86400 + hours * 3600 + minutes * 60 + seconds


@dataclass(frozen=True, slots=True)
class _Where:
    file: str
    order_id: str
    operation: str = ""


def _warn_left_out(where: _Where, exc: _LeftOut, *, kept: bool, what: str = "") -> None:
    """Logs a value the gateway would refuse: the value is left out (``kept``: the operation
    stands), or the operation (or ``what`` names what else)."""
    log.warning(
        "order_value_left_out",
        file=where.file,
        order=where.order_id,
        operation=where.operation,
        field=exc.field_name,
        value=exc.value[:80],
        problem=exc.problem,
        left_out=what or ("the value" if kept else "the operation"),
    )


def _seconds(
    where: _Where, field_name: str, value: Decimal | None, unit: str, per: Decimal, bound: float
) -> float:
    """A standard value in ``unit`` per ``per`` units, in seconds (0 with a warning for a unit
    that is not a time unit); raises :class:`_LeftOut` beyond ``bound``."""
    if value is None or value == 0:
        return 0.0
    factor = TIME_UNITS.get(unit.upper())
    if factor is None:
        _warn_left_out(
            where,
            _LeftOut(field_name, f"{value} {unit}", f"{unit!r} is not a time unit; taken as 0"),
            kept=True,
        )
        return 0.0
    seconds = float(value * factor / per)
    if not math.isfinite(seconds) or not 0 <= seconds <= bound:
        raise _LeftOut(
            field_name, f"{value} {unit}", f"{field_name} must be 0 to {bound:.0f} seconds"
        )
    return seconds


def _bounded_seconds(field_name: str, seconds: float, bound: float) -> float:
    if not math.isfinite(seconds) or not 0 <= seconds <= bound:
        raise _LeftOut(field_name, str(seconds), f"{field_name} must be 0 to {bound:.0f} seconds")
    return seconds


def _iso_utc(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def sap_datetime(day: str, clock: str, zone: ZoneInfo, *, end_of_day: bool) -> str | None:
    """``20250304`` + ``140000`` in ``zone`` as UTC ISO 8601; None for no date. A time of
    ``000000`` or none is the start of the day, or its end with ``end_of_day``."""
    day = day.strip()
    if not day or day.strip("0") == "":
        return None
    try:
        when = date(int(day[0:4]), int(day[4:6]), int(day[6:8])) if len(day) == 8 else None
    except ValueError:
        when = None
    if when is None:
        raise ValueError(f"{day!r} is not a date YYYYMMDD")
    clock = clock.strip()
    if not clock or clock.strip("0") == "":
        moment = datetime.combine(when, dtime(0), tzinfo=zone)
        if end_of_day:
            moment = datetime.combine(when + timedelta(days=1), dtime(0), tzinfo=zone)
        return _iso_utc(moment)
    if len(clock) != 6 or not clock.isdigit():
        raise ValueError(f"{clock!r} is not a time HHMMSS")
    hour, minute, second = int(clock[0:2]), int(clock[2:4]), int(clock[4:6])
    if hour == 24 and minute == 0 and second == 0:
        return _iso_utc(datetime.combine(when + timedelta(days=1), dtime(0), tzinfo=zone))
    try:
        moment = datetime.combine(when, dtime(hour, minute, second), tzinfo=zone)
    except ValueError:
        raise ValueError(f"{clock!r} is not a time HHMMSS") from None
    return _iso_utc(moment)


def iso_datetime(text: str, zone: ZoneInfo) -> str | None:
    """An ISO 8601 date-time (no zone: ``zone``) as UTC ISO 8601; None for ""."""
    text = text.strip()
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text[:40]!r} is not an ISO 8601 date-time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    return _iso_utc(moment)


# -- what a document says -----------------------------------------------------------------------


Version = tuple[str, int]  # (creation time UTC ISO, DOCNUM; 0 for B2MML)


@dataclass(slots=True)
class _Op:
    """An operation as read, before the sequence is known."""

    operation: ErpOperation
    start: str | None  # UTC ISO, for the sequence


@dataclass(slots=True)
class _Doc:
    """One order as one document states it."""

    order_id: str
    version: Version
    cancelled: str | None  # the status text when the order as a whole is cancelled
    operations: list[_Op]


Judgement = Literal["released", "held", "cancelled", "done", "unreleased"]


def judge(codes: Sequence[str], settings: Settings) -> tuple[Judgement, str]:
    """The status of an operation from its codes (the order's and its own), and its text."""
    present = list(dict.fromkeys(codes))
    rules: tuple[tuple[Judgement, tuple[str, ...]], ...] = (
        ("done", settings.done_statuses),
        ("cancelled", settings.cancelled_statuses),
        ("held", settings.held_statuses),
    )
    for verdict, listed in rules:
        hits = [c for c in present if c in listed]
        if hits:
            words = ", ".join(dict.fromkeys(SAP_STATUS_TEXT.get(c, c) for c in hits))
            return verdict, f"{verdict} in the ERP: {words}"[: L.MAX_TEXT]
    if not present or any(c in settings.released_statuses for c in present):
        return "released", ""
    return "unreleased", ""


def _reported(verdict: Judgement) -> ErpStatus | None:
    """The status an operation is reported with; None: it is left out (done, not released)."""
    if verdict == "released" or verdict == "held" or verdict == "cancelled":
        return verdict
    return None


def _statuses(parent: ET.Element | None, segment: str) -> list[str]:
    out: list[str] = []
    for element in _children(parent, segment):
        if _text(element, "INACT").upper() == "X":
            continue
        code = _text(element, "STAT")
        if code:
            out.append(code)
    return out


class _Reader:
    """Reads one file's orders for :class:`FileOrderSource` (settings, zone, the file's name)."""

    def __init__(self, settings: Settings, file: str) -> None:
        self.settings = settings
        self.zone = ZoneInfo(settings.timezone)
        self.file = file

    # -- LOIPRO

    def loipro(self, root: ET.Element) -> list[_Doc]:
        idocs = [root] if root.tag == "IDOC" else list(_find(root, "IDOC", 4))
        if not idocs:
            raise Refused(f"no IDOC element below <{root.tag}> (format = loipro)")
        docs: list[_Doc] = []
        for idoc in idocs:
            doc = self._idoc(idoc)
            if doc is not None:
                docs.append(doc)
        if not docs:
            raise Refused("no IDOC in the file names an order (E1AFKOL/AUFNR)")
        return docs

    def _idoc(self, idoc: ET.Element) -> _Doc | None:
        s = self.settings
        control = _child(idoc, "EDI_DC40")
        header = _child(idoc, "E1AFKOL")
        order_id = _strip_zeros(_text(header, "AUFNR"), s.strip_zeros)
        where = _Where(self.file, order_id)
        if header is None or not order_id:
            missing = _LeftOut("E1AFKOL/AUFNR", "", "an IDOC without an order number")
            _warn_left_out(_Where(self.file, ""), missing, kept=False, what="the IDOC")
            return None
        try:
            _ident("order_id", order_id)
        except _LeftOut as exc:
            _warn_left_out(where, exc, kept=False)
            return None
        docnum_text = _text(control, "DOCNUM")
        docnum = int(docnum_text) if docnum_text.isdigit() and len(docnum_text) <= 20 else 0
        try:
            stamp = sap_datetime(
                _text(control, "CREDAT"), _text(control, "CRETIM"), self.zone, end_of_day=False
            )
        except ValueError:
            stamp = None
        header_codes = _statuses(header, "E1JSTKL") + _statuses(idoc, "E1JSTKL")
        order_verdict, order_text = judge(header_codes, s)
        item = _child(header, "E1AFPOL")
        material = _text(header, "MATNR_LONG") or _text(header, "MATNR") or _text(item, "MATNR")
        material = _strip_zeros(material, s.strip_zeros)
        tolerances = self._tolerances(where, item)
        ops: list[_Op] = []
        for sequence in _children(header, "E1AFFLL"):
            for vo in _children(sequence, "E1AFVOL"):
                op = self._operation(where, header, vo, header_codes, material, tolerances)
                if op is not None:
                    ops.append(op)
        return _Doc(
            order_id=order_id,
            version=(stamp or "", docnum),
            cancelled=order_text if order_verdict == "cancelled" else None,
            operations=_unique(where, ops),
        )

    def _tolerances(
        self, where: _Where, item: ET.Element | None
    ) -> tuple[Decimal | None, Decimal | None]:
        out: list[Decimal | None] = []
        for tag, name in (("UEBTO", "over_tolerance_pct"), ("UNTTO", "under_tolerance_pct")):
            text = _text(item, tag)
            value: Decimal | None = None
            try:
                value = sap_decimal(text)
                if value is not None and L.out_of_range(value, Decimal(0), L.MAX_TOLERANCE_PCT):
                    raise ValueError(f"{name} must be 0 to {L.MAX_TOLERANCE_PCT} %")
            except (ValueError, InvalidOperation) as exc:
                _warn_left_out(where, _LeftOut(name, text, str(exc)), kept=True)
                value = None
            out.append(_plain(value) if value is not None else None)
        if _text(item, "UEBTK").upper() == "X":
            out[0] = None  # unlimited over-delivery
        return out[0], out[1]

    def _operation(
        self,
        order: _Where,
        header: ET.Element | None,
        vo: ET.Element,
        header_codes: list[str],
        material: str,
        tolerances: tuple[Decimal | None, Decimal | None],
    ) -> _Op | None:
        s = self.settings
        number = _text(vo, "VORNR")
        where = _Where(order.file, order.order_id, number)
        verdict, status_text = judge(header_codes + _statuses(vo, "E1JSTVL"), s)
        status = _reported(verdict)
        if status is None:
            return None
        try:
            _ident("operation", number)
            work_center = _ident("work_center", _text(vo, "ARBPL"))
            _code("material", material)
            if _text(vo, "MGVRG"):
                quantity = _quantity("quantity", _text(vo, "MGVRG"))
                unit = _code("unit", _text(vo, "MEINH") or _text(header, "GMEIN"))
            else:
                quantity = _quantity("quantity", _text(header, "GAMNG"))
                unit = _code("unit", _text(header, "GMEIN"))
            base = self._base(where, _text(vo, "BMSCH"))
            setup_s = self._slot(where, vo, s.setup_slot, Decimal(1), L.MAX_SETUP_S)
            run_s = self._slot(where, vo, s.run_slot, base, L.MAX_CYCLE_S)
        except _LeftOut as exc:
            _warn_left_out(where, exc, kept=False)
            return None
        text = self._text_value(
            where, "material_text", _text(vo, "LTXA1") or _text(header, "MAKTX")
        )
        start = self._first_time(
            where,
            "start",
            ((vo, "FSAVD", "FSAVZ"), (vo, "SSAVD", "SSAVZ")),
            ((header, "GSTRS", "GSUZS"), (header, "GSTRP", "GSUZP")),
            end_of_day=False,
        )
        latest_end = self._first_time(
            where,
            "latest_end",
            ((vo, "SSEDD", "SSEDZ"), (vo, "FSEDD", "FSEDZ")),
            ((header, "GLTRS", "GLUZS"), (header, "GLTRP", "GLUZP")),
            end_of_day=True,
        )
        confirmation = _text(vo, "RUECK") or None
        if confirmation is not None and len(confirmation) > 40:
            _warn_left_out(
                where,
                _LeftOut("confirmation_no", confirmation, "longer than 40 characters"),
                kept=True,
            )
            confirmation = None
        operation = _erp_operation(
            where,
            (work_center, material, quantity, unit),
            (status, status_text),
            (text, setup_s, run_s, latest_end),
        )
        operation = replace(
            operation,
            over_tolerance_pct=tolerances[0],
            under_tolerance_pct=tolerances[1],
            confirmation_no=confirmation,
            components=self._components(where, vo, quantity),
        )
        return _Op(operation, start)

    def _components(
        self, where: _Where, vo: ET.Element, quantity: Decimal
    ) -> tuple[ErpComponent, ...]:
        """The operation's ``E1RESBL`` issues as components, per unit of ``quantity``; a
        reservation that cannot be read is left out with a warning, the operation kept."""
        out: list[ErpComponent] = []
        seen: set[str] = set()
        for res in _children(vo, "E1RESBL"):
            if _text(res, "KZKUP").upper() == "X" or _text(res, "SHKZG").upper() == "S":
                continue  # a co-product or a receipt, not a component consumed
            if _text(res, "BWART") not in ("", "261"):
                continue
            material = _strip_zeros(
                _text(res, "MATNR_LONG") or _text(res, "MATNR"), self.settings.strip_zeros
            )
            try:
                _code("component material", material)
                if material in seen:
                    raise _LeftOut("E1RESBL/MATNR", material, "listed twice for the operation")
                required = _quantity("E1RESBL/BDMNG", _text(res, "BDMNG"))
                unit = _code("E1RESBL/MEINS", _text(res, "MEINS"))
            except _LeftOut as exc:
                _warn_left_out(where, exc, kept=True, what="the component")
                continue
            per_unit = qty_per_unit(required, quantity)
            if per_unit <= 0:
                _warn_left_out(
                    where,
                    _LeftOut("E1RESBL/BDMNG", _text(res, "BDMNG"), "rounds to 0 per unit"),
                    kept=True,
                    what="the component",
                )
                continue
            seen.add(material)
            item = _text(res, "RSPOS") or None
            out.append(
                ErpComponent(
                    material=material,
                    qty_per_unit=per_unit,
                    unit=unit,
                    backflush="X" in (_text(res, "BACKFLUSH").upper(), _text(res, "RGEKZ").upper()),
                    batch_managed=_text(res, "XCHPF").upper() == "X" or bool(_text(res, "CHARG")),
                    item=item if item is None or len(item) <= 40 else None,
                )
            )
        return tuple(out)

    def _base(self, where: _Where, text: str) -> Decimal:
        try:
            base = sap_decimal(text)
        except (ValueError, InvalidOperation) as exc:
            raise _LeftOut("BMSCH", text, str(exc)) from None
        if base is None or base == 0:
            return Decimal(1)
        if base < 0 or L.out_of_range(base, Decimal(0), L.MAX_QUANTITY):
            raise _LeftOut("BMSCH", text, "the base quantity must be above 0")
        return base

    def _slot(self, where: _Where, vo: ET.Element, slot: int, per: Decimal, bound: float) -> float:
        name = f"VGW{slot:02d}"
        text = _text(vo, name)
        try:
            value = sap_decimal(text)
        except (ValueError, InvalidOperation) as exc:
            raise _LeftOut(name, text, str(exc)) from None
        if value is not None and value < 0:
            raise _LeftOut(name, text, f"{name} must not be negative")
        return _seconds(where, name, value, _text(vo, f"VGE{slot:02d}"), per, bound)

    def _text_value(self, where: _Where, name: str, text: str) -> str:
        if len(text) > L.MAX_TEXT:
            _warn_left_out(
                where, _LeftOut(name, text, f"longer than {L.MAX_TEXT} characters"), kept=True
            )
            return ""
        return text

    def _first_time(
        self,
        where: _Where,
        name: str,
        own: Iterable[tuple[ET.Element | None, str, str]],
        order: Iterable[tuple[ET.Element | None, str, str]],
        *,
        end_of_day: bool,
    ) -> str | None:
        for element, day, clock in (*own, *order):
            try:
                value = sap_datetime(
                    _text(element, day), _text(element, clock), self.zone, end_of_day=end_of_day
                )
            except ValueError as exc:
                _warn_left_out(where, _LeftOut(f"{name} ({day})", _text(element, day), str(exc)),
                               kept=True)  # fmt: skip
                continue
            if value is not None:
                return value
        return None

    # -- B2MML

    def b2mml(self, root: ET.Element) -> list[_Doc]:
        if root.tag == "OperationsSchedule":
            verb, schedules, created = "", [root], ""
        elif root.tag.endswith("OperationsSchedule"):
            verb = root.tag.removesuffix("OperationsSchedule")
            data_area = _child(root, "DataArea")
            schedules = _children(data_area, "OperationsSchedule")
            created = _text(root, "ApplicationArea", "CreationDateTime")
        else:
            raise Refused(f"<{root.tag}> is not a B2MML OperationsSchedule document")
        if not schedules:
            raise Refused("no OperationsSchedule in DataArea")
        try:
            stamp = iso_datetime(created, self.zone) or ""
        except ValueError as exc:
            raise Refused(f"ApplicationArea/CreationDateTime: {exc}") from None
        docs: list[_Doc] = []
        for schedule in schedules:
            for request in _children(schedule, "OperationsRequest"):
                doc = self._request(schedule, request, verb, stamp)
                if doc is not None:
                    docs.append(doc)
        if not docs:
            raise Refused("no OperationsRequest in the file names an order (ID)")
        return docs

    def _request(
        self, schedule: ET.Element, request: ET.Element, verb: str, stamp: str
    ) -> _Doc | None:
        order_id = _text(request, "ID")
        where = _Where(self.file, order_id)
        try:
            _ident("order_id", order_id)
        except _LeftOut as exc:
            _warn_left_out(where, exc, kept=False)
            return None
        codes = [c for c in (_text(request, "RequestState"),) if c]
        if verb == "Cancel":
            text = "cancelled in the ERP: CancelOperationsSchedule"
            return _Doc(order_id, (stamp, 0), text, self._cancel_all(where, schedule, request))
        order_verdict, order_text = judge(codes, self.settings)
        ops: list[_Op] = []
        for segment in _children(request, "SegmentRequirement"):
            op = self._segment(where, schedule, request, segment, codes)
            if op is not None:
                ops.append(op)
        return _Doc(
            order_id=order_id,
            version=(stamp, 0),
            cancelled=order_text if order_verdict == "cancelled" else None,
            operations=_unique(where, ops),
        )

    def _cancel_all(self, where: _Where, schedule: ET.Element, request: ET.Element) -> list[_Op]:
        """The operations a Cancel document names, cancelled (those it does not name are
        cancelled from the state)."""
        ops: list[_Op] = []
        for segment in _children(request, "SegmentRequirement"):
            op = self._segment(where, schedule, request, segment, [])
            if op is not None:
                text = "cancelled in the ERP: CancelOperationsSchedule"
                ops.append(
                    _Op(replace(op.operation, status="cancelled", status_text=text), op.start)
                )
        return ops

    def _segment(
        self,
        order: _Where,
        schedule: ET.Element,
        request: ET.Element,
        segment: ET.Element,
        codes: list[str],
    ) -> _Op | None:
        number = _text(segment, "ID")
        where = _Where(order.file, order.order_id, number)
        state = _text(segment, "SegmentState")
        verdict, status_text = judge(codes + ([state] if state else []), self.settings)
        status = _reported(verdict)
        if status is None:
            return None
        material_el = _produced(segment)
        try:
            _ident("operation", number)
            work_center = _ident(
                "work_center",
                _text(segment, "EquipmentRequirement", "EquipmentID")
                or _text(segment, "HierarchyScope", "EquipmentID")
                or _text(request, "HierarchyScope", "EquipmentID")
                or _text(schedule, "HierarchyScope", "EquipmentID"),
            )
            material = _code("material", _text(material_el, "MaterialDefinitionID"))
            quantity = _quantity("quantity", _text(material_el, "Quantity", "QuantityString"))
            unit = _code("unit", _text(material_el, "Quantity", "UnitOfMeasure"))
            setup_s = self._parameter(segment, "SetupDuration", L.MAX_SETUP_S)
            run_s = self._parameter(segment, "RunDurationPerUnit", L.MAX_CYCLE_S)
        except _LeftOut as exc:
            _warn_left_out(where, exc, kept=False)
            return None
        text = self._text_value(
            where,
            "material_text",
            _text(segment, "Description") or _text(material_el, "Description"),
        )
        start = self._iso(where, "start", segment, "EarliestStartTime", request, "StartTime")
        end = self._iso(where, "latest_end", segment, "LatestEndTime", request, "EndTime")
        what = (work_center, material, quantity, unit)
        operation = _erp_operation(where, what, (status, status_text), (text, setup_s, run_s, end))
        return _Op(operation, start)

    def _parameter(self, segment: ET.Element, ident: str, bound: float) -> float:
        for parameter in _children(segment, "SegmentParameter"):
            if _text(parameter, "ID") != ident:
                continue
            value = _text(parameter, "Value", "ValueString")
            unit = _text(parameter, "Value", "UnitOfMeasure")
            try:
                if unit:
                    number = sap_decimal(value)
                    factor = TIME_UNITS.get(unit.upper())
                    if factor is None:
                        raise ValueError(f"{unit!r} is not a time unit")
                    seconds = float((number or Decimal(0)) * factor)
                else:
                    seconds = parse_duration(value)
            except (ValueError, InvalidOperation) as exc:
                raise _LeftOut(ident, value, str(exc)) from None
            return _bounded_seconds(ident, seconds, bound)
        return 0.0

    def _iso(
        self,
        where: _Where,
        name: str,
        first: ET.Element,
        first_tag: str,
        second: ET.Element,
        second_tag: str,
    ) -> str | None:
        for element, tag in ((first, first_tag), (second, second_tag)):
            text = _text(element, tag)
            try:
                value = iso_datetime(text, self.zone)
            except ValueError as exc:
                _warn_left_out(where, _LeftOut(f"{name} ({tag})", text, str(exc)), kept=True)
                continue
            if value is not None:
                return value
        return None


def _erp_operation(
    where: _Where,
    what: tuple[str, str, Decimal, str],
    status: tuple[ErpStatus, str],
    plan: tuple[str, float, float, str | None],
) -> ErpOperation:
    """The operation ``where`` names, as LOIPRO and B2MML read it: ``what`` is (work center,
    material, quantity, unit), ``status`` (status, its text), ``plan`` (material text, setup
    seconds, run seconds per unit, latest end)."""
    work_center, material, quantity, unit = what
    text, setup_s, run_s, latest_end = plan
    return ErpOperation(
        work_center=work_center,
        order_id=where.order_id,
        operation=where.operation,
        material=material,
        quantity=quantity,
        unit=unit,
        status=status[0],
        material_text=text,
        planned_setup_s=setup_s,
        planned_run_s_per_unit=run_s,
        latest_end=latest_end,
        status_text=status[1],
    )


def _find(root: ET.Element, tag: str, depth: int) -> Iterator[ET.Element]:
    """Elements named ``tag`` at most ``depth`` levels below ``root`` (not below a match)."""
    for element in root:
        if element.tag == tag:
            yield element
        elif depth > 1:
            yield from _find(element, tag, depth - 1)


def _produced(segment: ET.Element) -> ET.Element | None:
    requirements = _children(segment, "MaterialRequirement")
    for requirement in requirements:
        if _text(requirement, "MaterialUse") in {"Produced", "Yield Produced", "Material Produced"}:
            return requirement
    return requirements[0] if requirements else None


def _unique(where: _Where, ops: list[_Op]) -> list[_Op]:
    seen: set[tuple[str, str, int]] = set()
    out: list[_Op] = []
    for op in ops:
        if op.operation.key in seen:
            _warn_left_out(
                _Where(where.file, where.order_id, op.operation.operation),
                _LeftOut("operation", op.operation.operation, "the operation appears twice"),
                kept=False,
            )
            continue
        seen.add(op.operation.key)
        out.append(op)
    return out


# -- the state ----------------------------------------------------------------------------------


class StateError(Exception):
    """The state file cannot be read (a snapshot answers :class:`SnapshotFailed`)."""


@dataclass(slots=True)
class _Order:
    order_id: str
    version: Version
    file: str
    read_at: float
    cancelled_at: float | None
    operations: list[_Op]


@dataclass(slots=True)
class _Remembered:
    size: int
    mtime_ns: int
    refused: str | None = None


@dataclass(slots=True)
class _State:
    orders: dict[str, _Order] = field(default_factory=dict)
    remembered: dict[str, _Remembered] = field(default_factory=dict)


_DECIMALS: Final = frozenset(
    {"quantity", "parts_per_signal", "over_tolerance_pct", "under_tolerance_pct", "crew_size"}
)
_OP_FIELDS: Final = tuple(f.name for f in fields(ErpOperation))


def _op_json(op: _Op) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in _OP_FIELDS:
        value = getattr(op.operation, name)
        if name == "components":
            value = [
                {**asdict(c), "qty_per_unit": str(c.qty_per_unit)} for c in op.operation.components
            ]
        out[name] = str(value) if isinstance(value, Decimal) else value
    out["start"] = op.start
    return out


def _op_from(data: dict[str, Any]) -> _Op:
    values: dict[str, Any] = {}
    for name in _OP_FIELDS:
        if name not in data:
            continue
        value = data[name]
        if name in _DECIMALS and value is not None:
            value = Decimal(str(value))
        if name == "components":
            if not isinstance(value, list):
                raise ValueError("components is not a list")
            value = tuple(
                ErpComponent(**{**c, "qty_per_unit": Decimal(str(c["qty_per_unit"]))})
                for c in value
            )
        values[name] = value
    if values.get("status", "released") not in ("released", "held", "cancelled"):
        raise ValueError(f"status {values['status']!r} is not released, held or cancelled")
    start = data.get("start")
    return _Op(ErpOperation(**values), start if isinstance(start, str) else None)


def state_json(state: _State, settings: Settings) -> bytes:
    orders = {
        order_id: {
            "version": list(order.version),
            "file": order.file,
            "read_at": order.read_at,
            "cancelled_at": order.cancelled_at,
            "operations": [_op_json(op) for op in order.operations],
        }
        for order_id, order in sorted(state.orders.items())
    }
    remembered = {
        name: {"size": r.size, "mtime_ns": r.mtime_ns, "refused": r.refused}
        for name, r in sorted(state.remembered.items())
    }
    document = {
        "kind": STATE_KIND,
        "version": STATE_VERSION,
        "format": settings.format,
        "orders": orders,
        "remembered": remembered,
    }
    return (json.dumps(document, indent=1, ensure_ascii=False) + "\n").encode()


def load_state(path: Path, settings: Settings) -> _State:
    """The state in ``path`` (empty when there is no file); raises :class:`StateError`."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return _State()
    except OSError as exc:
        raise StateError(f"cannot read the state file {path}: {exc.strerror or exc}") from None
    try:
        data = json.loads(raw)
        if not isinstance(data, dict) or data.get("kind") != STATE_KIND:
            raise ValueError("not a state file of this source")
        if data.get("version") != STATE_VERSION:
            raise ValueError(f"state file version {data.get('version')!r} is not {STATE_VERSION}")
        if data.get("format") != settings.format:
            raise ValueError(
                f"written for format {data.get('format')!r}, the settings say {settings.format!r}"
            )
        state = _State()
        for order_id, entry in data["orders"].items():
            stamp, docnum = entry["version"]
            cancelled_at = entry["cancelled_at"]
            state.orders[str(order_id)] = _Order(
                order_id=str(order_id),
                version=(str(stamp), int(docnum)),
                file=str(entry["file"]),
                read_at=float(entry["read_at"]),
                cancelled_at=None if cancelled_at is None else float(cancelled_at),
                operations=[_op_from(op) for op in entry["operations"]],
            )
        for name, entry in data["remembered"].items():
            refused = entry.get("refused")
            state.remembered[str(name)] = _Remembered(
                int(entry["size"]),
                int(entry["mtime_ns"]),
                None if refused is None else str(refused),
            )
    except (ValueError, KeyError, TypeError, AttributeError, InvalidOperation) as exc:
        raise StateError(
            f"the state file {path} cannot be read ({exc}); move it away to start afresh "
            "(orders come back with their next file)"
        ) from None
    return state


# -- the source ---------------------------------------------------------------------------------


@dataclass(slots=True)
class _Candidate:
    name: str
    path: Path
    size: int
    mtime_ns: int


@dataclass(slots=True)
class _Outcome:
    candidate: _Candidate
    refused: str | None


class FileOrderSource(OrderSource):
    """Released orders from LOIPRO or B2MML files (see the module docstring)."""

    system: ClassVar[str] = "file"

    def __init__(self, settings: Settings, *, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self._clock = clock
        self._state: _State | None = None
        self._lock = asyncio.Lock()
        self._not_moved: set[str] = set()  # files whose move failed, warned about once
        self._dirty = False  # the state in memory is newer than the state file

    async def start(self) -> None:
        """Checks the folders (raises :class:`ValueError` naming the setting and the path) and
        reads the state file (a state file that cannot be read makes snapshots fail, not
        start: the relay keeps running and says why)."""
        await asyncio.to_thread(self._check_dirs)
        with contextlib.suppress(StateError):
            await asyncio.to_thread(self._loaded)

    async def snapshot(
        self, work_centers: Sequence[str]
    ) -> dict[str, list[ErpOperation]] | SnapshotFailed:
        async with self._lock:
            try:
                return await asyncio.to_thread(self._snapshot, list(work_centers))
            except StateError as exc:
                return SnapshotFailed(str(exc))
            except OSError as exc:
                where = exc.filename if exc.filename is not None else self.settings.inbox_dir
                return SnapshotFailed(f"{where}: {exc.strerror or exc}")

    # -- in the worker thread

    def _check_dirs(self) -> None:
        s = self.settings
        # files are moved out of the inbox: then it must be writable too
        moving = s.archive_dir is not None or s.error_dir is not None
        inbox_mode = os.R_OK | os.X_OK | (os.W_OK if moving else 0)
        dirs: list[tuple[str, Path, int]] = [("inbox_dir", s.inbox_dir, inbox_mode)]
        for setting, path in (("archive_dir", s.archive_dir), ("error_dir", s.error_dir)):
            if path is not None:
                dirs.append((setting, path, os.W_OK | os.X_OK))
        dirs.append(("state_file", s.state_file.parent, os.W_OK | os.X_OK))
        check_folders("orders", dirs)

    def _loaded(self) -> _State:
        if self._state is None:
            self._state = load_state(self.settings.state_file, self.settings)
        return self._state

    def _snapshot(self, work_centers: list[str]) -> dict[str, list[ErpOperation]]:
        s = self.settings
        state = self._loaded()
        changed = False
        candidates, gone, unmoved = self._candidates(state)
        for name in gone:
            del state.remembered[name]
            changed = True
        outcomes: list[_Outcome] = list(unmoved)
        for candidate in candidates:
            docs, refused = self._read(candidate)
            if refused is not None:
                log.warning("order_file_refused", file=candidate.name, problem=refused)
            else:
                for doc in docs:
                    changed |= self._apply(state, doc, candidate.name)
            outcomes.append(_Outcome(candidate, refused))
            target = s.error_dir if refused is not None else s.archive_dir
            if target is None:
                state.remembered[candidate.name] = _Remembered(
                    candidate.size, candidate.mtime_ns, refused
                )
                changed = True
        changed |= self._forget(state)
        if changed or self._dirty:
            self._save(state)
        moved_late = False
        for outcome in outcomes:
            name = outcome.candidate.name
            if self._move(outcome):
                if self._target(outcome) is not None and name in state.remembered:
                    del state.remembered[name]  # moved at last
                    moved_late = True
            elif name not in state.remembered:
                state.remembered[name] = _Remembered(
                    outcome.candidate.size, outcome.candidate.mtime_ns, outcome.refused
                )
                moved_late = True
        if moved_late:
            self._save(state)
        return self._lists(state, work_centers)

    def _save(self, state: _State) -> None:
        """Writes the state file; until a write succeeds, every snapshot tries again (and
        fails): what is in memory is not yet safe from a restart."""
        s = self.settings
        self._dirty = True
        write_atomic(s.state_file.parent, s.state_file.name, state_json(state, s))
        self._dirty = False

    def _candidates(self, state: _State) -> tuple[list[_Candidate], list[str], list[_Outcome]]:
        """The files to read (oldest first, at most ``max_files_per_snapshot``), the names
        remembered that are no longer in the inbox, and the files read or refused earlier whose
        move failed (tried again)."""
        s = self.settings
        now_ns = int(self._clock() * 1e9)
        found: list[_Candidate] = []
        names: set[str] = set()
        unmoved: list[_Outcome] = []
        with os.scandir(s.inbox_dir) as entries:
            for entry in entries:
                name = entry.name
                if name.startswith(".") or name.endswith((TMP_SUFFIX, WHY_SUFFIX)):
                    continue
                try:
                    if not entry.is_file(follow_symlinks=False):
                        continue
                    info = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                names.add(name)
                known = state.remembered.get(name)
                if known is not None and (known.size, known.mtime_ns) == (
                    info.st_size,
                    info.st_mtime_ns,
                ):
                    candidate = _Candidate(name, Path(entry.path), info.st_size, info.st_mtime_ns)
                    outcome = _Outcome(candidate, known.refused)
                    if self._target(outcome) is not None:
                        unmoved.append(outcome)
                    continue
                # a modification time in the future is clock skew (a file server's clock),
                # not a file being written: read it rather than wait for the clocks
                if 0 <= now_ns - info.st_mtime_ns < s.settle_s * 1e9:
                    continue
                found.append(_Candidate(name, Path(entry.path), info.st_size, info.st_mtime_ns))
        found.sort(key=lambda c: (c.mtime_ns, c.name))
        gone = [name for name in state.remembered if name not in names]
        return found[: s.max_files_per_snapshot], gone, unmoved

    def _read(self, candidate: _Candidate) -> tuple[list[_Doc], str | None]:
        s = self.settings
        if candidate.size > s.max_file_bytes:
            return [], f"{candidate.size} bytes, over max_file_bytes = {s.max_file_bytes}"
        try:
            with open(candidate.path, "rb") as fh:
                data = fh.read(s.max_file_bytes + 1)
        except OSError as exc:
            return [], f"cannot read the file: {exc.strerror or exc}"
        if len(data) > s.max_file_bytes:
            return [], f"over max_file_bytes = {s.max_file_bytes} (still growing?)"
        if not data.strip():
            return [], "the file is empty"
        try:
            root = parse_xml(
                data, max_depth=s.max_depth, max_elements=s.max_elements, encoding=s.encoding
            )
            reader = _Reader(s, candidate.name)
            docs = reader.loipro(root) if s.format == "loipro" else reader.b2mml(root)
        except Refused as exc:
            return [], str(exc)
        except RecursionError:
            return [], f"nested deeper than {s.max_depth} levels (max_depth)"
        except Exception as exc:  # a file this source does not foresee never stops it
            log.exception("order_file_unexpected", file=candidate.name)
            return [], f"cannot read the file ({type(exc).__name__}: {exc})"
        return docs, None

    def _apply(self, state: _State, doc: _Doc, file: str) -> bool:
        now = self._clock()
        held = state.orders.get(doc.order_id)
        if held is not None and doc.version < held.version:
            log.info(
                "order_file_older",
                file=file,
                order=doc.order_id,
                version=list(doc.version),
                held=list(held.version),
                held_from=held.file,
            )
            return False
        operations = list(doc.operations)
        cancelled_at: float | None = None
        if doc.cancelled is not None:
            cancelled_at = held.cancelled_at if held and held.cancelled_at is not None else now
            if held is not None:
                present = {op.operation.key for op in operations}
                for old in held.operations:
                    if old.operation.key not in present:
                        gone = replace(old.operation, status="cancelled", status_text=doc.cancelled)
                        operations.append(_Op(gone, old.start))
        state.orders[doc.order_id] = _Order(
            order_id=doc.order_id,
            version=doc.version,
            file=file,
            read_at=now,
            cancelled_at=cancelled_at,
            operations=operations,
        )
        log.info(
            "order_read",
            file=file,
            order=doc.order_id,
            operations=len(operations),
            cancelled=doc.cancelled is not None,
        )
        return True

    def _forget(self, state: _State) -> bool:
        s = self.settings
        now = self._clock()
        old = [
            order_id
            for order_id, order in state.orders.items()
            if (
                order.cancelled_at is not None
                and now - order.cancelled_at > s.forget_cancelled_after_s
            )
            or now - order.read_at > s.forget_after_s
        ]
        for order_id in old:
            log.info("order_forgotten", order=order_id, file=state.orders[order_id].file)
            del state.orders[order_id]
        return bool(old)

    def _target(self, outcome: _Outcome) -> Path | None:
        s = self.settings
        return s.error_dir if outcome.refused is not None else s.archive_dir

    def _move(self, outcome: _Outcome) -> bool:
        """Moves a file read to the archive, a file refused to the error folder (with its
        ``.why``); True when done or nothing to do, False when it stays and is remembered."""
        target_dir = self._target(outcome)
        if target_dir is None:
            return True
        name = outcome.candidate.name
        target = name
        try:
            if (target_dir / target).exists() or (
                outcome.refused is not None and (target_dir / f"{target}{WHY_SUFFIX}").exists()
            ):
                target = f"{name}.{time.time_ns()}"
            if outcome.refused is not None:
                why = f"{name}: {outcome.refused}\n".encode()
                write_atomic(target_dir, f"{target}{WHY_SUFFIX}", why)
            shutil.move(outcome.candidate.path, target_dir / target)
            self._not_moved.discard(name)
        except OSError as exc:
            if name in self._not_moved:
                return False  # said already; tried again on every snapshot
            self._not_moved.add(name)
            log.warning(
                "order_file_not_moved",
                file=name,
                to=str(target_dir),
                problem=exc.strerror or str(exc),
            )
            return False
        return True

    def _lists(self, state: _State, work_centers: list[str]) -> dict[str, list[ErpOperation]]:
        wanted = set(work_centers)
        by_wc: dict[str, list[_Op]] = {wc: [] for wc in work_centers}
        for order in state.orders.values():
            for op in order.operations:
                if op.operation.work_center in wanted:
                    by_wc[op.operation.work_center].append(op)
        out: dict[str, list[ErpOperation]] = {}
        for wc, ops in by_wc.items():
            ops.sort(
                key=lambda o: (
                    o.start is None,
                    o.start or "",
                    o.operation.order_id,
                    o.operation.operation,
                )
            )
            out[wc] = [replace(o.operation, sequence=i) for i, o in enumerate(ops, start=1)]
        return out


__all__ = [
    "FileOrderSource",
    "Refused",
    "Settings",
    "StateError",
    "build",
    "iso_datetime",
    "judge",
    "parse_duration",
    "parse_xml",
    "sap_datetime",
    "sap_decimal",
]
