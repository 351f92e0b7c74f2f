"""HTML for the panel's read-only parts: memory bars, table cells, the status line.

Plain functions of records (DeviceMemory, ModelInfo), without ipywidgets, so
what the panel shows can be tested as text. Every value is escaped.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from typing import Literal

from nbmodels.core.memory import DeviceMemory, format_bytes
from nbmodels.core.policy.sizes import format_duration
from nbmodels.core.reports import ModelInfo, ReleaseReport
from nbmodels.widgets.force import ForcePlan

StatusKind = Literal["info", "busy", "ok", "warn", "error"]

COLUMNS = ("name", "source", "device", "dtype", "params", "size", "load", "last used", "hits", "pin", "unloads")
_NUMERIC = frozenset({"params", "size", "load", "hits"})
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def css_name(name: str) -> str:
    """A model name made safe for a CSS class (``nbmodels-row-<css_name>``)."""
    return _UNSAFE.sub("-", name)


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _pct(part: int, total: int) -> str:
    return f"{max(min(part / total * 100, 100.0), 0.0):.2f}%" if total > 0 else "0%"


def _seg(kind: str, part: int, total: int, title: str) -> str:
    nonzero = " nbm-nonzero" if part > 0 else ""
    return (
        f'<span class="nbm-seg nbm-seg-{kind}{nonzero}" style="width:{_pct(part, total)}" '
        f'title="{_e(title)}: {_e(format_bytes(part))}"></span>'
    )


def compact_count(n: int | None) -> str:
    """1234567 -> '1.23M': parameter counts at a glance (the exact count goes in a tooltip)."""
    if n is None:
        return "?"
    for unit, size in (("B", 10**9), ("M", 10**6), ("K", 10**3)):
        if abs(n) >= size:
            return f"{n / size:.3g}{unit}"
    return str(n)


def memory_bars(readings: Sequence[DeviceMemory], model_bytes: dict[str, int], cuda_devices: int = 0) -> str:
    """One bar per device: the CPU (this process against the machine) and each CUDA device.

    ``model_bytes`` is what loaded models account for per device, drawn as the
    darkest part of the bar. CUDA devices that have no context in this process
    yet get a line saying so rather than a bar.
    """
    rows = []
    seen = set()
    for reading in readings:
        seen.add(reading.device)
        if reading.device == "cpu":
            rows.append(_cpu_bar(reading, model_bytes.get("cpu", 0)))
        else:
            rows.append(_cuda_bar(reading, model_bytes.get(reading.device, 0)))
    for index in range(cuda_devices):
        device = f"cuda:{index}"
        if device not in seen:
            rows.append(
                f'<div class="nbm-bar-row nbmodels-bar-{css_name(device)}" data-device="{device}">'
                f'<div class="nbm-bar-label">{device}</div><div class="nbm-track"></div>'
                '<div class="nbm-bar-text">no CUDA context in this process yet</div></div>'
            )
    legend = (
        '<div class="nbm-legend"><i class="nbm-seg-models"></i>models'
        '<i class="nbm-seg-process"></i>rest of this process<i class="nbm-seg-other"></i>other processes'
    )
    if any(r.device != "cpu" for r in readings) or cuda_devices:
        legend += (
            '<i class="nbm-seg-floor"></i>CUDA context floor (not returnable)'
            '<i class="nbm-seg-allocated"></i>allocated<i class="nbm-seg-reserved"></i>cached'
        )
    return '<div class="nbm-bars">' + "".join(rows) + legend + "</div></div>"


def _cpu_bar(reading: DeviceMemory, models: int) -> str:
    total = reading.total or 0
    rss = reading.used
    models = min(models, rss)
    others = max(total - (reading.available or 0) - rss, 0) if reading.available is not None else 0
    track = (
        _seg("models", models, total, "models")
        + _seg("process", rss - models, total, "rest of this process")
        + _seg("other", others, total, "other processes")
    )
    used_by_system = total - (reading.available or 0)
    text = (
        f"RSS <b>{_e(format_bytes(rss))}</b> · models {_e(format_bytes(models))}"
        f" · machine {_e(format_bytes(used_by_system))} / {_e(format_bytes(total))} used"
    )
    return (
        f'<div class="nbm-bar-row nbmodels-bar-cpu" data-device="cpu" data-used="{rss}" data-total="{total}">'
        f'<div class="nbm-bar-label">CPU</div><div class="nbm-track" title="process RSS against machine memory">'
        f'{track}</div><div class="nbm-bar-text">{text}</div></div>'
    )


def _cuda_bar(reading: DeviceMemory, models: int) -> str:
    total = reading.total or 0
    allocated = reading.used
    reserved = max(reading.reserved or 0, allocated)
    floor = reading.context_floor or 0
    models = min(models, allocated)
    track = (
        _seg("floor", floor, total, "CUDA context and other processes (not returnable)")
        + _seg("gpu-models", models, total, "models")
        + _seg("allocated", allocated - models, total, "other tensors")
        + _seg("reserved", reserved - allocated, total, "cached by torch (returned by cleanup)")
    )
    if floor:
        track += f'<span class="nbm-floor-mark" style="left:{_pct(floor, total)}" title="CUDA context floor"></span>'
    text = (
        f"allocated <b>{_e(format_bytes(allocated))}</b> · reserved {_e(format_bytes(reserved))}"
        f" · context floor {_e(format_bytes(floor))} · {_e(format_bytes(reading.available))} free"
        f" of {_e(format_bytes(total))}"
    )
    device = _e(reading.device)
    return (
        f'<div class="nbm-bar-row nbmodels-bar-{css_name(reading.device)}" data-device="{device}" '
        f'data-used="{allocated}" data-reserved="{reserved}" data-floor="{floor}" data-total="{total}">'
        f'<div class="nbm-bar-label">{device}</div><div class="nbm-track">{track}</div>'
        f'<div class="nbm-bar-text">{text}</div></div>'
    )


def header_cells() -> str:
    cells = "".join(f'<div class="nbm-c{" nbm-num" if c in _NUMERIC else ""}">{_e(c)}</div>' for c in COLUMNS)
    return f'<div class="nbm-cells nbm-head">{cells}</div>'


def row_cells(info: ModelInfo, largest: int) -> str:
    """A table row's text cells; ``largest`` scales the small size bar under each size."""
    name, source, class_name, devices, dtypes, _params, size, load, last_used, hits = info.row()[:10]
    chips = "".join(
        f'<span class="nbm-chip nbm-chip-{"cuda" if d.startswith("cuda") else "cpu"}">{_e(d)}</span>'
        for d in (info.devices or ("?",))
    )
    if info.runner != "kernel":  # it runs elsewhere: the chip says where (a worker process, a Ray actor)
        chips += f'<span class="nbm-chip nbm-chip-worker" title="runs in {_e(info.where)}">{_e(info.where)}</span>'

    total = info.total_bytes or 0
    counted = None if info.unmeasured else info.parameters  # packed weights it cannot count: "?", never a part
    exact_params = (
        f"{counted:,} parameters"
        if counted is not None
        else "not counted: " + (", ".join(info.unmeasured) or "not a torch module")
    )
    cells = [
        f'<div class="nbm-c nbm-name" title="{_e(name)} ({_e(class_name)})"><b>{_e(name)}</b>'
        f'<span class="nbm-sub">{_e(class_name)}</span></div>',
        f'<div class="nbm-c nbm-source" title="{_e(source)}">{_e(source)}</div>',
        f'<div class="nbm-c" title="{_e(devices)}">{chips}</div>',
        f'<div class="nbm-c" title="{_e(dtypes)}">{_e(dtypes)}</div>',
        f'<div class="nbm-c nbm-num" title="{_e(exact_params)}">{_e(compact_count(counted))}</div>',
        f'<div class="nbm-c nbm-num nbm-size" data-bytes="{total}">{_e(size)}'
        f'<div class="nbm-minibar"><i style="width:{_pct(total, largest)}"></i></div></div>',
        f'<div class="nbm-c nbm-num">{_e(load)}</div>',
        f'<div class="nbm-c">{_e(last_used)}</div>',
        f'<div class="nbm-c nbm-num">{_e(hits)}</div>',
        f'<div class="nbm-c nbm-pin" title="pinned">{"✓" if info.pinned else ""}</div>',
        f'<div class="nbm-c nbm-unloads" title="{_e(_keep_alive_title(info))}">{_e(info.unloads)}</div>',
    ]
    return '<div class="nbm-cells">' + "".join(cells) + "</div>"


def _keep_alive_title(info: ModelInfo) -> str:
    """The unloads cell's tooltip: the keep-alive, and why the model is kept when it is."""
    if info.keep_alive is None:
        return "keep-alive: forever (never unloaded for being idle)"
    if info.pinned:
        return f"keep-alive {format_duration(info.keep_alive)}, but pinned: never unloaded"
    return f"keep-alive {format_duration(info.keep_alive)}: unloaded after that long idle"


def elapsed_text(seconds: float | None) -> str:
    """``loading…`` for the first second, then the time it has taken so far (``loading… 12 s``)."""
    if seconds is None or seconds < 1.0:
        return "loading…"
    if seconds < 60:
        return f"loading… {seconds:.0f} s"
    return f"loading… {int(seconds // 60)} min {int(seconds % 60):02d} s"


def pending_cells(name: str, seconds: float | None = None) -> str:
    """A load in flight: its name and how long it has run (``seconds`` since it started, when known)."""
    return (
        f'<div class="nbm-cells"><div class="nbm-c nbm-name"><b>{_e(name)}</b></div>'
        f'<div class="nbm-c nbm-pending-text nbm-busy" style="grid-column: span 10">{_e(elapsed_text(seconds))}</div>'
        "</div>"
    )


def held_cells(plan: ForcePlan | None, name: str, loaded_too: bool) -> str:
    """A released model that something still holds: who holds it and what force would remove."""
    what = "released, still held"  # short: the name column is narrow; what exactly is held goes in the detail
    if plan is None:
        detail = "press Check to see what holds it and what force would remove"
    else:
        held_by = ", ".join(plan.holders) or "a holder outside Python's view"
        if not plan.what.startswith("the model"):  # a part of it (some of its storages): say how much
            held_by = f"{held_by} ({plan.what} still alive)"
        if plan.can_force:
            detail = f"held by {held_by} · force would: {'; '.join(plan.actions)}"
        else:
            detail = f"held by {held_by} · force cannot free it: {plan.blocked}"
    if loaded_too:
        detail += f" · a new {name} is loaded: unload it first to free the old one"
    return (
        f'<div class="nbm-cells nbm-held"><div class="nbm-c nbm-name" title="{_e(name)}"><b>{_e(name)}</b>'
        f'<span class="nbm-sub">{_e(what)}</span></div>'
        f'<div class="nbm-c nbm-plan" style="grid-column: span 10" title="{_e(detail)}">{_e(detail)}</div></div>'
    )


def summary(infos: Sequence[ModelInfo], loading: Sequence[str]) -> str:
    """The header's one line: how many models, what they take per device, what is loading."""
    if not infos and not loading:
        return "no models loaded"
    per_device: dict[str, int] = {}
    for info in infos:
        for device, nbytes in info.bytes_by_device.items():
            per_device[device] = per_device.get(device, 0) + nbytes
    parts = [f"{len(infos)} model{'s' if len(infos) != 1 else ''}"]
    if per_device:
        total = sum(per_device.values())
        where = ", ".join(f"{d} {format_bytes(n)}" for d, n in sorted(per_device.items()))
        parts.append(f"<b>{_e(format_bytes(total))}</b> ({_e(where)})")
    if loading:
        parts.append(f"loading {_e(', '.join(loading))}")
    return " · ".join(parts)


def report_text(report: ReleaseReport) -> tuple[str, StatusKind]:
    """A release report as one status line; a warning when something survived or failed."""
    text = " · ".join(report.lines())
    if any(alive.fix for alive in report.still_alive) and not report.forced:
        text += " · its row below shows what force would remove: Force free runs it"
    return text, ("ok" if report.ok else "warn")


_MARKS: dict[str, str] = {"info": "•", "busy": "", "ok": "✓", "warn": "⚠", "error": "✕"}


def status_line(text: str, kind: StatusKind) -> str:
    busy = " nbm-busy" if kind == "busy" else ""
    mark = f'<span class="nbm-mark">{_MARKS[kind]}</span>' if _MARKS[kind] else ""
    return f'<div class="nbm-status nbm-status-{kind}{busy}" data-kind="{kind}">{mark}{_e(text)}</div>'


def empty_table() -> str:
    return (
        '<div class="nbm-empty">No models loaded. Load one below, with <code>%load_model</code> '
        "or with <code>nbmodels.get_manager().load(…)</code>; it shows up here.</div>"
    )
