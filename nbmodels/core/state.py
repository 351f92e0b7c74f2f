"""What every part of the manager shares: its records and locks, its events, and the release they all use.

:class:`ManagerState` is the base of :class:`~nbmodels.core.manager.ModelManager`;
the memory policy (:mod:`nbmodels.core.budgeting`) and the use clock
(:mod:`nbmodels.core.keeping`) build on it. Locks: ``_lock`` guards the
records and is never held across a loader, a release or a callback;
``_release_lock`` runs one release (and holder search) at a time;
``_room_lock`` makes one decision about room at a time, and is never taken
while ``_lock`` is held.
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
import traceback
import weakref
from collections.abc import Callable, Sequence
from typing import Any, Literal

from nbmodels.core.entries import Entry, Pending, Registration, check_name
from nbmodels.core.holders.sites import Boundary, Gap, HolderFinder, Site, default_sites
from nbmodels.core.holders.watch import Watch
from nbmodels.core.policy import budget as budgets
from nbmodels.core.release import Released, Request, dry_run, release
from nbmodels.core.reports import Event, ReleaseReport
from nbmodels.errors import ModelNotFoundError

log = logging.getLogger("nbmodels")

EvictMode = Literal["unload", "offload"]
Subscriber = Callable[[Event], None]
_Subscription = Subscriber | weakref.ref[Any]  # weakref.ref: a weak subscriber (ref or WeakMethod)


class ManagerState:
    """The manager's records and locks, its subscribers, and the release every unload and eviction runs."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        """``clock`` is the time of uses and keep-alive deadlines (tests pass a fake one)."""
        self._lock = threading.RLock()
        self._release_lock = threading.Lock()
        self._entries: dict[str, Entry] = {}
        self._pending: dict[str, Pending] = {}
        self._registry: dict[str, Registration] = {}
        self._subscribers: list[_Subscription] = []
        self._used = False
        self._survivors: dict[str, list[Watch]] = {}  # released, still alive: weak references only
        self._deaths: dict[str, Any] = {}  # name -> how its worker ended by itself (until it is loaded again)
        self.ray_address: str | None = None  # a Ray cluster for runner="ray" (else RAY_ADDRESS, else a local Ray)
        self._holder_finders: list[HolderFinder] = []
        # The memory policy (see nbmodels.core.policy): budgets, keep-alive, eviction.
        self._clock = clock
        self._max_memory: dict[str, budgets.Budget] = {}
        self._max_models = 0
        self._keep_alive: float | None = None  # for loads that give none: forever
        self._evict: EvictMode = "unload"
        self._reserved: dict[str, dict[str, int]] = {}  # loads in flight under a budget: their estimated bytes
        self._room_lock = threading.RLock()  # one decision about room at a time; never held with _lock first
        self._scope_depth = 0

    def _loaded(self, name: str) -> Entry:
        """The entry of a loaded name (call with the lock held); a clear error otherwise."""
        entry = self._entries.get(name)
        if entry is None:
            check_name(name)  # only on a miss, so a hit costs nothing extra
            raise ModelNotFoundError(name, list(self._entries))
        return entry

    def add_holder_finder(self, finder: HolderFinder) -> Callable[[], None]:
        """Teach the holder search more places that can hold a model; returns a function that undoes it.

        ``finder()`` returns :class:`nbmodels.core.holders.Site` objects (a
        namespace, an output history, a callback list: how its entries are
        called and how force removes one) and :class:`~nbmodels.core.holders.Boundary`
        objects the search must not enter. It is called only when a released
        model survived. A finder with ``fix_command(name, allow)`` supplies the
        command its front end uses to force a release (``%unload_model X --force``).
        """
        return self._add_to(self._holder_finders, finder)

    def _places(self) -> list[Site | Boundary | Gap]:
        """Where the holder search starts (and what it never enters), as of now."""
        places: list[Site | Boundary | Gap] = [*default_sites(), Boundary(self)]
        with self._lock:
            finders = list(self._holder_finders)
        for finder in finders:
            try:
                places.extend(finder())
            except Exception as exc:
                # the text of the traceback, not the traceback: its frames would keep the search's locals alive
                log.error("a holder finder failed; the search goes on without it\n%s", traceback.format_exc())
                reason = f"a holder finder failed ({type(exc).__name__}: {exc}), so some places were not searched"
                places.append(Gap(reason))
                del exc
        return places

    def _loaded_models(self) -> list[tuple[str, Any]]:
        """Every loaded model by name: the search never cuts them, and they block a release they share."""
        with self._lock:
            return [(entry.name, entry.model) for entry in self._entries.values()]

    def _fix_command(self, name: str, allow: Sequence[str]) -> str:
        """The command that forces the release of ``name``: the front end's own, or the API call."""
        with self._lock:
            finders = list(self._holder_finders)
        for finder in finders:
            command = getattr(finder, "fix_command", None)
            if callable(command):
                return str(command(name, tuple(allow)))
        owner = "nbmodels.get_manager()" if self is getattr(type(self), "_instance", None) else "manager"
        extra = f", allow={tuple(allow)!r}" if allow else ""
        return f"{owner}.unload({name!r}, force=True{extra})"

    def _release(
        self,
        taken: list[Released],
        *,
        pending: tuple[str, ...],
        request: Request,
        survivors: list[Watch] | None = None,
    ) -> ReleaseReport:
        """Release ``taken`` (see :mod:`nbmodels.core.release`) and remember what stayed alive.

        Every model is recorded as a survivor before the slow part (the search,
        force) and dropped from the record only once it is known dead: an
        interrupt anywhere in between leaves it findable by a later ``--force``.
        """
        recorded: list[Watch] = list(survivors or [])
        with self._release_lock:
            with self._lock:
                for watch in recorded:
                    self._survivors.setdefault(watch.name, []).append(watch)

            def record(watch: Watch) -> None:
                with self._lock:
                    recorded.append(watch)
                    self._survivors.setdefault(watch.name, []).append(watch)

            report, alive = release(
                taken,
                survivors or [],
                request=request,
                places=self._places,
                loaded=self._loaded_models,
                fix=self._fix_command,
                pending=pending,
                record=record,
            )
            with self._lock:
                keep = {id(watch) for watch in alive}
                for watch in recorded:
                    if id(watch) not in keep:
                        watches = self._survivors.get(watch.name, [])
                        remove_identical(watches, watch)
                        if not watches:
                            self._survivors.pop(watch.name, None)
        return report

    def _dry_run(self, names: list[str], request: Request) -> ReleaseReport:
        """What unloading ``names`` (with force) would do; changes nothing."""
        with self._lock:
            entries = [self._entries[n] for n in names if n in self._entries]
            survivors = [w for n in names for w in self._survivors.get(n, [])]
            missing = [n for n in names if n not in self._entries and n not in self._survivors]
            known = list(self._entries)
        if missing:
            raise ModelNotFoundError(missing[0], known)
        with self._release_lock:
            return dry_run(
                entries,
                survivors,
                places=self._places,
                loaded=lambda: [pair for pair in self._loaded_models() if pair[0] not in names],
                fix=self._fix_command,
                allow=request.allow,
            )

    def subscribe(self, callback: Subscriber, *, weak: bool = False) -> Callable[[], None]:
        """Call ``callback(event)`` on every change; returns a function that unsubscribes.

        ``weak=True`` holds the callback through a weak reference (a bound method
        through ``WeakMethod``), so the manager never keeps a subscriber alive: one
        dropped without unsubscribing (a forgotten panel) stops receiving events and
        is forgotten at the next event. A weak callback must be kept alive by its
        owner: a lambda passed with ``weak=True`` dies at once.
        """
        entry: _Subscription = callback
        if weak:
            entry = weakref.WeakMethod(callback) if inspect.ismethod(callback) else weakref.ref(callback)
        return self._add_to(self._subscribers, entry)

    def _add_to(self, registry: list[Any], item: Any) -> Callable[[], None]:
        """Append ``item`` to ``registry`` under the lock; return the function that takes it out again.

        Removal is by identity: equal items added twice (one callback subscribed
        twice) are taken out one each.
        """
        with self._lock:
            registry.append(item)

        def remove() -> None:
            with self._lock:
                remove_identical(registry, item)

        return remove

    def _emit(self, event: Event) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        dead: list[_Subscription] = []
        for entry in subscribers:
            callback = entry() if isinstance(entry, weakref.ref) else entry
            if callback is None:  # a weak subscriber that was dropped without unsubscribing
                dead.append(entry)
                continue
            try:
                callback(event)
            except Exception:
                log.error(
                    "an nbmodels event subscriber failed on %s; the manager carries on\n%s",
                    event.kind,
                    traceback.format_exc(),
                )
            del callback  # hold a weak subscriber no longer than its call
        if dead:
            with self._lock:
                for entry in dead:
                    remove_identical(self._subscribers, entry)


def remove_identical(registry: list[Any], item: Any) -> None:
    for index, present in enumerate(registry):
        if present is item:
            del registry[index]
            return
