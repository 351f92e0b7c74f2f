"""Loaders the tests name as ``tests.ipython.factories:NAME`` sources."""

from __future__ import annotations

from typing import Any

from torch import nn


def keywords_module(**kwargs: Any) -> nn.Module:
    """A small real module that remembers the keywords it was built with."""
    module = nn.Linear(4, 2)
    module.received = dict(kwargs)
    return module
