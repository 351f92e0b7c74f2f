"""A model in a real worker process: same results as in the kernel, errors that read the same, a clean stop."""

from __future__ import annotations

import gc
import os
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import psutil
import pytest
import torch

from nbmodels.core import demo, memory, runners
from nbmodels.core.runners import RemoteAttribute, RemoteModel
from nbmodels.core.runners.protocol import RemoteTraceback
from nbmodels.errors import (
    InvalidArgumentError,
    ModelLoadError,
    RemoteError,
    SourceError,
    TransferError,
    WorkerDiedError,
)
from tests.core.runners.conftest import PROBE, wait_gone, worker_children
from tests.core.runners.models import probe

pytestmark = pytest.mark.slow


def test_results_equal_the_in_process_models() -> None:
    tokens = torch.randint(0, 1000, (2, 16))
    x = torch.linspace(-1, 1, 5 * 64).reshape(5, 64)
    mlp = runners.start("process", "mlp", "demo:mlp", kwargs={"hidden": 48, "seed": 3}, spare=False)
    lm = runners.start("process", "lm", "demo:transformer", kwargs={"d_model": 32}, spare=False)
    try:
        local_mlp, local_lm = demo.mlp(hidden=48, seed=3), demo.transformer(d_model=32)
        assert torch.equal(mlp(x), local_mlp(x))
        assert torch.equal(lm(tokens), local_lm(tokens))
        assert torch.equal(mlp.call("forward", x), local_mlp.forward(x))
        # Measured in the worker, the same as in the kernel: bytes per device, parameters, dtypes.
        assert mlp.footprint == memory.footprint(local_mlp)
        assert lm.footprint == memory.footprint(local_lm)
        assert (mlp.class_name, lm.class_name) == ("Sequential", "DemoTransformer")
        assert mlp.runner == "process" and mlp.node is None and mlp.pid not in (None, os.getpid())
        assert mlp.load_seconds > 0 and mlp.start_seconds >= mlp.load_seconds
    finally:
        mlp.stop()
        lm.stop()


def test_attributes_come_by_value_and_methods_stay_remote(shared_probe: RemoteModel) -> None:
    local = probe()
    assert shared_probe.label == "probe"
    assert shared_probe.training is True
    assert torch.equal(shared_probe.linear.weight, local.linear.weight)
    assert isinstance(shared_probe.linear, RemoteAttribute)  # a submodule is callable: it stays in the worker
    x = torch.ones(3, 8)
    assert torch.equal(shared_probe.linear(x), local.linear(x))
    assert shared_probe.scaled(x, factor=2.5).sum().item() == pytest.approx(60.0)
    assert shared_probe.attribute("linear.out_features") == 8
    # A call that returns the model itself returns the proxy, never a copy of the model.
    assert shared_probe.eval() is shared_probe and shared_probe.training is False
    assert isinstance(shared_probe.linear.train(), RemoteAttribute)
    shared_probe.train()
    assert shared_probe.echo({"a": [1, 2.5, "x"], "b": None}) == {"a": [1, 2.5, "x"], "b": None}
    with pytest.raises(AttributeError, match="no_such_thing"):
        shared_probe.no_such_thing  # noqa: B018


def test_tensors_cross_inline_and_through_shared_memory(shared_probe: RemoteModel) -> None:
    small = torch.arange(12, dtype=torch.bfloat16).reshape(3, 4)
    big = torch.randn(1024, 512)  # 2 MiB: through shared memory
    for tensor in (small, big, torch.tensor(True), torch.randn(4, 6).t()):
        back = shared_probe.echo(tensor)
        assert back.dtype == tensor.dtype and torch.equal(back, tensor)
    graph_output = shared_probe(torch.ones(2, 8))  # the output of autograd in the worker arrives detached
    assert not graph_output.requires_grad


def test_an_ordinary_exception_reads_like_the_in_process_one_and_keeps_the_worker(shared_probe: RemoteModel) -> None:
    pid = shared_probe.pid
    with pytest.raises(RuntimeError) as remote:
        shared_probe(torch.ones(3, 5))
    with pytest.raises(RuntimeError) as local:
        probe()(torch.ones(3, 5))
    assert type(remote.value) is type(local.value) and str(remote.value) == str(local.value)
    assert isinstance(remote.value.__cause__, RemoteTraceback)
    assert "in forward" in remote.value.__cause__.text and "mat1 and mat2" in remote.value.__cause__.text
    with pytest.raises(ValueError, match="failed on purpose"):
        shared_probe.fail()
    with pytest.raises(RemoteError, match="CustomError: custom failure 3") as custom:
        shared_probe.fail_custom()
    assert custom.value.remote_type == "tests.core.runners.models.CustomError"
    assert shared_probe.alive and shared_probe.call("pid") == pid


def test_what_cannot_cross_names_the_method_and_the_type(shared_probe: RemoteModel) -> None:
    with pytest.raises(TransferError, match=r"parameters\(\) of model 'probe' returned a generator"):
        shared_probe.parameters()
    with pytest.raises(TransferError, match=r"lock\(\) of model 'probe' returned .*lock"):
        shared_probe.lock()
    with pytest.raises(TransferError, match=r"cannot send argument 0 \(function\) of echo\(\)"):
        shared_probe.echo(lambda: 1)
    with pytest.raises(TransferError, match=r"keyword argument 'factor'"):
        shared_probe.scaled(torch.ones(1), factor=(i for i in range(2)))
    assert shared_probe.call("pid") == shared_probe.pid  # none of it hurt the worker


def test_calls_from_several_threads_get_their_own_results(shared_probe: RemoteModel) -> None:
    local = probe()
    inputs = [torch.full((2, 8), float(i)) for i in range(64)]

    def run(x: torch.Tensor) -> bool:
        return torch.equal(shared_probe(x), local(x))

    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(run, inputs))


def test_memory_is_answered_during_a_long_call(shared_probe: RemoteModel) -> None:
    with ThreadPoolExecutor(1) as pool:
        busy = pool.submit(shared_probe.slow, 3.0)
        time.sleep(0.3)
        started = time.perf_counter()
        reading = shared_probe.memory()
        waited = time.perf_counter() - started
        assert not busy.done()
        assert busy.result() >= 3.0
    assert waited < 1.5
    assert reading.pid == shared_probe.pid and reading.rss and reading.private and reading.rss >= reading.private


def test_output_of_the_worker_reaches_the_kernel(shared_probe: RemoteModel, capsys: pytest.CaptureFixture[str]) -> None:
    shared_probe.say("hello from the worker")
    deadline = time.monotonic() + 5
    seen = ""
    while "hello from the worker" not in seen and time.monotonic() < deadline:
        time.sleep(0.02)
        seen += capsys.readouterr().out
    assert "hello from the worker" in seen


def test_stop_ends_the_process_and_reports_what_came_back() -> None:
    remote = runners.start("process", "big", "demo:mlp", kwargs={"size_mb": 64}, spare=False)
    pid = remote.pid
    assert pid is not None and psutil.pid_exists(pid)
    result = remote.stop()
    assert result.ended == "stopped" and result.gone and result.how == "was stopped"
    assert not psutil.pid_exists(pid) or wait_gone(pid, 0.1)
    assert result.before is not None and result.before.private is not None
    assert result.before.private > 64 * 1024 * 1024  # the model's weights were in the worker's private memory
    assert result.freed_bytes["cpu"] == result.before.private
    assert result.seconds < 2.0
    assert "gone" in str(result)
    with pytest.raises(WorkerDiedError, match="was stopped"):
        remote(torch.ones(1, 64))
    assert not remote.alive and remote.exit_info is not None and remote.exit_info.requested
    again = remote.stop()  # stopping twice is harmless
    assert again.ended == "dead" and again.gone


def test_a_worker_that_ignores_the_polite_stop_is_killed_in_time(fresh_probe: RemoteModel) -> None:
    with ThreadPoolExecutor(1) as pool:
        busy = pool.submit(fresh_probe.slow, 30.0)
        time.sleep(0.3)
        result = fresh_probe.stop(timeout=0.5)
        assert result.ended == "killed" and result.gone and result.signal == "SIGKILL"
        assert result.seconds < 2.0
        with pytest.raises(WorkerDiedError):
            busy.result(timeout=5)


@pytest.mark.parametrize(
    ("method", "expected", "exit_code", "signal_name"),
    [
        ("exit", "exited with code 3", 3, None),
        ("kill_self", "killed by SIGKILL", None, "SIGKILL"),
        ("segfault", "killed by SIGSEGV", None, "SIGSEGV"),
    ],
)
def test_a_crash_stays_in_the_worker(
    method: str, expected: str, exit_code: int | None, signal_name: str | None
) -> None:
    remote = runners.start("process", "crashy", PROBE, spare=False)
    exits: list[runners.ExitInfo] = []
    remote.add_exit_callback(exits.append)
    with pytest.raises(WorkerDiedError, match=expected) as died:
        remote.call(method, 3) if method == "exit" else remote.call(method)
    error = died.value
    assert error.name == "crashy" and error.pid == remote.pid
    assert (error.exit_code, error.signal) == (exit_code, signal_name)
    assert "the kernel is fine" in str(error)
    if method == "segfault":  # faulthandler's stack, quoted from the worker's stderr
        assert "Fatal Python error: Segmentation fault" in str(error) and "segfault" in str(error)
    assert not remote.alive and len(exits) == 1 and not exits[0].requested
    with pytest.raises(WorkerDiedError):
        remote(torch.ones(1, 8))
    assert remote.stop().ended == "dead"
    fresh = runners.start("process", "crashy", PROBE, spare=False)  # the same load works again
    assert torch.equal(fresh(torch.ones(1, 8)), probe()(torch.ones(1, 8)))
    fresh.stop()


def test_sigkill_from_outside_with_no_call_in_flight_is_noticed_at_once(fresh_probe: RemoteModel) -> None:
    ended = threading.Event()
    fresh_probe.add_exit_callback(lambda info: ended.set())
    assert fresh_probe.pid is not None
    os.kill(fresh_probe.pid, 9)
    assert ended.wait(10)
    assert fresh_probe.exit_info is not None and fresh_probe.exit_info.signal == "SIGKILL"
    with pytest.raises(WorkerDiedError, match="SIGKILL"):
        fresh_probe(torch.ones(1, 8))


def test_sigkill_during_a_call_fails_the_waiting_caller(fresh_probe: RemoteModel) -> None:
    assert fresh_probe.pid is not None
    threading.Timer(0.5, os.kill, (fresh_probe.pid, 9)).start()
    with pytest.raises(WorkerDiedError, match="SIGKILL"):
        fresh_probe.slow(30.0)


def test_an_error_that_poisons_the_process_ends_the_worker(fresh_probe: RemoteModel) -> None:
    with pytest.raises(WorkerDiedError, match="poisons its process") as died:
        fresh_probe.cuda_error()
    assert isinstance(died.value.__cause__, RuntimeError)
    assert "device-side assert" in str(died.value.__cause__) and "device-side assert" in str(died.value)
    assert not fresh_probe.alive and fresh_probe.exit_info is not None and fresh_probe.exit_info.exit_code == 70


def test_a_cuda_error_met_while_sending_the_result_also_ends_the_worker(fresh_probe: RemoteModel) -> None:
    with pytest.raises(WorkerDiedError, match="illegal memory access"):
        fresh_probe.poisoned_result()
    assert not fresh_probe.alive


def test_a_keyboard_interrupt_while_waiting_interrupts_the_call_in_the_worker(fresh_probe: RemoteModel) -> None:
    # A real SIGINT, as Ctrl-C or Jupyter's interrupt sends it (the worker, in its own session, gets none).
    # Python's own handler, as a kernel has one: a test run started in the background inherits SIGINT ignored.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()
    started = time.perf_counter()
    try:
        with pytest.raises(KeyboardInterrupt):
            fresh_probe.slow(30.0)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert fresh_probe.call("pid") == fresh_probe.pid  # answered now: the slow call was interrupted, not finished
    assert time.perf_counter() - started < 10


def test_a_worker_started_with_sigint_ignored_still_takes_the_kernels_interrupt() -> None:
    # A kernel started in the background (or under nohup) has SIGINT ignored, and its workers inherit that.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        remote = runners.start("process", "ignoring", PROBE, spare=False)
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)  # the kernel's own handler, as ipykernel has one
    try:
        threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()
        started = time.perf_counter()
        with pytest.raises(KeyboardInterrupt):
            remote.slow(30.0)
        assert remote.call("pid") == remote.pid
        assert time.perf_counter() - started < 10  # interrupted in the worker, not waited out
    finally:
        signal.signal(signal.SIGINT, previous)
        remote.stop()


def test_several_workers_start_at_once() -> None:
    with ThreadPoolExecutor(3) as pool:
        models = list(pool.map(lambda i: runners.start("process", f"m{i}", PROBE, spare=False), range(3)))
    try:
        assert len({m.pid for m in models}) == 3
        assert all(torch.equal(m(torch.ones(1, 8)), probe()(torch.ones(1, 8))) for m in models)
    finally:
        for m in models:
            m.stop()


def test_a_worker_started_from_a_thread_outlives_that_thread() -> None:
    # Linux's parent-death signal fires when the starting *thread* ends: the launcher thread prevents that.
    started: list[RemoteModel] = []
    thread = threading.Thread(target=lambda: started.append(runners.start("process", "t", PROBE, spare=False)))
    thread.start()
    thread.join()
    remote = started.pop()
    time.sleep(0.3)
    assert remote.alive and remote.call("pid") == remote.pid
    remote.stop()


def test_the_worker_ends_itself_when_the_kernels_end_of_its_socket_closes() -> None:
    # The watchdog for systems without a parent-death signal: the kernel's death closes its socket.
    from nbmodels.core.runners.process import WorkerProcess

    worker = WorkerProcess.spawn()
    pid = worker.pid
    assert pid is not None
    # What the kernel's death does to the socket (every descriptor of it closed): the worker reads EOF.
    # (A close() here would not do: the reader thread blocked in recv() keeps the socket open.)
    with socket.socket(fileno=os.dup(worker._conn.fileno())) as ours:
        ours.shutdown(socket.SHUT_RDWR)
    assert wait_gone(pid)
    assert worker._process.wait(5) == 75


def test_a_dropped_proxy_leaves_no_worker_behind() -> None:
    remote = runners.start("process", "dropped", PROBE, spare=False)
    pid = remote.pid
    assert pid is not None
    del remote
    gc.collect()
    assert wait_gone(pid)


def test_load_errors_read_like_the_kernels_and_leave_no_worker() -> None:
    before = {p.pid for p in worker_children()}
    with pytest.raises(SourceError, match="no module named 'no_such_pkg'"):
        runners.start("process", "x", "no_such_pkg.models:make")  # fails before any process starts
    with pytest.raises(InvalidArgumentError, match="size_mb > 0"):
        runners.start("process", "x", "demo:mlp", kwargs={"size_mb": -1}, spare=False)
    with pytest.raises(ModelLoadError, match="ValueError: the factory failed on purpose") as failed:
        runners.start("process", "x", "tests.core.runners.models:failing_factory", spare=False)
    assert isinstance(failed.value.__cause__, ValueError)
    with pytest.raises(WorkerDiedError, match="exited with code 9"):
        runners.start("process", "x", "tests.core.runners.models:crashing_factory", spare=False)
    with pytest.raises(InvalidArgumentError, match="unknown runner"):
        runners.start("thread", "x", "demo:mlp")
    time.sleep(0.2)
    assert {p.pid for p in worker_children()} <= before


def test_sources_a_worker_cannot_rebuild_are_refused_before_anything_starts() -> None:
    before = len(worker_children())

    def local_factory() -> torch.nn.Module:
        return torch.nn.Linear(2, 2)

    with pytest.raises(SourceError, match=r"lambda.*'package\.module:factory'.*a file or a folder"):
        runners.start("process", "x", lambda: torch.nn.Linear(2, 2))
    with pytest.raises(SourceError, match="local function"):
        runners.start("process", "x", local_factory)
    with pytest.raises(TransferError, match="keyword argument"):
        runners.start("process", "x", "demo:mlp", kwargs={"hidden": (i for i in range(3))})
    assert len(worker_children()) == before
    # An importable callable is fine: it is sent by name.
    remote = runners.start("process", "ok", probe, kwargs={"width": 4}, spare=False)
    assert remote.attribute("linear.in_features") == 4
    remote.stop()
