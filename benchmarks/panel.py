"""Panel figures: what panels cost the thread that loads and unloads a model, and what a live tick costs.

A panel that follows the manager re-renders on every event, on the thread that made the change.
Before panels could doze, every panel ever created followed for the rest of the kernel's life, so
five forgotten panels cost what five shown ones cost. The figures compare, in one run, a load plus
unload of a small real model with no panel, with five panels shown (following), and with five
panels whose views are gone (the front end's view count back to 0, as after a cleared output or a
re-run cell). Outside a kernel the widgets' comms are ipywidgets' dummy ones: the figures count the
panel's own work, not the front end's.
"""

from __future__ import annotations

import gc
import statistics
import threading
import time
from collections.abc import Callable

from benchmarks.common import Figure, median_seconds, pick
from nbmodels.core import ModelManager

PANELS = 5


def _cycle(mgr: ModelManager) -> float:
    started = time.perf_counter()
    mgr.load("m", "demo:mlp", hidden=8)
    mgr.unload("m")
    return time.perf_counter() - started


def _paired(mgr: ModelManager, setup: Callable[[], Callable[[], None]], pairs: int) -> tuple[float, float]:
    """Median added seconds per load+unload (with the panels set up minus without), alternating the order."""
    added, base = [], []
    for i in range(pairs):
        if i % 2 == 0:
            bare = _cycle(mgr)
            teardown = setup()
            with_panels = _cycle(mgr)
            teardown()
        else:
            teardown = setup()
            with_panels = _cycle(mgr)
            teardown()
            bare = _cycle(mgr)
        added.append(with_panels - bare)
        base.append(bare)
        gc.collect()
    return statistics.median(added), statistics.median(base)


def _quiet() -> None:
    """Wait until no panel reads the machine in the background (paused and closed sections end their thread)."""
    for thread in threading.enumerate():
        if thread.name.startswith("nbmodels-machine-"):
            thread.join(timeout=30)


def _panels(mgr: ModelManager, *, shown: bool) -> Callable[[], Callable[[], None]]:
    from nbmodels.widgets.panel import ModelPanel

    def setup() -> Callable[[], None]:
        panels = [ModelPanel(mgr, cuda_devices=0, refresh_interval=0) for _ in range(PANELS)]
        for panel in panels:
            panel.set_state({"_view_count": 1})  # what the front end says when it draws a view
            if not shown:
                panel.set_state({"_view_count": 0})  # ... and when the last view is gone

        if not shown:  # a forgotten panel has long finished what showing it started (its machine reading)
            _quiet()

        def teardown() -> None:
            for panel in panels:
                panel.close()
            _quiet()  # the next bare cycle must not share the CPU with a machine reading still running

        return teardown

    return setup


def follower_cost() -> list[Figure]:
    pairs = pick(15, 3)
    mgr = ModelManager()
    _cycle(mgr)  # warm-up: imports, first-touch
    shown, base = _paired(mgr, _panels(mgr, shown=True), pairs)
    forgotten, _ = _paired(mgr, _panels(mgr, shown=False), pairs)
    note = f"load+unload of demo:mlp hidden=8 ({base * 1e3:.2f} ms bare), {pairs} alternating pairs"
    return [
        Figure(f"time {PANELS} shown panels add to a load+unload", shown * 1e3, "ms", note=note),
        Figure(
            f"time {PANELS} forgotten panels add to a load+unload",
            forgotten * 1e3,
            "ms",
            target=0.5,
            note=note + "; forgotten = views gone (cleared output, re-run cell): they follow no more",
        ),
    ]


def tick_cost() -> Figure:
    from nbmodels.widgets.panel import ModelPanel

    mgr = ModelManager()
    for i in range(pick(10, 2)):
        mgr.load(f"m{i}", "demo:mlp", hidden=8)
    panel = ModelPanel(mgr, cuda_devices=0, refresh_interval=0)
    try:
        seconds = median_seconds(panel.refresh, repeat=9, number=pick(50, 5))
    finally:
        panel.close()
        mgr.cleanup()
    return Figure(
        "one live refresh of a panel (timer tick), 10 models",
        seconds * 1e3,
        "ms",
        target=5.0,
        note="device readings, list(), every row re-rendered; runs on the timer thread every 2 s while shown",
    )


def run() -> list[Figure]:
    return [*follower_cost(), tick_cost()]
