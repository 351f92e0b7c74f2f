"""The manager describes and compares each model as it is now, not as it was at load time.

A notebook changes models after loading them (``model.half()``, a new head, a
cell that redefines the factory and runs again); listing, conflicts and hits
must follow.
"""

from __future__ import annotations

import gc
import weakref
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

from nbmodels import ModelConflictError, ModelManager


def factory_cell() -> Callable[..., nn.Module]:
    """What running a notebook cell that defines ``make`` does: a new function object, same module and name."""

    def make(hidden: int = 8) -> nn.Module:
        return nn.Sequential(nn.Linear(4, hidden), nn.ReLU(), nn.Linear(hidden, 2))

    return make


def unique_bytes(model: nn.Module) -> int:
    tensors = [*model.parameters(), *model.buffers()]
    return sum({t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}.values())


# --- re-running a cell -------------------------------------------------------------------------


def test_a_factory_defined_again_by_a_rerun_cell_is_the_same_source(manager: ModelManager) -> None:
    first, second = factory_cell(), factory_cell()
    assert first is not second
    model = manager.load("m", first, hidden=8)
    assert manager.load("m", second, hidden=8) is model  # a hit, not a conflict
    assert manager.info("m").hits == 1
    assert manager.info("m").source.endswith("factory_cell.<locals>.make")


def test_the_same_factory_with_other_keywords_is_a_conflict_that_says_both(manager: ModelManager) -> None:
    manager.load("m", factory_cell(), hidden=8)
    with pytest.raises(ModelConflictError) as caught:
        manager.load("m", factory_cell(), hidden=16)
    message = str(caught.value)
    assert "it was loaded with hidden=8, this asks for hidden=16" in message
    assert caught.value.differences == ["it was loaded with hidden=8, this asks for hidden=16"]


def test_a_factory_and_its_module_path_text_are_the_same_source(manager: ModelManager) -> None:
    from tests.ipython.factories import keywords_module

    model = manager.load("m", keywords_module, size=1)
    assert manager.load("m", "tests.ipython.factories:keywords_module", size=1) is model


def test_two_objects_with_the_same_name_never_read_as_x_loaded_from_x(manager: ModelManager) -> None:
    class Named:
        def __init__(self) -> None:
            self.__module__ = None  # type: ignore[assignment]  # no module: only the object says what it is

        def __call__(self) -> nn.Module:
            return nn.Linear(2, 2)

        def __repr__(self) -> str:
            return "a-factory"

    manager.load("m", Named())
    with pytest.raises(ModelConflictError) as caught:
        manager.load("m", Named())
    message = str(caught.value)
    assert "another object that is also called a-factory" in message
    assert message.count("a-factory") == 1


# --- asking for what the model has -------------------------------------------------------------


def test_asking_for_the_device_and_dtype_the_model_has_is_a_hit(manager: ModelManager) -> None:
    model = manager.load("m", "demo:mlp", hidden=8)  # loaded without device or dtype
    assert manager.load("m", device="cpu") is model
    assert manager.load("m", "demo:mlp", device="cpu", dtype="float32", hidden=8) is model
    assert manager.load("m", dtype=torch.float32) is model


def test_conflicts_say_what_the_model_has_now(manager: ModelManager) -> None:
    model = manager.load("m", "demo:mlp", hidden=8)
    model.half()
    assert manager.load("m", dtype="fp16") is model  # what it has now, though it loaded as float32
    with pytest.raises(ModelConflictError) as caught:
        manager.load("m", dtype="float32", device="meta")
    message = str(caught.value)
    assert "it is float16, this asks for float32" in message
    assert "it is on cpu, this asks for meta" in message
    assert "None" not in message


def test_a_model_with_float32_parts_kept_in_a_bf16_load_is_a_hit_for_bf16(manager: ModelManager) -> None:
    def mixed() -> nn.Module:
        return nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))

    model = manager.load("m", mixed, dtype="bf16")
    model[1].float()  # as transformers keeps some modules in float32
    assert manager.info("m").dtypes == ("bfloat16", "float32")
    assert manager.load("m", dtype="bfloat16") is model
    with pytest.raises(ModelConflictError, match="it is bfloat16, float32, this asks for float16"):
        manager.load("m", dtype="float16")


# --- sizes are current -------------------------------------------------------------------------


def test_list_and_info_follow_a_conversion_made_after_loading(manager: ModelManager) -> None:
    model = manager.load("m", "demo:transformer")
    before = manager.list()[0]
    model.half()
    listed = manager.list()[0]
    assert listed.dtypes == ("float16", "int64") or listed.dtypes == ("float16",)
    assert listed.total_bytes == unique_bytes(model) and before.total_bytes == 2 * unique_bytes(model)
    assert manager.info("m") == listed


def test_list_follows_a_part_of_the_model_converted_alone(manager: ModelManager) -> None:
    model = manager.load("m", "demo:transformer", layers=6)
    model.encoder.layers[-1].half()
    assert manager.list()[0].dtypes == ("float16", "float32")
    assert manager.list()[0].total_bytes == unique_bytes(model)


def test_list_and_info_follow_layers_added_after_loading(manager: ModelManager) -> None:
    model = manager.load("m", "demo:mlp", hidden=8)
    params = manager.list()[0].parameters
    model.append(nn.Linear(10, 1000))  # a new head
    model.extra = nn.Parameter(torch.zeros(500))
    listed = manager.list()[0]
    assert listed.parameters == params + 10 * 1000 + 1000 + 500
    assert listed.total_bytes == unique_bytes(model)
    del model.extra
    assert manager.info("m").total_bytes == unique_bytes(model)  # info() always measures again


def test_a_dict_of_tensors_that_grew_is_measured_again(manager: ModelManager) -> None:
    state = manager.load("weights", lambda: {"a": torch.zeros(10)})
    state["b"] = torch.zeros(1000)
    assert manager.list()[0].total_bytes == 4 * 1010


def test_unrelated_modules_built_elsewhere_do_not_make_list_measure_again(manager: ModelManager) -> None:
    manager.load("m", "demo:mlp")
    entry = manager._entries["m"]
    measured = entry.measurement
    nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3))  # the user builds something of their own
    manager.list()
    assert entry.measurement is measured
    manager.get("m")[0].weight = nn.Parameter(torch.zeros(256, 64))  # but a change of its own does
    manager.list()
    assert entry.measurement is not measured


def test_measuring_again_keeps_nothing_alive(manager: ModelManager) -> None:
    model = manager.load("m", "demo:transformer")
    refs: list[weakref.ref[Any]] = [weakref.ref(model), *(weakref.ref(t) for t in model.parameters())]
    model.half()
    model.head2 = nn.Linear(4, 4)
    manager.list()
    manager.info("m")
    del model
    report = manager.unload("m")
    gc.collect()
    assert report.ok, str(report)
    assert all(ref() is None for ref in refs)


def test_a_release_after_a_conversion_counts_what_the_model_held_then(manager: ModelManager) -> None:
    model = manager.load("m", "demo:mlp", size_mb=8)
    model.half()
    expected = unique_bytes(model)
    del model
    report = manager.unload("m")
    assert report.freed_bytes == {"cpu": expected}  # never the float32 bytes that went away earlier
