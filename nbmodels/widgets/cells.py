"""Which notebook cell is running, and the panels each cell's output shows.

Re-running a cell replaces its output: the front end drops the old panel's
view, but the kernel keeps the widget (the widget registry and its comm hold
it) and, without this, the panel would go on following the manager. So a
panel shown from a cell is recorded under that cell's id, and when a later
run of the same cell shows a panel, the panels the earlier run showed there
are closed, unless they are shown in another cell too.

The cell id is the one Jupyter front ends send with each execute request
(JupyterLab and Notebook 7 do; IPython passes it to ``run_cell`` and keeps it
in the running cell's ``ExecutionInfo``). Without one (a terminal, a runner
that sends none) nothing is recorded and nothing is replaced.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class Cell:
    """One run of one cell: its id and the execution count of that run."""

    id: str
    run: int


class Closable(Protocol):
    def close(self) -> None: ...


def current_cell(shell: Any = None) -> Cell | None:
    """The cell running now, or None outside a cell (or when the front end sent no id)."""
    if shell is None:
        try:
            from IPython import get_ipython
        except ImportError:
            return None
        shell = get_ipython()
    if shell is None:
        return None
    result = getattr(getattr(shell, "displayhook", None), "exec_result", None)
    info = getattr(result, "info", None)
    cell_id = getattr(info, "cell_id", None)
    if not cell_id:  # older stacks: the id is in the execute request's metadata
        kernel = getattr(shell, "kernel", None)
        parent = kernel.get_parent() if kernel is not None and hasattr(kernel, "get_parent") else {}
        cell_id = (parent.get("metadata") or {}).get("cellId") if isinstance(parent, dict) else None
    if not cell_id or not isinstance(cell_id, str):
        return None
    run = getattr(result, "execution_count", None)
    return Cell(cell_id, run if isinstance(run, int) else 0)


class CellOutputs:
    """Panels shown from each cell, held weakly, so re-running a cell closes what it showed before."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._shown: dict[str, list[tuple[int, weakref.ref[Closable]]]] = {}
        self._cells: weakref.WeakKeyDictionary[Closable, set[str]] = weakref.WeakKeyDictionary()

    def shown(self, panel: Closable, cell: Cell | None) -> list[Closable]:
        """Record that ``panel`` is shown from ``cell``; return the panels an earlier run showed there,
        now shown nowhere else, for the caller to close."""
        if cell is None:
            return []
        stale: list[Closable] = []
        with self._lock:
            kept: list[tuple[int, weakref.ref[Closable]]] = []
            for run, ref in self._shown.get(cell.id, []):
                old = ref()
                if old is None:
                    continue
                if run >= cell.run or old is panel:  # this very run (two panels in one cell), or itself
                    kept.append((run, ref) if old is not panel else (cell.run, ref))
                    continue
                cells = self._cells.get(old, set())
                cells.discard(cell.id)
                if not cells:
                    stale.append(old)
            if not any(ref() is panel for _, ref in kept):
                kept.append((cell.run, weakref.ref(panel)))
            self._shown[cell.id] = kept
            self._cells.setdefault(panel, set()).add(cell.id)
        return stale

    def forget(self, panel: Closable) -> None:
        """A closed panel is shown nowhere."""
        with self._lock:
            cells = self._cells.pop(panel, set())
            for cell_id in cells:
                entries = [(run, ref) for run, ref in self._shown.get(cell_id, []) if ref() not in (None, panel)]
                if entries:
                    self._shown[cell_id] = entries
                else:
                    self._shown.pop(cell_id, None)

    def cells_of(self, panel: Closable) -> set[str]:
        with self._lock:
            return set(self._cells.get(panel, set()))


OUTPUTS = CellOutputs()
"""The process-wide record (one kernel, one notebook front end or more)."""
