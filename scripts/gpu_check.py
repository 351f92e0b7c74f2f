"""Check the memory policy on a real CUDA device: load, offload, move back, evict by budget, rescue an
out-of-memory error (at load and in a cell), clean up, and prove that the memory came back.

    python scripts/gpu_check.py                 # on a machine with a CUDA GPU: cuda:0
    python scripts/gpu_check.py --device cuda:1
    python scripts/gpu_check.py --device cpu    # the same steps on the CPU (what the test suite runs)

It prints one table row per step and exits 0 when every check passed, 1 when one failed, 2 when the
device is not there. On CUDA, after the final cleanup ``torch.cuda.memory_allocated`` must be back at its
baseline and ``torch.cuda.memory_reserved`` at 0 (everything torch cached was given back). On the CPU the
readings are the manager's accounting (what the loaded models hold), and the out-of-memory error at load is
raised by the loader itself (a CPU allocation failure cannot be provoked safely); everything else is real.
"""

from __future__ import annotations

import argparse
import io
import sys
from collections.abc import Callable
from contextlib import redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # runnable from a checkout without installing

import torch

from nbmodels.core import ModelManager, demo
from nbmodels.core.memory import format_bytes

MiB = 2**20


@dataclass(frozen=True)
class Step:
    """One check: what was done, whether it held, and the device's readings just after."""

    name: str
    ok: bool
    detail: str
    allocated: int
    reserved: int


def readings(mgr: ModelManager, device: str) -> tuple[int, int]:
    """(allocated, reserved) on ``device``: torch's allocator on CUDA; on the CPU, the bytes the models account for."""
    if device.startswith("cuda"):
        index = torch.device(device).index or 0
        return int(torch.cuda.memory_allocated(index)), int(torch.cuda.memory_reserved(index))
    return sum(info.bytes_by_device.get("cpu", 0) for info in mgr.list()), 0


def close(measured: int, expected: int, slack: float = 0.02) -> bool:
    """``measured`` within ``slack`` (and 2 MiB, the allocator's block rounding) of ``expected``."""
    return abs(measured - expected) <= max(expected * slack, 2 * MiB)


def table(steps: list[Step], device: str) -> str:
    headers = ("step", "ok", f"{device} allocated", "reserved", "detail")
    rows = [
        (s.name, "yes" if s.ok else "NO", format_bytes(s.allocated), format_bytes(s.reserved), s.detail) for s in steps
    ]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return "\n".join(lines)


class RunsOutOnce:
    """A loader whose first call runs out of memory on the device, for real on CUDA; the retry builds the model."""

    def __init__(self, device: str, size_mb: float) -> None:
        self.device, self.size_mb, self.calls = device, size_mb, 0

    def __call__(self) -> Any:
        self.calls += 1
        if self.calls == 1:
            if self.device.startswith("cuda"):
                index = torch.device(self.device).index or 0
                _, total = torch.cuda.mem_get_info(index)
                torch.empty(int(total) + 2**30, dtype=torch.uint8, device=self.device)  # more than the device has
            raise MemoryError(f"the loader could not allocate its weights on {self.device}")
        return demo.mlp(size_mb=self.size_mb, seed=9).to(self.device)


def run_checks(device: str, size_mb: float) -> list[Step]:
    """Every step in order; a step that raises is recorded as failed and the checks go on."""
    mgr = ModelManager()
    steps: list[Step] = []
    if device.startswith("cuda"):
        torch.cuda.init()  # type: ignore[no-untyped-call]
        torch.cuda.empty_cache()
    baseline, _ = readings(mgr, device)
    sizes: dict[str, int] = {}

    def step(name: str, check: Callable[[], tuple[bool, str]]) -> None:
        try:
            ok, detail = check()
        except Exception as exc:
            ok, detail = False, f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
        allocated, reserved = readings(mgr, device)
        steps.append(Step(name, ok, detail, allocated, reserved))

    def load() -> tuple[bool, str]:
        mgr.load("a", "demo:mlp", size_mb=size_mb, device=device)
        sizes["a"] = mgr.info("a").bytes_by_device.get(device, 0)
        allocated, _ = readings(mgr, device)
        return close(allocated - baseline, sizes["a"]), f"a accounts {format_bytes(sizes['a'])} on {device}"

    def offload() -> tuple[bool, str]:
        info = mgr.offload("a")
        allocated, _ = readings(mgr, device)
        on_device = allocated - baseline if device != "cpu" else 0
        return info.devices == ("cpu",) and close(on_device, 0), f"a on {', '.join(info.devices)}"

    def move_back() -> tuple[bool, str]:
        info = mgr.to("a", device)
        allocated, _ = readings(mgr, device)
        return info.devices == (device,) and close(allocated - baseline, sizes["a"]), f"a on {info.devices[0]}"

    def evict_by_budget() -> tuple[bool, str]:
        mgr.set_max_memory({device: int(1.5 * sizes["a"])})
        evicted: list[str] = []
        mgr.subscribe(lambda event: evicted.append(event.reason or "") if event.kind == "evicted" else None)
        mgr.load("b", "demo:mlp", size_mb=size_mb, seed=1, device=device)
        allocated, _ = readings(mgr, device)
        ok = "a" not in mgr and "b" in mgr and close(allocated - baseline, sizes["a"])
        mgr.set_max_memory(None)
        return ok, evicted[0] if evicted else "nothing was evicted"

    def rescue_at_load() -> tuple[bool, str]:
        loader = RunsOutOnce(device, size_mb)
        mgr.load("c", loader)
        ok = loader.calls == 2 and "b" not in mgr and "c" in mgr
        return ok, f"the loader ran {loader.calls} times; b evicted, c loaded after the out-of-memory error"

    def account_in_a_cell() -> tuple[bool, str]:
        from IPython.core.interactiveshell import InteractiveShell

        shell = InteractiveShell.instance()
        original = ModelManager._instance
        ModelManager._instance = mgr  # the magics and the account use this manager
        try:
            shell.run_line_magic("load_ext", "nbmodels")
            printed = io.StringIO()
            with redirect_stdout(printed):
                if device.startswith("cuda"):
                    cell = f"import torch\nbig = torch.empty({2**45}, dtype=torch.uint8, device={device!r})"
                else:
                    cell = "raise MemoryError('a cell ran out of memory')"
                result = shell.run_cell(cell)
            shell.run_line_magic("unload_ext", "nbmodels")
        finally:
            ModelManager._instance = original
        text = printed.getvalue()
        wanted = f"nbmodels: out of memory on {device}"
        ok = result.error_in_exec is not None and wanted in text and "models on" in text
        line = next((line.strip() for line in text.splitlines() if "frees the most" in line), "no account printed")
        shell.run_line_magic("reset", "-f")  # the failed cell's traceback must not hold anything
        return ok, line

    def cleanup() -> tuple[bool, str]:
        report = mgr.cleanup()
        allocated, reserved = readings(mgr, device)
        if device.startswith("cuda"):
            ok = report.ok and allocated == baseline and reserved == 0
            return ok, f"allocated back to the baseline ({format_bytes(baseline)}), reserved {format_bytes(reserved)}"
        return report.ok and allocated == 0, f"released {', '.join(report.released) or 'nothing'}"

    for name, check in [
        ("load", load),
        ("offload to the CPU", offload),
        ("move back", move_back),
        ("evict by budget", evict_by_budget),
        ("rescue out-of-memory at load", rescue_at_load),
        ("account after out-of-memory in a cell", account_in_a_cell),
        ("clean up", cleanup),
    ]:
        step(name, check)
    return steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python scripts/gpu_check.py", description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda:0", help="cuda:N (default cuda:0), or cpu")
    parser.add_argument("--size-mb", type=float, default=256.0, help="size of each test model (default 256)")
    args = parser.parse_args(argv)
    device = "cuda:0" if args.device == "cuda" else args.device
    if device.startswith("cuda"):
        index = torch.device(device).index or 0
        if not torch.cuda.is_available() or index >= torch.cuda.device_count():
            print(f"gpu_check: no CUDA device {device} here (torch {torch.__version__}); nothing was checked")
            return 2
    elif device != "cpu":
        print(f"gpu_check: unknown device {device!r}; use cuda:N or cpu")
        return 2
    steps = run_checks(device, args.size_mb)
    print(table(steps, device))
    failed = [s.name for s in steps if not s.ok]
    print(
        f"{len(steps) - len(failed)}/{len(steps)} checks passed" + (f"; failed: {', '.join(failed)}" if failed else "")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
