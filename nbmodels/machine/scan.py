"""Every Jupyter kernel on this machine, what it holds, and the GPU processes that are not kernels.

A kernel is found by its command line (it names a connection file, see
:mod:`nbmodels.machine.paths`), whether or not it runs nbmodels; a kernel that
does publishes a state file, looked for next to its connection file, in the
runtime directory its environment names, and in ours. Only this user's
kernels are read, and only folders that are this user's alone: another
user's kernel is counted, never listed, and nothing its command line names is
opened (see :mod:`nbmodels.machine.files`). A bad state file is one warning
and its kernel's row; the other rows still come. A state file whose
process has ended (or whose pid now belongs to another process) is stale: it
is ignored and removed. GPU memory comes from NVML per process; a kernel is
charged for its own and its child processes' (DataLoader workers, scripts it
started), and GPU processes outside every kernel are listed as others.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from nbmodels.core.nvml import GpuReadings, read_gpus
from nbmodels.machine import paths
from nbmodels.machine.errors import MachineError, RefusedError, StateFileError
from nbmodels.machine.files import check_private_dir, printable
from nbmodels.machine.state import KernelState, ModelState, read_state

log = logging.getLogger("nbmodels")

_START_TOLERANCE = 1.0  # seconds: create_time read twice can differ by rounding
_ATTRS = ["pid", "ppid", "cmdline", "uids", "create_time", "status", "name"]


@dataclass(frozen=True)
class KernelRow:
    """One kernel process: who it is, what it costs, and (with nbmodels) what it holds."""

    pid: int
    user: str
    kernel_id: str | None
    connection_file: str | None
    notebook: str | None
    rss: int | None
    gpu: dict[str, int] = field(hash=False)
    children: tuple[int, ...]
    state: KernelState | None
    state_error: str
    this_process: bool
    started: float
    child_rss: int = 0  # the RSS of its child processes (isolated models' workers, DataLoader workers, scripts)
    child_processes: int = 0

    @property
    def nbmodels(self) -> bool:
        """True when the kernel published its state (it runs the nbmodels extension)."""
        return self.state is not None

    @property
    def models(self) -> tuple[ModelState, ...]:
        return self.state.models if self.state is not None else ()

    @property
    def gpu_total(self) -> int:
        return sum(self.gpu.values())

    @property
    def short_id(self) -> str:
        return (self.kernel_id or "")[:8] or "-"


@dataclass(frozen=True)
class OtherProcess:
    """A process using a GPU that is not a kernel (nor a kernel's child)."""

    pid: int
    user: str
    command: str
    rss: int | None
    gpu: dict[str, int] = field(hash=False)

    @property
    def gpu_total(self) -> int:
        return sum(self.gpu.values())


@dataclass(frozen=True)
class MachineView:
    """One reading of the machine: kernels (largest first), other GPU processes, the GPUs, warnings."""

    kernels: tuple[KernelRow, ...]
    others: tuple[OtherProcess, ...]
    gpus: GpuReadings
    warnings: tuple[str, ...]
    runtime_dir: str
    taken_at: float
    other_users: int = 0  # kernels of other users: counted, not read, not listed

    def kernel(self, pid: int) -> KernelRow | None:
        return next((row for row in self.kernels if row.pid == pid), None)


# --- processes ------------------------------------------------------------------


@dataclass
class _Proc:
    pid: int
    ppid: int
    cmdline: list[str]
    uid: int | None
    started: float
    zombie: bool


def _processes() -> dict[int, _Proc]:
    found: dict[int, _Proc] = {}
    for process in psutil.process_iter(_ATTRS, ad_value=None):
        info = process.info
        uids = info.get("uids")
        found[info["pid"]] = _Proc(
            pid=info["pid"],
            ppid=info.get("ppid") or 0,
            cmdline=list(info.get("cmdline") or []),
            uid=uids.real if uids is not None else None,
            started=float(info.get("create_time") or 0.0),
            zombie=info.get("status") == psutil.STATUS_ZOMBIE,
        )
    return found


def _launcher_like(argv: list[str]) -> bool:
    """``python -m ipykernel_launcher ...`` itself, not a wrapper that runs it (``conda run ...``)."""
    if len(argv) >= 3 and argv[1] == "-m":
        return argv[2].startswith("ipykernel")
    return len(argv) >= 2 and os.path.basename(argv[1]).startswith("ipykernel")


def _pick_kernels(procs: Mapping[int, _Proc], state_pids: set[int]) -> dict[int, str]:
    """{kernel pid: connection file}: one process per connection file.

    Forked children (DataLoader workers) and wrappers share the kernel's command
    line; the kernel is the process that published state, else the topmost that
    runs the launcher itself, else the topmost.
    """
    groups: dict[str, list[_Proc]] = {}
    for proc in procs.values():
        if proc.zombie or not proc.cmdline:
            continue
        connection = paths.connection_file(proc.cmdline)
        if connection is not None:
            groups.setdefault(connection, []).append(proc)
    kernels: dict[int, str] = {}
    for connection, members in groups.items():
        pids = {m.pid for m in members}
        published = [m for m in members if m.pid in state_pids]
        topmost = [m for m in members if not (_ancestors(procs, m.pid) & pids)]
        if published:
            chosen = published
        else:
            launchers = [m for m in members if _launcher_like(m.cmdline)]
            top_launchers = [m for m in launchers if not (_ancestors(procs, m.pid) & {x.pid for x in launchers})]
            chosen = top_launchers or topmost
        for member in chosen:
            kernels[member.pid] = connection
    return kernels


def _descendants(procs: Mapping[int, _Proc], pid: int) -> list[int]:
    """Every live process below ``pid`` (children, their children...)."""
    below: dict[int, list[int]] = {}
    for proc in procs.values():
        below.setdefault(proc.ppid, []).append(proc.pid)
    found: list[int] = []
    todo = list(below.get(pid, ()))
    while todo:
        child = todo.pop()
        if child in found or child == pid:
            continue
        if not procs[child].zombie:
            found.append(child)
        todo.extend(below.get(child, ()))
    return sorted(found)


def _ancestors(procs: Mapping[int, _Proc], pid: int) -> set[int]:
    seen: set[int] = set()
    current = procs.get(pid)
    while current is not None and current.ppid and current.ppid not in seen:
        seen.add(current.ppid)
        current = procs.get(current.ppid)
    return seen


def _user(uid: int | None) -> str:
    if uid is None:
        return "?"
    try:
        import pwd

        return pwd.getpwuid(uid).pw_name
    except (ImportError, KeyError):
        return str(uid)


def current_user() -> str:
    """This process's user name, as the rows name theirs (from the uid, not from $USER)."""
    return _user(os.getuid())


def _environ(pid: int) -> dict[str, str]:
    try:
        return dict(psutil.Process(pid).environ())
    except (psutil.Error, OSError):
        return {}


def _rss(pid: int) -> int | None:
    try:
        return int(psutil.Process(pid).memory_info().rss)
    except (psutil.Error, OSError):
        return None


def _command(proc: _Proc | None) -> str:
    if proc is None or not proc.cmdline:
        return "?"
    text = " ".join([os.path.basename(proc.cmdline[0]), *proc.cmdline[1:]])
    return text if len(text) <= 60 else text[:59] + "…"


# --- state files ----------------------------------------------------------------


def _alive(procs: Mapping[int, _Proc] | None, pid: int, started: float | None) -> bool:
    """Whether ``pid`` runs (a zombie does not), and is the process that started at ``started``.

    ``procs`` is a reading of every process; without one, ``pid`` alone is read.
    """
    if procs is not None:
        proc = procs.get(pid)
        if proc is None or proc.zombie:
            return False
        created = proc.started
    else:
        try:
            process = psutil.Process(pid)
            if process.status() == psutil.STATUS_ZOMBIE:
                return False
            created = process.create_time()
        except (psutil.Error, OSError):
            return False
    return started is None or abs(created - started) <= _START_TOLERANCE


def _remove_ours(path: Path) -> None:
    """Remove a stale file, but only one that belongs to us (never another user's)."""
    try:
        if path.lstat().st_uid != os.getuid():
            return
        path.unlink()
        log.info("nbmodels: removed the stale %s", path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.debug("nbmodels: could not remove %s: %s", path, exc)


def _remove_stale(directory: Path, pid: int) -> None:
    _remove_ours(paths.state_path(directory, pid))
    _remove_ours(paths.socket_path(directory, pid))


def _list_dir(directory: Path) -> list[str]:
    """Names in ``directory``; [] when it does not exist; a one-line MachineError when it cannot be read.

    A folder that is not this user's alone is refused (RefusedError, one line).
    """
    try:
        check_private_dir(directory)
        return os.listdir(directory)
    except RefusedError:
        raise
    except FileNotFoundError:
        return []
    except NotADirectoryError:
        raise MachineError(f"the Jupyter runtime directory {directory} is not a directory") from None
    except PermissionError:
        raise MachineError(
            f"cannot read the Jupyter runtime directory {directory}: permission denied "
            "(check its permissions, or set JUPYTER_RUNTIME_DIR)"
        ) from None
    except OSError as exc:
        raise MachineError(f"cannot read the Jupyter runtime directory {directory}: {exc.strerror}") from None


def _state_pids(names: Iterable[str]) -> Iterator[int]:
    for name in names:
        pid = paths.pid_of_state_file(name)
        if pid is not None:
            yield pid


def clean_stale(directory: Path, procs: Mapping[int, _Proc] | None = None) -> None:
    """Remove the state files and sockets in ``directory`` of processes that have ended (ours only)."""
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for pid in _state_pids(names):
        if not _alive(procs, pid, None):
            _remove_stale(directory, pid)
    for name in names:  # sockets and half-written files whose process has ended
        if name.startswith(paths.STATE_PREFIX) and name.endswith(".sock"):
            pid_text = name[len(paths.STATE_PREFIX) : -len(".sock")]
            if pid_text.isdigit() and not _alive(procs, int(pid_text), None):
                _remove_ours(directory / name)
        elif name.startswith("." + paths.STATE_PREFIX) and name.endswith(".tmp") and ".json." in name:
            writer = name.split(".json.", 1)[1].split(".", 1)[0]  # .<state name>.<writer pid>[.<random>].tmp
            if writer.isdigit() and not _alive(procs, int(writer), None):
                _remove_ours(directory / name)


@dataclass
class _Found:
    state: KernelState | None = None
    path: Path | None = None
    error: str = ""


def _read_states(directories: Iterable[Path], pid: int, procs: Mapping[int, _Proc], warnings: list[str]) -> _Found:
    """The state file of ``pid`` in the first of ``directories`` that has one (stale ones removed)."""
    for directory in directories:
        path = paths.state_path(directory, pid)
        try:
            state = read_state(path)
        except FileNotFoundError:
            continue
        except StateFileError as exc:
            message = printable(str(exc), 400)
            warnings.append(message)
            return _Found(None, path, message)
        except OSError as exc:
            message = printable(f"{path}: cannot be read ({exc.strerror})", 400)
            warnings.append(message)
            return _Found(None, path, message)
        except Exception as exc:  # a file nbmodels did not write must never end the scan
            message = printable(f"{path}: refused ({type(exc).__name__})", 400)
            warnings.append(message)
            return _Found(None, path, message)
        if state.pid != pid or not _alive(procs, pid, state.process_started):
            _remove_stale(directory, pid)  # the pid now belongs to a later process
            continue
        return _Found(state, path)
    return _Found()


def _private(directory: Path) -> bool:
    """Whether ``directory`` is this user's alone (a folder named by a kernel is read only then)."""
    try:
        check_private_dir(directory)
    except (OSError, RefusedError):
        return False
    return True


def _mine(proc: _Proc) -> bool:
    getuid = getattr(os, "getuid", None)
    return getuid is None or proc.uid == getuid()


# --- the view ---------------------------------------------------------------------


def scan(
    runtime_dir: Path | None = None,
    *,
    gpus: GpuReadings | None = None,
    clean: bool = True,
) -> MachineView:
    """Read the machine now: every kernel process, its state, and who uses each GPU.

    ``runtime_dir`` is this user's Jupyter runtime directory (by default
    ``jupyter_runtime_dir()``). ``gpus`` are the GPU readings to use (by default
    NVML's now; pass recorded readings to replay them). ``clean`` removes stale
    state files. Raises MachineError when the runtime directory cannot be read.
    """
    taken_at = time.time()
    ours = runtime_dir if runtime_dir is not None else paths.runtime_dir()
    names = _list_dir(ours)
    readings = gpus if gpus is not None else read_gpus()
    procs = _processes()
    if clean:
        clean_stale(ours, procs)
    published = {pid for pid in _state_pids(names) if _alive(procs, pid, None)}
    kernels = _pick_kernels(procs, published)
    for pid in published - set(kernels):  # it publishes but its command line hides the connection file
        kernels[pid] = ""

    warnings: list[str] = []
    usage = readings.by_pid()
    charged: set[int] = set()
    rows = []
    other_users = 0
    for pid, connection in kernels.items():
        proc = procs[pid]
        if not _mine(proc):  # another user's: nothing it names is read, and it is not listed
            other_users += 1
            continue
        environ = _environ(pid)
        directories = [Path(connection).parent] if connection else []
        if environ.get("JUPYTER_RUNTIME_DIR"):
            directories.append(Path(environ["JUPYTER_RUNTIME_DIR"]))
        directories = [d for d in directories if d != ours and _private(d)]
        directories.append(ours)
        found = _read_states(dict.fromkeys(directories), pid, procs, warnings)
        state = found.state
        children = tuple(sorted(p for p in usage if p != pid and pid in _ancestors(procs, p)))
        gpu: dict[str, int] = {}
        for holder in (pid, *children):
            for label, nbytes in usage.get(holder, {}).items():
                gpu[label] = gpu.get(label, 0) + nbytes
            charged.add(holder)
        below = _descendants(procs, pid)
        child_rss = sum(_rss(child) or 0 for child in below)
        notebook = (state.notebook if state is not None else None) or environ.get("JPY_SESSION_NAME") or None
        connection_file = connection or (state.connection_file if state is not None else None)
        rows.append(
            KernelRow(
                pid=pid,
                user=_user(proc.uid),
                kernel_id=paths.kernel_id(connection) if connection else (state.kernel_id if state else None),
                connection_file=connection_file,
                notebook=notebook,
                rss=_rss(pid),
                gpu=gpu,
                children=children,
                state=state,
                state_error=found.error,
                this_process=pid == os.getpid(),
                started=proc.started,
                child_rss=child_rss,
                child_processes=len(below),
            )
        )
    rows.sort(key=lambda r: (-r.gpu_total, -((r.rss or 0) + r.child_rss), r.pid))
    others = [
        OtherProcess(
            pid=pid,
            user=_user(procs[pid].uid if pid in procs else None),
            command=_command(procs.get(pid)),
            rss=_rss(pid),
            gpu=dict(by_device),
        )
        for pid, by_device in usage.items()
        if pid not in charged
    ]
    others.sort(key=lambda o: (-o.gpu_total, o.pid))
    return MachineView(
        kernels=tuple(rows),
        others=tuple(others),
        gpus=readings,
        warnings=tuple(warnings),
        runtime_dir=os.fspath(ours),
        taken_at=taken_at,
        other_users=other_users,
    )


__all__ = ["KernelRow", "MachineView", "OtherProcess", "clean_stale", "current_user", "scan"]
