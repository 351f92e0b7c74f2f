"""The model's side of an isolated model: load it, run calls on it, read it, measure it.

One :class:`ModelHost` lives in each worker process and in each Ray actor; it knows
nothing of pipes or Ray, so both runners share it.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from typing import Any

from nbmodels.core import memory
from nbmodels.core.devices import place
from nbmodels.core.runners.portable import WorkerSpec
from nbmodels.core.runners.protocol import IsCallable, Loaded, SelfRef
from nbmodels.core.runners.readings import WorkerMemory, own_memory
from nbmodels.errors import ModelLoadError


def _adopt(spec: WorkerSpec) -> None:
    """Take the kernel's ``sys.path`` and working folder, so sources mean the same here."""
    own = [entry for entry in sys.path if entry not in spec.sys_path]
    sys.path[:] = [*spec.sys_path, *own]
    with contextlib.suppress(OSError):  # a folder that does not exist here (another machine): keep ours
        os.chdir(spec.cwd)


class ModelHost:
    """Holds one model and serves what the kernel asks of it."""

    def __init__(self) -> None:
        self.model: Any = None
        self.name = "?"

    def load(self, spec: WorkerSpec, *, device: str | None = None) -> Loaded:
        """Load the model of ``spec``; ``device`` overrides ``spec.device`` (Ray maps GPUs to cuda:0)."""
        if self.model is not None:
            raise ModelLoadError(spec.name, f"this worker already holds model {self.name!r}")
        import torch  # noqa: F401  (before the timer: a spare worker has it imported already)

        self.name = spec.name
        _adopt(spec)
        started = time.perf_counter()
        # The loader's own exception goes back as itself; the kernel wraps it as the manager does.
        model = spec.resolve().load(trust=spec.trust, kwargs=spec.kwargs)
        if model is None:
            raise ModelLoadError(
                spec.name, f"the loader of {spec.name!r} ({spec.text}) returned None; it must return the model"
            )
        model = place(model, device if device is not None else spec.device, spec.dtype)
        seconds = time.perf_counter() - started
        self.model = model
        return Loaded(type(model).__name__, memory.footprint(model), seconds, os.getpid())

    def _target(self, path: tuple[str, ...]) -> Any:
        if self.model is None:
            raise ModelLoadError(self.name, "no model is loaded in this worker")
        obj = self.model
        for part in path:
            obj = getattr(obj, part)
        return obj

    def call(self, path: tuple[str, ...], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Call the model (``path`` empty) or the callable at ``path``; keep the model here if it comes back."""
        function = self._target(path)
        result = function(*args, **kwargs)
        receiver = self._target(path[:-1]) if path else None
        if result is self.model:
            return SelfRef((), memory.footprint(self.model))
        if receiver is not None and result is receiver:
            return SelfRef(path[:-1], memory.footprint(self.model))
        return result

    def attribute(self, path: tuple[str, ...]) -> Any:
        """The value at ``path``, or :class:`IsCallable` for methods and submodules (which stay here)."""
        value = self._target(path)
        return IsCallable() if callable(value) else value

    def measure(self) -> memory.Footprint:
        return memory.footprint(self._target(()))

    def memory(self) -> WorkerMemory:
        return own_memory()

    def release(self) -> None:
        """Drop the model and give cached device memory back (before a polite exit)."""
        self.model = None
        memory.empty_cuda_cache()
