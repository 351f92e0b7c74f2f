"""The panel's "This machine" section: every kernel on this machine, with a Free button per other kernel.

It shows what ``python -m nbmodels ps`` shows (notebook, RSS, GPU memory, models,
idle time), refreshed in a background thread every few seconds while it is
open, and on its Refresh button. **Free** asks that kernel to release its
models (``python -m nbmodels free``) in the background; the answer goes to the
section's status line. It holds readings and pids, never a model.
"""

from __future__ import annotations

import html
import logging
import os
import threading
from collections.abc import Callable
from typing import Any

import ipywidgets as widgets

from nbmodels.core.memory import format_bytes
from nbmodels.machine.errors import MachineError
from nbmodels.machine.files import printable
from nbmodels.machine.free import FreeResult, describe, free_row
from nbmodels.machine.scan import KernelRow, MachineView, OtherProcess, current_user, scan
from nbmodels.machine.view import activity, gpu_lines, gpu_text, models_text, rss_text, summary
from nbmodels.widgets import render
from nbmodels.widgets.tree import close_tree

log = logging.getLogger("nbmodels")

REFRESH_SECONDS = 10.0
CHANGED_DELAY_S = 0.5  # after a change in this kernel, before the section reads the machine again
COLUMNS = ("kernel", "pid", "notebook", "rss", "gpu", "models", "idle")

CSS = """
.nbmodels-machine .nbm-machine-cells { display: grid; align-items: center; column-gap: 10px;
  grid-template-columns: 74px 56px minmax(120px, 1.4fr) 76px minmax(60px, 0.8fr) minmax(140px, 2fr) 64px; }
.nbmodels-machine .nbm-machine-self { font-weight: 600; }
.nbmodels-machine .nbm-machine-plain { color: var(--nbm-faint, #8c959f); }
.nbmodels-machine .nbm-machine-foot { color: var(--nbm-faint, #8c959f); font-size: 11px; margin-top: 2px; }
"""

_ACTIONS_WIDTH = "64px"


def _e(text: object) -> str:
    """HTML-escaped, with control and bidi characters shown as escapes (the text may come from another process)."""
    return html.escape(printable(str(text), 10_000), quote=True)


def header_cells() -> str:
    cells = "".join(f'<div class="nbm-c">{_e(c)}</div>' for c in COLUMNS)
    return f'<div class="nbm-machine-cells nbm-head">{cells}</div>'


def kernel_cells(row: KernelRow, now: float) -> str:
    """One kernel's cells; this kernel in bold, kernels without nbmodels muted."""
    kind = "nbm-machine-self" if row.this_process else ("" if row.nbmodels else "nbm-machine-plain")
    tag = " (this kernel)" if row.this_process else ""
    notebook = os.path.basename(row.notebook) if row.notebook else "?"  # the whole path is in the tooltip
    cells = [
        f'<div class="nbm-c" title="{_e(row.kernel_id or "")}">{_e(row.short_id)}</div>',
        f'<div class="nbm-c nbm-num">{row.pid}</div>',
        f'<div class="nbm-c" title="{_e(row.notebook or "")}">{_e(notebook)}{_e(tag)}</div>',
        f'<div class="nbm-c nbm-num">{_e(rss_text(row))}</div>',
        f'<div class="nbm-c">{_e(gpu_text(row.gpu))}</div>',
        f'<div class="nbm-c" title="{_e(models_text(row))}">{_e(models_text(row))}</div>',
        f'<div class="nbm-c">{_e(activity(row, now))}</div>',
    ]
    return f'<div class="nbm-machine-cells {kind}">' + "".join(cells) + "</div>"


def other_cells(other: OtherProcess) -> str:
    cells = [
        '<div class="nbm-c">other</div>',
        f'<div class="nbm-c nbm-num">{other.pid}</div>',
        f'<div class="nbm-c" title="{_e(other.command)}">{_e(other.command)}</div>',
        f'<div class="nbm-c nbm-num">{_e(format_bytes(other.rss))}</div>',
        f'<div class="nbm-c">{_e(gpu_text(other.gpu))}</div>',
        '<div class="nbm-c"></div><div class="nbm-c"></div>',
    ]
    return '<div class="nbm-machine-cells nbm-machine-plain">' + "".join(cells) + "</div>"


def can_free(row: KernelRow) -> bool:
    """A Free button for another kernel of this user that runs nbmodels (this one has Clean up all)."""
    return row.nbmodels and not row.this_process and row.user == current_user()


class KernelLine:
    """One line of the section: a kernel's cells and, where it makes sense, its Free button."""

    def __init__(self, section: MachineSection, pid: int) -> None:
        self.pid = pid
        self.cells = widgets.HTML(layout=widgets.Layout(flex="1 1 auto", min_width="0"))
        self.free_button = widgets.Button(description="Free", tooltip="ask this kernel to release its models")
        self.free_button.add_class("nbm-small")
        self.free_button.add_class("nbmodels-free")
        self.free_button.layout.width = "auto"
        self.free_button.on_click(lambda _: section.free(pid))
        self.actions = widgets.HBox([], layout=widgets.Layout(width=_ACTIONS_WIDTH, flex="0 0 auto"))
        self.actions.add_class("nbmodels-actions")
        self.box = widgets.HBox([self.cells, self.actions], layout=widgets.Layout(width="100%"))
        self.box.add_class("nbmodels-row")
        self.box.add_class(f"nbmodels-kernel-{pid}")

    def show(self, cells: str, freeable: bool, busy: bool) -> None:
        self.cells.value = cells
        self.actions.children = [self.free_button] if freeable else []
        self.free_button.disabled = busy
        self.free_button.description = "Freeing…" if busy else "Free"

    def close(self) -> None:
        close_tree(self.box)


class MachineSection:
    """Every kernel on this machine, kept fresh while shown; ``.box`` is the widget to display.

    ``scanner`` reads the machine and ``freer`` asks a kernel to free (the
    defaults are :func:`nbmodels.machine.scan` and :func:`nbmodels.machine.free_row`);
    ``interval`` is the background refresh period, None for none.
    """

    def __init__(
        self,
        *,
        scanner: Callable[[], MachineView] = scan,
        freer: Callable[[KernelRow], FreeResult] = free_row,
        interval: float | None = REFRESH_SECONDS,
        start: bool = True,
    ) -> None:
        self._scanner = scanner
        self._interval = interval
        self._refresher: threading.Thread | None = None
        self._paused: threading.Event | None = None  # set to end the running refresher (pause or close)
        self._soon: threading.Timer | None = None  # a reading after a change here (see changed_here)
        self._freer = freer
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._freeing: set[int] = set()
        self._jobs: list[threading.Thread] = []
        self.view: MachineView | None = None
        self.lines: dict[int, KernelLine] = {}
        self._other_lines: list[widgets.HTML] = []

        self.summary = widgets.HTML("looking for kernels…", layout=widgets.Layout(flex="1 1 auto"))
        self.summary.add_class("nbm-machine-summary")
        self.refresh_button = widgets.Button(description="Refresh", tooltip="read every kernel again")
        self.refresh_button.add_class("nbm-small")
        self.refresh_button.add_class("nbmodels-machine-refresh")
        self.refresh_button.layout.width = "auto"
        self.refresh_button.on_click(lambda _: self._in_background(self.refresh))
        title = widgets.HTML('<div class="nbm-section">This machine</div>', layout=widgets.Layout(flex="0 0 auto"))
        header = widgets.HBox([title, self.summary, self.refresh_button])
        header.layout.align_items = "center"
        head = widgets.HBox(
            [
                widgets.HTML(header_cells(), layout=widgets.Layout(flex="1 1 auto", min_width="0")),
                widgets.HTML(layout=widgets.Layout(width=_ACTIONS_WIDTH, flex="0 0 auto")),
            ]
        )
        head.add_class("nbmodels-header-row")
        self.table = widgets.VBox([head])
        self.foot = widgets.HTML()
        self.status = widgets.HTML()
        style = widgets.HTML(f"<style>{CSS}</style>")
        self.box = widgets.VBox([style, header, self.table, self.foot, self.status])
        self.box.add_class("nbmodels-machine")
        self.box.observe(self._on_comm, names="comm")  # closed with the panel: stop refreshing at once
        self._set_status("", "info")
        if start:
            self.start()

    def start(self) -> None:
        """Start the background refresh (the panel does it when it is shown); a running one is left as it is."""
        with self._lock:
            if self._interval is None or self._refresher is not None or self.closed:
                return
            name = f"nbmodels-machine-{self.box.model_id}"
            self._paused = threading.Event()
            self._refresher = threading.Thread(
                target=self._keep_fresh, args=(self._interval, self._paused), name=name, daemon=True
            )
            self._refresher.start()

    def pause(self) -> None:
        """Stop reading the machine until :meth:`start` (the panel does it when its last view is gone).

        A panel nobody sees must cost nothing: a reading of every kernel every few
        seconds is CPU taken from the user's own work.
        """
        with self._lock:
            if self._paused is not None:
                self._paused.set()
            if self._soon is not None:
                self._soon.cancel()
            self._paused = None
            self._refresher = None
            self._soon = None

    # --- reading ------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._stop.is_set() or self.box.comm is None

    def _on_comm(self, change: dict[str, Any]) -> None:
        if change["new"] is None:
            self._stop.set()
            self.pause()

    def _keep_fresh(self, interval: float, paused: threading.Event) -> None:
        while not self.closed and not paused.is_set():
            try:
                self.refresh()
            except Exception as exc:  # one bad reading must not end the refresher
                log.warning("nbmodels: the machine section could not redraw: %r", exc)
            if paused.wait(interval):
                break

    def refresh(self) -> None:
        """Read the machine and redraw the section (any thread)."""
        try:
            view = self._scanner()
        except MachineError as exc:
            self._set_status(printable(str(exc), 400), "error")
            return
        except Exception as exc:  # the refresher must outlive anything a file or a process does to one reading
            log.warning("nbmodels: reading the machine failed: %r", exc)
            self._set_status(printable(f"reading the machine failed: {exc!r}", 400), "error")
            return
        with self._lock:
            if self.closed:
                return
            self.view = view
            gone = [self.lines.pop(pid) for pid in [pid for pid in self.lines if view.kernel(pid) is None]]
            for row in view.kernels:
                line = self.lines.get(row.pid)
                if line is None:
                    line = self.lines[row.pid] = KernelLine(self, row.pid)
                line.show(kernel_cells(row, view.taken_at), can_free(row), row.pid in self._freeing)
            old_others = self._other_lines
            self._other_lines = [widgets.HTML(other_cells(other)) for other in view.others]
            body: list[widgets.Widget] = [self.lines[row.pid].box for row in view.kernels]
            self.table.children = [self.table.children[0], *body, *self._other_lines]
            for widget in [*gone, *old_others]:  # closed only once no layout shows them: see ipywidgets' embed
                widget.close()
            self.summary.value = _e(summary(view, star=False))
            foot = [*gpu_lines(view), *view.warnings]
            self.foot.value = "".join(f'<div class="nbm-machine-foot">{_e(line)}</div>' for line in foot)

    # --- freeing ------------------------------------------------------------------

    def free(self, pid: int) -> None:
        """Ask kernel ``pid`` to release its models, in the background; the answer goes to the status line."""
        with self._lock:
            row = self.view.kernel(pid) if self.view is not None else None
            if row is None or pid in self._freeing:
                return
            self._freeing.add(pid)
        self._set_status(f"asking {describe(row)} to release its models…", "busy")
        self.refresh_line(row)

        def job() -> None:
            try:
                result = self._freer(row)
            except MachineError as exc:
                self._set_status(str(exc), "error")
            else:
                self._set_status(" · ".join(line.strip() for line in result.lines()), _kind(result))
            finally:
                with self._lock:
                    self._freeing.discard(pid)
                self.refresh()

        self._in_background(job)

    def changed_here(self, delay: float = CHANGED_DELAY_S) -> None:
        """This kernel's models changed: read the machine again shortly, while it refreshes at all.

        ``delay`` gives this kernel's state writer (a thread of its own, milliseconds)
        time to write the change first; changes in a burst make one reading.
        """
        with self._lock:
            if self._refresher is None or self.closed or self._soon is not None:
                return
            self._soon = threading.Timer(delay, self._read_soon)
            self._soon.daemon = True
            self._soon.start()

    def _read_soon(self) -> None:
        with self._lock:
            self._soon = None
            paused = self._refresher is None or self.closed
        if not paused:
            self.refresh()

    def refresh_line(self, row: KernelRow) -> None:
        with self._lock:
            line = self.lines.get(row.pid)
            if line is not None and self.view is not None:
                line.show(kernel_cells(row, self.view.taken_at), can_free(row), row.pid in self._freeing)

    def wait(self, timeout: float) -> bool:
        """Wait for the Free and Refresh jobs started so far; True when all have finished."""
        for job in list(self._jobs):
            job.join(timeout)
        return not any(job.is_alive() for job in self._jobs)

    def _in_background(self, job: Callable[[], None]) -> None:
        worker = threading.Thread(target=job, name="nbmodels-machine-job", daemon=True)
        self._jobs = [j for j in self._jobs if j.is_alive()] + [worker]
        worker.start()

    def _set_status(self, text: str, kind: render.StatusKind) -> None:
        self.status_text, self.status_kind = text, kind
        with self._lock:
            if not self.closed:
                self.status.value = render.status_line(text, kind) if text else ""

    # --- closing ------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            self._stop.set()
            self.pause()  # the refresher ends now, not after its wait
            self.lines.clear()
            self._other_lines = []
            close_tree(self.box)  # the table, its rows and every Layout: none left open with closed children

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.box._repr_mimebundle_(**kwargs)


def _kind(result: FreeResult) -> render.StatusKind:
    return "warn" if result.still_alive or result.reply.get("errors") else "ok"


__all__ = ["MachineSection", "can_free", "kernel_cells", "other_cells"]
