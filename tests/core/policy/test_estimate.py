"""Sizes known before loading: each estimate is checked against what the real load then measures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import transformers
from safetensors.torch import save_file

from nbmodels.core import ModelManager
from nbmodels.core.policy.estimate import estimate
from tests.core.conftest import Checkpoints


def loaded_bytes(manager: ModelManager, name: str, source: str, **kwargs: object) -> int:
    manager.load(name, source, **kwargs)
    total = manager.info(name).total_bytes
    assert total is not None
    return total


def test_a_safetensors_header_gives_the_exact_size(manager: ModelManager, checkpoints: Checkpoints) -> None:
    found = estimate(str(checkpoints.safetensors), {"arch": checkpoints.arch})
    assert found is not None and found.how == "its safetensors header"
    assert found.nbytes == loaded_bytes(manager, "w", str(checkpoints.safetensors), arch=checkpoints.arch)
    half = estimate(str(checkpoints.safetensors), {}, torch.float16)
    assert half is not None and half.nbytes == found.nbytes // 2


def test_mixed_dtypes_convert_only_the_floating_tensors(tmp_path: Path) -> None:
    path = tmp_path / "mixed.safetensors"
    save_file({"w": torch.zeros(10, 10), "ids": torch.zeros(10, dtype=torch.int64)}, str(path))
    assert estimate(str(path), {}).nbytes == 400 + 80  # type: ignore[union-attr]
    assert estimate(str(path), {}, "bf16").nbytes == 200 + 80  # type: ignore[union-attr]


def test_other_checkpoints_are_estimated_by_their_file_size(checkpoints: Checkpoints) -> None:
    found = estimate(str(checkpoints.state_dict_pt), {"arch": checkpoints.arch})
    assert found is not None and found.nbytes == checkpoints.state_dict_pt.stat().st_size


def test_a_demo_model_is_built_on_the_meta_device(manager: ModelManager) -> None:
    for source, kwargs in [("demo:mlp", {"size_mb": 3}), ("demo:transformer", {"layers": 3})]:
        found = estimate(source, kwargs)
        assert found is not None
        assert found.nbytes == loaded_bytes(manager, source.replace(":", "-"), source, **kwargs)  # tied weights once


def test_a_factory_or_a_broken_file_cannot_be_estimated(tmp_path: Path) -> None:
    assert estimate("mypackage.models:build", {}) is None
    assert estimate("demo:nothing", {}) is None
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x00" * 3)
    assert estimate(str(broken), {}) is None  # the load says what is wrong with it
    assert estimate(str(tmp_path / "missing.safetensors"), {}) is None


@pytest.fixture(scope="module")
def half_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny BERT saved in float16: from_pretrained keeps that dtype from transformers 5 on."""
    folder = tmp_path_factory.mktemp("hf") / "half-bert"
    config = transformers.BertConfig(
        vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        transformers.BertModel(config).half().save_pretrained(str(folder))
    return folder


def close_below(estimated: int, measured: int) -> bool:
    """BERT makes two small int64 buffers at init (position and token type ids) that are never saved:
    8 KiB here, nothing in a real model. Everything saved is counted exactly."""
    return estimated <= measured <= estimated + 8192


def test_a_hugging_face_folder_is_estimated_in_the_dtype_it_will_load_in(
    manager: ModelManager, half_bert: Path
) -> None:
    stored = estimate(str(half_bert), {})
    assert stored is not None and stored.how == "its config and safetensors headers"
    assert close_below(stored.nbytes, loaded_bytes(manager, "default", str(half_bert)))
    asked = estimate(str(half_bert), {}, torch.float32)
    assert asked is not None
    assert close_below(asked.nbytes, loaded_bytes(manager, "fp32", str(half_bert), dtype="float32"))
    assert asked.nbytes == 2 * stored.nbytes
    assert estimate(str(half_bert), {"torch_dtype": "float32"}).nbytes == asked.nbytes  # type: ignore[union-attr]


def test_a_sharded_folder_reads_every_shard(tmp_path: Path, half_bert: Path) -> None:
    folder = tmp_path / "sharded"
    folder.mkdir()
    (folder / "config.json").write_text((half_bert / "config.json").read_text())
    save_file({"a": torch.zeros(100)}, str(folder / "model-00001-of-00002.safetensors"))
    save_file({"b": torch.zeros(50)}, str(folder / "model-00002-of-00002.safetensors"))
    weight_map = {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    assert estimate(str(folder), {}).nbytes == 600  # type: ignore[union-attr]


def test_device_map_and_dtype_go_to_from_pretrained(
    manager: ModelManager, half_bert: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Hugging Face folder places itself: the manager's dtype reaches from_pretrained (no float16 model is
    built and converted afterwards), and the user's device_map passes through to accelerate."""
    seen: list[dict[str, object]] = []
    original = transformers.BertModel.from_pretrained.__func__  # type: ignore[attr-defined]

    def spy(cls: type, *args: object, **kwargs: object) -> object:
        seen.append(kwargs)
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(transformers.BertModel, "from_pretrained", classmethod(spy))
    manager.load("bert", str(half_bert), dtype="float32", device_map="auto")
    assert seen[-1]["device_map"] == "auto"
    assert seen[-1].get("dtype", seen[-1].get("torch_dtype")) == torch.float32
    info = manager.info("bert")
    assert info.dtypes == ("float32", "int64") and info.bytes_by_device == {"cpu": info.total_bytes}


def test_a_hugging_face_load_under_a_budget_makes_room_before_from_pretrained(
    manager: ModelManager, half_bert: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its size is read from the folder: the idle model leaves before the weights are read, not after."""
    import shutil
    import weakref

    folder = tmp_path / "my models" / "half bert"  # a path with spaces, as people name folders
    shutil.copytree(half_bert, folder)
    manager.load("idle", "demo:mlp", size_mb=0.2)
    gone = weakref.ref(manager.get("idle"))
    seen: list[str] = []
    original = transformers.BertModel.from_pretrained.__func__  # type: ignore[attr-defined]

    def spy(cls: type, *args: object, **kwargs: object) -> object:
        seen.append("idle gone" if gone() is None else "idle alive")
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(transformers.BertModel, "from_pretrained", classmethod(spy))
    manager.set_max_memory({"cpu": int(1.5 * estimate(str(folder), {}).nbytes)})  # type: ignore[union-attr]
    manager.load("bert", str(folder), device="auto")
    assert seen == ["idle gone"]
    assert [i.name for i in manager.list()] == ["bert"] and manager.info("bert").devices == ("cpu",)
