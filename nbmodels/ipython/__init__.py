"""The IPython layer: magics, completion, settings, the model handle and the shutdown hook.

``%load_ext nbmodels`` loads it (see ``nbmodels.ipython.extension``).
"""

from nbmodels.ipython.handle import ModelHandle, is_handle, unwrap

__all__ = ["ModelHandle", "is_handle", "unwrap"]
