"""The IPython-free core: manager, sources, memory accounting, holder search.

Nothing here imports IPython or ipywidgets, and torch is imported only when a
model is loaded or measured.
"""

from nbmodels.core.manager import ModelManager, get_manager
from nbmodels.core.reports import Event, ModelInfo, ModelList, ReleaseReport, StillAlive

__all__ = ["Event", "ModelInfo", "ModelList", "ModelManager", "ReleaseReport", "StillAlive", "get_manager"]
