"""``%load_ext nbmodels`` and ``%unload_ext nbmodels``: register everything, and undo all of it.

Loading runs the steps of ``INSTALL_STEPS`` in order; each registers one thing
with the shell and returns the function that removes it. Unloading runs those
functions in reverse, so load, unload, load again works, and a failing step
leaves nothing half-installed. To add a feature, append a step::

    def install_something(session: Session) -> Undo | None: ...
    INSTALL_STEPS.append(install_something)

Unloading the extension leaves loaded models loaded: ``%model_cleanup`` first
to release them.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from nbmodels.ipython import completion, machine, namespace, policy, runners
from nbmodels.ipython import memory as memory_magic
from nbmodels.ipython.config import NBModels, settings_for
from nbmodels.ipython.magics import NBModelsMagics
from nbmodels.ipython.shutdown import HookSettings, ShutdownHook

log = logging.getLogger("nbmodels")

Undo = Callable[[], None]


@dataclass
class Session:
    """What one shell's extension installed: shared with the install steps."""

    shell: Any
    settings: NBModels
    magics: NBModelsMagics | None = None
    hook: ShutdownHook | None = None
    undo: list[Undo] = field(default_factory=list)


def install_settings(session: Session) -> Undo:
    """Make ``%config NBModels`` and ``%config NBModels.<trait> = ...`` find the settings."""
    configurables = session.shell.configurables
    configurables.append(session.settings)
    for problem in session.settings.problems():  # shown once, here, not on every load
        print(f"nbmodels: {problem}", file=sys.stderr)

    def undo() -> None:
        if session.settings in configurables:
            configurables.remove(session.settings)

    return undo


def install_magics(session: Session) -> Undo:
    """Register every magic of NBModelsMagics (and the report printer that avoids double output)."""
    shell = session.shell
    magics = session.magics = NBModelsMagics(shell, settings=session.settings)
    shell.register_magics(magics)
    undo_printer = magics.echo.install()

    def undo() -> None:
        undo_printer()
        manager = shell.magics_manager
        for kind, table in magics.magics.items():
            for name, func in table.items():
                if manager.magics[kind].get(name) == func:
                    del manager.magics[kind][name]
        if manager.registry.get(type(magics).__name__) is magics:
            del manager.registry[type(magics).__name__]
        session.magics = None

    return undo


def install_completion(session: Session) -> Undo:
    return completion.install(session.shell)


def install_shutdown_hook(session: Session) -> Undo | None:
    """atexit, the kernel's ``do_shutdown`` wrapper and SIGTERM (see nbmodels.ipython.shutdown)."""
    settings = session.settings
    if not settings.shutdown_hook:
        log.info("nbmodels: shutdown hook off (NBModels.shutdown_hook / NBMODELS_SHUTDOWN_HOOK)")
        return None

    def read() -> HookSettings:
        return HookSettings(
            enabled=settings.shutdown_hook,
            log_path=settings.shutdown_log,
            timeout=settings.shutdown_timeout,
            handle_sigterm=settings.handle_sigterm,
        )

    hook = session.hook = ShutdownHook(read)
    return hook.install(session.shell, sigterm=settings.handle_sigterm)


def install_leak_hunter(session: Session) -> Undo:
    """Teach the manager's holder search IPython's hidden holders (see nbmodels.ipython.namespace)."""
    return namespace.register(session.shell)


INSTALL_STEPS: list[Callable[[Session], Undo | None]] = [
    install_settings,
    install_magics,
    install_completion,
    install_shutdown_hook,
    install_leak_hunter,
    machine.install,  # publish this kernel's state for `python -m nbmodels ps` / `free`
    runners.install,  # spare worker processes and the Ray address for isolated models
    policy.install_settings,  # budgets, keep-alive and eviction settings to the manager
    policy.install_cell_scope,  # a cell is one use of the models it touches (keep-alive)
    policy.install_oom_report,  # after an out-of-memory error in a cell: what holds that device
    memory_magic.install,  # %memory: every live tensor under the name that holds it
]

_sessions: dict[int, Session] = {}


def current_session(shell: Any) -> Session | None:
    """The extension's state for ``shell``, or None when it is not loaded there."""
    return _sessions.get(id(shell))


def load_ipython_extension(shell: Any) -> None:
    """Called by ``%load_ext nbmodels``: install every step; on a failure, remove what was installed."""
    if id(shell) in _sessions:
        return
    session = Session(shell=shell, settings=settings_for(shell))
    try:
        for step in INSTALL_STEPS:
            undo = step(session)
            if undo is not None:
                session.undo.append(undo)
    except BaseException:
        _run_undo(session)
        raise
    _sessions[id(shell)] = session
    log.debug("nbmodels extension loaded")


def unload_ipython_extension(shell: Any) -> None:
    """Called by ``%unload_ext nbmodels``: remove everything ``load_ipython_extension`` registered."""
    session = _sessions.pop(id(shell), None)
    if session is not None:
        _run_undo(session)
        log.debug("nbmodels extension unloaded")


def _run_undo(session: Session) -> None:
    while session.undo:
        undo = session.undo.pop()
        try:
            undo()
        except Exception:
            log.exception("nbmodels: removing part of the extension failed; carrying on")


__all__ = [
    "INSTALL_STEPS",
    "Session",
    "current_session",
    "load_ipython_extension",
    "unload_ipython_extension",
]
