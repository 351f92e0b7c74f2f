"""Three real kernels shared by the machine-view tests, as a user would have them open.

``train`` and ``eval`` run the extension and hold models; ``plain`` never loads
nbmodels. Each has a connection file ``kernel-<uuid>.json`` in a private
runtime directory (as jupyter_server makes them) and a notebook path in
``JPY_SESSION_NAME``; ``train`` and ``plain`` are both called ``train.ipynb``,
in different folders. Tests that change a kernel put it back as they found it
(:func:`restore`).
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pytest

from nbmodels.ipython.kernels import KERNEL_NAME, kernel_manager_class
from tests.ipython.kernels import TIMEOUT, Kernel

TRAIN_MODELS = "%load_model enc demo:mlp --kw size_mb=8\n%load_model lm demo:transformer"
EVAL_MODELS = "%load_model clf demo:mlp --kw size_mb=4 seed=1"


@dataclass
class Machine:
    """The runtime directory and the three kernels."""

    runtime: Path
    train: Kernel
    eval: Kernel
    plain: Kernel
    notebooks: dict[str, str]

    @property
    def kernels(self) -> list[Kernel]:
        return [self.train, self.eval, self.plain]

    def nbmodels(
        self, *args: str, timeout: float = 120, wrapper: Sequence[str] = ()
    ) -> subprocess.CompletedProcess[str]:
        """``python -m nbmodels ARGS`` as a user types it in a terminal (this runtime directory)."""
        return subprocess.run(
            [*wrapper, sys.executable, "-m", "nbmodels", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "JUPYTER_RUNTIME_DIR": str(self.runtime)},
        )


def loaded(kernel: Kernel) -> list[str]:
    """The names a kernel's own manager holds (asked inside the kernel)."""
    out = kernel.run("import nbmodels\nprint(sorted(i.name for i in nbmodels.get_manager().list()))")
    return list(eval(out.strip()))


def restore(machine: Machine) -> None:
    """Put the models back where the tests expect them (loading a loaded name is a hit)."""
    machine.train.run(TRAIN_MODELS)
    machine.eval.run(EVAL_MODELS)


def _start(runtime: Path, logs: Path, name: str, notebook: str, outputs: list[IO[str]]) -> Kernel:
    connection = runtime / f"kernel-{uuid.uuid4()}.json"
    manager = kernel_manager_class()(kernel_name=KERNEL_NAME, connection_file=str(connection))
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(runtime), "JPY_SESSION_NAME": notebook}
    env.pop("NBMODELS_SHUTDOWN_LOG", None)
    output = (logs / f"{name}.txt").open("w")  # open until the end: a restart starts the kernel with it again
    outputs.append(output)
    manager.start_kernel(env=env, stdout=output, stderr=output)
    return Kernel(manager, manager.client(), logs / f"{name}-shutdown.jsonl")


@pytest.fixture(scope="package")
def machine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Machine]:
    base = tmp_path_factory.mktemp("machine")
    runtime = base / "runtime"
    runtime.mkdir(mode=0o700)
    notebooks = {
        "train": str(base / "home" / "project" / "train.ipynb"),
        "eval": str(base / "home" / "project" / "eval.ipynb"),
        "plain": str(base / "home" / "scratch" / "train.ipynb"),
    }
    kernels: dict[str, Kernel] = {}
    outputs: list[IO[str]] = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("JUPYTER_RUNTIME_DIR", str(runtime))
        try:
            for name, notebook in notebooks.items():  # start all three, then wait: they boot in parallel
                kernels[name] = _start(runtime, base, name, notebook, outputs)
            for k in kernels.values():
                k.client.start_channels()
                k.client.wait_for_ready(timeout=TIMEOUT)
            kernels["train"].run("%load_ext nbmodels\n" + TRAIN_MODELS)
            kernels["eval"].run("%load_ext nbmodels\n" + EVAL_MODELS)
            yield Machine(runtime, kernels["train"], kernels["eval"], kernels["plain"], notebooks)
        finally:
            for k in kernels.values():
                k.client.stop_channels()
                if k.manager.has_kernel:
                    k.manager.shutdown_kernel(now=True)
            for output in outputs:
                output.close()
