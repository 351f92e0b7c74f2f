"""Running the project's notebooks on a real kernel (nbclient), shared by the notebook tests."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from nbmodels.ipython.kernels import KERNEL_NAME, kernel_manager_class

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
PACKAGED = Path(__file__).resolve().parents[2] / "nbmodels" / "notebooks"  # shipped in the wheel (the demo's)


def notebook_path(name: str) -> Path:
    """Where ``name`` is stored: ``notebooks/``, or inside the package for the ones the wheel ships."""
    packaged = PACKAGED / name
    return packaged if packaged.exists() else NOTEBOOKS / name


def execute(name: str, tmp_path: Path, **env: str) -> nbformat.NotebookNode:
    """Run ``notebooks/<name>`` top to bottom in ``tmp_path``; a cell error raises and fails the test."""
    return execute_notebook(nbformat.read(notebook_path(name), as_version=4), tmp_path, **env)


def execute_notebook(notebook: nbformat.NotebookNode, tmp_path: Path, **env: str) -> nbformat.NotebookNode:
    """Run ``notebook`` (made by a test) in ``tmp_path``; a cell error raises unless the cell is tagged
    ``raises-exception``."""
    client = NotebookClient(
        notebook,
        timeout=180,
        kernel_name=KERNEL_NAME,
        kernel_manager_class=kernel_manager_class(asynchronous=True),
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute(env={**os.environ, **env})
    return notebook


def texts(cell: nbformat.NotebookNode) -> str:
    """What a code cell showed as text: its streams and the plain-text form of its results."""
    parts = []
    for out in cell.outputs:
        if out.output_type == "stream":
            parts.append(out.text)
        elif out.output_type in ("execute_result", "display_data"):
            parts.append(out.data.get("text/plain", ""))
    return "\n".join(parts)


def shown_by_source(notebook: nbformat.NotebookNode) -> dict[str, str]:
    """Each code cell's source mapped to what it showed."""
    return {cell.source: texts(cell) for cell in notebook.cells if cell.cell_type == "code"}
