"""Quantized models keep packed weights outside ``parameters()``: sized, counted and freed all the same."""

from __future__ import annotations

import warnings
import weakref

import pytest
import torch
from torch import nn

from nbmodels.core import ModelManager

SIDE = 2048


def quantized(dtype: torch.dtype = torch.qint8) -> nn.Module:
    """Two Linear(2048, 2048) quantized by quantize_dynamic, as the issue's user had them."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization announces its move to torchao
        model = nn.Sequential(nn.Linear(SIDE, SIDE), nn.ReLU(), nn.Linear(SIDE, SIDE))
        return torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=dtype)


def state_dict_bytes(model: nn.Module) -> int:
    """What the model's state_dict() holds, its packed (weight, bias) pairs unpacked."""
    total = 0
    for value in model.state_dict().values():
        for tensor in value if isinstance(value, tuple) else (value,):
            if isinstance(tensor, torch.Tensor):
                total += tensor.untyped_storage().nbytes()
    return total


def test_a_quantized_model_is_sized_from_its_packed_weights(manager: ModelManager) -> None:
    model = manager.load("q", quantized)
    info = manager.info("q")
    assert info.parameters == 2 * (SIDE * SIDE + SIDE)  # not "0 params"
    assert info.total_bytes == 2 * (SIDE * SIDE * 1 + SIDE * 4)  # int8 weights, float32 biases
    assert info.total_bytes == pytest.approx(state_dict_bytes(model), rel=0.02)
    assert "qint8" in info.dtypes and info.devices == ("cpu",)
    assert "8,392,704 params, 8.0 MiB" in info.summary()


def test_float16_packing_counts_two_bytes_a_weight(manager: ModelManager) -> None:
    manager.load("h", lambda: quantized(torch.float16))
    info = manager.info("h")
    assert info.total_bytes == 2 * (SIDE * SIDE * 2 + SIDE * 4)  # it unpacks to float32, but keeps float16
    assert "float16" in info.dtypes


def test_unloading_a_quantized_model_frees_its_packed_weights(manager: ModelManager) -> None:
    ref = weakref.ref(manager.load("q", quantized))
    report = manager.unload("q")
    assert ref() is None and report.ok, str(report)
    assert report.freed_bytes == {"cpu": 2 * (SIDE * SIDE + SIDE * 4)}  # not "freed 0 B"


def test_budgets_see_packed_weights(manager: ModelManager) -> None:
    manager.load("q", quantized)
    manager.set_max_memory({"cpu": 12 * 2**20})
    manager.load("q2", quantized)  # 16 MiB together: the first has to go
    assert [info.name for info in manager.list()] == ["q2"]


def test_packing_that_cannot_be_measured_says_so_in_words(manager: ModelManager) -> None:
    def lstm() -> nn.Module:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.ao.quantization.quantize_dynamic(nn.Sequential(nn.LSTM(64, 64)), {nn.LSTM}, dtype=torch.qint8)

    manager.load("rnn", lstm)
    info = manager.info("rnn")
    assert info.unmeasured == ("packed weights",)
    assert info.params == "?"
    assert info.size == "size unknown: packed weights" and info.devices == ("cpu",)
    assert "0 params" not in info.summary() and "size unknown: packed weights" in str(manager.list())


def test_a_quantized_part_of_a_composite_counts(manager: ModelManager) -> None:
    manager.load("pair", lambda: {"q": quantized(), "head": nn.Linear(16, 16)})
    info = manager.info("pair")
    assert info.total_bytes == 2 * (SIDE * SIDE + SIDE * 4) + (16 * 16 + 16) * 4
    assert info.parameters == 2 * (SIDE * SIDE + SIDE) + 16 * 16 + 16
