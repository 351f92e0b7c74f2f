"""Models for the runner tests, importable by a worker as ``tests.core.runners.models:NAME``."""

from __future__ import annotations

import ctypes
import os
import signal
import threading
import time
from typing import Any

import torch
from torch import nn


class CustomError(Exception):
    """An exception whose constructor does not match its args: it cannot be re-created by pickle."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(f"custom failure {code}: {text}")


class PoisonedResult:
    """A result whose pickling meets a CUDA error, as sharing a CUDA tensor does after an asynchronous fault."""

    def __reduce__(self) -> Any:
        raise RuntimeError("CUDA error: an illegal memory access was encountered")


class Probe(nn.Module):
    """A small deterministic model with methods that misbehave on request."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(7)
            self.linear = nn.Linear(width, width)
        self.label = "probe"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.linear(x)
        return out

    def pid(self) -> int:
        return os.getpid()

    def echo(self, value: Any) -> Any:
        return value

    def scaled(self, x: torch.Tensor, *, factor: float = 1.0) -> torch.Tensor:
        return x * factor

    def exit(self, code: int) -> None:
        os._exit(code)

    def segfault(self) -> None:
        ctypes.string_at(0)

    def kill_self(self) -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    def fail(self) -> None:
        raise ValueError("the probe failed on purpose")

    def fail_custom(self) -> None:
        raise CustomError(3, "not picklable as itself")

    def cuda_error(self) -> None:
        # The text torch raises after a device-side assert; on a CPU machine the same error by hand.
        raise RuntimeError("CUDA error: device-side assert triggered\nCompile with `TORCH_USE_CUDA_DSA`")

    def poisoned_result(self) -> PoisonedResult:
        return PoisonedResult()

    def slow(self, seconds: float) -> float:
        started = time.perf_counter()
        deadline = started + seconds
        while time.perf_counter() < deadline:
            time.sleep(0.01)
        return time.perf_counter() - started

    def lock(self) -> Any:
        return threading.Lock()

    def say(self, text: str) -> None:
        print(text, flush=True)


def probe(width: int = 8) -> Probe:
    return Probe(width)


def failing_factory() -> nn.Module:
    raise ValueError("the factory failed on purpose")


def crashing_factory() -> nn.Module:
    os._exit(9)
