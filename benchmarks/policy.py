"""Memory-policy figures: what deciding, evicting and keeping time cost, against doing the work directly.

Real torch models on the CPU, budgets in bytes. Every figure is a median over rounds of one run, or a
difference of medians measured side by side in it; nothing here is a single timing.
"""

from __future__ import annotations

import gc
import statistics
import sys
import threading
import time
from functools import partial
from typing import Any

from benchmarks.common import Figure, median_seconds, pick
from nbmodels.core import ModelManager, demo, memory

MB = 1024 * 1024


def _settle() -> None:
    gc.collect()
    memory.trim_heap()


def _bert_shaped(seed: int) -> Any:
    """The structure of BERT-base (12 layers, ~200 tensors), small widths: what list() is measured with too."""
    return demo.transformer(layers=12, d_model=32, heads=2, vocab=1000, seed=seed)


def eviction_decision() -> Figure:
    """The decision alone (budgets, usage, candidates, who leaves) with 100 real models loaded."""
    count = pick(100, 10)
    mgr = ModelManager()
    for i in range(count):
        mgr.load(f"m{i:03d}", _bert_shaped, seed=i)
    for i in range(0, count, 3):  # uses spread over the models, so the order is not the loading order
        mgr.get(f"m{i:03d}")
    each = mgr.info("m000").total_bytes or 0
    total = sum(info.total_bytes or 0 for info in mgr.list())
    mgr.set_max_memory({"cpu": total + each // 2})
    need = {"cpu": each}
    plan = mgr._plan(need, exclude="new")[0]
    if not plan.fits or len(plan.evictions) != 1:
        raise RuntimeError(f"the decision should evict one model: {plan}")
    seconds = median_seconds(partial(mgr._plan, need, exclude="new"), repeat=pick(15, 3), number=pick(200, 5))
    mgr.set_max_memory(None)
    mgr.cleanup()
    return Figure(
        f"eviction decision with {count} models loaded",
        seconds * 1e3,
        "ms",
        target=1.0,
        note=f"12-layer transformers; budget one model short; the least recently used of {count} chosen",
    )


def evicting_load() -> list[Figure]:
    """A load that must evict one model, against the load alone plus the unload alone, in alternating rounds."""
    size_mb = pick(50, 5)
    rounds = pick(11, 3)
    mgr = ModelManager()
    mgr.load("probe", "demo:mlp", size_mb=size_mb)
    one = mgr.info("probe").total_bytes or 0
    mgr.cleanup()
    _settle()
    budgeted, alone, factory = [], [], []

    def with_budget(source: Any) -> float:
        mgr.set_max_memory({"cpu": int(1.5 * one)})
        mgr.load("old", "demo:mlp", size_mb=size_mb, seed=1)
        _settle()
        started = time.perf_counter()
        mgr.load("new", source, **({"size_mb": size_mb, "seed": 2} if source == "demo:mlp" else {}))
        seconds = time.perf_counter() - started
        if "old" in mgr or "new" not in mgr:
            raise RuntimeError("the load under the budget did not evict")
        mgr.cleanup()
        mgr.set_max_memory(None)
        _settle()
        return seconds

    def without_budget() -> float:
        mgr.load("old", "demo:mlp", size_mb=size_mb, seed=1)
        _settle()
        started = time.perf_counter()
        mgr.unload("old")
        mgr.load("new", "demo:mlp", size_mb=size_mb, seed=2)
        seconds = time.perf_counter() - started
        mgr.cleanup()
        _settle()
        return seconds

    build = partial(demo.mlp, size_mb=size_mb, seed=2)
    with_budget("demo:mlp"), without_budget()  # warm-up
    for i in range(rounds):
        pair = [lambda: budgeted.append(with_budget("demo:mlp")), lambda: alone.append(without_budget())]
        for step in pair if i % 2 == 0 else reversed(pair):
            step()
        factory.append(with_budget(build))
    difference = (statistics.median(budgeted) - statistics.median(alone)) * 1e3
    return [
        Figure(
            "a load that must evict, minus the unload and the load alone",
            difference,
            "ms",
            target=5.0,
            note=(
                f"demo:mlp {size_mb} MB evicting another of {size_mb} MB (size known beforehand: evicted first); "
                f"{rounds} alternating rounds: {statistics.median(budgeted) * 1e3:.1f} ms against "
                f"{statistics.median(alone) * 1e3:.1f} ms"
            ),
        ),
        Figure(
            "the same, size unknown (a factory: load, then evict), minus the unload and the load alone",
            (statistics.median(factory) - statistics.median(alone)) * 1e3,
            "ms",
            note=f"{statistics.median(factory) * 1e3:.1f} ms; both models are in memory for a moment",
        ),
    ]


def timer_wakeups() -> list[Figure]:
    """The keep-alive thread while no deadline is due (an hour away), with uses all the time: it must sleep."""
    seconds = pick(10.0, 1.0)
    mgr = ModelManager()
    mgr.load("kept", "demo:mlp", keep_alive="1h")
    mgr.load("other", "demo:mlp", keep_alive="2h", seed=1)
    before = mgr._timer.wakeups
    deadline = time.monotonic() + seconds
    uses = 0
    while time.monotonic() < deadline:
        mgr.get("kept")
        mgr.mark_used("other")
        with mgr.using("kept"):
            uses += 3
    wakes = mgr._timer.wakeups - before
    lateness = []
    for i in range(pick(7, 2)):
        done = threading.Event()
        unsubscribe = mgr.subscribe(lambda event, done=done: done.set() if event.kind == "expired" else None)
        started = time.time()
        mgr.load(f"brief{i}", "demo:mlp", keep_alive=0.2)
        if not done.wait(30):
            raise RuntimeError("keep-alive never unloaded the model")
        lateness.append(time.time() - started - 0.2)
        unsubscribe()
    mgr.cleanup()
    return [
        Figure(
            f"keep-alive timer wake-ups in {seconds:g} s with no deadline due",
            wakes,
            "wake-ups",
            target=0,
            note=f"{uses:,} uses meanwhile (get, handle uses, calls); the next deadline an hour away",
        ),
        Figure(
            "keep-alive: unloaded after its deadline by",
            statistics.median(lateness) * 1e3,
            "ms",
            note=f"keep_alive 0.2 s, {len(lateness)} models; from the deadline to the expired event",
        ),
    ]


def get_with_policy() -> Figure:
    """``get()`` with a budget, a model-count limit, keep-alive and an open use scope (a running cell),
    alternating with ``get()`` from a manager without any of it."""
    calls = pick(100_000, 2_000)
    plain = ModelManager()
    plain.load("small", "demo:mlp")
    mgr = ModelManager()
    mgr.set_max_memory({"cpu": "8GiB"})
    mgr.max_loaded_models = 10
    mgr.load("small", "demo:mlp", keep_alive="30m")
    scope = mgr.use_scope()
    scope.open()
    with_policy, without = [], []
    for _ in range(pick(9, 3)):
        with_policy.append(median_seconds(partial(mgr.get, "small"), repeat=1, number=calls))
        without.append(median_seconds(partial(plain.get, "small"), repeat=1, number=calls))
    scope.close()
    mgr.cleanup()
    plain.cleanup()
    return Figure(
        "get() with the policy on",
        statistics.median(with_policy) * 1e6,
        "µs",
        target=2.0,
        note=f"{calls:,} calls per round; budget, max_loaded_models, keep-alive, a use scope open; "
        f"without any policy, alternating: {statistics.median(without) * 1e6:.2f} µs",
    )


def run() -> list[Figure]:
    return [eviction_decision(), *evicting_load(), *timer_wakeups(), get_with_policy()]


if __name__ == "__main__":
    from benchmarks.__main__ import main

    sys.exit(main(["policy", *sys.argv[1:]]))
