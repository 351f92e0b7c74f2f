"""Isolated models: what a worker process (or a Ray actor) costs against the model in the kernel.

Side by side in one run, alternating which goes first: a call's round trip, a forward
pass, the start, and the stop with what came back. Every model is a real ``demo:mlp``.
"""

from __future__ import annotations

import gc
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import torch

from benchmarks.common import Figure, pick
from nbmodels.core import demo, memory, runners

MB = 1024 * 1024


def _settle() -> None:
    gc.collect()
    memory.trim_heap()


def _mean_call(call: Callable[[], object], number: int) -> float:
    started = time.perf_counter()
    for _ in range(number):
        call()
    return (time.perf_counter() - started) / number


def _calls(model: Callable[[Any], object], x: torch.Tensor, number: int) -> Callable[[], float]:
    """A round of ``number`` calls of ``model(x)``: returns the mean seconds per call."""
    return lambda: _mean_call(lambda: model(x), number)


def _paired(a: Callable[[], float], b: Callable[[], float], pairs: int) -> tuple[list[float], list[float]]:
    """Run ``a`` and ``b`` ``pairs`` times each, alternating which goes first."""
    first, second = [], []
    for i in range(pairs):
        if i % 2 == 0:
            first.append(a())
            second.append(b())
        else:
            second.append(b())
            first.append(a())
    return first, second


def round_trip() -> Figure:
    """A call with a tiny input (one row into the default demo MLP): worker minus in-process, per call."""
    remote = runners.start("process", "tiny", "demo:mlp", spare=False)
    local = demo.mlp()
    x = torch.randn(1, 64)
    number, pairs = pick(200, 20), pick(25, 3)
    for _ in range(number):  # warm both: first-call set-up, page faults
        remote(x)
        local(x)
    worker, kernel = _paired(_calls(remote, x, number), _calls(local, x, number), pairs)
    remote.stop()
    added = [w - k for w, k in zip(worker, kernel, strict=True)]
    return Figure(
        "call round trip added by a worker process (tiny input)",
        statistics.median(added) * 1e3,
        "ms",
        target=0.5,
        note=f"demo:mlp (85k parameters), a 1x64 input; {pairs} rounds of {number} calls; "
        f"median per call {statistics.median(worker) * 1e3:.3f} ms in the worker, "
        f"{statistics.median(kernel) * 1e3:.3f} ms in the kernel",
    )


def forward_ratio() -> Figure:
    """A forward pass of a 100 MB MLP on a batch of 64: worker over in-process."""
    size_mb = pick(100, 8)
    remote = runners.start("process", "mlp", "demo:mlp", kwargs={"size_mb": size_mb}, spare=False)
    local = demo.mlp(size_mb=size_mb)
    x = torch.randn(64, 64)
    with torch.no_grad():
        for _ in range(3):
            local(x)
            remote(x)
        number, pairs = pick(20, 3), pick(15, 3)
        worker, kernel = _paired(_calls(remote, x, number), _calls(local, x, number), pairs)
    remote.stop()
    ratios = [w / k for w, k in zip(worker, kernel, strict=True)]
    return Figure(
        f"forward of a {size_mb} MB MLP, batch 64: worker / in-process",
        statistics.median(ratios),
        "ratio",
        target=1.3,
        note=f"{pairs} alternating rounds of {number} calls; median {statistics.median(worker) * 1e3:.2f} ms "
        f"in the worker, {statistics.median(kernel) * 1e3:.2f} ms in the kernel",
    )


def start_times() -> list[Figure]:
    """Start in a worker (fresh, and from a spare) against loading the same 400 MB model in the kernel."""
    size_mb = pick(400, 20)
    rounds = pick(5, 1)
    pool = runners.spare_pool()
    kernel_s, fresh_s, spare_s = [], [], []

    def in_kernel() -> float:
        started = time.perf_counter()
        model = demo.mlp(size_mb=size_mb)
        seconds = time.perf_counter() - started
        del model
        _settle()
        return seconds

    def in_worker(spare: bool) -> float:
        if spare:
            pool.resize(1)
            if not pool.wait_ready(120):
                raise RuntimeError("the spare worker did not start")
        started = time.perf_counter()
        remote = runners.start("process", "big", "demo:mlp", kwargs={"size_mb": size_mb}, spare=spare)
        seconds = time.perf_counter() - started
        remote.stop()
        pool.resize(0)
        return seconds

    in_kernel()  # warm-up: imports, first-touch page faults
    for i in range(rounds):
        order = [("kernel", in_kernel), ("fresh", lambda: in_worker(False)), ("spare", lambda: in_worker(True))]
        for kind, measure in order[i % 3 :] + order[: i % 3]:
            {"kernel": kernel_s, "fresh": fresh_s, "spare": spare_s}[kind].append(measure())
    kernel_median = statistics.median(kernel_s)
    return [
        Figure(
            f"start in a new worker / load in the kernel, {size_mb} MB",
            statistics.median(fresh_s) / kernel_median,
            "ratio",
            note=f"{rounds} rounds; median {statistics.median(fresh_s):.2f} s in a new worker "
            f"(interpreter and torch start-up included), {kernel_median:.2f} s in the kernel",
        ),
        Figure(
            f"start from a spare worker, time added to a load in the kernel, {size_mb} MB",
            statistics.median(s - k for s, k in zip(spare_s, kernel_s, strict=True)),
            "s",
            target=0.2,
            note=f"{rounds} rounds; median {statistics.median(spare_s):.2f} s from a spare, {kernel_median:.2f} s in "
            "the kernel (the spare's own start is not counted: it happened before)",
        ),
    ]


class _MemoryCgroup:
    """A memory cgroup (v1) of our own that this process and the workers it starts are charged to.

    Its usage counts exactly what the workers hold, whatever the other users of the
    machine do; the system's MemAvailable moves by hundreds of MB a second on a shared
    machine. None where cgroups cannot be made (no permission, cgroup v2 only).
    """

    ROOT = Path("/sys/fs/cgroup/memory")

    def __init__(self) -> None:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
        home = next(line.split(":", 2)[2] for line in lines if line.split(":")[1] == "memory")
        self.parent = self.ROOT / home.lstrip("/")
        self.path = self.parent / f"nbmodels-bench-{os.getpid()}"

    @classmethod
    def make(cls) -> _MemoryCgroup | None:
        try:
            group = cls()
            group.path.mkdir()
            (group.path / "cgroup.procs").write_text(str(os.getpid()))
        except (OSError, StopIteration, IndexError):
            return None
        return group

    def usage(self) -> int:
        return int((self.path / "memory.usage_in_bytes").read_text())

    def close(self) -> None:
        (self.parent / "cgroup.procs").write_text(str(os.getpid()))
        for _ in range(50):
            try:
                self.path.rmdir()
                return
            except OSError:
                time.sleep(0.05)


def stop_figures() -> list[Figure]:
    """Stop a worker holding a 400 MB model: time until it is gone, and the memory that came back."""
    size_mb = pick(400, 20)
    rounds = pick(5, 1)
    group = _MemoryCgroup.make()
    seconds, by_charge, by_rss, charges, rss = [], [], [], [], []
    try:
        for _ in range(rounds):
            remote = runners.start("process", "big", "demo:mlp", kwargs={"size_mb": size_mb}, spare=False)
            time.sleep(0.2)
            before = group.usage() if group else int(psutil.virtual_memory().available)
            result = remote.stop()
            if not result.gone or result.before is None or not result.before.rss:
                raise RuntimeError(f"the worker did not go away: {result}")
            if group:  # read at once: the figure is "gone and its memory back" when stop() returns
                charge, back = before, before - group.usage()
            else:
                time.sleep(1.2)  # the system's counters fold once a second
                charge, back = result.before.private or 0, int(psutil.virtual_memory().available) - before
            seconds.append(result.seconds)
            by_charge.append(back / charge if charge else float("nan"))
            by_rss.append(back / result.before.rss)
            charges.append(charge)
            rss.append(result.before.rss)
    finally:
        if group:
            group.close()
    how = (
        "its memory cgroup's usage, read when stop() returned"
        if group
        else "the system's MemAvailable 1.2 s later (no cgroup could be made: noisy on a shared machine)"
    )
    held = "cgroup charge" if group else "private memory (USS)"
    return [
        Figure(
            f"stop of a worker holding {size_mb} MB: gone and its memory back",
            statistics.median(seconds),
            "s",
            target=1.0,
            note=f"{rounds} rounds; polite stop, then the process is checked gone (reaped, pid free)",
        ),
        Figure(
            f"memory back / what the worker held ({held})",
            statistics.median(by_charge),
            "fraction",
            target=0.99,
            better=">=",
            note=f"measured by {how}; median held {statistics.median(charges) / MB:.0f} MiB",
        ),
        Figure(
            "memory back / worker RSS before the stop",
            statistics.median(by_rss),
            "fraction",
            note=f"median RSS {statistics.median(rss) / MB:.0f} MiB; RSS also counts pages of the torch libraries "
            "that are shared or stay in the page cache (charged elsewhere), which no exit frees",
        ),
    ]


def ray_figures() -> list[Figure]:
    """Round trip and start of a model in a Ray actor on a local Ray (reported, no target)."""
    try:
        import ray
    except ImportError:
        return [Figure("Ray: not installed (pip install 'nbmodels[ray]')", float("nan"), "-")]
    started = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    init_s = time.perf_counter() - started
    starts: list[float] = []
    remote: Any = None
    for _ in range(pick(3, 1)):
        if remote is not None:
            remote.stop()
        started = time.perf_counter()
        remote = runners.start("ray", "tiny", "demo:mlp")
        starts.append(time.perf_counter() - started)
    x = torch.randn(1, 64)
    for _ in range(20):
        remote(x)
    number = pick(200, 20)
    trips = [_mean_call(lambda: remote(x), number) for _ in range(pick(9, 2))]
    stop = remote.stop()
    ray.shutdown()
    return [
        Figure(
            "Ray actor: call round trip (tiny input)",
            statistics.median(trips) * 1e3,
            "ms",
            note=f"local Ray (ray.init(num_cpus=2)); {number} calls a round",
        ),
        Figure(
            "Ray actor: start with the default demo:mlp",
            statistics.median(starts),
            "s",
            note=f"the local Ray's own start took {init_s:.1f} s first; stop {stop.seconds:.2f} s, gone: {stop.gone}",
        ),
    ]


def run() -> list[Figure]:
    torch.set_grad_enabled(True)
    return [round_trip(), forward_ratio(), *start_times(), *stop_figures(), *ray_figures()]


if __name__ == "__main__":
    from benchmarks.__main__ import main

    sys.exit(main(["isolation", *sys.argv[1:]]))
