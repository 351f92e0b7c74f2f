"""Keep-alive: idle models unload on time, uses push the deadline, and one timer thread never polls."""

from __future__ import annotations

import gc
import threading
import time
import weakref
from typing import Any

import pytest

from nbmodels import InvalidArgumentError
from nbmodels.core import Event, ModelManager
from nbmodels.core.policy.keepalive import KeepAliveTimer, deadline, earliest


class FakeClock:
    def __init__(self) -> None:
        self.now = 10_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def mgr(clock: FakeClock) -> Any:
    """A manager on a clock the test moves; the test calls the timer's check itself (its thread is stopped)."""
    manager = ModelManager(clock=clock)
    manager._timer.stop()
    yield manager
    manager.cleanup()


def expired(mgr: ModelManager) -> list[Event]:
    seen: list[Event] = []
    mgr.subscribe(lambda event: seen.append(event) if event.kind == "expired" else None)
    return seen


def test_the_deadline_rules() -> None:
    assert deadline(100.0, 30.0) == 130.0
    assert deadline(100.0, None) is None  # forever
    assert deadline(100.0, 30.0, pinned=True) is None
    assert deadline(100.0, 30.0, busy=True) is None  # in use: the clock starts when the use ends
    assert earliest([None, 5.0, 3.0]) == 3.0 and earliest([None]) is None


def test_an_idle_model_unloads_after_its_keep_alive(mgr: ModelManager, clock: FakeClock) -> None:
    seen = expired(mgr)
    mgr.load("a", "demo:mlp", keep_alive="30m")
    gone = weakref.ref(mgr.get("a"))
    info = mgr.info("a")
    assert info.keep_alive == 1800.0 and info.unload_at == clock.now + 1800
    clock.now += 1799
    assert mgr._expire_due(clock.now) == info.unload_at  # not yet: the next deadline is its own
    clock.now += 1
    assert mgr._expire_due(clock.now) is None
    assert "a" not in mgr and gone() is None
    assert [e.name for e in seen] == ["a"]
    assert seen[0].reason == "a: unloaded by keep-alive after 30m idle (keep_alive 30m)"
    assert seen[0].report is not None and seen[0].report.ok


def test_a_use_resets_the_clock(mgr: ModelManager, clock: FakeClock) -> None:
    mgr.load("a", "demo:mlp", keep_alive=60)
    clock.now += 50
    mgr.get("a")
    clock.now += 50
    assert mgr._expire_due(clock.now) == clock.now + 10  # 60 s after the get
    mgr.load("a")  # a hit is a use too
    clock.now += 59
    mgr._expire_due(clock.now)
    assert "a" in mgr
    mgr.mark_used("a")  # what a handle does on every use
    clock.now += 59
    mgr._expire_due(clock.now)
    assert "a" in mgr


def test_pinned_and_busy_models_never_expire(mgr: ModelManager, clock: FakeClock) -> None:
    mgr.load("pinned", "demo:mlp", keep_alive=0, pin=True)
    mgr.get("pinned")  # used once: keep-alive 0 now counts
    mgr.load("busy", "demo:mlp", keep_alive=0, seed=1)
    with mgr.using("busy"):  # a call through its handle is running
        clock.now += 3600
        assert mgr._expire_due(clock.now) is None
        assert mgr.info("busy").in_use and mgr.info("busy").unload_at is None
    assert mgr.info("busy").unload_at == clock.now  # idle from the end of the call
    mgr._expire_due(clock.now)
    assert [i.name for i in mgr.list()] == ["pinned"]
    mgr.unpin("pinned")
    mgr._expire_due(clock.now)
    assert len(mgr) == 0


def test_a_use_scope_keeps_its_models_until_it_closes(mgr: ModelManager, clock: FakeClock) -> None:
    """A cell is a scope: keep_alive=0 unloads the model when the cell that used it ends."""
    scope = mgr.use_scope()
    scope.open()
    mgr.load("cell", "demo:mlp", keep_alive=0)
    mgr.load("other", "demo:mlp", keep_alive=0, seed=1)
    mgr.get("cell"), mgr.get("other")  # used in the cell that loaded them
    scope.close()
    scope.open()
    mgr.get("cell")  # used in the next cell too
    clock.now += 10
    mgr._expire_due(clock.now)
    assert [i.name for i in mgr.list()] == ["cell"]  # "other" was idle since the first cell ended
    scope.open()  # opening twice counts once
    scope.close()
    mgr._expire_due(clock.now)
    assert len(mgr) == 0


def test_a_hit_may_change_the_keep_alive_and_the_default_applies_to_new_loads(
    mgr: ModelManager, clock: FakeClock
) -> None:
    assert mgr.keep_alive is None
    mgr.keep_alive = "5m"
    mgr.load("a", "demo:mlp")
    assert mgr.info("a").keep_alive == 300
    mgr.load("a", keep_alive=-1)
    assert mgr.info("a").keep_alive is None and mgr.info("a").unload_at is None
    mgr.register("r", "demo:mlp", keep_alive="1h")
    mgr.load("r")
    assert mgr.info("r").keep_alive == 3600
    with pytest.raises(InvalidArgumentError, match="'30m'"):
        mgr.load("b", "demo:mlp", keep_alive="soon")
    with pytest.raises(InvalidArgumentError):
        mgr.register("bad", "demo:mlp", keep_alive="soon")
    assert "b" not in mgr and "bad" not in mgr.registered() and mgr.loading() == []


def test_the_timer_unloads_on_time_from_its_own_thread() -> None:
    mgr = ModelManager()
    seen = expired(mgr)
    done = threading.Event()
    mgr.subscribe(lambda event: done.set() if event.kind == "expired" else None)
    started = time.time()
    mgr.load("a", "demo:mlp", keep_alive=0.3)
    assert done.wait(10)
    took = time.time() - started
    assert 0.25 <= took < 5
    assert "a" not in mgr and [e.name for e in seen] == ["a"]
    wakes = mgr._timer.wakeups
    assert wakes <= 2  # it slept until the deadline (one wake, two if the GIL was slow to come back)
    for _ in range(50):
        if not mgr._timer.running:
            break
        time.sleep(0.02)
    assert not mgr._timer.running  # nothing left to expire: the thread ended


def test_the_timer_does_not_wake_for_uses_or_later_deadlines() -> None:
    calls: list[float] = []

    class Owner:
        def expire(self, now: float) -> float | None:
            calls.append(now)
            return None

    owner = Owner()
    timer = KeepAliveTimer(owner.expire)
    timer.schedule(time.time() + 3600)
    for _ in range(100):
        timer.schedule(time.time() + 7200)  # later: the earlier deadline stays, nothing wakes
    time.sleep(0.2)
    assert timer.wakeups == 0 and calls == [] and timer.running
    timer.schedule(time.time() + 0.05)  # sooner: one wake to take it, one at the deadline
    time.sleep(0.4)
    assert calls and timer.wakeups <= 3
    timer.stop()
    assert not timer.running


def test_the_timer_holds_its_manager_weakly_and_stops_with_it() -> None:
    mgr = ModelManager()
    mgr.load("a", "demo:mlp", keep_alive=3600)
    timer = mgr._timer
    assert timer.running
    ref = weakref.ref(mgr)
    del mgr
    gc.collect()
    assert ref() is None
    for _ in range(50):
        if not timer.running:
            break
        time.sleep(0.02)
    assert not timer.running


def test_cleanup_ends_the_timer_thread() -> None:
    mgr = ModelManager()
    mgr.load("a", "demo:mlp", keep_alive=3600)
    assert mgr._timer.running
    mgr.cleanup()
    for _ in range(50):
        if not mgr._timer.running:
            break
        time.sleep(0.02)
    assert not mgr._timer.running
    mgr.load("b", "demo:mlp", keep_alive=3600)  # a later keep-alive starts it again
    assert mgr._timer.running
    mgr.cleanup()


def test_expiry_is_safe_with_a_load_in_flight(mgr: ModelManager, clock: FakeClock) -> None:
    """The timer unloads without the manager lock: a slow load of another name goes on, and a reload in
    flight of the same name is not touched."""
    mgr.load("idle", "demo:mlp", keep_alive=1)
    release = threading.Event()
    entered = threading.Event()

    def slow() -> Any:
        entered.set()
        release.wait(30)
        from nbmodels.core import demo

        return demo.mlp()

    loader = threading.Thread(target=mgr.load, args=("slow", slow), kwargs={"keep_alive": 1})
    loader.start()
    assert entered.wait(30)
    reload = threading.Thread(target=mgr.load, args=("idle", slow), kwargs={"reload": True, "keep_alive": 1})
    clock.now += 5
    mgr._expire_due(clock.now)  # "idle" is due; "slow" is still loading
    assert "idle" not in mgr and mgr.loading() == ["slow"]
    reload.start()
    release.set()
    loader.join(30)
    reload.join(30)
    assert sorted(i.name for i in mgr.list()) == ["idle", "slow"] and mgr.loading() == []
    assert mgr._expire_due(clock.now) is not None  # both fresh: their deadlines lie ahead


def test_keep_alive_zero_counts_from_the_end_of_the_first_use_not_the_load(mgr: ModelManager, clock: FakeClock) -> None:
    """``m = %load_model x demo:mlp --keep-alive 0`` in one cell, ``m(x)`` in the next: the load is no use."""
    scope = mgr.use_scope()
    scope.open()
    mgr.load("m", "demo:mlp", keep_alive=0)
    scope.close()  # the loading cell ends
    clock.now += 60
    mgr._expire_due(clock.now)
    assert "m" in mgr and mgr.info("m").unloads == "after use"
    scope.open()
    mgr.mark_used("m")  # m(x) through its handle
    mgr._expire_due(clock.now)
    assert "m" in mgr  # not while the cell runs
    scope.close()
    mgr._expire_due(clock.now)
    assert "m" not in mgr  # idle from the end of the first use
