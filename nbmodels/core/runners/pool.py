"""Spare workers: processes started ahead (torch imported, nothing loaded), so a load skips the start-up.

A spare remembers the interpreter and environment it started with; one whose
environment no longer matches the kernel's (a changed ``CUDA_VISIBLE_DEVICES`` or
``OMP_NUM_THREADS``, read when torch starts) is stopped rather than used. The kernel's
``sys.path`` and working folder are sent with each load, so they never go stale.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading

from nbmodels.core.runners.process import WorkerProcess

log = logging.getLogger("nbmodels")

MAX_SPARES = 8


def _fingerprint() -> tuple[str, frozenset[tuple[str, str]]]:
    return sys.executable, frozenset(os.environ.items())


class SparePool:
    """Keeps ``size`` started workers ready; :meth:`take` hands one out and starts its replacement."""

    def __init__(self, size: int = 0) -> None:
        self._lock = threading.Lock()
        self._ready: list[tuple[tuple[str, frozenset[tuple[str, str]]], WorkerProcess]] = []
        self._starting = 0
        self._size = 0
        self._closed = False
        self.resize(size)

    @property
    def size(self) -> int:
        """How many spare workers the pool keeps ready (0: none)."""
        return self._size

    def resize(self, size: int) -> None:
        """Keep ``size`` spares (0 to 8): extra ones are stopped, missing ones start in the background."""
        if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_SPARES:
            from nbmodels.errors import InvalidArgumentError

            raise InvalidArgumentError(f"spare workers must be a whole number from 0 to {MAX_SPARES}, got {size!r}")
        with self._lock:
            self._size = size
            self._closed = False
            extra = self._ready[size:]
            del self._ready[size:]
        for _, worker in extra:
            worker.kill()
        self._fill()

    def ready(self) -> int:
        """Spares started and waiting now."""
        with self._lock:
            return sum(1 for _, worker in self._ready if worker.exit_info() is None)

    def pids(self) -> list[int]:
        with self._lock:
            return [worker.pid for _, worker in self._ready if worker.pid is not None]

    def take(self) -> WorkerProcess | None:
        """A ready spare that fits the kernel's current environment, or None; a replacement starts at once."""
        fingerprint = _fingerprint()
        taken: WorkerProcess | None = None
        stale: list[WorkerProcess] = []
        with self._lock:
            while self._ready and taken is None:
                started_with, worker = self._ready.pop(0)
                if worker.exit_info() is None and started_with == fingerprint:
                    taken = worker
                else:
                    stale.append(worker)
        for worker in stale:
            worker.kill()
        self._fill()
        return taken

    def wait_ready(self, timeout: float = 60.0) -> bool:
        """Block until ``size`` spares are ready (tests and benchmarks); False on timeout."""
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ready() >= self._size:
                return True
            time.sleep(0.02)
        return False

    def close(self) -> None:
        """Stop every spare; the pool keeps its size setting but starts nothing until resized."""
        with self._lock:
            self._closed = True
            workers = [worker for _, worker in self._ready]
            self._ready.clear()
        for worker in workers:
            worker.kill()

    def _fill(self) -> None:
        with self._lock:
            missing = self._size - len(self._ready) - self._starting
            if self._closed or missing <= 0:
                return
            self._starting += missing
        for _ in range(missing):
            threading.Thread(target=self._start_one, name="nbmodels-spare-worker", daemon=True).start()

    def _start_one(self) -> None:
        fingerprint = _fingerprint()
        try:
            worker = WorkerProcess.spawn()
        except Exception:
            log.exception("starting a spare worker failed")
            with self._lock:
                self._starting -= 1
            return
        with self._lock:
            self._starting -= 1
            keep = not self._closed and len(self._ready) < self._size
            if keep:
                self._ready.append((fingerprint, worker))
        if not keep:
            worker.kill()


_pool: SparePool | None = None
_pool_lock = threading.Lock()


def spare_pool() -> SparePool:
    """The process-wide pool that :func:`nbmodels.core.runners.start` takes spares from (size 0 at first)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = SparePool()
            atexit.register(_pool.close)
        return _pool
