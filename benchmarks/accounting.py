"""Accounting of models as users have them: composites of many parts, quantized models, mapped weights.

- ``list()`` of 100 such models (half of them pipelines of 10 parts, half quantized) stays under a millisecond;
- each size is the bytes its storages (and packed weights) really hold, within 2%;
- what an unload claims as freed is what RSS gave back, within 5% of the model's size, once the bytes mapped
  from a file (which no unload gives back) are set apart.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import tempfile
import warnings
from typing import Any

from benchmarks.common import Figure, median_seconds, pick

MB = 2**20
PARTS = 10


class Pipeline:
    """A diffusers-like object: not a module, ``PARTS`` models as attributes."""

    def __init__(self, side: int) -> None:
        import torch

        for index in range(PARTS):
            setattr(self, f"part{index}", torch.nn.Linear(side, side, bias=False))


def quantized(side: int) -> Any:
    import torch
    from torch import nn

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = nn.Sequential(nn.Linear(side, side), nn.ReLU(), nn.Linear(side, side))
        return torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)


def held_bytes(model: Any) -> int:
    """What a model's storages hold, counted independently: parts' tensors, state_dict() for packed weights."""
    import torch

    seen: dict[int, int] = {}
    modules = [model] if isinstance(model, torch.nn.Module) else list(vars(model).values())
    for module in modules:
        for value in module.state_dict().values():
            for tensor in value if isinstance(value, tuple) else (value,):
                if isinstance(tensor, torch.Tensor):
                    storage = tensor.untyped_storage()
                    weight = tensor.dtype.itemsize if tensor.is_quantized else tensor.element_size()
                    seen[storage.data_ptr()] = tensor.numel() * weight
    return sum(seen.values())


def list_latency() -> list[Figure]:
    from nbmodels.core import ModelManager

    count = pick(100, 6)
    mgr = ModelManager()
    side = pick(256, 32)
    for index in range(count):
        mgr.load(f"m{index}", (lambda: Pipeline(side)) if index % 2 else (lambda: quantized(side)))
    mgr.list()  # measured once at load; later calls only check that nothing changed
    seconds = median_seconds(mgr.list, repeat=pick(9, 3), number=pick(50, 3))
    errors = []
    for info in mgr.list():
        model = mgr.get(info.name)
        errors.append(abs((info.total_bytes or 0) - held_bytes(model)) / held_bytes(model))
        del model
    mgr.cleanup()
    return [
        Figure(
            f"list() of {count} composite and quantized models",
            seconds * 1e3,
            "ms",
            target=1.0,
            note=f"half pipelines of {PARTS} Linear parts, half quantize_dynamic'd MLPs",
        ),
        Figure(
            "size against the bytes its storages hold (worst model)",
            max(errors),
            "fraction",
            target=0.02,
            note="packed weights counted as state_dict() unpacks them, at their packed dtype",
        ),
    ]


FREED = """
import json, sys, gc
import torch
from nbmodels.core import ModelManager
from benchmarks.accounting import Pipeline
mgr = ModelManager()
kind, arg = sys.argv[1], sys.argv[2]
if kind == "pipeline":
    mgr.load("m", lambda: Pipeline(int(arg)))
else:
    mgr.load("m", arg)
info = mgr.info("m")
gc.collect()
report = mgr.unload("m")
print(json.dumps({"total": info.total_bytes, "mapped": info.mapped_bytes, "freed": report.freed_total,
                  "rss": report.rss_freed, "not_freed": report.not_freed}))
"""


def _freed(kind: str, arg: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", FREED, kind, arg],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    if done.returncode:
        raise RuntimeError(done.stderr[-2000:])
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def freed_against_rss() -> list[Figure]:
    side = pick(2048, 256)  # 10 parts of 16 MiB: 160 MiB
    pipeline = _freed("pipeline", str(side))
    figures = [
        Figure(
            f"freed against RSS given back, a pipeline of {PARTS} parts",
            abs(pipeline["freed"] - pipeline["rss"]) / pipeline["total"],
            "fraction",
            target=0.05,
            note=f"{pipeline['total'] / MB:.0f} MiB; claimed {pipeline['freed'] / MB:.1f} MiB, "
            f"RSS fell {pipeline['rss'] / MB:.1f} MiB",
        )
    ]
    try:
        import transformers
    except ImportError:
        return figures
    with tempfile.TemporaryDirectory() as folder:
        config = transformers.BertConfig(
            vocab_size=8000,
            hidden_size=pick(512, 128),
            num_hidden_layers=4,
            num_attention_heads=4,
            intermediate_size=pick(2048, 256),
        )
        transformers.BertModel(config).save_pretrained(folder)
        gc.collect()
        mapped = _freed("folder", folder)
    figures.append(
        Figure(
            "freed against RSS given back, a BERT mapped from model.safetensors",
            abs(mapped["freed"] - mapped["rss"]) / mapped["total"],
            "fraction",
            target=0.05,
            note=f"{mapped['total'] / MB:.1f} MiB, {mapped['mapped'] / MB:.1f} MiB of it mapped and not claimed; "
            f"claimed {mapped['freed'] / MB:.1f} MiB, RSS fell {mapped['rss'] / MB:.1f} MiB",
        )
    )
    return figures


def run() -> list[Figure]:
    return [*list_latency(), *freed_against_rss()]


if __name__ == "__main__":
    from benchmarks.__main__ import main

    sys.exit(main(["accounting", *sys.argv[1:]]))
