"""Built-in demo models: real torch modules, deterministic, sized by keyword, no download.

``demo:mlp`` and ``demo:transformer`` let every example, test and benchmark
run on a fresh machine with nothing but torch.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import Any

from nbmodels.errors import InvalidArgumentError


def _seeded(seed: int, build: Callable[[], Any]) -> Any:
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def _positive_root(a: float, b: float, c: float) -> float:
    """The positive root of ``a*x**2 + b*x + c`` (or of ``b*x + c`` when ``a`` is 0)."""
    if a == 0:
        return -c / b
    return (-b + math.sqrt(b * b - 4 * a * c)) / (2 * a)


def _target_parameters(model: str, size_mb: Any) -> float:
    if isinstance(size_mb, bool) or not isinstance(size_mb, int | float) or not 0 < size_mb < math.inf:
        raise InvalidArgumentError(f"demo:{model} needs size_mb > 0 (a number of megabytes), got {size_mb!r}")
    return size_mb * 1024 * 1024 / 4  # float32 parameters


def _check_counts(model: str, **counts: tuple[Any, int]) -> None:
    """Each ``key=(value, least)`` must be a whole number >= least: ``hidden=abc`` fails here, not deep in torch."""
    for key, (value, least) in counts.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise InvalidArgumentError(f"demo:{model} needs {key} >= {least} (a whole number), got {value!r}")


def mlp(
    *,
    in_features: int = 64,
    hidden: int = 256,
    layers: int = 2,
    out_features: int = 10,
    size_mb: float | None = None,
    seed: int = 0,
) -> Any:
    """A ReLU multilayer perceptron. ``size_mb`` picks ``hidden`` so float32 weights take about that much."""
    from torch import nn

    _check_counts(
        "mlp", in_features=(in_features, 1), hidden=(hidden, 1), layers=(layers, 1), out_features=(out_features, 1)
    )
    _check_counts("mlp", seed=(seed, 0))
    if size_mb is not None:
        # parameters = (layers-1)*h^2 + (in + layers + out)*h + out, solved for h (at least 8).
        target = _target_parameters("mlp", size_mb)
        root = _positive_root(layers - 1, in_features + layers + out_features, out_features - target)
        hidden = max(8, round(root))

    def build() -> nn.Module:
        dims = [in_features] + [hidden] * layers
        stack: list[nn.Module] = []
        for a, b in itertools.pairwise(dims):
            stack += [nn.Linear(a, b), nn.ReLU()]
        stack.append(nn.Linear(hidden, out_features))
        return nn.Sequential(*stack)

    return _seeded(seed, build)


def _transformer_class() -> type:
    """The demo transformer's class, imported on first use so that torch is imported only then.

    It lives at module level in :mod:`nbmodels.core.demo_models`: ``torch.save(model)``
    pickles a class by where it is defined, and a class local to a function cannot be found again.
    """
    from nbmodels.core.demo_models import DemoTransformer

    return DemoTransformer


def transformer(
    *,
    vocab: int = 1000,
    d_model: int = 64,
    layers: int = 2,
    heads: int = 4,
    max_len: int = 128,
    tie_weights: bool = True,
    size_mb: float | None = None,
    seed: int = 0,
) -> Any:
    """A tiny causal transformer LM; ``tie_weights`` shares the embedding with the head.

    ``size_mb`` picks ``d_model`` (a multiple of ``heads``) so float32 weights take about that much.
    """
    _check_counts("transformer", vocab=(vocab, 1), d_model=(d_model, 1), layers=(layers, 1), heads=(heads, 1))
    _check_counts("transformer", max_len=(max_len, 1), seed=(seed, 0))
    if size_mb is not None:
        # Each encoder layer holds 12*d^2 + 13*d parameters; embeddings (and an untied head) d per row.
        target = _target_parameters("transformer", size_mb)
        rows = vocab + max_len + (0 if tie_weights else vocab)
        root = _positive_root(12 * layers, 13 * layers + rows, -target)
        d_model = max(heads, round(root / heads) * heads)
    if d_model % heads:
        raise InvalidArgumentError(f"demo:transformer needs d_model divisible by heads, got {d_model} and {heads}")
    cls = _transformer_class()
    return _seeded(seed, lambda: cls(vocab, d_model, layers, heads, max_len, tie_weights))


DEMO_MODELS: dict[str, Callable[..., Any]] = {"mlp": mlp, "transformer": transformer}
