"""The control socket lets only its owner in: real Unix sockets, real permissions, a real other user."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nbmodels.machine.control import ControlServer, check_socket_file, send_request
from nbmodels.machine.errors import MachineError, RefusedError

NOBODY = 65534
CLIENT = """
import json, socket, sys
conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
conn.connect(sys.argv[1])
conn.sendall(b'{"request": "free", "version": 1}\\n')
print(conn.recv(65536).decode().strip())
"""


class Recorder:
    """A handler that remembers every request it was asked to answer."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []

    def __call__(self, request: dict[str, Any]) -> dict[str, Any]:
        self.requests.append(request)
        return {"ok": True, "echo": request}


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory under /tmp (socket paths must stay short) that another user may enter."""
    directory = Path(tempfile.mkdtemp(prefix="nbm-control-", dir="/tmp"))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def server(short_dir: Path) -> Iterator[tuple[ControlServer, Recorder]]:
    handler = Recorder()
    serving = ControlServer(short_dir / "nbmodels-kernel-1.sock", handler)
    serving.start()
    try:
        yield serving, handler
    finally:
        serving.close()


def test_the_socket_is_owner_only_answers_its_owner_and_goes_away_on_close(
    server: tuple[ControlServer, Recorder],
) -> None:
    serving, _ = server
    info = serving.path.lstat()
    assert info.st_mode & 0o777 == 0o600 and info.st_uid == os.getuid()
    assert os.listdir(serving.path.parent) == [serving.path.name]  # the private staging directory is gone
    reply = send_request(serving.path, os.getpid(), {"request": "free"}, timeout=5)
    assert reply == {"ok": True, "echo": {"request": "free"}}
    serving.close()
    assert not serving.path.exists()
    with pytest.raises(MachineError, match="no control socket"):
        send_request(serving.path, os.getpid(), {"request": "free"}, timeout=5)


def test_a_socket_with_loose_permissions_is_refused_before_connecting(server: tuple[ControlServer, Recorder]) -> None:
    serving, handler = server
    serving.path.chmod(0o666)
    with pytest.raises(RefusedError, match=r"its mode is 0o666, others could use it"):
        send_request(serving.path, os.getpid(), {"request": "free"}, timeout=5)
    assert handler.requests == []


@pytest.mark.skipif(os.getuid() != 0, reason="giving a file to another user needs root")
def test_a_socket_that_belongs_to_another_user_is_refused(server: tuple[ControlServer, Recorder]) -> None:
    serving, handler = server
    os.chown(serving.path, NOBODY, NOBODY)
    with pytest.raises(RefusedError, match=r"it belongs to user \S+ \(uid 65534\), not to you"):
        send_request(serving.path, os.getpid(), {"request": "free"}, timeout=5)
    assert handler.requests == []


def test_a_socket_served_by_another_process_than_the_kernel_is_refused(
    server: tuple[ControlServer, Recorder],
) -> None:
    """A state file that names someone else's socket: the peer's pid tells (SO_PEERCRED)."""
    serving, handler = server
    if not hasattr(socket, "SO_PEERCRED"):
        pytest.skip("this platform cannot tell who serves a socket")
    with pytest.raises(RefusedError, match=rf"pid {os.getpid()} serves it, not the kernel \(pid 1\)"):
        send_request(serving.path, 1, {"request": "free"}, timeout=5)
    assert handler.requests == []


def test_what_is_not_a_socket_is_refused(tmp_path: Path) -> None:
    fake = tmp_path / "nbmodels-kernel-1.sock"
    fake.write_text("")
    fake.chmod(0o600)
    with pytest.raises(RefusedError, match="it is not a socket"):
        check_socket_file(fake)
    fake.unlink()
    fake.symlink_to("/dev/null")
    with pytest.raises(RefusedError, match="it is not a socket"):
        check_socket_file(fake)


def _interpreter_for(uid: int) -> str | None:
    """A Python that user ``uid`` may run (ours may live in a home it cannot enter)."""
    for candidate in (os.path.realpath(sys.executable), "/usr/bin/python3"):
        try:
            done = subprocess.run([candidate, "-c", "pass"], user=uid, capture_output=True, timeout=60)
        except (OSError, subprocess.SubprocessError):
            continue
        if done.returncode == 0:
            return candidate
    return None


@pytest.mark.skipif(os.getuid() != 0, reason="a client of another uid needs root to start it")
def test_the_kernel_refuses_a_client_of_another_user_even_through_an_open_socket(
    server: tuple[ControlServer, Recorder],
) -> None:
    """Permissions loosened by mistake: the server still asks the kernel who connects, and says no."""
    serving, handler = server
    python = _interpreter_for(NOBODY)
    if python is None:
        pytest.skip("no Python interpreter that uid 65534 can run")
    serving.path.parent.chmod(0o755)
    serving.path.chmod(0o666)
    done = subprocess.run([python, "-c", CLIENT, str(serving.path)], user=NOBODY, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    reply = json.loads(done.stdout)
    assert reply["ok"] is False and reply["error"] == f"refused: this kernel answers only uid {os.getuid()}"
    assert handler.requests == []


def test_a_client_that_says_nothing_does_not_block_the_next_one(server: tuple[ControlServer, Recorder]) -> None:
    serving, _ = server
    silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    silent.connect(os.fspath(serving.path))
    try:
        started = time.monotonic()
        reply = send_request(serving.path, os.getpid(), {"request": "state"}, timeout=5)
        assert reply["ok"] is True and time.monotonic() - started < 2
    finally:
        silent.close()


def test_garbage_gets_an_error_and_reaches_no_handler(server: tuple[ControlServer, Recorder]) -> None:
    serving, handler = server
    for payload, error in ((b"not json\n", "not one line of JSON"), (b"[1, 2]\n", "must be a JSON object")):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.connect(os.fspath(serving.path))
            conn.sendall(payload)
            assert error in json.loads(conn.recv(65536))["error"]
    assert handler.requests == []


def test_a_handler_that_fails_answers_with_its_error(short_dir: Path) -> None:
    def broken(request: dict[str, Any]) -> dict[str, Any]:
        raise RuntimeError("the manager is gone")

    serving = ControlServer(short_dir / "b.sock", broken)
    serving.start()
    try:
        reply = send_request(serving.path, os.getpid(), {"request": "free"}, timeout=5)
        assert reply == {"ok": False, "error": "the kernel failed: RuntimeError: the manager is gone"}
    finally:
        serving.close()


def test_a_slow_kernel_is_a_one_line_timeout(short_dir: Path) -> None:
    release = threading.Event()

    def slow(request: dict[str, Any]) -> dict[str, Any]:
        release.wait(10)
        return {"ok": True}

    serving = ControlServer(short_dir / "s.sock", slow)
    serving.start()
    try:
        with pytest.raises(MachineError, match=r"did not answer within 0.3s"):
            send_request(serving.path, os.getpid(), {"request": "free"}, timeout=0.3)
    finally:
        release.set()
        serving.close()


def test_close_leaves_a_socket_that_another_process_put_in_its_place(short_dir: Path) -> None:
    first = ControlServer(short_dir / "same.sock", Recorder())
    first.start()
    second = ControlServer(short_dir / "same.sock", Recorder())  # a later process with the same pid
    second.start()
    first.close()
    assert second.path.exists()
    assert send_request(second.path, os.getpid(), {"request": "x"}, timeout=5)["ok"] is True
    second.close()
    assert not second.path.exists()


def test_a_socket_path_too_long_for_unix_is_a_clear_error(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 100)
    deep.mkdir()
    with pytest.raises(OSError, match="longer than 107 bytes, the Unix limit"):
        ControlServer(deep / "nbmodels-kernel-1.sock", Recorder()).start()
    assert os.listdir(deep) == []
