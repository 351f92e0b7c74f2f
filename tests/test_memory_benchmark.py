"""The %memory benchmark measures something real: a quick run in a heavy session names every live tensor byte.

Only that it runs and what it attributes are checked here; its timings live in ``make bench``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.test_benchmarks import bench


@pytest.mark.slow
def test_quick_memory_heavy_run_names_every_tensor_byte(tmp_path: Path) -> None:
    out = tmp_path / "memory.json"
    done = bench("memory_heavy", "--quick", "--json", str(out), timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    data = json.loads(out.read_text())
    assert data["errors"] == {}
    figures = {f["name"]: f for f in data["figures"]}
    named = figures["heavy notebook: live tensor bytes %memory names"]
    assert named["value"] >= 0.99 and named["meets_target"] is True
    for name in ("%memory ÷ one gc.collect()", "%memory --diff ÷ one gc.collect()"):
        assert figures[name]["value"] > 0 and figures[name]["target"] == 1.0
