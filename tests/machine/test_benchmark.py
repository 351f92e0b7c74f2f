"""``make bench``'s machine module runs and measures what it says (quick mode: sizes shrunk)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_quick_machine_benchmark_writes_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "machine.json"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "machine", "--quick", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    data = json.loads(out.read_text())
    assert data["errors"] == {}
    figures = {f["name"]: f for f in data["figures"]}
    ps = next(f for name, f in figures.items() if name.startswith("python -m nbmodels ps with 2 kernels"))
    assert ps["target"] == 300.0 and ps["unit"] == "ms" and ps["value"] > 0
    for prefix in ("state file write added to a load", "state file write added to an unload"):
        figure = next(f for name, f in figures.items() if name.startswith(prefix))
        assert figure["target"] == 1.0 and math.isfinite(figure["value"])
    write = next(f for name, f in figures.items() if name.startswith("one state file write"))
    assert write["value"] > 0 and "bytes with one model" in write["note"]
