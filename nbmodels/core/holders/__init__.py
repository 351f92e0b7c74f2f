"""Who still holds a released model, and the smallest removal that frees it (IPython-free).

``del model; gc.collect()`` frees nothing while something else holds the
model. This package finds those holders and plans what force removes, one job
per module:

- :mod:`.records`: the frozen results: :class:`Action`, :class:`Blocker`,
  :class:`RemovalPlan` (what force would do, shown before it does it).
- :mod:`.sites`: the places whose entries can be named and removed (the
  notebook's variables, ``sys.last_*``, and what the IPython layer adds).
- :mod:`.watch`: weak references taken at release: the model, its tensors and
  its storages (liveness is about storages, not tensor objects).
- :mod:`.parts`: which objects are part of the model (a submodule, a tensor on
  its storage, a tensor whose autograd graph holds its weights, an optimizer).
- :mod:`.graph`: the walk from the sites to the model's parts, with typed edges
  that keep key objects (never their text).
- :mod:`.census`: reference counts checked against what the walk saw, so a
  holder outside its reach (another module's global, a running function, C
  code) is named and never ignored.
- :mod:`.plan`: the cut nearest each part, and what blocks or widens it.
- :mod:`.render`: text, once, for display: paths and runnable commands.
- :mod:`.execute`: running exactly the plan's actions.
- :mod:`.search`: the whole search for a release.

Only :mod:`.records`, :mod:`.sites` and :mod:`.watch` are imported on the
common path; the rest loads when a released model survives.
"""

from __future__ import annotations

from nbmodels.core.holders.records import Action, Blocker, Holder, HolderKind, RemovalPlan
from nbmodels.core.holders.sites import (
    Boundary,
    Gap,
    HolderFinder,
    RemoveFn,
    Site,
    clear_last_exception,
    default_sites,
    remove_item,
    remove_key,
    set_none,
)
from nbmodels.core.holders.watch import Watch

__all__ = [
    "Action",
    "Blocker",
    "Boundary",
    "Gap",
    "Holder",
    "HolderFinder",
    "HolderKind",
    "RemovalPlan",
    "RemoveFn",
    "Site",
    "Watch",
    "clear_last_exception",
    "default_sites",
    "remove_item",
    "remove_key",
    "set_none",
]
