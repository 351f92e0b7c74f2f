"""Which objects are part of a released model, and the probes that tell.

Force may delete a user's variable only when its value is itself part of the
model; everywhere else it cuts the item or attribute that leads to a part. A
part is:

- the model, one of its submodules, one of its parameters or buffers;
- a tensor on one of its storages (a ``state_dict()`` entry, ``.detach()``,
  ``.data``, a view);
- a tensor whose autograd graph holds its weights (``loss``, ``y = model(x)``):
  the graph lives in C++ where the garbage collector cannot look, so it is
  probed forward (``grad_fn.next_functions``, ``AccumulateGrad.variable`` and
  the tensors a node saved for backward);
- an optimizer over its parameters only, a learning-rate scheduler of such an
  optimizer, a bound method of a part, a tuple made only of parts.

An object that holds a part *and anything else* (a list of losses, a metrics
dict, a trainer, a wrapper module) is not a part: the walk goes inside it.
"""

from __future__ import annotations

import gc
import sys
import types
from collections.abc import Sequence
from typing import Any, NamedTuple

from nbmodels.core.holders.watch import Watch, storage_key

_GRAPH_BUDGET = 200_000  # autograd nodes probed per search
_TUPLE_LIMIT = 256


class Part(NamedTuple):
    """A part of released model ``group``, and what it is in words."""

    group: int
    what: str


class Parts:
    """Classifies objects as parts of the watched models (memoised for one search)."""

    def __init__(self, watches: Sequence[Watch]) -> None:
        self.torch = sys.modules.get("torch")
        self._storage: dict[int, tuple[int, str]] = {}
        self._known: dict[int, Part] = {}
        self._memo: dict[int, Part | None] = {}
        self._graph_memo: dict[int, int] = {}  # autograd node id -> group reached (-1: none)
        self._kept: list[Any] = []  # autograd nodes probed: held so their ids stay unique
        self.graph_budget = _GRAPH_BUDGET
        self.graph_held: set[int] = set()  # ids of the model's tensors some probed graph holds
        self.graph_impls: dict[int, set[int]] = {}  # storage -> tensors (C++ addresses) probed graphs hold on it
        for group, watch in enumerate(watches):
            for record in watch.live_storages():
                self._storage.setdefault(record.key, (group, record.name))
            model = watch.model()
            if model is not None:
                self._known[id(model)] = Part(group, "the model")
                self._kept.append(model)
            for module in watch.modules():
                self._known.setdefault(id(module), Part(group, f"a submodule ({type(module).__name__})"))
                self._kept.append(module)
            for tensor in watch.tensors():
                name = self._storage.get(storage_key(tensor) or 0, (group, "a tensor"))[1]
                kind = "a parameter" if isinstance(tensor, self.torch.nn.Parameter) else "a tensor"  # type: ignore[union-attr]
                self._known.setdefault(id(tensor), Part(group, f"{kind} ({name})"))
                self._kept.append(tensor)

    def close(self) -> None:
        self._kept.clear()
        self._memo.clear()
        self._graph_memo.clear()
        self._known.clear()

    @property
    def storages(self) -> dict[int, tuple[int, str]]:
        """Live storage keys of the watched models -> (group, name)."""
        return self._storage

    def held(self) -> list[Any]:
        """The list through which the search holds the known objects (the census counts it as ours)."""
        return self._kept

    def known_objects(self) -> list[Any]:
        """The model objects, submodules and tensors known from the watches (strong references)."""
        return list(self._kept)

    # --- classifying ----------------------------------------------------------------------------

    def of(self, obj: Any) -> Part | None:
        """The part ``obj`` is, or None."""
        key = id(obj)
        if key in self._known:
            return self._known[key]
        if key in self._memo:
            return self._memo[key]
        self._memo[key] = None  # a tuple that contains itself is no part
        part = self._classify(obj)
        self._memo[key] = part
        return part

    def _classify(self, obj: Any) -> Part | None:
        torch = self.torch
        if torch is None:
            return None
        kind = type(obj)  # never isinstance(): it would call a __class__ property of the user's object
        if issubclass(kind, torch._C.TensorBase):
            return self._tensor(obj)
        if issubclass(kind, torch.nn.Module):
            # a module of the model is known from the watch; any other is a user's wrapper, except what
            # torch.compile returns: a view of the model that holds nothing else (`del cm` is all it takes)
            if kind.__name__ == "OptimizedModule" and kind.__module__.startswith("torch._dynamo"):
                inner = self.of(vars(obj).get("_modules", {}).get("_orig_mod"))
                return Part(inner.group, "its compiled form (torch.compile)") if inner else None
            return None
        if issubclass(kind, torch.UntypedStorage | torch.TypedStorage):
            untyped = obj if issubclass(kind, torch.UntypedStorage) else obj._untyped_storage
            entry = self._storage.get(int(untyped._cdata))
            return Part(entry[0], f"its storage ({entry[1]})") if entry else None
        if issubclass(kind, torch.optim.Optimizer):
            return self._optimizer(obj)
        scheduler = getattr(torch.optim.lr_scheduler, "LRScheduler", None)
        if scheduler is not None and issubclass(kind, scheduler):
            inner = self.of(getattr(obj, "optimizer", None))
            return Part(inner.group, "a learning-rate scheduler of its optimizer") if inner else None
        if issubclass(kind, types.MethodType):
            inner = self.of(obj.__self__)
            return Part(inner.group, "a bound method of it") if inner else None
        if type(obj) in (tuple, frozenset) and 0 < len(obj) <= _TUPLE_LIMIT:
            parts = [self.of(item) for item in obj]
            # of one model only: `pair = (a, b)` of two models is the user's, and holds each of them
            if all(parts) and len({part.group for part in parts if part is not None}) == 1:
                return Part(parts[0].group, f"a {type(obj).__name__} of its parts")  # type: ignore[union-attr]
        return None

    def _tensor(self, tensor: Any) -> Part | None:
        try:
            key = storage_key(tensor)
        except Exception:  # functional or fake tensors without a storage
            key = None
        if key is not None and key in self._storage:
            group, name = self._storage[key]
            return Part(group, f"a tensor on its storage ({name})")
        grad_fn = getattr(tensor, "grad_fn", None)
        if grad_fn is not None:
            group = self._graph(grad_fn)
            if group >= 0:
                return Part(
                    group, f"a tensor whose autograd graph holds its weights (grad_fn={type(grad_fn).__name__})"
                )
        return None

    def _optimizer(self, optimizer: Any) -> Part | None:
        groups: set[int] = set()
        for param_group in getattr(optimizer, "param_groups", ()):
            for param in param_group.get("params", ()):
                part = self.of(param)
                if part is None:
                    return None  # it also optimises something else: not the model's alone
                groups.add(part.group)
        if len(groups) != 1:
            return None
        return Part(groups.pop(), "an optimizer over its parameters")

    # --- autograd ---------------------------------------------------------------------------------

    def _graph(self, root: Any) -> int:
        """The group whose tensors the graph behind ``root`` holds (its leaves, or what it saved), else -1."""
        memo = self._graph_memo
        if id(root) in memo:
            return memo[id(root)]
        stack = [root]
        visited: list[Any] = []
        found = -1
        while stack and self.graph_budget > 0:
            node = stack.pop()
            if node is None:
                continue
            if id(node) in memo:
                found = max(found, memo[id(node)])
                continue
            memo[id(node)] = -1
            visited.append(node)
            self._kept.append(node)
            self.graph_budget -= 1
            for part in map(self._tensor_part, _graph_tensors(node)):
                if part is not None:
                    found = part.group
            stack.extend(following for following, _ in getattr(node, "next_functions", ()))
        for node in visited:
            memo[id(node)] = found
        return found

    def _tensor_part(self, tensor: Any) -> Part | None:
        """A tensor found inside a graph: a known tensor, or one on a watched storage."""
        try:
            key = storage_key(tensor)
        except Exception:
            return None
        if key is not None and key in self._storage:
            self.graph_impls.setdefault(key, set()).add(int(tensor._cdata))
        if id(tensor) in self._known:
            self.graph_held.add(id(tensor))
            return self._known[id(tensor)]
        if key is not None and key in self._storage:
            group, name = self._storage[key]
            return Part(group, name)
        return None

    # --- the heap -----------------------------------------------------------------------------------

    def scan_heap(self, known: set[int]) -> list[Any]:
        """Every gc-tracked tensor that is a part and not among ``known`` ids: holders nothing else found.

        A pass over the whole heap (tens of milliseconds in a heavy notebook): run
        only when a storage has more users than the tensors the walk saw.
        """
        torch = self.torch
        if torch is None:
            return []
        kinds: set[type] = set()
        stack: list[type] = [torch._C.TensorBase]
        while stack:  # every tensor class there is now, subclasses defined in the notebook included
            kind = stack.pop()
            if kind not in kinds:
                kinds.add(kind)
                stack.extend(kind.__subclasses__())
        tensors = [obj for obj in gc.get_objects() if type(obj) in kinds]
        found = [obj for obj in tensors if id(obj) not in known and self.of(obj) is not None]
        del tensors
        return found


_SAVED: dict[type, tuple[str, ...]] = {}


def _graph_tensors(node: Any) -> list[Any]:
    """Tensors an autograd node holds: the leaf it accumulates into, and what it saved for backward."""
    found = []
    variable = getattr(node, "variable", None)
    if variable is not None:
        found.append(variable)
    names = _SAVED.get(type(node))
    if names is None:
        names = _SAVED[type(node)] = tuple(n for n in dir(type(node)) if n.startswith("_saved_"))
    for name in names:
        try:
            value = getattr(node, name)
        except Exception:  # freed after backward, or not a tensor
            continue
        if type(value) in (list, tuple):
            found.extend(v for v in value if hasattr(v, "untyped_storage"))
        elif hasattr(value, "untyped_storage"):
            found.append(value)
    return found


__all__ = ["Part", "Parts"]
