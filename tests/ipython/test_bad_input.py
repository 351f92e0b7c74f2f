"""Every user mistake in a magic is a one-line UsageError that names the magic and changes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

from nbmodels import ModelManager

BAD_LINES = [
    ("load_model", ""),  # missing name
    ("load_model", "--device cpu"),  # missing name, with a flag
    ("load_model", "x demo:mlp --bogus"),  # unknown flag
    ("load_model", "x demo:mlp -h"),  # argparse's help flag is not a flag here
    ("load_model", "x demo:mlp extra"),  # one positional too many
    ("load_model", "x demo:mlp --device gpu"),  # bad device
    ("load_model", "x demo:mlp --device cuda:7"),  # a device this machine lacks
    ("load_model", "x demo:mlp --dtype float17"),  # bad dtype
    ("load_model", "x demo:mlp --kw hidden"),  # --kw without '='
    ("load_model", "x demo:mlp --kw 1a=2"),  # key not a name
    ("load_model", "x demo:mlp --kw class=2"),  # key a Python keyword
    ("load_model", "x demo:mlp --kw device=cpu"),  # a manager setting, not a model keyword
    ("load_model", "x demo:mlp --kw hidden=8 hidden=9"),  # given twice
    ("load_model", "x demo:mlp --kw"),  # --kw with nothing
    ("load_model", "x demo:mlp --kw nope=1"),  # a keyword the loader does not take
    ("load_model", "x demo:mlp --kw layers=0"),  # a value the demo loader rejects
    ("load_model", "x demo:mlp --as 1bad"),  # not a variable name
    ("load_model", "x demo:nosuch"),  # unknown demo model
    ("load_model", "x no_such_module_xyz:factory"),  # missing module
    ("load_model", "x ./missing.safetensors"),  # missing file
    ("load_model", "unknown"),  # unknown model, no source
    ("load_model", "x 'demo:mlp"),  # unbalanced quote
    ("load_model", "keep demo:transformer"),  # conflicts with the loaded 'keep'
    ("unload_model", ""),
    ("unload_model", "unknown"),
    ("unload_model", "keep extra"),
    ("unload_model", "--bogus keep"),
    ("model_info", ""),
    ("model_info", "unknown"),
    ("model_info", "keep --bogus"),
    ("model_cleanup", "--bogus"),
    ("model_cleanup", "extra"),
    ("list_models", "--bogus"),
    ("list_models", "extra"),
    ("models", "extra"),
]


def state(manager: ModelManager) -> tuple[list[str], list[str], list[str], object]:
    infos = manager.list()
    return [i.name for i in infos], manager.registered(), manager.loading(), [i.loaded_at for i in infos]


@pytest.mark.parametrize(("magic", "line"), BAD_LINES, ids=[f"%{m} {line}" for m, line in BAD_LINES])
def test_a_mistake_is_a_one_line_usage_error_and_changes_nothing(
    ip: InteractiveShell, mgr: ModelManager, magic: str, line: str
) -> None:
    ip.run_line_magic("load_model", "keep demo:mlp")
    mgr.register("reg", "demo:mlp")
    before = state(mgr)
    with pytest.raises(UsageError) as caught:
        ip.run_line_magic(magic, line)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"%{magic}: ")
    assert state(mgr) == before
    assert "x" not in ip.user_ns and "1bad" not in ip.user_ns


def test_a_usage_error_does_not_chain_the_error_behind_it(ip: InteractiveShell) -> None:
    with pytest.raises(UsageError) as caught:
        ip.run_line_magic("load_model", "x demo:nosuch")
    assert caught.value.__context__ is None and caught.value.__cause__ is None


def test_in_a_cell_the_user_sees_one_line(ip: InteractiveShell, capsys: pytest.CaptureFixture[str]) -> None:
    result = ip.run_cell("%load_model x demo:mlp --device gpu", store_history=True)
    assert isinstance(result.error_in_exec, UsageError)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("UsageError: %load_model: unknown device 'gpu'")


def test_a_path_with_spaces_that_split_says_to_quote_it(
    ip: InteractiveShell, mgr: ModelManager, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # papermill pastes {model_dir} in unquoted: %load_model clf models/tiny bert
    import torch
    from safetensors.torch import save_file

    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    save_file({"w": torch.zeros(4)}, str(tmp_path / "models" / "tiny bert.safetensors"))
    with pytest.raises(UsageError) as caught:
        ip.run_line_magic("load_model", "clf models/tiny bert.safetensors")
    message = str(caught.value)
    assert "unrecognized arguments: bert.safetensors" in message
    assert "a path with spaces must be quoted: %load_model clf 'models/tiny bert.safetensors'" in message
    assert "\n" not in message and "clf" not in mgr
    ip.run_line_magic("load_model", "clf 'models/tiny bert.safetensors'")  # as the message says
    assert "clf" in mgr
    with pytest.raises(UsageError, match=r'if a path has spaces, quote it \("\.\.\."\)'):
        ip.run_line_magic("load_model", "other models/no such thing")


def test_a_builtin_type_in_the_notebook_is_no_factory(ip: InteractiveShell, mgr: ModelManager) -> None:
    ip.user_ns["table"] = dict
    with pytest.raises(UsageError, match=r"'table' in the notebook is an object of type type, not a function"):
        ip.run_line_magic("load_model", "t table")
    assert "t" not in mgr
