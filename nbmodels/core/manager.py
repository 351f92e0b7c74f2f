"""The thread-safe model manager: load by name, list, unload, clean up, and prove it.

Locking follows the cache-stampede pattern: check under the lock, mark the
name pending, run the slow loader outside the lock, store under the lock and
wake the waiters in ``finally``. So a load of one name never blocks
``list()``, ``get()`` or the load of another name, and concurrent loads of
one name call the loader once.

The manager is built in parts, each a module: its records
(:mod:`nbmodels.core.entries`), the state, events and release they share
(:mod:`nbmodels.core.state`), the memory policy (:mod:`nbmodels.core.budgeting`)
and the use clock with keep-alive (:mod:`nbmodels.core.keeping`). This module
holds loading, reading and releasing by name.
"""

from __future__ import annotations

import builtins
import dataclasses
import logging
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from nbmodels.core import isolation, memory
from nbmodels.core.budgeting import Budgeting
from nbmodels.core.devices import normalize_device, normalize_dtype, place
from nbmodels.core.entries import (
    SETTINGS,
    Entry,
    Pending,
    Registration,
    ReleaseHook,
    Spec,
    canonical_device,
    check_name,
    floating_dtypes,
    hand_over,
    measure,
    runs_in,
)
from nbmodels.core.keeping import Keeping, UseScope
from nbmodels.core.policy.placement import native_kwargs
from nbmodels.core.policy.sizes import parse_duration
from nbmodels.core.release import Request
from nbmodels.core.reports import Event, ModelInfo, ModelList, ReleaseReport
from nbmodels.core.sources import check_safety_keywords, keywords_text, resolve
from nbmodels.errors import InvalidArgumentError, ModelConflictError, ModelLoadError, ModelNotFoundError, NbModelsError

log = logging.getLogger("nbmodels")


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


class ModelManager(Budgeting, Keeping):
    """Loads models by name, tracks what they cost, and releases them for real.

    One instance per process is the norm (:meth:`get_instance`); separate
    instances are independent and useful in tests.
    """

    _instance: ClassVar[ModelManager | None] = None
    _instance_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        """``clock`` is the time of uses and keep-alive deadlines (tests pass a fake one)."""
        super().__init__(clock=clock)

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
            resolved.check_keywords({k: v for k, v in defaults.items() if k not in SETTINGS})
        with self._lock:
            self._registry[name] = Registration(resolved, dict(defaults))
            self._used = True
        log.info("registered %s -> %s", name, resolved.text)

    def registered(self) -> list[str]:
        """Names that can be loaded by name alone."""
        with self._lock:
            return list(self._registry)

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
        __tracebackhide__ = True  # IPython leaves nbmodels' own frames out of the user's traceback
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
                    pending = self._pending[name] = Pending(spec)
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
    ) -> tuple[Spec, set[str]]:
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
                for key in SETTINGS:  # the manager's settings, not the factory's
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
        check_safety_keywords(kwargs, trust=trust)  # before anything else: a keyword never turns a safety off alone
        if resolved.check_keywords is not None:
            resolved.check_keywords(kwargs)
        if where != isolation.KERNEL:  # a worker must be able to rebuild it: say so now, not after a reload
            isolation.check_portable(name, resolved.portable, kwargs=kwargs, trust=trust)
        spec = Spec(resolved, dict(kwargs), canonical_device(device), normalize_dtype(dtype), trust, where)
        return spec, explicit

    @classmethod
    def _check_same(cls, entry: Entry, spec: Spec, explicit: set[str]) -> None:
        differences = cls._differences(entry, spec, explicit)
        if differences:
            raise ModelConflictError(
                f"model {entry.name!r} is already loaded and is not what this asks for: {'; '.join(differences)}; "
                f"pass reload=True to load it again, or unload({entry.name!r}) first",
                name=entry.name,
                differences=differences,
            )

    @staticmethod
    def _differences(entry: Entry, spec: Spec, explicit: set[str]) -> builtins.list[str]:
        """What ``spec`` asks for explicitly that the loaded model does not have now, each said both ways."""
        loaded = entry.spec
        differences = []
        if "runner" in explicit and spec.runner != loaded.runner:
            differences.append(f"it runs in {runs_in(loaded.runner)}, this asks for {runs_in(spec.runner)}")
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
            has = floating_dtypes(footprint.dtypes)
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
        spec: Spec,
        pending: Pending,
        previous: Entry | None,
        *,
        pin: bool,
        keep_alive: float | None,
        on_release: ReleaseHook | None,
    ) -> Any:
        __tracebackhide__ = True  # IPython leaves nbmodels' own frames out of the user's traceback
        try:
            if previous is not None:
                report = self._release([hand_over(previous)], pending=(), request=Request())
                self._emit(Event("unloaded", name=name, report=report))
            self._emit(Event("load_started", name=name))
            spec = self._resolve_auto(name, spec)
            self._room_before_load(name, spec)

            def run() -> Entry:
                __tracebackhide__ = True  # IPython leaves nbmodels' own frames out of the user's traceback
                return self._run_loader(name, spec, pin=pin, on_release=on_release)

            entry = self._load_rescued(name, spec, run)
            del run
            entry.keep_alive = keep_alive
            entry.awaiting_use = True  # the load is not a use: the first use starts keep-alive's countdown
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

    def _run_loader(self, name: str, spec: Spec, *, pin: bool, on_release: ReleaseHook | None) -> Entry:
        """Call the loader (no lock held) and measure what it cost."""
        __tracebackhide__ = True  # IPython leaves nbmodels' own frames out of the user's traceback
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
        return Entry(
            name=name,
            model=model,
            spec=spec,
            measurement=measure(model),
            rss_delta=memory.process_rss() - rss_before,
            cuda_delta={d: cuda_after[d] - cuda_before.get(d, 0) for d in cuda_after},
            load_seconds=seconds,
            loaded_at=now,
            last_used=now,
            on_release=on_release,
            pinned=pin,
        )

    def _start_remote(self, name: str, spec: Spec, *, pin: bool, on_release: ReleaseHook | None) -> Entry:
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
        return Entry(
            name=name,
            model=remote,
            spec=spec,
            measurement=measure(remote),
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
        taken = [hand_over(entry)] if entry is not None else []
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
            taken = [hand_over(entry) for entry in self._entries.values()]
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


def _worker_ended(manager: weakref.ref[ModelManager], name: str, remote: weakref.ref[Any], info: Any) -> None:
    """A worker's exit callback (on a background thread); weak references, so it keeps nothing alive."""
    owner, proxy = manager(), remote()
    if owner is not None and proxy is not None and not info.requested:
        owner._worker_died(name, proxy, info)


def get_manager() -> ModelManager:
    """The process-wide ModelManager (same as ``ModelManager.get_instance()``)."""
    return ModelManager.get_instance()


__all__ = ["ModelManager", "UseScope", "check_name", "get_manager"]
