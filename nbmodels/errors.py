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
    ├── ModelLoadError          (RuntimeError) the loader itself failed; wraps its error
    ├── BudgetExceededError     (RuntimeError) a memory budget cannot make room (pinned or held models)
    ├── WorkerDiedError         (RuntimeError) the worker process (or Ray actor) of an isolated model ended
    ├── RemoteError             (RuntimeError) a worker's error whose class cannot be re-created here
    └── TransferError           (TypeError)    an argument or a result cannot cross to or from a worker

``PlacementWarning`` (a ``UserWarning``) says why ``device="auto"`` chose the CPU.

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

    def __reduce__(self) -> tuple[object, ...]:  # crosses from a worker process as itself
        return type(self), (self.name, str(self))


class BudgetExceededError(NbModelsError, RuntimeError):
    """A memory budget (``max_memory``, ``max_loaded_models``) cannot make room: what blocks it is pinned or held.

    ``name`` is the model that needed the room; ``needed`` and ``free`` are bytes
    per device (what it needed, what the budget had left after every eviction
    that could free memory); ``blocked`` names the models that could not leave.
    Nothing was loaded, moved or changed by the call that raised it.
    """

    def __init__(
        self,
        message: str,
        *,
        name: str = "",
        needed: dict[str, int] | None = None,
        free: dict[str, int] | None = None,
        blocked: tuple[str, ...] = (),
    ) -> None:
        self.name = name
        self.needed = dict(needed or {})
        self.free = dict(free or {})
        self.blocked = tuple(blocked)
        super().__init__(message)


class PlacementWarning(UserWarning):
    """``device="auto"`` put a model on the CPU although CUDA devices exist: none had room for it."""


class WorkerDiedError(NbModelsError, RuntimeError):
    """The process (or Ray actor) that held an isolated model ended; the kernel itself is fine.

    ``how`` says how it ended in words ("killed by SIGKILL", "exited with code 3");
    ``exit_code`` and ``signal`` (a name such as ``"SIGSEGV"``) are the raw facts when known.
    """

    def __init__(
        self,
        name: str,
        how: str,
        *,
        pid: int | None = None,
        exit_code: int | None = None,
        signal: str | None = None,
        detail: str = "",
    ) -> None:
        self.name = name
        self.how = how
        self.pid = pid
        self.exit_code = exit_code
        self.signal = signal
        where = f"the worker of model {name!r}" + (f" (pid {pid})" if pid is not None else "")
        message = f"{where} {how}; the kernel is fine, and loading {name!r} again starts a new worker"
        if detail:
            message += f"\n{detail}"
        super().__init__(message)

    def __reduce__(self) -> tuple[object, ...]:
        return _rebuild_worker_died, (self.name, self.how, self.pid, self.exit_code, self.signal, str(self))


def _rebuild_worker_died(
    name: str, how: str, pid: int | None, exit_code: int | None, signal: str | None, message: str
) -> WorkerDiedError:
    error = WorkerDiedError(name, how, pid=pid, exit_code=exit_code, signal=signal)
    error.args = (message,)
    return error


class RemoteError(NbModelsError, RuntimeError):
    """A call in a worker raised an exception whose class cannot be re-created here.

    ``remote_type`` is its class name; the worker's traceback is the ``__cause__``.
    """

    def __init__(self, message: str, remote_type: str = "") -> None:
        self.remote_type = remote_type
        super().__init__(message)

    def __reduce__(self) -> tuple[object, ...]:
        return type(self), (str(self), self.remote_type)


class TransferError(NbModelsError, TypeError):
    """An argument or a result cannot cross the process boundary (it cannot be pickled or rebuilt)."""


__all__ = [
    "BudgetExceededError",
    "InvalidArgumentError",
    "ModelConflictError",
    "ModelLoadError",
    "ModelNotFoundError",
    "NbModelsError",
    "PlacementWarning",
    "RemoteError",
    "SourceError",
    "TransferError",
    "UnknownKeywordError",
    "UnsafeCheckpointError",
    "WorkerDiedError",
]
