"""The components card in the Debian chromium (Playwright), 800x480, against the real daemon:
a batch typed into the field and one tapped on the on-screen keys, both shown with when and by
whom; consumption recorded on the number pad; a bad batch gets the core's red notice naming
the field and the value, and nothing is stored. Screenshots go to test-artifacts/panel/."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import httpx

from edge.domain.model import ComponentSpec, OperationKey
from tests.panel.conftest import panel_config, running_panel, spec
from tests.panel.test_api import post
from tests.panel.test_browser import expect, pytestmark, screen

__all__ = ["pytestmark"]  # chromium missing: skipped, as the other browser tests

OP = "4711/0020"
KEY = OperationKey("4711", "0020")
COMPONENTS = (
    ComponentSpec(
        "STEEL-1",
        Decimal("0.25"),
        unit="KG",
        backflush=True,
        batch_managed=True,
        material_text="Steel sheet 2 mm",
    ),
    ComponentSpec("GLUE-7", Decimal(2), unit="G", batch_managed=True, material_text="Glue"),
    ComponentSpec("SCREW-M4", Decimal(4), material_text="Screw M4"),
)


async def test_the_operator_loads_batches_and_records_use_by_typing_and_tapping(
    tmp_path: Path,
) -> None:
    async with running_panel(panel_config(tmp_path)) as panel:
        await panel.dispatch(spec("4711", "0020", 30, 10, components=COMPONENTS))
        async with httpx.AsyncClient(base_url=panel.url) as client:
            r = await post(client, "/api/commands/start-production", op=OP)
            assert r.status_code == 200, r.text
        async with screen(panel.url, "components") as s:
            page = s.page
            steel = page.locator('[data-component="STEEL-1"]')
            glue = page.locator('[data-component="GLUE-7"]')
            screw = page.locator('[data-component="SCREW-M4"]')
            await expect(page.locator('[data-field="components-below"]')).to_have_text(
                "3 components below"
            )
            await expect(steel).to_contain_text("0.25 KG per PC · backflushed · batch-managed")
            await expect(steel.locator('[data-field="batch"]')).to_have_text("No batch loaded")
            await expect(steel).to_have_class("row warn")  # framed: a batch is missing
            # backflushed: no button to record its use; not batch-managed: no batch to load
            await expect(steel.locator('[data-cmd="consume"]')).to_have_count(0)
            await expect(screw.locator('[data-cmd="load-batch"]')).to_have_count(0)
            await s.shot("01-order")
            await steel.scroll_into_view_if_needed()
            await s.shot("02-card")

            # a batch typed into the field (a keyboard, or a scanner that types), Enter
            await s.tap('[data-cmd="load-batch"][data-material="STEEL-1"]')
            field = page.locator('#sheet [data-field="batch-input"]')
            await expect(field).to_be_focused()
            await field.press_sequentially("B-100")
            await s.shot("03-batch-typed")
            await field.press("Enter")
            await expect(page.locator("#sheet")).to_be_hidden()
            await expect(steel.locator('[data-field="batch"]')).to_contain_text("Batch B-100")
            await expect(steel.locator('[data-field="batch"]')).to_contain_text("operator:panel")
            await expect(steel).to_have_class("row")
            (load,) = panel.engine.wc.operations[KEY].batch_loads
            assert (load.material, load.batch, load.actor) == ("STEEL-1", "B-100", "operator:panel")

            # a batch tapped on the on-screen keys (capitals: a code), then OK
            await s.close_toast()
            await s.tap('[data-cmd="load-batch"][data-material="GLUE-7"]')
            for key in ("g", "-", "2", "0", "7"):
                await s.tap(f'#sheet [data-key="{key}"]')
            await expect(page.locator('#sheet [data-field="batch-input"]')).to_have_value("G-207")
            await s.tap('#sheet [data-cmd="ok"]')
            await expect(glue.locator('[data-field="batch"]')).to_contain_text("Batch G-207")

            # what the count consumes of the backflushed component shows as it is made
            await panel.pulses(8)
            await expect(steel.locator('[data-field="consumed"]')).to_have_text(
                "Consumed: 2 KG (B-100)"
            )

            # consumption recorded on the number pad, from the batch loaded
            await s.close_toast()
            await s.tap('[data-cmd="consume"][data-material="GLUE-7"]')
            await s.keys("12.5")
            await expect(page.locator('#sheet [data-cmd="ok"]')).to_have_text("Record 12.5 G")
            await s.shot("04-consume")
            await s.tap('#sheet [data-cmd="ok"]')
            await expect(glue.locator('[data-field="consumed"]')).to_have_text(
                "Consumed: 12.5 G (G-207)"
            )
            await expect(glue.locator('[data-field="pending"]')).to_have_text(
                "Not confirmed yet: 12.5 G (G-207)"
            )
            await s.close_toast()
            await s.tap('[data-cmd="consume"][data-material="SCREW-M4"]')
            await s.keys("32")
            await s.tap('#sheet [data-cmd="ok"]')
            await expect(screw.locator('[data-field="consumed"]')).to_have_text("Consumed: 32 PC")
            assert panel.engine.wc.operations[KEY].consumed == {
                "GLUE-7": {"G-207": Decimal("12.5")},
                "SCREW-M4": {"": Decimal(32)},
            }

            # a bad batch (the one loaded already): the core's message in the red notice, and
            # nothing is stored
            await s.close_toast()
            await s.tap('[data-cmd="load-batch"][data-material="STEEL-1"]')
            await page.locator('#sheet [data-field="batch-input"]').press_sequentially("B-100")
            await s.tap('#sheet [data-cmd="ok"]')
            await s.toast("error", "Not a valid value")
            await s.toast("error", "batch = 'B-100': already the loaded batch of STEEL-1")
            await s.shot("05-bad-batch")
            await s.tap('#sheet [data-cmd="back"]')
            await expect(page.locator("#toast")).to_be_hidden()
            assert len(panel.engine.wc.operations[KEY].batch_loads) == 2

            # too long a batch: refused by the core as well, naming the field
            await s.tap('[data-cmd="load-batch"][data-material="STEEL-1"]')
            await page.locator('#sheet [data-field="batch-input"]').fill("B" * 41)
            await s.tap('#sheet [data-cmd="ok"]')
            await s.toast("error", "batch = 'BBBB")
            await s.toast("error", "must be 1 to 40 printable characters")
            await s.tap('#sheet [data-cmd="back"]')
            assert len(panel.engine.wc.operations[KEY].batch_loads) == 2

            # German: every new text has its words
            await s.tap("#btn-lang")
            await expect(page.locator(".components .section-title")).to_have_text("Komponenten")
            await expect(steel).to_contain_text("retrograd · chargenpflichtig")
            await expect(screw.locator('[data-cmd="consume"]')).to_have_text("Verbrauch erfassen")
            await steel.scroll_into_view_if_needed()
            await s.shot("06-card-de")
            await s.tap('[data-cmd="load-batch"][data-material="GLUE-7"]')
            await s.shot("07-batch-de")
            await s.tap('#sheet [data-cmd="back"]')
            await s.tap("#btn-lang")
