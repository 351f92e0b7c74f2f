"""The walk: from every site entry forward to the model's parts, with typed edges.

Walking forward from the notebook's names (its variables, outputs, last error,
widget callbacks) finds every holder a user can reach without one scan of the
whole heap per step: a heavy notebook holds hundreds of thousands of objects,
and almost none of them are reachable from its variables without passing
through a module, a class or a function's globals, where the walk never goes.

Every edge keeps what it is: its operation and the key *object* (a dict key,
an index, an attribute or local name), never text, and every reference into a
reached object is recorded, so that the plan can cut each one and the census
(:mod:`.census`) can check reference counts against what the walk saw. Inside a
part the walk stops; :meth:`Graph.close_over_parts` then records the model's
own structure (its module dicts, an optimizer's lists), whose references to
parts are the model's own.
"""

from __future__ import annotations

import collections
import functools
import gc
import sys
import time
import types
import weakref
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

from nbmodels.core.holders.parts import Part, Parts
from nbmodels.core.holders.records import HolderKind
from nbmodels.core.holders.sites import Site

ATOMS: frozenset[type] = frozenset(
    {int, float, complex, bool, str, bytes, bytearray, type(None), range, slice, type(Ellipsis), type(NotImplemented)}
)
_STOP_TYPES: tuple[type, ...] = (
    types.ModuleType,
    type,
    types.CodeType,
    weakref.ReferenceType,
    weakref.ProxyType,
    weakref.CallableProxyType,
    property,
    classmethod,
    staticmethod,
    types.MethodDescriptorType,
    types.WrapperDescriptorType,
    types.GetSetDescriptorType,
    types.MemberDescriptorType,
)
# Objects of the stopped libraries below that hold what the user gave them: walked all the same.
_USER_HELD = frozenset({"_thread._local", "logging.LogRecord", "threading.Thread", "weakref.finalize"})
# Objects of these libraries are the machinery around the notebook (the kernel, its
# sockets, event loops, loggers, nbmodels itself): never the user's to change. IPython's
# own objects are walked (an old ExecutionResult can hold an error), but the shell is a
# boundary the IPython layer names, so the walk never wanders through all of it.
_STOP_MODULES = (
    "ipykernel",
    "comm",
    "zmq",
    "tornado",
    "asyncio",
    "jupyter_client",
    "jupyter_core",
    "traitlets.config",
    "logging",
    "threading",
    "concurrent",
    "nbmodels",
    "_thread",
    "socket",
    "selectors",
    "ssl",
    "multiprocessing",
)

USER, PART, INTERNAL = 0, 1, 2

MAX_NODES = 300_000
MAX_ITEMS = 3_000_000
TIME_LIMIT = 2.0
BIG = 10_000  # a container with more entries is not read by the walk: it is searched only if it is a holder
_CHECK_EVERY = 4_096  # the walk's limits are checked inside containers too, this often
_CONTAINERS = (list, tuple, dict, set, frozenset, collections.deque)


class Root(NamedTuple):
    """A site entry the walk starts from: the site, the key object, and how it reads."""

    site: int
    key: Any
    label: str
    kind: HolderKind


class Edge(NamedTuple):
    """One reference into a node: from ``parent`` (a node, or ``~root`` for a site entry).

    ``op`` is how the parent holds it: ``entry`` (a site entry), ``item`` and
    ``dictkey`` (a dict), ``index`` (a list, tuple or deque), ``member`` (a
    set), ``attr`` (an instance attribute), ``child`` (a module's submodule,
    parameter or buffer), ``closure``, ``default``, ``self``, ``func``, ``exc``
    (an exception's traceback or chain), ``arg``, ``tb``, ``local``, ``cell``,
    ``opaque``. ``key`` is the key object, index or name. ``scan`` is the index
    in :attr:`Graph.extras` of the objects whose references the census counts
    for this edge, or -1 when the edge is exactly one reference.
    """

    parent: int
    op: str
    key: Any
    scan: int = -1


_STOPPED: dict[type, bool] = {}


def _stopped(kind: type) -> bool:
    """True for objects the walk never enters: modules, classes, code, and the machinery around the notebook."""
    known = _STOPPED.get(kind)
    if known is None:
        module = getattr(kind, "__module__", "") or ""
        stop_module = module.split(".")[0] in _STOP_MODULES and f"{module}.{kind.__qualname__}" not in _USER_HELD
        known = _STOPPED[kind] = issubclass(kind, _STOP_TYPES) or stop_module
    return known


class Graph:
    """The objects reachable from the sites down to the model's parts, and every edge between them."""

    def __init__(
        self,
        sites: Iterable[Site],
        parts: Parts,
        *,
        boundaries: Iterable[Any] = (),
        max_nodes: int = MAX_NODES,
        max_items: int = MAX_ITEMS,
        time_limit: float = TIME_LIMIT,
    ) -> None:
        self.sites = list(sites)
        self.parts = parts
        self.objs: list[Any] = []
        self.node_of: dict[int, int] = {}
        self.incoming: list[list[Edge]] = []
        self.tree: list[Edge | None] = []  # the first edge into each node: the shortest way from a site
        self.state: list[int] = []
        self.part: list[Part | None] = []
        self.sealed: list[bool] = []
        self.roots: list[Root] = []
        self.extras: list[Any] = []  # objects the census scans (frames, cells): kept alive while we count
        self.truncated = ""
        self.deferred: set[int] = set()  # big containers the walk did not read (nodes)
        self._site_ids = {id(site.container) for site in self.sites}
        self._site_ids |= {id(site.holder_object()) for site in self.sites}
        self._boundaries = {id(obj) for obj in boundaries}
        self._limits = (max_nodes, max_items, time_limit)
        self.executing = running_frames()
        self.snapshots: dict[int, str] = {}  # the locals snapshot of a finished frame -> its function's name
        self.made: list[dict[str, Any]] = []  # snapshots the search itself created: emptied when it ends

    def close(self) -> None:
        """Drop every reference the graph holds, and leave no trace on the frames it read."""
        for scope in self.made:
            scope.clear()  # the frame builds it again, fresh, when someone reads f_locals next
        self.made.clear()
        self.objs.clear()
        self.node_of.clear()
        self.incoming.clear()
        self.tree.clear()
        self.extras.clear()
        self.roots.clear()
        self.sites.clear()

    # --- nodes ------------------------------------------------------------------------------------

    def _new(self, obj: Any, state: int, part: Part | None, sealed: bool) -> int:
        node = len(self.objs)
        self.objs.append(obj)
        self.node_of[id(obj)] = node
        self.incoming.append([])
        self.tree.append(None)
        self.state.append(state)
        self.part.append(part)
        self.sealed.append(sealed)
        return node

    def _extra(self, *objs: Any) -> int:
        self.extras.append(objs)
        return len(self.extras) - 1

    def is_part(self, node: int) -> bool:
        return self.part[node] is not None

    def part_nodes(self) -> list[int]:
        return [node for node, part in enumerate(self.part) if part is not None]

    # --- the walk from the sites --------------------------------------------------------------------

    def walk(self) -> None:
        """Breadth first from every site entry; parts are reached, never entered."""
        time_limit = self._limits[2]
        deadline = time.perf_counter() + time_limit
        queue: collections.deque[int] = collections.deque()
        for index, site in enumerate(self.sites):
            for key, value in site.entries():
                if type(value) in ATOMS:
                    continue
                label, kind = site.name(key)
                self.roots.append(Root(index, key, label, kind))
                self._reach(value, Edge(~(len(self.roots) - 1), "entry", key), queue, sealed=False, state=USER)
        items = 0
        while queue:
            node = queue.popleft()
            obj = self.objs[node]
            if issubclass(type(obj), _CONTAINERS) and len(obj) > BIG:
                # a user's data (a million-item list) is not read: it is searched only when reference counts
                # show that something unseen holds the model, and then only for the one reference (expand())
                self.deferred.add(node)
                continue
            sealed = self.sealed[node] or issubclass(type(obj), _sealed_types())
            for op, key, child, scan in children(obj, self):
                items += 1
                if items % _CHECK_EVERY == 0 and self._over(items, deadline):
                    return
                # an object the garbage collector does not track (an int, a str, a tuple or dict of such) holds
                # nothing that could lead to a model: skipping it is what keeps plain data free
                if type(child) in ATOMS or not gc.is_tracked(child):
                    continue
                self._reach(child, Edge(node, op, key, scan), queue, sealed=sealed, state=USER)
            del obj
            if self._over(items, deadline):
                return

    def _over(self, items: int, deadline: float) -> bool:
        """True (and the graph says why) when the walk passed one of its limits."""
        max_nodes, max_items, _ = self._limits
        if len(self.objs) > max_nodes:
            why = f"it had reached {len(self.objs):,} objects"
        elif items > max_items:
            why = f"it had read {items:,} references"
        elif time.perf_counter() > deadline:
            why = f"it had run for {self._limits[2]:.1f} s"
        else:
            return False
        self.truncated = f"the search stopped: {why} without reaching every holder"
        return True

    def expand(self, chain: list[Any]) -> None:
        """Record a path the walk did not read: ``chain[0]`` is a node (a big container), the last a node too.

        The census found it by reference counts; adding its edges lets the plan
        cut the one reference into the model and leave the rest of the data as it was.
        """
        parent = self.node_of[id(chain[0])]
        for child in chain[1:]:
            found = [(op, key, scan) for op, key, _, scan in _edges_to(self.objs[parent], child, self)]
            node = self.node_of.get(id(child))
            if node is None:
                part = self.parts.of(child)
                node = self._new(child, PART if part else USER, part, self.sealed[parent])
                self.tree[node] = Edge(parent, *found[0]) if found else None
            for op, key, scan in found:
                self.incoming[node].append(Edge(parent, op, key, scan))
            parent = node

    def _reach(self, child: Any, edge: Edge, queue: collections.deque[int], *, sealed: bool, state: int) -> None:
        node = self.node_of.get(id(child))
        if node is not None:
            self.incoming[node].append(edge)
            return
        if id(child) in self._boundaries or id(child) in self._site_ids:
            return
        part = self.parts.of(child)  # first: a model's class may live anywhere, nbmodels' demo models included
        if part is None and _stopped(type(child)):
            return
        node = self._new(child, PART if part else state, part, sealed)
        self.incoming[node].append(edge)
        self.tree[node] = edge
        if part is None:
            queue.append(node)

    # --- the model's own structure ------------------------------------------------------------------

    def close_over_parts(self, extra_parts: Iterable[Any] = ()) -> None:
        """Record what each part holds (module dicts, an optimizer's lists): references the model makes itself.

        Reaching a part from another part is no holder; the census needs these
        edges to tell the model's own references from a holder the walk missed.
        ``extra_parts`` are parts known otherwise (the watched model, tensors a
        heap scan found): they join the graph even when no site reaches them.
        """
        queue: collections.deque[int] = collections.deque()
        for obj in extra_parts:
            if id(obj) not in self.node_of and self.parts.of(obj) is not None:
                self._new(obj, PART, self.parts.of(obj), False)
        queue.extend(self.part_nodes())
        seen = set(queue)
        while queue:
            node = queue.popleft()
            for _ in range(_own_class_references(self.objs[node])):
                self.incoming[node].append(Edge(node, "ownclass", None))
            for op, key, child, scan in children(self.objs[node], self):
                if type(child) in ATOMS:
                    continue
                known = self.node_of.get(id(child))
                if known is not None:
                    self.incoming[known].append(Edge(node, op, key, scan))
                    if known not in seen and self.state[known] == PART:
                        seen.add(known)
                        queue.append(known)
                    continue
                if id(child) in self._boundaries or id(child) in self._site_ids:
                    continue
                part = self.parts.of(child)
                if part is None and _stopped(type(child)):
                    continue
                new = self._new(child, PART if part else INTERNAL, part, False)
                self.incoming[new].append(Edge(node, op, key, scan))
                seen.add(new)
                queue.append(new)
        for node in self.part_nodes():
            # a module's own _modules/_parameters/_buffers dict that became a node because something else also
            # holds it (torch.compile's wrappers copy the model's __dict__): the module's reference is its own
            for name, owned in _module_dicts(self.objs[node]):
                known = self.node_of.get(id(owned))
                if known is not None:
                    self.incoming[known].append(Edge(node, "attr", name))

    def holds_parts(self) -> set[int]:
        """Nodes from which a part is reachable along recorded edges (parts included)."""
        heavy = set(self.part_nodes())
        queue = list(heavy)
        for node in queue:
            for edge in self.incoming[node]:
                parent = edge.parent
                if parent >= 0 and parent not in heavy:
                    heavy.add(parent)
                    queue.append(parent)
        return heavy


@functools.lru_cache(maxsize=1)
def _sealed_types() -> tuple[type, ...]:
    """Objects cut only whole: removing an item inside an optimizer or scheduler would break it."""
    torch = sys.modules.get("torch")
    if torch is None:
        return ()
    found: list[type] = [torch.optim.Optimizer]
    scheduler = getattr(torch.optim.lr_scheduler, "LRScheduler", None)
    if scheduler is not None:
        found.append(scheduler)
    return tuple(found)


# --- how one object holds others ------------------------------------------------------------------


def children(obj: Any, graph: Graph) -> Iterator[tuple[str, Any, Any, int]]:
    """``(op, key, child, scan)`` for every reference ``obj`` holds that the walk may follow.

    Types are tested on ``type(obj)``, never ``isinstance(obj, ...)``, which would
    call a ``__class__`` property of the user's objects (a proxy, a deprecated alias).
    """
    kind = type(obj)
    if issubclass(kind, dict):
        yield from _dict_children(obj)
        if kind is not dict:
            yield from _instance_children(obj)  # a dict subclass's attributes (a ModelOutput's fields)
    elif issubclass(kind, list | collections.deque):
        yield from (("index", i, v, -1) for i, v in enumerate(list(obj)))
        if kind is not list and kind is not collections.deque:
            yield from _instance_children(obj)
    elif kind is types.MappingProxyType:
        yield from (("mapping", None, ref, -1) for ref in gc.get_referents(obj))  # the dict behind it
    elif kind is functools._lru_cache_wrapper:
        yield from _attributes(obj)
        # the cached arguments and results, which the wrapper holds in C: f.cache_clear() lets them go
        own = {id(getattr(obj, "__wrapped__", None)), id(_dict_of(obj))}
        scan = graph._extra(obj)
        yield from (
            ("cache", None, ref, scan) for ref in gc.get_referents(obj) if id(ref) not in own and type(ref) is not type
        )
    elif kind is _thread_local():
        # this thread's values, through the type's own __dict__ (another thread's are that thread's)
        yield from (("attr", k, v, -1) for k, v in list(vars(obj).items()))
    elif kind is weakref.finalize:
        info = weakref.finalize._registry.get(obj)  # type: ignore[attr-defined]
        if info is not None:  # what the finalizer will call, held in the class's registry: fin.detach() drops it
            yield ("finalizer", "func", info.func, graph._extra(info))
            yield from (("finalizer", i, v, graph._extra(info.args)) for i, v in enumerate(info.args))
            yield from (("finalizer", k, v, graph._extra(info.kwargs)) for k, v in (info.kwargs or {}).items())
    elif issubclass(kind, tuple):
        fields = getattr(type(obj), "_fields", None)
        if isinstance(fields, tuple) and len(fields) == len(obj):
            yield from (("field", name, v, -1) for name, v in zip(fields, obj, strict=True))
        else:
            yield from (("index", i, v, -1) for i, v in enumerate(obj))
    elif issubclass(kind, set | frozenset):
        yield from (("member", None, v, -1) for v in list(obj))
    elif issubclass(kind, types.FunctionType):
        yield from _function_children(obj)
    elif issubclass(kind, types.MethodType):
        yield ("self", None, obj.__self__, -1)
        yield ("func", None, obj.__func__, -1)
    elif issubclass(kind, types.BuiltinMethodType):
        owner = obj.__self__
        if owner is not None and type(owner) is not types.ModuleType:
            yield ("self", None, owner, -1)
    elif issubclass(kind, functools.partial):
        yield ("func", None, obj.func, -1)
        yield from (("arg", i, v, -1) for i, v in enumerate(obj.args))
        yield from (("kwarg", k, v, -1) for k, v in obj.keywords.items())
    elif issubclass(kind, BaseException):
        for name in ("__traceback__", "__context__", "__cause__"):
            value = getattr(obj, name, None)
            if value is not None:
                yield ("exc", name, value, -1)
        yield from (("arg", i, v, -1) for i, v in enumerate(obj.args))
        yield from _instance_children(obj)
    elif issubclass(kind, types.TracebackType):
        yield ("tb", "tb_frame", obj.tb_frame, -1)
        if obj.tb_next is not None:
            yield ("tb", "tb_next", obj.tb_next, -1)
    elif issubclass(kind, types.FrameType):
        yield from _frame_children(obj, obj, graph)
    elif issubclass(kind, types.GeneratorType | types.CoroutineType | types.AsyncGeneratorType):
        frame = getattr(obj, "gi_frame", None) or getattr(obj, "cr_frame", None) or getattr(obj, "ag_frame", None)
        if frame is not None:
            yield from _frame_children(frame, obj, graph)
    elif issubclass(kind, types.CellType):
        try:
            yield ("cell", None, obj.cell_contents, -1)
        except ValueError:  # an empty cell
            return
    elif _is_module(obj):
        yield from _module_children(obj)
    elif _is_tensor(obj):
        return  # a tensor that is no part holds nothing of the model (its graph was probed)
    else:
        found = list(_instance_children(obj))
        if found or _has_dict(obj):
            yield from found
        else:
            yield from (("opaque", type(obj).__qualname__, ref, graph._extra(obj)) for ref in gc.get_referents(obj))


def _edges_to(parent: Any, child: Any, graph: Graph) -> Iterator[tuple[str, Any, Any, int]]:
    """The references ``parent`` holds to ``child`` (by identity), found without reading every entry in Python."""
    kind = type(parent)
    if issubclass(kind, dict):
        yield from (("item", key, child, -1) for key in [k for k, v in list(parent.items()) if v is child])
        if any(key is child for key in list(parent)):
            yield ("dictkey", child, child, -1)
    elif issubclass(kind, list | collections.deque | tuple):
        yield from (("index", i, child, -1) for i in [i for i, v in enumerate(list(parent)) if v is child])
    elif issubclass(kind, set | frozenset):
        if child in parent and any(v is child for v in list(parent)):
            yield ("member", None, child, -1)
    else:
        yield from (edge for edge in children(parent, graph) if edge[2] is child)


def _dict_children(obj: dict[Any, Any]) -> Iterator[tuple[str, Any, Any, int]]:
    try:
        items = list(obj.items())
    except RuntimeError:  # changed size while we copied it (another thread)
        items = list(dict(obj).items())
    for key, value in items:
        yield ("item", key, value, -1)
        if type(key) not in ATOMS:
            yield ("dictkey", key, key, -1)


def _module_dicts(obj: Any) -> list[tuple[str, Any]]:
    """A torch module's ``_modules``, ``_parameters`` and ``_buffers`` dicts (none for anything else)."""
    if not _is_module(obj):
        return []
    namespace = vars(obj)
    return [(name, namespace[name]) for name in _MODULE_DICTS if type(namespace.get(name)) is dict]


def _own_class_references(obj: Any) -> int:
    """References a module makes to itself through a class made for it alone (torch's parametrizations).

    ``weight_norm`` gives the module a class of its own whose properties'
    getters close over the module: a cycle of the model's own, which gc frees
    with it, never a holder.
    """
    kind = type(obj)
    if getattr(kind, "__module__", "") != "torch.nn.utils.parametrize" or not _is_module(obj):
        return 0
    found = 0
    functions: list[Any] = [v.fget for v in vars(kind).values() if type(v) is property and v.fget is not None]
    for _ in range(3):  # a getter, the helper it closes over, and the module that helper closes over
        inner: list[Any] = []
        for function in functions:
            for cell in getattr(function, "__closure__", None) or ():
                try:
                    value = cell.cell_contents
                except ValueError:
                    continue
                found += value is obj
                if type(value) is types.FunctionType:
                    inner.append(value)
        functions = inner
    return found


def _dict_of(obj: Any) -> Any:
    try:
        return object.__getattribute__(obj, "__dict__")
    except Exception:
        return None


@functools.lru_cache(maxsize=1)
def _thread_local() -> type:
    import _thread

    return _thread._local


def _attributes(obj: Any) -> Iterator[tuple[str, Any, Any, int]]:
    try:
        namespace = object.__getattribute__(obj, "__dict__")
    except Exception:
        return
    yield from (("attr", k, v, -1) for k, v in list(namespace.items()))


def _function_children(obj: types.FunctionType) -> Iterator[tuple[str, Any, Any, int]]:
    closure = obj.__closure__ or ()
    for name, cell in zip(obj.__code__.co_freevars, closure, strict=False):
        try:
            yield ("closure", name, cell.cell_contents, -1)
        except ValueError:
            continue
    defaults = obj.__defaults__ or ()
    names = obj.__code__.co_varnames[: obj.__code__.co_argcount]
    for name, value in zip(names[len(names) - len(defaults) :], defaults, strict=False):
        yield ("default", name, value, -1)
    for name, value in (obj.__kwdefaults__ or {}).items():
        yield ("default", name, value, -1)
    yield from (("attr", k, v, -1) for k, v in list(vars(obj).items()))


def running_frames() -> set[int]:
    """Ids of the frames running now, in every thread (ids only: a frame kept in a local makes a cycle)."""
    ids: set[int] = set()
    tops = list(sys._current_frames().values())
    try:
        for top in tops:
            frame: types.FrameType | None = top
            while frame is not None:
                ids.add(id(frame))
                frame = frame.f_back
    finally:
        del tops, top, frame
    return ids


def _frame_children(frame: types.FrameType, owner: Any, graph: Graph) -> Iterator[tuple[str, Any, Any, int]]:
    """A finished or suspended frame's locals, read from the snapshot dict Python keeps for it.

    A frame still running is never read: its snapshot would keep a copy of its
    locals that outlives a later ``del`` (and, through a traceback, the model).
    """
    if id(frame) in graph.executing or getattr(owner, "gi_running", False) or getattr(owner, "cr_running", False):
        return
    if owner is frame and frame.f_back is not None:
        yield ("tb", "f_back", frame.f_back, -1)  # a traceback's frames keep their callers' frames too
    # a snapshot with values in it before we looked is someone else's (a debugger's); an empty one is ours
    had = {id(ref) for ref in gc.get_referents(owner if owner is not frame else frame) if type(ref) is dict and ref}
    try:
        scope = frame.f_locals
    except Exception:  # pragma: no cover - exotic frames
        return
    if id(scope) not in had and type(scope) is dict:
        # the snapshot did not exist before we read it: on 3.11 and 3.12 it would stay on the frame and keep
        # a suspended generator's old locals alive after it deletes them; close() empties it again
        graph.made.append(scope)
    if type(scope) is not dict or id(scope) in graph._site_ids:
        return  # a module-level frame: its locals are a namespace the sites already cover

    # the frame (or generator) holds each local once, and cells hold the captured ones; the snapshot dict
    # Python keeps of them holds each once more: it is a node of its own (a debugger may hold it too)
    graph.snapshots[id(scope)] = getattr(getattr(owner, "f_code", None), "co_name", None) or qualname_of(owner)
    cells = [ref for ref in gc.get_referents(owner) if type(ref) is types.CellType]
    scan = graph._extra(owner, *cells)
    yield ("tb", "f_locals", scope, -1)
    for name, value in list(scope.items()):
        yield ("local", name, value, scan)


def _instance_children(obj: Any) -> Iterator[tuple[str, Any, Any, int]]:
    try:
        namespace = object.__getattribute__(obj, "__dict__")
    except Exception:
        namespace = None
    if isinstance(namespace, dict):
        for key, value in list(namespace.items()):
            yield ("attr", key, value, -1)
    for klass in type(obj).__mro__:
        for name, descriptor in list(vars(klass).items()):
            if isinstance(descriptor, types.MemberDescriptorType) and name not in ("__weakref__", "__dict__"):
                try:
                    yield ("attr", name, descriptor.__get__(obj, type(obj)), -1)
                except AttributeError:
                    continue


def qualname_of(obj: Any) -> str:
    name = getattr(type(obj), "__qualname__", "?")
    return str(getattr(obj, "__qualname__", name)) if type(obj) in _CODE_OWNERS else str(name)


_CODE_OWNERS = (types.FunctionType, types.GeneratorType, types.CoroutineType, types.AsyncGeneratorType)


def _has_dict(obj: Any) -> bool:
    try:
        object.__getattribute__(obj, "__dict__")
        return True
    except Exception:
        return False


_MODULE_DICTS = ("_modules", "_parameters", "_buffers")


def _module_children(module: Any) -> Iterator[tuple[str, Any, Any, int]]:
    """A torch module's submodules, parameters and buffers read as its attributes; then everything else."""
    namespace = vars(module)
    for dict_name in _MODULE_DICTS:
        for key, value in list((namespace.get(dict_name) or {}).items()):
            if value is not None:
                yield ("child", key, value, -1)
    for key, value in list(namespace.items()):
        if key not in _MODULE_DICTS:
            yield ("attr", key, value, -1)


def _is_module(obj: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and issubclass(type(obj), torch.nn.Module)


def _is_tensor(obj: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and issubclass(type(obj), torch._C.TensorBase)


__all__ = ["ATOMS", "INTERNAL", "PART", "USER", "Edge", "Graph", "Root", "children"]
