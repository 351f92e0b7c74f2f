"""jupyter_server's own pytest plugin (``jp_serverapp``, ``jp_fetch``), for this folder only, with the
nbmodels server extension enabled and every endpoint behind authentication."""

from __future__ import annotations

from typing import Any

import pytest
from pytest_jupyter.jupyter_server import *  # noqa: F403


@pytest.fixture
def jp_server_config() -> dict[str, Any]:  # replaces the plugin's (empty) one
    return {
        "ServerApp": {
            "jpserver_extensions": {"nbmodels.server": True},
            "allow_unauthenticated_access": False,
        }
    }
