"""Check ``%memory`` on a real device: every holder named on it with its bytes, the commands that free them,
and the device's residue lines (on CUDA: the allocator's cache, what ``empty_cache`` gives back).

    python scripts/memory_check.py                 # on a machine with a CUDA GPU: cuda:0
    python scripts/memory_check.py --device cpu    # the same steps on the CPU (what the test suite runs)

It prints one line per check and exits 0 when every check passed, 1 when one failed, 2 when the device
is not there. Everything is real: an InteractiveShell with the extension, tensors on the device held by a
variable, an echoed output, an optimizer's state, a kept loss's autograd graph and a failed cell's local.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # runnable from a checkout without installing

import torch

MiB = 2**20

CELLS = [
    "import torch, nbmodels",
    "x = torch.ones(4 * 2**18, device=DEVICE)",  # 4 MiB
    "torch.ones(3 * 2**18, device=DEVICE)",  # echoed: Out[N], 3 MiB
    "net = torch.nn.Linear(1024, 1024).to(DEVICE)\n"
    "opt = torch.optim.Adam(net.parameters())\n"
    "inp = torch.randn(512, 1024, device=DEVICE)\n"
    "net(inp).sum().backward(); opt.step(); opt.zero_grad(set_to_none=True)\n"
    "losses = [(torch.relu(net(inp)) ** 2).sum()]",
    "def f():\n    big = torch.ones(5 * 2**18, device=DEVICE)\n    raise ValueError('boom')",
    "f()",
]


def near(actual: int, expected: int) -> bool:
    return abs(actual - expected) <= max(0.02 * expected, 1024)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda:0")
    device = parser.parse_args(argv).device
    if device.startswith("cuda"):
        if not torch.cuda.is_available() or (torch.device(device).index or 0) >= torch.cuda.device_count():
            print(f"memory_check: no CUDA device {device} here")
            return 2
        device = f"cuda:{torch.device(device).index or 0}"
    elif device != "cpu":
        print(f"memory_check: unknown device {device!r} (cpu or cuda:N)")
        return 2

    from IPython.core.interactiveshell import InteractiveShell

    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "nbmodels")
    ip.user_ns["DEVICE"] = device
    echoed = 0
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        for cell in CELLS:
            result = ip.run_cell(cell, store_history=True)
            if cell.startswith("torch.ones"):
                echoed = result.execution_count
    gc.collect()
    report: Any = ip.run_line_magic("memory", "")
    weights = 1024 * 1024 * 4 + 1024 * 4
    checks: list[tuple[str, bool, str]] = []

    def check(name: str, owner: str, expected: int, kind: str, command: str | None = None) -> None:
        try:
            row = report.row(owner, device)
        except KeyError:
            checks.append((name, False, f"no row {owner!r} on {device}"))
            return
        spelled = report.commands(row)
        ok = row.kind == kind and near(row.nbytes, expected) and (command is None or spelled == command)
        checks.append((name, ok, f"{row.owner}: {row.kind}, {row.nbytes:,} bytes, frees it: {spelled}"))

    check("a variable", "x", 4 * MiB, "variable", "del x")
    check("an echoed output", f"Out[{echoed}]", 3 * MiB, "output", f"get_ipython().del_var('_{echoed}')")
    check("a user's net", "net", weights, "variable")
    check("its optimizer's state", "opt", 2 * weights, "optimizer state", "opt.state.clear()")
    check("a kept loss's graph", "losses", 2 * MiB, "autograd graph", "del losses")
    check("a failed cell's local", "sys.last_traceback → local 'big' of f()", 5 * MiB, "traceback")
    share = report.fraction_attributed()
    checks.append(("every tensor byte named", share >= 0.99, f"{share:.3f} of {report.total:,} bytes"))

    def residue(start: str) -> Any:
        return next((r for r in report.residue if r.device == device and r.label.startswith(start)), None)

    if device == "cpu":
        rss = residue("process RSS")
        checks.append(("RSS beyond tensors", rss is not None and (rss.nbytes or 0) > 0, str(rss and rss.label)))
    else:
        cache = residue("allocator cache")
        checks.append(("allocator cache line", cache is not None, str(cache and cache.nbytes)))
        ip.run_cell("del x", store_history=True)
        before = torch.cuda.memory_reserved(device)
        command = cache.remedy.command if cache is not None else ""
        ip.run_cell(command, store_history=True)
        after = torch.cuda.memory_reserved(device)
        checks.append(("empty_cache as written", after < before, f"reserved {before:,} -> {after:,}"))
        context = [r for r in report.residue if r.device == device and "context" in r.label]
        checks.append(("context line", bool(context), "; ".join(f"{r.label}: {r.nbytes}" for r in context)))
    for name, ok, detail in checks:
        print(f"{'yes' if ok else 'NO '}  {name}: {detail}")
    passed = sum(ok for _, ok, _ in checks)
    print(f"{passed}/{len(checks)} checks passed")
    return 0 if passed == len(checks) else 1


if __name__ == "__main__":
    sys.exit(main())
