"""A local Ray that nbmodels starts listens on loopback only (it used to listen on every interface).

Run in a process of its own, like the other Ray tests: ray stays out of the main test process.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]

pytestmark = pytest.mark.slow


def test_a_local_ray_started_by_nbmodels_listens_on_loopback_only() -> None:
    pytest.importorskip("ray", reason="ray is not installed: pip install 'nbmodels[ray]'")
    done = subprocess.run(
        [sys.executable, str(HERE / "ray_loopback_case.py")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**__import__("os").environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["works"] is True
    assert result["listening"], "no listening socket found: the check itself is broken"
    assert set(result["listening"]) <= {"127.0.0.1", "::1", "::ffff:127.0.0.1"}, result["listening"]
    assert result["token_mode"] in (None, "0o600")  # Ray's cluster token, when it writes one, is the user's only
