"""The thread-safe model manager: load by name, list, unload, clean up, and prove it.

Locking follows the cache-stampede pattern: check under the lock, mark the
name pending, run the slow loader outside the lock, store under the lock and
wake the waiters in ``finally``. So a load of one name never blocks
``list()``, ``get()`` or the load of another name, and concurrent loads of
one name call the loader once.
"""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
import functools
import gc
import inspect
import logging
import sys
import threading
import time
import traceback
import warnings
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Literal

from nbmodels.core import isolation, memory
from nbmodels.core.devices import normalize_device, normalize_dtype, parse_device_name, place
from nbmodels.core.freshness import Measurement
from nbmodels.core.holders.sites import Boundary, HolderFinder, Site, default_sites
from nbmodels.core.holders.watch import Watch
from nbmodels.core.policy import budget as budgets
from nbmodels.core.policy import oom
from nbmodels.core.policy.estimate import estimate
from nbmodels.core.policy.eviction import (
    Candidate,
    Eviction,
    Holding,
    RoomPlan,
    explain_shortfall,
    plan_room,
    rescue_order,
)
from nbmodels.core.policy.keepalive import KeepAliveTimer, deadline, earliest
from nbmodels.core.policy.placement import (
    OFFLOAD_RESERVE,
    choose_device,
    current_readings,
    device_total,
    memory_room,
    native_kwargs,
    system_available,
)
from nbmodels.core.policy.sizes import format_duration, parse_duration
from nbmodels.core.release import Released, Request, dry_run, release
from nbmodels.core.reports import Event, ModelInfo, ModelList, ReleaseReport, StillAlive
from nbmodels.core.sources import Source, keywords_text, resolve
from nbmodels.errors import (
    BudgetExceededError,
    InvalidArgumentError,
    ModelConflictError,
    ModelLoadError,
    ModelNotFoundError,
    NbModelsError,
    PlacementWarning,
)

log = logging.getLogger("nbmodels")

# Keywords of load() and register() that are the manager's settings, never the loader's.
_SETTINGS = ("device", "dtype", "pin", "trust", "runner", "keep_alive")
EvictMode = Literal["unload", "offload"]

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
    keep_alive: float | None = None  # seconds idle before keep-alive unloads it; None: forever
    busy: int = 0  # calls through its handle running now
    in_scope: bool = False  # used in the open use scope (the running cell): idle only when it closes
    _info: ModelInfo | None = field(default=None, repr=False)

    def touch(self, now: float) -> None:
        self.hits += 1
        self.used(now)

    def used(self, now: float) -> None:
        self.last_used = now
        self._info = None

    @property
    def in_use(self) -> bool:
        return self.busy > 0 or self.in_scope

    def deadline(self) -> float | None:
        """When keep-alive unloads it if it stays idle (None: never, or not while it is in use)."""
        return deadline(self.last_used, self.keep_alive, pinned=self.pinned, busy=self.in_use)

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
                keep_alive=self.keep_alive,
                unload_at=self.deadline(),
                in_use=self.in_use,
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


class _Probe:
    __slots__ = ("model",)
    model: Any


def _own_references() -> int:
    """What ``sys.getrefcount(entry.model)`` reads when the entry is the model's only holder."""
    probe = _Probe()
    probe.model = object()
    return sys.getrefcount(probe.model)


_OWN_REFERENCES = _own_references()


def _held_elsewhere(entry: _Entry) -> bool:
    """True when something besides the manager holds the model object, so that releasing it frees nothing now.

    A reference count, not the holder search: cheap enough to ask of every
    candidate of an eviction. It sees a variable, a list, a frame holding the
    model; not an optimizer or a ``state_dict()`` holding its tensors, which the
    release report finds afterwards (and the policy then counts as no room made).
    """
    return sys.getrefcount(entry.model) > _OWN_REFERENCES


def _tensor_references(model: Any) -> Iterator[tuple[int, int]]:
    """For each parameter and buffer of a module: (its reference count, how many registries of the model hold it)."""
    seen: dict[int, int] = {}
    tensors = []
    for module in model.modules():
        for registry in (module._parameters, module._buffers):
            for tensor in registry.values():
                if tensor is not None:
                    if id(tensor) not in seen:
                        tensors.append(tensor)
                    seen[id(tensor)] = seen.get(id(tensor), 0) + 1
    for tensor in tensors:
        yield sys.getrefcount(tensor), seen[id(tensor)]


@functools.cache
def _own_tensor_references() -> int:
    """What :func:`_tensor_references` reads for a parameter that only its module holds."""
    import torch

    return next(_tensor_references(torch.nn.Linear(1, 1, bias=False)))[0]


def _tensors_held_elsewhere(model: Any) -> bool:
    """True when something besides the model holds one of its parameters or buffers: an optimizer, a list of them.

    Such a model survives its release, so evicting it makes no room (and takes it
    from a user who is training it); a loss that keeps its autograd graph counts
    too. Asked only of the model a plan would evict next: it walks the parameters.
    New tensors over the same storage (a saved ``state_dict()``) are not seen; the
    release report finds those.
    """
    if "torch" not in sys.modules or not isinstance(model, sys.modules["torch"].nn.Module):
        return False
    own = _own_tensor_references()
    return any(count > own + (registries - 1) for count, registries in _tensor_references(model))


def _device(device: Any) -> str | None:
    """A device checked and written canonically; ``"auto"`` stays itself: the load decides (see _resolve_auto)."""
    if device is not None and parse_device_name(device)[0] == "auto":
        return "auto"
    return normalize_device(device)


def _live_bytes(watch: Watch) -> dict[str, int]:
    """Bytes per device of a released model's storages that are still alive."""
    live: dict[str, int] = {}
    for record in watch.live_storages():
        live[record.device] = live.get(record.device, 0) + record.nbytes
    return live


class UseScope:
    """A span in which the models used stay in use until it closes (see :meth:`ModelManager.use_scope`).

    ``open()`` and ``close()`` may be called from hooks (a cell's start and end);
    each counts once however often it is called, and ``with scope:`` works too.
    """

    def __init__(self, manager: ModelManager) -> None:
        self._manager = manager
        self._open = False
        self._lock = threading.Lock()

    def open(self) -> None:
        with self._lock:
            if self._open:
                return
            self._open = True
        self._manager._scope_changed(+1)

    def close(self) -> None:
        with self._lock:
            if not self._open:
                return
            self._open = False
        self._manager._scope_changed(-1)

    def __enter__(self) -> UseScope:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        """``clock`` is the time of uses and keep-alive deadlines (tests pass a fake one)."""
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
        # The memory policy (see nbmodels.core.policy): budgets, keep-alive, eviction.
        self._clock = clock
        self._max_memory: dict[str, budgets.Budget] = {}
        self._max_models = 0
        self._keep_alive: float | None = None  # for loads that give none: forever
        self._evict: EvictMode = "unload"
        self._reserved: dict[str, dict[str, int]] = {}  # loads in flight under a budget: their estimated bytes
        self._room_lock = threading.RLock()  # one decision about room at a time; never held with _lock first
        self._scope_depth = 0
        self._timer = KeepAliveTimer(self._expire_due, clock=clock)
        weakref.finalize(self, self._timer.stop, 0.0)

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
        if defaults.get("keep_alive") is not None:
            parse_duration(defaults["keep_alive"])
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
        keep_alive: Any = None,
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

        The memory policy: ``device="auto"`` picks the CUDA device with the most
        room for the model (else the CPU); under a budget (:meth:`set_max_memory`,
        :attr:`max_loaded_models`) the least recently used unpinned models leave
        first, and :class:`~nbmodels.errors.BudgetExceededError` says what blocks
        when they cannot; ``pin=True`` keeps this one through eviction;
        ``keep_alive`` (seconds, ``"30m"``, ``0``, ``-1``; default :attr:`keep_alive`)
        unloads it after that long idle. A loader that runs out of memory while
        other models sit on its device gets them evicted and is tried once more.
        """
        name = check_name(name)
        spec, explicit = self._spec(name, source, device, dtype, trust, kwargs, runner)
        registration = None
        if source is None:
            with self._lock:
                registration = self._registry.get(name)
        if registration is not None:
            pin = pin or bool(registration.defaults.get("pin", False))
            if keep_alive is None:
                keep_alive = registration.defaults.get("keep_alive")
        keep = parse_duration(keep_alive) if keep_alive is not None else self._keep_alive
        waited = False
        while True:
            with self._lock:
                self._used = True
                entry = self._entries.get(name)
                pending = self._pending.get(name)
                # A reload that waited for a load of just what it asks for takes that load.
                if entry is not None and (not reload or (waited and not self._differences(entry, spec, explicit))):
                    self._check_same(entry, spec, explicit)
                    self._use(entry, hit=True)
                    entry.pinned = entry.pinned or pin
                    if keep_alive is not None and keep != entry.keep_alive:
                        entry.keep_alive = keep
                        self._schedule(entry)
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
        return self._load_as_owner(name, spec, pending, previous, pin=pin, keep_alive=keep, on_release=on_release)

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
        spec = _Spec(resolved, dict(kwargs), _device(device), normalize_dtype(dtype), trust, where)
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
        if "device" in explicit and spec.device not in (None, "auto"):  # "auto" asks for wherever it is
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
        keep_alive: float | None,
        on_release: ReleaseHook | None,
    ) -> Any:
        try:
            if previous is not None:
                report = self._release([_released(previous)], pending=(), request=Request())
                self._emit(Event("unloaded", name=name, report=report))
            self._emit(Event("load_started", name=name))
            spec = self._resolve_auto(name, spec)
            self._room_before_load(name, spec)
            entry = self._load_rescued(name, spec, pin=pin, on_release=on_release)
            entry.keep_alive = keep_alive
            with self._room_lock:
                self._room_after_load(name, entry)  # its evictions are events already
                with self._lock:
                    if self._scope_depth:
                        entry.in_scope = True
                    self._entries[name] = entry
                    self._deaths.pop(name, None)
                    del self._pending[name]
                    self._reserved.pop(name, None)
                    pending.done.set()
                    info = entry.info()
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
                self._reserved.pop(name, None)
                pending.error = error
                pending.done.set()
            log.warning("loading %s failed: %s", name, error, exc_info=error)
            self._emit(Event("load_failed", name=name, error=str(error)))
            raise
        self._schedule(entry)
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
        # A Hugging Face folder places itself (device_map, dtype): no full CPU copy first, and accelerate
        # can spread a model too large for one GPU. Other loaders load, then move.
        native = native_kwargs(spec.source.text, spec.device, spec.dtype, spec.kwargs)
        given = {**spec.kwargs, **native}
        device = None if "device_map" in given else spec.device
        dtype = None if {"dtype", "torch_dtype"} & set(given) else spec.dtype
        try:
            model = spec.source.load(trust=spec.trust, kwargs=given)
            if model is not None:
                model = place(model, device, dtype)
        except NbModelsError as exc:  # raised inside the loader (often by nbmodels): say which load it was
            exc.add_context(before=f"loading {name!r} from {spec.source.text}: ")
            raise
        except Exception as exc:
            detail = " ".join(str(exc).split())
            what = f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__  # MemoryError() says nothing
            raise ModelLoadError(name, f"loading {name!r} from {spec.source.text} failed: {what}") from exc
        if model is None:
            raise ModelLoadError(
                name, f"the loader of {name!r} ({spec.source.text}) returned None; it must return the model"
            )
        seconds = time.perf_counter() - started
        cuda_after = memory.cuda_allocated()
        now = self._clock()
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
        now = self._clock()
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
            self._use(entry, hit=True)
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

    def to(self, name: str, device: Any) -> ModelInfo:
        """Move a loaded model to ``device`` (``"cpu"``, ``"cuda:1"``, ``"auto"``); a budget there makes room first.

        Accounting and events follow (``moved``). Under a budget on ``device`` the
        least recently used unpinned models there leave first; when they cannot,
        BudgetExceededError, and nothing moved.
        """
        target = _device(device)
        if target is None:
            raise InvalidArgumentError(f"to({name!r}, None): give a device such as 'cpu', 'cuda:0' or 'auto'")
        with self._lock:
            entry = self._loaded(name)
            nbytes = sum(entry.footprint.bytes_by_device.values())
        if target == "auto":
            target = self._auto_device(name, nbytes)
        with self._room_lock:
            self._make_room(
                name, {target: nbytes}, purpose=f"to fit {name} on {target}", exclude=name, outcome="nothing was moved"
            )
            info = self._move_entry(name, entry, target)
        self._emit(Event("moved", name=name, info=info))
        return info

    def offload(self, name: str) -> ModelInfo:
        """Move a loaded model to the CPU (``to(name, "cpu")``): its GPU memory comes back, it stays loaded."""
        return self.to(name, "cpu")

    def move(self, name: str, device: Any) -> ModelInfo:
        """Move a loaded model to ``device`` (offload to the CPU, or back to a GPU); the same as :meth:`to`."""
        return self.to(name, device)

    def _move_entry(self, name: str, entry: _Entry, target: str) -> ModelInfo:
        """Move ``entry``'s model (outside the manager lock) and record where it is now."""
        with self._lock:
            still_loaded = self._entries.get(name) is entry
            model = entry.model
        moved = place(model, target, None) if still_loaded else None
        with self._lock:
            still_loaded = still_loaded and self._entries.get(name) is entry
            if still_loaded:
                entry.model = moved
                entry.measurement = _measure(moved)
                entry.spec = replace(entry.spec, device=target)
                entry._info = None
                info = entry.info()
            known = list(self._entries)
        del model, moved
        if not still_loaded:  # unloaded (or reloaded) while it moved: its entry describes nothing now
            error = ModelNotFoundError(name, known)
            error.message += " (it was unloaded while it was being moved)"
            raise error
        memory.empty_cuda_cache()
        return info

    def _resolve_auto(self, name: str, spec: _Spec) -> _Spec:
        """``device="auto"``: the CUDA device with the most room for the model's estimate, else the CPU."""
        if spec.device != "auto":
            return spec
        found = estimate(spec.source.text, spec.kwargs, spec.dtype)
        return replace(spec, device=self._auto_device(name, found.nbytes if found else None))

    def _auto_device(self, name: str, nbytes: int | None) -> str:
        with self._lock:
            limits = self._limits()
            used, _ = self._usage(exclude=name)
        room = {device: max(limit - used.get(device, 0), 0) for device, limit in limits.bytes_by_device.items()}
        choice = choose_device(nbytes, current_readings(), room, what=name)
        if choice.warning:
            log.warning("%s", choice.warning)
            warnings.warn(PlacementWarning(choice.warning), stacklevel=5)
        log.info("device='auto' for %s: %s (%s)", name, choice.device, choice.reason)
        return choice.device

    # --- use, pinning, keep-alive -------------------------------------------------

    def _use(self, entry: _Entry, *, hit: bool) -> None:
        """Record a use (call with the lock held): the idle clock restarts; a hit also counts."""
        now = self._clock()
        if hit:
            entry.touch(now)
        else:
            entry.used(now)
        if self._scope_depth and not entry.in_scope:
            entry.in_scope = True

    def mark_used(self, name: str) -> None:
        """Count a use of ``name`` without returning it (a handle does, on every use); unknown names are ignored."""
        with self._lock:
            entry = self._entries.get(name)
            if entry is not None:
                self._use(entry, hit=False)

    @contextlib.contextmanager
    def using(self, name: str) -> Iterator[None]:
        """While the block runs, ``name`` is in use: never evicted or expired; its idle clock starts at the end."""
        with self._lock:
            entry = self._entries.get(name)
            if entry is not None:
                entry.busy += 1
                self._use(entry, hit=False)
        try:
            yield
        finally:
            if entry is not None:
                with self._lock:
                    entry.busy -= 1
                    entry.used(self._clock())
                self._schedule(entry)

    def use_scope(self) -> UseScope:
        """A span (a notebook cell) in which every model used stays in use until it closes.

        Keep-alive counts idle time from the end of the scope, so ``keep_alive=0``
        unloads a model when the cell that used it ends. Eviction is not affected.
        """
        return UseScope(self)

    def _scope_changed(self, delta: int) -> None:
        with self._lock:
            self._scope_depth = max(self._scope_depth + delta, 0)
            if delta > 0 or self._scope_depth:
                return
            now = self._clock()
            ended = [entry for entry in self._entries.values() if entry.in_scope]
            for entry in ended:
                entry.in_scope = False
                entry.used(now)
        for entry in ended:
            self._schedule(entry)

    def _schedule(self, entry: _Entry) -> None:
        """Make sure the keep-alive timer wakes by ``entry``'s deadline (uses only ever move it later)."""
        when = entry.deadline()
        if when is not None:
            self._timer.schedule(when)

    @property
    def keep_alive(self) -> float | None:
        """Seconds a model stays loaded while idle when its load gave no ``keep_alive``; None: forever (default)."""
        return self._keep_alive

    @keep_alive.setter
    def keep_alive(self, value: Any) -> None:
        self._keep_alive = None if value is None else parse_duration(value)

    def _expire_due(self, now: float) -> float | None:
        """The keep-alive timer's call: unload every idle model past its deadline; return the next deadline."""
        with self._lock:
            due = [entry for entry in self._entries.values() if (when := entry.deadline()) is not None and when <= now]
            for entry in due:
                del self._entries[entry.name]
            taken = [(entry.name, entry.keep_alive, now - entry.last_used, _released(entry)) for entry in due]
        del due
        for name, keep, idle, item in taken:
            report = self._release([item], pending=(), request=Request())
            reason = (
                f"{name}: unloaded by keep-alive after {format_duration(idle)} idle "
                f"(keep_alive {format_duration(keep)})"
            )
            if report.still_alive:
                reason += f"; its memory did not come back: {report.still_alive[0].describe()}"
            log.info("%s", reason)
            self._emit(Event("expired", name=name, report=report, reason=reason))
        with self._lock:
            return earliest(entry.deadline() for entry in self._entries.values())

    def pin(self, name: str) -> ModelInfo:
        """Keep ``name`` loaded: no budget evicts it and keep-alive never unloads it (unload and cleanup still do)."""
        return self._set_pin(name, True)

    def unpin(self, name: str) -> ModelInfo:
        """Let budgets evict ``name`` again, and its keep-alive run."""
        return self._set_pin(name, False)

    def _set_pin(self, name: str, pinned: bool) -> ModelInfo:
        with self._lock:
            entry = self._loaded(name)
            changed = entry.pinned != pinned
            entry.pinned = pinned
            entry._info = None
            info = entry.info()
        if changed:
            self._schedule(entry)
            self._emit(Event("pinned", name=name, info=info, reason=f"{'pinned' if pinned else 'unpinned'} {name}"))
        return info

    # --- budgets ------------------------------------------------------------------

    @property
    def max_memory(self) -> dict[str, budgets.Budget]:
        """The budget per device: bytes (``int``) or a fraction of the device's total (``float``)."""
        with self._lock:
            return dict(self._max_memory)

    @max_memory.setter
    def max_memory(self, value: Any) -> None:
        self.set_max_memory(value)

    def set_max_memory(self, value: Any) -> tuple[str, ...]:
        """Set the budget per device: ``{"cpu": "8GiB", "cuda:0": 0.8}`` (or ``"cpu=8GiB,cuda:0=0.8"``; None: none).

        Bytes, a size such as ``"512MB"`` (GB is 10**9, GiB 2**30, as accelerate
        reads them) or a fraction of the device's memory. A lower budget evicts
        least recently used unpinned models at once; returns one line per model
        evicted. When pinned or held models keep a device over it,
        BudgetExceededError, and the budget stays as it was.
        """
        parsed = budgets.parse_budgets(value)
        with self._room_lock:
            with self._lock:
                previous, self._max_memory = self._max_memory, parsed
            try:
                events = self._make_room(
                    None,
                    {},
                    purpose="to fit the new budget",
                    adding=0,
                    everywhere=True,
                    outcome="the budget is unchanged",
                )
            except BudgetExceededError:
                with self._lock:
                    self._max_memory = previous
                raise
        log.info("max_memory: %s", budgets.describe(parsed))
        return tuple(event.reason or "" for event in events)

    @property
    def max_loaded_models(self) -> int:
        """How many models may be loaded at once (0: no limit); loading one more evicts the least recently used."""
        return self._max_models

    @max_loaded_models.setter
    def max_loaded_models(self, value: Any) -> None:
        count = budgets.check_count(value)
        with self._room_lock:
            previous, self._max_models = self._max_models, count
            try:
                self._make_room(
                    None,
                    {},
                    purpose="to fit max_loaded_models",
                    adding=0,
                    everywhere=True,
                    outcome="the limit is unchanged",
                )
            except BudgetExceededError:
                self._max_models = previous
                raise

    @property
    def evict(self) -> EvictMode:
        """What eviction does to a model on a GPU: ``"unload"`` it, or ``"offload"`` it to the CPU when that fits."""
        return self._evict

    @evict.setter
    def evict(self, value: Any) -> None:
        if value not in ("unload", "offload"):
            raise InvalidArgumentError(f"evict must be 'unload' or 'offload', not {value!r}")
        self._evict = value

    def _policy_active(self) -> bool:
        return bool(self._max_memory or self._max_models)

    def _limits(self) -> budgets.Limits:
        """The budgets in bytes now (a fraction of a device whose total is unknown constrains nothing)."""
        resolved = {}
        for device, size in self._max_memory.items():
            nbytes = budgets.resolve(size, device_total(device) if isinstance(size, float) else None)
            if nbytes is not None:
                resolved[device] = nbytes
        return budgets.Limits(resolved, self._max_models)

    def _usage(self, exclude: str | None = None) -> tuple[dict[str, int], int]:
        """Bytes per device that count against budgets, and the models loaded or loading (lock held).

        Loaded models, the estimates of loads in flight, and released models that
        something still holds: their memory has not come back.
        """
        used: dict[str, int] = {}

        def add(nbytes: Mapping[str, int]) -> None:
            for device, n in nbytes.items():
                used[device] = used.get(device, 0) + n

        for entry in self._entries.values():
            if entry.name != exclude:
                add(entry.footprint.bytes_by_device)
        for name, reserved in self._reserved.items():
            if name != exclude:
                add(reserved)
        for watches in self._survivors.values():
            for watch in watches:
                add(_live_bytes(watch))
        count = sum(name != exclude for name in self._entries) + sum(name != exclude for name in self._reserved)
        return used, count

    def _candidates(
        self, skip: set[str | None], freeable: set[str], suspected: set[str] | None = None
    ) -> builtins.list[Candidate]:
        """Every loaded model the planner may consider (lock held); ``suspected``: found held by their tensors."""
        return [
            Candidate(
                entry.name,
                entry.footprint.bytes_by_device,
                entry.last_used,
                pinned=entry.pinned,
                busy=entry.busy > 0,
                held=entry.name not in freeable and (entry.name in (suspected or ()) or _held_elsewhere(entry)),
            )
            for entry in self._entries.values()
            if entry.name not in skip
        ]

    def _cpu_room(self, limits: budgets.Limits, used: Mapping[str, int]) -> int:
        """Bytes the CPU can take for offloaded models: its budget's room, else what the system has to spare."""
        if "cpu" in limits.bytes_by_device:
            return max(limits.bytes_by_device["cpu"] - used.get("cpu", 0), 0)
        return max(system_available() - OFFLOAD_RESERVE, 0)

    def _make_room(
        self,
        cause: str | None,
        need: Mapping[str, int],
        *,
        purpose: str,
        outcome: str = "nothing was loaded",
        adding: int = 1,
        exclude: str | None = None,
        everywhere: bool = False,
    ) -> builtins.list[Event]:
        """Evict until ``need`` fits every budget (the caller holds the room lock); the evictions' events.

        One model at a time, each through the ordinary release; the plan is made
        again after each, from what really came back. A model whose release left it
        alive made no room. When the plan cannot fit, BudgetExceededError: nothing
        more is evicted.
        """
        if not self._policy_active():
            return []
        events: builtins.list[Event] = []
        tried: set[str | None] = {exclude}
        freeable: set[str] = set()
        suspected: set[str] = set()  # their parameters have holders outside the model (an optimizer)
        holders: dict[str, StillAlive | None] | None = None
        while True:
            plan, limits, used = self._plan(
                need,
                adding=adding,
                exclude=exclude,
                skip=tried,
                freeable=freeable,
                suspected=suspected,
                everywhere=everywhere,
            )
            if plan.fits and not plan.evictions:
                return events
            if not plan.fits:
                if holders is None:  # only now ask the holder search, once: the failure path may be slow
                    holders = self._holders_of(plan.held)
                    wrong = {name for name in plan.held if name in holders and holders[name] is None}
                    if wrong:  # the reference count was wrong (a cycle, say): their release frees them after all
                        freeable |= wrong
                        continue
                raise self._budget_error(cause, need, limits, used, plan, events, holders, purpose, outcome)
            eviction = plan.evictions[0]
            if eviction.action == "unload" and eviction.name not in freeable | suspected:
                with self._lock:
                    entry = self._entries.get(eviction.name)
                    model = entry.model if entry is not None else None
                    del entry
                held = _tensors_held_elsewhere(model)
                del model
                if held:  # its release would free nothing: plan again with it counted as held
                    suspected.add(eviction.name)
                    continue
            tried.add(eviction.name)
            event = self._evict_one(eviction, cause, purpose)
            if event is not None:
                events.append(event)

    def _plan(
        self,
        need: Mapping[str, int],
        *,
        adding: int = 1,
        exclude: str | None = None,
        skip: set[str | None] | None = None,
        freeable: set[str] | None = None,
        suspected: set[str] | None = None,
        everywhere: bool = False,
    ) -> tuple[RoomPlan, budgets.Limits, dict[str, int]]:
        """The eviction decision, from the state now: what would leave for ``need`` (nothing changes).

        ``exclude`` is the model room is made for (its bytes and reservation never
        count, and it never leaves); ``skip`` the models tried already;
        ``freeable`` those the holder search found nothing holding; ``suspected``
        those whose parameters something else holds.
        """
        skip = {exclude} if skip is None else skip | {exclude}
        with self._lock:
            limits = self._limits()
            used, count = self._usage(exclude)
            candidates = self._candidates(skip, freeable or set(), suspected)
            cpu_room = self._cpu_room(limits, used) if self._evict == "offload" else None
        plan = plan_room(
            candidates,
            used=used,
            need=need,
            limits=limits,
            count=count,
            adding=adding,
            everywhere=everywhere,
            cpu_room=cpu_room,
        )
        return plan, limits, used

    def _evict_one(self, eviction: Eviction, cause: str | None, purpose: str) -> Event | None:
        """Unload (or offload) one model to make room; its event, or None when it changed meanwhile."""
        now = self._clock()
        name = eviction.name
        taken: builtins.list[Released] = []
        with self._lock:
            entry = self._entries.get(name)
            if entry is None or entry.pinned or entry.busy:
                return None
            idle = format_duration(now - entry.last_used)
            size = memory.format_bytes(sum(entry.footprint.bytes_by_device.values()))
            if eviction.action == "unload":
                del self._entries[name]
                taken.append(_released(entry))
        if eviction.action == "offload":
            try:
                info = self._move_entry(name, entry, "cpu")
            except Exception as exc:
                log.warning("offloading %s to make room failed: %s", name, exc)
                return None
            event = Event("evicted", name=name, info=info, cause=cause)
            reason = f"offloaded {name} to the CPU ({size}, idle {idle}) {purpose}"
        else:
            del entry
            report = self._release(taken, pending=(), request=Request())
            reason = f"evicted {name} ({size}, idle {idle}) {purpose}"
            if report.still_alive:
                reason += f"; its memory did not come back: {report.still_alive[0].describe()}"
            event = Event("evicted", name=name, report=report, cause=cause)
        event = replace(event, reason=reason)
        log.info("%s", reason)
        self._emit(event)
        return event

    def _holders_of(self, names: Sequence[str]) -> dict[str, StillAlive | None]:
        """For loaded or released names: what holds each (a dry run of the holder search); None: nothing does."""
        with self._lock:
            names = [n for n in names if n in self._entries or n in self._survivors]
        if not names:
            return {}
        try:
            report = self._dry_run(builtins.list(names), Request(dry_run=True))
        except ModelNotFoundError:  # unloaded meanwhile
            return {}
        alive = {held.name: held for held in report.still_alive}
        return {name: alive.get(name) for name in names}

    def _budget_error(
        self,
        cause: str | None,
        need: Mapping[str, int],
        limits: budgets.Limits,
        used: Mapping[str, int],
        plan: RoomPlan,
        events: Sequence[Event],
        holders: Mapping[str, StillAlive | None],
        purpose: str,
        outcome: str,
    ) -> BudgetExceededError:
        """The error of a plan that cannot fit, with what the manager knows of the models in its way."""
        with self._lock:
            sizes = {entry.name: sum(entry.footprint.bytes_by_device.values()) for entry in self._entries.values()}
            loading = [n for n, reserved in self._reserved.items() if n != cause and (reserved or plan.count_over)]
        held = {
            name: Holding(tuple(h.path for h in alive.holders), alive.fix)
            for name, alive in holders.items()
            if alive is not None
        }
        shortfall = explain_shortfall(
            plan,
            need=need,
            limits=limits,
            used=used,
            sizes=sizes,
            holders=held,
            loading=loading,
            still_held=[e.name or "" for e in events if e.report is not None and e.report.still_alive],
        )
        subject = f"no room {purpose}" if cause is None else f"no room for {cause}"
        return BudgetExceededError(
            f"{subject}: {shortfall.text}; {outcome}",
            name=cause or "",
            needed=dict(need),
            free=shortfall.free,
            blocked=plan.blocked,
        )

    def _room_before_load(self, name: str, spec: _Spec) -> None:
        """Before a load under a budget: make room for its estimated size, and reserve that room.

        Loads in flight hold their reservations and cannot be evicted: when only
        they stand in the way, this load waits for them to finish (then they are
        loaded models like any other, the least recently used of which may leave).
        """
        if not self._policy_active():
            return
        need: dict[str, int] = {}
        device = spec.device or "cpu"
        if self._max_memory and device != "meta" and "device_map" not in spec.kwargs:
            found = estimate(spec.source.text, spec.kwargs, spec.dtype)
            if found is not None:
                need = {device: found.nbytes}
        me = threading.get_ident()
        while True:
            with self._room_lock:
                try:
                    self._make_room(name, need, purpose=f"to fit {name}", exclude=name)
                except BudgetExceededError:
                    with self._lock:
                        in_flight = [p for n, p in self._pending.items() if n in self._reserved and p.owner != me]
                    if not in_flight:
                        raise
                else:
                    with self._lock:
                        self._reserved[name] = need
                    return
            for pending in in_flight:
                pending.done.wait()

    def _room_after_load(self, name: str, entry: _Entry) -> builtins.list[Event]:
        """After a load (room lock held): the measured size must fit; if it cannot, the model is released again."""
        if not self._policy_active():
            return []
        with self._lock:
            self._reserved.pop(name, None)
        need = dict(entry.footprint.bytes_by_device)
        try:
            return self._make_room(
                name, need, purpose=f"to fit {name}", exclude=name, outcome=f"{name} was released again"
            )
        except BudgetExceededError as exc:
            report = self._release([_released(entry)], pending=(), request=Request())
            size = memory.format_bytes(sum(need.values()))
            exc.add_context(after=f" (it loaded, measured {size}, and did not fit)")
            if report.still_alive:
                exc.add_context(after=f"; {report.still_alive[0].describe()}")
            raise

    # --- out of memory -----------------------------------------------------------

    def _load_rescued(self, name: str, spec: _Spec, *, pin: bool, on_release: ReleaseHook | None) -> _Entry:
        """Run the loader; if it runs out of memory while other models sit on its device, evict them, retry once."""
        failed: ModelLoadError | None = None
        try:
            return self._run_loader(name, spec, pin=pin, on_release=on_release)
        except ModelLoadError as exc:
            cause = oom.out_of_memory_in(exc.__cause__)
            if cause is None:
                raise
            failed = exc
            default = spec.device if spec.device and spec.device.startswith("cuda") else "cuda:0"
            device = oom.device_of(cause, default)
            del cause
        oom.forget_frames(failed)  # the half-built model in the loader's frames must not stay
        evicted = self._rescue(name, spec, device)
        if not evicted:
            account = self.memory_account(device, exclude=name)
            failed.add_context(after="; " + "; ".join(line.strip() for line in account.lines()))
            raise failed
        failed = None
        gc.collect()
        memory.empty_cuda_cache()
        log.info("retrying %s after evicting %s from %s", name, ", ".join(evicted), device)
        try:
            return self._run_loader(name, spec, pin=pin, on_release=on_release)
        except ModelLoadError as exc:
            if oom.out_of_memory_in(exc.__cause__) is not None:
                exc.add_context(after=f"; it ran out of memory again after {', '.join(evicted)} left {device}")
            raise

    def _rescue(self, name: str, spec: _Spec, device: str) -> builtins.list[str]:
        """Evict the idle unpinned models on ``device``, least recently used first; the names that left."""
        found = estimate(spec.source.text, spec.kwargs, spec.dtype)
        action: Literal["unload", "offload"] = "offload" if self._evict == "offload" and device != "cpu" else "unload"
        purpose = f"to retry {name} after it ran out of memory on {device}"
        evicted: builtins.list[str] = []
        with self._room_lock:
            with self._lock:
                candidates = rescue_order(self._candidates({name}, set()), device)
            for candidate in candidates:
                if found is not None and evicted and memory_room(device) >= found.nbytes:
                    break
                if self._evict_one(Eviction(candidate.name, action, candidate.bytes_by_device), name, purpose):
                    evicted.append(candidate.name)
        return evicted

    def memory_account(self, device: str, *, exclude: str | None = None) -> oom.MemoryAccount:
        """What holds ``device``'s memory: its reading, the models there, released ones still alive there, and the
        command that frees the most (said after an out-of-memory error)."""
        with self._lock:
            there = [
                entry
                for entry in self._entries.values()
                if entry.name != exclude and entry.footprint.bytes_by_device.get(device, 0) > 0
            ]
            rows = [(e.name, e.footprint.bytes_by_device[device], e.pinned, e.last_used) for e in there]
            suspects = [e.name for e in there if _held_elsewhere(e) or _tensors_held_elsewhere(e.model)]
            del there
            survivors = {
                name: sum(_live_bytes(watch).get(device, 0) for watch in watches)
                for name, watches in self._survivors.items()
            }
        survivors = {name: nbytes for name, nbytes in survivors.items() if nbytes > 0}
        found = self._holders_of([*suspects, *survivors])

        def held_by(name: str) -> tuple[tuple[str, ...], str]:
            alive = found.get(name)
            return (tuple(h.path for h in alive.holders), alive.fix) if alive is not None else ((), "")

        models = tuple(
            oom.LoadedModel(name, nbytes, pinned, last_used, *held_by(name)) for name, nbytes, pinned, last_used in rows
        )
        held = tuple(oom.StillHeld(name, nbytes, *held_by(name)) for name, nbytes in survivors.items())
        reading = next((r for r in memory.device_readings() if r.device == device), None)
        return oom.MemoryAccount(device, reading, models, held, oom.best_remedy(models, held), now=self._clock())

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
        self._timer.cancel()  # nothing loaded is left to expire: the keep-alive thread ends
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
