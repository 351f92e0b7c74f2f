"""Models in Ray actors: the same RemoteModel, on a Ray cluster (or a local Ray).

Imported only for ``runner="ray"``: ``import nbmodels`` never imports ray. The actor
holds a :class:`~nbmodels.core.runners.host.ModelHost`; its default concurrency group
has one thread, so calls run one at a time in order, and a "control" group answers
``memory()`` and keeps a watch call open, which fails the moment Ray sees the actor
die: that is how exit callbacks learn of a crash with no call in flight.

Arguments and results go through Ray's own serialization (its object store), which
copies tensors; on one machine the process runner's shared memory is cheaper.
Exceptions come back as Ray raises them: a ``RayTaskError`` that is also an instance
of the original class, with the actor's traceback in its message.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import stat
import threading
import time
import weakref
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError

from nbmodels.core.runners import protocol
from nbmodels.core.runners.host import ModelHost
from nbmodels.core.runners.portable import WorkerSpec
from nbmodels.core.runners.readings import WorkerMemory
from nbmodels.core.runners.remote import ExitCallback, ExitInfo, ExitWatch, RemoteModel, StopResult
from nbmodels.errors import InvalidArgumentError, ModelLoadError, NbModelsError, WorkerDiedError

log = logging.getLogger("nbmodels")

_CUDA = re.compile(r"^cuda(:\d+)?$")
_init_lock = threading.Lock()


def ray_device(device: Any) -> str | None:
    """Check a device name for a Ray actor: the GPUs are the actor's, not this machine's."""
    if device is None:
        return None
    text = str(device).strip().lower()
    if text in ("cpu", "auto"):
        return text
    if _CUDA.match(text):
        return "cuda"  # Ray gives the actor its GPU as cuda:0 (CUDA_VISIBLE_DEVICES)
    hint = " (torch calls a GPU 'cuda')" if text.startswith("gpu") else ""
    raise InvalidArgumentError(f"unknown device {device!r} for a Ray actor{hint}; use 'cpu', 'cuda' or 'auto'")


def ensure_ray(address: str | None = None, init: dict[str, Any] | None = None) -> None:
    """Connect to ``address`` (else ``RAY_ADDRESS``) or start a local Ray, once per process."""
    with _init_lock:
        if ray.is_initialized():
            return
        target = address or os.environ.get("RAY_ADDRESS") or None
        if target:
            ray.init(address=target, **(init or {}))
        else:
            _loopback_only()
            ray.init(**{"include_dashboard": False, **(init or {})})
            _owner_only_token()


RAY_TOKEN = os.path.join("~", ".ray", "auth_token")


def _owner_only_token() -> None:
    """Ray writes its cluster token with the default umask (0644): make it readable by this user only."""
    path = os.path.expanduser(RAY_TOKEN)
    try:
        info = os.lstat(path)
        if stat.S_ISREG(info.st_mode) and info.st_uid == os.getuid() and info.st_mode & 0o077:
            os.chmod(path, 0o600)
            log.info("nbmodels: made Ray's token %s readable by you only", path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("nbmodels: could not make Ray's token %s private: %s", path, exc)


def _loopback_only() -> None:
    """Make the local Ray that nbmodels starts listen on 127.0.0.1 only, not on every interface.

    A local Ray takes the machine's address for its node and listens there (GCS,
    raylet, object manager: about seven ports), reachable from the network. Ray
    keeps to loopback when it is told clusters are off (the switch it uses on
    macOS and Windows): ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` for the processes
    it starts, and the constant it read at import for this one.
    """
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    try:
        from ray._private import ray_constants
    except ImportError:  # another ray layout: say so rather than pretend
        log.warning(
            "nbmodels: cannot keep this Ray version's local cluster on 127.0.0.1; it may listen on all interfaces"
        )
        return
    ray_constants.ENABLE_RAY_CLUSTER = False


@ray.remote(concurrency_groups={"control": 2})
class ModelActor:
    """One model in one Ray actor."""

    def __init__(self) -> None:
        self.host = ModelHost()
        self.ended = threading.Event()

    def load(self, spec: WorkerSpec) -> tuple[protocol.Loaded, str, str]:
        device = spec.device
        if device in ("cuda", "auto"):
            import torch

            device = "cuda:0" if torch.cuda.is_available() else ("cpu" if device == "auto" else "cuda:0")
        loaded = self.host.load(spec, device=device)
        return loaded, ray.get_runtime_context().get_node_id(), ray.util.get_node_ip_address()

    def shutdown(self) -> None:
        """A polite stop: runs after the calls already sent, releases the model, ends the actor."""
        self.host.release()
        self.ended.set()
        ray.actor.exit_actor()

    def _guard(self, function: Any, *args: Any) -> Any:
        try:
            return function(*args)
        except Exception as exc:
            if not protocol.poisons_process(exc):
                raise
            threading.Timer(0.2, os._exit, (protocol.EXIT_POISONED,)).start()  # after the reply is sent
            return protocol.error_reply(exc)

    def call(self, path: tuple[str, ...], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return self._guard(self.host.call, path, args, kwargs)

    def attribute(self, path: tuple[str, ...]) -> Any:
        return self._guard(self.host.attribute, path)

    def measure(self) -> Any:
        return self.host.measure()

    @ray.method(concurrency_group="control")  # type: ignore[untyped-decorator]
    def memory(self) -> WorkerMemory:
        return self.host.memory()

    @ray.method(concurrency_group="control")  # type: ignore[untyped-decorator]
    def watch(self) -> None:
        self.ended.wait()


class RayBackend:
    """The kernel's side of one actor."""

    runner = "ray"

    def __init__(self, actor: Any, name: str, pid: int, node_id: str, node_ip: str) -> None:
        self._actor = actor
        self.name = name
        self.pid: int | None = pid
        self.node: str | None = node_ip
        self.node_id = node_id
        self._create_time = _local_create_time(pid) if node_id == _driver_node() else None
        self._watch = ExitWatch()
        self._stopping = False
        self._watch_ref = actor.watch.remote()
        threading.Thread(target=self._wait_death, name="nbmodels-ray-watch", daemon=True).start()

    def _wait_death(self) -> None:
        try:
            ray.get(self._watch_ref)
            how = "ended"
            self._confirm_dead(time.monotonic() + 10.0)
        except RayActorError as exc:
            how = _first_line(exc)
        except Exception as exc:  # Ray shut down under us
            how = f"was lost ({type(exc).__name__})"
        if self._stopping:
            how = "was stopped"
        info = ExitInfo(self.name, f"(a Ray actor on {self.node}) {how}", self._stopping, pid=self.pid)
        self._watch.set(info)
        if not info.requested:
            log.warning("%s", info.error())

    def exit_info(self) -> ExitInfo | None:
        return self._watch.info

    def add_exit_callback(self, callback: ExitCallback) -> None:
        self._watch.add(callback)

    def _died(self, cause: BaseException) -> WorkerDiedError:
        self._watch.ended.wait(5.0)
        info = self._watch.info
        if info is not None:
            return info.error()
        return WorkerDiedError(self.name, f"(a Ray actor) {_first_line(cause)}", pid=self.pid)

    def request(self, op: str, payload: Any, label: str) -> Any:
        if self._watch.info is not None:
            raise self._watch.info.error()
        if op == protocol.CALL:
            path, args, kwargs = payload
            ref = self._actor.call.remote(path, args, kwargs)
        elif op == protocol.ATTRIBUTE:
            ref = self._actor.attribute.remote(payload)
        elif op == protocol.MEASURE:
            ref = self._actor.measure.remote()
        else:
            raise ValueError(f"unknown request {op!r}")
        try:
            result = ray.get(ref)
        except RayActorError as exc:
            raise self._died(exc) from exc
        if isinstance(result, protocol.ErrorReply):
            error = protocol.rebuild_error(result, f"the Ray actor of model {self.name!r}, pid {self.pid}")
            raise self._died(error) from error
        return result

    def memory(self, timeout: float = 5.0) -> WorkerMemory:
        if self._watch.info is None:
            try:
                reading: WorkerMemory = ray.get(self._actor.memory.remote(), timeout=timeout)
                return reading
            except (RayActorError, GetTimeoutError):
                pass
        return WorkerMemory(self.pid, None, None)

    def _confirm_dead(self, deadline: float) -> bool:
        """Wait until Ray itself reports the actor dead (a call to it fails with RayActorError)."""
        while time.monotonic() < deadline:
            try:
                ray.get(self._actor.memory.remote(), timeout=max(min(deadline - time.monotonic(), 0.5), 0.01))
            except RayActorError:
                return True
            except GetTimeoutError:
                continue
            time.sleep(0.01)
        return False

    def gone(self) -> bool:
        if self._watch.info is None:
            return False
        if self._create_time is None:  # on another node: Ray's word that the actor is dead is what we have
            return True
        return _local_create_time(self.pid) != self._create_time

    def stop(self, timeout: float = 2.0) -> StopResult:
        """A shutdown call (pending calls finish first), ``ray.kill`` after ``timeout``; wait until Ray says dead."""
        started = time.perf_counter()
        info = self._watch.info
        if info is not None:
            return StopResult(self.name, self.runner, self.pid, "dead", f"had ended: {info.how}", self.gone(),
                              time.perf_counter() - started)  # fmt: skip
        before = self.memory(timeout=min(timeout, 1.0))
        self._stopping = True
        self._actor.shutdown.remote()
        ended = "stopped"
        if not self._watch.ended.wait(max(timeout - (time.perf_counter() - started), 0.05)):
            ray.kill(self._actor, no_restart=True)
            ended = "killed"
            self._watch.ended.wait(10.0)
        deadline = time.monotonic() + 5.0
        while not self.gone() and time.monotonic() < deadline:
            time.sleep(0.01)
        how = (self._watch.info.how if self._watch.info else "did not end") + (
            "" if ended == "stopped" else " (killed)"
        )
        return StopResult(self.name, self.runner, self.pid, ended, how, self.gone(), time.perf_counter() - started,
                          before)  # fmt: skip


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"died: {text[0]}" if text else "died"


def _driver_node() -> str:
    return str(ray.get_runtime_context().get_node_id())


def _local_create_time(pid: int | None) -> float | None:
    import psutil

    try:
        return float(psutil.Process(pid).create_time()) if pid else None
    except (psutil.Error, OSError):
        return None


def start_ray(
    spec: WorkerSpec,
    started: float,
    *,
    address: str | None,
    options: dict[str, Any] | None,
    init: dict[str, Any] | None,
) -> RemoteModel:
    """Place the model of ``spec`` in a new actor and wait until it is loaded there."""
    ensure_ray(address, init)
    actor_options: dict[str, Any] = {"num_gpus": 1} if spec.device == "cuda" else {}
    actor_options.update(options or {})
    actor = ModelActor.options(**actor_options).remote()  # type: ignore[attr-defined]
    try:
        loaded, node_id, node_ip = ray.get(actor.load.remote(spec))
    except RayActorError as exc:
        raise WorkerDiedError(spec.name, f"(a Ray actor) {_first_line(exc)} while loading") from exc
    except NbModelsError:
        ray.kill(actor, no_restart=True)
        raise
    except Exception as exc:
        ray.kill(actor, no_restart=True)
        raise ModelLoadError(
            spec.name, f"loading {spec.name!r} from {spec.text} in a Ray actor failed: {type(exc).__name__}: {exc}"
        ) from exc
    backend = RayBackend(actor, spec.name, loaded.pid, node_id, node_ip)
    remote = RemoteModel(spec.name, backend, loaded, time.perf_counter() - started)
    weakref.finalize(remote, _kill_quietly, actor)  # a proxy dropped without stop() leaves no actor behind
    return remote


def _kill_quietly(actor: Any) -> None:
    if ray.is_initialized():
        with contextlib.suppress(Exception):
            ray.kill(actor, no_restart=True)
