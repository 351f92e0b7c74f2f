"""The kernel shutdown hook with 10 models loaded: its own time, and what it adds to a graceful shutdown.

Real kernels (jupyter_client). jupyter_client sends SIGTERM 2.5 s after a
shutdown request, so the hook must finish well inside that; the target is 1 s.
The same shutdown without the extension runs alongside, so the difference is
what the hook costs.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from benchmarks.common import Figure, pick

MODELS = 10


def _shutdown(with_hook: bool, log: Path, size_mb: float) -> float:
    """Start a kernel, load MODELS demo models, and time ``shutdown_kernel(now=False)`` in seconds."""
    from nbmodels.ipython.kernels import kernel_manager

    if with_hook:
        setup = "%load_ext nbmodels\n" + "".join(
            f"%load_model m{i} demo:mlp --kw size_mb={size_mb} seed={i}\n" for i in range(MODELS)
        )
    else:  # the same models, held by the manager, without the extension's hooks
        setup = "import nbmodels\nmgr = nbmodels.get_manager()\n" + "".join(
            f"mgr.load('m{i}', 'demo:mlp', size_mb={size_mb}, seed={i})\n" for i in range(MODELS)
        )
    manager = kernel_manager()
    manager.start_kernel(
        env={**os.environ, "NBMODELS_SHUTDOWN_LOG": str(log)}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    client = manager.client()
    try:
        client.start_channels()
        client.wait_for_ready(timeout=120)
        reply = client.execute_interactive(setup, timeout=300, output_hook=lambda msg: None)
        if reply["content"]["status"] != "ok":
            raise RuntimeError(f"loading the models failed: {reply['content']}")
        client.stop_channels()
        started = time.perf_counter()
        manager.shutdown_kernel(now=False)
        return time.perf_counter() - started
    finally:
        client.stop_channels()
        if manager.has_kernel:
            manager.shutdown_kernel(now=True)


def run() -> list[Figure]:
    size_mb, runs = pick(20, 1), pick(3, 1)
    hook_seconds, with_hook, without = [], [], []
    with tempfile.TemporaryDirectory(prefix="nbmodels-bench-") as tmp:
        for i in range(runs):
            log = Path(tmp) / f"run{i}.jsonl"
            without.append(_shutdown(False, Path(tmp) / "unused.jsonl", size_mb))
            with_hook.append(_shutdown(True, log, size_mb))
            records = [json.loads(line) for line in log.read_text().splitlines()]
            if len(records) != 1 or len(records[0]["released"]) != MODELS:
                raise RuntimeError(f"expected one record releasing {MODELS} models, got {records}")
            hook_seconds.append(records[0]["seconds"])
    base, hooked = statistics.median(without), statistics.median(with_hook)
    return [
        Figure(
            f"shutdown hook releasing {MODELS} models ({MODELS * size_mb} MB), its own time",
            statistics.median(hook_seconds),
            "s",
            1.0,
            note=f"median of {runs} kernels",
        ),
        Figure(
            "graceful kernel shutdown: with the hook minus without",
            (hooked - base) * 1000,
            "ms",
            None,
            note=f"{hooked * 1000:.0f} vs {base * 1000:.0f} ms",
        ),
    ]


if __name__ == "__main__":
    for figure in run():
        verdict = {True: "ok", False: "MISSED", None: ""}[figure.meets_target]
        target = f"(target {figure.better} {figure.target:g})" if figure.target is not None else ""
        print(f"{figure.name}: {figure.value:.3f} {figure.unit} {target} {verdict}  {figure.note}")
