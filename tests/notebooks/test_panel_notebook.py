"""notebooks/panel.ipynb runs top to bottom on a real kernel (nbclient) and shows the panel."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.notebooks.running import execute

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


@pytest.mark.slow
def test_the_panel_notebook_runs(tmp_path: Path) -> None:
    notebook = execute("panel.ipynb", tmp_path)  # a cell error fails the test

    outputs = [out for cell in notebook.cells if cell.cell_type == "code" for out in cell.outputs]
    assert not [out for out in outputs if out.output_type == "error"]
    views = [out for out in outputs if WIDGET_VIEW in out.get("data", {})]
    assert len(views) == 1, "the panel cell displays exactly one widget"
    assert "<nbmodels panel: " in views[0]["data"]["text/plain"]
    state = [out.text for out in outputs if out.output_type == "stream"]
    assert state == ["loaded: 1 ['lm']\n"]
    # The widget state saved with the notebook holds the panel as the kernel last drew it: lm listed.
    widget_state = notebook.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    values = [m["state"].get("value", "") for m in widget_state.values() if m["model_name"] == "HTMLModel"]
    assert any("nbmodels-bar-cpu" in v for v in values)
    assert any("<b>lm</b>" in v for v in values)
