"""``unload(name, force=True)`` and ``cleanup(force=True)`` through the manager API, without IPython.

The "notebook namespace" is a dict named by a holder finder (the hook the IPython
layer uses), or the real ``__main__`` module for a script user. Models are held
only by those namespaces while the manager looks: a test's own local variable
would itself be a holder (one gc cannot see).
"""

from __future__ import annotations

import gc
import sys
import types
import weakref
from collections.abc import Iterator
from typing import Any

import pytest
import torch

from nbmodels.core import ModelManager
from nbmodels.core.refs import Site, remove_key
from nbmodels.errors import ModelNotFoundError

NAME = "nbmodels_test_force_module"


class Namespace:
    """A holder finder naming one dict as the user's variables."""

    def __init__(self) -> None:
        self.ns: dict[str, Any] = {}
        self.calls = 0

    def __call__(self) -> list[Site]:
        self.calls += 1
        return [Site(self.ns, remove=remove_key, action="del {key}")]


@pytest.fixture
def ns(manager: ModelManager) -> Iterator[dict[str, Any]]:
    finder = Namespace()
    undo = manager.add_holder_finder(finder)
    try:
        yield finder.ns
    finally:
        undo()
        finder.ns.clear()


@pytest.fixture
def main() -> Iterator[dict[str, Any]]:
    """The real ``__main__`` namespace, as a script's variables; what a test puts there is removed after."""
    namespace = vars(sys.modules["__main__"])
    before = set(namespace)
    try:
        yield namespace
    finally:
        for name in set(namespace) - before:
            del namespace[name]


def test_an_unload_nothing_else_holds_does_no_search_and_no_gc_pass(manager: ModelManager) -> None:
    finder = Namespace()
    manager.add_holder_finder(finder)
    ref = weakref.ref(manager.load("m", "demo:mlp", size_mb=50))
    report = manager.unload("m")
    assert ref() is None and report.ok
    assert not report.gc_collected and report.hunt_seconds == 0.0 and finder.calls == 0


def test_without_force_the_report_names_holders_and_the_command_and_deletes_nothing(
    manager: ModelManager, ns: dict[str, Any]
) -> None:
    ns["model"] = manager.load("m", "demo:mlp", hidden=16)
    ns["cache"] = {"m": ns["model"]}

    report = manager.unload("m")

    (alive,) = report.still_alive
    assert [h.path for h in alive.holders] == ["model", "cache['m']"]
    assert [h.action for h in alive.holders] == ["del model", "del cache['m']"]
    assert alive.fix == "manager.unload('m', force=True)"
    assert "free it with manager.unload('m', force=True)" in str(report)
    assert set(ns) == {"model", "cache"} and report.removed == {}


def test_force_removes_the_holders_frees_the_model_and_leaves_the_rest(
    manager: ModelManager, ns: dict[str, Any]
) -> None:
    ns["model"] = manager.load("m", "demo:mlp", hidden=16)
    ns["cache"] = {"m": ns["model"], "lr": 0.1}
    ns["data"] = [1, 2, 3]
    ns["other"] = manager.load("other", "demo:mlp", hidden=16, seed=1)
    ref = weakref.ref(ns["model"])
    accounted = manager.info("m").bytes_by_device
    untouched = {name: ns[name] for name in ("data", "other")}

    report = manager.unload("m", force=True)

    assert ref() is None and report.ok and report.forced
    assert {h.action for h in report.removed["m"]} == {"del model", "del cache['m']"}
    assert report.freed_bytes == accounted
    assert set(ns) == {"cache", "data", "other"} and all(ns[k] is v for k, v in untouched.items())
    assert ns["cache"] == {"lr": 0.1}
    assert "other" in manager
    assert "force removed 2 holder(s) of m:\n  - del model\n  - del cache['m']" in str(report)
    assert "force removed what held m: del model; del cache['m']" in report.lines()


def test_force_cuts_the_item_from_plain_containers_and_keeps_the_containers(
    manager: ModelManager, ns: dict[str, Any]
) -> None:
    metrics = [1, 2]
    ns["cache"] = {"a": {"m": manager.load("m", "demo:mlp", hidden=16), "lr": 0.1}, "metrics": metrics}
    ns["layers"] = [0, ns["cache"]["a"]["m"], "tail"]
    ns["runs"] = [ns["cache"]]  # reaches the model only through cache['a']['m']: untouched
    ns["trainer"] = types.SimpleNamespace(models=[ns["cache"]["a"]["m"]])  # not plain: the variable goes
    ref = weakref.ref(ns["cache"]["a"]["m"])
    cache, layers, runs = ns["cache"], ns["layers"], ns["runs"]

    (alive,) = manager.unload("m").still_alive
    actions = {h.path: h.action for h in alive.holders}
    assert actions["cache['a']['m']"] == "del cache['a']['m']"
    assert actions["layers[1]"] == "layers[1] = None"  # keeps the indices of the items after it
    assert actions["trainer.models[0]"] == "del trainer"

    report = manager.unload("m", force=True)

    assert ref() is None and report.ok
    assert {h.action for h in report.removed["m"]} == {"layers[1] = None", "del trainer", "del cache['a']['m']"}
    assert set(ns) == {"cache", "layers", "runs"}
    assert ns["cache"] is cache and cache == {"a": {"lr": 0.1}, "metrics": [1, 2]} and cache["metrics"] is metrics
    assert ns["layers"] is layers and layers == [0, None, "tail"]
    assert ns["runs"] is runs and runs == [cache]
    del cache, layers, runs


def test_a_model_released_earlier_can_be_forced_by_name_afterwards(manager: ModelManager, ns: dict[str, Any]) -> None:
    ns["model"] = manager.load("m", "demo:mlp", hidden=16)
    ref = weakref.ref(ns["model"])
    first = manager.unload("m")
    assert first.still_alive and "m" not in manager
    assert manager.survivors() == ["m"]

    again = manager.unload("m")  # still alive: checked again, still nothing deleted
    assert again.released == () and again.rechecked == ("m",) and again.still_alive and "model" in ns

    forced = manager.unload("m", force=True)
    assert ref() is None and forced.ok and forced.rechecked == ("m",)
    assert manager.survivors() == []
    assert sum(forced.freed_bytes.values()) > 0
    with pytest.raises(ModelNotFoundError):
        manager.unload("m")


def test_a_model_that_died_on_its_own_is_counted_as_freed_at_the_next_cleanup(
    manager: ModelManager, ns: dict[str, Any]
) -> None:
    ns["model"] = manager.load("m", "demo:mlp", hidden=16)
    assert manager.unload("m").still_alive
    ns.clear()  # the user deleted it themselves
    report = manager.cleanup()
    assert report.ok and report.rechecked == ("m",) and sum(report.freed_bytes.values()) > 0
    assert manager.cleanup().rechecked == ()


def test_cleanup_with_force_frees_every_model(manager: ModelManager, ns: dict[str, Any]) -> None:
    ns["both"] = [manager.load("a", "demo:mlp", hidden=16), manager.load("b", "demo:mlp", hidden=16, seed=1)]
    refs = [weakref.ref(model) for model in ns["both"]]
    report = manager.cleanup(force=True)
    assert report.ok and all(ref() is None for ref in refs)
    assert [h.action for h in report.removed["a"]] == ["both[0] = None"]
    assert [h.action for h in report.removed["b"]] == ["both[1] = None"]
    assert ns["both"] == [None, None]


def test_a_holder_force_cannot_remove_stops_force_from_deleting_anything(
    manager: ModelManager, ns: dict[str, Any]
) -> None:
    module = types.ModuleType(NAME)
    sys.modules[NAME] = module
    try:
        ns["model"] = manager.load("m", "demo:mlp", hidden=16)
        module.CACHE = ns["model"]
        report = manager.unload("m", force=True)
        (alive,) = report.still_alive
        assert "model" in ns and report.removed == {}
        assert alive.fix == "" and f"{NAME}.CACHE" in alive.blocked
        assert f"force cannot free it: {NAME}.CACHE holds it" in alive.describe()
    finally:
        del sys.modules[NAME]


def test_force_in_a_script_deletes_the_scripts_variables(manager: ModelManager, main: dict[str, Any]) -> None:
    main["model"] = manager.load("m", "demo:mlp", hidden=16)
    main["unrelated"] = {"keep": True}
    ref = weakref.ref(main["model"])
    report = manager.unload("m", force=True)
    assert ref() is None and report.ok
    assert "model" not in main and main["unrelated"] == {"keep": True}


def test_the_last_exception_is_cleared_when_it_holds_the_model(
    manager: ModelManager, ns: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    def step(box: list[Any]) -> None:
        model = box.pop()
        raise RuntimeError(f"failed with {type(model).__name__}")

    try:
        step([manager.load("m", "demo:mlp", hidden=16)])
    except RuntimeError as error:
        monkeypatch.setattr(sys, "last_type", RuntimeError, raising=False)
        monkeypatch.setattr(sys, "last_value", error, raising=False)
        monkeypatch.setattr(sys, "last_traceback", error.__traceback__, raising=False)
    report = manager.unload("m")
    assert [h.path for h in report.still_alive[0].holders] == [
        "sys.last_traceback → local 'model' of step()",
        "sys.last_value → traceback → local 'model' of step()",
    ]
    report = manager.unload("m", force=True)
    assert report.ok
    assert sys.last_value is None and sys.last_traceback is None and sys.last_type is None


def test_tensors_that_outlive_the_model_are_explained_and_freed(manager: ModelManager, ns: dict[str, Any]) -> None:
    model = manager.load("m", "demo:mlp", hidden=16)
    ns["opt"] = torch.optim.SGD(model.parameters(), lr=0.1)
    weight = weakref.ref(next(model.parameters()))
    del model

    report = manager.unload("m")
    (alive,) = report.still_alive
    assert alive.what.startswith("6 of its tensors")
    assert alive.holders[0].path.startswith("opt.param_groups[0]['params']")
    assert alive.holders[0].action == "del opt"

    assert manager.unload("m", force=True).ok and weight() is None and "opt" not in ns


def test_an_output_with_autograd_history_is_found_and_removed(manager: ModelManager, ns: dict[str, Any]) -> None:
    ns["y"] = manager.load("m", "demo:mlp", hidden=16)(torch.randn(2, 64))
    report = manager.unload("m")
    (alive,) = report.still_alive
    assert alive.holders[0].kind == "autograd" and alive.holders[0].path.startswith("y → autograd graph")
    assert manager.unload("m", force=True).ok and "y" not in ns


def test_a_finder_is_asked_only_when_a_model_survived_and_can_be_removed(manager: ModelManager) -> None:
    finder = Namespace()
    undo = manager.add_holder_finder(finder)
    manager.load("m", "demo:mlp", hidden=16)
    manager.unload("m")
    assert finder.calls == 0
    finder.ns["model"] = manager.load("m", "demo:mlp", hidden=16)
    manager.unload("m")
    assert finder.calls == 1
    undo()
    manager.unload("m")
    assert finder.calls == 1
    finder.ns.clear()


def test_a_failing_finder_is_logged_and_the_search_goes_on(
    manager: ModelManager, ns: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> list[Site]:
        raise RuntimeError("finder bug")

    undo = manager.add_holder_finder(broken)
    try:
        ns["model"] = manager.load("m", "demo:mlp", hidden=16)
        assert manager.unload("m", force=True).ok
        assert "a holder finder failed" in caplog.text
    finally:
        undo()


def test_reports_hold_no_model_and_show_holders_as_text_and_html(manager: ModelManager, ns: dict[str, Any]) -> None:
    ns["model"] = manager.load("m", "demo:mlp", hidden=16)
    ref = weakref.ref(ns["model"])
    report = manager.unload("m")
    html = report._repr_html_()
    assert "<td>model</td><td>variable</td><td>del model</td>" in html
    assert "  - model [variable] (force: del model)" in str(report)
    forced = manager.unload("m", force=True)
    assert "force removed what held m: del model" in forced._repr_html_()
    gc.collect()
    assert ref() is None  # both reports are still here, and hold nothing of the model
    with pytest.raises(AttributeError):
        report.forced = True  # type: ignore[misc]


def test_an_optimizer_and_an_output_with_history_together_are_both_removed(
    manager: ModelManager, ns: dict[str, Any]
) -> None:
    model = manager.load("m", "demo:mlp", hidden=16)
    ns["opt"] = torch.optim.SGD(model.parameters(), lr=0.1)
    ns["loss"] = model(torch.randn(4, 64)).sum()
    weight = weakref.ref(next(model.parameters()))
    del model
    (alive,) = manager.unload("m").still_alive
    assert {h.kind for h in alive.holders} == {"item", "autograd"} and alive.fix
    assert manager.unload("m", force=True).ok and weight() is None and ns == {}
