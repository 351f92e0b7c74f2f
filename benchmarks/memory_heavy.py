"""``%memory`` in a heavy notebook: where every byte is, against one gc pass in the same process.

A realistic heavy session, in a fresh interpreter: transformers and
sentence-transformers imported (a few hundred thousand objects tracked by the
garbage collector), a managed model, a user's own net with its optimizer, a
list of losses whose graphs keep activations, echoed outputs, a failed cell
whose traceback keeps a local, and a million-item dataset of plain tuples.
Then, on a real InteractiveShell with the extension:

- ``%memory`` (median of several calls) and ``%memory --diff`` after a cell
  that adds a tensor;
- the share of live tensor bytes it names (attributed ÷ all live storages);
- one ``gc.collect()`` in the same process, for scale: the target is that
  ``%memory`` costs no more than one collection.
"""

from __future__ import annotations

import statistics
import sys
import time
from typing import Any

from benchmarks.common import Figure, cell_runner, child_figures, pick, print_child_figures

SESSION = """
mgr.load('m', 'demo:transformer', size_mb={size_mb})
net = torch.nn.Sequential(torch.nn.Linear(512, 1024), torch.nn.ReLU(), torch.nn.Linear(1024, 512))
opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
batch = torch.randn(256, 512)
losses = []
for step in range(4):
    loss = net(batch).pow(2).mean()
    loss.backward(retain_graph=True)
    opt.step()
    losses.append(loss)
data = [(i, str(i)) for i in range({items})]
"""
FAILING = "def evaluate():\n    scratch = torch.ones(2**20)\n    raise ValueError('bad metric')\n"


def _child(size_mb: str, items: str, rounds: str) -> None:
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
    cell(SESSION.format(size_mb=size_mb, items=items))
    cell("torch.ones(2**19)")  # echoed: Out[N] holds it
    cell(FAILING)
    cell("evaluate()", fails=True)
    gc.collect()
    figures: dict[str, Any] = {"objects": len(gc.get_objects())}

    def timed(line: str) -> tuple[float, Any]:
        started = time.perf_counter()
        result = ip.run_line_magic("memory", line)
        return time.perf_counter() - started, result

    def collect() -> float:
        started = time.perf_counter()
        gc.collect()
        return time.perf_counter() - started

    # Alternating pairs (%memory, then one gc.collect()), so both see the same machine load.
    plain, ratios, collections = [], [], []
    for _ in range(int(rounds)):
        seconds, report = timed("")
        plain.append(seconds)
        collections.append(collect())
        ratios.append(seconds / collections[-1])
    figures["memory_ms"] = statistics.median(plain) * 1000
    figures["memory_ratio"] = statistics.median(ratios)
    figures["attributed"] = report.fraction_attributed()
    figures["rows"] = len(report.rows)
    del report
    cell("extras = []")
    diffs, diff_ratios = [], []
    for _ in range(int(rounds)):
        cell("extras.append(torch.ones(2**18))")  # a training loop that grows
        seconds, changes = timed("--diff")
        diffs.append(seconds)
        collections.append(collect())
        diff_ratios.append(seconds / collections[-1])
        if not changes.added:
            raise RuntimeError("--diff saw nothing added: the scenario measures nothing")
    figures["diff_ms"] = statistics.median(diffs) * 1000
    figures["diff_ratio"] = statistics.median(diff_ratios)
    figures["gc_ms"] = statistics.median(collections) * 1000
    print_child_figures(figures)


def run() -> list[Figure]:
    size_mb, items, rounds = pick(40, 4), pick(1_000_000, 10_000), pick(7, 2)
    found = child_figures("memory_heavy", size_mb, items, rounds)
    where = (
        f"{found['objects']:,} objects tracked by gc; {items:,} plain items; demo:transformer {size_mb} MB; "
        f"{found['rows']} rows; median of {rounds}"
    )
    return [
        Figure("heavy notebook: objects tracked by gc", found["objects"], "objects", note="transformers imported"),
        Figure("heavy notebook: %memory", found["memory_ms"], "ms", note=where),
        Figure("heavy notebook: %memory --diff", found["diff_ms"], "ms", note=where),
        Figure("one gc.collect() in the same session", found["gc_ms"], "ms", note="for scale"),
        Figure("%memory ÷ one gc.collect()", found["memory_ratio"], "ratio", target=1.0, note="alternating pairs"),
        Figure("%memory --diff ÷ one gc.collect()", found["diff_ratio"], "ratio", target=1.0, note="alternating pairs"),
        Figure(
            "heavy notebook: live tensor bytes %memory names",
            found["attributed"],
            "fraction",
            target=0.99,
            better=">=",
        ),
    ]


if __name__ == "__main__":
    from benchmarks.__main__ import main

    sys.exit(main(["memory_heavy", *sys.argv[1:]]))
