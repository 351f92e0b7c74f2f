"""What every benchmark module shares: a figure with its target, timers, and the quick switch.

Each module in ``benchmarks/`` exposes ``run() -> list[Figure]``; ``python -m benchmarks``
runs them all and prints one table. Figures are medians or ratios measured in the same
run, never single timings.

``quick()`` is true under ``python -m benchmarks --quick`` (or ``NBMODELS_BENCH_QUICK=1``):
modules shrink sizes and rounds so the harness itself can be tested in seconds. Quick
figures only prove that the code runs; they are not the published ones.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

QUICK_ENV = "NBMODELS_BENCH_QUICK"

T = TypeVar("T")


@dataclass(frozen=True)
class Figure:
    """One measured figure and the target it is held against (``<=`` or ``>=``)."""

    name: str
    value: float
    unit: str
    target: float | None = None
    better: str = "<="  # "<=" when lower is better, ">=" when higher is better
    note: str = ""

    @property
    def meets_target(self) -> bool | None:
        if self.target is None:
            return None
        return self.value <= self.target if self.better == "<=" else self.value >= self.target


def quick() -> bool:
    """True when the run should use tiny sizes (tests of the harness), not the published ones."""
    return os.environ.get(QUICK_ENV, "") not in ("", "0")


def pick(full: T, small: T) -> T:
    """``full`` normally, ``small`` in a quick run."""
    return small if quick() else full


def median_seconds(call: Callable[[], object], *, repeat: int = 7, number: int = 1) -> float:
    """Median over ``repeat`` rounds of the mean time of ``number`` calls, in seconds."""
    rounds = []
    for _ in range(repeat):
        started = time.perf_counter()
        for _ in range(number):
            call()
        rounds.append((time.perf_counter() - started) / number)
    return statistics.median(rounds)


def percentile(samples: Sequence[float], fraction: float) -> float:
    """The ``fraction`` (0..1) percentile by the nearest-rank method: a value that was measured."""
    if not samples:
        raise ValueError("no samples")
    ordered = sorted(samples)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def cell_runner(ip: Any) -> Callable[..., None]:
    """``cell(code, fails=False)``: run ``code`` as a notebook cell in ``ip``; raise if it did not do as expected."""

    def cell(code: str, *, fails: bool = False) -> None:
        result = ip.run_cell(code, store_history=True, silent=False)
        if (result.error_in_exec is not None) != fails:
            raise RuntimeError(f"cell {code!r} {'did not fail' if fails else 'failed'}: {result.error_in_exec}")

    return cell


CHILD_MARK = "NBMODELS-BENCH "  # the line a benchmark's child process prints its figures on


def print_child_figures(figures: dict[str, Any]) -> None:
    """In the child process: hand the figures to :func:`child_figures` (one marked JSON line)."""
    print("\n" + CHILD_MARK + json.dumps(figures), flush=True)


def child_figures(module: str, *args: object, timeout: float = 900) -> dict[str, Any]:
    """Run ``benchmarks.<module>._child(*args)`` in a fresh interpreter and return the figures it printed."""
    code = f"import sys; from benchmarks.{module} import _child; _child(*sys.argv[1:])"
    done = subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    lines = [line for line in done.stdout.splitlines() if CHILD_MARK in line]
    if not lines:
        raise RuntimeError(f"the {module} session printed no figures:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    found: dict[str, Any] = json.loads(lines[-1].split(CHILD_MARK, 1)[1])
    return found
