"""The machine view: ``python -m nbmodels ps`` with 10 real kernels, and what publishing costs a load.

``ps`` is timed as a user runs it, a fresh ``python -m nbmodels ps`` process
(interpreter start and imports included), against 10 real Jupyter kernels:
7 with the extension and a model, 3 without. The state file's cost is measured
side by side in one process: the same load and unload on a manager that a
Publisher follows and on one that nothing follows, in alternating pairs; the
figure is the median difference per pair.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from benchmarks.common import Figure, median_seconds, pick
from nbmodels.core import ModelManager
from nbmodels.core.nvml import GpuReadings
from nbmodels.machine import scan
from nbmodels.machine.publisher import Publisher

KERNELS = 10
WITH_NBMODELS = 7


def _start_kernels(runtime: Path, count: int, with_nbmodels: int) -> list[object]:
    from nbmodels.ipython.kernels import KERNEL_NAME, kernel_manager_class

    managers = []
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(runtime)}
    for i in range(count):
        manager = kernel_manager_class()(
            kernel_name=KERNEL_NAME, connection_file=str(runtime / f"kernel-{uuid.uuid4()}.json")
        )
        with (runtime.parent / f"kernel-{i}.log").open("w") as log:  # read back if the kernel dies
            manager.start_kernel(
                env={**env, "JPY_SESSION_NAME": str(runtime.parent / f"notebook-{i}.ipynb")}, stdout=log, stderr=log
            )
        managers.append(manager)
    for i, manager in enumerate(managers):
        client = manager.client()
        client.start_channels()
        try:
            try:
                client.wait_for_ready(timeout=180)
            except RuntimeError as exc:
                output = (runtime.parent / f"kernel-{i}.log").read_text()[-2000:]
                raise RuntimeError(f"kernel {i} did not start: {exc}\n{output}") from None
            if i < with_nbmodels:
                code = f"%load_ext nbmodels\n%load_model m{i} demo:mlp --kw size_mb=2 seed={i}"
                reply = client.execute_interactive(code, timeout=180, output_hook=lambda msg: None)
                if reply["content"]["status"] != "ok":
                    raise RuntimeError(f"kernel {i} could not load its model: {reply['content']}")
        finally:
            client.stop_channels()
    return managers


def ps_figures() -> list[Figure]:
    count, with_nbmodels, rounds = pick(KERNELS, 2), pick(WITH_NBMODELS, 1), pick(15, 2)
    with tempfile.TemporaryDirectory(prefix="nbmodels-bench-") as tmp:
        runtime = Path(tmp) / "runtime"
        runtime.mkdir(mode=0o700)
        managers = _start_kernels(runtime, count, with_nbmodels)
        try:
            env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(runtime)}
            command = [sys.executable, "-m", "nbmodels", "ps"]
            first = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
            listed = [line for line in first.stdout.splitlines() if str(runtime.parent) in line or "notebook-" in line]
            if first.returncode != 0 or len(listed) < count:
                raise RuntimeError(f"ps listed {len(listed)} of {count} kernels:\n{first.stdout}{first.stderr}")
            floor = [sys.executable, "-c", "import nbmodels"]
            cli: list[float] = []
            startup: list[float] = []
            for i in range(rounds):  # alternating pairs: the machine's load weighs on both alike
                for run_list, argv in [(cli, command), (startup, floor)][:: 1 if i % 2 == 0 else -1]:
                    started = time.perf_counter()
                    subprocess.run(argv, env=env, capture_output=True, timeout=120, check=True)
                    run_list.append(time.perf_counter() - started)
            own = statistics.median(c - s for c, s in zip(cli, startup, strict=True))
            in_process = median_seconds(lambda: scan(runtime, gpus=GpuReadings()), repeat=rounds)
        finally:
            for manager in managers:
                manager.shutdown_kernel(now=True)  # type: ignore[attr-defined]
    return [
        Figure(
            f"python -m nbmodels ps with {count} kernels ({with_nbmodels} with nbmodels), whole command",
            statistics.median(cli) * 1000,
            "ms",
            300.0,
            note=f"median of {rounds} runs, interpreter start included",
        ),
        Figure(
            "  of which: python -c 'import nbmodels' (interpreter and imports)",
            statistics.median(startup) * 1000,
            "ms",
            note="the floor of any python -m nbmodels command",
        ),
        Figure(
            "  ps's own part: the command minus that floor, paired",
            own * 1000,
            "ms",
            note=f"median of {rounds} alternating pairs",
        ),
        Figure(f"scan() of the machine in-process, {count} kernels", in_process * 1000, "ms", note="no NVML here"),
    ]


def publish_cost() -> list[Figure]:
    """What the Publisher's state write adds to a load and to an unload, in alternating pairs."""
    pairs = pick(300, 20)
    with tempfile.TemporaryDirectory(prefix="nbmodels-bench-") as tmp:
        published, plain = ModelManager(), ModelManager()
        publisher = Publisher(published, directory=Path(tmp), serve=False)
        publisher.start()
        try:
            for mgr in (published, plain):  # warm-up: imports and first-touch page faults
                mgr.load("warm", "demo:mlp", size_mb=1)
                mgr.unload("warm")
            load_delta, unload_delta = [], []
            for i in range(pairs):
                timings: dict[str, tuple[float, float]] = {}
                order = [("published", published), ("plain", plain)]
                for key, mgr in order if i % 2 == 0 else reversed(order):
                    started = time.perf_counter()
                    mgr.load("m", "demo:mlp", size_mb=1, seed=i)
                    loaded = time.perf_counter()
                    mgr.unload("m")
                    timings[key] = (loaded - started, time.perf_counter() - loaded)
                load_delta.append(timings["published"][0] - timings["plain"][0])
                unload_delta.append(timings["published"][1] - timings["plain"][1])
            write = median_seconds(publisher.write, repeat=pick(15, 3), number=pick(200, 20))
            published.load("a", "demo:mlp", size_mb=1)
            publisher.write()
            written = publisher.path.stat().st_size
        finally:
            publisher.close()
            published.cleanup()
    return [
        Figure(
            "state file write added to a load (published minus not, paired)",
            statistics.median(load_delta) * 1000,
            "ms",
            1.0,
            note=f"median of {pairs} alternating pairs, 1 MB demo:mlp; a load writes twice (started, finished)",
        ),
        Figure(
            "state file write added to an unload (paired)",
            statistics.median(unload_delta) * 1000,
            "ms",
            1.0,
            note=f"median of {pairs} alternating pairs",
        ),
        Figure(
            "one state file write (Publisher.write)",
            write * 1000,
            "ms",
            note=f"atomic rename, {written} bytes with one model",
        ),
    ]


def run() -> list[Figure]:
    return [*ps_figures(), *publish_cost()]


if __name__ == "__main__":
    from benchmarks.__main__ import main

    sys.exit(main(["machine", *sys.argv[1:]]))
