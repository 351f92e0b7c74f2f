"""The panel benchmark runs in quick mode and writes its figures (speed itself lives in ``make bench``)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.test_benchmarks import bench


@pytest.mark.slow
def test_quick_panel_run_writes_its_figures(tmp_path: Path) -> None:
    out = tmp_path / "panel.json"
    done = bench("panel", "--quick", "--json", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    data = json.loads(out.read_text())
    assert data["errors"] == {}
    names = [f["name"] for f in data["figures"]]
    assert names == [
        "time 5 shown panels add to a load+unload",
        "time 5 forgotten panels add to a load+unload",
        "one live refresh of a panel (timer tick), 10 models",
    ]
    for figure in data["figures"]:
        assert figure["module"] == "panel" and figure["unit"] == "ms"
        assert math.isfinite(figure["value"]), figure
