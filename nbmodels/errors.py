"""Every error nbmodels raises, in one tree.

Each class also inherits the builtin a caller would naturally catch, so code
that knows nothing of nbmodels still works::

    NbModelsError
    ├── ModelNotFoundError      (KeyError)    no model or registration by that name
    ├── InvalidArgumentError    (ValueError)  a bad name, device, dtype or keyword
    │   └── UnknownKeywordError  (TypeError)  a keyword the loader does not take
    ├── ModelConflictError      (ValueError)  the name is loaded from something else
    ├── SourceError             (ValueError)  the source cannot be understood or found
    │   └── UnsafeCheckpointError            a pickled checkpoint without trust=True
    └── ModelLoadError          (RuntimeError) the loader itself failed; wraps its error

Messages name the model and say what to do next. An error raised inside a
loader gets the model's name and source put in front of its message
(:meth:`NbModelsError.add_context`), so it reads the same wherever it surfaces.
"""

from __future__ import annotations


class NbModelsError(Exception):
    """Base class of every nbmodels error."""

    _before: str = ""
    _after: str = ""

    def add_context(self, *, before: str = "", after: str = "") -> None:
        """Put ``before`` in front of the message and ``after`` behind it (the type stays, for callers' except)."""
        self._before = before + self._before
        self._after += after

    def _message(self) -> str:
        return super().__str__()

    def __str__(self) -> str:
        message = self._message()
        if self._after.startswith(";"):  # "... torch.Size([2, 3]).; the reload ..." reads badly
            message = message.rstrip(". ")
        return f"{self._before}{message}{self._after}"


class ModelNotFoundError(NbModelsError, KeyError):
    """No model (or registration) by that name."""

    def __init__(self, name: str, known: list[str] | None = None) -> None:
        self.name = name
        hint = f"known: {', '.join(sorted(set(known)))}" if known else "nothing is loaded"
        self.message = f"no model named {name!r} ({hint}); load it first with load({name!r}, source)"
        super().__init__(self.message)

    def _message(self) -> str:  # KeyError would repr() the message otherwise
        return self.message


class InvalidArgumentError(NbModelsError, ValueError):
    """A name, device, dtype or keyword the manager cannot use."""


class UnknownKeywordError(InvalidArgumentError, TypeError):
    """A keyword the loader does not take (a misspelt ``--kw`` name): Python calls that a TypeError."""


class ModelConflictError(NbModelsError, ValueError):
    """The name is already loaded from another source or with other settings.

    ``differences`` says each one as "it is X, this asks for Y" (what the model has now).
    """

    def __init__(self, message: str, *, name: str = "", differences: list[str] | None = None) -> None:
        self.name = name
        self.differences = list(differences or [])
        super().__init__(message)


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
    "UnknownKeywordError",
    "UnsafeCheckpointError",
]
