"""The floor's controls in the Debian chromium against the real daemon: what an operator and a
supervisor see and tap (hold with a reason, rework, setup parts good, unassigned production),
and what must be readable from 2 m (measured: bounding boxes and computed styles)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from edge.domain.model import OperationKey, OperationStatus
from tests.panel.conftest import PIN, panel_config, running_panel, spec, wait_until
from tests.panel.test_browser import CHROMIUM, Screen, expect, screen

OP = "4711/0020"
KEY = OperationKey("4711", "0020")

pytestmark = pytest.mark.skipif(
    not os.access(CHROMIUM, os.X_OK),
    reason=f"{CHROMIUM} is missing: install the Debian package chromium (./scripts/test as root)",
)


async def log_in(s: Screen) -> None:
    await s.tap("#btn-super")
    await s.keys(PIN)
    await s.tap('#sheet [data-cmd="ok"]')
    await s.toast("ok", "logged in")
    await s.close_toast()


async def type_words(s: Screen, text: str) -> None:
    for ch in text:
        key = "space" if ch == " " else ch.lower()
        await s.tap(f'#sheet [data-key="{key}"]')


async def test_a_supervisor_holds_with_a_reason_the_operator_reads(tmp_path: Path) -> None:
    async with running_panel(panel_config(tmp_path)) as panel:
        await panel.dispatch(
            spec("4711", "0020", 30, 10, material_text="Bracket 30x15"),
            spec("4712", "0010", 50, 20),
        )
        async with screen(panel.url, "hold") as s:
            page = s.page
            await s.tap('[data-cmd="start-production"]')
            await s.lamp("green")
            await s.close_toast()
            await expect(page.locator('[data-cmd="hold"]')).to_have_count(0)  # supervisor only
            await log_in(s)
            await s.tap('[data-cmd="hold"]')
            await expect(page.locator('#sheet[data-kind="hold"]')).to_be_visible()
            await expect(page.locator('#sheet [data-cmd="ok"]')).to_be_disabled()
            await s.tap('#sheet [data-pick="hold.quality"]')
            await type_words(s, "coil batch 88")
            await expect(page.locator('#sheet [data-field="words"]')).to_have_text(
                "Quality hold: coil batch 88"
            )
            await s.shot("01-hold-reason-typed")
            await s.tap('#sheet [data-cmd="ok"]')
            await expect(page.locator("#sheet")).to_be_hidden()
            op = panel.engine.wc.operations[KEY]
            assert (op.status, op.status_reason) == (
                OperationStatus.HELD,
                "Quality hold: coil batch 88",
            )
            held = page.locator(f'.held[data-held="{OP}"]')
            await expect(held).to_contain_text("On hold · 4711/0020 · Bracket 30x15")
            await expect(held.locator(".held-reason")).to_have_text("Quality hold: coil batch 88")
            await s.close_toast()
            await s.shot("02-held-shown")
            await s.tap("#btn-lang")
            await expect(held).to_contain_text("Gesperrt")
            await s.shot("03-held-shown-de")
            await s.tap('.tab[data-view="orders"]')
            row = page.locator(f'.row[data-op="{OP}"]')
            await expect(row.locator('[data-field="status-reason"]')).to_have_text(
                "Gesperrt: Quality hold: coil batch 88"
            )
            await s.shot("04-orders-held-de")
            await s.tap("#btn-lang")
            await s.tap(f'.row[data-op="{OP}"] [data-cmd="release"]')
            await expect(page.locator("#sheet")).to_contain_text("Quality hold: coil batch 88")
            await s.tap('#sheet [data-cmd="ok"]')
            await wait_until(lambda: op.status is OperationStatus.RUNNING, what="release")
            await s.lamp("green")
            await expect(row.locator('[data-field="status-reason"]')).to_have_count(0)


async def test_rework_and_setup_parts_good_with_taps(tmp_path: Path) -> None:
    async with running_panel(panel_config(tmp_path)) as panel:
        await panel.dispatch(spec("4711", "0020", 30, 10))
        async with screen(panel.url, "rework") as s:
            page = s.page
            await s.tap('[data-cmd="start-setup"]')
            await s.lamp("yellow")
            await panel.pulses(3)  # first-off parts: setup scrap
            # 15 s: once, in a full run on a busy machine, the page showed none after 5 s
            setup_scrap = page.locator('[data-field="setup-scrap"]')
            await expect(setup_scrap).to_have_text("3", timeout=15_000)
            await s.close_toast()
            await s.tap('[data-cmd="scrap"]')
            await s.tap('#sheet [data-mode="setup_good"]')
            await expect(page.locator('#sheet [data-field="setup-pending"]')).to_contain_text(
                "3 PC were booked as setup scrap"
            )
            await s.keys("4")  # more than there is: OK stays off
            await expect(page.locator('#sheet [data-cmd="ok"]')).to_be_disabled()
            await s.tap('#sheet [data-key="⌫"]')
            await s.keys("2")
            await expect(page.locator('#sheet [data-cmd="ok"]')).to_have_text("2 PC are good")
            await s.shot("01-setup-parts-good")
            await s.tap('#sheet [data-cmd="ok"]')
            await expect(page.locator('[data-field="good"]')).to_have_text("2")
            await expect(page.locator('[data-field="setup-scrap"]')).to_have_text("1")

            await s.tap('[data-cmd="start-production"]')
            await s.lamp("green")
            await panel.pulses(5)
            await expect(page.locator('[data-field="good"]')).to_have_text("7")
            await s.tap('[data-cmd="scrap"]')
            await s.tap('#sheet [data-mode="rework"]')
            await s.tap('#sheet [data-reason="S03"]')
            await s.keys("2")
            ok = page.locator('#sheet [data-cmd="ok"]')
            await expect(ok).to_have_text("Rework 2 \u00d7 Burr")
            await s.shot("03-rework")
            await s.tap('#sheet [data-cmd="ok"]')
            await expect(page.locator('[data-field="rework"]')).to_have_text("2")
            op = panel.engine.wc.operations[KEY]
            assert op.counted.rework == {"S03": 2}
            await s.close_toast()
            await s.shot("04-rework-shown")
            await s.tap("#btn-lang")  # German words are longer: they must fit as well
            await s.tap('[data-cmd="scrap"]')
            await s.tap('#sheet [data-mode="setup_good"]')
            await expect(page.locator('#sheet [data-mode="setup_good"]')).to_have_text(
                "Rüstteile gut"
            )
            await s.shot("05-setup-parts-good-de")
            await s.tap('#sheet [data-mode="rework"]')
            await s.shot("06-rework-de")


async def test_a_supervisor_assigns_unassigned_production_seeing_the_parts(
    tmp_path: Path,
) -> None:
    from decimal import Decimal

    async with running_panel(panel_config(tmp_path)) as panel:
        await panel.dispatch(
            spec("4711", "0020", 30, 10, parts_per_signal=Decimal(4)),
            spec("4712", "0010", 50, 20),
        )
        await panel.pulses(3)
        async with screen(panel.url, "unassigned") as s:
            page = s.page
            await s.tap('.tab[data-view="orders"]')
            row = page.locator(".row[data-unassigned]")
            await expect(row).to_contain_text("3 good · 0 scrap signals")
            await expect(row.locator('[data-cmd="assign"]')).to_have_count(0)  # supervisor only
            await log_in(s)
            await s.tap('.tab[data-view="orders"]')
            await s.shot("01-listed")
            await s.tap('.row[data-unassigned] [data-cmd="assign"]')
            choice = page.locator(f'#sheet [data-op="{OP}"]')
            await expect(choice).to_contain_text("becomes 12 good · 0 scrap PC (4 per signal)")
            await expect(page.locator('#sheet [data-op="4712/0010"]')).to_contain_text(
                "becomes 3 good"
            )
            await s.shot("02-assign-choices")
            await s.tap(f'#sheet [data-op="{OP}"]')
            await expect(page.locator("#sheet")).to_be_hidden()
            await expect(page.locator(".row[data-unassigned]")).to_have_count(0)
            assert panel.engine.wc.operations[KEY].counted.good == 12


BOX = "(sel) => { const r = document.querySelector(sel).getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; }"  # noqa: E501
STYLE = "([sel, prop]) => getComputedStyle(document.querySelector(sel)).getPropertyValue(prop)"
LONG_TEXT = "Bracket 30x15, galvanised, with two M8 weld nuts"


async def box(s: Screen, selector: str) -> tuple[float, float, float, float]:
    left, top, right, bottom = await s.page.evaluate(BOX, selector)
    return left, top, right, bottom


async def style(s: Screen, selector: str, prop: str) -> str:
    value: str = await s.page.evaluate(STYLE, [selector, prop])
    return value


def px(value: str) -> float:
    return float(value.removesuffix("px"))


async def test_what_must_be_read_from_two_metres(tmp_path: Path) -> None:
    """Before: the stop-reason sheet covered the red state band with a 4 px yellow line on
    top, the Done toast lay over the state band, the header buttons were 48 px high and a
    material text was cut to one line."""
    from edge.domain.inputs import MachineState

    async with running_panel(panel_config(tmp_path)) as panel:
        await panel.dispatch(spec("4711", "0020", 30, 10, material_text=LONG_TEXT))
        async with screen(panel.url, "urgent") as s:
            page = s.page
            for button in ("#btn-lang", "#btn-super"):
                left, top, right, bottom = await box(s, button)
                assert right - left >= 56, button
                assert bottom - top >= 56, button

            await s.tap('[data-cmd="start-production"]')
            await expect(page.locator("#toast.ok")).to_be_visible()
            toast, band = await box(s, "#toast"), await box(s, "#state")
            assert toast[1] >= band[3], f"the Done toast {toast} covers the state band {band}"

            title = page.locator(".op-title")
            await expect(title).to_have_text(LONG_TEXT)
            # Measured once laid out: the panel redraws the view on every commit it is told of,
            # and on a busy machine a measurement can fall between two drawings (all zeros).
            sizes = [0.0, 0.0, float("nan")]
            for _ in range(50):
                sizes = await title.evaluate(
                    "(el) => [el.scrollHeight, el.clientHeight,"
                    " parseFloat(getComputedStyle(el).lineHeight)]"
                )
                if sizes[1] > 0 and sizes[2] == sizes[2]:  # laid out, a line height in px
                    break
                await asyncio.sleep(0.1)
            scroll_h, client_h, line_h = sizes
            assert scroll_h <= client_h + 1, f"material text cut off: {sizes}"
            assert client_h > 1.5 * line_h, "the material text takes its second line"
            await s.close_toast()
            await s.shot("01-long-material-text")

            await panel.machine(MachineState.DOWN)
            sheet = page.locator('#sheet[data-kind="reason"]')
            await expect(sheet).to_be_visible()
            await s.lamp("red_blink")
            band, drawn = await box(s, "#state"), await box(s, "#sheet")
            assert drawn[1] >= band[3] - 0.5, f"the reason sheet {drawn} covers the band {band}"
            assert await page.locator("#state").is_visible()
            for side in ("top", "right", "bottom", "left"):
                assert px(await style(s, "#sheet", f"border-{side}-width")) >= 6, side
                assert await style(s, "#sheet", f"border-{side}-color") == "rgb(200, 0, 0)"
            head = '#sheet[data-kind="reason"] h2'
            assert await style(s, head, "background-color") == "rgb(200, 0, 0)"
            assert px(await style(s, head, "font-size")) >= 28
            await s.shot("02-reason-sheet-urgent")
            await s.tap('#sheet [data-cmd="later"]')
            await s.tap("#btn-lang")
            await s.tap("#state")  # the band asks again
            await expect(sheet).to_contain_text("Warum")
            await s.shot("03-reason-sheet-urgent-de")
            await s.tap('#sheet [data-reason="M01"]')
            await s.lamp("red")


async def test_the_erp_tab_shows_a_confirmations_history(tmp_path: Path) -> None:
    import httpx

    from tests.panel.test_floor_controls import rejected_then_posted

    async with running_panel(panel_config(tmp_path)) as panel:
        async with httpx.AsyncClient(base_url=panel.url) as client:
            await rejected_then_posted(panel, client)
        async with screen(panel.url, "history") as s:
            page = s.page
            await s.tap('.tab[data-view="confirmations"]')
            await s.tap(f'.row[data-conf="{OP}#1"] [data-cmd="history"]')
            sheet = page.locator('#sheet[data-kind="history"]')
            await expect(sheet.locator("[data-history]")).to_have_count(4)
            lines = sheet.locator("[data-history] .l3")
            await expect(lines.nth(0)).to_contain_text("Created (partial)")
            await expect(lines.nth(1)).to_have_text("ERP: rejected: Order 4711 is not released")
            await expect(sheet.locator('[data-history="result"].bad')).to_have_count(1)
            await expect(lines.nth(2)).to_contain_text("Sent again by supervisor:2001")
            await expect(lines.nth(3)).to_have_text("ERP: posted · ERP 7701")
            await s.shot("01-rejected-resent-posted")
            await s.tap('#sheet [data-cmd="back"]')
            await s.tap("#btn-lang")
            await s.tap(f'.row[data-conf="{OP}#1"] [data-cmd="history"]')
            await expect(lines.nth(1)).to_have_text("ERP: abgelehnt: Order 4711 is not released")
            await s.shot("02-history-de")


async def test_a_change_by_central_shows_until_the_operator_has_seen_it(tmp_path: Path) -> None:
    async with running_panel(panel_config(tmp_path)) as panel:
        await panel.dispatch(spec("4711", "0020", 30, 10, std_cycle_s=10.0))
        async with screen(panel.url, "notice") as s:
            page = s.page
            await s.tap('[data-cmd="start-production"]')
            await s.lamp("green")
            await s.close_toast()
            await expect(page.locator(".notice")).to_have_count(0)
            await panel.dispatch(spec("4711", "0020", 40, 10, std_cycle_s=8.0), version=2)
            notice = page.locator(".notice")
            await expect(notice).to_contain_text("Central changed this order")
            await expect(notice.locator('[data-change="target_qty"]')).to_have_text(
                "Quantity: 30 → 40"
            )
            await expect(notice.locator('[data-change="std_cycle_s"]')).to_have_text(
                "Standard cycle: 10 s → 8 s"
            )
            left, _, right, _ = await box(s, ".notice")
            assert right - left > 700, "the notice spans the order view"
            await s.shot("01-changed-by-central")
            await s.tap("#btn-lang")
            await expect(notice.locator('[data-change="target_qty"]')).to_have_text(
                "Menge: 30 → 40"
            )
            await s.shot("02-changed-by-central-de")
            await s.tap("#btn-lang")
            await s.tap('.notice [data-cmd="seen"]')
            await expect(notice).to_have_count(0)
            await page.reload()  # seen on this panel stays seen
            await expect(page.locator("#conn")).to_have_attribute("data-state", "online")
            await expect(page.locator('[data-field="good"]')).to_be_visible()
            await expect(notice).to_have_count(0)
            await panel.dispatch(spec("4711", "0020", 45, 10, std_cycle_s=8.0), version=3)
            await expect(notice.locator('[data-change="target_qty"]')).to_have_text(
                "Quantity: 40 → 45"
            )
