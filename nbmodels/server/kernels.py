"""This server's kernels as nbmodels sees them: each kernel id matched to the state its process publishes.

The server knows each kernel it started by id and connection file; a kernel
with nbmodels publishes ``nbmodels-kernel-<pid>.json`` (see
:mod:`nbmodels.machine.publisher`) in its runtime directory, which names that
connection file. A kernel is matched by its connection file (else its id),
never by a pid or a path from a request, and only to a state file that is a
regular file of this user whose process still runs. No scan of every process:
a few small files and one process reading per kernel keep a listing of ten
kernels within milliseconds.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from nbmodels.core.nvml import GpuReadings
from nbmodels.machine import paths
from nbmodels.machine.errors import StateFileError
from nbmodels.machine.state import KernelState, read_state

log = logging.getLogger("nbmodels")

_START_TOLERANCE = 1.0  # seconds: a process's start time read twice can differ by rounding


@dataclass(frozen=True)
class ServerKernel:
    """One kernel this server runs: its id, its connection file and its kernel spec's name."""

    kernel_id: str
    connection_file: str | None
    kernel_name: str = ""
    execution_state: str = ""


def _real(path: str | None) -> str | None:
    return os.path.realpath(path) if path else None


def _running(state: KernelState) -> bool:
    """The process that wrote ``state`` still runs (and its pid was not reused since)."""
    try:
        process = psutil.Process(state.pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        return bool(abs(process.create_time() - state.process_started) <= _START_TOLERANCE)
    except (psutil.Error, OSError):
        return False


def read_states(directories: Iterable[Path]) -> list[KernelState]:
    """The live kernels' state files in ``directories``: regular files of this user only, corrupt ones skipped."""
    states: list[KernelState] = []
    uid = os.getuid()
    for directory in dict.fromkeys(directories):
        try:
            names = os.listdir(directory)
        except OSError:
            continue
        for name in names:
            if paths.pid_of_state_file(name) is None:
                continue
            path = directory / name
            try:
                info = os.lstat(path)
                if not stat.S_ISREG(info.st_mode) or info.st_uid != uid:
                    continue
                state = read_state(path)
            except (OSError, StateFileError) as exc:
                log.debug("nbmodels: skipped %s: %s", path, exc)
                continue
            if _running(state):
                states.append(state)
    return states


def match(kernels: Iterable[ServerKernel], states: Iterable[KernelState]) -> dict[str, KernelState]:
    """{kernel id: its state}: by connection file first, else by kernel id."""
    by_file: dict[str, KernelState] = {}
    by_id: dict[str, KernelState] = {}
    for state in states:
        real = _real(state.connection_file)
        if real:
            by_file[real] = state
        if state.kernel_id:
            by_id[state.kernel_id] = state
    found: dict[str, KernelState] = {}
    for kernel in kernels:
        real = _real(kernel.connection_file)
        mine = (by_file.get(real) if real else None) or by_id.get(kernel.kernel_id)
        if mine is not None:
            found[kernel.kernel_id] = mine
    return found


def _gpu_of(pid: int, usage: Mapping[int, Mapping[str, int]]) -> dict[str, int]:
    """GPU bytes per device of ``pid`` and its child processes (workers, DataLoaders)."""
    if not usage:
        return {}
    pids = [pid]
    with contextlib.suppress(psutil.Error, OSError):
        pids += [child.pid for child in psutil.Process(pid).children(recursive=True)]
    total: dict[str, int] = {}
    for holder in pids:
        for label, nbytes in usage.get(holder, {}).items():
            total[label] = total.get(label, 0) + nbytes
    return total


def kernel_record(kernel: ServerKernel, state: KernelState | None, gpus: GpuReadings, now: float) -> dict[str, Any]:
    """One kernel as the REST API gives it (JSON-ready)."""
    record: dict[str, Any] = {
        "id": kernel.kernel_id,
        "kernel_name": kernel.kernel_name,
        "execution_state": kernel.execution_state,
        "nbmodels": state is not None,
        "models": [],
    }
    if state is None:
        return record
    loading = set(state.loading)
    models: list[dict[str, Any]] = [
        {
            "name": model.name,
            "source": model.source,
            "class_name": model.class_name,
            "bytes_by_device": dict(model.bytes_by_device),
            "total_bytes": model.total_bytes,
            "parameters": model.parameters,
            "loaded_at": model.loaded_at,
            "last_used": model.last_used,
            "pinned": model.pinned,
            "held": False,
            "loading": False,
        }
        for model in state.models
    ]
    listed = {model.name for model in state.models}
    # Released but still held by something in the kernel: no size is known any more, only that it lives.
    models += [_placeholder(name, held=True) for name in state.in_use if name not in listed]
    models += [_placeholder(name, loading=True) for name in state.loading if name not in listed]
    record.update(
        pid=state.pid,
        notebook=state.notebook,
        busy=state.busy,
        idle_seconds=None if state.busy else max(0.0, now - state.activity),
        updated=state.updated,
        nbmodels_version=state.nbmodels_version,
        can_release=state.socket is not None,
        models=models,
        loading=sorted(loading),
        gpu=_gpu_of(state.pid, gpus.by_pid()),
    )
    return record


def _placeholder(name: str, *, held: bool = False, loading: bool = False) -> dict[str, Any]:
    return {
        "name": name,
        "source": "",
        "class_name": "",
        "bytes_by_device": {},
        "total_bytes": 0,
        "parameters": None,
        "loaded_at": None,
        "last_used": None,
        "pinned": False,
        "held": held,
        "loading": loading,
    }


def gpu_records(gpus: GpuReadings) -> list[dict[str, Any]]:
    return [
        {"index": d.index, "label": d.label, "name": d.name, "total": d.total, "used": d.used} for d in gpus.devices
    ]


def listing(kernels: list[ServerKernel], directories: Iterable[Path], gpus: GpuReadings) -> dict[str, Any]:
    """The body of ``GET /nbmodels/api/kernels``: every kernel of this server, its models, and the GPUs."""
    states = match(kernels, read_states(directories))
    now = time.time()
    return {
        "kernels": [kernel_record(k, states.get(k.kernel_id), gpus, now) for k in kernels],
        "gpus": gpu_records(gpus),
        "gpu_note": gpus.note,
        "taken_at": now,
    }


def state_directories(kernels: Iterable[ServerKernel], runtime_dir: str | None) -> list[Path]:
    """Where this server's kernels publish: beside their connection files, and the server's runtime directory."""
    found = [Path(k.connection_file).parent for k in kernels if k.connection_file]
    if runtime_dir:
        found.append(Path(runtime_dir))
    return list(dict.fromkeys(found))


__all__ = ["ServerKernel", "gpu_records", "kernel_record", "listing", "match", "read_states", "state_directories"]
