"""Another user of the machine attacks the machine view: hang it, crash it, lie through it, redirect its writes.

These tests run as root and act as a second, real local user (``useradd``):
files and folders that user owns, a fake kernel that user runs. Where the
machine cannot (not root, no ``useradd``) they are skipped with that reason.
Each hostile file must cost one warning line at most, and the rest of the
table must still print; nothing may block, crash, print a raw escape, or
write where the attacker points.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from nbmodels.core.manager import ModelManager
from nbmodels.machine.errors import RefusedError, StateFileError
from nbmodels.machine.files import printable, read_private_file
from nbmodels.machine.publisher import Publisher
from nbmodels.machine.scan import scan
from nbmodels.machine.state import KernelState, ModelState, read_state, write_atomically

HOSTILE = "nbmhostile"
PS_TIMEOUT = 60  # a FIFO once blocked ps for 22 minutes; a few seconds is the real cost


@pytest.fixture(scope="module")
def hostile() -> int:
    """The uid of a second local user (created once; left for later runs)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create and act as a second local user (useradd)")
    if shutil.which("useradd") is None:
        pytest.skip("no useradd on this machine, so no second local user")
    try:
        return pwd.getpwnam(HOSTILE).pw_uid
    except KeyError:
        subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", HOSTILE], check=True)
    return pwd.getpwnam(HOSTILE).pw_uid


@pytest.fixture
def runtime(tmp_path: Path) -> Path:
    folder = tmp_path / "runtime"
    folder.mkdir(mode=0o700)
    return folder


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        process.kill()
        process.wait(10)


def fake_kernel(folder: Path, started: list[subprocess.Popen[bytes]], **popen: object) -> subprocess.Popen[bytes]:
    """A process whose command line looks like a kernel's (``-f <folder>/kernel-<id>.json``)."""
    connection = folder / f"kernel-{uuid.uuid4()}.json"
    process = subprocess.Popen(  # type: ignore[call-overload]
        ["/bin/sh", "-c", "sleep 120; :", "sh", "-f", str(connection)], **popen
    )
    started.append(process)
    return process  # type: ignore[no-any-return]


def valid_state(pid: int, *, name: str = "enc", notebook: str = "/home/ana/a.ipynb") -> KernelState:
    return KernelState(
        pid=pid,
        process_started=psutil.Process(pid).create_time(),
        kernel_id=None,
        connection_file=None,
        notebook=notebook,
        socket=None,
        nbmodels_version="0",
        updated=time.time(),
        busy=False,
        activity=time.time(),
        models=(ModelState(name, "demo:mlp", "MLP", {"cpu": 1024}, 10, time.time(), time.time()),),
    )


def ps(runtime: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nbmodels", "ps"],
        capture_output=True,
        text=True,
        timeout=PS_TIMEOUT,
        env={**os.environ, "JUPYTER_RUNTIME_DIR": str(runtime)},
    )


def deep(pid: int) -> str:
    return '{"format": "nbmodels-kernel-state", "version": 1, "pid": ' + str(pid) + ', "x": ' + "[" * 200_000


def test_hostile_state_files_cost_one_warning_each_and_the_table_still_prints(
    hostile: int, runtime: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    kernels = [fake_kernel(runtime, processes) for _ in range(9)]
    good, fifo, nested, digits, nan, link, foreign, huge, escapes = (k.pid for k in kernels)
    path = runtime.joinpath
    write_atomically(path(f"nbmodels-kernel-{good}.json"), valid_state(good).to_json())
    os.mkfifo(path(f"nbmodels-kernel-{fifo}.json"), 0o600)
    path(f"nbmodels-kernel-{nested}.json").write_text(deep(nested))
    big = json.loads(valid_state(digits).to_json())
    path(f"nbmodels-kernel-{digits}.json").write_text(
        json.dumps(big).replace('"process_started": ', '"process_started": ' + "9" * 401 + ', "_": ')
    )
    path(f"nbmodels-kernel-{nan}.json").write_text(
        valid_state(nan).to_json().replace('"updated": ', '"updated": NaN, "_": ')
    )
    path(f"nbmodels-kernel-{link}.json").symlink_to("/etc/passwd")
    path(f"nbmodels-kernel-{foreign}.json").write_text(valid_state(foreign).to_json())
    os.chown(path(f"nbmodels-kernel-{foreign}.json"), hostile, -1)
    path(f"nbmodels-kernel-{huge}.json").write_text(" " * (2 << 20))
    evil = "\x1b]0;pwned\x07\x1b[2J\x00\u202eevil"
    write_atomically(path(f"nbmodels-kernel-{escapes}.json"), valid_state(escapes, name=evil, notebook=evil).to_json())

    started = time.monotonic()
    result = ps(runtime)
    assert time.monotonic() - started < PS_TIMEOUT
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("nbmodels ps: warning:")]
    assert len(warnings) == 7, result.stderr  # fifo, nested, digits, nan, link, foreign, huge: one line each
    assert result.stderr.count("\n") == 7
    for pid in (k.pid for k in kernels):  # every kernel still has its row
        assert f" {pid} " in result.stdout
    assert "enc 1.0 KiB" in result.stdout  # the good one is read as before
    for raw in ("\x1b", "\x00", "\x07", "\u202e"):
        assert raw not in result.stdout + result.stderr
    assert "\\x1b]0;pwned" in result.stdout and "\\u202eevil" in result.stdout
    assert os.path.exists("/etc/passwd")  # the symlink's target was neither read as state nor removed


def test_each_hostile_file_is_refused_in_one_line(hostile: int, runtime: Path) -> None:
    """The reader itself: a clear one-line StateFileError, quickly, for each kind of forgery."""
    me = os.getpid()
    cases = {
        "fifo": lambda p: os.mkfifo(p, 0o600),
        "nested": lambda p: p.write_text(deep(me)),
        "digits": lambda p: p.write_text(
            valid_state(me).to_json().replace('"pid": ', '"pid": ' + "1" * 401 + ', "_": ')
        ),
        "symlink": lambda p: p.symlink_to("/etc/passwd"),
        "foreign": lambda p: (p.write_text(valid_state(me).to_json()), os.chown(p, hostile, -1)),
        "directory": lambda p: p.mkdir(),
        "device": lambda p: p.symlink_to("/dev/zero"),
        "huge": lambda p: p.write_bytes(b"{" * (2 << 20)),
    }
    for kind, make in cases.items():
        target = runtime / f"{kind}.json"
        make(target)
        started = time.monotonic()
        with pytest.raises(StateFileError) as caught:
            read_state(target)
        assert time.monotonic() - started < 5, kind
        assert "\n" not in str(caught.value), kind


def test_another_users_kernel_is_counted_never_read(
    hostile: int, runtime: Path, tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    """A hostile kernel names a folder of FIFOs on its command line and in its environment: nothing there is opened."""
    trap = Path(f"/tmp/nbm-hostile-{uuid.uuid4().hex[:8]}")
    trap.mkdir(mode=0o777)
    os.chmod(trap, 0o1777)
    os.chown(trap, hostile, hostile)
    try:
        kernel = fake_kernel(
            trap, processes, user=hostile, env={"JUPYTER_RUNTIME_DIR": str(trap), "PATH": "/usr/bin:/bin"}
        )
        mine = fake_kernel(runtime, processes)
        write_atomically(runtime / f"nbmodels-kernel-{mine.pid}.json", valid_state(mine.pid).to_json())
        for folder in (trap,):
            os.mkfifo(folder / f"nbmodels-kernel-{kernel.pid}.json", 0o666)
            os.chown(folder / f"nbmodels-kernel-{kernel.pid}.json", hostile, hostile)
        deadline = time.monotonic() + 10
        while psutil.Process(kernel.pid).uids().real != hostile and time.monotonic() < deadline:
            time.sleep(0.05)
        result = ps(runtime)
        assert result.returncode == 0, result.stderr
        assert result.stderr == ""  # no warning about another user's kernel
        assert f" {kernel.pid} " not in result.stdout
        assert f" {mine.pid} " in result.stdout
        assert "1 kernel(s) of other users not shown" in result.stdout
        assert "state file unreadable" not in result.stdout
    finally:
        shutil.rmtree(trap)


@pytest.mark.parametrize("mode", [0o700, 0o755, 0o1777])
def test_a_folder_another_user_owns_is_refused_in_one_line(hostile: int, tmp_path: Path, mode: int) -> None:
    folder = tmp_path / "theirs"
    folder.mkdir()
    os.chmod(folder, mode)
    os.chown(folder, hostile, hostile)
    with pytest.raises(RefusedError, match="belongs to uid"):
        scan(folder)
    result = ps(folder)
    assert result.returncode == 1
    assert result.stdout == "" and result.stderr.count("\n") == 1 and "refusing the folder" in result.stderr


def test_a_folder_others_can_write_is_refused_even_when_it_is_ours(runtime: Path) -> None:
    os.chmod(runtime, 0o777)
    with pytest.raises(RefusedError, match="other users can write to it"):
        scan(runtime)
    with pytest.raises(RefusedError):
        write_atomically(runtime / "nbmodels-kernel-1.json", "{}")
    assert os.listdir(runtime) == []


def test_a_planted_symlink_at_a_temporary_name_redirects_nothing(hostile: int, tmp_path: Path) -> None:
    """The old writer followed a symlink at ``.<name>.<pid>.tmp``: a shared folder let it overwrite any file."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    os.chown(shared, hostile, hostile)
    state = shared / f"nbmodels-kernel-{os.getpid()}.json"
    (shared / f".{state.name}.{os.getpid()}.tmp").symlink_to(victim)
    os.lchown(shared / f".{state.name}.{os.getpid()}.tmp", hostile, hostile)

    publisher = Publisher(ModelManager(), directory=shared, serve=False)
    with pytest.raises(RefusedError):
        publisher.start()
    with pytest.raises(RefusedError):
        write_atomically(state, "{}")
    assert victim.read_text() == "precious"
    assert not state.exists()

    private = tmp_path / "private"  # in our own folder the fixed name is not used at all
    private.mkdir(mode=0o700)
    target = private / "nbmodels-kernel-1.json"
    (private / f".{target.name}.{os.getpid()}.tmp").symlink_to(victim)
    write_atomically(target, "{}")
    assert victim.read_text() == "precious" and target.read_text() == "{}"
    assert oct(target.stat().st_mode & 0o777) == "0o600"
    assert sorted(os.listdir(private)) == sorted([target.name, f".{target.name}.{os.getpid()}.tmp"])


def test_printable_escapes_what_moves_a_terminal() -> None:
    text = printable("a\x1b[2Jb\x00c\u202ed\u2066e\nf\u200bg")
    assert text == "a\\x1b[2Jb\\x00c\\u202ed\\u2066e\\x0af\\u200bg"
    assert printable("x" * 500, 20) == "x" * 19 + "…"
    assert printable("ordinary, naïve, 模型") == "ordinary, naïve, 模型"


def test_a_read_never_blocks_on_a_fifo_with_a_writer_waiting(runtime: Path) -> None:
    fifo = runtime / "nbmodels-kernel-1.json"
    os.mkfifo(fifo, 0o600)
    with pytest.raises(StateFileError, match="not a regular file"):
        read_private_file(fifo)


def test_the_panels_refresher_survives_any_error_of_one_reading(runtime: Path) -> None:
    from nbmodels.widgets.machine import MachineSection

    readings = iter([RecursionError("maximum recursion depth exceeded"), OverflowError("int too large")])

    def scanner() -> object:
        error = next(readings, None)
        if error is not None:
            raise error
        return scan(runtime)

    section = MachineSection(interval=0.01, scanner=scanner)  # type: ignore[arg-type]
    try:
        deadline = time.monotonic() + 20
        while section.view is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert section.view is not None  # the third reading came through: the refresher lived on
    finally:
        section.close()


def test_a_temporary_file_left_by_a_dead_writer_is_removed(runtime: Path) -> None:
    """A writer killed between create and rename leaves ``.<name>.<pid>.<random>.tmp``: the next scan removes it."""
    dead = subprocess.Popen(["true"])
    dead.wait()
    leftover = runtime / f".nbmodels-kernel-{dead.pid}.json.{dead.pid}.0123456789abcdef.tmp"
    leftover.write_text("{")
    mine = runtime / f".nbmodels-kernel-{os.getpid()}.json.{os.getpid()}.fedcba9876543210.tmp"
    mine.write_text("{")  # a live writer's: left alone
    scan(runtime)
    assert not leftover.exists() and mine.exists()
