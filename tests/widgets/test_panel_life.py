"""The panel as a widget and its life: composes, displays, follows while shown, dozes when its views
are gone, refreshes memory on a timer, closes cleanly, and leaves no widget or thread behind.

The front end's view counting is played with ``panel.set_state({"_view_count": n})``, the call a
front end's message ends in; the browser tests check that JupyterLab and Notebook 7 really send it.
"""

from __future__ import annotations

import gc
import threading
import time
import weakref
from collections.abc import Callable, Iterator

import ipywidgets
import pytest
import traitlets
from IPython.core.interactiveshell import InteractiveShell
from IPython.display import display
from IPython.utils.capture import capture_output
from ipywidgets.embed import embed_data
from ipywidgets.widgets import widget as widget_module

from nbmodels import ModelManager
from nbmodels.core.memory import DeviceMemory
from nbmodels.widgets.panel import ModelPanel

WAIT = 60.0
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
MIB = 1024 * 1024


@pytest.fixture
def manager() -> Iterator[ModelManager]:
    mgr = ModelManager()
    yield mgr
    mgr.cleanup()


def eventually(check: Callable[[], bool], timeout: float = WAIT) -> bool:
    """Poll ``check`` until it holds (a bound for background work, not an expectation of speed)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return check()


def open_widgets() -> set[str]:
    return set(widget_module._instances)


def test_the_panel_is_a_vbox_that_composes_in_a_users_layout(manager: ModelManager) -> None:
    panel = ModelPanel(manager, cuda_devices=0)
    box = ipywidgets.VBox([ipywidgets.HTML("my dashboard"), panel])
    tab = ipywidgets.Tab(children=[ipywidgets.VBox([panel])], titles=["models"])
    try:
        assert isinstance(panel, ipywidgets.VBox)
        assert "nbmodels-panel" in panel._dom_classes
        # What Voilà and the embed API serialise: the panel is an ordinary VBox model with its children.
        state = embed_data(views=[box, tab])["manager_state"]["state"]
        assert state[panel.model_id]["model_name"] == "VBoxModel"
        assert len(state[panel.model_id]["state"]["children"]) == len(panel.children)
        manager.load("m", "demo:mlp", hidden=8)
        assert list(panel.rows) == ["m"]  # inside a user's box it still follows the manager
    finally:
        panel.close()
        box.close()
        tab.close()


def test_display_is_ordinary_and_starts_the_live_refresh(ip: InteractiveShell, manager: ModelManager) -> None:
    panel = ModelPanel(manager, cuda_devices=0)
    try:
        assert not panel.live  # created, not shown: no timer
        with capture_output() as shown:
            display(panel)
        assert len(shown.outputs) == 1
        data = shown.outputs[0].data
        assert data[WIDGET_VIEW]["model_id"] == panel.model_id
        assert data["text/plain"].startswith("<nbmodels panel: 0 model(s)>")
        assert "no models loaded" in data["text/plain"]
        assert panel.live and panel.following
    finally:
        panel.close()
    assert not panel.live


def test_a_panel_whose_views_are_all_gone_stops_following_and_wakes_when_shown_again(
    manager: ModelManager,
) -> None:
    panel = ModelPanel(manager, cuda_devices=0)
    try:
        panel.set_state({"_view_count": 1})  # the front end drew it
        assert panel.following and panel.live
        panel.set_state({"_view_count": 0})  # its output was cleared, or its cell re-run
        assert not panel.following and not panel.live
        assert manager._subscribers == []  # the manager calls nothing for it
        assert repr(panel) == "<nbmodels panel: 0 model(s), dormant>"
        manager.load("m", "demo:mlp", hidden=8)
        assert panel.rows == {}
        panel.set_state({"_view_count": 1})  # shown again (undo, paste): catches up
        assert list(panel.rows) == ["m"]
        assert panel.following and panel.live
    finally:
        panel.close()


def test_forgotten_panels_cost_no_call_on_a_load(manager: ModelManager) -> None:
    panels = [ModelPanel(manager, cuda_devices=0) for _ in range(5)]
    calls: list[str] = []
    try:
        for panel in panels:
            panel.set_state({"_view_count": 1})
            panel.set_state({"_view_count": 0})
            original = panel.refresh
            panel.refresh = lambda *a, _o=original, **k: (calls.append("refresh"), _o(*a, **k))[1]  # type: ignore[method-assign]
        manager.load("m", "demo:mlp", hidden=8)
        manager.unload("m")
        assert calls == []
    finally:
        for panel in panels:
            panel.close()


def test_the_manager_holds_a_panel_only_weakly(manager: ModelManager) -> None:
    panel = ModelPanel(manager, cuda_devices=0)
    try:
        assert len(manager._subscribers) == 1
        assert all(isinstance(entry, weakref.ref) for entry in manager._subscribers)
    finally:
        panel.close()
    assert manager._subscribers == []


def test_close_leaves_no_widget_thread_or_subscription_behind(manager: ModelManager) -> None:
    before = open_widgets()
    panel = ModelPanel(manager, cuda_devices=0, refresh_interval=0.1)
    panel.set_state({"_view_count": 1})
    thread = panel._timer.thread
    assert thread is not None and thread.is_alive()
    for _ in range(3):  # rows come and go: their widgets (with their Layouts and Styles) close with them
        manager.load("m", "demo:mlp", hidden=8)
        manager.unload("m")
    panel.close()
    assert open_widgets() - before == set(), "widgets of the closed panel are still open"
    thread.join(WAIT)
    assert not thread.is_alive()
    assert manager._subscribers == []
    gone = weakref.ref(panel)
    del panel
    gc.collect()
    assert gone() is None, "something still holds the closed panel"


def test_rows_coming_and_going_leave_no_open_widgets(manager: ModelManager) -> None:
    panel = ModelPanel(manager, cuda_devices=0)
    try:
        baseline = open_widgets()
        for _ in range(5):
            manager.load("m", "demo:mlp", hidden=8)
            manager.unload("m")
        assert open_widgets() - baseline == set()
    finally:
        panel.close()


def test_memory_taken_outside_nbmodels_shows_without_a_click(manager: ModelManager) -> None:
    panel = ModelPanel(manager, cuda_devices=0, refresh_interval=0.2)

    def cpu_used() -> int:
        value = panel.memory.value
        return int(value.split('data-used="', 1)[1].split('"', 1)[0])

    try:
        panel.set_state({"_view_count": 1})
        before = cpu_used()
        block = bytearray(300 * MIB)  # touched: resident, not just reserved
        for i in range(0, len(block), 4096):
            block[i] = 1
        assert eventually(lambda: cpu_used() > before + 200 * MIB), (before, cpu_used())
        del block
        assert eventually(lambda: cpu_used() < before + 100 * MIB), (before, cpu_used())
    finally:
        panel.close()


def test_the_refresh_interval_is_configurable_and_zero_turns_it_off(manager: ModelManager) -> None:
    ticks: list[float] = []

    def readings() -> list[DeviceMemory]:
        ticks.append(time.monotonic())
        return [DeviceMemory("cpu", used=1, total=2, available=1)]

    panel = ModelPanel(manager, cuda_devices=0, refresh_interval=0, readings=readings)
    try:
        panel.set_state({"_view_count": 1})
        assert not panel.live
        count = len(ticks)
        panel.refresh_interval = 0.1
        assert panel.live
        assert eventually(lambda: len(ticks) >= count + 3)
        panel.refresh_interval = 0
        assert not panel.live
    finally:
        panel.close()


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf"), 0.01])
def test_a_bad_refresh_interval_is_refused(manager: ModelManager, bad: float) -> None:
    with pytest.raises(traitlets.TraitError, match="refresh_interval"):
        ModelPanel(manager, cuda_devices=0, refresh_interval=bad)


def test_a_load_in_flight_shows_its_elapsed_time(manager: ModelManager) -> None:
    running, gate = threading.Event(), threading.Event()

    def slow(**kwargs: object) -> object:
        running.set()
        gate.wait(WAIT)
        from nbmodels.core.demo import mlp

        return mlp(hidden=8)

    manager.register("slow", slow)
    panel = ModelPanel(manager, cuda_devices=0, refresh_interval=0)  # live memory off: elapsed still ticks
    try:
        panel.set_state({"_view_count": 1})
        panel.name.value = "slow"
        panel.load_button.click()
        assert running.wait(WAIT)
        pending = panel._pending_rows["slow"]
        assert "loading…" in pending.value
        assert eventually(lambda: "loading… 2 s" in pending.value, timeout=WAIT), pending.value
    finally:
        gate.set()
        panel.wait(WAIT)
    try:
        assert list(panel.rows) == ["slow"]
        assert panel._pending_rows == {}
        assert eventually(lambda: not panel.live)  # nothing in flight, live memory off: the timer stops
    finally:
        panel.close()


def test_nbmodels_panel_takes_the_refresh_interval(manager: ModelManager) -> None:
    import nbmodels

    panel = nbmodels.panel(manager, refresh_interval=0.5)
    try:
        assert isinstance(panel, ModelPanel) and panel.refresh_interval == 0.5
    finally:
        panel.close()
