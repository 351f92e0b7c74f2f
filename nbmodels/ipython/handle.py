"""``ModelHandle``: what ``m = %load_model x`` gives the user, standing in for the model.

Why a handle and not the model: the value of a magic lands wherever IPython puts
values (``Out[N]``, ``_``, a user variable), and a strong reference there would
keep the model alive after ``%unload_model``. The handle holds the model through
a weak reference, so the manager stays the only owner and unload really frees it.

It behaves like the model for what notebook code does with one: calls,
attribute reads and writes, ``isinstance`` (``__class__`` reports the model's
class), indexing and ``len`` of containers, ``repr``. Methods that return the
model itself (``.to()``, ``.cuda()``, ``.eval()``, ...) return the handle, so
``m = m.to("cuda")`` keeps the weak link. Everything else returns what the
model returns, strong references included (``m.fc`` is the real layer).
After an unload every use raises ReferenceError, naming the model; if the
name is loaded again, the handle follows it (it stands for "the model called x").
``unwrap(m)`` gives the model itself (a strong reference: delete it when done).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator
from typing import Any

from nbmodels.core import ModelManager
from nbmodels.errors import ModelNotFoundError

# Methods that return ``self`` on torch modules and tensors: wrapped so they return the handle.
_RETURNS_SELF = frozenset(
    {
        "to",
        "cuda",
        "cpu",
        "mps",
        "eval",
        "train",
        "half",
        "float",
        "double",
        "bfloat16",
        "type",
        "requires_grad_",
        "share_memory",
        "apply",
        "to_empty",
    }
)


def _weak(model: Any) -> Callable[[], Any] | None:
    """A weak reference to ``model``; None when it takes none (a dict of tensors: found by name instead)."""
    try:
        return weakref.ref(model)
    except TypeError:
        return None


_OWN = frozenset({"_nbm_name", "_nbm_ref", "_nbm_manager", "_nbm_shown_in"})


class ModelHandle:
    """A weak stand-in for the loaded model called ``name`` (see the module docstring)."""

    __slots__ = ("__weakref__", "_nbm_manager", "_nbm_name", "_nbm_ref", "_nbm_shown_in")

    def __init__(self, name: str, model: Any, manager: ModelManager, shown_in: int | None = None) -> None:
        object.__setattr__(self, "_nbm_name", name)
        object.__setattr__(self, "_nbm_manager", manager)
        object.__setattr__(self, "_nbm_ref", _weak(model))
        # The execution count whose output already showed this model; its displayhook shows nothing more.
        object.__setattr__(self, "_nbm_shown_in", shown_in)

    # --- the target -------------------------------------------------------------

    def _nbm_target(self) -> Any:
        """The model: through the weak reference, else by name (a reload or a move made a new object)."""
        ref = self._nbm_ref
        if ref is not None:
            model = ref()
            if model is not None:
                return model
        try:
            model = self._nbm_manager.get(self._nbm_name) if self._nbm_name in self._nbm_manager else None
        except ModelNotFoundError:  # unloaded by another thread just now
            model = None
        if model is None:
            raise ReferenceError(
                f"model {self._nbm_name!r} was unloaded; load it again with %load_model {self._nbm_name}"
            )
        if ref is not None:
            object.__setattr__(self, "_nbm_ref", _weak(model))
        return model

    def _nbm_alive(self) -> bool:
        ref = self._nbm_ref
        return (ref is not None and ref() is not None) or self._nbm_name in self._nbm_manager

    # --- behaving like the model --------------------------------------------------

    @property  # type: ignore[misc]
    def __class__(self) -> type:  # isinstance(handle, nn.Module) must hold
        if self._nbm_alive():
            return type(self._nbm_target())
        return ModelHandle

    def __getattr__(self, attribute: str) -> Any:
        if attribute in _OWN:  # not set yet (copy, unpickling): never recurse into the target
            raise AttributeError(attribute)
        value = getattr(self._nbm_target(), attribute)
        if attribute in _RETURNS_SELF and callable(value):
            return self._returning_handle(value)
        return value

    def _returning_handle(self, method: Callable[..., Any]) -> Callable[..., Any]:
        handle_ref = weakref.ref(self)

        def call(*args: Any, **kwargs: Any) -> Any:
            result = method(*args, **kwargs)
            handle = handle_ref()
            if handle is not None and handle._nbm_alive() and result is handle._nbm_target():
                return handle
            return result

        call.__name__ = getattr(method, "__name__", "call")
        call.__doc__ = getattr(method, "__doc__", None)
        return call

    def __setattr__(self, attribute: str, value: Any) -> None:
        if attribute in _OWN:
            object.__setattr__(self, attribute, value)
        else:
            setattr(self._nbm_target(), attribute, value)

    def __delattr__(self, attribute: str) -> None:
        delattr(self._nbm_target(), attribute)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._nbm_target()(*args, **kwargs)

    def __dir__(self) -> list[str]:
        return dir(self._nbm_target()) if self._nbm_alive() else []

    def __getitem__(self, key: Any) -> Any:
        return self._nbm_target()[key]

    def __setitem__(self, key: Any, value: Any) -> None:
        self._nbm_target()[key] = value

    def __delitem__(self, key: Any) -> None:
        del self._nbm_target()[key]

    def __len__(self) -> int:
        return len(self._nbm_target())

    def __iter__(self) -> Iterator[Any]:
        return iter(self._nbm_target())

    def __contains__(self, item: Any) -> bool:
        return item in self._nbm_target()

    def __bool__(self) -> bool:
        """False once the model is unloaded, else the model's own truth."""
        return self._nbm_alive() and bool(self._nbm_target())

    def __eq__(self, other: object) -> bool:
        if type(other) is ModelHandle:
            other = other._nbm_target() if other._nbm_alive() else other
        return self._nbm_alive() and self._nbm_target() is other

    def __hash__(self) -> int:
        return hash((ModelHandle, self._nbm_name))

    def __repr__(self) -> str:
        if not self._nbm_alive():
            return f"<unloaded model {self._nbm_name!r} (nbmodels handle)>"
        return repr(self._nbm_target())

    __str__ = __repr__

    # --- display ------------------------------------------------------------------

    def _ipython_display_(self) -> None:
        """Show the model, unless this cell's own ``%load_model`` line already did."""
        from IPython import get_ipython

        from nbmodels.ipython.views import display

        shell = get_ipython()
        if shell is not None and self._nbm_shown_in == shell.execution_count:
            return
        if self._nbm_alive():
            display(self._nbm_target())  # publishes its reprs; keeps no reference
        else:
            display({"text/plain": repr(self)}, raw=True)


def unwrap(obj: Any) -> Any:
    """The model behind a handle (a strong reference), or ``obj`` itself when it is no handle."""
    if type(obj) is ModelHandle:
        return obj._nbm_target()
    return obj


def is_handle(obj: Any) -> bool:
    return type(obj) is ModelHandle


__all__ = ["ModelHandle", "is_handle", "unwrap"]
