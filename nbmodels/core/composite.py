"""Models made of several parts: a pipeline, a dict or list of models, an object with model attributes.

A source may return any object whose parts are modules or tensors: a diffusers
``DiffusionPipeline`` (its ``components`` name the parts), ``{"encoder": e,
"decoder": d}``, ``[model, tokenizer]``, a plain object holding ``unet`` and
``vae``. Its size, parameters and devices are the sums over its parts, each
counted once; moving it moves every part. A module or a tensor is one part, not
a composite. Only the first levels are looked into (parts inside a dict or list
of the object), never a part's own attributes: a module is already a tree.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

from nbmodels.errors import InvalidArgumentError

_DEPTH = 3  # containers inside containers looked into
_MAX_ITEMS = 100_000  # items of the object itself looked at (a dict of models, a list of them)
_INNER_ITEMS = 1_000  # items looked at in a container inside it: a user's dataset beside the model stays cheap


def _torch() -> Any:
    return sys.modules.get("torch")


def is_part(value: Any) -> bool:
    """A module or a tensor: something that holds weights."""
    torch = _torch()
    return torch is not None and isinstance(value, torch.nn.Module | torch.Tensor)


def _items(obj: Any) -> Iterator[tuple[str, Any]]:
    """The named values an object offers as parts: ``components``, a dict's items, a list's, attributes."""
    if isinstance(obj, dict):
        yield from ((str(key), value) for key, value in obj.items())
        return
    if isinstance(obj, list | tuple):
        yield from ((str(index), value) for index, value in enumerate(obj))
        return
    components = getattr(type(obj), "components", None) is not None and getattr(obj, "components", None)
    if isinstance(components, dict):  # a diffusers pipeline says what its parts are
        yield from ((str(key), value) for key, value in components.items())
        return
    attributes = getattr(obj, "__dict__", None)
    if isinstance(attributes, dict):
        yield from ((key, value) for key, value in attributes.items() if not key.startswith("__"))


def parts(obj: Any) -> list[tuple[str, Any]]:
    """The named parts (modules and tensors) of a composite, each once; empty for a module, a tensor or nothing.

    Names follow the way in: ``unet``, ``encoder``, ``0``, ``models.1``.
    """
    torch = _torch()
    if torch is None or obj is None or isinstance(obj, torch.nn.Module | torch.Tensor | str | bytes | int | float):
        return []
    found: list[tuple[str, Any]] = []
    _visit(torch, obj, "", 1, _MAX_ITEMS, found, {id(obj)})
    return found


def _visit(
    torch: Any, container: Any, prefix: str, depth: int, limit: int, found: list[tuple[str, Any]], seen: set[int]
) -> None:
    """Collect the parts of ``container`` into ``found``: the parts right here first, then inside containers.

    A function of its arguments, not a closure: a closure that calls itself is a
    reference cycle, and it would keep the parts it found alive until a gc pass.
    """
    inner: list[tuple[str, Any]] = []
    for count, (name, value) in enumerate(_items(container)):
        if count >= limit:
            break
        if id(value) in seen:
            continue
        if isinstance(value, torch.nn.Module | torch.Tensor):
            seen.add(id(value))
            found.append((prefix + name, value))
        elif depth < _DEPTH and isinstance(value, dict | list | tuple) and value:
            inner.append((name, value))
    for name, value in inner:  # a look inside the containers beside the parts, a few items each
        if id(value) not in seen:
            seen.add(id(value))
            _visit(torch, value, f"{prefix}{name}.", depth + 1, _INNER_ITEMS, found, seen)


def has_modules(obj: Any) -> bool:
    """True when a dict, list or tuple holds a module among its own items (cheap: one level)."""
    torch = _torch()
    values = obj.values() if isinstance(obj, dict) else obj
    return torch is not None and any(isinstance(value, torch.nn.Module) for value in values)


def modules(obj: Any) -> list[Any]:
    """The module parts of ``obj``: itself for a module, else each module part once."""
    torch = _torch()
    if torch is None:
        return []
    if isinstance(obj, torch.nn.Module):
        return [obj]
    return [part for _, part in parts(obj) if isinstance(part, torch.nn.Module)]


def is_composite(obj: Any) -> bool:
    """True for an object that is not itself a module or tensor but has parts that are."""
    return bool(parts(obj))


def move(obj: Any, device: Any = None, dtype: Any = None) -> Any:
    """Move every part of a composite to ``device`` and/or ``dtype``, in place where the object allows.

    Modules move in place; a tensor part is replaced by its moved copy (in its
    dict, list or attribute; a tuple is rebuilt). An object with its own ``.to()``
    (a diffusers pipeline, a module) moves itself. Returns the moved object.
    """
    mover = getattr(obj, "to", None)
    if mover is not None and callable(mover):
        moved = obj
        if device is not None:
            moved = mover(device)
        if dtype is not None:
            moved = moved.to(dtype)
        return moved
    if not is_composite(obj):
        raise InvalidArgumentError(
            f"a {type(obj).__name__} has no .to() and no model parts; load it without device or dtype"
        )
    return _move_inside(obj, device, dtype, 1)


def _moved(value: Any, device: Any, dtype: Any) -> Any:
    torch = _torch()
    if isinstance(value, torch.nn.Module):
        if device is not None:
            value = value.to(device)
        if dtype is not None:
            value = value.to(dtype)
        return value
    if device is not None:
        value = value.to(device)
    if dtype is not None and value.is_floating_point():
        value = value.to(dtype)
    return value


def _move_inside(obj: Any, device: Any, dtype: Any, depth: int) -> Any:
    def moved(value: Any) -> Any:
        if is_part(value):
            return _moved(value, device, dtype)
        if depth < _DEPTH and isinstance(value, dict | list | tuple) and parts(value):
            return _move_inside(value, device, dtype, depth + 1)
        return value

    if isinstance(obj, dict):
        for key, value in list(obj.items()):
            new = moved(value)
            if new is not value:
                obj[key] = new
        return obj
    if isinstance(obj, list):
        for index, value in enumerate(obj):
            new = moved(value)
            if new is not value:
                obj[index] = new
        return obj
    if isinstance(obj, tuple):
        items = [moved(value) for value in obj]
        return type(obj)(*items) if hasattr(obj, "_fields") else type(obj)(items)
    for key, value in list(vars(obj).items()):
        if key.startswith("__"):
            continue
        new = moved(value)
        if new is not value:
            setattr(obj, key, new)
    return obj


__all__ = ["is_composite", "is_part", "modules", "move", "parts"]
