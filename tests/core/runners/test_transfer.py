"""What crosses the process boundary and how, checked in one process (no worker needed)."""

from __future__ import annotations

import pickle
import threading

import pytest
import torch

from nbmodels.core.runners import transfer


def roundtrip(obj: object) -> object:
    return transfer.loads(transfer.dumps(obj))


@pytest.mark.parametrize(
    "tensor",
    [
        torch.arange(6, dtype=torch.float32).reshape(2, 3),
        torch.arange(6, dtype=torch.bfloat16),
        torch.tensor([True, False, True]),
        torch.tensor(3.5, dtype=torch.float64),  # 0-dim
        torch.randn(4, 5).t(),  # not contiguous
        torch.arange(4, dtype=torch.int8),
        torch.randn(3, dtype=torch.complex64),
        torch.randn(2, 3, dtype=torch.float16),
    ],
)
def test_small_tensors_travel_inline_with_dtype_shape_and_values(tensor: torch.Tensor) -> None:
    reduced = transfer._reduce_tensor(tensor, results_on_cpu=False)
    assert reduced[0] is transfer._rebuild_inline  # no shared memory for a few bytes
    back = roundtrip(tensor)
    assert isinstance(back, torch.Tensor)
    assert back.dtype == tensor.dtype and back.shape == tensor.shape and torch.equal(back, tensor)
    back.add_(1) if back.dtype != torch.bool else None  # writable, and a copy
    assert not torch.equal(back, tensor) or tensor.dtype == torch.bool


def test_large_tensors_go_through_shared_memory_and_keep_their_values() -> None:
    tensor = torch.randn(1024, 300)  # 1.2 MB > INLINE_BYTES
    reduced = transfer._reduce_tensor(tensor, results_on_cpu=False)
    assert reduced[0] is not transfer._rebuild_inline
    back = roundtrip(tensor)
    assert isinstance(back, torch.Tensor) and torch.equal(back, tensor)
    assert tensor.is_shared()  # its storage moved to shared memory: the other side maps the same pages


def test_autograd_does_not_cross_leaves_keep_requires_grad_and_parameters_stay_parameters() -> None:
    leaf = torch.ones(3, requires_grad=True)
    out = roundtrip(leaf * 2)
    assert isinstance(out, torch.Tensor) and not out.requires_grad
    back = roundtrip(leaf)
    assert isinstance(back, torch.Tensor) and back.requires_grad and back.is_leaf
    parameter = roundtrip(torch.nn.Parameter(torch.zeros(2)))
    assert isinstance(parameter, torch.nn.Parameter) and parameter.requires_grad


def test_objects_defined_in_the_notebook_are_refused_with_what_to_do() -> None:
    # A class made in a notebook cell has __module__ == "__main__", which a worker cannot import.
    notebook_class = type("Batch", (), {"__module__": "__main__"})
    with pytest.raises(transfer.NotTransferable, match=r"'Batch'.*defined in the notebook.*\.py file") as refused:
        transfer.dumps({"batch": notebook_class()})
    assert "__main__.Batch" in refused.value.what


def test_the_first_object_that_cannot_cross_is_named_with_its_place_and_type() -> None:
    with pytest.raises(transfer.NotTransferable) as refused:
        transfer.dumps(((1, 2), {"ok": 1, "lock": threading.Lock()}))
    assert refused.value.what == "[1]['lock'] (_thread.lock)"
    with pytest.raises(transfer.NotTransferable) as refused:
        transfer.dumps(x for x in range(3))
    assert refused.value.what == "a generator"


def test_plain_objects_cross_by_pickle() -> None:
    value = {"ids": [1, 2, 3], "text": "ok", "nested": ({"a": None},), "pi": 3.14}
    assert roundtrip(value) == value
    assert pickle.loads(transfer.dumps(value)) == value
