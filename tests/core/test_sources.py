"""Every kind of source, on real files and modules written for the test."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from nbmodels import ModelManager, SourceError, UnsafeCheckpointError
from nbmodels.core.demo import DEMO_MODELS
from nbmodels.core.sources import ENTRY_POINT_GROUP, resolve
from nbmodels.errors import InvalidArgumentError
from tests.core.conftest import TORCHSCRIPT_DEPRECATED, Checkpoints, assert_same_weights

MiB = 1024 * 1024


# --- callables and "module:factory" -----------------------------------------------------


def test_a_callable_gets_the_keywords(manager: ModelManager) -> None:
    seen: dict[str, object] = {}

    def factory(width: int, bias: bool = True) -> torch.nn.Module:
        seen.update(width=width, bias=bias)
        return torch.nn.Linear(width, 2, bias=bias)

    model = manager.load("m", factory, width=5, bias=False)
    assert seen == {"width": 5, "bias": False}
    assert model.in_features == 5 and model.bias is None
    assert manager.info("m").source.endswith("test_a_callable_gets_the_keywords.<locals>.factory")


def test_a_class_is_a_callable_source(manager: ModelManager) -> None:
    model = manager.load("m", torch.nn.Linear, in_features=3, out_features=2)
    assert isinstance(model, torch.nn.Linear)
    assert manager.info("m").source == "torch.nn.modules.linear:Linear"


def test_module_factory_string_imports_and_calls_with_keywords(manager: ModelManager, arch_module: str) -> None:
    model = manager.load("m", f"{arch_module}:tiny", hidden=5)
    assert model[0].out_features == 5
    assert manager.info("m").source == f"{arch_module}:tiny"


def test_module_factory_string_follows_a_dotted_attribute(manager: ModelManager, arch_module: str) -> None:
    model = manager.load("m", f"{arch_module}:Factory.build", out_features=7)
    assert model[-1].out_features == 7


def test_module_factory_in_a_package(manager: ModelManager, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "nbm_pkg_src" / "models"
    package.mkdir(parents=True)
    (tmp_path / "nbm_pkg_src" / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "vision.py").write_text("import torch\ndef build(k=3):\n    return torch.nn.Conv2d(1, 1, k)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        model = manager.load("conv", "nbm_pkg_src.models.vision:build", k=5)
        assert model.kernel_size == (5, 5)
    finally:
        for name in ("nbm_pkg_src.models.vision", "nbm_pkg_src.models", "nbm_pkg_src"):
            sys.modules.pop(name, None)


def test_a_module_whose_own_import_fails_says_so(
    manager: ModelManager, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The module exists but needs a missing dependency: the error must not claim the module is missing.
    (tmp_path / "nbm_needs_dep.py").write_text("import nbm_missing_dependency\ndef f():\n    return 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(SourceError, match=r"importing 'nbm_needs_dep' failed.*nbm_missing_dependency"):
        manager.load("m", "nbm_needs_dep:f")
    assert "m" not in manager


def test_a_non_callable_attribute_is_refused(manager: ModelManager, arch_module: str) -> None:
    with pytest.raises(SourceError, match="NOT_CALLABLE is a int, not a callable"):
        manager.load("m", f"{arch_module}:NOT_CALLABLE")


# --- demo models ------------------------------------------------------------------------


def test_demo_models_are_listed() -> None:
    assert {"mlp", "transformer"} <= set(DEMO_MODELS)


@pytest.mark.parametrize(("source", "keywords"), [("demo:mlp", {"hidden": 32}), ("demo:transformer", {})])
def test_demo_models_are_deterministic(manager: ModelManager, source: str, keywords: dict[str, int]) -> None:
    first = manager.load("first", source, **keywords)
    second = manager.load("second", source, **keywords)
    assert first is not second
    assert_same_weights(second, {k: v.clone() for k, v in first.state_dict().items()})
    other_seed = manager.load("third", source, seed=1, **keywords)
    assert not torch.equal(next(other_seed.parameters()), next(first.parameters()))


def test_demo_models_do_not_disturb_the_global_random_state(manager: ModelManager) -> None:
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    manager.load("m", "demo:mlp", hidden=8)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize(
    ("source", "keywords"),
    [
        ("demo:mlp", {}),
        ("demo:mlp", {"layers": 1}),
        ("demo:mlp", {"layers": 4}),
        ("demo:transformer", {}),
        ("demo:transformer", {"tie_weights": False, "layers": 3}),
    ],
)
@pytest.mark.parametrize("size_mb", [2, 24])
def test_demo_models_are_sized_by_size_mb(
    manager: ModelManager, source: str, keywords: dict[str, object], size_mb: int
) -> None:
    manager.load("m", source, size_mb=size_mb, **keywords)
    total = manager.info("m").total_bytes
    assert total is not None
    assert total == pytest.approx(size_mb * MiB, rel=0.05)


def test_demo_models_are_sized_by_their_shape_keywords(manager: ModelManager) -> None:
    small = manager.load("small", "demo:transformer", d_model=32, heads=2, layers=1, vocab=100)
    big = manager.load("big", "demo:transformer", d_model=64, heads=4, layers=3, vocab=500)
    assert small.embed.weight.shape == (100, 32)
    assert len(big.encoder.layers) == 3
    assert manager.info("big").parameters > manager.info("small").parameters  # type: ignore[operator]


def test_the_demo_transformer_runs(manager: ModelManager) -> None:
    model = manager.load("lm", "demo:transformer", vocab=50, d_model=16, heads=2)
    logits = model(torch.tensor([[1, 2, 3, 4]]))
    assert logits.shape == (1, 4, 50)


def test_demo_keywords_are_checked(manager: ModelManager) -> None:
    with pytest.raises(InvalidArgumentError, match="layers >= 1"):
        manager.load("m", "demo:mlp", layers=0)
    with pytest.raises(InvalidArgumentError, match="size_mb > 0"):
        manager.load("m", "demo:transformer", size_mb=-1)
    # What a --kw typo gives the loader: text, infinity, a negative count, a bool, a float count.
    for keywords in ({"size_mb": "abc"}, {"size_mb": float("inf")}, {"hidden": -5}, {"hidden": True}, {"layers": 2.5}):
        with pytest.raises(InvalidArgumentError, match=r"loading 'm' from demo:mlp: demo:mlp needs \w+ "):
            manager.load("m", "demo:mlp", **keywords)
    with pytest.raises(InvalidArgumentError, match="divisible by heads"):
        manager.load("m", "demo:transformer", d_model=10, heads=4)
    assert len(manager) == 0 and manager.loading() == []


# --- files ------------------------------------------------------------------------------


def test_safetensors_with_arch_builds_the_model(manager: ModelManager, checkpoints: Checkpoints) -> None:
    model = manager.load("m", checkpoints.safetensors, arch=checkpoints.arch)
    assert isinstance(model, torch.nn.Sequential)
    assert_same_weights(model, checkpoints.expected)
    assert manager.info("m").source == str(checkpoints.safetensors)


def test_safetensors_without_arch_is_the_tensors(manager: ModelManager, checkpoints: Checkpoints) -> None:
    tensors = manager.load("m", str(checkpoints.safetensors))
    assert isinstance(tensors, dict)
    assert sorted(tensors) == sorted(checkpoints.expected)
    for key, tensor in checkpoints.expected.items():
        assert torch.equal(tensors[key], tensor)
    info = manager.info("m")
    assert info.total_bytes == sum(t.numel() * 4 for t in checkpoints.expected.values())
    assert info.class_name == "dict"


@pytest.mark.parametrize("kind", ["state_dict_pt", "state_dict_pth"])
def test_state_dict_with_arch(manager: ModelManager, checkpoints: Checkpoints, kind: str) -> None:
    path: Path = getattr(checkpoints, kind)
    model = manager.load("m", path, arch=checkpoints.arch)
    assert_same_weights(model, checkpoints.expected)


def test_arch_takes_keywords_and_callables(manager: ModelManager, checkpoints: Checkpoints) -> None:
    model = manager.load("a", checkpoints.state_dict_pt, arch=f"{checkpoints.module}:tiny", hidden=16)
    assert_same_weights(model, checkpoints.expected)

    def build() -> torch.nn.Module:
        return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))

    assert_same_weights(manager.load("b", checkpoints.safetensors, arch=build), checkpoints.expected)


def test_keywords_without_arch_are_refused(manager: ModelManager, checkpoints: Checkpoints) -> None:
    with pytest.raises(InvalidArgumentError, match="need arch="):
        manager.load("m", checkpoints.state_dict_pt, hidden=16)


@TORCHSCRIPT_DEPRECATED
@pytest.mark.parametrize("kind", ["scripted", "traced"])
def test_torchscript_archives_load_and_run(manager: ModelManager, checkpoints: Checkpoints, kind: str) -> None:
    path: Path = getattr(checkpoints, kind)
    model = manager.load("m", path)
    assert isinstance(model, torch.jit.ScriptModule)
    expected = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    expected.load_state_dict(checkpoints.expected)
    assert torch.allclose(model(checkpoints.sample), expected(checkpoints.sample))
    info = manager.info("m")
    assert info.parameters == sum(t.numel() for t in checkpoints.expected.values())
    del model
    with pytest.raises(InvalidArgumentError, match="TorchScript"):
        manager.load("again", path, arch=checkpoints.arch)


def test_a_pickled_module_needs_trust(manager: ModelManager, checkpoints: Checkpoints) -> None:
    with pytest.raises(UnsafeCheckpointError, match="trust=True") as caught:
        manager.load("m", checkpoints.pickled)
    assert "pickled.pt" in str(caught.value)
    assert "m" not in manager and manager.loading() == []

    model = manager.load("m", checkpoints.pickled, trust=True)
    assert isinstance(model, torch.nn.Sequential)
    assert_same_weights(model, checkpoints.expected)
    del model  # the traceback kept by pytest.raises above holds this frame, and so its locals


def test_a_path_with_a_tilde_and_a_relative_path_resolve(
    manager: ModelManager, checkpoints: Checkpoints, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(checkpoints.folder.parent))
    manager.load("home", f"~/{checkpoints.folder.name}/tiny.safetensors")
    monkeypatch.chdir(checkpoints.folder)
    manager.load("relative", "tiny.safetensors")
    assert manager.info("home").source == manager.info("relative").source == str(checkpoints.safetensors)


def test_an_unsupported_file_type_is_named(tmp_path: Path) -> None:
    path = tmp_path / "weights.onnx"
    path.write_bytes(b"onnx")
    with pytest.raises(SourceError, match=r"unsupported file type '\.onnx'"):
        resolve(path)


def test_a_folder_without_a_model_is_named(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"neither config\.json"):
        resolve(tmp_path)


# --- entry-point plug-ins ---------------------------------------------------------------------


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A real installed-looking distribution that registers the scheme ``toy`` in nbmodels.sources."""
    site = tmp_path / "site"
    dist = site / "nbm_toy_plugin-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: nbm-toy-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\ntoy = nbm_toy_plugin:load\n")
    (site / "nbm_toy_plugin.py").write_text(
        textwrap.dedent(
            """
            import torch

            CALLS = []


            def load(target, out_features=1, **kwargs):
                CALLS.append((target, out_features, kwargs))
                return torch.nn.Linear(int(target), out_features)
            """
        )
    )
    monkeypatch.syspath_prepend(str(site))
    try:
        yield "toy"
    finally:
        sys.modules.pop("nbm_toy_plugin", None)


def test_an_entry_point_plugin_handles_its_scheme(manager: ModelManager, plugin: str) -> None:
    import importlib.metadata

    assert plugin in {ep.name for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}
    model = manager.load("m", f"{plugin}:6", out_features=3)
    assert (model.in_features, model.out_features) == (6, 3)
    assert manager.info("m").source == "toy:6"
    import nbm_toy_plugin  # type: ignore[import-not-found]

    assert nbm_toy_plugin.CALLS == [("6", 3, {})]


def test_an_unknown_scheme_lists_the_known_ones(plugin: str) -> None:
    with pytest.raises(SourceError, match="toy"):
        resolve("nosuch://x")
