"""How arguments and results cross between the kernel and a worker process.

- A small CPU tensor (up to :data:`INLINE_BYTES`) travels inline, as the bytes of a
  numpy view: about 10 µs, where torch's own pickling costs 150 µs and shared memory more.
- A larger CPU tensor goes through shared memory (torch.multiprocessing's reduction):
  its storage moves into shared memory once and the other side maps the same pages, so
  nothing is copied again, and an in-place change made by the worker is seen by the
  caller, as it would be in one process.
- A CUDA tensor goes as a CUDA IPC handle (torch's reduction, one machine only): the
  other side opens the same device memory, and the sender keeps the block alive while
  the receiver uses it (torch counts the references). A CUDA tensor that reaches the
  kernel gives the kernel a CUDA context; ``results_on_cpu`` moves results to the CPU
  in the worker instead.
- Autograd does not cross: a tensor that is the output of a graph arrives detached
  (leaf tensors keep ``requires_grad``).
- Everything else goes by pickle. An object defined in ``__main__`` (a notebook cell)
  cannot be rebuilt on the other side, so it is refused before anything is sent.
"""

from __future__ import annotations

import io
import pickle
import sys
import types
from collections.abc import Iterator
from multiprocessing.reduction import ForkingPickler
from typing import Any

INLINE_BYTES = 1 << 20
"""CPU tensors up to this size are copied inline; larger ones go through shared memory."""

_MAX_DEPTH = 6


class NotTransferable(TypeError):
    """Raised while pickling: ``what`` names the object that cannot cross, ``why`` says why."""

    def __init__(self, what: str, why: str) -> None:
        self.what = what
        self.why = why
        super().__init__(f"{what}: {why}")


def _rebuild_inline(data: Any, dtype: Any, requires_grad: bool, parameter: bool) -> Any:
    import torch

    tensor = torch.from_numpy(data).view(dtype)
    if parameter:
        return torch.nn.Parameter(tensor, requires_grad=requires_grad)
    if requires_grad:
        tensor.requires_grad_()
    return tensor


_SAME_SIZE_INT: dict[int, str] = {1: "uint8", 2: "int16", 4: "int32", 8: "int64"}


def _reduce_tensor(tensor: Any, results_on_cpu: bool) -> Any:
    import torch
    from torch.multiprocessing import reductions

    if tensor.requires_grad and not tensor.is_leaf:
        tensor = tensor.detach()  # the graph lives in the other process; only values cross
    if results_on_cpu and tensor.device.type == "cuda":
        tensor = tensor.cpu()
    plain = type(tensor) in (torch.Tensor, torch.nn.Parameter)
    if plain and tensor.device.type == "cpu" and tensor.layout == torch.strided and not tensor.is_quantized:
        size = tensor.element_size()
        if size in _SAME_SIZE_INT and tensor.numel() * size <= INLINE_BYTES:
            view = tensor.detach().contiguous().view(getattr(torch, _SAME_SIZE_INT[size]))
            parameter = isinstance(tensor, torch.nn.Parameter)
            return _rebuild_inline, (view.numpy(), tensor.dtype, tensor.requires_grad, parameter)
    if tensor.device.type in ("cpu", "cuda"):
        return reductions.reduce_tensor(tensor)  # type: ignore[no-untyped-call]
    return NotImplemented  # other devices (meta, mps): torch's own pickling


def _defined_in_main(obj: Any) -> bool:
    if isinstance(obj, type | types.FunctionType | types.BuiltinFunctionType):
        return getattr(obj, "__module__", None) == "__main__"
    return type(obj).__module__ == "__main__"


class _Pickler(ForkingPickler):
    """ForkingPickler (torch's sharing reductions) plus inline small tensors and the ``__main__`` check."""

    def __init__(self, file: io.BytesIO, *, results_on_cpu: bool, refuse_main: bool) -> None:
        super().__init__(file, pickle.HIGHEST_PROTOCOL)
        self._results_on_cpu = results_on_cpu
        self._refuse_main = refuse_main

    def reducer_override(self, obj: Any) -> Any:
        torch = sys.modules.get("torch")
        if torch is not None and isinstance(obj, torch.Tensor):
            return _reduce_tensor(obj, self._results_on_cpu)
        if self._refuse_main and _defined_in_main(obj):
            label = getattr(obj, "__qualname__", None) or type(obj).__qualname__
            kind = "a lambda" if label == "<lambda>" else repr(label)
            raise NotTransferable(
                f"{kind} ({_type_name(obj)})",
                "it is defined in the notebook (__main__), which the worker cannot import; "
                "move it into a module (a .py file next to the notebook) and import it from there",
            )
        return NotImplemented


def dumps(obj: Any, *, results_on_cpu: bool = False, refuse_main: bool = True) -> bytes:
    """Pickle ``obj`` for the other process; :class:`NotTransferable` names what cannot cross."""
    buffer = io.BytesIO()
    try:
        _Pickler(buffer, results_on_cpu=results_on_cpu, refuse_main=refuse_main).dump(obj)
    except NotTransferable:
        raise
    except Exception as exc:
        what = _first_unpicklable(obj, refuse_main)
        raise NotTransferable(what, f"it cannot be pickled ({type(exc).__name__}: {exc})") from exc
    return buffer.getvalue()


def loads(data: bytes) -> Any:
    return pickle.loads(data)


def _type_name(obj: Any) -> str:
    kind = type(obj)
    return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"


def _items(obj: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield f"[{key!r}]", value
    elif isinstance(obj, list | tuple):
        for index, value in enumerate(obj):
            yield f"[{index}]", value
    elif isinstance(obj, set | frozenset):
        for value in obj:
            yield "{...}", value


def _first_unpicklable(obj: Any, refuse_main: bool, path: str = "", depth: int = 0) -> str:
    """Where in ``obj`` the first object that does not pickle sits, and its type: ``[1]['x'] (generator)``."""
    if depth < _MAX_DEPTH:
        for step, value in _items(obj):
            try:
                _Pickler(io.BytesIO(), results_on_cpu=False, refuse_main=refuse_main).dump(value)
            except Exception:
                return _first_unpicklable(value, refuse_main, path + step, depth + 1)
    return f"{path} ({_type_name(obj)})".lstrip() if path else f"a {_type_name(obj)}"
