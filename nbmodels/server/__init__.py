"""A Jupyter server extension: this server's kernels and their models over REST, for the JupyterLab extension.

Installing nbmodels enables it (``etc/jupyter/jupyter_server_config.d/nbmodels.json``
ships in the wheel); the JupyterLab side (the Running sidebar's Models section
and the status-bar item) is the prebuilt labextension shipped beside it.
"""

from __future__ import annotations

from typing import Any

from nbmodels.server.handlers import KernelsHandler, ReleaseHandler

API = "nbmodels/api"


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "nbmodels.server"}]


def _load_jupyter_server_extension(serverapp: Any) -> None:
    """Add the handlers to the server's web app, under its base URL."""
    from jupyter_server.utils import url_path_join

    web_app = serverapp.web_app
    base = web_app.settings["base_url"]
    options = {"runtime_dir": serverapp.runtime_dir, "gpus": serverapp.web_app.settings.get("nbmodels_gpus")}
    web_app.add_handlers(
        ".*$",
        [
            (url_path_join(base, API, "kernels"), KernelsHandler, options),
            (url_path_join(base, API, r"kernels/([^/]+)/(unload|free)"), ReleaseHandler, options),
        ],
    )
    serverapp.log.info("nbmodels: server extension loaded (%s)", url_path_join(base, API))


__all__ = ["API"]
