"""The whole search for one release: walk, account, plan, name, and hand back one plan per model.

Costs, in a heavy notebook (transformers imported, ~400,000 tracked objects):
the walk visits only what the notebook's names reach; the census reads
reference counts; a pass over the heap happens only when a storage has users
the walk did not see (a ``state_dict()`` kept elsewhere, a graph's saved view),
and ``gc.get_referrers`` scans only for references nothing explains.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any, NamedTuple

from nbmodels.core.holders.census import DEPTH as _DEPTH
from nbmodels.core.holders.census import Stray, references_we_hold, trace_back, unexplained
from nbmodels.core.holders.execute import Op
from nbmodels.core.holders.graph import INTERNAL, PART, Edge, Graph
from nbmodels.core.holders.parts import Parts
from nbmodels.core.holders.plan import Cut, Planner, RawBlocker, entry_value, parts_below
from nbmodels.core.holders.records import Action, Blocker, HolderKind, RemovalPlan
from nbmodels.core.holders.render import Paths, is_python, key_text, literal, summary, summary_of_value
from nbmodels.core.holders.sites import Boundary, Gap, Site
from nbmodels.core.holders.watch import Watch, storage_key

OWNER = 3  # a node whose references are ours (the manager's entry during a dry run)


class Found(NamedTuple):
    """What a search found: one plan per watch (in order), its time, and whether references went unexplained."""

    plans: list[RemovalPlan]
    seconds: float
    unexplained: bool


def search(
    watches: Sequence[Watch],
    places: Iterable[Site | Boundary | Gap],
    *,
    loaded: Sequence[tuple[str, Any]] = (),
    owners: Iterable[Any] = (),
    trace: bool = True,
) -> Found:
    """One :class:`RemovalPlan` per watch, in order.

    ``places`` are the sites (and boundaries) to search from; ``loaded`` are the
    models still loaded, which are never cut and which block a release they share
    storage with; ``owners`` are objects whose references to a model are the
    caller's own (the manager's entry, for a dry run of a loaded model). With
    ``trace=False``, references nothing explains are only flagged
    (``unexplained``), not traced through the heap: the caller may first run a
    gc pass (they are often cycles a traceback printer left behind) and search again.
    """
    started = time.perf_counter()
    places = list(places)
    sites = [place for place in places if isinstance(place, Site)]
    boundaries = [place.obj for place in places if isinstance(place, Boundary)]
    boundaries += [model for _, model in loaded]
    parts = Parts(watches)
    graph = Graph(_dedupe(sites), parts, boundaries=boundaries)
    gaps = [place.reason for place in places if isinstance(place, Gap)]
    try:
        plans, unexplained = _search(watches, graph, parts, loaded, list(owners), trace)
        if gaps:
            plans = [replace(plan, truncated=plan.truncated or gaps[0]) for plan in plans]
    finally:
        graph.close()
        parts.close()
    return Found(plans, time.perf_counter() - started, unexplained)


def _dedupe(sites: list[Site]) -> list[Site]:
    """One site per container: a later, more specific site (the IPython layer's) replaces an earlier one."""
    by_container: dict[int, int] = {}
    kept: list[Site | None] = []
    for site in sites:
        index = by_container.get(id(site.container))
        if index is not None:
            kept[index] = None
        by_container[id(site.container)] = len(kept)
        kept.append(site)
    return [site for site in kept if site is not None]


def _search(
    watches: Sequence[Watch],
    graph: Graph,
    parts: Parts,
    loaded: Sequence[tuple[str, Any]],
    owners: list[Any],
    trace: bool,
) -> tuple[list[RemovalPlan], bool]:
    graph.walk()
    graph.close_over_parts(parts.known_objects())
    for owner in owners:
        _add_owner(graph, owner)
    extra = _shared_with_loaded(graph, parts, loaded)
    if _needs_heap_scan(graph, parts):
        known = {id(obj) for obj in graph.objs}
        found = parts.scan_heap(known)
        graph.close_over_parts(found)
        del found
        extra += _storage_outside(graph, parts)
    planner, heavy, leftover = _plan(graph, parts)
    strays: list[Stray] = []
    if leftover and (trace or graph.deferred):
        # without trace, only a short look into the big containers the walk left unread (one or two heap passes)
        strays, expansions = trace_back(graph, leftover, parts.held(), depth=_DEPTH if trace else 2)
        if expansions:
            for path in expansions:
                graph.expand(path)
            del expansions, path
            planner, heavy, leftover = _plan(graph, parts)
            strays = trace_back(graph, leftover, parts.held())[0] if leftover and trace else []
        elif not trace:
            strays = []
    for stray in strays:
        for part in heavy.get(stray.node, set()) | planner.through.get(stray.node, set()):
            extra.append(RawBlocker(part, stray.holder, stray.kind, stray.reason))
    return _render(watches, graph, planner, extra), bool(leftover)


def _plan(graph: Graph, parts: Parts) -> tuple[Planner, dict[int, set[int]], dict[int, int]]:
    """The cuts, the parts below each node, and the nodes with references nothing recorded explains."""
    planner = Planner(graph)
    planner.run()
    heavy = parts_below(graph, range(len(graph.objs)))
    accounted = [n for n, below in heavy.items() if below and graph.state[n] in (PART, INTERNAL)]
    accounted += list(planner.through)
    held = parts.held()
    leftover = unexplained(graph, sorted(set(accounted)), references_we_hold(graph, held))
    return planner, heavy, leftover


def _add_owner(graph: Graph, owner: Any) -> None:
    """Record the references ``owner`` holds to nodes as the caller's own (not holders)."""
    from nbmodels.core.holders.graph import children

    node = graph._new(owner, OWNER, None, False)
    for op, key, child, scan in children(owner, graph):
        target = graph.node_of.get(id(child))
        if target is not None:
            graph.incoming[target].append(Edge(node, op, key, scan))


def _needs_heap_scan(graph: Graph, parts: Parts) -> bool:
    """True when a storage has more users than the tensors seen, or a tensor is shared in C++ unexplained."""
    torch = parts.torch
    if torch is None or not parts.storages:
        return False
    users: dict[int, set[int]] = {key: set(parts.graph_impls.get(key, ())) for key in parts.storages}
    tensors = [node for node in graph.part_nodes() if isinstance(graph.objs[node], torch._C.TensorBase)]
    bases = {id(graph.objs[node]._base) for node in tensors}  # a view holds its base in C++
    for node in tensors:
        key = _key(graph.objs[node])
        if key in users:
            users[key].add(int(graph.objs[node]._cdata))
        shared = graph.objs[node]._use_count() > 1
        if shared and id(graph.objs[node]) not in parts.graph_held and id(graph.objs[node]) not in bases:
            return True
    return any(_storage_users(torch, key) > len(seen) for key, seen in users.items())


def _storage_users(torch: Any, key: int) -> int:
    """Tensors using a storage: its use count, less the one its Python object (which we made) keeps."""
    return int(torch._C._storage_Use_Count(key)) - 1


def _storage_outside(graph: Graph, parts: Parts) -> list[RawBlocker]:
    """Storages still used by more than every tensor found, with no autograd graph to explain it."""
    torch = parts.torch
    users: dict[int, int] = dict.fromkeys(parts.storages, 0)
    anchors: dict[int, int] = {}
    for node in graph.part_nodes():
        obj = graph.objs[node]
        if isinstance(obj, torch._C.TensorBase):  # type: ignore[union-attr]
            key = _key(obj)
            if key in users:
                users[key] += 1
                anchors.setdefault(key, node)
        del obj
    if parts.graph_held:
        return []  # a graph saved views of these weights for backward: it accounts for the extra users
    found = []
    for key, seen in users.items():
        if _storage_users(torch, key) > seen and key in anchors:
            name = parts.storages[key][1]
            reason = "C++ code keeps a tensor on this storage (a hook, a compiled graph, an extension)"
            found.append(RawBlocker(anchors[key], f"the storage of {name}, outside Python's view", "unseen", reason))
    return found


def _key(tensor: Any) -> int | None:
    try:
        return storage_key(tensor)
    except Exception:
        return None


def _shared_with_loaded(graph: Graph, parts: Parts, loaded: Sequence[tuple[str, Any]]) -> list[RawBlocker]:
    """A model still loaded that uses a storage of a released one: unloading that one too is the way."""
    if not loaded or not parts.storages:
        return []
    from nbmodels.core.holders.watch import named_tensors

    anchor = {part.group: node for node, part in enumerate(graph.part) if part is not None}
    found = []
    for name, model in loaded:
        groups = {
            parts.storages[key][0]
            for _, tensor in named_tensors(model)
            if (key := _key(tensor)) is not None and key in parts.storages
        }
        for group in sorted(groups):
            if group in anchor:
                reason = f"the loaded model {name!r} shares its weights; unload that one too"
                found.append(RawBlocker(anchor[group], f"the loaded model {name!r}", "model", reason))
        if groups:
            _add_owner(graph, model)  # what it holds of ours is the loaded model's, not a stray holder
            for module in model.modules() if hasattr(model, "modules") else ():
                if id(module) not in graph.node_of:
                    _add_owner(graph, module)
    return found


# --- rendering the plans -----------------------------------------------------------------------------


def _render(watches: Sequence[Watch], graph: Graph, planner: Planner, extra: list[RawBlocker]) -> list[RemovalPlan]:
    paths = Paths(graph)
    names = _value_names(graph)
    by_group: dict[int, tuple[list[Action], list[Op], list[Blocker]]] = {i: ([], [], []) for i in range(len(watches))}
    seen_actions: dict[int, set[str]] = {i: set() for i in range(len(watches))}
    for cut in sorted(planner.cuts.values(), key=lambda c: _order(graph, paths, c)):
        part = graph.part[cut.part]
        assert part is not None
        action, op = _action(graph, paths, names, cut, part.what)
        actions, ops, _ = by_group[part.group]
        # one entry of a unit site may stand for several (sys.last_value and sys.last_traceback go together)
        same = action.text() if op.kind == "entry" and action.command else action.text() + action.holder
        if same in seen_actions[part.group]:
            continue
        seen_actions[part.group].add(same)
        actions.append(action)
        ops.append(op)
    for raw in [*planner.blockers, *extra]:
        part = graph.part[raw.part]
        group = part.group if part is not None else 0
        blockers = by_group[group][2]
        blocker = Blocker(raw.holder, raw.kind, raw.reason)
        if blocker not in blockers:
            blockers.append(blocker)
    plans = []
    for group, watch in enumerate(watches):
        actions, ops, blockers = by_group[group]
        plans.append(
            RemovalPlan(
                name=watch.name,
                survivor=watch.what(),
                actions=tuple(actions),
                blockers=tuple(blockers),
                truncated=graph.truncated,
                ops=tuple(ops),
            )
        )
    return plans


def _order(graph: Graph, paths: Paths, cut: Cut) -> tuple[int, int, int]:
    """The user's own names first, in the order they were defined; then the history and other unit entries."""
    edge = cut.edge
    root = ~edge.parent if edge.parent < 0 else paths.root_of(edge.parent)
    if root < 0:
        return (1, 0, 0)
    entry = graph.roots[root]
    unit = graph.sites[entry.site].is_unit(entry.key)
    return (1 if unit else 0, root, 0 if edge.parent < 0 else 1)


def _value_names(graph: Graph) -> dict[int, str]:
    """The notebook's variable name for each object bound to one (``{value}`` in a site's command)."""
    names: dict[int, str] = {}
    for root in graph.roots:
        site = graph.sites[root.site]
        if (
            site.kind == "variable"
            and site.remove is not None
            and isinstance(root.key, str)
            and root.key.isidentifier()
        ):
            value = site.container.get(root.key) if isinstance(site.container, dict) else None
            if value is not None:
                names.setdefault(id(value), root.key)
            del value
    return names


_KINDS: dict[str, HolderKind] = {
    "item": "item",
    "dictkey": "item",
    "index": "item",
    "member": "item",
    "attr": "attribute",
    "child": "attribute",
    "cache": "cache",
    "finalizer": "callback",
}


_METHOD_CUTS = {
    "finalizer": ("detach", "detach the finalizer {}"),
    "cache": ("cache_clear", "clear the cache of {} (it fills again on the next calls)"),
}


def _action(graph: Graph, paths: Paths, names: dict[int, str], cut: Cut, holds: str) -> tuple[Action, Op]:
    edge = cut.edge
    value = graph.objs[cut.node]
    words, python, note = paths.through(edge)
    holder = python or words
    takes = summary(value) if cut.wide else ""
    if cut.wide and edge.op == "finalizer":
        holder = paths.of(edge.parent)[1] or paths.of(edge.parent)[0]
        takes = "the finalizer: its callback will never run"
    if cut.wide and edge.op == "dictkey" and edge.parent >= 0:
        holder = paths.of(edge.parent)[1] or paths.of(edge.parent)[0]
        takes = f"the value stored under it ({summary_of_value(entry_value(graph.objs[edge.parent], edge.key))})"
    path = ""
    if cut.chain:
        path = words + "".join(paths.step(link)[0] for link in cut.chain) + note
    if edge.parent < 0:
        root = graph.roots[~edge.parent]
        site = graph.sites[root.site]
        command = _format(site.command, root.key, names.get(id(value)))
        verb = "delete the variable" if site.kind == "variable" else "remove"
        description = f"{verb} {words}{note}"
        graph_part = root.kind == "variable" and cut.node == cut.part and "autograd graph" in holds
        kind: HolderKind = "autograd" if graph_part else root.kind
        return (
            Action(holder, kind, holds, description, command, takes, path),
            Op("entry", site, root.key, value),
        )
    parent = graph.objs[edge.parent]
    parent_words, parent_python, _ = paths.of(edge.parent)
    op, key = edge.op, edge.key
    command = ""
    if op == "item":
        text = literal(key)
        if parent_python is not None and text is not None:
            command = f"del {parent_python}[{text}]"
        description = f"delete the item {key_text(key)} of {parent_words}"
        kind_op = "item"
    elif op == "dictkey":
        description = f"delete the entry of {parent_words} whose key is it"
        kind_op = "dictkey"
    elif op == "index":
        if parent_python is not None:
            command = f"{parent_python}[{key}] = None"
        description = f"set item {key} of {parent_words} to None (the other items keep their places)"
        kind_op = "index"
    elif op == "member":
        description = f"remove it from the set {parent_words}"
        kind_op = "member"
    elif op in _METHOD_CUTS:  # a cut that is a call on the holder: fin.detach(), f.cache_clear()
        method, words_template = _METHOD_CUTS[op]
        if parent_python is not None:
            command = f"{parent_python}.{method}()"
        description = words_template.format(parent_words)
        kind_op = op
    else:  # attr, child
        if python is not None:
            command = f"{python} = None"
        description = f"set {words} to None"
        kind_op = "attr"
    if command and not is_python(command, "exec"):
        command = ""
    action = Action(holder, _KINDS.get(op, "attribute"), holds, description, command, takes, path)
    return action, Op(kind_op, parent, key, value)


def _format(template: str, key: Any, value_name: str | None) -> str:
    """A site's command for one entry, or "" when it cannot be written as Python that runs."""
    if not template:
        return ""
    if "{value}" in template and value_name is None:
        return ""
    try:
        text = template.format(key=key, value=value_name)
    except (KeyError, IndexError, ValueError):
        return ""
    return text if is_python(text, "exec") else ""


__all__ = ["search"]
