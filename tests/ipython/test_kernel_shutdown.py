"""The shutdown hook on real kernels (jupyter_client): one JSON line per kernel, with the right reason.

jupyter_client's graceful stop: interrupt, then a shutdown request (``do_shutdown`` on the Control
thread), then ``atexit`` on the main thread; SIGTERM after 2.5 s, SIGKILL at 5 s.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests.ipython.kernels import TIMEOUT, Kernel, kernel

pytestmark = pytest.mark.slow

STUBBORN = "import time\nwhile True:\n    try:\n        time.sleep(60)\n    except KeyboardInterrupt:\n        pass"
LOAD_TWO = "%load_ext nbmodels\n%load_model a demo:mlp\n%load_model b demo:transformer"


def assert_one_record(k: Kernel, reason: str, released: list[str]) -> None:
    records = k.records()
    assert len(records) == 1, records
    record = records[0]
    assert record["reason"] == reason
    assert sorted(record["released"]) == released
    assert record["freed_bytes"].get("cpu", 0) > 0
    assert not record["timed_out"] and not record["still_alive"]


def test_shutdown_request(tmp_path: Path) -> None:
    with kernel(tmp_path) as k:
        k.run(LOAD_TWO)
        pid = k.pid
        k.manager.shutdown_kernel(now=False)
        assert_one_record(k, "shutdown", ["a", "b"])
        assert k.records()[0]["pid"] == pid


def test_restart_request(tmp_path: Path) -> None:
    with kernel(tmp_path) as k:
        k.run(LOAD_TWO)
        k.manager.restart_kernel(now=False)
        k.client.wait_for_ready(timeout=TIMEOUT)
        assert_one_record(k, "restart", ["a", "b"])
        assert k.run("import sys; print('nbmodels' in sys.modules)").strip() == "False"  # a fresh process


def test_restart_while_a_cell_sleeps(tmp_path: Path) -> None:
    with kernel(tmp_path) as k:
        k.run(LOAD_TWO)
        k.start_busy("import time\ntime.sleep(60)")
        k.manager.restart_kernel(now=False)
        assert_one_record(k, "restart", ["a", "b"])


def test_restart_while_a_cell_ignores_the_interrupt(tmp_path: Path) -> None:
    """The cell swallows KeyboardInterrupt, so the kernel only ends on SIGTERM: the record still says restart."""
    with kernel(tmp_path) as k:
        k.run(LOAD_TWO)
        k.start_busy(
            "import time\nwhile True:\n    try:\n        time.sleep(60)\n    except KeyboardInterrupt:\n        pass"
        )
        k.manager.restart_kernel(now=False)
        assert_one_record(k, "restart", ["a", "b"])


def test_sigterm_to_the_kernel_process(tmp_path: Path) -> None:
    with kernel(tmp_path) as k:
        k.run(LOAD_TWO)
        process = k.manager.provisioner.process
        os.kill(process.pid, signal.SIGTERM)
        assert process.wait(timeout=TIMEOUT) == -signal.SIGTERM  # SIGTERM still ends the kernel
        assert_one_record(k, "sigterm", ["a", "b"])


def test_unload_ext_removes_every_hook_and_load_again_records_once(tmp_path: Path) -> None:
    with kernel(tmp_path) as k:
        out = k.run(
            "%load_ext nbmodels\n%unload_ext nbmodels\n"
            "import signal\nk = get_ipython().kernel\n"
            "print('wrapper gone:', 'do_shutdown' not in vars(k))\n"
            "print('sigterm default:', signal.getsignal(signal.SIGTERM) == signal.SIG_DFL)\n"
        )
        assert "wrapper gone: True" in out and "sigterm default: True" in out
        k.run(LOAD_TWO)
        k.manager.shutdown_kernel(now=False)
        assert_one_record(k, "shutdown", ["a", "b"])
