"""What ``%load_ext nbmodels`` adds to an IPython or kernel start, and that it imports no torch.

Starts with and without the extension alternate in the same run; a difference
is the median of the paired differences (run i with, minus run i without), so
noise from the rest of the machine hits both sides alike.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from typing import Any

from benchmarks.common import Figure, pick

TARGET_MS = 150.0

_SHELL = "from IPython.core.interactiveshell import InteractiveShell\nip = InteractiveShell.instance()\n"
_TIMED_LOAD = (
    "import sys, time\n"
    "from IPython import get_ipython\n"
    "started = time.perf_counter()\n"
    "get_ipython().run_line_magic('load_ext', 'nbmodels')\n"
    "print(time.perf_counter() - started, int(any(m == 'torch' or m.startswith('torch.') for m in sys.modules)))\n"
)


def _python(code: str) -> tuple[float, str]:
    """Wall seconds of ``python -c code`` (interpreter start included) and what it printed."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300)
    return time.perf_counter() - started, done.stdout


def _paired(with_ext: list[float], without: list[float]) -> tuple[float, str]:
    """Median paired difference in ms, and a note with both medians and their ratio."""
    difference = statistics.median(w - b for w, b in zip(with_ext, without, strict=True)) * 1000
    loaded, base = statistics.median(with_ext), statistics.median(without)
    return difference, f"{loaded * 1000:.0f} vs {base * 1000:.0f} ms, ratio {loaded / base:.2f}"


def ipython_start() -> list[Figure]:
    """Fresh processes: IPython shell start with and without ``%load_ext nbmodels``."""
    runs = pick(15, 2)
    without, with_ext, in_process, torch_loaded = [], [], [], []
    for _ in range(runs):
        without.append(_python(_SHELL)[0])
        seconds, out = _python(_SHELL + _TIMED_LOAD)
        with_ext.append(seconds)
        load, torch = out.split()
        in_process.append(float(load))
        torch_loaded.append(int(torch))
    difference, note = _paired(with_ext, without)
    return [
        Figure(
            "%load_ext nbmodels itself (fresh IPython, median)",
            statistics.median(in_process) * 1000,
            "ms",
            TARGET_MS,
            note=f"{runs} processes",
        ),
        Figure("IPython start: with %load_ext minus without", difference, "ms", TARGET_MS, note=note),
        Figure("torch imported by %load_ext nbmodels", float(max(torch_loaded)), "processes", 0.0),
    ]


def _kernel_start(first_cell: str) -> tuple[float, str]:
    """Seconds from starting a kernel to the reply of its first cell, and what the cell printed."""
    from nbmodels.ipython.kernels import kernel_manager

    printed: list[str] = []

    def collect(msg: dict[str, Any]) -> None:
        if msg["msg_type"] == "stream":
            printed.append(str(msg["content"]["text"]))

    manager = kernel_manager()
    started = time.perf_counter()
    manager.start_kernel(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = manager.client()
    try:
        client.start_channels()
        client.wait_for_ready(timeout=120)
        reply = client.execute_interactive(first_cell, timeout=120, output_hook=collect)
        elapsed = time.perf_counter() - started
        if reply["content"]["status"] != "ok":
            raise RuntimeError(f"the first cell failed: {reply['content']}")
        return elapsed, "".join(printed)
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


def kernel_start() -> list[Figure]:
    """Real kernels: start to first reply, the first cell loading the extension or doing nothing."""
    runs = pick(5, 1)
    without, with_ext, in_kernel = [], [], []
    for _ in range(runs):
        without.append(_kernel_start("pass")[0])
        seconds, out = _kernel_start(_TIMED_LOAD)
        with_ext.append(seconds)
        in_kernel.append(float(out.split()[0]))
    difference, note = _paired(with_ext, without)
    return [
        Figure(
            "%load_ext nbmodels inside a kernel (median)",
            statistics.median(in_kernel) * 1000,
            "ms",
            TARGET_MS,
            note=f"{runs} kernels",
        ),
        Figure("kernel start to first reply: with %load_ext minus without", difference, "ms", TARGET_MS, note=note),
    ]


def run() -> list[Figure]:
    return ipython_start() + kernel_start()


if __name__ == "__main__":
    for figure in run():
        verdict = {True: "ok", False: "MISSED", None: ""}[figure.meets_target]
        target = f"(target {figure.better} {figure.target:g})" if figure.target is not None else ""
        print(f"{figure.name}: {figure.value:.1f} {figure.unit} {target} {verdict}  {figure.note}")
