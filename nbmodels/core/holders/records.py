"""The frozen results of a holder search: what force would remove, and what it cannot.

A :class:`RemovalPlan` is data: every :class:`Action` with the holder it cuts,
what of the model it lets go of and what else (if anything) goes with it, and
every :class:`Blocker` that stops force. ``unload(name)`` shows it,
``unload(name, force=True)`` runs exactly it (huggingface_hub's
``DeleteCacheStrategy`` is the pattern). A plan kept in a report is
*detached*: it holds text only, never the containers it would change, so a
report can never keep a model alive.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

HolderKind = Literal[
    "variable",  # a user variable whose value is part of the model: ``model``, ``opt``, ``y``
    "item",  # an item of a container: ``cache['m']``, ``history[2]``
    "attribute",  # an attribute of another object: ``trainer.model``, ``wrapper.encoder``
    "closure",  # a variable captured by a function
    "method",  # a bound method of the model
    "callback",  # a callback registered with a widget or an event source
    "frame",  # a local variable of a finished or suspended function
    "output",  # the output history: ``Out[7]``, ``_7``, ``_``
    "exception",  # the last exception and its traceback: ``sys.last_value``
    "debugger",  # a debugger session kept after ``%debug``
    "autograd",  # the autograd graph of a tensor computed with the model
    "module",  # a global variable of some module
    "model",  # another loaded model shares it
    "unseen",  # a reference the garbage collector cannot see (C code, a running function)
    "unknown",  # the search stopped (size or time) before it reached a named place
    "cache",  # a function's cache: ``f.cache_clear()``
]


@dataclass(frozen=True)
class Action:
    """One removal force makes, in the user's words.

    ``command`` is Python that does it, runnable as written in the notebook, or
    empty when no Python names it (a lambda, a key without a literal); then
    ``description`` says it in words. ``takes`` is what else goes with it: empty
    for the smallest cut (only the model's part goes), otherwise force runs it
    only when the user names ``holder`` (``allow=``): see :attr:`consent`.
    """

    holder: str
    kind: HolderKind
    holds: str
    description: str
    command: str = ""
    takes: str = ""
    path: str = ""  # the whole way from the holder to the model's part, when it goes further than the cut

    @property
    def consent(self) -> bool:
        """True when the action removes more than the model's part: force needs the holder named."""
        return bool(self.takes)

    def text(self) -> str:
        """The command, or the description when there is no command."""
        return self.command or self.description

    @property
    def where(self) -> str:
        """The whole path to what it holds (the holder itself when the cut is right at the part)."""
        return self.path or self.holder

    def line(self) -> str:
        """``command  — what it holds[, through path][; it also removes ...]``."""
        through = f", through {self.path}" if self.path and self.path != self.holder else ""
        extra = f"; it also removes {self.takes}" if self.takes else ""
        return f"{self.text()}  — {self.holds}{through}{extra}"


@dataclass(frozen=True)
class Blocker:
    """A holder force cannot remove, and why."""

    holder: str
    kind: HolderKind
    reason: str

    def line(self) -> str:
        return f"{self.holder}: {self.reason}"


@dataclass(frozen=True)
class Holder:
    """One holder as a flat record (path, kind, what force does or why it cannot): for tables and panels."""

    path: str
    kind: HolderKind
    action: str = ""
    reason: str = ""

    @property
    def removable(self) -> bool:
        return bool(self.action)

    def __str__(self) -> str:
        return self.path

    def describe(self) -> str:
        """``path [kind] (force: what it does)`` on one line."""
        what = f"force: {self.action}" if self.action else f"force cannot remove it: {self.reason or 'unknown holder'}"
        return f"{self.path} [{self.kind}] ({what})"


@dataclass(frozen=True)
class RemovalPlan:
    """What force would do to free one released model: the actions, and what stops it.

    ``survivor`` says what is alive (the model itself, or some of its
    storages). ``ops`` are the executable steps behind ``actions`` (one each);
    they hold the containers to change and exist only while the release that
    made the plan runs: :meth:`detached` drops them, and reports keep only
    detached plans.
    """

    name: str
    survivor: str
    actions: tuple[Action, ...] = ()
    blockers: tuple[Blocker, ...] = ()
    truncated: str = ""
    ops: tuple[Any, ...] = field(default=(), compare=False, repr=False)

    def waiting_for(self, allow: Iterable[str] = ()) -> tuple[Action, ...]:
        """Actions that remove more than the model and are not named in ``allow``: force skips them."""
        named = set(allow)
        return tuple(a for a in self.actions if a.consent and a.holder not in named)

    def frees(self, allow: Iterable[str] = ()) -> bool:
        """True when running the plan (with ``allow``) should free the model: nothing blocks or waits."""
        return bool(self.actions) and not self.blockers and not self.waiting_for(allow) and not self.truncated

    def holders(self) -> tuple[Holder, ...]:
        """Every holder as a flat record, the actions first."""
        found = [Holder(a.where, a.kind, a.text()) for a in self.actions]
        return tuple(found + [Holder(b.holder, b.kind, "", b.reason) for b in self.blockers])

    def detached(self) -> RemovalPlan:
        """The same plan without its executable steps: text only, safe to keep."""
        return replace(self, ops=())

    def lines(self, allow: Iterable[str] = (), *, done: bool = False) -> list[str]:
        """The plan as lines: what force would do (or did), what needs naming, what blocks it."""
        named = set(allow)
        ready = [a for a in self.actions if not a.consent or a.holder in named]
        waiting = [a for a in self.actions if a.consent and a.holder not in named]
        lines: list[str] = []
        if self.truncated and not done:
            # force refuses a plan from an incomplete search: the holders found are listed, not offered
            lines.append(f"force will not run: {self.truncated}")
            if self.actions:
                lines.append("holders found so far:")
                lines += [f"  - {a.line()}" for a in self.actions]
            lines += ["holders force could not remove:"] * bool(self.blockers)
            lines += [f"  - {b.line()}" for b in self.blockers]
            return lines
        if ready:
            lines.append("force removed:" if done else "force would:")
            lines += [f"  - {a.line()}" for a in ready]
        if waiting:
            lines.append("force removes these only when you name them (each holds more than the model):")
            lines += [f"  - {a.line()}" for a in waiting]
        if self.blockers:
            lines.append("force cannot free it:")
            lines += [f"  - {b.line()}" for b in self.blockers]
        return lines

    def __str__(self) -> str:
        return "\n".join([f"{self.name}: {self.survivor}", *self.lines()])

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(str(self))

    def _repr_html_(self) -> str:
        rows = "".join(
            "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
            for row in [[a.holder, a.kind, a.text(), a.takes] for a in self.actions]
            + [[b.holder, b.kind, "", b.reason] for b in self.blockers]
        )
        head = "".join(f"<th>{h}</th>" for h in ("holder", "kind", "force", "also removes / why not"))
        return f'<table class="nbmodels"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>'


__all__ = ["Action", "Blocker", "Holder", "HolderKind", "RemovalPlan"]
