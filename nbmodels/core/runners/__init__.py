"""Where a model lives when it is not in the kernel: a worker process, or a Ray actor.

Inside one process some memory never comes back (the CUDA context, allocator
fragmentation, what C libraries keep) and a CUDA error poisons the process; a model
in its own process gives all of it back when the process ends, and a crash there
leaves the kernel alive. This package is that layer, standalone: it imports no
IPython, imports ray only for ``runner="ray"``, and ``import nbmodels`` starts no
process.

The interface (what the manager calls)::

    rm = start("process", "clf", "demo:mlp", kwargs={"size_mb": 64}, device="cpu")
    rm(x); rm.encode(texts); rm.generate(...)   # run in the worker; results by value
    rm.class_name, rm.footprint, rm.pid          # for ModelInfo: measured in the worker
    rm.memory()                                  # WorkerMemory: RSS, private, device bytes
    rm.add_exit_callback(on_exit)                # ExitInfo when it ends (crash or stop)
    result = rm.stop()                           # StopResult: how it ended, gone?, what came back

- :func:`start` checks the source (:mod:`.portable`: a worker rebuilds only what it
  can import) and the device before anything starts, takes a spare worker from
  :func:`spare_pool` when one is ready (else starts one, about a second), loads the
  model there and returns a :class:`RemoteModel`. A load error comes back as the
  in-kernel load's would: an ``NbModelsError`` as itself, anything else as
  ``ModelLoadError`` with the worker's exception (and traceback) as its cause.
- A call's ordinary exception (a shape error in ``forward``) is re-raised in the
  kernel as the same class with the same message, the worker's traceback as its
  ``__cause__``; the worker lives on. An error that poisons the process (a CUDA error
  other than out-of-memory) ends the worker and raises ``WorkerDiedError`` from it.
- A worker that dies (segfault, ``os._exit``, SIGKILL, the OOM killer) makes every
  waiting and later call raise ``WorkerDiedError`` naming the model and how it ended
  (exit code, signal name, the last lines of its stderr); exit callbacks run even when
  no call was in flight, so the manager can drop the entry at once.
- Arguments and results cross as described in :mod:`.transfer` (small tensors inline,
  large ones through shared memory, CUDA ones through CUDA IPC); what cannot cross is a
  ``TransferError`` naming the method and the type.
- Calls from several threads are safe; one worker serves them one at a time in arrival
  order. ``memory()`` and ``stop()`` are answered during a long call. A Ctrl-C while
  waiting interrupts the call in the worker too.
- Workers never outlive the kernel, even a SIGKILLed one (:mod:`.worker`).

Wiring it into the manager: ``load(runner=...)`` calls :func:`start` in place of the
loader (outside the lock, as any load) and stores the RemoteModel as the entry's
model, with ``rm.footprint``/``rm.class_name`` for ModelInfo and ``rm.runner``/``rm.pid``
for its new fields; it registers ``rm.add_exit_callback`` to drop the entry when the
worker dies; a release calls ``rm.stop()`` (from ``on_release`` or ``_release``) and
reports ``StopResult.freed_bytes``; ``NBModels.spare_workers`` is
``spare_pool().resize(n)``; the kernel's shutdown needs nothing more (the workers die
with it), though stopping them first reports what came back.
"""

from __future__ import annotations

import time
from typing import Any

from nbmodels.core.devices import normalize_device, normalize_dtype
from nbmodels.core.runners import protocol
from nbmodels.core.runners.pool import SparePool, spare_pool
from nbmodels.core.runners.portable import WorkerSpec, worker_spec
from nbmodels.core.runners.readings import WorkerMemory
from nbmodels.core.runners.remote import ExitInfo, RemoteAttribute, RemoteModel, StopResult
from nbmodels.errors import InvalidArgumentError, ModelLoadError, NbModelsError

RUNNERS = ("process", "ray")


def start(
    runner: str,
    name: str,
    source: Any,
    *,
    kwargs: dict[str, Any] | None = None,
    device: Any = None,
    dtype: Any = None,
    trust: bool = False,
    spare: bool = True,
    results_on_cpu: bool = False,
    address: str | None = None,
    ray_options: dict[str, Any] | None = None,
    ray_init: dict[str, Any] | None = None,
) -> RemoteModel:
    """Load ``source`` (what :func:`nbmodels.core.sources.resolve` accepts) in a worker and return its proxy.

    ``runner``: ``"process"`` (a worker process on this machine) or ``"ray"`` (a Ray
    actor on the cluster at ``address``, else ``RAY_ADDRESS``, else a local Ray started
    now with ``ray_init`` options; ``ray_options`` go to ``.options()`` of the actor,
    and a CUDA ``device`` asks for ``num_gpus=1``). ``spare``: use a ready spare
    worker when there is one. ``results_on_cpu``: move CUDA results to the CPU in the
    worker, so the kernel never opens a CUDA context.
    """
    if runner not in RUNNERS:
        raise InvalidArgumentError(f"unknown runner {runner!r}; use one of {', '.join(RUNNERS)}")
    started = time.perf_counter()
    if runner == "ray":
        from nbmodels.core.runners.ray_runner import ray_device, start_ray

        spec = worker_spec(name, source, kwargs=kwargs, device=ray_device(device),
                           dtype=normalize_dtype(dtype), trust=trust, results_on_cpu=results_on_cpu)  # fmt: skip
        return start_ray(spec, started, address=address, options=ray_options, init=ray_init)
    spec = worker_spec(name, source, kwargs=kwargs, device=normalize_device(device),
                       dtype=normalize_dtype(dtype), trust=trust, results_on_cpu=results_on_cpu)  # fmt: skip
    return _start_process(spec, started, spare=spare)


def _start_process(spec: WorkerSpec, started: float, *, spare: bool) -> RemoteModel:
    import weakref

    from nbmodels.core.runners.process import WorkerProcess

    worker: WorkerProcess | None = None
    try:  # from the moment a worker is ours until its proxy owns it, any exception kills it
        worker = spare_pool().take() if spare else None
        if worker is None:
            worker = WorkerProcess.spawn()  # kills what it started itself when interrupted
        worker.assign(spec.name)
        loaded: protocol.Loaded = worker.request(protocol.LOAD, spec, f"loading model {spec.name!r}")
        remote = RemoteModel(spec.name, worker, loaded, time.perf_counter() - started)
        weakref.finalize(remote, worker.kill)  # a proxy dropped without stop() leaves no worker behind
    except NbModelsError:
        if worker is not None:
            worker.kill()
        raise
    except Exception as exc:
        if worker is not None:
            worker.kill()
        raise ModelLoadError(
            spec.name, f"loading {spec.name!r} from {spec.text} in a worker process failed: {type(exc).__name__}: {exc}"
        ) from exc
    except BaseException:
        if worker is not None:
            worker.kill()
        raise
    return remote


__all__ = [
    "RUNNERS",
    "ExitInfo",
    "RemoteAttribute",
    "RemoteModel",
    "SparePool",
    "StopResult",
    "WorkerMemory",
    "WorkerSpec",
    "spare_pool",
    "start",
    "worker_spec",
]
