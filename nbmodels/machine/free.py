"""``python -m nbmodels free KERNEL``: pick a kernel by what the user typed, and ask it to release its models.

KERNEL is a pid, a kernel id (or its first characters, as ``ps`` shows them),
or a notebook (its path, file name, or file name without ``.ipynb``). An exact
pid wins over a notebook, a notebook over an id prefix; two kernels that match
equally are an error that lists both. The request goes to the kernel's own
control socket (see :mod:`nbmodels.machine.control`); the answer says what
was released, what came back, and what the kernel still uses.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from nbmodels.core.memory import format_bytes
from nbmodels.core.nvml import GpuReadings
from nbmodels.machine.control import send_request
from nbmodels.machine.errors import KernelNotFoundError, MachineError, NotNbmodelsKernelError, StateFileError
from nbmodels.machine.scan import KernelRow, MachineView, scan
from nbmodels.machine.state import VERSION
from nbmodels.machine.view import notebook_text

DEFAULT_TIMEOUT = 30.0


def describe(row: KernelRow) -> str:
    """``kernel 3f2a9c1e (pid 4242, ~/train.ipynb)``."""
    where = f", {notebook_text(row.notebook)}" if row.notebook else ""
    return f"kernel {row.short_id} (pid {row.pid}{where})"


def _notebook_matches(notebook: str | None, query: str) -> bool:
    if not notebook:
        return False
    name = os.path.basename(notebook)
    stem = name[: -len(".ipynb")] if name.endswith(".ipynb") else name
    return query in (notebook, name, stem) or notebook.endswith(os.sep + query.lstrip(os.sep))


def _running(pid: int) -> bool:
    """True for a live process; False for none, and for a zombie (ended, not yet reaped by its parent)."""
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def find_kernel(view: MachineView, query: str) -> KernelRow:
    """The one kernel ``query`` names; KernelNotFoundError (one line) when none or several do."""
    text = query.strip()
    if not text:
        raise KernelNotFoundError("say which kernel: a pid, a kernel id prefix or a notebook name (see nbmodels ps)")
    lowered = text.lower()
    tiers: list[Callable[[KernelRow], bool]] = [
        lambda r: text.isdigit() and r.pid == int(text),
        lambda r: (r.kernel_id or "").lower() == lowered,
        lambda r: _notebook_matches(r.notebook, text),
        lambda r: bool(r.kernel_id) and (r.kernel_id or "").lower().startswith(lowered),
    ]
    for matches_tier in tiers:
        matches = [row for row in view.kernels if matches_tier(row)]
        if len(matches) == 1:
            return matches[0]
        if matches:
            listed = "; ".join(describe(row) for row in matches[:6])
            raise KernelNotFoundError(
                f"{text!r} matches {len(matches)} kernels: {listed}; give the pid or more of the kernel id"
            )
    if text.isdigit():
        pid = int(text)
        if not _running(pid):
            raise KernelNotFoundError(f"no process with pid {pid} (has it ended?); nbmodels ps lists the kernels")
        raise KernelNotFoundError(f"process {pid} is not a Jupyter kernel; nbmodels ps lists the kernels")
    raise KernelNotFoundError(
        f"no kernel matches {text!r} (a pid, a kernel id prefix or a notebook name); nbmodels ps lists the kernels"
    )


@dataclass(frozen=True)
class FreeResult:
    """What a kernel answered to a free request."""

    kernel: KernelRow
    reply: dict[str, Any] = field(hash=False)

    @property
    def released(self) -> list[str]:
        return list(self.reply.get("released", []))

    @property
    def still_alive(self) -> list[dict[str, Any]]:
        return list(self.reply.get("still_alive", []))

    def lines(self) -> list[str]:
        reply = self.reply
        released = self.released
        if released:
            freed = ", ".join(f"{d} {format_bytes(n)}" for d, n in sorted(reply.get("freed_bytes", {}).items()))
            head = f"{describe(self.kernel)}: released {len(released)} model(s): {', '.join(released)}"
            head += f"; freed {freed}" if freed else ("; nothing freed yet" if self.still_alive else "; freed 0 B")
        else:
            head = f"{describe(self.kernel)}: nothing to release"
        lines = [head]
        lines += [f"  {alive['text']}" for alive in self.still_alive]
        if reply.get("pending"):
            lines.append(f"  still loading (left as is): {', '.join(reply['pending'])}")
        lines += [f"  error releasing {name}: {message}" for name, message in sorted(reply.get("errors", {}).items())]
        return lines

    def __str__(self) -> str:
        return "\n".join(self.lines())


def free_row(row: KernelRow, *, timeout: float = DEFAULT_TIMEOUT) -> FreeResult:
    """Ask the kernel of ``row`` to release every model it holds."""
    if row.state is None:
        if row.state_error:
            raise StateFileError(f"{describe(row)}: {row.state_error}")
        raise NotNbmodelsKernelError(
            f"{describe(row)} is not an nbmodels kernel: it never ran %load_ext nbmodels, so nothing in it "
            "can release models; load the extension there, or restart that kernel to free its memory"
        )
    if row.state.socket is None:
        raise MachineError(f"{describe(row)} has no control socket (it could not create one); free it from inside")
    reply = send_request(Path(row.state.socket), row.pid, {"request": "free", "version": VERSION}, timeout=timeout)
    if not reply.get("ok"):
        raise MachineError(f"{describe(row)} did not free: {reply.get('error', 'no reason given')}")
    return FreeResult(row, reply)


def free_kernel(query: str, *, runtime_dir: Path | None = None, timeout: float = DEFAULT_TIMEOUT) -> FreeResult:
    """Find the kernel ``query`` names and ask it to release its models (MachineError on any problem)."""
    view = scan(runtime_dir, gpus=GpuReadings())  # who holds which GPU does not matter here
    return free_row(find_kernel(view, query), timeout=timeout)


__all__ = ["DEFAULT_TIMEOUT", "FreeResult", "describe", "find_kernel", "free_kernel", "free_row"]
