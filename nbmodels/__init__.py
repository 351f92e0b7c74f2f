"""nbmodels: load models by name in a notebook, see what they cost, and get the memory back.

``import nbmodels`` is cheap: torch, IPython and ipywidgets load only when used.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from nbmodels.core import Event, ModelInfo, ModelList, ModelManager, ReleaseReport, StillAlive, get_manager
from nbmodels.errors import (
    BudgetExceededError,
    InvalidArgumentError,
    ModelConflictError,
    ModelLoadError,
    ModelNotFoundError,
    NbModelsError,
    PlacementWarning,
    RemoteError,
    SourceError,
    TransferError,
    UnknownKeywordError,
    UnsafeCheckpointError,
    WorkerDiedError,
)

__version__ = "0.1.0"


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext nbmodels``: imports the IPython layer only now, so ``import nbmodels`` stays cheap."""
    from nbmodels.ipython.extension import load_ipython_extension as load

    load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    """``%unload_ext nbmodels``: removes everything the extension registered."""
    from nbmodels.ipython.extension import unload_ipython_extension as unload

    unload(ipython)


if TYPE_CHECKING:
    from nbmodels.core.attribution import MemoryReport
    from nbmodels.widgets.panel import ModelPanel


def memory(*, threshold: int = 1 << 20, everything: bool = False, manager: ModelManager | None = None) -> MemoryReport:
    """Where this process's memory is (what ``%memory`` shows), as data: a MemoryReport.

    Every live tensor storage under the name that holds it, largest first, with
    what frees it; owners under ``threshold`` bytes are folded into one row
    unless ``everything``. In IPython with the extension loaded, commands are
    spelled for the notebook (``%unload_model m --force``).
    """
    ipython = sys.modules.get("nbmodels.ipython.extension")
    shell = None
    if ipython is not None:
        from IPython import get_ipython

        shell = get_ipython()
    if shell is not None and ipython is not None and ipython.current_session(shell) is not None:
        from nbmodels.ipython.memory import report

        return report(manager, threshold=threshold, everything=everything)
    from nbmodels.core.attribution import memory_report

    return memory_report(manager, threshold=threshold, everything=everything)


def panel(
    manager: ModelManager | None = None, *, refresh_interval: float = 2.0, namespace: dict[str, Any] | None = None
) -> ModelPanel:
    """A live widget panel of loaded models and memory (an ipywidgets VBox; imports ipywidgets only now).

    ``refresh_interval``: seconds between memory readings while it is shown (0: only on changes).
    ``namespace``: whose functions the Load form takes by bare name; by default the notebook's
    variables, as ``%model_panel`` does.
    """
    from nbmodels.widgets.panel import ModelPanel

    if namespace is None:
        ipython = sys.modules.get("IPython")
        shell = ipython.get_ipython() if ipython is not None else None
        namespace = shell.user_ns if shell is not None else None
    return ModelPanel(manager, refresh_interval=refresh_interval, namespace=namespace)


__all__ = [
    "BudgetExceededError",
    "Event",
    "InvalidArgumentError",
    "ModelConflictError",
    "ModelInfo",
    "ModelList",
    "ModelLoadError",
    "ModelManager",
    "ModelNotFoundError",
    "NbModelsError",
    "PlacementWarning",
    "ReleaseReport",
    "RemoteError",
    "SourceError",
    "StillAlive",
    "TransferError",
    "UnknownKeywordError",
    "UnsafeCheckpointError",
    "WorkerDiedError",
    "__version__",
    "get_manager",
    "load_ipython_extension",
    "memory",
    "panel",
    "unload_ipython_extension",
]
