"""The ModelManager API on real torch models: load, hits, conflicts, reading, release and reports."""

from __future__ import annotations

import gc
import sys
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import nbmodels
from nbmodels import (
    ModelConflictError,
    ModelInfo,
    ModelList,
    ModelManager,
    ModelNotFoundError,
    ReleaseReport,
    get_manager,
)
from nbmodels.errors import InvalidArgumentError, ModelLoadError, NbModelsError, SourceError


def tiny(width: int = 4) -> torch.nn.Module:
    return torch.nn.Linear(width, width)


# --- the process-wide manager ------------------------------------------------------


def test_get_manager_and_get_instance_are_one_process_wide_object() -> None:
    assert get_manager() is ModelManager.get_instance() is nbmodels.get_manager()
    assert isinstance(get_manager(), ModelManager)


def test_is_initialized_turns_true_on_first_register_or_load() -> None:
    fresh = ModelManager()
    assert not fresh.is_initialized()
    fresh.register("m", "demo:mlp")
    assert fresh.is_initialized()
    other = ModelManager()
    other.load("m", tiny)
    assert other.is_initialized()
    other.cleanup()


def test_separate_managers_are_independent(manager: ModelManager) -> None:
    manager.load("m", tiny)
    assert "m" not in ModelManager()
    assert manager is not get_manager()


# --- register and load --------------------------------------------------------------


def test_register_then_load_by_name_merges_defaults(manager: ModelManager) -> None:
    manager.register("enc", "demo:mlp", hidden=32, layers=3, dtype="float64")
    assert manager.registered() == ["enc"]
    assert "enc" not in manager  # registering loads nothing

    model = manager.load("enc")
    assert model[0].out_features == 32
    assert sum(isinstance(m, torch.nn.Linear) for m in model) == 4  # 3 layers + head
    assert {p.dtype for p in model.parameters()} == {torch.float64}
    info = manager.info("enc")
    assert info.source == "demo:mlp"
    assert info.dtypes == ("float64",)


def test_keywords_given_to_load_override_registered_defaults(manager: ModelManager) -> None:
    manager.register("enc", "demo:mlp", hidden=32, out_features=3)
    model = manager.load("enc", hidden=16)
    assert model[0].out_features == 16
    assert model[-1].out_features == 3  # the default nobody overrode still applies


def test_registered_trust_and_pin_are_settings_not_factory_keywords(manager: ModelManager) -> None:
    # Both used to reach the factory as keywords and break the load.
    manager.register("enc", "demo:mlp", hidden=8, pin=True, trust=True)
    manager.load("enc")
    assert manager.info("enc").pinned


def test_load_returns_the_model_and_a_second_load_is_a_hit(manager: ModelManager) -> None:
    calls: list[int] = []

    def factory() -> torch.nn.Module:
        calls.append(1)
        return tiny()

    first = manager.load("m", factory)
    assert isinstance(first, torch.nn.Linear)
    assert manager.info("m").hits == 0
    assert manager.load("m", factory) is first
    assert manager.load("m") is first  # by name alone
    assert manager.get("m") is first
    assert len(calls) == 1
    assert manager.info("m").hits == 3


def test_a_hit_with_the_same_explicit_settings_is_no_conflict(manager: ModelManager) -> None:
    model = manager.load("m", "demo:mlp", hidden=8, device="cpu", dtype="float32")
    assert manager.load("m", "demo:mlp", hidden=8, device="cpu", dtype=torch.float32) is model


@pytest.mark.parametrize(
    ("ask", "named"),
    [
        ({"source": "demo:transformer"}, "it came from demo:mlp, this asks for demo:transformer"),
        ({"source": "demo:mlp", "hidden": 16}, "it was loaded with hidden=8, this asks for hidden=16"),
        ({"dtype": "float64"}, "it is float32, this asks for float64"),
        ({"device": "meta"}, "it is on cpu, this asks for meta"),
    ],
)
def test_asking_for_a_loaded_name_differently_is_a_conflict(
    manager: ModelManager, ask: dict[str, Any], named: str
) -> None:
    model = manager.load("m", "demo:mlp", hidden=8)
    with pytest.raises(ModelConflictError, match="'m' is already loaded") as caught:
        manager.load("m", **ask)
    message = str(caught.value)
    assert named in message
    assert "None" not in message and "(loaded from" not in message
    assert "reload=True" in message
    assert manager.get("m") is model  # untouched
    assert len(manager) == 1


def test_reload_replaces_the_model_and_releases_the_old_one(manager: ModelManager) -> None:
    old_ref = weakref.ref(manager.load("m", "demo:mlp", hidden=8))
    assert old_ref() is not None

    new = manager.load("m", "demo:transformer", reload=True)
    assert type(new).__name__ == "DemoTransformer"
    assert manager.get("m") is new
    assert manager.info("m").source == "demo:transformer"
    assert old_ref() is None  # the old model is gone, not merely forgotten
    assert len(manager) == 1


def test_reload_of_the_same_source_builds_a_fresh_object(manager: ModelManager) -> None:
    first_ref = weakref.ref(manager.load("m", "demo:mlp", hidden=8))
    second = manager.load("m", "demo:mlp", hidden=8, reload=True)
    assert first_ref() is None
    assert manager.get("m") is second


# --- reading -------------------------------------------------------------------------


def test_get_list_info_contains_and_len(manager: ModelManager) -> None:
    assert len(manager) == 0
    assert manager.list() == []
    manager.load("b", "demo:mlp", hidden=8)
    manager.load("a", "demo:transformer", d_model=16, heads=2, vocab=50)

    listed = manager.list()
    assert isinstance(listed, ModelList)
    assert all(isinstance(info, ModelInfo) for info in listed)
    assert [info.name for info in listed] == ["b", "a"]  # load order, oldest first
    assert "a" in manager and "b" in manager and "c" not in manager
    assert 42 not in manager
    assert len(manager) == 2

    info = manager.info("b")
    assert info == listed[0]
    assert info.class_name == "Sequential"
    assert info.devices == ("cpu",) and info.device == "cpu"
    assert info.dtypes == ("float32",)
    model = manager.get("b")
    assert info.parameters == sum(p.numel() for p in model.parameters())
    assert info.bytes_by_device == {"cpu": sum(p.numel() * 4 for p in model.parameters())}
    assert info.total_bytes == info.bytes_by_device["cpu"]
    assert info.cuda_allocated_delta == {}  # CUDA never started
    assert info.rss_delta is not None
    assert info.load_seconds >= 0
    assert info.loaded_at <= info.last_used


def test_get_and_info_count_uses_differently(manager: ModelManager) -> None:
    manager.load("m", tiny)
    before = manager.info("m")
    manager.info("m")
    assert manager.info("m").hits == 0  # looking is not using
    manager.get("m")
    after = manager.info("m")
    assert after.hits == 1
    assert after.last_used >= before.last_used


def test_get_info_of_an_unknown_name_names_it_and_what_is_loaded(manager: ModelManager) -> None:
    manager.load("known", tiny)
    for call in (manager.get, manager.info, manager.unload):
        with pytest.raises(ModelNotFoundError, match="'ghost'") as caught:
            call("ghost")
        assert "known" in str(caught.value)
        assert isinstance(caught.value, KeyError)


# --- pin and move --------------------------------------------------------------------


def test_pin_is_recorded_and_a_later_hit_can_pin(manager: ModelManager) -> None:
    manager.load("pinned", tiny, pin=True)
    manager.load("free", tiny)
    assert manager.info("pinned").pinned
    assert not manager.info("free").pinned
    manager.load("free", pin=True)
    assert manager.info("free").pinned
    manager.load("pinned")  # a hit without pin= does not unpin
    assert manager.info("pinned").pinned


def test_move_changes_the_device_and_the_accounting(manager: ModelManager) -> None:
    model = manager.load("m", "demo:mlp", hidden=16)
    assert manager.move("m", "cpu").bytes_by_device == manager.info("m").bytes_by_device
    info = manager.move("m", "meta")  # the one other device every CPU machine has
    assert info.devices == ("meta",)
    assert info.bytes_by_device == {"meta": 0}
    assert manager.info("m") == info
    assert all(p.device.type == "meta" for p in manager.get("m").parameters())
    assert manager.get("m") is model  # nn.Module.to moves in place
    assert manager.load("m", device="meta") is model  # the new placement is the loaded setting
    with pytest.raises(ModelConflictError, match="it is on meta, this asks for cpu"):
        manager.load("m", device="cpu")


def test_move_to_a_missing_device_changes_nothing(manager: ModelManager) -> None:
    manager.load("m", tiny)
    before = manager.info("m")
    with pytest.raises(InvalidArgumentError, match="cuda:7"):
        manager.move("m", "cuda:7")
    assert manager.info("m") == before
    with pytest.raises(ModelNotFoundError):
        manager.move("ghost", "cpu")


# --- objects that are not torch modules ---------------------------------------------------


class Tokenizer:
    """Any Python object may be managed."""

    def __init__(self) -> None:
        self.vocab = {"a": 0, "b": 1}


@pytest.mark.parametrize(
    ("factory", "class_name"),
    [(Tokenizer, "Tokenizer"), (lambda: {"threshold": 0.5}, "dict"), (lambda: "a plain string", "str")],
)
def test_any_object_can_be_managed_and_unknown_fields_are_none(
    manager: ModelManager, factory: Any, class_name: str
) -> None:
    obj = manager.load("thing", factory)
    assert manager.get("thing") is obj
    info = manager.info("thing")
    assert info.class_name == class_name
    assert info.parameters is None
    assert info.total_bytes is None
    assert info.device is None
    assert info.devices == () and info.dtypes == ()
    assert "?" in str(info)  # shown as unknown, not as 0
    del obj
    report = manager.unload("thing")
    assert report.released == ("thing",)
    assert report.freed_bytes == {}
    assert "thing" not in manager


def test_a_non_torch_object_cannot_take_a_device(manager: ModelManager) -> None:
    with pytest.raises(InvalidArgumentError, match=r"has no \.to\(\)"):
        manager.load("thing", Tokenizer, device="cpu")
    assert "thing" not in manager and manager.loading() == []


# --- unload and cleanup ---------------------------------------------------------------


def test_unload_releases_the_model_and_reports_it(manager: ModelManager) -> None:
    ref = weakref.ref(manager.load("m", "demo:mlp", hidden=64))
    accounted = manager.info("m").bytes_by_device
    manager.load("other", tiny)

    report = manager.unload("m")
    assert isinstance(report, ReleaseReport)
    assert report.released == ("m",)
    assert report.freed_bytes == accounted
    assert report.ok and report.still_alive == () and report.errors == {}
    assert not report.gc_collected  # nothing survived the drop, so no gc pass was needed
    assert ref() is None
    assert "m" not in manager and "other" in manager
    with pytest.raises(ModelNotFoundError):
        manager.unload("m")


def test_unload_of_a_model_held_elsewhere_names_it_as_still_alive(manager: ModelManager) -> None:
    kept = manager.load("m", "demo:mlp", hidden=8)
    report = manager.unload("m")
    assert "m" not in manager  # the manager lets go either way
    assert not report.ok
    assert [alive.name for alive in report.still_alive] == ["m"]
    assert report.freed_bytes == {}  # nothing is claimed as freed while the model lives
    assert "m is still alive" in str(report)
    del kept


def test_cleanup_releases_everything_and_is_idempotent(manager: ModelManager) -> None:
    refs = [weakref.ref(manager.load(name, "demo:mlp", hidden=8, seed=i)) for i, name in enumerate("abc")]
    manager.register("r", "demo:mlp")
    expected = sum(info.total_bytes or 0 for info in manager.list())

    report = manager.cleanup()
    assert sorted(report.released) == ["a", "b", "c"]
    assert report.freed_total == expected
    assert report.ok
    assert len(manager) == 0 and manager.list() == []
    assert all(ref() is None for ref in refs)
    assert manager.registered() == ["r"]  # registrations are recipes, not memory: they stay

    again = manager.cleanup()
    assert again.released == () and again.freed_bytes == {} and again.ok
    assert not again.gc_collected
    assert str(again).startswith("nothing to release")


def test_one_failing_release_hook_never_stops_the_others(manager: ModelManager) -> None:
    closed: list[str] = []

    def close(model: Any) -> None:
        closed.append(type(model).__name__)

    def broken(model: Any) -> None:
        raise OSError("the file handle is already closed")

    refs = [
        weakref.ref(manager.load("a", tiny, on_release=close)),
        weakref.ref(manager.load("b", "demo:mlp", hidden=8, on_release=broken)),
        weakref.ref(manager.load("c", "demo:transformer", d_model=16, heads=2, on_release=close)),
    ]
    report = manager.cleanup()
    assert sorted(report.released) == ["a", "b", "c"]
    assert list(report.errors) == ["b"]
    assert "OSError" in report.errors["b"] and "already closed" in report.errors["b"]
    assert sorted(closed) == ["DemoTransformer", "Linear"]
    assert all(ref() is None for ref in refs)  # the failing one is released too
    assert len(manager) == 0
    assert not report.ok
    assert "error releasing b" in str(report)


@pytest.fixture
def collections() -> Iterator[list[int]]:
    """Counts full gc passes (automatic collection switched off so only explicit ones count)."""
    passes: list[int] = []

    def count(phase: str, info: dict[str, int]) -> None:
        if phase == "start" and info["generation"] == 2:
            passes.append(1)

    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    gc.callbacks.append(count)
    try:
        yield passes
    finally:
        gc.callbacks.remove(count)
        if was_enabled:
            gc.enable()


def test_cleanup_runs_no_gc_pass_when_weak_references_show_all_is_gone(
    manager: ModelManager, collections: list[int]
) -> None:
    for name in "abc":
        manager.load(name, "demo:mlp", hidden=8)
    report = manager.cleanup()
    assert collections == []
    assert not report.gc_collected
    assert report.ok


def test_a_model_in_a_reference_cycle_needs_exactly_one_gc_pass(manager: ModelManager, collections: list[int]) -> None:
    def cyclic() -> torch.nn.Module:
        model = tiny()
        model.me = [model]  # a plain attribute: the model now holds itself
        return model

    ref = weakref.ref(manager.load("cyclic", cyclic))
    manager.load("plain", tiny)
    manager.load("other", tiny)
    report = manager.cleanup()
    assert collections == [1]
    assert report.gc_collected
    assert ref() is None
    assert report.ok


def test_a_model_held_by_a_variable_costs_no_gc_pass_and_is_named(
    manager: ModelManager, collections: list[int]
) -> None:
    script = vars(sys.modules["__main__"])  # a script's variables: a place the search names
    script["held"] = manager.load("held", tiny)
    try:
        manager.load("free", tiny)
        report = manager.cleanup()
        assert collections == []  # a full collection costs a fifth of a second in a heavy notebook: not needed here
        assert [alive.name for alive in report.still_alive] == ["held"]
        assert [h.path for h in report.still_alive[0].holders] == ["held"]
        assert sorted(report.released) == ["free", "held"]
    finally:
        del script["held"]


def test_a_holder_the_walk_cannot_see_costs_one_gc_pass_before_it_is_named(
    manager: ModelManager, collections: list[int]
) -> None:
    """A local of a running function is invisible to the walk: it could be a cycle, so one gc pass checks first."""
    held = manager.load("held", tiny)
    report = manager.cleanup()
    assert collections == [1]
    assert [h.kind for h in report.still_alive[0].holders] == ["unseen"]
    del held


# --- reprs --------------------------------------------------------------------------------


def test_model_info_text_and_html(manager: ModelManager) -> None:
    manager.load("a<b>", "demo:mlp", hidden=8)
    info = manager.info("a<b>")
    text = str(info)
    for header in ("name", "source", "class", "device", "params", "size"):
        assert header in text.splitlines()[0]
    assert "a<b>" in text and "demo:mlp" in text and "Sequential" in text and "cpu" in text
    assert f"{info.parameters:,}" in text
    assert "a<b>" in info.summary() and "Sequential on cpu" in info.summary()
    html = info._repr_html_()
    assert html.startswith("<table") and "a&lt;b&gt;" in html and "<b>" not in html


def test_model_list_text_and_html_have_a_total_row(manager: ModelManager) -> None:
    assert str(manager.list()) == "no models loaded"
    manager.load("one", tiny)
    manager.load("two", tiny)
    text = str(manager.list())
    lines = text.splitlines()
    assert lines[2].startswith("one") and lines[3].startswith("two") and lines[4].startswith("total")
    assert "40" in lines[4]  # 2 x (16 weights + 4 biases)
    assert manager.list()._repr_html_().count("<tr>") == 4  # header, two models, total


def test_release_report_text_and_html(manager: ModelManager) -> None:
    manager.load("m", "demo:mlp", hidden=8)
    kept = manager.load("kept", tiny)
    report = manager.cleanup()
    text = str(report)
    assert "released 2 model(s)" in text
    assert "freed (storages that died): cpu" in text
    assert "measured: RSS" in text
    assert "kept is still alive" in text
    html = report._repr_html_()
    assert html.startswith('<ul class="nbmodels-report">') and "kept is still alive" in html
    assert report.rss_freed == report.rss_before - report.rss_after
    del kept


def test_a_reload_whose_source_cannot_work_keeps_the_loaded_model(manager: ModelManager, tmp_path: Path) -> None:
    model = manager.load("m", "demo:mlp", hidden=8)
    before = manager.info("m")
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"")
    for source, keywords in [(broken, {}), ("demo:mlp", {"hiden": 8}), ("demo:nosuch", {}), (tmp_path / "no.pt", {})]:
        with pytest.raises(NbModelsError):
            manager.load("m", source, reload=True, **keywords)
    with pytest.raises(InvalidArgumentError):
        manager.load("m", device="gpu", reload=True)
    assert manager.info("m") == before  # the same load, not one use more
    assert manager.get("m") is model


def test_a_reload_that_fails_in_its_loader_says_the_old_model_is_gone(manager: ModelManager) -> None:
    old = weakref.ref(manager.load("m", "demo:mlp", hidden=8))

    def broken() -> nn.Module:
        raise OSError("the weights are on a disk that is gone")

    with pytest.raises(ModelLoadError) as caught:
        manager.load("m", broken, reload=True)
    message = str(caught.value)
    assert "loading 'm' from" in message and "disk that is gone" in message
    assert message.endswith("the reload released the previous 'm', so it is no longer loaded")
    assert "m" not in manager and old() is None


def test_errors_raised_inside_a_loader_name_the_model(manager: ModelManager) -> None:
    def inner() -> nn.Module:
        return manager.load("inner", "demo:mlp", layers=0)

    with pytest.raises(InvalidArgumentError) as caught:
        manager.load("outer", inner)
    assert str(caught.value).startswith("loading 'outer' from ")
    assert "loading 'inner' from demo:mlp: demo:mlp needs layers >= 1" in str(caught.value)
    assert len(manager) == 0 and manager.loading() == []


def test_a_reload_note_after_a_message_that_ends_in_a_full_stop_reads_as_one_sentence(
    manager: ModelManager,
) -> None:
    manager.load("m", "demo:mlp", hidden=8)

    def broken() -> nn.Module:
        raise SourceError("the file ends early.")

    with pytest.raises(SourceError) as caught:
        manager.load("m", broken, reload=True)
    assert "the file ends early; the reload released the previous 'm'" in str(caught.value)
