"""The panel and the load progress in a real Jupyter kernel (jupyter_client), where the output
routing, the cell ids and the shutdown are the real ones."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.ipython.kernels import TIMEOUT, Kernel, kernel

pytestmark = pytest.mark.slow

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"

SETUP = """
%load_ext nbmodels
import time
import nbmodels
from tqdm.auto import tqdm
from nbmodels.core.demo import mlp
from nbmodels.widgets.panel import ModelPanel

mgr = nbmodels.get_manager()

def noisy(seconds=0.0, **kwargs):
    print("hello from the loader")
    for _ in tqdm(range(3), desc="loader's own bar"):  # as Hugging Face's from_pretrained does
        time.sleep(seconds / 3)
    return mlp(hidden=8)
"""


@pytest.fixture(scope="module")
def k(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kernel]:
    with kernel(tmp_path_factory.mktemp("kernel")) as started:
        started.run(SETUP)
        yield started


def messages_of(k: Kernel, code: str, metadata: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Run ``code`` (with execute-request metadata, as a front end sends) and return its iopub messages."""
    client = k.client
    msg = client.session.msg(
        "execute_request",
        {"code": code, "silent": False, "store_history": True, "user_expressions": {}, "allow_stdin": False},
        metadata=metadata or {},
    )
    client.shell_channel.send(msg)
    msg_id = msg["header"]["msg_id"]
    seen: list[dict[str, Any]] = []
    while True:
        message = client.get_iopub_msg(timeout=TIMEOUT)
        if message["parent_header"].get("msg_id") != msg_id:
            continue
        seen.append(message)
        if message["msg_type"] == "status" and message["content"]["execution_state"] == "idle":
            break
    reply = client.get_shell_msg(timeout=TIMEOUT)
    assert reply["content"]["status"] == "ok", [m["content"] for m in seen if m["msg_type"] == "error"]
    return seen


def texts(messages: list[dict[str, Any]]) -> str:
    return "".join(m["content"]["text"] for m in messages if m["msg_type"] == "stream")


def test_what_a_panel_load_prints_and_displays_goes_into_the_panel(k: Kernel) -> None:
    messages = messages_of(
        k,
        "mgr.register('noisy', noisy)\n"
        "panel = ModelPanel(mgr, cuda_devices=0)\n"
        "panel.name.value = 'noisy'\n"
        "panel.load()\n"
        "print('the cell goes on')\n"
        "assert panel.wait(60)",
    )
    printed = texts(messages)
    assert "the cell goes on" in printed
    assert "hello from the loader" not in printed, "the loader's output landed in the cell that ran meanwhile"
    shown = [m for m in messages if m["msg_type"] == "display_data"]
    assert not shown, "the loader's bar was displayed in the cell, not in the panel"
    report = json.loads(
        k.run(
            "import json\n"
            "print(json.dumps({'status': panel.status_kind, 'outputs': [\n"
            "    {'type': o['output_type'], 'text': o.get('text', ''),\n"
            "     'plain': o.get('data', {}).get('text/plain', ''),\n"
            "     'widget': 'application/vnd.jupyter.widget-view+json' in o.get('data', {})}\n"
            "    for o in panel.output.outputs]}))"
        )
    )
    assert report["status"] == "ok"
    outputs = report["outputs"]
    assert any(o["type"] == "stream" and "hello from the loader" in o["text"] for o in outputs), outputs
    assert any(o["type"] == "display_data" and o["widget"] and "loader's own bar" in o["plain"] for o in outputs), (
        outputs
    )
    k.run("panel.close()\nmgr.cleanup()")


def test_a_slow_load_model_shows_a_bar_beside_the_loaders_own_and_removes_it(k: Kernel) -> None:
    messages = messages_of(k, "%load_model slow __main__:noisy --kw seconds=1.8")
    views = {
        m["content"]["data"][WIDGET_VIEW]["model_id"]: m["content"]["data"]["text/plain"]
        for m in messages
        if m["msg_type"] == "display_data" and WIDGET_VIEW in m["content"]["data"]
    }
    ours = [model_id for model_id, text in views.items() if text.startswith("loading slow")]
    theirs = [model_id for model_id, text in views.items() if text.startswith("loader's own bar")]
    assert len(ours) == 1, views
    assert len(theirs) == 1, "the loader's own bar was swallowed"
    closed = {m["content"]["comm_id"] for m in messages if m["msg_type"] == "comm_close"}
    assert ours[0] in closed, "the load bar stayed after the load"
    assert theirs[0] not in closed
    assert "slow: Sequential on cpu" in texts(messages)
    k.run("mgr.cleanup()")


def test_a_fast_load_model_shows_no_bar(k: Kernel) -> None:
    messages = messages_of(k, "%load_model fast demo:mlp --kw hidden=8")
    assert not [m for m in messages if m["msg_type"] == "display_data"]
    k.run("mgr.cleanup()")


def test_rerunning_a_model_panel_cell_closes_the_panel_it_showed(k: Kernel) -> None:
    cell = {"cellId": "5f0c3c7e-panel-cell"}
    others = int(k.run("print(len(mgr._subscribers))"))  # the machine view's publisher follows the manager too
    first = messages_of(k, "%model_panel", cell)
    second = messages_of(k, "%model_panel", cell)

    def panel_id(messages: list[dict[str, Any]]) -> str:
        (view,) = [m for m in messages if m["msg_type"] == "display_data"]
        return str(view["content"]["data"][WIDGET_VIEW]["model_id"])

    old, new = panel_id(first), panel_id(second)
    assert old != new
    state = k.run(
        "from ipywidgets.widgets.widget import _instances\n"
        f"print('{old}' in _instances, '{new}' in _instances, len(mgr._subscribers))"
    )
    assert state.split() == ["False", "True", str(others + 1)]
    other = messages_of(k, "%model_panel", {"cellId": "another-cell"})
    state = k.run(f"print('{new}' in _instances, '{panel_id(other)}' in _instances, len(mgr._subscribers))")
    assert state.split() == ["True", "True", str(others + 2)]


def test_a_kernel_with_a_live_panel_shuts_down_cleanly(tmp_path: Path) -> None:
    with kernel(tmp_path) as k2:
        k2.run("%load_ext nbmodels\n%load_model m demo:mlp --kw hidden=8\n%model_panel --refresh 0.1")
        k2.run(
            "import threading, time\ntime.sleep(0.5)\n"
            "assert any(t.name == 'nbmodels-panel-refresh' for t in threading.enumerate())"
        )
        k2.manager.shutdown_kernel(now=False)
        records = k2.records()
        assert len(records) == 1 and records[0]["reason"] == "shutdown", records
        assert records[0]["released"] == ["m"]
    output = (tmp_path / "kernel-output.txt").read_text()
    assert "Traceback" not in output and "Exception in thread" not in output, output
