"""Fixtures of the runner tests: real worker processes, shared where a test does not end them."""

from __future__ import annotations

import time
from collections.abc import Iterator

import psutil
import pytest

from nbmodels.core import runners
from nbmodels.core.runners import RemoteModel

PROBE = "tests.core.runners.models:probe"


def worker_children() -> list[psutil.Process]:
    """Worker processes started by this test process that still exist."""
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if "nbmodels.core.runners.worker" in " ".join(child.cmdline()) and child.status() != psutil.STATUS_ZOMBIE:
                found.append(child)
        except psutil.Error:
            continue
    return found


def wait_gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.02)
    return False


@pytest.fixture(scope="module")
def shared_probe() -> Iterator[RemoteModel]:
    """One probe worker for the tests that neither stop nor crash it."""
    remote = runners.start("process", "probe", PROBE, spare=False)
    try:
        yield remote
    finally:
        remote.stop()


@pytest.fixture
def fresh_probe() -> Iterator[RemoteModel]:
    """A probe worker of its own, for a test that ends it; stopped (if still alive) afterwards."""
    remote = runners.start("process", "probe", PROBE, spare=False)
    try:
        yield remote
    finally:
        remote.stop()


@pytest.fixture(scope="module", autouse=True)
def no_worker_left_behind() -> Iterator[None]:
    """After each module: every worker its tests started has ended (stopped, crashed or killed)."""
    before = {p.pid for p in worker_children()}
    yield
    left = [p for p in worker_children() if p.pid not in before and not wait_gone(p.pid, 5)]
    assert not left, f"worker processes left behind: {[p.pid for p in left]}"
