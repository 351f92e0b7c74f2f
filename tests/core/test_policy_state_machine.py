"""The memory policy as a state machine: random sequences of everything a notebook does, invariants after each.

Rules: register, load (from one thread or several at once), get, hold a model in a variable and let it go,
unload, cleanup, pin, unpin, offload, budget and model-count changes, and keep-alive expiry (a clock the
machine moves). Invariants after every step:

- ``list()`` equals what is really loaded, and no name is loaded twice;
- what counts against a budget (loaded models, and released ones still held) never exceeds it;
- a pinned model is never evicted or expired;
- no load is left pending, and no reservation, after any failure.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any

import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from nbmodels import BudgetExceededError, ModelConflictError, ModelNotFoundError
from nbmodels.core import ModelManager
from tests.soak import examples

NAMES = st.sampled_from(["a", "b", "c", "d", "e"])
SIZES = st.sampled_from([0.05, 0.1, 0.2])  # MiB: about 50, 100 and 200 KiB of float32
KEEP = st.sampled_from([None, 0, 5, 60, -1])
ALLOWED = (BudgetExceededError, ModelConflictError, ModelNotFoundError)


class Clock:
    def __init__(self) -> None:
        self.now = 50_000.0

    def __call__(self) -> float:
        return self.now


class PolicyMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = Clock()
        self.mgr = ModelManager(clock=self.clock)
        self.mgr._timer.stop()  # expiry happens when the machine says so, deterministically
        self.pinned: set[str] = set()  # pinned by the machine and neither unpinned nor unloaded by it since
        self.held: dict[str, Any] = {}  # the user's variables
        self.errors: list[BaseException] = []

    def teardown(self) -> None:
        self.held.clear()
        self.mgr.cleanup()

    # --- rules ------------------------------------------------------------------

    @rule(name=NAMES, size=SIZES)
    def register(self, name: str, size: float) -> None:
        self.mgr.register(name, "demo:mlp", size_mb=size)

    def _load(self, name: str, size: float, pin: bool, keep: float | None) -> None:
        try:
            self.mgr.load(name, "demo:mlp", size_mb=size, pin=pin, keep_alive=keep)
        except ALLOWED:
            return
        if pin:
            self.pinned.add(name)

    @rule(name=NAMES, size=SIZES, pin=st.booleans(), keep=KEEP)
    def load(self, name: str, size: float, pin: bool, keep: float | None) -> None:
        self._load(name, size, pin, keep)

    @rule(loads=st.lists(st.tuples(NAMES, SIZES, st.booleans(), KEEP), min_size=2, max_size=4))
    def load_from_threads(self, loads: list[tuple[str, float, bool, float | None]]) -> None:
        errors: list[BaseException] = []
        done: list[tuple[str, bool]] = []

        def one(name: str, size: float, pin: bool, keep: float | None) -> None:
            try:
                self.mgr.load(name, "demo:mlp", size_mb=size, pin=pin, keep_alive=keep)
            except ALLOWED:
                return
            except BaseException as exc:
                errors.append(exc)
                return
            done.append((name, pin))

        threads = [threading.Thread(target=one, args=args) for args in loads]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not any(thread.is_alive() for thread in threads), "a load never returned"
        assert not errors, errors
        self.pinned |= {name for name, pin in done if pin}

    @rule(name=NAMES)
    def get(self, name: str) -> None:
        with contextlib.suppress(ModelNotFoundError):
            self.mgr.get(name)

    @rule(name=NAMES)
    def hold(self, name: str) -> None:
        with contextlib.suppress(ModelNotFoundError):
            self.held[name] = self.mgr.get(name)

    # What is drawn never depends on what happened (loads from threads end in either order): a rule whose
    # arguments or preconditions followed the state would make Hypothesis see a flaky strategy.
    @rule(name=NAMES)
    def let_go(self, name: str) -> None:
        self.held.pop(name, None)

    @rule(name=NAMES)
    def unload(self, name: str) -> None:
        try:
            self.mgr.unload(name)
        except ModelNotFoundError:
            return
        self.pinned.discard(name)

    @rule()
    def cleanup(self) -> None:
        self.mgr.cleanup()
        self.pinned.clear()

    @rule(name=NAMES)
    def pin(self, name: str) -> None:
        try:
            self.mgr.pin(name)
        except ModelNotFoundError:
            return
        self.pinned.add(name)

    @rule(name=NAMES)
    def unpin(self, name: str) -> None:
        try:
            self.mgr.unpin(name)
        except ModelNotFoundError:
            return
        self.pinned.discard(name)

    @rule(name=NAMES)
    def offload(self, name: str) -> None:
        with contextlib.suppress(ModelNotFoundError, BudgetExceededError):
            self.mgr.offload(name)

    @rule(kib=st.one_of(st.none(), st.integers(100, 1200)))
    def set_budget(self, kib: int | None) -> None:
        with contextlib.suppress(BudgetExceededError):
            self.mgr.set_max_memory(None if kib is None else {"cpu": kib * 1024})

    @rule(count=st.integers(0, 4))
    def set_max_models(self, count: int) -> None:
        with contextlib.suppress(BudgetExceededError):
            self.mgr.max_loaded_models = count

    @rule(seconds=st.sampled_from([1, 10, 100]))
    def time_passes(self, seconds: int) -> None:
        self.clock.now += seconds
        self.mgr._expire_due(self.clock.now)

    # --- invariants ---------------------------------------------------------------

    @invariant()
    def listed_is_loaded(self) -> None:
        names = [info.name for info in self.mgr.list()]
        assert len(names) == len(set(names))
        with self.mgr._lock:
            really = {name for name, entry in self.mgr._entries.items() if entry.model is not None}
            assert set(self.mgr._entries) == really
        assert set(names) == really

    @invariant()
    def within_budgets(self) -> None:
        with self.mgr._lock:
            used, count = self.mgr._usage()
            limits = self.mgr._limits()
        for device, limit in limits.bytes_by_device.items():
            assert used.get(device, 0) <= limit, (device, used, limit)
        if limits.max_models:
            assert count <= limits.max_models

    @invariant()
    def pinned_models_stay(self) -> None:
        loaded = {info.name for info in self.mgr.list()}
        assert self.pinned <= loaded, (self.pinned, loaded)
        assert all(info.pinned for info in self.mgr.list() if info.name in self.pinned)

    @invariant()
    def nothing_left_pending(self) -> None:
        assert self.mgr.loading() == []
        assert self.mgr._reserved == {}


TestPolicyMachine = PolicyMachine.TestCase
TestPolicyMachine.settings = settings(
    max_examples=examples(150),
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
