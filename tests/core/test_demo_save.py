"""A demo model saves and loads back as users save models: torch.save of the whole module, pickle, a new process."""

from __future__ import annotations

import io
import pickle
import subprocess
import sys

import torch

from nbmodels.core import demo


def test_a_demo_transformer_round_trips_through_torch_save() -> None:
    model = demo.transformer(d_model=16, layers=1, vocab=50, max_len=8)
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    back = torch.load(buffer, weights_only=False)
    assert type(back) is type(model)
    assert torch.equal(back.embed.weight, model.embed.weight)
    assert back.head.weight is back.embed.weight  # tied weights stay tied


def test_a_pickled_demo_transformer_loads_in_a_fresh_process() -> None:
    """The class is found by name in a process that never built one (it is defined on first use)."""
    data = pickle.dumps(demo.transformer(d_model=16, layers=1, vocab=50, max_len=8))
    code = "import pickle, sys\nm = pickle.loads(sys.stdin.buffer.read())\nprint(type(m).__name__, len(m.embed.weight))"
    done = subprocess.run([sys.executable, "-c", code], input=data, capture_output=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode().split() == ["DemoTransformer", "50"]
