"""``nbmodels ps`` and ``nbmodels free`` on real kernels: three open notebooks, two with models."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import psutil
import pytest

from nbmodels.machine import find_kernel, scan
from nbmodels.machine.errors import KernelNotFoundError
from tests.machine.conftest import Machine, loaded, restore

pytestmark = pytest.mark.slow

ROOT_WITHOUT_DAC = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]


def ps_json(machine: Machine) -> dict[int, dict[str, Any]]:
    done = machine.nbmodels("ps", "--json")
    assert done.returncode == 0, done.stderr
    return {k["pid"]: k for k in json.loads(done.stdout)["kernels"]}


def ps_until(machine: Machine, pid: int, wanted: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """The kernel's row once ``wanted`` holds: a cell's end is written by the kernel's writer thread, soon after."""
    deadline = time.monotonic() + 20
    while True:
        row = ps_json(machine)[pid]
        if wanted(row) or time.monotonic() > deadline:
            return row
        time.sleep(0.05)


def model_names(row: dict[str, object]) -> list[str]:
    return sorted(m["name"] for m in row["models"])  # type: ignore[attr-defined,index]


def one_error_line(done: object) -> str:
    """The CLI's answer to bad input: exit 1, nothing on stdout, one line on stderr, no traceback."""
    assert done.returncode == 1, (done.stdout, done.stderr)  # type: ignore[attr-defined]
    assert done.stdout == ""  # type: ignore[attr-defined]
    lines = done.stderr.strip().splitlines()  # type: ignore[attr-defined]
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr  # type: ignore[attr-defined]
    return lines[0]


def test_ps_lists_all_three_kernels_with_their_models_and_notebooks(machine: Machine) -> None:
    rows = ps_json(machine)
    train, evaluation, plain = (rows[k.pid] for k in machine.kernels)
    assert model_names(train) == ["enc", "lm"] and train["nbmodels"] is True
    assert model_names(evaluation) == ["clf"]
    assert plain["nbmodels"] is False and plain["models"] == []
    for row, name in ((train, "train"), (evaluation, "eval"), (plain, "plain")):
        assert row["notebook"] == machine.notebooks[name]
        assert Path(str(row["connection_file"])).parent == machine.runtime
        assert str(row["connection_file"]).endswith(f"kernel-{row['kernel_id']}.json")
        assert isinstance(row["rss"], int) and row["rss"] > 20 * 2**20
    enc = next(m for m in train["models"] if m["name"] == "enc")  # type: ignore[attr-defined,union-attr]
    assert enc["bytes_by_device"]["cpu"] >= 8 * 2**20 and enc["source"] == "demo:mlp"
    assert train["busy"] is False and 0 <= train["idle_seconds"] < 600  # type: ignore[operator]

    table = machine.nbmodels("ps")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["KERNEL", "PID", "NOTEBOOK", "RSS", "GPU", "MODELS", "IDLE"]
    by_pid = {line.split()[1]: line for line in lines[1:] if line and line.split()[1].isdigit()}
    assert "enc 8.0 MiB" in by_pid[str(machine.train.pid)] and "lm " in by_pid[str(machine.train.pid)]
    assert "clf 4.0 MiB" in by_pid[str(machine.eval.pid)]
    assert "(no nbmodels)" in by_pid[str(machine.plain.pid)]
    assert "idle" in by_pid[str(machine.train.pid)]


def test_ps_is_sorted_by_memory(machine: Machine) -> None:
    view = scan()
    ours = [row for row in view.kernels if row.pid in {k.pid for k in machine.kernels}]
    assert len(ours) == 3
    rss = [(row.rss or 0) + row.child_rss for row in view.kernels]  # no GPU here: memory alone decides
    assert rss == sorted(rss, reverse=True)


def test_ps_counts_an_isolated_model_s_worker_with_its_kernel(machine: Machine) -> None:
    """A model in a worker process holds its memory there: the kernel's row says so."""
    before = ps_json(machine)[machine.eval.pid]
    machine.eval.run("%load_model far demo:mlp --kw size_mb=40 seed=2 --isolate")
    try:
        row = ps_json(machine)[machine.eval.pid]
        assert row["child_processes"] == before["child_processes"] + 1  # type: ignore[operator]
        assert row["child_rss"] - before["child_rss"] > 40 * 2**20  # type: ignore[operator]
        assert "far" in model_names(row)
        line = next(line for line in machine.nbmodels("ps").stdout.splitlines() if f" {machine.eval.pid} " in line)
        assert " in 1 child" in line or " in 2 children" in line
    finally:
        machine.eval.run("%unload_model far")
    after = ps_json(machine)[machine.eval.pid]
    assert after["child_processes"] == before["child_processes"]


def test_list_models_all_in_a_notebook_shows_the_same_kernels_and_marks_itself(machine: Machine) -> None:
    out = machine.train.run("table = %list_models --all\nprint(table)\nprint(table._repr_html_()[:40])")
    lines = out.splitlines()
    mine = next(line for line in lines if line.startswith("*"))
    assert str(machine.train.pid) in mine and "enc 8.0 MiB" in mine and "busy" in mine  # this very cell runs
    assert any(str(machine.eval.pid) in line and "clf" in line for line in lines)
    assert any(str(machine.plain.pid) in line and "(no nbmodels)" in line for line in lines)
    assert "* is this kernel" in out
    assert '<div class="nbmodels-machine">' in out


def test_free_releases_one_kernels_models_and_leaves_the_others_alone(machine: Machine) -> None:
    try:
        done = machine.nbmodels("free", "eval")  # the notebook's name, as a user would type it
        assert done.returncode == 0, done.stderr
        assert f"pid {machine.eval.pid}" in done.stdout and "released 1 model(s): clf" in done.stdout
        assert "freed cpu 4.0 MiB" in done.stdout
        assert loaded(machine.eval) == []
        assert loaded(machine.train) == ["enc", "lm"]
        rows = ps_json(machine)
        assert rows[machine.eval.pid]["models"] == [] and rows[machine.eval.pid]["nbmodels"] is True
        assert model_names(rows[machine.train.pid]) == ["enc", "lm"]
        assert rows[machine.plain.pid]["nbmodels"] is False
        again = machine.nbmodels("free", str(machine.eval.pid))  # by pid; nothing left is not an error
        assert again.returncode == 0 and "nothing to release" in again.stdout
    finally:
        restore(machine)


def test_free_by_kernel_id_prefix_and_json_answer(machine: Machine) -> None:
    try:
        kernel_id = ps_json(machine)[machine.eval.pid]["kernel_id"]
        done = machine.nbmodels("free", str(kernel_id)[:8], "--json")
        assert done.returncode == 0, done.stderr
        answer = json.loads(done.stdout)
        assert answer["ok"] is True and answer["pid"] == machine.eval.pid and answer["released"] == ["clf"]
        assert answer["freed_bytes"]["cpu"] >= 4 * 2**20 and answer["still_alive"] == []
    finally:
        restore(machine)


def test_free_while_a_cell_runs_frees_at_once_what_it_can_and_the_rest_when_the_cell_lets_go(
    machine: Machine,
) -> None:
    """The cell uses clf inside a function: the free answers at once, and clf dies when the cell ends."""
    k = machine.eval
    k.run(
        "import nbmodels, torch, time\ndef train(model, seconds):\n    end = time.time() + seconds\n"
        "    x = torch.randn(4, model[0].in_features)\n"
        "    while time.time() < end:\n        model(x)\n        time.sleep(0.01)\n"
    )
    try:
        k.start_busy("train(nbmodels.get_manager().get('clf'), 4)")
        started = time.monotonic()
        done = machine.nbmodels("free", "eval", "--json")
        assert done.returncode == 0, done.stderr
        assert time.monotonic() - started < 3.5  # it did not wait for the cell
        answer = json.loads(done.stdout)
        assert answer["busy"] is True and answer["released"] == ["clf"] and answer["freed_bytes"] == {}
        [alive] = answer["still_alive"]
        assert alive["name"] == "clf" and alive["running_cell"] is True
        assert "running cell still uses it" in alive["text"] and "when the cell lets go" in alive["text"]
        row = ps_json(machine)[k.pid]
        assert row["busy"] is True and row["held"] == ["clf"] and row["models"] == []
        text = machine.nbmodels("ps").stdout
        assert "clf (released, still held)" in text
        k.client.get_shell_msg(timeout=60)  # the cell ends
        row = ps_until(machine, k.pid, lambda row: not row["busy"])
        assert row["held"] == [] and row["busy"] is False
        assert k.run("print(nbmodels.get_manager().survivors())").strip() == "[]"  # really gone
    finally:
        restore(machine)


def test_free_with_a_variable_holding_the_model_says_what_holds_it(machine: Machine) -> None:
    k = machine.eval
    try:
        k.run("import nbmodels\nkept = nbmodels.get_manager().get('clf')")
        done = machine.nbmodels("free", "eval")
        assert done.returncode == 0, done.stderr
        assert "clf: released, but the kernel still holds it (kept)" in done.stdout
        assert "%unload_model clf --force" in done.stdout
        assert ps_json(machine)[k.pid]["held"] == ["clf"]
        k.run("del kept")  # the cell's end notices and gives the memory back
        assert ps_until(machine, k.pid, lambda row: row["held"] == [])["held"] == []
    finally:
        restore(machine)


def test_free_of_a_kernel_without_nbmodels_is_a_clear_one_line_error(machine: Machine) -> None:
    line = one_error_line(machine.nbmodels("free", str(machine.plain.pid)))
    assert line.startswith("nbmodels free: ") and "is not an nbmodels kernel" in line
    assert "%load_ext nbmodels" in line


def test_unknown_ambiguous_and_dead_kernels_are_one_line_errors(machine: Machine) -> None:
    ambiguous = one_error_line(machine.nbmodels("free", "train"))  # project/train.ipynb and scratch/train.ipynb
    assert "'train' matches 2 kernels" in ambiguous
    assert str(machine.train.pid) in ambiguous and str(machine.plain.pid) in ambiguous
    assert "no kernel matches 'nosuchnotebook'" in one_error_line(machine.nbmodels("free", "nosuchnotebook"))
    dead = psutil.Popen(["true"])
    dead.wait()
    assert f"no process with pid {dead.pid}" in one_error_line(machine.nbmodels("free", str(dead.pid)))
    assert f"process {os.getpid()} is not a Jupyter kernel" in one_error_line(
        machine.nbmodels("free", str(os.getpid()))
    )
    assert loaded(machine.train) == ["enc", "lm"] and loaded(machine.eval) == ["clf"]  # nothing changed
    # a longer path picks one of the two train notebooks
    assert find_kernel(scan(), "project/train.ipynb").pid == machine.train.pid
    with pytest.raises(KernelNotFoundError, match="say which kernel"):
        find_kernel(scan(), " ")


def test_a_corrupt_or_foreign_state_file_is_reported_in_one_line_and_left_alone(machine: Machine) -> None:
    k = machine.eval
    path = machine.runtime / f"nbmodels-kernel-{k.pid}.json"
    good = path.read_text()
    try:
        for text, problem in (
            (good[: len(good) // 2], "not valid JSON"),
            (json.dumps({**json.loads(good), "version": 99}), "state format version 99"),
            (json.dumps({k: v for k, v in json.loads(good).items() if k != "models"}), "'models' is missing"),
        ):
            path.write_text(text)
            done = machine.nbmodels("ps")
            assert done.returncode == 0  # the other kernels are still worth listing
            [warning] = done.stderr.strip().splitlines()
            assert warning.startswith("nbmodels ps: warning: ") and problem in warning, warning
            row = next(line for line in done.stdout.splitlines() if f" {k.pid} " in line)
            assert "(state file unreadable)" in row
            line = one_error_line(machine.nbmodels("free", str(k.pid)))
            assert problem in line
            assert path.read_text() == text  # nothing changed: the file is the kernel's, it is alive
            assert loaded(k) == ["clf"]
    finally:
        k.run("pass")  # the kernel rewrites its state at the end of every cell
    assert ps_until(machine, k.pid, lambda row: row["state_error"] is None)["nbmodels"] is True
    assert json.loads(path.read_text())["version"] == 1


def test_an_unreadable_runtime_directory_is_a_one_line_error(machine: Machine, tmp_path: Path) -> None:
    not_a_dir = tmp_path / "runtime-file"
    not_a_dir.write_text("")
    for command in ("ps", "free"):
        args = [command, "--runtime-dir", str(not_a_dir)] + (["eval"] if command == "free" else [])
        assert "is not a directory" in one_error_line(machine.nbmodels(*args))
    locked = tmp_path / "locked"
    locked.mkdir(mode=0)
    try:
        if os.getuid() == 0:  # root reads any directory: drop the capabilities that let it, for real
            if shutil.which("setpriv") is None:
                pytest.skip("running as root without setpriv (util-linux) to drop CAP_DAC_OVERRIDE")
            done = machine.nbmodels("ps", "--runtime-dir", str(locked), wrapper=ROOT_WITHOUT_DAC)
        else:
            done = machine.nbmodels("ps", "--runtime-dir", str(locked))
    finally:
        locked.chmod(0o700)
    assert "permission denied" in one_error_line(done)


def test_a_restart_removes_the_old_state_and_a_sigkilled_kernels_stale_state_disappears(machine: Machine) -> None:
    from tests.machine.conftest import _start

    outputs: list[IO[str]] = []
    doomed = str(machine.runtime.parent / "doomed.ipynb")
    k = _start(machine.runtime, machine.runtime.parent, "doomed", doomed, outputs)
    try:
        k.client.start_channels()
        k.client.wait_for_ready(timeout=120)
        k.run("%load_ext nbmodels\n%load_model big demo:mlp --kw size_mb=4")
        before = k.pid
        assert (machine.runtime / f"nbmodels-kernel-{before}.json").exists()
        k.manager.restart_kernel(now=False)  # graceful: atexit runs in the old process
        k.client.wait_for_ready(timeout=120)
        assert k.pid != before and not (machine.runtime / f"nbmodels-kernel-{before}.json").exists()
        assert not (machine.runtime / f"nbmodels-kernel-{before}.sock").exists()
        rows = ps_json(machine)
        assert before not in rows and rows[k.pid]["nbmodels"] is False  # a fresh process, no extension yet

        k.run("%load_ext nbmodels\n%load_model big demo:mlp --kw size_mb=4")
        pid = k.pid
        state = machine.runtime / f"nbmodels-kernel-{pid}.json"
        sock = machine.runtime / f"nbmodels-kernel-{pid}.sock"
        assert state.exists() and sock.exists() and model_names(ps_json(machine)[pid]) == ["big"]
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        rows = ps_json(machine)  # the process may still be an unreaped zombie: it is gone all the same
        assert pid not in rows and not state.exists() and not sock.exists()
        assert {m.pid for m in machine.kernels} <= set(rows)
        assert "no process with pid" in one_error_line(machine.nbmodels("free", str(pid)))
    finally:
        k.client.stop_channels()
        if k.manager.has_kernel:
            k.manager.shutdown_kernel(now=True)
        for output in outputs:
            output.close()


def test_unload_ext_removes_the_state_and_socket_and_load_ext_brings_them_back(machine: Machine) -> None:
    k = machine.eval
    state = machine.runtime / f"nbmodels-kernel-{k.pid}.json"
    sock = machine.runtime / f"nbmodels-kernel-{k.pid}.sock"
    try:
        assert state.exists() and sock.exists()
        assert oct(state.stat().st_mode & 0o777) == "0o600" and oct(sock.stat().st_mode & 0o777) == "0o600"
        k.run("%unload_ext nbmodels")
        assert not state.exists() and not sock.exists()
        assert ps_json(machine)[k.pid]["nbmodels"] is False  # the models stay loaded, but it says nothing now
        assert "not an nbmodels kernel" in one_error_line(machine.nbmodels("free", "eval"))
    finally:
        k.run("%load_ext nbmodels")
    assert state.exists() and sock.exists()
    assert model_names(ps_json(machine)[k.pid]) == ["clf"]


def test_a_load_in_flight_shows_as_loading(machine: Machine) -> None:
    k = machine.eval
    try:
        k.run(
            "import threading, time, torch, nbmodels\n"
            "gate = threading.Event()\n"
            "def slow():\n    gate.wait(60)\n    return torch.nn.Linear(4, 4)\n"
            "loader = threading.Thread(target=lambda: nbmodels.get_manager().load('slow', slow))\n"
            "loader.start()"
        )
        row = ps_until(machine, k.pid, lambda row: row["loading"] == ["slow"])
        assert row["loading"] == ["slow"] and model_names(row) == ["clf"]
        assert "slow (loading)" in machine.nbmodels("ps").stdout
        k.run("gate.set()\nloader.join()")
        row = ps_until(machine, k.pid, lambda row: "slow" in model_names(row))
        assert row["loading"] == [] and model_names(row) == ["clf", "slow"]
    finally:
        k.run("nbmodels.get_manager().unload('slow')" if "slow" in loaded(k) else "pass")
