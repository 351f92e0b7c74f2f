"""End to end: notebooks/panel.ipynb in JupyterLab, driven in Debian's Chromium by Playwright.

Runs the notebook, loads a 128 MiB demo model from the panel's form, sees its row and size,
unloads it from its row, sees the row go and the CPU bar fall, and asks the kernel what it holds.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.browser.jupyterlab import Lab, jupyterlab

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = [pytest.mark.browser, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK = REPO / "notebooks" / "panel.ipynb"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
README_SCREENSHOT = Path("/tmp/nbmodels-panel.png")
WAIT_MS = 90_000  # kernel start and `import torch` on a loaded two-core machine
MIB = 1024 * 1024


def _require_browser() -> None:
    """Skip with the reason when the browser is missing; under CI (CI=true) fail instead."""
    reason = None
    if not CHROMIUM.exists():
        reason = f"Debian's Chromium is not installed at {CHROMIUM} (apt-get install -y chromium)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            reason = "Playwright for Python is not installed (pip install playwright)"
    if reason is None:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason}; CI=true, so the browser test may not be skipped")
    pytest.skip(reason)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    _require_browser()
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy(NOTEBOOK, root / "panel.ipynb")
    with jupyterlab(root, tmp_path / "jupyter") as server:
        yield server


@pytest.fixture
def page(lab: Lab) -> Iterator[Page]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100}, device_scale_factor=2)
            page.set_default_timeout(WAIT_MS)
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            yield page
            if errors:
                print("page errors:", *errors, sep="\n  ")
        finally:
            browser.close()


_KERNEL_IDLE = """() => {
  const widget = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  const session = widget && widget.sessionContext && widget.sessionContext.session;
  return !!(session && session.kernel && session.kernel.status === 'idle');
}"""

_RUN_CELL = """async (marker) => {
  const app = window.jupyterapp;
  const notebook = app.shell.currentWidget.content;
  const index = notebook.widgets.findIndex(cell => cell.model.sharedModel.getSource().includes(marker));
  if (index < 0) { throw new Error('no cell contains ' + marker); }
  notebook.activeCellIndex = index;
  await app.commands.execute('notebook:run-cell');
}"""


def _cpu_used(page: Page) -> int:
    used = page.locator(".nbmodels-bar-cpu").get_attribute("data-used")
    assert used is not None
    return int(used)


def _kernel_state(page: Page, expected: str) -> None:
    """Run the notebook's state cell and wait until its output is ``expected``."""
    from playwright.sync_api import expect

    page.evaluate(_RUN_CELL, "# nbmodels-state")
    cell = page.locator(".jp-CodeCell", has_text="# nbmodels-state")
    expect(cell.locator(".jp-OutputArea-output")).to_have_text(expected)


def test_load_and_unload_from_the_panel_in_jupyterlab(lab: Lab, page: Page, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    page.goto(lab.tree("panel.ipynb"))
    page.wait_for_function(_KERNEL_IDLE, timeout=WAIT_MS)
    page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")

    panel = page.locator(".nbmodels-panel")
    expect(panel).to_be_visible()
    # The notebook's API cell loads "lm" after the panel is shown: the panel picks it up by itself.
    expect(panel.locator(".nbmodels-row-lm")).to_be_visible()
    _kernel_state(page, "loaded: 1 ['lm']")
    page.evaluate("window.jupyterapp.commands.execute('application:toggle-left-area')")

    panel.locator(".nbmodels-name input").fill("mlp")
    panel.locator(".nbmodels-device select").select_option("cpu")
    panel.locator(".nbmodels-load").click()

    row = panel.locator(".nbmodels-row-mlp")
    expect(row).to_be_visible()
    size = row.locator(".nbm-size").inner_text()
    match = re.search(r"([\d.]+) MiB", size)
    assert match is not None, size
    assert 120 <= float(match.group(1)) <= 140, size
    status = panel.locator(".nbm-status")
    expect(status).to_contain_text("loaded mlp: Sequential on cpu")
    expect(panel.locator(".nbmodels-load")).to_be_enabled()
    _kernel_state(page, "loaded: 2 ['lm', 'mlp']")
    used_with_model = _cpu_used(page)

    shot = tmp_path / "nbmodels-panel.png"
    panel.screenshot(path=str(shot))
    shutil.copy(shot, README_SCREENSHOT)
    page.screenshot(path=str(tmp_path / "jupyterlab.png"), full_page=True)
    print(f"panel screenshot: {shot} (copied to {README_SCREENSHOT}); page: {tmp_path / 'jupyterlab.png'}")

    row.locator(".nbmodels-unload").click()
    expect(row).to_have_count(0)
    expect(status).to_contain_text("released 1 model(s): mlp")
    expect(panel.locator('.nbm-status[data-kind="ok"]')).to_have_count(1)  # nothing survived the unload
    used_after = _cpu_used(page)
    assert used_after < used_with_model - 64 * MIB, (used_with_model, used_after)
    expect(panel.locator(".nbmodels-row-lm")).to_be_visible()
    _kernel_state(page, "loaded: 1 ['lm']")
