"""Kernels that run this very Python: for the demo, the tests and the benchmarks.

A ``python3`` kernelspec installed elsewhere (``~/.local/share/jupyter``) may
name another interpreter, one without nbmodels. The kernel managers here answer
every kernel name with ``sys.executable -m ipykernel_launcher``, so the kernel
always sees the nbmodels being run. Needs ``nbmodels[notebook]``.
"""

from __future__ import annotations

import functools
import sys
from typing import Any

KERNEL_NAME = "python3"


@functools.cache
def _classes() -> tuple[type[Any], type[Any]]:
    from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager, KernelManager
    from traitlets import default

    class ThisPythonSpecs(KernelSpecManager):
        """Every kernel name is this interpreter."""

        def get_kernel_spec(self, kernel_name: str) -> KernelSpec:
            return KernelSpec(
                argv=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                display_name="Python 3 (nbmodels)",
                language="python",
                name=kernel_name,
                resource_dir="",
            )

    class ThisPythonKernelManager(KernelManager):
        @default("kernel_spec_manager")
        def _this_python(self) -> KernelSpecManager:
            return ThisPythonSpecs()

    class AsyncThisPythonKernelManager(AsyncKernelManager):
        @default("kernel_spec_manager")
        def _this_python(self) -> KernelSpecManager:
            return ThisPythonSpecs()

    return ThisPythonKernelManager, AsyncThisPythonKernelManager


def kernel_manager_class(*, asynchronous: bool = False) -> type[Any]:
    """A KernelManager class (for nbclient's ``kernel_manager_class``) that starts this interpreter."""
    blocking, non_blocking = _classes()
    return non_blocking if asynchronous else blocking


def kernel_manager() -> Any:
    """A blocking KernelManager, not yet started, for this interpreter."""
    return kernel_manager_class()(kernel_name=KERNEL_NAME)


__all__ = ["KERNEL_NAME", "kernel_manager", "kernel_manager_class"]
