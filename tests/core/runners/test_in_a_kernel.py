"""Isolated models used from a real Jupyter kernel (jupyter_client): what a notebook user does."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.core.runners.conftest import wait_gone
from tests.ipython.kernels import kernel

pytestmark = pytest.mark.slow

SLOW_MODULE = """
import os, time
from torch import nn

class Slow(nn.Module):
    def wait(self, seconds):
        time.sleep(seconds)
        return os.getpid()

def make():
    return Slow()
"""


def pids_in(text: str) -> list[int]:
    return [int(n) for n in re.findall(r"pid=(\d+)", text)]


def test_sigkill_of_the_kernel_leaves_no_worker_behind(tmp_path: Path) -> None:
    with kernel(tmp_path) as k:
        printed = k.run(
            "import threading\n"
            "from nbmodels.core import runners\n"
            "a = runners.start('process', 'a', 'demo:mlp')\n"
            "box = []\n"  # a worker started from a thread that then ends, as the panel's loads do
            "t = threading.Thread(target=lambda: box.append(runners.start('process', 'b', 'demo:transformer')))\n"
            "t.start(); t.join()\n"
            "runners.spare_pool().resize(1); runners.spare_pool().wait_ready()\n"
            "print(f'pid={a.pid} pid={box[0].pid}', *(f'pid={p}' for p in runners.spare_pool().pids()))"
        )
        workers = pids_in(printed)
        assert len(workers) == 3
        time.sleep(0.5)
        assert all(not wait_gone(pid, 0.05) for pid in workers)  # all alive, the thread's one too
        os.kill(k.pid, signal.SIGKILL)
        assert all(wait_gone(pid, 15) for pid in workers), workers


def test_a_notebook_function_is_refused_and_a_module_factory_works(tmp_path: Path) -> None:
    with kernel(tmp_path) as k:
        printed = k.run(
            "from nbmodels.core import runners\n"
            "def make():\n"
            "    import torch\n"
            "    return torch.nn.Linear(2, 2)\n"
            "try:\n"
            "    runners.start('process', 'x', make)\n"
            "except Exception as e:\n"
            "    print(type(e).__name__, e)\n"
        )
        assert "SourceError" in printed and "defined in the notebook (__main__)" in printed
        assert "'package.module:factory'" in printed
        (tmp_path / "slowmod.py").write_text(SLOW_MODULE)
        printed = k.run(
            f"import sys; sys.path.insert(0, {str(tmp_path)!r})\n"
            "m = runners.start('process', 'slow', 'slowmod:make')\n"
            "class Batch: pass\n"
            "try:\n"
            "    m.wait(Batch())\n"
            "except Exception as e:\n"
            "    print(type(e).__name__, e)\n"
            "print(f'pid={m.pid}')"
        )
        assert "TransferError" in printed and "defined in the notebook" in printed
        (pid,) = pids_in(printed)
        # Jupyter's interrupt reaches the kernel's process group; the worker, in its own session, only gets the
        # interrupt that the kernel forwards for the call it waits on: the call stops, the worker lives.
        k.start_busy("m.wait(60)")
        k.manager.interrupt_kernel()
        started = time.monotonic()
        interrupted = ""
        while time.monotonic() - started < 20:  # the interrupted cell's own end: its error, then idle
            msg = k.client.get_iopub_msg(timeout=20)
            if msg["msg_type"] == "error":
                interrupted = msg["content"]["ename"]
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                break
        assert interrupted == "KeyboardInterrupt"
        time.sleep(0.5)  # ipykernel drops requests that arrive while it aborts the interrupted cell's queue
        printed = k.run("print(f'pid={m.wait(0)}')")
        assert pids_in(printed) == [pid] and time.monotonic() - started < 20
        k.run("m.stop()")
        assert wait_gone(pid, 5)


def test_import_nbmodels_starts_no_process_and_imports_neither_ray_nor_torch() -> None:
    code = (
        "import sys, psutil, nbmodels, nbmodels.core.runners\n"
        "from nbmodels.core.runners import spare_pool\n"
        "assert 'ray' not in sys.modules, 'ray'\n"
        "assert 'torch' not in sys.modules, 'torch'\n"
        "assert spare_pool().size == 0\n"
        "assert not psutil.Process().children(), psutil.Process().children()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
