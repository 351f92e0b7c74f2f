"""Spare workers: started ahead, taken by a load, replaced, and stopped when no longer wanted."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from nbmodels.core import runners
from nbmodels.core.runners import SparePool, spare_pool
from nbmodels.errors import InvalidArgumentError
from tests.core.runners.conftest import PROBE, wait_gone
from tests.core.runners.models import probe

pytestmark = pytest.mark.slow


@pytest.fixture
def pool() -> Iterator[SparePool]:
    shared = spare_pool()
    try:
        yield shared
    finally:
        shared.resize(0)


def test_a_load_takes_the_spare_and_the_pool_starts_a_replacement(pool: SparePool) -> None:
    pool.resize(1)
    assert pool.wait_ready(60)
    (spare,) = pool.pids()
    remote = runners.start("process", "p", PROBE)
    try:
        assert remote.pid == spare  # the started worker was used: no start-up for this load
        assert torch.equal(remote(torch.ones(1, 8)), probe()(torch.ones(1, 8)))
        assert pool.wait_ready(60)
        assert pool.pids() != [spare] and len(pool.pids()) == 1
    finally:
        remote.stop()


def test_a_spare_learns_the_kernels_sys_path_and_folder_at_load_time(
    pool: SparePool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pool.resize(1)
    assert pool.wait_ready(60)
    (tmp_path / "late_module.py").write_text("import torch\n\ndef make():\n    return torch.nn.Linear(3, 2)\n")
    monkeypatch.syspath_prepend(str(tmp_path))  # after the spare started
    monkeypatch.chdir(tmp_path)
    remote = runners.start("process", "late", "late_module:make")
    try:
        assert remote.attribute("in_features") == 3
    finally:
        remote.stop()


def test_a_spare_started_under_another_environment_is_not_used(
    pool: SparePool, monkeypatch: pytest.MonkeyPatch
) -> None:
    pool.resize(1)
    assert pool.wait_ready(60)
    (stale,) = pool.pids()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # read when torch starts: the spare cannot adopt it
    assert pool.take() is None
    assert wait_gone(stale)


def test_resize_stops_spares_and_refuses_nonsense(pool: SparePool) -> None:
    pool.resize(2)
    assert pool.wait_ready(90)
    spares = pool.pids()
    assert len(spares) == 2
    pool.resize(0)
    assert all(wait_gone(pid) for pid in spares)
    assert pool.ready() == 0
    for bad in (-1, 9, 1.5, True, "2"):
        with pytest.raises(InvalidArgumentError, match="whole number from 0 to 8"):
            pool.resize(bad)  # type: ignore[arg-type]
