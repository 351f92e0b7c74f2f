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
    for removal in (
        "del cache['clf']  — the model",
        "losses[3] = None  — a tensor whose autograd graph holds its weights",
        "del metrics['last']",
        "del opt  — an optimizer over its parameters",
        "del Out[",
        "local 'm' of evaluate()",
        "remove the on_click callback #0 of button",
    ):
        assert removal in listing
    assert "del best  — the model, through best[0]; it also removes the tuple (<Sequential>, 0.93)" in listing
    assert "to remove it too: %unload_model clf --force --allow best" in listing

    forced = shown[next(s for s in shown if s.startswith("report = %unload_model clf --force --allow best"))]
    assert mib_back(forced, "force") >= 95
    assert "unrelated: {'lr': 0.1, 'epochs': 3} | cache: {'notes': 'best so far'} | losses: [" in forced
    assert ", None] | metrics: {'epochs': 0}" in forced  # the list keeps its floats and its length
    assert "button still here: Predict | Out is still a dict: dict" in forced

    blocked = shown[next(s for s in shown if "helpers.CACHE = mgr.load" in s)]
    assert "force cannot free it:\n    - helpers.CACHE: a global variable of module helpers" in blocked
    assert blocked.count("a global variable of module helpers") == 1  # said once, not again as a summary
    assert "force removed 1 holder(s) of lm:\n  - del lm" in shown["helpers.CACHE = None\n%unload_model lm --force"]
    removed = shown[next(s for s in shown if s.startswith("for name, actions in report.removed"))]
    assert "clf: callback  remove the on_click callback #0 of button" in removed
    assert "clf: item      losses[3] = None" in removed
