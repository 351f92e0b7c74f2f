"""End to end in JupyterLab and Chromium: the panel's "This machine" section frees another notebook's models.

Two notebooks of one JupyterLab server: ``other.ipynb`` holds a model (driven
through its kernel's connection file), ``panel.ipynb`` is open in the browser
and shows the panel. Its This machine section lists the other notebook; its
Free button empties the other kernel, which keeps running.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import nbformat
import pytest
from jupyter_client import BlockingKernelClient

from tests.browser.jupyterlab import Lab, jupyterlab
from tests.browser.test_panel_browser import _KERNEL_IDLE, CHROMIUM, CHROMIUM_ARGS, WAIT_MS, _require_browser
from tests.machine.test_jupyter_server import api, run

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SCREENSHOT = Path("/tmp/nbmodels-machine.png")


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    _require_browser()
    root = tmp_path / "root"
    root.mkdir()
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell("%load_ext nbmodels\n%model_panel")]
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, str(root / "panel.ipynb"))
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
            yield page
        finally:
            browser.close()


def test_free_from_the_panel_empties_the_other_notebooks_kernel(lab: Lab, page: Page, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    session = api(lab, "/api/sessions", {"path": "other.ipynb", "type": "notebook", "kernel": {"name": "python3"}})
    kernel_id = session["kernel"]["id"]
    client = BlockingKernelClient(connection_file=str(tmp_path / "jupyter" / "runtime" / f"kernel-{kernel_id}.json"))
    client.load_connection_file()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=120)
        run(client, "%load_ext nbmodels\n%load_model clf demo:mlp --kw size_mb=16\nimport nbmodels, os")
        pid = int(run(client, "print(os.getpid())").strip())

        page.goto(lab.tree("panel.ipynb"))
        page.wait_for_function(_KERNEL_IDLE, timeout=WAIT_MS)
        page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
        section = page.locator(".nbmodels-machine")
        row = section.locator(f".nbmodels-kernel-{pid}")
        expect(row).to_contain_text("other.ipynb")
        expect(row).to_contain_text("clf 16.0 MiB")
        expect(section).to_contain_text("(this kernel)")
        page.evaluate("window.jupyterapp.commands.execute('application:toggle-left-area')")
        section.screenshot(path=str(tmp_path / "machine.png"))
        shutil.copy(tmp_path / "machine.png", SCREENSHOT)

        row.locator(".nbmodels-free").click()
        expect(section.locator(".nbm-status")).to_contain_text("released 1 model(s): clf")
        expect(row).to_contain_text("none")
        assert run(client, "print([i.name for i in nbmodels.get_manager().list()])").strip() == "[]"
        assert kernel_id in {k["id"] for k in api(lab, "/api/kernels")}  # freed, not killed
        assert json.loads(run(client, "import json; print(json.dumps(1))")) == 1  # and it still runs cells
    finally:
        client.stop_channels()
