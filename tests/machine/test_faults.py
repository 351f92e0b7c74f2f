"""A state write that fails (a full disk, a read-only folder) is said once and never leaves a lying or half file.

The disk is real: a 64 KiB tmpfs mounted for the test (root only; skipped
with that reason elsewhere), filled until the kernel answers ENOSPC.
"""

from __future__ import annotations

import errno
import logging
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from nbmodels.core.manager import ModelManager
from nbmodels.machine.publisher import Publisher
from nbmodels.machine.state import read_state


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs (a real full disk)")
    disk = tmp_path / "disk"
    disk.mkdir(mode=0o700)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", str(disk)], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(disk: Path) -> None:
    """Write until the disk is full (ENOSPC)."""
    with (disk / "filler").open("ab", buffering=0) as handle:
        try:
            while True:
                handle.write(b"x" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC


def leftovers(disk: Path) -> list[str]:
    return [name for name in os.listdir(disk) if name.endswith(".tmp")]


def test_a_full_disk_removes_the_stale_state_and_says_so_once(
    tiny_disk: Path, caplog: pytest.LogCaptureFixture
) -> None:
    said: list[str] = []
    publisher = Publisher(ModelManager(), directory=tiny_disk, serve=False)
    publisher.on_write_error = said.append
    publisher.start()
    try:
        assert read_state(publisher.path).pid == os.getpid()
        with caplog.at_level(logging.WARNING, logger="nbmodels"):
            for _ in range(3):  # the first failure removes the old file (freeing a page): fill again each time
                fill(tiny_disk)
                publisher.write()
                assert not publisher.path.exists()  # no stale state lying that the kernel still has its models
                assert leftovers(tiny_disk) == []
        assert len(said) == 1 and "No space left on device" in said[0] and "\n" not in said[0]
        assert len([r for r in caplog.records if "could not write" in r.getMessage()]) == 1
        (tiny_disk / "filler").unlink()
        publisher.write()
        assert read_state(publisher.path).pid == os.getpid() and publisher.write_error == ""
    finally:
        publisher.close()
    assert os.listdir(tiny_disk) == []


def test_a_read_only_folder_is_said_once_and_leaves_nothing(tiny_disk: Path) -> None:
    said: list[str] = []
    publisher = Publisher(ModelManager(), directory=tiny_disk, serve=False)
    publisher.on_write_error = said.append
    publisher.start()
    subprocess.run(["mount", "-o", "remount,ro", str(tiny_disk)], check=True)
    try:
        for _ in range(3):
            publisher.write()
        assert len(said) == 1 and "Read-only file system" in said[0]
        assert leftovers(tiny_disk) == []
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(tiny_disk)], check=True)
        publisher.close()


def test_the_notebook_hears_of_a_failed_write_once_after_the_cell(
    tiny_disk: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from types import SimpleNamespace

    from IPython.core.interactiveshell import InteractiveShell

    from nbmodels.ipython import machine

    shell = InteractiveShell.instance()
    monkeypatch.setattr(shell, "kernel", object(), raising=False)  # publishing is for kernels only
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tiny_disk))
    undo = machine.install(SimpleNamespace(shell=shell))
    assert undo is not None
    publisher = machine.publisher_of(shell)
    assert publisher is not None
    try:
        fill(tiny_disk)
        publisher.write()
        shell.run_cell("1 + 1")
        fill(tiny_disk)
        publisher.write()
        shell.run_cell("2 + 2")
        said = [line for line in capsys.readouterr().err.splitlines() if "could not write" in line]
        assert len(said) == 1 and said[0].startswith("nbmodels: could not write this kernel's state file")
    finally:
        undo()
    assert leftovers(tiny_disk) == []
