"""The policy benchmark and the GPU check script run here too: the benchmark in quick mode (it measures
something, and the keep-alive timer sleeps), the GPU check on the CPU (every step passes) and without a GPU."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


def run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_the_policy_benchmark_in_quick_mode(tmp_path: Path) -> None:
    out = tmp_path / "policy.json"
    done = run("-m", "benchmarks", "policy", "--quick", "--json", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    figures = {f["name"]: f for f in json.loads(out.read_text())["figures"]}
    for name in (
        "eviction decision with 10 models loaded",
        "a load that must evict, minus the unload and the load alone",
        "keep-alive timer wake-ups in 1 s with no deadline due",
        "get() with the policy on",
    ):
        assert name in figures and math.isfinite(figures[name]["value"]), name
    assert figures["keep-alive timer wake-ups in 1 s with no deadline due"]["value"] == 0  # a fact, not a speed


@pytest.mark.slow
def test_the_gpu_check_passes_every_step_on_the_cpu() -> None:
    done = run("scripts/gpu_check.py", "--device", "cpu", "--size-mb", "4")
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split()[:2] == ["step", "ok"]
    steps = lines[2:-1]
    assert len(steps) == 7 and all("  yes  " in line for line in steps)
    assert lines[-1] == "7/7 checks passed"


def test_the_gpu_check_says_when_there_is_no_gpu() -> None:
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: run scripts/gpu_check.py itself")
    done = run("scripts/gpu_check.py")
    assert done.returncode == 2
    assert done.stdout.startswith("gpu_check: no CUDA device cuda:0 here")
    done = run("scripts/gpu_check.py", "--device", "tpu")
    assert done.returncode == 2 and "unknown device 'tpu'" in done.stdout


def test_the_gpu_check_table() -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import gpu_check
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    steps = [gpu_check.Step("load", True, "a on cuda:0", 2**20, 2**21), gpu_check.Step("clean up", False, "x", 0, 0)]
    lines = gpu_check.table(steps, "cuda:0").splitlines()
    assert lines[0].split() == ["step", "ok", "cuda:0", "allocated", "reserved", "detail"]
    assert lines[2].split() == ["load", "yes", "1.0", "MiB", "2.0", "MiB", "a", "on", "cuda:0"]
    assert lines[3].split()[:3] == ["clean", "up", "NO"]
    assert gpu_check.close(100 * 2**20, 101 * 2**20) and not gpu_check.close(100 * 2**20, 110 * 2**20)


@pytest.mark.slow
def test_the_memory_check_passes_every_step_on_the_cpu() -> None:
    done = run("scripts/memory_check.py", "--device", "cpu")
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[-1] == "8/8 checks passed" and all(line.startswith("yes  ") for line in lines[:-1])


def test_the_memory_check_says_when_there_is_no_gpu() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: run scripts/memory_check.py itself")
    done = run("scripts/memory_check.py")
    assert done.returncode == 2 and done.stdout.startswith("memory_check: no CUDA device cuda:0 here")
