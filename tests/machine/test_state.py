"""The state file's format and the command lines that make a process a kernel (no kernels needed)."""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path

import pytest

from nbmodels.machine import paths
from nbmodels.machine.errors import StateFileError
from nbmodels.machine.state import VERSION, KernelState, ModelState, read_state, write_atomically


def a_state(**changes: object) -> KernelState:
    fields: dict[str, object] = {
        "pid": 4242,
        "process_started": 1_700_000_000.5,
        "kernel_id": "3f2a9c1e-0000-4000-8000-000000000000",
        "connection_file": "/run/user/1000/jupyter/kernel-3f2a9c1e-0000-4000-8000-000000000000.json",
        "notebook": "/home/ana/project/train.ipynb",
        "socket": "/run/user/1000/jupyter/nbmodels-kernel-4242.sock",
        "nbmodels_version": "0.1.0",
        "updated": 1_700_000_100.0,
        "busy": False,
        "activity": 1_700_000_090.0,
        "models": (
            ModelState("enc", "demo:mlp", "Sequential", {"cpu": 8 << 20, "cuda:0": 2 << 30}, 2_097_152, 1.0, 2.0, True),
        ),
        "loading": ("lm",),
        "in_use": ("old",),
    }
    fields.update(changes)
    return KernelState(**fields)  # type: ignore[arg-type]


def test_a_state_survives_the_round_trip_through_its_file(tmp_path: Path) -> None:
    state = a_state()
    path = tmp_path / "nbmodels-kernel-4242.json"
    write_atomically(path, state.to_json())
    assert read_state(path) == state
    assert json.loads(path.read_text())["format"] == "nbmodels-kernel-state"
    assert json.loads(path.read_text())["version"] == VERSION
    assert path.stat().st_mode & 0o777 == 0o600
    assert os.listdir(tmp_path) == [path.name]  # no temporary file left behind
    assert state.models[0].total_bytes == (8 << 20) + (2 << 30)


def test_readers_never_see_half_a_file_while_a_writer_rewrites_it(tmp_path: Path) -> None:
    path = tmp_path / "nbmodels-kernel-4242.json"
    big = a_state(models=tuple(ModelState(f"m{i}", "demo:mlp", "X", {"cpu": i}, i, 0.0, 0.0) for i in range(300)))
    small = a_state()
    write_atomically(path, small.to_json())
    stop = threading.Event()

    def writer() -> None:
        while not stop.is_set():
            for state in (big, small):
                write_atomically(path, state.to_json())

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        seen = {len(read_state(path).models) for _ in range(300)}
    finally:
        stop.set()
        thread.join()
    assert seen <= {1, 300}


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{", "not valid JSON"),
        ('{"format": "something else", "version": 1}', "not an nbmodels kernel state file"),
        ("[1, 2]", "not an nbmodels kernel state file"),
        ('{"format": "nbmodels-kernel-state", "version": 2}', "state format version 2, this nbmodels reads version 1"),
        ('{"format": "nbmodels-kernel-state", "version": 1, "pid": 1}', "the field"),
    ],
)
def test_a_bad_state_file_is_one_line_that_names_the_file_and_the_problem(
    tmp_path: Path, text: str, problem: str
) -> None:
    path = tmp_path / "nbmodels-kernel-1.json"
    path.write_text(text)
    with pytest.raises(StateFileError) as error:
        read_state(path)
    message = str(error.value)
    assert problem in message and str(path) in message and "\n" not in message


def test_fields_of_the_wrong_type_are_refused() -> None:
    data = json.loads(a_state().to_json())
    data["pid"] = "4242"
    with pytest.raises(StateFileError, match="wrong type"):
        KernelState.from_json(json.dumps(data))
    data = json.loads(a_state().to_json())
    data["models"][0]["bytes_by_device"] = {"cpu": 1.5}
    with pytest.raises(StateFileError, match="wrong type"):
        KernelState.from_json(json.dumps(data))


def test_a_huge_or_binary_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "nbmodels-kernel-1.json"
    path.write_bytes(b"\xff\xfe" * 10)
    with pytest.raises(StateFileError, match="not UTF-8"):
        read_state(path)
    path.write_bytes(b" " * ((1 << 20) + 1))
    with pytest.raises(StateFileError, match="larger than"):
        read_state(path)


KERNEL_FILE = "/home/ana/.local/share/jupyter/runtime/kernel-3f2a9c1e-0000-4000-8000-000000000000.json"


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["/usr/bin/python3", "-m", "ipykernel_launcher", "-f", KERNEL_FILE], KERNEL_FILE),
        (["python", "-m", "ipykernel_launcher", f"--f={KERNEL_FILE}"], KERNEL_FILE),
        (["/opt/venv/bin/python", "-m", "ipykernel", "-f", "/tmp/tmpab12cd.json"], "/tmp/tmpab12cd.json"),
        (["R", "--slave", "-e", "IRkernel::main()", "--args", KERNEL_FILE], KERNEL_FILE),
        (["python", "-m", "ipykernel_launcher"], None),
        (["jupyter-console", "--existing", KERNEL_FILE], None),
        (["python", "-m", "jupyter", "console", f"--existing={KERNEL_FILE}"], None),
        (["vim", "notes.json"], None),
        (["python", "train.py", "-f", "config.json"], None),
        ([], None),
    ],
)
def test_a_kernel_is_known_by_the_connection_file_on_its_command_line(argv: list[str], expected: str | None) -> None:
    assert paths.connection_file(argv) == expected


def test_kernel_ids_and_file_names() -> None:
    assert paths.kernel_id(KERNEL_FILE) == "3f2a9c1e-0000-4000-8000-000000000000"
    assert paths.kernel_id("/tmp/tmpab12cd.json") == "tmpab12cd"
    assert paths.kernel_id(None) is None
    directory = Path("/r")
    assert paths.state_path(directory, 7).name == "nbmodels-kernel-7.json"
    assert paths.socket_path(directory, 7).name == "nbmodels-kernel-7.sock"
    assert paths.pid_of_state_file("nbmodels-kernel-7.json") == 7
    assert paths.pid_of_state_file("nbmodels-kernel-x.json") is None
    assert paths.pid_of_state_file("kernel-7.json") is None


def test_the_runtime_directory_follows_jupyter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path))
    assert paths.runtime_dir() == tmp_path
    assert paths.runtime_dir({"JUPYTER_RUNTIME_DIR": "/x"}) == Path("/x")
    assert paths.runtime_dir({"JUPYTER_DATA_DIR": "/d"}) == Path("/d/runtime")
    if sys.platform.startswith("linux"):
        assert paths.runtime_dir({"HOME": "/home/ana"}) == Path("/home/ana/.local/share/jupyter/runtime")
        assert paths.runtime_dir({"HOME": "/h", "XDG_DATA_HOME": "/xdg"}) == Path("/xdg/jupyter/runtime")


def test_the_machine_package_imports_neither_ipython_nor_widgets_nor_torch() -> None:
    import subprocess

    code = (
        "import sys, nbmodels.machine, nbmodels.machine.cli\n"
        "print(sorted(m for m in ('IPython', 'ipywidgets', 'torch') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
