"""``%model_panel`` in a real InteractiveShell: it displays a live panel on the process-wide manager,
and running its cell again replaces the panel that cell showed before."""

from __future__ import annotations

from typing import Any

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output
from ipywidgets import Button, widget_serialization

from nbmodels import ModelManager
from nbmodels.widgets.panel import ModelPanel

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def _find(widget: Any, css: str) -> Any:
    if css in getattr(widget, "_dom_classes", ()):
        return widget
    for child in getattr(widget, "children", ()):
        found = _find(child, css)
        if found is not None:
            return found
    return None


def shown_panels(ip: InteractiveShell, code: str, cell_id: str | None = None) -> list[ModelPanel]:
    """Run ``code`` as a notebook cell (with the id a front end sends) and return the panels it showed."""
    with capture_output() as shown:
        result = ip.run_cell(code, store_history=True, cell_id=cell_id)
    result.raise_error()
    panels = []
    for output in shown.outputs:
        view = output.data.get(WIDGET_VIEW)
        if view is not None:
            panels.append(widget_serialization["from_json"](f"IPY_MODEL_{view['model_id']}", None))
    if isinstance(result.result, ModelPanel):  # a cell's value, shown by the displayhook
        panels.append(result.result)
    return panels


def test_model_panel_displays_a_live_panel(ip: InteractiveShell, mgr: ModelManager) -> None:
    manager = mgr
    with capture_output() as shown:
        result = ip.run_line_magic("model_panel", "")
    assert result is None  # shown once, not echoed again into Out
    assert len(shown.outputs) == 1
    data = shown.outputs[0].data
    assert data["text/plain"].startswith("<nbmodels panel: 0 model(s)>")
    root = widget_serialization["from_json"](f"IPY_MODEL_{data[WIDGET_VIEW]['model_id']}", None)
    assert isinstance(root, ModelPanel)
    assert "nbmodels-panel" in root._dom_classes
    assert root.live  # shown: the memory readings refresh on the timer

    manager.load("m", "demo:mlp", hidden=8)  # the panel follows the process-wide manager
    assert _find(root, "nbmodels-row-m") is not None

    close: Button = _find(root, "nbmodels-close")
    close.click()  # the panel's own close button unsubscribes it
    manager.unload("m")
    manager.load("n", "demo:mlp", hidden=8)
    assert _find(root, "nbmodels-row-n") is None
    assert root.comm is None
    assert not root.live


def test_running_the_cell_again_replaces_its_panel(ip: InteractiveShell, mgr: ModelManager) -> None:
    (first,) = shown_panels(ip, "%model_panel", cell_id="cell-a")
    (second,) = shown_panels(ip, "%model_panel", cell_id="cell-a")
    assert first.closed and not first.live and first.comm is None
    assert not second.closed and second.following
    assert len(mgr._subscribers) == 1  # one follower, not one per run
    (third,) = shown_panels(ip, "%model_panel", cell_id="cell-a")
    assert second.closed and not third.closed
    assert len(mgr._subscribers) == 1
    third.close()


def test_panels_of_other_cells_and_of_one_run_stay(ip: InteractiveShell, mgr: ModelManager) -> None:
    (a,) = shown_panels(ip, "%model_panel", cell_id="cell-a")
    (b,) = shown_panels(ip, "%model_panel", cell_id="cell-b")
    two = shown_panels(ip, "%model_panel\n%model_panel", cell_id="cell-c")
    assert len(two) == 2
    assert not any(p.closed for p in (a, b, *two))
    for panel in (a, b, *two):
        panel.close()


def test_a_cell_showing_nbmodels_panel_again_replaces_it_too(ip: InteractiveShell, mgr: ModelManager) -> None:
    (first,) = shown_panels(ip, "import nbmodels\nnbmodels.panel()", cell_id="cell-p")
    (second,) = shown_panels(ip, "import nbmodels\nnbmodels.panel()", cell_id="cell-p")
    assert first.closed and not second.closed
    second.close()


def test_a_panel_shown_in_two_cells_is_not_closed_by_rerunning_one(ip: InteractiveShell, mgr: ModelManager) -> None:
    ip.run_cell("import nbmodels\npanel = nbmodels.panel()", store_history=True, cell_id="cell-make")
    (shown_first,) = shown_panels(ip, "panel", cell_id="cell-x")
    (shown_again,) = shown_panels(ip, "panel", cell_id="cell-y")
    assert shown_first is shown_again
    (fresh,) = shown_panels(ip, "nbmodels.panel()", cell_id="cell-x")  # cell-x now shows another panel
    assert not shown_first.closed, "closed although cell-y still shows it"
    (other,) = shown_panels(ip, "nbmodels.panel()", cell_id="cell-y")
    assert shown_first.closed  # shown nowhere now
    for panel in (fresh, other):
        panel.close()
    ip.run_cell("del panel")


def test_without_a_cell_id_nothing_is_replaced(ip: InteractiveShell, mgr: ModelManager) -> None:
    (first,) = shown_panels(ip, "%model_panel")
    (second,) = shown_panels(ip, "%model_panel")
    assert not first.closed and not second.closed  # a terminal: no cell to tell them apart
    first.close()
    second.close()


def test_model_panel_takes_a_refresh_interval(ip: InteractiveShell, mgr: ModelManager) -> None:
    (panel,) = shown_panels(ip, "%model_panel --refresh 0.5", cell_id="cell-r")
    assert panel.refresh_interval == 0.5
    (off,) = shown_panels(ip, "%model_panel --refresh 0", cell_id="cell-r")
    assert off.refresh_interval == 0 and not off.live
    off.close()


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("extra", "unrecognized arguments: extra"),
        ("--refresh soon", "invalid float value"),
        ("--refresh -1", r"refresh_interval must be 0 \(off\) or more seconds"),
    ],
)
def test_model_panel_mistakes_are_one_line(ip: InteractiveShell, line: str, message: str) -> None:
    with pytest.raises(UsageError, match=message) as error:
        ip.run_line_magic("model_panel", line)
    assert "\n" not in str(error.value)
    assert str(error.value).startswith("%model_panel")


def test_the_panel_of_the_magic_loads_a_notebook_function_by_its_bare_name(
    ip: InteractiveShell, mgr: ModelManager
) -> None:
    ip.run_cell("import torch\ndef make(hidden=4):\n    return torch.nn.Sequential(torch.nn.Linear(3, hidden))")
    (panel,) = shown_panels(ip, "%model_panel --refresh 0")
    try:
        panel.name.value, panel.source.value, panel.options.value = "m", "make", "hidden=8"
        panel.load_button.click()
        assert panel.wait(30)
        assert panel.status_kind == "ok", panel.status_text
        assert mgr.info("m").source == "__main__:make"
    finally:
        panel.close()


def test_nbmodels_panel_takes_notebook_functions_as_the_magic_does(ip: InteractiveShell, mgr: ModelManager) -> None:
    # nbmodels.panel() in a notebook: its Load form finds make() in the notebook's namespace.
    ip.run_cell("import torch\ndef make(hidden=4):\n    return torch.nn.Sequential(torch.nn.Linear(3, hidden))")
    panel = ip.run_cell("import nbmodels\nnbmodels.panel(refresh_interval=0)", store_history=False).result
    assert isinstance(panel, ModelPanel)
    try:
        panel.name.value, panel.source.value, panel.options.value = "m", "make", "hidden=8"
        panel.load_button.click()
        assert panel.wait(30)
        assert panel.status_kind == "ok", panel.status_text
        assert mgr.info("m").parameters == 32
    finally:
        panel.close()
