"""A real InteractiveShell with the extension loaded, and a clean process-wide manager around each test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from IPython.core.interactiveshell import InteractiveShell

from nbmodels import ModelManager, get_manager


@pytest.fixture
def mgr(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModelManager]:
    """A fresh process-wide manager (what ``get_manager()`` and the magics use) for each test."""
    manager = ModelManager()
    monkeypatch.setattr(ModelManager, "_instance", manager)
    assert get_manager() is manager
    yield manager
    manager.cleanup()


@pytest.fixture
def ip(mgr: ModelManager) -> Iterator[InteractiveShell]:
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "nbmodels")
    try:
        yield shell
    finally:
        shell.run_line_magic("unload_ext", "nbmodels")
        shell.config.pop("NBModels", None)  # %config writes to the shell's config, which outlives a test
        shell.run_line_magic("reset", "-f")
        mgr.cleanup()


def run(shell: InteractiveShell, code: str) -> object:
    """Run ``code`` as a cell that is stored in the history (so Out/_ behave as in a notebook)."""
    result = shell.run_cell(code, store_history=True)
    if result.error_before_exec is not None:
        raise result.error_before_exec
    if result.error_in_exec is not None:
        raise result.error_in_exec
    return result.result
