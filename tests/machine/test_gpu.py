"""GPU memory per kernel from NVML readings, tested with a recording (no GPU here) on real processes.

The processes are real and their command lines look like kernels' (``-f
<runtime>/kernel-<id>.json``); only the GPU readings are recorded data.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from nbmodels.core.nvml import nvml_records, read_gpus
from nbmodels.machine import GpuReadings, devices_from_records, scan
from nbmodels.machine.view import as_dict, text_table

RECORDING = Path(__file__).parent / "data" / "nvml-two-gpus.json"
GiB = 1 << 30

# A kernel-looking process that starts a script (CHILD) and forks a worker (WORKER, same command line).
KERNEL_CODE = """
import os, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
worker = os.fork()
if worker == 0:
    time.sleep(300)
    os._exit(0)
print(child.pid, worker, flush=True)
time.sleep(300)
"""


@dataclass
class Processes:
    runtime: Path
    pids: dict[str, int]


def _sleeper(*extra: str, code: str = "import time; time.sleep(300)") -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", code, *extra], stdout=subprocess.PIPE, text=True, start_new_session=True
    )


@pytest.fixture(scope="module")
def processes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Processes]:
    runtime = tmp_path_factory.mktemp("gpu-runtime")
    started: list[subprocess.Popen[str]] = []
    try:
        files = [runtime / f"kernel-{uuid.uuid4()}.json" for _ in range(2)]
        for file in files:
            file.write_text("{}")
        kernel = _sleeper("-f", str(files[0]), code=KERNEL_CODE)
        started.append(kernel)
        quiet = _sleeper("-f", str(files[1]))
        other = _sleeper()
        gone = subprocess.Popen(["true"])
        gone.wait()
        started += [quiet, other]
        assert kernel.stdout is not None
        child, worker = (int(pid) for pid in kernel.stdout.readline().split())
        pids = {
            "KERNEL": kernel.pid,
            "WORKER": worker,
            "CHILD": child,
            "OTHER": other.pid,
            "GONE": gone.pid,
            "QUIET": quiet.pid,
        }
        yield Processes(runtime, pids)
    finally:
        for process in started:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            if process.stdout is not None:
                process.stdout.close()


def recorded(pids: dict[str, int]) -> list[dict[str, Any]]:
    records = json.loads(RECORDING.read_text())["records"]
    for record in records:
        for kind in ("compute", "graphics"):
            for proc in record[kind]:
                proc["pid"] = pids[proc["pid"]]
    return list(records)


def test_recorded_readings_become_devices_with_their_processes() -> None:
    pids = {"KERNEL": 10, "WORKER": 11, "CHILD": 12, "OTHER": 13, "GONE": 14}
    readings = devices_from_records(recorded(pids))
    gpu0, gpu1 = readings.devices
    assert (gpu0.label, gpu0.name, gpu0.total) == ("gpu0", "NVIDIA H100 80GB HBM3", 85520809984)
    assert gpu0.processes == {10: 5905580032, 11: GiB, 13: 10 * GiB, 14: None}
    assert gpu1.processes == {12: 2 * GiB}  # in both lists, one process, counted once
    assert readings.by_pid()[14] == {"gpu0": 0}  # unknown amount: listed, not guessed
    assert readings.note == ""
    assert devices_from_records([]).note == "NVML reports no GPU"


def test_each_kernel_is_charged_its_own_and_its_childrens_gpu_memory(processes: Processes) -> None:
    pids = processes.pids
    view = scan(processes.runtime, gpus=devices_from_records(recorded(pids)))
    kernel = view.kernel(pids["KERNEL"])
    assert kernel is not None and view.kernel(pids["WORKER"]) is None  # the fork shares the command line
    assert kernel.gpu == {"gpu0": 5905580032 + GiB, "gpu1": 2 * GiB}  # the kernel plus its worker
    assert set(kernel.children) == {pids["WORKER"], pids["CHILD"]}
    quiet = view.kernel(pids["QUIET"])
    assert quiet is not None and quiet.gpu == {} and not quiet.nbmodels
    ours = [row.pid for row in view.kernels if row.pid in (pids["KERNEL"], pids["QUIET"])]
    assert ours == [pids["KERNEL"], pids["QUIET"]]  # the GPU user first
    assert view.kernels[0].pid == pids["KERNEL"]  # and first on the whole machine: no one else has a GPU here
    others = {other.pid: other for other in view.others}
    assert set(others) == {pids["OTHER"], pids["GONE"]}
    assert others[pids["OTHER"]].gpu == {"gpu0": 10 * GiB} and "sleep(300)" in others[pids["OTHER"]].command
    assert others[pids["GONE"]].command == "?" and others[pids["GONE"]].rss is None
    assert [o.pid for o in view.others] == [pids["OTHER"], pids["GONE"]]  # largest first


def test_the_table_and_json_show_the_gpus(processes: Processes) -> None:
    pids = processes.pids
    view = scan(processes.runtime, gpus=devices_from_records(recorded(pids)))
    text = text_table(view)
    line = next(line for line in text.splitlines() if f" {pids['KERNEL']} " in line)
    assert "gpu0 6.5 GiB, gpu1 2.0 GiB" in line and "(no nbmodels)" in line
    other = next(line for line in text.splitlines() if f" {pids['OTHER']} " in line)
    assert other.startswith("other") and "gpu0 10.0 GiB" in other
    assert "gpu0 NVIDIA H100 80GB HBM3: 17.9 GiB used of 79.6 GiB (4 process(es))" in text
    assert "2 other GPU process(es)" in text
    data = as_dict(view)
    row = next(k for k in data["kernels"] if k["pid"] == pids["KERNEL"])
    assert row["gpu"] == {"gpu0": 5905580032 + GiB, "gpu1": 2 * GiB}
    assert sorted(row["gpu_children"]) == sorted([pids["WORKER"], pids["CHILD"]])
    assert [g["label"] for g in data["gpus"]] == ["gpu0", "gpu1"] and data["gpu_note"] is None


def test_without_gpu_readings_the_view_says_why() -> None:
    view = scan(Path("/nonexistent-runtime"), gpus=GpuReadings((), "no GPU readings: NVML cannot start"))
    assert "no GPU readings: NVML cannot start" in text_table(view)
    assert as_dict(view)["gpus"] == []


def test_nvml_here_reads_what_the_machine_has() -> None:
    """Real NVML: on this machine either real records (a GPU) or none and the reason (no driver, no library)."""
    records, note = nvml_records()
    readings = read_gpus()
    if records:
        assert note == "" and all({"index", "name", "memory", "compute"} <= set(r) for r in records)
        assert len(readings.devices) == len(records)
    else:
        assert note.startswith("no GPU readings: ") and readings.devices == () and readings.note == note
