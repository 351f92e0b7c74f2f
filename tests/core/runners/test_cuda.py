"""The CUDA paths of a worker, for a machine with a GPU (skipped without one: run these first on a GPU).

``pytest tests/core/runners/test_cuda.py`` checks what the CPU suite cannot: device memory read per
process (NVML when installed, else torch's), CUDA tensors through CUDA IPC, results moved to the CPU
in the worker, a real device-side assert ending the worker, and the device memory coming back.
"""

from __future__ import annotations

import time

import pytest
import torch

from nbmodels.core import runners
from nbmodels.errors import WorkerDiedError
from tests.core.runners.conftest import wait_gone

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def test_a_cuda_model_in_a_worker_and_its_device_memory_back() -> None:
    remote = runners.start("process", "gpu", "demo:mlp", kwargs={"size_mb": 64}, device="cuda")
    try:
        assert remote.footprint.devices == ("cuda:0",)
        reading = remote.memory()
        assert reading.devices.get("cuda:0", 0) >= 64 * 1024 * 1024
        assert reading.device_source in ("nvml", "torch")
        x = torch.randn(8, 64, device="cuda")
        out = remote(x)  # a CUDA tensor each way, through CUDA IPC
        assert out.is_cuda and out.shape == (8, 10)
        assert torch.allclose(out, remote(x.cpu().cuda()))
    finally:
        result = remote.stop()
    assert result.gone and result.before is not None and result.freed_bytes.get("cuda:0", 0) >= 64 * 1024 * 1024


def test_results_on_cpu_keep_the_kernel_free_of_cuda_tensors() -> None:
    remote = runners.start("process", "gpu", "demo:mlp", device="cuda", results_on_cpu=True)
    try:
        assert remote(torch.randn(2, 64)).device.type == "cpu"
    finally:
        remote.stop()


def test_a_device_side_assert_ends_the_worker_and_a_fresh_start_works() -> None:
    remote = runners.start("process", "lm", "demo:transformer", kwargs={"vocab": 100}, device="cuda")
    pid = remote.pid
    assert pid is not None
    with pytest.raises(WorkerDiedError, match=r"poisons its process|CUDA"):
        remote(torch.tensor([[5, 500]], device="cpu").cuda())  # token 500 >= vocab: an embedding index assert
        torch.cuda.synchronize()
        remote(torch.tensor([[1, 2]]).cuda())  # the assert may surface at the next call
    assert wait_gone(pid, 10) and not remote.alive
    time.sleep(0.2)
    fresh = runners.start("process", "lm", "demo:transformer", kwargs={"vocab": 100}, device="cuda")
    assert fresh(torch.tensor([[1, 2]]).cuda()).shape == (1, 2, 100)
    fresh.stop()
