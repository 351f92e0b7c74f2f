"""Every notebook is stored valid and without outputs, so diffs stay readable and nothing stale ships."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from tests.notebooks.running import NOTEBOOKS, PACKAGED

ALL = sorted([*NOTEBOOKS.glob("*.ipynb"), *PACKAGED.glob("*.ipynb")])


def test_the_three_notebooks_exist() -> None:
    assert {p.name for p in ALL} >= {"quickstart.ipynb", "panel.ipynb", "leak-hunting.ipynb"}


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name)
def test_notebook_is_stored_without_outputs(path: Path) -> None:
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(cell.outputs == [] and cell.execution_count is None for cell in code)
