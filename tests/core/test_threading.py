"""Thread safety with real threads, ordered by events, never by sleeps or timings."""

from __future__ import annotations

import sys
import threading
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch

from nbmodels import ModelManager
from nbmodels.errors import ModelLoadError, ModelNotFoundError
from tests.core.conftest import run_bounded

BOUND = 60.0  # seconds: a deadlock guard, never a speed assertion


def tiny() -> torch.nn.Module:
    return torch.nn.Linear(4, 4)


def waiting_in_load(thread: threading.Thread) -> bool:
    """True when ``thread`` is blocked inside ``ModelManager.load`` waiting for another thread's load."""
    frame = sys._current_frames().get(thread.ident or -1)
    in_wait = False
    while frame is not None:
        code = frame.f_code
        if code.co_name == "wait" and code.co_filename.endswith("threading.py"):
            in_wait = True
        if in_wait and code.co_name == "load" and code.co_filename.endswith("manager.py"):
            return True
        frame = frame.f_back
    return False


def wait_until_waiting(threads: list[threading.Thread]) -> None:
    """Block until every thread waits on the load in flight (bounded, so a bug fails instead of hanging)."""
    done = threading.Event()
    for _ in range(int(BOUND * 100)):
        if all(waiting_in_load(t) or not t.is_alive() for t in threads):
            return
        done.wait(0.01)
    raise AssertionError("the threads never started waiting on the load in flight")


@dataclass
class BlockedLoader:
    """A loader that reports it started and then blocks until released (or told to fail)."""

    result: Callable[[], Any] = tiny
    started: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    calls: int = 0
    raise_on_release: BaseException | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self) -> Any:
        with self._lock:
            self.calls += 1
        self.started.set()
        assert self.release.wait(BOUND), "the test never released the loader"
        if self.raise_on_release is not None:
            raise self.raise_on_release
        return self.result()


@dataclass
class Outcome:
    value: Any = None
    error: BaseException | None = None


def start_load(mgr: ModelManager, name: str, source: Any, **kwargs: Any) -> tuple[threading.Thread, Outcome]:
    outcome = Outcome()

    def target() -> None:
        try:
            outcome.value = mgr.load(name, source, **kwargs)
        except BaseException as exc:  # collected for the test, so the thread never dies noisily
            outcome.error = exc

    thread = threading.Thread(target=target, name=f"load-{name}", daemon=True)
    thread.start()
    return thread, outcome


@pytest.fixture
def loaders() -> Iterator[list[BlockedLoader]]:
    """Blocked loaders made by a test; all released at the end, whatever happened."""
    made: list[BlockedLoader] = []
    yield made
    for loader in made:
        loader.release.set()


def blocked(loaders: list[BlockedLoader], **kwargs: Any) -> BlockedLoader:
    loader = BlockedLoader(**kwargs)
    loaders.append(loader)
    return loader


def start_blocked_load(
    mgr: ModelManager, loaders: list[BlockedLoader], name: str, **kwargs: Any
) -> tuple[BlockedLoader, threading.Thread, Outcome]:
    """Start loading ``name`` in a thread with a blocked loader; return once the loader runs."""
    loader = blocked(loaders)
    thread, outcome = start_load(mgr, name, loader, **kwargs)
    assert loader.started.wait(BOUND)
    return loader, thread, outcome


def join(threads: list[threading.Thread]) -> None:
    for thread in threads:
        thread.join(BOUND)
        assert not thread.is_alive(), f"{thread.name} never finished"


# --- single flight ---------------------------------------------------------------------


def test_a_stampede_of_16_threads_calls_the_loader_once(manager: ModelManager, loaders: list[BlockedLoader]) -> None:
    loader = blocked(loaders)
    barrier = threading.Barrier(16)
    results: list[Outcome] = [Outcome() for _ in range(16)]

    def worker(i: int) -> None:
        try:
            barrier.wait(BOUND)
            results[i].value = manager.load("shared", loader)
        except BaseException as exc:
            results[i].error = exc

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(16)]
    for thread in threads:
        thread.start()
    assert loader.started.wait(BOUND)
    # Hold the one load until the 15 others are all waiting on it: a real stampede.
    wait_until_waiting([t for t in threads if not loader_thread_is(t, loader)])
    loader.release.set()
    join(threads)

    assert [r.error for r in results] == [None] * 16
    assert loader.calls == 1
    first = results[0].value
    assert isinstance(first, torch.nn.Linear)
    assert all(r.value is first for r in results)
    assert manager.info("shared").hits == 15
    assert manager.loading() == []


def loader_thread_is(thread: threading.Thread, loader: BlockedLoader) -> bool:
    """True for the thread running ``loader`` (it is blocked inside the loader, not waiting in load)."""
    frame = sys._current_frames().get(thread.ident or -1)
    while frame is not None:
        if frame.f_code is BlockedLoader.__call__.__code__:
            return True
        frame = frame.f_back
    return False


# --- a slow load blocks nothing else ------------------------------------------------------


def test_a_slow_load_blocks_no_reading_and_no_other_load(manager: ModelManager, loaders: list[BlockedLoader]) -> None:
    manager.load("other", tiny)
    slow, thread, outcome = start_blocked_load(manager, loaders, "slow")

    # Each call below must finish while the slow loader is still blocked.
    listed = run_bounded(manager.list, BOUND)
    assert [info.name for info in listed] == ["other"]
    assert run_bounded(lambda: manager.info("other"), BOUND).name == "other"
    assert isinstance(run_bounded(lambda: manager.get("other"), BOUND), torch.nn.Linear)
    assert run_bounded(manager.loading, BOUND) == ["slow"]
    assert run_bounded(lambda: "slow" in manager, BOUND) is False
    assert run_bounded(lambda: len(manager), BOUND) == 1
    third = run_bounded(lambda: manager.load("third", "demo:mlp", hidden=8), BOUND)
    assert isinstance(third, torch.nn.Sequential)
    del third
    assert run_bounded(lambda: manager.unload("third"), BOUND).released == ("third",)
    with pytest.raises(ModelNotFoundError, match="still loading"):
        manager.unload("slow")
    with pytest.raises(ModelNotFoundError):
        manager.info("slow")
    assert thread.is_alive() and not slow.release.is_set()  # the slow one really was in flight throughout

    slow.release.set()
    join([thread])
    assert outcome.error is None
    assert manager.get("slow") is outcome.value
    assert [info.name for info in manager.list()] == ["other", "slow"]


def test_two_slow_loads_of_different_names_run_at_the_same_time(
    manager: ModelManager, loaders: list[BlockedLoader]
) -> None:
    first, second = blocked(loaders), blocked(loaders)
    thread_a, outcome_a = start_load(manager, "a", first)
    thread_b, outcome_b = start_load(manager, "b", second)
    # Both loaders are inside their loader at once: neither waits for the other.
    assert first.started.wait(BOUND) and second.started.wait(BOUND)
    assert sorted(manager.loading()) == ["a", "b"]
    first.release.set()
    second.release.set()
    join([thread_a, thread_b])
    assert outcome_a.error is None and outcome_b.error is None
    assert sorted(info.name for info in manager.list()) == ["a", "b"]


# --- failures ----------------------------------------------------------------------------


def test_a_failed_load_leaves_no_trace_and_every_waiter_gets_the_error(
    manager: ModelManager, loaders: list[BlockedLoader]
) -> None:
    loader = blocked(loaders, raise_on_release=ValueError("the checkpoint is truncated"))
    owner, owner_outcome = start_load(manager, "flaky", loader)
    assert loader.started.wait(BOUND)
    waiters = [start_load(manager, "flaky", loader) for _ in range(4)]
    wait_until_waiting([t for t, _ in waiters])
    loader.release.set()
    join([owner, *(t for t, _ in waiters)])

    errors = [owner_outcome.error, *(o.error for _, o in waiters)]
    assert all(isinstance(e, ModelLoadError) for e in errors)
    assert all("'flaky'" in str(e) and "the checkpoint is truncated" in str(e) for e in errors)
    assert isinstance(errors[0].__cause__, ValueError)
    assert loader.calls == 1
    assert "flaky" not in manager
    assert manager.loading() == []
    assert len(manager) == 0

    manager.load("flaky", tiny)  # nothing pending is left behind: the name loads again
    assert "flaky" in manager


def test_a_keyboard_interrupt_in_a_loader_leaves_the_manager_consistent(
    manager: ModelManager, loaders: list[BlockedLoader]
) -> None:
    manager.load("other", tiny)
    loader = blocked(loaders, raise_on_release=KeyboardInterrupt())
    waiters: list[tuple[threading.Thread, Outcome]] = []

    def join_the_load_then_release() -> None:
        assert loader.started.wait(BOUND)  # the main thread owns the load now
        waiters.extend(start_load(manager, "big", loader) for _ in range(3))
        wait_until_waiting([t for t, _ in waiters])
        loader.release.set()

    helper = threading.Thread(target=join_the_load_then_release, daemon=True)
    helper.start()
    try:
        # The owner is the main thread, as it is when a user presses Ctrl+C in a notebook cell.
        with pytest.raises(KeyboardInterrupt):
            manager.load("big", loader)
    finally:
        loader.release.set()
        join([helper])
        join([t for t, _ in waiters])

    assert len(waiters) == 3
    for _, outcome in waiters:
        assert isinstance(outcome.error, ModelLoadError)
        assert "'big'" in str(outcome.error) and "interrupted" in str(outcome.error)
    assert loader.calls == 1
    assert "big" not in manager and manager.loading() == []
    assert [info.name for info in manager.list()] == ["other"]

    model = manager.load("big", tiny)  # the name can be loaded again
    assert manager.get("big") is model
    del model


def test_a_loader_that_loads_its_own_name_fails_instead_of_deadlocking(manager: ModelManager) -> None:
    def recursive() -> Any:
        return manager.load("self", recursive)

    with pytest.raises(ModelLoadError, match="itself"):
        run_bounded(lambda: manager.load("self", recursive), BOUND)
    assert "self" not in manager and manager.loading() == []


# --- cleanup while loading -----------------------------------------------------------------


def test_cleanup_during_a_load_leaves_consistent_state(manager: ModelManager, loaders: list[BlockedLoader]) -> None:
    manager.load("done", tiny)
    slow, thread, outcome = start_blocked_load(manager, loaders, "slow")

    report = run_bounded(manager.cleanup, BOUND)
    assert report.released == ("done",)
    assert report.pending == ("slow",)
    assert "still loading" in str(report)
    assert len(manager) == 0 and manager.loading() == ["slow"]

    slow.release.set()
    join([thread])
    assert outcome.error is None
    # The load finished normally after the cleanup: it is a loaded model like any other.
    assert manager.get("slow") is outcome.value
    assert manager.loading() == []
    outcome.value = None
    report = manager.cleanup()
    assert report.released == ("slow",) and report.ok
    assert len(manager) == 0


def test_concurrent_cleanups_release_each_model_once(manager: ModelManager) -> None:
    for i in range(8):
        manager.load(f"m{i}", tiny)
    barrier = threading.Barrier(4)
    reports: list[Any] = []
    lock = threading.Lock()

    def clean() -> None:
        barrier.wait(BOUND)
        report = manager.cleanup()
        with lock:
            reports.append(report)

    threads = [threading.Thread(target=clean, daemon=True) for _ in range(4)]
    for thread in threads:
        thread.start()
    join(threads)
    released = sorted(name for report in reports for name in report.released)
    assert released == sorted(f"m{i}" for i in range(8))
    assert all(report.ok for report in reports)
    assert len(manager) == 0


def test_a_reload_asked_during_a_load_of_something_else_still_reloads(
    manager: ModelManager, loaders: list[BlockedLoader]
) -> None:
    slow, owner, owner_outcome = start_blocked_load(manager, loaders, "m")
    reloader, reload_outcome = start_load(manager, "m", "demo:mlp", hidden=8, reload=True)
    wait_until_waiting([reloader])
    slow.release.set()
    join([owner, reloader])

    assert owner_outcome.error is None
    assert reload_outcome.error is None  # reload=True asked for the new source: no conflict
    assert isinstance(reload_outcome.value, torch.nn.Sequential)
    assert manager.get("m") is reload_outcome.value
    assert manager.info("m").source == "demo:mlp"


def test_concurrent_identical_reloads_load_once(manager: ModelManager, loaders: list[BlockedLoader]) -> None:
    manager.load("m", tiny)
    slow, owner, owner_outcome = start_blocked_load(manager, loaders, "m", reload=True)
    second, second_outcome = start_load(manager, "m", slow, reload=True)
    wait_until_waiting([second])
    slow.release.set()
    join([owner, second])
    assert owner_outcome.error is None and second_outcome.error is None
    assert second_outcome.value is owner_outcome.value  # the reload it waited for was the one it wanted
    assert slow.calls == 1


def test_a_model_unloaded_while_it_moves_is_not_put_back(manager: ModelManager) -> None:
    entered, release = threading.Event(), threading.Event()

    class SlowToMove(torch.nn.Linear):
        def to(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
            entered.set()
            assert release.wait(BOUND)
            return super().to(*args, **kwargs)

    ref = weakref.ref(manager.load("m", lambda: SlowToMove(4, 4)))
    events: list[str] = []
    manager.subscribe(lambda event: events.append(event.kind))
    outcome = Outcome()

    def move() -> None:
        try:
            outcome.value = manager.move("m", "cpu")
        except BaseException as exc:
            outcome.error = exc

    mover = threading.Thread(target=move, daemon=True)
    mover.start()
    try:
        assert entered.wait(BOUND)
        report = manager.unload("m")
        assert report.released == ("m",)
    finally:
        release.set()
        join([mover])
    assert isinstance(outcome.error, ModelNotFoundError)
    assert "unloaded while it was being moved" in str(outcome.error)
    assert "m" not in manager and len(manager) == 0
    assert events == ["unloaded"]  # no 'moved' for a model that is gone
    assert ref() is None


def test_naming_a_holder_in_another_thread_does_not_become_a_holder(manager: ModelManager) -> None:
    # Reading a running frame's f_locals (Python < 3.13) snapshots its locals into a dict that outlives
    # ``del``; a holder search that does so would keep the model alive through any kept traceback.
    ref = weakref.ref(manager.load("m", tiny))
    holding, release = threading.Event(), threading.Event()
    outcome = Outcome()

    def hold_then_fail() -> None:
        model = manager.get("m")
        holding.set()
        assert release.wait(BOUND)
        del model
        raise ValueError("the cell failed after dropping the model")

    def run() -> None:
        try:
            hold_then_fail()
        except BaseException as exc:
            outcome.error = exc  # kept, with its traceback, as IPython keeps sys.last_traceback

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        assert holding.wait(BOUND)
        report = manager.unload("m")
        assert [alive.name for alive in report.still_alive] == ["m"]  # truly held at that moment
    finally:
        release.set()
        join([thread])
    assert isinstance(outcome.error, ValueError)
    assert ref() is None, "the holder search left a reference behind"


# --- loads in flight are visible -------------------------------------------------------------


@pytest.mark.parametrize("failure", [None, OSError("disk gone")], ids=["loads", "fails"])
def test_a_load_without_a_source_waits_for_the_load_in_flight(
    manager: ModelManager, loaders: list[BlockedLoader], failure: BaseException | None
) -> None:
    slow = blocked(loaders, raise_on_release=failure)
    owner, owner_outcome = start_load(manager, "slow", slow)
    assert slow.started.wait(BOUND)
    waiter, waiter_outcome = start_load(manager, "slow", None)  # mgr.load("slow"): no source, not registered
    wait_until_waiting([waiter])
    slow.release.set()
    join([owner, waiter])
    assert slow.calls == 1
    if failure is None:  # a hit on what the load in flight made
        assert owner_outcome.error is None and waiter_outcome.error is None
        assert waiter_outcome.value is owner_outcome.value and manager.info("slow").hits == 1
    else:  # the error of the load it waited for, not "no such model"
        assert isinstance(waiter_outcome.error, ModelLoadError) and "disk gone" in str(waiter_outcome.error)
        assert "slow" not in manager and manager.loading() == []


def test_cleanup_wait_waits_for_the_loads_in_flight_then_releases_them(
    manager: ModelManager, loaders: list[BlockedLoader]
) -> None:
    manager.load("done", tiny)
    slow = blocked(loaders)
    thread = threading.Thread(target=lambda: manager.load("slow", slow) and None, daemon=True)  # keeps nothing
    thread.start()
    assert slow.started.wait(BOUND)
    reports: list[Any] = []
    cleaner = threading.Thread(target=lambda: reports.append(manager.cleanup(wait=True)), daemon=True)
    cleaner.start()
    # The cleanup waits on the load: it has released nothing yet, and returns only after the load.
    for _ in range(int(BOUND * 100)):
        frame = sys._current_frames().get(cleaner.ident or -1)
        names = []
        while frame is not None:
            names.append(frame.f_code.co_name)
            frame = frame.f_back
        if "_wait_for_loads" in names and "wait" in names:
            break
        threading.Event().wait(0.01)
    assert cleaner.is_alive() and "done" in manager and reports == []
    slow.release.set()
    join([thread, cleaner])
    report = reports[0]
    assert sorted(report.released) == ["done", "slow"] and report.pending == ()
    assert report.ok, str(report)
    assert len(manager) == 0 and manager.loading() == []


def test_cleanup_wait_inside_a_loader_does_not_wait_for_itself(manager: ModelManager) -> None:
    manager.load("other", tiny)
    reports: list[Any] = []

    def loader() -> torch.nn.Module:
        reports.append(manager.cleanup(wait=True))
        return tiny()

    run_bounded(lambda: manager.load("self", loader), BOUND)
    assert reports[0].released == ("other",) and reports[0].pending == ("self",)
    assert "self" in manager
