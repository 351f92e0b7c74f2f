"""Whose memory a storage is, and what freeing it gives back: torch's own, a numpy array's, a file's pages."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from nbmodels.core import ModelManager
from nbmodels.core.memory import footprint
from nbmodels.core.storage_origin import BORROWED, MAPPED, OWNED, Region, origins, parse_maps, region_at

MiB = 2**20

MAPS = """\
55d0c8a00000-55d0c8c21000 rw-p 00000000 00:00 0                          [heap]
7f0000000000-7f0000100000 r--p 00000000 08:01 1234                       /models/tiny bert/model.safetensors
7f0000100000-7f0000200000 rw-p 00000000 00:00 0
7f0000200000-7f0000300000 rw-s 00000000 00:1a 77                         /dev/shm/torch_42_1_0 (deleted)
7f0000300000-7f0000301000 r--p 00000000 08:01 99                         /tmp/gone.bin (deleted)
7ffd0000000-7ffd0021000 rw-p 00000000 00:00 0                            [stack]
not a line
"""


def test_maps_text_gives_the_regions_that_name_a_path() -> None:
    regions = parse_maps(MAPS)
    assert [r.path for r in regions] == [
        "/models/tiny bert/model.safetensors",  # spaces in a path are kept
        "/dev/shm/torch_42_1_0 (deleted)",
        "/tmp/gone.bin (deleted)",
    ]
    assert [r.from_file for r in regions] == [True, False, False]  # shared memory and deleted files are no file


@pytest.mark.parametrize(
    ("address", "path"),
    [
        (0x7F0000000000, "/models/tiny bert/model.safetensors"),
        (0x7F00000FFFFF, "/models/tiny bert/model.safetensors"),
        (0x7F0000100000, None),  # the end is exclusive, and the next region is anonymous
        (0x7EFFFFFFFFFF, None),
        (0x7F0000250000, "/dev/shm/torch_42_1_0 (deleted)"),
        (0, None),
    ],
)
def test_an_address_is_found_in_its_region(address: int, path: str | None) -> None:
    region = region_at(parse_maps(MAPS), address)
    assert (region.path if region else None) == path


def test_no_regions_find_nothing() -> None:
    assert region_at((), 123) is None
    assert region_at((Region(10, 20, "/f"),), 20) is None


def test_each_kind_of_storage_gets_its_origin(tmp_path: Path) -> None:
    save_file({"w": torch.randn(1 << 16)}, str(tmp_path / "w.safetensors"))
    torch.save({"w": torch.randn(1 << 10)}, tmp_path / "w.pt")
    array, buffer = np.ones(4096, dtype=np.float32), bytearray(4096 * 4)
    tensors = {
        "allocated": torch.empty(1 << 20),
        "small": torch.empty(3),
        "module": torch.nn.Linear(4, 4).weight,
        "from_numpy": torch.from_numpy(array),
        "frombuffer": torch.frombuffer(buffer, dtype=torch.float32),
        "safetensors": load_file(str(tmp_path / "w.safetensors"))["w"],
        "torch.load": torch.load(tmp_path / "w.pt")["w"],  # read into memory torch allocated
        "torch.load mmap": torch.load(tmp_path / "w.pt", mmap=True)["w"],
        "shared": torch.empty(16).share_memory_(),
        "converted": torch.from_numpy(array).half(),  # a copy: torch's own
    }
    found = dict(zip(tensors, origins(t.untyped_storage() for t in tensors.values()), strict=True))
    kinds = {name: origin.kind for name, origin in found.items()}
    assert kinds == {
        "allocated": OWNED,
        "small": OWNED,
        "module": OWNED,
        "from_numpy": BORROWED,
        "frombuffer": BORROWED,
        "safetensors": MAPPED,
        "torch.load": OWNED,
        "torch.load mmap": MAPPED,
        "shared": OWNED,
        "converted": OWNED,
    }
    assert found["safetensors"].words() == "mapped from w.safetensors"
    assert found["torch.load mmap"].path == str(tmp_path / "w.pt")


def test_the_footprint_says_what_is_borrowed_and_resident() -> None:
    weights = np.random.default_rng(0).standard_normal((1024, 1024)).astype(np.float32)  # 4 MiB
    model = torch.nn.Linear(1024, 1024)
    model.weight = torch.nn.Parameter(torch.from_numpy(weights))
    fp = footprint(model)
    assert fp.borrowed == 4 * MiB
    assert fp.mapped == 0
    assert fp.bytes_by_device == fp.resident_by_device == {"cpu": 4 * MiB + 1024 * 4}


def test_a_model_over_a_numpy_array_frees_nothing_while_the_array_lives(manager: ModelManager) -> None:
    weights = np.random.default_rng(0).standard_normal((2048, 2048)).astype(np.float32)  # 16 MiB

    def build() -> torch.nn.Module:
        model = torch.nn.Linear(2048, 2048, bias=False)
        model.weight = torch.nn.Parameter(torch.from_numpy(weights))
        return model

    first = weights[0, 0].copy()
    ref = weakref.ref(manager.load("borrowed", build))
    info = manager.info("borrowed")
    assert info.borrowed_bytes == 16 * MiB
    assert "16.0 MiB borrowed from numpy or buffers" in info.size
    report = manager.unload("borrowed")
    gc.collect()
    assert ref() is None and report.ok
    assert report.freed_bytes.get("cpu", 0) == 0  # the model died; its memory is the array's
    assert report.not_freed == (
        "16.0 MiB borrowed from a numpy array or buffer: it comes back when that array or buffer is freed",
    )
    assert "not counted as freed: 16.0 MiB borrowed from a numpy array" in str(report)
    # the array still is that memory, whole (RSS is no witness here: the release also trims other tests' heap)
    assert weights.nbytes == 16 * MiB and float(weights[0, 0]) == float(first)
    assert weights.sum() != 0  # the array is whole: it still is that memory


def test_a_model_of_its_own_memory_is_still_counted_freed(manager: ModelManager) -> None:
    manager.load("own", lambda: torch.nn.Linear(1024, 1024, bias=False))
    report = manager.unload("own")
    assert report.freed_bytes == {"cpu": 4 * MiB}
    assert report.not_freed == ()
    assert "not counted" not in str(report)
