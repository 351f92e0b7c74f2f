"""notebooks/panel.ipynb runs top to bottom on a real kernel (nbclient) and shows the panel."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "panel.ipynb"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def test_the_panel_notebook_is_stored_without_outputs() -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, cell.source


@pytest.mark.slow
def test_the_panel_notebook_runs(tmp_path: Path) -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    # A cell error raises CellExecutionError and fails the test.
    NotebookClient(
        notebook, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()

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
