"""How the server extension matches its kernels to published state, on real processes and real files.

The state files are written as a kernel writes them, for live processes (this
one and a child); GPU readings are NVML-shaped records, as on a GPU machine
(none here). No server: these are the pieces the handlers call.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from nbmodels.core.nvml import devices_from_records
from nbmodels.machine.paths import state_path
from nbmodels.machine.state import KernelState, ModelState, write_atomically
from nbmodels.server.kernels import ServerKernel, listing, match, read_states

GiB = 1 << 30
MiB = 1 << 20


def state(pid: int, connection: Path | None, kernel_id: str | None, **extra: object) -> KernelState:
    fields: dict[str, object] = {
        "pid": pid,
        "process_started": psutil.Process(pid).create_time(),
        "kernel_id": kernel_id,
        "connection_file": str(connection) if connection else None,
        "notebook": "project/train.ipynb",
        "socket": None,
        "nbmodels_version": "0.1.0",
        "updated": time.time(),
        "busy": False,
        "activity": time.time() - 5,
        "models": (ModelState("enc", "demo:mlp", "Sequential", {"cpu": 16 * MiB, "cuda:0": 2 * GiB}, 10, 0.0, 0.0),),
        "in_use": ("old",),
        "loading": ("next",),
    }
    fields.update(extra)
    return KernelState(**fields)  # type: ignore[arg-type]


def publish(runtime: Path, kernel: KernelState) -> Path:
    path = state_path(runtime, kernel.pid)
    write_atomically(path, kernel.to_json())
    return path


@pytest.fixture
def child() -> Iterator[int]:
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        yield process.pid
    finally:
        process.kill()
        process.wait()


def test_a_kernel_is_matched_by_its_connection_file_else_its_id(tmp_path: Path, child: int) -> None:
    runtime = tmp_path / "runtime"
    runtime.mkdir()
    (tmp_path / "link").symlink_to(runtime)
    ours = runtime / f"kernel-{uuid.uuid4()}.json"
    publish(runtime, state(os.getpid(), ours, None))
    publish(runtime, state(child, None, "k-by-id"))
    kernels = [
        ServerKernel("k-file", str(tmp_path / "link" / ours.name)),  # the same file through a symlink
        ServerKernel("k-by-id", str(runtime / "kernel-k-by-id.json")),
        ServerKernel("k-none", str(runtime / "kernel-k-none.json")),
    ]
    found = match(kernels, read_states([runtime]))
    assert {kid: s.pid for kid, s in found.items()} == {"k-file": os.getpid(), "k-by-id": child}


def test_only_live_processes_regular_files_and_sound_state_count(tmp_path: Path, child: int) -> None:
    runtime = tmp_path / "runtime"
    runtime.mkdir()
    publish(runtime, state(os.getpid(), None, "alive"))
    # A file whose pid now belongs to another process (its start time differs): stale.
    publish(runtime, state(child, None, "reused", process_started=psutil.Process(child).create_time() - 3600))
    (runtime / "nbmodels-kernel-999999999.json").write_text("{not json")  # corrupt
    target = tmp_path / "elsewhere.json"
    target.write_text(state(os.getpid(), None, "planted").to_json())
    (runtime / "nbmodels-kernel-1.json").symlink_to(target)  # a link, not a regular file: never followed
    assert [s.kernel_id for s in read_states([runtime, tmp_path / "missing"])] == ["alive"]


def test_the_listing_has_sizes_held_and_loading_models_and_gpu_readings(tmp_path: Path) -> None:
    runtime = tmp_path / "runtime"
    runtime.mkdir()
    connection = runtime / "kernel-abc.json"
    publish(runtime, state(os.getpid(), connection, "abc", busy=True))
    gpus = devices_from_records(
        [
            {
                "index": 0,
                "name": "NVIDIA H100",
                "uuid": "GPU-0",
                "memory": {"total": 80 * GiB, "used": 10 * GiB},
                "compute": [{"pid": os.getpid(), "usedGpuMemory": 3 * GiB}, {"pid": 1, "usedGpuMemory": GiB}],
            }
        ]
    )
    kernels = [ServerKernel("abc", str(connection), "python3", "busy"), ServerKernel("plain", None, "python3", "idle")]
    body = listing(kernels, [runtime], gpus)
    mine, plain = body["kernels"]
    assert plain == {
        "id": "plain",
        "kernel_name": "python3",
        "execution_state": "idle",
        "nbmodels": False,
        "models": [],
    }
    assert mine["nbmodels"] is True and mine["busy"] is True and mine["idle_seconds"] is None
    assert mine["notebook"] == "project/train.ipynb" and mine["can_release"] is False  # no socket
    assert [(m["name"], m["held"], m["loading"]) for m in mine["models"]] == [
        ("enc", False, False),
        ("old", True, False),
        ("next", False, True),
    ]
    assert mine["models"][0]["bytes_by_device"] == {"cpu": 16 * MiB, "cuda:0": 2 * GiB}
    assert mine["gpu"] == {"gpu0": 3 * GiB}  # this process's own, not pid 1's
    assert body["gpus"] == [{"index": 0, "label": "gpu0", "name": "NVIDIA H100", "total": 80 * GiB, "used": 10 * GiB}]
