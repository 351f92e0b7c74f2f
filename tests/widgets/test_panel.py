"""The panel without a browser: real widgets, real torch models, a manager of the test's own.

Buttons are pressed with ``Button.click()``; background loads are awaited with
``panel.wait(timeout)``, never with sleeps.
"""

from __future__ import annotations

import gc
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch

import nbmodels
from nbmodels import ModelManager
from nbmodels.core.demo import mlp
from nbmodels.core.devices import cuda_device_count
from nbmodels.core.holders import Site, remove_key
from nbmodels.widgets.panel import ModelPanel

WAIT = 60.0  # seconds: a bound, not an expectation


@pytest.fixture
def manager() -> Iterator[ModelManager]:
    mgr = ModelManager()
    yield mgr
    mgr.cleanup()


@pytest.fixture
def panel(manager: ModelManager) -> Iterator[ModelPanel]:
    view = ModelPanel(manager, cuda_devices=0)
    yield view
    view.wait(WAIT)
    view.close()


def gated() -> tuple[threading.Event, threading.Event, Callable[..., Any]]:
    """A loader that says when it runs and blocks until the test opens the gate:
    a load the test can watch in flight."""
    running, gate = threading.Event(), threading.Event()

    def load(**kwargs: Any) -> Any:
        running.set()
        if not gate.wait(WAIT):
            raise TimeoutError("the test never opened the gate")
        return mlp(**kwargs)

    return running, gate, load


def classes(panel: ModelPanel) -> list[list[str]]:
    return [list(child._dom_classes) for child in panel.table.children]


def test_an_empty_panel_shows_the_cpu_bar_and_a_hint(panel: ModelPanel) -> None:
    assert panel.rows == {}
    assert "No models loaded" in panel.table.children[-1].value
    assert "nbmodels-bar-cpu" in panel.memory.value
    assert "no models loaded" in panel.summary.value
    assert list(panel.device.options) == ["auto", "cpu"]
    assert panel.load_button.disabled is False


def test_the_name_box_offers_registered_names(manager: ModelManager, panel: ModelPanel) -> None:
    manager.register("encoder", "demo:mlp")
    manager.register("lm", "demo:transformer")
    panel.refresh()  # registering is not an event; loading is
    assert list(panel.name.options) == ["encoder", "lm"]


def test_load_runs_in_the_background_with_a_busy_button(manager: ModelManager, panel: ModelPanel) -> None:
    running, gate, loader = gated()
    manager.register("slow", loader, hidden=32)
    panel.name.value = "slow"
    panel.load_button.click()
    try:
        # The click returned while the loader is still blocked: the kernel thread is free.
        assert panel.busy
        assert panel.load_button.disabled is True
        assert running.wait(WAIT)
        assert panel.load_button.disabled is True
        assert panel.load_button.description == "Loading…"
        assert panel.status_kind == "busy"
        assert classes(panel)[1][-2:] == ["nbmodels-pending", "nbmodels-pending-slow"]
        assert manager.loading() == ["slow"]
        panel.load_button.click()  # a second job while one runs is refused, not queued
        assert panel.status_kind == "warn"
        assert "still loading slow" in panel.status_text
    finally:
        gate.set()
    assert panel.wait(WAIT)
    assert panel.load_button.disabled is False
    assert panel.load_button.description == "Load"
    assert list(panel.rows) == ["slow"]
    assert panel.status_kind == "ok"
    assert panel.status_text.startswith("loaded slow: Sequential on cpu")
    assert "nbmodels-row-slow" in classes(panel)[1]
    cells = panel.rows["slow"].cells.value
    info = manager.info("slow")
    assert f'data-bytes="{info.total_bytes}"' in cells
    assert "Sequential" in cells


def test_the_form_passes_source_device_and_options(manager: ModelManager, panel: ModelPanel) -> None:
    panel.name.value = "m"
    panel.source.value = "demo:mlp"
    panel.options.value = "hidden=16, layers=3, pin=True"
    panel.device.value = "cpu"
    panel.load_button.click()
    assert panel.wait(WAIT)
    info = manager.info("m")
    assert info.device == "cpu"
    assert info.pinned
    assert info.parameters == sum(p.numel() for p in mlp(hidden=16, layers=3).parameters())
    assert 'class="nbm-c nbm-pin" title="pinned">✓' in panel.rows["m"].cells.value


def test_the_form_takes_a_notebook_function_by_its_bare_name_as_the_magic_does(manager: ModelManager) -> None:
    def make(hidden: int = 4) -> Any:
        return torch.nn.Sequential(torch.nn.Linear(3, hidden))

    namespace: dict[str, Any] = {"make": make, "count": 3}
    panel = ModelPanel(manager, cuda_devices=0, refresh_interval=0, namespace=namespace)
    try:
        panel.name.value, panel.source.value, panel.options.value = "m", "make", "hidden=8"
        panel.load_button.click()
        assert panel.wait(WAIT)
        assert panel.status_kind == "ok", panel.status_text
        assert manager.info("m").parameters == 32
        panel.name.value, panel.source.value, panel.options.value = "n", "count", ""
        panel.load_button.click()
        assert panel.wait(WAIT)
        assert panel.status_kind == "error" and "'count' in the notebook is an object of type int" in panel.status_text
        assert "n" not in manager
    finally:
        panel.close()


@pytest.mark.parametrize(
    ("name", "source", "options", "message"),
    [
        ("m", "demo:nope", "", "no demo model 'nope'"),
        ("m", "", "", "no model named 'm'"),
        ("", "demo:mlp", "", "type or pick a model name"),
        ("m", "demo:mlp", "size_mb=", "cannot read options"),
        ("m", "demo:mlp", "layers=0", "demo:mlp needs layers >= 1"),
    ],
)
def test_mistakes_show_in_the_status_line(
    panel: ModelPanel, name: str, source: str, options: str, message: str
) -> None:
    panel.name.value, panel.source.value, panel.options.value = name, source, options
    panel.load_button.click()
    assert panel.wait(WAIT)
    assert panel.status_kind == "error"
    assert message in panel.status_text
    assert panel.rows == {}
    assert panel.load_button.disabled is False
    assert 'data-kind="error"' in panel.status.value


def test_a_failing_loader_shows_its_error_not_a_lost_traceback(manager: ModelManager, panel: ModelPanel) -> None:
    def broken() -> Any:
        raise RuntimeError("weights are corrupt")

    manager.register("bad", broken)
    panel.name.value = "bad"
    panel.load_button.click()
    assert panel.wait(WAIT)
    assert panel.status_kind == "error"
    assert "RuntimeError: weights are corrupt" in panel.status_text
    assert panel.rows == {}


def test_changes_made_elsewhere_show_up_without_a_refresh(manager: ModelManager, panel: ModelPanel) -> None:
    manager.load("api", "demo:mlp", hidden=8)
    assert list(panel.rows) == ["api"]
    assert panel.status_text.startswith("loaded api")

    thread = threading.Thread(target=lambda: manager.load("threaded", "demo:mlp", hidden=8) and None)
    thread.start()
    thread.join(WAIT)
    assert not thread.is_alive()
    assert list(panel.rows) == ["api", "threaded"]
    assert "2 models" in panel.summary.value

    manager.unload("api")
    assert list(panel.rows) == ["threaded"]
    assert panel.status_text.startswith("released 1 model(s): api")
    assert panel.status_kind == "ok"


def test_two_panels_follow_each_other(manager: ModelManager, panel: ModelPanel) -> None:
    other = ModelPanel(manager, cuda_devices=0)
    try:
        other.name.value, other.source.value = "shared", "demo:mlp"
        other.load_button.click()
        assert other.wait(WAIT)
        assert list(panel.rows) == ["shared"]
        panel.rows["shared"].unload_button.click()
        assert other.rows == {}
        assert "released 1 model(s): shared" in other.status_text
    finally:
        other.close()


def test_unload_button_frees_the_model_while_the_panel_is_open(manager: ModelManager, panel: ModelPanel) -> None:
    panel.name.value, panel.source.value, panel.options.value = "big", "demo:mlp", "size_mb=16"
    panel.load_button.click()
    assert panel.wait(WAIT)
    model = weakref.ref(manager.get("big"))
    panel.refresh()  # re-render with the model loaded: the panel still only has its record
    assert model() is not None
    panel.rows["big"].unload_button.click()
    assert model() is None, "the panel (or something else) kept the unloaded model alive"
    assert panel.status_kind == "ok"
    assert "freed (storages that died): cpu 16." in panel.status_text
    assert panel.rows == {}


def test_a_model_unloaded_through_the_api_is_freed_while_a_panel_shows_it(
    manager: ModelManager, panel: ModelPanel
) -> None:
    manager.load("m", "demo:mlp", hidden=64)
    model = weakref.ref(manager.get("m"))
    assert "m" in panel.rows
    report = manager.unload("m")
    assert report.ok, report
    assert model() is None


def test_unloading_a_name_that_is_gone_is_an_error_in_the_status_line(manager: ModelManager, panel: ModelPanel) -> None:
    manager.load("m", "demo:mlp", hidden=8)
    row = panel.rows["m"]
    manager.unload("m")
    row.unload_button.click()  # a stale click, as from a second browser tab
    assert panel.status_kind == "error"
    assert "no model named 'm'" in panel.status_text


def test_cleanup_all_reports_what_came_back(manager: ModelManager, panel: ModelPanel) -> None:
    manager.load("a", "demo:mlp", hidden=8)
    manager.load("b", "demo:transformer", d_model=16, heads=2, vocab=50)
    panel.cleanup_button.click()
    assert panel.rows == {}
    assert len(manager) == 0
    assert panel.status_kind == "ok"
    assert panel.status_text.startswith("released 2 model(s): a, b")
    panel.cleanup_button.click()
    assert panel.status_text.startswith("nothing to release")


def test_cleanup_all_with_force_frees_a_held_model(manager: ModelManager, panel: ModelPanel) -> None:
    namespace: dict[str, Any] = {}  # a user namespace the holder search is taught about
    manager.add_holder_finder(lambda: [Site(namespace, remove=remove_key, command="del {key}")])
    manager.load("held", "demo:mlp", hidden=64)
    namespace["model"] = manager.get("held")
    model = weakref.ref(namespace["model"])

    panel.cleanup_button.click()  # without force: released, still held
    assert panel.status_kind == "warn"
    assert "held is still alive, held by: model" in panel.status_text
    assert model() is not None

    panel.force.value = True
    panel.cleanup_button.click()
    assert model() is None
    assert "model" not in namespace
    assert panel.status_kind == "ok", panel.status_text
    assert "force removed what held held: del model" in panel.status_text
    assert panel.held == {}


def test_closing_the_panel_unsubscribes_it(manager: ModelManager) -> None:
    view = ModelPanel(manager, cuda_devices=0)
    button = view.load_button
    view.close()
    assert view.closed
    assert button.comm is None  # the widgets are closed in the front end too
    manager.load("after", "demo:mlp", hidden=8)
    assert view.rows == {}
    closed = weakref.ref(view)
    del view, button
    gc.collect()
    assert closed() is None, "the manager still holds the closed panel's callback"


def test_the_close_button_closes_the_panel(manager: ModelManager) -> None:
    view = ModelPanel(manager, cuda_devices=0)
    view.close_button.click()
    assert view.closed
    manager.load("after", "demo:mlp", hidden=8)
    assert view.rows == {}


@pytest.mark.skipif(cuda_device_count() > 0, reason="on a GPU machine the move succeeds")
def test_move_to_gpu_without_a_gpu_is_an_error_in_the_status_line(manager: ModelManager) -> None:
    view = ModelPanel(manager, cuda_devices=1)
    try:
        assert list(view.device.options) == ["auto", "cpu", "cuda:0"]
        manager.load("m", "demo:mlp", hidden=8)
        button = view.rows["m"].move_button
        assert button is not None
        assert button.description == "Move to GPU"
        button.click()
        assert view.wait(WAIT)
        assert view.status_kind == "error"
        assert "device 'cuda:0' is not available" in view.status_text
        assert manager.info("m").device == "cpu"
    finally:
        view.close()


def test_rows_have_no_move_button_without_a_gpu(manager: ModelManager, panel: ModelPanel) -> None:
    manager.load("m", "demo:mlp", hidden=8)
    assert panel.rows["m"].move_button is None


def test_nbmodels_panel_is_a_displayable_widget(manager: ModelManager) -> None:
    view = nbmodels.panel(manager)
    try:
        assert isinstance(view, ModelPanel)
        bundle = view._repr_mimebundle_()
        assert bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == view.model_id
    finally:
        view.close()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ("device='cpu'", "device is chosen with the device menu, not in the options"),
        ("device=cpu", "device is chosen with the device menu"),
        ("name='other'", "name is chosen with the name box"),
        ("source='demo:mlp'", "source is chosen with the source box"),
        ("on_release=print", "only the Python API can pass"),
        ("size_mb=1e309", "option size_mb=1e309 is not a finite number"),
        ("size_mb=float('nan')", "option 'size_mb' must be a literal"),
        ("size_mb=-1e400", "option size_mb=-1e400 is not a finite number"),
    ],
)
def test_options_that_clash_with_the_form_or_are_bad_are_one_status_line(
    manager: ModelManager, panel: ModelPanel, options: str, message: str
) -> None:
    panel.name.value, panel.source.value, panel.options.value = "m", "demo:mlp", options
    panel.load_button.click()
    assert panel.wait(WAIT)
    assert panel.status_kind == "error"
    assert message in panel.status_text
    assert "\n" not in panel.status_text
    assert len(manager) == 0 and manager.loading() == []


def test_a_bad_option_value_names_what_the_form_passed(manager: ModelManager, panel: ModelPanel) -> None:
    panel.name.value, panel.source.value, panel.options.value = "m", "demo:mlp", "size_mb=abc"
    panel.load_button.click()
    assert panel.wait(WAIT)
    assert panel.status_kind == "error"
    assert "loading 'm' from demo:mlp: demo:mlp needs size_mb > 0" in panel.status_text
    assert "options given: size_mb='abc'" in panel.status_text  # the bare word became a string
    assert len(manager) == 0


def test_loading_a_loaded_name_says_so_and_never_stays_loading(manager: ModelManager, panel: ModelPanel) -> None:
    panel.name.value, panel.source.value = "m", "demo:mlp"
    panel.load_button.click()
    assert panel.wait(WAIT)
    assert panel.status_kind == "ok"
    hits = manager.info("m").hits
    for source in ("demo:mlp", ""):  # again with the source, then by name alone
        panel.source.value = source
        panel.load_button.click()
        assert panel.wait(WAIT)
        assert panel.status_kind == "info", panel.status_text
        assert panel.status_text.startswith("already loaded: m: Sequential on cpu")
        assert "unload it first" in panel.status_text
    assert manager.info("m").hits == hits + 2
    assert list(panel.rows) == ["m"]


def test_the_form_loads_a_name_a_magic_or_the_api_loaded(manager: ModelManager, panel: ModelPanel) -> None:
    manager.load("m", "demo:mlp", hidden=8)  # no device given, as %load_model m demo:mlp does
    panel.name.value = "m"
    assert panel.device.value == "auto"
    panel.load_button.click()
    assert panel.wait(WAIT)
    assert panel.status_kind == "info", panel.status_text
    assert panel.status_text.startswith("already loaded: m")


def test_a_loader_that_exits_still_ends_the_busy_status(manager: ModelManager, panel: ModelPanel) -> None:
    def quits() -> Any:
        raise SystemExit(3)

    manager.register("quits", quits)
    panel.name.value = "quits"
    panel.load_button.click()
    assert panel.wait(WAIT)
    assert panel.status_kind == "error"
    assert panel.load_button.disabled is False
    assert len(manager) == 0 and manager.loading() == []


def test_a_load_the_panel_missed_the_end_of_does_not_stay_loading(manager: ModelManager, panel: ModelPanel) -> None:
    running, gate, loader = gated()
    manager.register("slow", loader, hidden=8)
    thread = threading.Thread(target=lambda: manager.load("slow") and None)
    thread.start()
    try:
        assert running.wait(WAIT)
        assert panel.status_kind == "busy"
        panel.set_state({"_view_count": 1})
        panel.set_state({"_view_count": 0})  # dormant: the end of the load is not seen
    finally:
        gate.set()
        thread.join(WAIT)
    panel.set_state({"_view_count": 1})  # shown again: catches up
    assert list(panel.rows) == ["slow"]
    assert panel.status_kind != "busy"
