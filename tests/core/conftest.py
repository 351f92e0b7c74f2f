"""Fixtures of the core tests: a fresh manager per test, and real checkpoints written to a tmp folder."""

from __future__ import annotations

import importlib
import sys
import threading
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from nbmodels.core import ModelManager

ARCH_MODULE = '''
"""A tiny architecture that the checkpoints of the core tests are saved from."""
from torch import nn


def tiny(in_features: int = 8, hidden: int = 16, out_features: int = 4) -> nn.Module:
    return nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, out_features))


class Factory:
    @staticmethod
    def build(**kwargs):
        return tiny(**kwargs)


NOT_CALLABLE = 42
'''


@pytest.fixture
def last_exception() -> Iterator[None]:
    """``sys.last_*`` as they were before the test (force deletes them)."""
    names = ("last_type", "last_value", "last_traceback")
    saved = {name: getattr(sys, name) for name in names if hasattr(sys, name)}
    try:
        yield
    finally:
        for name in names:
            if hasattr(sys, name):
                delattr(sys, name)
        for name, value in saved.items():
            setattr(sys, name, value)


@pytest.fixture
def manager() -> Iterator[ModelManager]:
    """A manager of its own (never the process-wide one), cleaned up afterwards."""
    mgr = ModelManager()
    try:
        yield mgr
    finally:
        mgr.cleanup()


@dataclass(frozen=True)
class ManagerState:
    """What a failed call must leave unchanged."""

    names: tuple[str, ...]
    loading: tuple[str, ...]
    registered: tuple[str, ...]
    hits: tuple[int, ...]


def state_of(mgr: ModelManager) -> ManagerState:
    infos = mgr.list()
    return ManagerState(
        names=tuple(info.name for info in infos),
        loading=tuple(mgr.loading()),
        registered=tuple(sorted(mgr.registered())),
        hits=tuple(info.hits for info in infos),
    )


@pytest.fixture
def snapshot() -> Callable[[ModelManager], ManagerState]:
    """``snapshot(mgr)``: names, loads in flight, registrations and hits, to compare before and after."""
    return state_of


@dataclass(frozen=True)
class Checkpoints:
    """Files written by the ``checkpoints`` fixture; all hold the weights in ``expected``."""

    folder: Path
    module: str  # importable module holding the architecture
    arch: str  # "module:tiny"
    expected: dict[str, torch.Tensor]
    safetensors: Path
    state_dict_pt: Path
    state_dict_pth: Path
    scripted: Path
    traced: Path
    pickled: Path
    corrupt_safetensors: Path
    other_arch_pt: Path  # a state dict that does not fit ``arch``
    sample: torch.Tensor  # an input for the tiny architecture


# torch.jit.load warns that TorchScript is deprecated; loading an existing archive is what users need.
TORCHSCRIPT_DEPRECATED = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")


def assert_same_weights(model: torch.nn.Module, expected: dict[str, torch.Tensor]) -> None:
    state = model.state_dict()
    assert sorted(state) == sorted(expected)
    for key, tensor in expected.items():
        assert torch.equal(state[key], tensor), key


@pytest.fixture
def arch_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The name of a freshly written, importable module with ``tiny`` and ``Factory.build``."""
    name = f"nbm_arch_{uuid.uuid4().hex[:8]}"
    folder = tmp_path / "modules"
    folder.mkdir()
    (folder / f"{name}.py").write_text(ARCH_MODULE)
    monkeypatch.syspath_prepend(str(folder))
    try:
        yield name
    finally:
        sys.modules.pop(name, None)


@pytest.fixture
def checkpoints(tmp_path: Path, arch_module: str) -> Checkpoints:
    module = importlib.import_module(arch_module)
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1234)
        model = module.tiny()
        other = torch.nn.Linear(3, 3)
    expected = {k: v.detach().clone() for k, v in model.state_dict().items()}
    sample = torch.linspace(-1, 1, 16).reshape(2, 8)

    paths = {
        "safetensors": folder / "tiny.safetensors",
        "state_dict_pt": folder / "tiny.pt",
        "state_dict_pth": folder / "tiny.pth",
        "scripted": folder / "scripted.pt",
        "traced": folder / "traced.pt",
        "pickled": folder / "pickled.pt",
        "corrupt_safetensors": folder / "corrupt.safetensors",
        "other_arch_pt": folder / "other.pt",
    }
    save_file({k: v.contiguous() for k, v in expected.items()}, str(paths["safetensors"]))
    torch.save(model.state_dict(), paths["state_dict_pt"])
    torch.save(model.state_dict(), paths["state_dict_pth"])
    with warnings.catch_warnings():  # torch 2.13 deprecates TorchScript; archives still exist and load
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(model), str(paths["scripted"]))  # type: ignore[no-untyped-call]
        torch.jit.save(torch.jit.trace(model, sample), str(paths["traced"]))  # type: ignore[no-untyped-call]
    torch.save(model, paths["pickled"])  # the whole module, pickled
    paths["corrupt_safetensors"].write_bytes(b"\xff" * 8 + b"this is not a safetensors file")
    torch.save(other.state_dict(), paths["other_arch_pt"])
    return Checkpoints(
        folder=folder,
        module=arch_module,
        arch=f"{arch_module}:tiny",
        expected=expected,
        sample=sample,
        **paths,
    )


def run_bounded(function: Callable[[], Any], timeout: float = 60.0) -> Any:
    """Run ``function`` in a thread and fail (instead of hanging) if it does not return: a deadlock guard."""
    result: list[Any] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(function())
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"{getattr(function, '__name__', function)} blocked (deadlock?)"
    if error:
        raise error[0]
    return result[0]
