"""Leak scenarios: how much of a model's memory comes back, the naive way against nbmodels with force.

Each scenario keeps a model alive the way notebooks do (an echoed result, a
forgotten alias, an exception's locals, a widget callback, ``%debug``, an output
with autograd history, an optimizer) on a real InteractiveShell. Then, in a
fresh interpreter each, so RSS readings start clean:

- naive: ``del model; gc.collect(); torch.cuda.empty_cache()``
- nbmodels: ``mgr.unload(name, force=True)`` (what ``%unload_model name --force`` runs)

The figure is the fall of the process RSS over the model's accounted bytes.
A last scenario holds the model from another module's global, which force
must not touch: there both reclaim nothing, by design. The holder search is
timed on the scenario with every holder at once in a notebook-sized namespace.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import Figure, cell_runner, pick

ROOT = Path(__file__).resolve().parent.parent
MARK = "NBMODELS-BENCH "
ROUNDS = 7


@dataclass(frozen=True)
class Scenario:
    name: str
    cells: tuple[str, ...]
    failing: tuple[str, ...] = ()  # cells that raise, as they would in a notebook
    debug: bool = False  # run %debug (and quit it) after the failing cells
    freeable: bool = True  # force is expected to free it


ECHO = ("model",)
ALIAS = ("best = {'epoch': 3, 'model': model}",)
EXCEPTION_DEF = ("def evaluate(m):\n    batch = torch.zeros(1, 3)  # wrong width\n    return m(batch)",)
EXCEPTION = ("evaluate(model)",)
WIDGET = (
    "def predictor(m):\n    return lambda button: m(torch.zeros(1, 64))\n"
    "button = ipywidgets.Button(description='Predict')\nbutton.on_click(predictor(model))",
)

SCENARIOS = (
    Scenario("echoed result (Out, _, _N)", ECHO),
    Scenario("forgotten alias in a dict", ALIAS),
    Scenario("exception locals (sys.last_*, traceback)", EXCEPTION_DEF, EXCEPTION),
    Scenario("widget callback (Button.on_click)", WIDGET),
    Scenario("%debug after an error", EXCEPTION_DEF, EXCEPTION, debug=True),
    Scenario("output with autograd history", ("y = model(torch.randn(8, 64))",)),
    Scenario("optimizer holding the parameters", ("opt = torch.optim.SGD(model.parameters(), lr=0.1)",)),
    Scenario("all of the above at once", ECHO + ALIAS + EXCEPTION_DEF + WIDGET, EXCEPTION),
    Scenario(
        "a global of another module (force must refuse)",
        ("import types\nhelpers = sys.modules['helpers'] = types.ModuleType('helpers')\nhelpers.CACHE = model",),
        freeable=False,
    ),
)

TYPICAL_NAMESPACE = """
import math, random
values = {f"v{i}": i * 0.5 for i in range(100)}
globals().update(values)
rows = [list(range(50)) for _ in range(200)]
table = {f"col{i}": [random.random() for _ in range(100)] for i in range(20)}
tensors = [torch.randn(32, 32) for _ in range(20)]
def f0(x):
    return math.sqrt(x)
helpers = [lambda x, i=i: x + i for i in range(50)]
"""


def _child(scenario_index: int | str, method: str, size_mb: float | str) -> None:
    """In a fresh interpreter: build the scenario on an InteractiveShell, release the model, print figures."""
    import gc

    from IPython.core.interactiveshell import InteractiveShell

    from nbmodels.core import memory

    scenario = SCENARIOS[int(scenario_index)]
    size_mb = float(size_mb)
    ip = InteractiveShell.instance()

    cell = cell_runner(ip)

    ip.run_line_magic("load_ext", "nbmodels")
    cell("import gc, sys, torch, ipywidgets, nbmodels\nmgr = nbmodels.get_manager()")
    typical = method == "nbmodels" and scenario is SCENARIOS[7]
    if typical:
        cell(TYPICAL_NAMESPACE)
        for i in range(60):
            cell(f"{i} * 2")  # a history of outputs, as a long-lived notebook has
    if method == "naive":
        cell(f"from nbmodels.core import demo\nmodel = demo.mlp(size_mb={size_mb})")
    else:
        cell(f"model = mgr.load('m', 'demo:mlp', size_mb={size_mb})")
    model_bytes = sum(memory.footprint(ip.user_ns["model"]).bytes_by_device.values())
    for code in scenario.cells:
        cell(code)
    for code in scenario.failing:
        cell(code, fails=True)
    if scenario.debug:
        ip.run_line_magic("debug", "")  # stdin says "quit"
    gc.collect()
    memory.trim_heap()

    searches: list[float] = []
    objects = len(gc.get_objects())
    before = memory.process_rss()
    if method == "naive":
        cell("del model\ngc.collect()\ntorch.cuda.empty_cache()")
        after = memory.process_rss()
    else:
        cell("del model")  # the user's own variable; force would remove it too
        if typical:
            for _ in range(ROUNDS):  # without force, each unload of a survivor searches again
                report = ip.user_ns["mgr"].unload("m")
                searches.append(report.hunt_seconds)
        report = ip.user_ns["mgr"].unload("m", force=True)
        after = memory.process_rss()
    result: dict[str, Any] = {"reclaimed": (before - after) / model_bytes, "bytes": model_bytes, "objects": objects}
    if searches:
        result["search_ms"] = statistics.median(searches) * 1000
    print("\n" + MARK + json.dumps(result), flush=True)


def _run_child(index: int, method: str, size_mb: float) -> dict[str, Any]:
    code = "import sys; from benchmarks.leak_scenarios import _child; _child(*sys.argv[1:])"
    done = subprocess.run(
        [sys.executable, "-c", code, str(index), method, str(size_mb)],
        cwd=ROOT,
        input="quit\n",  # for %debug
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    for line in reversed(done.stdout.splitlines()):
        if MARK in line:  # after a debugger prompt, on the prompt's line
            result: dict[str, Any] = json.loads(line.split(MARK, 1)[1])
            return result
    raise RuntimeError(
        f"{SCENARIOS[index].name} ({method}) printed no figures:\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
    )


def run() -> list[Figure]:
    size_mb = pick(150, 20)
    figures: list[Figure] = []
    search: Figure | None = None
    for index, scenario in enumerate(SCENARIOS):
        naive = _run_child(index, "naive", size_mb)
        forced = _run_child(index, "nbmodels", size_mb)
        note = f"{naive['bytes'] / 2**20:.0f} MiB model; naive: del model; gc.collect(); torch.cuda.empty_cache()"
        figures.append(Figure(f"{scenario.name}: naive reclaims", naive["reclaimed"], "fraction", note=note))
        target = 0.95 if scenario.freeable else None
        why = "force cannot remove a global of another module, so it removes nothing" if not scenario.freeable else ""
        figures.append(
            Figure(
                f"{scenario.name}: nbmodels force reclaims",
                forced["reclaimed"],
                "fraction",
                target=target,
                better=">=",
                note=why or "mgr.unload(name, force=True), i.e. %unload_model name --force",
            )
        )
        if "search_ms" in forced:
            search = Figure(
                "holder search, all holders, notebook-sized namespace",
                forced["search_ms"],
                "ms",
                target=200.0,
                note=f"median of {ROUNDS} unloads without force; {forced['objects']:,} objects tracked by gc",
            )
    if search is not None:
        figures.append(search)
    return figures


if __name__ == "__main__":
    from benchmarks.__main__ import main

    sys.exit(main(["leak_scenarios", *sys.argv[1:]]))
