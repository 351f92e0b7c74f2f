"""Where a loaded model lives: in the kernel, in a worker process, or in a Ray actor.

The manager keeps one entry per name wherever the model runs; this module is what
it needs to know about the places other than the kernel (see
:mod:`nbmodels.core.runners` for the runners themselves):

- :func:`check_runner` and :func:`check_portable`: a bad runner, or a source a
  worker cannot rebuild (a lambda, a function defined in the notebook), is refused
  before the manager changes anything;
- :func:`start`: load the model in its worker; :class:`RemoteMeasurement`: its
  footprint, measured in the worker (the kernel holds none of its tensors);
- :func:`stop_all`: stop the workers of released models in parallel, so a cleanup
  of several stays within the shutdown hook's time, and say what came back.

Nothing here imports torch or ray; a worker starts only when a model asks for one.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from typing import Any

from nbmodels.core.memory import Footprint
from nbmodels.errors import InvalidArgumentError

_HOST = r"(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|\[[0-9A-Fa-f:.]{2,45}\])"
_RAY_ADDRESS = re.compile(rf"^(?:ray://)?{_HOST}:(\d{{1,5}})$")

KERNEL = "kernel"
RUNNERS = (KERNEL, "process", "ray")
STOP_TIMEOUT = 2.0  # a polite stop, then a kill: the "within 2 s"


def check_ray_address(address: Any) -> str:
    """``address`` when it can name a Ray cluster ('' for none): ``auto``, ``ray://host:port`` or ``host:port``.

    Checked when it is set, not at the first Ray load. A remote address runs the
    model's source, keywords and ``sys.path`` entries on that cluster.
    """
    if not isinstance(address, str):
        raise InvalidArgumentError(f"ray_address must be text, not {type(address).__name__}")
    text = address.strip()
    if text in ("", "auto"):
        return text
    match = _RAY_ADDRESS.match(text)
    if match is None or not 0 < int(match.group(1)) < 65536:
        shown = text if len(text) <= 80 else text[:79] + "…"
        raise InvalidArgumentError(
            f"ray_address {shown!r} is not 'auto', 'ray://host:port' or 'host:port' (e.g. 'ray://10.0.0.5:10001')"
        )
    return text


def check_runner(runner: Any) -> str:
    """``"kernel"`` (the default), ``"process"`` or ``"ray"``; a clear error otherwise."""
    if runner is None:
        return KERNEL
    if not isinstance(runner, str) or runner.strip().lower() not in RUNNERS:
        raise InvalidArgumentError(
            f"unknown runner {runner!r}; use 'kernel' (in this process), 'process' (a worker process) or 'ray'"
        )
    return runner.strip().lower()


def is_remote(model: Any) -> bool:
    """True for the proxy of a model that runs in a worker (tested on the type: a proxy forwards attributes)."""
    global _remote_type
    if _remote_type is None:  # imported on first use: the runners import this module
        from nbmodels.core.runners.remote import RemoteModel

        _remote_type = RemoteModel
    return type(model) is _remote_type


_remote_type: type | None = None


def check_portable(name: str, origin: Any, *, kwargs: dict[str, Any], trust: bool) -> None:
    """Raise the runner layer's SourceError / TransferError if a worker could not rebuild this load."""
    from nbmodels.core.runners.portable import worker_spec

    worker_spec(name, origin, kwargs=kwargs, trust=trust)


def start(
    runner: str,
    name: str,
    origin: Any,
    *,
    kwargs: dict[str, Any],
    device: str | None,
    dtype: Any,
    trust: bool,
    ray_address: str | None = None,
) -> Any:
    """Load the model in a worker of ``runner`` and return its proxy (a RemoteModel)."""
    from nbmodels.core import runners

    return runners.start(
        runner, name, origin, kwargs=kwargs, device=device, dtype=dtype, trust=trust, address=ray_address
    )


class RemoteMeasurement:
    """The footprint of a model that lives in a worker: measured there, at load and after each move."""

    __slots__ = ("_remote",)

    def __init__(self, remote: Any) -> None:
        self._remote = remote

    @property
    def footprint(self) -> Footprint:
        footprint: Footprint = self._remote.footprint
        return footprint

    def is_current(self, model: Any) -> bool:
        return True  # the worker re-measures after .to() and friends; info(exact) asks it again


def measure_again(remote: Any) -> None:
    """Ask the worker to measure its model again (a round trip)."""
    remote.measure()


def stop_all(remotes: Sequence[tuple[str, Any]], *, timeout: float = STOP_TIMEOUT) -> dict[str, Any]:
    """Stop each worker (in parallel threads); returns its StopResult by name, or the error text."""
    results: dict[str, Any] = {}

    def stop(name: str, remote: Any) -> None:
        try:
            results[name] = remote.stop(timeout=timeout)
        except Exception as exc:  # a worker that cannot be stopped is reported, and the others go on
            results[name] = f"{type(exc).__name__}: {exc}"

    threads = [
        threading.Thread(target=stop, args=(name, remote), name=f"nbmodels-stop-{name}", daemon=True)
        for name, remote in remotes
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout + 3.0)
    return results


__all__ = [
    "KERNEL",
    "RUNNERS",
    "RemoteMeasurement",
    "check_portable",
    "check_ray_address",
    "check_runner",
    "is_remote",
    "measure_again",
    "start",
    "stop_all",
]
