"""The live model panel: memory per device, the loaded models, load / unload / move / clean up.

The panel only renders manager state and calls the manager. It keeps names and
ModelInfo records, never a model, so it cannot keep one alive. It follows the
manager's events, so a change made by a magic, the API, another thread or
another panel shows up without a refresh. Every widget update goes through
:meth:`ModelPanel.refresh`, under one lock, whichever thread triggers it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import ipywidgets as widgets

from nbmodels.core.devices import cuda_device_count
from nbmodels.core.manager import ModelManager, get_manager
from nbmodels.core.memory import device_readings
from nbmodels.core.reports import Event, ModelInfo
from nbmodels.widgets import render
from nbmodels.widgets.machine import MachineSection
from nbmodels.widgets.options import parse_options
from nbmodels.widgets.style import CSS


def _actions_width(gpu: bool) -> str:
    """Room for the row buttons: Unload, plus Offload/Move when there is a GPU."""
    return "200px" if gpu else "84px"


def _button(description: str, css: str, tooltip: str, *, small: bool = True, **kwargs: Any) -> widgets.Button:
    button = widgets.Button(description=description, tooltip=tooltip, **kwargs)
    button.add_class(css)
    if small:
        button.add_class("nbm-small")
        button.layout.width = "auto"
    return button


class ModelRow:
    """One loaded model's row: its cells and its buttons. Knows the model by name only."""

    def __init__(self, panel: ModelPanel, name: str, gpu: bool) -> None:
        self.name = name
        self.cells = widgets.HTML(layout=widgets.Layout(flex="1 1 auto", min_width="0"))
        self.unload_button = _button("Unload", "nbmodels-unload", f"unload {name} and free its memory")
        self.unload_button.on_click(lambda _: panel.unload(name))
        buttons: list[widgets.Widget] = [self.unload_button]
        self.move_button: widgets.Button | None = None
        self._move_target = "cuda:0"
        if gpu:
            self.move_button = _button("To GPU", "nbmodels-move", "")
            self.move_button.on_click(lambda _: panel.move(name, self._move_target))
            buttons.insert(0, self.move_button)
        actions = widgets.HBox(buttons, layout=widgets.Layout(width=_actions_width(gpu), flex="0 0 auto"))
        actions.add_class("nbmodels-actions")
        self.box = widgets.HBox([self.cells, actions], layout=widgets.Layout(width="100%"))
        self.box.add_class("nbmodels-row")
        self.box.add_class(f"nbmodels-row-{render.css_name(name)}")
        self.info: ModelInfo | None = None

    def show(self, info: ModelInfo, largest: int, busy: bool) -> None:
        self.info = info
        self.cells.value = render.row_cells(info, largest)
        if self.move_button is not None:
            on_gpu = (info.device or "").startswith("cuda")
            self._move_target = "cpu" if on_gpu else "cuda:0"
            self.move_button.description = "Offload to CPU" if on_gpu else "Move to GPU"
            self.move_button.tooltip = f"move {self.name} to {self._move_target}"
            self.move_button.disabled = busy

    def close(self) -> None:
        for child in (self.box, *self.box.children, *self.box.children[1].children):
            child.close()


class ModelPanel:
    """A live view of one ModelManager with load, unload, move and cleanup controls.

    ``ModelPanel()`` follows the process-wide manager; pass ``manager=`` to follow
    another. Display it like a widget; :meth:`close` removes it and stops
    following the manager.
    """

    def __init__(self, manager: ModelManager | None = None, *, cuda_devices: int | None = None) -> None:
        self._manager = manager if manager is not None else get_manager()
        self._cuda_devices = cuda_device_count() if cuda_devices is None else cuda_devices
        self._lock = threading.RLock()
        self._closed = False
        self._busy: str | None = None
        self._worker: threading.Thread | None = None
        self.status_text = "ready"
        self.status_kind: render.StatusKind = "info"
        self.rows: dict[str, ModelRow] = {}
        self._pending_rows: dict[str, widgets.HTML] = {}
        self._build()
        self._unsubscribe: Callable[[], None] | None = self._manager.subscribe(self._on_event)
        self.refresh()

    # --- layout -----------------------------------------------------------------

    def _build(self) -> None:
        brand = widgets.HTML(
            f'<style>{CSS}</style><div class="nbm-brand"><span class="nbm-logo">◆</span>nbmodels</div>',
            layout=widgets.Layout(width="auto", flex="0 0 auto"),
        )
        self.summary = widgets.HTML(layout=widgets.Layout(flex="1 1 auto", margin="0 0 0 12px"))
        self.summary.add_class("nbmodels-summary")
        self.refresh_button = _button("", "nbmodels-refresh", "refresh readings", small=False, icon="refresh")
        self.refresh_button.add_class("nbm-icon")
        self.refresh_button.on_click(lambda _: self.refresh())
        self.close_button = _button("", "nbmodels-close", "close this panel", small=False, icon="times")
        self.close_button.add_class("nbm-icon")
        self.close_button.on_click(lambda _: self.close())
        header = widgets.HBox([brand, self.summary, self.refresh_button, self.close_button])
        header.layout.align_items = "center"

        self.memory = widgets.HTML()
        self.memory.add_class("nbmodels-memory")

        head = widgets.HBox(
            [
                widgets.HTML(render.header_cells(), layout=widgets.Layout(flex="1 1 auto", min_width="0")),
                widgets.HTML(layout=widgets.Layout(width=_actions_width(self._cuda_devices > 0), flex="0 0 auto")),
            ]
        )
        head.add_class("nbmodels-header-row")
        self._empty = widgets.HTML(render.empty_table())
        self.table = widgets.VBox([head])
        self.table.add_class("nbmodels-table")

        self.name = widgets.Combobox(
            placeholder="name", ensure_option=False, layout=widgets.Layout(width="150px"), tooltip="model name"
        )
        self.name.add_class("nbmodels-name")
        self.source = widgets.Text(
            placeholder="source: demo:mlp, path, pkg.mod:fn", layout=widgets.Layout(width="250px")
        )
        self.source.add_class("nbmodels-source")
        self.options = widgets.Text(placeholder="options: size_mb=64", layout=widgets.Layout(width="150px"))
        self.options.add_class("nbmodels-options")
        devices = ["auto", "cpu"] + [f"cuda:{i}" for i in range(self._cuda_devices)]
        self.device = widgets.Dropdown(options=devices, value="auto", layout=widgets.Layout(width="90px"))
        self.device.add_class("nbmodels-device")
        self.load_button = _button(
            "Load", "nbmodels-load", "load in the background", small=False, button_style="primary", icon="download"
        )
        self.load_button.layout.width = "110px"
        self.load_button.on_click(lambda _: self.load())
        form = widgets.HBox([self.name, self.source, self.options, self.device, self.load_button])
        form.add_class("nbm-form")

        self.force = widgets.Checkbox(
            value=False,
            description="force",
            indent=False,
            tooltip="also remove what still holds the models (the leak hunter)",
            layout=widgets.Layout(width="80px", margin="0 0 0 8px"),
        )
        self.force.add_class("nbmodels-force")
        self.cleanup_button = _button(
            "Clean up all", "nbmodels-cleanup", "unload every model and free the memory", small=False
        )
        self.cleanup_button.layout.width = "120px"
        self.cleanup_button.on_click(lambda _: self.cleanup())
        cleanup = widgets.HBox([self.cleanup_button, self.force])
        cleanup.layout.align_items = "center"

        self.status = widgets.HTML()
        self.status.add_class("nbmodels-status")

        def section(title: str) -> widgets.HTML:
            return widgets.HTML(f'<div class="nbm-section">{title}</div>')

        self.widget = widgets.VBox(
            [
                header,
                section("Memory"),
                self.memory,
                section("Models"),
                self.table,
                section("Load"),
                form,
                cleanup,
                self.status,
                MachineSection().box,  # every kernel on this machine, with Free buttons (nbmodels.widgets.machine)
            ]
        )
        self.widget.add_class("nbmodels-panel")

    # --- display ----------------------------------------------------------------

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        """The widget view, with a plain-text table for front ends that cannot show widgets."""
        bundle = self.widget._repr_mimebundle_(**kwargs)
        if isinstance(bundle, dict):
            bundle["text/plain"] = f"{self!r}\n{self._manager.list()}"
        return bundle

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self.rows)} model(s)"
        return f"<nbmodels panel: {state}>"

    # --- the one update path ------------------------------------------------------

    def refresh(self, status: str | None = None, kind: render.StatusKind = "info") -> None:
        """Re-read the manager and the memory readings and update every widget (any thread)."""
        with self._lock:
            if self._closed:
                return
            infos = self._manager.list()
            loading = [n for n in self._manager.loading() if n not in {i.name for i in infos}]
            busy = self._busy is not None
            largest = max((i.total_bytes or 0 for i in infos), default=0)
            for name in [n for n in self.rows if n not in {i.name for i in infos}]:
                self.rows.pop(name).close()
            for name in [n for n in self._pending_rows if n not in loading]:
                self._pending_rows.pop(name).close()
            for info in infos:
                row = self.rows.get(info.name)
                if row is None:
                    row = self.rows[info.name] = ModelRow(self, info.name, gpu=self._cuda_devices > 0)
                row.show(info, largest, busy)
            for name in loading:
                if name not in self._pending_rows:
                    pending = widgets.HTML(render.pending_cells(name))
                    pending.add_class("nbmodels-pending")
                    pending.add_class(f"nbmodels-pending-{render.css_name(name)}")
                    self._pending_rows[name] = pending
            body: list[widgets.Widget] = [row.box for row in self.rows.values()]
            body += list(self._pending_rows.values())
            self.table.children = [self.table.children[0], *(body or [self._empty])]

            model_bytes: dict[str, int] = {}
            for info in infos:
                for device, nbytes in info.bytes_by_device.items():
                    model_bytes[device] = model_bytes.get(device, 0) + nbytes
            self.memory.value = render.memory_bars(device_readings(), model_bytes, self._cuda_devices)
            self.summary.value = render.summary(infos, loading)
            registered = sorted(set(self._manager.registered()) | {i.name for i in infos})
            if list(self.name.options) != registered:
                self.name.options = registered

            self.load_button.disabled = busy
            self.load_button.description = "Loading…" if busy else "Load"
            self.load_button.icon = "" if busy else "download"
            if busy:
                self.load_button.add_class("nbm-busy")
            else:
                self.load_button.remove_class("nbm-busy")
            if status is not None:
                self.status_text, self.status_kind = status, kind
            self.status.value = render.status_line(self.status_text, self.status_kind)

    def _on_event(self, event: Event) -> None:
        """Manager events arrive on whichever thread made the change."""
        if event.kind == "load_started":
            self.refresh(f"loading {event.name}…", "busy")
        elif event.kind == "load_finished" and event.info is not None:
            self.refresh(f"loaded {event.info.summary()}", "ok")
        elif event.kind == "load_failed":
            self.refresh(event.error or f"loading {event.name} failed", "error")
        elif event.kind in ("unloaded", "cleanup") and event.report is not None:
            self.refresh(*render.report_text(event.report))
        elif event.kind == "moved" and event.info is not None:
            self.refresh(f"moved {event.name} to {event.info.device}", "ok")
        else:
            self.refresh()

    # --- actions ------------------------------------------------------------------

    def load(self) -> None:
        """Load what the form says, in a background thread; errors go to the status line."""
        name = self.name.value.strip()
        source = self.source.value.strip() or None
        device = self.device.value
        if not name:
            self.refresh("type or pick a model name first", "error")
            return
        try:
            options = parse_options(self.options.value)
        except ValueError as exc:
            self.refresh(str(exc), "error")
            return
        manager = self._manager

        def job() -> None:
            manager.load(name, source, device=device, **options)  # the model is not kept

        self._start(f"loading {name}…", job)

    def move(self, name: str, device: str) -> None:
        """Move a loaded model (offload to the CPU or back to a GPU) in the background."""
        manager = self._manager

        def job() -> None:
            manager.move(name, device)

        self._start(f"moving {name} to {device}…", job)

    def unload(self, name: str) -> None:
        """Unload one model now; the report (or the error) goes to the status line."""
        try:
            self._manager.unload(name)
        except Exception as exc:
            self.refresh(str(exc), "error")

    def cleanup(self) -> None:
        """Release every model; with the force box ticked, ``cleanup(force=True)``."""
        try:
            self._manager.cleanup(force=bool(self.force.value))
        except Exception as exc:
            self.refresh(str(exc), "error")

    def _start(self, label: str, job: Callable[[], None]) -> None:
        with self._lock:
            if self._busy is not None:
                self.refresh(f"wait: still {self._busy}", "warn")
                return
            self._busy = label
            worker = self._worker = threading.Thread(target=self._run, args=(job,), name="nbmodels-panel", daemon=True)
        self.refresh(label, "busy")
        worker.start()

    def _run(self, job: Callable[[], None]) -> None:
        status: tuple[str, render.StatusKind] | None = None
        try:
            job()
        except Exception as exc:
            status = (str(exc) or type(exc).__name__, "error")
        finally:
            with self._lock:
                self._busy = None
            if status is not None:
                self.refresh(*status)
            else:
                self.refresh()

    @property
    def busy(self) -> bool:
        """True while a load or move started from this panel runs."""
        return self._busy is not None

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the background job; True when none is running."""
        worker = self._worker
        if worker is not None:
            worker.join(timeout)
        return not self.busy

    # --- closing ------------------------------------------------------------------

    def close(self) -> None:
        """Stop following the manager and remove the panel from the page."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._unsubscribe is not None:
                self._unsubscribe()
                self._unsubscribe = None
            for row in self.rows.values():
                row.close()
            self.rows.clear()
            for pending in self._pending_rows.values():
                pending.close()
            self._pending_rows.clear()
            _close_tree(self.widget)
            self._empty.close()

    @property
    def closed(self) -> bool:
        return self._closed


def _close_tree(widget: widgets.Widget) -> None:
    for child in getattr(widget, "children", ()):
        _close_tree(child)
    widget.close()
