"""Run the benchmarks and print one table: ``python -m benchmarks [MODULE ...] [--json PATH | --update PATH]``.

Every module of this package that defines ``run() -> list[Figure]`` is a benchmark
(``common`` and ``quoted`` and private modules excepted); ``core`` runs first, the rest in name
order, each in a fresh interpreter. A module that fails is reported and the others still run;
the exit status is 1 then, and also when ``--check`` is given and a figure misses its target.

``--update PATH`` keeps a stored run: the modules run now replace their own figures in PATH and
the others stay, each module with the date, machine and load it was measured at. ``make bench``
stores its run in ``benchmarks/stored-run.json``, the file the documentation's figures are
checked against (``benchmarks.quoted``).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib
import importlib.metadata
import json
import math
import os
import pkgutil
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import QUICK_ENV, Figure, quick

PACKAGE = Path(__file__).resolve().parent
_NOT_BENCHMARKS = {"common", "quoted"}
_FIRST = ("core",)
MODULE_TIMEOUT_S = 900


def discover() -> list[str]:
    """Names of the benchmark modules present, ``core`` first."""
    names = [
        info.name
        for info in pkgutil.iter_modules([str(PACKAGE)])
        if not info.name.startswith("_") and info.name not in _NOT_BENCHMARKS and not info.ispkg
    ]
    return sorted(names, key=lambda n: (_FIRST.index(n) if n in _FIRST else len(_FIRST), n))


def format_value(value: float) -> str:
    if not math.isfinite(value):
        return str(value)
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    return f"{value:.4g}" if magnitude < 100 else f"{value:.0f}"


def verdict(figure: Figure) -> str:
    meets = figure.meets_target
    return "-" if meets is None else ("yes" if meets else "NO")


def target_text(figure: Figure) -> str:
    return "-" if figure.target is None else f"{figure.better} {format_value(figure.target)}"


def table(rows: Sequence[tuple[str, Figure]]) -> str:
    """The figures as a plain-text table (one line each, notes last so they may run long)."""
    headers = ("figure", "median", "unit", "target", "meets", "note")
    cells = [(f.name, format_value(f.value), f.unit, target_text(f), verdict(f), f.note) for _, f in rows]
    widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(cell, widths, strict=True)).rstrip() for cell in cells]
    return "\n".join(lines)


@dataclasses.dataclass(frozen=True)
class ModuleRun:
    """When and under what load one module ran: a figure means little without it."""

    name: str
    started: str  # UTC, ISO 8601
    seconds: float
    load_average: float  # the 1-minute load average as the module started
    error: str | None = None


def machine_facts() -> dict[str, Any]:
    import psutil

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "memory_bytes": int(psutil.virtual_memory().total),
        "torch": _torch_version(),
    }


def as_json(
    rows: Sequence[tuple[str, Figure]], runs: Sequence[ModuleRun], argv: Sequence[str], seconds: float
) -> dict[str, Any]:
    machine = machine_facts()
    return {
        "command": "python -m benchmarks " + " ".join(argv),
        "quick": quick(),
        "seconds": round(seconds, 1),
        "machine": machine,
        "modules": {
            run.name: {
                "started": run.started,
                "seconds": round(run.seconds, 1),
                "load_average": round(run.load_average, 2),
                "quick": quick(),
                "machine": machine,
            }
            for run in runs
            if run.error is None
        },
        "figures": [
            {
                "module": module,
                "name": f.name,
                "value": f.value,
                "unit": f.unit,
                "target": f.target,
                "better": f.better,
                "meets_target": f.meets_target,
                "note": f.note,
            }
            for module, f in rows
        ],
        "errors": {run.name: run.error for run in runs if run.error is not None},
    }


def merged(stored: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """``stored`` with the modules that ran in ``new`` replaced by theirs.

    A module that failed now keeps its stored figures (and its error is kept beside them), so a
    flaky run never leaves the documentation quoting a figure the file no longer has.
    """
    replaced = set(new["modules"])
    figures = [f for f in stored.get("figures", []) if f["module"] not in replaced] + new["figures"]
    order = {name: index for index, name in enumerate(discover())}
    figures.sort(key=lambda f: order.get(f["module"], len(order)))
    modules = {name: run for name, run in stored.get("modules", {}).items() if name not in replaced}
    modules.update(new["modules"])
    errors = {name: e for name, e in stored.get("errors", {}).items() if name not in replaced}
    errors.update(new["errors"])
    return {
        **new,
        "command": "make bench (modules run separately: see each module's date)",
        "quick": any(run["quick"] for run in modules.values()),
        "seconds": round(sum(run["seconds"] for run in modules.values()), 1),
        "modules": dict(sorted(modules.items(), key=lambda item: order.get(item[0], len(order)))),
        "figures": figures,
        "errors": errors,
    }


def _torch_version() -> str | None:
    try:
        return importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return None


def run_module(name: str) -> list[Figure]:
    """Run one benchmark module in this process."""
    module = importlib.import_module(f"benchmarks.{name}")
    run = getattr(module, "run", None)
    if run is None:
        raise TypeError(f"benchmarks.{name} has no run() -> list[Figure]")
    figures = list(run())
    for figure in figures:
        if not isinstance(figure, Figure):
            raise TypeError(f"benchmarks.{name}.run() returned {type(figure).__name__}, not Figure")
    return figures


def _child(name: str, out: str) -> None:
    """Entry point of the subprocess that runs one module: its figures go to ``out`` as JSON."""
    figures = run_module(name)
    Path(out).write_text(json.dumps([dataclasses.asdict(f) for f in figures]))


def _stderr_fd() -> int | None:
    try:
        return sys.stderr.fileno()
    except (AttributeError, OSError):
        return None


def run_isolated(name: str) -> list[Figure]:
    """Run one module in a fresh interpreter, so that what one module imported or allocated
    (torch, models, heap) never colours the next module's figures."""
    with tempfile.TemporaryDirectory(prefix="nbmodels-bench-") as folder:
        out = Path(folder) / "figures.json"
        code = "import sys; from benchmarks.__main__ import _child; _child(sys.argv[1], sys.argv[2])"
        try:
            done = subprocess.run(
                [sys.executable, "-c", code, name, str(out)],
                cwd=PACKAGE.parent,
                stdout=_stderr_fd(),  # progress and tracebacks go to stderr; stdout is the table
                timeout=MODULE_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"did not finish within {MODULE_TIMEOUT_S} s") from None
        if done.returncode != 0:
            raise RuntimeError(f"exited with status {done.returncode} (its traceback is above)")
        return [Figure(**fields) for fields in json.loads(out.read_text())]


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", help="benchmark modules to run (default: all)")
    store = parser.add_mutually_exclusive_group()
    store.add_argument("--json", type=Path, metavar="PATH", help="also write the table as JSON to PATH")
    store.add_argument(
        "--update", type=Path, metavar="PATH", help="store this run's modules in PATH, keeping the other modules'"
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the harness, not the figures")
    parser.add_argument("--check", action="store_true", help="exit 1 when a figure misses its target")
    parser.add_argument("--list", action="store_true", help="print the benchmark modules and exit")
    args = parser.parse_args(argv)

    available = discover()
    if args.list:
        print("\n".join(available))
        return 0
    unknown = [m for m in args.modules if m not in available]
    if unknown:
        parser.error(f"no benchmark module {', '.join(unknown)}; there are: {', '.join(available)}")
    if args.quick:
        os.environ[QUICK_ENV] = "1"  # read by the modules, inherited by their subprocesses

    started = time.perf_counter()
    rows: list[tuple[str, Figure]] = []
    runs: list[ModuleRun] = []
    for name in args.modules or available:
        print(f"running benchmarks.{name} ...", file=sys.stderr, flush=True)
        module_started = time.perf_counter()
        date = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        load = os.getloadavg()[0]
        error = None
        try:
            rows += [(name, figure) for figure in run_isolated(name)]
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            print(f"benchmarks.{name} failed: {error}", file=sys.stderr, flush=True)
        took = time.perf_counter() - module_started
        runs.append(ModuleRun(name, date, took, load, error))
        print(f"  {name}: {took:.1f}s", file=sys.stderr, flush=True)
    seconds = time.perf_counter() - started
    errors = {run.name: run.error for run in runs if run.error is not None}

    print(table(rows))
    for name, error in errors.items():
        print(f"benchmarks.{name} FAILED: {error}")
    missed = [f.name for _, f in rows if f.meets_target is False]
    summary = f"{len(rows)} figures, {len(missed)} missing their target, in {seconds:.0f}s"
    print(summary + (" (quick run: sizes shrunk, not the published figures)" if quick() else ""))
    result = as_json(rows, runs, argv, seconds)
    if args.update is not None and args.update.exists():
        result = merged(json.loads(args.update.read_text()), result)
    target = args.json or args.update
    if target is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    if errors or (args.check and missed):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
