"""The shutdown hook: once per process, what it records, its time bound, and exit/SIGTERM in real processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest

from nbmodels import ModelManager
from nbmodels.ipython.shutdown import HookSettings, ShutdownHook

FIELDS = {"reason", "released", "freed_bytes", "seconds", "pid", "still_alive", "errors", "pending", "timed_out"}


def read_log(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_runs_once_and_appends_one_json_line(tmp_path: Path) -> None:
    log = tmp_path / "shutdown.jsonl"
    manager = ModelManager()
    manager.load("a", "demo:mlp")
    manager.load("b", "demo:transformer")
    hook = ShutdownHook(lambda: HookSettings(log_path=str(log)), manager=lambda: manager)
    record = hook.run("restart")
    assert hook.run("exit") is None and hook.run("sigterm") is None  # later hooks find it done
    records = read_log(log)
    assert records == [record]
    assert record is not None and set(record) >= FIELDS
    assert record["reason"] == "restart" and sorted(record["released"]) == ["a", "b"]
    assert record["freed_bytes"]["cpu"] > 0 and record["pid"] == os.getpid()
    assert not record["still_alive"] and not record["timed_out"] and len(manager) == 0


def test_a_second_process_appends_rather_than_overwrites(tmp_path: Path) -> None:
    log = tmp_path / "shutdown.jsonl"
    for reason in ("shutdown", "restart"):
        ShutdownHook(lambda: HookSettings(log_path=str(log)), manager=ModelManager).run(reason)
    assert [r["reason"] for r in read_log(log)] == ["shutdown", "restart"]


def test_disabled_it_releases_and_writes_nothing(tmp_path: Path) -> None:
    log = tmp_path / "shutdown.jsonl"
    manager = ModelManager()
    manager.load("a", "demo:mlp")
    hook = ShutdownHook(lambda: HookSettings(enabled=False, log_path=str(log)), manager=lambda: manager)
    assert hook.run("shutdown") is None
    assert not log.exists() and "a" in manager


def test_a_stuck_release_is_abandoned_after_the_timeout(tmp_path: Path) -> None:
    log = tmp_path / "shutdown.jsonl"
    manager = ModelManager()
    gate = threading.Event()
    manager.load("slow", "demo:mlp", on_release=lambda model: gate.wait(10))
    hook = ShutdownHook(lambda: HookSettings(log_path=str(log), timeout=0.1), manager=lambda: manager)
    try:
        record = hook.run("shutdown")
    finally:
        gate.set()  # let the abandoned worker finish
    assert record is not None and record["timed_out"] and record["released"] == []
    assert read_log(log) == [record]


def run_python(tmp_path: Path, body: str) -> tuple[list[dict[str, Any]], subprocess.CompletedProcess[str]]:
    """Run ``body`` after loading the extension in a fresh IPython process with a shutdown log."""
    log = tmp_path / "shutdown.jsonl"
    code = "from IPython.core.interactiveshell import InteractiveShell\nip = InteractiveShell.instance()\n"
    code += textwrap.dedent(body)
    env = {**os.environ, "NBMODELS_SHUTDOWN_LOG": str(log)}
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=_signals_as_a_terminal_leaves_them,
    )
    return read_log(log), done


def _signals_as_a_terminal_leaves_them() -> None:
    """SIGHUP and SIGINT at their defaults: a test run under nohup or in the background inherits them ignored."""
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.slow
def test_a_normal_exit_releases_ten_models(tmp_path: Path) -> None:
    records, done = run_python(
        tmp_path,
        """
        ip.run_line_magic("load_ext", "nbmodels")
        for i in range(10):
            ip.run_line_magic("load_model", f"m{i} demo:mlp")
        """,
    )
    assert done.returncode == 0, done.stderr
    assert len(records) == 1
    assert records[0]["reason"] == "exit" and records[0]["released"] == [f"m{i}" for i in range(10)]


@pytest.mark.slow
def test_sigterm_releases_then_ends_the_process_as_sigterm_did(tmp_path: Path) -> None:
    records, done = run_python(
        tmp_path,
        """
        import os, signal, time
        ip.run_line_magic("load_ext", "nbmodels")
        ip.run_line_magic("load_model", "a demo:mlp")
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)
        print("survived SIGTERM")
        """,
    )
    assert done.returncode == -signal.SIGTERM and "survived" not in done.stdout
    assert len(records) == 1 and records[0]["reason"] == "sigterm" and records[0]["released"] == ["a"]


@pytest.mark.slow
def test_sigterm_calls_the_handler_that_was_there_before(tmp_path: Path) -> None:
    records, done = run_python(
        tmp_path,
        """
        import os, signal, sys, time
        def previous(signum, frame):
            print("previous handler ran", flush=True)
            sys.exit(7)
        signal.signal(signal.SIGTERM, previous)
        ip.run_line_magic("load_ext", "nbmodels")
        ip.run_line_magic("load_model", "a demo:mlp")
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)
        """,
    )
    assert done.returncode == 7 and "previous handler ran" in done.stdout
    # the SystemExit then runs atexit, which finds the release done: still one record
    assert len(records) == 1 and records[0]["reason"] == "sigterm" and records[0]["released"] == ["a"]


@pytest.mark.slow
def test_sighup_releases_and_records_as_sigterm_does(tmp_path: Path) -> None:
    records, done = run_python(
        tmp_path,
        """
        import os, signal, time
        ip.run_line_magic("load_ext", "nbmodels")
        ip.run_line_magic("load_model", "a demo:mlp")
        os.kill(os.getpid(), signal.SIGHUP)
        time.sleep(30)
        print("survived SIGHUP")
        """,
    )
    assert done.returncode == -signal.SIGHUP and "survived" not in done.stdout
    assert len(records) == 1 and records[0]["reason"] == "sighup" and records[0]["released"] == ["a"]


@pytest.mark.slow
def test_an_ignored_sighup_stays_ignored_and_releases_nothing(tmp_path: Path) -> None:
    # Under nohup SIGHUP is ignored: the kernel outlives the terminal, and so must its models.
    records, done = run_python(
        tmp_path,
        """
        import os, signal, time, nbmodels
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        ip.run_line_magic("load_ext", "nbmodels")
        ip.run_line_magic("load_model", "a demo:mlp")
        os.kill(os.getpid(), signal.SIGHUP)
        time.sleep(0.5)
        print("survived SIGHUP with", [info.name for info in nbmodels.get_manager().list()])
        ip.run_line_magic("unload_ext", "nbmodels")
        print("SIGHUP ignored after unload_ext:", signal.getsignal(signal.SIGHUP) == signal.SIG_IGN)
        """,
    )
    assert done.returncode == 0, done.stderr
    assert "survived SIGHUP with ['a']" in done.stdout
    assert "SIGHUP ignored after unload_ext: True" in done.stdout
    assert records == []  # nothing released by the signal (and %unload_ext removed the exit hook)


def test_a_shutdown_log_that_cannot_be_written_is_said_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """A FIFO (or a symlink) where the log should be: no hang, no write through it, one line that says so."""
    fifo = tmp_path / "shutdown.jsonl"
    os.mkfifo(fifo, 0o600)
    manager = ModelManager()
    manager.load("a", "demo:mlp")
    hook = ShutdownHook(lambda: HookSettings(log_path=str(fifo)), lambda: manager)
    record = hook.run("exit")
    assert record is not None and record["released"] == ["a"]  # the release itself happened
    lines = [line for line in capsys.readouterr().err.splitlines() if "shutdown record could not be written" in line]
    assert len(lines) == 1 and str(fifo) in lines[0]
    victim = tmp_path / "victim"
    victim.write_text("precious")
    link = tmp_path / "link.jsonl"
    link.symlink_to(victim)
    manager.load("b", "demo:mlp")
    ShutdownHook(lambda: HookSettings(log_path=str(link)), lambda: manager).run("exit")
    assert victim.read_text() == "precious"
    assert len([line for line in capsys.readouterr().err.splitlines() if "could not be written" in line]) == 1
