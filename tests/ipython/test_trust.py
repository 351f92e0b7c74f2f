"""No prompt and no keyword decides trust: only ``--trust`` lets a file run code, and errors never advise otherwise.

The files are real: a Hugging Face folder whose ``config.json`` names Python
code of its own (``auto_map``) that would leave a mark if it ran, and a
pickle whose unpickling would do the same.
"""

from __future__ import annotations

import io
import json
import pickle
import sys
from pathlib import Path

import pytest
import torch
import transformers
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

from nbmodels import ModelManager
from nbmodels.core.sources import UNSAFE_KEYWORDS, _without_unsafe_advice


class _Mark:
    """Unpickling this creates the file ``path``: proof that the pickle ran code."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (self.path, "w"))


@pytest.fixture
def evil_folder(tmp_path: Path) -> tuple[Path, Path]:
    """A tiny BERT folder re-labelled as a model type transformers does not know, with code of its own."""
    folder = tmp_path / "evil-model"
    config = transformers.BertConfig(
        vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
    )
    transformers.BertModel(config).save_pretrained(str(folder))
    mark = tmp_path / "custom-code-ran"
    (folder / "evil.py").write_text(
        f"open({str(mark)!r}, 'w').close()\n"
        "from transformers import PretrainedConfig\n"
        "class EvilConfig(PretrainedConfig):\n    model_type = 'evilnet'\n"
    )
    data = json.loads((folder / "config.json").read_text())
    data.update(model_type="evilnet", auto_map={"AutoConfig": "evil.EvilConfig", "AutoModel": "evil.EvilModel"})
    (folder / "config.json").write_text(json.dumps(data))
    return folder, mark


def state(manager: ModelManager) -> tuple[list[str], list[str]]:
    return [i.name for i in manager.list()], manager.loading()


def test_a_folder_with_code_of_its_own_never_prompts_and_needs_trust(
    ip: InteractiveShell, mgr: ModelManager, evil_folder: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, mark = evil_folder
    answer = io.StringIO("y\ny\ny\n")  # what a user would type at transformers' "run the custom code? [y/N]"
    monkeypatch.setattr(sys, "stdin", answer)
    with pytest.raises(UsageError) as caught:
        ip.run_line_magic("load_model", f"evil {folder}")
    message = str(caught.value)
    assert "\n" not in message and "pass --trust" in message
    assert "trust_remote_code=True" not in message
    assert answer.tell() == 0  # nothing read stdin
    assert not mark.exists()  # the folder's code never ran
    assert state(mgr) == ([], [])


@pytest.mark.parametrize(("key", "value"), [(k, v) for k, v in UNSAFE_KEYWORDS.items()])
def test_a_keyword_that_turns_a_safety_off_needs_trust(
    ip: InteractiveShell, mgr: ModelManager, key: str, value: bool
) -> None:
    with pytest.raises(UsageError) as caught:
        ip.run_line_magic("load_model", f"x demo:mlp --kw {key}={value}")
    assert "\n" not in str(caught.value) and "--trust" in str(caught.value)
    assert state(mgr) == ([], [])
    with pytest.raises(ValueError, match="--trust"):  # the Python API refuses it the same way
        mgr.load("x", "demo:mlp", **{key: value})
    assert state(mgr) == ([], [])


def test_weights_only_false_never_unpickles_without_trust(
    ip: InteractiveShell, mgr: ModelManager, tmp_path: Path
) -> None:
    mark = tmp_path / "pickle-ran"
    checkpoint = tmp_path / "evil.pt"
    checkpoint.write_bytes(pickle.dumps(_Mark(str(mark)), protocol=2))
    for line in (f"x {checkpoint} --kw weights_only=False", f"x {checkpoint} --kw weights_only=0", f"x {checkpoint}"):
        with pytest.raises(UsageError) as caught:
            ip.run_line_magic("load_model", line)
        message = str(caught.value)
        assert "\n" not in message and "--trust" in message, message
        assert "Re-running" not in message and "set to `False`" not in message  # torch's advice is not passed on
        assert not mark.exists()
    assert state(mgr) == ([], [])


def test_torchs_advice_to_turn_safety_off_is_rewritten(tmp_path: Path) -> None:
    checkpoint = tmp_path / "evil.pt"
    checkpoint.write_bytes(pickle.dumps(_Mark(str(tmp_path / "x")), protocol=2))
    with pytest.raises(pickle.UnpicklingError) as caught:
        torch.load(str(checkpoint), weights_only=True)
    assert "weights_only" in str(caught.value)  # torch's own text advises turning it off
    rewritten = _without_unsafe_advice(str(caught.value), "evil.pt")
    assert rewritten == (
        "evil.pt cannot be loaded safely (it needs code from the file to run); pass --trust if you trust this file"
    )
