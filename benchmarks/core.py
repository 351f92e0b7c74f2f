"""Core figures: what the manager costs on top of the work it manages, and what it gives back.

Every model here is a real torch module (``demo:mlp``, ``demo:transformer``) built on the
CPU; the loader's work is the real work of building and initialising the weights. Loads
that set up a measurement are never part of it.
"""

from __future__ import annotations

import gc
import json
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from benchmarks.common import Figure, median_seconds, percentile, pick
from nbmodels.core import ModelManager, demo, memory

ROOT = Path(__file__).resolve().parent.parent
MB = 1024 * 1024


def _settle() -> None:
    """Give freed memory back between rounds, outside any timing, so each round starts alike."""
    gc.collect()
    memory.trim_heap()


def load_overhead() -> Figure:
    """``mgr.load`` against calling the same loader directly, alternating which goes first."""
    size_mb = pick(400, 20)
    pairs = pick(8, 2)
    mgr = ModelManager()

    def managed() -> float:
        started = time.perf_counter()
        mgr.load("big", "demo:mlp", size_mb=size_mb)
        seconds = time.perf_counter() - started
        mgr.unload("big")
        _settle()
        return seconds

    def direct() -> float:
        started = time.perf_counter()
        model = demo.mlp(size_mb=size_mb)
        seconds = time.perf_counter() - started
        del model
        _settle()
        return seconds

    managed(), direct()  # warm-up: first-touch page faults and imports, not counted
    ratios, managed_s, direct_s = [], [], []
    for i in range(pairs):
        if i % 2 == 0:
            a = managed()
            b = direct()
        else:
            b = direct()
            a = managed()
        managed_s.append(a)
        direct_s.append(b)
        ratios.append(a / b)
    return Figure(
        "load() / direct loader call",
        statistics.median(ratios),
        "ratio",
        target=1.02,
        note=(
            f"demo:mlp {size_mb} MB, {pairs} alternating pairs (ratios {min(ratios):.3f} to {max(ratios):.3f}); "
            f"median load {statistics.median(managed_s) * 1e3:.0f} ms, "
            f"direct {statistics.median(direct_s) * 1e3:.0f} ms"
        ),
    )


def load_overhead_absolute() -> Figure:
    """What ``mgr.load`` adds to a loader, in time: a tiny model, so the loader's noise is small."""
    pairs = pick(200, 10)
    mgr = ModelManager()
    differences = []
    for i in range(pairs):
        started = time.perf_counter()
        if i % 2 == 0:
            mgr.load("tiny", "demo:mlp")
            between = time.perf_counter()
            demo.mlp()
            managed, direct = between - started, time.perf_counter() - between
        else:
            demo.mlp()
            between = time.perf_counter()
            mgr.load("tiny", "demo:mlp")
            direct, managed = between - started, time.perf_counter() - between
        mgr.unload("tiny")
        differences.append(managed - direct)
    return Figure(
        "load() time added to the loader",
        statistics.median(differences) * 1e3,
        "ms",
        note=f"demo:mlp default size (85k parameters), {pairs} alternating pairs; measuring, accounting, events",
    )


def get_latency() -> Figure:
    """``get()`` of a loaded model: lock, lookup, use count."""
    mgr = ModelManager()
    mgr.load("small", "demo:mlp")
    calls = pick(100_000, 2_000)
    seconds = median_seconds(partial(mgr.get, "small"), repeat=pick(9, 3), number=calls)
    mgr.cleanup()
    return Figure("get() of a loaded model", seconds * 1e6, "µs", target=2.0, note=f"{calls:,} calls per round")


def _footprints(models: list[Any]) -> list[memory.Footprint]:
    """The naive way to describe every model as it is now: measure each one again."""
    return [memory.footprint(model) for model in models]


def _bert_shaped(seed: int) -> Any:
    """A model with the structure of BERT-base (12 encoder layers, ~200 parameter tensors), small widths."""
    return demo.transformer(layers=12, d_model=32, heads=2, vocab=1000, seed=seed)


def list_latency() -> list[Figure]:
    """``list()`` of many models with the structure of real ones, each described as it is now.

    Every round follows a ``get()`` of every model, so each row is built afresh.
    In every other round one model was converted (``.half()``/``.float()``) just
    before: ``list()`` must notice it and measure that one again (the second
    figure). The note gives what measuring every model on each call would cost.
    """
    count = pick(100, 10)
    mgr = ModelManager()
    names = [f"m{i:03d}" for i in range(count)]
    for i, name in enumerate(names):
        mgr.load(name, _bert_shaped, seed=i)
    tensors = len(memory.tensors_of(mgr.get(names[0])))
    rounds = pick(60, 4)
    plain, converted, noticed = [], [], 0
    for round_ in range(rounds):
        for name in names:  # a use changes what list() reports, so each row is built afresh
            mgr.get(name)
        target = round_ // 2 % count
        if round_ % 2:
            model = mgr.get(target_name := names[target])
            dtype = "float16" if str(next(model.parameters()).dtype) == "torch.float32" else "float32"
            model.half() if dtype == "float16" else model.float()
            del model
        started = time.perf_counter()
        listed = mgr.list()
        (converted if round_ % 2 else plain).append(time.perf_counter() - started)
        if round_ % 2:
            noticed += listed[target].dtypes == (dtype,) and listed[target].name == target_name
    if noticed != len(converted):
        raise RuntimeError(f"list() missed a conversion in {len(converted) - noticed} of {len(converted)} rounds")
    warm = median_seconds(mgr.list, repeat=pick(9, 3), number=pick(200, 5))
    models = [mgr.get(name) for name in names]
    naive = median_seconds(partial(_footprints, models), repeat=pick(5, 2))
    models.clear()
    mgr.cleanup()
    shape = f"12-layer transformers, {tensors} tensors each"
    return [
        Figure(
            f"list() with {count} models",
            statistics.median(plain) * 1e3,
            "ms",
            target=1.0,
            note=(
                f"{shape}; every row rebuilt; {warm * 1e3:.3f} ms when nothing changed since the last list(); "
                f"measuring every model on each call instead: {naive * 1e3:.1f} ms"
            ),
        ),
        Figure(
            f"list() with {count} models, one converted since the last",
            statistics.median(converted) * 1e3,
            "ms",
            note=f"{shape}; the converted model measured again, its new dtype listed in {noticed}/{len(converted)}",
        ),
    ]


def release_latency(count: int | None) -> Figure:
    """``unload()`` of one model (``count`` None) or ``cleanup()`` of ``count`` models that
    nothing else holds; their loads are not timed."""
    size_mb = pick(50, 5)
    rounds = pick(9, 2) if count is None else pick(5, 2)
    mgr = ModelManager()
    times, gc_runs, freed = [], 0, []
    for _ in range(rounds):
        for i in range(count or 1):
            mgr.load(f"m{i}", "demo:mlp", size_mb=size_mb, seed=i)  # the returned model is dropped at once
        started = time.perf_counter()
        report = mgr.unload("m0") if count is None else mgr.cleanup()
        times.append(time.perf_counter() - started)
        gc_runs += report.gc_collected
        freed.append(report.freed_total)
        if not report.ok or len(report.released) != (count or 1):
            raise RuntimeError(f"the models were not all released: {report.lines()}")
    return Figure(
        f"unload() of a {size_mb} MB model" if count is None else f"cleanup() of {count} x {size_mb} MB models",
        statistics.median(times) * 1e3,
        "ms",
        target=5.0 if count is None else 150.0,
        note=f"gc pass in {gc_runs}/{rounds} rounds; {statistics.median(freed) / MB:.0f} MiB accounted each time",
    )


def _working_loader(seconds: float, build: Callable[..., Any]) -> Any:
    """A loader that really works for ``seconds``: it builds and initialises torch models."""
    deadline = time.perf_counter() + seconds
    builds = 0
    while True:
        model = build(size_mb=8, seed=builds)
        builds += 1
        if time.perf_counter() >= deadline:
            return model


def list_during_load(build: Callable[..., Any], *, target: float | None, what: str) -> Figure:
    """p99 of ``list()`` calls while another thread's load of another model runs.

    The figure times the call itself: it shows that the load's lock never blocks
    ``list()``. The note adds what the caller waited from the end of a 1 ms sleep to the
    result: being scheduled again and getting the GIL back from the loader's thread,
    which depends on the machine and the loader, not on the manager.
    """
    load_seconds = pick(2.0, 0.3)
    runs = pick(3, 1)
    interval = 0.001
    mgr = ModelManager()
    for i in range(10):
        mgr.load(f"m{i}", "demo:mlp", seed=i)
    call_p99s, wake_p99s, worst_call, worst_wake, samples = [], [], 0.0, 0.0, 0
    for _ in range(runs):
        thread = threading.Thread(target=mgr.load, args=("slow", partial(_working_loader, load_seconds, build)))
        thread.start()
        while "slow" not in mgr.loading() and thread.is_alive():
            time.sleep(0.0005)
        calls, wakes = [], []
        while "slow" in mgr.loading():
            asked = time.perf_counter()
            time.sleep(interval)
            called = time.perf_counter()
            mgr.list()
            done = time.perf_counter()
            calls.append(done - called)
            wakes.append(max(done - asked - interval, 0.0))
        thread.join(timeout=60)
        if thread.is_alive() or "slow" not in mgr:
            raise RuntimeError("the slow load did not finish")
        mgr.unload("slow")
        call_p99s.append(percentile(calls, 0.99))
        wake_p99s.append(percentile(wakes, 0.99))
        worst_call, worst_wake = max(worst_call, *calls), max(worst_wake, *wakes)
        samples += len(calls)
    mgr.cleanup()
    return Figure(
        f"list() p99 during a {load_seconds:g} s load{what}",
        statistics.median(call_p99s) * 1e3,
        "ms",
        target=target,
        note=(
            f"{samples} calls, worst {worst_call * 1e3:.2f} ms; from waking to result "
            f"(scheduler + GIL, switch interval {sys.getswitchinterval() * 1e3:g} ms): "
            f"p99 {statistics.median(wake_p99s) * 1e3:.2f} ms, worst {worst_wake * 1e3:.1f} ms"
        ),
    )


def _rss_probe(sizes: list[tuple[str, float]]) -> dict[str, Any]:
    """In a fresh process: load the models, clean up, and compare RSS with the accounted bytes."""
    mgr = ModelManager()
    for kind in ("mlp", "transformer"):  # import torch and set up the demo classes before the baseline
        mgr.load(f"warm-{kind}", f"demo:{kind}")
    mgr.cleanup()
    baseline = memory.process_rss()
    for i, (kind, size_mb) in enumerate(sizes):
        mgr.load(f"m{i}", f"demo:{kind}", size_mb=size_mb, seed=i)
    report = mgr.cleanup()
    return {
        "accounted": report.freed_total,
        "rss_freed": report.rss_freed,
        "rss_left": report.rss_after - baseline,
        "gc": report.gc_collected,
        "ok": report.ok,
    }


def rss_given_back() -> Figure:
    """Fraction of the accounted bytes that the process RSS gives back after cleanup (fresh process)."""
    sizes = pick(
        [("mlp", 120.0), ("mlp", 80.0), ("transformer", 60.0), ("transformer", 40.0)],
        [("mlp", 10.0), ("transformer", 5.0)],
    )
    runs = pick(3, 1)
    code = f"import json; from benchmarks.core import _rss_probe; print(json.dumps(_rss_probe({sizes!r})))"
    fractions, accounted, rss_freed, rss_left = [], 0, 0, 0
    for _ in range(runs):
        done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise RuntimeError(f"the RSS probe failed ({done.returncode}): {done.stderr[-2000:]}")
        result = json.loads(done.stdout.strip().splitlines()[-1])
        if not result["ok"]:
            raise RuntimeError(f"cleanup left models alive in the probe: {result}")
        fractions.append(result["rss_freed"] / result["accounted"])
        accounted, rss_freed, rss_left = result["accounted"], result["rss_freed"], result["rss_left"]
    total_mb = sum(size for _, size in sizes)
    return Figure(
        "RSS given back / accounted bytes",
        statistics.median(fractions),
        "fraction",
        target=0.98,
        better=">=",
        note=f"fresh process, {runs} runs; {len(sizes)} models of ~{total_mb:g} MB: "
        f"{accounted / MB:.0f} MiB accounted, RSS fell {rss_freed / MB:.0f} MiB and ended "
        f"{rss_left / MB:+.0f} MiB from before the loads (last run)",
    )


def run() -> list[Figure]:
    return [
        load_overhead(),
        load_overhead_absolute(),
        get_latency(),
        *list_latency(),
        release_latency(None),
        release_latency(pick(10, 3)),
        list_during_load(demo.mlp, target=5.0, what=""),
        # Building a transformer runs much more Python (module set-up, deep copies): the list
        # then waits for the GIL, which the loader holds up to the switch interval at a time.
        list_during_load(demo.transformer, target=None, what=" (Python-heavy loader)"),
        rss_given_back(),
    ]


if __name__ == "__main__":
    from benchmarks.__main__ import main

    sys.exit(main(["core", *sys.argv[1:]]))
