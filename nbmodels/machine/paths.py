"""Where kernels publish their state, and how a kernel's command line names its connection file.

A Jupyter kernel runs as ``python -m ipykernel_launcher -f <runtime dir>/kernel-<id>.json``
(other languages put the file elsewhere on the line, as IRkernel's ``--args FILE``).
Each kernel with nbmodels writes ``nbmodels-kernel-<pid>.json`` and listens on
``nbmodels-kernel-<pid>.sock`` in its Jupyter runtime directory.
"""

from __future__ import annotations

import itertools
import os
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

STATE_PREFIX = "nbmodels-kernel-"
_STATE_NAME = re.compile(r"^nbmodels-kernel-(\d+)\.json$")
_KERNEL_FILE = re.compile(r"^kernel-(.+)\.json$")
_FILE_FLAGS = ("-f", "--f", "--connection-file")
# Clients name a connection file too (``jupyter console --existing FILE``): they are not kernels.
_CLIENT_FLAGS = ("--existing",)
# A Unix socket path must fit in sockaddr_un.sun_path (108 bytes with the final NUL on Linux).
MAX_SOCKET_PATH = 107


def runtime_dir(environ: Mapping[str, str] | None = None) -> Path:
    """The Jupyter runtime directory (``jupyter_core.paths.jupyter_runtime_dir()``) for ``environ``.

    Without ``environ`` it is this process's. When jupyter_core is missing (a
    plain IPython install) the same rule is applied by hand: ``JUPYTER_RUNTIME_DIR``,
    else ``JUPYTER_DATA_DIR/runtime``, else the platform's Jupyter data directory.
    """
    if environ is None:
        try:
            from jupyter_core.paths import jupyter_runtime_dir
        except ImportError:
            return _runtime_dir_by_hand(os.environ)
        return Path(jupyter_runtime_dir())
    return _runtime_dir_by_hand(environ)


def _runtime_dir_by_hand(environ: Mapping[str, str]) -> Path:
    if environ.get("JUPYTER_RUNTIME_DIR"):
        return Path(environ["JUPYTER_RUNTIME_DIR"])
    if environ.get("JUPYTER_DATA_DIR"):
        return Path(environ["JUPYTER_DATA_DIR"]) / "runtime"
    home = Path(environ.get("HOME") or Path.home())
    if sys.platform == "darwin":
        return home / "Library" / "Jupyter" / "runtime"
    if sys.platform == "win32":
        return Path(environ.get("APPDATA") or home) / "jupyter" / "runtime"
    data = Path(environ["XDG_DATA_HOME"]) if environ.get("XDG_DATA_HOME") else home / ".local" / "share"
    return data / "jupyter" / "runtime"


def state_path(directory: Path, pid: int) -> Path:
    return directory / f"{STATE_PREFIX}{pid}.json"


def socket_path(directory: Path, pid: int) -> Path:
    return directory / f"{STATE_PREFIX}{pid}.sock"


def pid_of_state_file(name: str) -> int | None:
    """The pid in a state file's name, or None when the name is not one of ours."""
    match = _STATE_NAME.match(name)
    return int(match.group(1)) if match else None


def connection_file(argv: Sequence[str]) -> str | None:
    """The connection file a kernel's command line names, or None when it is not a kernel's.

    ``-f FILE`` (and ``--f=FILE``) is what jupyter_client writes for ipykernel; a
    bare argument named ``kernel-<id>.json`` covers kernels of other languages.
    """
    for index, arg in enumerate(argv):
        if arg in _FILE_FLAGS and index + 1 < len(argv):
            value = argv[index + 1]
        elif arg.startswith(tuple(f"{flag}=" for flag in _FILE_FLAGS)):
            value = arg.split("=", 1)[1]
        else:
            continue
        if value.endswith(".json") and (_KERNEL_FILE.match(os.path.basename(value)) or _mentions_ipykernel(argv)):
            return value
    for previous, arg in itertools.pairwise(argv):
        if previous in _CLIENT_FLAGS or arg.startswith(tuple(f"{flag}=" for flag in _CLIENT_FLAGS)):
            return None
        if _KERNEL_FILE.match(os.path.basename(arg)) and os.sep in arg:
            return arg
    return None


def _mentions_ipykernel(argv: Sequence[str]) -> bool:
    return any("ipykernel" in arg for arg in argv)


def kernel_id(connection: str | None) -> str | None:
    """``kernel-<id>.json`` -> ``<id>``; another file name -> its stem; None -> None."""
    if connection is None:
        return None
    name = os.path.basename(connection)
    match = _KERNEL_FILE.match(name)
    return match.group(1) if match else Path(name).stem


__all__ = [
    "MAX_SOCKET_PATH",
    "STATE_PREFIX",
    "connection_file",
    "kernel_id",
    "pid_of_state_file",
    "runtime_dir",
    "socket_path",
    "state_path",
]
