"""Per-process GPU memory from NVML (``pip install nvidia-ml-py``), as plain records.

The one place nbmodels reads NVML: the machine view (``python -m nbmodels ps``)
and the readings of worker processes both use it.

NVML is what ``nvidia-smi`` reads: for each device, its memory and the
processes using it with their bytes (the CUDA context included). Reading it is
split in two so the logic can be tested with recorded readings on machines
without a GPU: :func:`nvml_records` asks the library and returns plain dicts,
:func:`devices_from_records` turns such dicts (live or recorded) into
:class:`GpuDevice` records. Device numbers are NVML's, the same as nvidia-smi's
(they can differ from torch's ``cuda:N`` under ``CUDA_VISIBLE_DEVICES``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("nbmodels")


@dataclass(frozen=True)
class GpuDevice:
    """One GPU: its total and used memory and what each process uses (None: the driver does not say)."""

    index: int
    name: str
    uuid: str
    total: int
    used: int
    processes: dict[int, int | None]

    @property
    def label(self) -> str:
        return f"gpu{self.index}"


@dataclass(frozen=True)
class GpuReadings:
    """Every GPU NVML reports, or none and the reason (no library, no driver, no device)."""

    devices: tuple[GpuDevice, ...] = ()
    note: str = ""

    def by_pid(self) -> dict[int, dict[str, int]]:
        """{pid: {gpu label: bytes}}: what each process uses on each device (unknown amounts as 0)."""
        usage: dict[int, dict[str, int]] = {}
        for device in self.devices:
            for pid, nbytes in device.processes.items():
                usage.setdefault(pid, {})[device.label] = nbytes or 0
        return usage


def devices_from_records(records: Iterable[Mapping[str, Any]]) -> GpuReadings:
    """Readings from NVML-shaped records (what :func:`nvml_records` returns, or a recording of it).

    Each record: ``index``, ``name``, ``uuid``, ``memory`` (``total``, ``used``),
    and ``compute`` / ``graphics``: lists of ``{"pid", "usedGpuMemory"}`` as
    NVML's process structs have them (``usedGpuMemory`` None when unknown). A
    process in both lists is one process.
    """
    devices = []
    for record in records:
        processes: dict[int, int | None] = {}
        for kind in ("compute", "graphics"):
            for proc in record.get(kind, ()):
                pid = int(proc["pid"])
                used = proc.get("usedGpuMemory")
                known = processes.get(pid)
                processes[pid] = max(known or 0, int(used)) if used is not None else known
        memory = record["memory"]
        devices.append(
            GpuDevice(
                index=int(record["index"]),
                name=str(record["name"]),
                uuid=str(record.get("uuid", "")),
                total=int(memory["total"]),
                used=int(memory["used"]),
                processes=processes,
            )
        )
    note = "" if devices else "NVML reports no GPU"
    return GpuReadings(tuple(sorted(devices, key=lambda d: d.index)), note)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def nvml_records() -> tuple[list[dict[str, Any]], str]:
    """Ask NVML for every device and its processes: (records, "") or ([], why there are none)."""
    try:
        import pynvml
    except ImportError:
        return [], "no GPU readings: pip install nvidia-ml-py to see GPU memory per kernel"
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        return [], f"no GPU readings: NVML cannot start ({exc}; no NVIDIA driver here?)"
    try:
        records = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            record: dict[str, Any] = {
                "index": index,
                "name": _text(pynvml.nvmlDeviceGetName(handle)),
                "uuid": _text(pynvml.nvmlDeviceGetUUID(handle)),
                "memory": {"total": int(memory.total), "used": int(memory.used)},
            }
            for kind, query in (
                ("compute", pynvml.nvmlDeviceGetComputeRunningProcesses),
                ("graphics", pynvml.nvmlDeviceGetGraphicsRunningProcesses),
            ):
                try:
                    record[kind] = [{"pid": p.pid, "usedGpuMemory": p.usedGpuMemory} for p in query(handle)]
                except pynvml.NVMLError as exc:
                    log.debug("NVML %s processes of GPU %d: %s", kind, index, exc)
                    record[kind] = []
            records.append(record)
        return records, ""
    except pynvml.NVMLError as exc:
        return [], f"no GPU readings: NVML failed ({exc})"
    finally:
        with contextlib.suppress(pynvml.NVMLError):
            pynvml.nvmlShutdown()


def visible_index(nvml_index: int, visible: str | None) -> int | None:
    """The torch index (``cuda:N``) of NVML device ``nvml_index`` under ``CUDA_VISIBLE_DEVICES``.

    None when the device is hidden. Entries that are not plain indices (UUIDs) make the
    mapping unknown, and then the NVML index is kept.
    """
    if visible is None:
        return nvml_index
    entries = [entry.strip() for entry in visible.split(",") if entry.strip()]
    if not all(entry.isdigit() for entry in entries):
        return nvml_index
    indices = [int(entry) for entry in entries]
    return indices.index(nvml_index) if nvml_index in indices else None


def total_of(torch_index: int, readings: GpuReadings, visible: str | None) -> int | None:
    """The total memory of torch's ``cuda:N`` as NVML reports it (None: not found), under ``CUDA_VISIBLE_DEVICES``."""
    for device in readings.devices:
        if visible_index(device.index, visible) == torch_index:
            return device.total
    return None


def read_gpus() -> GpuReadings:
    """What NVML says now (an empty reading with the reason when it cannot)."""
    records, note = nvml_records()
    if note:
        return GpuReadings((), note)
    return devices_from_records(records)


__all__ = ["GpuDevice", "GpuReadings", "devices_from_records", "nvml_records", "read_gpus", "total_of", "visible_index"]
