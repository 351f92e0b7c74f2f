"""The kernel's side: publish this process's models in a state file, and answer free requests.

A :class:`Publisher` follows one ModelManager. On each of its events (load,
unload, cleanup, move) and each change between busy and idle it rewrites the
state file atomically; :meth:`Publisher.close` removes it. The rewrite runs on
a writer thread: replacing a file by rename costs milliseconds on ext4 (which
flushes the new file's data first), and a load or a cell must not wait for
that. Events that arrive while a write is under way are folded into the next
one, which always describes the state at the time it is written. Its control socket
answers ``{"request": "free"}`` from another process of the same user by
releasing every model, on the server's own thread, so a kernel that is busy
with a long cell still frees: the manager is thread-safe. A model the running
cell still uses is listed in the answer as still in use, and its memory comes
back when the cell lets go (the next state file says so). ``{"request": "release"}``
releases one model or all, with force and dry run (the JupyterLab server
extension's Unload and Free buttons).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from nbmodels.core import memory
from nbmodels.core.manager import ModelManager
from nbmodels.core.reports import Event, ReleaseReport, StillAlive
from nbmodels.machine import paths
from nbmodels.machine.control import ControlServer
from nbmodels.machine.files import check_private_dir
from nbmodels.machine.state import VERSION, KernelState, model_states, write_atomically

log = logging.getLogger("nbmodels")


@dataclass(frozen=True)
class Identity:
    """Who this kernel is: its connection file, kernel id and (when known) its notebook."""

    connection_file: str | None
    kernel_id: str | None

    @classmethod
    def of_this_process(cls, argv: list[str] | None = None) -> Identity:
        connection = paths.connection_file(sys.argv if argv is None else argv)
        if connection is not None:
            connection = os.path.abspath(connection)
        return cls(connection, paths.kernel_id(connection))


def _version() -> str:
    from nbmodels import __version__

    return __version__


def describe_survivor(alive: StillAlive, *, busy: bool) -> dict[str, Any]:
    """One released model that is still alive, said so that another user of the kernel understands why."""
    unseen = all(holder.kind == "unseen" for holder in alive.holders)
    if unseen and busy:
        text = (
            f"{alive.name}: released, but the running cell still uses it; "
            "its memory comes back when the cell lets go of it"
        )
    elif alive.holders:
        held = ", ".join(holder.path for holder in alive.holders)
        fix = f"; in that notebook, {alive.fix} frees it" if alive.fix else ""
        text = f"{alive.name}: released, but the kernel still holds it ({held}){fix}"
    else:
        text = f"{alive.name}: released, but something outside Python's view still holds it"
    return {
        "name": alive.name,
        "holders": [holder.path for holder in alive.holders],
        "running_cell": unseen and busy,
        "fix": alive.fix,
        "text": text,
    }


def free_reply(report: ReleaseReport, *, busy: bool, pid: int) -> dict[str, Any]:
    """The answer to a free request: what was released, what came back, what is still in use."""
    return {
        "ok": True,
        "pid": pid,
        "busy": busy,
        "released": list(report.released),
        "freed_bytes": dict(report.freed_bytes),
        "rss_before": report.rss_before,
        "rss_after": report.rss_after,
        "still_alive": [describe_survivor(alive, busy=busy) for alive in report.still_alive],
        "pending": list(report.pending),
        "errors": dict(report.errors),
        "seconds": report.seconds,
    }


class Publisher:
    """Publishes one manager's state for other processes and serves their free requests."""

    def __init__(
        self,
        manager: ModelManager,
        *,
        directory: Path | None = None,
        identity: Identity | None = None,
        notebook: Callable[[], str | None] = lambda: os.environ.get("JPY_SESSION_NAME") or None,
        serve: bool = True,
    ) -> None:
        self.manager = manager
        self.directory = directory if directory is not None else paths.runtime_dir()
        self.identity = identity if identity is not None else Identity.of_this_process()
        self.pid = os.getpid()
        self.path = paths.state_path(self.directory, self.pid)
        self._notebook = notebook
        self._serve = serve
        self._server: ControlServer | None = None
        self._lock = threading.Lock()  # one write at a time; the snapshot is taken inside it
        self._wanted = threading.Condition()
        self._write_wanted = False
        self._writer: threading.Thread | None = None
        self._busy = False
        self._activity = time.time()
        self._in_use: tuple[str, ...] = ()
        self._started = psutil.Process(self.pid).create_time()
        self._unsubscribe: Callable[[], None] | None = None
        self._closed = False
        self.socket_error = ""
        self.write_error = ""  # the last failed write, said once until a write succeeds again
        self.on_write_error: Callable[[str], None] | None = None  # the IPython layer says it in the notebook
        self._told = False  # the notebook hears of failed writes once per process (a nearly full disk flaps)

    # --- lifecycle --------------------------------------------------------------

    def start(self) -> None:
        """Create the directory, clean stale files, open the socket, write the state, follow the manager."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        check_private_dir(self.directory)  # RefusedError (an OSError too): another user could redirect our files
        from nbmodels.machine.scan import clean_stale

        clean_stale(self.directory)
        if self._serve:
            server = ControlServer(paths.socket_path(self.directory, self.pid), self._handle)
            try:
                server.start()
            except OSError as exc:
                self.socket_error = str(exc)
                log.warning("nbmodels: no control socket, so other processes cannot free this kernel: %s", exc)
            else:
                self._server = server
        self.write()
        self._writer = threading.Thread(target=self._write_when_wanted, name="nbmodels-state", daemon=True)
        self._writer.start()
        self._unsubscribe = self.manager.subscribe(self._on_event)

    def close(self) -> None:
        """Stop following the manager, close the socket and remove the state file (only in this process)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        with self._wanted:
            self._wanted.notify_all()
        if self._writer is not None and self._writer is not threading.current_thread():
            self._writer.join(timeout=2.0)
        if os.getpid() != self.pid:  # a forked child: the files are its parent's
            return
        if self._server is not None:
            self._server.close()
            self._server = None
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("nbmodels: could not remove %s: %s", self.path, exc)

    # --- state ------------------------------------------------------------------

    def snapshot(self) -> KernelState:
        """This kernel's state now."""
        survivors = tuple(self.manager.survivors())
        return KernelState(
            pid=self.pid,
            process_started=self._started,
            kernel_id=self.identity.kernel_id,
            connection_file=self.identity.connection_file,
            notebook=self._read_notebook(),
            socket=os.fspath(self._server.path) if self._server is not None else None,
            nbmodels_version=_version(),
            updated=time.time(),
            busy=self._busy,
            activity=self._activity,
            models=model_states(self.manager.list()),
            loading=tuple(self.manager.loading()),
            in_use=survivors,
        )

    def _read_notebook(self) -> str | None:
        try:
            return self._notebook()
        except Exception:
            return None

    def schedule(self) -> None:
        """Ask the writer thread to rewrite the state file soon (returns at once)."""
        with self._wanted:
            self._write_wanted = True
            self._wanted.notify_all()

    def _write_when_wanted(self) -> None:
        while True:
            with self._wanted:
                while not self._write_wanted and not self._closed:
                    self._wanted.wait()
                if self._closed:
                    return
                self._write_wanted = False
            self.write()

    def write(self) -> None:
        """Rewrite the state file now (atomically; never raises: it runs on the writer and in callbacks)."""
        with self._lock:
            if self._closed or os.getpid() != self.pid:
                return
            try:
                state = self.snapshot()
                write_atomically(self.path, state.to_json())
            except Exception as exc:
                self._failed(exc)
                return
            if self.write_error:
                log.warning("nbmodels: the kernel state file %s is written again", self.path)
                self.write_error = ""
            previous, self._in_use = self._in_use, state.in_use
        if set(previous) - set(state.in_use):
            # A model released while still in use died since: give its memory back to the system now.
            memory.empty_cuda_cache()
            memory.trim_heap()

    def _failed(self, exc: BaseException) -> None:
        """A write failed (full disk, read-only folder): say it once; remove the old file rather than let it lie."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        except OSError as unlink_error:
            log.debug("nbmodels: could not remove the stale %s: %s", self.path, unlink_error)
        if self.write_error:
            return
        reason = getattr(exc, "strerror", None) or str(exc)
        self.write_error = (
            f"could not write this kernel's state file {self.path} ({reason}); "
            "nbmodels ps and other kernels' panels will not list this kernel until a write succeeds"
        )
        log.warning("nbmodels: %s", self.write_error)
        if self.on_write_error is not None and not self._told:
            self._told = True
            try:
                self.on_write_error(self.write_error)
            except Exception:
                log.debug("nbmodels: the write-error callback failed", exc_info=True)

    def set_busy(self, busy: bool) -> None:
        """A cell started (True) or ended (False): record it, and recheck models released while in use."""
        self._busy = busy
        self._activity = time.time()
        self.schedule()

    def _on_event(self, event: Event) -> None:
        self.schedule()

    # --- requests ---------------------------------------------------------------

    def _handle(self, request: dict[str, Any]) -> dict[str, Any]:
        kind = request.get("request")
        if request.get("version", VERSION) != VERSION:
            return {"ok": False, "error": f"request version {request.get('version')!r}; this kernel speaks {VERSION}"}
        if kind == "free":
            busy = self._busy
            log.info("nbmodels: releasing every model at the request of another process")
            report = self.manager.cleanup()
            self.write()  # the state file says so before the answer does
            return free_reply(report, busy=busy, pid=self.pid)
        if kind == "release":
            return self._release(request)
        if kind == "state":
            return {"ok": True, "state": self.snapshot().to_json()}
        return {"ok": False, "error": f"unknown request {kind!r} (this kernel knows 'free', 'release' and 'state')"}

    def _release(self, request: dict[str, Any]) -> dict[str, Any]:
        """``{"request": "release", "name": NAME or null (every model), "force": bool, "dry_run": bool}``.

        A request kind of its own, not options of ``free``: an older kernel answers
        "unknown request" to it instead of freeing for real what was a dry run.
        Force edits the notebook's variables, so it runs only between cells.
        """
        name, force, dry_run = request.get("name"), request.get("force", False), request.get("dry_run", False)
        if (name is not None and not isinstance(name, str)) or not isinstance(force, bool):
            return {"ok": False, "error": "release: name must be a string or null, force a boolean"}
        if not isinstance(dry_run, bool):
            return {"ok": False, "error": "release: dry_run must be a boolean"}
        busy = self._busy
        if force and not dry_run and busy:
            return {"ok": False, "error": "the kernel is running a cell; force runs only between cells, try again"}
        if name is not None and name not in self.manager and name not in self.manager.survivors():
            return {"ok": False, "error": f"no model named {name!r} in this kernel", "not_found": True}
        log.info("nbmodels: releasing %s at the request of another process", name or "every model")
        try:
            if name is None:
                report = self.manager.cleanup(force=force, dry_run=dry_run)
            else:
                report = self.manager.unload(name, force=force, dry_run=dry_run)
        except KeyError:  # unloaded meanwhile by the notebook itself
            return {"ok": False, "error": f"no model named {name!r} in this kernel", "not_found": True}
        if not dry_run:
            self.write()  # the state file says so before the answer does
        reply = free_reply(report, busy=busy, pid=self.pid)
        reply.update(dry_run=report.dry_run, would_free=list(report.would_free), lines=report.lines(detail=True))
        return reply


__all__ = ["Identity", "Publisher", "describe_survivor", "free_reply"]
