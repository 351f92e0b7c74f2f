"""Attribution: every live tensor storage of the process under the name a user would give its holder.

Roots are the named places (:mod:`nbmodels.core.holders.sites`: the
notebook's variables, ``Out``, ``sys.last_*``, and what the IPython layer
adds) and the manager's models by name. Each distinct root value is walked
forward (:mod:`.walk`); each storage then goes to one owner, chosen in this
order: a managed model, a released model still held, then the way the place
holds it (a module's weights before a plain tensor, before an optimizer's
parameter list, its state, and an autograd graph), then the place's kind
(a variable before an output before a traceback). The others that reach it
are listed beside it. Storages the census finds and no root reaches are
reported as unattributed, never dropped.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from nbmodels.core import memory
from nbmodels.core.attribution.census import StorageInfo, census
from nbmodels.core.attribution.report import Holding, MemoryReport, MemoryRow, Remedy, RowKind
from nbmodels.core.attribution.residue import CudaReading, live_cuda, residue
from nbmodels.core.attribution.walk import Reach, Relation, Walker
from nbmodels.core.collector import collector_paused
from nbmodels.core.holders.sites import Boundary, Gap, Site

MiB = 1 << 20
_KIND_ORDER = {"model": 0, "variable": 2, "output": 3, "exception": 4}  # of the places; others after
_OUTPUT_NAME = re.compile(r"Out\[\d+\]|_\d+")
_WALK_BUDGET = 200_000


@dataclass
class Root:
    """A named place and how it is freed; roots holding the same object share a ``group``."""

    name: str
    kind: str
    remedy: Remedy
    expr: str | None
    group: int = -1
    order: tuple[int, int, str] = (9, 9, "")


@dataclass
class _Claim:
    root: Root
    reach: Reach

    def path(self) -> str | None:
        """Python for the tensor from the root's name (``net.fc.weight``), when there is one."""
        return _join(self.root.expr, self.reach.expr)

    def key(self) -> tuple[int, int, int, int, bool, int, str]:
        """Managed models first, then how it holds (a module's weight first), the place's kind, the nearest,
        the base before its views."""
        model = 0 if self.root.kind == "model" else 1
        order, preferred, name = self.root.order
        reach = self.reach
        return (model, int(reach.relation), order, reach.depth, reach.view, preferred, name)


@dataclass
class _Row:
    owner: str
    kind: RowKind
    device: str
    storages: list[StorageInfo] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    holders: dict[tuple[str, int], Holding] = field(default_factory=dict)
    remedies: list[Remedy] = field(default_factory=list)


def _join(base: str | None, rest: str | None) -> str | None:
    return base + rest if base is not None and rest is not None else None


def _root_order(name: str, kind: str) -> tuple[int, int, str]:
    """Among places of one kind, the name a user knows: ``Out[7]`` before ``_``, ``sys.last_traceback`` first."""
    order = _KIND_ORDER.get(kind, 5)
    if kind == "output":
        preferred = 0 if _OUTPUT_NAME.fullmatch(name) else 1
    elif kind == "exception":
        preferred = 0 if name == "sys.last_traceback" else 1
    else:
        preferred = 0
    return (order, preferred, name)


def _site_roots(places: Iterable[Site | Boundary | Gap]) -> tuple[list[tuple[Root, Any]], list[Any], list[str]]:
    """``(root, value)`` of every entry of every site, each (container, key) once; the boundaries; and why
    some places could not be looked at (a holder finder that failed)."""
    roots: list[tuple[Root, Any]] = []
    boundaries: list[Any] = []
    gaps: list[str] = []
    seen: set[tuple[int, Any]] = set()
    sites: dict[int, Site] = {}
    for place in places:
        if isinstance(place, Boundary):
            boundaries.append(place.obj)
        elif isinstance(place, Gap):
            gaps.append(place.reason)
        else:  # a container named twice (``__main__`` is IPython's namespace): the later, more specific site
            sites[id(place.container)] = place
    for place in sites.values():
        for key, value in place.entries():
            try:
                mark = (id(place.container), key)
                if mark in seen:
                    continue
                seen.add(mark)
            except TypeError:  # an unhashable key
                continue
            if value is None or type(value) in (int, float, bool, str, bytes):
                continue
            name, kind = place.name(key)
            roots.append((Root(name, str(kind), _remedy(place, key, name, str(kind)), _expr(place, key)), value))
    return roots, boundaries, gaps


def _remedy(site: Site, key: Any, name: str, kind: str) -> Remedy:
    try:
        command = site.command.format(key=key) if site.command and site.remove is not None else ""
    except (KeyError, IndexError, ValueError):  # needs {value}: no Python name for it
        command = ""
    if command == f"del {key}" and isinstance(key, str) and key.isidentifier():
        return Remedy("output" if kind == "output" else "del", key, command)
    if command:
        return Remedy("python", name, command)
    return Remedy("none", f"remove {name} (no Python names it)")


def _expr(site: Site, key: Any) -> str | None:
    if not site.expr:
        return None
    try:
        text = site.expr.format(key=key)
        compile(text, "<nbmodels>", "eval")
    except (KeyError, IndexError, ValueError, SyntaxError):
        return None
    return text


def attribute(
    places: Iterable[Site | Boundary | Gap],
    models: Iterable[tuple[str, Any]] = (),
    released: Iterable[tuple[str, Iterable[int]]] = (),
    *,
    threshold: int = MiB,
    everything: bool = False,
    rss: int | None = None,
    cuda: Iterable[CudaReading] | None = None,
    unload: Callable[[str], Remedy] | None = None,
    budget: int = _WALK_BUDGET,
    elsewhere: Iterable[tuple[str, str, dict[str, int]]] = (),
) -> MemoryReport:
    """The report: ``places`` are the sites (and boundaries), ``models`` the managed models by name,
    ``released`` the storage keys of released models still alive; ``everything`` lists owners under
    ``threshold`` one by one instead of folding them. ``elsewhere``: managed models that live in another
    process, ``(name, where, bytes by device)``: listed, never counted in this process's tensors."""
    unload = unload or (lambda name: Remedy("unload", name, f"nbmodels.get_manager().unload({name!r}, force=True)"))
    if "torch" not in sys.modules:
        return MemoryReport((), tuple(residue(rss, {}, cuda or [])), {}, {}, threshold)
    site_roots, boundaries, gaps = _site_roots(places)
    model_roots = [(Root(name, "model", unload(name), None, order=(0, 0, name)), model) for name, model in models]
    walker = Walker(boundaries, budget=budget)
    known: dict[int, StorageInfo] = {}
    claims, stopped, unreadable = _walk_roots(walker, [*model_roots, *site_roots], known)
    del site_roots, model_roots, walker  # no root is held while the census runs
    truncated = list(gaps)  # what it could not look at makes unattributed what those places hold
    if stopped:
        more = f" and {len(stopped) - 5} more" if len(stopped) > 5 else ""
        where = ", ".join(stopped[:5]) + more
        truncated.append(f"the walk ran out of budget from {where}; what it missed is unattributed")
    if unreadable:
        truncated.append(f"{unreadable} objects could not be read and were skipped")
    released_of = {key: name for name, keys in released for key in keys}
    all_storages = census()
    for key, info in known.items():
        all_storages.setdefault(key, info)
    rows: dict[tuple[str, RowKind, str], _Row] = {}
    for key, info in all_storages.items():
        if info.nbytes == 0 or not info.alive():
            continue
        found = sorted(claims.get(key, []), key=_Claim.key)
        owner, kind = _owner(found, released_of.get(key))
        row = rows.setdefault((owner, kind, info.device), _Row(owner, kind, info.device))
        row.storages.append(info)
        path = found[0].path() if found else None
        if path and path != owner and path not in row.paths and len(row.paths) < 3:
            row.paths.append(path)
        if kind == "optimizer state" and found and found[0].reach.state_key:
            state = repr(found[0].reach.state_key)
            if state not in row.paths:
                row.paths.append(state)
        _add_holders(row, found, released_of.get(key), unload)
    tensor_bytes: dict[str, int] = {}
    attributed: dict[str, int] = {}
    for key, info in all_storages.items():
        if info.nbytes and info.alive():
            tensor_bytes[info.device] = tensor_bytes.get(info.device, 0) + info.nbytes
            if key in claims or key in released_of:
                attributed[info.device] = attributed.get(info.device, 0) + info.nbytes
    built = _fold([_build(row) for row in rows.values()], threshold, everything)
    built += [
        MemoryRow(
            owner=name,
            kind="model",
            device=device,
            nbytes=nbytes,
            storages=0,
            what=f"in {where}: its memory, not this kernel's",
            remedies=(unload(name),),
        )
        for name, where, by_device in elsewhere
        for device, nbytes in by_device.items()
    ]
    return MemoryReport(
        rows=tuple(sorted(built, key=lambda r: (r.kind == "smaller", -r.nbytes, r.owner))),
        residue=tuple(residue(rss, tensor_bytes, cuda if cuda is not None else [])),
        tensor_bytes=tensor_bytes,
        attributed_bytes=attributed,
        threshold=threshold,
        truncated="; ".join(truncated),
    )


def _walk_roots(
    walker: Walker, roots: list[tuple[Root, Any]], known: dict[int, StorageInfo]
) -> tuple[dict[int, list[_Claim]], list[str], int]:
    """Walk each distinct root value once: the claims on each storage, the roots whose walk ran out of
    budget, and how many objects could not be read. Its locals (the roots' values) go when it returns."""
    claims: dict[int, list[_Claim]] = {}
    groups: dict[int, int] = {}
    stopped: list[str] = []
    unreadable = 0
    walked: dict[int, dict[int, Reach]] = {}
    for root, value in roots:
        if root.kind != "model":
            root.order = _root_order(root.name, root.kind)
        root.group = groups.setdefault(id(value), len(groups))
        reached = walked.get(id(value))
        if reached is None:
            result = walker.walk(value, "", known)  # paths relative to the value: each root adds its own name
            reached = walked[id(value)] = result.reached
            if result.truncated:
                stopped.append(root.name)
            unreadable += result.unreadable
        for key, reach in reached.items():
            claims.setdefault(key, []).append(_Claim(root, reach))
    roots.clear()
    return claims, stopped, unreadable


def _owner(found: list[_Claim], released: str | None) -> tuple[str, RowKind]:
    if found and found[0].root.kind == "model":
        return found[0].root.name, "model"
    if released is not None:
        return f"released model {released}", "released model"
    if not found:
        return "unattributed (no named place reaches it)", "unattributed"
    best = found[0]
    root, reach = best.root, best.reach
    if reach.relation == Relation.STATE:
        return root.name, "optimizer state"
    if reach.relation == Relation.GRAPH:
        return root.name, "autograd graph"
    if root.kind == "exception":
        return root.name + reach.suffix, "traceback"
    if root.kind in ("variable", "output"):
        return root.name, "variable" if root.kind == "variable" else "output"
    return root.name, "other"


def _add_holders(row: _Row, found: list[_Claim], released: str | None, unload: Callable[[str], Remedy]) -> None:
    if row.kind in ("model", "released model"):
        name = row.owner if row.kind == "model" else row.owner.removeprefix("released model ")
        if not row.remedies:
            row.remedies.append(unload(name))
    owner_suffix = found[0].reach.suffix if found else ""
    for claim in found:
        root = claim.root
        name = root.name
        if root.kind == "exception" and claim.reach.suffix != owner_suffix:  # the same local: the root says it
            name += claim.reach.suffix
        mark = (name, root.group)
        if mark in row.holders:
            continue
        remedy = root.remedy
        optimizer = _join(root.expr, claim.reach.optimizer)
        if claim.reach.relation == Relation.STATE and optimizer:
            remedy = Remedy("clear_state", optimizer, f"{optimizer}.state.clear()")
        row.holders[mark] = Holding(name, root.kind, remedy, root.group)
        if row.kind not in ("model", "released model") and all(r.text() != remedy.text() for r in row.remedies):
            row.remedies.append(remedy)


def _build(row: _Row) -> MemoryRow:
    holders = tuple(row.holders.values())
    what = ""
    if row.kind == "optimizer state":
        what = "state " + ", ".join(p for p in row.paths if p.startswith("'"))
    elif row.kind == "autograd graph":
        what = "activations and tensors its autograd graph saved"
    elif row.paths:
        what = ", ".join(row.paths) + (", ..." if len(row.storages) > len(row.paths) else "")
    # variables first: an output's del_var would also delete a variable holding the same object
    remedies = sorted(row.remedies, key=lambda r: {"del": 0, "clear_state": 1}.get(r.kind, 2))
    return MemoryRow(
        owner=row.owner,
        kind=row.kind,
        device=row.device,
        nbytes=sum(s.nbytes for s in row.storages),
        storages=len(row.storages),
        what=what,
        holders=holders,
        remedies=tuple(remedies),
        borrowed=sum(s.nbytes for s in row.storages if s.borrowed),
        keys=tuple(s.key for s in row.storages),
        refs=tuple(s.ref for s in row.storages),
    )


def _fold(rows: list[MemoryRow], threshold: int, everything: bool) -> list[MemoryRow]:
    """Owners under ``threshold`` go into one row per device (unless ``everything``); unattributed rows stay."""
    if everything:
        return rows
    kept = [r for r in rows if r.nbytes >= threshold or r.kind in ("model", "released model", "unattributed")]
    small: dict[str, list[MemoryRow]] = {}
    for row in rows:
        if row not in kept:
            small.setdefault(row.device, []).append(row)
    for device, group in small.items():
        kept.append(
            MemoryRow(
                owner=f"{len(group)} owners under {memory.format_bytes(threshold)} each (--all lists them)",
                kind="smaller",
                device=device,
                nbytes=sum(r.nbytes for r in group),
                storages=sum(r.storages for r in group),
                keys=tuple(k for r in group for k in r.keys),
                refs=tuple(ref for r in group for ref in r.refs),
            )
        )
    return kept


def memory_report(
    manager: Any = None,
    *,
    threshold: int = MiB,
    everything: bool = False,
    cuda: Iterable[CudaReading] | None = None,
    unload: Callable[[str], Remedy] | None = None,
    budget: int = _WALK_BUDGET,
) -> MemoryReport:
    """The report for ``manager`` (the process-wide one by default): its places, models and released models."""
    from nbmodels.core import isolation
    from nbmodels.core.manager import get_manager

    manager = manager if manager is not None else get_manager()
    places = manager._places()
    models = [(name, model) for name, model in manager._loaded_models() if not isolation.is_remote(model)]
    remote = [info for info in manager.list() if info.runner != "kernel"]
    elsewhere = [(info.name, info.where, dict(info.bytes_by_device)) for info in remote]
    with manager._lock:
        watches = [(name, list(w)) for name, w in manager._survivors.items()]
    released = [(name, [r.key for w in group for r in w.live_storages()]) for name, group in watches]
    del watches
    if unload is None:
        unload = _unload_command(manager)
    try:
        with collector_paused():  # the walk's short-lived tuples must not set off a full collection
            return attribute(
                places,
                models,
                released,
                threshold=threshold,
                everything=everything,
                rss=memory.process_rss(),
                cuda=live_cuda() if cuda is None else cuda,
                unload=unload,
                budget=budget,
                elsewhere=elsewhere,
            )
    finally:
        del places, models


def _unload_command(manager: Any) -> Callable[[str], Remedy]:
    def unload(name: str) -> Remedy:
        return Remedy("unload", name, manager._fix_command(name, ()))

    return unload


def holders_summary(manager: Any, device: str, *, limit: int = 3) -> str:
    """The largest holders on ``device`` that are not models, in a few words, for an error message:
    ``other holders on cpu: x 4.0 MiB, Out[3] 2.0 MiB (nbmodels.memory() or %memory: what frees each)``.
    Empty when there are none; never raises (an error message must not fail)."""
    try:
        found = memory_report(manager, cuda=[])
    except Exception:
        return ""
    rows = [r for r in found.rows if r.device == device and r.kind not in ("model", "released model", "smaller")]
    if not rows:
        return ""
    named = ", ".join(f"{row.owner} {memory.format_bytes(row.nbytes)}" for row in rows[:limit])
    return f"other holders on {device}: {named} (nbmodels.memory() or %memory: what frees each)"


__all__ = ["MiB", "Root", "attribute", "holders_summary", "memory_report"]
