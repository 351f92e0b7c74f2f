"""The kernel's side of an isolated model: a proxy that behaves like the model.

``rm(x)``, ``rm.encode(texts)``, ``rm.generate(...)`` run in the worker; methods and
submodules stay there (``rm.encoder`` is a proxy, ``rm.encoder(x)`` runs the
submodule), other attributes are read by value (``rm.training``, ``rm.config``). A
call that returns the model itself (``rm.eval()``, ``rm.to("cuda")``) returns the
proxy. :meth:`RemoteModel.call` and :meth:`RemoteModel.attribute` reach a model method
whose name the proxy uses itself (``stop``, ``memory``, ...).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from nbmodels.core.memory import Footprint, format_bytes
from nbmodels.core.runners import protocol
from nbmodels.core.runners.readings import WorkerMemory
from nbmodels.errors import WorkerDiedError

ExitCallback = Callable[["ExitInfo"], None]


@dataclass(frozen=True)
class ExitInfo:
    """How a worker ended: on request (``requested``) or not, in words and as raw facts."""

    name: str
    how: str
    requested: bool
    exit_code: int | None = None
    signal: str | None = None
    pid: int | None = None
    detail: str = ""

    def error(self) -> WorkerDiedError:
        return WorkerDiedError(
            self.name, self.how, pid=self.pid, exit_code=self.exit_code, signal=self.signal, detail=self.detail
        )


@dataclass(frozen=True)
class StopResult:
    """What stopping a worker did and gave back.

    ``ended``: ``"stopped"`` (it exited when asked), ``"killed"`` (it did not within
    the timeout, or Ray killed the actor), or ``"dead"`` (it had ended before).
    ``gone`` is checked, not assumed: the process no longer exists (for Ray: the actor
    is dead and, when it ran on this machine, its process too). ``before`` is the last
    reading of the worker; it is what came back when ``gone`` is true.
    """

    name: str
    runner: str
    pid: int | None
    ended: str
    how: str
    gone: bool
    seconds: float
    before: WorkerMemory | None = None
    exit_code: int | None = None
    signal: str | None = None

    @property
    def freed_bytes(self) -> dict[str, int]:
        """Bytes given back per device (``"cpu"`` is the worker's private memory), only when it is gone."""
        if not self.gone or self.before is None:
            return {}
        freed = dict(self.before.devices)
        if self.before.private is not None:
            freed["cpu"] = self.before.private
        return freed

    def lines(self) -> list[str]:
        where = f"worker pid {self.pid}" if self.pid is not None else "worker"
        lines = [f"{self.name}: {where} {self.how} in {self.seconds * 1e3:.0f} ms"]
        if self.before is not None:
            lines.append(f"  before: {self.before.describe()}")
        lines.append(
            "  gone: process ended, its memory is back" if self.gone else "  NOT gone: the process still exists"
        )
        return lines

    def __str__(self) -> str:
        return "\n".join(self.lines())


class Backend(Protocol):
    """What a runner provides to :class:`RemoteModel` (the process and Ray runners implement it)."""

    runner: str
    pid: int | None
    node: str | None

    def request(self, op: str, payload: Any, label: str) -> Any: ...

    def memory(self) -> WorkerMemory: ...

    def stop(self, timeout: float) -> StopResult: ...

    def exit_info(self) -> ExitInfo | None: ...

    def add_exit_callback(self, callback: ExitCallback) -> None: ...


_LOCAL_ONLY_PREFIXES = ("__", "_repr_", "_ipython_")


class RemoteModel:
    """A model that lives in a worker process or a Ray actor; use it like the model.

    Safe from several threads: requests are sent whole and the worker serves them
    one at a time, in the order they arrive.
    """

    def __init__(self, name: str, backend: Backend, loaded: protocol.Loaded, start_seconds: float) -> None:
        self._name = name
        self._backend = backend
        self._class_name = loaded.class_name
        self._footprint = loaded.footprint
        self._load_seconds = loaded.load_seconds
        self._start_seconds = start_seconds
        self._callables: set[tuple[str, ...]] = set()
        self._lock = threading.Lock()

    # --- what the manager reads ------------------------------------------------

    @property
    def name(self) -> str:
        return self._name

    @property
    def runner(self) -> str:
        """``"process"`` or ``"ray"``."""
        return self._backend.runner

    @property
    def pid(self) -> int | None:
        """The worker's process id (for Ray: of the actor, on its node)."""
        return self._backend.pid

    @property
    def node(self) -> str | None:
        """The Ray node the actor runs on (None for a local worker process)."""
        return self._backend.node

    @property
    def class_name(self) -> str:
        """The model's class name in the worker (``type(model).__name__`` there)."""
        return self._class_name

    @property
    def footprint(self) -> Footprint:
        """Bytes per device, parameters and dtypes, measured in the worker (``.to()``, :meth:`measure` refresh it)."""
        return self._footprint

    @property
    def load_seconds(self) -> float:
        """Time the loader took in the worker."""
        return self._load_seconds

    @property
    def start_seconds(self) -> float:
        """Time from :func:`start` to a loaded model, process start included (small with a spare worker)."""
        return self._start_seconds

    @property
    def alive(self) -> bool:
        return self._backend.exit_info() is None

    @property
    def exit_info(self) -> ExitInfo | None:
        """How the worker ended, or None while it lives."""
        return self._backend.exit_info()

    def measure(self) -> Footprint:
        """Measure the model again in the worker (after something changed it)."""
        self._footprint = self._backend.request(protocol.MEASURE, None, "measure")
        return self._footprint

    def memory(self) -> WorkerMemory:
        """The worker's RSS, private memory and device memory now (answered even during a long call)."""
        return self._backend.memory()

    def stop(self, timeout: float = 2.0) -> StopResult:
        """End the worker: a polite stop, then a kill after ``timeout`` seconds; checks the process is gone."""
        return self._backend.stop(timeout)

    def add_exit_callback(self, callback: ExitCallback) -> None:
        """Call ``callback(ExitInfo)`` once when the worker ends, also when it crashes with no call in flight.

        It runs on a background thread; if the worker has ended already it runs at once.
        """
        self._backend.add_exit_callback(callback)

    # --- the proxy ----------------------------------------------------------------

    def call(self, method: str, /, *args: Any, **kwargs: Any) -> Any:
        """Call ``model.<method>(*args, **kwargs)`` in the worker (``method`` may be dotted: ``"encoder.forward"``)."""
        return self._invoke(tuple(method.split(".")), args, kwargs)

    def attribute(self, name: str) -> Any:
        """Read ``model.<name>`` (may be dotted): by value, or a proxy for a method or submodule."""
        return self._resolve(tuple(name.split(".")))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._invoke((), args, kwargs)

    def __getattr__(self, name: str) -> Any:
        if name.startswith(_LOCAL_ONLY_PREFIXES) or name in ("_name", "_backend", "_callables", "_lock"):
            raise AttributeError(name)  # protocols probed by pickle, copy and IPython's display: never remote
        return self._resolve((name,))

    def __reduce__(self) -> Any:
        raise TypeError(f"the RemoteModel of {self._name!r} cannot be pickled; its model lives in a worker process")

    def __repr__(self) -> str:
        exit = self._backend.exit_info()
        where = {"process": f"worker pid {self.pid}", "ray": f"Ray actor pid {self.pid} on node {self.node}"}
        state = f"{where.get(self.runner, self.runner)}" if exit is None else f"dead: {exit.how}"
        size = format_bytes(sum(self._footprint.bytes_by_device.values()) or None)
        return f"<RemoteModel {self._name!r}: {self._class_name}, {size}, {state}>"

    def _label(self, path: tuple[str, ...]) -> str:
        return f"{'.'.join(path) or '__call__'}() of model {self._name!r}"

    def _resolve(self, path: tuple[str, ...]) -> Any:
        if path in self._callables:
            return RemoteAttribute(self, path)
        value = self._backend.request(protocol.ATTRIBUTE, path, f"{'.'.join(path)} of model {self._name!r}")
        if isinstance(value, protocol.IsCallable):
            with self._lock:
                self._callables.add(path)
            return RemoteAttribute(self, path)
        return value

    def _invoke(self, path: tuple[str, ...], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        result = self._backend.request(protocol.CALL, (path, args, kwargs), self._label(path))
        if isinstance(result, protocol.SelfRef):
            self._footprint = result.footprint
            return self if not result.path else RemoteAttribute(self, result.path)
        return result


class RemoteAttribute:
    """A method or submodule of a remote model: call it, or go deeper (``rm.encoder.layers``)."""

    __slots__ = ("_model", "_path")

    def __init__(self, model: RemoteModel, path: tuple[str, ...]) -> None:
        self._model = model
        self._path = path

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._model._invoke(self._path, args, kwargs)

    def __getattr__(self, name: str) -> Any:
        if name.startswith(_LOCAL_ONLY_PREFIXES):
            raise AttributeError(name)
        return self._model._resolve((*self._path, name))

    def __repr__(self) -> str:
        return f"<remote {'.'.join(self._path)} of model {self._model.name!r}>"


@dataclass
class ExitWatch:
    """Exit bookkeeping shared by both runners: the first exit wins, callbacks run once."""

    info: ExitInfo | None = None
    callbacks: list[ExitCallback] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    ended: threading.Event = field(default_factory=threading.Event)

    def add(self, callback: ExitCallback) -> None:
        with self.lock:
            info = self.info
            if info is None:
                self.callbacks.append(callback)
        if info is not None:
            _run_callback(callback, info)

    def set(self, info: ExitInfo) -> bool:
        """Record the exit; False if one was recorded before."""
        with self.lock:
            if self.info is not None:
                return False
            self.info = info
            callbacks, self.callbacks = self.callbacks, []
        self.ended.set()
        for callback in callbacks:
            _run_callback(callback, info)
        return True


def _run_callback(callback: ExitCallback, info: ExitInfo) -> None:
    import logging

    try:
        callback(info)
    except Exception:
        logging.getLogger("nbmodels").exception("an exit callback of model %s failed", info.name)


def elapsed(started: float) -> float:
    return time.perf_counter() - started
