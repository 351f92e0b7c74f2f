"""The manager's use clock: uses, use scopes (a cell), pinning, and keep-alive expiry.

A use (a ``get()``, a call through a handle, a load hit) restarts a model's
idle clock; a pinned model never expires. One timer thread
(:class:`~nbmodels.core.policy.keepalive.KeepAliveTimer`) sleeps until the
next deadline and unloads what is due, without holding the manager's lock.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any

from nbmodels.core.entries import Entry, hand_over
from nbmodels.core.policy.keepalive import KeepAliveTimer, earliest
from nbmodels.core.policy.sizes import format_duration, parse_duration
from nbmodels.core.release import Request
from nbmodels.core.reports import Event, ModelInfo
from nbmodels.core.state import ManagerState

log = logging.getLogger("nbmodels")


class UseScope:
    """A span in which the models used stay in use until it closes (see :meth:`ModelManager.use_scope`).

    ``open()`` and ``close()`` may be called from hooks (a cell's start and end);
    each counts once however often it is called, and ``with scope:`` works too.
    """

    def __init__(self, manager: Keeping) -> None:
        self._manager = manager
        self._open = False
        self._lock = threading.Lock()

    def open(self) -> None:
        with self._lock:
            if self._open:
                return
            self._open = True
        self._manager._scope_changed(+1)

    def close(self) -> None:
        with self._lock:
            if not self._open:
                return
            self._open = False
        self._manager._scope_changed(-1)

    def __enter__(self) -> UseScope:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Keeping(ManagerState):
    """Uses, pins and keep-alive: when an idle model leaves by itself."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        super().__init__(clock=clock)
        self._timer = KeepAliveTimer(self._expire_due, clock=clock)
        weakref.finalize(self, self._timer.stop, 0.0)

    def _use(self, entry: Entry, *, hit: bool) -> None:
        """Record a use (call with the lock held): the idle clock restarts; a hit also counts."""
        now = self._clock()
        entry.awaiting_use = False
        if hit:
            entry.touch(now)
        else:
            entry.used(now)
        if self._scope_depth and not entry.in_scope:
            entry.in_scope = True

    def mark_used(self, name: str) -> None:
        """Count a use of ``name`` without returning it (a handle does, on every use); unknown names are ignored."""
        with self._lock:
            entry = self._entries.get(name)
            if entry is not None:
                self._use(entry, hit=False)

    @contextlib.contextmanager
    def using(self, name: str) -> Iterator[None]:
        """While the block runs, ``name`` is in use: never evicted or expired; its idle clock starts at the end."""
        with self._lock:
            entry = self._entries.get(name)
            if entry is not None:
                entry.busy += 1
                self._use(entry, hit=False)
        try:
            yield
        finally:
            if entry is not None:
                with self._lock:
                    entry.busy -= 1
                    entry.used(self._clock())
                self._schedule(entry)

    def use_scope(self) -> UseScope:
        """A span (a notebook cell) in which every model used stays in use until it closes.

        Keep-alive counts idle time from the end of the scope, so ``keep_alive=0``
        unloads a model when the cell that used it ends. Eviction is not affected.
        """
        return UseScope(self)

    def _scope_changed(self, delta: int) -> None:
        with self._lock:
            self._scope_depth = max(self._scope_depth + delta, 0)
            if delta > 0 or self._scope_depth:
                return
            now = self._clock()
            ended = [entry for entry in self._entries.values() if entry.in_scope]
            for entry in ended:
                entry.in_scope = False
                entry.used(now)
        for entry in ended:
            self._schedule(entry)

    def _schedule(self, entry: Entry) -> None:
        """Make sure the keep-alive timer wakes by ``entry``'s deadline (uses only ever move it later)."""
        when = entry.deadline()
        if when is not None:
            self._timer.schedule(when)

    @property
    def keep_alive(self) -> float | None:
        """Seconds a model stays loaded while idle when its load gave no ``keep_alive``; None: forever (default)."""
        return self._keep_alive

    @keep_alive.setter
    def keep_alive(self, value: Any) -> None:
        self._keep_alive = None if value is None else parse_duration(value)

    def _expire_due(self, now: float) -> float | None:
        """The keep-alive timer's call: unload every idle model past its deadline; return the next deadline."""
        with self._lock:
            due = [entry for entry in self._entries.values() if (when := entry.deadline()) is not None and when <= now]
            for entry in due:
                del self._entries[entry.name]
            taken = [(entry.name, entry.keep_alive, now - entry.last_used, hand_over(entry)) for entry in due]
        del due
        for name, keep, idle, item in taken:
            report = self._release([item], pending=(), request=Request())
            reason = (
                f"{name}: unloaded by keep-alive after {format_duration(idle)} idle "
                f"(keep_alive {format_duration(keep)})"
            )
            if report.still_alive:
                reason += f"; its memory did not come back: {report.still_alive[0].describe()}"
            log.info("%s", reason)
            self._emit(Event("expired", name=name, report=report, reason=reason))
        with self._lock:
            return earliest(entry.deadline() for entry in self._entries.values())

    def pin(self, name: str) -> ModelInfo:
        """Keep ``name`` loaded: no budget evicts it and keep-alive never unloads it (unload and cleanup still do)."""
        return self._set_pin(name, True)

    def unpin(self, name: str) -> ModelInfo:
        """Let budgets evict ``name`` again, and its keep-alive run."""
        return self._set_pin(name, False)

    def _set_pin(self, name: str, pinned: bool) -> ModelInfo:
        with self._lock:
            entry = self._loaded(name)
            changed = entry.pinned != pinned
            entry.pinned = pinned
            entry._info = None
            info = entry.info()
        if changed:
            self._schedule(entry)
            self._emit(Event("pinned", name=name, info=info, reason=f"{'pinned' if pinned else 'unpinned'} {name}"))
        return info
