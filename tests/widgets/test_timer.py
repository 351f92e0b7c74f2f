"""The refresh timer: ticks at the delay its callback asks for, never keeps its owner alive, stops."""

from __future__ import annotations

import gc
import threading
import time
import weakref

import pytest

from nbmodels.widgets import timer as timer_module
from nbmodels.widgets.timer import RefreshTimer

WAIT = 30.0


class Owner:
    def __init__(self, delay: float | None = 0.01, stop_after: int | None = None) -> None:
        self.ticks = 0
        self.delay = delay
        self.stop_after = stop_after
        self.ticked = threading.Event()
        self.timer = RefreshTimer(self.tick)

    def tick(self) -> float | None:
        self.ticks += 1
        self.ticked.set()
        if self.stop_after is not None and self.ticks >= self.stop_after:
            return None
        return self.delay


def test_it_ticks_until_stopped() -> None:
    owner = Owner()
    owner.timer.start(0.0)
    assert owner.ticked.wait(WAIT)
    thread = owner.timer.thread
    assert thread is not None and thread.daemon and owner.timer.running
    owner.timer.stop(timeout=WAIT)
    assert not thread.is_alive()
    ticks = owner.ticks
    time.sleep(0.05)
    assert owner.ticks == ticks


def test_a_tick_returning_none_stops_it() -> None:
    owner = Owner(stop_after=3)
    owner.timer.start(0.0)
    thread = owner.timer.thread
    assert thread is not None
    thread.join(WAIT)
    assert owner.ticks == 3
    assert not owner.timer.running


def test_the_timer_does_not_keep_its_owner_alive() -> None:
    owner = Owner(delay=0.01)
    owner.timer.start(0.0)
    assert owner.ticked.wait(WAIT)
    thread = owner.timer.thread
    assert thread is not None
    gone = weakref.ref(owner)
    del owner
    gc.collect()
    assert gone() is None, "the timer thread keeps its owner alive"
    thread.join(WAIT)
    assert not thread.is_alive()  # and it ends at its next tick


def test_starting_twice_runs_one_thread() -> None:
    owner = Owner(delay=0.05)
    owner.timer.start(0.0)
    first = owner.timer.thread
    owner.timer.start(0.0)
    assert owner.timer.thread is first
    owner.timer.stop(timeout=WAIT)


def test_stop_all_ends_every_timer_at_exit() -> None:
    owners = [Owner(delay=0.01) for _ in range(3)]
    for owner in owners:
        owner.timer.start(0.0)
    threads = [owner.timer.thread for owner in owners]
    timer_module.stop_all(timeout=WAIT)
    for thread in threads:
        assert thread is not None
        thread.join(WAIT)
        assert not thread.is_alive()
    assert not any(owner.timer.running for owner in owners)


def test_a_failing_tick_is_logged_and_stops_the_timer(caplog: pytest.LogCaptureFixture) -> None:
    class Broken:
        def __init__(self) -> None:
            self.timer = RefreshTimer(self.tick)

        def tick(self) -> float | None:
            raise RuntimeError("boom")

    broken = Broken()
    broken.timer.start(0.0)
    thread = broken.timer.thread
    assert thread is not None
    thread.join(WAIT)
    assert not thread.is_alive()
    assert "a panel refresh failed; the timer stops" in caplog.text
