"""``python -m nbmodels ps`` / ``free`` on the command line: usage mistakes are one line, exit status 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def nbmodels(*args: str, runtime: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nbmodels", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "JUPYTER_RUNTIME_DIR": str(runtime)},
    )


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["free"], "the following arguments are required: kernel"),
        (["ps", "--bogus"], "unrecognized arguments: --bogus"),
        (["free", "x", "--timeout", "soon"], "invalid float value: 'soon'"),
    ],
)
def test_a_usage_mistake_is_one_line_and_exit_status_2(tmp_path: Path, args: list[str], problem: str) -> None:
    done = nbmodels(*args, runtime=tmp_path)
    assert done.returncode == 2 and done.stdout == ""
    [line] = done.stderr.strip().splitlines()
    assert problem in line


def test_help_names_both_commands(tmp_path: Path) -> None:
    done = nbmodels("ps", "--help", runtime=tmp_path)
    assert done.returncode == 0 and "--json" in done.stdout and "--runtime-dir" in done.stdout
    top = nbmodels("--help", runtime=tmp_path)
    assert top.returncode == 0 and "{demo,ps,free}" in top.stdout


def test_ps_with_a_runtime_directory_that_does_not_exist_yet_still_lists_kernels(tmp_path: Path) -> None:
    done = nbmodels("ps", "--runtime-dir", str(tmp_path / "not-yet"), runtime=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0].split()[:2] == ["KERNEL", "PID"]
    assert not (tmp_path / "not-yet").exists()  # reading creates nothing
