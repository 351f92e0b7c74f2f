"""Models of several parts: a pipeline-like object, a dict or list of models, a model beside a tokenizer."""

from __future__ import annotations

import weakref
from typing import Any

import pytest
import torch
from torch import nn

from nbmodels.core import ModelManager
from nbmodels.core.composite import move, parts
from nbmodels.core.holders import Site, remove_key

MiB = 2**20


def linear_of(mib: int) -> nn.Module:
    """A Linear of ``mib`` MiB of float32 weights (no bias)."""
    side = int((mib * MiB / 4) ** 0.5)
    return nn.Linear(side, side, bias=False)


class TinyPipe:
    """What a diffusers pipeline looks like to a notebook: an object (not a module) with model attributes."""

    def __init__(self) -> None:
        self.unet = linear_of(32)
        self.vae = linear_of(16)
        self.scheduler = {"steps": 50}
        self.name = "tiny"


class ComponentsPipe:
    """A pipeline that names its parts (as DiffusionPipeline.components does), with one part held twice."""

    def __init__(self) -> None:
        self.unet = linear_of(4)
        self.text_encoder = linear_of(2)
        self.alias = self.unet  # the same module under another attribute: counted once

    @property
    def components(self) -> dict[str, Any]:
        return {"unet": self.unet, "text_encoder": self.text_encoder, "tokenizer": object()}


class Tokenizer:
    vocab = {"a": 0}


def weights(*modules: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for m in modules for p in m.parameters())


def test_a_pipeline_like_object_counts_every_part(manager: ModelManager) -> None:
    pipe = manager.load("pipe", TinyPipe)
    info = manager.info("pipe")
    assert info.total_bytes == weights(pipe.unet, pipe.vae)  # 48 MiB, not "?"
    assert info.total_bytes == pytest.approx(48 * MiB, rel=0.01)
    assert info.parameters == sum(p.numel() for m in (pipe.unet, pipe.vae) for p in m.parameters())
    assert info.devices == ("cpu",) and info.dtypes == ("float32",)
    assert [(p.name, p.class_name) for p in info.parts] == [("unet", "Linear"), ("vae", "Linear")]
    assert "params ?" not in info.summary() and " ? " not in info.summary()
    listed = manager.list()
    assert sum(i.total_bytes or 0 for i in listed) == info.total_bytes  # the table's total sees it


def test_components_name_the_parts_and_each_counts_once(manager: ModelManager) -> None:
    pipe = manager.load("pipe", ComponentsPipe)
    info = manager.info("pipe")
    assert [p.name for p in info.parts] == ["unet", "text_encoder"]  # the tokenizer holds no weights
    assert info.total_bytes == weights(pipe.unet, pipe.text_encoder)


@pytest.mark.parametrize("shape", ["dict", "list", "tuple with tokenizer"])
def test_containers_of_models_get_their_parameters(manager: ModelManager, shape: str) -> None:
    a, b = linear_of(1), linear_of(2)
    built: Any = {
        "dict": {"encoder": a, "decoder": b},
        "list": [a, b, a],  # a twice: once
        "tuple with tokenizer": (a, b, Tokenizer()),
    }[shape]
    manager.load("both", lambda: built)
    info = manager.info("both")
    assert info.parameters == sum(p.numel() for m in (a, b) for p in m.parameters())  # not "params ?"
    assert info.total_bytes == weights(a, b)
    assert len(info.parts) == 2


def test_a_dict_of_plain_tensors_stays_a_state_dict(manager: ModelManager) -> None:
    manager.load("state", lambda: {"w": torch.zeros(256, 256), "b": torch.zeros(256)})
    info = manager.info("state")
    assert info.total_bytes == (256 * 256 + 256) * 4
    assert info.parts == () and info.parameters is None  # no module: nothing claims to be a parameter


def test_unloading_a_pipeline_frees_every_part(manager: ModelManager) -> None:
    refs = [weakref.ref(manager.load("pipe", TinyPipe))]
    refs.append(weakref.ref(manager.get("pipe").unet))
    report = manager.unload("pipe")
    assert report.ok, str(report)
    assert all(ref() is None for ref in refs)
    assert not report.gc_collected  # measuring it left no cycle that only a gc pass frees
    assert report.freed_bytes["cpu"] == pytest.approx(48 * MiB, rel=0.01)  # not "freed 0 B"


class Namespace:
    """A holder finder naming one dict as the user's variables."""

    def __init__(self) -> None:
        self.ns: dict[str, Any] = {}

    def __call__(self) -> list[Site]:
        return [Site(self.ns, remove=remove_key, command="del {key}")]


def test_a_part_the_user_still_holds_is_named_and_can_be_forced(manager: ModelManager) -> None:
    finder = Namespace()
    undo = manager.add_holder_finder(finder)
    try:
        manager.load("pipe", TinyPipe)
        finder.ns["unet"] = manager.get("pipe").unet  # unet = pipe.unet, in the notebook
        report = manager.unload("pipe")
        assert not report.ok
        assert report.freed_bytes.get("cpu", 0) == pytest.approx(16 * MiB, rel=0.01)  # the vae came back
        (alive,) = report.still_alive
        assert alive.name == "pipe" and "32.0 MiB" in alive.what
        assert [(h.path, h.action) for h in alive.holders] == [("unet", "del unet")], alive.describe()
        forced = manager.unload("pipe", force=True)
        assert forced.ok, str(forced)
        assert "unet" not in finder.ns
        assert forced.freed_bytes["cpu"] == pytest.approx(32 * MiB, rel=0.01)
    finally:
        undo()


def test_moving_a_composite_moves_every_part() -> None:
    pipe = TinyPipe()
    pipe.unet, pipe.vae = linear_of(1), linear_of(1)
    bundle = {"pipe": [pipe.unet, torch.ones(3)], "vae": pipe.vae, "note": "x"}
    moved = move(bundle, dtype=torch.float16)
    assert moved is bundle
    assert pipe.unet.weight.dtype == pipe.vae.weight.dtype == bundle["pipe"][1].dtype == torch.float16
    moved_pipe = move(pipe, dtype=torch.float64)
    assert moved_pipe is pipe and pipe.unet.weight.dtype == torch.float64 and pipe.scheduler == {"steps": 50}


def test_a_composite_loads_with_a_dtype_and_moves_with_to(manager: ModelManager) -> None:
    pipe = manager.load("pipe", TinyPipe, dtype="float16")
    assert pipe.unet.weight.dtype == pipe.vae.weight.dtype == torch.float16
    assert manager.info("pipe").total_bytes == pytest.approx(24 * MiB, rel=0.01)
    manager.to("pipe", "cpu")
    assert manager.info("pipe").devices == ("cpu",)


def test_an_object_without_parts_cannot_take_a_dtype(manager: ModelManager) -> None:
    with pytest.raises(Exception, match=r"Tokenizer has no .to\(\) and no model parts"):
        manager.load("tok", Tokenizer, dtype="float16")
    assert "tok" not in manager


def test_parts_of_plain_values_and_models() -> None:
    model = linear_of(1)
    assert parts(model) == [] and parts(torch.ones(2)) == [] and parts("text") == []
    assert parts({"a": 1, "b": [2, 3]}) == []
    assert [name for name, _ in parts({"m": [model, {"deep": torch.ones(1)}]})] == ["m.0", "m.1.deep"]


def test_a_big_dict_of_plain_values_beside_a_model_stays_cheap() -> None:
    data = {i: str(i) for i in range(300_000)}
    holder = type("Holder", (), {})()
    holder.data, holder.model = data, linear_of(1)
    assert [name for name, _ in parts(holder)] == ["model"]
