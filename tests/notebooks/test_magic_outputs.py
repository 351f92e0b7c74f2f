"""What a notebook shows for each magic, on a real kernel (nbclient): the rich displays stay, and
nothing else appears (no Out for actions, one line for a mistake, the whole traceback on %tb)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import nbformat
import pytest

from tests.notebooks.running import execute_notebook

CELLS = [
    # torch imported first: the first load would pay for that import, over a second on a busy machine,
    # and a load over a second rightly shows a progress bar, which is not what "bare load" checks.
    ("load_ext", "%load_ext nbmodels\nimport torch"),
    ("bare load", "%load_model clf demo:mlp"),
    ("assigned load", "m = %load_model clf\nm"),
    ("bare unload", "%unload_model clf"),
    ("assigned cleanup", "r = %model_cleanup"),
    ("list", "%list_models"),
    ("mistake", "%load_model bad demo:mlp --kw hidden=-5 --as x"),
    ("crash", "def crashing():\n    raise ValueError('the weights have 6 layers')\n%load_model bad __main__:crashing"),
    ("tb", "%tb"),
]
RAISES = {"mistake", "crash"}


def outputs(cell: Any, kind: str) -> list[Any]:
    return [out for out in cell.outputs if out.output_type == kind]


@pytest.mark.slow
def test_each_magic_shows_what_it_should_in_a_notebook(tmp_path: Path) -> None:
    notebook = nbformat.v4.new_notebook()
    for label, source in CELLS:
        cell = nbformat.v4.new_code_cell(source)
        if label in RAISES:
            cell.metadata["tags"] = ["raises-exception"]
        notebook.cells.append(cell)
    cells = dict(zip((label for label, _ in CELLS), execute_notebook(notebook, tmp_path).cells, strict=True))

    bare = cells["bare load"]
    assert outputs(bare, "execute_result") == [] and outputs(bare, "display_data") == []
    assert next(out.text for out in outputs(bare, "stream")).startswith("clf: Sequential on cpu")

    assigned = outputs(cells["assigned load"], "display_data")  # shown on purpose: the model's own reprs
    assert len(assigned) == 1 and assigned[0].data["text/plain"].startswith("Sequential(")
    assert outputs(cells["assigned load"], "execute_result") == []  # through the handle, so Out holds no model

    unload = cells["bare unload"]
    assert outputs(unload, "execute_result") == []
    shown = outputs(unload, "display_data")
    assert len(shown) == 1 and "released 1 model(s): clf" in shown[0].data["text/plain"]
    assert "<ul" in shown[0].data["text/html"]  # the rich report stays

    cleanup = cells["assigned cleanup"]
    assert outputs(cleanup, "execute_result") == [] and len(outputs(cleanup, "display_data")) == 1

    listing = outputs(cells["list"], "execute_result")
    assert len(listing) == 1 and "<table" in listing[0].data["text/html"]

    mistake = cells["mistake"]
    errors = outputs(mistake, "error")
    text = "".join(out.get("text", "") for out in outputs(mistake, "stream")) + "".join(
        "".join(out.traceback) for out in errors
    )
    assert text.strip().count("\n") == 0, text  # one line
    assert "UsageError: %load_model: loading 'bad' from demo:mlp: demo:mlp needs hidden >= 1" in text

    crash = outputs(cells["crash"], "error")
    assert len(crash) == 1 and crash[0].traceback == [
        "UsageError: %load_model: loading 'bad' from __main__:crashing failed: ValueError: "
        "the weights have 6 layers (%tb shows the traceback)"
    ]
    traceback = "\n".join(line for out in outputs(cells["tb"], "error") for line in out.traceback)
    traceback = re.sub(r"\x1b\[[0-9;]*m", "", traceback)  # without colours
    assert "Traceback (most recent call last)" in traceback and "in crashing()" in traceback
    assert "raise ValueError('the weights have 6 layers')" in traceback
