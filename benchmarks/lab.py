"""The JupyterLab server extension: ``GET /nbmodels/api/kernels`` with 10 real kernels, and how soon a
change in a kernel shows in that listing.

A real ``jupyter server`` (127.0.0.1, a token, its own runtime directory) opens
10 notebook sessions, as JupyterLab does when a user opens notebooks; 7 load a
model with nbmodels, 3 do not. The listing is timed over HTTP as the sidebar
asks for it (the server's whole answer, GPU readings included where NVML
exists). The change figures are the time from a load's reply in a kernel to the
first listing that shows the model (polled every 10 ms), and, with Debian's
Chromium and Playwright, to the model's row in the Models section of a
JupyterLab page (and from an unload's reply to the row gone).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks.common import Figure, percentile, pick

KERNELS = 10
WITH_NBMODELS = 7


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Server:
    def __init__(self, url: str, token: str, runtime: Path) -> None:
        self.url, self.token, self.runtime = url, token, runtime

    def call(self, path: str, body: dict[str, Any] | None = None) -> Any:
        request = urllib.request.Request(
            f"{self.url}{path}",
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
            method="GET" if body is None else "POST",
        )
        with urllib.request.urlopen(request, timeout=120) as response:
            return json.loads(response.read() or b"null")


@contextlib.contextmanager
def _server(home: Path) -> Iterator[_Server]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "IPYTHON"))}
    for var, sub in {"JUPYTER_CONFIG_DIR": "config", "JUPYTER_DATA_DIR": "data", "JUPYTER_RUNTIME_DIR": "runtime",
                     "IPYTHONDIR": "ipython", "JUPYTERLAB_SETTINGS_DIR": "lab-settings",
                     "JUPYTERLAB_WORKSPACES_DIR": "lab-workspaces"}.items():  # fmt: skip
        (home / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
        env[var] = str(home / sub)
    env["JUPYTER_PREFER_ENV_PATH"] = "1"
    (home / "root").mkdir()
    port, token = _free_port(), secrets.token_hex(16)
    command = [sys.executable, "-m", "jupyter", "lab", "--LabApp.expose_app_in_browser=True", "--LabApp.news_url=",
               "--no-browser", "--ip=127.0.0.1", f"--port={port}",
               "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
               f"--ServerApp.root_dir={home / 'root'}", "--allow-root"]  # fmt: skip
    with (home / "server.log").open("w") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    server = _Server(f"http://127.0.0.1:{port}", token, home / "runtime")
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                server.call("/api/status")
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    log = (home / "server.log").read_text()[-2000:]
                    raise RuntimeError(f"jupyter server did not start:\n{log}") from None
                time.sleep(0.25)
        yield server
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)


def _run(server: _Server, kernel_id: str, code: str) -> None:
    from jupyter_client import BlockingKernelClient

    client = BlockingKernelClient(connection_file=str(server.runtime / f"kernel-{kernel_id}.json"))
    client.load_connection_file()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=180)
        reply = client.execute_interactive(code, timeout=180, output_hook=lambda msg: None)
        if reply["content"]["status"] != "ok":
            raise RuntimeError(f"kernel {kernel_id}: {reply['content']}")
    finally:
        client.stop_channels()


CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]


def _sidebar_latency(server: _Server, kernel_id: str, rounds: int) -> list[float]:
    """Seconds from a load's (or unload's) reply in the kernel to its row appearing (or going) in the sidebar."""
    if not CHROMIUM.exists():
        return []
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return []
    samples: list[float] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.set_default_timeout(120_000)
            page.goto(f"{server.url}/lab?token={server.token}")
            page.wait_for_function("() => window.jupyterapp && window.jupyterapp.started")
            page.evaluate(  # after the layout is restored, or the restore puts the file browser back
                "async () => { await window.jupyterapp.restored;"
                " window.jupyterapp.shell.activateById('jp-running-sessions'); }"
            )
            page.wait_for_selector(".nbm-model", state="attached")  # the section lists the kernels' models
            for i in range(rounds):
                row = f".nbm-model:has-text('side{i}')"
                _run(server, kernel_id, f"%load_model side{i} demo:mlp --kw size_mb=1 seed={i}")
                started = time.perf_counter()
                page.wait_for_selector(row, state="attached", timeout=30_000)
                samples.append(time.perf_counter() - started)
                _run(server, kernel_id, f"%unload_model side{i}")
                started = time.perf_counter()
                page.wait_for_selector(row, state="detached", timeout=30_000)
                samples.append(time.perf_counter() - started)
        finally:
            browser.close()
    return samples


def run() -> list[Figure]:
    count, with_nbmodels, rounds = pick(KERNELS, 2), pick(WITH_NBMODELS, 1), pick(50, 5)
    with tempfile.TemporaryDirectory(prefix="nbmodels-bench-lab-") as tmp, _server(Path(tmp)) as server:
        kernels = []
        for i in range(count):
            session = server.call(
                "/api/sessions",
                {"path": f"n{i}.ipynb", "name": f"n{i}.ipynb", "type": "notebook", "kernel": {"name": "python3"}},
            )
            kernels.append(session["kernel"]["id"])
        for i, kernel_id in enumerate(kernels):
            code = (
                f"%load_ext nbmodels\n%load_model m{i} demo:mlp --kw size_mb=2 seed={i}" if i < with_nbmodels else "1"
            )
            _run(server, kernel_id, code)
        listing = server.call("/nbmodels/api/kernels")
        seen = sum(1 for k in listing["kernels"] if k["nbmodels"] and k["models"])
        if len(listing["kernels"]) != count or seen != with_nbmodels:
            raise RuntimeError(f"the listing has {len(listing['kernels'])} kernels, {seen} with a model")
        samples = []
        for _ in range(rounds):
            started = time.perf_counter()
            server.call("/nbmodels/api/kernels")
            samples.append(time.perf_counter() - started)

        changes = []
        for i in range(pick(5, 1)):
            _run(server, kernels[0], f"%load_model extra{i} demo:mlp --kw size_mb=1 seed={i}")
            loaded = time.perf_counter()
            while not any(
                m["name"] == f"extra{i}" for m in server.call("/nbmodels/api/kernels")["kernels"][0]["models"]
            ):
                if time.perf_counter() - loaded > 30:
                    raise RuntimeError("the listing never showed the model")
                time.sleep(0.01)
            changes.append(time.perf_counter() - loaded)
        sidebar = _sidebar_latency(server, kernels[0], pick(5, 1))
    samples.sort()
    return [
        Figure(
            f"GET /nbmodels/api/kernels, {count} kernels ({with_nbmodels} with nbmodels), median",
            percentile(samples, 0.5) * 1000,
            "ms",
            100.0,
            note=f"{rounds} requests over HTTP to a real jupyter server",
        ),
        Figure("  the same, 95th percentile", percentile(samples, 0.95) * 1000, "ms", 100.0),
        Figure(
            "a load in a kernel -> the listing shows it",
            max(changes) * 1000,
            "ms",
            1000.0,
            note=f"worst of {len(changes)}; the sidebar adds its 1 s poll and a render",
        ),
        Figure(
            "a load or unload in a kernel -> the sidebar's row appears or goes",
            max(sidebar) * 1000 if sidebar else math.nan,
            "ms",
            2000.0,
            note=f"worst of {len(sidebar)} in Chromium" if sidebar else "not measured: no Chromium or Playwright",
        ),
    ]
