"""Budgets in a real manager with real torch models on the CPU: who leaves, who stays, and what is said."""

from __future__ import annotations

import gc
import threading
import weakref
from typing import Any

import pytest
import torch

from nbmodels import BudgetExceededError, InvalidArgumentError
from nbmodels.core import Event, ModelManager, demo

MiB = 2**20
SIZE = 2  # MiB of each test model (demo:mlp sizes itself to about that much float32)


class Clock:
    """A clock the test moves by hand, so "least recently used" is exact."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        self.now += 1.0  # every reading is a later moment: uses are strictly ordered
        return self.now


@pytest.fixture
def mgr() -> Any:
    manager = ModelManager(clock=Clock())
    yield manager
    manager.cleanup()


def load(mgr: ModelManager, name: str, seed: int = 0, **options: Any) -> Any:
    return mgr.load(name, "demo:mlp", size_mb=SIZE, seed=seed, **options)


def size_of(mgr: ModelManager, name: str) -> int:
    total = mgr.info(name).total_bytes
    assert total is not None
    return total


def evictions(mgr: ModelManager) -> list[Event]:
    seen: list[Event] = []
    mgr.subscribe(lambda event: seen.append(event) if event.kind == "evicted" else None)
    return seen


def accounted(mgr: ModelManager) -> int:
    return sum(info.total_bytes or 0 for info in mgr.list())


def test_a_load_over_budget_evicts_the_least_recently_used_first(mgr: ModelManager) -> None:
    seen = evictions(mgr)
    load(mgr, "a", 1)
    load(mgr, "b", 2)
    one = size_of(mgr, "a")
    mgr.set_max_memory({"cpu": int(2.5 * one)})
    mgr.get("a")  # a use: b is now the least recently used
    load(mgr, "c", 3)
    assert [info.name for info in mgr.list()] == ["a", "c"]
    assert [event.name for event in seen] == ["b"]
    assert seen[0].cause == "c" and seen[0].report is not None and seen[0].report.ok
    assert seen[0].reason is not None
    assert seen[0].reason.startswith("evicted b (2.0 MiB, idle ") and seen[0].reason.endswith(" to fit c")
    assert accounted(mgr) <= mgr.max_memory["cpu"]


def test_a_size_known_before_the_load_makes_room_first(mgr: ModelManager) -> None:
    """demo models are estimated on the meta device: b leaves before c is built, so the two never coexist."""
    load(mgr, "b", 2)
    mgr.set_max_memory({"cpu": int(1.5 * size_of(mgr, "b"))})
    gone = weakref.ref(mgr.get("b"))
    order: list[str] = []

    def build() -> torch.nn.Module:
        order.append("b alive" if gone() is not None else "b gone")
        return demo.mlp(size_mb=SIZE, seed=3)

    mgr.load("c", build)
    assert order == ["b alive"]  # a factory's size is unknown: load, then evict
    mgr.unload("c")
    load(mgr, "b", 2)
    gone = weakref.ref(mgr.get("b"))
    seen = evictions(mgr)
    load(mgr, "d", 4)
    assert gone() is None and [e.name for e in seen] == ["b"]
    assert mgr.loading() == []


def test_an_eviction_after_a_load_of_unknown_size_is_one_event(mgr: ModelManager) -> None:
    """A factory's size is known only once it ran: the eviction that follows is said once, not twice."""
    load(mgr, "b", 2)
    mgr.set_max_memory({"cpu": int(1.5 * size_of(mgr, "b"))})
    seen = evictions(mgr)
    mgr.load("c", lambda: demo.mlp(size_mb=SIZE, seed=3))
    assert [(e.name, e.cause) for e in seen] == [("b", "c")]


def test_a_model_held_by_a_variable_is_passed_over_for_one_that_really_frees(mgr: ModelManager) -> None:
    held = load(mgr, "old", 1)  # the user's variable: releasing it would free nothing
    load(mgr, "newer", 2)
    mgr.set_max_memory({"cpu": int(2.5 * size_of(mgr, "old"))})
    seen = evictions(mgr)
    load(mgr, "new", 3)
    assert [e.name for e in seen] == ["newer"]  # though "old" was used longer ago
    assert "old" in mgr
    del held


def test_when_only_held_and_pinned_models_remain_the_error_names_them_and_nothing_loads(mgr: ModelManager) -> None:
    model = load(mgr, "held", 1)
    load(mgr, "keep", 2, pin=True)
    mgr.set_max_memory({"cpu": int(2.5 * size_of(mgr, "held"))})
    built: list[weakref.ref[Any]] = []

    def build() -> torch.nn.Module:
        module = demo.mlp(size_mb=SIZE, seed=5)
        built.append(weakref.ref(module))
        return module

    with pytest.raises(BudgetExceededError) as info:
        mgr.load("big", build)
    message = str(info.value)
    assert message.startswith("no room for big: it needs 2.0 MiB on cpu; the cpu budget is 5.0 MiB")
    assert "keep (2.0 MiB, pinned)" in message
    assert "held (2.0 MiB, held by " in message
    assert "big was released again" in message and "(it loaded, measured 2.0 MiB, and did not fit)" in message
    assert info.value.blocked == ("keep", "held") and info.value.name == "big"
    assert isinstance(info.value, RuntimeError)
    gc.collect()
    assert built and built[0]() is None  # nothing half-loaded: the model that did not fit is gone
    assert [i.name for i in mgr.list()] == ["held", "keep"] and mgr.loading() == []
    del model


def test_an_estimate_refuses_before_anything_is_built(mgr: ModelManager) -> None:
    load(mgr, "keep", 1, pin=True)
    mgr.set_max_memory({"cpu": int(1.5 * size_of(mgr, "keep"))})
    with pytest.raises(BudgetExceededError, match=r"nothing was loaded$"):
        load(mgr, "big", 2)
    with pytest.raises(BudgetExceededError, match="more than the whole cpu budget"):
        mgr.load("huge", "demo:mlp", size_mb=4 * SIZE)
    assert [i.name for i in mgr.list()] == ["keep"]


def test_a_model_whose_optimizer_holds_its_parameters_is_passed_over(mgr: ModelManager) -> None:
    """A training loop's optimizer holds the parameters, not the module: evicting that model would free
    nothing and take it from the user. The policy sees it and evicts the next model instead."""
    first = load(mgr, "trained", 1)
    optimizer = torch.optim.SGD(first.parameters(), lr=0.1)
    del first
    load(mgr, "spare", 2)
    mgr.set_max_memory({"cpu": int(2.5 * size_of(mgr, "spare"))})
    seen = evictions(mgr)
    load(mgr, "new", 3)
    assert [e.name for e in seen] == ["spare"]
    assert [i.name for i in mgr.list()] == ["trained", "new"]
    mgr.set_max_memory({"cpu": int(1.5 * size_of(mgr, "new"))})  # new leaves; then only trained could
    with pytest.raises(BudgetExceededError) as info:
        load(mgr, "newest", 4)
    assert info.value.blocked == ("trained",) and "trained (2.0 MiB, held by " in str(info.value)
    assert [i.name for i in mgr.list()] == ["trained"]
    del optimizer


def test_tied_weights_are_not_mistaken_for_a_holder(mgr: ModelManager) -> None:
    """One parameter registered in two layers is held twice by the model itself; it is still freeable."""

    def tied() -> torch.nn.Module:
        model = demo.mlp(size_mb=SIZE, seed=1)
        layers = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
        same = [m for m in layers if m.weight.shape == layers[-1].weight.shape]
        if len(same) < 2:
            model.append(torch.nn.Linear(layers[-1].in_features, layers[-1].out_features))
            same = [layers[-1], model[-1]]
        same[1].weight = same[0].weight
        return model

    mgr.load("tied", tied)
    mgr.set_max_memory({"cpu": int(1.5 * size_of(mgr, "tied"))})
    seen = evictions(mgr)
    load(mgr, "new", 2)
    assert [e.name for e in seen] == ["tied"] and seen[0].report is not None and seen[0].report.ok


def test_an_eviction_that_frees_nothing_is_not_counted_as_room(mgr: ModelManager) -> None:
    """A saved ``state_dict()`` holds the storages through new tensor objects: no cheap check sees it. The
    release report does, and the policy evicts the next model instead of believing the room was made."""
    first = load(mgr, "trained", 1)
    snapshot = first.state_dict()
    del first
    load(mgr, "spare", 2)
    mgr.set_max_memory({"cpu": int(2.5 * size_of(mgr, "spare"))})
    seen = evictions(mgr)
    load(mgr, "new", 3)
    assert [e.name for e in seen] == ["trained", "spare"]
    reason = seen[0].reason or ""
    assert "its memory did not come back: trained (" in reason and "is still alive" in reason
    assert seen[1].report is not None and seen[1].report.ok
    assert [i.name for i in mgr.list()] == ["new"]
    assert mgr.survivors() == ["trained"]
    del snapshot


def test_released_models_still_alive_count_against_the_budget(mgr: ModelManager) -> None:
    model = load(mgr, "gone", 1)
    one = size_of(mgr, "gone")
    mgr.unload("gone")  # released, but the variable keeps its memory
    mgr.set_max_memory({"cpu": int(1.5 * one)})
    with pytest.raises(BudgetExceededError):
        load(mgr, "new", 2)
    del model
    load(mgr, "new", 2)  # its memory came back: now it fits
    assert "new" in mgr


def test_a_reference_cycle_is_not_mistaken_for_a_holder(mgr: ModelManager) -> None:
    """A module that refers to itself looks held by its reference count; the holder search, asked once the
    plan fails, finds nothing, and the model is evicted after all."""
    selfish = load(mgr, "selfish", 1)
    selfish.__dict__["me"] = selfish
    del selfish
    mgr.set_max_memory({"cpu": int(1.5 * size_of(mgr, "selfish"))})
    seen = evictions(mgr)
    load(mgr, "new", 2)
    assert [e.name for e in seen] == ["selfish"]


def test_lowering_a_budget_evicts_or_refuses_and_keeps_the_old_one(mgr: ModelManager) -> None:
    load(mgr, "a", 1)
    load(mgr, "b", 2, pin=True)
    one = size_of(mgr, "a")
    lines = mgr.set_max_memory({"cpu": int(1.5 * one)})
    assert len(lines) == 1 and lines[0].startswith("evicted a") and lines[0].endswith("to fit the new budget")
    assert [i.name for i in mgr.list()] == ["b"]
    with pytest.raises(BudgetExceededError) as info:
        mgr.set_max_memory({"cpu": one // 2})
    assert str(info.value).startswith("no room to fit the new budget: cpu holds 2.0 MiB")
    assert str(info.value).endswith("b (2.0 MiB, pinned); the budget is unchanged")
    assert mgr.max_memory == {"cpu": int(1.5 * one)}
    mgr.set_max_memory(None)
    assert mgr.max_memory == {}


def test_max_loaded_models_keeps_the_count(mgr: ModelManager) -> None:
    mgr.max_loaded_models = 2
    for i, name in enumerate("abc"):
        load(mgr, name, i)
    assert [i.name for i in mgr.list()] == ["b", "c"]
    mgr.pin("b")
    mgr.pin("c")
    with pytest.raises(BudgetExceededError, match="max_loaded_models is 2"):
        load(mgr, "d", 4)
    with pytest.raises(BudgetExceededError, match="the limit is unchanged"):
        mgr.max_loaded_models = 1
    assert mgr.max_loaded_models == 2
    mgr.unpin("b")
    mgr.max_loaded_models = 1
    assert [i.name for i in mgr.list()] == ["c"]


def test_a_fraction_is_of_the_machine_s_memory(mgr: ModelManager) -> None:
    mgr.set_max_memory({"cpu": 0.5})
    assert mgr.max_memory == {"cpu": 0.5}
    load(mgr, "a")  # far below half the machine
    assert "a" in mgr


def test_bad_budgets_change_nothing(mgr: ModelManager) -> None:
    mgr.set_max_memory({"cpu": "1GiB"})
    for bad in ({"gpu": 1}, {"cpu": "lots"}, "cpu"):
        with pytest.raises(InvalidArgumentError):
            mgr.set_max_memory(bad)
    with pytest.raises(InvalidArgumentError):
        mgr.max_loaded_models = -1
    with pytest.raises(InvalidArgumentError, match="'unload' or 'offload'"):
        mgr.evict = "delete"
    assert mgr.max_memory == {"cpu": 2**30} and mgr.max_loaded_models == 0 and mgr.evict == "unload"


def test_pinning_and_unpinning(mgr: ModelManager) -> None:
    events: list[Event] = []
    mgr.subscribe(events.append)
    load(mgr, "a")
    assert mgr.pin("a").pinned and mgr.info("a").pinned
    assert not mgr.unpin("a").pinned
    assert [(e.kind, e.reason) for e in events if e.kind == "pinned"] == [
        ("pinned", "pinned a"),
        ("pinned", "unpinned a"),
    ]
    with pytest.raises(KeyError, match="no model named 'nope'"):
        mgr.pin("nope")


def test_concurrent_loads_never_exceed_the_budget_together(mgr: ModelManager) -> None:
    """Each load reserves its estimate before it builds: four threads, room for two."""
    load(mgr, "probe")
    one = size_of(mgr, "probe")
    mgr.unload("probe")
    mgr.set_max_memory({"cpu": int(2.5 * one)})
    peak = [0]
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], accounted(mgr))

    watcher = threading.Thread(target=watch)
    watcher.start()
    threads = [threading.Thread(target=load, args=(mgr, f"m{i}", i)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    stop.set()
    watcher.join()
    assert len(mgr) == 2 and mgr.loading() == []
    assert peak[0] <= mgr.max_memory["cpu"]


def test_no_event_or_error_keeps_an_evicted_model_alive(mgr: ModelManager) -> None:
    seen = evictions(mgr)
    load(mgr, "a", 1)
    gone = weakref.ref(mgr.get("a"))
    mgr.set_max_memory({"cpu": int(1.5 * size_of(mgr, "a"))})
    load(mgr, "b", 2)
    gc.collect()
    assert seen and gone() is None


@pytest.mark.slow
def test_an_isolated_model_is_evicted_like_any_other_and_its_worker_ends() -> None:
    """A model in a worker process counts its worker's bytes; evicting it is its ordinary unload: the worker stops."""
    import psutil

    from tests.core.runners.conftest import wait_gone, worker_children

    manager = ModelManager()
    try:
        manager.load("remote", "demo:mlp", size_mb=SIZE, runner="process")
        pid = manager.info("remote").pid
        assert pid is not None and psutil.pid_exists(pid)
        manager.set_max_memory({"cpu": int(1.5 * size_of(manager, "remote"))})
        seen = evictions(manager)
        load(manager, "local", 1)
        assert [e.name for e in seen] == ["remote"] and seen[0].report is not None and seen[0].report.ok
        assert [i.name for i in manager.list()] == ["local"]
        assert wait_gone(pid)
    finally:
        manager.cleanup()
    assert worker_children() == []
