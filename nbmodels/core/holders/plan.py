"""The plan: the cut nearest each part, and what blocks or widens it.

For every reference from the user's side into a part, force removes that
reference, where it can be removed without touching anything else:

- a site entry whose value is itself a part: ``del model``, ``del Out[4]``;
- an item or attribute of a mutable container or object: ``del cache['m']``,
  ``history[2] = None`` (a list keeps its length, so later indices stay),
  ``trainer.model = None``, ``wrapper.encoder = None``.

Where the reference cannot be cut (it sits in a tuple, a closure, a frame, an
optimizer, an object whose attributes cannot be set), the cut moves out to
every reference into that object, which then goes too: that is a *wide* cut,
which force makes only when the user names it (``allow=``), unless it is the
entry of a unit site (an output, a callback, the last exception), which is
removed whole by design. Site entries force may not change, and holders the
census finds outside the walk, are blockers.
"""

from __future__ import annotations

import collections
import dataclasses
import sys
import types
from collections.abc import Iterable
from typing import Any, NamedTuple

from nbmodels.core.holders.graph import ATOMS, USER, Edge, Graph
from nbmodels.core.holders.records import HolderKind


class Cut(NamedTuple):
    edge: Edge  # the reference force removes
    node: int  # what it points to: the part itself, or an object that goes with it (wide)
    part: int  # the part node it lets go of
    wide: bool
    chain: tuple[Edge, ...] = ()  # from ``node`` down to the part, when the cut is above it


class RawBlocker(NamedTuple):
    part: int
    holder: str
    kind: HolderKind
    reason: str


class Planner:
    """Finds, for each part the walk reached, the cuts that free it and the holders that block it."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.cuts: dict[tuple[Any, ...], Cut] = {}
        self.blockers: list[RawBlocker] = []
        self.through: dict[int, set[int]] = {}  # objects cuts go around -> the parts they free
        self._visited: set[tuple[int, int]] = set()  # (object gone around, part): followed once per part
        self._module_dicts = {id(vars(m)) for m in list(sys.modules.values()) if hasattr(m, "__dict__")}
        self._users = self._reached_by_the_user()

    def _reached_by_the_user(self) -> set[int]:
        """Nodes the user's own names reach (not only IPython's history, a traceback or a callback list).

        Inside what only unit sites reach (an old traceback's frames, an output
        nobody else holds), force cuts the unit entry instead of an item deep inside.
        """
        graph = self.graph
        below: dict[int, list[int]] = {}
        start: list[int] = []
        for node, edges in enumerate(graph.incoming):
            for edge in edges:
                if edge.parent >= 0:
                    below.setdefault(edge.parent, []).append(node)
                else:
                    root = graph.roots[~edge.parent]
                    if not graph.sites[root.site].is_unit(root.key):
                        start.append(node)
        reached = set(start)
        queue = list(start)
        for node in queue:
            for child in below.get(node, ()):
                if child not in reached and graph.state[child] == USER:
                    reached.add(child)
                    queue.append(child)
        return reached

    def run(self) -> None:
        graph = self.graph
        for node in graph.part_nodes():
            for edge in list(graph.incoming[node]):
                self._resolve(edge, node, node, ())

    def _resolve(self, edge: Edge, node: int, part: int, chain: tuple[Edge, ...]) -> None:
        graph = self.graph
        if edge.parent < 0:
            root = graph.roots[~edge.parent]
            site = graph.sites[root.site]
            kept = site.keep.get(root.key) if site.keep is not None else None
            if site.remove is None or kept is not None:
                reason = kept or site.reason or "it is not a place force may change"
                self.blockers.append(RawBlocker(part, root.label, site.kind, reason))
            else:
                self._add(Cut(edge, node, part, node != part and not site.is_unit(root.key), chain))
            return
        parent = edge.parent
        if graph.state[parent] != USER:
            return  # the model's own structure, or its owner: not a holder
        if self._cuttable(parent, edge):
            self._add(Cut(edge, node, part, node != part or self._takes_a_value(parent, edge), chain))
            return
        if (parent, part) in self._visited:
            return  # every way out of this object was followed once already: one holder, however many paths
        self._visited.add((parent, part))
        self.through.setdefault(parent, set()).add(part)
        for outer in list(graph.incoming[parent]):
            self._resolve(outer, parent, part, (edge, *chain))

    def _add(self, cut: Cut) -> None:
        edge = cut.edge
        key = (edge.parent, edge.op, edge.key if type(edge.key) in ATOMS else id(edge.key), cut.node, cut.part)
        self.cuts.setdefault(key, cut)

    def _takes_a_value(self, parent: int, edge: Edge) -> bool:
        """True when the cut takes more than the reference: a dict entry's value, a finalizer's callback."""
        if edge.op == "finalizer":
            return True
        if edge.op != "dictkey":
            return False
        value = entry_value(self.graph.objs[parent], edge.key)
        return value is not None and self.graph.parts.of(value) is None

    def _cuttable(self, parent: int, edge: Edge) -> bool:
        """True when force can remove this one reference and leave its holder as it was otherwise."""
        graph = self.graph
        obj = graph.objs[parent]
        kind = type(obj)  # never isinstance(): it would call a __class__ property of the user's object
        if graph.sealed[parent] or issubclass(kind, _sealed()) or parent not in self._users:
            return False
        if issubclass(kind, dict) and kind.__delitem__ not in _PLAIN_DELITEM:
            return False  # a mapping with rules of its own (a ModelOutput refuses del): cut only whole
        op = edge.op
        if op in ("item", "dictkey"):
            # never a module's namespace or a frame's snapshot of its locals: changing those frees nothing
            return issubclass(kind, dict) and id(obj) not in self._module_dicts and id(obj) not in graph.snapshots
        if op == "index":
            return issubclass(kind, list) or kind.__name__ == "deque"
        if op == "member":
            return issubclass(kind, set)
        if op in ("child", "cache", "finalizer"):
            return True  # a module's child; a function's cache (clearing it only costs recomputing)
        if op == "attr":
            return _settable(obj)
        return False

    def groups_of_cuts(self) -> dict[int, list[Cut]]:
        """Cuts by the part they free."""
        found: dict[int, list[Cut]] = {}
        for cut in self.cuts.values():
            found.setdefault(cut.part, []).append(cut)
        return found


_PLAIN_DELITEM = (dict.__delitem__, collections.OrderedDict.__delitem__)


def entry_value(mapping: Any, key: Any) -> Any:
    """The value under ``key`` found by identity (a tensor key's ``==`` compares elements)."""
    return next((v for k, v in list(mapping.items()) if k is key), None)


def _settable(obj: Any) -> bool:
    """An object whose attributes force may set: not an exception, frame, class or frozen record."""
    kind = type(obj)
    if issubclass(kind, BaseException | types.TracebackType | types.FrameType | type | types.ModuleType):
        return False
    params = getattr(type(obj), "__dataclass_params__", None)
    if params is not None and dataclasses.is_dataclass(obj) and getattr(params, "frozen", False):
        return False
    return not issubclass(kind, tuple)


def _sealed() -> tuple[type, ...]:
    from nbmodels.core.holders.graph import _sealed_types

    return _sealed_types()


def parts_below(graph: Graph, nodes: Iterable[int]) -> dict[int, set[int]]:
    """For each node, the part nodes reachable below it along recorded edges (itself, if a part)."""
    below: dict[int, set[int]] = {}
    queue = [node for node in graph.part_nodes()]
    for node in queue:
        below.setdefault(node, set()).add(node)
    index = 0
    while index < len(queue):
        node = queue[index]
        index += 1
        for edge in graph.incoming[node]:
            parent = edge.parent
            if parent < 0:
                continue
            known = below.setdefault(parent, set())
            before = len(known)
            known |= below[node]
            if len(known) != before:
                queue.append(parent)
    wanted = set(nodes)
    return {node: parts for node, parts in below.items() if node in wanted}


__all__ = ["Cut", "Planner", "RawBlocker", "entry_value", "parts_below"]
