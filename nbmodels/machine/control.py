"""Requests between processes of one user: an owner-only Unix socket per kernel, never a network port.

The kernel side (:class:`ControlServer`) answers on a daemon thread, so a kernel
busy with a long cell still answers. Three checks keep it to its owner:

- the socket file is created with mode 0600 (bound inside a fresh 0700
  directory, then moved into place, so it is never reachable with looser
  permissions, and no process-wide umask is touched);
- the server asks the kernel for the peer's credentials (``SO_PEERCRED`` on
  Linux) and refuses any other uid;
- the client (:func:`send_request`) refuses a socket file that is not a socket,
  not owned by its user or readable by others, and a server whose pid is not
  the pid the state file names.

One request per connection: a JSON object on one line, answered by one line.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import stat
import struct
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nbmodels.machine.errors import MachineError, RefusedError
from nbmodels.machine.paths import MAX_SOCKET_PATH

log = logging.getLogger("nbmodels")

Handler = Callable[[dict[str, Any]], dict[str, Any]]

MAX_MESSAGE_BYTES = 1 << 20
READ_TIMEOUT = 5.0  # a client that connects and says nothing is dropped after this


def peer_credentials(conn: socket.socket) -> tuple[int, int] | None:
    """(pid, uid) of the process at the other end, or None where the platform cannot tell (not Linux)."""
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:
        return None
    size = struct.calcsize("3i")
    pid, uid, _gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, option, size))
    return pid, uid


def _read_line(conn: socket.socket) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while True:
        chunk = conn.recv(65536)
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
        if b"\n" in chunk or total > MAX_MESSAGE_BYTES:
            break
    return b"".join(chunks).split(b"\n", 1)[0]


def _send(conn: socket.socket, message: dict[str, Any]) -> None:
    conn.sendall((json.dumps(message, sort_keys=True) + "\n").encode("utf-8"))


class ControlServer:
    """Answers one user's requests to this process on ``path`` (a Unix socket, mode 0600)."""

    def __init__(self, path: Path, handler: Handler) -> None:
        self.path = path
        self._handler = handler
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._closed = threading.Event()
        self._file_id: tuple[int, int] | None = None  # (device, inode) of the socket file we made

    def start(self) -> None:
        """Bind and listen; raises OSError (with the reason) when the socket cannot be made."""
        if len(os.fsencode(self.path)) > MAX_SOCKET_PATH:
            raise OSError(f"the socket path {self.path} is longer than {MAX_SOCKET_PATH} bytes, the Unix limit")
        private = Path(tempfile.mkdtemp(prefix=".nbm-", dir=self.path.parent))  # 0700, ours alone
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            staged = private / "s"
            sock.bind(os.fspath(staged))
            os.chmod(staged, 0o600)
            os.replace(staged, self.path)
            made = os.stat(self.path)
            self._file_id = (made.st_dev, made.st_ino)
            sock.listen(8)
        except BaseException:
            sock.close()
            raise
        finally:
            shutil.rmtree(private, ignore_errors=True)
        self._sock = sock
        self._thread = threading.Thread(target=self._serve, name="nbmodels-control", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        sock = self._sock
        assert sock is not None
        while not self._closed.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                break  # closed
            threading.Thread(target=self._answer, args=(conn,), name="nbmodels-control-request", daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            try:
                conn.settimeout(READ_TIMEOUT)
                line = _read_line(conn)  # read first, so that a refusal reaches the client it refuses
                peer = peer_credentials(conn)
                if peer is not None and peer[1] != os.getuid():
                    log.warning("nbmodels: refused a request from uid %d (pid %d) on %s", peer[1], peer[0], self.path)
                    _send(conn, {"ok": False, "error": f"refused: this kernel answers only uid {os.getuid()}"})
                    return
                try:
                    request = json.loads(line)
                except json.JSONDecodeError:
                    _send(conn, {"ok": False, "error": "the request is not one line of JSON"})
                    return
                if not isinstance(request, dict):
                    _send(conn, {"ok": False, "error": "the request must be a JSON object"})
                    return
                conn.settimeout(None)
                try:
                    reply = self._handler(request)
                except Exception as exc:
                    log.exception("nbmodels: answering a control request failed")
                    reply = {"ok": False, "error": f"the kernel failed: {type(exc).__name__}: {exc}"}
                _send(conn, reply)
            except OSError as exc:  # the client went away, or timed out
                log.debug("nbmodels: control connection dropped: %s", exc)

    def close(self) -> None:
        """Stop listening and remove the socket file (only if it is still ours)."""
        self._closed.set()
        sock, self._sock = self._sock, None
        if sock is None:
            return
        try:
            found = os.stat(self.path)
            ours = (found.st_dev, found.st_ino) == self._file_id  # not a file a later process put there
        except OSError:
            ours = False
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)  # wakes the accept() of the serving thread
        sock.close()
        if ours:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=1.0)


def check_socket_file(path: Path) -> None:
    """Refuse a path that is not a socket of ours with owner-only permissions (RefusedError)."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        raise MachineError(f"no control socket at {path}: the kernel has ended or unloaded nbmodels") from None
    if not stat.S_ISSOCK(info.st_mode):
        raise RefusedError(f"refusing {path}: it is not a socket")
    if info.st_uid != os.getuid():
        raise RefusedError(f"refusing {path}: it belongs to {_user(info.st_uid)}, not to you")
    loose = stat.S_IMODE(info.st_mode) & 0o077
    if loose:
        mode = oct(stat.S_IMODE(info.st_mode))
        raise RefusedError(f"refusing {path}: its mode is {mode}, others could use it; nbmodels makes it 0o600")


def _user(uid: int) -> str:
    try:
        import pwd

        return f"user {pwd.getpwuid(uid).pw_name} (uid {uid})"
    except (ImportError, KeyError):
        return f"uid {uid}"


def send_request(path: Path, expected_pid: int, request: dict[str, Any], *, timeout: float) -> dict[str, Any]:
    """Send ``request`` to the kernel ``expected_pid`` listening on ``path`` and return its reply.

    Refuses (RefusedError) a socket that is not ours, or served by another
    process than the one the state file names.
    """
    check_socket_file(path)
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with conn:
        conn.settimeout(timeout)
        try:
            conn.connect(os.fspath(path))
        except (ConnectionRefusedError, FileNotFoundError):
            raise MachineError(f"nothing answers on {path}: the kernel has ended or unloaded nbmodels") from None
        peer = peer_credentials(conn)
        if peer is not None:
            pid, uid = peer
            if uid != os.getuid():
                raise RefusedError(f"refusing {path}: it is served by {_user(uid)}, not by you")
            if pid != expected_pid:
                raise RefusedError(f"refusing {path}: pid {pid} serves it, not the kernel (pid {expected_pid})")
        try:
            _send(conn, request)
            line = _read_line(conn)
        except TimeoutError:
            raise MachineError(f"the kernel (pid {expected_pid}) did not answer within {timeout:g}s") from None
        except OSError as exc:
            raise MachineError(f"the connection to the kernel (pid {expected_pid}) failed: {exc}") from None
    if not line:
        raise MachineError(f"the kernel (pid {expected_pid}) closed the connection without an answer")
    try:
        reply = json.loads(line)
    except json.JSONDecodeError:
        raise MachineError(f"the kernel (pid {expected_pid}) answered something that is not JSON") from None
    if not isinstance(reply, dict):
        raise MachineError(f"the kernel (pid {expected_pid}) answered something that is not a JSON object")
    return reply


__all__ = ["ControlServer", "check_socket_file", "peer_credentials", "send_request"]
