"""The thread-safe model manager: load by name, list, unload, clean up, and prove it.

Locking follows the cache-stampede pattern: check under the lock, mark the
name pending, run the slow loader outside the lock, store under the lock and
wake the waiters in ``finally``. So a load of one name never blocks
``list()``, ``get()`` or the load of another name, and concurrent loads of
one name call the loader once.
"""

from __future__ import annotations

import builtins
import dataclasses
import inspect
import logging
import threading
import time
import traceback
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from nbmodels.core import isolation, memory
from nbmodels.core.devices import normalize_device, normalize_dtype, place
from nbmodels.core.freshness import Measurement
from nbmodels.core.holders.sites import Boundary, HolderFinder, Site, default_sites
from nbmodels.core.holders.watch import Watch
from nbmodels.core.release import Released, Request, dry_run, release
from nbmodels.core.reports import Event, ModelInfo, ModelList, ReleaseReport
from nbmodels.core.sources import Source, keywords_text, resolve
from nbmodels.errors import (
    InvalidArgumentError,
    ModelConflictError,
    ModelLoadError,
    ModelNotFoundError,
    NbModelsError,
)

log = logging.getLogger("nbmodels")

# Keywords of load() and register() that are the manager's settings, never the loader's.
_SETTINGS = ("device", "dtype", "pin", "trust", "runner")

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
    runner: str = isolation.KERNEL  # where the model runs: in the kernel, a worker process, a Ray actor


@dataclass
class _Entry:
    """A loaded model and its bookkeeping. Internal: callers only ever see ModelInfo."""

    name: str
    model: Any
    spec: _Spec
    measurement: Measurement | isolation.RemoteMeasurement
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

    @property
    def footprint(self) -> memory.Footprint:
        """What the model holds now: measured again when it changed since (see nbmodels.core.freshness)."""
        self.refresh()
        return self.measurement.footprint

    def refresh(self, *, exact: bool = False) -> None:
        """Measure the model again if it changed (always, with ``exact``); keep the old figures if that fails."""
        model = self.model
        if model is None or (not exact and self.measurement.is_current(model)):
            return
        try:
            self.measurement = _measure(model, again=True)
        except Exception:  # changed by another thread during the walk: the next look measures again
            log.debug("measuring %s again failed; keeping its earlier figures", self.name, exc_info=True)
            return
        self._info = None

    def info(self, *, exact: bool = False) -> ModelInfo:
        self.refresh(exact=exact)
        if self._info is None:
            fp = self.measurement.footprint
            remote = isolation.is_remote(self.model)
            self._info = ModelInfo(
                name=self.name,
                source=self.spec.source.text,
                class_name=self.model.class_name if remote else type(self.model).__name__,
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
                runner=self.spec.runner,
                pid=self.model.pid if remote else None,
                node=self.model.node if remote else None,
            )
        return self._info


@dataclass
class _Pending:
    """A load in flight: waiters block on ``done`` and then re-check the entries."""

    spec: _Spec
    owner: int = field(default_factory=threading.get_ident)
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None


@dataclass(frozen=True)
class _Registration:
    source: Source
    defaults: dict[str, Any]


def check_name(name: Any) -> str:
    """``name`` if it can name a model; InvalidArgumentError (empty, spaces, not a string) otherwise."""
    if not isinstance(name, str):
        raise InvalidArgumentError(f"a model name must be a string, not {type(name).__name__}")
    if not name.strip():
        raise InvalidArgumentError("the model name is empty; give the model a name such as 'encoder'")
    if name != name.strip() or any(ch.isspace() for ch in name):
        raise InvalidArgumentError(f"model name {name!r} contains spaces; use a name without spaces")
    return name


def _request(force: bool, allow: Sequence[str], dry_run: bool) -> Request:
    """Check the release options before anything changes."""
    if isinstance(allow, str):
        allow = (allow,)
    allow = tuple(allow)
    if any(not isinstance(name, str) or not name.strip() for name in allow):
        raise InvalidArgumentError(
            f"allow= takes the holders to remove, as shown in the report (e.g. 'pair'): {allow!r}"
        )
    if allow and not (force or dry_run):
        raise InvalidArgumentError("allow= names holders that force may remove; pass force=True (or dry_run=True)")
    return Request(force=bool(force), allow=allow, dry_run=bool(dry_run))


def _released(entry: _Entry) -> Released:
    """Hand an entry's model over to the release, leaving the entry without it."""
    item = Released(entry.name, entry.model, entry.on_release)
    entry.model = None
    entry._info = None
    return item


def _floating(dtypes: tuple[str, ...]) -> builtins.list[str]:
    return [d for d in dtypes if d.startswith(("float", "bfloat"))]


def _measure(model: Any, *, again: bool = False) -> Measurement | isolation.RemoteMeasurement:
    """The model's footprint: walked here, or (for a model in a worker) measured there."""
    if isolation.is_remote(model):
        if again:
            isolation.measure_again(model)
        return isolation.RemoteMeasurement(model)
    return Measurement(model)


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
        self._deaths: dict[str, Any] = {}  # name -> how its worker ended by itself (until it is loaded again)
        self.ray_address: str | None = None  # a Ray cluster for runner="ray" (else RAY_ADDRESS, else a local Ray)
        self._holder_finders: list[HolderFinder] = []

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
        name = check_name(name)
        resolved = resolve(source)
        for key in ("device", "dtype"):
            if key in defaults:
                (normalize_device if key == "device" else normalize_dtype)(defaults[key])
        if resolved.check_keywords is not None:
            resolved.check_keywords({k: v for k, v in defaults.items() if k not in _SETTINGS})
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
        runner: str | None = None,
        on_release: ReleaseHook | None = None,
        **kwargs: Any,
    ) -> Any:
        """Load ``name`` from ``source`` (or its registration) and return the model.

        ``runner`` is where it runs: ``"kernel"`` (this process, the default),
        ``"process"`` (a worker process nbmodels starts: unload ends it, so all of
        its memory comes back, the CUDA context included, and a crash stays there)
        or ``"ray"`` (a Ray actor). An isolated model is returned as a proxy:
        calls and methods run in the worker.

        Loading a loaded name returns the same object; so does asking for what it
        has now (its device, its dtype, the source it came from: a factory is known
        by its module and name, so a notebook cell that defines it can run again).
        Asking for something else is a ModelConflictError unless ``reload=True``.
        Without a source, a name whose load is in flight waits for that load.
        Everything that can be checked (source, file, keywords, device, dtype) is
        checked before a reload releases the old model.
        ``on_release`` is called with the model when it is released (to close handles).
        """
        name = check_name(name)
        spec, explicit = self._spec(name, source, device, dtype, trust, kwargs, runner)
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
                    pending = self._pending[name] = _Pending(spec)
                    break
                if pending.owner == threading.get_ident():
                    raise ModelLoadError(name, f"the loader of {name!r} tried to load {name!r} itself")
            pending.done.wait()
            if pending.error is not None:
                raise pending.error
            waited = True
        return self._load_as_owner(name, spec, pending, previous, pin=pin, on_release=on_release)

    def _spec(
        self,
        name: str,
        source: Any,
        device: Any,
        dtype: Any,
        trust: bool,
        kwargs: dict[str, Any],
        runner: Any = None,
    ) -> tuple[_Spec, set[str]]:
        """Resolve everything that can fail before the manager changes; note what was explicit."""
        explicit = {
            k
            for k, v in (("source", source), ("device", device), ("dtype", dtype), ("runner", runner))
            if v is not None
        }
        if kwargs:
            explicit.add("kwargs")
        if source is None:
            with self._lock:
                registration = self._registry.get(name)
                loaded = self._entries.get(name)
                in_flight = self._pending.get(name)
                known = [*self._registry, *self._entries, *self._pending]
            if registration is not None:
                defaults = dict(registration.defaults)
                device = device if device is not None else defaults.pop("device", None)
                dtype = dtype if dtype is not None else defaults.pop("dtype", None)
                trust = trust or bool(defaults.pop("trust", False))
                runner = runner if runner is not None else defaults.pop("runner", None)
                for key in _SETTINGS:  # the manager's settings, not the factory's
                    defaults.pop(key, None)
                kwargs = {**defaults, **kwargs}
                resolved = registration.source
            elif loaded is not None:
                resolved = loaded.spec.source
                runner = runner if runner is not None else loaded.spec.runner
            elif in_flight is not None:  # wait for that load (load() does), then it is a hit
                resolved = in_flight.spec.source
            else:
                raise ModelNotFoundError(name, known)
        else:
            resolved = resolve(source)
        where = isolation.check_runner(runner)
        if resolved.check_keywords is not None:
            resolved.check_keywords(kwargs)
        if where != isolation.KERNEL:  # a worker must be able to rebuild it: say so now, not after a reload
            isolation.check_portable(name, resolved.portable, kwargs=kwargs, trust=trust)
        spec = _Spec(resolved, dict(kwargs), normalize_device(device), normalize_dtype(dtype), trust, where)
        return spec, explicit

    @classmethod
    def _check_same(cls, entry: _Entry, spec: _Spec, explicit: set[str]) -> None:
        differences = cls._differences(entry, spec, explicit)
        if differences:
            raise ModelConflictError(
                f"model {entry.name!r} is already loaded and is not what this asks for: {'; '.join(differences)}; "
                f"pass reload=True to load it again, or unload({entry.name!r}) first",
                name=entry.name,
                differences=differences,
            )

    @staticmethod
    def _differences(entry: _Entry, spec: _Spec, explicit: set[str]) -> builtins.list[str]:
        """What ``spec`` asks for explicitly that the loaded model does not have now, each said both ways."""
        loaded = entry.spec
        differences = []
        if "runner" in explicit and spec.runner != loaded.runner:
            differences.append(f"it runs in {_runs_in(loaded.runner)}, this asks for {_runs_in(spec.runner)}")
        if "source" in explicit and spec.source.key != loaded.source.key:
            if spec.source.text == loaded.source.text:
                differences.append(f"it came from another object that is also called {loaded.source.text}")
            else:
                differences.append(f"it came from {loaded.source.text}, this asks for {spec.source.text}")
        if {"device", "dtype"} & explicit:
            footprint = entry.footprint  # as it is now: it may have moved or changed dtype since it loaded
        if "device" in explicit and spec.device is not None:
            devices = list(footprint.devices)
            if devices and devices != [spec.device]:
                differences.append(f"it is on {', '.join(devices)}, this asks for {spec.device}")
            elif not devices and loaded.device not in (None, spec.device):
                differences.append(f"it was loaded for {loaded.device}, this asks for {spec.device}")
        if "dtype" in explicit and spec.dtype is not None:
            asked = str(spec.dtype).removeprefix("torch.")
            has = _floating(footprint.dtypes)
            same = has == [asked] or (asked in has and loaded.dtype == spec.dtype)  # fp32 layers kept in a bf16 model
            if has and not same:
                differences.append(f"it is {', '.join(has)}, this asks for {asked}")
            elif not has and loaded.dtype not in (None, spec.dtype):
                differences.append(f"it was loaded as {loaded.dtype}, this asks for {asked}")
        if "kwargs" in explicit and spec.kwargs != loaded.kwargs:
            differences.append(
                f"it was loaded with {keywords_text(loaded.kwargs)}, this asks for {keywords_text(spec.kwargs)}"
            )
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
                report = self._release([_released(previous)], pending=(), request=Request())
                self._emit(Event("unloaded", name=name, report=report))
            self._emit(Event("load_started", name=name))
            entry = self._run_loader(name, spec, pin=pin, on_release=on_release)
        except BaseException as exc:
            error = exc
            if not isinstance(exc, Exception):  # KeyboardInterrupt, SystemExit: waiters get an error
                error = ModelLoadError(
                    name, f"loading {name!r} from {spec.source.text} was interrupted ({type(exc).__name__})"
                )
            if previous is not None and isinstance(error, NbModelsError):
                error.add_context(after=f"; the reload released the previous {name!r}, so it is no longer loaded")
            with self._lock:
                del self._pending[name]
                pending.error = error
                pending.done.set()
            log.warning("loading %s failed: %s", name, error, exc_info=error)
            self._emit(Event("load_failed", name=name, error=str(error)))
            raise
        with self._lock:
            self._entries[name] = entry
            self._deaths.pop(name, None)
            del self._pending[name]
            pending.done.set()
            info = entry.info()
        log.info("loaded %s", info.summary())
        self._emit(Event("load_finished", name=name, info=info))
        return entry.model

    def _run_loader(self, name: str, spec: _Spec, *, pin: bool, on_release: ReleaseHook | None) -> _Entry:
        """Call the loader (no lock held) and measure what it cost."""
        # torch's own import costs ~200 MB of RSS, transformers' ~150 MB: import them before
        # the reading, so the first load of a session does not charge that to its model.
        import torch  # noqa: F401

        if spec.source.prepare is not None:
            try:
                spec.source.prepare()
            except Exception:  # the loader meets the same problem and reports it as a failed load
                log.debug("preparing to load %s failed", name, exc_info=True)
        if spec.runner != isolation.KERNEL:
            return self._start_remote(name, spec, pin=pin, on_release=on_release)
        rss_before = memory.process_rss()
        cuda_before = memory.cuda_allocated()
        started = time.perf_counter()
        try:
            model = spec.source.load(trust=spec.trust, kwargs=spec.kwargs)
            if model is not None:
                model = place(model, spec.device, spec.dtype)
        except NbModelsError as exc:  # raised inside the loader (often by nbmodels): say which load it was
            exc.add_context(before=f"loading {name!r} from {spec.source.text}: ")
            raise
        except Exception as exc:
            detail = " ".join(str(exc).split())
            raise ModelLoadError(
                name, f"loading {name!r} from {spec.source.text} failed: {type(exc).__name__}: {detail}"
            ) from exc
        if model is None:
            raise ModelLoadError(
                name, f"the loader of {name!r} ({spec.source.text}) returned None; it must return the model"
            )
        seconds = time.perf_counter() - started
        cuda_after = memory.cuda_allocated()
        now = time.time()
        return _Entry(
            name=name,
            model=model,
            spec=spec,
            measurement=_measure(model),
            rss_delta=memory.process_rss() - rss_before,
            cuda_delta={d: cuda_after[d] - cuda_before.get(d, 0) for d in cuda_after},
            load_seconds=seconds,
            loaded_at=now,
            last_used=now,
            on_release=on_release,
            pinned=pin,
        )

    def _start_remote(self, name: str, spec: _Spec, *, pin: bool, on_release: ReleaseHook | None) -> _Entry:
        """Load the model in a worker (no lock held); a crash there later drops the entry, and says so."""
        started = time.perf_counter()
        remote = isolation.start(
            spec.runner,
            name,
            spec.source.portable,
            kwargs=spec.kwargs,
            device=spec.device,
            dtype=spec.dtype,
            trust=spec.trust,
            ray_address=self.ray_address,
        )
        manager, remote_ref = weakref.ref(self), weakref.ref(remote)
        remote.add_exit_callback(lambda info: _worker_ended(manager, name, remote_ref, info))
        now = time.time()
        return _Entry(
            name=name,
            model=remote,
            spec=spec,
            measurement=_measure(remote),
            rss_delta=None,  # the kernel's memory did not change: the worker's is in the report of its stop
            cuda_delta={},
            load_seconds=time.perf_counter() - started,
            loaded_at=now,
            last_used=now,
            on_release=on_release,
            pinned=pin,
        )

    def _worker_died(self, name: str, remote: Any, info: Any) -> None:
        """A worker ended without being asked: its entry describes nothing now, so it goes (and an event says so)."""
        with self._lock:
            entry = self._entries.get(name)
            if entry is None or entry.model is not remote:
                return
            del self._entries[name]
            entry.model = None
            self._deaths[name] = info
        log.warning("the worker of %s ended: %s; load it again to use it", name, info.how)
        self._emit(Event("worker_died", name=name, error=info.how))

    def worker_death(self, name: str) -> Any:
        """How the worker of ``name`` ended, when it ended by itself (an ExitInfo), else None."""
        with self._lock:
            return None if name in self._entries else self._deaths.get(name)

    # --- reading --------------------------------------------------------------

    def _loaded(self, name: str) -> _Entry:
        """The entry of a loaded name (call with the lock held); a clear error otherwise."""
        entry = self._entries.get(name)
        if entry is None:
            check_name(name)  # only on a miss, so a hit costs nothing extra
            raise ModelNotFoundError(name, list(self._entries))
        return entry

    def get(self, name: str) -> Any:
        """The loaded model called ``name`` (counts as a use)."""
        with self._lock:
            entry = self._loaded(name)
            entry.touch()
            return entry.model

    def info(self, name: str) -> ModelInfo:
        """What ``name`` is now: measured again each time (dtype, devices, bytes, parameters)."""
        with self._lock:
            entry = self._loaded(name)
            info = entry.info(exact=True)
            remote = entry.model if isolation.is_remote(entry.model) else None
        if remote is None:
            return info
        try:  # a round trip to the worker: here only, never in list()
            reading = remote.memory().describe()
        except Exception as exc:
            reading = f"unreadable ({type(exc).__name__}: {exc})"
        return dataclasses.replace(info, worker_memory=reading)

    def list(self) -> ModelList:
        """Every loaded model as it is now, oldest first, as data with a table repr.

        A model is measured again only when it shows a change (a conversion, a layer
        added), so listing many stays cheap: see :mod:`nbmodels.core.freshness`.
        """
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
        moved = place(model, target, None)
        with self._lock:
            still_loaded = self._entries.get(name) is entry
            if still_loaded:
                entry.model = moved
                entry.measurement = _measure(moved)
                entry.spec = dataclasses.replace(entry.spec, device=target)
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

    def unload(
        self, name: str, *, force: bool = False, allow: Sequence[str] = (), dry_run: bool = False
    ) -> ReleaseReport:
        """Release one model and report whether its memory really came back.

        If something else still holds the model, the report names each holder
        and shows the plan of what force would remove: the smallest thing that
        frees the model (``del cache['m']``, ``history[2] = None``, ``del Out[4]``),
        never a container or object that also holds anything else. ``force=True``
        runs exactly that plan; a removal that would take more than the model with
        it (a tuple, a closure) runs only when its holder is named in ``allow``.
        ``dry_run=True`` shows what unload and force would do and changes nothing.
        A name released earlier that is still alive can be unloaded again.
        """
        request = _request(force, allow, dry_run)
        if dry_run:
            return self._dry_run([name], request)
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
        taken = [_released(entry)] if entry is not None else []
        del entry
        report = self._release(taken, pending=(), request=request, survivors=survivors)
        self._emit(Event("unloaded", name=name, report=report))
        return report

    def cleanup(
        self, *, force: bool = False, allow: Sequence[str] = (), dry_run: bool = False, wait: bool = False
    ) -> ReleaseReport:
        """Release every model. Idempotent; one model's failure never stops the others.

        Loads still in flight finish normally and are listed as pending; with
        ``wait=True`` cleanup first waits for them, and releases them too. Models
        released earlier but still alive are checked again; ``force`` and
        ``allow`` work as for :meth:`unload`, and ``dry_run`` changes nothing.
        """
        request = _request(force, allow, dry_run)
        if dry_run:
            with self._lock:
                names = [*self._entries, *self._survivors]
            return self._dry_run(names, request)
        if wait:
            self._wait_for_loads()
        with self._lock:
            taken = [_released(entry) for entry in self._entries.values()]
            self._entries.clear()
            survivors = [watch for watches in self._survivors.values() for watch in watches]
            self._survivors.clear()
            pending = tuple(self._pending)
        log.info("cleanup: releasing %d model(s)%s", len(taken), f", {len(pending)} still loading" if pending else "")
        report = self._release(taken, pending=pending, request=request, survivors=survivors)
        for line in report.lines():
            log.info("cleanup: %s", line)
        self._emit(Event("cleanup", report=report))
        return report

    def _wait_for_loads(self) -> None:
        """Block until the loads in flight now have finished (never for one this thread runs itself)."""
        me = threading.get_ident()
        with self._lock:
            in_flight = [pending for pending in self._pending.values() if pending.owner != me]
        for pending in in_flight:
            pending.done.wait()

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

    def _places(self) -> builtins.list[Site | Boundary]:
        """Where the holder search starts (and what it never enters), as of now."""
        places: builtins.list[Site | Boundary] = [*default_sites(), Boundary(self)]
        with self._lock:
            finders = list(self._holder_finders)
        for finder in finders:
            try:
                places.extend(finder())
            except Exception:
                # the text of the traceback, not the traceback: its frames would keep the search's locals alive
                log.error("a holder finder failed; the search goes on without it\n%s", traceback.format_exc())
        return places

    def _loaded_models(self) -> builtins.list[tuple[str, Any]]:
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
        owner = "nbmodels.get_manager()" if self is ModelManager._instance else "manager"
        extra = f", allow={tuple(allow)!r}" if allow else ""
        return f"{owner}.unload({name!r}, force=True{extra})"

    def _release(
        self,
        taken: builtins.list[Released],
        *,
        pending: tuple[str, ...],
        request: Request,
        survivors: builtins.list[Watch] | None = None,
    ) -> ReleaseReport:
        """Release ``taken`` (see :mod:`nbmodels.core.release`) and remember what stayed alive."""
        with self._release_lock:
            report, alive = release(
                taken,
                survivors or [],
                request=request,
                places=self._places,
                loaded=self._loaded_models,
                fix=self._fix_command,
                pending=pending,
            )
            if alive:
                with self._lock:
                    for watch in alive:
                        self._survivors.setdefault(watch.name, []).append(watch)
        return report

    def _dry_run(self, names: builtins.list[str], request: Request) -> ReleaseReport:
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
                log.error(
                    "an nbmodels event subscriber failed on %s; the manager carries on\n%s",
                    event.kind,
                    traceback.format_exc(),
                )
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


def _runs_in(runner: str) -> str:
    return {"kernel": "the kernel", "process": "a worker process", "ray": "a Ray actor"}.get(runner, runner)


def _worker_ended(manager: weakref.ref[ModelManager], name: str, remote: weakref.ref[Any], info: Any) -> None:
    """A worker's exit callback (on a background thread); weak references, so it keeps nothing alive."""
    owner, proxy = manager(), remote()
    if owner is not None and proxy is not None and not info.requested:
        owner._worker_died(name, proxy, info)


def get_manager() -> ModelManager:
    """The process-wide ModelManager (same as ``ModelManager.get_instance()``)."""
    return ModelManager.get_instance()
