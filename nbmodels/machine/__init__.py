"""The whole machine at a glance: every kernel's models and memory, from any notebook and a terminal.

Kernels with the extension publish their state (:mod:`.publisher`) in the
Jupyter runtime directory; :func:`scan` finds every kernel process (with
nbmodels or not), its notebook, RSS, GPU memory per process from NVML, and its
models; :func:`free_kernel` asks one kernel to release its models over its
owner-only Unix socket. No IPython here: the magics and the panel build on it.
"""

from nbmodels.core.nvml import GpuDevice, GpuReadings, devices_from_records, read_gpus
from nbmodels.machine.errors import (
    KernelNotFoundError,
    MachineError,
    NotNbmodelsKernelError,
    RefusedError,
    StateFileError,
)
from nbmodels.machine.free import FreeResult, find_kernel, free_kernel, free_row
from nbmodels.machine.publisher import Publisher
from nbmodels.machine.scan import KernelRow, MachineView, OtherProcess, scan
from nbmodels.machine.state import KernelState, ModelState
from nbmodels.machine.view import MachineTable

__all__ = [
    "FreeResult",
    "GpuDevice",
    "GpuReadings",
    "KernelNotFoundError",
    "KernelRow",
    "KernelState",
    "MachineError",
    "MachineTable",
    "MachineView",
    "ModelState",
    "NotNbmodelsKernelError",
    "OtherProcess",
    "Publisher",
    "RefusedError",
    "StateFileError",
    "devices_from_records",
    "find_kernel",
    "free_kernel",
    "free_row",
    "read_gpus",
    "scan",
]
