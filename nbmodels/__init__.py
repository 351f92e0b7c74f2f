"""nbmodels: load models by name in a notebook, see what they cost, and get the memory back.

``import nbmodels`` is cheap: torch, IPython and ipywidgets load only when used.
"""

from __future__ import annotations

from nbmodels.core import Event, ModelInfo, ModelList, ModelManager, ReleaseReport, StillAlive, get_manager
from nbmodels.errors import (
    InvalidArgumentError,
    ModelConflictError,
    ModelLoadError,
    ModelNotFoundError,
    NbModelsError,
    SourceError,
    UnsafeCheckpointError,
)

__version__ = "0.1.0"


__all__ = [
    "Event",
    "InvalidArgumentError",
    "ModelConflictError",
    "ModelInfo",
    "ModelList",
    "ModelLoadError",
    "ModelManager",
    "ModelNotFoundError",
    "NbModelsError",
    "ReleaseReport",
    "SourceError",
    "StillAlive",
    "UnsafeCheckpointError",
    "__version__",
    "get_manager",
]
