"""Who still holds an object, in words a user understands (IPython-free).

This is the gc-referrer level: the direct referrers of an object, named
(a module variable, an attribute, a dict key, a list item, a closure cell).
"""

from __future__ import annotations

import gc
import sys
import types
from typing import Any

_MAX_HOLDERS = 8


def _owner_of_dict(container: dict[Any, Any], ignore: set[int]) -> str | None:
    """Name the object whose ``__dict__`` (or module globals) ``container`` is."""
    for owner in gc.get_referrers(container):
        if id(owner) in ignore:
            continue
        if isinstance(owner, types.ModuleType) and owner.__dict__ is container:
            return f"module {owner.__name__}"
        if isinstance(owner, types.FunctionType) and owner.__globals__ is container:
            return f"module {owner.__module__}"
        if getattr(owner, "__dict__", None) is container and not isinstance(owner, type):
            return f"{type(owner).__name__} object"
    return None


def describe_referrer(referrer: Any, target: Any, ignore: set[int]) -> str | None:
    """One referrer of ``target`` in words; None for those not worth naming (our own frames)."""
    if isinstance(referrer, types.FrameType):
        code = referrer.f_code
        if code.co_filename.startswith(_PACKAGE_DIR):
            return None
        names = [k for k, v in referrer.f_locals.items() if v is target]
        where = f"local {names[0]!r}" if names else "a local"
        return f"{where} of {code.co_name}() running in {code.co_filename}:{referrer.f_lineno}"
    if isinstance(referrer, dict):
        keys = [k for k, v in referrer.items() if v is target]
        key = keys[0] if keys else "?"
        owner = _owner_of_dict(referrer, ignore)
        if owner is not None and owner.startswith("module "):
            return f"variable {key!r} in {owner}"
        if owner is not None:
            return f"attribute {key!r} of a {owner}"
        return f"key {key!r} of a dict"
    if isinstance(referrer, list):
        index = next((i for i, v in enumerate(referrer) if v is target), "?")
        return f"item {index} of a list of {len(referrer)}"
    if isinstance(referrer, tuple):
        return f"a tuple of {len(referrer)}"
    if isinstance(referrer, types.CellType):
        return "a closure variable (a nested function or callback captured it)"
    if isinstance(referrer, types.MethodType):
        return f"bound method {referrer.__func__.__qualname__} (a callback?)"
    if isinstance(referrer, set | frozenset):
        return f"a {type(referrer).__name__}"
    if isinstance(referrer, BaseException):
        return f"a {type(referrer).__name__} exception"
    if isinstance(referrer, types.TracebackType):
        return "a traceback"
    return f"a {type(referrer).__module__}.{type(referrer).__qualname__} object"


def describe_holders(target: Any, *, ignore: tuple[Any, ...] = ()) -> tuple[str, ...]:
    """The direct holders of ``target`` (at most a few), named; our own frames left out."""
    ignored = {id(x) for x in ignore}
    here = sys._getframe()
    ignored.add(id(here))
    referrers = gc.get_referrers(target)
    ignored.add(id(referrers))
    found: list[str] = []
    try:
        for referrer in referrers:
            if id(referrer) in ignored:
                continue
            text = describe_referrer(referrer, target, ignored)
            if text is not None and text not in found:
                found.append(text)
            if len(found) >= _MAX_HOLDERS:
                break
    finally:
        del referrers, here
    return tuple(found)


_PACKAGE_DIR = __file__.rsplit("/core/", 1)[0]
