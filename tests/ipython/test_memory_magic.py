"""``%memory`` on a real InteractiveShell (and once in a real kernel): each holder a notebook has, named with its
bytes, the command that frees it run as written, ``--diff`` between cells, and user mistakes as UsageErrors."""

from __future__ import annotations

import gc
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

import nbmodels
from nbmodels import ModelManager
from nbmodels.core.attribution import MemoryDiff, MemoryReport
from tests.ipython.conftest import run
from tests.ipython.kernels import kernel

MiB = 1 << 20

PLANT = [
    "import torch, nbmodels",
    "x = torch.ones(5 * 2**18)",  # 5 MiB
    "torch.ones(7 * 2**18)",  # echoed: Out[N], 7 MiB
    "net = torch.nn.Linear(1024, 1024)\n"
    "opt = torch.optim.Adam(net.parameters())\n"
    "inp = torch.randn(768, 1024)\n"
    "net(inp).sum().backward(); opt.step(); opt.zero_grad(set_to_none=True)\n"
    "losses = [(torch.relu(net(inp)) ** 2).sum()]",
    "def f():\n    big = torch.ones(6 * 2**18)\n    raise ValueError('boom')",
    "f()",  # fails: sys.last_traceback keeps big
    "%load_model m demo:mlp --kw hidden=512",
]
WEIGHTS = 1024 * 1024 * 4 + 1024 * 4


@pytest.fixture
def shell(ip: InteractiveShell, mgr: ModelManager) -> Iterator[InteractiveShell]:
    try:
        yield ip
    finally:
        for name in ("last_type", "last_value", "last_traceback", "last_exc"):
            if hasattr(sys, name):
                delattr(sys, name)
        ip.InteractiveTB.tb = None


def plant(shell: InteractiveShell) -> int:
    """Run the planting cells; returns the execution count of the echoed tensor."""
    echoed = 0
    for cell in PLANT:
        result = shell.run_cell(cell, store_history=True)
        if cell == "f()":
            assert isinstance(result.error_in_exec, ValueError)
        else:
            assert result.success, result.error_in_exec
        if cell.startswith("torch.ones"):
            echoed = result.execution_count
    return echoed


def memory(shell: InteractiveShell, line: str = "") -> MemoryReport:
    gc.collect()
    report = shell.run_line_magic("memory", line)
    assert isinstance(report, MemoryReport)
    return report


def near(actual: int, expected: int) -> bool:
    return abs(actual - expected) <= 0.02 * expected


def live_storages(skip: frozenset[int] = frozenset()) -> dict[int, int]:
    """Storages under live Python tensors, by an independent gc scan (``skip``: those there before)."""
    import torch

    found = {}
    for obj in gc.get_objects():
        if issubclass(type(obj), torch.Tensor) and obj.device.type != "meta":
            storage = obj.untyped_storage()
            if storage._cdata not in skip and storage.nbytes():
                found[storage._cdata] = storage.nbytes()
    return found


def test_every_holder_of_a_notebook_is_named_with_its_bytes_and_command(shell: InteractiveShell) -> None:
    gc.collect()
    before = frozenset(live_storages())  # earlier tests may leave tensors of their own
    echoed = plant(shell)
    report = memory(shell)
    rows = {row.owner: row for row in report.rows}
    assert near(rows["x"].nbytes, 5 * MiB) and report.commands(rows["x"]) == "del x"
    output = rows[f"Out[{echoed}]"]
    assert output.kind == "output" and near(output.nbytes, 7 * MiB)
    assert report.commands(output) == f"get_ipython().del_var('_{echoed}')"
    assert rows["net"].kind == "variable" and near(rows["net"].nbytes, WEIGHTS)
    assert {"opt", "losses"} <= set(rows["net"].others)
    assert rows["opt"].kind == "optimizer state" and near(rows["opt"].nbytes, 2 * WEIGHTS)
    assert report.commands(rows["opt"]) == "opt.state.clear()"
    assert rows["losses"].kind == "autograd graph" and near(rows["losses"].nbytes, 3 * MiB)
    local = rows["sys.last_traceback → local 'big' of f()"]
    assert local.kind == "traceback" and near(local.nbytes, 6 * MiB)
    assert rows["m"].kind == "model" and report.commands(rows["m"]) == "%unload_model m --force"
    assert rows["m"].nbytes == nbmodels.get_manager().info("m").total_bytes
    live = live_storages(before)
    named = {key for row in report.rows if row.kind != "unattributed" for key in row.keys}
    assert sum(n for key, n in live.items() if key in named) >= 0.99 * sum(live.values())
    text = str(report)
    assert "opt.state.clear()" in text and "in tensors:" in text and "cpu: process RSS" in text
    assert nbmodels.memory().row("x").nbytes == rows["x"].nbytes  # the same report, as data


@pytest.mark.parametrize("which", ["x", "Out", "net", "opt", "losses", "traceback", "m"])
def test_each_command_frees_what_its_row_says(shell: InteractiveShell, which: str) -> None:
    plant(shell)
    report = memory(shell)
    row = next(r for r in report.rows if r.owner.startswith(which) or (which == "traceback" and r.kind == which))
    assert row.alive() == row.storages
    for line in report.commands(row).split("\n"):  # a magic on a line of its own, as printed
        result = shell.run_cell(line, store_history=True)
        assert result.success, (line, result.error_in_exec)
    gc.collect()
    assert row.alive() == 0, f"{row.owner}: {report.commands(row)!r} left {row.alive()} storages alive"


def test_diff_shows_what_cells_added_and_freed(shell: InteractiveShell) -> None:
    run(shell, "import torch\nx = torch.ones(2**20)\nkeep = [torch.ones(2**19)]")
    memory(shell)
    run(shell, "y = torch.ones(3 * 2**18)\nkeep.append(torch.ones(2**19))")  # adds
    run(shell, "del x")  # frees
    changes = shell.run_line_magic("memory", "--diff")
    assert isinstance(changes, MemoryDiff)
    assert {(c.owner, c.delta, c.status) for c in changes.changes} == {
        ("y", 3 * MiB, "added"),
        ("keep", 2 * MiB, "grew"),
        ("x", -4 * MiB, "freed"),
    }
    assert "freed" in str(changes) and "<table" in changes._repr_html_()
    again = shell.run_line_magic("memory", "--diff")  # against the previous call: nothing changed
    assert not again.changes


def test_a_million_item_list_beside_the_model_changes_nothing(shell: InteractiveShell) -> None:
    plant(shell)
    before = [(r.owner, r.kind, r.nbytes) for r in memory(shell).rows]
    run(shell, "data = [(i, str(i)) for i in range(1_000_000)]")
    after = memory(shell)
    assert [(r.owner, r.kind, r.nbytes) for r in after.rows] == before and not after.truncated


def test_threshold_and_all(shell: InteractiveShell) -> None:
    run(shell, "import torch\nsmall = torch.ones(1000)\nbig = torch.ones(2**19)")
    folded = memory(shell)
    assert [r.owner for r in folded.rows if r.kind not in ("smaller", "unattributed")] == ["big"]
    assert any(r.kind == "smaller" for r in folded.rows)
    assert "small" in [r.owner for r in memory(shell, "--all").rows]
    assert "small" in [r.owner for r in memory(shell, "--threshold 1KB").rows]


@pytest.mark.parametrize("line", ["--threshold lots", "--threshold 0.5", "--bogus", "extra"])
def test_mistakes_are_one_line_usage_errors(shell: InteractiveShell, line: str) -> None:
    with pytest.raises(UsageError, match="%memory"):
        shell.run_line_magic("memory", line)


def test_memory_works_in_a_real_kernel(tmp_path: Path) -> None:
    with kernel(tmp_path) as k:
        k.run("%load_ext nbmodels\nimport torch\nx = torch.ones(2**20)")
        k.run("torch.ones(2**19)")
        printed = k.run(
            "report = %memory\n"
            "owners = [r.owner for r in report.rows][:3]\n"
            "print(report.row('x').nbytes, owners, round(report.fraction_attributed(), 3))\n"
            "print(report.commands(report.row('Out[2]')))"
        )
    first, second = printed.strip().splitlines()
    assert first.startswith(f"{4 * MiB} ") and "'Out[2]'" in first and first.endswith(" 1.0")
    assert second == "get_ipython().del_var('_2')"


def test_the_out_of_memory_account_names_the_other_holders(
    shell: InteractiveShell, capfd: pytest.CaptureFixture[str]
) -> None:
    run(shell, "import torch\nbatch = torch.ones(2**20)")
    run(shell, "def step():\n    scratch = torch.ones(2**21)\n    raise MemoryError('no room')")
    capfd.readouterr()
    result = shell.run_cell("step()", store_history=True)
    assert isinstance(result.error_in_exec, MemoryError)
    account = capfd.readouterr().out.partition("nbmodels: out of memory on cpu: ")[2].splitlines()
    start = account.index("  other memory on cpu by holder (%memory lists every one):")
    named = account[start + 1 : start + 3]
    assert named[0].startswith("    sys.last_traceback → local 'scratch' of step() 8.0 MiB: import sys; del sys.last_")
    assert named[1] == "    batch 4.0 MiB: del batch"
    assert account[-1].startswith("  ")  # the account's own last line stays last


def test_an_echoed_report_keeps_nothing_alive(shell: InteractiveShell) -> None:
    run(shell, "import torch, weakref\nx = torch.ones(2**20)\nref = weakref.ref(x)")
    run(shell, "%memory")  # echoed: Out holds the report, and the magic keeps it for --diff
    run(shell, "%memory --diff")
    run(shell, "del x")
    gc.collect()
    assert shell.user_ns["ref"]() is None


def test_memory_without_torch_imports_no_torch() -> None:
    code = (
        "import sys\n"
        "from IPython.core.interactiveshell import InteractiveShell\n"
        "ip = InteractiveShell.instance()\n"
        "ip.run_line_magic('load_ext', 'nbmodels')\n"
        "report = ip.run_line_magic('memory', '')\n"
        "print('torch' in sys.modules, report.rows, report.summary(), [r.device for r in report.residue])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False () in tensors: nothing ['cpu']"
