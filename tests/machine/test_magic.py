"""``%list_models --all`` in a real InteractiveShell (not a kernel: it lists kernels but publishes nothing)."""

from __future__ import annotations

from pathlib import Path

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

from nbmodels.ipython.machine import publisher_of
from nbmodels.machine import MachineTable
from tests.ipython.conftest import ip, mgr

__all__ = ["ip", "mgr"]


def test_list_models_all_returns_the_machine_table(
    ip: InteractiveShell, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path))
    table = ip.run_line_magic("list_models", "--all")
    assert isinstance(table, MachineTable)
    assert str(table).splitlines()[0].split()[:2] == ["KERNEL", "PID"]
    assert '<table class="nbmodels">' in table._repr_html_()
    assert publisher_of(ip) is None and list(tmp_path.iterdir()) == []  # a terminal shell is no kernel
    assert not isinstance(ip.run_line_magic("list_models", ""), MachineTable)  # without --all: this kernel


def test_list_models_all_with_an_unreadable_runtime_directory_is_a_usage_error(
    ip: InteractiveShell, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    not_a_dir = tmp_path / "runtime"
    not_a_dir.write_text("")
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(not_a_dir))
    with pytest.raises(UsageError, match=r"^%list_models --all: the Jupyter runtime directory .* is not a directory$"):
        ip.run_line_magic("list_models", "--all")
    with pytest.raises(UsageError, match="unrecognized arguments: --every"):
        ip.run_line_magic("list_models", "--every")
