"""What the kernel and a worker say to each other, and how errors and exits read.

Shared by the process runner and the Ray runner: the replies a model host gives
(values, a marker for "that attribute is callable", a marker for "that call returned
the model itself"), how an exception raised in a worker is carried back so that it
reads like the in-process one, and how a process exit is put in words.
"""

from __future__ import annotations

import pickle
import re
import signal
import sys
import traceback
from dataclasses import dataclass

from nbmodels.core.memory import Footprint
from nbmodels.errors import RemoteError

# Operations a worker serves. The control ones are answered by the worker's receiving
# thread at once, even while a long call runs on its main thread.
LOAD, CALL, ATTRIBUTE, MEASURE = "load", "call", "attribute", "measure"
MEMORY, PING, INTERRUPT, STOP = "memory", "ping", "interrupt", "stop"
CONTROL = frozenset({MEMORY, PING, INTERRUPT, STOP})

# Reply statuses.
OK, ERROR, TRANSFER = 0, 1, 2

EXIT_POISONED = 70
"""The worker's exit code after an error that leaves its process unusable (a CUDA error)."""


@dataclass(frozen=True)
class Loaded:
    """What a worker says once the model is loaded (measured there)."""

    class_name: str
    footprint: Footprint
    load_seconds: float
    pid: int


@dataclass(frozen=True)
class IsCallable:
    """The attribute asked for is callable (a method, a submodule): it stays in the worker."""


@dataclass(frozen=True)
class SelfRef:
    """The call returned the object it was called on (``.eval()``, ``.to()``): at ``path`` of the model."""

    path: tuple[str, ...]
    footprint: Footprint


@dataclass(frozen=True)
class ErrorReply:
    """An exception raised by a call in the worker, as data.

    ``pickled`` is the exception itself when it survives a pickle round trip in the
    worker (most do: torch's errors, ValueError, the nbmodels errors); otherwise the
    caller gets a :class:`~nbmodels.errors.RemoteError` with the same type name and text.
    ``fatal`` means the worker ends after this reply (its process is poisoned).
    """

    type_name: str
    message: str
    traceback: str
    pickled: bytes | None
    fatal: bool = False


@dataclass(frozen=True)
class TransferFailure:
    """The call's result could not be sent back: ``what`` names it, ``why`` says why."""

    what: str
    why: str


class RemoteTraceback(Exception):
    """The worker's traceback, attached as ``__cause__`` of an error re-raised in the kernel.

    The same device concurrent.futures uses for exceptions from a process pool.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        super().__init__(text)

    def __str__(self) -> str:
        return f'\n"""\n{self.text.rstrip()}\n"""'


_POISON = re.compile(
    r"CUDA error|device-side assert|illegal memory access|unspecified launch failure|"
    r"CUBLAS_STATUS_(?!ALLOC_FAILED)|CUDNN_STATUS_(?!ALLOC_FAILED)|cudaError|NCCL error",
    re.IGNORECASE,
)


def poisons_process(exc: BaseException) -> bool:
    """True for errors after which the worker's process cannot be trusted: CUDA errors.

    A device-side assert or an illegal memory access leaves the CUDA context broken
    until the process ends; an out-of-memory error does not (the allocator recovers).
    """
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(exc, torch.OutOfMemoryError):
        return False
    accelerator_error = getattr(torch, "AcceleratorError", None) if torch is not None else None
    if accelerator_error is not None and isinstance(exc, accelerator_error):
        return True
    return isinstance(exc, RuntimeError) and bool(_POISON.search(str(exc)))


def _qualified(kind: type) -> str:
    return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"


def error_reply(exc: BaseException) -> ErrorReply:
    """Describe ``exc`` (raised in this worker) for the kernel."""
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    pickled: bytes | None = None
    try:
        candidate = pickle.dumps(exc)
        copy = pickle.loads(candidate)
        if type(copy) is type(exc) and str(copy) == str(exc):
            pickled = candidate
    except Exception:
        pickled = None
    return ErrorReply(_qualified(type(exc)), str(exc), text, pickled, fatal=poisons_process(exc))


def rebuild_error(reply: ErrorReply, where: str) -> BaseException:
    """The exception to raise in the kernel: the worker's own when possible, its traceback as the cause."""
    error: BaseException | None = None
    if reply.pickled is not None:
        try:
            error = pickle.loads(reply.pickled)
        except Exception:
            error = None
    if not isinstance(error, BaseException):
        error = RemoteError(f"{reply.type_name}: {reply.message}", reply.type_name)
    error.__cause__ = RemoteTraceback(reply.traceback)
    if hasattr(error, "add_note"):
        error.add_note(f"(raised in {where})")
    return error


def describe_exit(returncode: int | None) -> tuple[str, int | None, str | None]:
    """How a process ended, from its return code: words, exit code, signal name."""
    if returncode is None:
        return "ended (its exit status is unknown)", None, None
    if returncode >= 0:
        if returncode == EXIT_POISONED:
            return f"ended itself after an error that poisons its process (exit code {returncode})", returncode, None
        return f"exited with code {returncode}", returncode, None
    number = -returncode
    try:
        name = signal.Signals(number).name
    except ValueError:
        return f"was killed by signal {number}", None, str(number)
    hint = {
        "SIGKILL": "; the system's out-of-memory killer sends this signal too",
        "SIGSEGV": " (a segmentation fault)",
        "SIGABRT": " (an abort, often a failed assertion in C++ code)",
        "SIGBUS": " (a bus error)",
    }.get(name, "")
    return f"was killed by {name} (signal {number}){hint}", None, name
