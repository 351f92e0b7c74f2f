"""``%memory``: where the kernel's memory is, every live tensor under the notebook name that holds it.

The core (:mod:`nbmodels.core.attribution`) returns the report as data; this
module gives it IPython's sites (through the manager's holder finders) and
spells its remedies as a notebook user runs them: ``del x``,
``get_ipython().del_var('_7')`` for an output (IPython's own delete by
identity: ``Out[7]``, ``_7``, ``_``, the hidden copies and the display hook at
once, where ``del Out[7]`` alone frees nothing), ``opt.state.clear()``,
``%unload_model m --force``. ``%memory --diff`` compares with the previous
``%memory`` of this shell.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from IPython.core.magic import Magics, magics_class

from nbmodels.core import ModelManager, get_manager
from nbmodels.core.memory import format_bytes
from nbmodels.core.policy.sizes import parse_size
from nbmodels.errors import NbModelsError
from nbmodels.ipython.magics import _usage, argument, line_magic, magic_arguments, one_line, parse_line

if TYPE_CHECKING:  # the attribution is imported by the first %memory: %load_ext should not pay for it
    from nbmodels.core.attribution import MemoryDiff, MemoryReport, MemoryRow, Remedy

_OUTPUT = re.compile(r"_\d+")


def spell(row: MemoryRow) -> list[str]:
    """The commands that free ``row`` in a notebook, in order, each runnable as written."""
    outputs: dict[int, str] = {}  # group -> the `_N` name IPython's del_var deletes it by
    for holding in row.holders:
        target = holding.remedy.target
        if holding.remedy.kind == "output" and _OUTPUT.fullmatch(target):
            outputs.setdefault(holding.group, target)
    commands: list[str] = []
    words: list[str] = []  # holders no Python names: said as a comment, last, so the line still runs
    for remedy in row.remedies:
        text = _spell(remedy)
        group = next((h.group for h in row.holders if h.remedy == remedy), None)
        if group in outputs and remedy.kind in ("output", "python") and _is_output_holder(row, remedy):
            text = f"get_ipython().del_var({outputs[group]!r})"
        if remedy.kind == "none" and remedy.target:
            words.append(remedy.target)
        elif text and text not in commands:
            commands.append(text)
    return commands + ([f"# also: {'; '.join(words)}"] if words else [])


def _is_output_holder(row: MemoryRow, remedy: Remedy) -> bool:
    return any(h.remedy == remedy and h.kind == "output" for h in row.holders)


def _spell(remedy: Remedy) -> str:
    if remedy.kind == "unload":
        return f"%unload_model {shlex.quote(remedy.target)} --force"
    return remedy.command


def unload(name: str) -> Remedy:
    from nbmodels.core.attribution import Remedy

    return Remedy("unload", name, f"%unload_model {shlex.quote(name)} --force")


def report(
    manager: ModelManager | None = None, *, threshold: int | None = None, everything: bool = False
) -> MemoryReport:
    """The report with IPython's spelling (what ``%memory`` shows)."""
    from nbmodels.core.attribution import memory_report

    kwargs: dict[str, Any] = {"everything": everything, "unload": unload}
    if threshold is not None:
        kwargs["threshold"] = threshold
    return dataclasses.replace(memory_report(manager, **kwargs), spell=spell)


def holder_lines(device: str, manager: ModelManager | None = None, *, limit: int = 5) -> list[str]:
    """The largest holders on ``device`` that are not models, each with what frees it: for the out-of-memory
    account, where "other memory" alone does not say what to delete."""
    found = report(manager)
    rows = [r for r in found.rows if r.device == device and r.kind not in ("model", "released model", "smaller")]
    if not rows:
        return []
    lines = [f"  other memory on {device} by holder (%memory lists every one):"]
    for row in rows[:limit]:
        command = found.commands(row).replace("\n", " ; ")
        lines.append(f"    {row.owner} {format_bytes(row.nbytes)}" + (f": {command}" if command else ""))
    return lines


@magics_class
class MemoryMagics(Magics):
    """``%memory``: the kernel's memory, attributed."""

    def __init__(self, shell: Any = None, manager: Callable[[], ModelManager] = get_manager) -> None:
        super().__init__(shell)
        self._manager = manager
        self.previous: MemoryReport | None = None

    @line_magic
    @magic_arguments()
    @argument("--all", action="store_true", help="every owner, however small (default: owners of 1 MiB or more)")
    @argument("--threshold", default=None, metavar="SIZE", help="the smallest owner listed on its own (1MiB, 500KB)")
    @argument("--diff", action="store_true", help="what changed since the previous %%memory: added and freed")
    def memory(self, line: str) -> MemoryReport | MemoryDiff:
        """Where the kernel's memory is: each managed model, each released model still held, every other
        live tensor under the name that holds it (largest first) with the command that frees it, then per
        device what is not in live tensors. Returns the report (data); ``--diff`` returns the changes."""
        args = parse_line(self.memory, "memory", line)
        threshold = None
        if args.threshold is not None:
            try:
                size = parse_size(args.threshold, what="--threshold")
            except (NbModelsError, ValueError) as exc:
                _usage("memory", one_line(exc))
            if not isinstance(size, int) or size < 0:
                _usage("memory", f"--threshold takes a size in bytes (1MiB, 500KB), not {args.threshold!r}")
            threshold = size
        found = report(self._manager(), threshold=threshold, everything=args.all)
        before, self.previous = self.previous, found
        if args.diff:
            if before is None:
                from nbmodels.core.attribution import MemoryReport

                return found.diff(MemoryReport((), (), {}, {}, found.threshold))
            return found.diff(before)
        return found


def install(session: Any) -> Callable[[], None]:
    """Register ``%memory`` with the shell; returns the undo."""
    shell = session.shell
    magics = MemoryMagics(shell)
    shell.register_magics(magics)

    def undo() -> None:
        manager = shell.magics_manager
        for kind, table in magics.magics.items():
            for name, func in table.items():
                if manager.magics[kind].get(name) == func:
                    del manager.magics[kind][name]
        if manager.registry.get(type(magics).__name__) is magics:
            del manager.registry[type(magics).__name__]

    return undo


__all__ = ["MemoryMagics", "holder_lines", "install", "report", "spell"]
