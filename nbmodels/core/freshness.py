"""Noticing, cheaply, that a loaded model changed since it was measured.

``list()`` describes each model as it is now (after ``model.half()``, after a layer
was added), and stays under a millisecond for a hundred models; measuring a model
walks every tensor, which for a hundred transformers takes far longer. So a
:class:`Measurement` keeps what it takes to notice a change without that walk:

- torch's global registration hooks (``register_module_*_registration_hook``) log
  every parameter, buffer and submodule assigned to any module; a model changed
  when one of *its* modules is in that log (``model.head = nn.Linear(...)``,
  ``layers.append(...)``, pruning, PEFT adapters, ``load_state_dict(assign=True)``);
- a few of its tensors, spread over the model, by weak reference with their data
  pointers: ``.half()``, ``.to()`` and the other conversions give each tensor new
  memory (or replace a buffer), so the samples move;
- for a dict or list of tensors, its length.

What these miss (new data for one tensor that is not a sample, a deleted
submodule) ``info(name)`` still sees: it always measures again. Nothing here holds
a model or a tensor: module ids and weak references only.
"""

from __future__ import annotations

import dataclasses
import sys
import threading
import weakref
from collections import deque
from typing import Any

from nbmodels.core import composite, memory

SAMPLES = 8
_LOG_SIZE = 4096


class _RegistrationLog:
    """Ids of the modules that got a parameter, buffer or submodule assigned, numbered in order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: deque[tuple[int, int]] = deque(maxlen=_LOG_SIZE)
        self._count = 0
        self._last_query: tuple[int, int, frozenset[int] | None] = (0, 0, frozenset())

    def record(self, module: Any, name: str, value: Any) -> None:
        """The hook torch calls on every registration (returns None: the value is kept as it is)."""
        with self._lock:
            self._count += 1
            self._events.append((self._count, id(module)))

    def latest(self) -> int:
        with self._lock:
            return self._count

    def since(self, seen: int) -> tuple[int, frozenset[int] | None]:
        """(the latest number, ids of modules touched after ``seen``); None when the log no longer reaches back."""
        with self._lock:
            latest = self._count
            if latest == seen:
                return latest, frozenset()
            if self._last_query[:2] == (seen, latest):  # every entry of a list() asks the same question
                return latest, self._last_query[2]
            touched: frozenset[int] | None
            if not self._events or self._events[0][0] > seen + 1:
                touched = None
            else:
                ids = set()
                for number, module_id in reversed(self._events):
                    if number <= seen:
                        break
                    ids.add(module_id)
                touched = frozenset(ids)
            self._last_query = (seen, latest, touched)
            return latest, touched


_log = _RegistrationLog()
_hooks_lock = threading.Lock()
_hooked = False


def _install_hooks() -> None:
    """Register the log with torch once per process (torch is imported by then: a model exists)."""
    global _hooked
    if _hooked:
        return
    with _hooks_lock:
        if _hooked:
            return
        from torch.nn.modules import module as torch_module

        torch_module.register_module_parameter_registration_hook(_log.record)
        torch_module.register_module_buffer_registration_hook(_log.record)
        torch_module.register_module_module_registration_hook(_log.record)
        _hooked = True


def _pointer(tensor: Any) -> int:
    try:
        return int(tensor.data_ptr())
    except (RuntimeError, TypeError, AttributeError):  # sparse and some subclass tensors have no data pointer
        return -1


def _spread(items: list[Any], count: int) -> list[Any]:
    """``count`` items spread evenly from the first to the last (all of them when there are few)."""
    if len(items) <= count:
        return items
    last = len(items) - 1
    return [items[round(i * last / (count - 1))] for i in range(count)]


def _walk(model: Any) -> tuple[frozenset[int], list[Any], int | None]:
    """One pass over a module tree: the ids of its modules, its tensors (each once), its parameter count.

    Reads torch's own registries (``_modules``, ``_parameters``, ``_buffers``):
    about twice as fast as ``modules()`` plus ``parameters()`` plus ``buffers()``,
    which walk the tree three times through generators.
    """
    torch = sys.modules.get("torch")
    if torch is None:
        return frozenset(), [], None
    if not isinstance(model, torch.nn.Module):  # a composite's modules, so that a change to one is noticed
        return _tree(composite.modules(model))[0], memory.tensors_of(model), None
    return _tree([model])


def _tree(roots: list[Any]) -> tuple[frozenset[int], list[Any], int | None]:
    """The walk of :func:`_walk` over module trees from ``roots`` (no parameter count for a quantized one)."""
    modules: set[int] = set()
    tensors: dict[int, Any] = {}
    parameters = 0
    packed = False  # a quantized module keeps weights outside its registries: measured the slow way
    stack = list(reversed(roots))
    while stack:
        module = stack.pop()
        if id(module) in modules:
            continue
        modules.add(id(module))
        packed = packed or "quantized" in type(module).__module__
        for parameter in module._parameters.values():
            if parameter is not None and id(parameter) not in tensors:
                tensors[id(parameter)] = parameter
                parameters += parameter.numel()
        for buffer in module._buffers.values():
            if buffer is not None:
                tensors.setdefault(id(buffer), buffer)
        stack.extend(child for child in reversed(module._modules.values()) if child is not None)
    return frozenset(modules), list(tensors.values()), None if packed else parameters


class Measurement:
    """A model's footprint, and what it takes to notice later, cheaply, that the model changed."""

    __slots__ = ("_length", "_modules", "_samples", "_seen", "footprint")

    def __init__(self, model: Any) -> None:
        if "torch" in sys.modules:
            _install_hooks()
        self._seen = _log.latest()  # read before the walk: a change made during it counts as after it
        self._modules, tensors, parameters = _walk(model)
        if parameters is None or len(tensors) >= memory._MAX_WALK_ITEMS:
            self.footprint = memory.footprint(model)
        else:  # the tensors once each, counted as footprint() counts them (a storage once)
            self.footprint = dataclasses.replace(memory.footprint(tensors), parameters=parameters)
        self._samples = tuple((weakref.ref(t), _pointer(t)) for t in _spread(tensors, SAMPLES))
        self._length = len(model) if isinstance(model, dict | list | tuple) else None

    def is_current(self, model: Any) -> bool:
        """False when ``model`` shows a change since this measurement (then measure it again)."""
        latest, touched = _log.since(self._seen)
        if touched is None or not self._modules.isdisjoint(touched):
            return False
        try:  # a list() asks this of every model: the common case stays a plain loop
            for ref, pointer in self._samples:
                tensor = ref()
                if tensor is None or tensor.data_ptr() != pointer:
                    return False
        except (RuntimeError, TypeError, AttributeError):  # a tensor without a data pointer: compare as measured
            if any((t := ref()) is None or _pointer(t) != pointer for ref, pointer in self._samples):
                return False
        if self._length is not None and len(model) != self._length:
            return False
        self._seen = latest  # nothing of this model changed up to here: the next check starts from now
        return True


__all__ = ["SAMPLES", "Measurement"]
