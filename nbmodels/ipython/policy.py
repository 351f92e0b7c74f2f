"""The memory policy in a kernel: settings to the manager, cells as uses, and an account after out-of-memory.

Three install steps (see :mod:`nbmodels.ipython.extension`), each undone by
``%unload_ext nbmodels``:

- ``install_settings``: ``NBModels.max_memory``, ``max_loaded_models``,
  ``keep_alive`` and ``evict`` (from ``%config``, a profile or ``NBMODELS_*``)
  go to the manager at ``%load_ext`` and whenever ``%config`` changes them. A
  value the manager cannot apply (pinned models over a lower budget) is said in
  one line, and the setting goes back to what it was.
- ``install_cell_scope``: a cell is a use of every model it touches, so
  keep-alive counts idle time from the end of the cell (``--keep-alive 0``:
  unloaded when the cell that used it ends).
- ``install_oom_report``: after a cell that raised ``torch.OutOfMemoryError``
  (or ``MemoryError``), a short account of that device: the models there with
  their bytes, released models still alive there with what holds them, and the
  one command that frees the most. It runs from ``post_run_cell``, after
  IPython has shown the traceback as always: nothing about the traceback
  changes, and IPython's single custom-exception slot stays free for others.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import traceback
from collections.abc import Callable
from typing import Any

from nbmodels.core import ModelManager, get_manager
from nbmodels.core.policy import oom
from nbmodels.errors import NbModelsError
from nbmodels.ipython.config import POLICY_TRAITS

log = logging.getLogger("nbmodels")

Undo = Callable[[], None]


def _apply(manager: ModelManager, trait: str, value: Any) -> tuple[str, ...]:
    """Give one policy setting to the manager; the lines of the evictions it caused."""
    if trait == "max_memory":
        return manager.set_max_memory(value)
    if trait == "max_loaded_models":
        manager.max_loaded_models = value
    elif trait == "keep_alive":
        manager.keep_alive = value
    elif trait == "evict":
        manager.evict = value
    return ()


def _current(manager: ModelManager) -> dict[str, Any]:
    return {
        "max_memory": manager.max_memory,
        "max_loaded_models": manager.max_loaded_models,
        "keep_alive": manager.keep_alive,
        "evict": manager.evict,
    }


def install_settings(session: Any, manager: Callable[[], ModelManager] = get_manager) -> Undo:
    """Hand the policy settings to the manager now and on every ``%config`` change; the undo restores its own."""
    settings = session.settings
    mgr = manager()
    before = _current(mgr)
    policy = settings.policy()
    defaults = {trait: settings.traits()[trait].default_value for trait in POLICY_TRAITS}
    for trait in POLICY_TRAITS:
        if getattr(settings, trait) == defaults[trait] and policy[trait] == before[trait]:
            continue  # nothing set here: leave what the manager has (set through the API, say)
        try:
            for line in _apply(mgr, trait, policy[trait]):
                print(f"nbmodels: {line}")
        except NbModelsError as exc:
            print(f"nbmodels: NBModels.{trait}={getattr(settings, trait)!r} cannot apply now: {exc}", file=sys.stderr)
    reverting: set[str] = set()

    def changed(change: Any) -> None:
        trait = change["name"]
        if trait in reverting:
            return
        try:
            lines = _apply(mgr, trait, settings.policy()[trait])
        except NbModelsError as exc:
            print(f"nbmodels: NBModels.{trait} stays {change['old']!r}: {exc}", file=sys.stderr)
            reverting.add(trait)
            try:
                setattr(settings, trait, change["old"])
            finally:
                reverting.discard(trait)
            return
        for line in lines:
            print(f"nbmodels: {line}")

    settings.observe(changed, names=list(POLICY_TRAITS))

    def undo() -> None:
        settings.unobserve(changed, names=list(POLICY_TRAITS))
        for trait, value in before.items():
            try:
                _apply(mgr, trait, value)
            except NbModelsError as exc:
                log.warning("nbmodels: restoring %s at %%unload_ext failed: %s", trait, exc)

    return undo


def install_cell_scope(session: Any, manager: Callable[[], ModelManager] = get_manager) -> Undo:
    """Each cell is one use of the models it touches: their idle time starts when it ends."""
    shell = session.shell
    scope = manager().use_scope()

    def started(*_: Any) -> None:
        scope.open()

    def finished(*_: Any) -> None:
        scope.close()

    shell.events.register("pre_run_cell", started)
    shell.events.register("post_run_cell", finished)

    def undo() -> None:
        for event, callback in (("pre_run_cell", started), ("post_run_cell", finished)):
            with contextlib.suppress(ValueError):
                shell.events.unregister(event, callback)
        scope.close()

    return undo


MAGICS = oom.Spelling(unload="%unload_model {name}{force}", cleanup="%model_cleanup{force}", force=" --force")
"""The remedies as the magics that do them: ``%unload_model x``, ``%model_cleanup --force``."""


def account_lines(manager: ModelManager, error: BaseException) -> list[str]:
    """What to print after ``error`` (an out-of-memory error) in a cell."""
    device = oom.device_of(error)
    account = manager.memory_account(device)
    lines = account.lines(MAGICS.command)
    try:  # every other holder on the device, by name (see %memory); never a second problem
        from nbmodels.ipython.memory import holder_lines

        lines[-1:-1] = holder_lines(device, manager)
    except Exception:  # the traceback as text: a kept record would hold the report's frames
        log.error("nbmodels: naming the other holders failed\n%s", traceback.format_exc())
    return [f"nbmodels: {lines[0]}", *lines[1:]]


def install_oom_report(session: Any, manager: Callable[[], ModelManager] = get_manager) -> Undo:
    """After a cell that ran out of memory, print what holds that device (under IPython's own traceback)."""
    shell = session.shell

    def finished(result: Any = None) -> None:
        error = oom.out_of_memory_in(getattr(result, "error_in_exec", None))
        if error is None:
            return
        try:
            lines = account_lines(manager(), error)
        except Exception:  # the account must never turn an out-of-memory error into a second problem
            log.exception("nbmodels: the out-of-memory account failed")
            return
        finally:
            del error
        print("\n".join(lines))

    shell.events.register("post_run_cell", finished)

    def undo() -> None:
        with contextlib.suppress(ValueError):
            shell.events.unregister("post_run_cell", finished)

    return undo


__all__ = ["MAGICS", "account_lines", "install_cell_scope", "install_oom_report", "install_settings"]
