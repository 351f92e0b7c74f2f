"""Release every model when the kernel stops: on shutdown, on restart, on SIGTERM, at exit.

What ipykernel 7 and jupyter_client 8 really do (see DESIGN.md): a shutdown or
restart request runs ``kernel.do_shutdown`` on the Control thread, possibly
while a cell still runs, and later Python's ``atexit`` handlers on the main
thread. jupyter_client sends SIGTERM 2.5 s after the request and SIGKILL at
5 s; ipykernel has no SIGTERM handler, so SIGTERM alone skips ``atexit``.
Hence three hooks:

- a wrapper around ``kernel.do_shutdown`` that only records "shutdown" or
  "restart" (it runs on another thread, so it must not touch models);
- an ``atexit`` handler (main thread) that releases everything;
- a SIGTERM handler (and the same for SIGHUP, which a closed terminal or a
  dying parent sends) that releases everything, then lets the signal do what
  it did before (end the process, or call the previous handler). A signal the
  process ignores (SIGHUP under ``nohup``) gets no handler: the kernel goes on,
  and so do its models.

Whichever fires first does the work; the others see it done, so each process
writes exactly one record. The release runs in a worker thread joined with a
timeout, so a lock held by an interrupted cell can never hang the exit.
SIGKILL (``shutdown_kernel(now=True)``, the OOM killer) cannot be hooked.
"""

from __future__ import annotations

import atexit
import errno
import functools
import itertools
import json
import logging
import os
import signal
import stat
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from nbmodels.core import ModelManager, ReleaseReport, get_manager

log = logging.getLogger("nbmodels")

Undo = Callable[[], None]
_ENDING_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))
SignalHandler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None


@dataclass(frozen=True)
class HookSettings:
    """What the hook reads when it fires (so ``%config`` changes made later still count)."""

    enabled: bool = True
    log_path: str = ""
    timeout: float = 2.0
    handle_sigterm: bool = True


class ShutdownHook:
    """The three hooks of one process, and the once-only release they share."""

    def __init__(
        self,
        settings: Callable[[], HookSettings] = HookSettings,
        manager: Callable[[], ModelManager] = get_manager,
    ) -> None:
        self._settings = settings
        self._manager = manager
        self._claims = itertools.count()  # next() is atomic: the first caller gets 0
        self._running = False
        self._signal_during_run: int | None = None
        self._requested: str | None = None
        self._previous: dict[int, SignalHandler] = {}
        self.record: dict[str, Any] | None = None

    # --- installing -------------------------------------------------------------

    def install(self, shell: Any, *, sigterm: bool = True) -> Undo:
        """Register the hooks that apply to ``shell`` and return one function that removes them.

        A shutdown log that cannot be written is said now, when someone reads it,
        not at shutdown, when nobody does.
        """
        problem = log_path_problem(self._read_settings().log_path)
        if problem:
            log.warning("%s", problem)
            print(f"nbmodels: {problem}", file=sys.stderr)
        undos: list[Undo] = [self._install_atexit()]
        kernel = getattr(shell, "kernel", None)
        if kernel is not None and callable(getattr(kernel, "do_shutdown", None)):
            undos.append(self._wrap_do_shutdown(kernel))
        if not sigterm:
            log.debug("nbmodels: no SIGTERM handler (NBModels.handle_sigterm is off)")
        elif hasattr(signal, "SIGTERM") and threading.current_thread() is threading.main_thread():
            for signum in _ENDING_SIGNALS:
                undos.append(self._install_signal(signum))
        else:
            log.debug("nbmodels: no SIGTERM handler (signals can only be set on the main thread)")

        def undo() -> None:
            for step in reversed(undos):
                step()

        return undo

    def _install_atexit(self) -> Undo:
        atexit.register(self._at_exit)
        return lambda: atexit.unregister(self._at_exit)

    def _wrap_do_shutdown(self, kernel: Any) -> Undo:
        """Record the request's kind, then call the kernel's own ``do_shutdown`` unchanged."""
        own = vars(kernel).get("do_shutdown")
        original = kernel.do_shutdown
        active = True

        @functools.wraps(original)
        def do_shutdown(restart: bool, *args: Any, **kwargs: Any) -> Any:
            if active:
                self._requested = "restart" if restart else "shutdown"
            return original(restart, *args, **kwargs)

        kernel.do_shutdown = do_shutdown

        def undo() -> None:
            nonlocal active
            active = False  # if someone wrapped us in turn, stay in place but do nothing
            if vars(kernel).get("do_shutdown") is do_shutdown:
                if own is None:
                    del kernel.do_shutdown
                else:
                    kernel.do_shutdown = own

        return undo

    def _install_signal(self, signum: int) -> Undo:
        previous = signal.getsignal(signum)
        if previous == signal.SIG_IGN:
            # ignored (a kernel started under nohup outlives its terminal): the process goes on, so must its models
            return lambda: None
        self._previous[signum] = previous
        signal.signal(signum, self._on_sigterm)

        def undo() -> None:
            if signal.getsignal(signum) == self._on_sigterm:
                signal.signal(signum, self._previous.get(signum) or signal.SIG_DFL)

        return undo

    # --- firing -----------------------------------------------------------------

    def _at_exit(self) -> None:
        self.run(self._requested or "exit")

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        """SIGTERM or SIGHUP: release and record, then let the signal do what it did before."""
        if self._running:
            # The signal arrived while this thread runs the release (from atexit): finish, then honour it.
            self._signal_during_run = signum
            return
        if self._read_settings().handle_sigterm:
            self.run(self._requested or signal.Signals(signum).name.lower())
        self._reraise(signum, frame)

    def _reraise(self, signum: int, frame: FrameType | None) -> None:
        """Do what the signal did before we were installed."""
        previous = self._previous.get(signum, signal.SIG_DFL)
        if callable(previous):
            previous(signum, frame)
            return
        if previous == signal.SIG_IGN:
            return
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    def _read_settings(self) -> HookSettings:
        try:
            return self._settings()
        except Exception:
            log.exception("nbmodels: reading the shutdown settings failed; using the defaults")
            return HookSettings()

    def run(self, reason: str) -> dict[str, Any] | None:
        """Release every model once per process and record it; later calls return None.

        Never raises: it runs inside ``atexit`` and signal handlers.
        """
        if next(self._claims) != 0:
            return None
        self._running = True
        try:
            settings = self._read_settings()
            if not settings.enabled:
                log.info("nbmodels: shutdown hook disabled; nothing released (%s)", reason)
                return None
            self.record = self._release(reason, settings.timeout)
            log.info("nbmodels shutdown hook: %s", json.dumps(self.record))
            if settings.log_path:
                try:
                    _append_line(settings.log_path, self.record)
                except OSError as exc:  # said, not lost silently: the kernel's log keeps stderr
                    problem = (
                        f"the shutdown record could not be written to {settings.log_path!r} "
                        f"({exc.strerror or exc}); the models were released"
                    )
                    log.warning("nbmodels: %s", problem)
                    print(f"nbmodels: {problem}", file=sys.stderr)
            return self.record
        except BaseException:
            log.exception("nbmodels: the shutdown hook failed (%s)", reason)
            return None
        finally:
            self._running = False
            if self._signal_during_run is not None:
                self._reraise(self._signal_during_run, None)

    def _release(self, reason: str, timeout: float) -> dict[str, Any]:
        started = time.perf_counter()
        manager = self._manager()
        report: ReleaseReport | None = None
        timed_out = False
        if manager.is_initialized():
            outcome = _bounded(manager.cleanup, timeout)
            if isinstance(outcome, ReleaseReport):
                report = outcome
            elif outcome is _TIMED_OUT:
                timed_out = True
                log.warning("nbmodels: releasing models took longer than %.1fs; the process ends anyway", timeout)
        record: dict[str, Any] = {
            "reason": reason,
            "released": list(report.released) if report else [],
            "freed_bytes": dict(report.freed_bytes) if report else {},
            "seconds": 0.0,
            "pid": os.getpid(),
            "still_alive": [alive.name for alive in report.still_alive] if report else [],
            "errors": dict(report.errors) if report else {},
            "pending": list(report.pending) if report else [],
            "rss_before": report.rss_before if report else None,
            "rss_after": report.rss_after if report else None,
            "timed_out": timed_out,
            "time": time.time(),
        }
        record["seconds"] = round(time.perf_counter() - started, 4)
        return record


_TIMED_OUT = object()


def _bounded(call: Callable[[], Any], timeout: float) -> Any:
    """``call()`` in a daemon thread, waited for at most ``timeout`` seconds.

    Inline when no thread can be started (interpreter shutdown on newer Pythons).
    Returns the result, the exception it raised, or ``_TIMED_OUT``.
    """
    box: list[Any] = [_TIMED_OUT]

    def work() -> None:
        try:
            box[0] = call()
        except BaseException as exc:
            log.exception("nbmodels: cleanup at shutdown failed")
            box[0] = exc

    worker = threading.Thread(target=work, name="nbmodels-shutdown", daemon=True)
    try:
        worker.start()
    except RuntimeError:
        work()
    else:
        worker.join(timeout)
    return box[0]


def log_path_problem(path: str) -> str:
    """Why the shutdown log ``path`` cannot be appended to ("" when it can, or when there is none)."""
    if not path:
        return ""
    try:
        why = _why_not_writable(Path(os.path.expanduser(path)))
    except (OSError, ValueError) as exc:  # a name too long, a NUL: the system refuses the path itself
        why = f"the path cannot be used ({getattr(exc, 'strerror', None) or exc})"
    if not why:
        return ""
    return (
        f"the shutdown log {path!r} (NBModels.shutdown_log / NBMODELS_SHUTDOWN_LOG) cannot be written: {why}; "
        "models are still released at shutdown, but no record will be written"
    )


def _why_not_writable(target: Path) -> str:
    if target.is_dir():
        return "it is a folder"
    if target.exists():
        return "" if os.access(target, os.W_OK) else "the file is not writable"
    if not target.parent.is_dir():
        return f"its folder {str(target.parent)!r} does not exist"
    if not os.access(target.parent, os.W_OK | os.X_OK):
        return f"its folder {str(target.parent)!r} is not writable"
    return ""


def _append_line(path: str, record: dict[str, Any]) -> None:
    """Append one JSON line with a single ``write`` (O_APPEND: lines from processes never interleave).

    Never through a symlink, never into a FIFO or device (another user could
    have planted one), flushed to disk: the record is what a user reads after
    the process is gone.
    """
    data = (json.dumps(record, sort_keys=True) + "\n").encode()
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(os.path.expanduser(path), flags, 0o600)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


__all__ = ["HookSettings", "ShutdownHook", "log_path_problem"]
