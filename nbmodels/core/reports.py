"""Frozen records the manager hands out: what is loaded, what a release did, what happened.

None of them holds a model: they carry names, numbers and text, so keeping a
report (in ``Out``, a widget or a log) never keeps a model alive.
"""

from __future__ import annotations

import html
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from nbmodels.core.memory import format_bytes


def _text_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return "\n".join(lines)


def _html_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="nbmodels"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _ago(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    seconds = max(time.time() - timestamp, 0.0)
    if seconds < 60:
        return f"{seconds:.0f}s ago"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m ago"
    return f"{seconds / 3600:.1f}h ago"


@dataclass(frozen=True)
class ModelInfo:
    """One loaded model. Fields that cannot be known for an object are None, never guessed."""

    name: str
    source: str
    class_name: str
    devices: tuple[str, ...]
    dtypes: tuple[str, ...]
    parameters: int | None
    bytes_by_device: dict[str, int] = field(hash=False)
    rss_delta: int | None
    cuda_allocated_delta: dict[str, int] = field(hash=False)
    load_seconds: float
    loaded_at: float
    last_used: float
    hits: int
    pinned: bool

    @property
    def total_bytes(self) -> int | None:
        """Accounted bytes on every device together; None when nothing could be counted."""
        return sum(self.bytes_by_device.values()) if self.bytes_by_device else None

    @property
    def device(self) -> str | None:
        """The device holding most of the model."""
        return self.devices[0] if self.devices else None

    def summary(self) -> str:
        """One line: name, device, parameters, size, load time."""
        params = f"{self.parameters:,} params" if self.parameters is not None else "params ?"
        return (
            f"{self.name}: {self.class_name} on {self.device or '?'}, {params}, "
            f"{format_bytes(self.total_bytes)}, loaded in {self.load_seconds:.2f}s"
        )

    def row(self) -> list[str]:
        return [
            self.name,
            self.source,
            self.class_name,
            ",".join(self.devices) or "?",
            ",".join(self.dtypes) or "?",
            f"{self.parameters:,}" if self.parameters is not None else "?",
            format_bytes(self.total_bytes),
            f"{self.load_seconds:.2f}s",
            _ago(self.last_used),
            str(self.hits),
            "yes" if self.pinned else "",
        ]

    HEADERS = ("name", "source", "class", "device", "dtype", "params", "size", "load", "last used", "hits", "pinned")

    def __str__(self) -> str:
        return _text_table(self.HEADERS, [self.row()])

    def _repr_html_(self) -> str:
        return _html_table(self.HEADERS, [self.row()])


@dataclass(frozen=True)
class StillAlive:
    """A released model that something outside the manager still holds."""

    name: str
    holders: tuple[str, ...]

    def describe(self) -> str:
        held = "; ".join(self.holders) if self.holders else "a holder outside Python's view"
        return f"{self.name} is still alive, held by: {held}"


@dataclass(frozen=True)
class ReleaseReport:
    """What an unload or cleanup did: names released, bytes accounted and measured, survivors."""

    released: tuple[str, ...]
    freed_bytes: dict[str, int] = field(hash=False)
    rss_before: int
    rss_after: int
    cuda_allocated_before: dict[str, int] = field(hash=False)
    cuda_allocated_after: dict[str, int] = field(hash=False)
    still_alive: tuple[StillAlive, ...]
    errors: dict[str, str] = field(hash=False)
    seconds: float
    gc_collected: bool
    cuda_cache_emptied: bool
    pending: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """Everything released is really gone and nothing failed."""
        return not self.still_alive and not self.errors

    @property
    def freed_total(self) -> int:
        return sum(self.freed_bytes.values())

    @property
    def rss_freed(self) -> int:
        """Measured fall of the process RSS (negative if it grew)."""
        return self.rss_before - self.rss_after

    def lines(self) -> list[str]:
        if not self.released and not self.errors:
            head = "nothing to release"
        else:
            head = f"released {len(self.released)} model(s): {', '.join(self.released) or '-'}"
        lines = [head]
        if self.released:
            freed = ", ".join(f"{d} {format_bytes(n)}" for d, n in sorted(self.freed_bytes.items())) or "0 B"
            lines.append(f"freed (accounted): {freed}")
            measured = [f"RSS {format_bytes(self.rss_before)} -> {format_bytes(self.rss_after)}"]
            for device, after in sorted(self.cuda_allocated_after.items()):
                before = self.cuda_allocated_before.get(device, 0)
                measured.append(f"{device} allocated {format_bytes(before)} -> {format_bytes(after)}")
            lines.append("measured: " + "; ".join(measured))
        lines += [alive.describe() for alive in self.still_alive]
        lines += [f"error releasing {name}: {message}" for name, message in sorted(self.errors.items())]
        if self.pending:
            lines.append(f"still loading (left as is): {', '.join(self.pending)}")
        lines.append(f"took {self.seconds * 1000:.1f} ms" + (", with a gc pass" if self.gc_collected else ""))
        return lines

    def __str__(self) -> str:
        return "\n".join(self.lines())

    def _repr_pretty_(self, printer: object, cycle: bool) -> None:
        printer.text(str(self))  # type: ignore[attr-defined]

    def _repr_html_(self) -> str:
        items = "".join(f"<li>{html.escape(line)}</li>" for line in self.lines())
        return f'<ul class="nbmodels-report">{items}</ul>'


EventKind = Literal["load_started", "load_finished", "load_failed", "unloaded", "cleanup", "moved"]


@dataclass(frozen=True)
class Event:
    """A change in the manager, sent to subscribers. Carries records, never models."""

    kind: EventKind
    name: str | None = None
    info: ModelInfo | None = None
    report: ReleaseReport | None = None
    error: str | None = None


class ModelList(list[ModelInfo]):
    """``mgr.list()``: a plain list of ModelInfo that shows itself as a table with totals."""

    def rows(self) -> list[list[str]]:
        rows = [info.row() for info in self]
        if len(self) > 1:
            totals = [info.total_bytes for info in self if info.total_bytes is not None]
            params = [info.parameters for info in self if info.parameters is not None]
            total_row = ["total", "", "", "", "", f"{sum(params):,}", format_bytes(sum(totals))]
            rows.append(total_row + [""] * (len(ModelInfo.HEADERS) - len(total_row)))
        return rows

    def __str__(self) -> str:
        if not self:
            return "no models loaded"
        return _text_table(ModelInfo.HEADERS, self.rows())

    def _repr_pretty_(self, printer: object, cycle: bool) -> None:
        printer.text(str(self))  # type: ignore[attr-defined]

    def _repr_html_(self) -> str:
        if not self:
            return "<p>no models loaded</p>"
        return _html_table(ModelInfo.HEADERS, self.rows())
