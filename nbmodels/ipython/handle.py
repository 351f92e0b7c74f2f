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

Where users copy and save a model, the handle gives the model, not itself:
``copy.deepcopy(m)`` (the best-model snapshot of a training loop) is a deep copy
of the model, a plain object the manager does not own; ``torch.save(m, f)`` and
``pickle.dumps(m)`` save the model. ``m == x`` and ``hash(m)`` are the model's
own, so a handle and its model are one key in a dict or set; after an unload a
handle equals only itself and keeps the hash it last had (as ``weakref.ref``).
"""

from __future__ import annotations

import copy
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


_OWN = frozenset({"_nbm_name", "_nbm_ref", "_nbm_manager", "_nbm_hash"})


class ModelHandle:
    """A weak stand-in for the loaded model called ``name`` (see the module docstring)."""

    __slots__ = ("__weakref__", "_nbm_hash", "_nbm_manager", "_nbm_name", "_nbm_ref")

    def __init__(self, name: str, model: Any, manager: ModelManager) -> None:
        object.__setattr__(self, "_nbm_name", name)
        object.__setattr__(self, "_nbm_manager", manager)
        object.__setattr__(self, "_nbm_ref", _weak(model))
        object.__setattr__(self, "_nbm_hash", None)

    # --- the target -------------------------------------------------------------

    def _nbm_target(self) -> Any:
        """The model: through the weak reference, else by name (a reload or a move made a new object).

        Every use through the handle counts as a use of the model (its keep-alive
        clock restarts, and eviction takes the least recently used first).
        """
        ref = self._nbm_ref
        if ref is not None:
            model = ref()
            if model is not None:
                self._nbm_manager.mark_used(self._nbm_name)
                return model
        try:
            model = self._nbm_manager.get(self._nbm_name) if self._nbm_name in self._nbm_manager else None
        except ModelNotFoundError:  # unloaded by another thread just now
            model = None
        if model is None:
            death = self._nbm_manager.worker_death(self._nbm_name)
            if death is not None:  # it ran in a worker that crashed: say how, not just "unloaded"
                raise death.error()
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
        with self._nbm_manager.using(self._nbm_name):  # in use while it runs: never evicted or expired mid-call
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

    def __eq__(self, other: object) -> Any:
        """The model's own equality (identity for a torch module); an unloaded handle equals only itself."""
        if other is self:
            return True
        if not self._nbm_alive() or (type(other) is ModelHandle and not other._nbm_alive()):
            return False
        result: Any = self._nbm_target() == unwrap(other)
        return result

    def __hash__(self) -> int:
        """The model's own hash, so ``a == b`` implies ``hash(a) == hash(b)``; kept for after an unload."""
        if self._nbm_alive():
            value = hash(self._nbm_target())  # TypeError for an unhashable model (a dict of tensors), as for it
            object.__setattr__(self, "_nbm_hash", value)
            return value
        if self._nbm_hash is None:
            raise TypeError(f"model {self._nbm_name!r} was unloaded before its handle was ever hashed")
        cached: int = self._nbm_hash
        return cached

    # --- copying and saving: the model, never the handle ----------------------------

    def __copy__(self) -> Any:
        return copy.copy(self._nbm_target())

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        return copy.deepcopy(self._nbm_target(), memo)

    def __reduce_ex__(self, protocol: Any) -> Any:
        """Pickle (and ``torch.save``) the model itself: what is loaded back is a model, not a handle."""
        return self._nbm_target().__reduce_ex__(protocol)

    def __repr__(self) -> str:
        if not self._nbm_alive():
            return f"<unloaded model {self._nbm_name!r} (nbmodels handle)>"
        return repr(self._nbm_target())

    __str__ = __repr__

    # --- display ------------------------------------------------------------------

    def _ipython_display_(self) -> None:
        """Show the model (its own reprs, rich ones included) without keeping a reference to it."""
        from nbmodels.ipython.views import display

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
