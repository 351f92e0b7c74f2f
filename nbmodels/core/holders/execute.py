"""Running exactly the plan: each action removes one reference, and only if it still is what was planned.

An action checks identity first (the entry or item still holds the same object)
so that a change made since the plan was shown (another thread, a new value)
is never undone. An action shared by several plans (two models in one dict)
runs once.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from nbmodels.core.holders.records import Action, RemovalPlan
from nbmodels.core.holders.sites import Site

log = logging.getLogger("nbmodels")


class Op(NamedTuple):
    """An executable removal: what to change, under which key, and the object it must still hold."""

    kind: str  # entry | item | dictkey | index | member | attr
    target: Any  # the Site (entry) or the container or object
    key: Any
    value: Any


def apply(op: Op) -> None:
    """Remove one reference; does nothing if the place no longer holds ``op.value``."""
    kind, target, key, value = op
    if kind == "entry":
        assert isinstance(target, Site) and target.remove is not None
        target.remove(target, key, value)
    elif kind == "item":
        if key in target and target[key] is value:
            del target[key]
    elif kind == "dictkey":
        for candidate in [k for k in list(target) if k is value]:
            del target[candidate]
    elif kind == "index":
        if key < len(target) and target[key] is value:
            target[key] = None
    elif kind == "member":
        target.discard(value)
    elif kind == "attr":
        if getattr(target, key, None) is value:
            setattr(target, key, None)
    else:  # pragma: no cover - the planner makes no other kind
        raise ValueError(f"unknown removal {kind!r}")


def _identity(op: Op) -> tuple[Any, ...]:
    key = op.key if isinstance(op.key, str | int) else id(op.key)
    return (op.kind, id(op.target), key, id(op.value))


def execute(plans: Sequence[RemovalPlan], allow: Iterable[str] = ()) -> tuple[dict[str, list[Action]], dict[str, str]]:
    """Run every plan's actions (those that need naming only if named in ``allow``).

    Returns the actions done per model and the errors of those that failed,
    by their command text. A plan that something blocks runs nothing: removing
    some holders and not others would delete the user's variables in vain.
    """
    named = tuple(allow)
    done: dict[str, list[Action]] = {}
    errors: dict[str, str] = {}
    ran: dict[tuple[Any, ...], str | None] = {}
    for plan in plans:
        if plan.blockers or plan.waiting_for(named) or plan.truncated:
            continue
        for action, op in zip(plan.actions, plan.ops, strict=True):
            identity = _identity(op)
            if identity not in ran:
                try:
                    apply(op)
                    ran[identity] = None
                except Exception as exc:
                    ran[identity] = f"{type(exc).__name__}: {exc}"
                    log.warning("force could not run %s: %s", action.text(), ran[identity])
            error = ran[identity]
            if error is None:
                done.setdefault(plan.name, []).append(action)
            else:
                errors[action.text()] = error
            del op
    return done, errors


__all__ = ["Op", "apply", "execute"]
