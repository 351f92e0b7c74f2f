"""Reliability as counts over repeated real trials: how often the promise held, not how fast.

- The kernel shutdown hook, on real kernels (jupyter_client): for each way a kernel
  stops, every trial must leave exactly one JSON line for that process, with the right
  reason and both models released. ``shutdown_kernel(now=True)`` (SIGKILL) is measured
  too, without a target: it cannot be hooked, so it must leave no line at all.
- Single-flight loads: 16 threads load one name at once; the loader must run once and
  every thread must get the same object.
- Release: ``cleanup()`` of three models nothing else holds must report them all
  released, none still alive, and weak references to all three must be dead.

Each figure counts the trials that came out right ("5 of 5", the target all of them); the
note gives the first failure.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import Figure, pick
from nbmodels.core import ModelManager, demo

TIMEOUT = 120  # seconds: bounds every wait on a kernel or a thread; never a figure
LOAD_TWO = "%load_ext nbmodels\n%load_model a demo:mlp\n%load_model b demo:transformer"
SLEEPING_CELL = "import time\ntime.sleep(60)"
THREADS = 16


# --- the kernel shutdown hook -------------------------------------------------------

Trigger = Callable[[Any, Any], str | None]  # (kernel manager, client) -> a problem, or None


def _start_busy(client: Any, code: str) -> None:
    """Send ``code`` and return once the kernel runs it (its ``execute_input`` came back)."""
    msg_id = client.execute(code)
    deadline = time.monotonic() + TIMEOUT
    while (left := deadline - time.monotonic()) > 0:
        try:
            msg = client.get_iopub_msg(timeout=left)
        except queue.Empty:
            break
        if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "execute_input":
            time.sleep(0.3)  # into the sleep itself
            return
    raise TimeoutError(f"the kernel never started the cell within {TIMEOUT} s")


def _shutdown(manager: Any, client: Any) -> str | None:
    manager.shutdown_kernel(now=False)
    return None


def _restart(manager: Any, client: Any) -> str | None:
    manager.restart_kernel(now=False)
    return None


def _restart_while_sleeping(manager: Any, client: Any) -> str | None:
    _start_busy(client, SLEEPING_CELL)
    manager.restart_kernel(now=False)
    return None


def _sigterm(manager: Any, client: Any) -> str | None:
    process = manager.provisioner.process
    os.kill(process.pid, signal.SIGTERM)
    code = process.wait(timeout=TIMEOUT)
    return None if code == -signal.SIGTERM else f"the kernel exited with {code}, not by SIGTERM"


def _sigkill(manager: Any, client: Any) -> str | None:
    manager.shutdown_kernel(now=True)
    return None


@dataclass(frozen=True)
class Case:
    name: str
    trigger: Trigger
    reason: str | None  # the reason the record must give; None: no record can be written


CASES = (
    Case("shutdown_kernel(now=False)", _shutdown, "shutdown"),
    Case("restart_kernel(now=False)", _restart, "restart"),
    Case("restart while a cell runs time.sleep(60)", _restart_while_sleeping, "restart"),
    Case("SIGTERM to the kernel process", _sigterm, "sigterm"),
    Case("shutdown_kernel(now=True) (SIGKILL)", _sigkill, None),
)


@dataclass
class Trial:
    problem: str | None = None  # why the trial was not right (or could not run)
    lines: int = 0  # lines in the shutdown log


def _records(log: Path) -> list[dict[str, Any]]:
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def _check(records: list[dict[str, Any]], pid: int, reason: str) -> str | None:
    mine = [record for record in records if record.get("pid") == pid]
    if len(records) != 1 or len(mine) != 1:
        return f"{len(records)} lines, {len(mine)} from the kernel's pid"
    record = mine[0]
    if record.get("reason") != reason:
        return f"reason {record.get('reason')!r}, not {reason!r}"
    if sorted(record.get("released", [])) != ["a", "b"]:
        return f"released {record.get('released')}, not a and b"
    if record.get("still_alive") or record.get("errors") or record.get("timed_out"):
        fields = ("still_alive", "errors", "timed_out")
        return "not clean: " + ", ".join(f"{key}={record.get(key)}" for key in fields)
    return None


def kernel_trial(case: Case, folder: Path) -> Trial:
    """One kernel with a fresh shutdown log: load two models, stop it the way ``case`` says, read the log."""
    from nbmodels.ipython.kernels import kernel_manager

    log = folder / "shutdown.jsonl"
    manager = kernel_manager()
    manager.start_kernel(
        env={**os.environ, "NBMODELS_SHUTDOWN_LOG": str(log)}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    client: Any = None
    try:
        pid = int(manager.provisioner.pid)
        client = manager.client()
        client.start_channels()
        client.wait_for_ready(timeout=TIMEOUT)
        reply = client.execute_interactive(LOAD_TWO, timeout=TIMEOUT, output_hook=lambda msg: None)
        if reply["content"]["status"] != "ok":
            return Trial(f"loading the models failed: {reply['content'].get('evalue', reply['content'])}")
        problem = case.trigger(manager, client)
    except Exception as exc:
        return Trial(f"{type(exc).__name__}: {exc}")
    finally:
        if client is not None:
            client.stop_channels()
        if manager.has_kernel:  # after a restart this is the new kernel; the old one is gone
            manager.shutdown_kernel(now=True)
    records = _records(log)
    if problem is None and case.reason is not None:
        problem = _check(records, pid, case.reason)
    return Trial(problem, len(records))


def _first_failure(problems: list[str | None]) -> str:
    """The note's tail: the first thing that went wrong, if anything did."""
    failed = [problem for problem in problems if problem is not None]
    return f"; first failure: {failed[0]}" if failed else ""


def kernel_figures() -> list[Figure]:
    """Every case ``runs`` times, the cases taking turns so that a slow spell of the machine hits all alike."""
    runs = pick(5, 1)
    trials: dict[str, list[Trial]] = {case.name: [] for case in CASES}
    with tempfile.TemporaryDirectory(prefix="nbmodels-bench-") as tmp:
        for i in range(runs):
            for j, case in enumerate(CASES):
                folder = Path(tmp) / f"{i}-{j}"
                folder.mkdir()
                trial = kernel_trial(case, folder)
                if trial.problem is not None:
                    print(f"  reliability: {case.name}, trial {i + 1}: {trial.problem}", file=sys.stderr, flush=True)
                trials[case.name].append(trial)
    figures = []
    for case in CASES:
        done = trials[case.name]
        failure = _first_failure([t.problem for t in done])
        if case.reason is not None:
            right = sum(t.problem is None for t in done)
            figures.append(
                Figure(
                    f"shutdown hook record correct: {case.name}",
                    right,
                    f"of {runs}",
                    runs,
                    ">=",
                    f"{right}/{runs} kernels right (one line, reason {case.reason!r}, a and b released){failure}",
                )
            )
        else:
            ran = [t for t in done if t.problem is None]
            written = sum(t.lines > 0 for t in ran)
            expected = "as expected: SIGKILL cannot be hooked" if written == 0 else "UNEXPECTED"
            figures.append(
                Figure(
                    f"shutdown hook record written: {case.name}",
                    written if ran else float("nan"),
                    f"of {len(ran)}",
                    note=f"{written}/{len(ran)} lines written, {expected}{failure}",
                )
            )
    return figures


# --- single-flight loads ----------------------------------------------------------


@dataclass
class Round:
    problem: str | None
    contended: int = 0  # threads that called load() before the loader returned


def single_flight_round() -> Round:
    """``THREADS`` threads released by one barrier load one name on a fresh manager."""
    mgr = ModelManager()
    lock = threading.Lock()
    calls = 0
    loader_done = float("inf")

    def loader() -> Any:
        nonlocal calls, loader_done
        with lock:
            calls += 1
        model = demo.mlp(size_mb=4)  # real work, long enough that the others arrive while it runs
        loader_done = time.perf_counter()
        return model

    barrier = threading.Barrier(THREADS)
    results: list[Any] = [None] * THREADS
    called = [float("inf")] * THREADS
    errors: list[str] = []

    def worker(i: int) -> None:
        try:
            barrier.wait(timeout=TIMEOUT)
            called[i] = time.perf_counter()
            results[i] = mgr.load("shared", loader)
        except BaseException as exc:  # counted as a failed round, never a noisy dead thread
            errors.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
    contended = sum(t < loader_done for t in called)
    if any(thread.is_alive() for thread in threads):
        problem: str | None = f"a thread was still in load() after {TIMEOUT} s"
    elif errors:
        problem = errors[0]
    elif calls != 1:
        problem = f"the loader ran {calls} times"
    elif results[0] is None or any(result is not results[0] for result in results):
        problem = f"{len({id(r) for r in results})} different objects came back"
    else:
        problem = None
    results.clear()  # the manager's cleanup below must not find them held here
    mgr.cleanup()
    return Round(problem, contended)


def single_flight_figure() -> Figure:
    rounds = pick(50, 5)
    done = [single_flight_round() for _ in range(rounds)]
    right = sum(r.problem is None for r in done)
    contended = sorted(r.contended for r in done)
    return Figure(
        f"single-flight: {THREADS} threads load one name, one loader call, one object",
        right,
        f"of {rounds}",
        rounds,
        ">=",
        f"{right}/{rounds} rounds; median {contended[len(contended) // 2]}/{THREADS} threads called load() "
        "while the loader ran" + _first_failure([r.problem for r in done]),
    )


# --- release verified -------------------------------------------------------------


def release_round(seed: int) -> tuple[str | None, bool]:
    """Load three models nothing else holds, clean up; return (problem or None, whether a gc pass ran)."""
    mgr = ModelManager()
    refs = [
        weakref.ref(mgr.load("a", "demo:mlp", seed=seed)),
        weakref.ref(mgr.load("b", "demo:mlp", size_mb=1, seed=seed)),
        weakref.ref(mgr.load("c", "demo:transformer", seed=seed)),
    ]
    report = mgr.cleanup()
    if sorted(report.released) != ["a", "b", "c"]:
        return f"released {report.released}", report.gc_collected
    if report.still_alive or report.errors:
        return f"still alive {[s.name for s in report.still_alive]}, errors {report.errors}", report.gc_collected
    alive = sum(ref() is not None for ref in refs)
    if alive:
        return f"{alive} weak reference(s) still alive after a clean report", report.gc_collected
    return None, report.gc_collected


def release_figure() -> Figure:
    rounds = pick(20, 3)
    done = [release_round(seed) for seed in range(rounds)]
    right = sum(problem is None for problem, _ in done)
    gc_passes = sum(gc_ran for _, gc_ran in done)
    return Figure(
        "cleanup() of 3 models: all released, none alive, weakrefs dead",
        right,
        f"of {rounds}",
        rounds,
        ">=",
        f"{right}/{rounds} rounds; gc pass needed in {gc_passes}/{rounds}"
        + _first_failure([problem for problem, _ in done]),
    )


def run() -> list[Figure]:
    return [*kernel_figures(), single_flight_figure(), release_figure()]


if __name__ == "__main__":
    for figure in run():
        print(f"{figure.name}: {figure.value:g} {figure.unit}  {figure.note}")
