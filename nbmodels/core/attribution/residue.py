"""Per device, the memory that is not in live tensors, from readings (data) so it is testable without a GPU.

CPU: the process RSS beyond its live CPU tensors (the interpreter, libraries,
mapped files, freed heap not yet returned). CUDA: the caching allocator's
cache (reserved minus allocated; ``torch.cuda.empty_cache()`` returns it),
what PyTorch allocated beyond the live tensors found, this process's memory
outside the allocator (NVML's figure for the process minus reserved: the CUDA
context and other libraries' memory, split when the context's size is known)
and other processes on the device. Live readings come from torch and NVML;
tests pass recorded ones.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from nbmodels.core import memory
from nbmodels.core.attribution.report import Remedy, Residue
from nbmodels.core.devices import cuda_initialized
from nbmodels.core.nvml import GpuDevice, GpuReadings, visible_index


@dataclass(frozen=True)
class CudaReading:
    """One CUDA device as torch and NVML see it (bytes); None where a figure is unknown."""

    device: str  # torch's name: cuda:0
    allocated: int
    reserved: int
    total: int
    free: int
    process: int | None = None  # NVML: this process on the device, the context included
    others: int | None = None  # NVML: every other process on the device
    context: int | None = None  # the CUDA context, when known


def cuda_from_records(
    stats: Iterable[Mapping[str, Any]], gpus: GpuReadings, *, pid: int, visible: str | None = None
) -> list[CudaReading]:
    """Readings from torch's figures per device (``device``, ``allocated``, ``reserved``, ``total``, ``free``,
    optional ``context``) and NVML's (live or recorded), matched under ``CUDA_VISIBLE_DEVICES``."""
    by_index: dict[int, GpuDevice] = {}
    for gpu in gpus.devices:
        index = visible_index(gpu.index, visible)
        if index is not None:
            by_index[index] = gpu
    readings = []
    for stat in stats:
        device = str(stat["device"])
        match = by_index.get(int(device.partition(":")[2] or 0))
        process = others = None
        if match is not None:
            process = match.processes.get(pid)
            others = sum(nbytes or 0 for other, nbytes in match.processes.items() if other != pid)
        readings.append(
            CudaReading(
                device=device,
                allocated=int(stat["allocated"]),
                reserved=int(stat["reserved"]),
                total=int(stat["total"]),
                free=int(stat["free"]),
                process=process,
                others=others,
                context=None if stat.get("context") is None else int(stat["context"]),
            )
        )
    return readings


def cuda_stats() -> list[dict[str, int | str]]:
    """torch's figures per CUDA device; none before CUDA starts (reading them never starts it)."""
    if not cuda_initialized():
        return []
    import torch

    stats: list[dict[str, int | str]] = []
    for i in range(torch.cuda.device_count()):
        free, total = torch.cuda.mem_get_info(i)
        stats.append(
            {
                "device": f"cuda:{i}",
                "allocated": int(torch.cuda.memory_allocated(i)),
                "reserved": int(torch.cuda.memory_reserved(i)),
                "total": int(total),
                "free": int(free),
            }
        )
    return stats


def live_cuda() -> list[CudaReading]:
    """The CUDA readings of this process now (empty before CUDA starts)."""
    stats = cuda_stats()
    if not stats:
        return []
    from nbmodels.core.nvml import read_gpus

    return cuda_from_records(stats, read_gpus(), pid=os.getpid(), visible=os.environ.get("CUDA_VISIBLE_DEVICES"))


def residue(rss: int | None, tensors: Mapping[str, int], cuda: Iterable[CudaReading]) -> list[Residue]:
    """The residue lines: CPU from the RSS and the live CPU tensors, CUDA from each reading."""
    lines = []
    if rss is not None:
        cpu = tensors.get("cpu", 0)
        lines.append(
            Residue(
                "cpu",
                f"process RSS {memory.format_bytes(rss)}, beyond live tensors "
                "(the interpreter, libraries, mapped files, freed heap not yet returned)",
                max(rss - cpu, 0),
            )
        )
    for reading in cuda:
        lines += _cuda_lines(reading, tensors.get(reading.device, 0))
    return lines


def _cuda_lines(reading: CudaReading, in_tensors: int) -> list[Residue]:
    device = reading.device
    empty = Remedy("empty_cache", device, "import torch; torch.cuda.empty_cache()")
    lines = [Residue(device, "allocator cache (reserved minus allocated)", reading.reserved - reading.allocated, empty)]
    beyond = reading.allocated - in_tensors
    if beyond > 0:
        lines.append(
            Residue(device, "allocated by PyTorch outside the live tensors found (block rounding, C++ holders)", beyond)
        )
    if reading.process is not None:
        outside = reading.process - reading.reserved
        if reading.context is not None:
            lines.append(Residue(device, "CUDA context (returned only when the process ends)", reading.context))
            lines.append(Residue(device, "this process outside PyTorch's allocator", max(outside - reading.context, 0)))
        else:
            lines.append(
                Residue(
                    device,
                    "CUDA context and this process's memory outside PyTorch's allocator "
                    "(the context is returned only when the process ends)",
                    max(outside, 0),
                )
            )
        lines.append(Residue(device, "other processes", reading.others))
    else:
        used = reading.total - reading.free
        lines.append(
            Residue(
                device,
                "CUDA context, memory outside PyTorch's allocator and other processes (no NVML reading to split them)",
                max(used - reading.reserved, 0),
            )
        )
    return lines


__all__ = ["CudaReading", "cuda_from_records", "cuda_stats", "live_cuda", "residue"]
