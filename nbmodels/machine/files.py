"""Files another user may have touched: read and write them so that nobody else can redirect or hang us.

A runtime folder may be shared, or planted, by another user of the machine. So
every folder nbmodels reads state from or writes state to must be owned by
this user and writable by nobody else (:func:`check_private_dir`); a state
file is opened without following a symlink and without blocking on a FIFO,
and accepted only when it is a regular file of this user below a size limit
(:func:`read_private_file`); a write goes to a fresh random name created
exclusively, then renamed into place (:func:`write_private_file`), so a
planted symlink or file at a guessable name cannot take it elsewhere. Text
that came from such a file is printed through :func:`printable`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import unicodedata
from pathlib import Path

from nbmodels.machine.errors import RefusedError, StateFileError

MAX_FILE_BYTES = 1 << 20
TEMP_SUFFIX = ".tmp"
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def _uid() -> int | None:
    getuid = getattr(os, "getuid", None)
    return getuid() if getuid is not None else None


def check_private_dir(directory: Path) -> None:
    """Refuse (RefusedError, one line) a folder that is not this user's alone.

    It must be a directory owned by this user and not writable by its group or
    by others; otherwise another user could plant, swap or remove files in it.
    A missing folder raises FileNotFoundError (the caller decides whether to
    create it), a file NotADirectoryError.
    """
    me = _uid()
    info = os.stat(directory)  # a symlink to a folder is judged by the folder it names
    if not stat.S_ISDIR(info.st_mode):
        raise NotADirectoryError(errno.ENOTDIR, "not a directory", os.fspath(directory))
    if me is None:
        return
    if info.st_uid != me:
        raise RefusedError(
            f"refusing the folder {directory}: it belongs to uid {info.st_uid}, not to you (uid {me}); "
            "set JUPYTER_RUNTIME_DIR to a folder of your own"
        )
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise RefusedError(
            f"refusing the folder {directory}: other users can write to it (mode {stat.S_IMODE(info.st_mode):o}); "
            f"run chmod 700 {directory}"
        )


def read_private_file(path: Path, limit: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of ``path``: a regular file of this user, at most ``limit`` bytes.

    Never follows a symlink at ``path`` and never blocks (a FIFO or a device is
    refused, not opened for reading). FileNotFoundError when it is not there;
    StateFileError (one line) for anything else it should not be.
    """
    try:
        fd = os.open(path, os.O_RDONLY | _NOFOLLOW | _NONBLOCK | _CLOEXEC)
    except FileNotFoundError:
        raise
    except OSError as exc:
        if os.path.islink(path):
            raise StateFileError(f"{path}: a symbolic link, not a file nbmodels wrote; refused") from None
        raise StateFileError(f"{path}: cannot be read ({exc.strerror})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise StateFileError(f"{path}: not a regular file (a FIFO, socket or device?); refused")
        me = _uid()
        if me is not None and info.st_uid != me:
            raise StateFileError(f"{path}: belongs to uid {info.st_uid}, not to you; refused")
        if info.st_size > limit:
            raise StateFileError(f"{path}: larger than {limit} bytes; not a state file nbmodels wrote")
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except BlockingIOError:
        raise StateFileError(f"{path}: not a regular file; refused") from None
    finally:
        os.close(fd)
    if size > limit:
        raise StateFileError(f"{path}: larger than {limit} bytes; not a state file nbmodels wrote")
    return b"".join(chunks)


def write_private_file(path: Path, data: bytes, *, durable: bool = False) -> None:
    """Replace ``path`` with ``data``: readers see the old file or the new one, never a mix, and nobody redirects it.

    The folder is checked first (:func:`check_private_dir`); the data goes to a
    fresh random name opened with ``O_CREAT|O_EXCL|O_NOFOLLOW`` (mode 0600), then
    ``os.replace`` puts it in place. ``durable`` flushes the file to disk first,
    for records that matter after a crash. On any failure the temporary file is
    removed and the error (an OSError, or RefusedError for the folder) raised.
    """
    directory = path.parent
    check_private_dir(directory)
    temporary = directory / f".{path.name}.{os.getpid()}.{os.urandom(8).hex()}{TEMP_SUFFIX}"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC, 0o600)
    try:
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def printable(text: str, limit: int = 200) -> str:
    """``text`` safe to print in a terminal or a notebook: control, format and bidi characters escaped, length cut.

    ESC, NUL, BEL, the bidi overrides (U+202A..U+202E, U+2066..U+2069) and line
    breaks become ``\\x1b``-style escapes, so a name from another process cannot
    move the cursor, set a window title, clear the screen or reorder what follows.
    """
    out: list[str] = []
    for char in text:
        category = unicodedata.category(char)
        if category in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"):
            code = ord(char)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
        else:
            out.append(char)
    result = "".join(out)
    return result if len(result) <= limit else result[: limit - 1] + "…"


__all__ = ["MAX_FILE_BYTES", "TEMP_SUFFIX", "check_private_dir", "printable", "read_private_file", "write_private_file"]
