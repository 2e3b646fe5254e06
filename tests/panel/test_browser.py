"""The real panel in the Debian chromium (Playwright) against the real daemon on a free port.

Screenshots at 800x480 go to test-artifacts/panel/ (git-ignored); every screen taken is also
checked for layout basics: nothing runs off the screen or out of its box, and every touch
target is at least 48 x 48 px.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Page, Route, async_playwright
from playwright.async_api import expect as pw_expect

from edge.domain.inputs import MachineState
from edge.domain.model import OperationKey
from simulators.broker import Mosquitto
from simulators.central import DEMO_MASTERDATA, CentralSimulator
from tests.gateway.conftest import ROOT as MQTT_ROOT
from tests.panel.conftest import (
    PIN,
    Panel,
    panel_config,
    running_panel,
    spec,
    wait_until,
)

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "panel"
OP = "4711/0020"
KEY = OperationKey("4711", "0020")

pytestmark = pytest.mark.skipif(
    not os.access(CHROMIUM, os.X_OK),
    reason=f"{CHROMIUM} is missing: install the Debian package chromium (./scripts/test as root)",
)


def expect(target: Any) -> Any:
    return pw_expect(target)


LAYOUT_PROBLEMS = """
() => {
  const problems = [];
  const vw = window.innerWidth, vh = window.innerHeight;
  const root = document.documentElement;
  if (root.scrollWidth > vw || root.scrollHeight > vh) {
    problems.push(`the page scrolls: ${root.scrollWidth}x${root.scrollHeight}`);
  }
  const shown = (el) => {
    const r = el.getBoundingClientRect();
    return r.width > 0 && r.height > 0 && !el.closest('[hidden]')
      && getComputedStyle(el).visibility !== 'hidden';
  };
  const name = (el) => (el.textContent || el.getAttribute('aria-label') || el.id || el.className)
    .trim().slice(0, 40);
  // Inside these containers content may lie below the fold: they scroll vertically.
  const scroller = (el) => el.closest('[data-scroll], .grow, .help-open');
  for (const el of document.querySelectorAll('#app *')) {
    if (!shown(el)) continue;
    const r = el.getBoundingClientRect();
    const style = getComputedStyle(el);
    if (r.right > vw + 0.5 || r.left < -0.5) {
      problems.push(`off the screen sideways: "${name(el)}"`);
    }
    if (!scroller(el) && (r.bottom > vh + 0.5 || r.top < -0.5)) {
      problems.push(`off the screen: "${name(el)}" (${r.top}..${r.bottom})`);
    }
    const clips = style.overflowX !== 'visible' && style.textOverflow !== 'ellipsis';
    if (clips && !el.matches('.view, .sheet, .grow, .help-open, #views, #app')
        && (el.scrollWidth > el.clientWidth + 1 || el.scrollHeight > el.clientHeight + 1)) {
      const inner = `${el.scrollWidth}x${el.scrollHeight}`;
      const box = `${el.clientWidth}x${el.clientHeight}`;
      problems.push(`content cut off: "${name(el)}" ${inner} in ${box}`);
    }
    if (el.matches('button') && (r.width < 47.5 || r.height < 47.5)) {
      problems.push(`touch target too small: "${name(el)}" ${r.width}x${r.height}`);
    }
  }
  return problems;
}
"""


class Screen:
    """One chromium page at 800x480 with screenshots and layout checks."""

    def __init__(self, page: Page, prefix: str) -> None:
        self.page = page
        self.prefix = prefix
        self.errors: list[str] = []
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))

    async def shot(self, name: str) -> None:
        await asyncio.sleep(0.15)  # let a render after the last answer settle
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        await self.page.screenshot(path=ARTIFACTS / f"{self.prefix}-{name}.png")
        problems = await self.page.evaluate(LAYOUT_PROBLEMS)
        assert problems == [], f"{name}: {problems}"

    async def tap(self, selector: str) -> None:
        await self.page.locator(selector).click()

    async def keys(self, digits: str) -> None:
        for d in digits:
            await self.tap(f'#sheet [data-key="{d}"]')

    async def toast(self, kind: str, text: str) -> None:
        await expect(self.page.locator(f"#toast.{kind}")).to_contain_text(text)

    async def close_toast(self) -> None:
        if await self.page.locator("#toast").is_visible():
            await self.tap("#toast-close")

    async def lamp(self, lamp: str) -> None:
        await expect(self.page.locator("#state")).to_have_attribute("data-lamp", lamp)


@contextlib.asynccontextmanager
async def screen(url: str, prefix: str) -> AsyncIterator[Screen]:
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=CHROMIUM,
            # As root chromium refuses its sandbox; the test machine runs as root.
            args=["--no-sandbox"] if os.geteuid() == 0 else [],
        )
        try:
            context = await browser.new_context(
                viewport={"width": 800, "height": 480}, locale="en-GB", has_touch=True
            )
            context.set_default_timeout(10_000)
            page = await context.new_page()
            s = Screen(page, prefix)
            await page.goto(url)
            await expect(page.locator("#conn")).to_have_attribute("data-state", "online")
            yield s
            assert s.errors == [], s.errors
        finally:
            await browser.close()


async def wait_subscribed(panel: Panel) -> None:
    """Master data is retained: once it arrived, the gateway's subscriptions are in place."""
    await wait_until(
        lambda: panel.engine.wc.master_data.version == 1, timeout=10, what="master data"
    )


async def test_operator_walks_an_order_with_taps_only(tmp_path: Path, broker: Mosquitto) -> None:
    t0 = time.monotonic()
    cfg = panel_config(tmp_path, broker=broker)
    async with (
        CentralSimulator(broker.host, broker.port, roots=[MQTT_ROOT]) as central,
        running_panel(cfg) as panel,
    ):
        await central.dispatcher.send_masterdata(MQTT_ROOT, DEMO_MASTERDATA)
        await wait_subscribed(panel)
        await central.dispatcher.send_dispatch(
            MQTT_ROOT,
            1,
            [
                {"order_id": "4711", "operation": "0020", "material": "FG-4711",
                 "material_text": "Bracket 30x15, galvanised", "quantity": 20, "sequence": 10,
                 "latest_end": "2030-03-03T14:00:00Z"},
                {"order_id": "4712", "operation": "0010", "material": "FG-4712",
                 "material_text": "Hinge plate 60x40", "quantity": 50, "sequence": 20},
            ],
        )  # fmt: skip
        await wait_until(lambda: KEY in panel.engine.wc.operations, what="dispatch")
        async with screen(panel.url, "walk") as s:
            page = s.page
            await s.shot("01-no-order")
            await s.tap('.tab[data-view="orders"]')
            await expect(page.locator(f'.row[data-op="{OP}"]')).to_contain_text("20 PC")
            await s.shot("02-dispatch-list")

            await s.tap(f'.row[data-op="{OP}"] [data-cmd="start-setup"]')
            await s.lamp("yellow")
            await expect(page.locator("#state-label")).to_have_text("SETUP")
            await s.tap('.tab[data-view="order"]')
            await s.shot("03-setup")
            await s.tap('[data-cmd="start-production"]')
            await s.lamp("green")

            await panel.pulses(6)  # the press counts: nobody types what the machine knows
            await expect(page.locator('[data-field="good"]')).to_have_text("6")
            await s.close_toast()
            await s.shot("04-running")

            await panel.machine(MachineState.DOWN)
            await expect(page.locator('#sheet[data-kind="reason"]')).to_be_visible()
            await s.lamp("red_blink")
            await s.shot("05-stop-asks-for-reason")
            await s.tap('#sheet [data-reason="MA-COIL"]')
            await s.lamp("red")
            await expect(page.locator("#state-detail")).to_contain_text("Waiting for coil")
            await panel.machine(MachineState.RUNNING)
            await s.lamp("green")

            await s.tap('[data-cmd="scrap"]')
            await s.tap('#sheet [data-reason="S01"]')
            await s.keys("2")
            await expect(page.locator('#sheet [data-cmd="ok"]')).to_have_text(
                "Report 2 \u00d7 Burr"
            )
            await s.shot("06-scrap-reason-and-pad")
            await s.tap('#sheet [data-cmd="ok"]')
            await expect(page.locator('[data-field="scrap"]')).to_have_text("2")
            await expect(page.locator('[data-field="good"]')).to_have_text("4")

            await s.tap('[data-cmd="confirm"]')
            await expect(page.locator("#sheet")).to_contain_text("4 PC good and 2 PC scrap")
            await s.shot("07-partial-confirmation")
            await s.tap('#sheet [data-cmd="ok"]')
            await expect(page.locator("#sheet")).to_be_hidden()

            await panel.pulses(16)
            await expect(page.locator('[data-field="good"]')).to_have_text("20")
            await expect(page.locator(".flag.ok")).to_have_text("Target reached")
            await s.close_toast()
            await s.shot("08-target-reached")
            await s.tap('[data-cmd="complete"]')
            await s.tap('#sheet [data-cmd="ok"]')
            await s.lamp("yellow")
            await expect(page.locator("#state-label")).to_have_text("NO ORDER")

            await s.tap('.tab[data-view="confirmations"]')
            rows = page.locator(".row[data-conf]")
            await expect(rows).to_have_count(3)
            for row in await rows.all():
                await expect(row.locator("[data-verdict]")).to_have_attribute(
                    "data-verdict", "posted", timeout=15_000
                )
            await expect(page.locator(f'.row[data-conf="{OP}#1"]')).to_contain_text(
                "4 good · 2 scrap PC"
            )
            await s.close_toast()
            await s.shot("09-erp-verdicts-posted")
            await s.tap('.tab[data-view="stops"]')
            await expect(page.locator(".row[data-stop]").first).to_contain_text("Waiting for coil")
            await s.shot("10-stops")
            await s.tap("#btn-lang")
            await expect(page.locator('.tab[data-view="stops"]')).to_have_text("Stillstände")
            await s.tap('.tab[data-view="confirmations"]')
            await expect(page.locator('[data-verdict="posted"]').first).to_have_text("gebucht")
            await s.shot("11-erp-verdicts-de")

        totals = central.ledger.totals("4711", "0020")
        assert totals["yield"] == 20
        assert panel.engine.wc.operations[KEY].counted.good == 20
    assert time.monotonic() - t0 < 60


async def route_lose_answer_once(route: Route) -> None:
    """The command reaches the gateway and is carried out, but the answer never arrives."""
    await route.fetch()
    await route.abort("connectionreset")


async def test_bad_input_gets_a_clear_message_and_stores_nothing_wrong(tmp_path: Path) -> None:
    cfg = panel_config(tmp_path)
    async with running_panel(cfg) as panel:
        await panel.dispatch(
            spec("4711", "0020", 30, 10),
            spec("4712", "0010", 50, 20, under_tolerance_pct=Decimal(2)),
        )
        async with screen(panel.url, "bad") as s:
            page = s.page

            # a double tap on "Start production" acts once
            await page.locator('[data-cmd="start-production"]').dblclick()
            await s.lamp("green")
            starts = await panel.rows(
                "SELECT COUNT(*) FROM event WHERE type = 'operation_state_changed'"
            )
            assert starts == [(1,)]
            await expect(page.locator("#toast.error")).to_have_count(0)
            await panel.pulses(5)

            # the answer is lost; the operator taps again: the same command id, done once
            await page.route("**/api/commands/scrap", route_lose_answer_once, times=1)
            await s.tap('[data-cmd="scrap"]')
            await s.tap('#sheet [data-reason="S03"]')
            await s.keys("1")
            await s.tap('#sheet [data-cmd="ok"]')
            await s.toast("error", "No answer from the gateway")
            await s.shot("01-answer-lost")
            await s.tap('#sheet [data-cmd="ok"]')
            await s.toast("info", "Already done")
            assert panel.engine.wc.operations[KEY].counted.scrap == {"S03": 1}

            # an absurd quantity: the core's message, nothing stored
            await s.tap('[data-cmd="scrap"]')
            await s.tap('#sheet [data-reason="S03"]')
            await s.keys("9999999")  # the pad takes six digits
            await expect(page.locator('#sheet [data-field="pad"]')).to_have_text("999999")
            await s.tap('#sheet [data-cmd="ok"]')
            await s.toast("error", "Quantity too large")
            await s.toast("error", "qty = 999999: more than the 4 PC good parts")
            await s.shot("02-absurd-scrap")
            await s.tap('#sheet [data-cmd="back"]')
            assert panel.engine.wc.operations[KEY].counted.scrap == {"S03": 1}

            # a wrong PIN
            await expect(page.locator("#toast")).to_be_hidden()  # went with the dialog
            await s.tap("#btn-super")
            await s.keys("0000")
            await s.tap('#sheet [data-cmd="ok"]')
            await s.toast("error", "Wrong PIN")
            await s.toast("error", "2 more tries")
            await s.shot("03-wrong-pin")
            await s.keys(PIN)
            await s.tap('#sheet [data-cmd="ok"]')
            await s.toast("ok", "Supervisor 2001 logged in")
            await expect(page.locator('[data-cmd="cancel"]')).to_be_visible()
            await s.close_toast()
            await s.shot("04-supervisor")
            await s.tap("#btn-lang")  # German words are longer: they must fit as well
            await s.shot("05-supervisor-de")
            await s.tap('[data-cmd="correct"]')
            await s.shot("06-correct-counts-de")
            await s.tap('#sheet [data-cmd="back"]')
            await s.tap("#btn-lang")
            await s.tap("#btn-super")  # log out
            await expect(page.locator('[data-cmd="cancel"]')).to_have_count(0)

            # the order is cancelled elsewhere while the operator's dialog is open
            await s.tap('[data-cmd="complete"]')
            async with httpx.AsyncClient(base_url=panel.url) as client:
                token = (await client.post("/api/supervisor/login", json={"pin": PIN})).json()
                r = await client.post(
                    "/api/supervisor/cancel",
                    json={"command_id": "cancel-elsewhere-1", "op": OP},
                    headers={"X-Supervisor-Token": token["token"]},
                )
                assert r.status_code == 200, r.text
            await s.tap('#sheet [data-cmd="ok"]')
            await s.toast("error", "operation 4711/0020 is cancelled; cannot complete")
            await s.shot("07-cancelled-meanwhile")
            await s.tap('#sheet [data-cmd="back"]')
            await s.close_toast()
            await expect(page.locator("#state-label")).to_have_text("NO ORDER")

            # the daemon restarts under a page that stays open
            await panel.gw.close()
            await expect(page.locator("#conn")).to_have_attribute("data-state", "offline")
            await s.tap('.tab[data-view="help"]')
            await s.tap('[data-cmd="call-help"][data-category="maintenance"]')
            await s.toast("error", "No answer from the gateway")
            await s.shot("08-daemon-down")
            async with running_panel(cfg) as again:
                await s.toast("info", "The gateway was restarted")
                await expect(page.locator("#conn")).to_have_attribute("data-state", "online")
                await s.tap('[data-cmd="call-help"][data-category="maintenance"]')
                await s.lamp("blue")
                await s.shot("09-after-restart")
                assert len(again.engine.wc.help_calls) == 1
                assert again.engine.wc.operations[KEY].status.value == "cancelled"

                # completing far below the order quantity asks why, with buttons
                await s.tap('.tab[data-view="order"]')
                await s.tap('[data-cmd="start-production"]')
                await s.tap('[data-cmd="complete"]')
                await s.tap('#sheet [data-cmd="ok"]')
                await expect(page.locator('#sheet[data-kind="variance"]')).to_be_visible()
                await s.shot("10-variance-reason")
                await s.tap('#sheet [data-reason="MATERIAL"]')
                await expect(page.locator("#state-label")).to_have_text("HELP CALLED")
                final = again.engine.wc.confirmations["4712/0010#1"]
                assert (final.final, final.variance_reason) == (True, "MATERIAL")
