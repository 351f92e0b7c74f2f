"""``device="auto"``: the CUDA device with the most free memory that fits the model, else the CPU.

A pure function of device readings (and of what budgets leave free), so it is
tested with readings as data. Free memory on a CUDA device is what the driver
reports free plus what torch holds cached but unused (``reserved - allocated``:
torch hands that out again before asking the driver), less a reserve for the
activations and workspaces that the first forward pass needs (ComfyUI keeps
400 MiB on Linux, ollama 457 MiB). A budget caps it further.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nbmodels.core.memory import DeviceMemory, format_bytes

CUDA_RESERVE = 400 * 1024 * 1024
OFFLOAD_RESERVE = 1024**3  # system memory an offload to the CPU leaves free when the CPU has no budget


@dataclass(frozen=True)
class Placement:
    """Where ``auto`` puts a model, and why; ``warning`` is set when it fell back to the CPU despite a GPU."""

    device: str
    reason: str
    warning: str = ""


def room_on(reading: DeviceMemory, budget_room: int | None = None, *, reserve: int = CUDA_RESERVE) -> int:
    """Bytes a new model can take on a CUDA device: free + cached-but-unused, less the reserve, within the budget."""
    cached = max((reading.reserved or 0) - reading.used, 0)
    room = (reading.available or 0) + cached - reserve
    if budget_room is not None:
        room = min(room, budget_room)
    return max(room, 0)


def choose_device(
    needed: int | None,
    readings: Sequence[DeviceMemory],
    budget_room: Mapping[str, int] | None = None,
    *,
    reserve: int = CUDA_RESERVE,
    what: str = "the model",
) -> Placement:
    """The CUDA device with the most room that fits ``needed`` bytes (unknown: the one with the most room), else CPU.

    ``budget_room`` is what each device's budget leaves free (devices without a
    budget are absent). Ties go to the lower device index.
    """
    budget_room = budget_room or {}
    cuda = [r for r in readings if r.device.startswith("cuda")]
    if not cuda:
        return Placement("cpu", "no CUDA device")
    rooms = sorted(
        ((room_on(r, budget_room.get(r.device), reserve=reserve), r.device) for r in cuda),
        key=lambda pair: (-pair[0], _index(pair[1])),
    )
    best_room, best = rooms[0]
    size = "an unknown size" if needed is None else format_bytes(needed)
    if needed is None and best_room > 0:
        return Placement(best, f"{best} has the most room ({format_bytes(best_room)}); {what} is of an unknown size")
    if needed is not None and best_room >= needed:
        return Placement(best, f"{best} has the most room ({format_bytes(best_room)}) for {what} ({size})")
    detail = ", ".join(
        f"{device} {format_bytes(room)}" + (" (budget)" if device in budget_room else "") for room, device in rooms
    )
    return Placement(
        "cpu",
        "no CUDA device has room",
        warning=(
            f"device='auto': no CUDA device has room for {what} ({size}; room after a "
            f"{format_bytes(reserve)} reserve: {detail}); loading it on the CPU"
        ),
    )


def _index(device: str) -> int:
    _, _, index = device.partition(":")
    return int(index) if index.isdigit() else 0


def current_readings() -> list[DeviceMemory]:
    """Every device's memory now, CUDA included: ``auto`` on a CUDA machine starts CUDA to read it."""
    from nbmodels.core import memory
    from nbmodels.core.devices import cuda_device_count

    if cuda_device_count() > 0:
        import torch

        torch.cuda.init()  # type: ignore[no-untyped-call]
    return memory.device_readings()


def device_total(device: str) -> int | None:
    """A device's total memory, without starting CUDA (None when neither torch nor NVML can say).

    Before this process has used CUDA, a CUDA device's total comes from NVML
    (``nvidia-ml-py``), which creates no CUDA context; so a fraction budget
    (``{"cuda:0": 0.8}``) already holds for the first load onto that device.
    """
    if device == "cpu":
        import psutil

        return int(psutil.virtual_memory().total)
    kind, _, index = device.partition(":")
    if kind == "cuda":
        from nbmodels.core.devices import cuda_initialized

        number = int(index or 0)
        if cuda_initialized():
            import torch

            if number < torch.cuda.device_count():
                return int(torch.cuda.get_device_properties(number).total_memory)
            return None
        return nvml_total(number, os.environ.get("CUDA_VISIBLE_DEVICES"))
    return None


@functools.lru_cache(maxsize=32)
def nvml_total(number: int, visible: str | None) -> int | None:
    """``cuda:number``'s total from NVML, read once per process (a device's size does not change)."""
    from nbmodels.core import nvml

    readings = nvml.read_gpus()
    return nvml.total_of(number, readings, visible) if not readings.note else None


def system_available() -> int:
    """Memory the system can still give this process (psutil's ``available``)."""
    import psutil

    return int(psutil.virtual_memory().available)


def memory_room(device: str) -> int:
    """What ``device`` can take now, without a reserve: the system's available memory, or CUDA free + cached."""
    from nbmodels.core import memory

    if device == "cpu":
        return system_available()
    reading = next((r for r in memory.device_readings() if r.device == device), None)
    return room_on(reading, reserve=0) if reading is not None else 0


def hugging_face_folder(source_text: str) -> bool:
    """A folder ``from_pretrained`` loads (a ``config.json``, and not a sentence-transformers ``modules.json``)."""
    path = Path(source_text)
    return path.is_absolute() and (path / "config.json").is_file() and not (path / "modules.json").is_file()


@functools.lru_cache(maxsize=1)
def _dtype_keyword() -> str:
    """transformers took ``torch_dtype`` before 4.56 and takes ``dtype`` since (warning on the old name)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        major, minor = (int(part) for part in version("transformers").split(".")[:2])
    except (PackageNotFoundError, ValueError):
        return "dtype"
    return "dtype" if (major, minor) >= (4, 56) else "torch_dtype"


def native_kwargs(source_text: str, device: str | None, dtype: Any, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """For a Hugging Face folder: the device and dtype as ``from_pretrained`` keywords, so it places itself.

    ``device_map`` loads the weights straight onto the device (no full copy in
    CPU memory first; accelerate spreads a model over several GPUs with
    ``device_map="auto"``, given with ``--kw``); the dtype is applied as the
    weights load. What the user gave with the keywords stays as given. The CPU
    needs no device map (it is where ``from_pretrained`` loads by default, and a
    map would require accelerate).
    """
    if (device is None and dtype is None) or not hugging_face_folder(source_text):
        return {}
    extra: dict[str, Any] = {}
    if device not in (None, "cpu", "meta") and "device_map" not in kwargs:
        extra["device_map"] = device
    if dtype is not None and not {"dtype", "torch_dtype"} & set(kwargs):
        extra[_dtype_keyword()] = dtype
    return extra


__all__ = [
    "CUDA_RESERVE",
    "OFFLOAD_RESERVE",
    "Placement",
    "choose_device",
    "current_readings",
    "device_total",
    "hugging_face_folder",
    "memory_room",
    "native_kwargs",
    "room_on",
    "system_available",
]
