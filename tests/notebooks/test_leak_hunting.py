"""notebooks/leak-hunting.ipynb runs on a real kernel (nbclient): the naive way frees nothing, force frees the model."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.notebooks.running import execute, shown_by_source


def mib_back(text: str, label: str) -> float:
    found = re.search(rf"^{label}: (-?[\d.]+) MiB back", text, re.M)
    assert found is not None, text
    return float(found.group(1))


@pytest.mark.slow
def test_the_leak_hunting_notebook_frees_with_force_what_the_naive_way_cannot(tmp_path: Path) -> None:
    # A cell error fails the test, except in the cell tagged raises-exception.
    notebook = execute("leak-hunting.ipynb", tmp_path)
    shown = shown_by_source(notebook)
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
    assert "force removed 1 holder(s) of lm:\n  - del lm" in shown["helpers.CACHE = None\n%unload_model lm --force"]
    removed = shown[next(s for s in shown if s.startswith("for name, holders in report.removed"))]
    assert "clf: callback  button.on_click(predictor.<locals>.on_click, remove=True)" in removed
