"""The census: every live tensor storage that Python can see, found in one pass over the tracked objects.

Memory is held by storages, not tensor objects: views, ``.data``, a
``state_dict()`` copy and tied weights share one storage, counted once. The
census keeps only weak references (``StorageWeakRef``) and plain numbers, so
taking it keeps nothing alive. Storages that no Python tensor reaches (the
activations an autograd graph saved) are invisible here; the walk finds them.
"""

from __future__ import annotations

import gc
import sys
from dataclasses import dataclass
from itertools import compress
from typing import Any

from nbmodels.core.memory import dense_parts


@dataclass(frozen=True, slots=True)
class StorageInfo:
    """One storage: its identity while it lives, device, bytes, and a weak reference to it."""

    key: int  # the StorageImpl's address (``untyped_storage()._cdata``): identity while the storage lives
    device: str
    nbytes: int
    ref: Any  # torch.multiprocessing.reductions.StorageWeakRef: holds no memory
    borrowed: bool = False  # memory torch did not allocate (``from_numpy``, ``frombuffer``, a mapped file)

    def alive(self) -> bool:
        return not self.ref.expired()


def storages_of(tensor: Any) -> list[StorageInfo]:
    """The storages under ``tensor`` (a sparse tensor has several; meta tensors none)."""
    if tensor.device.type == "meta":
        return []
    found = []
    for part in dense_parts(tensor):
        if part.layout is not sys.modules["torch"].strided:
            continue
        try:
            storage = part.untyped_storage()
        except (RuntimeError, NotImplementedError):  # a tensor subclass without storage (functional, fake)
            continue
        found.append(_info(storage))
    return found


def _info(storage: Any) -> StorageInfo:
    reductions = sys.modules["torch"].multiprocessing.reductions
    return StorageInfo(
        key=int(storage._cdata),
        device=str(storage.device),
        nbytes=int(storage.nbytes()),
        ref=reductions.StorageWeakRef(storage),
        borrowed=_borrowed(storage),
    )


def _borrowed(storage: Any) -> bool:
    """True when freeing the storage gives nothing back to torch's allocator (its memory is someone else's)."""
    if storage.device.type != "cpu" or storage.nbytes() == 0:
        return False
    try:
        return not bool(storage.resizable())  # from_numpy / frombuffer / mmap storages cannot be resized
    except RuntimeError:
        return False


def tensor_types(root: type) -> frozenset[type]:
    """``root`` and every class derived from it (``Parameter``, ``Buffer``, a library's tensor subclass)."""
    found: set[type] = set()
    stack = [root]
    while stack:
        kind = stack.pop()
        if kind not in found:
            found.add(kind)
            stack.extend(type.__subclasses__(kind))
    return frozenset(found)


def census() -> dict[int, StorageInfo]:
    """Every storage under a live Python tensor (parameters included), by key; nothing is kept strongly."""
    torch = sys.modules.get("torch")
    if torch is None:
        return {}
    tensor_type = torch.Tensor
    found: dict[int, StorageInfo] = {}
    objects = gc.get_objects()
    try:
        # One pass at C speed over the objects, keeping those whose type is a tensor type (never
        # isinstance(): it reads ``__class__``, a property on some objects, deprecation shims among them).
        kinds = tensor_types(tensor_type)
        tensors = list(compress(objects, map(kinds.__contains__, map(type, objects))))
    finally:
        del objects
    try:
        for tensor in tensors:
            for info in storages_of(tensor):
                found.setdefault(info.key, info)
    finally:
        del tensors
    return found


__all__ = ["StorageInfo", "census", "storages_of", "tensor_types"]
