"""An interrupt at any moment of a worker's start leaves no process, no socket and no half-loaded model behind.

Two ways in: KeyboardInterrupt raised at each named step of
:meth:`WorkerProcess.spawn` (every window, deterministically), and a real
signal after a range of delays (the windows real timing hits). After each, no
worker child of this process may be left, zombies included, and this
process's open file descriptors come back to what they were while the
exception (and its traceback) is still held.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from types import FrameType

import psutil
import pytest

from nbmodels import ModelManager
from nbmodels.core.runners import process as process_module
from nbmodels.core.runners.process import STEPS, WorkerProcess


def workers() -> set[int]:
    """Worker children of this process, zombies included (a zombie is a process nobody reaped)."""
    found = set()
    for child in psutil.Process().children(recursive=True):
        try:
            if "nbmodels.core.runners.worker" in " ".join(child.cmdline()) or child.status() == psutil.STATUS_ZOMBIE:
                found.add(child.pid)
        except psutil.Error:
            continue
    return found


def fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def settle(before_workers: set[int], before_fds: int, timeout: float = 20.0) -> tuple[set[int], int]:
    """Wait for the kill to land and the output threads to close their pipes; return what is left."""
    deadline = time.monotonic() + timeout
    while True:
        left, opened = workers() - before_workers, fds() - before_fds
        if (not left and opened <= 0) or time.monotonic() > deadline:
            return left, opened
        time.sleep(0.05)


@pytest.fixture
def interrupt_at() -> Iterator[list[str]]:
    """Set the step at which spawn() is interrupted: ``interrupt_at.append(step)``."""
    at: list[str] = []

    def hook(step: str) -> None:
        if at and step == at[-1]:
            raise KeyboardInterrupt(f"interrupted at {step}")

    process_module.step_hook = hook
    try:
        yield at
    finally:
        process_module.step_hook = None


@pytest.mark.parametrize("step", STEPS)
def test_an_interrupt_at_each_step_of_a_start_leaves_nothing(step: str, interrupt_at: list[str]) -> None:
    before_workers, before_fds = workers(), fds()
    interrupt_at.append(step)
    with pytest.raises(KeyboardInterrupt) as caught:
        WorkerProcess.spawn()
    assert str(caught.value) == f"interrupted at {step}"
    left, opened = settle(before_workers, before_fds)  # the traceback is still held here
    assert left == set(), f"worker(s) left after an interrupt at {step}: {left}"
    assert opened <= 0, f"{opened} file descriptor(s) still open after an interrupt at {step}"


@pytest.mark.parametrize("step", STEPS)
def test_an_interrupted_isolated_load_changes_nothing_in_the_manager(step: str, interrupt_at: list[str]) -> None:
    manager = ModelManager()
    before_workers = workers()
    interrupt_at.append(step)
    with pytest.raises(KeyboardInterrupt):
        manager.load("m", "demo:mlp", hidden=16, runner="process")
    assert manager.list() == [] and manager.loading() == []
    interrupt_at.clear()
    left, _ = settle(before_workers, 10**6)
    assert left == set()
    model = manager.load("m", "demo:mlp", hidden=16, runner="process")  # and the next load works
    assert [i.name for i in manager.list()] == ["m"]
    del model
    manager.cleanup()
    assert settle(before_workers, 10**6)[0] == set()


def test_a_real_signal_after_any_delay_leaves_nothing() -> None:
    """SIGALRM raises KeyboardInterrupt wherever spawn() is: loop over delays until the windows are hit."""
    reached: list[str] = []
    process_module.step_hook = reached.append

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    hit: set[str] = set()
    completed = 0
    try:
        for delay in (0.0005, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4, 0.8, 1.5, 3.0, 6.0):
            before_workers, before_fds = workers(), fds()
            reached.clear()
            signal.setitimer(signal.ITIMER_REAL, delay)
            try:
                worker = WorkerProcess.spawn()
            except KeyboardInterrupt:
                hit.add(reached[-1] if reached else "before pipe")
            else:
                signal.setitimer(signal.ITIMER_REAL, 0)
                completed += 1
                worker.kill()
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            left, opened = settle(before_workers, before_fds)
            assert left == set(), f"worker(s) left after an interrupt {delay} s into a start: {left}"
            assert opened <= 0, f"{opened} file descriptor(s) left after an interrupt {delay} s into a start"
    finally:
        signal.signal(signal.SIGALRM, previous)
        process_module.step_hook = None
    print(f"windows hit by a real signal: {sorted(hit)}; starts completed: {completed}")
    assert hit  # some starts were really interrupted (which windows depends on the load: the named steps cover each)
