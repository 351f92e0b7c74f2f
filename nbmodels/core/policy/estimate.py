"""What a model will take before it is loaded, where that can be known without loading it.

A budget can only make room *before* a load when the size is known: then the
evictions run first and the new model never lands on a full device. Known
sizes, most exact first:

- a ``.safetensors`` file: its header lists every tensor's dtype and shape;
- a Hugging Face folder: the safetensors headers of its weights (or the
  sharded index's ``total_size``), in the dtype ``from_pretrained`` will use
  (the one asked for, else what transformers does by default: the stored
  dtype from transformers 5 on, float32 before);
- a ``demo:`` model: built on the ``meta`` device, which allocates nothing;
- another checkpoint file, a sentence-transformers folder: the size of the files.

Anything else (a factory, a plug-in) is measured after it loads, and the
evictions happen then. Reading a header costs a few small reads; nothing here
imports transformers.
"""

from __future__ import annotations

import json
import logging
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("nbmodels")

# Bytes per element of each safetensors dtype, and which of them .to(dtype) converts (the floating ones).
ITEMSIZE = {
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U64": 8,
    "U32": 4,
    "U16": 2,
    "U8": 1,
    "BOOL": 1,
    "C64": 8,
}
FLOATING = frozenset({"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"})
_TORCH_ITEMSIZE = {"float64": 8, "float32": 4, "float16": 2, "bfloat16": 2}
_MAX_HEADER = 100 * 1024 * 1024  # safetensors caps its header at 100 MB
_WEIGHT_FILES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")


@dataclass(frozen=True)
class Estimate:
    """Bytes a model will take once loaded, and how that was found (said in messages)."""

    nbytes: int
    how: str


def dtype_itemsize(dtype: Any) -> int | None:
    """Bytes per element of a floating dtype (``torch.float16``, ``"bf16"``); None when it is not one."""
    if dtype is None:
        return None
    from nbmodels.core.devices import DTYPE_ALIASES

    name = DTYPE_ALIASES.get(str(dtype).strip().lower().removeprefix("torch."))
    return _TORCH_ITEMSIZE.get(name or "")


def tensor_sizes(header: Mapping[str, Any]) -> list[tuple[str, int]]:
    """``(dtype, element count)`` of every tensor a safetensors header lists."""
    sizes = []
    for key, entry in header.items():
        if key == "__metadata__" or not isinstance(entry, dict):
            continue
        count = 1
        for dim in entry.get("shape", []):
            count *= int(dim)
        sizes.append((str(entry.get("dtype", "")), count))
    return sizes


def bytes_in(sizes: Iterable[tuple[str, int]], itemsize: int | None) -> int:
    """Bytes of tensors stored as ``sizes``, with floating ones converted to ``itemsize`` when given."""
    total = 0
    for dtype, count in sizes:
        each = itemsize if itemsize is not None and dtype in FLOATING else ITEMSIZE.get(dtype, 4)
        total += count * each
    return total


def read_header(path: Path) -> dict[str, Any] | None:
    """A safetensors file's JSON header, or None when the file is not one (its load will say why)."""
    try:
        with path.open("rb") as file:
            head = file.read(8)
            if len(head) < 8:
                return None
            (length,) = struct.unpack("<Q", head)
            if length > _MAX_HEADER:
                return None
            header = json.loads(file.read(length))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return header if isinstance(header, dict) else None


def estimate(source_text: str, kwargs: Mapping[str, Any], dtype: Any = None) -> Estimate | None:
    """What loading ``source_text`` with ``kwargs`` (and ``dtype``) will take, or None when it cannot be known."""
    try:
        if source_text.startswith("demo:"):
            return _demo(source_text.removeprefix("demo:"), kwargs, dtype)
        path = Path(source_text)
        if not path.is_absolute() or not path.exists():
            return None
        if path.is_dir():
            return _folder(path, kwargs, dtype)
        return _file(path, dtype)
    except Exception:  # an estimate is an optimisation: the load itself reports any real problem
        log.debug("estimating the size of %s failed", source_text, exc_info=True)
        return None


def _file(path: Path, dtype: Any) -> Estimate | None:
    if path.suffix.lower() == ".safetensors":
        header = read_header(path)
        if header is None:
            return None
        return Estimate(bytes_in(tensor_sizes(header), dtype_itemsize(dtype)), "its safetensors header")
    return Estimate(path.stat().st_size, "the size of the file")


def _folder(path: Path, kwargs: Mapping[str, Any], dtype: Any) -> Estimate | None:
    if (path / "modules.json").is_file():  # sentence-transformers: modules in subfolders
        files = [f for f in path.rglob("*") if f.suffix.lower() in _WEIGHT_FILES and f.is_file()]
        return Estimate(sum(f.stat().st_size for f in files), "the size of its weight files") if files else None
    if not (path / "config.json").is_file():
        return None
    asked = dtype if dtype is not None else kwargs.get("dtype", kwargs.get("torch_dtype"))
    itemsize = dtype_itemsize(asked) if asked not in (None, "auto") else _default_itemsize(asked)
    shards = _shards(path)
    headers = [read_header(shard) for shard in shards if shard.suffix == ".safetensors"]
    if shards and all(h is not None for h in headers) and len(headers) == len(shards):
        sizes = [size for header in headers if header is not None for size in tensor_sizes(header)]
        return Estimate(bytes_in(sizes, itemsize), "its config and safetensors headers")
    index = path / "model.safetensors.index.json"
    if index.is_file():
        total = json.loads(index.read_text()).get("metadata", {}).get("total_size")
        if isinstance(total, int):
            return Estimate(total, "its safetensors index")
    files = [f for f in path.iterdir() if f.suffix.lower() in _WEIGHT_FILES and f.is_file()]
    return Estimate(sum(f.stat().st_size for f in files), "the size of its weight files") if files else None


def _shards(folder: Path) -> list[Path]:
    """The safetensors files ``from_pretrained`` reads: the single file, or those the index maps to."""
    single = folder / "model.safetensors"
    if single.is_file():
        return [single]
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text()).get("weight_map", {})
        return [folder / name for name in sorted(set(weight_map.values()))]
    return []


def _default_itemsize(asked: Any) -> int | None:
    """The itemsize from_pretrained uses without a dtype: stored (None) from transformers 5 on, else float32."""
    if asked == "auto":
        return None
    try:
        from importlib.metadata import version

        major = int(version("transformers").split(".")[0])
    except Exception:
        return None
    return None if major >= 5 else 4


def _demo(name: str, kwargs: Mapping[str, Any], dtype: Any) -> Estimate | None:
    """Build the demo model on the meta device (no memory) and count its tensors, tied ones once."""
    import torch

    from nbmodels.core.demo import DEMO_MODELS

    factory = DEMO_MODELS.get(name)
    if factory is None:
        return None
    with torch.device("meta"):
        model = factory(**kwargs)
    itemsize = dtype_itemsize(dtype)
    total = 0
    for tensor in [*model.parameters(), *model.buffers()]:  # parameters() yields a tied weight once
        each = itemsize if itemsize is not None and tensor.is_floating_point() else tensor.element_size()
        total += tensor.numel() * each
    return Estimate(total, "the demo model built on the meta device")


__all__ = ["Estimate", "bytes_in", "dtype_itemsize", "estimate", "read_header", "tensor_sizes"]
