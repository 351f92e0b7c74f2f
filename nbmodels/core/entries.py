"""The manager's records: what a load asks for, a loaded model's bookkeeping, a load in flight.

Internal to :mod:`nbmodels.core`: callers only ever see :class:`~nbmodels.core.reports.ModelInfo`.
Here too are the cheap checks the manager asks of an entry: whether something
else holds its model (so releasing it would free nothing) and what of a
released model's memory is still alive.
"""

from __future__ import annotations

import functools
import logging
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from nbmodels.core import isolation, memory
from nbmodels.core.devices import normalize_device, parse_device_name
from nbmodels.core.freshness import Measurement
from nbmodels.core.holders.watch import Watch
from nbmodels.core.policy.keepalive import deadline
from nbmodels.core.release import Released
from nbmodels.core.reports import ModelInfo
from nbmodels.core.sources import Source
from nbmodels.core.storage_origin import MAPPED
from nbmodels.errors import InvalidArgumentError

log = logging.getLogger("nbmodels")

# Keywords of load() and register() that are the manager's settings, never the loader's.
SETTINGS = ("device", "dtype", "pin", "trust", "runner", "keep_alive")
ReleaseHook = Callable[[Any], None]


@dataclass(frozen=True)
class Spec:
    """What a load asks for; compared against what a loaded name was loaded with."""

    source: Source
    kwargs: dict[str, Any]
    device: str | None
    dtype: Any
    trust: bool
    runner: str = isolation.KERNEL  # where the model runs: in the kernel, a worker process, a Ray actor


@dataclass
class Entry:
    """A loaded model and its bookkeeping. Internal: callers only ever see ModelInfo."""

    name: str
    model: Any
    spec: Spec
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
    awaiting_use: bool = False  # loaded, not used since: keep-alive 0 waits for the end of the first use
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
        """When keep-alive unloads it if it stays idle (None: never, or not while it is in use).

        With keep-alive 0 the load alone is not the use that starts the countdown:
        ``m = %load_model x ... --keep-alive 0`` then ``m(x)`` in the next cell must work.
        """
        if self.awaiting_use and self.keep_alive == 0:
            return None
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
            self.measurement = measure(model, again=True)
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
                mapped_bytes=fp.mapped,
                borrowed_bytes=fp.borrowed,
                parts=fp.parts,
                unmeasured=fp.unmeasured,
            )
        return self._info


@dataclass
class Pending:
    """A load in flight: waiters block on ``done`` and then re-check the entries."""

    spec: Spec
    owner: int = field(default_factory=threading.get_ident)
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None


@dataclass(frozen=True)
class Registration:
    source: Source
    defaults: dict[str, Any]


MAX_NAME_LENGTH = 200


def check_name(name: Any) -> str:
    """``name`` if it can name a model; InvalidArgumentError (empty, spaces, not a string) otherwise."""
    if not isinstance(name, str):
        raise InvalidArgumentError(f"a model name must be a string, not {type(name).__name__}")
    if not name.strip():
        raise InvalidArgumentError("the model name is empty; give the model a name such as 'encoder'")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidArgumentError(f"a model name of {len(name)} characters; use at most {MAX_NAME_LENGTH}")
    if name != name.strip() or any(ch.isspace() for ch in name):
        raise InvalidArgumentError(f"model name {name!r} contains spaces; use a name without spaces")
    if not name.isprintable():  # ESC, NUL, bidi overrides: a name is printed in tables, terminals, other kernels
        raise InvalidArgumentError(
            f"model name {name!r} contains control or formatting characters; use printable characters"
        )
    return name


def hand_over(entry: Entry) -> Released:
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


def held_elsewhere(entry: Entry) -> bool:
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


def tensors_held_elsewhere(model: Any) -> bool:
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


def canonical_device(device: Any) -> str | None:
    """A device checked and written canonically; ``"auto"`` stays itself: the load decides (see _resolve_auto)."""
    if device is not None and parse_device_name(device)[0] == "auto":
        return "auto"
    return normalize_device(device)


def live_bytes(watch: Watch) -> dict[str, int]:
    """Bytes per device of a released model's storages that are still alive (pages mapped from files left out)."""
    live: dict[str, int] = {}
    for record in watch.live_storages():
        if record.origin.kind != MAPPED:
            live[record.device] = live.get(record.device, 0) + record.nbytes
    return live


def floating_dtypes(dtypes: tuple[str, ...]) -> list[str]:
    return [d for d in dtypes if d.startswith(("float", "bfloat"))]


def measure(model: Any, *, again: bool = False) -> Measurement | isolation.RemoteMeasurement:
    """The model's footprint: walked here, or (for a model in a worker) measured there."""
    if isolation.is_remote(model):
        if again:
            isolation.measure_again(model)
        return isolation.RemoteMeasurement(model)
    return Measurement(model)


def runs_in(runner: str) -> str:
    return {"kernel": "the kernel", "process": "a worker process", "ray": "a Ray actor"}.get(runner, runner)
