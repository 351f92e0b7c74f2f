"""Out of memory at load: evict what sits on that device, retry once; and the account of what holds a device.

No GPU here: the loaders raise ``MemoryError`` (CPU) and ``torch.OutOfMemoryError`` with torch's own
message as data, the way a real one arrives.
"""

from __future__ import annotations

import gc
import weakref
from typing import Any

import pytest
import torch

from nbmodels import ModelLoadError
from nbmodels.core import Event, ModelManager, demo
from nbmodels.core.memory import DeviceMemory, format_bytes
from nbmodels.core.policy import oom

CUDA_OOM = (
    "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 1 has a total capacity of 79.15 GiB of which 1.20 GiB "
    "is free. Of the allocated memory 75.1 GiB is allocated by PyTorch, and 1.3 GiB is reserved by PyTorch but "
    "unallocated."
)
MiB = 2**20


class RunsOutOnce:
    """A loader that runs out of memory on its first call, half-way through building, then works."""

    def __init__(self, error: BaseException) -> None:
        self.error = error
        self.calls = 0
        self.half_built: list[weakref.ref[Any]] = []

    def __call__(self) -> torch.nn.Module:
        self.calls += 1
        partial = demo.mlp(size_mb=1, seed=self.calls)
        if self.calls == 1:
            self.half_built.append(weakref.ref(partial))
            raise self.error
        return partial


def test_the_device_of_an_out_of_memory_error() -> None:
    assert oom.device_of(torch.OutOfMemoryError(CUDA_OOM)) == "cuda:1"
    assert oom.device_of(MemoryError()) == "cpu"
    assert oom.device_of(torch.OutOfMemoryError("MPS backend out of memory (MPS allocated: 1 GB)")) == "mps"
    assert oom.device_of(torch.OutOfMemoryError("out of memory"), "cuda:3") == "cuda:3"
    assert oom.is_out_of_memory(torch.OutOfMemoryError("x")) and oom.is_out_of_memory(MemoryError())
    assert not oom.is_out_of_memory(RuntimeError("CUDA error: device-side assert triggered"))
    wrapped = ModelLoadError("m", "failed")
    wrapped.__cause__ = MemoryError()
    assert isinstance(oom.out_of_memory_in(wrapped), MemoryError)


def test_a_loader_out_of_memory_evicts_idle_models_there_and_retries_once(manager: ModelManager) -> None:
    seen: list[Event] = []
    manager.subscribe(lambda event: seen.append(event) if event.kind == "evicted" else None)
    manager.load("old", "demo:mlp", size_mb=1)
    manager.load("kept", "demo:mlp", size_mb=1, seed=1, pin=True)
    loader = RunsOutOnce(MemoryError())
    manager.load("new", loader)
    assert loader.calls == 2
    assert sorted(i.name for i in manager.list()) == ["kept", "new"]
    assert [e.name for e in seen] == ["old"]
    assert seen[0].reason is not None and seen[0].reason.endswith("to retry new after it ran out of memory on cpu")
    gc.collect()
    assert loader.half_built[0]() is None  # the first attempt's half-built model did not stay in its frames


def test_with_nothing_to_evict_the_error_says_what_holds_the_device(manager: ModelManager) -> None:
    manager.load("pinned", "demo:mlp", size_mb=1, pin=True)
    loader = RunsOutOnce(MemoryError())
    with pytest.raises(ModelLoadError) as info:
        manager.load("new", loader)
    message = str(info.value)
    size = format_bytes(manager.info("pinned").total_bytes)
    assert loader.calls == 1  # nothing could leave: no retry
    assert "failed: MemoryError; out of memory on cpu: process RSS" in message
    assert f"models on cpu: pinned {size} (pinned)" in message
    assert f"frees the most: nbmodels.get_manager().unload('pinned') ({size})" in message
    assert manager.loading() == [] and "new" not in manager


def test_a_gpu_out_of_memory_names_the_gpu(manager: ModelManager) -> None:
    manager.load("on-cpu", "demo:mlp", size_mb=1)
    with pytest.raises(ModelLoadError) as info:
        manager.load("big", RunsOutOnce(torch.OutOfMemoryError(CUDA_OOM)))
    message = str(info.value)
    assert "out of memory on cuda:1" in message and "no model loaded by nbmodels is on cuda:1" in message
    assert "on-cpu" in manager  # a CPU model does not help a GPU


def test_running_out_again_after_the_evictions_says_so(manager: ModelManager) -> None:
    manager.load("old", "demo:mlp", size_mb=1)

    def always() -> torch.nn.Module:
        raise MemoryError()

    with pytest.raises(ModelLoadError, match="it ran out of memory again after old left cpu"):
        manager.load("new", always)
    assert len(manager) == 0 and manager.loading() == []


def test_the_one_command_that_frees_the_most() -> None:
    idle = oom.LoadedModel("idle", 100)
    held = oom.LoadedModel("held", 300, held_by=("model",), fix="%unload_model held --force")
    stuck = oom.StillHeld("stuck", 50, held_by=("other.module.x",))  # force cannot free it: no fix
    survivor = oom.StillHeld("old", 200, held_by=("Out[3]",), fix="%unload_model old --force")
    assert oom.best_remedy([idle], []) == oom.Remedy("unload", "idle", False, 100)
    assert oom.best_remedy([idle, oom.LoadedModel("b", 100)], []) == oom.Remedy("cleanup", None, False, 200)
    best = oom.best_remedy([idle, held], [survivor, stuck])
    assert best == oom.Remedy("cleanup", None, True, 600)
    assert oom.best_remedy([], [survivor]) == oom.Remedy("unload", "old", True, 200, "%unload_model old --force")
    assert oom.best_remedy([], [stuck]) is None
    assert oom.API.command(oom.Remedy("cleanup", None, True, 1)) == "nbmodels.get_manager().cleanup(force=True)"
    assert oom.API.command(oom.Remedy("unload", "a", False, 1)) == "nbmodels.get_manager().unload('a')"


def test_the_account_reads_as_a_short_report() -> None:
    reading = DeviceMemory("cuda:0", used=14 * 1024 * MiB, total=16 * 1024 * MiB, available=300 * MiB,
                           reserved=15 * 1024 * MiB)  # fmt: skip
    models = (
        oom.LoadedModel("llm", 12 * 1024 * MiB, pinned=True, last_used=0.0),
        oom.LoadedModel("enc", 1024 * MiB, last_used=100.0),
    )
    held = (oom.StillHeld("old", 512 * MiB, held_by=("model", "Out[3]"), fix="%unload_model old --force"),)
    account = oom.MemoryAccount("cuda:0", reading, models, held, oom.best_remedy(models, held), now=100.0 + 14 * 60)
    assert account.lines() == [
        "out of memory on cuda:0: allocated 14.0 GiB, reserved 15.0 GiB, free 300.0 MiB of 16.0 GiB",
        "  models on cuda:0: llm 12.0 GiB (pinned), enc 1.0 GiB (idle 14m)",
        "  released but still alive: old 512.0 MiB, held by model, Out[3]",
        "  other memory on cuda:0 (tensors of your code, activations, the failed cell's frames): 512.0 MiB",
        "  frees the most: nbmodels.get_manager().cleanup(force=True) (13.5 GiB)",
    ]
