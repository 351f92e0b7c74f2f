"""A pickled demo model loads back in another process (test_load_model.py checks torch.save of a handle)."""

from __future__ import annotations

import pickle
import subprocess
import sys

from nbmodels.core import demo


def test_a_pickled_demo_transformer_loads_in_a_fresh_process() -> None:
    """The class is found by name in a process that never built one."""
    data = pickle.dumps(demo.transformer(d_model=16, layers=1, vocab=50, max_len=8))
    code = "import pickle, sys\nm = pickle.loads(sys.stdin.buffer.read())\nprint(type(m).__name__, len(m.embed.weight))"
    done = subprocess.run([sys.executable, "-c", code], input=data, capture_output=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode().split() == ["DemoTransformer", "50"]
