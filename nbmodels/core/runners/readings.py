"""What a worker process holds: RSS, private memory, and device memory per GPU.

Device memory per process comes from NVML (``nvidia-ml-py``) when it is installed:
it includes the CUDA context, which is what only a process exit gives back. Without
NVML the worker reports torch's own reading (``memory_reserved``), which leaves the
context out; ``device_source`` says which one a reading is. The NVML logic takes its
readings as data (:func:`process_device_memory`), so it is tested without a GPU.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import psutil

from nbmodels.core.devices import cuda_initialized
from nbmodels.core.memory import format_bytes
from nbmodels.core.nvml import read_gpus, visible_index


@dataclass(frozen=True)
class WorkerMemory:
    """One reading of a worker: bytes, never guesses (None when it could not be read).

    ``private`` (USS) is what the operating system gets back when the process ends;
    ``rss`` also counts pages shared with other processes (the torch libraries).
    ``devices`` maps ``"cuda:N"`` to the bytes this process holds there.
    """

    pid: int | None
    rss: int | None
    private: int | None
    devices: dict[str, int] = field(default_factory=dict)
    device_source: str = ""  # "nvml" (with the CUDA context), "torch" (allocator only) or "" (no GPU used)

    def describe(self) -> str:
        parts = [f"RSS {format_bytes(self.rss)}", f"private {format_bytes(self.private)}"]
        for device, nbytes in sorted(self.devices.items()):
            context = "" if self.device_source == "nvml" else ", CUDA context not counted"
            parts.append(f"{device} {format_bytes(nbytes)} ({self.device_source}{context})")
        return ", ".join(parts)


def process_memory(pid: int) -> tuple[int | None, int | None]:
    """RSS and private (USS) bytes of process ``pid``; None for what cannot be read."""
    try:
        process = psutil.Process(pid)
        rss = int(process.memory_info().rss)
    except (psutil.Error, OSError):
        return None, None
    try:
        private = int(process.memory_full_info().uss)
    except (psutil.Error, OSError, AttributeError):
        private = None
    return rss, private


def process_device_memory(
    pid: int, processes: Mapping[int, Iterable[tuple[int, int | None]]], visible: str | None = None
) -> dict[str, int]:
    """Bytes ``pid`` holds per device, from NVML's per-device process lists ``{index: [(pid, used)]}``."""
    found: dict[str, int] = {}
    for nvml_index, entries in processes.items():
        used = sum(int(nbytes or 0) for process_id, nbytes in entries if process_id == pid)
        index = visible_index(nvml_index, visible)
        if used and index is not None:
            found[f"cuda:{index}"] = found.get(f"cuda:{index}", 0) + used
    return found


def nvml_processes() -> dict[int, list[tuple[int, int | None]]] | None:
    """NVML's processes per device index (see :mod:`nbmodels.core.nvml`), or None without NVML or a GPU."""
    readings = read_gpus()
    if readings.note:
        return None
    return {device.index: list(device.processes.items()) for device in readings.devices}


def torch_device_memory() -> dict[str, int]:
    """This process's torch reservation per CUDA device (no CUDA context counted); {} before CUDA starts."""
    if not cuda_initialized():
        return {}
    torch: Any = sys.modules["torch"]
    return {f"cuda:{i}": int(torch.cuda.memory_reserved(i)) for i in range(torch.cuda.device_count())}


def worker_memory(pid: int, torch_devices: dict[str, int] | None = None) -> WorkerMemory:
    """A reading of process ``pid``: NVML's per-process device memory, else ``torch_devices`` from the worker."""
    rss, private = process_memory(pid)
    nvml = nvml_processes()
    if nvml is not None:
        devices = process_device_memory(pid, nvml, os.environ.get("CUDA_VISIBLE_DEVICES"))
        if devices:
            return WorkerMemory(pid, rss, private, devices, "nvml")
    devices = {d: n for d, n in (torch_devices or {}).items() if n}
    return WorkerMemory(pid, rss, private, devices, "torch" if devices else "")


def own_memory() -> WorkerMemory:
    """A reading of this process (run in the worker)."""
    return worker_memory(os.getpid(), torch_device_memory())
