"""Every error nbmodels raises, in one tree.

Each class also inherits the builtin a caller would naturally catch, so code
that knows nothing of nbmodels still works::

    NbModelsError
    ├── ModelNotFoundError      (KeyError)    no model or registration by that name
    ├── InvalidArgumentError    (ValueError)  a bad name, device, dtype or keyword
    ├── ModelConflictError      (ValueError)  the name is loaded from something else
    ├── SourceError             (ValueError)  the source cannot be understood or found
    │   └── UnsafeCheckpointError            a pickled checkpoint without trust=True
    └── ModelLoadError          (RuntimeError) the loader itself failed; wraps its error

Messages name the model and say what to do next.
"""

from __future__ import annotations


class NbModelsError(Exception):
    """Base class of every nbmodels error."""


class ModelNotFoundError(NbModelsError, KeyError):
    """No model (or registration) by that name."""

    def __init__(self, name: str, known: list[str] | None = None) -> None:
        self.name = name
        hint = f"known: {', '.join(sorted(set(known)))}" if known else "nothing is loaded"
        self.message = f"no model named {name!r} ({hint}); load it first with load({name!r}, source)"
        super().__init__(self.message)

    def __str__(self) -> str:  # KeyError would repr() the message otherwise
        return self.message


class InvalidArgumentError(NbModelsError, ValueError):
    """A name, device, dtype or keyword the manager cannot use."""


class ModelConflictError(NbModelsError, ValueError):
    """The name is already loaded from another source or with other settings."""


class SourceError(NbModelsError, ValueError):
    """The source cannot be resolved: unknown scheme, missing module, missing file."""


class UnsafeCheckpointError(SourceError):
    """The checkpoint holds pickled Python objects and the user did not say trust."""


class ModelLoadError(NbModelsError, RuntimeError):
    """The loader ran and failed; ``__cause__`` holds its original exception."""

    def __init__(self, name: str, message: str) -> None:
        self.name = name
        super().__init__(message)


__all__ = [
    "InvalidArgumentError",
    "ModelConflictError",
    "ModelLoadError",
    "ModelNotFoundError",
    "NbModelsError",
    "SourceError",
    "UnsafeCheckpointError",
]
