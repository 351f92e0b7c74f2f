"""User mistakes: each gets a clear error naming the problem, and the manager stays exactly as it was."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from nbmodels import ModelManager
from nbmodels.errors import (
    InvalidArgumentError,
    ModelLoadError,
    ModelNotFoundError,
    NbModelsError,
    SourceError,
    UnknownKeywordError,
    UnsafeCheckpointError,
)
from tests.core.conftest import Checkpoints, ManagerState


@pytest.fixture
def busy(manager: ModelManager) -> Iterator[ModelManager]:
    """A manager with something in it, so that 'left as it was' means something."""
    manager.load("keep", "demo:mlp", hidden=8)
    manager.register("recipe", "demo:transformer")
    yield manager


@pytest.fixture
def unchanged(busy: ModelManager, snapshot: Callable[[ModelManager], ManagerState]) -> Iterator[None]:
    """Asserts after the test that the manager is exactly as before (names, loads in flight, registrations, hits)."""
    model = busy.get("keep")
    before = snapshot(busy)
    yield
    assert snapshot(busy) == before
    assert busy.loading() == []
    assert busy.get("keep") is model


def fails(exc_type: type[BaseException], call: Callable[[], Any], *fragments: str) -> BaseException:
    """Run ``call``; assert it raises ``exc_type`` whose message holds every fragment."""
    with pytest.raises(exc_type) as caught:
        call()
    message = str(caught.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert "\n" not in message  # one clear line
    return caught.value


pytestmark = pytest.mark.usefixtures("unchanged")


# --- names ---------------------------------------------------------------------------


def test_an_unknown_name(busy: ModelManager) -> None:
    error = fails(ModelNotFoundError, lambda: busy.load("ghost"), "'ghost'", "recipe", "keep", "load(")
    assert isinstance(error, KeyError)
    for call in (busy.get, busy.info, busy.unload):
        fails(ModelNotFoundError, lambda call=call: call("ghost"), "'ghost'", "keep")  # type: ignore[misc]


@pytest.mark.parametrize("name", ["", "   ", "\t\n"])
def test_an_empty_or_blank_name(busy: ModelManager, name: str) -> None:
    fails(InvalidArgumentError, lambda: busy.load(name, "demo:mlp"), "name is empty")
    fails(InvalidArgumentError, lambda: busy.register(name, "demo:mlp"), "name is empty")
    fails(InvalidArgumentError, lambda: busy.get(name), "name is empty")
    fails(InvalidArgumentError, lambda: busy.info(name), "name is empty")


@pytest.mark.parametrize(("name", "fragment"), [(" padded", "contains spaces"), (None, "must be a string")])
def test_a_name_that_is_not_a_name(busy: ModelManager, name: Any, fragment: str) -> None:
    fails(InvalidArgumentError, lambda: busy.load(name, "demo:mlp"), fragment)


# --- sources ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "fragments"),
    [
        ("nosuchmodule:f", ("'nosuchmodule'", "no module")),
        ("os:nosuchattr", ("'os'", "'nosuchattr'")),
        ("a:b:c", ("'a:b:c'", "more than one ':'")),
        ("demo:nosuch", ("'nosuch'", "mlp", "transformer")),
        ("", ("source is empty",)),
        ("just some words", ("cannot understand source",)),
    ],
)
def test_a_bad_source(busy: ModelManager, source: str, fragments: tuple[str, ...]) -> None:
    fails(SourceError, lambda: busy.load("new", source), *fragments)
    fails(SourceError, lambda: busy.load("keep", source, reload=True), *fragments)


@pytest.mark.parametrize("source", ["nosuchmodule:f", "a:b:c", "demo:nosuch", "/no/such/file.safetensors"])
def test_a_bad_source_fails_at_register(busy: ModelManager, source: str) -> None:
    fails(SourceError, lambda: busy.register("new", source), source.split(":")[0])


def test_a_source_of_the_wrong_type(busy: ModelManager) -> None:
    fails(SourceError, lambda: busy.load("new", 42), "cannot use int as a source")


@pytest.mark.parametrize(
    "path", ["/no/such/model.safetensors", "./missing/weights.pt", "missing.pth", Path("/no/such/folder")]
)
def test_a_path_that_does_not_exist(busy: ModelManager, path: str | Path) -> None:
    fails(SourceError, lambda: busy.load("new", path), "no such file or folder", Path(path).name)


def test_a_corrupt_safetensors_file(busy: ModelManager, checkpoints: Checkpoints) -> None:
    fails(SourceError, lambda: busy.load("new", checkpoints.corrupt_safetensors), "corrupt.safetensors")


def test_a_corrupt_checkpoint(busy: ModelManager, tmp_path: Path) -> None:
    path = tmp_path / "broken.pt"
    path.write_bytes(b"PK\x03\x04 not really a zip")
    fails(SourceError, lambda: busy.load("new", path), "broken.pt", "not a readable")


@pytest.mark.parametrize(
    ("name", "content", "fragment"),
    [
        ("empty.pt", b"", "empty (0 bytes)"),
        ("junk.pt", b"hello, not a checkpoint", "not a torch checkpoint"),
        ("empty.safetensors", b"", "it is empty"),
        ("short.safetensors", b"\x10\x00", "only 2 bytes"),
        ("long.safetensors", b"\xff" * 8 + b"{}", "header is longer than the file"),
        ("text.safetensors", b"\x04\x00\x00\x00\x00\x00\x00\x00nope", "not the JSON"),
    ],
)
def test_an_empty_or_broken_checkpoint_file_is_refused_before_anything_changes(
    busy: ModelManager, tmp_path: Path, name: str, content: bytes, fragment: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    fails(SourceError, lambda: busy.load("new", path), name, fragment)
    fails(SourceError, lambda: busy.load("keep", path, reload=True), name, fragment)  # keeps what was loaded


def test_a_broken_pickle_checkpoint_is_named_as_such_not_as_unsafe(busy: ModelManager, tmp_path: Path) -> None:
    path = tmp_path / "legacy.pt"
    path.write_bytes(b"\x80\x02 truncated pickle")  # torch's pre-zip format: only loading it can tell
    error = fails(SourceError, lambda: busy.load("new", path), "loading 'new' from", "not a readable torch checkpoint")
    assert not isinstance(error, UnsafeCheckpointError)


def test_a_truncated_zip_checkpoint(busy: ModelManager, checkpoints: Checkpoints, tmp_path: Path) -> None:
    path = tmp_path / "truncated.pt"
    data = checkpoints.state_dict_pt.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    fails(SourceError, lambda: busy.load("new", path, arch=checkpoints.arch), "truncated.pt", "broken zip archive")


def test_keywords_for_a_checkpoint_without_arch_fail_before_a_reload(
    busy: ModelManager, checkpoints: Checkpoints
) -> None:
    fails(InvalidArgumentError, lambda: busy.load("keep", checkpoints.safetensors, hidden=4, reload=True), "arch=")


def test_a_state_dict_that_does_not_fit_the_architecture(busy: ModelManager, checkpoints: Checkpoints) -> None:
    fails(
        SourceError,
        lambda: busy.load("new", checkpoints.other_arch_pt, arch=checkpoints.arch),
        "loading 'new' from",
        "other.pt",
        "does not fit",
        "Missing key(s)",
    )


def test_an_arch_that_is_not_a_factory(busy: ModelManager, checkpoints: Checkpoints) -> None:
    fails(InvalidArgumentError, lambda: busy.load("new", checkpoints.state_dict_pt, arch=3), "arch=3")
    fails(SourceError, lambda: busy.load("new", checkpoints.state_dict_pt, arch="os:nosuch"), "'nosuch'")


# --- devices and dtypes ----------------------------------------------------------------


CUDA_DEVICES = torch.cuda.device_count()
MISSING_CUDA = "no CUDA device" if CUDA_DEVICES == 0 else f"cuda:{CUDA_DEVICES - 1}"


@pytest.mark.parametrize(
    ("device", "fragments"),
    [
        pytest.param(
            "cuda:7",
            ("'cuda:7'", "not available", MISSING_CUDA),
            marks=pytest.mark.skipif(CUDA_DEVICES > 7, reason="this machine has a cuda:7"),
        ),
        ("gpu", ("'gpu'", "'cuda'")),
        ("cuda:-1", ("'cuda:-1'", "negative")),
        ("cpu:3", ("'cpu:3'",)),
    ],
)
def test_a_bad_device(busy: ModelManager, device: str, fragments: tuple[str, ...]) -> None:
    calls: list[int] = []

    def factory() -> torch.nn.Module:
        calls.append(1)
        return torch.nn.Linear(2, 2)

    fails(InvalidArgumentError, lambda: busy.load("new", factory, device=device), *fragments)
    fails(InvalidArgumentError, lambda: busy.register("new", factory, device=device), *fragments)
    fails(InvalidArgumentError, lambda: busy.load("keep", device=device, reload=True), *fragments)
    assert calls == []  # refused before anything slow started


@pytest.mark.parametrize("dtype", ["float17", "int8", "torch.float17", torch.int8])
def test_a_bad_dtype(busy: ModelManager, dtype: str | torch.dtype) -> None:
    named = repr(dtype) if isinstance(dtype, str) else str(dtype)
    fails(InvalidArgumentError, lambda: busy.load("new", "demo:mlp", dtype=dtype), named, "float32")
    fails(InvalidArgumentError, lambda: busy.register("new", "demo:mlp", dtype=dtype), named)


# --- loaders ---------------------------------------------------------------------------


def test_a_loader_that_raises(busy: ModelManager) -> None:
    def broken() -> Any:
        raise FileNotFoundError("weights.bin is missing from the bucket")

    error = fails(ModelLoadError, lambda: busy.load("new", broken), "'new'", "FileNotFoundError", "weights.bin")
    assert isinstance(error.__cause__, FileNotFoundError)
    assert isinstance(error, RuntimeError) and isinstance(error, NbModelsError)
    assert error.name == "new"  # type: ignore[attr-defined]


def test_a_loader_that_returns_none(busy: ModelManager) -> None:
    fails(ModelLoadError, lambda: busy.load("new", lambda: None), "'new'", "returned None")


def test_a_loader_given_keywords_it_does_not_take(busy: ModelManager) -> None:
    error = fails(UnknownKeywordError, lambda: busy.load("new", "demo:mlp", colour="red"), "'colour'", "hidden")
    assert isinstance(error, TypeError) and isinstance(error, InvalidArgumentError)
    fails(UnknownKeywordError, lambda: busy.register("new", "demo:mlp", colour="red"), "'colour'")
    fails(UnknownKeywordError, lambda: busy.load("keep", "demo:mlp", colour="red", reload=True), "'colour'")


def test_a_factory_without_a_keyword_it_needs(busy: ModelManager) -> None:
    def needs(hidden: int) -> torch.nn.Module:
        return torch.nn.Linear(hidden, 2)

    fails(InvalidArgumentError, lambda: busy.load("new", needs), "needs", "'hidden'")


def test_a_loader_whose_keywords_cannot_be_known_fails_at_the_call(busy: ModelManager) -> None:
    def anything(**kwargs: Any) -> torch.nn.Module:
        return torch.nn.Linear(**kwargs)

    fails(ModelLoadError, lambda: busy.load("new", anything, colour="red"), "'new'", "unexpected keyword", "colour")


def test_the_name_loads_fine_after_a_failure(busy: ModelManager) -> None:
    with pytest.raises(ModelLoadError):
        busy.load("new", lambda: None)
    busy.load("new", "demo:mlp", hidden=8)
    assert "new" in busy
    busy.unload("new")  # so the 'unchanged' check sees the manager as it was
