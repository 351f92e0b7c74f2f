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
from nbmodels.core.refs import Holder


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
    """A released model that something outside the manager still holds, and how to free it.

    ``holders`` name each holder in the user's words with what ``force`` does
    about it; ``fix`` is the exact command that would free the model (empty when
    force cannot, and then ``blocked`` says why). ``what`` says what survived:
    the model itself, or only its tensors (held by an optimizer or an autograd
    graph after the model object died).
    """

    name: str
    holders: tuple[Holder, ...]
    fix: str = ""
    blocked: str = ""
    what: str = "the model"

    def _subject(self) -> str:
        return self.name if self.what == "the model" else f"{self.name} ({self.what})"

    def _remedy(self) -> str:
        if self.fix:
            return f"free it with {self.fix}"
        return f"force cannot free it: {self.blocked}" if self.blocked else ""

    def describe(self) -> str:
        """One line: who holds it and the command that frees it."""
        held = "; ".join(str(h) for h in self.holders) if self.holders else "a holder outside Python's view"
        remedy = self._remedy()
        return f"{self._subject()} is still alive, held by: {held}" + (f"; {remedy}" if remedy else "")

    def detailed_lines(self) -> list[str]:
        """A heading, one line per holder, then the remedy: the multi-line form of :meth:`describe`."""
        if not self.holders:
            return [self.describe()]
        lines = [f"{self._subject()} is still alive, held by {len(self.holders)} reference(s):"]
        lines += [f"  - {line}" for line in self.details()]
        remedy = self._remedy()
        return lines + ([f"  {remedy}"] if remedy else [])

    def details(self) -> list[str]:
        """One line per holder: its path, its kind and what force does (or why it cannot)."""
        return [h.describe() if isinstance(h, Holder) else str(h) for h in self.holders]

    def _html(self) -> str:
        rows = []
        for h in self.holders:
            if isinstance(h, Holder):
                rows.append([h.path, h.kind, h.action or f"cannot: {h.reason}"])
            else:
                rows.append([str(h), "", ""])
        return _html_table(("holder", "kind", "force"), rows)


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
    forced: bool = False
    removed: dict[str, tuple[Holder, ...]] = field(default_factory=dict, hash=False)
    rechecked: tuple[str, ...] = ()
    hunt_seconds: float = 0.0

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

    @property
    def removed_total(self) -> int:
        """How many holders force removed."""
        return sum(len(holders) for holders in self.removed.values())

    def lines(self, *, detail: bool = False) -> list[str]:
        """The report as lines; ``detail`` adds one line per holder of each model still alive."""
        if not self.released and not self.errors:
            head = "nothing to release"
        else:
            head = f"released {len(self.released)} model(s): {', '.join(self.released) or '-'}"
        lines = [head]
        if self.rechecked:
            lines.append(f"checked again (released before, still alive then): {', '.join(self.rechecked)}")
        for name, holders in sorted(self.removed.items()):
            done = [h.action if h.path in h.action else f"{h.action} ({h.path})" for h in holders]
            if detail:
                lines.append(f"force removed {len(done)} holder(s) of {name}:")
                lines += [f"  - {action}" for action in done]
            else:
                lines.append(f"force removed what held {name}: {'; '.join(done)}")
        if self.released or self.freed_bytes:
            freed = ", ".join(f"{d} {format_bytes(n)}" for d, n in sorted(self.freed_bytes.items())) or "0 B"
            lines.append(f"freed (accounted): {freed}")
            measured = [f"RSS {format_bytes(self.rss_before)} -> {format_bytes(self.rss_after)}"]
            for device, after in sorted(self.cuda_allocated_after.items()):
                before = self.cuda_allocated_before.get(device, 0)
                measured.append(f"{device} allocated {format_bytes(before)} -> {format_bytes(after)}")
            lines.append("measured: " + "; ".join(measured))
        for alive in self.still_alive:
            lines += alive.detailed_lines() if detail else [alive.describe()]
        lines += [f"error releasing {name}: {message}" for name, message in sorted(self.errors.items())]
        if self.pending:
            lines.append(f"still loading (left as is): {', '.join(self.pending)}")
        took = f"took {self.seconds * 1000:.1f} ms" + (", with a gc pass" if self.gc_collected else "")
        if self.hunt_seconds:
            took += f" ({self.hunt_seconds * 1000:.0f} ms looking for holders)"
        lines.append(took)
        return lines

    def __str__(self) -> str:
        return "\n".join(self.lines(detail=True))

    def _repr_pretty_(self, printer: object, cycle: bool) -> None:
        printer.text(str(self))  # type: ignore[attr-defined]

    def _repr_html_(self) -> str:
        items = "".join(f"<li>{html.escape(line)}</li>" for line in self.lines())
        tables = "".join(
            f"<p>{html.escape(alive.name)}: what still holds it</p>{alive._html()}" for alive in self.still_alive
        )
        return f'<ul class="nbmodels-report">{items}</ul>{tables}'


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
