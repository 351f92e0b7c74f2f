"""What every benchmark module shares: a figure with its target, and a median timer.

Each module in ``benchmarks/`` exposes ``run() -> list[Figure]``; ``python -m benchmarks``
runs them all and prints one table. Figures are medians or ratios measured in the same
run, never single timings.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass


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


def median_seconds(call: Callable[[], object], *, repeat: int = 7, number: int = 1) -> float:
    """Median over ``repeat`` rounds of the mean time of ``number`` calls, in seconds."""
    rounds = []
    for _ in range(repeat):
        started = time.perf_counter()
        for _ in range(number):
            call()
        rounds.append((time.perf_counter() - started) / number)
    return statistics.median(rounds)
