"""The holder search and its removal plan on real objects, without IPython.

A plain dict stands in for the notebook's variables (a Site over it). Objects
are held only by that dict while a search runs: a test's own local variable is
itself a holder (a running function's, which the search reports as one).
Each class of the force issue is here as its own test: output-like entries cut
one by one, containers cut by item and kept, shared storages, autograd graphs
reached through tracebacks, commands that run as written, sizes measured at
release time.
"""

from __future__ import annotations

import dataclasses
import gc
import sys
import types
import weakref
from collections import namedtuple
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
from torch import nn

from nbmodels.core.holders import RemovalPlan, Site, Watch, default_sites, remove_key
from nbmodels.core.holders.execute import execute
from nbmodels.core.holders.search import search

MODULE = "nbmodels_test_holders_module"


def namespace(ns: dict[str, Any]) -> Site:
    return Site(ns, remove=remove_key, command="del {key}")


def plan_of(ns: dict[str, Any], key: str = "model", *extra: Site, pop: bool = False) -> tuple[RemovalPlan, Watch]:
    """The plan for the model at ``ns[key]`` (popped from ``ns`` first when ``pop``), and its watch."""
    watch = Watch("m", ns.pop(key) if pop else ns[key])
    (plan,) = search([watch], [namespace(ns), *extra]).plans
    return plan, watch


def force(plan: RemovalPlan, allow: tuple[str, ...] = ()) -> list[str]:
    """Run the plan; returns the commands (or descriptions) of what was done."""
    done, errors = execute([plan], allow)
    assert errors == {}
    return [action.text() for action in done.get(plan.name, [])]


def actions(plan: RemovalPlan) -> dict[str, str]:
    """holder -> what force runs (the command, or its description when no Python names it)."""
    return {a.holder: a.text() for a in plan.actions}


def small(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))


class Trainer:
    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.epochs = 3


class Slotted:
    __slots__ = ("model", "note")

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.note = "kept"


@dataclasses.dataclass(frozen=True)
class Frozen:
    model: nn.Module
    lr: float = 0.1


Pair = namedtuple("Pair", ["model", "score"])


def closure_over(model: nn.Module) -> Callable[[], nn.Module]:
    def predict() -> nn.Module:
        return model

    return predict


def steps(model: nn.Module) -> Iterator[int]:
    local = model
    yield 1
    del local


@pytest.fixture
def module() -> Iterator[types.ModuleType]:
    """A module in sys.modules, as an imported helper module of the user would be."""
    mod = types.ModuleType(MODULE)
    sys.modules[MODULE] = mod
    try:
        yield mod
    finally:
        del sys.modules[MODULE]


# --- naming, and the smallest cut ---------------------------------------------------------------


def test_each_holder_is_named_as_the_user_writes_it_and_cut_where_it_holds_the_model() -> None:
    ns: dict[str, Any] = {"model": small()}
    m = ns["model"]
    ns["alias"] = m
    ns["cache"] = {"m": m, "lr": 0.1}
    ns["layers"] = [1, 2, m]
    ns["trainer"] = Trainer(m)
    ns["outer"] = nn.Sequential(nn.ReLU(), m)
    ns["forward"] = m.forward
    ns["opt"] = torch.optim.SGD(m.parameters(), lr=0.1)
    ns["slots"] = Slotted(m)
    del m

    plan, _ = plan_of(ns)

    assert actions(plan) == {
        "model": "del model",
        "alias": "del alias",
        "forward": "del forward",  # a bound method of the model is part of it
        "opt": "del opt",  # an optimizer over its parameters only
        "cache['m']": "del cache['m']",
        "layers[2]": "layers[2] = None",  # None keeps the indices of the items after it
        "trainer.model": "trainer.model = None",
        "outer[1]": "outer[1] = None",  # a submodule reads as module[1], not _modules['1']
        "slots.model": "slots.model = None",
    }
    assert not plan.blockers and plan.frees()
    kinds = {a.holder: a.kind for a in plan.actions}
    assert kinds["model"] == "variable" and kinds["cache['m']"] == "item" and kinds["trainer.model"] == "attribute"


def test_force_cuts_only_those_references_and_leaves_every_container_and_its_other_items() -> None:
    ns: dict[str, Any] = {"model": small(), "data": [1, 2, 3], "config": {"lr": 0.1}, "other": small(1)}
    m = ns["model"]
    ns["cache"] = {"a": {"m": m, "lr": 0.1}, "keep": ns["data"]}
    ns["layers"] = [0, m, "tail"]
    ns["trainer"] = Trainer(m)
    ns["slots"] = Slotted(m)
    ns["runs"] = [ns["cache"]]  # reaches the model only through cache['a']['m']
    del m
    untouched = {name: ns[name] for name in ("data", "config", "other", "cache", "layers", "trainer", "runs")}
    plan, watch = plan_of(ns)

    force(plan)
    del plan

    assert not watch.alive()
    assert set(ns) == {*untouched, "slots"} and all(ns[k] is v for k, v in untouched.items())
    assert ns["cache"] == {"a": {"lr": 0.1}, "keep": [1, 2, 3]} and ns["cache"]["keep"] is ns["data"]
    assert ns["layers"] == [0, None, "tail"]
    assert ns["trainer"].model is None and ns["trainer"].epochs == 3
    assert ns["slots"].model is None and ns["slots"].note == "kept"
    assert ns["runs"] == [ns["cache"]]


def test_a_key_is_kept_as_the_object_not_its_text() -> None:
    """A key with a long repr (or none that reads back) is cut by the key itself, never skipped."""
    long_key = ("a long key " * 12, 3)
    odd_key = object()
    ns: dict[str, Any] = {"model": small()}
    ns["cache"] = {long_key: ns["model"], odd_key: ns["model"], "x": 1}
    plan, watch = plan_of(ns, pop=True)

    by_holder = actions(plan)
    assert by_holder[f"cache[{long_key!r}]"] == f"del cache[{long_key!r}]"  # whole, and valid Python
    (odd,) = [a for a in plan.actions if "object key" in a.holder]
    assert odd.command == "" and odd.description.startswith("delete the item <a object key> of cache")

    force(plan)
    del plan
    assert not watch.alive() and ns["cache"] == {"x": 1}


def test_every_command_offered_runs_as_written_in_the_namespace() -> None:
    """Commands are Python naming real objects; what has no Python name is said in words instead."""
    ns: dict[str, Any] = {"model": small()}
    m = ns["model"]
    ns["cache"] = {"deep": {"list": [0, m]}}
    ns["trainer"] = Trainer(m)
    ns["predict"] = closure_over(m)
    ns["keyed"] = {m: "value"}
    ns["members"] = {m}
    del m
    plan, watch = plan_of(ns, pop=True)

    runnable = {a.holder: a.command for a in plan.actions if a.command}
    assert runnable == {
        "cache['deep']['list'][1]": "cache['deep']['list'][1] = None",
        "trainer.model": "trainer.model = None",
        "predict": "del predict",  # offered, but only run when named: it holds more than the model
    }
    for command in runnable.values():
        exec(command, {}, ns)  # runs as written, in the notebook's namespace
    worded = [a.description for a in plan.actions if not a.command]
    assert any("of keyed whose key is it" in text for text in worded)
    assert any("from the set members" in text for text in worded)
    del plan
    assert watch.alive()  # keyed and members still hold it


# --- what force refuses, or does only when named ------------------------------------------------


def test_a_cut_that_takes_more_than_the_model_needs_the_holder_named() -> None:
    ns: dict[str, Any] = {"model": small()}
    ns["pair"] = (ns["model"], 0.9)
    ns["record"] = Pair(ns["model"], 0.9)
    ns["frozen"] = Frozen(ns["model"])
    ns["predict"] = closure_over(ns["model"])
    ns["gen"] = steps(ns["model"])
    next(ns["gen"])
    plan, watch = plan_of(ns, pop=True)

    waiting = {a.holder: a.takes for a in plan.waiting_for()}
    assert set(waiting) == {"pair", "record", "frozen", "predict", "gen"}
    assert "0.9" in waiting["pair"] and "function" in waiting["predict"] and "generator" in waiting["gen"]
    assert not plan.frees() and not plan.frees(["pair"]) and plan.frees(list(waiting))

    assert force(plan) == []  # nothing named: nothing done, since the rest alone would free nothing
    assert set(ns) == set(waiting)
    assert sorted(force(plan, tuple(waiting))) == sorted(f"del {name}" for name in waiting)
    del plan
    assert not watch.alive()


def test_a_tuple_made_only_of_parts_is_a_part_itself() -> None:
    ns: dict[str, Any] = {"model": small()}
    ns["both"] = (ns["model"][0], ns["model"][2])
    plan, watch = plan_of(ns, pop=True)
    assert actions(plan) == {"both": "del both"} and plan.frees()
    force(plan)
    del plan
    assert not watch.alive()


def test_a_holder_force_cannot_remove_means_nothing_is_removed(module: types.ModuleType) -> None:
    ns: dict[str, Any] = {"model": small()}
    ns["alias"] = ns["model"]
    module.CACHE = {"m": ns["model"]}
    plan, _ = plan_of(ns)

    (blocker,) = plan.blockers
    assert blocker.holder == f"{MODULE}.CACHE['m']" and blocker.kind == "module" and MODULE in blocker.reason
    assert not plan.frees() and force(plan) == []
    assert "model" in ns and "alias" in ns  # deleting them would have freed nothing


def test_a_local_variable_of_a_running_function_is_a_holder_force_cannot_cut() -> None:
    ns: dict[str, Any] = {"model": small()}
    mine = ns["model"]
    plan, _ = plan_of(ns)
    assert [b.kind for b in plan.blockers] == ["unseen"]
    assert "a function still running" in plan.blockers[0].reason  # its locals are never read: see the threading test
    del mine, plan
    plan, _ = plan_of(ns)
    assert not plan.blockers and plan.frees()


def test_a_loaded_model_that_shares_the_weights_blocks_the_release() -> None:
    ns: dict[str, Any] = {"model": small()}
    other = nn.Sequential(ns["model"][0], nn.Linear(4, 1))  # shares the first layer
    watch = Watch("m", ns["model"])
    (plan,) = search([watch], [namespace(ns)], loaded=[("other", other)]).plans
    assert [b.holder for b in plan.blockers] == ["the loaded model 'other'"]
    del other, plan


# --- storages, autograd, tracebacks ----------------------------------------------------------------


def test_tensors_sharing_the_model_storage_are_holders_and_freed_bytes_are_only_what_died() -> None:
    """``state_dict()``, ``.detach()``, a view and ``.data`` keep the storage after the module is gone."""
    ns: dict[str, Any] = {"model": small()}
    ns["best"] = ns["model"].state_dict()
    ns["w"] = ns["model"][0].weight.detach()
    ns["view"] = ns["model"][2].weight[0]
    ns["data"] = ns["model"][2].bias.data
    watch = Watch("m", ns.pop("model"))
    gc.collect()
    assert watch.alive() and not watch.model_alive()  # the module died, its storages did not
    assert watch.take_freed() == {}  # so nothing is counted as freed

    (plan,) = search([watch], [namespace(ns)]).plans
    assert actions(plan) == {
        "w": "del w",
        "data": "del data",
        "view": "del view",
        "best['0.weight']": "del best['0.weight']",
        "best['0.bias']": "del best['0.bias']",
        "best['2.weight']": "del best['2.weight']",
        "best['2.bias']": "del best['2.bias']",
    }
    assert plan.survivor == "4 of its 4 storages (120 B)"
    force(plan)
    del plan
    assert not watch.alive() and watch.take_freed() == {"cpu": 120}
    assert list(ns) == ["best"] and len(ns["best"]) == 0  # the dict stays, empty


def test_a_storage_kept_only_by_another_module_is_named(module: types.ModuleType) -> None:
    ns: dict[str, Any] = {"model": small()}
    module.BEST = ns["model"].state_dict()
    watch = Watch("m", ns.pop("model"))
    (plan,) = search([watch], [namespace(ns)]).plans
    assert {b.holder for b in plan.blockers} == {f"{MODULE}.BEST['{k}']" for k in module.BEST}
    del plan


def test_outputs_with_autograd_history_are_cut_item_by_item() -> None:
    """A loss in a list of losses, in a metrics dict, in a variable: the graph behind it holds the weights."""
    ns: dict[str, Any] = {"model": small()}
    loss = ns["model"](torch.randn(3, 4)).sum()
    ns["history"] = [0.5, 0.4, loss]
    ns["metrics"] = {"loss": loss, "acc": 0.9}
    ns["y"] = loss * 2
    del loss
    plan, watch = plan_of(ns, pop=True)

    assert actions(plan) == {"y": "del y", "history[2]": "history[2] = None", "metrics['loss']": "del metrics['loss']"}
    assert all("autograd graph holds its weights" in a.holds for a in plan.actions)
    assert {a.holder: a.kind for a in plan.actions}["y"] == "autograd"
    force(plan)
    del plan
    assert not watch.alive()
    assert ns == {"history": [0.5, 0.4, None], "metrics": {"acc": 0.9}}


def train(box: list[nn.Module]) -> None:
    y = box.pop()(torch.randn(2, 4))  # the model itself is no local: only y's graph holds its weights
    raise ValueError(f"shapes are off ({y.shape})")


@pytest.mark.usefixtures("last_exception")
def test_a_traceback_local_whose_graph_holds_the_weights_is_found() -> None:
    """The model object is gone; only ``y`` in a traceback's frame keeps its weights, through its graph."""
    ns: dict[str, Any] = {"model": small()}
    try:
        train([ns["model"]])
    except ValueError as error:
        sys.last_type, sys.last_value, sys.last_traceback = ValueError, error, error.__traceback__
    watch = Watch("m", ns.pop("model"))
    gc.collect()

    (plan,) = search([watch], default_sites()).plans
    (action,) = plan.actions  # the last exception goes as one: sys.last_type, last_value and last_traceback
    assert action.where == "sys.last_traceback → local 'y' of train()"
    assert action.holds.startswith("a tensor whose autograd graph holds its weights")
    assert action.command == "import sys; del sys.last_type; del sys.last_value; del sys.last_traceback"
    assert plan.frees() and not plan.blockers
    force(plan)
    del plan, action
    assert not watch.alive()
    assert not hasattr(sys, "last_value") and not hasattr(sys, "last_traceback")  # deleted, as IPython expects


def test_the_search_and_a_detached_plan_keep_nothing_alive() -> None:
    ns: dict[str, Any] = {"model": small()}
    ns["cache"] = {"m": ns["model"]}
    ref = weakref.ref(ns["model"])
    plan, _ = plan_of(ns)
    kept = plan.detached()
    del plan
    ns.clear()
    gc.collect()
    assert ref() is None and kept.actions and kept.ops == ()


def test_a_walk_that_runs_out_of_room_says_so_and_force_refuses() -> None:
    ns: dict[str, Any] = {"model": small(), "big": [list(range(10)) for _ in range(50)]}
    ns["box"] = [ns["model"]]
    watch = Watch("m", ns["model"])
    from nbmodels.core.holders.graph import Graph
    from nbmodels.core.holders.parts import Parts

    graph = Graph([namespace(ns)], Parts([watch]), max_nodes=10)
    graph.walk()
    assert graph.truncated.startswith("the search stopped: it had reached")
    graph.close()
    del watch


def test_a_watch_measures_storages_at_release_time() -> None:
    """Sizes are what the model is at release (after ``.half()``, with layers added), not what it was at load."""
    model = small()
    model.half()
    model.add_module("extra", nn.Linear(4, 8))
    watch = Watch("m", model)
    assert sum(r.nbytes for r in watch.storages) == (16 + 4 + 8 + 2) * 2 + (32 + 8) * 4
    assert watch.what() == "the model (220 B)"
    del model
    assert not watch.alive() and sum(watch.take_freed().values()) == 220
