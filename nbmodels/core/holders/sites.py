"""Sites: the places whose entries a user can name and force may remove.

A site is a container whose entries have names: the notebook's variables,
``sys.last_*``, IPython's output history, a widget's callback list. The walk
starts at their entries and never goes above them: what holds the site does
not matter, since removing the entry cuts the chain there. The core knows the
sites of a plain Python process (:func:`default_sites`); the IPython layer adds
its own through a holder finder (``ModelManager.add_holder_finder``).

Removal functions are module-level (a closure would itself hold what it cuts)
and act only while the entry still holds the same object.
"""

from __future__ import annotations

import builtins
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from nbmodels.core.holders.records import HolderKind

RemoveFn = Callable[["Site", Any, Any], None]

LAST_EXCEPTION = ("last_type", "last_value", "last_traceback", "last_exc")


@dataclass(frozen=True, slots=True, eq=False)
class Site:
    """A place whose entries can be named (and maybe removed).

    ``container`` is a dict (entries are keys), a list (indices) or any object
    (attributes, restricted by ``keys``). ``label`` names an entry in words,
    ``expr`` is the Python expression for it in the notebook (empty when there
    is none) and ``command`` the Python that removes it: format strings with
    ``{key}`` (``{key!r}`` for its repr) and, in ``command``, ``{value}``: the
    notebook's name of the entry's value (no command when it has none).
    ``special`` overrides label and kind per key. ``remove(site, key, value)``
    is what force runs; None means force never changes this site (``reason``
    says why). A ``unit`` site's entries go whole (an output, a callback, the
    last exception): cutting one takes nothing the user wrote, so it never
    needs naming, however much the entry holds; ``unit_keys`` marks single
    entries so (``_4``, ``_`` among the notebook's variables). ``skip`` are
    keys that are not the user's (IPython's own ``In``, ``exit``). ``keep`` are
    keys force must leave, each with the reason (a name the running cell uses).
    """

    container: Any
    label: str = "{key}"
    kind: HolderKind = "variable"
    remove: RemoveFn | None = None
    command: str = ""
    expr: str = "{key}"
    reason: str = ""
    keys: frozenset[Any] | None = None
    special: Mapping[Any, tuple[str, HolderKind]] | None = None
    unit: bool = False
    skip: frozenset[Any] = frozenset()
    unit_keys: frozenset[Any] = frozenset()
    keep: Mapping[Any, str] | None = None

    def is_unit(self, key: Any) -> bool:
        """True when the entry under ``key`` goes whole (see ``unit``); ``unit_keys`` marks single entries."""
        return self.unit or key in self.unit_keys

    def name(self, key: Any) -> tuple[str, HolderKind]:
        """How the entry under ``key`` reads, and its kind."""
        if self.special is not None and key in self.special:
            return self.special[key]
        return self.label.format(key=key), self.kind

    def entries(self) -> list[tuple[Any, Any]]:
        """``(key, value)`` of every entry, as of now (a snapshot: other threads may change the site)."""
        container = self.container
        if isinstance(container, dict):
            try:
                items = list(container.items())
            except RuntimeError:  # changed size while we copied it
                items = list(dict(container).items())
            return [(k, v) for k, v in items if (self.keys is None or k in self.keys) and k not in self.skip]
        if isinstance(container, list | tuple):
            return list(enumerate(container))
        found = []
        for key in sorted(self.keys or (), key=str):
            try:
                found.append((key, getattr(container, key)))
            except AttributeError:
                continue
        return found

    def holder_object(self) -> Any:
        """The object that really references the entries: the container, or an object's ``__dict__``."""
        container = self.container
        if isinstance(container, dict | list | tuple):
            return container
        try:
            return object.__getattribute__(container, "__dict__")
        except AttributeError:
            return container


class Boundary(NamedTuple):
    """An object the walk never enters (the shell, the manager): what it holds is not the user's to change."""

    obj: Any


class Gap(NamedTuple):
    """A place the search could not look (a holder finder failed): force refuses, and the report says why."""

    reason: str


HolderFinder = Callable[[], Iterable[Site | Boundary]]
"""Names more sites (and boundaries) for a search; called only when a released model survived.

A finder may also have ``fix_command(name, allow) -> str``: the command that
forces the release in its front end (``%unload_model name --force``).
"""


# --- removal functions ------------------------------------------------------------------------


def remove_key(site: Site, key: Any, value: Any) -> None:
    """``del container[key]`` if it still is ``value``."""
    container = site.container
    if key in container and container[key] is value:
        del container[key]


def remove_item(site: Site, key: Any, value: Any) -> None:
    """Remove ``value`` (by identity) from a list: what ``button.on_click(f, remove=True)`` does."""
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
    """Forget the last exception the way a fresh interpreter has none: delete every ``sys.last_*``.

    Deleting (not setting None) is what IPython expects: ``%debug`` then says
    there is nothing to debug instead of failing on a None traceback.
    """
    for name in LAST_EXCEPTION:
        if hasattr(sys, name):
            delattr(sys, name)


def default_sites() -> list[Site]:
    """What the core knows without IPython: a script's variables, ``sys.last_*``, the prompt's ``_``."""
    present = [name for name in LAST_EXCEPTION if hasattr(sys, name)]
    sites = [
        Site(
            sys,
            label="sys.{key}",
            kind="exception",
            remove=clear_last_exception,
            command="import sys; " + "; ".join(f"del sys.{name}" for name in present),
            expr="sys.{key}",
            keys=frozenset(LAST_EXCEPTION),
            unit=True,
        ),
        Site(
            builtins,
            label="_ (the last result the Python prompt showed)",
            kind="output",
            remove=_remove_builtins_underscore,
            command="import builtins; del builtins._",
            expr="",
            keys=frozenset({"_"}),
            unit=True,
        ),
    ]
    main = sys.modules.get("__main__")
    namespace = getattr(main, "__dict__", None)
    if isinstance(namespace, dict):
        sites.insert(0, Site(namespace, remove=remove_key, command="del {key}", skip=frozenset({"__builtins__"})))
    return sites


def _remove_builtins_underscore(site: Site, key: Any, value: Any) -> None:
    if getattr(builtins, "_", None) is value:
        delattr(builtins, "_")


__all__ = [
    "LAST_EXCEPTION",
    "Boundary",
    "Gap",
    "HolderFinder",
    "RemoveFn",
    "Site",
    "clear_last_exception",
    "default_sites",
    "remove_item",
    "remove_key",
    "set_none",
]
