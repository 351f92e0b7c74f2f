"""Values nobody bounded, bounded: each refusal one line, through the Python API as through the magics."""

from __future__ import annotations

import time

import pytest

from nbmodels import InvalidArgumentError, ModelManager, SourceError
from nbmodels.core.isolation import check_ray_address
from nbmodels.core.policy.sizes import MAX_DURATION, parse_duration
from nbmodels.ipython.config import read_environment
from nbmodels.ipython.names import variable_problem


@pytest.mark.parametrize("value", [1e10, "1e10", "99999999999d", MAX_DURATION + 1, "3653d"])
def test_a_duration_over_ten_years_is_refused(value: object) -> None:
    with pytest.raises(InvalidArgumentError, match="at most 10 years") as caught:
        parse_duration(value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(("value", "seconds"), [("3650d", 3650 * 86400.0), (-1e10, None), ("forever", None)])
def test_ten_years_and_forever_are_still_taken(value: object, seconds: float | None) -> None:
    assert parse_duration(value) == seconds


def test_a_huge_keep_alive_is_refused_and_the_keep_alive_thread_keeps_working(
    manager: ModelManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(InvalidArgumentError):
        manager.load("m", "demo:mlp", hidden=8, keep_alive=1e10)
    assert manager.list() == []
    monkeypatch.setenv("NBMODELS_KEEP_ALIVE", "1e10")
    value, problem = read_environment("keep_alive", "-1")
    assert value == "-1" and "at most 10 years" in problem
    manager.load("m", "demo:mlp", hidden=8, keep_alive=0.2)  # and keep-alive still unloads on time
    deadline = time.monotonic() + 20
    while "m" in manager and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "m" not in manager


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("a\x1b[2Jb", "control"),
        ("a\x00b", "control"),
        ("\u202eevil", "control"),
        ("a\u2066b", "control"),
        ("x" * 201, "at most 200"),
    ],
)
def test_a_model_name_must_be_printable_and_short(manager: ModelManager, name: str, why: str) -> None:
    with pytest.raises(InvalidArgumentError, match=why):
        manager.load(name, "demo:mlp")
    assert manager.list() == []


def test_names_people_use_are_still_taken(manager: ModelManager) -> None:
    for name in ("encoder", "模型", "naïve-model_v2.1", "x" * 200):
        manager.load(name, "demo:mlp", hidden=8)
    assert len(manager.list()) == 4


@pytest.mark.parametrize("source", ["builtins:int", "builtins:print", "builtins:eval", int, print])
def test_a_builtin_is_not_a_model_factory(manager: ModelManager, source: object) -> None:
    with pytest.raises(SourceError, match="Python builtin"):
        manager.load("m", source)
    assert manager.list() == []


@pytest.mark.parametrize("source", ["a" * 5000, "/" + "a" * 300, "./" + "b" * 4000 + ".pt", "x:" + "y" * 5000])
def test_a_source_too_long_for_a_path_is_one_line(manager: ModelManager, source: str) -> None:
    with pytest.raises(SourceError) as caught:
        manager.load("m", source)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("name", "allowed"),
    [
        ("model", True),
        ("enc2", True),
        ("get_ipython", False),
        ("In", False),
        ("Out", False),
        ("_", False),
        ("__", False),
        ("_i", False),
        ("_i12", False),
        ("_12", False),
        ("exit", False),
        ("__builtins__", False),
        ("__name__", False),
        ("print", False),
        ("len", False),
        ("class", False),
        ("match", False),
        ("1bad", False),
        ("x" * 201, False),
    ],
)
def test_as_refuses_names_python_and_ipython_rely_on(name: str, allowed: bool) -> None:
    assert (variable_problem(name) == "") is allowed


@pytest.mark.parametrize(
    ("address", "ok"),
    [
        ("", True),
        ("auto", True),
        ("ray://10.0.0.1:10001", True),
        ("head.cluster.local:6379", True),
        ("[::1]:6379", True),
        ("garbage addr", False),
        ("ray://x", False),
        ("h:0", False),
        ("h:65536", False),
        ("ray://a:1/path", False),
        ("http://a:1", False),
    ],
)
def test_ray_address_is_checked_when_set(address: str, ok: bool) -> None:
    if ok:
        assert check_ray_address(address) == address
    else:
        with pytest.raises(InvalidArgumentError, match="ray://host:port"):
            check_ray_address(address)
