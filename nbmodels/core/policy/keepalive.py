"""Keep-alive: unload a model once it has been idle for its keep-alive, with one timer thread.

ollama's rule, adapted to a notebook: the clock starts when a model's last use
ends (a ``get()``, a load hit, a call through a handle; in a kernel, the end of
the cell that used it), ``0`` unloads it as soon as it is idle, a negative
value keeps it forever (the default). A pinned model never expires, and a
model with a call running is not idle.

One daemon thread serves a manager. It sleeps until the earliest deadline and
wakes only then, or when a sooner deadline is scheduled: a use only moves a
deadline later, so uses never wake it (no polling; the wake-ups are counted in
``wakeups``). At a deadline it asks the manager which models are really due
(their uses may have moved them) and for the next deadline. The manager's
callback does the unloading through its ordinary path; the timer holds no lock
while it runs, and holds the manager only through a weak reference.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterable

log = logging.getLogger("nbmodels")

Expire = Callable[[float], "float | None"]
"""Called with the time at a deadline; unloads what is due, returns the next deadline (None: none)."""


def deadline(last_used: float, keep_alive: float | None, *, pinned: bool = False, busy: bool = False) -> float | None:
    """When a model idle since ``last_used`` is unloaded; None when it is not (forever, pinned, in use)."""
    if keep_alive is None or pinned or busy:
        return None
    return last_used + keep_alive


def earliest(deadlines: Iterable[float | None]) -> float | None:
    found = [d for d in deadlines if d is not None]
    return min(found) if found else None


_timers: weakref.WeakSet[KeepAliveTimer] = weakref.WeakSet()
_timers_lock = threading.Lock()


class KeepAliveTimer:
    """One thread that sleeps until the next deadline and then calls ``expire(now)``.

    ``expire`` must be a bound method (held weakly, so the timer never keeps its
    manager alive). The thread starts with the first deadline and ends when
    none is left (after a cleanup, say), when :meth:`stop` is called, or at exit.
    """

    def __init__(self, expire: Expire, *, clock: Callable[[], float] = time.time, name: str = "nbmodels-keep-alive"):
        self._expire = weakref.WeakMethod(expire)
        self._clock = clock
        self._name = name
        self._cond = threading.Condition()
        self._next: float | None = None
        self._thread: threading.Thread | None = None
        self._stopped = False
        self.wakeups = 0  # returns from the thread's wait: at deadlines, or for a sooner deadline
        with _timers_lock:
            _timers.add(self)

    @property
    def next_deadline(self) -> float | None:
        with self._cond:
            return self._next

    @property
    def running(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    def schedule(self, when: float) -> None:
        """Make sure ``expire`` runs by ``when``; an earlier deadline already set stays (and nothing wakes)."""
        with self._cond:
            if self._stopped or (self._next is not None and self._next <= when):
                return
            self._next = when
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            else:
                self._cond.notify()

    def cancel(self) -> None:
        """Forget the deadline: the thread ends (a later :meth:`schedule` starts it again)."""
        with self._cond:
            self._next = None
            self._cond.notify()

    def stop(self, timeout: float = 1.0) -> None:
        """End the thread for good (at shutdown): no deadline runs after this returns."""
        with self._cond:
            self._stopped = True
            self._next = None
            self._cond.notify()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._stopped or self._next is None:
                        self._thread = None
                        return
                    delay = self._next - self._clock()
                    if delay <= 0:
                        break
                    self._cond.wait(delay)
                    self.wakeups += 1
                self._next = None
            expire = self._expire()
            if expire is None:  # the manager is gone
                with self._cond:
                    self._thread = None
                return
            try:
                following = expire(self._clock())
            except Exception:
                log.exception("nbmodels: the keep-alive check failed; it runs again at the next deadline")
                following = None
            del expire
            if following is not None:
                self.schedule(following)


def stop_all(timeout: float = 1.0) -> None:
    """Stop every timer (registered with ``atexit``: nothing may unload while the interpreter ends)."""
    with _timers_lock:
        timers = list(_timers)
    for timer in timers:
        timer.stop(timeout / max(len(timers), 1))


atexit.register(stop_all)

__all__ = ["KeepAliveTimer", "deadline", "earliest", "stop_all"]
