"""The file ERP adapter (edge.relay.files) against the file ERP stand-in (simulators.erp.files)
in temporary folders: B2MML and CSV, answers, atomic writes, exactly once, reversal, lookup."""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import errno
import hashlib
import io
import os
import shutil
import subprocess
import sys
import textwrap
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pydantic
import pytest

from edge.relay.erp import (
    NotFound,
    Outcome,
    Posted,
    Posting,
    Quantity,
    Rejected,
    Submitted,
    Transient,
    Unknown,
)
from edge.relay.files import (
    B2MML_NS,
    COLUMNS,
    FileAdapter,
    Settings,
    b2mml_document,
    build,
    document,
    file_name,
)
from simulators.erp.files import FileErpStandIn
from tests.small_disk import fill, small_disk

ROOT = Path(__file__).resolve().parents[2]
N = f"{{{B2MML_NS}}}"
T0 = 1_741_075_200_000  # 2025-03-04T08:00:00Z


def key(n: int, kind: str = "conf", order: str = "1000123") -> str:
    return hashlib.sha256(f"gw-1|{order}|0010|0|{kind}|{n}".encode()).hexdigest()


def conf(n: int = 1, **changes: Any) -> Posting:
    base = Posting(
        kind="confirmation",
        idem_key=key(n, order=changes.get("order_id", "1000123")),
        edge_id="gw-1",
        root="r-1",
        seq=n,
        work_center="WC-4711",
        order_id="1000123",
        operation="0010",
        split=0,
        conf_index=n,
        event_ms=T0 + 3_600_000,
        yield_qty=Decimal("95"),
        scrap_qty=Decimal("5"),
        rework_qty=Decimal("0"),
        scrap_by_reason=(Quantity("S03", Decimal("5")),),
        unit="PCE",
        material="FG-100",
        posting_date="2025-03-04",
        period_start_ms=T0 - 7_200_000,
        period_end_ms=T0 + 3_600_000,
        setup_s=600.0,
        machine_s=13_800.0,
        labour_s=27_600.0,
        actor="operator:17",
    )
    return dataclasses.replace(base, **changes)


def rev(of: Posting, n: int = 1) -> Posting:
    return dataclasses.replace(
        of,
        kind="reversal",
        idem_key=key(n, "rev", of.order_id),
        seq=of.seq + 100,
        reverses_idem_key=of.idem_key,
    )


@pytest.fixture
def dirs(tmp_path: Path) -> dict[str, Path]:
    out = {name: tmp_path / name for name in ("drop", "ack", "archive")}
    for d in out.values():
        d.mkdir()
    return out


def settings(dirs: dict[str, Path], **changes: Any) -> Settings:
    values: dict[str, Any] = {
        "system": "file",
        "format": "b2mml",
        "drop_dir": dirs["drop"],
        "ack_dir": dirs["ack"],
        "archive_dir": dirs["archive"],
        "poll_interval_s": 0.05,
    }
    values.update(changes)
    return Settings.model_validate(values)


async def adapter(s: Settings) -> FileAdapter:
    a = build(s)
    await a.start()
    return a


async def settle(a: FileAdapter, p: Posting, outcome: Outcome, timeout: float = 5.0) -> Outcome:
    """Poll a Submitted posting until the ERP answers."""
    async with asyncio.timeout(timeout):
        while isinstance(outcome, Submitted):
            await asyncio.sleep(0.02)
            outcome = await a.poll(p, outcome.ref)
    return outcome


def visible(d: Path) -> list[str]:
    return sorted(os.listdir(d))


# -- posted, rejected ---------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["b2mml", "csv"])
async def test_posted_with_the_erps_document_number(dirs: dict[str, Path], fmt: str) -> None:
    a = await adapter(settings(dirs, format=fmt))
    p = conf()
    async with FileErpStandIn(dirs["drop"], dirs["ack"], dirs["archive"]) as erp:
        first = await a.post(p)
        assert isinstance(first, Submitted)
        name = a.name_for(p)
        assert first.ref["file"] == name
        key8 = hashlib.sha256(p.idem_key.encode()).hexdigest()[:8]
        assert name == f"WC-4711_1000123_0010_1_conf_{key8}.{'xml' if fmt == 'b2mml' else 'csv'}"
        done = await settle(a, p, first)
        assert done == Posted(keys={"file": name, "document": "4900000001"})
        assert erp.count(p.idem_key) == 1
        entry = erp.entry(p.idem_key)
        assert entry is not None
        assert (entry.order_id, entry.operation, entry.yield_qty, entry.scrap_qty) == (
            "1000123",
            "0010",
            Decimal(95),
            Decimal(5),
        )
    assert visible(dirs["drop"]) == []
    assert visible(dirs["archive"]) == [name]
    assert visible(dirs["ack"]) == [f"{name}.ok"]


async def test_rejection_carries_the_erps_text_and_code(dirs: dict[str, Path]) -> None:
    a = await adapter(settings(dirs))
    p = conf()
    async with FileErpStandIn(dirs["drop"], dirs["ack"], dirs["archive"]) as erp:
        erp.reject_order("1000123", "Order 1000123 is locked by user MEIER", code="E123")
        done = await settle(a, p, await a.post(p))
        assert done == Rejected("Order 1000123 is locked by user MEIER", code="E123")
        # unknown order, over quantity
        erp.orders = {"1000123", "1000124"}
        erp.max_qty = Decimal(100)
        other = conf(2, order_id="1000999")
        assert await settle(a, other, await a.post(other)) == Rejected(
            "Order 1000999 does not exist", code="E101"
        )
        big = conf(3, order_id="1000124", yield_qty=Decimal("250"))
        assert await settle(a, big, await a.post(big)) == Rejected(
            "Quantity 250 exceeds 100 for order 1000124", code="E102"
        )
        assert erp.postings == []
        # the rejected posting is not in the ERP; posting it again answers the rejection
        # from the answer file without writing the file again
        assert await a.lookup(p) == NotFound()
        assert await a.post(p) == Rejected("Order 1000123 is locked by user MEIER", code="E123")
        assert visible(dirs["drop"]) == []
        assert len(erp.files_seen) == 3


async def test_answer_files_written_by_hand(dirs: dict[str, Path]) -> None:
    """The convention: .ok lines key=value or a bare number; .err first line, code optional."""
    a = await adapter(settings(dirs, encoding="cp1252"))
    p1, p2, p3 = conf(1), conf(2), conf(3)
    for p in (p1, p2, p3):
        assert isinstance(await a.post(p), Submitted)
    ack = dirs["ack"]
    (ack / f"{a.name_for(p1)}.ok").write_text("4711000\nyear=2025\n")
    (ack / f"{a.name_for(p2)}.err").write_bytes(
        "Auftrag gesperrt für Rückmeldung\nmore\n".encode("cp1252")
    )
    (ack / f"{a.name_for(p3)}.err").write_text("")  # being written
    ref = {"file": a.name_for(p1)}
    assert await a.poll(p1, ref) == Posted(
        keys={"document": "4711000", "year": "2025", "file": a.name_for(p1)}
    )
    assert await a.poll(p2, {"file": a.name_for(p2)}) == Rejected(
        "Auftrag gesperrt für Rückmeldung"
    )
    assert isinstance(await a.poll(p3, {"file": a.name_for(p3)}), Submitted)
    old = time.time() - 10
    os.utime(ack / f"{a.name_for(p3)}.err", (old, old))
    assert await a.poll(p3, {"file": a.name_for(p3)}) == Rejected(
        f"the ERP rejected {a.name_for(p3)} (empty error file)"
    )


# -- atomic writes, exactly once ----------------------------------------------------------------


async def test_write_leaves_only_the_final_file_with_the_whole_document(
    dirs: dict[str, Path],
) -> None:
    s = settings(dirs)
    a = await adapter(s)
    p = conf()
    await a.post(p)
    assert visible(dirs["drop"]) == [a.name_for(p)]
    assert (dirs["drop"] / a.name_for(p)).read_bytes() == document(p, s)


async def test_crash_between_temp_write_and_rename(dirs: dict[str, Path]) -> None:
    """A process killed after writing the temp file and before the rename leaves no final file;
    the next post writes exactly one, and start() clears the old temp file."""
    script = textwrap.dedent(
        f"""
        import asyncio, os, sys
        sys.path.insert(0, {str(ROOT / "tests" / "erp")!r})
        from test_files import conf, settings, adapter
        from pathlib import Path
        dirs = {{k: Path(v) for k, v in { ({k: str(v) for k, v in dirs.items()})!r}.items()}}
        os.replace = lambda *args: os._exit(3)
        async def main():
            a = await adapter(settings(dirs))
            await a.post(conf())
        asyncio.run(main())
        """
    )
    crashed = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert crashed.returncode == 3, crashed.stderr
    left = visible(dirs["drop"])
    assert len(left) == 1
    assert left[0].startswith(".")
    assert left[0].endswith(".tmp")
    a = await adapter(settings(dirs))
    p = conf()
    assert isinstance(await a.post(p), Submitted)
    assert [n for n in visible(dirs["drop"]) if not n.startswith(".")] == [a.name_for(p)]
    # the crash's temp file goes at the next start once it is old
    old = time.time() - 7200
    os.utime(dirs["drop"] / left[0], (old, old))
    await a.start()
    assert visible(dirs["drop"]) == [a.name_for(p)]
    async with FileErpStandIn(dirs["drop"], dirs["ack"], dirs["archive"]) as erp:
        assert isinstance(await settle(a, p, await a.poll(p, {"file": a.name_for(p)})), Posted)
        assert erp.count(p.idem_key) == 1
        assert erp.duplicates() == {}


async def test_the_same_posting_twice_is_one_file_and_one_posting(dirs: dict[str, Path]) -> None:
    a = await adapter(settings(dirs))
    p = conf()
    name = a.name_for(p)
    async with FileErpStandIn(dirs["drop"], dirs["ack"], dirs["archive"]) as erp:
        erp.stop_processing()
        assert isinstance(await a.post(p), Submitted)
        before = os.stat(dirs["drop"] / name)
        second = await a.post(p)  # e.g. the relay restarted before it recorded the first
        assert isinstance(second, Submitted)
        assert second.ref["file"] == name
        after = os.stat(dirs["drop"] / name)
        assert visible(dirs["drop"]) == [name]
        assert (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)
        erp.start_processing()
        done = await settle(a, p, second)
        assert isinstance(done, Posted)
        # and once more after the answer: answered from the .ok file, nothing written
        assert await a.post(p) == done
        await asyncio.sleep(0.1)
        assert visible(dirs["drop"]) == []
        assert erp.count(p.idem_key) == 1
        # what the ledger catches: the same key in two files is posted twice
        shutil.copy(dirs["archive"] / name, dirs["drop"] / f"copy-{name}")
        await erp.wait_answers(2)
        assert erp.duplicates() == {p.idem_key: 2}


async def test_disk_full_is_transient_with_the_os_text(
    tmp_path: Path, dirs: dict[str, Path]
) -> None:
    with small_disk(tmp_path / "disk", "256k") as disk:
        a = await adapter(settings(dirs, drop_dir=disk))
        filler = fill(disk)
        p = conf()
        out = await a.post(p)
        assert isinstance(out, Transient)
        assert "No space left on device" in out.text
        assert out.code == "ENOSPC"
        assert visible(disk) == ["filler"]  # neither a temp nor a partial file
        filler.unlink()
        assert isinstance(await a.post(p), Submitted)
        assert visible(disk) == [a.name_for(p)]


async def test_fsync_failure_removes_the_temp_file(
    dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    a = await adapter(settings(dirs))

    def no_space(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", no_space)
    out = await a.post(conf())
    assert isinstance(out, Transient)
    assert "Input/output error" in out.text
    assert out.code == "EIO"
    assert visible(dirs["drop"]) == []


@pytest.fixture
def read_only_drop(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A drop folder that cannot be written: a read-only tmpfs as root (root ignores mode
    bits), mode 0555 otherwise. Yields it and the OS text expected."""
    if os.geteuid() != 0:
        d = tmp_path / "ro"
        d.mkdir()
        yield d, "Permission denied"
        d.chmod(0o755)
        return
    with small_disk(tmp_path / "ro", "64k") as d:
        yield d, "Read-only file system"


async def test_read_only_drop_folder_is_transient_with_the_os_text(
    read_only_drop: tuple[Path, str], dirs: dict[str, Path]
) -> None:
    d, text = read_only_drop
    s = settings(dirs, drop_dir=d)
    a = await adapter(s)
    if os.geteuid() == 0:
        remount = subprocess.run(["mount", "-o", "remount,ro", str(d)], capture_output=True)
        if remount.returncode != 0:
            pytest.skip(f"cannot remount read-only: {remount.stderr!r}")
    else:
        d.chmod(0o555)
    out = await a.post(conf())
    assert isinstance(out, Transient)
    assert text in out.text
    assert str(d) in out.text
    assert visible(d) == []
    with pytest.raises(ValueError, match=f"erp.drop_dir: {d} is not writable"):
        await build(s).start()


# -- reversal, lookup, no answers ---------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["b2mml", "csv"])
async def test_reversal_cancels_the_confirmation(dirs: dict[str, Path], fmt: str) -> None:
    a = await adapter(settings(dirs, format=fmt))
    p = conf()
    r = rev(p)
    async with FileErpStandIn(dirs["drop"], dirs["ack"], dirs["archive"]) as erp:
        assert isinstance(await settle(a, p, await a.post(p)), Posted)
        done = await settle(a, r, await a.reverse(r))
        assert done == Posted(keys={"file": a.name_for(r), "document": "4900000002"})
        assert "_rev_" in a.name_for(r)
        assert erp.is_reversed(p.idem_key)
        entry = erp.entry(r.idem_key)
        assert entry is not None
        assert entry.kind == "reversal"
        assert entry.reverses == p.idem_key
        # a second reversal of the same confirmation (another key) is refused by the ERP
        again = rev(p, 2)
        assert await settle(a, again, await a.reverse(again)) == Rejected(
            "Confirmation 4900000001 is already cancelled", code="E104"
        )
        # reversing what the ERP never had
        ghost = rev(conf(9), 9)
        assert await settle(a, ghost, await a.reverse(ghost)) == Rejected(
            f"Confirmation {conf(9).idem_key} not found", code="E103"
        )
    if fmt == "b2mml":
        root = ET.fromstring((dirs["archive"] / a.name_for(r)).read_bytes())
        assert root.tag == f"{N}CancelOperationsPerformance"
        assert root.find(f"{N}DataArea/{N}Cancel") is not None
        assert root.findtext(f"{N}DataArea/{N}OperationsPerformance/{N}ID") == p.idem_key
        assert root.findtext(f"{N}ApplicationArea/{N}Sender/{N}ReferenceID") == r.idem_key


async def test_reversal_without_a_confirmation_key_is_rejected(dirs: dict[str, Path]) -> None:
    a = await adapter(settings(dirs))
    r = dataclasses.replace(rev(conf()), reverses_idem_key=None)
    out = await a.reverse(r)
    assert isinstance(out, Rejected)
    assert out.code == "FORMAT"
    assert visible(dirs["drop"]) == []


async def test_lookup_after_a_post_whose_answer_was_lost(dirs: dict[str, Path]) -> None:
    a = await adapter(settings(dirs))
    p = conf()
    assert await a.lookup(p) == NotFound()
    async with FileErpStandIn(dirs["drop"], dirs["ack"], dirs["archive"]) as erp:
        erp.stop_processing()
        await a.post(p)  # the relay never learns what this answered
        in_folder = await a.lookup(p)
        assert isinstance(in_folder, Submitted)
        assert in_folder.ref["file"] == a.name_for(p)
        erp.start_processing()
        await erp.wait_answers(1)
        assert await a.lookup(p) == Posted(keys={"file": a.name_for(p), "document": "4900000001"})
        assert erp.count(p.idem_key) == 1


async def test_no_answer_in_time(dirs: dict[str, Path]) -> None:
    """After ack_timeout_s: the file not taken is Transient (posting again rewrites nothing);
    taken without an answer is Unknown (in doubt, never written under another name)."""
    a = await adapter(settings(dirs, ack_timeout_s=1.0))
    p = conf()
    assert isinstance(await a.post(p), Submitted)
    late = {"file": a.name_for(p), "written_ms": str(int(time.time() * 1000) - 5000)}
    out = await a.poll(p, late)
    assert isinstance(out, Transient)
    assert "has not taken" in out.text
    async with FileErpStandIn(dirs["drop"], dirs["ack"], dirs["archive"], answer=False) as erp:
        await erp.wait_answers(1)
        out2 = await a.poll(p, late)
        assert isinstance(out2, Unknown)
        assert "no answer" in out2.text
        assert isinstance(await a.lookup(p), Submitted)  # in the archive, no answer
        assert isinstance(await a.post(p), Submitted)
        await asyncio.sleep(0.1)
        assert visible(dirs["drop"]) == []  # not written again
        assert erp.count(p.idem_key) == 1


async def test_without_ack_dir_a_durable_file_is_posted(dirs: dict[str, Path]) -> None:
    a = await adapter(settings(dirs, ack_dir=None))
    p = conf()
    name = a.name_for(p)
    assert await a.post(p) == Posted(keys={"file": name})
    assert visible(dirs["drop"]) == [name]
    assert await a.lookup(p) == Posted(keys={"file": name})
    async with FileErpStandIn(dirs["drop"], None, dirs["archive"]) as erp:
        await erp.wait_answers(1)
        assert erp.count(p.idem_key) == 1
    assert await a.lookup(p) == Posted(keys={"file": name})  # from the archive
    assert await a.post(p) == Posted(keys={"file": name})
    assert visible(dirs["drop"]) == []


# -- the formats --------------------------------------------------------------------------------


def test_b2mml_document_structure() -> None:
    p = conf(
        4,
        split=1,
        final=True,
        scrap_qty=Decimal("7"),
        scrap_by_reason=(Quantity("S03", Decimal("5")),),
        rework_qty=Decimal("1.5"),
        rework_by_reason=(Quantity("R01", Decimal("1.5")),),
        variance_reason="slow cycle",
    )
    data = b2mml_document(p)
    assert data.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n')
    root = ET.fromstring(data)
    assert root.tag == f"{N}ProcessOperationsPerformance"
    assert root.get("releaseID") == "V0700"
    assert [c.tag for c in root] == [f"{N}ApplicationArea", f"{N}DataArea"]
    area = root.find(f"{N}ApplicationArea")
    assert area is not None
    assert area.findtext(f"{N}Sender/{N}LogicalID") == "gw-1"
    assert area.findtext(f"{N}Sender/{N}ReferenceID") == p.idem_key
    assert area.findtext(f"{N}CreationDateTime") == "2025-03-04T09:00:00Z"
    assert area.findtext(f"{N}BODID") == p.external_id
    data_area = root.find(f"{N}DataArea")
    assert data_area is not None
    assert [c.tag for c in data_area] == [f"{N}Process", f"{N}OperationsPerformance"]
    perf = data_area.find(f"{N}OperationsPerformance")
    assert perf is not None
    assert [c.tag.removeprefix(N) for c in perf] == [
        "ID",
        "Description",
        "HierarchyScope",
        "OperationsType",
        "OperationsScheduleID",
        "StartTime",
        "EndTime",
        "OperationsResponse",
    ]
    assert perf.findtext(f"{N}ID") == p.idem_key
    assert perf.findtext(f"{N}OperationsScheduleID") == "1000123"
    assert perf.findtext(f"{N}StartTime") == "2025-03-04T06:00:00Z"
    resp = perf.find(f"{N}OperationsResponse")
    assert resp is not None
    assert resp.findtext(f"{N}OperationsRequestID") == "1000123"
    assert resp.findtext(f"{N}ResponseState") == "Completed"
    seg = resp.find(f"{N}SegmentResponse")
    assert seg is not None
    tags = [c.tag.removeprefix(N) for c in seg]
    assert tags[:9] == [
        "ID",
        "HierarchyScope",
        "OperationsType",
        "ProcessSegmentID",
        "ActualStartTime",
        "ActualEndTime",
        "PostingDate",
        "SegmentState",
        "SegmentData",
    ]
    assert tags[-4:] == ["MaterialActual"] * 4  # yield, scrap S03, scrap without reason, rework
    assert seg.findtext(f"{N}ID") == "0010/1"
    assert seg.findtext(f"{N}ProcessSegmentID") == "0010"
    assert seg.findtext(f"{N}HierarchyScope/{N}EquipmentID") == "WC-4711"
    assert seg.findtext(f"{N}HierarchyScope/{N}EquipmentElementLevel") == "WorkCenter"
    assert seg.findtext(f"{N}ActualEndTime") == "2025-03-04T09:00:00Z"
    assert seg.findtext(f"{N}PostingDate") == "2025-03-04T00:00:00"
    segment_data = {
        d.findtext(f"{N}ID"): (
            d.findtext(f"{N}Value/{N}ValueString"),
            d.findtext(f"{N}Value/{N}DataType"),
        )
        for d in seg.findall(f"{N}SegmentData")
    }
    assert segment_data["SetupDuration"] == ("PT10M", "duration")
    assert segment_data["RunDuration"] == ("PT3H50M", "duration")
    assert segment_data["LabourDuration"] == ("PT7H40M", "duration")
    assert segment_data["ConfirmationCounter"] == ("4", "integer")
    assert segment_data["FinalConfirmation"] == ("true", "boolean")
    assert segment_data["VarianceReason"] == ("slow cycle", "string")
    actuals = [
        (
            m.findtext(f"{N}MaterialDefinitionID"),
            m.findtext(f"{N}MaterialUse"),
            m.find(f"{N}MaterialUse").get("OtherValue"),  # type: ignore[union-attr]
            m.findtext(f"{N}Quantity/{N}QuantityString"),
            m.findtext(f"{N}Quantity/{N}UnitOfMeasure"),
            m.findtext(f"{N}MaterialActualProperty/{N}Value/{N}ValueString"),
        )
        for m in seg.findall(f"{N}MaterialActual")
    ]
    assert actuals == [
        ("FG-100", "Produced", None, "95", "PCE", None),
        ("FG-100", "Other", "Scrap", "5", "PCE", "S03"),
        ("FG-100", "Other", "Scrap", "2", "PCE", None),
        ("FG-100", "Other", "Rework", "1.5", "PCE", "R01"),
    ]
    for m in seg.findall(f"{N}MaterialActual"):  # xsd:sequence: MaterialUse before Quantity
        order = [c.tag.removeprefix(N) for c in m]
        assert order.index("MaterialUse") < order.index("Quantity")
    assert b2mml_document(p) == data  # deterministic: writing again gives the same bytes


async def test_csv_decimal_comma_and_cp1252(dirs: dict[str, Path]) -> None:
    s = settings(dirs, format="csv", decimal_comma=True, encoding="cp1252")
    a = await adapter(s)
    p = conf(
        yield_qty=Decimal("12.50"),
        scrap_qty=Decimal("0.5"),
        scrap_by_reason=(Quantity("S03", Decimal("0.5")),),
        work_center="Presse Ä/1",
        unit="Stück",
        setup_s=90.25,
    )
    name = a.name_for(p)
    assert name.startswith("Presse---1_1000123_0010_1_conf_")
    assert isinstance(await a.post(p), Submitted)
    raw = (dirs["drop"] / name).read_bytes()
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")
    rows = list(csv.reader(io.StringIO(raw.decode("cp1252"), newline=""), delimiter=";"))
    assert tuple(rows[0]) == COLUMNS
    row = dict(zip(COLUMNS, rows[1], strict=True))
    assert row["kind"] == "confirmation"
    assert row["idem_key"] == p.idem_key
    assert row["work_center"] == "Presse Ä/1"
    assert row["unit"] == "Stück"
    assert (row["yield"], row["scrap"], row["rework"]) == ("12,5", "0,5", "0")
    assert row["scrap_by_reason"] == "S03:0,5"
    assert (row["setup_s"], row["machine_s"]) == ("90,25", "13800")
    assert (row["period_start"], row["period_end"]) == (
        "2025-03-04T06:00:00Z",
        "2025-03-04T09:00:00Z",
    )
    assert (row["posting_date"], row["final"], row["reverses_key"]) == ("2025-03-04", "0", "")
    assert raw.endswith(b"\r\n")
    async with FileErpStandIn(
        dirs["drop"], dirs["ack"], dirs["archive"], encoding="cp1252", decimal_comma=True
    ) as erp:
        done = await settle(a, p, await a.poll(p, {"file": name}))
        assert isinstance(done, Posted)
        entry = erp.entry(p.idem_key)
        assert entry is not None
        assert entry.yield_qty == Decimal("12.5")
        assert entry.unit == "Stück"
    # a character cp1252 cannot hold: refused before anything is written
    out = await a.post(conf(2, material="Ω-ring"))
    assert isinstance(out, Rejected)
    assert out.code == "FORMAT"
    assert "cp1252" in out.text


def test_names_are_stable_plain_and_distinct(dirs: dict[str, Path]) -> None:
    s = settings(dirs, name_pattern="{edge_id}-{order_id}-{split}-{kind}-{key16}.{ext}")
    p = conf(work_center="../../etc", edge_id="gw/1")
    assert file_name(s, p) == file_name(s, p)
    assert "/" not in file_name(s, p)
    assert ".." not in file_name(s, p)
    assert file_name(s, p).startswith("gw-1-1000123-0-conf-")
    assert file_name(s, p) != file_name(s, conf(2))
    assert file_name(s, p) != file_name(s, rev(p))
    assert file_name(settings(dirs, format="csv"), p).endswith(".csv")


# -- settings -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"name_pattern": "{order}_{key8}.xml"}, "name_pattern", "unknown placeholder {order}"),
        ({"name_pattern": "out/{key8}.xml"}, "name_pattern", "plain file name"),
        ({"name_pattern": "..{key8}.xml"}, "name_pattern", "plain file name"),
        ({"name_pattern": "{order_id}.xml"}, "name_pattern", "{key8}"),
        ({"name_pattern": ".{key8}.xml"}, "name_pattern", "must not start with '.'"),
        ({"name_pattern": "{key8:>10}.xml"}, "name_pattern", "no format"),
        ({"drop_folder": "/tmp"}, "drop_folder", "Extra inputs are not permitted"),
        ({"ack_timeout_s": 0.0}, "ack_timeout_s", "greater than or equal to 1"),
        ({"ack_timeout_s": 1e9}, "ack_timeout_s", "less than or equal"),
        ({"csv_delimiter": ";;"}, "csv_delimiter", "at most 1 character"),
        ({"encoding": "latin-1"}, "encoding", "'utf-8' or 'cp1252'"),
        ({"format": "json"}, "format", "'b2mml' or 'csv'"),
    ],
)
def test_settings_errors_name_the_field(
    dirs: dict[str, Path], change: dict[str, Any], field: str, words: str
) -> None:
    with pytest.raises(pydantic.ValidationError) as err:
        settings(dirs, **change)
    text = str(err.value)
    assert field in text
    assert words in text


def test_settings_comma_delimiter_with_decimal_comma(dirs: dict[str, Path]) -> None:
    with pytest.raises(pydantic.ValidationError, match="decimal_comma"):
        settings(dirs, format="csv", csv_delimiter=",", decimal_comma=True)


def test_settings_from_toml_strings(dirs: dict[str, Path]) -> None:
    s = Settings.model_validate(
        {"system": "file", "format": "csv", "drop_dir": str(dirs["drop"]), "ack_dir": None}
    )
    assert s.drop_dir == dirs["drop"]
    assert s.name_pattern == "{work_center}_{order_id}_{operation}_{conf_index}_{kind}_{key8}.{ext}"


async def test_start_names_the_missing_folder(tmp_path: Path, dirs: dict[str, Path]) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(ValueError, match=f"erp.drop_dir: {missing} does not exist"):
        await build(settings(dirs, drop_dir=missing)).start()
    with pytest.raises(ValueError, match=f"erp.ack_dir: {missing} does not exist"):
        await build(settings(dirs, ack_dir=missing)).start()
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    with pytest.raises(ValueError, match=f"erp.archive_dir: {a_file} is not a directory"):
        await build(settings(dirs, archive_dir=a_file)).start()


def test_settings_folders_must_differ(dirs: dict[str, Path]) -> None:
    with pytest.raises(pydantic.ValidationError, match="ack_dir and drop_dir must be different"):
        settings(dirs, ack_dir=dirs["drop"])


async def test_concurrent_posts_of_one_posting_write_once(
    dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import edge.relay.files as files

    writes: list[str] = []
    real = files.write_atomic

    def counting(directory: Path, name: str, data: bytes) -> None:
        writes.append(name)
        real(directory, name, data)

    monkeypatch.setattr(files, "write_atomic", counting)
    a = await adapter(settings(dirs))
    p = conf()
    outs = await asyncio.gather(*(a.post(p) for _ in range(5)))
    assert all(isinstance(o, Submitted) for o in outs)
    assert writes == [a.name_for(p)]
    assert visible(dirs["drop"]) == [a.name_for(p)]


async def test_the_stand_in_from_the_command_line(dirs: dict[str, Path]) -> None:
    erp = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "simulators.erp.files",
        "--drop",
        str(dirs["drop"]),
        "--ack",
        str(dirs["ack"]),
        "--archive",
        str(dirs["archive"]),
        "--orders",
        "1000123",
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        a = await adapter(settings(dirs))
        p, unknown = conf(), conf(2, order_id="1000999")
        assert await settle(a, p, await a.post(p), timeout=8) == Posted(
            keys={"file": a.name_for(p), "document": "4900000001"}
        )
        assert await settle(a, unknown, await a.post(unknown), timeout=8) == Rejected(
            "Order 1000999 does not exist", code="E101"
        )
        assert erp.stdout is not None
        line = await asyncio.wait_for(erp.stdout.readline(), 5)
        assert line.decode().startswith(f"{a.name_for(p)}: ok document=4900000001")
    finally:
        erp.terminate()
        await erp.wait()


async def test_the_stand_in_answers_a_file_it_cannot_read(dirs: dict[str, Path]) -> None:
    a = await adapter(settings(dirs, format="csv"))
    p = conf()
    (dirs["drop"] / a.name_for(p)).write_text("order;qty\r\n1000123;5\r\n")
    async with FileErpStandIn(dirs["drop"], dirs["ack"], dirs["archive"]) as erp:
        out = await settle(a, p, await a.poll(p, {"file": a.name_for(p)}))
        assert isinstance(out, Rejected)
        assert out.code == "E900"
        assert "header" in out.text
        assert erp.postings == []
