"""Two notebooks opened in a real JupyterLab server: ``ps`` names them as the server knows them.

The server starts the kernels itself (its own connection files ``kernel-<id>.json``
in its runtime directory, ``JPY_SESSION_NAME`` set to each notebook's path),
as it does when a user opens a notebook; the test then talks to each kernel
through its connection file, as a console would, and runs ``nbmodels`` from a
terminal that shares the server's runtime directory.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from jupyter_client import BlockingKernelClient

from tests.browser.jupyterlab import Lab, isolated_env, jupyterlab

pytestmark = pytest.mark.slow


def api(lab: Lab, path: str, body: dict[str, Any] | None = None, method: str | None = None) -> Any:
    request = urllib.request.Request(
        f"{lab.url}{path}?token={lab.token}",
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method=method or ("GET" if body is None else "POST"),
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        data = response.read()
    return json.loads(data) if data else None


def run(client: BlockingKernelClient, code: str) -> str:
    printed: list[str] = []

    def collect(msg: dict[str, Any]) -> None:
        if msg["msg_type"] == "stream":
            printed.append(msg["content"]["text"])
        elif msg["msg_type"] == "error":
            printed.append("\n".join(msg["content"]["traceback"]))

    reply = client.execute_interactive(code, timeout=120, output_hook=collect)
    assert reply["content"]["status"] == "ok", "".join(printed)
    return "".join(printed)


def test_ps_and_free_see_the_notebooks_a_jupyterlab_server_opened(tmp_path: Path) -> None:
    root, home = tmp_path / "root", tmp_path / "home"
    (root / "project").mkdir(parents=True)
    with jupyterlab(root, home) as lab:
        runtime = home / "runtime"
        kernels: dict[str, str] = {}
        clients: dict[str, BlockingKernelClient] = {}
        try:
            for name in ("train", "eval"):
                session = api(
                    lab,
                    "/api/sessions",
                    {
                        "path": f"project/{name}.ipynb",
                        "name": f"{name}.ipynb",
                        "type": "notebook",
                        "kernel": {"name": "python3"},
                    },
                )
                kernels[name] = session["kernel"]["id"]
                client = BlockingKernelClient(connection_file=str(runtime / f"kernel-{kernels[name]}.json"))
                client.load_connection_file()
                client.start_channels()
                client.wait_for_ready(timeout=120)
                clients[name] = client
            out = run(
                clients["train"], "%load_ext nbmodels\n%load_model enc demo:mlp --kw size_mb=4\nprint(__session__)"
            )
            assert out.strip().endswith(str(root / "project" / "train.ipynb"))
            run(clients["eval"], "%load_ext nbmodels\n%load_model clf demo:mlp --kw size_mb=2")

            env = {**isolated_env(home), "JUPYTER_RUNTIME_DIR": str(runtime)}  # a terminal of the same user

            def nbmodels(*args: str) -> subprocess.CompletedProcess[str]:
                return subprocess.run(
                    [sys.executable, "-m", "nbmodels", *args], capture_output=True, text=True, env=env, timeout=120
                )

            done = nbmodels("ps", "--json")
            assert done.returncode == 0, done.stderr
            rows = {row["kernel_id"]: row for row in json.loads(done.stdout)["kernels"]}
            for name in ("train", "eval"):
                row = rows[kernels[name]]
                assert row["notebook"] == str(root / "project" / f"{name}.ipynb")
                assert row["connection_file"] == str(runtime / f"kernel-{kernels[name]}.json")
                assert row["nbmodels"] is True
            assert [m["name"] for m in rows[kernels["train"]]["models"]] == ["enc"]
            assert [m["name"] for m in rows[kernels["eval"]]["models"]] == ["clf"]

            table = nbmodels("ps").stdout
            assert f"{kernels['train'][:8]} " in table and "project/train.ipynb" in table

            freed = nbmodels("free", "eval.ipynb")
            assert freed.returncode == 0, freed.stderr
            assert "released 1 model(s): clf" in freed.stdout
            left = run(clients["train"], "import nbmodels\nprint([i.name for i in nbmodels.get_manager().list()])")
            assert left.strip() == "['enc']"
            gone = run(clients["eval"], "import nbmodels\nprint([i.name for i in nbmodels.get_manager().list()])")
            assert gone.strip() == "[]"
            assert {k["id"] for k in api(lab, "/api/kernels")} >= set(kernels.values())  # both still run

            # Shut the eval notebook's kernel down from the server, as the Running tab does: its files go.
            pid = rows[kernels["eval"]]["pid"]
            api(lab, f"/api/kernels/{kernels['eval']}", method="DELETE")
            deadline = time.monotonic() + 30
            while (runtime / f"nbmodels-kernel-{pid}.json").exists():
                assert time.monotonic() < deadline, "the state file outlived its kernel"
                time.sleep(0.1)
            assert not (runtime / f"nbmodels-kernel-{pid}.sock").exists()
            listed = {row["kernel_id"] for row in json.loads(nbmodels("ps", "--json").stdout)["kernels"]}
            assert kernels["eval"] not in listed and kernels["train"] in listed
        finally:
            for client in clients.values():
                client.stop_channels()
