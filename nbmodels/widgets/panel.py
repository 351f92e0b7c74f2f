"""The live model panel: memory per device, the loaded models, load / unload / move / force / clean up.

``ModelPanel`` is an ipywidgets ``VBox``: it composes inside a user's
``VBox`` or ``Tab``, works wherever widgets do (JupyterLab, Notebook 7,
Voilà), and ``display(panel)`` is ordinary. It only renders manager state and
calls the manager; it keeps names and records (ModelInfo, the holder plan),
never a model, so it cannot keep one alive.

Its life:

* While it is **shown**, it follows the manager's events (a change made by a
  magic, the API, another thread or another panel shows up without a
  refresh) and re-reads device memory on a timer (``refresh_interval``, 2 s),
  so memory taken or freed outside nbmodels shows too.
* When the front end reports that every view of it is gone (its output was
  cleared, its cell re-run, its notebook closed) it goes **dormant**: no
  subscription, no timer, so a forgotten panel costs nothing. A view shown
  again (an undo, a paste) wakes it.
* A later run of the cell that showed it, showing a panel again, **closes** it
  (:mod:`nbmodels.widgets.cells`); so does :meth:`close` or its close button.
* The manager holds it only weakly and the timer thread only through a weak
  method, so neither keeps a panel alive.

Every widget update goes through :meth:`ModelPanel.refresh`, under one lock,
whichever thread triggers it.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ipywidgets as widgets
import traitlets

from nbmodels.core.devices import cuda_device_count
from nbmodels.core.manager import ModelManager, get_manager
from nbmodels.core.memory import DeviceMemory, device_readings
from nbmodels.core.reports import Event, ModelInfo, ReleaseReport
from nbmodels.core.sources import from_namespace
from nbmodels.widgets import cells, force, render
from nbmodels.widgets.capture import OutputSink, output_into
from nbmodels.widgets.machine import MachineSection
from nbmodels.widgets.memory import MemorySection
from nbmodels.widgets.options import check_form_options, parse_options
from nbmodels.widgets.style import CSS
from nbmodels.widgets.timer import RefreshTimer
from nbmodels.widgets.tree import close_tree

DEFAULT_REFRESH_S = 2.0
PENDING_TICK_S = 1.0  # while a load runs, its row's elapsed time moves once a second


def _actions_width(gpu: bool) -> str:
    """Room for the row buttons: Pin and Unload, plus Offload/Move when there is a GPU."""
    return "260px" if gpu else "150px"


def _button(description: str, css: str, tooltip: str, *, small: bool = True, **kwargs: Any) -> widgets.Button:
    button = widgets.Button(description=description, tooltip=tooltip, **kwargs)
    button.add_class(css)
    if small:
        button.add_class("nbm-small")
        button.layout.width = "auto"
    return button


def _row(name: str, kind: str, buttons: list[widgets.Widget], gpu: bool) -> tuple[widgets.HTML, widgets.HBox]:
    """A table row: its text cells (filled by the caller) and its buttons on the right."""
    cells = widgets.HTML(layout=widgets.Layout(flex="1 1 auto", min_width="0"))
    actions = widgets.HBox(buttons, layout=widgets.Layout(width=_actions_width(gpu), flex="0 0 auto"))
    actions.add_class("nbmodels-actions")
    box = widgets.HBox([cells, actions], layout=widgets.Layout(width="100%"))
    box.add_class(f"nbmodels-{kind}")
    box.add_class(f"nbmodels-{kind}-{render.css_name(name)}")
    return cells, box


class ModelRow:
    """One loaded model's row: its cells and its buttons. Knows the model by name only."""

    def __init__(self, panel: ModelPanel, name: str, gpu: bool) -> None:
        self.name = name
        self.unload_button = _button("Unload", "nbmodels-unload", f"unload {name} and free its memory")
        self.unload_button.on_click(lambda _: panel.unload(name))
        self.pin_button = _button(
            "Pin", "nbmodels-pin", f"pin {name}: no budget evicts it, keep-alive never unloads it"
        )
        self.pin_button.on_click(lambda _: panel.toggle_pin(name))
        buttons: list[widgets.Widget] = [self.pin_button, self.unload_button]
        self.move_button: widgets.Button | None = None
        self._move_target = "cuda:0"
        if gpu:
            self.move_button = _button("To GPU", "nbmodels-move", "")
            self.move_button.on_click(lambda _: panel.move(name, self._move_target))
            buttons.insert(1, self.move_button)
        self.cells, self.box = _row(name, "row", buttons, gpu)
        self.info: ModelInfo | None = None

    def show(self, info: ModelInfo, largest: int, busy: bool) -> None:
        self.info = info
        self.cells.value = render.row_cells(info, largest)
        self.pin_button.description = "Unpin" if info.pinned else "Pin"
        self.pin_button.tooltip = (
            f"unpin {self.name}: budgets may evict it again, its keep-alive runs"
            if info.pinned
            else f"pin {self.name}: no budget evicts it, keep-alive never unloads it"
        )
        if info.pinned:
            self.pin_button.add_class("nbm-pinned")
        else:
            self.pin_button.remove_class("nbm-pinned")
        if self.move_button is not None:
            on_gpu = (info.device or "").startswith("cuda")
            self._move_target = "cpu" if on_gpu else "cuda:0"
            self.move_button.description = "Offload to CPU" if on_gpu else "Move to GPU"
            self.move_button.tooltip = f"move {self.name} to {self._move_target}"
            self.move_button.disabled = busy

    def close(self) -> None:
        close_tree(self.box)


class HeldRow:
    """A model released while something still holds it: who holds it, what force would remove, one button."""

    def __init__(self, panel: ModelPanel, name: str, gpu: bool) -> None:
        self.name = name
        self.force_button = _button("Force free", "nbmodels-force-free", f"remove what holds {name}, as listed")
        self.force_button.on_click(lambda _: panel.force_free(name))
        self.cells, self.box = _row(name, "held", [self.force_button], gpu)
        self.plan: force.ForcePlan | None = None

    def show(self, plan: force.ForcePlan | None, loaded_too: bool) -> None:
        self.plan = plan
        self.cells.value = render.held_cells(plan, self.name, loaded_too)
        self.force_button.description = "Check" if plan is None else "Force free"
        self.force_button.tooltip = (
            f"look at what holds {self.name}" if plan is None else f"run: {'; '.join(plan.actions) or 'nothing'}"
        )
        self.force_button.disabled = loaded_too or (plan is not None and not plan.can_force)

    def close(self) -> None:
        close_tree(self.box)


class ModelPanel(widgets.VBox):  # type: ignore[misc]  # ipywidgets is untyped
    """A live view of one ModelManager with load, unload, move, force and cleanup controls.

    ``ModelPanel()`` follows the process-wide manager; pass ``manager=`` to follow
    another. ``refresh_interval`` is the seconds between memory readings while it
    is shown (0: only on changes). Display it, or put it in a ``VBox``/``Tab``;
    :meth:`close` removes it and stops following the manager.
    """

    refresh_interval = traitlets.Float(DEFAULT_REFRESH_S, help="seconds between live memory readings; 0: none")

    def __init__(
        self,
        manager: ModelManager | None = None,
        *,
        cuda_devices: int | None = None,
        refresh_interval: float = DEFAULT_REFRESH_S,
        readings: Callable[[], Sequence[DeviceMemory]] = device_readings,
        namespace: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """``namespace``: the notebook's variables, so that the Load form takes a function's bare name as its
        source, as ``%load_model`` does (``%model_panel`` passes the kernel's)."""
        self._manager = manager if manager is not None else get_manager()
        self._namespace = namespace if namespace is not None else {}
        self._cuda_devices = cuda_device_count() if cuda_devices is None else cuda_devices
        self._readings = readings
        self._lock = threading.RLock()
        self._closed = False
        self._busy: str | None = None
        self._worker: threading.Thread | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._timer = RefreshTimer(self._tick, name="nbmodels-panel-refresh")
        self._shown = False
        self.status_text = "ready"
        self.status_kind: render.StatusKind = "info"
        self.rows: dict[str, ModelRow] = {}
        self.held: dict[str, HeldRow] = {}
        self._plans: dict[str, force.ForcePlan] = {}
        self._pending_rows: dict[str, widgets.HTML] = {}
        self._started: dict[str, float] = {}  # name -> when this panel first saw its load in flight
        self._evicted_for: dict[str, list[str]] = {}  # a load in flight -> the evictions made for it
        children = self._build()
        # _view_count=0 asks the front end to count this panel's views (None: do not count).
        super().__init__(children=children, _view_count=0, **kwargs)
        self.add_class("nbmodels-panel")
        self.refresh_interval = refresh_interval
        self._follow()
        self.refresh()

    # --- layout -----------------------------------------------------------------

    def _build(self) -> list[widgets.Widget]:
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
        # What a background load prints or displays (Hugging Face's own progress bars among it).
        self.output = widgets.Output()
        self.output.add_class("nbmodels-output")

        def section(title: str) -> widgets.HTML:
            return widgets.HTML(f'<div class="nbm-section">{title}</div>')

        self.machine = MachineSection(start=False)  # it reads the machine only once the panel is shown
        self.where = MemorySection(self._manager)  # collapsed; computed only when opened (nbmodels.widgets.memory)
        return [
            header,
            section("Memory"),
            self.memory,
            section("Models"),
            self.table,
            section("Load"),
            form,
            cleanup,
            self.status,
            self.output,
            self.machine.box,  # every kernel on this machine, with Free buttons (nbmodels.widgets.machine)
            self.where.box,  # "Where is the memory?": every live tensor by the name that holds it
        ]

    # --- display and life -----------------------------------------------------------

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        """The widget view, with a plain-text table for front ends that cannot show widgets.

        Being displayed is what starts the live refresh; a later run of the same
        cell that shows a panel closes this one.
        """
        bundle = super()._repr_mimebundle_(**kwargs)
        if isinstance(bundle, dict):
            bundle["text/plain"] = f"{self!r}\n{self._manager.list()}"
            for stale in cells.OUTPUTS.shown(self, cells.current_cell()):
                stale.close()
            self._wake()
        return bundle

    def __repr__(self) -> str:
        if self._closed:
            state = "closed"
        else:
            state = f"{len(self.rows)} model(s)" + ("" if self._unsubscribe is not None else ", dormant")
        return f"<nbmodels panel: {state}>"

    @traitlets.observe("_view_count")
    def _views_changed(self, change: dict[str, Any]) -> None:
        """The front end counts this panel's views: none left means nobody can see it."""
        old, new = change["old"], change["new"]
        if isinstance(new, int) and new > 0:
            self._wake()
        elif isinstance(old, int) and old > 0 and new == 0:
            self._doze()

    @traitlets.validate("refresh_interval")
    def _valid_interval(self, proposal: dict[str, Any]) -> float:
        return _check_interval(proposal["value"])

    @traitlets.observe("refresh_interval")
    def _interval_changed(self, change: dict[str, Any]) -> None:
        if self._shown:
            self._timer.stop()
            self._start_timer()

    def _follow(self) -> None:
        with self._lock:
            if self._unsubscribe is None and not self._closed:
                self._unsubscribe = self._manager.subscribe(self._on_event, weak=True)

    def _wake(self) -> None:
        """Shown: follow the manager again, catch up, and tick."""
        with self._lock:
            if self._closed:
                return
            self._shown = True
            was_following = self._unsubscribe is not None
            self._follow()
        if not was_following:
            self.refresh()
        self._start_timer()
        self.machine.start()

    def _doze(self) -> None:
        """No view left: stop following and ticking, keep the widgets (a view may come back)."""
        with self._lock:
            self._shown = False
            if self._unsubscribe is not None:
                self._unsubscribe()
                self._unsubscribe = None
        self._timer.stop()
        self.machine.pause()

    def _start_timer(self) -> None:
        delay = self._next_delay()
        if delay is not None:
            self._timer.start(delay)

    def _next_delay(self) -> float | None:
        interval = self.refresh_interval
        if self._pending_rows:
            return min(interval, PENDING_TICK_S) if interval > 0 else PENDING_TICK_S
        return interval if interval > 0 else None

    def _tick(self) -> float | None:
        """The timer's call (on its thread): fresh readings, elapsed times; the delay to the next tick."""
        if self._closed or not self._shown:
            return None
        self.refresh()
        return self._next_delay()

    @property
    def following(self) -> bool:
        """True while the panel follows the manager's events."""
        return self._unsubscribe is not None

    @property
    def live(self) -> bool:
        """True while the refresh timer runs."""
        return self._timer.running

    # --- the one update path ------------------------------------------------------

    def refresh(self, status: str | None = None, kind: render.StatusKind = "info") -> None:
        """Re-read the manager and the memory readings and update every widget (any thread)."""
        with self._lock:
            if self._closed:
                return
            infos = self._manager.list()
            loaded = {i.name for i in infos}
            loading = [n for n in self._manager.loading() if n not in loaded]
            survivors = self._manager.survivors()
            busy = self._busy is not None
            largest = max((i.total_bytes or 0 for i in infos), default=0)
            gpu = self._cuda_devices > 0
            # rows that go are closed only after the table stops showing them: a closed widget still in a
            # layout breaks ipywidgets' embedding (Voilà, embed_data) if it looks in between
            gone: list[Any] = [self.rows.pop(n) for n in [n for n in self.rows if n not in loaded]]
            for name in [n for n in self._pending_rows if n not in loading]:
                gone.append(self._pending_rows.pop(name))
                self._started.pop(name, None)
            gone += [self.held.pop(n) for n in [n for n in self.held if n not in survivors]]
            for name in [n for n in self._plans if n not in survivors]:
                del self._plans[name]
            for info in infos:
                row = self.rows.get(info.name)
                if row is None:
                    row = self.rows[info.name] = ModelRow(self, info.name, gpu=gpu)
                row.show(info, largest, busy)
            now = time.monotonic()
            for name in loading:
                started = self._started.setdefault(name, now)
                pending = self._pending_rows.get(name)
                if pending is None:
                    pending = self._pending_rows[name] = widgets.HTML()
                    pending.add_class("nbmodels-pending")
                    pending.add_class(f"nbmodels-pending-{render.css_name(name)}")
                pending.value = render.pending_cells(name, now - started)
            for name in survivors:
                held = self.held.get(name)
                if held is None:
                    held = self.held[name] = HeldRow(self, name, gpu=gpu)
                held.show(self._plans.get(name), loaded_too=name in loaded)
            body: list[widgets.Widget] = [row.box for row in self.rows.values()]
            body += list(self._pending_rows.values())
            body += [held.box for held in self.held.values()]
            children = [self.table.children[0], *(body or [self._empty])]
            if list(self.table.children) != children:
                self.table.children = children
            for old in gone:  # rows (ModelRow, HeldRow) close their own widgets; a pending row is one widget
                if isinstance(old, widgets.Widget):
                    close_tree(old)
                else:
                    old.close()

            model_bytes: dict[str, int] = {}
            for info in infos:
                for device, nbytes in info.bytes_by_device.items():
                    model_bytes[device] = model_bytes.get(device, 0) + nbytes
            self.memory.value = render.memory_bars(self._readings(), model_bytes, self._cuda_devices)
            self.summary.value = render.summary(infos, loading)
            registered = sorted(set(self._manager.registered()) | loaded)
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
            elif self.status_kind == "busy" and not busy and not loading:
                # the event that ended it came while this panel was not following: never stay "loading…"
                self.status_text, self.status_kind = "ready", "info"
            self.status.value = render.status_line(self.status_text, self.status_kind)
        if loading and self._shown:
            self._start_timer()  # a load in flight: its elapsed time ticks even with live refresh off

    def _on_event(self, event: Event) -> None:
        """Manager events arrive on whichever thread made the change."""
        self.machine.changed_here()  # this kernel's row there must not lag behind the table above
        if event.report is not None:
            with self._lock:
                self._plans.update(force.plans_in(event.report))
        if event.kind == "load_started":
            if event.name is not None:
                with self._lock:
                    self._started[event.name] = time.monotonic()
            self.refresh(f"loading {event.name}…", "busy")
        elif event.kind == "load_finished" and event.info is not None:
            with self._lock:
                evicted = self._evicted_for.pop(event.name or "", [])
            self.refresh(" · ".join([*evicted, f"loaded {event.info.summary()}"]), "ok")
        elif event.kind == "load_failed":
            with self._lock:
                self._evicted_for.pop(event.name or "", None)
            self.refresh(event.error or f"loading {event.name} failed", "error")
        elif event.kind in ("unloaded", "cleanup") and event.report is not None:
            self.refresh(*render.report_text(event.report))
        elif event.kind == "moved" and event.info is not None:
            self.refresh(f"moved {event.name} to {event.info.device}", "ok")
        elif event.kind in ("evicted", "expired") and event.reason:
            survived = event.report is not None and not event.report.ok
            if event.kind == "evicted" and event.cause is not None:
                with self._lock:  # said again with the load it made room for, which would hide it
                    self._evicted_for.setdefault(event.cause, []).append(event.reason)
            self.refresh(event.reason, "warn" if survived else "info")
        elif event.kind == "pinned" and event.reason:
            self.refresh(event.reason, "ok")
        elif event.kind == "worker_died":
            self.refresh(f"the worker of {event.name} ended ({event.error}); load it again to use it", "error")
        else:
            self.refresh()

    # --- actions ------------------------------------------------------------------

    def load(self) -> None:
        """Load what the form says, in a background thread; the outcome always ends in the status line."""
        name = self.name.value.strip()
        source = self.source.value.strip() or None
        device: str | None = self.device.value
        if not name:
            self.refresh("type or pick a model name first", "error")
            return
        try:
            options = parse_options(self.options.value)
            check_form_options(options)
            source = from_namespace(source, self._namespace)
        except ValueError as exc:  # a SourceError is a ValueError too
            self.refresh(str(exc), "error")
            return
        manager = self._manager
        before = _loaded_at(manager, name)
        if device == "auto" and (before is not None or name in manager.loading()):
            device = None  # "auto" asks for nothing a loaded model does not already have
        given = ", ".join(f"{k}={v!r}" for k, v in options.items())

        def job() -> tuple[str, render.StatusKind]:
            try:
                manager.load(name, source, device=device, **options)  # the model is not kept
            except Exception as exc:
                message = str(exc) or type(exc).__name__
                return (f"{message} · options given: {given}" if given else message), "error"
            info = manager.info(name)
            if before is not None and info.loaded_at == before:
                return f"already loaded: {info.summary()} · to load it again, unload it first", "info"
            return f"loaded {info.summary()}", "ok"

        self._start(f"loading {name}…", job)

    def move(self, name: str, device: str) -> None:
        """Move a loaded model (offload to the CPU or back to a GPU) in the background."""
        manager = self._manager

        def job() -> tuple[str, render.StatusKind]:
            info = manager.move(name, device)
            return f"moved {name} to {info.device}", "ok"

        self._start(f"moving {name} to {device}…", job)

    def unload(self, name: str) -> None:
        """Unload one model now; the report (or the error) goes to the status line."""
        try:
            report = self._manager.unload(name)
        except Exception as exc:
            self.refresh(str(exc), "error")
            return
        self._show_report(report)

    def toggle_pin(self, name: str) -> None:
        """Pin a model (no budget evicts it, keep-alive never unloads it), or unpin it; the status line says which."""
        try:
            pinned = self._manager.info(name).pinned
            info = self._manager.unpin(name) if pinned else self._manager.pin(name)
        except Exception as exc:
            self.refresh(str(exc), "error")
            return
        self.refresh(f"{'pinned' if info.pinned else 'unpinned'} {name}", "ok")

    def force_free(self, name: str) -> None:
        """Free a released model that something still holds: exactly what its row shows force would remove.

        The holders are looked up again first; if they changed since the row was
        drawn, nothing is removed and the row shows the new plan, to confirm with
        one more click.
        """
        if name in self._manager:
            self.refresh(f"a new {name} is loaded: unload it first, then free the old one", "warn")
            return
        shown = self._plans.get(name)
        try:
            plan, report = force.check_again(self._manager, name)
        except Exception as exc:
            self.refresh(str(exc), "error")
            return
        if plan is None:
            self._show_report(report)  # it died meanwhile (nothing held it any more): freed without force
            return
        with self._lock:
            self._plans[name] = plan
        if shown is None or plan != shown:
            self.refresh(f"{name} is held by: {', '.join(plan.holders)}; its row shows what force would remove", "warn")
            return
        if not plan.can_force:
            self.refresh(f"force cannot free {name}: {plan.blocked}", "warn")
            return
        try:
            report = force.run(self._manager, name)
        except Exception as exc:
            self.refresh(str(exc), "error")
            return
        self._show_report(report)

    def cleanup(self) -> None:
        """Release every model; with the force box ticked, ``cleanup(force=True)``."""
        try:
            report = self._manager.cleanup(force=bool(self.force.value))
        except Exception as exc:
            self.refresh(str(exc), "error")
            return
        self._show_report(report)

    def _show_report(self, report: ReleaseReport) -> None:
        with self._lock:
            self._plans.update(force.plans_in(report))
        self.refresh(*render.report_text(report))

    def _start(self, label: str, job: Callable[[], tuple[str, render.StatusKind]]) -> None:
        with self._lock:
            if self._busy is not None:
                self.refresh(f"wait: still {self._busy}", "warn")
                return
            self._busy = label
            worker = self._worker = threading.Thread(target=self._run, args=(job,), name="nbmodels-panel", daemon=True)
        self.output.outputs = ()
        self.refresh(label, "busy")
        worker.start()

    def _run(self, job: Callable[[], tuple[str, render.StatusKind]]) -> None:
        status: tuple[str, render.StatusKind] = ("stopped", "warn")
        try:
            with output_into(OutputSink(self.output)):
                status = job()
        except BaseException as exc:  # the status line must never stay at "loading…"
            status = (str(exc) or type(exc).__name__, "error")
        finally:
            with self._lock:
                self._busy = None
            self.refresh(*status)

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
        """Stop following the manager, stop the timer, and remove the panel from the page."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._shown = False
            if self._unsubscribe is not None:
                self._unsubscribe()
                self._unsubscribe = None
            for row in self.rows.values():
                row.close()
            self.rows.clear()
            for held in self.held.values():
                held.close()
            self.held.clear()
            for pending in self._pending_rows.values():
                close_tree(pending)
            self._pending_rows.clear()
            close_tree(self._empty)
            for child in self.children:
                close_tree(child)
        self._timer.stop()
        cells.OUTPUTS.forget(self)
        self.layout.close()
        super().close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # at interpreter exit, what close() needs may already be gone
            self.close()

    @property
    def closed(self) -> bool:
        return self._closed


def _loaded_at(manager: ModelManager, name: str) -> float | None:
    try:
        return manager.info(name).loaded_at
    except Exception:
        return None


def _check_interval(seconds: float) -> float:
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or not math.isfinite(seconds):
        raise traitlets.TraitError(f"refresh_interval must be a number of seconds, not {seconds!r}")
    if seconds < 0:
        raise traitlets.TraitError(f"refresh_interval must be 0 (off) or more seconds, not {seconds}")
    if 0 < seconds < 0.1:
        raise traitlets.TraitError(f"refresh_interval {seconds} s is too fast; use 0.1 s or more (0: off)")
    return float(seconds)
