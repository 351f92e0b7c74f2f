"""What a worker needs to rebuild a model somewhere else, checked before any process starts.

A worker can only rebuild what it can import: a text source (``module:factory``, a
file or folder path, ``demo:NAME``, a plug-in scheme) or a callable that lives at
module level in a module other than ``__main__``. A lambda, a local function or a
function defined in a notebook cannot be rebuilt, and shipping it by value would
also ship whatever it refers to (often the very model one wants out of the kernel),
so it is refused with a :class:`~nbmodels.errors.SourceError` that says what works.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Any

from nbmodels.core.runners import transfer
from nbmodels.core.sources import Source, import_object, resolve
from nbmodels.errors import SourceError, TransferError

_WHAT_WORKS = (
    "a worker process can only rebuild a source it can import: write it as 'package.module:factory' "
    "(a module next to the notebook works), a file or a folder path, or 'demo:NAME'"
)


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker needs to load a model, as plain picklable data.

    ``source`` is a text source for :func:`nbmodels.core.sources.resolve`, or
    ``(module, qualname)`` of an importable callable. ``sys_path`` and ``cwd`` are the
    kernel's at the time of the load, so ``module:factory`` and relative paths mean
    the same in the worker (a spare worker started earlier adopts them).
    """

    name: str
    source: str | tuple[str, str]
    text: str
    kwargs: dict[str, Any]
    device: str | None
    dtype: Any
    trust: bool
    results_on_cpu: bool = False
    sys_path: tuple[str, ...] = field(default_factory=lambda: tuple(sys.path))
    cwd: str = field(default_factory=os.getcwd)

    def resolve(self) -> Source:
        """In the worker: the Source to load (the same resolve the kernel would use)."""
        if isinstance(self.source, tuple):
            module, qualname = self.source
            return resolve(import_object(module, qualname))
        return resolve(self.source)


def _callable_reference(factory: Any, name: str) -> tuple[str, str]:
    module = getattr(factory, "__module__", None)
    qualname = getattr(factory, "__qualname__", None)
    label = f"{module}:{qualname}" if module and qualname else repr(factory)
    if qualname == "<lambda>" or (qualname and "<lambda>" in qualname):
        raise SourceError(f"model {name!r}: the source is a lambda ({label}); {_WHAT_WORKS}")
    if not module or not qualname or "<locals>" in qualname:
        raise SourceError(f"model {name!r}: the source {label} is a local function; {_WHAT_WORKS}")
    if module == "__main__":
        raise SourceError(
            f"model {name!r}: the source {qualname} is defined in the notebook (__main__), "
            f"which a worker cannot import; {_WHAT_WORKS}"
        )
    try:
        found = import_object(module, qualname)
    except SourceError as exc:
        raise SourceError(
            f"model {name!r}: the source {label} cannot be imported by name ({exc}); {_WHAT_WORKS}"
        ) from exc
    if found is not factory and getattr(found, "__func__", found) is not getattr(factory, "__func__", factory):
        raise SourceError(f"model {name!r}: {label} names another object than the source given; {_WHAT_WORKS}")
    return module, qualname


def worker_spec(
    name: str,
    source: Any,
    *,
    kwargs: dict[str, Any] | None = None,
    device: str | None = None,
    dtype: Any = None,
    trust: bool = False,
    results_on_cpu: bool = False,
) -> WorkerSpec:
    """Check that a worker can rebuild ``source`` with ``kwargs``; raise SourceError/TransferError if not.

    Nothing is loaded or started; text sources are resolved here too, so a misspelt
    path or module fails at once, as it does for a load in the kernel.
    """
    resolved = resolve(source)
    reference: str | tuple[str, str]
    if callable(source) and not isinstance(source, str | os.PathLike | Source):
        reference = _callable_reference(source, name)  # the object itself: its text may name it, not import it
    else:
        reference = resolved.text  # a path is absolute by now; other texts resolve the same in the worker
        if reference.startswith("__main__:"):
            raise SourceError(
                f"model {name!r}: the source {reference} is defined in the notebook (__main__), "
                f"which a worker cannot import; {_WHAT_WORKS}"
            )
    spec = WorkerSpec(
        name=name,
        source=reference,
        text=resolved.text,
        kwargs=dict(kwargs or {}),
        device=device,
        dtype=dtype,
        trust=trust,
        results_on_cpu=results_on_cpu,
    )
    try:
        transfer.dumps(spec.kwargs)
    except transfer.NotTransferable as exc:
        raise TransferError(
            f"model {name!r}: the keyword argument {exc.what} cannot be sent to a worker: {exc.why}"
        ) from exc
    return spec
