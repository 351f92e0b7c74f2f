"""Running exactly the plan, as a transaction: all of a model's actions, or none of them.

Each action removes one reference. Before anything changes, every action is
checked (its place still holds the same object: a change made since the plan
was shown, by another thread or a later cell, is never undone). Then they run
one by one, each checked afterwards (a ``__setattr__`` that ignores None, a
dict whose ``__delitem__`` does nothing, removed nothing). If one raises, is
interrupted, or removed nothing, every action of that plan already done is put
back as it was (dict order included) and the plan counts as not run: removing
some holders and not others would cost the user their variables in vain. An
action shared by several plans (two models in one dict) runs once.
"""

from __future__ import annotations

import builtins
import gc
import logging
import sys
import traceback
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

from nbmodels.core.holders.records import Action, RemovalPlan
from nbmodels.core.holders.sites import LAST_EXCEPTION, Site

log = logging.getLogger("nbmodels")


class Op(NamedTuple):
    """An executable removal: what to change, under which key, and the object it must still hold."""

    kind: str  # entry | item | dictkey | index | member | attr
    target: Any  # the Site (entry) or the container or object
    key: Any
    value: Any


class NoEffect(Exception):
    """An action ran without error and the reference is still there."""


def holds(op: Op) -> bool:
    """True while the place still holds ``op.value`` where the plan found it."""
    kind, target, key, value = op
    if kind == "entry":
        return _entry_holds(target, key, value)
    if kind == "item":
        try:
            return key in target and target[key] is value
        except Exception:
            return False
    if kind == "dictkey":
        return any(k is value for k in list(target))
    if kind == "index":
        return key < len(target) and target[key] is value
    if kind == "member":
        return any(v is value for v in list(target))
    if kind == "attr":
        return getattr(target, key, None) is value
    if kind == "cache":
        return any(ref is value for ref in gc.get_referents(target))
    if kind == "finalizer":
        return bool(target.alive)
    raise ValueError(f"unknown removal {kind!r}")  # pragma: no cover - the planner makes no other kind


def _entry_holds(site: Site, key: Any, value: Any) -> bool:
    container = site.container
    if isinstance(container, dict):
        return key in container and container[key] is value
    if isinstance(container, list):
        return any(v is value for v in container)
    return getattr(container, key, None) is value


def apply(op: Op) -> Callable[[], None]:
    """Remove one reference; returns what puts it back as it was."""
    kind, target, key, value = op
    undo = _undo(op)
    if kind == "entry":
        assert isinstance(target, Site) and target.remove is not None
        target.remove(target, key, value)
    elif kind == "item":
        del target[key]
    elif kind == "dictkey":
        for candidate in [k for k in list(target) if k is value]:
            del target[candidate]
    elif kind == "index":
        target[key] = None
    elif kind == "member":
        target.discard(value)
    elif kind == "attr":
        setattr(target, key, None)
    elif kind == "cache":
        target.cache_clear()
    elif kind == "finalizer":
        target.detach()
    else:  # pragma: no cover - the planner makes no other kind
        raise ValueError(f"unknown removal {kind!r}")
    return undo


def _undo(op: Op) -> Callable[[], None]:
    """What restores the place ``op`` changes, taken before it changes (a copy of what it needs, no more)."""
    kind, target, key, value = op
    if kind == "entry":
        target = target.container
        if target is sys:  # the last exception goes whole: every sys.last_* comes back
            saved = {name: getattr(sys, name) for name in LAST_EXCEPTION if hasattr(sys, name)}

            def restore_last() -> None:
                for name, old in saved.items():
                    setattr(sys, name, old)

            return restore_last
        if target is builtins:
            return lambda: setattr(builtins, key, value)
        if isinstance(target, list):
            items = list(target)
            return lambda: target.__setitem__(slice(None), items)
        if not isinstance(target, dict):
            return lambda: setattr(target, key, value)
        kind = "item"
    if kind in ("item", "dictkey"):
        items = list(target.items())  # re-inserting alone would move the entry to the end

        def restore() -> None:
            target.clear()
            target.update(items)

        return restore
    if kind == "index":
        return lambda: target.__setitem__(key, value)
    if kind == "member":
        return lambda: target.add(value)
    if kind in ("cache", "finalizer"):
        return lambda: None  # neither can be put back by hand: they run last, after every other action
    return lambda: setattr(target, key, value)


def _identity(op: Op) -> tuple[Any, ...]:
    key = op.key if isinstance(op.key, str | int) else id(op.key)
    return (op.kind, id(op.target), key, id(op.value))


def execute(plans: Sequence[RemovalPlan], allow: Iterable[str] = ()) -> tuple[dict[str, list[Action]], dict[str, str]]:
    """Run every plan's actions (those that need naming only if named in ``allow``), each plan whole or not at all.

    Returns the actions done per model (only those that removed a reference)
    and, by model, why a plan did not run. A plan that something blocks runs
    nothing. An interrupt (Ctrl+C) undoes the plan it stopped, then goes on up.
    """
    named = tuple(allow)
    done: dict[str, list[Action]] = {}
    errors: dict[str, str] = {}
    ran: set[tuple[Any, ...]] = set()  # actions of earlier plans that took effect
    for plan in plans:
        if plan.blockers or plan.waiting_for(named) or plan.truncated:
            continue
        steps = [(a, op) for a, op in zip(plan.actions, plan.ops, strict=True) if _identity(op) not in ran]
        shared = [a for a, op in zip(plan.actions, plan.ops, strict=True) if _identity(op) in ran]
        ready = [(a, op) for a, op in steps if holds(op)]  # a place changed since the plan: left as it is now
        ready.sort(key=lambda step: step[1].kind in ("cache", "finalizer"))  # what cannot be put back goes last
        undos: list[Callable[[], None]] = []
        try:
            for action, op in ready:
                undos.append(apply(op))
                if holds(op):
                    raise NoEffect(f"{action.text()} ran but the reference is still there")
        except BaseException as exc:
            # the frames of apply() hold the model in their locals: an exception the user keeps must not
            traceback.clear_frames(exc.__traceback__)
            for undo in reversed(undos):
                try:
                    undo()
                except Exception as again:  # pragma: no cover - a container that refuses its own entries back
                    log.error("force could not put back what it removed before %s: %s", plan.name, again)
            message = f"{type(exc).__name__}: {exc}" if not isinstance(exc, NoEffect) else str(exc)
            errors[plan.name] = f"force changed nothing: {message}"
            log.warning("force for %s changed nothing: %s", plan.name, message)
            if not isinstance(exc, Exception):
                raise
            exc.__traceback__ = None  # it holds this frame, whose locals hold the model: the user may keep exc
            continue
        finally:
            undos.clear()
            del steps
        ran.update(_identity(op) for _, op in ready)
        if shared or ready:
            done[plan.name] = shared + [action for action, _ in ready]
        del ready
    return done, errors


__all__ = ["NoEffect", "Op", "apply", "execute", "holds"]
