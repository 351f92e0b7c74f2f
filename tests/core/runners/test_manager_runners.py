"""Isolated models through the manager: ``load(..., runner="process")`` and its whole life.

Real worker processes on the CPU: the proxy gives what the model in the kernel
gives; ``info``/``list`` say where it runs; unload and cleanup end the worker and
report what came back; a crash there drops the entry, raises WorkerDiedError
where it is used, and the same load works again; a source no worker can rebuild
is refused before anything changes.
"""

from __future__ import annotations

import os
import signal
import time
import weakref
from collections.abc import Iterator

import pytest
import torch

from nbmodels.core import Event, ModelManager
from nbmodels.core.demo import mlp
from nbmodels.errors import InvalidArgumentError, ModelConflictError, SourceError, WorkerDiedError
from tests.core.runners.conftest import wait_gone, worker_children

X = torch.linspace(-1, 1, 2 * 64).reshape(2, 64)


@pytest.fixture
def manager(manager: ModelManager) -> Iterator[ModelManager]:
    """The core's manager fixture (cleaned up afterwards), and no worker may outlive the test."""
    yield manager
    manager.cleanup()
    assert worker_children() == [], "a worker outlived its test"


def test_an_isolated_model_computes_what_the_kernel_would_and_says_where_it_runs(manager: ModelManager) -> None:
    remote = manager.load("m", "demo:mlp", hidden=32, runner="process")
    assert torch.equal(remote(X), mlp(hidden=32)(X))
    info = manager.info("m")
    assert info.runner == "process" and info.pid == remote.pid and info.where == f"worker {remote.pid}"
    assert info.class_name == "Sequential" and info.total_bytes == sum(
        mlp(hidden=32).state_dict()[k].nbytes for k in mlp(hidden=32).state_dict()
    )
    assert "RSS" in info.worker_memory and "private" in info.worker_memory
    assert f"worker {remote.pid}" in str(manager.list())
    assert manager.load("m") is remote  # a hit, wherever it runs


def test_asking_for_another_runner_is_a_conflict_and_a_bad_runner_an_error(manager: ModelManager) -> None:
    manager.load("m", "demo:mlp", hidden=16, runner="process")
    with pytest.raises(ModelConflictError, match="it runs in a worker process, this asks for the kernel"):
        manager.load("m", "demo:mlp", hidden=16, runner="kernel")
    with pytest.raises(InvalidArgumentError, match="unknown runner 'gpu'"):
        manager.load("n", "demo:mlp", runner="gpu")
    assert manager.loading() == [] and [i.name for i in manager.list()] == ["m"]


def test_a_source_no_worker_can_rebuild_is_refused_before_anything_changes(manager: ModelManager) -> None:
    manager.load("m", "demo:mlp", hidden=16, runner="process")
    pid = manager.info("m").pid
    with pytest.raises(SourceError, match=r"is a lambda.*'package.module:factory'"):
        manager.load("m", lambda: torch.nn.Linear(2, 2), runner="process", reload=True)
    assert manager.info("m").pid == pid  # the reload released nothing


def test_unload_ends_the_worker_and_reports_what_came_back(manager: ModelManager) -> None:
    events: list[Event] = []
    manager.subscribe(events.append)
    remote = manager.load("m", "demo:mlp", size_mb=20, runner="process")
    pid = remote.pid
    del remote
    report = manager.unload("m")
    assert report.ok and report.released == ("m",) and wait_gone(pid)
    assert report.stopped["m"].startswith(f"worker {pid} stopped in ")
    assert report.freed_bytes["cpu"] >= 20 * 2**20  # its own memory: the model, and more
    assert f"m: its worker {pid} stopped" in str(report)
    assert [e.kind for e in events] == ["load_started", "load_finished", "unloaded"]


def test_cleanup_ends_every_worker_at_once_and_releases_the_kernel_models_too(manager: ModelManager) -> None:
    for name in ("a", "b", "c"):
        manager.load(name, "demo:mlp", hidden=16, runner="process")
    here = weakref.ref(manager.load("here", "demo:mlp", hidden=16))
    pids = [manager.info(n).pid for n in ("a", "b", "c")]
    started = time.perf_counter()
    report = manager.cleanup()
    assert report.ok and sorted(report.released) == ["a", "b", "c", "here"] and here() is None
    assert all(wait_gone(pid) for pid in pids) and sorted(report.stopped) == ["a", "b", "c"]
    assert time.perf_counter() - started < 2.0 * 3  # in parallel, each within its 2 s stop


def test_a_dry_run_changes_nothing_and_says_the_worker_would_go(manager: ModelManager) -> None:
    manager.load("m", "demo:mlp", hidden=16, runner="process")
    pid = manager.info("m").pid
    report = manager.unload("m", dry_run=True)
    assert report.would_free == ("m",) and "m" in manager and manager.info("m").pid == pid


def test_a_crash_drops_the_entry_says_how_and_the_same_load_works_again(manager: ModelManager) -> None:
    events: list[Event] = []
    manager.subscribe(events.append)
    remote = manager.load("m", "demo:mlp", hidden=16, runner="process")
    os.kill(remote.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while "m" in manager:
        assert time.monotonic() < deadline, "the crash was not noticed"
        time.sleep(0.02)
    assert events[-1].kind == "worker_died" and "SIGKILL" in (events[-1].error or "")
    with pytest.raises(WorkerDiedError, match=r"'m'.*SIGKILL"):
        remote(X)
    assert manager.worker_death("m") is not None
    again = manager.load("m", "demo:mlp", hidden=16, runner="process")
    assert torch.equal(again(X), mlp(hidden=16)(X)) and manager.worker_death("m") is None


def test_the_manager_and_its_reports_keep_no_proxy_alive(manager: ModelManager) -> None:
    remote = weakref.ref(manager.load("m", "demo:mlp", hidden=16, runner="process"))
    report = manager.unload("m")
    assert report.ok and remote() is None
