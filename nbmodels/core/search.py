"""The holder search itself: a backward walk over gc referrers from survivors up to named sites.

One ``gc.get_referrers`` scan per level serves every object of that level (a
scan costs a pass over the whole heap; the number of scans, not the number of
objects, is what a search costs). Chains known forward (a traceback, a
closure) are queued whole, so one scan checks all their links. The walk stops
at sites: what holds a site does not matter, since removing the entry cuts
the chain there. See :mod:`nbmodels.core.refs` for the whole story.
"""

from __future__ import annotations

import gc
import logging
import sys
import time
import types
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

log = logging.getLogger("nbmodels")

HolderKind = Literal[
    "variable",  # a user variable that is the object: ``model``
    "item",  # inside a container a variable holds: ``cache['m']``, ``layers[3]``
    "attribute",  # an attribute of another object: ``trainer.model``
    "closure",  # a variable captured by a function: a callback, a lambda
    "method",  # a bound method whose ``self`` is the object
    "callback",  # a callback registered with a widget or an event source
    "frame",  # a local variable of a finished or suspended function
    "output",  # the output history: ``Out[7]``, ``_7``, ``_``
    "exception",  # the last exception and its traceback: ``sys.last_value``
    "debugger",  # a debugger session kept after ``%debug``
    "autograd",  # the autograd graph of a tensor computed with the model
    "module",  # a global variable of some module
    "model",  # another loaded model shares it
    "unseen",  # a reference the garbage collector cannot see (C extension, running function)
    "unknown",  # the search stopped (depth or time) before it reached a named place
]

_MAX_DEPTH = 12
TIME_LIMIT = 1.0  # seconds a search may take before it reports what it could not trace
_MAX_NODES = 20_000
_MAX_BATCH = 64
_MAX_HOLDERS = 24


@dataclass(frozen=True)
class Holder:
    """One thing that keeps a released model alive, and what ``force`` does (or cannot do) about it.

    ``path`` is in the user's words; ``action`` is the removal ``force`` applies
    (``del model``, ``del Out[7]``, ``del cache['m']``), empty when it cannot, with ``reason``.
    """

    path: str
    kind: HolderKind
    action: str = ""
    reason: str = ""

    @property
    def removable(self) -> bool:
        return bool(self.action)

    def __str__(self) -> str:
        return self.path

    def describe(self) -> str:
        """``path [kind]: what force does`` on one line."""
        what = f"force: {self.action}" if self.action else f"force cannot remove it: {self.reason or 'unknown holder'}"
        return f"{self.path} [{self.kind}] ({what})"


RemoveFn = Callable[["Site", Any, Any], None]


@dataclass(frozen=True, slots=True, eq=False)
class Site:
    """A place whose entries can be named (and maybe removed): a namespace, a history, a callback list.

    ``container`` is a dict (entries are keys), a list (indices) or any object
    (attributes; restrict them with ``keys``). ``label`` and ``action`` are
    format strings with ``{key}`` (and ``{value}`` for ``action``); ``special``
    overrides label and kind per key. ``remove(site, key, value)`` must be a
    module-level function (a closure would itself hold the graph it cuts).
    The walk stops at a site: what holds the site does not matter, since
    removing the entry cuts the chain there.
    """

    container: Any
    label: str = "{key}"
    kind: HolderKind = "variable"
    remove: RemoveFn | None = None
    action: str = ""
    reason: str = ""
    keys: frozenset[Any] | None = None
    owner: Any = None
    special: Mapping[Any, tuple[str, HolderKind]] | None = None

    def name(self, key: Any) -> tuple[str, HolderKind]:
        if self.special is not None and key in self.special:
            return self.special[key]
        return self.label.format(key=key), self.kind


HolderFinder = Callable[[], Iterable[Site]]
"""Names more sites for a search; called on every search (only when a released model survived)."""


# --- the search -----------------------------------------------------------------------------

_EXPANDED, _FRONTIER, _UNSEEN, _OURS = 1, 0, 2, 3


class _Edge(NamedTuple):
    child: int
    parent: int
    op: str  # key | attr | index | member | dictkey | cell | self | func | local | opaque
    arg: str


class _Entry(NamedTuple):
    node: int
    name: str
    kind: HolderKind
    site: int  # -1: a module global (never removable)
    key: int  # index of the key in the search's objects
    reason: str
    value: int  # index of what the site holds under the key (the node itself, or a tensor whose graph holds it)


class _Cut(NamedTuple):
    """The innermost link of a chain of plain dicts and lists from a variable: ``del cache['m']``."""

    parent: int  # the dict or list
    child: int  # the survivor it holds
    keys: tuple[Any, ...]  # its keys (or indices) that hold the survivor
    action: str
    sources: frozenset[int]  # the variable entries that lead here through plain containers only


class _Plan(NamedTuple):
    reached: dict[int, tuple[int, int]]  # node -> (child toward the target, edge); targets map to (-1, -1)
    blockers: list[int]  # entries (>=0) force cannot remove, or ~node for dead ends
    cuts: dict[int, _Cut]  # edge -> the item force removes instead of the variables above it
    remaining: set[int]  # nodes still leading to a survivor once the cuts are made: their entries go


def _cut_item(container: Any, keys: Iterable[Any], value: Any) -> None:
    """``del container[key]`` (a dict) or ``container[index] = None`` (a list) where it still is ``value``.

    A list keeps its length, so the indices of the user's other items stay what they were.
    """
    if isinstance(container, dict):
        for key in keys:
            if key in container and container[key] is value:
                del container[key]
    else:
        for index in keys:
            if index < len(container) and container[index] is value:
                container[index] = None


def _key_text(key: Any) -> str:
    text = repr(key)
    return text if len(text) <= 60 else text[:57] + "..."


def _qualname(obj: Any) -> str:
    name = getattr(obj, "__qualname__", None)
    return name if isinstance(name, str) else type(obj).__name__


def _count_references(referrers: list[Any], wanted: dict[int, int], executing: set[int]) -> dict[int, int]:
    """How many references the (not running) referrers hold to each wanted node."""
    counts: dict[int, int] = {}
    for referrer in referrers:
        if id(referrer) in executing:
            continue
        for item in gc.get_referents(referrer):
            node = wanted.get(id(item))
            if node is not None:
                counts[node] = counts.get(node, 0) + 1
    return counts


def _executing_frames() -> set[int]:
    """Ids of frames running now, in every thread: their locals are not holders we can name or cut."""
    ids: set[int] = set()
    tops = list(sys._current_frames().values())
    while tops:
        frame: types.FrameType | None = tops.pop()
        while frame is not None:
            ids.add(id(frame))
            frame = frame.f_back
    # no local may keep a frame: our own frame would hold itself, and through f_back its callers' locals
    return ids


def _module_dicts() -> dict[int, str]:
    found: dict[int, str] = {}
    for name, module in list(sys.modules.items()):
        namespace = getattr(module, "__dict__", None)
        if isinstance(namespace, dict):
            found.setdefault(id(namespace), name)
    return found


def _frame_locals(frame: types.FrameType, child: Any) -> list[tuple[str, str]]:
    """The local variables of a finished or suspended frame that are ``child``, or its snapshot dict."""
    try:
        scope = frame.f_locals
    except Exception:  # pragma: no cover - exotic frames
        return []
    if scope is child:  # the dict of locals the frame keeps once someone (a traceback printer) read them
        return [("attr", "f_locals")]
    names = [name for name, value in list(scope.items()) if value is child]
    if not names and isinstance(child, types.CellType):
        try:
            contents = child.cell_contents
        except ValueError:
            contents = None
        names = [name for name, value in list(scope.items()) if contents is not None and value is contents]
    return [("local", str(name)) for name in names]


_TRANSPARENT = frozenset({"__dict__", "_trait_values", "_modules", "_parameters", "_buffers"})
"""Containers shown as plain attributes: ``m._modules['enc']`` reads ``m.enc``, a trait reads as itself."""
_FRAME_ATTRS = frozenset({"tb_frame", "__traceback__", "tb_next", "f_back", "f_locals"})
_EXCEPTION_ATTRS = ("__traceback__", "__context__", "__cause__", "args")
_FUNCTION_ATTRS = ("__closure__", "__defaults__", "__kwdefaults__", "__dict__", "__wrapped__")


def _attrs_holding(obj: Any, child: Any, names: Iterable[str]) -> list[tuple[str, str]]:
    found = []
    for name in names:
        try:
            if getattr(obj, name) is child:
                found.append(("attr", name))
        except Exception:
            continue
    return found


def _instance_steps(obj: Any, child: Any) -> list[tuple[str, str]]:
    """How a plain object refers to ``child``: its ``__dict__``, an attribute, or a slot."""
    try:
        namespace = object.__getattribute__(obj, "__dict__")
    except Exception:
        namespace = None
    if namespace is child:
        return [("attr", "__dict__")]
    steps: list[tuple[str, str]] = []
    if isinstance(namespace, dict):
        steps = [("attr", str(k)) for k, v in list(namespace.items()) if v is child]
    if steps:
        return steps
    for klass in type(obj).__mro__:
        for name, descriptor in list(vars(klass).items()):
            if isinstance(descriptor, types.MemberDescriptorType):
                try:
                    if descriptor.__get__(obj, type(obj)) is child:
                        steps.append(("attr", name))
                except Exception:
                    continue
    return steps


def _steps(referrer: Any, child: Any) -> list[tuple[str, str]]:
    """The ways ``referrer`` refers to ``child``, as (op, arg) steps; [] when it only is its type."""
    if isinstance(referrer, dict):
        try:
            items = list(referrer.items())
        except RuntimeError:  # changed size while we looked
            return [("opaque", "dict")]
        steps = [("key", _key_text(k)) for k, v in items if v is child]
        if any(k is child for k, _ in items):
            steps.append(("dictkey", ""))
        return steps
    if isinstance(referrer, list | tuple):
        return [("index", str(i)) for i, v in enumerate(referrer) if v is child]
    if isinstance(referrer, set | frozenset):
        return [("member", "")]
    if isinstance(referrer, types.CellType):
        return [("cell", "")]
    if isinstance(referrer, types.MethodType):
        if referrer.__self__ is child:
            return [("self", "")]
        return [("func", "")] if referrer.__func__ is child else []
    if isinstance(referrer, types.FrameType):
        # f_locals last: reading it refreshes the frame's snapshot dict (a traceback's frame keeps it)
        return _attrs_holding(referrer, child, ("f_back",)) or _frame_locals(referrer, child)
    if isinstance(referrer, types.TracebackType):
        return _attrs_holding(referrer, child, ("tb_frame", "tb_next"))
    if isinstance(referrer, types.GeneratorType | types.CoroutineType | types.AsyncGeneratorType):
        frame = getattr(referrer, "gi_frame", None) or getattr(referrer, "cr_frame", None)
        frame = frame or getattr(referrer, "ag_frame", None)
        return _frame_locals(frame, child) if frame is not None else [("opaque", type(referrer).__name__)]
    if isinstance(referrer, types.FunctionType):
        steps = _attrs_holding(referrer, child, _FUNCTION_ATTRS)
        return steps or [("opaque", "function")]
    if isinstance(referrer, type):
        try:
            namespace = dict(vars(referrer))
        except Exception:
            namespace = {}
        same = isinstance(child, dict) and namespace and len(child) == len(namespace)
        if same and all(namespace.get(k) is v for k, v in list(child.items())):
            return [("attr", "__dict__")]
        steps = [("attr", str(k)) for k, v in namespace.items() if v is child]
        return steps  # other references of a class (its bases, its mro) are no holders
    if isinstance(referrer, BaseException):
        steps = _attrs_holding(referrer, child, _EXCEPTION_ATTRS)
        return steps or _instance_steps(referrer, child) or [("opaque", type(referrer).__name__)]
    steps = _instance_steps(referrer, child)
    if steps:
        return steps
    if type(referrer) is child:
        return []
    return [("opaque", f"{type(referrer).__module__}.{type(referrer).__qualname__}")]


class HolderSearch:
    """One search: the referrer graph from ``groups`` of survivors up to sites, and its removal plan.

    ``groups[i]`` are the surviving objects of one released model (the model, or
    its tensors once the model itself is gone). Hold the survivors only in these
    lists while searching: a local variable of a running function is a reference
    the garbage collector cannot see, and is reported as one. Call :meth:`close`
    (or use ``with``) so the search drops everything it referenced.
    """

    def __init__(
        self,
        groups: Sequence[Sequence[Any]],
        sites: Iterable[Site] = (),
        *,
        ignore: Iterable[Any] = (),
        max_depth: int = _MAX_DEPTH,
        time_limit: float = TIME_LIMIT,
        max_nodes: int = _MAX_NODES,
    ) -> None:
        started = time.perf_counter()
        self._objs: list[Any] = []
        self._node_of: dict[int, int] = {}
        self._up: list[list[int]] = []
        self._edges: list[_Edge] = []
        self._entries: list[_Entry] = []
        self._entries_of: dict[int, list[int]] = {}
        self._state: list[int] = []
        self._sites: list[Site] = []
        self._site_of: dict[int, int] = {}
        self._groups: list[list[int]] = []
        self._plans: dict[int, _Plan] = {}
        self._queued: set[int] = set()
        self._hidden: set[int] = set()  # targets with visible holders and, besides, references gc cannot see
        self.truncated = ""
        for site in sites:
            self._add_site(site)
        self._ignore = {id(x) for x in ignore}
        self._ignore.update(id(x) for x in (self, self._objs, self._sites, groups, *groups, *self._sites))
        for group in groups:
            members = []
            for index in range(len(group)):
                members.append(self._node(group[index]))
            self._groups.append(members)
        self._targets = {node for members in self._groups for node in members}
        self._hints: dict[int, list[tuple[int, str, str]]] = {}
        self._build_hints()
        self._walk(max_depth, started + time_limit, max_nodes)
        self._hints.clear()
        self._probe_autograd()
        self.seconds = time.perf_counter() - started

    # --- building -------------------------------------------------------------------------

    def _add_site(self, site: Site) -> None:
        index = len(self._sites)
        self._sites.append(site)
        self._site_of[id(site.container)] = index
        if not isinstance(site.container, dict | list | tuple):
            try:
                namespace = object.__getattribute__(site.container, "__dict__")
            except Exception:
                namespace = None
            if isinstance(namespace, dict):
                self._site_of.setdefault(id(namespace), index)

    def _node(self, obj: Any) -> int:
        node = self._node_of.get(id(obj))
        if node is None:
            node = len(self._objs)
            self._objs.append(obj)
            self._node_of[id(obj)] = node
            self._up.append([])
            self._state.append(_FRONTIER)
        return node

    def _keep(self, key: Any) -> int:
        self._objs.append(key)
        self._up.append([])
        self._state.append(_OURS)
        return len(self._objs) - 1

    def _walk(self, max_depth: int, deadline: float, max_nodes: int) -> None:
        frontier = [node for group in self._groups for node in group]
        self._queued.update(frontier)
        modules = _module_dicts()
        executing = _executing_frames()
        depth = 0
        while frontier:
            if depth >= max_depth:
                self.truncated = f"the search stopped at {max_depth} steps"
                return
            if time.perf_counter() > deadline:
                self.truncated = "the search ran out of time"
                return
            if len(self._objs) > max_nodes:
                self.truncated = f"the search stopped at {max_nodes} objects"
                return
            following: list[int] = []
            for start in range(0, len(frontier), _MAX_BATCH):
                chunk = frontier[start : start + _MAX_BATCH]
                following += self._expand(chunk, modules, executing)
                if time.perf_counter() > deadline:
                    self.truncated = "the search ran out of time"
                    return
            frontier = following
            depth += 1

    def _expand(self, chunk: list[int], modules: dict[int, str], executing: set[int]) -> list[int]:
        """One gc scan for a batch of nodes: record every referrer as an edge, an entry or a new node."""
        batch = tuple(self._objs[node] for node in chunk)
        wanted = {id(obj): node for obj, node in zip(batch, chunk, strict=True)}
        referrers = gc.get_referrers(*batch)
        # count before naming anything: naming a frame's locals makes a snapshot dict that refers to them too
        hidden = self._hidden_refs(chunk, wanted, referrers, executing | {id(batch)})
        ours = self._ignore | {id(batch), id(referrers), id(wanted)} | executing
        outside = dict.fromkeys(chunk, 0)
        following: list[int] = []
        for referrer in referrers:
            if id(referrer) in ours:  # never the argument tuple itself: gc.get_referrers leaves that out
                continue
            children = {wanted[id(x)] for x in gc.get_referents(referrer) if id(x) in wanted}
            for child in children:
                if self._link(referrer, child, modules, following):
                    outside[child] += 1
        for node in chunk:
            if outside[node]:
                self._state[node] = _EXPANDED
                if node in self._targets and hidden[node]:
                    self._hidden.add(node)
            else:
                self._state[node] = _UNSEEN if hidden[node] else _OURS
        del referrers, batch
        return following

    def _hidden_refs(
        self, chunk: list[int], wanted: dict[int, int], referrers: list[Any], executing: set[int]
    ) -> dict[int, int]:
        """References to each node that no gc-tracked object accounts for: C extensions, running functions.

        ``gc.get_referrers`` never reports its own argument tuple (the batch), so
        the batch's one reference to each node is taken off here.
        """
        visible = _count_references(referrers, wanted, executing)
        hidden: dict[int, int] = {}
        for node in chunk:
            hidden[node] = max(self._refcount(node) - self._refcount(-1) - visible.get(node, 0) - 1, 0)
        return hidden

    def _refcount(self, node: int) -> int:
        """``sys.getrefcount`` of a node (of a fresh object for -1), with this frame's own reference taken off."""
        obj = self._objs[node] if node >= 0 else object()
        return sys.getrefcount(obj) - 1

    def _link(self, referrer: Any, child: int, modules: dict[int, str], following: list[int]) -> bool:
        """Record how ``referrer`` holds node ``child``; False when it does not count as a holder."""
        site_index = self._site_of.get(id(referrer))
        if site_index is not None:
            site = self._sites[site_index]
            keys = self._site_keys(site, referrer, self._objs[child])
            inside = [k for k in keys if site.keys is None or k in site.keys]
            for key in inside:
                name, kind = site.name(key)
                reason = "" if site.remove is not None else site.reason or "it is not a place force may change"
                self._add_entry(child, name, kind, site_index, self._keep(key), reason)
            if inside:
                return True
            if site.keys is None:  # held as a dict key, or in a way the site cannot name
                label = site.label.replace("{key}", "?")
                self._add_entry(child, f"{label} (as a key)", site.kind, -1, -1, "it is held as a dictionary key")
                return True
        module = modules.get(id(referrer))
        if module is not None:
            steps = _steps(referrer, self._objs[child])
            for op, arg in steps:
                name = f"{module}.{arg[1:-1]}" if op == "key" and arg[:1] in "'\"" else f"{module}[{arg}]"
                reason = f"a global variable of module {module}, outside the notebook namespace"
                self._add_entry(child, name if op == "key" else f"module {module}", "module", -1, -1, reason)
            return bool(steps)
        steps = _steps(referrer, self._objs[child])
        if not steps:
            return False
        parent = self._node(referrer)
        self._enqueue(parent, following)
        op, arg = steps[0]
        self._add_edge(child, parent, op, arg)
        return True

    @staticmethod
    def _site_keys(site: Site, container: Any, child: Any) -> list[Any]:
        if container is not site.container:  # the object's __dict__, registered as the same site
            return [k for k, v in list(container.items()) if v is child]
        if isinstance(container, dict):
            return [k for k, v in list(container.items()) if v is child]
        if isinstance(container, list | tuple):
            return [i for i, v in enumerate(container) if v is child]
        names = site.keys if site.keys is not None else ()
        found = []
        for name in names:
            try:
                if getattr(container, name) is child:
                    found.append(name)
            except Exception:
                continue
        return found or [step[1] for step in _instance_steps(container, child)]

    def _enqueue(self, node: int, following: list[int]) -> None:
        if node in self._queued:
            return
        self._queued.add(node)
        following.append(node)
        for parent_index, op, arg in self._hints.get(id(self._objs[node]), ()):
            parent = self._node(self._objs[parent_index])
            self._add_edge(node, parent, op, arg)
            self._enqueue(parent, following)

    def _build_hints(self) -> None:
        """Who holds each frame, traceback, exception and closure cell reachable from a site, known forward.

        A traceback chain or a closure is several steps long and each backward
        step costs a scan of the whole heap; knowing the chain forward lets one
        scan check all of its links at once (each link is still scanned, so a
        second holder of a traceback is found as well).
        """
        budget = 5_000
        stack: list[Any] = []
        for site in self._sites:
            for _, value in self._site_items(site):
                if isinstance(value, BaseException | types.TracebackType | types.FunctionType | types.MethodType):
                    stack.append(value)
        seen: set[int] = set()
        while stack and budget > 0:
            obj = stack.pop()
            if id(obj) in seen:
                continue
            seen.add(id(obj))
            budget -= 1
            links: list[tuple[Any, str, str]] = []
            if isinstance(obj, BaseException):
                links = [(getattr(obj, name), "attr", name) for name in ("__traceback__", "__context__", "__cause__")]
            elif isinstance(obj, types.TracebackType):
                links = [(obj.tb_frame, "attr", "tb_frame"), (obj.tb_next, "attr", "tb_next")]
            elif isinstance(obj, types.MethodType):
                links = [(obj.__func__, "func", "")]
            elif isinstance(obj, types.FunctionType) and obj.__closure__:
                links = [(obj.__closure__, "attr", "__closure__")]
                links += [(cell, "index", str(i)) for i, cell in enumerate(obj.__closure__)]
            if not links:
                continue
            parent = self._keep(obj)
            for child, op, arg in links:
                if child is None:
                    continue
                holder = parent
                if op == "index":  # a cell: held by the closure tuple, not by the function
                    holder = self._keep(obj.__closure__)
                self._hints.setdefault(id(child), []).append((holder, op, arg))
                if isinstance(child, BaseException | types.TracebackType):
                    stack.append(child)
            del links

    def _add_edge(self, child: int, parent: int, op: str, arg: str) -> None:
        for index in self._up[child]:
            if self._edges[index].parent == parent:
                return
        self._up[child].append(len(self._edges))
        self._edges.append(_Edge(child, parent, op, arg))

    def _add_entry(
        self, node: int, name: str, kind: HolderKind, site: int, key: int, reason: str, value: int = -1
    ) -> None:
        for index in self._entries_of.get(node, ()):
            if self._entries[index].name == name:
                return
        self._entries_of.setdefault(node, []).append(len(self._entries))
        self._entries.append(_Entry(node, name, kind, site, key, reason, node if value < 0 else value))

    def _probe_autograd(self) -> None:
        """Tensors nothing visible holds: look for them in the autograd graphs of tensors the sites hold.

        A tensor computed with the model (``y = model(x)``) keeps the model's
        weights alive through its graph, which lives in C++ where gc cannot look.
        """
        torch = sys.modules.get("torch")
        unseen = {
            id(self._objs[node]): node
            for node in self._targets
            if (self._state[node] == _UNSEEN or node in self._hidden)
            and torch is not None
            and isinstance(self._objs[node], torch.Tensor)
        }
        if not unseen:
            return
        budget = [50_000]
        for site_index, site in enumerate(self._sites):
            for key, value in self._site_items(site):
                for suffix, tensor in self._tensors_in(value, torch):
                    grad_fn = getattr(tensor, "grad_fn", None)
                    if grad_fn is None:
                        continue
                    for node in self._graph_leaves(grad_fn, unseen, budget):
                        name, _ = site.name(key)
                        reason = "" if site.remove is not None else site.reason or "it is not a place force may change"
                        text = f"{name}{suffix} → autograd graph (grad_fn={type(grad_fn).__name__})"
                        held = self._keep(value)
                        self._add_entry(node, text, "autograd", site_index, self._keep(key), reason, held)
                        self._state[node] = _EXPANDED
                        self._hidden.discard(node)  # the graph is the reference gc could not see

    @staticmethod
    def _site_items(site: Site) -> list[tuple[Any, Any]]:
        container = site.container
        if isinstance(container, dict):
            items = list(container.items())
            return [(k, v) for k, v in items if site.keys is None or k in site.keys]
        if isinstance(container, list | tuple):
            return list(enumerate(container))
        return [(k, getattr(container, k, None)) for k in site.keys or ()]

    @staticmethod
    def _tensors_in(value: Any, torch: Any) -> list[tuple[str, Any]]:
        if isinstance(value, torch.Tensor):
            return [("", value)]
        found: list[tuple[str, Any]] = []
        if isinstance(value, dict):
            for k, v in list(value.items())[:256]:
                if isinstance(v, torch.Tensor):
                    found.append((f"[{_key_text(k)}]", v))
        elif isinstance(value, list | tuple):
            for i, v in enumerate(value[:256]):
                if isinstance(v, torch.Tensor):
                    found.append((f"[{i}]", v))
        return found

    @staticmethod
    def _graph_leaves(grad_fn: Any, wanted: dict[int, int], budget: list[int]) -> list[int]:
        """Nodes among ``wanted`` that the graph behind ``grad_fn`` accumulates into (its leaves)."""
        found: list[int] = []
        stack = [grad_fn]
        seen: set[int] = set()
        while stack and budget[0] > 0:
            fn = stack.pop()
            if fn is None or id(fn) in seen:
                continue
            seen.add(id(fn))
            budget[0] -= 1
            variable = getattr(fn, "variable", None)
            if variable is not None and id(variable) in wanted:
                found.append(wanted[id(variable)])
            for following, _ in getattr(fn, "next_functions", ()):
                stack.append(following)
        return found

    # --- reading --------------------------------------------------------------------------

    def _reach(self, starts: list[int], skip: Iterable[int] = ()) -> dict[int, tuple[int, int]]:
        """Breadth-first from the targets up the recorded edges (but ``skip``): the shortest chain to each node."""
        reached: dict[int, tuple[int, int]] = {node: (-1, -1) for node in starts}
        skipped = set(skip)
        queue = list(starts)
        for node in queue:
            for index in self._up[node]:
                if index in skipped:
                    continue
                parent = self._edges[index].parent
                if parent not in reached:
                    reached[parent] = (node, index)
                    queue.append(parent)
        return reached

    def _plan(self, group: int) -> _Plan:
        plan = self._plans.get(group)
        if plan is None:
            reached = self._reach(self._groups[group])
            blockers: list[int] = []
            for node in reached:
                for entry in self._entries_of.get(node, ()):
                    if self._entries[entry].site < 0 or self._sites[self._entries[entry].site].remove is None:
                        blockers.append(entry)
                if self._is_dead_end(node):
                    blockers.append(~node)
            cuts = self._plain_cuts(reached)
            while True:  # a cut stays only if some variable above it then no longer leads to a survivor
                remaining = set(self._reach(self._groups[group], cuts))
                kept = {edge: cut for edge, cut in cuts.items() if not self._sources_left(cut, remaining)}
                if len(kept) == len(cuts):
                    break
                cuts = kept
            plan = self._plans[group] = _Plan(reached, blockers, cuts, remaining)
        return plan

    def _plain_cuts(self, reached: dict[int, tuple[int, int]]) -> dict[int, _Cut]:
        """The innermost item of each chain of plain dicts and lists from a user variable to a survivor.

        ``del cache['m']`` lets go of the model and keeps the user's ``cache``
        and its other entries; any other chain (an attribute, a closure, a tuple)
        is cut at the variable, as before.
        """
        found: dict[int, tuple[int, int, str]] = {}
        sources: dict[int, set[int]] = {}
        for node in reached:
            for entry_index in self._entries_of.get(node, ()):
                entry = self._entries[entry_index]
                if entry.kind != "variable" or not entry.name.isidentifier() or entry.value != node:
                    continue
                if entry.site < 0 or self._sites[entry.site].remove is None:
                    continue
                last = self._plain_chain(node, reached)
                if last < 0:
                    continue
                if last not in found:
                    path = self._render(entry.name, node, reached)
                    found[last] = (self._edges[last].parent, self._edges[last].child, path)
                sources.setdefault(last, set()).add(entry_index)
        cuts: dict[int, _Cut] = {}
        for edge, (parent, child, path) in found.items():
            suffix = f"[{self._edges[edge].arg}]"
            if not path.endswith(suffix):
                continue
            prefix = path[: -len(suffix)]
            container, value = self._objs[parent], self._objs[child]
            if isinstance(container, dict):
                keys: tuple[Any, ...] = tuple(k for k, v in list(container.items()) if v is value)
                texts = [_key_text(k) for k in keys]
                if not keys or any(text != repr(k) for text, k in zip(texts, keys, strict=True)):
                    continue
                action = "del " + ", ".join(f"{prefix}[{text}]" for text in texts)
            else:
                keys = tuple(i for i, v in enumerate(container) if v is value)
                if not keys:
                    continue
                action = " = ".join(f"{prefix}[{i}]" for i in keys) + " = None"
            cuts[edge] = _Cut(parent, child, keys, action, frozenset(sources[edge]))
        return cuts

    def _sources_left(self, cut: _Cut, remaining: set[int]) -> bool:
        """True when every variable that asked for ``cut`` leads to a survivor without it: it goes itself."""
        return all(self._entries[source].node in remaining for source in cut.sources)

    def _plain_chain(self, node: int, reached: dict[int, tuple[int, int]]) -> int:
        """The last edge of the chain from ``node`` when every link is a plain dict's key or list's index, else -1.

        A dict that is some object's namespace (``__dict__``, ``_modules``, a
        frame's locals) is not plain: removing from it changes that object.
        """
        last = -1
        while node >= 0:
            child, edge_index = reached[node]
            if edge_index < 0:
                break
            if type(self._objs[node]) not in (dict, list) or self._edges[edge_index].op not in ("key", "index"):
                return -1
            for up in self._up[node]:
                op, arg = self._edges[up].op, self._edges[up].arg
                if op == "attr" and (arg.startswith("__") or arg in _TRANSPARENT or arg in _FRAME_ATTRS):
                    return -1
            last = edge_index
            node = child
        return last

    def _cut_of(self, node: int, plan: _Plan) -> int:
        """The cut that stands for an entry at ``node`` (its chain's last edge), or -1: the entry itself goes."""
        if node in plan.remaining or not plan.cuts:
            return -1
        last = -1
        while True:
            child, edge_index = plan.reached[node]
            if edge_index < 0:
                return last if last in plan.cuts else -1
            last, node = edge_index, child

    def releasable(self, group: int) -> bool:
        """True when every holder found for the group can be removed, so removing them would free it."""
        return not self._plan(group).blockers

    def holders(self, group: int, limit: int | None = _MAX_HOLDERS) -> tuple[Holder, ...]:
        """Everything found holding the group's survivors, nearest first, one line per removal."""
        plan = self._plan(group)
        found: list[tuple[int, Holder]] = []
        for node in plan.reached:
            for entry_index in self._entries_of.get(node, ()):
                entry = self._entries[entry_index]
                path = self._render(entry.name, node, plan.reached)
                holder = self._holder(entry, node, path, plan)
                cut = self._cut_of(node, plan)
                # a holder that only goes through another variable's cut (Out[7] of that dict) comes after it
                rank = len(path) + (5_000 if cut >= 0 and entry_index not in plan.cuts[cut].sources else 0)
                found.append((rank, holder))
            if self._is_dead_end(node):
                found.append((10_000, self._dead_end_holder(node, plan)))
        found.sort(key=lambda item: item[0])
        unique: list[Holder] = []
        seen: set[str] = set()
        for _, holder in found:
            key = holder.action or holder.path
            if key not in seen:
                seen.add(key)
                unique.append(holder)
        return tuple(unique if limit is None else unique[:limit])

    def _holder(self, entry: _Entry, node: int, path: str, plan: _Plan) -> Holder:
        kind = entry.kind if entry.kind != "variable" else self._kind_of_chain(node, plan.reached)
        if entry.site >= 0 and self._sites[entry.site].remove is not None:
            cut = self._cut_of(node, plan)
            if cut >= 0:
                return Holder(path, kind, plan.cuts[cut].action)
            site = self._sites[entry.site]
            key = self._objs[entry.key]
            return Holder(path, kind, site.action.format(key=key, value=_qualname(self._objs[entry.value])))
        return Holder(path, kind, "", entry.reason)

    def _dead_end_holder(self, node: int, plan: _Plan) -> Holder:
        obj = self._objs[node]
        head = f"a {type(obj).__module__}.{type(obj).__qualname__} object"
        path = self._render(head, node, plan.reached)
        if self._state[node] == _UNSEEN or node in self._hidden:
            where = "the object itself" if node in self._targets else path
            reason = (
                "a reference the garbage collector cannot see holds "
                + where
                + ": a local variable of a running function (perhaps the code that asked for the release)"
                + " or a C extension"
            )
            return Holder("a reference outside Python's view" if where != path else path, "unseen", "", reason)
        return Holder(path, "unknown", "", (self.truncated or "the search stopped") + " before a named place")

    def _is_dead_end(self, node: int) -> bool:
        """A node no recorded chain explains: invisible references, or the search stopped there."""
        if node in self._hidden:
            return True
        return self._state[node] in (_UNSEEN, _FRONTIER) and not self._entries_of.get(node)

    def _kind_of_chain(self, node: int, reached: dict[int, tuple[int, int]]) -> HolderKind:
        """What the step nearest the target makes of a variable: an item, an attribute, a closure..."""
        last: HolderKind = "variable"
        pending = ""  # "attr": the next key reads as an attribute; "fn": the next index belongs to a function
        while node >= 0:
            child, edge_index = reached[node]
            if edge_index >= 0:
                op, arg = self._edges[edge_index].op, self._edges[edge_index].arg
                name = arg[1:-1] if op == "key" and arg[:1] == "'" else ""
                if (op == "attr" and arg in _TRANSPARENT) or (pending == "attr" and name in _TRANSPARENT):
                    pending = "attr"
                elif op == "attr" and arg in ("__closure__", "__defaults__", "__kwdefaults__"):
                    last, pending = "closure", "fn"
                elif pending == "fn" or op == "cell":
                    pending = ""
                elif op in ("key", "index", "member", "dictkey"):
                    last, pending = ("attribute" if pending == "attr" else "item"), ""
                elif op in ("self", "func"):
                    last, pending = "method", ""
                elif op == "local" or (op == "attr" and arg in _FRAME_ATTRS):
                    last, pending = "frame", ""
                else:
                    last, pending = "attribute", ""
            node = child
        return last

    def _render(self, head: str, node: int, reached: dict[int, tuple[int, int]]) -> str:
        """The chain from ``node`` down to a target as text, starting with ``head``.

        A head with a note (``Out[7] (a note)``) keeps its note at the end, so
        that the expression reads on: ``InteractiveTB.tb → local 'x' of f() (note)``.
        """
        note = ""
        if head.endswith(")") and " (" in head:
            head, note = head[: head.rindex(" (")], head[head.rindex(" (") :]
        parts = [head]
        pending_attr = continue_pending = False
        closure_of: Any = None
        defaults_of: Any = None
        locals_of: Any = None
        while node >= 0:
            child, edge_index = reached[node]
            if edge_index < 0:
                break
            edge = self._edges[edge_index]
            owner = self._objs[node]
            op, arg = edge.op, edge.arg
            if op == "attr" and arg in _TRANSPARENT:
                pending_attr = True
            elif op == "key":
                name = arg[1:-1] if arg[:1] == "'" and arg[-1:] == "'" else ""
                if pending_attr and name in _TRANSPARENT:
                    continue_pending = True
                elif pending_attr and name.isidentifier():
                    parts.append(f".{name}")
                elif pending_attr and name.isdigit():
                    parts.append(f"[{name}]")
                else:
                    parts.append(f"[{arg}]")
                pending_attr = continue_pending
                continue_pending = False
            elif op == "attr" and arg == "__closure__":
                closure_of = owner
            elif op == "attr" and arg in ("__defaults__", "__kwdefaults__"):
                defaults_of = owner
            elif defaults_of is not None and op in ("index", "key"):
                code = getattr(defaults_of, "__code__", None)
                if op == "index" and code is not None:
                    count = len(getattr(defaults_of, "__defaults__", None) or ())
                    position = code.co_argcount - count + int(arg)
                    names = code.co_varnames
                    parameter = names[position] if 0 <= position < len(names) else "?"
                else:
                    parameter = arg.strip(chr(39))
                parts.append(f" → default argument {parameter!r} of {_qualname(defaults_of)}()")
                defaults_of = None
            elif op == "index" and closure_of is not None:
                code = getattr(closure_of, "__code__", None)
                names = getattr(code, "co_freevars", ())
                index = int(arg)
                variable = names[index] if index < len(names) else "?"
                parts.append(f" → closure variable {variable!r} of {_qualname(closure_of)}()")
                closure_of = None
            elif op == "cell":
                pass
            elif op == "index":
                parts.append(f"[{arg}]")
            elif op == "attr" and arg == "__traceback__":
                parts.append(" → traceback")
            elif op == "attr" and arg in ("tb_next", "tb_frame"):
                pass
            elif op == "attr" and arg == "f_locals":
                locals_of = owner
            elif locals_of is not None and op == "key":
                function = getattr(getattr(locals_of, "f_code", None), "co_name", "?")
                parts.append(f" → local {arg.strip(chr(39))!r} of {function}()")
                locals_of = None
            elif op == "attr" and arg == "f_back":
                parts.append(f" → caller {getattr(getattr(owner, 'f_code', None), 'co_name', '?')}()")
            elif op == "attr":
                parts.append(f".{arg}")
            elif op == "local":
                function = getattr(getattr(owner, "f_code", None), "co_name", None) or _qualname(owner)
                parts.append(f" → local {arg!r} of {function}()")
            elif op == "self":
                parts.append(f" → bound method {_qualname(owner.__func__)} (of it)")
            elif op == "func":
                parts.append(f" → bound method {_qualname(owner)}")
            elif op == "member":
                parts.append(" → in a set")
            elif op == "dictkey":
                parts.append(" → a key of a dict")
            else:
                parts.append(f" → inside a {arg} object")
            node = child
        return "".join(parts) + note

    # --- removing -------------------------------------------------------------------------

    def remove(self, groups: Iterable[int]) -> dict[int, tuple[Holder, ...]]:
        """Cut every holder of each releasable group; returns what was removed, per group.

        Groups with a holder that cannot be cut are left alone entirely.
        A cut shared by several groups is made once.
        """
        done: dict[tuple[int, int], bool] = {}
        removed: dict[int, tuple[Holder, ...]] = {}
        for group in groups:
            if not self.releasable(group):
                continue
            plan = self._plan(group)
            failed = False
            for edge, item in plan.cuts.items():
                marker = (-1, edge)
                if marker not in done:
                    try:
                        _cut_item(self._objs[item.parent], item.keys, self._objs[item.child])
                        done[marker] = True
                    except Exception as exc:
                        done[marker] = False
                        log.warning("could not do %s: %s", item.action, exc)
                failed = failed or not done[marker]
            cuts: list[tuple[int, int, int]] = []
            for node in plan.reached:
                if self._cut_of(node, plan) >= 0:
                    continue
                for entry_index in self._entries_of.get(node, ()):
                    entry = self._entries[entry_index]
                    cuts.append((entry.site, entry.key, entry.value))
            for site_index, key_node, value_node in cuts:
                marker = (site_index, key_node)
                if marker not in done:
                    site = self._sites[site_index]
                    assert site.remove is not None
                    try:
                        site.remove(site, self._objs[key_node], self._objs[value_node])
                        done[marker] = True
                    except Exception as exc:
                        done[marker] = False
                        log.warning("could not remove %s: %s", site.name(self._objs[key_node])[0], exc)
                failed = failed or not done[marker]
            removed[group] = tuple(h for h in self.holders(group, limit=None) if h.removable)
            if failed:
                log.warning("some holders of a released model could not be removed")
        return removed

    def close(self) -> None:
        """Drop every reference the search holds (nodes, sites, keys)."""
        self._objs.clear()
        self._sites.clear()
        self._node_of.clear()
        self._site_of.clear()
        self._plans.clear()

    def __enter__(self) -> HolderSearch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
