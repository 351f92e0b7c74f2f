"""What a new user does in the first hour, on a real InteractiveShell, and what they must see.

Paths with spaces, cells run twice, a typo in ``--kw``, a corrupt file, a load
still running, a deep copy of the best model, ``torch.save`` of what
``%load_model`` returned, a bad environment variable: each is one line of output
that says what happened, and nothing the user did not ask about changes.
"""

from __future__ import annotations

import copy
import gc
import io
import pickle
import re
import subprocess
import sys
import threading
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from safetensors.torch import save_file

from nbmodels import ModelManager
from nbmodels.ipython import ModelHandle, unwrap
from tests.core.test_threading import BOUND, BlockedLoader, waiting_in_load
from tests.ipython.conftest import run


def usage_error(ip: InteractiveShell, magic: str, line: str) -> str:
    """Run ``%magic line``; it must fail with a one-line UsageError naming the magic. Returns the message."""
    with pytest.raises(UsageError) as caught:
        ip.run_line_magic(magic, line)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"%{magic}: "), message
    return message


def cell_output(ip: InteractiveShell, code: str, capsys: pytest.CaptureFixture[str]) -> list[str]:
    """Run ``code`` as a cell; the non-empty lines it wrote (stdout and stderr together)."""
    capsys.readouterr()
    ip.run_cell(code, store_history=True)
    captured = capsys.readouterr()
    return [line for line in (captured.out + captured.err).splitlines() if line.strip()]


@pytest.fixture
def weights(tmp_path: Path) -> Path:
    """A real safetensors file in a folder whose name has spaces, as a user's Downloads folder does."""
    folder = tmp_path / "my models"
    folder.mkdir()
    path = folder / "tiny weights.safetensors"
    save_file({"w": torch.arange(6.0).reshape(2, 3)}, str(path))
    return path


# --- quoting works as in a shell -------------------------------------------------------------------


@pytest.mark.parametrize("quoted", ['"{path}"', "'{path}'", "{escaped}"])
def test_a_path_with_spaces_loads_when_quoted_as_in_a_shell(
    ip: InteractiveShell, mgr: ModelManager, weights: Path, quoted: str
) -> None:
    escaped = str(weights).replace(" ", "\\ ")
    ip.run_line_magic("load_model", f"w {quoted.format(path=weights, escaped=escaped)}")
    assert mgr.info("w").source == str(weights)
    assert torch.equal(mgr.get("w")["w"], torch.arange(6.0).reshape(2, 3))


def test_an_unquoted_path_with_spaces_is_a_clear_mistake(ip: InteractiveShell, weights: Path) -> None:
    message = usage_error(ip, "load_model", f"w {weights}")
    assert "unrecognized arguments" in message or "no such file" in message


@pytest.mark.parametrize("magic", ["unload_model", "model_info", "load_model"])
def test_an_empty_quoted_name_says_the_name_is_empty(ip: InteractiveShell, magic: str) -> None:
    ip.run_line_magic("load_model", "keep demo:mlp")
    assert "name is empty" in usage_error(ip, magic, '""')
    assert "name is empty" in usage_error(ip, magic, "'  '")


def test_an_unbalanced_quote_says_so(ip: InteractiveShell) -> None:
    assert "close the quote" in usage_error(ip, "load_model", 'x "demo:mlp')


def test_a_list_whose_quotes_the_shell_split_took_says_how_to_quote_it(ip: InteractiveShell) -> None:
    message = usage_error(ip, "load_model", "x tests.ipython.factories:keywords_module --kw names=['a','b']")
    assert "--kw names=[a,b] is not a Python literal" in message and "quote the whole item" in message


# --- re-running a cell ------------------------------------------------------------------------------

FACTORY_CELL = """
from torch import nn

def make(hidden=8):
    return nn.Sequential(nn.Linear(4, hidden), nn.ReLU(), nn.Linear(hidden, 2))

model = nbmodels.get_manager().load("api", make, hidden=8)
%load_model magic __main__:make --kw hidden=8
"""


def test_a_cell_that_defines_a_factory_and_loads_from_it_can_run_again(
    ip: InteractiveShell, mgr: ModelManager, capsys: pytest.CaptureFixture[str]
) -> None:
    ip.run_cell("import nbmodels", store_history=True)
    run(ip, FACTORY_CELL)
    first = {name: mgr.get(name) for name in ("api", "magic")}
    lines = cell_output(ip, FACTORY_CELL, capsys)  # the same cell, run again: a new `make` object
    assert not any("Error" in line for line in lines), lines
    assert lines[-1].startswith("magic: Sequential") and "already loaded" in lines[-1]
    assert all(mgr.get(name) is model for name, model in first.items())
    assert ip.user_ns["model"] is first["api"]


def test_a_function_defined_in_the_notebook_is_a_source_by_its_bare_name(
    ip: InteractiveShell, mgr: ModelManager
) -> None:
    """`%load_model m make` is what a user types first after `def make(): ...`: it loads, and runs again."""
    cell = "import torch\ndef make(hidden=4):\n    return torch.nn.Sequential(torch.nn.Linear(3, hidden))"
    run(ip, cell)
    run(ip, "%load_model m make --kw hidden=8")
    first = mgr.get("m")
    assert mgr.info("m").source == "__main__:make" and mgr.info("m").parameters == 32
    run(ip, cell)  # the cell again: a new make object, the same source
    run(ip, "%load_model m make --kw hidden=8")
    assert mgr.get("m") is first
    assert "it was loaded with hidden=8, this asks for hidden=9" in usage_error(
        ip, "load_model", "m make --kw hidden=9"
    )
    run(
        ip,
        "class Net(torch.nn.Module):\n    def __init__(self):\n        super().__init__()\n"
        "        self.l = torch.nn.Linear(2, 2)",
    )
    run(ip, "%load_model net Net")
    assert mgr.info("net").class_name == "Net"


def test_a_bare_name_that_is_not_a_factory_says_what_it_is_and_changes_nothing(
    ip: InteractiveShell, mgr: ModelManager, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run(ip, "import torch\nbuilt = torch.nn.Linear(2, 2)\ncount = 3")
    message = usage_error(ip, "load_model", "m built")
    assert "'built' in the notebook is a model that is already built, not a function that builds one" in message
    assert "'count' in the notebook is an object of type int" in usage_error(ip, "load_model", "m count")
    missing = usage_error(ip, "load_model", "m nothing")
    assert "no file, folder or notebook function has that name" in missing and "define nothing()" in missing
    assert len(mgr) == 0
    monkeypatch.chdir(tmp_path)  # a folder named like a variable is still a folder
    (tmp_path / "count").mkdir()
    assert "in the notebook" not in usage_error(ip, "load_model", "m count")


def test_a_rerun_cell_with_other_keywords_says_what_differs(ip: InteractiveShell) -> None:
    ip.run_cell("import nbmodels", store_history=True)
    run(ip, FACTORY_CELL)
    message = usage_error(ip, "load_model", "magic __main__:make --kw hidden=16")
    assert "it was loaded with hidden=8, this asks for hidden=16" in message
    assert "--reload" in message and "%unload_model magic" in message
    assert "loaded from" not in message and "None" not in message


def test_asking_for_what_the_model_has_is_a_hit_and_conflicts_say_what_it_has(
    ip: InteractiveShell, mgr: ModelManager
) -> None:
    run(ip, "m = %load_model x demo:mlp")
    model = mgr.get("x")
    assert unwrap(ip.run_line_magic("load_model", "x --device cpu")) is model
    assert unwrap(ip.run_line_magic("load_model", "x demo:mlp --dtype float32 --device cpu")) is model
    run(ip, "m = m.half()")
    assert unwrap(ip.run_line_magic("load_model", "x --dtype fp16")) is model
    message = usage_error(ip, "load_model", "x --dtype float32")
    assert "it is float16, this asks for float32" in message and "None" not in message


# --- every mistake is one line ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("keywords", "cause"),
    [
        ("size_mb=abc", "size_mb > 0 (a number of megabytes), got 'abc'"),
        ("size_mb=1e309", "size_mb > 0 (a number of megabytes), got inf"),
        ("hidden=-5", "hidden >= 1 (a whole number), got -5"),
        ("layers=2.5", "layers >= 1 (a whole number), got 2.5"),
    ],
)
def test_a_bad_kw_value_is_one_line_naming_the_model_source_and_cause(
    ip: InteractiveShell, keywords: str, cause: str, capsys: pytest.CaptureFixture[str]
) -> None:
    message = usage_error(ip, "load_model", f"x demo:mlp --kw {keywords}")
    assert "'x'" in message and "demo:mlp" in message and cause in message
    assert "check the --kw names" not in message  # the name is right; its value is not
    lines = cell_output(ip, f"%load_model x demo:mlp --kw {keywords}", capsys)
    assert lines == [f"UsageError: {message}"]


def test_a_wrong_kw_name_says_check_the_kw_names(ip: InteractiveShell) -> None:
    message = usage_error(ip, "load_model", "x demo:mlp --kw hiden=8")
    assert "takes no keyword 'hiden'" in message and message.endswith("(check the --kw names)")


@pytest.fixture
def broken_files(tmp_path: Path) -> dict[str, Path]:
    folder = tmp_path / "broken files"
    folder.mkdir()
    files = {
        "empty": folder / "empty.pt",
        "corrupt": folder / "corrupt.pt",
        "corrupt-safetensors": folder / "corrupt.safetensors",
        "config-only": folder / "config only",
    }
    files["empty"].write_bytes(b"")
    files["corrupt"].write_bytes(b"PK\x03\x04 a zip that stops here")
    files["corrupt-safetensors"].write_bytes(b"\xff" * 8 + b"{}")
    files["config-only"].mkdir()
    (files["config-only"] / "config.json").write_text('{"model_type": "bert"}')
    return files


@pytest.mark.parametrize(
    ("which", "cause"),
    [
        ("empty", "empty.pt is empty (0 bytes)"),
        ("corrupt", "corrupt.pt is not a readable checkpoint: a broken zip archive"),
        ("corrupt-safetensors", "corrupt.safetensors is not a readable safetensors file"),
        ("config-only", "'config only' has a config.json but no weights"),
    ],
)
def test_a_file_that_cannot_load_is_one_line_and_changes_nothing(
    ip: InteractiveShell, mgr: ModelManager, broken_files: dict[str, Path], which: str, cause: str
) -> None:
    ip.run_line_magic("load_model", "keep demo:mlp")
    keep = mgr.get("keep")
    message = usage_error(ip, "load_model", f'new "{broken_files[which]}"')
    assert cause in message
    assert "new" not in mgr and mgr.loading() == []
    message = usage_error(ip, "load_model", f'keep "{broken_files[which]}" --reload')  # a reload changes nothing
    assert cause in message and mgr.get("keep") is keep


def test_a_state_dict_that_does_not_fit_arch_is_one_line(ip: InteractiveShell, tmp_path: Path) -> None:
    path = tmp_path / "linear.pt"
    torch.save(torch.nn.Linear(3, 3).state_dict(), path)
    message = usage_error(ip, "load_model", f"x {path} --kw arch=tests.ipython.factories:keywords_module")
    assert "loading 'x' from" in message and "in linear.pt does not fit arch" in message and "size mismatch" in message


CRASHING_FACTORY = """
import torch, weakref
seen = []

def crashing():
    big = torch.zeros(2_000_000)  # half-built weights, in the frame of the loader
    seen.append(weakref.ref(big))
    raise ValueError("the config says 7 layers, the weights have 6")
"""


def test_a_loader_that_crashes_is_one_line_and_tb_shows_its_traceback(
    ip: InteractiveShell, capsys: pytest.CaptureFixture[str]
) -> None:
    run(ip, CRASHING_FACTORY)
    lines = cell_output(ip, "%load_model x __main__:crashing", capsys)
    assert len(lines) == 1, lines
    assert lines[0].startswith("UsageError: %load_model: loading 'x' from __main__:crashing failed: ValueError: ")
    assert "the weights have 6" in lines[0] and "%tb" in lines[0]
    shown = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(cell_output(ip, "%tb", capsys)))  # without colours
    assert "Traceback (most recent call last)" in shown and "in crashing()" in shown
    assert 'raise ValueError("the config says 7 layers, the weights have 6")' in shown
    assert shown.rstrip().endswith(lines[0])
    gc.collect()
    assert ip.user_ns["seen"][0]() is None, "the failed load's half-built weights are still alive"


# --- a failed --reload ----------------------------------------------------------------------------------


def test_a_failed_reload_says_the_old_model_is_no_longer_loaded(ip: InteractiveShell, mgr: ModelManager) -> None:
    ip.run_line_magic("load_model", "x demo:mlp")
    old = weakref.ref(mgr.get("x"))
    run(ip, CRASHING_FACTORY)
    message = usage_error(ip, "load_model", "x __main__:crashing --reload")
    assert message.endswith("the reload released the previous 'x', so it is no longer loaded (%tb shows the traceback)")
    assert "x" not in mgr
    gc.collect()
    assert old() is None


def test_a_reload_refused_before_it_starts_keeps_the_model(ip: InteractiveShell, mgr: ModelManager) -> None:
    ip.run_line_magic("load_model", "x demo:mlp")
    model = mgr.get("x")
    for line in ["x demo:mlp --kw hiden=8 --reload", "x demo:nosuch --reload", "x ./missing.pt --reload"]:
        message = usage_error(ip, "load_model", line)
        assert "no longer loaded" not in message
    assert mgr.get("x") is model


# --- loads in flight --------------------------------------------------------------------------------------


@pytest.fixture
def slow_load(mgr: ModelManager) -> Iterator[BlockedLoader]:
    """'slow' loading in another thread, as a panel Load or a background cell does, until the test releases it."""
    loader = BlockedLoader()
    thread = threading.Thread(target=lambda: mgr.load("slow", loader) and None, daemon=True)
    thread.start()
    assert loader.started.wait(BOUND)
    yield loader
    loader.release.set()
    thread.join(BOUND)


def release_when_main_thread_waits(loader: BlockedLoader, waits_in: str = "load") -> threading.Thread:
    """Release ``loader`` once the main thread blocks in the manager (so the test proves it waited)."""

    def watch() -> None:
        main = threading.main_thread()
        for _ in range(int(BOUND * 100)):
            if waiting_in_load(main) if waits_in == "load" else _in_frame(main, waits_in):
                break
            threading.Event().wait(0.01)
        loader.release.set()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    return watcher


def _in_frame(thread: threading.Thread, name: str) -> bool:
    frame = sys._current_frames().get(thread.ident or -1)
    while frame is not None:
        if frame.f_code.co_name == name:
            return True
        frame = frame.f_back
    return False


def test_unload_and_info_of_a_loading_name_say_it_is_loading(
    ip: InteractiveShell, mgr: ModelManager, slow_load: BlockedLoader
) -> None:
    for magic in ("unload_model", "model_info"):
        message = usage_error(ip, magic, "slow")
        assert "'slow' is still loading" in message and "no model named" not in message
    assert mgr.loading() == ["slow"]


def test_load_model_without_a_source_waits_for_the_load_in_flight(
    ip: InteractiveShell, mgr: ModelManager, slow_load: BlockedLoader, capsys: pytest.CaptureFixture[str]
) -> None:
    watcher = release_when_main_thread_waits(slow_load)
    run(ip, "m = %load_model slow")
    watcher.join(BOUND)
    assert unwrap(ip.user_ns["m"]) is mgr.get("slow") and slow_load.calls == 1
    assert "waited for that load" in capsys.readouterr().out


def test_cleanup_says_what_is_still_loading_and_wait_releases_it_too(
    ip: InteractiveShell, mgr: ModelManager, slow_load: BlockedLoader, capsys: pytest.CaptureFixture[str]
) -> None:
    ip.run_line_magic("load_model", "done demo:mlp")
    lines = cell_output(ip, "%model_cleanup --quiet", capsys)  # quiet, yet a load in flight is worth a line
    assert any("still loading (left as is): slow" in line for line in lines), lines
    assert any("%model_cleanup --wait" in line for line in lines)
    watcher = release_when_main_thread_waits(slow_load, waits_in="_wait_for_loads")
    run(ip, "r = %model_cleanup --wait")
    watcher.join(BOUND)
    assert ip.user_ns["r"].released == ("slow",) and ip.user_ns["r"].pending == ()
    assert len(mgr) == 0 and mgr.loading() == []


# --- handles where users copy and save ------------------------------------------------------------------

TRAINING = """
import copy, torch
m = %load_model net demo:mlp --kw hidden=16
optimizer = torch.optim.SGD(m.parameters(), lr=0.1)
losses, best, x = [], None, torch.randn(8, 64)
for step in range(3):
    loss = m(x).pow(2).mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    losses.append(loss.item())
    if loss.item() == min(losses):
        best = copy.deepcopy(m)
"""


def test_a_training_loop_keeps_a_deep_copy_of_the_best_model(ip: InteractiveShell, mgr: ModelManager) -> None:
    run(ip, TRAINING)
    best, model = ip.user_ns["best"], mgr.get("net")
    assert type(best) is torch.nn.Sequential and not isinstance(type(best), ModelHandle)
    assert best is not model and all(b is not p for b, p in zip(best.parameters(), model.parameters(), strict=True))
    assert len(ip.user_ns["losses"]) == 3
    assert [info.name for info in mgr.list()] == ["net"]  # the copy is the user's, not the manager's


def test_torch_save_and_pickle_of_a_handle_save_the_model(
    ip: InteractiveShell, mgr: ModelManager, tmp_path: Path
) -> None:
    run(ip, "m = %load_model net demo:mlp --kw hidden=16")
    handle, model = ip.user_ns["m"], mgr.get("net")
    path = tmp_path / "net.pt"
    torch.save(handle, path)
    loaded = torch.load(path, weights_only=False)  # a whole pickled module, as torch.save(model) makes
    assert type(loaded) is torch.nn.Sequential
    assert torch.equal(loaded[0].weight, model[0].weight)
    torch.save(handle.state_dict(), tmp_path / "state.pt")  # the usual way works as on the model
    assert torch.equal(torch.load(tmp_path / "state.pt")["0.weight"], model[0].weight)
    restored = pickle.loads(pickle.dumps(handle))
    assert type(restored) is torch.nn.Sequential and restored is not model
    buffer = io.BytesIO()
    torch.save({"model": handle, "step": 3}, buffer)  # inside a checkpoint dict too
    buffer.seek(0)
    assert type(torch.load(buffer, weights_only=False)["model"]) is torch.nn.Sequential


def test_a_handle_is_equal_to_its_model_and_hashes_like_it(ip: InteractiveShell, mgr: ModelManager) -> None:
    run(ip, "a = %load_model net demo:mlp\nb = %load_model net")
    a, b, model = ip.user_ns["a"], ip.user_ns["b"], mgr.get("net")
    assert a == b and a == model and model == a
    assert hash(a) == hash(b) == hash(model)
    assert {a: "notes"}[model] == "notes" and len({a, b, model}) == 1
    run(ip, "other = %load_model other demo:mlp")
    assert a != ip.user_ns["other"]
    hashed = hash(a)
    del model
    ip.run_line_magic("unload_model", "net")
    assert a == a and a != b and hash(a) == hashed  # as a dead weakref.ref: equal to itself only, same hash


def test_copies_hashes_and_pickles_leave_the_handle_weak(
    ip: InteractiveShell, mgr: ModelManager, tmp_path: Path
) -> None:
    run(ip, "m = %load_model net demo:mlp")
    handle = ip.user_ns["m"]
    alive = weakref.ref(mgr.get("net"))
    copies: list[Any] = [copy.deepcopy(handle), copy.copy(handle)]
    pickle.dumps(handle)
    torch.save(handle, tmp_path / "net.pt")
    _ = hash(handle), handle == copies[0], {handle: 1}
    del copies, _
    ip.run_line_magic("unload_model", "net")
    gc.collect()
    assert alive() is None, "something the handle did kept the model alive"
    with pytest.raises(ReferenceError, match="'net' was unloaded"):
        copy.deepcopy(handle)


# --- sizes are current --------------------------------------------------------------------------------------


def test_list_and_info_show_the_model_as_it_is_after_half_and_a_new_layer(
    ip: InteractiveShell, mgr: ModelManager
) -> None:
    run(ip, "m = %load_model net demo:mlp --kw hidden=16")
    before = mgr.info("net")
    run(ip, "m = m.half()\nimport torch\nm.append(torch.nn.Linear(10, 10).half())")
    table = ip.run_line_magic("list_models", "")
    assert table[0].dtypes == ("float16",)
    assert table[0].parameters == before.parameters + 110
    assert table[0].total_bytes == (before.total_bytes + 110 * 4) // 2  # type: ignore[operator]
    details = ip.run_line_magic("model_info", "net")
    assert details.dtypes == ("float16",) and "float16" in str(details)


# --- settings ------------------------------------------------------------------------------------------------


@pytest.fixture
def reload_with_env(ip: InteractiveShell, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Any:
    """``reload(NAME=value, ...)``: %load_ext again with those variables set; returns what it printed."""

    def reload(**env: str) -> list[str]:
        ip.run_line_magic("unload_ext", "nbmodels")
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        capsys.readouterr()
        ip.run_line_magic("load_ext", "nbmodels")
        captured = capsys.readouterr()
        return [line for line in (captured.out + captured.err).splitlines() if line.strip()]

    return reload


def test_a_bad_default_device_is_warned_once_and_named_when_it_bites(
    ip: InteractiveShell, mgr: ModelManager, reload_with_env: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    shown = reload_with_env(NBMODELS_DEVICE="gpu", NBMODELS_VERBOSE="maybe")
    assert len(shown) == 2, shown
    assert shown[0].startswith("nbmodels: NBMODELS_DEVICE='gpu' is not usable") and "cuda" in shown[0]
    assert shown[1].startswith("nbmodels: NBMODELS_VERBOSE='maybe' is not a boolean")
    for _ in range(2):
        lines = cell_output(ip, "%load_model x demo:mlp", capsys)
        assert len(lines) == 1 and "unknown device 'gpu'" in lines[0]
        assert "from NBMODELS_DEVICE (NBModels.default_device)" in lines[0] and "--device" in lines[0]
    ip.run_line_magic("load_model", "x demo:mlp --device cpu")  # an explicit device is not spoiled
    ip.run_line_magic("config", "NBModels.default_device = 'tpu'")
    message = usage_error(ip, "load_model", "y demo:mlp")
    assert "'tpu'" in message and "from NBModels.default_device:" in message and "NBMODELS_DEVICE" not in message


def test_an_unwritable_shutdown_log_is_warned_at_load_ext(reload_with_env: Any, tmp_path: Path) -> None:
    missing = tmp_path / "no such folder" / "shutdown.jsonl"
    shown = reload_with_env(NBMODELS_SHUTDOWN_LOG=str(missing))
    assert len(shown) == 1 and "cannot be written" in shown[0] and "does not exist" in shown[0]
    assert reload_with_env(NBMODELS_SHUTDOWN_LOG=str(tmp_path)) == [
        f"nbmodels: the shutdown log {str(tmp_path)!r} (NBModels.shutdown_log / NBMODELS_SHUTDOWN_LOG) "
        "cannot be written: it is a folder; models are still released at shutdown, but no record will be written"
    ]
    assert reload_with_env(NBMODELS_SHUTDOWN_LOG=str(tmp_path / "fine.jsonl")) == []


# --- the terminal ---------------------------------------------------------------------------------------------


def test_terminal_ipython_shows_no_empty_out_lines_for_actions(tmp_path: Path) -> None:
    cells = ["%load_ext nbmodels", "%load_model x demo:mlp", "m = %load_model x", "%unload_model x"]
    cells += ["%model_cleanup", "%list_models", "m"]
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "IPython",
            "--simple-prompt",
            "--no-banner",
            "--colors=NoColor",
            "--HistoryManager.enabled=False",
            "--InteractiveShell.confirm_exit=False",
        ],
        input="\n".join(cells) + "\n",
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    out = done.stdout
    assert "Out[2]" not in out and "Out[3]" not in out and "Out[4]" not in out and "Out[5]" not in out, out
    assert "Out[6]: \nno models loaded" in out  # a query is for display
    assert "Out[7]: <unloaded model 'x' (nbmodels handle)>" in out  # and a value shown on purpose
