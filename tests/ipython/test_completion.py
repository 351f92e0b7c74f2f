"""Tab completion of model names through IPython's matcher API v2, on a real shell's completer."""

from __future__ import annotations

import warnings

import pytest
from IPython.core.completer import provisionalcompleter
from IPython.core.interactiveshell import InteractiveShell

from nbmodels import ModelManager
from nbmodels.ipython import completion


def complete(ip: InteractiveShell, line: str) -> list[str]:
    """What a Jupyter frontend gets for the cursor at the end of ``line`` (the kernel's API)."""
    with provisionalcompleter():
        found = list(ip.Completer.completions(line, len(line)))
    return sorted(line[: c.start] + c.text for c in found)


@pytest.fixture
def names(ip: InteractiveShell, mgr: ModelManager) -> None:
    ip.run_line_magic("load_model", "alpha demo:mlp")
    ip.run_line_magic("load_model", "alpine demo:mlp")
    mgr.register("beta", "demo:mlp")  # registered, not loaded


def test_load_model_completes_loaded_and_registered_names(ip: InteractiveShell, names: None) -> None:
    assert complete(ip, "%load_model ") == ["%load_model alpha", "%load_model alpine", "%load_model beta"]
    assert complete(ip, "%load_model al") == ["%load_model alpha", "%load_model alpine"]


def test_unload_and_info_complete_loaded_names_only(ip: InteractiveShell, names: None) -> None:
    assert complete(ip, "%unload_model ") == ["%unload_model alpha", "%unload_model alpine"]
    assert complete(ip, "%model_info alpi") == ["%model_info alpine"]


def test_completes_after_an_assignment_and_without_the_percent(ip: InteractiveShell, names: None) -> None:
    assert complete(ip, "m = %load_model b") == ["m = %load_model beta"]
    assert complete(ip, "unload_model alph") == ["unload_model alpha"]


def test_other_matchers_are_suppressed_where_names_match(ip: InteractiveShell, names: None) -> None:
    with provisionalcompleter():
        found = list(ip.Completer.completions("%unload_model a", 15))
    assert {c.type for c in found} == {"model"}


def test_legacy_complete_api_also_offers_names(ip: InteractiveShell, names: None) -> None:
    with warnings.catch_warnings():  # IPython marks this API pending deprecation; terminals still use it
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        text, matches = ip.complete("", "%unload_model alp", 17)
    assert text == "alp" and sorted(matches) == ["alpha", "alpine"]


def test_nothing_is_offered_for_other_arguments(ip: InteractiveShell, names: None) -> None:
    with provisionalcompleter():
        found = list(ip.Completer.completions("%load_model x al", 16))
    assert not [c for c in found if c.type == "model"]


def test_names_follow_the_manager(ip: InteractiveShell, names: None) -> None:
    ip.run_line_magic("unload_model", "alpine")
    assert complete(ip, "%unload_model al") == ["%unload_model alpha"]


def test_unloading_the_extension_removes_the_matcher(ip: InteractiveShell, names: None) -> None:
    ids = [getattr(m, "matcher_identifier", None) for m in ip.Completer.custom_matchers]
    assert ids.count(completion.IDENTIFIER) == 1
    ip.run_line_magic("unload_ext", "nbmodels")
    ids = [getattr(m, "matcher_identifier", None) for m in ip.Completer.custom_matchers]
    assert completion.IDENTIFIER not in ids
    with provisionalcompleter():
        found = list(ip.Completer.completions("%unload_model al", 16))
    assert not [c for c in found if c.type == "model"]
