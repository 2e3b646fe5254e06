"""The file order source (edge.relay.orders_files) on files the order-file ERP
(simulators.erp.order_files) writes and on a few written by hand: LOIPRO and B2MML mapped field
by field, newest wins, held and cancelled, archive and error folders, restart, hostile files,
values left out, settings."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pydantic
import pytest
import structlog

from edge.relay import orders_files
from edge.relay.orders import ErpOperation, SnapshotFailed
from edge.relay.orders_files import (
    FileOrderSource,
    Settings,
    build,
    judge,
    parse_duration,
    sap_datetime,
    sap_decimal,
)
from simulators.erp.order_files import (
    CONFIRMED,
    CREATED,
    DELETED,
    Operation,
    Order,
    OrderFiles,
    demo,
    main,
)
from tests.erp.helpers import released
from tests.small_disk import fill, small_disk

WC = "WC-4711"
WC2 = "WC-4712"
BERLIN = "Europe/Berlin"


class Folders:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.inbox = root / "inbox"
        self.archive = root / "archive"
        self.error = root / "error"
        self.state = root / "state" / "orders.json"
        for folder in (self.inbox, self.archive, self.error, self.state.parent):
            folder.mkdir(parents=True)

    def settings(self, **changes: Any) -> Settings:
        values: dict[str, Any] = {
            "system": "file",
            "format": "loipro",
            "inbox_dir": self.inbox,
            "archive_dir": self.archive,
            "error_dir": self.error,
            "state_file": self.state,
            "timezone": BERLIN,
            "settle_s": 0.0,
        }
        values.update(changes)
        return Settings(**values)

    def files(self, zone: str = BERLIN) -> OrderFiles:
        return OrderFiles(self.inbox, zone=zone)


@pytest.fixture
def folders(tmp_path: Path) -> Folders:
    return Folders(tmp_path)


async def snap(source: FileOrderSource, *wcs: str) -> dict[str, list[ErpOperation]]:
    result = await source.snapshot(list(wcs or (WC,)))
    assert not isinstance(result, SnapshotFailed), result
    return result


def by_key(ops: list[ErpOperation]) -> dict[tuple[str, str], ErpOperation]:
    return {(op.order_id, op.operation): op for op in ops}


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def write_later(path: Path, data: bytes, seconds: float) -> None:
    """``data`` into ``path`` with a modification time ``seconds`` after now."""
    path.write_bytes(data)
    later = time.time() + seconds
    os.utime(path, (later, later))


CONSTRUCTED = b"""<?xml version="1.0" encoding="UTF-8"?>
<LOIPRO01>
 <IDOC BEGIN="1">
  <EDI_DC40 SEGMENT="1">
   <TABNAM>EDI_DC40</TABNAM><DOCNUM>0000000004711001</DOCNUM><DIRECT>1</DIRECT>
   <IDOCTYP>LOIPRO01</IDOCTYP><MESTYP>LOIPRO</MESTYP>
   <SNDPOR>SAPS4H</SNDPOR><SNDPRT>LS</SNDPRT><SNDPRN>S4HCLNT100</SNDPRN>
   <RCVPOR>RELAY</RCVPOR><RCVPRT>LS</RCVPRT><RCVPRN>ERPRELAY</RCVPRN>
   <CREDAT>20250303</CREDAT><CRETIM>180000</CRETIM>
  </EDI_DC40>
  <E1AFKOL SEGMENT="1">
   <AUFNR>000001000123</AUFNR><AUART>PP01</AUART><AUTYP>10</AUTYP><WERKS>1010</WERKS>
   <MATNR>FG-100</MATNR><GAMNG>100.000</GAMNG><GMEIN>ST</GMEIN>
   <GSTRP>20250304</GSTRP><GLTRP>20250305</GLTRP>
   <GSTRS>20250304</GSTRS><GSUZS>060000</GSUZS><GLTRS>20250304</GLTRS><GLUZS>140000</GLUZS>
   <E1JSTKL SEGMENT="1"><STAT>I0002</STAT></E1JSTKL>
   <E1AFFLL SEGMENT="1">
    <PLNFL>000000</PLNFL>
    <E1AFVOL SEGMENT="1">
     <VORNR>0010</VORNR><LTXA1>Assemble housing</LTXA1><ARBPL>WC-4711</ARBPL>
     <STEUS>PP01</STEUS><MGVRG>100.000</MGVRG><MEINH>ST</MEINH><BMSCH>100.000</BMSCH>
     <VGW01>15.000</VGW01><VGE01>MIN</VGE01><VGW02>240.000</VGW02><VGE02>MIN</VGE02>
     <FSAVD>20250304</FSAVD><FSAVZ>060000</FSAVZ><FSEDD>20250304</FSEDD><FSEDZ>100000</FSEDZ>
    </E1AFVOL>
   </E1AFFLL>
  </E1AFKOL>
 </IDOC>
</LOIPRO01>
"""


# -- mapping ------------------------------------------------------------------------------------


async def test_the_constructed_example_field_by_field(folders: Folders) -> None:
    (folders.inbox / "O_100_0000000004711001").write_bytes(CONSTRUCTED)
    source = build(folders.settings())
    await source.start()
    result = await snap(source, WC, "WC-OTHER")
    assert result["WC-OTHER"] == []
    assert result[WC] == [
        released(
            (WC, "1000123", "0010"),  # zeros stripped
            ("FG-100", Decimal(100), "ST"),
            "Assemble housing",
            1,
            (
                900.0,  # 15 MIN
                144.0,  # 240 MIN per 100
                "2025-03-04T09:00:00Z",  # FSEDD/FSEDZ 10:00 in Berlin (CET)
            ),
        )
    ]
    assert names(folders.archive) == ["O_100_0000000004711001"]
    assert names(folders.inbox) == []
    assert names(folders.error) == []


async def test_loipro_from_the_generator_field_by_field(folders: Folders) -> None:
    files = folders.files()
    first = Order(
        order_id="1000123",
        quantity=Decimal("250.5"),
        unit="KG",
        start=datetime(2025, 7, 1, 6, 0),  # CEST: UTC+2
        finish=datetime(2025, 7, 1, 22, 0),
        over_tolerance_pct=Decimal(5),
        under_tolerance_pct=Decimal(2),
        operations=(
            Operation(
                "0010",
                WC,
                "Cut",
                base_quantity=Decimal(1),
                setup=Decimal("0.5"),
                setup_unit="H",
                run=Decimal(12),
                run_unit="S",
                start=datetime(2025, 7, 1, 8, 0),
                latest_finish=datetime(2025, 7, 1, 12, 30),
                confirmation_no="0000004711",
            ),
            Operation("0020", WC2, "Weld", quantity=Decimal(250), unit="ST"),
        ),
    )
    second = Order(
        order_id="1000124",
        material="000000000000004711",
        start=datetime(2025, 7, 1, 7, 0),
        operations=(Operation("0010", WC, "Pack", setup=Decimal(0), run=Decimal(0)),),
    )
    files.loipro(first, second)  # two IDocs in one file
    source = build(folders.settings())
    result = await snap(source, WC, WC2)
    ops = by_key(result[WC])
    cut = ops[("1000123", "0010")]
    assert cut.material == "FG-100"
    assert cut.quantity == Decimal("250.5")
    assert cut.unit == "KG"
    assert cut.material_text == "Cut"
    assert cut.planned_setup_s == 1800.0
    assert cut.planned_run_s_per_unit == 12.0
    assert cut.latest_end == "2025-07-01T10:30:00Z"  # the operation's SSEDD/SSEDZ, CEST
    assert cut.over_tolerance_pct == Decimal(5)
    assert cut.under_tolerance_pct == Decimal(2)
    assert cut.confirmation_no == "0000004711"
    assert cut.status == "released"
    pack = ops[("1000124", "0010")]
    assert pack.material == "4711"  # numeric material number: zeros stripped
    assert pack.planned_setup_s == 0.0
    assert pack.planned_run_s_per_unit == 0.0
    assert pack.latest_end == "2025-03-04T13:00:00Z"
    # sequence by scheduled start: 1000124 at 07:00 before 1000123/0010 at 08:00
    assert [(op.order_id, op.sequence) for op in result[WC]] == [("1000124", 1), ("1000123", 2)]
    weld = result[WC2][0]
    assert (weld.order_id, weld.operation, weld.quantity, weld.unit) == (
        "1000123",
        "0020",
        Decimal(250),
        "ST",
    )
    assert weld.sequence == 1
    assert weld.latest_end == "2025-07-01T20:00:00Z"  # the header's scheduled finish


async def test_b2mml_from_the_generator_field_by_field(folders: Folders) -> None:
    files = folders.files()
    orders = [
        Order(
            order_id="1000123",
            operations=(
                Operation("0010", WC, "Assemble housing"),
                Operation("0020", WC2, "Test", start=datetime(2025, 3, 4, 9, 0)),
            ),
        ),
        Order(
            order_id="A-77",
            material="FG-200",
            quantity=Decimal("12.5"),
            unit="M",
            start=datetime(2025, 3, 4, 5, 0),
            operations=(Operation("10", WC, "Wind", setup=Decimal(2), setup_unit="H"),),
        ),
    ]
    files.b2mml(*orders)
    source = build(folders.settings(format="b2mml"))
    result = await snap(source, WC, WC2)
    assert [(op.order_id, op.operation, op.sequence) for op in result[WC]] == [
        ("A-77", "10", 1),
        ("1000123", "0010", 2),
    ]
    housing = by_key(result[WC])[("1000123", "0010")]
    assert housing == released(
        (WC, "1000123", "0010"),
        ("FG-100", Decimal(100), "ST"),
        "Assemble housing",
        2,
        (900.0, 144.0, "2025-03-04T13:00:00Z"),
    )
    wind = by_key(result[WC])[("A-77", "10")]
    assert (wind.quantity, wind.unit, wind.planned_setup_s) == (Decimal("12.5"), "M", 7200.0)
    assert result[WC2][0].operation == "0020"


async def test_b2mml_written_by_hand_with_zones_and_a_unit_on_the_standards(
    folders: Folders,
) -> None:
    doc = b"""<?xml version="1.0" encoding="UTF-8"?>
<SyncOperationsSchedule xmlns="http://www.mesa.org/xml/B2MML" releaseID="V0700">
  <ApplicationArea><CreationDateTime>2025-03-03T18:00:00+01:00</CreationDateTime></ApplicationArea>
  <DataArea><Sync/>
    <OperationsSchedule><ID>S1</ID>
      <HierarchyScope><EquipmentID>WC-4711</EquipmentID>
        <EquipmentElementLevel>WorkCenter</EquipmentElementLevel></HierarchyScope>
      <OperationsRequest><ID>9000001</ID><EndTime>2025-03-04T16:00:00</EndTime>
        <SegmentRequirement><ID>0010</ID>
          <EarliestStartTime>2025-03-04T06:00:00Z</EarliestStartTime>
          <SegmentParameter><ID>SetupDuration</ID>
            <Value><ValueString>20</ValueString><UnitOfMeasure>MIN</UnitOfMeasure></Value>
          </SegmentParameter>
          <SegmentParameter><ID>RunDurationPerUnit</ID>
            <Value><ValueString>PT1M30S</ValueString><DataType>duration</DataType></Value>
          </SegmentParameter>
          <MaterialRequirement><MaterialDefinitionID>RM-1</MaterialDefinitionID>
            <MaterialUse>Consumed</MaterialUse>
            <Quantity><QuantityString>400</QuantityString><UnitOfMeasure>KG</UnitOfMeasure>
            </Quantity></MaterialRequirement>
          <MaterialRequirement><MaterialDefinitionID>FG-9</MaterialDefinitionID>
            <Description>Panel 2x1</Description><MaterialUse>Produced</MaterialUse>
            <Quantity><QuantityString>40</QuantityString><UnitOfMeasure>PCE</UnitOfMeasure>
            </Quantity></MaterialRequirement>
        </SegmentRequirement>
      </OperationsRequest>
    </OperationsSchedule>
  </DataArea>
</SyncOperationsSchedule>
"""
    (folders.inbox / "sched.xml").write_bytes(doc)
    result = await snap(build(folders.settings(format="b2mml")))
    (op,) = result[WC]
    assert op.work_center == WC  # from the schedule's HierarchyScope
    assert (op.material, op.quantity, op.unit) == ("FG-9", Decimal(40), "PCE")  # the Produced one
    assert op.material_text == "Panel 2x1"
    assert (op.planned_setup_s, op.planned_run_s_per_unit) == (1200.0, 90.0)
    assert op.latest_end == "2025-03-04T15:00:00Z"  # no zone: the plant's (CET)
    assert op.status == "released"  # no RequestState at all


# -- newest wins --------------------------------------------------------------------------------


async def test_a_newer_idoc_of_the_same_order_replaces_the_older(folders: Folders) -> None:
    files = folders.files()
    order = Order(
        operations=(Operation("0010", WC), Operation("0020", WC, start=datetime(2025, 3, 4, 9)))
    )
    files.loipro(order)
    source = build(folders.settings())
    assert {op.quantity for op in (await snap(source))[WC]} == {Decimal(100)}
    # the quantity changes and 0020 moves to another work center
    files.loipro(order.with_quantity(120).with_operation("0020", work_center=WC2))
    result = await snap(source, WC, WC2)
    assert [(op.operation, op.quantity) for op in result[WC]] == [("0010", Decimal(120))]
    assert [(op.operation, op.quantity) for op in result[WC2]] == [("0020", Decimal(120))]
    assert len(names(folders.archive)) == 2


async def test_an_older_idoc_arriving_later_is_ignored(folders: Folders) -> None:
    files = folders.files()
    order = Order()
    # DOCNUM 20 created at 18:05 is written first, DOCNUM 10 created at 18:00 after it
    newer = files.loipro(order.with_quantity(150), docnum=20, created=datetime(2025, 3, 3, 18, 5))
    older = files.loipro(order, docnum=10, created=datetime(2025, 3, 3, 18, 0))
    os.utime(older, (time.time() + 5, time.time() + 5))
    source = build(folders.settings())
    with structlog.testing.capture_logs() as logs:
        result = await snap(source)
    assert [op.quantity for op in result[WC]] == [Decimal(150)]
    assert any(e["event"] == "order_file_older" and e["file"] == older.name for e in logs)
    assert names(folders.archive) == sorted([newer.name, older.name])
    # and the other way round in two snapshots: still the newer one
    files.loipro(order.with_quantity(90), docnum=5, created=datetime(2025, 3, 3, 17, 0))
    assert [op.quantity for op in (await snap(source))[WC]] == [Decimal(150)]


async def test_same_creation_time_the_higher_docnum_wins(folders: Folders) -> None:
    files = folders.files()
    at = datetime(2025, 3, 3, 18, 0)
    files.loipro(Order().with_quantity(7), docnum=31, created=at, name="b.xml")
    files.loipro(Order().with_quantity(8), docnum=30, created=at, name="a.xml")
    assert [op.quantity for op in (await snap(build(folders.settings())))[WC]] == [Decimal(7)]


async def test_b2mml_newer_schedule_replaces_the_orders_it_names_only(folders: Folders) -> None:
    files = folders.files()
    a = Order(order_id="1000123")
    b = Order(order_id="1000124", start=datetime(2025, 3, 4, 7))
    files.b2mml(a, b)
    source = build(folders.settings(format="b2mml"))
    await snap(source)
    files.b2mml(a.with_quantity(60))
    ops = by_key((await snap(source))[WC])
    assert ops[("1000123", "0010")].quantity == Decimal(60)
    assert ops[("1000124", "0010")].quantity == Decimal(100)


# -- status -------------------------------------------------------------------------------------


async def test_locked_is_held_and_unlocked_released_again(folders: Folders) -> None:
    files = folders.files()
    order = Order()
    source = build(folders.settings())
    files.loipro(order.locked())
    (op,) = (await snap(source))[WC]
    assert (op.status, op.status_text) == ("held", "held in the ERP: LKD")
    files.loipro(order.locked().unlocked())
    (op,) = (await snap(source))[WC]
    assert (op.status, op.status_text) == ("released", "")


async def test_teco_and_deletion_are_cancelled_and_reported_while_in_state(
    folders: Folders,
) -> None:
    files = folders.files()
    teco = Order(order_id="1000123")
    gone = Order(order_id="1000124", operations=(Operation("0010"), Operation("0020")))
    files.loipro(teco, gone)
    source = build(folders.settings())
    await snap(source)
    files.loipro(teco.teco())
    files.loipro(gone.deleted(bare=True))  # a bare header: its operations still cancelled
    for _ in range(2):  # reported again on the next snapshot
        ops = by_key((await snap(source))[WC])
        assert ops[("1000123", "0010")].status == "cancelled"
        assert ops[("1000123", "0010")].status_text == "cancelled in the ERP: TECO"
        assert ops[("1000124", "0010")].status == "cancelled"
        assert ops[("1000124", "0020")].status == "cancelled"
        assert ops[("1000124", "0020")].status_text == "cancelled in the ERP: DLFL"


async def test_an_order_first_seen_cancelled_is_reported_cancelled(folders: Folders) -> None:
    folders.files().loipro(Order().teco())
    (op,) = (await snap(build(folders.settings())))[WC]
    assert op.status == "cancelled"


async def test_operation_statuses_and_orders_not_released(folders: Folders) -> None:
    files = folders.files()
    order = Order(
        operations=(
            Operation("0010", statuses=(CONFIRMED,)),  # done: leaves the list
            Operation("0020", statuses=(DELETED,)),  # deleted operation: cancelled
            Operation("0030", statuses=("I0043",)),  # locked operation: held
            Operation("0040"),
        )
    )
    created_only = Order(order_id="1000999", statuses=(CREATED,))
    files.loipro(order, created_only)
    ops = by_key((await snap(build(folders.settings())))[WC])
    assert {k: (v.status, v.status_text) for k, v in ops.items()} == {
        ("1000123", "0020"): ("cancelled", "cancelled in the ERP: DLT"),
        ("1000123", "0030"): ("held", "held in the ERP: LKD"),
        ("1000123", "0040"): ("released", ""),
    }


async def test_b2mml_states_and_the_cancel_verb(folders: Folders) -> None:
    files = folders.files()
    a = Order(order_id="1000123")
    b = Order(order_id="1000124", start=datetime(2025, 3, 4, 7))
    c = Order(order_id="1000125", start=datetime(2025, 3, 4, 8))
    source = build(folders.settings(format="b2mml"))
    files.b2mml(a, b, c)
    await snap(source)
    files.b2mml(a.locked(), b.teco())
    files.b2mml(dataclass_bare(c), verb="Cancel")
    ops = by_key((await snap(source))[WC])
    assert (ops[("1000123", "0010")].status, ops[("1000123", "0010")].status_text) == (
        "held",
        "held in the ERP: Held",
    )
    assert ops[("1000124", "0010")].status == "cancelled"
    assert ops[("1000125", "0010")].status == "cancelled"
    assert "CancelOperationsSchedule" in ops[("1000125", "0010")].status_text


def dataclass_bare(order: Order) -> Order:
    return dataclasses.replace(order, bare=True)


def test_the_status_rules() -> None:
    s = Settings(
        system="file", format="loipro", inbox_dir=Path("/i"), state_file=Path("/s/state.json")
    )
    assert judge([], s) == ("released", "")
    assert judge(["I0002"], s) == ("released", "")
    assert judge(["I0001"], s) == ("unreleased", "")
    assert judge(["I0002", "I0043"], s) == ("held", "held in the ERP: LKD")
    assert judge(["I0002", "I0043", "I0045"], s) == ("cancelled", "cancelled in the ERP: TECO")
    assert judge(["I0045", "I0009"], s)[0] == "done"
    assert judge(["I0002", "E0003"], s.model_copy(update={"held_statuses": ("E0003",)}))[0] == (
        "held"
    )


def test_values_of_the_formats() -> None:
    assert sap_decimal("100.000") == Decimal(100)
    assert sap_decimal(" 5.500- ") == Decimal("-5.5")
    assert sap_decimal("") is None
    with pytest.raises(ValueError, match="not a number"):
        sap_decimal("1e5")
    assert parse_duration("PT1H30M") == 5400.0
    assert parse_duration("P1DT0.5S") == 86400.5
    with pytest.raises(ValueError, match="duration"):
        parse_duration("PT")
    zone = ZoneInfo(BERLIN)
    assert sap_datetime("20250304", "140000", zone, end_of_day=True) == "2025-03-04T13:00:00Z"
    assert sap_datetime("20250304", "000000", zone, end_of_day=True) == "2025-03-04T23:00:00Z"
    assert sap_datetime("20250304", "", zone, end_of_day=False) == "2025-03-03T23:00:00Z"
    assert sap_datetime("00000000", "", zone, end_of_day=False) is None


# -- folders and state --------------------------------------------------------------------------


async def test_without_an_archive_files_stay_and_are_read_once(folders: Folders) -> None:
    files = folders.files()
    path = files.loipro(Order(), name="order.xml")
    source = build(folders.settings(archive_dir=None))
    with structlog.testing.capture_logs() as logs:
        await snap(source)
        await snap(source)
    assert [e["event"] for e in logs].count("order_read") == 1
    assert names(folders.inbox) == ["order.xml"]
    state = json.loads(folders.state.read_text())
    assert set(state["remembered"]) == {"order.xml"}
    # the ERP rewrites the file: read again
    write_later(path, path.read_bytes().replace(b"100.000", b"110.000"), 2)
    assert [op.quantity for op in (await snap(source))[WC]] == [Decimal(110)]
    # gone from the inbox: forgotten from the remembered files, the order stays
    path.unlink()
    assert len((await snap(source))[WC]) == 1
    assert json.loads(folders.state.read_text())["remembered"] == {}


async def test_without_an_error_folder_a_bad_file_stays_and_is_warned_about_once(
    folders: Folders,
) -> None:
    (folders.inbox / "junk.xml").write_bytes(b"not xml at all")
    source = build(folders.settings(error_dir=None))
    with structlog.testing.capture_logs() as logs:
        await snap(source)
        await snap(source)
    refused = [e for e in logs if e["event"] == "order_file_refused"]
    assert len(refused) == 1
    assert refused[0]["file"] == "junk.xml"
    assert names(folders.inbox) == ["junk.xml"]


async def test_a_restart_keeps_the_orders_whose_files_were_archived(folders: Folders) -> None:
    files = folders.files()
    files.loipro(Order(order_id="1000123"), Order(order_id="1000124").locked())
    first = build(folders.settings())
    before = await snap(first)
    assert names(folders.inbox) == []
    second = build(folders.settings())  # a new process on the same state file
    await second.start()
    assert await snap(second) == before
    # and it still knows the versions: an older IDoc is ignored after the restart
    files.loipro(Order(order_id="1000123").with_quantity(1), docnum=1, created=datetime(2024, 1, 1))
    assert await snap(second) == before


async def test_cancelled_orders_are_forgotten_after_the_set_time(folders: Folders) -> None:
    now = [1_000_000.0]
    clock: Callable[[], float] = lambda: now[0]  # noqa: E731
    files = folders.files()
    files.loipro(Order(order_id="1000123").teco(), Order(order_id="1000124"))
    source = FileOrderSource(folders.settings(forget_cancelled_after_s=86400.0), clock=clock)
    assert len((await snap(source))[WC]) == 2
    now[0] += 86000
    assert len((await snap(source))[WC]) == 2
    now[0] += 1000
    assert [op.order_id for op in (await snap(source))[WC]] == ["1000124"]
    now[0] += 91 * 86400  # not updated for longer than forget_after_s
    assert (await snap(source))[WC] == []


async def test_a_state_file_that_cannot_be_read_fails_the_snapshot(folders: Folders) -> None:
    folders.state.write_text("{not json")
    folders.files().loipro(Order())
    result = await build(folders.settings()).snapshot([WC])
    assert isinstance(result, SnapshotFailed)
    assert str(folders.state) in result.text
    assert len(names(folders.inbox)) == 1  # nothing read, nothing moved


async def test_a_missing_inbox_fails_the_snapshot_and_start(folders: Folders) -> None:
    settings = folders.settings(inbox_dir=folders.root / "nowhere")
    result = await build(settings).snapshot([WC])
    assert isinstance(result, SnapshotFailed)
    assert "nowhere" in result.text
    with pytest.raises(ValueError, match=r"orders\.inbox_dir: .*nowhere does not exist"):
        await build(settings).start()


async def test_files_being_written_are_left_for_later(folders: Folders) -> None:
    files = folders.files()
    files.loipro(Order())
    (folders.inbox / ".LOIPRO_x.xml.abc.tmp").write_bytes(b"<LOIPRO01><IDOC>")
    source = build(folders.settings(settle_s=60.0))
    assert (await snap(source))[WC] == []  # too fresh
    assert ".LOIPRO_x.xml.abc.tmp" in names(folders.inbox)
    source = build(folders.settings())
    assert len((await snap(source))[WC]) == 1
    assert names(folders.error) == []


# -- hostile and broken files -------------------------------------------------------------------


BOMB = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
]>
<LOIPRO01><IDOC><E1AFKOL><AUFNR>&lol3;</AUFNR></E1AFKOL></IDOC></LOIPRO01>
"""
EXTERNAL = b"""<?xml version="1.0"?>
<!DOCTYPE x SYSTEM "http://127.0.0.1:9/evil.dtd">
<LOIPRO01/>
"""


async def test_hostile_and_broken_files_go_to_the_error_folder_with_their_reason(
    folders: Folders,
) -> None:
    files = folders.files()
    good = files.loipro(Order(), name="good.xml")
    (folders.inbox / "bomb.xml").write_bytes(BOMB)
    (folders.inbox / "external.xml").write_bytes(EXTERNAL)
    (folders.inbox / "truncated.xml").write_bytes(good.read_bytes()[:700])
    (folders.inbox / "notxml.xml").write_bytes(b"\x00\x01PK\x03\x04 binary")
    (folders.inbox / "empty.xml").write_bytes(b"")
    (folders.inbox / "deep.xml").write_bytes(b"<a>" * 100 + b"</a>" * 100)
    (folders.inbox / "other.xml").write_bytes(b"<Invoice><ID>1</ID></Invoice>")
    with open(folders.inbox / "huge.xml", "wb") as fh:  # sparse: 100 MB in no time
        fh.truncate(100 * 1024 * 1024)
    source = build(folders.settings())
    with structlog.testing.capture_logs() as logs:
        result = await snap(source)
    assert [op.order_id for op in result[WC]] == ["1000123"]
    assert names(folders.archive) == ["good.xml"]
    assert names(folders.inbox) == []
    why = {
        p.name.removesuffix(".why"): p.read_text()
        for p in folders.error.iterdir()
        if p.name.endswith(".why")
    }
    expected = {
        "bomb.xml": "DOCTYPE",
        "external.xml": "DOCTYPE",
        "truncated.xml": "not well-formed XML",
        "notxml.xml": "not well-formed XML",
        "empty.xml": "empty",
        "deep.xml": "nested deeper than 32 levels",
        "other.xml": "no IDOC element",
        "huge.xml": "104857600 bytes, over max_file_bytes",
    }
    assert set(why) == set(expected)
    for name, reason in expected.items():
        assert reason in why[name], (name, why[name])
        assert (folders.error / name).exists()
    refused = {e["file"]: e["problem"] for e in logs if e["event"] == "order_file_refused"}
    assert set(refused) == set(expected)


async def test_a_name_already_in_the_error_folder_gets_a_suffix(folders: Folders) -> None:
    source = build(folders.settings())
    (folders.inbox / "x.xml").write_bytes(b"junk")
    await snap(source)
    (folders.inbox / "x.xml").write_bytes(b"junk again")
    await snap(source)
    moved = names(folders.error)
    assert len(moved) == 4
    assert {"x.xml", "x.xml.why"} <= set(moved)


async def test_a_file_in_the_plant_encoding_without_a_declaration(folders: Folders) -> None:
    text = "Gehäuse montieren"
    body = CONSTRUCTED.split(b"\n", 1)[1].replace(b"Assemble housing", text.encode("cp1252"))
    (folders.inbox / "cp.xml").write_bytes(body)
    (op,) = (await snap(build(folders.settings(encoding="cp1252"))))[WC]
    assert op.material_text == text


# -- values left out ----------------------------------------------------------------------------


async def test_values_the_gateway_would_refuse_are_left_out_with_a_warning(
    folders: Folders,
) -> None:
    files = folders.files()
    order = Order(
        operations=(
            Operation("0010", quantity=Decimal(0)),
            Operation("0020", work_center="WC/4711"),
            Operation("00 30"),
            Operation("0040", text="x" * 201),
            Operation("0050", run=Decimal(1), run_unit="ST"),
            Operation("0060", setup=Decimal(31), setup_unit="D"),
            Operation("0070"),
        ),
    )
    files.loipro(order, Order(order_id="10#01"))
    with structlog.testing.capture_logs() as logs:
        ops = by_key((await snap(build(folders.settings())))[WC])
    assert set(ops) == {("1000123", "0040"), ("1000123", "0050"), ("1000123", "0070")}
    assert ops[("1000123", "0040")].material_text == ""
    assert ops[("1000123", "0050")].planned_run_s_per_unit == 0.0
    warned = {
        (e["order"], e["operation"], e["field"])
        for e in logs
        if e["event"] == "order_value_left_out"
    }
    assert warned >= {
        ("1000123", "0010", "quantity"),
        ("1000123", "0020", "work_center"),
        ("1000123", "00 30", "operation"),
        ("1000123", "0040", "material_text"),
        ("1000123", "0050", "VGW02"),
        ("1000123", "0060", "VGW01"),
        ("10#01", "", "order_id"),
    }
    assert names(folders.error) == []  # the file itself was read


# -- settings -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"format": "csv"}, "format"),
        ({"timezone": "Europe/Berlim"}, "timezone"),
        ({"colour": "red"}, "colour"),
        ({"max_file_bytes": 10}, "max_file_bytes"),
        ({"max_depth": 100_000}, "max_depth"),
        ({"settle_s": float("inf")}, "settle_s"),
        ({"held_statuses": ["x" * 41]}, "held_statuses"),
        ({"setup_slot": 7}, "setup_slot"),
        ({"encoding": "ebcdic"}, "encoding"),
    ],
)
def test_settings_name_the_field(folders: Folders, changes: dict[str, Any], field: str) -> None:
    with pytest.raises(pydantic.ValidationError) as info:
        folders.settings(**changes)
    assert field in str(info.value)


@pytest.mark.parametrize(
    ("changes", "text"),
    [
        (lambda f: {"archive_dir": f.inbox}, "archive_dir and inbox_dir must be different"),
        (lambda f: {"error_dir": f.archive}, "error_dir and archive_dir must be different"),
        (lambda f: {"state_file": f.inbox / "s.json"}, "state_file must not be in inbox_dir"),
        (lambda f: {"run_slot": 1}, "setup_slot and run_slot"),
    ],
)
def test_settings_that_do_not_fit_together(
    folders: Folders, changes: Callable[[Folders], dict[str, Any]], text: str
) -> None:
    with pytest.raises(pydantic.ValidationError, match=text):
        folders.settings(**changes(folders))


def test_settings_from_toml_like_values(folders: Folders) -> None:
    settings = Settings.model_validate(
        {
            "system": "file",
            "format": "b2mml",
            "inbox_dir": str(folders.inbox),
            "state_file": str(folders.state),
            "held_statuses": ["Held", "E0003"],
        }
    )
    assert settings.inbox_dir == folders.inbox
    assert settings.held_statuses == ("Held", "E0003")
    assert settings.archive_dir is None


# -- the demo -----------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["loipro", "b2mml"])
async def test_the_demo_files_read_back(folders: Folders, fmt: str) -> None:
    written = demo(folders.inbox, fmt=fmt, zone=BERLIN)
    assert written
    result = await snap(build(folders.settings(format=fmt)), WC, WC2)
    ops = by_key(result[WC])
    assert ops[("1000123", "0010")].quantity == Decimal(120)  # the change wins
    assert ops[("1000125", "0010")].status == "held"
    assert ops[("1000126", "0010")].status == "cancelled"
    assert ops[("1000124", "0010")].material == "FG-4711"
    assert [op.order_id for op in result[WC2]] == ["1000123"]
    assert len(names(folders.archive)) == len(written)


def test_the_command_line_writes_the_demo(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--inbox", str(tmp_path / "in"), "--format", "b2mml"]) == 0
    printed = capsys.readouterr().out.split()
    assert printed
    assert all(Path(p).exists() for p in printed)


# -- failures of our own folders ----------------------------------------------------------------


async def test_a_file_that_cannot_be_moved_stays_and_is_moved_once_it_can(
    folders: Folders,
) -> None:
    folders.files().loipro(Order(), name="order.xml")
    folders.archive.rmdir()  # the archive's mount is gone
    source = build(folders.settings())
    with structlog.testing.capture_logs() as logs:
        assert len((await snap(source))[WC]) == 1
        assert len((await snap(source))[WC]) == 1
    assert [e["event"] for e in logs].count("order_read") == 1  # not read twice
    assert any(e["event"] == "order_file_not_moved" for e in logs)
    assert names(folders.inbox) == ["order.xml"]
    folders.archive.mkdir()
    assert len((await snap(source))[WC]) == 1
    assert names(folders.archive) == ["order.xml"]
    assert names(folders.inbox) == []
    assert json.loads(folders.state.read_text())["remembered"] == {}


async def test_a_full_disk_for_the_state_fails_the_snapshot_and_moves_nothing(
    folders: Folders,
) -> None:
    with small_disk(folders.root / "disk", "256k") as disk:
        settings = folders.settings(state_file=disk / "orders.json")
        folders.files().loipro(Order(), name="order.xml")
        filler = fill(disk)
        source = build(settings)
        result = await source.snapshot([WC])
        assert isinstance(result, SnapshotFailed)
        assert "No space left" in result.text
        assert names(folders.inbox) == ["order.xml"]
        assert [p.name for p in disk.iterdir()] == ["filler"]  # no temporary file left
        filler.unlink()
        assert len((await snap(source))[WC]) == 1
        assert names(folders.archive) == ["order.xml"]
        restarted = build(settings)
        assert len((await snap(restarted))[WC]) == 1


async def test_at_most_max_files_per_snapshot_are_read_at_once(folders: Folders) -> None:
    files = folders.files()
    for n in range(5):
        files.loipro(Order(order_id=f"100{n}"))
    source = build(folders.settings(max_files_per_snapshot=2))
    counts = [len((await snap(source))[WC]) for _ in range(4)]
    assert counts == [2, 4, 5, 5]


async def test_a_namespaced_loipro05_with_an_inactive_status(folders: Folders) -> None:
    body = CONSTRUCTED.split(b"\n", 1)[1]
    body = body.replace(
        b"<LOIPRO01>", b'<LOIPRO05 xmlns="urn:sap-com:document:sap:idoc:soap:messages">'
    )
    body = body.replace(b"</LOIPRO01>", b"</LOIPRO05>")
    inactive_lock = b'<E1JSTKL SEGMENT="1"><STAT>I0043</STAT><INACT>X</INACT></E1JSTKL>'
    body = body.replace(b"<E1AFFLL", inactive_lock + b"<E1AFFLL", 1)
    doc = b'<?xml version="1.0" encoding="UTF-8"?>\n<Envelope><Body>' + body + b"</Body></Envelope>"
    (folders.inbox / "soap.xml").write_bytes(doc)
    (op,) = (await snap(build(folders.settings())))[WC]
    assert (op.order_id, op.status) == ("1000123", "released")  # the lock is no longer active


async def test_element_count_and_encodings_do_not_get_past_the_checks(folders: Folders) -> None:
    many = b"<LOIPRO01>" + b"<IDOC/>" * 200 + b"</LOIPRO01>"
    (folders.inbox / "many.xml").write_bytes(many)
    utf16 = '<?xml version="1.0" encoding="UTF-16"?>\n<!DOCTYPE a [<!ENTITY e "x">]><a>&e;</a>'
    (folders.inbox / "utf16.xml").write_bytes(utf16.encode("utf-16"))
    await snap(build(folders.settings(max_elements=100)))
    assert "more than 100 elements" in (folders.error / "many.xml.why").read_text()
    assert "DOCTYPE" in (folders.error / "utf16.xml.why").read_text()


async def test_a_b2mml_file_for_a_loipro_source_and_the_other_way_round(folders: Folders) -> None:
    files = folders.files()
    files.b2mml(Order(), name="sched.xml")
    files.loipro(Order(), name="idoc.xml")
    await snap(build(folders.settings()))
    assert (
        "no IDOC element below <ProcessOperationsSchedule>"
        in (folders.error / "sched.xml.why").read_text()
    )
    assert names(folders.archive) == ["idoc.xml"]
    other = Folders(folders.root / "b")
    OrderFiles(other.inbox).loipro(Order(), name="idoc.xml")
    await snap(build(other.settings(format="b2mml")))
    assert (
        "<LOIPRO01> is not a B2MML OperationsSchedule" in (other.error / "idoc.xml.why").read_text()
    )


async def test_after_a_failed_state_write_the_next_snapshot_writes_it(folders: Folders) -> None:
    with small_disk(folders.root / "disk2", "256k") as disk:
        settings = folders.settings(state_file=disk / "orders.json", archive_dir=None)
        folders.files().loipro(Order(), name="order.xml")
        filler = fill(disk)
        source = build(settings)
        assert isinstance(await source.snapshot([WC]), SnapshotFailed)
        assert isinstance(await source.snapshot([WC]), SnapshotFailed)  # still not safe
        filler.unlink()
        assert len((await snap(source))[WC]) == 1
        saved = json.loads((disk / "orders.json").read_text())
        assert set(saved["orders"]) == {"1000123"}
        assert set(saved["remembered"]) == {"order.xml"}


async def test_an_unforeseen_error_while_reading_refuses_only_that_file(
    folders: Folders, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = folders.files()
    files.loipro(Order(order_id="1000123"), name="a.xml")
    files.loipro(Order(order_id="1000124"), name="b.xml")
    real = orders_files.parse_xml

    def flaky(data: bytes, **kw: Any) -> Any:
        if b"1000124" in data:
            raise KeyError("surprise")
        return real(data, **kw)

    monkeypatch.setattr(orders_files, "parse_xml", flaky)
    result = await snap(build(folders.settings()))
    assert [op.order_id for op in result[WC]] == ["1000123"]
    assert "KeyError" in (folders.error / "b.xml.why").read_text()


async def test_loipro_components_from_e1resbl_per_unit_and_kept_across_a_restart(
    folders: Folders,
) -> None:
    from simulators.erp.order_files import Component

    files = folders.files()
    order = Order(
        order_id="1000200",
        quantity=Decimal(400),
        operations=(
            Operation(
                "0010",
                WC,
                "Stamp",
                components=(
                    Component("COIL-2MM", Decimal(100), "KG", item="0001", backflush=True),
                    Component("LABEL-7", Decimal(400), "PC", item="0002", batch="L1"),
                    Component("SCRAP-CU", Decimal(4), "KG", co_product=True),
                    Component("PALLET", Decimal(2), "PC", movement="101"),
                    Component("GREASE", Decimal(1), "G", item="0005", batch_managed=True),
                    Component("BAD", Decimal(-5), "KG"),
                ),
            ),
        ),
    )
    files.loipro(order)
    source = build(folders.settings())
    (op,) = (await snap(source, WC))[WC]
    got = [
        (c.material, c.qty_per_unit, c.unit, c.backflush, c.batch_managed, c.item)
        for c in op.components
    ]
    assert got == [
        ("COIL-2MM", Decimal("0.25"), "KG", True, False, "0001"),
        ("LABEL-7", Decimal(1), "PC", False, True, "0002"),  # a batch given: batch-managed
        ("GREASE", Decimal("0.0025"), "G", False, True, "0005"),
    ]  # no co-product, no goods receipt (101), the negative requirement left out
    again = build(folders.settings())  # from the state file
    (reread,) = (await snap(again, WC))[WC]
    assert reread.components == op.components
