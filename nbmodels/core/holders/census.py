"""Reference counts checked against the walk, so a holder it could not reach is named, never ignored.

The walk starts at the notebook's names; a model can also be held where no
name leads: another module's global, a local variable of a function still
running, C code. For every object the plan relies on (each part and the model
structure that holds parts, and each object a cut must go through), the
census compares ``sys.getrefcount`` with the references the walk recorded,
our own, and the one reference torch's C++ side takes when a tensor is shared
there. Only what is left over costs a scan of the heap
(``gc.get_referrers``), which then names the holder: ``helpers.CACHE['m']``.
"""

from __future__ import annotations

import collections
import functools
import gc
import inspect
import re
import sys
import threading
import time
import types
from collections.abc import Iterable
from typing import Any, NamedTuple

from nbmodels.core.holders.graph import ATOMS, Graph
from nbmodels.core.holders.records import HolderKind

_BATCH = 64  # gc.get_referrers compares every reference with each argument: keep batches small
DEPTH = 8  # levels up from an unexplained reference, one heap pass each


class Stray(NamedTuple):
    """A holder found outside the walk: where it is, and why force cannot remove it."""

    node: int  # the graph node it holds
    holder: str
    kind: HolderKind
    reason: str


def references_we_hold(graph: Graph, held: Iterable[Any]) -> collections.Counter[int]:
    """How many references the search itself holds to each object (by id)."""
    ours: collections.Counter[int] = collections.Counter(map(id, graph.objs))
    ours.update(id(obj) for group in graph.extras for obj in group)
    ours.update(id(edge.key) for edges in graph.incoming for edge in edges if type(edge.key) not in ATOMS)
    ours.update(id(root.key) for root in graph.roots if type(root.key) not in ATOMS)
    ours.update(map(id, held))
    ours.update(map(id, graph.made))
    return ours


def unexplained(graph: Graph, nodes: Iterable[int], ours: collections.Counter[int]) -> dict[int, int]:
    """References to each node that nothing recorded accounts for (only nodes with some)."""
    objs = graph.objs
    objs.append(object())
    base = sys.getrefcount(objs[-1]) - 1  # what the call itself adds, beyond the list's slot
    objs.pop()
    counts = {node: sys.getrefcount(objs[node]) - base for node in nodes}
    found: dict[int, int] = {}
    for node, count in counts.items():
        expected = ours[id(objs[node])] + _cpp_reference(objs[node])
        scanned: set[int] = set()
        for edge in graph.incoming[node]:
            if edge.scan < 0:
                expected += 1
            elif edge.scan not in scanned:
                scanned.add(edge.scan)
                target = objs[node]
                expected += sum(
                    1 for holder in graph.extras[edge.scan] for ref in gc.get_referents(holder) if ref is target
                )
                del target
        if count > expected:
            found[node] = count - expected
    return found


def _cpp_reference(obj: Any) -> int:
    """1 when torch's C++ side shares the tensor (an autograd graph, a view's base): it holds the object then."""
    torch = sys.modules.get("torch")
    if torch is None or not issubclass(type(obj), torch._C.TensorBase):
        return 0
    try:
        return 1 if obj._use_count() > 1 else 0
    except Exception:
        return 0


# --- naming what the walk could not reach -----------------------------------------------------


def trace_back(
    graph: Graph, nodes: dict[int, int], held: list[Any], *, time_limit: float = 1.0, depth: int = DEPTH
) -> tuple[list[Stray], list[list[Any]]]:
    """For nodes with unexplained references, scan the heap for who holds them and name it.

    Returns the holders found outside the walk, and the paths into big
    containers the walk did not read (:attr:`Graph.deferred`): from the
    container down to the node, for :meth:`Graph.expand`. Each level up is one
    ``gc.get_referrers`` pass over the heap, whatever the size of the user's data.
    """
    deadline = time.perf_counter() + time_limit
    accounted = _accounted(graph, held)
    deferred = {id(graph.objs[node]) for node in graph.deferred}
    accounted -= deferred
    expansions: list[list[Any]] = []
    executing, mine = _executing_frames()
    modules: dict[int, str] = {}
    for module_name, loaded in sorted(sys.modules.items(), key=lambda item: item[0].startswith("__mp_")):
        if hasattr(loaded, "__dict__"):
            modules.setdefault(id(vars(loaded)), module_name)  # __main__ before its alias __mp_main__
    strays: list[Stray] = []
    # the frontier: objects whose holders we look for, the node each leads to, and the path down to it
    objects: list[Any] = [graph.objs[node] for node in nodes]
    leads: list[tuple[int, str]] = [(node, "") for node in nodes]
    chains: list[tuple[Any, ...]] = [(obj,) for obj in objects]  # each frontier object down to its node
    named: set[int] = set()
    seen: set[int] = set(accounted)
    stopped = ""
    for level in range(depth + 1):
        if not objects:
            break
        if level == depth or time.perf_counter() > deadline:
            stopped = f"{level} level(s) up" if level == depth else f"{time_limit:.1f} s"
            break
        next_objects: list[Any] = []
        next_leads: list[tuple[int, str]] = []
        next_chains: list[tuple[Any, ...]] = []
        for start in range(0, len(objects), _BATCH):
            batch = tuple(objects[start : start + _BATCH])
            batch_leads = leads[start : start + _BATCH]
            batch_chains = chains[start : start + _BATCH]
            referrers = gc.get_referrers(*batch)
            skip = {id(batch), id(referrers), id(objects), id(next_objects), id(chains), id(next_chains)} | mine
            skip |= {id(chain) for chain in chains} | {id(expansions)} | {id(path) for path in expansions}
            for referrer in referrers:
                if id(referrer) in seen or id(referrer) in skip:
                    continue
                for obj, (node, path), chain in zip(batch, batch_leads, batch_chains, strict=True):
                    steps = _steps(referrer, obj)
                    if not steps:
                        continue
                    step = steps[0]
                    if id(referrer) in deferred:
                        expansions.append([referrer, *chain])
                        named.add(node)
                    elif id(referrer) in modules:
                        module = modules[id(referrer)]
                        name = f"{module}.{step[2:-2]}" if step.startswith("['") else module
                        reason = f"a global variable of module {module}, outside the notebook; force changes no module"
                        strays.append(Stray(node, _tidy(name + path), "module", reason))
                        named.add(node)
                    elif id(referrer) in executing:
                        where = executing[id(referrer)]
                        holder = f"a local variable of {where}"
                        if step.startswith("['"):  # the frame's snapshot dict: the key is the local's name
                            holder = _tidy(f"local {step[2:-2]!r} of {where}" + (f" (its {path})" if path else ""))
                        strays.append(Stray(node, holder, "unseen", _RUNNING))
                        named.add(node)
                    elif issubclass(type(referrer), type):
                        where = _tidy(f"{referrer.__qualname__}{step}{path}")
                        reason = "a class attribute; force does not change classes"
                        if re.fullmatch(r"[A-Za-z_][\w.]*", where) and "." in where:
                            reason += f" (`del {where}` frees it, if that class is yours to change)"
                        strays.append(Stray(node, where, "attribute", reason))
                        named.add(node)
                    else:
                        next_objects.append(referrer)
                        next_leads.append((node, step + path))
                        next_chains.append((referrer, *chain))
                if id(referrer) not in deferred:
                    seen.add(id(referrer))
            del referrers, batch, batch_chains
        objects, leads, chains = next_objects, next_leads, next_chains
        del next_objects, next_chains
    last = {node: (obj, path) for obj, (node, path) in zip(objects, leads, strict=True)}
    del objects, chains
    for node in nodes:
        if node in named:
            continue
        what = f"a {type(graph.objs[node]).__qualname__} object"
        if node in last:
            obj, path = last[node]
            what = _tidy(f"a {type(obj).__module__}.{type(obj).__qualname__} object{path}")
            reason = f"the search for its holder stopped after {stopped or 'a while'}, before reaching a name"
            strays.append(Stray(node, what, "unseen", reason))
        else:
            local = _running_local(graph.objs[node])
            strays.append(Stray(node, local, "unseen", _RUNNING) if local else Stray(node, what, "unseen", _UNSEEN))
    last.clear()
    return strays, expansions


def _running_local(obj: Any) -> str:
    """``local 'm' of work(), still running in thread N`` when a function running in another thread holds ``obj``.

    The garbage collector cannot see a running function's locals, so only
    reading them names the holder (a thread's target and its arguments).
    Reading a running frame's ``f_locals`` leaves a snapshot on it that would
    keep what it read alive after the function lets go: it is emptied again at once.
    """
    me = threading.get_ident()
    tops = [(thread_id, top) for thread_id, top in sys._current_frames().items() if thread_id != me]
    frame: types.FrameType | None = None  # stays None when no other thread runs
    try:
        for thread_id, top in tops:
            frame = top
            while frame is not None:
                if not _ours(frame):
                    scope = frame.f_locals
                    names = [name for name, value in list(scope.items()) if value is obj]
                    if type(scope) is dict and frame.f_code.co_flags & inspect.CO_OPTIMIZED:
                        scope.clear()
                    if names:
                        return f"local {names[0]!r} of {frame.f_code.co_name}(), still running in thread {thread_id}"
                frame = frame.f_back
    finally:
        del tops, frame  # a frame kept in a local makes a cycle that keeps every caller alive
    return ""


_RUNNING = "a function that is still running holds it; let it finish (or interrupt it), then unload again"
_UNSEEN = (
    "a reference the garbage collector cannot see holds it: C code, an extension, or a local variable "
    "of a function still running (perhaps the code that asked for the release)"
)


def _accounted(graph: Graph, held: list[Any]) -> set[int]:
    """Ids of objects whose references the walk already counted: nodes and what belongs to them, and ours."""
    ids = {id(graph.objs), id(graph.extras), id(graph.incoming), id(held), id(graph.roots), id(graph.made)}
    for obj in graph.objs:
        ids.add(id(obj))
        ids.update(map(id, _owned(obj)))
    ids.update(id(obj) for group in graph.extras for obj in group)
    ids.update(id(group) for group in graph.extras)
    ids.update(id(edges) for edges in graph.incoming)
    for site in graph.sites:
        ids.add(id(site.container))
        ids.add(id(site.holder_object()))
    return ids


def _owned(obj: Any) -> list[Any]:
    """Objects that belong to ``obj`` and whose references the walk counted as ``obj``'s own."""
    kind = type(obj)
    owned: list[Any] = []
    try:
        namespace = object.__getattribute__(obj, "__dict__")
    except Exception:
        namespace = None
    if type(namespace) is dict:
        owned.append(namespace)
        owned += [namespace[name] for name in ("_modules", "_parameters", "_buffers") if name in namespace]
    if kind is types.FunctionType:
        owned += [part for part in (obj.__closure__, obj.__defaults__, obj.__kwdefaults__) if part is not None]
        owned += list(obj.__closure__ or ())
    elif issubclass(kind, BaseException):
        owned.append(obj.args)
    elif kind is functools.partial:
        owned += [obj.args, obj.keywords]
    return owned


def _executing_frames() -> tuple[dict[int, str], set[int]]:
    """Running frames in every thread (by id) named for a user, and those of the search itself."""
    running: dict[int, str] = {}
    mine: set[int] = set()
    tops = list(sys._current_frames().items())
    try:
        for thread_id, top in tops:
            frame: types.FrameType | None = top
            while frame is not None:
                if _ours(frame):
                    mine.add(id(frame))
                else:
                    where = "the main thread" if thread_id == _main_thread_id() else f"thread {thread_id}"
                    running[id(frame)] = f"{frame.f_code.co_name}(), still running in {where}"
                frame = frame.f_back
    finally:
        # our own frame is among them: holding it in a local would make a cycle that keeps every caller alive
        del tops, top, frame
    return running, mine


def _ours(frame: types.FrameType) -> bool:
    module = frame.f_globals.get("__name__", "")
    return isinstance(module, str) and module.startswith("nbmodels.core")


def _main_thread_id() -> int:
    return threading.main_thread().ident or 0


def _steps(referrer: Any, child: Any) -> list[str]:
    """How ``referrer`` holds ``child``, as path suffixes (``['key']``, ``[3]``, ``.attr``); [] if it does not."""
    kind = type(referrer)  # never isinstance(): it would call a __class__ property of the user's object
    if issubclass(kind, type) and type(child) is dict and any(ref is child for ref in gc.get_referents(vars(referrer))):
        return [".__dict__"]  # a class's attributes: Holder.__dict__['m'] reads as Holder.m
    if issubclass(kind, dict):
        return [f"[{key!r}]" for key, value in list(referrer.items()) if value is child] or (
            [" (as a dict key)"] if any(key is child for key in list(referrer)) else []
        )
    if issubclass(kind, list | tuple):
        return [f"[{i}]" for i, value in enumerate(referrer) if value is child]
    if issubclass(kind, set | frozenset):
        return [" (in a set)"]
    if kind is types.CellType:
        return [" (a closure cell)"]
    if kind is types.FrameType:
        return [f" (a local of {referrer.f_code.co_name}())"]
    if _owned(referrer) and any(part is child for part in _owned(referrer)):
        return [".__dict__"] if child is _owned(referrer)[0] and kind is not types.FunctionType else [""]
    if type(referrer) is types.MethodType:
        return [".__self__"] if referrer.__self__ is child else [".__func__"]
    if any(ref is child for ref in gc.get_referents(referrer)):
        return [f" (inside a {type(referrer).__qualname__})"]
    return []


_INSTANCE_DICT = re.compile(r"\.__dict__\['([A-Za-z_][A-Za-z0-9_]*)'\]")


def _tidy(path: str) -> str:
    """An instance's ``__dict__`` reads as attributes: ``.__dict__['model']`` is ``.model``."""
    return _INSTANCE_DICT.sub(r".\1", path)


__all__ = ["Stray", "references_we_hold", "trace_back", "unexplained"]
