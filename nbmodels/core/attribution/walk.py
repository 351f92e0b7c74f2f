"""The walk: forward from one named value to every tensor storage it keeps alive, and how.

Cost follows the tensors' neighbourhood, not the heap: only objects the
garbage collector tracks are entered (an int, a str, a tuple of them, a dict
of them are untracked, so a million-item list of tuples of ints is skipped at C
speed), modules, classes, functions' globals and the boundaries (the shell,
the manager) are never entered, and a budget is checked for every object
entered. Each storage is reached with a *relation*, the way the value holds it
(see :class:`Relation`), lowest first: the walk takes objects in relation
order, so a module's weights reached from ``net`` count as the module's even
when an optimizer inside ``net`` also reaches them.
"""

from __future__ import annotations

import gc
import logging
import sys
import types
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum
from functools import partial
from typing import Any

from nbmodels.core.attribution.census import StorageInfo, storages_of

log = logging.getLogger("nbmodels")

_ATOMS = frozenset({int, float, bool, str, bytes, complex, type(None), range, slice})
_SKIP = (type, types.ModuleType, types.CodeType, types.BuiltinFunctionType)
_SUSPENDED = (types.GeneratorType, types.CoroutineType, types.AsyncGeneratorType)
_MAX_EXPR = 120
_MODULE_PARTS = ("_parameters", "_buffers", "_modules")


class Relation(IntEnum):
    """How a value holds a storage, the one a user would name first lowest."""

    MODULE = 0  # a parameter, buffer or attribute of a torch module the value is or holds
    DIRECT = 1  # a tensor the value is or holds (a variable, an item, an attribute, a local)
    OPTIMIZER = 2  # a parameter an optimizer lists (param_groups)
    STATE = 3  # an optimizer's state: exp_avg, exp_avg_sq, momentum_buffer
    GRAPH = 4  # saved by an autograd graph: activations a loss keeps for backward


@dataclass(slots=True)
class Reach:
    """How one value reaches one storage: the relation, a Python path, the words after the root, the optimizer."""

    relation: Relation
    expr: str | None  # Python for a tensor on it (``net.fc.weight``), when there is one
    suffix: str  # words after the root's name: `` → local 'big' of f()``
    optimizer: str | None = None  # Python for the optimizer whose state it is (``opt``)
    state_key: str = ""  # the state's key (``exp_avg``)
    depth: int = 0  # objects between the value and the tensor: the nearer holder is the one a user names
    view: bool = False  # reached through a view (``x[10:]``): the base's holder is the one a user names


@dataclass
class WalkResult:
    """What one walk found: storages (by key) with how they are reached, and whether the budget ran out."""

    reached: dict[int, Reach]
    storages: dict[int, StorageInfo]
    visited: int
    truncated: bool
    unreadable: int = 0  # objects that raised when read, skipped


class Walker:
    """Walks values forward; shared settings (boundaries, budget) and a per-type cache of saved-tensor names."""

    def __init__(self, boundaries: Iterable[Any] = (), *, budget: int = 200_000, total: int = 1_000_000) -> None:
        """``budget``: objects one walk may enter; ``total``: all walks together (so many big roots stay bounded)."""
        self.boundaries = {id(b) for b in boundaries}
        self.budget = budget
        self.left = total
        torch = sys.modules["torch"]
        self.torch = torch
        self.tensor = torch.Tensor
        self.module = torch.nn.Module
        self.optimizer = torch.optim.Optimizer
        self.node = torch.autograd.graph.Node
        self._saved: dict[type, tuple[str, ...]] = {}
        self.running = _running_frames()  # taken once: the walks run on this thread, one after the other

    def walk(self, value: Any, expr: str | None, known: dict[int, StorageInfo]) -> WalkResult:
        """Every storage ``value`` keeps alive; ``known`` (shared across walks) collects their records."""
        queues: list[deque[tuple[Any, Relation, str | None, str, str | None, str, int]]] = [deque() for _ in Relation]
        seen: set[int] = set()
        reached: dict[int, Reach] = {}
        found: dict[int, StorageInfo] = {}
        start = Relation.MODULE if issubclass(type(value), self.module) else Relation.DIRECT
        queues[start].append((value, start, expr, "", None, "", 0))
        visited = 0
        truncated = False
        running = self.running
        unreadable = 0
        held: list[Any] = []
        tensor, module, optimizer = self.tensor, self.module, self.optimizer
        while True:
            level = next((i for i, q in enumerate(queues) if q), -1)
            if level < 0:
                break
            obj, rel, path, suffix, opt, skey, depth = queues[level].popleft()
            if id(obj) in seen or id(obj) in self.boundaries:
                continue
            seen.add(id(obj))
            held.append(obj)  # ids stay unique while the walk runs: unpacked saved tensors are new objects
            visited += 1
            if visited > self.budget or visited > self.left:
                truncated = True
                break

            push = partial(_push, queues, seen, (rel, path, suffix, opt, skey, depth))
            try:  # an object that fails to be read (a tensor subclass, a dict changed by another thread)
                kind = type(obj)  # never isinstance(): it reads __class__, a property on some objects
                if issubclass(kind, tensor):
                    for info in storages_of(obj):
                        found[info.key] = known.setdefault(info.key, info)
                        if info.key not in reached:
                            reached[info.key] = Reach(rel, path, suffix, opt, skey, depth, obj._base is not None)
                    grad = obj.grad if obj.is_leaf else None
                    if grad is not None:
                        push(grad, rel, ".grad")
                    grad_fn = obj.grad_fn
                    if grad_fn is not None:
                        push(grad_fn, Relation.GRAPH, None)
                    attrs = _own_dict(obj)
                    if attrs:
                        for key, child in attrs.items():
                            push(child, rel, f".{key}")
                elif issubclass(kind, module):
                    attrs = _own_dict(obj) or {}
                    for part in _MODULE_PARTS:
                        entries = attrs.get(part)
                        if isinstance(entries, dict):
                            for key, child in list(entries.items()):
                                if child is not None:
                                    push(child, Relation.MODULE, _module_step(obj, key))
                    for key, child in list(attrs.items()):
                        if key not in _MODULE_PARTS:
                            push(child, Relation.MODULE, _attr_step(key))
                elif issubclass(kind, optimizer):
                    self._optimizer(obj, rel, path, suffix, depth, queues)
                elif issubclass(kind, self.node) or kind.__name__.endswith("Backward"):
                    self._node(obj, push)
                elif issubclass(kind, dict):
                    for key, child in _items(obj):
                        push(child, rel, _key_step(key))
                    for key in filter(gc.is_tracked, list(obj)):
                        push(key, rel, None)
                elif issubclass(kind, list | tuple):
                    items = list(obj)
                    if len(items) > 64:  # skip plain items at C speed
                        for child in filter(gc.is_tracked, items):
                            push(child, rel, None, "")
                    else:
                        for index, child in enumerate(items):
                            push(child, rel, f"[{index}]")
                elif issubclass(kind, set | frozenset | deque):
                    for child in filter(gc.is_tracked, list(obj)):
                        push(child, rel, None, "")
                elif issubclass(kind, BaseException):
                    push(obj.__traceback__, rel, None, "")
                    push(obj.__context__, rel, None)
                    push(obj.__cause__, rel, None)
                    push(obj.args, rel, None)
                elif kind is types.TracebackType:
                    push(obj.tb_frame, rel, None)
                    if obj.tb_next is not None:
                        push(obj.tb_next, rel, None)
                elif kind is types.FrameType:
                    self._frame(obj, push, running)
                elif kind is types.FunctionType:
                    for cell in obj.__closure__ or ():
                        try:
                            push(cell.cell_contents, rel, None, f" → a closure variable of {obj.__qualname__}()")
                        except ValueError:  # an empty cell
                            continue
                    push(obj.__defaults__, rel, None)
                    push(obj.__kwdefaults__, rel, None)
                elif kind is types.MethodType:
                    push(obj.__self__, rel, ".__self__")
                    push(obj.__func__, rel, None)
                elif kind is partial:
                    push(obj.func, rel, None)
                    push(obj.args, rel, None)
                    push(obj.keywords, rel, None)
                elif issubclass(kind, _SUSPENDED):
                    # Its locals through the collector's view of it, never ``gi_frame.f_locals``: on Python 3.11
                    # reading that leaves a snapshot dict on the frame that keeps the locals alive after it ends.
                    for child in gc.get_referents(obj):
                        push(child, rel, None, f" → a local of the suspended {obj.__qualname__}()")
                elif issubclass(kind, _SKIP):
                    pass
                else:
                    attrs = _own_dict(obj)
                    if attrs:
                        for key, child in attrs.items():
                            push(child, rel, _attr_step(key))
                    for key in _slots(type(obj)):
                        try:
                            push(object.__getattribute__(obj, key), rel, _attr_step(key))
                        except AttributeError:
                            continue
            except Exception as exc:  # is skipped and counted, never fails the report
                unreadable += 1
                # text, never the exception: a kept log record would hold its traceback, and this frame
                log.debug("nbmodels: the memory walk skipped a %s: %s", type(obj).__name__, str(exc))
            del obj, push, kind
        held.clear()
        self.left = max(self.left - visited, 0)
        return WalkResult(reached, found, visited, truncated, unreadable)

    def _optimizer(
        self, opt: Any, rel: Relation, path: str | None, suffix: str, depth: int, queues: list[deque[Any]]
    ) -> None:
        """Parameters the optimizer lists (OPTIMIZER) and its per-parameter state (STATE, with the key's name)."""
        for group in list(getattr(opt, "param_groups", [])):
            for param in list(group.get("params", [])):
                queues[max(Relation.OPTIMIZER, rel)].append(
                    (param, max(Relation.OPTIMIZER, rel), None, suffix, path, "", depth + 2)
                )
        state = getattr(opt, "state", None)
        if isinstance(state, dict):
            for per_param in list(state.values()):
                if isinstance(per_param, dict):
                    for key, value in list(per_param.items()):
                        if gc.is_tracked(value):
                            level = max(Relation.STATE, rel)
                            queues[level].append((value, level, None, suffix, path, str(key), depth + 3))

    def _node(self, node: Any, push: Any) -> None:
        """An autograd node: the nodes it leads to, the leaf it accumulates into, the tensors it saved."""
        for pair in getattr(node, "next_functions", ()) or ():
            if pair[0] is not None:
                push(pair[0], Relation.GRAPH, None)
        variable = getattr(node, "variable", None)
        if variable is not None:
            push(variable, Relation.GRAPH, None)
        names = self._saved.get(type(node))
        if names is None:
            names = self._saved[type(node)] = tuple(n for n in dir(node) if n.startswith("_saved_"))
        for name in names:
            try:
                saved = getattr(node, name)
            except Exception:  # freed by backward(), or saved tensor hooks that fail
                continue
            if issubclass(type(saved), self.tensor | list | tuple):
                push(saved, Relation.GRAPH, None)
        try:
            saved_tensors = getattr(node, "saved_tensors", None)  # a custom Function's ctx
        except Exception:
            saved_tensors = None
        if saved_tensors:
            push(saved_tensors, Relation.GRAPH, None)
        attrs = _own_dict(node)
        if attrs:
            for child in attrs.values():
                push(child, Relation.GRAPH, None)

    @staticmethod
    def _frame(frame: Any, push: Any, running: set[int]) -> None:
        """A finished frame of a traceback: its locals, named ``local 'x' of f()``, and its caller's.

        A frame keeps its caller (``f_back``) alive, so a kept traceback keeps
        the locals of every finished caller too. The walk stops at a
        module-level frame (a cell: its locals are the notebook's variables,
        named on their own; above it is the shell's machinery) and at frames
        still running (their locals are not kept by the traceback).
        """
        if id(frame) in running or frame.f_locals is frame.f_globals:
            return
        name = frame.f_code.co_name
        for key, child in list(frame.f_locals.items()):
            push(child, Relation.DIRECT, None, f" → local {key!r} of {name}()")
        if frame.f_back is not None:
            push(frame.f_back, Relation.DIRECT, None)


def _push(
    queues: list[deque[Any]],
    seen: set[int],
    parent: tuple[Relation, str | None, str, str | None, str, int],
    child: Any,
    relation: Relation,
    step: str | None,
    words: str = "",
    *,
    state: str = "",
) -> None:
    """Queue ``child`` under its relation (never lower than its parent's), unless it holds nothing."""
    if type(child) in _ATOMS or not gc.is_tracked(child) or id(child) in seen:
        return
    rel, path, suffix, opt, skey, depth = parent
    child_path = path + step if path is not None and step is not None and len(path) < _MAX_EXPR else None
    level = max(relation, rel)
    queues[level].append((child, level, child_path, suffix + words, opt, state or skey, depth + 1))


def _running_frames() -> set[int]:
    """The ids of the frames every thread is running now.

    ``sys._current_frames()`` includes this very frame: a local bound to it is a
    reference cycle that would keep every caller's locals (the report's roots)
    alive until the next collection, so no local may still hold a frame at return.
    """
    running: set[int] = set()
    frames = list(sys._current_frames().values())
    current: Any = None
    try:
        while frames:
            current = frames.pop()
            while current is not None:
                running.add(id(current))
                current = current.f_back
    finally:
        current = None
        frames.clear()
    return running


def _own_dict(obj: Any) -> dict[str, Any] | None:
    try:
        attrs = object.__getattribute__(obj, "__dict__")
    except (AttributeError, TypeError):
        return None
    if not isinstance(attrs, dict) or not gc.is_tracked(attrs):
        return None
    return {k: v for k, v in list(attrs.items()) if isinstance(k, str)}


def _items(mapping: dict[Any, Any]) -> list[tuple[Any, Any]]:
    try:
        items = list(mapping.items())
    except RuntimeError:  # changed size while copied (another thread)
        items = list(dict(mapping).items())
    if len(items) > 64:
        return [(None, v) for v in filter(gc.is_tracked, (v for _, v in items))]
    return items


_slot_cache: dict[type, tuple[str, ...]] = {}


def _slots(kind: type) -> tuple[str, ...]:
    found = _slot_cache.get(kind)
    if found is None:
        names: list[str] = []
        for klass in kind.__mro__:
            slots = klass.__dict__.get("__slots__", ())
            names += [slots] if isinstance(slots, str) else [s for s in slots if s not in ("__dict__", "__weakref__")]
        found = _slot_cache[kind] = tuple(names)
    return found


def _attr_step(key: Any) -> str | None:
    return f".{key}" if isinstance(key, str) and key.isidentifier() else None


def _module_step(module: Any, key: Any) -> str | None:
    """How a module's child reads: ``seq[1]``, ``blocks['enc']``, ``net.fc``."""
    if not isinstance(key, str):
        return None
    if key.isdigit():
        return f"[{key}]"
    nn = sys.modules["torch"].nn
    if isinstance(module, nn.ModuleDict | nn.ParameterDict):
        return f"[{key!r}]"
    return _attr_step(key)


def _key_step(key: Any) -> str | None:
    if type(key) in (str, int, bool) or key is None:
        return f"[{key!r}]" if key is not None else None
    return None


__all__ = ["Reach", "Relation", "WalkResult", "Walker"]
