"""The holder search on real objects: every holder named in the user's words, removed only when that frees.

A plain dict stands in for the notebook namespace (a Site over it), so these
tests never touch ``__main__``. Objects are held only by that namespace while a
search runs: a test's own local variable is itself a holder (one the garbage
collector cannot see), and one test shows exactly that.
"""

from __future__ import annotations

import gc
import sys
import types
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
from torch import nn

from nbmodels.core.memory import footprint
from nbmodels.core.refs import Holder, HolderSearch, Site, Watch, default_sites, find_holders, remove_key

NAME = "nbmodels_test_holder_module"


def namespace_site(ns: dict[str, Any]) -> Site:
    return Site(ns, remove=remove_key, action="del {key}")


def search(ns: dict[str, Any], name: str, *extra: Site, **limits: Any) -> HolderSearch:
    """A search for ``ns[name]`` (held by nothing of ours but the search) in namespace ``ns``."""
    return HolderSearch([[ns[name]]], [namespace_site(ns), *extra], **limits)


def holders_of(ns: dict[str, Any], name: str, *extra: Site) -> dict[str, Holder]:
    with search(ns, name, *extra) as found:
        return {h.path: h for h in found.holders(0)}


def small() -> nn.Module:
    return nn.Linear(4, 4)


class Trainer:
    def __init__(self, model: nn.Module) -> None:
        self.model = model


def closure_over(model: nn.Module) -> Callable[[], nn.Module]:
    def predict() -> nn.Module:
        return model

    return predict


def train(model: nn.Module) -> None:
    x = model
    del model
    raise ValueError(f"boom {type(x).__name__}")


def raised_from(model: nn.Module) -> BaseException:
    """The error train() raised; only train()'s frame in its traceback holds the model."""
    box = [model]
    del model
    try:
        train(box.pop())
    except ValueError as error:
        return error
    raise AssertionError("train() did not raise")


@pytest.fixture
def module() -> Iterator[types.ModuleType]:
    """A module in sys.modules, as an imported helper module of the user would be."""
    mod = types.ModuleType(NAME)
    sys.modules[NAME] = mod
    try:
        yield mod
    finally:
        del sys.modules[NAME]


def test_each_holder_is_named_as_the_user_would_write_it() -> None:
    ns: dict[str, Any] = {"model": small()}
    ns["alias"] = ns["model"]
    ns["cache"] = {"m": ns["model"]}
    ns["layers"] = [1, 2, 3, ns["model"]]
    ns["trainer"] = Trainer(ns["model"])
    ns["predict"] = closure_over(ns["model"])
    ns["forward"] = ns["model"].forward
    ns["outer"] = nn.Sequential(nn.ReLU(), ns["model"])

    found = holders_of(ns, "model")

    assert found["model"].kind == "variable" and found["alias"].kind == "variable"
    assert found["cache['m']"].kind == "item"
    assert found["layers[3]"].kind == "item"
    assert found["trainer.model"].kind == "attribute"
    assert found["outer[1]"].kind == "attribute"  # a submodule reads as module[1], not _modules['1']
    closure = "predict → closure variable 'model' of closure_over.<locals>.predict()"
    assert found[closure].kind == "closure"
    assert found["forward → bound method Linear.forward (of it)"].kind == "method"
    plain = {"del cache['m']", "layers[3] = None"}  # an item of a plain container goes, not the container
    assert {h.action for h in found.values()} == {
        f"del {name}" for name in ns if name not in ("cache", "layers")
    } | plain


def test_a_traceback_holder_names_the_function_and_its_local_along_context_chains() -> None:
    ns: dict[str, Any] = {"model": small()}
    ns["error"] = raised_from(ns["model"])
    try:
        raise KeyError("while handling") from ns["error"]
    except KeyError as later:
        ns["later"] = later
    ns.pop("model")

    found = holders_of(ns, "error")
    assert "error" in found

    ns["model"] = ns["error"].__traceback__.tb_next.tb_frame.f_locals["x"]
    found = holders_of(ns, "model")
    assert found["error → traceback → local 'x' of train()"].kind == "frame"
    assert found["later.__cause__ → traceback → local 'x' of train()"].kind == "frame"


def test_the_last_exception_is_a_known_place_and_force_clears_it_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    ns: dict[str, Any] = {"model": small()}
    error = raised_from(ns["model"])
    for name, value in (("last_type", ValueError), ("last_value", error), ("last_traceback", error.__traceback__)):
        monkeypatch.setattr(sys, name, value, raising=False)
    monkeypatch.setattr(sys, "last_exc", error, raising=False)
    del error, value  # a test's local would hold the traceback: a running frame gc cannot see
    ref = weakref.ref(ns.pop("model"))

    group = [ref()]
    with HolderSearch([group], default_sites()) as found:
        del group
        paths = {h.path: h for h in found.holders(0)}
        assert paths["sys.last_value → traceback → local 'x' of train()"].action == "sys.last_value = None"
        assert {h.kind for h in paths.values()} == {"exception"}
        assert found.releasable(0)
        found.remove([0])
    gc.collect()
    assert ref() is None
    assert sys.last_value is None and sys.last_traceback is None and sys.last_type is None


def test_force_removes_exactly_the_variables_that_lead_to_the_object() -> None:
    ns: dict[str, Any] = {"model": small(), "data": [1, 2, 3], "config": {"lr": 0.1}, "other": small()}
    ns["cache"] = {"m": ns["model"], "keep": ns["data"]}
    ns["predict"] = closure_over(ns["model"])
    untouched = {name: ns[name] for name in ("data", "config", "other")}
    ref = weakref.ref(ns["model"])

    with search(ns, "model") as found:
        assert found.releasable(0)
        removed = found.remove([0])
    gc.collect()

    assert ref() is None
    assert {h.action for h in removed[0]} == {"del model", "del cache['m']", "del predict"}
    assert sorted(ns) == sorted([*untouched, "cache"]) and ns["cache"] == {"keep": ns["data"]}
    assert all(ns[name] is value for name, value in untouched.items())


def test_a_holder_force_cannot_remove_means_nothing_is_removed(module: types.ModuleType) -> None:
    ns: dict[str, Any] = {"model": small()}
    ns["alias"] = ns["model"]
    module.CACHE = {"m": ns["model"]}

    with search(ns, "model") as found:
        holders = {h.path: h for h in found.holders(0)}
        stuck = holders[f"{NAME}.CACHE['m']"]
        assert stuck.kind == "module" and not stuck.removable and NAME in stuck.reason
        assert not found.releasable(0)
        assert found.remove([0]) == {}
    assert "model" in ns and "alias" in ns  # deleting them would have freed nothing


def test_a_local_variable_of_a_running_function_is_a_holder_gc_cannot_see() -> None:
    ns: dict[str, Any] = {"model": small()}
    mine = ns["model"]

    with search(ns, "model") as found:
        holders = found.holders(0)
        assert [h.kind for h in holders] == ["variable", "unseen"]
        assert "running function" in holders[1].reason
        assert not found.releasable(0)
    del mine

    with search(ns, "model") as found:
        assert [h.kind for h in found.holders(0)] == ["variable"]
        assert found.releasable(0)


def test_an_output_with_autograd_history_keeps_the_weights_and_is_found() -> None:
    ns: dict[str, Any] = {"model": small()}
    ns["y"] = ns["model"](torch.randn(2, 4))
    weight = weakref.ref(ns["model"].weight)
    del ns["model"]
    gc.collect()
    assert weight() is not None  # the module is gone, its weights are not

    with HolderSearch([[weight()]], [namespace_site(ns)]) as found:
        (holder,) = found.holders(0)
        assert holder.path == "y → autograd graph (grad_fn=AddmmBackward0)"
        assert holder.kind == "autograd" and holder.action == "del y"
        found.remove([0])
    gc.collect()
    assert weight() is None and "y" not in ns


def test_the_search_keeps_nothing_alive_and_ignores_itself() -> None:
    ns: dict[str, Any] = {"model": small()}
    ref = weakref.ref(ns["model"])
    with search(ns, "model") as found:
        assert [h.path for h in found.holders(0)] == ["model"]  # none of the search's own lists
    del found
    ns.clear()
    gc.collect()
    assert ref() is None


def test_a_chain_longer_than_the_depth_bound_is_unknown_and_blocks_force() -> None:
    chain: Any = small()
    ref = weakref.ref(chain)
    for _ in range(8):
        chain = [chain]
    ns: dict[str, Any] = {"deep": chain}
    del chain

    with HolderSearch([[ref()]], [namespace_site(ns)], max_depth=4) as found:
        (holder,) = found.holders(0)
        assert holder.kind == "unknown" and "4 steps" in holder.reason
        assert not found.releasable(0)
    with HolderSearch([[ref()]], [namespace_site(ns)]) as found:
        assert [h.path for h in found.holders(0)] == ["deep[0][0][0][0][0][0][0][0]"]


def test_find_holders_is_the_one_call_version() -> None:
    ns: dict[str, Any] = {"model": small()}
    assert [h.path for h in find_holders(ns["model"], sites=[namespace_site(ns)])] == ["model"]


def test_holders_are_frozen_records_of_text() -> None:
    holder = Holder("cache['m']", "item", "del cache['m']")
    assert holder.removable and str(holder) == "cache['m']"
    assert holder.describe() == "cache['m'] [item] (force: del cache['m'])"
    stuck = Holder("helpers.CACHE", "module", reason="a global")
    assert not stuck.removable and "cannot remove it: a global" in stuck.describe()
    with pytest.raises(AttributeError):
        holder.path = "x"  # type: ignore[misc]


def test_a_watch_sees_tensors_that_outlive_their_model() -> None:
    model = small()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    watch = Watch("m", model, footprint(model))
    assert watch.alive() and watch.what() == "the model"
    del model
    gc.collect()
    assert watch.alive()  # the optimizer holds the parameters
    assert watch.what().startswith("2 of its tensors")
    assert len(watch.survivors()) == 2
    del optimizer
    gc.collect()
    assert not watch.alive() and watch.survivors() == []
