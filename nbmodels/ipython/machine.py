"""The machine view inside a kernel: publish this kernel's state, and ``%list_models --all``.

The install step (see :mod:`nbmodels.ipython.extension`) starts a
:class:`~nbmodels.machine.publisher.Publisher` in Jupyter kernels only (a
terminal IPython is not a kernel that ``ps`` lists), marks the kernel busy and
idle around each cell, and removes the state file and socket at exit and on
``%unload_ext``. ``NBMODELS_MACHINE_VIEW=0`` turns publishing off.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

from nbmodels.core import get_manager
from nbmodels.machine.errors import MachineError
from nbmodels.machine.publisher import Publisher
from nbmodels.machine.scan import scan
from nbmodels.machine.view import MachineTable

log = logging.getLogger("nbmodels")

ENV = "NBMODELS_MACHINE_VIEW"

_publishers: dict[int, Publisher] = {}  # id(shell) -> its publisher


def publisher_of(shell: Any) -> Publisher | None:
    """The publisher of ``shell``'s kernel, or None (not a kernel, publishing off, extension not loaded)."""
    return _publishers.get(id(shell))


def _notebook_reader(shell: Any) -> Callable[[], str | None]:
    """Where this kernel's notebook is: ``__session__`` (set by ipykernel from JPY_SESSION_NAME), VS Code's name."""

    def read() -> str | None:
        ns = shell.user_ns
        for key in ("__session__", "__vsc_ipynb_file__"):
            value = ns.get(key)
            if isinstance(value, str) and value:
                return value
        return os.environ.get("JPY_SESSION_NAME") or None

    return read


def install(session: Any) -> Callable[[], None] | None:
    """Publish this kernel's state for ``nbmodels ps`` and answer ``nbmodels free``; returns the undo."""
    shell = session.shell
    if getattr(shell, "kernel", None) is None:
        return None
    if os.environ.get(ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        log.info("nbmodels: not publishing this kernel's state (%s=0)", ENV)
        return None
    publisher = Publisher(get_manager(), notebook=_notebook_reader(shell))
    try:
        publisher.start()
    except OSError as exc:
        log.warning("nbmodels: cannot publish this kernel's state in %s: %s", publisher.directory, exc)
        if isinstance(exc, MachineError):  # a folder another user can write to: the user must hear it
            print(f"nbmodels: not publishing this kernel's state: {exc}", file=sys.stderr)
        return None
    unsaid: list[str] = []  # a failed write, said in the notebook once, after the cell it happened in
    publisher.on_write_error = unsaid.append

    def busy(*_: Any) -> None:
        publisher.set_busy(True)

    def idle(*_: Any) -> None:
        publisher.set_busy(False)
        while unsaid:
            print(f"nbmodels: {unsaid.pop(0)}", file=sys.stderr)

    shell.events.register("pre_run_cell", busy)
    shell.events.register("post_run_cell", idle)
    atexit.register(publisher.close)
    _publishers[id(shell)] = publisher

    def undo() -> None:
        _publishers.pop(id(shell), None)
        for event, callback in (("pre_run_cell", busy), ("post_run_cell", idle)):
            if callback in shell.events.callbacks[event]:
                shell.events.unregister(event, callback)
        atexit.unregister(publisher.close)
        publisher.close()

    return undo


def list_all(shell: Any = None) -> MachineTable:
    """``%list_models --all``: every kernel on this machine, this one with its state as of now.

    A runtime directory that cannot be read is a one-line UsageError.
    """
    publisher = publisher_of(shell) if shell is not None else None
    if publisher is not None:
        publisher.write()  # this kernel as of now, not as of the last write
    try:
        return MachineTable(scan())
    except MachineError as exc:
        message = str(exc)
    from IPython.core.error import UsageError

    raise UsageError(f"%list_models --all: {message}")


__all__ = ["ENV", "install", "list_all", "publisher_of"]
