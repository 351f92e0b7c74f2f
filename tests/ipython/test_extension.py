"""%load_ext / %unload_ext: everything registered is removed, load -> unload -> load works, no torch."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import pytest
from IPython.core.interactiveshell import InteractiveShell

from nbmodels import ModelManager
from nbmodels.ipython import completion, extension
from nbmodels.ipython.config import NBModels
from nbmodels.ipython.views import SilenceBareActions

MAGICS = ("load_model", "list_models", "models", "model_info", "unload_model", "model_cleanup")


def previous_handler(signum: int, frame: FrameType | None) -> None:
    """A SIGTERM handler someone installed before nbmodels (never called here)."""


@pytest.fixture
def bare_shell(mgr: ModelManager) -> Iterator[InteractiveShell]:
    """The shell without the extension, with a SIGTERM handler of its own to be restored."""
    shell = InteractiveShell.instance()
    shell.run_line_magic("unload_ext", "nbmodels")
    saved = signal.signal(signal.SIGTERM, previous_handler)
    try:
        yield shell
    finally:
        shell.run_line_magic("unload_ext", "nbmodels")
        extension.unload_ipython_extension(shell)  # for tests that called load_ipython_extension directly
        signal.signal(signal.SIGTERM, saved)
        shell.run_line_magic("reset", "-f")


def snapshot(shell: InteractiveShell) -> dict[str, object]:
    return {
        "magics": sorted(name for name in MAGICS if name in shell.magics_manager.magics["line"]),
        "registry": "NBModelsMagics" in shell.magics_manager.registry,
        "matchers": [getattr(m, "matcher_identifier", None) for m in shell.Completer.custom_matchers].count(
            completion.IDENTIFIER
        ),
        "configurables": sum(isinstance(c, NBModels) for c in shell.configurables),
        "sigterm": signal.getsignal(signal.SIGTERM),
        "silencer": sum(isinstance(t, SilenceBareActions) for t in shell.ast_transformers),
        "session": extension.current_session(shell) is not None,
    }


def test_unload_removes_everything_and_load_again_works(bare_shell: InteractiveShell, mgr: ModelManager) -> None:
    before = snapshot(bare_shell)
    assert before["magics"] == [] and before["sigterm"] is previous_handler
    bare_shell.run_line_magic("load_ext", "nbmodels")
    loaded = snapshot(bare_shell)
    assert loaded["magics"] == sorted(MAGICS) and loaded["registry"] and loaded["silencer"] == 1
    assert loaded["matchers"] == 1 and loaded["configurables"] == 1 and loaded["session"]
    assert loaded["sigterm"] is not previous_handler

    bare_shell.run_line_magic("unload_ext", "nbmodels")
    assert snapshot(bare_shell) == before

    bare_shell.run_line_magic("load_ext", "nbmodels")
    assert snapshot(bare_shell) == loaded | {"sigterm": snapshot(bare_shell)["sigterm"]}
    bare_shell.run_line_magic("load_model", "clf demo:mlp")
    assert "clf" in mgr
    bare_shell.run_line_magic("unload_ext", "nbmodels")
    assert snapshot(bare_shell) == before
    assert "clf" in mgr  # unloading the extension leaves models loaded


def test_loading_twice_installs_once(bare_shell: InteractiveShell) -> None:
    extension.load_ipython_extension(bare_shell)
    once = snapshot(bare_shell)
    extension.load_ipython_extension(bare_shell)
    assert snapshot(bare_shell) == once


def test_a_failing_step_leaves_nothing_installed(bare_shell: InteractiveShell, monkeypatch: pytest.MonkeyPatch) -> None:
    before = snapshot(bare_shell)

    def broken(session: extension.Session) -> None:
        raise RuntimeError("this step fails")

    monkeypatch.setattr(extension, "INSTALL_STEPS", [*extension.INSTALL_STEPS, broken])
    with pytest.raises(RuntimeError, match="this step fails"):
        extension.load_ipython_extension(bare_shell)
    assert snapshot(bare_shell) == before


def test_a_new_step_is_installed_and_undone(bare_shell: InteractiveShell, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []

    def step(session: extension.Session) -> extension.Undo:
        seen.append(f"installed with magics={session.magics is not None}")
        return lambda: seen.append("undone")

    monkeypatch.setattr(extension, "INSTALL_STEPS", [*extension.INSTALL_STEPS, step])
    bare_shell.run_line_magic("load_ext", "nbmodels")
    bare_shell.run_line_magic("unload_ext", "nbmodels")
    assert seen == ["installed with magics=True", "undone"]


def test_shutdown_hook_off_registers_no_hooks(bare_shell: InteractiveShell, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NBMODELS_SHUTDOWN_HOOK", "0")
    bare_shell.run_line_magic("load_ext", "nbmodels")
    loaded = snapshot(bare_shell)
    assert loaded["sigterm"] is previous_handler
    assert loaded["magics"] == sorted(MAGICS)


def exit_records(tmp_path: Path, cells: list[str]) -> list[dict[str, object]]:
    """Run ``cells`` in a fresh IPython process with a shutdown log, let it exit, return the records."""
    log = tmp_path / "shutdown.jsonl"
    code = "from IPython.core.interactiveshell import InteractiveShell\nip = InteractiveShell.instance()\n"
    code += "".join(f"ip.run_line_magic({magic!r}, {arg!r})\n" for magic, _, arg in (c.partition(" ") for c in cells))
    env = {**os.environ, "NBMODELS_SHUTDOWN_LOG": str(log)}
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=120, capture_output=True)
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_unload_removes_the_atexit_hook(tmp_path: Path) -> None:
    assert exit_records(tmp_path, ["load_ext nbmodels", "unload_ext nbmodels"]) == []


def test_load_unload_load_leaves_exactly_one_exit_record(tmp_path: Path) -> None:
    records = exit_records(tmp_path, ["load_ext nbmodels", "unload_ext nbmodels", "load_ext nbmodels"])
    assert len(records) == 1 and records[0]["reason"] == "exit" and records[0]["released"] == []


def test_loading_the_extension_imports_no_torch() -> None:
    code = (
        "import sys\n"
        "from IPython.core.interactiveshell import InteractiveShell\n"
        "ip = InteractiveShell.instance()\n"
        "ip.run_line_magic('load_ext', 'nbmodels')\n"
        "ip.run_line_magic('list_models', '')\n"
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]", out.stdout
