"""Force in a heavy notebook: the report and the forced release, end to end, against one gc pass.

A realistic heavy session, in a fresh interpreter: transformers and
sentence-transformers imported (a few hundred thousand objects tracked by the
garbage collector), a training loop's variables (an optimizer, a list of
losses whose last entry keeps its graph, a metrics dict), and the model held
in three places: a variable, an echoed output, a dict item. Then, on a real
InteractiveShell with the extension:

- the report: ``mgr.unload(name)`` of a model something still holds, which
  names every holder and shows the plan (median of several releases);
- force: ``mgr.unload(name, force=True)``, end to end (median over rounds,
  the session rebuilt for each);
- the same with a failed cell in the history (a traceback that holds the
  model): the printer leaves reference cycles behind, so one gc pass runs;
- the same beside a million-item list of data defined before the holders
  (``data = [(i, str(i)) for i in range(1_000_000)]``): the search must cost
  what the model's neighbourhood costs, not what the user's data does;
- for scale, one ``gc.collect()`` in the same process: what the naive way
  (and every search that collected first) pays.
"""

from __future__ import annotations

import statistics
import sys
import time
from typing import Any

from benchmarks.common import Figure, cell_runner, child_figures, pick, print_child_figures

DATA = "data = [(i, str(i)) for i in range({items})]\n"
SESSION = """
model = mgr.load('m', 'demo:transformer', size_mb={size_mb})
opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
losses, metrics = [], {{'epoch': 0}}
tokens = torch.randint(0, 100, (4, 16))
for step in range(3):
    loss = model(tokens).float().pow(2).mean()
    loss.backward()
    opt.step()
    opt.zero_grad()
    losses.append(loss.item())
losses.append(loss)
metrics['last'] = loss
metrics['epoch'] += 1
cache = {{'model': model, 'note': 'kept'}}
"""
FAILING = "def evaluate(m):\n    y = m(tokens)\n    raise ValueError('bad metric')\n"


def _child(size_mb: str, rounds: str, items: str) -> None:
    import gc

    import sentence_transformers  # noqa: F401 - a heavy notebook imports these
    import transformers  # noqa: F401
    from IPython.core.interactiveshell import InteractiveShell

    ip = InteractiveShell.instance()

    cell = cell_runner(ip)

    ip.run_line_magic("load_ext", "nbmodels")
    cell("import torch, nbmodels\nmgr = nbmodels.get_manager()")
    for i in range(30):
        cell(f"{i} * 2")  # a history of outputs, as a long-lived notebook has
    figures: dict[str, Any] = {"objects": len(gc.get_objects())}

    def timed(code: str) -> float:
        started = time.perf_counter()
        cell(code)
        return time.perf_counter() - started

    for key in ("plain", "failing", "data"):
        failing = key == "failing"
        reports: list[float] = []
        forced: list[float] = []
        freed: list[bool] = []
        for _ in range(int(rounds)):
            cell((DATA.format(items=items) if key == "data" else "data = None\n") + SESSION.format(size_mb=size_mb))
            cell("model")  # echoed: Out[N], _N, _ hold it
            if failing:
                cell(FAILING)
                cell("evaluate(model)", fails=True)
            cell("del model")  # the user's own variable goes; the echo, the dict and the loop still hold it
            reports.append(timed("report = mgr.unload('m')"))
            if ip.user_ns["report"].ok:
                raise RuntimeError("the model was not held: the scenario measures nothing")
            forced.append(timed("report = mgr.unload('m', force=True)"))
            freed.append(bool(ip.user_ns["report"].ok))
            cell("del report")
        figures[f"report_{key}"] = statistics.median(reports) * 1000
        figures[f"force_{key}"] = statistics.median(forced) * 1000
        figures[f"freed_{key}"] = sum(freed) / len(freed)
    collections = []
    for _ in range(5):
        started = time.perf_counter()
        gc.collect()
        collections.append(time.perf_counter() - started)
    figures["gc_ms"] = statistics.median(collections) * 1000
    print_child_figures(figures)


def run() -> list[Figure]:
    size_mb, rounds, items = pick(40, 4), pick(7, 2), pick(1_000_000, 10_000)
    found = child_figures("force_heavy", size_mb, rounds, items)
    where = f"{found['objects']:,} objects tracked by gc; demo:transformer {size_mb} MB; median of {rounds}"
    gc_ms = found["gc_ms"]
    return [
        Figure("heavy notebook: report of a held model", found["report_plain"], "ms", target=150.0, note=where),
        Figure("heavy notebook: force, end to end", found["force_plain"], "ms", target=150.0, note=where),
        Figure("heavy notebook: objects tracked by gc", found["objects"], "objects", note="transformers imported"),
        Figure("heavy notebook: force freed the model", found["freed_plain"] * rounds, f"of {rounds}", rounds, ">="),
        Figure(
            "heavy notebook with a failed cell: force, end to end",
            found["force_failing"],
            "ms",
            note="the traceback printer leaves cycles that hold the frames: one gc pass runs first",
        ),
        Figure(
            "heavy notebook with a failed cell: force freed the model",
            found["freed_failing"] * rounds,
            f"of {rounds}",
            target=rounds,
            better=">=",
        ),
        Figure("one gc.collect() in the same session", gc_ms, "ms", note="what collecting first would cost"),
        Figure("force ÷ one gc.collect()", found["force_plain"] / gc_ms, "ratio", target=1.0),
        Figure(f"beside {items:,} items of data: report", found["report_data"], "ms", target=150.0, note=where),
        Figure(f"beside {items:,} items of data: force", found["force_data"], "ms", target=150.0, note=where),
        Figure(f"beside {items:,} items of data: report ÷ gc.collect()", found["report_data"] / gc_ms, "ratio", 0.5),
        Figure(f"beside {items:,} items of data: force ÷ gc.collect()", found["force_data"] / gc_ms, "ratio", 0.5),
        Figure(
            f"beside {items:,} items of data: force freed the model",
            found["freed_data"] * rounds,
            f"of {rounds}",
            rounds,
            ">=",
        ),
    ]


if __name__ == "__main__":
    from benchmarks.__main__ import main

    sys.exit(main(["force_heavy", *sys.argv[1:]]))
