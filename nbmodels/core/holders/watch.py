"""Weak references taken when a model is released: the model, its modules, tensors and storages.

Memory is held by storages, not by tensor objects: ``best = model.state_dict()``,
``w = layer.weight.detach()``, a view or ``.data`` keep a storage alive after
the module and its parameter objects are gone. So a release watches each
unique storage (``StorageWeakRef``, which keeps no memory alive) with its
bytes and device as they are *at release time*, and counts as freed only the
bytes of storages that died. The model, its submodules and its tensors are
watched too: they are what the holder search recognises as the model's parts.
"""

from __future__ import annotations

import sys
import weakref
from collections.abc import Iterator
from typing import Any, NamedTuple

from nbmodels.core import composite, memory, storage_origin
from nbmodels.core.storage_origin import OWNED, OWNED_ORIGIN, Origin


class StorageRecord(NamedTuple):
    """One storage of a released model: a weak reference, its identity, device, size and a name."""

    ref: Any  # torch.multiprocessing.reductions.StorageWeakRef
    key: int  # the storage's address: its identity while the weak reference lives
    device: str
    nbytes: int
    name: str  # the first tensor of the model that uses it: 'fc.weight'
    origin: Origin = OWNED_ORIGIN  # whose memory it is: only torch's own comes back when it dies

    def alive(self) -> bool:
        return not self.ref.expired()


class _PackedRef:
    """A weak reference to packed weights (a ``torch.ScriptObject``) that answers as a StorageWeakRef does."""

    __slots__ = ("_ref",)

    def __init__(self, obj: Any) -> None:
        self._ref = weakref.ref(obj)

    def expired(self) -> bool:
        return self._ref() is None


def _weak(obj: Any) -> weakref.ref[Any] | None:
    try:
        return weakref.ref(obj)
    except TypeError:
        return None


def storage_key(tensor: Any) -> int | None:
    """The identity of the storage under ``tensor`` (None for a meta or sparse tensor)."""
    if tensor.device.type == "meta" or tensor.layout is not _strided():
        return None
    return int(tensor.untyped_storage()._cdata)


def _strided() -> Any:
    return sys.modules["torch"].strided


def named_tensors(model: Any) -> Iterator[tuple[str, Any]]:
    """``(name, tensor)`` for every tensor of ``model``, shared ones under each name."""
    torch = sys.modules.get("torch")
    if torch is None:
        return
    if isinstance(model, torch.nn.Module):
        yield from model.named_parameters(remove_duplicate=False)
        yield from model.named_buffers(remove_duplicate=False)
        return
    if not isinstance(model, dict | list | tuple):
        for part_name, part in composite.parts(model):  # a pipeline's unet: 'unet.conv.weight'
            if isinstance(part, torch.nn.Module):
                yield from ((f"{part_name}.{name}", t) for name, t in part.named_parameters(remove_duplicate=False))
                yield from ((f"{part_name}.{name}", t) for name, t in part.named_buffers(remove_duplicate=False))
            else:
                yield part_name, part
        return
    for index, tensor in enumerate(memory.tensors_of(model)):
        yield f"tensor {index}", tensor


class Watch:
    """What a release keeps of one model: weak references only, so watching never keeps it alive."""

    __slots__ = ("_counted", "_model", "_modules", "_tensors", "name", "storages")

    def __init__(self, name: str, model: Any) -> None:
        self.name = name
        self._model = _weak(model)
        torch = sys.modules.get("torch")
        if torch is not None and isinstance(model, torch.nn.Module):
            modules = list(model.modules())[1:]
        else:  # a composite (a pipeline, a dict of models): every module of every part is a part of it
            modules = list({id(m): m for part in composite.modules(model) for m in part.modules()}.values())
        self._modules = [ref for ref in map(_weak, modules) if ref is not None]
        del modules
        self._tensors: list[weakref.ref[Any]] = []
        storages: dict[int, StorageRecord] = {}
        kept: list[Any] = []  # the storages, until their origins are read (a file's, a numpy array's, torch's)
        for tensor_name, tensor in named_tensors(model):
            ref = _weak(tensor)
            if ref is not None:
                self._tensors.append(ref)
            for part in memory.dense_parts(tensor):
                key = storage_key(part)
                if key is None or key in storages:
                    continue
                storage = part.untyped_storage()
                record = StorageRecord(
                    torch.multiprocessing.reductions.StorageWeakRef(storage),  # type: ignore[union-attr]
                    key,
                    str(part.device),
                    int(storage.nbytes()),
                    tensor_name,
                )
                storages[key] = record
                kept.append(storage)
                del storage
        origins = storage_origin.origins(kept)
        del kept
        packed = [  # quantized weights live in C++ objects outside any storage: watched by weak reference
            StorageRecord(_PackedRef(item.obj), id(item.obj), item.device, item.nbytes, f"{item.name} (packed)")
            for item in memory.packed_weights(model)
            if item.nbytes is not None
        ]
        self.storages = (
            *(
                record if origin is OWNED_ORIGIN else record._replace(origin=origin)
                for record, origin in zip(storages.values(), origins, strict=True)
            ),
            *packed,
        )
        del packed
        self._counted: set[int] = set()  # storages already reported as freed

    # --- what lives ----------------------------------------------------------------------------

    def model(self) -> Any:
        """The model object if it still lives (a strong reference: drop it soon)."""
        return self._model() if self._model is not None else None

    def model_alive(self) -> bool:
        return self._model is not None and self._model() is not None

    def alive(self) -> bool:
        """True while the model object or any of its storages lives."""
        return self.model_alive() or any(record.alive() for record in self.storages)

    def live_storages(self) -> list[StorageRecord]:
        return [record for record in self.storages if record.alive()]

    def tensors(self) -> list[Any]:
        """The model's tensor objects (parameters, buffers) that still live."""
        return [t for t in (ref() for ref in self._tensors) if t is not None]

    def modules(self) -> list[Any]:
        """The model's submodules that still live."""
        return [m for m in (ref() for ref in self._modules) if m is not None]

    def what(self) -> str:
        """What survives, in words: the model, or how many of its storages and their bytes."""
        live = self.live_storages()
        size = memory.format_bytes(sum(r.nbytes for r in live))
        if self.model_alive():
            return f"the model ({size})" if self.storages else "the model"
        return f"{len(live)} of its {len(self.storages)} storages ({size})"

    # --- what came back ------------------------------------------------------------------------

    def take_freed(self) -> dict[str, int]:
        """Bytes per device of torch-owned storages that died and were not counted before (each counted once).

        A storage over a file's pages or another object's memory frees nothing when
        it dies: :meth:`take_not_owned` counts those.
        """
        freed: dict[str, int] = {}
        for record in self.storages:
            if record.origin.kind == OWNED and record.key not in self._counted and not record.alive():
                self._counted.add(record.key)
                freed[record.device] = freed.get(record.device, 0) + record.nbytes
        return freed

    def take_not_owned(self) -> dict[Origin, int]:
        """Bytes per origin of storages that died over memory torch does not own (mapped, borrowed), counted once."""
        let_go: dict[Origin, int] = {}
        for record in self.storages:
            if record.origin.kind != OWNED and record.key not in self._counted and not record.alive():
                self._counted.add(record.key)
                let_go[record.origin] = let_go.get(record.origin, 0) + record.nbytes
        return let_go


__all__ = ["StorageRecord", "Watch", "named_tensors", "storage_key"]
