"""notebooks/leak-hunting.ipynb runs on a real kernel (nbclient): the naive way frees nothing, force frees the model."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from nbmodels.ipython.kernels import KERNEL_NAME, kernel_manager_class
from tests.notebooks.test_quickstart import texts

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "leak-hunting.ipynb"


def mib_back(text: str, label: str) -> float:
    found = re.search(rf"^{label}: (-?[\d.]+) MiB back", text, re.M)
    assert found is not None, text
    return float(found.group(1))


def test_the_leak_hunting_notebook_is_stored_without_outputs() -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(cell.outputs == [] and cell.execution_count is None for cell in code)


@pytest.mark.slow
def test_the_leak_hunting_notebook_frees_with_force_what_the_naive_way_cannot(tmp_path: Path) -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=180,
        kernel_name=KERNEL_NAME,
        kernel_manager_class=kernel_manager_class(asynchronous=True),
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()  # an error fails the test, except in the cell tagged raises-exception

    shown = {cell.source: texts(cell) for cell in notebook.cells if cell.cell_type == "code"}
    source = next(s for s in shown if s.startswith("before = rss()"))
    assert mib_back(shown[source], "naive") < 5  # of a 100 MiB model

    listing = shown["%unload_model clf"]
    for holder in ("Out[", "sys.last_value → traceback → local 'm' of evaluate()", "on_click callback 0 of button"):
        assert holder in listing
    assert "free it with %unload_model clf --force" in listing

    forced = shown[next(s for s in shown if s.startswith("report = %unload_model clf --force"))]
    assert mib_back(forced, "force") >= 95
    assert "unrelated: {'lr': 0.1, 'epochs': 3} | button still here: Predict" in forced

    blocked = shown[next(s for s in shown if "helpers.CACHE = mgr.load" in s)]
    assert "force cannot free it: helpers.CACHE holds it" in blocked
    assert "force removed what held lm: del lm" in shown["helpers.CACHE = None\n%unload_model lm --force"]
    removed = shown[next(s for s in shown if s.startswith("for name, holders in report.removed"))]
    assert "clf: callback  button.on_click(predictor.<locals>.on_click, remove=True)" in removed
