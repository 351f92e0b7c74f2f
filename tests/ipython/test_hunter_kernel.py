"""The leak hunter in a real kernel, as notebook users have it (jupyter_client, ipykernel's display hook).

A Hugging Face model loaded from a folder with its progress bars on, echoed by a
cell, then forced: the case the hunter once failed in every fresh kernel (a
widget attribute that is a dead ``weakref.proxy`` made IPython's finder fail, so
``Out``, ``_`` and ``user_ns_hidden`` went unsearched).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.ipython.kernels import TIMEOUT, Kernel, kernel

pytestmark = pytest.mark.slow


def shown(k: Kernel, code: str) -> str:
    """Everything a cell shows: its prints, and the text of what it displays (a report is displayed)."""
    texts: list[str] = []

    def collect(msg: dict[str, Any]) -> None:
        content = msg["content"]
        if msg["msg_type"] == "stream":
            texts.append(content["text"])
        elif msg["msg_type"] in ("display_data", "execute_result"):
            texts.append(content["data"].get("text/plain", ""))
        elif msg["msg_type"] == "error":
            texts.append("\n".join(content["traceback"]))

    k.client.execute_interactive(code, timeout=TIMEOUT, output_hook=collect)
    return "\n".join(texts)


@pytest.fixture(scope="module")
def bert_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny BERT classifier saved by transformers itself, in a folder whose path has a space."""
    transformers = pytest.importorskip("transformers")
    import torch

    folder = tmp_path_factory.mktemp("hf") / "tiny bert"
    config = transformers.BertConfig(
        vocab_size=512, hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        transformers.BertForSequenceClassification(config).save_pretrained(str(folder))
    return folder


def test_an_echoed_hugging_face_model_is_freed_by_force_in_a_kernel(tmp_path: Path, bert_folder: Path) -> None:
    with kernel(tmp_path, HF_HUB_OFFLINE="1") as k:
        k.run("%load_ext nbmodels\nimport gc, json, weakref, nbmodels")
        k.run(f"%load_model clf '{bert_folder}'")
        bars = k.run(
            "import ipywidgets.widgets.widget as widgets\n"
            "print(sum(type(w).__name__ == 'TqdmHBox' for w in list(widgets._instances.values())))"
        )
        assert int(bars) >= 1, "transformers' notebook progress bar (a widget with a weakref.proxy) is the scenario"
        echoed: list[str] = []
        k.client.execute_interactive(
            "nbmodels.get_manager().get('clf')",
            output_hook=lambda msg: echoed.append(msg["msg_type"]),
        )
        assert "execute_result" in echoed  # Out[N], _, _N and user_ns_hidden hold it now
        k.run("w = weakref.ref(nbmodels.get_manager().get('clf').bert.embeddings.word_embeddings.weight)")
        plain = shown(k, "%unload_model clf")
        assert "force would:" in plain and "del Out[" in plain and "user_ns_hidden['_']" in plain, plain
        assert "force cannot free it" not in plain and "class attribute" not in plain, plain
        forced = shown(k, "%unload_model clf --force")
        result = json.loads(k.run("gc.collect(); print(json.dumps({'alive': w() is not None}))").splitlines()[-1])
        assert not result["alive"], forced


def test_force_from_inside_a_running_cell_keeps_the_names_that_cell_uses(tmp_path: Path) -> None:
    """A cleanup called from a training loop must not delete ``net``, ``opt`` or ``loss`` under it."""
    with kernel(tmp_path) as k:
        k.run("%load_ext nbmodels\nimport torch, nbmodels, weakref, gc, json")
        cell = (
            "net = nbmodels.get_manager().load('net', 'demo:mlp', hidden=16)\n"
            "opt = torch.optim.SGD(net.parameters(), lr=0.1)\n"
            "for step in range(2):\n"
            "    loss = net(torch.randn(4, 64)).pow(2).mean()\n"
            "    loss.backward(); opt.step(); opt.zero_grad()\n"
            "    if step == 0:\n"
            "        report = get_ipython().run_line_magic('model_cleanup', '--force --quiet')\n"
            "names = [n in globals() for n in ('net', 'opt', 'loss')]\n"
            "print(json.dumps({'names': names, 'loaded': len(nbmodels.get_manager())}))"
        )
        outcome: dict[str, Any] = json.loads(k.run(cell).splitlines()[-1])
        assert outcome == {"names": [True, True, True], "loaded": 0}
        k.run("w = weakref.ref(next(net.parameters()))\ndel net, opt, loss, report\ngc.collect()")
        assert k.run("print(w() is None)").strip() == "True"
