"""The IPython-free core: the manager (``manager`` with its parts ``entries``, ``state``,
``budgeting``, ``keeping``), sources, memory accounting, the release and the holder search
(``holders/``), the memory policy's decisions (``policy/``), and the runners that place a model
in a worker process or a Ray actor (``runners/``).

Nothing here imports IPython or ipywidgets, and torch is imported only when a
model is loaded or measured.
"""

import logging

from nbmodels.core.manager import ModelManager, get_manager
from nbmodels.core.reports import Event, ModelInfo, ModelList, ReleaseReport, StillAlive

# A library configures no logging: without this, logging's last-resort handler would print
# the core's warnings to stderr in plain scripts. Applications and the IPython layer decide.
logging.getLogger("nbmodels").addHandler(logging.NullHandler())

__all__ = ["Event", "ModelInfo", "ModelList", "ModelManager", "ReleaseReport", "StillAlive", "get_manager"]
