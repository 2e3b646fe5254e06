"""The shift tab and the full-disk warning in the Debian chromium (Playwright), 800x480, against
the real daemon: OEE and its factors as read from 2 m (a dash where undefined, never 0), good
against what is due, the stops that cost the most time; the state band says when the disk is
below the floor (the engine's real watermark check) and stops saying it when space returns."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import httpx

from edge.domain.inputs import MachineState
from edge.store.retention import MB, RetentionPolicy
from tests.panel.conftest import panel_config, running_panel, spec
from tests.panel.test_api import post
from tests.panel.test_browser import expect, pytestmark, screen

__all__ = ["pytestmark"]  # chromium missing: skipped, as the other browser tests

OP = "4711/0020"
DASH = "\N{EN DASH}"  # an undefined share


async def test_the_shift_tab_reads_from_two_metres_and_the_full_disk_is_told(
    tmp_path: Path,
) -> None:
    async with running_panel(panel_config(tmp_path)) as panel:
        await panel.dispatch(spec("4711", "0020", 30, 10, std_cycle_s=2.0))
        async with screen(panel.url, "shift") as s:
            page = s.page
            await s.tap('.tab[data-view="shift"]')
            # nothing made yet: the shares are undefined and shown as a dash
            await expect(page.locator('[data-field="oee"] b')).to_have_text(DASH)
            await expect(page.locator('[data-field="quality_ratio"] b')).to_have_text(DASH)
            await s.shot("01-empty")

            async with httpx.AsyncClient(base_url=panel.url) as client:
                r = await post(client, "/api/commands/start-production", op=OP)
                assert r.status_code == 200, r.text
            await panel.pulses(8)
            await panel.machine(MachineState.DOWN)
            await asyncio.sleep(0.05)
            await panel.machine(MachineState.RUNNING)
            await panel.pulses(1)
            await expect(page.locator('[data-field="parts"] b')).to_have_text("9")
            await expect(page.locator('[data-field="parts"] small')).to_contain_text("due by now")
            await expect(page.locator('[data-field="quality_ratio"] b')).to_have_text("100 %")
            oee = await page.locator('[data-field="oee"] b').inner_text()
            assert oee.endswith(" %"), oee
            assert 0 <= int(oee.removesuffix(" %")) <= 100
            await expect(page.locator('.row[data-reason="MICRO"]')).to_contain_text("micro-stops")
            await expect(page.locator('.row[data-reason="MICRO"]')).to_contain_text("1 stop")
            # 2 m: the OEE and the parts are the biggest text on the screen
            size = await page.locator('[data-field="oee"] b').evaluate(
                "el => parseFloat(getComputedStyle(el).fontSize)"
            )
            assert size >= 48
            await s.shot("02-running")

            # German, as the operator switches it
            await s.tap("#btn-lang")
            await expect(page.locator('.tab[data-view="shift"]')).to_have_text("Schicht")
            await expect(page.locator('[data-field="availability"] span')).to_have_text(
                "Verfügbarkeit"
            )
            await s.shot("03-german")
            await s.tap("#btn-lang")

            # the disk below the floor: the engine's check, then the band says it
            free_mb = shutil.disk_usage(tmp_path).free / MB
            low = RetentionPolicy(enabled=False, min_free_mb=free_mb + 1024)
            assert await panel.engine.watch_disk(low, force=True)
            await panel.machine(MachineState.DOWN)  # a commit: the snapshot goes out
            await expect(page.locator("#state")).to_have_class("state lamp-red disk-low")
            style = "el => getComputedStyle(el).outlineStyle"
            assert await page.locator("#state").evaluate(style) == "solid"
            await expect(page.locator("#state-detail")).to_contain_text("DISK FULL")
            await s.shot("04-disk-low")
            back = RetentionPolicy(enabled=False, min_free_mb=1)
            assert not await panel.engine.watch_disk(back, force=True)
            await panel.machine(MachineState.RUNNING)
            await expect(page.locator("#state-detail")).not_to_contain_text("DISK FULL")
