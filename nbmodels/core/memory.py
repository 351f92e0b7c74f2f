"""What a model costs, and what the process and each device hold right now.

Accounting counts unique storages: tied weights and views share one storage
and are counted once, so the sum is what freeing the model can give back.
Readings (RSS, CUDA allocated) are measurements, never attributed guesses.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import psutil

from nbmodels.core import composite, storage_origin
from nbmodels.core.devices import cuda_initialized

log = logging.getLogger("nbmodels")

_MAX_WALK_ITEMS = 100_000


@dataclass(frozen=True)
class Packed:
    """Weights a module keeps packed in a C++ object (``quantize_dynamic``'s Linear), outside ``parameters()``.

    ``nbytes`` and ``numel`` are None where the kind of packing cannot be measured.
    """

    name: str
    obj: Any  # the torch.ScriptObject holding them
    device: str
    nbytes: int | None
    numel: int | None
    dtype: str | None


def packed_weights(model: Any) -> list[Packed]:
    """The packed weights of a model's modules (quantized ones), each once; empty for most models."""
    torch = sys.modules.get("torch")
    if torch is None:
        return []
    if isinstance(model, dict | list | tuple) and not composite.has_modules(model):
        return []  # a state dict: tensors only
    roots = [model] if isinstance(model, torch.nn.Module) else composite.modules(model)
    found: dict[int, Packed] = {}
    for root in roots:
        for name, module in root.named_modules():
            if "quantized" not in type(module).__module__:
                continue
            for attribute, value in vars(module).items():
                if isinstance(value, torch.ScriptObject) and id(value) not in found:
                    found[id(value)] = _measure_packed(f"{name}.{attribute}".lstrip("."), module, value)
    return list(found.values())


def _measure_packed(name: str, module: Any, packed: Any) -> Packed:
    """Bytes and count of a packed weight, from what its module unpacks; unknown for other kinds of packing."""
    unpack = getattr(module, "_weight_bias", None)
    if unpack is None:
        return Packed(name, packed, "cpu", None, None, None)
    try:
        weight, bias = unpack()
    except Exception:  # a packing this torch cannot unpack here: say it is unknown
        log.debug("unpacking %s failed", name, exc_info=True)
        return Packed(name, packed, "cpu", None, None, None)
    dtype = getattr(module, "dtype", None) or weight.dtype  # fp16 packs unpack to float32: count what is kept
    nbytes = weight.numel() * dtype.itemsize
    numel = weight.numel()
    if bias is not None:
        nbytes += bias.numel() * bias.element_size()
        numel += bias.numel()
    return Packed(name, packed, str(weight.device), nbytes, numel, str(dtype).removeprefix("torch."))


@dataclass(frozen=True)
class PartSize:
    """One part of a composite model: its name there, its class, its bytes and parameters (None: unknown)."""

    name: str
    class_name: str
    nbytes: int
    parameters: int | None

    def line(self) -> str:
        """``unet: UNet2DModel, 32.0 MiB, 8,388,608 params``."""
        params = f"{self.parameters:,} params" if self.parameters is not None else "params ?"
        return f"{self.name}: {self.class_name}, {format_bytes(self.nbytes)}, {params}"


@dataclass(frozen=True)
class Footprint:
    """Bytes, parameters, devices and dtypes of one object, as far as they can be known."""

    bytes_by_device: dict[str, int]
    parameters: int | None
    dtypes: tuple[str, ...]
    mapped: int = 0  # of the CPU bytes, those mapped from a file: page cache, which the OS drops when it needs to
    borrowed: int = 0  # of the CPU bytes, those a numpy array or buffer owns (torch.from_numpy, torch.frombuffer)
    parts: tuple[PartSize, ...] = ()  # a composite's parts (a pipeline's unet and vae), each measured alone
    unmeasured: tuple[str, ...] = ()  # kinds of weights it holds that cannot be measured ("packed weights")

    @property
    def devices(self) -> tuple[str, ...]:
        """Devices ordered by the bytes they hold, largest first."""
        return tuple(sorted(self.bytes_by_device, key=lambda d: -self.bytes_by_device[d]))

    @property
    def resident_by_device(self) -> dict[str, int]:
        """Bytes per device without those mapped from files: what budgets and eviction count."""
        if not self.mapped:
            return self.bytes_by_device
        resident = dict(self.bytes_by_device)
        resident["cpu"] = max(resident.get("cpu", 0) - self.mapped, 0)
        return resident


def _tensors_of(obj: Any) -> Iterator[Any]:
    """Yield the tensors that make up ``obj``: a module's parameters and buffers,
    a tensor itself, or the tensors inside (nested) dicts, lists and tuples."""
    torch = sys.modules.get("torch")
    if torch is None:
        return
    if isinstance(obj, torch.nn.Module):
        yield from obj.parameters()
        yield from obj.buffers()
        return
    if isinstance(obj, torch.Tensor):
        yield obj
        return
    if isinstance(obj, dict | list | tuple):
        stack: list[Any] = [obj]
        seen = 0
        while stack and seen < _MAX_WALK_ITEMS:
            item = stack.pop()
            seen += 1
            if isinstance(item, torch.Tensor):
                yield item
            elif isinstance(item, dict):
                stack.extend(item.values())
            elif isinstance(item, list | tuple):
                stack.extend(item)
            elif isinstance(item, torch.nn.Module):
                yield from item.parameters()
                yield from item.buffers()
        return
    for _, part in composite.parts(obj):  # a pipeline, an object holding models as attributes
        if isinstance(part, torch.nn.Module):
            yield from part.parameters()
            yield from part.buffers()
        else:
            yield part


def dense_parts(tensor: Any) -> list[Any]:
    """The strided tensors that hold ``tensor``'s memory: itself, or a sparse tensor's indices and values."""
    layout = str(tensor.layout).removeprefix("torch.")
    if layout == "sparse_coo":
        return [tensor._indices(), tensor._values()]
    if layout in ("sparse_csr", "sparse_bsr"):
        return [tensor.crow_indices(), tensor.col_indices(), tensor.values()]
    if layout in ("sparse_csc", "sparse_bsc"):
        return [tensor.ccol_indices(), tensor.row_indices(), tensor.values()]
    return [tensor]


def tensors_of(obj: Any) -> list[Any]:
    """The tensors of ``obj`` (see :func:`_tensors_of`), as a list."""
    return list(_tensors_of(obj))


def footprint(obj: Any) -> Footprint:
    """Measure ``obj``: unique storage bytes per device, parameter count, dtypes.

    Objects that hold no tensors get ``parameters=None`` and no bytes: unknown,
    not zero.
    """
    torch = sys.modules.get("torch")
    storages: dict[tuple[str, int], int] = {}
    on_cpu: dict[int, Any] = {}  # the CPU storages, whose memory may be a file's or another object's
    dtypes: set[str] = set()
    found_any = False
    for tensor in _tensors_of(obj):
        found_any = True
        dtypes.add(str(tensor.dtype).removeprefix("torch."))
        device = str(tensor.device)
        if tensor.device.type == "meta":
            storages.setdefault((device, id(tensor)), 0)
            continue
        for part in dense_parts(tensor):
            storage = part.untyped_storage()
            storages[(device, storage.data_ptr())] = storage.nbytes()
            if device == "cpu":
                on_cpu[storage.data_ptr()] = storage
    by_device: dict[str, int] = {}
    for (device, _), nbytes in storages.items():
        by_device[device] = by_device.get(device, 0) + nbytes
    unmeasured: tuple[str, ...] = ()
    packed = packed_weights(obj)
    for item in packed:  # quantized weights, outside parameters() and buffers()
        found_any = True
        if item.nbytes is None:
            unmeasured = ("packed weights",)
            by_device.setdefault(item.device, 0)  # where they are is known, how much is not
            continue
        by_device[item.device] = by_device.get(item.device, 0) + item.nbytes
        if item.dtype:
            dtypes.add(item.dtype)
    mapped = borrowed = 0
    for storage, origin in zip(on_cpu.values(), storage_origin.origins(on_cpu.values()), strict=True):
        if origin.kind == storage_origin.MAPPED:
            mapped += storage.nbytes()
        elif origin.kind == storage_origin.BORROWED:
            borrowed += storage.nbytes()
    del on_cpu
    parameters: int | None = None
    parts: tuple[PartSize, ...] = ()
    if torch is not None and isinstance(obj, torch.nn.Module):
        parameters = sum(p.numel() for p in obj.parameters())
        parameters += sum(item.numel or 0 for item in packed)
    elif found_any and (not isinstance(obj, dict | list | tuple) or composite.has_modules(obj)):
        named = composite.parts(obj)
        owners = [part for _, part in named if isinstance(part, torch.nn.Module)]  # type: ignore[union-attr]
        if owners:  # the parameters of its models, each once (a dict of plain tensors has none to count)
            unique = {id(p): p.numel() for module in owners for p in module.parameters()}
            parameters = sum(unique.values()) + sum(item.numel or 0 for item in packed)
        parts = tuple(_part_size(name, part) for name, part in named)
        del named, owners
    return Footprint(
        bytes_by_device=by_device,
        parameters=parameters,
        dtypes=tuple(sorted(dtypes)),
        mapped=mapped,
        borrowed=borrowed,
        parts=parts,
        unmeasured=unmeasured,
    )


def _part_size(name: str, part: Any) -> PartSize:
    measured = footprint(part)
    return PartSize(name, type(part).__name__, sum(measured.bytes_by_device.values()), measured.parameters)


# --- readings ---------------------------------------------------------------


def process_rss() -> int:
    """Resident set size of this process, in bytes."""
    return int(psutil.Process().memory_info().rss)


def cuda_allocated() -> dict[str, int]:
    """Bytes allocated by torch's caching allocator per CUDA device; empty before CUDA starts."""
    if not cuda_initialized():
        return {}
    import torch

    return {f"cuda:{i}": int(torch.cuda.memory_allocated(i)) for i in range(torch.cuda.device_count())}


@dataclass(frozen=True)
class DeviceMemory:
    """One device's memory right now. For the CPU: RSS as used, system total and available."""

    device: str
    used: int
    total: int | None
    available: int | None = None
    reserved: int | None = None
    context_floor: int | None = None

    @property
    def fraction_used(self) -> float | None:
        return None if not self.total else self.used / self.total


def device_readings() -> list[DeviceMemory]:
    """CPU and (when CUDA is initialised) every CUDA device, without creating a CUDA context.

    ``context_floor`` is what the device holds beyond torch's reservation: the
    CUDA context and other processes, which no cleanup in this process returns.
    """
    vm = psutil.virtual_memory()
    readings = [DeviceMemory("cpu", used=process_rss(), total=int(vm.total), available=int(vm.available))]
    if cuda_initialized():
        import torch

        for i in range(torch.cuda.device_count()):
            free, total = torch.cuda.mem_get_info(i)
            reserved = int(torch.cuda.memory_reserved(i))
            in_use = int(total - free)
            readings.append(
                DeviceMemory(
                    f"cuda:{i}",
                    used=int(torch.cuda.memory_allocated(i)),
                    total=int(total),
                    available=int(free),
                    reserved=reserved,
                    context_floor=max(in_use - reserved, 0),
                )
            )
    return readings


def describe_reading(reading: DeviceMemory) -> str:
    """One line of memory for a device, in words (``%list_models`` and the out-of-memory account)."""
    if reading.device == "cpu":
        text = f"process RSS {format_bytes(reading.used)}"
        if reading.available is not None and reading.total is not None:
            text += f"; system {format_bytes(reading.available)} available of {format_bytes(reading.total)}"
        return text
    parts = [f"allocated {format_bytes(reading.used)}"]
    if reading.reserved is not None:
        parts.append(f"reserved {format_bytes(reading.reserved)}")
    parts.append(f"free {format_bytes(reading.available)} of {format_bytes(reading.total)}")
    text = ", ".join(parts)
    if reading.context_floor is not None:
        floor = format_bytes(reading.context_floor)
        text += f"; CUDA context and other processes {floor} (not returned while the kernel runs)"
    return text


# --- giving memory back -------------------------------------------------------


@lru_cache(maxsize=1)
def _libc_malloc_trim() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    import ctypes  # here, not at import: %load_ext should not pay for it

    try:
        # the running program's symbols include its C library's (ctypes.util.find_library would run ldconfig)
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None


def trim_heap() -> bool:
    """Ask glibc to hand freed heap pages back to the OS.

    Freed tensors below glibc's (adaptive, up to 32 MB) mmap threshold go back
    to the heap, not the OS, so RSS would not fall without this.
    """
    trim = _libc_malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


def empty_cuda_cache() -> bool:
    """Empty torch's CUDA cache on every device, but only if CUDA was ever started."""
    if not cuda_initialized():
        return False
    import torch

    for i in range(torch.cuda.device_count()):
        with torch.cuda.device(i):
            torch.cuda.empty_cache()
    return True


def format_bytes(nbytes: int | None) -> str:
    """Human-readable bytes (binary units): 1536 -> '1.5 KiB'; None -> '?'."""
    if nbytes is None:
        return "?"
    sign = "-" if nbytes < 0 else ""
    value = float(abs(nbytes))
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{sign}{value:.0f} {unit}" if unit == "B" else f"{sign}{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")
