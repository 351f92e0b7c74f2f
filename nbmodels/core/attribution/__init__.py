"""Where the kernel's memory is: every live tensor storage under the name that holds it, and what frees it.

IPython-free and returns data, one job per module:

- :mod:`.census`: every live storage Python can see, in one pass (weak references only).
- :mod:`.walk`: forward from one named value to the storages it keeps alive, within a budget.
- :mod:`.attribute`: the roots (sites, managed and released models), one owner per storage.
- :mod:`.residue`: per device, what is not in live tensors (RSS, allocator cache, CUDA context).
- :mod:`.report`: the frozen report, its text and HTML, and the difference between two reports.
"""

from __future__ import annotations

from nbmodels.core.attribution.attribute import MiB, attribute, holders_summary, memory_report
from nbmodels.core.attribution.census import StorageInfo, census
from nbmodels.core.attribution.report import (
    Change,
    Holding,
    MemoryDiff,
    MemoryReport,
    MemoryRow,
    Remedy,
    Residue,
    RowKind,
)
from nbmodels.core.attribution.residue import CudaReading, cuda_from_records, residue

__all__ = [
    "Change",
    "CudaReading",
    "Holding",
    "MemoryDiff",
    "MemoryReport",
    "MemoryRow",
    "MiB",
    "Remedy",
    "Residue",
    "RowKind",
    "StorageInfo",
    "attribute",
    "census",
    "cuda_from_records",
    "holders_summary",
    "memory_report",
    "residue",
]
