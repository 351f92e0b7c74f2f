"""A Hugging Face model echoed in a fresh kernel, as notebook users have it: does ``--force`` free it?

Each round starts a real kernel (jupyter_client), loads a BERT classifier from a
folder saved by transformers itself (a path with a space, its notebook progress
bar on), echoes the model so that ``Out``, ``_``, ``_N`` and ``user_ns_hidden``
hold it, then runs ``%unload_model clf --force``. The model counts as freed when
a weak reference to its embedding weights is dead afterwards. This once failed
in every fresh kernel (a widget's dead ``weakref.proxy`` made the IPython finder fail).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import Figure, pick

ROUND = [
    "%load_ext nbmodels\nimport gc, json, time, weakref, nbmodels",
    "%load_model clf '{folder}'",
    "nbmodels.get_manager().get('clf')",
    "w = weakref.ref(nbmodels.get_manager().get('clf').bert.embeddings.word_embeddings.weight)",
    "started = time.perf_counter()\nreport = %unload_model clf --force\nseconds = time.perf_counter() - started",
    "gc.collect(); print(json.dumps({{'freed': w() is None, 'seconds': seconds}}))",
]


def _save(folder: Path) -> None:
    import torch
    import transformers

    config = transformers.BertConfig(
        vocab_size=8000, hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        transformers.BertForSequenceClassification(config).save_pretrained(str(folder))


def _round(folder: Path) -> dict[str, Any]:
    from nbmodels.ipython.kernels import kernel_manager

    printed: list[str] = []

    def collect(msg: dict[str, Any]) -> None:
        if msg["msg_type"] == "stream":
            printed.append(str(msg["content"]["text"]))

    manager = kernel_manager()
    manager.start_kernel(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={"HF_HUB_OFFLINE": "1"})
    client = manager.client()
    try:
        client.start_channels()
        client.wait_for_ready(timeout=120)
        for cell in ROUND:
            reply = client.execute_interactive(cell.format(folder=folder), timeout=300, output_hook=collect)
            if reply["content"]["status"] != "ok":
                raise RuntimeError(f"cell {cell!r} failed: {reply['content']}")
        return dict(json.loads(printed[-1].strip().splitlines()[-1]))
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


def run() -> list[Figure]:
    rounds = pick(10, 1)
    with tempfile.TemporaryDirectory() as where:
        folder = Path(where) / "tiny bert"
        _save(folder)
        started = time.perf_counter()
        results = [_round(folder) for _ in range(rounds)]
        elapsed = time.perf_counter() - started
    freed = sum(bool(r["freed"]) for r in results)
    note = f"{rounds} fresh kernels, {elapsed:.0f} s in all; BERT 4 layers from a folder, progress bars on"
    return [
        Figure("echoed Hugging Face model in a fresh kernel: freed by --force", freed, f"of {rounds}", rounds, ">="),
        Figure(
            "echoed Hugging Face model: %unload_model --force (median)",
            statistics.median(r["seconds"] for r in results) * 1000,
            "ms",
            150.0,
            note=note,
        ),
    ]


if __name__ == "__main__":
    from benchmarks.__main__ import main

    sys.exit(main(["hf_kernel", *sys.argv[1:]]))
