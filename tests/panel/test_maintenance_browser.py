"""Machine hours and maintenance in the Debian chromium (Playwright), 800x480, against the real
daemon: the maintenance-due notice on the main screen and the count on the shift tab, the
machine card with its hours and intervals, maintenance called from the stop's reason sheet and
in words without a stop, and a supervisor saying the service was done, which clears the notice.
Screenshots go to test-artifacts/panel/."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from edge.domain.inputs import MachineState
from tests.panel.conftest import panel_config, running_panel, spec, wait_until
from tests.panel.test_api import post
from tests.panel.test_browser import expect, pytestmark, screen
from tests.panel.test_browser_floor import log_in, type_words
from tests.panel.test_maintenance import SERVICE

__all__ = ["pytestmark"]  # chromium missing: skipped, as the other browser tests

OP = "4711/0020"


async def test_the_due_notice_a_call_for_maintenance_and_the_service_done(
    tmp_path: Path,
) -> None:
    async with running_panel(panel_config(tmp_path, extra=SERVICE)) as panel:
        await panel.dispatch(spec("4711", "0020", 100, 10))
        async with httpx.AsyncClient(base_url=panel.url) as client:
            r = await post(client, "/api/commands/start-production", op=OP)
            assert r.status_code == 200, r.text
        await panel.pulses(12)
        async with screen(panel.url, "maintenance") as s:
            page = s.page
            notice = page.locator("#state-maint")
            shift_tab = page.locator('.tab[data-view="shift"]')
            # the main screen says it, and the shift tab counts the due intervals
            await expect(notice).to_be_visible()
            await expect(notice).to_have_text("MAINTENANCE DUE")
            await expect(shift_tab.locator(".badge")).to_have_text("1")
            await s.shot("01-due")

            # the machine card below the shift: figures and the intervals, the due one first
            await s.tap('.tab[data-view="shift"]')
            card = page.locator("[data-machine]")
            await expect(card.locator('[data-field="machine-cycles"] b')).to_have_text("12")
            await expect(card.locator('[data-field="machine-parts"] b')).to_have_text("12")
            await expect(card.locator('[data-field="machine-starts"] b')).to_have_text("1")
            await expect(card.locator('[data-field="machine-hours"] b')).to_have_text("0.0")
            rows = card.locator("[data-service]")
            await expect(rows).to_have_count(2)
            await expect(rows.nth(0)).to_have_attribute("data-service", "die-check")
            die = card.locator('[data-service="die-check"]')
            await expect(die).to_have_class("row warn")
            await expect(die.locator('[data-field="due"]')).to_have_text("Due")
            await expect(die.locator('[data-field="standing"]')).to_have_text(
                "every 10 cycles · 12 cycles since last done · overdue by 2 cycles"
            )
            oil = card.locator('[data-service="oil"]')
            await expect(oil).to_have_class("row")
            await expect(oil.locator('[data-field="standing"]')).to_contain_text("every 250.0 h")
            # not due and nobody logged in: no service-done button for it
            await expect(oil.locator('[data-cmd="service-done"]')).to_have_count(0)
            await die.scroll_into_view_if_needed()
            await s.shot("02-machine")

            # the machine stops: the reason sheet offers to call maintenance for this stop
            await panel.machine(MachineState.DOWN)
            sheet = page.locator('#sheet[data-kind="reason"]')
            await expect(sheet).to_be_visible()
            stop = panel.engine.wc.open_stop
            assert stop is not None
            await s.tap('#sheet [data-cmd="request-maintenance"]')
            await expect(sheet.locator('[data-field="maintenance-request"]')).to_have_text(
                "Maintenance called (M000001)"
            )
            await expect(sheet.locator('[data-cmd="request-maintenance"]')).to_have_count(0)
            await s.shot("03-reason-sheet")
            (row,) = await panel.rows(
                "SELECT actor, data FROM event WHERE type = 'maintenance_requested'"
            )
            assert row[0] == "operator:panel"
            assert json.loads(row[1])["stop_id"] == stop.stop_id
            await s.close_toast()
            await s.tap('#sheet [data-reason="M01"]')
            await expect(sheet).to_be_hidden()
            await panel.machine(MachineState.RUNNING)
            await wait_until(lambda: panel.engine.wc.open_stop is None, what="the stop's end")

            # the stop list shows the request; no second one is offered for it
            await s.tap('.tab[data-view="stops"]')
            listed = page.locator(f'[data-stop="{stop.stop_id}"]')
            await expect(listed.locator('[data-field="maintenance-request"]')).to_have_text(
                "Maintenance called (M000001)"
            )
            await expect(listed.locator('[data-cmd="request-maintenance"]')).to_have_count(0)
            await s.shot("04-stops")

            # without a stop: in words, and OK only once something is typed
            await s.close_toast()
            await s.tap('.tab[data-view="shift"]')
            await s.tap('[data-machine] [data-cmd="request-maintenance"]')
            ok = page.locator('#sheet [data-cmd="ok"]')
            await expect(ok).to_be_disabled()
            await type_words(s, "oil leak")
            await expect(page.locator('#sheet [data-field="words"]')).to_have_text("Oil leak")
            await s.shot("05-call-in-words")
            await s.tap('#sheet [data-cmd="ok"]')
            await expect(page.locator("#sheet")).to_be_hidden()
            notes = await panel.rows(
                "SELECT data FROM event WHERE type = 'maintenance_requested' ORDER BY id"
            )
            assert [json.loads(n[0])["note"] for n in notes] == [None, "Oil leak"]

            # the supervisor says the service was done: the PIN first, then a note
            await s.close_toast()
            await die.scroll_into_view_if_needed()
            await s.tap('[data-service="die-check"] [data-cmd="service-done"]')
            await s.keys("4711")
            await s.tap('#sheet [data-cmd="ok"]')
            await expect(page.locator('#sheet[data-kind="service"]')).to_be_visible()
            await expect(page.locator("#sheet .sub")).to_contain_text("12 cycles since last done")
            await type_words(s, "reground")
            await s.shot("06-service-done")
            await s.tap('#sheet [data-cmd="ok"]')
            await expect(page.locator("#sheet")).to_be_hidden()
            await expect(notice).to_be_hidden()
            await expect(shift_tab.locator(".badge")).to_have_count(0)
            await expect(die).to_have_class("row")
            await expect(die.locator('[data-field="standing"]')).to_contain_text(
                "0 cycles since last done · 10 cycles to go"
            )
            (done,) = await panel.rows(
                "SELECT actor, data FROM event WHERE type = 'maintenance_done'"
            )
            assert done[0] == "supervisor:2001"
            assert json.loads(done[1])["note"] == "Reground"
            assert not panel.engine.wc.andon.maintenance_due
            # in the session, an interval not due may be done early: its button shows
            await expect(oil.locator('[data-cmd="service-done"]')).to_have_count(1)
            await s.shot("07-done")

            # German: every new text has its words
            await s.tap("#btn-lang")
            await expect(card.locator(".section-title").first).to_contain_text("Maschine")
            # a soft hyphen: where a button is narrow the word breaks there
            await expect(card.locator('[data-cmd="request-maintenance"]')).to_have_text(
                "Instand\u00adhaltung rufen"
            )
            await s.shot("08-machine-de")
            await s.tap("#btn-lang")
            await s.tap("#btn-super")  # log out
            assert s.errors == []


async def test_the_pin_before_a_service_and_maintenance_called_from_the_open_stop(
    tmp_path: Path,
) -> None:
    async with running_panel(panel_config(tmp_path, extra=SERVICE)) as panel:
        await panel.dispatch(spec("4711", "0020", 100, 10))
        async with httpx.AsyncClient(base_url=panel.url) as client:
            r = await post(client, "/api/commands/start-production", op=OP)
            assert r.status_code == 200, r.text
        await panel.pulses(10)
        async with screen(panel.url, "maintenance-pin") as s:
            page = s.page
            await s.tap('.tab[data-view="shift"]')
            await s.tap('[data-service="die-check"] [data-cmd="service-done"]')
            await expect(page.locator('#sheet[data-kind="pin"]')).to_be_visible()
            await s.tap('#sheet [data-cmd="back"]')
            await expect(page.locator("#sheet")).to_be_hidden()
            await expect(page.locator("#state-maint")).to_be_visible()
            assert panel.engine.wc.andon.maintenance_due
            # logged in from the header, the early service of a not-due interval is offered
            await log_in(s)
            await expect(
                page.locator('[data-service="oil"] [data-cmd="service-done"]')
            ).to_have_count(1)

            # the open stop on the order screen: maintenance called from there, in German (the
            # operator's screen: with the supervisor's buttons too it would not fit)
            await s.tap("#btn-super")  # log out
            await s.tap("#btn-lang")
            await s.tap('.tab[data-view="order"]')
            await panel.machine(MachineState.DOWN)
            await expect(page.locator('#sheet[data-kind="reason"]')).to_be_visible()
            await s.tap('#sheet [data-cmd="later"]')
            call = page.locator('#view-order [data-cmd="request-maintenance"]')
            await expect(call).to_be_visible()
            await s.shot("01-open-stop-de")
            await call.click()
            await expect(call).to_have_count(0)
            stop = panel.engine.wc.open_stop
            assert stop is not None
            assert stop.maintenance_request == "M000001"
            await s.tap("#btn-lang")
            assert s.errors == []
