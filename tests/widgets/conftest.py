"""The IPython tests' shell (``ip``, extension loaded) and clean process-wide manager (``mgr``), for %model_panel."""

from tests.ipython.conftest import ip, mgr

__all__ = ["ip", "mgr"]
