"""Memory: accounting by unique storage, and the process RSS really falling after a release (psutil)."""

from __future__ import annotations

import psutil
import pytest
import torch
from torch import nn

from nbmodels import ModelManager
from nbmodels.core.memory import footprint, format_bytes, process_rss

MiB = 1024 * 1024
BIG_MB = 200
GIVEN_BACK = 0.9  # share of the accounted bytes RSS must give back: honest, with room for allocator noise


def load_big(manager: ModelManager, name: str = "big", size_mb: float = BIG_MB) -> int:
    """Load a demo MLP of ``size_mb`` without keeping a reference here; return its accounted bytes."""
    manager.load(name, "demo:mlp", size_mb=size_mb)
    total = manager.info(name).total_bytes
    assert total is not None
    return total


def test_process_rss_is_psutils_reading() -> None:
    assert process_rss() == pytest.approx(psutil.Process().memory_info().rss, rel=0.05)


def test_rss_falls_after_unloading_a_200_mb_model(manager: ModelManager) -> None:
    before_load = process_rss()
    accounted = load_big(manager)
    assert accounted == pytest.approx(BIG_MB * MiB, rel=0.02)
    info = manager.info("big")
    assert info.rss_delta is not None and info.rss_delta >= GIVEN_BACK * accounted  # measured at load
    loaded = process_rss()
    assert loaded - before_load >= GIVEN_BACK * accounted

    report = manager.unload("big")
    after = process_rss()
    assert loaded - after >= GIVEN_BACK * accounted, (
        f"RSS gave back {format_bytes(loaded - after)} of {format_bytes(accounted)}"
    )
    assert report.freed_bytes == {"cpu": accounted}
    assert report.rss_freed >= GIVEN_BACK * accounted  # the report measures the same thing
    assert report.ok and not report.gc_collected


def test_rss_falls_after_cleanup_of_a_200_mb_model(manager: ModelManager) -> None:
    accounted = load_big(manager)
    manager.load("small", "demo:mlp", hidden=32)
    loaded = process_rss()

    report = manager.cleanup()
    after = process_rss()
    assert loaded - after >= GIVEN_BACK * accounted, (
        f"RSS gave back {format_bytes(loaded - after)} of {format_bytes(accounted)}"
    )
    assert report.freed_total >= accounted
    assert report.rss_freed >= GIVEN_BACK * accounted
    assert report.ok


def test_rss_stays_when_something_still_holds_the_model(manager: ModelManager) -> None:
    accounted = load_big(manager, size_mb=40)
    held = manager.get("big")
    loaded = process_rss()
    report = manager.unload("big")
    assert loaded - process_rss() < GIVEN_BACK * accounted  # nothing came back...
    assert report.freed_bytes == {}  # ...and the report does not pretend it did
    assert [alive.name for alive in report.still_alive] == ["big"]
    del held


# --- accounting ------------------------------------------------------------------------


def test_tied_weights_are_counted_once(manager: ModelManager) -> None:
    shape = {"vocab": 4000, "d_model": 64, "heads": 4, "layers": 1}
    tied = manager.load("tied", "demo:transformer", tie_weights=True, **shape)
    manager.load("untied", "demo:transformer", tie_weights=False, **shape)
    assert tied.head.weight is tied.embed.weight
    embedding_bytes = 4000 * 64 * 4

    tied_info, untied_info = manager.info("tied"), manager.info("untied")
    assert untied_info.total_bytes is not None and tied_info.total_bytes is not None
    assert untied_info.total_bytes - tied_info.total_bytes == embedding_bytes
    unique = {p.data_ptr(): p.numel() * p.element_size() for p in tied.parameters()}
    assert tied_info.total_bytes == sum(unique.values())
    assert untied_info.parameters - tied_info.parameters == 4000 * 64  # type: ignore[operator]


def test_views_and_shared_storages_are_counted_once(manager: ModelManager) -> None:
    class Shared(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.zeros(100, 10))
            self.register_buffer("first_row", self.weight.data[0])  # a view
            self.register_buffer("transposed", self.weight.data.t())  # another view
            self.alias = nn.Linear(10, 100, bias=False)
            self.alias.weight = nn.Parameter(self.weight.data)  # another Parameter, same storage

    manager.load("shared", Shared)
    assert manager.info("shared").bytes_by_device == {"cpu": 100 * 10 * 4}


def test_a_view_counts_its_whole_storage() -> None:
    # Freeing a small view of a big tensor frees nothing less than the whole storage.
    big = torch.zeros(1000)
    assert footprint(big[:10]).bytes_by_device == {"cpu": 4000}


def test_a_dict_of_tensors_is_accounted(manager: ModelManager) -> None:
    def state() -> dict[str, object]:
        a = torch.zeros(100)
        return {
            "a": a,
            "a_view": a[:10],
            "half": torch.zeros(10, dtype=torch.float16),
            "nested": [torch.zeros(5, dtype=torch.float64), {"deeper": (torch.zeros(2, dtype=torch.int64),)}],
            "step": 3,
            "note": "not a tensor",
        }

    manager.load("state", state)
    info = manager.info("state")
    assert info.bytes_by_device == {"cpu": 400 + 20 + 40 + 16}
    assert info.dtypes == ("float16", "float32", "float64", "int64")
    assert info.devices == ("cpu",)
    assert info.parameters is None  # a dict has tensors, not parameters: unknown, not guessed


def test_dtype_changes_the_accounted_bytes(manager: ModelManager) -> None:
    manager.load("f32", "demo:mlp", hidden=64)
    manager.load("f16", "demo:mlp", hidden=64, dtype="float16")
    f32, f16 = manager.info("f32"), manager.info("f16")
    assert f16.dtypes == ("float16",)
    assert f16.parameters == f32.parameters
    assert f16.total_bytes * 2 == f32.total_bytes  # type: ignore[operator]


def test_meta_tensors_cost_nothing() -> None:
    with torch.device("meta"):
        model = nn.Linear(1000, 1000)
    fp = footprint(model)
    assert fp.bytes_by_device == {"meta": 0}
    assert fp.parameters == 1000 * 1000 + 1000


def test_objects_without_tensors_have_unknown_footprint() -> None:
    fp = footprint({"a": 1})
    assert fp.bytes_by_device == {} and fp.parameters is None and fp.dtypes == ()


@pytest.mark.parametrize(
    ("nbytes", "text"),
    [(None, "?"), (0, "0 B"), (1023, "1023 B"), (1536, "1.5 KiB"), (200 * MiB, "200.0 MiB"), (-2048, "-2.0 KiB")],
)
def test_format_bytes(nbytes: int | None, text: str) -> None:
    assert format_bytes(nbytes) == text


# --- CUDA (runs only where there is a GPU) --------------------------------------------------

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_a_cpu_only_session_never_starts_cuda(manager: ModelManager) -> None:
    was_initialized = torch.cuda.is_initialized()
    manager.load("m", "demo:mlp", hidden=8)
    info = manager.info("m")
    report = manager.cleanup()
    assert info.cuda_allocated_delta == {} or was_initialized
    if not was_initialized:
        assert not torch.cuda.is_initialized()  # cleanup must not create a CUDA context to empty a cache
        assert not report.cuda_cache_emptied
        assert report.cuda_allocated_before == report.cuda_allocated_after == {}


@needs_cuda
def test_cuda_memory_comes_back_after_unload(manager: ModelManager) -> None:
    manager.load("gpu", "demo:mlp", size_mb=64, device="cuda")
    info = manager.info("gpu")
    assert info.devices == ("cuda:0",) and info.total_bytes is not None
    assert info.cuda_allocated_delta["cuda:0"] >= info.total_bytes
    reserved = torch.cuda.memory_reserved(0)

    report = manager.unload("gpu")
    assert report.freed_bytes == {"cuda:0": info.total_bytes}
    freed = report.cuda_allocated_before["cuda:0"] - report.cuda_allocated_after["cuda:0"]
    assert freed >= info.total_bytes
    assert report.cuda_cache_emptied
    assert torch.cuda.memory_reserved(0) < reserved  # the cache was emptied, not just the tensors dropped


@needs_cuda
def test_move_offloads_to_the_cpu_and_back(manager: ModelManager) -> None:
    manager.load("m", "demo:mlp", size_mb=16, device="cuda:0")
    on_gpu = manager.info("m").bytes_by_device["cuda:0"]
    offloaded = manager.move("m", "cpu")
    assert offloaded.bytes_by_device == {"cpu": on_gpu}
    assert manager.move("m", "cuda").bytes_by_device == {"cuda:0": on_gpu}


def test_sparse_tensors_are_accounted_by_their_parts(manager: ModelManager) -> None:
    # Sparse tensors have no single storage; asking for one used to fail the load after the loader ran.
    def sparse_model() -> nn.Module:
        model = nn.Linear(4, 4)
        model.register_buffer("mask", torch.eye(4).to_sparse())
        return model

    manager.load("sparse", sparse_model)
    mask = manager.get("sparse").mask
    parts = mask._indices().numel() * 8 + mask._values().numel() * 4
    assert manager.info("sparse").bytes_by_device == {"cpu": (16 + 4) * 4 + parts}


def test_the_first_load_does_not_charge_torchs_own_import_to_the_model() -> None:
    """In a fresh process torch is not imported yet; its ~200 MB must not count as the model's."""
    import subprocess
    import sys

    code = (
        "import sys, nbmodels\n"
        "assert 'torch' not in sys.modules\n"
        "manager = nbmodels.get_manager()\n"
        "manager.load('m', 'demo:mlp', size_mb=32)\n"
        "info = manager.info('m')\n"
        "print(info.rss_delta, info.total_bytes)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    rss_delta, model_bytes = map(int, out.split())
    assert rss_delta < 2 * model_bytes, f"RSS change {format_bytes(rss_delta)} for a {format_bytes(model_bytes)} model"
