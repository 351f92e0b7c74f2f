"""``device="auto"`` as a pure function of device readings: the readings here are data, as NVML or torch report them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nbmodels.core import ModelManager, nvml
from nbmodels.core.memory import DeviceMemory
from nbmodels.core.policy import placement
from nbmodels.core.policy.placement import CUDA_RESERVE, choose_device, hugging_face_folder, native_kwargs, room_on

GiB = 2**30
CPU = DeviceMemory("cpu", used=GiB, total=64 * GiB, available=32 * GiB)


def gpu(index: int, free_gib: float, *, allocated: float = 0.0, reserved: float = 0.0) -> DeviceMemory:
    return DeviceMemory(
        f"cuda:{index}",
        used=int(allocated * GiB),
        total=80 * GiB,
        available=int(free_gib * GiB),
        reserved=int(reserved * GiB),
    )


def test_no_cuda_device_means_the_cpu_without_a_warning() -> None:
    choice = choose_device(GiB, [CPU])
    assert choice.device == "cpu" and not choice.warning


def test_the_device_with_the_most_room_that_fits() -> None:
    choice = choose_device(10 * GiB, [CPU, gpu(0, 12), gpu(1, 40)])
    assert choice.device == "cuda:1"
    assert "cuda:1 has the most room" in choice.reason


def test_cached_memory_torch_can_hand_out_again_counts_as_room() -> None:
    # cuda:0: 5 GiB free, but torch holds 10 GiB reserved of which only 2 GiB are allocated: 13 GiB of room
    readings = [gpu(0, 5, allocated=2, reserved=10), gpu(1, 12)]
    assert room_on(readings[0]) == 13 * GiB - CUDA_RESERVE
    assert choose_device(12 * GiB, readings).device == "cuda:0"


def test_nothing_fits_falls_back_to_the_cpu_and_says_why() -> None:
    choice = choose_device(30 * GiB, [CPU, gpu(0, 12), gpu(1, 20)], what="llm")
    assert choice.device == "cpu"
    assert "no CUDA device has room for llm (30.0 GiB" in choice.warning
    assert "cuda:1 19.6 GiB" in choice.warning and "cuda:0 11.6 GiB" in choice.warning  # room after the reserve


def test_a_budget_caps_a_device_and_the_warning_says_so() -> None:
    readings = [gpu(0, 40), gpu(1, 20)]
    assert choose_device(10 * GiB, readings, {"cuda:0": 5 * GiB}).device == "cuda:1"
    choice = choose_device(25 * GiB, readings, {"cuda:0": 5 * GiB})
    assert choice.device == "cpu" and "cuda:0 5.0 GiB (budget)" in choice.warning


def test_an_unknown_size_goes_to_the_device_with_the_most_room() -> None:
    assert choose_device(None, [gpu(0, 10), gpu(1, 30)]).device == "cuda:1"
    assert choose_device(None, [gpu(0, 0.1)]).device == "cpu"  # under the reserve: no room at all


def test_ties_go_to_the_lower_index() -> None:
    assert choose_device(GiB, [gpu(1, 20), gpu(0, 20)]).device == "cuda:0"


def test_a_hugging_face_folder_places_itself(tmp_path: Path) -> None:
    folder = tmp_path / "my model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    text = str(folder)
    assert hugging_face_folder(text)
    extra = native_kwargs(text, "cuda:0", "float16", {})
    assert extra["device_map"] == "cuda:0"
    assert extra.get("dtype", extra.get("torch_dtype")) == "float16"
    assert native_kwargs(text, "cpu", None, {}) == {}  # the CPU needs no map (and no accelerate)
    assert native_kwargs(text, "cuda:0", None, {"device_map": "auto"}) == {}  # the user's own stays
    assert native_kwargs(text, None, "float16", {"torch_dtype": "bfloat16"}) == {}
    (folder / "modules.json").write_text("[]")  # sentence-transformers: not from_pretrained
    assert native_kwargs(text, "cuda:0", None, {}) == {}
    assert native_kwargs("demo:mlp", "cuda:0", None, {}) == {}


def test_a_fraction_budget_on_a_gpu_holds_before_cuda_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Before the first CUDA load torch cannot say a device's size without starting CUDA; NVML can (recorded
    readings of a two-GPU machine here), so ``{"cuda:0": 0.5}`` already limits that first load."""
    recording = json.loads((Path(__file__).parents[2] / "machine" / "data" / "nvml-two-gpus.json").read_text())
    for device in recording["records"]:
        for process in (*device.get("compute", ()), *device.get("graphics", ())):
            process["pid"] = 1
    recording["records"][1]["memory"]["total"] //= 2  # two sizes, so that a wrong index shows
    readings = nvml.devices_from_records(recording["records"])
    totals = {d.index: d.total for d in readings.devices}
    assert len(totals) == 2 and totals[0] != totals[1]
    monkeypatch.setattr(nvml, "read_gpus", lambda: readings)
    placement.nvml_total.cache_clear()
    try:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
        assert placement.device_total("cuda:0") == totals[0] and placement.device_total("cuda:1") == totals[1]
        assert placement.device_total("cuda:2") is None
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")  # torch's cuda:0 is NVML's device 1
        assert placement.device_total("cuda:0") == totals[1]
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
        mgr = ModelManager()
        mgr.set_max_memory({"cuda:0": 0.5})
        assert mgr._limits().bytes_by_device == {"cuda:0": totals[0] // 2}
        monkeypatch.setattr(nvml, "read_gpus", lambda: nvml.GpuReadings((), "no GPU readings: no NVML here"))
        placement.nvml_total.cache_clear()
        assert placement.device_total("cuda:0") is None  # without NVML it constrains nothing, as before
    finally:
        placement.nvml_total.cache_clear()
