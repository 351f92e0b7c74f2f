"""The memory report as data: rows (an owner, its bytes on one device, who else holds them, what frees them),
per-device residue (memory not in live tensors), totals, and the difference between two reports.

Remedies are data (:class:`Remedy`: a kind and a target); the report spells
them with ``spell`` (Python by default; the IPython layer passes its own, with
magics). A report holds no tensor, storage or container: storage identities
are ints and weak references (``StorageWeakRef``), so keeping reports (for
``--diff``) keeps no memory alive.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from nbmodels.core.memory import format_bytes

RowKind = Literal[
    "model",  # a managed model: %unload_model frees it
    "released model",  # released, but something still holds it
    "variable",  # a notebook variable (or what it holds: an item, an attribute, a module of a user's net)
    "output",  # the output history: Out[7], _7
    "optimizer state",  # exp_avg, exp_avg_sq, momentum_buffer of an optimizer
    "autograd graph",  # activations an autograd graph saved for backward (a kept loss)
    "traceback",  # a local of a failed call, kept by the last exception
    "other",  # another named place (a %run script's variable, a widget callback)
    "unattributed",  # live, but reached from no named place: said, never hidden
    "smaller",  # owners under the threshold, folded into one row per device
]

RemedyKind = Literal["del", "output", "clear_state", "unload", "empty_cache", "python", "none"]


@dataclass(frozen=True)
class Remedy:
    """What frees a row (or part of it), as data: ``del x`` is ``Remedy('del', 'x', 'del x')``.

    ``command`` is the core's Python for it (empty when there is none: then
    ``target`` says it in words); a front end may spell it its own way
    (``%unload_model m --force``).
    """

    kind: RemedyKind
    target: str
    command: str = ""

    def text(self) -> str:
        return self.command or self.target


@dataclass(frozen=True)
class Holding:
    """One named place that keeps a row's storages alive; holdings with the same ``group`` hold one object."""

    name: str
    kind: str  # the place's kind: model, variable, output, exception, debugger, callback...
    remedy: Remedy
    group: int


@dataclass(frozen=True)
class MemoryRow:
    """Bytes on one device kept alive by one owner (the name a user would give), each storage counted once."""

    owner: str
    kind: RowKind
    device: str
    nbytes: int
    storages: int
    what: str = ""  # which tensors: 'net.fc.weight, net.fc.bias, ...', "state 'exp_avg', 'exp_avg_sq'"
    holders: tuple[Holding, ...] = ()  # every named place that reaches these storages, the owner first
    remedies: tuple[Remedy, ...] = ()  # run in order, they free the row
    borrowed: int = 0  # bytes whose memory torch did not allocate (from_numpy, a mapped file): freeing gives none back
    keys: tuple[int, ...] = field(default=(), compare=False, repr=False)
    refs: tuple[Any, ...] = field(default=(), compare=False, repr=False)  # StorageWeakRef of each storage

    @property
    def others(self) -> tuple[str, ...]:
        """Names of the other places that also reach these storages."""
        seen: list[str] = []
        for holding in self.holders:
            mine = holding.name == self.owner or self.owner.startswith(holding.name + " → ")
            if not mine and holding.name not in seen:
                seen.append(holding.name)
        return tuple(seen)

    def alive(self) -> int:
        """How many of the row's storages still live."""
        return sum(1 for ref in self.refs if not ref.expired())


@dataclass(frozen=True)
class Residue:
    """Memory of a device that is not in a live tensor: the interpreter, the allocator's cache, the CUDA context."""

    device: str
    label: str
    nbytes: int | None
    remedy: Remedy = Remedy("none", "")


def python_spelling(row: MemoryRow) -> list[str]:
    """The core's spelling: each remedy's Python, in order, duplicates once; what no Python names is said as
    a comment at the end, so the line still runs as written."""
    commands: list[str] = []
    words = [r.target for r in row.remedies if r.kind == "none" and r.target]
    for remedy in row.remedies:
        if remedy.kind != "none" and remedy.command and remedy.command not in commands:
            commands.append(remedy.command)
    return commands + ([f"# also: {'; '.join(words)}"] if words else [])


Spelling = Callable[[MemoryRow], list[str]]


@dataclass(frozen=True)
class MemoryReport:
    """Where the kernel's memory is: rows largest first, the totals, and per device what is outside tensors."""

    rows: tuple[MemoryRow, ...]
    residue: tuple[Residue, ...]
    tensor_bytes: dict[str, int]  # every live storage found, per device
    attributed_bytes: dict[str, int]  # of those, reached from a named place
    threshold: int
    truncated: str = ""  # a walk that ran out of budget says where
    spell: Spelling = field(default=python_spelling, compare=False, repr=False)

    @property
    def total(self) -> int:
        return sum(self.tensor_bytes.values())

    @property
    def attributed(self) -> int:
        return sum(self.attributed_bytes.values())

    def fraction_attributed(self) -> float:
        return 1.0 if not self.total else self.attributed / self.total

    def row(self, owner: str, device: str | None = None) -> MemoryRow:
        """The row of ``owner`` (on ``device``); KeyError when there is none."""
        for row in self.rows:
            if row.owner == owner and (device is None or row.device == device):
                return row
        raise KeyError(owner)

    def commands(self, row: MemoryRow) -> str:
        """What frees ``row``, runnable as written (``; `` between Python statements, a line per magic)."""
        spelled = self.spell(row)
        if not spelled:
            return ""
        if any(text.startswith("%") for text in spelled):
            return "\n".join(spelled)
        return "; ".join(spelled)

    def summary(self) -> str:
        """``in tensors: 144.0 MiB, all of it named above`` (or how much is not)."""
        missing = self.total - self.attributed
        if not self.total:
            return "in tensors: nothing"
        if missing <= 0:
            return f"in tensors: {format_bytes(self.total)}, all of it named above"
        return (
            f"in tensors: {format_bytes(self.total)}, {format_bytes(self.attributed)} named above, "
            f"{format_bytes(missing)} unattributed"
        )

    def table(self) -> tuple[list[str], list[list[str]]]:
        headers = ["owner", "kind", "device", "bytes", "held also by", "frees it"]
        lines = []
        for row in self.rows:
            notes = [row.what] if row.what else []
            if row.borrowed:
                notes.append(
                    f"{format_bytes(row.borrowed)} of it is memory torch did not allocate: freeing gives none back"
                )
            owner = row.owner + (f" ({'; '.join(notes)})" if notes else "")
            lines.append(
                [owner, row.kind, row.device, format_bytes(row.nbytes), _others(row.others), self.commands(row)]
            )
        return headers, lines

    def __str__(self) -> str:
        headers, lines = self.table()
        out = [_text_table(headers, [[c.replace("\n", " ; ") for c in line] for line in lines])] if lines else []
        out.append(self.summary())
        out += [_residue_line(r) for r in self.residue]
        if self.truncated:
            out.append(f"(stopped early: {self.truncated})")
        return "\n".join(out)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(str(self))

    def _repr_html_(self) -> str:
        headers, lines = self.table()
        head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
        body = "".join(
            "<tr>"
            + "".join(
                f"<td><code>{html.escape(c).replace(chr(10), '<br>')}</code></td>"  # a magic on a line of its own
                if i == 5 and c
                else f"<td>{html.escape(c)}</td>"
                for i, c in enumerate(line)
            )
            + "</tr>"
            for line in lines
        )
        extra = [self.summary(), *(_residue_line(r) for r in self.residue)]
        if self.truncated:
            extra.append(f"(stopped early: {self.truncated})")
        notes = "".join(f"<li>{html.escape(line)}</li>" for line in extra)
        return (
            f'<table class="nbmodels"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
            f'<ul class="nbmodels">{notes}</ul>'
        )

    def diff(self, before: MemoryReport) -> MemoryDiff:
        """What changed since ``before``: bytes added and freed, by owner and device."""
        old = {_diff_key(r): r.nbytes for r in before.rows}
        new = {_diff_key(r): r.nbytes for r in self.rows}
        changes = []
        for key in sorted(set(old) | set(new), key=lambda k: (k[0], k[2])):
            delta = new.get(key, 0) - old.get(key, 0)
            if delta:
                changes.append(Change(key[0], key[1], key[2], old.get(key, 0), new.get(key, 0)))
        changes.sort(key=lambda c: -abs(c.delta))
        return MemoryDiff(tuple(changes), self.total - before.total, self)


@dataclass(frozen=True)
class Change:
    """One owner's bytes on one device, before and after."""

    owner: str
    kind: RowKind
    device: str
    before: int
    after: int

    @property
    def delta(self) -> int:
        return self.after - self.before

    @property
    def status(self) -> str:
        if not self.before:
            return "added"
        if not self.after:
            return "freed"
        return "grew" if self.delta > 0 else "shrank"


@dataclass(frozen=True)
class MemoryDiff:
    """``%memory --diff``: what the cells since the previous report added and freed, largest change first."""

    changes: tuple[Change, ...]
    tensor_delta: int
    report: MemoryReport = field(compare=False, repr=False)

    @property
    def added(self) -> tuple[Change, ...]:
        return tuple(c for c in self.changes if c.delta > 0)

    @property
    def freed(self) -> tuple[Change, ...]:
        return tuple(c for c in self.changes if c.delta < 0)

    def table(self) -> tuple[list[str], list[list[str]]]:
        headers = ["owner", "kind", "device", "change", "now", ""]
        rows = [[c.owner, c.kind, c.device, _signed(c.delta), format_bytes(c.after), c.status] for c in self.changes]
        return headers, rows

    def summary(self) -> str:
        if not self.changes:
            return "no change in tensors since the previous %memory"
        now = format_bytes(self.report.total)
        return f"in tensors: {_signed(self.tensor_delta)} since the previous %memory (now {now})"

    def __str__(self) -> str:
        headers, rows = self.table()
        out = [_text_table(headers, rows)] if rows else []
        return "\n".join([*out, self.summary()])

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(str(self))

    def _repr_html_(self) -> str:
        headers, rows = self.table()
        head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
        return (
            f'<table class="nbmodels"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
            f"<p>{html.escape(self.summary())}</p>"
        )


def _diff_key(row: MemoryRow) -> tuple[str, RowKind, str]:
    """A row's identity across reports; the folded row's name counts its owners, so it is keyed by kind."""
    return ("owners under the threshold" if row.kind == "smaller" else row.owner, row.kind, row.device)


def _others(names: tuple[str, ...], shown: int = 3) -> str:
    """Names without their notes (``_ (IPython's hidden copy ...)`` reads ``_``), each once, the first few."""
    short: list[str] = []
    for name in names:
        text = name.split(" (", 1)[0] if name.endswith(")") else name
        if text not in short:
            short.append(text)
    more = len(short) - shown
    return ", ".join(short[:shown]) + (f" and {more} more" if more > 0 else "")


def _signed(nbytes: int) -> str:
    return ("+" if nbytes > 0 else "") + format_bytes(nbytes)


def _residue_line(residue: Residue) -> str:
    fix = f" (frees it: {residue.remedy.text()})" if residue.remedy.kind != "none" and residue.remedy.text() else ""
    return f"{residue.device}: {residue.label}: {format_bytes(residue.nbytes)}{fix}"


def _text_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return "\n".join(lines)


__all__ = ["Change", "Holding", "MemoryDiff", "MemoryReport", "MemoryRow", "Remedy", "Residue", "RowKind", "Spelling"]
