"""The panel's "This machine" section on the three real kernels: rows, Free buttons, and freeing."""

from __future__ import annotations

import threading
import time

import pytest

from nbmodels.core.manager import ModelManager
from nbmodels.machine import MachineView, scan
from nbmodels.machine.errors import MachineError
from nbmodels.widgets.machine import MachineSection
from nbmodels.widgets.panel import ModelPanel
from tests.machine.conftest import Machine, loaded, restore

pytestmark = pytest.mark.slow


def section_of(machine: Machine) -> MachineSection:
    section = MachineSection(interval=None)
    section.refresh()
    return section


def test_the_section_shows_every_kernel_and_a_free_button_for_each_other_nbmodels_kernel(machine: Machine) -> None:
    section = section_of(machine)
    try:
        for k in machine.kernels:
            assert k.pid in section.lines
        train, evaluation, plain = (section.lines[k.pid] for k in machine.kernels)
        assert "enc 8.0 MiB" in train.cells.value and "clf 4.0 MiB" in evaluation.cells.value
        assert "train.ipynb" in train.cells.value and "(no nbmodels)" in plain.cells.value
        assert train.actions.children == (train.free_button,) and evaluation.actions.children
        assert plain.actions.children == ()  # nothing in it could answer
        assert "kernel(s), " in section.summary.value and "with nbmodels" in section.summary.value
    finally:
        section.close()


def test_free_in_the_section_releases_that_kernels_models_only(machine: Machine) -> None:
    section = section_of(machine)
    try:
        section.lines[machine.eval.pid].free_button.click()
        assert section.wait(60)
        assert section.status_kind == "ok", section.status_text
        assert f"pid {machine.eval.pid}" in section.status_text and "released 1 model(s): clf" in section.status_text
        assert loaded(machine.eval) == [] and loaded(machine.train) == ["enc", "lm"]
        assert "none" in section.lines[machine.eval.pid].cells.value  # refreshed after the answer
    finally:
        section.close()
        restore(machine)


def test_a_refused_free_goes_to_the_status_line(machine: Machine) -> None:
    def refuse(row: object) -> object:
        raise MachineError("refusing /x.sock: its mode is 0o666, others could use it; nbmodels makes it 0o600")

    section = MachineSection(interval=None, freer=refuse)  # type: ignore[arg-type]
    try:
        section.refresh()
        section.free(machine.eval.pid)
        assert section.wait(30)
        assert section.status_kind == "error" and "0o666" in section.status_text
        assert loaded(machine.eval) == ["clf"]
    finally:
        section.close()


def test_an_unreadable_runtime_directory_is_shown_not_raised(machine: Machine) -> None:
    def broken() -> MachineView:
        raise MachineError("cannot read the Jupyter runtime directory /x: permission denied")

    section = MachineSection(interval=None, scanner=broken)
    try:
        section.refresh()
        assert section.status_kind == "error" and "permission denied" in section.status_text
    finally:
        section.close()


def test_the_panel_has_the_section_and_closing_the_panel_stops_its_refresh(machine: Machine) -> None:
    panel = ModelPanel(ModelManager(), cuda_devices=0)
    boxes = [w for w in panel.children if "nbmodels-machine" in w._dom_classes]
    assert len(boxes) == 1
    assert not [t for t in threading.enumerate() if t.name == f"nbmodels-machine-{boxes[0].model_id}"]
    panel._repr_mimebundle_()  # displayed: now it reads the machine
    deadline = time.monotonic() + 30
    while "kernel(s)" not in boxes[0].children[1].children[1].value:  # the first reading arrives in the background
        assert time.monotonic() < deadline
        time.sleep(0.05)
    refreshers = [t for t in threading.enumerate() if t.name == f"nbmodels-machine-{boxes[0].model_id}"]
    assert len(refreshers) == 1
    panel.close()
    for thread in refreshers:
        thread.join(timeout=10)
    assert not any(t.is_alive() for t in refreshers)


def test_a_panel_nobody_sees_stops_reading_the_machine_and_starts_again_when_shown(machine: Machine) -> None:
    """A forgotten panel (cleared output, re-run cell) must cost nothing: no scan of every kernel every few s."""
    panel = ModelPanel(ModelManager(), cuda_devices=0)
    box = next(w for w in panel.children if "nbmodels-machine" in w._dom_classes)

    def refreshers() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name == f"nbmodels-machine-{box.model_id}" and t.is_alive()]

    try:
        panel.set_state({"_view_count": 1})  # the front end drew a view
        assert len(refreshers()) == 1
        first = refreshers()[0]
        panel.set_state({"_view_count": 0})  # ... and the last view is gone
        first.join(timeout=10)
        assert not first.is_alive() and refreshers() == []
        panel.set_state({"_view_count": 1})  # shown again: it reads the machine again
        assert len(refreshers()) == 1 and refreshers()[0] is not first
    finally:
        panel.close()


def test_a_change_in_this_kernel_is_read_again_soon_once_per_burst(machine: Machine) -> None:
    """The panel's own table and this kernel's row in the section must agree within a moment, not 10 s."""
    readings: list[float] = []

    def counting() -> MachineView:
        readings.append(time.monotonic())
        return scan()

    section = MachineSection(scanner=counting, interval=60, start=False)
    try:
        section.changed_here(delay=0.05)  # not started (the panel not shown): nothing is read
        time.sleep(0.3)
        assert readings == []
        section.start()
        deadline = time.monotonic() + 30
        while not readings:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        for _ in range(5):  # a load's events: started, evicted, finished...
            section.changed_here(delay=0.2)
        while len(readings) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        time.sleep(0.5)
        assert len(readings) == 2  # one more reading for the burst; the next one is 60 s away
        section.pause()
        section.changed_here(delay=0.05)
        time.sleep(0.3)
        assert len(readings) == 2
    finally:
        section.close()


def test_the_panel_asks_its_section_to_read_again_when_the_manager_changes(machine: Machine) -> None:
    manager = ModelManager()
    panel = ModelPanel(manager, cuda_devices=0, refresh_interval=0)
    asked: list[float] = []
    panel.machine.changed_here = lambda delay=0.5: asked.append(delay)  # type: ignore[method-assign]
    try:
        panel.set_state({"_view_count": 1})
        manager.load("m", "demo:mlp", hidden=8)
        manager.unload("m")
        assert len(asked) >= 3  # load started, load finished, unloaded
    finally:
        panel.close()
        manager.cleanup()
