"""Weak subscriptions: the manager never keeps a subscriber alive; a dropped one stops and is forgotten."""

from __future__ import annotations

import gc
import weakref

from nbmodels import Event, ModelManager


class Follower:
    """A subscriber the way the panel is one: a bound method of an object with a life of its own."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def on_event(self, event: Event) -> None:
        self.seen.append(event.kind)


def test_a_weak_subscriber_gets_the_events(manager: ModelManager) -> None:
    follower = Follower()
    manager.subscribe(follower.on_event, weak=True)
    manager.load("a", "demo:mlp", hidden=8)
    assert follower.seen == ["load_started", "load_finished"]


def test_the_manager_does_not_keep_a_weak_subscriber_alive(manager: ModelManager) -> None:
    follower = Follower()
    manager.subscribe(follower.on_event, weak=True)
    gone = weakref.ref(follower)
    del follower
    gc.collect()
    assert gone() is None, "the manager still holds the subscriber"
    manager.load("a", "demo:mlp", hidden=8)  # the dead entry is skipped and dropped, nothing fails
    assert manager._subscribers == []


def test_a_strong_subscriber_is_kept_alive_as_before(manager: ModelManager) -> None:
    follower = Follower()
    manager.subscribe(follower.on_event)
    kept = weakref.ref(follower)
    del follower
    gc.collect()
    manager.load("a", "demo:mlp", hidden=8)
    survivor = kept()
    assert survivor is not None
    assert survivor.seen == ["load_started", "load_finished"]


def test_unsubscribing_a_weak_subscriber_stops_it(manager: ModelManager) -> None:
    follower = Follower()
    unsubscribe = manager.subscribe(follower.on_event, weak=True)
    unsubscribe()
    unsubscribe()  # twice is harmless
    manager.load("a", "demo:mlp", hidden=8)
    assert follower.seen == []
    assert manager._subscribers == []


def test_a_plain_function_can_be_weak_too(manager: ModelManager) -> None:
    seen: list[str] = []

    def on_event(event: Event) -> None:
        seen.append(event.kind)

    manager.subscribe(on_event, weak=True)
    manager.load("a", "demo:mlp", hidden=8)
    assert seen == ["load_started", "load_finished"]


def test_one_callback_subscribed_twice_is_unsubscribed_once_each(manager: ModelManager) -> None:
    seen: list[str] = []
    first = manager.subscribe(seen.append)
    manager.subscribe(seen.append)
    first()
    manager.load("a", "demo:mlp", hidden=8)
    assert len(seen) == 2  # the second subscription still gets both events


def test_a_dropped_weak_subscriber_costs_no_call(manager: ModelManager) -> None:
    calls: list[int] = []

    class Counting:
        def on_event(self, event: Event) -> None:
            calls.append(1)

    for _ in range(5):
        manager.subscribe(Counting().on_event, weak=True)  # dropped at once
    gc.collect()
    manager.load("a", "demo:mlp", hidden=8)
    manager.unload("a")
    assert calls == []
    assert manager._subscribers == []
