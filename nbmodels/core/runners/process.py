"""Worker processes on this machine: start, talk, watch, stop, and never leave one behind.

Each worker is a fresh interpreter (``python -m nbmodels.core.runners.worker``)
started from one long-lived launcher thread: Linux's parent-death signal fires when
the *thread* that started a child ends, so a worker started from a short-lived thread
(a panel's load, the spare pool's refill) would otherwise die with that thread. The
worker's stdout and stderr are forwarded to the kernel's, and the last lines of its
stderr are kept for the error that reports its death (a segfault's stack, thanks to
faulthandler in the worker).
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import itertools
import logging
import multiprocessing
import multiprocessing.connection
import os
import pickle
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

import psutil

from nbmodels.core.runners import protocol, transfer
from nbmodels.core.runners.readings import WorkerMemory, process_memory
from nbmodels.core.runners.remote import ExitCallback, ExitInfo, ExitWatch, StopResult
from nbmodels.errors import TransferError, WorkerDiedError

log = logging.getLogger("nbmodels")

START_TIMEOUT = 120.0
_DIED = -1
_TAIL_LINES = 25

# Called with the name of each step of a worker's start (tests raise KeyboardInterrupt there).
STEPS = ("pipe", "launch", "launched", "constructed", "authkey", "ready", "reader")
step_hook: Callable[[str], None] | None = None


def _step(name: str) -> None:
    hook = step_hook
    if hook is not None:
        hook(name)


def _end_unwanted(process: subprocess.Popen[bytes]) -> None:
    """Kill and reap a worker nobody will own (its start was interrupted), and close its pipes."""
    with contextlib.suppress(OSError):
        process.kill()
    with contextlib.suppress(Exception):
        process.wait(timeout=10)
    for stream in (process.stdout, process.stderr):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()


def _end_if_launched(launched: concurrent.futures.Future[subprocess.Popen[bytes]]) -> None:
    if not launched.cancelled() and launched.exception() is None:
        _end_unwanted(launched.result())


class _Launcher:
    """Runs ``subprocess.Popen`` on one daemon thread that lives as long as the process."""

    def __init__(self) -> None:
        self._requests: queue.SimpleQueue[_Launch] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def popen(self, command: list[str], pass_fds: tuple[int, ...]) -> subprocess.Popen[bytes]:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name="nbmodels-launcher", daemon=True)
                self._thread.start()
        launch = _Launch(command, pass_fds)
        self._requests.put(launch)
        try:
            _step("launch")
            return launch.result.result()
        except BaseException:  # interrupted while the launcher starts it: it must not outlive this
            launch.result.add_done_callback(_end_if_launched)
            raise

    def _serve(self) -> None:
        while True:
            launch = self._requests.get()
            try:
                process = subprocess.Popen(
                    launch.command,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    pass_fds=launch.pass_fds,
                    start_new_session=True,  # Ctrl-C / Jupyter's interrupt reach the kernel only
                    env={**os.environ, "PYTHONUNBUFFERED": "1"},
                )
            except BaseException as exc:
                launch.result.set_exception(exc)
            else:
                launch.result.set_result(process)


@dataclass
class _Launch:
    command: list[str]
    pass_fds: tuple[int, ...]
    result: concurrent.futures.Future[subprocess.Popen[bytes]] = field(default_factory=concurrent.futures.Future)


_launcher = _Launcher()


@dataclass
class _Waiter:
    event: threading.Event = field(default_factory=threading.Event)
    status: int = _DIED
    body: bytes = b""

    def deliver(self, status: int, body: bytes) -> None:
        self.status, self.body = status, body
        self.event.set()


def _forward(stream: IO[bytes], target: str, tail: collections.deque[str] | None) -> None:
    """Copy a worker's output line by line to the kernel's ``sys.stdout``/``sys.stderr``."""
    for line in iter(stream.readline, b""):
        text = line.decode(errors="replace")
        if tail is not None:
            tail.append(text)
        try:
            out = getattr(sys, target)
            out.write(text)
            out.flush()
        except Exception:
            pass
    stream.close()


class WorkerProcess:
    """One started worker process (a spare one until :meth:`assign` gives it a model's name)."""

    runner = "process"
    node: str | None = None

    def __init__(self, process: subprocess.Popen[bytes], conn: multiprocessing.connection.Connection) -> None:
        self._process = process
        self._conn = conn
        self.pid: int | None = process.pid
        self.name = "(spare worker)"
        self.started_at = time.time()
        self._create_time = _create_time(process.pid)
        self._send_lock = threading.Lock()
        self._waiters: dict[int, _Waiter] = {}
        self._waiters_lock = threading.Lock()
        self._ids = itertools.count(1)
        self._watch = ExitWatch()
        self._stopping = False
        self._stop_lock = threading.Lock()
        self._fatal = ""
        self._tail: collections.deque[str] = collections.deque(maxlen=_TAIL_LINES)
        assert process.stdout is not None and process.stderr is not None
        self._output = [
            threading.Thread(target=_forward, args=(process.stdout, "stdout", None), daemon=True),
            threading.Thread(target=_forward, args=(process.stderr, "stderr", self._tail), daemon=True),
        ]
        for thread in self._output:
            thread.start()
        self._reader: threading.Thread | None = None

    # --- starting -------------------------------------------------------------------

    @classmethod
    def spawn(cls, timeout: float = START_TIMEOUT) -> WorkerProcess:
        """Start a worker and wait until it has imported torch and is ready to load.

        Any exception on the way, KeyboardInterrupt included, kills and reaps the
        worker and closes its socket before it propagates, so neither an orphan
        process nor a traceback that holds its socket is left behind.
        """
        ours, theirs = multiprocessing.Pipe(duplex=True)
        process: subprocess.Popen[bytes] | None = None
        worker: WorkerProcess | None = None
        try:
            _step("pipe")
            try:
                process = _launcher.popen(
                    [sys.executable, "-m", "nbmodels.core.runners.worker", str(theirs.fileno()), str(os.getpid())],
                    pass_fds=(theirs.fileno(),),
                )
            finally:
                theirs.close()
            _step("launched")
            worker = cls(process, ours)
            _step("constructed")
            ours.send_bytes(bytes(multiprocessing.current_process().authkey))
            _step("authkey")
            if not ours.poll(timeout):
                raise TimeoutError(f"a worker process did not start within {timeout:.0f} s")
            pickle.loads(ours.recv_bytes())
            pickle.loads(ours.recv_bytes())
            _step("ready")
            worker._reader = threading.Thread(target=worker._read, name="nbmodels-worker-reader", daemon=True)
            worker._reader.start()
            _step("reader")
        except (EOFError, OSError, TimeoutError) as exc:
            if worker is None:
                cls._abandon(process, None, ours, theirs)
                raise
            worker.kill()
            info = worker._wait_exit()
            raise WorkerDiedError(
                "(starting)", f"did not start: {info.how}", pid=worker.pid, detail=info.detail
            ) from exc
        except BaseException:
            cls._abandon(process, worker, ours, theirs)
            raise
        return worker

    @staticmethod
    def _abandon(
        process: subprocess.Popen[bytes] | None,
        worker: WorkerProcess | None,
        *conns: multiprocessing.connection.Connection,
    ) -> None:
        """An interrupted start: kill and reap the process, close the socket, so nothing outlives the exception."""
        if worker is not None:
            worker.kill()
            reader = worker._reader
            if reader is not None and reader.is_alive():
                reader.join(timeout=10.0)  # it sees EOF, reaps the process and closes the socket itself
            else:
                worker._wait_exit()
        elif process is not None:
            _end_unwanted(process)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.close()

    def assign(self, name: str) -> None:
        self.name = name

    # --- requests -------------------------------------------------------------------

    def exit_info(self) -> ExitInfo | None:
        return self._watch.info

    def add_exit_callback(self, callback: ExitCallback) -> None:
        self._watch.add(callback)

    def _send(self, op: str, body: bytes) -> tuple[int, _Waiter]:
        waiter = _Waiter()
        with self._waiters_lock:
            call_id = next(self._ids)
            self._waiters[call_id] = waiter
        if self._watch.info is not None:  # it died while we registered: the reader will not answer
            waiter.deliver(_DIED, b"")
            return call_id, waiter
        try:
            with self._send_lock:
                self._conn.send_bytes(pickle.dumps((call_id, op)))
                self._conn.send_bytes(body)
        except (OSError, ValueError):
            self._watch.ended.wait(5.0)
            waiter.deliver(_DIED, b"")
        return call_id, waiter

    def request(self, op: str, payload: Any, label: str) -> Any:
        """Send one request, wait for its reply and return the value (or raise what the worker raised)."""
        dead = self._watch.info
        if dead is not None:
            raise dead.error()
        try:
            body = transfer.dumps(payload)
        except transfer.NotTransferable as exc:
            what = _argument_words(exc.what) if op == protocol.CALL else exc.what
            raise TransferError(f"cannot send {what} of {label} to its worker: {exc.why}") from exc
        call_id, waiter = self._send(op, body)
        try:
            waiter.event.wait()
        except KeyboardInterrupt:
            with self._waiters_lock:
                self._waiters.pop(call_id, None)
            self._control(protocol.INTERRUPT, call_id, wait=None)
            raise
        return self._reply(waiter, label)

    def _reply(self, waiter: _Waiter, label: str) -> Any:
        if waiter.status == _DIED:
            self._watch.ended.wait(5.0)
            info = self._watch.info
            raise (info.error() if info is not None else WorkerDiedError(self.name, "stopped answering", pid=self.pid))
        if waiter.status == protocol.OK:
            try:
                return transfer.loads(waiter.body)
            except Exception as exc:
                if self._watch.info is not None:
                    raise self._watch.info.error() from exc
                raise TransferError(f"the result of {label} cannot be rebuilt in the kernel: {exc}") from exc
        if waiter.status == protocol.TRANSFER:
            failure: protocol.TransferFailure = pickle.loads(waiter.body)
            raise TransferError(
                f"{label} returned {failure.what}, which cannot cross from the worker: {failure.why}; "
                "return tensors, numbers, strings or other picklable objects"
            )
        reply: protocol.ErrorReply = pickle.loads(waiter.body)
        error = protocol.rebuild_error(reply, f"the worker of model {self.name!r}, pid {self.pid}")
        if reply.fatal:
            self._fatal = f"{reply.type_name}: {reply.message}"
            self._watch.ended.wait(5.0)
            info = self._watch.info
            died = info.error() if info is not None else WorkerDiedError(self.name, "is ending", pid=self.pid)
            raise died from error
        raise error

    def _control(self, op: str, payload: Any, wait: float | None) -> Any:
        """A control request (answered by the worker's receiving thread); ``wait`` None: do not wait."""
        if self._watch.info is not None:
            raise self._watch.info.error()
        call_id, waiter = self._send(op, pickle.dumps(payload))
        if wait is None:
            with self._waiters_lock:
                self._waiters.pop(call_id, None)
            return None
        if not waiter.event.wait(wait):
            with self._waiters_lock:
                self._waiters.pop(call_id, None)
            raise TimeoutError(f"the worker of {self.name!r} did not answer {op} within {wait} s")
        return self._reply(waiter, op)

    def _read(self) -> None:
        """The reader thread: hand each reply to its waiter; on EOF, record how the worker ended."""
        while True:
            try:
                call_id, status = pickle.loads(self._conn.recv_bytes())
                body = self._conn.recv_bytes()
            except (EOFError, OSError):
                break
            with self._waiters_lock:
                waiter = self._waiters.pop(call_id, None)
            if waiter is not None:
                waiter.deliver(status, body)
        info = self._wait_exit()
        with self._waiters_lock:
            waiters, self._waiters = list(self._waiters.values()), {}
        for waiter in waiters:
            waiter.deliver(_DIED, b"")
        if not info.requested:
            log.warning("%s", info.error())

    def _wait_exit(self) -> ExitInfo:
        try:
            returncode = self._process.wait(timeout=5.0)
        except subprocess.TimeoutExpired:  # its socket closed but it lives on: end it
            self._process.kill()
            returncode = self._process.wait()
        for thread in self._output:
            thread.join(timeout=1.0)
        how, exit_code, signal_name = protocol.describe_exit(returncode)
        if self._stopping:
            how = "was stopped" if returncode == 0 else f"was killed after it did not stop in time ({how})"
        detail = ""
        if self._fatal:
            detail = f"the error: {self._fatal}"
        elif not self._stopping and self._tail:
            detail = "the last lines it printed:\n" + "".join(self._tail).rstrip()
        info = ExitInfo(self.name, how, self._stopping, exit_code, signal_name, self.pid, detail)
        if not self._watch.set(info):
            info = self._watch.info or info
        with contextlib.suppress(OSError):
            self._conn.close()
        return info

    # --- readings and stopping -------------------------------------------------------

    def memory(self, timeout: float = 2.0) -> WorkerMemory:
        """The worker's own reading (NVML or torch for devices); RSS alone from here if it cannot answer."""
        if self._watch.info is None:
            try:
                reading: WorkerMemory = self._control(protocol.MEMORY, None, wait=timeout)
                return reading
            except (TimeoutError, WorkerDiedError, TransferError):
                pass
        rss, private = process_memory(self.pid) if self._watch.info is None and self.pid else (None, None)
        return WorkerMemory(self.pid, rss, private)

    def gone(self) -> bool:
        """True when the worker's process no longer exists (its pid is free or belongs to another process)."""
        if self._process.poll() is None:
            return False
        return self.pid is None or _create_time(self.pid) != self._create_time

    def stop(self, timeout: float = 2.0) -> StopResult:
        """A polite stop (the worker ends after its current call), SIGKILL after ``timeout`` s, then check."""
        started = time.perf_counter()
        with self._stop_lock:
            info = self._watch.info
            if info is not None:
                return StopResult(self.name, self.runner, self.pid, "dead", f"had ended: {info.how}", self.gone(),
                                  time.perf_counter() - started, None, info.exit_code, info.signal)  # fmt: skip
            before = self.memory(timeout=min(timeout, 1.0))
            self._stopping = True
            ended = "stopped"
            with contextlib.suppress(WorkerDiedError):
                self._control(protocol.STOP, None, wait=None)
            try:
                self._process.wait(timeout=max(timeout - (time.perf_counter() - started), 0.05))
            except subprocess.TimeoutExpired:
                self._process.kill()
                ended = "killed"
            self._watch.ended.wait(10.0)
            info = self._watch.info or self._wait_exit()
        return StopResult(self.name, self.runner, self.pid, ended, info.how, self.gone(),
                          time.perf_counter() - started, before, info.exit_code, info.signal)  # fmt: skip

    def kill(self) -> None:
        """SIGKILL without asking (a failed load, a dropped proxy, the interpreter's exit)."""
        self._stopping = True
        try:
            if self._process.poll() is None:
                self._process.kill()
        except OSError:
            pass


def _create_time(pid: int | None) -> float | None:
    try:
        return float(psutil.Process(pid).create_time()) if pid else None
    except (psutil.Error, OSError):
        return None


def _argument_words(what: str) -> str:
    """``[1][0] (generator)`` (a path into ``(path, args, kwargs)``) -> ``argument 0 (generator)``."""
    if what.startswith("[1][") and "]" in what[4:]:
        index, _, rest = what[4:].partition("]")
        return f"argument {index}{rest}"
    if what.startswith("[2]["):
        key, _, rest = what[4:].partition("]")
        return f"keyword argument {key}{rest}"
    return f"an argument: {what}"
