"""A throw-away Jupyter server for browser tests, JupyterLab 4 or Notebook 7: 127.0.0.1, a free port,
a token, its own config/data/runtime/settings folders, and a process group that is always killed."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil

START_TIMEOUT = 90.0


FRONT_ENDS = ("lab", "notebook")  # the front ends a user works in; Voilà ("voila") serves a notebook as an app


@dataclass(frozen=True)
class Lab:
    url: str
    token: str
    root: Path
    log: Path
    front_end: str = "lab"  # "lab" (JupyterLab 4), "notebook" (Notebook 7) or "voila"

    def tree(self, path: str) -> str:
        """The URL that opens the notebook at ``path`` in this front end."""
        if self.front_end == "notebook":
            return f"{self.url}/notebooks/{path}?token={self.token}"
        if self.front_end == "voila":
            return f"{self.url}/voila/render/{path}?token={self.token}"
        return f"{self.url}/lab/tree/{path}?token={self.token}&reset"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def isolated_env(home: Path) -> dict[str, str]:
    """An environment in which nothing of this machine's Jupyter or IPython set-up leaks in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "IPYTHON"))}
    for var, sub in {
        "JUPYTER_CONFIG_DIR": "config",
        "JUPYTER_DATA_DIR": "data",
        "JUPYTER_RUNTIME_DIR": "runtime",
        "IPYTHONDIR": "ipython",
        "JUPYTERLAB_SETTINGS_DIR": "lab-settings",
        "JUPYTERLAB_WORKSPACES_DIR": "lab-workspaces",
    }.items():
        (home / sub).mkdir(parents=True, exist_ok=True)
        env[var] = str(home / sub)
    env["JUPYTER_PREFER_ENV_PATH"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    # No news or update checks: they pop up toasts and reach for the network.
    notification = home / "lab-settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    notification.parent.mkdir(parents=True, exist_ok=True)
    notification.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    # Every cell stays rendered (no windowing), so a test can find a cell's output by its text.
    tracker = home / "lab-settings" / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings"
    tracker.parent.mkdir(parents=True, exist_ok=True)
    tracker.write_text(json.dumps({"windowingMode": "none"}))
    return env


def _front_end_options(front_end: str) -> list[str]:
    if front_end == "lab":
        return [
            "lab",
            "--LabApp.expose_app_in_browser=True",
            "--LabApp.news_url=",
            "--LabApp.extension_manager=readonly",
        ]
    if front_end == "notebook":
        return ["notebook", "--JupyterNotebookApp.expose_app_in_browser=True"]
    raise ValueError(f"unknown front end {front_end!r}; use one of {FRONT_ENDS}")


@contextlib.contextmanager
def jupyterlab(root: Path, home: Path, front_end: str = "lab") -> Iterator[Lab]:
    """Run ``python -m jupyter lab`` (or ``notebook``, or ``voila``) on ``root`` until the block ends.

    JupyterLab and Notebook 7 expose their app as ``window.jupyterapp``, so tests can run commands
    instead of hunting for menus; Voilà serves each notebook of ``root`` as an app."""
    port, token = free_port(), secrets.token_hex(16)
    home.mkdir(parents=True, exist_ok=True)
    log = home / f"jupyter-{front_end}.log"
    url = f"http://127.0.0.1:{port}"
    status_url = f"{url}/api/status?token={token}"
    if front_end == "voila":
        command = [
            sys.executable,
            "-m",
            "voila",
            "--no-browser",
            "--Voila.ip=127.0.0.1",
            f"--port={port}",
            "--Voila.port_retries=0",
            f"--token={token}",
            str(root),
        ]
        status_url = f"{url}/voila/static/favicon.ico"  # answers without starting a kernel
    else:
        command = _server_command(front_end, root, port, token)
    with log.open("w") as out:
        process = subprocess.Popen(
            command, cwd=root, env=isolated_env(home), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        _wait_until_up(process, status_url, log)
        yield Lab(url=url, token=token, root=root, log=log, front_end=front_end)
    finally:
        _kill_group(process)
        _kill_kernels(home / "runtime")


def _server_command(front_end: str, root: Path, port: int, token: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "jupyter",
        *_front_end_options(front_end),
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        "--allow-root",
        "--ServerApp.terminals_enabled=False",
        "--ServerApp.shutdown_no_activity_timeout=600",
        "--MappingKernelManager.cull_idle_timeout=0",
    ]


def _wait_until_up(process: subprocess.Popen[bytes], status_url: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the Jupyter server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(status_url, timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.25)
    raise RuntimeError(f"the Jupyter server did not answer within {START_TIMEOUT:.0f}s:\n{log.read_text()[-3000:]}")


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server and its kernels (one process group), SIGKILL what is left after 10 s."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=10)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)


def _kill_kernels(runtime: Path) -> None:
    """Kernels run in sessions of their own; any left after the server went are found by
    their connection file, which lies in this server's private runtime folder."""
    marker = str(runtime)
    for proc in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            if any(marker in arg for arg in proc.info["cmdline"] or ()):
                proc.kill()
                proc.wait(timeout=5)
