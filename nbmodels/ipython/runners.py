"""The isolated-model settings in a session: ``NBModels.spare_workers`` and ``NBModels.ray_address``.

Both are read when the extension loads and followed when ``%config`` changes them.
Spare workers are started only when asked for (``spare_workers = 0`` starts no
process); unloading the extension stops the ones it started.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nbmodels.core.manager import get_manager


def install(session: Any) -> Callable[[], None]:
    """Apply the settings now and on every change; returns the undo."""
    settings = session.settings
    started = [False]

    def apply_spares(count: int) -> None:
        if count == 0 and not started[0]:
            return  # never import the runner layer, or start a process, for nothing
        from nbmodels.core.runners import spare_pool

        spare_pool().resize(count)
        started[0] = True

    def apply_address(address: str) -> None:
        get_manager().ray_address = address.strip() or None

    def on_change(change: dict[str, Any]) -> None:
        if change["name"] == "spare_workers":
            apply_spares(int(change["new"]))
        else:
            apply_address(str(change["new"]))

    apply_spares(settings.spare_workers)
    apply_address(settings.ray_address)
    settings.observe(on_change, names=["spare_workers", "ray_address"])

    def undo() -> None:
        settings.unobserve(on_change, names=["spare_workers", "ray_address"])
        apply_spares(0)
        get_manager().ray_address = None

    return undo


__all__ = ["install"]
