"""The thread-safe model manager: load by name, list, unload, clean up, and prove it.

Locking follows the cache-stampede pattern: check under the lock, mark the
name pending, run the slow loader outside the lock, store under the lock and
wake the waiters in ``finally``. So a load of one name never blocks
``list()``, ``get()`` or the load of another name, and concurrent loads of
one name call the loader once.
"""

from __future__ import annotations

import builtins
import gc
import inspect
import logging
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from nbmodels.core import memory
from nbmodels.core.devices import normalize_device, normalize_dtype
from nbmodels.core.refs import Holder, HolderFinder, Site, Watch, default_sites, hunt
from nbmodels.core.reports import Event, ModelInfo, ModelList, ReleaseReport, StillAlive
from nbmodels.core.sources import Source, resolve
from nbmodels.errors import (
    InvalidArgumentError,
    ModelConflictError,
    ModelLoadError,
    ModelNotFoundError,
    NbModelsError,
)

log = logging.getLogger("nbmodels")

Subscriber = Callable[[Event], None]
_Subscription = Subscriber | weakref.ref[Any]  # weakref.ref: a weak subscriber (ref or WeakMethod)
ReleaseHook = Callable[[Any], None]


@dataclass(frozen=True)
class _Spec:
    """What a load asks for; compared against what a loaded name was loaded with."""

    source: Source
    kwargs: dict[str, Any]
    device: str | None
    dtype: Any
    trust: bool


@dataclass
class _Entry:
    """A loaded model and its bookkeeping. Internal: callers only ever see ModelInfo."""

    name: str
    model: Any
    spec: _Spec
    footprint: memory.Footprint
    rss_delta: int | None
    cuda_delta: dict[str, int]
    load_seconds: float
    loaded_at: float
    on_release: ReleaseHook | None
    pinned: bool = False
    hits: int = 0
    last_used: float = 0.0
    _info: ModelInfo | None = field(default=None, repr=False)

    def touch(self) -> None:
        self.hits += 1
        self.last_used = time.time()
        self._info = None

    def info(self) -> ModelInfo:
        if self._info is None:
            fp = self.footprint
            self._info = ModelInfo(
                name=self.name,
                source=self.spec.source.text,
                class_name=type(self.model).__name__,
                devices=fp.devices,
                dtypes=fp.dtypes,
                parameters=fp.parameters,
                bytes_by_device=dict(fp.bytes_by_device),
                rss_delta=self.rss_delta,
                cuda_allocated_delta=dict(self.cuda_delta),
                load_seconds=self.load_seconds,
                loaded_at=self.loaded_at,
                last_used=self.last_used,
                hits=self.hits,
                pinned=self.pinned,
            )
        return self._info


@dataclass
class _Pending:
    """A load in flight: waiters block on ``done`` and then re-check the entries."""

    owner: int = field(default_factory=threading.get_ident)
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None


@dataclass(frozen=True)
class _Registration:
    source: Source
    defaults: dict[str, Any]


def _check_name(name: Any) -> str:
    if not isinstance(name, str):
        raise InvalidArgumentError(f"a model name must be a string, not {type(name).__name__}")
    if not name.strip():
        raise InvalidArgumentError("the model name is empty; give the model a name such as 'encoder'")
    if name != name.strip() or any(ch.isspace() for ch in name):
        raise InvalidArgumentError(f"model name {name!r} contains spaces; use a name without spaces")
    return name


def _place(model: Any, device: str | None, dtype: Any) -> Any:
    if device is None and dtype is None:
        return model
    move = getattr(model, "to", None)
    if move is None:
        raise InvalidArgumentError(f"a {type(model).__name__} has no .to(); load it without device or dtype")
    if device is not None:
        model = move(device)
    if dtype is not None:
        model = model.to(dtype)
    return model


class ModelManager:
    """Loads models by name, tracks what they cost, and releases them for real.

    One instance per process is the norm (:meth:`get_instance`); separate
    instances are independent and useful in tests.
    """

    _instance: ClassVar[ModelManager | None] = None
    _instance_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._release_lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}
        self._pending: dict[str, _Pending] = {}
        self._registry: dict[str, _Registration] = {}
        self._subscribers: list[_Subscription] = []
        self._used = False
        self._survivors: dict[str, list[Watch]] = {}  # released, still alive: weak references only
        self._holder_finders: list[tuple[HolderFinder, bool]] = []

    @classmethod
    def get_instance(cls) -> ModelManager:
        """The process-wide manager, created on first use."""
        if cls._instance is None:
            with cls._instance_lock:
                if cls._instance is None:
                    cls._instance = cls()
        return cls._instance

    def is_initialized(self) -> bool:
        """True once anything was registered or loaded: before that, cleanup has nothing to do."""
        return self._used

    # --- registry -------------------------------------------------------------

    def register(self, name: str, source: Any, **defaults: Any) -> None:
        """Remember how to load ``name`` so that ``load(name)`` needs nothing else."""
        name = _check_name(name)
        resolved = resolve(source)
        for key in ("device", "dtype"):
            if key in defaults:
                (normalize_device if key == "device" else normalize_dtype)(defaults[key])
        with self._lock:
            self._registry[name] = _Registration(resolved, dict(defaults))
            self._used = True
        log.info("registered %s -> %s", name, resolved.text)

    def registered(self) -> list[str]:
        """Names that can be loaded by name alone."""
        with self._lock:
            return list(self._registry)

    # --- loading --------------------------------------------------------------

    def load(
        self,
        name: str,
        source: Any = None,
        *,
        device: Any = None,
        dtype: Any = None,
        trust: bool = False,
        pin: bool = False,
        reload: bool = False,
        on_release: ReleaseHook | None = None,
        **kwargs: Any,
    ) -> Any:
        """Load ``name`` from ``source`` (or its registration) and return the model.

        Loading a loaded name returns the same object; asking for it from another
        source or with other settings is a ModelConflictError unless ``reload=True``.
        ``on_release`` is called with the model when it is released (to close handles).
        """
        name = _check_name(name)
        spec, explicit = self._spec(name, source, device, dtype, trust, kwargs)
        if source is None and not pin:
            with self._lock:
                registration = self._registry.get(name)
            pin = bool(registration is not None and registration.defaults.get("pin", False))
        waited = False
        while True:
            with self._lock:
                self._used = True
                entry = self._entries.get(name)
                pending = self._pending.get(name)
                # A reload that waited for a load of just what it asks for takes that load.
                if entry is not None and (not reload or (waited and not self._differences(entry, spec, explicit))):
                    self._check_same(entry, spec, explicit)
                    entry.touch()
                    entry.pinned = entry.pinned or pin
                    return entry.model
                if pending is None:
                    previous = self._entries.pop(name, None)
                    pending = self._pending[name] = _Pending()
                    break
                if pending.owner == threading.get_ident():
                    raise ModelLoadError(name, f"the loader of {name!r} tried to load {name!r} itself")
            pending.done.wait()
            if pending.error is not None:
                raise pending.error
            waited = True
        return self._load_as_owner(name, spec, pending, previous, pin=pin, on_release=on_release)

    def _spec(
        self, name: str, source: Any, device: Any, dtype: Any, trust: bool, kwargs: dict[str, Any]
    ) -> tuple[_Spec, set[str]]:
        """Resolve everything that can fail before the manager changes; note what was explicit."""
        explicit = {k for k, v in (("source", source), ("device", device), ("dtype", dtype)) if v is not None}
        if kwargs:
            explicit.add("kwargs")
        if source is None:
            with self._lock:
                registration = self._registry.get(name)
                loaded = self._entries.get(name)
                known = [*self._registry, *self._entries]
            if registration is None and loaded is None:
                raise ModelNotFoundError(name, known)
            if registration is not None:
                defaults = dict(registration.defaults)
                device = device if device is not None else defaults.pop("device", None)
                dtype = dtype if dtype is not None else defaults.pop("dtype", None)
                trust = trust or bool(defaults.pop("trust", False))
                for key in ("device", "dtype", "pin"):  # the manager's settings, not the factory's
                    defaults.pop(key, None)
                kwargs = {**defaults, **kwargs}
                resolved = registration.source
            else:
                assert loaded is not None
                resolved = loaded.spec.source
        else:
            resolved = resolve(source)
        spec = _Spec(resolved, dict(kwargs), normalize_device(device), normalize_dtype(dtype), trust)
        return spec, explicit

    @classmethod
    def _check_same(cls, entry: _Entry, spec: _Spec, explicit: set[str]) -> None:
        differences = cls._differences(entry, spec, explicit)
        if differences:
            raise ModelConflictError(
                f"model {entry.name!r} is already loaded; this asks for "
                + ", ".join(differences)
                + f"; pass reload=True to load it again, or unload({entry.name!r}) first"
            )

    @staticmethod
    def _differences(entry: _Entry, spec: _Spec, explicit: set[str]) -> builtins.list[str]:
        """What ``spec`` asks for explicitly that the loaded ``entry`` was not loaded with."""
        loaded = entry.spec
        differences = []
        if "source" in explicit and spec.source.key != loaded.source.key:
            differences.append(f"source {spec.source.text!r} (loaded from {loaded.source.text!r})")
        if "device" in explicit and spec.device != loaded.device:
            differences.append(f"device {spec.device!r} (loaded with {loaded.device!r})")
        if "dtype" in explicit and spec.dtype != loaded.dtype:
            differences.append(f"dtype {spec.dtype} (loaded with {loaded.dtype})")
        if "kwargs" in explicit and spec.kwargs != loaded.kwargs:
            differences.append(f"keywords {spec.kwargs} (loaded with {loaded.kwargs})")
        return differences

    def _load_as_owner(
        self,
        name: str,
        spec: _Spec,
        pending: _Pending,
        previous: _Entry | None,
        *,
        pin: bool,
        on_release: ReleaseHook | None,
    ) -> Any:
        try:
            if previous is not None:
                report = self._release([previous], pending=())
                self._emit(Event("unloaded", name=name, report=report))
            self._emit(Event("load_started", name=name))
            entry = self._run_loader(name, spec, pin=pin, on_release=on_release)
        except BaseException as exc:
            error = exc
            if not isinstance(exc, Exception):  # KeyboardInterrupt, SystemExit: waiters get an error
                error = ModelLoadError(name, f"loading {name!r} was interrupted ({type(exc).__name__})")
            with self._lock:
                del self._pending[name]
                pending.error = error
                pending.done.set()
            log.warning("loading %s failed: %s", name, error)
            self._emit(Event("load_failed", name=name, error=str(error)))
            raise
        with self._lock:
            self._entries[name] = entry
            del self._pending[name]
            pending.done.set()
            info = entry.info()
        log.info("loaded %s", info.summary())
        self._emit(Event("load_finished", name=name, info=info))
        return entry.model

    def _run_loader(self, name: str, spec: _Spec, *, pin: bool, on_release: ReleaseHook | None) -> _Entry:
        """Call the loader (no lock held) and measure what it cost."""
        # torch's own import costs ~200 MB of RSS: import it before the reading, so the
        # first load of a session does not charge that to its model.
        import torch  # noqa: F401

        rss_before = memory.process_rss()
        cuda_before = memory.cuda_allocated()
        started = time.perf_counter()
        try:
            model = spec.source.load(trust=spec.trust, kwargs=spec.kwargs)
            if model is None:
                raise ModelLoadError(
                    name, f"the loader of {name!r} ({spec.source.text}) returned None; it must return the model"
                )
            model = _place(model, spec.device, spec.dtype)
        except NbModelsError:
            raise
        except Exception as exc:
            raise ModelLoadError(
                name, f"loading {name!r} from {spec.source.text} failed: {type(exc).__name__}: {exc}"
            ) from exc
        seconds = time.perf_counter() - started
        cuda_after = memory.cuda_allocated()
        now = time.time()
        return _Entry(
            name=name,
            model=model,
            spec=spec,
            footprint=memory.footprint(model),
            rss_delta=memory.process_rss() - rss_before,
            cuda_delta={d: cuda_after[d] - cuda_before.get(d, 0) for d in cuda_after},
            load_seconds=seconds,
            loaded_at=now,
            last_used=now,
            on_release=on_release,
            pinned=pin,
        )

    # --- reading --------------------------------------------------------------

    def _loaded(self, name: str) -> _Entry:
        """The entry of a loaded name (call with the lock held); a clear error otherwise."""
        entry = self._entries.get(name)
        if entry is None:
            _check_name(name)  # only on a miss, so a hit costs nothing extra
            raise ModelNotFoundError(name, list(self._entries))
        return entry

    def get(self, name: str) -> Any:
        """The loaded model called ``name`` (counts as a use)."""
        with self._lock:
            entry = self._loaded(name)
            entry.touch()
            return entry.model

    def info(self, name: str) -> ModelInfo:
        with self._lock:
            entry = self._loaded(name)
            return entry.info()

    def list(self) -> ModelList:
        """Every loaded model, oldest first, as data with a table repr."""
        with self._lock:
            return ModelList(entry.info() for entry in self._entries.values())

    def loading(self) -> builtins.list[str]:
        """Names whose load is in flight."""
        with self._lock:
            return list(self._pending)

    def survivors(self) -> builtins.list[str]:
        """Names released earlier that something outside the manager still keeps alive.

        Each can be unloaded again (``unload(name, force=True)`` removes what holds it).
        """
        with self._lock:
            return [name for name, watches in self._survivors.items() if any(w.alive() for w in watches)]

    def __contains__(self, name: object) -> bool:
        with self._lock:
            return name in self._entries

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def __repr__(self) -> str:
        with self._lock:
            return f"<ModelManager: {len(self._entries)} loaded, {len(self._pending)} loading>"

    # --- changing placement ---------------------------------------------------

    def move(self, name: str, device: Any) -> ModelInfo:
        """Move a loaded model to ``device`` (offload to the CPU, or back to a GPU)."""
        target = normalize_device(device)
        with self._lock:
            entry = self._loaded(name)
            model = entry.model
        moved = _place(model, target, None)
        with self._lock:
            still_loaded = self._entries.get(name) is entry
            if still_loaded:
                entry.model = moved
                entry.footprint = memory.footprint(moved)
                entry.spec = _Spec(entry.spec.source, entry.spec.kwargs, target, entry.spec.dtype, entry.spec.trust)
                entry._info = None
                info = entry.info()
            known = list(self._entries)
        del model, moved
        if not still_loaded:  # unloaded (or reloaded) while it moved: its entry describes nothing now
            error = ModelNotFoundError(name, known)
            error.message += " (it was unloaded while it was being moved)"
            raise error
        memory.empty_cuda_cache()
        self._emit(Event("moved", name=name, info=info))
        return info

    # --- releasing ------------------------------------------------------------

    def unload(self, name: str, *, force: bool = False) -> ReleaseReport:
        """Release one model and report whether its memory really came back.

        If something else still holds the model, the report names each holder
        and the exact command that frees it. ``force=True`` removes those holders
        (user variables that lead to the model, IPython's output history, the
        last exception, widget callbacks), but only when that frees the model,
        and never anything else. A name released earlier that is still alive can
        be unloaded again, with or without force.
        """
        with self._lock:
            entry = self._entries.pop(name, None)
            survivors = self._survivors.pop(name, [])
            if entry is None and not survivors:
                hint = " (it is still loading)" if name in self._pending else ""
                known = list(self._entries)
        if entry is None and not survivors:
            error = ModelNotFoundError(name, known)
            error.message += hint
            raise error
        log.info("unloading %s%s", name, " (force)" if force else "")
        report = self._release([entry] if entry is not None else [], pending=(), force=force, survivors=survivors)
        self._emit(Event("unloaded", name=name, report=report))
        return report

    def cleanup(self, *, force: bool = False) -> ReleaseReport:
        """Release every model. Idempotent; one model's failure never stops the others.

        Loads still in flight finish normally and are listed as pending. Models
        released earlier but still alive are checked again; ``force=True``
        removes what holds them, as for :meth:`unload`.
        """
        with self._lock:
            entries = list(self._entries.values())
            self._entries.clear()
            survivors = [watch for watches in self._survivors.values() for watch in watches]
            self._survivors.clear()
            pending = tuple(self._pending)
        log.info("cleanup: releasing %d model(s)%s", len(entries), f", {len(pending)} still loading" if pending else "")
        report = self._release(entries, pending=pending, force=force, survivors=survivors)
        for line in report.lines():
            log.info("cleanup: %s", line)
        self._emit(Event("cleanup", report=report))
        return report

    def add_holder_finder(self, finder: HolderFinder) -> Callable[[], None]:
        """Teach the holder search more places that can hold a model; returns a function that undoes it.

        ``finder()`` returns :class:`nbmodels.core.refs.Site` objects (a namespace,
        an output history, a callback list: what its entries are called and how
        force removes one). It is called only when a released model survived.
        A finder whose ``magics`` attribute is true says the IPython magics are
        there, so reports suggest ``%unload_model X --force``.
        """
        return self._add_to(self._holder_finders, (finder, bool(getattr(finder, "magics", False))))

    def _sites(self) -> builtins.list[Site]:
        """Where the holder search may name (and force may remove) holders, as of now."""
        sites = default_sites()
        with self._lock:
            finders = [finder for finder, _ in self._holder_finders]
            live = list(self._entries.values())
        for entry in live:
            label = f"the loaded model {entry.name!r}".replace("{", "{{").replace("}", "}}")
            reason = f"the loaded model {entry.name!r} shares it; unload that one too"
            sites.append(Site(entry, label=label, kind="model", keys=frozenset({"model"}), reason=reason))
        for finder in finders:
            try:
                sites.extend(finder())
            except Exception:
                log.exception("a holder finder failed; the search goes on without it")
        return sites

    def _fix_command(self, name: str) -> str:
        with self._lock:
            magics = any(flag for _, flag in self._holder_finders)
        if magics:
            return f"%unload_model {name} --force"
        owner = "nbmodels.get_manager()" if self is ModelManager._instance else "manager"
        return f"{owner}.unload({name!r}, force=True)"

    def _release(
        self,
        entries: builtins.list[_Entry],
        *,
        pending: tuple[str, ...],
        force: bool = False,
        survivors: builtins.list[Watch] | None = None,
    ) -> ReleaseReport:
        """Drop our references, then check with weak references what really went away.

        When every model died on the drop (the common case) there is no gc pass
        and no holder search. Otherwise a gc pass clears reference cycles, and
        whatever survives that is held from outside: the holder search names
        each holder and, with ``force``, removes them and checks again.
        ``survivors`` are models released earlier that were still alive then.
        """
        with self._release_lock:
            started = time.perf_counter()
            rss_before = memory.process_rss()
            cuda_before = memory.cuda_allocated()
            errors: dict[str, str] = {}
            watches: builtins.list[Watch] = list(survivors or ())
            rechecked = tuple(watch.name for watch in watches)
            for entry in entries:
                try:
                    watches.append(Watch(entry.name, entry.model, entry.footprint))
                    if entry.on_release is not None:
                        entry.on_release(entry.model)
                except Exception as exc:
                    errors[entry.name] = f"{type(exc).__name__}: {exc}"
                    log.warning("releasing %s: %s", entry.name, errors[entry.name])
                finally:
                    entry.model = None
                    entry._info = None
            entries = []  # drop the last strong references to the entries themselves
            gc_collected = False
            if any(watch.alive() for watch in watches):
                gc.collect()
                gc_collected = True
            alive = [watch for watch in watches if watch.alive()]
            found = hunt([watch.survivors for watch in alive], self._sites, force=force) if alive else None
            cuda_emptied = memory.empty_cuda_cache()
            freed: dict[str, int] = {}
            still_alive: builtins.list[StillAlive] = []
            removed: dict[str, tuple[Holder, ...]] = {}
            kept: builtins.list[Watch] = []
            for watch in watches:
                index = alive.index(watch) if watch in alive else -1
                if found is not None and index >= 0 and found.removed[index]:
                    removed[watch.name] = removed.get(watch.name, ()) + found.removed[index]
                if watch.alive():
                    kept.append(watch)
                    holders = found.holders[index] if found is not None and index >= 0 else ()
                    blocked = found.blocked[index] if found is not None and index >= 0 else ""
                    fix = self._fix_command(watch.name) if holders and not blocked and not force else ""
                    still_alive.append(StillAlive(watch.name, holders, fix=fix, blocked=blocked, what=watch.what()))
                    continue
                for device, nbytes in watch.footprint.bytes_by_device.items():
                    freed[device] = freed.get(device, 0) + nbytes
            if kept:
                with self._lock:
                    for watch in kept:
                        self._survivors.setdefault(watch.name, []).append(watch)
            if freed:
                memory.trim_heap()
            report = ReleaseReport(
                released=tuple(watch.name for watch in watches[len(rechecked) :]),
                freed_bytes=freed,
                rss_before=rss_before,
                rss_after=memory.process_rss(),
                cuda_allocated_before=cuda_before,
                cuda_allocated_after=memory.cuda_allocated(),
                still_alive=tuple(still_alive),
                errors=errors,
                seconds=time.perf_counter() - started,
                gc_collected=gc_collected,
                cuda_cache_emptied=cuda_emptied,
                pending=pending,
                forced=force,
                removed=removed,
                rechecked=rechecked,
                hunt_seconds=found.seconds if found is not None else 0.0,
            )
        for survivor in report.still_alive:
            log.warning("%s", survivor.describe())
        return report

    # --- events ---------------------------------------------------------------

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

    def _add_to(self, registry: builtins.list[Any], item: Any) -> Callable[[], None]:
        """Append ``item`` to ``registry`` under the lock; return the function that takes it out again.

        Removal is by identity: equal items added twice (one callback subscribed
        twice) are taken out one each.
        """
        with self._lock:
            registry.append(item)

        def remove() -> None:
            with self._lock:
                _remove_identical(registry, item)

        return remove

    def _emit(self, event: Event) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        dead: builtins.list[_Subscription] = []
        for entry in subscribers:
            callback = entry() if isinstance(entry, weakref.ref) else entry
            if callback is None:  # a weak subscriber that was dropped without unsubscribing
                dead.append(entry)
                continue
            try:
                callback(event)
            except Exception:
                log.exception("an nbmodels event subscriber failed on %s; the manager carries on", event.kind)
            del callback  # hold a weak subscriber no longer than its call
        if dead:
            with self._lock:
                for entry in dead:
                    _remove_identical(self._subscribers, entry)


def _remove_identical(registry: builtins.list[Any], item: Any) -> None:
    for index, present in enumerate(registry):
        if present is item:
            del registry[index]
            return


def get_manager() -> ModelManager:
    """The process-wide ModelManager (same as ``ModelManager.get_instance()``)."""
    return ModelManager.get_instance()
