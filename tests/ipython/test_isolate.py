"""``%load_model --isolate`` on a real InteractiveShell, and in a real kernel that is then SIGKILLed.

The handle behaves as for a model in the kernel (calls, methods), holds the
worker's proxy only weakly, and after a crash says how the worker ended; the
settings start spare workers and name the Ray cluster; a kernel killed with
SIGKILL leaves no worker behind.
"""

from __future__ import annotations

import json
import os
import signal
import time
import weakref
from pathlib import Path

import psutil
import pytest
import torch
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

from nbmodels import ModelManager, SourceError, WorkerDiedError
from nbmodels.ipython import unwrap
from tests.core.runners.conftest import wait_gone, worker_children
from tests.ipython.conftest import run


def test_isolate_loads_in_a_worker_and_the_handle_calls_it(ip: InteractiveShell, mgr: ModelManager) -> None:
    handle = ip.run_line_magic("load_model", "m demo:mlp --kw hidden=16 --isolate")
    x = torch.ones(1, 64)
    assert handle(x).shape == (1, 10) and handle.training in (True, False)
    info = mgr.info("m")
    assert info.runner == "process" and psutil.pid_exists(info.pid)
    assert "runs in" in str(ip.run_line_magic("model_info", "m")) and f"worker {info.pid}" in str(
        ip.run_line_magic("model_info", "m")
    )
    proxy = weakref.ref(unwrap(handle))
    report = ip.run_line_magic("unload_model", "m")
    assert report.ok and proxy() is None and wait_gone(info.pid)
    with pytest.raises(ReferenceError, match="was unloaded"):
        handle(x)


def test_isolate_mistakes_are_one_line_usage_errors(ip: InteractiveShell, mgr: ModelManager) -> None:
    with pytest.raises(UsageError, match=r"--isolate means --runner process"):
        ip.run_line_magic("load_model", "m demo:mlp --isolate --runner ray")
    with pytest.raises(UsageError, match=r"--kw runner=\.\.\. is not a model keyword; use --runner"):
        ip.run_line_magic("load_model", "m demo:mlp --kw runner=process")
    run(ip, "import torch\ndef make():\n    return torch.nn.Linear(2, 2)")
    with pytest.raises(SourceError, match=r"defined in the notebook.*'package.module:factory'"):
        mgr.load("m", ip.user_ns["make"], runner="process")
    assert "m" not in mgr and worker_children() == []


def test_after_a_crash_the_handle_says_how_the_worker_ended(ip: InteractiveShell, mgr: ModelManager) -> None:
    handle = ip.run_line_magic("load_model", "m demo:mlp --kw hidden=16 --isolate")
    os.kill(mgr.info("m").pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while "m" in mgr:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    with pytest.raises(WorkerDiedError, match="SIGKILL"):
        handle(torch.ones(1, 64))
    again = ip.run_line_magic("load_model", "m demo:mlp --kw hidden=16 --isolate")
    assert again(torch.ones(1, 64)).shape == (1, 10)


def test_spare_workers_follow_the_setting_and_unload_ext_stops_them(ip: InteractiveShell, mgr: ModelManager) -> None:
    from nbmodels.core.runners import spare_pool

    ip.run_line_magic("config", "NBModels.spare_workers = 1")
    assert spare_pool().wait_ready(60)
    ip.run_line_magic("config", "NBModels.ray_address = 'ray://10.0.0.1:10001'")
    assert mgr.ray_address == "ray://10.0.0.1:10001"
    ip.run_line_magic("unload_ext", "nbmodels")
    assert spare_pool().pids() == [] and mgr.ray_address is None
    ip.run_line_magic("load_ext", "nbmodels")


@pytest.mark.slow
def test_a_sigkilled_kernel_leaves_no_worker_behind(tmp_path: Path) -> None:
    from tests.ipython.kernels import kernel

    with kernel(tmp_path) as k:
        k.run("%load_ext nbmodels")
        k.run("%config NBModels.spare_workers = 1")
        printed = k.run(
            "m = %load_model m demo:mlp --kw hidden=16 --isolate\n"
            "import json, nbmodels\n"
            "from nbmodels.core.runners import spare_pool\n"
            "spare_pool().wait_ready(60)\n"
            "print(json.dumps([nbmodels.get_manager().info('m').pid, *spare_pool().pids()]))"
        )
        workers = json.loads(printed.strip().splitlines()[-1])
        assert len(workers) == 2 and all(psutil.pid_exists(pid) for pid in workers)
        os.kill(k.pid, signal.SIGKILL)
    assert all(wait_gone(pid, 10) for pid in workers)
