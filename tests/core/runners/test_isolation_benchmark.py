"""The isolation benchmark runs and measures each figure (quick sizes: the harness, not the speed)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]

pytestmark = pytest.mark.slow


def test_quick_isolation_run_writes_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "isolation.json"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "isolation", "--quick", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    figures = {f["name"]: f for f in json.loads(out.read_text())["figures"]}
    for expected in ("round trip", "forward of", "new worker", "spare worker", "stop of a worker", "memory back /"):
        assert any(expected in name for name in figures), (expected, list(figures))
    assert any(name.startswith("Ray actor:") for name in figures)
    for figure in figures.values():
        assert math.isfinite(figure["value"]), figure
        if figure["unit"] in ("ms", "s", "ratio") and "added" not in figure["name"]:  # an added time may be < 0
            assert figure["value"] > 0, figure
    held = next(f for name, f in figures.items() if name.startswith("memory back / what the worker held"))
    if "cgroup charge" in held["name"]:  # exact where a memory cgroup could be made (the system-wide reading is noisy)
        assert held["value"] > 0.9, held
