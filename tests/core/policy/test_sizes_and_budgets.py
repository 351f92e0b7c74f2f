"""Sizes, durations and budgets as users write them: what each spelling means, and one clear error otherwise."""

from __future__ import annotations

import pytest

from nbmodels.core.policy.budget import Limits, check_count, describe, parse_budgets, resolve
from nbmodels.core.policy.sizes import format_duration, parse_duration, parse_size
from nbmodels.errors import InvalidArgumentError

GiB = 2**30


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("8GiB", 8 * GiB),
        ("8 GiB", 8 * GiB),
        ("8GB", 8 * 10**9),  # accelerate's reading: GB is decimal
        ("512MiB", 512 * 2**20),
        ("1.5g", 1_500_000_000),
        ("1024", 1024),
        (1024, 1024),
        ("1e9", 10**9),
        ("2_000", 2000),
        (0.8, 0.8),
        ("0.8", 0.8),
        ("80%", 0.8),
        ("100%", 1.0),
        (1.0, 1.0),
    ],
)
def test_sizes_are_bytes_or_fractions_of_the_device(text: object, expected: float) -> None:
    value = parse_size(text)
    assert value == expected
    assert isinstance(value, type(expected))  # an int is bytes, a float a fraction


@pytest.mark.parametrize("text", ["abc", "8XB", "2.5", 0, -5, 1.5, "150%", "0%", True, None, [], "GiB", float("nan")])
def test_a_bad_size_is_one_clear_error(text: object) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        parse_size(text, what="max_memory['cpu']")
    message = str(info.value)
    assert "max_memory['cpu']" in message
    assert "'8GiB'" in message  # shows a spelling that works


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        (300, 300.0),
        (0, 0.0),
        ("0", 0.0),
        ("90s", 90.0),
        ("30m", 1800.0),
        ("1h30m", 5400.0),
        ("1h 30m", 5400.0),
        ("2.5h", 9000.0),
        ("1d", 86400.0),
        ("-1", None),
        (-1, None),
        ("-5m", None),  # ollama: any negative duration keeps the model forever
        ("forever", None),
        (float("inf"), None),
    ],
)
def test_durations_are_seconds_or_forever(text: object, seconds: float | None) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["abc", "5x", "m5", "", "1h-", True, None, float("nan"), "--5"])
def test_a_bad_duration_is_one_clear_error(text: object) -> None:
    with pytest.raises(InvalidArgumentError, match=r"'30m'"):
        parse_duration(text)


def test_durations_read_back_as_people_write_them() -> None:
    assert format_duration(None) == "forever"
    assert format_duration(0) == "0s"
    assert format_duration(0.3) == "0.3s"
    assert format_duration(90) == "1m 30s"
    assert format_duration(1800) == "30m"
    assert format_duration(7200) == "2h"
    assert format_duration(200_000) == "2d 7h"


def test_budgets_from_a_dict_or_from_the_environment_text() -> None:
    expected = {"cpu": 8 * GiB, "cuda:0": 0.8}
    assert parse_budgets({"cpu": "8GiB", "cuda:0": 0.8}) == expected
    assert parse_budgets("cpu=8GiB, cuda:0=0.8") == expected
    assert parse_budgets({"cuda": "1GiB"}) == {"cuda:0": GiB}  # written as the manager writes devices
    assert parse_budgets({"CPU": 100, "cuda:1": None}) == {"cpu": 100}  # None: no budget for that device
    assert parse_budgets("") == parse_budgets(None) == {}
    # a device this machine lacks is accepted: a profile shared between machines names GPUs some lack
    assert parse_budgets({"cuda:7": "1GiB"}) == {"cuda:7": GiB}


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ({"gpu": "1GiB"}, "torch calls a GPU 'cuda'"),
        ({"auto": "1GiB"}, "real device"),
        ({"cuda": 1, "cuda:0": 2}, "twice"),
        ("cpu", "DEVICE=SIZE"),
        ("cpu=", "DEVICE=SIZE"),
        (["cpu", 1], "dict of device to size"),
        ({"cpu": "lots"}, r"max_memory\['cpu'\] 'lots' is not a size"),
    ],
)
def test_a_bad_budget_says_what_is_wrong(value: object, words: str) -> None:
    with pytest.raises(InvalidArgumentError, match=words):
        parse_budgets(value)


def test_a_fraction_needs_the_device_total_and_constrains_nothing_without_it() -> None:
    assert resolve(0.5, 1000) == 500
    assert resolve(0.5, None) is None
    assert resolve(300, None) == 300
    assert describe({"cpu": GiB, "cuda:0": 0.8}) == "cpu 1.0 GiB, cuda:0 80% of the device"


def test_max_loaded_models_is_a_whole_number() -> None:
    assert check_count(None) == 0
    assert check_count(3) == 3
    for bad in (-1, 1.5, True, "3"):
        with pytest.raises(InvalidArgumentError, match="whole number"):
            check_count(bad)


def test_only_the_devices_a_load_needs_are_checked_unless_a_budget_was_lowered() -> None:
    limits = Limits({"cpu": 100, "cuda:0": 50})
    used = {"cpu": 80, "cuda:0": 70}  # cuda:0 is over: a model moved there by hand
    assert limits.over(used, {"cpu": 10}) == {}
    assert limits.over(used, {"cpu": 30}) == {"cpu": 10}
    assert limits.over(used, {}, everywhere=True) == {"cuda:0": 20}
