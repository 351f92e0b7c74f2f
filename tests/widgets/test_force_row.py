"""Freeing a model that is still held is one click on its row, and force runs only the plan it showed.

A user namespace the holder search is taught about stands in for the notebook's (the IPython holders
are tested with a real shell in the magics' and leak tests); the models are real torch modules.
"""

from __future__ import annotations

import sys
import types
import weakref
from collections.abc import Iterator
from typing import Any

import pytest

from nbmodels import ModelManager
from nbmodels.core.holders import Site, remove_key
from nbmodels.widgets.panel import ModelPanel

WAIT = 60.0


@pytest.fixture
def namespace(manager: ModelManager) -> dict[str, Any]:
    names: dict[str, Any] = {}
    manager.add_holder_finder(lambda: [Site(names, remove=remove_key, command="del {key}")])
    return names


@pytest.fixture
def manager() -> Iterator[ModelManager]:
    mgr = ModelManager()
    yield mgr
    mgr.cleanup(force=True)


@pytest.fixture
def panel(manager: ModelManager) -> Iterator[ModelPanel]:
    view = ModelPanel(manager, cuda_devices=0)
    yield view
    view.close()


def held_model(manager: ModelManager, namespace: dict[str, Any], name: str = "held") -> weakref.ref[Any]:
    manager.load(name, "demo:mlp", hidden=64)
    namespace["model"] = manager.get(name)
    return weakref.ref(namespace["model"])


def test_unloading_a_held_model_leaves_a_row_with_the_plan(
    manager: ModelManager, panel: ModelPanel, namespace: dict[str, Any]
) -> None:
    model = held_model(manager, namespace)
    panel.rows["held"].unload_button.click()
    assert panel.rows == {}
    assert list(panel.held) == ["held"]
    row = panel.held["held"]
    assert "nbmodels-held-held" in row.box._dom_classes
    assert "held by model · force would: del model" in row.cells.value
    assert row.force_button.description == "Force free"
    assert not row.force_button.disabled
    assert panel.status_kind == "warn"
    assert "Force free runs it" in panel.status_text
    assert model() is not None  # shown, not yet run


def test_one_click_on_the_row_frees_it(manager: ModelManager, panel: ModelPanel, namespace: dict[str, Any]) -> None:
    namespace["losses"] = [0.5, 0.25]  # the user's other work: never touched
    model = held_model(manager, namespace)
    panel.rows["held"].unload_button.click()
    panel.held["held"].force_button.click()
    assert model() is None
    assert "model" not in namespace
    assert namespace["losses"] == [0.5, 0.25]
    assert panel.held == {}
    assert panel.status_kind == "ok", panel.status_text
    assert "force removed what held held: del model" in panel.status_text
    assert manager.survivors() == []


def test_force_never_runs_a_plan_it_did_not_show(
    manager: ModelManager, panel: ModelPanel, namespace: dict[str, Any]
) -> None:
    model = held_model(manager, namespace)
    panel.rows["held"].unload_button.click()
    namespace["alias"] = namespace["model"]  # a new holder after the row was drawn
    panel.held["held"].force_button.click()
    assert model() is not None, "force ran a plan the row had not shown"
    assert "alias" in namespace and "model" in namespace
    assert panel.status_kind == "warn"
    row = panel.held["held"]
    assert "del alias" in row.cells.value and "del model" in row.cells.value
    row.force_button.click()  # the new plan was shown: this click runs it
    assert model() is None
    assert "alias" not in namespace and "model" not in namespace


def test_a_held_model_the_user_let_go_of_is_freed_by_the_click_without_force(
    manager: ModelManager, panel: ModelPanel, namespace: dict[str, Any]
) -> None:
    model = held_model(manager, namespace)
    panel.rows["held"].unload_button.click()
    del namespace["model"]  # the user deleted the variable
    assert model() is None
    panel.refresh()
    assert panel.held == {}  # nothing holds it: the row goes at the next refresh


def test_a_holder_force_cannot_remove_disables_the_button(manager: ModelManager, panel: ModelPanel) -> None:
    module = types.ModuleType("nbm_test_holder_module")
    sys.modules[module.__name__] = module
    try:
        manager.load("kept", "demo:mlp", hidden=16)
        module.kept = manager.get("kept")  # type: ignore[attr-defined]
        panel.rows["kept"].unload_button.click()
        row = panel.held["kept"]
        assert "force cannot free it" in row.cells.value
        assert row.force_button.disabled
        row.force_button.click()  # a click anyway (a stale view): refused, nothing removed
        assert module.kept is not None  # type: ignore[attr-defined]
    finally:
        del sys.modules[module.__name__]
        del module.kept  # type: ignore[attr-defined]


def test_a_new_model_of_the_same_name_is_never_unloaded_by_the_old_ones_force(
    manager: ModelManager, panel: ModelPanel, namespace: dict[str, Any]
) -> None:
    old = held_model(manager, namespace)
    panel.rows["held"].unload_button.click()
    manager.load("held", "demo:mlp", hidden=8)  # the name is reused while the old model is held
    row = panel.held["held"]
    assert row.force_button.disabled
    assert "a new held is loaded: unload it first" in row.cells.value
    panel.force_free("held")  # even called directly
    assert "held" in manager
    assert old() is not None
    assert panel.status_kind == "warn"


def test_a_survivor_released_before_the_panel_opened_gets_a_check_button(
    manager: ModelManager, namespace: dict[str, Any]
) -> None:
    model = held_model(manager, namespace)
    manager.unload("held")  # e.g. %unload_model in a cell, before the panel existed
    view = ModelPanel(manager, cuda_devices=0)
    try:
        row = view.held["held"]
        assert row.force_button.description == "Check"
        row.force_button.click()  # looks: removes nothing, shows the plan
        assert model() is not None
        assert "force would: del model" in row.cells.value
        assert row.force_button.description == "Force free"
        row.force_button.click()
        assert model() is None
    finally:
        view.close()
