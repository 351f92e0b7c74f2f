"""End to end: the Models section of the Running sidebar and the status-bar item, in a real JupyterLab 4
and Notebook 7, driven in Debian's Chromium by Playwright.

A notebook loads two demo models from a cell; without running anything else, the sidebar lists the
kernel (by its notebook's name) and each model with its size and device, and the status bar says
"2 models · 20.0 MiB". Clicking Unload on one with the notebook idle releases it: its row goes; Free on
the kernel's row releases the other, and the kernel, asked from a cell, holds nothing. The JupyterLab
run takes the README's screenshot.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.browser.jupyterlab import FRONT_ENDS, Lab, jupyterlab
from tests.browser.test_panel_browser import _KERNEL_IDLE, WAIT_MS, _browser_page, _require_browser, run_cell

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SCREENSHOT = Path("/tmp/nbmodels-sidebar.png")  # copied by hand to docs/sidebar.png for the README
LOAD_CELL = (
    "%load_ext nbmodels\n%load_model enc demo:mlp --kw size_mb=16\n%load_model clf demo:mlp --kw size_mb=4 seed=1"
)
COUNT_CELL = "# count\nimport nbmodels\nprint('models-held', len(nbmodels.get_manager()))"
UPDATE_MS = 2_000  # the sidebar's promise: a change shows within 2 s (plus a margin for a loaded machine)


def notebook(cells: list[str]) -> str:
    return json.dumps(
        {
            "cells": [
                {
                    "cell_type": "code",
                    "execution_count": None,
                    "id": f"c{i}",
                    "metadata": {},
                    "outputs": [],
                    "source": source,
                }
                for i, source in enumerate(cells)
            ],
            "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
            "nbformat": 4,
            "nbformat_minor": 5,
        }
    )


@pytest.fixture(params=FRONT_ENDS)
def lab(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Lab]:
    _require_browser()
    root = tmp_path / "root"
    root.mkdir()
    (root / "train.ipynb").write_text(notebook([LOAD_CELL]))
    with jupyterlab(root, tmp_path / "jupyter", front_end=request.param) as server:
        yield server


@pytest.fixture
def page(lab: Lab) -> Iterator[Page]:
    yield from _browser_page()


def models_held(page: Page) -> int:
    """Ask the kernel, from a cell, how many models its manager holds."""
    from playwright.sync_api import expect

    run_cell(page, "# count", COUNT_CELL)
    output = page.locator(".jp-CodeCell", has_text="# count").locator(".jp-OutputArea-output")
    expect(output).to_contain_text("models-held", timeout=WAIT_MS)
    return int(re.findall(r"models-held (\d+)", output.last.inner_text())[-1])


_FOCUS_MODELS = """() => {
  for (const title of document.querySelectorAll('.jp-RunningSessions .lm-AccordionPanel-title')) {
    const expanded = title.getAttribute('aria-expanded') === 'true';
    if (expanded !== title.textContent.includes('Models')) { title.click(); }
  }
}"""


def take_screenshot(page: Page) -> None:
    """The README's picture: the Models section alone in a wider sidebar, the notebook and its status bar."""
    page.evaluate(_FOCUS_MODELS)
    handle = page.locator("#jp-main-split-panel > .lm-SplitPanel-handle").first
    box = handle.bounding_box()
    if box is not None:
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + 300)
        page.mouse.down()
        page.mouse.move(box["x"] + 180, box["y"] + 300, steps=5)
        page.mouse.up()
    page.wait_for_timeout(500)
    SCREENSHOT.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOT))


def test_the_models_section_and_status_bar(lab: Lab, page: Page) -> None:
    from playwright.sync_api import expect

    page.set_viewport_size({"width": 1100, "height": 620})  # the README's picture: small enough to read
    page.goto(lab.tree("train.ipynb"))
    page.wait_for_function(_KERNEL_IDLE, timeout=WAIT_MS)
    run_cell(page, "%load_model enc")
    expect(page.locator(".jp-CodeCell", has_text="%load_model enc").locator(".jp-InputPrompt")).to_contain_text(
        "[1]", timeout=WAIT_MS
    )

    if lab.front_end == "notebook":  # Notebook 7: the Running tab of the file browser, in its own page
        browser = page.context.browser
        assert browser is not None
        running = browser.new_page(viewport={"width": 1100, "height": 620})
        running.set_default_timeout(WAIT_MS)
        running.goto(f"{lab.url}/tree?token={lab.token}")
        running.get_by_role("tab", name=re.compile("Running")).click()
    else:
        running = page
        page.evaluate("window.jupyterapp.shell.activateById('filebrowser')")  # the Running sidebar is hidden
        status = page.locator(".nbm-status")
        expect(status).to_have_text("2 models · 20.0 MiB", timeout=UPDATE_MS + 3_000)
        status.click()  # opens the Running sidebar

    kernel_row = running.locator(".jp-RunningSessions-item.nbm-kernel", has_text="train.ipynb")
    model_row = running.locator(".jp-RunningSessions-item.nbm-model", has_text="enc")
    expect(kernel_row).to_contain_text("2 models · 20.0 MiB", timeout=WAIT_MS)
    expect(model_row).to_contain_text("cpu 16.0 MiB")
    expect(running.locator(".jp-RunningSessions-item.nbm-model", has_text="clf")).to_contain_text("cpu 4.0 MiB")
    free_button = kernel_row.locator(".jp-RunningSessions-itemShutdown").first
    expect(free_button).to_have_attribute("title", "Free")
    unload = model_row.locator(".jp-RunningSessions-itemShutdown")
    expect(unload).to_have_attribute("title", "Unload")

    if lab.front_end == "lab":
        take_screenshot(page)

    page.wait_for_function(_KERNEL_IDLE, timeout=WAIT_MS)
    model_row.hover()  # the sidebar shows an item's button while the pointer is on it
    unload.click()
    expect(model_row).to_have_count(0, timeout=UPDATE_MS + 3_000)
    expect(kernel_row).to_contain_text("1 model · 4.0 MiB", timeout=UPDATE_MS + 3_000)
    if lab.front_end == "lab":
        expect(page.locator(".nbm-status")).to_have_text("1 model · 4.0 MiB", timeout=UPDATE_MS + 3_000)

    # Free while a variable holds clf: released but held; the dialog shows force's plan; Force frees it.
    if lab.front_end == "notebook":
        page.bring_to_front()
    run_cell(page, "# keep", "# keep\nimport nbmodels\nkeep = nbmodels.get_manager().get('clf')")
    page.wait_for_function(_KERNEL_IDLE, timeout=WAIT_MS)
    running.bring_to_front()
    kernel_row.hover()
    free_button.click()
    dialog = running.locator(".jp-Dialog")
    expect(dialog).to_contain_text("keep", timeout=WAIT_MS)  # the plan names the variable force would delete
    expect(running.locator(".jp-RunningSessions-item.nbm-model", has_text="clf (held)")).to_have_count(1)
    running.screenshot(path=f"/tmp/nbmodels-force-{lab.front_end}.png")  # to look at, not compared
    dialog.get_by_role("button", name="Force").click()
    expect(running.locator(".jp-RunningSessions-item.nbm-model")).to_have_count(0, timeout=UPDATE_MS + 3_000)
    if lab.front_end == "notebook":
        page.bring_to_front()
    assert models_held(page) == 0
    run_cell(page, "# gone", "# gone\nprint('keep-defined', 'keep' in dir())")
    expect(page.locator(".jp-CodeCell", has_text="# gone").locator(".jp-OutputArea-output")).to_contain_text(
        "keep-defined False"
    )
