"""Memory budgets per device, and how many models may be loaded at once.

A budget is what nbmodels' models may take on a device: bytes, or a fraction
of the device's total memory (resolved against a reading when a decision is
made, so a fraction means the same on every machine). ``max_loaded_models``
caps the count, as ollama's ``OLLAMA_MAX_LOADED_MODELS`` does (0: no cap).
Everything here is a pure function of its inputs: the manager passes in what
the devices hold.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from nbmodels.core.devices import parse_device_name
from nbmodels.core.policy.sizes import format_size, parse_size
from nbmodels.errors import InvalidArgumentError

Budget = int | float  # bytes, or a fraction of the device's total

BUDGET_HINT = "e.g. {'cpu': '8GiB', 'cuda:0': 0.8} or 'cpu=8GiB,cuda:0=0.8'"


def budget_device(device: Any) -> str:
    """A device a budget can be set for, written as the manager writes it: ``cpu``, ``cuda:0``, ``mps``.

    The device need not exist on this machine: a profile shared between machines
    sets budgets for GPUs that some of them lack, and those constrain nothing.
    """
    kind, index = parse_device_name(device)
    if kind in ("auto", "meta"):
        raise InvalidArgumentError(f"a budget is for a real device ('cpu', 'cuda:0'), not {device!r}")
    if kind == "cuda":
        return f"cuda:{index or 0}"
    return kind


def parse_budgets(value: Any) -> dict[str, Budget]:
    """``{device: bytes or fraction}`` from a mapping, or from text: ``"cpu=8GiB,cuda:0=0.8"`` (``""`` for none)."""
    if value is None:
        return {}
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return {}
        pairs: dict[str, Any] = {}
        for item in text.split(","):
            device, sep, size = item.partition("=")
            if not sep or not device.strip() or not size.strip():
                raise InvalidArgumentError(f"max_memory {value!r}: {item.strip()!r} is not DEVICE=SIZE; {BUDGET_HINT}")
            pairs[device.strip()] = size.strip()
        value = pairs
    if not isinstance(value, Mapping):
        raise InvalidArgumentError(
            f"max_memory takes a dict of device to size, not a {type(value).__name__}; {BUDGET_HINT}"
        )
    budgets: dict[str, Budget] = {}
    for device, size in value.items():
        name = budget_device(device)
        if name in budgets:
            raise InvalidArgumentError(f"max_memory names {name} twice ({device!r}); give each device once")
        if size is None:  # {"cuda:0": None}: no budget for that device
            continue
        budgets[name] = parse_size(size, what=f"max_memory[{name!r}]")
    return budgets


def resolve(budget: Budget, total: int | None) -> int | None:
    """A budget in bytes; a fraction of a device whose total is unknown constrains nothing (None)."""
    if isinstance(budget, float):
        return None if total is None else int(budget * total)
    return budget


def describe(budgets: Mapping[str, Budget]) -> str:
    """``cpu 8.0 GiB, cuda:0 80% of the device`` (or ``none``)."""
    return ", ".join(f"{device} {format_size(size)}" for device, size in sorted(budgets.items())) or "none"


def check_count(value: Any) -> int:
    """``max_loaded_models``: a whole number, 0 (or None) for no cap."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidArgumentError(
            f"max_loaded_models {value!r} must be a whole number of models (0 or None: no limit)"
        )
    return value


@dataclass(frozen=True)
class Usage:
    """What one device holds, as the policy counts it (bytes): loaded models, loads in flight, survivors.

    Survivors are released models that something still keeps alive: their memory
    has not come back, so it still counts against the budget.
    """

    loaded: int = 0
    reserved: int = 0
    survivors: int = 0

    @property
    def total(self) -> int:
        return self.loaded + self.reserved + self.survivors


@dataclass(frozen=True)
class Limits:
    """The budgets in force: bytes per device (already resolved) and the model count (0: none)."""

    bytes_by_device: dict[str, int] = field(default_factory=dict)
    max_models: int = 0

    def over(self, used: Mapping[str, int], need: Mapping[str, int], *, everywhere: bool = False) -> dict[str, int]:
        """Bytes by which devices would exceed their budgets with ``need`` added.

        Only the devices ``need`` puts bytes on, unless ``everywhere`` (a budget was
        lowered): a load onto the CPU is not refused because a model the user moved
        to a GPU by hand went over that GPU's budget.
        """
        over = {}
        for device, limit in self.bytes_by_device.items():
            if not everywhere and need.get(device, 0) <= 0:
                continue
            excess = used.get(device, 0) + need.get(device, 0) - limit
            if excess > 0:
                over[device] = excess
        return over


__all__ = [
    "BUDGET_HINT",
    "Budget",
    "Limits",
    "Usage",
    "budget_device",
    "check_count",
    "describe",
    "parse_budgets",
    "resolve",
]
