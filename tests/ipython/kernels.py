"""Real Jupyter kernels (this interpreter) for the tests: started with a shutdown log, always stopped."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nbmodels.ipython.kernels import kernel_manager

TIMEOUT = 120


@dataclass
class Kernel:
    manager: Any
    client: Any
    log: Path

    def run(self, code: str) -> str:
        """Execute ``code`` and wait; fail on an error; return what it printed."""
        printed: list[str] = []

        def collect(msg: dict[str, Any]) -> None:
            if msg["msg_type"] == "stream":
                printed.append(msg["content"]["text"])
            elif msg["msg_type"] == "error":
                printed.append("\n".join(msg["content"]["traceback"]))

        reply = self.client.execute_interactive(code, timeout=TIMEOUT, output_hook=collect)
        assert reply["content"]["status"] == "ok", "".join(printed)
        return "".join(printed)

    def start_busy(self, code: str) -> None:
        """Send ``code`` and return once the kernel has started running it."""
        msg_id = self.client.execute(code)
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            msg = self.client.get_iopub_msg(timeout=TIMEOUT)
            if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "execute_input":
                time.sleep(0.3)  # into the sleep itself
                return
        raise TimeoutError("the kernel never started the cell")

    @property
    def pid(self) -> int:
        return int(self.manager.provisioner.pid)

    def records(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]


@contextmanager
def kernel(tmp_path: Path, **env: str) -> Iterator[Kernel]:
    """A kernel with ``NBMODELS_SHUTDOWN_LOG`` in its environment; shut down (SIGKILL) in any case."""
    log = tmp_path / "shutdown.jsonl"
    output = (tmp_path / "kernel-output.txt").open("w")
    manager = kernel_manager()
    manager.start_kernel(env={**os.environ, "NBMODELS_SHUTDOWN_LOG": str(log), **env}, stdout=output, stderr=output)
    client = manager.client()
    try:
        client.start_channels()
        client.wait_for_ready(timeout=TIMEOUT)
        yield Kernel(manager, client, log)
    finally:
        client.stop_channels()
        if manager.has_kernel:
            manager.shutdown_kernel(now=True)
        output.close()
