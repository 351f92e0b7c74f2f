"""The memory policy from a real InteractiveShell: settings, magics, cells as uses, and the out-of-memory account."""

from __future__ import annotations

import gc
import re
import time
import weakref

import pytest
import torch
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

from nbmodels import ModelManager
from nbmodels.ipython.config import NBModels
from tests.ipython.conftest import run

MiB = 2**20


def size_of(mgr: ModelManager, name: str) -> int:
    total = mgr.info(name).total_bytes
    assert total is not None
    return total


def test_a_budget_evicts_the_idle_model_while_the_one_in_a_variable_stays(
    ip: InteractiveShell, mgr: ModelManager, capsys: pytest.CaptureFixture[str]
) -> None:
    run(ip, "%load_model idle demo:mlp --kw size_mb=2")
    run(ip, "%load_model mine demo:mlp --kw size_mb=2 seed=1")
    run(ip, "import nbmodels; model = nbmodels.get_manager().get('mine')")  # the user's own variable
    run(ip, "%load_model other demo:mlp --kw size_mb=2 seed=2")
    run(ip, "nbmodels.get_manager().get('idle')")  # idle is now newer than mine: LRU alone would pick mine
    budget = int(3.5 * size_of(mgr, "idle"))
    run(ip, f"%config NBModels.max_memory = 'cpu={budget}'")
    capsys.readouterr()
    run(ip, "%load_model new demo:mlp --kw size_mb=2 seed=3")
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("evicted other (2.0 MiB, idle ") and out[0].endswith(" to fit new")
    assert out[1].startswith("new: Sequential on cpu")
    assert sorted(info.name for info in mgr.list()) == ["idle", "mine", "new"]


def test_a_model_in_training_is_not_evicted_and_the_error_names_its_optimizer(
    ip: InteractiveShell, mgr: ModelManager, capsys: pytest.CaptureFixture[str]
) -> None:
    """An ordinary training cell: the optimizer holds the parameters; a budget must not take that model."""
    run(ip, "m = %load_model trained demo:mlp --kw size_mb=2")
    run(
        ip,
        "import torch\nopt = torch.optim.Adam(m.parameters()); losses = []\n"
        "for _ in range(2):\n"
        "    loss = m(torch.randn(4, next(m.parameters()).shape[1])).pow(2).mean()\n"
        "    opt.zero_grad(); loss.backward(); opt.step(); losses.append(loss.item())",
    )
    run(ip, "%load_model spare demo:mlp --kw size_mb=2 seed=1")
    run(ip, f"%config NBModels.max_memory = 'cpu={int(2.5 * size_of(mgr, 'spare'))}'")
    capsys.readouterr()
    run(ip, "%load_model new demo:mlp --kw size_mb=2 seed=2")
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("evicted spare (") and len(out) == 2
    run(ip, "%model_unpin new")  # a no-op on an unpinned model, but a real magic between the loads
    run(ip, "%unload_model new")
    run(ip, f"%config NBModels.max_memory = 'cpu={int(1.5 * size_of(mgr, 'trained'))}'")
    with pytest.raises(UsageError) as info:
        ip.run_line_magic("load_model", "newest demo:mlp --kw size_mb=2 seed=3")
    assert "trained (2.0 MiB, held by opt" in str(info.value)
    assert "trained" in mgr and ip.user_ns["losses"][1] <= ip.user_ns["losses"][0] * 10


def test_pinned_and_held_models_make_a_one_line_error_that_says_how_to_free_them(
    ip: InteractiveShell, mgr: ModelManager
) -> None:
    run(ip, "%load_model keep demo:mlp --kw size_mb=2 --pin")
    run(ip, "import nbmodels; held = nbmodels.get_manager().load('held', 'demo:mlp', size_mb=2, seed=1)")
    ip.run_line_magic("config", f"NBModels.max_memory = 'cpu={int(2.5 * size_of(mgr, 'keep'))}'")
    with pytest.raises(UsageError) as info:
        ip.run_line_magic("load_model", "new demo:mlp --kw size_mb=2 seed=2")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("%load_model: no room for new: it needs 2.0 MiB on cpu")
    assert "keep (2.0 MiB, pinned)" in message
    assert "held (2.0 MiB, held by held; %unload_model held --force frees it)" in message
    assert message.endswith("nothing was loaded")
    assert "new" not in mgr


def test_pin_unpin_offload_and_to(ip: InteractiveShell, mgr: ModelManager, capsys: pytest.CaptureFixture[str]) -> None:
    run(ip, "%load_model m demo:mlp --kw size_mb=1")
    capsys.readouterr()
    run(ip, "%model_pin m")
    assert mgr.info("m").pinned
    run(ip, "%model_unpin m")
    assert not mgr.info("m").pinned
    run(ip, "%model_offload m")
    run(ip, "%model_to m auto")  # no GPU here: the CPU, silently
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "m: pinned (1022.4 KiB); %model_unpin m lets it go again"
    assert out[1] == "m: unpinned (1022.4 KiB)"
    assert out[2] == out[3] == "m: on cpu (1022.4 KiB)"
    for line, words in [
        ("model_pin nope", "no model named 'nope' is loaded"),
        ("model_to m gpu", "torch calls a GPU 'cuda'"),
        ("model_to m", "the following arguments are required: device"),
        ("model_offload", "the following arguments are required: name"),
    ]:
        magic, _, rest = line.partition(" ")
        with pytest.raises(UsageError, match=words):
            ip.run_line_magic(magic, rest)


def test_keep_alive_zero_unloads_when_the_cell_that_used_it_ends(ip: InteractiveShell, mgr: ModelManager) -> None:
    run(ip, "%load_model short demo:mlp --keep-alive 0 --as m")
    time.sleep(0.3)  # the load alone is no use: the next cell's m(x) must find it
    assert "short" in mgr
    run(ip, "import torch\ny = m(torch.zeros(1, 64))")
    for _ in range(100):  # the timer thread unloads it as soon as the cell that used it has ended
        if "short" not in mgr:
            break
        time.sleep(0.02)
    assert "short" not in mgr
    with pytest.raises(UsageError, match=r"is not a duration"):
        ip.run_line_magic("load_model", "bad demo:mlp --keep-alive soon")
    with pytest.raises(UsageError, match=r"--kw keep_alive=\.\.\. is not a model keyword; use --keep-alive"):
        ip.run_line_magic("load_model", "bad demo:mlp --kw keep_alive=5")


def test_a_model_used_in_the_running_cell_is_not_unloaded_under_it(ip: InteractiveShell, mgr: ModelManager) -> None:
    """keep-alive 0.2 s, a cell that uses the model and then runs for a second: it stays until the cell ends."""
    run(ip, "m = %load_model busy demo:mlp --keep-alive 0.2")
    run(ip, "import time, torch\nout = m(torch.ones(1, 64))\ntime.sleep(1.0)\nafter = m(torch.ones(1, 64))")
    assert ip.user_ns["after"].shape == (1, 10)
    for _ in range(100):
        if "busy" not in mgr:
            break
        time.sleep(0.02)
    assert "busy" not in mgr  # idle once the cell ended: then unloaded


def test_a_keep_alive_that_expires_while_another_cell_runs(ip: InteractiveShell, mgr: ModelManager) -> None:
    """The model is not used by the running cell: it is unloaded during it, and its memory really comes back
    (the handle holds it only weakly), so the next use says it was unloaded."""
    run(ip, "m = %load_model idle demo:mlp --kw size_mb=1 --keep-alive 0.2")
    gone = weakref.ref(mgr.get("idle"))
    run(ip, "import time\ntime.sleep(1.0)")
    gc.collect()
    assert "idle" not in mgr and gone() is None
    with pytest.raises(ReferenceError, match="model 'idle' was unloaded"):
        run(ip, "m(1)")


POLICY_DEFAULTS = ({}, 0, None, "unload")


def policy_of(mgr: ModelManager) -> tuple[object, ...]:
    return (mgr.max_memory, mgr.max_loaded_models, mgr.keep_alive, mgr.evict)


@pytest.mark.parametrize(
    ("environment", "policy", "warnings"),
    [
        (
            {"MAX_MEMORY": "cpu=8GiB", "MAX_LOADED_MODELS": "3", "KEEP_ALIVE": "30m", "EVICT": "offload"},
            ({"cpu": 8 * 2**30}, 3, 1800.0, "offload"),
            [],
        ),
        (
            {"MAX_MEMORY": "cpu=lots", "KEEP_ALIVE": "soon", "EVICT": "delete", "MAX_LOADED_MODELS": "-2"},
            POLICY_DEFAULTS,
            [
                "nbmodels: NBMODELS_MAX_MEMORY='cpu=lots' is not a budget",
                "nbmodels: NBMODELS_KEEP_ALIVE='soon' is not a duration",
                "nbmodels: NBMODELS_EVICT='delete' is not 'unload' or 'offload'",
                "nbmodels: NBMODELS_MAX_LOADED_MODELS='-2' is not a whole number of models",
            ],
        ),
    ],
)
def test_environment_settings_reach_the_manager_or_are_one_line_at_load_ext(
    environment: dict[str, str],
    policy: tuple[object, ...],
    warnings: list[str],
    monkeypatch: pytest.MonkeyPatch,
    mgr: ModelManager,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for variable, value in environment.items():
        monkeypatch.setenv(f"NBMODELS_{variable}", value)
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "nbmodels")
    try:
        err = capsys.readouterr().err
        assert policy_of(mgr) == policy
        assert [line for line in warnings if line not in err] == []
    finally:
        shell.run_line_magic("unload_ext", "nbmodels")
    assert policy_of(mgr) == POLICY_DEFAULTS  # %unload_ext gives the manager its own settings back


def test_percent_config_applies_refuses_and_reverts(
    ip: InteractiveShell, mgr: ModelManager, capsys: pytest.CaptureFixture[str]
) -> None:
    run(ip, "%load_model keep demo:mlp --kw size_mb=2 --pin")
    run(ip, "%load_model idle demo:mlp --kw size_mb=2 seed=1")
    one = size_of(mgr, "keep")
    capsys.readouterr()
    ip.run_line_magic("config", f"NBModels.max_memory = {{'cpu': {int(1.5 * one)}}}")
    out = capsys.readouterr().out
    assert out.startswith("nbmodels: evicted idle (2.0 MiB, idle ") and "to fit the new budget" in out
    assert mgr.max_memory == {"cpu": int(1.5 * one)}
    ip.run_line_magic("config", "NBModels.max_memory = 'cpu=1MiB'")
    err = capsys.readouterr().err
    assert "NBModels.max_memory stays {'cpu': " in err and "keep (2.0 MiB, pinned)" in err
    assert mgr.max_memory == {"cpu": int(1.5 * one)}
    settings = next(c for c in ip.configurables if isinstance(c, NBModels))
    assert settings.max_memory == {"cpu": int(1.5 * one)}  # the setting went back too
    ip.run_line_magic("config", "NBModels.keep_alive = 300")
    ip.run_line_magic("config", "NBModels.max_loaded_models = 4")
    assert (mgr.keep_alive, mgr.max_loaded_models) == (300.0, 4)
    ip.run_line_magic("config", "NBModels.keep_alive = 'whenever'")  # refused by %config, one line, unchanged
    assert mgr.keep_alive == 300.0 and settings.keep_alive == 300


def test_after_an_out_of_memory_error_the_account_follows_the_unchanged_traceback(
    ip: InteractiveShell, mgr: ModelManager, capfd: pytest.CaptureFixture[str]
) -> None:
    cell = "raise MemoryError('no room for the batch')"
    ip.run_line_magic("unload_ext", "nbmodels")
    ip.run_cell(cell, store_history=True)
    plain = capfd.readouterr().out
    ip.run_line_magic("load_ext", "nbmodels")
    run(ip, "%load_model idle demo:mlp --kw size_mb=1")
    run(ip, "%load_model keep demo:mlp --kw size_mb=1 seed=1 --pin")
    run(ip, "import nbmodels; held = nbmodels.get_manager().load('held', 'demo:mlp', size_mb=1, seed=2)")
    run(ip, "%unload_model held")
    capfd.readouterr()
    result = ip.run_cell(cell, store_history=True)
    assert isinstance(result.error_in_exec, MemoryError)
    out = capfd.readouterr().out
    traceback, _, account = out.partition("nbmodels: out of memory on cpu: ")
    assert _plain(traceback) == _plain(plain)  # IPython's traceback, exactly as without
    lines = account.splitlines()
    assert lines[0].startswith("process RSS ")
    assert re.fullmatch(r"  models on cpu: idle 1022\.4 KiB \(idle [0-9.]+s\), keep 1022\.4 KiB \(pinned\)", lines[1])
    assert lines[2] == "  released but still alive: held 1022.4 KiB, held by held"
    assert lines[-1] == "  frees the most: %model_cleanup --force (3.0 MiB)"
    assert isinstance(ip.user_ns["held"], torch.nn.Module)  # the account removed nothing


def test_a_gpu_out_of_memory_error_in_a_cell_names_the_gpu(
    ip: InteractiveShell, capfd: pytest.CaptureFixture[str]
) -> None:
    result = ip.run_cell(
        "import torch\nraise torch.OutOfMemoryError('CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a "
        "total capacity of 79.15 GiB of which 1.2 GiB is free.')",
        store_history=True,
    )
    assert isinstance(result.error_in_exec, torch.OutOfMemoryError)
    out = _plain(capfd.readouterr().out)
    assert "OutOfMemoryError: CUDA out of memory." in out
    assert out.index("OutOfMemoryError: CUDA") < out.index("nbmodels: out of memory on cuda:0:")
    assert "no model loaded by nbmodels is on cuda:0" in out


def test_other_errors_get_no_account(ip: InteractiveShell, capfd: pytest.CaptureFixture[str]) -> None:
    ip.run_cell("raise RuntimeError('CUDA error: device-side assert triggered')", store_history=True)
    assert "nbmodels:" not in capfd.readouterr().out


def test_unload_ext_removes_the_cell_hooks(ip: InteractiveShell, capfd: pytest.CaptureFixture[str]) -> None:
    callbacks = {event: list(ip.events.callbacks[event]) for event in ("pre_run_cell", "post_run_cell")}
    ip.run_line_magic("unload_ext", "nbmodels")
    try:
        for event, before in callbacks.items():
            assert len(ip.events.callbacks[event]) < len(before)
        ip.run_cell("raise MemoryError()", store_history=True)
        assert "nbmodels:" not in capfd.readouterr().out
    finally:
        ip.run_line_magic("load_ext", "nbmodels")


def _plain(text: str) -> str:
    """A traceback without colours and cell numbers, to compare two runs of one cell."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)
    return re.sub(r"In\s*\[\d+\]", "In [N]", text)
