"""How the machine view reads: a text table like ``ollama ps``, JSON for scripts, HTML for notebooks.

Plain functions of a :class:`~nbmodels.machine.scan.MachineView`; nothing here
reads the machine, so what each form shows is tested as text.
"""

from __future__ import annotations

import html
import os
import time
from collections.abc import Sequence
from typing import Any

from nbmodels.core.memory import format_bytes
from nbmodels.machine.files import printable
from nbmodels.machine.scan import KernelRow, MachineView, OtherProcess, current_user
from nbmodels.machine.state import VERSION

JSON_FORMAT = "nbmodels-ps"
_NOTEBOOK_WIDTH = 40


def age(seconds: float) -> str:
    """12 -> '12s', 300 -> '5m', 7560 -> '2.1h', 3 days -> '3.0d'."""
    seconds = max(seconds, 0.0)
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    if seconds < 86400:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def activity(row: KernelRow, now: float) -> str:
    """'busy 2m' while a cell runs, 'idle 5m' since the last cell ended; '?' without nbmodels."""
    if row.state is None:
        return "?"
    return f"{'busy' if row.state.busy else 'idle'} {age(now - row.state.activity)}"


def notebook_text(path: str | None, width: int = _NOTEBOOK_WIDTH) -> str:
    if not path:
        return "?"
    path = printable(path, 10_000)
    home = os.path.expanduser("~")
    if home not in ("", "/") and (path == home or path.startswith(home + os.sep)):
        path = "~" + path[len(home) :]
    return path if len(path) <= width else "…" + path[-(width - 1) :]


def gpu_text(by_device: dict[str, int]) -> str:
    return ", ".join(f"{printable(label)} {format_bytes(n)}" for label, n in sorted(by_device.items())) or "-"


def models_text(row: KernelRow) -> str:
    if row.state_error:
        return "(state file unreadable)"
    if row.state is None:
        return "(no nbmodels)"
    parts = [f"{printable(m.name)} {format_bytes(m.total_bytes)}" for m in row.state.models]
    parts += [f"{printable(name)} (loading)" for name in row.state.loading]
    parts += [f"{printable(name)} (released, still held)" for name in row.state.in_use]
    return ", ".join(parts) or "none"


def rss_text(row: KernelRow) -> str:
    """The kernel's RSS, and its child processes' (an isolated model's worker holds its model there)."""
    text = format_bytes(row.rss)
    if row.child_processes:
        text += (
            f" +{format_bytes(row.child_rss)} in {row.child_processes} child{'' if row.child_processes == 1 else 'ren'}"
        )
    return text


def _kernel_cells(row: KernelRow, now: float, with_user: bool) -> list[str]:
    cells = [("*" if row.this_process else "") + printable(row.short_id), str(row.pid)]
    if with_user:
        cells.append(printable(row.user))
    return [
        *cells,
        notebook_text(row.notebook),
        rss_text(row),
        gpu_text(row.gpu),
        models_text(row),
        activity(row, now),
    ]


def _other_cells(other: OtherProcess, with_user: bool) -> list[str]:
    cells = ["other", str(other.pid)]
    if with_user:
        cells.append(printable(other.user))
    return [*cells, printable(other.command), format_bytes(other.rss), gpu_text(other.gpu), "", ""]


def _with_user(view: MachineView) -> bool:
    """Show a USER column only when some process belongs to another user."""
    me = current_user()
    return any(r.user != me for r in view.kernels) or any(o.user != me for o in view.others)


def headers(view: MachineView) -> list[str]:
    columns = ["KERNEL", "PID"]
    if _with_user(view):
        columns.append("USER")
    return [*columns, "NOTEBOOK", "RSS", "GPU", "MODELS", "IDLE"]


def rows(view: MachineView, now: float | None = None) -> list[list[str]]:
    now = time.time() if now is None else now
    with_user = _with_user(view)
    return [_kernel_cells(r, now, with_user) for r in view.kernels] + [_other_cells(o, with_user) for o in view.others]


def gpu_lines(view: MachineView) -> list[str]:
    if not view.gpus.devices:
        return [view.gpus.note] if view.gpus.note else []
    return [
        f"{d.label} {d.name}: {format_bytes(d.used)} used of {format_bytes(d.total)} ({len(d.processes)} process(es))"
        for d in view.gpus.devices
    ]


def summary(view: MachineView, *, star: bool = True) -> str:
    with_nbmodels = sum(1 for r in view.kernels if r.nbmodels)
    text = f"{len(view.kernels)} kernel(s), {with_nbmodels} with nbmodels"
    if view.others:
        text += f"; {len(view.others)} other GPU process(es)"
    if view.other_users:
        text += f"; {view.other_users} kernel(s) of other users not shown"
    if star and any(r.this_process for r in view.kernels):
        text += "; * is this kernel"
    return text


def text_table(view: MachineView, now: float | None = None) -> str:
    """The ``python -m nbmodels ps`` table, with a summary line and one line per GPU."""
    head = headers(view)
    body = rows(view, now)
    widths = [len(h) for h in head]
    for row in body:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    lines = ["   ".join(c.ljust(w) for c, w in zip(head, widths, strict=True)).rstrip()]
    lines += ["   ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in body]
    if not body:
        lines.append("(no Jupyter kernels running)")
    lines += ["", summary(view), *gpu_lines(view)]
    return "\n".join(lines)


def html_table(view: MachineView, now: float | None = None) -> str:
    head = "".join(f"<th>{html.escape(h.lower())}</th>" for h in headers(view))
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows(view, now))
    foot = "".join(f"<p>{html.escape(line)}</p>" for line in (summary(view), *gpu_lines(view)))
    return (
        f'<div class="nbmodels-machine"><table class="nbmodels"><thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table>{foot}</div>"
    )


def _kernel_dict(row: KernelRow, now: float) -> dict[str, Any]:
    state = row.state
    return {
        "pid": row.pid,
        "user": row.user,
        "kernel_id": row.kernel_id,
        "connection_file": row.connection_file,
        "notebook": row.notebook,
        "rss": row.rss,
        "child_rss": row.child_rss,
        "child_processes": row.child_processes,
        "gpu": dict(row.gpu),
        "gpu_children": list(row.children),
        "nbmodels": row.nbmodels,
        "state_error": row.state_error or None,
        "this_process": row.this_process,
        "busy": state.busy if state else None,
        "idle_seconds": None if state is None or state.busy else round(now - state.activity, 3),
        "busy_seconds": round(now - state.activity, 3) if state and state.busy else None,
        "models": [
            {
                "name": m.name,
                "source": m.source,
                "class_name": m.class_name,
                "bytes_by_device": dict(m.bytes_by_device),
                "parameters": m.parameters,
                "last_used": m.last_used,
                "pinned": m.pinned,
            }
            for m in row.models
        ],
        "loading": list(state.loading) if state else [],
        "held": list(state.in_use) if state else [],  # released, still held by a variable or a running cell
    }


def as_dict(view: MachineView, now: float | None = None) -> dict[str, Any]:
    """``python -m nbmodels ps --json``: everything in the table, as numbers and names."""
    now = time.time() if now is None else now
    return {
        "format": JSON_FORMAT,
        "version": VERSION,
        "time": view.taken_at,
        "runtime_dir": view.runtime_dir,
        "kernels": [_kernel_dict(r, now) for r in view.kernels],
        "others": [
            {"pid": o.pid, "user": o.user, "command": o.command, "rss": o.rss, "gpu": dict(o.gpu)} for o in view.others
        ],
        "gpus": [
            {
                "label": d.label,
                "index": d.index,
                "name": d.name,
                "uuid": d.uuid,
                "total": d.total,
                "used": d.used,
                "processes": {str(pid): n for pid, n in d.processes.items()},
            }
            for d in view.gpus.devices
        ],
        "gpu_note": view.gpus.note or None,
        "warnings": list(view.warnings),
    }


class MachineTable:
    """A MachineView that shows itself: the text table in terminals, HTML in notebooks (``%list_models --all``)."""

    def __init__(self, view: MachineView) -> None:
        self.view = view

    @property
    def kernels(self) -> Sequence[KernelRow]:
        return self.view.kernels

    def __str__(self) -> str:
        return text_table(self.view)

    def __repr__(self) -> str:
        return f"<nbmodels machine view: {summary(self.view)}>"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(str(self))

    def _repr_html_(self) -> str:
        return html_table(self.view)


__all__ = ["MachineTable", "activity", "age", "as_dict", "html_table", "models_text", "text_table"]
