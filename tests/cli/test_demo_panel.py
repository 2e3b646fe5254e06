"""The demo as a new user meets it: ``edge demo --stay``, then the next order worked on the
panel in Chromium with taps only, the press following, and the ERP's verdicts on screen."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from playwright.async_api import expect

from simulators.broker import free_port
from tests.cli.test_cli import assert_story
from tests.panel.test_browser import CHROMIUM, screen

REPO = Path(__file__).resolve().parents[2]
NEXT = "4711/0030"  # the story works 4711/0020; this one is left for the user

pytestmark = [
    pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK), reason=f"{CHROMIUM} is missing"),
    pytest.mark.timeout(240),
]


class Demo:
    """``edge demo --stay`` in a child process; its output collected by a thread."""

    def __init__(self, data_dir: Path, port: int) -> None:
        self.lines: list[str] = []
        self.child = subprocess.Popen(
            [sys.executable, "-m", "edge", "demo", "--stay", "--data-dir", str(data_dir),
             "--panel-port", str(port)],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.child.stdout is not None
        for line in self.child.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output:
            if self.child.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not in the demo's output:\n{self.output}")
            time.sleep(0.1)

    def stop(self) -> int:
        if self.child.poll() is None:
            self.child.send_signal(signal.SIGINT)
        try:
            return self.child.wait(timeout=30)
        finally:
            if self.child.poll() is None:
                self.child.kill()
            self._reader.join(5)


async def test_a_new_user_works_the_next_order_on_the_panel_in_the_demo(tmp_path: Path) -> None:
    port = free_port()
    demo = Demo(tmp_path / "demo", port)
    try:
        demo.wait_for("the story is over", timeout=120)
        assert f"http://127.0.0.1:{port}/" in demo.output
        async with screen(f"http://127.0.0.1:{port}/", "demo") as s:
            page = s.page
            await s.tap('.tab[data-view="orders"]')
            await s.tap(f'.row[data-op="{NEXT}"] [data-cmd="start-setup"]')
            # The setup has begun once the header names the operation (the lamp alone is no
            # proof: it can be yellow before the tap, and the hidden orders list keeps the
            # buttons it last rendered).
            await expect(page.locator("#wc")).to_contain_text(NEXT)
            await s.lamp("yellow")
            await s.tap('.tab[data-view="order"]')
            start = page.locator('#view-order [data-cmd="start-production"]')
            await expect(start).to_have_count(1)
            await s.tap('#view-order [data-cmd="start-production"]')
            await s.lamp("green")
            # The press jams after about 45 parts: the panel asks, one tap answers.
            await expect(page.locator('#sheet[data-kind="reason"]')).to_be_visible(timeout=30_000)
            await s.shot("01-jam-asks-for-reason")
            await s.tap('#sheet [data-reason="JAM"]')
            await expect(page.locator(".flag.ok")).to_have_text("Target reached", timeout=40_000)
            await s.close_toast()
            await s.tap('[data-cmd="complete"]')
            await s.tap('#sheet [data-cmd="ok"]')
            await expect(page.locator("#state-label")).to_have_text("NO ORDER")
            if await page.locator('#sheet[data-kind="reason"]').is_visible():
                await s.tap('#sheet [data-reason="JAM"]')  # it jammed once more meanwhile
            await s.tap('.tab[data-view="confirmations"]')
            mine = page.locator(f'.row[data-conf^="{NEXT}#"]')
            await expect(mine.first).to_be_visible()
            for row in await mine.all():
                await expect(row.locator("[data-verdict]")).to_have_attribute(
                    "data-verdict", "posted", timeout=15_000
                )
            await s.shot("02-verdicts")
            # The machine card: the demo's two service intervals, counted from its strokes.
            await s.tap('.tab[data-view="shift"]')
            die = page.locator('[data-service="die"]')
            await expect(die).to_be_visible()
            await expect(page.locator('[data-service="lubrication"]')).to_be_visible()
            await s.shot("03-machine")
    finally:
        code = demo.stop()
    out = demo.output
    assert code == 0, out
    assert "JAM" in out
    assert_story(out)  # the story before the user took over, and the summary
    assert "Traceback" not in out
    # The panel's address as soon as it answers, long before the story ends.
    up = out.index(f"the operator panel is up: open http://127.0.0.1:{port}/")
    assert up < out.index("master data v1 from central applied") < out.index("the story is over")
    assert "the demo stops the gateway" not in out  # it keeps running: --stay
    # The summary covers the order the user worked too, and the stops.
    mine = out[out.index(f"What the gateway holds for {NEXT}:") :]
    assert mine.index("status completed") < mine.index(f"What SAP posted for {NEXT}")
    assert re.search(r"SAP yield .* vs\. gateway counted good .*: they match", mine), mine
    assert "\nStops: " in mine
    assert demo.lines[-1].startswith("edge demo: PASS: every confirmation posted once"), out
