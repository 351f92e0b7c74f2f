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

from nbmodels.core.holders.records import Action, Holder, RemovalPlan
from nbmodels.core.memory import PartSize, format_bytes


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


def _until(info: ModelInfo) -> str:
    """When keep-alive unloads the model: ``in 4m``, ``after use``, ``-`` (never)."""
    if info.keep_alive is None or info.pinned:
        return "-"
    if info.in_use or info.unload_at is None:
        return "after use" if info.keep_alive == 0 else f"{_span(info.keep_alive)} after use"
    seconds = info.unload_at - time.time()
    return "due" if seconds <= 0 else f"in {_span(seconds)}"


def _span(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


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
    runner: str = "kernel"  # where it runs: "kernel", "process" (a worker process) or "ray" (a Ray actor)
    pid: int | None = None  # the worker's process id, for a model that runs in one
    node: str | None = None  # the Ray node of its actor
    worker_memory: str = ""  # a reading of its worker (RSS, private memory, device bytes), from info() only
    keep_alive: float | None = None  # seconds idle before keep-alive unloads it; None: forever
    unload_at: float | None = None  # when keep-alive unloads it if it stays idle (time.time()); None: never
    in_use: bool = False  # a call through its handle (or the cell that used it) is still running
    mapped_bytes: int = 0  # of its CPU bytes, those mapped from a file (page cache the OS drops when it needs to)
    borrowed_bytes: int = 0  # of its CPU bytes, those a numpy array or buffer owns (torch.from_numpy, frombuffer)
    parts: tuple[PartSize, ...] = ()  # a composite's parts (a pipeline's unet and vae), each measured alone
    unmeasured: tuple[str, ...] = ()  # kinds of weights it holds that cannot be measured ("packed weights")

    @property
    def where(self) -> str:
        """Where it runs, in words: ``kernel``, ``worker 4242``, ``ray 10.0.0.3``."""
        if self.runner == "kernel":
            return "kernel"
        if self.runner == "ray":
            return f"ray {self.node}" if self.node else "ray"
        return f"worker {self.pid}" if self.pid is not None else "worker"

    @property
    def unloads(self) -> str:
        """When keep-alive unloads it, in words: ``in 4m``, ``after use``, ``due``, ``-`` (never)."""
        return _until(self)

    @property
    def total_bytes(self) -> int | None:
        """Accounted bytes on every device together; None when nothing could be counted."""
        return sum(self.bytes_by_device.values()) if self.bytes_by_device else None

    @property
    def resident_bytes(self) -> int | None:
        """Accounted bytes without those mapped from files: what budgets count; None when nothing could be counted."""
        total = self.total_bytes
        return None if total is None else max(total - self.mapped_bytes, 0)

    @property
    def size(self) -> str:
        """The size in words: ``63.3 MiB (63.3 MiB mapped from files)``, ``?`` when unknown."""
        text = format_bytes(self.total_bytes)
        if self.mapped_bytes:
            text += f" ({format_bytes(self.mapped_bytes)} mapped from files)"
        if self.borrowed_bytes:
            text += f" ({format_bytes(self.borrowed_bytes)} borrowed from numpy or buffers)"
        if self.unmeasured:
            known = f"{text} + " if self.total_bytes else ""
            return f"{known}size unknown: {', '.join(self.unmeasured)}"
        return text

    @property
    def params(self) -> str:
        """The parameter count in words: ``1,024``, ``?`` when unknown or when some weights cannot be counted."""
        if self.parameters is None or self.unmeasured:
            return "?"
        return f"{self.parameters:,}"

    @property
    def device(self) -> str | None:
        """The device holding most of the model."""
        return self.devices[0] if self.devices else None

    def summary(self) -> str:
        """One line: name, device, parameters, size, load time."""
        params = "params ?" if self.params == "?" else f"{self.params} params"
        return (
            f"{self.name}: {self.class_name} on {self.device or '?'}, {params}, "
            f"{self.size}, loaded in {self.load_seconds:.2f}s"
        )

    def row(self) -> list[str]:
        return [
            self.name,
            self.source,
            self.class_name,
            ",".join(self.devices) or "?",
            ",".join(self.dtypes) or "?",
            self.params,
            self.size,
            f"{self.load_seconds:.2f}s",
            _ago(self.last_used),
            str(self.hits),
            "yes" if self.pinned else "",
            self.unloads,
            self.where,
        ]

    HEADERS = (
        "name",
        "source",
        "class",
        "device",
        "dtype",
        "params",
        "size",
        "load",
        "last used",
        "hits",
        "pinned",
        "unloads",
        "runs in",
    )

    def __str__(self) -> str:
        return _text_table(self.HEADERS, [self.row()])

    def _repr_html_(self) -> str:
        return _html_table(self.HEADERS, [self.row()])


@dataclass(frozen=True)
class StillAlive:
    """A released model that something outside the manager still holds, and what force would do about it.

    ``plan`` is the :class:`RemovalPlan` (detached: text only) of every holder
    force would cut, what needs the user to name it, and what blocks it. ``fix``
    is the exact command that frees the model (empty when something blocks it).
    ``what`` says what survived: the model itself, or some of its storages (held
    by a ``state_dict()``, a view, an optimizer, an autograd graph).
    """

    name: str
    plan: RemovalPlan
    fix: str = ""
    what: str = "the model"

    @property
    def holders(self) -> tuple[Holder, ...]:
        """Every holder as a flat record (path, kind, what force does or why it cannot)."""
        return self.plan.holders()

    @property
    def blocked(self) -> str:
        """Why force cannot free it (the first blocker), or empty."""
        return self.plan.blockers[0].line() if self.plan.blockers else ""

    def _subject(self) -> str:
        return self.name if self.what.startswith("the model") else f"{self.name} ({self.what})"

    def _remedy(self) -> str:
        if self.blocked:
            return f"force cannot free it: {self.blocked}"
        waiting = [a.holder for a in self.plan.waiting_for()]
        if self.fix and waiting:
            held = f"{waiting[0]} holds" if len(waiting) == 1 else f"{', '.join(waiting)} hold"
            return f"{held} more than the model; to remove {'it' if len(waiting) == 1 else 'them'} too: {self.fix}"
        return f"free it with {self.fix}" if self.fix else ""

    def describe(self) -> str:
        """One line: who holds it and the command that frees it."""
        held = "; ".join(h.path for h in self.holders) or "a holder outside Python's view"
        remedy = self._remedy()
        return f"{self._subject()} is still alive, held by: {held}" + (f"; {remedy}" if remedy else "")

    def detailed_lines(self) -> list[str]:
        """A heading, the plan (one line per action and blocker), then the remedy."""
        lines = [f"{self._subject()} is still alive, held by {len(self.holders)} reference(s):"]
        lines += [f"  {line}" for line in self.plan.lines()]
        remedy = "" if self.blocked else self._remedy()  # the plan's lines already say what blocks force
        return lines + ([f"  {remedy}"] if remedy else [])

    def details(self) -> list[str]:
        """One line per holder: its path, its kind and what force does (or why it cannot)."""
        return [h.describe() for h in self.holders]

    def _html(self) -> str:
        return self.plan._repr_html_()


@dataclass(frozen=True)
class ReleaseReport:
    """What an unload or cleanup did: names released, bytes that really came back, survivors.

    ``freed_bytes`` counts only storages that died (measured at release time,
    whatever the model became after loading); ``rss_before``/``rss_after`` and
    the CUDA readings are measurements. ``removed`` lists what force did, per
    model; a dry run (``dry_run``) changes nothing and shows, in
    ``still_alive``, what force would do.
    """

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
    removed: dict[str, tuple[Action, ...]] = field(default_factory=dict, hash=False)
    rechecked: tuple[str, ...] = ()
    hunt_seconds: float = 0.0
    dry_run: bool = False
    would_free: tuple[str, ...] = ()
    stopped: dict[str, str] = field(default_factory=dict, hash=False)  # models in a worker: how it ended
    # storages that died over memory torch does not own, in words: "63.3 MiB mapped from model.safetensors: ..."
    not_freed: tuple[str, ...] = ()

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
        return sum(len(actions) for actions in self.removed.values())

    def lines(self, *, detail: bool = False) -> list[str]:
        """The report as lines; ``detail`` adds the plan (one line per holder) of each model still alive."""
        if self.dry_run:
            lines = ["dry run: nothing was released or removed"]
            lines += [f"unloading {name} would free it at once" for name in self.would_free]
        elif not self.released and not self.errors:
            lines = ["nothing to release"]
        else:
            lines = [f"released {len(self.released)} model(s): {', '.join(self.released) or '-'}"]
        lines += [f"{name}: its {how}" for name, how in sorted(self.stopped.items())]
        if self.rechecked:
            lines.append(f"checked again (released before, still alive then): {', '.join(self.rechecked)}")
        for name, actions in sorted(self.removed.items()):
            if detail:
                lines.append(f"force removed {len(actions)} holder(s) of {name}:")
                lines += [f"  - {action.line()}" for action in actions]
            else:
                lines.append(f"force removed what held {name}: {'; '.join(a.text() for a in actions)}")
        if not self.dry_run and (self.released or self.freed_bytes):
            freed = ", ".join(f"{d} {format_bytes(n)}" for d, n in sorted(self.freed_bytes.items())) or "0 B"
            what = "storages that died" + (", workers that ended" if self.stopped else "")
            lines.append(f"freed ({what}): {freed}")
            lines += [f"not counted as freed: {line}" for line in self.not_freed]
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


EventKind = Literal[
    "load_started",
    "load_finished",
    "load_failed",
    "unloaded",
    "cleanup",
    "moved",
    "worker_died",
    "evicted",
    "expired",
    "pinned",
]


@dataclass(frozen=True)
class Event:
    """A change in the manager, sent to subscribers. Carries records, never models.

    The memory policy adds ``evicted`` (a model left to make room for ``cause``:
    ``report`` when it was unloaded, ``info`` when it was offloaded), ``expired``
    (keep-alive unloaded an idle model) and ``pinned`` (pinned or unpinned: see
    ``info.pinned``); ``reason`` says it in one line.
    """

    kind: EventKind
    name: str | None = None
    info: ModelInfo | None = None
    report: ReleaseReport | None = None
    error: str | None = None
    reason: str | None = None
    cause: str | None = None


class ModelList(list[ModelInfo]):
    """``mgr.list()``: a plain list of ModelInfo that shows itself as a table with totals."""

    def rows(self) -> list[list[str]]:
        rows = [info.row() for info in self]
        if len(self) > 1:
            totals = [info.total_bytes for info in self if info.total_bytes is not None]
            params = [info.parameters for info in self if info.parameters is not None]
            mapped = sum(info.mapped_bytes for info in self)
            size = format_bytes(sum(totals)) + (f" ({format_bytes(mapped)} mapped from files)" if mapped else "")
            total_row = ["total", "", "", "", "", f"{sum(params):,}", size]
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
