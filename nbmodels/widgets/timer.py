"""A refresh timer that never keeps its owner alive and stops with the interpreter.

The panel re-reads device memory every couple of seconds while it is shown
(the way nvdashboard polls), so memory taken or freed outside nbmodels shows
without a click. A thread, not the kernel's event loop: the loop is blocked
while a cell runs, and a long cell is exactly when memory moves.

The thread holds the callback only through a ``WeakMethod``: when the owner
is gone the thread ends at its next tick. Every timer still running is
stopped (and briefly joined) at interpreter exit, before anything it would
touch is torn down.
"""

from __future__ import annotations

import atexit
import logging
import threading
import weakref
from collections.abc import Callable

log = logging.getLogger("nbmodels")

Tick = Callable[[], "float | None"]
"""Called on each tick; returns the seconds until the next one, or None to stop."""

_running: weakref.WeakSet[RefreshTimer] = weakref.WeakSet()
_running_lock = threading.Lock()


class RefreshTimer:
    """Calls ``owner.method()`` on a daemon thread until stopped, the owner dies, or the process exits.

    ``tick`` must be a bound method; its return value is the delay before the
    next call (``None`` stops the timer).
    """

    def __init__(self, tick: Tick, *, name: str = "nbmodels-refresh") -> None:
        self._tick = weakref.WeakMethod(tick)
        self._name = name
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self, first_delay: float) -> None:
        """Start ticking, the first tick after ``first_delay`` seconds; nothing when already running."""
        with self._lock:
            if self.running:
                return
            self._stop = threading.Event()
            self._wake = threading.Event()
            thread = self._thread = threading.Thread(
                target=_loop, args=(self._tick, self._stop, self._wake, first_delay), name=self._name, daemon=True
            )
        with _running_lock:
            _running.add(self)
        thread.start()

    def stop(self, timeout: float = 0.0) -> None:
        """Stop ticking; with ``timeout``, wait up to that long for a tick in progress to end."""
        with self._lock:
            thread = self._thread
            self._stop.set()
            self._wake.set()
        with _running_lock:
            _running.discard(self)
        if timeout and thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    @property
    def running(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive() and not self._stop.is_set()

    @property
    def thread(self) -> threading.Thread | None:
        return self._thread


def _loop(tick: weakref.WeakMethod[Tick], stop: threading.Event, wake: threading.Event, delay: float) -> None:
    """The thread's body: it knows the owner only through ``tick``, a weak reference."""
    while True:
        wake.wait(delay)
        wake.clear()
        if stop.is_set():
            return
        method = tick()
        if method is None:  # the owner is gone
            return
        try:
            next_delay = method()
        except Exception:
            log.exception("a panel refresh failed; the timer stops")
            return
        del method
        if next_delay is None or stop.is_set():
            return
        delay = next_delay


def stop_all(timeout: float = 1.0) -> None:
    """Stop every running timer (registered with ``atexit``: no tick may run while the process ends)."""
    with _running_lock:
        timers = list(_running)
    for timer in timers:
        timer.stop()
    for timer in timers:
        thread = timer.thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout / max(len(timers), 1))


atexit.register(stop_all)
