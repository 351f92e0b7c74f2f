"""Out of memory: recognise it, find the device, and account for what holds that device's memory.

Used twice: when a loader runs out of memory (the manager evicts and retries
once, and says what holds the memory when nothing can be evicted), and after a
cell that raised ``torch.OutOfMemoryError`` (the IPython layer prints the
account under the traceback). The account is data: the device's reading, the
models there with their bytes, released models still alive there with what
holds them, and the one command that frees the most. Remedies are data too;
the front end spells them (``%unload_model x`` in IPython, ``mgr.unload('x')``
in Python).
"""

from __future__ import annotations

import re
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from nbmodels.core.memory import DeviceMemory, describe_reading, format_bytes
from nbmodels.core.policy.sizes import format_duration

_GPU_INDEX = re.compile(r"\bGPU (\d+)\b")


def is_out_of_memory(error: BaseException | None) -> bool:
    """A ``MemoryError`` or torch's ``OutOfMemoryError`` (CUDA, MPS, XPU)."""
    if error is None:
        return False
    if isinstance(error, MemoryError):
        return True
    torch = sys.modules.get("torch")
    oom = getattr(torch, "OutOfMemoryError", None) if torch is not None else None
    return isinstance(oom, type) and isinstance(error, oom)


def out_of_memory_in(error: BaseException | None) -> BaseException | None:
    """The out-of-memory error in ``error``'s chain (itself, its cause, its context), or None."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if is_out_of_memory(error):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def device_of(error: BaseException, default_cuda: str = "cuda:0") -> str:
    """The device an out-of-memory error is about: ``cpu`` for MemoryError, ``cuda:N`` from torch's message."""
    if isinstance(error, MemoryError):
        return "cpu"
    text = str(error)
    match = _GPU_INDEX.search(text)
    if match is not None:
        return f"cuda:{match.group(1)}"
    if "MPS" in text:
        return "mps"
    if "XPU" in text:
        return "xpu"
    return default_cuda


def forget_frames(error: BaseException | None) -> None:
    """Clear the finished frames of ``error`` and of the errors it wraps.

    A loader that ran out of memory leaves its half-built model in its frames'
    locals; a retry must not start with that memory still taken.
    """
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if error.__traceback__ is not None:
            traceback.clear_frames(error.__traceback__)
        error = error.__cause__ or error.__context__


@dataclass(frozen=True)
class LoadedModel:
    """A loaded model with bytes on the device; ``held``: something else holds it too (force needed)."""

    name: str
    nbytes: int
    pinned: bool = False
    last_used: float = 0.0
    held_by: tuple[str, ...] = ()
    fix: str = ""  # the command that frees it when it is held

    @property
    def held(self) -> bool:
        return bool(self.held_by)


@dataclass(frozen=True)
class StillHeld:
    """A released model whose storages on the device are still alive, and what holds it."""

    name: str
    nbytes: int
    held_by: tuple[str, ...] = ()
    fix: str = ""  # empty when force cannot free it


@dataclass(frozen=True)
class Remedy:
    """One command: unload a model or clean up everything, with or without force, and what it frees."""

    kind: Literal["unload", "cleanup"]
    name: str | None
    force: bool
    frees: int
    fix: str = ""  # the exact command when force needs holders named (from the holder search)


_ORDER = {("unload", False): 0, ("unload", True): 1, ("cleanup", False): 2, ("cleanup", True): 3}


def best_remedy(models: Sequence[LoadedModel], held: Sequence[StillHeld]) -> Remedy | None:
    """The single command that frees the most on the device; of equals, the one that touches least."""
    options: list[Remedy] = []
    for model in models:
        force = model.held
        frees = model.nbytes if not force or model.fix else 0
        options.append(Remedy("unload", model.name, force, frees, model.fix if force else ""))
    for survivor in held:
        options.append(Remedy("unload", survivor.name, True, survivor.nbytes if survivor.fix else 0, survivor.fix))
    plain = sum(m.nbytes for m in models if not m.held)
    options.append(Remedy("cleanup", None, False, plain))
    forced = plain + sum(m.nbytes for m in models if m.held and m.fix) + sum(s.nbytes for s in held if s.fix)
    options.append(Remedy("cleanup", None, True, forced))
    best = min(options, key=lambda r: (-r.frees, _ORDER[(r.kind, r.force)]))
    return best if best.frees > 0 else None


@dataclass(frozen=True)
class Spelling:
    """How a front end writes the remedies: ``{name}`` and ``{force}`` are filled in."""

    unload: str
    cleanup: str
    force: str
    force_alone: str = ""  # ``{force}`` when it is the only argument (``cleanup(force=True)``)

    def command(self, remedy: Remedy) -> str:
        if remedy.fix:  # the holder search's exact command (with the holders to allow)
            return remedy.fix
        force = (self.force_alone or self.force) if remedy.kind == "cleanup" else self.force
        template = self.unload if remedy.kind == "unload" else self.cleanup
        return template.format(name=remedy.name, force=force if remedy.force else "")


API = Spelling(
    unload="nbmodels.get_manager().unload({name!r}{force})",
    cleanup="nbmodels.get_manager().cleanup({force})",
    force=", force=True",
    force_alone="force=True",
)


@dataclass(frozen=True)
class MemoryAccount:
    """What holds a device's memory, for a message after an out-of-memory error."""

    device: str
    reading: DeviceMemory | None
    models: tuple[LoadedModel, ...]
    held: tuple[StillHeld, ...] = ()
    remedy: Remedy | None = None
    now: float = field(default_factory=time.time)

    @property
    def model_bytes(self) -> int:
        return sum(m.nbytes for m in self.models)

    def lines(self, command: Callable[[Remedy], str] = API.command) -> list[str]:
        """The account in a few lines; ``command`` spells a remedy for the front end."""
        reading = describe_reading(self.reading) if self.reading is not None else "no reading of it (not in use here)"
        lines = [f"out of memory on {self.device}: {reading}"]
        if self.models:
            lines.append(f"  models on {self.device}: " + ", ".join(self._model_text(m) for m in self.models))
        else:
            lines.append(f"  no model loaded by nbmodels is on {self.device}")
        for survivor in self.held:
            holders = ", ".join(survivor.held_by) or "something outside Python's view"
            lines.append(
                f"  released but still alive: {survivor.name} {format_bytes(survivor.nbytes)}, held by {holders}"
            )
        other = self._other_bytes()
        if other is not None and other > 0:
            what = (
                "tensors of your code, activations, the failed cell's frames"
                if self.device != "cpu"
                else ("the rest of this process")
            )
            lines.append(f"  other memory on {self.device} ({what}): {format_bytes(other)}")
        if self.remedy is not None:
            lines.append(f"  frees the most: {command(self.remedy)} ({format_bytes(self.remedy.frees)})")
        else:
            lines.append("  nothing nbmodels manages there can be freed")
        return lines

    def _model_text(self, model: LoadedModel) -> str:
        notes = []
        if model.pinned:
            notes.append("pinned")
        if model.held:
            notes.append(f"also held by {', '.join(model.held_by)}")
        if not notes:
            notes.append(f"idle {format_duration(max(self.now - model.last_used, 0.0))}")
        return f"{model.name} {format_bytes(model.nbytes)} ({'; '.join(notes)})"

    def _other_bytes(self) -> int | None:
        if self.reading is None:
            return None
        return self.reading.used - self.model_bytes - sum(s.nbytes for s in self.held)


__all__ = [
    "API",
    "LoadedModel",
    "MemoryAccount",
    "Remedy",
    "Spelling",
    "StillHeld",
    "best_remedy",
    "device_of",
    "forget_frames",
    "is_out_of_memory",
    "out_of_memory_in",
]
