"""Events: what subscribers see, in order; failing subscribers; events never hold a model."""

from __future__ import annotations

import gc
import logging
import weakref
from typing import Any

import pytest
import torch

from nbmodels import Event, ModelManager
from nbmodels.errors import ModelLoadError, SourceError


def tiny() -> torch.nn.Module:
    return torch.nn.Linear(4, 4)


def kinds(events: list[Event]) -> list[tuple[str, str | None]]:
    return [(event.kind, event.name) for event in events]


def test_events_arrive_in_order_with_names(manager: ModelManager) -> None:
    events: list[Event] = []
    manager.subscribe(events.append)

    manager.load("a", tiny)
    manager.load("a", tiny)  # a hit changes nothing: no event
    with pytest.raises(ModelLoadError):
        manager.load("bad", lambda: None)
    manager.load("b", "demo:mlp", hidden=8)
    manager.unload("a")
    manager.cleanup()

    assert kinds(events) == [
        ("load_started", "a"),
        ("load_finished", "a"),
        ("load_started", "bad"),
        ("load_failed", "bad"),
        ("load_started", "b"),
        ("load_finished", "b"),
        ("unloaded", "a"),
        ("cleanup", None),
    ]
    finished = events[1]
    assert finished.info is not None and finished.info.name == "a" and finished.info.class_name == "Linear"
    failed = events[3]
    assert failed.error is not None and "returned None" in failed.error
    unloaded, cleanup = events[6], events[7]
    assert unloaded.report is not None and unloaded.report.released == ("a",)
    assert cleanup.report is not None and cleanup.report.released == ("b",)


def test_a_reload_is_an_unload_then_a_load(manager: ModelManager) -> None:
    manager.load("m", tiny)
    events: list[Event] = []
    manager.subscribe(events.append)
    manager.load("m", "demo:mlp", hidden=8, reload=True)
    assert kinds(events) == [("unloaded", "m"), ("load_started", "m"), ("load_finished", "m")]


def test_a_move_is_announced(manager: ModelManager) -> None:
    manager.load("m", tiny)
    events: list[Event] = []
    manager.subscribe(events.append)
    manager.move("m", "meta")
    assert kinds(events) == [("moved", "m")]
    assert events[0].info is not None and events[0].info.devices == ("meta",)


def test_a_source_refused_up_front_starts_nothing(manager: ModelManager) -> None:
    events: list[Event] = []
    manager.subscribe(events.append)
    with pytest.raises(SourceError):
        manager.load("m", "demo:nosuch")
    assert events == []


def test_unsubscribe_stops_the_events(manager: ModelManager) -> None:
    events: list[Event] = []
    unsubscribe = manager.subscribe(events.append)
    manager.load("a", tiny)
    unsubscribe()
    unsubscribe()  # twice is harmless
    manager.load("b", tiny)
    manager.cleanup()
    assert kinds(events) == [("load_started", "a"), ("load_finished", "a")]


def test_a_failing_subscriber_is_logged_and_breaks_nothing(
    manager: ModelManager, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[str] = []

    def broken(event: Event) -> None:
        raise RuntimeError(f"subscriber bug on {event.kind}")

    manager.subscribe(broken)
    manager.subscribe(lambda event: seen.append(event.kind))
    with caplog.at_level(logging.ERROR, logger="nbmodels"):
        loaded = manager.load("a", tiny) is not None
        report = manager.unload("a")
    assert loaded and report.released == ("a",)
    assert "a" not in manager
    assert seen == ["load_started", "load_finished", "unloaded"]  # later subscribers still hear everything
    failures = [r for r in caplog.records if r.name == "nbmodels" and r.levelno == logging.ERROR]
    assert len(failures) == 3
    # the traceback as text, not the traceback: its frames would keep the release's locals (and a model) alive
    assert all(r.exc_info is None and "RuntimeError: subscriber bug" in r.getMessage() for r in failures)
    assert "load_started" in failures[0].getMessage()


def test_a_subscriber_may_call_back_into_the_manager(manager: ModelManager) -> None:
    listed: list[list[str]] = []
    manager.subscribe(lambda event: listed.append([info.name for info in manager.list()]))
    manager.load("a", tiny)
    manager.unload("a")
    assert listed == [[], ["a"], []]


def test_events_hold_no_model(manager: ModelManager) -> None:
    events: list[Event] = []
    manager.subscribe(events.append)
    ref = weakref.ref(manager.load("m", "demo:mlp", hidden=8))
    manager.load("n", tiny)
    manager.unload("m")
    manager.cleanup()
    assert len(events) == 6
    assert ref() is None  # every event is still held by the list, the model is gone

    def holds_a_module(obj: Any, depth: int = 0) -> bool:
        if isinstance(obj, torch.nn.Module | torch.Tensor):
            return True
        if depth > 3:
            return False
        return any(holds_a_module(child, depth + 1) for child in gc.get_referents(obj))

    assert not any(holds_a_module(event) for event in events)


def test_the_core_logs_to_nbmodels_and_never_prints(
    manager: ModelManager, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="nbmodels"):
        held = manager.load("m", "demo:mlp", hidden=8)
        with pytest.raises(ModelLoadError):
            manager.load("bad", lambda: None)
        manager.register("r", "demo:mlp")
        manager.cleanup()
    assert capsys.readouterr() == ("", "")
    messages = [r.getMessage() for r in caplog.records if r.name == "nbmodels"]
    assert any(m.startswith("loaded m: Sequential") for m in messages)
    assert any(m.startswith("loading bad failed") for m in messages)
    assert any(m.startswith("m is still alive") for m in messages)
    assert any(m.startswith("cleanup: released 1 model(s): m") for m in messages)
    del held
