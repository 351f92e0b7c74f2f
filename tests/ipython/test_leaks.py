"""The leak hunter on a real InteractiveShell: IPython's hidden holders, named, and removed by force.

Each holder kind alone (an echoed result, aliases, an exception's locals along
its ``__context__`` chain, ``%debug``, a widget callback, a trait observer, the
``user_ns_hidden['_']`` that ``%reset -f out`` leaves), then all of them at once
on a 150 MB model, where memory is measured: the naive ``del; gc.collect();
empty_cache()`` gives nothing back, force gives back the model's bytes, and
variables that do not lead to the model are left alone. Cells run with
``store_history=True``, as in a notebook.
"""

from __future__ import annotations

import gc
import io
import sys
import weakref
from collections.abc import Iterator
from typing import Any

import psutil
import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

from nbmodels import ModelManager, ReleaseReport
from nbmodels.ipython.namespace import IPythonHolders
from tests.ipython.conftest import run

MB = 1024 * 1024


@pytest.fixture
def shell(ip: InteractiveShell, mgr: ModelManager) -> Iterator[InteractiveShell]:
    """The shell with ``mgr`` bound in it; the last error and %debug state are cleared afterwards."""
    run(ip, "import gc, nbmodels, torch, ipywidgets\nmgr = nbmodels.get_manager()")
    try:
        yield ip
    finally:
        for name in ("last_type", "last_value", "last_traceback", "last_exc"):
            if hasattr(sys, name):
                delattr(sys, name)
        ip.InteractiveTB.tb = None
        ip.InteractiveTB.pdb = None
        ip.last_execution_result = None
        ip.displayhook.exec_result = None


def model_ref(shell: InteractiveShell, name: str) -> weakref.ref[Any]:
    return weakref.ref(shell.user_ns["mgr"].get(name))


def model_ref_weights(shell: InteractiveShell, name: str = "m") -> weakref.ref[Any]:
    """A weak reference to the first weight of ``name`` (the module object itself may be gone)."""
    return weakref.ref(next(shell.user_ns["mgr"].get(name).parameters()))


def fail(shell: InteractiveShell, code: str) -> None:
    result = shell.run_cell(code, store_history=True)
    assert result.error_in_exec is not None


def unload(shell: InteractiveShell, name: str, *, force: bool = False, allow: tuple[str, ...] = ()) -> ReleaseReport:
    """``mgr.unload`` run as a cell, as a notebook user runs it."""
    shell.user_ns["_nbm_report"] = None
    run(shell, f"_nbm_report = mgr.unload({name!r}, force={force}, allow={allow!r})")
    report = shell.user_ns.pop("_nbm_report")
    assert isinstance(report, ReleaseReport)
    return report


def paths(report: ReleaseReport) -> list[str]:
    (alive,) = report.still_alive
    return [h.path for h in alive.holders]


def rss() -> int:
    return int(psutil.Process().memory_info().rss)


def test_the_extension_registers_the_ipython_holders_and_unloading_it_removes_them(
    ip: InteractiveShell, mgr: ModelManager
) -> None:
    assert [type(finder) for finder in mgr._holder_finders] == [IPythonHolders]
    ip.run_line_magic("unload_ext", "nbmodels")
    assert mgr._holder_finders == []
    ip.run_line_magic("load_ext", "nbmodels")


def test_an_echoed_model_is_held_by_the_output_history_and_force_cuts_only_its_entries(
    shell: InteractiveShell,
) -> None:
    run(shell, "1 + 1")
    before = shell.execution_count - 1
    run(shell, "mgr.load('m', 'demo:mlp', hidden=32)")
    count = shell.execution_count - 1
    ref = model_ref(shell, "m")

    report = unload(shell, "m")
    actions = [a.text() for a in report.still_alive[0].plan.actions]
    assert sorted(actions) == sorted(
        [
            f"del _{count}",
            "del _",
            f"del Out[{count}]",
            "get_ipython().displayhook._ = None",
            f"del get_ipython().user_ns_hidden['_{count}']",
            "del get_ipython().user_ns_hidden['_']",
            "get_ipython().last_execution_result.result = None",  # what IPython keeps of the last cell
        ]
    )
    assert {h.kind for h in report.still_alive[0].holders} == {"output"}
    assert report.still_alive[0].fix == "%unload_model m --force"
    assert ref() is not None and count in shell.user_ns["Out"]

    forced = unload(shell, "m", force=True)
    assert forced.ok and ref() is None
    out = shell.user_ns["Out"]
    assert out is shell.user_ns["_oh"] is shell.history_manager.output_hist  # the history dicts stay, whole
    assert count not in out and out[before] == 2 and shell.user_ns[f"_{before}"] == 2
    assert f"_{count}" not in shell.user_ns_hidden
    assert run(shell, "41 + 1") == 42 and shell.user_ns["_"] == 42 and out[shell.execution_count - 1] == 42


def test_an_echoed_tensor_with_autograd_history_costs_its_entries_not_out(shell: InteractiveShell) -> None:
    """The first class of the force issue: ``del _oh`` and ``del Out`` broke every later cell."""
    run(shell, "model = mgr.load('m', 'demo:mlp', hidden=32)\nmodel(torch.randn(2, 64)).sum()")
    count = shell.execution_count - 1
    run(shell, "del model")
    ref = model_ref_weights(shell)

    forced = unload(shell, "m", force=True)
    assert forced.ok and ref() is None
    assert {"Out", "_oh", "In", "_ih"} <= set(shell.user_ns) and count not in shell.user_ns["Out"]
    assert run(shell, "1 + 1") == 2 and shell.user_ns["Out"][shell.execution_count - 1] == 2


def test_aliases_and_containers_lose_only_what_leads_to_the_model(shell: InteractiveShell) -> None:
    run(shell, "model = mgr.load('m', 'demo:mlp', hidden=32)\nalias = model\nmodels = {'m': model}\nlr = 0.1")
    ref = model_ref(shell, "m")
    assert paths(unload(shell, "m")) == ["model", "alias", "models['m']"]

    forced = unload(shell, "m", force=True)
    assert ref() is None
    assert [a.text() for a in forced.removed["m"]] == ["del model", "del alias", "del models['m']"]
    assert shell.user_ns["lr"] == 0.1 and shell.user_ns["models"] == {}  # the dict itself stays


def test_a_training_loop_keeps_its_losses_metrics_and_data(shell: InteractiveShell) -> None:
    """A list of losses and a metrics dict hold tensors whose graphs hold the weights: the items go, not the lists."""
    run(
        shell,
        "model = mgr.load('m', 'demo:mlp', hidden=32)\n"
        "opt = torch.optim.AdamW(model.parameters(), lr=1e-3)\n"
        "history, metrics = [], {'epochs': 0}\n"
        "batches = [torch.randn(8, 64) for _ in range(3)]\n"
        "for x in batches:\n"
        "    loss = model(x).pow(2).mean()\n"
        "    loss.backward()\n"
        "    opt.step()\n"
        "    opt.zero_grad()\n"
        "    history.append(loss.item())\n"
        "metrics['last'] = loss\n"
        "metrics['epochs'] += 1\n"
        "history.append(loss)",
    )
    ref = model_ref(shell, "m")
    data = shell.user_ns["batches"]

    report = unload(shell, "m", force=True)

    assert ref() is None and report.ok
    assert sorted(a.text() for a in report.removed["m"]) == sorted(
        ["del model", "del opt", "del loss", "del metrics['last']", "history[3] = None"]
    )
    ns = shell.user_ns
    assert len(ns["history"]) == 4 and all(isinstance(v, float) for v in ns["history"][:3]) and ns["history"][3] is None
    assert ns["metrics"] == {"epochs": 1} and ns["batches"] is data and "x" in ns


def test_an_echoed_container_keeps_its_output_entry_and_loses_only_the_item(shell: InteractiveShell) -> None:
    run(shell, "cache = {'m': mgr.load('m', 'demo:mlp', hidden=32), 'k': 1}")
    run(shell, "cache")  # Out[N], _ and _N now hold the dict too
    ref = model_ref(shell, "m")
    echoed = max(shell.user_ns["Out"])  # its number only: a copy of Out here would itself hold the model
    assert paths(unload(shell, "m")) == ["cache['m']"]

    forced = unload(shell, "m", force=True)
    assert ref() is None
    assert [a.text() for a in forced.removed["m"]] == ["del cache['m']"]
    assert shell.user_ns["cache"] == {"k": 1} and shell.user_ns["Out"][echoed] is shell.user_ns["cache"]


def test_an_exception_holds_its_frames_locals_along_the_context_chain(shell: InteractiveShell) -> None:
    run(
        shell,
        "def load_data(m):\n"
        "    x = m\n"
        "    raise KeyError('missing')\n"
        "def train(box):\n"
        "    try:\n"
        "        load_data(box.pop())\n"
        "    except KeyError:\n"
        "        raise RuntimeError('training failed')\n",
    )
    fail(shell, "train([mgr.load('m', 'demo:mlp', hidden=32)])")
    ref = model_ref(shell, "m")

    report = unload(shell, "m")
    found = paths(report)
    # the last traceback is train()'s; load_data()'s frame hangs off the error train() was handling
    assert "sys.last_value → the error it was raised during → traceback → local 'm' of load_data()" in found
    assert {h.kind for h in report.still_alive[0].holders} == {"exception"}

    assert unload(shell, "m", force=True).ok and ref() is None
    assert not hasattr(sys, "last_value") and shell.InteractiveTB.tb is None
    fail(shell, "1 / 0")  # the next error is kept as usual
    assert isinstance(sys.last_value, ZeroDivisionError)


def test_a_traceback_local_with_a_graph_is_found_and_debug_still_works(
    shell: InteractiveShell, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Classes 4 and 5: ``y = m(x)`` in a traceback keeps the weights; after force, %debug says so plainly."""
    run(shell, "def evaluate(m):\n    y = m(torch.randn(2, 64))\n    raise ValueError('bad metric')\n")
    run(shell, "model = mgr.load('m', 'demo:mlp', hidden=32)")
    fail(shell, "evaluate(model)")
    run(shell, "del model")
    ref = model_ref_weights(shell)
    report = unload(shell, "m")
    assert any("local 'y' of evaluate()" in p or "local 'm' of evaluate()" in p for p in paths(report))

    assert unload(shell, "m", force=True).ok and ref() is None
    monkeypatch.setattr(sys, "stdin", io.StringIO("quit\n"))
    shell.run_line_magic("debug", "")  # no 'NoneType' object has no attribute 'tb_frame'
    assert "No traceback has been produced" in capsys.readouterr().err or not hasattr(sys, "last_traceback")


def test_the_debugger_left_by_debug_is_a_holder(shell: InteractiveShell, monkeypatch: pytest.MonkeyPatch) -> None:
    run(shell, "def step(m):\n    batch = m\n    raise ValueError('bad batch')\n")
    fail(shell, "step(mgr.load('m', 'demo:mlp', hidden=32))")
    monkeypatch.setattr(sys, "stdin", io.StringIO("quit\n"))
    shell.run_line_magic("debug", "")
    ref = model_ref(shell, "m")

    report = unload(shell, "m")
    debugger = [a for a in report.still_alive[0].plan.actions if a.kind == "debugger"]
    assert debugger and debugger[0].where.startswith("InteractiveTB.pdb")
    assert debugger[0].command == "get_ipython().InteractiveTB.pdb = None"

    assert unload(shell, "m", force=True).ok and ref() is None and shell.InteractiveTB.pdb is None


def test_a_widget_callback_is_unregistered_and_the_widget_stays(shell: InteractiveShell) -> None:
    run(
        shell,
        "clicks = []\n"
        "def predictor(m):\n"
        "    def on_click(button):\n"
        "        clicks.append(type(m).__name__)\n"
        "    return on_click\n"
        "button = ipywidgets.Button(description='Predict')\n"
        "button.on_click(predictor(mgr.load('m', 'demo:mlp', hidden=32)))\n"
        "button.on_click(lambda button: clicks.append('other'))\n",
    )
    ref = model_ref(shell, "m")
    report = unload(shell, "m")
    (action,) = report.still_alive[0].plan.actions
    assert action.kind == "callback"
    assert action.where == "the on_click callback #0 of button → closure variable 'm' of predictor.<locals>.on_click()"
    assert action.command == ""  # no Python names a closure: said in words, and force does it
    assert action.description == "remove the on_click callback #0 of button"

    assert unload(shell, "m", force=True).ok and ref() is None
    run(shell, "button.click()")
    assert shell.user_ns["clicks"] == ["other"]  # the widget and its other callback are untouched


def test_a_named_callback_gets_the_command_that_unregisters_it(shell: InteractiveShell) -> None:
    run(
        shell,
        "model = mgr.load('m', 'demo:mlp', hidden=32)\n"
        "def predict(button, m=model):\n"
        "    return m\n"
        "button = ipywidgets.Button()\n"
        "button.on_click(predict)\n"
        "del model",
    )
    ref = model_ref(shell, "m")
    plan = unload(shell, "m").still_alive[0].plan
    commands = {a.command for a in plan.actions}
    assert "button.on_click(predict, remove=True)" in commands and "del predict" in commands
    for command in commands:
        compile(command, "<cell>", "exec")
    assert unload(shell, "m", force=True, allow=("predict",)).ok and ref() is None


def test_a_callback_of_a_widget_no_variable_names_is_said_in_words(shell: InteractiveShell) -> None:
    run(shell, "ipywidgets.Button().on_click((lambda m: (lambda button: m))(mgr.load('m', 'demo:mlp', hidden=32)))")
    ref = model_ref(shell, "m")
    (action,) = unload(shell, "m").still_alive[0].plan.actions
    assert action.where.startswith("the on_click callback #0 of a Button widget with no variable")
    assert action.command == ""
    assert unload(shell, "m", force=True).ok and ref() is None


def test_a_trait_observer_is_unobserved(shell: InteractiveShell) -> None:
    run(
        shell,
        "slider = ipywidgets.IntSlider()\n"
        "slider.observe(lambda change, m=mgr.load('m', 'demo:mlp', hidden=32): m(torch.zeros(1, 64)), 'value')\n",
    )
    ref = model_ref(shell, "m")
    (action,) = unload(shell, "m").still_alive[0].plan.actions
    assert action.where == "the observer #0 of slider.value → default argument 'm' of <lambda>()"
    assert unload(shell, "m", force=True).ok and ref() is None
    run(shell, "slider.value = 3")


def test_reset_out_leaves_the_hidden_underscore_which_force_removes(shell: InteractiveShell) -> None:
    run(shell, "mgr.load('m', 'demo:mlp', hidden=32)")
    shell.run_line_magic("reset", "-f out")
    ref = model_ref(shell, "m")
    report = unload(shell, "m")
    assert "get_ipython().user_ns_hidden['_']" in paths(report)
    assert unload(shell, "m", force=True).ok and ref() is None


def test_all_holders_at_once_on_150_mb_naive_frees_nothing_force_frees_the_model(shell: InteractiveShell) -> None:
    run(
        shell,
        "data = list(range(1000))\n"
        "settings = {'lr': 0.1}\n"
        "keep = mgr.load('keep', 'demo:mlp', hidden=32)\n"
        "other_button = ipywidgets.Button()\n"
        "def helper(x):\n"
        "    return x + 1\n",
    )
    run(shell, "model = mgr.load('big', 'demo:mlp', size_mb=150)")
    run(shell, "model")  # echoed: Out, _N, _, and their hidden copies
    run(shell, "alias = model\nlayers = [model[0], model]")
    run(
        shell,
        "def predictor(m):\n"
        "    return lambda button: m\n"
        "button = ipywidgets.Button()\n"
        "button.on_click(predictor(model))\n"
        "def evaluate(box):\n"
        "    net = box.pop()\n"
        "    raise ValueError('evaluation failed')\n",
    )
    fail(shell, "evaluate([model])")
    model_bytes = shell.user_ns["mgr"].info("big").total_bytes
    assert model_bytes is not None and model_bytes > 140 * MB
    ref = model_ref(shell, "big")
    unrelated = {name: shell.user_ns[name] for name in ("data", "settings", "keep", "other_button", "helper")}

    before = rss()
    run(shell, "del model, alias, layers\ngc.collect()\ntorch.cuda.empty_cache()")  # the naive way
    report = unload(shell, "big")  # and the manager lets go, without force
    naive_freed = before - rss()
    assert ref() is not None and report.still_alive
    assert naive_freed < 0.05 * model_bytes
    assert {h.kind for h in report.still_alive[0].holders} == {"output", "exception", "callback"}

    forced = unload(shell, "big", force=True)
    force_freed = before - rss()
    assert ref() is None and forced.ok
    assert force_freed >= 0.95 * model_bytes, (force_freed / MB, model_bytes / MB)
    assert all(shell.user_ns[name] is value for name, value in unrelated.items())
    assert "keep" in shell.user_ns["mgr"] and len(shell.user_ns["other_button"]._click_handlers.callbacks) == 0


def test_the_magics_show_force_and_dry_run_the_plan(shell: InteractiveShell) -> None:
    run(shell, "model = mgr.load('m', 'demo:mlp', hidden=32)\npair = (model, 0.9)\nmodel")
    ref = model_ref(shell, "m")
    report = shell.run_line_magic("unload_model", "m")
    assert ref() is not None and report.still_alive[0].fix == "%unload_model m --force --allow pair"

    dry = shell.run_line_magic("unload_model", "m --force --dry-run")
    assert dry.dry_run and ref() is not None and "pair" in shell.user_ns and "model" in shell.user_ns
    report = shell.run_line_magic("unload_model", "m --force")
    assert ref() is not None and report.removed == {} and "model" in shell.user_ns  # pair needs naming first
    report = shell.run_line_magic("unload_model", "m --force --allow pair")
    assert (
        ref() is None and report.ok and report.forced and "model" not in shell.user_ns and "pair" not in shell.user_ns
    )

    run(shell, "a = mgr.load('a', 'demo:mlp', hidden=32)\nb = [mgr.load('b', 'demo:mlp', hidden=32)]")
    refs = [model_ref(shell, "a"), model_ref(shell, "b")]
    report = shell.run_line_magic("model_cleanup", "--force")
    gc.collect()
    assert report.ok and all(r() is None for r in refs)
    assert sorted(report.removed) == ["a", "b"] and shell.user_ns["b"] == [None]


def test_allow_without_force_is_a_one_line_usage_error(shell: InteractiveShell) -> None:
    run(shell, "model = mgr.load('m', 'demo:mlp', hidden=32)")
    with pytest.raises(UsageError, match="--allow names holders that force may remove"):
        shell.run_line_magic("unload_model", "m --allow pair")
    assert "m" in shell.user_ns["mgr"]


KERNEL_SCENARIO = [
    "%load_ext nbmodels",
    "import gc, json, psutil, torch, ipywidgets, nbmodels\n"
    "mgr = nbmodels.get_manager()\n"
    "def rss():\n"
    "    return psutil.Process().memory_info().rss\n"
    "data = list(range(1000))\n"
    "other = mgr.load('other', 'demo:mlp', hidden=32)\n"
    "model = mgr.load('big', 'demo:mlp', size_mb=150)\n"
    "model_bytes = mgr.info('big').total_bytes",
    "model",
    "alias = model\n"
    "button = ipywidgets.Button()\n"
    "button.on_click((lambda m: (lambda b: m))(model))\n"
    "def evaluate(box):\n"
    "    net = box.pop()\n"
    "    raise ValueError('evaluation failed')",
]
KERNEL_NAIVE = (
    "before = rss()\n"
    "del model, alias\n"
    "gc.collect()\n"
    "torch.cuda.empty_cache()\n"
    "report = mgr.unload('big')\n"
    "print(json.dumps({'naive': before - rss(), 'bytes': model_bytes, 'alive': bool(report.still_alive),"
    " 'fix': report.still_alive[0].fix}))"
)
KERNEL_FORCE = (
    "forced = %unload_model big --force\n"
    "print(json.dumps({'forced': before - rss(), 'ok': forced.ok, 'other': 'other' in mgr,"
    " 'data': data == list(range(1000)), 'button': 'button' in dir()}))"
)


@pytest.mark.slow
def test_on_a_real_kernel_force_gives_back_the_memory_the_naive_way_cannot(tmp_path: Any) -> None:
    import json

    from tests.ipython.kernels import TIMEOUT, kernel

    with kernel(tmp_path) as k:
        for cell in KERNEL_SCENARIO:
            k.run(cell)
        reply = k.client.execute_interactive("evaluate([model])", timeout=TIMEOUT, output_hook=lambda msg: None)
        assert reply["content"]["status"] == "error"
        naive = json.loads(k.run(KERNEL_NAIVE).strip().splitlines()[-1])
        assert naive["alive"] and naive["fix"] == "%unload_model big --force"
        assert naive["naive"] < 0.05 * naive["bytes"]
        forced = json.loads(k.run(KERNEL_FORCE).strip().splitlines()[-1])
        print("kernel:", naive, forced)
        assert forced["ok"] and forced["other"] and forced["data"] and forced["button"]
        assert forced["forced"] >= 0.95 * naive["bytes"], (forced["forced"], naive["bytes"])


AFTER_FORCE = [
    "%load_ext nbmodels",
    "import torch, nbmodels\n"
    "mgr = nbmodels.get_manager()\n"
    "model = mgr.load('m', 'demo:mlp', hidden=32)\n"
    "opt = torch.optim.SGD(model.parameters(), lr=0.1)\n"
    "losses = []\n"
    "for _ in range(3):\n"
    "    loss = model(torch.randn(4, 64)).pow(2).mean()\n"
    "    loss.backward(); opt.step(); opt.zero_grad()\n"
    "    losses.append(loss)",
    "loss",  # echoed: Out[N] holds a tensor whose graph holds the weights
    "def evaluate(m):\n    y = m(torch.randn(2, 64))\n    raise ValueError('bad metric')",
]


@pytest.mark.slow
def test_on_a_real_kernel_everything_works_after_force(tmp_path: Any) -> None:
    """After force: ``1 + 1``, ``Out``, ``%list_models`` and ``%debug`` behave as in a fresh session."""
    from tests.ipython.kernels import TIMEOUT, kernel

    with kernel(tmp_path) as k:
        for cell in AFTER_FORCE:
            k.run(cell)
        reply = k.client.execute_interactive("evaluate(model)", timeout=TIMEOUT, output_hook=lambda msg: None)
        assert reply["content"]["status"] == "error"
        k.run("report = %unload_model m --force")
        printed = k.run("print(report.ok, type(Out).__name__, type(_oh).__name__, len(losses), losses[-1])")
        assert printed.split() == ["True", "dict", "dict", "3", "None"]

        results: list[str] = []

        def collect(msg: dict[str, Any]) -> None:
            if msg["msg_type"] in ("execute_result", "stream"):
                content = msg["content"]
                results.append(content["data"]["text/plain"] if "data" in content else content["text"])

        k.client.execute_interactive("1 + 1", timeout=TIMEOUT, output_hook=collect)
        assert results == ["2"]
        assert k.run("print(Out[max(Out)], _)").split() == ["2", "2"]
        assert "no models loaded" in k.run("table = %list_models\nprint(table)")
        debug = k.run("%debug")
        assert "No traceback has been produced" in debug or debug == ""
        assert k.run("print(hasattr(__import__('sys'), 'last_traceback'))").strip() == "False"
