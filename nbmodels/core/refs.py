"""Who still holds an object, in words a user understands, and how to let go of it (IPython-free).

``del model; gc.collect()`` frees nothing while something else holds the model.
This module finds those holders: a backward walk over gc referrers from the
surviving objects, one gc scan per level for all of them, until each chain
reaches a *site* -- a place that can name its entries: the user namespace
(``__main__``), ``sys.last_*``, module globals, and whatever an integration
adds through a holder finder (IPython's output history, widget callbacks).
Each chain becomes a :class:`Holder` named as the user would write it
(``model``, ``cache['m']``, ``trainer.model``, ``Out[7]``,
``sys.last_value → traceback → local 'x' of train()``).

For ``force``, the search also plans the removal: the entry of each site
that leads to the model (the variable ``trainer``, ``Out[7]``, a widget's
callback, which is the nearest cut: the widget itself stays). When a variable
leads to the model through plain dicts and lists only, the item goes instead
and the containers stay: ``del cache['m']``, ``layers[3] = None`` (None keeps
the indices of the later items). A model with
even one holder that cannot be removed (a global of another module, a C
extension) gets no removal at all, so no variable is deleted in vain.
"""

from __future__ import annotations

import builtins
import gc
import sys
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from nbmodels.core import memory
from nbmodels.core.search import (
    TIME_LIMIT,
    Holder,
    HolderFinder,
    HolderKind,
    HolderSearch,
    RemoveFn,
    Site,
)

_MAX_TENSORS = 64
_LAST_EXCEPTION = frozenset({"last_type", "last_value", "last_traceback", "last_exc"})


# --- removal functions for sites ------------------------------------------------------------


def remove_key(site: Site, key: Any, value: Any) -> None:
    """Delete ``container[key]`` if it still is ``value``."""
    container = site.container
    if key in container and container[key] is value:
        del container[key]


def remove_item(site: Site, key: Any, value: Any) -> None:
    """Remove ``value`` (by identity) from a list."""
    container = site.container
    for index in reversed(range(len(container))):
        if container[index] is value:
            del container[index]


def set_none(site: Site, key: Any, value: Any) -> None:
    """Set the attribute (or dict entry) ``key`` to None if it still is ``value``."""
    container = site.container
    if isinstance(container, dict):
        if container.get(key) is value:
            container[key] = None
    elif getattr(container, key, None) is value:
        setattr(container, key, None)


def clear_last_exception(site: Site, key: Any, value: Any) -> None:
    """``sys.last_value = None`` and friends; ``last_type`` too once nothing of the exception is left."""
    set_none(site, key, value)
    gone = all(getattr(sys, name, None) is None for name in ("last_value", "last_traceback", "last_exc"))
    if gone and getattr(sys, "last_type", None) is not None:
        sys.last_type = None


def default_sites() -> list[Site]:
    """What the core knows without IPython: ``__main__`` variables, ``sys.last_*``, the prompt's ``_``."""
    sites = [
        Site(
            vars(sys),
            label="sys.{key}",
            kind="exception",
            remove=clear_last_exception,
            action="sys.{key} = None",
            keys=_LAST_EXCEPTION,
        ),
        Site(
            vars(builtins),
            label="_ (the last result the Python prompt showed)",
            kind="output",
            remove=remove_key,
            action="del builtins._",
            keys=frozenset({"_"}),
        ),
    ]
    main = sys.modules.get("__main__")
    namespace = getattr(main, "__dict__", None)
    if isinstance(namespace, dict):
        sites.insert(0, Site(namespace, remove=remove_key, action="del {key}"))
    return sites


# --- watching a released model -----------------------------------------------------------------


class Watch:
    """Weak references to a released model and to its tensors: what survived, without keeping it alive.

    The model object can die while its tensors live on (an optimizer, a
    submodule in a variable, the autograd graph of an output hold them), and
    then the memory is not back: the tensors are the survivors to explain.
    """

    __slots__ = ("_model", "_tensors", "footprint", "name")

    def __init__(self, name: str, model: Any, footprint: memory.Footprint) -> None:
        self.name = name
        self.footprint = footprint
        try:
            self._model: weakref.ref[Any] | None = weakref.ref(model)
        except TypeError:
            self._model = None
        self._tensors: list[weakref.ref[Any]] = []
        for tensor in memory.tensors_of(model):
            try:
                self._tensors.append(weakref.ref(tensor))
            except TypeError:  # pragma: no cover - every torch tensor takes weak references
                continue

    def alive(self) -> bool:
        if self._model is not None and self._model() is not None:
            return True
        return any(ref() is not None for ref in self._tensors)

    def survivors(self) -> list[Any]:
        """The model if it lives, else its live tensors (at most a few dozen): what holds memory."""
        model = self._model() if self._model is not None else None
        if model is not None:
            return [model]
        return [t for t in (ref() for ref in self._tensors) if t is not None][:_MAX_TENSORS]

    def what(self) -> str:
        """``the model``, or how many of its tensors survive it and their bytes."""
        if self._model is not None and self._model() is not None:
            return "the model"
        alive = [t for t in (ref() for ref in self._tensors) if t is not None]
        if not alive:
            return "nothing"
        nbytes = sum(memory.footprint(alive).bytes_by_device.values())
        return f"{len(alive)} of its tensors, {memory.format_bytes(nbytes)}"


# --- releasing with the search ----------------------------------------------------------------


@dataclass(frozen=True)
class HuntResult:
    """What :func:`hunt` found and did, per group: holders left, holders removed, why nothing was removed."""

    holders: tuple[tuple[Holder, ...], ...]
    removed: tuple[tuple[Holder, ...], ...]
    blocked: tuple[str, ...]
    seconds: float
    searches: int


def hunt(
    survivors: Sequence[Callable[[], list[Any]]],
    sites: Callable[[], list[Site]],
    *,
    force: bool,
    rounds: int = 3,
    time_limit: float = TIME_LIMIT,
) -> HuntResult:
    """Name the holders of each group's survivors and, with ``force``, remove them and check again.

    ``survivors[i]()`` returns the objects of group ``i`` still alive (empty
    once it is gone). With ``force``, up to ``rounds`` rounds remove every
    holder of releasable groups, run a gc pass and look again (a removed holder
    may uncover one the previous round could not reach).
    """
    started = time.perf_counter()
    count = len(survivors)
    holders: list[tuple[Holder, ...]] = [() for _ in range(count)]
    removed: list[list[Holder]] = [[] for _ in range(count)]
    blocked = ["" for _ in range(count)]
    searches = 0
    for round_ in range(rounds + 1 if force else 1):
        groups = [alive() for alive in survivors]
        live = [i for i in range(count) if groups[i]]
        for i in range(count):
            if not groups[i]:
                holders[i], blocked[i] = (), ""
        if not live:
            break
        search = HolderSearch(groups, sites(), time_limit=time_limit)
        searches += 1
        try:
            for i in live:
                holders[i] = search.holders(i)
                blocked[i] = "" if search.releasable(i) else _blocked_reason(holders[i])
            todo = [i for i in live if not blocked[i]] if force and round_ < rounds else []
            done = search.remove(todo) if todo else {}
        finally:
            search.close()
            del search, groups
        if not done:
            break
        for i, cut in done.items():
            removed[i] += [h for h in cut if h not in removed[i]]
        gc.collect()
    return HuntResult(
        holders=tuple(holders),
        removed=tuple(tuple(r) for r in removed),
        blocked=tuple(blocked),
        seconds=time.perf_counter() - started,
        searches=searches,
    )


def _blocked_reason(holders: Sequence[Holder]) -> str:
    stuck = [h for h in holders if not h.removable]
    if not stuck:
        return "the search could not trace every holder"
    first = stuck[0]
    return f"{first.path} holds it and force cannot remove that ({first.reason})"


def find_holders(
    target: Any, *, sites: Iterable[Site] | None = None, time_limit: float = TIME_LIMIT
) -> tuple[Holder, ...]:
    """The holders of one object, named (a convenience for the REPL and tests)."""
    group = [target]
    del target
    with HolderSearch([group], default_sites() if sites is None else sites, time_limit=time_limit) as search:
        return search.holders(0)


def describe_holders(target: Any, *, ignore: tuple[Any, ...] = ()) -> tuple[str, ...]:
    """The holders of ``target`` as text (kept for callers of the first version)."""
    group = [target]
    del target
    with HolderSearch([group], default_sites(), ignore=ignore) as search:
        return tuple(h.path for h in search.holders(0))


__all__ = [
    "Holder",
    "HolderFinder",
    "HolderKind",
    "HolderSearch",
    "HuntResult",
    "RemoveFn",
    "Site",
    "Watch",
    "clear_last_exception",
    "default_sites",
    "describe_holders",
    "find_holders",
    "hunt",
    "remove_item",
    "remove_key",
    "set_none",
]
