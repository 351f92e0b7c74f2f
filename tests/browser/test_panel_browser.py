"""End to end: notebooks/panel.ipynb in JupyterLab 4 and in Notebook 7, driven in Debian's Chromium by
Playwright, used the way a new user uses it; and once as a Voilà app.

Runs the notebook; loads a 128 MiB demo model from the panel's form; tries options that clash with the
form and a name that is already loaded; holds the model in a variable, unloads it, reads on its row what
force would remove and frees it with one click; watches the CPU bar follow memory taken outside nbmodels
without a click; re-runs the panel's cell (one panel, one follower), clears its output (the panel stops
following) and shows it again; puts a panel in a Tab. After each step it asks the kernel what it holds.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.browser.jupyterlab import FRONT_ENDS, Lab, jupyterlab

if TYPE_CHECKING:
    from playwright.sync_api import Locator, Page

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


def _serve(tmp_path: Path, front_end: str) -> Iterator[Lab]:
    _require_browser()
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy(NOTEBOOK, root / "panel.ipynb")
    with jupyterlab(root, tmp_path / "jupyter", front_end=front_end) as server:
        yield server


@pytest.fixture(params=FRONT_ENDS)
def lab(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Lab]:
    yield from _serve(tmp_path, request.param)


@pytest.fixture
def voila(tmp_path: Path) -> Iterator[Lab]:
    yield from _serve(tmp_path, "voila")


def _browser_page() -> Iterator[Page]:
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


@pytest.fixture
def page(lab: Lab) -> Iterator[Page]:
    yield from _browser_page()


@pytest.fixture
def app_page(voila: Lab) -> Iterator[Page]:
    yield from _browser_page()


_KERNEL_IDLE = """() => {
  const widget = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  const session = widget && widget.sessionContext && widget.sessionContext.session;
  return !!(session && session.kernel && session.kernel.status === 'idle');
}"""

_RUN_CELL = """async ([marker, source]) => {
  const app = window.jupyterapp;
  const notebook = app.shell.currentWidget.content;
  let index = notebook.widgets.findIndex(cell => cell.model.sharedModel.getSource().includes(marker));
  if (index < 0) {
    if (source === null) { throw new Error('no cell contains ' + marker); }
    notebook.activeCellIndex = notebook.widgets.length - 1;
    await app.commands.execute('notebook:insert-cell-below');
    index = notebook.activeCellIndex;
  }
  if (source !== null) { notebook.widgets[index].model.sharedModel.setSource(source); }
  notebook.activeCellIndex = index;
  await app.commands.execute('notebook:run-cell');
}"""

_CLEAR_OUTPUT = """async (marker) => {
  const app = window.jupyterapp;
  const notebook = app.shell.currentWidget.content;
  const index = notebook.widgets.findIndex(cell => cell.model.sharedModel.getSource().includes(marker));
  notebook.activeCellIndex = index;
  await app.commands.execute('notebook:clear-cell-output');
}"""

PANEL_CELL = "%model_panel"
_probes = iter(range(1_000_000))

# What the kernel holds, as one JSON line: loaded names, open panels, how many follow the manager.
_PROBE = """# nbmodels-probe
import json as _json
from ipywidgets.widgets.widget import _instances as _widgets
from nbmodels.widgets.panel import ModelPanel as _Panel
_panels = [w for w in list(_widgets.values()) if isinstance(w, _Panel)]
print("{token}", _json.dumps({{
    "loaded": sorted(i.name for i in mgr.list()),
    "survivors": mgr.survivors(),
    "panels": len(_panels),
    "following": sum(p.following for p in _panels),
    "model_var": "model" in globals(),
}}))"""


def run_cell(page: Page, marker: str, source: str | None = None) -> None:
    """Run the cell containing ``marker`` (added at the end, with ``source``, if there is none)."""
    page.evaluate(_RUN_CELL, [marker, source])


def cell(page: Page, marker: str) -> Locator:
    return page.locator(".jp-CodeCell", has_text=marker)


def kernel_state(page: Page) -> dict[str, Any]:
    """Ask the kernel, through a cell of its own, what it holds now."""
    from playwright.sync_api import expect

    token = f"probe-{next(_probes)}"
    run_cell(page, "# nbmodels-probe", _PROBE.format(token=token))
    output = cell(page, "# nbmodels-probe").locator(".jp-OutputArea-output")
    expect(output).to_contain_text(token)
    text = output.inner_text()
    return dict(json.loads(text.split(token, 1)[1].strip()))


def wait_for_state(page: Page, **expected: Any) -> dict[str, Any]:
    """Probe until the kernel's state has ``expected`` (the front end's messages may still be on their way)."""
    for _ in range(30):
        state = kernel_state(page)
        if all(state[key] == value for key, value in expected.items()):
            return state
        page.wait_for_timeout(500)
    raise AssertionError(f"the kernel never reached {expected}: {state}")


def cpu_used(panel: Locator) -> int:
    used = panel.locator(".nbmodels-bar-cpu").get_attribute("data-used")
    assert used is not None
    return int(used)


def test_the_panel_in_a_real_front_end(lab: Lab, page: Page, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    page.goto(lab.tree("panel.ipynb"))
    page.wait_for_function(_KERNEL_IDLE, timeout=WAIT_MS)
    page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")

    panel = page.locator(".nbmodels-panel")
    expect(panel).to_have_count(1)
    expect(panel).to_be_visible()
    # The notebook's API cell loads "lm" after the panel is shown: the panel picks it up by itself.
    expect(panel.locator(".nbmodels-row-lm")).to_be_visible()
    assert wait_for_state(page, loaded=["lm"], panels=1, following=1)
    if lab.front_end == "lab":
        page.evaluate("window.jupyterapp.commands.execute('application:toggle-left-area')")
    status = panel.locator(".nbm-status")

    # Load from the form.
    panel.locator(".nbmodels-name input").fill("mlp")
    panel.locator(".nbmodels-device select").select_option("cpu")
    panel.locator(".nbmodels-load").click()
    row = panel.locator(".nbmodels-row-mlp")
    expect(row).to_be_visible()
    size = row.locator(".nbm-size").inner_text()
    match = re.search(r"([\d.]+) MiB", size)
    assert match is not None, size
    assert 120 <= float(match.group(1)) <= 140, size
    expect(status).to_contain_text("loaded mlp: Sequential on cpu")
    expect(panel.locator(".nbmodels-load")).to_be_enabled()
    # This kernel's row in "This machine" follows within a moment (not at the next 10 s reading).
    expect(panel.locator(".nbmodels-machine")).to_contain_text(re.compile(r"mlp \d"))
    expect(panel.locator(".nbmodels-machine")).not_to_contain_text("(loading)")

    # Options that clash with the form, then a name that is loaded: one clear line each, never "loading…".
    panel.locator(".nbmodels-name input").fill("other")
    panel.locator(".nbmodels-source input").fill("demo:mlp")
    panel.locator(".nbmodels-options input").fill("device=cuda")
    panel.locator(".nbmodels-load").click()
    expect(status).to_contain_text("device is chosen with the device menu, not in the options")
    expect(panel.locator('.nbm-status[data-kind="error"]')).to_have_count(1)
    panel.locator(".nbmodels-options input").fill("")
    panel.locator(".nbmodels-source input").fill("")
    panel.locator(".nbmodels-name input").fill("lm")
    panel.locator(".nbmodels-device select").select_option("auto")
    panel.locator(".nbmodels-load").click()
    expect(status).to_contain_text("already loaded: lm")
    assert wait_for_state(page, loaded=["lm", "mlp"])

    # A variable of the user's holds the model: Unload leaves a row with the plan; one click frees it.
    run_cell(page, "# nbmodels-hold", 'model = mgr.get("mlp")  # nbmodels-hold')
    expect(cell(page, "# nbmodels-hold").locator(".jp-InputPrompt")).to_contain_text(re.compile(r"\[\d+\]"))
    used_with_model = cpu_used(panel)
    row.locator(".nbmodels-unload").click()
    held = panel.locator(".nbmodels-held-mlp")
    expect(held).to_be_visible()
    expect(held).to_contain_text("held by model · force would: del model")
    expect(status).to_contain_text("Force free runs it")
    expect(panel.locator(".nbmodels-machine")).to_contain_text("mlp (released, still held)")
    if lab.front_end == "lab":
        shot = tmp_path / "nbmodels-panel.png"
        panel.screenshot(path=str(shot))
        shutil.copy(shot, README_SCREENSHOT)
        print(f"panel screenshot: {shot} (copied to {README_SCREENSHOT})")
    page.screenshot(path=str(tmp_path / f"{lab.front_end}.png"), full_page=True)
    held.locator(".nbmodels-force-free").click()
    expect(held).to_have_count(0)
    expect(status).to_contain_text("force removed what held mlp: del model")
    expect(panel.locator('.nbm-status[data-kind="ok"]')).to_have_count(1)
    assert wait_for_state(page, loaded=["lm"], survivors=[], model_var=False)
    assert cpu_used(panel) < used_with_model - 64 * MIB

    # Memory taken outside nbmodels shows without a click, and so does its release.
    before = cpu_used(panel)
    run_cell(page, "# nbmodels-block", "block = b'x' * (300 * 2**20)  # nbmodels-block")
    page.wait_for_function(
        "(limit) => Number(document.querySelector('.nbmodels-bar-cpu').dataset.used) > limit",
        arg=before + 200 * MIB,
    )
    run_cell(page, "# nbmodels-block", "del block  # nbmodels-block")
    page.wait_for_function(
        "(limit) => Number(document.querySelector('.nbmodels-bar-cpu').dataset.used) < limit",
        arg=before + 100 * MIB,
    )

    # Re-running the panel's cell replaces its panel: still one panel, one follower.
    run_cell(page, PANEL_CELL)
    run_cell(page, PANEL_CELL)
    assert wait_for_state(page, panels=1, following=1)
    expect(page.locator(".nbmodels-panel")).to_have_count(1)
    expect(page.locator(".nbmodels-panel .nbmodels-row-lm")).to_be_visible()

    # Clearing its output: the front end says its view is gone, and the panel stops following.
    page.evaluate(_CLEAR_OUTPUT, PANEL_CELL)
    expect(page.locator(".nbmodels-panel")).to_have_count(0)
    assert wait_for_state(page, panels=1, following=0)
    run_cell(page, PANEL_CELL)
    expect(page.locator(".nbmodels-panel .nbmodels-row-lm")).to_be_visible()
    assert wait_for_state(page, panels=1, following=1)

    # A panel inside the user's own layout.
    run_cell(
        page,
        "# nbmodels-tab",
        "import ipywidgets  # nbmodels-tab\nipywidgets.Tab(children=[nbmodels.panel()], titles=['models'])",
    )
    tabbed = page.locator(".widget-tab .nbmodels-panel")
    expect(tabbed.locator(".nbmodels-row-lm")).to_be_visible()
    expect(page.locator(".nbmodels-panel")).to_have_count(2)
    assert wait_for_state(page, panels=2, following=2)


def test_the_panel_as_a_voila_app(voila: Lab, app_page: Page) -> None:
    """Voilà runs the notebook and shows its outputs as an app: the panel renders and works there."""
    from playwright.sync_api import expect

    page = app_page
    page.goto(voila.tree("panel.ipynb"))
    panel = page.locator(".nbmodels-panel")
    expect(panel).to_have_count(1)
    expect(panel.locator(".nbmodels-row-lm")).to_be_visible()
    assert cpu_used(panel) > 0
    panel.locator(".nbmodels-name input").fill("tiny")
    panel.locator(".nbmodels-load").click()
    expect(panel.locator(".nbmodels-row-tiny")).to_be_visible()
    expect(panel.locator(".nbm-status")).to_contain_text("loaded tiny: Sequential on cpu")
    panel.locator(".nbmodels-row-lm .nbmodels-unload").click()
    expect(panel.locator(".nbmodels-row-lm")).to_have_count(0)
    expect(panel.locator(".nbm-status")).to_contain_text("released 1 model(s): lm")
