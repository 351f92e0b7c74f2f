"""The memory policy in a real Jupyter kernel: settings from the environment, an eviction in a cell's output,
the out-of-memory account after the error message, and keep-alive while the kernel sits idle."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.ipython.kernels import TIMEOUT, Kernel, kernel


def outputs(k: Kernel, code: str) -> list[tuple[str, str]]:
    """Run ``code`` (which may fail) and return its outputs in the order the kernel sent them."""
    seen: list[tuple[str, str]] = []

    def collect(msg: dict[str, Any]) -> None:
        if msg["msg_type"] == "stream":
            seen.append(("stream", msg["content"]["text"]))
        elif msg["msg_type"] == "error":
            seen.append(("error", msg["content"]["ename"] + ": " + msg["content"]["evalue"]))

    k.client.execute_interactive(code, timeout=TIMEOUT, output_hook=collect)
    return seen


@pytest.mark.slow
def test_budget_account_and_keep_alive_in_a_kernel(tmp_path: Path) -> None:
    with kernel(tmp_path, NBMODELS_MAX_MEMORY="cpu=5MiB") as k:
        k.run("%load_ext nbmodels")
        k.run("%load_model a demo:mlp --kw size_mb=2")
        k.run("%load_model b demo:mlp --kw size_mb=2 seed=1")
        k.run("import nbmodels\nheld = nbmodels.get_manager().get('a')")  # a notebook variable holds a
        printed = k.run("%load_model c demo:mlp --kw size_mb=2 seed=2")
        first, second = printed.splitlines()[:2]
        assert first.startswith("evicted b (2.0 MiB, idle ") and first.endswith(" to fit c")
        assert second.startswith("c: Sequential on cpu")

        seen = outputs(k, "batch = [0] * 10\nraise MemoryError('no room for the batch')")
        kinds = [kind for kind, _ in seen]
        assert kinds[0] == "error" and seen[0][1] == "MemoryError: no room for the batch"
        account = "".join(text for kind, text in seen if kind == "stream")
        assert kinds.index("stream") > 0  # after the error, as IPython showed it
        assert account.startswith("nbmodels: out of memory on cpu: process RSS ")
        assert "models on cpu: a 2.0 MiB (also held by held), c 2.0 MiB (idle " in account
        assert "frees the most: %model_cleanup --force (4.0 MiB)" in account

        k.run("%load_model brief demo:mlp --kw size_mb=0.5 --keep-alive 1")
        time.sleep(2.5)  # the kernel is idle: its timer thread unloads brief on time
        printed = k.run("print(sorted(info.name for info in nbmodels.get_manager().list()))")
        assert printed.strip() == "['a', 'c']"
