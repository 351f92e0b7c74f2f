"""Checking device and dtype names before anything is loaded.

A typo such as ``"gpu"`` or ``"float17"`` must fail before a slow load starts,
and with a message that lists what would have worked.
"""

from __future__ import annotations

import re
import sys
from typing import TYPE_CHECKING, Any

from nbmodels.errors import InvalidArgumentError

if TYPE_CHECKING:
    import torch

_DEVICE_PATTERN = re.compile(r"^(cpu|meta|mps|auto|cuda)(?::(-?\d+))?$")

DTYPE_ALIASES: dict[str, str] = {
    "float32": "float32",
    "float": "float32",
    "fp32": "float32",
    "float16": "float16",
    "half": "float16",
    "fp16": "float16",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float64": "float64",
    "double": "float64",
    "fp64": "float64",
}


def cuda_device_count() -> int:
    """How many CUDA devices torch can see, without creating a CUDA context."""
    import torch

    if not torch.cuda.is_available():
        return 0
    return int(torch.cuda.device_count())


def cuda_initialized() -> bool:
    """True once this process has a CUDA context (never imports torch itself)."""
    torch = sys.modules.get("torch")
    return bool(torch is not None and torch.cuda.is_initialized())


def parse_device_name(device: Any) -> tuple[str, str | None]:
    """Check how a device is written, without importing torch: ``(kind, index)``, e.g. ``("cuda", "1")``.

    Whether the machine has that device is :func:`normalize_device`'s business.
    """
    text = str(device).strip().lower()
    match = _DEVICE_PATTERN.match(text)
    if match is None:
        hint = " (torch calls a GPU 'cuda')" if text.startswith("gpu") else ""
        raise InvalidArgumentError(f"unknown device {device!r}{hint}; use 'cpu', 'cuda', 'cuda:N', 'mps' or 'auto'")
    kind, index = match.group(1), match.group(2)
    if index is not None and index.startswith("-"):
        raise InvalidArgumentError(
            f"unknown device {device!r}: a device index cannot be negative; use 'cuda:0' or 'cpu'"
        )
    if kind == "auto" and index is not None:
        raise InvalidArgumentError(f"unknown device {device!r}; 'auto' takes no index")
    if kind in ("cpu", "meta") and index not in (None, "0"):
        raise InvalidArgumentError(f"unknown device {device!r}; use {kind!r}")
    return kind, index


def normalize_device(device: Any) -> str | None:
    """Return a canonical device string ("cpu", "cuda:0", ...) or None for "leave it".

    ``"auto"`` picks the first CUDA device when there is one, else the CPU.
    """
    if device is None:
        return None
    kind, index = parse_device_name(device)
    if kind == "auto":
        return "cuda:0" if cuda_device_count() > 0 else "cpu"
    if kind in ("cpu", "meta"):
        return kind
    if kind == "mps":
        import torch

        if not torch.backends.mps.is_available():
            raise InvalidArgumentError(f"device {device!r} is not available on this machine; use 'cpu'")
        return "mps"
    count = cuda_device_count()
    wanted = int(index) if index is not None else 0
    if wanted >= count:
        have = f"devices cuda:0 to cuda:{count - 1}" if count else "no CUDA device"
        raise InvalidArgumentError(f"device {device!r} is not available: this machine has {have}; use 'cpu' or 'auto'")
    return f"cuda:{wanted}"


def dtype_name(dtype: Any) -> str:
    """The canonical name of a dtype written as text ("fp16" -> "float16"), without importing torch."""
    canonical = DTYPE_ALIASES.get(str(dtype).strip().lower().removeprefix("torch."))
    if canonical is None:
        names = ", ".join(sorted(set(DTYPE_ALIASES.values())))
        raise InvalidArgumentError(f"unknown dtype {dtype!r}; use one of {names}")
    return canonical


def normalize_dtype(dtype: Any) -> torch.dtype | None:
    """Map a dtype name ("fp16", "bfloat16", torch.float32) to a torch floating dtype."""
    if dtype is None:
        return None
    import torch

    if isinstance(dtype, torch.dtype):
        if not dtype.is_floating_point:  # nn.Module.to() refuses them, but only after the slow load
            names = ", ".join(sorted(set(DTYPE_ALIASES.values())))
            raise InvalidArgumentError(f"dtype {dtype} is not a floating-point dtype; use one of {names}")
        return dtype
    result: torch.dtype = getattr(torch, dtype_name(dtype))
    return result


def place(model: Any, device: str | None, dtype: Any) -> Any:
    """``model.to(device)`` then ``.to(dtype)``, each only when asked; a clear error for an object without ``.to()``."""
    if device is None and dtype is None:
        return model
    move = getattr(model, "to", None)
    if move is None:  # a dict or list of models, an object holding them: each part moves
        from nbmodels.core import composite

        return composite.move(model, device, dtype)
    if device is not None:
        model = move(device)
    if dtype is not None:
        model = model.to(dtype)
    return model
