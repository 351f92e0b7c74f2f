"""How errors and exits read, and the device readings of a worker, from data (no GPU, no NVML here)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch

from nbmodels.core import nvml
from nbmodels.core.runners import protocol, readings
from nbmodels.errors import ModelLoadError, RemoteError, WorkerDiedError
from tests.core.runners.models import CustomError


@pytest.mark.parametrize(
    ("returncode", "words", "exit_code", "signal"),
    [
        (0, "exited with code 0", 0, None),
        (3, "exited with code 3", 3, None),
        (70, "poisons its process", 70, None),
        (-9, "killed by SIGKILL (signal 9); the system's out-of-memory killer", None, "SIGKILL"),
        (-11, "killed by SIGSEGV (signal 11) (a segmentation fault)", None, "SIGSEGV"),
        (-6, "SIGABRT", None, "SIGABRT"),
        (None, "exit status is unknown", None, None),
    ],
)
def test_exits_are_put_in_words(returncode: int | None, words: str, exit_code: int | None, signal: str | None) -> None:
    how, code, name = protocol.describe_exit(returncode)
    assert words in how and (code, name) == (exit_code, signal)


def test_cuda_errors_poison_the_process_and_out_of_memory_does_not() -> None:
    assert protocol.poisons_process(RuntimeError("CUDA error: device-side assert triggered"))
    assert protocol.poisons_process(RuntimeError("CUDA error: an illegal memory access was encountered"))
    assert protocol.poisons_process(RuntimeError("CUBLAS_STATUS_EXECUTION_FAILED when calling cublasSgemm"))
    assert protocol.poisons_process(torch.AcceleratorError("anything the CUDA runtime said"))
    assert not protocol.poisons_process(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert not protocol.poisons_process(RuntimeError("CUBLAS_STATUS_ALLOC_FAILED"))
    assert not protocol.poisons_process(RuntimeError("mat1 and mat2 shapes cannot be multiplied (3x5 and 8x8)"))
    assert not protocol.poisons_process(ValueError("CUDA error in a user's message"))


def test_an_error_comes_back_as_itself_with_the_workers_traceback() -> None:
    try:
        raise ValueError("bad input")
    except ValueError as exc:
        reply = protocol.error_reply(exc)
    rebuilt = protocol.rebuild_error(pickle.loads(pickle.dumps(reply)), "the worker of model 'm', pid 1")
    assert type(rebuilt) is ValueError and str(rebuilt) == "bad input"
    assert isinstance(rebuilt.__cause__, protocol.RemoteTraceback) and "raise ValueError" in rebuilt.__cause__.text
    assert "(raised in the worker of model 'm', pid 1)" in getattr(rebuilt, "__notes__", [])
    load_error = protocol.rebuild_error(protocol.error_reply(ModelLoadError("m", "it failed")), "w")
    assert isinstance(load_error, ModelLoadError) and load_error.name == "m" and str(load_error) == "it failed"


def test_an_error_that_cannot_be_recreated_becomes_a_remote_error_with_its_type_and_text() -> None:
    reply = protocol.error_reply(CustomError(3, "odd"))
    assert reply.pickled is None
    rebuilt = protocol.rebuild_error(reply, "w")
    assert isinstance(rebuilt, RemoteError) and isinstance(rebuilt, RuntimeError)
    assert rebuilt.remote_type == "tests.core.runners.models.CustomError"
    assert str(rebuilt) == "tests.core.runners.models.CustomError: custom failure 3: odd"


def test_worker_died_error_names_the_model_and_crosses_processes() -> None:
    error = WorkerDiedError("enc", "was killed by SIGKILL (signal 9)", pid=42, signal="SIGKILL", detail="last: x")
    assert str(error).startswith("the worker of model 'enc' (pid 42) was killed by SIGKILL")
    assert isinstance(error, RuntimeError)
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.name, copy.pid, copy.signal, str(copy)) == ("enc", 42, "SIGKILL", str(error))


# NVML's per-device process lists, as nvmlDeviceGetComputeRunningProcesses gives them: (pid, used bytes).
NVML = {0: [(100, 900 << 20), (200, 3 << 30)], 1: [(200, 512 << 20)], 2: [(300, None)]}


def test_nvml_readings_give_one_process_its_bytes_on_each_device_context_included() -> None:
    assert readings.process_device_memory(200, NVML) == {"cuda:0": 3 << 30, "cuda:1": 512 << 20}
    assert readings.process_device_memory(100, NVML) == {"cuda:0": 900 << 20}
    assert readings.process_device_memory(300, NVML) == {}  # NVML could not say (no permission): nothing claimed
    assert readings.process_device_memory(999, NVML) == {}


def test_nvml_indices_follow_cuda_visible_devices() -> None:
    # With CUDA_VISIBLE_DEVICES=1,0 torch's cuda:0 is NVML's device 1.
    assert readings.process_device_memory(200, NVML, visible="1,0") == {"cuda:1": 3 << 30, "cuda:0": 512 << 20}
    assert readings.process_device_memory(200, NVML, visible="1") == {"cuda:0": 512 << 20}
    assert readings.visible_index(2, "0,1") is None
    assert readings.visible_index(1, "GPU-5f3c,GPU-77aa") == 1  # UUIDs: the mapping is unknown, kept as is
    assert readings.visible_index(3, None) == 3


def test_a_worker_s_device_memory_comes_from_the_same_nvml_reading_as_the_machine_view(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One NVML reader for nbmodels: the recorded two-GPU machine of the machine-view tests, read for a worker."""
    recording = json.loads((Path(__file__).parents[2] / "machine" / "data" / "nvml-two-gpus.json").read_text())
    names = {"KERNEL": 101, "WORKER": 4242, "CHILD": 103, "OTHER": 104, "GONE": 105}
    devices = recording["records"]
    expected = 0
    for device in devices:
        used = []
        for process in (*device.get("compute", ()), *device.get("graphics", ())):
            process["pid"] = names[process["pid"]]
            if process["pid"] == 4242 and process["usedGpuMemory"] is not None:
                used.append(process["usedGpuMemory"])
        expected += max(used, default=0)  # one process in both lists is one process
    assert expected > 0
    monkeypatch.setattr(readings, "read_gpus", lambda: nvml.devices_from_records(devices))
    found = readings.nvml_processes()
    assert found is not None and sorted(found) == sorted(int(d["index"]) for d in devices)
    assert sum(readings.process_device_memory(4242, found).values()) == expected
    monkeypatch.setattr(readings, "read_gpus", lambda: nvml.GpuReadings((), "no GPU readings: no NVML here"))
    assert readings.nvml_processes() is None


def test_a_reading_of_this_process_has_rss_and_private_memory() -> None:
    reading = readings.own_memory()
    assert reading.rss and reading.private and reading.private <= reading.rss
    assert reading.devices == {} and reading.device_source == ""  # no CUDA started here
    assert "RSS" in reading.describe() and "private" in reading.describe()


def test_the_runner_errors_are_in_the_documented_tree() -> None:
    import nbmodels

    assert issubclass(nbmodels.WorkerDiedError, nbmodels.NbModelsError)
    assert issubclass(nbmodels.WorkerDiedError, RuntimeError)
    assert issubclass(nbmodels.RemoteError, nbmodels.NbModelsError) and issubclass(nbmodels.RemoteError, RuntimeError)
    assert issubclass(nbmodels.TransferError, nbmodels.NbModelsError) and issubclass(nbmodels.TransferError, TypeError)
    for name in ("WorkerDiedError", "RemoteError", "TransferError"):
        assert name in nbmodels.__all__ and name in (nbmodels.errors.__doc__ or "")
