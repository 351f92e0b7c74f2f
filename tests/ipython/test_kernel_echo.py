"""A bare ``%load_model x`` on a cell's last line, in a real kernel: it shows its one line, and nothing lands in
``Out`` or ``_`` (the kernel's display hook is not the terminal's)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from IPython.core.interactiveshell import InteractiveShell

from nbmodels import ModelManager
from nbmodels.ipython import ModelHandle
from tests.ipython.conftest import run
from tests.ipython.kernels import TIMEOUT, kernel


def outputs(k: Any, code: str) -> list[tuple[str, str]]:
    """Run ``code``; the (type, text) of every output message, widgets' comm traffic left out."""
    seen: list[tuple[str, str]] = []

    def collect(msg: dict[str, Any]) -> None:
        kind = msg["msg_type"]
        if kind in ("stream", "execute_result", "display_data", "error"):
            content = msg["content"]
            text = content.get("text") or content.get("data", {}).get("text/plain", "") or str(content)
            seen.append((kind, text))

    reply = k.client.execute_interactive(code, timeout=TIMEOUT, output_hook=collect)
    assert reply["content"]["status"] == "ok", seen
    return seen


@pytest.mark.slow
def test_a_bare_load_on_the_last_line_leaves_nothing_in_out_in_a_kernel(tmp_path: Path) -> None:
    with kernel(tmp_path) as k:
        # the extension loaded by the same cell (it installs its silencer after the cell was compiled)
        first = outputs(k, "%load_ext nbmodels\n%load_model x demo:mlp")
        # and a later cell, compiled with the silencer in place
        later = outputs(k, "%load_model y demo:mlp --kw seed=1")
        assert not [kind for kind, _ in first + later if kind in ("execute_result", "display_data") and "Linear" in _]
        assert [text for kind, text in first if kind == "stream"] == [
            "x: Sequential on cpu, 85,002 params, 332.0 KiB, loaded in " + first[-1][1].split(" in ")[-1]
        ]
        assert k.run("print(dict(Out), repr(_))") == "{} ''\n"
        # what the user shows on purpose is still shown
        shown = outputs(k, "m = %load_model x\nm")
        assert any(kind in ("execute_result", "display_data") and "Linear" in text for kind, text in shown)


def test_loaded_by_the_cell_that_loads_a_model_leaves_nothing_in_out(ip: InteractiveShell, mgr: ModelManager) -> None:
    ip.run_line_magic("unload_ext", "nbmodels")
    run(ip, "%load_ext nbmodels\n%load_model x demo:mlp")
    assert "x" in mgr
    assert dict(ip.user_ns["Out"]) == {}
    assert not isinstance(ip.user_ns.get("_"), ModelHandle)
    assert run(ip, "r = %unload_model x\nr") is not None  # shown on purpose: the next cell is not guarded
