"""The machine view's errors: each one line that names the problem and what to do.

They join the package's tree (:class:`nbmodels.NbModelsError`) and inherit the
builtin a caller would catch anyway::

    MachineError          (RuntimeError)     the base; the CLI prints it as one line
    ├── KernelNotFoundError  (LookupError)   no kernel matches, or several do
    ├── NotNbmodelsKernelError               a kernel that never ran %load_ext nbmodels
    ├── StateFileError       (ValueError)    a corrupt state file, or one of another format
    └── RefusedError         (PermissionError) a socket or state that is not ours
"""

from __future__ import annotations

from nbmodels.errors import NbModelsError


class MachineError(NbModelsError, RuntimeError):
    """Something about other kernels on this machine went wrong; the message says what to do."""


class KernelNotFoundError(MachineError, LookupError):
    """No kernel matches what the user typed, or more than one does."""


class NotNbmodelsKernelError(MachineError):
    """The kernel runs without the nbmodels extension, so nothing in it can answer a request."""


class StateFileError(MachineError, ValueError):
    """A kernel state file that cannot be read: corrupt, incomplete, or of another format version."""


class RefusedError(MachineError, PermissionError):
    """A socket or state file that belongs to another user, has loose permissions, or lies about its owner."""


__all__ = ["KernelNotFoundError", "MachineError", "NotNbmodelsKernelError", "RefusedError", "StateFileError"]
